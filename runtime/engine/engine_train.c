/* runtime/engine/engine_train.c - LoRA adapters and training steps through the
 * engine: the adapter slots every rank keeps, and the operations rank 0
 * describes and every rank runs (engine.h, "LoRA adapters and training").
 *
 * Protocol: rank 0 checks the request, broadcasts a TRAIN header (the
 * peers wait for it in tsr_engine_serve), then the same function runs on
 * every rank: it broadcasts the fixed train_desc from rank 0 (the peers
 * receive what rank 0 sends), then the operation's payload (a batch's
 * tokens, a loaded adapter's matrices), then does its work on this rank's
 * pieces. Operations that can fail on one rank alone (allocations, an
 * adapter that does not fit) end with an agreement that carries the first
 * failing rank's status and message to every rank.
 *
 * Training batches run as a GPipe schedule when pp > 1: each micro-batch's
 * forward goes through every stage (hidden states sent on), then the
 * backwards in reverse order (the gradient of each stage's input sent
 * back). The tapes keep each layer's input per micro-batch; everything else
 * is recomputed (runtime/train/train.h).
 *
 * What it is not: no names (rank 0's caller maps names to slots), no files
 * (the caller reads and writes PEFT directories). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/engine_internal.h"

enum { OP_CREATE = 1, OP_LOAD, OP_DELETE, OP_GATHER, OP_BATCH, OP_OPTIM };

/* The fixed part of an operation; every field 4 bytes (broadcast as int32). */
typedef struct {
    int32_t op, slot;
    /* OP_BATCH */
    int32_t n_seqs, n_tokens, backward, has_weights;
    /* OP_CREATE, OP_LOAD */
    int32_t rank, use_rslora, targets;
    float alpha, dropout;
    uint32_t seed_lo, seed_hi;
    /* OP_OPTIM */
    float lr, beta1, beta2, eps, weight_decay, max_grad_norm;
    int32_t pad;
} train_desc;

_Static_assert(sizeof(train_desc) % 4 == 0, "train_desc is broadcast as int32");

/* What rank 0 passes in and gets back; NULL fields on the other ranks. */
typedef struct {
    const tsr_train_batch *batch;
    const tsr_peft_adapter *load;
    tsr_train_stats *stats;
    tsr_optim_result *optim;
    tsr_peft_adapter *gathered;
} train_io;

static int is_root(const tsr_engine *e) { return e->grid->world_rank == 0; }

/* count int32-sized elements of buf from world rank 0 to every rank. */
static tsr_status bcast(tsr_engine *e, void *buf, size_t count) {
    if (e->grid->world_size == 1 || count == 0)
        return TSR_OK;
    return tsr_comm_broadcast(e->grid->world, buf, count, TSR_COMM_I32, 0);
}

/* Every rank learns whether every rank succeeded; the first failing rank's
 * status and message become everyone's. A broken collective is TSR_ERR_COMM. */
static tsr_status agree(tsr_engine *e, tsr_status st) {
    tsr_comm_grid *g = e->grid;
    if (g->world_size == 1)
        return st;
    int32_t v = st != TSR_OK ? g->world_size - g->world_rank : 0;
    if (tsr_comm_allreduce(g->world, &v, &v, 1, TSR_COMM_I32, TSR_COMM_MAX) != TSR_OK)
        return TSR_ERR_COMM;
    if (v == 0)
        return TSR_OK;
    const int root = g->world_size - v;
    struct {
        int32_t status;
        char msg[508];
    } m;
    memset(&m, 0, sizeof m);
    if (g->world_rank == root) {
        m.status = st;
        snprintf(m.msg, sizeof m.msg, "%s",
                 tsr_error_msg()[0] ? tsr_error_msg() : tsr_status_str(st));
    }
    if (tsr_comm_broadcast(g->world, &m, sizeof m / 4, TSR_COMM_I32, root) != TSR_OK)
        return TSR_ERR_COMM;
    if (g->world_rank == root)
        return st;
    return tsr_error_set((tsr_status)m.status, "rank %d: %s", root, m.msg);
}

static tsr_status ensure_trainer(tsr_engine *e) {
    if (e->trainer_ready)
        return TSR_OK;
    /* the trainer's f32 reductions over TP and its world sum: the TP group's
     * xfer path (NCCL on device buffers, MPI staged or not) */
    tsr_train_mpi_init(&e->tmpi, e->grid, e->be);
    tsr_train_comm c = tsr_train_mpi_comm(&e->tmpi);
    TSR_TRY(tsr_trainer_init(&e->trainer, &e->model, &c, NULL));
    e->trainer_ready = 1;
    return TSR_OK;
}

