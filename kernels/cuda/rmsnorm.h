/* kernels/cuda/rmsnorm.h - y(n, dim) = x * rsqrt(mean(x^2) + eps) * w(dim); in place ok.
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_RMSNORM_H
#define TSR_KERNELS_CUDA_RMSNORM_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t tsr_cuda_rmsnorm(cudaStream_t s, tsr_dtype act, void *y, const void *x, const void *w,
                             int n, int dim, float eps);

#ifdef __cplusplus
}
#endif

#endif
