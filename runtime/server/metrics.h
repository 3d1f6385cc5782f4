/* runtime/server/metrics.h - Prometheus metrics for `tessera serve`: a small
 * registry of counters, gauges and histograms with labels, its text
 * exposition (format 0.0.4), the set of serving metrics Tessera publishes
 * (tsr_metrics), and an HTTP endpoint on libmicrohttpd's own thread that
 * serves GET /metrics and GET /healthz.
 *
 * Threads: the engine thread (scheduler) and the gRPC thread update, the
 * HTTP thread renders. Counters and gauges are C11 atomics (an update never
 * blocks); a histogram observation takes its series' mutex, so a scrape sees
 * each histogram consistent (its +Inf bucket equals its _count). Families are
 * registered before the threads start; series appear on first use.
 *
 * What it is not: a general Prometheus client (no summaries, no exemplars,
 * no OpenMetrics, no push gateway), and no global registry: callers hold a
 * tsr_metrics and pass it through the server and scheduler configs. */
#ifndef TSR_RUNTIME_SERVER_METRICS_H
#define TSR_RUNTIME_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* ---- the registry ---------------------------------------------------------------- */

typedef struct tsr_metric_registry tsr_metric_registry_t; /* opaque */
typedef struct tsr_metric_family tsr_metric_family_t;     /* one name; owned by the registry */
typedef struct tsr_metric tsr_metric_t;                   /* one labelled series; owned likewise */

typedef enum {
    TSR_METRIC_COUNTER = 0,   /* integer, only goes up; the name ends in _total */
    TSR_METRIC_GAUGE = 1,     /* a double that is set */
    TSR_METRIC_HISTOGRAM = 2, /* cumulative buckets, _sum and _count */
} tsr_metric_type;

enum { TSR_METRIC_MAX_LABELS = 8 };

typedef struct {
    tsr_metric_type type;
    const char *name;          /* [a-zA-Z_:][a-zA-Z0-9_:]*, unique in the registry */
    const char *help;          /* one line of text; may hold any UTF-8 (escaped on output) */
    const char *const *labels; /* (n_labels) names [a-zA-Z_][a-zA-Z0-9_]*, not "__*"; "le" is
                                  reserved for histograms; NULL when n_labels is 0 */
    int n_labels;              /* 0..TSR_METRIC_MAX_LABELS */
    const double *buckets;     /* histograms: (n_buckets) finite upper bounds, strictly
                                  increasing; the +Inf bucket is implicit */
    int n_buckets;             /* histograms: 1..64; others 0 */
} tsr_metric_spec;

tsr_status tsr_metric_registry_create(tsr_metric_registry_t **out);
/* Frees every family and series: no thread may use them any more. NULL ok. */
void tsr_metric_registry_destroy(tsr_metric_registry_t *r);

/* Registers a family (everything in `spec` is copied). TSR_ERR_INVALID,
 * with a message, for a bad name, label, bucket list or a duplicate name.
 * Not to be called while another thread renders. */
tsr_status tsr_metric_registry_add(tsr_metric_registry_t *r, const tsr_metric_spec *spec,
                                   tsr_metric_family_t **out);

/* The series with these label values (n_labels NUL-terminated strings, any
 * bytes; NULL for a family without labels), created at zero on first use.
 * The pointer stays valid until the registry is destroyed, so hot paths
 * look a series up once. Thread-safe (takes the family's mutex). NULL when
 * f is NULL or on out of memory: the update functions ignore NULL. */
tsr_metric_t *tsr_metric_get(tsr_metric_family_t *f, const char *const *values);

/* Updates; each is a no-op for NULL or for a series of another type. */
void tsr_metric_inc(tsr_metric_t *m, uint64_t n); /* counter += n (lock-free) */
void tsr_metric_set(tsr_metric_t *m, double v);   /* gauge = v (lock-free) */
void tsr_metric_observe(tsr_metric_t *m,
                        double v); /* histogram (takes its mutex); NaN is ignored */

/* Reads (tests, /healthz): a counter's or gauge's value, a histogram's
 * count; 0 for NULL. tsr_metric_hist_sum: a histogram's sum. */
double tsr_metric_value(tsr_metric_t *m);
double tsr_metric_hist_sum(tsr_metric_t *m);

