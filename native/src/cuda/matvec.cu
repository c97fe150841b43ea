// matvec.cu — the CUDA decode kernels: one weight matrix × one activation vector, for the weight types
// the presets use (F32, F16, BF16, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS).
//
// Same numerics as the CPU engine (native/src/kernels): the activations are quantized on the device the
// way quantize_act.c does it (Q8_0 as int8 + f32 scales for Q8_0 weights, block_q8_K for the K-quants and
// IQ4_XS; same rounding, no contracted multiply-add), and each block's integer sum is the one
// dot_scalar.c computes, so only the float summation order across blocks differs from the CPU.
//
// Layout: one warp per weight row, its lanes over the row's blocks, a shuffle sum at the end.
// Valid for nvcc and clang alike (chipStar compiles this file to SPIR-V for the CPU tests): chipStar
// has no __dp4a, so dot4() is a portable twin there (and under EDGE_CUDA_PORTABLE, for a real-GPU
// comparison of the two).
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "common.h"
}

namespace {

constexpr int kQK8 = 32;           // elements per Q8_0 block
constexpr int kQKK = 256;          // elements per K-quant super-block
constexpr int kWarpsPerBlock = 4;  // rows per thread block
constexpr int kThreads = 32 * kWarpsPerBlock;

// ggml's block_q8_K (292 bytes): the K-quants' activations.
struct q8k_block {
    float d;
    int8_t qs[kQKK];
    int16_t bsums[kQKK / 16];
};
static_assert(sizeof(q8k_block) == 292, "block_q8_K is 292 bytes");

__constant__ int8_t kIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

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

// Little-endian loads from byte addresses (block fields are not always 4-aligned: Q8_0 blocks are 34 bytes).
__device__ __forceinline__ uint32_t ld16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
__device__ __forceinline__ int ld32(const uint8_t *p) {
    return (int)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
}

// IEEE binary16 -> f32, exact (subnormals as m * 2^-24, which is exact in f32).
__device__ __forceinline__ float h2f(uint32_t h) {
    const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        const float f = (float)m * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    const uint32_t bits = e == 31 ? (sign | 0x7f800000u | (m << 13)) : (sign | ((e + 112u) << 23) | (m << 13));
    return __int_as_float((int)bits);
}
__device__ __forceinline__ float bf2f(uint32_t b) { return __int_as_float((int)(b << 16)); }

// quantize_act.c's nearest_int: round to nearest even through the 1.5 * 2^23 trick (|v| < 2^22).
__device__ __forceinline__ int nearest_int(float v) {
    const int i = __float_as_int(__fadd_rn(v, 12582912.0f));
    return (i & 0x007fffff) - 0x00400000;
}

// ---- activations, one thread per block (as quantize_act.c; multiplies unfused with __fmul_rn)

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
    for (int j = 0; j < kQK8; j++) qs[i * kQK8 + j] = (int8_t)nearest_int(__fmul_rn(xb[j], id));
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
        const int v = nearest_int(__fmul_rn(iscale, xb[j]));
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

__device__ __forceinline__ void k4_scale_min(int j, const uint8_t *q, int &sc, int &m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
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
            return (int)(j < 16 ? kIq4nl[qs[j] & 0xF] : kIq4nl[qs[j - 16] >> 4]);
        };
        sum += (ls - 32) * sub_dot(val, k * 32, 32, b->qs);
    }
    return b->d * h2f(ld16(blk)) * (float)sum;
}

__device__ __forceinline__ float warp_sum(float s) {
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}

// ---- the matvec kernels: one warp per row (a warp's lanes leave together, so the shuffle sees all 32)

// Float weights (F32 = 0, F16 = 1, BF16 = 30), x used as is.
template <int kType>
__global__ void __launch_bounds__(kThreads) matvec_float(const uint8_t *w, int64_t n_rows, int64_t n, const float *x,
                                                         float *y) {
    const int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n_rows) return;
    float s = 0.0f;
    if (kType == EDGE_TYPE_F32) {
        const float *wr = (const float *)w + row * n;
        for (int64_t j = lane; j < n; j += 32) s += wr[j] * x[j];
    } else {
        const uint16_t *wr = (const uint16_t *)w + row * n;
        for (int64_t j = lane; j < n; j += 32) s += (kType == EDGE_TYPE_F16 ? h2f(wr[j]) : bf2f(wr[j])) * x[j];
    }
    s = warp_sum(s);
    if (lane == 0) y[row] = s;
}

__global__ void __launch_bounds__(kThreads) matvec_q8_0(const uint8_t *w, int64_t n_rows, int64_t nb, const int8_t *xq,
                                                        const float *xd, float *y) {
    const int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n_rows) return;
    const uint8_t *wr = w + row * nb * 34;
    float s = 0.0f;
    for (int64_t i = lane; i < nb; i += 32) s += block_q8_0(wr + i * 34, xq + i * kQK8, xd[i]);
    s = warp_sum(s);
    if (lane == 0) y[row] = s;
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
__global__ void __launch_bounds__(kThreads) matvec_k(const uint8_t *w, int64_t n_rows, int64_t nb, const q8k_block *xq,
                                                     float *y) {
    const int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n_rows) return;
    const uint8_t *wr = w + row * nb * kBlockBytes;
    float s = 0.0f;
    for (int64_t i = lane; i < nb; i += 32) s += block_k<kType>(wr + i * kBlockBytes, xq + i);
    s = warp_sum(s);
    if (lane == 0) y[row] = s;
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

