/* runtime/server/scheduler.c - continuous batching over the engine. */
#include "runtime/server/scheduler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "runtime/sample/stop_text.h"

typedef struct {
    tsr_gen_request *req; /* NULL: the slot is free */
    int n_fed;            /* prompt tokens already in the cache */
    int pos;              /* positions filled */
    int32_t next;         /* sampled token still to be fed (decode) */
    int has_next;
    int n_completion;
    int reserved; /* KV blocks reserved for the worst case */
    int greedy;   /* argmax without logits suffices */
    int cand_k;   /* candidates a row needs (tsr_sampler_candidates_needed); 0: the
                             whole row of logits, or row_top */
    int row_top;  /* top_k off: ROW_TOP_K candidates and the row's normaliser
                             (tsr_sampler_row_top_ok), the whole row when they do not do */
    int adapter;  /* engine adapter slot, -1 = the base model (or serve --adapter) */
    tsr_sampler smp;
    tsr_detok_stream ds;
    tsr_stop_text stops;
    double t_first_step, t_first_token;
    double t_last_token; /* when the previous token was sampled (inter-token latency) */
} seq_state;

struct tsr_scheduler {
    tsr_engine *e;
    const tsr_tokenizer_t *tok;
    tsr_request_queue *q;
    tsr_server_stats *stats;
    tsr_metrics *mx; /* NULL: no metrics */
    tsr_sched_config cfg;
    tsr_adapters_t *adapters;
    int max_seqs, ctx, block_size, total_blocks, reserved_blocks;
    seq_state *seqs;
    tsr_gen_request **waiting; /* FIFO, admitted in order */
    int n_waiting, cap_waiting;
    int32_t *release; /* slots to free with the next step */
    int n_release;
    int32_t *eog; /* end-of-generation ids, banned before min_tokens */
    int n_eog;
    /* step buffers */
    int32_t *tokens, *pos, *seq, *rows, *row_slot, *argmax;
    int cap_tokens;
    int32_t *perm, *segs; /* grouping a step's tokens by adapter: (cap_tokens), (3 * (slots + 1)) */
    float *logits;
    size_t cap_logits;
    long steps_by_kind[4]; /* engine steps run, by tsr_out_kind */
    float *cand_val;       /* TSR_OUT_TOPK steps: (n_out, top_k) candidates */
    int32_t *cand_id;
    size_t cap_cand;
    tsr_row_draw *draw; /* TSR_OUT_TOPK steps: (n_out) how each row is drawn */
    float *expsum;      /* (n_out, 2) */
    int32_t *whole;     /* (n_out) */
    int cap_draw;
    long rows_by_path[4]; /* sampled rows: candidates, row-top, row-top sent whole, whole */
};

/* Candidates a top_k-off row brings: its nucleus usually lies within them;
 * when it does not, the last stage sends the whole row instead. 128: on the
 * default model's logits (bench/tsr_bench_sampling) 64 leave 5-32% of rows
 * whole at T 0.7-1.3, 128 1-22%, 256 0-18% at twice the device rounds. */
#define ROW_TOP_K 128

/* ---- events ---- */

static void post_chunk(tsr_gen_request *r, const int32_t *tokens, int n, const float *lp,
                       const tsr_top_logprob *top, int n_top, const char *text, size_t len) {
    tsr_gen_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        return; /* the final event still tells the client how it ended */
    ev->kind = TSR_EV_CHUNK;
    ev->n_tokens = n;
    ev->tokens = malloc((size_t)(n ? n : 1) * sizeof *ev->tokens);
    ev->text = malloc(len + 1);
    if (lp) {
        ev->logprobs = malloc((size_t)(n ? n : 1) * sizeof *ev->logprobs);
        if (ev->logprobs)
            memcpy(ev->logprobs, lp, (size_t)n * sizeof *lp);
    }
    if (top && n_top > 0) {
        ev->top = malloc((size_t)n * n_top * sizeof *ev->top);
        if (ev->top) {
            memcpy(ev->top, top, (size_t)n * n_top * sizeof *top);
            ev->n_top = n_top;
        }
    }
    if (!ev->tokens || !ev->text) {
        tsr_gen_event_free(ev);
        return;
    }
    memcpy(ev->tokens, tokens, (size_t)n * sizeof *tokens);
    memcpy(ev->text, text, len);
    ev->text[len] = '\0';
    ev->text_len = len;
    tsr_gen_request_post(r, ev);
}

