/* attention_avx2.c — the attention inner loops over cached K/V rows (F16, F32, Q8_0) with AVX2 + FMA + F16C
 * (compiled with those flags only; chosen at context creation when the CPU has them). */
#include <immintrin.h>
#include <math.h>

#include "blocks.h"
#include "engine/engine.h"
#include "engine/exp_avx2.h"

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

float edge_attn_dot_f16_avx2(const float *q, const void *k_row, int64_t n) {
    const uint16_t *k = k_row;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + j))), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8),
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + j + 8))), a1);
    }
    for (; j + 8 <= n; j += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + j))), a0);
    float sum = hsum256(_mm256_add_ps(a0, a1));
    for (; j < n; j++) sum += q[j] * edge_f16_to_f32(k[j]);
    return sum;
}

void edge_attn_axpy_f16_avx2(float *acc, float p, const void *v_row, int64_t n) {
    const uint16_t *v = v_row;
    const __m256 pp = _mm256_set1_ps(p);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(acc + j, _mm256_fmadd_ps(pp, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + j))),
                                                  _mm256_loadu_ps(acc + j)));
    for (; j < n; j++) acc[j] += p * edge_f16_to_f32(v[j]);
}

float edge_attn_dot_f32_avx2(const float *q, const void *k_row, int64_t n) {
    const float *k = k_row;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), _mm256_loadu_ps(k + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8), _mm256_loadu_ps(k + j + 8), a1);
    }
    for (; j + 8 <= n; j += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), _mm256_loadu_ps(k + j), a0);
    float sum = hsum256(_mm256_add_ps(a0, a1));
    for (; j < n; j++) sum += q[j] * k[j];
    return sum;
}

void edge_attn_axpy_f32_avx2(float *acc, float p, const void *v_row, int64_t n) {
    const float *v = v_row;
    const __m256 pp = _mm256_set1_ps(p);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(acc + j, _mm256_fmadd_ps(pp, _mm256_loadu_ps(v + j), _mm256_loadu_ps(acc + j)));
    for (; j < n; j++) acc[j] += p * v[j];
}

/* tanh for 8 lanes as Cephes' tanhf: an odd polynomial for |x| < 0.625 (no cancellation near 0),
 * 1 - 2 / (e^{2|x|} + 1) with the sign restored above; ~2 ulps. */
static inline __m256 tanh256(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 z = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-5.70498872745e-3f);
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.06390887954e-2f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.37397155531e-2f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.33314422036e-1f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33332819422e-1f));
    const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
    const __m256 e = edge_exp256(_mm256_add_ps(ax, ax));
    __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f), _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    big = _mm256_or_ps(big, _mm256_and_ps(sign, x));
    return _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
}

float edge_attn_softcap_avx2(float *s, int64_t n, float mult, float cap) {
    const __m256 vm = _mm256_set1_ps(mult), vcap = _mm256_set1_ps(cap), vinv = _mm256_set1_ps(cap > 0 ? 1.0f / cap : 0);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 vmax = ninf;
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) {
        const __m256 raw = _mm256_loadu_ps(s + t);
        const __m256 masked = _mm256_cmp_ps(raw, ninf, _CMP_EQ_OQ);
        __m256 v = _mm256_mul_ps(raw, vm);
        if (cap > 0.0f) v = _mm256_mul_ps(vcap, tanh256(_mm256_mul_ps(v, vinv)));
        v = _mm256_blendv_ps(v, ninf, masked);
        _mm256_storeu_ps(s + t, v);
        vmax = _mm256_max_ps(vmax, v);
    }
    float m[8], max = -INFINITY;
    _mm256_storeu_ps(m, vmax);
    for (int j = 0; j < 8; j++) max = m[j] > max ? m[j] : max;
    for (; t < n; t++) {
        if (s[t] == -INFINITY) continue;
        float v = s[t] * mult;
        if (cap > 0.0f) v = cap * tanhf(v / cap);
        s[t] = v;
        max = v > max ? v : max;
    }
    return max;
}

float edge_attn_exp_avx2(float *s, int64_t n, float max) {
    const __m256 vmax = _mm256_set1_ps(max), ninf = _mm256_set1_ps(-INFINITY), zero = _mm256_setzero_ps();
    __m256 acc = zero;
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) {
        const __m256 v = _mm256_loadu_ps(s + t);
        const __m256 e = _mm256_blendv_ps(edge_exp256(_mm256_sub_ps(v, vmax)), zero, _mm256_cmp_ps(v, ninf, _CMP_EQ_OQ));
        _mm256_storeu_ps(s + t, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum256(acc);
    for (; t < n; t++) sum += (s[t] = expf(s[t] - max));
    return sum;
}

/* Q8_0 cache: a head's slice is n/32 blocks of (f16 scale, 32 int8). */
static inline __m256 q8_lanes(const int8_t *qs) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)qs)));
}

float edge_attn_dot_q8_0_avx2(const float *q, const void *k_row, int64_t n) {
    const block_q8_0 *b = k_row;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++, q += QK8_0) {
        __m256 s = _mm256_mul_ps(_mm256_loadu_ps(q), q8_lanes(b[i].qs));
        s = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8), q8_lanes(b[i].qs + 8), s);
        s = _mm256_fmadd_ps(_mm256_loadu_ps(q + 16), q8_lanes(b[i].qs + 16), s);
        s = _mm256_fmadd_ps(_mm256_loadu_ps(q + 24), q8_lanes(b[i].qs + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), s, acc);
    }
    return hsum256(acc);
}

void edge_attn_axpy_q8_0_avx2(float *acc, float p, const void *v_row, int64_t n) {
    const block_q8_0 *b = v_row;
    for (int64_t i = 0; i < n / QK8_0; i++, acc += QK8_0) {
        const __m256 pd = _mm256_set1_ps(p * _cvtsh_ss(b[i].d));
        for (int j = 0; j < QK8_0; j += 8)
            _mm256_storeu_ps(acc + j, _mm256_fmadd_ps(pd, q8_lanes(b[i].qs + j), _mm256_loadu_ps(acc + j)));
    }
}
