/* shard/peft.c - PEFT LoRA adapter directories: writer (safetensors and
 * adapter_config.json, atomically replaced) and validating reader.
 *
 * The writer produces the safetensors layout itself (8-byte little-endian
 * header length, JSON header padded with spaces to a multiple of 8, tensors
 * contiguous in name order); the reader goes through shard/safetensors, which
 * validates the file at open. JSON is built and parsed with jansson.
 *
 * What it is not: no device memory, no sharding, no application of the
 * adapter; no adapter_model.bin (pickle) reader. */
#include "shard/peft.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/json_name.h"
#include "base/log.h"
#include "kernels/dtype.h"
#include "shard/safetensors.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shard/peft.c writes f32 tensors as host bytes: little-endian hosts only"
#endif

#define PEFT_CONFIG_FILE "adapter_config.json"
#define PEFT_WEIGHTS_FILE "adapter_model.safetensors"
#define PEFT_BIN_FILE "adapter_model.bin"
#define PEFT_NAME_PREFIX "base_model.model.model.layers."
/* adapter_config.json files are a few KB. */
#define PEFT_MAX_CONFIG_BYTES ((size_t)1 << 20)

static const struct {
    const char *module; /* PEFT's module name */
    const char *block;  /* the submodule of the decoder layer holding it */
} peft_targets[TSR_PEFT_N_TARGETS] = {
    {"q_proj", "self_attn"}, {"k_proj", "self_attn"}, {"v_proj", "self_attn"},
    {"o_proj", "self_attn"}, {"gate_proj", "mlp"},    {"up_proj", "mlp"},
    {"down_proj", "mlp"},
};

/* ---- small helpers ------------------------------------------------------ */

static const char *errno_str(int err, char *buf, size_t len) {
    return strerror_r(err, buf, len); /* GNU variant (_GNU_SOURCE) */
}

/* malloc'd printf; NULL when out of memory. */
static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

const char *tsr_peft_target_name(int t) {
    return t >= 0 && t < TSR_PEFT_N_TARGETS ? peft_targets[t].module : NULL;
}

tsr_status tsr_peft_target_dims(const tsr_model_config *cfg, int t, int *d_in, int *d_out) {
    int q = cfg->n_head * cfg->head_dim, kv = cfg->n_head_kv * cfg->head_dim;
    int in, out;
    switch (t) {
    case TSR_PEFT_Q: in = cfg->n_embd, out = q; break;
    case TSR_PEFT_K:
    case TSR_PEFT_V: in = cfg->n_embd, out = kv; break;
    case TSR_PEFT_O: in = q, out = cfg->n_embd; break;
    case TSR_PEFT_GATE:
    case TSR_PEFT_UP: in = cfg->n_embd, out = cfg->n_ff; break;
    case TSR_PEFT_DOWN: in = cfg->n_ff, out = cfg->n_embd; break;
    default: return tsr_error_set(TSR_ERR_INVALID, "LoRA target %d is out of range (0..6)", t);
    }
    *d_in = in;
    *d_out = out;
    return TSR_OK;
}

float tsr_peft_scaling(const tsr_peft_adapter *a) {
    return a->use_rslora ? a->alpha / sqrtf((float)a->r) : a->alpha / (float)a->r;
}

/* Model sizes are validated ints; products of two stay far below SIZE_MAX. */
static size_t mat_elems(int rows, int cols) { return (size_t)rows * (size_t)cols; }

/* ---- init / free -------------------------------------------------------- */

