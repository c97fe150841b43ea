// matvec.cu — the CUDA matrix products (edge_cu_matmul, and edge_cuda_matvec over host arrays): decode
// (one weight matrix × one activation vector) and prompt (× n_tok vectors) kernels for the weight types
// the presets use (F32, F16, BF16, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS).
//
// Same numerics as the CPU engine (native/src/kernels): the activations are quantized on the device the
// way quantize_act.c does it (Q8_0 as int8 + f32 scales for Q8_0 weights, block_q8_K for the K-quants and
// IQ4_XS; same rounding, no contracted multiply-add), and each block's integer sum is the one
// dot_scalar.c computes, so only the float summation order across blocks differs from the CPU.
//
// Layout: one warp per weight row, its lanes over the row's blocks, a shuffle sum at the end. The prompt
// kernels give a warp a row and up to 8 tokens: each weight block is read from memory once for them all,
// and each token's sum is formed in the decode kernel's order (same bits as n_tok = 1).
// Valid for nvcc and clang alike (chipStar compiles this file to SPIR-V for the CPU tests): chipStar
// has no __dp4a, so dot4() is a portable twin there (and under EDGE_CUDA_PORTABLE, for a real-GPU
// comparison of the two).
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_ops.h"

using namespace edge_cu;

namespace {

constexpr int kWarpsPerBlock = 4;  // rows per thread block
constexpr int kThreads = 32 * kWarpsPerBlock;
constexpr int kTokTile = 8;  // tokens per warp in the prompt kernels

// ggml's block_q8_K (292 bytes): the K-quants' activations.
struct q8k_block {
    float d;
    int8_t qs[kQKK];
    int16_t bsums[kQKK / 16];
};
static_assert(sizeof(q8k_block) == 292, "block_q8_K is 292 bytes");

// Sum of four int8 products added to c: __dp4a on a GPU that has it (sm_61+). chipStar's cucc defines
// __NVCC__ and __CUDA_ARCH__ 200 but has no __dp4a: it, and builds with EDGE_CUDA_PORTABLE (for a real-GPU
// comparison of the two), take the twin.
__device__ __forceinline__ int dot4(int a, int b, int c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 610 && !defined(__HIP_PLATFORM_SPIRV__) && !defined(EDGE_CUDA_PORTABLE)
    return __dp4a(a, b, c);
#else
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
#endif
}

// quantize_act.c's nearest_int: round to nearest even through the 1.5 * 2^23 trick (|v| < 2^22).
__device__ __forceinline__ int nearest_int(float v) {
    const int i = __float_as_int(add_rn(v, 12582912.0f));
    return (i & 0x007fffff) - 0x00400000;
}

// ---- activations, one thread per block (as quantize_act.c; products unfused: mul_rn)

// Q8_0 as the CPU's q8s row: n int8, then n/32 f32 scales.
__global__ void quant_q8_0(const float *x, int8_t *qs, float *ds, int64_t nb) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nb) return;
    const float *xb = x + i * kQK8;
    float amax = 0.0f;
    for (int j = 0; j < kQK8; j++) amax = fmaxf(amax, fabsf(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    ds[i] = d;
    for (int j = 0; j < kQK8; j++) qs[i * kQK8 + j] = (int8_t)nearest_int(mul_rn(xb[j], id));
}

__global__ void quant_q8_k(const float *x, q8k_block *y, int64_t nb) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nb) return;
    const float *xb = x + i * kQKK;
    q8k_block *b = y + i;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQKK; j++) {
        const float ax = fabsf(xb[j]);
        if (ax > amax) {
            amax = ax;
            max = xb[j];
        }
    }
    if (amax == 0.0f) {
        b->d = 0.0f;
        for (int j = 0; j < kQKK; j++) b->qs[j] = 0;
        for (int j = 0; j < kQKK / 16; j++) b->bsums[j] = 0;
        return;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQKK; j++) {
        const int v = nearest_int(mul_rn(iscale, xb[j]));
        b->qs[j] = (int8_t)(v > 127 ? 127 : (v < -127 ? -127 : v));
    }
    for (int j = 0; j < kQKK / 16; j++) {
        int sum = 0;
        for (int l = 0; l < 16; l++) sum += b->qs[j * 16 + l];
        b->bsums[j] = (int16_t)sum;
    }
    b->d = 1.0f / iscale;
}

