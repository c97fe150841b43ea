/* dot_neon_impl.h — the arm64 Advanced SIMD (NEON) kernels, written once and compiled twice: by dot_neon.c
 * (plain ARMv8.0 NEON: int8 products widened with smull/smlal and pairwise-added into int32 with sadalp) and by
 * dot_dotprod_neon.c (ARMv8.2 dotprod: the same sums with one sdot per 16 products). Included only by those
 * two files, each compiled with its level's flags only (native/CMakeLists.txt), so the plain table never
 * holds an instruction a Cortex-A53/A57/A72 lacks.
 *
 * Before including, define EDGE_NEON_DOTPROD (0 or 1), EDGE_NEON_TABLE (the table's name), EDGE_NEON_ISA
 * (its edge_isa) and EDGE_NEON_NAME.
 *
 * Every kernel computes one weight row against nt (1..EDGE_DOT_MAX_TOK) activation rows: a weight block is
 * loaded and unpacked once and used for every token (prompts: up to 4 tokens a call); decode runs the same
 * kernels inlined for one token over a run of rows (matvec). The
 * integer sums are the scalar kernels' exactly (dot_scalar.c): each sub-block's sum of products is formed in
 * int32 lanes, times its integer scale, and the lanes added (no intermediate can overflow: int8 products are
 * at most 128 * 127, and the plain level adds two of them in int16 before widening: 32512 < 32767). The K-quant
 * kernels then apply the block's float scales in the scalar kernels' expression and order (same bits as the
 * scalar path but for FMA contraction); the 32-element types sum four blocks' scaled sums in float lanes, so
 * they differ from the scalar reference in float summation order only. */
#include <arm_neon.h>
#include <stddef.h>

#include "kernels_impl.h"

#if !defined(EDGE_NEON_DOTPROD) || !defined(EDGE_NEON_TABLE) || !defined(EDGE_NEON_ISA) || !defined(EDGE_NEON_NAME)
#error "define EDGE_NEON_DOTPROD, EDGE_NEON_TABLE, EDGE_NEON_ISA and EDGE_NEON_NAME before including dot_neon_impl.h"
#endif

#define NEON_INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------ primitives */

/* acc + the sums of the 16 products a[j] * b[j], in int32 lanes (which product lands in which lane differs
 * between the levels; only the sum of the lanes is ever used). */
NEON_INLINE int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if EDGE_NEON_DOTPROD
    return vdotq_s32(acc, a, b);
#else
    const int16x8_t p = vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b);
    return vpadalq_s16(acc, p);
#endif
}

/* The products of 32 values (a0: values 0..15, a1: 16..31) with y[0..31]. */
NEON_INLINE int32x4_t dot32(int8x16_t a0, int8x16_t a1, const int8_t *y) {
    return dot16(dot16(vdupq_n_s32(0), a0, vld1q_s8(y)), a1, vld1q_s8(y + 16));
}

/* binary16 -> float with the hardware conversion (exact, as edge_f16_to_f32). */
NEON_INLINE float f16_to_f32(uint16_t h) {
    __fp16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

/* Bytes (qh >> (first + j)) & 1 for j = 0..15, as 0x10 or 0 (the fifth bit of Q5_0 / Q5_1 values). */
NEON_INLINE uint8x16_t q5_high_bits(uint32_t qh, int first) {
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t rep = vcombine_u8(vdup_n_u8((uint8_t)(qh >> first)), vdup_n_u8((uint8_t)(qh >> (first + 8))));
    return vandq_u8(vtstq_u8(rep, vld1q_u8(bit)), vdupq_n_u8(0x10));
}

NEON_INLINE int8x16_t low_nibbles(uint8x16_t q) { return vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0xF))); }
NEON_INLINE int8x16_t high_nibbles(uint8x16_t q) { return vreinterpretq_s8_u8(vshrq_n_u8(q, 4)); }

/* ------------------------------------------------------------------ float weights (x in F32) */

