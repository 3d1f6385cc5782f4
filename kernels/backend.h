/* kernels/backend.h - the kernel backend interface: a table of function
 * pointers over a device with its own memory, and the small wrappers callers
 * use (tsr_backend_<slot>, at the end: code outside kernels/ calls those, never
 * b->iface directly). Two implementations: kernels/cpu/ (always built) and
 * kernels/cuda/ (built when TESSERA_CUDA is ON, or AUTO and the toolkit is
 * found; tsr_backend_has_cuda says which).
 *
 * Optional slots (NULL where a backend has none; test with the
 * tsr_backend_has_* wrappers, or their wrapper falls back): matmul_exact,
 * topk, row_expsum, the four graph-capture slots, fill_zero and stream.
 * Every other slot is required.
 *
 * Conventions, for every op:
 *  - Buffers ("void *") are device memory from tsr_backend_alloc. Activations
 *    have the backend's activation type (tsr_backend_act_dtype: f32 on the CPU,
 *    bf16 on CUDA); integer metadata (ids, positions, slots) is int32 on the
 *    device.
 *  - Shapes are written (rows, cols) row-major; n is the number of tokens.
 *  - Ops are asynchronous with respect to the host on devices that can be
 *    (enqueued on the backend's stream); tsr_backend_sync waits. to_host
 *    synchronises implicitly.
 *  - Output buffers must not alias inputs unless the op says "in place".
 *
 * What it is not: no model knowledge, no communication (comm/ does that on the
 * same buffers), no scheduling. */
#ifndef TSR_KERNELS_BACKEND_H
#define TSR_KERNELS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "kernels/dtype.h"

/* A weight matrix W of shape (rows, cols) = (out_features, in_features), in
 * the backend's weight storage. Owned by whoever called weight_upload; freed
 * with tsr_backend_weight_free. A quantized type (the CPU keeps GGUF block
 * formats it has kernels for) stores each row as tsr_dtype_row_bytes(dtype,
 * cols) bytes, rows contiguous. */
typedef struct {
    void *data;
    tsr_dtype dtype; /* storage type chosen by the backend */
    int rows, cols;
} tsr_weight;

/* Paged attention over a KV cache laid out as (n_blocks, block_size, kv_dim)
 * per layer for K and V, kv_dim = n_kv_head * head_dim, of element type
 * kv_dtype: TSR_F16 or TSR_F32 on the CPU, the activation type on CUDA (a
 * backend refuses a type it does not read with TSR_ERR_UNSUPPORTED). Every token i of the
 * batch belongs to sequence seq[i] whose blocks are
 * block_tables[seq[i] * max_blocks + j]; it attends to its sequence's
 * positions 0..pos[i] inclusive (causal). The K/V of every token in the batch
 * must have been stored (kv_store) before attention runs. */
typedef struct {
    int n_tokens;
    int n_head;    /* query heads in q/out */
    int n_kv_head; /* KV heads in the cache; divides n_head (GQA) */
    int head_dim;
    int block_size;
    int max_blocks;              /* columns of block_tables */
    tsr_dtype kv_dtype;          /* the caches' element type (as kv_store wrote them) */
    float scale;                 /* usually 1/sqrt(head_dim) */
    const int32_t *pos;          /* (n_tokens) device */
    const int32_t *seq;          /* (n_tokens) device */
    const int32_t *block_tables; /* (n_seqs, max_blocks) device */
} tsr_attn_desc;

/* Training attention over contiguous sequences (see attn_train_fwd). */
typedef struct {
    int n_tokens, n_seqs;
    int n_head, n_kv_head, head_dim;
    float scale;
    const int32_t *seq_start; /* (n_seqs + 1) device; seq_start[n_seqs] == n_tokens */
    const int32_t *tok_seq;   /* (n_tokens) device: the sequence of each token row */
} tsr_attn_train_desc;

/* AdamW hyper-parameters. */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} tsr_adamw_params;

/* Where one lora_dropout call sits in LoRA dropout's mask: element (i, j) of
 * its (n, d) block is token row0 + i of the batch and input column col0 + j
 * of the FULL d_in of (layer, target). runtime/model/lora.h defines the hash that
 * decides each element; tsr_lora_dropout_stream / _bits / _threshold below
 * compute it on the host. */
