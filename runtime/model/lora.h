/* runtime/model/lora.h - LoRA adapters over this rank's shard of a model.
 *
 * An adapter adds, to each targeted projection y = x W^T of each layer this
 * rank holds, the low-rank delta  scale * (x A^T) B^T  with A (r, d_in) and
 * B (d_out, r), scale = alpha / r (or alpha / sqrt(r) with rsLoRA). The base
 * weights stay frozen; A, B, their gradients dA, dB and the AdamW moments are
 * f32 device buffers of the model's backend.
 *
 * Sharding follows the base weight it adapts (Megatron style, shard/plan.h):
 *  - column-parallel targets (q, k, v, gate, up: the OUTPUT rows of W are
 *    split over TP ranks) keep A whole on every TP rank (replicated) and B
 *    sliced by rows like W;
 *  - row-parallel targets (o, down: the INPUT columns of W are split) keep A
 *    sliced by columns like W and B whole on every TP rank.
 * With replicated KV heads (tp > n_head_kv) the B of k and v covers the one
 * KV head this rank holds, which kv_share TP ranks hold alike.
 * A replicated factor's gradient is a partial sum on each rank until it is
 * all-reduced (runtime/train/train.h: tsr_train_reduce_grads, and the optimizer
 * step does it). Each matrix says which of its factors is replicated and
 * whether this rank's copy is the one that counts (norms, saving).
 *
 * Initialisation as Hugging Face PEFT does it: B = 0 and A drawn from
 * kaiming_uniform(a = sqrt(5)), i.e. uniform(-1/sqrt(d_in), 1/sqrt(d_in))
 * with the FULL d_in. The full A of every (layer, target) is drawn from its
 * own deterministic stream (tsr_lora_init_values) and each rank keeps its
 * columns, so every layout (tp, pp) gets the same adapter from the same seed.
 *
 * Memory: every parameter lives in one f32 slab, laid out in three regions
 * (factors replicated over the TP group | B of k/v shared by kv_share ranks |
 * factors held by this rank alone); gradients, first and second moments are
 * slabs of the same layout. One all-reduce per region and one AdamW call
 * cover the whole adapter.
 *
 * Dropout (training only), as Hugging Face PEFT's lora_dropout: the delta of
 * a target becomes scale * (dropout(x) A^T) B^T, dropout on the LoRA branch's
 * input only (the base projection sees x unmasked), inverted (a kept element
 * is x / (1 - p), a dropped one 0), each (layer, target) with its own mask.
 * The training forward (runtime/train/train.h, keep = 1) and its backward's
 * recompute draw the same mask, and the backward masks the branch's input
 * gradient with it (d/dx of m x / (1-p) is m / (1-p)). Evaluation (the
 * loss-only forward) and inference (runtime/model/model.c) never drop.
 *
 * The mask is a pure function of the element's place in the whole batch, so
 * every parallel layout (tp, pp, micro-batches) draws the same one: element
 * (token i, input column j) of (layer L, target t) is dropped when
 *     bits(i, j) < ceil(p * 2^24)   (i.e. u = bits * 2^-24 < p)
 * with, in unsigned 64-bit arithmetic (mod 2^64),
 *     mix(z)     = splitmix64's output function:
 *                    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
 *                    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
 *                    z =  z ^ (z >> 31)
 *     G          = 0x9E3779B97F4A7C15
 *     stream     = mix(mix(mix(seed ^ 0xD1B54A32D192ED03) ^ key)
 *                      + G * (1 + 7 L + t))
 *     bits(i, j) = mix(mix(stream ^ i) + G * (1 + j)) >> 40
 * where seed is cfg.seed, key the batch's dropout_key (tsr_train_batch), L
 * the global layer index, t the tsr_lora_target value (q = 0 .. down = 6),
 * i the token's index in the whole batch (the micro-batch's token_offset
 * plus its row) and j the column within the FULL d_in (a row-parallel
 * target's slice adds in_begin). p is cfg.dropout as an f32; a kept value is
 * x * (1.0f / (1.0f - p)), the factor computed in f32.
 * (kernels/backend.c: tsr_lora_dropout_stream / _bits / _threshold;
 * tests/reference/train_ref.py: dropout_keep, the NumPy copy.)
 *
 * What it is not: no forward or backward (runtime/train/train.h), no file format
 * (saving and loading gather these pieces), no communication. */
#ifndef TSR_RUNTIME_LORA_H
#define TSR_RUNTIME_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "shard/config.h"
#include "shard/lora_targets.h"
#include "shard/plan.h"

/* The targets (tsr_lora_target, TSR_LORA_TARGET_BIT, TSR_LORA_TARGETS_ALL)
 * are shard/lora_targets.h's, shared with the PEFT files. */