void tsr_engine_train_free(tsr_engine *e) {
    for (int i = 0; i < TSR_ENGINE_MAX_ADAPTERS; i++)
        if (e->adapters[i].used) {
            tsr_lora_adapter_free(&e->adapters[i].a);
            e->adapters[i].used = 0;
        }
    if (e->trainer_ready) {
        for (int i = 0; i < e->n_tapes; i++)
            tsr_train_tape_free(&e->trainer, &e->tapes[i]);
        tsr_trainer_free(&e->trainer);
        tsr_train_mpi_free(&e->tmpi);
        e->trainer_ready = 0;
    }
    free(e->tapes);
    e->tapes = NULL;
    e->n_tapes = 0;
    if (e->be) {
        tsr_backend_free(e->be, e->grad_in);
        tsr_backend_free(e->be, e->grad_out);
    }
    e->grad_in = e->grad_out = NULL;
    e->grad_in_cap = e->grad_out_cap = 0;
}

const tsr_lora_adapter *tsr_engine_adapter_get(const tsr_engine *e, int slot) {
    if (slot < 0 || slot >= TSR_ENGINE_MAX_ADAPTERS || !e->adapters[slot].used)
        return NULL;
    return &e->adapters[slot].a;
}

/* ---- adapters ---- */

static tsr_lora_config desc_lora(const train_desc *d) {
    tsr_lora_config c = TSR_LORA_CONFIG_INIT;
    c.rank = d->rank;
    c.alpha = d->alpha;
    c.use_rslora = d->use_rslora;
    c.targets = (unsigned)d->targets;
    c.dropout = d->dropout;
    c.seed = (uint64_t)d->seed_lo | (uint64_t)d->seed_hi << 32;
    return c;
}

static void lora_desc(train_desc *d, const tsr_lora_config *c) {
    d->rank = c->rank;
    d->alpha = c->alpha;
    d->use_rslora = c->use_rslora;
    d->targets = (int32_t)c->targets;
    d->dropout = c->dropout;
    d->seed_lo = (uint32_t)c->seed;
    d->seed_hi = (uint32_t)(c->seed >> 32);
}

/* This rank's adapter for slot d->slot, checked against its model shard. */
static tsr_status adapter_make(tsr_engine *e, const train_desc *d) {
    tsr_engine_adapter *ad = &e->adapters[d->slot];
    tsr_lora_config c = desc_lora(d);
    tsr_lora_shard shard;
    TSR_TRY(tsr_lora_shard_of(&e->plan, e->grid->tp_rank, e->grid->pp_rank, &shard));
    TSR_TRY(tsr_lora_adapter_init(&ad->a, &c, &e->mcfg, &shard, e->be));
    tsr_status st = tsr_model_check_lora(&e->model, &ad->a);
    if (st != TSR_OK) {
        tsr_lora_adapter_free(&ad->a);
        return st;
    }
    ad->used = 1;
    ad->batches = 0;
    return TSR_OK;
}

static void adapter_drop(tsr_engine *e, int slot) {
    if (!e->adapters[slot].used)
        return;
    tsr_lora_adapter_free(&e->adapters[slot].a);
    memset(&e->adapters[slot], 0, sizeof e->adapters[slot]);
}

/* (d_in, d_out) of target t: the full base weight is (d_out, d_in). */
static void target_dims(const tsr_model_config *c, int t, int *d_in, int *d_out) {
    if (tsr_peft_target_dims(c, t, d_in, d_out) != TSR_OK)
        *d_in = *d_out = 0;
}

static tsr_status op_create(tsr_engine *e, const train_desc *d) {
    return agree(e, adapter_make(e, d));
}

/* Every rank makes the adapter, then receives every matrix (rank 0 sends
 * pa's) and keeps its pieces. */
