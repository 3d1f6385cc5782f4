/* kernels/cuda/ce.h - vocabulary-parallel cross-entropy pieces (row max,
 * sums, gradient).
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_CE_H
#define TSR_KERNELS_CUDA_CE_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t tsr_cuda_ce_rowmax(cudaStream_t s, tsr_dtype act, float *rowmax, const void *logits,
                               int n, int V);
cudaError_t tsr_cuda_ce_sums(cudaStream_t s, tsr_dtype act, float *sumexp, float *tlogit,
                             const void *logits, const float *rowmax, const int32_t *target, int n,
                             int V, int row0);
cudaError_t tsr_cuda_ce_grad(cudaStream_t s, tsr_dtype act, void *dlogits, const void *logits,
                             const float *rowmax, const float *sumexp, const int32_t *target,
                             const float *weight, int n, int V, int row0);

#ifdef __cplusplus
}
#endif

#endif
