/* cuda_ops.h — the CUDA backend's device operations (internal): host-callable launchers over device
 * pointers, each enqueued on `stream` (a cudaStream_t passed as void *, so C files can include this).
 * Each returns EDGE_OK, or an edge_fail status naming the operation and the CUDA error (launch errors are
 * checked with cudaGetLastError after the launch; execution errors surface at the next synchronization).
 *
 * Numerics are the CPU engine's (docs/grok1.md): the same activation quantization before the quantized
 * products (quantize_act.c), fp32 elsewhere; only float summation order differs (state the bound in the
 * tests). Every kernel here is valid for nvcc and for chipStar's clang (no __dp4a, ballot, inline PTX or
 * tensor cores without a portable twin of the same source). */
#ifndef EDGE_CUDA_OPS_H
#define EDGE_CUDA_OPS_H

#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y[t][r] = y_scale * Σ_c W[r][c] x[t][c] for n_tok rows of x (n_cols floats each) and n_rows rows of W (of
 * `type`, row_stride bytes apart, in device memory); y has n_tok rows of n_rows floats. n_tok 1: the
 * decode kernels; larger: the prompt kernels (each weight block read once for several tokens). scratch:
 * device memory of at least edge_cu_matmul_scratch_bytes(type, n_cols, n_tok) (the quantized activations). */
size_t edge_cu_matmul_scratch_bytes(int type, int64_t n_cols, int64_t n_tok);
edge_status edge_cu_matmul(void *stream, int type, const void *w, size_t row_stride, int64_t n_rows, int64_t n_cols,
                           const float *x, int64_t n_tok, float *y, float y_scale, void *scratch, size_t scratch_bytes);
/* Whether edge_cu_matmul has kernels for this weight type. */
int edge_cu_matmul_supports(int type);

/* out[i] = scale ⊙ x[i] / sqrt(mean(x[i]²) + eps) for n_rows rows of n floats (sum of squares in double, as
 * the CPU); out may be x. With add != 0: x[i] += that instead (out ignored): the residual after a sublayer. */
edge_status edge_cu_rmsnorm(void *stream, float *out, float *x, const float *scale, int64_t n_rows, int64_t n,
                            double eps, int add);
/* x[i] += scale ⊙ src[i] / sqrt(mean(src[i]²) + eps) (src another array than x): the residual after a
 * sublayer, x += rms(ob) and x += rms(moe) as grok.c does it (the norm, then the add, both unfused). */
edge_status edge_cu_rmsnorm_add(void *stream, float *x, const float *src, const float *scale, int64_t n_rows, int64_t n,
                                double eps);

/* x[i] = dequantize(table row tokens[i]) * scale: the embedding of n tokens (tokens on the device). */
edge_status edge_cu_embed(void *stream, int type, const void *table, size_t row_stride, const int32_t *tokens,
                          int64_t n, int64_t n_embd, float scale, float *x);

/* Rotate-half RoPE in place on n_tok rows of n_heads heads of head_dim floats (row stride n_heads *
 * head_dim), with each token's cos/sin rows of head_dim / 2 (computed on the host in double, uploaded). */
edge_status edge_cu_rope(void *stream, float *v, int64_t n_tok, int64_t n_heads, int64_t head_dim, const float *cos_,
                         const float *sin_);

/* Append n_tok rows of row_elems floats to a KV cache of kv_type (F32, F16, Q8_0: the CPU's
 * edge_kv_cache_store encoding), rows row_bytes apart starting at dst. */
edge_status edge_cu_kv_store(void *stream, int kv_type, uint8_t *dst, size_t row_bytes, const float *src,
                             int64_t n_tok, int64_t row_elems);

/* Causal attention of n_tok queries at positions n_past .. n_past + n_tok - 1 over the cached rows 0..pos
 * (k, v: the layer's cache, row t at + t * row_bytes, KV head g's slice at + g * head_dim elements), GQA
 * (query head h uses KV head h / (n_head / n_head_kv)). Scores s = q·k * mult, then cap * tanh(s / cap)
 * (cap 0: none), [PAD] keys (is_pad[t] != 0, device) masked when any key 0..pos is not [PAD] (else the
 * softmax covers every causal key), softmax in fp32, out = Σ p v. q and out: n_tok rows of n_head *
 * head_dim. scratch: device memory of edge_cu_attention_scratch_bytes(...). */
size_t edge_cu_attention_scratch_bytes(int64_t n_tok, int64_t n_head, int64_t n_ctx);
edge_status edge_cu_attention(void *stream, int kv_type, const uint8_t *k, const uint8_t *v, size_t row_bytes,
                              const uint8_t *is_pad, const float *q, int64_t n_tok, int64_t n_past, int64_t n_head,
                              int64_t n_head_kv, int64_t head_dim, float mult, float cap, float *out, void *scratch,
                              size_t scratch_bytes);

/* Router: logits [n, n_expert] become softmax probabilities in place (fp32, max subtracted); sel[i][j] and
 * gate[i][j] (j < k) the top-k experts by probability (ties: the lower index) and their probabilities,
 * not renormalized. sel, gate: device arrays of n * k. */
edge_status edge_cu_router_topk(void *stream, float *logits, int64_t n, int64_t n_expert, int64_t k, int32_t *sel,
                                float *gate);

/* h = gelu_tanh(h) ⊙ u over n floats (jax.nn.gelu approximate=True). */
edge_status edge_cu_gelu_mul(void *stream, float *h, const float *u, int64_t n);

/* dst[r] = src[rows[r]] for m rows of d floats (rows: device). */
edge_status edge_cu_gather_rows(void *stream, float *dst, const float *src, const int32_t *rows, int64_t m, int64_t d);
/* dst[rows[r]] += gate[r] * src[r] for r = 0 .. m-1 in order (rows, gate: device); rows may repeat only across
 * calls (one expert's rows are distinct tokens), so the adds of a token happen in call order. */
edge_status edge_cu_scatter_add_gated(void *stream, float *dst, const float *src, const int32_t *rows,
                                      const float *gate, int64_t m, int64_t d);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_CUDA_OPS_H */
