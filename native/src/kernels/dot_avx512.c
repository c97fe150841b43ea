/* dot_avx512.c — AVX-512 (BW + VL + VNNI) kernels. The kernels of dot_simd_x86.h compiled with
 * vpdpbusd/vpdpwssd for the u8·s8 products, plus, for the types that dominate Grok files (Q4_K, Q5_K,
 * Q6_K, Q8_0): quad kernels for 2+ tokens (activations of 4 tokens interleaved: one vpdpbusd for 16
 * weights × 4 tokens) and one-token (decode) matvec kernels over a run of rows that sum exactly as the
 * quad kernels do for one token (so a token's result never depends on its batch). With both in the
 * table, matmul never calls these types' dot entries (dot_simd_x86.h's). */
#define EDGE_SIMD_VNNI 1
#define EDGE_SIMD_TABLE edge_kernels_avx512
#define EDGE_SIMD_MATVEC_Q4_K zmm_matvec_q4_k
#define EDGE_SIMD_MATVEC_Q5_K zmm_matvec_q5_k
#define EDGE_SIMD_MATVEC_Q6_K zmm_matvec_q6_k
#define EDGE_SIMD_MATVEC_Q8_0 zmm_matvec_q8_0
#define EDGE_SIMD_MATVEC_QUANT_K4 zmm_quant_q8_k_k4
#define EDGE_SIMD_MATVEC_QUANT_Q8_0 zmm_quant_q8_0_v

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

static void zmm_matvec_q4_k(int64_t n, const void *w, size_t ws, int64_t nr, const void *x, float *y);
static void zmm_matvec_q5_k(int64_t n, const void *w, size_t ws, int64_t nr, const void *x, float *y);
static void zmm_matvec_q6_k(int64_t n, const void *w, size_t ws, int64_t nr, const void *x, float *y);
static void zmm_matvec_q8_0(int64_t n, const void *w, size_t ws, int64_t nr, const void *x, float *y);
static void zmm_quant_q8_k_k4(const float *x, void *row, int64_t n, int64_t b0, int64_t nb);
static void zmm_quant_q8_0_v(const float *x, void *row, int64_t n, int64_t b0, int64_t nb);
#define EDGE_SIMD_GEMM4_Q4_K zmm_gemm4_q4_k
#define EDGE_SIMD_GEMM4_Q5_K zmm_gemm4_q5_k
#define EDGE_SIMD_GEMM4_Q6_K zmm_gemm4_q6_k
#define EDGE_SIMD_GEMM4_Q8_0 zmm_gemm4_q8_0
static void zmm_gemm4_q4_k(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nq, float *out);
static void zmm_gemm4_q5_k(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nq, float *out);
static void zmm_gemm4_q6_k(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nq, float *out);
static void zmm_gemm4_q8_0(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nq, float *out);

#include "dot_simd_x86.h"

/* [a (256 bits) | b (256 bits)] */
ALWAYS_INLINE __m512i cat256(__m256i a, __m256i b) { return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1); }

/* ---------------------------------------------------------------- interleaved activations (block_q8_Kx4) */

/* Lane k (128 bits) of the result: bytes 4k .. 4k+3 of the lane's 16 source bytes, four times (one per
 * token of the quad): with the 16 weight bytes broadcast to every lane, the weights of values
 * 4k .. 4k+3 meet each token's activations of the same values. */
ALWAYS_INLINE __m512i quad_replicate(const uint8_t *p) {
    const __m512i idx = _mm512_set_epi32(0x0f0e0d0c, 0x0f0e0d0c, 0x0f0e0d0c, 0x0f0e0d0c, 0x0b0a0908, 0x0b0a0908,
                                         0x0b0a0908, 0x0b0a0908, 0x07060504, 0x07060504, 0x07060504, 0x07060504,
                                         0x03020100, 0x03020100, 0x03020100, 0x03020100);
    return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p)), idx);
}

/* Int32 lane k of v in every slot of 128-bit lane k (per-lane values of a quad result: 4 tokens each). */
ALWAYS_INLINE __m512i quad_lanes(__m128i v) {
    return _mm512_permutexvar_epi32(_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
                                    _mm512_castsi128_si512(v));
}

/* Two sub-block sums (int32 lanes, each within int16) as one int16 pair per lane: a low, b high; one
 * vpdpwssd then applies both sub-blocks' scales. */
ALWAYS_INLINE __m512i pair16(__m512i a, __m512i b) {
    return _mm512_mask_blend_epi16(0xAAAAAAAA, a, _mm512_slli_epi32(b, 16));
}

