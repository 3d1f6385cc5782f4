/* kernels/cuda/kv_store.cu - scatters a batch's K and V rows into the paged
 * caches, one thread per element of both. */
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/kv_store.h"

template <typename T>
__global__ void kv_store_kernel(T *__restrict__ kc, T *__restrict__ vc, const T *__restrict__ k,
                                const T *__restrict__ v, const int32_t *__restrict__ slot, int n,
                                int kv_dim) {
    const size_t total = (size_t)n * kv_dim;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t t = idx / kv_dim, j = idx % kv_dim;
        const size_t dst = (size_t)slot[t] * kv_dim + j;
        kc[dst] = k[idx];
        vc[dst] = v[idx];
    }
}

cudaError_t tsr_cuda_kv_store(cudaStream_t s, tsr_dtype act, void *k_cache, void *v_cache,
                              const void *k, const void *v, const int32_t *slot, int n,
                              int kv_dim) {
    const size_t total = (size_t)n * kv_dim;
    if (total == 0)
        return cudaSuccess;
    const unsigned th = 256;
    TSR_DISPATCH_ACT(act, T,
                     kv_store_kernel<T><<<tsr_grid_for(total, th), th, 0, s>>>(
                         (T *)k_cache, (T *)v_cache, (const T *)k, (const T *)v, slot, n, kv_dim));
    return cudaGetLastError();
}
