/* model.c — load a Grok GGUF: check the architecture, read the hyperparameters from metadata, find
 * and validate every tensor (shape, type, row size), and build zero-copy views into the mapping. */
#include <stdio.h>
#include <stdlib.h>

#include "blocks.h"
#include "engine/engine.h"
#include "experts/expert_store.h"

/* Constants llama.cpp's grok graph uses when a GGUF does not carry them (files made by llama.cpp's
 * convert_hf_to_gguf.py). They are Grok-1's run.py values (docs/grok1.md); our converter writes them as
 * metadata, and then the metadata wins. */
#define GROK1_EMBEDDING_SCALE 78.38367176906169
#define GROK1_OUTPUT_SCALE 0.5773502691896257
#define GROK1_ATTN_OUTPUT_MULTIPLIER 0.08838834764831845
#define GROK1_ATTN_LOGIT_SOFTCAP 30.0

static edge_status get_int_opt(const edge_gguf *g, const char *key, int64_t *out, bool *found) {
    int64_t idx;
    edge_status st = edge_gguf_find_key(g, key, &idx);
    if (st != EDGE_OK) return st;
    *found = idx >= 0;
    return idx >= 0 ? edge_gguf_get_int(g, key, out) : EDGE_OK;
}

/* The first of `keys` (NULL-terminated) present in the file, else `fallback`. */
static edge_status get_float_any(const edge_gguf *g, const char *const *keys, double fallback, double *out) {
    for (; *keys; keys++) {
        int64_t idx;
        edge_status st = edge_gguf_find_key(g, *keys, &idx);
        if (st != EDGE_OK) return st;
        if (idx >= 0) return edge_gguf_get_float(g, *keys, out);
    }
    *out = fallback;
    return EDGE_OK;
}

