/* cpu_attention.c — the CPU backend's attention sublayer: q, k, v products, rotate-half RoPE, the cache
 * append, causal attention per query head over each sequence's cache ([PAD] keys masked, scores times the
 * attention multiplier, cap·tanh(s/cap), softmax in fp32) and the output product. The loops for the CPU and
 * cache type come from the dispatch table (ctx->cpu, chosen once per context in edge_cpu_state). */
#include <math.h>

#include "engine/cpu_backend.h"

/* Rotate-half (NeoX) RoPE of one head vector in place: dimension j pairs with j + head_dim/2. */
static void rope_rotate_half(float *v, const float *cos_, const float *sin_, int64_t half) {
    for (int64_t j = 0; j < half; j++) {
        const float a = v[j], b = v[j + half];
        v[j] = a * cos_[j] - b * sin_[j];
        v[j + half] = b * cos_[j] + a * sin_[j];
    }
}

typedef struct {
    edge_context *ctx;
    const edge_cpu_state *cs; /* the attention loops */
    int64_t layer, n;
    int64_t n_units;       /* ranges of query heads, every token of each (attention_worker) */
    _Atomic int64_t next;  /* the next unit to claim */
} attention_job;

/* Raw scores q·k of one head against the cached keys 0..pos (KV head g), the portable way. */
static void head_scores(edge_context *ctx, const float *q, const uint8_t *krows, int64_t g, int64_t pos, float *row,
                        float *scores) {
    const int64_t hd = ctx->model->hp.head_dim;
    for (int64_t t = 0; t <= pos; t++) {
        edge_kv_load(&ctx->kv, krows + (size_t)t * ctx->kv.row_bytes, g * hd, hd, row, ctx->f16_table);
        float dot = 0.0f;
        for (int64_t j = 0; j < hd; j++) dot += q[j] * row[j];
        scores[t] = dot;
    }
}

/* Raw scores to probabilities in place: [PAD] keys masked, s = (q·k) * attn_output_multiplier, then
 * cap·tanh(s/cap), softmax in fp32. */
static void head_softmax(edge_context *ctx, float *scores, bool mask_pads, int64_t pos) {
    const edge_model_hparams *hp = &ctx->model->hp;
    const float mult = (float)hp->attn_output_multiplier, cap = (float)hp->attn_logit_softcap;
    /* (memchr first: a key-by-key test of every row took 2/3 of this function's time on an 8000-token
     * prompt without any [PAD]) */
    if (mask_pads && memchr(ctx->is_pad, 1, (size_t)pos + 1))
        for (int64_t t = 0; t <= pos; t++)
            if (ctx->is_pad[t]) scores[t] = -INFINITY;
    if (ctx->cpu->attn_softcap) {
        ctx->cpu->attn_exp(scores, pos + 1, ctx->cpu->attn_softcap(scores, pos + 1, mult, cap));
        return;
    }
    float max = -INFINITY, sum = 0.0f;
    for (int64_t t = 0; t <= pos; t++) {
        if (scores[t] == -INFINITY) continue;
        float sc = scores[t] * mult;
        if (cap > 0.0f) sc = cap * tanhf(sc / cap);
        scores[t] = sc;
        if (sc > max) max = sc;
    }
    for (int64_t t = 0; t <= pos; t++) {
        scores[t] = expf(scores[t] - max);
        sum += scores[t];
    }
    const float inv = 1.0f / sum;
    for (int64_t t = 0; t <= pos; t++) scores[t] *= inv;
}

