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

#include "base/clock.h"
#include "base/status.h"
#include "runtime/model/lora.h"
#include "runtime/sample/sampler.h"
#include "runtime/train/train.h"

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
    int32_t *tokens;      /* (n_tokens) */
    float *logprobs;      /* (n_tokens) or NULL */
    int n_top;            /* alternatives per token */
    tsr_top_logprob *top; /* (n_tokens, n_top) or NULL */
    char *text;           /* NUL-terminated complete UTF-8, may be "" */
    size_t text_len;
    /* FINAL */
    tsr_fin_reason finish;
    int prompt_tokens, completion_tokens, cached_tokens;
    double queued_s, ttft_s, total_s;
    char error[256];
    int status_code; /* FINAL: 0, or the gRPC status (numbered as grpc_status_code) the
                           call ends with instead of a final message (an unknown adapter:
                           NOT_FOUND); `error` says why */
} tsr_gen_event;

typedef struct tsr_gen_request {
    /* ---- written by the gRPC thread before submit ---- */
    char id[128];
    char client[128];  /* peer address, for the access log */
    char adapter[128]; /* "" = base model */
    int32_t *prompt;   /* (n_prompt) token ids, validated */
    int n_prompt;
    tsr_sampling_params sampling;
    int max_tokens; /* > 0 */
    int min_tokens;
    int ignore_eos;
    char **stop; /* (n_stop) NUL-terminated */
    int n_stop;
    int32_t *stop_ids;
    int n_stop_ids;
    int logprobs;     /* send logprobs of generated tokens */
    int top_logprobs; /* 0..20 alternatives */
    double t_arrival; /* tsr_now_s() when the call arrived */
    double deadline;  /* tsr_now_s() clock; 0 = none */

    /* ---- shared ---- */
    atomic_int cancelled; /* set by the gRPC thread; read by the engine */
    atomic_int refs;
    pthread_mutex_t mu; /* guards the event list */
    tsr_gen_event *head, *tail;
    int final_posted; /* under mu */
} tsr_gen_request;

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

/* ---- adapter and training calls ----
 * CreateAdapter, ForwardBackward, Forward, OptimStep, SaveAdapter,
 * LoadAdapter, ListAdapters and DeleteAdapter travel as a tsr_ctl_request:
 * the gRPC thread parses, validates and tokenizes, the engine thread runs it
 * between two generation steps (runtime/server/adapters.h), fills in the
 * result and sets `done`; the gRPC thread, which polls `done`, answers.
 * Ownership as for generation requests: refcounted, the last release frees. */

#define TSR_ADAPTER_NAME_MAX 64

typedef enum {
    TSR_CTL_CREATE = 1,
    TSR_CTL_FORWARD_BACKWARD,
    TSR_CTL_FORWARD,
    TSR_CTL_OPTIM_STEP,
    TSR_CTL_SAVE,
    TSR_CTL_LOAD,
    TSR_CTL_LIST,
    TSR_CTL_DELETE,
} tsr_ctl_kind;

/* One adapter as ListAdapters and CreateAdapter report it. */
typedef struct {
    char name[TSR_ADAPTER_NAME_MAX + 1];
    tsr_lora_config cfg;
    int step;
    long long n_params;  /* of the whole adapter */
    int pending_batches; /* ForwardBackward calls since the last OptimStep */
    char source[4096];   /* "created" or the directory it was loaded from */
} tsr_adapter_info;