static edge_status read_hparams(edge_model *m) {
    const edge_gguf *g = m->gguf;
    const char *path = m->path;
    edge_model_hparams *hp = &m->hp;
    edge_status st;
    const char *arch;
    uint64_t arch_len;
    if ((st = edge_gguf_get_str(g, "general.architecture", &arch, &arch_len)) != EDGE_OK) return st;
    if (arch_len != 4 || memcmp(arch, "grok", 4) != 0)
        return edge_fail(EDGE_ERR_UNSUPPORTED, "%s: architecture '%.*s' is not grok", path,
                         (int)(arch_len > 64 ? 64 : arch_len), arch);

    struct { const char *key; int64_t *dst; } req[] = {
        {"grok.context_length", &hp->n_ctx_train},      {"grok.embedding_length", &hp->n_embd},
        {"grok.block_count", &hp->n_layer},             {"grok.feed_forward_length", &hp->n_ff},
        {"grok.attention.head_count", &hp->n_head},     {"grok.attention.head_count_kv", &hp->n_head_kv},
        {"grok.expert_count", &hp->n_expert},           {"grok.expert_used_count", &hp->n_expert_used},
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if ((st = edge_gguf_get_int(g, req[i].key, req[i].dst)) != EDGE_OK) return st;
    bool found;
    int64_t v;
    /* llama.cpp may write the expert width separately. */
    if ((st = get_int_opt(g, "grok.expert_feed_forward_length", &v, &found)) != EDGE_OK) return st;
    if (found && v > 0) hp->n_ff = v;
    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 || hp->n_ff <= 0 ||
        hp->n_expert <= 0 || hp->n_expert_used <= 0 || hp->n_ctx_train <= 0 || hp->n_expert > 1024 ||
        hp->n_expert_used > hp->n_expert || hp->n_head % hp->n_head_kv != 0 || hp->n_embd > (1 << 20) ||
        hp->n_head > 4096 || hp->n_layer > 4096 || hp->n_ff > (1 << 24))
        return edge_fail(EDGE_ERR_FORMAT,
                         "%s: inconsistent hyperparameters (n_embd %lld, n_layer %lld, n_head %lld, n_head_kv %lld, "
                         "n_ff %lld, n_expert %lld, n_expert_used %lld, context_length %lld)",
                         path, (long long)hp->n_embd, (long long)hp->n_layer, (long long)hp->n_head,
                         (long long)hp->n_head_kv, (long long)hp->n_ff, (long long)hp->n_expert,
                         (long long)hp->n_expert_used, (long long)hp->n_ctx_train);
    hp->head_dim = hp->n_embd / hp->n_head;
    if ((st = get_int_opt(g, "grok.attention.key_length", &v, &found)) != EDGE_OK) return st;
    if (found) hp->head_dim = v;
    if (hp->head_dim <= 0 || hp->head_dim % 2 != 0 || hp->head_dim > 4096)
        return edge_fail(EDGE_ERR_FORMAT, "%s: head dimension %lld must be positive and even", path,
                         (long long)hp->head_dim);
    if ((st = get_int_opt(g, "grok.attention.value_length", &v, &found)) != EDGE_OK) return st;
    if (found && v != hp->head_dim)
        return edge_fail(EDGE_ERR_UNSUPPORTED, "%s: value_length %lld differs from key_length %lld", path,
                         (long long)v, (long long)hp->head_dim);

    static const char *const k_eps[] = {"grok.attention.layer_norm_rms_epsilon", NULL};
    static const char *const k_rope[] = {"grok.rope.freq_base", NULL};
    static const char *const k_emb[] = {"grok.embedding_scale", NULL};
    static const char *const k_out[] = {"grok.output_scale", "grok.logit_scale", NULL};
    static const char *const k_att[] = {"grok.attention.output_multiplier", "grok.attention.output_scale", NULL};
    static const char *const k_cap[] = {"grok.attn_logit_softcapping", NULL};
    if ((st = edge_gguf_get_float(g, k_eps[0], &hp->rms_eps)) != EDGE_OK) return st;
    if ((st = get_float_any(g, k_rope, 10000.0, &hp->rope_freq_base)) != EDGE_OK) return st;
    if ((st = get_float_any(g, k_emb, GROK1_EMBEDDING_SCALE, &hp->embedding_scale)) != EDGE_OK) return st;
    if ((st = get_float_any(g, k_out, GROK1_OUTPUT_SCALE, &hp->output_scale)) != EDGE_OK) return st;
    if ((st = get_float_any(g, k_att, GROK1_ATTN_OUTPUT_MULTIPLIER, &hp->attn_output_multiplier)) != EDGE_OK)
        return st;
    if ((st = get_float_any(g, k_cap, GROK1_ATTN_LOGIT_SOFTCAP, &hp->attn_logit_softcap)) != EDGE_OK) return st;
    if (!(hp->rms_eps >= 0) || !(hp->rope_freq_base > 0) || !(hp->attn_logit_softcap >= 0))
        return edge_fail(EDGE_ERR_FORMAT, "%s: bad rms epsilon, rope base or logit cap", path);
    return EDGE_OK;
}

/* Find tensor `name`; *found = false if absent (error only when `required`). */
static edge_status find(const edge_model *m, const char *name, bool required, edge_gguf_tensor_info *ti,
                        bool *found) {
    int64_t idx;
    edge_status st = edge_gguf_find_tensor(m->gguf, name, &idx);
    if (st != EDGE_OK) return st;
    if (idx < 0) {
        if (found) *found = false;
        if (required) return edge_fail(EDGE_ERR_FORMAT, "%s: tensor '%s' is missing", m->path, name);
        return EDGE_OK;
    }
    if (found) *found = true;
    return edge_gguf_tensor(m->gguf, idx, ti);
}

static edge_status check_shape(const edge_model *m, const char *name, const edge_gguf_tensor_info *ti, int64_t ne0,
                               int64_t ne1, int64_t ne2) {
    const int64_t want[4] = {ne0, ne1, ne2, 1};
    for (int d = 0; d < 4; d++)
        if (ti->ne[d] != want[d])
            return edge_fail(EDGE_ERR_FORMAT, "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld]",
                             m->path, name, (long long)ti->ne[0], (long long)ti->ne[1], (long long)ti->ne[2],
                             (long long)ti->ne[3], (long long)ne0, (long long)ne1, (long long)ne2);
    return EDGE_OK;
}

