// cuda_backend.cu — the CUDA backend (engine/backend.h) over the device operations of cuda_ops.h.
//
// What lives on the device (a context's VRAM, bounded by params.gpu_memory):
//   - the dense weights (attention, router, norms, the embedding/output table), uploaded once at creation;
//   - the run state's buffers for n_batch tokens, the KV cache of every sequence slot (the context's kv_type,
//     encoded as the CPU's edge_kv_cache_store does) and their [PAD] flags;
//   - the VRAM expert tier: as many equal slots (one expert of one layer: gate, up, down) as the rest of the
//     budget holds, kept by the expert store's policies (experts/expert_policy.c: LRU or LFU-decay, one tick
//     per layer step) and filled ahead by the router-driven prediction (predict_experts), like the RAM tier.
//
// Hybrid MoE, per layer: the router and its top-k run on the device; the selected experts resident in VRAM
// run there while the others run on the CPU from the expert store (CPU kernels on the xb rows copied down),
// at the same time (the device work is enqueued first); every expert's output rows then meet on the device
// and are added to moe in ascending expert order, so each token's sum takes its experts in the CPU engine's
// order. For prompt batches a missing expert is either computed on the CPU or streamed into a VRAM slot
// (pinned staging, a copy stream overlapped with the compute), whichever the cost model says is cheaper:
// PCIe bandwidth measured at creation (a pinned 8 MiB upload), the CPU's cost of an expert measured at
// creation too (cpu_probe below: one expert's product on 1 and on 16 rows). Decode misses are computed on
// the CPU where they lie.
//
// Numerics: every operation is cuda_ops.h's, numerically the CPU engine's up to float summation order; the
// embedding is dequantized on the host (the CPU's own code), RoPE phases computed on the host in double.
//
// engine.h is C11: its one C-only construct, the _Atomic cancel flag (same size and alignment as int, never
// touched here: grok.c checks it), is read as a plain volatile int in this C++ translation unit.
#include <cuda_runtime.h>

#include <math.h>
#include <stdatomic.h>  // before the #define below (its own use of _Atomic stays the compiler's)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define _Atomic volatile
extern "C" {
#include "cuda/cuda_ops.h"
#include "engine/backend.h"
#include "engine/engine.h"
#include "experts/expert_policy.h"
#include "experts/expert_store.h"
}
#undef _Atomic

#include "cuda/cuda_backend.h"

namespace {

// Device memory kept free of the budget when gpu_memory is 0 (all free memory): the CUDA context's own
// allocations, cuBLAS-free kernels' launch needs and other processes' growth.
constexpr size_t kMargin = 512ull << 20;

#define CU_TRY(call, what)                                                                                        \
    do {                                                                                                          \
        cudaError_t err_ = (call);                                                                                \
        if (err_ != cudaSuccess) {                                                                                \
            (void)cudaGetLastError();                                                                             \
            return edge_fail(EDGE_ERR_INTERNAL, "cuda backend: %s: %s", what, cudaGetErrorString(err_));          \
        }                                                                                                         \
    } while (0)

#define ED_TRY(call)                                                                                              \
    do {                                                                                                          \
        edge_status st_ = (call);                                                                                 \
        if (st_ != EDGE_OK) return st_;                                                                           \
    } while (0)

struct dmat {  // a weight matrix in device memory (same layout as its edge_matrix)
    const void *data;
    int type;
    int64_t n_rows, n_cols;
    size_t row_stride;
};

struct dlayer {
    dmat wq, wk, wv, wo, router;
    const float *norm[4];  // edge_norm_site order
};

struct vslot {           // one VRAM expert slot
    uint8_t *data;       // gate, up, down matrices one after another
    int64_t unit;        // layer * n_expert + expert, -1: free
    uint64_t used_step;  // the last layer step that computed with it (never evicted during that step)
    cudaEvent_t ready;   // its upload finished
};

struct cu_state {
    int device;
    cudaStream_t stream, copy;
    // dense weights and device allocations (freed together)
    void **allocs;
    int n_allocs, cap_allocs;
    size_t dense_bytes, state_bytes, kv_bytes;
    dlayer *layers;
    dmat output;
    const float *output_norm;
    // run state on the device
    float *x, *xb, *q, *k, *v, *att, *ob, *moe, *router, *gate, *rope_cos, *rope_sin, *ones, *ybuf, *xg, *hg, *hu;
    int32_t *sel, *iota, *rows;
    float *logit_buf;  // [logit_rows, n_vocab]
    int64_t logit_rows;
    void *scratch, *att_scratch;
    size_t scratch_bytes, att_scratch_bytes;
    uint8_t **kv_k, **kv_v, **is_pad;  // [n_seq] each
    size_t row_bytes;
    // host side (pinned where the device reads or writes it asynchronously)
    float *h_x, *h_rope, *h_router, *h_gate, *h_xb, *h_y, *h_rgate;
    int32_t *h_sel, *h_rows, *h_wrows;
    uint8_t *h_pad;
    float *c_xg, *c_hg, *c_hu;  // CPU experts' activations (plain host memory)
    void *c_scratch;
    size_t c_scratch_bytes;
    int32_t *pred;   // [2][B * k] predicted experts by layer parity
    // the VRAM expert tier
    int64_t n_units, n_slots;
    size_t slot_bytes;
    vslot *slots;
    int64_t *unit_slot;  // [n_units] slot or -1
    edge_expert_policy policy;
    int have_policy;
    uint64_t step;
    uint8_t *staging[2];  // pinned, slot_bytes each
    cudaEvent_t staged[2];
    int next_staging;
    double pcie_bytes_per_s;  // measured at creation
    // The CPU's cost of one expert (cpu_probe, measured at creation where some experts stay off the device):
    // seconds for one row, and for each further row, of an expert of probe_bytes (0: not measured)
    double cpu_s1, cpu_s_row;
    size_t probe_bytes;
    int64_t B, M;             // n_batch, expert rows per device tile
    int force;                // EDGE_CUDA_HYBRID (tests): 1 every miss on the CPU, 2 every miss streamed
    int wants_prediction;     // registered with the expert store
    edge_expert_store *store;
};

cu_state *state_of(edge_context *ctx) { return (cu_state *)ctx->backend_state; }
void *stream_of(cu_state *c) { return (void *)c->stream; }

edge_status dalloc(cu_state *c, size_t bytes, void **out, const char *what) {
    *out = nullptr;
    if (c->n_allocs == c->cap_allocs) {
        const int cap = c->cap_allocs ? 2 * c->cap_allocs : 64;
        void **a = (void **)realloc(c->allocs, (size_t)cap * sizeof *a);
        if (!a) return edge_fail(EDGE_ERR_NOMEM, "cuda backend: out of host memory");
        c->allocs = a;
        c->cap_allocs = cap;
    }
    cudaError_t err = cudaMalloc(out, bytes ? bytes : 1);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        *out = nullptr;
        return edge_fail(EDGE_ERR_NOMEM, "cuda backend: cudaMalloc of %zu bytes for %s: %s", bytes, what,
                         cudaGetErrorString(err));
    }
    c->allocs[c->n_allocs++] = *out;
    return EDGE_OK;
}

template <typename T> edge_status dalloc_n(cu_state *c, int64_t n, T **out, const char *what) {
    void *p;
    ED_TRY(dalloc(c, (size_t)(n > 0 ? n : 1) * sizeof(T), &p, what));
    *out = (T *)p;
    return EDGE_OK;
}

template <typename T> edge_status halloc(int64_t n, T **out) {
    void *p = nullptr;
    cudaError_t err = cudaMallocHost(&p, (size_t)(n > 0 ? n : 1) * sizeof(T));
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        *out = nullptr;
        return edge_fail(EDGE_ERR_NOMEM, "cuda backend: pinned host memory of %lld bytes: %s",
                         (long long)(n * (int64_t)sizeof(T)), cudaGetErrorString(err));
    }
    *out = (T *)p;
    return EDGE_OK;
}

