/* runtime/engine.c - descriptor broadcast, micro-batched pipeline execution
 * and result collection. See engine.h for the protocol. */
#include "runtime/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

#define DESC_MAGIC 0x54535231u /* "TSR1" */

enum { STEP_RUN = 1, STEP_STOP = 2 };

/* Fixed part of a descriptor; the int32 arrays follow in a second broadcast:
 * tokens, pos, seq (n_tokens each), out_rows (n_out), release (n_release). */
typedef struct {
    uint32_t magic, kind;
    int32_t n_tokens, n_out, out, n_release;
    int32_t pad[2];
} desc_header;

static tsr_status grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return TSR_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return tsr_error_set(TSR_ERR_NOMEM, "engine: out of memory");
    *p = q;
    *cap = n;
    return TSR_OK;
}

static tsr_status tp_allreduce(void *ctx, void *buf, size_t count) {
    tsr_engine *e = ctx;
    return tsr_comm_allreduce(e->grid->tp_group, buf, buf, count, e->be->iface->act_dtype,
                              TSR_COMM_SUM);
}

static int default_threads(const tsr_comm_grid *g) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int per = (int)(cores / (g->local_size > 0 ? g->local_size : 1));
    return per > 0 ? per : 1;
}

tsr_status tsr_engine_init(tsr_engine *e, tsr_comm_grid *grid, const tsr_model_file_t *mf,
                           const tsr_plan_config *pc, const tsr_engine_config *cfg) {
    memset(e, 0, sizeof *e);
    e->grid = grid;
    e->cfg = *cfg;
    if (e->cfg.block_size <= 0)
        e->cfg.block_size = 16;
    if (e->cfg.micro_batches <= 0)
        e->cfg.micro_batches = grid->pp;
    e->mcfg = *tsr_model_file_config(mf);
    /* The plan is computed identically on every rank, so an impossible layout
     * fails everywhere before any weight is read. */
    TSR_TRY(tsr_shard_plan_init(&e->mcfg, pc, &e->plan));
    TSR_TRY(tsr_shard_plan_check_world(&e->plan, grid->world_size));
    TSR_TRY(tsr_shard_plan_slice(&e->plan, grid->tp_rank, grid->pp_rank, &e->slice));
    e->first_stage = grid->pp_rank == 0;
    e->last_stage = grid->pp_rank == grid->pp - 1;

    const tsr_model_config *c = &e->mcfg;
    int bs = e->cfg.block_size;
    int blocks = e->cfg.kv_blocks > 0 ? e->cfg.kv_blocks
                                      : e->cfg.max_seqs * ((e->cfg.max_ctx + bs - 1) / bs);
    tsr_status st = tsr_backend_cpu_create(cfg->threads > 0 ? cfg->threads : default_threads(grid),
                                           &e->be);
    if (st == TSR_OK) {
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
    tsr_kv_cache_free(&e->kv);
    if (e->model_loaded)
        tsr_model_free(&e->model);
    tsr_backend_destroy(e->be);
    tsr_shard_plan_free(&e->plan);
    free(e->desc);
    free(e->hidden_in);
    free(e->hidden_out);
    free(e->logits);
    free(e->mb_logits);
    free(e->gathered);
    free(e->best_val);
    free(e->best_idx);
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
        return tsr_error_set(TSR_ERR_NOMEM, "engine: out of memory");
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

/* Greedy over this rank's vocabulary slice, then the max-with-index
 * all-reduce over the TP group: the full logits are never gathered. */
static tsr_status collect_argmax(tsr_engine *e, int n_out, int32_t *tokens) {
    const int V = e->slice.n_vocab;
    TSR_TRY(grow((void **)&e->best_val, &e->best_val_cap, (size_t)n_out, sizeof(float)));
    TSR_TRY(grow((void **)&e->best_idx, &e->best_idx_cap, (size_t)n_out, sizeof(int32_t)));
    for (int i = 0; i < n_out; i++) {
        const float *l = e->logits + (size_t)i * V;
        int best = 0;
        for (int j = 1; j < V; j++)
            if (l[j] > l[best])
                best = j;
        e->best_val[i] = l[best];
        e->best_idx[i] = e->slice.vocab_begin + best;
    }
    if (e->grid->tp > 1)
        TSR_TRY(tsr_comm_allreduce_argmax(e->grid->tp_group, e->best_val, e->best_idx,
                                          (size_t)n_out));
    memcpy(tokens, e->best_idx, (size_t)n_out * sizeof *tokens);
    return TSR_OK;
}

/* Full logits: every TP rank's slice gathered (padded to the widest slice). */
static tsr_status collect_logits(tsr_engine *e, int n_out, float *out) {
    const int tp = e->grid->tp, V = e->mcfg.n_vocab;
    if (tp == 1) {
        memcpy(out, e->logits, (size_t)n_out * V * sizeof *out);
        return TSR_OK;
    }
    int width = 0;
    for (int r = 0; r < tp; r++) {
        tsr_model_slice sl;
        TSR_TRY(tsr_shard_plan_slice(&e->plan, r, e->grid->pp_rank, &sl));
        if (sl.n_vocab > width)
            width = sl.n_vocab;
    }
    size_t per = (size_t)n_out * width;
    float *send = malloc(per * sizeof *send);
    TSR_TRY(grow((void **)&e->gathered, &e->gathered_cap, per * tp, sizeof(float)));
    if (!send)
        return tsr_error_set(TSR_ERR_NOMEM, "engine: out of memory");
    for (int i = 0; i < n_out; i++) {
        memcpy(send + (size_t)i * width, e->logits + (size_t)i * e->slice.n_vocab,
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
        for (int i = 0; i < n_out; i++)
            memcpy(out + (size_t)i * V + sl.vocab_begin,
                   e->gathered + (size_t)r * per + (size_t)i * width,
                   (size_t)sl.n_vocab * sizeof *out);
    }
    return TSR_OK;
}

/* Runs a decoded step on this rank. On world rank 0, results land in
 * tokens / logits. */
static tsr_status exec_step(tsr_engine *e, const tsr_step *s, int32_t *tokens, float *logits) {
    tsr_comm_grid *g = e->grid;
    const int C = e->mcfg.n_embd, V = e->slice.n_vocab, n = s->n_tokens;
    for (int i = 0; i < s->n_release; i++)
        tsr_kv_cache_release(&e->kv, s->release[i]);
    if (n == 0)
        return TSR_OK; /* a release-only step */
    int32_t *seqs = malloc((size_t)n * 2 * sizeof *seqs + (size_t)n * 2 * sizeof(int32_t));
    if (!seqs)
        return tsr_error_set(TSR_ERR_NOMEM, "engine: out of memory");
    int32_t *npos = seqs + n, *mb_rows = seqs + 2 * n, *mb_outs = seqs + 3 * n;
    int ns = step_seqs(s, seqs, npos);
    tsr_status st = TSR_OK;
    for (int k = 0; k < ns && st == TSR_OK; k++)
        st = tsr_kv_cache_reserve(&e->kv, seqs[k], npos[k]);
    if (st == TSR_OK && !e->first_stage)
        st = grow((void **)&e->hidden_in, &e->hidden_in_cap, (size_t)n * C, sizeof(float));
    if (st == TSR_OK && !e->last_stage)
        st = grow((void **)&e->hidden_out, &e->hidden_out_cap, (size_t)n * C, sizeof(float));
    if (st == TSR_OK && e->last_stage && s->n_out > 0)
        st = grow((void **)&e->logits, &e->logits_cap, (size_t)s->n_out * V, sizeof(float));
    if (st == TSR_OK && e->last_stage && s->n_out > 0)
        st = grow((void **)&e->mb_logits, &e->mb_logits_cap, (size_t)s->n_out * V, sizeof(float));
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
            st = tsr_comm_recv(g->pp_group, e->hidden_in, (size_t)m * C, TSR_F32, g->pp_rank - 1, mb);
        if (st != TSR_OK)
            break;
        tsr_batch bt = {m, s->tokens + a, s->pos + a, s->seq + a, e->last_stage ? n_mo : 0, mb_rows};
        st = tsr_model_forward(&e->model, &e->kv, &bt, e->first_stage ? NULL : e->hidden_in,
                               e->last_stage ? NULL : e->hidden_out, mb_logits);
        if (st == TSR_OK && !e->last_stage)
            st = tsr_comm_send(g->pp_group, e->hidden_out, (size_t)m * C, TSR_F32, g->pp_rank + 1, mb);
        for (int i = 0; st == TSR_OK && e->last_stage && i < n_mo; i++)
            memcpy(e->logits + (size_t)mb_outs[i] * V, mb_logits + (size_t)i * V,
                   (size_t)V * sizeof(float));
    }
    free(seqs);
    TSR_TRY(st);
    if (s->out == TSR_OUT_NONE || s->n_out == 0)
        return TSR_OK;

    /* results: computed on the last stage, wanted on world rank 0 */
    const int src = (g->pp - 1) * g->tp; /* last stage, tp rank 0 */
    const size_t count = s->out == TSR_OUT_ARGMAX ? (size_t)s->n_out
                                                   : (size_t)s->n_out * e->mcfg.n_vocab;
    const int dtype = s->out == TSR_OUT_ARGMAX ? TSR_COMM_I32 : TSR_F32;
    if (e->last_stage) {
        int32_t *tk = g->world_rank == 0 && tokens ? tokens : NULL;
        float *lg = g->world_rank == 0 && logits ? logits : NULL;
        int32_t *tbuf = NULL;
        float *lbuf = NULL;
        if (s->out == TSR_OUT_ARGMAX && !tk)
            tk = tbuf = malloc((size_t)s->n_out * sizeof *tbuf);
        if (s->out == TSR_OUT_LOGITS && !lg)
            lg = lbuf = malloc(count * sizeof *lbuf);
        if ((s->out == TSR_OUT_ARGMAX && !tk) || (s->out == TSR_OUT_LOGITS && !lg))
            return tsr_error_set(TSR_ERR_NOMEM, "engine: out of memory");
        st = s->out == TSR_OUT_ARGMAX ? collect_argmax(e, s->n_out, tk)
                                      : collect_logits(e, s->n_out, lg);
        if (st == TSR_OK && g->world_rank == src && src != 0)
            st = tsr_comm_send(g->world, s->out == TSR_OUT_ARGMAX ? (void *)tk : (void *)lg, count,
                               dtype, 0, 1000);
        free(tbuf);
        free(lbuf);
        return st;
    }
    if (g->world_rank == 0) {
        void *dst = s->out == TSR_OUT_ARGMAX ? (void *)tokens : (void *)logits;
        if (!dst)
            return tsr_error_set(TSR_ERR_INVALID, "step: no buffer for its results");
        return tsr_comm_recv(g->world, dst, count, dtype, src, 1000);
    }
    return TSR_OK;
}

/* ---- descriptor transport ---- */

static tsr_status send_desc(tsr_engine *e, uint32_t kind, const tsr_step *s) {
    desc_header h = {DESC_MAGIC, kind, 0, 0, 0, 0, {0, 0}};
    if (s) {
        h.n_tokens = s->n_tokens;
        h.n_out = s->n_out;
        h.out = (int32_t)s->out;
        h.n_release = s->n_release;
    }
    TSR_TRY(tsr_comm_bcast_idle(e->grid->world, &h, sizeof h, 0));
    if (!s)
        return TSR_OK;
    size_t n = (size_t)s->n_tokens * 3 + (size_t)s->n_out + (size_t)s->n_release;
    TSR_TRY(grow((void **)&e->desc, &e->desc_cap, n * 4, 1));
    int32_t *d = (int32_t *)e->desc;
    memcpy(d, s->tokens, (size_t)s->n_tokens * 4);
    memcpy(d + s->n_tokens, s->pos, (size_t)s->n_tokens * 4);
    memcpy(d + 2 * s->n_tokens, s->seq, (size_t)s->n_tokens * 4);
    if (s->n_out)
        memcpy(d + 3 * s->n_tokens, s->out_rows, (size_t)s->n_out * 4);
    if (s->n_release)
        memcpy(d + 3 * s->n_tokens + s->n_out, s->release, (size_t)s->n_release * 4);
    return tsr_comm_broadcast(e->grid->world, d, n, TSR_COMM_I32, 0);
}

tsr_status tsr_engine_step(tsr_engine *e, const tsr_step *s, int32_t *tokens, float *logits) {
    if (e->grid->world_rank != 0)
        return tsr_error_set(TSR_ERR_INTERNAL, "tsr_engine_step is for rank 0");
    TSR_TRY(validate_step(e, s));
    if (e->grid->world_size > 1)
        TSR_TRY(send_desc(e, STEP_RUN, s));
    return exec_step(e, s, tokens, logits);
}

tsr_status tsr_engine_stop(tsr_engine *e) {
    if (e->grid->world_size == 1)
        return TSR_OK;
    return send_desc(e, STEP_STOP, NULL);
}

tsr_status tsr_engine_serve(tsr_engine *e) {
    for (;;) {
        desc_header h;
        TSR_TRY(tsr_comm_bcast_idle(e->grid->world, &h, sizeof h, 0));
        if (h.magic != DESC_MAGIC)
            return tsr_error_set(TSR_ERR_COMM, "engine: corrupt step descriptor");
        if (h.kind == STEP_STOP)
            return TSR_OK;
        size_t n = (size_t)h.n_tokens * 3 + (size_t)h.n_out + (size_t)h.n_release;
        TSR_TRY(grow((void **)&e->desc, &e->desc_cap, n * 4, 1));
        int32_t *d = (int32_t *)e->desc;
        TSR_TRY(tsr_comm_broadcast(e->grid->world, d, n, TSR_COMM_I32, 0));
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
        };
        tsr_status st = exec_step(e, &s, NULL, NULL);
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
        return tsr_error_set(TSR_ERR_NOMEM, "engine: out of memory");
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
