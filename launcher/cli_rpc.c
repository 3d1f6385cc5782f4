/* launcher/cli_rpc.c - blocking gRPC calls for tessera-cli on the C core
 * API (see cli_rpc.h). Every gRPC call that can fail goes through
 * CLI_GRPC_CHECK, which records the statement, file:line and gRPC's own
 * error string in the call's status; the function's tsr_status and
 * tsr_error_set message summarise it for callers that only need to know
 * whether it worked. */
#include "launcher/cli_rpc.h"
#include "proto/grpc_status_name.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

/* Largest response message accepted unless the config says otherwise (a
 * Tokenize of a long text; SaveAdapter's files ask for more). */
#define CLI_MAX_RECV_BYTES (64 << 20)
/* How often a blocked wait looks at the interrupt flag. */
#define CLI_POLL_MS 100

struct tsr_cli_conn {
    tsr_cli_conn_config cfg; /* its strings belong to the caller */
    grpc_channel *channel;
    char *auth_value; /* "Bearer <token>" or NULL */
    double timeout_s;
    volatile sig_atomic_t *interrupted;
};

/* Records a local failure in *st (printf-style). */
static void local_fail(tsr_cli_status *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void local_fail(tsr_cli_status *st, const char *fmt, ...) {
    st->local_error = 1;
    if (st->code == GRPC_STATUS_OK)
        st->code = GRPC_STATUS_INTERNAL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->details, sizeof st->details, fmt, ap);
    va_end(ap);
}

