/* runtime/sample/generate.h - single-rank generation and scoring loops on top of
 * the model: chunked prefill, decode one token per step, sampling, stop
 * conditions (end-of-generation tokens, stop token ids, stop strings, max
 * tokens), and streamed text through a callback. Also the perplexity
 * evaluation llama.cpp's perplexity tool performs.
 *
 * What it is not: the multi-sequence engine (continuous batching lives in the
 * engine); this loop drives one sequence through a tsr_lm. */
#ifndef TSR_RUNTIME_GENERATE_H
#define TSR_RUNTIME_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/model/lm.h"
#include "runtime/sample/sampler.h"
#include "runtime/tokenizer/tokenizer.h"

typedef struct {
    tsr_sampling_params sampling;
    int max_tokens;          /* > 0 */
    int min_tokens;          /* end-of-generation is suppressed before this many */
    const char *const *stop; /* stop strings (not emitted) */
    size_t n_stop;
    const int32_t *stop_ids; /* extra stop token ids */
    size_t n_stop_ids;
    int ignore_eos; /* keep going through end-of-generation tokens */
    int n_batch;    /* prefill chunk size; 0 = 512 */
} tsr_gen_params;

typedef enum {
    TSR_FINISH_STOP = 0,   /* end-of-generation token, stop id or stop string */
    TSR_FINISH_LENGTH = 1, /* max_tokens or the context is full */
    TSR_FINISH_CANCELLED = 2,
} tsr_finish_reason;

typedef struct {
    tsr_finish_reason finish;
    int n_prompt, n_completion;
    double prefill_s, decode_s; /* wall time of prefill / of the decode steps */
} tsr_gen_result;

/* Receives each piece of generated text as soon as it is final (never text
 * that might still turn out to be part of a stop string). token is the id
 * that completed the piece. Returns nonzero to cancel. */
typedef int (*tsr_gen_emit)(void *user, const char *text, size_t len, int32_t token);

/* Generates from prompt[0..n_prompt) (already tokenized, non-empty); the
 * sequence is released at the end. Pure greedy decoding asks the model for
 * argmax tokens only (no logits leave a vocabulary-parallel last stage). */
tsr_status tsr_generate(const tsr_lm *lm, const tsr_tokenizer_t *tok, const int32_t *prompt,
                        size_t n_prompt, const tsr_gen_params *p, tsr_gen_emit emit, void *user,
                        tsr_gen_result *res);

/* Computes logits of every position of tokens[0..n) in one fresh sequence
 * (released at the end), in prefill chunks of n_batch. out: (n, n_vocab). */
tsr_status tsr_score_tokens(const tsr_lm *lm, const int32_t *tokens, size_t n, int n_batch,
                            float *out);

#endif
