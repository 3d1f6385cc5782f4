/* shard/peft_save.c - tsr_peft_save: a PEFT LoRA adapter written as
 * adapter_model.safetensors (shard/safetensors_write.h) and
 * adapter_config.json (jansson), into a directory replaced atomically
 * (base/fs.h: tsr_fs_dir_write_*, which applies the adapter-directory
 * rule).
 *
 * What it is not: no reader (shard/peft_load.c), no device memory. */
#include "shard/peft.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/decimal.h"
#include "base/fs.h"
#include "kernels/dtype.h"
#include "shard/safetensors_write.h"

/* Model sizes are validated ints; products of two stay far below SIZE_MAX. */
static size_t mat_elems(int rows, int cols) { return (size_t)rows * (size_t)cols; }

/* ---- save: checks -------------------------------------------------------- */

static tsr_status check_adapter(const tsr_peft_adapter *a, const tsr_model_config *cfg) {
    if (a->r <= 0)
        return tsr_error_set(TSR_ERR_INVALID, "LoRA adapter: rank %d must be positive", a->r);
    if (!isfinite(a->alpha))
        return tsr_error_set(TSR_ERR_INVALID, "LoRA adapter: lora_alpha %g is not finite",
                             (double)a->alpha);
    if (!(a->dropout >= 0.0f && a->dropout < 1.0f))
        return tsr_error_set(TSR_ERR_INVALID, "LoRA adapter: lora_dropout %g is not in [0, 1)",
                             (double)a->dropout);
    if (a->targets == 0 || (a->targets & ~TSR_LORA_TARGETS_ALL))
        return tsr_error_set(TSR_ERR_INVALID,
                             "LoRA adapter: targets 0x%x must be a non-empty subset of 0x%x",
                             a->targets, TSR_LORA_TARGETS_ALL);
    if (a->n_layers != cfg->n_layer)
        return tsr_error_set(TSR_ERR_INVALID,
                             "LoRA adapter: %d layers, but the model config has %d", a->n_layers,
                             cfg->n_layer);
    if (!memchr(a->base_model, '\0', sizeof a->base_model))
        return tsr_error_set(TSR_ERR_INVALID, "LoRA adapter: base_model is not NUL-terminated");
    json_t *bm = json_string(a->base_model); /* NULL when not valid UTF-8 */
    if (!bm)
        return tsr_error_set(TSR_ERR_INVALID, "LoRA adapter: base_model is not valid UTF-8");
    json_decref(bm);
    if (!a->A || !a->B)
        return tsr_error_set(TSR_ERR_INVALID, "LoRA adapter: A or B array is NULL");
    char name[160];
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            int on = (a->targets & TSR_LORA_TARGET_BIT(t)) != 0;
            int din, dout;
            TSR_TRY(tsr_peft_target_dims(cfg, t, &din, &dout));
            for (int ab = 0; ab < 2; ab++) {
                const float *m = ab ? a->B[TSR_PEFT_IDX(l, t)] : a->A[TSR_PEFT_IDX(l, t)];
                tsr_peft_tensor_name(name, sizeof name, l, t, ab);
                if (on && !m)
                    return tsr_error_set(TSR_ERR_INVALID,
                                         "LoRA adapter: %s is targeted but '%s' is NULL",
                                         tsr_peft_target_name(t), name);
                if (!on && m)
                    return tsr_error_set(TSR_ERR_INVALID,
                                         "LoRA adapter: %s is not targeted but '%s' is set",
                                         tsr_peft_target_name(t), name);
                if (!on)
                    continue;
                size_t n = ab ? mat_elems(dout, a->r) : mat_elems(a->r, din);
                for (size_t i = 0; i < n; i++)
                    if (!isfinite(m[i]))
                        return tsr_error_set(TSR_ERR_INVALID,
                                             "LoRA adapter: '%s' element %zu is %g (not finite)",
                                             name, i, (double)m[i]);
            }
        }
    return TSR_OK;
}

/* ---- save: the files ----------------------------------------------------- */

