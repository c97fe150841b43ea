// ops_moe.cu — the MoE layer's device operations: the router's softmax and top-k, GELU-tanh ⊙ u, and the
// gather / gated scatter-add of the tokens' rows. grok.c's numerics: the router's softmax in its order
// (a thread per token: max, exp and sum in expert order, p / sum), ties to the lower index, the gates the
// probabilities themselves (not renormalized); the products unfused in grok.c's order.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_ops.h"

using namespace edge_cu;

namespace {

__global__ void router_kernel(float *logits, int64_t n, int64_t n_expert, int64_t k, int32_t *sel, float *gate) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float *p = logits + i * n_expert;
    float max = -INFINITY;
    for (int64_t e = 0; e < n_expert; e++) max = p[e] > max ? p[e] : max;
    float sum = 0.0f;
    for (int64_t e = 0; e < n_expert; e++) sum += (p[e] = expf(p[e] - max));
    for (int64_t e = 0; e < n_expert; e++) p[e] = __fdiv_rn(p[e], sum);
    int32_t *si = sel + i * k;
    for (int64_t j = 0; j < k; j++) {
        int64_t best = -1;
        for (int64_t e = 0; e < n_expert; e++) {
            bool taken = false;
            for (int64_t jj = 0; jj < j; jj++) taken |= si[jj] == e;
            if (!taken && (best < 0 || p[e] > p[best])) best = e;
        }
        si[j] = (int32_t)best;
        gate[i * k + j] = p[best];
    }
}

// jax.nn.gelu (approximate=True) as grok.c's gelu_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))), then ⊙ u.
__global__ void gelu_mul_kernel(float *h, const float *u, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = h[i];
    const float c = mul_rn(mul_rn(mul_rn(0.044715f, x), x), x);
    const float t = tanhf(mul_rn(0.7978845608028654f, add_rn(x, c)));
    h[i] = mul_rn(mul_rn(mul_rn(0.5f, x), add_rn(1.0f, t)), u[i]);
}

__global__ void gather_kernel(float *dst, const float *src, const int32_t *rows, int64_t m, int64_t d) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y;
    if (c >= d) return;
    dst[r * d + c] = src[(int64_t)rows[r] * d + c];
}

__global__ void scatter_kernel(float *dst, const float *src, const int32_t *rows, const float *gate, int64_t m,
                               int64_t d) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y;
    if (c >= d) return;
    float *p = dst + (int64_t)rows[r] * d + c;
    *p = add_rn(*p, mul_rn(gate[r], src[r * d + c]));
}

edge_status rows_checks(const char *op, const void *dst, const void *src, const int32_t *rows, int64_t m, int64_t d) {
    if (!dst || !src || !rows) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: dst, src and rows must not be NULL", op);
    if (m < 0 || m > 65535 || d <= 0 || d > ((int64_t)1 << 30))
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: %lld rows (at most 65535) of %lld floats", op, (long long)m,
                         (long long)d);
    return EDGE_OK;
}

}  // namespace

extern "C" edge_status edge_cu_router_topk(void *stream, float *logits, int64_t n, int64_t n_expert, int64_t k,
                                           int32_t *sel, float *gate) {
    static const char *op = "edge_cu_router_topk";
    if (!logits || !sel || !gate) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: logits, sel and gate must not be NULL", op);
    if (n < 0 || n > ((int64_t)1 << 30) || n_expert <= 0 || n_expert > 65536 || k <= 0 || k > n_expert)
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: n %lld, n_expert %lld, k %lld (1 <= k <= n_expert)", op,
                         (long long)n, (long long)n_expert, (long long)k);
    if (n == 0) return EDGE_OK;
    router_kernel<<<grid_for(n, 64), 64, 0, (cudaStream_t)stream>>>(logits, n, n_expert, k, sel, gate);
    return launched(op);
}

extern "C" edge_status edge_cu_gelu_mul(void *stream, float *h, const float *u, int64_t n) {
    static const char *op = "edge_cu_gelu_mul";
    if (!h || !u) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: h and u must not be NULL", op);
    if (n < 0 || n > ((int64_t)1 << 40)) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: n %lld", op, (long long)n);
    if (n == 0) return EDGE_OK;
    gelu_mul_kernel<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(h, u, n);
    return launched(op);
}

extern "C" edge_status edge_cu_gather_rows(void *stream, float *dst, const float *src, const int32_t *rows, int64_t m,
                                           int64_t d) {
    static const char *op = "edge_cu_gather_rows";
    edge_status st = rows_checks(op, dst, src, rows, m, d);
    if (st != EDGE_OK || m == 0) return st;
    gather_kernel<<<dim3(grid_for(d, 256), (unsigned)m), 256, 0, (cudaStream_t)stream>>>(dst, src, rows, m, d);
    return launched(op);
}

extern "C" edge_status edge_cu_scatter_add_gated(void *stream, float *dst, const float *src, const int32_t *rows,
                                                 const float *gate, int64_t m, int64_t d) {
    static const char *op = "edge_cu_scatter_add_gated";
    edge_status st = rows_checks(op, dst, src, rows, m, d);
    if (st != EDGE_OK) return st;
    if (!gate) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: gate must not be NULL", op);
    if (m == 0) return EDGE_OK;
    scatter_kernel<<<dim3(grid_for(d, 256), (unsigned)m), 256, 0, (cudaStream_t)stream>>>(dst, src, rows, gate, m, d);
    return launched(op);
}