/* The text exposition format 0.0.4 of every family in registration order:
 * "# HELP" and "# TYPE" lines, then one line per series in creation order
 * (histograms: cumulative _bucket lines with le up to "+Inf", then _sum and
 * _count). Label values are escaped (\\ \" \n), help text likewise (\\ \n).
 * *out is malloc'd and NUL-terminated (the caller frees it), *len its
 * length. TSR_ERR_NOMEM on out of memory. Thread-safe against updates. */
tsr_status tsr_metric_registry_render(tsr_metric_registry_t *r, char **out, size_t *len);

/* ---- Tessera's serving metrics --------------------------------------------------- */

/* Every handle is created by tsr_metrics_create; the fields are for the
 * threads that update them (updates take the pointers as they are). Names
 * and meanings are in docs/serving.md (Metrics). */
typedef struct {
    tsr_metric_registry_t *reg;
    /* gRPC thread: tessera_requests_total{method, status}, one per finished call */
    tsr_metric_family_t *requests;
    /* engine thread (the scheduler) */
    tsr_metric_t *finished[4];         /* tessera_generate_finished_total{reason}, by
                                         tsr_fin_reason - 1: stop, length, cancelled, error */
    tsr_metric_t *prompt_tokens;       /* tessera_prompt_tokens_total: admitted prompts */
    tsr_metric_t *generated_tokens;    /* tessera_generated_tokens_total: completion tokens */
    tsr_metric_t *time_to_first_token; /* histogram: arrival -> first sampled token */
    tsr_metric_t *inter_token;         /* histogram: gap between a sequence's tokens */
    tsr_metric_t *request_duration;    /* histogram: arrival -> final event */
    tsr_metric_t *queue_time;          /* histogram: arrival -> first prompt step, observed
                                         with the final event (the final's queued_s) */
    tsr_metric_t *running, *queued;    /* gauges: sequences running, requests waiting */
    tsr_metric_t *kv_blocks_used, *kv_blocks_total;
    tsr_metric_t *engine_steps;    /* tessera_engine_steps_total (steps with tokens) */
    tsr_metric_t *step_tokens;     /* histogram: tokens per engine step */
    tsr_metric_t *sampled_rows[4]; /* tessera_sampled_rows_total{path}: non-greedy rows by
                                         how they were drawn (tsr_scheduler_row_counts):
                                         topk, candidates, candidates_whole, whole */
    /* main: tessera_up (1 while serving; /healthz answers 200 then) and tessera_info */
    tsr_metric_t *up;
    tsr_metric_family_t *info;
} tsr_metrics;

/* A registry with every serving metric registered (at zero; up = 0). */
tsr_status tsr_metrics_create(tsr_metrics **out);
void tsr_metrics_free(tsr_metrics *m); /* NULL ok; the HTTP endpoint must be stopped first */

/* tessera_info{version, model, tp, pp} = 1, version being the one
 * GetServerInfo reports (this library's). Call once, before serving. */
void tsr_metrics_set_info(tsr_metrics *m, const char *model, int tp, int pp);

/* ---- the HTTP endpoint ------------------------------------------------------------ */

typedef struct tsr_metrics_http tsr_metrics_http_t; /* opaque */

typedef struct {
    const char *host;     /* numeric address or name to bind ("127.0.0.1", "::", "0.0.0.0") */
    int port;             /* 0: any free port (tsr_metrics_http_port says which) */
    tsr_metrics *metrics; /* required; must outlive the endpoint */
} tsr_metrics_http_config;

/* Binds host:port and starts libmicrohttpd's own thread. It answers
 *   GET /metrics  200, text/plain; version=0.0.4 (the registry rendered)
 *   GET /healthz  200 "ok" while tessera_up is 1, else 503 "not serving"
 * HEAD like GET without a body; other paths 404; other methods 405 (with
 * Allow). TSR_ERR_IO when the address cannot be bound (the message names
 * it), TSR_ERR_INVALID when the host does not resolve. */
tsr_status tsr_metrics_http_start(const tsr_metrics_http_config *cfg, tsr_metrics_http_t **out);

/* The port bound. */
int tsr_metrics_http_port(const tsr_metrics_http_t *h);

/* Stops the thread (waits for requests in progress) and frees. NULL ok. */
void tsr_metrics_http_stop(tsr_metrics_http_t *h);

#endif