// ---- one weight block · its activations (the integer sums of dot_scalar.c)

// sum over e in [e0, e0 + len) of val(e) * xq[e], four products at a time (len a multiple of 4).
template <class F>
__device__ __forceinline__ int sub_dot(F val, int e0, int len, const int8_t *xq) {
    int s = 0;
    for (int e = e0; e < e0 + len; e += 4) {
        const int packed = (val(e) & 0xff) | ((val(e + 1) & 0xff) << 8) | ((val(e + 2) & 0xff) << 16) |
                           ((val(e + 3) & 0xff) << 24);
        s = dot4(packed, ld32((const uint8_t *)xq + e), s);
    }
    return s;
}

// Q8_0 (34 B: d, qs[32]) with the q8s activations of its block.
__device__ __forceinline__ float block_q8_0(const uint8_t *blk, const int8_t *xq, float xd) {
    int s = 0;
    for (int j = 0; j < kQK8; j += 4) s = dot4(ld32(blk + 2 + j), ld32((const uint8_t *)xq + j), s);
    return (float)s * h2f(ld16(blk)) * xd;
}

// Q4_K (144 B: d, dmin, scales[12], qs[128]) and Q5_K (176 B: ..., qh[32] at 16, qs[128] at 48).
template <bool kQ5>
__device__ __forceinline__ float block_k4(const uint8_t *blk, const q8k_block *b) {
    const uint8_t *qh = blk + 16;
    const uint8_t *qs = blk + (kQ5 ? 48 : 16);
    int sum_q = 0, sum_m = 0;
    for (int k = 0; k < kQKK / 32; k++) {
        int sc, m;
        k4_scale_min(k, blk + 4, sc, m);
        const uint8_t *q = qs + (k / 2) * 32;
        auto val = [&](int e) {
            const int l = e - k * 32;
            int v = (k & 1) ? (q[l] >> 4) : (q[l] & 0xF);
            if (kQ5) v |= ((qh[l] >> k) & 1) << 4;
            return v;
        };
        sum_q += sc * sub_dot(val, k * 32, 32, b->qs);
        sum_m += m * (b->bsums[2 * k] + b->bsums[2 * k + 1]);
    }
    return b->d * (h2f(ld16(blk)) * (float)sum_q - h2f(ld16(blk + 2)) * (float)sum_m);
}

// Q6_K (210 B: ql[128], qh[64], scales[16] int8, d).
__device__ __forceinline__ float block_q6_k(const uint8_t *blk, const q8k_block *b) {
    const uint8_t *ql = blk, *qh = blk + 128;
    const int8_t *scales = (const int8_t *)(blk + 192);
    auto val = [&](int e) {
        const int half = e / 128, g = (e % 128) / 32, ll = e % 32;
        const int lo = ql[half * 64 + (g & 1) * 32 + ll];
        const int q = ((g < 2) ? (lo & 0xF) : (lo >> 4)) | (((qh[half * 32 + ll] >> (2 * g)) & 3) << 4);
        return q - 32;
    };
    int sum = 0;
    for (int k = 0; k < kQKK / 16; k++) sum += scales[k] * sub_dot(val, k * 16, 16, b->qs);
    return b->d * h2f(ld16(blk + 208)) * (float)sum;
}

// Q3_K (110 B: hmask[32], qs[64], scales[12], d).
__device__ __forceinline__ float block_q3_k(const uint8_t *blk, const q8k_block *b) {
    const uint8_t *hmask = blk, *qs = blk + 32, *scales = blk + 96;
    auto val = [&](int e) {
        const int j = (e % 128) / 32, half = e / 128, ll = e % 32;
        const int q = (qs[half * 32 + ll] >> (2 * j)) & 3;
        const int hbit = (hmask[ll] >> (half * 4 + j)) & 1;
        return q - (hbit ? 0 : 4);
    };
    int sum = 0;
    for (int k = 0; k < kQKK / 16; k++) {
        const int lo = k < 8 ? (scales[k] & 0xF) : (scales[k - 8] >> 4);
        const int hi = (scales[8 + (k & 3)] >> (2 * (k >> 2))) & 3;
        sum += ((lo | (hi << 4)) - 32) * sub_dot(val, k * 16, 16, b->qs);
    }
    return b->d * h2f(ld16(blk + 108)) * (float)sum;
}

