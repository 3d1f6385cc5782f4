/* kernels/cpu/cpu_qmatmul.h - the CPU backend's products with weights kept
 * in GGUF block formats (tsr_weight.dtype quantized; kernels/cpu/qdot.h has
 * the dot kernels they run on).
 *
 * Two products:
 *  - tsr_cpu_qmatmul, inference: each activation row is quantized to 8 bits
 *    per block (qdot.h) once; one row (decode) takes the dot kernel weight
 *    row by weight row, more rows the multi-row kernel (dotn) over tiles of
 *    weight rows that stay in L2, swept by all activation rows 8 at a time.
 *    Every value is bit for bit the dot kernel's, whatever n is and however
 *    rows fall into tiles and threads, so a row's result never depends on
 *    what it was batched with (a request gives the same tokens alone or
 *    among others).
 *  - tsr_cpu_qmatmul_exact, training: tiles of weight rows are dequantized
 *    into a per-thread f32 buffer that fits the L2 cache and multiplied by
 *    SGEMM with the f32 activations as they are, so matmul_dx is its exact
 *    gradient; no f32 copy of a whole weight ever exists.
 * TSR_QMM_TILE_MIN=<n> sends inference products of n rows or more down the
 * tiled path too (for benchmarks comparing the two; it gives up the
 * batch independence above).
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

/* The row count from which tsr_cpu_qmatmul takes the tiled path (INT_MAX
 * unless TSR_QMM_TILE_MIN says). */
int tsr_cpu_qmatmul_tile_min(void);

/* y(n, w.rows) = x(n, w.cols) W^T (or += when accumulate), W quantized, x
 * quantized per row to 8 bits. */
tsr_status tsr_cpu_qmatmul(tsr_cpu_scratch *s, float *y, const float *x, const tsr_weight *w, int n,
                           int accumulate);

/* The same product with x as it is (dequantized tiles of W into SGEMM). */
tsr_status tsr_cpu_qmatmul_exact(tsr_cpu_scratch *s, float *y, const float *x, const tsr_weight *w,
                                 int n, int accumulate);

/* dx(n, w.cols) = dy(n, w.rows) W (or +=), W quantized: the input gradient of
 * tsr_cpu_qmatmul, on dequantized tiles of W (the backward of QLoRA). */
tsr_status tsr_cpu_qmatmul_dx(tsr_cpu_scratch *s, float *dx, const float *dy, const tsr_weight *w,
                              int n, int accumulate);

#endif
