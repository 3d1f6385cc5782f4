/* shard/safetensors_write.h - the one safetensors writer: the header (an
 * 8-byte little-endian length, then compact JSON with "__metadata__"
 * {"format": "pt"} first and each tensor's dtype, shape and data_offsets in
 * the order given, padded with spaces so the data starts at a multiple of
 * 8), and a whole file from tensors in memory. The PEFT adapter writer and
 * `tessera merge-lora` both go through it.
 *
 * What it is not: no reader (shard/safetensors.h), no conversion (the
 * caller's data is written as it is, little-endian hosts only), no
 * directory handling (base/fs.h). */
#ifndef TSR_SHARD_SAFETENSORS_WRITE_H
#define TSR_SHARD_SAFETENSORS_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "shard/safetensors.h"

/* One tensor to write. */
typedef struct {
    const char *name;                /* NUL-terminated, valid UTF-8 */
    int dtype;                       /* TSR_F32, TSR_F16 or TSR_BF16 (kernels/dtype.h) */
    uint32_t n_dims;                 /* 1 .. TSR_ST_MAX_DIMS */
    uint64_t shape[TSR_ST_MAX_DIMS]; /* row-major, shape[0] outermost */
    const void *data;                /* its bytes (tsr_safetensors_write); NULL when
                                        the caller writes them after the header */
} tsr_st_out_tensor;

/* Bytes of t's data: the product of its shape times its element size. */
uint64_t tsr_st_out_nbytes(const tsr_st_out_tensor *t);

/* The file's head for tensors t[0..n), laid out contiguously in that order:
 * *out (malloc'd, the caller frees it) holds *len bytes, 8 + a multiple of
 * 8. The data section that follows is t[0]'s bytes, then t[1]'s, ...
 * TSR_ERR_INVALID for a dtype or n_dims out of range, or a name that is not
 * valid UTF-8 (or out of memory while building the JSON); TSR_ERR_NOMEM. */
tsr_status tsr_safetensors_header(const tsr_st_out_tensor *t, size_t n, char **out, size_t *len);

/* Writes a new file `path` (it must not exist) holding tensors t[0..n)
 * (each t[i].data non-NULL), fsync'd and closed (tsr_fs_write_file's
 * contract). Errors as tsr_safetensors_header and base/fs.h. */
tsr_status tsr_safetensors_write(const char *path, const tsr_st_out_tensor *t, size_t n);

#endif