/* 8 weights from index i as two float vectors. */
NEON_INLINE void load8_f32(const void *w, int64_t i, float32x4_t *lo, float32x4_t *hi) {
    *lo = vld1q_f32((const float *)w + i);
    *hi = vld1q_f32((const float *)w + i + 4);
}
NEON_INLINE void load8_f16(const void *w, int64_t i, float32x4_t *lo, float32x4_t *hi) {
    const uint16x8_t h = vld1q_u16((const uint16_t *)w + i);
    *lo = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h)));
    *hi = vcvt_high_f32_f16(vreinterpretq_f16_u16(h));
}
NEON_INLINE void load8_bf16(const void *w, int64_t i, float32x4_t *lo, float32x4_t *hi) {
    const uint16x8_t h = vld1q_u16((const uint16_t *)w + i);
    *lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
    *hi = vreinterpretq_f32_u32(vshll_high_n_u16(h, 16));
}
NEON_INLINE float at_f32(const void *w, int64_t i) { return ((const float *)w)[i]; }
NEON_INLINE float at_f16(const void *w, int64_t i) { return f16_to_f32(((const uint16_t *)w)[i]); }
NEON_INLINE float at_bf16(const void *w, int64_t i) { return edge_bf16_to_f32(((const uint16_t *)w)[i]); }

/* Four accumulators of 4 lanes (16 values a step), then 8-value steps, then the values past them in scalar. */
#define DOT_FLOAT(T)                                                                                      \
    static void dot_##T(int64_t n, const void *w, const void *x, size_t xs, int nt, float *out) {         \
        for (int t = 0; t < nt; t++) {                                                                    \
            const float *b = (const float *)(const void *)((const char *)x + (size_t)t * xs);             \
            float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0, w0, w1, w2, w3;                   \
            int64_t i = 0;                                                                                \
            for (; i + 16 <= n; i += 16) {                                                                \
                load8_##T(w, i, &w0, &w1);                                                                \
                load8_##T(w, i + 8, &w2, &w3);                                                            \
                s0 = vfmaq_f32(s0, w0, vld1q_f32(b + i));                                                 \
                s1 = vfmaq_f32(s1, w1, vld1q_f32(b + i + 4));                                             \
                s2 = vfmaq_f32(s2, w2, vld1q_f32(b + i + 8));                                             \
                s3 = vfmaq_f32(s3, w3, vld1q_f32(b + i + 12));                                            \
            }                                                                                             \
            for (; i + 8 <= n; i += 8) {                                                                  \
                load8_##T(w, i, &w0, &w1);                                                                \
                s0 = vfmaq_f32(s0, w0, vld1q_f32(b + i));                                                 \
                s1 = vfmaq_f32(s1, w1, vld1q_f32(b + i + 4));                                             \
            }                                                                                             \
            float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));                        \
            for (; i < n; i++) s += at_##T(w, i) * b[i];                                                  \
            out[t] = s;                                                                                   \
        }                                                                                                 \
    }
DOT_FLOAT(f32)
DOT_FLOAT(f16)
DOT_FLOAT(bf16)

/* ------------------------------------------------------------------ 32-element blocks */

/* Each unpacks one block into its 32 integer values (v0: values 0..15, v1: 16..31), as dot_scalar.c reads
 * them. */