/* A matrix view of a 2-D tensor, or of matrix i of a 3-D tensor. */
static edge_status make_matrix(const edge_model *m, const char *name, const edge_gguf_tensor_info *ti, int64_t i,
                               edge_matrix *out) {
    /* the types the CPU paths multiply (every path the scalar one's; its table answers without detection) */
    static const edge_cpu_features no_features;
    if (!edge_cpu_kernels_for(EDGE_ISA_SCALAR, &no_features)->multiplies(ti->type)) {
        const char *tname = "unknown";
        edge_type_info(ti->type, NULL, NULL, &tname);
        return edge_fail(EDGE_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s (%d), which the engine cannot multiply",
                         m->path, name, tname, ti->type);
    }
    int64_t row_bytes;
    if (edge_row_bytes(ti->type, ti->ne[0], &row_bytes) != EDGE_OK)
        return edge_fail(EDGE_ERR_FORMAT, "%s: tensor '%s': rows of %lld elements do not fit type %d", m->path, name,
                         (long long)ti->ne[0], ti->type);
    uint64_t need = (uint64_t)row_bytes * (uint64_t)ti->ne[1] * (uint64_t)ti->ne[2];
    if (need > ti->nbytes)
        return edge_fail(EDGE_ERR_FORMAT, "%s: tensor '%s' holds %llu bytes, its shape needs %llu", m->path, name,
                         (unsigned long long)ti->nbytes, (unsigned long long)need);
    out->data = (const uint8_t *)ti->data + (size_t)i * (size_t)ti->ne[1] * (size_t)row_bytes;
    out->type = ti->type;
    out->n_rows = ti->ne[1];
    out->n_cols = ti->ne[0];
    out->row_stride = (size_t)row_bytes;
    return EDGE_OK;
}

static edge_status load_matrix(edge_model *m, const char *name, int64_t rows, int64_t cols, edge_matrix *out) {
    edge_gguf_tensor_info ti;
    edge_status st = find(m, name, true, &ti, NULL);
    if (st != EDGE_OK) return st;
    if ((st = check_shape(m, name, &ti, cols, rows, 1)) != EDGE_OK) return st;
    return make_matrix(m, name, &ti, 0, out);
}

/* A norm scale vector of n floats: zero copy when stored as F32, else converted once. */
static edge_status load_norm(edge_model *m, const char *name, const char *alt, int64_t n, const float **out) {
    edge_gguf_tensor_info ti;
    bool found;
    edge_status st = find(m, name, alt == NULL, &ti, &found);
    if (st != EDGE_OK) return st;
    if (!found) {
        if ((st = find(m, alt, true, &ti, NULL)) != EDGE_OK) return st;
        name = alt;
    }
    if ((st = check_shape(m, name, &ti, n, 1, 1)) != EDGE_OK) return st;
    if (ti.type == EDGE_TYPE_F32) {
        if (ti.nbytes < (uint64_t)n * 4 || ((uintptr_t)ti.data & 3) != 0)
            return edge_fail(EDGE_ERR_FORMAT, "%s: tensor '%s' is too small or misaligned", m->path, name);
        *out = (const float *)ti.data;
        return EDGE_OK;
    }
    int64_t row_bytes;
    if (edge_row_bytes(ti.type, n, &row_bytes) != EDGE_OK || (uint64_t)row_bytes > ti.nbytes)
        return edge_fail(EDGE_ERR_FORMAT, "%s: tensor '%s' of type %d does not hold %lld elements", m->path, name,
                         ti.type, (long long)n);
    float *buf = malloc((size_t)n * sizeof(float));
    if (!buf) return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory for '%s'", m->path, name);
    m->owned[m->n_owned++] = buf;
    if ((st = edge_dequantize(ti.type, ti.data, n, buf)) != EDGE_OK) return st;
    *out = buf;
    return EDGE_OK;
}

