/* kernels_impl.h — the kernel table shared by the per-ISA files and the matmul driver (private to kernels/).
 *
 * Every weight type is paired with an activation format (ggml's "vec_dot_type"): the activations are
 * converted once per matmul into that format, then each (row, token) pair is one dot product of a
 * weight row with a converted activation row. The format depends on the weight type only, never on
 * the ISA, so every path sees the same integers and differs from the scalar path only in float
 * summation order. */
#ifndef EDGE_KERNELS_IMPL_H
#define EDGE_KERNELS_IMPL_H

#include <sched.h>
#include <time.h>

#include "blocks.h"
#include "common.h"
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define EDGE_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define EDGE_CPU_RELAX() __asm__ volatile("yield")
#else
#define EDGE_CPU_RELAX() ((void)0)
#endif

static inline uint64_t edge_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One step of waiting for other threads that are running right now (a few microseconds of work):
 * pause, and only after 2 ms give the core away. sched_yield() early would hand the core to another
 * process for a whole time slice on a busy machine. */
static inline void edge_wait_step(unsigned i, uint64_t t0) {
    if ((i & 255) != 255 || edge_now_ns() - t0 < 2000000u)
        EDGE_CPU_RELAX();
    else
        sched_yield();
}

/* Activations for the 32-element signed types (Q8_0, Q4_0, Q5_0, IQ4_NL): ggml's Q8_0 values and
 * scales, stored as arrays: the row's n int8 first, then its n/32 scales as f32 (no f16 conversion in
 * the inner loop, one rounding less, and a vector load fetches the scales of several blocks).
 * Internal to a matmul's scratch; dot kernels always receive whole rows, so the scales of a row of
 * n elements start n bytes after it. */
#define EDGE_Q8S_BLOCK_BYTES (QK8_0 + 4)
static inline const int8_t *edge_q8s_qs(const void *row) { return (const int8_t *)row; }
static inline const float *edge_q8s_d(const void *row, int64_t n) {
    return (const float *)((const char *)row + n);
}

/* Q8_0 activations for a one-token kernel that takes w + 128 as vpdpbusd's unsigned side (dot_avx512.c):
 * the q8s layout, then per block the 8 int32 lanes' -128 * (sum of the lane's 4 values), which turns
 * sum((w + 128) * x) into sum(w * x). */
#define EDGE_Q8V_ROW_BYTES(n) ((size_t)(n) + (size_t)(n) / QK8_0 * (sizeof(float) + 8 * sizeof(int32_t)))
static inline const int32_t *edge_q8v_corr(const void *row, int64_t n) {
    return (const int32_t *)((const char *)row + n + n / QK8_0 * (int64_t)sizeof(float));
}

#define EDGE_N_TYPES 31 /* ggml numbering: EDGE_TYPE_BF16 = 30 is the last one */

typedef enum edge_act_format {
    EDGE_ACT_NONE = 0, /* weight type without a kernel */
    EDGE_ACT_F32 = 1,  /* x used as is (float weights) */
    EDGE_ACT_Q8_0 = 2, /* a row of n int8, then n/32 f32 scales (see below) */
    EDGE_ACT_Q8_1 = 3, /* block_q8_1 per 32 (d and s = d * sum(qs)) */
    EDGE_ACT_Q8_K = 4  /* block_q8_K per 256 */
} edge_act_format;

/* Dot products of one weight row (n elements) with nt activation rows (x + t*x_stride bytes),
 * out[t] for t < nt, nt <= EDGE_DOT_MAX_TOK (EDGE_DOT_WIDE_TOK for the types a table marks dot_wide). */
#define EDGE_DOT_MAX_TOK 4
#define EDGE_DOT_WIDE_TOK 8
/* Decode (one token) streams every weight byte once from DRAM: the weights are fetched this far ahead
 * (on the Grok-shaped Q4_K_M bench 4 KiB ahead gives +5 % decode tok/s over none; 2 and 16 KiB no more).
 * A table's matvec kernels fetch ahead themselves (the AVX2 ones 2 KiB: EDGE_SIMD_DECODE_AHEAD); for dot
 * the driver does it. */
