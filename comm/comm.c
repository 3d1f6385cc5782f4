/* comm/comm.c - MPI start-up, the rank grid and its groups, the public
 * wrappers that validate arguments before dispatching to a group's backend,
 * and the control plane (idle broadcast, error agreement, abort), which is
 * MPI on every backend.
 *
 * What it is not: a backend. Data moves in comm_mpi.c and comm_nccl.c. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "comm/comm_internal.h"

/* ---- failures ---- */

/* "comm/comm_mpi.c" rather than the absolute path CMake compiles with. */
static const char *short_path(const char *file) {
    const char *last = strrchr(file, '/');
    if (!last)
        return file;
    for (const char *p = last - 1; p >= file; p--)
        if (*p == '/')
            return p + 1;
    return file;
}

tsr_status tsr_comm_fail_(tsr_status s, const char *stmt, const char *file, int line,
                          const tsr_comm_where *w, const char *lib_msg) {
    tsr_error_set(s, "%.200s failed at %s:%d on rank %d/%d (%s): %s", stmt, short_path(file), line,
                  w->rank, w->size, w->host, lib_msg);
    TSR_LOG_E("%s", tsr_error_msg());
    return s;
}

tsr_status tsr_comm_check_mpi_(int rc, const char *stmt, const char *file, int line,
                               const tsr_comm_where *w) {
    if (rc == MPI_SUCCESS)
        return TSR_OK;
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "MPI error code %d", rc);
    return tsr_comm_fail_(TSR_ERR_COMM, stmt, file, line, w, msg);
}

/* ---- element types ---- */

size_t tsr_comm_dtype_size(int dtype) {
    switch (dtype) {
    case TSR_F32:
    case TSR_COMM_I32: return 4;
    case TSR_F16:
    case TSR_BF16: return 2;
    }
    return 0;
}

/* ---- MPI start-up ---- */

/* Whether tsr_comm_mpi_init called MPI_Init_thread, so that finalize undoes
 * only what init did. The one piece of process state in comm/: written once
 * by main's thread before any other thread exists. */
static int comm_started_mpi;

/* Fills `w` from MPI_COMM_WORLD. MPI must be initialised. */
static void where_init(tsr_comm_where *w) {
    w->rank = 0;
    w->size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &w->size);
    char name[MPI_MAX_PROCESSOR_NAME + 1] = "";
    int len = 0;
    if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS && gethostname(name, sizeof name) != 0)
        snprintf(name, sizeof name, "unknown-host");
    name[sizeof name - 1] = '\0';
    size_t n = strlen(name); /* a longer host name is cut, not an error */
    if (n >= sizeof w->host)
        n = sizeof w->host - 1;
    memcpy(w->host, name, n);
    w->host[n] = '\0';
}

tsr_status tsr_comm_mpi_init(int *argc, char ***argv, int *world_rank, int *world_size) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized)
        return tsr_error_set(TSR_ERR_INVALID, "MPI was already finalised; it cannot start again");
    if (!initialized) {
        int provided = 0;
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS)
            return tsr_error_set(TSR_ERR_COMM, "MPI_Init_thread failed (error code %d)", rc);
        comm_started_mpi = 1;
        if (provided < MPI_THREAD_FUNNELED) {
            MPI_Finalize();
            comm_started_mpi = 0;
            return tsr_error_set(TSR_ERR_UNSUPPORTED,
                                 "this MPI provides thread level %d; Tessera needs "
                                 "MPI_THREAD_FUNNELED (%d)",
                                 provided, MPI_THREAD_FUNNELED);
        }
    }
    /* Failures come back as codes we report, instead of killing the job from
     * inside MPI. Communicators made from WORLD inherit this. */
    tsr_comm_where w;
    where_init(&w);
    TSR_TRY(TSR_MPI(&w, MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN)));
    if (world_rank)
        *world_rank = w.rank;
    if (world_size)
        *world_size = w.size;
    return TSR_OK;
}

void tsr_comm_mpi_finalize(void) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (comm_started_mpi && !finalized)
        MPI_Finalize();
    comm_started_mpi = 0;
}

