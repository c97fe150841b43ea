/* dot_simd_x86.h — the x86 SIMD kernels, written once on 256-bit vectors and compiled twice:
 * by dot_avx2.c (AVX2 + FMA + F16C: u8·s8 products with maddubs/madd) and by dot_avx512.c
 * (AVX-512 VL + VNNI: the same products with one vpdpbusd). Included only by those two files.
 *
 * Before including, define EDGE_SIMD_VNNI (0 or 1) and EDGE_SIMD_TABLE (the table's name), and
 * optionally EDGE_SIMD_DOT_Q4_K / _Q5_K / _Q6_K to put wider kernels in the table.
 *
 * Every kernel computes one weight row against nt (1..4) activation rows: a weight block is loaded
 * and unpacked once and used for every token, which is what makes prompt processing compute-bound
 * instead of re-reading weights per token. The integer sums equal the scalar kernels' exactly (no
 * int16 saturation can occur: each bound is noted at its kernel), so the paths differ from the
 * scalar reference only in float summation order. The dot kernels of the K-quants that dominate Grok
 * files (Q4_K, Q5_K, Q6_K) are written as per-block steps, which the AVX2 build also runs over runs of
 * rows for decode (SIMD_MATVEC2): a token's sums are the same in either. AVX2 Q8_0 prompts run on quads
 * of interleaved tokens (ymm_gemm4_q8_0), with a one-token kernel that sums as they do. */
#include <immintrin.h>

#include "kernels_impl.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------ primitives */

/* (a0 + a2) + (a1 + a3): also the order of dot_avx512.c's quad_sum for one token */
ALWAYS_INLINE float quad_lanes_sum(__m128 a) {
    const __m128 t = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

ALWAYS_INLINE float hsum_ps(__m256 v) {
    return quad_lanes_sum(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

ALWAYS_INLINE float f16(uint16_t h) { return _cvtsh_ss(h); }

#if EDGE_SIMD_VNNI
/* Scaled products: maddubs' int16 pair sums times int16 scales, accumulated by one vpdpwssd. */
typedef __m256i scale_vec;
ALWAYS_INLINE scale_vec scale1(int s) { return _mm256_set1_epi16((short)s); }
ALWAYS_INLINE scale_vec scale2(int lo, int hi) {
    return _mm256_setr_m128i(_mm_set1_epi16((short)lo), _mm_set1_epi16((short)hi));
}
/* acc += sum over each 4 bytes of u (unsigned) * s (signed), int32 lanes. */
ALWAYS_INLINE __m256i dot_us8(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
/* acc += scale * (sums of u*s); each lane's scale from sc. */
ALWAYS_INLINE __m256i dot_us8_scaled(__m256i acc, __m256i u, __m256i s, scale_vec sc) {
    return _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, s), sc);
}
#else
/* Per-sub-block scales as 16-bit lanes: madd multiplies the int16 pair sums of maddubs by them. */
typedef __m256i scale_vec;
ALWAYS_INLINE scale_vec scale1(int s) { return _mm256_set1_epi16((short)s); }
ALWAYS_INLINE scale_vec scale2(int lo, int hi) {
    return _mm256_setr_m128i(_mm_set1_epi16((short)lo), _mm_set1_epi16((short)hi));
}
ALWAYS_INLINE __m256i dot_us8(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
ALWAYS_INLINE __m256i dot_us8_scaled(__m256i acc, __m256i u, __m256i s, scale_vec sc) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc));
}
#endif

/* Per-sub-block scales by one vpshufb each from a block's scales converted once (extracting each byte and
 * broadcasting it took three operations per sub-block, six for Q6_K's pairs). One-token dot, one thread,
 * L2-resident rows, alternating in one process (Zen 3, AVX2): Q4_K 13.4 -> 16.5 GB/s, Q6_K 13.3 -> 18.5.
 * Here: int16 lane k of the low 128-bit lane of v in the low lane, lane k2 of the high 128-bit lane in the
 * high one. */
ALWAYS_INLINE __m256i scale_of2(__m256i v, int k, int k2) {
    return _mm256_shuffle_epi8(v, _mm256_setr_m128i(_mm_set1_epi16((short)(0x0101 * 2 * k + 0x0100)),
                                                    _mm_set1_epi16((short)(0x0101 * 2 * k2 + 0x0100))));
}

/* Keeps an integer accumulator updated in place: without it GCC reassociates a block's sums into one
 * tree over all its products, keeping them all live, and with 4 tokens spills them to the stack. */
#define SUM_IN_REGISTER(v) __asm__("" : "+x"(v))

/* Signed weights: |w| (as unsigned) times x with w's sign; x is never -128 (quantize_act.c). */
ALWAYS_INLINE __m256i dot_ss8(__m256i acc, __m256i w_abs, __m256i w, __m256i x) {
    return dot_us8(acc, w_abs, _mm256_sign_epi8(x, w));
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles in the low lane, high nibbles in the high lane
 * (ggml's order for 32-element blocks: element j < 16 is qs[j] & 15, element j + 16 is qs[j] >> 4). */
ALWAYS_INLINE __m256i unpack_nibbles16(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_setr_m128i(t, _mm_srli_epi16(t, 4)), _mm256_set1_epi8(0x0F));
}

/* 32 bits -> 32 bytes, byte j = 0xFF where bit j is set (ggml's bytes_from_bits_32). */
ALWAYS_INLINE __m256i bytes_from_bits32(const uint8_t *p) {
    uint32_t x32;
    memcpy(&x32, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

#define XROW(type, t) ((const type *)((const char *)x + (size_t)(t) * xs))

/* Dispatch nt = 1..4 (MULTI_TOKEN), or 1..EDGE_DOT_WIDE_TOK = 8 for the kernels a table marks dot_wide
 * (MULTI_TOKEN_WIDE), to an always-inlined body with a constant token count. */
#define TOKEN_CASE(name, k) case k: name##_body(n, w, x, xs, k, out); break;
#define TOKEN_CASES_3(name) TOKEN_CASE(name, 1) TOKEN_CASE(name, 2) TOKEN_CASE(name, 3)
#define TOKEN_CASES_7(name) TOKEN_CASES_3(name) TOKEN_CASE(name, 4) TOKEN_CASE(name, 5) TOKEN_CASE(name, 6) TOKEN_CASE(name, 7)
#define MULTI_TOKEN_UPTO(name, CASES, last)                                                             \
    __attribute__((unused)) static void name(int64_t n, const void *w, const void *x, size_t xs, int nt,  \
                                             float *out) {                                             \
        switch (nt) {                                                                                    \
            CASES(name)                                                                                  \
        default: name##_body(n, w, x, xs, last, out); break;                                             \
        }                                                                                                \
    }
#define MULTI_TOKEN(name) MULTI_TOKEN_UPTO(name, TOKEN_CASES_3, 4)
#define MULTI_TOKEN_WIDE(name) MULTI_TOKEN_UPTO(name, TOKEN_CASES_7, 8)

/* Constant row and quad counts for a gemm4 body (the accumulators stay in registers). */
#define GEMM4_DISPATCH(name)                                                                               \
    static void name(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nq, float *out) { \
        switch (nr * 8 + nq) {                                                                             \
        case 8 + 1: name##_body(n, w, ws, x, xs, out, 1, 1); break;                                        \
        case 8 + 2: name##_body(n, w, ws, x, xs, out, 1, 2); break;                                        \
        case 8 + 3: name##_body(n, w, ws, x, xs, out, 1, 3); break;                                        \
        case 8 + 4: name##_body(n, w, ws, x, xs, out, 1, 4); break;                                        \
        case 16 + 1: name##_body(n, w, ws, x, xs, out, 2, 1); break;                                       \
        case 16 + 2: name##_body(n, w, ws, x, xs, out, 2, 2); break;                                       \
        case 16 + 3: name##_body(n, w, ws, x, xs, out, 2, 3); break;                                       \
        default: name##_body(n, w, ws, x, xs, out, 2, 4); break;                                           \
        }                                                                                                  \
    }

/* ------------------------------------------------------------------ float weights (x in F32) */

#define FLOAT_DOT(name, LOAD8, SCALAR)                                                                  \
    ALWAYS_INLINE void name##_body(int64_t n, const void *w, const void *x, size_t xs, const int nt,   \
                                   float *out) {                                                       \
        const uint8_t *wb = w;                                                                          \
        __m256 acc0[4], acc1[4];                                                                        \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) acc0[t] = acc1[t] = _mm256_setzero_ps();                           \
        int64_t i = 0;                                                                                  \
        for (; i + 16 <= n; i += 16) {                                                                  \
            const __m256 w0 = LOAD8(wb, i), w1 = LOAD8(wb, i + 8);                                      \
            _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {                                                              \
                const float *xt = XROW(float, t);                                                       \
                acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt + i), acc0[t]);                        \
                acc1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + i + 8), acc1[t]);                    \
            }                                                                                           \
        }                                                                                               \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {                                                                  \
            const float *xt = XROW(float, t);                                                           \
            float s = hsum_ps(_mm256_add_ps(acc0[t], acc1[t]));                                         \
            for (int64_t j = i; j < n; j++) s += SCALAR(wb, j) * xt[j];                                 \
            out[t] = s;                                                                                 \
        }                                                                                               \
    }                                                                                                   \
    MULTI_TOKEN(name)

