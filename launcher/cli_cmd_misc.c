/* launcher/cli_cmd_misc.c - the small commands of tessera-cli, one call
 * (or a few) each: health (with --wait polling), info, tokenize,
 * detokenize and abort (docs/cli.md).
 *
 * What it is not: generate (cli_cmd_generate.c) or train (cli_cmd_train.c). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "base/clock.h"
#include "grpc/health/v1/health.pb-c.h"
#include "launcher/cli_cmd.h"
#include "launcher/cli_parse.h"
#include "tessera/v1/tessera.pb-c.h"

/* ---- health ------------------------------------------------------------- */

/* Sleeps `s` seconds in short steps; returns early (1) on a signal. */
static int sleep_interruptible(const cli_ctx *cx, double s) {
    double end = tsr_now_s() + s;
    while (!*cx->signal) {
        double left = end - tsr_now_s();
        if (left <= 0)
            return 0;
        if (left > 0.05)
            left = 0.05;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
    return 1;
}

static const char *serving_name(Grpc__Health__V1__HealthCheckResponse__ServingStatus s) {
    switch (s) {
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING: return "SERVING";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING: return "NOT_SERVING";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN:
        return "SERVICE_UNKNOWN";
    default: return "UNKNOWN";
    }
}

/* One Check. Returns TSR_OK with *status set, or the call's status with *st
 * saying why. */
static tsr_status health_check(const cli_ctx *cx, const char *service,
                               Grpc__Health__V1__HealthCheckResponse__ServingStatus *status,
                               tsr_cli_status *st) {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    ProtobufCMessage *resp;
    TSR_TRY(tsr_cli_call_unary(cx->conn, "/grpc.health.v1.Health/Check", &req.base,
                               &grpc__health__v1__health_check_response__descriptor, &resp, st));
    *status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
    return TSR_OK;
}

int cli_cmd_health(const cli_ctx *cx, const cli_args *a) {
    double wait_s = -1; /* < 0: one check */
    int rc = cli_opt_seconds(a, O_WAIT, &wait_s);
    if (rc)
        return rc;
    const char *service = a->val[O_SERVICE] ? a->val[O_SERVICE] : "";
    Grpc__Health__V1__HealthCheckResponse__ServingStatus status;
    tsr_cli_status st;

    if (wait_s < 0) {
        if (health_check(cx, service, &status, &st) != TSR_OK)
            return cli_report_failure(cx, "health", &st);
        printf("%s\n", serving_name(status));
        return status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                   ? 0
                   : EXIT_FAIL;
    }

    /* Poll until SERVING. A server that is not up yet (unreachable, or
     * UNAVAILABLE/NOT_SERVING while it loads) is worth waiting for; any
     * other answer (NOT_FOUND for an unknown service, UNIMPLEMENTED) is not. */
    double start = tsr_now_s(), end = start + wait_s;
    int have_status = 0, have_error = 0, attempts = 0;
    for (;;) {
        double left = end - tsr_now_s();
        double per_call = cx->timeout_s > 0 ? cx->timeout_s : 2.0;
        if (per_call > left)
            per_call = left > 0.05 ? left : 0.05;
        tsr_cli_conn_set_timeout(cx->conn, per_call);
        attempts++;
        if (health_check(cx, service, &status, &st) == TSR_OK) {
            have_status = 1;
            have_error = 0;
            if (status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
                printf("SERVING\n");
                if (cx->verbose)
                    fprintf(stderr, "tessera-cli: SERVING after %.1f s (%d checks)\n",
                            tsr_now_s() - start, attempts);
                return 0;
            }
            if (cx->verbose)
                fprintf(stderr, "tessera-cli: %s, waiting\n", serving_name(status));
        } else {
            if (st.interrupted || *cx->signal)
                return cli_interrupted_exit(cx);
            int transient = st.unreachable || st.code == GRPC_STATUS_UNAVAILABLE ||
                            st.code == GRPC_STATUS_DEADLINE_EXCEEDED;
            if (!transient || st.local_error)
                return cli_report_failure(cx, "health", &st);
            have_error = 1;
            /* A fresh channel, so the next check connects at once instead
             * of waiting out gRPC's reconnect backoff. */
            if (st.unreachable && tsr_cli_conn_reset(cx->conn) != TSR_OK) {
                fprintf(stderr, "tessera-cli: %s\n", tsr_error_msg());
                return EXIT_FAIL;
            }
            if (cx->verbose)
                fprintf(stderr, "tessera-cli: %s: %s, waiting\n",
                        st.unreachable ? "unreachable" : tsr_grpc_status_name(st.code), st.details);
        }
        if (tsr_now_s() >= end)
            break;
        double pause = end - tsr_now_s();
        if (sleep_interruptible(cx, pause < 0.2 ? pause : 0.2))
            return cli_interrupted_exit(cx);
    }
    if (have_error) {
        fprintf(stderr, "tessera-cli: not SERVING after %g s; last attempt: ", wait_s);
        if (st.unreachable)
            fprintf(stderr, "cannot reach %s: UNAVAILABLE: %s\n", cx->addr, st.details);
        else
            fprintf(stderr, "%s: %s\n", tsr_grpc_status_name(st.code), st.details);
    } else if (have_status) {
        printf("%s\n", serving_name(status));
        fprintf(stderr, "tessera-cli: not SERVING after %g s\n", wait_s);
    }
    return EXIT_FAIL;
}

/* ---- info --------------------------------------------------------------- */

static int print_info_json(const Tessera__V1__ModelInfo *m, const Tessera__V1__ServerInfo *s) {
    json_t *root = json_pack(
        "{s:{s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i},"
        "s:{s:i,s:i,s:i,s:i,s:i,s:f,s:s,s:i}}",
        "model", "name", m->name, "architecture", m->architecture, "format", m->format, "n_layer",
        m->n_layer, "n_embd", m->n_embd, "n_head", m->n_head, "n_head_kv", m->n_head_kv, "head_dim",
        m->head_dim, "n_ff", m->n_ff, "vocab_size", m->vocab_size, "context_length",
        m->context_length, "train_context_length", m->train_context_length, "tp", m->tp, "pp",
        m->pp, "bos_token_id", m->bos_token_id, "eos_token_id", m->eos_token_id, "server",
        "active_requests", s->active_requests, "queued_requests", s->queued_requests,
        "kv_blocks_used", s->kv_blocks_used, "kv_blocks_total", s->kv_blocks_total, "kv_block_size",
        s->kv_block_size, "uptime_s", s->uptime_s, "version", s->version, "world_size",
        s->world_size);
    if (!root) {
        fputs("tessera-cli: json_pack failed (invalid UTF-8 in a server string?)\n", stderr);
        return EXIT_FAIL;
    }
    int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    fputc('\n', stdout);
    if (rc != 0 || fflush(stdout) != 0) {
        fprintf(stderr, "tessera-cli: writing to stdout: %s\n", strerror(errno));
        return EXIT_FAIL;
    }
    return 0;
}

static void print_info_text(const Tessera__V1__ModelInfo *m, const Tessera__V1__ServerInfo *s) {
    printf("model:        %s (%s, %s)\n", m->name[0] ? m->name : "(unnamed)", m->architecture,
           m->format);
    printf("layers:       %d, embedding %d, feed-forward %d\n", m->n_layer, m->n_embd, m->n_ff);
    printf("heads:        %d query, %d key/value, head dim %d\n", m->n_head, m->n_head_kv,
           m->head_dim);
    printf("vocabulary:   %d tokens (bos %d, eos %d)\n", m->vocab_size, m->bos_token_id,
           m->eos_token_id);
    printf("context:      %d tokens served (trained on %d)\n", m->context_length,
           m->train_context_length);
    printf("layout:       tp %d x pp %d on %d ranks\n", m->tp, m->pp, s->world_size);
    printf("server:       version %s, up %.1f s\n", s->version[0] ? s->version : "?", s->uptime_s);
    printf("requests:     %d active, %d queued\n", s->active_requests, s->queued_requests);
    printf("kv cache:     %d of %d blocks in use (%d tokens per block)\n", s->kv_blocks_used,
           s->kv_blocks_total, s->kv_block_size);
}

int cli_cmd_info(const cli_ctx *cx, const cli_args *a) {
    Tessera__V1__GetModelInfoRequest mreq = TESSERA__V1__GET_MODEL_INFO_REQUEST__INIT;
    Tessera__V1__GetServerInfoRequest sreq = TESSERA__V1__GET_SERVER_INFO_REQUEST__INIT;
    ProtobufCMessage *m = NULL, *s = NULL;
    tsr_cli_status st;
    int rc;
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/GetModelInfo", &mreq.base,
                           &tessera__v1__model_info__descriptor, &m, &st) != TSR_OK) {
        rc = cli_report_failure(cx, "GetModelInfo", &st);
        goto cleanup;
    }
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/GetServerInfo", &sreq.base,
                           &tessera__v1__server_info__descriptor, &s, &st) != TSR_OK) {
        rc = cli_report_failure(cx, "GetServerInfo", &st);
        goto cleanup;
    }
    if (a->val[O_JSON]) {
        rc = print_info_json((Tessera__V1__ModelInfo *)m, (Tessera__V1__ServerInfo *)s);
    } else {
        print_info_text((Tessera__V1__ModelInfo *)m, (Tessera__V1__ServerInfo *)s);
        rc = 0;
    }
