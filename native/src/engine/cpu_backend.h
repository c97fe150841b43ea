/* cpu_backend.h — what the CPU backend's files share (internal): its per-context state and the matrix
 * product helpers. cpu_backend.c holds the backend's table with the pass's start, norms, expert prediction
 * and logits; cpu_attention.c the attention sublayer; cpu_moe.c the MoE sublayer. Every buffer is the run
 * state's in host memory (engine.h, edge_run_state); the ISA-dependent code comes from ctx->cpu. */
#ifndef EDGE_CPU_BACKEND_H
#define EDGE_CPU_BACKEND_H

#include "engine/backend.h"
#include "engine/engine.h"

/* The CPU backend's state of one context (ctx->backend_state). */
typedef struct edge_cpu_state {
    /* ctx->cpu's attention loops for the context's cache type; NULL (both): the portable loop */
    edge_attn_scores_multi_fn attn_scores;
    edge_attn_wsum_multi_fn attn_wsum;
} edge_cpu_state;

/* One product y = W x for n_tok rows of x, as a part of a run (edge_matmul_parts). */
static inline edge_mm_part edge_cpu_part(const edge_matrix *w, const float *x, int64_t n_tok, float *y) {
    return (edge_mm_part){w->type, w->data, w->row_stride, w->n_rows, w->n_cols, x, n_tok, y, NULL, NULL, 1.0f};
}

/* Independent products in one pool run, with the context's preallocated scratch (no allocation here). */
static inline edge_status edge_cpu_matmul_parts(edge_context *ctx, const edge_mm_part *parts, int n) {
    return edge_matmul_parts(ctx->kernels, ctx->pool, parts, n, ctx->s.scratch, ctx->s.scratch_bytes);
}

static inline edge_status edge_cpu_matmul(edge_context *ctx, const edge_matrix *w, const float *x, int64_t n_tok,
                                          float *y) {
    const edge_mm_part one = edge_cpu_part(w, x, n_tok, y);
    return edge_cpu_matmul_parts(ctx, &one, 1);
}

/* The sublayers (edge_backend's attention and moe). */
edge_status edge_cpu_attention(edge_context *ctx, int64_t layer, const edge_seq_span *spans, int n_spans, int64_t n);
edge_status edge_cpu_moe(edge_context *ctx, int64_t layer, int64_t n, bool predicted);

#endif /* EDGE_CPU_BACKEND_H */
