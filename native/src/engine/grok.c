/* grok.c — the Grok-1 forward pass. Read it beside docs/grok1.md (the numerics, from xAI's model.py, which is
 * the authority where llama.cpp or other ports differ).
 *
 *   h = E[tokens] * embedding_scale
 *   per layer:  h = h + rms_1(attention(rms_0(h)))
 *               h = h + rms_3(moe(rms_2(h)))
 *   logits = rms_final(h) . E^T * output_scale          (output tied to the embedding unless `output` exists)
 *
 * Every constant comes from the model's hyperparameters (GGUF metadata, model.c). Activations are fp32;
 * the matrix products go through the kernels (edge_matmul_parts), which may quantize the activations on the
 * fly to the weight's dot-product type (Q8_0/Q8_K for quantized weights, as llama.cpp does). */
#include <math.h>
#include <stdio.h>

#include "engine/engine.h"
#include "experts/expert_store.h"

/* One product y = W x for n_tok rows of x, as a part of a run (edge_matmul_parts). */
static edge_mm_part part(const edge_matrix *w, const float *x, int64_t n_tok, float *y) {
    return (edge_mm_part){w->type, w->data, w->row_stride, w->n_rows, w->n_cols, x, n_tok, y, NULL, NULL, 1.0f};
}

/* Independent products in one pool run, with the context's preallocated scratch (no allocation here). */
static edge_status matmul_parts(edge_context *ctx, const edge_mm_part *parts, int n) {
    return edge_matmul_parts(ctx->kernels, ctx->pool, parts, n, ctx->s.scratch, ctx->s.scratch_bytes);
}

static edge_status matmul(edge_context *ctx, const edge_matrix *w, const float *x, int64_t n_tok, float *y) {
    const edge_mm_part one = part(w, x, n_tok, y);
    return matmul_parts(ctx, &one, 1);
}

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

/* jax.nn.gelu's default (approximate=True): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))). */
static inline float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

/* Rotate-half (NeoX) RoPE of one head vector in place: dimension j pairs with j + head_dim/2. */
static void rope_rotate_half(float *v, const float *cos_, const float *sin_, int64_t half) {
    for (int64_t j = 0; j < half; j++) {
        const float a = v[j], b = v[j + half];
        v[j] = a * cos_[j] - b * sin_[j];
        v[j + half] = b * cos_[j] + a * sin_[j];
    }
}

/* ------------------------------------------------------------------------------------------------ attention */

