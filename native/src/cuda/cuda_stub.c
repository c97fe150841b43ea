/* cuda_stub.c — the CUDA entry points of a build without CUDA. */
#include "common.h"

EDGE_API int edge_cuda_compiled(void) { return 0; }

EDGE_API edge_status edge_cuda_device_count(int *n_devices) {
    if (!n_devices) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_cuda_device_count: n_devices is NULL");
    *n_devices = 0;
    return EDGE_OK;
}

EDGE_API edge_status edge_cuda_matvec(int type, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                                      float *y) {
    (void)type, (void)w, (void)n_rows, (void)n_cols, (void)x, (void)y;
    return edge_fail(EDGE_ERR_UNSUPPORTED, "edge_cuda_matvec: this library was built without CUDA (EDGE_CUDA=OFF or "
                                           "no CUDA compiler found)");
}

EDGE_API edge_status edge_cuda_device_info_get(int device, edge_cuda_device_info *out) {
    (void)device, (void)out;
    return edge_fail(EDGE_ERR_UNSUPPORTED, "edge_cuda_device_info_get: this library was built without CUDA "
                                           "(EDGE_CUDA=OFF or no CUDA compiler found)");
}
