/* kernels/cuda/add.cu - the residual add y += x and the bias add y += b
 * broadcast over rows, element-wise in f32. */
#include "kernels/cuda/add.h"
#include "kernels/cuda/cuda_util.cuh"

template <typename T> __global__ void add_kernel(T *y, const T *__restrict__ x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = tsr_st<T>(tsr_ld(y[i]) + tsr_ld(x[i]));
}

template <typename T>
__global__ void add_bias_kernel(T *y, const T *__restrict__ bias, size_t n, int dim) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = tsr_st<T>(tsr_ld(y[i]) + tsr_ld(bias[i % dim]));
}

cudaError_t tsr_cuda_add(cudaStream_t s, tsr_dtype act, void *y, const void *x, size_t count) {
    if (count == 0)
        return cudaSuccess;
    const unsigned th = 256;
    TSR_DISPATCH_ACT(
        act, T, add_kernel<T><<<tsr_grid_for(count, th), th, 0, s>>>((T *)y, (const T *)x, count));
    return cudaGetLastError();
}

cudaError_t tsr_cuda_add_bias(cudaStream_t s, tsr_dtype act, void *y, const void *bias, int n,
                              int dim) {
    const size_t count = (size_t)n * dim;
    if (count == 0)
        return cudaSuccess;
    const unsigned th = 256;
    TSR_DISPATCH_ACT(act, T,
                     add_bias_kernel<T>
                     <<<tsr_grid_for(count, th), th, 0, s>>>((T *)y, (const T *)bias, count, dim));
    return cudaGetLastError();
}