static void post_final_code(tsr_scheduler_t *sc, tsr_gen_request *r, tsr_fin_reason why,
                            const seq_state *s, const char *error, int code);

static void post_final(tsr_scheduler_t *sc, tsr_gen_request *r, tsr_fin_reason why,
                       const seq_state *s, const char *error) {
    post_final_code(sc, r, why, s, error, 0);
}

/* code != 0: the call ends with that gRPC status instead of a final message. */
static void post_final_code(tsr_scheduler_t *sc, tsr_gen_request *r, tsr_fin_reason why,
                            const seq_state *s, const char *error, int code) {
    tsr_gen_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        return;
    double now = tsr_now_s();
    ev->kind = TSR_EV_FINAL;
    ev->finish = why;
    ev->prompt_tokens = r->n_prompt;
    ev->completion_tokens = s ? s->n_completion : 0;
    ev->queued_s = (s && s->t_first_step > 0 ? s->t_first_step : now) - r->t_arrival;
    ev->ttft_s = s && s->t_first_token > 0 ? s->t_first_token - r->t_arrival : 0;
    ev->total_s = now - r->t_arrival;
    if (error)
        snprintf(ev->error, sizeof ev->error, "%s", error);
    ev->status_code = code;
    if (sc->mx) {
        if (why >= TSR_FIN_STOP && why <= TSR_FIN_ERROR)
            tsr_metric_inc(sc->mx->finished[why - 1], 1);
        tsr_metric_observe(sc->mx->queue_time, ev->queued_s);
        tsr_metric_observe(sc->mx->request_duration, ev->total_s);
    }
    tsr_gen_request_post(r, ev);
}

/* ---- slots ---- */

static int blocks_for(const tsr_scheduler_t *s, int positions) {
    return (positions + s->block_size - 1) / s->block_size;
}

static void finish_seq(tsr_scheduler_t *s, int slot, tsr_fin_reason why, const char *error) {
    seq_state *q = &s->seqs[slot];
    if (!q->req)
        return;
    /* text held back for stop strings is final now, unless a stop string ended it */
    if (why == TSR_FIN_LENGTH || why == TSR_FIN_STOP) {
        const char *txt, *out;
        size_t tl, ol;
        int stopped = 0;
        if (tsr_detok_stream_flush(&q->ds, &txt, &tl) == TSR_OK &&
            tsr_stop_text_push(&q->stops, txt, tl, &out, &ol, &stopped) == TSR_OK && ol)
            post_chunk(q->req, NULL, 0, NULL, NULL, 0, out, ol);
        if (!stopped) {
            tsr_stop_text_flush(&q->stops, &out, &ol);
            if (ol)
                post_chunk(q->req, NULL, 0, NULL, NULL, 0, out, ol);
        }
    }
    post_final(s, q->req, why, q, error);
    tsr_adapters_hold(s->adapters, q->adapter, -1);
    tsr_gen_request_release(q->req);
    tsr_sampler_free(&q->smp);
    tsr_detok_stream_free(&q->ds);
    tsr_stop_text_free(&q->stops);
    s->reserved_blocks -= q->reserved;
    memset(q, 0, sizeof *q);
    s->release[s->n_release++] = slot; /* blocks return with the next step */
}

static int is_stop_id(const tsr_gen_request *r, int32_t t) {
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == t)
            return 1;
    return 0;
}

