/* kernels/cuda/row_expsum.h - each row's maximum and sum of exp((l - max) /
 * T), for sampling with top_p or min_p from device-side candidates.
 *
 * The launcher enqueues on `s` and returns the launch status
 * (cudaGetLastError); `act` is TSR_F32 or TSR_BF16 (else
 * cudaErrorInvalidValue). Device pointers; the results are row_expsum's in
 * kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_ROW_EXPSUM_H
#define TSR_KERNELS_CUDA_ROW_EXPSUM_H

#include <cuda_runtime.h>

#include "kernels/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out(n, 2) f32: (max, sum exp((l - max) * inv_t[i])) of row i of
 * logits(n, V); inv_t (n) f32. NaN sum for a row with a NaN entry or no
 * finite maximum. */
cudaError_t tsr_cuda_row_expsum(cudaStream_t s, tsr_dtype act, float *out, const void *logits,
                                const float *inv_t, int n, int V);

#ifdef __cplusplus
}
#endif

#endif
