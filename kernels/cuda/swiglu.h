/* kernels/cuda/swiglu.h - out(n*dim) = silu(gate) * up; out may alias gate.
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_SWIGLU_H
#define TSR_KERNELS_CUDA_SWIGLU_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t tsr_cuda_swiglu(cudaStream_t s, tsr_dtype act, void *out, const void *gate,
                            const void *up, size_t count);

#ifdef __cplusplus
}
#endif

#endif
