/* runtime/model/lm.h - what the generation and scoring loops need from a model,
 * whatever runs it (one rank, or the engine over a tp x pp grid): run the
 * next tokens of one sequence and give back either the last token's logits
 * or its greedy token, or the logits of every token.
 *
 * What it is not: the multi-sequence interface (that is tsr_engine_step). */
#ifndef TSR_RUNTIME_LM_H
#define TSR_RUNTIME_LM_H

#include <stdint.h>

#include "base/status.h"

typedef struct {
    void *ctx;
    int n_vocab;
    int n_ctx; /* positions one sequence may hold */
    /* Runs tokens[0..n) at positions pos0.. of the sequence. Exactly what is
     * asked is produced: all_logits (n, n_vocab), or last_logits (n_vocab)
     * for the last token, or last_token (its argmax); all NULL: nothing. */
    tsr_status (*forward)(void *ctx, const int32_t *tokens, int n, int pos0, float *all_logits,
                          float *last_logits, int32_t *last_token);
    /* Frees the sequence's KV blocks (it may start again at position 0). */
    tsr_status (*release)(void *ctx);
} tsr_lm;

#endif
