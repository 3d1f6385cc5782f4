/* tests/unit/test_plan.c - unit tests for shard/plan: the tp x pp shard plan.
 *
 * Exact layer / head / KV-head / FFN / vocabulary ranges for SmolLM2-135M
 * (9 heads / 3 KV heads, tp 1..10 x pp 1..4), a Llama-3-8B-shaped model
 * (32 / 8), a multi-head model (12 / 12) and small models that hit the FFN
 * fall-backs; refused layouts and the numbers their messages name; the
 * pp_layers override; coverage invariants (every query head on exactly one
 * rank, with its KV head; FFN, vocabulary and layer ranges partition) over a
 * seeded sweep of random shapes; check_world, describe, and the per-rank
 * weight estimate (known parameter counts, falling with tp and pp).
 * Exits 0 on success, 1 with a message at the first failure. */
#include "shard/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/check.h"

/* ---- model shapes ---- */

static tsr_model_config shape(int n_embd, int n_layer, int n_head, int n_head_kv, int head_dim,
                              int n_ff, int n_vocab, int tied) {
    tsr_model_config c;
    memset(&c, 0, sizeof c);
    c.n_embd = n_embd;
    c.n_layer = n_layer;
    c.n_head = n_head;
    c.n_head_kv = n_head_kv;
    c.head_dim = head_dim;
    c.n_ff = n_ff;
    c.n_vocab = n_vocab;
    c.n_ctx_train = 8192;
    c.rms_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_embeddings = tied;
    return c;
}

static tsr_model_config smollm2(void) { return shape(576, 30, 9, 3, 64, 1536, 49152, 1); }
static tsr_model_config llama3_8b(void) { return shape(4096, 32, 32, 8, 128, 14336, 128256, 0); }
static tsr_model_config mha12(void) { return shape(768, 12, 12, 12, 64, 3072, 50257, 0); }

static tsr_plan_config layout(int tp, int pp) {
    tsr_plan_config pc = TSR_PLAN_CONFIG_INIT;
    pc.tp = tp;
    pc.pp = pp;
    return pc;
}

/* ---- invariants every valid plan keeps ---- */

static int max_i(int a, int b) { return a > b ? a : b; }
static int min_i(int a, int b) { return a < b ? a : b; }

/* Counts in rank order are non-increasing and differ by at most one unit. */
static void check_even(const int *counts, int n, int unit, const char *what, const char *ctx) {
    int lo = counts[0], hi = counts[0];
    for (int i = 0; i < n; i++) {
        CHECK(counts[i] % unit == 0, "%s: %s count %d of rank %d is not a multiple of %d", ctx,
              what, counts[i], i, unit);
        CHECK(i == 0 || counts[i] <= counts[i - 1], "%s: %s rank %d holds more than rank %d", ctx,
              what, i, i - 1);
        lo = min_i(lo, counts[i]);
        hi = max_i(hi, counts[i]);
    }
    CHECK(hi - lo <= unit, "%s: %s counts range %d..%d", ctx, what, lo, hi);
}

/* Ranges [begin[i], begin[i]+count[i]) tile [0, total) in rank order. */
static void check_tiles(const int *begin, const int *count, int n, int total, const char *what,
                        const char *ctx) {
    int next = 0;
    for (int i = 0; i < n; i++) {
        CHECK(count[i] >= 1, "%s: %s rank %d holds %d", ctx, what, i, count[i]);
        CHECK(begin[i] == next, "%s: %s rank %d begins at %d, want %d", ctx, what, i, begin[i],
              next);
        next += count[i];
    }
    CHECK(next == total, "%s: %s ranges end at %d, want %d", ctx, what, next, total);
}

