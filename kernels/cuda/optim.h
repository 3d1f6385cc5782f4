/* kernels/cuda/optim.h - AdamW, sum of squares and scaling of f32 parameter
 * arrays, and the f32 accumulation into activations LoRA uses.
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_OPTIM_H
#define TSR_KERNELS_CUDA_OPTIM_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* AdamW with the bias corrections bc1 = 1 - beta1^t, bc2 = 1 - beta2^t. */
cudaError_t tsr_cuda_adamw(cudaStream_t s, float *p, const float *g, float *m, float *v, size_t n,
                           float lr, float beta1, float beta2, float eps, float wd, float bc1,
                           float bc2);
/* *acc (device double, zeroed here) = sum x^2. */
cudaError_t tsr_cuda_sumsq(cudaStream_t s, double *acc, const float *x, size_t n);
cudaError_t tsr_cuda_scale_f32(cudaStream_t s, float *x, size_t n, float a);
/* y(count) += x(count) f32, y in the activation type. */
cudaError_t tsr_cuda_add_f32(cudaStream_t s, tsr_dtype act, void *y, const float *x, size_t count);

#ifdef __cplusplus
}
#endif

#endif
