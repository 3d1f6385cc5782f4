/* kernels/cuda/swiglu.cu - out = silu(gate) * up, element-wise; out may be
 * gate (each element is read before it is written, by the same thread). */
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/swiglu.h"

template <typename T>
__global__ void swiglu_kernel(T *out, const T *gate, const T *__restrict__ up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float g = tsr_ld(gate[i]);
        out[i] = tsr_st<T>(g / (1.0f + expf(-g)) * tsr_ld(up[i]));
    }
}

cudaError_t tsr_cuda_swiglu(cudaStream_t s, tsr_dtype act, void *out, const void *gate,
                            const void *up, size_t count) {
    if (count == 0)
        return cudaSuccess;
    const unsigned th = 256;
    TSR_DISPATCH_ACT(act, T,
                     swiglu_kernel<T><<<tsr_grid_for(count, th), th, 0, s>>>(
                         (T *)out, (const T *)gate, (const T *)up, count));
    return cudaGetLastError();
}
