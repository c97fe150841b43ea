// ops_attention.cu — the KV cache stores and causal attention over it on the device.
//
// The stores encode rows exactly as the CPU's edge_kv_cache_store (kv_cache.c): F32 as is, F16 rounded to
// nearest even (common.h's edge_f32_to_f16), Q8_0 blocks of 32 with d = max|x| / 127 stored as f16 and
// q = roundf(x * (1 / d)) (half away from zero), so a cache written here reads back as the CPU's.
//
// Attention: one thread block per (query head, token). Its warps score the causal keys 0..pos (one key per
// warp at a time, the lanes over head_dim, a shuffle sum) into the scratch row of that (token, head); then
// grok.c's head_softmax: [PAD] keys at -inf when any key 0..pos is not [PAD], s * mult, cap * tanh(s / cap),
// the max subtracted, exp, the sum, p = e * (1 / sum) (fp32); then out[j] = Σ_t p_t v_t[j] by a thread per
// j (keys with p = 0 skipped, as the CPU does). Only the order of the float sums differs from the CPU.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_ops.h"

using namespace edge_cu;

namespace {

constexpr int kAttnThreads = 128;
constexpr int kAttnWarps = kAttnThreads / 32;

// Element c of a cached row, decoded as edge_kv_load does.
template <int kKv>
__device__ __forceinline__ float kv_elem(const uint8_t *row, int64_t c) {
    if (kKv == EDGE_TYPE_F32) return ((const float *)row)[c];
    if (kKv == EDGE_TYPE_F16) return h2f(((const uint16_t *)row)[c]);
    const unsigned ci = (unsigned)c;  // a row holds < 2^31 elements
    const uint8_t *blk = row + (ci / kQK8) * 34;
    return mul_rn(h2f(ld16(blk)), (float)(int8_t)blk[2 + ci % kQK8]);
}

__global__ void kv_store_float(int kv_type, uint8_t *dst, size_t row_bytes, const float *src, int64_t n_tok,
                               int64_t row_elems) {
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_tok * row_elems) return;
    const int64_t t = idx / row_elems, c = idx % row_elems;
    uint8_t *row = dst + (size_t)t * row_bytes;
    if (kv_type == EDGE_TYPE_F32)
        ((float *)row)[c] = src[idx];
    else
        ((uint16_t *)row)[c] = (uint16_t)f2h(src[idx]);
}

// One thread per Q8_0 block (kv_cache.c's quantize_q8_0).
__global__ void kv_store_q8_0(uint8_t *dst, size_t row_bytes, const float *src, int64_t n_tok, int64_t row_elems) {
    const int64_t nb = row_elems / kQK8;
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_tok * nb) return;
    const int64_t t = idx / nb, b = idx % nb;
    const float *x = src + t * row_elems + b * kQK8;
    uint8_t *blk = dst + (size_t)t * row_bytes + b * 34;
    float amax = 0.0f;
    for (int j = 0; j < kQK8; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint32_t dh = f2h(d);
    blk[0] = (uint8_t)(dh & 0xff);
    blk[1] = (uint8_t)(dh >> 8);
    for (int j = 0; j < kQK8; j++) blk[2 + j] = (uint8_t)(int8_t)roundf(mul_rn(x[j], id));
}