/* o = p · v of one head (KV head g) into out, the portable way: one pass over the value rows. */
static void head_wsum(edge_context *ctx, const float *p, const uint8_t *vrows, int64_t g, int64_t pos, float *row,
                      float *out) {
    const int64_t hd = ctx->model->hp.head_dim;
    for (int64_t j = 0; j < hd; j++) out[j] = 0.0f;
    for (int64_t t = 0; t <= pos; t++) {
        if (p[t] == 0.0f) continue; /* masked (or underflowed) keys add nothing */
        edge_kv_load(&ctx->kv, vrows + (size_t)t * ctx->kv.row_bytes, g * hd, hd, row, ctx->f16_table);
        for (int64_t j = 0; j < hd; j++) out[j] += p[t] * row[j];
    }
}

/* Whether any key of 0..pos is not [PAD] (official input_mask = tokens > 0): then the [PAD] keys are
 * masked; when every key so far is [PAD] the official softmax over all -1e30 is uniform, here over the
 * causal keys 0..pos. */
static bool any_real_key(const edge_context *ctx, int64_t pos) {
    for (int64_t t = 0; t <= pos; t++)
        if (!ctx->is_pad[t]) return true;
    return false;
}

/* The worker's query heads h0 .. h1-1 where the cache type has the multi-row loops: the heads of one KV
 * head together, for tiles of tokens (as many as EDGE_ATTN_TILE_ROWS rows hold), so each cached row comes
 * from memory once per tile, not once per head and token. Each row is scored against the keys up to the
 * tile's last position; its own softmax covers its causal keys 0..pos, the later ones get probability 0
 * and add nothing (the loops skip p == 0): every row's result is bit for bit the one of its token and
 * head alone. */
static void attention_tiles(const attention_job *job, int ith, int64_t h0, int64_t h1) {
    edge_context *ctx = job->ctx;
    const edge_model_hparams *hp = &ctx->model->hp;
    edge_run_state *s = &ctx->s;
    const int64_t hd = hp->head_dim, nq = hp->n_head * hd, group = hp->n_head / hp->n_head_kv;
    const size_t ss = edge_attn_score_stride(ctx->kv.n_ctx), kv_stride = ctx->kv.row_bytes;
    const size_t head_bytes = kv_stride / (size_t)hp->n_head_kv; /* one KV head's slice of a row */
    const uint8_t *krows = edge_kv_row(&ctx->kv, ctx->kv.k, job->layer, 0); /* position t: + t * kv_stride */
    const uint8_t *vrows = edge_kv_row(&ctx->kv, ctx->kv.v, job->layer, 0);
    float *scores = s->scores + (size_t)ith * EDGE_ATTN_TILE_ROWS * ss;
    float *qt = s->qtile + (size_t)ith * EDGE_ATTN_TILE_ROWS * (size_t)hd;
    float *ot = s->otile + (size_t)ith * EDGE_ATTN_TILE_ROWS * (size_t)hd;
    const size_t head_floats = (size_t)hd * sizeof(float);
    for (int64_t h = h0; h < h1;) {
        const int64_t g = h / group, end = (g + 1) * group < h1 ? (g + 1) * group : h1;
        const int64_t nh = end - h < EDGE_ATTN_TILE_ROWS ? end - h : EDGE_ATTN_TILE_ROWS; /* heads h .. h+nh-1 */
        const int64_t tile = EDGE_ATTN_TILE_ROWS / nh;                                     /* tokens per tile */
        for (int64_t i0 = 0; i0 < job->n; i0 += tile) {
            const int64_t nt = job->n - i0 < tile ? job->n - i0 : tile, rows = nt * nh;
            const int64_t last = ctx->n_past + i0 + nt - 1; /* the tile's last position */
            for (int64_t i = 0; i < nt; i++) /* row i * nh + r: token i0 + i, head h + r */
                memcpy(qt + i * nh * hd, s->q + (i0 + i) * nq + h * hd, (size_t)nh * head_floats);
            job->cs->attn_scores(qt, (int)rows, krows + head_bytes * (size_t)g, kv_stride, last + 1, hd, scores, ss);
            for (int64_t i = 0; i < nt; i++) {
                const int64_t pos = ctx->n_past + i0 + i;
                const bool mask_pads = any_real_key(ctx, pos);
                for (int64_t r = 0; r < nh; r++) {
                    float *p = scores + (size_t)(i * nh + r) * ss;
                    head_softmax(ctx, p, mask_pads, pos);
                    for (int64_t t = pos + 1; t <= last; t++) p[t] = 0.0f;
                }
            }
            job->cs->attn_wsum(ot, (int)rows, scores, ss, vrows + head_bytes * (size_t)g, kv_stride, last + 1, hd);
            for (int64_t i = 0; i < nt; i++) /* the heads' outputs are adjacent in att */
                memcpy(s->att + (i0 + i) * nq + h * hd, ot + i * nh * hd, (size_t)nh * head_floats);
        }
        h += nh;
    }
}

