/* runtime/server/metrics.c - the metric registry, its Prometheus text
 * rendering, Tessera's serving metrics and the libmicrohttpd endpoint.
 *
 * Counters are _Atomic uint64_t, gauges a double's bits in an _Atomic
 * uint64_t; a histogram series keeps per-bucket (not cumulative) counts, its
 * sum and count under its own mutex, and rendering cumulates a snapshot.
 * Series are appended to their family's list under the family's mutex and
 * never removed, so handles stay valid for the registry's lifetime.
 *
 * What it is not: the code that decides what to measure (the scheduler and
 * the gRPC server do), nor an HTTP server for anything but these two paths. */
#include "runtime/server/metrics.h"

#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/log.h"

#ifndef TSR_VERSION
#define TSR_VERSION "unknown"
#endif

enum { MAX_BUCKETS = 64 };

struct tsr_metric {
    tsr_metric_t *next; /* in its family, creation order */
    tsr_metric_type type;
    int n_buckets; /* histograms */
    const double *bounds;
    char **values;          /* (n_labels) raw label values, for lookup */
    char *labels;           /* rendered `a="x",b="y"` (escaped); "" without labels */
    _Atomic uint64_t count; /* counter */
    _Atomic uint64_t bits;  /* gauge: the double's bits */
    pthread_mutex_t mu;     /* histogram: guards n, sum, bucket */
    uint64_t n;
    double sum;
    uint64_t bucket[]; /* histogram: (n_buckets + 1) per-bucket counts; last = +Inf */
};

struct tsr_metric_family {
    tsr_metric_family_t *next;
    tsr_metric_type type;
    char *name, *help;
    int n_labels;
    char *labels[TSR_METRIC_MAX_LABELS];
    double *buckets; /* (n_buckets) */
    int n_buckets;
    pthread_mutex_t mu; /* guards the series list */
    tsr_metric_t *head, *tail;
};

struct tsr_metric_registry {
    pthread_mutex_t mu; /* guards the family list */
    tsr_metric_family_t *head, *tail;
};

/* ---- a growing string ---------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->buf, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->buf = p;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Label values escape \ " and newline; help text escapes \ and newline. */
static void sb_escaped(sbuf *b, const char *s, int quote) {
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            sb_put(b, "\\\\", 2);
        else if (*p == '\n')
            sb_put(b, "\\n", 2);
        else if (*p == '"' && quote)
            sb_put(b, "\\\"", 2);
        else
            sb_put(b, p, 1);
    }
}

/* The shortest decimal that reads back as v, as Go (Prometheus) writes it:
 * 0.1, 2.5, 10, 1800, 1e-05, 1e+21; or NaN, +Inf, -Inf. */