/* Token t's part of a quad accumulator: the sum of slot t over the four 128-bit lanes. */
ALWAYS_INLINE __m128 quad_sum(__m512 v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Per token slot, the sums of 16 of a quad block (b->bs) times int16 factors, summed over the lanes: the
 * int32 lane p of f03 / f47 holds the factor pair (f[2p], f[2p+1]) of pairs p = 0..3 / 4..7. */
ALWAYS_INLINE __m512i quad_bsums_dot(const block_q8_Kx4 *b, __m128i f03, __m128i f47) {
    const __m512i bs0 = _mm512_load_si512((const void *)b->bs), bs1 = _mm512_load_si512((const void *)(b->bs + 32));
    return _mm512_dpwssd_epi32(_mm512_madd_epi16(bs0, quad_lanes(f03)), bs1, quad_lanes(f47));
}

/* out[(r * EDGE_GEMM4_MAX_Q + q) * EDGE_QUAD + t]: token t of quad q against row r. */
#define QUAD_STORE(out, acc, R, Q)                                                                      \
    _Pragma("GCC unroll 8") for (int r_ = 0; r_ < (R); r_++)                                             \
        _Pragma("GCC unroll 8") for (int q_ = 0; q_ < (Q); q_++)                                         \
            _mm_storeu_ps((out) + (r_ * EDGE_GEMM4_MAX_Q + q_) * EDGE_QUAD, quad_sum((acc)[r_][q_]))

/* Q4_K / Q5_K: in chunk j (values 64j .. 64j+63), sub-block 2j is the low nibbles of qs[32j ..], 2j+1 the
 * high ones (Q5_K: plus bit 2j / 2j+1 of qh[l] as bit 4). Per 16 values, one vpdpbusd for 4 tokens; two
 * of them make a sub-block's sums (<= 8 * 31 * 127 per lane, an int16), paired with the other sub-block's
 * and scaled by one vpdpwssd. The mins: the sums of 16 (bs, in pairs: one 32-value sub-block per int32
 * lane) times (m, m). Field offsets in a block: d 0, dmin 2, scales 4..15, then qs (Q4_K) or qh + qs. */
ALWAYS_INLINE void zmm_gemm4_k4_body(int64_t n, const void *w, size_t ws, const void *x, size_t xs, float *out,
                                     const int R, const int Q, const int q5) {
    const size_t bb = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const size_t qs_off = q5 ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);
    const uint8_t *rows[2] = {(const uint8_t *)w, (const uint8_t *)w + ws};
    __m512 acc[2][EDGE_GEMM4_MAX_Q];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) acc[r][q] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint32_t scp[2][4]; /* chunk j: scale of sub-block 2j (low int16), of 2j+1 (high) */
        __m128i mp[2][2];   /* (m, m) of sub-blocks 0..3, 4..7 */
        __m512 dw[2], dmw[2];
        __m512i qh[2][2];   /* Q5_K: qh[0..15], qh[16..31] replicated like the values */
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
            const uint8_t *blk = rows[r] + (size_t)i * bb;
            const __m128i v = k4_scales_mins(blk + 4);
            _mm_storeu_si128((__m128i *)scp[r], _mm_cvtepu8_epi16(v));
            const __m128i m16 = _mm_cvtepu8_epi16(_mm_srli_si128(v, 8));
            mp[r][0] = _mm_unpacklo_epi16(m16, m16);
            mp[r][1] = _mm_unpackhi_epi16(m16, m16);
            uint16_t d16, dm16;
            memcpy(&d16, blk, 2);
            memcpy(&dm16, blk + 2, 2);
            dw[r] = _mm512_set1_ps(f16(d16));
            dmw[r] = _mm512_set1_ps(f16(dm16));
            if (q5) {
                qh[r][0] = quad_replicate(blk + 16);
                qh[r][1] = quad_replicate(blk + 32);
            }
        }
        __m512i sumi[2][EDGE_GEMM4_MAX_Q];
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
            _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) sumi[r][q] = _mm512_setzero_si512();
        _Pragma("GCC unroll 8") for (int j = 0; j < 4; j++) {
            __m512i wa0[2], wa1[2], wb0[2], wb1[2];
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                const uint8_t *qs = rows[r] + (size_t)i * bb + qs_off + 32 * j;
                const __m512i r0 = quad_replicate(qs), r1 = quad_replicate(qs + 16);
                wa0[r] = _mm512_and_si512(r0, m4);
                wa1[r] = _mm512_and_si512(r1, m4);
                wb0[r] = _mm512_and_si512(_mm512_srli_epi16(r0, 4), m4);
                wb1[r] = _mm512_and_si512(_mm512_srli_epi16(r1, 4), m4);
                if (q5) { /* bit b of each qh byte to bit 4 (16-bit shifts: what crosses bytes is masked off) */
                    const int ba = 2 * j, bb_ = 2 * j + 1;
#define TO_BIT4(v, b) ((b) < 4 ? _mm512_slli_epi16(v, 4 - (b)) : (b) > 4 ? _mm512_srli_epi16(v, (b) - 4) : (v))
                    /* u | (h & 0x10): vpternlog 0xF8 = A | (B & C) */
                    wa0[r] = _mm512_ternarylogic_epi32(wa0[r], TO_BIT4(qh[r][0], ba), bit4, 0xF8);
                    wa1[r] = _mm512_ternarylogic_epi32(wa1[r], TO_BIT4(qh[r][1], ba), bit4, 0xF8);
                    wb0[r] = _mm512_ternarylogic_epi32(wb0[r], TO_BIT4(qh[r][0], bb_), bit4, 0xF8);
                    wb1[r] = _mm512_ternarylogic_epi32(wb1[r], TO_BIT4(qh[r][1], bb_), bit4, 0xF8);
#undef TO_BIT4
                }
            }
            _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) {
                const int8_t *xq = XROW(block_q8_Kx4, q)[i].qs + 256 * j;
                const __m512i xa0 = _mm512_load_si512((const void *)xq), xa1 = _mm512_load_si512((const void *)(xq + 64));
                const __m512i xb0 = _mm512_load_si512((const void *)(xq + 128));
                const __m512i xb1 = _mm512_load_si512((const void *)(xq + 192));
                _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                    const __m512i z = _mm512_setzero_si512();
                    const __m512i sa = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, wa0[r], xa0), wa1[r], xa1);
                    const __m512i sb = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, wb0[r], xb0), wb1[r], xb1);
                    sumi[r][q] = _mm512_dpwssd_epi32(sumi[r][q], pair16(sa, sb), _mm512_set1_epi32((int)scp[r][j]));
                }
            }
        }
        _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) {
            const block_q8_Kx4 *b = XROW(block_q8_Kx4, q) + i;
            const __m512 dx = _mm512_broadcast_f32x4(_mm_loadu_ps(b->d));
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                const __m512i mins = quad_bsums_dot(b, mp[r][0], mp[r][1]);
                acc[r][q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[r][q]), _mm512_mul_ps(dw[r], dx), acc[r][q]);
                acc[r][q] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(dmw[r], dx), acc[r][q]);
            }
        }
    }
    QUAD_STORE(out, acc, R, Q);
}

/* Q6_K: in half h and 16-value step lh, ql[64h + 16lh ..] holds groups 0 (low nibbles) and 2 (high),
 * ql[64h + 32 + 16lh ..] groups 1 and 3, qh[32h + 16lh ..] the two high bits of all four (bits 2g, 2g+1);
 * group g covers values 128h + 32g + 16lh .. +15, sub-block 8h + 2g + lh. One vpdpbusd per sub-block of
 * 16 and quad (<= 4 * 63 * 127 per lane, an int16): groups 0/1 and 2/3 are paired for vpdpwssd with
 * their signed scales. The stored values are q + 32: 32 * sum(scale * sums of 16) is taken off. */
