/* shard/peft_load.c - tsr_peft_load: a PEFT LoRA adapter directory read
 * and validated (adapter_config.json through jansson, the tensors through
 * shard/safetensors, which validates the file at open).
 *
 * What it is not: no writer (shard/peft_save.c), no adapter_model.bin
 * (pickle) reader, no device memory. */
#include "shard/peft.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fs.h"
#include "base/json_name.h"
#include "kernels/dtype.h"
#include "shard/safetensors.h"

/* adapter_config.json files are a few KB. */
#define PEFT_MAX_CONFIG_BYTES ((size_t)1 << 20)

/* ---- load: adapter_config.json ------------------------------------------- */

typedef struct {
    const char *file; /* for messages */
    json_t *root;
} cfg_reader;

/* The value of `key`, or NULL when absent or null. */
static json_t *cfg_get(const cfg_reader *c, const char *key) {
    json_t *v = json_object_get(c->root, key);
    return v && !json_is_null(v) ? v : NULL;
}

static tsr_status cfg_bool(const cfg_reader *c, const char *key, int def, int *out) {
    json_t *v = cfg_get(c, key);
    *out = def;
    if (!v)
        return TSR_OK;
    if (!json_is_boolean(v))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"%s\" is %s, not a boolean", c->file, key,
                             tsr_json_type_name(v));
    *out = json_is_true(v);
    return TSR_OK;
}

/* Refuses `key` when it is true. */
static tsr_status cfg_refuse_true(const cfg_reader *c, const char *key, const char *why) {
    int on;
    TSR_TRY(cfg_bool(c, key, 0, &on));
    if (on)
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "%s: \"%s\": true is not supported (%s)", c->file,
                             key, why);
    return TSR_OK;
}

/* Refuses `key` unless it is absent, null, or an empty array/object. */
static tsr_status cfg_refuse_set(const cfg_reader *c, const char *key, const char *why) {
    json_t *v = cfg_get(c, key);
    if (!v)
        return TSR_OK;
    if ((json_is_object(v) && json_object_size(v) == 0) ||
        (json_is_array(v) && json_array_size(v) == 0))
        return TSR_OK;
    char *dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    tsr_status s =
        tsr_error_set(TSR_ERR_UNSUPPORTED, "%s: \"%s\" = %.80s%s is not supported (%s)", c->file,
                      key, dump ? dump : "?", dump && strlen(dump) > 80 ? "..." : "", why);
    free(dump);
    return s;
}

/* A finite number (integer or real). */
static tsr_status cfg_number(const cfg_reader *c, const char *key, double def, double *out) {
    json_t *v = cfg_get(c, key);
    *out = def;
    if (!v)
        return TSR_OK;
    if (!json_is_number(v))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"%s\" is %s, not a number", c->file, key,
                             tsr_json_type_name(v));
    double x = json_number_value(v);
    if (!isfinite(x) || fabs(x) > 3.0e38)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"%s\" = %g is out of range", c->file, key, x);
    *out = x;
    return TSR_OK;
}

/* target_modules -> bitmask. *listed = 0 when the config does not say which
 * modules (null, or a regular expression string): the tensors decide. */
