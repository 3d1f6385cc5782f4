/* runtime/cmd/cmd_perplexity.c - `tessera perplexity`: llama.cpp's chunked
 * perplexity of a text file, each chunk scored by the engine on a fresh
 * cache; the running estimate on stdout as "[k]ppl," and the final one as
 * "Final estimate: PPL = X".
 *
 * What it is not: a benchmark of the engine's speed beyond the one line of
 * throughput it prints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/fs.h"
#include "runtime/cmd/cmd.h"
#include "runtime/sample/generate.h"

/* log-softmax probability of `target` in logits(n) */
static double nll(const float *logits, int n, int target) {
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)logits[i] - mx);
    return -((double)logits[target] - mx - log(sum));
}

/* llama.cpp's perplexity: the text is cut into chunks of ctx tokens (BOS in
 * the first slot when the model adds one); each chunk is evaluated from a
 * fresh cache and only its second half is scored, so every scored token has
 * at least ctx/2 tokens of context. */
int cmd_perplexity(tsr_comm_grid *grid, const cmd_options *o) {
    if (!o->file) {
        if (g_rank == 0)
            PERR("tessera perplexity: --file F is required\n");
        return 2;
    }
    int ctx = o->have_ctx ? o->ctx : 512;
    size_t len = 0;
    char *text = NULL;
    tsr_session s = {0};
    int32_t *ids = NULL;
    float *logits = NULL;
    size_t n = 0;
    int rc = 0;
    tsr_status st = cmd_session_open(&s, grid, o, ctx);
    if (st != TSR_OK) {
        rc = cmd_fail_open(&s, st);
        goto cleanup;
    }
    if (g_rank != 0)
        return cmd_run_worker(&s);
    if (tsr_fs_read_file(o->file, 0, &text, &len) != TSR_OK) {
        PERR("tessera: %s\n", tsr_error_msg());
        rc = 1;
        goto cleanup;
    }
    st = tsr_tokenizer_encode(s.tok, text, len, 0, &ids, &n);
    if (st != TSR_OK) {
        rc = cmd_fail(st);
        goto cleanup;
    }
    int n_chunks = (int)(n / (size_t)ctx);
    if (n_chunks < 1) {
        PERR("tessera perplexity: the text has %zu tokens; at least %d (one --ctx chunk) are "
             "needed\n",
             n, ctx);
        rc = 2;
        goto cleanup;
    }
    const int V = s.lm.n_vocab, first = ctx / 2;
    int32_t bos = tsr_tokenizer_bos(s.tok);
    int add_bos = tsr_tokenizer_add_bos(s.tok) && bos >= 0;
    logits = malloc((size_t)ctx * V * sizeof *logits);
    int32_t *chunk = malloc((size_t)ctx * sizeof *chunk);
    if (!logits || !chunk) {
        free(chunk);
        rc = cmd_fail(tsr_error_set(TSR_ERR_NOMEM, "out of memory"));
        goto cleanup;
    }
    PERR("tessera: %zu tokens, %d chunks of %d\n", n, n_chunks, ctx);
    double sum = 0, sum2 = 0, t0 = tsr_now_s();
    long count = 0;
    for (int c = 0; c < n_chunks; c++) {
        memcpy(chunk, ids + (size_t)c * ctx, (size_t)ctx * sizeof *chunk);
        if (add_bos)
            chunk[0] = bos;
        st = tsr_score_tokens(&s.lm, chunk, (size_t)ctx, o->n_batch, logits);
        if (st != TSR_OK) {
            cmd_abort_if_step_failed(&s, st);
            free(chunk);
            rc = cmd_fail(st);
            goto cleanup;
        }
        for (int j = first; j < ctx - 1; j++) {
            double v = nll(logits + (size_t)j * V, V, ids[(size_t)c * ctx + j + 1]);
            sum += v;
            sum2 += v * v;
            count++;
        }
        printf("[%d]%.4f,", c + 1, exp(sum / count));
        fflush(stdout);
    }
    free(chunk);
    double mean = sum / count, var = sum2 / count - mean * mean;
    double err = count > 1 && var > 0 ? sqrt(var / (count - 1)) : 0;
    double ppl = exp(mean);
    printf("\n");
    PERR("tessera: %ld tokens scored in %.2f s (%.1f tok/s); PPL uncertainty +/- %.5f\n", count,
         tsr_now_s() - t0, n_chunks * ctx / (tsr_now_s() - t0), ppl * err);
    PERR("tessera: mean NLL %.9f over %ld tokens\n", mean, count);
    printf("Final estimate: PPL = %.4f\n", ppl);
cleanup:
    free(ids);
    free(logits);
    free(text);
    tsr_session_free(&s);
    return rc;
}