ALWAYS_INLINE void zmm_gemm4_q6_k_body(int64_t n, const void *w, size_t ws, const void *x, size_t xs, float *out,
                                       const int R, const int Q) {
    const block_q6_K *rows[2] = {(const block_q6_K *)w, (const block_q6_K *)((const char *)w + ws)};
    __m512 acc[2][EDGE_GEMM4_MAX_Q];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) acc[r][q] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    for (int64_t i = 0; i < n / QK_K; i++) {
        int16_t sc[2][16];
        __m128i scl[2][2]; /* (scale 2p, scale 2p+1) of pairs p = 0..3, 4..7 */
        __m512 dw[2];
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
            const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)rows[r][i].scales));
            _mm256_storeu_si256((__m256i *)sc[r], s16);
            scl[r][0] = _mm256_castsi256_si128(s16);
            scl[r][1] = _mm256_extracti128_si256(s16, 1);
            dw[r] = _mm512_set1_ps(f16(rows[r][i].d));
        }
        __m512i sumi[2][EDGE_GEMM4_MAX_Q];
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
            _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) sumi[r][q] = _mm512_setzero_si512();
        _Pragma("GCC unroll 8") for (int h = 0; h < 2; h++) {
            _Pragma("GCC unroll 8") for (int lh = 0; lh < 2; lh++) {
                __m512i u[2][4];
                int32_t s01[2], s23[2];
                _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                    const __m512i la = quad_replicate(rows[r][i].ql + 64 * h + 16 * lh);
                    const __m512i lb = quad_replicate(rows[r][i].ql + 64 * h + 32 + 16 * lh);
                    const __m512i hi = quad_replicate(rows[r][i].qh + 32 * h + 16 * lh);
                    /* (low 4 bits) | (2 high bits at bits 4..5): vpternlog 0xEA = (A & B) | C */
                    u[r][0] = _mm512_ternarylogic_epi32(la, m4, _mm512_and_si512(_mm512_slli_epi16(hi, 4), m30), 0xEA);
                    u[r][1] = _mm512_ternarylogic_epi32(lb, m4, _mm512_and_si512(_mm512_slli_epi16(hi, 2), m30), 0xEA);
                    u[r][2] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(la, 4), m4, _mm512_and_si512(hi, m30), 0xEA);
                    u[r][3] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(lb, 4), m4,
                                                        _mm512_and_si512(_mm512_srli_epi16(hi, 2), m30), 0xEA);
                    const int s0 = 8 * h + lh;
                    s01[r] = (int32_t)((uint16_t)sc[r][s0] | (uint32_t)(uint16_t)sc[r][s0 + 2] << 16);
                    s23[r] = (int32_t)((uint16_t)sc[r][s0 + 4] | (uint32_t)(uint16_t)sc[r][s0 + 6] << 16);
                }
                _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) {
                    const int8_t *xq = XROW(block_q8_Kx4, q)[i].qs + 4 * (128 * h + 16 * lh);
                    __m512i xv[4];
                    _Pragma("GCC unroll 8") for (int g = 0; g < 4; g++) xv[g] = _mm512_load_si512((const void *)(xq + 128 * g));
                    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                        const __m512i z = _mm512_setzero_si512();
                        const __m512i p01 = pair16(_mm512_dpbusd_epi32(z, u[r][0], xv[0]), _mm512_dpbusd_epi32(z, u[r][1], xv[1]));
                        const __m512i p23 = pair16(_mm512_dpbusd_epi32(z, u[r][2], xv[2]), _mm512_dpbusd_epi32(z, u[r][3], xv[3]));
                        sumi[r][q] = _mm512_dpwssd_epi32(sumi[r][q], p01, _mm512_set1_epi32(s01[r]));
                        sumi[r][q] = _mm512_dpwssd_epi32(sumi[r][q], p23, _mm512_set1_epi32(s23[r]));
                    }
                }
            }
        }
        _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) {
            const block_q8_Kx4 *b = XROW(block_q8_Kx4, q) + i;
            const __m512 dx = _mm512_broadcast_f32x4(_mm_loadu_ps(b->d));
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                const __m512i corr = quad_bsums_dot(b, scl[r][0], scl[r][1]);
                const __m512i tot = _mm512_sub_epi32(sumi[r][q], _mm512_slli_epi32(corr, 5));
                acc[r][q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_mul_ps(dw[r], dx), acc[r][q]);
            }
        }
    }
    QUAD_STORE(out, acc, R, Q);
}

/* Q8_0: per block of 32 and row, the weights replicated per token (two vectors of 16 values); the
 * quad's values are stored plus 128, so each vpdpbusd sum carries 128 * (the 4 weights' sum), taken off
 * by starting the block's accumulator at -128 * that sum (once per row, for every quad). */
ALWAYS_INLINE void zmm_gemm4_q8_0_body(int64_t n, const void *w, size_t ws, const void *x, size_t xs, float *out,
                                       const int R, const int Q) {
    const block_q8_0 *rows[2] = {(const block_q8_0 *)w, (const block_q8_0 *)((const char *)w + ws)};
    /* even and odd blocks in two accumulators (two dependency chains; the one-token kernel does the same) */
    __m512 acc[2][EDGE_GEMM4_MAX_Q], acc_odd[2][EDGE_GEMM4_MAX_Q];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) acc[r][q] = acc_odd[r][q] = _mm512_setzero_ps();
    const __m512i off = _mm512_set1_epi8((char)0x80);
    const int64_t nb = n / QK8_0;
    for (int64_t i0 = 0; i0 < nb; i0 += 2) {
        _Pragma("GCC unroll 2") for (int odd = 0; odd < 2; odd++) {
            const int64_t i = i0 + odd;
            if (i >= nb) break;
            __m512i w0[2], w1[2], negc[2];
            __m512 dw[2];
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                w0[r] = quad_replicate((const uint8_t *)rows[r][i].qs);
                w1[r] = quad_replicate((const uint8_t *)rows[r][i].qs + 16);
                const __m512i c =
                    _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), off, w0[r]), off, w1[r]);
                negc[r] = _mm512_sub_epi32(_mm512_setzero_si512(), c);
                dw[r] = _mm512_set1_ps(f16(rows[r][i].d));
            }
            _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) {
                const void *xq = XROW(char, q);
                const uint8_t *v = edge_q8q_qs(xq) + (size_t)i * QK8_0 * EDGE_QUAD;
                const __m512i xa = _mm512_loadu_si512((const void *)v), xb = _mm512_loadu_si512((const void *)(v + 64));
                const __m512 dx = _mm512_broadcast_f32x4(_mm_loadu_ps(edge_q8q_d(xq, n) + i * EDGE_QUAD));
                _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                    const __m512i p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(negc[r], xa, w0[r]), xb, w1[r]);
                    const __m512 prod = _mm512_mul_ps(dw[r], dx);
                    if (odd)
                        acc_odd[r][q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), prod, acc_odd[r][q]);
                    else
                        acc[r][q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), prod, acc[r][q]);
                }
            }
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 8") for (int q = 0; q < Q; q++) acc[r][q] = _mm512_add_ps(acc[r][q], acc_odd[r][q]);
    QUAD_STORE(out, acc, R, Q);
}