NEON_INLINE void unpack_q4_0(const block_q4_0 *b, int8x16_t *v0, int8x16_t *v1) {
    const uint8x16_t q = vld1q_u8(b->qs);
    *v0 = vsubq_s8(low_nibbles(q), vdupq_n_s8(8));
    *v1 = vsubq_s8(high_nibbles(q), vdupq_n_s8(8));
}
NEON_INLINE void unpack_q4_1(const block_q4_1 *b, int8x16_t *v0, int8x16_t *v1) {
    const uint8x16_t q = vld1q_u8(b->qs);
    *v0 = low_nibbles(q);
    *v1 = high_nibbles(q);
}
NEON_INLINE void unpack_q5_0(const block_q5_0 *b, int8x16_t *v0, int8x16_t *v1) {
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    const uint8x16_t q = vld1q_u8(b->qs);
    *v0 = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, vdupq_n_u8(0xF)), q5_high_bits(qh, 0))), vdupq_n_s8(16));
    *v1 = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), q5_high_bits(qh, 16))), vdupq_n_s8(16));
}
NEON_INLINE void unpack_q5_1(const block_q5_1 *b, int8x16_t *v0, int8x16_t *v1) {
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    const uint8x16_t q = vld1q_u8(b->qs);
    *v0 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, vdupq_n_u8(0xF)), q5_high_bits(qh, 0)));
    *v1 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), q5_high_bits(qh, 16)));
}
NEON_INLINE void unpack_q8_0(const block_q8_0 *b, int8x16_t *v0, int8x16_t *v1) {
    *v0 = vld1q_s8(b->qs);
    *v1 = vld1q_s8(b->qs + 16);
}
NEON_INLINE void unpack_iq4_nl(const block_iq4_nl *b, int8x16_t *v0, int8x16_t *v1) {
    const int8x16_t table = vld1q_s8(edge_kvalues_iq4nl);
    const uint8x16_t q = vld1q_u8(b->qs);
    *v0 = vqtbl1q_s8(table, vandq_u8(q, vdupq_n_u8(0xF)));
    *v1 = vqtbl1q_s8(table, vshrq_n_u8(q, 4));
}

/* Blocks against Q8_0 activations (the q8s layout: the row's int8 values, then its f32 scales): four blocks a
 * step, their integer sums gathered into one int32 vector and scaled in float lanes (lane k: block i + k, so
 * the row's sum is four interleaved partial sums), then the blocks past the last four one at a time. */
#define DOT_Q8S(T, BT)                                                                                      \
    static void dot_##T(int64_t n, const void *w, const void *x, size_t xs, int nt, float *out) {           \
        const BT *a = w;                                                                                    \
        const int64_t nb = n / 32;                                                                          \
        float32x4_t acc[EDGE_DOT_MAX_TOK];                                                                  \
        float tail[EDGE_DOT_MAX_TOK];                                                                       \
        for (int t = 0; t < EDGE_DOT_MAX_TOK; t++) acc[t] = vdupq_n_f32(0), tail[t] = 0.0f;                 \
        int64_t i = 0;                                                                                      \
        for (; i + 4 <= nb; i += 4) {                                                                       \
            int8x16_t v[8];                                                                                 \
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) unpack_##T(&a[i + k], &v[2 * k], &v[2 * k + 1]); \
            const uint16_t dh[4] = {a[i].d, a[i + 1].d, a[i + 2].d, a[i + 3].d};                            \
            const float32x4_t vdw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh)));                       \
            for (int t = 0; t < nt; t++) {                                                                  \
                const char *xt = (const char *)x + (size_t)t * xs;                                          \
                const int8_t *y = edge_q8s_qs(xt) + i * 32;                                                 \
                const int32x4_t s0 = dot32(v[0], v[1], y), s1 = dot32(v[2], v[3], y + 32);                  \
                const int32x4_t s2 = dot32(v[4], v[5], y + 64), s3 = dot32(v[6], v[7], y + 96);             \
                const int32x4_t sums = vpaddq_s32(vpaddq_s32(s0, s1), vpaddq_s32(s2, s3));                  \
                const float32x4_t d = vmulq_f32(vdw, vld1q_f32(edge_q8s_d(xt, n) + i));                     \
                acc[t] = vfmaq_f32(acc[t], vcvtq_f32_s32(sums), d);                                         \
            }                                                                                               \
        }                                                                                                   \
        for (; i < nb; i++) {                                                                               \
            int8x16_t v0, v1;                                                                               \
            unpack_##T(&a[i], &v0, &v1);                                                                    \
            const float dw = f16_to_f32(a[i].d);                                                            \
            for (int t = 0; t < nt; t++) {                                                                  \
                const char *xt = (const char *)x + (size_t)t * xs;                                          \
                const int sumi = vaddvq_s32(dot32(v0, v1, edge_q8s_qs(xt) + i * 32));                       \
                tail[t] += (float)sumi * (dw * edge_q8s_d(xt, n)[i]);                                       \
            }                                                                                               \
        }                                                                                                   \
        for (int t = 0; t < nt; t++) out[t] = vaddvq_f32(acc[t]) + tail[t];                                 \
    }
