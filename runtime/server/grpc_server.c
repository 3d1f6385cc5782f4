/* runtime/server/grpc_server.c - the gRPC transport on rank 0: one
 * completion queue, one thread, a state machine per call.
 *
 * Every call is a srv_call. It has at most two operations in flight: the
 * RECV_CLOSE_ON_SERVER it starts on arrival (it completes when the call ends,
 * and says whether it ended by cancellation: client gone, deadline, server
 * shutdown), and one batch on its op tag (receive the request, or send one
 * message, possibly with the status). A Generate call streams: the engine
 * posts events to its tsr_gen_request and this thread polls them, so the
 * completion queue is waited on with a short timeout while streams are live
 * (5 ms) and a long one when idle (100 ms; an idle server wakes 10 times a
 * second). Chunks that pile up while a send is in flight go out merged in
 * the next message.
 *
 * The request/response translation and every validation live in
 * grpc_api.c; this file owns calls, auth, health, the access log (and the
 * per-call metric beside it) and shutdown.
 *
 * What it is not: the scheduler, and never a caller of MPI. */
#include "runtime/server/grpc_server.h"
#include "proto/grpc_status_name.h"
#include "base/rng.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/log.h"
#include "grpc/health/v1/health.pb-c.h"
#include "runtime/server/grpc_api.h"

#ifndef TSR_VERSION
#define TSR_VERSION "unknown"
#endif

/* A failed gRPC call reports the statement, file:line and gRPC's own
 * description of the error; evaluates to nonzero on success. */
#define TSR_GRPC_OK(expr) tsr_grpc_check_((expr), #expr, __FILE__, __LINE__)

static int tsr_grpc_check_(grpc_call_error e, const char *what, const char *file, int line) {
    if (e == GRPC_CALL_OK)
        return 1;
    TSR_LOG_E("gRPC: %s failed at %s:%d: %s", what, file, line, grpc_call_error_to_string(e));
    return 0;
}

enum {
    M_UNKNOWN = 0,
    M_GENERATE,
    M_TOKENIZE,
    M_DETOKENIZE,
    M_MODEL_INFO,
    M_SERVER_INFO,
    M_ABORT,
    M_HEALTH_CHECK,
    M_HEALTH_WATCH,
    /* the adapter calls: M_CTL_FIRST + tsr_ctl_kind - 1 */
    M_CTL_FIRST,
    M_CREATE_ADAPTER = M_CTL_FIRST,
    M_FORWARD_BACKWARD,
    M_FORWARD,
    M_OPTIM_STEP,
    M_SAVE_ADAPTER,
    M_LOAD_ADAPTER,
    M_LIST_ADAPTERS,
    M_DELETE_ADAPTER,
};

_Static_assert(M_FORWARD_BACKWARD - M_CTL_FIRST + 1 == TSR_CTL_FORWARD_BACKWARD &&
                   M_DELETE_ADAPTER - M_CTL_FIRST + 1 == TSR_CTL_DELETE,
               "adapter methods and tsr_ctl_kind differ");

static int is_ctl(int method) { return method >= M_CTL_FIRST && method <= M_DELETE_ADAPTER; }

static const struct {
    const char *path;
    const char *name; /* for the access log */
    int method;
} k_methods[] = {
    {"/tessera.v1.Tessera/Generate", "Generate", M_GENERATE},
    {"/tessera.v1.Tessera/Tokenize", "Tokenize", M_TOKENIZE},
    {"/tessera.v1.Tessera/Detokenize", "Detokenize", M_DETOKENIZE},
    {"/tessera.v1.Tessera/GetModelInfo", "GetModelInfo", M_MODEL_INFO},
    {"/tessera.v1.Tessera/GetServerInfo", "GetServerInfo", M_SERVER_INFO},
    {"/tessera.v1.Tessera/Abort", "Abort", M_ABORT},
    {"/tessera.v1.Tessera/CreateAdapter", "CreateAdapter", M_CREATE_ADAPTER},
    {"/tessera.v1.Tessera/ForwardBackward", "ForwardBackward", M_FORWARD_BACKWARD},
    {"/tessera.v1.Tessera/Forward", "Forward", M_FORWARD},
    {"/tessera.v1.Tessera/OptimStep", "OptimStep", M_OPTIM_STEP},
    {"/tessera.v1.Tessera/SaveAdapter", "SaveAdapter", M_SAVE_ADAPTER},
    {"/tessera.v1.Tessera/LoadAdapter", "LoadAdapter", M_LOAD_ADAPTER},
    {"/tessera.v1.Tessera/ListAdapters", "ListAdapters", M_LIST_ADAPTERS},
    {"/tessera.v1.Tessera/DeleteAdapter", "DeleteAdapter", M_DELETE_ADAPTER},
    {"/grpc.health.v1.Health/Check", "Health.Check", M_HEALTH_CHECK},
    {"/grpc.health.v1.Health/Watch", "Health.Watch", M_HEALTH_WATCH},
};

static int is_health(int method) { return method == M_HEALTH_CHECK || method == M_HEALTH_WATCH; }

typedef enum { TAG_NEW, TAG_OP, TAG_CLOSE } tag_kind;

typedef struct srv_call srv_call;
typedef struct {
    srv_call *c;
    tag_kind kind;
} call_tag;