typedef struct {
    char name[160];
    const float *data;
    int rows, cols;
} save_entry;

static int cmp_entry(const void *x, const void *y) {
    return strcmp(((const save_entry *)x)->name, ((const save_entry *)y)->name);
}

/* adapter_model.safetensors: every targeted A and B as F32, in name order
 * (as the safetensors Python package lays out same-dtype tensors; readers
 * do not depend on it). */
static tsr_status write_safetensors(const char *path, const tsr_peft_adapter *a,
                                    const tsr_model_config *cfg) {
    tsr_status s = TSR_OK;
    size_t n_on = 0;
    for (int t = 0; t < TSR_LORA_N_TARGETS; t++)
        n_on += (a->targets & TSR_LORA_TARGET_BIT(t)) != 0;
    size_t n = (size_t)a->n_layers * n_on * 2;
    save_entry *e = calloc(n, sizeof *e);
    tsr_st_out_tensor *out = calloc(n, sizeof *out);
    if (!e || !out) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    size_t k = 0;
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            if (!(a->targets & TSR_LORA_TARGET_BIT(t)))
                continue;
            int din, dout;
            TSR_CHECK_GOTO(s, tsr_peft_target_dims(cfg, t, &din, &dout));
            for (int ab = 0; ab < 2; ab++, k++) {
                tsr_peft_tensor_name(e[k].name, sizeof e[k].name, l, t, ab);
                e[k].data = ab ? a->B[TSR_PEFT_IDX(l, t)] : a->A[TSR_PEFT_IDX(l, t)];
                e[k].rows = ab ? dout : a->r;
                e[k].cols = ab ? a->r : din;
            }
        }
    qsort(e, n, sizeof *e, cmp_entry);
    for (size_t i = 0; i < n; i++)
        out[i] = (tsr_st_out_tensor){.name = e[i].name,
                                     .dtype = TSR_F32,
                                     .n_dims = 2,
                                     .shape = {(uint64_t)e[i].rows, (uint64_t)e[i].cols},
                                     .data = e[i].data};
    s = tsr_safetensors_write(path, out, n);
cleanup:
    free(out);
    free(e);
    return s;
}

static tsr_status write_config(const char *path, const tsr_peft_adapter *a) {
    tsr_status s = TSR_OK;
    json_t *root = json_object();
    json_t *mods = json_array();
    char *text = NULL;
    int prec = 1, d;
    if (!root || !mods)
        goto nomem;
    for (int t = 0; t < TSR_LORA_N_TARGETS; t++)
        if ((a->targets & TSR_LORA_TARGET_BIT(t)) &&
            json_array_append_new(mods, json_string(tsr_peft_target_name(t))))
            goto nomem;
    json_t *alpha;
    if (a->alpha == truncf(a->alpha) && fabsf(a->alpha) <= 16777216.0f) {
        alpha = json_integer((json_int_t)a->alpha); /* PEFT's type: int */
    } else {
        alpha = json_real(tsr_decimal_shortest(a->alpha, &d));
        prec = d > prec ? d : prec;
    }
    json_t *dropout = json_real(tsr_decimal_shortest(a->dropout, &d));
    prec = d > prec ? d : prec;
    /* The keys PeftConfig and LoraConfig write (peft/config.py,
     * peft/tuners/lora/config.py); newer PEFT versions add keys with
     * defaults that are equivalent when absent. */
    int bad = 0;
    bad |= json_object_set_new(root, "alpha_pattern", json_object());
    bad |= json_object_set_new(root, "auto_mapping", json_null());
    bad |= json_object_set_new(root, "base_model_name_or_path",
                               a->base_model[0] ? json_string(a->base_model) : json_null());
    bad |= json_object_set_new(root, "bias", json_string("none"));
    bad |= json_object_set_new(root, "fan_in_fan_out", json_false());
    bad |= json_object_set_new(root, "inference_mode", json_true());
    bad |= json_object_set_new(root, "init_lora_weights", json_true());
    bad |= json_object_set_new(root, "layers_pattern", json_null());
    bad |= json_object_set_new(root, "layers_to_transform", json_null());
    bad |= json_object_set_new(root, "loftq_config", json_object());
    bad |= json_object_set_new(root, "lora_alpha", alpha);
    bad |= json_object_set_new(root, "lora_dropout", dropout);
    bad |= json_object_set_new(root, "megatron_config", json_null());
    bad |= json_object_set_new(root, "megatron_core", json_string("megatron.core"));
    bad |= json_object_set_new(root, "modules_to_save", json_null());
    bad |= json_object_set_new(root, "peft_type", json_string("LORA"));
    bad |= json_object_set_new(root, "r", json_integer(a->r));
    bad |= json_object_set_new(root, "rank_pattern", json_object());
    bad |= json_object_set_new(root, "revision", json_null());
    bad |= json_object_set(root, "target_modules", mods);
    bad |= json_object_set_new(root, "task_type", json_string("CAUSAL_LM"));
    bad |= json_object_set_new(root, "use_dora", json_false());
    bad |= json_object_set_new(root, "use_rslora", a->use_rslora ? json_true() : json_false());
    if (bad)
        goto nomem;
    /* PEFT writes json.dumps(indent=2, sort_keys=True). */
    text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(prec));
    if (!text)
        goto nomem;
    size_t len = strlen(text);
    char *nl = realloc(text, len + 2);
    if (!nl)
        goto nomem;
    text = nl;
    memcpy(text + len, "\n", 2);
    s = tsr_fs_write_file(path, text, len + 1);
    goto cleanup;
