/* kernels/cuda/convert.h - dst(n) = src(n) between f32 and bf16 (either
 * direction, or a copy when the types match).
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_CONVERT_H
#define TSR_KERNELS_CUDA_CONVERT_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t tsr_cuda_convert(cudaStream_t s, void *dst, tsr_dtype dst_type, const void *src,
                             tsr_dtype src_type, size_t n);

#ifdef __cplusplus
}
#endif

#endif
