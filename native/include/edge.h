/*
 * edge.h — the entire public C surface of grok-edge.
 *
 * Rules (see docs/architecture.md):
 *  - Every function that can fail returns edge_status; results come back through out-pointers.
 *    On failure edge_last_error() returns a message for the calling thread.
 *  - Objects are opaque handles created by the _open / _create functions and released by _close / _free
 *    (NULL is accepted by every release function).
 *  - No global mutable state: everything lives in handles.
 *  - Everything between EDGE_CDEF_BEGIN and EDGE_CDEF_END is read by cffi (edge/_native.py) at
 *    import time: plain C declarations only, no preprocessor lines, no macros except EDGE_API.
 */
#ifndef EDGE_H
#define EDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define EDGE_API __declspec(dllexport)
#else
#define EDGE_API __attribute__((visibility("default")))
#endif

/* EDGE_CDEF_BEGIN */

/* ---------------------------------------------------------------- status and errors */

typedef enum edge_status {
    EDGE_OK = 0,
    EDGE_ERR_INVALID_ARG = 1, /* a bad argument from the caller */
    EDGE_ERR_IO = 2,          /* open/read/mmap/write failed */
    EDGE_ERR_FORMAT = 3,      /* a file is malformed (GGUF, checkpoint) */
    EDGE_ERR_NOMEM = 4,       /* an allocation failed */
    EDGE_ERR_UNSUPPORTED = 5, /* valid but not supported (type, architecture, feature) */
    EDGE_ERR_RANGE = 6,       /* an index or size out of range (token id, context overflow) */
    EDGE_ERR_STATE = 7,       /* call not valid in the object's current state */
    EDGE_ERR_INTERNAL = 8,
    EDGE_ERR_CANCELLED = 9    /* the call was stopped by edge_context_set_cancel */
} edge_status;

/* Message of the last failed call on this thread ("" if none). Valid until the next failing call. */
EDGE_API const char *edge_last_error(void);
EDGE_API const char *edge_status_name(edge_status status);
EDGE_API const char *edge_version(void);

/* ---------------------------------------------------------------- system */

typedef struct edge_cpu_features {
    int x86_64, aarch64;
    int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512vnni; /* x86-64 */
    int neon, dotprod;                                            /* arm64 */
    int n_cores;                                                  /* online logical CPUs */
} edge_cpu_features;

/* Features of the CPU this process runs on, detected at run time (cpuid / hwcaps). */
EDGE_API edge_status edge_cpu_detect(edge_cpu_features *out);

/* CUDA: whether the library was built with CUDA, and how many devices the driver reports.
 * Built without CUDA, or no driver/device: *n_devices = 0 and EDGE_OK. */
EDGE_API int edge_cuda_compiled(void);
EDGE_API edge_status edge_cuda_device_count(int *n_devices);
/* CUDA device i (0 .. n_devices-1): its name, total and free memory, compute capability. */
typedef struct edge_cuda_device_info {
    char name[256];
    uint64_t total_bytes, free_bytes;
    int cc_major, cc_minor;
} edge_cuda_device_info;
EDGE_API edge_status edge_cuda_device_info_get(int device, edge_cuda_device_info *out);
/* One matrix x vector product on the first CUDA device, for tests: y[r] = sum_c W[r][c] * x[c] (host arrays;
 * W as edge_matmul takes it). Activations are quantized as the CPU engine does. EDGE_ERR_UNSUPPORTED with a
 * message when the library has no CUDA, no device is found, or the type has no CUDA kernel (kernels: F32, F16,
 * BF16, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS). */
EDGE_API edge_status edge_cuda_matvec(int type, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                                      float *y);

/* ---------------------------------------------------------------- tensor types (ggml numbering) */

