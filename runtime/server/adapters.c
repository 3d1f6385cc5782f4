/* runtime/server/adapters.c - the server's LoRA adapters on rank 0's engine
 * thread. See adapters.h. */
#include "runtime/server/adapters.h"

#include <errno.h>
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/log.h"
#include "shard/peft.h"

typedef struct {
    int used;
    char name[TSR_ADAPTER_NAME_MAX + 1];
    char source[4096];
    int pending; /* ForwardBackward calls since the last OptimStep */
    int holds;   /* generation requests using it */
} entry;

struct tsr_adapters {
    tsr_engine *e;
    char base_model[256];
    long long memory_cap; /* bytes; 0 = none */
    entry slots[TSR_ENGINE_MAX_ADAPTERS];
};

tsr_status tsr_adapters_create(tsr_engine *e, const char *base_model, long long memory_cap,
                               tsr_adapters_t **out) {
    *out = NULL;
    tsr_adapters_t *a = calloc(1, sizeof *a);
    if (!a)
        return tsr_error_set(TSR_ERR_NOMEM, "adapters: out of memory");
    a->e = e;
    a->memory_cap = memory_cap > 0 ? memory_cap : 0;
    snprintf(a->base_model, sizeof a->base_model, "%s", base_model ? base_model : "");
    *out = a;
    return TSR_OK;
}

void tsr_adapters_free(tsr_adapters_t *a) { free(a); }

int tsr_adapters_find(const tsr_adapters_t *a, const char *name) {
    for (int i = 0; i < TSR_ENGINE_MAX_ADAPTERS; i++)
        if (a->slots[i].used && strcmp(a->slots[i].name, name) == 0)
            return i;
    return -1;
}

void tsr_adapters_hold(tsr_adapters_t *a, int slot, int delta) {
    if (a && slot >= 0 && slot < TSR_ENGINE_MAX_ADAPTERS)
        a->slots[slot].holds += delta;
}

static long long n_params(const tsr_model_config *c, const tsr_lora_config *l) {
    long long n = 0;
    for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
        int di, dout;
        if ((l->targets & TSR_LORA_TARGET_BIT(t)) &&
            tsr_peft_target_dims(c, t, &di, &dout) == TSR_OK)
            n += (long long)l->rank * (di + dout);
    }
    return n * c->n_layer;
}

/* Bytes one adapter takes in the engine: f32 parameters, gradients and
 * the two AdamW moments (runtime/model/lora.c), over all ranks. */
static long long adapter_bytes(const tsr_model_config *c, const tsr_lora_config *l) {
    return n_params(c, l) * 4 * (long long)sizeof(float);
}

/* A number in KiB from a "Name:   123 kB" line of /proc/meminfo; -1 if absent. */
static long long meminfo_kib(const char *name) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return -1;
    char line[256];
    long long v = -1;
    const size_t n = strlen(name);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, n) == 0 && line[n] == ':') {
            v = strtoll(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* One number from a cgroup v2 file of this process's cgroup ("max" and
 * absent files: -1). */
static long long cgroup_value(const char *file) {
    char path[700], rel[300] = "";
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (f) {
        char line[300];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "0::", 3) == 0) {
                snprintf(rel, sizeof rel, "%s", line + 3);
                rel[strcspn(rel, "\n")] = '\0';
            }
        fclose(f);
    }
    snprintf(path, sizeof path, "/sys/fs/cgroup%s/%s", strcmp(rel, "/") ? rel : "", file);
    f = fopen(path, "r");
    if (!f)
        return -1;
    char buf[64] = "";
    long long v = -1;
    if (fgets(buf, sizeof buf, f) && strncmp(buf, "max", 3) != 0)
        v = strtoll(buf, NULL, 10);
    fclose(f);
    return v;
}

/* One number from a file (-1: absent, unreadable, or 2^60 and more, which
 * cgroup v1 writes for "no limit"). */
static long long file_value(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long long v = -1;
    if (fscanf(f, "%lld", &v) != 1 || v >= (1LL << 60))
        v = -1;
    fclose(f);
    return v;
}

/* Host memory this process can still take without meeting the OOM killer:
 * the smaller of MemAvailable and the cgroup's room (v2: memory.max less
 * memory.current; v1, as a container sees its own: limit_in_bytes less
 * usage_in_bytes); -1 when unknown. */