DOT_Q8S(q4_0, block_q4_0)
DOT_Q8S(q5_0, block_q5_0)
DOT_Q8S(q8_0, block_q8_0)
DOT_Q8S(iq4_nl, block_iq4_nl)

/* Blocks with a min against Q8_1 activations (block_q8_1: d and s = d * sum(qs)): the scalar kernel's
 * expression per block. */
#define DOT_Q8_1(T, BT)                                                                                     \
    static void dot_##T(int64_t n, const void *w, const void *x, size_t xs, int nt, float *out) {           \
        const BT *a = w;                                                                                    \
        float s[EDGE_DOT_MAX_TOK] = {0};                                                                    \
        for (int64_t i = 0; i < n / 32; i++) {                                                              \
            int8x16_t v0, v1;                                                                               \
            unpack_##T(&a[i], &v0, &v1);                                                                    \
            const float d = f16_to_f32(a[i].d), m = f16_to_f32(a[i].m);                                     \
            for (int t = 0; t < nt; t++) {                                                                  \
                const block_q8_1 *b = (const block_q8_1 *)(const void *)((const char *)x + (size_t)t * xs) + i; \
                const int sumi = vaddvq_s32(dot32(v0, v1, b->qs));                                          \
                s[t] += (float)sumi * d * f16_to_f32(b->d) + m * f16_to_f32(b->s);                          \
            }                                                                                               \
        }                                                                                                   \
        for (int t = 0; t < nt; t++) out[t] = s[t];                                                         \
    }
DOT_Q8_1(q4_1, block_q4_1)
DOT_Q8_1(q5_1, block_q5_1)

/* ------------------------------------------------------------------ 256-element super-blocks (x in Q8_K) */

NEON_INLINE const block_q8_K *q8k_of(const void *x, size_t xs, int t, int64_t i) {
    return (const block_q8_K *)(const void *)((const char *)x + (size_t)t * xs) + i;
}

/* Σ_j m[j] * b[j] over 8 (m: unsigned bytes, b: int16), exactly. */
NEON_INLINE int32_t mins_dot8(const uint8_t *m, int16x8_t b) {
    const int16x8_t mv = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m)));
    return vaddvq_s32(vmlal_high_s16(vmull_s16(vget_low_s16(mv), vget_low_s16(b)), mv, b));
}

/* The 6-bit scales (sc) and mins (m) of the 8 sub-blocks of a Q4_K / Q5_K block, as edge_k4_scale_min gives
 * them, unpacked four at a time from the 12 bytes read as three words. */
NEON_INLINE void k4_scales(const uint8_t *q, uint8_t sc[8], uint8_t m[8]) {
    uint32_t u[3];
    memcpy(u, q, 12);
    const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, low2 = 0x03030303u;
    const uint32_t s03 = u[0] & low6, m03 = u[1] & low6;
    const uint32_t s47 = (u[2] & low4) | ((u[0] >> 6) & low2) << 4;
    const uint32_t m47 = ((u[2] >> 4) & low4) | ((u[1] >> 6) & low2) << 4;
    memcpy(sc, &s03, 4);
    memcpy(sc + 4, &s47, 4);
    memcpy(m, &m03, 4);
    memcpy(m + 4, &m47, 4);
}

/* Q4_K (qh NULL) and Q5_K: sub-block k is the low (k even) or high (k odd) nibbles of qs[32 (k / 2) ..], plus
 * bit k of qh[l] as the fifth bit. */