typedef enum edge_type {
    EDGE_TYPE_F32 = 0,
    EDGE_TYPE_F16 = 1,
    EDGE_TYPE_Q4_0 = 2,
    EDGE_TYPE_Q4_1 = 3,
    EDGE_TYPE_Q5_0 = 6,
    EDGE_TYPE_Q5_1 = 7,
    EDGE_TYPE_Q8_0 = 8,
    EDGE_TYPE_Q8_1 = 9,
    EDGE_TYPE_Q2_K = 10,
    EDGE_TYPE_Q3_K = 11,
    EDGE_TYPE_Q4_K = 12,
    EDGE_TYPE_Q5_K = 13,
    EDGE_TYPE_Q6_K = 14,
    EDGE_TYPE_Q8_K = 15,
    EDGE_TYPE_IQ4_NL = 20,
    EDGE_TYPE_IQ4_XS = 23,
    EDGE_TYPE_I8 = 24,
    EDGE_TYPE_I16 = 25,
    EDGE_TYPE_I32 = 26,
    EDGE_TYPE_I64 = 27,
    EDGE_TYPE_F64 = 28,
    EDGE_TYPE_BF16 = 30
} edge_type;

/* Elements per block and bytes per block of a type; EDGE_ERR_UNSUPPORTED for unknown types. */
EDGE_API edge_status edge_type_info(int type, int64_t *block_elems, int64_t *block_bytes, const char **name);
/* Bytes of one row of n elements (n must be a multiple of the block size). */
EDGE_API edge_status edge_row_bytes(int type, int64_t n, int64_t *out);

/* ---------------------------------------------------------------- GGUF reader (section: gguf) */
/* A GGUF file (v2 or v3), memory-mapped read-only and validated at open: every count, length,
 * type, dimension, size, offset and alignment is checked against the file size with overflow-safe
 * arithmetic, so no accessor below can read outside the mapping. Strings in GGUF are not
 * NUL-terminated: they come back as pointer + length into the mapping. */
typedef struct edge_gguf edge_gguf;

typedef enum edge_gguf_value_type {
    EDGE_GGUF_UINT8 = 0, EDGE_GGUF_INT8 = 1, EDGE_GGUF_UINT16 = 2, EDGE_GGUF_INT16 = 3,
    EDGE_GGUF_UINT32 = 4, EDGE_GGUF_INT32 = 5, EDGE_GGUF_FLOAT32 = 6, EDGE_GGUF_BOOL = 7,
    EDGE_GGUF_STRING = 8, EDGE_GGUF_ARRAY = 9, EDGE_GGUF_UINT64 = 10, EDGE_GGUF_INT64 = 11,
    EDGE_GGUF_FLOAT64 = 12
} edge_gguf_value_type;

typedef struct edge_gguf_tensor_info {
    const char *name;     /* not NUL-terminated */
    uint64_t name_len;
    int type;             /* edge_type (ggml numbering) */
    int n_dims;           /* 1..4 */
    int64_t ne[4];        /* ggml order: ne[0] is the contiguous (row) dimension; unused dims are 1 */
    uint64_t offset;      /* from the start of the data section */
    uint64_t nbytes;
    const void *data;     /* into the mapping */
} edge_gguf_tensor_info;

/* Errors: EDGE_ERR_IO (open/stat/mmap), EDGE_ERR_FORMAT ("<path>: <problem> (at byte N)"), EDGE_ERR_NOMEM. */
EDGE_API edge_status edge_gguf_open(const char *path, edge_gguf **out);
EDGE_API void edge_gguf_close(edge_gguf *gguf);
EDGE_API edge_status edge_gguf_header(const edge_gguf *gguf, uint32_t *version, int64_t *n_kv, int64_t *n_tensors,
                                      uint64_t *alignment, uint64_t *data_offset, uint64_t *file_size);
/* Metadata entry i: key, value type, and for arrays the element type and length (scalars: elem_type = -1,
 * n = 1). For scalars and numeric arrays *data points at the raw little-endian value(s) in the mapping
 * (possibly unaligned); for a string it points at its bytes, for a string array it is NULL: use
 * edge_gguf_kv_string. Nested arrays (arrays of arrays) are rejected at open. Any output may be NULL. */
EDGE_API edge_status edge_gguf_kv(const edge_gguf *gguf, int64_t i, const char **key, uint64_t *key_len, int *type,
                                  int *elem_type, uint64_t *n, const void **data);
/* The string value of entry i (j = 0), or element j of a string array (O(1): indexed at open).
 * EDGE_ERR_RANGE for j past the end, EDGE_ERR_INVALID_ARG when entry i holds no strings. */
