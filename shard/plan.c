/* shard/plan.c - the tp x pp shard plan: layer ranges per stage, head / FFN /
 * vocabulary ranges per TP rank, and the checks that refuse impossible
 * layouts. Pure arithmetic on the model's sizes; no I/O. */
#include "shard/plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Part i of `total` items dealt over `parts` as evenly as possible, the first
 * total % parts parts taking one more. */
static void split_even(int total, int parts, int i, int *begin, int *count) {
    int base = total / parts, rem = total % parts;
    *count = base + (i < rem);
    *begin = i * base + (i < rem ? i : rem);
}

/* snprintf into a growing text that may be cut; `len` counts the whole. */
typedef struct {
    char *buf;
    size_t n, len;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *dst = t->len < t->n ? t->buf + t->len : NULL;
    int k = vsnprintf(dst, dst ? t->n - t->len : 0, fmt, ap);
    va_end(ap);
    if (k > 0)
        t->len += (size_t)k;
}

/* "(3, 6, 9)": the TP degrees above n_head_kv that work, the multiples of
 * n_head_kv up to n_head; long lists are cut in the middle. */
static void list_replicated_degrees(int n_head, int n_head_kv, char *buf, size_t n) {
    const int count = n_head / n_head_kv; /* multiples k * n_head_kv, k = 1..count */
    text t = {buf, n, 0};
    put(&t, "(");
    for (int k = 1; k <= count; k++) {
        if (count > 8 && k == 6) {
            put(&t, ", ...");
            k = count;
        }
        put(&t, "%s%d", k > 1 ? ", " : "", k * n_head_kv);
    }
    put(&t, ")");
}

static tsr_status check_model(const tsr_model_config *c) {
    struct {
        const char *name;
        int v;
    } sizes[] = {{"n_layer", c->n_layer},
                 {"n_head", c->n_head},
                 {"n_head_kv", c->n_head_kv},
                 {"n_ff", c->n_ff},
                 {"n_vocab", c->n_vocab}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v <= 0)
            return tsr_error_set(TSR_ERR_INVALID, "shard plan: model %s = %d must be positive",
                                 sizes[i].name, sizes[i].v);
    if (c->n_head % c->n_head_kv)
        return tsr_error_set(TSR_ERR_INVALID,
                             "shard plan: %d attention heads is not a multiple of %d KV heads",
                             c->n_head, c->n_head_kv);
    return TSR_OK;
}

static tsr_status check_layout(const tsr_model_config *c, const tsr_plan_config *pc) {
    const int tp = pc->tp, pp = pc->pp;
    if (tp < 1 || pp < 1)
        return tsr_error_set(TSR_ERR_INVALID,
                             "tp=%d x pp=%d is impossible: both degrees must be at least 1", tp,
                             pp);
    if (pp > c->n_layer)
        return tsr_error_set(TSR_ERR_INVALID,
                             "pp=%d is impossible for %d layers: every pipeline stage needs at "
                             "least one layer",
                             pp, c->n_layer);
    if (pc->pp_layers) {
        if (pc->n_pp_layers != pp)
            return tsr_error_set(TSR_ERR_INVALID,
                                 "pp-layers has %d entries for pp=%d: give one layer count per "
                                 "stage, summing to the model's %d layers",
                                 pc->n_pp_layers, pp, c->n_layer);
        long long sum = 0;
        for (int s = 0; s < pp; s++) {
            if (pc->pp_layers[s] < 1)
                return tsr_error_set(TSR_ERR_INVALID,
                                     "pp-layers entry %d is %d: every pipeline stage needs at "
                                     "least one layer (pp=%d, %d layers)",
                                     s, pc->pp_layers[s], pp, c->n_layer);
            sum += pc->pp_layers[s];
        }
        if (sum != c->n_layer)
            return tsr_error_set(TSR_ERR_INVALID,
                                 "pp-layers sum to %lld layers for pp=%d, the model has %d layers",
                                 sum, pp, c->n_layer);
    }
    const int nh = c->n_head, nkv = c->n_head_kv;
    if (tp > nkv && (tp % nkv || tp > nh)) {
        char list[96];
        list_replicated_degrees(nh, nkv, list, sizeof list);
        return tsr_error_set(TSR_ERR_INVALID,
                             "tp=%d is impossible for %d attention heads / %d KV heads: TP above "
                             "the KV-head count must be a multiple of it %s and at most the "
                             "attention-head count",
                             tp, nh, nkv, list);
    }
    if (tp > c->n_ff)
        return tsr_error_set(TSR_ERR_INVALID,
                             "tp=%d is impossible for %d FFN columns: every rank needs at least "
                             "one",
                             tp, c->n_ff);
    if (tp > c->n_vocab)
        return tsr_error_set(TSR_ERR_INVALID,
                             "tp=%d is impossible for %d vocabulary rows: every rank needs at "
                             "least one",
                             tp, c->n_vocab);
    return TSR_OK;
}

