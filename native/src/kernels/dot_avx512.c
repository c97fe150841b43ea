/* dot_avx512.c — avx512 kernels (compiled with that ISA's flags only; chosen at run time). */
#include <immintrin.h>

#include "kernels_impl.h"

const struct edge_kernels edge_kernels_avx512 = {
    .isa = EDGE_ISA_AVX512,
    .name = "avx512",
};
