/* shard/merge.c - `tessera merge-lora`: base + PEFT adapter -> a Hugging
 * Face model directory (shard/merge.h). */
#include "shard/merge.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/decimal.h"
#include "base/fs.h"
#include "kernels/dtype.h"
#include "shard/config.h"
#include "shard/gguf.h"
#include "shard/model_file.h"
#include "shard/peft.h"
#include "shard/safetensors_write.h"

/* ---- small file helpers --------------------------------------------------- */

static tsr_status write_json(const char *path, const json_t *root) {
    /* 9 significant digits: every float is stored as its shortest decimal. */
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    if (!text)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: cannot serialise the JSON", path);
    size_t n = strlen(text);
    char *buf = realloc(text, n + 2);
    if (!buf) {
        free(text);
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", path);
    }
    buf[n] = '\n';
    tsr_status s = tsr_fs_write_file(path, buf, n + 1);
    free(buf);
    return s;
}

static char *path_join(const char *dir, const char *name) {
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    return p;
}

/* Copies dir/name into tmp/name when it exists. */
static tsr_status copy_if_present(const char *dir, const char *tmp, const char *name) {
    char *src = path_join(dir, name), *dst = path_join(tmp, name), *buf = NULL;
    size_t n = 0;
    tsr_status s = TSR_OK;
    if (!src || !dst)
        s = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    else if (access(src, F_OK) == 0 || errno != ENOENT)
        s = tsr_fs_read_file(src, 0, &buf, &n);
    if (s == TSR_OK && buf)
        s = tsr_fs_write_file(dst, buf, n);
    free(buf);
    free(src);
    free(dst);
    return s;
}

/* ---- the tensors ------------------------------------------------------------ */

typedef struct {
    char hf[96];
    char gg[64];
    int rows, cols; /* (out, in); 1-D: rows == 1 */
    int one_d;
    int layer, target; /* target -1: not adapted */
    int zeros;         /* not in the base: written as zeros (Llama o_proj.bias) */
} entry;

static tsr_status add_entry(const tsr_model_file_t *mf, entry *e, size_t *n, const char *hf,
                            const char *gg, int one_d, int layer, int target) {
    entry *x = &e[*n];
    memset(x, 0, sizeof *x);
    snprintf(x->hf, sizeof x->hf, "%s", hf);
    snprintf(x->gg, sizeof x->gg, "%s", gg);
    x->one_d = one_d;
    x->layer = layer;
    x->target = target;
    TSR_TRY(tsr_model_file_shape(mf, gg, &x->rows, &x->cols));
    (*n)++;
    return TSR_OK;
}

