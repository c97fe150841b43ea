// cuda_common.cuh — device helpers shared by the CUDA kernels (matvec.cu, ops_*.cu): byte loads, the
// f16/bf16 conversions of common.h done the same way on the device, the weight types' block layouts
// (dequantization of one element, exactly as native/src/quant/dequantize.c computes it), warp sums, and
// the host-side error helpers. Valid for nvcc and chipStar's clang alike.
#ifndef EDGE_CUDA_COMMON_CUH
#define EDGE_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "common.h"
}

// grok.c's separately rounded products and sums: mul_rn / add_rn / sub_rn. nvcc never contracts its
// __fmul_rn / __fadd_rn / __fsub_rn into FMAs; chipStar's device library defines them as plain operators
// in its headers, which clang then fuses (CUDA's default -ffp-contract=fast, decided where those bodies
// are written). Under clang the helpers below are plain operators written with contraction off, which
// stays off when they are inlined. (nvcc may fuse the other products, which the tests' bounds allow.)
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace edge_cu {

constexpr int kQK8 = 32;   // elements per Q8_0 block
constexpr int kQKK = 256;  // elements per K-quant super-block

// IQ4_NL's 16 values {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}, packed
// eight int8 to a word: computed, not loaded (a __constant__ table in a header shared by several modules
// crashed chipStar's runtime).
__device__ __forceinline__ int iq4nl(int i) {
    const unsigned long long w = i < 8 ? 0xf6eaddcfbfad9881ull : 0x7159453526190d01ull;
    return (int)(int8_t)(uint8_t)(w >> (8 * (i & 7)));
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

// f32 -> binary16, round to nearest even: common.h's edge_f32_to_f16, bit for bit.
__device__ __forceinline__ uint32_t f2h(float f) {
    const uint32_t x = (uint32_t)__float_as_int(f);
    const uint32_t sign = (x >> 16) & 0x8000u, absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u);
    if (absx >= 0x477ff000u) return sign | 0x7c00u;
    if (absx < 0x38800000u) {
        if (absx < 0x33000000u) return sign;
        const uint32_t e = absx >> 23, m = (absx & 0x7fffffu) | 0x800000u, shift = 126 - e;
        uint32_t half_m = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half_m & 1u))) half_m++;
        return sign | half_m;
    }
    const uint32_t e = (absx >> 23) - 127 + 15, m = absx & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13);
    const uint32_t rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return sign | h;
}

#if defined(__clang__)
__device__ __forceinline__ float mul_rn(float a, float b) { return a * b; }
__device__ __forceinline__ float add_rn(float a, float b) { return a + b; }
__device__ __forceinline__ float sub_rn(float a, float b) { return a - b; }
#else
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
#endif

__device__ __forceinline__ float warp_sum(float s) {
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}
__device__ __forceinline__ float warp_max(float s) {
    for (int o = 16; o > 0; o >>= 1) s = fmaxf(s, __shfl_xor_sync(0xffffffffu, s, o));
    return s;
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

// Element e of a row of `type` whose block holding e starts at blk (e: the index inside that block), as
// dequantize.c computes it: the same products in the same order, unfused (mul_rn / sub_rn).
__device__ __forceinline__ float dequant_elem(int type, const uint8_t *blk, int e) {
    switch (type) {
    case EDGE_TYPE_F32: return __int_as_float(ld32(blk + 4 * e));
    case EDGE_TYPE_F16: return h2f(ld16(blk + 2 * e));
    case EDGE_TYPE_BF16: return bf2f(ld16(blk + 2 * e));
    case EDGE_TYPE_Q8_0: return mul_rn((float)(int8_t)blk[2 + e], h2f(ld16(blk)));
    case EDGE_TYPE_Q2_K: {  // scales[16], qs[64], d, dmin
        const int sc = blk[e / 16];
        const int q = (blk[16 + (e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        const float dl = mul_rn(h2f(ld16(blk + 80)), (float)(sc & 0xF));
        const float ml = mul_rn(h2f(ld16(blk + 82)), (float)(sc >> 4));
        return sub_rn(mul_rn(dl, (float)q), ml);
    }
    case EDGE_TYPE_Q3_K: {  // hmask[32], qs[64], scales[12], d
        const uint8_t *scales = blk + 96;
        const int sub = e / 16;
        int s = sub < 8 ? scales[sub] & 0xF : scales[sub - 8] >> 4;
        s = (s | (((scales[8 + sub % 4] >> (2 * (sub / 4))) & 3) << 4)) - 32;
        const int low = (blk[32 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        const int high = (blk[e % 32] >> (e / 32)) & 1;
        return mul_rn(mul_rn(h2f(ld16(blk + 108)), (float)s), (float)(low - (high ? 0 : 4)));
    }
    case EDGE_TYPE_Q4_K:    // d, dmin, scales[12], qs[128]
    case EDGE_TYPE_Q5_K: {  // d, dmin, scales[12], qh[32], qs[128]
        const bool q5 = type == EDGE_TYPE_Q5_K;
        const int sub = e / 32, l = e % 32;
        int sc, m;
        k4_scale_min(sub, blk + 4, sc, m);
        int q = (blk[(q5 ? 48 : 16) + (sub / 2) * 32 + l] >> (4 * (sub & 1))) & 0xF;
        if (q5) q += ((blk[16 + l] >> sub) & 1) << 4;
        const float d1 = mul_rn(h2f(ld16(blk)), (float)sc), m1 = mul_rn(h2f(ld16(blk + 2)), (float)m);
        return sub_rn(mul_rn(d1, (float)q), m1);
    }
    case EDGE_TYPE_Q6_K: {  // ql[128], qh[64], scales[16] int8, d
        const int half = e / 128, g = (e % 128) / 32, ll = e % 32;
        const int lo = blk[half * 64 + (g & 1) * 32 + ll];
        const int q = (((g < 2) ? (lo & 0xF) : (lo >> 4)) | (((blk[128 + half * 32 + ll] >> (2 * g)) & 3) << 4)) - 32;
        const int sc = (int8_t)blk[192 + e / 16];
        return mul_rn(mul_rn(h2f(ld16(blk + 208)), (float)sc), (float)q);
    }
    default: {  // IQ4_XS: d, scales_h, scales_l[4], qs[128]
        const int ib = e / 32, j = e % 32;
        const int ls = ((blk[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((ld16(blk + 2) >> (2 * ib)) & 3) << 4);
        const uint8_t *qs = blk + 8 + 16 * ib;
        const int v = j < 16 ? iq4nl(qs[j] & 0xF) : iq4nl(qs[j - 16] >> 4);
        return mul_rn(mul_rn(h2f(ld16(blk)), (float)(ls - 32)), (float)v);
    }
    }
}

// ---- host side

// Whether the weight type has CUDA kernels (matmul, embedding).
inline bool weight_type_ok(int type) {
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

// The status of the launches just enqueued by op (cudaGetLastError: launch errors; execution errors surface
// at the next synchronization).
inline edge_status launched(const char *op) {
    const cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) return EDGE_OK;
    return edge_fail(EDGE_ERR_INTERNAL, "%s: kernel launch failed: %s", op, cudaGetErrorString(err));
}

inline unsigned grid_for(int64_t n, int per_block) { return (unsigned)((n + per_block - 1) / per_block); }

}  // namespace edge_cu

#endif  // EDGE_CUDA_COMMON_CUH
