/* shard/gguf.c - GGUF v2/v3 parsing and validation over an mmap'd file.
 *
 * Every read goes through a bounds-checked cursor, so a truncated or lying file
 * ends in TSR_ERR_FORMAT with the byte offset and what was being read, never
 * in an out-of-bounds access. Layout: magic "GGUF", u32 version, u64 tensor
 * count, u64 kv count, the kv pairs, the tensor descriptors, padding to
 * general.alignment (default 32), then the data section. */
#include "shard/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/dtype.h"

/* Sanity limits: far above any real model, low enough that a lying count
 * cannot make us allocate absurd amounts before the bounds check fails. */
#define MAX_KV 1000000u
#define MAX_TENSORS 1000000u
#define MAX_DIMS 4u

struct tsr_gguf {
    const uint8_t *base;
    size_t size;
    int mapped; /* base came from mmap and is ours to unmap */
    char name[256];
    uint32_t version;
    uint64_t alignment;
    size_t n_kv;
    tsr_gguf_kv *kv;
    size_t n_tensors;
    tsr_gguf_tensor *tensors;
    tsr_strref *str_pool; /* elements of all string arrays */
};

typedef struct {
    const uint8_t *p;
    size_t size, pos;
    const char *file;
} cursor;

static tsr_status need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: truncated at byte %zu reading %s (need %llu bytes, %zu left)",
                             c->file, c->pos, what, (unsigned long long)n, c->size - c->pos);
    return TSR_OK;
}

static tsr_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    TSR_TRY(need(c, 4, what));
    const uint8_t *p = c->p + c->pos;
    *v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    c->pos += 4;
    return TSR_OK;
}

static tsr_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    uint32_t lo, hi;
    TSR_TRY(rd_u32(c, &lo, what));
    TSR_TRY(rd_u32(c, &hi, what));
    *v = (uint64_t)hi << 32 | lo;
    return TSR_OK;
}

static tsr_status rd_str(cursor *c, tsr_strref *s, const char *what) {
    uint64_t n;
    TSR_TRY(rd_u64(c, &n, what));
    TSR_TRY(need(c, n, what));
    s->ptr = (const char *)c->p + c->pos;
    s->len = (size_t)n;
    c->pos += (size_t)n;
    return TSR_OK;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case TSR_GGUF_U8:
    case TSR_GGUF_I8:
    case TSR_GGUF_BOOL: return 1;
    case TSR_GGUF_U16:
    case TSR_GGUF_I16: return 2;
    case TSR_GGUF_U32:
    case TSR_GGUF_I32:
    case TSR_GGUF_F32: return 4;
    case TSR_GGUF_U64:
    case TSR_GGUF_I64:
    case TSR_GGUF_F64: return 8;
    default: return 0;
    }
}

/* Reads one little-endian scalar of type t at p into the kv's union. */
static void decode_scalar(uint32_t t, const uint8_t *p, tsr_gguf_kv *kv) {
    uint64_t u = 0;
    size_t n = scalar_size(t);
    for (size_t i = 0; i < n; i++)
        u |= (uint64_t)p[i] << (8 * i);
    switch (t) {
    case TSR_GGUF_I8: kv->v.i = (int8_t)u; break;
    case TSR_GGUF_I16: kv->v.i = (int16_t)u; break;
    case TSR_GGUF_I32: kv->v.i = (int32_t)u; break;
    case TSR_GGUF_I64: kv->v.i = (int64_t)u; break;
    case TSR_GGUF_F32: {
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, 4);
        kv->v.f = f;
        break;
    }
    case TSR_GGUF_F64: memcpy(&kv->v.f, &u, 8); break;
    default: kv->v.u = u; break;
    }
}

