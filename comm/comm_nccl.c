/* comm/comm_nccl.c - the NCCL backend: collectives on device buffers, each
 * group with its own NCCL communicator (unique id made by the group's rank 0
 * and broadcast over the group's MPI communicator) and its own non-blocking
 * CUDA stream, plus the watchdog thread that aborts the job when NCCL
 * reports an asynchronous error or a collective hangs.
 *
 * For now every collective enqueues on the group's stream and then waits
 * for it (cudaStreamSynchronize), so a call returns with its result in place
 * like the MPI backend's. The CUDA kernel backend will replace that wait with
 * event ordering between its compute stream and the group's stream
 * (tsr_comm_stream).
 *
 * What it is not: a host-memory path. Only the argmax (host memory by
 * contract) and the barrier use MPI here. Plain C: no nvcc needed. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "base/log.h"
#include "comm/comm_internal.h"

/* State of one NCCL group (g->impl). */
typedef struct {
    ncclComm_t comm;
    cudaStream_t stream; /* non-blocking: never waits on the legacy default stream */
    int device;
    /* CLOCK_MONOTONIC ns when the collective now in flight was enqueued; 0
     * when none. Written by the engine thread, read by the watchdog. */
    _Atomic int64_t inflight_ns;
    atomic_int aborted; /* set once ncclCommAbort has been called (by anyone) */
} tsr_comm_nccl;

/* ---- check macros ---- */

static tsr_status check_nccl(ncclResult_t rc, const char *stmt, const char *file, int line,
                             const tsr_comm_where *w) {
    if (rc == ncclSuccess)
        return TSR_OK;
    char msg[512];
    const char *last = ncclGetLastError(NULL);
    snprintf(msg, sizeof msg, "%s%s%.300s", ncclGetErrorString(rc), last && last[0] ? ": " : "",
             last ? last : "");
    return tsr_comm_fail_(TSR_ERR_COMM, stmt, file, line, w, msg);
}

static tsr_status check_cuda(cudaError_t rc, const char *stmt, const char *file, int line,
                             const tsr_comm_where *w) {
    if (rc == cudaSuccess)
        return TSR_OK;
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s", cudaGetErrorName(rc), cudaGetErrorString(rc));
    return tsr_comm_fail_(TSR_ERR_BACKEND, stmt, file, line, w, msg);
}

#define TSR_NCCL(w, call) check_nccl((call), #call, __FILE__, __LINE__, (w))
#define TSR_CUDA(w, call) check_cuda((call), #call, __FILE__, __LINE__, (w))

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static ncclDataType_t nccl_type(int dtype) {
    switch (dtype) {
    case TSR_F16: return ncclFloat16;
    case TSR_BF16: return ncclBfloat16;
    case TSR_COMM_I32: return ncclInt32;
    default: return ncclFloat32; /* TSR_F32; comm.c validated dtype */
    }
}

/* ---- running one collective ----
 * begin() stamps the watchdog's clock and makes the group's device current;
 * the caller enqueues; end() waits for the stream under the grid's deadline
 * (polling cudaStreamQuery in tsr_comm_wait_poll_, so the engine thread can
 * name a silent rank and end the job itself), clears the stamp and checks
 * NCCL's asynchronous error state. */

static tsr_comm_nccl *state(tsr_comm_group_t *g) { return g->impl; }

static tsr_status begin(tsr_comm_group_t *g) {
    tsr_comm_nccl *n = state(g);
    /* The engine thread made this device current at grid_init; a caller
     * that switched devices since would silently enqueue on the wrong one. */
    TSR_TRY(TSR_CUDA(&g->where, cudaSetDevice(n->device)));
    atomic_store(&n->inflight_ns, now_ns());
    return TSR_OK;
}

/* tsr_comm_wait_poll_'s poll: 1 when the group's stream is idle. */
static int stream_idle(void *arg, tsr_status *err) {
    tsr_comm_group_t *g = arg;
    cudaError_t rc = cudaStreamQuery(state(g)->stream);
    if (rc == cudaSuccess)
        return 1;
    if (rc == cudaErrorNotReady)
        return 0;
    *err = TSR_CUDA(&g->where, rc);
    return -1;
}

static tsr_status end(tsr_comm_group_t *g, tsr_status enqueued, tsr_comm_wait_op op, int peer) {
    tsr_comm_nccl *n = state(g);
    tsr_status st = enqueued;
    if (st == TSR_OK)
        st = tsr_comm_wait_poll_(g, stream_idle, g, op, peer);
    atomic_store(&n->inflight_ns, 0);
    ncclResult_t async = ncclSuccess;
    if (st == TSR_OK)
        st = TSR_NCCL(&g->where, ncclCommGetAsyncError(n->comm, &async));
    if (st == TSR_OK && async != ncclSuccess)
        st = check_nccl(async, "asynchronous NCCL error", __FILE__, __LINE__, &g->where);
    return st;
}

