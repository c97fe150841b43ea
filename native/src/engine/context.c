/* context.c — the public context API: creation (every buffer allocated here, never in the token loop),
 * evaluation in n_batch chunks, truncation, and KV-cache state save/restore. */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "blocks.h"
#include "engine/backend.h"
#include "engine/device.h"
#include "engine/engine.h"

EDGE_API edge_status edge_context_default_params(edge_context_params *out) {
    if (!out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_default_params: NULL argument");
    out->n_ctx = 8192;
    out->n_batch = 512;
    out->n_threads = 0;
    out->kv_type = EDGE_TYPE_F16;
    out->isa = EDGE_ISA_AUTO;
    out->n_seq = 1;
    out->device = EDGE_DEVICE_AUTO;
    out->gpu_memory = 0;
    return EDGE_OK;
}

static void *alloc_floats(int64_t n, bool *ok) {
    void *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) *ok = false;
    return p;
}

static void free_state(edge_run_state *s) {
    void *bufs[] = {s->x,      s->xb,     s->q,    s->k,    s->v,         s->att,  s->ob,       s->rope_cos,
                    s->rope_sin, s->scores, s->qtile, s->otile, s->kvrow, s->router, s->sel, s->sel_gate, s->rows,
                    s->rows_gate, s->xg,    s->hg,   s->hu,   s->yo,     s->moe,  s->scratch, s->tile_expert,
                    s->tile_start, s->pred_sel};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    memset(s, 0, sizeof *s);
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* The largest scratch any matrix product of a forward pass of up to n_tok tokens needs: q, k and v in one
 * run; experts in packs of up to n_tiles tiles holding n_exp_tok rows in all (cpu_moe.c). */
static size_t scratch_for(const edge_model *m, int64_t n_tok, int64_t n_exp_tok, int n_tiles) {
    size_t need = edge_matmul_scratch_bytes(m->output.type, m->output.n_cols, n_tok);
    for (int64_t l = 0; l < m->hp.n_layer; l++) {
        const edge_layer_weights *L = &m->layers[l];
        need = max_size(need, edge_matmul_scratch_bytes(L->wq.type, L->wq.n_cols, n_tok) +
                                  edge_matmul_scratch_bytes(L->wk.type, L->wk.n_cols, n_tok) +
                                  edge_matmul_scratch_bytes(L->wv.type, L->wv.n_cols, n_tok));
        need = max_size(need, edge_matmul_scratch_bytes(L->wo.type, L->wo.n_cols, n_tok));
        need = max_size(need, edge_matmul_scratch_bytes(L->router.type, L->router.n_cols, n_tok));
        for (int64_t e = 0; e < m->hp.n_expert; e++) {
            need = max_size(need, edge_matmul_split_scratch_bytes(L->gate[e].type, L->gate[e].n_cols, n_exp_tok, n_tiles) +
                                      edge_matmul_split_scratch_bytes(L->up[e].type, L->up[e].n_cols, n_exp_tok, n_tiles));
            need = max_size(need, edge_matmul_split_scratch_bytes(L->down[e].type, L->down[e].n_cols, n_exp_tok, n_tiles));
        }
    }
    return need;
}

/* Weight bytes one decoded token reads: every layer's attention products and router, n_expert_used
 * experts' three products (the largest, as an upper bound), and the output projection. */
static double token_weight_bytes(const edge_model *m) {
    double bytes = (double)m->output.n_rows * (double)m->output.row_stride;
    for (int64_t l = 0; l < m->hp.n_layer; l++) {
        const edge_layer_weights *L = &m->layers[l];
        const edge_matrix *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->router};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
            bytes += (double)mats[i]->n_rows * (double)mats[i]->row_stride;
        double expert = 0.0;
        for (int64_t e = 0; e < m->hp.n_expert; e++) {
            const double b = (double)L->gate[e].n_rows * (double)L->gate[e].row_stride +
                             (double)L->up[e].n_rows * (double)L->up[e].row_stride +
                             (double)L->down[e].n_rows * (double)L->down[e].row_stride;
            expert = b > expert ? b : expert;
        }
        bytes += expert * (double)m->hp.n_expert_used;
    }
    return bytes;
}

