/* comm/comm_internal.h - what comm.c, comm_mpi.c and comm_nccl.c share: the
 * group object, the backend table every group dispatches through, and the
 * check macros for foreign calls.
 *
 * What it is not: an API. Nothing outside comm/ includes this header. */
#ifndef TSR_COMM_COMM_INTERNAL_H
#define TSR_COMM_COMM_INTERNAL_H

#include <mpi.h>

#include "comm/comm.h"

/* Where a failure happened: this process's world rank and host, printed by
 * every check macro. */
typedef struct {
    int rank, size; /* in MPI_COMM_WORLD */
    char host[64];
} tsr_comm_where;

/* The data-plane operations of one backend. Every slot is filled; the public
 * wrappers in comm.c have already validated the arguments (group, dtype, op,
 * root/peer range, count fits, no forbidden overlap, count > 0) before a slot
 * is called. Buffers are host memory for MPI and device memory for NCCL,
 * except allreduce_argmax, which is host memory on every backend. */
typedef struct {
    const char *name;
    tsr_status (*allreduce)(tsr_comm_group_t *g, const void *send, void *recv, size_t count,
                            int dtype, tsr_comm_op op);
    tsr_status (*allreduce_argmax)(tsr_comm_group_t *g, float *value, int32_t *index, size_t n);
    tsr_status (*allgather)(tsr_comm_group_t *g, const void *send, void *recv, size_t count,
                            int dtype);
    tsr_status (*broadcast)(tsr_comm_group_t *g, void *buf, size_t count, int dtype, int root);
    tsr_status (*send)(tsr_comm_group_t *g, const void *buf, size_t count, int dtype, int peer,
                       int tag);
    tsr_status (*recv)(tsr_comm_group_t *g, void *buf, size_t count, int dtype, int peer, int tag);
    tsr_status (*barrier)(tsr_comm_group_t *g);
    /* Optional (NULL: nothing to do). Stops the backend's in-flight work so
     * that MPI_Abort can end the job; may run on any thread, at most once. */
    void (*abort)(tsr_comm_group_t *g);
    /* Optional (NULL: nothing to free). Releases g->impl; the MPI
     * communicator and operations are released by comm.c afterwards. */
    void (*release)(tsr_comm_group_t *g);
} tsr_comm_backend_i;

/* User-defined MPI reductions for the 16-bit float types, which MPI lacks.
 * Each group creates its own (MPI_Op_create) and frees them with the group. */
typedef struct {
    MPI_Op sum_f16, max_f16, sum_bf16, max_bf16;
} tsr_comm_mpi_ops;

struct tsr_comm_watchdog; /* comm_nccl.c */

/* What a rank is waiting in: named in timeout messages and in the answers
 * to a census (below). */
typedef enum {
    TSR_WAIT_ALLREDUCE = 0,
    TSR_WAIT_ARGMAX,
    TSR_WAIT_ALLGATHER,
    TSR_WAIT_BROADCAST,
    TSR_WAIT_SEND,
    TSR_WAIT_RECV,
    TSR_WAIT_BARRIER,
    TSR_WAIT_AGREE,
    TSR_WAIT_IDLE, /* tsr_comm_bcast_idle: no deadline */
    TSR_WAIT_NCCL, /* a collective on an NCCL group's stream */
    TSR_WAIT_N_
} tsr_comm_wait_op;

/* What the groups of one grid share (owned by its world group): the
 * deadline, the census communicator and who is where.
 *
 * The census: a rank whose wait passes the deadline sends a ping to every
 * other world rank on `side` and waits a grace period for the answers. Every
 * rank answers from inside any wait of comm/ (collective, send, receive,
 * idle broadcast, its own census), saying what it is waiting in. The ranks
 * that do not answer are the silent ones: stopped, or busy outside comm/
 * for longer than the grace period. */
typedef struct {
    double timeout_s; /* 0: no deadline */
    MPI_Comm side;    /* a duplicate of MPI_COMM_WORLD: census pings and answers */
    int world_size;
    char (*hosts)[64];                /* host of each world rank */
    struct tsr_comm_group *groups[3]; /* world, tp, pp: what an abort stops */
} tsr_comm_shared;

struct tsr_comm_group {
    const tsr_comm_backend_i *iface;
    tsr_comm_kind kind;
    const char *name; /* "world", "tp", "pp": for messages */
    MPI_Comm comm;    /* every group has one: the control plane, and the data plane on MPI */
    int rank, size;   /* in this group */
    tsr_comm_where where;
    tsr_comm_mpi_ops ops;
    void *impl;             /* backend state: NULL on MPI, tsr_comm_nccl on NCCL */
    int *world_ranks;       /* world rank of each group rank */
    unsigned long long seq; /* waits entered on this group, for messages */
    tsr_comm_shared *sh;    /* the grid's; NULL only while the grid is built */
    /* Only on a grid's world group: the NCCL watchdog of the grid, or NULL. */
    struct tsr_comm_watchdog *watchdog;
};

