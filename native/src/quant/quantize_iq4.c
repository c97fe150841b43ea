/* quantize_iq4.c — IQ4_NL (32-blocks, one fp16 scale) and IQ4_XS (256-super-blocks, fp16 scale and
 * 6-bit signed sub-block scales), both on the non-linear 16-value codebook edge_kvalues_iq4nl.
 *
 * The search is llama.cpp's quantize_row_iq4_nl_impl with ntry = 7 (what llama.cpp's quantize_iq4_nl /
 * quantize_iq4_xs run): for each 32-block, the scale that maps the extreme value onto each of 15 trial
 * codebook positions, each refined by weighted least squares, the best kept. Weights: x^2 without an
 * imatrix, imatrix*sqrt(sigma^2+x^2) with one. One deliberate difference: the final codebook indices are
 * chosen against the scale actually stored (fp16 and, for IQ4_XS, the 6-bit sub-scale), where ggml uses
 * the unrounded float scale for IQ4_NL; this can only lower the error of the decoded values. */
#include "quant_internal.h"

static void pack_nibbles32(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
}

/* The codebook as floats, and ggml's best_index_int8 over it without branches: ml = the number of
 * interior values <= x is the binary search's lower bracket, then the same float comparison picks the
 * side (an exact tie goes to the upper value, as ggml's). */
static const float k_iq4_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static inline int iq4_index(float x) {
    int ml = 0;
    for (int j = 1; j < 15; ++j) ml += x >= k_iq4_values[j];
    return x - k_iq4_values[ml] < k_iq4_values[ml + 1] - x ? ml : ml + 1;
}

/* Best scale for one 32-block (0 if the block is all zeros); L gets the indices of the first fit.
 * A trial whose indices equal the previous trial's is skipped: its sums, hence its outcome, are the same. */
