/* runtime/server/scheduler.h - continuous batching on rank 0's engine thread.
 *
 * Each iteration: take new requests from the admission queue, drop cancelled
 * or expired sequences (their cache slots are released with the next step),
 * admit waiting requests while a slot and KV space are free, then build one
 * engine step under a token budget: one decode token for every running
 * sequence first, then prompt chunks of sequences still in prefill (long
 * prompts are cut into chunks, so a long prompt never stalls the decoders).
 * After the step, every sequence that produced logits samples its next
 * token, its text goes through the streaming detokenizer and the stop rules,
 * and a chunk event (then a final event) is posted to its request.
 *
 * KV space is reserved for a sequence's worst case (prompt + max_tokens) at
 * admission, so a running sequence never runs out and nothing is preempted;
 * a request that cannot fit waits.
 *
 * LoRA adapters (runtime/server/adapters.h): a request names an adapter (or
 * none); one step mixes requests of several adapters, its tokens grouped by
 * adapter into row segments (tsr_step.seg). Adapter calls from the queue
 * (CreateAdapter ... DeleteAdapter) run between steps: one per iteration
 * while sequences are generating, so training and generation interleave.
 *
 * What it is not: transport (runtime/server/grpc_server.h) nor the engine
 * (runtime/engine/engine.h); it only runs on world rank 0. */
#ifndef TSR_RUNTIME_SERVER_SCHEDULER_H
#define TSR_RUNTIME_SERVER_SCHEDULER_H

#include "runtime/engine/engine.h"
#include "runtime/server/adapters.h"
#include "runtime/server/metrics.h"
#include "runtime/server/request.h"
#include "runtime/tokenizer/tokenizer.h"

typedef struct {
    int max_batch_tokens;     /* token budget of one step; 0 = 512 */
    double idle_wait_s;       /* how long an idle loop waits for a request; 0 = 0.05 */
    tsr_metrics *metrics;     /* tokens, latencies, finishes, steps and the batch/KV gauges are
                             recorded here (this thread only writes); NULL = off */
    const char *base_model;   /* the adapters' base_model_name_or_path when saved */
    int host_sampling;        /* 1: every sampled row's logits come to rank 0 whole; 0: rows
                               bring candidates picked on the device where their draw allows
                               (the same tokens, far fewer bytes): top-k rows their top-k;
                               top_k-off rows without penalties, bans or logprobs 128 and the
                               row's softmax normaliser, the whole row only when the nucleus
                               reaches past them; the other rows come whole in the same step */
    long long adapter_memory; /* bytes all adapters may take together (parameters,
                                 gradients, AdamW state: 16 bytes a parameter); 0 = no
                                 cap but the host's free memory */
} tsr_sched_config;

typedef struct tsr_scheduler tsr_scheduler_t; /* opaque */

/* The engine's cache slots (engine->cfg.max_seqs) are the scheduler's. */
tsr_status tsr_scheduler_create(tsr_engine *e, const tsr_tokenizer_t *tok, tsr_request_queue *q,
                                tsr_server_stats *stats, const tsr_sched_config *cfg,
                                tsr_scheduler_t **out);
void tsr_scheduler_free(tsr_scheduler_t *s); /* NULL ok; posts CANCELLED to what is left */

/* One iteration (may run no step when idle; then waits up to idle_wait_s for
 * a request). A returned error is an engine failure: the job must end. */
tsr_status tsr_scheduler_iterate(tsr_scheduler_t *s);

/* Engine steps run so far by output kind (counts[TSR_OUT_NONE] ..
 * counts[TSR_OUT_TOPK]): which steps brought whole rows of logits and which
 * only candidates or greedy picks. */
void tsr_scheduler_step_counts(const tsr_scheduler_t *s, long counts[4]);

/* Sampled (non-greedy) rows so far by how they were drawn: [0] from top-k
 * candidates, [1] top_k off from ROW_TOP_K candidates and the row's
 * normaliser, [2] top_k off but the candidates did not decide (the whole
 * row came), [3] from the whole row (penalties, logprobs, bans,
 * --host-sampling). */
void tsr_scheduler_row_counts(const tsr_scheduler_t *s, long counts[4]);

/* Sequences running or waiting for admission (in the scheduler or still in
 * the request queue). */
int tsr_scheduler_pending(const tsr_scheduler_t *s);

/* Finishes every running and waiting request with CANCELLED (shutdown after
 * the grace period). Their slots are released with the next step. */
void tsr_scheduler_cancel_all(tsr_scheduler_t *s);

#endif