/* ---- groups ---- */

static void group_free(tsr_comm_group_t *g) {
    if (!g)
        return;
    if (g->iface && g->iface->release)
        g->iface->release(g);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        tsr_comm_mpi_ops_free(&g->ops);
        if (g->comm != MPI_COMM_NULL)
            MPI_Comm_free(&g->comm);
    }
    free(g);
}

/* Wraps `comm` (owned from here on, freed on failure) in an MPI group. */
static tsr_status group_new(MPI_Comm comm, const char *name, const tsr_comm_where *w,
                            tsr_comm_group_t **out) {
    *out = NULL;
    tsr_comm_group_t *g = calloc(1, sizeof *g);
    if (!g) {
        MPI_Comm_free(&comm);
        return tsr_error_set(TSR_ERR_NOMEM, "allocating the %s group", name);
    }
    g->iface = &tsr_comm_mpi_iface;
    g->kind = TSR_COMM_MPI;
    g->name = name;
    g->comm = comm;
    g->where = *w;
    g->ops.sum_f16 = g->ops.max_f16 = g->ops.sum_bf16 = g->ops.max_bf16 = MPI_OP_NULL;
    tsr_status st;
    TSR_CHECK_GOTO(st, TSR_MPI(w, MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN)));
    TSR_CHECK_GOTO(st, TSR_MPI(w, MPI_Comm_rank(comm, &g->rank)));
    TSR_CHECK_GOTO(st, TSR_MPI(w, MPI_Comm_size(comm, &g->size)));
    TSR_CHECK_GOTO(st, tsr_comm_mpi_ops_init(&g->ops, w));
    *out = g;
    return TSR_OK;
cleanup:
    group_free(g);
    return st;
}

int tsr_comm_rank(const tsr_comm_group_t *g) { return g ? g->rank : -1; }
int tsr_comm_size(const tsr_comm_group_t *g) { return g ? g->size : 0; }
tsr_comm_kind tsr_comm_kind_of(const tsr_comm_group_t *g) { return g ? g->kind : TSR_COMM_MPI; }

const char *tsr_comm_kind_name(tsr_comm_kind kind) {
    switch (kind) {
    case TSR_COMM_MPI: return "mpi";
    case TSR_COMM_NCCL: return "nccl";
    }
    return "unknown";
}

tsr_status tsr_comm_kind_parse(const char *s, tsr_comm_kind *out) {
    if (s && strcmp(s, "mpi") == 0)
        *out = TSR_COMM_MPI;
    else if (s && strcmp(s, "nccl") == 0)
        *out = TSR_COMM_NCCL;
    else
        return tsr_error_set(TSR_ERR_INVALID,
                             "unknown communication backend \"%s\" (want mpi or nccl)",
                             s ? s : "(null)");
    return TSR_OK;
}

int tsr_comm_has_nccl(void) {
#ifdef TSR_HAVE_NCCL
    return 1;
#else
    return 0;
#endif
}

#ifndef TSR_HAVE_NCCL
void *tsr_comm_stream(const tsr_comm_group_t *g) { return NULL; }
#endif

/* ---- the grid ---- */

void tsr_comm_grid_free(tsr_comm_grid *g) {
    if (!g)
        return;
#ifdef TSR_HAVE_NCCL
    if (g->world)
        tsr_comm_watchdog_stop(g->world->watchdog);
#endif
    group_free(g->tp_group);
    group_free(g->pp_group);
    group_free(g->world);
    memset(g, 0, sizeof *g);
}

/* Checks the configuration; the same answer on every rank, since it depends
 * only on the config and the world size. */