typedef struct {
    float p;            /* drop probability, in [0, 1) */
    uint64_t seed, key; /* the adapter's seed, the batch's dropout key */
    int layer, target;  /* global layer index; tsr_lora_target (0 = q .. 6 = down) */
    int row0, col0;     /* global token of row 0; global input column of column 0 */
} tsr_lora_dropout_desc;

typedef struct tsr_backend tsr_backend;

typedef struct {
    const char *name;
    tsr_dtype act_dtype;
    /* 1 when buffers are host memory (the CPU backend): MPI can use them
     * directly. 0 on devices: MPI collectives stage through the host. */
    int host_memory;

    /* memory */
    void *(*alloc)(tsr_backend *b, size_t bytes); /* NULL on failure */
    void (*free)(tsr_backend *b, void *p);        /* NULL ok */
    tsr_status (*to_device)(tsr_backend *b, void *dst, const void *src, size_t bytes);
    tsr_status (*to_host)(tsr_backend *b, void *dst, const void *src, size_t bytes);
    tsr_status (*copy)(tsr_backend *b, void *dst, const void *src, size_t bytes);
    tsr_status (*sync)(tsr_backend *b);
    void (*destroy)(tsr_backend *b);

    /* Weights: host (rows, cols) of type src_type (any tsr_dtype; rows
     * contiguous, tsr_dtype_row_bytes(src_type, cols) bytes each) into the
     * backend's storage. The CPU keeps block-quantized types it has dot
     * kernels for as they are and turns everything else into f32; CUDA
     * dequantizes to its weight type. TSR_ERR_UNSUPPORTED for an unknown
     * type or cols that cut a block. */
    tsr_status (*weight_upload)(tsr_backend *b, tsr_weight *w, const void *src, tsr_dtype src_type,
                                int rows, int cols);
    void (*weight_free)(tsr_backend *b, tsr_weight *w);
    /* Optional (host-memory backends): takes `data`, a buffer from this
     * backend's alloc holding (rows, cols) of `type` as weight_upload's src,
     * as w's storage without a copy when the backend keeps `type` as it is:
     * returns 1 and owns `data` from then on. 0 when it would convert (or
     * the slot is absent): the caller still owns `data` and uploads it. */
    int (*weight_adopt)(tsr_backend *b, tsr_weight *w, void *data, tsr_dtype type, int rows,
                        int cols);
    /* A vector (norm weights, biases) in activation type; returns NULL on failure. */
    void *(*vector_upload)(tsr_backend *b, const float *src, size_t n);
    /* Converts n activations to host f32 (logits, tests). */
    tsr_status (*act_to_f32)(tsr_backend *b, float *dst, const void *src, size_t n);
    /* Converts n host f32 values into activations. */
    tsr_status (*act_from_f32)(tsr_backend *b, void *dst, const float *src, size_t n);

    /* y(n, w.rows) = x(n, w.cols) @ W^T, or += when accumulate. A backend
     * may round x before multiplying (the CPU quantizes each row to 8 bits
     * per block for weights kept in block formats); each row's result then
     * depends on that row alone, never on the rest of the batch. */
    tsr_status (*matmul)(tsr_backend *b, void *y, const void *x, const tsr_weight *w, int n,
                         int accumulate);
    /* As matmul, but x is used as it is: the product whose gradient
     * matmul_dx is, for training (a rounded x makes the loss jump under tiny
     * changes of its input). Optional (NULL: matmul is already exact;
     * tsr_backend_matmul_exact falls back to it). */
    tsr_status (*matmul_exact)(tsr_backend *b, void *y, const void *x, const tsr_weight *w, int n,
                               int accumulate);
    /* y(n, dim) = x / sqrt(mean(x^2) + eps) * weight(dim). In place allowed. */
    tsr_status (*rmsnorm)(tsr_backend *b, void *y, const void *x, const void *weight, int n,
                          int dim, float eps);
    /* Rotate-half RoPE in place on x(n, n_heads * head_dim): for each head
     * and i < head_dim/2, (x[i], x[i+h/2]) rotated by pos[t] * inv_freq[i].
     * inv_freq(head_dim/2) is f32 on the device. */
    tsr_status (*rope)(tsr_backend *b, void *x, const int32_t *pos, const float *inv_freq, int n,
                       int n_heads, int head_dim);
    /* Writes k, v (n, kv_dim) (activations) into the caches at slot[i] =
     * block * block_size + offset, converted to the caches' element type
     * cache_dtype (see tsr_attn_desc; f16 rounds to nearest even). */
    tsr_status (*kv_store)(tsr_backend *b, void *k_cache, void *v_cache, tsr_dtype cache_dtype,
                           const void *k, const void *v, const int32_t *slot, int n, int kv_dim);
    /* out(n, n_head * head_dim) = softmax(q k^T * scale) v over the paged cache. */
    tsr_status (*attention)(tsr_backend *b, void *out, const void *q, const void *k_cache,
                            const void *v_cache, const tsr_attn_desc *d);
    /* out(n, dim) = silu(gate) * up. out may alias gate. */
    tsr_status (*swiglu)(tsr_backend *b, void *out, const void *gate, const void *up, int n,
                         int dim);
    /* y(n, dim) += x(n, dim) (residual). */
    tsr_status (*add)(tsr_backend *b, void *y, const void *x, int n, int dim);
    /* y(n, dim) += bias(dim) broadcast over rows. */
    tsr_status (*add_bias)(tsr_backend *b, void *y, const void *bias, int n, int dim);
    /* out(n, dim) = table rows ids[i] - row0; rows outside [0, table.rows) give
     * zeros (vocab-parallel embedding: another rank owns them). */
    tsr_status (*embedding)(tsr_backend *b, void *out, const tsr_weight *table, const int32_t *ids,
                            int n, int row0);

    /* Greedy pick per row of logits(n, V) (activations): val[i] = the
     * largest value, idx[i] = its column (ties: the lowest column); val and
     * idx are host memory. Synchronises. Lets greedy decoding bring 8 bytes
     * per row to the host instead of the whole row. */
    tsr_status (*argmax)(tsr_backend *b, float *val, int32_t *idx, const void *logits, int n,
                         int V);
    /* The k best entries of each row of logits(n, V) (activations), best
     * first: val(n, k) their values in f32, idx(n, k) their columns; host
     * memory. Synchronises. "Best" is tsr_topk_before's order: NaN before
     * everything (so a caller sees a broken row), then the larger value,
     * and between equal values the lower column, so with no NaN entry 0 is
     * argmax's pick. Where k > V the entries past V are (-inf, -1).
     * 1 <= k <= TSR_TOPK_MAX. Lets sampling with top-k bring 8k bytes per
     * row to the host instead of the row. Optional: NULL where a backend
     * has none (tsr_backend_has_topk; callers then take the logits). */
    tsr_status (*topk)(tsr_backend *b, float *val, int32_t *idx, const void *logits, int n, int V,
                       int k);

    /* Each row's softmax normaliser at its temperature: for row i of
     * logits(n, V) (activations), out[2i] = the largest value and out[2i+1]
     * = the sum over the row of exp((l - max) * inv_t[i]) (f32, host
     * memory; inv_t (n) host). A NaN entry, or a maximum that is not finite
     * (every entry -inf, or +inf), makes the sum NaN. Synchronises. With the row's top-k it lets
     * sampling with top_p or min_p but no top_k know each candidate's
     * probability over the whole vocabulary. Optional (NULL;
     * tsr_backend_has_row_expsum). */
    tsr_status (*row_expsum)(tsr_backend *b, float *out, const void *logits, const float *inv_t,
                             int n, int V);

    /* The device stream (cudaStream_t) ops are enqueued on; NULL: none. */
    void *(*stream)(tsr_backend *b);

    /* Graph capture (CUDA graphs); all four NULL where unsupported (CPU;
     * tsr_backend_has_graphs).
     * Between capture_begin and capture_end the ops enqueued are recorded,
     * not run: only device-side ops on existing buffers may be enqueued (no
     * to_device/to_host, sync, alloc or free, and no scratch growth: run the
     * same ops once uncaptured first). capture_end returns a replayable graph
     * in *graph (or NULL with an error; the stream is usable again either
     * way); graph_launch enqueues one replay; graph_free releases it (NULL
     * ok). A graph keeps the buffer addresses it was recorded with. */
    tsr_status (*capture_begin)(tsr_backend *b);
    tsr_status (*capture_end)(tsr_backend *b, void **graph);
    tsr_status (*graph_launch)(tsr_backend *b, void *graph);
    void (*graph_free)(tsr_backend *b, void *graph);

    /* ---- training (LoRA): backward ops and the optimizer ----
     * Gradients of activations have the activation type; LoRA parameters,
     * their gradients and optimizer state ("f32" below) are f32 on the
     * device. Ops that say "+=" accumulate into their output. */

    /* dx(n, w.cols) = dy(n, w.rows) @ W, or += when accumulate: the input
     * gradient of matmul (W frozen). */
    tsr_status (*matmul_dx)(tsr_backend *b, void *dx, const void *dy, const tsr_weight *w, int n,
                            int accumulate);
    /* LoRA forward: xa(n, r) = x(n, d_in) A(r, d_in)^T (f32, kept for the
     * backward), then y(n, d_out) += scale * xa B(d_out, r)^T. A, B f32. */
    tsr_status (*lora_fwd)(tsr_backend *b, void *y, const void *x, const float *A, const float *B,
                           float *xa, int n, int d_in, int d_out, int r, float scale);
    /* LoRA backward from dy(n, d_out), x and xa of the forward:
     *   dB += scale * dy^T xa ;  t = scale * dy B  (t: f32 (n, r), left so) ;
     *   dA += t^T x ;  dx += t A  (skipped when dx is NULL). */
    tsr_status (*lora_bwd)(tsr_backend *b, void *dx, float *dA, float *dB, const void *dy,
                           const void *x, const float *xa, const float *A, const float *B, float *t,
                           int n, int d_in, int d_out, int r, float scale);
    /* dx(n, dim) += the gradient of y = rmsnorm(x) * w given dy (w frozen;
     * in the activation type, as rmsnorm's). */
    tsr_status (*rmsnorm_bwd)(tsr_backend *b, void *dx, const void *dy, const void *x,
                              const void *weight, int n, int dim, float eps);
    /* The gradient of rope: rotates x in place by -pos[t] * inv_freq. */
    tsr_status (*rope_bwd)(tsr_backend *b, void *x, const int32_t *pos, const float *inv_freq,
                           int n, int n_heads, int head_dim);
    /* dgate, dup (n*dim each) = gradients of out = silu(gate) * up given
     * dout. dgate may alias gate, dup may alias up (each element is read
     * before it is written). */
    tsr_status (*swiglu_bwd)(tsr_backend *b, void *dgate, void *dup, const void *dout,
                             const void *gate, const void *up, int n, int dim);
    /* Causal attention for training over contiguous sequences: token rows
     * seq_start[s] .. seq_start[s+1]-1 form sequence s (positions 0..len-1).
     * q (n, n_head*hd), k and v (n, n_kv_head*hd) -> out (n, n_head*hd) and
     * lse (n, n_head) f32, the log-sum-exp of each row's scaled scores.
     * tok_seq must agree with seq_start (the CPU checks, CUDA trusts it). */
    tsr_status (*attn_train_fwd)(tsr_backend *b, void *out, float *lse, const void *q,
                                 const void *k, const void *v, const tsr_attn_train_desc *d);
    /* Its backward: dq, dk, dv (shapes of q, k, v; overwritten) from dout,
     * the forward's inputs, out and lse. */
    tsr_status (*attn_train_bwd)(tsr_backend *b, void *dq, void *dk, void *dv, const void *dout,
                                 const void *q, const void *k, const void *v, const void *out,
                                 const float *lse, const tsr_attn_train_desc *d);
    /* Vocabulary-parallel cross-entropy, in two passes around all-reduces.
     * logits (n, V) cover vocabulary rows row0 .. row0+V-1; target[i] is a
     * global id (negative: no loss; tlogit 0, sumexp still computed). Pass 1: rowmax(n) f32 = max of each row.
     * (The caller all-reduces rowmax with MAX.) Pass 2, given the global
     * rowmax: sumexp(n) = sum exp(l - rowmax), tlogit(n) = the target's logit
     * when this slice owns it, else 0. (The caller all-reduces both with SUM;
     * loss_i = log(sumexp) + rowmax - tlogit.) */
    tsr_status (*ce_rowmax)(tsr_backend *b, float *rowmax, const void *logits, int n, int V);
    tsr_status (*ce_sums)(tsr_backend *b, float *sumexp, float *tlogit, const void *logits,
                          const float *rowmax, const int32_t *target, int n, int V, int row0);
    /* dlogits(n, V) = weight[i] * (softmax_i - onehot(target_i)) from the
     * global rowmax and sumexp; weight (n) f32 is required; rows with a
     * negative target or weight 0 get zeros.
     * dlogits may alias logits. */
    tsr_status (*ce_grad)(tsr_backend *b, void *dlogits, const void *logits, const float *rowmax,
                          const float *sumexp, const int32_t *target, const float *weight, int n,
                          int V, int row0);
    /* AdamW on n f32 parameters, step t >= 1 (bias correction):
     *   m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2 ;
     *   p -= lr * (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd * p). */
    tsr_status (*adamw)(tsr_backend *b, float *p, const float *g, float *m, float *v, size_t n,
                        const tsr_adamw_params *h, int t);
    /* *out (host) = sum of x[i]^2 over n f32 values, accumulated in double. */
    tsr_status (*sumsq)(tsr_backend *b, double *out, const float *x, size_t n);
    /* x(n) *= s, f32. */
    tsr_status (*scale_f32)(tsr_backend *b, float *x, size_t n, float s);
    /* LoRA dropout (inverted), activations: out(n, d) = m * x / (1 - p), or
     * out += that when accumulate, where m(i, j) is 0 where the hash of
     * runtime/model/lora.h drops element (row0 + i, col0 + j) of dd and 1 elsewhere;
     * a kept value is x * (1.0f / (1.0f - p)) computed in f32, a dropped one
     * exactly 0 whatever x holds (NaN included). The forward masks the LoRA
     * branch's input with it, the backward the branch's input gradient (the
     * same mask: d/dx of m x / (1-p) is m / (1-p)). out may be x when not
     * accumulating (in place). */
    tsr_status (*lora_dropout)(tsr_backend *b, void *out, const void *x, int n, int d,
                               const tsr_lora_dropout_desc *dd, int accumulate);
    /* Sets `bytes` bytes of device memory p to zero (0.0 in f32, f16 and bf16
     * alike), enqueued like an op. Optional: NULL where a backend has none
     * (tsr_backend_has_fill_zero); callers go through tsr_lora_fill_zero
     * (runtime/model/lora.h), which copies zeros from the host then. */
    tsr_status (*fill_zero)(tsr_backend *b, void *p, size_t bytes);
} tsr_backend_i;

