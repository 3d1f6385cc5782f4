/* tests/server/test_metrics.c - unit test of runtime/server/metrics.c: the
 * registry (name, label and bucket validation, one series per label set),
 * the text exposition checked line by line (HELP/TYPE, escaping of \ " and
 * newline in label values and of \ and newline in help text, cumulative
 * buckets ending in +Inf, _sum and _count, number formatting), updates from
 * several threads while another renders (every rendered histogram is
 * consistent), Tessera's serving set, and the HTTP endpoint over a real
 * loopback socket (200, 503, 404, 405, HEAD, a port already taken). */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/server/metrics.h"
#include "tests/common/check.h"

/* Compares rendered text with the expected lines, one by one. */
static void check_lines(const char *text, const char *const *want, int n_want) {
    const char *p = text;
    for (int i = 0; i < n_want; i++) {
        const char *nl = strchr(p, '\n');
        CHECK(nl != NULL);
        size_t len = (size_t)(nl - p);
        if (len != strlen(want[i]) || memcmp(p, want[i], len) != 0) {
            fprintf(stderr, "line %d:\n  got  %.*s\n  want %s\n", i + 1, (int)len, p, want[i]);
            CHECK(0);
        }
        p = nl + 1;
    }
    CHECK(*p == '\0'); /* nothing more, and the last line ended in \n */
}

/* A sample line's grammar: name, optional {label="escaped",...}, a space, a
 * number. Returns the value through *v. */
