/* shard/safetensors.c - safetensors reader and checkpoint-directory helper.
 *
 * The JSON header is parsed with jansson and the parsed tree is kept alive in
 * the handle: tensor names and metadata strings point into it, so nothing is
 * copied. Every number taken from the file is range-checked before it is used
 * in arithmetic or to form a pointer.
 *
 * What it is not: no writer, no dtype conversion, no knowledge of models. */
#include "shard/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/json_name.h"
#include "kernels/dtype.h"

#define ST_INDEX_FILE "model.safetensors.index.json"
#define ST_SINGLE_FILE "model.safetensors"
#define ST_META_KEY "__metadata__"

/* Index files of the largest public checkpoints are a few hundred KB. */
#define ST_MAX_INDEX_BYTES ((size_t)64 * 1024 * 1024)

typedef struct {
    const char *key;
    const char *value;
} st_meta;

struct tsr_safetensors {
    char *name;          /* path or memory name, owned */
    const uint8_t *base; /* the whole file image */
    size_t size;
    void *map; /* owned mapping, or NULL (memory image / empty) */
    size_t map_size;
    json_t *header;         /* parsed header; names point into it */
    tsr_st_tensor *tensors; /* sorted by name */
    size_t n_tensors;
    st_meta *meta; /* file order */
    size_t n_meta;
};

struct tsr_st_dir {
    tsr_safetensors_t **files; /* sorted by file name */
    size_t n_files;
    const tsr_st_tensor **tensors; /* sorted by tensor name */
    size_t n_tensors;
    int sharded;
};

/* ---- dtypes ------------------------------------------------------------ */

typedef struct {
    const char *name;
    int dtype;
    size_t size;
} st_dtype_info;

/* Every byte-sized dtype of the safetensors format. Sub-byte ones (F4, F6_*)
 * and anything else are refused as unsupported. */
static const st_dtype_info st_dtypes[] = {
    {"F32", TSR_F32, 4},
    {"F16", TSR_F16, 2},
    {"BF16", TSR_BF16, 2},
    {"F64", TSR_ST_DTYPE_NOT_LOADABLE, 8},
    {"I64", TSR_ST_DTYPE_NOT_LOADABLE, 8},
    {"U64", TSR_ST_DTYPE_NOT_LOADABLE, 8},
    {"I32", TSR_ST_DTYPE_NOT_LOADABLE, 4},
    {"U32", TSR_ST_DTYPE_NOT_LOADABLE, 4},
    {"I16", TSR_ST_DTYPE_NOT_LOADABLE, 2},
    {"U16", TSR_ST_DTYPE_NOT_LOADABLE, 2},
    {"I8", TSR_ST_DTYPE_NOT_LOADABLE, 1},
    {"U8", TSR_ST_DTYPE_NOT_LOADABLE, 1},
    {"BOOL", TSR_ST_DTYPE_NOT_LOADABLE, 1},
    {"F8_E4M3", TSR_ST_DTYPE_NOT_LOADABLE, 1},
    {"F8_E5M2", TSR_ST_DTYPE_NOT_LOADABLE, 1},
};

static const st_dtype_info *st_dtype_lookup(const char *name) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, name) == 0)
            return &st_dtypes[i];
    return NULL;
}

/* ---- small helpers ----------------------------------------------------- */

static const char *errno_str(int err, char *buf, size_t len) {
    /* GNU strerror_r (we build with _GNU_SOURCE): thread-safe, may ignore buf. */
    return strerror_r(err, buf, len);
}

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Returns a malloc'd "dir/name" or NULL when out of memory. */
static char *path_join(const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    int slash = dl > 0 && dir[dl - 1] != '/';
    char *p = malloc(dl + (size_t)slash + nl + 1);
    if (!p)
        return NULL;
    memcpy(p, dir, dl);
    if (slash)
        p[dl] = '/';
    memcpy(p + dl + (size_t)slash, name, nl + 1);
    return p;
}

