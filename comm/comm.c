/* comm/comm.c - MPI start-up, the rank grid and its groups, the public
 * wrappers that validate arguments before dispatching to a group's backend,
 * and the control plane (idle broadcast, error agreement, abort), which is
 * MPI on every backend.
 *
 * What it is not: a backend. Data moves in comm_mpi.c and comm_nccl.c. */
#include <stdarg.h>
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
    free(g->world_ranks);
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
    /* The world rank of each member, for messages that name a peer. */
    g->world_ranks = malloc((size_t)g->size * 2 * sizeof *g->world_ranks);
    if (!g->world_ranks) {
        st = tsr_error_set(TSR_ERR_NOMEM, "the %s group's rank table", name);
        goto cleanup;
    }
    {
        int *mine = g->world_ranks + g->size;
        for (int i = 0; i < g->size; i++)
            mine[i] = i;
        MPI_Group gg = MPI_GROUP_NULL, wg = MPI_GROUP_NULL;
        st = TSR_MPI(w, MPI_Comm_group(comm, &gg));
        if (st == TSR_OK)
            st = TSR_MPI(w, MPI_Comm_group(MPI_COMM_WORLD, &wg));
        if (st == TSR_OK)
            st = TSR_MPI(w, MPI_Group_translate_ranks(gg, g->size, mine, wg, g->world_ranks));
        if (gg != MPI_GROUP_NULL)
            MPI_Group_free(&gg);
        if (wg != MPI_GROUP_NULL)
            MPI_Group_free(&wg);
        if (st != TSR_OK)
            goto cleanup;
    }
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

static void shared_free(tsr_comm_shared *sh) {
    if (!sh)
        return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && sh->side != MPI_COMM_NULL)
        MPI_Comm_free(&sh->side);
    free(sh->hosts);
    free(sh);
}

/* The grid's shared state: the census communicator and every rank's host.
 * Collective over MPI_COMM_WORLD: every rank calls it, whatever its status
 * so far, and the caller agrees on the result. */
static tsr_status shared_new(double timeout_s, const tsr_comm_where *w, tsr_comm_shared **out) {
    *out = NULL;
    tsr_comm_shared *sh = calloc(1, sizeof *sh);
    char(*hosts)[64] = calloc((size_t)w->size, sizeof *hosts);
    tsr_status st = TSR_OK;
    MPI_Comm side = MPI_COMM_NULL;
    /* The collectives run even when the allocations failed, so that no rank
     * is left waiting in them. */
    char dummy[64];
    tsr_status s1 = TSR_MPI(w, MPI_Comm_dup(MPI_COMM_WORLD, &side));
    tsr_status s2 = TSR_MPI(w, MPI_Allgather(w->host, 64, MPI_CHAR, hosts ? (void *)hosts : dummy,
                                             hosts ? 64 : 0, MPI_CHAR, MPI_COMM_WORLD));
    if (!sh || !hosts)
        st = tsr_error_set(TSR_ERR_NOMEM, "the grid's table of %d hosts", w->size);
    else if (s1 != TSR_OK)
        st = s1;
    else if (s2 != TSR_OK)
        st = s2;
    else
        st = TSR_MPI(w, MPI_Comm_set_errhandler(side, MPI_ERRORS_RETURN));
    if (st != TSR_OK) {
        if (side != MPI_COMM_NULL)
            MPI_Comm_free(&side);
        free(hosts);
        free(sh);
        return st;
    }
    for (int i = 0; i < w->size; i++)
        hosts[i][63] = '\0';
    sh->timeout_s = timeout_s;
    sh->side = side;
    sh->world_size = w->size;
    sh->hosts = hosts;
    *out = sh;
    return TSR_OK;
}

void tsr_comm_grid_free(tsr_comm_grid *g) {
    if (!g)
        return;
    tsr_comm_shared *sh = g->world ? g->world->sh : NULL;
#ifdef TSR_HAVE_NCCL
    if (g->world)
        tsr_comm_watchdog_stop(g->world->watchdog);
#endif
    group_free(g->tp_group);
    group_free(g->pp_group);
    group_free(g->world);
    shared_free(sh);
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
    if (!(c->timeout_s >= 0) || c->timeout_s > TSR_COMM_TIMEOUT_MAX_S)
        return tsr_error_set(TSR_ERR_INVALID,
                             "communication timeout %g s (want 0 for no deadline, or a number of "
                             "seconds up to %g)",
                             c->timeout_s, TSR_COMM_TIMEOUT_MAX_S);
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
    tsr_comm_shared *sh = NULL;
    tsr_status s4 = shared_new(c.timeout_s, &w, &sh); /* collective: every rank calls it */
    if (local == TSR_OK)
        local = s2 != TSR_OK ? s2 : s3 != TSR_OK ? s3 : s4;
    if (local == TSR_OK) {
        tsr_comm_group_t *groups[3] = {g->world, g->tp_group, g->pp_group};
        for (int i = 0; i < 3; i++) {
            groups[i]->sh = sh;
            sh->groups[i] = groups[i];
        }
    } else if (g->world && sh) {
        g->world->sh = sh; /* freed with the grid */
    } else {
        shared_free(sh);
    }
    int failed = -1;
    st = tsr_comm_mpi_agree(NULL, MPI_COMM_WORLD, &w, local, &failed);

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
            /* The engine thread enforces the deadline itself (it polls the
             * stream); the watchdog is the backstop for a thread stuck
             * inside a CUDA call, after the census had its turn. */
            double timeout =
                c.timeout_s > 0 ? c.timeout_s + tsr_comm_grace_s_(c.timeout_s) + 10.0 : 0.0;
            local = tsr_comm_watchdog_start(groups, 2, timeout, &w, &g->world->watchdog);
        }
        st = tsr_comm_mpi_agree(NULL, MPI_COMM_WORLD, &w, local, &failed);
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