size_t mat_bytes(const edge_matrix &m) { return (size_t)m.n_rows * m.row_stride; }

edge_status upload_matrix(cu_state *c, const edge_matrix &m, dmat *out, const char *what) {
    if (!edge_cu_matmul_supports(m.type))
        return edge_fail(EDGE_ERR_UNSUPPORTED, "cuda backend: %s has weight type %d, which has no CUDA kernel "
                                               "(use device=\"cpu\")", what, m.type);
    void *p;
    ED_TRY(dalloc(c, mat_bytes(m), &p, what));
    CU_TRY(cudaMemcpy(p, m.data, mat_bytes(m), cudaMemcpyHostToDevice), what);
    *out = dmat{p, m.type, m.n_rows, m.n_cols, m.row_stride};
    return EDGE_OK;
}

edge_status upload_floats(cu_state *c, const float *h, int64_t n, const float **out, const char *what) {
    float *p;
    ED_TRY(dalloc_n(c, n, &p, what));
    CU_TRY(cudaMemcpy(p, h, (size_t)n * sizeof(float), cudaMemcpyHostToDevice), what);
    *out = p;
    return EDGE_OK;
}

edge_status mm(cu_state *c, const dmat &w, const float *x, int64_t n_tok, float *y, float y_scale = 1.0f) {
    return edge_cu_matmul(stream_of(c), w.type, w.data, w.row_stride, w.n_rows, w.n_cols, x, n_tok, y, y_scale,
                          c->scratch, c->scratch_bytes);
}

size_t expert_bytes(const edge_model *m, int64_t l, int64_t e) {
    const edge_layer_weights *L = &m->layers[l];
    return mat_bytes(L->gate[e]) + mat_bytes(L->up[e]) + mat_bytes(L->down[e]);
}

// The expert slot a unit's three matrices occupy on the device, as matrices.
void slot_mats(const edge_model *m, int64_t l, int64_t e, const uint8_t *base, dmat out[3]) {
    const edge_layer_weights *L = &m->layers[l];
    const edge_matrix *src[3] = {&L->gate[e], &L->up[e], &L->down[e]};
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        out[i] = dmat{base + off, src[i]->type, src[i]->n_rows, src[i]->n_cols, src[i]->row_stride};
        off += mat_bytes(*src[i]);
    }
}

double now_s() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Rows of logits computed at a time: as many as 32 MiB hold (at least one, at most n_batch).
size_t logit_rows_for(int64_t B, int64_t n_vocab) {
    int64_t r = (int64_t)((32u << 20) / ((size_t)n_vocab * sizeof(float)));
    r = r < 1 ? 1 : r > B ? B : r;
    return (size_t)r;
}

// Device bytes every context needs whatever the experts: dense weights, run state, KV caches, scratch.
struct need_t {
    size_t dense, state, kv, slot;
};

size_t round_up(size_t v) { return (v + 255) / 256 * 256; }

need_t device_need(const edge_model *m, const edge_context_params *p) {
    const edge_model_hparams *hp = &m->hp;
    need_t n = {0, 0, 0, 0};
    const int64_t B = p->n_batch < p->n_ctx ? p->n_batch : p->n_ctx, M = B < EDGE_MOE_TILE ? B : EDGE_MOE_TILE;
    const int64_t d = hp->n_embd, hd = hp->head_dim, nq = hp->n_head * hd, nkv = hp->n_head_kv * hd,
                  k = hp->n_expert_used;
    size_t scratch = edge_cu_matmul_scratch_bytes(m->output.type, m->output.n_cols, B);
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const edge_layer_weights *L = &m->layers[l];
        const edge_matrix *dense[5] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->router};
        for (int i = 0; i < 5; i++) {
            n.dense += round_up(mat_bytes(*dense[i]));
            const size_t s = edge_cu_matmul_scratch_bytes(dense[i]->type, dense[i]->n_cols, B);
            scratch = s > scratch ? s : scratch;
        }
        n.dense += 4 * round_up((size_t)d * sizeof(float));
        for (int64_t e = 0; e < hp->n_expert; e++) {
            const size_t b = expert_bytes(m, l, e);
            n.slot = b > n.slot ? b : n.slot;
            const edge_matrix *ex[3] = {&L->gate[e], &L->up[e], &L->down[e]};
            for (int i = 0; i < 3; i++) {
                const size_t s = edge_cu_matmul_scratch_bytes(ex[i]->type, ex[i]->n_cols, M);
                scratch = s > scratch ? s : scratch;
            }
        }
    }
    n.dense += round_up(mat_bytes(m->token_embd)) + round_up((size_t)d * sizeof(float));
    if (m->output.data != m->token_embd.data) n.dense += round_up(mat_bytes(m->output));
    n.slot = round_up(n.slot);
    const int n_seq = p->n_seq > 0 ? p->n_seq : 1;
    size_t row_bytes = (size_t)nkv * 4;
    if (p->kv_type == EDGE_TYPE_F16) row_bytes = (size_t)nkv * 2;
    if (p->kv_type == EDGE_TYPE_Q8_0) row_bytes = (size_t)nkv / 32 * 34;
    n.kv = (size_t)n_seq * (2 * (size_t)hp->n_layer * (size_t)p->n_ctx * row_bytes + (size_t)p->n_ctx);
    const int64_t floats = 4 * B * d + 2 * B * nq + 2 * B * nkv + 2 * B * hp->n_expert + B * k + B * hd +
                           B * k * d + M * d + 2 * M * hp->n_ff + B;
    n.state = logit_rows_for(B, hp->n_vocab) * (size_t)hp->n_vocab * sizeof(float) + (size_t)floats * sizeof(float) + 2 * (size_t)(B * k) * sizeof(int32_t) + B * sizeof(int32_t) +
              round_up(scratch) + round_up(edge_cu_attention_scratch_bytes(B, hp->n_head, p->n_ctx)) + 64 * 256;
    return n;
}

// The device's free and total memory (device 0), or a message why there is none.
edge_status probe_device(int *dev, size_t *free_b, size_t *total_b) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        return edge_fail(EDGE_ERR_UNSUPPORTED, "device=cuda: no CUDA device found (%s)",
                         err != cudaSuccess ? cudaGetErrorString(err) : "the driver reports 0 devices");
    }
    *dev = 0;
    CU_TRY(cudaSetDevice(0), "cudaSetDevice(0)");
    CU_TRY(cudaMemGetInfo(free_b, total_b), "cudaMemGetInfo");
    return EDGE_OK;
}

// The budget a context's device allocations may use: params.gpu_memory, or all free memory less a margin.
edge_status budget_for(const edge_context_params *p, size_t free_b, size_t *out) {
    if (p->gpu_memory > 0) {
        *out = (size_t)p->gpu_memory;
        return EDGE_OK;
    }
    *out = free_b > kMargin ? free_b - kMargin : 0;
    return EDGE_OK;
}

// ---- the VRAM expert tier

int64_t pick_slot(cu_state *c) {
    int64_t best = -1;
    double best_v = 0.0;
    for (int64_t s = 0; s < c->n_slots; s++) {
        const vslot &v = c->slots[s];
        if (v.unit < 0) return s;
        if (v.used_step == c->step) continue;  // computing in this step
        const double val = edge_expert_policy_value(&c->policy, v.unit, c->step);
        const uint64_t lu = c->policy.last_use[v.unit];
        if (best < 0 || val < best_v ||
            (val == best_v && lu < c->policy.last_use[c->slots[best].unit]))
            best = s, best_v = val;
    }
    return best;
}