/* ---- header parsing ---------------------------------------------------- */

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const tsr_st_tensor *)a)->name, ((const tsr_st_tensor *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const tsr_st_tensor *x = *(const tsr_st_tensor *const *)a;
    const tsr_st_tensor *y = *(const tsr_st_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static tsr_status parse_meta(tsr_safetensors_t *st, json_t *obj) {
    if (json_is_null(obj))
        return TSR_OK;
    if (!json_is_object(obj))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"%s\" is %s, not an object", st->name,
                             ST_META_KEY, tsr_json_type_name(obj));
    size_t n = json_object_size(obj);
    if (n == 0)
        return TSR_OK;
    st->meta = calloc(n, sizeof *st->meta);
    if (!st->meta)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory for metadata", st->name);
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if (!json_is_string(val))
            return tsr_error_set(TSR_ERR_FORMAT, "%s: metadata value of \"%s\" is %s, not a string",
                                 st->name, key, tsr_json_type_name(val));
        st->meta[st->n_meta].key = key;
        st->meta[st->n_meta].value = json_string_value(val);
        st->n_meta++;
    }
    return TSR_OK;
}

/* Validates one tensor entry and fills `t`. `data_size` is the size of the
 * data section. */
static tsr_status parse_tensor(const tsr_safetensors_t *st, const char *name, json_t *entry,
                               const uint8_t *data, uint64_t data_size, tsr_st_tensor *t) {
    const char *f = st->name;
    if (!json_is_object(entry))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: tensor '%s': entry is %s, not an object", f, name,
                             tsr_json_type_name(entry));

    json_t *jd = json_object_get(entry, "dtype");
    json_t *js = json_object_get(entry, "shape");
    json_t *jo = json_object_get(entry, "data_offsets");
    if (!jd)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: tensor '%s': missing \"dtype\"", f, name);
    if (!js)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: tensor '%s': missing \"shape\"", f, name);
    if (!jo)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: tensor '%s': missing \"data_offsets\"", f, name);

    if (!json_is_string(jd))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: tensor '%s': \"dtype\" is %s, not a string", f,
                             name, tsr_json_type_name(jd));
    const st_dtype_info *di = st_dtype_lookup(json_string_value(jd));
    if (!di)
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "%s: tensor '%s': unsupported dtype \"%s\" (known: F32, F16, "
                             "BF16, F64, I64, U64, I32, U32, I16, U16, I8, U8, BOOL, "
                             "F8_E4M3, F8_E5M2)",
                             f, name, json_string_value(jd));

    if (!json_is_array(js))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: tensor '%s': \"shape\" is %s, not an array", f,
                             name, tsr_json_type_name(js));
    size_t nd = json_array_size(js);
    if (nd > TSR_ST_MAX_DIMS)
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "%s: tensor '%s': %zu dimensions (at most %d)", f,
                             name, nd, TSR_ST_MAX_DIMS);
    uint64_t shape[TSR_ST_MAX_DIMS];
    int has_zero = 0;
    for (size_t d = 0; d < nd; d++) {
        json_t *v = json_array_get(js, d);
        if (!json_is_integer(v))
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: tensor '%s': shape[%zu] is %s, not an integer", f, name, d,
                                 tsr_json_type_name(v));
        json_int_t x = json_integer_value(v);
        if (x < 0)
            return tsr_error_set(TSR_ERR_FORMAT, "%s: tensor '%s': negative shape[%zu] = %lld", f,
                                 name, d, (long long)x);
        shape[d] = (uint64_t)x;
        has_zero |= x == 0;
    }
    /* A zero dimension makes the product 0 whatever the others are, so only
     * a product of non-zero dimensions can overflow. */
    uint64_t n_elem = 1;
    if (has_zero) {
        n_elem = 0;
    } else {
        for (size_t d = 0; d < nd; d++) {
            if (n_elem > UINT64_MAX / shape[d])
                return tsr_error_set(TSR_ERR_FORMAT,
                                     "%s: tensor '%s': shape overflows (element count "
                                     "exceeds 2^64)",
                                     f, name);
            n_elem *= shape[d];
        }
    }
    if (n_elem > (uint64_t)SIZE_MAX / di->size)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: tensor '%s': %llu elements of %s overflow the byte size", f, name,
                             (unsigned long long)n_elem, di->name);
    uint64_t need = n_elem * di->size;

    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: tensor '%s': \"data_offsets\" must be an array [begin, end]", f,
                             name);
    uint64_t off[2];
    for (size_t k = 0; k < 2; k++) {
        json_t *v = json_array_get(jo, k);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: tensor '%s': data_offsets[%zu] is not a non-negative "
                                 "integer",
                                 f, name, k);
        off[k] = (uint64_t)json_integer_value(v);
    }
    if (off[0] > off[1])
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", f,
                             name, (unsigned long long)off[0], (unsigned long long)off[1]);
    if (off[1] > data_size)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%llu, %llu] out of range: the data "
                             "section has %llu bytes (file truncated?)",
                             f, name, (unsigned long long)off[0], (unsigned long long)off[1],
                             (unsigned long long)data_size);
    if (off[1] - off[0] != need) {
        char dims[256];
        size_t used = 0;
        dims[0] = '\0';
        for (size_t d = 0; d < nd && used < sizeof dims; d++) {
            int w = snprintf(dims + used, sizeof dims - used, "%s%llu", d ? ", " : "",
                             (unsigned long long)shape[d]);
            if (w < 0)
                break;
            used += (size_t)w;
        }
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: tensor '%s': size mismatch: data_offsets [%llu, %llu] span "
                             "%llu bytes but %s shape [%s] needs %llu",
                             f, name, (unsigned long long)off[0], (unsigned long long)off[1],
                             (unsigned long long)(off[1] - off[0]), di->name, dims,
                             (unsigned long long)need);
    }

    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = di->dtype;
    t->dtype_name = di->name;
    t->elem_size = di->size;
    t->n_dims = (uint32_t)nd;
    for (size_t d = 0; d < TSR_ST_MAX_DIMS; d++)
        t->shape[d] = d < nd ? shape[d] : 1;
    t->n_elem = n_elem;
    t->offset = off[0];
    t->nbytes = (size_t)need;
    t->data = data + off[0];
    return TSR_OK;
}

