/* runtime/model/lora.c - LoRA adapters: configuration, sharding, PEFT
 * initialisation and the parameter/gradient/optimizer-state slabs.
 * Contracts and the sharding rules are in runtime/model/lora.h. */
#include "runtime/model/lora.h"

#include "shard/peft.h"
#include "base/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- names and the configuration ------------------------------------------------------ */

static const char *const short_names[TSR_LORA_N_TARGETS] = {"q",    "k",  "v",   "o",
                                                            "gate", "up", "down"};

const char *tsr_lora_target_name(tsr_lora_target t) {
    return t >= 0 && t < TSR_LORA_N_TARGETS ? short_names[t] : "?";
}

/* PEFT's module names are the file format's (shard/peft.c). */
const char *tsr_lora_target_peft_name(tsr_lora_target t) {
    const char *n = tsr_peft_target_name(t);
    return n ? n : "?";
}

tsr_status tsr_lora_parse_targets(const char *s, unsigned *out) {
    unsigned mask = 0;
    const char *p = s ? s : "";
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *b = p;
        while (len && (*b == ' ' || *b == '\t'))
            b++, len--;
        while (len && (b[len - 1] == ' ' || b[len - 1] == '\t'))
            len--;
        if (len == 0)
            return tsr_error_set(TSR_ERR_INVALID,
                                 "LoRA targets '%s': empty item (expected a comma-separated list "
                                 "of q,k,v,o,gate,up,down)",
                                 s ? s : "");
        int found = 0;
        if (len == 3 && !strncmp(b, "all", 3)) {
            mask |= TSR_LORA_TARGETS_ALL;
            found = 1;
        }
        for (int t = 0; t < TSR_LORA_N_TARGETS && !found; t++) {
            if ((strlen(short_names[t]) == len && !strncmp(b, short_names[t], len)) ||
                (strlen(tsr_peft_target_name(t)) == len &&
                 !strncmp(b, tsr_peft_target_name(t), len))) {
                mask |= TSR_LORA_TARGET_BIT(t);
                found = 1;
            }
        }
        if (!found)
            return tsr_error_set(TSR_ERR_INVALID,
                                 "LoRA targets: unknown module '%.*s' (known: q,k,v,o,gate,up,down "
                                 "or q_proj ... down_proj, or all)",
                                 (int)len, b);
        if (!end)
            break;
        p = end + 1;
    }
    *out = mask;
    return TSR_OK;
}

tsr_status tsr_lora_config_check(const tsr_lora_config *cfg) {
    if (cfg->rank < 1)
        return tsr_error_set(TSR_ERR_INVALID, "LoRA rank %d (must be >= 1)", cfg->rank);
    if (!(cfg->alpha > 0.0f) || !isfinite(cfg->alpha))
        return tsr_error_set(TSR_ERR_INVALID, "LoRA alpha %g (must be finite and > 0)",
                             (double)cfg->alpha);
    if (cfg->targets == 0 || (cfg->targets & ~TSR_LORA_TARGETS_ALL))
        return tsr_error_set(TSR_ERR_INVALID,
                             "LoRA target mask 0x%x (must be a non-empty subset "
                             "of q,k,v,o,gate,up,down)",
                             cfg->targets);
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return tsr_error_set(TSR_ERR_INVALID, "LoRA dropout %g (must be in [0, 1))",
                             (double)cfg->dropout);
    return TSR_OK;
}

float tsr_lora_scale(const tsr_lora_config *cfg) {
    return cfg->use_rslora ? (float)(cfg->alpha / sqrt((double)cfg->rank))
                           : (float)(cfg->alpha / (double)cfg->rank);
}

/* ---- the shard ---------------------------------------------------------------------- */

tsr_lora_shard tsr_lora_shard_single(const tsr_model_config *c) {
    tsr_lora_shard s = {0};
    s.slice.layer_end = c->n_layer;
    s.slice.n_head = c->n_head;
    s.slice.n_kv_head = c->n_head_kv;
    s.slice.n_ff = c->n_ff;
    s.slice.n_vocab = c->n_vocab;
    s.tp_size = 1;
    s.kv_share = 1;
    return s;
}