static tsr_status op_load(tsr_engine *e, const train_desc *d, const tsr_peft_adapter *pa) {
    tsr_status st = agree(e, adapter_make(e, d));
    if (st != TSR_OK)
        return st;
    const tsr_model_config *c = &e->mcfg;
    const int r = d->rank;
    size_t biggest = 0;
    for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
        int di, dout;
        target_dims(c, t, &di, &dout);
        size_t n = (size_t)r * (size_t)(di > dout ? di : dout);
        if (n > biggest)
            biggest = n;
    }
    float *buf = malloc(2 * biggest * sizeof *buf + sizeof *buf);
    st = buf ? TSR_OK : tsr_error_set(TSR_ERR_NOMEM, "loading an adapter: out of memory");
    st = agree(e, st);
    for (int l = 0; st == TSR_OK && l < c->n_layer; l++)
        for (int t = 0; st == TSR_OK && t < TSR_LORA_N_TARGETS; t++) {
            if (!((unsigned)d->targets & TSR_LORA_TARGET_BIT(t)))
                continue;
            int di, dout;
            target_dims(c, t, &di, &dout);
            float *A = buf, *B = buf + biggest;
            size_t na = (size_t)r * di, nb = (size_t)dout * r;
            if (is_root(e)) {
                memcpy(A, pa->A[TSR_PEFT_IDX(l, t)], na * sizeof *A);
                memcpy(B, pa->B[TSR_PEFT_IDX(l, t)], nb * sizeof *B);
            }
            st = bcast(e, A, na);
            if (st == TSR_OK)
                st = bcast(e, B, nb);
            if (st != TSR_OK)
                st = TSR_ERR_COMM;
            else
                st = tsr_lora_set_full(&e->adapters[d->slot].a, l, (tsr_lora_target)t, A, B);
        }
    free(buf);
    if (st == TSR_ERR_COMM)
        return st;
    if (st == TSR_OK)
        st = tsr_backend_sync(e->be);
    st = agree(e, st);
    if (st != TSR_OK && st != TSR_ERR_COMM)
        adapter_drop(e, d->slot);
    return st;
}

static tsr_status op_delete(tsr_engine *e, const train_desc *d) {
    adapter_drop(e, d->slot);
    return TSR_OK;
}

/* The pipeline stage holding layer l. */
static int stage_of(const tsr_engine *e, int l) {
    for (int p = 0; p < e->grid->pp; p++) {
        tsr_model_slice sl;
        if (tsr_shard_plan_slice(&e->plan, 0, p, &sl) == TSR_OK && l >= sl.layer_begin &&
            l < sl.layer_end)
            return p;
    }
    return 0;
}

/* Each stage's TP group gathers its layers' matrices; its TP rank 0 sends
 * them to world rank 0, which receives the other stages' in layer order. */
static tsr_status op_gather(tsr_engine *e, const train_desc *d, tsr_peft_adapter *out) {
    tsr_comm_grid *g = e->grid;
    const tsr_model_config *c = &e->mcfg;
    const tsr_lora_adapter *a = &e->adapters[d->slot].a;
    const int r = a->cfg.rank;
    tsr_status st = TSR_OK;
    if (is_root(e)) {
        st = tsr_peft_init(out, c, r, a->cfg.alpha, a->cfg.targets);
        if (st == TSR_OK) {
            out->use_rslora = a->cfg.use_rslora;
            out->dropout = a->cfg.dropout;
        }
    }
    float *tmp = NULL;
    if (st == TSR_OK && !is_root(e)) {
        size_t biggest = 0;
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            int di, dout;
            target_dims(c, t, &di, &dout);
            size_t n = (size_t)r * (size_t)(di > dout ? di : dout);
            biggest = n > biggest ? n : biggest;
        }
        tmp = malloc(2 * biggest * sizeof *tmp + sizeof *tmp);
        if (!tmp)
            st = tsr_error_set(TSR_ERR_NOMEM, "gathering an adapter: out of memory");
    }
    st = agree(e, st);
    if (st != TSR_OK) {
        free(tmp);
        if (is_root(e))
            tsr_peft_free(out);
        return st;
    }
    for (int l = 0; st == TSR_OK && l < c->n_layer; l++) {
        const int sp = stage_of(e, l), src = sp * g->tp;
        for (int t = 0; st == TSR_OK && t < TSR_LORA_N_TARGETS; t++) {
            if (!(a->cfg.targets & TSR_LORA_TARGET_BIT(t)))
                continue;
            int di, dout;
            target_dims(c, t, &di, &dout);
            const size_t na = (size_t)r * di, nb = (size_t)dout * r;
            float *A = is_root(e) ? out->A[TSR_PEFT_IDX(l, t)] : tmp;
            float *B = is_root(e) ? out->B[TSR_PEFT_IDX(l, t)] : tmp + na;
            if (g->pp_rank == sp) {
                st = tsr_train_gather_lora(a, g, l, (tsr_lora_target)t, TSR_LORA_A, A);
                if (st == TSR_OK)
                    st = tsr_train_gather_lora(a, g, l, (tsr_lora_target)t, TSR_LORA_B, B);
                if (st == TSR_OK && g->tp_rank == 0 && src != 0) {
                    st = tsr_comm_send(g->world, A, na, TSR_F32, 0, 2000);
                    if (st == TSR_OK)
                        st = tsr_comm_send(g->world, B, nb, TSR_F32, 0, 2001);
                }
            } else if (is_root(e)) {
                st = tsr_comm_recv(g->world, A, na, TSR_F32, src, 2000);
                if (st == TSR_OK)
                    st = tsr_comm_recv(g->world, B, nb, TSR_F32, src, 2001);
            }
        }
    }
    free(tmp);
    if (st != TSR_OK) {
        if (is_root(e))
            tsr_peft_free(out);
        return TSR_ERR_COMM; /* the ranks are out of step */
    }
    return TSR_OK;
}

