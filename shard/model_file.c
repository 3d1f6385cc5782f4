/* shard/model_file.c - GGUF files and Hugging Face directories behind one
 * model-file interface: config, tensor lookup by GGUF name, f32 reads of any
 * rectangle. */
#include "shard/model_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/dtype.h"
#include "shard/hf_config.h"
#include "shard/safetensors.h"

struct tsr_model_file {
    tsr_model_config cfg;
    tsr_gguf_t *gguf; /* GGUF format */
    tsr_st_dir_t *st; /* HF format */
    char path[4096];
    int gguf_permuted_qk; /* Q/K rows stored for adjacent-pair RoPE */
};

/* A tensor as stored: (rows, cols) row-major of `dtype`, rows contiguous. */
typedef struct {
    int dtype;
    int rows, cols;
    size_t row_bytes;
    const unsigned char *data;
} tensor_view;

/* ---- name mapping (GGUF → HF) ---- */

static int hf_name(const char *gguf, char *out, size_t n) {
    static const struct {
        const char *g, *h;
    } layer_map[] = {
        {"attn_norm.weight", "input_layernorm.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_k.weight", "self_attn.k_proj.weight"},
        {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_q.bias", "self_attn.q_proj.bias"},
        {"attn_k.bias", "self_attn.k_proj.bias"},
        {"attn_v.bias", "self_attn.v_proj.bias"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"},
        {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"},
    };
    if (!strcmp(gguf, "token_embd.weight"))
        return snprintf(out, n, "model.embed_tokens.weight") < (int)n;
    if (!strcmp(gguf, "output_norm.weight"))
        return snprintf(out, n, "model.norm.weight") < (int)n;
    if (!strcmp(gguf, "output.weight"))
        return snprintf(out, n, "lm_head.weight") < (int)n;
    int layer, off = 0;
    if (sscanf(gguf, "blk.%d.%n", &layer, &off) == 1 && off > 0)
        for (size_t i = 0; i < sizeof layer_map / sizeof layer_map[0]; i++)
            if (!strcmp(gguf + off, layer_map[i].g))
                return snprintf(out, n, "model.layers.%d.%s", layer, layer_map[i].h) < (int)n;
    return 0;
}

static int view_of(const tsr_model_file_t *mf, const char *name, tensor_view *v) {
    if (mf->gguf) {
        const tsr_gguf_tensor *t = tsr_gguf_find_tensor(mf->gguf, name);
        if (!t || t->n_dims > 2)
            return 0;
        v->dtype = t->type;
        v->cols = (int)t->ne[0];
        v->rows = (int)t->ne[1];
        v->row_bytes = tsr_dtype_row_bytes(t->type, t->ne[0]);
        v->data = t->data;
        return 1;
    }
    char hn[256];
    if (!hf_name(name, hn, sizeof hn))
        return 0;
    const tsr_st_tensor *t = tsr_st_dir_find(mf->st, hn);
    if (!t || t->n_dims < 1 || t->n_dims > 2)
        return 0;
    v->dtype = t->dtype;
    v->rows = t->n_dims == 2 ? (int)t->shape[0] : 1;
    v->cols = (int)t->shape[t->n_dims - 1];
    v->row_bytes = tsr_dtype_row_bytes(t->dtype, (uint64_t)v->cols);
    v->data = t->data;
    return 1;
}

/* ---- config from GGUF metadata ---- */

static tsr_status gguf_int(const tsr_gguf_t *g, const char *arch, const char *key, int required,
                           int *out) {
    char full[256];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (!tsr_gguf_find(g, full)) {
        if (required)
            return tsr_error_set(TSR_ERR_FORMAT, "metadata key '%s' is missing", full);
        return TSR_OK;
    }
    int64_t v;
    TSR_TRY(tsr_gguf_get_i64(g, full, &v));
    if (v <= 0 || v > (1 << 30))
        return tsr_error_set(TSR_ERR_FORMAT, "metadata '%s' = %lld is out of range", full,
                             (long long)v);
    *out = (int)v;
    return TSR_OK;
}

static tsr_status gguf_float(const tsr_gguf_t *g, const char *arch, const char *key, float *out) {
    char full[256];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (!tsr_gguf_find(g, full))
        return TSR_OK;
    double v;
    TSR_TRY(tsr_gguf_get_f64(g, full, &v));
    *out = (float)v;
    return TSR_OK;
}

static tsr_status config_from_gguf(tsr_model_file_t *mf) {
    const tsr_gguf_t *g = mf->gguf;
    tsr_model_config *c = &mf->cfg;
    tsr_strref archs;
    TSR_TRY(tsr_gguf_get_str(g, "general.architecture", &archs));
    char arch[64];
    snprintf(arch, sizeof arch, "%.*s", (int)(archs.len < 63 ? archs.len : 63), archs.ptr);
    if (!strcmp(arch, "llama")) {
        c->arch = TSR_ARCH_LLAMA;
        mf->gguf_permuted_qk = 1; /* llama.cpp's converter permutes Llama Q/K */
    } else if (!strcmp(arch, "qwen2")) {
        c->arch = TSR_ARCH_QWEN2;
    } else {
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "architecture '%s' is not supported (llama, qwen2 are)", arch);
    }
    tsr_strref name;
    if (tsr_gguf_find(g, "general.name") && tsr_gguf_get_str(g, "general.name", &name) == TSR_OK)
        snprintf(c->name, sizeof c->name, "%.*s", (int)(name.len < 127 ? name.len : 127), name.ptr);
    TSR_TRY(gguf_int(g, arch, "embedding_length", 1, &c->n_embd));
    TSR_TRY(gguf_int(g, arch, "block_count", 1, &c->n_layer));
    TSR_TRY(gguf_int(g, arch, "attention.head_count", 1, &c->n_head));
    c->n_head_kv = c->n_head;
    TSR_TRY(gguf_int(g, arch, "attention.head_count_kv", 0, &c->n_head_kv));
    TSR_TRY(gguf_int(g, arch, "feed_forward_length", 1, &c->n_ff));
    TSR_TRY(gguf_int(g, arch, "context_length", 1, &c->n_ctx_train));
    c->head_dim = c->n_embd / c->n_head;
    TSR_TRY(gguf_int(g, arch, "attention.key_length", 0, &c->head_dim));
    c->rms_eps = 1e-5f;
    TSR_TRY(gguf_float(g, arch, "attention.layer_norm_rms_epsilon", &c->rms_eps));
    c->rope_theta = 10000.0f;
    TSR_TRY(gguf_float(g, arch, "rope.freq_base", &c->rope_theta));
    char full[128];
    snprintf(full, sizeof full, "%s.rope.scaling.type", arch);
    if (tsr_gguf_find(g, full)) {
        tsr_strref st;
        TSR_TRY(tsr_gguf_get_str(g, full, &st));
        if (tsr_strref_eq(st, "linear")) {
            c->rope_scaling = TSR_ROPE_SCALING_LINEAR;
            TSR_TRY(gguf_float(g, arch, "rope.scaling.factor", &c->rope_factor));
        } else if (!tsr_strref_eq(st, "none")) {
            return tsr_error_set(TSR_ERR_UNSUPPORTED, "rope scaling '%.*s' is not supported",
                                 (int)st.len, st.ptr);
        }
    }
    tensor_view v;
    if (!view_of(mf, "token_embd.weight", &v))
        return tsr_error_set(TSR_ERR_FORMAT, "tensor 'token_embd.weight' is missing");
    c->n_vocab = v.rows;
    c->tied_embeddings = !tsr_gguf_find_tensor(g, "output.weight");
    c->qkv_bias = tsr_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    return TSR_OK;
}

/* ---- validation of every tensor the config implies ---- */

static tsr_status expect(const tsr_model_file_t *mf, const char *name, int rows, int cols) {
    tensor_view v;
    if (!view_of(mf, name, &v))
        return tsr_error_set(TSR_ERR_FORMAT, "tensor '%s' is missing or not a matrix/vector", name);
    if (!tsr_dtype_name(v.dtype))
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "tensor '%s' (%d x %d) has type id %d, which Tessera does not read",
                             name, v.rows, v.cols, (int)v.dtype);
    if (!v.row_bytes)
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "tensor '%s' (%s, %d x %d) has rows of %d elements, not a multiple of "
                             "the %s block size %zu",
                             name, tsr_dtype_name(v.dtype), v.rows, v.cols, v.cols,
                             tsr_dtype_name(v.dtype), tsr_dtype_block(v.dtype));
    if (v.rows != rows || v.cols != cols)
        return tsr_error_set(TSR_ERR_FORMAT, "tensor '%s' is %d x %d, the config implies %d x %d",
                             name, v.rows, v.cols, rows, cols);
    return TSR_OK;
}

