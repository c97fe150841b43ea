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

void edge_attn_exp_avx2(float *s, int64_t n, float max) {
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
    const float inv = 1.0f / sum;
    const __m256 vinv = _mm256_set1_ps(inv);
    for (t = 0; t + 8 <= n; t += 8) _mm256_storeu_ps(s + t, _mm256_mul_ps(_mm256_loadu_ps(s + t), vinv));
    for (; t < n; t++) s[t] *= inv;
}

/* Q8_0 cache: a head's slice is n/32 blocks of (f16 scale, 32 int8). */
static inline __m256 q8_lanes(const int8_t *qs) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)qs)));
}

/* A head's slice of a cached row is strided by the whole row (all KV heads): the rows are fetched
 * KV_AHEAD keys ahead (decode read them at DRAM latency, one row after the other: ~40 us per layer at
 * 80 keys on the bench's Grok-shaped file). */
#define KV_AHEAD 8
#define ROW_BYTES_f16(n) ((size_t)(n) * 2)
#define ROW_BYTES_f32(n) ((size_t)(n) * 4)
#define ROW_BYTES_q8_0(n) ((size_t)(n) / QK8_0 * sizeof(block_q8_0))
static inline void fetch_row(const uint8_t *row, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)row + o, _MM_HINT_T0);
}

/* ---------------------------------------------------------------- the query heads of one KV head together */

/* The loops over a group's rows (NH <= EDGE_ATTN_MAX_HEADS, a constant where they are inlined) and over
 * value vectors (NW <= 2) are unrolled by pragma: GCC -O2 left them rolled, the accumulator arrays on
 * the stack, every FMA a store and a reload (16-row tile, one thread: scores 15 -> 37, weighted sums
 * 17 -> 40 GMAC/s). */

/* 8 values of an F16 or F32 row from value j, as floats. */
#define ROW8(row, j, F32)                                                                               \
    ((F32) ? _mm256_loadu_ps((const float *)(const void *)(row) + (j))                                 \
           : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)(const void *)(row) + (j)))))
#define ROW_AT(row, j, F32)                                                                             \
    ((F32) ? ((const float *)(const void *)(row))[j] : edge_f16_to_f32(((const uint16_t *)(const void *)(row))[j]))

/* q · k for NH queries (q + r * n) and one F16 (converted once) or F32 row: two accumulators of 8 lanes per
 * query (values j..j+7 and j+8..j+15 of every 16), summed by hsum256, then the values past the last 8 in
 * scalar. */
static inline __attribute__((always_inline)) void dots_rows(const float *q, const int NH, const uint8_t *row,
                                                            int64_t n, float *out, size_t out_stride, const int F32) {
    __m256 a0[EDGE_ATTN_MAX_HEADS], a1[EDGE_ATTN_MAX_HEADS];
    _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++) a0[r] = a1[r] = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        const __m256 k0 = ROW8(row, j, F32), k1 = ROW8(row, j + 8, F32);
        _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++) {
            a0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * n + j), k0, a0[r]);
            a1[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * n + j + 8), k1, a1[r]);
        }
    }
    for (; j + 8 <= n; j += 8) {
        const __m256 k0 = ROW8(row, j, F32);
        _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++) a0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * n + j), k0, a0[r]);
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++) {
        const float *qr = q + r * n;
        float sum = hsum256(_mm256_add_ps(a0[r], a1[r]));
        for (int64_t jj = j; jj < n; jj++) sum += qr[jj] * ROW_AT(row, jj, F32);
        out[(size_t)r * out_stride] = sum;
    }
}
static inline __attribute__((always_inline)) void dots_f16(const float *q, const int NH, const uint8_t *row, int64_t n,
                                                           float *out, size_t out_stride) {
    dots_rows(q, NH, row, n, out, out_stride, 0);
}
static inline __attribute__((always_inline)) void dots_f32(const float *q, const int NH, const uint8_t *row, int64_t n,
                                                           float *out, size_t out_stride) {
    dots_rows(q, NH, row, n, out, out_stride, 1);
}