cleanup:
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    if (s)
        protobuf_c_message_free_unpacked(s, NULL);
    return rc;
}

/* ---- tokenize, detokenize, abort ---------------------------------------- */

int cli_cmd_tokenize(const cli_ctx *cx, const cli_args *a) {
    if (!!a->val[O_TEXT] + !!a->val[O_CHAT] != 1)
        return cli_usage_error("tokenize needs exactly one of --text and --chat");
    if (a->val[O_SYSTEM] && !a->val[O_CHAT])
        return cli_usage_error("--system goes with --chat");
    Tessera__V1__TokenizeRequest req = TESSERA__V1__TOKENIZE_REQUEST__INIT;
    cli_chat chat;
    req.parse_special = a->val[O_PARSE_SPECIAL] != NULL;
    req.add_special = a->val[O_ADD_SPECIAL] != NULL;
    if (a->val[O_TEXT]) {
        req.input_case = TESSERA__V1__TOKENIZE_REQUEST__INPUT_TEXT;
        req.text = (char *)a->val[O_TEXT];
    } else {
        cli_chat_init(&chat, a);
        req.input_case = TESSERA__V1__TOKENIZE_REQUEST__INPUT_CHAT;
        req.chat = &chat.chat;
    }
    ProtobufCMessage *resp;
    tsr_cli_status st;
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/Tokenize", &req.base,
                           &tessera__v1__tokenize_response__descriptor, &resp, &st) != TSR_OK)
        return cli_report_failure(cx, "tokenize", &st);
    const Tessera__V1__TokenizeResponse *r = (const Tessera__V1__TokenizeResponse *)resp;
    for (size_t i = 0; i < r->n_ids; i++)
        printf(i ? " %d" : "%d", r->ids[i]);
    putchar('\n');
    if (cx->verbose)
        fprintf(stderr, "tessera-cli: %zu tokens\n", r->n_ids);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