/* Counts string-array elements first so the pool is one allocation. */
static tsr_status parse_kvs(tsr_gguf_t *g, cursor *c, size_t *n_strs) {
    for (size_t i = 0; i < g->n_kv; i++) {
        tsr_gguf_kv *kv = &g->kv[i];
        uint32_t t;
        TSR_TRY(rd_str(c, &kv->key, "metadata key"));
        TSR_TRY(rd_u32(c, &t, "metadata value type"));
        kv->type = (tsr_gguf_type)t;
        if (t == TSR_GGUF_STRING) {
            TSR_TRY(rd_str(c, &kv->v.s, "metadata string"));
        } else if (t == TSR_GGUF_ARRAY) {
            uint32_t et;
            uint64_t n;
            TSR_TRY(rd_u32(c, &et, "array element type"));
            TSR_TRY(rd_u64(c, &n, "array length"));
            kv->v.arr.elem = (tsr_gguf_type)et;
            kv->v.arr.n = n;
            kv->v.arr.data = c->p + c->pos;
            if (et == TSR_GGUF_STRING) {
                for (uint64_t j = 0; j < n; j++) {
                    tsr_strref s;
                    TSR_TRY(rd_str(c, &s, "array string"));
                }
                *n_strs += (size_t)n; /* n <= bytes read / 8: cannot overflow */
            } else {
                size_t es = scalar_size(et);
                if (et == TSR_GGUF_ARRAY)
                    return tsr_error_set(
                        TSR_ERR_UNSUPPORTED,
                        "%s: key '%.*s' is an array of arrays, which Tessera does not read",
                        c->file, (int)kv->key.len, kv->key.ptr);
                if (!es)
                    return tsr_error_set(
                        TSR_ERR_FORMAT,
                        "%s: key '%.*s' has array element type %u, which GGUF does not define",
                        c->file, (int)kv->key.len, kv->key.ptr, et);
                if (n > (c->size - c->pos) / es)
                    return tsr_error_set(
                        TSR_ERR_FORMAT,
                        "%s: array '%.*s' claims %llu elements, more than the file holds", c->file,
                        (int)kv->key.len, kv->key.ptr, (unsigned long long)n);
                c->pos += (size_t)n * es;
            }
        } else {
            size_t es = scalar_size(t);
            if (!es)
                return tsr_error_set(TSR_ERR_FORMAT,
                                     "%s: key '%.*s' has value type %u, which GGUF does not define",
                                     c->file, (int)kv->key.len, kv->key.ptr, t);
            TSR_TRY(need(c, es, "metadata value"));
            decode_scalar(t, c->p + c->pos, kv);
            c->pos += es;
        }
    }
    return TSR_OK;
}

/* Second pass over string arrays: fill the pool (already bounds-checked). */
static void fill_str_pool(tsr_gguf_t *g, const char *file) {
    size_t k = 0;
    for (size_t i = 0; i < g->n_kv; i++) {
        tsr_gguf_kv *kv = &g->kv[i];
        if (kv->type != TSR_GGUF_ARRAY || kv->v.arr.elem != TSR_GGUF_STRING)
            continue;
        cursor c = {kv->v.arr.data, g->size - (size_t)((const uint8_t *)kv->v.arr.data - g->base),
                    0, file};
        kv->v.arr.strs = &g->str_pool[k];
        for (uint64_t j = 0; j < kv->v.arr.n; j++)
            (void)rd_str(&c, &g->str_pool[k++], "array string");
    }
}

/* "q4_k [256, 2]" (or "type id 99 [256, 2]"): a tensor's type and shape for
 * the messages that refuse it. */
typedef struct {
    char s[128];
} tensor_desc;

static tensor_desc describe(const tsr_gguf_tensor *t) {
    tensor_desc d;
    const char *name = tsr_dtype_name(t->type);
    int n = name ? snprintf(d.s, sizeof d.s, "%s [", name)
                 : snprintf(d.s, sizeof d.s, "type id %u [", (unsigned)t->type);
    for (uint32_t i = 0; i < t->n_dims && n > 0 && (size_t)n < sizeof d.s; i++)
        n += snprintf(d.s + n, sizeof d.s - (size_t)n, "%s%llu", i ? ", " : "",
                      (unsigned long long)t->ne[i]);
    if (n > 0 && (size_t)n < sizeof d.s)
        snprintf(d.s + n, sizeof d.s - (size_t)n, "]");
    return d;
}