// Q2_K (84 B: scales[16], qs[64], d, dmin).
__device__ __forceinline__ float block_q2_k(const uint8_t *blk, const q8k_block *b) {
    const uint8_t *scales = blk, *qs = blk + 16;
    auto val = [&](int e) { return (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3; };
    int sum_q = 0, sum_m = 0;
    for (int k = 0; k < kQKK / 16; k++) {
        sum_q += (scales[k] & 0xF) * sub_dot(val, k * 16, 16, b->qs);
        sum_m += (scales[k] >> 4) * b->bsums[k];
    }
    return b->d * (h2f(ld16(blk + 80)) * (float)sum_q - h2f(ld16(blk + 82)) * (float)sum_m);
}

// IQ4_XS (136 B: d, scales_h, scales_l[4], qs[128]).
__device__ __forceinline__ float block_iq4_xs(const uint8_t *blk, const q8k_block *b) {
    const uint32_t scales_h = ld16(blk + 2);
    int sum = 0;
    for (int k = 0; k < kQKK / 32; k++) {
        const int ls = ((blk[4 + k / 2] >> (4 * (k % 2))) & 0xF) | (((scales_h >> (2 * k)) & 3) << 4);
        const uint8_t *qs = blk + 8 + k * 16;
        auto val = [&](int e) {
            const int j = e - k * 32;
            return j < 16 ? iq4nl(qs[j] & 0xF) : iq4nl(qs[j - 16] >> 4);
        };
        sum += (ls - 32) * sub_dot(val, k * 32, 32, b->qs);
    }
    return b->d * h2f(ld16(blk)) * (float)sum;
}

// ---- the matvec kernels: one warp per row (a warp's lanes leave together, so the shuffle sees all 32)

// Float weights (F32 = 0, F16 = 1, BF16 = 30), x used as is.
template <int kType>
__device__ __forceinline__ float float_weight(const uint8_t *wr, int64_t j) {
    if (kType == EDGE_TYPE_F32) return ((const float *)wr)[j];
    const uint16_t h = ((const uint16_t *)wr)[j];
    return kType == EDGE_TYPE_F16 ? h2f(h) : bf2f(h);
}

template <int kType>
__global__ void __launch_bounds__(kThreads) matvec_float(const uint8_t *w, size_t stride, int64_t n_rows, int64_t n,
                                                         const float *x, float *y, float y_scale) {
    const int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n_rows) return;
    const uint8_t *wr = w + row * stride;
    float s = 0.0f;
    for (int64_t j = lane; j < n; j += 32) s += float_weight<kType>(wr, j) * x[j];
    s = warp_sum(s);
    if (lane == 0) y[row] = s * y_scale;
}

__global__ void __launch_bounds__(kThreads) matvec_q8_0(const uint8_t *w, size_t stride, int64_t n_rows, int64_t nb,
                                                        const int8_t *xq, const float *xd, float *y, float y_scale) {
    const int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n_rows) return;
    const uint8_t *wr = w + row * stride;
    float s = 0.0f;
    for (int64_t i = lane; i < nb; i += 32) s += block_q8_0(wr + i * 34, xq + i * kQK8, xd[i]);
    s = warp_sum(s);
    if (lane == 0) y[row] = s * y_scale;
}

template <int kType>
__device__ __forceinline__ float block_k(const uint8_t *blk, const q8k_block *b) {
    switch (kType) {
    case EDGE_TYPE_Q2_K: return block_q2_k(blk, b);
    case EDGE_TYPE_Q3_K: return block_q3_k(blk, b);
    case EDGE_TYPE_Q4_K: return block_k4<false>(blk, b);
    case EDGE_TYPE_Q5_K: return block_k4<true>(blk, b);
    case EDGE_TYPE_Q6_K: return block_q6_k(blk, b);
    default: return block_iq4_xs(blk, b);
    }
}

