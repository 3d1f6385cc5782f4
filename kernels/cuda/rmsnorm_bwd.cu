/* kernels/cuda/rmsnorm_bwd.cu - the input gradient of y = x * r * w with
 * r = rsqrt(mean(x^2) + eps), w frozen, one block per row:
 *   dx_i += r * w_i * dy_i - x_i * r^3 / dim * sum_j (w_j * dy_j * x_j). */
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/rmsnorm_bwd.h"

template <typename T>
__global__ void rmsnorm_bwd_kernel(T *dx, const T *__restrict__ dy, const T *__restrict__ x,
                                   const T *__restrict__ w, int dim, float eps) {
    const size_t row = (size_t)blockIdx.x * dim;
    float ss = 0.0f, dot = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float xv = tsr_ld(x[row + i]);
        ss += xv * xv;
        dot += tsr_ld(w[i]) * tsr_ld(dy[row + i]) * xv;
    }
    ss = tsr_block_sum(ss);
    dot = tsr_block_sum(dot);
    const float r = rsqrtf(ss / (float)dim + eps);
    const float c = r * r * r * dot / (float)dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float g = r * tsr_ld(w[i]) * tsr_ld(dy[row + i]) - tsr_ld(x[row + i]) * c;
        dx[row + i] = tsr_st<T>(tsr_ld(dx[row + i]) + g);
    }
}

cudaError_t tsr_cuda_rmsnorm_bwd(cudaStream_t s, tsr_dtype act, void *dx, const void *dy,
                                 const void *x, const void *w, int n, int dim, float eps) {
    if (n <= 0)
        return cudaSuccess;
    const int th = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
    TSR_DISPATCH_ACT(act, T,
                     rmsnorm_bwd_kernel<T><<<n, th, 0, s>>>((T *)dx, (const T *)dy, (const T *)x,
                                                            (const T *)w, dim, eps));
    return cudaGetLastError();
}