// Start copying expert e of layer l into a VRAM slot (the copy stream; the slot's event marks its end).
// Returns the slot, or -1 when none can be given up now.
edge_status stream_expert(edge_context *ctx, cu_state *c, int64_t l, int32_t e, int64_t *slot_out) {
    *slot_out = -1;
    const edge_model *m = ctx->model;
    const int64_t unit = l * m->hp.n_expert + e;
    const int64_t s = pick_slot(c);
    if (s < 0) return EDGE_OK;
    vslot &v = c->slots[s];
    const edge_matrix *mats[1][3];
    ED_TRY(edge_experts_acquire(m->experts, l, &e, 1, mats));
    const int b = c->next_staging;
    c->next_staging ^= 1;
    cudaError_t err = cudaEventSynchronize(c->staged[b]);  // its last upload has left the staging buffer
    size_t off = 0;
    for (int i = 0; i < 3 && err == cudaSuccess; i++) {
        memcpy(c->staging[b] + off, mats[0][i]->data, mat_bytes(*mats[0][i]));
        off += mat_bytes(*mats[0][i]);
    }
    edge_experts_release(m->experts, l, &e, 1);
    if (err == cudaSuccess) err = cudaMemcpyAsync(v.data, c->staging[b], off, cudaMemcpyHostToDevice, c->copy);
    if (err == cudaSuccess) err = cudaEventRecord(c->staged[b], c->copy);
    if (err == cudaSuccess) err = cudaEventRecord(v.ready, c->copy);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return edge_fail(EDGE_ERR_INTERNAL, "cuda backend: uploading expert %d of layer %lld: %s", e, (long long)l,
                         cudaGetErrorString(err));
    }
    if (v.unit >= 0) c->unit_slot[v.unit] = -1;
    v.unit = unit;
    c->unit_slot[unit] = s;
    *slot_out = s;
    edge_experts_count_device(m->experts, 0, 0, 0, 0, 1, off);
    return EDGE_OK;
}

// The compute stream waits for an expert upload on the copy stream. On a GPU the stream waits for the event
// (the host goes on). Under chipStar (1.2.1, __HIP_PLATFORM_SPIRV__) cudaStreamWaitEvent marks the waiting
// stream as capturing into a graph although no capture was begun: its next cudaStreamSynchronize fails
// (hipErrorUnknown) and the next operations enqueued on it go to CHIPGraph::addNode without a graph
// (SIGSEGV, heap corruption) — the crashes of the whole-model runs. There the host waits for the event
// instead: the same ordering, the copy stream kept.
cudaError_t wait_for_upload(cu_state *c, cudaEvent_t ready) {
#if defined(__HIP_PLATFORM_SPIRV__)
    (void)c;
    return cudaEventSynchronize(ready);
#else
    return cudaStreamWaitEvent(c->stream, ready, 0);
#endif
}

// At creation: the experts in layer order (layer 0's experts 0.., then layer 1's ...) copied into the VRAM
// slots, as many as there are slots, so that a budget holding every expert computes every one on the device
// from the first token (a smaller one starts with the first layers' and caches from there). Synchronous
// copies from the expert store's memory; each slot's event recorded once the copy is done.
edge_status fill_slots(edge_context *ctx, cu_state *c) {
    const edge_model *m = ctx->model;
    const int64_t ne = m->hp.n_expert;
    for (int64_t s = 0; s < c->n_slots && s < c->n_units; s++) {
        const int64_t l = s / ne;
        int32_t e = (int32_t)(s % ne);
        const edge_matrix *mats[1][3];
        ED_TRY(edge_experts_acquire(m->experts, l, &e, 1, mats));
        cudaError_t err = cudaSuccess;
        size_t off = 0;
        for (int i = 0; i < 3 && err == cudaSuccess; i++) {
            err = cudaMemcpy(c->slots[s].data + off, mats[0][i]->data, mat_bytes(*mats[0][i]), cudaMemcpyHostToDevice);
            off += mat_bytes(*mats[0][i]);
        }
        edge_experts_release(m->experts, l, &e, 1);
        if (err == cudaSuccess) err = cudaEventRecord(c->slots[s].ready, c->copy);
        if (err != cudaSuccess) {
            (void)cudaGetLastError();
            return edge_fail(EDGE_ERR_INTERNAL, "cuda backend: uploading expert %d of layer %lld: %s", e, (long long)l,
                             cudaGetErrorString(err));
        }
        c->slots[s].unit = s;
        c->unit_slot[s] = s;
    }
    return EDGE_OK;
}

// Seconds the CPU takes for one expert of `bytes` on m rows: the probe's times (cpu_probe), scaled by the
// expert's size. Without a probe (it failed), an estimate: the weights read once at ~20 GB/s and 2 · params · m
// operations at ~25 GFLOP/s a thread.
double cpu_seconds(const edge_context *ctx, const cu_state *c, size_t bytes, int64_t params, int64_t m) {
    if (c->probe_bytes > 0)
        return (double)bytes / (double)c->probe_bytes * (c->cpu_s1 + (double)(m - 1) * c->cpu_s_row);
    const double mem = (double)bytes / 20e9;
    const double ops = 2.0 * (double)params * (double)m / (25e9 * (double)(ctx->n_threads > 0 ? ctx->n_threads : 1));
    return mem > ops ? mem : ops;
}

// Measure the CPU's cost of an expert: layer 0's expert 0 gate product (a third of the expert's weights) on
// one row and on up to 16 rows, the best of three each after a warm-up (which also reads the expert in),
// on the context's threads and kernels. Three times those give the whole expert: cpu_s1 for one row and
// cpu_s_row for each further row, which is what the prompt cost model weighs against streaming.
edge_status cpu_probe(edge_context *ctx, cu_state *c) {
    const edge_model *m = ctx->model;
    const int64_t d = m->hp.n_embd, rows = c->M < 16 ? c->M : 16;
    if (rows < 2) return EDGE_OK;
    int32_t e = 0;
    const edge_matrix *w[1][3];
    ED_TRY(edge_experts_acquire(m->experts, 0, &e, 1, w));
    memset(c->c_xg, 0, (size_t)(rows * d) * sizeof(float));
    const edge_matrix *g = w[0][0];
    double best[2] = {0.0, 0.0};
    edge_status st = EDGE_OK;
    for (int k = 0; k < 2 && st == EDGE_OK; k++) {
        const int64_t mt = k == 0 ? 1 : rows;
        const edge_mm_part part = {g->type, g->data, g->row_stride, g->n_rows, g->n_cols, c->c_xg, mt, c->c_hg,
                                   nullptr, nullptr, 1.0f};
        for (int r = 0; r < 4 && st == EDGE_OK; r++) {
            const double t0 = now_s();
            st = edge_matmul_parts(ctx->kernels, ctx->pool, &part, 1, c->c_scratch, c->c_scratch_bytes);
            const double dt = now_s() - t0;
            if (r > 0 && (best[k] == 0.0 || dt < best[k])) best[k] = dt;
        }
    }
    edge_experts_release(m->experts, 0, &e, 1);
    if (st != EDGE_OK) return st;
    c->cpu_s1 = 3.0 * best[0];
    c->cpu_s_row = best[1] > best[0] ? 3.0 * (best[1] - best[0]) / (double)(rows - 1) : 0.0;
    c->probe_bytes = expert_bytes(m, 0, 0);
    return EDGE_OK;
}

// ---- backend operations