template <int kType, int kBlockBytes>
__global__ void __launch_bounds__(kThreads) matvec_k(const uint8_t *w, size_t stride, int64_t n_rows, int64_t nb,
                                                     const q8k_block *xq, float *y, float y_scale) {
    const int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n_rows) return;
    const uint8_t *wr = w + row * stride;
    float s = 0.0f;
    for (int64_t i = lane; i < nb; i += 32) s += block_k<kType>(wr + i * kBlockBytes, xq + i);
    s = warp_sum(s);
    if (lane == 0) y[row] = s * y_scale;
}

// ---- the prompt kernels: one warp per row and per tile of up to kTokTile tokens (grid.y). Each lane sums
// the same blocks in the same order as in the decode kernels, for every token of the tile at once, so each
// token's result is the decode kernel's, bit for bit: the weights are read from global memory once per tile.

template <int kType>
__global__ void __launch_bounds__(kThreads) matmul_float(const uint8_t *w, size_t stride, int64_t n_rows, int64_t n,
                                                         const float *x, int64_t n_tok, float *y, float y_scale) {
    const int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int64_t t0 = (int64_t)blockIdx.y * kTokTile;
    if (row >= n_rows) return;
    const int nt = (int)(n_tok - t0 < kTokTile ? n_tok - t0 : kTokTile);
    const uint8_t *wr = w + row * stride;
    const float *xt = x + t0 * n;
    float s[kTokTile];
#pragma unroll
    for (int t = 0; t < kTokTile; t++) s[t] = 0.0f;
    for (int64_t j = lane; j < n; j += 32) {
        const float wj = float_weight<kType>(wr, j);
#pragma unroll
        for (int t = 0; t < kTokTile; t++)
            if (t < nt) s[t] += wj * xt[t * n + j];
    }
#pragma unroll
    for (int t = 0; t < kTokTile; t++) {
        const float v = warp_sum(s[t]);
        if (lane == 0 && t < nt) y[(t0 + t) * n_rows + row] = v * y_scale;
    }
}