tsr_status tsr_lora_shard_of(const tsr_shard_plan *p, int tp_rank, int pp_rank,
                             tsr_lora_shard *out) {
    memset(out, 0, sizeof *out);
    TSR_TRY(tsr_shard_plan_slice(p, tp_rank, pp_rank, &out->slice));
    out->tp_rank = tp_rank;
    out->tp_size = p->tp;
    out->kv_share = p->kv_replicated ? p->kv_ranks_per_head : 1;
    return TSR_OK;
}

/* ---- the initialisation's random stream ----------------------------------------------- */

void tsr_lora_init_values(uint64_t seed, int layer, int target, float bound, float *out, size_t n) {
    uint64_t sm = seed ^ (0x9E3779B97F4A7C15ull *
                          (uint64_t)(1 + (int64_t)layer * TSR_LORA_N_TARGETS + target));
    uint64_t s[4];
    for (int i = 0; i < 4; i++)
        s[i] = tsr_splitmix64(&sm);
    for (size_t i = 0; i < n; i++) {
        double u = tsr_unit_double(tsr_xoshiro256ss(s));
        out[i] = (float)((2.0 * u - 1.0) * bound);
    }
}

/* ---- the adapter -------------------------------------------------------------------- */

tsr_status tsr_lora_fill_zero(tsr_backend *be, void *p, size_t bytes) {
    if (tsr_backend_has_fill_zero(be))
        return tsr_backend_fill_zero(be, p, bytes);
    static const unsigned char zeros[65536];
    for (size_t off = 0; off < bytes; off += sizeof zeros) {
        size_t k = bytes - off < sizeof zeros ? bytes - off : sizeof zeros;
        TSR_TRY(tsr_backend_to_device(be, (char *)p + off, zeros, k));
    }
    return TSR_OK;
}

static int is_column_parallel(tsr_lora_target t) { return t != TSR_LORA_O && t != TSR_LORA_DOWN; }

/* The full shape and this rank's ranges of target t (everything but the
 * offsets and pointers). */
static void describe(const tsr_model_config *c, const tsr_lora_shard *sh, int layer,
                     tsr_lora_target t, tsr_lora_matrix *m) {
    const tsr_model_slice *s = &sh->slice;
    const int C = c->n_embd, hd = c->head_dim;
    memset(m, 0, sizeof *m);
    m->present = 1;
    m->layer = layer;
    m->target = t;
    m->a_replicated = is_column_parallel(t);
    int full, begin, len; /* the split dimension */
    switch (t) {
    case TSR_LORA_Q:
    case TSR_LORA_O: full = c->n_head * hd, begin = s->head_begin * hd, len = s->n_head * hd; break;
    case TSR_LORA_K:
    case TSR_LORA_V:
        full = c->n_head_kv * hd, begin = s->kv_head_begin * hd, len = s->n_kv_head * hd;
        break;
    default: /* gate, up, down */ full = c->n_ff, begin = s->ff_begin, len = s->n_ff; break;
    }
    if (m->a_replicated) {
        m->d_in = C, m->in_begin = 0, m->n_in = C;
        m->d_out = full, m->out_begin = begin, m->n_out = len;
        m->b_shared = (t == TSR_LORA_K || t == TSR_LORA_V) && sh->kv_share > 1;
        m->a_owner = sh->tp_rank == 0;
        m->b_owner = m->b_shared ? sh->tp_rank % sh->kv_share == 0 : 1;
    } else {
        m->d_in = full, m->in_begin = begin, m->n_in = len;
        m->d_out = C, m->out_begin = 0, m->n_out = C;
        m->a_owner = 1;
        m->b_owner = sh->tp_rank == 0;
    }
}