static tsr_status parse_tensors(tsr_gguf_t *g, cursor *c) {
    for (size_t i = 0; i < g->n_tensors; i++) {
        tsr_gguf_tensor *t = &g->tensors[i];
        uint32_t nd, type;
        TSR_TRY(rd_str(c, &t->name, "tensor name"));
        TSR_TRY(rd_u32(c, &nd, "tensor dimension count"));
        if (nd == 0 || nd > MAX_DIMS)
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: tensor '%.*s' has %u dimensions (1..%u allowed)", c->file,
                                 (int)t->name.len, t->name.ptr, nd, MAX_DIMS);
        t->n_dims = nd;
        uint64_t count = 1;
        for (uint32_t d = 0; d < MAX_DIMS; d++) {
            t->ne[d] = 1;
            if (d < nd)
                TSR_TRY(rd_u64(c, &t->ne[d], "tensor dimension"));
            if (t->ne[d] == 0 || t->ne[d] > (UINT64_C(1) << 40) || count > UINT64_MAX / t->ne[d])
                return tsr_error_set(TSR_ERR_FORMAT,
                                     "%s: tensor '%.*s' has an impossible dimension %llu", c->file,
                                     (int)t->name.len, t->name.ptr, (unsigned long long)t->ne[d]);
            count *= t->ne[d];
        }
        TSR_TRY(rd_u32(c, &type, "tensor type"));
        TSR_TRY(rd_u64(c, &t->offset, "tensor offset"));
        t->type = (int)type;
        if (!tsr_dtype_name(t->type))
            return tsr_error_set(TSR_ERR_UNSUPPORTED,
                                 "%s: tensor '%.*s' (%s) has a block type Tessera does not read",
                                 c->file, (int)t->name.len, t->name.ptr, describe(t).s);
        size_t blk = tsr_dtype_block(t->type);
        if (t->ne[0] % blk)
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: tensor '%.*s' (%s) has rows of %llu elements, not a "
                                 "multiple of the %s block size %zu",
                                 c->file, (int)t->name.len, t->name.ptr, describe(t).s,
                                 (unsigned long long)t->ne[0], tsr_dtype_name(t->type), blk);
        size_t row = tsr_dtype_row_bytes(t->type, t->ne[0]);
        if (!row || count / t->ne[0] > UINT64_MAX / row)
            return tsr_error_set(TSR_ERR_FORMAT, "%s: tensor '%.*s' (%s) is too large", c->file,
                                 (int)t->name.len, t->name.ptr, describe(t).s);
        t->nbytes = (count / t->ne[0]) * row;
        if (t->offset % g->alignment)
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: tensor '%.*s' offset %llu is not aligned to %llu", c->file,
                                 (int)t->name.len, t->name.ptr, (unsigned long long)t->offset,
                                 (unsigned long long)g->alignment);
    }
    return TSR_OK;
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const tsr_gguf_tensor *x = *(tsr_gguf_tensor *const *)a, *y = *(tsr_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Data section bounds, and no two tensors sharing bytes or names. */
static tsr_status check_layout(tsr_gguf_t *g, size_t data_start, const char *file) {
    size_t data_size = g->size - data_start;
    tsr_gguf_tensor **order = malloc((g->n_tensors ? g->n_tensors : 1) * sizeof *order);
    if (!order)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", file);
    tsr_status st = TSR_OK;
    for (size_t i = 0; i < g->n_tensors; i++) {
        tsr_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            st = tsr_error_set(TSR_ERR_FORMAT,
                               "%s: tensor '%.*s' (%s: %llu bytes at data offset %llu) runs past "
                               "the end of the file (data section is %zu bytes): truncated or "
                               "corrupt",
                               file, (int)t->name.len, t->name.ptr, describe(t).s,
                               (unsigned long long)t->nbytes, (unsigned long long)t->offset,
                               data_size);
            goto cleanup;
        }
        t->data = g->base + data_start + t->offset;
        order[i] = t;
    }
    qsort(order, g->n_tensors, sizeof *order, cmp_tensor_offset);
    for (size_t i = 1; i < g->n_tensors; i++) {
        const tsr_gguf_tensor *a = order[i - 1], *b = order[i];
        if (a->offset + a->nbytes > b->offset) {
            /* GGUF stores no sizes: a type or shape that does not fit the
             * bytes written shows here, so name both as read */
            st = tsr_error_set(TSR_ERR_FORMAT,
                               "%s: tensors '%.*s' (%s: %llu bytes at data offset %llu) and "
                               "'%.*s' (%s at %llu) overlap",
                               file, (int)a->name.len, a->name.ptr, describe(a).s,
                               (unsigned long long)a->nbytes, (unsigned long long)a->offset,
                               (int)b->name.len, b->name.ptr, describe(b).s,
                               (unsigned long long)b->offset);
            goto cleanup;
        }
    }
    /* duplicate names: n is a few hundred, a quadratic scan is fine */
    for (size_t i = 0; i < g->n_tensors; i++)
        for (size_t j = i + 1; j < g->n_tensors; j++)
            if (g->tensors[i].name.len == g->tensors[j].name.len &&
                !memcmp(g->tensors[i].name.ptr, g->tensors[j].name.ptr, g->tensors[i].name.len)) {
                st = tsr_error_set(TSR_ERR_FORMAT, "%s: tensor name '%.*s' appears twice", file,
                                   (int)g->tensors[i].name.len, g->tensors[i].name.ptr);
                goto cleanup;
            }
cleanup:
    free(order);
    return st;
}