static void verify_plan(const tsr_model_config *c, const tsr_shard_plan *p, const char *ctx) {
    const int tp = p->tp, pp = p->pp, g = c->n_head / c->n_head_kv;
    CHECK(p->n_layer == c->n_layer && p->n_head == c->n_head && p->n_head_kv == c->n_head_kv &&
              p->n_ff == c->n_ff && p->n_vocab == c->n_vocab,
          "%s: plan does not record the model's sizes", ctx);
    int *b = tu_xmalloc(sizeof(int) * (size_t)max_i(tp, pp));
    int *n = tu_xmalloc(sizeof(int) * (size_t)max_i(tp, pp));

    /* layers */
    for (int s = 0; s < pp; s++) {
        b[s] = p->stages[s].layer_begin;
        n[s] = p->stages[s].layer_end - p->stages[s].layer_begin;
    }
    check_tiles(b, n, pp, c->n_layer, "layer", ctx);

    /* FFN columns and vocabulary rows */
    for (int t = 0; t < tp; t++) {
        b[t] = p->parts[t].ff_begin;
        n[t] = p->parts[t].n_ff;
    }
    check_tiles(b, n, tp, c->n_ff, "FFN", ctx);
    int want_block = c->n_ff % 32 == 0 && c->n_ff / 32 >= tp ? 32 : 1;
    CHECK(p->ff_block == want_block, "%s: ff_block %d, want %d", ctx, p->ff_block, want_block);
    for (int t = 0; t < tp; t++)
        CHECK(p->parts[t].ff_begin % want_block == 0, "%s: FFN rank %d begins at %d", ctx, t,
              p->parts[t].ff_begin);
    check_even(n, tp, want_block, "FFN", ctx);
    for (int t = 0; t < tp; t++) {
        b[t] = p->parts[t].vocab_begin;
        n[t] = p->parts[t].n_vocab;
    }
    check_tiles(b, n, tp, c->n_vocab, "vocab", ctx);
    check_even(n, tp, 1, "vocab", ctx);

    /* query heads: every head on exactly one rank, in rank order */
    for (int t = 0; t < tp; t++) {
        b[t] = p->parts[t].head_begin;
        n[t] = p->parts[t].n_head;
    }
    check_tiles(b, n, tp, c->n_head, "query head", ctx);

    /* KV heads: each query head's KV head is on the same rank, where the
     * forward pass finds it (local q i -> local kv i / (n_head / n_kv)) */
    int want_share = tp > c->n_head_kv ? tp / c->n_head_kv : 1;
    CHECK(p->kv_replicated == (tp > c->n_head_kv), "%s: kv_replicated %d", ctx, p->kv_replicated);
    CHECK(p->kv_ranks_per_head == want_share, "%s: kv_ranks_per_head %d, want %d", ctx,
          p->kv_ranks_per_head, want_share);
    int *holders = calloc((size_t)c->n_head_kv, sizeof *holders);
    CHECK(holders, "calloc");
    for (int t = 0; t < tp; t++) {
        const tsr_plan_tp_part *r = &p->parts[t];
        CHECK(r->n_kv_head >= 1 && r->kv_head_begin >= 0 &&
                  r->kv_head_begin + r->n_kv_head <= c->n_head_kv,
              "%s: rank %d KV heads %d+%d", ctx, t, r->kv_head_begin, r->n_kv_head);
        CHECK(r->n_head % r->n_kv_head == 0, "%s: rank %d: %d heads over %d KV heads", ctx, t,
              r->n_head, r->n_kv_head);
        if (p->kv_replicated)
            CHECK(r->n_kv_head == 1, "%s: replicated rank %d holds %d KV heads", ctx, t,
                  r->n_kv_head);
        int local_g = r->n_head / r->n_kv_head;
        for (int i = 0; i < r->n_head; i++) {
            int q = r->head_begin + i;
            CHECK(r->kv_head_begin + i / local_g == q / g,
                  "%s: rank %d: query head %d would use KV head %d, its group is %d", ctx, t, q,
                  r->kv_head_begin + i / local_g, q / g);
        }
        for (int k = 0; k < r->n_kv_head; k++)
            holders[r->kv_head_begin + k]++;
    }
    for (int k = 0; k < c->n_head_kv; k++)
        CHECK(holders[k] == want_share, "%s: KV head %d on %d ranks, want %d", ctx, k, holders[k],
              want_share);
    free(holders);
    for (int t = 0; t < tp; t++)
        n[t] = p->kv_replicated ? p->parts[t].n_head : p->parts[t].n_kv_head;
    if (!p->kv_replicated)
        check_even(n, tp, 1, "KV head", ctx);

    /* slices agree with the table */
    for (int s = 0; s < pp; s++)
        for (int t = 0; t < tp; t++) {
            tsr_model_slice sl;
            CHECK_OK(tsr_shard_plan_slice(p, t, s, &sl));
            const tsr_plan_tp_part *r = &p->parts[t];
            CHECK(sl.layer_begin == p->stages[s].layer_begin &&
                      sl.layer_end == p->stages[s].layer_end && sl.head_begin == r->head_begin &&
                      sl.n_head == r->n_head && sl.kv_head_begin == r->kv_head_begin &&
                      sl.n_kv_head == r->n_kv_head && sl.ff_begin == r->ff_begin &&
                      sl.n_ff == r->n_ff && sl.vocab_begin == r->vocab_begin &&
                      sl.n_vocab == r->n_vocab,
                  "%s: slice (tp %d, pp %d) differs from the plan", ctx, t, s);
        }
    free(b);
    free(n);
}

/* ---- exact expectations ---- */

/* head_begin, n_head, kv_head_begin, n_kv_head, ff_begin, n_ff, vocab_begin, n_vocab */
typedef struct {
    int v[8];
} part_row;

static void expect_part(const tsr_shard_plan *p, int t, const part_row *w, const char *ctx) {
    const tsr_plan_tp_part *r = &p->parts[t];
    int got[8] = {r->head_begin, r->n_head, r->kv_head_begin, r->n_kv_head,
                  r->ff_begin,   r->n_ff,   r->vocab_begin,   r->n_vocab};
    static const char *names[8] = {"head_begin", "n_head", "kv_head_begin", "n_kv_head",
                                   "ff_begin",   "n_ff",   "vocab_begin",   "n_vocab"};
    for (int i = 0; i < 8; i++)
        CHECK(got[i] == w->v[i], "%s: tp rank %d %s = %d, want %d", ctx, t, names[i], got[i],
              w->v[i]);
}

static void expect_parts(const tsr_shard_plan *p, const part_row *rows, int n, const char *ctx) {
    CHECK(p->tp == n, "%s: %d tp ranks, want %d", ctx, p->tp, n);
    for (int t = 0; t < n; t++)
        expect_part(p, t, &rows[t], ctx);
}

/* layer_end of each stage (stages begin where the previous one ends) */
static void expect_stages(const tsr_shard_plan *p, const int *ends, int n, const char *ctx) {
    CHECK(p->pp == n, "%s: %d stages, want %d", ctx, p->pp, n);
    for (int s = 0; s < n; s++) {
        int begin = s ? ends[s - 1] : 0;
        CHECK(p->stages[s].layer_begin == begin && p->stages[s].layer_end == ends[s],
              "%s: stage %d layers [%d, %d), want [%d, %d)", ctx, s, p->stages[s].layer_begin,
              p->stages[s].layer_end, begin, ends[s]);
    }
}

