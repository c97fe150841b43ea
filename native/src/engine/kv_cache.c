/* kv_cache.c — the KV cache: per layer, one row of n_head_kv * head_dim values per position, stored as
 * F16 (default; llama.cpp's default too), Q8_0 (blocks of 32: one f16 scale + 32 int8, ggml layout), or
 * F32 (exact; for measuring the engine against the float64 reference without cache rounding). */
#include <math.h>
#include <stdlib.h>

#include "blocks.h"
#include "engine/engine.h"

edge_status edge_kv_cache_init(edge_kv_cache *kv, int type, int64_t n_layer, int64_t n_ctx, int64_t row_elems) {
    memset(kv, 0, sizeof *kv);
    if (type == EDGE_TYPE_F32) {
        kv->row_bytes = (size_t)row_elems * 4;
    } else if (type == EDGE_TYPE_F16) {
        kv->row_bytes = (size_t)row_elems * 2;
    } else if (type == EDGE_TYPE_Q8_0) {
        if (row_elems % QK8_0 != 0)
            return edge_fail(EDGE_ERR_UNSUPPORTED, "a Q8_0 KV cache needs n_head_kv * head_dim (%lld) divisible by 32",
                             (long long)row_elems);
        kv->row_bytes = (size_t)(row_elems / QK8_0) * sizeof(block_q8_0);
    } else {
        return edge_fail(EDGE_ERR_UNSUPPORTED, "KV cache type %d is not supported (use F16 = 1, Q8_0 = 8 or F32 = 0)", type);
    }
    kv->type = type;
    kv->n_layer = n_layer;
    kv->n_ctx = n_ctx;
    kv->row_elems = row_elems;
    uint64_t total;
    if (!edge_mul_u64((uint64_t)n_layer * (uint64_t)n_ctx, kv->row_bytes, &total) || total > SIZE_MAX / 2)
        return edge_fail(EDGE_ERR_RANGE, "KV cache of %lld tokens is too large", (long long)n_ctx);
    kv->k = malloc((size_t)total);
    kv->v = malloc((size_t)total);
    if (!kv->k || !kv->v) {
        edge_kv_cache_free(kv);
        return edge_fail(EDGE_ERR_NOMEM, "out of memory for a KV cache of %llu bytes", (unsigned long long)(2 * total));
    }
    return EDGE_OK;
}

void edge_kv_cache_free(edge_kv_cache *kv) {
    free(kv->k);
    free(kv->v);
    kv->k = kv->v = NULL;
}

/* ggml's quantize_row_q8_0 reference: d = max|x| / 127, q = round(x / d). */
static void quantize_q8_0(const float *x, block_q8_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; b++) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[b * QK8_0 + j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = edge_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++) y[b].qs[j] = (int8_t)roundf(x[b * QK8_0 + j] * id);
    }
}

void edge_kv_cache_store(edge_kv_cache *kv, uint8_t *base, int64_t layer, int64_t pos, const float *src) {
    uint8_t *row = edge_kv_row(kv, base, layer, pos);
    if (kv->type == EDGE_TYPE_F32) {
        memcpy(row, src, (size_t)kv->row_elems * sizeof(float));
    } else if (kv->type == EDGE_TYPE_F16) {
        uint16_t *h = (uint16_t *)row;
        for (int64_t i = 0; i < kv->row_elems; i++) h[i] = edge_f32_to_f16(src[i]);
    } else {
        quantize_q8_0(src, (block_q8_0 *)row, kv->row_elems);
    }
}

void edge_kv_load(const edge_kv_cache *kv, const uint8_t *row, int64_t first, int64_t n, float *dst,
                  const float *f16_table) {
    if (kv->type == EDGE_TYPE_F32) {
        memcpy(dst, (const float *)row + first, (size_t)n * sizeof(float));
    } else if (kv->type == EDGE_TYPE_F16) {
        const uint16_t *h = (const uint16_t *)row + first;
        for (int64_t i = 0; i < n; i++) dst[i] = f16_table[h[i]];
    } else {
        const block_q8_0 *b = (const block_q8_0 *)row + first / QK8_0;
        for (int64_t i = 0; i < n / QK8_0; i++) {
            const float d = f16_table[b[i].d];
            for (int j = 0; j < QK8_0; j++) dst[i * QK8_0 + j] = d * (float)b[i].qs[j];
        }
    }
}
