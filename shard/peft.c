/* shard/peft.c - the PEFT LoRA adapter in host memory: targets and their
 * shapes, init/free, and PEFT's tensor names (shard/peft.h). Reading is
 * shard/peft_load.c, writing shard/peft_save.c.
 *
 * What it is not: no file I/O, no device memory, no sharding. */
#include "shard/peft.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *module; /* PEFT's module name */
    const char *block;  /* the submodule of the decoder layer holding it */
} peft_targets[TSR_LORA_N_TARGETS] = {
    {"q_proj", "self_attn"}, {"k_proj", "self_attn"}, {"v_proj", "self_attn"},
    {"o_proj", "self_attn"}, {"gate_proj", "mlp"},    {"up_proj", "mlp"},
    {"down_proj", "mlp"},
};

const char *tsr_peft_target_name(int t) {
    return t >= 0 && t < TSR_LORA_N_TARGETS ? peft_targets[t].module : NULL;
}

tsr_status tsr_peft_target_dims(const tsr_model_config *cfg, int t, int *d_in, int *d_out) {
    int q = cfg->n_head * cfg->head_dim, kv = cfg->n_head_kv * cfg->head_dim;
    int in, out;
    switch (t) {
    case TSR_LORA_Q: in = cfg->n_embd, out = q; break;
    case TSR_LORA_K:
    case TSR_LORA_V: in = cfg->n_embd, out = kv; break;
    case TSR_LORA_O: in = q, out = cfg->n_embd; break;
    case TSR_LORA_GATE:
    case TSR_LORA_UP: in = cfg->n_embd, out = cfg->n_ff; break;
    case TSR_LORA_DOWN: in = cfg->n_ff, out = cfg->n_embd; break;
    default: return tsr_error_set(TSR_ERR_INVALID, "LoRA target %d is out of range (0..6)", t);
    }
    *d_in = in;
    *d_out = out;
    return TSR_OK;
}

float tsr_peft_scaling(const tsr_peft_adapter *a) {
    return a->use_rslora ? a->alpha / sqrtf((float)a->r) : a->alpha / (float)a->r;
}

/* ---- init / free -------------------------------------------------------- */

void tsr_peft_free(tsr_peft_adapter *a) {
    if (!a)
        return;
    size_t n = a->n_layers > 0 ? (size_t)a->n_layers * TSR_LORA_N_TARGETS : 0;
    for (size_t i = 0; i < n; i++) {
        if (a->A)
            free(a->A[i]);
        if (a->B)
            free(a->B[i]);
    }
    free(a->A);
    free(a->B);
    memset(a, 0, sizeof *a);
}

tsr_status tsr_peft_alloc_arrays(tsr_peft_adapter *a, const tsr_model_config *cfg) {
    size_t n = (size_t)cfg->n_layer * TSR_LORA_N_TARGETS;
    a->n_layers = cfg->n_layer;
    a->A = calloc(n, sizeof *a->A);
    a->B = calloc(n, sizeof *a->B);
    if (!a->A || !a->B)
        return tsr_error_set(TSR_ERR_NOMEM, "LoRA adapter: out of memory for %zu matrices", 2 * n);
    return TSR_OK;
}

tsr_status tsr_peft_init(tsr_peft_adapter *a, const tsr_model_config *cfg, int r, float alpha,
                         unsigned targets) {
    if (!a || !cfg)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_peft_init: NULL argument");
    memset(a, 0, sizeof *a);
    if (r <= 0)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_peft_init: rank %d must be positive", r);
    if (!isfinite(alpha))
        return tsr_error_set(TSR_ERR_INVALID, "tsr_peft_init: alpha %g is not finite",
                             (double)alpha);
    if (targets == 0 || (targets & ~TSR_LORA_TARGETS_ALL))
        return tsr_error_set(TSR_ERR_INVALID,
                             "tsr_peft_init: targets 0x%x must be a non-empty subset of 0x%x",
                             targets, TSR_LORA_TARGETS_ALL);
    if (cfg->n_layer <= 0)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_peft_init: model has %d layers", cfg->n_layer);
    tsr_status s = tsr_peft_alloc_arrays(a, cfg);
    if (s != TSR_OK)
        goto fail;
    a->r = r;
    a->alpha = alpha;
    a->targets = targets;
    for (int l = 0; l < cfg->n_layer; l++)
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            if (!(targets & TSR_LORA_TARGET_BIT(t)))
                continue;
            int din, dout;
            TSR_CHECK_GOTO(s, tsr_peft_target_dims(cfg, t, &din, &dout));
            a->A[TSR_PEFT_IDX(l, t)] = calloc((size_t)r * (size_t)din, sizeof(float));
            a->B[TSR_PEFT_IDX(l, t)] = calloc((size_t)dout * (size_t)r, sizeof(float));
            if (!a->A[TSR_PEFT_IDX(l, t)] || !a->B[TSR_PEFT_IDX(l, t)]) {
                s = tsr_error_set(TSR_ERR_NOMEM, "LoRA adapter: out of memory (layer %d %s)", l,
                                  peft_targets[t].module);
                goto fail;
            }
        }
    return TSR_OK;
cleanup:
fail:
    tsr_peft_free(a);
    return s;
}

/* ---- tensor names ------------------------------------------------------- */

void tsr_peft_tensor_name(char *buf, size_t cap, int layer, int t, int ab) {
    snprintf(buf, cap, TSR_PEFT_NAME_PREFIX "%d.%s.%s.lora_%c.weight", layer, peft_targets[t].block,
             peft_targets[t].module, ab ? 'B' : 'A');
}

int tsr_peft_parse_tensor_name(const char *name, long *layer, int *t, int *ab) {
    size_t pl = strlen(TSR_PEFT_NAME_PREFIX);
    if (strncmp(name, TSR_PEFT_NAME_PREFIX, pl) != 0)
        return 0;
    const char *p = name + pl;
    long v = 0;
    int nd = 0;
    while (*p >= '0' && *p <= '9') {
        if (nd == 9)
            return 0; /* more layers than any int config */
        v = v * 10 + (*p - '0');
        p++;
        nd++;
    }
    if (nd == 0 || (nd > 1 && p[-nd] == '0') || *p != '.')
        return 0;
    p++;
    for (int k = 0; k < TSR_LORA_N_TARGETS; k++) {
        size_t bl = strlen(peft_targets[k].block), ml = strlen(peft_targets[k].module);
        if (strncmp(p, peft_targets[k].block, bl) != 0 || p[bl] != '.' ||
            strncmp(p + bl + 1, peft_targets[k].module, ml) != 0 || p[bl + 1 + ml] != '.')
            continue;
        const char *rest = p + bl + 1 + ml + 1;
        if (strcmp(rest, "lora_A.weight") == 0)
            *ab = 0;
        else if (strcmp(rest, "lora_B.weight") == 0)
            *ab = 1;
        else
            return 0;
        *layer = v;
        *t = k;
        return 1;
    }
    return 0;
}
