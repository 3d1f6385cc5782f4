/* kernels/cuda/rope.h - rotate-half RoPE in place on x(n, n_heads * head_dim);
 * inverse: rotate by minus the angle (the gradient of RoPE).
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_ROPE_H
#define TSR_KERNELS_CUDA_ROPE_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t tsr_cuda_rope(cudaStream_t s, tsr_dtype act, void *x, const int32_t *pos,
                          const float *inv_freq, int n, int n_heads, int head_dim, int inverse);

#ifdef __cplusplus
}
#endif

#endif
