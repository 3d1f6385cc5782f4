/* kernels/cuda/add.h - y(n, dim) += x(n, dim); and y(n, dim) += bias(dim).
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_ADD_H
#define TSR_KERNELS_CUDA_ADD_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t tsr_cuda_add(cudaStream_t s, tsr_dtype act, void *y, const void *x, size_t count);
cudaError_t tsr_cuda_add_bias(cudaStream_t s, tsr_dtype act, void *y, const void *bias, int n,
                              int dim);

#ifdef __cplusplus
}
#endif

#endif
