/* kernels/cuda/convert.cu - f32 <-> bf16 conversion of device arrays (host
 * f32 logits and inputs pass through it when activations are bf16; the
 * matmul turns f32 activations into bf16 GEMM inputs with it). */
#include "kernels/cuda/convert.h"
#include "kernels/cuda/cuda_util.cuh"

template <typename D, typename S>
__global__ void convert_kernel(D *__restrict__ dst, const S *__restrict__ src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = tsr_st<D>(tsr_ld(src[i]));
}

cudaError_t tsr_cuda_convert(cudaStream_t s, void *dst, tsr_dtype dst_type, const void *src,
                             tsr_dtype src_type, size_t n) {
    if (n == 0)
        return cudaSuccess;
    if (dst_type == src_type) {
        if (dst_type != TSR_F32 && dst_type != TSR_BF16)
            return cudaErrorInvalidValue;
        return cudaMemcpyAsync(dst, src, n * (dst_type == TSR_F32 ? 4 : 2),
                               cudaMemcpyDeviceToDevice, s);
    }
    const unsigned th = 256;
    if (dst_type == TSR_BF16 && src_type == TSR_F32)
        convert_kernel<<<tsr_grid_for(n, th), th, 0, s>>>((__nv_bfloat16 *)dst, (const float *)src,
                                                          n);
    else if (dst_type == TSR_F32 && src_type == TSR_BF16)
        convert_kernel<<<tsr_grid_for(n, th), th, 0, s>>>((float *)dst, (const __nv_bfloat16 *)src,
                                                          n);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}