struct tsr_backend {
    const tsr_backend_i *iface;
    void *ctx; /* implementation state */
};

/* The CPU backend (f32). Threads for its own loops: 0 = all cores. */
tsr_status tsr_backend_cpu_create(int n_threads, tsr_backend **out);

/* The CUDA backend on GPU `device`: weights in weight_dtype (TSR_BF16; or
 * TSR_F32, the reference-precision mode, which needs f32 activations and
 * runs every GEMM in full f32), activations in act_dtype (TSR_BF16, or
 * TSR_F32 where precision matters more than memory), GEMMs through cuBLASLt
 * with f32 accumulation, ops enqueued on the backend's own stream.
 * TSR_ERR_UNSUPPORTED when this build has no CUDA backend (TESSERA_CUDA=OFF
 * or no toolkit) or the types are not a supported pair; TSR_ERR_BACKEND
 * naming the CUDA error when the device cannot be used. */
tsr_status tsr_backend_cuda_create(int device, tsr_dtype act_dtype, tsr_dtype weight_dtype,
                                   tsr_backend **out);

/* 1 when this build has the CUDA backend (whether or not a GPU is present). */
int tsr_backend_has_cuda(void);

/* Usable CUDA devices: 0 without a CUDA build, a driver or a GPU. Never fails. */
int tsr_backend_cuda_device_count(void);