static tsr_status check_shard(const tsr_model_config *c, const tsr_lora_shard *sh) {
    const tsr_model_slice *s = &sh->slice;
    if (s->layer_begin < 0 || s->layer_end > c->n_layer || s->layer_begin >= s->layer_end ||
        s->head_begin < 0 || s->n_head <= 0 || s->head_begin + s->n_head > c->n_head ||
        s->kv_head_begin < 0 || s->n_kv_head <= 0 ||
        s->kv_head_begin + s->n_kv_head > c->n_head_kv || s->ff_begin < 0 || s->n_ff <= 0 ||
        s->ff_begin + s->n_ff > c->n_ff || sh->tp_size < 1 || sh->tp_rank < 0 ||
        sh->tp_rank >= sh->tp_size || sh->kv_share < 1 || sh->kv_share > sh->tp_size)
        return tsr_error_set(TSR_ERR_INVALID, "LoRA adapter: the shard does not fit the model");
    return TSR_OK;
}

static tsr_status adapter_init(tsr_lora_adapter *a, const tsr_lora_config *cfg,
                               const tsr_model_config *mc, const tsr_lora_shard *shard,
                               tsr_backend *be, int with_state) {
    memset(a, 0, sizeof *a);
    TSR_TRY(tsr_lora_config_check(cfg));
    TSR_TRY(check_shard(mc, shard));
    tsr_status st = TSR_OK;
    float *host = NULL, *draw = NULL;
    a->cfg = *cfg;
    a->scale = tsr_lora_scale(cfg);
    a->be = be;
    a->mcfg = *mc;
    a->shard = *shard;
    a->layer_begin = shard->slice.layer_begin;
    a->n_layers = shard->slice.layer_end - shard->slice.layer_begin;
    const size_t r = (size_t)cfg->rank, nm = (size_t)a->n_layers * TSR_LORA_N_TARGETS;
    a->mats = calloc(nm, sizeof *a->mats);
    if (!a->mats) {
        st = tsr_error_set(TSR_ERR_NOMEM, "LoRA: out of memory for %zu matrices", nm);
        goto cleanup;
    }
    /* Pass 1: shapes and region sizes; pass 2: offsets. Region of each
     * factor: 0 replicated over TP, 1 shared by kv_share ranks, 2 local. */
    size_t region_n[3] = {0, 0, 0}, region_at[3];
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            region_at[0] = 0;
            region_at[1] = region_n[0];
            region_at[2] = region_n[0] + region_n[1];
        }
        for (int l = 0; l < a->n_layers; l++) {
            for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
                if (!(cfg->targets & TSR_LORA_TARGET_BIT(t)))
                    continue;
                tsr_lora_matrix *m = &a->mats[(size_t)l * TSR_LORA_N_TARGETS + t];
                describe(mc, shard, a->layer_begin + l, (tsr_lora_target)t, m);
                int ra = m->a_replicated ? 0 : 2;
                int rb = m->a_replicated ? (m->b_shared ? 1 : 2) : 0;
                size_t na = r * m->n_in, nb = (size_t)m->n_out * r;
                if (pass == 0) {
                    region_n[ra] += na;
                    region_n[rb] += nb;
                } else {
                    m->a_off = region_at[ra], region_at[ra] += na;
                    m->b_off = region_at[rb], region_at[rb] += nb;
                }
            }
        }
    }
    a->repl_off = 0, a->repl_n = region_n[0];
    a->shared_off = region_n[0], a->shared_n = region_n[1];
    a->local_off = region_n[0] + region_n[1], a->local_n = region_n[2];
    a->n_params = region_n[0] + region_n[1] + region_n[2];
    const size_t bytes = (a->n_params ? a->n_params : 1) * sizeof(float);
    TSR_CHECK_GOTO(st, tsr_backend_alloc(be, bytes, "LoRA parameters", (void **)&a->param));
    if (with_state) {
        TSR_CHECK_GOTO(st, tsr_backend_alloc(be, bytes, "LoRA gradients", (void **)&a->grad));
        TSR_CHECK_GOTO(st, tsr_backend_alloc(be, bytes, "LoRA AdamW state", (void **)&a->m));
        TSR_CHECK_GOTO(st, tsr_backend_alloc(be, bytes, "LoRA AdamW state", (void **)&a->v));
    }
    for (size_t i = 0; i < nm; i++) {
        tsr_lora_matrix *m = &a->mats[i];
        if (!m->present)
            continue;
        m->A = a->param + m->a_off, m->B = a->param + m->b_off;
        if (!with_state)
            continue; /* frozen: no gradients or moments */
        m->dA = a->grad + m->a_off, m->dB = a->grad + m->b_off;
        m->mA = a->m + m->a_off, m->mB = a->m + m->b_off;
        m->vA = a->v + m->a_off, m->vB = a->v + m->b_off;
    }
    /* A from the full matrix's stream (this rank's columns), B zero */
    host = calloc(a->n_params ? a->n_params : 1, sizeof *host);
    if (!host) {
        st = tsr_error_set(TSR_ERR_NOMEM, "LoRA: out of memory for %zu parameters", a->n_params);
        goto cleanup;
    }
    for (size_t i = 0; i < nm; i++) {
        const tsr_lora_matrix *m = &a->mats[i];
        if (!m->present)
            continue;
        float *nd = realloc(draw, r * m->d_in * sizeof *draw);
        if (!nd) {
            st = tsr_error_set(TSR_ERR_NOMEM, "LoRA: out of memory for %zu initial values",
                               r * m->d_in);
            goto cleanup;
        }
        draw = nd;
        /* kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound
         * gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in), fan_in = the full d_in */
        float bound = (float)(1.0 / sqrt((double)m->d_in));
        tsr_lora_init_values(cfg->seed, m->layer, m->target, bound, draw, r * m->d_in);
        for (size_t k = 0; k < r; k++)
            memcpy(host + m->a_off + k * m->n_in, draw + k * m->d_in + m->in_begin,
                   (size_t)m->n_in * sizeof *host);
    }
    TSR_CHECK_GOTO(st, tsr_backend_to_device(be, a->param, host, a->n_params * sizeof *host));
    /* to_device may read `host` until the stream reaches the copy */
    TSR_CHECK_GOTO(st, tsr_backend_sync(be));
    if (with_state) {
        TSR_CHECK_GOTO(st, tsr_lora_fill_zero(be, a->grad, a->n_params * sizeof(float)));
        TSR_CHECK_GOTO(st, tsr_lora_fill_zero(be, a->m, a->n_params * sizeof(float)));
        TSR_CHECK_GOTO(st, tsr_lora_fill_zero(be, a->v, a->n_params * sizeof(float)));
    }
    free(host);
    free(draw);
    return TSR_OK;
