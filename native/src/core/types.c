/* types.c — the table of tensor types (ggml numbering) and row sizes. */
#include "blocks.h"
#include "common.h"

static const edge_type_traits k_traits[] = {
    [EDGE_TYPE_F32] = {1, 4, "F32"},
    [EDGE_TYPE_F16] = {1, 2, "F16"},
    [EDGE_TYPE_Q4_0] = {QK4_0, sizeof(block_q4_0), "Q4_0"},
    [EDGE_TYPE_Q4_1] = {QK4_1, sizeof(block_q4_1), "Q4_1"},
    [EDGE_TYPE_Q5_0] = {QK5_0, sizeof(block_q5_0), "Q5_0"},
    [EDGE_TYPE_Q5_1] = {QK5_1, sizeof(block_q5_1), "Q5_1"},
    [EDGE_TYPE_Q8_0] = {QK8_0, sizeof(block_q8_0), "Q8_0"},
    [EDGE_TYPE_Q8_1] = {QK8_1, sizeof(block_q8_1), "Q8_1"},
    [EDGE_TYPE_Q2_K] = {QK_K, sizeof(block_q2_K), "Q2_K"},
    [EDGE_TYPE_Q3_K] = {QK_K, sizeof(block_q3_K), "Q3_K"},
    [EDGE_TYPE_Q4_K] = {QK_K, sizeof(block_q4_K), "Q4_K"},
    [EDGE_TYPE_Q5_K] = {QK_K, sizeof(block_q5_K), "Q5_K"},
    [EDGE_TYPE_Q6_K] = {QK_K, sizeof(block_q6_K), "Q6_K"},
    [EDGE_TYPE_Q8_K] = {QK_K, sizeof(block_q8_K), "Q8_K"},
    [EDGE_TYPE_IQ4_NL] = {QK4_NL, sizeof(block_iq4_nl), "IQ4_NL"},
    [EDGE_TYPE_IQ4_XS] = {QK_K, sizeof(block_iq4_xs), "IQ4_XS"},
    [EDGE_TYPE_I8] = {1, 1, "I8"},
    [EDGE_TYPE_I16] = {1, 2, "I16"},
    [EDGE_TYPE_I32] = {1, 4, "I32"},
    [EDGE_TYPE_I64] = {1, 8, "I64"},
    [EDGE_TYPE_F64] = {1, 8, "F64"},
    [EDGE_TYPE_BF16] = {1, 2, "BF16"},
};

const edge_type_traits *edge_type_traits_get(int type) {
    if (type < 0 || (size_t)type >= sizeof(k_traits) / sizeof(k_traits[0])) return NULL;
    if (k_traits[type].block_elems == 0) return NULL;
    return &k_traits[type];
}

EDGE_API edge_status edge_type_info(int type, int64_t *block_elems, int64_t *block_bytes, const char **name) {
    const edge_type_traits *t = edge_type_traits_get(type);
    if (!t) return edge_fail(EDGE_ERR_UNSUPPORTED, "unknown tensor type %d", type);
    if (block_elems) *block_elems = t->block_elems;
    if (block_bytes) *block_bytes = t->block_bytes;
    if (name) *name = t->name;
    return EDGE_OK;
}

EDGE_API edge_status edge_row_bytes(int type, int64_t n, int64_t *out) {
    const edge_type_traits *t = edge_type_traits_get(type);
    if (!t) return edge_fail(EDGE_ERR_UNSUPPORTED, "unknown tensor type %d", type);
    if (n < 0 || n % t->block_elems != 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "row of %lld elements is not a multiple of %s's block size %lld",
                         (long long)n, t->name, (long long)t->block_elems);
    uint64_t bytes;
    if (!edge_mul_u64((uint64_t)(n / t->block_elems), (uint64_t)t->block_bytes, &bytes) || bytes > INT64_MAX)
        return edge_fail(EDGE_ERR_RANGE, "row size overflows");
    *out = (int64_t)bytes;
    return EDGE_OK;
}