// Quantized weights: per round the warp copies 32 consecutive blocks of its row into shared memory
// (coalesced), then lane l multiplies block l of the round with every token's activations. The tokens'
// running sums live in shared memory (lane l's own column), so the token loop is not unrolled: one copy of
// the block code per kernel, which keeps chipStar's compile of this module short.
template <int kType, int kBlockBytes>
__global__ void __launch_bounds__(kThreads) matmul_quant(const uint8_t *w, size_t stride, int64_t n_rows, int64_t nb,
                                                         const void *xq, const float *xd, int64_t n_tok, float *y,
                                                         float y_scale) {
    __shared__ uint8_t stage[kWarpsPerBlock][32 * kBlockBytes];
    __shared__ float acc[kWarpsPerBlock][kTokTile][32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + warp;
    const int64_t t0 = (int64_t)blockIdx.y * kTokTile;
    if (row >= n_rows) return;  // the whole warp
    const int nt = (int)(n_tok - t0 < kTokTile ? n_tok - t0 : kTokTile);
    const uint8_t *wr = w + row * stride;
    uint8_t *sh = stage[warp];
    float(*s)[32] = acc[warp];
    for (int t = 0; t < kTokTile; t++) s[t][lane] = 0.0f;
    for (int64_t base = 0; base < nb; base += 32) {
        const int nblk = (int)(nb - base < 32 ? nb - base : 32);
        const uint8_t *src = wr + base * kBlockBytes;
        for (int b = lane; b < nblk * kBlockBytes; b += 32) sh[b] = src[b];
        __syncwarp();
        if (lane < nblk) {
            const int64_t i = base + lane;
            const uint8_t *blk = sh + lane * kBlockBytes;
#pragma unroll 1
            for (int t = 0; t < nt; t++) {
                if (kType == EDGE_TYPE_Q8_0) {
                    const int64_t tb = (t0 + t) * nb + i;  // the token's block i in the q8s rows
                    s[t][lane] += block_q8_0(blk, (const int8_t *)xq + tb * kQK8, xd[tb]);
                } else {
                    s[t][lane] += block_k<kType>(blk, (const q8k_block *)xq + (t0 + t) * nb + i);
                }
            }
        }
        __syncwarp();
    }
    for (int t = 0; t < nt; t++) {
        const float v = warp_sum(s[t][lane]);
        if (lane == 0) y[(t0 + t) * n_rows + row] = v * y_scale;
    }
}

// ---- host side

// Device buffers of one call, freed together.
struct buffers {
    void *p[4] = {nullptr, nullptr, nullptr, nullptr};
    ~buffers() {
        for (void *q : p)
            if (q) cudaFree(q);
    }
};

edge_status cuda_fail(const char *what, cudaError_t err) {
    (void)cudaGetLastError();
    return edge_fail(EDGE_ERR_INTERNAL, "edge_cuda_matvec: %s failed: %s", what, cudaGetErrorString(err));
}

// Bytes of the quantized activations of n_tok rows of n_cols (0 for float weights).
size_t act_bytes(int type, int64_t n_cols, int64_t n_tok) {
    if (type == EDGE_TYPE_Q8_0) return (size_t)n_tok * ((size_t)n_cols + (size_t)(n_cols / kQK8) * sizeof(float));
    if (weight_type_ok(type) && type != EDGE_TYPE_F32 && type != EDGE_TYPE_F16 && type != EDGE_TYPE_BF16)
        return (size_t)n_tok * (size_t)(n_cols / kQKK) * sizeof(q8k_block);
    return 0;
}

template <int kType, int kBlockBytes>
void launch_k(cudaStream_t st, const uint8_t *w, size_t stride, int64_t n_rows, int64_t nb, const q8k_block *xq,
              int64_t n_tok, float *y, float y_scale) {
    const unsigned grid = grid_for(n_rows, kWarpsPerBlock);
    if (n_tok == 1)
        matvec_k<kType, kBlockBytes><<<grid, kThreads, 0, st>>>(w, stride, n_rows, nb, xq, y, y_scale);
    else
        matmul_quant<kType, kBlockBytes><<<dim3(grid, grid_for(n_tok, kTokTile)), kThreads, 0, st>>>(
            w, stride, n_rows, nb, xq, nullptr, n_tok, y, y_scale);
}

template <int kType>
void launch_float(cudaStream_t st, const uint8_t *w, size_t stride, int64_t n_rows, int64_t n, const float *x,
                  int64_t n_tok, float *y, float y_scale) {
    const unsigned grid = grid_for(n_rows, kWarpsPerBlock);
    if (n_tok == 1)
        matvec_float<kType><<<grid, kThreads, 0, st>>>(w, stride, n_rows, n, x, y, y_scale);
    else
        matmul_float<kType><<<dim3(grid, grid_for(n_tok, kTokTile)), kThreads, 0, st>>>(w, stride, n_rows, n, x,
                                                                                         n_tok, y, y_scale);
}

// Quantizes x (if the type needs it) and runs the decode or prompt kernels of `type`, all on stream st.
void enqueue_matmul(cudaStream_t st, int type, const uint8_t *w, size_t stride, int64_t n_rows, int64_t n_cols,
                    const float *x, int64_t n_tok, float *y, float y_scale, void *act) {
    const int64_t nb = n_cols / (type == EDGE_TYPE_Q8_0 ? kQK8 : kQKK);
    switch (type) {
    case EDGE_TYPE_F32: launch_float<EDGE_TYPE_F32>(st, w, stride, n_rows, n_cols, x, n_tok, y, y_scale); return;
    case EDGE_TYPE_F16: launch_float<EDGE_TYPE_F16>(st, w, stride, n_rows, n_cols, x, n_tok, y, y_scale); return;
    case EDGE_TYPE_BF16: launch_float<EDGE_TYPE_BF16>(st, w, stride, n_rows, n_cols, x, n_tok, y, y_scale); return;
    case EDGE_TYPE_Q8_0: {
        // q8s rows: the n_tok * n_cols int8 of every token, then the n_tok * nb f32 scales
        int8_t *xq = (int8_t *)act;
        float *xd = (float *)(xq + n_tok * n_cols);
        quant_q8_0<<<grid_for(n_tok * nb, 128), 128, 0, st>>>(x, xq, xd, n_tok * nb);
        const unsigned grid = grid_for(n_rows, kWarpsPerBlock);
        if (n_tok == 1)
            matvec_q8_0<<<grid, kThreads, 0, st>>>(w, stride, n_rows, nb, xq, xd, y, y_scale);
        else
            matmul_quant<EDGE_TYPE_Q8_0, 34><<<dim3(grid, grid_for(n_tok, kTokTile)), kThreads, 0, st>>>(
                w, stride, n_rows, nb, xq, xd, n_tok, y, y_scale);
        return;
    }
    default: break;
    }
    q8k_block *xq = (q8k_block *)act;
    quant_q8_k<<<grid_for(n_tok * nb, 128), 128, 0, st>>>(x, xq, n_tok * nb);
    switch (type) {
    case EDGE_TYPE_Q2_K: launch_k<EDGE_TYPE_Q2_K, 84>(st, w, stride, n_rows, nb, xq, n_tok, y, y_scale); break;
    case EDGE_TYPE_Q3_K: launch_k<EDGE_TYPE_Q3_K, 110>(st, w, stride, n_rows, nb, xq, n_tok, y, y_scale); break;
    case EDGE_TYPE_Q4_K: launch_k<EDGE_TYPE_Q4_K, 144>(st, w, stride, n_rows, nb, xq, n_tok, y, y_scale); break;
    case EDGE_TYPE_Q5_K: launch_k<EDGE_TYPE_Q5_K, 176>(st, w, stride, n_rows, nb, xq, n_tok, y, y_scale); break;
    case EDGE_TYPE_Q6_K: launch_k<EDGE_TYPE_Q6_K, 210>(st, w, stride, n_rows, nb, xq, n_tok, y, y_scale); break;
    default: launch_k<EDGE_TYPE_IQ4_XS, 136>(st, w, stride, n_rows, nb, xq, n_tok, y, y_scale); break;
    }
}

// The checks edge_cu_matmul and edge_cuda_matvec share: a supported type, n_cols a whole number of blocks.
edge_status check_matrix(const char *op, int type, int64_t n_rows, int64_t n_cols, int64_t *row_bytes) {
    int64_t block_elems = 0, block_bytes = 0;
    const char *name = "";
    if (edge_type_info(type, &block_elems, &block_bytes, &name) != EDGE_OK || !weight_type_ok(type))
        return edge_fail(EDGE_ERR_UNSUPPORTED, "%s: weight type %d (%s) has no CUDA kernel", op, type,
                         name ? name : "?");
    if (n_rows <= 0 || n_cols <= 0) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: n_rows and n_cols must be positive", op);
    if (n_cols % block_elems != 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: n_cols %lld is not a multiple of %s's block of %lld", op,
                         (long long)n_cols, name, (long long)block_elems);
    if ((uint64_t)n_rows / kWarpsPerBlock >= 0x7fffffffu || n_cols > ((int64_t)1 << 40))
        return edge_fail(EDGE_ERR_RANGE, "%s: a %lld x %lld matrix is too large", op, (long long)n_rows,
                         (long long)n_cols);
    *row_bytes = n_cols / block_elems * block_bytes;
    return EDGE_OK;
}

}  // namespace