/* Admits the oldest waiting requests while slots and KV space allow. */
static void admit(tsr_scheduler_t *s) {
    int i = 0;
    while (i < s->n_waiting) {
        tsr_gen_request *r = s->waiting[i];
        if (atomic_load(&r->cancelled) || (r->deadline > 0 && tsr_now_s() > r->deadline)) {
            post_final(s, r, TSR_FIN_CANCELLED, NULL, NULL);
            tsr_gen_request_release(r);
            memmove(s->waiting + i, s->waiting + i + 1,
                    (size_t)(s->n_waiting - i - 1) * sizeof *s->waiting);
            s->n_waiting--;
            continue;
        }
        int ad = -1;
        if (r->adapter[0] && (ad = tsr_adapters_find(s->adapters, r->adapter)) < 0) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "no adapter named '%.64s' (CreateAdapter or LoadAdapter it first; "
                     "ListAdapters shows what exists)",
                     r->adapter);
            post_final_code(s, r, TSR_FIN_ERROR, NULL, msg, 5 /* NOT_FOUND */);
            tsr_gen_request_release(r);
            memmove(s->waiting + i, s->waiting + i + 1,
                    (size_t)(s->n_waiting - i - 1) * sizeof *s->waiting);
            s->n_waiting--;
            continue;
        }
        int slot = -1;
        for (int k = 0; k < s->max_seqs && slot < 0; k++)
            if (!s->seqs[k].req)
                slot = k;
        int worst = r->n_prompt + r->max_tokens;
        if (worst > s->ctx)
            worst = s->ctx;
        int need = blocks_for(s, worst);
        if (slot < 0 || s->reserved_blocks + need > s->total_blocks)
            break; /* FIFO: later requests wait behind this one */
        seq_state *q = &s->seqs[slot];
        memset(q, 0, sizeof *q);
        if (tsr_sampler_init(&q->smp, &r->sampling, s->e->mcfg.n_vocab) != TSR_OK ||
            tsr_sampler_accept(&q->smp, r->prompt, (size_t)r->n_prompt) != TSR_OK) {
            tsr_sampler_free(&q->smp);
            post_final(s, r, TSR_FIN_ERROR, NULL, tsr_error_msg());
            tsr_gen_request_release(r);
        } else {
            q->req = r;
            q->adapter = ad;
            tsr_adapters_hold(s->adapters, ad, +1);
            q->reserved = need;
            s->reserved_blocks += need;
            if (s->mx)
                tsr_metric_inc(s->mx->prompt_tokens, (uint64_t)r->n_prompt);
            const tsr_sampling_params *p = &r->sampling;
            q->greedy = p->temperature == 0 && p->repetition_penalty == 1.0f &&
                        p->frequency_penalty == 0 && p->presence_penalty == 0 &&
                        r->min_tokens == 0 && !r->ignore_eos && !r->logprobs;
            /* candidates: the sampler's need, plus the end-of-generation
             * tokens it may have to skip (min_tokens, ignore_eos) */
            const int bans = r->min_tokens > 0 || r->ignore_eos ? s->n_eog : 0;
            const int want = r->logprobs || s->cfg.host_sampling
                                 ? 0
                                 : tsr_sampler_candidates_needed(p, TSR_TOPK_MAX - bans);
            q->cand_k = want > 0 && want + bans <= TSR_TOPK_MAX ? want + bans : 0;
            q->row_top = !r->logprobs && !s->cfg.host_sampling && !bans &&
                         tsr_sampler_row_top_ok(p) && tsr_backend_has_row_expsum(s->e->be);
            tsr_detok_stream_init(&q->ds, s->tok, TSR_DETOK_SKIP_SPECIAL);
            tsr_stop_text_init(&q->stops, (const char *const *)r->stop, (size_t)r->n_stop);
        }
        memmove(s->waiting + i, s->waiting + i + 1,
                (size_t)(s->n_waiting - i - 1) * sizeof *s->waiting);
        s->n_waiting--;
    }
}

/* ---- public ---- */

tsr_status tsr_scheduler_create(tsr_engine *e, const tsr_tokenizer_t *tok, tsr_request_queue *q,
                                tsr_server_stats *stats, const tsr_sched_config *cfg,
                                tsr_scheduler_t **out) {
    *out = NULL;
    tsr_scheduler_t *s = calloc(1, sizeof *s);
    if (!s)
        return tsr_error_set(TSR_ERR_NOMEM, "scheduler: out of memory");
    s->e = e;
    s->tok = tok;
    s->q = q;
    s->stats = stats;
    s->cfg = *cfg;
    s->mx = cfg->metrics;
    if (!tsr_backend_has_topk(e->be)) /* every rank runs the same backend as rank 0 */
        s->cfg.host_sampling = 1;
    if (s->cfg.max_batch_tokens <= 0)
        s->cfg.max_batch_tokens = 512;
    if (s->cfg.idle_wait_s <= 0)
        s->cfg.idle_wait_s = 0.05;
    s->max_seqs = e->kv.max_seqs;
    s->ctx = e->kv.max_ctx;
    s->block_size = e->kv.block_size;
    s->total_blocks = e->kv.n_blocks;
    const int V = e->mcfg.n_vocab;
    s->seqs = calloc((size_t)s->max_seqs, sizeof *s->seqs);
    s->release = malloc((size_t)s->max_seqs * 2 * sizeof *s->release);
    s->eog = malloc((size_t)V * sizeof *s->eog);
    if (!s->seqs || !s->release || !s->eog) {
        tsr_scheduler_free(s);
        return tsr_error_set(TSR_ERR_NOMEM, "scheduler: out of memory");
    }
    for (int32_t t = 0; t < V; t++)
        if (tsr_tokenizer_is_eog(tok, t))
            s->eog[s->n_eog++] = t;
    s->segs = malloc(3 * ((size_t)TSR_ENGINE_MAX_ADAPTERS + 1) * sizeof *s->segs);
    tsr_status st = s->segs
                        ? tsr_adapters_create(e, cfg->base_model, cfg->adapter_memory, &s->adapters)
                        : tsr_error_set(TSR_ERR_NOMEM, "scheduler: out of memory");
    if (st != TSR_OK) {
        tsr_scheduler_free(s);
        return st;
    }
    atomic_store(&stats->kv_blocks_total, s->total_blocks);
    atomic_store(&stats->kv_block_size, s->block_size);
    if (s->mx)
        tsr_metric_set(s->mx->kv_blocks_total, s->total_blocks);
    *out = s;
    return TSR_OK;
}