static tsr_status cfg_targets(const cfg_reader *c, unsigned *mask, int *listed) {
    json_t *v = cfg_get(c, "target_modules");
    *mask = 0;
    *listed = 0;
    if (!v)
        return TSR_OK;
    if (json_is_string(v)) {
        if (strcmp(json_string_value(v), "all-linear") == 0) {
            /* Every linear layer but the output layer: the seven projections. */
            *mask = TSR_LORA_TARGETS_ALL;
            *listed = 1;
        }
        return TSR_OK; /* a regular expression: checked against the tensors only */
    }
    if (!json_is_array(v))
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: \"target_modules\" is %s, not a list of module names or a "
                             "string",
                             c->file, tsr_json_type_name(v));
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m) {
        if (!json_is_string(m))
            return tsr_error_set(TSR_ERR_FORMAT, "%s: \"target_modules\"[%zu] is %s, not a string",
                                 c->file, i, tsr_json_type_name(m));
        /* PEFT matches an entry against a module name exactly or as a
         * ".entry" suffix; "q_proj", "self_attn.q_proj" and
         * "model.layers.0.self_attn.q_proj" all end in the module name. */
        const char *name = json_string_value(m);
        const char *dot = strrchr(name, '.');
        const char *last = dot ? dot + 1 : name;
        int t = 0;
        while (t < TSR_LORA_N_TARGETS && strcmp(last, tsr_peft_target_name(t)) != 0)
            t++;
        if (t == TSR_LORA_N_TARGETS)
            return tsr_error_set(TSR_ERR_UNSUPPORTED,
                                 "%s: target_modules entry \"%s\" is not supported (LoRA on "
                                 "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj "
                                 "only)",
                                 c->file, name);
        *mask |= TSR_LORA_TARGET_BIT(t);
    }
    *listed = 1;
    return TSR_OK;
}

/* Parses the config into out's r/alpha/use_rslora/dropout/base_model and the
 * target_modules mask. */
static tsr_status parse_config(const cfg_reader *c, tsr_peft_adapter *out, unsigned *mask,
                               int *listed) {
    json_t *pt = json_object_get(c->root, "peft_type");
    if (!pt || !json_is_string(pt))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"peft_type\" is %s (want \"LORA\")", c->file,
                             pt ? tsr_json_type_name(pt) : "missing");
    if (strcmp(json_string_value(pt), "LORA") != 0)
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "%s: peft_type \"%s\" is not supported (LORA adapters only)", c->file,
                             json_string_value(pt));

    /* Defaults are LoraConfig's. */
    json_t *jr = cfg_get(c, "r");
    if (jr && !json_is_integer(jr))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"r\" is %s, not an integer", c->file,
                             tsr_json_type_name(jr));
    json_int_t r = jr ? json_integer_value(jr) : 8;
    if (r <= 0 || r > INT_MAX / 2)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"r\" = %lld is out of range", c->file,
                             (long long)r);
    out->r = (int)r;
    double x;
    TSR_TRY(cfg_number(c, "lora_alpha", 8.0, &x));
    out->alpha = (float)x;
    TSR_TRY(cfg_number(c, "lora_dropout", 0.0, &x));
    if (!(x >= 0.0 && x < 1.0))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"lora_dropout\" = %g is not in [0, 1)", c->file,
                             x);
    out->dropout = (float)x;
    TSR_TRY(cfg_bool(c, "use_rslora", 0, &out->use_rslora));

    json_t *bm = cfg_get(c, "base_model_name_or_path");
    if (bm && !json_is_string(bm))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"base_model_name_or_path\" is %s, not a string",
                             c->file, tsr_json_type_name(bm));
    snprintf(out->base_model, sizeof out->base_model, "%s", bm ? json_string_value(bm) : "");

    TSR_TRY(cfg_refuse_true(c, "use_dora", "DoRA adds a magnitude vector Tessera does not apply"));
    TSR_TRY(cfg_refuse_true(c, "fan_in_fan_out",
                            "for Conv1D-style (in, out) weights; Llama uses nn.Linear"));
    TSR_TRY(cfg_refuse_true(c, "lora_bias", "LoRA B biases are not applied"));
    TSR_TRY(cfg_refuse_set(c, "modules_to_save", "only LoRA matrices are loaded"));
    TSR_TRY(cfg_refuse_set(c, "rank_pattern", "one rank for every module"));
    TSR_TRY(cfg_refuse_set(c, "alpha_pattern", "one alpha for every module"));
    TSR_TRY(cfg_refuse_set(c, "layers_to_transform", "every layer must be adapted"));
    TSR_TRY(cfg_refuse_set(c, "layer_replication", "the layer stack is the base model's"));
    TSR_TRY(cfg_refuse_set(c, "trainable_token_indices", "only LoRA matrices are loaded"));
    TSR_TRY(cfg_refuse_set(c, "alora_invocation_tokens", "activated LoRA is not supported"));
    /* LoRA variants with extra parameters or different maths (PEFT 0.21). */
    TSR_TRY(cfg_refuse_true(c, "use_qalora", "QALoRA pools the input"));
    TSR_TRY(cfg_refuse_set(c, "use_bdlora", "block-diagonal LoRA is not supported"));
    TSR_TRY(cfg_refuse_set(c, "kasa_config", "KaSA changes the base weights"));
    TSR_TRY(cfg_refuse_set(c, "monteclora_config", "MonteCLoRA is not supported"));
    TSR_TRY(cfg_refuse_set(c, "arrow_config", "Arrow routing is not supported"));
    TSR_TRY(cfg_refuse_set(c, "target_parameters", "LoRA on parameters is not supported"));

    json_t *init = cfg_get(c, "init_lora_weights");
    if (init && json_is_string(init)) {
        const char *iv = json_string_value(init);
        if (strncmp(iv, "pissa", 5) == 0 || strcmp(iv, "olora") == 0 || strcmp(iv, "corda") == 0 ||
            strcmp(iv, "loftq") == 0 || strcmp(iv, "lora_ga") == 0)
            return tsr_error_set(TSR_ERR_UNSUPPORTED,
                                 "%s: init_lora_weights \"%s\" is not supported (it changes the "
                                 "base weights; convert the adapter to plain LoRA with PEFT's "
                                 "path_initial_model_for_weight_conversion first)",
                                 c->file, iv);
    } else if (init && !json_is_boolean(init)) {
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: \"init_lora_weights\" is %s, not a boolean or a string", c->file,
                             tsr_json_type_name(init));
    }
    return cfg_targets(c, mask, listed);
}