static tsr_status grid_check(const tsr_comm_grid_config *c, int world) {
    if (c->tp < 1 || c->pp < 1)
        return tsr_error_set(TSR_ERR_INVALID, "tp (%d) and pp (%d) must be at least 1", c->tp,
                             c->pp);
    long long per_replica = (long long)c->tp * c->pp;
    if (world % per_replica != 0)
        return tsr_error_set(TSR_ERR_INVALID,
                             "tp %d x pp %d = %lld ranks per replica does not divide the world "
                             "size %d",
                             c->tp, c->pp, per_replica, world);
    if (c->kind != TSR_COMM_MPI && c->kind != TSR_COMM_NCCL)
        return tsr_error_set(TSR_ERR_INVALID, "unknown communication backend %d", (int)c->kind);
    if (c->kind == TSR_COMM_NCCL && !tsr_comm_has_nccl())
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "the nccl backend was asked for, but this build has no NCCL "
                             "(configure with -DTESSERA_CUDA=ON where CUDA and nccl.h are "
                             "installed, or use the mpi backend)");
    if (c->device < -1)
        return tsr_error_set(TSR_ERR_INVALID,
                             "CUDA device %d (want -1 for the local rank, or >= 0)", c->device);
    if (!(c->watchdog_timeout_s >= 0) || c->watchdog_timeout_s > 1e9)
        return tsr_error_set(TSR_ERR_INVALID,
                             "watchdog timeout %g s (want 0 for the default, or "
                             "a positive number of seconds)",
                             c->watchdog_timeout_s);
    return TSR_OK;
}

tsr_status tsr_comm_grid_init(tsr_comm_grid *g, const tsr_comm_grid_config *cfg) {
    if (!g)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_comm_grid_init: grid is NULL");
    memset(g, 0, sizeof *g);
    tsr_comm_grid_config c = TSR_COMM_GRID_CONFIG_INIT;
    if (cfg)
        c = *cfg;
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_comm_grid_init: MPI is not running (call "
                                              "tsr_comm_mpi_init first)");
    tsr_comm_where w;
    where_init(&w);
    TSR_TRY(grid_check(&c, w.size));

    g->world_rank = w.rank;
    g->world_size = w.size;
    g->tp = c.tp;
    g->pp = c.pp;
    g->dp = w.size / (c.tp * c.pp);
    g->tp_rank = w.rank % c.tp;
    g->pp_rank = (w.rank / c.tp) % c.pp;
    g->dp_rank = w.rank / (c.tp * c.pp);
    _Static_assert(sizeof g->host == sizeof w.host, "host name sizes");
    memcpy(g->host, w.host, sizeof g->host);

    /* Collective MPI calls: every rank makes each of them, in this order. A
     * failure of one of them means MPI itself is broken; the job should then
     * be aborted (docs/comm.md). */
    tsr_status st;
    MPI_Comm node = MPI_COMM_NULL, world = MPI_COMM_NULL, tp = MPI_COMM_NULL, pp = MPI_COMM_NULL;
    TSR_CHECK_GOTO(st, TSR_MPI(&w, MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w.rank,
                                                       MPI_INFO_NULL, &node)));
    TSR_CHECK_GOTO(st, TSR_MPI(&w, MPI_Comm_rank(node, &g->local_rank)));
    TSR_CHECK_GOTO(st, TSR_MPI(&w, MPI_Comm_size(node, &g->local_size)));
    TSR_CHECK_GOTO(st, TSR_MPI(&w, MPI_Comm_free(&node)));
    TSR_CHECK_GOTO(st, TSR_MPI(&w, MPI_Comm_dup(MPI_COMM_WORLD, &world)));
    /* TP groups: same (dp, pp), ordered by tp_rank. PP groups: same (dp, tp),
     * ordered by pp_rank. */
    TSR_CHECK_GOTO(st, TSR_MPI(&w, MPI_Comm_split(MPI_COMM_WORLD, g->dp_rank * c.pp + g->pp_rank,
                                                  g->tp_rank, &tp)));
    TSR_CHECK_GOTO(st, TSR_MPI(&w, MPI_Comm_split(MPI_COMM_WORLD, g->dp_rank * c.tp + g->tp_rank,
                                                  g->pp_rank, &pp)));

    /* Local steps (allocation, MPI_Op_create): the status is agreed below. */
    tsr_status local = group_new(world, "world", &w, &g->world);
    world = MPI_COMM_NULL;
    tsr_status s2 = group_new(tp, "tp", &w, &g->tp_group);
    tp = MPI_COMM_NULL;
    tsr_status s3 = group_new(pp, "pp", &w, &g->pp_group);
    pp = MPI_COMM_NULL;
    if (local == TSR_OK)
        local = s2 != TSR_OK ? s2 : s3;
    int failed = -1;
    st = tsr_comm_mpi_agree(MPI_COMM_WORLD, &w, local, &failed);

