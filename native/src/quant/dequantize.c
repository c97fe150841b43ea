/* dequantize.c — scalar reference dequantizers of every supported type (ggml's dequantize_row_*:
 * same formulas and operation order, so results match ggml's and gguf-py's float32 arithmetic). */
#include "quant_internal.h"

static void dq_f32(const void *src, float *y, int64_t n) { memcpy(y, src, (size_t)n * sizeof(float)); }

static void dq_f16(const void *src, float *y, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; ++i) y[i] = edge_f16_to_f32(h[i]);
}

static void dq_bf16(const void *src, float *y, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; ++i) y[i] = edge_bf16_to_f32(h[i]);
}

static void dq_q4_0(const void *src, float *y, int64_t n) {
    const block_q4_0 *x = src;
    for (int64_t i = 0; i < n / QK4_0; ++i, y += QK4_0) {
        const float d = edge_f16_to_f32(x[i].d);
        for (int j = 0; j < 16; ++j) {
            y[j] = ((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + 16] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dq_q4_1(const void *src, float *y, int64_t n) {
    const block_q4_1 *x = src;
    for (int64_t i = 0; i < n / QK4_1; ++i, y += QK4_1) {
        const float d = edge_f16_to_f32(x[i].d), m = edge_f16_to_f32(x[i].m);
        for (int j = 0; j < 16; ++j) {
            y[j] = (x[i].qs[j] & 0x0F) * d + m;
            y[j + 16] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}

static void dq_q5_0(const void *src, float *y, int64_t n) {
    const block_q5_0 *x = src;
    for (int64_t i = 0; i < n / QK5_0; ++i, y += QK5_0) {
        const float d = edge_f16_to_f32(x[i].d);
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        for (int j = 0; j < 16; ++j) {
            const int x0 = ((x[i].qs[j] & 0x0F) | (((qh >> j) & 1) << 4)) - 16;
            const int x1 = ((x[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
            y[j] = x0 * d;
            y[j + 16] = x1 * d;
        }
    }
}

static void dq_q5_1(const void *src, float *y, int64_t n) {
    const block_q5_1 *x = src;
    for (int64_t i = 0; i < n / QK5_1; ++i, y += QK5_1) {
        const float d = edge_f16_to_f32(x[i].d), m = edge_f16_to_f32(x[i].m);
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        for (int j = 0; j < 16; ++j) {
            const int x0 = (x[i].qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
            const int x1 = (x[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
            y[j] = x0 * d + m;
            y[j + 16] = x1 * d + m;
        }
    }
}

static void dq_q8_0(const void *src, float *y, int64_t n) {
    const block_q8_0 *x = src;
    for (int64_t i = 0; i < n / QK8_0; ++i, y += QK8_0) {
        const float d = edge_f16_to_f32(x[i].d);
        for (int j = 0; j < QK8_0; ++j) y[j] = x[i].qs[j] * d;
    }
}

static void dq_q2_K(const void *src, float *y, int64_t n) {
    const block_q2_K *x = src;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = edge_f16_to_f32(x[i].d), min = edge_f16_to_f32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int half = 0; half < QK_K; half += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int k = 0; k < 2; ++k) {
                    const uint8_t sc = x[i].scales[is++];
                    const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                    for (int l = 0; l < 16; ++l) *y++ = dl * ((q[l + 16 * k] >> shift) & 3) - ml;
                }
            }
        }
    }
}

static void dq_q3_K(const void *src, float *y, int64_t n) {
    const block_q3_K *x = src;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d_all = edge_f16_to_f32(x[i].d);
        const uint8_t *sc = x[i].scales;
        for (int j = 0; j < QK_K; ++j) {
            const int sub = j / 16;
            int s = sub < 8 ? sc[sub] & 0xF : sc[sub - 8] >> 4;
            s = (s | (((sc[8 + sub % 4] >> (2 * (sub / 4))) & 3) << 4)) - 32;
            const float dl = d_all * s;
            /* element j: qs byte 32*(j/128) + j%32, bits 2*((j%128)/32); hmask[j%32] bit j/32 */
            const int low = (x[i].qs[32 * (j / 128) + j % 32] >> (2 * ((j % 128) / 32))) & 3;
            const int high = (x[i].hmask[j % 32] >> (j / 32)) & 1;
            y[j] = dl * (low - (high ? 0 : 4));
        }
        y += QK_K;
    }
}

static void dq_q45_K_scales(const uint8_t *q, int j, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void dq_q4_K(const void *src, float *y, int64_t n) {
    const block_q4_K *x = src;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = edge_f16_to_f32(x[i].d), min = edge_f16_to_f32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int c = 0; c < QK_K / 64; ++c, q += 32) {
            uint8_t sc, m;
            dq_q45_K_scales(x[i].scales, 2 * c, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            dq_q45_K_scales(x[i].scales, 2 * c + 1, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void dq_q5_K(const void *src, float *y, int64_t n) {
    const block_q5_K *x = src;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = edge_f16_to_f32(x[i].d), min = edge_f16_to_f32(x[i].dmin);
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        for (int c = 0; c < QK_K / 64; ++c, ql += 32) {
            uint8_t sc, m;
            dq_q45_K_scales(x[i].scales, 2 * c, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            dq_q45_K_scales(x[i].scales, 2 * c + 1, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (((qh[l] >> (2 * c)) & 1) << 4)) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (((qh[l] >> (2 * c + 1)) & 1) << 4)) - m2;
        }
    }
}

static void dq_q6_K(const void *src, float *y, int64_t n) {
    const block_q6_K *x = src;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = edge_f16_to_f32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int half = 0; half < QK_K; half += 128, ql += 64, qh += 32, sc += 8, y += 128) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

static void dq_iq4_nl(const void *src, float *y, int64_t n) {
    const block_iq4_nl *x = src;
    for (int64_t i = 0; i < n / QK4_NL; ++i, y += QK4_NL) {
        const float d = edge_f16_to_f32(x[i].d);
        for (int j = 0; j < 16; ++j) {
            y[j] = d * edge_kvalues_iq4nl[x[i].qs[j] & 0xF];
            y[j + 16] = d * edge_kvalues_iq4nl[x[i].qs[j] >> 4];
        }
    }
}

static void dq_iq4_xs(const void *src, float *y, int64_t n) {
    const block_iq4_xs *x = src;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = edge_f16_to_f32(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ++ib, y += 32) {
            const int ls = ((x[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((x[i].scales_h >> (2 * ib)) & 3) << 4);
            const float dl = d * (ls - 32);
            const uint8_t *qs = x[i].qs + 16 * ib;
            for (int j = 0; j < 16; ++j) {
                y[j] = dl * edge_kvalues_iq4nl[qs[j] & 0xF];
                y[j + 16] = dl * edge_kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

q_row_dequantizer q_dequantizer_for(int type) {
    switch (type) {
    case EDGE_TYPE_F32: return dq_f32;
    case EDGE_TYPE_F16: return dq_f16;
    case EDGE_TYPE_BF16: return dq_bf16;
    case EDGE_TYPE_Q4_0: return dq_q4_0;
    case EDGE_TYPE_Q4_1: return dq_q4_1;
    case EDGE_TYPE_Q5_0: return dq_q5_0;
    case EDGE_TYPE_Q5_1: return dq_q5_1;
    case EDGE_TYPE_Q8_0: return dq_q8_0;
    case EDGE_TYPE_Q2_K: return dq_q2_K;
    case EDGE_TYPE_Q3_K: return dq_q3_K;
    case EDGE_TYPE_Q4_K: return dq_q4_K;
    case EDGE_TYPE_Q5_K: return dq_q5_K;
    case EDGE_TYPE_Q6_K: return dq_q6_K;
    case EDGE_TYPE_IQ4_NL: return dq_iq4_nl;
    case EDGE_TYPE_IQ4_XS: return dq_iq4_xs;
    default: return NULL;
    }
}
