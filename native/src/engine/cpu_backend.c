/* cpu_backend.c — the CPU backend (backend.h): the forward pass's operations on the run state in host memory,
 * with the context's thread pool and the dispatch table of its ISA path (ctx->cpu). This file holds the
 * pass's start (embedding, RoPE phases, [PAD] flags), the norms, the expert prediction and the logits;
 * cpu_attention.c and cpu_moe.c the two sublayers. */
#include <math.h>
#include <stdlib.h>

#include "engine/cpu_backend.h"
#include "experts/expert_store.h"

/* out = scale ⊙ x / sqrt(mean(x²) + eps): the learned scale multiplies directly (not 1 + scale). */
static void rmsnorm(float *out, const float *x, const float *scale, int64_t n, double eps) {
    /* the sum of squares in double, in 8 independent chains (one chain of n dependent adds took ~2 us
     * per norm of 2048 on the caller's thread, every layer, while the other threads waited) */
    double part[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) part[k] += (double)x[i + k] * (double)x[i + k];
    for (; i < n; i++) part[0] += (double)x[i] * (double)x[i];
    const double ss = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    const float r = (float)(1.0 / sqrt(ss / (double)n + eps));
    for (i = 0; i < n; i++) out[i] = scale[i] * (x[i] * r);
}

/* The attention loops of the context's cache type from its ISA path's table (the seq slots share the type). */
static edge_status cpu_init(edge_context *ctx) {
    edge_cpu_state *cs = calloc(1, sizeof *cs);
    if (!cs) return edge_fail(EDGE_ERR_NOMEM, "out of memory for the CPU backend's state");
    const int t = ctx->kv.type;
    if (t >= 0 && t < EDGE_KV_TYPE_SLOTS && ctx->cpu->attn_scores[t] && ctx->cpu->attn_wsum[t]) {
        cs->attn_scores = ctx->cpu->attn_scores[t];
        cs->attn_wsum = ctx->cpu->attn_wsum[t];
    }
    ctx->backend_state = cs;
    return EDGE_OK;
}

static void cpu_free(edge_context *ctx) {
    free(ctx->backend_state);
    ctx->backend_state = NULL;
}

static edge_status cpu_begin(edge_context *ctx, const edge_seq_span *spans, int n_spans, const int32_t *tokens,
                             int64_t n) {
    const edge_model *m = ctx->model;
    const edge_model_hparams *hp = &m->hp;
    edge_run_state *s = &ctx->s;
    const int64_t d = hp->n_embd, hd = hp->head_dim, half = hd / 2;
    edge_status st;
    /* [PAD] flags in each sequence's cache: masked as keys (routed like any token) */
    for (int j = 0; j < n_spans; j++) {
        edge_seq_swap(ctx, spans[j].seq);
        for (int64_t i = spans[j].start; i < spans[j].start + spans[j].n; i++)
            ctx->is_pad[ctx->n_past + i - spans[j].start] = tokens[i] == 0;
        edge_seq_swap(ctx, spans[j].seq);
    }
    /* h = E[token] · embedding_scale (the embedding row is dequantized from its stored type) */
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *row = (const uint8_t *)m->token_embd.data + (size_t)tokens[i] * m->token_embd.row_stride;
        float *x = s->x + i * d;
        if (m->token_embd.type == EDGE_TYPE_F32) {
            memcpy(x, row, (size_t)d * sizeof(float));
        } else if ((st = edge_dequantize(m->token_embd.type, row, d, x)) != EDGE_OK) {
            return st;
        }
        const float scale = (float)hp->embedding_scale;
        for (int64_t c = 0; c < d; c++) x[c] *= scale;
    }
    /* RoPE phases for this chunk's positions (each token's in its sequence): inv_freq[j] =
     * base^(-2j/head_dim), shared by all layers */
    for (int sj = 0; sj < n_spans; sj++) {
        const int64_t n_past = spans[sj].seq == 0 ? ctx->n_past : ctx->seqs[spans[sj].seq - 1].n_past;
        for (int64_t i = spans[sj].start; i < spans[sj].start + spans[sj].n; i++) {
            const double pos = (double)(n_past + i - spans[sj].start);
            for (int64_t j = 0; j < half; j++) {
                const double theta = pos * pow(hp->rope_freq_base, -2.0 * (double)j / (double)hd);
                s->rope_cos[i * half + j] = (float)cos(theta);
                s->rope_sin[i * half + j] = (float)sin(theta);
            }
        }
    }
    return EDGE_OK;
}

