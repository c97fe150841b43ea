/* attention_driver.c — the grouped attention loops (attention_avx2.c; attention_neon.c when built with
 * -DATTN_ISA=neon), 1 .. EDGE_ATTN_TILE_ROWS rows at once, bit for bit against a scalar sum in the loops'
 * order (weighted sums) and against one row at a time (scores), for the F16, F32 and Q8_0 caches, with zeros
 * of p at keys whose cached values are not finite: a key with p == 0 must add nothing to that row, not
 * 0 * inf = NaN (rows with p != 0 there are infinite or NaN in both). Built and run by
 * tests/test_attention_kernels.py on CPUs with AVX2 + FMA + F16C, and for aarch64 under qemu by
 * tests/test_arm64.py. Prints "ok" and exits 0, or names the first mismatch and exits 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"
#include "engine/engine.h"

/* The loops under test: attention_avx2.c's by default, attention_neon.c's with -DATTN_ISA=neon. */
#ifndef ATTN_ISA
#define ATTN_ISA avx2
#endif
#define ATTN_CAT2(name, isa) name##_##isa
#define ATTN_CAT(name, isa) ATTN_CAT2(name, isa)
#define ATTN(name) ATTN_CAT(name, ATTN_ISA)

#define HD 128
#define KVH 2
#define KEYS 150 /* three blocks of keys, the last one partial */

static uint16_t f16_bits(float x) { /* x exactly representable in F16 here (small integers / 16, or inf) */
    if (isinf(x)) return x > 0 ? 0x7c00 : 0xfc00;
    return edge_f32_to_f16(x);
}

/* The sums as the loops form them, value by value: p · v (F16), (p · d) · v (Q8_0) fused into the sum key
 * after key, keys with p == 0 skipped. */
static void ref_wsum_f16(float *out, const float *p, const uint16_t *v, size_t row_elems) {
    for (int j = 0; j < HD; j++) {
        float acc = 0.0f;
        for (int t = 0; t < KEYS; t++)
            if (p[t] != 0.0f) acc = fmaf(p[t], edge_f16_to_f32(v[(size_t)t * row_elems + (size_t)j]), acc);
        out[j] = acc;
    }
}

static void ref_wsum_f32(float *out, const float *p, const float *v, size_t row_elems) {
    for (int j = 0; j < HD; j++) {
        float acc = 0.0f;
        for (int t = 0; t < KEYS; t++)
            if (p[t] != 0.0f) acc = fmaf(p[t], v[(size_t)t * row_elems + (size_t)j], acc);
        out[j] = acc;
    }
}

static void ref_wsum_q8_0(float *out, const float *p, const block_q8_0 *v, size_t row_blocks) {
    for (int j = 0; j < HD; j++) {
        float acc = 0.0f;
        for (int t = 0; t < KEYS; t++) {
            if (p[t] == 0.0f) continue;
            const block_q8_0 *b = v + (size_t)t * row_blocks + (size_t)j / QK8_0;
            acc = fmaf(p[t] * edge_f16_to_f32(b->d), (float)b->qs[j % QK8_0], acc);
        }
        out[j] = acc;
    }
}

static int same_bits(const float *a, const float *b, int n, const char *what, int row) {
    if (memcmp(a, b, (size_t)n * sizeof(float)) == 0) return 1;
    for (int j = 0; j < n; j++)
        if (memcmp(a + j, b + j, sizeof(float)) != 0) {
            printf("%s: row %d value %d: grouped %.9g, one row %.9g\n", what, row, j, (double)a[j], (double)b[j]);
            break;
        }
    return 0;
}

