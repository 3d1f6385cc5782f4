/* comm/comm.h - process groups and collectives.
 *
 * One MPI job is a grid of dp x pp x tp ranks. World rank
 *   r = (dp_rank * pp + pp_rank) * tp + tp_rank
 * so the ranks of one TP group are adjacent (same node under by-slot mapping).
 * Each group (world, tp, pp) is an opaque tsr_comm_group_t with a backend:
 *  - TSR_COMM_MPI: buffers in host memory; what runs on CPUs and in CI.
 *  - TSR_COMM_NCCL: buffers in device memory, collectives on the group's own
 *    CUDA stream (ordered against compute with events by the caller's
 *    backend); the unique id is made by the group's root and broadcast over
 *    MPI. A watchdog thread polls ncclCommGetAsyncError and, on an error or
 *    when a collective is stuck past the deadline, calls ncclCommAbort then
 *    MPI_Abort.
 *
 * Every wait (collective, send, receive, on either backend) has a deadline,
 * the grid's timeout_s: a wait that passes it asks every rank what it is
 * doing, prints the ranks that did not answer (stopped or hung) and ends the
 * job. The idle broadcast has no deadline (a server waits for requests).
 *
 * The control plane (step descriptors, error agreement) is always MPI on the
 * host through the world group, whatever the data backend.
 *
 * Every function returns a tsr_status; a failed MPI/NCCL call is reported
 * with the statement, file:line, rank, host and the library's own message
 * (tsr_error_msg). Nothing here exits, except tsr_comm_abort, which ends the
 * whole job, and a wait past its deadline, which ends the job the same way.
 * All calls on a group are collective over its members unless
 * stated otherwise, and only one thread (the engine's) may use a group: on
 * NCCL, grid_init makes the group's device current on the calling thread,
 * and collectives must be called from that thread.
 *
 * count == 0 is a no-op on every collective.
 *
 * What it is not: it knows nothing of models or shards. */
#ifndef TSR_COMM_COMM_H
#define TSR_COMM_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "kernels/dtype.h"

typedef struct tsr_comm_group tsr_comm_group_t; /* opaque */

typedef enum {
    TSR_COMM_MPI = 0,
    TSR_COMM_NCCL = 1,
} tsr_comm_kind;

/* "mpi" or "nccl"; "unknown" otherwise. Never NULL. */
const char *tsr_comm_kind_name(tsr_comm_kind kind);

/* Parses the --comm value "mpi" or "nccl" into *out; TSR_ERR_INVALID with a
 * message quoting `s` otherwise. */
tsr_status tsr_comm_kind_parse(const char *s, tsr_comm_kind *out);

/* 1 when this build has the NCCL backend (TSR_HAVE_NCCL), else 0. */
int tsr_comm_has_nccl(void);

typedef enum {
    TSR_COMM_SUM = 0,
    TSR_COMM_MAX = 1,
} tsr_comm_op;

/* Element types carried by collectives: TSR_F32, TSR_F16, TSR_BF16 from
 * kernels/dtype.h, plus int32. */
#define TSR_COMM_I32 (-32)

typedef struct {
    int world_rank, world_size;
    int tp, pp, dp; /* degrees; tp * pp * dp == world_size */
    int tp_rank, pp_rank, dp_rank;
    int local_rank, local_size; /* among the ranks on this host */
    char host[64];
    tsr_comm_group_t *world, *tp_group, *pp_group;
} tsr_comm_grid;

/* The deadline of every wait (--comm-timeout): its default, and the largest
 * value accepted. */
#define TSR_COMM_TIMEOUT_DEFAULT_S 60.0
#define TSR_COMM_TIMEOUT_MAX_S 1e6

typedef struct {
    int tp, pp;         /* dp = world / (tp * pp) */
    tsr_comm_kind kind; /* data backend of the tp and pp groups */
    int device;         /* NCCL: CUDA device of this rank; -1 = local_rank */
    /* Deadline of every collective, send and receive, MPI and NCCL alike:
     * when a wait passes it, the ranks that do not answer are named and the
     * job ends (docs/comm.md, "Deadlines"). 0 = no deadline. The idle
     * broadcast has none. */
    double timeout_s;
} tsr_comm_grid_config;

