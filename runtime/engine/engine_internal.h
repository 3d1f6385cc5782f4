/* runtime/engine/engine_internal.h - what the engine's files share: engine.c
 * (the step protocol), engine_setup.c (init, free, scratch, data path),
 * engine_results.c (the last stage's results) and engine_train.c (adapters
 * and training). Not an API. */
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

/* ---- the last stage's results (engine_results.c); every TP rank of the
 * last stage calls them for the same rows ---- */

/* Greedy: the rows' picks (e->best_val, e->best_idx) reduced with max-with-
 * index over the TP group; the picks stay in e->best_idx. */
tsr_status tsr_engine_collect_argmax(tsr_engine *e, int n_out);

/* Top-k of one micro-batch: its n rows' k best of this slice (e->mb_logits,
 * e->mb_idx, slice columns) merged over TP into each row's k best of the
 * vocabulary, in e->best_val / e->best_idx at output index outs[i]. */
tsr_status tsr_engine_merge_topk(tsr_engine *e, int n, int k, const int32_t *outs);

/* Whole rows: every TP rank's slice part (n, slice) gathered into out
 * (n, n_vocab). */
tsr_status tsr_engine_collect_logits(tsr_engine *e, const float *part, int n, float *out);

/* A top-k step with draws, after tsr_engine_merge_topk while the micro-
 * batch's logits are on the device: the ROW_TOP rows' normalisers into
 * e->expsum, which rows go whole (e->whole), their logits appended to
 * e->whole_rows. K = the step's top_k. */
tsr_status tsr_engine_draw_rows(tsr_engine *e, const tsr_step *s, int n, int K,
                                const int32_t *outs);

/* Rank 0: the whole rows of a TOPK step (e->whole, e->whole_rows) into out. */
void tsr_engine_unpack_whole(const tsr_engine *e, int n_out, const tsr_top_out *out);

#endif
