/* kernels/cuda/kv_store.h - k, v (n, kv_dim) into the caches at rows slot[i].
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_KV_STORE_H
#define TSR_KERNELS_CUDA_KV_STORE_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t tsr_cuda_kv_store(cudaStream_t s, tsr_dtype act, void *k_cache, void *v_cache,
                              const void *k, const void *v, const int32_t *slot, int n, int kv_dim);

#ifdef __cplusplus
}
#endif

#endif