EDGE_API edge_status edge_gguf_kv_string(const edge_gguf *gguf, int64_t i, uint64_t j, const char **s, uint64_t *len);
/* Index of a key or tensor name; *index = -1 when absent (not an error). */
EDGE_API edge_status edge_gguf_find_key(const edge_gguf *gguf, const char *key, int64_t *index);
EDGE_API edge_status edge_gguf_find_tensor(const edge_gguf *gguf, const char *name, int64_t *index);
/* Typed getters by key, converting between integer/bool types (range-checked) and to double;
 * a missing key or a wrong type is EDGE_ERR_FORMAT naming the file and the key. */
EDGE_API edge_status edge_gguf_get_int(const edge_gguf *gguf, const char *key, int64_t *out);
EDGE_API edge_status edge_gguf_get_float(const edge_gguf *gguf, const char *key, double *out);
EDGE_API edge_status edge_gguf_get_str(const edge_gguf *gguf, const char *key, const char **s, uint64_t *len);
/* Tensor i (EDGE_ERR_RANGE outside 0..n_tensors-1); its data lies inside the file and is aligned to the
 * file's alignment (from the start of the mapping). */
EDGE_API edge_status edge_gguf_tensor(const edge_gguf *gguf, int64_t i, edge_gguf_tensor_info *out);
EDGE_API const char *edge_gguf_path(const edge_gguf *gguf);

/* ---------------------------------------------------------------- quantization (section: quant) */
/* Quantize n_rows rows of n_per_row floats into `type` (ggml byte layout), rows split over n_threads
 * threads (0: all cores); the bytes do not depend on n_threads. dst_size must be at least
 * n_rows * row_bytes(type, n_per_row). Targets: F32, F16, BF16 (plain round-to-nearest-even
 * conversions), Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS (llama.cpp's
 * algorithms: without an imatrix the bytes equal llama.cpp's, IQ4_* aside, whose final indices are
 * fitted to the stored scale). imatrix, if not NULL, holds n_per_row finite importance weights >= 0
 * (as llama.cpp's --imatrix), used by the types llama.cpp uses it for (all above but F32/F16/BF16/Q8_0).
 * Quantized targets reject inf/NaN input (EDGE_ERR_INVALID_ARG naming the row). */
EDGE_API edge_status edge_quantize(int type, const float *src, int64_t n_rows, int64_t n_per_row, void *dst,
                                   uint64_t dst_size, const float *imatrix, int n_threads);
/* Dequantize n elements (a multiple of the block size) of `type` to floats (every target above). */
EDGE_API edge_status edge_dequantize(int type, const void *src, int64_t n, float *dst);

/* ---------------------------------------------------------------- kernels (section: kernels) */
/* CPU kernel paths. AUTO picks the best one this CPU supports; tests force each path in turn. */
typedef enum edge_isa {
    EDGE_ISA_AUTO = -1, EDGE_ISA_SCALAR = 0, EDGE_ISA_AVX2 = 1, EDGE_ISA_AVX512 = 2, EDGE_ISA_NEON = 3,
    EDGE_ISA_NEON_DOTPROD = 4 /* arm64: NEON = plain ARMv8.0 Advanced SIMD; NEON_DOTPROD = with sdot (ARMv8.2) */
} edge_isa;

/* Whether a path is compiled in and runs on this CPU. */
EDGE_API edge_status edge_isa_supported(int isa, int *supported);

/* A persistent pool of worker threads (the caller's thread is worker 0). It detects the CPU's features
 * once, at creation, for the calls given it. */
typedef struct edge_threadpool edge_threadpool;
EDGE_API edge_status edge_threadpool_create(int n_threads, edge_threadpool **out);
EDGE_API void edge_threadpool_free(edge_threadpool *pool);

/* y[t*n_rows + r] = sum_c W[r][c] * x[t*n_cols + c] for t < n_tok, r < n_rows, with W stored as
 * n_rows rows of n_cols elements in `type` (GGUF layout, rows contiguous). Activations are quantized
 * on the fly where the path does so. For tests and tools: allocates its own scratch. The path is
 * chosen from the pool's CPU features (without a pool, detected in the call). */
EDGE_API edge_status edge_matmul(edge_threadpool *pool, int isa, int type, const void *w, int64_t n_rows,
                                 int64_t n_cols, const float *x, int64_t n_tok, float *y);