edge_status cu_free_state(cu_state *c) {
    if (!c) return EDGE_OK;
    if (c->stream) (void)cudaStreamSynchronize(c->stream);
    if (c->copy) (void)cudaStreamSynchronize(c->copy);
    for (int i = 0; i < c->n_allocs; i++) (void)cudaFree(c->allocs[i]);
    free(c->allocs);
    void *pinned[] = {c->h_x, c->h_rope, c->h_router, c->h_gate, c->h_xb, c->h_y, c->h_rgate, c->h_sel,
                      c->h_rows, c->h_wrows, c->h_pad, c->staging[0], c->staging[1]};
    for (void *p : pinned)
        if (p) (void)cudaFreeHost(p);
    for (int64_t s = 0; c->slots && s < c->n_slots; s++)
        if (c->slots[s].ready) (void)cudaEventDestroy(c->slots[s].ready);
    for (int b = 0; b < 2; b++)
        if (c->staged[b]) (void)cudaEventDestroy(c->staged[b]);
    if (c->stream) (void)cudaStreamDestroy(c->stream);
    if (c->copy) (void)cudaStreamDestroy(c->copy);
    free(c->slots);
    free(c->unit_slot);
    free(c->layers);
    free(c->kv_k);
    free(c->kv_v);
    free(c->is_pad);
    free(c->c_xg);
    free(c->c_hg);
    free(c->c_hu);
    free(c->c_scratch);
    free(c->pred);
    if (c->have_policy) edge_expert_policy_free(&c->policy);
    if (c->wants_prediction) edge_experts_want_device_prefetch(c->store, -1);
    free(c);
    return EDGE_OK;
}

void cu_free(edge_context *ctx) {
    cu_free_state(state_of(ctx));
    ctx->backend_state = nullptr;
}