static void plan_heads(const tsr_model_config *c, tsr_shard_plan *p) {
    const int tp = p->tp, nkv = c->n_head_kv, g = c->n_head / c->n_head_kv;
    p->kv_replicated = tp > nkv;
    p->kv_ranks_per_head = p->kv_replicated ? tp / nkv : 1;
    for (int t = 0; t < tp; t++) {
        tsr_plan_tp_part *r = &p->parts[t];
        if (!p->kv_replicated) {
            split_even(nkv, tp, t, &r->kv_head_begin, &r->n_kv_head);
            r->head_begin = r->kv_head_begin * g;
            r->n_head = r->n_kv_head * g;
        } else {
            const int share = p->kv_ranks_per_head, group = t / share;
            int off;
            split_even(g, share, t % share, &off, &r->n_head);
            r->head_begin = group * g + off;
            r->kv_head_begin = group;
            r->n_kv_head = 1;
        }
    }
}

static void plan_columns(const tsr_model_config *c, tsr_shard_plan *p) {
    const int tp = p->tp;
    p->ff_block = c->n_ff % 32 == 0 && c->n_ff / 32 >= tp ? 32 : 1;
    for (int t = 0; t < tp; t++) {
        tsr_plan_tp_part *r = &p->parts[t];
        int b, nb;
        split_even(c->n_ff / p->ff_block, tp, t, &b, &nb);
        r->ff_begin = b * p->ff_block;
        r->n_ff = nb * p->ff_block;
        split_even(c->n_vocab, tp, t, &r->vocab_begin, &r->n_vocab);
    }
}

tsr_status tsr_shard_plan_init(const tsr_model_config *c, const tsr_plan_config *pc,
                               tsr_shard_plan *out) {
    static const tsr_plan_config one_rank = TSR_PLAN_CONFIG_INIT;
    memset(out, 0, sizeof *out);
    if (!pc)
        pc = &one_rank;
    TSR_TRY(check_model(c));
    TSR_TRY(check_layout(c, pc));

    tsr_shard_plan p = {0};
    p.tp = pc->tp;
    p.pp = pc->pp;
    p.n_layer = c->n_layer;
    p.n_head = c->n_head;
    p.n_head_kv = c->n_head_kv;
    p.n_ff = c->n_ff;
    p.n_vocab = c->n_vocab;
    p.stages = calloc((size_t)p.pp, sizeof *p.stages);
    p.parts = calloc((size_t)p.tp, sizeof *p.parts);
    if (!p.stages || !p.parts) {
        tsr_shard_plan_free(&p);
        return tsr_error_set(TSR_ERR_NOMEM, "shard plan: out of memory for tp=%d x pp=%d", p.tp,
                             p.pp);
    }
    for (int s = 0, next = 0; s < p.pp; s++) {
        int begin, count;
        if (pc->pp_layers) {
            begin = next;
            count = pc->pp_layers[s];
        } else {
            split_even(c->n_layer, p.pp, s, &begin, &count);
        }
        p.stages[s].layer_begin = begin;
        p.stages[s].layer_end = begin + count;
        next = begin + count;
    }
    plan_heads(c, &p);
    plan_columns(c, &p);
    *out = p;
    return TSR_OK;
}

void tsr_shard_plan_free(tsr_shard_plan *p) {
    if (!p)
        return;
    free(p->stages);
    free(p->parts);
    memset(p, 0, sizeof *p);
}

static tsr_status check_rank(const tsr_shard_plan *p, int tp_rank, int pp_rank) {
    if (tp_rank < 0 || tp_rank >= p->tp || pp_rank < 0 || pp_rank >= p->pp)
        return tsr_error_set(TSR_ERR_RANGE,
                             "shard plan: rank (tp %d, pp %d) is outside tp=%d x pp=%d", tp_rank,
                             pp_rank, p->tp, p->pp);
    return TSR_OK;
}

tsr_status tsr_shard_plan_slice(const tsr_shard_plan *p, int tp_rank, int pp_rank,
                                tsr_model_slice *out) {
    TSR_TRY(check_rank(p, tp_rank, pp_rank));
    const tsr_plan_stage *s = &p->stages[pp_rank];
    const tsr_plan_tp_part *r = &p->parts[tp_rank];
    out->layer_begin = s->layer_begin;
    out->layer_end = s->layer_end;
    out->head_begin = r->head_begin;
    out->n_head = r->n_head;
    out->kv_head_begin = r->kv_head_begin;
    out->n_kv_head = r->n_kv_head;
    out->ff_begin = r->ff_begin;
    out->n_ff = r->n_ff;
    out->vocab_begin = r->vocab_begin;
    out->n_vocab = r->n_vocab;
    return TSR_OK;
}