/* ---------------------------------------------------------------- model and inference (section: engine) */
/* A model: the weights of a GGUF file (architecture "grok"), mapped, validated, zero copy.
 * Load fails with EDGE_ERR_UNSUPPORTED for another architecture or a weight type the kernels cannot
 * multiply, EDGE_ERR_FORMAT naming the file and tensor for a missing tensor or a shape that contradicts
 * the metadata. grok.embedding_scale / output_scale (or logit_scale) / attention.output_multiplier (or
 * output_scale) / attn_logit_softcapping default to Grok-1's values when absent (llama.cpp's files). */
typedef struct edge_model edge_model;
/* A context: KV cache, activation buffers and a thread pool for one sequence. */
typedef struct edge_context edge_context;

typedef struct edge_model_hparams {
    int64_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_expert, n_expert_used, n_ctx_train;
    double rope_freq_base, rms_eps;
    double embedding_scale, output_scale, attn_output_multiplier, attn_logit_softcap;
} edge_model_hparams;

typedef struct edge_context_params {
    int64_t n_ctx;   /* KV cache capacity in tokens (<= n_ctx_train) */
    int64_t n_batch; /* tokens per forward chunk in prompt processing */
    int n_threads;   /* 0: one per core this process may use (affinity mask), fewer where a decoded token's
                      * weights are too few to split (16 MiB a thread: the shipped demo model gets one);
                      * edge_context_n_threads tells */
    int kv_type;     /* EDGE_TYPE_F16 (default), EDGE_TYPE_Q8_0, or EDGE_TYPE_F32 (exact, 2x F16's memory) */
    int isa;         /* edge_isa; EDGE_ISA_AUTO by default */
    int n_seq;       /* KV cache slots (independent sequences) for edge_batch_eval; 0 or 1: one */
    int device;      /* edge_device: where the forward pass runs (EDGE_DEVICE_AUTO by default) */
    uint64_t gpu_memory; /* CUDA: device bytes the context may use (dense weights, KV cache, buffers, then as
                          * many experts as fit); 0: all free device memory less a 512 MiB margin */
} edge_context_params;

typedef enum edge_device {
    EDGE_DEVICE_AUTO = 0, /* a usable CUDA device (a CUDA build, a device with room for the dense part), else CPU */
    EDGE_DEVICE_CPU = 1,
    EDGE_DEVICE_CUDA = 2  /* EDGE_ERR_UNSUPPORTED / EDGE_ERR_NOMEM naming why when there is none */
} edge_device;

EDGE_API edge_status edge_model_load(const char *path, edge_model **out);
EDGE_API void edge_model_free(edge_model *model);
EDGE_API edge_status edge_model_get_hparams(const edge_model *model, edge_model_hparams *out);

EDGE_API edge_status edge_context_default_params(edge_context_params *out);
EDGE_API edge_status edge_context_create(edge_model *model, const edge_context_params *params, edge_context **out);
EDGE_API void edge_context_free(edge_context *ctx);
/* Run n tokens at positions n_past .. n_past+n-1, appending them to the KV cache. logits, if not NULL,
 * receives [n, n_vocab] floats when all_logits is nonzero, else [1, n_vocab] for the last token.
 * EDGE_ERR_RANGE (nothing evaluated) for a token id outside 0..n_vocab-1 or n_past + n > n_ctx.
 * Token 0 ([PAD]) is masked as a key but routed to its experts like any token, as the official model does. */
EDGE_API edge_status edge_context_eval(edge_context *ctx, const int32_t *tokens, int64_t n, float *logits,
                                       int all_logits);
EDGE_API edge_status edge_context_n_past(const edge_context *ctx, int64_t *out);
/* Cancellation: cancel = 1 asks an edge_context_eval running on another thread (or the next one) to stop;
 * it checks the flag before every layer of the forward pass and returns EDGE_ERR_CANCELLED, with n_past as
 * before the call (like any failed eval). The flag stays set until cleared with cancel = 0. Callable from
 * any thread while the context is alive (never concurrently with or after edge_context_free). */
