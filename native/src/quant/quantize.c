/* quantize.c — edge_quantize / edge_dequantize: argument checks, the per-type dispatch table, and the
 * split of rows over threads (each thread owns a contiguous range of rows; row quantizers are pure,
 * so the bytes do not depend on the number of threads). */
#include <pthread.h>
#include <stdlib.h>

#include "quant_internal.h"

/* --- float targets --------------------------------------------------------------------------------- */

static void quantize_row_f32(const float *x, void *dst, int64_t n, const float *imatrix) {
    (void)imatrix;
    memcpy(dst, x, (size_t)n * sizeof(float));
}

static void quantize_row_f16(const float *x, void *dst, int64_t n, const float *imatrix) {
    (void)imatrix;
    uint16_t *y = dst;
    for (int64_t i = 0; i < n; ++i) y[i] = edge_f32_to_f16(x[i]);
}

static void quantize_row_bf16(const float *x, void *dst, int64_t n, const float *imatrix) {
    (void)imatrix;
    uint16_t *y = dst;
    for (int64_t i = 0; i < n; ++i) y[i] = edge_f32_to_bf16(x[i]);
}

/* The quantizer of a type; NULL when the type is not a quantization target. `needs_finite`: the
 * type's scale searches assume finite input (the float targets convert inf/NaN faithfully). */
static q_row_quantizer quantizer_for(int type, int *needs_finite) {
    *needs_finite = 1;
    switch (type) {
    case EDGE_TYPE_F32: *needs_finite = 0; return quantize_row_f32;
    case EDGE_TYPE_F16: *needs_finite = 0; return quantize_row_f16;
    case EDGE_TYPE_BF16: *needs_finite = 0; return quantize_row_bf16;
    case EDGE_TYPE_Q4_0: return q_quantize_row_q4_0;
    case EDGE_TYPE_Q4_1: return q_quantize_row_q4_1;
    case EDGE_TYPE_Q5_0: return q_quantize_row_q5_0;
    case EDGE_TYPE_Q5_1: return q_quantize_row_q5_1;
    case EDGE_TYPE_Q8_0: return q_quantize_row_q8_0;
    case EDGE_TYPE_Q2_K: return q_quantize_row_q2_K;
    case EDGE_TYPE_Q3_K: return q_quantize_row_q3_K;
    case EDGE_TYPE_Q4_K: return q_quantize_row_q4_K;
    case EDGE_TYPE_Q5_K: return q_quantize_row_q5_K;
    case EDGE_TYPE_Q6_K: return q_quantize_row_q6_K;
    case EDGE_TYPE_IQ4_NL: return q_quantize_row_iq4_nl;
    case EDGE_TYPE_IQ4_XS: return q_quantize_row_iq4_xs;
    default: return NULL;
    }
}

/* --- threads --------------------------------------------------------------------------------------- */

typedef struct {
    q_row_quantizer fn;
    const float *src;
    uint8_t *dst;
    const float *imatrix;
    int64_t n_per_row, row_bytes;
    int64_t row_begin, row_end;
    int check_finite;
    int64_t bad_row; /* first row holding inf/NaN, -1 if none */
} quant_job;

static int row_is_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static void *quant_worker(void *arg) {
    quant_job *job = arg;
    for (int64_t r = job->row_begin; r < job->row_end; ++r) {
        const float *x = job->src + r * job->n_per_row;
        if (job->check_finite && !row_is_finite(x, job->n_per_row)) {
            job->bad_row = r;
            return NULL;
        }
        job->fn(x, job->dst + r * job->row_bytes, job->n_per_row, job->imatrix);
    }
    return NULL;
}

