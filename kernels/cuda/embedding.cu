/* kernels/cuda/embedding.cu - token embedding lookup from a table slice (bf16,
 * or f32 in the reference-precision mode)
 * (rows row0 .. row0 + rows - 1 of the vocabulary); ids outside the slice give
 * zero rows, which the vocab-parallel all-reduce fills from their owner. */
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/embedding.h"

template <typename T, typename W>
__global__ void embedding_kernel(T *__restrict__ out, const W *__restrict__ table, int rows,
                                 int dim, const int32_t *__restrict__ ids, int n, int row0) {
    const size_t total = (size_t)n * dim;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t t = idx / dim, j = idx % dim;
        const long r = (long)ids[t] - row0;
        const float v = r >= 0 && r < rows ? tsr_ld(table[(size_t)r * dim + j]) : 0.0f;
        out[idx] = tsr_st<T>(v);
    }
}

cudaError_t tsr_cuda_embedding(cudaStream_t s, tsr_dtype act, void *out, const void *table,
                               tsr_dtype table_type, int rows, int dim, const int32_t *ids, int n,
                               int row0) {
    const size_t total = (size_t)n * dim;
    if (total == 0)
        return cudaSuccess;
    const unsigned th = 256;
    if (table_type == TSR_F32) {
        TSR_DISPATCH_ACT(act, T,
                         embedding_kernel<T><<<tsr_grid_for(total, th), th, 0, s>>>(
                             (T *)out, (const float *)table, rows, dim, ids, n, row0));
    } else if (table_type == TSR_BF16) {
        TSR_DISPATCH_ACT(act, T,
                         embedding_kernel<T><<<tsr_grid_for(total, th), th, 0, s>>>(
                             (T *)out, (const __nv_bfloat16 *)table, rows, dim, ids, n, row0));
    } else {
        return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}
