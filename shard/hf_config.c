/* shard/hf_config.c - Hugging Face config.json -> tsr_model_config.
 *
 * Every field is type-checked (an integer field must be a JSON integer, a
 * float field a JSON number, a flag a JSON boolean) and range-checked before
 * it reaches the config; the config is then handed to
 * tsr_model_config_validate() for the invariants shared with GGUF.
 *
 * What it is not: no weights, no tokenizer, no generation_config.json. */
#include "shard/hf_config.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json_name.h"
#include "base/log.h"

/* Real config.json files are a few KB. */
#define HF_MAX_CONFIG_BYTES ((size_t)16 * 1024 * 1024)

/* Where values are read from and what to call them in messages. */
typedef struct {
    const char *file;   /* for messages */
    const char *prefix; /* "" or "rope_scaling." */
} cfg_ctx;

/* The value of `field` in `obj`, or NULL when absent or JSON null (both mean
 * "use the default" in transformers). */
static json_t *get_field(json_t *obj, const char *field) {
    json_t *v = json_object_get(obj, field);
    return v && !json_is_null(v) ? v : NULL;
}

/* A positive int. Absent: TSR_ERR_FORMAT if `required`, else *out = def. */
static tsr_status get_pos_int(const cfg_ctx *c, json_t *obj, const char *field, int required,
                              int def, int *out) {
    json_t *v = get_field(obj, field);
    if (!v) {
        if (required)
            return tsr_error_set(TSR_ERR_FORMAT, "%s: missing required field \"%s%s\"", c->file,
                                 c->prefix, field);
        *out = def;
        return TSR_OK;
    }
    if (!json_is_integer(v))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: field \"%s%s\" is %s, not an integer", c->file,
                             c->prefix, field, tsr_json_type_name(v));
    json_int_t x = json_integer_value(v);
    if (x <= 0 || x > INT_MAX)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: field \"%s%s\" = %lld is out of range (must be 1..%d)", c->file,
                             c->prefix, field, (long long)x, INT_MAX);
    *out = (int)x;
    return TSR_OK;
}

/* A positive finite float; integers are accepted (rope_theta: 10000). */
static tsr_status get_pos_float(const cfg_ctx *c, json_t *obj, const char *field, int required,
                                float def, float *out) {
    json_t *v = get_field(obj, field);
    if (!v) {
        if (required)
            return tsr_error_set(TSR_ERR_FORMAT, "%s: missing required field \"%s%s\"", c->file,
                                 c->prefix, field);
        *out = def;
        return TSR_OK;
    }
    if (!json_is_number(v))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: field \"%s%s\" is %s, not a number", c->file,
                             c->prefix, field, tsr_json_type_name(v));
    double x = json_number_value(v);
    float xf = (float)x;
    if (!(x > 0.0) || x > FLT_MAX || !(xf > 0.0f))
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: field \"%s%s\" = %g is out of range (must be a positive "
                             "float)",
                             c->file, c->prefix, field, x);
    *out = xf;
    return TSR_OK;
}

static tsr_status get_bool(const cfg_ctx *c, json_t *obj, const char *field, int def, int *out) {
    json_t *v = get_field(obj, field);
    if (!v) {
        *out = def;
        return TSR_OK;
    }
    if (!json_is_boolean(v))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: field \"%s%s\" is %s, not a boolean", c->file,
                             c->prefix, field, tsr_json_type_name(v));
    *out = json_is_true(v);
    return TSR_OK;
}

/* A string or NULL when absent/null. */
static tsr_status get_str(const cfg_ctx *c, json_t *obj, const char *field, const char **out) {
    json_t *v = get_field(obj, field);
    *out = NULL;
    if (!v)
        return TSR_OK;
    if (!json_is_string(v))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: field \"%s%s\" is %s, not a string", c->file,
                             c->prefix, field, tsr_json_type_name(v));
    *out = json_string_value(v);
    return TSR_OK;
}

typedef enum { HF_LLAMA, HF_MISTRAL, HF_QWEN2 } hf_family;

static tsr_status detect_family(const cfg_ctx *c, json_t *root, hf_family *fam) {
    static const struct {
        const char *model_type;
        const char *arch;
        hf_family fam;
    } known[] = {
        {"llama", "LlamaForCausalLM", HF_LLAMA},
        {"mistral", "MistralForCausalLM", HF_MISTRAL},
        {"qwen2", "Qwen2ForCausalLM", HF_QWEN2},
    };
    const size_t n_known = sizeof known / sizeof known[0];

    const char *mt;
    TSR_TRY(get_str(c, root, "model_type", &mt));
    if (mt) {
        for (size_t i = 0; i < n_known; i++)
            if (strcmp(mt, known[i].model_type) == 0) {
                *fam = known[i].fam;
                return TSR_OK;
            }
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "%s: model_type \"%s\" is not supported (llama, mistral, qwen2)",
                             c->file, mt);
    }
    json_t *archs = get_field(root, "architectures");
    if (!archs)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: neither \"model_type\" nor \"architectures\" is set", c->file);
    if (!json_is_array(archs))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: field \"architectures\" is %s, not an array",
                             c->file, tsr_json_type_name(archs));
    size_t ai;
    json_t *a;
    json_array_foreach(archs, ai, a) {
        if (!json_is_string(a))
            continue;
        for (size_t i = 0; i < n_known; i++)
            if (strcmp(json_string_value(a), known[i].arch) == 0) {
                *fam = known[i].fam;
                return TSR_OK;
            }
    }
    json_t *first = json_array_get(archs, 0);
    return tsr_error_set(TSR_ERR_UNSUPPORTED,
                         "%s: architecture \"%s\" is not supported (LlamaForCausalLM, "
                         "MistralForCausalLM, Qwen2ForCausalLM)",
                         c->file, json_is_string(first) ? json_string_value(first) : "?");
}