/* Query heads h0 .. h1-1 of every token, the portable way (or one head at a time with the SIMD loops where
 * the tiles do not apply): causal attention over the cached positions 0..pos. */
static void attention_heads(const attention_job *job, int ith, int64_t h0, int64_t h1) {
    edge_context *ctx = job->ctx;
    const edge_model_hparams *hp = &ctx->model->hp;
    edge_run_state *s = &ctx->s;
    const int64_t hd = hp->head_dim, nq = hp->n_head * hd;
    const int64_t group = hp->n_head / hp->n_head_kv; /* query head h uses KV head h / group */
    const size_t kv_stride = ctx->kv.row_bytes;
    float *scores = s->scores + (size_t)ith * EDGE_ATTN_TILE_ROWS * edge_attn_score_stride(ctx->kv.n_ctx);
    float *row = s->kvrow + (size_t)ith * (size_t)hd;
    const size_t head_bytes = kv_stride / (size_t)hp->n_head_kv; /* one KV head's slice of a row */
    const uint8_t *krows = edge_kv_row(&ctx->kv, ctx->kv.k, job->layer, 0); /* position t: + t * kv_stride */
    const uint8_t *vrows = edge_kv_row(&ctx->kv, ctx->kv.v, job->layer, 0);
    for (int64_t i = 0; i < job->n; i++)
        for (int64_t h = h0; h < h1; h++) {
            const int64_t g = h / group, pos = ctx->n_past + i;
            const float *q = s->q + i * nq + h * hd;
            float *out = s->att + i * nq + h * hd;
            const bool mask_pads = any_real_key(ctx, pos);
            if (job->cs->attn_scores)
                job->cs->attn_scores(q, 1, krows + head_bytes * (size_t)g, kv_stride, pos + 1, hd, scores, 0);
            else
                head_scores(ctx, q, krows, g, pos, row, scores);
            head_softmax(ctx, scores, mask_pads, pos);
            if (job->cs->attn_wsum)
                job->cs->attn_wsum(out, 1, scores, 0, vrows + head_bytes * (size_t)g, kv_stride, pos + 1, hd);
            else
                head_wsum(ctx, scores, vrows, g, pos, row, out);
        }
}

/* Every worker that runs: claims ranges of query heads (every token of each) from one counter until none is
 * left (edge_threadpool_run_any), so a worker the OS has not scheduled yet holds up nothing: the others take
 * its share. A unit is a KV head's group of query heads, or an equal part of one where there are fewer
 * groups than threads (the tiles read each cached row once for the unit's heads). ith only picks the
 * worker's scratch rows. Every (token, head) gets bit for bit the same result however the heads are split. */
static void attention_worker(void *arg, int ith, int nth) {
    (void)nth;
    attention_job *job = arg;
    const edge_model_hparams *hp = &job->ctx->model->hp;
    for (int64_t u = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed); u < job->n_units;
         u = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed)) {
        const int64_t h0 = hp->n_head * u / job->n_units, h1 = hp->n_head * (u + 1) / job->n_units;
        if (job->cs->attn_scores)
            attention_tiles(job, ith, h0, h1);
        else
            attention_heads(job, ith, h0, h1);
    }
}