/* ---- SmolLM2: 9 heads / 3 KV heads, tp 1..10 x pp 1..4 ---- */

static const part_row smol_tp1[] = {{{0, 9, 0, 3, 0, 1536, 0, 49152}}};
static const part_row smol_tp2[] = {{{0, 6, 0, 2, 0, 768, 0, 24576}},
                                    {{6, 3, 2, 1, 768, 768, 24576, 24576}}};
static const part_row smol_tp3[] = {{{0, 3, 0, 1, 0, 512, 0, 16384}},
                                    {{3, 3, 1, 1, 512, 512, 16384, 16384}},
                                    {{6, 3, 2, 1, 1024, 512, 32768, 16384}}};
/* replicated: each KV head on 2 ranks, its 3 query heads split 2 + 1 */
static const part_row smol_tp6[] = {
    {{0, 2, 0, 1, 0, 256, 0, 8192}},        {{2, 1, 0, 1, 256, 256, 8192, 8192}},
    {{3, 2, 1, 1, 512, 256, 16384, 8192}},  {{5, 1, 1, 1, 768, 256, 24576, 8192}},
    {{6, 2, 2, 1, 1024, 256, 32768, 8192}}, {{8, 1, 2, 1, 1280, 256, 40960, 8192}}};
/* one query head each; 48 FFN blocks of 32 -> 6,6,6,5,...; 49152 rows -> 5462 x3, 5461 x6 */
static const part_row smol_tp9[] = {
    {{0, 1, 0, 1, 0, 192, 0, 5462}},        {{1, 1, 0, 1, 192, 192, 5462, 5462}},
    {{2, 1, 0, 1, 384, 192, 10924, 5462}},  {{3, 1, 1, 1, 576, 160, 16386, 5461}},
    {{4, 1, 1, 1, 736, 160, 21847, 5461}},  {{5, 1, 1, 1, 896, 160, 27308, 5461}},
    {{6, 1, 2, 1, 1056, 160, 32769, 5461}}, {{7, 1, 2, 1, 1216, 160, 38230, 5461}},
    {{8, 1, 2, 1, 1376, 160, 43691, 5461}}};

static void test_smollm2_grid(void) {
    const tsr_model_config c = smollm2();
    static const int pp1[] = {30}, pp2[] = {15, 30}, pp3[] = {10, 20, 30}, pp4[] = {8, 16, 23, 30};
    const int *pp_ends[] = {NULL, pp1, pp2, pp3, pp4};
    const part_row *tp_rows[11] = {0};
    tp_rows[1] = smol_tp1;
    tp_rows[2] = smol_tp2;
    tp_rows[3] = smol_tp3;
    tp_rows[6] = smol_tp6;
    tp_rows[9] = smol_tp9;
    int n_valid = 0;
    for (int tp = 1; tp <= 10; tp++)
        for (int pp = 1; pp <= 4; pp++) {
            char ctx[64];
            snprintf(ctx, sizeof ctx, "SmolLM2 tp=%d pp=%d", tp, pp);
            tsr_plan_config pc = layout(tp, pp);
            tsr_shard_plan p;
            if (!tp_rows[tp]) {
                char want_tp[16];
                snprintf(want_tp, sizeof want_tp, "tp=%d ", tp);
                CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, want_tp,
                          "9 attention heads", "3 KV heads", "(3, 6, 9)");
                CHECK(p.stages == NULL && p.parts == NULL && p.tp == 0,
                      "%s: refused plan not zeroed", ctx);
                tsr_shard_plan_free(&p);
                continue;
            }
            CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
            verify_plan(&c, &p, ctx);
            expect_parts(&p, tp_rows[tp], tp, ctx);
            expect_stages(&p, pp_ends[pp], pp, ctx);
            CHECK(p.kv_replicated == (tp > 3), "%s: kv_replicated %d", ctx, p.kv_replicated);
            CHECK(p.kv_ranks_per_head == (tp > 3 ? tp / 3 : 1), "%s", ctx);
            CHECK(p.ff_block == 32, "%s: ff_block %d", ctx, p.ff_block);
            tsr_shard_plan_free(&p);
            n_valid++;
        }
    CHECK(n_valid == 5 * 4, "%d valid SmolLM2 layouts, want 20", n_valid);

    /* the exact message of the example */
    tsr_plan_config pc = layout(4, 1);
    tsr_shard_plan p;
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID,
              "tp=4 is impossible for 9 attention heads / 3 KV heads: TP above the KV-head count "
              "must be a multiple of it (3, 6, 9) and at most the attention-head count");
    for (int tp = 11; tp <= 20; tp++) {
        pc = layout(tp, 1);
        CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "9 attention heads",
                  "(3, 6, 9)");
    }
}

/* ---- Llama-3-8B shape: 32 heads / 8 KV heads ---- */