/* ---- training batches ---- */

static tsr_status grow_tapes(tsr_engine *e, int n) {
    if (n <= e->n_tapes)
        return TSR_OK;
    tsr_train_tape *t = realloc(e->tapes, (size_t)n * sizeof *t);
    if (!t)
        return tsr_error_set(TSR_ERR_NOMEM, "training: out of memory");
    for (int i = e->n_tapes; i < n; i++)
        tsr_train_tape_init(&t[i]);
    e->tapes = t;
    e->n_tapes = n;
    return TSR_OK;
}

/* The batch's payload from rank 0: seq_start, tokens, weights. */
typedef struct {
    int32_t *seq_start, *tokens;
    float *weights;
} batch_buf;

static tsr_status recv_batch(tsr_engine *e, const train_desc *d, const tsr_train_batch *in,
                             batch_buf *bb, tsr_train_batch *b) {
    memset(bb, 0, sizeof *bb);
    const size_t ns = (size_t)d->n_seqs + 1, nt = (size_t)d->n_tokens;
    if (is_root(e)) {
        *b = *in;
        return TSR_OK;
    }
    bb->seq_start = malloc(ns * sizeof *bb->seq_start);
    bb->tokens = malloc((nt + 1) * sizeof *bb->tokens);
    bb->weights = d->has_weights ? malloc((nt + 1) * sizeof *bb->weights) : NULL;
    if (!bb->seq_start || !bb->tokens || (d->has_weights && !bb->weights))
        return tsr_error_set(TSR_ERR_NOMEM, "training: out of memory for a batch of %zu tokens",
                             nt);
    memset(b, 0, sizeof *b);
    b->n_seqs = d->n_seqs;
    b->seq_start = bb->seq_start;
    b->tokens = bb->tokens;
    b->weights = bb->weights;
    return TSR_OK;
}

static void free_batch(batch_buf *bb) {
    free(bb->seq_start);
    free(bb->tokens);
    free(bb->weights);
}

/* The GPipe schedule over this rank's stage: every micro-batch's forward
 * (hidden states received from the previous stage, sent to the next), the
 * loss on the last stage, then (backward) every micro-batch's backward in
 * reverse order (gradients received from the next stage, sent to the
 * previous). Failures here leave the ranks out of step. */
