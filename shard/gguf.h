/* shard/gguf.h - a reader for GGUF (versions 2 and 3) model files.
 *
 * The file is mmap'd read-only; metadata and tensor descriptors are parsed and
 * validated at open (every length, count, offset and size is checked against
 * the file, so a corrupt or lying file is refused with a message naming the
 * problem). Strings and tensor data point into the mapping and stay valid
 * until tsr_gguf_close(). Strings are NOT NUL-terminated: use the length.
 *
 * What it is not: it knows nothing of models; shard/model_file.c maps GGUF
 * names and layouts onto Tessera's model. */
#ifndef TSR_SHARD_GGUF_H
#define TSR_SHARD_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct tsr_gguf tsr_gguf_t; /* opaque */

/* A string inside the mapping (not NUL-terminated). */
typedef struct {
    const char *ptr;
    size_t len;
} tsr_strref;

/* GGUF metadata value types (the file's own numbering). */
typedef enum {
    TSR_GGUF_U8 = 0,
    TSR_GGUF_I8 = 1,
    TSR_GGUF_U16 = 2,
    TSR_GGUF_I16 = 3,
    TSR_GGUF_U32 = 4,
    TSR_GGUF_I32 = 5,
    TSR_GGUF_F32 = 6,
    TSR_GGUF_BOOL = 7,
    TSR_GGUF_STRING = 8,
    TSR_GGUF_ARRAY = 9,
    TSR_GGUF_U64 = 10,
    TSR_GGUF_I64 = 11,
    TSR_GGUF_F64 = 12,
} tsr_gguf_type;

/* One metadata key/value pair. Scalars are widened into the union; arrays
 * keep a pointer to their packed little-endian elements (possibly unaligned)
 * or, for string arrays, an array of tsr_strref built at open. */
typedef struct {
    tsr_strref key;
    tsr_gguf_type type;
    union {
        uint64_t u;   /* U8..U64, BOOL */
        int64_t i;    /* I8..I64 */
        double f;     /* F32, F64 */
        tsr_strref s; /* STRING */
        struct {
            tsr_gguf_type elem;
            uint64_t n;
            const void *data;       /* numeric elements, packed */
            const tsr_strref *strs; /* STRING elements, else NULL */
        } arr;
    } v;
} tsr_gguf_kv;

/* One tensor. ne[0] is the fastest-varying (row length), as in GGUF; a 2-D
 * weight of PyTorch shape (out, in) has ne = {in, out}. */
typedef struct {
    tsr_strref name;
    uint32_t n_dims;
    uint64_t ne[4];  /* unused dims are 1 */
    int type;        /* tsr_dtype id */
    uint64_t offset; /* from the start of the data section */
    uint64_t nbytes;
    const void *data; /* into the mapping */
} tsr_gguf_tensor;

/* Opens and validates `path`. On error *out is NULL and the message names the
 * file and the problem. */
tsr_status tsr_gguf_open(const char *path, tsr_gguf_t **out);

/* Parses an in-memory image (not copied; must outlive the handle). For tests
 * and fuzzing. `name` is used in messages. */
tsr_status tsr_gguf_open_memory(const void *data, size_t size, const char *name, tsr_gguf_t **out);

/* Unmaps and frees. NULL is allowed. */
void tsr_gguf_close(tsr_gguf_t *g);

/* Tells the kernel the mapped pages are not needed now (after the weights
 * were copied out): they leave this process's resident set and are read
 * again from the file if touched. Pointers stay valid. No-op for memory
 * images. */
void tsr_gguf_drop_pages(const tsr_gguf_t *g);
/* The same for the whole pages inside [p, p + n) (a tensor's bytes, once
 * copied out); pages shared with a neighbour are re-read if touched. A no-op
 * for an image that is not a file mapping. */
void tsr_gguf_drop_range(const tsr_gguf_t *g, const void *p, size_t n);

uint32_t tsr_gguf_version(const tsr_gguf_t *g);
size_t tsr_gguf_n_kv(const tsr_gguf_t *g);
const tsr_gguf_kv *tsr_gguf_kv_at(const tsr_gguf_t *g, size_t i);
size_t tsr_gguf_n_tensors(const tsr_gguf_t *g);
const tsr_gguf_tensor *tsr_gguf_tensor_at(const tsr_gguf_t *g, size_t i);

/* Lookup by exact key / name; NULL when absent. */
const tsr_gguf_kv *tsr_gguf_find(const tsr_gguf_t *g, const char *key);
const tsr_gguf_tensor *tsr_gguf_find_tensor(const tsr_gguf_t *g, const char *name);

/* Typed getters. Each returns TSR_OK and writes *out, or TSR_ERR_FORMAT (key
 * present with an unusable type or value) or TSR_ERR_INVALID (key absent)
 * with a message naming the key; *out is untouched on error. Integer getters
 * accept any integer type whose value fits. */
tsr_status tsr_gguf_get_u64(const tsr_gguf_t *g, const char *key, uint64_t *out);
tsr_status tsr_gguf_get_i64(const tsr_gguf_t *g, const char *key, int64_t *out);
tsr_status tsr_gguf_get_f64(const tsr_gguf_t *g, const char *key, double *out); /* any number */
tsr_status tsr_gguf_get_bool(const tsr_gguf_t *g, const char *key, int *out);
tsr_status tsr_gguf_get_str(const tsr_gguf_t *g, const char *key, tsr_strref *out);
/* A string array: *out points at n strings owned by the handle. */
tsr_status tsr_gguf_get_str_arr(const tsr_gguf_t *g, const char *key, const tsr_strref **out,
                                uint64_t *n);
/* An integer or float array converted to int64 / f64; *out is malloc'd
 * (caller frees). */
tsr_status tsr_gguf_get_i64_arr(const tsr_gguf_t *g, const char *key, int64_t **out, uint64_t *n);
tsr_status tsr_gguf_get_f64_arr(const tsr_gguf_t *g, const char *key, double **out, uint64_t *n);

/* Compares a strref with a NUL-terminated string. */
int tsr_strref_eq(tsr_strref a, const char *b);

#endif