extern "C" size_t edge_cu_matmul_scratch_bytes(int type, int64_t n_cols, int64_t n_tok) {
    if (n_cols <= 0 || n_tok <= 0) return 0;
    return act_bytes(type, n_cols, n_tok);
}

extern "C" int edge_cu_matmul_supports(int type) { return weight_type_ok(type) ? 1 : 0; }

extern "C" edge_status edge_cu_matmul(void *stream, int type, const void *w, size_t row_stride, int64_t n_rows,
                                      int64_t n_cols, const float *x, int64_t n_tok, float *y, float y_scale,
                                      void *scratch, size_t scratch_bytes) {
    static const char *op = "edge_cu_matmul";
    int64_t row_bytes = 0;
    edge_status st = check_matrix(op, type, n_rows, n_cols, &row_bytes);
    if (st != EDGE_OK) return st;
    if (!w || !x || !y) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: w, x and y must not be NULL", op);
    if (n_tok <= 0 || (uint64_t)n_tok / kTokTile >= 65535u)
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: n_tok %lld is outside 1 .. %d", op, (long long)n_tok,
                         65535 * kTokTile);
    if (row_stride < (size_t)row_bytes)
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: row_stride %zu is less than a row's %lld bytes", op, row_stride,
                         (long long)row_bytes);
    const size_t need = act_bytes(type, n_cols, n_tok);
    if (need && (!scratch || scratch_bytes < need))
        return edge_fail(EDGE_ERR_INVALID_ARG, "%s: scratch of %zu bytes, %zu needed (edge_cu_matmul_scratch_bytes)",
                         op, scratch ? scratch_bytes : (size_t)0, need);
    enqueue_matmul((cudaStream_t)stream, type, (const uint8_t *)w, row_stride, n_rows, n_cols, x, n_tok, y, y_scale,
                   scratch);
    return launched(op);
}