static tsr_status list_tensors(const tsr_model_file_t *mf, const tsr_model_config *cfg,
                               const tsr_peft_adapter *ad, entry *e, size_t *n) {
    static const struct {
        const char *gg, *hf;
        int one_d, target;
    } per_layer[] = {
        {"attn_norm.weight", "input_layernorm.weight", 1, -1},
        {"attn_q.weight", "self_attn.q_proj.weight", 0, TSR_LORA_Q},
        {"attn_k.weight", "self_attn.k_proj.weight", 0, TSR_LORA_K},
        {"attn_v.weight", "self_attn.v_proj.weight", 0, TSR_LORA_V},
        {"attn_q.bias", "self_attn.q_proj.bias", 1, -1},
        {"attn_k.bias", "self_attn.k_proj.bias", 1, -1},
        {"attn_v.bias", "self_attn.v_proj.bias", 1, -1},
        {"attn_output.weight", "self_attn.o_proj.weight", 0, TSR_LORA_O},
        {"ffn_norm.weight", "post_attention_layernorm.weight", 1, -1},
        {"ffn_gate.weight", "mlp.gate_proj.weight", 0, TSR_LORA_GATE},
        {"ffn_up.weight", "mlp.up_proj.weight", 0, TSR_LORA_UP},
        {"ffn_down.weight", "mlp.down_proj.weight", 0, TSR_LORA_DOWN},
    };
    char hf[96], gg[64];
    *n = 0;
    TSR_TRY(add_entry(mf, e, n, "model.embed_tokens.weight", "token_embd.weight", 0, -1, -1));
    for (int l = 0; l < cfg->n_layer; l++) {
        for (size_t k = 0; k < sizeof per_layer / sizeof per_layer[0]; k++) {
            int bias = strstr(per_layer[k].gg, ".bias") != NULL;
            if (bias && !cfg->qkv_bias)
                continue;
            snprintf(gg, sizeof gg, "blk.%d.%s", l, per_layer[k].gg);
            snprintf(hf, sizeof hf, "model.layers.%d.%s", l, per_layer[k].hf);
            int t = per_layer[k].target;
            if (t >= 0 && !(ad->targets & TSR_LORA_TARGET_BIT(t)))
                t = -1;
            TSR_TRY(add_entry(mf, e, n, hf, gg, per_layer[k].one_d, l, t));
            if (t >= 0) {
                int din, dout;
                TSR_TRY(tsr_peft_target_dims(cfg, t, &din, &dout));
                if (e[*n - 1].rows != dout || e[*n - 1].cols != din)
                    return tsr_error_set(TSR_ERR_FORMAT,
                                         "%s is (%d, %d); the adapter expects (%d, %d)", gg,
                                         e[*n - 1].rows, e[*n - 1].cols, dout, din);
            }
        }
        /* Hugging Face Llama's attention_bias gives o_proj a bias too; the
         * base has none (it is zero). */
        if (cfg->qkv_bias && cfg->arch == TSR_ARCH_LLAMA) {
            entry *x = &e[*n];
            memset(x, 0, sizeof *x);
            snprintf(x->hf, sizeof x->hf, "model.layers.%d.self_attn.o_proj.bias", l);
            x->rows = 1;
            x->cols = cfg->n_embd;
            x->one_d = 1;
            x->layer = l;
            x->target = -1;
            x->zeros = 1;
            (*n)++;
        }
    }
    TSR_TRY(add_entry(mf, e, n, "model.norm.weight", "output_norm.weight", 1, -1, -1));
    if (!cfg->tied_embeddings)
        TSR_TRY(add_entry(mf, e, n, "lm_head.weight", "output.weight", 0, -1, -1));
    return TSR_OK;
}

static tsr_status write_weights(const char *path, const tsr_model_file_t *mf, const entry *e,
                                size_t n, const tsr_peft_adapter *ad, tsr_merge_dtype dtype) {
    const float scale = tsr_peft_scaling(ad);
    const int r = ad->r;
    tsr_status s = TSR_OK;
    tsr_st_out_tensor *desc = calloc(n ? n : 1, sizeof *desc);
    char *head = NULL;
    size_t head_len = 0;
    float *w = NULL, *d = NULL;
    uint16_t *h = NULL;
    int fd = -1;
    size_t max_elems = 1, max_cols = 1;
    if (!desc) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory for the header", path);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        size_t ne = (size_t)e[i].rows * (size_t)e[i].cols;
        if (ne > max_elems)
            max_elems = ne;
        if ((size_t)e[i].cols > max_cols)
            max_cols = (size_t)e[i].cols;
        desc[i] = (tsr_st_out_tensor){
            .name = e[i].hf,
            .dtype = dtype == TSR_MERGE_BF16 ? TSR_BF16 : TSR_F32,
            .n_dims = e[i].one_d ? 1 : 2,
            .shape = {(uint64_t)(e[i].one_d ? e[i].cols : e[i].rows), (uint64_t)e[i].cols}};
    }
    s = tsr_safetensors_header(desc, n, &head, &head_len);
    if (s != TSR_OK) {
        tsr_error_wrap(s, "%s", path);
        goto cleanup;
    }
    w = malloc(max_elems * sizeof *w);
    d = malloc(max_cols * sizeof *d);
    h = dtype == TSR_MERGE_BF16 ? malloc(max_elems * sizeof *h) : NULL;
    if (!w || !d || (dtype == TSR_MERGE_BF16 && !h)) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory (%zu floats)", path, max_elems);
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, tsr_fs_create(path, &fd));
    TSR_CHECK_GOTO(s, tsr_fs_write_all(fd, head, head_len, path));
    for (size_t i = 0; i < n; i++) {
        const entry *x = &e[i];
        size_t ne = (size_t)x->rows * (size_t)x->cols;
        if (x->zeros)
            memset(w, 0, ne * sizeof *w);
        else
            TSR_CHECK_GOTO(s, tsr_model_file_read(mf, x->gg, 0, x->rows, 0, x->cols, w));
        if (x->target >= 0) {
            const float *A = ad->A[TSR_PEFT_IDX(x->layer, x->target)]; /* (r, cols) */
            const float *B = ad->B[TSR_PEFT_IDX(x->layer, x->target)]; /* (rows, r) */
            for (int o = 0; o < x->rows; o++) {
                memset(d, 0, (size_t)x->cols * sizeof *d);
                for (int k = 0; k < r; k++) {
                    const float b = B[(size_t)o * r + k];
                    const float *a = A + (size_t)k * x->cols;
                    for (int c = 0; c < x->cols; c++)
                        d[c] += b * a[c];
                }
                float *row = w + (size_t)o * x->cols;
                for (int c = 0; c < x->cols; c++)
                    row[c] += scale * d[c];
            }
        }
        for (size_t k = 0; k < ne; k++)
            if (!isfinite(w[k])) {
                s = tsr_error_set(TSR_ERR_FORMAT, "%s: the merged value [%zu] is not finite", x->hf,
                                  k);
                goto cleanup;
            }
        if (dtype == TSR_MERGE_BF16) {
            for (size_t k = 0; k < ne; k++)
                h[k] = tsr_f32_to_bf16(w[k]);
            TSR_CHECK_GOTO(s, tsr_fs_write_all(fd, h, ne * sizeof *h, path));
        } else {
            TSR_CHECK_GOTO(s, tsr_fs_write_all(fd, w, ne * sizeof *w, path));
        }
    }
