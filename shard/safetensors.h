/* shard/safetensors.h - a reader for Hugging Face safetensors files, one file
 * at a time, plus a helper that opens a checkpoint directory (one file, or
 * shards listed by model.safetensors.index.json).
 *
 * Layout of a file: an 8-byte little-endian header length N, N bytes of JSON
 * (an object: tensor name -> {dtype, shape, data_offsets}, plus an optional
 * "__metadata__" string -> string map), then the data section. The file is
 * mmap'd read-only; the header is parsed and validated at open (N within the
 * file and <= 100 MB, every dtype known, every shape non-negative and free of
 * overflow, data_offsets inside the data section and consistent with
 * dtype x shape, no two tensors overlapping), so a corrupt or lying file is
 * refused with a message naming the file and the problem.
 *
 * Names, metadata strings and tensor data belong to the handle and stay valid
 * until it is closed. A handle is never modified after open, so any number of
 * threads may read it at once. Tensor data may be unaligned (it points into the
 * mapping just after a header of arbitrary length): read it with memcpy or
 * tsr_dequantize(), never through a cast float pointer.
 *
 * What it is not: it knows nothing of models (which tensor is which, or how a
 * PyTorch (out, in) matrix maps onto Tessera's layout), converts nothing, and
 * writes nothing. It reads whole files; a rank that needs a slice takes the
 * slice out of the mapping itself. */
#ifndef TSR_SHARD_SAFETENSORS_H
#define TSR_SHARD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* Most dimensions a tensor may have. */
#define TSR_ST_MAX_DIMS 8

/* Largest JSON header accepted, in bytes (the reference implementation's
 * limit). */
#define TSR_ST_MAX_HEADER_BYTES ((uint64_t)100 * 1000 * 1000)

/* tsr_st_tensor.dtype for a dtype the file format defines but Tessera cannot
 * load as weights (BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F64, F8_E4M3,
 * F8_E5M2). Such tensors are validated like the others, so a checkpoint
 * carrying a stray integer buffer still opens; tsr_st_tensor_loadable()
 * refuses them. */
#define TSR_ST_DTYPE_NOT_LOADABLE (-1)

typedef struct tsr_safetensors tsr_safetensors_t; /* opaque: one open file */
typedef struct tsr_st_dir tsr_st_dir_t;           /* opaque: a checkpoint dir */

/* One tensor, as the file describes it. Owned by the handle. */
typedef struct {
    const char *name;                /* NUL-terminated */
    int dtype;                       /* TSR_F32, TSR_F16, TSR_BF16 (kernels/dtype.h),
                                        or TSR_ST_DTYPE_NOT_LOADABLE */
    const char *dtype_name;          /* as in the file: "F32", "BF16", "I64", ... */
    size_t elem_size;                /* bytes per element */
    uint32_t n_dims;                 /* 0 (a scalar) .. TSR_ST_MAX_DIMS */
    uint64_t shape[TSR_ST_MAX_DIMS]; /* as in the file: row-major, shape[0]
                                        outermost; a PyTorch weight (out, in)
                                        is shape = {out, in}. Unused dims 1. */
    uint64_t n_elem;                 /* product of shape (1 for a scalar) */
    uint64_t offset;                 /* from the start of the data section */
    size_t nbytes;                   /* n_elem * elem_size */
    const void *data;                /* into the mapping; possibly unaligned */
} tsr_st_tensor;

/* ---- one file ---------------------------------------------------------- */

/* Opens, maps and validates `path`. On error *out is NULL and the message
 * names the file and the problem: TSR_ERR_IO (cannot open, stat or map),
 * TSR_ERR_FORMAT (corrupt or inconsistent), TSR_ERR_UNSUPPORTED (a dtype
 * unknown to the format or Tessera, more than TSR_ST_MAX_DIMS dims). */
tsr_status tsr_safetensors_open(const char *path, tsr_safetensors_t **out);

