/* runtime/model/model.h - the Llama-family forward pass over this rank's shard.
 *
 * A model holds the weights of one shard (a contiguous range of layers and,
 * within each layer, a slice of heads / FFN columns / vocabulary rows) on a
 * kernel backend. Forward takes a batch of tokens from any number of
 * sequences (prefill and decode mixed), writes their K/V into the paged cache
 * and returns logits for the rows asked for.
 *
 * Tensor parallelism enters only through tsr_model_comm: the output and down
 * projections produce partial sums that are all-reduced there (identity on
 * one rank). Pipeline parallelism enters through the slice's layer range and
 * the first/last flags: a middle stage takes and gives hidden states.
 *
 * What it is not: no sampling, no scheduling, no tokenizer. */
#ifndef TSR_RUNTIME_MODEL_H
#define TSR_RUNTIME_MODEL_H

#include <stdint.h>

#include "kernels/backend.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/lora.h"
#include "shard/model_file.h"
#include "shard/plan.h"

/* The slice of the model this rank holds (tsr_model_slice) is defined with
 * the shard plan in shard/plan.h. */
tsr_model_slice tsr_model_slice_full(const tsr_model_config *c);

/* Collective hooks. allreduce_sum NULL means one rank (identity). */
typedef struct {
    void *ctx;
    /* In place: buf (count activations on the device) summed over the TP group. */
    tsr_status (*allreduce_sum)(void *ctx, void *buf, size_t count);
} tsr_model_comm;

typedef struct {
    tsr_weight wq, wk, wv, wo;  /* (n_head*hd, C), (n_kv*hd, C) x2, (C, n_head*hd) */
    tsr_weight w_gate, w_up;    /* (n_ff, C) */
    tsr_weight w_down;          /* (C, n_ff) */
    void *attn_norm, *ffn_norm; /* (C) */
    void *bq, *bk, *bv;         /* biases (Qwen2) or NULL */
} tsr_layer_weights;

/* Scratch for one forward of up to max_tokens tokens. */
typedef struct {
    int max_tokens;
    void *x, *h, *q, *k, *v, *att, *tmp, *gate, *up; /* activations */
    int32_t *ids, *pos, *seq, *slot, *tables;        /* device metadata */
    int tables_cap;
    void *logits; /* device (max_out, n_vocab_local) */
    int max_out;
} tsr_forward_ws;

/* Rows [begin, end) of a batch with their own LoRA adapter (NULL: the base
 * model), for batches that mix requests of several adapters. */
typedef struct {
    int begin, end;
    const tsr_lora_adapter *a;
} tsr_lora_seg;

/* A recorded forward (CUDA graph) and what it was recorded for. */
typedef struct {
    int n_tokens;      /* 0: free entry */
    const void *kv;    /* the KV cache it writes */
    unsigned ws_gen;   /* the workspace generation (buffer addresses) */
    unsigned lora_gen; /* the adapter generation (tsr_model_set_lora) */
    void *graph;       /* NULL: seen once, not recorded yet */
} tsr_fwd_graph;

#define TSR_FWD_GRAPHS 16
#define TSR_FWD_GRAPH_MAX_TOKENS 256 /* decode-sized steps only */

typedef struct {
    tsr_model_config cfg;
    tsr_model_slice slice;
    tsr_backend *be;
    tsr_model_comm comm;
    int first_stage, last_stage; /* holds the embedding / the head */
    tsr_weight tok_embd;         /* (n_vocab_local, C), first stage (and last if tied) */
    tsr_weight lm_head;          /* (n_vocab_local, C); shares tok_embd's data when tied */
    int lm_head_shared;
    void *out_norm;            /* (C), last stage */
    tsr_layer_weights *layers; /* (layer_end - layer_begin) */
    float *inv_freq;           /* (head_dim/2) device */
    tsr_forward_ws ws;
    unsigned ws_gen; /* bumped whenever a workspace buffer moves */
    tsr_fwd_graph graphs[TSR_FWD_GRAPHS];
    int next_graph;
    int graphs_off; /* TSR_NO_CUDA_GRAPHS was set at load: never record */
    int last_n_out; /* output rows of the last forward in ws.logits; 0: none */
    int weights;    /* tsr_model_load's `weights` */
    /* LoRA at inference (tsr_model_set_lora): NULL = none. Not owned. */
    const tsr_lora_adapter *lora;
    unsigned lora_gen;       /* bumped by every tsr_model_set_lora (part of the graph key) */
    const tsr_lora_seg *seg; /* the running forward's per-row adapters (tsr_batch.lora) */
    int n_seg;
    float *lora_xa;     /* device f32 scratch (ws.max_tokens, r) for x A^T */
    size_t lora_xa_cap; /* floats */
} tsr_model;

