/* runtime/train/train.c - LoRA training over this rank's shard: stage forward with
 * stored layer inputs, vocabulary-parallel loss, backward with recompute,
 * LoRA dropout, gradient reduction and the AdamW step. Contracts are in
 * runtime/train/train.h.
 *
 * Tensor parallelism, derived. TP ranks p = 1..P; activations x, h between
 * the projections are replicated (every rank holds the same full (n, C)
 * rows), s is the LoRA scale, and lora_bwd gives, from dy, x and xa = x A^T,
 *   dB += s dy^T xa,  t = s dy B,  dA += t^T x,  dx += t A.
 *
 * Column-parallel target (q, k, v, gate, up): W and B split by output rows
 * (W_p, B_p), A whole on every rank, input h replicated:
 *   y_p = h W_p^T + s (h A^T) B_p^T                 (rank p's output columns)
 *   dL/dB_p = s dy_p^T (h A^T)                      complete on rank p
 *   dL/dA   = sum_p (s dy_p B_p)^T h = sum_p t_p^T h
 *             rank p's dA is a PARTIAL sum: all-reduce over TP
 *   dL/dh   = sum_p (dy_p W_p + t_p A)              partial: the backward
 *             all-reduces dh once for q+k+v and once for gate+up, with the
 *             LoRA terms in the same buffer.
 * Row-parallel target (o, down): W and A split by input columns (W_p, A_p),
 * B whole, rank p's input z_p (its heads / FFN columns):
 *   y = sum_p [z_p W_p^T + s (z_p A_p^T) B^T]       (the sum is the forward's
 *             all-reduce; each rank adds its LoRA term before it)
 *   dy is the gradient of a replicated activation: the same on every rank.
 *   dL/dB   = s dy^T sum_p z_p A_p^T = sum_p s dy^T xa_p
 *             rank p's dB is a PARTIAL sum: all-reduce over TP
 *   dL/dA_p = (s dy B)^T z_p = t^T z_p              complete (t is the same
 *             on every rank)
 *   dL/dz_p = dy W_p + t A_p                        local: z_p only feeds
 *             rank p's part, no communication.
 * Replicated KV heads (tp > n_head_kv): the kv_share ranks of a group hold the
 * same rows of W_k, W_v and of B_k, B_v, and each computes k, v for its own
 * query heads only, so its dk, dv are the gradient through those heads:
 *   dL/dB_k = sum over the group's ranks of s dk_p^T xa    partial over the
 *             group: summed over TP in a buffer holding every KV head's rows,
 *             each rank filling only its own head's;
 *   dL/dA_k, dL/dh: sums over all TP ranks as above, already right.
 * Vocabulary-parallel head: logits_p = hN E_p^T, so dL/dhN = sum_p dlogits_p
 * E_p is partial: all-reduced over TP. The embedding is frozen.
 *
 * LoRA dropout changes none of this: the branch's input x becomes M x (M the
 * mask over x's elements, scaled by 1/(1-p)), so xa = (M x) A^T, dA += t^T (M x)
 * and dx += M (t A). A replicated input is masked alike on every TP rank (the
 * mask depends on the global token and column only) and a row-parallel
 * rank's slice z_p with the columns it holds (in_begin), so each rank's
 * terms are those of the tp = 1 sum.
 *
 * The reductions of the replicated factors are linear, so they wait: every
 * backward adds partial sums, and one all-reduce per slab region runs at the
 * step (or tsr_train_reduce_grads) however many micro-batches accumulated.
 * In the gradient norm a replicated factor is counted on its owner only. */
#include "runtime/train/train.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { DEFAULT_HEAD_ROWS = 512 };

static int n_layers(const tsr_model *m) { return m->slice.layer_end - m->slice.layer_begin; }

static tsr_status act_allreduce(tsr_trainer *t, void *buf, size_t count) {
    if (!t->m->comm.allreduce_sum)
        return TSR_OK;
    return t->m->comm.allreduce_sum(t->m->comm.ctx, buf, count);
}

static tsr_status f32_sum(tsr_trainer *t, float *buf, size_t count) {
    if (!t->comm.allreduce_sum || count == 0)
        return TSR_OK;
    return t->comm.allreduce_sum(t->comm.ctx, buf, count);
}

static tsr_status f32_max(tsr_trainer *t, float *buf, size_t count) {
    if (!t->comm.allreduce_max || count == 0)
        return TSR_OK;
    return t->comm.allreduce_max(t->comm.ctx, buf, count);
}

/* ---- the trainer, its scratch and tapes --------------------------------------------- */

tsr_status tsr_trainer_init(tsr_trainer *t, tsr_model *m, const tsr_train_comm *comm,
                            const tsr_train_config *cfg) {
    memset(t, 0, sizeof *t);
    if (comm)
        t->comm = *comm;
    if (cfg)
        t->cfg = *cfg;
    if (t->cfg.head_rows <= 0)
        t->cfg.head_rows = DEFAULT_HEAD_ROWS;
    const int split = m->slice.n_vocab != m->cfg.n_vocab || m->slice.n_head != m->cfg.n_head;
    if (split && (!m->comm.allreduce_sum || !t->comm.allreduce_sum || !t->comm.allreduce_max))
        return tsr_error_set(TSR_ERR_INVALID,
                             "trainer: the model is split over TP ranks but the TP all-reduce "
                             "hooks are missing");
    t->m = m;
    tsr_train_tape_init(&t->tape);
    tsr_train_tape_init(&t->eval);
    return TSR_OK;
}