// A value of every thread of the block combined (max or sum); every thread gets the result.
template <bool kMax>
__device__ float block_combine(float v, float *red) {
    v = kMax ? warp_max(v) : warp_sum(v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = red[0];
    for (int w = 1; w < kAttnWarps; w++) r = kMax ? fmaxf(r, red[w]) : r + red[w];
    __syncthreads();  // red is reused
    return r;
}

template <int kKv>
__global__ void __launch_bounds__(kAttnThreads)
    attention_kernel(const uint8_t *k, const uint8_t *v, size_t row_bytes, const uint8_t *is_pad, const float *q,
                     int64_t n_past, int64_t n_head, int64_t group, int64_t hd, float mult, float cap, float *out,
                     float *scores, int64_t score_stride) {
    extern __shared__ float qs[];  // head_dim floats: this head's query
    __shared__ float red[kAttnWarps];
    const int64_t h = blockIdx.x, i = blockIdx.y, pos = n_past + i, g = h / group;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float *qh = q + (i * n_head + h) * hd;
    for (int64_t j = threadIdx.x; j < hd; j += blockDim.x) qs[j] = qh[j];
    __shared__ int any_real;  // any key 0..pos not [PAD] (grok.c's any_real_key)
    if (threadIdx.x == 0) any_real = 0;
    __syncthreads();
    int real = 0;
    for (int64_t t = threadIdx.x; t <= pos && !real; t += blockDim.x) real = is_pad[t] == 0;
    if (real) atomicOr(&any_real, 1);  // (__syncthreads_or: not in chipStar's device library)
    __syncthreads();                   // also: qs is written
    const bool mask_pads = any_real != 0;

    float *sc = scores + (i * n_head + h) * score_stride;
    const int64_t off = g * hd;  // KV head g's slice of a row
    float local_max = -INFINITY;
    for (int64_t t = warp; t <= pos; t += kAttnWarps) {
        const uint8_t *krow = k + (size_t)t * row_bytes;
        float dot = 0.0f;
        for (int64_t j = lane; j < hd; j += 32) dot += qs[j] * kv_elem<kKv>(krow, off + j);
        dot = warp_sum(dot);
        float s = -INFINITY;
        if (!(mask_pads && is_pad[t])) {
            s = mul_rn(dot, mult);
            if (cap > 0.0f) s = mul_rn(cap, tanhf(__fdiv_rn(s, cap)));
        }
        if (lane == 0) sc[t] = s;
        local_max = fmaxf(local_max, s);
    }
    const float max = block_combine<true>(local_max, red);  // its barrier also publishes sc
    float local_sum = 0.0f;
    for (int64_t t = threadIdx.x; t <= pos; t += blockDim.x) {
        const float e = expf(sc[t] - max);
        sc[t] = e;
        local_sum += e;
    }
    const float inv = 1.0f / block_combine<false>(local_sum, red);
    for (int64_t j = threadIdx.x; j < hd; j += blockDim.x) {
        float acc = 0.0f;
        for (int64_t t = 0; t <= pos; t++) {
            const float p = mul_rn(sc[t], inv);
            if (p == 0.0f) continue;  // masked (or underflowed) keys add nothing
            const uint8_t *vrow = v + (size_t)t * row_bytes;
            acc += p * kv_elem<kKv>(vrow, off + j);
        }
        out[(i * n_head + h) * hd + j] = acc;
    }
}

}  // namespace

extern "C" edge_status edge_cu_kv_store(void *stream, int kv_type, uint8_t *dst, size_t row_bytes, const float *src,
                                        int64_t n_tok, int64_t row_elems) {
    static const char *op = "edge_cu_kv_store";
    if (kv_type != EDGE_TYPE_F32 && kv_type != EDGE_TYPE_F16 && kv_type != EDGE_TYPE_Q8_0)
        return edge_fail(EDGE_ERR_UNSUPPORTED, "%s: KV cache type %d is not supported (F16 = 1, Q8_0 = 8, F32 = 0)", op,
                         kv_type);
    if (!dst || !src) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: dst and src must not be NULL", op);
    if (n_tok < 0 || row_elems <= 0 || row_elems > ((int64_t)1 << 30) || n_tok > ((int64_t)1 << 30))
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: %lld rows of %lld elements", op, (long long)n_tok,
                         (long long)row_elems);
    if (kv_type == EDGE_TYPE_Q8_0 && row_elems % kQK8 != 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: a Q8_0 row of %lld elements is not a whole number of blocks", op,
                         (long long)row_elems);
    const size_t need = kv_type == EDGE_TYPE_Q8_0 ? (size_t)(row_elems / kQK8) * 34
                                                   : (size_t)row_elems * (kv_type == EDGE_TYPE_F32 ? 4 : 2);
    if (row_bytes < need || (kv_type != EDGE_TYPE_Q8_0 && row_bytes % (kv_type == EDGE_TYPE_F32 ? 4 : 2) != 0))
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: row_bytes %zu for rows of %zu bytes", op, row_bytes, need);
    if (n_tok == 0) return EDGE_OK;
    cudaStream_t st = (cudaStream_t)stream;
    if (kv_type == EDGE_TYPE_Q8_0)
        kv_store_q8_0<<<grid_for(n_tok * (row_elems / kQK8), 128), 128, 0, st>>>(dst, row_bytes, src, n_tok, row_elems);
    else
        kv_store_float<<<grid_for(n_tok * row_elems, 256), 256, 0, st>>>(kv_type, dst, row_bytes, src, n_tok,
                                                                           row_elems);
    return launched(op);
}

