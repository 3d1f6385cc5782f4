/* launcher/cli_cmd_generate.c - `tessera-cli generate`: one Generate call,
 * its text streamed to stdout as it comes, its usage, timings and logprobs
 * on stderr (docs/cli.md, "generate").
 *
 * What it is not: a client for many requests at once (bench/ has that); it
 * checks the syntax of the sampling flags and leaves their ranges to the
 * server, whose message then reaches the user. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/cli_cmd.h"
#include "launcher/cli_parse.h"
#include "tessera/v1/tessera.pb-c.h"

typedef struct {
    int printed_any; /* some text reached stdout */
    char last_char;  /* the last byte written */
    int have_final;
    Tessera__V1__FinishReason finish;
    int prompt_tokens, completion_tokens, cached_tokens;
    double queued_s, ttft_s, total_s;
    char *error; /* GenerateFinal.error (malloc'd) */
    char request_id[256];
    FILE *logprobs; /* open_memstream of the logprob lines; NULL = not asked */
} gen_state;

static const char *finish_name(Tessera__V1__FinishReason r) {
    switch (r) {
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_STOP: return "stop";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_LENGTH: return "length";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_CANCELLED: return "cancelled";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_ERROR: return "error";
    default: return "unspecified";
    }
}

/* Writes one chunk's logprobs as lines "id logprob | top: id 'text' lp, ...". */
static void log_logprobs(FILE *f, const Tessera__V1__GenerateChunk *ch) {
    for (size_t i = 0; i < ch->n_logprobs; i++) {
        const Tessera__V1__TokenLogprob *lp = ch->logprobs[i];
        fprintf(f, "  token %d  logprob %.4f", lp->token_id, lp->logprob);
        for (size_t k = 0; k < lp->n_top; k++) {
            const Tessera__V1__TopLogprob *t = lp->top[k];
            fprintf(f, "%s %d ", k == 0 ? "  | top:" : ",", t->token_id);
            /* the token text, quoted, with control bytes escaped */
            fputc('\'', f);
            for (const unsigned char *p = (const unsigned char *)t->text; *p; p++) {
                if (*p < 0x20 || *p == '\'' || *p == '\\')
                    fprintf(f, "\\x%02x", *p);
                else
                    fputc(*p, f);
            }
            fprintf(f, "' %.4f", t->logprob);
        }
        fputc('\n', f);
    }
}

static tsr_status gen_on_message(void *ctx, const uint8_t *data, size_t len) {
    gen_state *g = ctx;
    Tessera__V1__GenerateResponse *r = tessera__v1__generate_response__unpack(NULL, len, data);
    if (!r)
        return tsr_error_set(TSR_ERR_FORMAT, "cannot decode a GenerateResponse (%zu bytes)", len);
    tsr_status rc = TSR_OK;
    if (r->request_id && r->request_id[0] && !g->request_id[0])
        snprintf(g->request_id, sizeof g->request_id, "%s", r->request_id);
    if (r->kind_case == TESSERA__V1__GENERATE_RESPONSE__KIND_CHUNK) {
        const Tessera__V1__GenerateChunk *ch = r->chunk;
        size_t n = strlen(ch->text);
        if (n > 0) {
            if (fwrite(ch->text, 1, n, stdout) != n || fflush(stdout) != 0) {
                rc = tsr_error_set(TSR_ERR_IO, "writing to stdout: %s", strerror(errno));
            }
            g->printed_any = 1;
            g->last_char = ch->text[n - 1];
        }
        if (g->logprobs)
            log_logprobs(g->logprobs, ch);
    } else if (r->kind_case == TESSERA__V1__GENERATE_RESPONSE__KIND_FINAL) {
        const Tessera__V1__GenerateFinal *fin = r->final;
        g->have_final = 1;
        g->finish = fin->finish_reason;
        if (fin->usage) {
            g->prompt_tokens = fin->usage->prompt_tokens;
            g->completion_tokens = fin->usage->completion_tokens;
            g->cached_tokens = fin->usage->cached_tokens;
        }
        if (fin->timings) {
            g->queued_s = fin->timings->queued_s;
            g->ttft_s = fin->timings->time_to_first_token_s;
            g->total_s = fin->timings->total_s;
        }
        if (fin->error && fin->error[0]) {
            free(g->error);
            g->error = strdup(fin->error);
        }
    }
    tessera__v1__generate_response__free_unpacked(r, NULL);
    return rc;
}