#ifdef TSR_HAVE_NCCL
    if (st == TSR_OK && c.kind == TSR_COMM_NCCL) {
        /* Every rank attaches both groups. Each attach agrees on the
         * members' prior status first, so a tp group that failed makes the pp
         * groups it meets skip their set-up too, and the world agreement
         * below carries the failure everywhere. */
        int device = c.device >= 0 ? c.device : g->local_rank;
        local = tsr_comm_nccl_attach(g->tp_group, device, TSR_OK);
        local = tsr_comm_nccl_attach(g->pp_group, device, local);
        if (local == TSR_OK) {
            tsr_comm_group_t *groups[2] = {g->tp_group, g->pp_group};
            double timeout = c.watchdog_timeout_s > 0 ? c.watchdog_timeout_s : 300.0;
            local = tsr_comm_watchdog_start(groups, 2, timeout, &w, &g->world->watchdog);
        }
        st = tsr_comm_mpi_agree(MPI_COMM_WORLD, &w, local, &failed);
    }
#endif

    if (st != TSR_OK && local == TSR_OK && failed >= 0)
        tsr_error_set(st, "world rank %d failed while building the grid (%s); its log says why",
                      failed, tsr_status_str(st));
    if (st == TSR_OK)
        return TSR_OK;
cleanup:
    if (node != MPI_COMM_NULL)
        MPI_Comm_free(&node);
    node = MPI_COMM_NULL;
    {
        MPI_Comm *left[] = {&world, &tp, &pp};
        for (size_t i = 0; i < 3; i++)
            if (*left[i] != MPI_COMM_NULL)
                MPI_Comm_free(left[i]);
    }
    tsr_comm_grid_free(g);
    return st;
}

/* ---- argument checks shared by the wrappers ---- */

static tsr_status check_group(const tsr_comm_group_t *g, const char *fn) {
    if (!g)
        return tsr_error_set(TSR_ERR_INVALID, "%s: group is NULL", fn);
    return TSR_OK;
}

static tsr_status check_dtype(int dtype, const char *fn) {
    if (tsr_comm_dtype_size(dtype) == 0)
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "%s: element type %d is not carried by collectives (f32, f16, bf16, "
                             "i32 are)",
                             fn, dtype);
    return TSR_OK;
}

static tsr_status check_buf(const void *p, size_t count, const char *fn, const char *what) {
    if (count > 0 && !p)
        return tsr_error_set(TSR_ERR_INVALID, "%s: %s is NULL with %zu elements", fn, what, count);
    return TSR_OK;
}

static tsr_status check_rank(const tsr_comm_group_t *g, int r, const char *fn, const char *what) {
    if (r < 0 || r >= g->size)
        return tsr_error_set(TSR_ERR_INVALID, "%s: %s %d is outside the %s group of %d ranks", fn,
                             what, r, g->name, g->size);
    return TSR_OK;
}

/* Whether [a, a+na) and [b, b+nb) share a byte. Host and device addresses
 * are both plain integers under CUDA's unified addressing. */
static int overlaps(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return na && nb && x < y + nb && y < x + na;
}

/* element count * size, or 0 with TSR_ERR_RANGE on overflow. */
static tsr_status bytes_of(size_t count, size_t mult, int dtype, const char *fn, size_t *out) {
    size_t es = tsr_comm_dtype_size(dtype);
    if (mult && count > SIZE_MAX / mult / es)
        return tsr_error_set(TSR_ERR_RANGE, "%s: %zu x %zu elements overflow", fn, mult, count);
    *out = count * mult * es;
    return TSR_OK;
}

/* ---- data plane ---- */

