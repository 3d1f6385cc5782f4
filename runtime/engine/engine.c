/* runtime/engine/engine.c - descriptor broadcast, micro-batched pipeline execution
 * and result collection. See engine.h for the protocol. */
#include "runtime/engine/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "runtime/engine/engine_internal.h"
#include "runtime/sample/sampler.h"

#define DESC_MAGIC 0x54535231u /* "TSR1" */

/* Fixed part of a descriptor; the int32 arrays follow in a second broadcast:
 * tokens, pos, seq (n_tokens each), out_rows (n_out), release (n_release),
 * seg (3 n_seg), then with has_draw the rows' tsr_row_draw (n_out). */
typedef struct {
    uint32_t magic, kind;
    int32_t n_tokens, n_out, out, n_release, n_seg;
    int32_t top_k;
    int32_t has_draw; /* the n_out tsr_row_draw follow the int32 arrays, as bytes */
} desc_header;

_Static_assert(sizeof(tsr_row_draw) % 4 == 0, "row draws travel as int32 words");

#define grow tsr_engine_grow
#define grow_device tsr_engine_grow_device

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

static int weight_dtype_of(const tsr_engine_config *cfg) {
    if (cfg->weight_dtype != TSR_ENGINE_ACT_DEFAULT)
        return cfg->weight_dtype;
    return cfg->device == TSR_DEVICE_CUDA ? TSR_BF16 : TSR_F32;
}