/* The backend's CUDA stream (a cudaStream_t) on CUDA, NULL elsewhere. */
void *tsr_backend_stream(const tsr_backend *b);

/* Waits until everything enqueued on b is done. */
tsr_status tsr_backend_sync(tsr_backend *b);

/* Destroys any backend. NULL ok. */
void tsr_backend_destroy(tsr_backend *b);

/* Bytes per activation element of this backend. */
size_t tsr_backend_act_size(const tsr_backend *b);

/* LoRA dropout's hash on the host, exactly as runtime/model/lora.h defines it (the
 * backends' lora_dropout ops compute the same bits): the stream of (seed, key,
 * layer, target); the 24 bits of element (global token, global column) of a
 * stream; the threshold of p (an element is dropped when its bits are below
 * it: ceil(p * 2^24)). Cannot fail. */
uint64_t tsr_lora_dropout_stream(uint64_t seed, uint64_t key, int layer, int target);
uint32_t tsr_lora_dropout_bits(uint64_t stream, int64_t token, int64_t column);
uint32_t tsr_lora_dropout_threshold(float p);

/* The largest k the topk op takes. */
#define TSR_TOPK_MAX 256

/* topk's order: 1 when (va, ia) comes before (vb, ib): NaN first (lower
 * index first among NaNs), then the larger value, then the lower index. */