ALWAYS_INLINE void zmm_gemm4_q4_k_body(int64_t n, const void *w, size_t ws, const void *x, size_t xs, float *out,
                                       const int R, const int Q) {
    zmm_gemm4_k4_body(n, w, ws, x, xs, out, R, Q, 0);
}
ALWAYS_INLINE void zmm_gemm4_q5_k_body(int64_t n, const void *w, size_t ws, const void *x, size_t xs, float *out,
                                       const int R, const int Q) {
    zmm_gemm4_k4_body(n, w, ws, x, xs, out, R, Q, 1);
}

GEMM4_DISPATCH(zmm_gemm4_q4_k)
GEMM4_DISPATCH(zmm_gemm4_q5_k)
GEMM4_DISPATCH(zmm_gemm4_q6_k)
GEMM4_DISPATCH(zmm_gemm4_q8_0)

/* ---------------------------------------------------------------- one token (decode), the quad kernels' sums
 *
 * A token's result must not depend on the batch it came in (prompt reuse, incremental evaluation and a
 * fresh batch give the same bits), so the one-token kernels of the types above compute exactly what the
 * quad kernels compute for one slot: the same integer sums per lane k (the values 4k..4k+3 of every 16),
 * converted and accumulated per block in the same order, and the four lanes summed as quad_sum does. */

/* The int32 lanes of v summed by lane mod 4 (lane 4m + k covers values 4k .. 4k+3 of a 16-value group). */
ALWAYS_INLINE __m128i fold_lanes16(__m512i v) {
    const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}
ALWAYS_INLINE __m128i fold_lanes8(__m256i v) {
    return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}
/* fold_lanes16 of two rows' sums at once: [row A | row B]. */
ALWAYS_INLINE __m256i fold_lanes16_rows(__m512i a, __m512i b) {
    const __m512i f = _mm512_add_epi32(_mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                       _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm256_add_epi32(_mm512_castsi512_si256(_mm512_shuffle_i64x2(f, f, _MM_SHUFFLE(3, 1, 2, 0))),
                            _mm512_castsi512_si256(_mm512_shuffle_i64x2(f, f, _MM_SHUFFLE(2, 0, 3, 1))));
}

/* k4_scales_mins of two blocks, one per 128-bit lane. */
ALWAYS_INLINE __m256i k4_scales_mins2(const uint8_t *s0, const uint8_t *s1) {
    return k4_scales_mins_of(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)s0)),
                                                     _mm_loadu_si128((const __m128i *)s1), 1));
}

/* The scale pairs of load h of a block: (s[4h], s[4h+1]) for lanes 0..7, (s[4h+2], s[4h+3]) for 8..15, as
 * int32 lanes 2h and 2h+1 of the scales as int16 (sel); for the second block of a pair, whose scales are
 * lanes 4 on, sel_b. */
ALWAYS_INLINE void k4_selectors(__m512i sel[2], __m512i sel_b[2]) {
    sel[0] = cat256(_mm256_set1_epi32(0), _mm256_set1_epi32(1));
    sel[1] = cat256(_mm256_set1_epi32(2), _mm256_set1_epi32(3));
    sel_b[0] = _mm512_add_epi32(sel[0], _mm512_set1_epi32(4));
    sel_b[1] = _mm512_add_epi32(sel[1], _mm512_set1_epi32(4));
}
/* The mins of k4_scales_mins as int16, in the order of the activations' bsums (madd: lane k = sub-blocks
 * k and k + 4). */
ALWAYS_INLINE __m128i k4_mins_idx(void) {
    return _mm_setr_epi8(8, -1, 12, -1, 9, -1, 13, -1, 10, -1, 14, -1, 11, -1, 15, -1);
}

/* Decode, Q4_K / Q5_K: sub-block j is the low nibbles (j even) or the high nibbles (j odd) of
 * qs[32 (j / 2) ..] (Q5_K: plus bit j of qh[l] as bit 4), against activations in zmm_quant_q8_k_k4's
 * layout. One 64-byte load of qs holds
 * sub-blocks 4h .. 4h+3 (h = 0, 1): its low nibbles are 4h (bytes 0..31) and 4h+2 (32..63), its high
 * nibbles 4h+1 and 4h+3, each against 64 activation bytes in the same order. One vpdpbusd per 64 values
 * (the unscaled sums of 4, within int16); the two of a load as the int16 pair (low, high nibbles) of
 * each int32 lane, and one vpdpwssd scales both, the scale pairs (s[4h], s[4h+1]) for lanes 0..7 and
 * (s[4h+2], s[4h+3]) for 8..15 being int32 lanes 2h and 2h+1 of the scales as int16. The mins against
 * the sums of 32 in the order lane k needs (one madd). Lane l holds values 4l .. 4l+3 of its sub-blocks
 * (the quad kernels' lane l mod 4), so the result is bitwise the quad kernels' for the token. L3-resident 8192 x 2048 Q4_K, one
 * thread: 44.5 GB/s in a standalone loop (37.3 with one maddubs + vpdpwssd + vpermw per 64 values), 40
 * through edge_matmul, with the high nibbles in place (Q4_K). Blocks are taken in pairs
 * (scales, folding, conversion and mins of both in one operation each: 52 instructions a block, not 58;
 * +4-9 % from L2/L3, 2 threads 41 -> 43 GB/s), each block still accumulated on its own.
 *
 * name_sums: one block's integer sums (16 int32 lanes, before folding); int32 lanes sel[0] / sel[1] of
 * sc16 hold the scale pairs of the block's two 64-byte loads. */