static tsr_status check_tensors(const tsr_model_file_t *mf) {
    const tsr_model_config *c = &mf->cfg;
    int q = c->n_head * c->head_dim, kv = c->n_head_kv * c->head_dim;
    char n[128];
    TSR_TRY(expect(mf, "token_embd.weight", c->n_vocab, c->n_embd));
    TSR_TRY(expect(mf, "output_norm.weight", 1, c->n_embd));
    if (!c->tied_embeddings)
        TSR_TRY(expect(mf, "output.weight", c->n_vocab, c->n_embd));
    for (int l = 0; l < c->n_layer; l++) {
        const struct {
            const char *s;
            int r, k;
        } t[] = {{"attn_norm.weight", 1, c->n_embd},
                 {"ffn_norm.weight", 1, c->n_embd},
                 {"attn_q.weight", q, c->n_embd},
                 {"attn_k.weight", kv, c->n_embd},
                 {"attn_v.weight", kv, c->n_embd},
                 {"attn_output.weight", c->n_embd, q},
                 {"ffn_gate.weight", c->n_ff, c->n_embd},
                 {"ffn_up.weight", c->n_ff, c->n_embd},
                 {"ffn_down.weight", c->n_embd, c->n_ff},
                 {"attn_q.bias", 1, q},
                 {"attn_k.bias", 1, kv},
                 {"attn_v.bias", 1, kv}};
        size_t nt = sizeof t / sizeof t[0] - (c->qkv_bias ? 0 : 3);
        for (size_t i = 0; i < nt; i++) {
            snprintf(n, sizeof n, "blk.%d.%s", l, t[i].s);
            TSR_TRY(expect(mf, n, t[i].r, t[i].k));
        }
    }
    return TSR_OK;
}

