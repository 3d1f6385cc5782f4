/* comm/comm_mpi.c - the MPI backend: collectives on host buffers over a
 * group's MPI communicator, plus the pieces every backend shares (the
 * host-memory argmax, status agreement, the 16-bit float reductions).
 *
 * f16 and bf16 travel as MPI_UINT16_T; their sum and max are user-defined
 * MPI operations that widen to f32, combine, and round back to nearest even.
 * f32 has more than twice the 16-bit formats' precision plus two bits, so
 * that double rounding gives the correctly rounded 16-bit sum of each pair.
 *
 * What it is not: device-aware. A device buffer here is the caller's bug (a
 * later "--comm mpi" path for device activations stages them through host). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm_internal.h"

_Static_assert(sizeof(int) == sizeof(int32_t), "MPI_FLOAT_INT pairs carry int32 indices");

/* ---- 16-bit float reductions ---------------------------------------------
 * MPI_User_function: inout[i] = in[i] (op) inout[i], len elements. */

typedef float (*to_f32_fn)(uint16_t);
typedef uint16_t (*from_f32_fn)(float);

static void reduce16(const void *in, void *inout, int len, to_f32_fn to, from_f32_fn from,
                     int is_max) {
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < len; i++) {
        float x = to(a[i]), y = to(b[i]);
        float r;
        if (!is_max)
            r = x + y;
        else if (x != x || y != y) /* NaN wins, whichever side it is on */
            r = x != x ? x : y;
        else
            r = x > y ? x : y;
        b[i] = from(r);
    }
}

static void op_sum_f16(void *in, void *inout, int *len, MPI_Datatype *dt) {
    reduce16(in, inout, *len, tsr_f16_to_f32, tsr_f32_to_f16, 0);
}
static void op_max_f16(void *in, void *inout, int *len, MPI_Datatype *dt) {
    reduce16(in, inout, *len, tsr_f16_to_f32, tsr_f32_to_f16, 1);
}
static void op_sum_bf16(void *in, void *inout, int *len, MPI_Datatype *dt) {
    reduce16(in, inout, *len, tsr_bf16_to_f32, tsr_f32_to_bf16, 0);
}
static void op_max_bf16(void *in, void *inout, int *len, MPI_Datatype *dt) {
    reduce16(in, inout, *len, tsr_bf16_to_f32, tsr_f32_to_bf16, 1);
}

tsr_status tsr_comm_mpi_ops_init(tsr_comm_mpi_ops *ops, const tsr_comm_where *w) {
    ops->sum_f16 = ops->max_f16 = ops->sum_bf16 = ops->max_bf16 = MPI_OP_NULL;
    tsr_status st;
    TSR_CHECK_GOTO(st, TSR_MPI(w, MPI_Op_create(op_sum_f16, 1, &ops->sum_f16)));
    TSR_CHECK_GOTO(st, TSR_MPI(w, MPI_Op_create(op_max_f16, 1, &ops->max_f16)));
    TSR_CHECK_GOTO(st, TSR_MPI(w, MPI_Op_create(op_sum_bf16, 1, &ops->sum_bf16)));
    TSR_CHECK_GOTO(st, TSR_MPI(w, MPI_Op_create(op_max_bf16, 1, &ops->max_bf16)));
    return TSR_OK;
cleanup:
    tsr_comm_mpi_ops_free(ops);
    return st;
}

