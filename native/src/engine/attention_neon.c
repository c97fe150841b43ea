/* attention_neon.c — the attention inner loops over cached K/V rows (F16, F32, Q8_0), the softcap/softmax
 * helpers and the experts' GELU with arm64 Advanced SIMD (ARMv8.0: every arm64 core; compiled for arm64
 * only, chosen at context creation unless the scalar path is forced). The same functions, contracts and
 * polynomials as attention_avx2.c / gelu_avx2.c / exp_avx2.h on 4-lane vectors: each query row gets bit for
 * bit what it gets alone, and a weighted sum is formed key after key with one fused multiply-add per value
 * (keys with p == 0 skipped), as tests/support/attention_driver.c checks. */
#include <arm_neon.h>
#include <math.h>

#include "blocks.h"
#include "engine/engine.h"

#define NEON_INLINE static inline __attribute__((always_inline))

/* e^z: range reduction 2^n · e^r (|r| <= ln2/2) and Cephes' degree-6 polynomial, ~2 ulps; z clamped to
 * [-87, 87] (exp_avx2.h's constants). */
NEON_INLINE float32x4_t exp4(float32x4_t z) {
    z = vminq_f32(vmaxq_f32(z, vdupq_n_f32(-87.0f)), vdupq_n_f32(87.0f));
    const float32x4_t n = vrndnq_f32(vmulq_f32(z, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(z, n, vdupq_n_f32(0.693359375f)); /* ln2 split hi + lo (Cephes) */
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    const int32x4_t pow2n = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(pow2n));
}

/* tanh as Cephes' tanhf: an odd polynomial for |x| < 0.625, 1 - 2 / (e^{2|x|} + 1) with x's sign above. */
NEON_INLINE float32x4_t tanh4(float32x4_t x) {
    const float32x4_t ax = vabsq_f32(x), z = vmulq_f32(x, x), one = vdupq_n_f32(1.0f);
    float32x4_t p = vdupq_n_f32(-5.70498872745e-3f);
    p = vfmaq_f32(vdupq_n_f32(2.06390887954e-2f), p, z);
    p = vfmaq_f32(vdupq_n_f32(-5.37397155531e-2f), p, z);
    p = vfmaq_f32(vdupq_n_f32(1.33314422036e-1f), p, z);
    p = vfmaq_f32(vdupq_n_f32(-3.33332819422e-1f), p, z);
    const float32x4_t small = vfmaq_f32(x, vmulq_f32(p, z), x);
    const float32x4_t e = exp4(vaddq_f32(ax, ax));
    const float32x4_t big = vsubq_f32(one, vdivq_f32(vdupq_n_f32(2.0f), vaddq_f32(e, one)));
    const float32x4_t signed_big = vbslq_f32(vdupq_n_u32(0x80000000u), x, big);
    return vbslq_f32(vcltq_f32(ax, vdupq_n_f32(0.625f)), small, signed_big);
}

float edge_attn_softcap_neon(float *s, int64_t n, float mult, float cap) {
    const float32x4_t vm = vdupq_n_f32(mult), vcap = vdupq_n_f32(cap), vinv = vdupq_n_f32(cap > 0 ? 1.0f / cap : 0);
    const float32x4_t ninf = vdupq_n_f32(-INFINITY);
    float32x4_t vmax = ninf;
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
        const float32x4_t raw = vld1q_f32(s + t);
        float32x4_t v = vmulq_f32(raw, vm);
        if (cap > 0.0f) v = vmulq_f32(vcap, tanh4(vmulq_f32(v, vinv)));
        v = vbslq_f32(vceqq_f32(raw, ninf), ninf, v);
        vst1q_f32(s + t, v);
        vmax = vmaxq_f32(vmax, v);
    }
    float max = vmaxvq_f32(vmax);
    for (; t < n; t++) {
        if (s[t] == -INFINITY) continue;
        float v = s[t] * mult;
        if (cap > 0.0f) v = cap * tanhf(v / cap);
        s[t] = v;
        max = v > max ? v : max;
    }
    return max;
}

void edge_attn_exp_neon(float *s, int64_t n, float max) {
    const float32x4_t vmax = vdupq_n_f32(max), ninf = vdupq_n_f32(-INFINITY), zero = vdupq_n_f32(0.0f);
    float32x4_t acc = zero;
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
        const float32x4_t v = vld1q_f32(s + t);
        const float32x4_t e = vbslq_f32(vceqq_f32(v, ninf), zero, exp4(vsubq_f32(v, vmax)));
        vst1q_f32(s + t, e);
        acc = vaddq_f32(acc, e);
    }
    float sum = vaddvq_f32(acc);
    for (; t < n; t++) sum += (s[t] = expf(s[t] - max));
    const float inv = 1.0f / sum;
    for (t = 0; t + 4 <= n; t += 4) vst1q_f32(s + t, vmulq_n_f32(vld1q_f32(s + t), inv));
    for (; t < n; t++) s[t] *= inv;
}