static int parse_sample(const char *line, size_t len, double *v) {
    size_t i = 0;
#define NAME_CHAR(c)                                                                               \
    ((c) == '_' || (c) == ':' || ((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
    if (len == 0 || !NAME_CHAR(line[0]))
        return 0;
    while (i < len && (NAME_CHAR(line[i]) || (line[i] >= '0' && line[i] <= '9')))
        i++;
    if (i < len && line[i] == '{') {
        i++;
        while (i < len && line[i] != '}') {
            while (i < len && line[i] != '=')
                i++;
            if (i + 1 >= len || line[i + 1] != '"')
                return 0;
            i += 2;
            while (i < len && line[i] != '"') {
                if (line[i] == '\n')
                    return 0;
                if (line[i] == '\\') {
                    if (i + 1 >= len || !strchr("\\\"n", line[i + 1]))
                        return 0;
                    i++;
                }
                i++;
            }
            if (i >= len)
                return 0;
            i++; /* closing quote */
            if (i < len && line[i] == ',')
                i++;
        }
        if (i >= len)
            return 0;
        i++;
    }
    if (i >= len || line[i] != ' ')
        return 0;
    char num[64];
    size_t k = len - i - 1;
    if (k == 0 || k >= sizeof num)
        return 0;
    memcpy(num, line + i + 1, k);
    num[k] = '\0';
    char *end;
    *v = strtod(num, &end); /* also reads +Inf and NaN */
    return *end == '\0';
}

/* Every line is a HELP, a TYPE or a well-formed sample. */
static void check_grammar(const char *text) {
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        CHECK(nl != NULL);
        double v;
        if (strncmp(p, "# HELP ", 7) && strncmp(p, "# TYPE ", 7)) {
            if (!parse_sample(p, (size_t)(nl - p), &v)) {
                fprintf(stderr, "malformed line: %.*s\n", (int)(nl - p), p);
                CHECK(0);
            }
        }
        p = nl + 1;
    }
}

static void test_validation(void) {
    tsr_metric_registry_t *r;
    CHECK(tsr_metric_registry_create(&r) == TSR_OK);
    tsr_metric_family_t *f;
    const char *const lab_le[] = {"le"};
    const char *const lab_bad[] = {"1x"};
    const char *const lab_dunder[] = {"__x"};
    const char *const lab_twice[] = {"a", "a"};
    const double up[] = {1, 2}, down[] = {2, 1}, inf[] = {1, INFINITY};
    tsr_metric_spec bad[] = {
        {TSR_METRIC_COUNTER, "no_suffix", "h", NULL, 0, NULL, 0}, /* counters end in _total */
        {TSR_METRIC_GAUGE, "1abc", "h", NULL, 0, NULL, 0},        /* name starts with a digit */
        {TSR_METRIC_GAUGE, "a-b", "h", NULL, 0, NULL, 0},
        {TSR_METRIC_GAUGE, "", "h", NULL, 0, NULL, 0},
        {TSR_METRIC_GAUGE, "g", "h", lab_bad, 1, NULL, 0},
        {TSR_METRIC_GAUGE, "g", "h", lab_dunder, 1, NULL, 0},
        {TSR_METRIC_GAUGE, "g", "h", lab_twice, 2, NULL, 0},
        {TSR_METRIC_HISTOGRAM, "h", "h", lab_le, 1, up, 2}, /* le is reserved */
        {TSR_METRIC_HISTOGRAM, "h", "h", NULL, 0, down, 2}, /* not increasing */
        {TSR_METRIC_HISTOGRAM, "h", "h", NULL, 0, inf, 2},  /* +Inf is implicit */
        {TSR_METRIC_HISTOGRAM, "h", "h", NULL, 0, NULL, 0}, /* no buckets */
        {TSR_METRIC_GAUGE, "g", "h", NULL, 0, up, 2},       /* buckets on a gauge */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(tsr_metric_registry_add(r, &bad[i], &f) == TSR_ERR_INVALID);
        CHECK(f == NULL);
    }
    tsr_metric_spec ok = {TSR_METRIC_GAUGE, "ns:g_1", "h", NULL, 0, NULL, 0};
    CHECK(tsr_metric_registry_add(r, &ok, &f) == TSR_OK && f);
    CHECK(tsr_metric_registry_add(r, &ok, &f) == TSR_ERR_INVALID); /* twice */
    /* a failed registration leaves nothing behind */
    char *text;
    size_t len;
    CHECK(tsr_metric_registry_render(r, &text, &len) == TSR_OK);
    const char *const want[] = {"# HELP ns:g_1 h", "# TYPE ns:g_1 gauge"};
    check_lines(text, want, 2);
    CHECK(len == strlen(text));
    free(text);
    /* NULL handles are ignored */
    tsr_metric_inc(NULL, 1);
    tsr_metric_set(NULL, 1);
    tsr_metric_observe(NULL, 1);
    CHECK(tsr_metric_get(NULL, NULL) == NULL);
    CHECK(tsr_metric_value(NULL) == 0);
    tsr_metric_registry_destroy(r);
    tsr_metric_registry_destroy(NULL);
}

static void test_render(void) {
    tsr_metric_registry_t *r;
    CHECK(tsr_metric_registry_create(&r) == TSR_OK);
    const char *const req_labels[] = {"method", "status"};
    const char *const path_label[] = {"path"};
    const double b[] = {0.25, 1, 2.5};
    tsr_metric_family_t *req, *g, *h, *hl, *empty;
    tsr_metric_spec s_req = {TSR_METRIC_COUNTER,
                             "t_requests_total",
                             "Calls \"done\" \\ by\nmethod",
                             req_labels,
                             2,
                             NULL,
                             0};
    tsr_metric_spec s_g = {TSR_METRIC_GAUGE, "t_gauge", "A gauge", NULL, 0, NULL, 0};
    tsr_metric_spec s_h = {TSR_METRIC_HISTOGRAM, "t_seconds", "Latency", NULL, 0, b, 3};
    tsr_metric_spec s_hl = {TSR_METRIC_HISTOGRAM, "t_labelled_seconds", "", path_label, 1, b, 3};
    tsr_metric_spec s_e = {
        TSR_METRIC_COUNTER, "t_unused_total", "Never used", path_label, 1, NULL, 0};
    CHECK(tsr_metric_registry_add(r, &s_req, &req) == TSR_OK);
    CHECK(tsr_metric_registry_add(r, &s_g, &g) == TSR_OK);
    CHECK(tsr_metric_registry_add(r, &s_h, &h) == TSR_OK);
    CHECK(tsr_metric_registry_add(r, &s_hl, &hl) == TSR_OK);
    CHECK(tsr_metric_registry_add(r, &s_e, &empty) == TSR_OK);

    const char *const v1[] = {"Generate", "OK"};
    const char *const v2[] = {"Gen\"er\\ate\nx", "INVALID_ARGUMENT"};
    tsr_metric_t *c1 = tsr_metric_get(req, v1);
    CHECK(c1 && tsr_metric_get(req, v1) == c1); /* one series per label set */
    tsr_metric_t *c2 = tsr_metric_get(req, v2);
    CHECK(c2 && c2 != c1);
    tsr_metric_inc(c1, 3);
    tsr_metric_inc(c1, 1);
    tsr_metric_inc(c2, 7);
    tsr_metric_set(c1, 100);     /* wrong type: ignored */
    tsr_metric_observe(c1, 100); /* likewise */
    CHECK(tsr_metric_value(c1) == 4 && tsr_metric_value(c2) == 7);

    tsr_metric_t *gs = tsr_metric_get(g, NULL);
    tsr_metric_set(gs, 0.1);
    CHECK(tsr_metric_value(gs) == 0.1);
    tsr_metric_inc(gs, 5); /* wrong type: ignored */

    tsr_metric_t *hs = tsr_metric_get(h, NULL);
    /* exact binary fractions, so the sum prints exactly; 0.25 is on a bound
     * (le means <=) */
    const double obs[] = {0.0625, 0.25, 0.5, 2, 4, 64};
    for (int i = 0; i < 6; i++)
        tsr_metric_observe(hs, obs[i]);
    tsr_metric_observe(hs, NAN); /* ignored */
    CHECK(tsr_metric_value(hs) == 6 && tsr_metric_hist_sum(hs) == 70.8125);
    const char *const pv[] = {"a\"b"};
    tsr_metric_observe(tsr_metric_get(hl, pv), 1e-5);

    char *text;
    size_t len;
    CHECK(tsr_metric_registry_render(r, &text, &len) == TSR_OK);
    const char *const want[] = {
        "# HELP t_requests_total Calls \"done\" \\\\ by\\nmethod",
        "# TYPE t_requests_total counter",
        "t_requests_total{method=\"Generate\",status=\"OK\"} 4",
        "t_requests_total{method=\"Gen\\\"er\\\\ate\\nx\",status=\"INVALID_ARGUMENT\"} 7",
        "# HELP t_gauge A gauge",
        "# TYPE t_gauge gauge",
        "t_gauge 0.1",
        "# HELP t_seconds Latency",
        "# TYPE t_seconds histogram",
        "t_seconds_bucket{le=\"0.25\"} 2",
        "t_seconds_bucket{le=\"1\"} 3",
        "t_seconds_bucket{le=\"2.5\"} 4",
        "t_seconds_bucket{le=\"+Inf\"} 6",
        "t_seconds_sum 70.8125",
        "t_seconds_count 6",
        "# HELP t_labelled_seconds ",
        "# TYPE t_labelled_seconds histogram",
        "t_labelled_seconds_bucket{path=\"a\\\"b\",le=\"0.25\"} 1",
        "t_labelled_seconds_bucket{path=\"a\\\"b\",le=\"1\"} 1",
        "t_labelled_seconds_bucket{path=\"a\\\"b\",le=\"2.5\"} 1",
        "t_labelled_seconds_bucket{path=\"a\\\"b\",le=\"+Inf\"} 1",
        "t_labelled_seconds_sum{path=\"a\\\"b\"} 1e-05",
        "t_labelled_seconds_count{path=\"a\\\"b\"} 1",
        "# HELP t_unused_total Never used",
        "# TYPE t_unused_total counter",
    };
    check_lines(text, want, (int)(sizeof want / sizeof want[0]));
    check_grammar(text);
    free(text);

    /* numbers as Prometheus (Go) writes them */
    tsr_metric_set(gs, INFINITY);
    CHECK(tsr_metric_registry_render(r, &text, &len) == TSR_OK);
    CHECK(strstr(text, "\nt_gauge +Inf\n"));
    free(text);
    static const struct {
        double v;
        const char *text;
    } nums[] = {
        {-2.5, "-2.5"},  {10, "10"},      {1800, "1800"},      {1e20, "100000000000000000000"},
        {1e21, "1e+21"}, {1e-5, "1e-05"}, {0.0001, "0.0001"},  {1.0 / 3, "0.3333333333333333"},
        {-0.0, "-0"},    {NAN, "NaN"},    {-INFINITY, "-Inf"}, {123456789, "123456789"}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        tsr_metric_set(gs, nums[i].v);
        CHECK(tsr_metric_registry_render(r, &text, &len) == TSR_OK);
        char line[64];
        snprintf(line, sizeof line, "\nt_gauge %s\n", nums[i].text);
        if (!strstr(text, line))
            fprintf(stderr, "gauge %g: want %s", nums[i].v, line + 1);
        CHECK(strstr(text, line));
        free(text);
    }
    tsr_metric_registry_destroy(r);
}

/* ---- threads: updates while another thread renders ---- */

enum { N_THREADS = 4, N_INC = 20000 };

typedef struct {
    tsr_metric_family_t *fam;
    tsr_metric_t *hist, *counter;
    int id;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    char id[8];
    snprintf(id, sizeof id, "w%d", a->id % 2); /* two threads share each series */
    const char *const v[] = {id};
    for (int i = 0; i < N_INC; i++) {
        tsr_metric_inc(a->counter, 1);
        tsr_metric_inc(tsr_metric_get(a->fam, v), 2);
        tsr_metric_observe(a->hist, (i % 4) * 0.5);
    }
    return NULL;
}

/* The +Inf bucket of `name` equals its _count in this text. */
static void check_hist_consistent(const char *text, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "%s_bucket{le=\"+Inf\"} ", name);
    const char *a = strstr(text, key);
    snprintf(key, sizeof key, "\n%s_count ", name);
    const char *c = strstr(text, key);
    CHECK(a && c);
    unsigned long long inf = strtoull(strchr(a, '}') + 2, NULL, 10);
    unsigned long long cnt = strtoull(c + strlen(key), NULL, 10);
    CHECK(inf == cnt);
}

static void test_threads(void) {
    tsr_metric_registry_t *r;
    CHECK(tsr_metric_registry_create(&r) == TSR_OK);
    const char *const lab[] = {"worker"};
    const double b[] = {0.5, 1};
    tsr_metric_family_t *fc, *fl, *fh;
    tsr_metric_spec sc = {TSR_METRIC_COUNTER, "x_total", "x", NULL, 0, NULL, 0};
    tsr_metric_spec sl = {TSR_METRIC_COUNTER, "y_total", "y", lab, 1, NULL, 0};
    tsr_metric_spec sh = {TSR_METRIC_HISTOGRAM, "z_seconds", "z", NULL, 0, b, 2};
    CHECK(tsr_metric_registry_add(r, &sc, &fc) == TSR_OK);
    CHECK(tsr_metric_registry_add(r, &sl, &fl) == TSR_OK);
    CHECK(tsr_metric_registry_add(r, &sh, &fh) == TSR_OK);
    worker_arg args[N_THREADS];
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (worker_arg){fl, tsr_metric_get(fh, NULL), tsr_metric_get(fc, NULL), i};
        CHECK(pthread_create(&th[i], NULL, worker, &args[i]) == 0);
    }
    int renders = 0;
    for (; renders < 50; renders++) {
        char *text;
        size_t len;
        CHECK(tsr_metric_registry_render(r, &text, &len) == TSR_OK);
        check_grammar(text);
        check_hist_consistent(text, "z_seconds");
        free(text);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    const char *const w0[] = {"w0"}, *const w1[] = {"w1"};
    CHECK(tsr_metric_value(tsr_metric_get(fc, NULL)) == N_THREADS * N_INC);
    CHECK(tsr_metric_value(tsr_metric_get(fl, w0)) == 2.0 * 2 * N_INC);
    CHECK(tsr_metric_value(tsr_metric_get(fl, w1)) == 2.0 * 2 * N_INC);
    tsr_metric_t *hs = tsr_metric_get(fh, NULL);
    CHECK(tsr_metric_value(hs) == N_THREADS * N_INC);
    CHECK(tsr_metric_hist_sum(hs) == N_THREADS * (N_INC / 4) * (0 + 0.5 + 1 + 1.5));
    char *text;
    size_t len;
    CHECK(tsr_metric_registry_render(r, &text, &len) == TSR_OK);
    /* observations 0, 0.5 | 1 | 1.5: cumulative 2/4, 3/4, all */
    char want[128];
    snprintf(want, sizeof want, "z_seconds_bucket{le=\"0.5\"} %d\n", N_THREADS * N_INC / 2);
    CHECK(strstr(text, want));
    snprintf(want, sizeof want, "z_seconds_bucket{le=\"1\"} %d\n", N_THREADS * N_INC * 3 / 4);
    CHECK(strstr(text, want));
    free(text);
    tsr_metric_registry_destroy(r);
}

/* ---- Tessera's set ---- */

static void test_serving_set(void) {
    tsr_metrics *m;
    CHECK(tsr_metrics_create(&m) == TSR_OK);
    tsr_metrics_set_info(m, "Small \"LM\"", 2, 1);
    const char *const lab[] = {"Generate", "OK"};
    tsr_metric_inc(tsr_metric_get(m->requests, lab), 1);
    tsr_metric_inc(m->finished[0], 1);
    tsr_metric_observe(m->time_to_first_token, 0.02);
    tsr_metric_set(m->kv_blocks_total, 512);
    char *text;
    size_t len;
    CHECK(tsr_metric_registry_render(m->reg, &text, &len) == TSR_OK);
    check_grammar(text);
    static const char *const families[][2] = {
        {"tessera_up", "gauge"},
        {"tessera_info", "gauge"},
        {"tessera_requests_total", "counter"},
        {"tessera_generate_finished_total", "counter"},
        {"tessera_prompt_tokens_total", "counter"},
        {"tessera_generated_tokens_total", "counter"},
        {"tessera_time_to_first_token_seconds", "histogram"},
        {"tessera_inter_token_latency_seconds", "histogram"},
        {"tessera_request_duration_seconds", "histogram"},
        {"tessera_queue_time_seconds", "histogram"},
        {"tessera_requests_running", "gauge"},
        {"tessera_requests_queued", "gauge"},
        {"tessera_kv_blocks_used", "gauge"},
        {"tessera_kv_blocks_total", "gauge"},
        {"tessera_engine_steps_total", "counter"},
        {"tessera_step_tokens", "histogram"},
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char want[160];
        snprintf(want, sizeof want, "# TYPE %s %s\n", families[i][0], families[i][1]);
        CHECK(strstr(text, want));
        snprintf(want, sizeof want, "# HELP %s ", families[i][0]);
        CHECK(strstr(text, want));
    }
    CHECK(strstr(text, "\ntessera_up 0\n"));
    CHECK(strstr(text, "\ntessera_info{version=\""));
    CHECK(strstr(text, "\",model=\"Small \\\"LM\\\"\",tp=\"2\",pp=\"1\"} 1\n"));
    CHECK(strstr(text, "\ntessera_requests_total{method=\"Generate\",status=\"OK\"} 1\n"));
    CHECK(strstr(text, "\ntessera_generate_finished_total{reason=\"stop\"} 1\n"));
    CHECK(strstr(text, "\ntessera_generate_finished_total{reason=\"length\"} 0\n"));
    CHECK(strstr(text, "\ntessera_generate_finished_total{reason=\"cancelled\"} 0\n"));
    CHECK(strstr(text, "\ntessera_generate_finished_total{reason=\"error\"} 0\n"));
    CHECK(strstr(text, "\ntessera_time_to_first_token_seconds_bucket{le=\"0.01\"} 0\n"));
    CHECK(strstr(text, "\ntessera_time_to_first_token_seconds_bucket{le=\"0.025\"} 1\n"));
    CHECK(strstr(text, "\ntessera_time_to_first_token_seconds_count 1\n"));
    CHECK(strstr(text, "\ntessera_kv_blocks_total 512\n"));
    check_hist_consistent(text, "tessera_step_tokens");
    free(text);
    tsr_metrics_free(m);
    tsr_metrics_free(NULL);
}

/* ---- the HTTP endpoint ---- */

typedef struct {
    int status;
    char headers[2048];
    char *body;
    size_t body_len;
} http_reply;

static void http(int port, const char *method, const char *path, http_reply *out) {
    memset(out, 0, sizeof *out);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    char req[256];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Length: 0\r\n\r\n",
                     method, path);
    CHECK(write(fd, req, (size_t)n) == n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    CHECK(buf);
    for (;;) {
        if (len + 1 == cap)
            CHECK((buf = realloc(buf, cap *= 2)));
        ssize_t r = read(fd, buf + len, cap - len - 1);
        CHECK(r >= 0);
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    CHECK(sscanf(buf, "HTTP/1.1 %d", &out->status) == 1);
    char *end = strstr(buf, "\r\n\r\n");
    CHECK(end);
    size_t hl = (size_t)(end - buf);
    CHECK(hl < sizeof out->headers);
    memcpy(out->headers, buf, hl);
    out->body_len = len - hl - 4;
    out->body = malloc(out->body_len + 1);
    CHECK(out->body);
    memcpy(out->body, end + 4, out->body_len + 1);
    free(buf);
}

static void test_http(void) {
    tsr_metrics *m;
    CHECK(tsr_metrics_create(&m) == TSR_OK);
    tsr_metrics_http_t *h;
    tsr_metrics_http_config cfg = {"127.0.0.1", 0, m};
    CHECK(tsr_metrics_http_start(&cfg, &h) == TSR_OK);
    int port = tsr_metrics_http_port(h);
    CHECK(port > 0);
    http_reply r;

    http(port, "GET", "/metrics", &r);
    CHECK(r.status == 200);
    CHECK(strstr(r.headers, "\r\nContent-Type: text/plain; version=0.0.4"));
    CHECK(strncmp(r.body, "# HELP tessera_up ", 18) == 0);
    CHECK(strstr(r.body, "\ntessera_up 0\n"));
    check_grammar(r.body);
    free(r.body);

    http(port, "GET", "/metrics?name[]=x", &r); /* a query string is not part of the path */
    CHECK(r.status == 200);
    free(r.body);

    http(port, "GET", "/healthz", &r);
    CHECK(r.status == 503 && strcmp(r.body, "not serving") == 0);
    free(r.body);
    tsr_metric_set(m->up, 1);
    http(port, "GET", "/healthz", &r);
    CHECK(r.status == 200 && strcmp(r.body, "ok") == 0);
    free(r.body);

    http(port, "HEAD", "/metrics", &r);
    CHECK(r.status == 200 && r.body_len == 0);
    free(r.body);

    http(port, "GET", "/", &r);
    CHECK(r.status == 404);
    free(r.body);
    http(port, "GET", "/metrics/", &r);
    CHECK(r.status == 404);
    free(r.body);

    http(port, "POST", "/metrics", &r);
    CHECK(r.status == 405);
    CHECK(strstr(r.headers, "\r\nAllow: GET, HEAD"));
    free(r.body);
    http(port, "DELETE", "/healthz", &r);
    CHECK(r.status == 405);
    free(r.body);

    /* the same port again: refused with a message naming it */
    tsr_metrics_http_t *h2 = NULL;
    tsr_metrics_http_config again = {"127.0.0.1", port, m};
    CHECK(tsr_metrics_http_start(&again, &h2) == TSR_ERR_IO && h2 == NULL);
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    CHECK(strstr(tsr_error_msg(), port_s));
    tsr_metrics_http_config bad = {"no-such-host.invalid", 0, m};
    CHECK(tsr_metrics_http_start(&bad, &h2) == TSR_ERR_INVALID && h2 == NULL);

    tsr_metrics_http_stop(h);
    tsr_metrics_http_stop(NULL);
    tsr_metrics_free(m);
}

int main(void) {
    test_validation();
    test_render();
    test_threads();
    test_serving_set();
    test_http();
    printf("test_metrics: %d checks passed\n", tu_checks);
    return 0;
}