/* Parses st->base/st->size into the handle's tables. */
static tsr_status st_parse(tsr_safetensors_t *st) {
    const char *f = st->name;
    if (st->size < 8)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: file is %zu bytes, too short for the 8-byte header length "
                             "(empty or not safetensors)",
                             f, st->size);
    uint64_t hlen = read_le64(st->base);
    if (hlen > TSR_ST_MAX_HEADER_BYTES)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: header length %llu exceeds the %llu-byte limit (corrupt or "
                             "not safetensors)",
                             f, (unsigned long long)hlen,
                             (unsigned long long)TSR_ST_MAX_HEADER_BYTES);
    if (hlen > st->size - 8)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: header length %llu is larger than the %zu bytes after it "
                             "(truncated or not safetensors)",
                             f, (unsigned long long)hlen, st->size - 8);
    if (hlen == 0)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: header length is 0: no JSON header", f);

    json_error_t jerr;
    st->header = json_loadb((const char *)st->base + 8, (size_t)hlen,
                            JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!st->header)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: header is not valid JSON: %s (at byte %d)", f,
                             jerr.text, jerr.position);
    if (!json_is_object(st->header))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: header JSON is %s, not an object", f,
                             tsr_json_type_name(st->header));

    const uint8_t *data = st->base + 8 + hlen;
    uint64_t data_size = (uint64_t)st->size - 8 - hlen;

    size_t n = json_object_size(st->header);
    if (n > 0) {
        st->tensors = calloc(n, sizeof *st->tensors);
        if (!st->tensors)
            return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory for %zu tensors", f, n);
    }
    const char *key;
    json_t *val;
    json_object_foreach(st->header, key, val) {
        if (strcmp(key, ST_META_KEY) == 0) {
            TSR_TRY(parse_meta(st, val));
            continue;
        }
        TSR_TRY(parse_tensor(st, key, val, data, data_size, &st->tensors[st->n_tensors]));
        st->n_tensors++;
    }
    if (st->n_tensors == 0)
        return TSR_OK;

    qsort(st->tensors, st->n_tensors, sizeof *st->tensors, cmp_tensor_name);

    /* Overlap check: sort non-empty tensors by offset; each must start at or
     * after the end of the previous one. Empty tensors occupy no bytes. */
    const tsr_st_tensor **by_off = malloc(st->n_tensors * sizeof *by_off);
    if (!by_off)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", f);
    size_t m = 0;
    for (size_t i = 0; i < st->n_tensors; i++)
        if (st->tensors[i].nbytes > 0)
            by_off[m++] = &st->tensors[i];
    qsort(by_off, m, sizeof *by_off, cmp_tensor_offset);
    tsr_status s = TSR_OK;
    for (size_t i = 1; i < m; i++) {
        const tsr_st_tensor *a = by_off[i - 1], *b = by_off[i];
        if (b->offset < a->offset + a->nbytes) {
            s = tsr_error_set(
                TSR_ERR_FORMAT, "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap", f,
                a->name, (unsigned long long)a->offset, (unsigned long long)(a->offset + a->nbytes),
                b->name, (unsigned long long)b->offset,
                (unsigned long long)(b->offset + b->nbytes));
            break;
        }
    }
    free(by_off);
    return s;
}

