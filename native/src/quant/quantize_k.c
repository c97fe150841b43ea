/* quantize_k.c — the K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-element super-blocks with quantized
 * sub-block scales).
 *
 * Without an imatrix: llama.cpp's reference quantizers (quantize_row_qX_K_ref: weights |x| for Q2_K,
 * x^2 for Q3_K/Q6_K, rms+|x| for Q4_K/Q5_K; make_qkx2 / make_q3 / make_qx searches; sub-block scales
 * rounded against the largest). With an imatrix: llama.cpp's *_impl paths (weights
 * imatrix*sqrt(sigma^2+x^2), make_qkx3 / make_qx searches, sub-block scales fitted by make_qp/make_qx
 * weighted by each sub-block's total weight). Levels are always re-derived from the final fp16 scales,
 * so the bytes decode to the best levels for the scales actually stored. */
#include "quant_internal.h"

/* --- shared packing ----------------------------------------------------------------------------- */

/* 2-bit levels: in each 128-element half, byte l holds elements l, l+32, l+64, l+96 at bits 0,2,4,6. */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* Q4_K/Q5_K 6-bit scale and min of sub-block j (0..7) in the 12-byte table:
 * j < 4: scales[j] and scales[j+4] low 6 bits; j >= 4: low nibbles in scales[j+4], high 2 bits in the
 * top bits of scales[j-4] (scale) and scales[j] (min). */
static void set_scale_min_k4(uint8_t *q, int j, uint8_t ls, uint8_t lm) {
    if (j < 4) {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
        q[j - 4] |= (uint8_t)((ls >> 4) << 6);
        q[j - 0] |= (uint8_t)((lm >> 4) << 6);
    }
}

static void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

static float sum_squares(const float *x, int n) {
    float s = 0;
    for (int j = 0; j < n; ++j) s += x[j] * x[j];
    return s;
}

/* --- Q2_K: x = d*sc*q - dmin*m, 16 sub-blocks of 16, 4-bit sc and m ----------------------------- */

void q_quantize_row_q2_K(const float *x, void *dst, int64_t n, const float *imatrix) {
    block_q2_K *y = dst;
    const int64_t nb = n / QK_K;
    uint8_t L[QK_K], Ls[QK_K / 16], Lm[QK_K / 16];
    float wall[QK_K], mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16];

    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        const float *qw = imatrix ? imatrix + i * QK_K : NULL;
        if (!qw) {
            float max_scale = 0, max_min = 0;
            for (int l = 0; l < QK_K; ++l) wall[l] = fabsf(x[l]);
            for (int h = 0; h < 2; ++h) /* 8 sub-blocks at a time */
                q_make_qkx_quants_x8(16, 3, x + 128 * h, wall + 128 * h, L + 128 * h, scales + 8 * h, mins + 8 * h,
                                     -0.5f, 0.1f, 15, 1);
            for (int j = 0; j < QK_K / 16; ++j) {
                if (scales[j] > max_scale) max_scale = scales[j];
                if (mins[j] > max_min) max_min = mins[j];
            }
            const float q4scale = 15.f;
            if (max_scale > 0) {
                const float iscale = q4scale / max_scale;
                for (int j = 0; j < QK_K / 16; ++j) y[i].scales[j] = (uint8_t)q_clamp_i(q_nearest_int(iscale * scales[j]), 0, 15);
                y[i].d = edge_f32_to_f16(max_scale / q4scale);
            } else {
                memset(y[i].scales, 0, sizeof y[i].scales);
                y[i].d = edge_f32_to_f16(0.f);
            }
            if (max_min > 0) {
                const float iscale = q4scale / max_min;
                for (int j = 0; j < QK_K / 16; ++j)
                    y[i].scales[j] |= (uint8_t)(q_clamp_i(q_nearest_int(iscale * mins[j]), 0, 15) << 4);
                y[i].dmin = edge_f32_to_f16(max_min / q4scale);
            } else {
                y[i].dmin = edge_f32_to_f16(0.f);
            }
        } else {
            const float sigma2 = sum_squares(x, QK_K) / QK_K;
            for (int j = 0; j < QK_K / 16; ++j) {
                sw[j] = 0;
                for (int l = 0; l < 16; ++l) {
                    wall[16 * j + l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
                    sw[j] += wall[16 * j + l];
                }
            }
            for (int h = 0; h < 2; ++h)
                q_make_qkx_quants_x8(16, 3, x + 128 * h, wall + 128 * h, L + 128 * h, scales + 8 * h, mins + 8 * h,
                                     -0.9f, 0.05f, 36, 0);
            const float dm = q_make_qp_quants(QK_K / 16, 15, scales, Ls, sw);
            const float mm = q_make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
            y[i].d = edge_f32_to_f16(dm);
            y[i].dmin = edge_f32_to_f16(mm);
            for (int j = 0; j < QK_K / 16; ++j) y[i].scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
        }
        /* Re-derive the levels from the stored (fp16, 4-bit) scales and mins. */
        const float d_all = edge_f16_to_f32(y[i].d), m_all = edge_f16_to_f32(y[i].dmin);
        for (int j = 0; j < QK_K / 16; ++j) {
            const float d = d_all * (y[i].scales[j] & 0xF);
            if (!d) continue;
            const float m = m_all * (y[i].scales[j] >> 4);
            for (int l = 0; l < 16; ++l) L[16 * j + l] = (uint8_t)q_clamp_i(q_nearest_int((x[16 * j + l] + m) / d), 0, 3);
        }
        pack_2bit(L, y[i].qs);
    }
}

