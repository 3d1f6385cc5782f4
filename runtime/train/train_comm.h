/* runtime/train/train_comm.h - the collective hooks LoRA training needs, over the
 * tensor-parallel group of an MPI grid (tsr_model_comm for the activations,
 * tsr_train_comm for the f32 reductions and the world sum of doubles).
 *
 * Buffers move along the TP group's path of runtime/engine/xfer.h, the same
 * layer as the engine's transfers: host buffers as they are, device buffers
 * staged through a host buffer over MPI (to_host, MPI, to_device, sync) or
 * passed as they are over NCCL (after the compute stream). The world sum
 * all-gathers the doubles' bytes and adds them in rank order, so every rank
 * gets the same bits.
 *
 * What it is not: the engine's activation transfers over TP and PP (the
 * engine's own, over the same layer), or a choice of group. */
#ifndef TSR_RUNTIME_TRAIN_COMM_H
#define TSR_RUNTIME_TRAIN_COMM_H

#include <stddef.h>

#include "comm/comm.h"
#include "kernels/backend.h"
#include "runtime/engine/xfer.h"
#include "runtime/model/model.h"
#include "runtime/train/train.h"

typedef struct {
    tsr_comm_grid *grid;
    tsr_backend *be;
    tsr_xfer_stage stage; /* host staging for device buffers over MPI */
} tsr_train_mpi;

/* Binds the hooks to a grid and a backend (be may be set later, before the
 * first collective). Frees nothing; tsr_train_mpi_free releases the staging. */
void tsr_train_mpi_init(tsr_train_mpi *h, tsr_comm_grid *grid, tsr_backend *be);
void tsr_train_mpi_free(tsr_train_mpi *h); /* NULL ok */

/* The model's activation all-reduce over TP (NULL hook on one TP rank). */
tsr_model_comm tsr_train_mpi_model_comm(tsr_train_mpi *h);

/* The trainer's reductions: f32 sum and max over TP (NULL on one TP rank),
 * the world sum over every rank (NULL on one rank). */
tsr_train_comm tsr_train_mpi_comm(tsr_train_mpi *h);

/* count doubles in host memory summed over g->world in rank order, in
 * place: every rank gets the same bits. Collective over the world. */
tsr_status tsr_train_world_sum(tsr_comm_grid *g, double *buf, size_t count);

/* Buffer `which` of (layer, t) whole, (r, d_in) for A-side buffers or
 * (d_out, r) for B-side ones, into host `full` on every rank of the TP group:
 * the owner of each piece places it, the group sums (everything else is 0).
 * Collective over the TP group. */
tsr_status tsr_train_gather_lora(const tsr_lora_adapter *a, tsr_comm_grid *grid, int layer,
                                 tsr_lora_target t, tsr_lora_buf which, float *full);

#endif
