/* runtime/model/kv_cache.c - block allocation for the paged KV cache. */
#include "runtime/model/kv_cache.h"

#include <stdlib.h>
#include <string.h>

tsr_status tsr_kv_cache_dtype(const tsr_backend *be, int requested, tsr_dtype *out) {
    const tsr_dtype act = tsr_backend_act_dtype(be);
    const int cpu = tsr_backend_host_memory(be) && act == TSR_F32;
    if (requested == TSR_KV_DTYPE_DEFAULT) {
        *out = cpu ? TSR_F16 : act;
        return TSR_OK;
    }
    if (requested == (int)act || (cpu && requested == TSR_F16)) {
        *out = (tsr_dtype)requested;
        return TSR_OK;
    }
    const char *name = tsr_dtype_name((tsr_dtype)requested);
    if (cpu)
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "kv cache: the CPU keeps f16 or f32, not %s",
                             name ? name : "?");
    return tsr_error_set(TSR_ERR_UNSUPPORTED,
                         "kv cache: the %s backend keeps its KV cache in its activation type (%s), "
                         "not %s; --kv-dtype f16 is for the CPU",
                         tsr_backend_name(be), tsr_dtype_name(act), name ? name : "?");
}

tsr_status tsr_kv_cache_init(tsr_kv_cache *kv, tsr_backend *be, tsr_dtype dtype, int n_layers,
                             int kv_dim, int block_size, int n_blocks, int max_seqs, int max_ctx) {
    memset(kv, 0, sizeof *kv);
    if (n_layers < 0 || kv_dim <= 0 || block_size <= 0 || n_blocks <= 0 || max_seqs <= 0 ||
        max_ctx <= 0)
        return tsr_error_set(TSR_ERR_INVALID,
                             "kv cache: bad sizes (%d layers, kv_dim %d, block size %d, %d blocks, "
                             "%d sequences, context %d; want all > 0, layers >= 0)",
                             n_layers, kv_dim, block_size, n_blocks, max_seqs, max_ctx);
    if (dtype != TSR_F16 && dtype != TSR_BF16 && dtype != TSR_F32)
        return tsr_error_set(TSR_ERR_INVALID, "kv cache: elements of f16, bf16 or f32, not %s (%d)",
                             tsr_dtype_name(dtype) ? tsr_dtype_name(dtype) : "?", (int)dtype);
    kv->be = be;
    kv->dtype = dtype;
    kv->n_layers = n_layers;
    kv->kv_dim = kv_dim;
    kv->block_size = block_size;
    kv->n_blocks = n_blocks;
    kv->max_seqs = max_seqs;
    kv->max_ctx = max_ctx;
    kv->max_blocks = max_ctx / block_size + (max_ctx % block_size != 0);
    kv->k = calloc((size_t)(n_layers ? n_layers : 1), sizeof *kv->k);
    kv->v = calloc((size_t)(n_layers ? n_layers : 1), sizeof *kv->v);
    kv->tables = malloc((size_t)max_seqs * kv->max_blocks * sizeof *kv->tables);
    kv->n_seq_blocks = calloc((size_t)max_seqs, sizeof *kv->n_seq_blocks);
    kv->free_list = malloc((size_t)n_blocks * sizeof *kv->free_list);
    tsr_status st = TSR_OK;
    if (!kv->k || !kv->v || !kv->tables || !kv->n_seq_blocks || !kv->free_list) {
        st = tsr_error_set(TSR_ERR_NOMEM, "kv cache: out of host memory");
        goto cleanup;
    }
    size_t bytes = (size_t)n_blocks * block_size * kv_dim * tsr_dtype_block_bytes(dtype);
    for (int l = 0; l < n_layers; l++) {
        TSR_CHECK_GOTO(st, tsr_backend_alloc(be, bytes, "the KV cache (K)", &kv->k[l]));
        TSR_CHECK_GOTO(st, tsr_backend_alloc(be, bytes, "the KV cache (V)", &kv->v[l]));
    }
    for (size_t i = 0; i < (size_t)max_seqs * kv->max_blocks; i++)
        kv->tables[i] = -1;
    for (int b = 0; b < n_blocks; b++)
        kv->free_list[b] = n_blocks - 1 - b; /* pop order 0, 1, 2, ... */
    kv->n_free = n_blocks;
cleanup:
    if (st != TSR_OK)
        tsr_kv_cache_free(kv);
    return st;
}

void tsr_kv_cache_free(tsr_kv_cache *kv) {
    if (!kv)
        return;
    for (int l = 0; kv->k && l < kv->n_layers; l++)
        tsr_backend_free(kv->be, kv->k[l]);
    for (int l = 0; kv->v && l < kv->n_layers; l++)
        tsr_backend_free(kv->be, kv->v[l]);
    free(kv->k);
    free(kv->v);
    free(kv->tables);
    free(kv->n_seq_blocks);
    free(kv->free_list);
    memset(kv, 0, sizeof *kv);
}

tsr_status tsr_kv_cache_reserve(tsr_kv_cache *kv, int seq, int n_pos) {
    if (seq < 0 || seq >= kv->max_seqs)
        return tsr_error_set(TSR_ERR_INVALID, "kv cache: sequence slot %d out of range", seq);
    if (n_pos < 0 || n_pos > kv->max_ctx)
        return tsr_error_set(TSR_ERR_RANGE, "kv cache: %d positions exceed the context of %d",
                             n_pos, kv->max_ctx);
    int need = n_pos / kv->block_size + (n_pos % kv->block_size != 0);
    int have = kv->n_seq_blocks[seq];
    if (need - have > kv->n_free)
        return tsr_error_set(TSR_ERR_RANGE, "kv cache: out of blocks (%d free, %d needed)",
                             kv->n_free, need - have);
    for (int b = have; b < need; b++)
        kv->tables[(size_t)seq * kv->max_blocks + b] = kv->free_list[--kv->n_free];
    if (need > have)
        kv->n_seq_blocks[seq] = need;
    return TSR_OK;
}

void tsr_kv_cache_release(tsr_kv_cache *kv, int seq) {
    if (seq < 0 || seq >= kv->max_seqs)
        return;
    int32_t *t = kv->tables + (size_t)seq * kv->max_blocks;
    for (int b = 0; b < kv->n_seq_blocks[seq]; b++) {
        kv->free_list[kv->n_free++] = t[b];
        t[b] = -1;
    }
    kv->n_seq_blocks[seq] = 0;
}

size_t tsr_kv_cache_position_bytes(const tsr_kv_cache *kv) {
    return 2 * (size_t)kv->n_layers * kv->kv_dim * tsr_dtype_block_bytes(kv->dtype);
}

int tsr_kv_cache_used_blocks(const tsr_kv_cache *kv) { return kv->n_blocks - kv->n_free; }

int32_t tsr_kv_cache_slot(const tsr_kv_cache *kv, int seq, int pos) {
    return kv->tables[(size_t)seq * kv->max_blocks + pos / kv->block_size] * kv->block_size +
           pos % kv->block_size;
}
