/* runtime/train/train.h - LoRA training over this rank's shard: the forward that
 * keeps what the backward needs, the vocabulary-parallel loss, the backward
 * into the adapter's gradients, and the AdamW step.
 *
 * A batch is n_seqs token sequences laid end to end, each starting at
 * position 0, with a loss weight per token: weight[i] applies to predicting
 * token i+1 from position i of the same sequence (the last token of each
 * sequence predicts nothing). The loss of a batch is the weighted SUM
 *     L = sum_i w_i * CE_i,  CE_i = -log softmax(logits_i)[token_{i+1}];
 * gradients are of that sum and accumulate over ForwardBackward calls; the
 * optimizer step divides them by the accumulated weight sum (so the step is
 * that of the weighted mean loss over everything since the last step).
 *
 * Per layer, as runtime/model/model.c's forward with LoRA deltas on the targeted
 * projections and training attention over contiguous sequences (no KV cache):
 *   h1 = rmsnorm(x) ; q,k,v = h1 W^T (+bias) + LoRA ; rope(q, k)
 *   a = attn(q, k, v) ; t = a Wo^T + LoRA ; allreduce(t) ; x2 = x + t
 *   h2 = rmsnorm(x2) ; s = silu(h2 Wg^T + LoRA) * (h2 Wu^T + LoRA)
 *   t = s Wd^T + LoRA ; allreduce(t) ; out = x2 + t
 * Activation memory: the forward stores only each layer's input x (one
 * (n, C) activation per layer, in a tsr_train_tape) and the backward
 * recomputes the layer's internals from it. The recompute costs about one
 * more forward (minus the down projection and its all-reduce), i.e. the
 * backward does ~3 forwards' work instead of ~2, and one more TP all-reduce
 * per layer; storing the internals instead would take about
 * 3 C + 2 q_dim + 2 kv_dim + 3 n_ff_local activations per token per layer
 * (~14x more for SmolLM2 on one rank), multiplied by the micro-batches a
 * 1F1B schedule keeps in flight. One layer's internals live in the trainer's
 * scratch (tsr_train_ws), shared by every micro-batch.
 *
 * Tensor parallelism (Megatron): activations' all-reduces go through the
 * model's tsr_model_comm hook (the row-parallel outputs in the forward, the
 * column-parallel input gradients in the backward, the vocabulary-parallel
 * embedding and LM-head input gradient); f32 reductions (the loss pieces, the
 * LoRA gradients of replicated factors) and the gradient norm go through
 * tsr_train_comm. The derivation of which gradients need a reduction is at
 * the top of train.c.
 *
 * Pipeline parallelism: the stage functions take and give hidden states and
 * their gradients; a schedule (GPipe, 1F1B) keeps one tsr_train_tape per
 * micro-batch in flight and moves hidden states between stages itself. Only
 * the pp = 1 convenience functions (tsr_train_forward_backward,
 * tsr_train_forward) exist here.
 *
 * LoRA dropout (runtime/model/lora.h): with an adapter whose cfg.dropout > 0, a
 * forward with keep = 1 masks each target's LoRA input (the base projection
 * sees it unmasked) and the backward recomputes the same masks from the
 * tape's dropout_key and token_offset; keep = 0 (evaluation) never drops. The
 * cost when dropping, per target: one masking pass over its input in the
 * forward and one in the backward's recompute; in the backward one more, a
 * zero fill and a masked accumulation of the branch's input gradient; two
 * (n, widest LoRA input) scratch activations. Nothing at all with dropout 0.
 *
 * What it is not: no schedule over micro-batches or stages, no data loading,
 * no adapter files. Not thread-safe: one engine thread per rank. */
#ifndef TSR_RUNTIME_TRAIN_H
#define TSR_RUNTIME_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/model/lora.h"
#include "runtime/model/model.h"

/* Reductions training needs besides the model's activation all-reduce. Every
 * pointer may be NULL on one TP rank / one rank in all (identity). The f32
 * hooks are called with work still queued on the backend's stream, as the
 * model's hook is: an implementation orders itself against it (a CPU or
 * host-staged MPI path: to_host synchronises; NCCL: sync or events first). */