static tsr_status parse_rope_scaling(const char *file, json_t *root, tsr_model_config *m) {
    m->rope_scaling = TSR_ROPE_SCALING_NONE;
    m->rope_factor = 1.0f;
    m->rope_low_freq_factor = 0.0f;
    m->rope_high_freq_factor = 0.0f;
    m->rope_orig_ctx = 0;

    json_t *rs = get_field(root, "rope_scaling");
    if (!rs)
        return TSR_OK;
    if (!json_is_object(rs))
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: field \"rope_scaling\" is %s, not an object or null", file,
                             tsr_json_type_name(rs));
    cfg_ctx c = {file, "rope_scaling."};
    const char *type;
    /* Newer transformers write "rope_type", older "type". */
    TSR_TRY(get_str(&c, rs, "rope_type", &type));
    if (!type)
        TSR_TRY(get_str(&c, rs, "type", &type));
    if (!type)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: field \"rope_scaling\" has neither \"rope_type\" nor "
                             "\"type\"",
                             file);
    if (strcmp(type, "default") == 0)
        return TSR_OK;
    if (strcmp(type, "linear") == 0) {
        m->rope_scaling = TSR_ROPE_SCALING_LINEAR;
        return get_pos_float(&c, rs, "factor", 1, 0.0f, &m->rope_factor);
    }
    if (strcmp(type, "llama3") == 0) {
        m->rope_scaling = TSR_ROPE_SCALING_LLAMA3;
        TSR_TRY(get_pos_float(&c, rs, "factor", 1, 0.0f, &m->rope_factor));
        TSR_TRY(get_pos_float(&c, rs, "low_freq_factor", 1, 0.0f, &m->rope_low_freq_factor));
        TSR_TRY(get_pos_float(&c, rs, "high_freq_factor", 1, 0.0f, &m->rope_high_freq_factor));
        TSR_TRY(get_pos_int(&c, rs, "original_max_position_embeddings", 1, 0, &m->rope_orig_ctx));
        /* The smoothing term divides by (high - low). */
        if (!(m->rope_high_freq_factor > m->rope_low_freq_factor))
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: rope_scaling.high_freq_factor (%g) must be greater "
                                 "than rope_scaling.low_freq_factor (%g)",
                                 file, (double)m->rope_high_freq_factor,
                                 (double)m->rope_low_freq_factor);
        return TSR_OK;
    }
    return tsr_error_set(TSR_ERR_UNSUPPORTED,
                         "%s: rope_scaling type \"%s\" is not supported (linear, llama3)", file,
                         type);
}

/* The basename of the directory part of `path`, or "" (no directory, ".",
 * "..", "/"). */
static void dir_basename(const char *path, char *out, size_t cap) {
    out[0] = '\0';
    const char *slash = strrchr(path, '/');
    if (!slash)
        return;
    const char *end = slash; /* one past the directory's last char */
    while (end > path && end[-1] == '/')
        end--;
    const char *begin = end;
    while (begin > path && begin[-1] != '/')
        begin--;
    size_t len = (size_t)(end - begin);
    if (len == 0 || (len == 1 && begin[0] == '.') ||
        (len == 2 && begin[0] == '.' && begin[1] == '.'))
        return;
    snprintf(out, cap, "%.*s", (int)(len < cap ? len : cap - 1), begin);
}

