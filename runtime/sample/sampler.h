/* runtime/sample/sampler.h - turns a row of logits into the next token: penalties,
 * temperature, top-k, top-p, min-p, then a seeded draw (or argmax when
 * temperature is 0). Deterministic for a given seed and history.
 *
 * What it is not: stop strings and max-token limits live in the generation
 * loop, which sees text; this module only sees token ids and logits. */
#ifndef TSR_RUNTIME_SAMPLER_H
#define TSR_RUNTIME_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct {
    float temperature;        /* 0 = greedy */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off; (0, 1] */
    float min_p;              /* 0 = off; [0, 1) */
    float repetition_penalty; /* 1 = off; > 0; divides positive logits, multiplies negative */
    float frequency_penalty;  /* 0 = off; minus count * f */
    float presence_penalty;   /* 0 = off; minus p if seen */
    int penalty_last_n;       /* window of history for penalties; 0 = all, -1 = none */
    uint64_t seed;
} tsr_sampling_params;

#define TSR_SAMPLING_PARAMS_INIT                                                                   \
    { 0.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f, 64, 0 }

/* Checks ranges; TSR_ERR_INVALID naming the parameter. */
tsr_status tsr_sampling_params_validate(const tsr_sampling_params *p);

typedef struct {
    float logit;
    int32_t id;
} tsr_candidate;

typedef struct {
    tsr_sampling_params p;
    uint64_t rng[4]; /* xoshiro256** state */
    int n_vocab;
    int32_t *history; /* tokens seen (prompt + generated) */
    size_t n_history, cap_history;
    /* scratch */
    float *logits;
    tsr_candidate *cand; /* (n_vocab) */
    int *counts;
} tsr_sampler;

tsr_status tsr_sampler_init(tsr_sampler *s, const tsr_sampling_params *p, int n_vocab);
void tsr_sampler_free(tsr_sampler *s); /* NULL ok */

/* Appends tokens to the penalty history (the prompt, then each accepted token). */
tsr_status tsr_sampler_accept(tsr_sampler *s, const int32_t *tokens, size_t n);

/* Picks a token from logits (n_vocab, not modified). When banned is non-NULL,
 * the tokens banned[0..n_banned) get -inf first (used for min_tokens). */
tsr_status tsr_sampler_sample(tsr_sampler *s, const float *logits, const int32_t *banned,
                              size_t n_banned, int32_t *token);

/* As tsr_sampler_sample, from a row's best candidates instead of the row:
 * val, ids (n) best first (larger value, then lower id; NaN entries first,
 * which fail as a NaN row does), ids -1 ending the list early; candidates
 * in banned[0..n_banned) are dropped. With penalties off and
 * n >= tsr_sampler_candidates_needed + n_banned this picks exactly the token
 * tsr_sampler_sample picks from the whole row with the same bans (the same
 * draw from the same random state): top-k keeps only candidates, and the
 * softmax, min_p and top_p that follow see only the top-k set. */
tsr_status tsr_sampler_sample_top(tsr_sampler *s, const float *val, const int32_t *ids, int n,
                                  const int32_t *banned, size_t n_banned, int32_t *token);

/* How many best candidates per row sampling with p needs for
 * tsr_sampler_sample_top to be exact: 1 for greedy, top_k for top-k
 * sampling with 1 <= top_k <= max_k, and 0 (the whole row is needed) with
 * penalties on or no top_k in that range (top_k off may still draw from
 * candidates with the row's normaliser: tsr_sampler_row_top_ok). With banned
 * tokens, ask for that many more candidates. */
int tsr_sampler_candidates_needed(const tsr_sampling_params *p, int max_k);

/* The sampler's draw over candidates sorted best first (larger logit, then
 * lower id): logits val[0..k) of a set whose largest logit is mx and whose
 * sum of exp((l - mx) / T) is z; min_p and top_p cut the list (min_p
 * against the best candidate's probability, top_p on the cumulative mass),
 * then u in [0, 1) picks within what is left. `all` says the k candidates
 * are the whole set. Returns the index picked, or -1 when the candidates
 * cannot decide: a cut, or with no cut the pick, lies past them (never when
 * all and z > 0). Pure: the engine's last stage and rank 0's sampler call it
 * with the same arguments and agree. */
int tsr_sampler_pick_sorted(const float *val, int k, int all, double mx, double z, float T,
                            float top_p, float min_p, double u);

/* The uniform number the sampler's next draw will use (it does not advance
 * the state): lets a caller decide before the draw whether a row's best
 * candidates will do (tsr_sampler_pick_sorted). */
double tsr_sampler_peek_unit(const tsr_sampler *s);

/* 1 when sampling with p can draw from a row's best candidates plus the
 * row's max and sum of exp((l - max) / T) over the whole vocabulary
 * (tsr_sampler_sample_row_top): temperature > 0, top_k off, no penalties.
 * Bans are not applied there; rows with bans take the whole row. */
int tsr_sampler_row_top_ok(const tsr_sampling_params *p);

/* The draw tsr_sampler_sample makes from the whole row (n_vocab logits) for
 * parameters that pass tsr_sampler_row_top_ok, with the row's mx and z given
 * (the engine's, as tsr_sampler_sample_row_top takes them) instead of summed
 * again here: for the rows whose candidates could not decide, at about half
 * the cost. The same token as tsr_sampler_sample up to the rounding of z.
 * TSR_ERR_RANGE for a NaN logit, no finite logit, or an unusable z. */
tsr_status tsr_sampler_sample_row_whole(tsr_sampler *s, const float *logits, double mx, double z,
                                        int32_t *token);

/* As tsr_sampler_sample on the whole row, for top_k off: from the row's
 * best n candidates (val, ids as tsr_sampler_sample_top takes them; ids -1
 * end a list that holds the whole row) and the row's mx and z at the
 * sampler's temperature. TSR_ERR_RANGE when the candidates do not decide
 * the draw (tsr_sampler_pick_sorted gives -1), a NaN or an id outside the
 * vocabulary. The same token as the whole row up to the rounding of z. */
tsr_status tsr_sampler_sample_row_top(tsr_sampler *s, const float *val, const int32_t *ids, int n,
                                      double mx, double z, int32_t *token);

/* Index of the largest value; the lowest index wins ties. */
int32_t tsr_argmax(const float *x, int n);

#endif
