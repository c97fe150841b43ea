/* dot_avx512.c — AVX-512 (VL + VNNI) kernels: the kernels of dot_simd_x86.h with vpdpbusd for
 * the u8·s8 products, the compiler free to use the 32 vector registers of AVX-512. */
#define EDGE_SIMD_VNNI 1
#define EDGE_SIMD_TABLE edge_kernels_avx512
#include "dot_simd_x86.h"