/* ---- one file: public API ---------------------------------------------- */

static tsr_status st_new(const char *name, tsr_safetensors_t **out) {
    tsr_safetensors_t *st = calloc(1, sizeof *st);
    if (!st)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", name);
    st->name = strdup(name);
    if (!st->name) {
        free(st);
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", name);
    }
    *out = st;
    return TSR_OK;
}

tsr_status tsr_safetensors_open_memory(const void *data, size_t size, const char *name,
                                       tsr_safetensors_t **out) {
    if (!out)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_safetensors_open_memory: out is NULL");
    *out = NULL;
    if (!name)
        name = "<memory>";
    if (!data && size > 0)
        return tsr_error_set(TSR_ERR_INVALID, "%s: data is NULL", name);
    tsr_safetensors_t *st = NULL;
    TSR_TRY(st_new(name, &st));
    st->base = data;
    st->size = size;
    tsr_status s = st_parse(st);
    if (s != TSR_OK) {
        tsr_safetensors_close(st);
        return s;
    }
    *out = st;
    return TSR_OK;
}

tsr_status tsr_safetensors_open(const char *path, tsr_safetensors_t **out) {
    if (!out)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_safetensors_open: out is NULL");
    *out = NULL;
    if (!path)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_safetensors_open: path is NULL");

    char ebuf[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot open: %s", path,
                             errno_str(errno, ebuf, sizeof ebuf));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return tsr_error_set(TSR_ERR_IO, "%s: cannot stat: %s", path,
                             errno_str(e, ebuf, sizeof ebuf));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return tsr_error_set(TSR_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return tsr_error_set(TSR_ERR_IO, "%s: file too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return tsr_error_set(TSR_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, size,
                                 errno_str(e, ebuf, sizeof ebuf));
        }
    }
    close(fd); /* the mapping keeps the file */

    tsr_safetensors_t *st = NULL;
    tsr_status s = st_new(path, &st);
    if (s != TSR_OK) {
        if (map)
            munmap(map, size);
        return s;
    }
    st->map = map;
    st->map_size = size;
    st->base = map;
    st->size = size;
    s = st_parse(st);
    if (s != TSR_OK) {
        tsr_safetensors_close(st);
        return s;
    }
    *out = st;
    return TSR_OK;
}