static inline int tsr_topk_before(float va, int32_t ia, float vb, int32_t ib) {
    const int na = va != va, nb = vb != vb;
    if (na || nb)
        return na && (!nb || ia < ib);
    return va > vb || (va == vb && ia < ib);
}

/* Allocates n bytes of device memory or returns TSR_ERR_NOMEM naming `what`. */
tsr_status tsr_backend_alloc(tsr_backend *b, size_t bytes, const char *what, void **out);
void tsr_backend_free(tsr_backend *b, void *p);

/* ---- calling a backend: one wrapper per slot ----
 * Each tsr_backend_<slot>(b, ...) calls b->iface-><slot>(b, ...) with the
 * same arguments and contract (see the slot above). Called where the backend
 * lacks an optional slot, a wrapper returns TSR_ERR_UNSUPPORTED naming the
 * backend and the op (tsr_backend_graph_free does nothing); test first with
 * tsr_backend_has_* where there is another way. */

/* The backend's name ("cpu", "cuda"), its activation type, and 1 when its
 * buffers are host memory (MPI may take them as they are). */
static inline const char *tsr_backend_name(const tsr_backend *b) { return b->iface->name; }
static inline tsr_dtype tsr_backend_act_dtype(const tsr_backend *b) { return b->iface->act_dtype; }
static inline int tsr_backend_host_memory(const tsr_backend *b) { return b->iface->host_memory; }