nomem:
    s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", path);
cleanup:
    free(text);
    json_decref(mods);
    json_decref(root);
    return s;
}

/* ---- save: the directory ------------------------------------------------- */

/* Test hook: see TSR_PEFT_SAVE_PAUSE in peft.h. */
static void save_pause(void *ctx, const char *stage) {
    (void)ctx;
    const char *want = getenv("TSR_PEFT_SAVE_PAUSE");
    if (!want || strcmp(want, stage) != 0)
        return;
    fprintf(stderr, "tsr_peft_save: paused at %s\n", stage);
    fflush(stderr);
    struct timespec ts = {60, 0};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* "<dir>/<name>" in buf, or TSR_ERR_INVALID when it does not fit. */
static tsr_status join(char *buf, size_t cap, const char *dir, const char *name) {
    if ((size_t)snprintf(buf, cap, "%s/%s", dir, name) >= cap)
        return tsr_error_set(TSR_ERR_INVALID, "%s/%s: path too long", dir, name);
    return TSR_OK;
}

tsr_status tsr_peft_save(const char *dir, const tsr_peft_adapter *a, const tsr_model_config *cfg) {
    if (!dir || !a || !cfg)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_peft_save: NULL argument");
    TSR_TRY(check_adapter(a, cfg));
    const char *no_x = getenv("TSR_PEFT_SAVE_NO_EXCHANGE");
    const tsr_fs_commit_hooks hooks = {save_pause, NULL, no_x && strcmp(no_x, "1") == 0};
    tsr_fs_dir_write w;
    TSR_TRY(tsr_fs_dir_write_begin(&w, dir, 1));
    char *path = malloc(strlen(w.tmp) + 64);
    tsr_status s = path ? TSR_OK : tsr_error_set(TSR_ERR_NOMEM, "tsr_peft_save: out of memory");
    if (s == TSR_OK)
        s = join(path, strlen(w.tmp) + 64, w.tmp, TSR_PEFT_WEIGHTS_FILE);
    if (s == TSR_OK)
        s = write_safetensors(path, a, cfg);
    if (s == TSR_OK) {
        save_pause(NULL, "tensors");
        s = join(path, strlen(w.tmp) + 64, w.tmp, TSR_PEFT_CONFIG_FILE);
    }
    if (s == TSR_OK)
        s = write_config(path, a);
    if (s == TSR_OK)
        s = tsr_fs_dir_write_commit(&w, &hooks);
    free(path);
    tsr_fs_dir_write_free(&w);
    return s;
}