/* Experts of layer l for one role: the stacked 3-D tensor `blk.l.<stacked>.weight`, or the older
 * per-expert 2-D tensors `blk.l.<single>.E.weight`. Matrices of n_rows x n_cols each. */
static edge_status load_experts(edge_model *m, int64_t l, const char *stacked, const char *single, int64_t n_rows,
                                int64_t n_cols, edge_matrix *out) {
    char name[128];
    edge_gguf_tensor_info ti;
    bool found;
    edge_status st;
    snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)l, stacked);
    if ((st = find(m, name, false, &ti, &found)) != EDGE_OK) return st;
    if (found) {
        if ((st = check_shape(m, name, &ti, n_cols, n_rows, m->hp.n_expert)) != EDGE_OK) return st;
        for (int64_t e = 0; e < m->hp.n_expert; e++)
            if ((st = make_matrix(m, name, &ti, e, &out[e])) != EDGE_OK) return st;
        return EDGE_OK;
    }
    char first[128];
    snprintf(first, sizeof first, "blk.%lld.%s.0.weight", (long long)l, single);
    if ((st = find(m, first, false, &ti, &found)) != EDGE_OK) return st;
    if (!found) return edge_fail(EDGE_ERR_FORMAT, "%s: tensor '%s' is missing", m->path, name);
    for (int64_t e = 0; e < m->hp.n_expert; e++) {
        snprintf(name, sizeof name, "blk.%lld.%s.%lld.weight", (long long)l, single, (long long)e);
        if ((st = load_matrix(m, name, n_rows, n_cols, &out[e])) != EDGE_OK) return st;
    }
    return EDGE_OK;
}

static edge_status load_weights(edge_model *m) {
    edge_model_hparams *hp = &m->hp;
    const int64_t d = hp->n_embd, nq = hp->n_head * hp->head_dim, nkv = hp->n_head_kv * hp->head_dim;
    edge_status st;
    edge_gguf_tensor_info ti;
    bool found;

    /* Embeddings: the vocabulary size is the embedding's row count. */
    if ((st = find(m, "token_embd.weight", true, &ti, NULL)) != EDGE_OK) return st;
    if (ti.n_dims != 2 || ti.ne[0] != d || ti.ne[1] <= 0)
        return edge_fail(EDGE_ERR_FORMAT, "%s: tensor 'token_embd.weight' has shape [%lld, %lld], expected [%lld, n_vocab]",
                         m->path, (long long)ti.ne[0], (long long)ti.ne[1], (long long)d);
    hp->n_vocab = ti.ne[1];
    if ((st = make_matrix(m, "token_embd.weight", &ti, 0, &m->token_embd)) != EDGE_OK) return st;
    if ((st = find(m, "output.weight", false, &ti, &found)) != EDGE_OK) return st;
    if (found) {
        if ((st = check_shape(m, "output.weight", &ti, d, hp->n_vocab, 1)) != EDGE_OK) return st;
        if ((st = make_matrix(m, "output.weight", &ti, 0, &m->output)) != EDGE_OK) return st;
    } else {
        m->output = m->token_embd; /* tied, as in Grok-1 */
    }
    if ((st = load_norm(m, "output_norm.weight", NULL, d, &m->output_norm)) != EDGE_OK) return st;

    for (int64_t l = 0; l < hp->n_layer; l++) {
        edge_layer_weights *L = &m->layers[l];
        char name[128], alt[128];
#define NAME(fmt) (snprintf(name, sizeof name, "blk.%lld." fmt ".weight", (long long)l), name)
#define ALT(fmt) (snprintf(alt, sizeof alt, "blk.%lld." fmt ".weight", (long long)l), alt)
        if ((st = load_norm(m, NAME("attn_norm"), NULL, d, &L->attn_norm)) != EDGE_OK) return st;
        if ((st = load_matrix(m, NAME("attn_q"), nq, d, &L->wq)) != EDGE_OK) return st;
        if ((st = load_matrix(m, NAME("attn_k"), nkv, d, &L->wk)) != EDGE_OK) return st;
        if ((st = load_matrix(m, NAME("attn_v"), nkv, d, &L->wv)) != EDGE_OK) return st;
        if ((st = load_matrix(m, NAME("attn_output"), d, nq, &L->wo)) != EDGE_OK) return st;
        if ((st = load_norm(m, NAME("attn_output_norm"), NULL, d, &L->attn_output_norm)) != EDGE_OK) return st;
        if ((st = load_norm(m, NAME("ffn_norm"), NULL, d, &L->ffn_norm)) != EDGE_OK) return st;
        if ((st = load_matrix(m, NAME("ffn_gate_inp"), hp->n_expert, d, &L->router)) != EDGE_OK) return st;
        /* llama.cpp names rms_norm_3 `layer_output_norm`, newer files may say `post_ffw_norm`. */
        if ((st = load_norm(m, NAME("layer_output_norm"), ALT("post_ffw_norm"), d, &L->layer_output_norm)) != EDGE_OK)
            return st;
#undef NAME
#undef ALT
        L->gate = m->expert_storage + (size_t)(3 * l + 0) * (size_t)hp->n_expert;
        L->up = m->expert_storage + (size_t)(3 * l + 1) * (size_t)hp->n_expert;
        L->down = m->expert_storage + (size_t)(3 * l + 2) * (size_t)hp->n_expert;
        if ((st = load_experts(m, l, "ffn_gate_exps", "ffn_gate", hp->n_ff, d, L->gate)) != EDGE_OK) return st;
        if ((st = load_experts(m, l, "ffn_up_exps", "ffn_up", hp->n_ff, d, L->up)) != EDGE_OK) return st;
        if ((st = load_experts(m, l, "ffn_down_exps", "ffn_down", d, hp->n_ff, L->down)) != EDGE_OK) return st;
    }
    return EDGE_OK;
}