typedef struct {
    void *ctx;
    /* In place over the TP group: count f32 values in device memory of the
     * model's backend, summed / maximised. */
    tsr_status (*allreduce_sum)(void *ctx, float *buf, size_t count);
    tsr_status (*allreduce_max)(void *ctx, float *buf, size_t count);
    /* In place: count doubles in host memory, summed over every rank that
     * holds a part of the adapter (the TP x PP ranks of one model replica). */
    tsr_status (*world_sum)(void *ctx, double *buf, size_t count);
} tsr_train_comm;

typedef struct {
    int head_rows; /* LM-head rows per chunk: the logits buffer is head_rows x n_vocab_local;
                      0 = 512 */
} tsr_train_config;

#define TSR_TRAIN_CONFIG_INIT                                                                      \
    { 0 }

/* A batch. Host arrays, read during the call only. */
typedef struct {
    int n_seqs;
    const int32_t *seq_start; /* (n_seqs + 1): sequence s is tokens seq_start[s] ..
                                 seq_start[s+1]-1; seq_start[0] == 0 */
    const int32_t *tokens;    /* (n_tokens = seq_start[n_seqs]) ids; every stage needs them
                                 (the first embeds them, the last takes its targets from them) */
    const float *weights;     /* (n_tokens) loss weights, finite and >= 0; NULL = all 1 */
    /* LoRA dropout (runtime/model/lora.h; only when the adapter's cfg.dropout > 0
     * and the forward keeps its inputs for a backward). Zero-initialised
     * callers get key 0 and offset 0. */
    uint64_t dropout_key; /* names the batch in the mask's hash: a value that differs from
                             batch to batch (e.g. the adapter's count of ForwardBackward
                             batches so far), the same on every rank and for every
                             micro-batch of one batch; the same key gives the same masks */
    int token_offset;     /* index in the whole batch of this (micro-)batch's first token,
                             for a caller that splits one batch into micro-batches (pipeline
                             schedules, accumulation in pieces) and wants the whole batch's
                             masks; 0 otherwise. >= 0 */
} tsr_train_batch;

/* What one batch contributed. */
typedef struct {
    double loss;        /* sum_i w_i CE_i (0 on stages without the head) */
    double weight_sum;  /* sum of w_i over positions with a target */
    long n_tokens;      /* tokens in the batch */
    long n_loss_tokens; /* positions with a target and w_i != 0 */
} tsr_train_stats;

/* What one micro-batch keeps between its forward and its backward on this
 * stage: its metadata on the device, each layer's input and the stage's
 * output, and the gradient flowing through the stage. Grows as needed. */
typedef struct {
    int n_tokens, n_seqs, cap_tokens, cap_seqs, cap_slots;
    int keep; /* 1: every layer's input is stored (for a backward) */
    void *x;  /* (slots, cap_tokens, C) activations: slot l = input of local layer
                              l, slot n_layers = the stage output (keep = 0: two slots in turn) */
    void *dx; /* (cap_tokens, C): the running gradient in the backward */
    int32_t *ids, *pos, *tok_seq, *target; /* (cap_tokens) device */
    int32_t *seq_start;                    /* (cap_seqs + 1) device */
    float *weight; /* (cap_tokens) device: w_i, 0 where there is no target */
    int32_t *h_pos, *h_tok_seq, *h_target; /* (cap_tokens) host copies */
    float *h_weight;                       /* (cap_tokens) host copy */
    tsr_train_stats stats; /* the batch's counts, and its loss once tsr_train_loss ran */
    int has_output;        /* the forward ran */
    int has_grad;          /* dx holds d(loss)/d(stage output) (tsr_train_loss with grad) */
    uint64_t dropout_key;  /* the batch's, for the backward's recompute of the masks */
    int token_offset;
} tsr_train_tape;

