/* dot_scalar.c — the scalar reference kernels: one weight row · one converted activation row, for
 * every weight type. Integer sums are exact; they define what every SIMD path must reproduce. */
#include <stddef.h>

#include "kernels_impl.h"

/* ---- float weights (x in F32) */

static float dot_f32(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static float dot_f16(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += edge_f16_to_f32(a[i]) * b[i];
    return s;
}

static float dot_bf16(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += edge_bf16_to_f32(a[i]) * b[i];
    return s;
}

/* ---- 32-element blocks (x in Q8_0 / Q8_1) */

static float dot_q4_0(int64_t n, const void *w, const void *x) {
    const block_q4_0 *a = w;
    const int8_t *bq = edge_q8s_qs(x);
    const float *bd = edge_q8s_d(x, n);
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            sumi += ((a[i].qs[j] & 0xF) - 8) * bq[i * 32 + j];
            sumi += ((a[i].qs[j] >> 4) - 8) * bq[i * 32 + j + 16];
        }
        s += (float)sumi * edge_f16_to_f32(a[i].d) * bd[i];
    }
    return s;
}

static float dot_q4_1(int64_t n, const void *w, const void *x) {
    const block_q4_1 *a = w;
    const block_q8_1 *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_1 / 2; j++) {
            sumi += (a[i].qs[j] & 0xF) * b[i].qs[j];
            sumi += (a[i].qs[j] >> 4) * b[i].qs[j + QK4_1 / 2];
        }
        s += (float)sumi * edge_f16_to_f32(a[i].d) * edge_f16_to_f32(b[i].d) +
             edge_f16_to_f32(a[i].m) * edge_f16_to_f32(b[i].s);
    }
    return s;
}

static float dot_q5_0(int64_t n, const void *w, const void *x) {
    const block_q5_0 *a = w;
    const int8_t *bq = edge_q8s_qs(x);
    const float *bd = edge_q8s_d(x, n);
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        uint32_t qh;
        memcpy(&qh, a[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
            sumi += (((a[i].qs[j] & 0xF) | (h0 << 4)) - 16) * bq[i * 32 + j];
            sumi += (((a[i].qs[j] >> 4) | (h1 << 4)) - 16) * bq[i * 32 + j + 16];
        }
        s += (float)sumi * edge_f16_to_f32(a[i].d) * bd[i];
    }
    return s;
}

static float dot_q5_1(int64_t n, const void *w, const void *x) {
    const block_q5_1 *a = w;
    const block_q8_1 *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        uint32_t qh;
        memcpy(&qh, a[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
            sumi += ((a[i].qs[j] & 0xF) | (h0 << 4)) * b[i].qs[j];
            sumi += ((a[i].qs[j] >> 4) | (h1 << 4)) * b[i].qs[j + QK5_1 / 2];
        }
        s += (float)sumi * edge_f16_to_f32(a[i].d) * edge_f16_to_f32(b[i].d) +
             edge_f16_to_f32(a[i].m) * edge_f16_to_f32(b[i].s);
    }
    return s;
}

static float dot_q8_0(int64_t n, const void *w, const void *x) {
    const block_q8_0 *a = w;
    const int8_t *bq = edge_q8s_qs(x);
    const float *bd = edge_q8s_d(x, n);
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++) sumi += a[i].qs[j] * bq[i * 32 + j];
        s += (float)sumi * edge_f16_to_f32(a[i].d) * bd[i];
    }
    return s;
}

static float dot_iq4_nl(int64_t n, const void *w, const void *x) {
    const block_iq4_nl *a = w;
    const int8_t *bq = edge_q8s_qs(x);
    const float *bd = edge_q8s_d(x, n);
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK4_NL; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_NL / 2; j++) {
            sumi += edge_kvalues_iq4nl[a[i].qs[j] & 0xF] * bq[i * 32 + j];
            sumi += edge_kvalues_iq4nl[a[i].qs[j] >> 4] * bq[i * 32 + j + 16];
        }
        s += (float)sumi * edge_f16_to_f32(a[i].d) * bd[i];
    }
    return s;
}