/* x += rms(o) ⊙ scale, row by row (o normed in place). */
static void add_normed(edge_context *ctx, float *o, const float *scale, int64_t n) {
    const edge_model_hparams *hp = &ctx->model->hp;
    float *x = ctx->s.x;
    const int64_t d = hp->n_embd;
    for (int64_t i = 0; i < n; i++) {
        rmsnorm(o + i * d, o + i * d, scale, d, hp->rms_eps);
        for (int64_t c = 0; c < d; c++) x[i * d + c] += o[i * d + c];
    }
}

static edge_status cpu_norm(edge_context *ctx, int64_t layer, edge_norm_site site, int64_t n) {
    const edge_model_hparams *hp = &ctx->model->hp;
    const edge_layer_weights *L = &ctx->model->layers[layer];
    edge_run_state *s = &ctx->s;
    const int64_t d = hp->n_embd;
    switch (site) {
    case EDGE_NORM_ATTN_IN:
        for (int64_t i = 0; i < n; i++) rmsnorm(s->xb + i * d, s->x + i * d, L->attn_norm, d, hp->rms_eps);
        return EDGE_OK;
    case EDGE_NORM_ATTN_OUT: add_normed(ctx, s->ob, L->attn_output_norm, n); return EDGE_OK;
    case EDGE_NORM_FFN_IN:
        for (int64_t i = 0; i < n; i++) rmsnorm(s->xb + i * d, s->x + i * d, L->ffn_norm, d, hp->rms_eps);
        return EDGE_OK;
    case EDGE_NORM_FFN_OUT: add_normed(ctx, s->moe, L->layer_output_norm, n); return EDGE_OK;
    }
    return edge_fail(EDGE_ERR_INVALID_ARG, "cpu backend: unknown norm site %d", (int)site);
}

/* Router-driven expert prefetch: layer l+1's router applied to the hidden state after layer l's attention
 * (normed with layer l+1's ffn_norm) predicts the experts layer l+1 will choose, and the store starts
 * reading them while layer l's MoE computes. Uses xb and router as scratch before the MoE overwrites them:
 * the forward pass's results do not depend on it. */
static edge_status cpu_predict_experts(edge_context *ctx, int64_t next, int64_t n) {
    const edge_model_hparams *hp = &ctx->model->hp;
    const edge_layer_weights *N = &ctx->model->layers[next];
    edge_run_state *s = &ctx->s;
    const int64_t d = hp->n_embd;
    for (int64_t i = 0; i < n; i++) rmsnorm(s->xb + i * d, s->x + i * d, N->ffn_norm, d, hp->rms_eps);
    edge_status st = edge_cpu_matmul(ctx, &N->router, s->xb, n, s->router);
    if (st != EDGE_OK) return st;
    edge_experts_predict(ctx->model->experts, next, s->router, n,
                         s->pred_sel + (next & 1) * s->moe_pred_stride);
    return EDGE_OK;
}

static edge_status cpu_logits(edge_context *ctx, const uint8_t *want, int64_t first_logit, int64_t n, float *logits) {
    const edge_model *m = ctx->model;
    const edge_model_hparams *hp = &m->hp;
    edge_run_state *s = &ctx->s;
    const int64_t d = hp->n_embd;
    int64_t nl = 0; /* the wanted rows, normed into xb one after another */
    for (int64_t i = 0; i < n; i++)
        if (want ? want[i] : i >= first_logit) rmsnorm(s->xb + nl++ * d, s->x + i * d, m->output_norm, d, hp->rms_eps);
    if (nl == 0) return EDGE_OK;
    edge_mm_part out = edge_cpu_part(&m->output, s->xb, nl, logits);
    out.y_scale = (float)hp->output_scale; /* applied as each thread writes its rows */
    return edge_cpu_matmul_parts(ctx, &out, 1);
}

const edge_backend edge_cpu_backend = {
    .name = "cpu",
    .init = cpu_init,
    .free = cpu_free,
    .begin = cpu_begin,
    .norm = cpu_norm,
    .attention = edge_cpu_attention,
    .predict_experts = cpu_predict_experts,
    .moe = edge_cpu_moe,
    .logits = cpu_logits,
};
