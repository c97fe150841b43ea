/* common.h — internal helpers shared by every part of the engine (not part of the public API). */
#ifndef EDGE_COMMON_H
#define EDGE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "edge.h"

#if defined(__GNUC__)
#define EDGE_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define EDGE_LIKELY(x) __builtin_expect(!!(x), 1)
#define EDGE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define EDGE_PRINTF(a, b)
#define EDGE_LIKELY(x) (x)
#define EDGE_UNLIKELY(x) (x)
#endif

/* Record a message for edge_last_error() on this thread and return `status`.
 * Typical use: return edge_fail(EDGE_ERR_FORMAT, "%s: tensor '%s' ends past the file", path, name); */
edge_status edge_fail(edge_status status, const char *fmt, ...) EDGE_PRINTF(2, 3);
/* Clear this thread's last error (called at the start of public entry points that succeed). */
void edge_clear_error(void);

/* Overflow-checked arithmetic on sizes: return false on overflow. */
static inline bool edge_add_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_add_overflow(a, b, out); }
static inline bool edge_mul_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }

/* Half-precision conversions (IEEE binary16 and bfloat16), exact and portable. */
static inline float edge_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ffu;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even, like ggml's fp32->fp16 (and numpy's astype(float16)). */
static inline uint16_t edge_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) { /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
    }
    if (absx >= 0x477ff000u) { /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (absx < 0x38800000u) { /* below smallest normal half: subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign; /* < 2^-25 rounds to zero */
        /* value = m * 2^(e-150) with the implicit bit in m; half subnormal unit is 2^-24 */
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t half_m = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half_m & 1u))) half_m++;
        return (uint16_t)(sign | half_m);
    }
    uint32_t e = (absx >> 23) - 127 + 15;
    uint32_t m = absx & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13);
    uint32_t rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static inline float edge_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even; NaN stays NaN (quiet). Matches ggml_compute_fp32_to_bf16. */
static inline uint16_t edge_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64);
    return (uint16_t)((x + (0x7fffu + ((x >> 16) & 1u))) >> 16);
}

#endif /* EDGE_COMMON_H */
