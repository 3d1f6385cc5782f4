/* kernels/cuda/row_expsum.cu - one block per row, two strided passes: the
 * row's maximum (a block max; NaN entries are noticed, not compared), then
 * the sum of exp((l - max) * inv_t) in f32 (a block sum). The row stays in
 * L1/L2 between the passes (96 KiB for 49152 bf16 logits). */
#include <math.h>

#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/row_expsum.h"

#define RE_THREADS 256

template <typename T>
__global__ void row_expsum_kernel(float *out, const T *__restrict__ logits,
                                  const float *__restrict__ inv_t, int V) {
    const T *l = logits + (size_t)blockIdx.x * V;
    float mx = -INFINITY;
    int nan = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        const float x = tsr_ld(l[j]);
        nan |= isnan(x);
        mx = fmaxf(mx, x); /* fmaxf skips a NaN operand */
    }
    mx = tsr_block_max(mx);
    nan = __syncthreads_or(nan);
    const float it = inv_t[blockIdx.x];
    float z = 0.0f;
    if (isfinite(mx))
        for (int j = threadIdx.x; j < V; j += blockDim.x)
            z += expf((tsr_ld(l[j]) - mx) * it);
    z = tsr_block_sum(z);
    if (threadIdx.x == 0) {
        out[2 * blockIdx.x] = mx;
        out[2 * blockIdx.x + 1] = nan || !isfinite(mx) ? NAN : z;
    }
}

cudaError_t tsr_cuda_row_expsum(cudaStream_t s, tsr_dtype act, float *out, const void *logits,
                                const float *inv_t, int n, int V) {
    if (n <= 0)
        return cudaSuccess;
    if (V <= 0)
        return cudaErrorInvalidValue;
    TSR_DISPATCH_ACT(
        act, T, row_expsum_kernel<T><<<n, RE_THREADS, 0, s>>>(out, (const T *)logits, inv_t, V));
    return cudaGetLastError();
}