static tsr_status parse_root(const char *file, json_t *root, tsr_model_config *m) {
    cfg_ctx c = {file, ""};
    hf_family fam = HF_LLAMA;
    TSR_TRY(detect_family(&c, root, &fam));
    m->arch = fam == HF_QWEN2 ? TSR_ARCH_QWEN2 : TSR_ARCH_LLAMA;

    const char *act;
    TSR_TRY(get_str(&c, root, "hidden_act", &act));
    if (act && strcmp(act, "silu") != 0)
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "%s: hidden_act \"%s\" is not supported (silu only)", file, act);

    TSR_TRY(get_pos_int(&c, root, "hidden_size", 1, 0, &m->n_embd));
    TSR_TRY(get_pos_int(&c, root, "intermediate_size", 1, 0, &m->n_ff));
    TSR_TRY(get_pos_int(&c, root, "num_attention_heads", 1, 0, &m->n_head));
    TSR_TRY(get_pos_int(&c, root, "num_key_value_heads", 0, m->n_head, &m->n_head_kv));
    TSR_TRY(get_pos_int(&c, root, "num_hidden_layers", 1, 0, &m->n_layer));
    TSR_TRY(get_pos_int(&c, root, "vocab_size", 1, 0, &m->n_vocab));
    TSR_TRY(get_pos_int(&c, root, "max_position_embeddings", 1, 0, &m->n_ctx_train));

    if (m->n_head % m->n_head_kv != 0)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: num_attention_heads (%d) is not a multiple of "
                             "num_key_value_heads (%d)",
                             file, m->n_head, m->n_head_kv);
    if (!get_field(root, "head_dim") && m->n_embd % m->n_head != 0)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: hidden_size (%d) is not a multiple of num_attention_heads "
                             "(%d) and no head_dim is given",
                             file, m->n_embd, m->n_head);
    TSR_TRY(get_pos_int(&c, root, "head_dim", 0, m->n_embd / m->n_head, &m->head_dim));

    TSR_TRY(get_pos_float(&c, root, "rms_norm_eps", 0, 1e-6f, &m->rms_eps));
    TSR_TRY(get_pos_float(&c, root, "rope_theta", 0, 10000.0f, &m->rope_theta));
    TSR_TRY(get_bool(&c, root, "tie_word_embeddings", 0, &m->tied_embeddings));
    TSR_TRY(parse_rope_scaling(file, root, m));

    int attn_bias, mlp_bias;
    TSR_TRY(get_bool(&c, root, "attention_bias", 0, &attn_bias));
    TSR_TRY(get_bool(&c, root, "mlp_bias", 0, &mlp_bias));
    if (mlp_bias)
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "%s: mlp_bias = true is not supported", file);
    m->qkv_bias = fam == HF_QWEN2 ? 1 : attn_bias;

    if (fam == HF_QWEN2) {
        int use_sw;
        TSR_TRY(get_bool(&c, root, "use_sliding_window", 0, &use_sw));
        if (use_sw)
            return tsr_error_set(TSR_ERR_UNSUPPORTED,
                                 "%s: use_sliding_window = true is not supported", file);
    } else if (fam == HF_MISTRAL) {
        int window;
        TSR_TRY(get_pos_int(&c, root, "sliding_window", 0, INT_MAX, &window));
        if (window < m->n_ctx_train) {
            TSR_LOG_W("%s: sliding_window %d < max_position_embeddings %d: context capped "
                      "at %d tokens (full attention equals sliding-window attention there)",
                      file, window, m->n_ctx_train, window);
            m->n_ctx_train = window;
        }
    }

    const char *nop;
    TSR_TRY(get_str(&c, root, "_name_or_path", &nop));
    if (nop && nop[0])
        snprintf(m->name, sizeof m->name, "%s", nop);
    else
        dir_basename(file, m->name, sizeof m->name);
    return TSR_OK;
}

tsr_status tsr_hf_config_parse(const char *json_text, size_t len, const char *name,
                               tsr_model_config *out) {
    if (!out || (!json_text && len > 0))
        return tsr_error_set(TSR_ERR_INVALID, "tsr_hf_config_parse: NULL argument");
    if (!name)
        name = "<config.json>";
    json_error_t jerr;
    json_t *root = json_loadb(json_text ? json_text : "", len,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", name,
                             jerr.text, jerr.line, jerr.column);
    tsr_status s;
    tsr_model_config m;
    memset(&m, 0, sizeof m);
    if (!json_is_object(root))
        s = tsr_error_set(TSR_ERR_FORMAT, "%s: JSON is %s, not an object", name,
                          tsr_json_type_name(root));
    else
        s = parse_root(name, root, &m);
    json_decref(root);
    if (s != TSR_OK)
        return s;
    s = tsr_model_config_validate(&m);
    if (s != TSR_OK)
        return tsr_error_wrap(s, "%s", name);
    *out = m;
    return TSR_OK;
}

tsr_status tsr_hf_config_load(const char *config_json_path, tsr_model_config *out) {
    if (!config_json_path || !out)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_hf_config_load: NULL argument");
    char ebuf[128];
    FILE *fp = fopen(config_json_path, "rb");
    if (!fp)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot open: %s", config_json_path,
                             strerror_r(errno, ebuf, sizeof ebuf));
    char *buf = malloc(HF_MAX_CONFIG_BYTES + 1);
    if (!buf) {
        fclose(fp);
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", config_json_path);
    }
    size_t n = fread(buf, 1, HF_MAX_CONFIG_BYTES + 1, fp);
    int err = ferror(fp);
    fclose(fp);
    tsr_status s;
    if (err)
        s = tsr_error_set(TSR_ERR_IO, "%s: read error", config_json_path);
    else if (n > HF_MAX_CONFIG_BYTES)
        s = tsr_error_set(TSR_ERR_FORMAT, "%s: larger than the %zu-byte limit for a config",
                          config_json_path, HF_MAX_CONFIG_BYTES);
    else
        s = tsr_hf_config_parse(buf, n, config_json_path, out);
    free(buf);
    return s;
}