cleanup:
    if (fd >= 0)
        s = tsr_fs_close_synced(fd, path, s);
    free(h);
    free(d);
    free(w);
    free(head);
    free(desc);
    return s;
}

/* ---- config.json -------------------------------------------------------------- */

static int64_t gguf_opt_id(const tsr_gguf_t *g, const char *key) {
    int64_t v;
    if (!g || !tsr_gguf_find(g, key) || tsr_gguf_get_i64(g, key, &v) != TSR_OK)
        return -1;
    return v;
}

static json_t *id_or_null(int64_t id) { return id >= 0 ? json_integer(id) : json_null(); }

static tsr_status config_from_cfg(const tsr_model_config *c, const tsr_gguf_t *g,
                                  const char *torch_dtype, json_t **out) {
    int llama = c->arch == TSR_ARCH_LLAMA;
    json_t *rs = json_null();
    if (c->rope_scaling == TSR_ROPE_SCALING_LINEAR)
        rs = json_pack("{s:s, s:f}", "rope_type", "linear", "factor",
                       tsr_decimal_shortest(c->rope_factor, NULL));
    else if (c->rope_scaling == TSR_ROPE_SCALING_LLAMA3)
        rs = json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor",
                       tsr_decimal_shortest(c->rope_factor, NULL), "low_freq_factor",
                       tsr_decimal_shortest(c->rope_low_freq_factor, NULL), "high_freq_factor",
                       tsr_decimal_shortest(c->rope_high_freq_factor, NULL),
                       "original_max_position_embeddings", c->rope_orig_ctx);
    json_t *root = json_pack(
        "{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:f, s:f, s:o, s:i, s:i, s:b, s:s}",
        "architectures", llama ? "LlamaForCausalLM" : "Qwen2ForCausalLM", "model_type",
        llama ? "llama" : "qwen2", "hidden_size", c->n_embd, "intermediate_size", c->n_ff,
        "num_attention_heads", c->n_head, "num_key_value_heads", c->n_head_kv, "num_hidden_layers",
        c->n_layer, "head_dim", c->head_dim, "hidden_act", "silu", "rms_norm_eps",
        tsr_decimal_shortest(c->rms_eps, NULL), "rope_theta",
        tsr_decimal_shortest(c->rope_theta, NULL), "rope_scaling", rs, "max_position_embeddings",
        c->n_ctx_train, "vocab_size", c->n_vocab, "tie_word_embeddings", c->tied_embeddings,
        "torch_dtype", torch_dtype);
    if (!root)
        return tsr_error_set(TSR_ERR_NOMEM, "config.json: out of memory");
    int bad = json_object_set_new(root, "bos_token_id",
                                  id_or_null(gguf_opt_id(g, "tokenizer.ggml.bos_token_id")));
    bad |= json_object_set_new(root, "eos_token_id",
                               id_or_null(gguf_opt_id(g, "tokenizer.ggml.eos_token_id")));
    int64_t pad = gguf_opt_id(g, "tokenizer.ggml.padding_token_id");
    if (pad >= 0)
        bad |= json_object_set_new(root, "pad_token_id", json_integer(pad));
    if (llama) {
        bad |= json_object_set_new(root, "attention_bias", json_boolean(c->qkv_bias));
        bad |= json_object_set_new(root, "mlp_bias", json_false());
    }
    if (bad) {
        json_decref(root);
        return tsr_error_set(TSR_ERR_NOMEM, "config.json: out of memory");
    }
    *out = root;
    return TSR_OK;
}

