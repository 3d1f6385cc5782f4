/* runtime/engine/engine.h - the SPMD step loop over a tp x pp grid of ranks.
 *
 * Every rank holds one shard (tsr_model over its tsr_model_slice) and a KV
 * cache for its layers and KV heads. World rank 0 decides each step and
 * broadcasts a compact descriptor (header + int32 arrays, not protobuf); every
 * rank then runs it: PP stage s receives hidden states from stage s-1, runs
 * its layers, and sends them on; the last stage turns its vocabulary slice of
 * logits into what the step asked for (greedy tokens through a max-with-index
 * all-reduce over the TP group, each row's top-k candidates merged over it,
 * with per-row draws also the rows' softmax normalisers and the rows the
 * candidates cannot decide, or full logits gathered over it) and sends the
 * result to world rank 0. A step's tokens are cut into micro-batches so
 * the stages work on different micro-batches at the same time.
 *
 * KV blocks are allocated identically on every rank: the descriptor carries
 * the (sequence, position) of every token and the slots to release, and every
 * rank replays the same reserve/release calls.
 *
 * Ranks other than 0 sit in tsr_engine_serve, waiting for descriptors without
 * spinning, until rank 0 calls tsr_engine_stop.
 *
 * Each rank's shard runs on the CPU or on one CUDA GPU (tsr_engine_config
 * .device); activations cross ranks over MPI (staged through host memory
 * when the backend's buffers are on a device) or NCCL (tsr_xfer,
 * runtime/engine/xfer.h).
 *
 * What it is not: a scheduler (which sequences go into a step is the caller's
 * decision) and not thread-safe (one engine thread per rank). */
#ifndef TSR_RUNTIME_ENGINE_H
#define TSR_RUNTIME_ENGINE_H

#include <stdint.h>

#include "comm/comm.h"
#include "runtime/model/lm.h"
#include "runtime/model/model.h"
#include "shard/peft.h"
#include "runtime/train/train.h"
#include "runtime/train/train_comm.h"
#include "runtime/engine/xfer.h"
#include "shard/model_file.h"
#include "shard/plan.h"

typedef enum {
    TSR_OUT_NONE = 0,   /* no output (prefill chunk whose logits are not needed) */
    TSR_OUT_ARGMAX = 1, /* greedy token per output row */
    TSR_OUT_LOGITS = 2, /* full logits per output row, at rank 0 */
    TSR_OUT_TOPK = 3,   /* the top_k best logits per output row and their token ids, picked
                           on each TP rank's device and merged: what sampling with top-k
                           needs, 8 top_k bytes a row instead of 4 n_vocab */
} tsr_out_kind;

/* How rank 0 will draw an output row of a TSR_OUT_TOPK step (tsr_step.draw):
 * from its candidates alone (top-k and greedy rows), from its candidates and
 * the row's softmax normaliser (top_k off: the last stage checks, while the
 * logits are still on the device, that the candidates decide this draw, and
 * otherwise sends the whole row), or always from the whole row (penalties,
 * logprobs, bans). */
typedef enum {
    TSR_DRAW_CAND = 0,
    TSR_DRAW_ROW_TOP = 1,
    TSR_DRAW_WHOLE = 2,
} tsr_draw_mode;

typedef struct {
    double u;          /* TSR_DRAW_ROW_TOP: the draw's uniform number (tsr_sampler_peek_unit) */
    float temperature; /* TSR_DRAW_ROW_TOP: > 0; and the sampler's top_p and min_p */
    float top_p, min_p;
    int32_t mode; /* tsr_draw_mode */
} tsr_row_draw;

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
    /* Per-row LoRA adapters (a batch mixing requests of several adapters):
     * n_seg > 0 segments of rows, (n_seg, 3) as (begin, end, adapter slot)
     * with adapter slot -1 for the model's own adapter (tsr_model_set_lora;
     * usually none). Rows outside every segment get no adapter. n_seg 0:
     * the model's own adapter on every row. */
    int n_seg;
    const int32_t *seg;
    int top_k; /* TSR_OUT_TOPK: entries per row, 1..TSR_TOPK_MAX (kernels/backend.h) */
    const tsr_row_draw *draw; /* TSR_OUT_TOPK, optional (n_out): NULL is TSR_DRAW_CAND for all */
} tsr_step;

