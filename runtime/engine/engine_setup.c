/* runtime/engine/engine_setup.c - building and freeing an engine: the device
 * each rank runs on (checked and agreed on every rank), the backend, the
 * model shard and KV cache, the transfer path of each group; and the scratch
 * buffers and data-path collectives the other engine files share. Not here:
 * running steps (engine.c) or training (engine_train.c). */
#include "runtime/engine/engine.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "runtime/engine/engine_internal.h"

tsr_status tsr_engine_oom(size_t bytes, const char *what) {
    return tsr_error_set(TSR_ERR_NOMEM, "engine: out of memory allocating %zu bytes for %s", bytes,
                         what);
}

tsr_status tsr_engine_grow(void **p, size_t *cap, size_t need, size_t elem, const char *what) {
    if (need <= *cap)
        return TSR_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return tsr_engine_oom(n * elem, what);
    *p = q;
    *cap = n;
    return TSR_OK;
}

/* Grows a backend buffer to at least `bytes`; the contents are not kept. */
tsr_status tsr_engine_grow_device(tsr_backend *be, void **p, size_t *cap, size_t bytes,
                                  const char *what) {
    if (bytes <= *cap)
        return TSR_OK;
    size_t n = *cap ? *cap : 4096;
    while (n < bytes)
        n *= 2;
    tsr_backend_free(be, *p);
    *p = NULL;
    *cap = 0;
    TSR_TRY(tsr_backend_alloc(be, n, what, p));
    *cap = n;
    return TSR_OK;
}

/* ---- the data path: activations over the tp and pp groups, along each
 * group's tsr_xfer path (runtime/engine/xfer.h) ---- */

tsr_status tsr_engine_tp_allreduce(tsr_engine *e, void *buf, size_t count) {
    return tsr_xfer_allreduce(e->tp_xfer, &e->stage, e->be, e->grid->tp_group, buf, count,
                              tsr_backend_act_dtype(e->be), tsr_backend_act_size(e->be),
                              TSR_COMM_SUM);
}

tsr_status tsr_engine_pp_send(tsr_engine *e, const void *buf, size_t count, int peer, int tag) {
    return tsr_xfer_send(e->pp_xfer, &e->stage, e->be, e->grid->pp_group, buf, count,
                         tsr_backend_act_dtype(e->be), tsr_backend_act_size(e->be), peer, tag);
}

tsr_status tsr_engine_pp_recv(tsr_engine *e, void *buf, size_t count, int peer, int tag) {
    return tsr_xfer_recv(e->pp_xfer, &e->stage, e->be, e->grid->pp_group, buf, count,
                         tsr_backend_act_dtype(e->be), tsr_backend_act_size(e->be), peer, tag);
}

/* The model's TP hook: one all-reduce per row-parallel projection. */
static tsr_status tp_allreduce(void *ctx, void *buf, size_t count) {
    return tsr_engine_tp_allreduce(ctx, buf, count);
}

static int default_threads(const tsr_comm_grid *g) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int per = (int)(cores / (g->local_size > 0 ? g->local_size : 1));
    return per > 0 ? per : 1;
}

/* ---- device selection ---- */

static int act_dtype_of(const tsr_engine_config *cfg) {
    if (cfg->act_dtype != TSR_ENGINE_ACT_DEFAULT)
        return cfg->act_dtype;
    return cfg->device == TSR_DEVICE_CUDA ? TSR_BF16 : TSR_F32;
}

/* CUDA's weight storage (bf16 unless f32 was asked for). */
static int weight_dtype_of(const tsr_engine_config *cfg) {
    if (cfg->weight_dtype != TSR_ENGINE_ACT_DEFAULT)
        return cfg->weight_dtype;
    return TSR_BF16;
}

/* tsr_model_load's `weights`: the CPU keeps the file's types unless told to
 * convert; CUDA always takes the file's and converts on upload. */
static int model_weights_of(const tsr_engine_config *cfg) {
    if (cfg->device == TSR_DEVICE_CPU && cfg->weight_dtype != TSR_ENGINE_ACT_DEFAULT)
        return cfg->weight_dtype;
    return TSR_MODEL_WEIGHTS_FILE;
}

