/* kernels/cuda/topk.cu - per-row top-k by repeated selection, one block per
 * row: round r finds the best entry that comes after round r-1's pick in
 * tsr_topk_before's total order (NaN first, larger value, lower column), so
 * no entry is taken twice and nothing is written to the row. Each round is a
 * strided scan of the row (it stays in L1/L2: 96 KiB for 49152 bf16 logits)
 * and a block reduction; k rounds cost k scans, which for the k of top-k
 * sampling (tens) is a few tens of microseconds and saves copying the whole
 * row to the host. */
#include <math.h>

#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/topk.h"

#define TK_THREADS 256

/* As tsr_topk_before; column -1 is "nothing", after every real entry. */
__device__ __forceinline__ bool tk_before(float va, int ia, float vb, int ib) {
    if (ib < 0)
        return ia >= 0;
    if (ia < 0)
        return false;
    const bool na = isnan(va), nb = isnan(vb);
    if (na || nb)
        return na && (!nb || ia < ib);
    return va > vb || (va == vb && ia < ib);
}

__device__ __forceinline__ void tk_take(float &v, int &i, float ov, int oi) {
    if (tk_before(ov, oi, v, i)) {
        v = ov;
        i = oi;
    }
}

template <typename T>
__global__ void topk_kernel(float *val, int32_t *idx, const T *__restrict__ logits, int V, int k) {
    __shared__ float sv[TK_THREADS / 32];
    __shared__ int si[TK_THREADS / 32];
    __shared__ float prev_v;
    __shared__ int prev_i;
    const T *l = logits + (size_t)blockIdx.x * V;
    float *ov = val + (size_t)blockIdx.x * k;
    int32_t *oi = idx + (size_t)blockIdx.x * k;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int r = 0; r < k; r++) {
        const float pv = r ? prev_v : 0.0f;
        const int pi = r ? prev_i : -1;
        if (r && pi < 0) { /* the row ran out: pad */
            if (threadIdx.x == 0) {
                ov[r] = -INFINITY;
                oi[r] = -1;
            }
            continue;
        }
        float v = 0.0f;
        int i = -1;
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            const float x = tsr_ld(l[j]);
            if (pi < 0 || tk_before(pv, pi, x, j)) /* comes after the previous pick */
                tk_take(v, i, x, j);
        }
        for (int o = 16; o > 0; o >>= 1)
            tk_take(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
        if (lane == 0) {
            sv[warp] = v;
            si[warp] = i;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < TK_THREADS / 32; w++)
                tk_take(v, i, sv[w], si[w]);
            ov[r] = i < 0 ? -INFINITY : v;
            oi[r] = i;
            prev_v = v;
            prev_i = i;
        }
        __syncthreads();
    }
}

cudaError_t tsr_cuda_topk(cudaStream_t s, tsr_dtype act, float *val, int32_t *idx,
                          const void *logits, int n, int V, int k) {
    if (k < 1 || k > TSR_TOPK_MAX || V < 0)
        return cudaErrorInvalidValue;
    if (n <= 0)
        return cudaSuccess;
    TSR_DISPATCH_ACT(act, T,
                     topk_kernel<T><<<n, TK_THREADS, 0, s>>>(val, idx, (const T *)logits, V, k));
    return cudaGetLastError();
}