/* Rank 0's results of a TSR_OUT_TOPK step (tsr_engine_step_top). */
typedef struct {
    int32_t *ids; /* (n_out, top_k): each row's best token ids, as tsr_engine_step's tokens */
    float *val;   /* (n_out, top_k): their logits */
    /* with tsr_step.draw only (else may be NULL): */
    float *expsum;  /* (n_out, 2): TSR_DRAW_ROW_TOP rows' max and sum of exp((l - max) / T)
                      over the vocabulary, as the last stage decided with them */
    int32_t *whole; /* (n_out): 1 where rows holds the row's logits, else 0 */
    float *rows;    /* (n_out, n_vocab): row i's logits where whole[i] */
} tsr_top_out;

/* Where a rank's shard runs. */
typedef enum {
    TSR_DEVICE_CPU = 0,  /* the CPU backend: f32 activations in host memory */
    TSR_DEVICE_CUDA = 1, /* the CUDA backend on one GPU per rank */
} tsr_device;

/* tsr_engine_config.act_dtype: the device's own choice (f32 on the CPU, bf16
 * on CUDA). Not 0: 0 is TSR_F32. */
#define TSR_ENGINE_ACT_DEFAULT (-1)

typedef struct {
    int threads;       /* CPU threads for this rank; 0 = cores / ranks on this host */
    int max_seqs;      /* cache slots */
    int max_ctx;       /* positions per sequence */
    int kv_blocks;     /* 0 = max_seqs * ceil(max_ctx / block_size) */
    int block_size;    /* 0 = 16 */
    int micro_batches; /* per step for PP; 0 = pp */
    tsr_device device; /* TSR_DEVICE_CPU (default) or TSR_DEVICE_CUDA */
    int act_dtype;     /* activations: TSR_ENGINE_ACT_DEFAULT, TSR_F32, or TSR_BF16 (CUDA only) */
    int weight_dtype;  /* weights: TSR_ENGINE_ACT_DEFAULT (bf16 on CUDA; on the CPU the
                           file's own block formats), TSR_F32 (the reference path; on CUDA
                           it needs f32 activations), TSR_Q8_0 or TSR_Q4_0 (CPU: quantized
                           at load) */
    int gpu;           /* CUDA device index; -1 = local_rank % devices on the host (see
                           tsr_engine_device_select for NCCL) */
    /* Debugging aid: with the MPI data backend, move activations through
     * separate host scratch buffers even when the backend's buffers are host
     * memory, i.e. run the staging path a GPU with --comm mpi takes on the
     * CPU backend (tests/dist checks it gives the same answers). Slower;
     * ignored with NCCL. */
    int stage_host;
    int kv_dtype; /* KV cache elements: TSR_ENGINE_ACT_DEFAULT (f16 on the CPU, the
                     activation type on CUDA), TSR_F16 or TSR_F32 (CPU; CUDA refuses
                     any type but its activations'): tsr_kv_cache_dtype */
} tsr_engine_config;

#define TSR_ENGINE_CONFIG_INIT                                                                     \
    {                                                                                              \
        0, 1, 4096, 0, 16, 0, TSR_DEVICE_CPU, TSR_ENGINE_ACT_DEFAULT, TSR_ENGINE_ACT_DEFAULT, -1,  \
            0, TSR_ENGINE_ACT_DEFAULT                                                              \
    }

/* Adapter slots: the same on every rank, chosen by rank 0. */
#define TSR_ENGINE_MAX_ADAPTERS 32

