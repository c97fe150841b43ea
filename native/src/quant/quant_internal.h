/* quant_internal.h — shared pieces of the quantizers (not public; the public surface is edge_quantize /
 * edge_dequantize in edge.h).
 *
 * One row quantizer per type: quantizes one row of n floats (n a multiple of the block size) into
 * blocks laid out as ggml's (blocks.h). `imatrix` is NULL or n per-column importance weights, exactly as
 * llama.cpp's `quant_weights`: with NULL each type uses llama.cpp's default weighting. Row quantizers
 * are pure functions of their row (no state), so splitting rows over threads gives identical bytes. */
#ifndef EDGE_QUANT_INTERNAL_H
#define EDGE_QUANT_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "blocks.h"
#include "common.h"

/* No fused multiply-adds in the quantizers: every product and sum is rounded as written (as on x86-64's
 * baseline), so the scalar reference, the vector-lane searches and ggml's C code round alike on every
 * target (GCC contracts a*b+c into an FMA by default where the ISA has one, e.g. aarch64). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* Below this a group is treated as all zeros (ggml's GROUP_MAX_EPS). */
#define Q_GROUP_MAX_EPS 1e-15f

static inline int q_min_i(int a, int b) { return a < b ? a : b; }
static inline int q_max_i(int a, int b) { return a > b ? a : b; }
static inline int q_clamp_i(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Largest-magnitude value of a block, with its sign (the first one on ties). */
static inline float q_signed_absmax(const float *x, int n) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; ++j) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

/* Round to nearest, ties to even, as ggml's nearest_int (the 1.5*2^23 trick), but total: NaN gives 0
 * and values beyond the trick's range saturate instead of wrapping. */
static inline int q_nearest_int(float v) {
    if (!(fabsf(v) <= 4194303.0f)) return v != v ? 0 : (v > 0 ? 4194303 : -4194303);
    float t = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &t, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* --- scale searches (quant_search.c) ---------------------------------------------------------------- */

/* Symmetric signed levels L in [0, 2*nmax) (stored with +nmax offset) and the scale minimizing the
 * weighted error; weights qw, or by rmse_type when qw is NULL (1: x^2, 2: 1, 3: |x|, 4: sqrt|x|).
 * rmse_type 0: plain rounding, no search. */
float q_make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw);
/* q_make_qx_quants with rmse_type 1 on 4 consecutive groups of n (<= 32) elements at once (x, qw, L:
 * 4*n each, qw may be NULL; scales: 4): bit-identical to 4 calls, several times faster. */
void q_make_qx_quants_x4(int n, int nmax, const float *x, const float *qw, int8_t *L, float *scales);
/* Q3_K's reference search: x^2 weights, then coordinate descent on the levels (L offset by +nmax). */
float q_make_q3_quants(int n, int nmax, const float *x, int8_t *L, int do_rmse);
/* Asymmetric scale + min search (levels 0..nmax, n <= QK_K): returns the scale, *the_min the (positive) offset
 * to subtract. qkx2: the reference search of Q2_K/Q4_K/Q5_K; qkx3: the imatrix search. */
float q_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                         uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad);
float q_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                         uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad);
/* qkx2/qkx3 on 8 consecutive groups of n (<= 32) elements at once (x, weights, L: 8*n each; scales and
 * mins: 8 each): bit-identical to 8 calls of q_make_qkx2_quants, several times faster. */
void q_make_qkx_quants_x8(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *scales,
                          float *mins, float rmin, float rdelta, int nstep, int use_mad);
/* Positive-only levels 0..nmax for non-negative x (the sub-block scales of K-quants with an imatrix). */
float q_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights);

/* --- row quantizers ------------------------------------------------------------------------------- */

typedef void (*q_row_quantizer)(const float *x, void *dst, int64_t n, const float *imatrix);

void q_quantize_row_q4_0(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_q4_1(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_q5_0(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_q5_1(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_q8_0(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_q2_K(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_q3_K(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_q4_K(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_q5_K(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_q6_K(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_iq4_nl(const float *x, void *dst, int64_t n, const float *imatrix);
void q_quantize_row_iq4_xs(const float *x, void *dst, int64_t n, const float *imatrix);

/* --- dequantizers (dequantize.c): n elements, a multiple of the block size ---------------------------- */

typedef void (*q_row_dequantizer)(const void *src, float *y, int64_t n);

/* The dequantizer of a type, NULL when the type has none. */
q_row_dequantizer q_dequantizer_for(int type);

#endif /* EDGE_QUANT_INTERNAL_H */
