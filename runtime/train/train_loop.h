/* runtime/train/train_loop.h - the training loop of `tessera train`, on rank
 * 0 of the MPI job: the epoch plan's batches (epoch.h) through the engine's
 * training operations (runtime/engine/engine.h, which carry each batch to
 * the other ranks), one AdamW step each, then the adapter gathered whole to
 * rank 0 and saved as a PEFT directory with loss.csv; and the check of the
 * output directory the program makes before anything runs.
 *
 * What it is not: the data reader (train_data.h), the engine or the
 * program: it prints nothing (each step goes to a callback) and never ends
 * the job; a broken collective comes back as TSR_ERR_COMM for the caller
 * to abort on. */
#ifndef TSR_RUNTIME_TRAIN_TRAIN_LOOP_H
#define TSR_RUNTIME_TRAIN_TRAIN_LOOP_H

#include <stdint.h>

#include "base/status.h"
#include "runtime/engine/engine.h"
#include "runtime/train/train.h"
#include "runtime/train/train_data.h"

/* One finished optimizer step, as the program prints it. */
typedef struct {
    int step, total;        /* 1-based step, of total */
    double loss, grad_norm; /* tsr_optim_result's */
    int tokens;             /* tokens in the step's batch */
    double seconds;         /* forward, backward and optimizer step */
} tsr_train_step_info;

typedef struct {
    int steps;              /* optimizer steps (tsr_epoch_total_steps), >= 1 */
    int batch_size;         /* examples per step, >= 1 */
    uint64_t seed;          /* the per-epoch shuffle's (tsr_epoch_shuffle) */
    tsr_optim_params optim; /* AdamW and clipping */
    const char *out;        /* the PEFT directory to save (tsr_peft_save) with loss.csv */
    const char *base_model; /* adapter_config.json's base_model_name_or_path */
    void (*on_step)(void *user, const tsr_train_step_info *info); /* NULL: none */
    void *user;
} tsr_train_loop_config;

/* Where a failed run stopped. */
typedef struct {
    int failed_step;   /* 1-based step that failed (the adapter keeps its last good state and
                          nothing is saved); 0 when no step failed */
    int gather_failed; /* gathering the adapter to rank 0 failed */
} tsr_train_loop_result;

/* Rank 0: trains the adapter in slot `slot` of e (created by the caller)
 * on `data` for cfg->steps steps, then gathers it and saves it in cfg->out
 * (replacing an adapter directory there) with loss.csv
 * ("step,loss,grad_norm,tokens"). The other ranks are in tsr_engine_serve.
 * Returns TSR_OK when saved; otherwise the failure, with *res saying where
 * (a non-finite loss or norm: TSR_ERR_RANGE at a step, refused on every
 * rank alike). TSR_ERR_COMM, TSR_ERR_INTERNAL or TSR_ERR_BACKEND at a step,
 * or TSR_ERR_COMM at the gather, leave the peers mid-operation: the caller
 * ends the job. */
tsr_status tsr_train_loop_run(tsr_engine *e, int slot, const tsr_train_loop_config *cfg,
                              const tsr_train_data *data, tsr_train_loop_result *res);

#endif