static tsr_status run_batch(tsr_engine *e, tsr_engine_adapter *ad, const tsr_train_batch *b,
                            int backward, tsr_train_stats *tot) {
    tsr_comm_grid *g = e->grid;
    const int C = e->mcfg.n_embd, pp = g->pp;
    const size_t act = tsr_backend_act_size(e->be);
    int M = pp > 1 ? e->cfg.micro_batches : 1;
    if (M > b->n_seqs)
        M = b->n_seqs;
    if (M < 1)
        M = 1;
    TSR_TRY(grow_tapes(e, M));
    int32_t *starts = malloc(((size_t)b->n_seqs + M + 1) * sizeof *starts);
    if (!starts)
        return tsr_error_set(TSR_ERR_NOMEM, "training: out of memory");
    tsr_train_batch *mbs = calloc((size_t)M, sizeof *mbs);
    if (!mbs) {
        free(starts);
        return tsr_error_set(TSR_ERR_NOMEM, "training: out of memory");
    }
    const tsr_lora_adapter *a = ad ? &ad->a : NULL;
    tsr_status st = TSR_OK;
    memset(tot, 0, sizeof *tot);
    /* micro-batch k: sequences [s0, s1), its starts rebased in place */
    for (int k = 0; k < M; k++) {
        int s0 = (int)((long)b->n_seqs * k / M), s1 = (int)((long)b->n_seqs * (k + 1) / M);
        int t0 = b->seq_start[s0];
        for (int s = s0; s <= s1; s++)
            starts[s + k] = b->seq_start[s] - t0; /* k + s: each micro-batch its own n+1 */
        mbs[k] = *b;
        mbs[k].n_seqs = s1 - s0;
        mbs[k].seq_start = starts + s0 + k;
        mbs[k].tokens = b->tokens + t0;
        mbs[k].weights = b->weights ? b->weights + t0 : NULL;
        /* dropout: the whole batch's masks whatever the micro-batching */
        mbs[k].dropout_key = ad ? ad->batches : 0;
        mbs[k].token_offset = t0;
    }
    for (int k = 0; k < M && st == TSR_OK; k++) {
        const tsr_train_batch *mb = &mbs[k];
        const size_t n = (size_t)mb->seq_start[mb->n_seqs];
        if (!e->first_stage) {
            st = tsr_engine_grow_device(e->be, &e->hidden_in, &e->hidden_in_cap, n * C * act,
                                        "hidden_in");
            if (st == TSR_OK)
                st = tsr_engine_pp_recv(e, e->hidden_in, n * C, g->pp_rank - 1, 100 + k);
        }
        if (st == TSR_OK && !e->last_stage)
            st = tsr_engine_grow_device(e->be, &e->hidden_out, &e->hidden_out_cap, n * C * act,
                                        "hidden_out");
        if (st == TSR_OK)
            st = tsr_train_stage_forward(&e->trainer, a, &e->tapes[k], mb, backward,
                                         e->first_stage ? NULL : e->hidden_in,
                                         e->last_stage ? NULL : e->hidden_out);
        if (st == TSR_OK && !e->last_stage)
            st = tsr_engine_pp_send(e, e->hidden_out, n * C, g->pp_rank + 1, 100 + k);
        if (st == TSR_OK && e->last_stage) {
            tsr_train_stats s;
            st = tsr_train_loss(&e->trainer, &e->tapes[k], backward, &s);
            tot->loss += s.loss;
            tot->weight_sum += s.weight_sum;
            tot->n_tokens += s.n_tokens;
            tot->n_loss_tokens += s.n_loss_tokens;
        }
    }
    for (int k = M - 1; backward && k >= 0 && st == TSR_OK; k--) {
        const tsr_train_batch *mb = &mbs[k];
        const size_t n = (size_t)mb->seq_start[mb->n_seqs];
        if (!e->last_stage) {
            st =
                tsr_engine_grow_device(e->be, &e->grad_in, &e->grad_in_cap, n * C * act, "grad_in");
            if (st == TSR_OK)
                st = tsr_engine_pp_recv(e, e->grad_in, n * C, g->pp_rank + 1, 200 + k);
        }
        if (st == TSR_OK && !e->first_stage)
            st = tsr_engine_grow_device(e->be, &e->grad_out, &e->grad_out_cap, n * C * act,
                                        "grad_out");
        if (st == TSR_OK)
            st = tsr_train_stage_backward(&e->trainer, &ad->a, &e->tapes[k],
                                          e->last_stage ? NULL : e->grad_in,
                                          e->first_stage ? NULL : e->grad_out);
        if (st == TSR_OK && !e->first_stage)
            st = tsr_engine_pp_send(e, e->grad_out, n * C, g->pp_rank - 1, 200 + k);
    }
    if (st == TSR_OK && backward)
        ad->batches++;
    free(mbs);
    free(starts);
    return st;
}

