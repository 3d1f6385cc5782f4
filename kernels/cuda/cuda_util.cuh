/* kernels/cuda/cuda_util.cuh - device helpers every op's .cu shares: loads and
 * stores in the activation type with f32 arithmetic, warp and block sums, and
 * the switch that instantiates a kernel for each activation type.
 *
 * Activations are float or __nv_bfloat16 (TSR_F32 / TSR_BF16); all maths is
 * done in f32 whatever the storage. What it is not: a public header (only
 * .cu files include it). */
#ifndef TSR_KERNELS_CUDA_UTIL_CUH
#define TSR_KERNELS_CUDA_UTIL_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "kernels/dtype.h"

__device__ __forceinline__ float tsr_ld(float x) { return x; }
__device__ __forceinline__ float tsr_ld(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T tsr_st(float x);
template <> __device__ __forceinline__ float tsr_st<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 tsr_st<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float tsr_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float tsr_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum (Max false) or maximum (Max true) over the block (blockDim.x a
 * multiple of 32, at most 1024); every thread gets the result. The maximum
 * follows fmaxf's rule: a NaN operand is skipped. Uses 33 floats of shared
 * memory per instantiation. */
template <bool Max> __device__ __forceinline__ float tsr_block_reduce(float v) {
    __shared__ float part[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = Max ? tsr_warp_max(v) : tsr_warp_sum(v);
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float r = lane < (int)(blockDim.x >> 5) ? part[lane] : (Max ? -INFINITY : 0.0f);
        r = Max ? tsr_warp_max(r) : tsr_warp_sum(r);
        if (lane == 0)
            total = r;
    }
    __syncthreads();
    return total;
}

__device__ __forceinline__ float tsr_block_sum(float v) { return tsr_block_reduce<false>(v); }
__device__ __forceinline__ float tsr_block_max(float v) { return tsr_block_reduce<true>(v); }

/* Grid size for n elements at `threads` per block, capped so a huge n loops
 * (grid-stride) instead of overflowing gridDim.x. */
static inline unsigned tsr_grid_for(size_t n, unsigned threads) {
    size_t g = (n + threads - 1) / threads;
    if (g > 65535u * 32u)
        g = 65535u * 32u;
    return (unsigned)(g ? g : 1);
}

/* Runs the statement with `T` bound to the C type of activation dtype `dt`;
 * any other dtype returns cudaErrorInvalidValue from the enclosing function. */
#define TSR_DISPATCH_ACT(dt, T, ...)                                                               \
    switch (dt) {                                                                                  \
    case TSR_F32: {                                                                                \
        typedef float T;                                                                           \
        __VA_ARGS__;                                                                               \
        break;                                                                                     \
    }                                                                                              \
    case TSR_BF16: {                                                                               \
        typedef __nv_bfloat16 T;                                                                   \
        __VA_ARGS__;                                                                               \
        break;                                                                                     \
    }                                                                                              \
    default: return cudaErrorInvalidValue;                                                         \
    }

#endif