/* Checks a grpc_call_error; on failure records it and jumps to cleanup. */
#define CLI_GRPC_CHECK(st, call)                                                                   \
    do {                                                                                           \
        grpc_call_error cli_e_ = (call);                                                           \
        if (cli_e_ != GRPC_CALL_OK) {                                                              \
            local_fail((st), "%s failed at %s:%d: %s", #call, __FILE__, __LINE__,                  \
                       grpc_call_error_to_string(cli_e_));                                         \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

/* Builds c->channel from c->cfg. TSR_ERR_COMM when gRPC refuses. */
static tsr_status make_channel(tsr_cli_conn_t *c) {
    const tsr_cli_conn_config *cfg = &c->cfg;
    grpc_channel_credentials *creds =
        cfg->tls_ca_pem ? grpc_ssl_credentials_create(cfg->tls_ca_pem, NULL, NULL, NULL)
                        : grpc_insecure_credentials_create();
    if (!creds)
        return tsr_error_set(TSR_ERR_COMM, "cannot create a channel to %s", cfg->addr);

    /* A short reconnect backoff and a subchannel of our own: a CLI lives for
     * seconds, and `health --wait` must notice a server that has just come
     * up rather than sit in gRPC's default backoff (which grows to 120 s). */
    grpc_arg args[6];
    size_t n_args = 0;
    args[n_args].type = GRPC_ARG_INTEGER;
    args[n_args].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[n_args++].value.integer =
        cfg->max_recv_bytes > 0 ? cfg->max_recv_bytes : CLI_MAX_RECV_BYTES;
    args[n_args].type = GRPC_ARG_INTEGER;
    args[n_args].key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[n_args++].value.integer = 200;
    args[n_args].type = GRPC_ARG_INTEGER;
    args[n_args].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[n_args++].value.integer = 1000;
    args[n_args].type = GRPC_ARG_INTEGER;
    args[n_args].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[n_args++].value.integer = 1;
    if (cfg->user_agent) {
        args[n_args].type = GRPC_ARG_STRING;
        args[n_args].key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING;
        args[n_args++].value.string = (char *)cfg->user_agent;
    }
    if (cfg->tls_ca_pem && cfg->tls_server_name) {
        args[n_args].type = GRPC_ARG_STRING;
        args[n_args].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[n_args++].value.string = (char *)cfg->tls_server_name;
    }
    grpc_channel_args chargs = {.num_args = n_args, .args = args};
    c->channel = grpc_channel_create(cfg->addr, creds, &chargs);
    grpc_channel_credentials_release(creds);
    return c->channel ? TSR_OK
                      : tsr_error_set(TSR_ERR_COMM, "cannot create a channel to %s", cfg->addr);
}

tsr_status tsr_cli_conn_open(const tsr_cli_conn_config *cfg, tsr_cli_conn_t **out) {
    *out = NULL;
    tsr_cli_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return tsr_error_set(TSR_ERR_NOMEM, "cannot create a channel to %s: out of memory",
                             cfg->addr);
    c->cfg = *cfg;
    c->timeout_s = cfg->timeout_s;
    c->interrupted = cfg->interrupted;
    if (cfg->auth_token) {
        size_t n = strlen(cfg->auth_token) + sizeof "Bearer ";
        if (!(c->auth_value = malloc(n))) {
            tsr_cli_conn_close(c);
            return tsr_error_set(TSR_ERR_NOMEM, "cannot create a channel to %s: out of memory",
                                 cfg->addr);
        }
        snprintf(c->auth_value, n, "Bearer %s", cfg->auth_token);
    }
    if (make_channel(c) != TSR_OK) {
        tsr_cli_conn_close(c);
        return cfg->tls_ca_pem ? tsr_error_set(TSR_ERR_COMM,
                                               "cannot create a channel to %s (are the TLS "
                                               "credentials valid PEM?)",
                                               cfg->addr)
                               : TSR_ERR_COMM;
    }
    *out = c;
    return TSR_OK;
}

tsr_status tsr_cli_conn_reset(tsr_cli_conn_t *c) {
    if (c->channel)
        grpc_channel_destroy(c->channel);
    c->channel = NULL;
    return make_channel(c);
}

void tsr_cli_conn_close(tsr_cli_conn_t *c) {
    if (!c)
        return;
    if (c->channel)
        grpc_channel_destroy(c->channel);
    free(c->auth_value);
    free(c);
}

void tsr_cli_conn_set_timeout(tsr_cli_conn_t *c, double timeout_s) { c->timeout_s = timeout_s; }

/* Waits for `tag` on cq. Cancels the call once if the interrupt flag gets
 * set meanwhile (the batch then completes promptly, unsuccessfully).
 * Returns the event's success flag, or -1 if the queue returned something
 * other than our tag (a bug). */
static int wait_tag(tsr_cli_conn_t *c, grpc_completion_queue *cq, grpc_call *call, void *tag,
                    tsr_cli_status *st) {
    for (;;) {
        gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                          gpr_time_from_millis(CLI_POLL_MS, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_pluck(cq, tag, until, NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            if (ev.tag != tag)
                return -1;
            return ev.success;
        }
        if (ev.type != GRPC_QUEUE_TIMEOUT)
            return -1;
        if (c->interrupted && *c->interrupted && !st->interrupted) {
            st->interrupted = 1;
            grpc_call_cancel(call, NULL);
        }
    }
}

tsr_status tsr_cli_call_stream(tsr_cli_conn_t *c, const char *method, const ProtobufCMessage *req,
                               tsr_cli_message_fn on_message, void *ctx, tsr_cli_status *st) {
    memset(st, 0, sizeof *st);
    st->code = GRPC_STATUS_OK;

    grpc_completion_queue *cq = NULL;
    grpc_call *call = NULL;
    grpc_byte_buffer *send_bb = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_slice status_details = grpc_empty_slice();
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    tsr_status local = TSR_ERR_COMM; /* the status of a local failure */

    if (!(cq = grpc_completion_queue_create_for_pluck(NULL))) {
        local_fail(st, "grpc_completion_queue_create_for_pluck failed");
        goto cleanup;
    }
    gpr_timespec deadline =
        c->timeout_s > 0
            ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                           gpr_time_from_micros((int64_t)(c->timeout_s * 1e6), GPR_TIMESPAN))
            : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                    grpc_slice_from_static_string(method), NULL, deadline, NULL);
    if (!call) {
        local_fail(st, "grpc_channel_create_call(%s) failed", method);
        goto cleanup;
    }

    /* The request, packed into one slice that the byte buffer takes a ref on. */
    size_t req_len = protobuf_c_message_get_packed_size(req);
    grpc_slice req_slice = grpc_slice_malloc(req_len);
    size_t packed = protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(req_slice));
    if (packed != req_len) {
        grpc_slice_unref(req_slice);
        local_fail(st, "protobuf_c_message_pack(%s) wrote %zu of %zu bytes", req->descriptor->name,
                   packed, req_len);
        goto cleanup;
    }
    send_bb = grpc_raw_byte_buffer_create(&req_slice, 1);
    grpc_slice_unref(req_slice);
    if (!send_bb) {
        local_fail(st, "grpc_raw_byte_buffer_create failed");
        goto cleanup;
    }

    /* Batch 1: send everything, then wait for the server's initial metadata. */
    grpc_metadata md[1];
    memset(md, 0, sizeof md);
    size_t n_md = 0;
    if (c->auth_value) {
        md[0].key = grpc_slice_from_static_string("authorization");
        md[0].value = grpc_slice_from_static_string(c->auth_value);
        n_md = 1;
    }
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].data.send_initial_metadata.metadata = n_md ? md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    void *tag_send = (void *)(intptr_t)1;
    CLI_GRPC_CHECK(st, grpc_call_start_batch(call, ops, 4, tag_send, NULL));
    if (wait_tag(c, cq, call, tag_send, st) < 0) {
        local_fail(st, "completion queue returned an unexpected event");
        goto cleanup;
    }
    /* A failed send batch (server gone, deadline, cancel) is not an error in
     * itself: the status below says what happened. */

    /* Batches 2..n: one message each, until the server ends the stream. */
    for (;;) {
        grpc_byte_buffer *recv_bb = NULL;
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &recv_bb;
        void *tag_recv = (void *)(intptr_t)2;
        CLI_GRPC_CHECK(st, grpc_call_start_batch(call, &op, 1, tag_recv, NULL));
        int ok = wait_tag(c, cq, call, tag_recv, st);
        if (ok < 0) {
            local_fail(st, "completion queue returned an unexpected event");
            grpc_byte_buffer_destroy(recv_bb);
            goto cleanup;
        }
        if (!ok || !recv_bb)
            break; /* end of stream or failure: the status tells which */
        grpc_byte_buffer_reader reader;
        if (!grpc_byte_buffer_reader_init(&reader, recv_bb)) {
            grpc_byte_buffer_destroy(recv_bb);
            local_fail(st, "grpc_byte_buffer_reader_init failed (undecodable compression?)");
            grpc_call_cancel(call, NULL);
            break;
        }
        grpc_slice msg = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        grpc_byte_buffer_destroy(recv_bb);
        tsr_error_clear();
        tsr_status ms = on_message(ctx, GRPC_SLICE_START_PTR(msg), GRPC_SLICE_LENGTH(msg));
        grpc_slice_unref(msg);
        if (ms != TSR_OK) {
            const char *why = tsr_error_msg();
            local_fail(st, "%s", why[0] ? why : "response refused");
            local = ms;
            grpc_call_cancel(call, NULL);
            break;
        }
    }

    /* Last batch: the status. */
    {
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        op.data.recv_status_on_client.trailing_metadata = &trailing_md;
        op.data.recv_status_on_client.status = &status;
        op.data.recv_status_on_client.status_details = &status_details;
        void *tag_status = (void *)(intptr_t)3;
        CLI_GRPC_CHECK(st, grpc_call_start_batch(call, &op, 1, tag_status, NULL));
        if (wait_tag(c, cq, call, tag_status, st) < 0) {
            local_fail(st, "completion queue returned an unexpected event");
            goto cleanup;
        }
    }

    if (!st->local_error) {
        st->code = status;
        char *d = grpc_slice_to_c_string(status_details);
        snprintf(st->details, sizeof st->details, "%s", d ? d : "");
        gpr_free(d);
        if (status == GRPC_STATUS_UNAVAILABLE &&
            grpc_channel_check_connectivity_state(c->channel, 0) != GRPC_CHANNEL_READY)
            st->unreachable = 1;
    }