/* 1 when the backend has the optional op(s). */
static inline int tsr_backend_has_topk(const tsr_backend *b) { return b->iface->topk != NULL; }
static inline int tsr_backend_has_row_expsum(const tsr_backend *b) {
    return b->iface->row_expsum != NULL;
}
static inline int tsr_backend_has_graphs(const tsr_backend *b) {
    return b->iface->capture_begin != NULL;
}
static inline int tsr_backend_has_fill_zero(const tsr_backend *b) {
    return b->iface->fill_zero != NULL;
}

/* TSR_ERR_UNSUPPORTED: "backend <name> has no <op> op". For the wrappers. */
tsr_status tsr_backend_lacks(const tsr_backend *b, const char *op);

static inline tsr_status tsr_backend_to_device(tsr_backend *b, void *dst, const void *src,
                                               size_t bytes) {
    return b->iface->to_device(b, dst, src, bytes);
}

static inline tsr_status tsr_backend_to_host(tsr_backend *b, void *dst, const void *src,
                                             size_t bytes) {
    return b->iface->to_host(b, dst, src, bytes);
}

static inline tsr_status tsr_backend_copy(tsr_backend *b, void *dst, const void *src,
                                          size_t bytes) {
    return b->iface->copy(b, dst, src, bytes);
}

static inline int tsr_backend_weight_adopt(tsr_backend *b, tsr_weight *w, void *data,
                                           tsr_dtype type, int rows, int cols) {
    return b->iface->weight_adopt ? b->iface->weight_adopt(b, w, data, type, rows, cols) : 0;
}

static inline tsr_status tsr_backend_weight_upload(tsr_backend *b, tsr_weight *w, const void *src,
                                                   tsr_dtype src_type, int rows, int cols) {
    return b->iface->weight_upload(b, w, src, src_type, rows, cols);
}

/* Bytes a weight takes in the backend's storage. */
static inline size_t tsr_weight_bytes(const tsr_weight *w) {
    return (size_t)w->rows * tsr_dtype_row_bytes(w->dtype, (uint64_t)w->cols);
}

static inline void tsr_backend_weight_free(tsr_backend *b, tsr_weight *w) {
    b->iface->weight_free(b, w);
}

static inline void *tsr_backend_vector_upload(tsr_backend *b, const float *src, size_t n) {
    return b->iface->vector_upload(b, src, n);
}

static inline tsr_status tsr_backend_act_to_f32(tsr_backend *b, float *dst, const void *src,
                                                size_t n) {
    return b->iface->act_to_f32(b, dst, src, n);
}

static inline tsr_status tsr_backend_act_from_f32(tsr_backend *b, void *dst, const float *src,
                                                  size_t n) {
    return b->iface->act_from_f32(b, dst, src, n);
}