/* ---- waits and deadlines ---- */

/* The wait loop's pace: spin on MPI_Test for SPIN_NS (a decode all-reduce
 * completes there), then sleep between tests, from SLEEP0_NS doubling to
 * SLEEP_MAX_NS. The idle broadcast does not spin and sleeps longer. */
enum {
    SPIN_NS = 1000 * 1000,
    SLEEP0_NS = 20 * 1000,
    SLEEP_MAX_NS = 1000 * 1000,
    IDLE_SLEEP0_NS = 50 * 1000,
    IDLE_SLEEP_MAX_NS = 2000 * 1000,
};

/* Census messages on the grid's side communicator: six ints
 * {op, group (0 world, 1 tp, 2 pp), peer world rank or -1, ms waited, seq,
 *  1 when that wait is past the deadline too}. */
enum { CENSUS_PING = 1, CENSUS_ANSWER = 2, CENSUS_INTS = 6 };

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double tsr_comm_grace_s_(double timeout_s) {
    double g = timeout_s / 4;
    return g < 1.0 ? 1.0 : g > 10.0 ? 10.0 : g;
}

static const char *wait_op_name(int op) {
    static const char *names[TSR_WAIT_N_] = {
        "all-reduce",
        "argmax all-reduce",
        "all-gather",
        "broadcast",
        "send",
        "receive",
        "barrier",
        "status agreement",
        "idle wait for the next step",
        "NCCL collective",
    };
    return op >= 0 && op < TSR_WAIT_N_ ? names[op] : "unknown operation";
}

static int group_index(const tsr_comm_group_t *g) {
    for (int i = 0; i < 3; i++)
        if (g->sh && g->sh->groups[i] == g)
            return i;
    return 0;
}

static const char *group_name_of(int i) {
    static const char *names[3] = {"world", "tp", "pp"};
    return i >= 0 && i < 3 ? names[i] : "?";
}

/* This rank's census answer: what it is waiting in, since t0. */
static void census_state(const tsr_comm_group_t *g, tsr_comm_wait_op op, int peer, int64_t t0,
                         int out[CENSUS_INTS]) {
    double ms = (double)(now_ns() - t0) * 1e-6;
    out[0] = (int)op;
    out[1] = group_index(g);
    out[2] = peer >= 0 && peer < g->size ? g->world_ranks[peer] : -1;
    out[3] = ms > 2e9 ? 2000000000 : (int)ms;
    out[4] = (int)(g->seq & 0x7fffffff);
    out[5] = 0;
}

/* Answers every census ping that has arrived (from ranks whose wait passed
 * the deadline) with `state`. Failures are ignored: the census is best
 * effort, and the pinging rank ends the job either way. */