struct srv_call {
    srv_call *prev, *next; /* in the server's list once it has arrived */
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    call_tag t_new, t_op, t_close;
    int method;
    const char *name;
    int listed, counted;    /* in the list; in active_calls */
    int op_busy, op_recv;   /* a batch on t_op in flight; it is the receive */
    int close_busy, closed; /* RECV_CLOSE_ON_SERVER in flight; completed */
    int close_cancelled;    /* its result: ended by cancellation */
    int md_sent, status_started;
    grpc_byte_buffer *recv_buf, *send_buf;
    grpc_slice status_slice;
    int has_status_slice;
    /* outcome, for the access log */
    grpc_status_code status;
    char msg[256];
    char peer[128];
    double t_arrival, deadline; /* tsr_now_s clock; deadline 0 = none */
    /* Generate */
    char id[TSR_API_MAX_ID + 1];
    tsr_gen_request *req; /* our reference while the call lives */
    tsr_gen_event *stash; /* a FINAL taken while merging chunks */
    int final_seen, aborted, n_prompt, n_completion;
    tsr_fin_reason finish;
    int fin_prompt, fin_completion, fin_cached;
    double fin_queued, fin_ttft, fin_total, t_first;
    char fin_error[256];
    char *prompt_text; /* log_prompts only */
    /* Health.Watch */
    int watching, watch_unknown, watch_sent;
    /* the adapter calls: our reference while the call lives */
    tsr_ctl_request *ctl;
};

struct tsr_grpc_server {
    tsr_grpc_server_config cfg;
    char *listen_addr, *auth_token;
    size_t auth_len;
    tsr_api_ctx api;
    grpc_completion_queue *cq;
    grpc_server *server;
    int port;
    pthread_t thread;
    int thread_started;
    atomic_int draining;     /* stop_accepting was called */
    atomic_int stop;         /* shutdown was called */
    atomic_int active_calls; /* calls in flight, Watch streams excepted */
    /* owned by the server thread */
    srv_call *calls;
    srv_call *pending; /* the call slot waiting for the next arrival */
    int shutdown_started, shutdown_done;
    int shutdown_tag; /* its address is the tag */
    double t_start;
    unsigned long long next_id;
    uint64_t seed_state;
};

/* ---- small helpers ----------------------------------------------------------- */

/* Compares a presented token with the expected one in time that depends
 * only on the expected token's length. */
static int token_equal(const unsigned char *got, size_t n_got, const char *want, size_t n_want) {
    unsigned char acc = 0;
    for (size_t i = 0; i < n_want; i++)
        acc |= (unsigned char)(want[i] ^ (i < n_got ? got[i] : 0));
    return (acc == 0) & (n_got == n_want);
}

static int auth_ok(const tsr_grpc_server_t *s, const grpc_metadata_array *md) {
    int ok = 0;
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, "authorization") != 0)
            continue;
        const unsigned char *v = GRPC_SLICE_START_PTR(md->metadata[i].value);
        size_t n = GRPC_SLICE_LENGTH(md->metadata[i].value);
        if (n < 7 || strncasecmp((const char *)v, "bearer ", 7) != 0)
            continue;
        v += 7, n -= 7;
        while (n && *v == ' ')
            v++, n--;
        ok |= token_equal(v, n, s->auth_token, s->auth_len);
    }
    return ok;
}

static Grpc__Health__V1__HealthCheckResponse__ServingStatus health_status(tsr_grpc_server_t *s) {
    tsr_server_stats *st = s->cfg.stats;
    if (atomic_load(&s->draining) || atomic_load(&s->stop) || !atomic_load(&st->ready) ||
        atomic_load(&st->engine_failed))
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
}

static const char *finish_name(tsr_fin_reason f) {
    switch (f) {
    case TSR_FIN_STOP: return "stop";
    case TSR_FIN_LENGTH: return "length";
    case TSR_FIN_CANCELLED: return "cancelled";
    case TSR_FIN_ERROR: return "error";
    }
    return "-";
}

/* ---- the access log ------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap;
} line_buf;

static void lb_put(line_buf *b, const char *s, size_t n) {
    if (b->len + n >= b->cap)
        n = b->cap - 1 - b->len;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void lb_printf(line_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lb_printf(line_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len = b->len + (size_t)n < b->cap ? b->len + (size_t)n : b->cap - 1;
}

/* " key=value", quoting the value (with \" \\ \n \t \xHH escapes) when it
 * is empty or holds a space, a quote, '=' or a control byte, so every line
 * splits unambiguously into pairs. At most `max` bytes of value. */
static void lb_kv(line_buf *b, const char *key, const char *v, size_t max) {
    size_t n = strnlen(v, max);
    int quote = n == 0;
    for (size_t i = 0; i < n && !quote; i++) {
        unsigned char ch = (unsigned char)v[i];
        quote = ch <= ' ' || ch == '"' || ch == '=' || ch == '\\' || ch == 0x7F;
    }
    lb_printf(b, " %s=", key);
    if (!quote) {
        lb_put(b, v, n);
        return;
    }
    lb_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            lb_put(b, e, 2);
        } else if (ch == '\n') {
            lb_put(b, "\\n", 2);
        } else if (ch == '\t') {
            lb_put(b, "\\t", 2);
        } else if (ch < 0x20 || ch == 0x7F) {
            lb_printf(b, "\\x%02x", ch);
        } else {
            lb_put(b, (const char *)&ch, 1);
        }
    }
    lb_put(b, "\"", 1);
}

enum { LOG_PROMPT_MAX = 4096 };

/* One line per finished call on stderr, always (the serving log is not
 * subject to the quiet default of tsr_log). Health calls, which probes make
 * every few seconds, go to the debug log instead. */