void tsr_comm_mpi_ops_free(tsr_comm_mpi_ops *ops) {
    MPI_Op *all[] = {&ops->sum_f16, &ops->max_f16, &ops->sum_bf16, &ops->max_bf16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (*all[i] != MPI_OP_NULL)
            MPI_Op_free(all[i]); /* sets it to MPI_OP_NULL */
}

/* ---- type and operation mapping ---- */

static MPI_Datatype mpi_type(int dtype) {
    switch (dtype) {
    case TSR_F32: return MPI_FLOAT;
    case TSR_COMM_I32: return MPI_INT32_T;
    case TSR_F16:
    case TSR_BF16: return MPI_UINT16_T; /* bits only: sums go through our own ops */
    }
    return MPI_DATATYPE_NULL; /* unreachable: comm.c validated dtype */
}

static MPI_Op mpi_op(const tsr_comm_group_t *g, int dtype, tsr_comm_op op) {
    switch (dtype) {
    case TSR_F16: return op == TSR_COMM_SUM ? g->ops.sum_f16 : g->ops.max_f16;
    case TSR_BF16: return op == TSR_COMM_SUM ? g->ops.sum_bf16 : g->ops.max_bf16;
    default: return op == TSR_COMM_SUM ? MPI_SUM : MPI_MAX;
    }
}

/* MPI counts are int. comm.c cannot know the backend's limit, so each MPI
 * entry point checks its own. */
static tsr_status fits_int(size_t count, const char *what) {
    if (count > (size_t)INT_MAX)
        return tsr_error_set(TSR_ERR_RANGE,
                             "%s of %zu elements exceeds the MPI backend's limit of %d per call",
                             what, count, INT_MAX);
    return TSR_OK;
}

/* ---- the MPI backend ---- */

/* Every operation is the non-blocking MPI call plus tsr_comm_wait_, which
 * gives it the grid's deadline (docs/comm.md, "Deadlines"). */

static tsr_status mpi_allreduce(tsr_comm_group_t *g, const void *send, void *recv, size_t count,
                                int dtype, tsr_comm_op op) {
    TSR_TRY(fits_int(count, "all-reduce"));
    const void *src = send == recv ? MPI_IN_PLACE : send;
    MPI_Request req = MPI_REQUEST_NULL;
    TSR_TRY(TSR_MPI(&g->where, MPI_Iallreduce(src, recv, (int)count, mpi_type(dtype),
                                              mpi_op(g, dtype, op), g->comm, &req)));
    return tsr_comm_wait_(g, &req, TSR_WAIT_ALLREDUCE, -1);
}

tsr_status tsr_comm_mpi_argmax(tsr_comm_group_t *g, float *value, int32_t *index, size_t n) {
    TSR_TRY(fits_int(n, "argmax all-reduce"));
    /* MPI_FLOAT_INT is { float; int; }: MAXLOC keeps the larger value and, on
     * a tie, the smaller index (MPI standard, section 6.9.4). */
    struct pair {
        float v;
        int i;
    } *p = malloc(n * sizeof *p);
    if (!p)
        return tsr_error_set(TSR_ERR_NOMEM, "argmax all-reduce: %zu pairs", n);
    for (size_t k = 0; k < n; k++) {
        p[k].v = value[k];
        p[k].i = index[k];
    }
    MPI_Request req = MPI_REQUEST_NULL;
    tsr_status st = TSR_MPI(&g->where, MPI_Iallreduce(MPI_IN_PLACE, p, (int)n, MPI_FLOAT_INT,
                                                      MPI_MAXLOC, g->comm, &req));
    if (st == TSR_OK)
        st = tsr_comm_wait_(g, &req, TSR_WAIT_ARGMAX, -1);
    if (st == TSR_OK)
        for (size_t k = 0; k < n; k++) {
            value[k] = p[k].v;
            index[k] = p[k].i;
        }
    free(p);
    return st;
}

static tsr_status mpi_allgather(tsr_comm_group_t *g, const void *send, void *recv, size_t count,
                                int dtype) {
    TSR_TRY(fits_int(count, "all-gather"));
    MPI_Datatype t = mpi_type(dtype);
    MPI_Request req = MPI_REQUEST_NULL;
    TSR_TRY(TSR_MPI(&g->where,
                    MPI_Iallgather(send, (int)count, t, recv, (int)count, t, g->comm, &req)));
    return tsr_comm_wait_(g, &req, TSR_WAIT_ALLGATHER, -1);
}

static tsr_status mpi_broadcast(tsr_comm_group_t *g, void *buf, size_t count, int dtype, int root) {
    TSR_TRY(fits_int(count, "broadcast"));
    MPI_Request req = MPI_REQUEST_NULL;
    TSR_TRY(TSR_MPI(&g->where, MPI_Ibcast(buf, (int)count, mpi_type(dtype), root, g->comm, &req)));
    return tsr_comm_wait_(g, &req, TSR_WAIT_BROADCAST, g->rank == root ? -1 : root);
}

static tsr_status mpi_send(tsr_comm_group_t *g, const void *buf, size_t count, int dtype, int peer,
                           int tag) {
    TSR_TRY(fits_int(count, "send"));
    MPI_Request req = MPI_REQUEST_NULL;
    TSR_TRY(
        TSR_MPI(&g->where, MPI_Isend(buf, (int)count, mpi_type(dtype), peer, tag, g->comm, &req)));
    return tsr_comm_wait_(g, &req, TSR_WAIT_SEND, peer);
}

static tsr_status mpi_recv(tsr_comm_group_t *g, void *buf, size_t count, int dtype, int peer,
                           int tag) {
    TSR_TRY(fits_int(count, "receive"));
    MPI_Request req = MPI_REQUEST_NULL;
    TSR_TRY(
        TSR_MPI(&g->where, MPI_Irecv(buf, (int)count, mpi_type(dtype), peer, tag, g->comm, &req)));
    return tsr_comm_wait_(g, &req, TSR_WAIT_RECV, peer);
}

static tsr_status mpi_barrier(tsr_comm_group_t *g) { return tsr_comm_mpi_barrier(g); }

tsr_status tsr_comm_mpi_barrier(tsr_comm_group_t *g) {
    MPI_Request req = MPI_REQUEST_NULL;
    TSR_TRY(TSR_MPI(&g->where, MPI_Ibarrier(g->comm, &req)));
    return tsr_comm_wait_(g, &req, TSR_WAIT_BARRIER, -1);
}

const tsr_comm_backend_i tsr_comm_mpi_iface = {
    /* .name = */ "mpi",
    /* .allreduce = */ mpi_allreduce,
    /* .allreduce_argmax = */ tsr_comm_mpi_argmax,
    /* .allgather = */ mpi_allgather,
    /* .broadcast = */ mpi_broadcast,
    /* .send = */ mpi_send,
    /* .recv = */ mpi_recv,
    /* .barrier = */ mpi_barrier,
    /* .abort = */ NULL, /* MPI_Abort alone ends MPI's work */
    /* .release = */ NULL,
};

/* ---- agreement ---- */

tsr_status tsr_comm_mpi_agree(tsr_comm_group_t *g, MPI_Comm comm, const tsr_comm_where *w,
                              tsr_status local, int *failed_rank) {
    /* Non-OK statuses are positive, so the maximum is the worst; MAXLOC's tie
     * rule then names the lowest world rank that reported it. */
    int pair[2] = {(int)local, w->rank};
    tsr_status st;
    if (g) { /* under the deadline */
        MPI_Request req = MPI_REQUEST_NULL;
        st = TSR_MPI(w, MPI_Iallreduce(MPI_IN_PLACE, pair, 1, MPI_2INT, MPI_MAXLOC, comm, &req));
        if (st == TSR_OK)
            st = tsr_comm_wait_(g, &req, TSR_WAIT_AGREE, -1);
    } else { /* building the grid: no deadline yet */
        st = TSR_MPI(w, MPI_Allreduce(MPI_IN_PLACE, pair, 1, MPI_2INT, MPI_MAXLOC, comm));
    }
    if (st != TSR_OK)
        return st;
    if (failed_rank)
        *failed_rank = pair[0] != TSR_OK ? pair[1] : -1;
    return (tsr_status)pair[0];
}