static tsr_status op_batch(tsr_engine *e, const train_desc *d, train_io *io) {
    batch_buf bb;
    tsr_train_batch b;
    tsr_status st = recv_batch(e, d, io->batch, &bb, &b);
    if (st == TSR_OK)
        st = ensure_trainer(e);
    st = agree(e, st);
    if (st == TSR_OK) {
        /* the payload: every peer allocated its buffers */
        if (bcast(e, (void *)b.seq_start, (size_t)d->n_seqs + 1) != TSR_OK ||
            bcast(e, (void *)b.tokens, (size_t)d->n_tokens) != TSR_OK ||
            (d->has_weights && bcast(e, (void *)b.weights, (size_t)d->n_tokens) != TSR_OK))
            st = TSR_ERR_COMM;
    }
    tsr_train_stats tot = {0};
    if (st == TSR_OK) {
        tsr_engine_adapter *ad = d->slot >= 0 ? &e->adapters[d->slot] : NULL;
        st = run_batch(e, ad, &b, d->backward, &tot);
        if (st != TSR_OK)
            st = tsr_error_wrap(TSR_ERR_COMM, "a training batch failed on rank %d",
                                e->grid->world_rank);
    }
    /* the loss lives on the last stage's TP rank 0 */
    const int src = (e->grid->pp - 1) * e->grid->tp;
    if (st == TSR_OK && src != 0) {
        double v[4] = {tot.loss, tot.weight_sum, (double)tot.n_tokens, (double)tot.n_loss_tokens};
        if (e->grid->world_rank == src)
            st = tsr_comm_send(e->grid->world, v, 8, TSR_COMM_I32, 0, 3000);
        else if (is_root(e))
            st = tsr_comm_recv(e->grid->world, v, 8, TSR_COMM_I32, src, 3000);
        if (is_root(e))
            tot = (tsr_train_stats){v[0], v[1], (long)v[2], (long)v[3]};
        if (st != TSR_OK)
            st = TSR_ERR_COMM;
    }
    if (st == TSR_OK && io->stats)
        *io->stats = tot;
    free_batch(&bb);
    return st;
}

static tsr_status op_optim(tsr_engine *e, const train_desc *d, train_io *io) {
    tsr_status st = agree(e, ensure_trainer(e));
    if (st != TSR_OK)
        return st;
    tsr_optim_params p = {{d->lr, d->beta1, d->beta2, d->eps, d->weight_decay}, d->max_grad_norm};
    tsr_optim_result res;
    /* the refusals (non-finite, nothing accumulated) are the same verdict on
     * every rank: the step's sums are over the world */
    st = tsr_train_optim_step(&e->trainer, &e->adapters[d->slot].a, &p, &res);
    if (st == TSR_OK && io->optim)
        *io->optim = res;
    return st;
}

/* One operation on this rank, rank 0's description first. */
static tsr_status run_op(tsr_engine *e, train_desc *d, train_io *io) {
    if (bcast(e, d, sizeof *d / 4) != TSR_OK)
        return TSR_ERR_COMM;
    if (d->slot < -1 || d->slot >= TSR_ENGINE_MAX_ADAPTERS)
        return tsr_error_set(TSR_ERR_COMM, "engine: corrupt training descriptor (slot %d)",
                             d->slot);
    switch (d->op) {
    case OP_CREATE: return op_create(e, d);
    case OP_LOAD: return op_load(e, d, io->load);
    case OP_DELETE: return op_delete(e, d);
    case OP_GATHER: return op_gather(e, d, io->gathered);
    case OP_BATCH: return op_batch(e, d, io);
    case OP_OPTIM: return op_optim(e, d, io);
    }
    return tsr_error_set(TSR_ERR_COMM, "engine: corrupt training descriptor (op %d)", d->op);
}

tsr_status tsr_engine_exec_train(tsr_engine *e) {
    train_desc d;
    train_io io = {0};
    memset(&d, 0, sizeof d);
    tsr_status st = run_op(e, &d, &io);
    if (st == TSR_ERR_COMM) {
        TSR_LOG_E("%s", tsr_error_msg());
        return TSR_ERR_COMM;
    }
    return TSR_OK; /* agreed refusals: rank 0 reports them */
}

/* Rank 0: the header, then the operation on every rank. */
static tsr_status start(tsr_engine *e, train_desc *d, train_io *io) {
    if (!is_root(e))
        return tsr_error_set(TSR_ERR_INTERNAL, "engine training calls are for rank 0");
    TSR_TRY(tsr_engine_send_kind(e, TSR_STEP_TRAIN));
    return run_op(e, d, io);
}