tsr_status tsr_engine_config_check(const tsr_engine_config *cfg, tsr_comm_kind kind) {
    const int act = act_dtype_of(cfg);
    if (cfg->device != TSR_DEVICE_CPU && cfg->device != TSR_DEVICE_CUDA)
        return tsr_error_set(TSR_ERR_INVALID, "unknown device %d (want cpu or cuda)",
                             (int)cfg->device);
    const int wdt = cfg->weight_dtype;
    if (act != TSR_F32 && act != TSR_BF16)
        return tsr_error_set(TSR_ERR_INVALID, "activation type %d: want f32 or bf16", act);
    if (wdt != TSR_ENGINE_ACT_DEFAULT && wdt != TSR_F32 && wdt != TSR_BF16 && wdt != TSR_Q8_0 &&
        wdt != TSR_Q4_0)
        return tsr_error_set(TSR_ERR_INVALID, "weight type %d: want bf16, f32, q8_0 or q4_0", wdt);
    if (cfg->device == TSR_DEVICE_CPU && wdt == TSR_BF16)
        return tsr_error_set(TSR_ERR_INVALID,
                             "--weight-dtype bf16 needs --device cuda (the CPU keeps the file's "
                             "blocks, or f32, q8_0, q4_0)");
    if (cfg->device == TSR_DEVICE_CUDA && (wdt == TSR_Q8_0 || wdt == TSR_Q4_0))
        return tsr_error_set(TSR_ERR_INVALID,
                             "--weight-dtype %s needs --device cpu (CUDA stores bf16 or f32)",
                             tsr_dtype_name(wdt));
    if (cfg->device == TSR_DEVICE_CUDA && wdt == TSR_F32 && act != TSR_F32)
        return tsr_error_set(TSR_ERR_INVALID,
                             "--weight-dtype f32 needs --act-dtype f32 (full-precision GEMMs)");
    const int kvt = cfg->kv_dtype;
    if (kvt != TSR_ENGINE_ACT_DEFAULT && kvt != TSR_F16 && kvt != TSR_F32)
        return tsr_error_set(TSR_ERR_INVALID, "KV cache type %d: want f16 or f32", kvt);
    if (cfg->device == TSR_DEVICE_CUDA && kvt != TSR_ENGINE_ACT_DEFAULT && kvt != act)
        return tsr_error_set(TSR_ERR_INVALID,
                             "--kv-dtype %s: on CUDA the KV cache holds the activation type (%s); "
                             "--kv-dtype f16 is for --device cpu",
                             tsr_dtype_name(kvt), tsr_dtype_name(act));
    if (cfg->gpu < -1)
        return tsr_error_set(TSR_ERR_INVALID, "GPU %d: want -1 (by local rank) or an index >= 0",
                             cfg->gpu);
    if (cfg->device == TSR_DEVICE_CPU) {
        if (act != TSR_F32)
            return tsr_error_set(TSR_ERR_INVALID,
                                 "--act-dtype bf16 needs --device cuda (the CPU backend computes "
                                 "in f32)");
        if (kind == TSR_COMM_NCCL)
            return tsr_error_set(TSR_ERR_INVALID,
                                 "--comm nccl needs --device cuda (NCCL moves GPU memory; use "
                                 "--comm mpi on the CPU)");
        return TSR_OK;
    }
    if (kind == TSR_COMM_NCCL && !tsr_comm_has_nccl())
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "--comm nccl: this build has no NCCL (configure with "
                             "-DTESSERA_CUDA=ON where CUDA and NCCL are installed, or use --comm "
                             "mpi)");
    if (!tsr_backend_has_cuda())
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "--device cuda: this build has no CUDA backend (configure with "
                             "-DTESSERA_CUDA=ON where the CUDA toolkit is installed)");
    return TSR_OK;
}