void tsr_peft_free(tsr_peft_adapter *a) {
    if (!a)
        return;
    size_t n = a->n_layers > 0 ? (size_t)a->n_layers * TSR_PEFT_N_TARGETS : 0;
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

/* Allocates the pointer arrays (all NULL) for cfg->n_layer layers. */
static tsr_status adapter_alloc_arrays(tsr_peft_adapter *a, const tsr_model_config *cfg) {
    size_t n = (size_t)cfg->n_layer * TSR_PEFT_N_TARGETS;
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
    if (targets == 0 || (targets & ~TSR_PEFT_ALL))
        return tsr_error_set(TSR_ERR_INVALID,
                             "tsr_peft_init: targets 0x%x must be a non-empty subset of 0x%x",
                             targets, TSR_PEFT_ALL);
    if (cfg->n_layer <= 0)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_peft_init: model has %d layers", cfg->n_layer);
    tsr_status s = adapter_alloc_arrays(a, cfg);
    if (s != TSR_OK)
        goto fail;
    a->r = r;
    a->alpha = alpha;
    a->targets = targets;
    for (int l = 0; l < cfg->n_layer; l++)
        for (int t = 0; t < TSR_PEFT_N_TARGETS; t++) {
            if (!(targets & TSR_PEFT_BIT(t)))
                continue;
            int din, dout;
            TSR_CHECK_GOTO(s, tsr_peft_target_dims(cfg, t, &din, &dout));
            a->A[TSR_PEFT_IDX(l, t)] = calloc(mat_elems(r, din), sizeof(float));
            a->B[TSR_PEFT_IDX(l, t)] = calloc(mat_elems(dout, r), sizeof(float));
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

/* PEFT's name of lora_A (ab = 0) or lora_B (ab = 1) of (layer, t). */
static void tensor_name(char *buf, size_t cap, int layer, int t, int ab) {
    snprintf(buf, cap, PEFT_NAME_PREFIX "%d.%s.%s.lora_%c.weight", layer, peft_targets[t].block,
             peft_targets[t].module, ab ? 'B' : 'A');
}

/* Parses a PEFT LoRA tensor name. Returns 1 and fills layer/t/ab when `name`
 * is base_model.model.model.layers.{i}.{block}.{module}.lora_{A,B}.weight with
 * a canonical decimal i (range not checked here); else 0. */
static int parse_tensor_name(const char *name, long *layer, int *t, int *ab) {
    size_t pl = strlen(PEFT_NAME_PREFIX);
    if (strncmp(name, PEFT_NAME_PREFIX, pl) != 0)
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
    for (int k = 0; k < TSR_PEFT_N_TARGETS; k++) {
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
    if (a->targets == 0 || (a->targets & ~TSR_PEFT_ALL))
        return tsr_error_set(TSR_ERR_INVALID,
                             "LoRA adapter: targets 0x%x must be a non-empty subset of 0x%x",
                             a->targets, TSR_PEFT_ALL);
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
        for (int t = 0; t < TSR_PEFT_N_TARGETS; t++) {
            int on = (a->targets & TSR_PEFT_BIT(t)) != 0;
            int din, dout;
            TSR_TRY(tsr_peft_target_dims(cfg, t, &din, &dout));
            for (int ab = 0; ab < 2; ab++) {
                const float *m = ab ? a->B[TSR_PEFT_IDX(l, t)] : a->A[TSR_PEFT_IDX(l, t)];
                tensor_name(name, sizeof name, l, t, ab);
                if (on && !m)
                    return tsr_error_set(TSR_ERR_INVALID,
                                         "LoRA adapter: %s is targeted but '%s' is NULL",
                                         peft_targets[t].module, name);
                if (!on && m)
                    return tsr_error_set(TSR_ERR_INVALID,
                                         "LoRA adapter: %s is not targeted but '%s' is set",
                                         peft_targets[t].module, name);
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

/* ---- save: file writing -------------------------------------------------- */

static tsr_status write_all(int fd, const void *buf, size_t n, const char *path) {
    const char *p = buf;
    char ebuf[128];
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return tsr_error_set(TSR_ERR_IO, "%s: write failed: %s", path,
                                 errno_str(errno, ebuf, sizeof ebuf));
        }
        p += w;
        n -= (size_t)w;
    }
    return TSR_OK;
}

static tsr_status fsync_path(const char *path, int directory) {
    char ebuf[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
    if (fd < 0)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot open to fsync: %s", path,
                             errno_str(errno, ebuf, sizeof ebuf));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0)
        return tsr_error_set(TSR_ERR_IO, "%s: fsync failed: %s", path,
                             errno_str(e, ebuf, sizeof ebuf));
    return TSR_OK;
}

/* Creates `path` (which must not exist), writes the pieces, fsyncs, closes. */
static tsr_status write_file(const char *path, const void *const *pieces, const size_t *sizes,
                             size_t n_pieces) {
    char ebuf[128];
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot create: %s", path,
                             errno_str(errno, ebuf, sizeof ebuf));
    tsr_status s = TSR_OK;
    for (size_t i = 0; i < n_pieces && s == TSR_OK; i++)
        s = write_all(fd, pieces[i], sizes[i], path);
    if (s == TSR_OK && fsync(fd) != 0)
        s = tsr_error_set(TSR_ERR_IO, "%s: fsync failed: %s", path,
                          errno_str(errno, ebuf, sizeof ebuf));
    if (close(fd) != 0 && s == TSR_OK)
        s = tsr_error_set(TSR_ERR_IO, "%s: close failed: %s", path,
                          errno_str(errno, ebuf, sizeof ebuf));
    return s;
}

typedef struct {
    char name[160];
    const float *data;
    size_t n; /* elements */
    int rows, cols;
} save_entry;

static int cmp_entry(const void *x, const void *y) {
    return strcmp(((const save_entry *)x)->name, ((const save_entry *)y)->name);
}

static tsr_status write_safetensors(const char *path, const tsr_peft_adapter *a,
                                    const tsr_model_config *cfg) {
    tsr_status s = TSR_OK;
    size_t n_on = 0;
    for (int t = 0; t < TSR_PEFT_N_TARGETS; t++)
        n_on += (a->targets & TSR_PEFT_BIT(t)) != 0;
    size_t n = (size_t)a->n_layers * n_on * 2;
    save_entry *e = calloc(n, sizeof *e);
    const void **pieces = calloc(n + 1, sizeof *pieces);
    size_t *sizes = calloc(n + 1, sizeof *sizes);
    json_t *hdr = json_object();
    json_t *meta = json_object();
    char *text = NULL, *buf = NULL;
    if (!e || !pieces || !sizes || !hdr || !meta) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    size_t k = 0;
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < TSR_PEFT_N_TARGETS; t++) {
            if (!(a->targets & TSR_PEFT_BIT(t)))
                continue;
            int din, dout;
            TSR_CHECK_GOTO(s, tsr_peft_target_dims(cfg, t, &din, &dout));
            for (int ab = 0; ab < 2; ab++, k++) {
                tensor_name(e[k].name, sizeof e[k].name, l, t, ab);
                e[k].data = ab ? a->B[TSR_PEFT_IDX(l, t)] : a->A[TSR_PEFT_IDX(l, t)];
                e[k].rows = ab ? dout : a->r;
                e[k].cols = ab ? a->r : din;
                e[k].n = mat_elems(e[k].rows, e[k].cols);
            }
        }
    /* Name order, as the safetensors Python package lays out same-dtype
     * tensors; readers do not depend on it. */
    qsort(e, n, sizeof *e, cmp_entry);

    /* Header: "__metadata__" first, then the tensors (jansson keeps insertion
     * order). */
    int bad = json_object_set_new(meta, "format", json_string("pt"));
    bad |= json_object_set(hdr, "__metadata__", meta);
    uint64_t off = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        uint64_t nb = (uint64_t)e[i].n * sizeof(float);
        json_t *ent = json_pack("{s:s, s:[I,I], s:[I,I]}", "dtype", "F32", "shape",
                                (json_int_t)e[i].rows, (json_int_t)e[i].cols, "data_offsets",
                                (json_int_t)off, (json_int_t)(off + nb));
        bad |= !ent || json_object_set_new(hdr, e[i].name, ent);
        off += nb;
    }
    text = bad ? NULL : json_dumps(hdr, JSON_COMPACT);
    if (!text) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory for the header", path);
        goto cleanup;
    }
    /* 8-byte length, then the header padded with spaces so the data section
     * starts at a multiple of 8. */
    size_t hl = strlen(text), padded = (hl + 7) / 8 * 8;
    buf = malloc(8 + padded);
    if (!buf) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory for the header", path);
        goto cleanup;
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (char)(((uint64_t)padded >> (8 * i)) & 0xff);
    memcpy(buf + 8, text, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    pieces[0] = buf;
    sizes[0] = 8 + padded;
    for (size_t i = 0; i < n; i++) {
        pieces[i + 1] = e[i].data;
        sizes[i + 1] = e[i].n * sizeof(float);
    }
    s = write_file(path, pieces, sizes, n + 1);
cleanup:
    free(buf);
    free(text);
    json_decref(meta);
    json_decref(hdr);
    free(sizes);
    free(pieces);
    free(e);
    return s;
}

/* The shortest decimal (at most 9 significant digits) that reads back as
 * `f`, as a double, and its digit count: lora_dropout 0.05f is written
 * "0.05", not "0.050000000745058060". */
static double short_decimal(float f, int *digits) {
    char b[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(b, sizeof b, "%.*g", p, (double)f);
        if (strtof(b, NULL) == f) {
            *digits = p;
            return strtod(b, NULL);
        }
    }
    *digits = 17;
    return (double)f;
}

static tsr_status write_config(const char *path, const tsr_peft_adapter *a) {
    tsr_status s = TSR_OK;
    json_t *root = json_object();
    json_t *mods = json_array();
    char *text = NULL;
    int prec = 1, d;
    if (!root || !mods)
        goto nomem;
    for (int t = 0; t < TSR_PEFT_N_TARGETS; t++)
        if ((a->targets & TSR_PEFT_BIT(t)) &&
            json_array_append_new(mods, json_string(peft_targets[t].module)))
            goto nomem;
    json_t *alpha;
    if (a->alpha == truncf(a->alpha) && fabsf(a->alpha) <= 16777216.0f) {
        alpha = json_integer((json_int_t)a->alpha); /* PEFT's type: int */
    } else {
        alpha = json_real(short_decimal(a->alpha, &d));
        prec = d > prec ? d : prec;
    }
    json_t *dropout = json_real(short_decimal(a->dropout, &d));
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
    const void *pieces[2] = {text, "\n"};
    size_t sizes[2] = {strlen(text), 1};
    s = write_file(path, pieces, sizes, 2);
    goto cleanup;
nomem:
    s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", path);
cleanup:
    free(text);
    json_decref(mods);
    json_decref(root);
    return s;
}

/* ---- save: the directory swap -------------------------------------------- */

/* Test hook: see TSR_PEFT_SAVE_PAUSE in peft.h. */
static void save_pause(const char *stage) {
    const char *want = getenv("TSR_PEFT_SAVE_PAUSE");
    if (!want || strcmp(want, stage) != 0)
        return;
    fprintf(stderr, "tsr_peft_save: paused at %s\n", stage);
    fflush(stderr);
    struct timespec ts = {60, 0};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* What is at `dir`: 0 nothing, 1 a directory we may replace. Anything else is
 * an error naming the reason. */
static tsr_status inspect_target(const char *dir, int *exists) {
    char ebuf[128];
    struct stat sb;
    *exists = 0;
    if (lstat(dir, &sb) != 0) {
        if (errno == ENOENT)
            return TSR_OK;
        return tsr_error_set(TSR_ERR_IO, "%s: cannot stat: %s", dir,
                             errno_str(errno, ebuf, sizeof ebuf));
    }
    if (S_ISLNK(sb.st_mode))
        return tsr_error_set(TSR_ERR_INVALID,
                             "%s: is a symbolic link; give the directory it points to (the save "
                             "replaces the directory itself)",
                             dir);
    if (!S_ISDIR(sb.st_mode))
        return tsr_error_set(TSR_ERR_IO, "%s: exists and is not a directory", dir);
    DIR *d = opendir(dir);
    if (!d)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot open: %s", dir,
                             errno_str(errno, ebuf, sizeof ebuf));
    int n = 0, has_config = 0;
    tsr_status s = TSR_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        n++;
        struct stat fs;
        if (fstatat(dirfd(d), de->d_name, &fs, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(fs.st_mode)) {
            s = tsr_error_set(TSR_ERR_INVALID,
                              "%s: refusing to replace it: '%s' in it is not a regular file "
                              "(an adapter directory holds only files)",
                              dir, de->d_name);
            break;
        }
        if (strcmp(de->d_name, PEFT_CONFIG_FILE) == 0)
            has_config = 1;
    }
    closedir(d);
    TSR_TRY(s);
    if (n > 0 && !has_config)
        return tsr_error_set(TSR_ERR_INVALID,
                             "%s: refusing to replace it: not empty and holds no %s, so it is "
                             "not an adapter directory",
                             dir, PEFT_CONFIG_FILE);
    *exists = 1;
    return TSR_OK;
}

/* Removes the regular files in `dir`, then `dir`. Best effort: returns 0 and
 * leaves what it could not remove. */
static int remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT;
    int ok = 1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) != 0)
            ok = 0;
    }
    closedir(d);
    return rmdir(dir) == 0 && ok;
}