#define ZMM_K4_MV(name, btype, Q5)                                                                      \
    ALWAYS_INLINE __m512i name##_sums(const btype *a, const block_q8_K *b, __m512i sc16, const __m512i sel[2]) { \
        const __m512i m4 = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);                       \
        /* Q5_K: bit b of qh[l] (sub-block b) to bit 4: shifted right by b from qh << 4 (b < 4) or by    \
         * b - 4 from qh (16-bit shifts; only bit 4 of each byte is kept) */                             \
        const __m512i hshift[2] = {cat256(_mm256_set1_epi16(0), _mm256_set1_epi16(2)),                  \
                                   cat256(_mm256_set1_epi16(1), _mm256_set1_epi16(3))};                 \
        __m512i qh[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};                              \
        if (Q5) {                                                                                       \
            qh[1] = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)((const block_q5_K *)(const void *)a)->qh)); \
            qh[0] = _mm512_slli_epi16(qh[1], 4);                                                        \
        }                                                                                               \
        __m512i sumi = _mm512_setzero_si512();                                                          \
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {                                          \
            __m512i q = _mm512_loadu_si512((const void *)(a->qs + 64 * h));                             \
            /* in a register: GCC would fold the load into both uses below (two 64-byte loads, not one: \
             * one thread, 8192 x 2048 from L3, +3-8 %) */                                               \
            __asm__("" : "+v"(q));                                                                      \
            /* Q4_K: the high nibbles in place (16 u, sums 16 times larger, within int32): the pair's     \
             * high word is then their sums shifted left by 12, not 16 (one shift fewer) */               \
            __m512i u0 = _mm512_and_si512(q, m4), u1 = _mm512_andnot_si512(m4, q);                      \
            if (Q5) { /* u | (h & 0x10): vpternlog 0xF8 = A | (B & C) */                                 \
                u1 = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);                                     \
                u0 = _mm512_ternarylogic_epi32(u0, _mm512_srlv_epi16(qh[h], hshift[0]), bit4, 0xF8);      \
                u1 = _mm512_ternarylogic_epi32(u1, _mm512_srlv_epi16(qh[h], hshift[1]), bit4, 0xF8);      \
            }                                                                                           \
            const __m512i p0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u0, _mm512_loadu_si512((const void *)(b->qs + 128 * h))); \
            const __m512i p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u1, _mm512_loadu_si512((const void *)(b->qs + 128 * h + 64))); \
            const __m512i pr = _mm512_mask_blend_epi16(0xAAAAAAAA, p0, _mm512_slli_epi32(p1, Q5 ? 16 : 12)); \
            sumi = _mm512_dpwssd_epi32(sumi, pr, _mm512_permutexvar_epi32(sel[h], sc16));              \
        }                                                                                               \
        return sumi;                                                                                    \
    }                                                                                                   \
    /* acc += d * sums - dmin * mins for one block, d and dmin times the activations' dx */            \
    ALWAYS_INLINE __m128 name##_acc(__m128 acc, const btype *a, float dx, __m128 sums, __m128 mins) {   \
        uint32_t ddm; /* d and dmin: one conversion for both */                                        \
        memcpy(&ddm, &a->d, 4);                                                                         \
        const __m128 s = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)ddm)), _mm_set1_ps(dx));        \
        acc = _mm_fmadd_ps(sums, _mm_broadcastss_ps(s), acc);                                           \
        return _mm_fnmadd_ps(mins, _mm_permute_ps(s, 0x55), acc);                                       \
    }                                                                                                   \
    ALWAYS_INLINE void name##_body(int64_t n, const void *w, const void *x, const char *pf_end, float *out) { \
        const btype *a = w;                                                                             \
        const block_q8_K *b = x;                                                                        \
        __m128 acc = _mm_setzero_ps();                                                                  \
        __m512i sel[2], sel_b[2];                                                                       \
        k4_selectors(sel, sel_b);                                                                       \
        const __m128i mins_idx = k4_mins_idx();                                                         \
        const int64_t nb = n / QK_K;                                                                    \
        int64_t i = 0;                                                                                  \
        /* Two blocks per step: their scales decoded, their sums folded and converted, their mins      \
         * multiplied in one 256- or 512-bit operation each; accumulated block by block as before. */    \
        for (; i + 2 <= nb; i += 2) {                                                                   \
            decode_prefetch((const char *)&a[i] + EDGE_SIMD_DECODE_AHEAD, pf_end, 5); /* 2 blocks: <= 6 lines, the rest next step */ \
            const __m256i smv = k4_scales_mins2(a[i].scales, a[i + 1].scales);                        \
            const __m512i sc16 = _mm512_castsi256_si512(_mm256_unpacklo_epi8(smv, _mm256_setzero_si256())); \
            const __m512i s0 = name##_sums(&a[i], &b[i], sc16, sel), s1 = name##_sums(&a[i + 1], &b[i + 1], sc16, sel_b); \
            /* 128-bit lanes (s0: 0..3, s1: 4..7) summed per block: (0 + 2) + (1 + 3) */                  \
            const __m512i f = _mm512_add_epi32(_mm512_shuffle_i64x2(s0, s1, _MM_SHUFFLE(1, 0, 1, 0)),      \
                                               _mm512_shuffle_i64x2(s0, s1, _MM_SHUFFLE(3, 2, 3, 2)));     \
            const __m512 sums = _mm512_cvtepi32_ps(_mm512_add_epi32(f, _mm512_shuffle_i64x2(f, f, _MM_SHUFFLE(2, 3, 0, 1)))); \
            const __m256i bs = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)b[i].bsums)), \
                                                       _mm_loadu_si128((const __m128i *)b[i + 1].bsums), 1); \
            const __m256 mins = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_shuffle_epi8(smv, _mm256_broadcastsi128_si256(mins_idx)), bs)); \
            acc = name##_acc(acc, &a[i], b[i].d, _mm512_castps512_ps128(sums), _mm256_castps256_ps128(mins)); \
            acc = name##_acc(acc, &a[i + 1], b[i + 1].d, _mm512_extractf32x4_ps(sums, 2), _mm256_extractf128_ps(mins, 1)); \
        }                                                                                               \
        if (i < nb) { /* an odd last block */                                                           \
            decode_prefetch((const char *)&a[i] + EDGE_SIMD_DECODE_AHEAD, pf_end, 3);                    \
            const __m128i smv = k4_scales_mins(a[i].scales);                                            \
            const __m512i sc16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(smv));                    \
            const __m128i mins = _mm_madd_epi16(_mm_shuffle_epi8(smv, mins_idx), _mm_loadu_si128((const __m128i *)b[i].bsums)); \
            acc = name##_acc(acc, &a[i], b[i].d, _mm_cvtepi32_ps(fold_lanes16(name##_sums(&a[i], &b[i], sc16, sel))), \
                             _mm_cvtepi32_ps(mins));                                                    \
        }                                                                                               \
        out[0] = quad_lanes_sum(acc);                                                                   \
    }
