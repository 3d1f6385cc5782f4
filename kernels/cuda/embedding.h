/* kernels/cuda/embedding.h - out(n, dim) = table (bf16 or f32) rows ids[i] - row0
 * (zeros outside [0, rows)).
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_EMBEDDING_H
#define TSR_KERNELS_CUDA_EMBEDDING_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t tsr_cuda_embedding(cudaStream_t s, tsr_dtype act, void *out, const void *table,
                               tsr_dtype table_type, int rows, int dim, const int32_t *ids, int n,
                               int row0);

#ifdef __cplusplus
}
#endif

#endif
