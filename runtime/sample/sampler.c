/* runtime/sample/sampler.c - sampling pipeline over host f32 logits. */
#include "runtime/sample/sampler.h"

#include "base/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

tsr_status tsr_sampling_params_validate(const tsr_sampling_params *p) {
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return tsr_error_set(TSR_ERR_INVALID, "temperature must be >= 0 (got %g)",
                             (double)p->temperature);
    if (p->top_k < 0)
        return tsr_error_set(TSR_ERR_INVALID, "top_k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return tsr_error_set(TSR_ERR_INVALID, "top_p must be in (0, 1] (got %g)", (double)p->top_p);
    if (!(p->min_p >= 0 && p->min_p < 1))
        return tsr_error_set(TSR_ERR_INVALID, "min_p must be in [0, 1) (got %g)", (double)p->min_p);
    if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty))
        return tsr_error_set(TSR_ERR_INVALID, "repetition_penalty must be > 0 (got %g)",
                             (double)p->repetition_penalty);
    if (!isfinite(p->frequency_penalty) || !isfinite(p->presence_penalty))
        return tsr_error_set(TSR_ERR_INVALID, "penalties must be finite");
    if (p->penalty_last_n < -1)
        return tsr_error_set(TSR_ERR_INVALID, "penalty_last_n must be >= -1");
    return TSR_OK;
}

/* uniform in [0, 1) with 53 bits */
static double next_unit(uint64_t s[4]) { return tsr_unit_double(tsr_xoshiro256ss(s)); }

tsr_status tsr_sampler_init(tsr_sampler *s, const tsr_sampling_params *p, int n_vocab) {
    memset(s, 0, sizeof *s);
    if (n_vocab <= 0)
        return tsr_error_set(TSR_ERR_INVALID, "sampler: vocabulary size %d", n_vocab);
    TSR_TRY(tsr_sampling_params_validate(p));
    s->p = *p;
    s->n_vocab = n_vocab;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = tsr_splitmix64(&x); /* splitmix64 seeds xoshiro256** */
    s->logits = malloc((size_t)n_vocab * sizeof *s->logits);
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    if (!s->logits || !s->cand || !s->counts) {
        tsr_sampler_free(s);
        return tsr_error_set(TSR_ERR_NOMEM, "sampler: out of memory");
    }
    return TSR_OK;
}

void tsr_sampler_free(tsr_sampler *s) {
    if (!s)
        return;
    free(s->history);
    free(s->logits);
    free(s->cand);
    free(s->counts);
    memset(s, 0, sizeof *s);
}

tsr_status tsr_sampler_accept(tsr_sampler *s, const int32_t *tokens, size_t n) {
    if (n == 0) /* memcpy into a still-NULL history is undefined even for 0 bytes */
        return TSR_OK;
    if (s->n_history + n > s->cap_history) {
        size_t cap = s->cap_history ? s->cap_history : 256;
        while (cap < s->n_history + n)
            cap *= 2;
        int32_t *h = realloc(s->history, cap * sizeof *h);
        if (!h)
            return tsr_error_set(TSR_ERR_NOMEM, "sampler: out of memory");
        s->history = h;
        s->cap_history = cap;
    }
    memcpy(s->history + s->n_history, tokens, n * sizeof *tokens);
    s->n_history += n;
    return TSR_OK;
}

int32_t tsr_argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Whether any penalty changes logits: one set, and a window that is not off. */
static int penalties_on(const tsr_sampling_params *p) {
    return p->penalty_last_n != -1 &&
           (p->repetition_penalty != 1.0f || p->frequency_penalty != 0 || p->presence_penalty != 0);
}

static void apply_penalties(tsr_sampler *s, float *l) {
    const tsr_sampling_params *p = &s->p;
    if (!penalties_on(p))
        return;
    size_t start = 0;
    if (p->penalty_last_n > 0 && s->n_history > (size_t)p->penalty_last_n)
        start = s->n_history - (size_t)p->penalty_last_n;
    for (size_t i = start; i < s->n_history; i++)
        if (s->history[i] >= 0 && s->history[i] < s->n_vocab)
            s->counts[s->history[i]]++;
    for (size_t i = start; i < s->n_history; i++) {
        int32_t t = s->history[i];
        if (t < 0 || t >= s->n_vocab || s->counts[t] == 0)
            continue;
        float v = l[t];
        v = v > 0 ? v / p->repetition_penalty : v * p->repetition_penalty;
        v -= (float)s->counts[t] * p->frequency_penalty + p->presence_penalty;
        l[t] = v;
        s->counts[t] = 0; /* once per distinct token; also resets for next call */
    }
}