ZMM_K4_MV(zmm_mv_q4_k, block_q4_K, 0)
ZMM_K4_MV(zmm_mv_q5_k, block_q5_K, 1)

/* Decode, Q4_K / Q5_K, two rows at once: block i of rows A and B as the one-row body pairs blocks i and
 * i + 1 (the scales, folding, conversion and mins of both in one operation each, here against the same
 * activations), and both rows' accumulators in one 256-bit vector, the d and dmin of both blocks
 * converted and multiplied by dx at once. Each row's lanes get the one-row body's operations in its
 * order: the same bits. 2048 columns: one thread +9 % from L1, +6 % from L3; 8192 rows from L3 on 2
 * threads 44-50 -> 48-55 GB/s; the bench's decode from DRAM no slower (ZMM_MATVEC2 pairs the rows). */
#define ZMM_K4_MV2(name, btype)                                                                         \
    ALWAYS_INLINE void name##2_step(const btype *a0, const btype *a1, const block_q8_K *b, __m256 *acc,   \
                                    const __m512i sel[2], const __m512i sel_b[2], __m256i mins_idx) {   \
        const __m256i smv = k4_scales_mins2(a0->scales, a1->scales);                                  \
        const __m512i sc16 = _mm512_castsi256_si512(_mm256_unpacklo_epi8(smv, _mm256_setzero_si256())); \
        const __m512i s0 = name##_sums(a0, b, sc16, sel), s1 = name##_sums(a1, b, sc16, sel_b);        \
        const __m256i g = fold_lanes16_rows(s0, s1);                                                    \
        const __m256i bs = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b->bsums));     \
        const __m256 mins = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_shuffle_epi8(smv, mins_idx), bs)); \
        uint32_t d0, d1; /* d and dmin of each block */                                                  \
        memcpy(&d0, &a0->d, 4);                                                                         \
        memcpy(&d1, &a1->d, 4);                                                                         \
        const __m128 dd = _mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128((int)d0), (int)d1, 1));       \
        const __m256 s = _mm256_castps128_ps256(_mm_mul_ps(dd, _mm_set1_ps(b->d)));                    \
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(g), _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2)), *acc); \
        *acc = _mm256_fnmadd_ps(mins, _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3)), *acc); \
    }                                                                                                   \
    ALWAYS_INLINE void name##2_body(int64_t n, const void *w0, const void *w1, const void *x, const char *end0, \
                                    const char *end1, float *out0, float *out1) {                       \
        const btype *a0 = w0, *a1 = w1;                                                                 \
        const block_q8_K *b = x;                                                                        \
        __m256 acc = _mm256_setzero_ps(); /* row A | row B */                                           \
        __m512i sel[2], sel_b[2];                                                                       \
        k4_selectors(sel, sel_b);                                                                       \
        const __m256i mins_idx = _mm256_broadcastsi128_si256(k4_mins_idx());                            \
        const int64_t nb = n / QK_K;                                                                    \
        int64_t i = 0;                                                                                  \
        for (; i + 2 <= nb; i += 2) {                                                                   \
            decode_prefetch((const char *)&a0[i] + EDGE_SIMD_DECODE_AHEAD, end0, 5);                     \
            decode_prefetch((const char *)&a1[i] + EDGE_SIMD_DECODE_AHEAD, end1, 5);                     \
            name##2_step(&a0[i], &a1[i], &b[i], &acc, sel, sel_b, mins_idx);                            \
            name##2_step(&a0[i + 1], &a1[i + 1], &b[i + 1], &acc, sel, sel_b, mins_idx);                \
        }                                                                                               \
        if (i < nb) { /* an odd last block */                                                           \
            decode_prefetch((const char *)&a0[i] + EDGE_SIMD_DECODE_AHEAD, end0, 3);                     \
            decode_prefetch((const char *)&a1[i] + EDGE_SIMD_DECODE_AHEAD, end1, 3);                     \
            name##2_step(&a0[i], &a1[i], &b[i], &acc, sel, sel_b, mins_idx);                            \
        }                                                                                               \
        out0[0] = quad_lanes_sum(_mm256_castps256_ps128(acc));                                          \
        out1[0] = quad_lanes_sum(_mm256_extractf128_ps(acc, 1));                                        \
    }
ZMM_K4_MV2(zmm_mv_q4_k, block_q4_K)
ZMM_K4_MV2(zmm_mv_q5_k, block_q5_K)

/* Activations for zmm_mv_q4_k / zmm_mv_q5_k: Q8_K (same d and values) with, per block, the values in
 * the order of sub-blocks 0, 2, 1, 3, 4, 6, 5, 7 (32 each), and bsums[0..7] = the sums of 32 of
 * sub-blocks 0, 4, 1, 5, 2, 6, 3, 7 (madd with the mins in that order: lane k = sub-blocks k and k + 4). */
