/* kernels/cuda/lora_dropout.cu - LoRA dropout's mask, element-wise: one
 * block row per token row (the row's hash once per thread), threads along
 * the columns. The per-element hash is the device copy of
 * tsr_lora_dropout_bits (kernels/backend.c); runtime/model/lora.h defines it and
 * tests/train checks both against NumPy bit for bit. */
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/lora_dropout.h"

/* splitmix64's output function, as dropout_mix in kernels/backend.c. */
__device__ __forceinline__ uint64_t dropout_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <typename T>
__global__ void lora_dropout_kernel(T *out, const T *x, int n, int d, uint64_t stream, int row0,
                                    int col0, uint32_t thr, float inv, int accumulate) {
    for (int i = blockIdx.y; i < n; i += gridDim.y) {
        const uint64_t row = dropout_mix(stream ^ (uint64_t)((int64_t)row0 + i));
        const size_t base = (size_t)i * d;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < d; j += gridDim.x * blockDim.x) {
            const uint64_t h =
                dropout_mix(row + 0x9E3779B97F4A7C15ull * (uint64_t)(1 + (int64_t)col0 + j));
            const float v = (uint32_t)(h >> 40) < thr ? 0.0f : tsr_ld(x[base + j]) * inv;
            out[base + j] = tsr_st<T>(accumulate ? tsr_ld(out[base + j]) + v : v);
        }
    }
}

cudaError_t tsr_cuda_lora_dropout(cudaStream_t s, tsr_dtype act, void *out, const void *x, int n,
                                  int d, uint64_t stream, int row0, int col0, uint32_t thr,
                                  float inv, int accumulate) {
    if (n <= 0 || d <= 0)
        return cudaSuccess;
    const unsigned th = 256;
    const dim3 grid((unsigned)((d + th - 1) / th), (unsigned)(n < 65535 ? n : 65535));
    TSR_DISPATCH_ACT(act, T,
                     lora_dropout_kernel<T><<<grid, th, 0, s>>>(
                         (T *)out, (const T *)x, n, d, stream, row0, col0, thr, inv, accumulate));
    return cudaGetLastError();
}
