/* attention_avx2.c — the attention inner loops over cached K/V rows with AVX2 + FMA + F16C
 * (compiled with those flags only; chosen at context creation when the CPU has them). */
#include <immintrin.h>

#include "engine/engine.h"

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
