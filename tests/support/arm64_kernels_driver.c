/* arm64_kernels_driver.c — every arm64 kernel path x every weight type against the scalar path, through
 * edge.h only (edge_matmul with a forced ISA). Cross-built for aarch64 and run under qemu-aarch64 by
 * tests/test_arm64.py, once on a CPU model with dotprod (-cpu max) and once without (-cpu cortex-a57).
 *
 * Usage: arm64_kernels_driver EXPECT_DOTPROD (0 or 1). Checks that edge_isa_supported reports "neon" and, as
 * EXPECT_DOTPROD says, "neon_dotprod"; then for every path supported, every type, the shapes and token counts
 * of tests/test_kernels.py: |path - scalar| <= 4 (n_terms + 16) u Σ|w||x| per output (n_terms = n_cols for
 * float weights, n_cols / 16 for quantized ones: the tolerance of the x86 SIMD-vs-scalar test), and a token
 * computed in a batch gives the same bits as alone. Prints one line per (path, type), "ok" at the end, and
 * exits 0; or prints each failure and exits 1. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double uniform(void) { return (double)(next_u64() >> 11) * 0x1p-53; }
static double normal(void) { return sqrt(-2.0 * log(1.0 - uniform())) * cos(6.283185307179586 * uniform()); }
/* Student's t with 3 degrees of freedom (heavy tails, as the Python tests draw). */
static float heavy(void) {
    double chi2 = 0.0;
    for (int k = 0; k < 3; k++) {
        const double z = normal();
        chi2 += z * z;
    }
    return (float)(normal() / sqrt(chi2 / 3.0 + 1e-12));
}

/* binary16 bits of x (round to nearest even), for the scale fields. */
static uint16_t to_f16(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    const uint32_t sign = (b >> 16) & 0x8000u;
    int e = (int)((b >> 23) & 0xff) - 127 + 15;
    uint32_t m = b & 0x7fffffu;
    if (e <= 0) return (uint16_t)sign; /* the scales drawn here are never this small */
    if (e >= 31) return (uint16_t)(sign | 0x7bffu);
    uint32_t h = ((uint32_t)e << 10) | (m >> 13);
    const uint32_t rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

typedef struct {
    int type;
    const char *name;
    int f16_fields[2]; /* byte offsets of the f16 scale fields in a block; -1: none */
} type_case;

static const type_case TYPES[] = {
    {EDGE_TYPE_F32, "F32", {-1, -1}},      {EDGE_TYPE_F16, "F16", {-1, -1}},     {EDGE_TYPE_BF16, "BF16", {-1, -1}},
    {EDGE_TYPE_Q8_0, "Q8_0", {0, -1}},     {EDGE_TYPE_Q4_0, "Q4_0", {0, -1}},    {EDGE_TYPE_Q4_1, "Q4_1", {0, 2}},
    {EDGE_TYPE_Q5_0, "Q5_0", {0, -1}},     {EDGE_TYPE_Q5_1, "Q5_1", {0, 2}},     {EDGE_TYPE_Q2_K, "Q2_K", {80, 82}},
    {EDGE_TYPE_Q3_K, "Q3_K", {108, -1}},   {EDGE_TYPE_Q4_K, "Q4_K", {0, 2}},     {EDGE_TYPE_Q5_K, "Q5_K", {0, 2}},
    {EDGE_TYPE_Q6_K, "Q6_K", {208, -1}},   {EDGE_TYPE_IQ4_NL, "IQ4_NL", {0, -1}}, {EDGE_TYPE_IQ4_XS, "IQ4_XS", {0, -1}},
};
static const int N_TOK[] = {1, 2, 3, 4, 5, 6, 7, 8, 17, 37};

/* n_rows rows of random GGUF bytes (quantized: random bytes, the f16 scales set to sane random values). */
static void random_weights(const type_case *tc, int64_t block_elems, int64_t block_bytes, int64_t n_rows,
                           int64_t n_cols, uint8_t *w) {
    const int64_t n = n_rows * n_cols;
    if (tc->type == EDGE_TYPE_F32 || tc->type == EDGE_TYPE_F16 || tc->type == EDGE_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            const float v = heavy();
            if (tc->type == EDGE_TYPE_F32) {
                memcpy(w + 4 * i, &v, 4);
            } else if (tc->type == EDGE_TYPE_F16) {
                const uint16_t h = to_f16(v);
                memcpy(w + 2 * i, &h, 2);
            } else {
                uint32_t b;
                memcpy(&b, &v, 4);
                const uint16_t h = (uint16_t)(b >> 16);
                memcpy(w + 2 * i, &h, 2);
            }
        }
        return;
    }
    const int64_t n_blocks = n / block_elems;
    for (int64_t i = 0; i < n_blocks * block_bytes; i++) w[i] = (uint8_t)next_u64();
    for (int64_t b = 0; b < n_blocks; b++)
        for (int f = 0; f < 2; f++) {
            if (tc->f16_fields[f] < 0) continue;
            const float scale = (float)(exp(log(0.01) + normal()) * (uniform() < 0.5 ? -1.0 : 1.0));
            const uint16_t h = to_f16(scale);
            memcpy(w + b * block_bytes + tc->f16_fields[f], &h, 2);
        }
}