void tsr_st_dir_drop_pages(const tsr_st_dir_t *d) {
    for (size_t i = 0; d && i < d->n_files; i++)
        if (d->files[i]->map)
            madvise(d->files[i]->map, d->files[i]->map_size, MADV_DONTNEED);
}

void tsr_safetensors_close(tsr_safetensors_t *st) {
    if (!st)
        return;
    free(st->tensors);
    free(st->meta);
    json_decref(st->header);
    if (st->map)
        munmap(st->map, st->map_size);
    free(st->name);
    free(st);
}

const char *tsr_safetensors_name(const tsr_safetensors_t *st) { return st->name; }

size_t tsr_safetensors_n_tensors(const tsr_safetensors_t *st) { return st->n_tensors; }

const tsr_st_tensor *tsr_safetensors_tensor_at(const tsr_safetensors_t *st, size_t i) {
    return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const tsr_st_tensor *tsr_safetensors_find_tensor(const tsr_safetensors_t *st, const char *name) {
    if (!st->n_tensors)
        return NULL;
    tsr_st_tensor key;
    key.name = name;
    return bsearch(&key, st->tensors, st->n_tensors, sizeof *st->tensors, cmp_tensor_name);
}

size_t tsr_safetensors_n_meta(const tsr_safetensors_t *st) { return st->n_meta; }

void tsr_safetensors_meta_at(const tsr_safetensors_t *st, size_t i, const char **key,
                             const char **value) {
    const st_meta *m = i < st->n_meta ? &st->meta[i] : NULL;
    if (key)
        *key = m ? m->key : NULL;
    if (value)
        *value = m ? m->value : NULL;
}

const char *tsr_safetensors_find_meta(const tsr_safetensors_t *st, const char *key) {
    for (size_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0)
            return st->meta[i].value;
    return NULL;
}

tsr_status tsr_st_tensor_loadable(const tsr_st_tensor *t) {
    if (t->dtype == TSR_F32 || t->dtype == TSR_F16 || t->dtype == TSR_BF16)
        return TSR_OK;
    return tsr_error_set(TSR_ERR_UNSUPPORTED,
                         "tensor '%s': dtype %s cannot be loaded as weights (F32, F16 or "
                         "BF16 only)",
                         t->name, t->dtype_name);
}

/* ---- checkpoint directory ---------------------------------------------- */

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_tensor_ptr_name(const void *a, const void *b) {
    return strcmp((*(const tsr_st_tensor *const *)a)->name,
                  (*(const tsr_st_tensor *const *)b)->name);
}

/* Reads a whole small file into a malloc'd buffer. */
static tsr_status read_small_file(const char *path, size_t limit, char **out, size_t *len) {
    char ebuf[128];
    *out = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot open: %s", path,
                             errno_str(errno, ebuf, sizeof ebuf));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    tsr_status s = TSR_OK;
    if (!buf) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= limit) {
                s = tsr_error_set(TSR_ERR_FORMAT, "%s: larger than the %zu-byte limit", path,
                                  limit);
                goto cleanup;
            }
            size_t ncap = cap * 2 > limit ? limit : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", path);
                goto cleanup;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) {
            if (ferror(fp))
                s = tsr_error_set(TSR_ERR_IO, "%s: read error", path);
            break;
        }
    }
cleanup:
    fclose(fp);
    if (s != TSR_OK) {
        free(buf);
        return s;
    }
    *out = buf;
    *len = n;
    return TSR_OK;
}

/* A shard file name from an index must name a file directly inside the
 * directory. */
static int shard_name_ok(const char *name) {
    return name[0] != '\0' && !strchr(name, '/') && !strchr(name, '\\') && !strstr(name, "..");
}