#define LOAD_F32(p, i) _mm256_loadu_ps((const float *)(p) + (i))
#define SCALAR_F32(p, i) (((const float *)(p))[i])
#define LOAD_F16(p, i) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)(p) + (i))))
#define SCALAR_F16(p, i) f16(((const uint16_t *)(p))[i])
#define LOAD_BF16(p, i)                                                                                 \
    _mm256_castsi256_ps(_mm256_slli_epi32(                                                             \
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)(p) + (i)))), 16))
#define SCALAR_BF16(p, i) edge_bf16_to_f32(((const uint16_t *)(p))[i])

FLOAT_DOT(simd_dot_f32, LOAD_F32, SCALAR_F32)
FLOAT_DOT(simd_dot_f16, LOAD_F16, SCALAR_F16)
FLOAT_DOT(simd_dot_bf16, LOAD_BF16, SCALAR_BF16)

/* ------------------------------------------------------------------ 32-element blocks (x in Q8_0 / Q8_1) */

#define SCALE_CHUNK 64
/* sc[t][j] = d of weight block j (its f16 at d, blocks bs bytes apart) * d of token t's activation block c + j,
 * for j < m: the products of the per-block loop, computed 8 at a time ahead of it. */
ALWAYS_INLINE void block_scales(const uint16_t *d, size_t bs, int m, const void *x, size_t xs, int64_t n,
                                int64_t c, const int nt, float sc[4][SCALE_CHUNK]) {
    const char *p = (const char *)d;
    int j = 0;
    for (; j + 8 <= m; j += 8) {
        uint16_t h[8];
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) memcpy(&h[k], p + (size_t)(j + k) * bs, 2);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++)
            _mm256_store_ps(&sc[t][j], _mm256_mul_ps(dw, _mm256_loadu_ps(edge_q8s_d(XROW(char, t), n) + c + j)));
    }
    for (; j < m; j++) {
        uint16_t h;
        memcpy(&h, p + (size_t)j * bs, 2);
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) sc[t][j] = f16(h) * edge_q8s_d(XROW(char, t), n)[c + j];
    }
}

/* Signed 32-element weights (Q8_0, Q4_0, Q5_0, IQ4_NL): w = d * v with v int8; maddubs bound
 * 2 * 128 * 127 = 32512 < 32767. UNPACK(a, i) yields the 32 signed values of block i. */
#define SIGNED32_DOT(name, btype, UNPACK)                                                               \
    ALWAYS_INLINE void name##_body(int64_t n, const void *w, const void *x, size_t xs, const int nt,   \
                                   float *out) {                                                       \
        const btype *a = w;                                                                             \
        const int64_t nb = n / 32;                                                                      \
        __m256 acc[4];                                                                                  \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();              \
        float sc[4][SCALE_CHUNK] __attribute__((aligned(32)));                                          \
        for (int64_t c = 0; c < nb; c += SCALE_CHUNK) {                                                 \
            const int m = nb - c < SCALE_CHUNK ? (int)(nb - c) : SCALE_CHUNK;                           \
            block_scales(&a[c].d, sizeof(btype), m, x, xs, n, c, nt, sc);                               \
            for (int j = 0; j < m; j++) {                                                               \
                const __m256i v = UNPACK(a, c + j);                                                     \
                const __m256i va = _mm256_sign_epi8(v, v);                                              \
                _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {                                  \
                    const __m256i p = dot_ss8(_mm256_setzero_si256(), va, v,                            \
                        _mm256_loadu_si256((const __m256i *)(edge_q8s_qs(XROW(char, t)) + 32 * (c + j)))); \
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(sc[t][j]), acc[t]);  \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) out[t] = hsum_ps(acc[t]);                  \
    }                                                                                                   \
    MULTI_TOKEN(name)

#define UNPACK_Q8_0(a, i) _mm256_loadu_si256((const __m256i *)(a)[i].qs)
#define UNPACK_Q4_0(a, i) _mm256_sub_epi8(unpack_nibbles16((a)[i].qs), _mm256_set1_epi8(8))
/* q5 - 16: a clear high bit makes the nibble negative by or-ing 0xF0. */
#define UNPACK_Q5_0(a, i)                                                                               \
    _mm256_or_si256(unpack_nibbles16((a)[i].qs),                                                       \
                    _mm256_andnot_si256(bytes_from_bits32((a)[i].qh), _mm256_set1_epi8((char)0xF0)))
#define UNPACK_IQ4_NL(a, i)                                                                             \
    _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)edge_kvalues_iq4nl)), \
                        unpack_nibbles16((a)[i].qs))

SIGNED32_DOT(simd_dot_q8_0, block_q8_0, UNPACK_Q8_0)
SIGNED32_DOT(simd_dot_q4_0, block_q4_0, UNPACK_Q4_0)
SIGNED32_DOT(simd_dot_q5_0, block_q5_0, UNPACK_Q5_0)
SIGNED32_DOT(simd_dot_iq4_nl, block_iq4_nl, UNPACK_IQ4_NL)