/* descending by logit, ties by index */
static int cmp_desc(const void *a, const void *b) {
    const tsr_candidate *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Restores the heap below `at` of h[0..n), a heap whose root is its worst
 * member in cmp_desc's order (each parent no better than its children). */
static void sift_worst(tsr_candidate *h, int n, int at) {
    for (;;) {
        int w = at;
        const int l = 2 * at + 1, r = l + 1;
        if (l < n && cmp_desc(&h[l], &h[w]) > 0)
            w = l;
        if (r < n && cmp_desc(&h[r], &h[w]) > 0)
            w = r;
        if (w == at)
            return;
        const tsr_candidate t = h[at];
        h[at] = h[w];
        h[w] = t;
        at = w;
    }
}

/* Moves the best k of c[0..m) (cmp_desc's order) to c[0..k), sorted; the
 * others stay in c[k..m) in some order. A heap of the k best so far, worst
 * on top: O(m log k). 1 <= k <= m. */
static void select_best(tsr_candidate *c, int m, int k) {
    if (k < m) {
        /* c[0..k) as a heap whose root is its worst member */
        for (int start = k / 2 - 1; start >= 0; start--)
            sift_worst(c, k, start);
        for (int i = k; i < m; i++)
            if (cmp_desc(&c[i], &c[0]) < 0) { /* better than the worst kept */
                const tsr_candidate t = c[0];
                c[0] = c[i];
                c[i] = t;
                sift_worst(c, k, 0);
            }
    }
    qsort(c, (size_t)k, sizeof *c, cmp_desc);
}

int tsr_sampler_pick_sorted(const float *val, int k, int all, double mx, double z, float T,
                            float top_p, float min_p, double u) {
    if (k < 1 || !(T > 0) || !(z > 0) || !isfinite(z) || !isfinite(mx))
        return -1;
#define PROB(i) (exp(((double)val[i] - mx) / T) / z)
    /* One pass for the cuts: min_p (the first candidate below min_p times
     * the best ends the list) and top_p (the smallest prefix of those with
     * mass >= top_p), summing the mass kept as it goes (in the order a
     * separate sum would take, so the same doubles). m: the candidates
     * kept, -1 while not known (a cut past the candidates, or none). With
     * no cut and more than the candidates nothing needs summing. */
    int m = -1;
    double kept = 0; /* the mass of [0, j) */
    if (min_p > 0 || top_p < 1 || all) {
        const double p0 = PROB(0);
        for (int j = 0; j < k; j++) {
            const double pj = j ? PROB(j) : p0;
            if (min_p > 0 && j > 0 && !(pj >= min_p * p0)) {
                m = j;
                break;
            }
            kept += pj;
            if (top_p < 1 && kept >= top_p) {
                m = j + 1;
                break;
            }
        }
        if (m < 0 && all)
            m = k; /* every candidate kept, and they are the whole set */
    }
    double total = 1.0; /* no cut at all and more than the candidates: the row's mass */
    if (m >= 0)
        total = kept;
    else if (min_p > 0 || top_p < 1)
        return -1; /* a cut lies past the candidates */
    const int lim = m >= 0 ? m : k;
    const double r = u * total;
    double acc = 0;
    for (int i = 0; i < lim; i++) {
        acc += PROB(i);
        if (r < acc)
            return i;
    }
#undef PROB
    return m >= 0 || all ? lim - 1 : -1; /* rounding left r at the end; or past the candidates */
}

/* The draw with top_k off: the probabilities are over every candidate, so
 * the order matters only up to the min_p and top_p cuts and the pick. The
 * best 64 are sorted first, then 256, 1024, ... (each round sorting only the
 * next best after the prefix it has), until the cuts and the pick fall
 * inside the sorted prefix (usually the first round), rather than
 * sorting the vocabulary: the same token as sorting it all, up to the
 * rounding of the double sums. */
static tsr_status draw_all_z(tsr_sampler *s, tsr_candidate *cand, int m, double mx, double z,
                             int32_t *token) {
    const tsr_sampling_params *p = &s->p;
    const double u = next_unit(s->rng); /* one number a draw, as in draw() */
    float *val = s->logits;             /* free again: the candidates hold the values */
    for (int done = 0, k = m < 64 ? m : 64;; done = k, k = k > m / 4 ? m : 4 * k) {
        /* cand[0..done) are the best `done`, sorted: the next best come from the rest */
        select_best(cand + done, m - done, k - done);
        for (int i = done; i < k; i++)
            val[i] = cand[i].logit;
        const int pick =
            tsr_sampler_pick_sorted(val, k, k == m, mx, z, p->temperature, p->top_p, p->min_p, u);
        if (pick >= 0) {
            *token = cand[pick].id;
            return TSR_OK;
        }
        if (k == m)
            return tsr_error_set(TSR_ERR_RANGE,
                                 "sampler: no pick among every candidate "
                                 "(normaliser %g)",
                                 z);
    }
}

/* draw_all_z with the candidates' own max and sum of exp((l - max) / T). */
static tsr_status draw_all(tsr_sampler *s, tsr_candidate *cand, int m, int32_t *token) {
    const double T = s->p.temperature;
    double mx = cand[0].logit, z = 0;
    for (int i = 1; i < m; i++)
        if (cand[i].logit > mx)
            mx = cand[i].logit;
    for (int i = 0; i < m; i++)
        z += exp(((double)cand[i].logit - mx) / T);
    return draw_all_z(s, cand, m, mx, z, token);
}

/* The draw from candidates sorted best first (cmp_desc), m >= 1: top_k,
 * then the softmax at the temperature over what is left, min_p, top_p and
 * one uniform number. */
static tsr_status draw(tsr_sampler *s, const tsr_candidate *cand, int m, int32_t *token) {
    const tsr_sampling_params *p = &s->p;
    if (p->top_k > 0 && p->top_k < m)
        m = p->top_k;
    float *val = s->logits; /* free again: the candidates hold the values */
    double mx = cand[0].logit, z = 0;
    for (int i = 0; i < m; i++) {
        val[i] = cand[i].logit;
        z += exp(((double)cand[i].logit - mx) / p->temperature);
    }
    const int pick = tsr_sampler_pick_sorted(val, m, 1, mx, z, p->temperature, p->top_p, p->min_p,
                                             next_unit(s->rng));
    if (pick < 0)
        return tsr_error_set(TSR_ERR_INTERNAL, "sampler: no pick among the candidates");
    *token = cand[pick].id;
    return TSR_OK;
}

tsr_status tsr_sampler_sample(tsr_sampler *s, const float *logits, const int32_t *banned,
                              size_t n_banned, int32_t *token) {
    const tsr_sampling_params *p = &s->p;
    const int n = s->n_vocab;
    float *l = s->logits;
    memcpy(l, logits, (size_t)n * sizeof *l);
    for (size_t i = 0; i < n_banned; i++)
        if (banned[i] >= 0 && banned[i] < n)
            l[banned[i]] = -INFINITY;
    apply_penalties(s, l);
    for (int i = 0; i < n; i++)
        if (isnan(l[i]))
            return tsr_error_set(TSR_ERR_RANGE, "sampler: logit %d is NaN", i);
    if (p->temperature == 0) {
        int32_t best = tsr_argmax(l, n);
        if (l[best] == -INFINITY)
            return tsr_error_set(TSR_ERR_RANGE, "sampler: every token is banned");
        *token = best;
        return TSR_OK;
    }
    tsr_candidate *cand = s->cand;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (l[i] > -INFINITY)
            cand[m++] = (tsr_candidate){l[i], i};
    if (m == 0)
        return tsr_error_set(TSR_ERR_RANGE, "sampler: every token is banned");
    if (p->top_k > 0 && p->top_k < m) { /* only the top-k set matters, and only it is sorted */
        select_best(cand, m, p->top_k);
        return draw(s, cand, p->top_k, token);
    }
    if (p->top_k > 0) {
        qsort(cand, (size_t)m, sizeof *cand, cmp_desc);
        return draw(s, cand, m, token);
    }
    return draw_all(s, cand, m, token);
}

/* A candidate list's entry as the engine brings it: TSR_ERR_RANGE for a NaN
 * (a broken row) or an id outside the vocabulary. */
static tsr_status check_candidate(const tsr_sampler *s, float v, int32_t id) {
    if (isnan(v))
        return tsr_error_set(TSR_ERR_RANGE, "sampler: logit %d is NaN", id);
    if (id >= s->n_vocab)
        return tsr_error_set(TSR_ERR_RANGE, "sampler: candidate id %d is outside the vocabulary",
                             id);
    return TSR_OK;
}

tsr_status tsr_sampler_sample_top(tsr_sampler *s, const float *val, const int32_t *ids, int n,
                                  const int32_t *banned, size_t n_banned, int32_t *token) {
    tsr_candidate *cand = s->cand;
    int m = 0;
    for (int i = 0; i < n && ids[i] >= 0; i++) {
        TSR_TRY(check_candidate(s, val[i], ids[i]));
        int ban = 0;
        for (size_t b = 0; b < n_banned && !ban; b++)
            ban = banned[b] == ids[i];
        if (!ban && val[i] > -INFINITY)
            cand[m++] = (tsr_candidate){val[i], ids[i]};
    }
    if (m == 0)
        return tsr_error_set(TSR_ERR_RANGE, "sampler: every token is banned");
    if (s->p.temperature == 0) {
        *token = cand[0].id;
        return TSR_OK;
    }
    return draw(s, cand, m, token);
}

double tsr_sampler_peek_unit(const tsr_sampler *s) {
    uint64_t r[4];
    memcpy(r, s->rng, sizeof r);
    return next_unit(r);
}

tsr_status tsr_sampler_sample_row_top(tsr_sampler *s, const float *val, const int32_t *ids, int n,
                                      double mx, double z, int32_t *token) {
    const tsr_sampling_params *p = &s->p;
    if (!tsr_sampler_row_top_ok(p))
        return tsr_error_set(TSR_ERR_INVALID, "sampler: these parameters need the whole row");
    int m = 0;
    for (; m < n && ids[m] >= 0; m++)
        TSR_TRY(check_candidate(s, val[m], ids[m]));
    if (m == 0 || !(val[0] > -INFINITY))
        return tsr_error_set(TSR_ERR_RANGE, "sampler: every token is banned");
    const int pick = tsr_sampler_pick_sorted(val, m, m < n, mx, z, p->temperature, p->top_p,
                                             p->min_p, next_unit(s->rng));
    if (pick < 0)
        return tsr_error_set(TSR_ERR_RANGE,
                             "sampler: the %d candidates do not decide the draw "
                             "(top_p %g, min_p %g)",
                             m, (double)p->top_p, (double)p->min_p);
    *token = ids[pick];
    return TSR_OK;
}

tsr_status tsr_sampler_sample_row_whole(tsr_sampler *s, const float *logits, double mx, double z,
                                        int32_t *token) {
    if (!tsr_sampler_row_top_ok(&s->p))
        return tsr_error_set(TSR_ERR_INVALID, "sampler: these parameters need tsr_sampler_sample");
    tsr_candidate *cand = s->cand;
    int m = 0;
    for (int i = 0; i < s->n_vocab; i++) {
        if (isnan(logits[i]))
            return tsr_error_set(TSR_ERR_RANGE, "sampler: logit %d is NaN", i);
        if (logits[i] > -INFINITY)
            cand[m++] = (tsr_candidate){logits[i], i};
    }
    if (m == 0)
        return tsr_error_set(TSR_ERR_RANGE, "sampler: every token is banned");
    if (!(z > 0) || !isfinite(z) || !isfinite(mx))
        return tsr_error_set(TSR_ERR_RANGE, "sampler: row normaliser (%g, %g) is not usable", mx,
                             z);
    return draw_all_z(s, cand, m, mx, z, token);
}

int tsr_sampler_row_top_ok(const tsr_sampling_params *p) {
    return !penalties_on(p) && p->temperature > 0 && p->top_k == 0;
}

int tsr_sampler_candidates_needed(const tsr_sampling_params *p, int max_k) {
    if (penalties_on(p))
        return 0;
    if (p->temperature == 0)
        return 1;
    return p->top_k >= 1 && p->top_k <= max_k ? p->top_k : 0;
}
