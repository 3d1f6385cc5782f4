/* kernels/cuda/argmax.h - the greedy pick: the largest logit of each row and
 * its column.
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_ARGMAX_H
#define TSR_KERNELS_CUDA_ARGMAX_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* val(n) f32, idx(n) int32 on the device: each row's maximum of logits(n, V)
 * and its column, the lowest column on ties. */
cudaError_t tsr_cuda_argmax(cudaStream_t s, tsr_dtype act, float *val, int32_t *idx,
                            const void *logits, int n, int V);

#ifdef __cplusplus
}
#endif

#endif
