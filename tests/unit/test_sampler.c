/* tests/unit/test_sampler.c - unit tests for runtime/sampler.
 *
 * Greedy is argmax with ties to the lowest index; a seed fixes the sequence;
 * top-k = 1 and a tiny top-p are greedy at any temperature; min-p, top-k and
 * top-p keep exactly the tokens they should; the empirical distribution at a
 * temperature matches the softmax (chi-square over 20000 draws, seeded so the
 * test is deterministic); repetition, frequency and presence penalties move
 * logits by exactly the documented amounts (checked by making the penalised
 * token lose or win the argmax by a hair) over the documented window; banned
 * tokens never come out; parameter validation; sampling from a row's top-k
 * candidates (the engine's TSR_OUT_TOPK) picks what sampling from the whole
 * row picks, draw for draw; so does top_k off from the best candidates and
 * the row's normaliser wherever they decide the draw, and the whole row with
 * that normaliser where they do not; the partial sort with
 * top_k off against a plain reference. Exits 0 on success, 1 with a
 * message at the first failure. */
#include "runtime/sample/sampler.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/check.h"

static tsr_sampling_params defaults(void) {
    tsr_sampling_params p = TSR_SAMPLING_PARAMS_INIT;
    return p;
}

/* Lowest index of the largest value, written independently of tsr_argmax. */
static int32_t ref_argmax(const float *x, int n) {
    float best = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > best)
            best = x[i];
    for (int i = 0; i < n; i++)
        if (x[i] == best)
            return i;
    return 0;
}

static int32_t draw(tsr_sampler *s, const float *logits) {
    int32_t t = -1;
    CHECK_OK(tsr_sampler_sample(s, logits, NULL, 0, &t));
    CHECK(t >= 0 && t < s->n_vocab, "token %d out of range", t);
    return t;
}

static void test_argmax(tu_rng *r) {
    float a[] = {1, 3, 3, 2};
    CHECK(tsr_argmax(a, 4) == 1, "tie goes to the lowest index");
    float b[] = {-INFINITY, -5, -7, -5};
    CHECK(tsr_argmax(b, 4) == 1, "negative values and -inf");
    float c[] = {2, 2, 2};
    CHECK(tsr_argmax(c, 3) == 0, "all equal");
    CHECK(tsr_argmax(c, 1) == 0, "n = 1");
    float d[] = {-1, -2, 5};
    CHECK(tsr_argmax(d, 3) == 2, "last");
    float x[257];
    for (int it = 0; it < 200; it++) {
        tu_rng_fill(r, x, 257, -10, 10);
        if (it % 2) /* plant a tie for the maximum */
            x[tu_rng_below(r, 257)] = x[tu_rng_below(r, 257)] = 11.0f;
        CHECK(tsr_argmax(x, 257) == ref_argmax(x, 257), "argmax of random row %d", it);
    }
}

static void test_greedy(tu_rng *r) {
    enum { V = 100 };
    tsr_sampling_params p = defaults();
    tsr_sampler s;
    CHECK_OK(tsr_sampler_init(&s, &p, V));
    float x[V], keep[V];
    for (int it = 0; it < 100; it++) {
        tu_rng_fill(r, x, V, -5, 5);
        if (it % 3 == 0)
            x[17] = x[42] = 6.0f;
        memcpy(keep, x, sizeof x);
        int32_t t = draw(&s, x);
        CHECK(t == ref_argmax(x, V), "greedy %d is not the argmax %d", t, ref_argmax(x, V));
        CHECK(!memcmp(keep, x, sizeof x), "sample modified the logits");
        CHECK_OK(tsr_sampler_accept(&s, &t, 1));
    }
    tsr_sampler_free(&s);
    tsr_sampler_free(&s); /* zeroed by the first free */
    tsr_sampler_free(NULL);
}

/* Logits for draw i of a run (the same for every sampler in a comparison). */
static void logits_for(uint64_t i, float *x, int n) {
    tu_rng r = {0xabcdef00ull + i};
    tu_rng_fill(&r, x, (size_t)n, -3, 3);
}

static void run_seq(const tsr_sampling_params *p, int n_vocab, int32_t *out, int n) {
    tsr_sampler s;
    CHECK_OK(tsr_sampler_init(&s, p, n_vocab));
    float *x = tu_xmalloc((size_t)n_vocab * sizeof *x);
    int32_t prompt[3] = {1, 2, 3};
    CHECK_OK(tsr_sampler_accept(&s, prompt, 3));
    for (int i = 0; i < n; i++) {
        logits_for((uint64_t)i, x, n_vocab);
        out[i] = draw(&s, x);
        CHECK_OK(tsr_sampler_accept(&s, &out[i], 1));
    }
    free(x);
    tsr_sampler_free(&s);
}