/* This rank's part of tsr_engine_device_select, before the agreement. */
static tsr_status select_local(const tsr_comm_grid *g, const tsr_engine_config *cfg,
                               tsr_comm_kind kind, int *gpu) {
    *gpu = -1;
    TSR_TRY(tsr_engine_config_check(cfg, kind));
    if (cfg->device == TSR_DEVICE_CPU)
        return TSR_OK;
    int n = tsr_backend_cuda_device_count();
    if (n == 0)
        return tsr_error_set(TSR_ERR_BACKEND,
                             "--device cuda: no CUDA device is visible on host %s (check the "
                             "driver, nvidia-smi and CUDA_VISIBLE_DEVICES)",
                             g->host);
    if (cfg->gpu >= n)
        return tsr_error_set(TSR_ERR_RANGE, "--gpu %d: host %s has %d CUDA device%s (0..%d)",
                             cfg->gpu, g->host, n, n == 1 ? "" : "s", n - 1);
    if (kind == TSR_COMM_NCCL && cfg->gpu >= 0 && g->local_size > 1)
        return tsr_error_set(TSR_ERR_INVALID,
                             "--gpu %d with --comm nccl puts the %d ranks on host %s on one GPU; "
                             "NCCL needs a GPU per rank (leave --gpu out, or use --comm mpi)",
                             cfg->gpu, g->local_size, g->host);
    if (kind == TSR_COMM_NCCL && cfg->gpu < 0 && g->local_size > n)
        return tsr_error_set(TSR_ERR_INVALID,
                             "--comm nccl: host %s runs %d ranks but has %d CUDA device%s; NCCL "
                             "needs a GPU per rank (use --comm mpi to share GPUs)",
                             g->host, g->local_size, n, n == 1 ? "" : "s");
    *gpu = cfg->gpu >= 0 ? cfg->gpu : (kind == TSR_COMM_NCCL ? g->local_rank : g->local_rank % n);
    return TSR_OK;
}

tsr_status tsr_engine_device_select(tsr_comm_grid *g, const tsr_engine_config *cfg,
                                    tsr_comm_kind kind, int *gpu) {
    tsr_status st = select_local(g, cfg, kind, gpu);
    tsr_status all = tsr_comm_agree(g->world, st);
    if (st == TSR_OK && all != TSR_OK)
        st = tsr_error_set(all, "another rank failed to set up its device (see its message)");
    return st;
}

tsr_status tsr_engine_device_probe(tsr_engine_config *cfg, tsr_comm_kind kind) {
    tsr_comm_grid probe;
    tsr_comm_grid_config pc = TSR_COMM_GRID_CONFIG_INIT; /* tp = pp = 1, MPI */
    TSR_TRY(tsr_comm_grid_init(&probe, &pc));
    int gpu = -1;
    tsr_status st = tsr_engine_device_select(&probe, cfg, kind, &gpu);
    tsr_comm_grid_free(&probe);
    if (st == TSR_OK)
        cfg->gpu = gpu;
    return st;
}

