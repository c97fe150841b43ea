/* kernels.h — internal interface of the CPU kernels used by the engine (not public). */
#ifndef EDGE_KERNELS_H
#define EDGE_KERNELS_H

#include "common.h"

typedef struct edge_kernels edge_kernels; /* the matrix products of one ISA path, per weight type (kernels_impl.h) */

/* The attention loops over n_keys cached rows of one KV head's slice (engine.h describes them), per cache
 * type: scores of nh query rows, and the probability-weighted sums of the value rows. */
typedef void (*edge_attn_scores_multi_fn)(const float *q, int nh, const uint8_t *k0, size_t stride, int64_t n_keys,
                                          int64_t n, float *out, size_t out_stride);
typedef void (*edge_attn_wsum_multi_fn)(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0,
                                        size_t stride, int64_t n_keys, int64_t n);
/* Attention scores in place: s = cap·tanh(s·mult/cap) (cap 0: s·mult), -inf (masked) kept; returns the
 * max. Then s = exp(s - max) (masked: 0), then s times 1 / (their sum): the probabilities. */
typedef float (*edge_attn_softcap_fn)(float *s, int64_t n, float mult, float cap);
typedef void (*edge_attn_exp_fn)(float *s, int64_t n, float max);
/* h = gelu_tanh(h) ⊙ u over n elements. */
typedef void (*edge_gelu_mul_fn)(float *h, const float *u, int64_t n);

/* KV cache types the attention tables are indexed by (EDGE_TYPE_F32, EDGE_TYPE_F16, EDGE_TYPE_Q8_0). */
#define EDGE_KV_TYPE_SLOTS (EDGE_TYPE_Q8_0 + 1)

/* The CPU backend's operations for one ISA path: every choice that depends on the CPU's instruction set,
 * in one table (cpu_tables.c), so a new ISA path is one table and one line in edge_cpu_kernels_for. */
typedef struct edge_cpu_kernels {
    int isa; /* edge_isa */
    const char *name;
    const edge_kernels *matmul; /* the matrix products per weight type (a NULL entry runs the scalar kernel) */
    /* the attention loops per KV cache type; NULL (both): the portable loop, a cached row at a time */
    edge_attn_scores_multi_fn attn_scores[EDGE_KV_TYPE_SLOTS];
    edge_attn_wsum_multi_fn attn_wsum[EDGE_KV_TYPE_SLOTS];
    edge_attn_softcap_fn attn_softcap; /* NULL (both): the portable softmax with tanhf / expf */
    edge_attn_exp_fn attn_exp;
    edge_gelu_mul_fn gelu_mul; /* the experts' activation */
    /* Whether the path multiplies weights of `type` (the model loader rejects the others). */
    bool (*multiplies)(int type);
} edge_cpu_kernels;

/* The table for a path, or NULL if it is not compiled in or this CPU lacks it; EDGE_ISA_AUTO picks the best
 * supported path for `cpu` (NULL: detect it). The one place the CPU backend's operations are chosen. */
const edge_cpu_kernels *edge_cpu_kernels_for(int isa, const edge_cpu_features *cpu);

/* Run fn(ctx, ith, nth) on every worker (ith = 0 is the calling thread) and return when all are done. */
void edge_threadpool_run(edge_threadpool *pool, void (*fn)(void *ctx, int ith, int nth), void *ctx);
int edge_threadpool_size(const edge_threadpool *pool);
/* The CPU features detected when the pool was created; NULL for no pool. */
const edge_cpu_features *edge_threadpool_cpu(const edge_threadpool *pool);
/* Run fn(ctx, ith, nth) on the calling thread (ith = 0) and on whichever workers are free to join
 * before it returns; return when all that joined are done. For work split dynamically (an atomic
 * counter), so a worker the OS has not scheduled costs no waiting (the caller does its share). */
void edge_threadpool_run_any(edge_threadpool *pool, void (*fn)(void *ctx, int ith, int nth), void *ctx);

/* Scratch bytes edge_matmul_ex needs for activations of n_tok rows of n_cols (quantized on the fly). */
size_t edge_matmul_scratch_bytes(int type, int64_t n_cols, int64_t n_tok);

/* As edge_matmul, with the caller's scratch (no allocation: safe in the token loop) and a row stride,
 * so one expert of a stacked 3-D tensor can be passed as w = base + e * n_rows * row_stride. */
edge_status edge_matmul_ex(const edge_kernels *k, edge_threadpool *pool, int type, const void *w, size_t row_stride,
                           int64_t n_rows, int64_t n_cols, const float *x, int64_t n_tok, float *y, void *scratch,
                           size_t scratch_bytes);

/* An in-place transform of a product's input, applied before the product reads it: x = f(x, u) over n
 * values (the experts' GELU: the down projection's input is gelu(h) ⊙ u). */
typedef void (*edge_pre_fn)(float *x, const float *u, int64_t n);

/* One matrix product of a multi-part call. */
typedef struct edge_mm_part {
    int type;
    const void *w;
    size_t row_stride;
    int64_t n_rows, n_cols;
    const float *x; /* n_tok rows of n_cols (writable when pre is set) */
    int64_t n_tok;
    float *y;       /* n_tok rows of n_rows */
    edge_pre_fn pre; /* optional: x = pre(x, pre_u) in place first, in pieces of whole activation blocks */
    const float *pre_u;
    float y_scale; /* y = y_scale * (W x), each value multiplied once as its rows are written (1: none) */
} edge_mm_part;

#define EDGE_MM_MAX_PARTS 32

/* Independent products in one pool run: no barrier between them (a worker done with one part goes on to
 * the next), and parts with the same input, shape, type and transform share one conversion of it (q, k, v;
 * an expert's gate and up). Parts must not write what another part reads. */
edge_status edge_matmul_parts(const edge_kernels *k, edge_threadpool *pool, const edge_mm_part *parts, int n_parts,
                              void *scratch, size_t scratch_bytes);
/* The scratch edge_matmul_parts needs for these parts. */
size_t edge_matmul_parts_scratch_bytes(const edge_mm_part *parts, int n_parts);
/* The most scratch up to n_parts products of one type and width need when their inputs hold n_tok rows in
 * all (each part's rows padded to whole quads, each conversion aligned). */
size_t edge_matmul_split_scratch_bytes(int type, int64_t n_cols, int64_t n_tok, int n_parts);

#endif /* EDGE_KERNELS_H */