static void access_log(tsr_grpc_server_t *s, srv_call *c) {
    if (is_health(c->method)) {
        TSR_LOG_D("access: method=%s peer=%s status=%s", c->name, c->peer,
                  tsr_grpc_status_name(c->status));
        return;
    }
    char mem[LOG_PROMPT_MAX * 5 + 2048];
    line_buf b = {mem, 0, sizeof mem};
    mem[0] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    lb_printf(&b, "access: ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    lb_kv(&b, "method", c->name, 128);
    if (c->method == M_GENERATE) {
        lb_kv(&b, "id", c->id[0] ? c->id : "-", sizeof c->id);
    }
    lb_kv(&b, "peer", c->peer, sizeof c->peer);
    if (c->method == M_GENERATE)
        lb_kv(&b, "adapter", c->req && c->req->adapter[0] ? c->req->adapter : "-", 128);
    if (is_ctl(c->method) && c->ctl && c->ctl->name[0])
        lb_kv(&b, "adapter", c->ctl->name, sizeof c->ctl->name);
    lb_kv(&b, "status", tsr_grpc_status_name(c->status), 64);
    double total = tsr_now_s() - c->t_arrival;
    if (c->method == M_GENERATE) {
        if (c->final_seen) {
            lb_kv(&b, "finish", finish_name(c->finish), 32);
            lb_printf(&b,
                      " prompt_tokens=%d completion_tokens=%d cached_tokens=%d queued_s=%.3f "
                      "ttft_s=%.3f total_s=%.3f",
                      c->fin_prompt, c->fin_completion, c->fin_cached, c->fin_queued, c->fin_ttft,
                      c->fin_total);
        } else {
            /* ended before the engine's final word: what this side saw */
            lb_printf(&b, " prompt_tokens=%d completion_tokens=%d queued_s=-", c->n_prompt,
                      c->n_completion);
            if (c->t_first > 0)
                lb_printf(&b, " ttft_s=%.3f", c->t_first - c->t_arrival);
            else
                lb_printf(&b, " ttft_s=-");
            lb_printf(&b, " total_s=%.3f", total);
        }
        if (c->final_seen && c->finish == TSR_FIN_ERROR)
            lb_kv(&b, "error", c->fin_error, sizeof c->fin_error);
    } else {
        lb_printf(&b, " total_s=%.3f", total);
    }
    if (c->status != GRPC_STATUS_OK)
        lb_kv(&b, "msg", c->msg, sizeof c->msg);
    if (c->prompt_text) {
        lb_kv(&b, "prompt", c->prompt_text, LOG_PROMPT_MAX);
        if (strlen(c->prompt_text) > LOG_PROMPT_MAX)
            lb_printf(&b, " prompt_truncated=1");
    }
    lb_put(&b, "\n", 1);
    fputs(mem, stderr); /* one write per line keeps lines whole */
    fflush(stderr);
}

/* ---- call lifetime ------------------------------------------------------------- */

static void call_free(srv_call *c) {
    if (!c)
        return;
    if (c->call)
        grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    if (c->recv_buf)
        grpc_byte_buffer_destroy(c->recv_buf);
    if (c->send_buf)
        grpc_byte_buffer_destroy(c->send_buf);
    if (c->has_status_slice)
        grpc_slice_unref(c->status_slice);
    tsr_gen_event_free(c->stash);
    tsr_gen_request_release(c->req);
    tsr_ctl_request_release(c->ctl);
    free(c->prompt_text);
    free(c);
}

/* Offers a slot for the next incoming call. */
static void request_next(tsr_grpc_server_t *s) {
    srv_call *c = calloc(1, sizeof *c);
    if (!c) {
        TSR_LOG_E("gRPC server: out of memory; no further calls will be accepted");
        return;
    }
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    c->t_new = (call_tag){c, TAG_NEW};
    c->t_op = (call_tag){c, TAG_OP};
    c->t_close = (call_tag){c, TAG_CLOSE};
    c->watch_sent = -1;
    if (!TSR_GRPC_OK(grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq,
                                              s->cq, &c->t_new))) {
        call_free(c);
        return;
    }
    s->pending = c;
}

static void list_add(tsr_grpc_server_t *s, srv_call *c) {
    c->next = s->calls;
    c->prev = NULL;
    if (s->calls)
        s->calls->prev = c;
    s->calls = c;
    c->listed = 1;
}

static void list_remove(tsr_grpc_server_t *s, srv_call *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        s->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->listed = 0;
}

/* Frees a call once nothing of it is in flight and it has ended. */
static void maybe_release(tsr_grpc_server_t *s, srv_call *c) {
    if (!c->listed || c->op_busy || c->close_busy || !c->closed)
        return;
    access_log(s, c);
    if (s->cfg.metrics) {
        const char *labels[] = {c->name, tsr_grpc_status_name(c->status)};
        tsr_metric_inc(tsr_metric_get(s->cfg.metrics->requests, labels), 1);
    }
    if (c->req && !c->final_seen)
        atomic_store(&c->req->cancelled, 1); /* the engine frees its KV within a step */
    if (c->ctl)
        atomic_store(&c->ctl->cancelled, 1); /* skipped if it has not started */
    list_remove(s, c);
    if (c->counted)
        atomic_fetch_sub(&s->active_calls, 1);
    call_free(c);
}

/* Starts one batch on the op tag: initial metadata if not yet sent, an
 * optional message (buf: malloc'd, ownership passes) and an optional
 * status. */
static void send_batch(srv_call *c, uint8_t *buf, size_t len, int with_status,
                       grpc_status_code code, const char *msg) {
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = 1;
    }
    if (buf) {
        grpc_slice sl = grpc_slice_new(buf, len, free);
        c->send_buf = grpc_raw_byte_buffer_create(&sl, 1);
        grpc_slice_unref(sl);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->send_buf;
    }
    if (with_status) {
        c->status = code;
        snprintf(c->msg, sizeof c->msg, "%.*s", (int)sizeof c->msg - 1, msg ? msg : "");
        c->status_slice = grpc_slice_from_copied_string(c->msg);
        c->has_status_slice = 1;
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = code;
        ops[n++].data.send_status_from_server.status_details = &c->status_slice;
        c->status_started = 1;
    }
    if (TSR_GRPC_OK(grpc_call_start_batch(c->call, ops, n, &c->t_op, NULL))) {
        c->op_busy = 1;
        c->op_recv = 0;
        return;
    }
    /* a broken invariant on our side: end the call rather than hang it */
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "internal server error", NULL);
    c->status = GRPC_STATUS_INTERNAL;
    snprintf(c->msg, sizeof c->msg, "internal: a gRPC batch could not start");
    c->status_started = 1;
}