tsr_status tsr_comm_allreduce(tsr_comm_group_t *g, const void *send, void *recv, size_t count,
                              int dtype, tsr_comm_op op) {
    static const char fn[] = "all-reduce";
    TSR_TRY(check_group(g, fn));
    TSR_TRY(check_dtype(dtype, fn));
    if (op != TSR_COMM_SUM && op != TSR_COMM_MAX)
        return tsr_error_set(TSR_ERR_INVALID, "%s: unknown operation %d", fn, (int)op);
    TSR_TRY(check_buf(send, count, fn, "send buffer"));
    TSR_TRY(check_buf(recv, count, fn, "receive buffer"));
    size_t bytes = 0;
    TSR_TRY(bytes_of(count, 1, dtype, fn, &bytes));
    if (send != recv && overlaps(send, bytes, recv, bytes))
        return tsr_error_set(TSR_ERR_INVALID,
                             "%s: send and receive buffers overlap without being the same "
                             "(in place means send == recv)",
                             fn);
    if (count == 0)
        return TSR_OK;
    return g->iface->allreduce(g, send, recv, count, dtype, op);
}

tsr_status tsr_comm_allreduce_argmax(tsr_comm_group_t *g, float *value, int32_t *index, size_t n) {
    static const char fn[] = "argmax all-reduce";
    TSR_TRY(check_group(g, fn));
    TSR_TRY(check_buf(value, n, fn, "value"));
    TSR_TRY(check_buf(index, n, fn, "index"));
    if (n == 0)
        return TSR_OK;
    return g->iface->allreduce_argmax(g, value, index, n);
}

tsr_status tsr_comm_allgather(tsr_comm_group_t *g, const void *send, void *recv, size_t count,
                              int dtype) {
    static const char fn[] = "all-gather";
    TSR_TRY(check_group(g, fn));
    TSR_TRY(check_dtype(dtype, fn));
    TSR_TRY(check_buf(send, count, fn, "send buffer"));
    TSR_TRY(check_buf(recv, count, fn, "receive buffer"));
    size_t bytes = 0, total = 0;
    TSR_TRY(bytes_of(count, 1, dtype, fn, &bytes));
    TSR_TRY(bytes_of(count, (size_t)g->size, dtype, fn, &total));
    if (overlaps(send, bytes, recv, total))
        return tsr_error_set(TSR_ERR_INVALID, "%s: send and receive buffers overlap", fn);
    if (count == 0)
        return TSR_OK;
    return g->iface->allgather(g, send, recv, count, dtype);
}

tsr_status tsr_comm_broadcast(tsr_comm_group_t *g, void *buf, size_t count, int dtype, int root) {
    static const char fn[] = "broadcast";
    TSR_TRY(check_group(g, fn));
    TSR_TRY(check_dtype(dtype, fn));
    TSR_TRY(check_buf(buf, count, fn, "buffer"));
    TSR_TRY(check_rank(g, root, fn, "root"));
    if (count == 0)
        return TSR_OK;
    return g->iface->broadcast(g, buf, count, dtype, root);
}

static tsr_status check_p2p(tsr_comm_group_t *g, const void *buf, size_t count, int dtype, int peer,
                            int tag, const char *fn) {
    TSR_TRY(check_group(g, fn));
    TSR_TRY(check_dtype(dtype, fn));
    TSR_TRY(check_buf(buf, count, fn, "buffer"));
    TSR_TRY(check_rank(g, peer, fn, "peer"));
    if (peer == g->rank)
        return tsr_error_set(TSR_ERR_INVALID, "%s: peer %d is this rank", fn, peer);
    if (tag < 0 || tag > 32767) /* 32767: the least MPI_TAG_UB the standard allows */
        return tsr_error_set(TSR_ERR_INVALID, "%s: tag %d outside [0, 32767]", fn, tag);
    return TSR_OK;
}

tsr_status tsr_comm_send(tsr_comm_group_t *g, const void *buf, size_t count, int dtype, int peer,
                         int tag) {
    TSR_TRY(check_p2p(g, buf, count, dtype, peer, tag, "send"));
    return g->iface->send(g, buf, count, dtype, peer, tag);
}

