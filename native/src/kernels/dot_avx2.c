/* dot_avx2.c — avx2 kernels (compiled with that ISA's flags only; chosen at run time). */
#include <immintrin.h>

#include "kernels_impl.h"

const struct edge_kernels edge_kernels_avx2 = {
    .isa = EDGE_ISA_AVX2,
    .name = "avx2",
};