cleanup:
    free(host);
    free(draw);
    tsr_lora_adapter_free(a);
    return st;
}

tsr_status tsr_lora_adapter_init(tsr_lora_adapter *a, const tsr_lora_config *cfg,
                                 const tsr_model_config *mc, const tsr_lora_shard *shard,
                                 tsr_backend *be) {
    return adapter_init(a, cfg, mc, shard, be, 1);
}

tsr_status tsr_lora_adapter_init_frozen(tsr_lora_adapter *a, const tsr_lora_config *cfg,
                                        const tsr_model_config *mc, const tsr_lora_shard *shard,
                                        tsr_backend *be) {
    return adapter_init(a, cfg, mc, shard, be, 0);
}

void tsr_lora_adapter_free(tsr_lora_adapter *a) {
    if (!a)
        return;
    if (a->be) {
        tsr_backend_free(a->be, a->param);
        tsr_backend_free(a->be, a->grad);
        tsr_backend_free(a->be, a->m);
        tsr_backend_free(a->be, a->v);
    }
    free(a->mats);
    memset(a, 0, sizeof *a);
}

const tsr_lora_matrix *tsr_lora_matrix_of_c(const tsr_lora_adapter *a, int layer,
                                            tsr_lora_target t) {
    int l = layer - a->layer_begin;
    if (!a->mats || l < 0 || l >= a->n_layers || t < 0 || t >= TSR_LORA_N_TARGETS)
        return NULL;
    const tsr_lora_matrix *m = &a->mats[(size_t)l * TSR_LORA_N_TARGETS + t];
    return m->present ? m : NULL;
}

tsr_lora_matrix *tsr_lora_matrix_of(tsr_lora_adapter *a, int layer, tsr_lora_target t) {
    return (tsr_lora_matrix *)tsr_lora_matrix_of_c(a, layer, t);
}

