/* device.h — choosing a context's backend from params.device and gpu_memory (device.c; internal). */
#ifndef EDGE_DEVICE_H
#define EDGE_DEVICE_H

#include "engine/backend.h"

/* The backend for these parameters: device CPU the CPU; CUDA the CUDA backend when the library has it and a
 * device has room for the dense part (else an edge_fail status naming why); AUTO that GPU when usable, else
 * the CPU. Sets p->device to the one chosen. */
edge_status edge_choose_backend(const edge_model *model, edge_context_params *p, const edge_backend **out);
/* The state API's host copy of sequence 0's KV cache, brought up to date with (or pushed to) the backend's. */
edge_status edge_backend_kv_to_host(const edge_context *ctx);
edge_status edge_backend_kv_from_host(edge_context *ctx);

#endif /* EDGE_DEVICE_H */