/* RoPE, the cache append and causal attention of the n tokens of the context's current sequence, their
 * q, k, v, att and RoPE rows at the start of the run state's buffers (attention_span moves them there). */
static void attention_seq(edge_context *ctx, int64_t layer, int64_t n) {
    const edge_model_hparams *hp = &ctx->model->hp;
    edge_run_state *s = &ctx->s;
    const int64_t hd = hp->head_dim, half = hd / 2, nq = hp->n_head * hd, nkv = hp->n_head_kv * hd;
    for (int64_t i = 0; i < n; i++) {
        /* RoPE (rotate-half) on every q and k head at position n_past + i */
        const float *c = s->rope_cos + i * half, *sn = s->rope_sin + i * half;
        for (int64_t h = 0; h < hp->n_head; h++) rope_rotate_half(s->q + i * nq + h * hd, c, sn, half);
        for (int64_t h = 0; h < hp->n_head_kv; h++) rope_rotate_half(s->k + i * nkv + h * hd, c, sn, half);
        /* append k, v to the cache */
        edge_kv_cache_store(&ctx->kv, ctx->kv.k, layer, ctx->n_past + i, s->k + i * nkv);
        edge_kv_cache_store(&ctx->kv, ctx->kv.v, layer, ctx->n_past + i, s->v + i * nkv);
    }
    /* units: every KV head's group of query heads, split in as many parts as it takes to give every
     * thread one (each part still reads the cached rows once for its heads) */
    const int64_t parts = (ctx->n_threads + hp->n_head_kv - 1) / hp->n_head_kv;
    const int64_t units = hp->n_head_kv * parts < hp->n_head ? hp->n_head_kv * parts : hp->n_head;
    attention_job job = {ctx, ctx->backend_state, layer, n, units, 0};
    atomic_init(&job.next, 0);
    edge_threadpool_run_any(ctx->pool, attention_worker, &job);
}

/* attention_seq for one span of a pass: its sequence made current and the buffers' rows offset to the
 * span's first token, both restored after. */
static void attention_span(edge_context *ctx, int64_t layer, const edge_seq_span *sp) {
    const edge_model_hparams *hp = &ctx->model->hp;
    edge_run_state *s = &ctx->s;
    const int64_t hd = hp->head_dim, nq = hp->n_head * hd, nkv = hp->n_head_kv * hd, i0 = sp->start;
    const edge_run_state saved = *s;
    s->q += i0 * nq;
    s->att += i0 * nq;
    s->k += i0 * nkv;
    s->v += i0 * nkv;
    s->rope_cos += i0 * (hd / 2);
    s->rope_sin += i0 * (hd / 2);
    edge_seq_swap(ctx, sp->seq);
    attention_seq(ctx, layer, sp->n);
    edge_seq_swap(ctx, sp->seq);
    *s = saved;
}

edge_status edge_cpu_attention(edge_context *ctx, int64_t layer, const edge_seq_span *spans, int n_spans, int64_t n) {
    const edge_layer_weights *L = &ctx->model->layers[layer];
    edge_run_state *s = &ctx->s;
    edge_status st;
    /* q = x·Wq, k = x·Wk, v = x·Wv (no biases): one run over every sequence's tokens, x converted once per
     * weight type */
    const edge_mm_part qkv[3] = {edge_cpu_part(&L->wq, s->xb, n, s->q), edge_cpu_part(&L->wk, s->xb, n, s->k),
                                 edge_cpu_part(&L->wv, s->xb, n, s->v)};
    if ((st = edge_cpu_matmul_parts(ctx, qkv, 3)) != EDGE_OK) return st;
    for (int j = 0; j < n_spans; j++) attention_span(ctx, layer, &spans[j]);
    /* o·Wo */
    return edge_cpu_matmul(ctx, &L->wo, s->att, n, s->ob);
}