edge_status cu_init_inner(edge_context *ctx, cu_state *c) {
    const edge_model *m = ctx->model;
    const edge_model_hparams *hp = &m->hp;
    const edge_context_params *p = &ctx->params;
    size_t free_b = 0, total_b = 0, budget = 0;
    ED_TRY(probe_device(&c->device, &free_b, &total_b));
    ED_TRY(budget_for(p, free_b, &budget));
    const need_t need = device_need(m, p);
    const size_t fixed = need.dense + need.state + need.kv;
    if (budget < fixed)
        return edge_fail(EDGE_ERR_NOMEM, "device=cuda: gpu_memory of %.1f MiB holds less than the dense weights, KV "
                                         "cache and buffers (%.1f MiB; %.1f MiB free on the device)",
                         budget / 1048576.0, fixed / 1048576.0, free_b / 1048576.0);
    if (fixed > free_b)
        return edge_fail(EDGE_ERR_NOMEM, "device=cuda: the dense weights, KV cache and buffers need %.1f MiB, the "
                                         "device has %.1f MiB free", fixed / 1048576.0, free_b / 1048576.0);
    const int64_t d = hp->n_embd, hd = hp->head_dim, nq = hp->n_head * hd, nkv = hp->n_head_kv * hd,
                  k = hp->n_expert_used, ne = hp->n_expert;
    const int64_t B = p->n_batch, M = B < EDGE_MOE_TILE ? B : EDGE_MOE_TILE;
    c->B = B;
    c->M = M;
    CU_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    CU_TRY(cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking), "cudaStreamCreate");
    for (int b = 0; b < 2; b++) CU_TRY(cudaEventCreateWithFlags(&c->staged[b], cudaEventDisableTiming), "event");

    // dense weights
    c->layers = (dlayer *)calloc((size_t)hp->n_layer, sizeof *c->layers);
    if (!c->layers) return edge_fail(EDGE_ERR_NOMEM, "cuda backend: out of host memory");
    char what[96];
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const edge_layer_weights *L = &m->layers[l];
        dlayer *D = &c->layers[l];
        const edge_matrix *src[5] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->router};
        dmat *dst[5] = {&D->wq, &D->wk, &D->wv, &D->wo, &D->router};
        const char *names[5] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate_inp"};
        for (int i = 0; i < 5; i++) {
            snprintf(what, sizeof what, "blk.%lld.%s", (long long)l, names[i]);
            ED_TRY(upload_matrix(c, *src[i], dst[i], what));
        }
        const float *norms[4] = {L->attn_norm, L->attn_output_norm, L->ffn_norm, L->layer_output_norm};
        for (int i = 0; i < 4; i++) ED_TRY(upload_floats(c, norms[i], d, &D->norm[i], "a norm scale"));
        // the experts' types must have kernels too (they may run here)
        for (int64_t e = 0; e < ne; e++) {
            const edge_matrix *ex[3] = {&L->gate[e], &L->up[e], &L->down[e]};
            for (int i = 0; i < 3; i++)
                if (!edge_cu_matmul_supports(ex[i]->type))
                    return edge_fail(EDGE_ERR_UNSUPPORTED, "cuda backend: expert %lld of layer %lld has weight type "
                                     "%d, which has no CUDA kernel (use device=\"cpu\")", (long long)e, (long long)l,
                                     ex[i]->type);
        }
    }
    ED_TRY(upload_matrix(c, m->output, &c->output, "output"));
    ED_TRY(upload_floats(c, m->output_norm, d, &c->output_norm, "output_norm"));

    // run state
    ED_TRY(dalloc_n(c, B * d, &c->x, "x"));
    ED_TRY(dalloc_n(c, B * d, &c->xb, "xb"));
    ED_TRY(dalloc_n(c, B * d, &c->ob, "ob"));
    ED_TRY(dalloc_n(c, B * d, &c->moe, "moe"));
    ED_TRY(dalloc_n(c, B * nq, &c->q, "q"));
    ED_TRY(dalloc_n(c, B * nq, &c->att, "att"));
    ED_TRY(dalloc_n(c, B * nkv, &c->k, "k"));
    ED_TRY(dalloc_n(c, B * nkv, &c->v, "v"));
    ED_TRY(dalloc_n(c, B * ne, &c->router, "router"));
    ED_TRY(dalloc_n(c, B * k, &c->gate, "gate"));
    ED_TRY(dalloc_n(c, B * k, &c->sel, "sel"));
    ED_TRY(dalloc_n(c, B * k, &c->rows, "rows"));
    ED_TRY(dalloc_n(c, B * hd / 2, &c->rope_cos, "rope"));
    ED_TRY(dalloc_n(c, B * hd / 2, &c->rope_sin, "rope"));
    ED_TRY(dalloc_n(c, B * k * d, &c->ybuf, "expert outputs"));
    ED_TRY(dalloc_n(c, M * d, &c->xg, "expert inputs"));
    ED_TRY(dalloc_n(c, M * hp->n_ff, &c->hg, "expert hidden"));
    ED_TRY(dalloc_n(c, M * hp->n_ff, &c->hu, "expert hidden"));
    ED_TRY(dalloc_n(c, B, &c->ones, "ones"));
    c->logit_rows = (int64_t)logit_rows_for(B, hp->n_vocab);
    ED_TRY(dalloc_n(c, c->logit_rows * hp->n_vocab, &c->logit_buf, "logits"));
    ED_TRY(dalloc_n(c, B, &c->iota, "iota"));
    c->scratch_bytes = 0;
    {  // the largest scratch of any product (as device_need)
        size_t s = edge_cu_matmul_scratch_bytes(m->output.type, m->output.n_cols, B);
        for (int64_t l = 0; l < hp->n_layer; l++) {
            const edge_layer_weights *L = &m->layers[l];
            const edge_matrix *dense[5] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->router};
            for (int i = 0; i < 5; i++) {
                const size_t t = edge_cu_matmul_scratch_bytes(dense[i]->type, dense[i]->n_cols, B);
                s = t > s ? t : s;
            }
            for (int64_t e = 0; e < ne; e++) {
                const edge_matrix *ex[3] = {&L->gate[e], &L->up[e], &L->down[e]};
                for (int i = 0; i < 3; i++) {
                    const size_t t = edge_cu_matmul_scratch_bytes(ex[i]->type, ex[i]->n_cols, M);
                    s = t > s ? t : s;
                }
            }
        }
        c->scratch_bytes = s;
    }
    ED_TRY(dalloc(c, c->scratch_bytes, &c->scratch, "matmul scratch"));
    c->att_scratch_bytes = edge_cu_attention_scratch_bytes(B, hp->n_head, p->n_ctx);
    ED_TRY(dalloc(c, c->att_scratch_bytes, &c->att_scratch, "attention scratch"));

    // KV caches of every sequence slot and their [PAD] flags
    const int n_seq = ctx->n_seq > 0 ? ctx->n_seq : 1;
    c->row_bytes = ctx->kv.row_bytes;
    c->kv_k = (uint8_t **)calloc((size_t)n_seq, sizeof(uint8_t *));
    c->kv_v = (uint8_t **)calloc((size_t)n_seq, sizeof(uint8_t *));
    c->is_pad = (uint8_t **)calloc((size_t)n_seq, sizeof(uint8_t *));
    if (!c->kv_k || !c->kv_v || !c->is_pad) return edge_fail(EDGE_ERR_NOMEM, "cuda backend: out of host memory");
    const size_t kv_bytes = (size_t)hp->n_layer * (size_t)p->n_ctx * c->row_bytes;
    for (int s = 0; s < n_seq; s++) {
        ED_TRY(dalloc(c, kv_bytes, (void **)&c->kv_k[s], "the KV cache"));
        ED_TRY(dalloc(c, kv_bytes, (void **)&c->kv_v[s], "the KV cache"));
        ED_TRY(dalloc(c, (size_t)p->n_ctx, (void **)&c->is_pad[s], "[PAD] flags"));
        CU_TRY(cudaMemset(c->is_pad[s], 0, (size_t)p->n_ctx), "cudaMemset");
    }

    // host staging
    ED_TRY(halloc(B * d, &c->h_x));
    ED_TRY(halloc(B * hd, &c->h_rope));
    ED_TRY(halloc(B * ne, &c->h_router));
    ED_TRY(halloc(B * k, &c->h_gate));
    ED_TRY(halloc(B * k, &c->h_rgate));
    ED_TRY(halloc(B * k, &c->h_sel));
    ED_TRY(halloc(B * k, &c->h_rows));
    ED_TRY(halloc(B, &c->h_wrows));
    ED_TRY(halloc(B * d, &c->h_xb));
    ED_TRY(halloc(B * k * d, &c->h_y));
    ED_TRY(halloc(B, &c->h_pad));
    for (int64_t i = 0; i < B; i++) c->h_x[i] = 1.0f, c->h_wrows[i] = (int32_t)i;
    CU_TRY(cudaMemcpy(c->ones, c->h_x, (size_t)B * sizeof(float), cudaMemcpyHostToDevice), "upload");
    CU_TRY(cudaMemcpy(c->iota, c->h_wrows, (size_t)B * sizeof(int32_t), cudaMemcpyHostToDevice), "upload");
    c->pred = (int32_t *)calloc((size_t)(2 * B * k), sizeof(int32_t));
    c->c_xg = (float *)malloc((size_t)(M * d) * sizeof(float));
    c->c_hg = (float *)malloc((size_t)(M * hp->n_ff) * sizeof(float));
    c->c_hu = (float *)malloc((size_t)(M * hp->n_ff) * sizeof(float));
    c->c_scratch_bytes = 1;
    for (int64_t l = 0; l < hp->n_layer; l++)
        for (int64_t e = 0; e < ne; e++) {
            const edge_layer_weights *L = &m->layers[l];
            const size_t a = edge_matmul_scratch_bytes(L->gate[e].type, L->gate[e].n_cols, M) +
                             edge_matmul_scratch_bytes(L->up[e].type, L->up[e].n_cols, M);
            const size_t b = edge_matmul_scratch_bytes(L->down[e].type, L->down[e].n_cols, M);
            c->c_scratch_bytes = a > c->c_scratch_bytes ? a : c->c_scratch_bytes;
            c->c_scratch_bytes = b > c->c_scratch_bytes ? b : c->c_scratch_bytes;
        }
    c->c_scratch = malloc(c->c_scratch_bytes);
    if (!c->pred || !c->c_xg || !c->c_hg || !c->c_hu || !c->c_scratch)
        return edge_fail(EDGE_ERR_NOMEM, "cuda backend: out of host memory for the CPU experts' buffers");

    // the VRAM expert tier: what the budget holds after everything above
    c->n_units = hp->n_layer * ne;
    c->slot_bytes = need.slot;
    size_t rest = budget - fixed;
    size_t free_now = 0, total_now = 0;
    CU_TRY(cudaMemGetInfo(&free_now, &total_now), "cudaMemGetInfo");
    if (p->gpu_memory == 0) rest = free_now > kMargin ? free_now - kMargin : 0;
    int64_t n_slots = c->slot_bytes ? (int64_t)(rest / c->slot_bytes) : 0;
    if (n_slots > c->n_units) n_slots = c->n_units;
    c->slots = (vslot *)calloc((size_t)(n_slots > 0 ? n_slots : 1), sizeof(vslot));
    c->unit_slot = (int64_t *)malloc((size_t)c->n_units * sizeof(int64_t));
    if (!c->slots || !c->unit_slot) return edge_fail(EDGE_ERR_NOMEM, "cuda backend: out of host memory");
    for (int64_t u = 0; u < c->n_units; u++) c->unit_slot[u] = -1;
    for (int64_t s = 0; s < n_slots; s++) {
        void *pslot;
        if (dalloc(c, c->slot_bytes, &pslot, "an expert slot") != EDGE_OK) break;  // what fits
        c->slots[s].data = (uint8_t *)pslot;
        c->slots[s].unit = -1;
        CU_TRY(cudaEventCreateWithFlags(&c->slots[s].ready, cudaEventDisableTiming), "event");
        c->n_slots = s + 1;
    }
    edge_clear_error();
    // the expert store's policy and half-life (LFU-decay by default, as the RAM tier)
    ED_TRY(edge_expert_policy_init(&c->policy, edge_experts_policy_kind(m->experts), c->n_units,
                                   edge_experts_half_life(m->experts) * (double)hp->n_layer));
    c->have_policy = 1;
    c->store = m->experts;
    if (c->n_slots > 0 && c->n_slots < c->n_units) {  // a VRAM tier that is a cache: prefetch into it
        edge_experts_want_device_prefetch(c->store, 1);
        c->wants_prediction = 1;
    }
    ED_TRY(fill_slots(ctx, c));
    if (c->n_slots < c->n_units) ED_TRY(cpu_probe(ctx, c));  // some experts stay off the device
    if (c->n_slots > 0) {
        ED_TRY(halloc((int64_t)c->slot_bytes, &c->staging[0]));
        ED_TRY(halloc((int64_t)c->slot_bytes, &c->staging[1]));
    }
    // PCIe bandwidth: one pinned upload of up to 8 MiB, timed (the second of two: the first pays setup)
    {
        const size_t probe = c->slot_bytes < (8u << 20) ? (c->slot_bytes > 4096 ? c->slot_bytes : 4096) : (8u << 20);
        uint8_t *hbuf = nullptr;
        void *dbuf = nullptr;
        double best = 0.0;
        if (halloc((int64_t)probe, &hbuf) == EDGE_OK && cudaMalloc(&dbuf, probe) == cudaSuccess) {
            memset(hbuf, 0, probe);
            for (int r = 0; r < 2; r++) {
                const double t0 = now_s();
                (void)cudaMemcpy(dbuf, hbuf, probe, cudaMemcpyHostToDevice);
                const double dt = now_s() - t0;
                if (dt > 0) best = (double)probe / dt;
            }
        }
        (void)cudaGetLastError();
        if (dbuf) (void)cudaFree(dbuf);
        if (hbuf) (void)cudaFreeHost(hbuf);
        c->pcie_bytes_per_s = best > 0 ? best : 12e9;
        edge_clear_error();
    }
    const char *force = getenv("EDGE_CUDA_HYBRID");  // tests: "cpu" or "stream" for every missing expert
    c->force = force && !strcmp(force, "cpu") ? 1 : force && !strcmp(force, "stream") ? 2 : 0;
    c->dense_bytes = need.dense;
    c->state_bytes = need.state;
    c->kv_bytes = need.kv;
    CU_TRY(cudaDeviceSynchronize(), "uploading the weights");
    return EDGE_OK;
}