static void test_llama3_8b(void) {
    const tsr_model_config c = llama3_8b();
    tsr_shard_plan p;
    tsr_plan_config pc;
    /* 448 FFN blocks of 32 */
    static const part_row tp1[] = {{{0, 32, 0, 8, 0, 14336, 0, 128256}}};
    static const part_row tp2[] = {{{0, 16, 0, 4, 0, 7168, 0, 64128}},
                                   {{16, 16, 4, 4, 7168, 7168, 64128, 64128}}};
    /* uneven: KV 3+3+2 -> query 12+12+8; FFN 150+149+149 blocks */
    static const part_row tp3[] = {{{0, 12, 0, 3, 0, 4800, 0, 42752}},
                                   {{12, 12, 3, 3, 4800, 4768, 42752, 42752}},
                                   {{24, 8, 6, 2, 9568, 4768, 85504, 42752}}};
    /* KV 2,2,2,1,1; FFN 90,90,90,89,89 blocks; vocab 25652 + 25651 x4 */
    static const part_row tp5[] = {{{0, 8, 0, 2, 0, 2880, 0, 25652}},
                                   {{8, 8, 2, 2, 2880, 2880, 25652, 25651}},
                                   {{16, 8, 4, 2, 5760, 2880, 51303, 25651}},
                                   {{24, 4, 6, 1, 8640, 2848, 76954, 25651}},
                                   {{28, 4, 7, 1, 11488, 2848, 102605, 25651}}};
    const struct {
        int tp;
        const part_row *rows;
    } literal[] = {{1, tp1}, {2, tp2}, {3, tp3}, {5, tp5}};
    for (size_t i = 0; i < sizeof literal / sizeof literal[0]; i++) {
        char ctx[48];
        snprintf(ctx, sizeof ctx, "Llama-3-8B tp=%d", literal[i].tp);
        pc = layout(literal[i].tp, 1);
        CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
        verify_plan(&c, &p, ctx);
        expect_parts(&p, literal[i].rows, literal[i].tp, ctx);
        CHECK(!p.kv_replicated, "%s: replicated", ctx);
        tsr_shard_plan_free(&p);
    }

    /* even degrees: rank t holds n_head/tp heads from t*n_head/tp, etc. */
    const struct {
        int tp, heads, kv_share, ff, vocab;
    } regular[] = {{4, 8, 1, 3584, 32064},
                   {8, 4, 1, 1792, 16032},
                   {16, 2, 2, 896, 8016},  /* 2 ranks per KV head, 2 query heads each */
                   {32, 1, 4, 448, 4008}}; /* 4 ranks per KV head, 1 query head each */
    for (size_t i = 0; i < sizeof regular / sizeof regular[0]; i++) {
        char ctx[48];
        const int tp = regular[i].tp;
        snprintf(ctx, sizeof ctx, "Llama-3-8B tp=%d", tp);
        pc = layout(tp, 1);
        CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
        verify_plan(&c, &p, ctx);
        CHECK(p.kv_ranks_per_head == regular[i].kv_share, "%s: kv share %d", ctx,
              p.kv_ranks_per_head);
        for (int t = 0; t < tp; t++) {
            int share = regular[i].kv_share, kv_n = share == 1 ? 8 / tp : 1;
            part_row w = {{t * regular[i].heads, regular[i].heads,
                           share == 1 ? t * kv_n : t / share, kv_n, t * regular[i].ff,
                           regular[i].ff, t * regular[i].vocab, regular[i].vocab}};
            expect_part(&p, t, &w, ctx);
        }
        tsr_shard_plan_free(&p);
    }

    /* tp=24: 3 ranks per KV head, its 4 query heads split 2+1+1; FFN 19 blocks
     * on the first 16 ranks, 18 on the last 8; vocab 5344 each */
    pc = layout(24, 1);
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    verify_plan(&c, &p, "Llama-3-8B tp=24");
    const struct {
        int t;
        part_row w;
    } spot[] = {{0, {{0, 2, 0, 1, 0, 608, 0, 5344}}},
                {1, {{2, 1, 0, 1, 608, 608, 5344, 5344}}},
                {2, {{3, 1, 0, 1, 1216, 608, 10688, 5344}}},
                {3, {{4, 2, 1, 1, 1824, 608, 16032, 5344}}},
                {15, {{20, 2, 5, 1, 9120, 608, 80160, 5344}}},
                {16, {{22, 1, 5, 1, 9728, 576, 85504, 5344}}},
                {21, {{28, 2, 7, 1, 12608, 576, 112224, 5344}}},
                {23, {{31, 1, 7, 1, 13760, 576, 122912, 5344}}}};
    for (size_t i = 0; i < sizeof spot / sizeof spot[0]; i++)
        expect_part(&p, spot[i].t, &spot[i].w, "Llama-3-8B tp=24");
    tsr_shard_plan_free(&p);

    /* refused: above 8 and not a multiple of 8, or above 32 */
    const int refused[] = {9, 12, 20, 33, 40, 64};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char want_tp[16];
        snprintf(want_tp, sizeof want_tp, "tp=%d ", refused[i]);
        pc = layout(refused[i], 2);
        CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, want_tp,
                  "32 attention heads / 8 KV heads", "(8, 16, 24, 32)");
    }

    /* 32 layers over 3 and 5 stages */
    static const int ends3[] = {11, 22, 32}, ends5[] = {7, 14, 20, 26, 32};
    pc = layout(8, 3);
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    verify_plan(&c, &p, "Llama-3-8B tp=8 pp=3");
    expect_stages(&p, ends3, 3, "Llama-3-8B pp=3");
    tsr_shard_plan_free(&p);
    pc = layout(1, 5);
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    expect_stages(&p, ends5, 5, "Llama-3-8B pp=5");
    tsr_shard_plan_free(&p);
}

/* ---- multi-head attention: 12 heads / 12 KV heads ---- */

