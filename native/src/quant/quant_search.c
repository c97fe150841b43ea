/* quant_search.c — the scale searches behind ggml's quantizers (same algorithms as ggml-quants.c, so
 * that quality matches llama.cpp's; see quant_internal.h for what each one returns). */
#include "quant_internal.h"

static inline float rmse_weight(int rmse_type, float x) {
    switch (rmse_type) {
    case 1: return x * x;
    case 2: return 1.0f;
    case 3: return fabsf(x);
    default: return sqrtf(fabsf(x));
    }
}

float q_make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw) {
    const float max = q_signed_absmax(x, n), amax = fabsf(max);
    if (amax < Q_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -nmax / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; ++i) L[i] = (int8_t)(nmax + q_clamp_i(q_nearest_int(iscale * x[i]), -nmax, nmax - 1));
        return 1 / iscale;
    }
    int return_early = 0;
    if (rmse_type < 0) {
        rmse_type = -rmse_type;
        return_early = 1;
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = q_clamp_i(q_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = qw ? qw[i] : rmse_weight(rmse_type, x[i]);
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    if (return_early) return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
    float best = scale * sumlx;
    /* Try 18 nearby inverse scales; keep the one with the largest (sum w x l)^2 / (sum w l^2), which is
     * the one with the smallest weighted squared error at its optimal scale. */
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = q_clamp_i(q_nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = qw ? qw[i] : rmse_weight(rmse_type, x[i]);
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i)
                L[i] = (int8_t)(nmax + q_clamp_i(q_nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

float q_make_q3_quants(int n, int nmax, const float *x, int8_t *L, int do_rmse) {
    const float max = q_signed_absmax(x, n), amax = fabsf(max);
    if (amax < Q_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -nmax / max;
    if (do_rmse) {
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = q_clamp_i(q_nearest_int(iscale * x[i]), -nmax, nmax - 1);
            L[i] = (int8_t)l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        /* Coordinate descent: move one level at a time when it raises sumlx^2/suml2. */
        for (int itry = 0; itry < 5; ++itry) {
            int n_changed = 0;
            for (int i = 0; i < n; ++i) {
                float w = x[i] * x[i];
                float slx = sumlx - w * x[i] * L[i];
                if (slx > 0) {
                    float sl2 = suml2 - w * L[i] * L[i];
                    int new_l = q_clamp_i(q_nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                    if (new_l != L[i]) {
                        slx += w * x[i] * new_l;
                        sl2 += w * new_l * new_l;
                        if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                            L[i] = (int8_t)new_l;
                            sumlx = slx;
                            suml2 = sl2;
                            ++n_changed;
                        }
                    }
                }
            }
            if (!n_changed) break;
        }
        for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
        return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(nmax + q_clamp_i(q_nearest_int(iscale * x[i]), -nmax, nmax - 1));
    return 1 / iscale;
}

/* Level of v among 0..nmax: q_nearest_int then clamp, written without branches so the compiler can
 * vectorize the loops using it (NaN and out-of-range values clamp exactly as q_nearest_int's do). */
static inline int level_clamped(float v, int nmax) {
    v = v > -4194303.0f ? v : -4194303.0f; /* NaN goes to the low end, i.e. level 0 as q_nearest_int's 0 */
    v = v < 4194303.0f ? v : 4194303.0f;
    float t = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &t, sizeof i);
    const int l = (i & 0x007fffff) - 0x00400000;
    return l < 0 ? 0 : l > nmax ? nmax : l;
}

/* Weighted least squares of x ~ scale*L + min over the levels L found for each trial inverse scale
 * (rmin + rdelta*is + nmax)/(max - min), is = 0..nstep; keeps the fit of least weighted error.
 * Same arithmetic as ggml's make_qkx2/qkx3_quants (every float sum in the same order, so the same
 * bytes); two shortcuts that cannot change the outcome: a trial whose levels equal the previous
 * trial's is skipped (identical sums, so it cannot beat the best), and the error sum of a trial stops
 * once it reaches the best error (its terms are >= 0, so the partial sums never decrease). */
static float qkx_search(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                        uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad) {
    float w[QK_K]; /* n <= QK_K */
    uint8_t prev[QK_K];
    float min = x[0], max = x[0];
    float sum_w = 0, sum_x = 0;
    for (int i = 0; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        w[i] = weights ? weights[i] : x[i] * x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        L[i] = (uint8_t)q_clamp_i(q_nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += w[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    int have_prev = 0;
    for (int is = 0; is <= nstep; ++is) {
        /* As ggml: the trial levels are relative to the best min so far (a min at or near max, giving
         * inf or NaN here, only yields clamped levels). */
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        const float m0 = min;
        for (int i = 0; i < n; ++i) Laux[i] = (uint8_t)level_clamped(iscale * (x[i] - m0), nmax);
        if (have_prev && memcmp(prev, Laux, (size_t)n) == 0) continue;
        memcpy(prev, Laux, (size_t)n);
        have_prev = 1;
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const int l = Laux[i];
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            int i = 0;
            for (; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += w[i] * diff;
                if (cur_error >= best_error) break;
            }
            if (i == n && cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

float q_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                         uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad) {
    return qkx_search(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad);
}

float q_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                         uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad) {
    return qkx_search(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad);
}

float q_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights) {
    float max = 0;
    for (int i = 0; i < n; ++i) max = fmaxf(max, x[i]);
    if (max < Q_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; ++i) L[i] = (uint8_t)q_clamp_i(q_nearest_int(iscale * x[i]), 0, nmax);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        float diff = x[i] - scale * L[i];
        best_mse += quant_weights[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        float iscale_is = (0.1f * is + nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = q_clamp_i(q_nearest_int(iscale_is * x[i]), 0, nmax);
            float diff = x[i] - scale_is * l;
            mse += quant_weights[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = q_clamp_i(q_nearest_int(iscale * x[i]), 0, nmax);
        L[i] = (uint8_t)l;
        float w = quant_weights[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = quant_weights[i];
            float slx = sumlx - w * x[i] * L[i];
            float sl2 = suml2 - w * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = q_clamp_i(q_nearest_int(x[i] * sl2 / slx), 0, nmax);
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* --- the same search on 8 independent groups at once ------------------------------------------------
 * qkx_search is a chain of dependent float additions per group, so one group at a time leaves the CPU
 * waiting on add latency. Here 8 groups (the 8 sub-blocks of a Q4_K/Q5_K super-block, or half of Q2_K's
 * 16) run side by side, one per vector lane (GCC/Clang vector extensions; split into SSE/NEON halves as
 * the target allows): every lane performs exactly qkx_search's float operations in the same order, so
 * the results are bit-identical, but 8 chains advance per instruction. Lanes whose group is constant
 * compute on dummies (denominators forced to 1) and are discarded at the end, as qkx_search returns early. */
#define QX_LANES 8
/* 4 lanes per vector (SSE2 / NEON width, so comparisons and conversions stay in vector registers);
 * the 8 groups are two vectors processed side by side. */
typedef float v8f __attribute__((vector_size(16)));
typedef int32_t v8i __attribute__((vector_size(16)));
#define QX_VL 4

/* Helpers are macros: 32-byte vectors passed to functions draw ABI notes from GCC on SSE-only targets. */
#define V8_SEL(m, a, b) ((v8f)(((v8i)(a) & (m)) | ((v8i)(b) & ~(m))))
#define V8_SELI(m, a, b) (((a) & (m)) | ((b) & ~(m)))
#define V8_SPLAT(v) ((v8f){(v), (v), (v), (v)})
/* |diff| or diff^2, per lane */
#define V8_ERR_TERM(diff, use_mad) ((use_mad) ? (v8f)((v8i)(diff) & 0x7fffffff) : (diff) * (diff))

/* level_clamped on 8 lanes (same bit trick, same clamps), as floats. */
#define V8_LEVEL(out, v_in, nmax)                                                                            \
    do {                                                                                                     \
        v8f v_ = (v_in);                                                                                     \
        const v8f lo_ = V8_SPLAT(-4194303.0f), hi_ = V8_SPLAT(4194303.0f);                                 \
        v_ = V8_SEL(v_ > lo_, v_, lo_);                                                                      \
        v_ = V8_SEL(v_ < hi_, v_, hi_);                                                                      \
        v8i i_ = (v8i)(v_ + V8_SPLAT(12582912.0f));                                                          \
        i_ = (i_ & 0x007fffff) - 0x00400000;                                                                 \
        const v8i z_ = {0}, top_ = z_ + (nmax);                                                              \
        i_ = V8_SELI(i_ < z_, z_, i_);                                                                       \
        i_ = V8_SELI(i_ > top_, top_, i_);                                                                   \
        (out) = __builtin_convertvector(i_, v8f);                                                            \
    } while (0)

static void qkx_search_x4(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *scales_out,
                          float *mins_out, float rmin, float rdelta, int nstep, int use_mad) {
    v8f xt[32] = {{0}}, wt[32] = {{0}}, Lt[32], Lat[32];
    for (int i = 0; i < n; ++i)
        for (int b = 0; b < QX_VL; ++b) {
            xt[i][b] = x[b * n + i];
            wt[i][b] = weights[b * n + i];
        }
    const v8f zero = V8_SPLAT(0.0f), one = V8_SPLAT(1.0f);
    v8f mn = xt[0], mx = xt[0], sw = zero, sx = zero;
    for (int i = 0; i < n; ++i) {
        mn = V8_SEL(xt[i] < mn, xt[i], mn);
        mx = V8_SEL(xt[i] > mx, xt[i], mx);
        sw += wt[i];
        sx += wt[i] * xt[i];
    }
    mn = V8_SEL(mn > zero, zero, mn);
    const v8i active = mx > mn;
    v8f isc = V8_SPLAT((float)nmax) / V8_SEL(active, mx - mn, one);
    v8f scale = one / isc, best = zero;
    for (int i = 0; i < n; ++i) {
        V8_LEVEL(Lt[i], isc * (xt[i] - mn), nmax);
        best += wt[i] * V8_ERR_TERM(scale * Lt[i] + mn - xt[i], use_mad);
    }
    for (int is = 0; is <= nstep; ++is) {
        isc = V8_SPLAT(rmin + rdelta * is + nmax) / V8_SEL(active, mx - mn, one);
        v8f sl = zero, sl2 = zero, sxl = zero, err = zero;
        for (int i = 0; i < n; ++i) {
            V8_LEVEL(Lat[i], isc * (xt[i] - mn), nmax);
            const v8f wl = wt[i] * Lat[i];
            sl += wl;
            sl2 += wl * Lat[i];
            sxl += wl * xt[i];
        }
        const v8f D = sw * sl2 - sl * sl;
        const v8i d_pos = D > zero;
        const v8f Dg = V8_SEL(d_pos, D, one);
        const v8f s = (sw * sxl - sx * sl) / Dg;
        const v8f m = (sl2 * sx - sl * sxl) / Dg;
        const v8f s0 = sxl / V8_SEL(sl2 > zero, sl2, one); /* sl2 > 0 whenever D > 0 */
        const v8i m_pos = m > zero;
        const v8f ts = V8_SEL(m_pos, s0, s), tm = V8_SEL(m_pos, zero, m);
        for (int i = 0; i < n; ++i) err += wt[i] * V8_ERR_TERM(ts * Lat[i] + tm - xt[i], use_mad);
        const v8i acc = active & d_pos & (err < best);
        best = V8_SEL(acc, err, best);
        scale = V8_SEL(acc, ts, scale);
        mn = V8_SEL(acc, tm, mn);
        for (int i = 0; i < n; ++i) Lt[i] = V8_SEL(acc, Lat[i], Lt[i]);
    }
    for (int b = 0; b < QX_VL; ++b) {
        for (int i = 0; i < n; ++i) L[b * n + i] = active[b] ? (uint8_t)Lt[i][b] : 0;
        scales_out[b] = active[b] ? scale[b] : 0.0f;
        mins_out[b] = -mn[b];
    }
}

void q_make_qkx_quants_x8(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *scales,
                          float *mins, float rmin, float rdelta, int nstep, int use_mad) {
    if (n < 1 || n > 32 || nstep < 1) { /* not a shape the lanes handle (n <= QK_K): one group at a time */
        uint8_t Laux[QK_K];
        for (int b = 0; b < QX_LANES; ++b)
            scales[b] = q_make_qkx2_quants(n, nmax, x + b * n, weights + b * n, L + b * n, &mins[b], Laux, rmin,
                                           rdelta, nstep, use_mad);
        return;
    }
    for (int h = 0; h < QX_LANES; h += QX_VL)
        qkx_search_x4(n, nmax, x + h * n, weights + h * n, L + h * n, scales + h, mins + h, rmin, rdelta, nstep,
                      use_mad);
}

/* make_qx_quants (rmse_type 1: weights qw, or x^2 when qw is NULL) on 4 groups of n (<= 32) elements at
 * once, one per vector lane: the same float operations per lane as q_make_qx_quants, so the same
 * results. Lanes of all-zero groups compute on dummies and are discarded. */
#define V8_LEVEL_RANGE(out, v_in, lo_i, hi_i)                                                                \
    do {                                                                                                     \
        v8f v_ = (v_in);                                                                                     \
        const v8f lo_ = V8_SPLAT(-4194303.0f), hi_ = V8_SPLAT(4194303.0f);                                 \
        v_ = V8_SEL(v_ == v_, v_, V8_SPLAT(0.0f)); /* NaN: 0, as q_nearest_int */                            \
        v_ = V8_SEL(v_ > lo_, v_, lo_);                                                                      \
        v_ = V8_SEL(v_ < hi_, v_, hi_);                                                                      \
        v8i i_ = (v8i)(v_ + V8_SPLAT(12582912.0f));                                                          \
        i_ = (i_ & 0x007fffff) - 0x00400000;                                                                 \
        const v8i z_ = {0}, bot_ = z_ + (lo_i), top_ = z_ + (hi_i);                                          \
        i_ = V8_SELI(i_ < bot_, bot_, i_);                                                                   \
        i_ = V8_SELI(i_ > top_, top_, i_);                                                                   \
        (out) = __builtin_convertvector(i_, v8f);                                                            \
    } while (0)

void q_make_qx_quants_x4(int n, int nmax, const float *x, const float *qw, int8_t *L, float *scales_out) {
    if (n < 1 || n > 32) {
        for (int b = 0; b < QX_VL; ++b)
            scales_out[b] = q_make_qx_quants(n, nmax, x + b * n, L + b * n, 1, qw ? qw + b * n : NULL);
        return;
    }
    v8f xt[32] = {{0}}, wt[32] = {{0}}, Lt[32], Lat[32];
    for (int i = 0; i < n; ++i)
        for (int b = 0; b < QX_VL; ++b) {
            const float v = x[b * n + i];
            xt[i][b] = v;
            wt[i][b] = qw ? qw[b * n + i] : v * v;
        }
    const v8f zero = V8_SPLAT(0.0f), one = V8_SPLAT(1.0f);
    const v8i sign = {INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN};
    v8f amax = zero, max = zero;
    for (int i = 0; i < n; ++i) {
        const v8f ax = (v8f)((v8i)xt[i] & ~sign);
        const v8i gt = ax > amax;
        amax = V8_SEL(gt, ax, amax);
        max = V8_SEL(gt, xt[i], max);
    }
    const v8i active = amax >= V8_SPLAT(Q_GROUP_MAX_EPS);
    max = V8_SEL(active, max, one);
    v8f iscale = V8_SPLAT((float)-nmax) / max;
    v8f sumlx = zero, suml2 = zero;
    for (int i = 0; i < n; ++i) {
        V8_LEVEL_RANGE(Lt[i], iscale * xt[i], -nmax, nmax - 1);
        sumlx += wt[i] * xt[i] * Lt[i];
        suml2 += wt[i] * Lt[i] * Lt[i];
    }
    const v8i l2_nz = suml2 != zero;
    v8f scale = V8_SEL(l2_nz, sumlx / V8_SEL(l2_nz, suml2, one), zero);
    v8f best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = V8_SPLAT(-(nmax + 0.1f * is)) / max;
        sumlx = suml2 = zero;
        for (int i = 0; i < n; ++i) {
            V8_LEVEL_RANGE(Lat[i], iscale * xt[i], -nmax, nmax - 1);
            sumlx += wt[i] * xt[i] * Lat[i];
            suml2 += wt[i] * Lat[i] * Lat[i];
        }
        const v8i acc = (suml2 > zero) & (sumlx * sumlx > best * suml2);
        const v8f s = sumlx / V8_SEL(acc, suml2, one);
        scale = V8_SEL(acc, s, scale);
        best = V8_SEL(acc, s * sumlx, best);
        for (int i = 0; i < n; ++i) Lt[i] = V8_SEL(acc, Lat[i], Lt[i]);
    }
    for (int b = 0; b < QX_VL; ++b) {
        for (int i = 0; i < n; ++i) L[b * n + i] = active[b] ? (int8_t)((int)Lt[i][b] + nmax) : 0;
        scales_out[b] = active[b] ? scale[b] : 0.0f;
    }
}
