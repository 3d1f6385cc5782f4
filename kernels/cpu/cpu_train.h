/* kernels/cpu/cpu_train.h - the CPU backend's training (LoRA) ops: the
 * backward of every forward op the LoRA fine-tuning path uses, vocabulary-
 * parallel cross-entropy, AdamW, LoRA dropout and the small helpers.
 * cpu_backend.c puts them in its tsr_backend_i table; nothing else should
 * call them directly.
 *
 * The contracts (shapes, "+=" versus overwrite, aliasing) are the ones of the
 * matching slots in kernels/backend.h and are not repeated here. On the CPU
 * backend every pointer is host memory, activations are f32, and each op
 * returns TSR_OK, TSR_ERR_INVALID for arguments it can see are wrong (negative
 * sizes, an inconsistent attention descriptor, AdamW step < 1) or
 * TSR_ERR_NOMEM when its scratch cannot be allocated.
 *
 * What it is not: fast. These are the reference the CUDA kernels are tested
 * against; parallelism is used only where rows are independent. */
#ifndef TSR_KERNELS_CPU_CPU_TRAIN_H
#define TSR_KERNELS_CPU_CPU_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

tsr_status tsr_cpu_matmul_dx(tsr_backend *b, void *dx, const void *dy, const tsr_weight *w, int n,
                             int accumulate);
tsr_status tsr_cpu_lora_fwd(tsr_backend *b, void *y, const void *x, const float *A, const float *B,
                            float *xa, int n, int d_in, int d_out, int r, float scale);
tsr_status tsr_cpu_lora_bwd(tsr_backend *b, void *dx, float *dA, float *dB, const void *dy,
                            const void *x, const float *xa, const float *A, const float *B,
                            float *t, int n, int d_in, int d_out, int r, float scale);
tsr_status tsr_cpu_rmsnorm_bwd(tsr_backend *b, void *dx, const void *dy, const void *x,
                               const void *weight, int n, int dim, float eps);
tsr_status tsr_cpu_rope_bwd(tsr_backend *b, void *x, const int32_t *pos, const float *inv_freq,
                            int n, int n_heads, int head_dim);
tsr_status tsr_cpu_swiglu_bwd(tsr_backend *b, void *dgate, void *dup, const void *dout,
                              const void *gate, const void *up, int n, int dim);
tsr_status tsr_cpu_attn_train_fwd(tsr_backend *b, void *out, float *lse, const void *q,
                                  const void *k, const void *v, const tsr_attn_train_desc *d);
tsr_status tsr_cpu_attn_train_bwd(tsr_backend *b, void *dq, void *dk, void *dv, const void *dout,
                                  const void *q, const void *k, const void *v, const void *out,
                                  const float *lse, const tsr_attn_train_desc *d);
tsr_status tsr_cpu_ce_rowmax(tsr_backend *b, float *rowmax, const void *logits, int n, int V);
tsr_status tsr_cpu_ce_sums(tsr_backend *b, float *sumexp, float *tlogit, const void *logits,
                           const float *rowmax, const int32_t *target, int n, int V, int row0);
tsr_status tsr_cpu_ce_grad(tsr_backend *b, void *dlogits, const void *logits, const float *rowmax,
                           const float *sumexp, const int32_t *target, const float *weight, int n,
                           int V, int row0);
tsr_status tsr_cpu_adamw(tsr_backend *b, float *p, const float *g, float *m, float *v, size_t n,
                         const tsr_adamw_params *h, int t);
tsr_status tsr_cpu_sumsq(tsr_backend *b, double *out, const float *x, size_t n);
tsr_status tsr_cpu_scale_f32(tsr_backend *b, float *x, size_t n, float s);
tsr_status tsr_cpu_lora_dropout(tsr_backend *b, void *out, const void *x, int n, int d,
                                const tsr_lora_dropout_desc *dd, int accumulate);
tsr_status tsr_cpu_fill_zero(tsr_backend *b, void *p, size_t bytes);

#endif