static void ws_free(tsr_trainer *t) {
    tsr_train_ws *w = &t->ws;
    tsr_backend *be = t->m->be;
    void *bufs[] = {w->h1, w->h2,  w->x2, w->tmp,  w->dh,  w->q,  w->att, w->datt, w->dq, w->k,
                    w->v,  w->dk,  w->dv, w->gate, w->up,  w->s,  w->ds,  w->lse,  w->lt, w->logits,
                    w->hn, w->dhn, w->ce, w->xd,   w->dxd, w->xc, w->dxc, w->tc,   w->wc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        tsr_backend_free(be, bufs[i]);
    for (int i = 0; i < TSR_LORA_N_TARGETS; i++)
        tsr_backend_free(be, w->xa[i]);
    free(w->ce_host);
    free(w->h_rows);
    memset(w, 0, sizeof *w);
}

/* Scratch for n tokens and LoRA rank r, and LoRA dropout's buffers when
 * drop (grows, never shrinks). */
static tsr_status ws_reserve(tsr_trainer *t, int n, int r, int drop) {
    tsr_train_ws *w = &t->ws;
    if (w->h1 && n <= w->cap && r <= w->r && (!drop || w->xd))
        return TSR_OK;
    const int cap = n > w->cap ? n : w->cap, rr = r > w->r ? r : (w->r > 0 ? w->r : 1);
    drop = drop || w->xd;
    ws_free(t);
    tsr_backend *be = t->m->be;
    const tsr_model_config *c = &t->m->cfg;
    const tsr_model_slice *s = &t->m->slice;
    const size_t a = tsr_backend_act_size(be), N = (size_t)cap, C = (size_t)c->n_embd;
    const size_t qd = (size_t)s->n_head * c->head_dim, kvd = (size_t)s->n_kv_head * c->head_dim;
    const size_t ff = (size_t)s->n_ff;
    /* the widest LoRA input: h1/h2 (C), att (q_dim) or s (n_ff_local) */
    const size_t dmax = C > qd ? (C > ff ? C : ff) : (qd > ff ? qd : ff);
    const size_t db = drop ? N * dmax * a : 0;
    const int hr = t->cfg.head_rows < cap ? t->cfg.head_rows : cap;
    struct {
        void **p;
        size_t bytes;
    } plan[] = {
        {&w->h1, N * C * a},
        {&w->h2, N * C * a},
        {&w->x2, N * C * a},
        {&w->tmp, N * C * a},
        {&w->dh, N * C * a},
        {&w->q, N * qd * a},
        {&w->att, N * qd * a},
        {&w->datt, N * qd * a},
        {&w->dq, N * qd * a},
        {&w->k, N * kvd * a},
        {&w->v, N * kvd * a},
        {&w->dk, N * kvd * a},
        {&w->dv, N * kvd * a},
        {&w->gate, N * ff * a},
        {&w->up, N * ff * a},
        {&w->s, N * ff * a},
        {&w->ds, N * ff * a},
        {(void **)&w->lse, N * s->n_head * sizeof(float)},
        {(void **)&w->lt, N * rr * sizeof(float)},
        {&w->logits, (size_t)hr * s->n_vocab * a},
        {&w->hn, (size_t)hr * C * a},
        {&w->dhn, (size_t)hr * C * a},
        {(void **)&w->ce, (size_t)3 * hr * sizeof(float)},
        {&w->xc, (size_t)hr * C * a},
        {&w->dxc, (size_t)hr * C * a},
        {(void **)&w->tc, (size_t)hr * sizeof(int32_t)},
        {(void **)&w->wc, (size_t)hr * sizeof(float)},
        {&w->xd, db},
        {&w->dxd, db},
    };
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
        if ((plan[i].p == &w->xd || plan[i].p == &w->dxd) && !drop)
            continue; /* no dropout: xd and dxd stay NULL */
        tsr_status st = tsr_backend_alloc(be, plan[i].bytes, "training scratch", plan[i].p);
        if (st != TSR_OK) {
            ws_free(t);
            return st;
        }
    }
    for (int i = 0; i < TSR_LORA_N_TARGETS; i++) {
        tsr_status st =
            tsr_backend_alloc(be, N * rr * sizeof(float), "LoRA scratch", (void **)&w->xa[i]);
        if (st != TSR_OK) {
            ws_free(t);
            return st;
        }
    }
    w->ce_host = malloc((size_t)3 * hr * sizeof *w->ce_host);
    w->h_rows = malloc(((size_t)cap + 2 * (size_t)hr) * sizeof *w->h_rows);
    if (w->h_rows) {
        w->h_tc = w->h_rows + cap;
        w->h_wc = (float *)(w->h_tc + hr);
    }
    if (!w->ce_host || !w->h_rows) {
        ws_free(t);
        return tsr_error_set(TSR_ERR_NOMEM, "training: out of memory for %zu loss values",
                             (size_t)3 * hr);
    }
    w->cap = cap;
    w->r = rr;
    return TSR_OK;
}

void tsr_train_tape_init(tsr_train_tape *tape) { memset(tape, 0, sizeof *tape); }

void tsr_train_tape_free(tsr_trainer *t, tsr_train_tape *tape) {
    if (!tape)
        return;
    if (t && t->m) {
        tsr_backend *be = t->m->be;
        void *bufs[] = {tape->x,       tape->dx,     tape->ids,       tape->pos,
                        tape->tok_seq, tape->target, tape->seq_start, tape->weight};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            tsr_backend_free(be, bufs[i]);
    }
    free(tape->h_pos);
    memset(tape, 0, sizeof *tape);
}

void tsr_trainer_free(tsr_trainer *t) {
    if (!t || !t->m)
        return;
    tsr_train_tape_free(t, &t->tape);
    tsr_train_tape_free(t, &t->eval);
    ws_free(t);
    memset(t, 0, sizeof *t);
}

static tsr_status tape_reserve(tsr_trainer *t, tsr_train_tape *tape, int n, int n_seqs, int slots) {
    if (tape->x && n <= tape->cap_tokens && n_seqs <= tape->cap_seqs && slots <= tape->cap_slots)
        return TSR_OK;
    const int cap = n > tape->cap_tokens ? n : tape->cap_tokens;
    const int cs = n_seqs > tape->cap_seqs ? n_seqs : tape->cap_seqs;
    const int sl = slots > tape->cap_slots ? slots : tape->cap_slots;
    tsr_train_tape_free(t, tape);
    tsr_backend *be = t->m->be;
    const size_t a = tsr_backend_act_size(be), C = (size_t)t->m->cfg.n_embd, N = (size_t)cap;
    tsr_status st;
    TSR_CHECK_GOTO(st,
                   tsr_backend_alloc(be, (size_t)sl * N * C * a, "stored activations", &tape->x));
    TSR_CHECK_GOTO(st, tsr_backend_alloc(be, N * C * a, "activation gradients", &tape->dx));
    TSR_CHECK_GOTO(st, tsr_backend_alloc(be, N * 4, "ids", (void **)&tape->ids));
    TSR_CHECK_GOTO(st, tsr_backend_alloc(be, N * 4, "positions", (void **)&tape->pos));
    TSR_CHECK_GOTO(st, tsr_backend_alloc(be, N * 4, "sequences", (void **)&tape->tok_seq));
    TSR_CHECK_GOTO(st, tsr_backend_alloc(be, N * 4, "targets", (void **)&tape->target));
    TSR_CHECK_GOTO(st, tsr_backend_alloc(be, N * 4, "loss weights", (void **)&tape->weight));
    TSR_CHECK_GOTO(st, tsr_backend_alloc(be, ((size_t)cs + 1) * 4, "sequence starts",
                                         (void **)&tape->seq_start));
    tape->h_pos = malloc(N * 3 * sizeof(int32_t) + N * sizeof(float));
    if (!tape->h_pos) {
        st = tsr_error_set(TSR_ERR_NOMEM, "training: out of memory for the positions of %zu tokens",
                           N);
        goto cleanup;
    }
    tape->h_tok_seq = tape->h_pos + N;
    tape->h_target = tape->h_pos + 2 * N;
    tape->h_weight = (float *)(tape->h_pos + 3 * N);
    tape->cap_tokens = cap;
    tape->cap_seqs = cs;
    tape->cap_slots = sl;
    return TSR_OK;
cleanup:
    tsr_train_tape_free(t, tape);
    return st;
}