int main(void) {
    const size_t stride = KVH * HD * sizeof(uint16_t);
    uint16_t *cache = calloc(KEYS * KVH * HD, sizeof(uint16_t));
    float *fcache = calloc(KEYS * KVH * HD, sizeof(float));
    block_q8_0 *qcache = calloc(KEYS * KVH * HD / QK8_0, sizeof(block_q8_0));
    float *p = calloc(EDGE_ATTN_TILE_ROWS * KEYS, sizeof(float));
    float *q = calloc(EDGE_ATTN_TILE_ROWS * HD, sizeof(float));
    float *grouped = calloc(EDGE_ATTN_TILE_ROWS * HD, sizeof(float)), *one = calloc(HD, sizeof(float));
    float *sg = calloc(EDGE_ATTN_TILE_ROWS * KEYS, sizeof(float)), *s1 = calloc(KEYS, sizeof(float));
    if (!cache || !fcache || !qcache || !p || !q || !grouped || !one || !sg || !s1) return 2;
    srand(7);
    for (int i = 0; i < KEYS * KVH * HD; i++) {
        cache[i] = f16_bits((float)(rand() % 33 - 16) / 16.0f);
        fcache[i] = (float)(rand() % 1001 - 500) / 256.0f;
    }
    for (int i = 0; i < KEYS * KVH * HD / QK8_0; i++) {
        qcache[i].d = f16_bits(1.0f / 64.0f);
        for (int j = 0; j < QK8_0; j++) qcache[i].qs[j] = (int8_t)(rand() % 255 - 127);
    }
    for (int i = 0; i < EDGE_ATTN_TILE_ROWS * HD; i++) q[i] = (float)(rand() % 17 - 8) / 8.0f;
    /* row r: probabilities over all keys, zero at every key t with (t + r) % 7 == 0 and at the last r keys
     * (a tile's later tokens); at those keys of KV head 0 the values are infinite (F16), and the Q8_0
     * blocks' scales too */
    for (int r = 0; r < EDGE_ATTN_TILE_ROWS; r++)
        for (int t = 0; t < KEYS; t++)
            p[r * KEYS + t] = (t + r) % 7 == 0 || t >= KEYS - r ? 0.0f : (float)(1 + (t * 3 + r) % 5) / 1024.0f;
    for (int t = 0; t < KEYS; t += 7) {
        cache[(size_t)t * KVH * HD + 5] = f16_bits(INFINITY);
        fcache[(size_t)t * KVH * HD + 9] = -INFINITY;
        qcache[(size_t)t * KVH * HD / QK8_0].d = f16_bits(INFINITY);
    }
    int ok = 1;
    for (int nh = 1; nh <= EDGE_ATTN_TILE_ROWS && ok; nh++) {
        ATTN(edge_attn_wsum_multi_f16)(grouped, nh, p, KEYS, (const uint8_t *)cache, stride, KEYS, HD);
        ATTN(edge_attn_scores_multi_f16)(q, nh, (const uint8_t *)cache + HD * 2, stride, KEYS, HD, sg, KEYS);
        for (int r = 0; r < nh && ok; r++) {
            ref_wsum_f16(one, p + r * KEYS, cache, KVH * HD);
            ok = same_bits(grouped + r * HD, one, HD, "f16 sums", r);
            ATTN(edge_attn_scores_multi_f16)(q + r * HD, 1, (const uint8_t *)cache + HD * 2, stride, KEYS, HD, s1, 0);
            ok = ok && same_bits(sg + r * KEYS, s1, KEYS, "f16 scores", r);
        }
        ATTN(edge_attn_wsum_multi_f32)(grouped, nh, p, KEYS, (const uint8_t *)fcache, stride * 2, KEYS, HD);
        ATTN(edge_attn_scores_multi_f32)(q, nh, (const uint8_t *)fcache + HD * 4, stride * 2, KEYS, HD, sg, KEYS);
        for (int r = 0; r < nh && ok; r++) {
            ref_wsum_f32(one, p + r * KEYS, fcache, KVH * HD);
            ok = same_bits(grouped + r * HD, one, HD, "f32 sums", r);
            ATTN(edge_attn_scores_multi_f32)(q + r * HD, 1, (const uint8_t *)fcache + HD * 4, stride * 2, KEYS, HD, s1, 0);
            ok = ok && same_bits(sg + r * KEYS, s1, KEYS, "f32 scores", r);
        }
        ATTN(edge_attn_wsum_multi_q8_0)(grouped, nh, p, KEYS, (const uint8_t *)qcache, stride / 2 / QK8_0 * sizeof(block_q8_0), KEYS, HD);
        for (int r = 0; r < nh && ok; r++) {
            ref_wsum_q8_0(one, p + r * KEYS, qcache, KVH * HD / QK8_0);
            ok = same_bits(grouped + r * HD, one, HD, "q8_0 sums", r);
        }
    }
    free(cache), free(fcache), free(qcache), free(p), free(q), free(grouped), free(one), free(sg), free(s1);
    if (!ok) return 1;
    printf("ok\n");
    return 0;
}