static int check(edge_status st, const char *what) {
    if (st == EDGE_OK) return 1;
    printf("FAIL %s: %s: %s\n", what, edge_status_name(st), edge_last_error());
    return 0;
}

/* One (path, type): every shape and token count. Returns the number of failures. */
static int run_case(int isa, const char *isa_name, const type_case *tc, double *worst) {
    int64_t be, bb;
    const char *tn;
    if (!check(edge_type_info(tc->type, &be, &bb, &tn), "edge_type_info")) return 1;
    const int is_float = tc->type == EDGE_TYPE_F32 || tc->type == EDGE_TYPE_F16 || tc->type == EDGE_TYPE_BF16;
    int64_t shapes[4][2] = {{7, 256}, {33, 512}, {5, 2048}, {3, 37}};
    if (be == 32) shapes[0][1] = 96;
    const int n_shapes = is_float ? 4 : 3;
    int failures = 0;
    for (int s = 0; s < n_shapes; s++) {
        const int64_t n_rows = shapes[s][0], n_cols = shapes[s][1];
        int64_t row_bytes;
        if (!check(edge_row_bytes(tc->type, n_cols, &row_bytes), "edge_row_bytes")) return failures + 1;
        uint8_t *w = malloc((size_t)(n_rows * row_bytes));
        float *wf = malloc((size_t)(n_rows * n_cols) * sizeof(float));
        random_weights(tc, be, bb, n_rows, n_cols, w);
        if (!check(edge_dequantize(tc->type, w, n_rows * n_cols, wf), "edge_dequantize")) return failures + 1;
        for (size_t k = 0; k < sizeof N_TOK / sizeof N_TOK[0]; k++) {
            const int64_t n_tok = N_TOK[k];
            float *x = malloc((size_t)(n_tok * n_cols) * sizeof(float));
            float *y = malloc((size_t)(n_tok * n_rows) * sizeof(float));
            float *y_ref = malloc((size_t)(n_tok * n_rows) * sizeof(float));
            float *y_one = malloc((size_t)n_rows * sizeof(float));
            for (int64_t i = 0; i < n_tok * n_cols; i++) x[i] = heavy();
            if (!check(edge_matmul(NULL, isa, tc->type, w, n_rows, n_cols, x, n_tok, y), isa_name) ||
                !check(edge_matmul(NULL, EDGE_ISA_SCALAR, tc->type, w, n_rows, n_cols, x, n_tok, y_ref), "scalar")) {
                failures++;
            } else {
                const double n_terms = is_float ? (double)n_cols : (double)n_cols / 16.0;
                for (int64_t t = 0; t < n_tok; t++)
                    for (int64_t r = 0; r < n_rows; r++) {
                        double mag = 0.0;
                        for (int64_t c = 0; c < n_cols; c++)
                            mag += fabs((double)x[t * n_cols + c]) * fabs((double)wf[r * n_cols + c]);
                        const double tol = 4.0 * (n_terms + 16.0) * 0x1p-24 * mag;
                        const double diff = fabs((double)y[t * n_rows + r] - (double)y_ref[t * n_rows + r]);
                        if (tol > 0 && diff / tol > *worst) *worst = diff / tol;
                        if (!(diff <= tol)) {
                            if (failures < 8)
                                printf("FAIL %s %s %lldx%lld n_tok=%lld token %lld row %lld: %.9g vs scalar %.9g "
                                       "(diff %.3g > tol %.3g)\n",
                                       isa_name, tc->name, (long long)n_rows, (long long)n_cols, (long long)n_tok,
                                       (long long)t, (long long)r, (double)y[t * n_rows + r],
                                       (double)y_ref[t * n_rows + r], diff, tol);
                            failures++;
                        }
                    }
                /* a token's result does not depend on the batch it is in */
                for (int64_t t = 0; t < n_tok && n_tok > 1; t += n_tok - 1) {
                    if (!check(edge_matmul(NULL, isa, tc->type, w, n_rows, n_cols, x + t * n_cols, 1, y_one), isa_name))
                        failures++;
                    else if (memcmp(y_one, y + t * n_rows, (size_t)n_rows * sizeof(float)) != 0) {
                        printf("FAIL %s %s %lldx%lld: token %lld of %lld differs from the token alone\n", isa_name,
                               tc->name, (long long)n_rows, (long long)n_cols, (long long)t, (long long)n_tok);
                        failures++;
                    }
                }
            }
            free(x);
            free(y);
            free(y_ref);
            free(y_one);
        }
        free(w);
        free(wf);
    }
    return failures;
}

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "0") != 0 && strcmp(argv[1], "1") != 0)) {
        fprintf(stderr, "usage: %s EXPECT_DOTPROD (0 or 1)\n", argv[0]);
        return 2;
    }
    const int expect_dotprod = argv[1][0] == '1';
    edge_cpu_features cpu;
    int neon = 0, dotprod = 0, failures = 0;
    if (!check(edge_cpu_detect(&cpu), "edge_cpu_detect") || !check(edge_isa_supported(EDGE_ISA_NEON, &neon), "neon") ||
        !check(edge_isa_supported(EDGE_ISA_NEON_DOTPROD, &dotprod), "neon_dotprod"))
        return 1;
    printf("cpu: aarch64 %d neon %d dotprod %d; paths: neon %d neon_dotprod %d\n", cpu.aarch64, cpu.neon, cpu.dotprod,
           neon, dotprod);
    if (!cpu.aarch64 || !neon || dotprod != expect_dotprod) {
        printf("FAIL: expected an aarch64 CPU with the neon path and neon_dotprod %d\n", expect_dotprod);
        return 1;
    }
    const struct {
        int isa;
        const char *name;
    } paths[] = {{EDGE_ISA_NEON, "neon"}, {EDGE_ISA_NEON_DOTPROD, "neon_dotprod"}};
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        if (paths[p].isa == EDGE_ISA_NEON_DOTPROD && !dotprod) continue;
        for (size_t k = 0; k < sizeof TYPES / sizeof TYPES[0]; k++) {
            double worst = 0.0;
            const int f = run_case(paths[p].isa, paths[p].name, &TYPES[k], &worst);
            printf("%s %s: %s (worst diff / tol %.3g)\n", paths[p].name, TYPES[k].name, f ? "FAILED" : "ok", worst);
            failures += f;
        }
    }
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