/* ---- tokenizer from GGUF metadata ------------------------------------------------ */

#define TOKEN_TYPE_CONTROL 3
#define TOKEN_TYPE_USER_DEFINED 4

static const char QWEN2_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static json_t *byte_level(int trim_offsets, int use_regex) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                     "trim_offsets", trim_offsets, "use_regex", use_regex);
}

/* The pre-tokenizer `pre` (tokenizer.ggml.pre; NULL when absent) implies, as
 * tests/reference/hf_tokenizer.py maps it; NULL with *unknown set when there
 * is no mapping. */
static json_t *pre_tokenizer(const char *pre, int *unknown) {
    static const char *const digits_then_gpt2[] = {"smollm",    "starcoder", "refact",  "command-r",
                                                   "codeshell", "exaone",    "minerva", NULL};
    *unknown = 0;
    for (const char *const *p = digits_then_gpt2; pre && *p; p++)
        if (!strcmp(pre, *p))
            return json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers",
                             "type", "Digits", "individual_digits", 1, byte_level(1, 1));
    if (!pre || !strcmp(pre, "gpt2") || !strcmp(pre, "default"))
        return byte_level(1, 1);
    if (!strcmp(pre, "qwen2") || !strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3"))
        return json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence",
                         "pretokenizers", "type", "Split", "pattern", "Regex",
                         strcmp(pre, "qwen2") ? LLAMA3_PATTERN : QWEN2_PATTERN, "behavior",
                         "Isolated", "invert", 0, byte_level(0, 0));
    *unknown = 1;
    return NULL;
}

static json_t *strref_json(tsr_strref r) { return json_stringn(r.ptr, r.len); }