bool type_has_kernel(int type) {
    switch (type) {
    case EDGE_TYPE_F32:
    case EDGE_TYPE_F16:
    case EDGE_TYPE_BF16:
    case EDGE_TYPE_Q8_0:
    case EDGE_TYPE_Q2_K:
    case EDGE_TYPE_Q3_K:
    case EDGE_TYPE_Q4_K:
    case EDGE_TYPE_Q5_K:
    case EDGE_TYPE_Q6_K:
    case EDGE_TYPE_IQ4_XS: return true;
    default: return false;
    }
}

}  // namespace

extern "C" EDGE_API edge_status edge_cuda_matvec(int type, const void *w, int64_t n_rows, int64_t n_cols,
                                                 const float *x, float *y) {
    if (!w || !x || !y) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_cuda_matvec: w, x and y must not be NULL");
    if (n_rows <= 0 || n_cols <= 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "edge_cuda_matvec: n_rows and n_cols must be positive");
    int64_t block_elems = 0, block_bytes = 0;
    const char *name = "";
    if (edge_type_info(type, &block_elems, &block_bytes, &name) != EDGE_OK || !type_has_kernel(type))
        return edge_fail(EDGE_ERR_UNSUPPORTED, "edge_cuda_matvec: weight type %d (%s) has no CUDA kernel", type,
                         name ? name : "?");
    if (n_cols % block_elems != 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "edge_cuda_matvec: n_cols %lld is not a multiple of %s's block of %lld",
                         (long long)n_cols, name, (long long)block_elems);
    const int64_t nb = n_cols / block_elems;
    uint64_t row_bytes = 0, w_bytes = 0;
    if (!edge_mul_u64((uint64_t)nb, (uint64_t)block_bytes, &row_bytes) ||
        !edge_mul_u64(row_bytes, (uint64_t)n_rows, &w_bytes) || (uint64_t)n_rows / kWarpsPerBlock >= 0x7fffffffu)
        return edge_fail(EDGE_ERR_RANGE, "edge_cuda_matvec: a %lld x %lld matrix is too large", (long long)n_rows,
                         (long long)n_cols);

    int n_devices = 0;
    if (cudaGetDeviceCount(&n_devices) != cudaSuccess || n_devices == 0) {
        (void)cudaGetLastError();
        return edge_fail(EDGE_ERR_UNSUPPORTED, "edge_cuda_matvec: no CUDA device (none found by the driver)");
    }

    // Activations: Q8_0 rows of n int8 + n/32 f32; Q8_K blocks of 292 bytes; float weights use x as is.
    const bool k_type = block_elems == kQKK;
    const size_t x_bytes = (size_t)n_cols * sizeof(float);
    const size_t xq_bytes = type == EDGE_TYPE_Q8_0 ? (size_t)n_cols + (size_t)nb * sizeof(float)
                            : k_type                ? (size_t)nb * sizeof(q8k_block)
                                                    : 0;
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

    const uint8_t *dw = (const uint8_t *)buf.p[0];
    const float *dx = (const float *)buf.p[1];
    float *dy = (float *)buf.p[2];
    const unsigned grid = (unsigned)((n_rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
    const unsigned qgrid = (unsigned)((nb + 127) / 128);
    int8_t *xq8 = (int8_t *)buf.p[3];
    q8k_block *xqk = (q8k_block *)buf.p[3];
    switch (type) {
    case EDGE_TYPE_F32: matvec_float<EDGE_TYPE_F32><<<grid, kThreads>>>(dw, n_rows, n_cols, dx, dy); break;
    case EDGE_TYPE_F16: matvec_float<EDGE_TYPE_F16><<<grid, kThreads>>>(dw, n_rows, n_cols, dx, dy); break;
    case EDGE_TYPE_BF16: matvec_float<EDGE_TYPE_BF16><<<grid, kThreads>>>(dw, n_rows, n_cols, dx, dy); break;
    case EDGE_TYPE_Q8_0:
        quant_q8_0<<<qgrid, 128>>>(dx, xq8, (float *)(xq8 + n_cols), nb);
        matvec_q8_0<<<grid, kThreads>>>(dw, n_rows, nb, xq8, (const float *)(xq8 + n_cols), dy);
        break;
    default:
        quant_q8_k<<<qgrid, 128>>>(dx, xqk, nb);
        switch (type) {
        case EDGE_TYPE_Q2_K: matvec_k<EDGE_TYPE_Q2_K, 84><<<grid, kThreads>>>(dw, n_rows, nb, xqk, dy); break;
        case EDGE_TYPE_Q3_K: matvec_k<EDGE_TYPE_Q3_K, 110><<<grid, kThreads>>>(dw, n_rows, nb, xqk, dy); break;
        case EDGE_TYPE_Q4_K: matvec_k<EDGE_TYPE_Q4_K, 144><<<grid, kThreads>>>(dw, n_rows, nb, xqk, dy); break;
        case EDGE_TYPE_Q5_K: matvec_k<EDGE_TYPE_Q5_K, 176><<<grid, kThreads>>>(dw, n_rows, nb, xqk, dy); break;
        case EDGE_TYPE_Q6_K: matvec_k<EDGE_TYPE_Q6_K, 210><<<grid, kThreads>>>(dw, n_rows, nb, xqk, dy); break;
        default: matvec_k<EDGE_TYPE_IQ4_XS, 136><<<grid, kThreads>>>(dw, n_rows, nb, xqk, dy); break;
        }
    }
    if ((err = cudaGetLastError()) != cudaSuccess) return cuda_fail("kernel launch", err);
    if ((err = cudaMemcpy(y, dy, y_bytes, cudaMemcpyDeviceToHost)) != cudaSuccess)
        return cuda_fail("cudaMemcpy (y)", err);
    return EDGE_OK;
}
