/* cpu_tables.c — the CPU backend's dispatch tables: per ISA path, every operation whose code depends on the
 * instruction set (the matrix products per weight type, the attention loops per KV cache type, the attention
 * softcap and exp, the experts' GELU, the weight types it multiplies), and the one function that picks a
 * table from the CPU's features. A new ISA path is a table here and a line in edge_cpu_kernels_for. */
#include "engine/engine.h"
#include "kernels_impl.h"

/* Every path multiplies the scalar table's types: a SIMD table's NULL entry runs the scalar kernel. */
static bool multiplies_scalar_types(int type) {
    return type >= 0 && type < EDGE_N_TYPES && edge_kernels_scalar.dot[type] && edge_act_format_of(type) != EDGE_ACT_NONE;
}

/* The portable path: the scalar products, attention a cached row at a time, tanhf / expf. */
static const edge_cpu_kernels cpu_scalar = {
    .isa = EDGE_ISA_SCALAR,
    .name = "scalar",
    .matmul = &edge_kernels_scalar,
    .gelu_mul = edge_gelu_mul_scalar,
    .multiplies = multiplies_scalar_types,
};

#if defined(__x86_64__) || defined(_M_X64)
/* AVX2 (with FMA and F16C): the AVX2 products, and the AVX2 attention loops, softcap, exp and GELU. */
static const edge_cpu_kernels cpu_avx2 = {
    .isa = EDGE_ISA_AVX2,
    .name = "avx2",
    .matmul = &edge_kernels_avx2,
    .attn_scores = {[EDGE_TYPE_F32] = edge_attn_scores_multi_f32_avx2,
                    [EDGE_TYPE_F16] = edge_attn_scores_multi_f16_avx2,
                    [EDGE_TYPE_Q8_0] = edge_attn_scores_multi_q8_0_avx2},
    .attn_wsum = {[EDGE_TYPE_F32] = edge_attn_wsum_multi_f32_avx2,
                  [EDGE_TYPE_F16] = edge_attn_wsum_multi_f16_avx2,
                  [EDGE_TYPE_Q8_0] = edge_attn_wsum_multi_q8_0_avx2},
    .attn_softcap = edge_attn_softcap_avx2,
    .attn_exp = edge_attn_exp_avx2,
    .gelu_mul = edge_gelu_mul_avx2,
    .multiplies = multiplies_scalar_types,
};

/* AVX-512 (F, BW, VL, VNNI): the AVX-512 products; attention, softcap, exp and GELU stay AVX2 (memory-bound
 * loops over the cache, or a small share of a token's work). */
static const edge_cpu_kernels cpu_avx512 = {
    .isa = EDGE_ISA_AVX512,
    .name = "avx512",
    .matmul = &edge_kernels_avx512,
    .attn_scores = {[EDGE_TYPE_F32] = edge_attn_scores_multi_f32_avx2,
                    [EDGE_TYPE_F16] = edge_attn_scores_multi_f16_avx2,
                    [EDGE_TYPE_Q8_0] = edge_attn_scores_multi_q8_0_avx2},
    .attn_wsum = {[EDGE_TYPE_F32] = edge_attn_wsum_multi_f32_avx2,
                  [EDGE_TYPE_F16] = edge_attn_wsum_multi_f16_avx2,
                  [EDGE_TYPE_Q8_0] = edge_attn_wsum_multi_q8_0_avx2},
    .attn_softcap = edge_attn_softcap_avx2,
    .attn_exp = edge_attn_exp_avx2,
    .gelu_mul = edge_gelu_mul_avx2,
    .multiplies = multiplies_scalar_types,
};
#endif

#if defined(__aarch64__)
/* Advanced SIMD (ARMv8.0, on every arm64 core): the NEON products, attention loops, softcap, exp and GELU. */
static const edge_cpu_kernels cpu_neon = {
    .isa = EDGE_ISA_NEON,
    .name = "neon",
    .matmul = &edge_kernels_neon,
    .attn_scores = {[EDGE_TYPE_F32] = edge_attn_scores_multi_f32_neon,
                    [EDGE_TYPE_F16] = edge_attn_scores_multi_f16_neon,
                    [EDGE_TYPE_Q8_0] = edge_attn_scores_multi_q8_0_neon},
    .attn_wsum = {[EDGE_TYPE_F32] = edge_attn_wsum_multi_f32_neon,
                  [EDGE_TYPE_F16] = edge_attn_wsum_multi_f16_neon,
                  [EDGE_TYPE_Q8_0] = edge_attn_wsum_multi_q8_0_neon},
    .attn_softcap = edge_attn_softcap_neon,
    .attn_exp = edge_attn_exp_neon,
    .gelu_mul = edge_gelu_mul_neon,
    .multiplies = multiplies_scalar_types,
};

/* NEON with sdot (ARMv8.2 dotprod): the integer products with sdot, the rest as the NEON path. */
static const edge_cpu_kernels cpu_neon_dotprod = {
    .isa = EDGE_ISA_NEON_DOTPROD,
    .name = "neon_dotprod",
    .matmul = &edge_kernels_neon_dotprod,
    .attn_scores = {[EDGE_TYPE_F32] = edge_attn_scores_multi_f32_neon,
                    [EDGE_TYPE_F16] = edge_attn_scores_multi_f16_neon,
                    [EDGE_TYPE_Q8_0] = edge_attn_scores_multi_q8_0_neon},
    .attn_wsum = {[EDGE_TYPE_F32] = edge_attn_wsum_multi_f32_neon,
                  [EDGE_TYPE_F16] = edge_attn_wsum_multi_f16_neon,
                  [EDGE_TYPE_Q8_0] = edge_attn_wsum_multi_q8_0_neon},
    .attn_softcap = edge_attn_softcap_neon,
    .attn_exp = edge_attn_exp_neon,
    .gelu_mul = edge_gelu_mul_neon,
    .multiplies = multiplies_scalar_types,
};
#endif

const edge_cpu_kernels *edge_cpu_kernels_for(int isa, const edge_cpu_features *cpu) {
    edge_cpu_features detected;
    if (!cpu) {
        edge_cpu_detect(&detected);
        cpu = &detected;
    }
#if defined(__x86_64__) || defined(_M_X64)
    const int has_avx2 = cpu->avx2 && cpu->fma && cpu->f16c;
    const int has_avx512 = has_avx2 && cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->avx512vnni;
    switch (isa) {
    case EDGE_ISA_AUTO: return has_avx512 ? &cpu_avx512 : has_avx2 ? &cpu_avx2 : &cpu_scalar;
    case EDGE_ISA_SCALAR: return &cpu_scalar;
    case EDGE_ISA_AVX2: return has_avx2 ? &cpu_avx2 : NULL;
    case EDGE_ISA_AVX512: return has_avx512 ? &cpu_avx512 : NULL;
    default: return NULL;
    }
#elif defined(__aarch64__)
    switch (isa) { /* Advanced SIMD is mandatory on AArch64; sdot is optional until ARMv8.4 */
    case EDGE_ISA_AUTO: return cpu->dotprod ? &cpu_neon_dotprod : &cpu_neon;
    case EDGE_ISA_SCALAR: return &cpu_scalar;
    case EDGE_ISA_NEON: return &cpu_neon;
    case EDGE_ISA_NEON_DOTPROD: return cpu->dotprod ? &cpu_neon_dotprod : NULL;
    default: return NULL;
    }
#else
    switch (isa) {
    case EDGE_ISA_AUTO:
    case EDGE_ISA_SCALAR: return &cpu_scalar;
    default: return NULL;
    }
#endif
}