static void test_seed(void) {
    enum { V = 50, N = 200 };
    tsr_sampling_params p = defaults();
    p.temperature = 0.9f;
    p.top_p = 0.95f;
    p.min_p = 0.01f;
    p.repetition_penalty = 1.1f;
    p.seed = 42;
    int32_t a[N], b[N], c[N];
    run_seq(&p, V, a, N);
    run_seq(&p, V, b, N);
    CHECK(!memcmp(a, b, sizeof a), "same seed, different tokens");
    p.seed = 43;
    run_seq(&p, V, c, N);
    int diff = 0, distinct = 0;
    char seen[V] = {0};
    for (int i = 0; i < N; i++) {
        diff += a[i] != c[i];
        if (!seen[a[i]])
            distinct++, seen[a[i]] = 1;
    }
    CHECK(diff > N / 4, "seeds 42 and 43 differ at only %d of %d draws", diff, N);
    CHECK(distinct > 5, "only %d distinct tokens at temperature 0.9", distinct);
    p.seed = 0; /* a zero seed is a seed like any other */
    run_seq(&p, V, c, N);
    run_seq(&p, V, b, N);
    CHECK(!memcmp(b, c, sizeof b), "seed 0 not reproducible");
}

static void test_greedy_equivalents(tu_rng *r) {
    enum { V = 64 };
    static const float temps[] = {0.1f, 1.0f, 5.0f, 100.0f};
    float x[V];
    for (int k = 0; k < 4; k++)
        for (int mode = 0; mode < 2; mode++) {
            tsr_sampling_params p = defaults();
            p.temperature = temps[k];
            p.seed = (uint64_t)k;
            if (mode == 0)
                p.top_k = 1;
            else
                p.top_p = 1e-6f;
            tsr_sampler s;
            CHECK_OK(tsr_sampler_init(&s, &p, V));
            for (int it = 0; it < 200; it++) {
                tu_rng_fill(r, x, V, -2, 2);
                if (it % 4 == 0)
                    x[5] = x[60] = 2.5f; /* tie: the lowest index */
                int32_t t = draw(&s, x);
                CHECK(t == ref_argmax(x, V), "%s at temperature %g gave %d, argmax %d",
                      mode ? "top_p 1e-6" : "top_k 1", (double)temps[k], t, ref_argmax(x, V));
            }
            tsr_sampler_free(&s);
        }
}

/* Draws n tokens from fixed logits and counts them. */
static void histogram(const tsr_sampling_params *p, const float *x, int v, int n, int *count) {
    tsr_sampler s;
    CHECK_OK(tsr_sampler_init(&s, p, v));
    memset(count, 0, (size_t)v * sizeof *count);
    for (int i = 0; i < n; i++)
        count[draw(&s, x)]++;
    tsr_sampler_free(&s);
}

/* Pearson chi-square of counts against probabilities (tokens with p = 0
 * must have count 0). */
static double chi_square(const int *count, const double *prob, int v, int n) {
    double chi = 0;
    for (int i = 0; i < v; i++) {
        if (prob[i] == 0) {
            CHECK(count[i] == 0, "token %d has probability 0 but came %d times", i, count[i]);
            continue;
        }
        double e = prob[i] * n;
        chi += (count[i] - e) * (count[i] - e) / e;
    }
    return chi;
}

static void softmax_ref(const float *x, int v, double temp, const int *keep, double *prob) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < v; i++)
        if (keep[i] && x[i] > mx)
            mx = x[i];
    for (int i = 0; i < v; i++) {
        prob[i] = keep[i] ? exp((x[i] - mx) / temp) : 0;
        sum += prob[i];
    }
    for (int i = 0; i < v; i++)
        prob[i] /= sum;
}

static void test_distribution(void) {
    enum { V = 5, N = 20000 };
    static const float x[V] = {0.3f, -1.2f, 1.7f, 0.0f, 0.9f};
    static const struct {
        float temp;
        int top_k;
        int keep[V];
    } cases[] = {
        {1.0f, 0, {1, 1, 1, 1, 1}},
        {2.0f, 0, {1, 1, 1, 1, 1}},
        {0.5f, 0, {1, 1, 1, 1, 1}},
        {1.0f, 3, {1, 0, 1, 0, 1}}, /* top 3: 1.7, 0.9, 0.3 renormalised */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tsr_sampling_params p = defaults();
        p.temperature = cases[c].temp;
        p.top_k = cases[c].top_k;
        p.seed = 1000 + c;
        int count[V];
        double prob[V];
        histogram(&p, x, V, N, count);
        softmax_ref(x, V, cases[c].temp, cases[c].keep, prob);
        double chi = chi_square(count, prob, V, N);
        /* 4 degrees of freedom: P(chi2 > 20) = 0.0005 */
        CHECK(chi < 20.0, "temperature %g top_k %d: chi-square %.2f (counts %d %d %d %d %d)",
              (double)cases[c].temp, cases[c].top_k, chi, count[0], count[1], count[2], count[3],
              count[4]);
    }
}

