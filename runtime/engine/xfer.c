/* runtime/engine/xfer.c - a backend buffer over a comm group: as it is, on the
 * device after the compute stream, or staged through host memory. See xfer.h. */
#include "runtime/engine/xfer.h"

#include <stdlib.h>

tsr_xfer tsr_xfer_choose(const tsr_comm_group_t *g, const tsr_backend *be, int stage_host) {
    if (tsr_comm_kind_of(g) == TSR_COMM_NCCL)
        return TSR_XFER_DEVICE;
    return tsr_backend_host_memory(be) && !stage_host ? TSR_XFER_HOST : TSR_XFER_STAGED;
}

const char *tsr_xfer_name(tsr_xfer x) {
    switch (x) {
    case TSR_XFER_HOST: return "mpi";
    case TSR_XFER_STAGED: return "mpi via host";
    case TSR_XFER_DEVICE: return "nccl";
    }
    return "unknown";
}

void tsr_xfer_stage_free(tsr_xfer_stage *s) {
    if (!s)
        return;
    free(s->buf);
    s->buf = NULL;
    s->cap = 0;
}

/* The staging buffer grown to at least `bytes` (doubling; contents dropped). */
static tsr_status stage_reserve(tsr_xfer_stage *s, size_t bytes) {
    if (bytes <= s->cap)
        return TSR_OK;
    size_t n = s->cap ? s->cap : 64;
    while (n < bytes)
        n *= 2;
    void *p = realloc(s->buf, n);
    if (!p)
        return tsr_error_set(TSR_ERR_NOMEM,
                             "out of memory for %zu bytes of host staging (a transfer of %zu "
                             "bytes)",
                             n, bytes);
    s->buf = p;
    s->cap = n;
    return TSR_OK;
}

tsr_status tsr_xfer_allreduce(tsr_xfer x, tsr_xfer_stage *s, tsr_backend *be, tsr_comm_group_t *g,
                              void *buf, size_t count, int dtype, size_t esize, tsr_comm_op op) {
    switch (x) {
    case TSR_XFER_HOST: break;
    case TSR_XFER_DEVICE: TSR_TRY(tsr_backend_sync(be)); break;
    case TSR_XFER_STAGED: {
        size_t bytes = count * esize;
        TSR_TRY(stage_reserve(s, bytes));
        TSR_TRY(tsr_backend_to_host(be, s->buf, buf, bytes));
        TSR_TRY(tsr_comm_allreduce(g, s->buf, s->buf, count, dtype, op));
        return tsr_backend_to_device(be, buf, s->buf, bytes);
    }
    }
    return tsr_comm_allreduce(g, buf, buf, count, dtype, op);
}

tsr_status tsr_xfer_send(tsr_xfer x, tsr_xfer_stage *s, tsr_backend *be, tsr_comm_group_t *g,
                         const void *buf, size_t count, int dtype, size_t esize, int peer,
                         int tag) {
    switch (x) {
    case TSR_XFER_HOST: break;
    case TSR_XFER_DEVICE: TSR_TRY(tsr_backend_sync(be)); break;
    case TSR_XFER_STAGED: {
        size_t bytes = count * esize;
        TSR_TRY(stage_reserve(s, bytes));
        TSR_TRY(tsr_backend_to_host(be, s->buf, buf, bytes));
        return tsr_comm_send(g, s->buf, count, dtype, peer, tag);
    }
    }
    return tsr_comm_send(g, buf, count, dtype, peer, tag);
}

tsr_status tsr_xfer_recv(tsr_xfer x, tsr_xfer_stage *s, tsr_backend *be, tsr_comm_group_t *g,
                         void *buf, size_t count, int dtype, size_t esize, int peer, int tag) {
    switch (x) {
    case TSR_XFER_HOST: break;
    case TSR_XFER_DEVICE: TSR_TRY(tsr_backend_sync(be)); break;
    case TSR_XFER_STAGED: {
        size_t bytes = count * esize;
        TSR_TRY(stage_reserve(s, bytes));
        TSR_TRY(tsr_backend_sync(be)); /* a queued to_device may still read the staging buffer */
        TSR_TRY(tsr_comm_recv(g, s->buf, count, dtype, peer, tag));
        return tsr_backend_to_device(be, buf, s->buf, bytes);
    }
    }
    return tsr_comm_recv(g, buf, count, dtype, peer, tag);
}