/* ---- check macros ----------------------------------------------------------
 * Each evaluates a foreign call and yields a tsr_status: TSR_OK on success;
 * otherwise it logs and records "<statement> failed at file:line on rank r/N
 * (host): <library message>" and yields TSR_ERR_COMM (MPI, NCCL) or
 * TSR_ERR_BACKEND (CUDA). Use with TSR_TRY or TSR_CHECK_GOTO. `w` is a
 * const tsr_comm_where *. The NCCL and CUDA forms live in comm_nccl.c, the
 * only file that sees those types. */
#define TSR_MPI(w, call) tsr_comm_check_mpi_((call), #call, __FILE__, __LINE__, (w))

tsr_status tsr_comm_check_mpi_(int rc, const char *stmt, const char *file, int line,
                               const tsr_comm_where *w);

/* Logs and records a failure with the same layout as the check macros, for
 * library messages that are not an MPI return code. */
tsr_status tsr_comm_fail_(tsr_status s, const char *stmt, const char *file, int line,
                          const tsr_comm_where *w, const char *lib_msg);

/* Waits for `req` (a non-blocking MPI operation on g->comm, or MPI_REQUEST_NULL
 * with a poll callback) under the grid's deadline: spins on MPI_Test for a
 * short while (the hot path: a decode all-reduce completes there), then
 * sleeps between tests, backing off, and answers census pings. When the
 * deadline passes, runs the census and ends the job (tsr_comm_hang_abort_);
 * it never returns then. `peer` is the group rank waited on by a send or
 * receive, else -1. */
tsr_status tsr_comm_wait_(tsr_comm_group_t *g, MPI_Request *req, tsr_comm_wait_op op, int peer);

/* The same loop over a caller's poll: `poll` returns 1 when done, 0 when not
 * yet, -1 on an error (already recorded, returned as `*err`). Used by the
 * NCCL backend to wait for its stream without blocking in the driver. */
tsr_status tsr_comm_wait_poll_(tsr_comm_group_t *g, int (*poll)(void *arg, tsr_status *err),
                               void *arg, tsr_comm_wait_op op, int peer);

/* A wait on g passed the deadline after `waited` seconds: asks every rank
 * what it is doing (the census), prints which ranks are silent, and ends
 * the job. Never returns. */
_Noreturn void tsr_comm_hang_abort_(tsr_comm_group_t *g, tsr_comm_wait_op op, int peer,
                                    double waited);

/* The census's grace period for a deadline: timeout / 4, within 1..10 s. */
double tsr_comm_grace_s_(double timeout_s);

/* Bytes per element of a collective dtype (TSR_F32, TSR_F16, TSR_BF16,
 * TSR_COMM_I32); 0 when unsupported. */
size_t tsr_comm_dtype_size(int dtype);

/* ---- MPI backend (comm_mpi.c) ---- */
extern const tsr_comm_backend_i tsr_comm_mpi_iface;
tsr_status tsr_comm_mpi_ops_init(tsr_comm_mpi_ops *ops, const tsr_comm_where *w);
void tsr_comm_mpi_ops_free(tsr_comm_mpi_ops *ops);
/* The host-memory argmax over g->comm, shared by every backend. */
tsr_status tsr_comm_mpi_argmax(tsr_comm_group_t *g, float *value, int32_t *index, size_t n);
/* An all-reduce of (status, world rank) with MPI_MAXLOC over `comm`: the
 * worst status, and the lowest world rank that reported it. With a group g
 * (whose communicator is `comm`) the wait has the grid's deadline; NULL
 * while the grid is being built (a blocking MPI_Allreduce). */
tsr_status tsr_comm_mpi_agree(tsr_comm_group_t *g, MPI_Comm comm, const tsr_comm_where *w,
                              tsr_status local, int *failed_rank);
/* MPI_Ibarrier on g->comm under the deadline (the NCCL barrier uses it). */
tsr_status tsr_comm_mpi_barrier(tsr_comm_group_t *g);

/* ---- NCCL backend (comm_nccl.c, only when TSR_HAVE_NCCL) ---- */
#ifdef TSR_HAVE_NCCL
extern const tsr_comm_backend_i tsr_comm_nccl_iface;
/* Turns an MPI group into an NCCL one on CUDA `device`: collective over
 * g->comm. `prior` is this rank's status so far: when any member's is not
 * OK, every member skips the set-up and returns the worst. Otherwise the
 * result is agreed too, so every member returns the same status (except
 * when ncclCommInitRank itself fails on some members: see docs/comm.md). */
tsr_status tsr_comm_nccl_attach(tsr_comm_group_t *g, int device, tsr_status prior);
/* Starts the watchdog over the n NCCL groups (aborting the job on an async
 * error or a collective in flight for longer than timeout_s). */
tsr_status tsr_comm_watchdog_start(tsr_comm_group_t *const *groups, int n, double timeout_s,
                                   const tsr_comm_where *w, struct tsr_comm_watchdog **out);
void tsr_comm_watchdog_stop(struct tsr_comm_watchdog *wd); /* joins; NULL ok */
#endif

#endif