NEON_INLINE void dot_k4(int64_t n, const uint8_t *w, size_t block_bytes, size_t qs_off, const int has_qh,
                        const void *x, size_t xs, int nt, float *out) {
    float s[EDGE_DOT_MAX_TOK] = {0};
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *blk = w + (size_t)i * block_bytes;
        uint8_t sc[8], mn[8];
        k4_scales(blk + offsetof(block_q4_K, scales), sc, mn);
        uint8x16_t h0 = vdupq_n_u8(0), h1 = h0;
        if (has_qh) {
            h0 = vld1q_u8(blk + offsetof(block_q5_K, qh));
            h1 = vld1q_u8(blk + offsetof(block_q5_K, qh) + 16);
        }
        int32x4_t acc[EDGE_DOT_MAX_TOK];
        for (int t = 0; t < EDGE_DOT_MAX_TOK; t++) acc[t] = vdupq_n_s32(0); /* all: no memset call */
        for (int j = 0; j < 4; j++) {
            const uint8x16_t q0 = vld1q_u8(blk + qs_off + 32 * j), q1 = vld1q_u8(blk + qs_off + 32 * j + 16);
            int8x16_t l0 = low_nibbles(q0), l1 = low_nibbles(q1), u0 = high_nibbles(q0), u1 = high_nibbles(q1);
            if (has_qh) {
                const uint8x16_t bl = vdupq_n_u8((uint8_t)(1u << (2 * j))), bu = vdupq_n_u8((uint8_t)(2u << (2 * j)));
                const uint8x16_t b16 = vdupq_n_u8(0x10);
                l0 = vorrq_s8(l0, vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h0, bl), b16)));
                l1 = vorrq_s8(l1, vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h1, bl), b16)));
                u0 = vorrq_s8(u0, vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h0, bu), b16)));
                u1 = vorrq_s8(u1, vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h1, bu), b16)));
            }
            for (int t = 0; t < nt; t++) {
                const int8_t *y = q8k_of(x, xs, t, i)->qs + 64 * j;
                acc[t] = vmlaq_n_s32(acc[t], dot32(l0, l1, y), sc[2 * j]);
                acc[t] = vmlaq_n_s32(acc[t], dot32(u0, u1, y + 32), sc[2 * j + 1]);
            }
        }
        uint16_t dh, dminh;
        memcpy(&dh, blk, 2);
        memcpy(&dminh, blk + 2, 2);
        const float d = f16_to_f32(dh), dmin = f16_to_f32(dminh);
        for (int t = 0; t < nt; t++) {
            const block_q8_K *b = q8k_of(x, xs, t, i);
            const int16x8_t pairs = vpaddq_s16(vld1q_s16(b->bsums), vld1q_s16(b->bsums + 8)); /* |.| <= 4064 */
            const int sum_m = mins_dot8(mn, pairs);
            s[t] += b->d * (d * (float)vaddvq_s32(acc[t]) - dmin * (float)sum_m);
        }
    }
    for (int t = 0; t < nt; t++) out[t] = s[t];
}

static void dot_q4_k(int64_t n, const void *w, const void *x, size_t xs, int nt, float *out) {
    dot_k4(n, w, sizeof(block_q4_K), offsetof(block_q4_K, qs), 0, x, xs, nt, out);
}
static void dot_q5_k(int64_t n, const void *w, const void *x, size_t xs, int nt, float *out) {
    dot_k4(n, w, sizeof(block_q5_K), offsetof(block_q5_K, qs), 1, x, xs, nt, out);
}

/* Q6_K: per half (128 values), four groups of 32: ql's low or high nibbles with two bits of qh each, minus 32;
 * 16 sub-blocks of 16 with int8 scales. */
