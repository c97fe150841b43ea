// cuda_ops_driver.cu — device memory helpers for tests/test_cuda_ops.py. The library it is linked into
// (built by the test with chipStar's cucc, or nvcc) holds the native/src/cuda ops with default visibility,
// so the test calls edge_cu_* directly on device pointers it gets from here.
#include <cuda_runtime.h>
#include <stddef.h>

extern "C" {

void *drv_malloc(size_t n) {
    void *p = nullptr;
    return cudaMalloc(&p, n ? n : 1) == cudaSuccess ? p : nullptr;
}

int drv_free(void *p) { return (int)cudaFree(p); }

int drv_h2d(void *dst, const void *src, size_t n) { return (int)cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice); }

int drv_d2h(void *dst, const void *src, size_t n) { return (int)cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost); }

// Waits for the work enqueued so far; a kernel's execution error surfaces here.
int drv_sync(void) { return (int)cudaDeviceSynchronize(); }

}  // extern "C"
