/* runtime/engine/xfer.h - moving a kernel backend's buffer over a comm group:
 * the one place that decides whether the buffer goes to the communicator as it
 * is, staged through host memory, or on the device after waiting for the
 * compute stream. The engine (activations over TP and PP) and the training
 * hooks (runtime/train/train_comm.c: f32 reductions over TP) both use it.
 *
 * The three paths (tsr_xfer_choose picks one per group):
 *  - TSR_XFER_HOST: MPI on host buffers (the CPU backend), passed as they are.
 *  - TSR_XFER_DEVICE: NCCL on device buffers. The compute stream is waited for
 *    first: NCCL runs on its group's own stream, which must not read a buffer
 *    the compute stream is still writing, nor write one it is still reading;
 *    the NCCL wrapper waits for its own stream before returning, so the result
 *    is in place for the next op.
 *  - TSR_XFER_STAGED: MPI with device buffers (or the CPU backend when asked
 *    to stage, the engine's stage_host): to_host (which synchronises) into a
 *    host staging buffer, MPI there, to_device back. to_device may read the
 *    host source after it returns, until the stream reaches it: the next
 *    staged call waits before MPI writes the staging buffer again (to_host
 *    does it on the way out; recv syncs itself), and a caller that frees or
 *    reuses the staging buffer in between syncs the backend first.
 *
 * What it is not: no collective of its own (comm/ does those), no choice of
 * group or dtype (the caller's), not thread-safe per staging buffer. It uses
 * only comm/ and kernels/, so runtime/train/ may include it. */
#ifndef TSR_RUNTIME_ENGINE_XFER_H
#define TSR_RUNTIME_ENGINE_XFER_H

#include <stddef.h>

#include "comm/comm.h"
#include "kernels/backend.h"

/* How a buffer crosses one group (see above). */
typedef enum {
    TSR_XFER_HOST = 0,   /* MPI on host buffers: passed as they are */
    TSR_XFER_STAGED = 1, /* MPI with device buffers (or stage_host): copied through host scratch */
    TSR_XFER_DEVICE = 2, /* NCCL: device buffers, after waiting for the compute stream */
} tsr_xfer;

/* Host staging scratch for TSR_XFER_STAGED, grown as needed. Zero it to
 * start ({0}); several groups may share one (their calls are sequential). */
typedef struct {
    void *buf;
    size_t cap; /* bytes */
} tsr_xfer_stage;

/* The path for group g and backend be: DEVICE on an NCCL group, else HOST
 * when be's buffers are host memory and stage_host is 0, else STAGED. */
tsr_xfer tsr_xfer_choose(const tsr_comm_group_t *g, const tsr_backend *be, int stage_host);

/* "mpi", "mpi via host" or "nccl", for logs. Never NULL. */
const char *tsr_xfer_name(tsr_xfer x);

/* Frees the staging buffer (a queued to_device must be done: sync first). NULL ok. */
void tsr_xfer_stage_free(tsr_xfer_stage *s);

/* count elements of dtype (a tsr_dtype, or TSR_COMM_I32) in backend buffer
 * buf, reduced with op over g in place, along path x. esize is the bytes per
 * element (the staged copies' size). Collective over g. */
tsr_status tsr_xfer_allreduce(tsr_xfer x, tsr_xfer_stage *s, tsr_backend *be, tsr_comm_group_t *g,
                              void *buf, size_t count, int dtype, size_t esize, tsr_comm_op op);

/* Point-to-point send and receive of count elements of dtype over g along x
 * (peer and tag as tsr_comm_send / tsr_comm_recv). */
tsr_status tsr_xfer_send(tsr_xfer x, tsr_xfer_stage *s, tsr_backend *be, tsr_comm_group_t *g,
                         const void *buf, size_t count, int dtype, size_t esize, int peer, int tag);
tsr_status tsr_xfer_recv(tsr_xfer x, tsr_xfer_stage *s, tsr_backend *be, tsr_comm_group_t *g,
                         void *buf, size_t count, int dtype, size_t esize, int peer, int tag);

#endif