static inline tsr_status tsr_backend_matmul(tsr_backend *b, void *y, const void *x,
                                            const tsr_weight *w, int n, int accumulate) {
    return b->iface->matmul(b, y, x, w, n, accumulate);
}

static inline tsr_status tsr_backend_matmul_exact(tsr_backend *b, void *y, const void *x,
                                                  const tsr_weight *w, int n, int accumulate) {
    if (b->iface->matmul_exact)
        return b->iface->matmul_exact(b, y, x, w, n, accumulate);
    return b->iface->matmul(b, y, x, w, n, accumulate);
}

static inline tsr_status tsr_backend_rmsnorm(tsr_backend *b, void *y, const void *x,
                                             const void *weight, int n, int dim, float eps) {
    return b->iface->rmsnorm(b, y, x, weight, n, dim, eps);
}

static inline tsr_status tsr_backend_rope(tsr_backend *b, void *x, const int32_t *pos,
                                          const float *inv_freq, int n, int n_heads, int head_dim) {
    return b->iface->rope(b, x, pos, inv_freq, n, n_heads, head_dim);
}

static inline tsr_status tsr_backend_kv_store(tsr_backend *b, void *k_cache, void *v_cache,
                                              tsr_dtype cache_dtype, const void *k, const void *v,
                                              const int32_t *slot, int n, int kv_dim) {
    return b->iface->kv_store(b, k_cache, v_cache, cache_dtype, k, v, slot, n, kv_dim);
}

static inline tsr_status tsr_backend_attention(tsr_backend *b, void *out, const void *q,
                                               const void *k_cache, const void *v_cache,
                                               const tsr_attn_desc *d) {
    return b->iface->attention(b, out, q, k_cache, v_cache, d);
}

static inline tsr_status tsr_backend_swiglu(tsr_backend *b, void *out, const void *gate,
                                            const void *up, int n, int dim) {
    return b->iface->swiglu(b, out, gate, up, n, dim);
}

static inline tsr_status tsr_backend_add(tsr_backend *b, void *y, const void *x, int n, int dim) {
    return b->iface->add(b, y, x, n, dim);
}

static inline tsr_status tsr_backend_add_bias(tsr_backend *b, void *y, const void *bias, int n,
                                              int dim) {
    return b->iface->add_bias(b, y, bias, n, dim);
}

static inline tsr_status tsr_backend_embedding(tsr_backend *b, void *out, const tsr_weight *table,
                                               const int32_t *ids, int n, int row0) {
    return b->iface->embedding(b, out, table, ids, n, row0);
}

static inline tsr_status tsr_backend_argmax(tsr_backend *b, float *val, int32_t *idx,
                                            const void *logits, int n, int V) {
    return b->iface->argmax(b, val, idx, logits, n, V);
}

static inline tsr_status tsr_backend_topk(tsr_backend *b, float *val, int32_t *idx,
                                          const void *logits, int n, int V, int k) {
    return b->iface->topk ? b->iface->topk(b, val, idx, logits, n, V, k)
                          : tsr_backend_lacks(b, "topk");
}

static inline tsr_status tsr_backend_row_expsum(tsr_backend *b, float *out, const void *logits,
                                                const float *inv_t, int n, int V) {
    return b->iface->row_expsum ? b->iface->row_expsum(b, out, logits, inv_t, n, V)
                                : tsr_backend_lacks(b, "row_expsum");
}

static inline tsr_status tsr_backend_capture_begin(tsr_backend *b) {
    return b->iface->capture_begin ? b->iface->capture_begin(b)
                                   : tsr_backend_lacks(b, "capture_begin");
}

static inline tsr_status tsr_backend_capture_end(tsr_backend *b, void **graph) {
    return b->iface->capture_end ? b->iface->capture_end(b, graph)
                                 : tsr_backend_lacks(b, "capture_end");
}

static inline tsr_status tsr_backend_graph_launch(tsr_backend *b, void *graph) {
    return b->iface->graph_launch ? b->iface->graph_launch(b, graph)
                                  : tsr_backend_lacks(b, "graph_launch");
}

static inline void tsr_backend_graph_free(tsr_backend *b, void *graph) {
    if (b->iface->graph_free)
        b->iface->graph_free(b, graph);
}

static inline tsr_status tsr_backend_matmul_dx(tsr_backend *b, void *dx, const void *dy,
                                               const tsr_weight *w, int n, int accumulate) {
    return b->iface->matmul_dx(b, dx, dy, w, n, accumulate);
}