#define TSR_COMM_GRID_CONFIG_INIT                                                                  \
    { 1, 1, TSR_COMM_MPI, -1, TSR_COMM_TIMEOUT_DEFAULT_S }

/* Initialises MPI (MPI_THREAD_FUNNELED; safe if already initialised) and
 * reads world rank/size, for use before the grid exists (logging, config
 * agreement). Call once from main. */
tsr_status tsr_comm_mpi_init(int *argc, char ***argv, int *world_rank, int *world_size);
/* MPI_Finalize if tsr_comm_mpi_init started MPI. */
void tsr_comm_mpi_finalize(void);

/* Builds the grid. TSR_ERR_INVALID (same on every rank, so every rank can
 * report and leave) when tp * pp does not divide the world size, naming the
 * numbers. Collective over MPI_COMM_WORLD. */
tsr_status tsr_comm_grid_init(tsr_comm_grid *g, const tsr_comm_grid_config *cfg);
/* Collective (NCCL communicators are finalised with their peers): call it on
 * every rank, before tsr_comm_mpi_finalize. NULL ok. */
void tsr_comm_grid_free(tsr_comm_grid *g);

/* The calling rank's rank in g (-1 for NULL g), g's size (0 for NULL g) and
 * its data backend. */
int tsr_comm_rank(const tsr_comm_group_t *g);
int tsr_comm_size(const tsr_comm_group_t *g);
tsr_comm_kind tsr_comm_kind_of(const tsr_comm_group_t *g);

/* The group's CUDA stream (a cudaStream_t) on NCCL, NULL on MPI or NULL g.
 * The CUDA kernel backend records events on it to order collectives against
 * its compute stream. Owned by the group. */
void *tsr_comm_stream(const tsr_comm_group_t *g);

/* recv = reduce(send) over the group, count elements of `dtype`. In place
 * when send == recv. */
tsr_status tsr_comm_allreduce(tsr_comm_group_t *g, const void *send, void *recv, size_t count,
                              int dtype, tsr_comm_op op);

/* Max with index: each rank gives n (value, index) pairs; afterwards every
 * rank holds, for each i, the largest value and its index (ties: the lowest
 * index). Host memory on every backend (greedy sampling is tiny). */
tsr_status tsr_comm_allreduce_argmax(tsr_comm_group_t *g, float *value, int32_t *index, size_t n);

/* recv (size * count) = concatenation of every rank's send (count) in rank
 * order. send and recv must not overlap. */
tsr_status tsr_comm_allgather(tsr_comm_group_t *g, const void *send, void *recv, size_t count,
                              int dtype);

/* buf (count of dtype) from `root` to every member. */
tsr_status tsr_comm_broadcast(tsr_comm_group_t *g, void *buf, size_t count, int dtype, int root);

/* Point to point within the group (peer is a group rank). Sending to or
 * receiving from oneself is refused (TSR_ERR_INVALID). Tags are 0..32767;
 * NCCL ignores them: its sends and receives match in issue order. */
tsr_status tsr_comm_send(tsr_comm_group_t *g, const void *buf, size_t count, int dtype, int peer,
                         int tag);
tsr_status tsr_comm_recv(tsr_comm_group_t *g, void *buf, size_t count, int dtype, int peer,
                         int tag);

tsr_status tsr_comm_barrier(tsr_comm_group_t *g);

/* Control plane (MPI, host memory, any group): a broadcast that does not spin
 * while waiting. Non-root members sleep between polls (backing off from
 * 50 us to 2 ms), so an idle job uses a few percent of a core per rank.
 * Returns when the data has arrived; no deadline (a server waits for its
 * next request as long as it takes). */
tsr_status tsr_comm_bcast_idle(tsr_comm_group_t *g, void *buf, size_t bytes, int root);

/* Error agreement: every member passes its local status; all get back the
 * worst (non-OK wins) so that either all ranks continue or all stop. The
 * message of a failing rank stays in its own tsr_error_msg. */
tsr_status tsr_comm_agree(tsr_comm_group_t *g, tsr_status local);

/* Ends the whole job now: aborts NCCL communicators, then MPI_Abort(code).
 * Prints `why` with the rank first. Never returns. */
_Noreturn void tsr_comm_abort(const tsr_comm_grid *g, int code, const char *why);

#endif