edge_status cu_init(edge_context *ctx) {
    cu_state *c = (cu_state *)calloc(1, sizeof(cu_state));
    if (!c) return edge_fail(EDGE_ERR_NOMEM, "cuda backend: out of host memory");
    ctx->backend_state = c;
    edge_status st = cu_init_inner(ctx, c);
    if (st != EDGE_OK) {
        const char *msg = edge_last_error();
        char keep[512];
        snprintf(keep, sizeof keep, "%s", msg);
        cu_free(ctx);
        return edge_fail(st, "%s", keep);
    }
    return EDGE_OK;
}

int64_t seq_n_past(const edge_context *ctx, int seq) { return seq == 0 ? ctx->n_past : ctx->seqs[seq - 1].n_past; }
uint8_t *seq_is_pad(const edge_context *ctx, int seq) { return seq == 0 ? ctx->is_pad : ctx->seqs[seq - 1].is_pad; }

edge_status cu_begin(edge_context *ctx, const edge_seq_span *spans, int n_spans, const int32_t *tokens, int64_t n) {
    cu_state *c = state_of(ctx);
    const edge_model *m = ctx->model;
    const edge_model_hparams *hp = &m->hp;
    const int64_t d = hp->n_embd, hd = hp->head_dim, half = hd / 2;
    // [PAD] flags of each span's sequence at its next positions (host copy for the state API, device copy)
    for (int j = 0; j < n_spans; j++) {
        const int64_t np = seq_n_past(ctx, spans[j].seq);
        uint8_t *pad = seq_is_pad(ctx, spans[j].seq);
        for (int64_t i = 0; i < spans[j].n; i++) pad[np + i] = tokens[spans[j].start + i] == 0;
        CU_TRY(cudaMemcpyAsync(c->is_pad[spans[j].seq] + np, pad + np, (size_t)spans[j].n, cudaMemcpyHostToDevice,
                               c->stream),
               "uploading [PAD] flags");
    }
    // x = E[tokens] · embedding_scale, dequantized on the host as the CPU engine does
    CU_TRY(cudaStreamSynchronize(c->stream), "synchronizing");  // h_x / h_rope free again
    const float scale = (float)hp->embedding_scale;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *row = (const uint8_t *)m->token_embd.data + (size_t)tokens[i] * m->token_embd.row_stride;
        float *x = c->h_x + i * d;
        if (m->token_embd.type == EDGE_TYPE_F32)
            memcpy(x, row, (size_t)d * sizeof(float));
        else
            ED_TRY(edge_dequantize(m->token_embd.type, row, d, x));
        for (int64_t cc = 0; cc < d; cc++) x[cc] *= scale;
    }
    CU_TRY(cudaMemcpyAsync(c->x, c->h_x, (size_t)(n * d) * sizeof(float), cudaMemcpyHostToDevice, c->stream),
           "uploading the embeddings");
    // RoPE phases in double on the host, as grok.c
    float *hc = c->h_rope, *hs = c->h_rope + n * half;
    for (int sj = 0; sj < n_spans; sj++) {
        const int64_t np = seq_n_past(ctx, spans[sj].seq);
        for (int64_t i = spans[sj].start; i < spans[sj].start + spans[sj].n; i++) {
            const double pos = (double)(np + i - spans[sj].start);
            for (int64_t j = 0; j < half; j++) {
                const double theta = pos * pow(hp->rope_freq_base, -2.0 * (double)j / (double)hd);
                hc[i * half + j] = (float)cos(theta);
                hs[i * half + j] = (float)sin(theta);
            }
        }
    }
    CU_TRY(cudaMemcpyAsync(c->rope_cos, hc, (size_t)(n * half) * sizeof(float), cudaMemcpyHostToDevice, c->stream),
           "uploading RoPE");
    CU_TRY(cudaMemcpyAsync(c->rope_sin, hs, (size_t)(n * half) * sizeof(float), cudaMemcpyHostToDevice, c->stream),
           "uploading RoPE");
    return EDGE_OK;
}

edge_status cu_norm(edge_context *ctx, int64_t layer, edge_norm_site site, int64_t n) {
    cu_state *c = state_of(ctx);
    const edge_model_hparams *hp = &ctx->model->hp;
    const float *scale = c->layers[layer].norm[site];
    const int64_t d = hp->n_embd;
    if (site == EDGE_NORM_ATTN_IN || site == EDGE_NORM_FFN_IN)
        return edge_cu_rmsnorm(stream_of(c), c->xb, c->x, scale, n, d, hp->rms_eps, 0);
    // x += rms(sub) ⊙ scale (the norm, then the add, unfused: grok.c's order)
    return edge_cu_rmsnorm_add(stream_of(c), c->x, site == EDGE_NORM_ATTN_OUT ? c->ob : c->moe, scale, n, d,
                               hp->rms_eps);
}

edge_status cu_attention(edge_context *ctx, int64_t layer, const edge_seq_span *spans, int n_spans, int64_t n) {
    cu_state *c = state_of(ctx);
    const edge_model_hparams *hp = &ctx->model->hp;
    const dlayer &L = c->layers[layer];
    const int64_t hd = hp->head_dim, nq = hp->n_head * hd, nkv = hp->n_head_kv * hd;
    void *st = stream_of(c);
    ED_TRY(mm(c, L.wq, c->xb, n, c->q));
    ED_TRY(mm(c, L.wk, c->xb, n, c->k));
    ED_TRY(mm(c, L.wv, c->xb, n, c->v));
    ED_TRY(edge_cu_rope(st, c->q, n, hp->n_head, hd, c->rope_cos, c->rope_sin));
    ED_TRY(edge_cu_rope(st, c->k, n, hp->n_head_kv, hd, c->rope_cos, c->rope_sin));
    const size_t layer_off = (size_t)layer * (size_t)ctx->params.n_ctx * c->row_bytes;
    for (int j = 0; j < n_spans; j++) {
        const int seq = spans[j].seq;
        const int64_t i0 = spans[j].start, ns = spans[j].n, np = seq_n_past(ctx, seq);
        uint8_t *kc = c->kv_k[seq] + layer_off, *vc = c->kv_v[seq] + layer_off;
        ED_TRY(edge_cu_kv_store(st, ctx->params.kv_type, kc + (size_t)np * c->row_bytes, c->row_bytes,
                                c->k + i0 * nkv, ns, nkv));
        ED_TRY(edge_cu_kv_store(st, ctx->params.kv_type, vc + (size_t)np * c->row_bytes, c->row_bytes,
                                c->v + i0 * nkv, ns, nkv));
        ED_TRY(edge_cu_attention(st, ctx->params.kv_type, kc, vc, c->row_bytes, c->is_pad[seq], c->q + i0 * nq, ns, np,
                                 hp->n_head, hp->n_head_kv, hd, (float)hp->attn_output_multiplier,
                                 (float)hp->attn_logit_softcap, c->att + i0 * nq, c->att_scratch,
                                 c->att_scratch_bytes));
    }
    return mm(c, L.wo, c->att, n, c->ob);
}

// Start uploading the experts predicted for layer `l` into free or evictable VRAM slots (never one the
// current step computes with).
edge_status vram_prefetch(edge_context *ctx, cu_state *c, int64_t l, const int32_t *pred, int64_t n) {
    const int64_t k = ctx->model->hp.n_expert_used, ne = ctx->model->hp.n_expert;
    if (c->n_slots == 0) return EDGE_OK;
    for (int64_t i = 0; i < n * k; i++) {
        const int32_t e = pred[i];
        if (e < 0 || e >= ne || c->unit_slot[l * ne + e] >= 0) continue;
        int64_t s;
        ED_TRY(stream_expert(ctx, c, l, e, &s));
        if (s < 0) break;
    }
    return EDGE_OK;
}