/* ---- open / close ---- */

static tsr_status open_hf(tsr_model_file_t *mf, const char *dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    TSR_TRY(tsr_hf_config_load(p, &mf->cfg));
    TSR_TRY(tsr_st_dir_open(dir, &mf->st));
    tensor_view v;
    mf->cfg.tied_embeddings = mf->cfg.tied_embeddings || !view_of(mf, "output.weight", &v);
    return TSR_OK;
}

tsr_status tsr_model_file_open(const char *path, tsr_model_file_t **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return tsr_error_set(TSR_ERR_IO, "model '%s': %s", path, strerror(errno));
    tsr_model_file_t *mf = calloc(1, sizeof *mf);
    if (!mf)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    snprintf(mf->path, sizeof mf->path, "%s", path);
    tsr_status st;
    if (S_ISDIR(sb.st_mode)) {
        st = open_hf(mf, path);
    } else {
        st = tsr_gguf_open(path, &mf->gguf);
        if (st == TSR_OK)
            st = config_from_gguf(mf);
    }
    if (st == TSR_OK)
        st = tsr_model_config_validate(&mf->cfg);
    if (st == TSR_OK)
        st = check_tensors(mf);
    if (st != TSR_OK) {
        tsr_error_wrap(st, "model '%s'", path);
        tsr_model_file_close(mf);
        return st;
    }
    *out = mf;
    return TSR_OK;
}

void tsr_model_file_close(tsr_model_file_t *mf) {
    if (!mf)
        return;
    tsr_gguf_close(mf->gguf);
    tsr_st_dir_close(mf->st);
    free(mf);
}

const tsr_model_config *tsr_model_file_config(const tsr_model_file_t *mf) { return &mf->cfg; }
const tsr_gguf_t *tsr_model_file_gguf(const tsr_model_file_t *mf) { return mf->gguf; }
const char *tsr_model_file_dir(const tsr_model_file_t *mf) { return mf->gguf ? NULL : mf->path; }
const char *tsr_model_file_format(const tsr_model_file_t *mf) {
    return mf->gguf ? "gguf" : "safetensors";
}

const char *tsr_model_file_dtype(const tsr_model_file_t *mf, const char *name) {
    tensor_view v;
    return view_of(mf, name, &v) ? tsr_dtype_name(v.dtype) : NULL;
}

void tsr_model_file_drop_pages(const tsr_model_file_t *mf) {
    tsr_gguf_drop_pages(mf->gguf);
    tsr_st_dir_drop_pages(mf->st);
}

int tsr_model_file_type(const tsr_model_file_t *mf, const char *name) {
    tensor_view v;
    return view_of(mf, name, &v) ? v.dtype : -1;
}

void tsr_model_file_drop_tensor(const tsr_model_file_t *mf, const char *name) {
    const tsr_gguf_tensor *t = mf->gguf ? tsr_gguf_find_tensor(mf->gguf, name) : NULL;
    if (t)
        tsr_gguf_drop_range(mf->gguf, t->data, (size_t)t->nbytes);
}

int tsr_model_file_has(const tsr_model_file_t *mf, const char *name) {
    tensor_view v;
    return view_of(mf, name, &v);
}