/* Activation slot l of the tape: the input of local layer l (l = n_layers:
 * the stage output). */
static void *slot(const tsr_trainer *t, const tsr_train_tape *tape, int l) {
    const size_t row = (size_t)tape->cap_tokens * t->m->cfg.n_embd * tsr_backend_act_size(t->m->be);
    return (char *)tape->x + (size_t)(tape->keep ? l : (l & 1)) * row;
}

/* ---- checks ------------------------------------------------------------------------ */

static tsr_status check_batch(const tsr_model *m, const tsr_train_batch *b) {
    return tsr_train_check_batch(&m->cfg, b);
}

tsr_status tsr_train_check_batch(const tsr_model_config *c, const tsr_train_batch *b) {
    if (!b || b->n_seqs < 1 || !b->seq_start || !b->tokens)
        return tsr_error_set(TSR_ERR_INVALID, "training batch: empty (no sequences)");
    if (b->seq_start[0] != 0)
        return tsr_error_set(TSR_ERR_INVALID, "training batch: seq_start[0] is %d, not 0",
                             (int)b->seq_start[0]);
    for (int s = 0; s < b->n_seqs; s++) {
        long len = (long)b->seq_start[s + 1] - b->seq_start[s];
        if (len < 1)
            return tsr_error_set(TSR_ERR_INVALID, "training batch: sequence %d is empty", s);
        if (c->n_ctx_train > 0 && len > c->n_ctx_train)
            return tsr_error_set(TSR_ERR_RANGE,
                                 "training batch: sequence %d has %ld tokens, longer than the "
                                 "model's context (%d)",
                                 s, len, c->n_ctx_train);
    }
    const int n = b->seq_start[b->n_seqs];
    if (b->token_offset < 0 || b->token_offset > INT_MAX - n)
        return tsr_error_set(TSR_ERR_INVALID,
                             "training batch: token_offset %d (must be >= 0, and with the batch's "
                             "%d tokens fit an int)",
                             b->token_offset, n);
    for (int i = 0; i < n; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= c->n_vocab)
            return tsr_error_set(TSR_ERR_RANGE,
                                 "training batch: token id %d at %d is outside the vocabulary "
                                 "(0..%d)",
                                 (int)b->tokens[i], i, c->n_vocab - 1);
        if (b->weights && !(isfinite(b->weights[i]) && b->weights[i] >= 0.0f))
            return tsr_error_set(TSR_ERR_INVALID,
                                 "training batch: loss weight %g at %d (must be finite and >= 0)",
                                 (double)b->weights[i], i);
    }
    return TSR_OK;
}

/* The adapter must cover exactly this rank's layers and slice. */
/* Training needs the adapter's gradient and optimizer slabs. */
static tsr_status check_trainable(const tsr_lora_adapter *a) {
    if (a && !a->grad)
        return tsr_error_set(TSR_ERR_INVALID,
                             "LoRA adapter was made for inference only (no gradients): create it "
                             "with tsr_lora_adapter_init to train it");
    return TSR_OK;
}

static tsr_status check_adapter(const tsr_model *m, const tsr_lora_adapter *a) {
    if (!a)
        return TSR_OK;
    const tsr_model_slice *s = &m->slice, *q = &a->shard.slice;
    if (a->be != m->be || q->layer_begin != s->layer_begin || q->layer_end != s->layer_end ||
        q->head_begin != s->head_begin || q->n_head != s->n_head ||
        q->kv_head_begin != s->kv_head_begin || q->n_kv_head != s->n_kv_head ||
        q->ff_begin != s->ff_begin || q->n_ff != s->n_ff || a->mcfg.n_embd != m->cfg.n_embd ||
        a->mcfg.n_layer != m->cfg.n_layer)
        return tsr_error_set(TSR_ERR_INVALID,
                             "LoRA adapter was made for another shard or model than this rank's");
    return TSR_OK;
}

/* Validates b, uploads its metadata into the tape and counts its stats. */
static tsr_status tape_load(tsr_trainer *t, tsr_train_tape *tape, const tsr_train_batch *b,
                            int keep) {
    const tsr_model *m = t->m;
    TSR_TRY(check_batch(m, b));
    const int n = b->seq_start[b->n_seqs];
    TSR_TRY(tsr_backend_sync(m->be)); /* earlier uploads may still read the host copies */
    TSR_TRY(tape_reserve(t, tape, n, b->n_seqs, keep ? n_layers(m) + 1 : 2));
    tape->keep = keep; /* after tape_reserve, which may reset the tape */
    tape->n_tokens = n;
    tape->n_seqs = b->n_seqs;
    tape->has_output = tape->has_grad = 0;
    tape->dropout_key = b->dropout_key;
    tape->token_offset = b->token_offset;
    tsr_train_stats st = {0};
    st.n_tokens = n;
    for (int s = 0; s < b->n_seqs; s++) {
        for (int i = b->seq_start[s]; i < b->seq_start[s + 1]; i++) {
            const int last = i + 1 == b->seq_start[s + 1];
            const float w = b->weights ? b->weights[i] : 1.0f;
            tape->h_pos[i] = i - b->seq_start[s];
            tape->h_tok_seq[i] = s;
            tape->h_target[i] = last ? -1 : b->tokens[i + 1];
            tape->h_weight[i] = last ? 0.0f : w;
            if (!last) {
                st.weight_sum += w;
                st.n_loss_tokens += w != 0.0f;
            }
        }
    }
    tape->stats = st;
    tsr_backend *be = m->be;
    TSR_TRY(tsr_backend_to_device(be, tape->ids, b->tokens, (size_t)n * 4));
    TSR_TRY(tsr_backend_to_device(be, tape->pos, tape->h_pos, (size_t)n * 4));
    TSR_TRY(tsr_backend_to_device(be, tape->tok_seq, tape->h_tok_seq, (size_t)n * 4));
    TSR_TRY(tsr_backend_to_device(be, tape->target, tape->h_target, (size_t)n * 4));
    TSR_TRY(tsr_backend_to_device(be, tape->weight, tape->h_weight, (size_t)n * 4));
    TSR_TRY(tsr_backend_to_device(be, tape->seq_start, b->seq_start, ((size_t)b->n_seqs + 1) * 4));
    return tsr_backend_sync(be); /* the caller's arrays are read during the call only */
}