/* Unsigned weights with a min (Q4_1, Q5_1): w = d * u + m, x in Q8_1 whose s = d_x * sum(q).
 * maddubs bound 2 * 31 * 127 < 32767. */
#define MIN32_DOT(name, btype, UNPACK)                                                                  \
    ALWAYS_INLINE void name##_body(int64_t n, const void *w, const void *x, size_t xs, const int nt,   \
                                   float *out) {                                                       \
        const btype *a = w;                                                                             \
        __m256 acc[4];                                                                                  \
        float mins[4] = {0, 0, 0, 0};                                                                   \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();                                      \
        for (int64_t i = 0; i < n / 32; i++) {                                                          \
            const __m256i u = UNPACK(a, i);                                                             \
            const float dw = f16(a[i].d), mw = f16(a[i].m);                                             \
            _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {                                                              \
                const block_q8_1 *b = XROW(block_q8_1, t) + i;                                          \
                const __m256i p = dot_us8(_mm256_setzero_si256(), u, _mm256_loadu_si256((const __m256i *)b->qs)); \
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * f16(b->d)), acc[t]);  \
                mins[t] += mw * f16(b->s);                                                              \
            }                                                                                           \
        }                                                                                               \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) out[t] = hsum_ps(acc[t]) + mins[t];                                \
    }                                                                                                   \
    MULTI_TOKEN(name)

#define UNPACK_Q4_1(a, i) unpack_nibbles16((a)[i].qs)
#define UNPACK_Q5_1(a, i)                                                                               \
    _mm256_or_si256(unpack_nibbles16((a)[i].qs),                                                       \
                    _mm256_and_si256(bytes_from_bits32((a)[i].qh), _mm256_set1_epi8(0x10)))

MIN32_DOT(simd_dot_q4_1, block_q4_1, UNPACK_Q4_1)
MIN32_DOT(simd_dot_q5_1, block_q5_1, UNPACK_Q5_1)

/* ------------------------------------------------------------------ K-quants (x in Q8_K) */

/* The 8 six-bit scales (bytes 0..7) and mins (bytes 8..15) of a Q4_K/Q5_K block, in each 128-bit lane of
 * a vector whose lanes hold 16 bytes from a block's scales on (ggml's scalar trick on 32-bit lanes: a store
 * and reload of the scalar result stalls store forwarding, which cost a fifth of the one-token kernel's
 * time). u0, u1, u2 = scale bytes 0..3, 4..7, 8..11:
 *   scales 0..3 = u0 & 63          scales 4..7 = (u2 & 15) | (u0 >> 6) << 4
 *   mins 0..3   = u1 & 63          mins 4..7   = (u2 >> 4 & 15) | (u1 >> 6) << 4 */
ALWAYS_INLINE __m256i k4_scales_mins_of(const __m256i v) {
    const __m256i lo6 = _mm256_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f,
                                          0x3f3f3f3f, 0x0f0f0f0f);
    __m256i a = _mm256_shuffle_epi32(v, 0x98); /* u0, u2, u1, u2 */
    a = _mm256_and_si256(_mm256_srlv_epi32(a, _mm256_setr_epi32(0, 0, 0, 4, 0, 0, 0, 4)), lo6);
    __m256i b = _mm256_shuffle_epi32(v, 0x50); /* u0, u0, u1, u1: bits 6..7 of each byte to 4..5 */
    b = _mm256_and_si256(_mm256_srli_epi32(b, 2), _mm256_setr_epi32(0, 0x30303030, 0, 0x30303030, 0, 0x30303030, 0, 0x30303030));
    return _mm256_or_si256(a, b);
}

/* Those of one block in both 128-bit lanes (reads 16 bytes at `scales`: the 12 scale bytes and 4 bytes of
 * the block's quants). Computed on the broadcast bytes rather than in 128 bits and then broadcast: the
 * one-token Q4_K kernel, one thread, rows in L2, alternating in one process (Zen 3): 22.3-22.8 -> 21.5-22.4
 * cycles a block in five runs (Q5_K 27.6 -> 27.2-27.5). */
ALWAYS_INLINE __m256i k4_scales_mins2x(const uint8_t *scales) {
    return k4_scales_mins_of(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)scales)));
}

/* Those of one block, in 128 bits. */
ALWAYS_INLINE __m128i k4_scales_mins(const uint8_t *scales) {
    return _mm256_castsi256_si128(k4_scales_mins_of(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)scales))));
}

/* Byte k of each 128-bit lane of v, zero-extended, in every int16 lane of that 128-bit lane (v: the 16
 * bytes of k4_scales_mins in both lanes; one vpshufb, no conversion to int16 first). */
ALWAYS_INLINE __m256i byte_scale_of(__m256i v, int k) { return _mm256_shuffle_epi8(v, _mm256_set1_epi16((short)(0x8000 | k))); }

/* sum_k mins[k] * (bsums[2k] + bsums[2k+1]) for the 8 sub-blocks of 32, as int32 lanes: one madd of the
 * sums of 16 with each min twice, taken by one vpshufb (smv2: k4_scales_mins in both 128-bit lanes; the
 * mins are its bytes 8..15). */
ALWAYS_INLINE __m256i k4_min_terms(const int16_t *bsums, __m256i smv2) {
    const __m256i twice = _mm256_setr_epi8(8, -128, 8, -128, 9, -128, 9, -128, 10, -128, 10, -128, 11, -128, 11, -128,
                                           12, -128, 12, -128, 13, -128, 13, -128, 14, -128, 14, -128, 15, -128, 15, -128);
    return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsums), _mm256_shuffle_epi8(smv2, twice));
}

/* Q4_K / Q5_K: 8 sub-blocks of 32, w = d * sc * u - dmin * m, u in 0..15 (0..31 for Q5_K);
 * maddubs bound 2 * 31 * 127 < 32767, then scaled by sc <= 63 in int32. */