tsr_status tsr_engine_init(tsr_engine *e, tsr_comm_grid *grid, const tsr_model_file_t *mf,
                           const tsr_plan_config *pc, const tsr_engine_config *cfg) {
    memset(e, 0, sizeof *e);
    e->grid = grid;
    e->cfg = *cfg;
    e->gpu = -1;
    if (e->cfg.block_size <= 0)
        e->cfg.block_size = 16;
    if (e->cfg.micro_batches <= 0)
        e->cfg.micro_batches = grid->pp;
    e->mcfg = *tsr_model_file_config(mf);
    /* The plan is computed identically on every rank, so an impossible layout
     * fails everywhere before any weight is read. */
    TSR_TRY(tsr_shard_plan_init(&e->mcfg, pc, &e->plan));
    tsr_status st = tsr_shard_plan_check_world(&e->plan, grid->world_size);
    if (st == TSR_OK)
        st = tsr_shard_plan_slice(&e->plan, grid->tp_rank, grid->pp_rank, &e->slice);
    if (st != TSR_OK) {
        tsr_shard_plan_free(&e->plan);
        return st;
    }
    e->first_stage = grid->pp_rank == 0;
    e->last_stage = grid->pp_rank == grid->pp - 1;

    /* every rank reaches this agreement: the checks above are the same on all */
    tsr_comm_kind kind = tsr_comm_kind_of(grid->tp_group);
    st = tsr_engine_device_select(grid, &e->cfg, kind, &e->gpu);
    if (st != TSR_OK) {
        tsr_shard_plan_free(&e->plan);
        return st;
    }
    const tsr_model_config *c = &e->mcfg;
    int bs = e->cfg.block_size;
    int blocks = e->cfg.kv_blocks > 0 ? e->cfg.kv_blocks
                                      : e->cfg.max_seqs * ((e->cfg.max_ctx + bs - 1) / bs);
    if (e->cfg.device == TSR_DEVICE_CUDA)
        st = tsr_backend_cuda_create(e->gpu, (tsr_dtype)act_dtype_of(&e->cfg),
                                     (tsr_dtype)weight_dtype_of(&e->cfg), &e->be);
    else
        st =
            tsr_backend_cpu_create(cfg->threads > 0 ? cfg->threads : default_threads(grid), &e->be);
    if (st == TSR_OK) {
        e->tp_xfer = tsr_xfer_choose(grid->tp_group, e->be, e->cfg.stage_host);
        e->pp_xfer = tsr_xfer_choose(grid->pp_group, e->be, e->cfg.stage_host);
        TSR_LOG_I("device %s (GPU %d), activations %s, tp data path %s, pp data path %s",
                  tsr_backend_name(e->be), e->gpu, tsr_dtype_name(tsr_backend_act_dtype(e->be)),
                  tsr_xfer_name(e->tp_xfer), tsr_xfer_name(e->pp_xfer));
        /* one all-reduce per row-parallel projection; none on one TP rank */
        tsr_model_comm mc = {e, grid->tp > 1 ? tp_allreduce : NULL};
        st = tsr_model_load(&e->model, mf, &e->slice, e->first_stage, e->last_stage,
                            model_weights_of(&e->cfg), e->be, &mc);
        e->model_loaded = st == TSR_OK;
        /* the slices are copied out: the file's pages need not stay resident */
        tsr_model_file_drop_pages(mf);
    }
    tsr_dtype kv_dtype = TSR_F32;
    if (st == TSR_OK)
        st = tsr_kv_cache_dtype(e->be,
                                e->cfg.kv_dtype == TSR_ENGINE_ACT_DEFAULT ? TSR_KV_DTYPE_DEFAULT
                                                                          : e->cfg.kv_dtype,
                                &kv_dtype);
    if (st == TSR_OK)
        st = tsr_kv_cache_init(&e->kv, e->be, kv_dtype, e->slice.layer_end - e->slice.layer_begin,
                               e->slice.n_kv_head * c->head_dim, bs, blocks, e->cfg.max_seqs,
                               e->cfg.max_ctx);
    if (st == TSR_OK) {
        const size_t per_pos = tsr_kv_cache_position_bytes(&e->kv);
        TSR_LOG_I("KV cache %s: %d blocks of %d positions, %.1f KiB per position, %.1f MiB",
                  tsr_dtype_name(kv_dtype), blocks, bs, per_pos / 1024.0,
                  (double)per_pos * blocks * bs / (1024.0 * 1024.0));
    }
    /* every rank learns whether all ranks loaded */
    tsr_status all = tsr_comm_agree(grid->world, st);
    if (st == TSR_OK && all != TSR_OK)
        st = tsr_error_set(all, "another rank failed to load its shard (see its message)");
    if (st != TSR_OK)
        tsr_engine_free(e);
    return st;
}

void tsr_engine_free(tsr_engine *e) {
    if (!e)
        return;
    tsr_engine_train_free(e);
    free(e->segs);
    tsr_kv_cache_free(&e->kv);
    if (e->model_loaded)
        tsr_model_free(&e->model);
    if (e->be) {
        tsr_backend_free(e->be, e->hidden_in);
        tsr_backend_free(e->be, e->hidden_out);
    }
    tsr_backend_destroy(e->be);
    tsr_shard_plan_free(&e->plan);
    free(e->desc);
    tsr_xfer_stage_free(&e->stage);
    free(e->logits);
    free(e->mb_logits);
    free(e->mb_idx);
    free(e->gathered);
    free(e->best_val);
    free(e->best_idx);
    free(e->topk_all);
    free(e->topk_all_idx);
    free(e->draws);
    free(e->inv_t);
    free(e->mb_expsum);
    free(e->expsum);
    free(e->whole);
    free(e->whole_rows);
    memset(e, 0, sizeof *e);
}