static tsr_status gguf_tokenizer(const tsr_gguf_t *g, const char *tmp) {
    tsr_status s = TSR_OK;
    json_t *tok = NULL, *tcfg = NULL, *vocab = NULL, *merges = NULL, *added = NULL;
    int64_t *types = NULL;
    char *pre = NULL, *path = NULL;
    tsr_strref model;
    if (!tsr_gguf_find(g, "tokenizer.ggml.model"))
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "the GGUF file has no tokenizer (tokenizer.ggml.model): cannot write "
                             "tokenizer.json");
    TSR_TRY(tsr_gguf_get_str(g, "tokenizer.ggml.model", &model));
    if (!tsr_strref_eq(model, "gpt2"))
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "tokenizer.ggml.model is \"%.*s\": only byte-level BPE (\"gpt2\") "
                             "can be written as tokenizer.json",
                             (int)(model.len > 64 ? 64 : model.len), model.ptr);
    const tsr_strref *tokens = NULL, *mg = NULL;
    uint64_t n_tok = 0, n_mg = 0, n_types = 0;
    TSR_TRY(tsr_gguf_get_str_arr(g, "tokenizer.ggml.tokens", &tokens, &n_tok));
    if (tsr_gguf_find(g, "tokenizer.ggml.merges"))
        TSR_TRY(tsr_gguf_get_str_arr(g, "tokenizer.ggml.merges", &mg, &n_mg));
    if (tsr_gguf_find(g, "tokenizer.ggml.token_type")) {
        TSR_TRY(tsr_gguf_get_i64_arr(g, "tokenizer.ggml.token_type", &types, &n_types));
        if (n_types != n_tok) {
            free(types);
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                                 (unsigned long long)n_types, (unsigned long long)n_tok);
        }
    }
    if (tsr_gguf_find(g, "tokenizer.ggml.pre")) {
        tsr_strref p;
        TSR_CHECK_GOTO(s, tsr_gguf_get_str(g, "tokenizer.ggml.pre", &p));
        pre = strndup(p.ptr, p.len);
        if (!pre) {
            s = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
            goto cleanup;
        }
    }
    int unknown = 0;
    json_t *pt = pre_tokenizer(pre, &unknown);
    if (!pt) {
        s = unknown ? tsr_error_set(TSR_ERR_UNSUPPORTED,
                                    "tokenizer.ggml.pre \"%s\" has no known tokenizer.json "
                                    "pre-tokenizer (smollm, starcoder, gpt2, qwen2, llama-bpe, "
                                    "...)",
                                    pre)
                    : tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    vocab = json_object();
    merges = json_array();
    added = json_array();
    tok = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:{s:s, s:b, s:b, s:b}, "
                    "s:{s:s, s:b, s:b, s:b}}",
                    "version", "1.0", "truncation", "padding", "added_tokens",
                    added ? added : json_null(), "normalizer", "pre_tokenizer", pt,
                    "post_processor", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 0,
                    "use_regex", 1, "decoder", "type", "ByteLevel", "add_prefix_space", 1,
                    "trim_offsets", 1, "use_regex", 1);
    if (!tok || !vocab || !merges || !added) {
        s = tsr_error_set(TSR_ERR_NOMEM, "tokenizer.json: out of memory");
        goto cleanup;
    }
    json_incref(added); /* json_pack's "o" stole one reference */
    for (uint64_t i = 0; i < n_tok; i++) {
        json_t *str = strref_json(tokens[i]);
        if (!str) {
            s = tsr_error_set(TSR_ERR_UNSUPPORTED,
                              "tokenizer.ggml.tokens[%llu] is not valid UTF-8 (tokenizer.json "
                              "cannot hold it)",
                              (unsigned long long)i);
            goto cleanup;
        }
        json_decref(str);
        if (json_object_getn(vocab, tokens[i].ptr, tokens[i].len)) {
            s = tsr_error_set(TSR_ERR_FORMAT, "tokenizer.ggml.tokens[%llu] \"%.*s\" is a duplicate",
                              (unsigned long long)i, (int)(tokens[i].len > 64 ? 64 : tokens[i].len),
                              tokens[i].ptr);
            goto cleanup;
        }
        if (json_object_setn_new(vocab, tokens[i].ptr, tokens[i].len,
                                 json_integer((json_int_t)i))) {
            s = tsr_error_set(TSR_ERR_NOMEM, "tokenizer.json: out of memory");
            goto cleanup;
        }
        if (types && (types[i] == TOKEN_TYPE_CONTROL || types[i] == TOKEN_TYPE_USER_DEFINED)) {
            json_t *a = json_pack("{s:I, s:o, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i,
                                  "content", strref_json(tokens[i]), "single_word", 0, "lstrip", 0,
                                  "rstrip", 0, "normalized", 0, "special", 1);
            if (!a || json_array_append_new(added, a)) {
                s = tsr_error_set(TSR_ERR_NOMEM, "tokenizer.json: out of memory");
                goto cleanup;
            }
        }
    }
    for (uint64_t i = 0; i < n_mg; i++) {
        const char *sp = memchr(mg[i].ptr, ' ', mg[i].len);
        if (!sp) {
            s = tsr_error_set(TSR_ERR_FORMAT, "tokenizer.ggml.merges[%llu] has no space",
                              (unsigned long long)i);
            goto cleanup;
        }
        size_t ll = (size_t)(sp - mg[i].ptr);
        json_t *m = json_pack("[s#, s#]", mg[i].ptr, ll, sp + 1, mg[i].len - ll - 1);
        if (!m || json_array_append_new(merges, m)) {
            s = tsr_error_set(TSR_ERR_FORMAT, "tokenizer.ggml.merges[%llu] is not valid UTF-8",
                              (unsigned long long)i);
            goto cleanup;
        }
    }
    json_t *mdl =
        json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:O, s:O}", "type", "BPE", "dropout",
                  "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                  "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", merges);
    if (!mdl || json_object_set_new(tok, "model", mdl)) {
        s = tsr_error_set(TSR_ERR_NOMEM, "tokenizer.json: out of memory");
        goto cleanup;
    }
    path = path_join(tmp, "tokenizer.json");
    if (!path) {
        s = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, write_json(path, tok));

    /* tokenizer_config.json */
    int64_t ids[4] = {gguf_opt_id(g, "tokenizer.ggml.bos_token_id"),
                      gguf_opt_id(g, "tokenizer.ggml.eos_token_id"),
                      gguf_opt_id(g, "tokenizer.ggml.padding_token_id"),
                      gguf_opt_id(g, "tokenizer.ggml.unknown_token_id")};
    static const char *const keys[4] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    int add_bos = 0;
    if (tsr_gguf_find(g, "tokenizer.ggml.add_bos_token"))
        TSR_CHECK_GOTO(s, tsr_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos));
    tcfg = json_pack("{s:s}", "tokenizer_class", "PreTrainedTokenizerFast");
    int bad = !tcfg;
    for (int k = 0; k < 4 && !bad; k++) {
        json_t *v =
            ids[k] >= 0 && (uint64_t)ids[k] < n_tok ? strref_json(tokens[ids[k]]) : json_null();
        bad = !v || json_object_set_new(tcfg, keys[k], v);
    }
    bad = bad || json_object_set_new(tcfg, "add_bos_token", json_boolean(add_bos));
    bad = bad || json_object_set_new(tcfg, "model_max_length", json_null());
    if (!bad && tsr_gguf_find(g, "tokenizer.chat_template")) {
        tsr_strref tm;
        TSR_CHECK_GOTO(s, tsr_gguf_get_str(g, "tokenizer.chat_template", &tm));
        json_t *v = strref_json(tm);
        bad = !v || json_object_set_new(tcfg, "chat_template", v);
    }
    if (bad) {
        s = tsr_error_set(TSR_ERR_FORMAT, "tokenizer_config.json: out of memory or invalid UTF-8");
        goto cleanup;
    }
    free(path);
    path = path_join(tmp, "tokenizer_config.json");
    if (!path) {
        s = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, write_json(path, tcfg));