static tsr_attn_train_desc attn_desc(const tsr_trainer *t, const tsr_train_tape *tape) {
    const tsr_model *m = t->m;
    tsr_attn_train_desc d = {
        .n_tokens = tape->n_tokens,
        .n_seqs = tape->n_seqs,
        .n_head = m->slice.n_head,
        .n_kv_head = m->slice.n_kv_head,
        .head_dim = m->cfg.head_dim,
        .scale = 1.0f / sqrtf((float)m->cfg.head_dim),
        .seq_start = tape->seq_start,
        .tok_seq = tape->tok_seq,
    };
    return d;
}

/* ---- LoRA on one projection ---------------------------------------------------------- */

static const tsr_lora_matrix *lmat(const tsr_lora_adapter *a, int li, tsr_lora_target tg) {
    if (!a)
        return NULL;
    const tsr_lora_matrix *m = &a->mats[(size_t)li * TSR_LORA_N_TARGETS + tg];
    return m->present ? m : NULL;
}

/* 1 when the LoRA inputs of this tape's batch are dropped: an adapter with
 * dropout and a forward that keeps its inputs (training; evaluation never
 * drops). */
static int drops(const tsr_lora_adapter *a, const tsr_train_tape *tape) {
    return a && a->cfg.dropout > 0.0f && tape->keep;
}

/* Where target m's input block sits in the mask (runtime/model/lora.h). */
static tsr_lora_dropout_desc drop_desc(const tsr_lora_adapter *a, const tsr_train_tape *tape,
                                       const tsr_lora_matrix *m) {
    tsr_lora_dropout_desc d = {
        .p = a->cfg.dropout,
        .seed = a->cfg.seed,
        .key = tape->dropout_key,
        .layer = m->layer,
        .target = (int)m->target,
        .row0 = tape->token_offset,
        .col0 = m->in_begin,
    };
    return d;
}

/* y(n, n_out) += the LoRA delta of target tg on x (dropped first when the
 * tape's batch drops); keeps (dropped) x A^T in xa[tg]. */
static tsr_status lora_fwd(tsr_trainer *t, const tsr_lora_adapter *a, const tsr_train_tape *tape,
                           int li, tsr_lora_target tg, void *y, const void *x, int n) {
    const tsr_lora_matrix *m = lmat(a, li, tg);
    if (!m)
        return TSR_OK;
    tsr_backend *be = t->m->be;
    if (drops(a, tape)) {
        const tsr_lora_dropout_desc d = drop_desc(a, tape, m);
        TSR_TRY(tsr_backend_lora_dropout(be, t->ws.xd, x, n, m->n_in, &d, 0));
        x = t->ws.xd;
    }
    return tsr_backend_lora_fwd(be, y, x, m->A, m->B, t->ws.xa[tg], n, m->n_in, m->n_out,
                                a->cfg.rank, a->scale);
}

/* dA, dB += the LoRA gradients of target tg; dx += its input gradient. With
 * dropout, x is dropped again (the forward's mask) for dA, and the branch's
 * input gradient t A goes through the same mask before it joins dx. */
static tsr_status lora_bwd(tsr_trainer *t, const tsr_lora_adapter *a, const tsr_train_tape *tape,
                           int li, tsr_lora_target tg, void *dx, const void *dy, const void *x,
                           int n) {
    const tsr_lora_matrix *m = lmat(a, li, tg);
    if (!m)
        return TSR_OK;
    tsr_backend *be = t->m->be;
    tsr_train_ws *w = &t->ws;
    if (!drops(a, tape))
        return tsr_backend_lora_bwd(be, dx, m->dA, m->dB, dy, x, w->xa[tg], m->A, m->B, w->lt, n,
                                    m->n_in, m->n_out, a->cfg.rank, a->scale);
    const tsr_lora_dropout_desc d = drop_desc(a, tape, m);
    TSR_TRY(tsr_backend_lora_dropout(be, w->xd, x, n, m->n_in, &d, 0));
    if (dx)
        TSR_TRY(tsr_lora_fill_zero(be, w->dxd, (size_t)n * m->n_in * tsr_backend_act_size(be)));
    TSR_TRY(tsr_backend_lora_bwd(be, dx ? w->dxd : NULL, m->dA, m->dB, dy, w->xd, w->xa[tg], m->A,
                                 m->B, w->lt, n, m->n_in, m->n_out, a->cfg.rank, a->scale));
    return dx ? tsr_backend_lora_dropout(be, dx, w->dxd, n, m->n_in, &d, 1) : TSR_OK;
}

/* ---- one layer ------------------------------------------------------------------------ */

/* The forward of local layer li from x (n, C). With out, the whole layer
 * (out = its output; out != x); without, it stops where the backward needs
 * nothing more: after s = swiglu(gate, up) and the down target's x A^T.
 * Leaves h1, q, k, v (rotated), att, lse, x2, h2, gate, up, s and xa in the
 * scratch. */