#define K4_DOT(name, btype, HIGH_BITS)                                                                  \
    /* block i of a row (ai = its address) against the nt activation rows */                            \
    ALWAYS_INLINE void name##_step(const btype *ai, const void *x, size_t xs, int64_t n, int64_t i, const int nt, \
                                   __m256 acc[EDGE_DOT_WIDE_TOK]) {                                     \
        const __m256i m4 = _mm256_set1_epi8(0x0F);                                                      \
        const __m256i smv = k4_scales_mins2x(ai->scales);                                               \
        __m256i sumi[EDGE_DOT_WIDE_TOK];                                                                \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) sumi[t] = _mm256_setzero_si256();          \
        __m256i hb = _mm256_setzero_si256();                                                            \
        (void)hb;                                                                                       \
        HIGH_BITS##_LOAD(ai, 0, hb);                                                                    \
        _Pragma("GCC unroll 8") for (int j = 0; j < 4; j++) {                                           \
            const __m256i q = _mm256_loadu_si256((const __m256i *)(ai->qs + 32 * j));                   \
            __m256i lo = _mm256_and_si256(q, m4);                                                       \
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);                                 \
            HIGH_BITS##_APPLY(hb, j, lo, hi);                                                           \
            const scale_vec s_lo = byte_scale_of(smv, 2 * j), s_hi = byte_scale_of(smv, 2 * j + 1);     \
            _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {                                      \
                const int8_t *xq = XROW(block_q8_K, t)[i].qs + 64 * j;                                  \
                sumi[t] = dot_us8_scaled(sumi[t], lo, _mm256_loadu_si256((const __m256i *)xq), s_lo);   \
                sumi[t] = dot_us8_scaled(sumi[t], hi, _mm256_loadu_si256((const __m256i *)(xq + 32)), s_hi); \
                if (nt > 1) SUM_IN_REGISTER(sumi[t]);                                                   \
            }                                                                                           \
        }                                                                                               \
        uint32_t dd; /* d and dmin, adjacent: converted, then multiplied by a token's scale, together */   \
        memcpy(&dd, &ai->d, 4);                                                                         \
        const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd));                                     \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {                                          \
            const block_q8_K *b = XROW(block_q8_K, t) + i;                                              \
            const __m256i mt = k4_min_terms(b->bsums, smv);                                             \
            const __m128 s = _mm_mul_ps(dm, _mm_set1_ps(b->d));                                         \
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_broadcastss_ps(s), acc[t]);    \
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mt), _mm256_broadcastss_ps(_mm_movehdup_ps(s)), acc[t]); \
        }                                                                                               \
    }                                                                                                   \
    ALWAYS_INLINE void name##_body(int64_t n, const void *w, const void *x, size_t xs, const int nt,   \
                                   float *out) {                                                       \
        const btype *a = w;                                                                             \
        __m256 acc[EDGE_DOT_WIDE_TOK];                                                                  \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();              \
        for (int64_t i = 0; i < n / QK_K; i++) name##_step(&a[i], x, xs, n, i, nt, acc);               \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) out[t] = hsum_ps(acc[t]);                  \
    }                                                                                                   \
    MULTI_TOKEN_WIDE(name)

#define NO_HIGH_LOAD(a, i, hb)
#define NO_HIGH_APPLY(hb, j, lo, hi)
/* Q5_K: bit 2j of qh[l] is the fifth bit of sub-block 2j's element l, bit 2j+1 of sub-block 2j+1's. */
#define Q5K_HIGH_LOAD(a, i, hb) hb = _mm256_loadu_si256((const __m256i *)(a)[i].qh)
/* Bit b (0..7) of every byte of hb moved to bit 4 by one 16-bit shift (none for b = 4): the bits a shift
 * brings in from the neighbouring byte land outside bit 4 (b <= 4 shifts left by at most 4, b > 4 right by
 * at most 3), then masked. Three operations per sub-block instead of four. */
ALWAYS_INLINE __m256i q5k_bit_to_4(__m256i hb, const int b) {
    const __m256i at = b < 4 ? _mm256_slli_epi16(hb, 4 - b) : b > 4 ? _mm256_srli_epi16(hb, b - 4) : hb;
    return _mm256_and_si256(at, _mm256_set1_epi8(0x10));
}
#define Q5K_HIGH_APPLY(hb, j, lo, hi)                                                                   \
    do {                                                                                                \
        lo = _mm256_or_si256(lo, q5k_bit_to_4(hb, 2 * (j)));                                            \
        hi = _mm256_or_si256(hi, q5k_bit_to_4(hb, 2 * (j) + 1));                                        \
    } while (0)

K4_DOT(simd_dot_q4_k, block_q4_K, NO_HIGH)
K4_DOT(simd_dot_q5_k, block_q5_K, Q5K_HIGH)

/* sum_k scales[k] * bsums[k] over the 16 sub-blocks of 16, as int32 lanes (scales as int16). */
ALWAYS_INLINE __m256i k16_bsum_terms(const int16_t *bsums, __m256i scales16) {
    return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsums), scales16);
}

/* Q6_K: 16 sub-blocks of 16, w = d * sc * (u - 32), u in 0..63, sc int8: computed as
 * sc * sum(u * x) - 32 * sc * bsum. maddubs bound 2 * 63 * 127 = 16002. */
/* block i of a row (ai = its address) against the nt activation rows */
ALWAYS_INLINE void simd_dot_q6_k_step(const block_q6_K *ai, const void *x, size_t xs, int64_t n, int64_t i, const int nt,
                                      __m256 acc[EDGE_DOT_WIDE_TOK]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    const int8_t *sc = ai->scales;
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
    /* the scales of half h (8h .. 8h + 7) in both 128-bit lanes */
    const __m256i sch[2] = {_mm256_permute2x128_si256(sc16, sc16, 0x00), _mm256_permute2x128_si256(sc16, sc16, 0x11)};
    __m256i sumi[EDGE_DOT_WIDE_TOK];
    _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) sumi[t] = _mm256_setzero_si256();
    _Pragma("GCC unroll 8") for (int h = 0; h < 2; h++) {
        const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(ai->ql + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(ai->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(ai->qh + 32 * h));
        /* bits 2g, 2g+1 of qh moved to bits 4..5 by one 16-bit shift and a mask (what a shift brings in from
         * the neighbouring byte falls outside 0x30): 17 operations for the four groups instead of 21 */
        __m256i u[4];
        u[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
        u[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
        u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
        u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
        _Pragma("GCC unroll 8") for (int g = 0; g < 4; g++) {
            const scale_vec s = scale_of2(sch[h], 2 * g, 2 * g + 1);
            _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {
                const int8_t *xq = XROW(block_q8_K, t)[i].qs + 128 * h + 32 * g;
                sumi[t] = dot_us8_scaled(sumi[t], u[g], _mm256_loadu_si256((const __m256i *)xq), s);
                if (nt > 1) SUM_IN_REGISTER(sumi[t]);
            }
        }
    }
    const float dw = f16(ai->d);
    _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {
        const block_q8_K *b = XROW(block_q8_K, t) + i;
        const __m256i corr = _mm256_slli_epi32(k16_bsum_terms(b->bsums, sc16), 5);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[t], corr)), _mm256_set1_ps(dw * b->d), acc[t]);
    }
}

ALWAYS_INLINE void simd_dot_q6_k_body(int64_t n, const void *w, const void *x, size_t xs, const int nt,
                                      float *out) {
    const block_q6_K *a = w;
    __m256 acc[EDGE_DOT_WIDE_TOK];
    _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) simd_dot_q6_k_step(&a[i], x, xs, n, i, nt, acc);
    _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) out[t] = hsum_ps(acc[t]);
}
MULTI_TOKEN_WIDE(simd_dot_q6_k)

/* The 16 signed six-bit scales of a Q3_K block. */
ALWAYS_INLINE void q3k_scales(const uint8_t *s, int8_t out[16]) {
    uint32_t aux[4];
    memcpy(aux, s, 12);
    const uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
    const uint32_t tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
    aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
    memcpy(out, aux, 16);
    for (int k = 0; k < 16; k++) out[k] = (int8_t)(out[k] - 32);
}