static void finish(srv_call *c, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish(srv_call *c, grpc_status_code code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    send_batch(c, NULL, 0, 1, code, msg);
}

static void reply(srv_call *c, uint8_t *buf, size_t len) {
    send_batch(c, buf, len, 1, GRPC_STATUS_OK, "");
}

static void reply_msg(srv_call *c, const ProtobufCMessage *m) {
    uint8_t *buf;
    size_t len;
    if (tsr_api_pack(m, &buf, &len) != TSR_OK) {
        finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    reply(c, buf, len);
}

/* ---- methods --------------------------------------------------------------------- */

static srv_call *find_active(tsr_grpc_server_t *s, const char *id) {
    for (srv_call *c = s->calls; c; c = c->next)
        if (c->method == M_GENERATE && c->req && !c->final_seen && !c->closed &&
            !c->status_started && strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

static void on_generate(tsr_grpc_server_t *s, srv_call *c, const uint8_t *data, size_t len) {
    Tessera__V1__GenerateRequest *m = tessera__v1__generate_request__unpack(NULL, len, data);
    if (!m) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT,
               "malformed GenerateRequest (not a tessera.v1 message)");
        return;
    }
    tsr_server_stats *st = s->cfg.stats;
    tsr_gen_request *r = NULL;
    tsr_api_error err;
    if (tsr_api_check_id(m->request_id, &err) != GRPC_STATUS_OK) {
        finish(c, err.code, "%s", err.msg);
        goto done;
    }
    if (m->request_id[0]) {
        if (find_active(s, m->request_id)) {
            finish(c, GRPC_STATUS_ALREADY_EXISTS,
                   "request_id '%s' belongs to a request still running: pick another id, or "
                   "Abort that request first",
                   m->request_id);
            goto done;
        }
        snprintf(c->id, sizeof c->id, "%s", m->request_id);
    } else {
        do
            snprintf(c->id, sizeof c->id, "req-%llu", ++s->next_id);
        while (find_active(s, c->id));
    }
    if (atomic_load(&st->engine_failed)) {
        finish(c, GRPC_STATUS_UNAVAILABLE,
               "the engine has failed and cannot generate (see the server log); restart the "
               "server");
        goto done;
    }
    if (!atomic_load(&st->ready)) {
        finish(c, GRPC_STATUS_UNAVAILABLE,
               "the model is still loading: retry when health reports SERVING");
        goto done;
    }
    r = tsr_gen_request_new();
    if (!r) {
        finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto done;
    }
    grpc_status_code code =
        tsr_api_generate_request(&s->api, m, tsr_splitmix64(&s->seed_state) | 1u, r,
                                 s->cfg.log_prompts ? &c->prompt_text : NULL, &err);
    c->n_prompt = r->n_prompt;
    if (code != GRPC_STATUS_OK) {
        finish(c, code, "%s", err.msg);
        goto done;
    }
    snprintf(r->id, sizeof r->id, "%s", c->id);
    snprintf(r->client, sizeof r->client, "%s", c->peer);
    r->t_arrival = c->t_arrival;
    r->deadline = c->deadline;
    tsr_status pst = tsr_request_queue_push(s->cfg.queue, r);
    if (pst != TSR_OK) { /* the queue is full (RANGE) or closed (UNAVAILABLE) */
        finish(c, pst == TSR_ERR_RANGE ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_UNAVAILABLE,
               "%s", tsr_error_msg());
        goto done;
    }
    c->req = r; /* our reference; the queue took its own */
    r = NULL;
done:
    tsr_gen_request_release(r);
    tessera__v1__generate_request__free_unpacked(m, NULL);
}

static void on_abort(tsr_grpc_server_t *s, srv_call *c, const uint8_t *data, size_t len) {
    Tessera__V1__AbortRequest *m = tessera__v1__abort_request__unpack(NULL, len, data);
    if (!m) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT,
               "malformed AbortRequest (not a tessera.v1 message)");
        return;
    }
    if (!m->request_id[0]) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT,
               "request_id is empty: give the id of the request to abort");
    } else {
        srv_call *t = find_active(s, m->request_id);
        if (t) {
            t->aborted = 1;
            atomic_store(&t->req->cancelled, 1);
        }
        Tessera__V1__AbortResponse resp = TESSERA__V1__ABORT_RESPONSE__INIT;
        resp.found = t != NULL;
        reply_msg(c, &resp.base);
    }
    tessera__v1__abort_request__free_unpacked(m, NULL);
}

/* An adapter call: parsed and checked here, run by the engine thread, answered
 * by pump_ctl once it is done. */
