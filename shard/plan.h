/* shard/plan.h - how a model is split over a tp x pp grid of ranks.
 *
 * The plan is computed once, identically on every rank, from the model's
 * hyper-parameters and the requested degrees. It holds the layout of ALL
 * ranks: per pipeline stage its contiguous layer range, per tensor-parallel
 * rank its query heads, KV heads, FFN columns and vocabulary rows. A rank
 * takes its own part with tsr_shard_plan_slice() and hands it to the model
 * loader; --verbose and dry runs print the whole table.
 *
 * The rules (DESIGN.md, "Parallelism rules"; Megatron-style TP):
 *  - PP: contiguous layer ranges, even by default (the first n_layer % pp
 *    stages get one more layer) or as given by pp_layers. pp > n_layer is
 *    refused.
 *  - Heads go in whole KV groups of g = n_head / n_head_kv query heads.
 *    tp <= n_head_kv: the KV heads are split as evenly as possible (first
 *    ranks get one more) and each rank takes the g query heads of each of its
 *    KV heads, so 9 heads / 3 KV heads on tp=2 is 6+3.
 *    tp > n_head_kv: KV heads are replicated. tp must be a multiple of
 *    n_head_kv (r = tp / n_head_kv ranks share one KV head) and at most
 *    n_head (each rank at least one query head); the g query heads of a group
 *    are split over its r ranks as evenly as possible, each holding a copy of
 *    the group's KV head.
 *  - FFN columns: in blocks of 32 columns (so slices of quantized or
 *    vectorised rows stay aligned) when n_ff is a multiple of 32 and there are
 *    at least tp blocks, the blocks dealt as evenly as possible; otherwise a
 *    plain even split. Every rank needs at least one column.
 *  - Vocabulary rows (embedding and LM head): an even split, at least one row
 *    per rank.
 * Within a rank's slice, local query head i uses local KV head
 * i / (n_head / n_kv_head), as the model's forward pass assumes.
 *
 * What it is not: it does not decide which world rank is which (tp, pp)
 * (comm/comm.h does), it opens no files and it allocates no weights. */
#ifndef TSR_SHARD_PLAN_H
#define TSR_SHARD_PLAN_H

#include <stddef.h>

#include "base/status.h"
#include "shard/config.h"

/* Which part of the model this rank holds. tsr_model_slice_full()
 * (runtime/model/model.h) gives all of it (one rank). */
typedef struct {
    int layer_begin, layer_end;   /* [begin, end) */
    int head_begin, n_head;       /* query heads */
    int kv_head_begin, n_kv_head; /* KV heads; the query heads map onto them */
    int ff_begin, n_ff;           /* FFN columns */
    int vocab_begin, n_vocab;     /* embedding / LM-head rows */
} tsr_model_slice;

/* The requested layout. Start from TSR_PLAN_CONFIG_INIT (one rank). */
typedef struct {
    int tp, pp;           /* degrees, each >= 1 */
    const int *pp_layers; /* NULL: even split; else layers per stage (--pp-layers 16,14): every
                             entry >= 1, summing to n_layer. Not owned; read only during init. */
    int n_pp_layers;      /* entries in pp_layers; must equal pp */
} tsr_plan_config;

#define TSR_PLAN_CONFIG_INIT                                                                       \
    { 1, 1, NULL, 0 }

/* One pipeline stage. */
typedef struct {
    int layer_begin, layer_end; /* [begin, end) */
} tsr_plan_stage;

/* One tensor-parallel rank; the same in every stage. */
typedef struct {
    int head_begin, n_head;       /* query heads */
    int kv_head_begin, n_kv_head; /* KV heads (one, shared with other ranks, when replicated) */
    int ff_begin, n_ff;           /* FFN columns */
    int vocab_begin, n_vocab;     /* vocabulary rows */
} tsr_plan_tp_part;

typedef struct {
    int tp, pp;
    /* The model's sizes the plan was made for. */
    int n_layer, n_head, n_head_kv, n_ff, n_vocab;
    int kv_replicated;       /* 1 when tp > n_head_kv */
    int kv_ranks_per_head;   /* ranks holding a copy of each KV head: tp / n_head_kv, or 1 */
    int ff_block;            /* FFN split granularity: 32 or 1 */
    tsr_plan_stage *stages;  /* (pp), owned */
    tsr_plan_tp_part *parts; /* (tp), owned */
} tsr_shard_plan;

/* Computes the plan of `c` over pc->tp x pc->pp ranks (pc NULL: one rank).
 * TSR_ERR_INVALID when the layout is impossible, with a message naming the
 * model's numbers and the requested layout, e.g. "tp=4 is impossible for 9
 * attention heads / 3 KV heads: ..."; TSR_ERR_NOMEM. On failure *out is
 * zeroed (tsr_shard_plan_free on it is harmless). Does not compare tp * pp
 * with the job's size: see tsr_shard_plan_check_world. */
tsr_status tsr_shard_plan_init(const tsr_model_config *c, const tsr_plan_config *pc,
                               tsr_shard_plan *out);

/* Frees the plan's arrays and zeroes it. NULL ok. */
void tsr_shard_plan_free(tsr_shard_plan *p);

/* The slice of rank (tp_rank, pp_rank). TSR_ERR_RANGE when a rank is outside
 * the plan. Cannot fail otherwise. */
tsr_status tsr_shard_plan_slice(const tsr_shard_plan *p, int tp_rank, int pp_rank,
                                tsr_model_slice *out);

/* TSR_ERR_INVALID unless world_size == tp * pp, with a message such as
 * "tp=2 x pp=2 needs 4 ranks, the job has 3". (comm/comm.h already lets the
 * world be a multiple of tp * pp for data parallelism; until the runtime runs
 * replicas the plan wants exactly one.) */
tsr_status tsr_shard_plan_check_world(const tsr_shard_plan *p, int world_size);

/* Writes a human-readable table of the plan (degrees, stages, per-TP-rank
 * ranges) into buf as snprintf does: at most n bytes including the NUL, and
 * returns the length of the whole text, so a result >= n means it was cut
 * (buf may be NULL when n is 0, to measure). */
int tsr_shard_plan_describe(const tsr_shard_plan *p, char *buf, size_t n);

/* Parameters held by rank (tp_rank, pp_rank) times bytes_per_param: its
 * layers' Q/K/V/O, gate/up/down slices (and Q/K/V biases when c->qkv_bias),
 * the replicated per-layer norms, the embedding rows on the first stage, the
 * LM-head rows and the output norm on the last stage (the embedding rows
 * again when the head is tied, counted once when one stage is both). `c`
 * must be the config the plan was made from; returns 0 when it is not or a
 * rank is outside the plan. An estimate of weight memory, not of
 * activations or the KV cache. */
size_t tsr_shard_plan_weight_bytes(const tsr_shard_plan *p, const tsr_model_config *c, int tp_rank,
                                   int pp_rank, size_t bytes_per_param);

#endif