/* ---- 256-element super-blocks (x in Q8_K). Each unpacks the block into its integer values q[256]
 * and then sums per sub-block, so the layout logic reads like ggml's dequantize_row_*. */

static float dot_q2_k(int64_t n, const void *w, const void *x) {
    const block_q2_K *a = w;
    const block_q8_K *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sum_q = 0, sum_m = 0;
        for (int k = 0; k < QK_K / 16; k++) { /* sub-block k covers elements 16k .. 16k+15 */
            int sumi = 0;
            for (int l = 0; l < 16; l++) {
                int e = k * 16 + l;
                int q = (a[i].qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
                sumi += q * b[i].qs[e];
            }
            sum_q += (a[i].scales[k] & 0xF) * sumi;
            sum_m += (a[i].scales[k] >> 4) * b[i].bsums[k];
        }
        s += b[i].d * (edge_f16_to_f32(a[i].d) * (float)sum_q - edge_f16_to_f32(a[i].dmin) * (float)sum_m);
    }
    return s;
}

static float dot_q3_k(int64_t n, const void *w, const void *x) {
    const block_q3_K *a = w;
    const block_q8_K *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sum = 0;
        for (int k = 0; k < QK_K / 16; k++) {
            int sumi = 0;
            for (int l = 0; l < 16; l++) {
                int e = k * 16 + l;
                int j = (e % 128) / 32, half = e / 128, ll = e % 32;
                int q = (a[i].qs[half * 32 + ll] >> (2 * j)) & 3;
                int hbit = (a[i].hmask[ll] >> (half * 4 + j)) & 1;
                sumi += (q - (hbit ? 0 : 4)) * b[i].qs[e];
            }
            sum += edge_q3k_scale(a[i].scales, k) * sumi;
        }
        s += b[i].d * edge_f16_to_f32(a[i].d) * (float)sum;
    }
    return s;
}

/* Q4_K / Q5_K: sub-block k (elements 32k .. 32k+31) is the low (k even) or high (k odd) nibbles of
 * qs[32 * (k / 2) ..]; Q5_K adds bit k of qh[l] as the fifth bit (qh NULL for Q4_K). Both blocks start
 * with d, dmin and the 12 scale bytes. */
_Static_assert(offsetof(block_q4_K, dmin) == 2 && offsetof(block_q5_K, dmin) == 2 &&
                   offsetof(block_q4_K, scales) == offsetof(block_q5_K, scales),
               "Q4_K and Q5_K blocks share their first fields");
static float dot_k4(int64_t n, const uint8_t *w, size_t block_bytes, size_t qs_off, int has_qh, const void *x) {
    const block_q8_K *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *blk = w + (size_t)i * block_bytes;
        const uint8_t *qh = has_qh ? blk + offsetof(block_q5_K, qh) : NULL;
        uint16_t d, dmin;
        memcpy(&d, blk, 2);
        memcpy(&dmin, blk + 2, 2);
        int sum_q = 0, sum_m = 0;
        for (int k = 0; k < QK_K / 32; k++) {
            uint8_t sc, m;
            edge_k4_scale_min(k, blk + offsetof(block_q4_K, scales), &sc, &m);
            const uint8_t *qs = blk + qs_off + (k / 2) * 32;
            int sumi = 0;
            for (int l = 0; l < 32; l++) {
                int q = (k & 1) ? (qs[l] >> 4) : (qs[l] & 0xF);
                if (qh) q |= ((qh[l] >> k) & 1) << 4;
                sumi += q * b[i].qs[k * 32 + l];
            }
            sum_q += sc * sumi;
            sum_m += m * (b[i].bsums[2 * k] + b[i].bsums[2 * k + 1]);
        }
        s += b[i].d * (edge_f16_to_f32(d) * (float)sum_q - edge_f16_to_f32(dmin) * (float)sum_m);
    }
    return s;
}

static float dot_q4_k(int64_t n, const void *w, const void *x) {
    return dot_k4(n, w, sizeof(block_q4_K), offsetof(block_q4_K, qs), 0, x);
}

static float dot_q5_k(int64_t n, const void *w, const void *x) {
    return dot_k4(n, w, sizeof(block_q5_K), offsetof(block_q5_K, qs), 1, x);
}