void tsr_scheduler_cancel_all(tsr_scheduler_t *s) {
    for (int k = 0; k < s->max_seqs; k++)
        finish_seq(s, k, TSR_FIN_CANCELLED, NULL);
    for (int i = 0; i < s->n_waiting; i++) {
        post_final(s, s->waiting[i], TSR_FIN_CANCELLED, NULL, NULL);
        tsr_gen_request_release(s->waiting[i]);
    }
    s->n_waiting = 0;
    tsr_ctl_request *c;
    while ((c = tsr_request_queue_pop_ctl(s->q))) {
        tsr_ctl_request_finish(c, 14 /* UNAVAILABLE */, "the server is shutting down");
        tsr_ctl_request_release(c);
    }
    tsr_gen_request *r[64];
    int n;
    while ((n = tsr_request_queue_pop(s->q, r, 64, 0)) > 0)
        for (int i = 0; i < n; i++) {
            post_final(s, r[i], TSR_FIN_CANCELLED, NULL, NULL);
            tsr_gen_request_release(r[i]);
        }
}

void tsr_scheduler_free(tsr_scheduler_t *s) {
    if (!s)
        return;
    if (s->seqs)
        tsr_scheduler_cancel_all(s);
    free(s->seqs);
    free(s->waiting);
    free(s->release);
    free(s->eog);
    free(s->tokens);
    free(s->perm);
    free(s->segs);
    free(s->logits);
    free(s->cand_val);
    free(s->cand_id);
    free(s->draw);
    free(s->expsum);
    free(s->whole);
    tsr_adapters_free(s->adapters);
    free(s);
}

int tsr_scheduler_pending(const tsr_scheduler_t *s) {
    int n = s->n_waiting + tsr_request_queue_len(s->q);
    for (int k = 0; k < s->max_seqs; k++)
        n += s->seqs[k].req != NULL;
    return n;
}

static tsr_status grow_step(tsr_scheduler_t *s, int n) {
    if (n <= s->cap_tokens)
        return TSR_OK;
    free(s->tokens);
    free(s->perm);
    s->tokens = malloc((size_t)n * 6 * sizeof *s->tokens);
    s->perm = malloc((size_t)n * 4 * sizeof *s->perm);
    if (!s->tokens || !s->perm)
        return tsr_error_set(TSR_ERR_NOMEM, "scheduler: out of memory");
    s->pos = s->tokens + n;
    s->seq = s->pos + n;
    s->rows = s->seq + n;
    s->row_slot = s->rows + n;
    s->argmax = s->row_slot + n;
    s->cap_tokens = n;
    return TSR_OK;
}

/* log-softmax of one row, for logprobs */
static double log_sum_exp(const float *l, int n) {
    float mx = l[0];
    for (int i = 1; i < n; i++)
        if (l[i] > mx)
            mx = l[i];
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)l[i] - mx);
    return mx + log(sum);
}