static tsr_status layer_fwd(tsr_trainer *t, const tsr_lora_adapter *a, const tsr_train_tape *tape,
                            int li, int n, const tsr_attn_train_desc *ad, const int32_t *pos,
                            const void *x, void *out) {
    tsr_model *m = t->m;
    tsr_backend *be = m->be;
    const tsr_layer_weights *L = &m->layers[li];
    const tsr_model_config *c = &m->cfg;
    tsr_train_ws *w = &t->ws;
    const int C = c->n_embd, hd = c->head_dim, ff = m->slice.n_ff;
    const int qd = m->slice.n_head * hd, kvd = m->slice.n_kv_head * hd;
    const size_t bytes = (size_t)n * C * tsr_backend_act_size(be);

    TSR_TRY(tsr_backend_rmsnorm(be, w->h1, x, L->attn_norm, n, C, c->rms_eps));
    TSR_TRY(tsr_backend_matmul_exact(be, w->q, w->h1, &L->wq, n, 0));
    TSR_TRY(tsr_backend_matmul_exact(be, w->k, w->h1, &L->wk, n, 0));
    TSR_TRY(tsr_backend_matmul_exact(be, w->v, w->h1, &L->wv, n, 0));
    if (L->bq) {
        TSR_TRY(tsr_backend_add_bias(be, w->q, L->bq, n, qd));
        TSR_TRY(tsr_backend_add_bias(be, w->k, L->bk, n, kvd));
        TSR_TRY(tsr_backend_add_bias(be, w->v, L->bv, n, kvd));
    }
    TSR_TRY(lora_fwd(t, a, tape, li, TSR_LORA_Q, w->q, w->h1, n));
    TSR_TRY(lora_fwd(t, a, tape, li, TSR_LORA_K, w->k, w->h1, n));
    TSR_TRY(lora_fwd(t, a, tape, li, TSR_LORA_V, w->v, w->h1, n));
    TSR_TRY(tsr_backend_rope(be, w->q, pos, m->inv_freq, n, m->slice.n_head, hd));
    TSR_TRY(tsr_backend_rope(be, w->k, pos, m->inv_freq, n, m->slice.n_kv_head, hd));
    TSR_TRY(tsr_backend_attn_train_fwd(be, w->att, w->lse, w->q, w->k, w->v, ad));
    TSR_TRY(tsr_backend_matmul_exact(be, w->tmp, w->att, &L->wo, n, 0));
    TSR_TRY(lora_fwd(t, a, tape, li, TSR_LORA_O, w->tmp, w->att, n));
    TSR_TRY(act_allreduce(t, w->tmp, (size_t)n * C)); /* row-parallel O */
    TSR_TRY(tsr_backend_copy(be, w->x2, x, bytes));
    TSR_TRY(tsr_backend_add(be, w->x2, w->tmp, n, C));

    TSR_TRY(tsr_backend_rmsnorm(be, w->h2, w->x2, L->ffn_norm, n, C, c->rms_eps));
    TSR_TRY(tsr_backend_matmul_exact(be, w->gate, w->h2, &L->w_gate, n, 0));
    TSR_TRY(tsr_backend_matmul_exact(be, w->up, w->h2, &L->w_up, n, 0));
    TSR_TRY(lora_fwd(t, a, tape, li, TSR_LORA_GATE, w->gate, w->h2, n));
    TSR_TRY(lora_fwd(t, a, tape, li, TSR_LORA_UP, w->up, w->h2, n));
    TSR_TRY(tsr_backend_swiglu(be, w->s, w->gate, w->up, n, ff));
    if (!out) /* recompute: only x A^T of down is needed (tmp takes a throwaway delta) */
        return lora_fwd(t, a, tape, li, TSR_LORA_DOWN, w->tmp, w->s, n);
    TSR_TRY(tsr_backend_matmul_exact(be, w->tmp, w->s, &L->w_down, n, 0));
    TSR_TRY(lora_fwd(t, a, tape, li, TSR_LORA_DOWN, w->tmp, w->s, n));
    TSR_TRY(act_allreduce(t, w->tmp, (size_t)n * C)); /* row-parallel down */
    TSR_TRY(tsr_backend_copy(be, out, w->x2, bytes));
    return tsr_backend_add(be, out, w->tmp, n, C);
}

/* The backward of local layer li: x is its stored input, dx (n, C) holds
 * d(loss)/d(its output) on entry and d(loss)/d(x) on return. */
static tsr_status layer_bwd(tsr_trainer *t, tsr_lora_adapter *a, const tsr_train_tape *tape, int li,
                            int n, const tsr_attn_train_desc *ad, const int32_t *pos, const void *x,
                            void *dx) {
    tsr_model *m = t->m;
    tsr_backend *be = m->be;
    const tsr_layer_weights *L = &m->layers[li];
    const tsr_model_config *c = &m->cfg;
    tsr_train_ws *w = &t->ws;
    const int C = c->n_embd, hd = c->head_dim, ff = m->slice.n_ff;

    TSR_TRY(layer_fwd(t, a, tape, li, n, ad, pos, x, NULL)); /* recompute the internals */

    /* MLP: out = x2 + (s Wd^T + LoRA), s = silu(gate) * up */
    TSR_TRY(tsr_backend_matmul_dx(be, w->ds, dx, &L->w_down, n, 0));
    TSR_TRY(lora_bwd(t, a, tape, li, TSR_LORA_DOWN, w->ds, dx, w->s, n));
    TSR_TRY(
        tsr_backend_swiglu_bwd(be, w->gate, w->up, w->ds, w->gate, w->up, n, ff)); /* in place */
    TSR_TRY(tsr_backend_matmul_dx(be, w->dh, w->gate, &L->w_gate, n, 0));
    TSR_TRY(tsr_backend_matmul_dx(be, w->dh, w->up, &L->w_up, n, 1));
    TSR_TRY(lora_bwd(t, a, tape, li, TSR_LORA_GATE, w->dh, w->gate, w->h2, n));
    TSR_TRY(lora_bwd(t, a, tape, li, TSR_LORA_UP, w->dh, w->up, w->h2, n));
    TSR_TRY(act_allreduce(t, w->dh, (size_t)n * C)); /* column-parallel gate+up input */
    TSR_TRY(tsr_backend_rmsnorm_bwd(be, dx, w->dh, w->x2, L->ffn_norm, n, C, c->rms_eps)); /* += */

    /* attention: x2 = x + (att Wo^T + LoRA) */
    TSR_TRY(tsr_backend_matmul_dx(be, w->datt, dx, &L->wo, n, 0));
    TSR_TRY(lora_bwd(t, a, tape, li, TSR_LORA_O, w->datt, dx, w->att, n));
    TSR_TRY(tsr_backend_attn_train_bwd(be, w->dq, w->dk, w->dv, w->datt, w->q, w->k, w->v, w->att,
                                       w->lse, ad));
    TSR_TRY(tsr_backend_rope_bwd(be, w->dq, pos, m->inv_freq, n, m->slice.n_head, hd));
    TSR_TRY(tsr_backend_rope_bwd(be, w->dk, pos, m->inv_freq, n, m->slice.n_kv_head, hd));
    TSR_TRY(tsr_backend_matmul_dx(be, w->dh, w->dq, &L->wq, n, 0));
    TSR_TRY(tsr_backend_matmul_dx(be, w->dh, w->dk, &L->wk, n, 1));
    TSR_TRY(tsr_backend_matmul_dx(be, w->dh, w->dv, &L->wv, n, 1));
    TSR_TRY(lora_bwd(t, a, tape, li, TSR_LORA_Q, w->dh, w->dq, w->h1, n));
    TSR_TRY(lora_bwd(t, a, tape, li, TSR_LORA_K, w->dh, w->dk, w->h1, n));
    TSR_TRY(lora_bwd(t, a, tape, li, TSR_LORA_V, w->dh, w->dv, w->h1, n));
    TSR_TRY(act_allreduce(t, w->dh, (size_t)n * C)); /* column-parallel q+k+v input */
    return tsr_backend_rmsnorm_bwd(be, dx, w->dh, x, L->attn_norm, n, C, c->rms_eps); /* += */
}