static void dot_q6_k(int64_t n, const void *w, const void *x, size_t xs, int nt, float *out) {
    const block_q6_K *a = w;
    float s[EDGE_DOT_MAX_TOK] = {0};
    const uint8x16_t m4 = vdupq_n_u8(0xF), m30 = vdupq_n_u8(0x30);
    const int8x16_t off = vdupq_n_s8(32);
    for (int64_t i = 0; i < n / QK_K; i++) {
        int32x4_t acc[EDGE_DOT_MAX_TOK];
        for (int t = 0; t < EDGE_DOT_MAX_TOK; t++) acc[t] = vdupq_n_s32(0); /* all: no memset call */
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = a[i].ql + 64 * half, *qh = a[i].qh + 32 * half;
            for (int c = 0; c < 2; c++) { /* values ll = 16c .. 16c + 15 of each group */
                const uint8x16_t la = vld1q_u8(ql + 16 * c), lb = vld1q_u8(ql + 32 + 16 * c);
                const uint8x16_t h = vld1q_u8(qh + 16 * c);
                int8x16_t v[4];
                v[0] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(la, m4), vandq_u8(vshlq_n_u8(h, 4), m30))), off);
                v[1] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(lb, m4), vandq_u8(vshlq_n_u8(h, 2), m30))), off);
                v[2] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(la, 4), vandq_u8(h, m30))), off);
                v[3] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(lb, 4), vandq_u8(vshrq_n_u8(h, 2), m30))), off);
                for (int t = 0; t < nt; t++) {
                    const int8_t *y = q8k_of(x, xs, t, i)->qs + 128 * half + 16 * c;
                    for (int g = 0; g < 4; g++) { /* elements 128 half + 32 g + 16 c: sub-block 8 half + 2 g + c */
                        const int32x4_t p = dot16(vdupq_n_s32(0), v[g], vld1q_s8(y + 32 * g));
                        acc[t] = vmlaq_n_s32(acc[t], p, a[i].scales[8 * half + 2 * g + c]);
                    }
                }
            }
        }
        const float d = f16_to_f32(a[i].d);
        for (int t = 0; t < nt; t++) {
            const block_q8_K *b = q8k_of(x, xs, t, i);
            s[t] += b->d * d * (float)vaddvq_s32(acc[t]);
        }
    }
    for (int t = 0; t < nt; t++) out[t] = s[t];
}

/* Q3_K: per half, four groups of 32: two bits of qs, minus 4 where the group's hmask bit is clear; 16
 * sub-blocks of 16 with 6-bit signed scales. */
static void dot_q3_k(int64_t n, const void *w, const void *x, size_t xs, int nt, float *out) {
    const block_q3_K *a = w;
    float s[EDGE_DOT_MAX_TOK] = {0};
    const uint8x16_t m3 = vdupq_n_u8(3), four = vdupq_n_u8(4);
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sc[16];
        for (int k = 0; k < 16; k++) sc[k] = edge_q3k_scale(a[i].scales, k);
        int32x4_t acc[EDGE_DOT_MAX_TOK];
        for (int t = 0; t < EDGE_DOT_MAX_TOK; t++) acc[t] = vdupq_n_s32(0); /* all: no memset call */
        for (int c = 0; c < 2; c++) { /* values ll = 16c .. 16c + 15 of each group */
            const uint8x16_t hm = vld1q_u8(a[i].hmask + 16 * c);
            for (int half = 0; half < 2; half++) {
                const uint8x16_t q = vld1q_u8(a[i].qs + 32 * half + 16 * c);
                int8x16_t v[4];
                for (int j = 0; j < 4; j++) {
                    const uint8x16_t bits = vandq_u8(vshlq_u8(q, vdupq_n_s8((int8_t)(-2 * j))), m3);
                    const uint8x16_t clear = vbicq_u8(four, vtstq_u8(hm, vdupq_n_u8((uint8_t)(1u << (4 * half + j)))));
                    v[j] = vsubq_s8(vreinterpretq_s8_u8(bits), vreinterpretq_s8_u8(clear));
                }
                for (int t = 0; t < nt; t++) {
                    const int8_t *y = q8k_of(x, xs, t, i)->qs + 128 * half + 16 * c;
                    for (int j = 0; j < 4; j++) { /* sub-block 8 half + 2 j + c */
                        const int32x4_t p = dot16(vdupq_n_s32(0), v[j], vld1q_s8(y + 32 * j));
                        acc[t] = vmlaq_n_s32(acc[t], p, sc[8 * half + 2 * j + c]);
                    }
                }
            }
        }
        const float d = f16_to_f32(a[i].d);
        for (int t = 0; t < nt; t++) {
            const block_q8_K *b = q8k_of(x, xs, t, i);
            s[t] += b->d * d * (float)vaddvq_s32(acc[t]);
        }
    }
    for (int t = 0; t < nt; t++) out[t] = s[t];
}

