/* device.c — where a context's forward pass runs: params.device (edge_device) and gpu_memory to a backend. */
#include <string.h>

#include "engine/backend.h"
#if defined(EDGE_WITH_CUDA)
#include "cuda/cuda_backend.h"
#endif
#include "engine/device.h"

edge_status edge_choose_backend(const edge_model *model, edge_context_params *p, const edge_backend **out) {
    *out = NULL; /* none on failure: nothing to free */
    if (p->device != EDGE_DEVICE_AUTO && p->device != EDGE_DEVICE_CPU && p->device != EDGE_DEVICE_CUDA)
        return edge_fail(EDGE_ERR_INVALID_ARG, "device %d must be EDGE_DEVICE_AUTO (0), _CPU (1) or _CUDA (2)",
                         p->device);
    if (p->device == EDGE_DEVICE_CPU) {
        *out = &edge_cpu_backend;
        return EDGE_OK;
    }
#if defined(EDGE_WITH_CUDA)
    const edge_status st = edge_cuda_backend_usable(model, p);
    if (st == EDGE_OK) {
        p->device = EDGE_DEVICE_CUDA;
        *out = &edge_cuda_backend;
        return EDGE_OK;
    }
    if (p->device == EDGE_DEVICE_CUDA) return st; /* its message names why */
    edge_clear_error();                           /* auto: no usable GPU, the CPU */
#else
    (void)model;
    if (p->device == EDGE_DEVICE_CUDA)
        return edge_fail(EDGE_ERR_UNSUPPORTED, "device=cuda: this library was built without CUDA (EDGE_CUDA=OFF or no "
                                               "CUDA compiler found when it was built)");
#endif
    p->device = EDGE_DEVICE_CPU;
    *out = &edge_cpu_backend;
    return EDGE_OK;
}

#if defined(EDGE_WITH_CUDA)
edge_status edge_backend_kv_to_host(const edge_context *ctx) {
    /* writes the host arrays the context points to, not the context */
    return ctx->backend == &edge_cuda_backend ? edge_cuda_backend_sync_kv((edge_context *)ctx, 1) : EDGE_OK;
}
edge_status edge_backend_kv_from_host(edge_context *ctx) {
    return ctx->backend == &edge_cuda_backend ? edge_cuda_backend_sync_kv(ctx, 0) : EDGE_OK;
}
#else
edge_status edge_backend_kv_to_host(const edge_context *ctx) {
    (void)ctx;
    return EDGE_OK;
}
edge_status edge_backend_kv_from_host(edge_context *ctx) {
    (void)ctx;
    return EDGE_OK;
}
#endif

EDGE_API edge_status edge_context_device(const edge_context *ctx, int *out) {
    if (!ctx || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_device: NULL argument");
    *out = ctx->params.device;
    return EDGE_OK;
}

EDGE_API edge_status edge_context_gpu_info(const edge_context *ctx, edge_gpu_info *out) {
    if (!ctx || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_context_gpu_info: NULL argument");
    memset(out, 0, sizeof *out);
#if defined(EDGE_WITH_CUDA)
    if (ctx->backend == &edge_cuda_backend) return edge_cuda_backend_info(ctx, out);
#endif
    return EDGE_OK;
}