tsr_status tsr_model_file_shape(const tsr_model_file_t *mf, const char *name, int *rows,
                                int *cols) {
    tensor_view v;
    if (!view_of(mf, name, &v))
        return tsr_error_set(TSR_ERR_INVALID, "tensor '%s' is not in the model", name);
    *rows = v.rows;
    *cols = v.cols;
    return TSR_OK;
}

/* For GGUF Llama Q/K: the stored row holding rotate-half row r. Within a head
 * of size d, llama.cpp's converter put HF row (t*d/2 + j) at row (2j + t). */
static int stored_row(const tsr_model_file_t *mf, const char *name, int r) {
    if (!mf->gguf_permuted_qk)
        return r;
    size_t n = strlen(name);
    int is_q = n > 13 && !strcmp(name + n - 13, "attn_q.weight");
    int is_k = n > 13 && !strcmp(name + n - 13, "attn_k.weight");
    if (!is_q && !is_k)
        return r;
    int d = mf->cfg.head_dim, head = r / d, h = r % d, half = d / 2;
    int t = h / half, j = h % half;
    return head * d + 2 * j + t;
}

tsr_status tsr_model_file_read(const tsr_model_file_t *mf, const char *name, int row0, int nrows,
                               int col0, int ncols, float *dst) {
    tensor_view v;
    if (!view_of(mf, name, &v))
        return tsr_error_set(TSR_ERR_INVALID, "tensor '%s' is not in the model", name);
    if (row0 < 0 || nrows < 0 || col0 < 0 || ncols < 0 || row0 > v.rows - nrows ||
        col0 > v.cols - ncols)
        return tsr_error_set(TSR_ERR_RANGE,
                             "tensor '%s' (%d x %d): rows %d+%d, cols %d+%d are outside it", name,
                             v.rows, v.cols, row0, nrows, col0, ncols);
    /* a block-aligned column range is dequantized alone: the rest of the
     * row is not touched */
    size_t blk = tsr_dtype_block(v.dtype);
    int aligned = col0 % (int)blk == 0 && ncols % (int)blk == 0;
    size_t skip = aligned ? tsr_dtype_row_bytes(v.dtype, (uint64_t)col0) : 0;
    int full = (col0 == 0 && ncols == v.cols) || aligned;
    float *tmp = full ? NULL : malloc((size_t)v.cols * sizeof *tmp);
    if (!full && !tmp)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory reading '%s'", name);
    for (int r = 0; r < nrows; r++) {
        const unsigned char *src = v.data + (size_t)stored_row(mf, name, row0 + r) * v.row_bytes;
        float *d = dst + (size_t)r * ncols;
        if (full) {
            tsr_dequantize(v.dtype, src + skip, d, (size_t)ncols);
        } else {
            tsr_dequantize(v.dtype, src, tmp, (size_t)v.cols);
            memcpy(d, tmp + col0, (size_t)ncols * sizeof *tmp);
        }
    }
    free(tmp);
    return TSR_OK;
}

tsr_status tsr_model_file_read_raw(const tsr_model_file_t *mf, const char *name, int row0,
                                   int nrows, int col0, int ncols, void *dst) {
    tensor_view v;
    if (!view_of(mf, name, &v))
        return tsr_error_set(TSR_ERR_INVALID, "tensor '%s' is not in the model", name);
    if (row0 < 0 || nrows < 0 || col0 < 0 || ncols < 0 || row0 > v.rows - nrows ||
        col0 > v.cols - ncols)
        return tsr_error_set(TSR_ERR_RANGE,
                             "tensor '%s' (%d x %d): rows %d+%d, cols %d+%d are outside it", name,
                             v.rows, v.cols, row0, nrows, col0, ncols);
    const int blk = (int)tsr_dtype_block(v.dtype);
    if (col0 % blk || ncols % blk)
        return tsr_error_set(TSR_ERR_INVALID,
                             "tensor '%s' (%s, %d x %d): columns %d..%d do not fall on its "
                             "%d-element block boundaries, so the split would cut a block (choose "
                             "a layout whose column slices are multiples of %d, or --weight-dtype "
                             "f32)",
                             name, tsr_dtype_name(v.dtype), v.rows, v.cols, col0, col0 + ncols, blk,
                             blk);
    const size_t skip = tsr_dtype_row_bytes(v.dtype, (uint64_t)col0);
    const size_t len = tsr_dtype_row_bytes(v.dtype, (uint64_t)ncols);
    for (int r = 0; r < nrows; r++)
        memcpy((unsigned char *)dst + (size_t)r * len,
               v.data + (size_t)stored_row(mf, name, row0 + r) * v.row_bytes + skip, len);
    return TSR_OK;
}