EDGE_API edge_status edge_model_load(const char *path, edge_model **out) {
    if (!path || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_model_load: NULL argument");
    *out = NULL;
    edge_model *m = calloc(1, sizeof *m);
    if (!m) return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory", path);
    edge_status st = EDGE_ERR_NOMEM;
    m->path = strdup(path);
    if (!m->path) goto fail;
    if ((st = edge_gguf_open(path, &m->gguf)) != EDGE_OK) goto fail;
    if ((st = read_hparams(m)) != EDGE_OK) goto fail;
    st = EDGE_ERR_NOMEM;
    m->layers = calloc((size_t)m->hp.n_layer, sizeof *m->layers);
    m->expert_storage = calloc((size_t)m->hp.n_layer * 3 * (size_t)m->hp.n_expert, sizeof *m->expert_storage);
    m->owned = calloc((size_t)m->hp.n_layer * 4 + 1, sizeof *m->owned);
    if (!m->layers || !m->expert_storage || !m->owned) {
        edge_fail(EDGE_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    if ((st = load_weights(m)) != EDGE_OK) goto fail;
    if ((st = edge_experts_create(m, &m->experts)) != EDGE_OK) goto fail;
    *out = m;
    edge_clear_error();
    return EDGE_OK;
fail:
    if (st == EDGE_ERR_NOMEM && !*edge_last_error()) edge_fail(st, "%s: out of memory", path);
    edge_model_free(m);
    return st;
}

EDGE_API void edge_model_free(edge_model *m) {
    if (!m) return;
    edge_experts_free(m->experts);
    if (m->owned)
        for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->expert_storage);
    edge_gguf_close(m->gguf);
    free(m->path);
    free(m);
}

EDGE_API edge_status edge_model_get_hparams(const edge_model *m, edge_model_hparams *out) {
    if (!m || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_model_get_hparams: NULL argument");
    *out = m->hp;
    return EDGE_OK;
}