EDGE_API edge_status edge_quantize(int type, const float *src, int64_t n_rows, int64_t n_per_row, void *dst,
                                   uint64_t dst_size, const float *imatrix, int n_threads) {
    const edge_type_traits *traits = edge_type_traits_get(type);
    int needs_finite = 1;
    q_row_quantizer fn = quantizer_for(type, &needs_finite);
    if (!traits || !fn)
        return edge_fail(EDGE_ERR_UNSUPPORTED, "edge_quantize: type %d (%s) is not a quantization target", type,
                         traits ? traits->name : "unknown");
    if (n_rows < 0 || n_per_row <= 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "edge_quantize: bad shape: %lld rows of %lld elements",
                         (long long)n_rows, (long long)n_per_row);
    if (n_per_row % traits->block_elems != 0)
        return edge_fail(EDGE_ERR_INVALID_ARG,
                         "edge_quantize: a row of %lld elements is not a multiple of %s's block size %lld",
                         (long long)n_per_row, traits->name, (long long)traits->block_elems);
    if (n_rows > 0 && (!src || !dst)) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_quantize: NULL src or dst");
    if (n_threads < 0) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_quantize: n_threads %d < 0", n_threads);
    const int64_t row_bytes = n_per_row / traits->block_elems * traits->block_bytes;
    uint64_t need;
    if (!edge_mul_u64((uint64_t)n_rows, (uint64_t)row_bytes, &need) ||
        (uint64_t)n_rows > UINT64_MAX / sizeof(float) / (uint64_t)n_per_row)
        return edge_fail(EDGE_ERR_RANGE, "edge_quantize: %lld x %lld elements overflow", (long long)n_rows,
                         (long long)n_per_row);
    if (dst_size < need)
        return edge_fail(EDGE_ERR_INVALID_ARG,
                         "edge_quantize: destination holds %llu bytes, %lld rows of %lld %s elements need %llu",
                         (unsigned long long)dst_size, (long long)n_rows, (long long)n_per_row, traits->name,
                         (unsigned long long)need);
    if (n_rows == 0) {
        edge_clear_error();
        return EDGE_OK;
    }
    if (imatrix) {
        for (int64_t i = 0; i < n_per_row; ++i)
            if (!(imatrix[i] >= 0) || !isfinite(imatrix[i]))
                return edge_fail(EDGE_ERR_INVALID_ARG, "edge_quantize: imatrix[%lld] = %g is not a finite value >= 0",
                                 (long long)i, (double)imatrix[i]);
    }

    if (n_threads == 0) {
        edge_cpu_features cpu;
        n_threads = edge_cpu_detect(&cpu) == EDGE_OK && cpu.n_cores > 0 ? cpu.n_cores : 1;
    }
    if ((int64_t)n_threads > n_rows) n_threads = (int)n_rows;

    quant_job *jobs = calloc((size_t)n_threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)n_threads, sizeof *tids);
    int *started = calloc((size_t)n_threads, sizeof *started);
    if (!jobs || !tids || !started) {
        free(jobs);
        free(tids);
        free(started);
        return edge_fail(EDGE_ERR_NOMEM, "edge_quantize: out of memory for %d thread descriptors", n_threads);
    }
    for (int t = 0; t < n_threads; ++t) {
        jobs[t] = (quant_job){fn, src, dst, imatrix, n_per_row, row_bytes, n_rows * t / n_threads,
                              n_rows * (t + 1) / n_threads, needs_finite, -1};
    }
    /* The caller's thread runs job 0; a thread that fails to start leaves its job to the caller. */
    for (int t = 1; t < n_threads; ++t) started[t] = pthread_create(&tids[t], NULL, quant_worker, &jobs[t]) == 0;
    quant_worker(&jobs[0]);
    for (int t = 1; t < n_threads; ++t) {
        if (started[t]) pthread_join(tids[t], NULL);
        else quant_worker(&jobs[t]);
    }
    int64_t bad_row = -1;
    for (int t = 0; t < n_threads && bad_row < 0; ++t) bad_row = jobs[t].bad_row;
    free(jobs);
    free(tids);
    free(started);
    if (bad_row >= 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "edge_quantize: row %lld holds inf or NaN, which %s cannot represent",
                         (long long)bad_row, traits->name);
    edge_clear_error();
    return EDGE_OK;
}

EDGE_API edge_status edge_dequantize(int type, const void *src, int64_t n, float *dst) {
    const edge_type_traits *traits = edge_type_traits_get(type);
    q_row_dequantizer fn = q_dequantizer_for(type);
    if (!traits || !fn)
        return edge_fail(EDGE_ERR_UNSUPPORTED, "edge_dequantize: type %d (%s) has no dequantizer", type,
                         traits ? traits->name : "unknown");
    if (n < 0 || n % traits->block_elems != 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "edge_dequantize: %lld elements is not a multiple of %s's block size %lld",
                         (long long)n, traits->name, (long long)traits->block_elems);
    if (n > 0 && (!src || !dst)) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_dequantize: NULL src or dst");
    if (n > 0) fn(src, dst, n);
    edge_clear_error();
    return EDGE_OK;
}
