/* kernels/cuda/optim.cu - element-wise AdamW on f32 master parameters, the
 * sum of squares for global-norm clipping (block partial sums in double,
 * added atomically), scaling, and f32 accumulation into activations. */
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/optim.h"

__global__ void adamw_kernel(float *p, const float *__restrict__ g, float *m, float *v, size_t n,
                             float lr, float b1, float b2, float eps, float wd, float bc1,
                             float bc2) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float gi = g[i];
        const float mi = b1 * m[i] + (1.0f - b1) * gi;
        const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float upd = (mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * p[i];
        p[i] -= lr * upd;
    }
}

__global__ void sumsq_kernel(double *acc, const float *__restrict__ x, size_t n) {
    __shared__ double part[32];
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i];
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0)
        part[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++)
            t += part[w];
        atomicAdd(acc, t);
    }
}

__global__ void scale_kernel(float *x, size_t n, float a) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= a;
}

template <typename T> __global__ void add_f32_kernel(T *y, const float *__restrict__ x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = tsr_st<T>(tsr_ld(y[i]) + x[i]);
}

cudaError_t tsr_cuda_adamw(cudaStream_t s, float *p, const float *g, float *m, float *v, size_t n,
                           float lr, float beta1, float beta2, float eps, float wd, float bc1,
                           float bc2) {
    if (n == 0)
        return cudaSuccess;
    adamw_kernel<<<tsr_grid_for(n, 256), 256, 0, s>>>(p, g, m, v, n, lr, beta1, beta2, eps, wd, bc1,
                                                      bc2);
    return cudaGetLastError();
}

cudaError_t tsr_cuda_sumsq(cudaStream_t s, double *acc, const float *x, size_t n) {
    cudaError_t e = cudaMemsetAsync(acc, 0, sizeof *acc, s);
    if (e != cudaSuccess || n == 0)
        return e;
    unsigned grid = tsr_grid_for(n, 256);
    if (grid > 1024)
        grid = 1024; /* few atomics; each thread loops */
    sumsq_kernel<<<grid, 256, 0, s>>>(acc, x, n);
    return cudaGetLastError();
}

cudaError_t tsr_cuda_scale_f32(cudaStream_t s, float *x, size_t n, float a) {
    if (n == 0)
        return cudaSuccess;
    scale_kernel<<<tsr_grid_for(n, 256), 256, 0, s>>>(x, n, a);
    return cudaGetLastError();
}

cudaError_t tsr_cuda_add_f32(cudaStream_t s, tsr_dtype act, void *y, const float *x, size_t count) {
    if (count == 0)
        return cudaSuccess;
    TSR_DISPATCH_ACT(act, T,
                     add_f32_kernel<T><<<tsr_grid_for(count, 256), 256, 0, s>>>((T *)y, x, count));
    return cudaGetLastError();
}
