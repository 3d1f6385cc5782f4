/* kernels/cuda/swiglu_bwd.cu - gradients of out = silu(g) * u:
 *   dg = dout * u * sig(g) * (1 + g * (1 - sig(g))),  du = dout * silu(g).
 * Each thread reads its element of gate/up before writing dgate/dup, so
 * dgate may alias gate and dup may alias up. */
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/swiglu_bwd.h"

template <typename T>
__global__ void swiglu_bwd_kernel(T *dgate, T *dup, const T *__restrict__ dout, const T *gate,
                                  const T *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float g = tsr_ld(gate[i]), u = tsr_ld(up[i]), d = tsr_ld(dout[i]);
        const float sg = 1.0f / (1.0f + expf(-g));
        dgate[i] = tsr_st<T>(d * u * sg * (1.0f + g * (1.0f - sg)));
        dup[i] = tsr_st<T>(d * g * sg);
    }
}

cudaError_t tsr_cuda_swiglu_bwd(cudaStream_t s, tsr_dtype act, void *dgate, void *dup,
                                const void *dout, const void *gate, const void *up, size_t count) {
    if (count == 0)
        return cudaSuccess;
    const unsigned th = 256;
    TSR_DISPATCH_ACT(
        act, T,
        swiglu_bwd_kernel<T><<<tsr_grid_for(count, th), th, 0, s>>>(
            (T *)dgate, (T *)dup, (const T *)dout, (const T *)gate, (const T *)up, count));
    return cudaGetLastError();
}