static inline tsr_status tsr_backend_lora_fwd(tsr_backend *b, void *y, const void *x,
                                              const float *A, const float *B, float *xa, int n,
                                              int d_in, int d_out, int r, float scale) {
    return b->iface->lora_fwd(b, y, x, A, B, xa, n, d_in, d_out, r, scale);
}

static inline tsr_status tsr_backend_lora_bwd(tsr_backend *b, void *dx, float *dA, float *dB,
                                              const void *dy, const void *x, const float *xa,
                                              const float *A, const float *B, float *t, int n,
                                              int d_in, int d_out, int r, float scale) {
    return b->iface->lora_bwd(b, dx, dA, dB, dy, x, xa, A, B, t, n, d_in, d_out, r, scale);
}

static inline tsr_status tsr_backend_rmsnorm_bwd(tsr_backend *b, void *dx, const void *dy,
                                                 const void *x, const void *weight, int n, int dim,
                                                 float eps) {
    return b->iface->rmsnorm_bwd(b, dx, dy, x, weight, n, dim, eps);
}

static inline tsr_status tsr_backend_rope_bwd(tsr_backend *b, void *x, const int32_t *pos,
                                              const float *inv_freq, int n, int n_heads,
                                              int head_dim) {
    return b->iface->rope_bwd(b, x, pos, inv_freq, n, n_heads, head_dim);
}

static inline tsr_status tsr_backend_swiglu_bwd(tsr_backend *b, void *dgate, void *dup,
                                                const void *dout, const void *gate, const void *up,
                                                int n, int dim) {
    return b->iface->swiglu_bwd(b, dgate, dup, dout, gate, up, n, dim);
}

static inline tsr_status tsr_backend_attn_train_fwd(tsr_backend *b, void *out, float *lse,
                                                    const void *q, const void *k, const void *v,
                                                    const tsr_attn_train_desc *d) {
    return b->iface->attn_train_fwd(b, out, lse, q, k, v, d);
}

static inline tsr_status tsr_backend_attn_train_bwd(tsr_backend *b, void *dq, void *dk, void *dv,
                                                    const void *dout, const void *q, const void *k,
                                                    const void *v, const void *out,
                                                    const float *lse,
                                                    const tsr_attn_train_desc *d) {
    return b->iface->attn_train_bwd(b, dq, dk, dv, dout, q, k, v, out, lse, d);
}

static inline tsr_status tsr_backend_ce_rowmax(tsr_backend *b, float *rowmax, const void *logits,
                                               int n, int V) {
    return b->iface->ce_rowmax(b, rowmax, logits, n, V);
}

static inline tsr_status tsr_backend_ce_sums(tsr_backend *b, float *sumexp, float *tlogit,
                                             const void *logits, const float *rowmax,
                                             const int32_t *target, int n, int V, int row0) {
    return b->iface->ce_sums(b, sumexp, tlogit, logits, rowmax, target, n, V, row0);
}

static inline tsr_status tsr_backend_ce_grad(tsr_backend *b, void *dlogits, const void *logits,
                                             const float *rowmax, const float *sumexp,
                                             const int32_t *target, const float *weight, int n,
                                             int V, int row0) {
    return b->iface->ce_grad(b, dlogits, logits, rowmax, sumexp, target, weight, n, V, row0);
}

static inline tsr_status tsr_backend_adamw(tsr_backend *b, float *p, const float *g, float *m,
                                           float *v, size_t n, const tsr_adamw_params *h, int t) {
    return b->iface->adamw(b, p, g, m, v, n, h, t);
}

static inline tsr_status tsr_backend_sumsq(tsr_backend *b, double *out, const float *x, size_t n) {
    return b->iface->sumsq(b, out, x, n);
}

static inline tsr_status tsr_backend_scale_f32(tsr_backend *b, float *x, size_t n, float s) {
    return b->iface->scale_f32(b, x, n, s);
}

static inline tsr_status tsr_backend_lora_dropout(tsr_backend *b, void *out, const void *x, int n,
                                                  int d, const tsr_lora_dropout_desc *dd,
                                                  int accumulate) {
    return b->iface->lora_dropout(b, out, x, n, d, dd, accumulate);
}

static inline tsr_status tsr_backend_fill_zero(tsr_backend *b, void *p, size_t bytes) {
    return b->iface->fill_zero ? b->iface->fill_zero(b, p, bytes)
                               : tsr_backend_lacks(b, "fill_zero");
}

#endif