extern "C" size_t edge_cu_attention_scratch_bytes(int64_t n_tok, int64_t n_head, int64_t n_ctx) {
    if (n_tok <= 0 || n_head <= 0 || n_ctx <= 0) return 0;
    return (size_t)n_tok * (size_t)n_head * (size_t)n_ctx * sizeof(float);
}

extern "C" edge_status edge_cu_attention(void *stream, int kv_type, const uint8_t *k, const uint8_t *v,
                                         size_t row_bytes, const uint8_t *is_pad, const float *q, int64_t n_tok,
                                         int64_t n_past, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                                         float mult, float cap, float *out, void *scratch, size_t scratch_bytes) {
    static const char *op = "edge_cu_attention";
    if (kv_type != EDGE_TYPE_F32 && kv_type != EDGE_TYPE_F16 && kv_type != EDGE_TYPE_Q8_0)
        return edge_fail(EDGE_ERR_UNSUPPORTED, "%s: KV cache type %d is not supported (F16 = 1, Q8_0 = 8, F32 = 0)", op,
                         kv_type);
    if (!k || !v || !is_pad || !q || !out)
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: k, v, is_pad, q and out must not be NULL", op);
    if (n_tok < 0 || n_tok > 65535 || n_past < 0 || n_past > ((int64_t)1 << 30) || n_head <= 0 || n_head > 65535 ||
        n_head_kv <= 0 || n_head % n_head_kv != 0 || head_dim <= 0 || head_dim > 4096)
        return edge_fail(EDGE_ERR_INVALID_ARG,
                         "%s: n_tok %lld (<= 65535), n_past %lld, n_head %lld (a multiple of n_head_kv %lld), "
                         "head_dim %lld (<= 4096)", op, (long long)n_tok, (long long)n_past, (long long)n_head,
                         (long long)n_head_kv, (long long)head_dim);
    if (kv_type == EDGE_TYPE_Q8_0 && head_dim % kQK8 != 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: a Q8_0 cache needs head_dim (%lld) a multiple of 32", op,
                         (long long)head_dim);
    const int64_t row_elems = n_head_kv * head_dim;
    const size_t need = kv_type == EDGE_TYPE_Q8_0 ? (size_t)(row_elems / kQK8) * 34
                                                   : (size_t)row_elems * (kv_type == EDGE_TYPE_F32 ? 4 : 2);
    if (row_bytes < need || (kv_type != EDGE_TYPE_Q8_0 && row_bytes % (kv_type == EDGE_TYPE_F32 ? 4 : 2) != 0))
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: row_bytes %zu for rows of %zu bytes", op, row_bytes, need);
    if (!(cap >= 0.0f) || !isfinite(mult))
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: cap must be >= 0 and mult finite", op);
    if (n_tok == 0) return EDGE_OK;
    const int64_t n_keys = n_past + n_tok;
    const size_t need_scratch = edge_cu_attention_scratch_bytes(n_tok, n_head, n_keys);
    if (!scratch || scratch_bytes < need_scratch)
        return edge_fail(EDGE_ERR_INVALID_ARG,
                         "%s: scratch of %zu bytes, %zu needed for %lld keys (edge_cu_attention_scratch_bytes)", op,
                         scratch ? scratch_bytes : (size_t)0, need_scratch, (long long)n_keys);
    const dim3 grid((unsigned)n_head, (unsigned)n_tok);
    const size_t shmem = (size_t)head_dim * sizeof(float);
    cudaStream_t st = (cudaStream_t)stream;
    const int64_t group = n_head / n_head_kv;
    float *sc = (float *)scratch;
    switch (kv_type) {
    case EDGE_TYPE_F32:
        attention_kernel<EDGE_TYPE_F32><<<grid, kAttnThreads, shmem, st>>>(k, v, row_bytes, is_pad, q, n_past, n_head,
                                                                           group, head_dim, mult, cap, out, sc, n_keys);
        break;
    case EDGE_TYPE_F16:
        attention_kernel<EDGE_TYPE_F16><<<grid, kAttnThreads, shmem, st>>>(k, v, row_bytes, is_pad, q, n_past, n_head,
                                                                           group, head_dim, mult, cap, out, sc, n_keys);
        break;
    default:
        attention_kernel<EDGE_TYPE_Q8_0><<<grid, kAttnThreads, shmem, st>>>(k, v, row_bytes, is_pad, q, n_past, n_head,
                                                                            group, head_dim, mult, cap, out, sc, n_keys);
        break;
    }
    return launched(op);
}