static void census_answer(tsr_comm_shared *sh, const int state[CENSUS_INTS]) {
    for (;;) {
        int flag = 0;
        MPI_Status ms;
        if (MPI_Iprobe(MPI_ANY_SOURCE, CENSUS_PING, sh->side, &flag, &ms) != MPI_SUCCESS || !flag)
            return;
        int ping[CENSUS_INTS];
        if (MPI_Recv(ping, CENSUS_INTS, MPI_INT, ms.MPI_SOURCE, CENSUS_PING, sh->side,
                     MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return;
        /* Six ints go eagerly on every transport: this send does not wait
         * for the pinging rank, which is in its census loop anyway. */
        MPI_Send(state, CENSUS_INTS, MPI_INT, ms.MPI_SOURCE, CENSUS_ANSWER, sh->side);
    }
}

static int poll_request(void *arg, tsr_status *err) {
    void **a = arg;
    tsr_comm_group_t *g = a[0];
    int done = 0;
    tsr_status st = TSR_MPI(&g->where, MPI_Test((MPI_Request *)a[1], &done, MPI_STATUS_IGNORE));
    if (st != TSR_OK) {
        *err = st;
        return -1;
    }
    return done;
}

tsr_status tsr_comm_wait_poll_(tsr_comm_group_t *g, int (*poll)(void *arg, tsr_status *err),
                               void *arg, tsr_comm_wait_op op, int peer) {
    g->seq++;
    tsr_status err = TSR_OK;
    int r = poll(arg, &err);
    if (r)
        return r > 0 ? TSR_OK : err;
    const int idle = op == TSR_WAIT_IDLE;
    const double timeout = g->sh && !idle ? g->sh->timeout_s : 0;
    const int64_t t0 = now_ns();
    if (!idle)
        for (unsigned i = 1;; i++) {
            if ((r = poll(arg, &err)) != 0)
                return r > 0 ? TSR_OK : err;
            if ((i & 63) == 0 && now_ns() - t0 > SPIN_NS)
                break;
        }
    /* Open MPI progresses a non-blocking operation only inside MPI calls, so
     * the loop keeps testing, but sleeps between tests instead of spinning.
     * An early wake-up (a signal) is just an early test. */
    long sleep_ns = idle ? IDLE_SLEEP0_NS : SLEEP0_NS;
    const long sleep_max = idle ? IDLE_SLEEP_MAX_NS : SLEEP_MAX_NS;
    for (;;) {
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
        sleep_ns = sleep_ns * 2 > sleep_max ? sleep_max : sleep_ns * 2;
        if ((r = poll(arg, &err)) != 0)
            return r > 0 ? TSR_OK : err;
        if (g->sh) {
            int state[CENSUS_INTS];
            census_state(g, op, peer, t0, state);
            census_answer(g->sh, state);
        }
        if (timeout > 0) {
            double waited = (double)(now_ns() - t0) * 1e-9;
            if (waited > timeout)
                tsr_comm_hang_abort_(g, op, peer, waited);
        }
    }
}

tsr_status tsr_comm_wait_(tsr_comm_group_t *g, MPI_Request *req, tsr_comm_wait_op op, int peer) {
    void *arg[2] = {g, req};
    return tsr_comm_wait_poll_(g, poll_request, arg, op, peer);
}

/* Ends the job: stops the watchdog and the NCCL communicators of `groups`
 * (any may be NULL), then MPI_Abort. Prints `why` first, with the rank. */
static _Noreturn void abort_job(tsr_comm_group_t *const groups[3], const tsr_comm_where *where,
                                int code, const char *why) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    int running = initialized && !finalized;
    tsr_comm_where w = {0, 1, ""};
    if (where)
        w = *where;
    else if (running)
        where_init(&w);
    fprintf(stderr, "[rank %d/%d %s] aborting the job (exit code %d): %s\n", w.rank, w.size, w.host,
            code, why ? why : "(no reason given)");
    fflush(stderr);
#ifdef TSR_HAVE_NCCL
    /* The watchdog polls the communicators we are about to abort (freeing
     * them): stop it first. */
    if (groups[0] && groups[0]->watchdog) {
        tsr_comm_watchdog_stop(groups[0]->watchdog);
        groups[0]->watchdog = NULL;
    }
#endif
    /* NCCL kernels may be spinning on a dead peer: stop them first, or the
     * process can hang in the driver instead of exiting. */
    for (int i = 0; i < 3; i++)
        if (groups[i] && groups[i]->iface && groups[i]->iface->abort)
            groups[i]->iface->abort(groups[i]);
    if (running)
        MPI_Abort(MPI_COMM_WORLD, code);
    _Exit(code); /* MPI_Abort does not return; without MPI there is one process */
}

/* Appends to buf (of size cap, holding a string) what printf makes. */
static void append(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t cap, const char *fmt, ...) {
    size_t n = strlen(buf);
    if (n + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
}

_Noreturn void tsr_comm_hang_abort_(tsr_comm_group_t *g, tsr_comm_wait_op op, int peer,
                                    double waited) {
    tsr_comm_shared *sh = g->sh;
    const int me = g->where.rank, n = sh->world_size;
    char why[4096] = "";
    append(why, sizeof why, "%s #%llu on the %s group (world ranks", wait_op_name(op), g->seq,
           g->name);
    for (int i = 0; i < g->size && i < 16; i++)
        append(why, sizeof why, "%s%d", i ? "," : " ", g->world_ranks[i]);
    append(why, sizeof why, "%s)", g->size > 16 ? ",..." : "");
    if (peer >= 0 && peer < g->size)
        append(why, sizeof why, " with world rank %d (%s)", g->world_ranks[peer],
               sh->hosts[g->world_ranks[peer]]);
    append(why, sizeof why, " has waited %.1f s, past the deadline of %g s (--comm-timeout)",
           waited, sh->timeout_s);

    /* The census: ping every other rank, collect answers for the grace
     * period, answering the others' pings meanwhile. */
    int mine[CENSUS_INTS];
    census_state(g, op, peer, now_ns() - (int64_t)(waited * 1e9), mine);
    int(*ans)[CENSUS_INTS] = calloc((size_t)n, sizeof *ans);
    MPI_Request *rq = malloc((size_t)n * 2 * sizeof *rq);
    char *got = calloc((size_t)n, 1);
    const double grace = tsr_comm_grace_s_(sh->timeout_s);
    int answered = 0;
    if (ans && rq && got) {
        for (int r = 0; r < n; r++) {
            rq[r] = rq[n + r] = MPI_REQUEST_NULL;
            if (r == me)
                continue;
            MPI_Isend(mine, CENSUS_INTS, MPI_INT, r, CENSUS_PING, sh->side, &rq[n + r]);
            MPI_Irecv(ans[r], CENSUS_INTS, MPI_INT, r, CENSUS_ANSWER, sh->side, &rq[r]);
        }
        int busy[CENSUS_INTS];
        memcpy(busy, mine, sizeof busy);
        busy[5] = 1; /* past the deadline too */
        const int64_t t_end = now_ns() + (int64_t)(grace * 1e9);
        while (answered < n - 1 && now_ns() < t_end) {
            for (int r = 0; r < n; r++) {
                int done = 0;
                if (r == me || got[r])
                    continue;
                if (MPI_Test(&rq[r], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) {
                    got[r] = 1;
                    answered++;
                }
            }
            census_answer(sh, busy);
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        /* The pings to silent ranks never complete; MPI_Abort ends them. */
        int silent = 0;
        for (int r = 0; r < n; r++)
            if (r != me && !got[r])
                silent++;
        if (silent) {
            append(why, sizeof why,
                   ". Not answering after %.1f s more (stopped, hung, or busy "
                   "outside communication):",
                   grace);
            for (int r = 0, k = 0; r < n; r++)
                if (r != me && !got[r])
                    append(why, sizeof why, "%s world rank %d (%s)", k++ ? "," : "", r,
                           sh->hosts[r]);
        } else {
            append(why, sizeof why,
                   ". Every rank answers, so none is stopped: the ranks wait in "
                   "different operations (a deadlock or mismatched calls)");
        }
        if (answered) {
            append(why, sizeof why, ". Waiting:");
            for (int r = 0, k = 0; r < n; r++)
                if (got[r]) {
                    const int *a = ans[r];
                    append(why, sizeof why, "%s rank %d in %s", k++ ? ";" : "", r,
                           wait_op_name(a[0]));
                    if (a[0] != TSR_WAIT_IDLE)
                        append(why, sizeof why, " #%d on %s", a[4], group_name_of(a[1]));
                    if (a[2] >= 0)
                        append(why, sizeof why, " with rank %d", a[2]);
                    append(why, sizeof why, " for %.1f s%s", a[3] * 1e-3,
                           a[5] ? " (past the deadline too)" : "");
                }
        }
    } else {
        append(why, sizeof why,
               ". (Out of memory: could not ask the other ranks which is "
               "silent.)");
    }
    /* ans, rq and got are left to the end of the process. */
    abort_job(sh->groups, &g->where, 1, why);
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
    /* Every member (the root too: a large message needs it) keeps testing,
     * sleeping between tests from the start, with no deadline. The first
     * test is immediate; in a busy job the data is usually already there. */
    return tsr_comm_wait_(g, &req, TSR_WAIT_IDLE, g->rank == root ? -1 : root);
}

tsr_status tsr_comm_agree(tsr_comm_group_t *g, tsr_status local) {
    TSR_TRY(check_group(g, "agree"));
    if ((int)local < TSR_OK || local > TSR_ERR_LAST)
        local = TSR_ERR_INTERNAL; /* an out-of-range status is a bug, and still a failure */
    int failed = -1;
    tsr_status st = tsr_comm_mpi_agree(g, g->comm, &g->where, local, &failed);
    if (st != TSR_OK && local == TSR_OK && failed >= 0)
        tsr_error_set(st, "world rank %d of the %s group failed (%s); its log says why", failed,
                      g->name, tsr_status_str(st));
    return st; /* a failing rank keeps its own message */
}

_Noreturn void tsr_comm_abort(const tsr_comm_grid *g, int code, const char *why) {
    tsr_comm_group_t *groups[3] = {NULL, NULL, NULL};
    const tsr_comm_where *w = NULL;
    if (g) {
        groups[0] = g->world;
        groups[1] = g->tp_group;
        groups[2] = g->pp_group;
        if (g->world)
            w = &g->world->where;
    }
    abort_job(groups, w, code, why);
}
