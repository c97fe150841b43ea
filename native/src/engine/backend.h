/* backend.h — where the forward pass runs (internal).
 *
 * grok.c describes the Grok-1 forward pass once, as a sequence of the operations below; a backend runs
 * each of them on buffers it owns (host memory for the CPU backend, device memory for the CUDA one).
 * The engine above this line does not know where a tensor lives: it hands tokens in and takes logits out.
 *
 * The buffers named here are the run state's (engine.h, edge_run_state), wherever the backend keeps them:
 *   x    [n, n_embd]  the residual stream
 *   xb   [n, n_embd]  a sublayer's normed input
 *   ob   [n, n_embd]  the attention sublayer's output
 *   moe  [n, n_embd]  the MoE sublayer's output
 * A pass covers n tokens of one or more sequences (spans, engine.h); every operation returns EDGE_OK or an
 * edge_fail status with its message. A backend keeps its own per-context state in ctx->backend_state. */
#ifndef EDGE_BACKEND_H
#define EDGE_BACKEND_H

#include <stdbool.h>

#include "engine/engine.h"

/* The four RMSNorms of a layer (the scales of edge_layer_weights). */
typedef enum edge_norm_site {
    EDGE_NORM_ATTN_IN = 0, /* attn_norm:         xb = rms(x)   before attention */
    EDGE_NORM_ATTN_OUT,    /* attn_output_norm:  x += rms(ob)  after attention */
    EDGE_NORM_FFN_IN,      /* ffn_norm:          xb = rms(x)   before the MoE */
    EDGE_NORM_FFN_OUT,     /* layer_output_norm: x += rms(moe) after the MoE */
} edge_norm_site;

typedef struct edge_backend {
    const char *name; /* "cpu", "cuda" */
    /* Per-context state: created with the context (after the CPU state: ctx->params, kv, pool exist),
     * freed with it; free also runs after a failed init, so it accepts a partial state (or none). */
    edge_status (*init)(edge_context *ctx);
    void (*free)(edge_context *ctx);
    /* Start a pass: [PAD] flags of each span's sequence at its next positions, RoPE phases of every token
     * at its position in its sequence, and x = E[tokens] * embedding_scale. */
    edge_status (*begin)(edge_context *ctx, const edge_seq_span *spans, int n_spans, const int32_t *tokens,
                         int64_t n);
    /* EDGE_NORM_ATTN_IN / EDGE_NORM_FFN_IN: xb = rms(x) ⊙ scale. EDGE_NORM_ATTN_OUT: x += rms(ob) ⊙ scale;
     * EDGE_NORM_FFN_OUT: x += rms(moe) ⊙ scale. */
    edge_status (*norm)(edge_context *ctx, int64_t layer, edge_norm_site site, int64_t n);
    /* ob = Wo · attention(RoPE(Wq xb), RoPE(Wk xb), Wv xb): k, v appended to each span's sequence cache. */
    edge_status (*attention)(edge_context *ctx, int64_t layer, const edge_seq_span *spans, int n_spans, int64_t n);
    /* Expert prefetch: layer `next`'s router applied to rms(x) predicts its experts (hint to the expert
     * store; the pass's results do not depend on it). NULL: the backend does not predict. */
    edge_status (*predict_experts)(edge_context *ctx, int64_t next, int64_t n);
    /* moe = Σ_{e in top-k(softmax(Wr xb))} p_e · expert_e(xb), the gates not renormalized; `predicted`: the
     * experts predict_experts named for this layer are in pred_sel (for the store's statistics). */
    edge_status (*moe)(edge_context *ctx, int64_t layer, int64_t n, bool predicted);
    /* logits of the wanted rows (want[i], or i >= first_logit when want is NULL), one after another, into
     * the caller's host array: rms_final(x) · Eᵀ · output_scale. */
    edge_status (*logits)(edge_context *ctx, const uint8_t *want, int64_t first_logit, int64_t n, float *logits);
} edge_backend;

extern const edge_backend edge_cpu_backend; /* cpu_backend.c */
#if defined(EDGE_WITH_CUDA)
extern const edge_backend edge_cuda_backend; /* cuda/cuda_backend.cu */
#endif

#endif /* EDGE_BACKEND_H */