/* Scratch for one layer of one micro-batch, and the LM head's chunk. */
typedef struct {
    int cap;
    void *h1, *h2, *x2, *tmp, *dh; /* (cap, C) */
    void *q, *att, *datt, *dq;     /* (cap, n_head_local * hd) */
    void *k, *v, *dk, *dv;         /* (cap, n_kv_local * hd) */
    void *gate, *up, *s, *ds;      /* (cap, n_ff_local) */
    float *lse;                    /* (cap, n_head_local) */
    float *xa[TSR_LORA_N_TARGETS]; /* (cap, r) x A^T of each target */
    float *lt;                     /* (cap, r) lora_bwd's scratch */
    int r;                         /* rank the xa buffers were made for */
    void *xd, *dxd;                /* (cap, d_max) LoRA dropout's masked input and the
                                       branch's input gradient, d_max the widest LoRA input
                                       (C, q_dim, n_ff_local); NULL until a batch drops */
    void *logits;                  /* (head_rows, n_vocab_local) */
    void *hn, *dhn;                /* (head_rows, C) */
    float *ce;                     /* (3 * head_rows): rowmax | sumexp | tlogit */
    float *ce_host;                /* host copy of ce */
    void *xc, *dxc;                /* (head_rows, C): the rows that carry loss, gathered, and
                                       their gradient before it is scattered back */
    int32_t *tc;                   /* (head_rows) device: their targets */
    float *wc;                     /* (head_rows) device: their loss weights */
    int32_t *h_rows;               /* (cap) host: the indices of the rows that carry loss */
    int32_t *h_tc;                 /* (head_rows) host staging of tc */
    float *h_wc;                   /* (head_rows) host staging of wc */
} tsr_train_ws;

typedef struct {
    tsr_model *m; /* not owned; its tsr_model_comm is the activation all-reduce */
    tsr_train_comm comm;
    tsr_train_config cfg;
    tsr_train_ws ws;
    tsr_train_tape tape; /* the pp = 1 convenience functions' tape */
    tsr_train_tape eval; /* tsr_train_forward's (keep = 0) */
} tsr_trainer;

/* Binds a trainer to a loaded model (any stage). comm and cfg are copied
 * (NULL: no hooks / defaults). Allocates nothing until the first batch.
 * TSR_ERR_INVALID when the model's slice is split over TP ranks (its
 * vocabulary slice is not the whole vocabulary) and comm lacks allreduce_sum
 * or allreduce_max, or the model has no TP hook. */
tsr_status tsr_trainer_init(tsr_trainer *t, tsr_model *m, const tsr_train_comm *comm,
                            const tsr_train_config *cfg);
void tsr_trainer_free(tsr_trainer *t); /* NULL ok; frees its tapes and scratch */

/* A tape for one micro-batch in flight. tsr_train_tape_init cannot fail
 * (allocation happens in the forward); free is NULL ok. */
void tsr_train_tape_init(tsr_train_tape *tape);
void tsr_train_tape_free(tsr_trainer *t, tsr_train_tape *tape);

/* ---- the stage functions (any pipeline stage) ----
 * Failures: bad input is refused before anything is computed. A failure
 * after that (a collective, the device) may leave part of a batch in the
 * adapter's gradients and accumulators: zero them (tsr_lora_zero_grads,
 * tsr_lora_reset_accum) before going on, or end the job. */

/* Runs this stage's layers on batch b with adapter a (NULL: the base model),
 * storing into `tape` what the backward needs (keep = 1) or only the stage
 * output (keep = 0: evaluation). hidden_in: the previous stage's (n, C)
 * output on the device, NULL on the first stage (tokens are embedded).
 * hidden_out: where a non-last stage's (n, C) output goes (device), NULL on
 * the last stage (the output stays in the tape for tsr_train_loss).
 * Validates b: TSR_ERR_INVALID for an empty or malformed batch (seq_start,
 * weights negative or not finite), TSR_ERR_RANGE for a token id outside the
 * vocabulary or a sequence longer than the model's training context,
 * TSR_ERR_INVALID for a negative token_offset; nothing is computed then. The
 * adapter must be made for this rank's shard. With keep = 1 and
 * a->cfg.dropout > 0 the LoRA inputs are dropped (b's dropout_key and
 * token_offset, kept in the tape for the backward). */
tsr_status tsr_train_stage_forward(tsr_trainer *t, const tsr_lora_adapter *a, tsr_train_tape *tape,
                                   const tsr_train_batch *b, int keep, const void *hidden_in,
                                   void *hidden_out);

/* Last stage, after tsr_train_stage_forward: the weighted vocabulary-parallel
 * cross-entropy of the tape's output (rows in chunks of cfg.head_rows: final
 * rmsnorm, LM-head slice, ce_rowmax -> all-reduce MAX -> ce_sums -> all-reduce
 * SUM -> loss on the host in double). With want_grad, also d(loss)/d(stage
 * output) into the tape, for tsr_train_stage_backward. *out (may be NULL)
 * gets the batch's stats with the loss; tape->stats.loss too. */
tsr_status tsr_train_loss(tsr_trainer *t, tsr_train_tape *tape, int want_grad,
                          tsr_train_stats *out);

