/* kernels/dtype.h - element types of weights and activations, and the row
 * dequantizers that turn any stored type into f32.
 *
 * The numbering follows ggml's type ids so that a GGUF tensor's type field maps
 * to tsr_dtype without a table. Quantized types are stored in blocks of
 * tsr_dtype_block() elements taking tsr_dtype_block_bytes() bytes; a row of a
 * quantized matrix is always a whole number of blocks. */
#ifndef TSR_KERNELS_DTYPE_H
#define TSR_KERNELS_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TSR_F32 = 0,
    TSR_F16 = 1,
    TSR_Q4_0 = 2,
    TSR_Q4_1 = 3,
    TSR_Q5_0 = 6,
    TSR_Q5_1 = 7,
    TSR_Q8_0 = 8,
    TSR_Q2_K = 10,
    TSR_Q3_K = 11,
    TSR_Q4_K = 12,
    TSR_Q5_K = 13,
    TSR_Q6_K = 14,
    TSR_IQ4_NL = 20, /* 32 elements: f16 d, 16 bytes of 4-bit indices into a fixed table */
    TSR_BF16 = 30,
    TSR_DTYPE_COUNT = 31, /* one past the largest id; not every id is a type */
} tsr_dtype;

/* Name ("q4_1"), or NULL when `t` is not a type Tessera knows. */
const char *tsr_dtype_name(int t);

/* Elements per block (1 for plain types); 0 when `t` is unknown. */
size_t tsr_dtype_block(int t);

/* Bytes per block (element size for plain types); 0 when `t` is unknown. */
size_t tsr_dtype_block_bytes(int t);

/* Bytes taken by `n` elements of type `t`, or 0 when `t` is unknown or `n` is
 * not a whole number of blocks. Overflow is reported as 0 too. */
size_t tsr_dtype_row_bytes(int t, uint64_t n);

/* Converts `n` elements of type `t` at `src` to f32 at `dst`. `n` must be a
 * multiple of the block size and `t` a known type (checked by the caller via
 * tsr_dtype_row_bytes). `src` may be unaligned (it points into an mmap'd
 * file). Cannot fail. Each element is computed with the same f32 operations,
 * in the same order, as ggml's dequantize_row_* (no fused multiply-add), so
 * the result is bit for bit that of ggml and of gguf-py's dequantizers. */
void tsr_dequantize(int t, const void *src, float *dst, size_t n);

/* Converts `n` f32 values (a multiple of 32) at `src` into blocks of `t` at
 * `dst`; t is TSR_Q8_0 or TSR_Q4_0 (returns 0 for any other type, 1 done).
 * The rounding is that of ggml's reference quantizers and gguf-py's
 * (Q8_0: d = max|x| / 127, q = round half away from zero of x / d; Q4_0:
 * d = -m / 8 for the value m of largest magnitude, q = min(15, trunc(x / d
 * + 8.5))), so the bytes are theirs. Used by --weight-dtype q8_0|q4_0. */
int tsr_quantize(int t, const float *src, void *dst, size_t n);

/* IEEE half and bfloat16 conversions. */
float tsr_f16_to_f32(uint16_t h);
uint16_t tsr_f32_to_f16(float f);
float tsr_bf16_to_f32(uint16_t b);
uint16_t tsr_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

#endif
