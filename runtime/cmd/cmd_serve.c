/* runtime/cmd/cmd_serve.c - `tessera serve`: the gRPC front end on rank 0
 * (runtime/server/), up before the weights load so health answers
 * NOT_SERVING meanwhile, the scheduler's iterations over the engine until
 * SIGTERM or SIGINT, then a graceful drain within --grace seconds. The other
 * ranks execute the engine's steps.
 *
 * What it is not: the server (runtime/server/grpc_server.h, scheduler.h);
 * this file starts and stops it. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/fs.h"
#include "runtime/cmd/cmd.h"
#include "runtime/server/grpc_api.h"
#include "runtime/server/grpc_server.h"
#include "runtime/server/metrics.h"
#include "runtime/server/scheduler.h"

static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

/* The front end's view of the engine: owned by cmd_serve, shared with the
 * gRPC thread through atomics and the queue. */
static tsr_request_queue g_queue;
static tsr_server_stats g_stats;

/* Rank 0's servers beside the session. */
typedef struct {
    tsr_grpc_server_t *server;
    tsr_metrics *metrics; /* --metrics-port: freed by cmd_serve after the servers */
    tsr_metrics_http_t *metrics_http;
} front_end;

/* The servers first (no call reaches the engine any more), then the
 * session, which stops the engine on every rank. */
static void serve_free(tsr_session *s, front_end *fe) {
    tsr_grpc_server_shutdown(fe->server);
    fe->server = NULL;
    tsr_metrics_http_stop(fe->metrics_http);
    fe->metrics_http = NULL;
    tsr_session_free(s);
}

/* A small file (PEM, token; at most 1 MiB) into a new string, trailing
 * blanks and line ends trimmed for tokens. */
static tsr_status read_small(const char *path, int trim, char **out) {
    size_t n;
    tsr_status st = tsr_fs_read_file(path, 1 << 20, out, &n);
    if (st != TSR_OK)
        return st;
    while (trim && n > 0 &&
           ((*out)[n - 1] == '\n' || (*out)[n - 1] == '\r' || (*out)[n - 1] == ' '))
        (*out)[--n] = '\0';
    return TSR_OK;
}

static tsr_status start_server(const tsr_session *s, const cmd_options *o, front_end *fe) {
    static char addr[300];
    snprintf(addr, sizeof addr, strchr(o->host, ':') ? "[%s]:%d" : "%s:%d", o->host, o->port);
    char *token = NULL, *cert = NULL, *key = NULL;
    tsr_status st = TSR_OK;
    if (o->auth_token_file)
        st = read_small(o->auth_token_file, 1, &token);
    if (st == TSR_OK && token && !token[0])
        st =
            tsr_error_set(TSR_ERR_INVALID, "the auth token file '%s' is empty", o->auth_token_file);
    if (st == TSR_OK && (!o->tls_cert != !o->tls_key))
        st = tsr_error_set(TSR_ERR_INVALID, "TLS needs both --tls-cert and --tls-key");
    if (st == TSR_OK && o->tls_cert && (st = read_small(o->tls_cert, 0, &cert)) == TSR_OK)
        st = read_small(o->tls_key, 0, &key);
    if (st == TSR_OK)
        st = tsr_request_queue_init(&g_queue, o->queue);
    if (st == TSR_OK) {
        const tsr_model_config *c = tsr_model_file_config(s->mf);
        tsr_grpc_server_config gc = {
            .listen_addr = addr,
            .auth_token = token,
            .tls_cert_pem = cert,
            .tls_key_pem = key,
            .log_prompts = o->log_prompts,
            .default_max_tokens = 256,
            .queue = &g_queue,
            .stats = &g_stats,
            .tok = s->tok,
            .model = c,
            .model_format = tsr_model_file_format(s->mf),
            .context_length = o->have_ctx ? o->ctx : 2048,
            .tp = o->tp,
            .pp = o->pp,
            .world_size = g_world,
            .metrics = fe->metrics,
        };
        st = tsr_grpc_server_start(&gc, &fe->server);
        if (st == TSR_OK)
            fprintf(stderr, "tessera: serving on %s (%s%s); loading the model\n", addr,
                    cert ? "TLS" : "plaintext", token ? ", bearer-token auth" : "");
    }
    if (st == TSR_OK && fe->metrics) {
        /* the model's own name, as GetModelInfo reports it; else the path's last part */
        const char *name = tsr_model_file_config(s->mf)->name;
        if (!name[0] || !tsr_api_utf8_valid(name, strlen(name))) {
            const char *slash = strrchr(o->model, '/');
            name = slash && slash[1] ? slash + 1 : o->model;
        }
        tsr_metrics_set_info(fe->metrics, name, o->tp, o->pp);
        tsr_metrics_http_config mc = {o->host, o->metrics_port, fe->metrics};
        st = tsr_metrics_http_start(&mc, &fe->metrics_http);
        if (st == TSR_OK)
            fprintf(stderr, "tessera: metrics on http://%s%s%s:%d/metrics\n",
                    strchr(o->host, ':') ? "[" : "", o->host, strchr(o->host, ':') ? "]" : "",
                    tsr_metrics_http_port(fe->metrics_http));
    }
    free(token);
    free(cert);
    free(key);
    return st;
}