/* probs 0.5, 0.3, 0.15, 0.05 at temperature 1 */
static void test_filters(void) {
    enum { V = 4, N = 8000 };
    const float x[V] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    static const struct {
        const char *what;
        int top_k;
        float top_p, min_p;
        int keep[V];
    } cases[] = {
        {"min_p 0.5 (>= 0.25)", 0, 1.0f, 0.5f, {1, 1, 0, 0}},
        {"min_p 0.2 (>= 0.1)", 0, 1.0f, 0.2f, {1, 1, 1, 0}},
        {"min_p 0.9999", 0, 1.0f, 0.9999f, {1, 0, 0, 0}},
        {"top_k 2", 2, 1.0f, 0, {1, 1, 0, 0}},
        {"top_k 3", 3, 1.0f, 0, {1, 1, 1, 0}},
        {"top_k larger than the vocab", 10, 1.0f, 0, {1, 1, 1, 1}},
        {"top_p 0.7", 0, 0.7f, 0, {1, 1, 0, 0}},
        {"top_p 0.85", 0, 0.85f, 0, {1, 1, 1, 0}},
        {"top_p 0.4", 0, 0.4f, 0, {1, 0, 0, 0}},
        {"top_k 3, top_p 0.7", 3, 0.7f, 0, {1, 1, 0, 0}},
        {"min_p 0.2, top_p 0.7", 0, 0.7f, 0.2f, {1, 1, 0, 0}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tsr_sampling_params p = defaults();
        p.temperature = 1.0f;
        p.top_k = cases[c].top_k;
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        p.seed = 77 + c;
        int count[V];
        double prob[V];
        histogram(&p, x, V, N, count);
        softmax_ref(x, V, 1.0, cases[c].keep, prob);
        for (int i = 0; i < V; i++)
            CHECK(cases[c].keep[i] ? count[i] > 0 : count[i] == 0, "%s: token %d came %d times",
                  cases[c].what, i, count[i]);
        /* the kept tokens keep their relative odds (3 dof at most: 16.3 is p = 0.001) */
        double chi = chi_square(count, prob, V, N);
        CHECK(chi < 16.3, "%s: chi-square %.2f", cases[c].what, chi);
    }
}

/* Greedy pick with a history, under the given penalties. */
static int32_t penalised_pick(float rep, float freq, float pres, int last_n, const int32_t *hist,
                              size_t n_hist, const float *x, int v) {
    tsr_sampling_params p = defaults();
    p.repetition_penalty = rep;
    p.frequency_penalty = freq;
    p.presence_penalty = pres;
    p.penalty_last_n = last_n;
    tsr_sampler s;
    CHECK_OK(tsr_sampler_init(&s, &p, v));
    CHECK_OK(tsr_sampler_accept(&s, hist, n_hist));
    int32_t t = draw(&s, x);
    /* Penalties are applied afresh on each call, not accumulated. */
    CHECK(draw(&s, x) == t && draw(&s, x) == t, "a second sample with the same history differs");
    tsr_sampler_free(&s);
    return t;
}

static void test_penalties(void) {
    enum { V = 8 };
    float x[V];
    for (int i = 0; i < V; i++)
        x[i] = -5.0f - (float)i; /* the rest: far below */
    const int32_t h0[] = {0}, h000[] = {0, 0, 0}, h00[] = {0, 0};

    /* Repetition divides a positive logit ... */
    x[0] = 3.0f, x[1] = 1.49f;
    CHECK(penalised_pick(2.0f, 0, 0, 0, h0, 1, x, V) == 0, "3/2 = 1.5 > 1.49");
    CHECK(penalised_pick(1.0f, 0, 0, 0, h0, 1, x, V) == 0, "no penalty");
    x[1] = 1.51f;
    CHECK(penalised_pick(2.0f, 0, 0, 0, h0, 1, x, V) == 1, "3/2 = 1.5 < 1.51");
    CHECK(penalised_pick(2.0f, 0, 0, 0, h000, 3, x, V) == 1, "repeats divide once");
    CHECK(penalised_pick(2.0f, 0, 0, 0, NULL, 0, x, V) == 0, "empty history");
    /* ... multiplies a negative one. */
    x[0] = -1.0f, x[1] = -1.99f;
    CHECK(penalised_pick(2.0f, 0, 0, 0, h0, 1, x, V) == 1, "-1*2 = -2 < -1.99");
    x[1] = -2.01f;
    CHECK(penalised_pick(2.0f, 0, 0, 0, h0, 1, x, V) == 0, "-1*2 = -2 > -2.01");
    /* A penalty below 1 rewards instead. */
    x[0] = 1.0f, x[1] = 1.9f;
    CHECK(penalised_pick(0.5f, 0, 0, 0, h0, 1, x, V) == 0, "1/0.5 = 2 > 1.9");

    /* Frequency: minus count * f. */
    x[0] = 2.0f, x[1] = 1.09f;
    CHECK(penalised_pick(1.0f, 0.3f, 0, 0, h000, 3, x, V) == 0, "2 - 3*0.3 = 1.1 > 1.09");
    x[1] = 1.11f;
    CHECK(penalised_pick(1.0f, 0.3f, 0, 0, h000, 3, x, V) == 1, "2 - 3*0.3 = 1.1 < 1.11");
    CHECK(penalised_pick(1.0f, 0.3f, 0, 0, h0, 1, x, V) == 0, "2 - 0.3 = 1.7 > 1.11");

    /* Presence: minus p once, whatever the count. */
    x[0] = 2.0f, x[1] = 1.39f;
    CHECK(penalised_pick(1.0f, 0, 0.6f, 0, h000, 3, x, V) == 0, "2 - 0.6 = 1.4 > 1.39");
    x[1] = 1.41f;
    CHECK(penalised_pick(1.0f, 0, 0.6f, 0, h000, 3, x, V) == 1, "2 - 0.6 = 1.4 < 1.41");
    CHECK(penalised_pick(1.0f, 0, 0.6f, 0, h0, 1, x, V) == 1, "2 - 0.6 = 1.4 < 1.41 (once)");
    /* A negative presence penalty is a bonus. */
    x[0] = 1.0f, x[1] = 2.0f;
    CHECK(penalised_pick(1.0f, 0, -1.5f, 0, h0, 1, x, V) == 0, "1 + 1.5 = 2.5 > 2");

    /* All three: 4/2 - 2*0.25 - 0.5 = 1.0 */
    x[0] = 4.0f, x[1] = 0.99f;
    CHECK(penalised_pick(2.0f, 0.25f, 0.5f, 0, h00, 2, x, V) == 0, "combined: 1.0 > 0.99");
    x[1] = 1.01f;
    CHECK(penalised_pick(2.0f, 0.25f, 0.5f, 0, h00, 2, x, V) == 1, "combined: 1.0 < 1.01");

    /* The window: only the last n tokens of the history count. */
    const int32_t hw[] = {0, 5, 6};
    x[0] = 3.0f, x[1] = 1.51f;
    CHECK(penalised_pick(2.0f, 0, 0, 2, hw, 3, x, V) == 0, "token 0 outside the last 2");
    CHECK(penalised_pick(2.0f, 0, 0, 3, hw, 3, x, V) == 1, "token 0 inside the last 3");
    CHECK(penalised_pick(2.0f, 0, 0, 64, hw, 3, x, V) == 1, "window longer than the history");
    CHECK(penalised_pick(2.0f, 0, 0, 0, hw, 3, x, V) == 1, "0 = the whole history");
    CHECK(penalised_pick(2.0f, 0, 0, -1, hw, 3, x, V) == 0, "-1 = no penalties");
    /* Frequency counts only within the window: two of three zeros. */
    const int32_t hf[] = {0, 0, 5, 0, 0};
    x[0] = 2.0f, x[1] = 1.45f;
    CHECK(penalised_pick(1.0f, 0.25f, 0, 3, hf, 5, x, V) == 0, "2 - 2*0.25 = 1.5 > 1.45");
    CHECK(penalised_pick(1.0f, 0.25f, 0, 5, hf, 5, x, V) == 1, "2 - 4*0.25 = 1.0 < 1.45");

    /* Ids outside the vocabulary in the history are ignored. */
    const int32_t hbad[] = {-5, V, V + 100, INT32_MIN, INT32_MAX};
    CHECK(penalised_pick(2.0f, 1.0f, 1.0f, 0, hbad, 5, x, V) == 0, "out-of-vocab history");

    /* A long history (growth), penalties over the default window. */
    tsr_sampling_params p = defaults();
    p.repetition_penalty = 2.0f;
    tsr_sampler s;
    CHECK_OK(tsr_sampler_init(&s, &p, V));
    int32_t tok = 0;
    CHECK_OK(tsr_sampler_accept(&s, &tok, 0)); /* nothing, on an empty history */
    for (int i = 0; i < 1000; i++) {
        tok = i < 500 ? 0 : 2 + i % 5;
        CHECK_OK(tsr_sampler_accept(&s, &tok, 1));
    }
    CHECK(s.n_history == 1000, "history length");
    x[0] = 3.0f, x[1] = 1.51f;
    CHECK(draw(&s, x) == 0, "token 0 is older than the default window of 64");
    tsr_sampler_free(&s);
}

static void test_banned(tu_rng *r) {
    enum { V = 10 };
    float x[V];
    tu_rng_fill(r, x, V, -1, 1);
    x[3] = 5.0f, x[7] = 4.0f;
    tsr_sampling_params p = defaults();
    tsr_sampler s;
    CHECK_OK(tsr_sampler_init(&s, &p, V));
    int32_t t;
    const int32_t ban3[] = {3}, ban_odd[] = {-1, V, 3, INT32_MAX, INT32_MIN};
    CHECK_OK(tsr_sampler_sample(&s, x, ban3, 1, &t));
    CHECK(t == 7, "greedy with the argmax banned gave %d", t);
    CHECK_OK(tsr_sampler_sample(&s, x, ban_odd, 5, &t));
    CHECK(t == 7, "out-of-range bans are ignored (gave %d)", t);
    CHECK_OK(tsr_sampler_sample(&s, x, NULL, 0, &t));
    CHECK(t == 3, "no bans");
    tsr_sampler_free(&s);

    /* Sampling: banned tokens never come out. */
    p.temperature = 1.0f;
    p.seed = 5;
    CHECK_OK(tsr_sampler_init(&s, &p, V));
    for (int i = 0; i < V; i++)
        x[i] = 0.1f * (float)i;
    const int32_t ban[] = {9, 0, 4};
    int count[V] = {0};
    for (int i = 0; i < 3000; i++) {
        CHECK_OK(tsr_sampler_sample(&s, x, ban, 3, &t));
        count[t]++;
    }
    for (int i = 0; i < V; i++)
        CHECK((i == 9 || i == 0 || i == 4) ? count[i] == 0 : count[i] > 0, "token %d came %d times",
              i, count[i]);
    /* Everything banned: an error, not a banned token. */
    int32_t all[V];
    for (int i = 0; i < V; i++)
        all[i] = i;
    t = -7;
    CHECK_ERR(tsr_sampler_sample(&s, x, all, V, &t), TSR_ERR_RANGE, "banned");
    tsr_sampler_free(&s);
    p.temperature = 0;
    CHECK_OK(tsr_sampler_init(&s, &p, V));
    tsr_error_clear();
    tsr_status st = tsr_sampler_sample(&s, x, all, V, &t);
    CHECK(st == TSR_ERR_RANGE, "greedy with every token banned returned %s and token %d",
          tsr_status_str(st), t);
    tsr_sampler_free(&s);
}

static void test_nan(void) {
    float x[4] = {1, 2, NAN, 0.5f};
    tsr_sampling_params p = defaults();
    tsr_sampler s;
    for (int greedy = 0; greedy < 2; greedy++) {
        p.temperature = greedy ? 0.0f : 1.0f;
        CHECK_OK(tsr_sampler_init(&s, &p, 4));
        int32_t t;
        CHECK_ERR(tsr_sampler_sample(&s, x, NULL, 0, &t), TSR_ERR_RANGE, "NaN");
        tsr_sampler_free(&s);
    }
    /* One token: always it. */
    p.temperature = 0.7f;
    CHECK_OK(tsr_sampler_init(&s, &p, 1));
    float one = -3.0f;
    for (int i = 0; i < 10; i++)
        CHECK(draw(&s, &one) == 0, "vocab of one");
    tsr_sampler_free(&s);
}

static void test_validate(void) {
    tsr_sampling_params p = defaults();
    CHECK_OK(tsr_sampling_params_validate(&p));
    static const struct {
        const char *field;
        float value;
        int ok;
    } cases[] = {
        {"temperature", -0.1f, 0},
        {"temperature", NAN, 0},
        {"temperature", INFINITY, 0},
        {"temperature", 0.0f, 1},
        {"temperature", 2.0f, 1},
        {"top_p", 0.0f, 0},
        {"top_p", 1.5f, 0},
        {"top_p", -0.5f, 0},
        {"top_p", NAN, 0},
        {"top_p", 1.0f, 1},
        {"top_p", 1e-6f, 1},
        {"min_p", 1.0f, 0},
        {"min_p", -0.1f, 0},
        {"min_p", NAN, 0},
        {"min_p", 0.0f, 1},
        {"min_p", 0.99f, 1},
        {"repetition_penalty", 0.0f, 0},
        {"repetition_penalty", -1.0f, 0},
        {"repetition_penalty", NAN, 0},
        {"repetition_penalty", INFINITY, 0},
        {"repetition_penalty", 0.5f, 1},
        {"frequency_penalty", INFINITY, 0},
        {"frequency_penalty", -2.0f, 1},
        {"presence_penalty", NAN, 0},
        {"presence_penalty", 1.5f, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        p = defaults();
        const char *f = cases[i].field;
        float v = cases[i].value;
        if (!strcmp(f, "temperature"))
            p.temperature = v;
        else if (!strcmp(f, "top_p"))
            p.top_p = v;
        else if (!strcmp(f, "min_p"))
            p.min_p = v;
        else if (!strcmp(f, "repetition_penalty"))
            p.repetition_penalty = v;
        else if (!strcmp(f, "frequency_penalty"))
            p.frequency_penalty = v;
        else
            p.presence_penalty = v;
        if (cases[i].ok) {
            CHECK(tsr_sampling_params_validate(&p) == TSR_OK, "%s = %g refused", f, (double)v);
        } else {
            const char *name = strstr(f, "_penalty") && f[0] != 'r' ? "penalt" : f;
            CHECK_ERR(tsr_sampling_params_validate(&p), TSR_ERR_INVALID, name);
            /* init refuses the same, and leaves a sampler that is safe to free */
            tsr_sampler s;
            CHECK_ERR(tsr_sampler_init(&s, &p, 10), TSR_ERR_INVALID, name);
            tsr_sampler_free(&s);
        }
    }
    p = defaults();
    p.top_k = -1;
    CHECK_ERR(tsr_sampling_params_validate(&p), TSR_ERR_INVALID, "top_k");
    p = defaults();
    p.penalty_last_n = -2;
    CHECK_ERR(tsr_sampling_params_validate(&p), TSR_ERR_INVALID, "penalty_last_n");
    p.penalty_last_n = -1;
    CHECK_OK(tsr_sampling_params_validate(&p));
}

/* A row's k best as the engine's TSR_OUT_TOPK brings them: sorted by value,
 * then the lower id (written here by selection, not with the sampler's
 * sort), -1 past the row. */
static void ref_top(const float *x, int n, int k, float *val, int32_t *ids) {
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            int taken = 0;
            for (int q = 0; q < j && !taken; q++)
                taken = ids[q] == i;
            if (!taken && (best < 0 || x[i] > x[best]))
                best = i;
        }
        val[j] = best < 0 ? -INFINITY : x[best];
        ids[j] = best;
    }
}