/* Q2_K / Q3_K: 2 halves of 128; in half h, shift 2j of qs[32h + l] gives element 128h + 32j + l
 * (sub-block 8h + 2j for l < 16, 8h + 2j + 1 above). Q3_K adds 4 when hmask[l] bit 4h + j is set
 * and subtracts 4 * bsum; Q2_K's mins are a separate dmin term. maddubs bound 2 * 7 * 127. */
ALWAYS_INLINE void simd_dot_q3_k_body(int64_t n, const void *w, const void *x, size_t xs, const int nt,
                                      float *out) {
    const block_q3_K *a = w;
    __m256 acc[4];
    _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (int64_t i = 0; i < n / QK_K; i++) {
        int8_t sc[16];
        q3k_scales(a[i].scales, sc);
        const __m256i hm = _mm256_loadu_si256((const __m256i *)a[i].hmask);
        __m256i sumi[4];
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) sumi[t] = _mm256_setzero_si256();
        _Pragma("GCC unroll 8") for (int h = 0; h < 2; h++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(a[i].qs + 32 * h));
            _Pragma("GCC unroll 8") for (int j = 0; j < 4; j++) {
                const __m256i u2 = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
                const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one);
                const __m256i u = _mm256_or_si256(u2, _mm256_slli_epi16(hb, 2));
                const scale_vec s = scale2(sc[8 * h + 2 * j], sc[8 * h + 2 * j + 1]);
                _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {
                    const int8_t *xq = XROW(block_q8_K, t)[i].qs + 128 * h + 32 * j;
                    sumi[t] = dot_us8_scaled(sumi[t], u, _mm256_loadu_si256((const __m256i *)xq), s);
                }
            }
        }
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        const float dw = f16(a[i].d);
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {
            const block_q8_K *b = XROW(block_q8_K, t) + i;
            const __m256i corr = _mm256_slli_epi32(k16_bsum_terms(b->bsums, sc16), 2);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[t], corr)), _mm256_set1_ps(dw * b->d),
                                     acc[t]);
        }
    }
    _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) out[t] = hsum_ps(acc[t]);
}
MULTI_TOKEN(simd_dot_q3_k)

ALWAYS_INLINE void simd_dot_q2_k_body(int64_t n, const void *w, const void *x, size_t xs, const int nt,
                                      float *out) {
    const block_q2_K *a = w;
    __m256 acc[4];
    _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *scb = a[i].scales;
        __m256i sumi[4];
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) sumi[t] = _mm256_setzero_si256();
        _Pragma("GCC unroll 8") for (int h = 0; h < 2; h++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(a[i].qs + 32 * h));
            _Pragma("GCC unroll 8") for (int j = 0; j < 4; j++) {
                const __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
                const scale_vec s = scale2(scb[8 * h + 2 * j] & 0xF, scb[8 * h + 2 * j + 1] & 0xF);
                _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {
                    const int8_t *xq = XROW(block_q8_K, t)[i].qs + 128 * h + 32 * j;
                    sumi[t] = dot_us8_scaled(sumi[t], u, _mm256_loadu_si256((const __m256i *)xq), s);
                }
            }
        }
        const __m128i sb = _mm_loadu_si128((const __m128i *)scb);
        const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sb, 4), _mm_set1_epi8(0x0F)));
        const float dw = f16(a[i].d), dmw = f16(a[i].dmin);
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {
            const block_q8_K *b = XROW(block_q8_K, t) + i;
            const __m256i mt = k16_bsum_terms(b->bsums, mins16);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(dw * b->d), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mt), _mm256_set1_ps(dmw * b->d), acc[t]);
        }
    }
    _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) out[t] = hsum_ps(acc[t]);
}
MULTI_TOKEN(simd_dot_q2_k)

/* IQ4_XS: 8 sub-blocks of 32 with 6-bit scales (ls - 32), values from the IQ4 codebook (signed,
 * |v| <= 127: sign trick, maddubs bound 2 * 127 * 127 = 32258). */
ALWAYS_INLINE void simd_dot_iq4_xs_body(int64_t n, const void *w, const void *x, size_t xs, const int nt,
                                        float *out) {
    const block_iq4_xs *a = w;
    __m256 acc[4];
    _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)edge_kvalues_iq4nl));
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256i sumi[4];
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) sumi[t] = _mm256_setzero_si256();
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {
            const int ls = ((a[i].scales_l[k / 2] >> (4 * (k % 2))) & 0xF) | (((a[i].scales_h >> (2 * k)) & 3) << 4);
            const __m256i v = _mm256_shuffle_epi8(table, unpack_nibbles16(a[i].qs + 16 * k));
            const __m256i va = _mm256_sign_epi8(v, v);
            const scale_vec s = scale1(ls - 32);
            _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {
                const __m256i xq = _mm256_loadu_si256((const __m256i *)(XROW(block_q8_K, t)[i].qs + 32 * k));
                sumi[t] = dot_us8_scaled(sumi[t], va, _mm256_sign_epi8(xq, v), s);
            }
        }
        const float dw = f16(a[i].d);
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {
            const block_q8_K *b = XROW(block_q8_K, t) + i;
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(dw * b->d), acc[t]);
        }
    }
    _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) out[t] = hsum_ps(acc[t]);
}
MULTI_TOKEN(simd_dot_iq4_xs)

/* ------------------------------------------------------------------ activation quantizers
 * Same arithmetic as quantize_act.c (same scale, x * id rounded to nearest-even), so the same
 * integers come out of every path. */

ALWAYS_INLINE float max_abs8x4(const float *p, __m256 v[4]) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    _Pragma("GCC unroll 8") for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(p + 8 * k);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[k]));
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* 32 floats * id rounded to 32 int8 (in element order); returns their sum. */
ALWAYS_INLINE int round_pack32(const __m256 v[4], float id, int8_t *dst) {
    const __m256 mul = _mm256_set1_ps(id);
    __m256i i32[4];
    _Pragma("GCC unroll 8") for (int k = 0; k < 4; k++)
        i32[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3]));
    __m256i p16a = _mm256_packs_epi32(i32[0], i32[1]);
    __m256i p16b = _mm256_packs_epi32(i32[2], i32[3]);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    /* packs works per 128-bit lane: restore element order */
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)dst, p8);
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    return _mm_cvtsi128_si32(h);
}

static void simd_quant_q8_0(const float *x, void *row, int64_t n, int64_t b0, int64_t nb) {
    int8_t *qs = row;
    float *ds = (float *)((char *)row + n);
    for (int64_t i = b0; i < b0 + nb; i++) {
        __m256 v[4];
        const float amax = max_abs8x4(x + 32 * i, v);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        ds[i] = d;
        round_pack32(v, id, qs + 32 * i);
    }
}

static void simd_quant_q8_1(const float *x, void *row, int64_t n, int64_t b0, int64_t nb) {
    block_q8_1 *y = row;
    for (int64_t i = b0; i < b0 + nb; i++) {
        __m256 v[4];
        const float amax = max_abs8x4(x + 32 * i, v);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const int sum = round_pack32(v, id, y[i].qs);
        y[i].d = edge_f32_to_f16(d);
        y[i].s = edge_f32_to_f16((float)sum * d);
    }
}