static void fmt_double(char *out, size_t n, double v) {
    if (isnan(v)) {
        snprintf(out, n, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    int p = 1;
    for (; p < 17; p++) {
        snprintf(out, n, "%.*g", p, v);
        if (strtod(out, NULL) == v)
            break;
    }
    snprintf(out, n, "%.*g", p, v);
    /* %g turns to an exponent once it exceeds the digits (10 -> "1e+01");
     * Go keeps plain notation below 1e21 */
    const char *e = strchr(out, 'e');
    if (e) {
        int exp = atoi(e + 1);
        if (exp >= p && exp < 21)
            snprintf(out, n, "%.*g", exp + 1, v);
    }
}

static void sb_double(sbuf *b, double v) {
    char tmp[40];
    fmt_double(tmp, sizeof tmp, v);
    sb_str(b, tmp);
}

/* ---- the registry --------------------------------------------------------------- */

static int name_ok(const char *s, int colon) {
    if (!s || !s[0])
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
        if (!alpha && !(p > s && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static void family_free(tsr_metric_family_t *f) {
    if (!f)
        return;
    for (tsr_metric_t *m = f->head, *next; m; m = next) {
        next = m->next;
        for (int i = 0; i < f->n_labels; i++)
            free(m->values[i]);
        free(m->values);
        free(m->labels);
        pthread_mutex_destroy(&m->mu);
        free(m);
    }
    for (int i = 0; i < f->n_labels; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    free(f->buckets);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

tsr_status tsr_metric_registry_create(tsr_metric_registry_t **out) {
    *out = calloc(1, sizeof **out);
    if (!*out)
        return tsr_error_set(TSR_ERR_NOMEM, "metrics: out of memory");
    pthread_mutex_init(&(*out)->mu, NULL);
    return TSR_OK;
}

void tsr_metric_registry_destroy(tsr_metric_registry_t *r) {
    if (!r)
        return;
    for (tsr_metric_family_t *f = r->head, *next; f; f = next) {
        next = f->next;
        family_free(f);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

tsr_status tsr_metric_registry_add(tsr_metric_registry_t *r, const tsr_metric_spec *spec,
                                   tsr_metric_family_t **out) {
    *out = NULL;
    const char *name = spec->name;
    if (!name_ok(name, 1))
        return tsr_error_set(TSR_ERR_INVALID, "metrics: '%s' is not a valid metric name",
                             name ? name : "(null)");
    if (spec->type == TSR_METRIC_COUNTER && !ends_with(name, "_total"))
        return tsr_error_set(TSR_ERR_INVALID, "metrics: counter '%s' must end in _total", name);
    if (spec->n_labels < 0 || spec->n_labels > TSR_METRIC_MAX_LABELS ||
        (spec->n_labels > 0 && !spec->labels))
        return tsr_error_set(TSR_ERR_INVALID, "metrics: '%s': %d labels (at most %d)", name,
                             spec->n_labels, TSR_METRIC_MAX_LABELS);
    for (int i = 0; i < spec->n_labels; i++) {
        const char *l = spec->labels[i];
        if (!name_ok(l, 0) || strncmp(l, "__", 2) == 0 ||
            (spec->type == TSR_METRIC_HISTOGRAM && strcmp(l, "le") == 0))
            return tsr_error_set(TSR_ERR_INVALID, "metrics: '%s': '%s' is not a valid label name",
                                 name, l ? l : "(null)");
        for (int j = 0; j < i; j++)
            if (strcmp(spec->labels[j], l) == 0)
                return tsr_error_set(TSR_ERR_INVALID, "metrics: '%s': label '%s' twice", name, l);
    }
    if (spec->type == TSR_METRIC_HISTOGRAM) {
        if (spec->n_buckets < 1 || spec->n_buckets > MAX_BUCKETS || !spec->buckets)
            return tsr_error_set(TSR_ERR_INVALID, "metrics: histogram '%s' needs 1..%d buckets",
                                 name, MAX_BUCKETS);
        for (int i = 0; i < spec->n_buckets; i++)
            if (!isfinite(spec->buckets[i]) || (i > 0 && spec->buckets[i] <= spec->buckets[i - 1]))
                return tsr_error_set(TSR_ERR_INVALID,
                                     "metrics: histogram '%s': bucket bounds must be finite and "
                                     "strictly increasing",
                                     name);
    } else if (spec->n_buckets != 0) {
        return tsr_error_set(TSR_ERR_INVALID, "metrics: '%s' is not a histogram but has buckets",
                             name);
    }
    pthread_mutex_lock(&r->mu);
    for (tsr_metric_family_t *f = r->head; f; f = f->next)
        if (strcmp(f->name, name) == 0) {
            pthread_mutex_unlock(&r->mu);
            return tsr_error_set(TSR_ERR_INVALID, "metrics: '%s' is registered twice", name);
        }
    pthread_mutex_unlock(&r->mu);

    tsr_metric_family_t *f = calloc(1, sizeof *f);
    if (!f)
        return tsr_error_set(TSR_ERR_NOMEM, "metrics: out of memory");
    pthread_mutex_init(&f->mu, NULL);
    f->type = spec->type;
    f->name = strdup(name);
    f->help = strdup(spec->help ? spec->help : "");
    int oom = !f->name || !f->help;
    for (int i = 0; i < spec->n_labels; i++) {
        f->labels[i] = strdup(spec->labels[i]);
        f->n_labels++;
        oom |= !f->labels[i];
    }
    if (spec->type == TSR_METRIC_HISTOGRAM) {
        f->buckets = malloc((size_t)spec->n_buckets * sizeof *f->buckets);
        if (f->buckets) {
            memcpy(f->buckets, spec->buckets, (size_t)spec->n_buckets * sizeof *f->buckets);
            f->n_buckets = spec->n_buckets;
        }
        oom |= !f->buckets;
    }
    if (oom) {
        family_free(f);
        return tsr_error_set(TSR_ERR_NOMEM, "metrics: out of memory");
    }
    pthread_mutex_lock(&r->mu);
    if (r->tail)
        r->tail->next = f;
    else
        r->head = f;
    r->tail = f;
    pthread_mutex_unlock(&r->mu);
    *out = f;
    return TSR_OK;
}

/* A new series at zero; NULL on out of memory. */
static tsr_metric_t *series_new(const tsr_metric_family_t *f, const char *const *values) {
    size_t extra = f->type == TSR_METRIC_HISTOGRAM ? (size_t)(f->n_buckets + 1) : 0;
    tsr_metric_t *m = calloc(1, sizeof *m + extra * sizeof m->bucket[0]);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->type = f->type;
    m->n_buckets = f->n_buckets;
    m->bounds = f->buckets;
    atomic_init(&m->count, 0);
    atomic_init(&m->bits, 0); /* +0.0 */
    m->values = calloc((size_t)(f->n_labels ? f->n_labels : 1), sizeof *m->values);
    sbuf b = {0};
    sb_put(&b, "", 0);
    int oom = !m->values;
    for (int i = 0; i < f->n_labels && !oom; i++) {
        m->values[i] = strdup(values[i] ? values[i] : "");
        oom |= !m->values[i];
        if (i)
            sb_put(&b, ",", 1);
        sb_str(&b, f->labels[i]);
        sb_put(&b, "=\"", 2);
        sb_escaped(&b, m->values[i] ? m->values[i] : "", 1);
        sb_put(&b, "\"", 1);
    }
    m->labels = b.buf;
    if (oom || b.oom) {
        for (int i = 0; m->values && i < f->n_labels; i++)
            free(m->values[i]);
        free(m->values);
        free(b.buf);
        pthread_mutex_destroy(&m->mu);
        free(m);
        return NULL;
    }
    return m;
}

tsr_metric_t *tsr_metric_get(tsr_metric_family_t *f, const char *const *values) {
    if (!f || (f->n_labels > 0 && !values))
        return NULL;
    pthread_mutex_lock(&f->mu);
    tsr_metric_t *m = f->head;
    for (; m; m = m->next) {
        int same = 1;
        for (int i = 0; i < f->n_labels && same; i++)
            same = strcmp(m->values[i], values[i] ? values[i] : "") == 0;
        if (same)
            break;
    }
    if (!m && (m = series_new(f, values))) {
        if (f->tail)
            f->tail->next = m;
        else
            f->head = m;
        f->tail = m;
    }
    pthread_mutex_unlock(&f->mu);
    return m;
}

void tsr_metric_inc(tsr_metric_t *m, uint64_t n) {
    if (m && m->type == TSR_METRIC_COUNTER)
        atomic_fetch_add_explicit(&m->count, n, memory_order_relaxed);
}

void tsr_metric_set(tsr_metric_t *m, double v) {
    if (!m || m->type != TSR_METRIC_GAUGE)
        return;
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    atomic_store_explicit(&m->bits, bits, memory_order_relaxed);
}

void tsr_metric_observe(tsr_metric_t *m, double v) {
    if (!m || m->type != TSR_METRIC_HISTOGRAM || isnan(v))
        return;
    int i = 0;
    while (i < m->n_buckets && v > m->bounds[i]) /* the first bucket with v <= le */
        i++;
    pthread_mutex_lock(&m->mu);
    m->bucket[i]++;
    m->n++;
    m->sum += v;
    pthread_mutex_unlock(&m->mu);
}

double tsr_metric_value(tsr_metric_t *m) {
    if (!m)
        return 0;
    switch (m->type) {
    case TSR_METRIC_COUNTER: return (double)atomic_load_explicit(&m->count, memory_order_relaxed);
    case TSR_METRIC_GAUGE: {
        uint64_t bits = atomic_load_explicit(&m->bits, memory_order_relaxed);
        double v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    case TSR_METRIC_HISTOGRAM: {
        pthread_mutex_lock(&m->mu);
        uint64_t n = m->n;
        pthread_mutex_unlock(&m->mu);
        return (double)n;
    }
    }
    return 0;
}

double tsr_metric_hist_sum(tsr_metric_t *m) {
    if (!m || m->type != TSR_METRIC_HISTOGRAM)
        return 0;
    pthread_mutex_lock(&m->mu);
    double s = m->sum;
    pthread_mutex_unlock(&m->mu);
    return s;
}

/* name{labels} or name{labels,extra} or name{extra} or name */
static void sb_series(sbuf *b, const char *name, const char *suffix, const char *labels,
                      const char *extra) {
    sb_str(b, name);
    sb_str(b, suffix);
    if (labels[0] || extra) {
        sb_put(b, "{", 1);
        sb_str(b, labels);
        if (extra) {
            if (labels[0])
                sb_put(b, ",", 1);
            sb_str(b, extra);
        }
        sb_put(b, "}", 1);
    }
    sb_put(b, " ", 1);
}

static void render_histogram(sbuf *b, const tsr_metric_family_t *f, tsr_metric_t *m) {
    uint64_t counts[MAX_BUCKETS + 1], n;
    double sum;
    pthread_mutex_lock(&m->mu); /* one consistent snapshot */
    memcpy(counts, m->bucket, (size_t)(f->n_buckets + 1) * sizeof counts[0]);
    n = m->n;
    sum = m->sum;
    pthread_mutex_unlock(&m->mu);
    uint64_t cum = 0;
    char le[64], num[32];
    for (int i = 0; i <= f->n_buckets; i++) {
        cum += counts[i];
        if (i < f->n_buckets) {
            char v[40];
            fmt_double(v, sizeof v, f->buckets[i]);
            snprintf(le, sizeof le, "le=\"%s\"", v);
        } else {
            snprintf(le, sizeof le, "le=\"+Inf\"");
        }
        sb_series(b, f->name, "_bucket", m->labels, le);
        snprintf(num, sizeof num, "%llu\n", (unsigned long long)cum);
        sb_str(b, num);
    }
    sb_series(b, f->name, "_sum", m->labels, NULL);
    sb_double(b, sum);
    sb_put(b, "\n", 1);
    sb_series(b, f->name, "_count", m->labels, NULL);
    snprintf(num, sizeof num, "%llu\n", (unsigned long long)n);
    sb_str(b, num);
}

static const char *type_name(tsr_metric_type t) {
    switch (t) {
    case TSR_METRIC_COUNTER: return "counter";
    case TSR_METRIC_GAUGE: return "gauge";
    case TSR_METRIC_HISTOGRAM: return "histogram";
    }
    return "untyped";
}

tsr_status tsr_metric_registry_render(tsr_metric_registry_t *r, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    sbuf b = {0};
    sb_put(&b, "", 0);
    pthread_mutex_lock(&r->mu);
    for (tsr_metric_family_t *f = r->head; f; f = f->next) {
        sb_str(&b, "# HELP ");
        sb_str(&b, f->name);
        sb_put(&b, " ", 1);
        sb_escaped(&b, f->help, 0);
        sb_str(&b, "\n# TYPE ");
        sb_str(&b, f->name);
        sb_put(&b, " ", 1);
        sb_str(&b, type_name(f->type));
        sb_put(&b, "\n", 1);
        pthread_mutex_lock(&f->mu);
        for (tsr_metric_t *m = f->head; m; m = m->next) {
            if (f->type == TSR_METRIC_HISTOGRAM) {
                render_histogram(&b, f, m);
                continue;
            }
            sb_series(&b, f->name, "", m->labels, NULL);
            if (f->type == TSR_METRIC_COUNTER) {
                char num[32];
                snprintf(num, sizeof num, "%llu",
                         (unsigned long long)atomic_load_explicit(&m->count, memory_order_relaxed));
                sb_str(&b, num);
            } else {
                sb_double(&b, tsr_metric_value(m));
            }
            sb_put(&b, "\n", 1);
        }
        pthread_mutex_unlock(&f->mu);
    }
    pthread_mutex_unlock(&r->mu);
    if (b.oom) {
        free(b.buf);
        return tsr_error_set(TSR_ERR_NOMEM, "metrics: out of memory rendering");
    }
    *out = b.buf;
    *len = b.len;
    return TSR_OK;
}

/* ---- Tessera's serving metrics -------------------------------------------------- */

static tsr_status add_one(tsr_metric_registry_t *r, tsr_metric_type type, const char *name,
                          const char *help, const double *buckets, int n_buckets,
                          tsr_metric_t **out) {
    tsr_metric_spec spec = {type, name, help, NULL, 0, buckets, n_buckets};
    tsr_metric_family_t *f;
    TSR_TRY(tsr_metric_registry_add(r, &spec, &f));
    *out = tsr_metric_get(f, NULL);
    return *out ? TSR_OK : tsr_error_set(TSR_ERR_NOMEM, "metrics: out of memory");
}

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

tsr_status tsr_metrics_create(tsr_metrics **out) {
    /* seconds: TTFT spans a cached short prompt to a long prefill on CPU;
     * inter-token latency a GPU decode step to a slow CPU one */
    static const double ttft[] = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
                                  1,     2.5,  5,     7.5,  10,    20,  40,   80};
    static const double itl[] = {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.075,
                                 0.1,   0.15,   0.2,   0.3,  0.5,   0.75, 1,     2.5,  5};
    static const double duration[] = {0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,   10,
                                      15,   20,  30,   60,  120, 300, 600, 1800};
    static const double queue[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                   1,     2.5,   5,    10,    30,   60,  120,  300};
    static const double tokens[] = {1,   2,   4,    8,    16,   32,   64,   128,
                                    256, 512, 1024, 2048, 4096, 8192, 16384};
    static const char *const req_labels[] = {"method", "status"};
    static const char *const fin_labels[] = {"reason"};
    static const char *const info_labels[] = {"version", "model", "tp", "pp"};
    static const char *const reasons[] = {"stop", "length", "cancelled", "error"};

    *out = NULL;
    tsr_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return tsr_error_set(TSR_ERR_NOMEM, "metrics: out of memory");
    tsr_metric_registry_t *r = NULL;
    tsr_metric_family_t *fin = NULL;
    tsr_status st;
    TSR_CHECK_GOTO(st, tsr_metric_registry_create(&r));
    m->reg = r;
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_GAUGE, "tessera_up",
                               "1 while the server is serving (every rank loaded, not shutting "
                               "down), else 0",
                               NULL, 0, &m->up));
    {
        tsr_metric_spec s = {TSR_METRIC_GAUGE,
                             "tessera_info",
                             "Version, model and layout of this server; always 1",
                             info_labels,
                             4,
                             NULL,
                             0};
        TSR_CHECK_GOTO(st, tsr_metric_registry_add(r, &s, &m->info));
    }
    {
        tsr_metric_spec s = {TSR_METRIC_COUNTER,
                             "tessera_requests_total",
                             "gRPC calls finished, by method and status code",
                             req_labels,
                             2,
                             NULL,
                             0};
        TSR_CHECK_GOTO(st, tsr_metric_registry_add(r, &s, &m->requests));
    }
    {
        tsr_metric_spec s = {TSR_METRIC_COUNTER,
                             "tessera_generate_finished_total",
                             "Generate requests the engine finished, by finish reason",
                             fin_labels,
                             1,
                             NULL,
                             0};
        TSR_CHECK_GOTO(st, tsr_metric_registry_add(r, &s, &fin));
        for (int i = 0; i < 4; i++)
            if (!(m->finished[i] = tsr_metric_get(fin, &reasons[i]))) {
                st = tsr_error_set(TSR_ERR_NOMEM, "metrics: out of memory");
                goto cleanup;
            }
    }
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_COUNTER, "tessera_prompt_tokens_total",
                               "Prompt tokens of requests admitted to the engine", NULL, 0,
                               &m->prompt_tokens));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_COUNTER, "tessera_generated_tokens_total",
                               "Completion tokens generated (as counted in usage)", NULL, 0,
                               &m->generated_tokens));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_HISTOGRAM, "tessera_time_to_first_token_seconds",
                               "From a request's arrival to its first sampled token", ttft,
                               N_OF(ttft), &m->time_to_first_token));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_HISTOGRAM, "tessera_inter_token_latency_seconds",
                               "Gap between consecutive tokens of a sequence, per token after "
                               "the first",
                               itl, N_OF(itl), &m->inter_token));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_HISTOGRAM, "tessera_request_duration_seconds",
                               "From a Generate request's arrival to its final event", duration,
                               N_OF(duration), &m->request_duration));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_HISTOGRAM, "tessera_queue_time_seconds",
                               "From a request's arrival to its first engine step (observed "
                               "when it finishes)",
                               queue, N_OF(queue), &m->queue_time));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_GAUGE, "tessera_requests_running",
                               "Sequences in the running batch", NULL, 0, &m->running));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_GAUGE, "tessera_requests_queued",
                               "Requests waiting in the admission queue or for KV space", NULL, 0,
                               &m->queued));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_GAUGE, "tessera_kv_blocks_used",
                               "KV cache blocks held by sequences", NULL, 0, &m->kv_blocks_used));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_GAUGE, "tessera_kv_blocks_total",
                               "KV cache blocks in the pool", NULL, 0, &m->kv_blocks_total));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_COUNTER, "tessera_engine_steps_total",
                               "Engine steps that ran tokens", NULL, 0, &m->engine_steps));
    TSR_CHECK_GOTO(st, add_one(r, TSR_METRIC_HISTOGRAM, "tessera_step_tokens",
                               "Tokens per engine step (decode tokens plus prompt chunks)", tokens,
                               N_OF(tokens), &m->step_tokens));
    {
        static const char *const path_labels[] = {"path"};
        static const char *const paths[] = {"topk", "candidates", "candidates_whole", "whole"};
        tsr_metric_family_t *rows;
        tsr_metric_spec s = {TSR_METRIC_COUNTER,
                             "tessera_sampled_rows_total",
                             "Sampled (non-greedy) rows by how rank 0 drew them: top-k "
                             "candidates, top_k-off candidates with the row's normaliser, "
                             "top_k-off rows the candidates could not decide (sent whole), "
                             "whole rows",
                             path_labels,
                             1,
                             NULL,
                             0};
        TSR_CHECK_GOTO(st, tsr_metric_registry_add(r, &s, &rows));
        for (int i = 0; i < 4; i++)
            if (!(m->sampled_rows[i] = tsr_metric_get(rows, &paths[i]))) {
                st = tsr_error_set(TSR_ERR_NOMEM, "metrics: out of memory");
                goto cleanup;
            }
    }
    *out = m;
    return TSR_OK;