cleanup:
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_slice_unref(status_details);
    if (send_bb)
        grpc_byte_buffer_destroy(send_bb);
    if (call)
        grpc_call_unref(call);
    if (cq) {
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
    }
    if (st->local_error)
        return tsr_error_set(local, "%s", st->details);
    if (st->code != GRPC_STATUS_OK)
        return tsr_error_set(TSR_ERR_COMM, "%s: %s", tsr_grpc_status_name(st->code), st->details);
    return TSR_OK;
}

/* Collects the single response of a unary call. */
typedef struct {
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *msg;
} unary_ctx;

static tsr_status unary_on_message(void *ctx, const uint8_t *data, size_t len) {
    unary_ctx *u = ctx;
    if (u->msg)
        return tsr_error_set(TSR_ERR_FORMAT, "the server sent more than one %s", u->desc->name);
    u->msg = protobuf_c_message_unpack(u->desc, NULL, len, data);
    if (!u->msg)
        return tsr_error_set(TSR_ERR_FORMAT, "cannot decode the server's %s (%zu bytes)",
                             u->desc->name, len);
    return TSR_OK;
}

tsr_status tsr_cli_call_unary(tsr_cli_conn_t *c, const char *method, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                              tsr_cli_status *st) {
    unary_ctx u = {resp_desc, NULL};
    *resp = NULL;
    tsr_status s = tsr_cli_call_stream(c, method, req, unary_on_message, &u, st);
    if (s == TSR_OK && !u.msg) {
        local_fail(st, "the server sent no %s", resp_desc->name);
        s = tsr_error_set(TSR_ERR_FORMAT, "%s", st->details);
    }
    if (s != TSR_OK) {
        if (u.msg)
            protobuf_c_message_free_unpacked(u.msg, NULL);
        return s;
    }
    *resp = u.msg;
    return TSR_OK;
}
