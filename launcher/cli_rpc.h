/* launcher/cli_rpc.h - the blocking gRPC client under tessera-cli, on the
 * gRPC C core API (grpc/grpc.h) with protobuf-c messages.
 *
 * One channel per program run. Each call gets its own completion queue
 * (pluck) and runs as a sequence of batches: SEND_INITIAL_METADATA (with the
 * bearer token) + SEND_MESSAGE + SEND_CLOSE_FROM_CLIENT + RECV_INITIAL_METADATA,
 * then one RECV_MESSAGE per response message, then RECV_STATUS_ON_CLIENT.
 * While it waits it looks at an interrupt flag every 100 ms and cancels the
 * call (grpc_call_cancel) once the flag is set.
 *
 * What it is not: a general client library. No client streaming, no async
 * calls, no retries; the caller decides what a status means to the user.
 * Not thread-safe: one call at a time per connection. */
#ifndef TSR_LAUNCHER_CLI_RPC_H
#define TSR_LAUNCHER_CLI_RPC_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>

#include <protobuf-c/protobuf-c.h>

#include "base/status.h"
#include "proto/grpc_status_name.h" /* tsr_grpc_status_name, for the callers */

typedef struct {
    const char *addr;            /* "host:port" (any gRPC target URI works) */
    const char *auth_token;      /* sent as "authorization: Bearer <token>"; NULL = none.
                                    Printable ASCII without spaces (the caller checks). */
    const char *tls_ca_pem;      /* PEM text (not a path) of the CA or the server's own
                                    certificate; non-NULL turns TLS on. NULL = plaintext */
    const char *tls_server_name; /* name the certificate must carry instead of the host
                                    in addr; NULL = the host. Only with TLS. */
    double timeout_s;            /* deadline of each call from its start; <= 0 = none */
    const char *user_agent;      /* "tessera-cli/0.1.0"; NULL = gRPC's own */
    int max_recv_bytes;          /* largest response message accepted; <= 0 = 64 MiB.
                                    `train` raises it: SaveAdapter sends the adapter's
                                    files back in one message */
    /* Set (by a SIGINT handler) to ask for the call in flight to be
     * cancelled; NULL = never. Read only. */
    volatile sig_atomic_t *interrupted;
} tsr_cli_conn_config;

typedef struct tsr_cli_conn tsr_cli_conn_t; /* opaque */

/* The outcome of one call. */
typedef struct {
    grpc_status_code code; /* GRPC_STATUS_OK when the call succeeded */
    char details[1024];    /* the status message (truncated); "" when none */
    int unreachable;       /* UNAVAILABLE without a connection to the server:
                              refused, no route, DNS, TLS handshake */
    int interrupted;       /* cancelled because *interrupted was set */
    int local_error;       /* failed in this process (a gRPC call refused, a
                              response that does not decode, the message
                              callback's refusal): details says what */
} tsr_cli_status;

/* Called with each response message's bytes, valid during the call only.
 * Returns TSR_OK to go on; anything else cancels the call and is reported
 * as a local error (with that status) whose details are the message the
 * callback recorded with tsr_error_set ("response refused" when none). */
typedef tsr_status (*tsr_cli_message_fn)(void *ctx, const uint8_t *data, size_t len);

/* Makes the channel (plaintext or TLS) into *out. The connection itself is
 * made lazily by the first call, so an unreachable server shows up there.
 * Requires grpc_init(). Fails only when out of memory (TSR_ERR_NOMEM) or
 * when gRPC cannot build the channel or the TLS credentials (TSR_ERR_COMM,
 * "cannot create a channel to ADDR", with a hint about the PEM under TLS);
 * *out is then NULL. The config's strings must outlive the connection. */
tsr_status tsr_cli_conn_open(const tsr_cli_conn_config *cfg, tsr_cli_conn_t **out);

/* Destroys the channel. NULL ok. */
void tsr_cli_conn_close(tsr_cli_conn_t *c);

/* Replaces the channel with a new one, forgetting its connection and its
 * reconnect backoff: the next call tries to connect at once. TSR_ERR_COMM
 * ("cannot create a channel to ADDR") when the new channel cannot be made
 * (the connection is then unusable). */
tsr_status tsr_cli_conn_reset(tsr_cli_conn_t *c);

/* Changes the deadline of later calls (seconds; <= 0 = none). */
void tsr_cli_conn_set_timeout(tsr_cli_conn_t *c, double timeout_s);

/* Server-streaming call: sends `req` to `method` ("/pkg.Service/Method"),
 * hands every response message to on_message in order, and fills *st.
 * Unary methods work too (one message). Returns TSR_OK when st->code is OK
 * and nothing failed locally. Otherwise *st says what happened (what the
 * caller shows the user) and the status is on_message's own when it
 * refused a message, else TSR_ERR_COMM; the message recorded is
 * "CODE_NAME: details" for the server's status, st->details for a local
 * failure. Never prints. */
tsr_status tsr_cli_call_stream(tsr_cli_conn_t *c, const char *method, const ProtobufCMessage *req,
                               tsr_cli_message_fn on_message, void *ctx, tsr_cli_status *st);

/* Unary call: exactly one response, decoded with resp_desc into *resp (free
 * with protobuf_c_message_free_unpacked(*resp, NULL)). Returns TSR_OK with
 * *resp set, or a status as tsr_cli_call_stream's with *resp NULL and *st
 * saying why (a missing or extra response message is a local error,
 * TSR_ERR_FORMAT). */
tsr_status tsr_cli_call_unary(tsr_cli_conn_t *c, const char *method, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                              tsr_cli_status *st);

#endif