edge_status cu_predict(edge_context *ctx, int64_t next, int64_t n) {
    cu_state *c = state_of(ctx);
    const edge_model_hparams *hp = &ctx->model->hp;
    const int64_t ne = hp->n_expert;
    const dlayer &N = c->layers[next];
    ED_TRY(edge_cu_rmsnorm(stream_of(c), c->xb, c->x, N.norm[EDGE_NORM_FFN_IN], n, hp->n_embd, hp->rms_eps, 0));
    ED_TRY(mm(c, N.router, c->xb, n, c->router));
    CU_TRY(cudaMemcpyAsync(c->h_router, c->router, (size_t)(n * ne) * sizeof(float), cudaMemcpyDeviceToHost,
                           c->stream),
           "downloading router logits");
    CU_TRY(cudaStreamSynchronize(c->stream), "predicting experts");
    int32_t *pred = c->pred + (next & 1) * c->B * hp->n_expert_used;
    edge_experts_predict(ctx->model->experts, next, c->h_router, n, pred);
    return vram_prefetch(ctx, c, next, pred, n);
}

// One expert on the CPU: rows r0.. of the pack (their token indices in h_rows[r0..], xb on the host), its
// output rows into h_y at the same row offsets. Tiles of M rows (the CPU buffers' size).
edge_status cpu_expert(edge_context *ctx, cu_state *c, int64_t layer, int32_t e, int64_t r0, int64_t m) {
    const edge_model_hparams *hp = &ctx->model->hp;
    const int64_t d = hp->n_embd, nff = hp->n_ff;
    const edge_matrix *w[1][3];
    ED_TRY(edge_experts_acquire(ctx->model->experts, layer, &e, 1, w));
    edge_status st = EDGE_OK;
    for (int64_t t0 = 0; t0 < m && st == EDGE_OK; t0 += c->M) {
        const int64_t mt = m - t0 < c->M ? m - t0 : c->M;
        for (int64_t r = 0; r < mt; r++)
            memcpy(c->c_xg + r * d, c->h_xb + (int64_t)c->h_rows[r0 + t0 + r] * d, (size_t)d * sizeof(float));
        const edge_matrix *g = w[0][0], *u = w[0][1], *dn = w[0][2];
        const edge_mm_part gu[2] = {
            {g->type, g->data, g->row_stride, g->n_rows, g->n_cols, c->c_xg, mt, c->c_hg, nullptr, nullptr, 1.0f},
            {u->type, u->data, u->row_stride, u->n_rows, u->n_cols, c->c_xg, mt, c->c_hu, nullptr, nullptr, 1.0f}};
        const edge_mm_part down = {dn->type, dn->data, dn->row_stride, dn->n_rows, dn->n_cols, c->c_hg, mt,
                                   c->h_y + (r0 + t0) * d, ctx->cpu->gelu_mul, c->c_hu, 1.0f};
        st = edge_matmul_parts(ctx->kernels, ctx->pool, gu, 2, c->c_scratch, c->c_scratch_bytes);
        if (st == EDGE_OK) st = edge_matmul_parts(ctx->kernels, ctx->pool, &down, 1, c->c_scratch, c->c_scratch_bytes);
        (void)nff;
    }
    edge_experts_release(ctx->model->experts, layer, &e, 1);
    return st;
}

// One expert on the device from slot memory: rows r0.. (tokens in rows[r0..] on the device) into ybuf.
edge_status gpu_expert(edge_context *ctx, cu_state *c, int64_t layer, int32_t e, const uint8_t *slot, int64_t r0,
                       int64_t m) {
    const edge_model_hparams *hp = &ctx->model->hp;
    const int64_t d = hp->n_embd, nff = hp->n_ff;
    dmat w[3];
    slot_mats(ctx->model, layer, e, slot, w);
    void *st = stream_of(c);
    for (int64_t t0 = 0; t0 < m; t0 += c->M) {
        const int64_t mt = m - t0 < c->M ? m - t0 : c->M;
        ED_TRY(edge_cu_gather_rows(st, c->xg, c->xb, c->rows + r0 + t0, mt, d));
        ED_TRY(mm(c, w[0], c->xg, mt, c->hg));
        ED_TRY(mm(c, w[1], c->xg, mt, c->hu));
        ED_TRY(edge_cu_gelu_mul(st, c->hg, c->hu, mt * nff));
        ED_TRY(mm(c, w[2], c->hg, mt, c->ybuf + (r0 + t0) * d));
    }
    return EDGE_OK;
}

edge_status cu_moe(edge_context *ctx, int64_t layer, int64_t n, bool predicted) {
    cu_state *c = state_of(ctx);
    const edge_model *m = ctx->model;
    const edge_model_hparams *hp = &m->hp;
    const int64_t d = hp->n_embd, ne = hp->n_expert, k = hp->n_expert_used;
    void *st = stream_of(c);
    // router: softmax and top-k on the device, the choice copied down (the expert store sees it)
    ED_TRY(mm(c, c->layers[layer].router, c->xb, n, c->router));
    ED_TRY(edge_cu_router_topk(st, c->router, n, ne, k, c->sel, c->gate));
    CU_TRY(cudaMemcpyAsync(c->h_sel, c->sel, (size_t)(n * k) * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream),
           "downloading the router's choice");
    CU_TRY(cudaMemcpyAsync(c->h_gate, c->gate, (size_t)(n * k) * sizeof(float), cudaMemcpyDeviceToHost, c->stream),
           "downloading the router's choice");
    CU_TRY(cudaStreamSynchronize(c->stream), "routing");
    const int32_t *pred = predicted ? c->pred + (layer & 1) * c->B * k : nullptr;
    edge_experts_observe(m->experts, layer, ctx->n_past, n, c->h_sel, c->h_gate, pred);
    c->step++;

    // the chosen experts ascending, each with its rows (tokens ascending) packed one expert after another
    int32_t chosen[1024];
    int64_t start[1025], n_chosen = 0, used = 0;
    for (int64_t e = 0; e < ne; e++) {
        const int64_t s0 = used;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < k; j++)
                if (c->h_sel[i * k + j] == e) {
                    c->h_rows[used] = (int32_t)i;
                    c->h_rgate[used++] = c->h_gate[i * k + j];
                }
        if (used > s0) chosen[n_chosen] = (int32_t)e, start[n_chosen++] = s0;
    }
    start[n_chosen] = used;
    CU_TRY(cudaMemcpyAsync(c->rows, c->h_rows, (size_t)used * sizeof(int32_t), cudaMemcpyHostToDevice, c->stream),
           "uploading expert rows");
    // gates reuse the device `gate` array (the router's copy is down already)
    CU_TRY(cudaMemcpyAsync(c->gate, c->h_rgate, (size_t)used * sizeof(float), cudaMemcpyHostToDevice, c->stream),
           "uploading expert gates");

    // where each expert runs: resident -> device; missing -> the CPU, or streamed in (prompt cost model)
    int8_t where[1024];  // 1: device (slot in slot_of), 0: CPU
    int64_t slot_of[1024];
    bool any_cpu = false;
    uint64_t hits = 0, misses = 0, n_gpu = 0, n_cpu = 0;
    for (int64_t g = 0; g < n_chosen; g++) {  // the resident ones first: never evicted by this step's misses
        const int64_t s = c->unit_slot[layer * ne + chosen[g]];
        if (s >= 0) c->slots[s].used_step = c->step;
    }
    for (int64_t g = 0; g < n_chosen; g++) {
        const int32_t e = chosen[g];
        const int64_t unit = layer * ne + e, rows = start[g + 1] - start[g];
        int64_t s = c->unit_slot[unit];
        if (s >= 0) {
            hits++;
        } else {
            misses++;
            const size_t bytes = expert_bytes(m, layer, e);
            const int64_t params = m->layers[layer].gate[e].n_rows * m->layers[layer].gate[e].n_cols * 3;
            const bool stream_it = c->force == 2 || (c->force == 0 && n > 1 &&
                                                     (double)bytes / c->pcie_bytes_per_s <
                                                         cpu_seconds(ctx, c, bytes, params, rows));
            if (stream_it) ED_TRY(stream_expert(ctx, c, layer, e, &s));
        }
        if (s >= 0) {
            c->slots[s].used_step = c->step;
            edge_expert_policy_touch(&c->policy, unit, c->step);
            CU_TRY(wait_for_upload(c, c->slots[s].ready), "waiting for an expert upload");
        }
        where[g] = s >= 0;
        slot_of[g] = s;
        any_cpu |= s < 0;
    }
    if (any_cpu) {  // the CPU experts' inputs
        CU_TRY(cudaMemcpyAsync(c->h_xb, c->xb, (size_t)(n * d) * sizeof(float), cudaMemcpyDeviceToHost, c->stream),
               "downloading xb");
        CU_TRY(cudaStreamSynchronize(c->stream), "downloading xb");
    }
    // device experts enqueued first, then the CPU ones computed meanwhile
    for (int64_t g = 0; g < n_chosen; g++)
        if (where[g]) {
            ED_TRY(gpu_expert(ctx, c, layer, chosen[g], c->slots[slot_of[g]].data, start[g], start[g + 1] - start[g]));
            n_gpu++;
        }
    for (int64_t g = 0; g < n_chosen; g++)
        if (!where[g]) {
            ED_TRY(cpu_expert(ctx, c, layer, chosen[g], start[g], start[g + 1] - start[g]));
            CU_TRY(cudaMemcpyAsync(c->ybuf + start[g] * d, c->h_y + start[g] * d,
                                   (size_t)((start[g + 1] - start[g]) * d) * sizeof(float), cudaMemcpyHostToDevice,
                                   c->stream),
                   "uploading CPU expert outputs");
            n_cpu++;
        }
    // moe = Σ gate · y, each token's experts ascending (the CPU engine's order)
    CU_TRY(cudaMemsetAsync(c->moe, 0, (size_t)(n * d) * sizeof(float), c->stream), "cudaMemset");
    for (int64_t g = 0; g < n_chosen; g++)
        ED_TRY(edge_cu_scatter_add_gated(st, c->moe, c->ybuf + start[g] * d, c->rows + start[g], c->gate + start[g],
                                         start[g + 1] - start[g], d));
    edge_experts_count_device(m->experts, hits, misses, n_gpu, n_cpu, 0, 0);
    return EDGE_OK;
}

