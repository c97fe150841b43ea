/* cuda_backend.h — the CUDA backend's calls for context.c (internal; plain C, no CUDA types). Defined in
 * cuda_backend.cu, present only in builds with EDGE_WITH_CUDA. */
#ifndef EDGE_CUDA_BACKEND_H
#define EDGE_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct edge_model;
struct edge_context;

/* EDGE_OK when a CUDA device is present and has room (gpu_memory and its free memory) for the model's dense
 * weights, KV cache and buffers under these parameters; else an edge_fail status saying why. */
edge_status edge_cuda_backend_usable(const struct edge_model *model, const edge_context_params *params);
/* Copy sequence 0's KV cache and [PAD] flags between the device and the context's host arrays (the state
 * API reads and writes the host ones): to_host 1 before a save, 0 after a load. */
edge_status edge_cuda_backend_sync_kv(struct edge_context *ctx, int to_host);

/* What the context placed on the device (edge.h's edge_context_gpu_info). */
edge_status edge_cuda_backend_info(const struct edge_context *ctx, edge_gpu_info *out);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_CUDA_BACKEND_H */