static float dot_q6_k(int64_t n, const void *w, const void *x) {
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sum = 0;
        for (int k = 0; k < QK_K / 16; k++) {
            int sumi = 0;
            for (int l = 0; l < 16; l++) {
                int e = k * 16 + l;
                int half = e / 128, g = (e % 128) / 32, ll = e % 32;
                uint8_t lo = a[i].ql[half * 64 + (g & 1) * 32 + ll];
                int q = ((g < 2) ? (lo & 0xF) : (lo >> 4)) | (((a[i].qh[half * 32 + ll] >> (2 * g)) & 3) << 4);
                sumi += (q - 32) * b[i].qs[e];
            }
            sum += a[i].scales[k] * sumi;
        }
        s += b[i].d * edge_f16_to_f32(a[i].d) * (float)sum;
    }
    return s;
}

static float dot_iq4_xs(int64_t n, const void *w, const void *x) {
    const block_iq4_xs *a = w;
    const block_q8_K *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sum = 0;
        for (int k = 0; k < QK_K / 32; k++) {
            int ls = ((a[i].scales_l[k / 2] >> (4 * (k % 2))) & 0xF) | (((a[i].scales_h >> (2 * k)) & 3) << 4);
            const uint8_t *qs = a[i].qs + k * 16;
            const int8_t *y = b[i].qs + k * 32;
            int sumi = 0;
            for (int j = 0; j < 16; j++) {
                sumi += edge_kvalues_iq4nl[qs[j] & 0xF] * y[j];
                sumi += edge_kvalues_iq4nl[qs[j] >> 4] * y[j + 16];
            }
            sum += (ls - 32) * sumi;
        }
        s += b[i].d * edge_f16_to_f32(a[i].d) * (float)sum;
    }
    return s;
}

/* ---- one row against up to EDGE_DOT_MAX_TOK tokens */

#define MULTI(name)                                                                                   \
    static void name##_multi(int64_t n, const void *w, const void *x, size_t xs, int nt, float *out) { \
        for (int t = 0; t < nt; t++) out[t] = name(n, w, (const char *)x + (size_t)t * xs);             \
    }
MULTI(dot_f32)
MULTI(dot_f16)
MULTI(dot_bf16)
MULTI(dot_q4_0)
MULTI(dot_q4_1)
MULTI(dot_q5_0)
MULTI(dot_q5_1)
MULTI(dot_q8_0)
MULTI(dot_iq4_nl)
MULTI(dot_q2_k)
MULTI(dot_q3_k)
MULTI(dot_q4_k)
MULTI(dot_q5_k)
MULTI(dot_q6_k)
MULTI(dot_iq4_xs)

const struct edge_kernels edge_kernels_scalar = {
    .isa = EDGE_ISA_SCALAR,
    .name = "scalar",
    .dot =
        {
            [EDGE_TYPE_F32] = dot_f32_multi,
            [EDGE_TYPE_F16] = dot_f16_multi,
            [EDGE_TYPE_BF16] = dot_bf16_multi,
            [EDGE_TYPE_Q4_0] = dot_q4_0_multi,
            [EDGE_TYPE_Q4_1] = dot_q4_1_multi,
            [EDGE_TYPE_Q5_0] = dot_q5_0_multi,
            [EDGE_TYPE_Q5_1] = dot_q5_1_multi,
            [EDGE_TYPE_Q8_0] = dot_q8_0_multi,
            [EDGE_TYPE_IQ4_NL] = dot_iq4_nl_multi,
            [EDGE_TYPE_Q2_K] = dot_q2_k_multi,
            [EDGE_TYPE_Q3_K] = dot_q3_k_multi,
            [EDGE_TYPE_Q4_K] = dot_q4_k_multi,
            [EDGE_TYPE_Q5_K] = dot_q5_k_multi,
            [EDGE_TYPE_Q6_K] = dot_q6_k_multi,
            [EDGE_TYPE_IQ4_XS] = dot_iq4_xs_multi,
        },
    .quant_q8_0 = edge_quant_act_q8_0,
    .quant_q8_1 = edge_quant_act_q8_1,
    .quant_q8_k = edge_quant_act_q8_k,
};