static tsr_status dir_open_single(const char *dir, tsr_st_dir_t *d) {
    char ebuf[128];
    char *path = path_join(dir, ST_SINGLE_FILE);
    if (!path)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int e = errno;
        tsr_status s = e == ENOENT ? tsr_error_set(TSR_ERR_IO, "%s: neither %s nor %s exists", dir,
                                                   ST_INDEX_FILE, ST_SINGLE_FILE)
                                   : tsr_error_set(TSR_ERR_IO, "%s: cannot stat: %s", path,
                                                   errno_str(e, ebuf, sizeof ebuf));
        free(path);
        return s;
    }
    d->files = calloc(1, sizeof *d->files);
    if (!d->files) {
        free(path);
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", dir);
    }
    tsr_status s = tsr_safetensors_open(path, &d->files[0]);
    free(path);
    TSR_TRY(s);
    d->n_files = 1;

    const tsr_safetensors_t *f = d->files[0];
    if (f->n_tensors == 0)
        return TSR_OK;
    d->tensors = malloc(f->n_tensors * sizeof *d->tensors);
    if (!d->tensors)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", dir);
    for (size_t i = 0; i < f->n_tensors; i++)
        d->tensors[i] = &f->tensors[i]; /* already sorted by name */
    d->n_tensors = f->n_tensors;
    return TSR_OK;
}

static tsr_status dir_open_index(const char *dir, const char *index_path, tsr_st_dir_t *d) {
    tsr_status s = TSR_OK;
    char *text = NULL;
    size_t text_len = 0;
    json_t *root = NULL;
    const char **names = NULL; /* one per weight_map entry, then deduplicated */
    char *path = NULL;

    d->sharded = 1;
    TSR_CHECK_GOTO(s, read_small_file(index_path, ST_MAX_INDEX_BYTES, &text, &text_len));
    json_error_t jerr;
    root = json_loadb(text, text_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        s = tsr_error_set(TSR_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", index_path,
                          jerr.text, jerr.line, jerr.column);
        goto cleanup;
    }
    if (!json_is_object(root)) {
        s = tsr_error_set(TSR_ERR_FORMAT, "%s: JSON is %s, not an object", index_path,
                          tsr_json_type_name(root));
        goto cleanup;
    }
    json_t *wm = json_object_get(root, "weight_map");
    if (!wm) {
        s = tsr_error_set(TSR_ERR_FORMAT, "%s: missing \"weight_map\"", index_path);
        goto cleanup;
    }
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        s = tsr_error_set(TSR_ERR_FORMAT, "%s: \"weight_map\" must be a non-empty object",
                          index_path);
        goto cleanup;
    }

    size_t n = json_object_size(wm);
    names = malloc(n * sizeof *names);
    d->tensors = malloc(n * sizeof *d->tensors);
    if (!names || !d->tensors) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", index_path);
        goto cleanup;
    }
    size_t k = 0;
    const char *tname;
    json_t *fv;
    json_object_foreach(wm, tname, fv) {
        if (!json_is_string(fv)) {
            s = tsr_error_set(TSR_ERR_FORMAT,
                              "%s: weight_map entry '%s' is %s, not a file name string", index_path,
                              tname, tsr_json_type_name(fv));
            goto cleanup;
        }
        const char *fname = json_string_value(fv);
        if (!shard_name_ok(fname)) {
            s = tsr_error_set(TSR_ERR_FORMAT,
                              "%s: weight_map entry '%s' names file \"%s\", which is not a "
                              "plain file name inside the directory (no '/', '\\' or '..')",
                              index_path, tname, fname);
            goto cleanup;
        }
        names[k++] = fname;
    }

    /* Distinct file names, sorted. */
    qsort(names, n, sizeof *names, cmp_str_ptr);
    size_t nf = 0;
    for (size_t i = 0; i < n; i++)
        if (nf == 0 || strcmp(names[nf - 1], names[i]) != 0)
            names[nf++] = names[i];

    d->files = calloc(nf, sizeof *d->files);
    if (!d->files) {
        s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", index_path);
        goto cleanup;
    }
    for (size_t i = 0; i < nf; i++) {
        path = path_join(dir, names[i]);
        if (!path) {
            s = tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", index_path);
            goto cleanup;
        }
        s = tsr_safetensors_open(path, &d->files[i]);
        if (s != TSR_OK) {
            tsr_error_wrap(s, "shard listed in %s", index_path);
            goto cleanup;
        }
        d->n_files++;
        free(path);
        path = NULL;
    }

    /* Every mapped name must be in its file. */
    json_object_foreach(wm, tname, fv) {
        const char *fname = json_string_value(fv);
        const char **hit = bsearch(&fname, names, nf, sizeof *names, cmp_str_ptr);
        if (!hit) { /* cannot happen: every name went into names[] */
            s = tsr_error_set(TSR_ERR_INTERNAL, "%s: lost shard \"%s\"", index_path, fname);
            goto cleanup;
        }
        const tsr_safetensors_t *f = d->files[hit - names];
        const tsr_st_tensor *t = tsr_safetensors_find_tensor(f, tname);
        if (!t) {
            s = tsr_error_set(TSR_ERR_FORMAT,
                              "%s: weight_map puts tensor '%s' in %s, but that file has no "
                              "such tensor",
                              index_path, tname, f->name);
            goto cleanup;
        }
        d->tensors[d->n_tensors++] = t;
    }
    qsort(d->tensors, d->n_tensors, sizeof *d->tensors, cmp_tensor_ptr_name);