static void test_mha(void) {
    const tsr_model_config c = mha12();
    tsr_shard_plan p;
    tsr_plan_config pc = layout(5, 1);
    /* KV (= query) heads 3,3,2,2,2; 96 FFN blocks -> 20,19,19,19,19;
     * 50257 rows -> 10052 x2, 10051 x3 */
    static const part_row tp5[] = {{{0, 3, 0, 3, 0, 640, 0, 10052}},
                                   {{3, 3, 3, 3, 640, 608, 10052, 10052}},
                                   {{6, 2, 6, 2, 1248, 608, 20104, 10051}},
                                   {{8, 2, 8, 2, 1856, 608, 30155, 10051}},
                                   {{10, 2, 10, 2, 2464, 608, 40206, 10051}}};
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    verify_plan(&c, &p, "MHA tp=5");
    expect_parts(&p, tp5, 5, "MHA tp=5");
    tsr_shard_plan_free(&p);

    pc = layout(12, 2);
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    verify_plan(&c, &p, "MHA tp=12");
    CHECK(!p.kv_replicated, "MHA tp=12 replicated");
    for (int t = 0; t < 12; t++) {
        part_row w = {{t, 1, t, 1, 256 * t, 256, 4188 * t + (t > 0), t == 0 ? 4189 : 4188}};
        expect_part(&p, t, &w, "MHA tp=12");
    }
    static const int ends2[] = {6, 12};
    expect_stages(&p, ends2, 2, "MHA pp=2");
    tsr_shard_plan_free(&p);

    /* one query head per KV head: nothing to replicate into */
    const int refused[] = {13, 24, 36};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        pc = layout(refused[i], 1);
        CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID,
                  "12 attention heads / 12 KV heads", "(12)");
    }

    /* one KV head (MQA): any tp up to the head count, listed with an ellipsis */
    tsr_model_config mqa = shape(2048, 4, 64, 1, 32, 8192, 1000, 1);
    pc = layout(48, 1);
    CHECK_OK(tsr_shard_plan_init(&mqa, &pc, &p));
    verify_plan(&mqa, &p, "MQA tp=48");
    CHECK(p.kv_ranks_per_head == 48, "MQA share %d", p.kv_ranks_per_head);
    /* 64 heads over 48 ranks: 16 ranks with 2, 32 with 1 */
    part_row w0 = {{0, 2, 0, 1, 0, 192, 0, 21}}, w47 = {{63, 1, 0, 1, 8032, 160, 980, 20}};
    expect_part(&p, 0, &w0, "MQA tp=48");
    expect_part(&p, 47, &w47, "MQA tp=48");
    tsr_shard_plan_free(&p);
    pc = layout(65, 1);
    CHECK_ERR(tsr_shard_plan_init(&mqa, &pc, &p), TSR_ERR_INVALID, "tp=65",
              "64 attention heads / 1 KV heads", "(1, 2, 3, 4, 5, ..., 64)");
}

/* ---- FFN and vocabulary fall-backs ---- */

static void test_columns(void) {
    tsr_shard_plan p;
    tsr_plan_config pc = layout(3, 1);

    /* n_ff not a multiple of 32: plain split; vocab 10 -> 4,3,3 */
    tsr_model_config c = shape(64, 3, 4, 4, 16, 1000, 10, 1);
    static const part_row odd[] = {{{0, 2, 0, 2, 0, 334, 0, 4}},
                                   {{2, 1, 2, 1, 334, 333, 4, 3}},
                                   {{3, 1, 3, 1, 667, 333, 7, 3}}};
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    verify_plan(&c, &p, "n_ff 1000 tp=3");
    expect_parts(&p, odd, 3, "n_ff 1000 tp=3");
    CHECK(p.ff_block == 1, "ff_block %d", p.ff_block);
    tsr_shard_plan_free(&p);

    /* a multiple of 32 but fewer blocks than ranks: plain split 22,21,21 */
    c.n_ff = 64;
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    verify_plan(&c, &p, "n_ff 64 tp=3");
    CHECK(p.parts[0].ff_begin == 0 && p.parts[0].n_ff == 22 && p.parts[1].ff_begin == 22 &&
              p.parts[1].n_ff == 21 && p.parts[2].ff_begin == 43 && p.parts[2].n_ff == 21,
          "n_ff 64 tp=3 split");
    tsr_shard_plan_free(&p);

    /* three blocks over two ranks: 64 + 32 */
    c.n_ff = 96;
    pc = layout(2, 1);
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    verify_plan(&c, &p, "n_ff 96 tp=2");
    CHECK(p.ff_block == 32 && p.parts[0].n_ff == 64 && p.parts[1].ff_begin == 64 &&
              p.parts[1].n_ff == 32,
          "n_ff 96 tp=2 split");
    tsr_shard_plan_free(&p);

    /* too few columns or rows for every rank */
    pc = layout(3, 1);
    c.n_ff = 2;
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "tp=3", "2 FFN columns");
    c.n_ff = 96;
    c.n_vocab = 2;
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "tp=3", "2 vocabulary rows");
}

/* ---- degrees, pp_layers and the model's own sizes ---- */

static void test_refusals(void) {
    const tsr_model_config c = smollm2();
    tsr_shard_plan p;
    tsr_plan_config pc = layout(0, 1);
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "tp=0", "pp=1");
    pc = layout(2, 0);
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "tp=2", "pp=0");
    pc = layout(-1, -1);
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "tp=-1", "pp=-1");
    pc = layout(1, 31);
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "pp=31", "30 layers");
    pc = layout(1, 30); /* one layer per stage is fine */
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    verify_plan(&c, &p, "SmolLM2 pp=30");
    for (int s = 0; s < 30; s++)
        CHECK(p.stages[s].layer_begin == s && p.stages[s].layer_end == s + 1, "pp=30 stage %d", s);
    tsr_shard_plan_free(&p);

    /* model sizes the plan cannot work with */
    tsr_model_config bad = c;
    bad.n_head_kv = 4;
    CHECK_ERR(tsr_shard_plan_init(&bad, NULL, &p), TSR_ERR_INVALID, "9 attention heads",
              "4 KV heads");
    bad = c;
    bad.n_ff = 0;
    CHECK_ERR(tsr_shard_plan_init(&bad, NULL, &p), TSR_ERR_INVALID, "n_ff = 0");
    bad = c;
    bad.n_layer = -3;
    CHECK_ERR(tsr_shard_plan_init(&bad, NULL, &p), TSR_ERR_INVALID, "n_layer = -3");

    /* NULL config: one rank holding everything */
    CHECK_OK(tsr_shard_plan_init(&c, NULL, &p));
    verify_plan(&c, &p, "SmolLM2 one rank");
    expect_parts(&p, smol_tp1, 1, "SmolLM2 one rank");
    tsr_shard_plan_free(&p);
    tsr_shard_plan_free(&p); /* zeroed: harmless */
    tsr_shard_plan_free(NULL);
}

