/* grok.c — the Grok-1 forward pass. Read it beside docs/grok1.md (the numerics, from xAI's model.py, which is
 * the authority where llama.cpp or other ports differ).
 *
 *   h = E[tokens] * embedding_scale
 *   per layer:  h = h + rms_1(attention(rms_0(h)))
 *               h = h + rms_3(moe(rms_2(h)))
 *   logits = rms_final(h) . E^T * output_scale          (output tied to the embedding unless `output` exists)
 *
 * This file holds the pass once, as the sequence of a backend's operations (backend.h); ctx->backend runs
 * them where its buffers live (cpu_backend.c: host memory, the kernels of the CPU's ISA path). Every
 * constant comes from the model's hyperparameters (GGUF metadata, model.c). */
#include "engine/backend.h"
#include "engine/engine.h"
#include "experts/expert_store.h"

edge_status edge_grok_forward(edge_context *ctx, const int32_t *tokens, int64_t n, float *logits,
                              int64_t first_logit) {
    const edge_seq_span one = {0, 0, n};
    return edge_grok_forward_spans(ctx, &one, 1, tokens, n, NULL, first_logit, logits);
}

edge_status edge_grok_forward_spans(edge_context *ctx, const edge_seq_span *spans, int n_spans, const int32_t *tokens,
                                    int64_t n, const uint8_t *want, int64_t first_logit, float *logits) {
    const edge_model *m = ctx->model;
    const edge_backend *b = ctx->backend;
    const int64_t n_layer = m->hp.n_layer;
    edge_status st;

    /* 1. [PAD] flags, RoPE phases, h = E[tokens] · embedding_scale */
    if ((st = b->begin(ctx, spans, n_spans, tokens, n)) != EDGE_OK) return st;

    /* 2. the decoder layers (a cancel request, edge_context_set_cancel, is honoured before each) */
    bool predict_next = false; /* whether pred_sel holds this layer's predicted experts */
    for (int64_t l = 0; l < n_layer; l++) {
        if (atomic_load_explicit(&ctx->cancel, memory_order_acquire))
            return edge_fail(EDGE_ERR_CANCELLED, "evaluation cancelled before layer %lld of %lld", (long long)l,
                             (long long)n_layer);
        /* h = h + rms_1(attention(rms_0(h))) */
        if ((st = b->norm(ctx, l, EDGE_NORM_ATTN_IN, n)) != EDGE_OK) return st;
        if ((st = b->attention(ctx, l, spans, n_spans, n)) != EDGE_OK) return st;
        if ((st = b->norm(ctx, l, EDGE_NORM_ATTN_OUT, n)) != EDGE_OK) return st;
        /* h = h + rms_3(moe(rms_2(h))); layer l+1's experts predicted first (expert prefetch) */
        const bool predicted = predict_next;
        predict_next = l + 1 < n_layer && edge_experts_wants_prediction(m->experts) && b->predict_experts;
        if (predict_next && (st = b->predict_experts(ctx, l + 1, n)) != EDGE_OK) return st;
        if ((st = b->norm(ctx, l, EDGE_NORM_FFN_IN, n)) != EDGE_OK) return st;
        if ((st = b->moe(ctx, l, n, predicted)) != EDGE_OK) return st;
        if ((st = b->norm(ctx, l, EDGE_NORM_FFN_OUT, n)) != EDGE_OK) return st;
    }

    /* 3. logits = rms_final(h) · Eᵀ · output_scale, only for the rows the caller wants */
    return logits ? b->logits(ctx, want, first_logit, n, logits) : EDGE_OK;
}