/* After a step: the sequence in `slot` got token `tok` (and maybe logits). */
static void accept_token(tsr_scheduler_t *s, int slot, int32_t tok, const float *logits) {
    seq_state *q = &s->seqs[slot];
    tsr_gen_request *r = q->req;
    const int V = s->e->mcfg.n_vocab;
    double now = tsr_now_s();
    if (q->t_first_token == 0) {
        q->t_first_token = now;
        if (s->mx)
            tsr_metric_observe(s->mx->time_to_first_token, now - r->t_arrival);
    } else if (s->mx) {
        tsr_metric_observe(s->mx->inter_token, now - q->t_last_token);
    }
    q->t_last_token = now;
    if (!r->ignore_eos && (tsr_tokenizer_is_eog(s->tok, tok) || is_stop_id(r, tok))) {
        finish_seq(s, slot, TSR_FIN_STOP, NULL);
        return;
    }
    q->n_completion++;
    if (s->mx)
        tsr_metric_inc(s->mx->generated_tokens, 1);
    tsr_sampler_accept(&q->smp, &tok, 1);
    float lp = 0;
    tsr_top_logprob top[20];
    int n_top = 0;
    if (r->logprobs && logits) {
        double lse = log_sum_exp(logits, V);
        lp = (float)(logits[tok] - lse);
        /* the top alternatives by a partial selection */
        for (int k = 0; k < r->top_logprobs && k < 20; k++) {
            int best = -1;
            for (int t = 0; t < V; t++) {
                int taken = 0;
                for (int j = 0; j < n_top; j++)
                    taken |= top[j].token_id == t;
                if (!taken && (best < 0 || logits[t] > logits[best]))
                    best = t;
            }
            top[n_top].token_id = best;
            top[n_top++].logprob = (float)(logits[best] - lse);
        }
    }
    const char *txt, *out;
    size_t tl, ol;
    int stopped = 0;
    if (tsr_detok_stream_push(&q->ds, tok, &txt, &tl) != TSR_OK ||
        tsr_stop_text_push(&q->stops, txt, tl, &out, &ol, &stopped) != TSR_OK) {
        finish_seq(s, slot, TSR_FIN_ERROR, tsr_error_msg());
        return;
    }
    post_chunk(r, &tok, 1, r->logprobs ? &lp : NULL, n_top ? top : NULL, n_top, out, ol);
    if (stopped) {
        finish_seq(s, slot, TSR_FIN_STOP, NULL);
        return;
    }
    /* the next token would go to position q->pos */
    if (q->n_completion >= r->max_tokens || q->pos >= s->ctx) {
        finish_seq(s, slot, TSR_FIN_LENGTH, NULL);
        return;
    }
    q->next = tok;
    q->has_next = 1;
}

/* Orders the step's n tokens by adapter (stably, so each sequence's tokens
 * keep their order) and writes the row segments (begin, end, slot) into
 * s->segs; the output rows follow their tokens. Returns the number of
 * segments, 0 when every token is for the base model (the step then takes
 * the plain path, CUDA graphs included). */
static int group_by_adapter(tsr_scheduler_t *s, int n, int n_out) {
    int any = 0;
    for (int i = 0; i < n && !any; i++)
        any = s->seqs[s->seq[i]].adapter >= 0;
    if (!any)
        return 0;
    int32_t *perm = s->perm, *inv = s->perm + n, *tmp = s->perm + 2 * n;
    int n_seg = 0, m = 0;
    for (int slot = -1; slot < TSR_ENGINE_MAX_ADAPTERS; slot++) {
        int begin = m;
        for (int i = 0; i < n; i++)
            if (s->seqs[s->seq[i]].adapter == slot)
                perm[m++] = i;
        if (m > begin) {
            s->segs[3 * n_seg] = begin;
            s->segs[3 * n_seg + 1] = m;
            s->segs[3 * n_seg + 2] = slot;
            n_seg++;
        }
    }
    for (int j = 0; j < n; j++)
        inv[perm[j]] = j;
    int32_t *arrays[3] = {s->tokens, s->pos, s->seq};
    for (int a = 0; a < 3; a++) {
        for (int j = 0; j < n; j++)
            tmp[j] = arrays[a][perm[j]];
        memcpy(arrays[a], tmp, (size_t)n * sizeof *tmp);
    }
    for (int o = 0; o < n_out; o++)
        s->rows[o] = inv[s->rows[o]];
    return n_seg;
}

/* What GetServerInfo and the metrics report: the running batch, the
 * requests waiting, the KV blocks in use. */
