/* engine.h — internal structures of the Grok engine (model weights, context, KV cache); not public.
 *
 * Layout follows llama2.c: the hyperparameters (edge_model_hparams, public), the weights as typed views
 * into the mapped GGUF (edge_weights: zero copy), and the run state (every activation buffer, allocated
 * once when a context is created). grok.c holds the forward pass, run by a backend (backend.h; the CPU one
 * in cpu_backend.c, cpu_attention.c, cpu_moe.c), model.c loading and validation, kv_cache.c the cache,
 * context.c the public context API. */
#ifndef EDGE_ENGINE_H
#define EDGE_ENGINE_H

#include <stdatomic.h>

#include "common.h"
#include "kernels/kernels.h"

/* A 2-D weight matrix in GGUF layout: n_rows rows of n_cols elements of `type`, rows row_stride bytes apart. */
typedef struct edge_matrix {
    const void *data;
    int type;
    int64_t n_rows, n_cols;
    size_t row_stride;
} edge_matrix;

/* Weights of one decoder layer. Norm scales are fp32 (pointing into the mapping when stored as F32,
 * otherwise converted once at load into model-owned memory). Experts are per-expert matrices, so the
 * stacked 3-D form (ffn_*_exps) and the older per-expert 2-D form (ffn_*.E) look the same here. */
typedef struct edge_layer_weights {
    const float *attn_norm;         /* rms_norm   — before attention */
    edge_matrix wq, wk, wv, wo;     /* multi_head_attention/{query,key,value,linear} */
    const float *attn_output_norm;  /* rms_norm_1 — after attention, before the residual add */
    const float *ffn_norm;          /* rms_norm_2 — before the MoE */
    edge_matrix router;             /* router: [n_expert rows, n_embd cols] */
    edge_matrix *gate, *up, *down;  /* [n_expert] each: moe/linear (gelu'd), moe/linear_v, moe/linear_1 */
    const float *layer_output_norm; /* rms_norm_3 — after the MoE, before the residual add */
} edge_layer_weights;

struct edge_model {
    edge_gguf *gguf;
    char *path;
    edge_model_hparams hp;
    edge_matrix token_embd; /* [n_vocab rows, n_embd cols]; also the output projection when tied */
    edge_matrix output;     /* = token_embd unless the file has its own `output` tensor */
    const float *output_norm;
    edge_layer_weights *layers;
    edge_matrix *expert_storage; /* n_layer * 3 * n_expert matrices, pointed to by layers[l].gate/up/down */
    float **owned;               /* norm scales converted at load */
    int n_owned;
    struct edge_expert_store *experts; /* where the experts come from (experts/expert_store.h) */
};

/* KV cache: K and V per layer as [n_ctx][n_head_kv * head_dim] rows of `type` (F16 or Q8_0). */
typedef struct edge_kv_cache {
    int type;
    int64_t n_layer, n_ctx, row_elems; /* row_elems = n_head_kv * head_dim */
    size_t row_bytes;
    uint8_t *k, *v; /* n_layer * n_ctx * row_bytes each */
} edge_kv_cache;

edge_status edge_kv_cache_init(edge_kv_cache *kv, int type, int64_t n_layer, int64_t n_ctx, int64_t row_elems);
void edge_kv_cache_free(edge_kv_cache *kv);
/* Store one row of row_elems floats at (layer, pos). */
void edge_kv_cache_store(edge_kv_cache *kv, uint8_t *base, int64_t layer, int64_t pos, const float *src);
static inline uint8_t *edge_kv_row(const edge_kv_cache *kv, uint8_t *base, int64_t layer, int64_t pos) {
    return base + ((size_t)layer * (size_t)kv->n_ctx + (size_t)pos) * kv->row_bytes;
}
/* Convert n (a multiple of 32 for Q8_0) cached elements starting at element `first` of a row to floats. */
void edge_kv_load(const edge_kv_cache *kv, const uint8_t *row, int64_t first, int64_t n, float *dst,
                  const float *f16_table);

/* Rows of one expert matmul in prompt processing. Grok-1's expert hidden states are 32768 wide, so
 * [M, n_ff] x 2 floats cost 32 MiB at M = 128 (256 MiB at the default n_batch of 512), and a batch of
 * 512 tokens sends ~128 rows to each expert on average: one tile, same weight traffic. */
#define EDGE_MOE_TILE 128