typedef struct {
    int used;
    tsr_lora_adapter a; /* this rank's pieces, trainable (gradient and AdamW slabs) */
    uint64_t batches;   /* ForwardBackward batches so far: the dropout key */
} tsr_engine_adapter;

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
    int gpu; /* CUDA device of this rank; -1 on the CPU */
    tsr_xfer tp_xfer, pp_xfer;
    /* scratch, grown as needed; hidden_* are backend buffers (act dtype),
     * their caps in bytes */
    uint8_t *desc;
    size_t desc_cap;
    void *hidden_in;
    size_t hidden_in_cap; /* (tokens, C) from the previous stage */
    void *hidden_out;
    size_t hidden_out_cap; /* (tokens, C) to the next stage */
    tsr_xfer_stage stage;  /* host bytes for TSR_XFER_STAGED */
    float *logits;
    size_t logits_cap; /* (n_out, V_local) */
    float *mb_logits;
    size_t mb_logits_cap; /* one micro-batch's rows */
    float *gathered;
    size_t gathered_cap; /* (tp, n_out, widest slice) */
    float *best_val;
    size_t best_val_cap; /* greedy / top-k: per output row (k each) */
    int32_t *best_idx;
    size_t best_idx_cap;
    int32_t *mb_idx;
    size_t mb_idx_cap; /* one micro-batch's greedy / top-k columns */
    float *topk_all;
    size_t topk_all_cap; /* top-k: every TP rank's lists, gathered */
    int32_t *topk_all_idx;
    size_t topk_all_idx_cap;
    /* top-k steps with draws (tsr_step.draw) */
    tsr_row_draw *draws;
    size_t draws_cap; /* the descriptor's, aligned */
    float *inv_t;
    size_t inv_t_cap; /* one micro-batch's 1 / T */
    float *mb_expsum;
    size_t mb_expsum_cap; /* (tp, rows, 2): every slice's sums */
    float *expsum;
    size_t expsum_cap; /* (n_out, 2) over the vocabulary */
    int32_t *whole;
    size_t whole_cap; /* (n_out): row's place in whole_rows, or -1 */
    float *whole_rows;
    size_t whole_rows_cap; /* (rows sent whole, n_vocab) */
    int n_whole;
    int lm_release_pending; /* tsr_engine_lm: free slot 0 with the next step */
    tsr_lora_seg *segs;
    size_t segs_cap; /* one micro-batch's LoRA segments */
    /* LoRA training (runtime/engine/engine_train.c) */
    tsr_engine_adapter adapters[TSR_ENGINE_MAX_ADAPTERS];
    tsr_trainer trainer;
    int trainer_ready;
    tsr_train_mpi tmpi; /* host staging for the trainer's f32 reductions */
    tsr_train_tape *tapes;
    int n_tapes; /* one per micro-batch in flight */
    void *grad_in;
    size_t grad_in_cap; /* (tokens, C) gradient from the next stage */
    void *grad_out;
    size_t grad_out_cap; /* (tokens, C) gradient to the previous stage */
} tsr_engine;

/* Checks the device fields of cfg against this build and the data backend
 * `kind` the grid's tp and pp groups use: TSR_ERR_INVALID for combinations
 * that cannot work (bf16 activations on the CPU, NCCL without CUDA, an
 * unknown device or type), TSR_ERR_UNSUPPORTED when this build has no CUDA
 * backend (or no NCCL, for kind NCCL). Not collective, and the same verdict on every rank running the
 * same build and config, so a caller may check before the grid exists and
 * report once. */
tsr_status tsr_engine_config_check(const tsr_engine_config *cfg, tsr_comm_kind kind);