cleanup:
    free(path);
    free(names); /* pointed into root */
    json_decref(root);
    free(text);
    return s;
}

tsr_status tsr_st_dir_open(const char *dir, tsr_st_dir_t **out) {
    if (!out)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_st_dir_open: out is NULL");
    *out = NULL;
    if (!dir)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_st_dir_open: dir is NULL");

    char ebuf[128];
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot open checkpoint directory: %s", dir,
                             errno_str(errno, ebuf, sizeof ebuf));
    if (!S_ISDIR(sb.st_mode))
        return tsr_error_set(TSR_ERR_IO, "%s: not a directory", dir);

    tsr_st_dir_t *d = calloc(1, sizeof *d);
    if (!d)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", dir);
    char *index_path = path_join(dir, ST_INDEX_FILE);
    if (!index_path) {
        free(d);
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", dir);
    }
    tsr_status s;
    if (stat(index_path, &sb) == 0)
        s = dir_open_index(dir, index_path, d);
    else if (errno == ENOENT)
        s = dir_open_single(dir, d);
    else
        s = tsr_error_set(TSR_ERR_IO, "%s: cannot stat: %s", index_path,
                          errno_str(errno, ebuf, sizeof ebuf));
    free(index_path);
    if (s != TSR_OK) {
        tsr_st_dir_close(d);
        return s;
    }
    *out = d;
    return TSR_OK;
}

void tsr_st_dir_close(tsr_st_dir_t *d) {
    if (!d)
        return;
    for (size_t i = 0; i < d->n_files; i++)
        tsr_safetensors_close(d->files[i]);
    free(d->files);
    free(d->tensors);
    free(d);
}

const tsr_st_tensor *tsr_st_dir_find(const tsr_st_dir_t *d, const char *name) {
    if (!d->n_tensors)
        return NULL;
    tsr_st_tensor key;
    key.name = name;
    const tsr_st_tensor *kp = &key;
    const tsr_st_tensor *const *hit =
        bsearch(&kp, d->tensors, d->n_tensors, sizeof *d->tensors, cmp_tensor_ptr_name);
    return hit ? *hit : NULL;
}

size_t tsr_st_dir_n_tensors(const tsr_st_dir_t *d) { return d->n_tensors; }

const tsr_st_tensor *tsr_st_dir_tensor_at(const tsr_st_dir_t *d, size_t i) {
    return i < d->n_tensors ? d->tensors[i] : NULL;
}

size_t tsr_st_dir_n_files(const tsr_st_dir_t *d) { return d->n_files; }

const tsr_safetensors_t *tsr_st_dir_file_at(const tsr_st_dir_t *d, size_t i) {
    return i < d->n_files ? d->files[i] : NULL;
}

int tsr_st_dir_is_sharded(const tsr_st_dir_t *d) { return d->sharded; }
