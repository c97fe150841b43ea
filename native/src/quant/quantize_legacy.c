/* quantize_legacy.c — the 32-element block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
 *
 * Without an imatrix these are ggml's reference quantizers (deterministic, byte-identical to ggml's
 * quantize_row_*_ref and to gguf-py's numpy quantizers). With an imatrix they run llama.cpp's weighted
 * searches (weights imatrix * sqrt(sigma^2 + x^2), sigma^2 the row's mean square). Q8_0 ignores the
 * imatrix, as llama.cpp does. */
#include <float.h>

#include "quant_internal.h"

/* --- shared packing ----------------------------------------------------------------------------- */

/* Element j of a 32-block goes to the low nibble of qs[j] (j < 16) or the high nibble of qs[j-16]. */
static void pack_nibbles32(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
}

/* 5-bit levels: low nibbles as above, bit 4 of element j in bit j of the little-endian qh word. */
static void pack_5bit32(const uint8_t *L, uint8_t *qs, uint8_t qh_out[4]) {
    pack_nibbles32(L, qs);
    uint32_t qh = 0;
    for (int j = 0; j < 32; ++j) qh |= (uint32_t)((L[j] >> 4) & 1u) << j;
    memcpy(qh_out, &qh, 4);
}

static float row_mean_square(const float *x, int64_t n) {
    float s = 0;
    for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
    return s / (float)n;
}

