/* kernels/cuda/argmax.cu - per-row argmax, one block per row: each thread
 * scans a strided part of the row keeping (value, column), then warp
 * shuffles and shared memory reduce the pairs, preferring the larger value
 * and, between equal values, the lower column (the CPU's rule). NaNs are
 * skipped (the CPU keeps column 0 when that one is NaN). */
#include <math.h>

#include "kernels/cuda/argmax.h"
#include "kernels/cuda/cuda_util.cuh"

#define AM_THREADS 256

__device__ __forceinline__ void am_take(float &v, int &i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) {
        v = ov;
        i = oi;
    }
}

template <typename T>
__global__ void argmax_kernel(float *val, int32_t *idx, const T *__restrict__ logits, int V) {
    __shared__ float sv[AM_THREADS / 32];
    __shared__ int si[AM_THREADS / 32];
    const T *l = logits + (size_t)blockIdx.x * V;
    float v = -INFINITY;
    int i = V; /* no column yet: loses every tie */
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        am_take(v, i, tsr_ld(l[j]), j);
    for (int o = 16; o > 0; o >>= 1)
        am_take(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < AM_THREADS / 32; w++)
            am_take(v, i, sv[w], si[w]);
        if (i >= V) /* every value was NaN or -inf: column 0, as on the CPU */
            i = 0, v = tsr_ld(l[0]);
        val[blockIdx.x] = v;
        idx[blockIdx.x] = i;
    }
}

cudaError_t tsr_cuda_argmax(cudaStream_t s, tsr_dtype act, float *val, int32_t *idx,
                            const void *logits, int n, int V) {
    if (n <= 0)
        return cudaSuccess;
    if (V <= 0)
        return cudaErrorInvalidValue;
    TSR_DISPATCH_ACT(act, T,
                     argmax_kernel<T><<<n, AM_THREADS, 0, s>>>(val, idx, (const T *)logits, V));
    return cudaGetLastError();
}