int cmd_serve(tsr_comm_grid *grid, const cmd_options *o) {
    /* Every rank ignores SIGTERM/SIGINT's default: rank 0 turns them into a
     * graceful shutdown and tells the others; they must not die first. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    tsr_session s = {0};
    front_end fe = {0};
    /* the metrics live on rank 0, from before the front end starts to after
     * it stops; if rank 0 cannot make them, every rank stops here together */
    tsr_status st = TSR_OK;
    if (g_rank == 0 && o->metrics_port > 0)
        st = tsr_metrics_create(&fe.metrics);
    tsr_metrics *metrics = fe.metrics;
    if (tsr_comm_agree(grid->world, st) != TSR_OK)
        return g_rank == 0 ? cmd_fail(st) : 1;
    int ctx = o->have_ctx ? o->ctx : 2048;
    st = tsr_session_open(&s, grid, o->model);
    /* the front end comes up before the weights: health says NOT_SERVING
     * while they load; if it cannot, the peers find out through the
     * engine's agreement */
    if (st == TSR_OK && g_rank == 0)
        st = start_server(&s, o, &fe);
    if (st == TSR_OK) {
        tsr_plan_config pc;
        tsr_engine_config ec;
        cmd_session_config(o, ctx, &pc, &ec);
        ec.max_seqs = o->max_seqs;
        int positions = o->kv_positions ? o->kv_positions : o->max_seqs * ctx / 2;
        if (positions < ctx) {
            /* the pool always holds one whole context, so that every request
             * the context admits (prompt + max_tokens <= ctx) can run */
            if (g_rank == 0)
                fprintf(stderr,
                        "tessera: --kv-positions %d is below the context (%d); the KV pool "
                        "holds %d positions\n",
                        positions, ctx, ctx);
            positions = ctx;
        }
        ec.kv_blocks = (positions + ec.block_size - 1) / ec.block_size;
        st = tsr_session_start_engine(&s, &pc, &ec, o->adapter);
    }
    if (st != TSR_OK) {
        int rc = cmd_fail_open(&s, st);
        serve_free(&s, &fe);
        tsr_metrics_free(metrics);
        if (g_rank == 0)
            tsr_request_queue_free(&g_queue);
        return rc;
    }
    if (g_rank != 0)
        return cmd_run_worker(&s);

    tsr_scheduler_t *sched = NULL;
    tsr_sched_config sc = {o->max_batch_tokens,
                           0.05,
                           metrics,
                           o->model,
                           o->host_sampling,
                           (long long)o->adapter_memory_mib << 20};
    st = tsr_scheduler_create(&s.engine, s.tok, &g_queue, &g_stats, &sc, &sched);
    if (st != TSR_OK) {
        int rc = cmd_fail(st);
        serve_free(&s, &fe);
        tsr_metrics_free(metrics);
        tsr_request_queue_free(&g_queue);
        return rc;
    }
    atomic_store(&g_stats.ready, 1);
    if (metrics)
        tsr_metric_set(metrics->up, 1); /* /healthz: 200 */
    fprintf(stderr,
            "tessera: ready (tp=%d pp=%d, %d sequences x %d positions, %d KV blocks of %d; %s, "
            "%s activations, %s between ranks)\n",
            o->tp, o->pp, s.engine.cfg.max_seqs, s.engine.kv.max_ctx, s.engine.kv.n_blocks,
            s.engine.kv.block_size, tsr_backend_name(s.engine.be),
            tsr_dtype_name(tsr_backend_act_dtype(s.engine.be)), tsr_comm_kind_name(o->comm));
    while (!g_signal && st == TSR_OK)
        st = tsr_scheduler_iterate(sched);
    if (st != TSR_OK) {
        /* an engine failure: peers may be mid-step; health goes NOT_SERVING
         * and the job ends */
        atomic_store(&g_stats.engine_failed, 1);
        if (metrics)
            tsr_metric_set(metrics->up, 0);
        cmd_fail(st);
        tsr_comm_abort(grid, 1, "engine step failed while serving");
    }
    /* graceful shutdown: no new calls, in-flight ones get the grace period */
    fprintf(stderr, "tessera: %s: draining %d requests (grace %.0f s)\n",
            g_signal == SIGINT ? "SIGINT" : "SIGTERM", tsr_scheduler_pending(sched), o->grace_s);
    tsr_grpc_server_stop_accepting(fe.server);
    if (metrics)
        tsr_metric_set(metrics->up, 0); /* /healthz: 503, as gRPC health turns NOT_SERVING */
    tsr_request_queue_close(&g_queue);
    double until = tsr_now_s() + o->grace_s;
    while (st == TSR_OK && tsr_scheduler_pending(sched) > 0 && tsr_now_s() < until)
        st = tsr_scheduler_iterate(sched);
    tsr_scheduler_cancel_all(sched);
    if (st == TSR_OK)
        st = tsr_scheduler_iterate(sched); /* releases the cancelled slots */
    /* let the front end deliver the last events before it is torn down */
    double flush_until = tsr_now_s() + 2.0;
    while (tsr_grpc_server_active_calls(fe.server) > 0 && tsr_now_s() < flush_until) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    tsr_scheduler_free(sched);
    serve_free(&s, &fe); /* the servers, then the engine on every rank */
    tsr_metrics_free(metrics);
    tsr_request_queue_free(&g_queue);
    fprintf(stderr, "tessera: stopped\n");
    return st == TSR_OK ? 0 : 1;
}