/* The default thread count (n_threads 0): one per core, but no more than the work per token keeps busy.
 * A decoded token whose weights take less than ~DEFAULT_THREAD_BYTES per thread finishes in well under a
 * millisecond on one core; splitting it buys little when the machine is idle and costs ~10x when another
 * process holds a core, since each product then waits for a worker the OS runs milliseconds late
 * (bench/contention.py: the shipped demo model, 1,800 tok/s on one thread against 175 on two). */
#define DEFAULT_THREAD_BYTES (16.0 * 1024 * 1024)
int edge_default_threads(const edge_model *m, int n_cores) {
    const double per_thread = token_weight_bytes(m) / DEFAULT_THREAD_BYTES;
    int n = per_thread < 1.0 ? 1 : per_thread > (double)n_cores ? n_cores : (int)per_thread;
    return n < 1 ? 1 : n;
}

/* The cores this process may run on: the affinity mask's (taskset, a cgroup cpuset) where it is smaller
 * than the online count. */
static int usable_cores(int online) {
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0 && n < online) return n;
    }
#endif
    return online;
}

EDGE_API edge_status edge_context_create(edge_model *model, const edge_context_params *params, edge_context **out) {
    if (!model || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_create: NULL argument");
    *out = NULL;
    edge_context_params p;
    edge_context_default_params(&p);
    if (params) p = *params;
    const edge_model_hparams *hp = &model->hp;
    if (p.n_ctx <= 0 || p.n_ctx > hp->n_ctx_train)
        return edge_fail(EDGE_ERR_RANGE, "%s: n_ctx %lld must be in 1..%lld (the model's context length)", model->path,
                         (long long)p.n_ctx, (long long)hp->n_ctx_train);
    if (p.n_batch <= 0) return edge_fail(EDGE_ERR_INVALID_ARG, "n_batch %lld must be positive", (long long)p.n_batch);
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
    if (p.n_threads < 0 || p.n_threads > 1024)
        return edge_fail(EDGE_ERR_INVALID_ARG, "n_threads %d must be in 0..1024", p.n_threads);
    if (p.n_seq == 0) p.n_seq = 1;
    if (p.n_seq < 0 || p.n_seq > 1024)
        return edge_fail(EDGE_ERR_INVALID_ARG, "n_seq %d must be in 0..1024", p.n_seq);
    if (p.kv_type == EDGE_TYPE_Q8_0 && hp->head_dim % QK8_0 != 0)
        return edge_fail(EDGE_ERR_UNSUPPORTED, "%s: a Q8_0 KV cache needs head_dim (%lld) divisible by 32", model->path,
                         (long long)hp->head_dim);

    edge_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return edge_fail(EDGE_ERR_NOMEM, "out of memory for a context");
    ctx->model = model;
    atomic_init(&ctx->cancel, 0);
    edge_status st;
    /* the pool detects the CPU once (n_threads 0: one per core); the context's paths come from it */
    if (p.n_threads == 0) {
        edge_cpu_features cores;
        if ((st = edge_cpu_detect(&cores)) != EDGE_OK) goto fail;
        p.n_threads = edge_default_threads(model, usable_cores(cores.n_cores > 0 ? cores.n_cores : 1));
    }
    if ((st = edge_threadpool_create(p.n_threads, &ctx->pool)) != EDGE_OK) goto fail;
    const edge_cpu_features *cpu = edge_threadpool_cpu(ctx->pool);
    ctx->cpu = edge_cpu_kernels_for(p.isa, cpu);
    if (!ctx->cpu) {
        st = edge_fail(EDGE_ERR_UNSUPPORTED, "kernel path %d is not available on this CPU or build", p.isa);
        goto fail;
    }
    ctx->kernels = ctx->cpu->matmul;
    ctx->n_threads = edge_threadpool_size(ctx->pool);
    p.n_threads = ctx->n_threads;
    ctx->params = p;
    if ((st = edge_kv_cache_init(&ctx->kv, p.kv_type, hp->n_layer, p.n_ctx, hp->n_head_kv * hp->head_dim)) != EDGE_OK)
        goto fail;
    if ((st = edge_seq_slots_create(ctx, p.n_seq)) != EDGE_OK) goto fail;

    const int64_t B = p.n_batch, d = hp->n_embd, hd = hp->head_dim, nq = hp->n_head * hd,
                  nkv = hp->n_head_kv * hd, T = ctx->n_threads;
    edge_run_state *s = &ctx->s;
    bool ok = true;
    s->x = alloc_floats(B * d, &ok);
    s->xb = alloc_floats(B * d, &ok);
    s->q = alloc_floats(B * nq, &ok);
    s->k = alloc_floats(B * nkv, &ok);
    s->v = alloc_floats(B * nkv, &ok);
    s->att = alloc_floats(B * nq, &ok);
    s->ob = alloc_floats(B * d, &ok);
    s->rope_cos = alloc_floats(B * hd / 2, &ok);
    s->rope_sin = alloc_floats(B * hd / 2, &ok);
    s->scores = alloc_floats(T * EDGE_ATTN_TILE_ROWS * (int64_t)edge_attn_score_stride(p.n_ctx), &ok);
    s->qtile = alloc_floats(T * EDGE_ATTN_TILE_ROWS * hd, &ok);
    s->otile = alloc_floats(T * EDGE_ATTN_TILE_ROWS * hd, &ok);
    s->kvrow = alloc_floats(T * hd, &ok);
    s->router = alloc_floats(B * hp->n_expert, &ok);
    s->sel = alloc_floats(B * hp->n_expert_used, &ok);
    s->sel_gate = alloc_floats(B * hp->n_expert_used, &ok);
    s->moe_pred_stride = B * hp->n_expert_used;
    s->pred_sel = alloc_floats(2 * s->moe_pred_stride, &ok);
    s->moe_tile = B < EDGE_MOE_TILE ? B : EDGE_MOE_TILE;
    s->rows = alloc_floats(s->moe_tile, &ok);
    s->rows_gate = alloc_floats(s->moe_tile, &ok);
    s->moe_max_tiles = hp->n_expert < EDGE_MM_MAX_PARTS / 2 ? hp->n_expert : EDGE_MM_MAX_PARTS / 2;
    s->tile_expert = alloc_floats(s->moe_max_tiles, &ok);
    s->tile_start = calloc((size_t)s->moe_max_tiles, sizeof(int64_t));
    ok = ok && s->tile_start;
    s->xg = alloc_floats(s->moe_tile * d, &ok);
    s->hg = alloc_floats(s->moe_tile * hp->n_ff, &ok);
    s->hu = alloc_floats(s->moe_tile * hp->n_ff, &ok);
    s->yo = alloc_floats(s->moe_tile * d, &ok);
    s->moe = alloc_floats(B * d, &ok);
    s->scratch_bytes = scratch_for(model, B, s->moe_tile, (int)s->moe_max_tiles);
    s->scratch = malloc(s->scratch_bytes > 0 ? s->scratch_bytes : 1);
    ctx->f16_table = alloc_floats(65536, &ok);
    ctx->is_pad = calloc((size_t)p.n_ctx, 1);
    if (!ok || !s->scratch || !ctx->is_pad) {
        st = edge_fail(EDGE_ERR_NOMEM, "%s: out of memory for the context's buffers (n_batch %lld)", model->path,
                       (long long)B);
        goto fail;
    }
    for (uint32_t h = 0; h < 65536; h++) ctx->f16_table[h] = edge_f16_to_f32((uint16_t)h);
    /* The backend that runs the forward pass: the one place a context's backend is chosen. */
    if ((st = edge_choose_backend(model, &ctx->params, &ctx->backend)) != EDGE_OK) goto fail;
    if ((st = ctx->backend->init(ctx)) != EDGE_OK) goto fail;
    *out = ctx;
    edge_clear_error();
    return EDGE_OK;
fail:
    edge_context_free(ctx);
    return st;
}

EDGE_API void edge_context_free(edge_context *ctx) {
    if (!ctx) return;
    if (ctx->backend) ctx->backend->free(ctx);
    free_state(&ctx->s);
    edge_seq_slots_free(ctx);
    free(ctx->f16_table);
    free(ctx->is_pad);
    edge_kv_cache_free(&ctx->kv);
    edge_threadpool_free(ctx->pool);
    free(ctx);
}

EDGE_API edge_status edge_context_eval(edge_context *ctx, const int32_t *tokens, int64_t n, float *logits,
                                       int all_logits) {
    if (!ctx || (!tokens && n > 0)) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_eval: NULL argument");
    if (n <= 0) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_eval: no tokens (n = %lld)", (long long)n);
    const edge_model *m = ctx->model;
    if (n > ctx->kv.n_ctx - ctx->n_past)
        return edge_fail(EDGE_ERR_RANGE, "context overflow: %lld cached + %lld new tokens exceed n_ctx %lld",
                         (long long)ctx->n_past, (long long)n, (long long)ctx->kv.n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab)
            return edge_fail(EDGE_ERR_RANGE, "token id %ld at index %lld is out of range (n_vocab %lld)",
                             (long)tokens[i], (long long)i, (long long)m->hp.n_vocab);
    const int64_t start = ctx->n_past;
    for (int64_t off = 0; off < n; off += ctx->params.n_batch) {
        const int64_t chunk = n - off < ctx->params.n_batch ? n - off : ctx->params.n_batch;
        const bool last = off + chunk == n;
        float *dst = NULL;
        int64_t first = chunk;
        if (logits && all_logits) {
            dst = logits + (size_t)off * (size_t)m->hp.n_vocab;
            first = 0;
        } else if (logits && last) {
            dst = logits;
            first = chunk - 1;
        }
        edge_status st = edge_grok_forward(ctx, tokens + off, chunk, dst, first);
        if (st != EDGE_OK) {
            ctx->n_past = start; /* the failed tokens are not part of the sequence */
            return st;
        }
        ctx->n_past += chunk;
    }
    edge_clear_error();
    return EDGE_OK;
}

EDGE_API edge_status edge_context_n_past(const edge_context *ctx, int64_t *out) {
    if (!ctx || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_n_past: NULL argument");
    *out = ctx->n_past;
    return EDGE_OK;
}

EDGE_API edge_status edge_context_set_cancel(edge_context *ctx, int cancel) {
    if (!ctx) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_set_cancel: NULL context");
    atomic_store_explicit(&ctx->cancel, cancel != 0, memory_order_release);
    return EDGE_OK;
}

EDGE_API edge_status edge_context_n_threads(const edge_context *ctx, int *out) {
    if (!ctx || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_n_threads: NULL argument");
    *out = ctx->n_threads;
    return EDGE_OK;
}

EDGE_API edge_status edge_context_truncate(edge_context *ctx, int64_t n_past) {
    if (!ctx) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_truncate: NULL context");
    if (n_past < 0 || n_past > ctx->n_past)
        return edge_fail(EDGE_ERR_RANGE, "truncate to %lld: must be in 0..%lld (the cached tokens)", (long long)n_past,
                         (long long)ctx->n_past);
    ctx->n_past = n_past;
    return EDGE_OK;
}

/* State layout: a header, then per layer the K rows then the V rows of positions 0..n_past-1, then one
 * byte per position: whether its token is [PAD]. */
typedef struct {
    char magic[8]; /* "EDGEKV2\0" */
    int64_t n_past, n_layer, row_elems;
    int32_t kv_type, reserved;
} state_header;

EDGE_API edge_status edge_context_state_size(const edge_context *ctx, uint64_t *nbytes) {
    if (!ctx || !nbytes) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_state_size: NULL argument");
    *nbytes = sizeof(state_header) + 2 * (uint64_t)ctx->kv.n_layer * (uint64_t)ctx->n_past * ctx->kv.row_bytes +
              (uint64_t)ctx->n_past;
    return EDGE_OK;
}

EDGE_API edge_status edge_context_state_save(const edge_context *ctx, void *dst, uint64_t nbytes) {
    uint64_t need;
    edge_status st = edge_context_state_size(ctx, &need);
    if (st != EDGE_OK) return st;
    if (!dst || nbytes < need)
        return edge_fail(EDGE_ERR_INVALID_ARG, "state buffer of %llu bytes is too small (%llu needed)",
                         (unsigned long long)nbytes, (unsigned long long)need);
    if ((st = edge_backend_kv_to_host(ctx)) != EDGE_OK) return st;
    state_header h = {{'E', 'D', 'G', 'E', 'K', 'V', '2', 0}, ctx->n_past, ctx->kv.n_layer, ctx->kv.row_elems,
                      ctx->kv.type, 0};
    uint8_t *p = dst;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    const size_t span = (size_t)ctx->n_past * ctx->kv.row_bytes;
    for (int64_t l = 0; l < ctx->kv.n_layer; l++) {
        memcpy(p, edge_kv_row(&ctx->kv, ctx->kv.k, l, 0), span);
        p += span;
        memcpy(p, edge_kv_row(&ctx->kv, ctx->kv.v, l, 0), span);
        p += span;
    }
    memcpy(p, ctx->is_pad, (size_t)ctx->n_past);
    return EDGE_OK;
}

EDGE_API edge_status edge_context_state_load(edge_context *ctx, const void *src, uint64_t nbytes) {
    if (!ctx || !src) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_state_load: NULL argument");
    state_header h;
    if (nbytes < sizeof h) return edge_fail(EDGE_ERR_FORMAT, "state of %llu bytes is too short", (unsigned long long)nbytes);
    memcpy(&h, src, sizeof h);
    if (memcmp(h.magic, "EDGEKV2", 8) != 0) return edge_fail(EDGE_ERR_FORMAT, "not a grok-edge KV state");
    if (h.n_layer != ctx->kv.n_layer || h.row_elems != ctx->kv.row_elems || h.kv_type != ctx->kv.type)
        return edge_fail(EDGE_ERR_FORMAT, "KV state is for another model or KV type (layers %lld, row %lld, type %d)",
                         (long long)h.n_layer, (long long)h.row_elems, (int)h.kv_type);
    if (h.n_past < 0 || h.n_past > ctx->kv.n_ctx)
        return edge_fail(EDGE_ERR_RANGE, "KV state holds %lld tokens, the context only %lld", (long long)h.n_past,
                         (long long)ctx->kv.n_ctx);
    const size_t span = (size_t)h.n_past * ctx->kv.row_bytes;
    if (nbytes != sizeof h + 2 * (uint64_t)h.n_layer * span + (uint64_t)h.n_past)
        return edge_fail(EDGE_ERR_FORMAT, "KV state size %llu does not match its header", (unsigned long long)nbytes);
    const uint8_t *p = (const uint8_t *)src + sizeof h;
    for (int64_t l = 0; l < ctx->kv.n_layer; l++) {
        memcpy(edge_kv_row(&ctx->kv, ctx->kv.k, l, 0), p, span);
        p += span;
        memcpy(edge_kv_row(&ctx->kv, ctx->kv.v, l, 0), p, span);
        p += span;
    }
    memcpy(ctx->is_pad, p, (size_t)h.n_past);
    ctx->n_past = h.n_past;
    return edge_backend_kv_from_host(ctx);
}