static void test_pp_layers(void) {
    const tsr_model_config c = smollm2();
    tsr_shard_plan p;
    tsr_plan_config pc = layout(3, 2);

    static const int l16_14[] = {16, 14}, ends16[] = {16, 30};
    pc.pp_layers = l16_14;
    pc.n_pp_layers = 2;
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    verify_plan(&c, &p, "pp-layers 16,14");
    expect_stages(&p, ends16, 2, "pp-layers 16,14");
    expect_parts(&p, smol_tp3, 3, "pp-layers 16,14");
    tsr_shard_plan_free(&p);

    static const int l1_28_1[] = {1, 28, 1}, ends1[] = {1, 29, 30};
    pc = layout(2, 3);
    pc.pp_layers = l1_28_1;
    pc.n_pp_layers = 3;
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    verify_plan(&c, &p, "pp-layers 1,28,1");
    expect_stages(&p, ends1, 3, "pp-layers 1,28,1");
    tsr_shard_plan_free(&p);

    static const int l30[] = {30}, ends30[] = {30};
    pc = layout(1, 1);
    pc.pp_layers = l30;
    pc.n_pp_layers = 1;
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    expect_stages(&p, ends30, 1, "pp-layers 30");
    tsr_shard_plan_free(&p);

    /* wrong count */
    pc = layout(1, 3);
    pc.pp_layers = l16_14;
    pc.n_pp_layers = 2;
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "2 entries", "pp=3", "30 layers");
    pc = layout(1, 2);
    pc.pp_layers = l1_28_1;
    pc.n_pp_layers = 3;
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "3 entries", "pp=2");
    /* zero and negative entries */
    static const int l30_0[] = {30, 0}, l31_m1[] = {31, -1}, l0_30[] = {0, 30};
    pc.n_pp_layers = 2;
    pc.pp_layers = l30_0;
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "entry 1 is 0", "pp=2",
              "30 layers");
    pc.pp_layers = l0_30;
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "entry 0 is 0");
    pc.pp_layers = l31_m1;
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "entry 1 is -1");
    /* wrong sums */
    static const int l16_13[] = {16, 13}, l16_15[] = {16, 15};
    pc.pp_layers = l16_13;
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "sum to 29", "pp=2", "30 layers");
    pc.pp_layers = l16_15;
    CHECK_ERR(tsr_shard_plan_init(&c, &pc, &p), TSR_ERR_INVALID, "sum to 31", "30 layers");
    CHECK(p.stages == NULL && p.parts == NULL, "refused plan not zeroed");
}

/* ---- random shapes: refused exactly when the rules say, sound otherwise ---- */

static void test_sweep(void) {
    tu_rng rng = {20240607};
    int n_ok = 0, n_refused = 0;
    for (int iter = 0; iter < 3000; iter++) {
        int nkv = 1 + (int)tu_rng_below(&rng, 12), g = 1 + (int)tu_rng_below(&rng, 8);
        int n_ff = 1 + (int)tu_rng_below(&rng, 4) * 32 * (int)tu_rng_below(&rng, 60) +
                   (tu_rng_below(&rng, 2) ? 0 : (int)tu_rng_below(&rng, 40));
        if (n_ff > 1 && tu_rng_below(&rng, 2))
            n_ff -= 1; /* often an exact multiple of 32 */
        tsr_model_config c = shape(128, 1 + (int)tu_rng_below(&rng, 40), nkv * g, nkv, 16, n_ff,
                                   1 + (int)tu_rng_below(&rng, 300), (int)tu_rng_below(&rng, 2));
        int tp = 1 + (int)tu_rng_below(&rng, (uint64_t)(c.n_head + 3));
        int pp = 1 + (int)tu_rng_below(&rng, (uint64_t)(c.n_layer + 1));
        int want_ok = (tp <= nkv || (tp % nkv == 0 && tp <= c.n_head)) && tp <= c.n_ff &&
                      tp <= c.n_vocab && pp <= c.n_layer;
        char ctx[160];
        snprintf(ctx, sizeof ctx,
                 "sweep %d: %d heads / %d KV, ff %d, vocab %d, %d layers, tp=%d pp=%d", iter,
                 c.n_head, nkv, c.n_ff, c.n_vocab, c.n_layer, tp, pp);
        tsr_plan_config pc = layout(tp, pp);
        tsr_shard_plan p;
        tsr_error_clear();
        tsr_status st = tsr_shard_plan_init(&c, &pc, &p);
        if (!want_ok) {
            CHECK(st == TSR_ERR_INVALID, "%s: got %s, want refusal", ctx, tsr_status_str(st));
            char tps[16], pps[16];
            snprintf(tps, sizeof tps, "tp=%d", tp);
            snprintf(pps, sizeof pps, "pp=%d", pp);
            CHECK(strstr(tsr_error_msg(), tps) || strstr(tsr_error_msg(), pps),
                  "%s: message \"%s\" names neither degree", ctx, tsr_error_msg());
            n_refused++;
            continue;
        }
        CHECK(st == TSR_OK, "%s: refused: %s", ctx, tsr_error_msg());
        verify_plan(&c, &p, ctx);
        int *counts = tu_xmalloc(sizeof(int) * (size_t)pp);
        for (int s = 0; s < pp; s++)
            counts[s] = p.stages[s].layer_end - p.stages[s].layer_begin;
        check_even(counts, pp, 1, "layer", ctx);
        free(counts);
        tsr_shard_plan_free(&p);
        n_ok++;
    }
    CHECK(n_ok > 500 && n_refused > 300, "sweep too one-sided: %d ok, %d refused", n_ok, n_refused);
}

