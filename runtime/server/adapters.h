/* runtime/server/adapters.h - the LoRA adapters a server holds, on rank 0's
 * engine thread: names mapped to the engine's adapter slots
 * (runtime/engine/engine.h), and the adapter calls (tsr_ctl_request: create,
 * train, step, save, load, list, delete) run between generation steps.
 *
 * Generation requests name an adapter; the scheduler resolves the name at
 * admission (tsr_adapters_find) and holds a reference on the slot while
 * the request runs (tsr_adapters_hold), so DeleteAdapter is refused
 * (FAILED_PRECONDITION) while a request still uses it. Training an adapter
 * that requests are generating with is allowed: the requests see the new
 * weights from the next step on.
 *
 * What it is not: transport (the gRPC thread parses and answers) nor the
 * engine (which runs the operations on every rank). */
#ifndef TSR_RUNTIME_SERVER_ADAPTERS_H
#define TSR_RUNTIME_SERVER_ADAPTERS_H

#include "runtime/engine/engine.h"
#include "runtime/server/request.h"

typedef struct tsr_adapters tsr_adapters_t; /* opaque */

/* base_model: what SaveAdapter writes as base_model_name_or_path (copied).
 * memory_cap: the bytes all adapters may take together (16 a parameter:
 * the parameters, their gradients and the two AdamW moments, f32); 0 = no
 * fixed cap. Either way, on a host-memory backend an adapter that needs
 * more than the host has free (MemAvailable, and the cgroup's limit less
 * its usage, v2 or v1) is refused with RESOURCE_EXHAUSTED before the engine
 * allocates it. */
tsr_status tsr_adapters_create(tsr_engine *e, const char *base_model, long long memory_cap,
                               tsr_adapters_t **out);
void tsr_adapters_free(tsr_adapters_t *a); /* NULL ok; the engine's slots stay (engine_free) */

/* Runs one adapter call and finishes it (tsr_ctl_request_finish) with its
 * result or a refusal. Returns an error only when the engine failed (the
 * ranks are out of step: the job must end); the request is then finished
 * with INTERNAL. */
tsr_status tsr_adapters_run(tsr_adapters_t *a, tsr_ctl_request *r);

/* The engine slot of adapter `name`, or -1 when there is none. */
int tsr_adapters_find(const tsr_adapters_t *a, const char *name);

/* A generation request starts (delta +1) or stops (-1) using slot. */
void tsr_adapters_hold(tsr_adapters_t *a, int slot, int delta);

#endif