cleanup:
    free(path);
    free(pre);
    free(types);
    json_decref(tok);
    json_decref(tcfg);
    json_decref(vocab);
    json_decref(merges);
    json_decref(added);
    return s;
}

/* ---- the command ------------------------------------------------------------------ */

/* `out` must be absent or an empty directory. */
static tsr_status check_out(const char *out) {
    struct stat st;
    if (lstat(out, &st) != 0) {
        if (errno == ENOENT)
            return TSR_OK;
        return tsr_error_set(TSR_ERR_IO, "%s: %s", out, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return tsr_error_set(TSR_ERR_INVALID, "%s exists and is not a directory", out);
    DIR *d = opendir(out);
    if (!d)
        return tsr_error_set(TSR_ERR_IO, "%s: %s", out, strerror(errno));
    struct dirent *de;
    int empty = 1;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            empty = 0;
    closedir(d);
    if (!empty)
        return tsr_error_set(TSR_ERR_INVALID,
                             "%s exists and is not empty: merge-lora does not overwrite a "
                             "directory (remove it or choose another --out)",
                             out);
    return TSR_OK;
}

static tsr_status write_config(const tsr_model_file_t *mf, const tsr_model_config *cfg,
                               const char *tmp, tsr_merge_dtype dtype) {
    const char *torch_dtype = dtype == TSR_MERGE_BF16 ? "bfloat16" : "float32";
    const char *dir = tsr_model_file_dir(mf);
    json_t *root = NULL;
    tsr_status s = TSR_OK;
    if (dir) {
        /* The base's own config.json, only torch_dtype changed: every key it
         * had (bos/eos ids, rope_scaling, ...) is kept as it was. */
        char *src = path_join(dir, "config.json");
        json_error_t je;
        root = src ? json_load_file(src, 0, &je) : NULL;
        if (!root || !json_is_object(root)) {
            s = tsr_error_set(TSR_ERR_FORMAT, "%s: cannot read it again: %s",
                              src ? src : "config.json", root ? "not an object" : je.text);
            free(src);
            json_decref(root);
            return s;
        }
        free(src);
        json_object_set_new(root, "torch_dtype", json_string(torch_dtype));
    } else {
        TSR_TRY(config_from_cfg(cfg, tsr_model_file_gguf(mf), torch_dtype, &root));
    }
    char *path = path_join(tmp, "config.json");
    s = path ? write_json(path, root) : tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    free(path);
    json_decref(root);
    return s;
}

tsr_status tsr_merge_lora(const char *model_path, const char *adapter_dir, const char *out_arg,
                          tsr_merge_dtype dtype) {
    if (!model_path || !adapter_dir || !out_arg)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_merge_lora: NULL argument");
    if (dtype != TSR_MERGE_F32 && dtype != TSR_MERGE_BF16)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_merge_lora: bad dtype %d", (int)dtype);
    tsr_status s = TSR_OK;
    tsr_model_file_t *mf = NULL;
    tsr_peft_adapter ad = {0};
    entry *ents = NULL;
    tsr_fs_dir_write w = {0};
    char *out = strdup(out_arg), *path = NULL;
    if (!out)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    for (size_t l = strlen(out); l > 1 && out[l - 1] == '/'; l--)
        out[l - 1] = '\0';
    if (!strcmp(out, "/") || !strcmp(out, ".") || !strcmp(out, "..") || !out[0]) {
        s = tsr_error_set(TSR_ERR_INVALID, "\"%s\" cannot be the output directory", out_arg);
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, check_out(out));
    TSR_CHECK_GOTO(s, tsr_model_file_open(model_path, &mf));
    const tsr_model_config *cfg = tsr_model_file_config(mf);
    s = tsr_peft_load(adapter_dir, cfg, &ad);
    if (s != TSR_OK) {
        tsr_error_wrap(s, "loading the adapter %s for %s", adapter_dir, model_path);
        goto cleanup;
    }
    size_t cap = 2 + (size_t)cfg->n_layer * 16, n = 0;
    ents = calloc(cap, sizeof *ents);
    if (!ents) {
        s = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, list_tensors(mf, cfg, &ad, ents, &n));

    TSR_CHECK_GOTO(s, tsr_fs_dir_write_begin(&w, out, 0));
    const char *tmp = w.tmp;
    path = path_join(tmp, "model.safetensors");
    if (!path) {
        s = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, write_weights(path, mf, ents, n, &ad, dtype));
    TSR_CHECK_GOTO(s, write_config(mf, cfg, tmp, dtype));
    if (tsr_model_file_dir(mf)) {
        static const char *const files[] = {"tokenizer.json", "tokenizer_config.json",
                                            "special_tokens_map.json", "generation_config.json",
                                            NULL};
        for (const char *const *f = files; *f; f++)
            TSR_CHECK_GOTO(s, copy_if_present(tsr_model_file_dir(mf), tmp, *f));
    } else {
        TSR_CHECK_GOTO(s, gguf_tokenizer(tsr_model_file_gguf(mf), tmp));
    }
    /* An empty `out` is replaced by rename(2); a non-empty one makes it fail
     * (checked above too, but another process may have raced us). */
    s = tsr_fs_dir_write_commit(&w, NULL);
cleanup:
    tsr_fs_dir_write_free(&w);
    free(path);
    free(ents);
    free(out);
    tsr_peft_free(&ad);
    tsr_model_file_close(mf);
    return s;
}