static void imatrix_weights(const float *xb, const float *qw, float sigma2, int n, float *w) {
    for (int j = 0; j < n; ++j) w[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
}


/* --- Q4_0: x = d * (q - 8) ------------------------------------------------------------------------ */

void q_quantize_row_q4_0(const float *x, void *dst, int64_t n, const float *imatrix) {
    block_q4_0 *y = dst;
    const int64_t nb = n / QK4_0;
    uint8_t L[QK4_0];
    if (!imatrix) {
        for (int64_t i = 0; i < nb; ++i) {
            const float *xb = x + i * QK4_0;
            /* d = max / -8 maps the extreme value to level 0 exactly; the other side gets 7 levels. */
            const float d = q_signed_absmax(xb, QK4_0) / -8;
            const float id = d ? 1.0f / d : 0.0f;
            y[i].d = edge_f32_to_f16(d);
            for (int j = 0; j < QK4_0; ++j) L[j] = (uint8_t)q_min_i(15, (int)(xb[j] * id + 8.5f));
            pack_nibbles32(L, y[i].qs);
        }
        return;
    }
    const float sigma2 = row_mean_square(x, n);
    float w[4 * QK4_0], d[4];
    int8_t Ls[4 * QK4_0];
    for (int64_t i0 = 0; i0 < nb; i0 += 4) {
        const int nblk = nb - i0 < 4 ? (int)(nb - i0) : 4; /* 4 blocks per search, the tail one by one */
        for (int k = 0; k < nblk; ++k)
            imatrix_weights(x + (i0 + k) * QK4_0, imatrix + (i0 + k) * QK4_0, sigma2, QK4_0, w + k * QK4_0);
        if (nblk == 4) q_make_qx_quants_x4(QK4_0, 8, x + i0 * QK4_0, w, Ls, d);
        else
            for (int k = 0; k < nblk; ++k)
                d[k] = q_make_qx_quants(QK4_0, 8, x + (i0 + k) * QK4_0, Ls + k * QK4_0, 1, w + k * QK4_0);
        for (int k = 0; k < nblk; ++k) {
            y[i0 + k].d = edge_f32_to_f16(d[k]);
            for (int j = 0; j < QK4_0; ++j) L[j] = (uint8_t)Ls[k * QK4_0 + j];
            pack_nibbles32(L, y[i0 + k].qs);
        }
    }
}

/* --- Q4_1: x = d * q + m ------------------------------------------------------------------------- */

static void min_max(const float *x, int n, float *mn, float *mx) {
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; ++j) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

static void quantize_row_affine(const float *x, int64_t n, const float *imatrix, int nmax,
                                void (*store)(void *blk, float d, float m, const uint8_t *L), void *dst,
                                size_t block_bytes) {
    const int64_t nb = n / 32;
    uint8_t *y = dst;
    if (!imatrix) {
        uint8_t L[32];
        for (int64_t i = 0; i < nb; ++i) {
            const float *xb = x + i * 32;
            float mn, mx;
            min_max(xb, 32, &mn, &mx);
            const float d = (mx - mn) / nmax;
            const float id = d ? 1.0f / d : 0.0f;
            for (int j = 0; j < 32; ++j) L[j] = (uint8_t)q_min_i(nmax, (int)((xb[j] - mn) * id + 0.5f));
            store(y + (size_t)i * block_bytes, d, mn, L);
        }
        return;
    }
    const float sigma2 = row_mean_square(x, n);
    float w[8 * 32], d[8], min[8];
    uint8_t L[8 * 32], Laux[32];
    for (int64_t i0 = 0; i0 < nb; i0 += 8) {
        const int nblk = nb - i0 < 8 ? (int)(nb - i0) : 8; /* 8 blocks per search, the tail one by one */
        const float *xb = x + i0 * 32;
        for (int k = 0; k < nblk; ++k) imatrix_weights(xb + 32 * k, imatrix + (i0 + k) * 32, sigma2, 32, w + 32 * k);
        if (nblk == 8) q_make_qkx_quants_x8(32, nmax, xb, w, L, d, min, -0.9f, 0.05f, 36, 0);
        else
            for (int k = 0; k < nblk; ++k)
                d[k] = q_make_qkx3_quants(32, nmax, xb + 32 * k, w + 32 * k, L + 32 * k, &min[k], Laux, -0.9f, 0.05f,
                                          36, 0);
        for (int k = 0; k < nblk; ++k) store(y + (size_t)(i0 + k) * block_bytes, d[k], -min[k], L + 32 * k);
    }
}

static void store_q4_1(void *blk, float d, float m, const uint8_t *L) {
    block_q4_1 *b = blk;
    b->d = edge_f32_to_f16(d);
    b->m = edge_f32_to_f16(m);
    pack_nibbles32(L, b->qs);
}

void q_quantize_row_q4_1(const float *x, void *dst, int64_t n, const float *imatrix) {
    quantize_row_affine(x, n, imatrix, 15, store_q4_1, dst, sizeof(block_q4_1));
}

/* --- Q5_0: x = d * (q - 16) ---------------------------------------------------------------------- */

void q_quantize_row_q5_0(const float *x, void *dst, int64_t n, const float *imatrix) {
    block_q5_0 *y = dst;
    const int64_t nb = n / QK5_0;
    uint8_t L[QK5_0];
    if (!imatrix) {
        for (int64_t i = 0; i < nb; ++i) {
            const float *xb = x + i * QK5_0;
            const float d = q_signed_absmax(xb, QK5_0) / -16;
            const float id = d ? 1.0f / d : 0.0f;
            y[i].d = edge_f32_to_f16(d);
            for (int j = 0; j < QK5_0; ++j) L[j] = (uint8_t)q_min_i(31, (int)(xb[j] * id + 16.5f));
            pack_5bit32(L, y[i].qs, y[i].qh);
        }
        return;
    }
    const float sigma2 = row_mean_square(x, n);
    float w[4 * QK5_0], d[4];
    int8_t Ls[4 * QK5_0];
    for (int64_t i0 = 0; i0 < nb; i0 += 4) {
        const int nblk = nb - i0 < 4 ? (int)(nb - i0) : 4;
        for (int k = 0; k < nblk; ++k)
            imatrix_weights(x + (i0 + k) * QK5_0, imatrix + (i0 + k) * QK5_0, sigma2, QK5_0, w + k * QK5_0);
        if (nblk == 4) q_make_qx_quants_x4(QK5_0, 16, x + i0 * QK5_0, w, Ls, d);
        else
            for (int k = 0; k < nblk; ++k)
                d[k] = q_make_qx_quants(QK5_0, 16, x + (i0 + k) * QK5_0, Ls + k * QK5_0, 1, w + k * QK5_0);
        for (int k = 0; k < nblk; ++k) {
            y[i0 + k].d = edge_f32_to_f16(d[k]);
            for (int j = 0; j < QK5_0; ++j) L[j] = (uint8_t)Ls[k * QK5_0 + j];
            pack_5bit32(L, y[i0 + k].qs, y[i0 + k].qh);
        }
    }
}

/* --- Q5_1: x = d * q + m ------------------------------------------------------------------------- */

static void store_q5_1(void *blk, float d, float m, const uint8_t *L) {
    block_q5_1 *b = blk;
    b->d = edge_f32_to_f16(d);
    b->m = edge_f32_to_f16(m);
    pack_5bit32(L, b->qs, b->qh);
}

void q_quantize_row_q5_1(const float *x, void *dst, int64_t n, const float *imatrix) {
    quantize_row_affine(x, n, imatrix, 31, store_q5_1, dst, sizeof(block_q5_1));
}

/* --- Q8_0: x = d * q, q in [-127, 127] ----------------------------------------------------------- */

void q_quantize_row_q8_0(const float *x, void *dst, int64_t n, const float *imatrix) {
    (void)imatrix; /* ggml's Q8_0 has no weighted search */
    block_q8_0 *y = dst;
    const int64_t nb = n / QK8_0;
    for (int64_t i = 0; i < nb; ++i) {
        const float *xb = x + i * QK8_0;
        float amax = 0;
        for (int j = 0; j < QK8_0; ++j) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = edge_f32_to_f16(d);
        for (int j = 0; j < QK8_0; ++j) y[i].qs[j] = (int8_t)roundf(xb[j] * id); /* half away from zero */
    }
}
