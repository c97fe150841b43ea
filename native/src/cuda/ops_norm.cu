// ops_norm.cu — RMSNorm (and its residual form), the token embedding and rotate-half RoPE on the device,
// with grok.c's numerics: the sum of squares in double, every product unfused in grok.c's order
// (mul_rn / add_rn, so no contraction into FMAs can change a bit), the embedding rows
// dequantized as dequantize.c does.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_ops.h"

using namespace edge_cu;

namespace {

constexpr int kNormThreads = 256;

// 1 / sqrt(mean(x²) + eps) of one row (sum of squares in double, a tree over the block's threads), as
// grok.c's rmsnorm rounds it: (float)(1.0 / sqrt(ss / n + eps)). Every thread of the block gets it.
__device__ float row_rscale(const float *x, int64_t n, double eps) {
    __shared__ double part[kNormThreads];
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += (double)x[i] * (double)x[i];
    part[threadIdx.x] = ss;
    __syncthreads();
    for (int o = kNormThreads / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) part[threadIdx.x] += part[threadIdx.x + o];
        __syncthreads();
    }
    const float r = (float)(1.0 / sqrt(part[0] / (double)n + eps));
    __syncthreads();  // part[0] read by all before a next use of part
    return r;
}

// mode 0: out = scale ⊙ (x r); 1: x += scale ⊙ (x r); 2: x += scale ⊙ (src r(src)) (out is src).
__global__ void __launch_bounds__(kNormThreads) rmsnorm_kernel(float *out, float *x, const float *scale, int64_t n,
                                                               double eps, int mode) {
    const int64_t row = blockIdx.x;
    float *xr = x + row * n;
    const float *src = mode == 2 ? out + row * n : xr;
    const float r = row_rscale(src, n, eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = mul_rn(scale[i], mul_rn(src[i], r));
        if (mode == 0)
            out[row * n + i] = v;
        else
            xr[i] = add_rn(xr[i], v);
    }
}

__global__ void embed_kernel(int type, const uint8_t *table, size_t row_stride, const int32_t *tokens, int64_t n_embd,
                             int block_elems, int block_bytes, float scale, float *x) {
    const int64_t i = blockIdx.y;
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_embd) return;
    const uint8_t *row = table + (size_t)tokens[i] * row_stride;
    const float v = dequant_elem(type, row + (c / block_elems) * block_bytes, (int)(c % block_elems));
    x[i * n_embd + c] = mul_rn(v, scale);
}

__global__ void rope_kernel(float *v, int64_t n_tok, int64_t n_heads, int64_t half, const float *cos_,
                            const float *sin_) {
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_tok * n_heads * half) return;
    const int64_t j = idx % half, th = idx / half, i = th / n_heads;  // token i, head th % n_heads
    float *p = v + th * 2 * half;
    const float a = p[j], b = p[j + half], c = cos_[i * half + j], s = sin_[i * half + j];
    p[j] = sub_rn(mul_rn(a, c), mul_rn(b, s));
    p[j + half] = add_rn(mul_rn(b, c), mul_rn(a, s));
}

edge_status norm_checks(const char *op, const float *x, const float *scale, int64_t n_rows, int64_t n, double eps) {
    if (!x || !scale) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: x and scale must not be NULL", op);
    if (n_rows < 0 || n <= 0 || n_rows > 0x7fffffff)
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: %lld rows of %lld floats", op, (long long)n_rows, (long long)n);
    if (!(eps >= 0.0)) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: eps must be >= 0", op);
    return EDGE_OK;
}

}  // namespace

extern "C" edge_status edge_cu_rmsnorm(void *stream, float *out, float *x, const float *scale, int64_t n_rows,
                                       int64_t n, double eps, int add) {
    static const char *op = "edge_cu_rmsnorm";
    edge_status st = norm_checks(op, x, scale, n_rows, n, eps);
    if (st != EDGE_OK) return st;
    if (!add && !out) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: out must not be NULL", op);
    if (n_rows == 0) return EDGE_OK;
    rmsnorm_kernel<<<(unsigned)n_rows, kNormThreads, 0, (cudaStream_t)stream>>>(add ? nullptr : out, x, scale, n, eps,
                                                                                add ? 1 : 0);
    return launched(op);
}

extern "C" edge_status edge_cu_rmsnorm_add(void *stream, float *x, const float *src, const float *scale,
                                           int64_t n_rows, int64_t n, double eps) {
    static const char *op = "edge_cu_rmsnorm_add";
    edge_status st = norm_checks(op, x, scale, n_rows, n, eps);
    if (st != EDGE_OK) return st;
    if (!src || src == x) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: src must be another array than x", op);
    if (n_rows == 0) return EDGE_OK;
    rmsnorm_kernel<<<(unsigned)n_rows, kNormThreads, 0, (cudaStream_t)stream>>>((float *)src, x, scale, n, eps, 2);
    return launched(op);
}

extern "C" edge_status edge_cu_embed(void *stream, int type, const void *table, size_t row_stride,
                                     const int32_t *tokens, int64_t n, int64_t n_embd, float scale, float *x) {
    static const char *op = "edge_cu_embed";
    int64_t block_elems = 0, block_bytes = 0;
    const char *name = "";
    if (edge_type_info(type, &block_elems, &block_bytes, &name) != EDGE_OK || !weight_type_ok(type))
        return edge_fail(EDGE_ERR_UNSUPPORTED, "%s: embedding type %d (%s) has no CUDA kernel", op, type,
                         name ? name : "?");
    if (!table || !tokens || !x) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: table, tokens and x must not be NULL", op);
    if (n < 0 || n > 65535 || n_embd <= 0 || n_embd % block_elems != 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: %lld tokens of %lld (a multiple of %s's block of %lld, at most "
                         "65535 tokens a call)", op, (long long)n, (long long)n_embd, name, (long long)block_elems);
    if (row_stride < (size_t)(n_embd / block_elems * block_bytes))
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: row_stride %zu is less than a row's bytes", op, row_stride);
    if (n == 0) return EDGE_OK;
    embed_kernel<<<dim3(grid_for(n_embd, 256), (unsigned)n), 256, 0, (cudaStream_t)stream>>>(
        type, (const uint8_t *)table, row_stride, tokens, n_embd, (int)block_elems, (int)block_bytes, scale, x);
    return launched(op);
}

extern "C" edge_status edge_cu_rope(void *stream, float *v, int64_t n_tok, int64_t n_heads, int64_t head_dim,
                                    const float *cos_, const float *sin_) {
    static const char *op = "edge_cu_rope";
    if (!v || !cos_ || !sin_) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: v, cos and sin must not be NULL", op);
    if (n_tok < 0 || n_heads <= 0 || head_dim <= 0 || head_dim % 2 != 0 || n_tok * n_heads * head_dim > ((int64_t)1 << 40))
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: %lld tokens of %lld heads of %lld (even) floats", op,
                         (long long)n_tok, (long long)n_heads, (long long)head_dim);
    const int64_t total = n_tok * n_heads * (head_dim / 2);
    if (total == 0) return EDGE_OK;
    rope_kernel<<<grid_for(total, 256), 256, 0, (cudaStream_t)stream>>>(v, n_tok, n_heads, head_dim / 2, cos_, sin_);
    return launched(op);
}