EDGE_API edge_status edge_context_set_cancel(edge_context *ctx, int cancel);
/* The threads the context's forward pass runs on (the caller's included). */
EDGE_API edge_status edge_context_n_threads(const edge_context *ctx, int *out);
/* Where the context's forward pass runs: EDGE_DEVICE_CPU or EDGE_DEVICE_CUDA (AUTO resolved at creation). */
EDGE_API edge_status edge_context_device(const edge_context *ctx, int *out);
/* What a CUDA context placed in device memory (all zero for a CPU context): the dense weights, the KV
 * caches, the run state's buffers and scratch; the VRAM expert tier's slots (one expert of one layer each)
 * against the model's units (n_layer * n_expert); the host-to-device bandwidth measured at creation; where
 * some experts stay off the device, the CPU's measured seconds for one expert on one row and for each
 * further row (the prompt cost model's other side; 0 when not measured). */
typedef struct edge_gpu_info {
    uint64_t dense_bytes, kv_bytes, state_bytes, slot_bytes;
    int64_t n_slots, n_units;
    double pcie_bytes_per_s;
    double cpu_expert_s, cpu_expert_s_per_row;
} edge_gpu_info;
EDGE_API edge_status edge_context_gpu_info(const edge_context *ctx, edge_gpu_info *out);
/* Forget every position >= n_past (n_past <= current), e.g. to reuse a shared prompt prefix. */
EDGE_API edge_status edge_context_truncate(edge_context *ctx, int64_t n_past);
/* KV cache save/restore for prompt reuse: size, then a copy out or in (positions 0..n_past-1; loading
 * checks the model shape and KV type and sets n_past). */
EDGE_API edge_status edge_context_state_size(const edge_context *ctx, uint64_t *nbytes);
EDGE_API edge_status edge_context_state_save(const edge_context *ctx, void *dst, uint64_t nbytes);
EDGE_API edge_status edge_context_state_load(edge_context *ctx, const void *src, uint64_t nbytes);

/* ---------------------------------------------------------------- batched sequences (section: batch) */
/* A context created with params.n_seq = S holds S KV cache slots (sequences 0..S-1), each n_ctx tokens,
 * sharing the context's weights, thread pool and buffers. Sequence 0 is the one edge_context_eval,
 * _n_past, _truncate and _state_* act on.
 *
 * edge_batch_eval runs n tokens of several sequences in one forward pass: token i is appended to sequence
 * seq_ids[i] at that sequence's next position. The tokens of one sequence must be adjacent and in order
 * (at most one run per sequence id). Every matrix product (q/k/v/o, router, the selected experts, the
 * output) runs once over all n tokens, so a layer's weights, a selected expert's included, are read once
 * per pass for the whole batch; attention runs per sequence over its own cache. want, if not NULL, marks
 * the tokens whose logits are wanted (NULL: every token); logits, if not NULL, receives one row of n_vocab
 * floats per wanted token, in batch order. Passes hold at most n_batch tokens (longer batches are split).
 * Batch invariance: a token's logits are bit for bit those it gets when its sequence is evaluated alone
 * (edge_context_eval on a one-sequence context with the same tokens), as every kernel computes a token's
 * sums independently of the other tokens in its product (tested).
 * EDGE_ERR_INVALID_ARG for a sequence id outside 0..S-1 or a sequence in two runs; EDGE_ERR_RANGE for a
 * token id outside the vocabulary or a sequence that would overflow n_ctx (nothing evaluated). */
EDGE_API edge_status edge_batch_eval(edge_context *ctx, const int32_t *seq_ids, const int32_t *tokens, int64_t n,
                                     const uint8_t *want, float *logits);
/* Sequence slots of a context, and the cached length of one. */
EDGE_API edge_status edge_context_n_seq(const edge_context *ctx, int *out);
EDGE_API edge_status edge_seq_n_past(const edge_context *ctx, int seq, int64_t *out);
/* Forget every position >= n_past of sequence seq (n_past <= its current length; 0 frees the slot). */
EDGE_API edge_status edge_seq_truncate(edge_context *ctx, int seq, int64_t n_past);

/* ---------------------------------------------------------------- expert store (section: experts) */
/* Where the experts' weights live. A unit is one expert of one layer (its gate, up and down matrices); by
 * default every unit is read through the model's mapping. With a budget, units are read from the file
 * into a RAM cache of equal slots (4 KiB-aligned preads by I/O threads, O_DIRECT where the file system
 * allows it), kept by a policy, and optionally prefetched: after layer l's attention, layer l+1's router
 * on the hidden state predicts its experts and their reads start while layer l computes. The logits are
 * the same bits with any budget, policy or prefetch setting. All contexts of a model share its cache. */