static void on_ctl(tsr_grpc_server_t *s, srv_call *c, const uint8_t *data, size_t len) {
    tsr_server_stats *st = s->cfg.stats;
    if (atomic_load(&st->engine_failed)) {
        finish(c, GRPC_STATUS_UNAVAILABLE,
               "the engine has failed (see the server log); restart the server");
        return;
    }
    if (!atomic_load(&st->ready)) {
        finish(c, GRPC_STATUS_UNAVAILABLE,
               "the model is still loading: retry when health reports SERVING");
        return;
    }
    tsr_ctl_request *r = tsr_ctl_request_new();
    if (!r) {
        finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    tsr_api_error err;
    grpc_status_code code = tsr_api_ctl_request(
        &s->api, (tsr_ctl_kind)(c->method - M_CTL_FIRST + 1), data, len, r, &err);
    if (code != GRPC_STATUS_OK) {
        finish(c, code, "%s", err.msg);
        tsr_ctl_request_release(r);
        return;
    }
    if (tsr_request_queue_push_ctl(s->cfg.queue, r) != TSR_OK) { /* closed: UNAVAILABLE */
        finish(c, GRPC_STATUS_UNAVAILABLE, "%s", tsr_error_msg());
        tsr_ctl_request_release(r);
        return;
    }
    c->ctl = r; /* the queue took its own reference */
}

static void pump_ctl(tsr_grpc_server_t *s, srv_call *c, double now) {
    (void)s;
    if (c->op_busy || !atomic_load(&c->ctl->done)) {
        if (c->deadline > 0 && now >= c->deadline && !c->op_busy) {
            atomic_store(&c->ctl->cancelled, 1);
            grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                         "deadline exceeded", NULL);
            c->status = GRPC_STATUS_DEADLINE_EXCEEDED;
            snprintf(c->msg, sizeof c->msg, "deadline exceeded");
            c->status_started = 1;
        }
        return;
    }
    const tsr_ctl_request *r = c->ctl;
    if (r->code != GRPC_STATUS_OK) {
        finish(c, (grpc_status_code)r->code, "%s", r->msg);
        return;
    }
    uint8_t *buf;
    size_t len;
    if (tsr_api_ctl_response(r, &buf, &len) != TSR_OK) {
        finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory on the server");
        return;
    }
    reply(c, buf, len);
}

static void on_server_info(tsr_grpc_server_t *s, srv_call *c) {
    tsr_server_stats *st = s->cfg.stats;
    Tessera__V1__ServerInfo si = TESSERA__V1__SERVER_INFO__INIT;
    si.active_requests = atomic_load(&st->active);
    /* the engine's count covers the admission queue too (request.h); the
     * queue's own length is a floor between two engine iterations */
    int queued = atomic_load(&st->queued), in_queue = tsr_request_queue_len(s->cfg.queue);
    si.queued_requests = queued > in_queue ? queued : in_queue;
    si.kv_blocks_used = atomic_load(&st->kv_blocks_used);
    si.kv_blocks_total = atomic_load(&st->kv_blocks_total);
    si.kv_block_size = atomic_load(&st->kv_block_size);
    si.uptime_s = tsr_now_s() - s->t_start;
    si.version = (char *)TSR_VERSION;
    si.world_size = s->cfg.world_size;
    reply_msg(c, &si.base);
}

static void on_health(tsr_grpc_server_t *s, srv_call *c, const uint8_t *data, size_t len) {
    Grpc__Health__V1__HealthCheckRequest *m =
        grpc__health__v1__health_check_request__unpack(NULL, len, data);
    if (!m) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed HealthCheckRequest");
        return;
    }
    int known = !m->service[0] || strcmp(m->service, "tessera.v1.Tessera") == 0;
    if (c->method == M_HEALTH_WATCH) {
        c->watching = 1;
        c->watch_unknown = !known; /* Watch answers SERVICE_UNKNOWN and keeps the stream */
    } else if (!known) {
        finish(c, GRPC_STATUS_NOT_FOUND,
               "unknown service '%.100s': ask about \"\" or \"tessera.v1.Tessera\"",
               tsr_api_utf8_valid(m->service, strlen(m->service)) ? m->service : "?");
    } else {
        Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        resp.status = health_status(s);
        reply_msg(c, &resp.base);
    }
    grpc__health__v1__health_check_request__free_unpacked(m, NULL);
}

/* The request message has arrived (or not). */
static void on_message(tsr_grpc_server_t *s, srv_call *c, int ok) {
    if (!ok) {
        /* gRPC refused it (over the size limit: RESOURCE_EXHAUSTED is
         * already on its way to the client) or the client left */
        c->status = GRPC_STATUS_CANCELLED;
        snprintf(c->msg, sizeof c->msg,
                 "no request message received (client gone, or the message is over the "
                 "%d-byte limit)",
                 s->cfg.max_message_bytes > 0 ? s->cfg.max_message_bytes : 4 << 20);
        c->status_started = 1;
        return;
    }
    if (!c->recv_buf) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT, "the call carried no request message");
        return;
    }
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, c->recv_buf)) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT,
               "the request message could not be read (unsupported compression?)");
        return;
    }
    grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(c->recv_buf);
    c->recv_buf = NULL;
    const uint8_t *data = GRPC_SLICE_START_PTR(sl);
    size_t len = GRPC_SLICE_LENGTH(sl);
    uint8_t *out = NULL;
    size_t out_len = 0;
    tsr_api_error err;
    grpc_status_code code = GRPC_STATUS_OK;
    switch (c->method) {
    case M_GENERATE: on_generate(s, c, data, len); break;
    case M_TOKENIZE: code = tsr_api_tokenize(&s->api, data, len, &out, &out_len, &err); break;
    case M_DETOKENIZE: code = tsr_api_detokenize(&s->api, data, len, &out, &out_len, &err); break;
    case M_MODEL_INFO: code = tsr_api_model_info(&s->api, &out, &out_len, &err); break;
    case M_SERVER_INFO: on_server_info(s, c); break;
    case M_ABORT: on_abort(s, c, data, len); break;
    case M_HEALTH_CHECK:
    case M_HEALTH_WATCH: on_health(s, c, data, len); break;
    default:
        if (is_ctl(c->method))
            on_ctl(s, c, data, len);
        else
            finish(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method");
        break;
    }
    if (code != GRPC_STATUS_OK)
        finish(c, code, "%s", err.msg);
    else if (out)
        reply(c, out, out_len);
    grpc_slice_unref(sl);
}

