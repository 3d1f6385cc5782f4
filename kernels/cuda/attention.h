/* kernels/cuda/attention.h - paged causal attention, online softmax (no score matrix).
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_ATTENTION_H
#define TSR_KERNELS_CUDA_ATTENTION_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t tsr_cuda_attention(cudaStream_t s, tsr_dtype act, void *out, const void *q,
                               const void *k_cache, const void *v_cache, const tsr_attn_desc *d);

#ifdef __cplusplus
}
#endif

#endif