/* A batch: token i of sequence seq[i] at position pos[i]. Host arrays. */
typedef struct {
    int n_tokens;
    const int32_t *tokens; /* (n_tokens); ignored on non-first stages */
    const int32_t *pos;
    const int32_t *seq;
    int n_out;               /* rows whose logits are wanted */
    const int32_t *out_rows; /* (n_out) indices into the batch */
    /* Per-row adapters: n_lora > 0 replaces the model's own adapter
     * (tsr_model_set_lora) for this batch; rows outside every segment get
     * none. Each adapter must fit the shard (tsr_model_check_lora) and live
     * on the model's backend; segments must lie inside the batch. Batches
     * with segments are never recorded as CUDA graphs. */
    int n_lora;
    const tsr_lora_seg *lora; /* (n_lora) */
} tsr_batch;

/* tsr_model_load's `weights`: keep each weight matrix in the type the file
 * stores it in (the backend then decides: the CPU keeps the GGUF block
 * formats it has kernels for, CUDA dequantizes to its weight type). Any
 * other value is a tsr_dtype every matrix is converted to at load: TSR_F32
 * (the reference path), TSR_Q8_0 or TSR_Q4_0 (quantized at load; a matrix
 * the file already stores in that type is kept as it is). */
#define TSR_MODEL_WEIGHTS_FILE (-1)

/* Loads this rank's slice from `mf` onto `be`, weight matrices as `weights`
 * says. The comm hooks are copied. */
tsr_status tsr_model_load(tsr_model *m, const tsr_model_file_t *mf, const tsr_model_slice *slice,
                          int first_stage, int last_stage, int weights, tsr_backend *be,
                          const tsr_model_comm *comm);
void tsr_model_free(tsr_model *m); /* NULL ok; does not free the adapter */

/* Applies a LoRA adapter in every later forward: after each targeted
 * projection's matmul of this rank's layers, y += scale * (x A^T) B^T with
 * this rank's pieces (column-parallel q, k, v, gate, up: A whole, B this
 * rank's output rows; row-parallel o, down: A this rank's input columns, B
 * whole, added before the TP all-reduce like the base matmul's partial sum).
 * The embedding and the LM head are never adapted. NULL removes it. The
 * adapter must cover exactly this model's slice (its shard's layers, heads,
 * KV heads and FFN columns) on the same backend: TSR_ERR_INVALID otherwise,
 * and the model is left without an adapter. The adapter is not owned and
 * must outlive its use (or be unset first). Recorded CUDA graphs are
 * dropped. */
tsr_status tsr_model_set_lora(tsr_model *m, const tsr_lora_adapter *a);

/* Whether adapter a fits this model's shard, as tsr_model_set_lora checks it
 * (same backend, model, layers and slices): TSR_OK or TSR_ERR_INVALID with
 * a message. Changes nothing. */
tsr_status tsr_model_check_lora(const tsr_model *m, const tsr_lora_adapter *a);

/* Runs the batch through this rank's layers.
 * hidden_in: (n_tokens, C) activations on the device from the previous
 * stage, or NULL on the first stage (tokens are embedded). hidden_out: device
 * buffer where a non-last stage puts its (n_tokens, C) output; NULL on the
 * last stage. logits: the last stage's (n_out, n_vocab_local) host f32 for
 * the batch's out_rows. Every position must be reserved in `kv` for its
 * sequence. */
tsr_status tsr_model_forward(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                             const void *hidden_in, void *hidden_out, float *logits);

/* As tsr_model_forward, but the last stage returns, for each of the batch's
 * out_rows, only the largest logit of its vocabulary slice (best_val) and its
 * column within the slice (best_idx), computed on the device: greedy steps
 * move 8 bytes a row to the host instead of the slice. Host arrays (n_out). */
tsr_status tsr_model_forward_greedy(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                                    const void *hidden_in, void *hidden_out, float *best_val,
                                    int32_t *best_idx);

/* As tsr_model_forward_greedy, but each output row's k best logits of the
 * vocabulary slice, best first (kernels/backend.h topk: NaN first, larger
 * value, lower column): top_val, top_idx (n_out, k) host arrays, columns
 * within the slice, (-inf, -1) past the slice's end. 1 <= k <= TSR_TOPK_MAX;
 * TSR_ERR_UNSUPPORTED on a backend without the op. */
tsr_status tsr_model_forward_topk(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                                  const void *hidden_in, void *hidden_out, int k, float *top_val,
                                  int32_t *top_idx);

/* After a last-stage forward with output rows (any of the three above),
 * while no other forward has run: each output row's maximum and sum of
 * exp((l - max) * inv_t[i]) over this rank's vocabulary slice (backend
 * row_expsum: out (n_out, 2) host f32, inv_t (n_out) host), and the logits
 * of output rows rows[0..n) of it as host f32 (out (n, slice n_vocab)).
 * TSR_ERR_INVALID when there is no such forward output. */
tsr_status tsr_model_row_expsum(tsr_model *m, const float *inv_t, float *out);
tsr_status tsr_model_logits_rows(tsr_model *m, const int32_t *rows, int n, float *out);

#endif
