/* cpu_moe.c — the CPU backend's MoE sublayer: the router's softmax and top-k (gates not renormalized), each
 * chosen expert's GELU-gated product on the rows of the tokens that chose it (experts from the expert store),
 * and the gate-weighted sum. */
#include <math.h>

#include "engine/cpu_backend.h"
#include "experts/expert_store.h"

/* jax.nn.gelu's default (approximate=True): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))). */
static inline float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

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
        gate_up[2 * t] = edge_cpu_part(tw[t][0], s->xg + r0 * d, mt, s->hg + r0 * nff);
        gate_up[2 * t + 1] = edge_cpu_part(tw[t][1], s->xg + r0 * d, mt, s->hu + r0 * nff);
        down[t] = edge_cpu_part(tw[t][2], s->hg + r0 * nff, mt, s->yo + r0 * d);
        down[t].pre = ctx->cpu->gelu_mul;
        down[t].pre_u = s->hu + r0 * nff;
    }
    if ((st = edge_cpu_matmul_parts(ctx, gate_up, (int)(2 * n_tiles))) != EDGE_OK) return st;
    if ((st = edge_cpu_matmul_parts(ctx, down, (int)n_tiles)) != EDGE_OK) return st;
    /* moe(x) += p_e · y_e, row by row in pack order: each token's experts in ascending order */
    for (int64_t r = 0; r < used; r++) {
        float *dst = s->moe + (int64_t)s->rows[r] * d;
        const float gate = s->rows_gate[r];
        for (int64_t c = 0; c < d; c++) dst[c] += gate * s->yo[r * d + c];
    }
    return EDGE_OK;
}

edge_status edge_cpu_moe(edge_context *ctx, int64_t layer, int64_t n, bool predicted) {
    const edge_layer_weights *L = &ctx->model->layers[layer];
    const edge_model_hparams *hp = &ctx->model->hp;
    edge_run_state *s = &ctx->s;
    const int64_t d = hp->n_embd, ne = hp->n_expert, k = hp->n_expert_used;
    edge_status st;
    /* router: p = softmax(x·Wr) over all experts, fp32 */
    if ((st = edge_cpu_matmul(ctx, &L->router, s->xb, n, s->router)) != EDGE_OK) return st;
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