/* Every activation buffer of a context, sized for n_batch tokens and allocated once at creation. */
typedef struct edge_run_state {
    float *x;           /* [B, n_embd] the residual stream */
    float *xb;          /* [B, n_embd] normed input of a sublayer */
    float *q;           /* [B, n_head * head_dim] */
    float *k, *v;       /* [B, n_head_kv * head_dim] */
    float *att;         /* [B, n_head * head_dim] attention output before Wo */
    float *ob;          /* [B, n_embd] sublayer output */
    float *rope_cos;    /* [B, head_dim / 2] */
    float *rope_sin;    /* [B, head_dim / 2] */
    float *scores;      /* [n_threads, EDGE_ATTN_TILE_ROWS, edge_attn_score_stride(n_ctx)] attention probabilities */
    float *qtile;       /* [n_threads, EDGE_ATTN_TILE_ROWS, head_dim] a tile's queries, gathered */
    float *otile;       /* [n_threads, EDGE_ATTN_TILE_ROWS, head_dim] their outputs, before the scatter */
    float *kvrow;       /* [n_threads, head_dim] a dequantized cached K or V row */
    float *router;      /* [B, n_expert] router logits, then probabilities */
    int32_t *sel;       /* [B, n_expert_used] selected experts */
    float *sel_gate;    /* [B, n_expert_used] their gates (softmax probabilities, not renormalized) */
    int32_t *pred_sel;  /* [2, B, n_expert_used] experts predicted for a layer (expert prefetch), by layer parity */
    int64_t moe_pred_stride; /* B * n_expert_used */
    int32_t *rows;      /* [M] the tokens of a pack of expert tiles, a row each (cpu_moe.c) */
    float *rows_gate;   /* [M] their gates */
    int64_t moe_tile;   /* M = min(B, EDGE_MOE_TILE): rows of a pack of expert tiles (bounds the buffers below) */
    int64_t moe_max_tiles;  /* T = min(n_expert, EDGE_MM_MAX_PARTS / 2): tiles in a pack */
    int32_t *tile_expert;   /* [T] a pack's tiles: expert */
    int64_t *tile_start;    /* [T] and first row */
    float *xg;          /* [M, n_embd] gathered expert inputs */
    float *hg, *hu;     /* [M, n_ff] expert hidden states (gate/gelu side, up side) */
    float *yo;          /* [M, n_embd] expert outputs */
    float *moe;         /* [B, n_embd] weighted sum of the selected experts */
    void *scratch;      /* matmul scratch (activations quantized on the fly) */
    size_t scratch_bytes;
} edge_run_state;

/* The attention loops over n_keys cached rows of one KV head's slice (row t at base + t * stride), per
 * cache type, AVX2, for nh (1..EDGE_ATTN_TILE_ROWS) query rows at once: the heads of one KV head, and in
 * a prompt batch those of several tokens, each cached row read once for all of them (the rows of a long
 * context leave L2 between heads: at 4096 positions a head's slice of K or V is 1 MiB here). Queries
 * q + r * n, scores out[r * out_stride + t] = q_r · k_t; probabilities p + r * p_stride, sums
 * acc + r * n = Σ_t p[t] v_t (keys with p[t] == 0 skipped). Each row gets bit for bit what it gets alone
 * (nh = 1). The loops take the rows in groups of EDGE_ATTN_MAX_HEADS. */
#define EDGE_ATTN_MAX_HEADS 4
/* Query rows attended together (the loops keep each block of cached rows in L1 for all the groups): as
 * many tokens of a prompt batch as fit, so a prompt reads the cache once per tile of tokens, not once per
 * token (8000-token prompt on the bench's file: 32 rows 7-13 % faster than 16, 64 no faster than 32). */
#define EDGE_ATTN_TILE_ROWS 32
/* Floats between two rows of attention scores: n_ctx rounded up to 1024, plus 64, so the rows of a tile lie
 * 256 bytes apart modulo 4 KiB (rows a multiple of 4 KiB apart make every load of the loops wait on the
 * other rows' stores with the same address bits: 4K aliasing, -35 % in the scores, -45 % in the sums). */
static inline size_t edge_attn_score_stride(int64_t n_ctx) { return (size_t)((n_ctx + 1023) / 1024 * 1024 + 64); }
/* The loops per ISA and cache type (their types: kernels.h; chosen in cpu_tables.c). */
void edge_attn_scores_multi_f16_avx2(const float *q, int nh, const uint8_t *k0, size_t stride, int64_t n_keys,
                                     int64_t n, float *out, size_t out_stride);
void edge_attn_wsum_multi_f16_avx2(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0,
                                   size_t stride, int64_t n_keys, int64_t n);
void edge_attn_scores_multi_f32_avx2(const float *q, int nh, const uint8_t *k0, size_t stride, int64_t n_keys,
                                     int64_t n, float *out, size_t out_stride);
void edge_attn_wsum_multi_f32_avx2(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0,
                                   size_t stride, int64_t n_keys, int64_t n);
/* Q8_0: n a multiple of 32 */
void edge_attn_scores_multi_q8_0_avx2(const float *q, int nh, const uint8_t *k0, size_t stride, int64_t n_keys,
                                      int64_t n, float *out, size_t out_stride);
void edge_attn_wsum_multi_q8_0_avx2(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0,
                                    size_t stride, int64_t n_keys, int64_t n);
/* Attention softcap and exp (kernels.h, edge_attn_softcap_fn / edge_attn_exp_fn). */
float edge_attn_softcap_avx2(float *s, int64_t n, float mult, float cap);
void edge_attn_exp_avx2(float *s, int64_t n, float max);
/* h = gelu_tanh(h) ⊙ u over n elements (kernels.h, edge_gelu_mul_fn). */
void edge_gelu_mul_avx2(float *h, const float *u, int64_t n);
/* The same loops and helpers with arm64 Advanced SIMD (attention_neon.c; compiled for arm64 only). */
void edge_attn_scores_multi_f16_neon(const float *q, int nh, const uint8_t *k0, size_t stride, int64_t n_keys,
                                     int64_t n, float *out, size_t out_stride);