/* Parses an in-memory image of a file (not copied; it must outlive the
 * handle). For tests and fuzzing. `name` is used in messages (copied). */
tsr_status tsr_safetensors_open_memory(const void *data, size_t size, const char *name,
                                       tsr_safetensors_t **out);

/* Unmaps and frees. NULL is allowed. Every pointer obtained from the handle
 * dies with it. */
void tsr_safetensors_close(tsr_safetensors_t *st);

/* The path (or memory name) given at open. */
const char *tsr_safetensors_name(const tsr_safetensors_t *st);

/* Tensors, in byte order of their names (strcmp); tensor_at returns NULL
 * when `i` >= n_tensors. */
size_t tsr_safetensors_n_tensors(const tsr_safetensors_t *st);
const tsr_st_tensor *tsr_safetensors_tensor_at(const tsr_safetensors_t *st, size_t i);

/* Lookup by exact name; NULL when absent. O(log n). */
const tsr_st_tensor *tsr_safetensors_find_tensor(const tsr_safetensors_t *st, const char *name);

/* The "__metadata__" map, in file order. *key and *value (either pointer may
 * be NULL) are NUL-terminated and owned by the handle; both are set to NULL
 * when `i` >= n_meta. */
size_t tsr_safetensors_n_meta(const tsr_safetensors_t *st);
void tsr_safetensors_meta_at(const tsr_safetensors_t *st, size_t i, const char **key,
                             const char **value);

/* The metadata value for `key`, or NULL when absent. */
const char *tsr_safetensors_find_meta(const tsr_safetensors_t *st, const char *key);

/* TSR_OK when `t` holds F32, F16 or BF16; else TSR_ERR_UNSUPPORTED with a
 * message naming the tensor and its dtype. For model loaders. */
tsr_status tsr_st_tensor_loadable(const tsr_st_tensor *t);

/* ---- a checkpoint directory -------------------------------------------- */

/* Opens the weights of a Hugging Face checkpoint directory:
 *  - if `dir`/model.safetensors.index.json exists, reads its "weight_map"
 *    (tensor name -> file name), opens each distinct file once and checks
 *    that every mapped tensor is present in its file. File names must stay
 *    inside `dir`: a name that is empty or contains '/', '\' or ".." is
 *    refused (symlinks such as a Hugging Face cache's are followed);
 *  - else opens `dir`/model.safetensors.
 * The directory's tensors are the weight_map's names (tensors present in a
 * shard but absent from the map are not visible) or the single file's.
 * On error *out is NULL and the message names the offending file. */
tsr_status tsr_st_dir_open(const char *dir, tsr_st_dir_t **out);

/* Drops the resident pages of every mapped file (see tsr_gguf_drop_pages).
 * NULL ok. */
void tsr_st_dir_drop_pages(const tsr_st_dir_t *d);

/* Closes every file. NULL is allowed. */
void tsr_st_dir_close(tsr_st_dir_t *d);

/* Lookup by exact name; NULL when absent. The descriptor belongs to one of
 * the directory's files. */
const tsr_st_tensor *tsr_st_dir_find(const tsr_st_dir_t *d, const char *name);

/* All visible tensors, in byte order of their names; NULL when `i` >=
 * n_tensors. */
size_t tsr_st_dir_n_tensors(const tsr_st_dir_t *d);
const tsr_st_tensor *tsr_st_dir_tensor_at(const tsr_st_dir_t *d, size_t i);

/* The open files, in byte order of their names (one without an index).
 * For metadata and messages. NULL when `i` >= n_files. */
size_t tsr_st_dir_n_files(const tsr_st_dir_t *d);
const tsr_safetensors_t *tsr_st_dir_file_at(const tsr_st_dir_t *d, size_t i);

/* Whether the directory was opened through model.safetensors.index.json. */
int tsr_st_dir_is_sharded(const tsr_st_dir_t *d);

#endif