static void simd_quant_q8_k(const float *x, void *row, int64_t n, int64_t b0, int64_t nb) {
    block_q8_K *y = row;
    for (int64_t i = b0; i < b0 + nb; i++) {
        const float *xb = x + i * QK_K;
        /* the value of largest magnitude (first one on ties, like the scalar loop) */
        float amax = 0.0f, max = 0.0f;
        __m256 v[8][4];
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {
            const float m = max_abs8x4(xb + 32 * k, v[k]);
            if (m > amax) amax = m;
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const __m256 va = _mm256_set1_ps(amax), sign = _mm256_set1_ps(-0.0f);
        for (int j = 0; j < QK_K / 8; j++) { /* the first 8 holding one, then its first */
            const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v[j / 4][j % 4]), va, _CMP_EQ_OQ));
            if (hit) {
                max = xb[8 * j + __builtin_ctz((unsigned)hit)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) round_pack32(v[k], iscale, y[i].qs + 32 * k);
        /* sums of 16: vpsadbw of the values + 128 (x ^ 0x80) gives sums of 8, plus 8 * 128 */
        const __m256i bias = _mm256_set1_epi8((char)0x80);
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(y[i].qs + 32 * k));
            __m256i s8 = _mm256_sad_epu8(_mm256_xor_si256(q, bias), _mm256_setzero_si256());
            s8 = _mm256_add_epi64(s8, _mm256_srli_si256(s8, 8));
            y[i].bsums[2 * k] = (int16_t)(_mm256_extract_epi64(s8, 0) - 16 * 128);
            y[i].bsums[2 * k + 1] = (int16_t)(_mm256_extract_epi64(s8, 2) - 16 * 128);
        }
        y[i].d = 1.0f / iscale;
    }
}

/* ------------------------------------------------------------------ decode (one token)
 * Every weight byte of a decode token is read once, from DRAM: the kernels fetch it ahead themselves. */

/* The second prefetch stage (into L2, EDGE_DECODE_PREFETCH_L2 past the first) per table: the AVX-512
 * one keeps it (kernels_impl.h says why); the AVX2 one goes without: on a Zen 3 (AVX2 only) whole decode
 * tokens are faster without it, Q4_K_M by 7-8 %, Q8_0 by 4 %, and moving the L1 stage to 8 KiB ahead
 * instead does not make up for it. */
#ifndef EDGE_SIMD_DECODE_L2
#define EDGE_SIMD_DECODE_L2 EDGE_SIMD_VNNI
#endif

/* How far ahead of the block in hand decode fetches the weights into L1, per table: the AVX-512 one
 * EDGE_DECODE_PREFETCH (chosen on Zen 4); the AVX2 one less: on a Zen 3 whole decode tokens (Q4_K_M,
 * Q8_0) are about 2.5 % faster 1.5-2.5 KiB ahead than 4 KiB ahead, and 1 KiB gains less. */
#ifndef EDGE_SIMD_DECODE_AHEAD
#define EDGE_SIMD_DECODE_AHEAD (EDGE_SIMD_VNNI ? EDGE_DECODE_PREFETCH : 2048)
#endif

/* The lines from pf on into L1 and (EDGE_SIMD_DECODE_L2) the lines EDGE_DECODE_PREFETCH_L2 further on into
 * L2, unless they lie past the decode run's end. */
ALWAYS_INLINE void decode_prefetch(const char *pf, const char *end, const int lines) {
    if (pf < end)
        _Pragma("GCC unroll 4") for (int o = 0; o < lines; o++) _mm_prefetch(pf + 64 * o, _MM_HINT_T0);
    if (EDGE_SIMD_DECODE_L2 && pf + EDGE_DECODE_PREFETCH_L2 < end)
        _Pragma("GCC unroll 4") for (int o = 0; o < lines; o++)
            _mm_prefetch(pf + EDGE_DECODE_PREFETCH_L2 + 64 * o, _MM_HINT_T1);
}

/* Decode: a kernel over a run of rows (contiguous), one call per run. The run's first
 * EDGE_SIMD_DECODE_AHEAD bytes are all requested at once (the block loop fetches ahead of where it is, so
 * they would come one demand miss at a time), and nothing past the run's end is fetched (another
 * thread's run or another tensor: bandwidth this token would waste). Aligned to 64 bytes: unaligned, the
 * loops' placement varies between builds of the same code and moves one-thread L3-resident Q8_0 by 7 %. */
ALWAYS_INLINE void decode_run_start(const char *w, const char *end) {
    for (const char *p = w; p < end && p < w + EDGE_SIMD_DECODE_AHEAD; p += 64) _mm_prefetch(p, _MM_HINT_T0);
}

#if !EDGE_SIMD_VNNI
/* AVX2 decode: per-block steps (a step may take a btype of several blocks; tail then takes a last one
 * left over, final sums the accumulator) over a run of rows, row r of the run's first half with row r of its
 * second (two streams, each read in order and fetched ahead within itself; an odd last row alone). Each row
 * gets the operations of the prompt path's kernel in its order (the dot body's steps, or for Q8_0 the quad
 * kernel's sums): the same bits as the prompt path for the same token. On a 2-core Zen 3 (no AVX-512),
 * 2048 x 2048-column products over 512 MiB on 2 threads, alternating in one process with the driver's
 * per-row dot calls (before the scale shuffles above): Q4_K 18.3 -> 22.3 GB/s, Q6_K 18.6 -> 25.7, Q8_0
 * 26.6 -> 30.4 (a plain read of the same memory 35-41); bench/matmul.py's decode Q4_K 19.8 -> 30.6,
 * Q6_K 17.9 -> 32.3, Q8_0 20.6 -> 34.2 GB/s. */
#define SIMD_MATVEC2(name, btype, step, elems, tail, final)                                             \
    __attribute__((aligned(64))) static void name(int64_t n, const void *w, size_t ws, int64_t nr,          \
                                                  const void *x, float *y) {                             \
        const char *w0 = w, *end = w0 + (size_t)nr * ws;                                                \
        const int64_t h = nr / 2, nb = n / (elems);                                                     \
        /* a block's bytes in cache lines, rounded up: each step fetches that many from its block's start \
         * on, so consecutive steps leave no line out */                                                \
        const int lines = (int)((sizeof(btype) + 63) / 64);                                            \
        const char *w1 = w0 + (size_t)h * ws;                                                           \
        decode_run_start(w0, h > 0 ? w1 : end);                                                         \
        if (h > 0) decode_run_start(w1, end);                                                           \
        for (int64_t r = 0; r < h; r++) {                                                               \
            const btype *a0 = (const btype *)(w0 + (size_t)r * ws), *a1 = (const btype *)(w1 + (size_t)r * ws); \
            __m256 acc0[EDGE_DOT_WIDE_TOK] = {_mm256_setzero_ps()}, acc1[EDGE_DOT_WIDE_TOK] = {_mm256_setzero_ps()}; \
            for (int64_t i = 0; i < nb; i++) {                                                          \
                decode_prefetch((const char *)&a0[i] + EDGE_SIMD_DECODE_AHEAD, w1, lines);               \
                decode_prefetch((const char *)&a1[i] + EDGE_SIMD_DECODE_AHEAD, end, lines);              \
                step(&a0[i], x, 0, n, i, 1, acc0);                                                      \
                step(&a1[i], x, 0, n, i, 1, acc1);                                                      \
            }                                                                                           \
            tail(&a0[nb], x, n, acc0);                                                                  \
            tail(&a1[nb], x, n, acc1);                                                                  \
            y[r] = final(acc0[0]);                                                                      \
            y[h + r] = final(acc1[0]);                                                                  \
        }                                                                                               \
        if (2 * h < nr) {                                                                               \
            const btype *a = (const btype *)(w0 + (size_t)(nr - 1) * ws);                               \
            __m256 acc[EDGE_DOT_WIDE_TOK] = {_mm256_setzero_ps()};                                      \
            for (int64_t i = 0; i < nb; i++) {                                                          \
                decode_prefetch((const char *)&a[i] + EDGE_SIMD_DECODE_AHEAD, end, lines);               \
                step(&a[i], x, 0, n, i, 1, acc);                                                        \
            }                                                                                           \
            tail(&a[nb], x, n, acc);                                                                    \
            y[nr - 1] = final(acc[0]);                                                                  \
        }                                                                                               \
    }