void edge_attn_wsum_multi_f16_neon(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0,
                                   size_t stride, int64_t n_keys, int64_t n);
void edge_attn_scores_multi_f32_neon(const float *q, int nh, const uint8_t *k0, size_t stride, int64_t n_keys,
                                     int64_t n, float *out, size_t out_stride);
void edge_attn_wsum_multi_f32_neon(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0,
                                   size_t stride, int64_t n_keys, int64_t n);
void edge_attn_scores_multi_q8_0_neon(const float *q, int nh, const uint8_t *k0, size_t stride, int64_t n_keys,
                                      int64_t n, float *out, size_t out_stride);
void edge_attn_wsum_multi_q8_0_neon(float *acc, int nh, const float *p, size_t p_stride, const uint8_t *v0,
                                    size_t stride, int64_t n_keys, int64_t n);
float edge_attn_softcap_neon(float *s, int64_t n, float mult, float cap);
void edge_attn_exp_neon(float *s, int64_t n, float max);
void edge_gelu_mul_neon(float *h, const float *u, int64_t n);
void edge_gelu_mul_scalar(float *h, const float *u, int64_t n);

/* A sequence slot beyond the first of a multi-sequence context (params.n_seq > 1): its own KV cache,
 * length and [PAD] flags. Sequence 0 lives in the context's kv / n_past / is_pad. */
typedef struct edge_seq_slot {
    edge_kv_cache kv;
    int64_t n_past;
    uint8_t *is_pad; /* [n_ctx] */
} edge_seq_slot;

struct edge_context {
    const edge_model *model;
    edge_context_params params;
    int n_threads;
    edge_threadpool *pool;
    const edge_cpu_kernels *cpu; /* this context's ISA path: every CPU operation (kernels.h) */
    const edge_kernels *kernels; /* = cpu->matmul, the matrix products */
    const struct edge_backend *backend; /* where the forward pass runs (backend.h; chosen in edge_context_create) */
    void *backend_state;                /* the backend's own state (its init / free) */
    edge_kv_cache kv;
    int64_t n_past;
    uint8_t *is_pad; /* [n_ctx] whether the token at a position is [PAD] (id 0): masked as a key */
    edge_run_state s;
    float *f16_table; /* 65536 entries: binary16 bit pattern -> float, for reading an F16 cache */
    int n_seq;                 /* sequence slots (1: the context's own) */
    edge_seq_slot *seqs;       /* [n_seq - 1]: sequences 1..n_seq-1 */
    int64_t *seq_tmp;          /* [2 * n_seq] batch.c's bookkeeping (preallocated) */
    _Atomic int cancel; /* edge_context_set_cancel: the forward pass stops before its next layer */
};

/* Make sequence seq the context's current one (its kv / n_past / is_pad in the context's fields) by
 * swapping it with sequence 0's; the same call swaps them back. Sequence 0: nothing to do. */
static inline void edge_seq_swap(edge_context *ctx, int seq) {
    if (seq <= 0) return;
    edge_seq_slot *o = &ctx->seqs[seq - 1];
    const edge_kv_cache kv = ctx->kv;
    const int64_t n_past = ctx->n_past;
    uint8_t *is_pad = ctx->is_pad;
    ctx->kv = o->kv;
    ctx->n_past = o->n_past;
    ctx->is_pad = o->is_pad;
    o->kv = kv;
    o->n_past = n_past;
    o->is_pad = is_pad;
}

/* The slots of sequences 1..n_seq-1 (batch.c; called by edge_context_create / _free). */
edge_status edge_seq_slots_create(edge_context *ctx, int n_seq);
void edge_seq_slots_free(edge_context *ctx);

/* The tokens [start, start + n) of a pass that belong to one sequence. */
typedef struct edge_seq_span {
    int seq;
    int64_t start, n;
} edge_seq_span;


/* The thread count a context gets for n_threads 0 on n_cores cores (context.c). */
int edge_default_threads(const edge_model *m, int n_cores);

/* Forward pass of n <= n_batch tokens at positions ctx->n_past.. (grok.c). Writes logits of the
 * rows [first_logit, n) into `logits` (n - first_logit rows) when logits is not NULL. */
edge_status edge_grok_forward(edge_context *ctx, const int32_t *tokens, int64_t n, float *logits,
                              int64_t first_logit);
/* Forward pass of n <= n_batch tokens of several sequences (grok.c): span j's tokens go to sequence
 * spans[j].seq at its next positions (the spans cover 0..n-1 in order; each sequence at most once). Row i's
 * logits are written when want[i] (want NULL: i >= first_logit), the wanted rows one after another.
 * Does not advance any n_past (the caller does). */
edge_status edge_grok_forward_spans(edge_context *ctx, const edge_seq_span *spans, int n_spans, const int32_t *tokens,
                                    int64_t n, const uint8_t *want, int64_t first_logit, float *logits);

#endif /* EDGE_ENGINE_H */