/* h = gelu_tanh(h) ⊙ u as gelu_avx2.c: x / (1 + exp(-2y)), y = sqrt(2/pi) (x + 0.044715 x³). */
void edge_gelu_mul_neon(float *h, const float *u, int64_t n) {
    const float32x4_t k = vdupq_n_f32(0.7978845608028654f), c = vdupq_n_f32(0.044715f), one = vdupq_n_f32(1.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t x = vld1q_f32(h + i);
        const float32x4_t y = vmulq_f32(k, vfmaq_f32(x, vmulq_f32(c, x), vmulq_f32(x, x)));
        const float32x4_t g = vdivq_f32(x, vaddq_f32(one, exp4(vmulq_f32(vdupq_n_f32(-2.0f), y))));
        vst1q_f32(h + i, vmulq_f32(g, vld1q_f32(u + i)));
    }
    for (; i < n; i++) {
        const float x = h[i];
        h[i] = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))) * u[i];
    }
}

/* ---------------------------------------------------------------- the attention loops */

enum { KV_F16, KV_Q8_0, KV_F32 };

/* Cached rows are fetched this many keys ahead (a head's slice of a row is strided by the whole row). */
#define KV_AHEAD 8
static inline void fetch_row(const uint8_t *row, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(row + o, 0, 3);
}
static inline size_t row_bytes(int kt, int64_t n) {
    return kt == KV_Q8_0 ? (size_t)n / QK8_0 * sizeof(block_q8_0) : (size_t)n * (kt == KV_F32 ? 4 : 2);
}

/* 4 values of an F16 or F32 row from value j, as floats; one value. */
NEON_INLINE float32x4_t row4(const uint8_t *row, int64_t j, const int kt) {
    if (kt == KV_F32) return vld1q_f32((const float *)(const void *)row + j);
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)(const void *)row + j)));
}
NEON_INLINE float row_at(const uint8_t *row, int64_t j, const int kt) {
    if (kt == KV_F32) return ((const float *)(const void *)row)[j];
    return edge_f16_to_f32(((const uint16_t *)(const void *)row)[j]);
}
/* 8 int8 values as floats (values 0..3, 4..7). */
NEON_INLINE void q8_8(const int8_t *qs, float32x4_t *lo, float32x4_t *hi) {
    const int16x8_t w = vmovl_s8(vld1_s8(qs));
    *lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
    *hi = vcvtq_f32_s32(vmovl_high_s16(w));
}

/* q · k for NH (1..4) query rows q + r n against one cached row; each row's sum formed as it is alone: two
 * accumulators of 4 lanes over every 8 values, one for a last 4, the lanes added, then the values past them
 * in scalar (F16, F32); Q8_0: per block the 32 products summed in 4 lanes, times the block's d into one
 * accumulator. */
NEON_INLINE void dots_row(const float *q, const int NH, const uint8_t *row, int64_t n, float *out, size_t out_stride,
                          const int kt) {
    float32x4_t a0[4], a1[4];
    for (int r = 0; r < NH; r++) a0[r] = a1[r] = vdupq_n_f32(0.0f);
    if (kt == KV_Q8_0) {
        const block_q8_0 *b = (const block_q8_0 *)(const void *)row;
        for (int64_t i = 0; i < n / QK8_0; i++) {
            float32x4_t k[8];
            for (int g = 0; g < 4; g++) q8_8(b[i].qs + 8 * g, &k[2 * g], &k[2 * g + 1]);
            const float d = edge_f16_to_f32(b[i].d);
            for (int r = 0; r < NH; r++) {
                const float *qb = q + r * n + QK8_0 * i;
                float32x4_t s = vmulq_f32(vld1q_f32(qb), k[0]);
                for (int g = 1; g < 8; g++) s = vfmaq_f32(s, vld1q_f32(qb + 4 * g), k[g]);
                a0[r] = vfmaq_n_f32(a0[r], s, d);
            }
        }
        for (int r = 0; r < NH; r++) out[(size_t)r * out_stride] = vaddvq_f32(a0[r]);
        return;
    }
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const float32x4_t k0 = row4(row, j, kt), k1 = row4(row, j + 4, kt);
        for (int r = 0; r < NH; r++) {
            a0[r] = vfmaq_f32(a0[r], vld1q_f32(q + r * n + j), k0);
            a1[r] = vfmaq_f32(a1[r], vld1q_f32(q + r * n + j + 4), k1);
        }
    }
    if (j + 4 <= n) {
        const float32x4_t k0 = row4(row, j, kt);
        for (int r = 0; r < NH; r++) a0[r] = vfmaq_f32(a0[r], vld1q_f32(q + r * n + j), k0);
        j += 4;
    }
    for (int r = 0; r < NH; r++) {
        float sum = vaddvq_f32(vaddq_f32(a0[r], a1[r]));
        for (int64_t jj = j; jj < n; jj++) sum += q[r * n + jj] * row_at(row, jj, kt);
        out[(size_t)r * out_stride] = sum;
    }
}

