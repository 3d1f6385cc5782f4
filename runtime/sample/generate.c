/* runtime/sample/generate.c - the single-sequence generation loop. */
#include "runtime/sample/generate.h"
#include "base/clock.h"

#include "runtime/sample/stop_text.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

tsr_status tsr_score_tokens(const tsr_lm *lm, const int32_t *tokens, size_t n, int n_batch,
                            float *out) {
    if (n_batch <= 0)
        n_batch = 512;
    if (n > (size_t)lm->n_ctx)
        return tsr_error_set(TSR_ERR_RANGE, "%zu tokens exceed the context of %d", n, lm->n_ctx);
    tsr_status st = TSR_OK;
    for (size_t i = 0; i < n && st == TSR_OK; i += (size_t)n_batch) {
        int c = (int)(n - i < (size_t)n_batch ? n - i : (size_t)n_batch);
        st = lm->forward(lm->ctx, tokens + i, c, (int)i, out + i * (size_t)lm->n_vocab, NULL, NULL);
    }
    tsr_status rs = lm->release(lm->ctx);
    return st != TSR_OK ? st : rs;
}

static int is_stop_id(const tsr_gen_params *p, int32_t t) {
    for (size_t i = 0; i < p->n_stop_ids; i++)
        if (p->stop_ids[i] == t)
            return 1;
    return 0;
}

tsr_status tsr_generate(const tsr_lm *lm, const tsr_tokenizer_t *tok, const int32_t *prompt,
                        size_t n_prompt, const tsr_gen_params *p, tsr_gen_emit emit, void *user,
                        tsr_gen_result *res) {
    memset(res, 0, sizeof *res);
    if (n_prompt == 0)
        return tsr_error_set(TSR_ERR_INVALID, "the prompt is empty");
    if (p->max_tokens <= 0)
        return tsr_error_set(TSR_ERR_INVALID, "max_tokens must be > 0 (got %d)", p->max_tokens);
    const int ctx = lm->n_ctx;
    if (n_prompt >= (size_t)ctx)
        return tsr_error_set(TSR_ERR_RANGE, "the prompt has %zu tokens; the context holds %d",
                             n_prompt, ctx);
    const int V = lm->n_vocab, n_batch = p->n_batch > 0 ? p->n_batch : 512;
    const tsr_sampling_params *sp = &p->sampling;
    /* greedy with nothing that edits logits: only the argmax has to travel */
    const int argmax_only = sp->temperature == 0 && sp->repetition_penalty == 1.0f &&
                            sp->frequency_penalty == 0 && sp->presence_penalty == 0 &&
                            p->min_tokens == 0 && !p->ignore_eos;
    int32_t next_argmax = -1;
    tsr_sampler smp;
    TSR_TRY(tsr_sampler_init(&smp, &p->sampling, V));
    tsr_detok_stream ds;
    tsr_detok_stream_init(&ds, tok, TSR_DETOK_SKIP_SPECIAL);
    tsr_stop_text stops;
    tsr_stop_text_init(&stops, p->stop, p->n_stop);
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t *eog = malloc((size_t)V * sizeof *eog);
    size_t n_eog = 0;
    tsr_status st = TSR_OK;
    if (!logits || !eog) {
        st = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    for (int32_t t = 0; t < V; t++)
        if (tsr_tokenizer_is_eog(tok, t) || is_stop_id(p, t))
            eog[n_eog++] = t;
    TSR_CHECK_GOTO(st, tsr_sampler_accept(&smp, prompt, n_prompt));

    double t0 = tsr_now_s();
    for (size_t i = 0; i < n_prompt; i += (size_t)n_batch) {
        int c = (int)(n_prompt - i < (size_t)n_batch ? n_prompt - i : (size_t)n_batch);
        int last = i + (size_t)c == n_prompt;
        TSR_CHECK_GOTO(st, lm->forward(lm->ctx, prompt + i, c, (int)i, NULL,
                                       last && !argmax_only ? logits : NULL,
                                       last && argmax_only ? &next_argmax : NULL));
    }
    res->n_prompt = (int)n_prompt;
    double t1 = tsr_now_s();
    res->prefill_s = t1 - t0;
    res->finish = TSR_FINISH_LENGTH;
    int pos = (int)n_prompt, stop_string = 0;
    for (;;) {
        int32_t next;
        int suppress = res->n_completion < p->min_tokens || p->ignore_eos;
        if (argmax_only)
            next = next_argmax;
        else
            TSR_CHECK_GOTO(st, tsr_sampler_sample(&smp, logits, suppress ? eog : NULL,
                                                  suppress ? n_eog : 0, &next));
        if (!p->ignore_eos && (tsr_tokenizer_is_eog(tok, next) || is_stop_id(p, next))) {
            res->finish = TSR_FINISH_STOP;
            break;
        }
        res->n_completion++;
        TSR_CHECK_GOTO(st, tsr_sampler_accept(&smp, &next, 1));
        const char *txt, *out;
        size_t tl, ol;
        int stopped;
        TSR_CHECK_GOTO(st, tsr_detok_stream_push(&ds, next, &txt, &tl));
        TSR_CHECK_GOTO(st, tsr_stop_text_push(&stops, txt, tl, &out, &ol, &stopped));
        if (ol > 0 && emit && emit(user, out, ol, next)) {
            res->finish = TSR_FINISH_CANCELLED;
            break;
        }
        if (stopped) {
            res->finish = TSR_FINISH_STOP;
            stop_string = 1;
            break;
        }
        if (res->n_completion >= p->max_tokens || pos + 1 >= ctx)
            break;
        TSR_CHECK_GOTO(st, lm->forward(lm->ctx, &next, 1, pos, NULL, argmax_only ? NULL : logits,
                                       argmax_only ? &next_argmax : NULL));
        pos++;
    }
    /* what is left: held-back text and an incomplete character */
    if (res->finish != TSR_FINISH_CANCELLED && !stop_string) {
        const char *txt, *out;
        size_t tl, ol;
        int stopped;
        TSR_CHECK_GOTO(st, tsr_detok_stream_flush(&ds, &txt, &tl));
        TSR_CHECK_GOTO(st, tsr_stop_text_push(&stops, txt, tl, &out, &ol, &stopped));
        if (ol && emit)
            emit(user, out, ol, -1);
        if (!stopped) {
            tsr_stop_text_flush(&stops, &out, &ol);
            if (ol && emit)
                emit(user, out, ol, -1);
        }
    }
    res->decode_s = tsr_now_s() - t1;
cleanup:
    if (lm->release(lm->ctx) != TSR_OK && st == TSR_OK)
        st = TSR_ERR_COMM;
    tsr_sampler_free(&smp);
    tsr_detok_stream_free(&ds);
    tsr_stop_text_free(&stops);
    free(logits);
    free(eog);
    return st;
}