/* ---- load: tensors -------------------------------------------------------- */

static tsr_status load_tensors(const char *path, const tsr_safetensors_t *st,
                               const tsr_model_config *cfg, tsr_peft_adapter *out) {
    size_t n = tsr_safetensors_n_tensors(st);
    if (n == 0)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: holds no tensors", path);
    for (size_t i = 0; i < n; i++) {
        const tsr_st_tensor *t = tsr_safetensors_tensor_at(st, i);
        long layer;
        int tg, ab;
        if (!tsr_peft_parse_tensor_name(t->name, &layer, &tg, &ab)) {
            size_t nl = strlen(t->name);
            if (strstr(t->name, "lora_magnitude_vector"))
                return tsr_error_set(TSR_ERR_UNSUPPORTED,
                                     "%s: tensor '%s' is a DoRA magnitude (DoRA is not supported)",
                                     path, t->name);
            if (nl >= 5 && strcmp(t->name + nl - 5, ".bias") == 0)
                return tsr_error_set(TSR_ERR_UNSUPPORTED,
                                     "%s: tensor '%s' is a bias (bias \"all\"/\"lora_only\" and "
                                     "lora_bias are not supported)",
                                     path, t->name);
            if (strstr(t->name, "lora_embedding"))
                return tsr_error_set(TSR_ERR_UNSUPPORTED,
                                     "%s: tensor '%s' adapts an embedding (not supported)", path,
                                     t->name);
            return tsr_error_set(
                TSR_ERR_FORMAT,
                "%s: unknown tensor '%s' (expected " TSR_PEFT_NAME_PREFIX
                "{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight or " TSR_PEFT_NAME_PREFIX
                "{i}.mlp.{gate,up,down}_proj.lora_{A,B}.weight)",
                path, t->name);
        }
        if (layer >= cfg->n_layer)
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: tensor '%s' is for layer %ld, but the model has %d layers "
                                 "(0..%d)",
                                 path, t->name, layer, cfg->n_layer, cfg->n_layer - 1);
        tsr_status ls = tsr_st_tensor_loadable(t);
        if (ls != TSR_OK)
            return tsr_error_wrap(ls, "%s", path);
        int din, dout;
        TSR_TRY(tsr_peft_target_dims(cfg, tg, &din, &dout));
        uint64_t want0 = (uint64_t)(ab ? dout : out->r), want1 = (uint64_t)(ab ? out->r : din);
        if (t->n_dims != 2 || t->shape[0] != want0 || t->shape[1] != want1) {
            char found[96] = "[";
            for (uint32_t d = 0; d < t->n_dims; d++) {
                size_t fl = strlen(found);
                snprintf(found + fl, sizeof found - fl, "%s%llu", d ? ", " : "",
                         (unsigned long long)t->shape[d]);
            }
            strncat(found, "]", sizeof found - strlen(found) - 1);
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: tensor '%s' has shape %s, expected [%llu, %llu] = %s for "
                                 "%s of %s (r = %d from %s, %s = %d from the model config)",
                                 path, t->name, found, (unsigned long long)want0,
                                 (unsigned long long)want1, ab ? "(d_out, r)" : "(r, d_in)",
                                 ab ? "lora_B" : "lora_A", tsr_peft_target_name(tg), out->r,
                                 TSR_PEFT_CONFIG_FILE, ab ? "d_out" : "d_in", ab ? dout : din);
        }
        float **slot = ab ? &out->B[TSR_PEFT_IDX(layer, tg)] : &out->A[TSR_PEFT_IDX(layer, tg)];
        if (*slot) /* names are unique and parsing is canonical: cannot happen */
            return tsr_error_set(TSR_ERR_INTERNAL, "%s: tensor '%s' seen twice", path, t->name);
        float *m = malloc((size_t)t->n_elem * sizeof(float));
        if (!m)
            return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory for '%s'", path, t->name);
        tsr_dequantize(t->dtype, t->data, m, (size_t)t->n_elem);
        *slot = m;
        for (uint64_t e = 0; e < t->n_elem; e++)
            if (!isfinite(m[e]))
                return tsr_error_set(TSR_ERR_FORMAT,
                                     "%s: tensor '%s' holds a non-finite value (%g at row %llu, "
                                     "column %llu)",
                                     path, t->name, (double)m[e],
                                     (unsigned long long)(e / t->shape[1]),
                                     (unsigned long long)(e % t->shape[1]));
        out->targets |= TSR_LORA_TARGET_BIT(tg);
    }
    /* Every target present somewhere must be complete in every layer. */
    char name[160];
    for (int l = 0; l < cfg->n_layer; l++)
        for (int tg = 0; tg < TSR_LORA_N_TARGETS; tg++) {
            if (!(out->targets & TSR_LORA_TARGET_BIT(tg)))
                continue;
            for (int ab = 0; ab < 2; ab++) {
                if (ab ? out->B[TSR_PEFT_IDX(l, tg)] : out->A[TSR_PEFT_IDX(l, tg)])
                    continue;
                tsr_peft_tensor_name(name, sizeof name, l, tg, ab);
                return tsr_error_set(TSR_ERR_FORMAT,
                                     "%s: missing tensor '%s' (every layer must adapt the same "
                                     "modules with both lora_A and lora_B; %s is adapted "
                                     "elsewhere)",
                                     path, name, tsr_peft_target_name(tg));
            }
        }
    return TSR_OK;
}

