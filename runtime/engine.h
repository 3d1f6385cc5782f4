/* runtime/engine.h - the SPMD step loop over a tp x pp grid of ranks.
 *
 * Every rank holds one shard (tsr_model over its tsr_model_slice) and a KV
 * cache for its layers and KV heads. World rank 0 decides each step and
 * broadcasts a compact descriptor (header + int32 arrays, not protobuf); every
 * rank then runs it: PP stage s receives hidden states from stage s-1, runs
 * its layers, and sends them on; the last stage turns its vocabulary slice of
 * logits into what the step asked for (greedy tokens through a max-with-index
 * all-reduce over the TP group, or full logits gathered over it) and sends
 * the result to world rank 0. A step's tokens are cut into micro-batches so
 * the stages work on different micro-batches at the same time.
 *
 * KV blocks are allocated identically on every rank: the descriptor carries
 * the (sequence, position) of every token and the slots to release, and every
 * rank replays the same reserve/release calls.
 *
 * Ranks other than 0 sit in tsr_engine_serve, waiting for descriptors without
 * spinning, until rank 0 calls tsr_engine_stop.
 *
 * What it is not: a scheduler (which sequences go into a step is the caller's
 * decision) and not thread-safe (one engine thread per rank). */
#ifndef TSR_RUNTIME_ENGINE_H
#define TSR_RUNTIME_ENGINE_H

#include <stdint.h>

#include "comm/comm.h"
#include "runtime/lm.h"
#include "runtime/model.h"
#include "shard/model_file.h"
#include "shard/plan.h"

typedef enum {
    TSR_OUT_NONE = 0,   /* no output (prefill chunk whose logits are not needed) */
    TSR_OUT_ARGMAX = 1, /* greedy token per output row */
    TSR_OUT_LOGITS = 2, /* full logits per output row, at rank 0 */
} tsr_out_kind;

/* One step, as rank 0 describes it. Arrays are host memory. A step with no
 * tokens only releases slots. */
typedef struct {
    int n_tokens;
    const int32_t *tokens; /* (n_tokens) */
    const int32_t *pos;    /* (n_tokens) */
    const int32_t *seq;    /* (n_tokens) cache slot of each token's sequence */
    int n_out;
    const int32_t *out_rows; /* (n_out) indices into the step's tokens */
    tsr_out_kind out;
    int n_release;
    const int32_t *release; /* (n_release) slots whose blocks are freed before the step */
} tsr_step;

typedef struct {
    int threads;        /* CPU threads for this rank; 0 = cores / ranks on this host */
    int max_seqs;       /* cache slots */
    int max_ctx;        /* positions per sequence */
    int kv_blocks;      /* 0 = max_seqs * ceil(max_ctx / block_size) */
    int block_size;     /* 0 = 16 */
    int micro_batches;  /* per step for PP; 0 = pp */
} tsr_engine_config;

#define TSR_ENGINE_CONFIG_INIT {0, 1, 4096, 0, 16, 0}

typedef struct {
    tsr_comm_grid *grid;
    tsr_engine_config cfg;
    tsr_model_config mcfg;
    tsr_shard_plan plan;
    tsr_model_slice slice;
    tsr_backend *be;
    tsr_model model;
    int model_loaded;
    tsr_kv_cache kv;
    int first_stage, last_stage;
    /* scratch, grown as needed */
    uint8_t *desc;        size_t desc_cap;
    float *hidden_in;     size_t hidden_in_cap;  /* (tokens, C) from the previous stage */
    float *hidden_out;    size_t hidden_out_cap; /* (tokens, C) to the next stage */
    float *logits;        size_t logits_cap;     /* (n_out, V_local) */
    float *mb_logits;     size_t mb_logits_cap;  /* one micro-batch's rows */
    float *gathered;      size_t gathered_cap;   /* (tp, n_out, widest slice) */
    float *best_val;      size_t best_val_cap;   /* greedy: per output row */
    int32_t *best_idx;    size_t best_idx_cap;
    int lm_release_pending; /* tsr_engine_lm: free slot 0 with the next step */
} tsr_engine;

/* Builds this rank's part: the shard plan (refusing impossible layouts before
 * any weight is read), its weights, its KV cache. Collective over the world:
 * if any rank fails, every rank returns an error (the failing rank's message
 * names the problem; the others say a peer failed). */
tsr_status tsr_engine_init(tsr_engine *e, tsr_comm_grid *grid, const tsr_model_file_t *mf,
                           const tsr_plan_config *pc, const tsr_engine_config *cfg);
void tsr_engine_free(tsr_engine *e); /* NULL ok */

/* Rank 0: runs one step on every rank. Results at rank 0: tokens (n_out) for
 * TSR_OUT_ARGMAX, logits (n_out, n_vocab) for TSR_OUT_LOGITS; the other may
 * be NULL. Errors in the step's content (a token outside the vocabulary,
 * no KV space) are found on rank 0 before anything is broadcast. */
tsr_status tsr_engine_step(tsr_engine *e, const tsr_step *s, int32_t *tokens, float *logits);

/* Other ranks: execute steps until rank 0 calls tsr_engine_stop. */
tsr_status tsr_engine_serve(tsr_engine *e);

/* Rank 0: tells every rank to leave tsr_engine_serve. */
tsr_status tsr_engine_stop(tsr_engine *e);

/* Rank 0: a tsr_lm running one sequence (cache slot 0) through the engine,
 * for the generate / perplexity loops. e must outlive it. */
void tsr_engine_lm(tsr_engine *e, tsr_lm *out);

/* Positions still free for `seq`, as rank 0 sees it. */
int tsr_engine_free_blocks(const tsr_engine *e);

#endif
