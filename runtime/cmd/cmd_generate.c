/* runtime/cmd/cmd_generate.c - `tessera generate`: one prompt (or one chat
 * turn, rendered with the model's template) through the engine, the answer
 * streamed to stdout as it is produced and the statistics to stderr.
 *
 * What it is not: the generation loop (runtime/sample/generate.h) nor the
 * server's many-sequence path (`tessera serve`). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cmd/cmd.h"
#include "runtime/sample/generate.h"
#include "runtime/tokenizer/chat.h"

static int emit_stdout(void *user, const char *text, size_t len, int32_t token) {
    (void)user;
    (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int cmd_generate(tsr_comm_grid *grid, const cmd_options *o) {
    if (!o->prompt == !o->chat) {
        if (g_rank == 0)
            PERR("tessera generate: give exactly one of --prompt TEXT or --chat TEXT\n");
        return 2;
    }
    tsr_session s = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    char *rendered = NULL;
    int rc = 0;
    tsr_status st = cmd_session_open(&s, grid, o, o->have_ctx ? o->ctx : -1);
    if (st != TSR_OK) {
        rc = cmd_fail_open(&s, st);
        goto cleanup;
    }
    if (g_rank != 0)
        return cmd_run_worker(&s);
    const char *text = o->prompt;
    if (o->chat) {
        tsr_chat_msg msgs[2];
        size_t nm = 0;
        if (o->system)
            msgs[nm++] = (tsr_chat_msg){"system", o->system};
        msgs[nm++] = (tsr_chat_msg){"user", o->chat};
        st = tsr_chat_render(s.tok, msgs, nm, 1, &rendered);
        if (st != TSR_OK) {
            rc = cmd_fail(st);
            goto cleanup;
        }
        text = rendered;
    }
    /* A chat rendering carries its own special tokens; a raw prompt gets BOS
     * when the model asks for it. Special tokens in the text are parsed. */
    unsigned flags = TSR_TOK_PARSE_SPECIAL | (o->chat ? 0 : TSR_TOK_ADD_SPECIAL);
    st = tsr_tokenizer_encode_ex(s.tok, text, strlen(text), flags, &ids, &n);
    if (st == TSR_OK && n == 0)
        st = tsr_error_set(TSR_ERR_INVALID, "the prompt is empty");
    if (st != TSR_OK) {
        rc = cmd_fail(st);
        goto cleanup;
    }
    tsr_gen_params gp = {
        .sampling = o->sp,
        .max_tokens = o->max_tokens,
        .min_tokens = o->min_tokens,
        .stop = o->stop,
        .n_stop = o->n_stop,
        .stop_ids = o->stop_ids,
        .n_stop_ids = o->n_stop_ids,
        .ignore_eos = o->ignore_eos,
        .n_batch = o->n_batch,
    };
    tsr_gen_result res;
    st = tsr_generate(&s.lm, s.tok, ids, n, &gp, emit_stdout, NULL, &res);
    fputc('\n', stdout);
    fflush(stdout);
    if (st != TSR_OK) {
        cmd_abort_if_step_failed(&s, st);
        rc = cmd_fail(st);
        goto cleanup;
    }
    static const char *reasons[] = {"stop", "length", "cancelled"};
    fprintf(stderr,
            "tessera: prompt %d tokens (%.1f tok/s), completion %d tokens (%.1f tok/s), finish %s, "
            "peak RSS %.0f MiB\n",
            res.n_prompt, res.prefill_s > 0 ? res.n_prompt / res.prefill_s : 0.0, res.n_completion,
            res.decode_s > 0 ? res.n_completion / res.decode_s : 0.0, reasons[res.finish],
            cmd_peak_rss_kb() / 1024.0);
cleanup:
    free(ids);
    free(rendered);
    tsr_session_free(&s);
    return rc;
}