/* tsr_sampler_sample_top on a row's best candidates picks what
 * tsr_sampler_sample picks from the whole row, draw for draw, for top_k
 * from 1 to past the row, with temperatures, top_p, min_p, ties and -inf
 * entries; tsr_sampler_candidates_needed says when that holds. */
static void test_sample_top(tu_rng *r) {
    enum { V = 300, K = 256 };
    static float x[V], val[K];
    static int32_t ids[K];
    static const int top_ks[] = {1, 2, 7, 40, 256};
    for (int c = 0; c < 40; c++) {
        tu_rng_fill(r, x, V, -6, 6);
        for (int i = 0; i < 12; i++) /* ties and banned-looking entries */
            x[tu_rng_below(r, V)] = i < 8 ? 2.5f : -INFINITY;
        tsr_sampling_params p = defaults();
        p.top_k = top_ks[c % 5];
        p.temperature = c % 7 == 0 ? 0.0f : 0.3f + 0.1f * (float)(c % 15);
        p.top_p = c % 3 == 0 ? 0.85f : 1.0f;
        p.min_p = c % 4 == 1 ? 0.03f : 0.0f;
        p.seed = 77 + (uint64_t)c;
        CHECK(tsr_sampler_candidates_needed(&p, K) == (p.temperature == 0 ? 1 : p.top_k),
              "candidates needed for top_k %d", p.top_k);
        const int k = p.temperature == 0 ? 3 : p.top_k + c % 3; /* more than needed is fine */
        ref_top(x, V, k < K ? k : K, val, ids);
        tsr_sampler whole, top;
        CHECK_OK(tsr_sampler_init(&whole, &p, V));
        CHECK_OK(tsr_sampler_init(&top, &p, V));
        /* some cases ban tokens (min_tokens, ignore_eos): the two best and
         * one elsewhere, with as many more candidates */
        int32_t ban[3] = {ids[0], ids[1], (int32_t)tu_rng_below(r, V)};
        const size_t n_ban = c % 3 == 2 ? 3 : 0;
        if (n_ban) {
            const int k2 = k + 3 < K ? k + 3 : K;
            ref_top(x, V, k2, val, ids);
            ban[0] = ids[0], ban[1] = ids[1];
        }
        const int kk = n_ban ? (k + 3 < K ? k + 3 : K) : (k < K ? k : K);
        for (int d = 0; d < 200; d++) {
            int32_t a, b;
            CHECK_OK(tsr_sampler_sample(&whole, x, n_ban ? ban : NULL, n_ban, &a));
            CHECK_OK(tsr_sampler_sample_top(&top, val, ids, kk, n_ban ? ban : NULL, n_ban, &b));
            CHECK(a == b,
                  "case %d draw %d (top_k %d, T %g, top_p %g, min_p %g): the row gave %d, "
                  "the candidates %d",
                  c, d, p.top_k, (double)p.temperature, (double)p.top_p, (double)p.min_p, a, b);
        }
        tsr_sampler_free(&whole);
        tsr_sampler_free(&top);
    }
    /* when candidates cannot do: penalties, or no top_k within the limit */
    tsr_sampling_params p = defaults();
    p.temperature = 1.0f;
    p.top_k = 0;
    CHECK(tsr_sampler_candidates_needed(&p, K) == 0, "no top_k needs the row");
    p.top_k = K + 1;
    CHECK(tsr_sampler_candidates_needed(&p, K) == 0, "top_k over the limit needs the row");
    p.top_k = 40;
    p.repetition_penalty = 1.1f;
    CHECK(tsr_sampler_candidates_needed(&p, K) == 0, "a penalty needs the row");
    p.penalty_last_n = -1; /* penalties off by window */
    CHECK(tsr_sampler_candidates_needed(&p, K) == 40, "a penalty with no window is off");
    /* a NaN candidate fails as a NaN row does; an empty list is refused */
    tsr_sampler s;
    p = defaults();
    p.temperature = 1.0f;
    p.top_k = 2;
    CHECK_OK(tsr_sampler_init(&s, &p, V));
    float nv[2] = {NAN, 1.0f};
    int32_t ni[2] = {5, 6}, none[2] = {-1, -1};
    int32_t t;
    CHECK(tsr_sampler_sample_top(&s, nv, ni, 2, NULL, 0, &t) == TSR_ERR_RANGE,
          "NaN candidate accepted");
    CHECK(tsr_sampler_sample_top(&s, nv, none, 2, NULL, 0, &t) == TSR_ERR_RANGE,
          "no candidates accepted");
    int32_t big[2] = {V, 6};
    nv[0] = 2.0f;
    CHECK(tsr_sampler_sample_top(&s, nv, big, 2, NULL, 0, &t) == TSR_ERR_RANGE,
          "id past the vocabulary");
    tsr_sampler_free(&s);
}