/* Q2_K: per half, four groups of 32: two bits of qs; 16 sub-blocks of 16 with a 4-bit scale and a 4-bit min
 * (times the activations' sums of 16, bsums). */
static void dot_q2_k(int64_t n, const void *w, const void *x, size_t xs, int nt, float *out) {
    const block_q2_K *a = w;
    float s[EDGE_DOT_MAX_TOK] = {0};
    const uint8x16_t m3 = vdupq_n_u8(3);
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8x16_t scales = vld1q_u8(a[i].scales);
        uint8_t sc[16], mn[16];
        vst1q_u8(sc, vandq_u8(scales, vdupq_n_u8(0xF)));
        vst1q_u8(mn, vshrq_n_u8(scales, 4));
        int32x4_t acc[EDGE_DOT_MAX_TOK];
        for (int t = 0; t < EDGE_DOT_MAX_TOK; t++) acc[t] = vdupq_n_s32(0); /* all: no memset call */
        for (int half = 0; half < 2; half++)
            for (int c = 0; c < 2; c++) {
                const uint8x16_t q = vld1q_u8(a[i].qs + 32 * half + 16 * c);
                int8x16_t v[4];
                for (int j = 0; j < 4; j++)
                    v[j] = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(q, vdupq_n_s8((int8_t)(-2 * j))), m3));
                for (int t = 0; t < nt; t++) {
                    const int8_t *y = q8k_of(x, xs, t, i)->qs + 128 * half + 16 * c;
                    for (int j = 0; j < 4; j++) {
                        const int32x4_t p = dot16(vdupq_n_s32(0), v[j], vld1q_s8(y + 32 * j));
                        acc[t] = vmlaq_n_s32(acc[t], p, sc[8 * half + 2 * j + c]);
                    }
                }
            }
        const float d = f16_to_f32(a[i].d), dmin = f16_to_f32(a[i].dmin);
        for (int t = 0; t < nt; t++) {
            const block_q8_K *b = q8k_of(x, xs, t, i);
            const int sum_m = mins_dot8(mn, vld1q_s16(b->bsums)) + mins_dot8(mn + 8, vld1q_s16(b->bsums + 8));
            s[t] += b->d * (d * (float)vaddvq_s32(acc[t]) - dmin * (float)sum_m);
        }
    }
    for (int t = 0; t < nt; t++) out[t] = s[t];
}

/* IQ4_XS: 8 sub-blocks of 32 (16 bytes of codebook indices each) with 6-bit scales minus 32. */
static void dot_iq4_xs(int64_t n, const void *w, const void *x, size_t xs, int nt, float *out) {
    const block_iq4_xs *a = w;
    const int8x16_t table = vld1q_s8(edge_kvalues_iq4nl);
    float s[EDGE_DOT_MAX_TOK] = {0};
    for (int64_t i = 0; i < n / QK_K; i++) {
        int32x4_t acc[EDGE_DOT_MAX_TOK];
        for (int t = 0; t < EDGE_DOT_MAX_TOK; t++) acc[t] = vdupq_n_s32(0); /* all: no memset call */
        for (int k = 0; k < QK_K / 32; k++) {
            const int ls = ((a[i].scales_l[k / 2] >> (4 * (k % 2))) & 0xF) | (((a[i].scales_h >> (2 * k)) & 3) << 4);
            const uint8x16_t q = vld1q_u8(a[i].qs + 16 * k);
            const int8x16_t v0 = vqtbl1q_s8(table, vandq_u8(q, vdupq_n_u8(0xF)));
            const int8x16_t v1 = vqtbl1q_s8(table, vshrq_n_u8(q, 4));
            for (int t = 0; t < nt; t++)
                acc[t] = vmlaq_n_s32(acc[t], dot32(v0, v1, q8k_of(x, xs, t, i)->qs + 32 * k), ls - 32);
        }
        const float d = f16_to_f32(a[i].d);
        for (int t = 0; t < nt; t++) s[t] += q8k_of(x, xs, t, i)->d * d * (float)vaddvq_s32(acc[t]);
    }
    for (int t = 0; t < nt; t++) out[t] = s[t];
}

