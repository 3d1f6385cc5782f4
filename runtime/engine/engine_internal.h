/* runtime/engine/engine_internal.h - what runtime/engine/engine.c (steps) and
 * runtime/engine/engine_train.c (adapters and training) share. Not an API. */
#ifndef TSR_RUNTIME_ENGINE_INTERNAL_H
#define TSR_RUNTIME_ENGINE_INTERNAL_H

#include "runtime/engine/engine.h"

/* Descriptor kinds: the header every peer waits for in tsr_engine_serve. */
enum { TSR_STEP_RUN = 1, TSR_STEP_STOP = 2, TSR_STEP_TRAIN = 3 };

/* Rank 0: broadcasts a header of `kind` with no step (TRAIN: the training
 * descriptor follows, engine_train.c's own). */
tsr_status tsr_engine_send_kind(tsr_engine *e, uint32_t kind);

/* A peer, after a TRAIN header: runs the operation rank 0 describes next.
 * Returns only errors that leave the ranks out of step (the job must end);
 * refusals every rank agreed on are rank 0's to report. */
tsr_status tsr_engine_exec_train(tsr_engine *e);

/* Frees the adapters, the trainer and the training scratch. */
void tsr_engine_train_free(tsr_engine *e);

/* TSR_ERR_NOMEM: "engine: out of memory allocating <bytes> bytes for <what>". */
tsr_status tsr_engine_oom(size_t bytes, const char *what);

/* Host array *p grown to at least `need` elements of `elem` bytes (the
 * contents kept); backend buffer *p grown to `bytes` (contents dropped).
 * `what` names the buffer in the out-of-memory message. */
tsr_status tsr_engine_grow(void **p, size_t *cap, size_t need, size_t elem, const char *what);
tsr_status tsr_engine_grow_device(tsr_backend *be, void **p, size_t *cap, size_t bytes,
                                  const char *what);

#endif
