/* kernels/cuda/ce.cu - vocabulary-parallel cross-entropy pieces, one block
 * per row for the reductions (max, then sum of exponentials and the target's
 * logit) and one thread per element for the gradient. The all-reduces between
 * the passes are the caller's (comm/). */
#include <math.h>

#include "kernels/cuda/ce.h"
#include "kernels/cuda/cuda_util.cuh"

#define CE_THREADS 256

template <typename T>
__global__ void ce_rowmax_kernel(float *rowmax, const T *__restrict__ logits, int V) {
    const T *l = logits + (size_t)blockIdx.x * V;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        m = fmaxf(m, tsr_ld(l[j]));
    m = tsr_block_max(m);
    if (threadIdx.x == 0)
        rowmax[blockIdx.x] = m;
}

template <typename T>
__global__ void ce_sums_kernel(float *sumexp, float *tlogit, const T *__restrict__ logits,
                               const float *__restrict__ rowmax, const int32_t *__restrict__ target,
                               int V, int row0) {
    const int i = blockIdx.x;
    const T *l = logits + (size_t)i * V;
    const float m = rowmax[i];
    float acc = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        acc += expf(tsr_ld(l[j]) - m);
    acc = tsr_block_sum(acc);
    if (threadIdx.x == 0) {
        sumexp[i] = acc;
        const long t = (long)target[i] - row0;
        tlogit[i] = target[i] >= 0 && t >= 0 && t < V ? tsr_ld(l[t]) : 0.0f;
    }
}

template <typename T>
__global__ void ce_grad_kernel(T *dlogits, const T *logits, const float *__restrict__ rowmax,
                               const float *__restrict__ sumexp, const int32_t *__restrict__ target,
                               const float *__restrict__ weight, int n, int V, int row0) {
    const size_t total = (size_t)n * V;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx / V), j = (int)(idx % V);
        const float w = target[i] >= 0 ? weight[i] : 0.0f;
        float g = 0.0f;
        if (w != 0.0f) {
            const float p = expf(tsr_ld(logits[idx]) - rowmax[i]) / sumexp[i];
            g = w * (p - (target[i] - row0 == j ? 1.0f : 0.0f));
        }
        dlogits[idx] = tsr_st<T>(g);
    }
}

cudaError_t tsr_cuda_ce_rowmax(cudaStream_t s, tsr_dtype act, float *rowmax, const void *logits,
                               int n, int V) {
    if (n <= 0)
        return cudaSuccess;
    TSR_DISPATCH_ACT(act, T,
                     ce_rowmax_kernel<T><<<n, CE_THREADS, 0, s>>>(rowmax, (const T *)logits, V));
    return cudaGetLastError();
}

cudaError_t tsr_cuda_ce_sums(cudaStream_t s, tsr_dtype act, float *sumexp, float *tlogit,
                             const void *logits, const float *rowmax, const int32_t *target, int n,
                             int V, int row0) {
    if (n <= 0)
        return cudaSuccess;
    TSR_DISPATCH_ACT(act, T,
                     ce_sums_kernel<T><<<n, CE_THREADS, 0, s>>>(sumexp, tlogit, (const T *)logits,
                                                                rowmax, target, V, row0));
    return cudaGetLastError();
}

cudaError_t tsr_cuda_ce_grad(cudaStream_t s, tsr_dtype act, void *dlogits, const void *logits,
                             const float *rowmax, const float *sumexp, const int32_t *target,
                             const float *weight, int n, int V, int row0) {
    const size_t total = (size_t)n * V;
    if (total == 0)
        return cudaSuccess;
    TSR_DISPATCH_ACT(
        act, T,
        ce_grad_kernel<T><<<tsr_grid_for(total, 256), 256, 0, s>>>(
            (T *)dlogits, (const T *)logits, rowmax, sumexp, target, weight, n, V, row0));
    return cudaGetLastError();
}