/* The same for a Q8_0 row (n a multiple of 32): per block, the four products of 8 summed, times the
 * block's d into one accumulator per query. */
static inline __attribute__((always_inline)) void dots_q8_0(const float *q, const int NH, const uint8_t *row,
                                                            int64_t n, float *out, size_t out_stride) {
    const block_q8_0 *b = (const block_q8_0 *)(const void *)row;
    __m256 acc[EDGE_ATTN_MAX_HEADS];
    _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const __m256 l0 = q8_lanes(b[i].qs), l1 = q8_lanes(b[i].qs + 8), l2 = q8_lanes(b[i].qs + 16);
        const __m256 l3 = q8_lanes(b[i].qs + 24), d = _mm256_set1_ps(_cvtsh_ss(b[i].d));
        _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++) {
            const float *qb = q + r * n + QK8_0 * i;
            __m256 s = _mm256_mul_ps(_mm256_loadu_ps(qb), l0);
            s = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 8), l1, s);
            s = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 16), l2, s);
            s = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 24), l3, s);
            acc[r] = _mm256_fmadd_ps(d, s, acc[r]);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++) out[(size_t)r * out_stride] = hsum256(acc[r]);
}

/* Keys per block of the scores: with more than EDGE_ATTN_MAX_HEADS query rows, the block's key rows stay
 * in L1 while every group of rows is scored against them. */
#define SCORE_KEYS 64