tsr_status tsr_comm_recv(tsr_comm_group_t *g, void *buf, size_t count, int dtype, int peer,
                         int tag) {
    TSR_TRY(check_p2p(g, buf, count, dtype, peer, tag, "receive"));
    return g->iface->recv(g, buf, count, dtype, peer, tag);
}

tsr_status tsr_comm_barrier(tsr_comm_group_t *g) {
    TSR_TRY(check_group(g, "barrier"));
    return g->iface->barrier(g);
}

/* ---- control plane ---- */

tsr_status tsr_comm_bcast_idle(tsr_comm_group_t *g, void *buf, size_t bytes, int root) {
    static const char fn[] = "idle broadcast";
    TSR_TRY(check_group(g, fn));
    TSR_TRY(check_buf(buf, bytes, fn, "buffer"));
    TSR_TRY(check_rank(g, root, fn, "root"));
    if (bytes > (size_t)INT32_MAX)
        return tsr_error_set(TSR_ERR_RANGE, "%s: %zu bytes exceed MPI's per-call limit", fn, bytes);
    MPI_Request req = MPI_REQUEST_NULL;
    TSR_TRY(TSR_MPI(&g->where, MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, g->comm, &req)));
    /* Open MPI progresses a non-blocking collective only inside MPI calls,
     * so every member (the root too: a large message needs it) keeps
     * testing, but sleeps between tests instead of spinning. The first test
     * is immediate; in a busy job the data is usually already there. */
    long sleep_ns = 50 * 1000;
    for (;;) {
        int done = 0;
        TSR_TRY(TSR_MPI(&g->where, MPI_Test(&req, &done, MPI_STATUS_IGNORE)));
        if (done)
            return TSR_OK;
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL); /* an early wake-up (signal) is just an early test */
        sleep_ns = sleep_ns * 2 > 2000 * 1000 ? 2000 * 1000 : sleep_ns * 2;
    }
}

tsr_status tsr_comm_agree(tsr_comm_group_t *g, tsr_status local) {
    TSR_TRY(check_group(g, "agree"));
    if ((int)local < TSR_OK || local > TSR_ERR_LAST)
        local = TSR_ERR_INTERNAL; /* an out-of-range status is a bug, and still a failure */
    int failed = -1;
    tsr_status st = tsr_comm_mpi_agree(g->comm, &g->where, local, &failed);
    if (st != TSR_OK && local == TSR_OK && failed >= 0)
        tsr_error_set(st, "world rank %d of the %s group failed (%s); its log says why", failed,
                      g->name, tsr_status_str(st));
    return st; /* a failing rank keeps its own message */
}

_Noreturn void tsr_comm_abort(const tsr_comm_grid *g, int code, const char *why) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    int running = initialized && !finalized;
    tsr_comm_where w = {0, 1, ""};
    if (g && g->world)
        w = g->world->where;
    else if (running)
        where_init(&w);
    fprintf(stderr, "[rank %d/%d %s] aborting the job (exit code %d): %s\n", w.rank, w.size, w.host,
            code, why ? why : "(no reason given)");
    fflush(stderr);
#ifdef TSR_HAVE_NCCL
    /* The watchdog polls the communicators we are about to abort (freeing
     * them): stop it first. */
    if (g && g->world && g->world->watchdog) {
        tsr_comm_watchdog_stop(g->world->watchdog);
        g->world->watchdog = NULL;
    }
#endif
    if (g) {
        /* NCCL kernels may be spinning on a dead peer: stop them first, or
         * the process can hang in the driver instead of exiting. */
        tsr_comm_group_t *groups[] = {g->tp_group, g->pp_group, g->world};
        for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
            if (groups[i] && groups[i]->iface && groups[i]->iface->abort)
                groups[i]->iface->abort(groups[i]);
    }
    if (running)
        MPI_Abort(MPI_COMM_WORLD, code);
    _Exit(code); /* MPI_Abort does not return; without MPI there is one process */
}