static long long host_free_bytes(void) {
    long long kib = meminfo_kib("MemAvailable");
    long long avail = kib >= 0 ? kib * 1024 : -1;
    long long max = cgroup_value("memory.max"), cur = cgroup_value("memory.current");
    if (max < 0 || cur < 0) {
        max = file_value("/sys/fs/cgroup/memory/memory.limit_in_bytes");
        cur = file_value("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    }
    if (max >= 0 && cur >= 0) {
        long long room = max > cur ? max - cur : 0;
        if (avail < 0 || room < avail)
            avail = room;
    }
    return avail;
}

/* TSR_OK when an adapter of config l fits: under the --adapter-memory cap
 * with the adapters already held, and (host-memory backends) in what the
 * host has free. TSR_ERR_NOMEM with the numbers otherwise. */
static tsr_status check_memory(const tsr_adapters_t *a, const tsr_lora_config *l) {
    const long long need = adapter_bytes(&a->e->mcfg, l);
    long long held = 0;
    for (int i = 0; i < TSR_ENGINE_MAX_ADAPTERS; i++) {
        const tsr_lora_adapter *ad = a->slots[i].used ? tsr_engine_adapter_get(a->e, i) : NULL;
        if (ad)
            held += adapter_bytes(&a->e->mcfg, &ad->cfg);
    }
    if (a->memory_cap > 0 && held + need > a->memory_cap)
        return tsr_error_set(TSR_ERR_NOMEM,
                             "the adapter needs %.1f MiB (rank %d: parameters, gradients and "
                             "AdamW state), the adapters held take %.1f MiB, and --adapter-memory "
                             "allows %.1f MiB in all: DeleteAdapter one, or use a smaller rank",
                             need / 1048576.0, l->rank, held / 1048576.0,
                             a->memory_cap / 1048576.0);
    if (a->e->be && tsr_backend_host_memory(a->e->be)) {
        const long long avail = host_free_bytes();
        if (avail >= 0 && need > avail)
            return tsr_error_set(TSR_ERR_NOMEM,
                                 "the adapter needs %.1f MiB (rank %d: parameters, gradients and "
                                 "AdamW state) but the host has %.1f MiB free",
                                 need / 1048576.0, l->rank, avail / 1048576.0);
    }
    return TSR_OK;
}

static void info_of(const tsr_adapters_t *a, int slot, tsr_adapter_info *out) {
    const entry *en = &a->slots[slot];
    const tsr_lora_adapter *ad = tsr_engine_adapter_get(a->e, slot);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", en->name);
    snprintf(out->source, sizeof out->source, "%s", en->source);
    out->pending_batches = en->pending;
    if (ad) {
        out->cfg = ad->cfg;
        out->step = ad->step;
        out->n_params = n_params(&a->e->mcfg, &ad->cfg);
    }
}

/* The engine's verdict as the call's status. Engine failures (the ranks out
 * of step) are not mapped: the caller ends the job. */
static int code_of(tsr_status st) {
    switch (st) {
    case TSR_OK: return GRPC_STATUS_OK;
    case TSR_ERR_NOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case TSR_ERR_IO: return GRPC_STATUS_NOT_FOUND;
    case TSR_ERR_UNSUPPORTED: return GRPC_STATUS_UNIMPLEMENTED;
    case TSR_ERR_UNAVAILABLE: return GRPC_STATUS_UNAVAILABLE;
    default: return GRPC_STATUS_INVALID_ARGUMENT;
    }
}

static int engine_broken(tsr_status st) {
    return st == TSR_ERR_COMM || st == TSR_ERR_INTERNAL || st == TSR_ERR_BACKEND;
}

static int free_slot(const tsr_adapters_t *a) {
    for (int i = 0; i < TSR_ENGINE_MAX_ADAPTERS; i++)
        if (!a->slots[i].used)
            return i;
    return -1;
}

/* Reads the whole file `path` into *out (malloc'd) of *len bytes. */
static tsr_status slurp(const char *path, uint8_t **out, size_t *len) {
    char *buf;
    TSR_TRY(tsr_fs_read_file(path, 0, &buf, len));
    *out = (uint8_t *)buf;
    return TSR_OK;
}

/* SaveAdapter: the adapter gathered to rank 0, written to r->path and/or
 * (return_files) to a private temporary directory whose two files are read
 * back into the response. */
static tsr_status run_save(tsr_adapters_t *a, int slot, tsr_ctl_request *r) {
    tsr_peft_adapter pa;
    tsr_status st = tsr_engine_adapter_gather(a->e, slot, &pa);
    if (st != TSR_OK)
        return st;
    snprintf(pa.base_model, sizeof pa.base_model, "%s", a->base_model);
    char tmp[64] = "", dir[4200];
    if (r->path[0]) {
        st = tsr_peft_save(r->path, &pa, &a->e->mcfg);
        snprintf(dir, sizeof dir, "%s", r->path);
    } else {
        snprintf(tmp, sizeof tmp, "/tmp/tessera-save-XXXXXX");
        if (!mkdtemp(tmp))
            st =
                tsr_error_set(TSR_ERR_IO, "cannot make a temporary directory: %s", strerror(errno));
        snprintf(dir, sizeof dir, "%s/adapter", tmp);
        if (st == TSR_OK)
            st = tsr_peft_save(dir, &pa, &a->e->mcfg);
    }
    tsr_peft_free(&pa);
    if (st == TSR_OK && r->return_files) {
        char p[4300];
        snprintf(p, sizeof p, "%s/adapter_config.json", dir);
        st = slurp(p, &r->config_json, &r->config_len);
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
        if (st == TSR_OK)
            st = slurp(p, &r->safetensors, &r->safetensors_len);
    }
    if (tmp[0]) {
        char p[4300];
        snprintf(p, sizeof p, "%s/adapter_config.json", dir);
        unlink(p);
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
        unlink(p);
        rmdir(dir);
        rmdir(tmp);
    }
    const tsr_lora_adapter *ad = tsr_engine_adapter_get(a->e, slot);
    r->step = ad ? ad->step : 0;
    return st;
}

/* The call's own result or refusal, once it ran. engine_broken verdicts
 * are the caller's. */
static void finish_status(tsr_ctl_request *r, tsr_status st, int code_override) {
    if (st == TSR_OK)
        tsr_ctl_request_finish(r, GRPC_STATUS_OK, NULL);
    else
        tsr_ctl_request_finish(r, code_override >= 0 ? code_override : code_of(st), "%s",
                               tsr_error_msg());
}

tsr_status tsr_adapters_run(tsr_adapters_t *a, tsr_ctl_request *r) {
    tsr_engine *e = a->e;
    tsr_status st = TSR_OK;
    int code = -1; /* the status for a refusal; -1: code_of */
    int slot = r->name[0] ? tsr_adapters_find(a, r->name) : -1;
    const int needs = r->kind != TSR_CTL_CREATE && r->kind != TSR_CTL_LOAD &&
                      r->kind != TSR_CTL_LIST && !(r->kind == TSR_CTL_FORWARD && !r->name[0]);
    if (atomic_load(&r->cancelled)) {
        tsr_ctl_request_finish(r, GRPC_STATUS_CANCELLED, "cancelled before it ran");
        return TSR_OK;
    }
    if (needs && slot < 0) {
        tsr_ctl_request_finish(r, GRPC_STATUS_NOT_FOUND,
                               "no adapter named '%s' (CreateAdapter or LoadAdapter it first; "
                               "ListAdapters shows what exists)",
                               r->name);
        return TSR_OK;
    }
    switch (r->kind) {
    case TSR_CTL_CREATE:
    case TSR_CTL_LOAD: {
        if (slot >= 0) {
            tsr_ctl_request_finish(r, GRPC_STATUS_ALREADY_EXISTS,
                                   "an adapter named '%s' exists already (DeleteAdapter it, or "
                                   "pick another name)",
                                   r->name);
            return TSR_OK;
        }
        slot = free_slot(a);
        if (slot < 0) {
            tsr_ctl_request_finish(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                   "all %d adapter slots are in use: DeleteAdapter one first",
                                   TSR_ENGINE_MAX_ADAPTERS);
            return TSR_OK;
        }
        if (r->kind == TSR_CTL_CREATE) {
            st = check_memory(a, &r->lora);
            if (st == TSR_OK)
                st = tsr_engine_adapter_create(e, slot, &r->lora);
        } else {
            tsr_peft_adapter pa;
            st = tsr_peft_load(r->path, &e->mcfg, &pa);
            if (st == TSR_OK) {
                tsr_lora_config c = TSR_LORA_CONFIG_INIT;
                c.rank = pa.r;
                c.targets = pa.targets;
                st = check_memory(a, &c);
                if (st != TSR_OK)
                    st = tsr_error_wrap(st, "LoadAdapter %s", r->path);
                else
                    st = tsr_engine_adapter_load(e, slot, &pa);
                tsr_peft_free(&pa);
            } else {
                st = tsr_error_wrap(st, "LoadAdapter %s", r->path);
                code = st == TSR_ERR_IO ? GRPC_STATUS_NOT_FOUND : GRPC_STATUS_INVALID_ARGUMENT;
            }
        }
        if (st == TSR_OK) {
            entry *en = &a->slots[slot];
            memset(en, 0, sizeof *en);
            en->used = 1;
            snprintf(en->name, sizeof en->name, "%s", r->name);
            snprintf(en->source, sizeof en->source, "%s",
                     r->kind == TSR_CTL_CREATE ? "created" : r->path);
            info_of(a, slot, &r->info);
            TSR_LOG_I("adapter %s: %s in slot %d (r %d, targets 0x%x)", r->name,
                      r->kind == TSR_CTL_CREATE ? "created" : "loaded", slot, r->info.cfg.rank,
                      r->info.cfg.targets);
        }
        break;
    }
    case TSR_CTL_FORWARD_BACKWARD:
    case TSR_CTL_FORWARD: {
        tsr_train_batch b = {.n_seqs = r->n_seqs,
                             .seq_start = r->seq_start,
                             .tokens = r->tokens,
                             .weights = r->weights};
        const int bwd = r->kind == TSR_CTL_FORWARD_BACKWARD;
        st = tsr_engine_train_batch(e, slot, &b, bwd, &r->stats);
        if (st == TSR_OK && bwd)
            a->slots[slot].pending++;
        r->pending_batches = bwd ? a->slots[slot].pending : 0;
        break;
    }
    case TSR_CTL_OPTIM_STEP:
        st = tsr_engine_optim_step(e, slot, &r->optim, &r->result);
        if (!engine_broken(st))
            a->slots[slot].pending = 0; /* a refused step drops what was accumulated too */
        if (st == TSR_ERR_RANGE || st == TSR_ERR_INVALID)
            code = GRPC_STATUS_FAILED_PRECONDITION;
        break;
    case TSR_CTL_SAVE:
        st = run_save(a, slot, r);
        if (st == TSR_ERR_IO || st == TSR_ERR_INVALID)
            code = GRPC_STATUS_FAILED_PRECONDITION; /* the path cannot take an adapter */
        break;
    case TSR_CTL_LIST: {
        int n = 0;
        r->list = calloc(TSR_ENGINE_MAX_ADAPTERS, sizeof *r->list);
        if (!r->list) {
            st = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
            break;
        }
        for (int i = 0; i < TSR_ENGINE_MAX_ADAPTERS; i++)
            if (a->slots[i].used)
                info_of(a, i, &r->list[n++]);
        r->n_list = n;
        r->max_adapters = TSR_ENGINE_MAX_ADAPTERS;
        break;
    }
    case TSR_CTL_DELETE:
        if (a->slots[slot].holds > 0) {
            tsr_ctl_request_finish(r, GRPC_STATUS_FAILED_PRECONDITION,
                                   "adapter '%s' is in use by %d generation request%s; retry "
                                   "when they finish",
                                   r->name, a->slots[slot].holds,
                                   a->slots[slot].holds == 1 ? "" : "s");
            return TSR_OK;
        }
        st = tsr_engine_adapter_delete(e, slot);
        if (st == TSR_OK)
            memset(&a->slots[slot], 0, sizeof a->slots[slot]);
        break;
    }
    if (engine_broken(st)) {
        tsr_ctl_request_finish(r, GRPC_STATUS_INTERNAL, "the engine failed: %s", tsr_error_msg());
        return st;
    }
    finish_status(r, st, code);
    return TSR_OK;
}