typedef struct {
    int rank;         /* r >= 1 */
    float alpha;      /* the scale's numerator, > 0 */
    int use_rslora;   /* 1: scale = alpha / sqrt(r) (rsLoRA); 0: alpha / r */
    unsigned targets; /* TSR_LORA_TARGET_BIT mask, not 0 */
    float dropout;    /* on the LoRA input while training, in [0, 1); 0: none */
    uint64_t seed;    /* A's initialisation and dropout's masks */
} tsr_lora_config;

/* PEFT's defaults: r = 8, alpha = 8, q and v. */
#define TSR_LORA_CONFIG_INIT                                                                       \
    { 8, 8.0f, 0, TSR_LORA_TARGET_BIT(TSR_LORA_Q) | TSR_LORA_TARGET_BIT(TSR_LORA_V), 0.0f, 0 }

/* Where this rank sits: its slice of the model and its place in the TP group. */
typedef struct {
    tsr_model_slice slice;
    int tp_rank, tp_size;
    int kv_share; /* TP ranks holding each of this rank's KV heads (1 unless replicated) */
} tsr_lora_shard;

/* The whole model on one rank. */
tsr_lora_shard tsr_lora_shard_single(const tsr_model_config *c);

/* Rank (tp_rank, pp_rank) of plan p. TSR_ERR_RANGE when outside the plan. */
tsr_status tsr_lora_shard_of(const tsr_shard_plan *p, int tp_rank, int pp_rank,
                             tsr_lora_shard *out);

/* One adapted projection of one layer, as this rank holds it. */
typedef struct {
    int present; /* 0: this target is not adapted (every other field is 0) */
    int layer;   /* global layer index */
    tsr_lora_target target;
    int d_in, d_out;          /* the FULL base weight is (d_out, d_in) */
    int in_begin, n_in;       /* A's columns held here: [in_begin, in_begin + n_in) of d_in */
    int out_begin, n_out;     /* B's rows held here: [out_begin, out_begin + n_out) of d_out */
    int a_replicated;         /* 1: column-parallel (A whole on every TP rank, B sliced);
                             0: row-parallel (A sliced, B whole on every TP rank) */
    int b_shared;             /* k/v with replicated KV heads: kv_share ranks hold these B rows */
    int a_owner, b_owner;     /* 1 when this rank's copy of the factor is the one that counts
                             (norms, saving): always for a factor only this rank holds; for a
                             copy held by several ranks, only on the first of them */
    size_t a_off, b_off;      /* offsets (floats) of A and B in the adapter's slabs */
    float *A, *B;             /* (r, n_in), (n_out, r) row-major: param slab + a_off / b_off */
    float *dA, *dB;           /* gradients, same shapes (grad slab) */
    float *mA, *vA, *mB, *vB; /* AdamW moments, same shapes */
} tsr_lora_matrix;

typedef struct {
    tsr_lora_config cfg;
    float scale;     /* alpha / r or alpha / sqrt(r) */
    tsr_backend *be; /* not owned */
    tsr_model_config mcfg;
    tsr_lora_shard shard;
    int layer_begin, n_layers; /* this rank's layers */
    tsr_lora_matrix *mats;     /* (n_layers * TSR_LORA_N_TARGETS), layer-major */
    /* slabs of n_params f32 each; regions [repl | shared | local] */
    size_t n_params;
    size_t repl_off, repl_n, shared_off, shared_n, local_off, local_n;
    float *param, *grad, *m, *v;
    int step; /* optimizer steps taken */
    /* Accumulated by every backward since the last optimizer step (train.h). */
    double loss_sum;    /* sum of w_i * CE_i (last pipeline stage; 0 elsewhere) */
    double weight_sum;  /* sum of w_i over positions with a target */
    long n_loss_tokens; /* positions with a target and w_i != 0 */
    long n_tokens;      /* tokens of the batches */
    int n_batches;      /* ForwardBackward calls */
    int grads_reduced;  /* 1: the replicated factors' grads hold the full sum on every
                                    rank (tsr_train_reduce_grads); 0: partial sums */
} tsr_lora_adapter;

/* Which buffer of a matrix tsr_lora_get/set move. */
typedef enum {
    TSR_LORA_A = 0,
    TSR_LORA_B,
    TSR_LORA_DA,
    TSR_LORA_DB,
    TSR_LORA_MA,
    TSR_LORA_VA,
    TSR_LORA_MB,
    TSR_LORA_VB,
} tsr_lora_buf;

/* "q", "k", "v", "o", "gate", "up", "down"; "?" outside the enum. */
const char *tsr_lora_target_name(tsr_lora_target t);
/* PEFT's module names: "q_proj" ... "down_proj"; "?" outside the enum. */
const char *tsr_lora_target_peft_name(tsr_lora_target t);

/* Parses a comma-separated target list ("q,k,v,o,gate,up,down"; PEFT's
 * names "q_proj" etc. and "all" are accepted too; spaces around items are
 * ignored) into a TSR_LORA_TARGET_BIT mask. TSR_ERR_INVALID naming the bad
 * item, or for an empty list. */