/* nothing past the last whole step (rows of whole steps) */
ALWAYS_INLINE void no_tail(const void *rest, const void *x, int64_t n, __m256 acc[4]) {
    (void)rest, (void)x, (void)n, (void)acc;
}
SIMD_MATVEC2(simd_matvec_q4_k, block_q4_K, simd_dot_q4_k_step, QK_K, no_tail, hsum_ps)
SIMD_MATVEC2(simd_matvec_q5_k, block_q5_K, simd_dot_q5_k_step, QK_K, no_tail, hsum_ps)
SIMD_MATVEC2(simd_matvec_q6_k, block_q6_K, simd_dot_q6_k_step, QK_K, no_tail, hsum_ps)

/* Q8_0 prompts on AVX2: rows against up to four quads of interleaved tokens (EDGE_Q8Q), the weights
 * replicated per token. A block's integer sums stay per token in int32 lanes, the low 128-bit lane holding
 * the token's even groups of 4 values (0-3, 8-11, 16-19, 24-27), the high one its odd groups: one
 * conversion and one FMA per block, 4 tokens and row, where the one-row kernel above takes one per token
 * (on Zen 3, independent instructions: maddubs with madd, maddubs with the FMA, the conversion with the
 * FMA issue 2 a cycle together). Even and odd blocks accumulate apart, so that the one-token kernel can
 * take two blocks per step (simd_matvec_q8_0). The quads' values are stored plus 128 (vpdpbusd's unsigned
 * side, dot_avx512.c): the xor takes it off. */
ALWAYS_INLINE __m256i q8q_replicate(const int8_t *qs, int k) {
    /* values 8k..8k+3 for each token in the low lane, 8k+4..8k+7 in the high one */
    int64_t v;
    memcpy(&v, qs + 8 * k, 8);
    return _mm256_shuffle_epi8(_mm256_set1_epi64x(v), _mm256_setr_epi8(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3,
                                                                        4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7));
}

/* Block i of row a against Q quads: acc[q] += its sums times d * (each token's scale). */
ALWAYS_INLINE void q8q_block(const block_q8_0 *a, int64_t i, int64_t n, const void *x, size_t xs, __m256 *acc,
                             const int Q) {
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    __m256i p[EDGE_GEMM4_MAX_Q];
    _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) p[q] = _mm256_setzero_si256();
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
        const __m256i wr = q8q_replicate(a[i].qs, k), wa = _mm256_sign_epi8(wr, wr);
        _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) {
            const uint8_t *v = edge_q8q_qs(XROW(char, q)) + (size_t)i * QK8_0 * EDGE_QUAD + 32 * k;
            p[q] = dot_ss8(p[q], wa, wr, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)v), bias));
            SUM_IN_REGISTER(p[q]);
        }
    }
    const __m256 dw = _mm256_set1_ps(f16(a[i].d));
    _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) {
        const __m256 dx = _mm256_broadcast_ps((const __m128 *)(edge_q8q_d(XROW(char, q), n) + i * EDGE_QUAD));
        acc[q] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p[q]), _mm256_mul_ps(dw, dx), acc[q]);
    }
}

ALWAYS_INLINE void ymm_gemm4_q8_0_row(int64_t n, const block_q8_0 *a, const void *x, size_t xs, float *out, const int Q) {
    __m256 even[EDGE_GEMM4_MAX_Q], odd[EDGE_GEMM4_MAX_Q];
    _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) even[q] = odd[q] = _mm256_setzero_ps();
    const int64_t nb = n / QK8_0;
    int64_t i = 0;
    for (; i + 1 < nb; i += 2) {
        q8q_block(a, i, n, x, xs, even, Q);
        q8q_block(a, i + 1, n, x, xs, odd, Q);
    }
    if (i < nb) q8q_block(a, i, n, x, xs, even, Q);
    /* per token (even blocks' even groups + odd blocks' even groups) + (the same of the odd groups):
     * q8_0_eo_sum's order */
    _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) {
        const __m256 s = _mm256_add_ps(even[q], odd[q]);
        _mm_storeu_ps(out + q * EDGE_QUAD, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
    }
}

ALWAYS_INLINE void ymm_gemm4_q8_0_body(int64_t n, const void *w, size_t ws, const void *x, size_t xs, float *out,
                                       const int R, const int Q) {
    _Pragma("GCC unroll 2") for (int r = 0; r < R; r++)
        ymm_gemm4_q8_0_row(n, (const block_q8_0 *)((const char *)w + r * ws), x, xs, out + r * EDGE_GEMM4_MAX_Q * EDGE_QUAD, Q);
}

GEMM4_DISPATCH(ymm_gemm4_q8_0)

/* One token, the quad kernel's sums for one slot: per block its products summed per group of 4 values
 * (madd), then the even groups and the odd ones; two blocks a step, folded to [even, odd] of each (5
 * operations for both, where one block alone takes 4), converted and accumulated at once: lanes [even
 * blocks' even, odd | odd blocks' even, odd] of the low half of acc[0]. */
typedef struct {
    block_q8_0 b[2];
} block_q8_0x2;
/* lane k of the low half plus lane k of the high half */
ALWAYS_INLINE __m128i add_halves_epi32(__m256i v) {
    return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}
