// cuda_device.cu — CUDA entry points of a CUDA build. The runtime is linked statically and finds the
// driver at run time, so a CUDA build still loads and runs (with 0 devices) on a machine without one.
#include <cuda_runtime.h>

#include <stdio.h>
#include <string.h>

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

extern "C" EDGE_API edge_status edge_cuda_device_info_get(int device, edge_cuda_device_info *out) {
    if (!out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_cuda_device_info_get: out is NULL");
    memset(out, 0, sizeof *out);
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) (void)cudaGetLastError(), n = 0;
    if (device < 0 || device >= n)
        return edge_fail(EDGE_ERR_RANGE, "CUDA device %d: the driver reports %d device(s)", device, n);
    cudaDeviceProp prop;
    cudaError_t err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return edge_fail(EDGE_ERR_INTERNAL, "CUDA device %d: %s", device, cudaGetErrorString(err));
    }
    snprintf(out->name, sizeof out->name, "%s", prop.name);
    out->cc_major = prop.major;
    out->cc_minor = prop.minor;
    int prev = 0;
    size_t free_b = 0, total_b = (size_t)prop.totalGlobalMem;
    if (cudaGetDevice(&prev) == cudaSuccess && cudaSetDevice(device) == cudaSuccess &&
        cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
        cudaSetDevice(prev);
    } else {
        (void)cudaGetLastError();
    }
    out->total_bytes = total_b;
    out->free_bytes = free_b;
    return EDGE_OK;
}