tsr_status tsr_lora_parse_targets(const char *s, unsigned *out);

/* Checks cfg: r >= 1, alpha > 0 and finite, targets a non-empty subset,
 * dropout in [0, 1) (not NaN); TSR_ERR_INVALID naming the bad field. */
tsr_status tsr_lora_config_check(const tsr_lora_config *cfg);

/* alpha / r, or alpha / sqrt(r) with use_rslora. */
float tsr_lora_scale(const tsr_lora_config *cfg);

/* The values the initialisation draws for the FULL matrix of (layer,
 * target) under seed: n uniform values in [-bound, bound) in row-major order,
 * written to out (host). The stream: xoshiro256** (Blackman & Vigna) seeded
 * with four splitmix64 outputs started from
 *   seed ^ (0x9E3779B97F4A7C15 * (1 + layer * TSR_LORA_N_TARGETS + target)),
 * each value (2 u - 1) * bound with u = (next >> 11) * 2^-53, rounded to f32.
 * Also used by tests to draw reproducible B matrices. Cannot fail. */
void tsr_lora_init_values(uint64_t seed, int layer, int target, float bound, float *out, size_t n);

/* Creates the adapter for the layers and slice of `shard` on backend be:
 * A from cfg->seed as described above, B, gradients, moments and the
 * accumulators zero, step 0. TSR_ERR_INVALID for a bad config or a shard that
 * does not fit mc; TSR_ERR_NOMEM. On failure
 * the adapter is zeroed (tsr_lora_adapter_free on it is harmless). */
tsr_status tsr_lora_adapter_init(tsr_lora_adapter *a, const tsr_lora_config *cfg,
                                 const tsr_model_config *mc, const tsr_lora_shard *shard,
                                 tsr_backend *be);
/* The same for inference only: the parameters without gradient and AdamW
 * slabs (a quarter of the memory). dA/dB/mA/vA/mB/vB are NULL; the training
 * functions refuse such an adapter, and tsr_lora_get/set of those buffers
 * fail with TSR_ERR_INVALID. */
tsr_status tsr_lora_adapter_init_frozen(tsr_lora_adapter *a, const tsr_lora_config *cfg,
                                        const tsr_model_config *mc, const tsr_lora_shard *shard,
                                        tsr_backend *be);
void tsr_lora_adapter_free(tsr_lora_adapter *a); /* NULL ok */

/* The matrix of (global layer, target), or NULL when this rank does not hold
 * the layer or the target is not adapted. */
tsr_lora_matrix *tsr_lora_matrix_of(tsr_lora_adapter *a, int layer, tsr_lora_target t);
const tsr_lora_matrix *tsr_lora_matrix_of_c(const tsr_lora_adapter *a, int layer,
                                            tsr_lora_target t);

/* Elements of this rank's piece of buffer `which` of m: r * n_in for A,
 * dA, mA, vA; n_out * r for the B ones. */
size_t tsr_lora_piece_size(const tsr_lora_adapter *a, const tsr_lora_matrix *m, tsr_lora_buf which);

/* Copies this rank's piece of buffer `which` of (layer, target) to host f32
 * `out` (tsr_lora_piece_size elements, row-major as in tsr_lora_matrix) /
 * from host `in`. Gradients of replicated factors are partial sums until
 * reduced (tsr_train_reduce_grads). TSR_ERR_INVALID when the matrix is not
 * held here. get synchronises; set writes every rank's own copy only, so the
 * caller keeps replicated factors equal across ranks. */
tsr_status tsr_lora_get(const tsr_lora_adapter *a, int layer, tsr_lora_target t, tsr_lora_buf which,
                        float *out);
tsr_status tsr_lora_set(tsr_lora_adapter *a, int layer, tsr_lora_target t, tsr_lora_buf which,
                        const float *in);

/* Sets (layer, target) from the whole model's matrices A (r, d_in) and B
 * (d_out, r), host f32: this rank keeps its columns [in_begin, +n_in) of A
 * and its rows [out_begin, +n_out) of B. TSR_OK and nothing done when the
 * matrix is not held here (another stage's layer, or a target it lacks). */
tsr_status tsr_lora_set_full(tsr_lora_adapter *a, int layer, tsr_lora_target t, const float *A,
                             const float *B);

/* Zeroes every gradient (not the accumulators) and marks them unreduced. */
tsr_status tsr_lora_zero_grads(tsr_lora_adapter *a);

/* Zeroes loss_sum, weight_sum, n_loss_tokens, n_tokens and n_batches. */
void tsr_lora_reset_accum(tsr_lora_adapter *a);

/* Sets `bytes` bytes of device memory p of be to zero (0.0 in f32, f16 and
 * bf16 alike), NaNs included: the backend's fill_zero, or where it has none
 * copies from a constant zero block in pieces (to_device). */
tsr_status tsr_lora_fill_zero(tsr_backend *be, void *p, size_t bytes);

#endif