/* A call has arrived in the pending slot. */
static void on_new(tsr_grpc_server_t *s, srv_call *c, int ok) {
    s->pending = NULL;
    if (!ok) { /* the server is shutting down: the slot was never used */
        call_free(c);
        return;
    }
    if (!s->shutdown_started)
        request_next(s);
    list_add(s, c);
    c->t_arrival = tsr_now_s();
    char *peer = grpc_call_get_peer(c->call);
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "?");
    gpr_free(peer);
    gpr_timespec d = c->details.deadline;
    if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) != 0) {
        double rem = gpr_timespec_to_micros(gpr_time_sub(d, gpr_now(d.clock_type))) * 1e-6;
        c->deadline = c->t_arrival + rem;
    }
    c->name = NULL;
    for (size_t i = 0; i < sizeof k_methods / sizeof k_methods[0]; i++)
        if (grpc_slice_str_cmp(c->details.method, k_methods[i].path) == 0) {
            c->method = k_methods[i].method;
            c->name = k_methods[i].name;
        }
    if (!c->name)
        c->name = "unknown";
    if (c->method != M_HEALTH_WATCH) {
        c->counted = 1;
        atomic_fetch_add(&s->active_calls, 1);
    }

    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    if (!TSR_GRPC_OK(grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL))) {
        /* cannot track the call's end: refuse it; it completes as cancelled */
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "internal server error", NULL);
        c->closed = 1;
        c->status = GRPC_STATUS_INTERNAL;
        return;
    }
    c->close_busy = 1;

    int tessera = !is_health(c->method);
    if (c->method == M_UNKNOWN) {
        char *path = grpc_slice_to_c_string(c->details.method);
        int authed = !s->auth_token || auth_ok(s, &c->md);
        if (!authed && path && strncmp(path, "/tessera.", 9) == 0)
            finish(c, GRPC_STATUS_UNAUTHENTICATED,
                   "missing or wrong bearer token: send the metadata 'authorization: Bearer "
                   "<token>'");
        else
            finish(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method %.200s", path ? path : "?");
        gpr_free(path);
        return;
    }
    if (tessera && s->auth_token && !auth_ok(s, &c->md)) {
        finish(c, GRPC_STATUS_UNAUTHENTICATED,
               "missing or wrong bearer token: send the metadata 'authorization: Bearer "
               "<token>'");
        return;
    }
    if (tessera && atomic_load(&s->draining)) {
        finish(c, GRPC_STATUS_UNAVAILABLE, "the server is shutting down and accepts no new calls");
        return;
    }
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    if (TSR_GRPC_OK(grpc_call_start_batch(c->call, &op, 1, &c->t_op, NULL))) {
        c->op_busy = 1;
        c->op_recv = 1;
    } else {
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "internal server error", NULL);
        c->status = GRPC_STATUS_INTERNAL;
        c->status_started = 1;
    }
}

static void on_close(tsr_grpc_server_t *s, srv_call *c) {
    c->closed = 1;
    if (!c->close_cancelled)
        return;
    if (c->req)
        atomic_store(&c->req->cancelled, 1);
    if (c->ctl)
        atomic_store(&c->ctl->cancelled, 1);
    if (c->status_started && c->status != GRPC_STATUS_OK)
        return; /* our own status says why */
    if (c->deadline > 0 && tsr_now_s() >= c->deadline - 0.002) {
        c->status = GRPC_STATUS_DEADLINE_EXCEEDED;
        snprintf(c->msg, sizeof c->msg, "deadline exceeded");
    } else if (s->shutdown_started) {
        c->status = GRPC_STATUS_CANCELLED;
        snprintf(c->msg, sizeof c->msg, "cancelled: the server shut down");
    } else if (!c->status_started || c->status == GRPC_STATUS_OK) {
        c->status = GRPC_STATUS_CANCELLED;
        snprintf(c->msg, sizeof c->msg, "cancelled by the client");
    }
}

/* ---- streaming ------------------------------------------------------------------- */

enum { MAX_MERGE = 64 }; /* chunk events merged into one message */