typedef struct tsr_ctl_request {
    struct tsr_ctl_request *next; /* in the queue */
    /* ---- written by the gRPC thread before submit ---- */
    tsr_ctl_kind kind;
    char name[TSR_ADAPTER_NAME_MAX + 1]; /* the adapter ("" = base model, Forward only) */
    tsr_lora_config lora;                /* CREATE */
    int n_seqs;             /* FORWARD_BACKWARD, FORWARD: the batch, as tsr_train_batch */
    int32_t *seq_start;     /* (n_seqs + 1) */
    int32_t *tokens;        /* (seq_start[n_seqs]) */
    float *weights;         /* (seq_start[n_seqs]) for predicting token i+1 from i */
    tsr_optim_params optim; /* OPTIM_STEP */
    char path[4096];        /* SAVE ("" = none), LOAD */
    int return_files;       /* SAVE */
    atomic_int cancelled;   /* the client left: not started calls are skipped */
    atomic_int refs;
    /* ---- written by the engine thread, then `done` ---- */
    atomic_int done;
    int code;              /* 0 = OK, else the gRPC status (numbered as grpc_status_code) */
    char msg[512];         /* why, when code != 0 */
    tsr_train_stats stats; /* FORWARD_BACKWARD, FORWARD */
    int pending_batches;
    tsr_optim_result result; /* OPTIM_STEP */
    tsr_adapter_info info;   /* CREATE, LOAD */
    tsr_adapter_info *list;  /* LIST: (n_list), malloc'd */
    int n_list, max_adapters;
    int step;             /* SAVE */
    uint8_t *config_json; /* SAVE with return_files: the two files' bytes */
    size_t config_len;
    uint8_t *safetensors;
    size_t safetensors_len;
} tsr_ctl_request;

/* A zeroed request with refcount 1. NULL on OOM. */
tsr_ctl_request *tsr_ctl_request_new(void);
void tsr_ctl_request_retain(tsr_ctl_request *r);
void tsr_ctl_request_release(tsr_ctl_request *r); /* NULL ok; the last frees */

/* Engine side: the result is complete (code, msg and the kind's fields). */
void tsr_ctl_request_finish(tsr_ctl_request *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The bounded queue of requests waiting for the engine (generation
 * requests in a ring; adapter calls in a FIFO list beside it, unbounded:
 * each is one client call). */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tsr_gen_request **items; /* ring */
    int cap, head, count;
    int closed; /* no more pushes (shutdown) */
    tsr_ctl_request *ctl_head, *ctl_tail;
    int n_ctl;
} tsr_request_queue;

tsr_status tsr_request_queue_init(tsr_request_queue *q, int capacity);
void tsr_request_queue_free(tsr_request_queue *q); /* releases what is left */

/* gRPC side: enqueues (taking a reference). TSR_ERR_RANGE when full (the
 * caller answers RESOURCE_EXHAUSTED), TSR_ERR_INVALID when closed. */
tsr_status tsr_request_queue_push(tsr_request_queue *q, tsr_gen_request *r);

/* Engine side: takes up to max requests (their references pass to the
 * caller). Waits up to timeout_s for the first one when the queue is empty
 * (0: do not wait); an adapter call arriving ends the wait too. Returns the
 * number taken. */
int tsr_request_queue_pop(tsr_request_queue *q, tsr_gen_request **out, int max, double timeout_s);

/* Engine side: removes from the queue (keeping the others in order) up to
 * `max` requests that were cancelled or whose deadline is before `now`, and
 * hands them to the caller, which finishes them. */
int tsr_request_queue_take_cancelled(tsr_request_queue *q, tsr_gen_request **out, int max,
                                     double now);

/* Requests waiting now. */
int tsr_request_queue_len(tsr_request_queue *q);

/* gRPC side: enqueues an adapter call (taking a reference); wakes a waiting
 * pop. TSR_ERR_INVALID when closed. */
tsr_status tsr_request_queue_push_ctl(tsr_request_queue *q, tsr_ctl_request *r);

/* Engine side: the oldest adapter call (its reference passes), or NULL. */
tsr_ctl_request *tsr_request_queue_pop_ctl(tsr_request_queue *q);

/* Stops further pushes and wakes a waiting pop. */
void tsr_request_queue_close(tsr_request_queue *q);

/* Statistics the engine publishes for GetServerInfo and metrics (atomics:
 * written by the engine thread, read by the gRPC and HTTP threads). */
typedef struct {
    atomic_int active; /* sequences in the running batch */
    atomic_int queued; /* waiting in the queue or for KV space */
    atomic_int kv_blocks_used;
    atomic_int kv_blocks_total;
    atomic_int kv_block_size;
    atomic_int engine_failed; /* health turns NOT_SERVING */
    atomic_int ready;         /* model loaded: health SERVING */
} tsr_server_stats;

#endif