static float iq4_block_scale(const float *xb, const float *w, uint8_t *L) {
    const float *values = k_iq4_values;
    const int ntry = 7;
    const float max = q_signed_absmax(xb, 32), amax = fabsf(max);
    if (amax < Q_GROUP_MAX_EPS) {
        memset(L, 0, 32);
        return 0.0f;
    }
    float d = -max / values[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; ++j) L[j] = (uint8_t)iq4_index(id * xb[j]);
    for (int j = 0; j < 32; ++j) {
        const float q = values[L[j]];
        sumqx += w[j] * q * xb[j];
        sumq2 += w[j] * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    uint8_t Lt[32], prev[32];
    int have_prev = 0;
    for (int itry = -ntry; itry <= ntry; ++itry) {
        id = (itry + values[0]) / max;
        for (int j = 0; j < 32; ++j) Lt[j] = (uint8_t)iq4_index(id * xb[j]);
        if (have_prev && memcmp(prev, Lt, 32) == 0) continue;
        memcpy(prev, Lt, 32);
        have_prev = 1;
        sumqx = sumq2 = 0;
        for (int j = 0; j < 32; ++j) {
            const float q = values[Lt[j]];
            sumqx += w[j] * q * xb[j];
            sumq2 += w[j] * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* iq4_block_scale on 4 blocks at once, one per vector lane (GCC/Clang vector extensions): the same
 * float operations per lane, so the same scales (the indices are re-derived by the callers). The
 * codebook index is found by a compare-and-select chain over the sorted values, which ends on the
 * same bracket [values[ml], values[ml+1]] as iq4_index's count, then the same float comparison. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
#define V4_SEL(m, a, b) ((v4f)(((v4i)(a) & (m)) | ((v4i)(b) & ~(m))))
#define V4_SPLAT(v) ((v4f){(v), (v), (v), (v)})

#define V4_IQ4_VALUE(out, v_in)                                                                              \
    do {                                                                                                     \
        const v4f v_ = (v_in);                                                                               \
        v4f lo_ = V4_SPLAT(k_iq4_values[0]), hi_ = V4_SPLAT(k_iq4_values[1]);                                \
        for (int j_ = 1; j_ < 15; ++j_) {                                                                    \
            const v4i m_ = v_ >= V4_SPLAT(k_iq4_values[j_]);                                                 \
            lo_ = V4_SEL(m_, V4_SPLAT(k_iq4_values[j_]), lo_);                                               \
            hi_ = V4_SEL(m_, V4_SPLAT(k_iq4_values[j_ + 1]), hi_);                                           \
        }                                                                                                    \
        (out) = V4_SEL(v_ - lo_ < hi_ - v_, lo_, hi_);                                                       \
    } while (0)

static void iq4_block_scale_x4(const float *x, const float *w, float *scales) {
    const int ntry = 7;
    v4f xt[32], wt[32];
    for (int j = 0; j < 32; ++j)
        for (int b = 0; b < 4; ++b) {
            xt[j][b] = x[32 * b + j];
            wt[j][b] = w[32 * b + j];
        }
    const v4f zero = V4_SPLAT(0.0f), one = V4_SPLAT(1.0f);
    const v4i sign = {INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN};
    v4f amax = zero, max = zero;
    for (int j = 0; j < 32; ++j) {
        const v4f ax = (v4f)((v4i)xt[j] & ~sign);
        const v4i gt = ax > amax;
        amax = V4_SEL(gt, ax, amax);
        max = V4_SEL(gt, xt[j], max);
    }
    const v4i active = amax >= V4_SPLAT(Q_GROUP_MAX_EPS);
    max = V4_SEL(active, max, one);
    v4f d = -max / V4_SPLAT(k_iq4_values[0]);
    v4f id = one / d;
    v4f sumqx = zero, sumq2 = zero;
    for (int j = 0; j < 32; ++j) {
        v4f q;
        V4_IQ4_VALUE(q, id * xt[j]);
        sumqx += wt[j] * q * xt[j];
        sumq2 += wt[j] * q * q;
    }
    const v4i q2_pos = sumq2 > zero;
    d = V4_SEL(q2_pos, sumqx / V4_SEL(q2_pos, sumq2, one), zero);
    v4f best = d * sumqx;
    for (int itry = -ntry; itry <= ntry; ++itry) {
        id = V4_SPLAT(itry + k_iq4_values[0]) / max;
        sumqx = sumq2 = zero;
        for (int j = 0; j < 32; ++j) {
            v4f q;
            V4_IQ4_VALUE(q, id * xt[j]);
            sumqx += wt[j] * q * xt[j];
            sumq2 += wt[j] * q * q;
        }
        const v4i acc = (sumq2 > zero) & (sumqx * sumqx > best * sumq2);
        const v4f dn = sumqx / V4_SEL(acc, sumq2, one);
        d = V4_SEL(acc, dn, d);
        best = V4_SEL(acc, dn * sumqx, best);
    }
    for (int b = 0; b < 4; ++b) scales[b] = active[b] ? d[b] : 0.0f;
}

static void iq4_weights(const float *xb, const float *qw, float sigma2, float *w) {
    if (qw) {
        for (int j = 0; j < 32; ++j) w[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
    } else {
        for (int j = 0; j < 32; ++j) w[j] = xb[j] * xb[j];
    }
}

static void iq4_indices(const float *xb, float d, uint8_t *L) {
    const float id = d ? 1 / d : 0.0f;
    for (int j = 0; j < 32; ++j) L[j] = (uint8_t)iq4_index(id * xb[j]);
}

void q_quantize_row_iq4_nl(const float *x, void *dst, int64_t n, const float *imatrix) {
    block_iq4_nl *y = dst;
    const int64_t nb = n / QK4_NL;
    uint8_t L[32];
    float w[4 * 32], d[4];
    for (int64_t i0 = 0; i0 < nb; i0 += 4) {
        const int nblk = nb - i0 < 4 ? (int)(nb - i0) : 4; /* 4 blocks per search, the tail one by one */
        for (int k = 0; k < nblk; ++k) {
            const float *xb = x + (i0 + k) * QK4_NL;
            float sigma2 = 0; /* per block, as ggml (its super-block is the block here) */
            for (int j = 0; j < 32; ++j) sigma2 += xb[j] * xb[j];
            sigma2 *= 2.f / 32;
            iq4_weights(xb, imatrix ? imatrix + (i0 + k) * QK4_NL : NULL, sigma2, w + 32 * k);
        }
        if (nblk == 4) iq4_block_scale_x4(x + i0 * QK4_NL, w, d);
        else
            for (int k = 0; k < nblk; ++k) d[k] = iq4_block_scale(x + (i0 + k) * QK4_NL, w + 32 * k, L);
        for (int k = 0; k < nblk; ++k) {
            block_iq4_nl *yb = &y[i0 + k];
            yb->d = edge_f32_to_f16(d[k]);
            if (d[k]) iq4_indices(x + (i0 + k) * QK4_NL, edge_f16_to_f32(yb->d), L);
            else memset(L, 0, 32);
            pack_nibbles32(L, yb->qs);
        }
    }
}

void q_quantize_row_iq4_xs(const float *x, void *dst, int64_t n, const float *imatrix) {
    block_iq4_xs *y = dst;
    const int64_t nb = n / QK_K;
    uint8_t L[QK_K];
    float w[QK_K], scales[QK_K / 32];
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        const float *qw = imatrix ? imatrix + i * QK_K : NULL;
        float sigma2 = 0;
        for (int j = 0; j < QK_K; ++j) sigma2 += x[j] * x[j];
        sigma2 *= 2.f / QK_K;
        float max_scale = 0, amax_scale = 0;
        for (int ib = 0; ib < QK_K / 32; ++ib) iq4_weights(x + 32 * ib, qw ? qw + 32 * ib : NULL, sigma2, w + 32 * ib);
        iq4_block_scale_x4(x, w, scales);
        iq4_block_scale_x4(x + 128, w + 128, scales + 4);
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            if (fabsf(scales[ib]) > amax_scale) {
                amax_scale = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        memset(y[i].scales_l, 0, sizeof y[i].scales_l);
        y[i].scales_h = 0;
        /* d = -max/32 so the largest sub-scale is level -32 exactly; sub-scales are 6-bit signed. */
        const float d = -max_scale / 32;
        y[i].d = edge_f32_to_f16(d);
        const float d_stored = edge_f16_to_f32(y[i].d);
        const float id = d ? 1 / d : 0.0f;
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            const int l = q_clamp_i(q_nearest_int(id * scales[ib]), -32, 31);
            iq4_indices(x + 32 * ib, d_stored * l, L + 32 * ib);
            const int lu = l + 32;
            y[i].scales_l[ib / 2] |= (uint8_t)((lu & 0xF) << (4 * (ib % 2)));
            y[i].scales_h |= (uint16_t)((lu >> 4) << (2 * ib));
        }
        for (int ib = 0; ib < QK_K / 32; ++ib) pack_nibbles32(L + 32 * ib, y[i].qs + 16 * ib);
    }
}