#define ATTN_SCORES_MULTI(T)                                                                            \
    void edge_attn_scores_multi_##T##_avx2(const float *q, int nh, const uint8_t *k0, size_t stride,      \
                                           int64_t n_keys, int64_t n, float *out, size_t out_stride) {  \
        for (int64_t t0 = 0; t0 < n_keys; t0 += SCORE_KEYS) {                                           \
            const int64_t t1 = t0 + SCORE_KEYS < n_keys ? t0 + SCORE_KEYS : n_keys;                     \
            for (int r0 = 0; r0 < nh; r0 += EDGE_ATTN_MAX_HEADS) {                                      \
                const float *qg = q + (size_t)r0 * (size_t)n;                                           \
                float *og = out + (size_t)r0 * out_stride;                                              \
                for (int64_t t = t0; t < t1; t++) {                                                     \
                    if (r0 == 0 && t + KV_AHEAD < n_keys)                                               \
                        fetch_row(k0 + (size_t)(t + KV_AHEAD) * stride, ROW_BYTES_##T(n));              \
                    const uint8_t *row = k0 + (size_t)t * stride;                                       \
                    switch (nh - r0) { /* constant row counts: the accumulators stay in registers */    \
                    case 1: dots_##T(qg, 1, row, n, og + t, out_stride); break;                         \
                    case 2: dots_##T(qg, 2, row, n, og + t, out_stride); break;                         \
                    case 3: dots_##T(qg, 3, row, n, og + t, out_stride); break;                         \
                    default: dots_##T(qg, 4, row, n, og + t, out_stride); break;                        \
                    }                                                                                   \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
    }
ATTN_SCORES_MULTI(f16)
ATTN_SCORES_MULTI(f32)
ATTN_SCORES_MULTI(q8_0)

/* Keys per block of the weighted sum: the block's value rows stay in L1 while every W values of every
 * head are summed over them (the sums kept in acc between blocks: the same fmas, in the same key order). */
#define WSUM_KEYS 64
_Static_assert(WSUM_KEYS <= 64, "nonzero_keys: one bit per key of a block");

/* The cache types of the weighted sum's loops. */
enum { KV_F16, KV_Q8_0, KV_F32 };

/* Values c .. c + 8 * NW - 1 (NW = 1 or 2 vectors; Q8_0: one block holds them) of NH heads over keys
 * t0 .. t1 - 1, key after key: p · v (F16, F32), (p · d) · v (Q8_0), keys with p == 0 adding nothing. */
static inline __attribute__((always_inline)) void wsum_block(float *acc, const int KT, const int NH, const int NW,
                                                             const float *p, size_t p_stride, const uint8_t *v0,
                                                             size_t stride, int64_t t0, int64_t t1, int64_t n_keys,
                                                             int64_t n, int64_t c, bool fetch, uint64_t nz) {
    const size_t row_bytes = KT == KV_Q8_0 ? ROW_BYTES_q8_0(n) : KT == KV_F32 ? ROW_BYTES_f32(n) : ROW_BYTES_f16(n);
    __m256 a[EDGE_ATTN_MAX_HEADS][2];
    _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++)
        _Pragma("GCC unroll 2") for (int w = 0; w < NW; w++) a[r][w] = _mm256_loadu_ps(acc + r * n + c + 8 * w);
    for (int64_t t = t0; t < t1; t++) {
        if (fetch && t + KV_AHEAD < n_keys) fetch_row(v0 + (size_t)(t + KV_AHEAD) * stride, row_bytes);
        const bool all_nonzero = nz >> (t - t0) & 1; /* then no row's p is tested */
        const uint8_t *row = v0 + (size_t)t * stride;
        __m256 v[2];
        float d = 1.0f;
        if (KT == KV_Q8_0) {
            const block_q8_0 *b = (const block_q8_0 *)(const void *)row + c / QK8_0;
            d = _cvtsh_ss(b->d);
            _Pragma("GCC unroll 2") for (int w = 0; w < NW; w++) v[w] = q8_lanes(b->qs + c % QK8_0 + 8 * w);
        } else {
            _Pragma("GCC unroll 2") for (int w = 0; w < NW; w++) v[w] = ROW8(row, c + 8 * w, KT == KV_F32);
        }
        if (all_nonzero) {
            _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++) {
                const float pt = p[(size_t)r * p_stride + (size_t)t];
                const __m256 f = _mm256_set1_ps(KT == KV_Q8_0 ? pt * d : pt);
                _Pragma("GCC unroll 2") for (int w = 0; w < NW; w++) a[r][w] = _mm256_fmadd_ps(f, v[w], a[r][w]);
            }
            continue;
        }
        _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++) {
            const float pt = p[(size_t)r * p_stride + (size_t)t];
            if (pt == 0.0f) continue;
            const __m256 f = _mm256_set1_ps(KT == KV_Q8_0 ? pt * d : pt);
            _Pragma("GCC unroll 2") for (int w = 0; w < NW; w++) a[r][w] = _mm256_fmadd_ps(f, v[w], a[r][w]);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < NH; r++)
        _Pragma("GCC unroll 2") for (int w = 0; w < NW; w++) _mm256_storeu_ps(acc + r * n + c + 8 * w, a[r][w]);
}

/* Bit t - t0 set where every one of the g rows (p + r * p_stride) has p[t] != 0, keys t0 .. t1-1 (<= 64):
 * there the block's loop multiplies without testing each row's p (a per-row branch per key and 8 values
 * cost a third of its time); elsewhere it skips the zeros row by row. */
static inline uint64_t nonzero_keys(const float *p, int g, size_t p_stride, int64_t t0, int64_t t1) {
    uint64_t nz = 0;
    int64_t t = t0;
    for (; t + 8 <= t1; t += 8) {
        __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        for (int r = 0; r < g; r++)
            all = _mm256_and_ps(all, _mm256_cmp_ps(_mm256_loadu_ps(p + (size_t)r * p_stride + (size_t)t), _mm256_setzero_ps(), _CMP_NEQ_UQ));
        nz |= (uint64_t)(unsigned)_mm256_movemask_ps(all) << (t - t0);
    }
    for (; t < t1; t++) {
        bool all = true;
        for (int r = 0; r < g; r++) all = all && p[(size_t)r * p_stride + (size_t)t] != 0.0f;
        nz |= (uint64_t)all << (t - t0);
    }
    return nz;
}

/* Values c .. c + 8 * NW - 1 of the group's rows over the block (ag, pg, g, nz: the group's sums,
 * probabilities, row count and nonzero_keys; the value rows fetched ahead by the first pass only). */
#define WSUM_GROUP(KT, NW)                                                                              \
    do {                                                                                                \
        const bool fetch = c == 0 && r0 == 0;                                                           \
        switch (g) {                                                                                    \
        case 1: wsum_block(ag, KT, 1, NW, pg, p_stride, v0, stride, t0, t1, n_keys, n, c, fetch, nz); break; \
        case 2: wsum_block(ag, KT, 2, NW, pg, p_stride, v0, stride, t0, t1, n_keys, n, c, fetch, nz); break; \
        case 3: wsum_block(ag, KT, 3, NW, pg, p_stride, v0, stride, t0, t1, n_keys, n, c, fetch, nz); break; \
        default: wsum_block(ag, KT, 4, NW, pg, p_stride, v0, stride, t0, t1, n_keys, n, c, fetch, nz); break; \
        }                                                                                               \
    } while (0)

/* Per block of keys, per group of up to EDGE_ATTN_MAX_HEADS rows: BODY with ag, pg, g and nz set. */
#define WSUM_GROUPS(BODY)                                                                               \
    for (int r0 = 0; r0 < nh; r0 += EDGE_ATTN_MAX_HEADS) {                                              \
        const int g = nh - r0 < EDGE_ATTN_MAX_HEADS ? nh - r0 : EDGE_ATTN_MAX_HEADS;                   \
        float *ag = acc + (size_t)r0 * (size_t)n;                                                       \
        const float *pg = p + (size_t)r0 * p_stride;                                                    \
        const uint64_t nz = nonzero_keys(pg, g, p_stride, t0, t1);                                      \
        BODY                                                                                            \
    }

/* Steps of 16 and 8 values, then (F16, F32) the values past the last 8 key by key in scalar; Q8_0 rows
 * have n a multiple of 32: 16-value steps only. */
static inline __attribute__((always_inline)) void wsum_rows(float *acc, int nh, const float *p, size_t p_stride,
                                                            const uint8_t *v0, size_t stride, int64_t n_keys,
                                                            int64_t n, const int KT) {
    for (int64_t i = 0; i < (int64_t)nh * n; i++) acc[i] = 0.0f;
    const int64_t n8 = n / 8 * 8;
    for (int64_t t0 = 0; t0 < n_keys; t0 += WSUM_KEYS) {
        const int64_t t1 = t0 + WSUM_KEYS < n_keys ? t0 + WSUM_KEYS : n_keys;
        WSUM_GROUPS({
            int64_t c = 0;
            for (; c + 16 <= n8; c += 16) WSUM_GROUP(KT, 2);
            if (KT != KV_Q8_0)
                for (; c < n8; c += 8) WSUM_GROUP(KT, 1);
        })
        if (KT == KV_Q8_0) continue;
        for (int r = 0; r < nh; r++)
            for (int64_t j = n8; j < n; j++) {
                float sum = acc[r * n + j];
                for (int64_t t = t0; t < t1; t++) {
                    const float pt = p[(size_t)r * p_stride + (size_t)t];
                    if (pt != 0.0f) sum += pt * ROW_AT(v0 + (size_t)t * stride, j, KT == KV_F32);
                }
                acc[r * n + j] = sum;
            }
    }
}

void edge_attn_wsum_multi_f16_avx2(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0,
                                   size_t stride, int64_t n_keys, int64_t n) {
    wsum_rows(acc, nh, p, p_stride, v0, stride, n_keys, n, KV_F16);
}

void edge_attn_wsum_multi_f32_avx2(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0,
                                   size_t stride, int64_t n_keys, int64_t n) {
    wsum_rows(acc, nh, p, p_stride, v0, stride, n_keys, n, KV_F32);
}

void edge_attn_wsum_multi_q8_0_avx2(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0,
                                    size_t stride, int64_t n_keys, int64_t n) {
    wsum_rows(acc, nh, p, p_stride, v0, stride, n_keys, n, KV_Q8_0);
}