/* Collective over g->world: tsr_engine_config_check, then, on CUDA, whether
 * this host has a usable GPU for this rank, which it returns in *gpu: cfg->gpu
 * when >= 0, else local_rank % (devices on the host) with MPI (several ranks
 * may share a GPU) and local_rank with NCCL (which needs a GPU per rank and
 * refuses more ranks on a host than GPUs, or one --gpu for several ranks).
 * *gpu is -1 on the CPU. If any rank fails every rank returns an error: the
 * failing rank's message names its host ("--device cuda: no CUDA device is
 * visible on host X"), the others say "another rank failed ...". Needs only
 * g->world and the local rank/size, so an MPI grid can answer for an NCCL
 * one before that is built (runtime/cmd/main.c does). */
tsr_status tsr_engine_device_select(tsr_comm_grid *g, const tsr_engine_config *cfg,
                                    tsr_comm_kind kind, int *gpu);

/* tsr_engine_device_select before any grid exists, for a caller about to
 * build NCCL groups (tsr_comm_grid_config.kind = TSR_COMM_NCCL), which need
 * the GPU first: a host without one is then named, rather than failing inside
 * NCCL's set-up. Writes this rank's GPU to cfg->gpu (pass it on as
 * tsr_comm_grid_config.device). Collective over MPI_COMM_WORLD (builds and
 * frees a temporary MPI grid); every rank returns the same status. */
tsr_status tsr_engine_device_probe(tsr_engine_config *cfg, tsr_comm_kind kind);

/* Builds this rank's part: the shard plan (refusing impossible layouts before
 * any weight is read), the device (tsr_engine_device_select), its weights,
 * its KV cache. Collective over the world: if any rank fails, every rank
 * returns an error (the failing rank's message names the problem; the others
 * say a peer failed). With NCCL groups the device must be CUDA, and the GPU
 * the one the grid was built on (pass the same index as
 * tsr_comm_grid_config.device). */
tsr_status tsr_engine_init(tsr_engine *e, tsr_comm_grid *grid, const tsr_model_file_t *mf,
                           const tsr_plan_config *pc, const tsr_engine_config *cfg);
void tsr_engine_free(tsr_engine *e); /* NULL ok */

/* The data-path collectives the engine runs, on backend buffers of `count`
 * activations (act dtype), through the group's tsr_xfer path: the TP
 * all-reduce (in place, collective over the TP group) and the PP send/recv
 * to a pp-group rank. Exposed for benchmarks (bench/tsr_bench_dist); the
 * engine must not be inside a step. */
tsr_status tsr_engine_tp_allreduce(tsr_engine *e, void *buf, size_t count);
tsr_status tsr_engine_pp_send(tsr_engine *e, const void *buf, size_t count, int peer, int tag);
tsr_status tsr_engine_pp_recv(tsr_engine *e, void *buf, size_t count, int peer, int tag);

/* Rank 0: runs one step on every rank. Results at rank 0: tokens (n_out) for
 * TSR_OUT_ARGMAX, logits (n_out, n_vocab) for TSR_OUT_LOGITS; the other may
 * be NULL. TSR_OUT_TOPK fills both: logits (n_out, top_k) with each row's
 * best values and tokens (n_out, top_k) with their token ids, best first in
 * kernels/backend.h's tsr_topk_before order (NaN first, then larger, then
 * the lower id: entry 0 is the greedy pick when the row has no NaN); ids
 * -1 with -inf past the vocabulary's end. Errors in the step's content (a token outside the vocabulary,
 * no KV space) are found on rank 0 before anything is broadcast. */
tsr_status tsr_engine_step(tsr_engine *e, const tsr_step *s, int32_t *tokens, float *logits);

/* Rank 0: runs a TSR_OUT_TOPK step, its results in *out. Without draws as
 * tsr_engine_step (ids, val). With s->draw, rows of mode TSR_DRAW_WHOLE, and
 * TSR_DRAW_ROW_TOP rows whose candidates cannot decide their draw
 * (tsr_sampler_pick_sorted with the row's expsum gives -1, or the row holds
 * a NaN), come with their whole row of logits too. */
tsr_status tsr_engine_step_top(tsr_engine *e, const tsr_step *s, const tsr_top_out *out);

