/* kernels/cuda/topk.h - the k best logits of each row and their columns, for
 * sampling with top-k on the device.
 *
 * The launcher enqueues on `s` and returns the launch status
 * (cudaGetLastError); `act` is TSR_F32 or TSR_BF16 (else
 * cudaErrorInvalidValue), and so is a k outside 1..TSR_TOPK_MAX. Device
 * pointers; the order and the padding are topk's in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_TOPK_H
#define TSR_KERNELS_CUDA_TOPK_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* val(n, k) f32 and idx(n, k) int32 on the device: row i's k best entries of
 * logits(n, V), best first (tsr_topk_before's order); (-inf, -1) past V. */
cudaError_t tsr_cuda_topk(cudaStream_t s, tsr_dtype act, float *val, int32_t *idx,
                          const void *logits, int n, int V, int k);

#ifdef __cplusplus
}
#endif

#endif