tsr_status tsr_engine_config_check(const tsr_engine_config *cfg, tsr_comm_kind kind) {
    const int act = act_dtype_of(cfg);
    if (cfg->device != TSR_DEVICE_CPU && cfg->device != TSR_DEVICE_CUDA)
        return tsr_error_set(TSR_ERR_INVALID, "unknown device %d (want cpu or cuda)",
                             (int)cfg->device);
    const int wdt = weight_dtype_of(cfg);
    if (act != TSR_F32 && act != TSR_BF16)
        return tsr_error_set(TSR_ERR_INVALID, "activation type %d: want f32 or bf16", act);
    if (wdt != TSR_F32 && wdt != TSR_BF16)
        return tsr_error_set(TSR_ERR_INVALID, "weight type %d: want bf16 or f32", wdt);
    if (cfg->device == TSR_DEVICE_CPU && wdt != TSR_F32)
        return tsr_error_set(TSR_ERR_INVALID,
                             "--weight-dtype bf16 needs --device cuda (the CPU backend keeps f32)");
    if (wdt == TSR_F32 && act != TSR_F32)
        return tsr_error_set(TSR_ERR_INVALID,
                             "--weight-dtype f32 needs --act-dtype f32 (full-precision GEMMs)");
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
        st = tsr_backend_cpu_create(cfg->threads > 0 ? cfg->threads : default_threads(grid),
                                    &e->be);
    if (st == TSR_OK) {
        e->tp_xfer = tsr_xfer_choose(grid->tp_group, e->be, e->cfg.stage_host);
        e->pp_xfer = tsr_xfer_choose(grid->pp_group, e->be, e->cfg.stage_host);
        TSR_LOG_I("device %s (GPU %d), activations %s, tp data path %s, pp data path %s",
                  tsr_backend_name(e->be), e->gpu, tsr_dtype_name(tsr_backend_act_dtype(e->be)),
                  tsr_xfer_name(e->tp_xfer), tsr_xfer_name(e->pp_xfer));
        /* one all-reduce per row-parallel projection; none on one TP rank */
        tsr_model_comm mc = {e, grid->tp > 1 ? tp_allreduce : NULL};
        st = tsr_model_load(&e->model, mf, &e->slice, e->first_stage, e->last_stage, e->be, &mc);
        e->model_loaded = st == TSR_OK;
        /* the slices are copied out: the file's pages need not stay resident */
        tsr_model_file_drop_pages(mf);
    }
    if (st == TSR_OK)
        st = tsr_kv_cache_init(&e->kv, e->be, e->slice.layer_end - e->slice.layer_begin,
                               e->slice.n_kv_head * c->head_dim, bs, blocks, e->cfg.max_seqs,
                               e->cfg.max_ctx);
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

/* ---- step execution (every rank) ---- */

/* The sequences of a step in order of first appearance, with the number of
 * positions each needs; the same on every rank, so KV allocation agrees. */
static int step_seqs(const tsr_step *s, int32_t *seqs, int32_t *npos) {
    int n = 0;
    for (int i = 0; i < s->n_tokens; i++) {
        int k = 0;
        while (k < n && seqs[k] != s->seq[i])
            k++;
        if (k == n) {
            seqs[n] = s->seq[i];
            npos[n++] = 0;
        }
        if (s->pos[i] + 1 > npos[k])
            npos[k] = s->pos[i] + 1;
    }
    return n;
}

/* Rank 0's check of a step before it is broadcast: afterwards every rank's
 * reserve calls succeed. */
static tsr_status validate_step(const tsr_engine *e, const tsr_step *s) {
    const tsr_kv_cache *kv = &e->kv;
    if (s->n_tokens < 0 || (s->n_tokens == 0 && s->n_release == 0))
        return tsr_error_set(TSR_ERR_INVALID, "step: no tokens and nothing to release");
    if (s->out < TSR_OUT_NONE || s->out > TSR_OUT_TOPK)
        return tsr_error_set(TSR_ERR_INVALID, "step: output kind %d", (int)s->out);
    if (s->out == TSR_OUT_TOPK && (s->top_k < 1 || s->top_k > TSR_TOPK_MAX))
        return tsr_error_set(TSR_ERR_INVALID, "step: top_k %d (must be in 1..%d)", s->top_k,
                             TSR_TOPK_MAX);
    if (s->draw && s->out != TSR_OUT_TOPK)
        return tsr_error_set(TSR_ERR_INVALID, "step: row draws without a top-k output");
    for (int i = 0; s->draw && i < s->n_out; i++) {
        const tsr_row_draw *d = &s->draw[i];
        if (d->mode < TSR_DRAW_CAND || d->mode > TSR_DRAW_WHOLE)
            return tsr_error_set(TSR_ERR_INVALID, "step: row %d draw mode %d", i, (int)d->mode);
        if (d->mode == TSR_DRAW_ROW_TOP &&
            (!(d->temperature > 0) || !isfinite(d->temperature) || !(d->top_p > 0) ||
             !(d->top_p <= 1) || !(d->min_p >= 0) || !(d->min_p < 1) || !(d->u >= 0) ||
             !(d->u < 1)))
            return tsr_error_set(TSR_ERR_INVALID,
                                 "step: row %d draw (T %g, top_p %g, min_p %g, u %g) out of range",
                                 i, (double)d->temperature, (double)d->top_p, (double)d->min_p,
                                 d->u);
    }
    if (s->n_out < 0 || s->n_out > s->n_tokens || (s->out != TSR_OUT_NONE && s->n_out == 0))
        return tsr_error_set(TSR_ERR_INVALID, "step: %d output rows for %d tokens", s->n_out,
                             s->n_tokens);
    for (int i = 0; i < s->n_out; i++)
        if (s->out_rows[i] < 0 || s->out_rows[i] >= s->n_tokens)
            return tsr_error_set(TSR_ERR_INVALID, "step: output row %d outside the step",
                                 s->out_rows[i]);
    for (int i = 0; i < s->n_release; i++)
        if (s->release[i] < 0 || s->release[i] >= kv->max_seqs)
            return tsr_error_set(TSR_ERR_INVALID, "step: release of slot %d", s->release[i]);
    if (s->n_seg < 0 || (s->n_seg > 0 && !s->seg))
        return tsr_error_set(TSR_ERR_INVALID, "step: bad LoRA segment list");
    for (int k = 0; k < s->n_seg; k++) {
        const int32_t *g = s->seg + 3 * k;
        if (g[0] < 0 || g[1] < g[0] || g[1] > s->n_tokens)
            return tsr_error_set(TSR_ERR_INVALID, "step: LoRA rows [%d, %d) outside the step",
                                 g[0], g[1]);
        if (g[2] != -1 && !tsr_engine_adapter_get(e, g[2]))
            return tsr_error_set(TSR_ERR_INVALID, "step: LoRA adapter slot %d is empty", g[2]);
    }
    for (int i = 0; i < s->n_tokens; i++) {
        if (s->tokens[i] < 0 || s->tokens[i] >= e->mcfg.n_vocab)
            return tsr_error_set(TSR_ERR_RANGE, "token id %d is outside the vocabulary (0..%d)",
                                 s->tokens[i], e->mcfg.n_vocab - 1);
        if (s->seq[i] < 0 || s->seq[i] >= kv->max_seqs)
            return tsr_error_set(TSR_ERR_INVALID, "step: sequence slot %d out of range",
                                 s->seq[i]);
        if (s->pos[i] < 0 || s->pos[i] >= kv->max_ctx)
            return tsr_error_set(TSR_ERR_RANGE, "position %d is beyond the context of %d",
                                 s->pos[i], kv->max_ctx);
    }
    if (s->n_tokens == 0)
        return TSR_OK;
    int32_t *seqs = malloc((size_t)s->n_tokens * 2 * sizeof *seqs);
    if (!seqs)
        return tsr_engine_oom((size_t)s->n_tokens * 2 * sizeof *seqs, "a step's sequence list");
    int32_t *npos = seqs + s->n_tokens;
    int n = step_seqs(s, seqs, npos), need = 0, freed = 0;
    for (int i = 0; i < s->n_release; i++)
        freed += kv->n_seq_blocks[s->release[i]];
    for (int k = 0; k < n; k++) {
        int released = 0;
        for (int i = 0; i < s->n_release; i++)
            released |= s->release[i] == seqs[k];
        int have = released ? 0 : kv->n_seq_blocks[seqs[k]];
        int want = npos[k] / kv->block_size + (npos[k] % kv->block_size != 0);
        if (want > have)
            need += want - have;
    }
    free(seqs);
    if (need > kv->n_free + freed)
        return tsr_error_set(TSR_ERR_RANGE, "KV cache full: the step needs %d blocks, %d are free",
                             need, kv->n_free + freed);
    return TSR_OK;
}

/* Greedy: each row's best over this rank's vocabulary slice was picked on
 * the device during the forward (best_val, best_idx as global ids); the
 * max-with-index all-reduce over the TP group picks among the slices. The
 * logits never leave the device. The picks stay in best_idx. */
static tsr_status collect_argmax(tsr_engine *e, int n_out) {
    if (e->grid->tp > 1)
        TSR_TRY(tsr_comm_allreduce_argmax(e->grid->tp_group, e->best_val, e->best_idx,
                                          (size_t)n_out));
    return TSR_OK;
}

/* Top-k, per micro-batch: rows 0..n of the micro-batch have this rank's k
 * best in e->mb_logits / e->mb_idx (columns of the slice); with TP the
 * ranks' lists are gathered and merged into each row's k best of the
 * vocabulary in the same order, into e->best_val / e->best_idx at the
 * step's output index outs[i]. Every TP rank merges (they all take part in
 * what follows for the same rows). */
static tsr_status merge_topk(tsr_engine *e, int n, int k, const int32_t *outs) {
    const int tp = e->grid->tp;
    const size_t per = (size_t)n * k;
    for (size_t j = 0; j < per; j++)
        e->mb_idx[j] = e->mb_idx[j] < 0 ? -1 : e->slice.vocab_begin + e->mb_idx[j];
    if (tp == 1) {
        for (int i = 0; i < n; i++) {
            memcpy(e->best_val + (size_t)outs[i] * k, e->mb_logits + (size_t)i * k,
                   (size_t)k * sizeof(float));
            memcpy(e->best_idx + (size_t)outs[i] * k, e->mb_idx + (size_t)i * k,
                   (size_t)k * sizeof(int32_t));
        }
        return TSR_OK;
    }
    TSR_TRY(grow((void **)&e->topk_all, &e->topk_all_cap, per * tp, sizeof(float), "topk_all"));
    TSR_TRY(grow((void **)&e->topk_all_idx, &e->topk_all_idx_cap, per * tp, sizeof(int32_t), "topk_all_idx"));
    TSR_TRY(tsr_comm_allgather(e->grid->tp_group, e->mb_logits, e->topk_all, per, TSR_F32));
    TSR_TRY(tsr_comm_allgather(e->grid->tp_group, e->mb_idx, e->topk_all_idx, per,
                               TSR_COMM_I32));
    int *head = malloc((size_t)tp * sizeof *head);
    if (!head)
        return tsr_engine_oom((size_t)tp * sizeof *head, "the top-k merge heads");
    for (int i = 0; i < n; i++) {
        float *val = e->best_val + (size_t)outs[i] * k;
        int32_t *ids = e->best_idx + (size_t)outs[i] * k;
        for (int r = 0; r < tp; r++)
            head[r] = 0;
        for (int j = 0; j < k; j++) { /* a k-way merge of sorted lists */
            int best = -1;
            float bv = -INFINITY;
            int32_t bi = -1;
            for (int r = 0; r < tp; r++) {
                if (head[r] >= k)
                    continue;
                const size_t at = (size_t)r * per + (size_t)i * k + head[r];
                const float v = e->topk_all[at];
                const int32_t id = e->topk_all_idx[at];
                if (id < 0)
                    continue; /* that list ran out */
                if (best < 0 || tsr_topk_before(v, id, bv, bi)) {
                    best = r;
                    bv = v;
                    bi = id;
                }
            }
            if (best >= 0)
                head[best]++;
            val[j] = best >= 0 ? bv : -INFINITY;
            ids[j] = bi;
        }
    }
    free(head);
    return TSR_OK;
}

/* Full logits: every TP rank's slice of rows part (n, slice) gathered
 * (padded to the widest slice) into out (n, n_vocab). */
static tsr_status collect_logits(tsr_engine *e, const float *part, int n, float *out) {
    const int tp = e->grid->tp, V = e->mcfg.n_vocab;
    if (tp == 1) {
        memcpy(out, part, (size_t)n * V * sizeof *out);
        return TSR_OK;
    }
    int width = 0;
    for (int r = 0; r < tp; r++) {
        tsr_model_slice sl;
        TSR_TRY(tsr_shard_plan_slice(&e->plan, r, e->grid->pp_rank, &sl));
        if (sl.n_vocab > width)
            width = sl.n_vocab;
    }
    size_t per = (size_t)n * width;
    TSR_TRY(grow((void **)&e->gathered, &e->gathered_cap, per * tp, sizeof(float), "gathered"));
    float *send = malloc(per * sizeof *send);
    if (!send)
        return tsr_engine_oom(per * sizeof *send, "the logits to gather");
    for (int i = 0; i < n; i++) {
        memcpy(send + (size_t)i * width, part + (size_t)i * e->slice.n_vocab,
               (size_t)e->slice.n_vocab * sizeof *send);
        for (int j = e->slice.n_vocab; j < width; j++)
            send[(size_t)i * width + j] = -INFINITY;
    }
    tsr_status st = tsr_comm_allgather(e->grid->tp_group, send, e->gathered, per, TSR_F32);
    free(send);
    TSR_TRY(st);
    for (int r = 0; r < tp; r++) {
        tsr_model_slice sl;
        TSR_TRY(tsr_shard_plan_slice(&e->plan, r, e->grid->pp_rank, &sl));
        for (int i = 0; i < n; i++)
            memcpy(out + (size_t)i * V + sl.vocab_begin,
                   e->gathered + (size_t)r * per + (size_t)i * width,
                   (size_t)sl.n_vocab * sizeof *out);
    }
    return TSR_OK;
}

/* A top-k step with draws, per micro-batch on the last stage, after
 * merge_topk while the micro-batch's logits are still on the device: the
 * TSR_DRAW_ROW_TOP rows' normalisers (each slice's (max, sum) gathered over
 * TP and combined in rank order, so every TP rank gets the same floats),
 * then which rows go whole (TSR_DRAW_WHOLE, and ROW_TOP rows whose
 * candidates cannot decide the draw rank 0 will make), and those rows'
 * logits gathered into e->whole_rows. n rows; outs[i] their output index. */
static tsr_status draw_rows(tsr_engine *e, const tsr_step *s, int n, int K, const int32_t *outs) {
    const int tp = e->grid->tp, V = e->mcfg.n_vocab;
    int n_rt = 0;
    for (int i = 0; i < n; i++)
        n_rt += s->draw[outs[i]].mode == TSR_DRAW_ROW_TOP;
    if (n_rt > 0) {
        TSR_TRY(grow((void **)&e->inv_t, &e->inv_t_cap, (size_t)n, sizeof(float), "inv_t"));
        TSR_TRY(grow((void **)&e->mb_expsum, &e->mb_expsum_cap, (size_t)n * 2 * (tp + 1),
                     sizeof(float), "mb_expsum"));
        for (int i = 0; i < n; i++) {
            const tsr_row_draw *d = &s->draw[outs[i]];
            e->inv_t[i] = d->mode == TSR_DRAW_ROW_TOP ? 1.0f / d->temperature : 1.0f;
        }
        float *mine = e->mb_expsum, *all = e->mb_expsum + (size_t)n * 2;
        TSR_TRY(tsr_model_row_expsum(&e->model, e->inv_t, mine));
        if (tp > 1)
            TSR_TRY(tsr_comm_allgather(e->grid->tp_group, mine, all, (size_t)n * 2, TSR_F32));
        else
            all = mine;
        for (int i = 0; i < n; i++) {
            double mx = -INFINITY, z = 0;
            int bad = 0;
            for (int r = 0; r < tp; r++) {
                const float m = all[(size_t)r * n * 2 + 2 * i];
                if (m > mx)
                    mx = m;
                bad |= isnan(m);
            }
            for (int r = 0; r < tp && !bad; r++) {
                const float m = all[(size_t)r * n * 2 + 2 * i], zr = all[(size_t)r * n * 2 + 2 * i + 1];
                if (m == -INFINITY)
                    continue; /* a slice with nothing finite adds nothing */
                bad |= isnan(zr);
                z += (double)zr * exp(((double)m - mx) * e->inv_t[i]);
            }
            e->expsum[2 * (size_t)outs[i]] = (float)mx;
            e->expsum[2 * (size_t)outs[i] + 1] = bad || !isfinite(mx) ? NAN : (float)z;
        }
    }
    int32_t *rows = malloc((size_t)n * sizeof *rows);
    if (!rows)
        return tsr_engine_oom((size_t)n * sizeof *rows, "the rows the candidates cannot decide");
    int nw = 0;
    for (int i = 0; i < n; i++) {
        const int o = outs[i];
        const tsr_row_draw *d = &s->draw[o];
        int whole = d->mode == TSR_DRAW_WHOLE;
        if (d->mode == TSR_DRAW_ROW_TOP) {
            const float *val = e->best_val + (size_t)o * K;
            const int32_t *ids = e->best_idx + (size_t)o * K;
            int m = 0;
            while (m < K && ids[m] >= 0)
                m++;
            whole = m == 0 || !(val[0] > -INFINITY) || isnan(val[0]) ||
                    tsr_sampler_pick_sorted(val, m, m < K, e->expsum[2 * (size_t)o],
                                            e->expsum[2 * (size_t)o + 1], d->temperature,
                                            d->top_p, d->min_p, d->u) < 0;
        }
        e->whole[o] = -1;
        if (whole) {
            e->whole[o] = e->n_whole + nw;
            rows[nw++] = i;
        }
    }
    tsr_status st = TSR_OK;
    if (nw > 0) {
        const size_t part = (size_t)nw * e->slice.n_vocab;
        st = grow((void **)&e->logits, &e->logits_cap, part, sizeof(float), "logits");
        if (st == TSR_OK)
            st = grow((void **)&e->whole_rows, &e->whole_rows_cap,
                      (size_t)(e->n_whole + nw) * V, sizeof(float), "whole_rows");
        if (st == TSR_OK)
            st = tsr_model_logits_rows(&e->model, rows, nw, e->logits);
        if (st == TSR_OK)
            st = collect_logits(e, e->logits, nw, e->whole_rows + (size_t)e->n_whole * V);
        if (st == TSR_OK)
            e->n_whole += nw;
    }
    free(rows);
    return st;
}

/* The step's LoRA segments clipped to the micro-batch [a, b), rebased, into
 * e->segs and bt. A step with segments always gives the model at least one
 * (an empty one), so rows outside every segment get no adapter. */
static tsr_status mb_segments(tsr_engine *e, const tsr_step *s, int a, int b, tsr_batch *bt) {
    if (s->n_seg == 0)
        return TSR_OK;
    TSR_TRY(grow((void **)&e->segs, &e->segs_cap, (size_t)s->n_seg + 1, sizeof *e->segs, "segs"));
    int n = 0;
    for (int k = 0; k < s->n_seg; k++) {
        const int32_t *g = s->seg + 3 * k;
        int lo = g[0] > a ? g[0] : a, hi = g[1] < b ? g[1] : b;
        if (lo >= hi)
            continue;
        const tsr_lora_adapter *ad = g[2] < 0 ? e->model.lora : tsr_engine_adapter_get(e, g[2]);
        e->segs[n++] = (tsr_lora_seg){lo - a, hi - a, ad};
    }
    if (n == 0)
        e->segs[n++] = (tsr_lora_seg){0, 0, NULL};
    bt->n_lora = n;
    bt->lora = e->segs;
    return TSR_OK;
}

/* Rank 0's results of a TOPK step that has a whole row for each output
 * index where e->whole says so (packed in e->whole_rows): into out. */
static void unpack_whole(const tsr_engine *e, int n_out, const tsr_top_out *out) {
    const int V = e->mcfg.n_vocab;
    for (int o = 0; o < n_out; o++) {
        out->whole[o] = e->whole[o] >= 0;
        if (e->whole[o] >= 0)
            memcpy(out->rows + (size_t)o * V, e->whole_rows + (size_t)e->whole[o] * V,
                   (size_t)V * sizeof(float));
    }
}

/* Runs a decoded step on this rank. On world rank 0, results land in
 * tokens / logits, or in *to for TSR_OUT_TOPK. */
static tsr_status exec_step(tsr_engine *e, const tsr_step *s, int32_t *tokens, float *logits,
                            const tsr_top_out *to) {
    tsr_comm_grid *g = e->grid;
    const int C = e->mcfg.n_embd, V = e->slice.n_vocab, n = s->n_tokens;
    for (int i = 0; i < s->n_release; i++)
        tsr_kv_cache_release(&e->kv, s->release[i]);
    if (n == 0)
        return TSR_OK; /* a release-only step */
    int32_t *seqs = malloc((size_t)n * 4 * sizeof *seqs);
    if (!seqs)
        return tsr_engine_oom((size_t)n * 4 * sizeof *seqs, "a step's sequences and rows");
    int32_t *npos = seqs + n, *mb_rows = seqs + 2 * n, *mb_outs = seqs + 3 * n;
    int ns = step_seqs(s, seqs, npos);
    tsr_status st = TSR_OK;
    for (int k = 0; k < ns && st == TSR_OK; k++)
        st = tsr_kv_cache_reserve(&e->kv, seqs[k], npos[k]);
    const size_t act = tsr_backend_act_size(e->be);
    if (st == TSR_OK && !e->first_stage)
        st = grow_device(e->be, &e->hidden_in, &e->hidden_in_cap, (size_t)n * C * act, "hidden_in");
    if (st == TSR_OK && !e->last_stage)
        st = grow_device(e->be, &e->hidden_out, &e->hidden_out_cap, (size_t)n * C * act,
                         "hidden_out");
    /* greedy steps bring each row's best (value, column) from the device,
     * top-k steps its K best; the others the rows' logits */
    const int greedy = s->out == TSR_OUT_ARGMAX, topk = s->out == TSR_OUT_TOPK;
    const int draws = topk && s->draw;
    const int K = topk ? s->top_k : 1; /* picks per row from the device */
    const size_t per_row = greedy || topk ? (size_t)K : (size_t)V;
    const int last = e->last_stage && s->n_out > 0;
    if (st == TSR_OK && last && !greedy && !topk)
        st = grow((void **)&e->logits, &e->logits_cap, (size_t)s->n_out * V, sizeof(float), "logits");
    if (st == TSR_OK && last)
        st = grow((void **)&e->mb_logits, &e->mb_logits_cap, (size_t)s->n_out * per_row,
                  sizeof(float), "mb_logits");
    if (st == TSR_OK && last && (greedy || topk)) {
        const size_t m = (size_t)s->n_out * K;
        st = grow((void **)&e->best_val, &e->best_val_cap, m, sizeof(float), "best_val");
        if (st == TSR_OK)
            st = grow((void **)&e->best_idx, &e->best_idx_cap, m, sizeof(int32_t), "best_idx");
        if (st == TSR_OK)
            st = grow((void **)&e->mb_idx, &e->mb_idx_cap, m, sizeof(int32_t), "mb_idx");
    }
    if (st == TSR_OK && last && draws) {
        st = grow((void **)&e->expsum, &e->expsum_cap, (size_t)s->n_out * 2, sizeof(float), "expsum");
        if (st == TSR_OK)
            st = grow((void **)&e->whole, &e->whole_cap, (size_t)s->n_out, sizeof(int32_t), "whole");
        for (int i = 0; st == TSR_OK && i < 2 * s->n_out; i++)
            e->expsum[i] = 0;
        e->n_whole = 0;
    }
    float *mb_logits = e->mb_logits;
    /* micro-batches: contiguous token ranges; each stage walks them in order,
     * so stage s works on micro-batch k while stage s+1 works on k-1 */
    int n_mb = g->pp > 1 ? e->cfg.micro_batches : 1;
    if (n_mb > n)
        n_mb = n;
    for (int mb = 0; mb < n_mb && st == TSR_OK; mb++) {
        int a = (int)((long)n * mb / n_mb), b = (int)((long)n * (mb + 1) / n_mb), m = b - a;
        int n_mo = 0;
        for (int i = 0; i < s->n_out; i++)
            if (s->out_rows[i] >= a && s->out_rows[i] < b) {
                mb_rows[n_mo] = s->out_rows[i] - a;
                mb_outs[n_mo++] = i;
            }
        if (!e->first_stage)
            st = tsr_engine_pp_recv(e, e->hidden_in, (size_t)m * C, g->pp_rank - 1, mb);
        if (st != TSR_OK)
            break;
        tsr_batch bt = {m, s->tokens + a, s->pos + a, s->seq + a, e->last_stage ? n_mo : 0,
                        mb_rows, 0, NULL};
        st = mb_segments(e, s, a, b, &bt);
        if (st != TSR_OK)
            break;
        if (greedy)
            st = tsr_model_forward_greedy(&e->model, &e->kv, &bt,
                                          e->first_stage ? NULL : e->hidden_in,
                                          e->last_stage ? NULL : e->hidden_out, mb_logits,
                                          e->mb_idx);
        else if (topk)
            st = tsr_model_forward_topk(&e->model, &e->kv, &bt,
                                        e->first_stage ? NULL : e->hidden_in,
                                        e->last_stage ? NULL : e->hidden_out, K, mb_logits,
                                        e->mb_idx);
        else
            st = tsr_model_forward(&e->model, &e->kv, &bt, e->first_stage ? NULL : e->hidden_in,
                                   e->last_stage ? NULL : e->hidden_out, mb_logits);
        if (st == TSR_OK && !e->last_stage)
            st = tsr_engine_pp_send(e, e->hidden_out, (size_t)m * C, g->pp_rank + 1, mb);
        if (st != TSR_OK || !e->last_stage || n_mo == 0)
            continue;
        if (topk) { /* merged over TP now, while this micro-batch's logits are on the device */
            st = merge_topk(e, n_mo, K, mb_outs);
            if (st == TSR_OK && draws)
                st = draw_rows(e, s, n_mo, K, mb_outs);
            continue;
        }
        for (int i = 0; i < n_mo; i++) {
            if (greedy) {
                const int32_t c = e->mb_idx[i];
                e->best_val[mb_outs[i]] = mb_logits[i];
                e->best_idx[mb_outs[i]] = c < 0 ? -1 : e->slice.vocab_begin + c;
            } else {
                memcpy(e->logits + (size_t)mb_outs[i] * V, mb_logits + (size_t)i * V,
                       (size_t)V * sizeof(float));
            }
        }
    }
    free(seqs);
    TSR_TRY(st);
    if (s->out == TSR_OUT_NONE || s->n_out == 0)
        return TSR_OK;

    /* results: computed on the last stage, wanted on world rank 0 */
    const int src = (g->pp - 1) * g->tp; /* last stage, tp rank 0 */
    const int Vf = e->mcfg.n_vocab;
    const size_t count = greedy ? (size_t)s->n_out
                         : topk ? (size_t)s->n_out * K
                                : (size_t)s->n_out * Vf;
    if (g->world_rank == 0 && topk && (!to || !to->ids || !to->val ||
                                       (draws && (!to->expsum || !to->whole || !to->rows))))
        return tsr_error_set(TSR_ERR_INVALID, "step: no buffers for the top-k results");
    if (g->world_rank == 0 && ((greedy && !tokens) || (!greedy && !topk && !logits)))
        return tsr_error_set(TSR_ERR_INVALID, "step: no buffer for its results");
    if (e->last_stage && !greedy && !topk) { /* whole rows: every TP rank gathers them */
        float *lg = g->world_rank == 0 ? logits : malloc(count * sizeof *lg);
        if (!lg)
            return tsr_engine_oom(count * sizeof *lg, "the gathered logits");
        st = collect_logits(e, e->logits, s->n_out, lg);
        if (st == TSR_OK && g->world_rank == src && src != 0)
            st = tsr_comm_send(g->world, lg, count, TSR_F32, 0, 1001);
        if (lg != logits)
            free(lg);
        return st;
    }
    if (e->last_stage) {
        if (greedy)
            TSR_TRY(collect_argmax(e, s->n_out));
        if (g->world_rank == 0) { /* this rank is the last stage's tp rank 0 */
            if (greedy)
                memcpy(tokens, e->best_idx, count * sizeof *tokens);
            if (topk) {
                memcpy(to->ids, e->best_idx, count * sizeof(int32_t));
                memcpy(to->val, e->best_val, count * sizeof(float));
            }
            if (draws) {
                memcpy(to->expsum, e->expsum, (size_t)s->n_out * 2 * sizeof(float));
                unpack_whole(e, s->n_out, to);
            }
            return TSR_OK;
        }
        if (g->world_rank != src)
            return TSR_OK;
        if (greedy || topk)
            TSR_TRY(tsr_comm_send(g->world, e->best_idx, count, TSR_COMM_I32, 0, 1000));
        if (topk)
            TSR_TRY(tsr_comm_send(g->world, e->best_val, count, TSR_F32, 0, 1001));
        if (draws) {
            TSR_TRY(tsr_comm_send(g->world, e->expsum, (size_t)s->n_out * 2, TSR_F32, 0, 1002));
            TSR_TRY(tsr_comm_send(g->world, e->whole, (size_t)s->n_out, TSR_COMM_I32, 0, 1003));
            if (e->n_whole > 0)
                TSR_TRY(tsr_comm_send(g->world, e->whole_rows, (size_t)e->n_whole * Vf,
                                      TSR_F32, 0, 1004));
        }
        return TSR_OK;
    }
    if (g->world_rank == 0) {
        if (greedy)
            TSR_TRY(tsr_comm_recv(g->world, tokens, count, TSR_COMM_I32, src, 1000));
        if (topk) {
            TSR_TRY(tsr_comm_recv(g->world, to->ids, count, TSR_COMM_I32, src, 1000));
            TSR_TRY(tsr_comm_recv(g->world, to->val, count, TSR_F32, src, 1001));
        }
        if (!greedy && !topk)
            TSR_TRY(tsr_comm_recv(g->world, logits, count, TSR_F32, src, 1001));
        if (draws) {
            TSR_TRY(tsr_comm_recv(g->world, to->expsum, (size_t)s->n_out * 2, TSR_F32, src,
                                  1002));
            TSR_TRY(grow((void **)&e->whole, &e->whole_cap, (size_t)s->n_out, sizeof(int32_t), "whole"));
            TSR_TRY(tsr_comm_recv(g->world, e->whole, (size_t)s->n_out, TSR_COMM_I32, src, 1003));
            int nw = 0;
            for (int o = 0; o < s->n_out; o++)
                if (e->whole[o] >= 0)
                    nw++;
            /* the packing is the sender's: places 0..nw-1, each once */
            for (int o = 0; o < s->n_out; o++)
                if (e->whole[o] >= nw)
                    return tsr_error_set(TSR_ERR_COMM, "engine: corrupt whole-row list");
            if (nw > 0) {
                TSR_TRY(grow((void **)&e->whole_rows, &e->whole_rows_cap, (size_t)nw * Vf,
                             sizeof(float), "whole_rows"));
                TSR_TRY(tsr_comm_recv(g->world, e->whole_rows, (size_t)nw * Vf, TSR_F32, src,
                                      1004));
            }
            unpack_whole(e, s->n_out, to);
        }
    }
    return TSR_OK;
}

/* ---- descriptor transport ---- */

static tsr_status send_desc(tsr_engine *e, uint32_t kind, const tsr_step *s) {
    desc_header h = {DESC_MAGIC, kind, 0, 0, 0, 0, 0, 0, 0};
    if (s) {
        h.n_tokens = s->n_tokens;
        h.n_out = s->n_out;
        h.out = (int32_t)s->out;
        h.n_release = s->n_release;
        h.n_seg = s->n_seg;
        h.top_k = s->top_k;
        h.has_draw = s->draw != NULL;
    }
    TSR_TRY(tsr_comm_bcast_idle(e->grid->world, &h, sizeof h, 0));
    if (!s)
        return TSR_OK;
    const size_t nd = s->draw ? (size_t)s->n_out * sizeof(tsr_row_draw) / 4 : 0;
    size_t n = (size_t)s->n_tokens * 3 + (size_t)s->n_out + (size_t)s->n_release +
               3 * (size_t)s->n_seg;
    TSR_TRY(grow((void **)&e->desc, &e->desc_cap, (n + nd) * 4, 1, "desc"));
    int32_t *d = (int32_t *)e->desc;
    memcpy(d, s->tokens, (size_t)s->n_tokens * 4);
    memcpy(d + s->n_tokens, s->pos, (size_t)s->n_tokens * 4);
    memcpy(d + 2 * s->n_tokens, s->seq, (size_t)s->n_tokens * 4);
    if (s->n_out)
        memcpy(d + 3 * s->n_tokens, s->out_rows, (size_t)s->n_out * 4);
    if (s->n_release)
        memcpy(d + 3 * s->n_tokens + s->n_out, s->release, (size_t)s->n_release * 4);
    if (s->n_seg)
        memcpy(d + 3 * s->n_tokens + s->n_out + s->n_release, s->seg, (size_t)s->n_seg * 12);
    if (nd)
        memcpy(d + n, s->draw, nd * 4);
    return tsr_comm_broadcast(e->grid->world, d, n + nd, TSR_COMM_I32, 0);
}

tsr_status tsr_engine_send_kind(tsr_engine *e, uint32_t kind) {
    if (e->grid->world_size == 1)
        return TSR_OK;
    return send_desc(e, kind, NULL);
}

tsr_status tsr_engine_step(tsr_engine *e, const tsr_step *s, int32_t *tokens, float *logits) {
    if (e->grid->world_rank != 0)
        return tsr_error_set(TSR_ERR_INTERNAL, "tsr_engine_step is for rank 0");
    if (s->out == TSR_OUT_TOPK)
        return tsr_error_set(TSR_ERR_INVALID, "step: top-k results need tsr_engine_step_top");
    TSR_TRY(validate_step(e, s));
    if (e->grid->world_size > 1)
        TSR_TRY(send_desc(e, TSR_STEP_RUN, s));
    return exec_step(e, s, tokens, logits, NULL);
}

tsr_status tsr_engine_step_top(tsr_engine *e, const tsr_step *s, const tsr_top_out *out) {
    if (e->grid->world_rank != 0)
        return tsr_error_set(TSR_ERR_INTERNAL, "tsr_engine_step_top is for rank 0");
    if (s->out != TSR_OUT_TOPK)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_engine_step_top: the step's output is not top-k");
    TSR_TRY(validate_step(e, s));
    if (e->grid->world_size > 1)
        TSR_TRY(send_desc(e, TSR_STEP_RUN, s));
    return exec_step(e, s, NULL, NULL, out);
}

tsr_status tsr_engine_stop(tsr_engine *e) {
    if (e->grid->world_size == 1)
        return TSR_OK;
    return send_desc(e, TSR_STEP_STOP, NULL);
}

tsr_status tsr_engine_serve(tsr_engine *e) {
    for (;;) {
        desc_header h;
        TSR_TRY(tsr_comm_bcast_idle(e->grid->world, &h, sizeof h, 0));
        if (h.magic != DESC_MAGIC)
            return tsr_error_set(TSR_ERR_COMM, "engine: corrupt step descriptor");
        if (h.kind == TSR_STEP_STOP)
            return TSR_OK;
        if (h.kind == TSR_STEP_TRAIN) {
            TSR_TRY(tsr_engine_exec_train(e)); /* only errors that break the job */
            continue;
        }
        if (h.kind != TSR_STEP_RUN)
            return tsr_error_set(TSR_ERR_COMM, "engine: unknown descriptor kind %u", h.kind);
        if (h.n_tokens < 0 || h.n_out < 0 || h.n_release < 0 || h.n_seg < 0)
            return tsr_error_set(TSR_ERR_COMM, "engine: corrupt step descriptor");
        const size_t nd = h.has_draw ? (size_t)h.n_out * sizeof(tsr_row_draw) / 4 : 0;
        size_t n = (size_t)h.n_tokens * 3 + (size_t)h.n_out + (size_t)h.n_release +
                   3 * (size_t)h.n_seg;
        TSR_TRY(grow((void **)&e->desc, &e->desc_cap, (n + nd) * 4, 1, "desc"));
        int32_t *d = (int32_t *)e->desc;
        TSR_TRY(tsr_comm_broadcast(e->grid->world, d, n + nd, TSR_COMM_I32, 0));
        if (nd) { /* into aligned memory: the doubles may sit at any 4-byte offset */
            TSR_TRY(grow((void **)&e->draws, &e->draws_cap, (size_t)h.n_out, sizeof *e->draws, "draws"));
            memcpy(e->draws, d + n, nd * 4);
        }
        tsr_step s = {
            .n_tokens = h.n_tokens,
            .tokens = d,
            .pos = d + h.n_tokens,
            .seq = d + 2 * h.n_tokens,
            .n_out = h.n_out,
            .out_rows = d + 3 * h.n_tokens,
            .out = (tsr_out_kind)h.out,
            .n_release = h.n_release,
            .release = d + 3 * h.n_tokens + h.n_out,
            .n_seg = h.n_seg,
            .seg = d + 3 * h.n_tokens + h.n_out + h.n_release,
            .top_k = h.top_k,
            .draw = nd ? e->draws : NULL,
        };
        tsr_status st = exec_step(e, &s, NULL, NULL, NULL);
        if (st != TSR_OK)
            return st; /* the caller aborts the job: peers would wait forever */
    }
}

int tsr_engine_free_blocks(const tsr_engine *e) { return e->kv.n_free; }

/* ---- one sequence as a tsr_lm ---- */

static tsr_status lm_forward(void *ctx, const int32_t *tokens, int n, int pos0, float *all_logits,
                             float *last_logits, int32_t *last_token) {
    tsr_engine *e = ctx;
    int32_t *buf = malloc((size_t)n * 3 * sizeof *buf);
    if (!buf)
        return tsr_engine_oom((size_t)n * 3 * sizeof *buf, "a sequence's positions");
    int32_t *pos = buf, *seq = buf + n, *rows = buf + 2 * n;
    for (int i = 0; i < n; i++) {
        pos[i] = pos0 + i;
        seq[i] = 0;
        rows[i] = i;
    }
    int32_t slot0 = 0;
    tsr_step s = {
        .n_tokens = n,
        .tokens = tokens,
        .pos = pos,
        .seq = seq,
        .n_out = all_logits ? n : (last_logits || last_token ? 1 : 0),
        .out_rows = all_logits ? rows : rows + n - 1,
        .out = last_token ? TSR_OUT_ARGMAX : (all_logits || last_logits ? TSR_OUT_LOGITS : TSR_OUT_NONE),
        .n_release = e->lm_release_pending,
        .release = &slot0,
    };
    tsr_status st = tsr_engine_step(e, &s, last_token, all_logits ? all_logits : last_logits);
    if (st == TSR_OK)
        e->lm_release_pending = 0;
    free(buf);
    return st;
}

static tsr_status lm_release(void *ctx) {
    tsr_engine *e = ctx;
    e->lm_release_pending = 1;
    return TSR_OK;
}

void tsr_engine_lm(tsr_engine *e, tsr_lm *out) {
    out->ctx = e;
    out->n_vocab = e->mcfg.n_vocab;
    out->n_ctx = e->kv.max_ctx;
    out->forward = lm_forward;
    out->release = lm_release;
}
