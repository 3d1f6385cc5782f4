/* kernels/cuda/swiglu_bwd.h - gradients of out = silu(gate) * up.
 *
 * Launchers enqueue on `s` and return the launch status (cudaGetLastError);
 * `act` is TSR_F32 or TSR_BF16 (else cudaErrorInvalidValue). Device pointers;
 * shapes and contracts as in kernels/backend.h. */
#ifndef TSR_KERNELS_CUDA_SWIGLU_BWD_H
#define TSR_KERNELS_CUDA_SWIGLU_BWD_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dgate, dup (count each) from dout; dgate may alias gate, dup may alias up. */
cudaError_t tsr_cuda_swiglu_bwd(cudaStream_t s, tsr_dtype act, void *dgate, void *dup,
                                const void *dout, const void *gate, const void *up, size_t count);

#ifdef __cplusplus
}
#endif

#endif