int cli_cmd_generate(const cli_ctx *cx, const cli_args *a) {
    int n_inputs = !!a->val[O_PROMPT] + !!a->val[O_CHAT] + !!a->val[O_TOKENS];
    if (n_inputs != 1)
        return cli_usage_error("generate needs exactly one of --prompt, --chat and --tokens");
    if (a->val[O_SYSTEM] && !a->val[O_CHAT])
        return cli_usage_error("--system goes with --chat");

    Tessera__V1__SamplingParams sp = TESSERA__V1__SAMPLING_PARAMS__INIT;
    int rc = 0;
    if ((rc = cli_opt_f32(a, O_TEMPERATURE, &sp.temperature)) ||
        (rc = cli_opt_i32(a, O_TOP_K, &sp.top_k)) || (rc = cli_opt_f32(a, O_TOP_P, &sp.top_p)) ||
        (rc = cli_opt_f32(a, O_MIN_P, &sp.min_p)) ||
        (rc = cli_opt_f32(a, O_REPEAT_PENALTY, &sp.repetition_penalty)) ||
        (rc = cli_opt_f32(a, O_FREQ_PENALTY, &sp.frequency_penalty)) ||
        (rc = cli_opt_f32(a, O_PRES_PENALTY, &sp.presence_penalty)) ||
        (rc = cli_opt_i32(a, O_MAX_TOKENS, &sp.max_tokens)) ||
        (rc = cli_opt_i32(a, O_MIN_TOKENS, &sp.min_tokens)))
        return rc;
    if (a->val[O_SEED] && tsr_opt_parse_u64(a->val[O_SEED], &sp.seed) != 0)
        return cli_usage_error("--seed expects an unsigned integer, got '%s'", a->val[O_SEED]);
    if (a->val[O_LOGPROBS]) {
        int32_t n;
        if (tsr_opt_parse_i32(a->val[O_LOGPROBS], &n) != 0 || n < 0)
            return cli_usage_error("--logprobs expects a count of alternatives >= 0, got '%s'",
                                   a->val[O_LOGPROBS]);
        sp.logprobs = 1;
        sp.top_logprobs = n;
    }
    sp.ignore_eos = a->val[O_IGNORE_EOS] != NULL;
    sp.n_stop = a->n_stops;
    sp.stop = (char **)a->stops;

    /* Stop ids: each --stop-id takes one id or a list ("2,32000"). */
    int32_t *stop_ids = NULL, *tokens = NULL;
    size_t n_stop_ids = 0, n_tokens = 0;
    gen_state g;
    memset(&g, 0, sizeof g);
    char *lp_buf = NULL;
    size_t lp_len = 0;
    rc = EXIT_FAIL;
    for (size_t i = 0; i < a->n_stop_ids; i++) {
        int32_t *ids;
        size_t n;
        if (tsr_cli_parse_id_list(a->stop_ids[i], &ids, &n) != 0) {
            rc = cli_usage_error("--stop-id expects token ids (N or N,M,...), got '%s'",
                                 a->stop_ids[i]);
            goto cleanup;
        }
        int32_t *grown = realloc(stop_ids, (n_stop_ids + n) * sizeof *grown);
        if (!grown) {
            free(ids);
            fputs("tessera-cli: out of memory\n", stderr);
            goto cleanup;
        }
        stop_ids = grown;
        memcpy(stop_ids + n_stop_ids, ids, n * sizeof *ids);
        n_stop_ids += n;
        free(ids);
    }
    sp.n_stop_token_ids = n_stop_ids;
    sp.stop_token_ids = stop_ids;

    Tessera__V1__GenerateRequest req = TESSERA__V1__GENERATE_REQUEST__INIT;
    Tessera__V1__TokenIds tok_msg = TESSERA__V1__TOKEN_IDS__INIT;
    cli_chat chat;
    req.sampling = &sp;
    if (a->val[O_REQUEST_ID])
        req.request_id = (char *)a->val[O_REQUEST_ID];
    if (a->val[O_ADAPTER])
        req.adapter = (char *)a->val[O_ADAPTER];
    if (a->val[O_PROMPT]) {
        req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_TEXT;
        req.text = (char *)a->val[O_PROMPT];
    } else if (a->val[O_TOKENS]) {
        if (tsr_cli_parse_id_list(a->val[O_TOKENS], &tokens, &n_tokens) != 0) {
            rc = cli_usage_error("--tokens expects token ids (1,2,3), got '%s'", a->val[O_TOKENS]);
            goto cleanup;
        }
        tok_msg.n_ids = n_tokens;
        tok_msg.ids = tokens;
        req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_TOKENS;
        req.tokens = &tok_msg;
    } else {
        cli_chat_init(&chat, a);
        req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_CHAT;
        req.chat = &chat.chat;
    }

    if (sp.logprobs && !(g.logprobs = open_memstream(&lp_buf, &lp_len))) {
        fprintf(stderr, "tessera-cli: open_memstream: %s\n", strerror(errno));
        goto cleanup;
    }

    tsr_cli_status st;
    tsr_status call_st = tsr_cli_call_stream(cx->conn, "/tessera.v1.Tessera/Generate", &req.base,
                                             gen_on_message, &g, &st);
    /* Text never ends mid-line on the terminal, whatever happened. */
    if (call_st == TSR_OK || (g.printed_any && g.last_char != '\n')) {
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (g.logprobs) {
        fclose(g.logprobs);
        g.logprobs = NULL;
        if (lp_len > 0)
            fprintf(stderr, "tessera-cli: logprobs:\n%s", lp_buf);
    }
    if (call_st != TSR_OK) {
        rc = cli_report_failure(cx, "generate", &st);
        goto cleanup;
    }
    if (!g.have_final) {
        fputs("tessera-cli: the stream ended without a final message\n", stderr);
        goto cleanup;
    }
    if (cx->verbose)
        fprintf(stderr, "tessera-cli: request %s, queued %.3g s\n",
                g.request_id[0] ? g.request_id : "(no id)", g.queued_s);
    if (!a->val[O_QUIET]) {
        fprintf(stderr, "tessera-cli: prompt %d tokens, completion %d tokens", g.prompt_tokens,
                g.completion_tokens);
        if (g.cached_tokens > 0)
            fprintf(stderr, " (%d cached)", g.cached_tokens);
        fprintf(stderr, ", finish %s, ttft %.3g s, total %.3g s\n", finish_name(g.finish), g.ttft_s,
                g.total_s);
    }
    switch (g.finish) {
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_ERROR:
        fprintf(stderr, "tessera-cli: generation failed: %s\n", g.error ? g.error : "(no message)");
        break;
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_CANCELLED:
        fputs("tessera-cli: the server cancelled the request (aborted or shutting down)\n", stderr);
        break;
    default: rc = 0;
    }
cleanup:
    if (g.logprobs)
        fclose(g.logprobs);
    free(lp_buf);
    free(g.error);
    free(stop_ids);
    free(tokens);
    return rc;
}