/* ------------------------------------------------------------------ decode: one token, a run of rows */

/* y[r] = row r · x for n_rows rows, each row the dot kernel's one-token sum (the same bits; inlined with nt = 1,
 * so no token loop is left and the driver's per-row call and fetch loop are saved), the weights fetched
 * EDGE_DECODE_PREFETCH ahead as the driver does for dot kernels. */
#define MATVEC(T)                                                                                           \
    __attribute__((flatten)) static void matvec_##T(int64_t n, const void *w, size_t ws, int64_t n_rows,    \
                                                    const void *x, float *y) {                              \
        for (int64_t r = 0; r < n_rows; r++) {                                                              \
            const char *row = (const char *)w + (size_t)r * ws;                                             \
            for (size_t o = 0; o < ws; o += 64) __builtin_prefetch(row + EDGE_DECODE_PREFETCH + o, 0, 3);   \
            dot_##T(n, row, x, 0, 1, y + r);                                                                \
        }                                                                                                   \
    }
MATVEC(f32)
MATVEC(f16)
MATVEC(bf16)
MATVEC(q4_0)
MATVEC(q4_1)
MATVEC(q5_0)
MATVEC(q5_1)
MATVEC(q8_0)
MATVEC(iq4_nl)
MATVEC(q2_k)
MATVEC(q3_k)
MATVEC(q4_k)
MATVEC(q5_k)
MATVEC(q6_k)
MATVEC(iq4_xs)

const struct edge_kernels EDGE_NEON_TABLE = {
    .isa = EDGE_NEON_ISA,
    .name = EDGE_NEON_NAME,
    .dot =
        {
            [EDGE_TYPE_F32] = dot_f32,
            [EDGE_TYPE_F16] = dot_f16,
            [EDGE_TYPE_BF16] = dot_bf16,
            [EDGE_TYPE_Q4_0] = dot_q4_0,
            [EDGE_TYPE_Q4_1] = dot_q4_1,
            [EDGE_TYPE_Q5_0] = dot_q5_0,
            [EDGE_TYPE_Q5_1] = dot_q5_1,
            [EDGE_TYPE_Q8_0] = dot_q8_0,
            [EDGE_TYPE_IQ4_NL] = dot_iq4_nl,
            [EDGE_TYPE_Q2_K] = dot_q2_k,
            [EDGE_TYPE_Q3_K] = dot_q3_k,
            [EDGE_TYPE_Q4_K] = dot_q4_k,
            [EDGE_TYPE_Q5_K] = dot_q5_k,
            [EDGE_TYPE_Q6_K] = dot_q6_k,
            [EDGE_TYPE_IQ4_XS] = dot_iq4_xs,
        },
    .matvec =
        {
            [EDGE_TYPE_F32] = matvec_f32,
            [EDGE_TYPE_F16] = matvec_f16,
            [EDGE_TYPE_BF16] = matvec_bf16,
            [EDGE_TYPE_Q4_0] = matvec_q4_0,
            [EDGE_TYPE_Q4_1] = matvec_q4_1,
            [EDGE_TYPE_Q5_0] = matvec_q5_0,
            [EDGE_TYPE_Q5_1] = matvec_q5_1,
            [EDGE_TYPE_Q8_0] = matvec_q8_0,
            [EDGE_TYPE_IQ4_NL] = matvec_iq4_nl,
            [EDGE_TYPE_Q2_K] = matvec_q2_k,
            [EDGE_TYPE_Q3_K] = matvec_q3_k,
            [EDGE_TYPE_Q4_K] = matvec_q4_k,
            [EDGE_TYPE_Q5_K] = matvec_q5_k,
            [EDGE_TYPE_Q6_K] = matvec_q6_k,
            [EDGE_TYPE_IQ4_XS] = matvec_iq4_xs,
        },
    .quant_q8_0 = edge_quant_act_q8_0,
    .quant_q8_1 = edge_quant_act_q8_1,
    .quant_q8_k = edge_quant_act_q8_k,
};