cleanup:
    tsr_metrics_free(m);
    return st;
}

void tsr_metrics_free(tsr_metrics *m) {
    if (!m)
        return;
    tsr_metric_registry_destroy(m->reg);
    free(m);
}

void tsr_metrics_set_info(tsr_metrics *m, const char *model, int tp, int pp) {
    if (!m)
        return;
    char t[16], p[16];
    snprintf(t, sizeof t, "%d", tp);
    snprintf(p, sizeof p, "%d", pp);
    const char *values[] = {TSR_VERSION, model ? model : "", t, p};
    tsr_metric_t *s = tsr_metric_get(m->info, values);
    tsr_metric_set(s, 1);
}

/* ---- the HTTP endpoint ---------------------------------------------------------- */

#if MHD_VERSION >= 0x00097002
typedef enum MHD_Result mhd_result;
#else
typedef int mhd_result;
#endif

#if MHD_VERSION >= 0x00095300
#define TSR_MHD_THREAD (MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG)
#else
#define TSR_MHD_THREAD (MHD_USE_SELECT_INTERNALLY | MHD_USE_POLL | MHD_USE_DEBUG)
#endif

struct tsr_metrics_http {
    struct MHD_Daemon *d;
    tsr_metrics *m;
    int port;
};

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    TSR_LOG_W("metrics endpoint: %s", msg);
}