#define EDGE_DECODE_PREFETCH 4096
/* ... and, by the AVX-512 matvec kernels (not the AVX2 ones: EDGE_SIMD_DECODE_L2), a second time into L2
 * (prefetcht1) this far past that: L1 holds few misses in flight, L2 more, so the second stage keeps
 * more of the stream in flight. A 512 MiB matvec on 2 threads of a Zen 4, against the first stage alone
 * and a plain read: Q4_K 27.8 -> 29.9 GB/s (plain read 31.6), Q8_0 33.6 -> 37.1 (45.6). On a host whose
 * memory bandwidth other guests share, its effect on whole decode tokens varies with their load in
 * either direction by 5-10 %; docs/performance.md says how to compare the two on a given machine. */
#define EDGE_DECODE_PREFETCH_L2 8192
typedef void (*edge_dot_fn)(int64_t n, const void *w, const void *x, size_t x_stride, int nt, float *out);

/* Convert blocks b0 .. b0+nb-1 of one activation row (x: the row's n floats) into the activation
 * format, in that row's part of the scratch (row). */
typedef void (*edge_act_quant_fn)(const float *x, void *row, int64_t n, int64_t b0, int64_t nb);

/* Prompt processing with interleaved activations (K-quants, AVX-512 VNNI): Q8_K values of 4 tokens
 * ("a quad") interleaved 4 values at a time, so one 512-bit vpdpbusd multiplies 16 weights, replicated
 * per token, with the 4 tokens at once; a sub-block's integer sums then stay per token in int32 lanes
 * and are scaled once for all 4 tokens (the one-row kernels scale every 64 values of every token).
 * The integers are the Q8_K ones of each token (same rounding), only their place in memory differs.
 * A quad of fewer than 4 tokens is zero-padded. */
#define EDGE_QUAD 4
typedef struct {
    int8_t qs[EDGE_QUAD * QK_K]; /* values 4g .. 4g+3 of token t at 16g + 4t */
    int16_t bs[64];              /* sums of 16 values: blocks 2p and 2p+1 of token t at 8p + 2t and 8p + 2t + 1 */
    float d[EDGE_QUAD];          /* token t's Q8_K scale */
    uint8_t pad[48];             /* a 64-byte multiple: every qs load is aligned */
} block_q8_Kx4;
_Static_assert(sizeof(block_q8_Kx4) % 64 == 0, "q8_Kx4 alignment");

/* The Q8_0 quads (for Q8_0 weights): a quad row of n values is n * 4 bytes of values, interleaved as in
 * block_q8_Kx4 and stored plus 128 (unsigned: vpdpbusd's unsigned side, the weights being signed), then
 * n / 32 times the 4 tokens' f32 scales. */
#define EDGE_Q8Q_ROW_BYTES(n) ((size_t)(n) * EDGE_QUAD + (size_t)(n) / QK8_0 * EDGE_QUAD * sizeof(float))
static inline const uint8_t *edge_q8q_qs(const void *quad) { return (const uint8_t *)quad; }
static inline const float *edge_q8q_d(const void *quad, int64_t n) {
    return (const float *)((const char *)quad + (size_t)n * EDGE_QUAD);
}

/* nr (1..2) weight rows (w, w + w_stride) against nq (1..EDGE_GEMM4_MAX_Q) quads (x, x + x_stride),
 * each x_stride bytes of n/256 block_q8_Kx4: out[(r * EDGE_GEMM4_MAX_Q + q) * EDGE_QUAD + t]. */
#define EDGE_GEMM4_MAX_Q 4
typedef void (*edge_gemm4_fn)(int64_t n, const void *w, size_t w_stride, int nr, const void *x, size_t x_stride,
                              int nq, float *out);