tsr_status tsr_shard_plan_check_world(const tsr_shard_plan *p, int world_size) {
    long long need = (long long)p->tp * p->pp;
    if (world_size != need)
        return tsr_error_set(TSR_ERR_INVALID, "tp=%d x pp=%d needs %lld ranks, the job has %d",
                             p->tp, p->pp, need, world_size);
    return TSR_OK;
}

/* ---- describe ---- */

/* "a-b (n)" for [begin, begin + count). */
static const char *range(char *s, size_t n, int begin, int count) {
    if (count == 1)
        snprintf(s, n, "%d (1)", begin);
    else
        snprintf(s, n, "%d-%d (%d)", begin, begin + count - 1, count);
    return s;
}

int tsr_shard_plan_describe(const tsr_shard_plan *p, char *buf, size_t n) {
    text t = {buf, n, 0};
    if (buf && n)
        buf[0] = '\0';
    put(&t,
        "shard plan: tp=%d x pp=%d (%lld ranks) for %d layers, %d attention heads / %d KV heads, "
        "%d FFN columns, %d vocabulary rows\n",
        p->tp, p->pp, (long long)p->tp * p->pp, p->n_layer, p->n_head, p->n_head_kv, p->n_ff,
        p->n_vocab);
    if (p->kv_replicated)
        put(&t, "KV heads replicated: %d TP ranks hold a copy of each\n", p->kv_ranks_per_head);
    put(&t, "FFN columns split in blocks of %d\n", p->ff_block);
    put(&t, "%-8s %s\n", "pp stage", "layers");
    char a[48], b[48], c[48], d[48];
    for (int s = 0; s < p->pp; s++) {
        const tsr_plan_stage *st = &p->stages[s];
        put(&t, "%-8d %s\n", s,
            range(a, sizeof a, st->layer_begin, st->layer_end - st->layer_begin));
    }
    put(&t, "%-8s %-16s %-16s %-22s %s\n", "tp rank", "query heads", "KV heads", "FFN columns",
        "vocabulary rows");
    for (int r = 0; r < p->tp; r++) {
        const tsr_plan_tp_part *q = &p->parts[r];
        put(&t, "%-8d %-16s %-16s %-22s %s\n", r, range(a, sizeof a, q->head_begin, q->n_head),
            range(b, sizeof b, q->kv_head_begin, q->n_kv_head),
            range(c, sizeof c, q->ff_begin, q->n_ff),
            range(d, sizeof d, q->vocab_begin, q->n_vocab));
    }
    if (buf && n && t.len >= n)
        buf[n - 1] = '\0';
    return (int)t.len;
}

/* ---- memory estimate ---- */

size_t tsr_shard_plan_weight_bytes(const tsr_shard_plan *p, const tsr_model_config *c, int tp_rank,
                                   int pp_rank, size_t bytes_per_param) {
    if (tp_rank < 0 || tp_rank >= p->tp || pp_rank < 0 || pp_rank >= p->pp ||
        c->n_layer != p->n_layer || c->n_head != p->n_head || c->n_head_kv != p->n_head_kv ||
        c->n_ff != p->n_ff || c->n_vocab != p->n_vocab || c->n_embd <= 0 || c->head_dim <= 0)
        return 0;
    const tsr_plan_stage *s = &p->stages[pp_rank];
    const tsr_plan_tp_part *r = &p->parts[tp_rank];
    const size_t C = (size_t)c->n_embd, hd = (size_t)c->head_dim;
    const size_t q_rows = (size_t)r->n_head * hd, kv_rows = (size_t)r->n_kv_head * hd;
    size_t layer = 2 * C                      /* attn_norm, ffn_norm */
                   + 2 * q_rows * C           /* wq (q_rows, C), wo (C, q_rows) */
                   + 2 * kv_rows * C          /* wk, wv (kv_rows, C) */
                   + 3 * (size_t)r->n_ff * C; /* gate, up (n_ff, C), down (C, n_ff) */
    if (c->qkv_bias)
        layer += q_rows + 2 * kv_rows;
    size_t params = layer * (size_t)(s->layer_end - s->layer_begin);
    const int first = pp_rank == 0, last = pp_rank == p->pp - 1;
    const size_t vocab_rows = (size_t)r->n_vocab * C;
    if (first || (last && c->tied_embeddings))
        params += vocab_rows; /* token embedding */
    if (last) {
        params += C; /* output norm */
        if (!c->tied_embeddings)
            params += vocab_rows; /* LM head */
    }
    return params * bytes_per_param;
}