typedef enum edge_expert_policy_kind {
    EDGE_EXPERT_POLICY_LRU = 0,      /* least recently used goes first */
    EDGE_EXPERT_POLICY_LFU_DECAY = 1 /* lowest use count, each use's weight halving every half_life_tokens */
} edge_expert_policy_kind;

typedef struct edge_expert_cache_params {
    uint64_t budget_bytes;   /* RAM for expert copies; 0: no cache, read through the mapping (default) */
    int policy;              /* edge_expert_policy_kind (default LFU_DECAY) */
    int prefetch;            /* nonzero: router-driven prefetch (default 1) */
    int io_threads;          /* reader threads, 1..64 (default 4) */
    int direct_io;           /* nonzero: O_DIRECT where possible (default 1); else buffered reads, dropped from
                                the page cache after each read */
    double half_life_tokens; /* LFU_DECAY's half-life in tokens (default 8) */
} edge_expert_cache_params;

typedef struct edge_expert_cache_stats {
    uint64_t budget_bytes, slot_bytes; /* slot_bytes: one slot, the largest unit's aligned spans */
    int64_t n_slots;                   /* 0: no cache */
    uint64_t tokens;                   /* tokens evaluated */
    uint64_t hits, misses;             /* demand requests of units: in the cache (or on the way), or read then */
    uint64_t prefetch_hits;            /* hits on units a prefetch brought in */
    uint64_t prefetches;               /* units a prefetch started reading */
    uint64_t loads;                    /* units read (misses + prefetches) */
    uint64_t bytes_read;               /* bytes the reads returned */
    uint64_t predicted, predicted_correct; /* predicted (token, layer) experts, and those the router then chose */
    double stall_seconds;              /* time the engine waited for units */
    /* the VRAM tier of contexts with device = CUDA (zero otherwise) */
    uint64_t vram_hits, vram_misses;   /* selected experts resident in VRAM, or not */
    uint64_t experts_gpu, experts_cpu; /* selected experts computed on the GPU, on the CPU (hybrid) */
    uint64_t vram_loads;               /* experts uploaded into VRAM slots (prefetch, prompt streaming) */
    uint64_t vram_bytes_uploaded;
} edge_expert_cache_stats;

EDGE_API edge_status edge_expert_cache_default_params(edge_expert_cache_params *out);
/* The smallest budget edge_model_set_expert_cache accepts: one layer's selected experts (n_expert_used
 * slots) plus, with prefetch, as many prefetch slots. */
EDGE_API edge_status edge_model_expert_cache_min_bytes(const edge_model *model, int prefetch, uint64_t *out);
/* Set up (or, with budget 0, remove) the expert cache. Not while a context of this model is evaluating.
 * EDGE_ERR_INVALID_ARG naming the minimum when the budget is below it; EDGE_ERR_IO if the file cannot be
 * opened or changed since the model was loaded. Resets the statistics. */
EDGE_API edge_status edge_model_set_expert_cache(edge_model *model, const edge_expert_cache_params *params);
/* The counters once the reads in flight have finished (so bytes_read covers every load counted). */
EDGE_API edge_status edge_model_expert_cache_stats(const edge_model *model, edge_expert_cache_stats *out);
EDGE_API edge_status edge_model_expert_cache_reset_stats(edge_model *model);
/* Bytes one unit reads from the file: its three matrices' 4 KiB-aligned spans (clipped at the end of the file). */
EDGE_API edge_status edge_model_expert_unit_bytes(const edge_model *model, int64_t layer, int64_t expert,
                                                  uint64_t *out);
/* Write the routing of every token evaluated from now on to a file of JSON lines (NULL: stop and close):
 * a header {"model", "n_layer", "n_expert", "n_expert_used", "unit_bytes": [layer * n_expert + expert]},
 * then per token and layer {"batch", "n", "pos", "layer", "experts", "gates"[, "predicted"]} (batch: the
 * forward chunk, counted from 1, of n tokens; predicted: the prefetch's guess, from layer 1 on). */
EDGE_API edge_status edge_model_trace_experts(edge_model *model, const char *path);

/* EDGE_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* EDGE_H */