static void publish(tsr_scheduler_t *s) {
    int active = 0;
    for (int k = 0; k < s->max_seqs; k++)
        active += s->seqs[k].req != NULL;
    int queued = s->n_waiting + tsr_request_queue_len(s->q);
    int kv_used = tsr_kv_cache_used_blocks(&s->e->kv);
    atomic_store(&s->stats->active, active);
    atomic_store(&s->stats->queued, queued);
    atomic_store(&s->stats->kv_blocks_used, kv_used);
    if (s->mx) {
        tsr_metric_set(s->mx->running, active);
        tsr_metric_set(s->mx->queued, queued);
        tsr_metric_set(s->mx->kv_blocks_used, kv_used);
    }
}

/* What an output row of sequence q asks of the step: nothing more than
 * argmax (greedy), its best cand_k candidates, ROW_TOP_K candidates and
 * maybe the whole row (row_top), or the whole row. *draw: a row that a
 * top-k step must describe (tsr_row_draw: row_top, or whole). */
static void row_needs(const seq_state *q, int *want_logits, int *top_k, int *draw) {
    if (q->greedy)
        return;
    *draw |= q->cand_k == 0;
    const int k = q->row_top ? ROW_TOP_K : q->cand_k;
    if (k == 0)
        *want_logits = 1;
    else if (k > *top_k)
        *top_k = k;
}

/* How rank 0 draws an output row of a top-k step (tsr_row_draw). */
static tsr_row_draw row_draw(const seq_state *q) {
    tsr_row_draw d = {0, 0, 1, 0, TSR_DRAW_CAND};
    if (q->greedy || q->cand_k > 0)
        return d;
    if (!q->row_top) {
        d.mode = TSR_DRAW_WHOLE;
        return d;
    }
    const tsr_sampling_params *p = &q->smp.p;
    d.mode = TSR_DRAW_ROW_TOP;
    d.u = tsr_sampler_peek_unit(&q->smp);
    d.temperature = p->temperature;
    d.top_p = p->top_p;
    d.min_p = p->min_p;
    return d;
}

