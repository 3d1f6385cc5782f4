/* runtime/engine/session.h - what a command of the `tessera` program stands
 * on: the model file opened on every rank of a grid, the tokenizer on rank
 * 0, and the SPMD engine over the grid with, optionally, a PEFT LoRA adapter
 * applied at inference (--adapter).
 *
 *   tsr_session s;
 *   tsr_session_open(&s, grid, path);          // every rank; collective
 *   ... (serve: start the front end here, before the weights load)
 *   tsr_session_start_engine(&s, &pc, &ec, adapter_dir);   // collective
 *   rank 0: drive s.lm / s.engine ...; others: tsr_engine_serve(&s.engine)
 *   tsr_session_free(&s);
 *
 * Each opening step is collective over grid->world: on any rank's failure
 * every rank returns an error; the failing rank's message names the
 * problem, and s.peer_failed tells the others that it was not theirs (so a
 * program reports each failure once).
 *
 * What it is not: a server (runtime/server/ builds on it) nor the program's
 * reporting: nothing here prints, exits or aborts the job. */
#ifndef TSR_RUNTIME_ENGINE_SESSION_H
#define TSR_RUNTIME_ENGINE_SESSION_H

#include "base/status.h"
#include "comm/comm.h"
#include "runtime/engine/engine.h"
#include "runtime/model/lm.h"
#include "runtime/model/lora.h"
#include "runtime/tokenizer/tokenizer.h"
#include "shard/model_file.h"
#include "shard/plan.h"

typedef struct {
    tsr_comm_grid *grid; /* not owned */
    const char *model;   /* the path given to open; not owned */
    double t_open;       /* tsr_now_s() at open: the load time the log reports */
    tsr_model_file_t *mf;
    tsr_tokenizer_t *tok; /* rank 0 only; NULL elsewhere */
    tsr_engine engine;
    int engine_ready;      /* engine initialised (and not yet freed) */
    int peer_failed;       /* the last error came from another rank, which reported it */
    tsr_lm lm;             /* rank 0's view of the engine, after start_engine */
    tsr_lora_adapter lora; /* --adapter: this rank's pieces, set on the engine's model */
    int lora_ready;
} tsr_session;

/* Opens `model` (a .gguf file or a Hugging Face directory) on every rank
 * and its tokenizer on world rank 0, into *s (zeroed first). Collective. On
 * failure the caller still calls tsr_session_free. */
tsr_status tsr_session_open(tsr_session *s, tsr_comm_grid *grid, const char *model);

/* Builds the engine on the opened session: the plan's layout is checked
 * first (the same on every rank: s->peer_failed set, so rank 0 alone
 * reports it), then each rank loads only its shard, with a KV cache as ec
 * says; ec->max_ctx < 0 means the model's training context, at most 4096.
 * With `adapter` (a PEFT directory), every rank then loads its pieces of it
 * (tsr_session_load_adapter) and all agree; on a failure the engine is
 * freed again without a stop message (no step was ever broadcast). Sets
 * s->lm. Collective. */
tsr_status tsr_session_start_engine(tsr_session *s, const tsr_plan_config *pc,
                                    const tsr_engine_config *ec, const char *adapter);

/* This rank's part of a PEFT LoRA adapter directory for inference: reads the
 * whole directory (every rank reads the same small files), checks it
 * against the model (rank, targets, shapes: tsr_peft_load), keeps this
 * rank's pieces on the engine's backend and sets them on the engine's
 * model. Dropout is a training-time setting and is ignored. Messages start
 * "--adapter". Not collective: tsr_session_start_engine agrees. */
tsr_status tsr_session_load_adapter(tsr_session *s, const char *dir);

/* Drops the adapter from the engine's model and frees it; nothing when
 * there is none. Before tsr_engine_free: its buffers live on the engine's
 * backend. */
void tsr_session_drop_adapter(tsr_session *s);

/* Frees the engine without telling the other ranks: for ranks other than 0
 * once tsr_engine_serve returned (rank 0 stopped it), or when the engine
 * never ran a step. */
void tsr_session_free_engine(tsr_session *s);

/* Frees everything: on world rank 0 a running engine is stopped first
 * (which releases the other ranks from tsr_engine_serve), then the adapter,
 * the engine, the tokenizer and the model file. NULL ok; a zeroed session
 * ok. */
void tsr_session_free(tsr_session *s);

#endif
