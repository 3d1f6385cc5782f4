/* kernels/backend.h - the kernel backend interface: a table of function
 * pointers over a device with its own memory, and the small wrappers callers
 * use. Two implementations: kernels/cpu/ (here) and kernels/cuda/ (later).
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
 * with tsr_backend_weight_free. */
typedef struct {
    void *data;
    tsr_dtype dtype; /* storage type chosen by the backend */
    int rows, cols;
} tsr_weight;

/* Paged attention over a KV cache laid out as (n_blocks, block_size, kv_dim)
 * per layer for K and V, kv_dim = n_kv_head * head_dim. Every token i of the
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
    int max_blocks; /* columns of block_tables */
    float scale;    /* usually 1/sqrt(head_dim) */
    const int32_t *pos;          /* (n_tokens) device */
    const int32_t *seq;          /* (n_tokens) device */
    const int32_t *block_tables; /* (n_seqs, max_blocks) device */
} tsr_attn_desc;

typedef struct tsr_backend tsr_backend;

typedef struct {
    const char *name;
    tsr_dtype act_dtype;

    /* memory */
    void *(*alloc)(tsr_backend *b, size_t bytes); /* NULL on failure */
    void (*free)(tsr_backend *b, void *p);        /* NULL ok */
    tsr_status (*to_device)(tsr_backend *b, void *dst, const void *src, size_t bytes);
    tsr_status (*to_host)(tsr_backend *b, void *dst, const void *src, size_t bytes);
    tsr_status (*copy)(tsr_backend *b, void *dst, const void *src, size_t bytes);
    tsr_status (*sync)(tsr_backend *b);
    void (*destroy)(tsr_backend *b);

    /* Weights: converts host f32 (rows, cols) into the backend's storage. */
    tsr_status (*weight_upload)(tsr_backend *b, tsr_weight *w, const float *src, int rows, int cols);
    void (*weight_free)(tsr_backend *b, tsr_weight *w);
    /* A vector (norm weights, biases) in activation type; returns NULL on failure. */
    void *(*vector_upload)(tsr_backend *b, const float *src, size_t n);
    /* Converts n activations to host f32 (logits, tests). */
    tsr_status (*act_to_f32)(tsr_backend *b, float *dst, const void *src, size_t n);
    /* Converts n host f32 values into activations. */
    tsr_status (*act_from_f32)(tsr_backend *b, void *dst, const float *src, size_t n);

    /* y(n, w.rows) = x(n, w.cols) @ W^T, or += when accumulate. */
    tsr_status (*matmul)(tsr_backend *b, void *y, const void *x, const tsr_weight *w, int n,
                         int accumulate);
    /* y(n, dim) = x / sqrt(mean(x^2) + eps) * weight(dim). In place allowed. */
    tsr_status (*rmsnorm)(tsr_backend *b, void *y, const void *x, const void *weight, int n,
                          int dim, float eps);
    /* Rotate-half RoPE in place on x(n, n_heads * head_dim): for each head
     * and i < head_dim/2, (x[i], x[i+h/2]) rotated by pos[t] * inv_freq[i].
     * inv_freq(head_dim/2) is f32 on the device. */
    tsr_status (*rope)(tsr_backend *b, void *x, const int32_t *pos, const float *inv_freq, int n,
                       int n_heads, int head_dim);
    /* Writes k, v (n, kv_dim) into the caches at slot[i] = block * block_size + offset. */
    tsr_status (*kv_store)(tsr_backend *b, void *k_cache, void *v_cache, const void *k,
                           const void *v, const int32_t *slot, int n, int kv_dim);
    /* out(n, n_head * head_dim) = softmax(q k^T * scale) v over the paged cache. */
    tsr_status (*attention)(tsr_backend *b, void *out, const void *q, const void *k_cache,
                            const void *v_cache, const tsr_attn_desc *d);
    /* out(n, dim) = silu(gate) * up. out may alias gate. */
    tsr_status (*swiglu)(tsr_backend *b, void *out, const void *gate, const void *up, int n, int dim);
    /* y(n, dim) += x(n, dim) (residual). */
    tsr_status (*add)(tsr_backend *b, void *y, const void *x, int n, int dim);
    /* y(n, dim) += bias(dim) broadcast over rows. */
    tsr_status (*add_bias)(tsr_backend *b, void *y, const void *bias, int n, int dim);
    /* out(n, dim) = table rows ids[i] - row0; rows outside [0, table.rows) give
     * zeros (vocab-parallel embedding: another rank owns them). */
    tsr_status (*embedding)(tsr_backend *b, void *out, const tsr_weight *table, const int32_t *ids,
                            int n, int row0);
} tsr_backend_i;

struct tsr_backend {
    const tsr_backend_i *iface;
    void *ctx; /* implementation state */
};

/* The CPU backend (f32). Threads for its own loops: 0 = all cores. */
tsr_status tsr_backend_cpu_create(int n_threads, tsr_backend **out);

/* Destroys any backend. NULL ok. */
void tsr_backend_destroy(tsr_backend *b);

/* Bytes per activation element of this backend. */
size_t tsr_backend_act_size(const tsr_backend *b);

/* Allocates n bytes of device memory or returns TSR_ERR_NOMEM naming `what`. */
tsr_status tsr_backend_alloc(tsr_backend *b, size_t bytes, const char *what, void **out);
void tsr_backend_free(tsr_backend *b, void *p);

#endif