tsr_status tsr_scheduler_iterate(tsr_scheduler_t *s) {
    /* 1. new arrivals (wait only when there is nothing else to do) */
    int busy = tsr_scheduler_pending(s) > 0;
    tsr_gen_request *in[64];
    /* Only as many as there are slots: the rest stay in the bounded request
     * queue, so that a burst past --queue is refused with RESOURCE_EXHAUSTED
     * instead of piling up here without a bound. */
    int room = s->max_seqs - s->n_waiting;
    if (room > 64)
        room = 64;
    int n_in = room > 0 ? tsr_request_queue_pop(s->q, in, room, busy ? 0 : s->cfg.idle_wait_s) : 0;
    if (s->n_waiting + n_in > s->cap_waiting) {
        int cap = s->cap_waiting ? s->cap_waiting * 2 : 64;
        while (cap < s->n_waiting + n_in)
            cap *= 2;
        tsr_gen_request **w = realloc(s->waiting, (size_t)cap * sizeof *w);
        if (!w)
            return tsr_error_set(TSR_ERR_NOMEM, "scheduler: out of memory");
        s->waiting = w;
        s->cap_waiting = cap;
    }
    for (int i = 0; i < n_in; i++)
        s->waiting[s->n_waiting++] = in[i];
    /* requests cancelled or expired while still in the queue leave it now,
     * so that they hold no place there */
    int n_gone = tsr_request_queue_take_cancelled(s->q, in, 64, tsr_now_s());
    for (int i = 0; i < n_gone; i++) {
        post_final(s, in[i], TSR_FIN_CANCELLED, NULL, NULL);
        tsr_gen_request_release(in[i]);
    }

    /* 1b. adapter calls: one between two steps while sequences generate, all
     * of them when idle */
    for (int k = 0; k < (busy ? 1 : 64); k++) {
        tsr_ctl_request *c = tsr_request_queue_pop_ctl(s->q);
        if (!c)
            break;
        tsr_status cst = tsr_adapters_run(s->adapters, c);
        tsr_ctl_request_release(c);
        if (cst != TSR_OK)
            return cst; /* the engine failed */
    }

    /* 2. cancelled or expired sequences leave; their blocks go with this step */
    double now = tsr_now_s();
    for (int k = 0; k < s->max_seqs; k++) {
        tsr_gen_request *r = s->seqs[k].req;
        if (r && (atomic_load(&r->cancelled) || (r->deadline > 0 && now > r->deadline)))
            finish_seq(s, k, TSR_FIN_CANCELLED, NULL);
    }
    /* 3. admission */
    admit(s);

    /* 4. the step: decodes first, then prompt chunks under the budget */
    /* what the sampled rows need: the whole rows (want_logits), or only the
     * best cand_k of each (top_k, the largest of them) */
    int budget = s->cfg.max_batch_tokens, n = 0, n_out = 0, want_logits = 0, top_k = 0,
        need_draw = 0;
    TSR_TRY(grow_step(s, budget + s->max_seqs));
    for (int k = 0; k < s->max_seqs; k++) {
        seq_state *q = &s->seqs[k];
        if (!q->req || !q->has_next)
            continue;
        s->tokens[n] = q->next;
        s->pos[n] = q->pos;
        s->seq[n] = k;
        s->rows[n_out] = n;
        s->row_slot[n_out++] = k;
        row_needs(q, &want_logits, &top_k, &need_draw);
        n++;
        budget--;
    }
    for (int k = 0; k < s->max_seqs && budget > 0; k++) {
        seq_state *q = &s->seqs[k];
        if (!q->req || q->has_next || q->n_fed >= q->req->n_prompt)
            continue;
        int c = q->req->n_prompt - q->n_fed;
        if (c > budget)
            c = budget;
        for (int i = 0; i < c; i++) {
            s->tokens[n + i] = q->req->prompt[q->n_fed + i];
            s->pos[n + i] = q->n_fed + i;
            s->seq[n + i] = k;
        }
        if (q->t_first_step == 0)
            q->t_first_step = tsr_now_s();
        if (q->n_fed + c == q->req->n_prompt) { /* the prompt's last token gives logits */
            s->rows[n_out] = n + c - 1;
            s->row_slot[n_out++] = k;
            row_needs(q, &want_logits, &top_k, &need_draw);
        }
        n += c;
        budget -= c;
    }
    publish(s);
    if (n == 0 && s->n_release == 0)
        return TSR_OK;
    /* with n == 0 the step only frees the slots of finished sequences */
    const int V = s->e->mcfg.n_vocab;
    /* top-k whenever a sampled row can use candidates; rows that need
     * the whole row then get it through their draw (TSR_DRAW_WHOLE) */
    const tsr_out_kind kind = n_out == 0    ? TSR_OUT_NONE
                              : top_k > 0   ? TSR_OUT_TOPK
                              : want_logits ? TSR_OUT_LOGITS
                                            : TSR_OUT_ARGMAX;
    const int draws = kind == TSR_OUT_TOPK && need_draw; /* the step needs per-row draws */
    if (draws) {
        want_logits = 1; /* room for the rows that come whole */
        if (n_out > s->cap_draw) {
            free(s->draw);
            free(s->expsum);
            free(s->whole);
            s->cap_draw = n_out;
            s->draw = malloc((size_t)n_out * sizeof *s->draw);
            s->expsum = malloc((size_t)n_out * 2 * sizeof *s->expsum);
            s->whole = malloc((size_t)n_out * sizeof *s->whole);
            if (!s->draw || !s->expsum || !s->whole) {
                s->cap_draw = 0;
                return tsr_error_set(TSR_ERR_NOMEM, "scheduler: out of memory");
            }
        }
        for (int o = 0; o < n_out; o++)
            s->draw[o] = row_draw(&s->seqs[s->row_slot[o]]);
    }
    if (kind == TSR_OUT_TOPK && (size_t)n_out * top_k > s->cap_cand) {
        free(s->cand_val);
        free(s->cand_id);
        s->cap_cand = (size_t)n_out * top_k;
        s->cand_val = malloc(s->cap_cand * sizeof *s->cand_val);
        s->cand_id = malloc(s->cap_cand * sizeof *s->cand_id);
        if (!s->cand_val || !s->cand_id) {
            s->cap_cand = 0;
            return tsr_error_set(TSR_ERR_NOMEM, "scheduler: out of memory");
        }
    }
    if (want_logits && (size_t)n_out * V > s->cap_logits) {
        free(s->logits);
        s->cap_logits = (size_t)n_out * V;
        s->logits = malloc(s->cap_logits * sizeof *s->logits);
        if (!s->logits) {
            s->cap_logits = 0;
            return tsr_error_set(TSR_ERR_NOMEM, "scheduler: out of memory");
        }
    }
    int n_seg = group_by_adapter(s, n, n_out);
    tsr_status st;
    {
        tsr_step step = {
            .n_tokens = n,
            .tokens = s->tokens,
            .pos = s->pos,
            .seq = s->seq,
            .n_out = n_out,
            .out_rows = s->rows,
            .out = kind,
            .n_release = s->n_release,
            .release = s->release,
            .n_seg = n_seg,
            .seg = s->segs,
            .top_k = kind == TSR_OUT_TOPK ? top_k : 0,
            .draw = draws ? s->draw : NULL,
        };
        if (kind == TSR_OUT_TOPK) {
            const tsr_top_out out = {s->cand_id, s->cand_val, s->expsum, s->whole, s->logits};
            st = tsr_engine_step_top(s->e, &step, &out);
        } else {
            st = tsr_engine_step(s->e, &step, want_logits ? NULL : s->argmax,
                                 want_logits ? s->logits : NULL);
        }
    }
    if (st != TSR_OK)
        return st;
    s->steps_by_kind[kind]++;
    s->n_release = 0;
    if (s->mx && n > 0) {
        tsr_metric_inc(s->mx->engine_steps, 1);
        tsr_metric_observe(s->mx->step_tokens, n);
    }
    /* bookkeeping: positions advance for every token that ran */
    for (int i = 0; i < n; i++) {
        seq_state *q = &s->seqs[s->seq[i]];
        q->pos = s->pos[i] + 1;
        if (q->has_next)
            q->has_next = 0; /* the decode token was consumed */
        else
            q->n_fed++;
    }
    /* sample */
    for (int o = 0; o < n_out; o++) {
        int k = s->row_slot[o];
        seq_state *q = &s->seqs[k];
        if (!q->req)
            continue;
        /* end-of-generation tokens are banned until min_tokens, or always with ignore_eos */
        const int suppress = q->n_completion < q->req->min_tokens || q->req->ignore_eos;
        const int32_t *ban = suppress ? s->eog : NULL;
        const size_t n_ban = suppress ? (size_t)s->n_eog : 0;
        const int whole = kind == TSR_OUT_LOGITS || (draws && s->whole[o]);
        const float *row = whole ? s->logits + (size_t)o * V : NULL;
        const float *cv = kind == TSR_OUT_TOPK ? s->cand_val + (size_t)o * top_k : NULL;
        const int32_t *ci = kind == TSR_OUT_TOPK ? s->cand_id + (size_t)o * top_k : NULL;
        int32_t tok;
        tsr_status sst = TSR_OK;
        if (kind == TSR_OUT_ARGMAX) {
            tok = s->argmax[o];
        } else if (q->greedy && !whole) { /* argmax's pick: the best that is not NaN */
            int j = 0;
            while (j + 1 < top_k && isnan(cv[j]))
                j++;
            tok = ci[j] >= 0 ? ci[j] : 0;
        } else if (q->greedy) {
            tok = tsr_argmax(row, V);
        } else if (whole && q->row_top && kind == TSR_OUT_TOPK) { /* undecided by candidates */
            sst = tsr_sampler_sample_row_whole(&q->smp, row, s->expsum[2 * o], s->expsum[2 * o + 1],
                                               &tok);
        } else if (whole) {
            sst = tsr_sampler_sample(&q->smp, row, ban, n_ban, &tok);
        } else if (q->cand_k > 0) {
            sst = tsr_sampler_sample_top(&q->smp, cv, ci, top_k, ban, n_ban, &tok);
        } else {
            sst = tsr_sampler_sample_row_top(&q->smp, cv, ci, top_k, s->expsum[2 * o],
                                             s->expsum[2 * o + 1], &tok);
        }
        if (!q->greedy && kind != TSR_OUT_ARGMAX) {
            const int path = q->cand_k > 0 ? 0 : !q->row_top ? 3 : whole ? 2 : 1;
            s->rows_by_path[path]++;
            if (s->mx)
                tsr_metric_inc(s->mx->sampled_rows[path], 1);
        }
        if (sst != TSR_OK) {
            finish_seq(s, k, TSR_FIN_ERROR, tsr_error_msg());
            continue;
        }
        accept_token(s, k, tok, row);
    }
    publish(s);
    return TSR_OK;
}

void tsr_scheduler_step_counts(const tsr_scheduler_t *s, long counts[4]) {
    memcpy(counts, s->steps_by_kind, sizeof s->steps_by_kind);
}

void tsr_scheduler_row_counts(const tsr_scheduler_t *s, long counts[4]) {
    memcpy(counts, s->rows_by_path, sizeof s->rows_by_path);
}