static void pump_generate(tsr_grpc_server_t *s, srv_call *c, double now) {
    if (c->deadline > 0 && now >= c->deadline) {
        /* gRPC enforces deadlines too; this makes it exact and immediate */
        atomic_store(&c->req->cancelled, 1);
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded",
                                     NULL);
        c->status = GRPC_STATUS_DEADLINE_EXCEEDED;
        snprintf(c->msg, sizeof c->msg, "deadline exceeded");
        c->status_started = 1;
        return;
    }
    if (c->op_busy)
        return;
    tsr_gen_event *evs[MAX_MERGE], *fin = NULL;
    int n = 0;
    if (c->stash) {
        fin = c->stash;
        c->stash = NULL;
    } else {
        while (n < MAX_MERGE) {
            tsr_gen_event *e = tsr_gen_request_take(c->req);
            if (!e)
                break;
            if (e->kind == TSR_EV_FINAL) {
                if (n == 0)
                    fin = e;
                else
                    c->stash = e;
                break;
            }
            evs[n++] = e;
        }
    }
    if (n > 0) {
        uint8_t *buf;
        size_t len;
        tsr_status st = tsr_api_pack_chunk(&s->api, c->id, evs, n, &buf, &len);
        for (int i = 0; i < n; i++) {
            c->n_completion += evs[i]->n_tokens;
            tsr_gen_event_free(evs[i]);
        }
        if (c->t_first == 0)
            c->t_first = now;
        if (st != TSR_OK) {
            atomic_store(&c->req->cancelled, 1);
            finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory on the server");
            return;
        }
        send_batch(c, buf, len, 0, GRPC_STATUS_OK, NULL);
        return;
    }
    if (!fin)
        return;
    c->final_seen = 1;
    c->finish = fin->finish;
    c->fin_prompt = fin->prompt_tokens;
    c->fin_completion = fin->completion_tokens;
    c->fin_cached = fin->cached_tokens;
    c->fin_queued = fin->queued_s;
    c->fin_ttft = fin->ttft_s;
    c->fin_total = fin->total_s;
    snprintf(c->fin_error, sizeof c->fin_error, "%.*s", (int)sizeof fin->error - 1, fin->error);
    grpc_status_code code = GRPC_STATUS_OK;
    char msg[256] = "";
    if (fin->status_code != 0) { /* refused by the engine thread (an unknown adapter) */
        code = (grpc_status_code)fin->status_code;
        snprintf(msg, sizeof msg, "%s", fin->error);
        tsr_gen_event_free(fin);
        finish(c, code, "%s", msg);
        return;
    }
    if (fin->finish == TSR_FIN_CANCELLED) {
        code = GRPC_STATUS_CANCELLED;
        if (c->aborted)
            snprintf(msg, sizeof msg, "request '%s' was aborted by an Abort call", c->id);
        else if (atomic_load(&s->draining) || atomic_load(&s->stop))
            snprintf(msg, sizeof msg, "cancelled: the server is shutting down");
        else
            snprintf(msg, sizeof msg, "cancelled by the server");
    } else if (fin->finish == TSR_FIN_ERROR) {
        /* the stream ends normally; the final message says what went wrong */
        TSR_LOG_W("request %s failed in the engine: %s", c->id, c->fin_error);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    tsr_status st = tsr_api_pack_final(c->id, fin, &buf, &len);
    tsr_gen_event_free(fin);
    if (st != TSR_OK) {
        finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory on the server");
        return;
    }
    send_batch(c, buf, len, 1, code, msg);
}

static void pump_watch(tsr_grpc_server_t *s, srv_call *c) {
    if (c->op_busy)
        return;
    int now = c->watch_unknown
                  ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN
                  : (int)health_status(s);
    if (now == c->watch_sent)
        return;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)now;
    uint8_t *buf;
    size_t len;
    if (tsr_api_pack(&resp.base, &buf, &len) != TSR_OK)
        return; /* try again on the next wake */
    c->watch_sent = now;
    send_batch(c, buf, len, 0, GRPC_STATUS_OK, NULL);
}

/* Moves every live stream forward; returns whether any Generate stream is
 * waiting on the engine (the loop then polls fast). */
static int pump(tsr_grpc_server_t *s) {
    double now = tsr_now_s();
    int streaming = 0;
    for (srv_call *c = s->calls; c; c = c->next) {
        if (c->closed || c->status_started)
            continue;
        if (c->method == M_GENERATE && c->req) {
            pump_generate(s, c, now);
            streaming |= !c->status_started;
        } else if (c->ctl) {
            pump_ctl(s, c, now);
            streaming |= !c->status_started;
        } else if (c->watching) {
            pump_watch(s, c);
        }
    }
    return streaming;
}

static void on_op(tsr_grpc_server_t *s, srv_call *c, int ok) {
    c->op_busy = 0;
    if (c->send_buf) {
        grpc_byte_buffer_destroy(c->send_buf);
        c->send_buf = NULL;
    }
    if (c->has_status_slice) {
        grpc_slice_unref(c->status_slice);
        c->has_status_slice = 0;
    }
    if (c->op_recv) {
        c->op_recv = 0;
        on_message(s, c, ok);
    }
    /* a failed send means the call is gone; RECV_CLOSE reports how */
}

static void begin_shutdown(tsr_grpc_server_t *s) {
    s->shutdown_started = 1;
    atomic_store(&s->draining, 1);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
    grpc_server_cancel_all_calls(s->server);
    for (srv_call *c = s->calls; c; c = c->next) {
        if (c->req && !c->final_seen)
            atomic_store(&c->req->cancelled, 1);
        if (c->ctl)
            atomic_store(&c->ctl->cancelled, 1);
    }
}

static void *server_thread(void *arg) {
    tsr_grpc_server_t *s = arg;
    int streaming = 0;
    for (;;) {
        if (atomic_load(&s->stop) && !s->shutdown_started)
            begin_shutdown(s);
        if (s->shutdown_started && s->shutdown_done && !s->calls && !s->pending)
            break;
        gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                          gpr_time_from_millis(streaming ? 5 : 100, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(s->cq, until, NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            if (ev.tag == &s->shutdown_tag) {
                s->shutdown_done = 1;
            } else {
                call_tag *t = ev.tag;
                srv_call *c = t->c;
                const tag_kind kind = t->kind; /* t lives inside c */
                switch (kind) {
                case TAG_NEW: on_new(s, c, ev.success); break;
                case TAG_OP: on_op(s, c, ev.success); break;
                case TAG_CLOSE:
                    c->close_busy = 0;
                    on_close(s, c);
                    break;
                }
                if (kind != TAG_NEW || ev.success) /* else c is freed */
                    maybe_release(s, c);
            }
        } else if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break; /* not expected before we shut it down below */
        }
        streaming = pump(s);
        /* a stream that just sent may be finished (its close is pending) */
    }
    grpc_server_destroy(s->server);
    s->server = NULL;
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(s->cq);
    s->cq = NULL;
    return NULL;
}

/* ---- public API ----------------------------------------------------------------- */

static void server_free(tsr_grpc_server_t *s) {
    if (!s)
        return;
    free(s->listen_addr);
    if (s->auth_token) {
        memset(s->auth_token, 0, s->auth_len);
        free(s->auth_token);
    }
    free(s);
}