static tsr_status check_slot(const tsr_engine *e, int slot, int want_used) {
    if (slot < 0 || slot >= TSR_ENGINE_MAX_ADAPTERS)
        return tsr_error_set(TSR_ERR_INVALID, "adapter slot %d outside 0..%d", slot,
                             TSR_ENGINE_MAX_ADAPTERS - 1);
    if (want_used && !e->adapters[slot].used)
        return tsr_error_set(TSR_ERR_INVALID, "adapter slot %d is empty", slot);
    if (!want_used && e->adapters[slot].used)
        return tsr_error_set(TSR_ERR_INVALID, "adapter slot %d is in use", slot);
    return TSR_OK;
}

tsr_status tsr_engine_adapter_create(tsr_engine *e, int slot, const tsr_lora_config *cfg) {
    TSR_TRY(check_slot(e, slot, 0));
    TSR_TRY(tsr_lora_config_check(cfg));
    train_desc d = {0};
    d.op = OP_CREATE;
    d.slot = slot;
    lora_desc(&d, cfg);
    train_io io = {0};
    return start(e, &d, &io);
}

tsr_status tsr_engine_adapter_load(tsr_engine *e, int slot, const tsr_peft_adapter *pa) {
    TSR_TRY(check_slot(e, slot, 0));
    if (pa->n_layers != e->mcfg.n_layer || !pa->A || !pa->B)
        return tsr_error_set(TSR_ERR_INVALID, "adapter: %d layers, the model has %d", pa->n_layers,
                             e->mcfg.n_layer);
    tsr_lora_config c = TSR_LORA_CONFIG_INIT;
    c.rank = pa->r;
    c.alpha = pa->alpha;
    c.use_rslora = pa->use_rslora;
    c.targets = pa->targets;
    c.dropout = pa->dropout;
    TSR_TRY(tsr_lora_config_check(&c));
    train_desc d = {0};
    d.op = OP_LOAD;
    d.slot = slot;
    lora_desc(&d, &c);
    train_io io = {0};
    io.load = pa;
    return start(e, &d, &io);
}

tsr_status tsr_engine_adapter_delete(tsr_engine *e, int slot) {
    TSR_TRY(check_slot(e, slot, 1));
    train_desc d = {0};
    d.op = OP_DELETE;
    d.slot = slot;
    train_io io = {0};
    return start(e, &d, &io);
}

tsr_status tsr_engine_adapter_gather(tsr_engine *e, int slot, tsr_peft_adapter *out) {
    memset(out, 0, sizeof *out);
    TSR_TRY(check_slot(e, slot, 1));
    train_desc d = {0};
    d.op = OP_GATHER;
    d.slot = slot;
    train_io io = {0};
    io.gathered = out;
    return start(e, &d, &io);
}

tsr_status tsr_engine_train_batch(tsr_engine *e, int slot, const tsr_train_batch *b, int backward,
                                  tsr_train_stats *out) {
    if (backward || slot != -1)
        TSR_TRY(check_slot(e, slot, 1));
    TSR_TRY(tsr_train_check_batch(&e->mcfg, b));
    train_desc d = {0};
    d.op = OP_BATCH;
    d.slot = slot;
    d.n_seqs = b->n_seqs;
    d.n_tokens = b->seq_start[b->n_seqs];
    d.backward = backward != 0;
    d.has_weights = b->weights != NULL;
    train_io io = {0};
    io.batch = b;
    tsr_train_stats s;
    io.stats = &s;
    tsr_status st = start(e, &d, &io);
    if (st == TSR_OK && out)
        *out = s;
    return st;
}

tsr_status tsr_engine_optim_step(tsr_engine *e, int slot, const tsr_optim_params *p,
                                 tsr_optim_result *out) {
    TSR_TRY(check_slot(e, slot, 1));
    TSR_TRY(tsr_train_check_optim(p));
    train_desc d = {0};
    d.op = OP_OPTIM;
    d.slot = slot;
    d.lr = p->adamw.lr;
    d.beta1 = p->adamw.beta1;
    d.beta2 = p->adamw.beta2;
    d.eps = p->adamw.eps;
    d.weight_decay = p->adamw.weight_decay;
    d.max_grad_norm = p->max_grad_norm;
    train_io io = {0};
    tsr_optim_result r;
    io.optim = &r;
    tsr_status st = start(e, &d, &io);
    if (st == TSR_OK && out)
        *out = r;
    return st;
}