/* Backward through this stage's layers for the micro-batch of `tape` (its
 * forward ran with keep = 1): from dhidden_out, the (n, C) gradient of the
 * stage output from the next stage (device), or NULL on the last stage (the
 * gradient tsr_train_loss left in the tape). Adds the LoRA gradients into a
 * (replicated factors' as partial sums, see tsr_train_reduce_grads) and the
 * tape's stats into a's accumulators. dhidden_in: where the gradient of the
 * stage input goes on a non-first stage (device (n, C)); NULL on the first
 * stage (the embedding is frozen: the backward stops at the first layer's
 * input). */
tsr_status tsr_train_stage_backward(tsr_trainer *t, tsr_lora_adapter *a, tsr_train_tape *tape,
                                    const void *dhidden_out, void *dhidden_in);

/* The checks the stage forward makes of a batch, for a caller that must
 * refuse bad input before a multi-rank step starts (the engine): TSR_OK,
 * TSR_ERR_INVALID or TSR_ERR_RANGE with the same messages. */
tsr_status tsr_train_check_batch(const tsr_model_config *c, const tsr_train_batch *b);

/* ---- one stage holding the whole model (pp = 1) ---- */

/* Forward, loss and backward of batch b: the adapter's gradients and
 * accumulators grow by this batch's (gradient accumulation). *out (may be
 * NULL) gets the batch's stats. TSR_ERR_INVALID on a model that is not both
 * first and last stage. */
tsr_status tsr_train_forward_backward(tsr_trainer *t, tsr_lora_adapter *a, const tsr_train_batch *b,
                                      tsr_train_stats *out);

/* The loss only (evaluation): nothing is stored or accumulated. a NULL: the
 * base model. */
tsr_status tsr_train_forward(tsr_trainer *t, const tsr_lora_adapter *a, const tsr_train_batch *b,
                             tsr_train_stats *out);

/* ---- gradients and the optimizer ---- */

/* All-reduces the partial gradients of the adapter's replicated factors (A of
 * column-parallel targets, B of row-parallel ones, and B of k/v shared by
 * kv_share ranks) so that every rank holds the full accumulated gradient (the
 * sum, not yet divided by the weight sum). Idempotent until the next
 * backward, which first turns them back into partial sums (keeps the copy on
 * the owning rank, zeroes the others). Collective over the TP group. */
tsr_status tsr_train_reduce_grads(tsr_trainer *t, tsr_lora_adapter *a);

typedef struct {
    tsr_adamw_params adamw; /* lr, beta1, beta2, eps, weight_decay */
    float max_grad_norm;    /* > 0: clip the global gradient norm to this */
} tsr_optim_params;

typedef struct {
    int step;           /* the adapter's step count after this step */
    double grad_norm;   /* global norm of the mean gradient, before clipping */
    double loss;        /* accumulated loss sum / weight sum (the mean loss; last stage) */
    double weight_sum;  /* the accumulated weight sum the gradients were divided by */
    long n_loss_tokens; /* positions that carried loss */
} tsr_optim_result;

/* The hyper-parameter checks of tsr_train_optim_step (TSR_ERR_INVALID). */
tsr_status tsr_train_check_optim(const tsr_optim_params *p);

/* One optimizer step on everything accumulated since the last one:
 * gradients reduced, divided by the accumulated weight sum W; the global
 * norm ||g|| over every rank (sumsq per slab region, replicated copies
 * counted once, summed with comm.world_sum); when max_grad_norm > 0 and
 * ||g|| > max_grad_norm the gradients are scaled by max_grad_norm /
 * (||g|| + 1e-6) (torch.nn.utils.clip_grad_norm_); then AdamW with step
 * t = a->step + 1 over every parameter; gradients and accumulators zeroed.
 * Refusals (the adapter keeps its parameters, moments and step; gradients and
 * accumulators are zeroed so training can go on): TSR_ERR_RANGE
 * "non-finite ..." when the accumulated loss on any rank or the gradient norm
 * is NaN or infinite; TSR_ERR_INVALID when no position carried loss (W == 0)
 * or the hyper-parameters are out of range. Collective over every rank of
 * the replica. *out may be NULL. */
tsr_status tsr_train_optim_step(tsr_trainer *t, tsr_lora_adapter *a, const tsr_optim_params *p,
                                tsr_optim_result *out);

#endif