/* Other ranks: execute steps until rank 0 calls tsr_engine_stop. */
tsr_status tsr_engine_serve(tsr_engine *e);

/* Rank 0: tells every rank to leave tsr_engine_serve. */
tsr_status tsr_engine_stop(tsr_engine *e);

/* Rank 0: a tsr_lm running one sequence (cache slot 0) through the engine,
 * for the generate / perplexity loops. e must outlive it. */
void tsr_engine_lm(tsr_engine *e, tsr_lm *out);

/* Positions still free for `seq`, as rank 0 sees it. */
int tsr_engine_free_blocks(const tsr_engine *e);

/* ---- LoRA adapters and training (runtime/engine/engine_train.c) ----
 * Rank 0 calls these; each broadcasts a descriptor and every rank runs the
 * same operation on its pieces (the others inside tsr_engine_serve). They
 * may be interleaved with generation steps: training uses its own scratch
 * and never the KV cache. Bad input (an unknown slot, a malformed batch, bad
 * hyper-parameters) is refused on rank 0 before anything is broadcast; a
 * failure on any rank during the operation (out of memory, an adapter that
 * does not fit) is agreed on by every rank and returned on rank 0 with the
 * failing rank's message; the engine stays usable. Only a broken collective
 * is fatal (TSR_ERR_COMM: the caller ends the job). */

/* Slot `slot` (0 .. TSR_ENGINE_MAX_ADAPTERS-1, free) gets a new adapter of
 * config cfg (A from cfg->seed, B zero, step 0), trainable. */
tsr_status tsr_engine_adapter_create(tsr_engine *e, int slot, const tsr_lora_config *cfg);

/* Slot `slot` (free) gets the adapter pa (rank 0's whole PEFT adapter, read
 * by tsr_peft_load for this model): every rank keeps its pieces, trainable,
 * with zero moments and step 0. */
tsr_status tsr_engine_adapter_load(tsr_engine *e, int slot, const tsr_peft_adapter *pa);

/* Frees slot `slot`'s adapter on every rank (TSR_ERR_INVALID when free).
 * The caller makes sure no queued step still names it. */
tsr_status tsr_engine_adapter_delete(tsr_engine *e, int slot);

/* The whole adapter of slot `slot` at rank 0, as a PEFT adapter (allocated
 * into *out, which the caller frees with tsr_peft_free): every stage's TP
 * group gathers its layers and sends them to rank 0. */
tsr_status tsr_engine_adapter_gather(tsr_engine *e, int slot, tsr_peft_adapter *out);

/* Rank 0's copy of slot `slot`'s adapter (config, step, accumulators of
 * this rank), or NULL when the slot is free. */
const tsr_lora_adapter *tsr_engine_adapter_get(const tsr_engine *e, int slot);

/* One training batch through the whole pipeline: backward 1 runs forward,
 * loss and backward (gradients and the adapter's accumulators grow:
 * accumulation across calls); backward 0 computes the loss only (slot -1:
 * the base model), without dropout. With pp > 1 the batch's sequences are
 * cut into cfg.micro_batches micro-batches, run as a GPipe schedule
 * (every forward, then every backward in reverse order; one tape per
 * micro-batch holds each layer's input). *out at rank 0: the batch's loss
 * sum, weight sum and token counts. */
tsr_status tsr_engine_train_batch(tsr_engine *e, int slot, const tsr_train_batch *b, int backward,
                                  tsr_train_stats *out);

/* One AdamW step of slot `slot`'s adapter over everything accumulated
 * (tsr_train_optim_step on every rank): TSR_ERR_RANGE when the loss or the
 * norm is not finite (refused; the adapter keeps its state), TSR_ERR_INVALID
 * when nothing carried loss or p is out of range. *out at rank 0. */
tsr_status tsr_engine_optim_step(tsr_engine *e, int slot, const tsr_optim_params *p,
                                 tsr_optim_result *out);

#endif