int cli_cmd_detokenize(const cli_ctx *cx, const cli_args *a) {
    if (!a->val[O_IDS])
        return cli_usage_error("detokenize needs --ids 1,2,3");
    Tessera__V1__DetokenizeRequest req = TESSERA__V1__DETOKENIZE_REQUEST__INIT;
    int32_t *ids;
    size_t n;
    if (tsr_cli_parse_id_list(a->val[O_IDS], &ids, &n) != 0)
        return cli_usage_error("--ids expects token ids (1,2,3), got '%s'", a->val[O_IDS]);
    req.n_ids = n;
    req.ids = ids;
    req.skip_special = a->val[O_SKIP_SPECIAL] != NULL;
    ProtobufCMessage *resp;
    tsr_cli_status st;
    int rc = 0;
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/Detokenize", &req.base,
                           &tessera__v1__detokenize_response__descriptor, &resp, &st) != TSR_OK) {
        rc = cli_report_failure(cx, "detokenize", &st);
    } else {
        printf("%s\n", ((const Tessera__V1__DetokenizeResponse *)resp)->text);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    free(ids);
    return rc;
}

int cli_cmd_abort(const cli_ctx *cx, const cli_args *a) {
    if (!a->val[O_REQUEST_ID] || !a->val[O_REQUEST_ID][0])
        return cli_usage_error("abort needs --request-id ID");
    Tessera__V1__AbortRequest req = TESSERA__V1__ABORT_REQUEST__INIT;
    req.request_id = (char *)a->val[O_REQUEST_ID];
    ProtobufCMessage *resp;
    tsr_cli_status st;
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/Abort", &req.base,
                           &tessera__v1__abort_response__descriptor, &resp, &st) != TSR_OK)
        return cli_report_failure(cx, "abort", &st);
    int found = ((const Tessera__V1__AbortResponse *)resp)->found;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!found) {
        fprintf(stderr, "tessera-cli: no request '%s' is queued or running\n", req.request_id);
        return EXIT_FAIL;
    }
    printf("aborted %s\n", req.request_id);
    return 0;
}
