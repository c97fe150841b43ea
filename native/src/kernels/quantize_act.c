/* quantize_act.c — activations converted once per matmul into the integer format the weight
 * type's dot product consumes (ggml's Q8_0 / Q8_1 / Q8_K, same rounding as ggml's reference). */
#include <math.h>

#include "kernels_impl.h"

/* Round to nearest, ties to even, without a libm call (valid for |v| < 2^22, always true here as
 * |v| <= 127.5); the SIMD paths round with the same rule, so every path sees the same integers. */
static inline int nearest_int(float v) {
    float f = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &f, 4);
    return (i & 0x007fffff) - 0x00400000;
}

void edge_quant_act_q8_0(const float *x, void *row, int64_t n, int64_t b0, int64_t nb) {
    int8_t *qs = row;
    float *ds = (float *)((char *)row + n);
    for (int64_t i = b0; i < b0 + nb; i++) {
        const float *xb = x + i * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        ds[i] = d;
        for (int j = 0; j < QK8_0; j++) qs[i * QK8_0 + j] = (int8_t)nearest_int(xb[j] * id);
    }
}

void edge_quant_act_q8_1(const float *x, void *row, int64_t n, int64_t b0, int64_t nb) {
    block_q8_1 *y = row;
    for (int64_t i = b0; i < b0 + nb; i++) {
        const float *xb = x + i * QK8_1;
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = (int8_t)nearest_int(xb[j] * id);
            sum += y[i].qs[j];
        }
        y[i].d = edge_f32_to_f16(d);
        y[i].s = edge_f32_to_f16((float)sum * d);
    }
}

/* Q8_K: one float scale per 256 with the largest-magnitude value mapped to -127 (so every q is in
 * [-127, 127] and the SIMD sign trick never meets -128), plus the sum of each 16 for the min terms. */
void edge_quant_act_q8_k(const float *x, void *row, int64_t n, int64_t b0, int64_t nb) {
    block_q8_K *y = row;
    for (int64_t i = b0; i < b0 + nb; i++) {
        const float *xb = x + i * QK_K;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                max = xb[j];
            }
        }
        if (amax == 0.0f) {
            y[i].d = 0.0f;
            memset(y[i].qs, 0, sizeof y[i].qs);
            memset(y[i].bsums, 0, sizeof y[i].bsums);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = nearest_int(iscale * xb[j]);
            y[i].qs[j] = (int8_t)(v > 127 ? 127 : (v < -127 ? -127 : v));
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[j * 16 + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1.0f / iscale;
    }
}

/* n values of one token into its slot of a quad: values 4g .. 4g+3 at 16g + 4 * slot, plus bias (128 makes
 * the Q8_0 quads' values unsigned). */
static void quad_scatter(uint8_t *dst, const int8_t *src, int n, int slot, int bias) {
    for (int g = 0; g < n / 4; g++)
        for (int k = 0; k < 4; k++) dst[16 * g + 4 * slot + k] = (uint8_t)(src[4 * g + k] + bias);
}

void edge_quant_act_q8_kx4(edge_act_quant_fn q8k, const float *x, void *quad, int slot, int64_t b0, int64_t nb) {
    block_q8_Kx4 *y = quad;
    for (int64_t i = b0; i < b0 + nb; i++) {
        block_q8_K b;
        if (x) {
            q8k(x + i * QK_K, &b, QK_K, 0, 1);
        } else {
            memset(&b, 0, sizeof b);
        }
        quad_scatter((uint8_t *)y[i].qs, b.qs, QK_K, slot, 0);
        for (int p = 0; p < QK_K / 32; p++) {
            y[i].bs[8 * p + 2 * slot] = b.bsums[2 * p];
            y[i].bs[8 * p + 2 * slot + 1] = b.bsums[2 * p + 1];
        }
        y[i].d[slot] = b.d;
    }
}

void edge_quant_act_q8_0x4(edge_act_quant_fn q80, const float *x, void *quad, int slot, int64_t n, int64_t b0,
                           int64_t nb) {
    uint8_t *qs = quad;
    float *d = (float *)((char *)quad + (size_t)n * EDGE_QUAD);
    for (int64_t i = b0; i < b0 + nb; i++) {
        int8_t b[EDGE_Q8S_BLOCK_BYTES]; /* one block as a row of 32: the values, then the scale */
        if (x) {
            q80(x + i * QK8_0, b, QK8_0, 0, 1);
        } else {
            memset(b, 0, sizeof b);
        }
        quad_scatter(qs + (size_t)i * QK8_0 * EDGE_QUAD, b, QK8_0, slot, 128);
        memcpy(&d[i * EDGE_QUAD + slot], b + QK8_0, sizeof(float));
    }
}