/* ---- stage functions ------------------------------------------------------------------ */

tsr_status tsr_train_stage_forward(tsr_trainer *t, const tsr_lora_adapter *a, tsr_train_tape *tape,
                                   const tsr_train_batch *b, int keep, const void *hidden_in,
                                   void *hidden_out) {
    tsr_model *m = t->m;
    tsr_backend *be = m->be;
    const int C = m->cfg.n_embd, nl = n_layers(m);
    if (!m->first_stage && !hidden_in)
        return tsr_error_set(TSR_ERR_INVALID, "training forward: a later stage needs hidden_in");
    if (!m->last_stage && !hidden_out)
        return tsr_error_set(TSR_ERR_INVALID,
                             "training forward: a non-last stage needs hidden_out");
    TSR_TRY(check_adapter(m, a));
    TSR_TRY(tape_load(t, tape, b, keep));
    const int n = tape->n_tokens;
    TSR_TRY(ws_reserve(t, n, a ? a->cfg.rank : 1, drops(a, tape)));
    const size_t bytes = (size_t)n * C * tsr_backend_act_size(be);
    void *x0 = slot(t, tape, 0);
    if (m->first_stage) {
        TSR_TRY(tsr_backend_embedding(be, x0, &m->tok_embd, tape->ids, n, m->slice.vocab_begin));
        TSR_TRY(act_allreduce(t, x0, (size_t)n * C)); /* vocab-parallel: one rank had each row */
    } else {
        TSR_TRY(tsr_backend_copy(be, x0, hidden_in, bytes));
    }
    const tsr_attn_train_desc ad = attn_desc(t, tape);
    for (int li = 0; li < nl; li++)
        TSR_TRY(
            layer_fwd(t, a, tape, li, n, &ad, tape->pos, slot(t, tape, li), slot(t, tape, li + 1)));
    tape->has_output = 1;
    if (!m->last_stage)
        return tsr_backend_copy(be, hidden_out, slot(t, tape, nl), bytes);
    return TSR_OK;
}

tsr_status tsr_train_loss(tsr_trainer *t, tsr_train_tape *tape, int want_grad,
                          tsr_train_stats *out) {
    tsr_model *m = t->m;
    tsr_backend *be = m->be;
    tsr_train_ws *w = &t->ws;
    if (!m->last_stage)
        return tsr_error_set(TSR_ERR_INVALID, "training loss: only the last stage has the head");
    if (!tape->has_output)
        return tsr_error_set(TSR_ERR_INVALID, "training loss: the tape has no forward");
    const int n = tape->n_tokens, C = m->cfg.n_embd, Vl = m->slice.n_vocab;
    const size_t a = tsr_backend_act_size(be);
    const char *xo = slot(t, tape, n_layers(m));
    const int hr = t->cfg.head_rows < w->cap ? t->cfg.head_rows : w->cap;
    if (want_grad)
        TSR_TRY(tsr_lora_fill_zero(be, tape->dx, (size_t)n * C * a));
    /* Only the rows that carry loss (a target and a weight > 0: in chat data
     * the assistant's turns) go through the head: the others add nothing to
     * the loss and their gradient from it is 0, so they are left out instead
     * of computed and zeroed. Every TP rank picks the same rows (the batch is
     * the same on all). Chunks of hr gathered rows, copied in runs. */
    int nl = 0;
    for (int row = 0; row < n; row++)
        if (tape->h_target[row] >= 0 && tape->h_weight[row] != 0.0f)
            w->h_rows[nl++] = row;
    double loss = 0;
    for (int c0 = 0; c0 < nl; c0 += hr) {
        const int nc = nl - c0 < hr ? nl - c0 : hr;
        const int32_t *rows = w->h_rows + c0;
        float *rowmax = w->ce, *sumexp = w->ce + hr, *tlogit = sumexp + nc;
        for (int i = 0; i < nc;) { /* gather x's rows, a run at a time */
            int e = i + 1;
            while (e < nc && rows[e] == rows[e - 1] + 1)
                e++;
            TSR_TRY(tsr_backend_copy(be, (char *)w->xc + (size_t)i * C * a,
                                     xo + (size_t)rows[i] * C * a, (size_t)(e - i) * C * a));
            i = e;
        }
        for (int i = 0; i < nc; i++) {
            w->h_tc[i] = tape->h_target[rows[i]];
            w->h_wc[i] = tape->h_weight[rows[i]];
        }
        TSR_TRY(tsr_backend_to_device(be, w->tc, w->h_tc, (size_t)nc * sizeof(int32_t)));
        TSR_TRY(tsr_backend_to_device(be, w->wc, w->h_wc, (size_t)nc * sizeof(float)));
        TSR_TRY(tsr_backend_rmsnorm(be, w->hn, w->xc, m->out_norm, nc, C, m->cfg.rms_eps));
        TSR_TRY(tsr_backend_matmul_exact(be, w->logits, w->hn, &m->lm_head, nc, 0));
        TSR_TRY(tsr_backend_ce_rowmax(be, rowmax, w->logits, nc, Vl));
        TSR_TRY(f32_max(t, rowmax, (size_t)nc));
        TSR_TRY(tsr_backend_ce_sums(be, sumexp, tlogit, w->logits, rowmax, w->tc, nc, Vl,
                                    m->slice.vocab_begin));
        TSR_TRY(f32_sum(t, sumexp, (size_t)2 * nc)); /* sumexp and tlogit together */
        TSR_TRY(tsr_backend_to_host(be, w->ce_host, w->ce, ((size_t)hr + 2 * nc) * sizeof(float)));
        for (int i = 0; i < nc; i++) {
            const double wgt = w->h_wc[i];
            const double mx = w->ce_host[i], se = w->ce_host[hr + i], tl = w->ce_host[hr + nc + i];
            loss += wgt * (log(se) + mx - tl);
        }
        if (!want_grad)
            continue;
        /* d loss / d logits = w (softmax - onehot), in place */
        TSR_TRY(tsr_backend_ce_grad(be, w->logits, w->logits, rowmax, sumexp, w->tc, w->wc, nc, Vl,
                                    m->slice.vocab_begin));
        TSR_TRY(tsr_backend_matmul_dx(be, w->dhn, w->logits, &m->lm_head, nc, 0));
        TSR_TRY(act_allreduce(t, w->dhn, (size_t)nc * C)); /* vocab-parallel head input */
        TSR_TRY(tsr_lora_fill_zero(be, w->dxc, (size_t)nc * C * a));
        TSR_TRY(tsr_backend_rmsnorm_bwd(be, w->dxc, w->dhn, w->xc, m->out_norm, nc, C,
                                        m->cfg.rms_eps)); /* += */
        for (int i = 0; i < nc;) { /* scatter the gradient back, a run at a time */
            int e = i + 1;
            while (e < nc && rows[e] == rows[e - 1] + 1)
                e++;
            TSR_TRY(tsr_backend_copy(be, (char *)tape->dx + (size_t)rows[i] * C * a,
                                     (const char *)w->dxc + (size_t)i * C * a,
                                     (size_t)(e - i) * C * a));
            i = e;
        }
    }
    tape->stats.loss = loss;
    tape->has_grad = want_grad;
    if (out)
        *out = tape->stats;
    return TSR_OK;
}

