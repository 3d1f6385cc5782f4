/* kernels/cuda/rmsnorm.cu - RMSNorm, one block per row: the sum of squares in
 * f32 through a block reduction, then the scaled row. In place is safe: each
 * thread reads an element before it writes it, and the sum is complete
 * (block barrier) before any write. */
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/rmsnorm.h"

template <typename T>
__global__ void rmsnorm_kernel(T *y, const T *x, const T *__restrict__ w, int dim, float eps) {
    const T *xr = x + (size_t)blockIdx.x * dim;
    T *yr = y + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = tsr_ld(xr[i]);
        ss += v * v;
    }
    ss = tsr_block_sum(ss);
    const float r = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        yr[i] = tsr_st<T>(tsr_ld(xr[i]) * r * tsr_ld(w[i]));
}

cudaError_t tsr_cuda_rmsnorm(cudaStream_t s, tsr_dtype act, void *y, const void *x, const void *w,
                             int n, int dim, float eps) {
    if (n <= 0)
        return cudaSuccess;
    const int th = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
    TSR_DISPATCH_ACT(
        act, T, rmsnorm_kernel<T><<<n, th, 0, s>>>((T *)y, (const T *)x, (const T *)w, dim, eps));
    return cudaGetLastError();
}