ALWAYS_INLINE __m256i q8_0_block_dot(const block_q8_0 *ai, const void *x, int64_t i) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)ai->qs);
    return dot_ss8(_mm256_setzero_si256(), _mm256_sign_epi8(v, v), v,
                   _mm256_loadu_si256((const __m256i *)(edge_q8s_qs(x) + 32 * i)));
}
ALWAYS_INLINE void q8_0_eo_step2(const block_q8_0x2 *ai, const void *x, size_t xs, int64_t n, int64_t i2, const int nt,
                                 __m256 acc[4]) {
    (void)xs, (void)nt;
    const int64_t i = 2 * i2;
    const __m256i p0 = q8_0_block_dot(&ai->b[0], x, i), p1 = q8_0_block_dot(&ai->b[1], x, i + 1);
    const __m256i h = _mm256_add_epi32(_mm256_unpacklo_epi64(p0, p1), _mm256_unpackhi_epi64(p0, p1));
    const __m128i eo = add_halves_epi32(h);
    uint16_t d0, d1;
    memcpy(&d0, &ai->b[0].d, 2);
    memcpy(&d1, &ai->b[1].d, 2);
    const __m128 dw = _mm_cvtph_ps(_mm_cvtsi32_si128((int)d0 | (int)d1 << 16));
    const __m128 s = _mm_mul_ps(dw, _mm_castpd_ps(_mm_load_sd((const double *)(edge_q8s_d(x, n) + i))));
    acc[0] = _mm256_castps128_ps256(
        _mm_fmadd_ps(_mm_cvtepi32_ps(eo), _mm_unpacklo_ps(s, s), _mm256_castps256_ps128(acc[0])));
}
/* the last block of a row of an odd number of blocks: an even one */
ALWAYS_INLINE void q8_0_eo_tail(const void *rest, const void *x, int64_t n, __m256 acc[4]) {
    const int64_t i = n / QK8_0 - 1;
    if (i % 2 == 0) {
        const block_q8_0 *ai = rest;
        const __m256i p = q8_0_block_dot(ai, x, i);
        const __m256i h = _mm256_add_epi32(p, _mm256_shuffle_epi32(p, _MM_SHUFFLE(1, 0, 3, 2)));
        const __m128i eo = add_halves_epi32(h);
        const __m128 a = _mm256_castps256_ps128(acc[0]);
        const __m128 e = _mm_fmadd_ps(_mm_cvtepi32_ps(eo), _mm_set1_ps(f16(ai->d) * edge_q8s_d(x, n)[i]), a);
        acc[0] = _mm256_castps128_ps256(_mm_blend_ps(a, e, 3));
    }
}
ALWAYS_INLINE float q8_0_eo_sum(__m256 acc) { return quad_lanes_sum(_mm256_castps256_ps128(acc)); }
SIMD_MATVEC2(simd_matvec_q8_0, block_q8_0x2, q8_0_eo_step2, 2 * QK8_0, q8_0_eo_tail, q8_0_eo_sum)

#define EDGE_SIMD_GEMM4_Q8_0 ymm_gemm4_q8_0
#define EDGE_SIMD_MATVEC_Q4_K simd_matvec_q4_k
#define EDGE_SIMD_MATVEC_Q5_K simd_matvec_q5_k
#define EDGE_SIMD_MATVEC_Q6_K simd_matvec_q6_k
#define EDGE_SIMD_MATVEC_Q8_0 simd_matvec_q8_0
#endif

/* A file may replace these with wider kernels (dot_avx512.c). */
#ifndef EDGE_SIMD_DOT_Q8_0
#define EDGE_SIMD_DOT_Q8_0 simd_dot_q8_0
#endif
#ifndef EDGE_SIMD_DOT_Q4_K
#define EDGE_SIMD_DOT_Q4_K simd_dot_q4_k
#endif
#ifndef EDGE_SIMD_DOT_Q5_K
#define EDGE_SIMD_DOT_Q5_K simd_dot_q5_k
#endif
#ifndef EDGE_SIMD_DOT_Q6_K
#define EDGE_SIMD_DOT_Q6_K simd_dot_q6_k
#endif

const struct edge_kernels EDGE_SIMD_TABLE = {
#if EDGE_SIMD_VNNI
    .isa = EDGE_ISA_AVX512,
    .name = "avx512",
    .gemm4_fetch_next = 1,
#else
    .isa = EDGE_ISA_AVX2,
    .name = "avx2",
    /* 8 tokens a call against two calls of 4 (Zen 3, one thread, rows in L2, the same bits): Q4_K +2-9 %,
     * Q5_K +11 %, Q6_K +9-10 %; 64-token Q4_K_M prompts +5 % */
    .dot_wide = {[EDGE_TYPE_Q4_K] = 1, [EDGE_TYPE_Q5_K] = 1, [EDGE_TYPE_Q6_K] = 1},
#endif
    .dot =
        {
            [EDGE_TYPE_F32] = simd_dot_f32,
            [EDGE_TYPE_F16] = simd_dot_f16,
            [EDGE_TYPE_BF16] = simd_dot_bf16,
            [EDGE_TYPE_Q4_0] = simd_dot_q4_0,
            [EDGE_TYPE_Q4_1] = simd_dot_q4_1,
            [EDGE_TYPE_Q5_0] = simd_dot_q5_0,
            [EDGE_TYPE_Q5_1] = simd_dot_q5_1,
            [EDGE_TYPE_Q8_0] = EDGE_SIMD_DOT_Q8_0,
            [EDGE_TYPE_IQ4_NL] = simd_dot_iq4_nl,
            [EDGE_TYPE_Q2_K] = simd_dot_q2_k,
            [EDGE_TYPE_Q3_K] = simd_dot_q3_k,
            [EDGE_TYPE_Q4_K] = EDGE_SIMD_DOT_Q4_K,
            [EDGE_TYPE_Q5_K] = EDGE_SIMD_DOT_Q5_K,
            [EDGE_TYPE_Q6_K] = EDGE_SIMD_DOT_Q6_K,
            [EDGE_TYPE_IQ4_XS] = simd_dot_iq4_xs,
        },
#ifdef EDGE_SIMD_MATVEC_Q4_K
    .matvec =
        {
            [EDGE_TYPE_Q4_K] = EDGE_SIMD_MATVEC_Q4_K,
            [EDGE_TYPE_Q5_K] = EDGE_SIMD_MATVEC_Q5_K,
            [EDGE_TYPE_Q6_K] = EDGE_SIMD_MATVEC_Q6_K,
            [EDGE_TYPE_Q8_0] = EDGE_SIMD_MATVEC_Q8_0,
        },
#endif
    .matvec_quant =
        {
#ifdef EDGE_SIMD_MATVEC_QUANT_K4
            [EDGE_TYPE_Q4_K] = EDGE_SIMD_MATVEC_QUANT_K4,
            [EDGE_TYPE_Q5_K] = EDGE_SIMD_MATVEC_QUANT_K4,
#endif
#ifdef EDGE_SIMD_MATVEC_QUANT_Q8_0
            [EDGE_TYPE_Q8_0] = EDGE_SIMD_MATVEC_QUANT_Q8_0,
#endif
        },
    .gemm4 =
        {
#ifdef EDGE_SIMD_GEMM4_Q4_K
            [EDGE_TYPE_Q4_K] = EDGE_SIMD_GEMM4_Q4_K,
            [EDGE_TYPE_Q5_K] = EDGE_SIMD_GEMM4_Q5_K,
            [EDGE_TYPE_Q6_K] = EDGE_SIMD_GEMM4_Q6_K,
#endif
#ifdef EDGE_SIMD_GEMM4_Q8_0
            [EDGE_TYPE_Q8_0] = EDGE_SIMD_GEMM4_Q8_0,
#endif
        },
    .quant_q8_0 = simd_quant_q8_0,
    .quant_q8_1 = simd_quant_q8_1,
    .quant_q8_k = simd_quant_q8_k,
};