static tsr_status parse(tsr_gguf_t *g) {
    cursor c = {g->base, g->size, 0, g->name};
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    TSR_TRY(rd_u32(&c, &magic, "magic"));
    if (magic != 0x46554747u) /* "GGUF" little-endian */
        return tsr_error_set(TSR_ERR_FORMAT, "%s: not a GGUF file (bad magic)", g->name);
    TSR_TRY(rd_u32(&c, &g->version, "version"));
    if (g->version != 2 && g->version != 3)
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "%s: GGUF version %u (Tessera reads 2 and 3)",
                             g->name, g->version);
    TSR_TRY(rd_u64(&c, &n_tensors, "tensor count"));
    TSR_TRY(rd_u64(&c, &n_kv, "metadata count"));
    /* every kv takes at least 12 bytes and every tensor at least 24 */
    if (n_kv > MAX_KV || n_kv > g->size / 12)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: metadata count %llu is impossible for a %zu-byte file", g->name,
                             (unsigned long long)n_kv, g->size);
    if (n_tensors > MAX_TENSORS || n_tensors > g->size / 24)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: tensor count %llu is impossible for a %zu-byte file", g->name,
                             (unsigned long long)n_tensors, g->size);
    g->n_kv = (size_t)n_kv;
    g->n_tensors = (size_t)n_tensors;
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", g->name);
    size_t n_strs = 0;
    TSR_TRY(parse_kvs(g, &c, &n_strs));
    g->str_pool = calloc(n_strs ? n_strs : 1, sizeof *g->str_pool);
    if (!g->str_pool)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", g->name);
    fill_str_pool(g, g->name);

    g->alignment = 32;
    const tsr_gguf_kv *al = tsr_gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != TSR_GGUF_U32 || al->v.u == 0 || (al->v.u & (al->v.u - 1)))
            return tsr_error_set(TSR_ERR_FORMAT, "%s: general.alignment must be a u32 power of two",
                                 g->name);
        g->alignment = al->v.u;
    }
    TSR_TRY(parse_tensors(g, &c));
    size_t data_start = c.pos + (size_t)((g->alignment - c.pos % g->alignment) % g->alignment);
    if (g->n_tensors && data_start > g->size)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: file ends before its data section", g->name);
    if (data_start > g->size)
        data_start = g->size;
    return check_layout(g, data_start, g->name);
}

static tsr_status open_image(const void *data, size_t size, const char *name, int mapped,
                             tsr_gguf_t **out) {
    *out = NULL;
    tsr_gguf_t *g = calloc(1, sizeof *g);
    if (!g)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", name);
    g->base = data;
    g->size = size;
    g->mapped = mapped;
    snprintf(g->name, sizeof g->name, "%s", name);
    tsr_status st = parse(g);
    if (st != TSR_OK) {
        tsr_gguf_close(g);
        return st;
    }
    *out = g;
    return TSR_OK;
}

tsr_status tsr_gguf_open_memory(const void *data, size_t size, const char *name, tsr_gguf_t **out) {
    return open_image(data, size, name ? name : "<memory>", 0, out);
}