/* Tears down a server that never started its thread. */
static void destroy_unstarted(tsr_grpc_server_t *s) {
    if (s->server) {
        grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_OP_COMPLETE && ev.tag == &s->shutdown_tag)
                break;
            if (ev.type == GRPC_OP_COMPLETE && ev.tag != &s->shutdown_tag) {
                call_tag *t = ev.tag;
                if (t->kind == TAG_NEW) {
                    s->pending = NULL;
                    call_free(t->c);
                }
            }
        }
        grpc_server_destroy(s->server);
    }
    if (s->cq) {
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(s->cq);
    }
    server_free(s);
    grpc_shutdown();
}

tsr_status tsr_grpc_server_start(const tsr_grpc_server_config *cfg, tsr_grpc_server_t **out) {
    *out = NULL;
    if (!cfg->queue || !cfg->stats || !cfg->tok)
        return tsr_error_set(TSR_ERR_INVALID, "gRPC server: queue, stats and tokenizer are "
                                              "required");
    if (cfg->context_length <= 1)
        return tsr_error_set(TSR_ERR_INVALID, "gRPC server: context length %d is too small",
                             cfg->context_length);
    if (!cfg->tls_cert_pem != !cfg->tls_key_pem)
        return tsr_error_set(TSR_ERR_INVALID,
                             "TLS needs both a certificate and a private key (got only the %s)",
                             cfg->tls_cert_pem ? "certificate" : "key");
    if (cfg->tls_cert_pem &&
        (!strstr(cfg->tls_cert_pem, "-----BEGIN") || !strstr(cfg->tls_key_pem, "-----BEGIN")))
        return tsr_error_set(TSR_ERR_INVALID,
                             "TLS: the certificate and key must be PEM text (\"-----BEGIN ...\")");
    tsr_grpc_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return tsr_error_set(TSR_ERR_NOMEM, "gRPC server: out of memory");
    s->cfg = *cfg;
    s->listen_addr = strdup(cfg->listen_addr ? cfg->listen_addr : "127.0.0.1:50051");
    if (cfg->auth_token) {
        size_t n = strlen(cfg->auth_token);
        while (n && strchr(" \t\r\n", cfg->auth_token[n - 1])) /* a token file's newline */
            n--;
        if (n == 0) {
            server_free(s);
            return tsr_error_set(TSR_ERR_INVALID, "the auth token is empty");
        }
        s->auth_token = strndup(cfg->auth_token, n);
        s->auth_len = n;
    }
    if (!s->listen_addr || (cfg->auth_token && !s->auth_token)) {
        server_free(s);
        return tsr_error_set(TSR_ERR_NOMEM, "gRPC server: out of memory");
    }
    s->cfg.listen_addr = s->listen_addr;
    s->cfg.auth_token = s->auth_token;
    s->cfg.tls_cert_pem = s->cfg.tls_key_pem = NULL; /* not kept */
    s->api = (tsr_api_ctx){
        /* .tok = */ cfg->tok,
        /* .model = */ cfg->model,
        /* .model_format = */ cfg->model_format,
        /* .context_length = */ cfg->context_length,
        /* .default_max_tokens = */ cfg->default_max_tokens > 0 ? cfg->default_max_tokens : 256,
        /* .tp = */ cfg->tp,
        /* .pp = */ cfg->pp,
    };
    atomic_init(&s->draining, 0);
    atomic_init(&s->stop, 0);
    atomic_init(&s->active_calls, 0);
    s->t_start = tsr_now_s();
    s->seed_state = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)s << 16);

    grpc_init();
    grpc_arg args[2];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = cfg->max_message_bytes > 0 ? cfg->max_message_bytes : 4 << 20;
    /* a second server on the same port must fail to bind, not share it */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
    args[1].value.integer = 0;
    grpc_channel_args chargs = {2, args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);

    grpc_server_credentials *creds;
    if (cfg->tls_cert_pem) {
        grpc_ssl_pem_key_cert_pair pair = {cfg->tls_key_pem, cfg->tls_cert_pem};
        creds = grpc_ssl_server_credentials_create_ex(
            NULL, &pair, 1, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    if (!creds) {
        destroy_unstarted(s);
        return tsr_error_set(TSR_ERR_INVALID, "gRPC server: cannot create %s credentials",
                             cfg->tls_cert_pem ? "TLS" : "plaintext");
    }
    s->port = grpc_server_add_http2_port(s->server, s->listen_addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port == 0) {
        char addr[256];
        snprintf(addr, sizeof addr, "%s", s->listen_addr);
        int tls = cfg->tls_cert_pem != NULL;
        destroy_unstarted(s);
        return tsr_error_set(TSR_ERR_IO,
                             "cannot listen on %s: the address is in use, malformed or not "
                             "local%s",
                             addr, tls ? ", or the TLS certificate/key pair is invalid" : "");
    }
    grpc_server_start(s->server);
    request_next(s);
    if (!s->pending || pthread_create(&s->thread, NULL, server_thread, s) != 0) {
        destroy_unstarted(s);
        return tsr_error_set(TSR_ERR_INTERNAL, "gRPC server: cannot start its thread");
    }
    s->thread_started = 1;
    *out = s;
    return TSR_OK;
}

int tsr_grpc_server_port(const tsr_grpc_server_t *s) { return s ? s->port : 0; }

void tsr_grpc_server_stop_accepting(tsr_grpc_server_t *s) {
    if (s)
        atomic_store(&s->draining, 1);
}

void tsr_grpc_server_shutdown(tsr_grpc_server_t *s) {
    if (!s)
        return;
    atomic_store(&s->stop, 1);
    if (s->thread_started)
        pthread_join(s->thread, NULL);
    server_free(s);
    grpc_shutdown();
}

int tsr_grpc_server_active_calls(tsr_grpc_server_t *s) {
    return s ? atomic_load(&s->active_calls) : 0;
}