/* Back to partial sums after tsr_train_reduce_grads: the owner keeps the
 * full sum, the other copies become 0. */
static tsr_status unreduce(tsr_lora_adapter *a) {
    if (!a->grads_reduced)
        return TSR_OK;
    if (a->repl_n && a->shard.tp_rank != 0)
        TSR_TRY(tsr_lora_fill_zero(a->be, a->grad + a->repl_off, a->repl_n * sizeof(float)));
    if (a->shared_n && a->shard.tp_rank % a->shard.kv_share != 0)
        TSR_TRY(tsr_lora_fill_zero(a->be, a->grad + a->shared_off, a->shared_n * sizeof(float)));
    a->grads_reduced = 0;
    return TSR_OK;
}

tsr_status tsr_train_stage_backward(tsr_trainer *t, tsr_lora_adapter *a, tsr_train_tape *tape,
                                    const void *dhidden_out, void *dhidden_in) {
    tsr_model *m = t->m;
    tsr_backend *be = m->be;
    const int n = tape->n_tokens, C = m->cfg.n_embd;
    const size_t bytes = (size_t)n * C * tsr_backend_act_size(be);
    if (!a)
        return tsr_error_set(TSR_ERR_INVALID, "training backward: no adapter");
    TSR_TRY(check_adapter(m, a));
    TSR_TRY(check_trainable(a));
    if (!tape->has_output || !tape->keep)
        return tsr_error_set(TSR_ERR_INVALID,
                             "training backward: the tape has no forward that kept its inputs");
    if (m->last_stage && (dhidden_out || !tape->has_grad))
        return tsr_error_set(TSR_ERR_INVALID,
                             "training backward: the last stage starts from tsr_train_loss's "
                             "gradient");
    if (!m->last_stage && !dhidden_out)
        return tsr_error_set(TSR_ERR_INVALID,
                             "training backward: a non-last stage needs dhidden_out");
    if (!m->first_stage && !dhidden_in)
        return tsr_error_set(TSR_ERR_INVALID,
                             "training backward: a non-first stage needs dhidden_in");
    if (dhidden_out)
        TSR_TRY(tsr_backend_copy(be, tape->dx, dhidden_out, bytes));
    TSR_TRY(unreduce(a));
    TSR_TRY(ws_reserve(t, n, a->cfg.rank, drops(a, tape)));
    const tsr_attn_train_desc ad = attn_desc(t, tape);
    for (int li = n_layers(m) - 1; li >= 0; li--)
        TSR_TRY(layer_bwd(t, a, tape, li, n, &ad, tape->pos, slot(t, tape, li), tape->dx));
    if (dhidden_in)
        TSR_TRY(tsr_backend_copy(be, dhidden_in, tape->dx, bytes));
    tape->has_grad = 0;
    a->loss_sum += tape->stats.loss;
    a->weight_sum += tape->stats.weight_sum;
    a->n_loss_tokens += tape->stats.n_loss_tokens;
    a->n_tokens += tape->stats.n_tokens;
    a->n_batches++;
    return TSR_OK;
}

/* ---- pp = 1 --------------------------------------------------------------------------- */

tsr_status tsr_train_forward_backward(tsr_trainer *t, tsr_lora_adapter *a, const tsr_train_batch *b,
                                      tsr_train_stats *out) {
    if (!t->m->first_stage || !t->m->last_stage)
        return tsr_error_set(TSR_ERR_INVALID,
                             "forward_backward: the model must hold every layer (pp = 1); "
                             "pipeline stages use the stage functions");
    if (!a)
        return tsr_error_set(TSR_ERR_INVALID, "forward_backward: no adapter");
    TSR_TRY(tsr_train_stage_forward(t, a, &t->tape, b, 1, NULL, NULL));
    TSR_TRY(tsr_train_loss(t, &t->tape, 1, NULL));
    TSR_TRY(tsr_train_stage_backward(t, a, &t->tape, NULL, NULL));
    if (out)
        *out = t->tape.stats;
    return TSR_OK;
}

tsr_status tsr_train_forward(tsr_trainer *t, const tsr_lora_adapter *a, const tsr_train_batch *b,
                             tsr_train_stats *out) {
    if (!t->m->first_stage || !t->m->last_stage)
        return tsr_error_set(TSR_ERR_INVALID,
                             "forward: the model must hold every layer (pp = 1); pipeline "
                             "stages use the stage functions");
    TSR_TRY(tsr_train_stage_forward(t, a, &t->eval, b, 0, NULL, NULL));
    return tsr_train_loss(t, &t->eval, 0, out);
}

/* ---- gradients and the optimizer ---------------------------------------------------- */

/* B of k/v shared by kv_share ranks: summed over TP in a buffer with every
 * KV head's rows, each rank filling its own head's rows. */