/* --- Q3_K: x = d*(sc-32)*(q-4), 16 sub-blocks of 16, 6-bit signed sc, 3-bit q (2 low bits + hmask) --- */

static void q3k_set_scales(uint8_t *sc, const int *l6) {
    memset(sc, 0, 12);
    for (int j = 0; j < 16; ++j) {
        const int l = l6[j]; /* 0..63 */
        if (j < 8) sc[j] = (uint8_t)(l & 0xF);
        else sc[j - 8] |= (uint8_t)((l & 0xF) << 4);
        sc[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
    }
}

static int q3k_get_scale(const uint8_t *sc, int j) {
    int s = j < 8 ? sc[j] & 0xF : sc[j - 8] >> 4;
    return (s | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

void q_quantize_row_q3_K(const float *x, void *dst, int64_t n, const float *imatrix) {
    block_q3_K *y = dst;
    const int64_t nb = n / QK_K;
    int8_t L[QK_K], Ls[QK_K / 16];
    float scales[QK_K / 16], w[QK_K], sw[QK_K / 16];
    int l6[QK_K / 16];

    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        const float *qw = imatrix ? imatrix + i * QK_K : NULL;
        if (!qw) {
            float max_scale = 0, amax = 0;
            for (int j = 0; j < QK_K / 16; ++j) {
                scales[j] = q_make_q3_quants(16, 4, x + 16 * j, L + 16 * j, 1);
                if (fabsf(scales[j]) > amax) {
                    amax = fabsf(scales[j]);
                    max_scale = scales[j];
                }
            }
            if (max_scale) {
                const float iscale = -32.f / max_scale;
                for (int j = 0; j < QK_K / 16; ++j) l6[j] = q_clamp_i(q_nearest_int(iscale * scales[j]), -32, 31) + 32;
                q3k_set_scales(y[i].scales, l6);
                y[i].d = edge_f32_to_f16(1 / iscale);
            } else {
                memset(y[i].scales, 0, 12);
                y[i].d = edge_f32_to_f16(0.f);
            }
        } else {
            const float sigma2 = 2 * sum_squares(x, QK_K) / QK_K;
            for (int j = 0; j < QK_K / 16; ++j) {
                sw[j] = 0;
                for (int l = 0; l < 16; ++l) {
                    w[16 * j + l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
                    sw[j] += w[16 * j + l];
                }
            }
            for (int j = 0; j < QK_K / 16; j += 4) q_make_qx_quants_x4(16, 4, x + 16 * j, w + 16 * j, L + 16 * j, scales + j);
            const float d_block = q_make_qx_quants(QK_K / 16, 32, scales, Ls, 1, sw);
            for (int j = 0; j < QK_K / 16; ++j) l6[j] = Ls[j];
            q3k_set_scales(y[i].scales, l6);
            y[i].d = edge_f32_to_f16(d_block);
        }
        const float d_all = edge_f16_to_f32(y[i].d);
        for (int j = 0; j < QK_K / 16; ++j) {
            const float d = d_all * q3k_get_scale(y[i].scales, j);
            if (!d) continue;
            for (int l = 0; l < 16; ++l) L[16 * j + l] = (int8_t)(q_clamp_i(q_nearest_int(x[16 * j + l] / d), -4, 3) + 4);
        }
        /* High bit of element j goes to hmask[j % 32] bit j / 32; the low two bits to qs. */
        memset(y[i].hmask, 0, QK_K / 8);
        uint8_t Lu[QK_K];
        for (int j = 0; j < QK_K; ++j) {
            int l = L[j];
            if (l > 3) {
                y[i].hmask[j % 32] |= (uint8_t)(1u << (j / 32));
                l -= 4;
            }
            Lu[j] = (uint8_t)l;
        }
        pack_2bit(Lu, y[i].qs);
    }
}

/* --- Q4_K / Q5_K: x = d*sc*q - dmin*m, 8 sub-blocks of 32, 6-bit sc and m ----------------------------- */

static void quantize_q45_K_block(const float *x, const float *qw, int nmax, uint16_t *d_out, uint16_t *dmin_out,
                                 uint8_t *scales_out, uint8_t *L) {
    uint8_t Ls[QK_K / 32], Lm[QK_K / 32];
    float w[QK_K], mins[QK_K / 32], scales[QK_K / 32], sw[QK_K / 32];
    memset(scales_out, 0, K_SCALE_SIZE);
    if (!qw) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K / 32; ++j) {
            const float av_x = sqrtf(sum_squares(x + 32 * j, 32) / 32);
            for (int l = 0; l < 32; ++l) w[32 * j + l] = av_x + fabsf(x[32 * j + l]);
        }
        if (nmax == 15) q_make_qkx_quants_x8(32, 15, x, w, L, scales, mins, -1.f, 0.1f, 20, 0);
        else q_make_qkx_quants_x8(32, 31, x, w, L, scales, mins, -0.5f, 0.1f, 15, 0);
        for (int j = 0; j < QK_K / 32; ++j) {
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < QK_K / 32; ++j) {
            const uint8_t ls = (uint8_t)q_clamp_i(q_nearest_int(inv_scale * scales[j]), 0, 63);
            const uint8_t lm = (uint8_t)q_clamp_i(q_nearest_int(inv_min * mins[j]), 0, 63);
            set_scale_min_k4(scales_out, j, ls, lm);
        }
        *d_out = edge_f32_to_f16(max_scale / 63.f);
        *dmin_out = edge_f32_to_f16(max_min / 63.f);
    } else {
        const float sigma2 = 2 * sum_squares(x, QK_K) / QK_K;
        for (int j = 0; j < QK_K / 32; ++j) {
            sw[j] = 0;
            for (int l = 0; l < 32; ++l) {
                w[32 * j + l] = qw[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
                sw[j] += w[32 * j + l];
            }
        }
        q_make_qkx_quants_x8(32, nmax, x, w, L, scales, mins, -0.9f, 0.05f, 36, 0);
        const float d_block = q_make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
        const float m_block = q_make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
        for (int j = 0; j < QK_K / 32; ++j) set_scale_min_k4(scales_out, j, (uint8_t)q_min_i(63, Ls[j]), (uint8_t)q_min_i(63, Lm[j]));
        *d_out = edge_f32_to_f16(d_block);
        *dmin_out = edge_f32_to_f16(m_block);
    }
    const float d_all = edge_f16_to_f32(*d_out), m_all = edge_f16_to_f32(*dmin_out);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales_out, &sc, &m);
        const float d = d_all * sc;
        if (!d) continue;
        const float dm = m_all * m;
        for (int l = 0; l < 32; ++l) L[32 * j + l] = (uint8_t)q_clamp_i(q_nearest_int((x[32 * j + l] + dm) / d), 0, nmax);
    }
}

