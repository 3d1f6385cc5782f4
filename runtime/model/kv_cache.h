/* runtime/model/kv_cache.h - the paged KV cache of one rank: per layer, K and V
 * storage of n_blocks blocks of block_size positions (kv_dim values each), a
 * free list of blocks, and a block table per sequence slot.
 *
 * Storage lives on the backend's device, in an element type chosen once
 * (tsr_kv_cache_dtype: f16 by default on the CPU, as llama.cpp, halving the
 * bytes per position against f32; the activation type on CUDA); block
 * tables live on the host and are uploaded by the model for each forward. A
 * sequence slot grows by whole blocks; freeing a slot returns all its blocks.
 *
 * What it is not: a scheduler. It refuses (TSR_ERR_RANGE) when blocks run out;
 * deciding whom to preempt or queue is the caller's business. */
#ifndef TSR_RUNTIME_KV_CACHE_H
#define TSR_RUNTIME_KV_CACHE_H

#include <stdint.h>

#include "kernels/backend.h"

typedef struct {
    tsr_backend *be;
    tsr_dtype dtype;   /* element type of k and v (kv_store and attention are told it) */
    int n_layers;      /* layers held by this rank */
    int kv_dim;        /* n_kv_head_local * head_dim */
    int block_size;    /* positions per block */
    int n_blocks;      /* total blocks */
    int max_seqs;      /* sequence slots */
    int max_ctx;       /* positions one sequence may hold */
    int max_blocks;    /* per sequence: ceil(max_ctx / block_size) */
    void **k, **v;     /* (n_layers) device buffers (n_blocks, block_size, kv_dim) */
    int32_t *tables;   /* (max_seqs, max_blocks) host, -1 = unused */
    int *n_seq_blocks; /* (max_seqs) blocks held by each slot */
    int *free_list;    /* stack of free block ids */
    int n_free;
} tsr_kv_cache;

/* tsr_kv_cache_dtype's request for the backend's own choice. */
#define TSR_KV_DTYPE_DEFAULT (-1)

/* The element type of a cache on `be` for a request (TSR_KV_DTYPE_DEFAULT,
 * TSR_F16 or TSR_F32, as --kv-dtype asks): the CPU backend (f32 activations
 * in host memory) keeps f16 (its default) or f32; a device backend (CUDA)
 * keeps its activation type, and a request for anything else is refused
 * (TSR_ERR_UNSUPPORTED, naming the types). */
tsr_status tsr_kv_cache_dtype(const tsr_backend *be, int requested, tsr_dtype *out);

/* Allocates the storage: n_blocks * block_size positions per layer, of
 * element type dtype (TSR_F16, TSR_BF16 or TSR_F32; whether the backend's
 * ops read it is tsr_kv_cache_dtype's question). max_ctx bounds the length
 * of one sequence. */
tsr_status tsr_kv_cache_init(tsr_kv_cache *kv, tsr_backend *be, tsr_dtype dtype, int n_layers,
                             int kv_dim, int block_size, int n_blocks, int max_seqs, int max_ctx);
void tsr_kv_cache_free(tsr_kv_cache *kv); /* NULL ok; zeroed after */

/* Ensures slot `seq` has blocks for positions [0, n_pos). TSR_ERR_RANGE when
 * the cache is full or n_pos exceeds max_ctx; the slot is unchanged then. */
tsr_status tsr_kv_cache_reserve(tsr_kv_cache *kv, int seq, int n_pos);

/* Returns every block of slot `seq` to the free list. */
void tsr_kv_cache_release(tsr_kv_cache *kv, int seq);

/* Bytes of K and V one position takes over the cache's layers. */
size_t tsr_kv_cache_position_bytes(const tsr_kv_cache *kv);

/* Blocks in use over all slots. */
int tsr_kv_cache_used_blocks(const tsr_kv_cache *kv);

/* The cache slot (block * block_size + offset) of position `pos` of `seq`;
 * the position must be reserved. */
int32_t tsr_kv_cache_slot(const tsr_kv_cache *kv, int seq, int pos);

#endif