typedef struct {
    edge_context *ctx;
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
    if (ctx->attn_softcap) {
        ctx->attn_exp(scores, pos + 1, ctx->attn_softcap(scores, pos + 1, mult, cap));
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
            ctx->attn_scores_multi(qt, (int)rows, krows + head_bytes * (size_t)g, kv_stride, last + 1, hd, scores, ss);
            for (int64_t i = 0; i < nt; i++) {
                const int64_t pos = ctx->n_past + i0 + i;
                const bool mask_pads = any_real_key(ctx, pos);
                for (int64_t r = 0; r < nh; r++) {
                    float *p = scores + (size_t)(i * nh + r) * ss;
                    head_softmax(ctx, p, mask_pads, pos);
                    for (int64_t t = pos + 1; t <= last; t++) p[t] = 0.0f;
                }
            }
            ctx->attn_wsum_multi(ot, (int)rows, scores, ss, vrows + head_bytes * (size_t)g, kv_stride, last + 1, hd);
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
            if (ctx->attn_scores_multi)
                ctx->attn_scores_multi(q, 1, krows + head_bytes * (size_t)g, kv_stride, pos + 1, hd, scores, 0);
            else
                head_scores(ctx, q, krows, g, pos, row, scores);
            head_softmax(ctx, scores, mask_pads, pos);
            if (ctx->attn_wsum_multi)
                ctx->attn_wsum_multi(out, 1, scores, 0, vrows + head_bytes * (size_t)g, kv_stride, pos + 1, hd);
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
        if (job->ctx->attn_scores_multi)
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
    attention_job job = {ctx, layer, n, units, 0};
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

static edge_status attention(edge_context *ctx, const edge_layer_weights *L, int64_t layer, const edge_seq_span *spans,
                             int n_spans, int64_t n) {
    edge_run_state *s = &ctx->s;
    edge_status st;
    /* q = x·Wq, k = x·Wk, v = x·Wv (no biases): one run over every sequence's tokens, x converted once per
     * weight type */
    const edge_mm_part qkv[3] = {part(&L->wq, s->xb, n, s->q), part(&L->wk, s->xb, n, s->k), part(&L->wv, s->xb, n, s->v)};
    if ((st = matmul_parts(ctx, qkv, 3)) != EDGE_OK) return st;
    for (int j = 0; j < n_spans; j++) attention_span(ctx, layer, &spans[j]);
    /* o·Wo */
    return matmul(ctx, &L->wo, s->att, n, s->ob);
}

/* ------------------------------------------------------------------------------------------------ MoE */

/* The portable expert activation: h = gelu(h) ⊙ u. */
void edge_gelu_mul_scalar(float *h, const float *u, int64_t n) {
    for (int64_t r = 0; r < n; r++) h[r] = gelu_tanh(h[r]) * u[r];
}

/* The experts of one pack: tile t is expert tile_expert[t] (its gate, up and down matrices tw[t], from the
 * expert store) on the pack's rows tile_start[t] .. the next tile's start (rows[] gives each row's token,
 * rows_gate[] its gate). */
static edge_status moe_pack(edge_context *ctx, const edge_matrix *(*tw)[3], int64_t used, int64_t n_tiles) {
    const edge_model_hparams *hp = &ctx->model->hp;
    edge_run_state *s = &ctx->s;
    const int64_t d = hp->n_embd, nff = hp->n_ff;
    edge_mm_part gate_up[EDGE_MM_MAX_PARTS], down[EDGE_MM_MAX_PARTS / 2];
    edge_status st;
    for (int64_t r = 0; r < used; r++) memcpy(s->xg + r * d, s->xb + (int64_t)s->rows[r] * d, (size_t)d * sizeof(float));
    /* y_e = (gelu(x·W1) ⊙ (x·V))·W2: the gate and up products of every tile in one run, then the down ones */
    for (int64_t t = 0; t < n_tiles; t++) {
        const int64_t r0 = s->tile_start[t], mt = (t + 1 < n_tiles ? s->tile_start[t + 1] : used) - r0;
        gate_up[2 * t] = part(tw[t][0], s->xg + r0 * d, mt, s->hg + r0 * nff);
        gate_up[2 * t + 1] = part(tw[t][1], s->xg + r0 * d, mt, s->hu + r0 * nff);
        down[t] = part(tw[t][2], s->hg + r0 * nff, mt, s->yo + r0 * d);
        down[t].pre = ctx->gelu_mul;
        down[t].pre_u = s->hu + r0 * nff;
    }
    if ((st = matmul_parts(ctx, gate_up, (int)(2 * n_tiles))) != EDGE_OK) return st;
    if ((st = matmul_parts(ctx, down, (int)n_tiles)) != EDGE_OK) return st;
    /* moe(x) += p_e · y_e, row by row in pack order: each token's experts in ascending order */
    for (int64_t r = 0; r < used; r++) {
        float *dst = s->moe + (int64_t)s->rows[r] * d;
        const float gate = s->rows_gate[r];
        for (int64_t c = 0; c < d; c++) dst[c] += gate * s->yo[r * d + c];
    }
    return EDGE_OK;
}

static edge_status moe(edge_context *ctx, const edge_layer_weights *L, int64_t layer, int64_t n, bool predicted) {
    const edge_model_hparams *hp = &ctx->model->hp;
    edge_run_state *s = &ctx->s;
    const int64_t d = hp->n_embd, ne = hp->n_expert, k = hp->n_expert_used;
    edge_status st;
    /* router: p = softmax(x·Wr) over all experts, fp32 */
    if ((st = matmul(ctx, &L->router, s->xb, n, s->router)) != EDGE_OK) return st;
    for (int64_t i = 0; i < n; i++) {
        float *p = s->router + i * ne;
        float max = -INFINITY;
        for (int64_t e = 0; e < ne; e++) max = p[e] > max ? p[e] : max;
        float sum = 0.0f;
        for (int64_t e = 0; e < ne; e++) sum += (p[e] = expf(p[e] - max));
        for (int64_t e = 0; e < ne; e++) p[e] /= sum;
        /* top-k by p; the gates are the probabilities themselves, NOT renormalized over the k */
        for (int64_t j = 0; j < k; j++) {
            int32_t best = -1;
            for (int64_t e = 0; e < ne; e++) {
                bool taken = false;
                for (int64_t jj = 0; jj < j; jj++) taken |= s->sel[i * k + jj] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = (int32_t)e;
            }
            s->sel[i * k + j] = best;
            s->sel_gate[i * k + j] = p[best];
        }
    }
    edge_experts_observe(ctx->model->experts, layer, ctx->n_past, n, s->sel, s->sel_gate,
                         predicted ? s->pred_sel + (layer & 1) * s->moe_pred_stride : NULL);
    memset(s->moe, 0, (size_t)(n * d) * sizeof(float));
    /* Each expert runs on the rows of the tokens that chose it; unselected experts are never touched. The
     * (expert, rows) tiles are run in packs that fill the moe_tile-row buffers: one run for the gate and up
     * products of the whole pack, one for its down products (the GELU applied as their inputs are
     * converted). Decode's two experts are one pack. The chosen experts come from the expert store, in
     * ascending order, in groups of at most its capacity (all of them without a cache): each is read at
     * most once per batch, and a group's last pack is run before its experts are released. Every row's
     * result and every token's sum (its experts in ascending order) are the same bits whatever the groups. */
    int32_t chosen[1024];
    int64_t n_chosen = 0;
    for (int64_t e = 0; e < ne; e++)
        for (int64_t i = 0; i < n; i++) {
            bool hit = false;
            for (int64_t j = 0; j < k; j++) hit |= s->sel[i * k + j] == e;
            if (hit) { /* [PAD] too: the official MoE ignores the padding mask */
                chosen[n_chosen++] = (int32_t)e;
                break;
            }
        }
    const int64_t cap = edge_experts_group_capacity(ctx->model->experts);
    const edge_matrix *gw[1024][3];
    const edge_matrix *tw[EDGE_MM_MAX_PARTS / 2][3];
    for (int64_t g0 = 0; g0 < n_chosen; g0 += cap) {
        const int64_t gn = n_chosen - g0 < cap ? n_chosen - g0 : cap;
        if ((st = edge_experts_acquire(ctx->model->experts, layer, chosen + g0, gn, gw)) != EDGE_OK) return st;
        int64_t used = 0, n_tiles = 0; /* rows and tiles in the pack */
        for (int64_t g = 0; g < gn && st == EDGE_OK; g++) {
            const int32_t e = chosen[g0 + g];
            for (int64_t i = 0; i < n && st == EDGE_OK;) {
                const int64_t start = used;
                for (; i < n && used < s->moe_tile; i++)
                    for (int64_t j = 0; j < k; j++)
                        if (s->sel[i * k + j] == e) {
                            s->rows[used] = (int32_t)i;
                            s->rows_gate[used] = s->sel_gate[i * k + j];
                            used++;
                        }
                if (used > start) {
                    s->tile_expert[n_tiles] = e;
                    memcpy(tw[n_tiles], gw[g], sizeof gw[g]);
                    s->tile_start[n_tiles++] = start;
                }
                if (used == s->moe_tile || n_tiles == s->moe_max_tiles) {
                    st = moe_pack(ctx, tw, used, n_tiles);
                    used = n_tiles = 0;
                }
            }
        }
        if (st == EDGE_OK && used > 0) st = moe_pack(ctx, tw, used, n_tiles);
        edge_experts_release(ctx->model->experts, layer, chosen + g0, gn);
        if (st != EDGE_OK) return st;
    }
    return EDGE_OK;
}

/* Router-driven expert prefetch: layer l+1's router applied to the hidden state after layer l's attention
 * (normed with layer l+1's ffn_norm) predicts the experts layer l+1 will choose, and the store starts
 * reading them while layer l's MoE computes. Uses xb and router as scratch before moe() overwrites them:
 * the forward pass's results do not depend on it. */
static edge_status predict_next_experts(edge_context *ctx, int64_t next, int64_t n) {
    const edge_model_hparams *hp = &ctx->model->hp;
    const edge_layer_weights *N = &ctx->model->layers[next];
    edge_run_state *s = &ctx->s;
    const int64_t d = hp->n_embd;
    for (int64_t i = 0; i < n; i++) rmsnorm(s->xb + i * d, s->x + i * d, N->ffn_norm, d, hp->rms_eps);
    edge_status st = matmul(ctx, &N->router, s->xb, n, s->router);
    if (st != EDGE_OK) return st;
    edge_experts_predict(ctx->model->experts, next, s->router, n,
                         s->pred_sel + (next & 1) * s->moe_pred_stride);
    return EDGE_OK;
}

/* ------------------------------------------------------------------------------------------------ forward */

edge_status edge_grok_forward(edge_context *ctx, const int32_t *tokens, int64_t n, float *logits,
                              int64_t first_logit) {
    const edge_seq_span one = {0, 0, n};
    return edge_grok_forward_spans(ctx, &one, 1, tokens, n, NULL, first_logit, logits);
}

edge_status edge_grok_forward_spans(edge_context *ctx, const edge_seq_span *spans, int n_spans, const int32_t *tokens,
                                    int64_t n, const uint8_t *want, int64_t first_logit, float *logits) {
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
    /* 1. h = E[token] · embedding_scale (the embedding row is dequantized from its stored type) */
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

    /* 2. the decoder layers (a cancel request, edge_context_set_cancel, is honoured before each) */
    bool predict_next = false; /* whether pred_sel holds this layer's predicted experts */
    for (int64_t l = 0; l < hp->n_layer; l++) {
        if (atomic_load_explicit(&ctx->cancel, memory_order_acquire))
            return edge_fail(EDGE_ERR_CANCELLED, "evaluation cancelled before layer %lld of %lld", (long long)l,
                             (long long)hp->n_layer);
        const edge_layer_weights *L = &m->layers[l];
        /* h = h + rms_1(attention(rms_0(h))) */
        for (int64_t i = 0; i < n; i++) rmsnorm(s->xb + i * d, s->x + i * d, L->attn_norm, d, hp->rms_eps);
        if ((st = attention(ctx, L, l, spans, n_spans, n)) != EDGE_OK) return st;
        for (int64_t i = 0; i < n; i++) {
            rmsnorm(s->ob + i * d, s->ob + i * d, L->attn_output_norm, d, hp->rms_eps);
            for (int64_t c = 0; c < d; c++) s->x[i * d + c] += s->ob[i * d + c];
        }
        /* h = h + rms_3(moe(rms_2(h))); layer l+1's experts predicted first (expert prefetch) */
        const bool predicted = predict_next;
        predict_next = l + 1 < hp->n_layer && edge_experts_wants_prediction(m->experts);
        if (predict_next && (st = predict_next_experts(ctx, l + 1, n)) != EDGE_OK) return st;
        for (int64_t i = 0; i < n; i++) rmsnorm(s->xb + i * d, s->x + i * d, L->ffn_norm, d, hp->rms_eps);
        if ((st = moe(ctx, L, l, n, predicted)) != EDGE_OK) return st;
        for (int64_t i = 0; i < n; i++) {
            rmsnorm(s->moe + i * d, s->moe + i * d, L->layer_output_norm, d, hp->rms_eps);
            for (int64_t c = 0; c < d; c++) s->x[i * d + c] += s->moe[i * d + c];
        }
    }

    /* 3. logits = rms_final(h) · Eᵀ · output_scale, only for the rows the caller wants */
    int64_t nl = 0; /* the wanted rows, normed into xb one after another */
    for (int64_t i = 0; logits && i < n; i++)
        if (want ? want[i] : i >= first_logit) rmsnorm(s->xb + nl++ * d, s->x + i * d, m->output_norm, d, hp->rms_eps);
    if (nl > 0) {
        edge_mm_part out = part(&m->output, s->xb, nl, logits);
        out.y_scale = (float)hp->output_scale; /* applied as each thread writes its rows */
        if ((st = matmul_parts(ctx, &out, 1)) != EDGE_OK) return st;
    }
    return EDGE_OK;
}