/* ---- world size, slices, describe ---- */

static void test_world_and_slice(void) {
    const tsr_model_config c = smollm2();
    tsr_shard_plan p;
    tsr_plan_config pc = layout(2, 2);
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    CHECK_OK(tsr_shard_plan_check_world(&p, 4));
    CHECK_ERR(tsr_shard_plan_check_world(&p, 3), TSR_ERR_INVALID,
              "tp=2 x pp=2 needs 4 ranks, the job has 3");
    CHECK_ERR(tsr_shard_plan_check_world(&p, 8), TSR_ERR_INVALID, "needs 4 ranks, the job has 8");
    CHECK_ERR(tsr_shard_plan_check_world(&p, 0), TSR_ERR_INVALID, "the job has 0");

    tsr_model_slice s;
    CHECK_OK(tsr_shard_plan_slice(&p, 1, 1, &s));
    CHECK(s.layer_begin == 15 && s.layer_end == 30 && s.head_begin == 6 && s.n_head == 3 &&
              s.kv_head_begin == 2 && s.n_kv_head == 1 && s.ff_begin == 768 && s.n_ff == 768 &&
              s.vocab_begin == 24576 && s.n_vocab == 24576,
          "slice (1, 1)");
    CHECK_ERR(tsr_shard_plan_slice(&p, 2, 0, &s), TSR_ERR_RANGE, "tp 2", "tp=2 x pp=2");
    CHECK_ERR(tsr_shard_plan_slice(&p, 0, 2, &s), TSR_ERR_RANGE, "pp 2");
    CHECK_ERR(tsr_shard_plan_slice(&p, -1, 0, &s), TSR_ERR_RANGE, "tp -1");
    CHECK_ERR(tsr_shard_plan_slice(&p, 0, -1, &s), TSR_ERR_RANGE, "pp -1");
    tsr_shard_plan_free(&p);
}