void q_quantize_row_q4_K(const float *x, void *dst, int64_t n, const float *imatrix) {
    block_q4_K *y = dst;
    const int64_t nb = n / QK_K;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        quantize_q45_K_block(x, imatrix ? imatrix + i * QK_K : NULL, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        /* Each 64-element chunk: byte l holds element l (low nibble) and l+32 (high nibble). */
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

void q_quantize_row_q5_K(const float *x, void *dst, int64_t n, const float *imatrix) {
    block_q5_K *y = dst;
    const int64_t nb = n / QK_K;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        quantize_q45_K_block(x, imatrix ? imatrix + i * QK_K : NULL, 31, &y[i].d, &y[i].dmin, y[i].scales, L);
        /* As Q4_K for the low nibbles; bit 4 of element (64c + l) goes to qh[l] bit 2c, of (64c + 32 + l)
         * to qh[l] bit 2c+1. */
        uint8_t *ql = y[i].qs, *qh = y[i].qh;
        memset(qh, 0, QK_K / 8);
        for (int c = 0; c < QK_K / 64; ++c, ql += 32) {
            for (int l = 0; l < 32; ++l) {
                const int l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
                ql[l] = (uint8_t)((l1 & 0xF) | ((l2 & 0xF) << 4));
                qh[l] |= (uint8_t)(((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1)));
            }
        }
    }
}

/* --- Q6_K: x = d*sc*(q-32), 16 sub-blocks of 16, int8 sc, 6-bit q --------------------------------- */

void q_quantize_row_q6_K(const float *x, void *dst, int64_t n, const float *imatrix) {
    block_q6_K *y = dst;
    const int64_t nb = n / QK_K;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        const float *qw = imatrix ? imatrix + i * QK_K : NULL;
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ib += 4)
            q_make_qx_quants_x4(16, 32, x + 16 * ib, qw ? qw + 16 * ib : NULL, L + 16 * ib, scales + ib);
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            if (fabsf(scales[ib]) > max_abs_scale) {
                max_abs_scale = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        if (max_abs_scale < Q_GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = edge_f32_to_f16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ++ib) y[i].scales[ib] = (int8_t)q_clamp_i(q_nearest_int(iscale * scales[ib]), -128, 127);
        const float d_all = edge_f16_to_f32(y[i].d);
        for (int j = 0; j < QK_K / 16; ++j) {
            const float d = d_all * y[i].scales[j];
            if (!d) continue;
            for (int l = 0; l < 16; ++l) L[16 * j + l] = (int8_t)(q_clamp_i(q_nearest_int(x[16 * j + l] / d), -32, 31) + 32);
        }
        /* Per 128-element half: ql[l] = lo(l) | lo(l+64)<<4, ql[l+32] = lo(l+32) | lo(l+96)<<4,
         * qh[l] = hi2 of l, l+32, l+64, l+96 at bits 0, 2, 4, 6. */
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t a = (uint8_t)L[j + l], b = (uint8_t)L[j + l + 32], c = (uint8_t)L[j + l + 64], e = (uint8_t)L[j + l + 96];
                ql[l] = (uint8_t)((a & 0xF) | ((c & 0xF) << 4));
                ql[l + 32] = (uint8_t)((b & 0xF) | ((e & 0xF) << 4));
                qh[l] = (uint8_t)((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6));
            }
        }
    }
}