extern "C" EDGE_API edge_status edge_cuda_matvec(int type, const void *w, int64_t n_rows, int64_t n_cols,
                                                 const float *x, float *y) {
    if (!w || !x || !y) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_cuda_matvec: w, x and y must not be NULL");
    int64_t row_bytes = 0;
    edge_status st = check_matrix("edge_cuda_matvec", type, n_rows, n_cols, &row_bytes);
    if (st != EDGE_OK) return st;
    uint64_t w_bytes = 0;
    if (!edge_mul_u64((uint64_t)row_bytes, (uint64_t)n_rows, &w_bytes))
        return edge_fail(EDGE_ERR_RANGE, "edge_cuda_matvec: a %lld x %lld matrix is too large", (long long)n_rows,
                         (long long)n_cols);

    int n_devices = 0;
    if (cudaGetDeviceCount(&n_devices) != cudaSuccess || n_devices == 0) {
        (void)cudaGetLastError();
        return edge_fail(EDGE_ERR_UNSUPPORTED, "edge_cuda_matvec: no CUDA device (none found by the driver)");
    }

    const size_t x_bytes = (size_t)n_cols * sizeof(float), xq_bytes = act_bytes(type, n_cols, 1);
    const size_t y_bytes = (size_t)n_rows * sizeof(float);
    buffers buf;
    cudaError_t err;
    if ((err = cudaMalloc(&buf.p[0], w_bytes)) != cudaSuccess) return cuda_fail("cudaMalloc (weights)", err);
    if ((err = cudaMalloc(&buf.p[1], x_bytes)) != cudaSuccess) return cuda_fail("cudaMalloc (x)", err);
    if ((err = cudaMalloc(&buf.p[2], y_bytes)) != cudaSuccess) return cuda_fail("cudaMalloc (y)", err);
    if (xq_bytes && (err = cudaMalloc(&buf.p[3], xq_bytes)) != cudaSuccess)
        return cuda_fail("cudaMalloc (activations)", err);
    if ((err = cudaMemcpy(buf.p[0], w, w_bytes, cudaMemcpyHostToDevice)) != cudaSuccess)
        return cuda_fail("cudaMemcpy (weights)", err);
    if ((err = cudaMemcpy(buf.p[1], x, x_bytes, cudaMemcpyHostToDevice)) != cudaSuccess)
        return cuda_fail("cudaMemcpy (x)", err);
    enqueue_matmul(0, type, (const uint8_t *)buf.p[0], (size_t)row_bytes, n_rows, n_cols, (const float *)buf.p[1], 1,
                   (float *)buf.p[2], 1.0f, buf.p[3]);
    if ((err = cudaGetLastError()) != cudaSuccess) return cuda_fail("kernel launch", err);
    if ((err = cudaMemcpy(y, buf.p[2], y_bytes, cudaMemcpyDeviceToHost)) != cudaSuccess)
        return cuda_fail("cudaMemcpy (y)", err);
    return EDGE_OK;
}