/* Creates a new directory "<base><tag>XXXXXX" (six random letters or
 * digits) with mode 0777 less the umask, as mkdir(1) would: mkdtemp's 0700
 * would end up as the adapter directory's mode. Returns the malloc'd name, or
 * NULL with errno set. */
static char *make_unique_dir(const char *base, const char *tag) {
    static const char set[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    char *p = str_printf("%s%sXXXXXX", base, tag);
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    char *x = p + strlen(p) - 6;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t st = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^
                  ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)p;
    for (int attempt = 0; attempt < 1000; attempt++) {
        for (int i = 0; i < 6; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            x[i] = set[(st >> 33) % (sizeof set - 1)];
        }
        if (mkdir(p, 0777) == 0)
            return p;
        if (errno != EEXIST)
            break;
    }
    int e = errno;
    free(p);
    errno = e;
    return NULL;
}

/* The directory holding `path` (malloc'd): "." when it has no slash. */
static char *parent_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

tsr_status tsr_peft_save(const char *dir_arg, const tsr_peft_adapter *a,
                         const tsr_model_config *cfg) {
    if (!dir_arg || !a || !cfg)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_peft_save: NULL argument");
    TSR_TRY(check_adapter(a, cfg));

    char ebuf[128];
    tsr_status s = TSR_OK;
    char *dir = strdup(dir_arg), *parent = NULL, *tmp = NULL, *aside = NULL, *path = NULL;
    int tmp_made = 0, exists = 0;
    if (!dir)
        return tsr_error_set(TSR_ERR_NOMEM, "tsr_peft_save: out of memory");
    for (size_t l = strlen(dir); l > 1 && dir[l - 1] == '/'; l--)
        dir[l - 1] = '\0';
    if (dir[0] == '\0' || strcmp(dir, "/") == 0 || strcmp(dir, ".") == 0 ||
        strcmp(dir, "..") == 0) {
        s = tsr_error_set(TSR_ERR_INVALID, "tsr_peft_save: \"%s\" cannot be an adapter directory",
                          dir_arg);
        goto cleanup;
    }
    parent = parent_of(dir);
    if (!parent) {
        s = tsr_error_set(TSR_ERR_NOMEM, "tsr_peft_save: out of memory");
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, inspect_target(dir, &exists));

    tmp = make_unique_dir(dir, ".tmp-");
    if (!tmp) {
        s = tsr_error_set(TSR_ERR_IO, "%s: cannot create a temporary directory beside it: %s",
                          dir, errno_str(errno, ebuf, sizeof ebuf));
        goto cleanup;
    }
    tmp_made = 1;
    path = str_printf("%s/%s", tmp, PEFT_WEIGHTS_FILE);
    if (!path) {
        s = tsr_error_set(TSR_ERR_NOMEM, "tsr_peft_save: out of memory");
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, write_safetensors(path, a, cfg));
    save_pause("tensors");
    free(path);
    path = str_printf("%s/%s", tmp, PEFT_CONFIG_FILE);
    if (!path) {
        s = tsr_error_set(TSR_ERR_NOMEM, "tsr_peft_save: out of memory");
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, write_config(path, a));
    TSR_CHECK_GOTO(s, fsync_path(tmp, 1));
    save_pause("files");

    /* Crash windows (docs/lora.md): until the swap `dir` is the old adapter
     * (or absent) and tmp a partial or complete new one; after it `dir` is
     * the new adapter and tmp the old one being removed. */
    if (!exists) {
        if (rename(tmp, dir) != 0) {
            s = tsr_error_set(TSR_ERR_IO, "%s: cannot rename %s to it: %s", dir, tmp,
                              errno_str(errno, ebuf, sizeof ebuf));
            goto cleanup;
        }
        tmp_made = 0;
        TSR_CHECK_GOTO(s, fsync_path(parent, 1));
        save_pause("swapped");
        goto cleanup;
    }
    const char *no_x = getenv("TSR_PEFT_SAVE_NO_EXCHANGE");
    int exchanged = 0;
    if (!(no_x && strcmp(no_x, "1") == 0)) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0)
            exchanged = 1;
        else if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
            s = tsr_error_set(TSR_ERR_IO, "%s: cannot exchange it with %s: %s", dir, tmp,
                              errno_str(errno, ebuf, sizeof ebuf));
            goto cleanup;
        }
    }
    if (exchanged) {
        TSR_CHECK_GOTO(s, fsync_path(parent, 1));
        save_pause("swapped");
        /* tmp now holds the old adapter. */
        if (!remove_flat_dir(tmp))
            TSR_LOG_W("%s: saved, but the previous adapter could not be fully removed from %s",
                      dir, tmp);
        tmp_made = 0;
        fsync_path(parent, 1); /* the removal need not be durable */
        goto cleanup;
    }
    /* Fallback: rename the old dir aside (onto an empty directory, which
     * rename replaces), then the new one in. */
    aside = make_unique_dir(dir, ".old-");
    if (!aside) {
        s = tsr_error_set(TSR_ERR_IO, "%s: cannot create a directory beside it: %s", dir,
                          errno_str(errno, ebuf, sizeof ebuf));
        goto cleanup;
    }
    if (rename(dir, aside) != 0) {
        s = tsr_error_set(TSR_ERR_IO, "%s: cannot rename it to %s: %s", dir, aside,
                          errno_str(errno, ebuf, sizeof ebuf));
        rmdir(aside);
        goto cleanup;
    }
    fsync_path(parent, 1);
    save_pause("aside");
    if (rename(tmp, dir) != 0) {
        s = tsr_error_set(TSR_ERR_IO, "%s: cannot rename %s to it: %s (the previous adapter is "
                                      "in %s)",
                          dir, tmp, errno_str(errno, ebuf, sizeof ebuf), aside);
        if (rename(aside, dir) == 0)
            tsr_error_wrap(s, "restored the previous adapter");
        goto cleanup;
    }
    tmp_made = 0;
    TSR_CHECK_GOTO(s, fsync_path(parent, 1));
    save_pause("swapped");
    if (!remove_flat_dir(aside))
        TSR_LOG_W("%s: saved, but the previous adapter could not be fully removed from %s", dir,
                  aside);
    fsync_path(parent, 1);