NEON_INLINE void scores_rows(const float *q, int nh, const uint8_t *k0, size_t stride, int64_t n_keys, int64_t n,
                             float *out, size_t out_stride, const int kt) {
    for (int64_t t = 0; t < n_keys; t++) {
        if (t + KV_AHEAD < n_keys) fetch_row(k0 + (size_t)(t + KV_AHEAD) * stride, row_bytes(kt, n));
        const uint8_t *row = k0 + (size_t)t * stride;
        for (int r0 = 0; r0 < nh; r0 += 4) {
            const float *qg = q + (size_t)r0 * (size_t)n;
            float *og = out + (size_t)r0 * out_stride + t;
            switch (nh - r0) { /* constant row counts: the accumulators stay in registers */
            case 1: dots_row(qg, 1, row, n, og, out_stride, kt); break;
            case 2: dots_row(qg, 2, row, n, og, out_stride, kt); break;
            case 3: dots_row(qg, 3, row, n, og, out_stride, kt); break;
            default: dots_row(qg, 4, row, n, og, out_stride, kt); break;
            }
        }
    }
}

/* acc + r n = Σ_t p[r][t] v_t key after key, one fused multiply-add per value (Q8_0: (p · d) times the value),
 * keys with p == 0 adding nothing. */
NEON_INLINE void wsum_rows(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0, size_t stride,
                           int64_t n_keys, int64_t n, const int kt) {
    for (int64_t i = 0; i < (int64_t)nh * n; i++) acc[i] = 0.0f;
    for (int64_t t = 0; t < n_keys; t++) {
        if (t + KV_AHEAD < n_keys) fetch_row(v0 + (size_t)(t + KV_AHEAD) * stride, row_bytes(kt, n));
        const uint8_t *row = v0 + (size_t)t * stride;
        for (int r = 0; r < nh; r++) {
            const float pt = p[(size_t)r * p_stride + (size_t)t];
            if (pt == 0.0f) continue;
            float *a = acc + (size_t)r * (size_t)n;
            if (kt == KV_Q8_0) {
                const block_q8_0 *b = (const block_q8_0 *)(const void *)row;
                for (int64_t i = 0; i < n / QK8_0; i++) {
                    const float32x4_t f = vdupq_n_f32(pt * edge_f16_to_f32(b[i].d));
                    for (int g = 0; g < 4; g++) {
                        float *ai = a + QK8_0 * i + 8 * g;
                        float32x4_t lo, hi;
                        q8_8(b[i].qs + 8 * g, &lo, &hi);
                        vst1q_f32(ai, vfmaq_f32(vld1q_f32(ai), f, lo));
                        vst1q_f32(ai + 4, vfmaq_f32(vld1q_f32(ai + 4), f, hi));
                    }
                }
                continue;
            }
            const float32x4_t f = vdupq_n_f32(pt);
            int64_t j = 0;
            for (; j + 4 <= n; j += 4) vst1q_f32(a + j, vfmaq_f32(vld1q_f32(a + j), f, row4(row, j, kt)));
            for (; j < n; j++) a[j] = fmaf(pt, row_at(row, j, kt), a[j]);
        }
    }
}

#define ATTN_NEON(T, KT)                                                                                     \
    void edge_attn_scores_multi_##T##_neon(const float *q, int nh, const uint8_t *k0, size_t stride,           \
                                           int64_t n_keys, int64_t n, float *out, size_t out_stride) {       \
        scores_rows(q, nh, k0, stride, n_keys, n, out, out_stride, KT);                                      \
    }                                                                                                        \
    void edge_attn_wsum_multi_##T##_neon(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0, \
                                         size_t stride, int64_t n_keys, int64_t n) {                         \
        wsum_rows(acc, nh, p, p_stride, v0, stride, n_keys, n, KT);                                          \
    }
ATTN_NEON(f16, KV_F16)
ATTN_NEON(f32, KV_F32)
ATTN_NEON(q8_0, KV_Q8_0)
