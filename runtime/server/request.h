/* runtime/server/request.h - a generation request as it travels between the
 * gRPC thread and the engine thread on rank 0, and the queues that carry it.
 *
 *   gRPC thread                          engine thread (main thread, MPI)
 *   parse + validate + tokenize   ──►    tsr_request_queue (bounded)
 *   stream events to the client   ◄──    tsr_gen_request.events (per request)
 *   set `cancelled` (client gone,        checks `cancelled` at every step:
 *   Abort, deadline)                     the sequence leaves, its KV blocks
 *                                        return within one step
 *
 * Ownership: the gRPC thread creates a request (refcount 1), submits it
 * (the queue takes a second reference) and releases its reference when the
 * call ends; the engine releases its reference after posting the final
 * event. The last release frees it. Fields above `mu` are written before
 * submit and read-only afterwards.
 *
 * What it is not: no gRPC, no protobuf, no MPI: plain C so both sides and
 * the tests can use it. */
#ifndef TSR_RUNTIME_SERVER_REQUEST_H
#define TSR_RUNTIME_SERVER_REQUEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "runtime/sampler.h"

typedef enum {
    TSR_EV_CHUNK = 0, /* tokens and the text they completed */
    TSR_EV_FINAL = 1, /* the last event of a request */
} tsr_event_kind;

typedef enum {
    TSR_FIN_STOP = 1,
    TSR_FIN_LENGTH = 2,
    TSR_FIN_CANCELLED = 3,
    TSR_FIN_ERROR = 4,
} tsr_fin_reason; /* numbered as tessera.v1.FinishReason */

typedef struct {
    int32_t token_id;
    float logprob;
} tsr_top_logprob;

typedef struct tsr_gen_event {
    struct tsr_gen_event *next;
    tsr_event_kind kind;
    /* CHUNK */
    int n_tokens;
    int32_t *tokens;    /* (n_tokens) */
    float *logprobs;    /* (n_tokens) or NULL */
    int n_top;          /* alternatives per token */
    tsr_top_logprob *top; /* (n_tokens, n_top) or NULL */
    char *text;         /* NUL-terminated complete UTF-8, may be "" */
    size_t text_len;
    /* FINAL */
    tsr_fin_reason finish;
    int prompt_tokens, completion_tokens, cached_tokens;
    double queued_s, ttft_s, total_s;
    char error[256];
} tsr_gen_event;

typedef struct tsr_gen_request {
    /* ---- written by the gRPC thread before submit ---- */
    char id[128];
    char client[128];   /* peer address, for the access log */
    char adapter[128];  /* "" = base model */
    int32_t *prompt;    /* (n_prompt) token ids, validated */
    int n_prompt;
    tsr_sampling_params sampling;
    int max_tokens;     /* > 0 */
    int min_tokens;
    int ignore_eos;
    char **stop;        /* (n_stop) NUL-terminated */
    int n_stop;
    int32_t *stop_ids;
    int n_stop_ids;
    int logprobs;       /* send logprobs of generated tokens */
    int top_logprobs;   /* 0..20 alternatives */
    double t_arrival;   /* tsr_now_s() when the call arrived */
    double deadline;    /* tsr_now_s() clock; 0 = none */

    /* ---- shared ---- */
    atomic_int cancelled; /* set by the gRPC thread; read by the engine */
    atomic_int refs;
    pthread_mutex_t mu;   /* guards the event list */
    tsr_gen_event *head, *tail;
    int final_posted;     /* under mu */
} tsr_gen_request;

/* Monotonic clock in seconds. */
double tsr_now_s(void);

/* A zeroed request with refcount 1 and its mutex initialised. NULL on OOM. */
tsr_gen_request *tsr_gen_request_new(void);
void tsr_gen_request_retain(tsr_gen_request *r);
/* Drops a reference; the last one frees the request, its prompt, stops and
 * any events not taken. NULL ok. */
void tsr_gen_request_release(tsr_gen_request *r);

/* Engine side: appends an event (ownership passes to the request). */
void tsr_gen_request_post(tsr_gen_request *r, tsr_gen_event *ev);
/* gRPC side: takes the oldest event, or NULL when none is pending. The
 * caller frees it with tsr_gen_event_free. */
tsr_gen_event *tsr_gen_request_take(tsr_gen_request *r);
void tsr_gen_event_free(tsr_gen_event *ev); /* NULL ok */

/* The bounded queue of requests waiting for the engine. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tsr_gen_request **items; /* ring */
    int cap, head, count;
    int closed;              /* no more pushes (shutdown) */
} tsr_request_queue;

tsr_status tsr_request_queue_init(tsr_request_queue *q, int capacity);
void tsr_request_queue_free(tsr_request_queue *q); /* releases what is left */

/* gRPC side: enqueues (taking a reference). TSR_ERR_RANGE when full (the
 * caller answers RESOURCE_EXHAUSTED), TSR_ERR_INVALID when closed. */
tsr_status tsr_request_queue_push(tsr_request_queue *q, tsr_gen_request *r);

/* Engine side: takes up to max requests (their references pass to the
 * caller). Waits up to timeout_s for the first one when the queue is empty
 * (0: do not wait). Returns the number taken. */
int tsr_request_queue_pop(tsr_request_queue *q, tsr_gen_request **out, int max, double timeout_s);

/* Requests waiting now. */
int tsr_request_queue_len(tsr_request_queue *q);

/* Stops further pushes and wakes a waiting pop. */
void tsr_request_queue_close(tsr_request_queue *q);

/* Statistics the engine publishes for GetServerInfo and metrics (atomics:
 * written by the engine thread, read by the gRPC and HTTP threads). */
typedef struct {
    atomic_int active;        /* sequences in the running batch */
    atomic_int queued;        /* waiting in the queue or for KV space */
    atomic_int kv_blocks_used;
    atomic_int kv_blocks_total;
    atomic_int kv_block_size;
    atomic_int engine_failed; /* health turns NOT_SERVING */
    atomic_int ready;         /* model loaded: health SERVING */
} tsr_server_stats;

#endif