typedef struct {
    float v;
    int32_t i;
} best_pair;

/* larger value first, then the lower id */
static int cmp_best(const void *a, const void *b) {
    const best_pair *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* The sampler's pipeline with top_k off, written plainly here over a fully
 * sorted row (val, ids best first, -inf entries dropped): probabilities at
 * the temperature over every finite entry, the min_p cut against the best,
 * the top_p cut on the cumulative mass, then the uniform number u scaled to
 * the mass kept. */
static int32_t ref_pick(const float *val, const int32_t *ids, int n, const tsr_sampling_params *p,
                        double u) {
    while (n > 0 && val[n - 1] == -INFINITY)
        n--;
    double *pr = malloc((size_t)n * sizeof *pr), z = 0;
    if (!pr)
        abort();
    for (int i = 0; i < n; i++)
        z += pr[i] = exp(((double)val[i] - val[0]) / p->temperature);
    for (int i = 0; i < n; i++)
        pr[i] /= z;
    int keep = n;
    for (int i = 1; p->min_p > 0 && i < n; i++)
        if (pr[i] < p->min_p * pr[0]) {
            keep = i;
            break;
        }
    double mass = 0;
    for (int i = 0; i < keep; i++) {
        mass += pr[i];
        if (p->top_p < 1 && mass >= p->top_p) {
            keep = i + 1;
            break;
        }
    }
    mass = 0;
    for (int i = 0; i < keep; i++)
        mass += pr[i];
    double acc = 0;
    int pick = keep - 1;
    for (int i = 0; i < keep; i++) {
        acc += pr[i];
        if (u * mass < acc) {
            pick = i;
            break;
        }
    }
    free(pr);
    return ids[pick];
}

/* With top_k off the sampler sorts only the prefix it needs (64, 256, ...
 * candidates): the same tokens as drawing from the fully sorted row, which
 * tsr_sampler_sample_top does when given every token, draw for draw. Flat
 * rows at high temperatures push the cuts and the picks past the first
 * rounds; peaked rows stop in the first. */
static void test_partial_sort(tu_rng *r) {
    enum { V = 20000 };
    static float x[V], val[V];
    static int32_t ids[V];
    static best_pair pairs[V];
    for (int c = 0; c < 12; c++) {
        const float spread = c % 3 == 0 ? 1.0f : c % 3 == 1 ? 8.0f : 30.0f;
        tu_rng_fill(r, x, V, -spread, spread);
        for (int i = 0; i < 20; i++)
            x[tu_rng_below(r, V)] = i < 10 ? spread * 0.5f : -INFINITY; /* ties, bans */
        tsr_sampling_params p = defaults();
        p.temperature = c % 4 == 0 ? 4.0f : 0.5f + 0.25f * (float)(c % 5);
        p.top_p = c % 3 == 2 ? 1.0f : c % 3 == 1 ? 0.97f : 0.6f;
        p.min_p = c % 4 == 3 ? 0.001f : 0.0f;
        p.seed = 500 + (uint64_t)c;
        for (int i = 0; i < V; i++)
            pairs[i].v = x[i], pairs[i].i = i;
        qsort(pairs, V, sizeof pairs[0], cmp_best);
        for (int i = 0; i < V; i++)
            val[i] = pairs[i].v, ids[i] = pairs[i].i;
        tsr_sampler part, full;
        CHECK_OK(tsr_sampler_init(&part, &p, V));
        CHECK_OK(tsr_sampler_init(&full, &p, V));
        for (int d = 0; d < 100; d++) {
            int32_t a, b;
            const int32_t want = ref_pick(val, ids, V, &p, tsr_sampler_peek_unit(&part));
            CHECK_OK(tsr_sampler_sample(&part, x, NULL, 0, &a));
            CHECK_OK(tsr_sampler_sample_top(&full, val, ids, V, NULL, 0, &b));
            CHECK(a == want && b == want,
                  "case %d draw %d (T %g, top_p %g, min_p %g, spread %g): the partial sort gave "
                  "%d, the full sort %d, the reference %d",
                  c, d, (double)p.temperature, (double)p.top_p, (double)p.min_p, (double)spread, a,
                  b, want);
        }
        tsr_sampler_free(&part);
        tsr_sampler_free(&full);
    }
}

/* Top_k off from a row's best K candidates plus its (max, sum) as the
 * engine brings them (the sum rounded to f32): where
 * tsr_sampler_pick_sorted says the candidates decide the draw,
 * tsr_sampler_sample_row_top picks what tsr_sampler_sample picks from the
 * whole row, draw for draw; where it says not, sample_row_top refuses and
 * the whole row is drawn from instead (the engine's fallback), still in step. Both
 * outcomes must occur. Also: which parameters qualify. */
static void test_row_top(tu_rng *r) {
    enum { V = 3000, K = 64 };
    static float x[V], val[K];
    static int32_t ids[K];
    long decided = 0, fell_back = 0;
    for (int c = 0; c < 24; c++) {
        const float spread = c % 3 == 0 ? 2.0f : c % 3 == 1 ? 8.0f : 20.0f;
        tu_rng_fill(r, x, V, -spread, spread);
        for (int i = 0; i < 6; i++)
            x[tu_rng_below(r, V)] = i < 3 ? spread * 0.9f : -INFINITY;
        tsr_sampling_params p = defaults();
        p.temperature = 0.4f + 0.15f * (float)(c % 9);
        p.top_p = c % 4 == 0 ? 1.0f : c % 4 == 1 ? 0.9f : c % 4 == 2 ? 0.5f : 0.97f;
        p.min_p = c % 5 == 2 ? 0.02f : 0.0f;
        p.seed = 900 + (uint64_t)c;
        CHECK(tsr_sampler_row_top_ok(&p), "case %d: top_k off should qualify", c);
        ref_top(x, V, K, val, ids);
        double mx = -INFINITY, z = 0;
        for (int i = 0; i < V; i++)
            if (x[i] > mx)
                mx = x[i];
        for (int i = 0; i < V; i++)
            z += exp(((double)x[i] - mx) / p.temperature);
        const float zf = (float)z;
        tsr_sampler whole, top;
        CHECK_OK(tsr_sampler_init(&whole, &p, V));
        CHECK_OK(tsr_sampler_init(&top, &p, V));
        for (int d = 0; d < 100; d++) {
            int32_t a, b;
            const double u = tsr_sampler_peek_unit(&top);
            CHECK(u == tsr_sampler_peek_unit(&whole) && u == tsr_sampler_peek_unit(&top),
                  "peek moved the state");
            const int pick =
                tsr_sampler_pick_sorted(val, K, 0, mx, zf, p.temperature, p.top_p, p.min_p, u);
            CHECK_OK(tsr_sampler_sample(&whole, x, NULL, 0, &a));
            if (pick >= 0) {
                CHECK_OK(tsr_sampler_sample_row_top(&top, val, ids, K, mx, zf, &b));
                CHECK(b == ids[pick], "case %d draw %d: sample_row_top %d, pick_sorted %d", c, d, b,
                      ids[pick]);
                decided++;
            } else {
                tsr_sampler probe = top; /* a refusal must not draw: check on a copy */
                CHECK(tsr_sampler_sample_row_top(&probe, val, ids, K, mx, zf, &b) == TSR_ERR_RANGE,
                      "case %d draw %d: undecided candidates accepted", c, d);
                /* the engine's fallback: the whole row, with the engine's normaliser */
                CHECK_OK(tsr_sampler_sample_row_whole(&top, x, mx, zf, &b));
                fell_back++;
            }
            CHECK(a == b,
                  "case %d draw %d (T %g, top_p %g, min_p %g): the row gave %d, the "
                  "candidates %d",
                  c, d, (double)p.temperature, (double)p.top_p, (double)p.min_p, a, b);
        }
        tsr_sampler_free(&whole);
        tsr_sampler_free(&top);
    }
    CHECK(decided > 0 && fell_back > 0,
          "row-top draws: %ld decided, %ld fell back (both should "
          "happen)",
          decided, fell_back);
    printf("  top_k off from %d candidates: %ld draws decided by them, %ld from the whole row\n", K,
           decided, fell_back);
    /* the list holding the whole vocabulary (ids -1 after it) always decides */
    {
        enum { W = 10 };
        float wv[W + 2], wx[W];
        int32_t wi[W + 2];
        tu_rng_fill(r, wx, W, -3, 3);
        ref_top(wx, W, W + 2, wv, wi);
        tsr_sampling_params p = defaults();
        p.temperature = 1.0f;
        double mx = wv[0], z = 0;
        for (int i = 0; i < W; i++)
            z += exp((double)wx[i] - mx);
        tsr_sampler a, b;
        CHECK_OK(tsr_sampler_init(&a, &p, W));
        CHECK_OK(tsr_sampler_init(&b, &p, W));
        for (int d = 0; d < 50; d++) {
            int32_t ta, tb;
            CHECK_OK(tsr_sampler_sample(&a, wx, NULL, 0, &ta));
            CHECK_OK(tsr_sampler_sample_row_top(&b, wv, wi, W + 2, mx, (float)z, &tb));
            CHECK(ta == tb, "whole-vocabulary list, draw %d: %d vs %d", d, ta, tb);
        }
        tsr_sampler_free(&a);
        tsr_sampler_free(&b);
    }
    /* who qualifies */
    tsr_sampling_params p = defaults();
    p.temperature = 0.8f;
    CHECK(tsr_sampler_row_top_ok(&p), "plain temperature qualifies");
    p.top_k = 40;
    CHECK(!tsr_sampler_row_top_ok(&p), "top_k on takes the top-k path");
    p.top_k = 0;
    p.presence_penalty = 0.5f;
    CHECK(!tsr_sampler_row_top_ok(&p), "a penalty needs the row");
    p.presence_penalty = 0;
    p.temperature = 0;
    CHECK(!tsr_sampler_row_top_ok(&p), "greedy is not a draw");
    /* bad input: NaN candidates, a NaN normaliser */
    tsr_sampler s;
    p = defaults();
    p.temperature = 1.0f;
    CHECK_OK(tsr_sampler_init(&s, &p, V));
    float nv[2] = {NAN, 1.0f};
    int32_t ni[2] = {5, 6}, t;
    CHECK(tsr_sampler_sample_row_top(&s, nv, ni, 2, 1.0, 2.0, &t) == TSR_ERR_RANGE,
          "NaN candidate accepted");
    nv[0] = 2.0f;
    CHECK(tsr_sampler_sample_row_top(&s, nv, ni, 2, 2.0, NAN, &t) == TSR_ERR_RANGE,
          "NaN normaliser accepted");
    static float row[V];
    for (int i = 0; i < V; i++)
        row[i] = (float)(i % 7);
    CHECK(tsr_sampler_sample_row_whole(&s, row, 6.0, NAN, &t) == TSR_ERR_RANGE,
          "whole row: NaN normaliser accepted");
    row[17] = NAN;
    CHECK(tsr_sampler_sample_row_whole(&s, row, 6.0, 100.0, &t) == TSR_ERR_RANGE,
          "whole row: NaN logit accepted");
    tsr_sampler_free(&s);
}

int main(void) {
    tu_rng r = {0x73616d706c6572ull};
    test_argmax(&r);
    test_greedy(&r);
    printf("  argmax and greedy ok\n");
    test_seed();
    test_greedy_equivalents(&r);
    printf("  seeds, top_k 1 and tiny top_p ok\n");
    test_distribution();
    test_filters();
    printf("  distributions and filters ok\n");
    test_penalties();
    printf("  penalties ok\n");
    test_nan();
    test_validate();
    printf("  validation ok\n");
    test_banned(&r);
    printf("  bans ok\n");
    test_sample_top(&r);
    printf("  sampling from top-k candidates ok\n");
    test_partial_sort(&r);
    printf("  top_k off: the partially sorted row draws as the sorted row\n");
    test_row_top(&r);
    printf("test_sampler: all passed\n");
    return 0;
}
