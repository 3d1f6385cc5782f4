/* kernels/cuda/lora_dropout.h - LoRA dropout's inverted mask over an (n, d)
 * block of activations: out = m * x / (1 - p), or out += that.
 *
 * The launcher enqueues on `s` and returns the launch status
 * (cudaGetLastError); `act` is TSR_F32 or TSR_BF16 (else
 * cudaErrorInvalidValue). Device pointers; the contract is lora_dropout's in
 * kernels/backend.h, the hash runtime/model/lora.h's. The host computes the
 * per-(seed, key, layer, target) stream and the threshold
 * (tsr_lora_dropout_stream, tsr_lora_dropout_threshold); the kernel hashes
 * each element from them. */
#ifndef TSR_KERNELS_CUDA_LORA_DROPOUT_H
#define TSR_KERNELS_CUDA_LORA_DROPOUT_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element (i, j) is token row0 + i, column col0 + j of the stream; dropped
 * when its 24 bits are < thr, else x * inv. */
cudaError_t tsr_cuda_lora_dropout(cudaStream_t s, tsr_dtype act, void *out, const void *x, int n,
                                  int d, uint64_t stream, int row0, int col0, uint32_t thr,
                                  float inv, int accumulate);

#ifdef __cplusplus
}
#endif

#endif
