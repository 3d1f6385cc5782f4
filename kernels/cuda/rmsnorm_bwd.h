/* kernels/cuda/rmsnorm_bwd.h - the input gradient of RMSNorm (frozen weight).
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_RMSNORM_BWD_H
#define TSR_KERNELS_CUDA_RMSNORM_BWD_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dx(n, dim) += d rmsnorm(x) * w / dx given dy. */
cudaError_t tsr_cuda_rmsnorm_bwd(cudaStream_t s, tsr_dtype act, void *dx, const void *dy,
                                 const void *x, const void *w, int n, int dim, float eps);

#ifdef __cplusplus
}
#endif

#endif
