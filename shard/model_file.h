/* shard/model_file.h - one model on disk, whatever its format: a GGUF file or
 * a Hugging Face directory (config.json + safetensors). Gives the model's
 * config and reads any rectangle of any weight as f32 or as stored (its
 * quantized blocks), so a rank can read only its own slice.
 *
 * Tensor names are GGUF's ("token_embd.weight", "blk.3.attn_q.weight",
 * "output_norm.weight", ...) whatever the format; HF names are mapped.
 * Q and K projection rows come out in rotate-half (HF) order for both formats:
 * GGUF files of Llama models store them permuted for adjacent-pair RoPE and
 * are un-permuted here, so the model has one RoPE convention.
 *
 * What it is not: it does not decide which slice a rank needs (shard plan) and
 * does not hold the tokenizer (runtime/tokenizer reads the same sources). */
#ifndef TSR_SHARD_MODEL_FILE_H
#define TSR_SHARD_MODEL_FILE_H

#include "base/status.h"
#include "shard/config.h"
#include "shard/gguf.h"

typedef struct tsr_model_file tsr_model_file_t; /* opaque */

/* Opens `path`: a .gguf file, or a directory holding config.json and
 * model.safetensors (or model.safetensors.index.json). Validates the config
 * and that every tensor the config implies exists with the right shape, so a
 * later read cannot fail on a missing tensor. */
tsr_status tsr_model_file_open(const char *path, tsr_model_file_t **out);
void tsr_model_file_close(tsr_model_file_t *mf); /* NULL ok */

const tsr_model_config *tsr_model_file_config(const tsr_model_file_t *mf);
/* The GGUF handle, or NULL for a Hugging Face directory. */
const tsr_gguf_t *tsr_model_file_gguf(const tsr_model_file_t *mf);
/* The directory for a Hugging Face model, or NULL for GGUF. */
const char *tsr_model_file_dir(const tsr_model_file_t *mf);
/* "gguf" or "safetensors". */
const char *tsr_model_file_format(const tsr_model_file_t *mf);
/* Storage type name of a tensor ("q4_1"), or NULL if absent. */
const char *tsr_model_file_dtype(const tsr_model_file_t *mf, const char *name);
/* Storage type of a tensor (a tsr_dtype), or -1 if absent. */
int tsr_model_file_type(const tsr_model_file_t *mf, const char *name);

int tsr_model_file_has(const tsr_model_file_t *mf, const char *name);

/* After a rank copied its slices out: drop the file's pages from this
 * process's resident set (they are re-read if touched again). */
void tsr_model_file_drop_pages(const tsr_model_file_t *mf);
/* The same for one tensor's pages (GGUF; a no-op for a Hugging Face
 * directory), so that loading never holds the whole file and its copy. */
void tsr_model_file_drop_tensor(const tsr_model_file_t *mf, const char *name);

/* Shape of a tensor as (rows, cols) = (out_features, in_features); a 1-D
 * tensor has rows == 1. TSR_ERR_INVALID if absent. */
tsr_status tsr_model_file_shape(const tsr_model_file_t *mf, const char *name, int *rows, int *cols);

/* Reads rows [row0, row0+nrows) x cols [col0, col0+ncols) of `name` as f32
 * into dst (nrows, ncols), dequantizing as needed. TSR_ERR_RANGE if the
 * rectangle is outside the tensor. */
tsr_status tsr_model_file_read(const tsr_model_file_t *mf, const char *name, int row0, int nrows,
                               int col0, int ncols, float *dst);

/* The same rectangle as stored, without conversion: nrows rows of
 * tsr_dtype_row_bytes(type, ncols) bytes each in the tensor's own type (Q/K
 * rows un-permuted as tsr_model_file_read does). Columns col0 and
 * col0 + ncols must fall on block boundaries: TSR_ERR_INVALID naming the
 * tensor, its type, its shape, the columns and the block otherwise (a tensor-
 * parallel split that would cut a block). */
tsr_status tsr_model_file_read_raw(const tsr_model_file_t *mf, const char *name, int row0,
                                   int nrows, int col0, int ncols, void *dst);

#endif
