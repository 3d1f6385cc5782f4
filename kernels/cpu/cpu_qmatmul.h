/* kernels/cpu/cpu_qmatmul.h - the CPU backend's products with weights kept
 * in GGUF block formats (tsr_weight.dtype quantized; kernels/cpu/qdot.h has
 * the dot kernels they run on).
 *
 * Either way each activation row is first quantized to 8 bits per block
 * (qdot.h), so both paths compute the same sums up to f32 rounding and a
 * result does not depend on how requests were batched. Two paths, picked by
 * the number of rows n of the activations:
 *  - n below the tile threshold (decode, small batches): every weight row is
 *    read once and dotted with all n quantized rows (int8 kernels) while it
 *    sits in L1;
 *  - n at or above it (prefill): tiles of weight rows are dequantized into a
 *    per-thread f32 buffer that fits the L2 cache and multiplied by SGEMM with
 *    the quantized rows decoded to f32, so no f32 copy of a whole weight ever
 *    exists.
 * TSR_QMM_TILE_MIN=<n> moves the threshold (benchmarks, tests of both paths).
 *
 * What it is not: the f32 path (cpu_backend.c keeps SGEMM on f32 weights). */
#ifndef TSR_KERNELS_CPU_QMATMUL_H
#define TSR_KERNELS_CPU_QMATMUL_H

#include "kernels/backend.h"

/* Scratch that grows on demand and is reused across calls (64-byte aligned;
 * one per backend: ops of one backend never run concurrently). */
typedef struct {
    void *p;
    size_t cap;
} tsr_cpu_scratch;

void tsr_cpu_scratch_free(tsr_cpu_scratch *s);

/* Whether the CPU backend keeps weights of type t in their blocks (it has a
 * dot kernel for t on this CPU). */
int tsr_cpu_qtype_kept(tsr_dtype t);

/* The row count from which tsr_cpu_qmatmul takes the tiled SGEMM path. */
int tsr_cpu_qmatmul_tile_min(void);

/* y(n, w.rows) = x(n, w.cols) W^T (or += when accumulate), W quantized. */
tsr_status tsr_cpu_qmatmul(tsr_cpu_scratch *s, float *y, const float *x, const tsr_weight *w, int n,
                           int accumulate);

/* dx(n, w.cols) = dy(n, w.rows) W (or +=), W quantized: the input gradient of
 * tsr_cpu_qmatmul, on dequantized tiles of W (the backward of QLoRA). */
tsr_status tsr_cpu_qmatmul_dx(tsr_cpu_scratch *s, float *dx, const float *dy, const tsr_weight *w,
                              int n, int accumulate);

#endif