static tsr_status reduce_shared(tsr_trainer *t, tsr_lora_adapter *a) {
    tsr_backend *be = a->be;
    const size_t r = (size_t)a->cfg.rank;
    const size_t full = (size_t)a->mcfg.n_head_kv * a->mcfg.head_dim * r;
    size_t n_mats = 0;
    for (int i = 0; i < a->n_layers * TSR_LORA_N_TARGETS; i++)
        n_mats += a->mats[i].present && a->mats[i].b_shared;
    float *buf = NULL;
    tsr_status st;
    TSR_CHECK_GOTO(
        st, tsr_backend_alloc(be, n_mats * full * sizeof(float), "LoRA reduction", (void **)&buf));
    TSR_CHECK_GOTO(st, tsr_lora_fill_zero(be, buf, n_mats * full * sizeof(float)));
    for (int pass = 0; pass < 2; pass++) {
        size_t j = 0;
        for (int i = 0; i < a->n_layers * TSR_LORA_N_TARGETS; i++) {
            const tsr_lora_matrix *mm = &a->mats[i];
            if (!mm->present || !mm->b_shared)
                continue;
            float *dst = buf + j * full + (size_t)mm->out_begin * r;
            size_t b = (size_t)mm->n_out * r * sizeof(float);
            if (pass == 0)
                TSR_CHECK_GOTO(st, tsr_backend_copy(be, dst, mm->dB, b));
            else
                TSR_CHECK_GOTO(st, tsr_backend_copy(be, mm->dB, dst, b));
            j++;
        }
        if (pass == 0)
            TSR_CHECK_GOTO(st, f32_sum(t, buf, n_mats * full));
    }
    st = tsr_backend_sync(be);
cleanup:
    tsr_backend_free(be, buf);
    return st;
}

tsr_status tsr_train_reduce_grads(tsr_trainer *t, tsr_lora_adapter *a) {
    TSR_TRY(check_trainable(a));
    if (a->grads_reduced)
        return TSR_OK;
    if (a->shard.tp_size > 1) {
        if (!t->comm.allreduce_sum)
            return tsr_error_set(TSR_ERR_INVALID,
                                 "LoRA gradients over tp=%d need the TP all-reduce hook",
                                 a->shard.tp_size);
        TSR_TRY(f32_sum(t, a->grad + a->repl_off, a->repl_n));
        if (a->shared_n)
            TSR_TRY(reduce_shared(t, a));
    }
    a->grads_reduced = 1;
    return TSR_OK;
}

/* Zeroes the gradients and the accumulators (a refused or finished step). */
static tsr_status clear(tsr_lora_adapter *a) {
    tsr_lora_reset_accum(a);
    return tsr_lora_zero_grads(a);
}

static tsr_status check_optim(const tsr_optim_params *p) { return tsr_train_check_optim(p); }

tsr_status tsr_train_check_optim(const tsr_optim_params *p) {
    const tsr_adamw_params *h = &p->adamw;
    if (!(isfinite(h->lr) && h->lr >= 0) || !(h->beta1 >= 0 && h->beta1 < 1) ||
        !(h->beta2 >= 0 && h->beta2 < 1) || !(isfinite(h->eps) && h->eps > 0) ||
        !(isfinite(h->weight_decay) && h->weight_decay >= 0) ||
        !(isfinite(p->max_grad_norm) && p->max_grad_norm >= 0))
        return tsr_error_set(TSR_ERR_INVALID,
                             "optimizer: lr %g, betas (%g, %g), eps %g, weight decay %g, max grad "
                             "norm %g: lr, weight decay and max norm must be finite and >= 0, "
                             "betas in [0, 1), eps > 0",
                             (double)h->lr, (double)h->beta1, (double)h->beta2, (double)h->eps,
                             (double)h->weight_decay, (double)p->max_grad_norm);
    return TSR_OK;
}

tsr_status tsr_train_optim_step(tsr_trainer *t, tsr_lora_adapter *a, const tsr_optim_params *p,
                                tsr_optim_result *out) {
    tsr_backend *be = a->be;
    TSR_TRY(check_optim(p));
    TSR_TRY(check_adapter(t->m, a));
    TSR_TRY(check_trainable(a));
    if ((a->shard.tp_size > 1 || !t->m->first_stage || !t->m->last_stage) && !t->comm.world_sum)
        return tsr_error_set(TSR_ERR_INVALID,
                             "optimizer: the adapter is split over ranks but there is no "
                             "world_sum hook for the gradient norm");
    TSR_TRY(tsr_train_reduce_grads(t, a));
    /* [0] sum of squares (each copy counted once), [1] ranks with a non-finite
     * loss, [2] the loss sum (counted on one TP rank of the last stage) */
    double g[3] = {0, !isfinite(a->loss_sum), 0}, s;
    if (a->repl_n && a->shard.tp_rank == 0) {
        TSR_TRY(tsr_backend_sumsq(be, &s, a->grad + a->repl_off, a->repl_n));
        g[0] += s;
    }
    if (a->shared_n && a->shard.tp_rank % a->shard.kv_share == 0) {
        TSR_TRY(tsr_backend_sumsq(be, &s, a->grad + a->shared_off, a->shared_n));
        g[0] += s;
    }
    if (a->local_n) {
        TSR_TRY(tsr_backend_sumsq(be, &s, a->grad + a->local_off, a->local_n));
        g[0] += s;
    }
    if (t->m->last_stage && a->shard.tp_rank == 0)
        g[2] = isfinite(a->loss_sum) ? a->loss_sum : 0;
    if (t->comm.world_sum)
        TSR_TRY(t->comm.world_sum(t->comm.ctx, g, 3));
    const double W = a->weight_sum;
    const long n_loss = a->n_loss_tokens;
    if (g[1] != 0 || !isfinite(g[0])) {
        const int bad_loss = g[1] != 0;
        TSR_TRY(clear(a));
        return tsr_error_set(TSR_ERR_RANGE,
                             "non-finite %s since the last step: the step was refused and the "
                             "adapter keeps its last good state",
                             bad_loss ? "loss" : "gradient norm");
    }
    if (!(W > 0)) {
        TSR_TRY(clear(a));
        return tsr_error_set(TSR_ERR_INVALID,
                             "optimizer: no position carried loss since the last step (weight "
                             "sum %g)",
                             W);
    }
    const double norm = sqrt(g[0]) / W;
    double coef = 1.0;
    if (p->max_grad_norm > 0) {
        double c = p->max_grad_norm / (norm + 1e-6); /* torch.nn.utils.clip_grad_norm_ */
        if (c < 1.0)
            coef = c;
    }
    TSR_TRY(tsr_backend_scale_f32(be, a->grad, a->n_params, (float)(coef / W)));
    TSR_TRY(
        tsr_backend_adamw(be, a->param, a->grad, a->m, a->v, a->n_params, &p->adamw, a->step + 1));
    a->step++;
    TSR_TRY(clear(a));
    if (out) {
        out->step = a->step;
        out->grad_norm = norm;
        out->loss = g[2] / W;
        out->weight_sum = W;
        out->n_loss_tokens = n_loss;
    }
    return TSR_OK;
}
