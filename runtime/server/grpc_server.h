/* runtime/server/grpc_server.h - the gRPC front end on rank 0: the
 * tessera.v1.Tessera service and grpc.health.v1.Health, on the gRPC C core
 * API with one completion queue served by its own thread.
 *
 * It parses and validates requests (protobuf-c), tokenizes them, checks the
 * bearer token, submits generation requests to the engine through a
 * tsr_request_queue and streams the engine's events back. Calls that need no
 * engine (Tokenize, Detokenize, GetModelInfo, GetServerInfo, Abort, Health)
 * are answered on this thread. It never calls MPI.
 *
 * What it is not: the scheduler (runtime/server/scheduler.h). */
#ifndef TSR_RUNTIME_SERVER_GRPC_SERVER_H
#define TSR_RUNTIME_SERVER_GRPC_SERVER_H

#include "base/status.h"
#include "runtime/server/metrics.h"
#include "runtime/server/request.h"
#include "runtime/tokenizer/tokenizer.h"
#include "shard/config.h"

typedef struct tsr_grpc_server tsr_grpc_server_t; /* opaque */

typedef struct {
    const char *listen_addr;  /* "127.0.0.1:50051" (the default host is loopback) */
    const char *auth_token;   /* bearer token clients must send; NULL = no auth */
    const char *tls_cert_pem; /* PEM text (not a path); NULL with key = plaintext */
    const char *tls_key_pem;
    int max_message_bytes;  /* larger requests: RESOURCE_EXHAUSTED; 0 = 4 MiB */
    int log_prompts;        /* access log includes prompt text */
    int default_max_tokens; /* when a request gives 0; 0 = 256 */
    /* what the front end needs to know of the engine */
    tsr_request_queue *queue;
    tsr_server_stats *stats;
    const tsr_tokenizer_t *tok;
    const tsr_model_config *model;
    const char *model_format; /* "gguf" / "safetensors" */
    int context_length;       /* positions one sequence may hold */
    int tp, pp, world_size;
    tsr_metrics *metrics; /* every finished call counts in tessera_requests_total{method,
                                  status}; NULL = off. Must outlive the server. */
} tsr_grpc_server_config;

/* Binds, starts the server and its thread. TSR_ERR_IO when the address
 * cannot be bound (the message names it). Health reports NOT_SERVING until
 * stats->ready is set. */
tsr_status tsr_grpc_server_start(const tsr_grpc_server_config *cfg, tsr_grpc_server_t **out);

/* The port actually bound (useful with port 0). */
int tsr_grpc_server_port(const tsr_grpc_server_t *s);

/* Shutdown, in two phases because the caller (the engine thread) must keep
 * stepping in-flight requests in between:
 * 1. stop_accepting: new calls get UNAVAILABLE ("shutting down"); calls in
 *    flight continue and health turns NOT_SERVING.
 * 2. shutdown: cancels whatever calls remain, joins the thread, frees.
 * NULL ok for both. */
void tsr_grpc_server_stop_accepting(tsr_grpc_server_t *s);
void tsr_grpc_server_shutdown(tsr_grpc_server_t *s);

/* Calls still in flight (any method except Health/Watch: a watch only ends
 * when its client leaves, so it must not hold up a graceful drain). */
int tsr_grpc_server_active_calls(tsr_grpc_server_t *s);

#endif
