/* dot_avx2.c — AVX2 + FMA + F16C kernels (u8·s8 products via maddubs/madd); see dot_simd_x86.h. */
#define EDGE_SIMD_VNNI 0
#define EDGE_SIMD_TABLE edge_kernels_avx2
#include "dot_simd_x86.h"