static void zmm_quant_q8_k_k4(const float *x, void *row, int64_t n, int64_t b0, int64_t nb) {
    simd_quant_q8_k(x, row, n, b0, nb);
    block_q8_K *b = (block_q8_K *)row + b0;
    for (int64_t i = 0; i < nb; i++) {
        for (int h = 0; h < 2; h++) { /* swap sub-blocks 1 and 2 of each half */
            int8_t *p = b[i].qs + 128 * h;
            const __m256i s1 = _mm256_loadu_si256((const __m256i *)(p + 32)), s2 = _mm256_loadu_si256((const __m256i *)(p + 64));
            _mm256_storeu_si256((__m256i *)(p + 32), s2);
            _mm256_storeu_si256((__m256i *)(p + 64), s1);
        }
        int16_t s32[8];
        for (int k = 0; k < 8; k++) s32[k] = (int16_t)(b[i].bsums[2 * k] + b[i].bsums[2 * k + 1]);
        for (int k = 0; k < 4; k++) {
            b[i].bsums[2 * k] = s32[k];
            b[i].bsums[2 * k + 1] = s32[k + 4];
        }
    }
}

/* Decode, Q6_K: in half h, one 64-byte load of ql covers groups 0/1 (low nibbles) and 2/3 (high
 * nibbles): u01 = values 128h + 0..63, u23 = 128h + 64..127, each 128-bit lane one sub-block of 16. One
 * vpdpbusd per 64 values (unscaled sums of 4: <= 4 * 63 * 127, an int16) and the two of a half paired
 * as int16s (lane L of u01 is sub-block 8h + L, of u23 8h + 4 + L), one vpermw of the scales and one
 * vpdpwssd per half (not two of each and two maddubs); the high bits
 * of four groups from one masked qh; the -32 offset as one more vpdpwssd into the sums. L3-resident
 * 8192 x 2048, one thread: 53.3 GB/s (44.4 with two of each and two maddubs). */
ALWAYS_INLINE void zmm_mv_q6_k_body(int64_t n, const void *w, const void *x, const char *pf_end, float *out) {
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    __m128 acc = _mm_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    /* The two high bits of group g (qh bits 2g, 2g+1) at bits 4..5: with qh & 0x33 (groups 0, 2) in the
     * lower 256 bits and qh & 0xCC (1, 3) in the upper, shifted left by 4 | 2 (groups 0 | 1) or right
     * by 0 | 2 (2 | 3); bits 6..7 then hold zeros (16-bit shifts), and bits 0..3 come from ql. */
    const __m512i hmask = cat256(_mm256_set1_epi8(0x33), _mm256_set1_epi8((char)0xCC));
    const __m512i shl01 = cat256(_mm256_set1_epi16(4), _mm256_set1_epi16(2));
    const __m512i shr23 = cat256(_mm256_setzero_si256(), _mm256_set1_epi16(2));
    const __m256i m32 = _mm256_set1_epi16(-32);
    /* half h: int16 pair (s[8h + L], s[8h + 4 + L]) in every int32 lane of 128-bit lane L */
    const __m512i pair_idx[2] = {
        _mm512_set_epi16(7, 3, 7, 3, 7, 3, 7, 3, 6, 2, 6, 2, 6, 2, 6, 2, 5, 1, 5, 1, 5, 1, 5, 1, 4, 0, 4, 0, 4, 0, 4, 0),
        _mm512_set_epi16(15, 11, 15, 11, 15, 11, 15, 11, 14, 10, 14, 10, 14, 10, 14, 10, 13, 9, 13, 9, 13, 9, 13, 9, 12,
                         8, 12, 8, 12, 8, 12, 8)};
    for (int64_t i = 0; i < n / QK_K; i++) {
        decode_prefetch((const char *)&a[i] + EDGE_SIMD_DECODE_AHEAD, pf_end, 4); /* a block spans at most 4 lines */
        const __m256i sc16y = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a[i].scales));
        __m512i sumi = _mm512_setzero_si512();
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            __m512i ql = _mm512_loadu_si512((const void *)(a[i].ql + 64 * h));
            __asm__("" : "+v"(ql)); /* one load for both nibble halves (as zmm_mv_q4_k's q): +3-5 % */
            const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a[i].qh + 32 * h)));
            const __m512i hq = _mm512_and_si512(qh, hmask);
            /* vpternlog 0xE4: C ? A : B (bits 0..3 from A, 4..7 from B) */
            const __m512i u01 = _mm512_ternarylogic_epi32(ql, _mm512_sllv_epi16(hq, shl01), m4, 0xE4);
            const __m512i u23 = _mm512_ternarylogic_epi32(_mm512_srli_epi16(ql, 4), _mm512_srlv_epi16(hq, shr23), m4, 0xE4);
            const __m512i p0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u01, _mm512_loadu_si512((const void *)(b[i].qs + 128 * h)));
            const __m512i p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u23, _mm512_loadu_si512((const void *)(b[i].qs + 128 * h + 64)));
            sumi = _mm512_dpwssd_epi32(sumi, pair16(p0, p1), _mm512_permutexvar_epi16(pair_idx[h], _mm512_castsi256_si512(sc16y)));
        }
        /* minus 32 * sum(scale * sums of 16), in lanes 0..7 (lane p: sub-blocks 2p, 2p+1; the fold below
         * sums lanes p and p + 4 as the other kernels' sums do) */
        sumi = _mm512_dpwssd_epi32(sumi, _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)b[i].bsums)),
                                   _mm512_zextsi256_si512(_mm256_mullo_epi16(sc16y, m32)));
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(fold_lanes16(sumi)), _mm_set1_ps(f16(a[i].d) * b[i].d), acc);
    }
    out[0] = quad_lanes_sum(acc);
}

/* Decode, Q8_0, over the edge_q8v layout: lane m of a block's 256-bit sums holds values 4m .. 4m+3, so
 * lanes m and m + 4 make the quad kernel's lane m; even and odd blocks are accumulated apart, as there.
 * Per block one vpxor (w + 128, the unsigned side) and one vpdpbusd onto the block's correction (exactly
 * sum(w * x) per lane: no abs and sign); two blocks' lanes folded to [even | odd] in one 256-bit vector,
 * converted and scaled at once. L3-resident
 * 8192 x 2048, one thread: 38.3 -> 51.3 GB/s. */
