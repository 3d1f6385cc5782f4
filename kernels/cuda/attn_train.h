/* kernels/cuda/attn_train.h - causal attention over contiguous sequences,
 * forward and backward, for training.
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_ATTN_TRAIN_H
#define TSR_KERNELS_CUDA_ATTN_TRAIN_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out (n, n_head*hd) and lse (n, n_head) f32 from q, k, v. */
cudaError_t tsr_cuda_attn_train_fwd(cudaStream_t s, tsr_dtype act, void *out, float *lse,
                                    const void *q, const void *k, const void *v,
                                    const tsr_attn_train_desc *d);
/* dq, dk, dv from dout, q, k, v, out and lse. dk32, dv32: f32 scratch of
 * n * n_kv_head * head_dim values each (zeroed and accumulated here); delta:
 * f32 scratch of n * n_head values. */
cudaError_t tsr_cuda_attn_train_bwd(cudaStream_t s, tsr_dtype act, void *dq, void *dk, void *dv,
                                    const void *dout, const void *q, const void *k, const void *v,
                                    const void *out, const float *lse, float *dk32, float *dv32,
                                    float *delta, const tsr_attn_train_desc *d);

#ifdef __cplusplus
}
#endif

#endif