/* ---- the NCCL backend ---- */

static tsr_status nccl_allreduce(tsr_comm_group_t *g, const void *send, void *recv, size_t count,
                                 int dtype, tsr_comm_op op) {
    TSR_TRY(begin(g));
    ncclRedOp_t r = op == TSR_COMM_SUM ? ncclSum : ncclMax;
    return end(g,
               TSR_NCCL(&g->where, ncclAllReduce(send, recv, count, nccl_type(dtype), r,
                                                 state(g)->comm, state(g)->stream)),
               TSR_WAIT_ALLREDUCE, -1);
}

static tsr_status nccl_allgather(tsr_comm_group_t *g, const void *send, void *recv, size_t count,
                                 int dtype) {
    TSR_TRY(begin(g));
    return end(g,
               TSR_NCCL(&g->where, ncclAllGather(send, recv, count, nccl_type(dtype),
                                                 state(g)->comm, state(g)->stream)),
               TSR_WAIT_ALLGATHER, -1);
}

static tsr_status nccl_broadcast(tsr_comm_group_t *g, void *buf, size_t count, int dtype,
                                 int root) {
    TSR_TRY(begin(g));
    return end(g,
               TSR_NCCL(&g->where, ncclBroadcast(buf, buf, count, nccl_type(dtype), root,
                                                 state(g)->comm, state(g)->stream)),
               TSR_WAIT_BROADCAST, g->rank == root ? -1 : root);
}

/* NCCL has no tags: sends and receives between two ranks match in the order
 * they are issued, which is how the pipeline uses them. */
static tsr_status nccl_send(tsr_comm_group_t *g, const void *buf, size_t count, int dtype, int peer,
                            int tag) {
    TSR_TRY(begin(g));
    return end(g,
               TSR_NCCL(&g->where, ncclSend(buf, count, nccl_type(dtype), peer, state(g)->comm,
                                            state(g)->stream)),
               TSR_WAIT_SEND, peer);
}

static tsr_status nccl_recv(tsr_comm_group_t *g, void *buf, size_t count, int dtype, int peer,
                            int tag) {
    TSR_TRY(begin(g));
    return end(g,
               TSR_NCCL(&g->where, ncclRecv(buf, count, nccl_type(dtype), peer, state(g)->comm,
                                            state(g)->stream)),
               TSR_WAIT_RECV, peer);
}

/* Everything this rank enqueued on the group is done, then an MPI barrier:
 * together, every member has reached this point with its NCCL work done. */
static tsr_status nccl_barrier(tsr_comm_group_t *g) {
    TSR_TRY(begin(g));
    TSR_TRY(end(g, TSR_OK, TSR_WAIT_BARRIER, -1)); /* waits for the stream, under the deadline */
    return tsr_comm_mpi_barrier(g);                /* MPI, under the deadline */
}

static void nccl_abort(tsr_comm_group_t *g) {
    tsr_comm_nccl *n = state(g);
    if (!n || !n->comm || atomic_exchange(&n->aborted, 1))
        return;
    ncclCommAbort(n->comm); /* the job is ending: nothing to do with an error */
}

/* Frees a state whose communicator may or may not exist. `clean`: the whole
 * group is here (grid_free), so finalize + destroy; otherwise (a failed
 * set-up, where peers may be elsewhere) abort, which never waits on peers. */
static void state_free(tsr_comm_nccl *n, int clean, const tsr_comm_where *w) {
    if (!n)
        return;
    if (n->comm && !atomic_load(&n->aborted)) {
        if (clean) {
            tsr_status a = TSR_NCCL(w, ncclCommFinalize(n->comm));
            tsr_status b = TSR_NCCL(w, ncclCommDestroy(n->comm));
            if (a != TSR_OK || b != TSR_OK)
                TSR_LOG_W("NCCL communicator not released cleanly (continuing)");
        } else {
            ncclCommAbort(n->comm);
        }
    }
    if (n->stream)
        cudaStreamDestroy(n->stream);
    free(n);
}

static void nccl_release(tsr_comm_group_t *g) {
    state_free(g->impl, 1, &g->where);
    g->impl = NULL;
}