edge_status cu_logits(edge_context *ctx, const uint8_t *want, int64_t first_logit, int64_t n, float *logits) {
    cu_state *c = state_of(ctx);
    const edge_model_hparams *hp = &ctx->model->hp;
    const int64_t d = hp->n_embd;
    int64_t nl = 0;
    for (int64_t i = 0; i < n; i++)
        if (want ? want[i] : i >= first_logit) c->h_wrows[nl++] = (int32_t)i;
    if (nl == 0 || !logits) return EDGE_OK;
    void *st = stream_of(c);
    CU_TRY(cudaMemcpyAsync(c->rows, c->h_wrows, (size_t)nl * sizeof(int32_t), cudaMemcpyHostToDevice, c->stream),
           "uploading rows");
    ED_TRY(edge_cu_gather_rows(st, c->xb, c->x, c->rows, nl, d));
    ED_TRY(edge_cu_rmsnorm(st, c->xb, c->xb, c->output_norm, nl, d, hp->rms_eps, 0));
    // rms_final(x) · Eᵀ · output_scale, logit_rows rows at a time through the device buffer
    for (int64_t r0 = 0; r0 < nl; r0 += c->logit_rows) {
        const int64_t nr = nl - r0 < c->logit_rows ? nl - r0 : c->logit_rows;
        ED_TRY(mm(c, c->output, c->xb + r0 * d, nr, c->logit_buf, (float)hp->output_scale));
        CU_TRY(cudaMemcpyAsync(logits + r0 * hp->n_vocab, c->logit_buf, (size_t)(nr * hp->n_vocab) * sizeof(float),
                               cudaMemcpyDeviceToHost, c->stream),
               "downloading logits");
        CU_TRY(cudaStreamSynchronize(c->stream), "the forward pass");
    }
    return EDGE_OK;
}

}  // namespace

extern "C" {

const edge_backend edge_cuda_backend = {"cuda", cu_init, cu_free, cu_begin, cu_norm, cu_attention, cu_predict,
                                        cu_moe, cu_logits};

edge_status edge_cuda_backend_usable(const edge_model *model, const edge_context_params *params) {
    int dev = 0;
    size_t free_b = 0, total_b = 0, budget = 0;
    ED_TRY(probe_device(&dev, &free_b, &total_b));
    ED_TRY(budget_for(params, free_b, &budget));
    const need_t need = device_need(model, params);
    const size_t fixed = need.dense + need.state + need.kv;
    if (fixed > budget || fixed > free_b)
        return edge_fail(EDGE_ERR_NOMEM, "device=cuda: the dense weights, KV cache and buffers need %.1f MiB; "
                                         "gpu_memory allows %.1f MiB, the device has %.1f MiB free",
                         fixed / 1048576.0, budget / 1048576.0, free_b / 1048576.0);
    return EDGE_OK;
}

edge_status edge_cuda_backend_sync_kv(edge_context *ctx, int to_host) {
    cu_state *c = state_of(ctx);
    if (!c) return EDGE_OK;
    const size_t kv_bytes = (size_t)ctx->kv.n_layer * (size_t)ctx->params.n_ctx * c->row_bytes;
    const cudaMemcpyKind kind = to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice;
    CU_TRY(cudaStreamSynchronize(c->stream), "synchronizing");
    // sequence 0 (the state API's)
    if (to_host) {
        CU_TRY(cudaMemcpy(ctx->kv.k, c->kv_k[0], kv_bytes, kind), "downloading the KV cache");
        CU_TRY(cudaMemcpy(ctx->kv.v, c->kv_v[0], kv_bytes, kind), "downloading the KV cache");
    } else {
        CU_TRY(cudaMemcpy(c->kv_k[0], ctx->kv.k, kv_bytes, kind), "uploading the KV cache");
        CU_TRY(cudaMemcpy(c->kv_v[0], ctx->kv.v, kv_bytes, kind), "uploading the KV cache");
        CU_TRY(cudaMemcpy(c->is_pad[0], ctx->is_pad, (size_t)ctx->params.n_ctx, kind), "uploading [PAD] flags");
    }
    return EDGE_OK;
}

edge_status edge_cuda_backend_info(const edge_context *ctx, edge_gpu_info *out) {
    const cu_state *c = (const cu_state *)ctx->backend_state;
    memset(out, 0, sizeof *out);
    if (!c) return EDGE_OK;
    out->dense_bytes = c->dense_bytes;
    out->kv_bytes = c->kv_bytes;
    out->state_bytes = c->state_bytes;
    out->slot_bytes = c->slot_bytes;
    out->n_slots = c->n_slots;
    out->n_units = c->n_units;
    out->pcie_bytes_per_s = c->pcie_bytes_per_s;
    out->cpu_expert_s = c->cpu_s1;
    out->cpu_expert_s_per_row = c->cpu_s_row;
    return EDGE_OK;
}

}  // extern "C"
