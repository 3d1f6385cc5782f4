/* kernels/cpu/cpu_attention.h - the CPU backend's KV store and paged
 * attention (its kv_store and attention slots), over a cache of f16 or f32.
 *
 * Attention is blocked in the manner of flash attention: the tokens of one
 * sequence are cut into tiles of up to 16 (sorted by position), and each
 * (tile, KV head) streams its keys and values in blocks of 32 positions
 * through an online softmax (a running maximum and sum per query row), so no
 * row of scores over the whole context is ever kept and each block of K and V
 * (converted once from f16 where the cache holds f16) serves every query row
 * of the tile and of the KV head's GQA group while it sits in L1, two rows at
 * a time. Tiles and
 * KV heads (and, when they are too few to keep the threads busy, single query
 * heads) are spread over the OpenMP threads, so one long prefill uses them all.
 *
 * A query row's result depends only on its q, its position and the cache:
 * key blocks start at fixed positions (multiples of 32), each row runs the
 * same arithmetic whatever tile, thread or batch it lands in, so a token gives
 * the same bits alone or batched with others. Against the unblocked softmax
 * the result differs only by the reordered sums (about 1e-7 relative).
 *
 * Instruction sets: `isa` is a level of kernels/cpu/qdot.h; TSR_ISA_REF runs
 * plain C (expf, scalar conversions), any higher level AVX2 + FMA + F16C
 * (a vectorised exp within 2 ulp, _mm256_cvtph_ps / _mm256_cvtps_ph with
 * round-to-nearest-even, bit for bit what tsr_f32_to_f16 gives except NaN
 * payloads). Head dims that are not a multiple of 8 run the plain C code at
 * every level. The caller passes a level the CPU supports (tsr_isa_best).
 *
 * What it is not: training attention (cpu_train.c: attn_train_fwd/bwd over
 * contiguous sequences), or a cache allocator (runtime/model/kv_cache.h). */
#ifndef TSR_KERNELS_CPU_CPU_ATTENTION_H
#define TSR_KERNELS_CPU_CPU_ATTENTION_H

#include "kernels/backend.h"
#include "kernels/cpu/qdot.h"

/* Writes k and v (n, kv_dim) f32 into the caches (cache_dtype: TSR_F32,
 * copied; TSR_F16, rounded to nearest even) at row slot[i] of each.
 * TSR_ERR_UNSUPPORTED for any other cache type. Host memory throughout. */
tsr_status tsr_cpu_kv_store(void *k_cache, void *v_cache, tsr_dtype cache_dtype, const float *k,
                            const float *v, const int32_t *slot, int n, int kv_dim, tsr_isa isa);

/* out(n, n_head * head_dim) f32 = softmax(q k^T * scale) v for every token
 * of d over the paged caches of type d->kv_dtype (TSR_F16 or TSR_F32, else
 * TSR_ERR_UNSUPPORTED), as tsr_attn_desc says; q f32 (n, n_head * head_dim).
 * Runs on the OpenMP threads. TSR_ERR_NOMEM when scratch cannot be had;
 * TSR_ERR_INVALID when n_kv_head does not divide n_head. */
tsr_status tsr_cpu_attention(float *out, const float *q, const void *k_cache, const void *v_cache,
                             const tsr_attn_desc *d, tsr_isa isa);

#endif
