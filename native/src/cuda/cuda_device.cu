// cuda_device.cu — CUDA entry points of a CUDA build. The runtime is linked statically and finds the
// driver at run time, so a CUDA build still loads and runs (with 0 devices) on a machine without one.
#include <cuda_runtime.h>

extern "C" {
#include "common.h"
}

extern "C" EDGE_API int edge_cuda_compiled(void) { return 1; }

extern "C" EDGE_API edge_status edge_cuda_device_count(int *n_devices) {
    if (!n_devices) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_cuda_device_count: n_devices is NULL");
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError(); // no driver or no device: report zero devices, not an error
        n = 0;
    }
    *n_devices = n;
    return EDGE_OK;
}