const tsr_comm_backend_i tsr_comm_nccl_iface = {
    /* .name = */ "nccl",
    /* .allreduce = */ nccl_allreduce,
    /* .allreduce_argmax = */ tsr_comm_mpi_argmax, /* host memory by contract */
    /* .allgather = */ nccl_allgather,
    /* .broadcast = */ nccl_broadcast,
    /* .send = */ nccl_send,
    /* .recv = */ nccl_recv,
    /* .barrier = */ nccl_barrier,
    /* .abort = */ nccl_abort,
    /* .release = */ nccl_release,
};

void *tsr_comm_stream(const tsr_comm_group_t *g) {
    if (!g || g->kind != TSR_COMM_NCCL || !g->impl)
        return NULL;
    return (void *)((const tsr_comm_nccl *)g->impl)->stream;
}

/* ---- set-up ---- */

/* This rank's local part: the device exists, is current, and has a stream. */
static tsr_status prepare(tsr_comm_group_t *g, int device, tsr_comm_nccl **out) {
    const tsr_comm_where *w = &g->where;
    int count = 0;
    TSR_TRY(TSR_CUDA(w, cudaGetDeviceCount(&count)));
    if (device >= count)
        return tsr_error_set(TSR_ERR_INVALID,
                             "rank %d/%d (%s) wants CUDA device %d, but this host has %d; with "
                             "the nccl backend run at most one rank per GPU",
                             w->rank, w->size, w->host, device, count);
    TSR_TRY(TSR_CUDA(w, cudaSetDevice(device)));
    tsr_comm_nccl *n = calloc(1, sizeof *n);
    if (!n)
        return tsr_error_set(TSR_ERR_NOMEM, "NCCL state of the %s group", g->name);
    n->device = device;
    atomic_init(&n->inflight_ns, 0);
    atomic_init(&n->aborted, 0);
    tsr_status st = TSR_CUDA(w, cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking));
    if (st != TSR_OK) {
        free(n);
        return st;
    }
    *out = n;
    return TSR_OK;
}

/* Agrees on `local` over the group; names the failing rank on the others. */
static tsr_status agree(tsr_comm_group_t *g, tsr_status local, const char *step) {
    int failed = -1;
    tsr_status st = tsr_comm_mpi_agree(NULL, g->comm, &g->where, local, &failed);
    if (st != TSR_OK && local == TSR_OK && failed >= 0)
        tsr_error_set(st, "world rank %d failed %s for the %s group (%s); its log says why", failed,
                      step, g->name, tsr_status_str(st));
    return st;
}

tsr_status tsr_comm_nccl_attach(tsr_comm_group_t *g, int device, tsr_status prior) {
    const tsr_comm_where *w = &g->where;
    tsr_comm_nccl *n = NULL;
    tsr_status local = prior;
    if (local == TSR_OK)
        local = prepare(g, device, &n);
    tsr_status st = agree(g, local, "preparing CUDA");
    if (st != TSR_OK)
        goto fail;

    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    local = g->rank == 0 ? TSR_NCCL(w, ncclGetUniqueId(&id)) : TSR_OK;
    st = TSR_MPI(w, MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, g->comm));
    if (st == TSR_OK)
        st = agree(g, local, "making the NCCL unique id");
    if (st != TSR_OK)
        goto fail;

    /* Blocking initialisation: a member that fails here may leave the others
     * waiting inside NCCL; its main must then tsr_comm_abort (docs/comm.md). */
    local = TSR_NCCL(w, ncclCommInitRank(&n->comm, g->size, id, g->rank));
    if (local != TSR_OK)
        n->comm = NULL;
    st = agree(g, local, "in ncclCommInitRank");
    if (st != TSR_OK)
        goto fail;

    g->impl = n;
    g->iface = &tsr_comm_nccl_iface;
    g->kind = TSR_COMM_NCCL;
    return TSR_OK;
fail:
    state_free(n, 0, w);
    return st;
}

/* ---- the watchdog ---- */

enum { WATCHDOG_MAX_GROUPS = 4, WATCHDOG_PERIOD_MS = 100 };

struct tsr_comm_watchdog {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    int stop;          /* under mu */
    int n;
    tsr_comm_group_t *groups[WATCHDOG_MAX_GROUPS];
    double timeout_s;
    tsr_comm_where where;
};

/* Ends the job from the watchdog thread. MPI was initialised as FUNNELED, so
 * strictly only the engine thread may call MPI; MPI_Abort is the one
 * exception we take, because the engine thread is stuck and the job must end
 * (Open MPI and MPICH both end the job from any thread). */
