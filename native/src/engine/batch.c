/* batch.c — several sequences in one context: the extra KV cache slots (params.n_seq), and
 * edge_batch_eval, which runs the tokens of several sequences in one forward pass per n_batch tokens
 * (grok.c, edge_grok_forward_spans): the matrix products once over every token, attention per sequence. */
#include <stdlib.h>

#include "engine/engine.h"

/* Sequences in one pass (a batch with more runs is split into more passes). */
#define EDGE_BATCH_MAX_SPANS 256

edge_status edge_seq_slots_create(edge_context *ctx, int n_seq) {
    ctx->n_seq = 1;
    ctx->seq_tmp = calloc((size_t)n_seq * 2, sizeof(int64_t));
    if (!ctx->seq_tmp) return edge_fail(EDGE_ERR_NOMEM, "out of memory for %d sequence slots", n_seq);
    if (n_seq == 1) return EDGE_OK;
    ctx->seqs = calloc((size_t)(n_seq - 1), sizeof *ctx->seqs);
    if (!ctx->seqs) return edge_fail(EDGE_ERR_NOMEM, "out of memory for %d sequence slots", n_seq);
    for (int i = 1; i < n_seq; i++) {
        edge_seq_slot *o = &ctx->seqs[i - 1];
        edge_status st = edge_kv_cache_init(&o->kv, ctx->kv.type, ctx->kv.n_layer, ctx->kv.n_ctx, ctx->kv.row_elems);
        if (st != EDGE_OK) return st;
        ctx->n_seq = i + 1; /* slots 1..i are complete: freed by edge_seq_slots_free */
        o->is_pad = calloc((size_t)ctx->kv.n_ctx, 1);
        if (!o->is_pad)
            return edge_fail(EDGE_ERR_NOMEM, "out of memory for sequence slot %d of %d tokens", i,
                             (int)ctx->kv.n_ctx);
    }
    return EDGE_OK;
}

void edge_seq_slots_free(edge_context *ctx) {
    for (int i = 1; ctx->seqs && i < ctx->n_seq; i++) {
        edge_kv_cache_free(&ctx->seqs[i - 1].kv);
        free(ctx->seqs[i - 1].is_pad);
    }
    free(ctx->seqs);
    free(ctx->seq_tmp);
    ctx->seqs = NULL;
    ctx->seq_tmp = NULL;
}

static int64_t *seq_n_past(edge_context *ctx, int seq) { return seq == 0 ? &ctx->n_past : &ctx->seqs[seq - 1].n_past; }

EDGE_API edge_status edge_context_n_seq(const edge_context *ctx, int *out) {
    if (!ctx || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_n_seq: NULL argument");
    *out = ctx->n_seq;
    return EDGE_OK;
}

EDGE_API edge_status edge_seq_n_past(const edge_context *ctx, int seq, int64_t *out) {
    if (!ctx || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_seq_n_past: NULL argument");
    if (seq < 0 || seq >= ctx->n_seq)
        return edge_fail(EDGE_ERR_INVALID_ARG, "sequence %d: the context has sequences 0..%d", seq, ctx->n_seq - 1);
    *out = *seq_n_past((edge_context *)ctx, seq);
    return EDGE_OK;
}

EDGE_API edge_status edge_seq_truncate(edge_context *ctx, int seq, int64_t n_past) {
    if (!ctx) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_seq_truncate: NULL context");
    if (seq < 0 || seq >= ctx->n_seq)
        return edge_fail(EDGE_ERR_INVALID_ARG, "sequence %d: the context has sequences 0..%d", seq, ctx->n_seq - 1);
    int64_t *cur = seq_n_past(ctx, seq);
    if (n_past < 0 || n_past > *cur)
        return edge_fail(EDGE_ERR_RANGE, "sequence %d: truncate to %lld: must be in 0..%lld (the cached tokens)", seq,
                         (long long)n_past, (long long)*cur);
    *cur = n_past;
    return EDGE_OK;
}

EDGE_API edge_status edge_batch_eval(edge_context *ctx, const int32_t *seq_ids, const int32_t *tokens, int64_t n,
                                     const uint8_t *want, float *logits) {
    if (!ctx || !seq_ids || !tokens) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_batch_eval: NULL argument");
    if (n <= 0) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_batch_eval: no tokens (n = %lld)", (long long)n);
    const edge_model_hparams *hp = &ctx->model->hp;
    int64_t *count = ctx->seq_tmp, *saved = ctx->seq_tmp + ctx->n_seq; /* per sequence: tokens here, n_past */
    for (int q = 0; q < ctx->n_seq; q++) count[q] = 0;
    /* check everything before evaluating anything */
    for (int64_t i = 0; i < n; i++) {
        const int32_t q = seq_ids[i];
        if (q < 0 || q >= ctx->n_seq)
            return edge_fail(EDGE_ERR_INVALID_ARG, "sequence id %ld at index %lld: the context has sequences 0..%d",
                             (long)q, (long long)i, ctx->n_seq - 1);
        if (count[q] > 0 && seq_ids[i - 1] != q)
            return edge_fail(EDGE_ERR_INVALID_ARG,
                             "sequence %ld at index %lld: a sequence's tokens must be adjacent in the batch", (long)q,
                             (long long)i);
        count[q]++;
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return edge_fail(EDGE_ERR_RANGE, "token id %ld at index %lld is out of range (n_vocab %lld)",
                             (long)tokens[i], (long long)i, (long long)hp->n_vocab);
    }
    for (int q = 0; q < ctx->n_seq; q++) {
        saved[q] = *seq_n_past(ctx, q);
        if (count[q] > ctx->kv.n_ctx - saved[q])
            return edge_fail(EDGE_ERR_RANGE, "sequence %d: context overflow: %lld cached + %lld new tokens exceed n_ctx %lld",
                             q, (long long)saved[q], (long long)count[q], (long long)ctx->kv.n_ctx);
    }
    /* passes of up to n_batch tokens; a sequence's run may continue into the next pass */
    edge_seq_span spans[EDGE_BATCH_MAX_SPANS];
    float *dst = logits;
    for (int64_t off = 0; off < n;) {
        int64_t end = off + ctx->params.n_batch < n ? off + ctx->params.n_batch : n;
        int n_spans = 0;
        for (int64_t i = off; i < end; i++) {
            if (i > off && seq_ids[i] == seq_ids[i - 1]) {
                spans[n_spans - 1].n++;
                continue;
            }
            if (n_spans == EDGE_BATCH_MAX_SPANS) { /* the rest goes to the next pass */
                end = i;
                break;
            }
            spans[n_spans++] = (edge_seq_span){seq_ids[i], i - off, 1};
        }
        const edge_status st = edge_grok_forward_spans(ctx, spans, n_spans, tokens + off, end - off,
                                                       want ? want + off : NULL, 0, dst);
        if (st != EDGE_OK) {
            for (int q = 0; q < ctx->n_seq; q++) *seq_n_past(ctx, q) = saved[q]; /* nothing evaluated */
            return st;
        }
        for (int j = 0; j < n_spans; j++) *seq_n_past(ctx, spans[j].seq) += spans[j].n;
        if (dst)
            for (int64_t i = off; i < end; i++) dst += !want || want[i] ? hp->n_vocab : 0;
        off = end;
    }
    edge_clear_error();
    return EDGE_OK;
}