cleanup:
    if (tmp_made && !remove_flat_dir(tmp))
        TSR_LOG_W("%s: could not remove the temporary directory %s", dir, tmp);
    free(path);
    free(aside);
    free(tmp);
    free(parent);
    free(dir);
    return s;
}

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
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "%s: \"%s\": true is not supported (%s)",
                             c->file, key, why);
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
    tsr_status s = tsr_error_set(TSR_ERR_UNSUPPORTED, "%s: \"%s\" = %.80s%s is not supported (%s)",
                                 c->file, key, dump ? dump : "?",
                                 dump && strlen(dump) > 80 ? "..." : "", why);
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
            *mask = TSR_PEFT_ALL;
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
        while (t < TSR_PEFT_N_TARGETS && strcmp(last, peft_targets[t].module) != 0)
            t++;
        if (t == TSR_PEFT_N_TARGETS)
            return tsr_error_set(TSR_ERR_UNSUPPORTED,
                                 "%s: target_modules entry \"%s\" is not supported (LoRA on "
                                 "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj "
                                 "only)",
                                 c->file, name);
        *mask |= TSR_PEFT_BIT(t);
    }
    *listed = 1;
    return TSR_OK;
}

static tsr_status read_text_file(const char *path, size_t limit, char **out, size_t *len) {
    char ebuf[128];
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot open: %s", path,
                             errno_str(errno, ebuf, sizeof ebuf));
    char *buf = malloc(limit + 1);
    if (!buf) {
        fclose(fp);
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, limit + 1, fp);
    int err = ferror(fp);
    fclose(fp);
    if (err || n > limit) {
        free(buf);
        return err ? tsr_error_set(TSR_ERR_IO, "%s: read error", path)
                   : tsr_error_set(TSR_ERR_FORMAT, "%s: larger than the %zu-byte limit", path,
                                   limit);
    }
    *out = buf;
    *len = n;
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
        if (strncmp(iv, "pissa", 5) == 0 || strcmp(iv, "olora") == 0 ||
            strcmp(iv, "corda") == 0 || strcmp(iv, "loftq") == 0 || strcmp(iv, "lora_ga") == 0)
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
        if (!parse_tensor_name(t->name, &layer, &tg, &ab)) {
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
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: unknown tensor '%s' (expected " PEFT_NAME_PREFIX
                                 "{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight or "
                                 PEFT_NAME_PREFIX "{i}.mlp.{gate,up,down}_proj.lora_{A,B}.weight)",
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
                                 ab ? "lora_B" : "lora_A", peft_targets[tg].module, out->r,
                                 PEFT_CONFIG_FILE, ab ? "d_out" : "d_in", ab ? dout : din);
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
        out->targets |= TSR_PEFT_BIT(tg);
    }
    /* Every target present somewhere must be complete in every layer. */
    char name[160];
    for (int l = 0; l < cfg->n_layer; l++)
        for (int tg = 0; tg < TSR_PEFT_N_TARGETS; tg++) {
            if (!(out->targets & TSR_PEFT_BIT(tg)))
                continue;
            for (int ab = 0; ab < 2; ab++) {
                if (ab ? out->B[TSR_PEFT_IDX(l, tg)] : out->A[TSR_PEFT_IDX(l, tg)])
                    continue;
                tensor_name(name, sizeof name, l, tg, ab);
                return tsr_error_set(TSR_ERR_FORMAT,
                                     "%s: missing tensor '%s' (every layer must adapt the same "
                                     "modules with both lora_A and lora_B; %s is adapted "
                                     "elsewhere)",
                                     path, name, peft_targets[tg].module);
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

    char ebuf[128];
    tsr_status s = TSR_OK;
    char *cpath = NULL, *wpath = NULL, *bpath = NULL, *text = NULL;
    size_t text_len = 0;
    json_t *root = NULL;
    tsr_safetensors_t *st = NULL;
    struct stat sb;

    if (stat(dir, &sb) != 0) {
        s = tsr_error_set(TSR_ERR_IO, "%s: cannot open adapter directory: %s", dir,
                          errno_str(errno, ebuf, sizeof ebuf));
        goto cleanup;
    }
    if (!S_ISDIR(sb.st_mode)) {
        s = tsr_error_set(TSR_ERR_IO, "%s: not a directory (a PEFT adapter is a directory with %s "
                                      "and %s)",
                          dir, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE);
        goto cleanup;
    }
    cpath = str_printf("%s/%s", dir, PEFT_CONFIG_FILE);
    wpath = str_printf("%s/%s", dir, PEFT_WEIGHTS_FILE);
    bpath = str_printf("%s/%s", dir, PEFT_BIN_FILE);
    if (!cpath || !wpath || !bpath) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", dir);
        goto cleanup;
    }

    TSR_CHECK_GOTO(s, read_text_file(cpath, PEFT_MAX_CONFIG_BYTES, &text, &text_len));
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
                              dir, PEFT_BIN_FILE, PEFT_WEIGHTS_FILE);
        else
            s = tsr_error_set(TSR_ERR_IO, "%s: cannot open: %s", wpath,
                              errno_str(e, ebuf, sizeof ebuf));
        goto cleanup;
    }
    TSR_CHECK_GOTO(s, tsr_safetensors_open(wpath, &st));
    TSR_CHECK_GOTO(s, adapter_alloc_arrays(out, cfg));
    TSR_CHECK_GOTO(s, load_tensors(wpath, st, cfg, out));

    if (listed) {
        unsigned extra = out->targets & ~listed_mask, absent = listed_mask & ~out->targets;
        for (int t = 0; t < TSR_PEFT_N_TARGETS; t++) {
            if (extra & TSR_PEFT_BIT(t)) {
                s = tsr_error_set(TSR_ERR_FORMAT,
                                  "%s has %s tensors, but target_modules in %s does not list %s",
                                  wpath, peft_targets[t].module, cpath, peft_targets[t].module);
                goto cleanup;
            }
            if (absent & TSR_PEFT_BIT(t)) {
                s = tsr_error_set(TSR_ERR_FORMAT,
                                  "%s lists %s in target_modules, but %s has no %s tensors", cpath,
                                  peft_targets[t].module, wpath, peft_targets[t].module);
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