tsr_status tsr_peft_load(const char *dir, const tsr_model_config *cfg, tsr_peft_adapter *out) {
    if (!out)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_peft_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir || !cfg)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_peft_load: NULL argument");

    tsr_status s = TSR_OK;
    char *cpath = NULL, *wpath = NULL, *bpath = NULL, *text = NULL;
    size_t text_len = 0;
    json_t *root = NULL;
    tsr_safetensors_t *st = NULL;
    struct stat sb;

    if (stat(dir, &sb) != 0) {
        s = tsr_error_set(TSR_ERR_IO, "%s: cannot open adapter directory: %s", dir,
                          strerror(errno));
        goto cleanup;
    }
    if (!S_ISDIR(sb.st_mode)) {
        s = tsr_error_set(TSR_ERR_IO,
                          "%s: not a directory (a PEFT adapter is a directory with %s "
                          "and %s)",
                          dir, TSR_PEFT_CONFIG_FILE, TSR_PEFT_WEIGHTS_FILE);
        goto cleanup;
    }
    if (asprintf(&cpath, "%s/%s", dir, TSR_PEFT_CONFIG_FILE) < 0)
        cpath = NULL;
    if (asprintf(&wpath, "%s/%s", dir, TSR_PEFT_WEIGHTS_FILE) < 0)
        wpath = NULL;
    if (asprintf(&bpath, "%s/%s", dir, TSR_PEFT_BIN_FILE) < 0)
        bpath = NULL;
    if (!cpath || !wpath || !bpath) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", dir);
        goto cleanup;
    }

    s = tsr_fs_read_file(cpath, PEFT_MAX_CONFIG_BYTES, &text, &text_len);
    if (s == TSR_ERR_RANGE) /* the message names the limit */
        s = TSR_ERR_FORMAT;
    if (s != TSR_OK)
        goto cleanup;
    json_error_t jerr;
    root = json_loadb(text, text_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        s = tsr_error_set(TSR_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", cpath,
                          jerr.text, jerr.line, jerr.column);
        goto cleanup;
    }
    if (!json_is_object(root)) {
        s = tsr_error_set(TSR_ERR_FORMAT, "%s: JSON is %s, not an object", cpath,
                          tsr_json_type_name(root));
        goto cleanup;
    }
    cfg_reader c = {cpath, root};
    unsigned listed_mask;
    int listed;
    TSR_CHECK_GOTO(s, parse_config(&c, out, &listed_mask, &listed));

    if (stat(wpath, &sb) != 0) {
        int e = errno;
        if (e == ENOENT && stat(bpath, &sb) == 0)
            s = tsr_error_set(TSR_ERR_UNSUPPORTED,
                              "%s: only %s (PyTorch pickle) is present; Tessera reads only %s "
                              "(save with PEFT's safe_serialization=True, the default)",
                              dir, TSR_PEFT_BIN_FILE, TSR_PEFT_WEIGHTS_FILE);
        else
            s = tsr_error_set(TSR_ERR_IO, "%s: cannot open: %s", wpath, strerror(e));
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, tsr_safetensors_open(wpath, &st));
    TSR_CHECK_GOTO(s, tsr_peft_alloc_arrays(out, cfg));
    TSR_CHECK_GOTO(s, load_tensors(wpath, st, cfg, out));

    if (listed) {
        unsigned extra = out->targets & ~listed_mask, absent = listed_mask & ~out->targets;
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            if (extra & TSR_LORA_TARGET_BIT(t)) {
                s = tsr_error_set(TSR_ERR_FORMAT,
                                  "%s has %s tensors, but target_modules in %s does not list %s",
                                  wpath, tsr_peft_target_name(t), cpath, tsr_peft_target_name(t));
                goto cleanup;
            }
            if (absent & TSR_LORA_TARGET_BIT(t)) {
                s = tsr_error_set(TSR_ERR_FORMAT,
                                  "%s lists %s in target_modules, but %s has no %s tensors", cpath,
                                  tsr_peft_target_name(t), wpath, tsr_peft_target_name(t));
                goto cleanup;
            }
        }
    }

cleanup:
    tsr_safetensors_close(st);
    json_decref(root);
    free(text);
    free(bpath);
    free(wpath);
    free(cpath);
    if (s != TSR_OK)
        tsr_peft_free(out);
    return s;
}