tsr_status tsr_gguf_open(const char *path, tsr_gguf_t **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tsr_error_set(TSR_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < 24) {
        close(fd);
        return tsr_error_set(TSR_ERR_FORMAT, "%s: %lld bytes is too small for a GGUF file", path,
                             (long long)sb.st_size);
    }
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return tsr_error_set(TSR_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    return open_image(p, (size_t)sb.st_size, path, 1, out);
}

void tsr_gguf_drop_pages(const tsr_gguf_t *g) {
    if (g && g->mapped)
        madvise((void *)g->base, g->size, MADV_DONTNEED);
}

void tsr_gguf_drop_range(const tsr_gguf_t *g, const void *p, size_t n) {
    if (!g || !g->mapped)
        return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = (uintptr_t)p, hi = lo + n, base = (uintptr_t)g->base;
    if (lo < base || hi > base + g->size)
        return;
    const uintptr_t a = (lo + page - 1) & ~(page - 1), b = hi & ~(page - 1);
    if (a < b)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

void tsr_gguf_close(tsr_gguf_t *g) {
    if (!g)
        return;
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g->kv);
    free(g->tensors);
    free(g->str_pool);
    free(g);
}

uint32_t tsr_gguf_version(const tsr_gguf_t *g) { return g->version; }
size_t tsr_gguf_n_kv(const tsr_gguf_t *g) { return g->n_kv; }
const tsr_gguf_kv *tsr_gguf_kv_at(const tsr_gguf_t *g, size_t i) {
    return i < g->n_kv ? &g->kv[i] : NULL;
}
size_t tsr_gguf_n_tensors(const tsr_gguf_t *g) { return g->n_tensors; }
const tsr_gguf_tensor *tsr_gguf_tensor_at(const tsr_gguf_t *g, size_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

int tsr_strref_eq(tsr_strref a, const char *b) {
    size_t n = strlen(b);
    return a.len == n && !memcmp(a.ptr, b, n);
}

const tsr_gguf_kv *tsr_gguf_find(const tsr_gguf_t *g, const char *key) {
    for (size_t i = 0; i < g->n_kv; i++)
        if (tsr_strref_eq(g->kv[i].key, key))
            return &g->kv[i];
    return NULL;
}

const tsr_gguf_tensor *tsr_gguf_find_tensor(const tsr_gguf_t *g, const char *name) {
    for (size_t i = 0; i < g->n_tensors; i++)
        if (tsr_strref_eq(g->tensors[i].name, name))
            return &g->tensors[i];
    return NULL;
}

static tsr_status find_kv(const tsr_gguf_t *g, const char *key, const tsr_gguf_kv **kv) {
    *kv = tsr_gguf_find(g, key);
    if (!*kv)
        return tsr_error_set(TSR_ERR_INVALID, "%s: metadata key '%s' is missing", g->name, key);
    return TSR_OK;
}

static int is_uint(tsr_gguf_type t) {
    return t == TSR_GGUF_U8 || t == TSR_GGUF_U16 || t == TSR_GGUF_U32 || t == TSR_GGUF_U64;
}
static int is_sint(tsr_gguf_type t) {
    return t == TSR_GGUF_I8 || t == TSR_GGUF_I16 || t == TSR_GGUF_I32 || t == TSR_GGUF_I64;
}

tsr_status tsr_gguf_get_i64(const tsr_gguf_t *g, const char *key, int64_t *out) {
    const tsr_gguf_kv *kv;
    TSR_TRY(find_kv(g, key, &kv));
    if (is_sint(kv->type)) {
        *out = kv->v.i;
        return TSR_OK;
    }
    if (is_uint(kv->type) && kv->v.u <= INT64_MAX) {
        *out = (int64_t)kv->v.u;
        return TSR_OK;
    }
    return tsr_error_set(TSR_ERR_FORMAT, "%s: metadata '%s' is not an integer in range", g->name,
                         key);
}

tsr_status tsr_gguf_get_u64(const tsr_gguf_t *g, const char *key, uint64_t *out) {
    const tsr_gguf_kv *kv;
    TSR_TRY(find_kv(g, key, &kv));
    if (is_uint(kv->type)) {
        *out = kv->v.u;
        return TSR_OK;
    }
    if (is_sint(kv->type) && kv->v.i >= 0) {
        *out = (uint64_t)kv->v.i;
        return TSR_OK;
    }
    return tsr_error_set(TSR_ERR_FORMAT, "%s: metadata '%s' is not a non-negative integer", g->name,
                         key);
}

tsr_status tsr_gguf_get_f64(const tsr_gguf_t *g, const char *key, double *out) {
    const tsr_gguf_kv *kv;
    TSR_TRY(find_kv(g, key, &kv));
    if (kv->type == TSR_GGUF_F32 || kv->type == TSR_GGUF_F64)
        *out = kv->v.f;
    else if (is_sint(kv->type))
        *out = (double)kv->v.i;
    else if (is_uint(kv->type))
        *out = (double)kv->v.u;
    else
        return tsr_error_set(TSR_ERR_FORMAT, "%s: metadata '%s' is not a number", g->name, key);
    return TSR_OK;
}

tsr_status tsr_gguf_get_bool(const tsr_gguf_t *g, const char *key, int *out) {
    const tsr_gguf_kv *kv;
    TSR_TRY(find_kv(g, key, &kv));
    if (kv->type != TSR_GGUF_BOOL)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: metadata '%s' is not a bool", g->name, key);
    *out = kv->v.u != 0;
    return TSR_OK;
}

tsr_status tsr_gguf_get_str(const tsr_gguf_t *g, const char *key, tsr_strref *out) {
    const tsr_gguf_kv *kv;
    TSR_TRY(find_kv(g, key, &kv));
    if (kv->type != TSR_GGUF_STRING)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: metadata '%s' is not a string", g->name, key);
    *out = kv->v.s;
    return TSR_OK;
}

tsr_status tsr_gguf_get_str_arr(const tsr_gguf_t *g, const char *key, const tsr_strref **out,
                                uint64_t *n) {
    const tsr_gguf_kv *kv;
    TSR_TRY(find_kv(g, key, &kv));
    if (kv->type != TSR_GGUF_ARRAY || kv->v.arr.elem != TSR_GGUF_STRING)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: metadata '%s' is not a string array", g->name,
                             key);
    *out = kv->v.arr.strs;
    *n = kv->v.arr.n;
    return TSR_OK;
}

static tsr_status get_num_arr(const tsr_gguf_t *g, const char *key, int want_float, void **out,
                              uint64_t *n) {
    const tsr_gguf_kv *kv;
    TSR_TRY(find_kv(g, key, &kv));
    if (kv->type != TSR_GGUF_ARRAY || !scalar_size(kv->v.arr.elem) ||
        kv->v.arr.elem == TSR_GGUF_BOOL)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: metadata '%s' is not a numeric array", g->name,
                             key);
    uint32_t et = kv->v.arr.elem;
    if (!want_float && (et == TSR_GGUF_F32 || et == TSR_GGUF_F64))
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: metadata '%s' is a float array, integers expected", g->name, key);
    size_t es = scalar_size(et), cnt = (size_t)kv->v.arr.n;
    void *buf = malloc((cnt ? cnt : 1) * 8);
    if (!buf)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory reading '%s'", g->name, key);
    for (size_t i = 0; i < cnt; i++) {
        tsr_gguf_kv tmp;
        decode_scalar(et, (const uint8_t *)kv->v.arr.data + i * es, &tmp);
        double f = et == TSR_GGUF_F32 || et == TSR_GGUF_F64 ? tmp.v.f
                   : is_sint(et)                            ? (double)tmp.v.i
                                                            : (double)tmp.v.u;
        if (!want_float && !is_sint(et) && tmp.v.u > INT64_MAX) {
            free(buf);
            return tsr_error_set(TSR_ERR_FORMAT, "%s: metadata '%s'[%zu] does not fit in int64",
                                 g->name, key, i);
        }
        int64_t iv = is_sint(et) ? tmp.v.i : (int64_t)tmp.v.u;
        if (want_float)
            ((double *)buf)[i] = f;
        else
            ((int64_t *)buf)[i] = iv;
    }
    *out = buf;
    *n = cnt;
    return TSR_OK;
}

tsr_status tsr_gguf_get_i64_arr(const tsr_gguf_t *g, const char *key, int64_t **out, uint64_t *n) {
    return get_num_arr(g, key, 0, (void **)out, n);
}

tsr_status tsr_gguf_get_f64_arr(const tsr_gguf_t *g, const char *key, double **out, uint64_t *n) {
    return get_num_arr(g, key, 1, (void **)out, n);
}
