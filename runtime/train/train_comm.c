/* runtime/train/train_comm.c - training's collective hooks over an MPI grid. See
 * train_comm.h. */
#include "runtime/train/train_comm.h"

#include <stdlib.h>
#include <string.h>

void tsr_train_mpi_init(tsr_train_mpi *h, tsr_comm_grid *grid, tsr_backend *be) {
    h->grid = grid;
    h->be = be;
    h->stage = (tsr_xfer_stage){0};
}

void tsr_train_mpi_free(tsr_train_mpi *h) {
    if (!h)
        return;
    tsr_xfer_stage_free(&h->stage);
}

/* In place over the TP group along the group's path (runtime/engine/xfer.h:
 * host buffers as they are, device buffers staged through host memory over
 * MPI or as they are over NCCL). A staged copy back is waited for, so the
 * staging buffer is free again on return. */
static tsr_status tp_reduce(tsr_train_mpi *h, void *buf, size_t count, int dtype, size_t esize,
                            tsr_comm_op op) {
    const tsr_xfer x = tsr_xfer_choose(h->grid->tp_group, h->be, 0);
    TSR_TRY(
        tsr_xfer_allreduce(x, &h->stage, h->be, h->grid->tp_group, buf, count, dtype, esize, op));
    return x == TSR_XFER_STAGED ? tsr_backend_sync(h->be) : TSR_OK;
}

static tsr_status act_sum(void *ctx, void *buf, size_t count) {
    tsr_train_mpi *h = ctx;
    return tp_reduce(h, buf, count, tsr_backend_act_dtype(h->be), tsr_backend_act_size(h->be),
                     TSR_COMM_SUM);
}

static tsr_status f32_sum(void *ctx, float *buf, size_t count) {
    return tp_reduce(ctx, buf, count, TSR_F32, sizeof(float), TSR_COMM_SUM);
}

static tsr_status f32_max(void *ctx, float *buf, size_t count) {
    return tp_reduce(ctx, buf, count, TSR_F32, sizeof(float), TSR_COMM_MAX);
}

/* Doubles summed over the world in rank order on every rank: an all-gather
 * of their bytes (comm has no f64), then the same additions everywhere. */
static tsr_status world_sum(void *ctx, double *buf, size_t count) {
    tsr_train_mpi *h = ctx;
    return tsr_train_world_sum(h->grid, buf, count);
}

tsr_status tsr_train_world_sum(tsr_comm_grid *g, double *buf, size_t count) {
    int n = g->world_size;
    double *all = malloc((size_t)n * count * sizeof *all);
    if (!all)
        return tsr_error_set(TSR_ERR_NOMEM, "training: out of memory");
    tsr_status st = tsr_comm_allgather(g->world, buf, all, count * 2, TSR_COMM_I32);
    if (st == TSR_OK) {
        for (size_t i = 0; i < count; i++) {
            double s = 0;
            for (int r = 0; r < n; r++)
                s += all[(size_t)r * count + i];
            buf[i] = s;
        }
    }
    free(all);
    return st;
}

tsr_model_comm tsr_train_mpi_model_comm(tsr_train_mpi *h) {
    tsr_model_comm c = {h, h->grid->tp > 1 ? act_sum : NULL};
    return c;
}

tsr_train_comm tsr_train_mpi_comm(tsr_train_mpi *h) {
    tsr_train_comm c = {h, h->grid->tp > 1 ? f32_sum : NULL, h->grid->tp > 1 ? f32_max : NULL,
                        h->grid->world_size > 1 ? world_sum : NULL};
    return c;
}

tsr_status tsr_train_gather_lora(const tsr_lora_adapter *a, tsr_comm_grid *grid, int layer,
                                 tsr_lora_target t, tsr_lora_buf which, float *full) {
    const tsr_lora_matrix *m = tsr_lora_matrix_of_c(a, layer, t);
    if (!m)
        return tsr_error_set(TSR_ERR_INVALID, "LoRA: layer %d %s is not adapted on this rank",
                             layer, tsr_lora_target_name(t));
    const int r = a->cfg.rank;
    const int is_a =
        which == TSR_LORA_A || which == TSR_LORA_DA || which == TSR_LORA_MA || which == TSR_LORA_VA;
    const size_t count = is_a ? (size_t)r * m->d_in : (size_t)m->d_out * r;
    memset(full, 0, count * sizeof *full);
    float *piece = malloc(tsr_lora_piece_size(a, m, which) * sizeof *piece + 1);
    if (!piece)
        return tsr_error_set(TSR_ERR_NOMEM, "training: out of memory gathering a LoRA matrix");
    tsr_status st = tsr_lora_get(a, layer, t, which, piece);
    if (st == TSR_OK && (is_a ? m->a_owner : m->b_owner)) {
        if (is_a)
            for (int i = 0; i < r; i++)
                memcpy(full + (size_t)i * m->d_in + m->in_begin, piece + (size_t)i * m->n_in,
                       (size_t)m->n_in * sizeof *full);
        else
            memcpy(full + (size_t)m->out_begin * r, piece, (size_t)m->n_out * r * sizeof *full);
    }
    free(piece);
    if (st == TSR_OK && grid->tp > 1)
        st = tsr_comm_allreduce(grid->tp_group, full, full, count, TSR_F32, TSR_COMM_SUM);
    return st;
}