/* One token against n_rows rows (w, w + w_stride, ...): y[r] = row r · x (x as matvec_quant converts it where
 * the table has one), bit for bit the token's result in the table's gemm4 kernel, or in its dot kernel where it
 * has no gemm4 (the same in any batch);
 * fetches the weights EDGE_DECODE_PREFETCH ahead itself.
 * Optional: saves the per-row call in decode. */
typedef void (*edge_matvec_fn)(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *x, float *y);

struct edge_kernels {
    int isa;
    const char *name;
    edge_dot_fn dot[EDGE_N_TYPES];
    /* 1: dot[type] takes up to EDGE_DOT_WIDE_TOK tokens a call (AVX2 Q4_K, Q5_K, Q6_K: the block's unpacked
     * weights and scales serve twice as many tokens) */
    unsigned char dot_wide[EDGE_N_TYPES];
    edge_gemm4_fn gemm4[EDGE_N_TYPES]; /* NULL: no interleaved-activation kernel */
    /* 1: the driver fetches the next row pair into L2 while a gemm4 kernel computes (AVX-512: +13-15 %
     * on Zen 4, matmul.c); 0: not (the AVX2 kernels' own loads do better alone: 64-token Q8_0 prompts
     * on a Zen 3 are 7.5 % faster without it) */
    int gemm4_fetch_next;
    edge_matvec_fn matvec[EDGE_N_TYPES]; /* NULL: one token row by row through dot[], the driver fetching ahead */
    /* NULL: matvec reads the format's usual activations; set: it reads this conversion's layout instead */
    edge_act_quant_fn matvec_quant[EDGE_N_TYPES];
    edge_act_quant_fn quant_q8_0, quant_q8_1, quant_q8_k;
};

edge_act_format edge_act_format_of(int type);

/* Per-ISA tables, one constant per file (a NULL entry falls back to the scalar kernel). */
extern const struct edge_kernels edge_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const struct edge_kernels edge_kernels_avx2;
extern const struct edge_kernels edge_kernels_avx512;
#endif
#if defined(__aarch64__)
extern const struct edge_kernels edge_kernels_neon;
extern const struct edge_kernels edge_kernels_neon_dotprod;
#endif

/* Scalar activation quantizers (ggml's reference rounding), shared by every path. */
void edge_quant_act_q8_0(const float *x, void *row, int64_t n, int64_t b0, int64_t nb);
void edge_quant_act_q8_1(const float *x, void *row, int64_t n, int64_t b0, int64_t nb);
void edge_quant_act_q8_k(const float *x, void *row, int64_t n, int64_t b0, int64_t nb);
/* Blocks b0 .. b0+nb-1 of one token's row x, quantized with q8k (one of the Q8_K quantizers above),
 * into slot `slot` of a row of block_q8_Kx4 (quad); x == NULL zeroes the slot (padding). */
void edge_quant_act_q8_kx4(edge_act_quant_fn q8k, const float *x, void *quad, int slot, int64_t b0, int64_t nb);
/* The same for the Q8_0 quads (q80: one of the Q8_0 quantizers; n: the row's length). */
void edge_quant_act_q8_0x4(edge_act_quant_fn q80, const float *x, void *quad, int slot, int64_t n, int64_t b0,
                           int64_t nb);

/* Unpackers shared by the scalar kernels: the 6-bit scale/min pairs of Q4_K/Q5_K and the 16
 * 6-bit scales of Q3_K. */
static inline void edge_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static inline int edge_q3k_scale(const uint8_t *scales, int k) {
    int lo = k < 8 ? (scales[k] & 0xF) : (scales[k - 8] >> 4);
    int hi = (scales[8 + (k & 3)] >> (2 * (k >> 2))) & 3;
    return (lo | (hi << 4)) - 32;
}

#endif /* EDGE_KERNELS_IMPL_H */