size_t tsr_lora_piece_size(const tsr_lora_adapter *a, const tsr_lora_matrix *m,
                           tsr_lora_buf which) {
    int is_a =
        which == TSR_LORA_A || which == TSR_LORA_DA || which == TSR_LORA_MA || which == TSR_LORA_VA;
    return (size_t)a->cfg.rank * (is_a ? m->n_in : m->n_out);
}

static float *buf_of(const tsr_lora_matrix *m, tsr_lora_buf which) {
    switch (which) {
    case TSR_LORA_A: return m->A;
    case TSR_LORA_B: return m->B;
    case TSR_LORA_DA: return m->dA;
    case TSR_LORA_DB: return m->dB;
    case TSR_LORA_MA: return m->mA;
    case TSR_LORA_VA: return m->vA;
    case TSR_LORA_MB: return m->mB;
    case TSR_LORA_VB: return m->vB;
    }
    return NULL;
}

static tsr_status find(const tsr_lora_adapter *a, int layer, tsr_lora_target t, tsr_lora_buf which,
                       const tsr_lora_matrix **m, float **p) {
    *m = tsr_lora_matrix_of_c(a, layer, t);
    if (!*m)
        return tsr_error_set(TSR_ERR_INVALID, "LoRA: layer %d %s is not adapted on this rank",
                             layer, tsr_lora_target_name(t));
    *p = buf_of(*m, which);
    if (!*p)
        return tsr_error_set(TSR_ERR_INVALID,
                             "LoRA: buffer %d is not there (unknown, or a frozen adapter's "
                             "gradient/optimizer state)",
                             (int)which);
    return TSR_OK;
}

tsr_status tsr_lora_get(const tsr_lora_adapter *a, int layer, tsr_lora_target t, tsr_lora_buf which,
                        float *out) {
    const tsr_lora_matrix *m;
    float *p;
    TSR_TRY(find(a, layer, t, which, &m, &p));
    return tsr_backend_to_host(a->be, out, p, tsr_lora_piece_size(a, m, which) * sizeof *out);
}

tsr_status tsr_lora_set(tsr_lora_adapter *a, int layer, tsr_lora_target t, tsr_lora_buf which,
                        const float *in) {
    const tsr_lora_matrix *m;
    float *p;
    TSR_TRY(find(a, layer, t, which, &m, &p));
    TSR_TRY(tsr_backend_to_device(a->be, p, in, tsr_lora_piece_size(a, m, which) * sizeof *in));
    return tsr_backend_sync(a->be); /* the caller may free `in` on return */
}

tsr_status tsr_lora_set_full(tsr_lora_adapter *a, int layer, tsr_lora_target t, const float *A,
                             const float *B) {
    const tsr_lora_matrix *m = tsr_lora_matrix_of_c(a, layer, t);
    if (!m)
        return TSR_OK;
    const int r = a->cfg.rank;
    float *piece = malloc((size_t)r * m->n_in * sizeof *piece + 1);
    if (!piece)
        return tsr_error_set(TSR_ERR_NOMEM, "LoRA: out of memory");
    for (int i = 0; i < r; i++) /* A's rows, each cut to this rank's columns */
        memcpy(piece + (size_t)i * m->n_in, A + (size_t)i * m->d_in + m->in_begin,
               (size_t)m->n_in * sizeof *piece);
    tsr_status st = tsr_lora_set(a, layer, t, TSR_LORA_A, piece);
    free(piece);
    TSR_TRY(st);
    return tsr_lora_set(a, layer, t, TSR_LORA_B,
                        B + (size_t)m->out_begin * r); /* rows: contiguous */
}

tsr_status tsr_lora_zero_grads(tsr_lora_adapter *a) {
    a->grads_reduced = 0;
    if (!a->grad)
        return TSR_OK; /* frozen: nothing to zero */
    return tsr_lora_fill_zero(a->be, a->grad, a->n_params * sizeof(float));
}

void tsr_lora_reset_accum(tsr_lora_adapter *a) {
    a->loss_sum = 0;
    a->weight_sum = 0;
    a->n_loss_tokens = 0;
    a->n_tokens = 0;
    a->n_batches = 0;
}