static const char k_text[] = "text/plain; charset=utf-8";
static const char k_prom[] = "text/plain; version=0.0.4; charset=utf-8";

/* Queues a response with a body: a string literal, or malloc'd when `owned`
 * (MHD frees it). */
static mhd_result respond(struct MHD_Connection *conn, unsigned code, const char *type, char *body,
                          size_t len, int owned) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (owned)
            free(body);
        return MHD_NO; /* MHD closes the connection */
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    mhd_result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static mhd_result respond_text(struct MHD_Connection *conn, unsigned code, const char *text) {
    return respond(conn, code, k_text, (char *)text, strlen(text), 0);
}

static mhd_result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                             const char *method, const char *version, const char *upload_data,
                             size_t *upload_data_size, void **req_cls) {
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    tsr_metrics_http_t *h = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
    if (strcmp(url, "/metrics") == 0) {
        char *text;
        size_t len;
        if (tsr_metric_registry_render(h->m->reg, &text, &len) != TSR_OK)
            return respond_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return respond(conn, MHD_HTTP_OK, k_prom, text, len, 1);
    }
    if (strcmp(url, "/healthz") == 0) {
        if (tsr_metric_value(h->m->up) == 1)
            return respond_text(conn, MHD_HTTP_OK, "ok");
        return respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not serving");
    }
    return respond_text(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /healthz\n");
}

tsr_status tsr_metrics_http_start(const tsr_metrics_http_config *cfg, tsr_metrics_http_t **out) {
    *out = NULL;
    if (!cfg->metrics || !cfg->host || cfg->port < 0 || cfg->port > 65535)
        return tsr_error_set(TSR_ERR_INVALID, "metrics endpoint: a host, a port in 0..65535 "
                                              "and the metrics are required");
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(cfg->host, port, &hints, &ai);
    if (gai != 0 || !ai)
        return tsr_error_set(TSR_ERR_INVALID, "metrics endpoint: cannot resolve host '%s': %s",
                             cfg->host, gai_strerror(gai));
    tsr_metrics_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        return tsr_error_set(TSR_ERR_NOMEM, "metrics endpoint: out of memory");
    }
    h->m = cfg->metrics;
    unsigned flags = TSR_MHD_THREAD;
    if (ai->ai_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ai->ai_addr;
        flags |= memcmp(&a6->sin6_addr, &in6addr_any, sizeof in6addr_any) == 0
                     ? MHD_USE_DUAL_STACK /* "::" takes IPv4 too, as gRPC's [::] does */
                     : MHD_USE_IPv6;
    }
    errno = 0;
    h->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first, to get all */
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned int)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                            MHD_OPTION_END);
    int err = errno;
    freeaddrinfo(ai);
    if (!h->d) {
        free(h);
        return tsr_error_set(TSR_ERR_IO, "metrics endpoint: cannot listen on %s port %d: %s",
                             cfg->host, cfg->port,
                             err ? strerror(err) : "the address is in use, malformed or not local");
    }
    h->port = cfg->port;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (di && getsockname(di->listen_fd, (struct sockaddr *)&ss, &sl) == 0)
        h->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *out = h;
    return TSR_OK;
}

int tsr_metrics_http_port(const tsr_metrics_http_t *h) { return h ? h->port : 0; }

void tsr_metrics_http_stop(tsr_metrics_http_t *h) {
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