static _Noreturn void watchdog_fire(struct tsr_comm_watchdog *wd, const char *why) {
    fprintf(stderr, "[rank %d/%d %s] NCCL watchdog: %s; aborting the job\n", wd->where.rank,
            wd->where.size, wd->where.host, why);
    fflush(stderr);
    for (int i = 0; i < wd->n; i++)
        nccl_abort(wd->groups[i]);
    MPI_Abort(MPI_COMM_WORLD, 1);
    _Exit(1);
}

static void watchdog_check(struct tsr_comm_watchdog *wd) {
    char why[512];
    for (int i = 0; i < wd->n; i++) {
        tsr_comm_group_t *g = wd->groups[i];
        tsr_comm_nccl *n = state(g);
        ncclResult_t async = ncclSuccess;
        ncclResult_t rc = ncclCommGetAsyncError(n->comm, &async);
        if (rc != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
            ncclResult_t bad = rc != ncclSuccess ? rc : async;
            const char *last = ncclGetLastError(n->comm);
            snprintf(why, sizeof why, "asynchronous error on the %s group: %s%s%.300s", g->name,
                     ncclGetErrorString(bad), last && last[0] ? ": " : "", last ? last : "");
            watchdog_fire(wd, why);
        }
        int64_t t0 = atomic_load(&n->inflight_ns);
        if (t0 != 0 && wd->timeout_s > 0) { /* 0: --comm-timeout 0, no deadline */
            double s = (double)(now_ns() - t0) * 1e-9;
            if (s > wd->timeout_s) {
                snprintf(why, sizeof why,
                         "a collective on the %s group has been in flight for %.1f s (timeout %.1f "
                         "s): a peer is dead or stuck",
                         g->name, s, wd->timeout_s);
                watchdog_fire(wd, why);
            }
        }
    }
}

static void *watchdog_main(void *arg) {
    struct tsr_comm_watchdog *wd = arg;
    if (wd->n > 0)
        cudaSetDevice(state(wd->groups[0])->device);
    pthread_mutex_lock(&wd->mu);
    while (!wd->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += WATCHDOG_PERIOD_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!wd->stop && pthread_cond_timedwait(&wd->cv, &wd->mu, &until) == 0) {
        }
        if (wd->stop)
            break;
        pthread_mutex_unlock(&wd->mu);
        watchdog_check(wd);
        pthread_mutex_lock(&wd->mu);
    }
    pthread_mutex_unlock(&wd->mu);
    return NULL;
}

tsr_status tsr_comm_watchdog_start(tsr_comm_group_t *const *groups, int n, double timeout_s,
                                   const tsr_comm_where *w, struct tsr_comm_watchdog **out) {
    *out = NULL;
    if (n < 0 || n > WATCHDOG_MAX_GROUPS)
        return tsr_error_set(TSR_ERR_INTERNAL, "watchdog over %d groups (at most %d)", n,
                             WATCHDOG_MAX_GROUPS);
    struct tsr_comm_watchdog *wd = calloc(1, sizeof *wd);
    if (!wd)
        return tsr_error_set(TSR_ERR_NOMEM, "NCCL watchdog");
    wd->n = n;
    for (int i = 0; i < n; i++)
        wd->groups[i] = groups[i];
    wd->timeout_s = timeout_s;
    wd->where = *w;
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc == 0) {
        rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (rc == 0)
            rc = pthread_cond_init(&wd->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (rc != 0) {
        free(wd);
        return tsr_comm_fail_(TSR_ERR_INTERNAL, "pthread_cond_init", __FILE__, __LINE__, w,
                              strerror(rc));
    }
    pthread_mutex_init(&wd->mu, NULL);
    rc = pthread_create(&wd->thread, NULL, watchdog_main, wd);
    if (rc != 0) {
        pthread_cond_destroy(&wd->cv);
        pthread_mutex_destroy(&wd->mu);
        free(wd);
        return tsr_comm_fail_(TSR_ERR_INTERNAL, "pthread_create(watchdog)", __FILE__, __LINE__, w,
                              strerror(rc));
    }
    *out = wd;
    return TSR_OK;
}

void tsr_comm_watchdog_stop(struct tsr_comm_watchdog *wd) {
    if (!wd)
        return;
    pthread_mutex_lock(&wd->mu);
    wd->stop = 1;
    pthread_cond_signal(&wd->cv);
    pthread_mutex_unlock(&wd->mu);
    pthread_join(wd->thread, NULL);
    pthread_cond_destroy(&wd->cv);
    pthread_mutex_destroy(&wd->mu);
    free(wd);
}