ALWAYS_INLINE void zmm_mv_q8_0_body(int64_t n, const void *w, const void *x, const char *pf_end, float *out) {
    const block_q8_0 *a = w;
    const int8_t *xq = edge_q8s_qs(x);
    const float *xd = edge_q8s_d(x, n);
    const int32_t *corr = edge_q8v_corr(x, n);
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    __m256 acc = _mm256_setzero_ps(); /* even blocks | odd blocks */
    const int64_t nb = n / QK8_0;
    int64_t i = 0;
    for (; i + 1 < nb; i += 2) {
        decode_prefetch((const char *)&a[i] + EDGE_SIMD_DECODE_AHEAD, pf_end, 2); /* two blocks: at most 3 lines */
        const __m256i pe = _mm256_dpbusd_epi32(_mm256_loadu_si256((const __m256i *)(corr + 8 * i)),
                                               _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)a[i].qs), flip),
                                               _mm256_loadu_si256((const __m256i *)(xq + 32 * i)));
        const __m256i po = _mm256_dpbusd_epi32(_mm256_loadu_si256((const __m256i *)(corr + 8 * i + 8)),
                                               _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)a[i + 1].qs), flip),
                                               _mm256_loadu_si256((const __m256i *)(xq + 32 * i + 32)));
        const __m256i sum = _mm256_add_epi32(_mm256_permute2x128_si256(pe, po, 0x20), _mm256_permute2x128_si256(pe, po, 0x31));
        uint16_t de, dodd;
        memcpy(&de, &a[i].d, 2);
        memcpy(&dodd, &a[i + 1].d, 2);
        const __m128 dw = _mm_cvtph_ps(_mm_cvtsi32_si128((int)de | (int)dodd << 16));
        const __m128 prod = _mm_mul_ps(dw, _mm_castpd_ps(_mm_load_sd((const double *)(xd + i)))); /* d * dx of both */
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_permutevar8x32_ps(_mm256_castps128_ps256(prod), spread), acc);
    }
    __m128 even = _mm256_castps256_ps128(acc);
    if (i < nb) { /* an odd number of blocks: the last one is even */
        const __m256i pe = _mm256_dpbusd_epi32(_mm256_loadu_si256((const __m256i *)(corr + 8 * i)),
                                               _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)a[i].qs), flip),
                                               _mm256_loadu_si256((const __m256i *)(xq + 32 * i)));
        even = _mm_fmadd_ps(_mm_cvtepi32_ps(fold_lanes8(pe)), _mm_set1_ps(f16(a[i].d) * xd[i]), even);
    }
    out[0] = quad_lanes_sum(_mm_add_ps(even, _mm256_extractf128_ps(acc, 1)));
}

/* Activations for zmm_mv_q8_0 (edge_q8v): Q8_0 as q8s, then per block the lanes' corrections. */
static void zmm_quant_q8_0_v(const float *x, void *row, int64_t n, int64_t b0, int64_t nb) {
    simd_quant_q8_0(x, row, n, b0, nb);
    const int8_t *qs = edge_q8s_qs(row);
    int32_t *corr = (int32_t *)(uintptr_t)edge_q8v_corr(row, n);
    const __m256i ones = _mm256_set1_epi8(1);
    for (int64_t i = b0; i < b0 + nb; i++) {
        const __m256i s4 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, _mm256_loadu_si256((const __m256i *)(qs + 32 * i)));
        _mm256_storeu_si256((__m256i *)(corr + 8 * i), _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(s4, 7)));
    }
}

/* Decode: the one-token bodies above over a run of rows (decode_run_start, dot_simd_x86.h). */
#define ZMM_MATVEC(name, body)                                                                          \
    __attribute__((aligned(64))) static void name(int64_t n, const void *w, size_t ws, int64_t nr,          \
                                                  const void *x, float *y) {                             \
        const char *end = (const char *)w + (size_t)nr * ws;                                            \
        decode_run_start(w, end);                                                                       \
        for (int64_t r = 0; r < nr; r++) body(n, (const char *)w + (size_t)r * ws, x, end, y + r);      \
    }
/* ... with the rows in pairs (body2): row r of the run's first half with row r of its second, two
 * streams each read in order and fetched ahead within itself (not adjacent rows: in rows longer than the
 * prefetch distance, 8192 columns, the lines one row's stream fetches ahead for the other arrive after
 * that row has read them, 25 % slower); an odd last row alone. Pairs pay with the L2 prefetch stage
 * (whole Q4_K_M tokens ~1 % faster than one row at a time); without that stage one row at a time would
 * be faster by 4-5 %. */
#define ZMM_MATVEC2(name, body2, body)                                                                  \
    __attribute__((aligned(64))) static void name(int64_t n, const void *w, size_t ws, int64_t nr,          \
                                                  const void *x, float *y) {                             \
        const char *w0 = w, *end = w0 + (size_t)nr * ws;                                                \
        const int64_t h = nr / 2;                                                                       \
        const char *w1 = w0 + (size_t)h * ws;                                                           \
        decode_run_start(w0, h > 0 ? w1 : end);                                                         \
        if (h > 0) decode_run_start(w1, end);                                                           \
        for (int64_t r = 0; r < h; r++)                                                                 \
            body2(n, w0 + (size_t)r * ws, w1 + (size_t)r * ws, x, w1, end, y + r, y + h + r);           \
        if (2 * h < nr) body(n, w0 + (size_t)(nr - 1) * ws, x, end, y + nr - 1);                        \
    }
ZMM_MATVEC2(zmm_matvec_q4_k, zmm_mv_q4_k2_body, zmm_mv_q4_k_body)
ZMM_MATVEC2(zmm_matvec_q5_k, zmm_mv_q5_k2_body, zmm_mv_q5_k_body)
ZMM_MATVEC(zmm_matvec_q6_k, zmm_mv_q6_k_body)
ZMM_MATVEC(zmm_matvec_q8_0, zmm_mv_q8_0_body)