static void test_describe(void) {
    const tsr_model_config c = smollm2();
    tsr_shard_plan p;
    tsr_plan_config pc = layout(2, 2);
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    char buf[2048];
    int len = tsr_shard_plan_describe(&p, buf, sizeof buf);
    CHECK(len > 0 && (size_t)len == strlen(buf), "describe returned %d for %zu chars", len,
          strlen(buf));
    const char *want[] = {"tp=2 x pp=2 (4 ranks)",
                          "30 layers",
                          "9 attention heads / 3 KV heads",
                          "1536 FFN columns",
                          "49152 vocabulary rows",
                          "0-14 (15)",
                          "15-29 (15)",
                          "0-5 (6)",
                          "6-8 (3)",
                          "0-1 (2)",
                          "2 (1)",
                          "768-1535 (768)",
                          "24576-49151 (24576)"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK(strstr(buf, want[i]), "describe lacks \"%s\":\n%s", want[i], buf);
    CHECK(!strstr(buf, "replicated"), "tp=2 is not replicated:\n%s", buf);

    /* measuring and cutting behave like snprintf */
    CHECK(tsr_shard_plan_describe(&p, NULL, 0) == len, "measure");
    char small[20];
    memset(small, 'x', sizeof small);
    CHECK(tsr_shard_plan_describe(&p, small, sizeof small) == len, "cut length");
    CHECK(strlen(small) == sizeof small - 1 && memcmp(small, buf, sizeof small - 1) == 0,
          "cut text \"%s\"", small);
    tsr_shard_plan_free(&p);

    pc = layout(6, 1);
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    len = tsr_shard_plan_describe(&p, buf, sizeof buf);
    CHECK(len > 0 && (size_t)len < sizeof buf, "describe length %d", len);
    CHECK(strstr(buf, "KV heads replicated: 2 TP ranks"), "replication not shown:\n%s", buf);
    if (getenv("TSR_TEST_VERBOSE"))
        fputs(buf, stderr);
    tsr_shard_plan_free(&p);
}

/* ---- per-rank weight bytes ---- */

/* Largest per-rank weight bytes of a layout, 0 when the layout is refused. */
static size_t max_rank_bytes(const tsr_model_config *c, int tp, int pp, size_t *sum) {
    tsr_plan_config pc = layout(tp, pp);
    tsr_shard_plan p;
    if (tsr_shard_plan_init(c, &pc, &p) != TSR_OK)
        return 0;
    size_t mx = 0, total = 0;
    for (int s = 0; s < pp; s++)
        for (int t = 0; t < tp; t++) {
            size_t b = tsr_shard_plan_weight_bytes(&p, c, t, s, 2);
            CHECK(b > 0, "tp=%d pp=%d rank (%d, %d): no weights", tp, pp, t, s);
            mx = b > mx ? b : mx;
            total += b;
        }
    tsr_shard_plan_free(&p);
    if (sum)
        *sum = total;
    return mx;
}

static void test_weight_bytes(void) {
    const tsr_model_config c = smollm2();
    tsr_shard_plan p;

    /* the published parameter counts */
    CHECK_OK(tsr_shard_plan_init(&c, NULL, &p));
    size_t full = tsr_shard_plan_weight_bytes(&p, &c, 0, 0, 1);
    CHECK(full == 134515008u, "SmolLM2-135M: %zu parameters, want 134515008", full);
    CHECK(tsr_shard_plan_weight_bytes(&p, &c, 0, 0, 2) == 2 * full, "bf16 bytes");
    CHECK(tsr_shard_plan_weight_bytes(&p, &c, 1, 0, 2) == 0, "rank outside the plan");
    tsr_model_config other = c;
    other.n_ff = 1024;
    CHECK(tsr_shard_plan_weight_bytes(&p, &other, 0, 0, 2) == 0, "config of another model");
    tsr_shard_plan_free(&p);

    const tsr_model_config l3 = llama3_8b();
    CHECK_OK(tsr_shard_plan_init(&l3, NULL, &p));
    size_t l3_full = tsr_shard_plan_weight_bytes(&p, &l3, 0, 0, 1);
    CHECK(l3_full == 8030261248u, "Llama-3-8B: %zu parameters, want 8030261248", l3_full);
    tsr_shard_plan_free(&p);

    /* tp=2 x pp=2, by hand: a layer of rank 0 holds 6 query heads (384 rows),
     * 2 KV heads (128 rows), 768 FFN columns and two norms of 576:
     * 2*384*576 + 2*128*576 + 3*768*576 + 2*576 = 1918080; rank 1 (3 heads,
     * 1 KV head): 2*192*576 + 2*64*576 + 3*768*576 + 1152 = 1623168. Stage 0
     * adds 24576 embedding rows (14155776); stage 1 the same rows (tied head)
     * and the output norm. */
    tsr_plan_config pc = layout(2, 2);
    CHECK_OK(tsr_shard_plan_init(&c, &pc, &p));
    const size_t want[2][2] = {
        {15 * 1918080u + 14155776u, 15 * 1623168u + 14155776u},
        {15 * 1918080u + 14155776u + 576u, 15 * 1623168u + 14155776u + 576u}};
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < 2; t++) {
            size_t got = tsr_shard_plan_weight_bytes(&p, &c, t, s, 1);
            CHECK(got == want[s][t], "tp=2 pp=2 rank (%d, %d): %zu parameters, want %zu", t, s, got,
                  want[s][t]);
        }
    tsr_shard_plan_free(&p);

    /* an untied model on one rank holds embedding and head */
    tsr_model_config untied = c;
    untied.tied_embeddings = 0;
    CHECK_OK(tsr_shard_plan_init(&untied, NULL, &p));
    CHECK(tsr_shard_plan_weight_bytes(&p, &untied, 0, 0, 1) == full + 49152u * 576u, "untied head");
    tsr_shard_plan_free(&p);
    /* Qwen2-style biases */
    tsr_model_config biased = c;
    biased.qkv_bias = 1;
    CHECK_OK(tsr_shard_plan_init(&biased, NULL, &p));
    CHECK(tsr_shard_plan_weight_bytes(&p, &biased, 0, 0, 1) == full + 30u * (576 + 2 * 192),
          "Q/K/V biases");
    tsr_shard_plan_free(&p);

    /* the largest rank's share falls whenever tp or pp grows (and the layout
     * is valid); replication means the ranks together hold at least the model */
    size_t mx[11][5] = {{0}};
    for (int tp = 1; tp <= 10; tp++)
        for (int pp = 1; pp <= 4; pp++) {
            size_t sum = 0;
            mx[tp][pp] = max_rank_bytes(&c, tp, pp, &sum);
            if (mx[tp][pp]) {
                CHECK(sum >= 2 * full, "tp=%d pp=%d: ranks hold %zu bytes of %zu", tp, pp, sum,
                      2 * full);
                CHECK(mx[tp][pp] * (size_t)(tp * pp) >= 2 * full, "tp=%d pp=%d: max share %zu", tp,
                      pp, mx[tp][pp]);
            }
        }
    CHECK(mx[1][1] == 2 * full, "one rank holds %zu", mx[1][1]);
    for (int tp = 1; tp <= 10; tp++)
        for (int pp = 1; pp <= 4; pp++)
            for (int tp2 = tp; tp2 <= 10; tp2++)
                for (int pp2 = pp; pp2 <= 4; pp2++) {
                    if (!mx[tp][pp] || !mx[tp2][pp2] || (tp2 == tp && pp2 == pp))
                        continue;
                    CHECK(mx[tp2][pp2] < mx[tp][pp],
                          "largest rank: tp=%d pp=%d holds %zu, tp=%d pp=%d holds %zu", tp2, pp2,
                          mx[tp2][pp2], tp, pp, mx[tp][pp]);
                }
    /* and tp=9 x pp=4 is well under a tenth of the model */
    CHECK(mx[9][4] * 10 < 2 * full, "tp=9 pp=4 largest rank %zu", mx[9][4]);
}

int main(void) {
    test_smollm2_grid();
    test_llama3_8b();
    test_mha();
    test_columns();
    test_refusals();
    test_pp_layers();
    test_sweep();
    test_world_and_slice();
    test_describe();
    test_weight_bytes();
    printf("test_plan: ok\n");
    return 0;
}
