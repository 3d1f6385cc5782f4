/* tests/common/qblocks.h - random rows of GGUF quantized blocks for kernel
 * tests: random bytes for the quantized values and scale bytes, with the f16
 * super-scales (d, and m or dmin) set to small random values so that the
 * dequantized weights are O(1/sqrt(cols)) and sums stay in a sane range.
 *
 * What it is not: a quantizer (kernels/dtype.h has tsr_quantize for Q8_0
 * and Q4_0); the values follow no distribution a real model has. */
#ifndef TSR_TESTS_COMMON_QBLOCKS_H
#define TSR_TESTS_COMMON_QBLOCKS_H

#include "kernels/dtype.h"
#include "tests/common/check.h"

/* Byte offsets of a block's f16 scale fields (-1: none), and their size times
 * sqrt(cols) (a 4-bit weight of scale d spans about 16 d). */
typedef struct {
    int type;
    int d_at, m_at;
    double d, m;
} tu_qblock_kind;

static const tu_qblock_kind tu_qblock_kinds[] = {
    {TSR_Q4_0, 0, -1, 0.15, 0},      {TSR_Q4_1, 0, 2, 0.15, 0.5},   {TSR_Q5_0, 0, -1, 0.08, 0},
    {TSR_Q5_1, 0, 2, 0.08, 0.5},     {TSR_Q8_0, 0, -1, 0.01, 0},    {TSR_IQ4_NL, 0, -1, 0.015, 0},
    {TSR_Q2_K, 80, 82, 0.05, 0.05},  {TSR_Q3_K, 108, -1, 0.02, 0},  {TSR_Q4_K, 0, 2, 0.003, 0.005},
    {TSR_Q5_K, 0, 2, 0.0015, 0.005}, {TSR_Q6_K, 208, -1, 0.001, 0},
};
#define TU_QBLOCK_KINDS ((int)(sizeof tu_qblock_kinds / sizeof tu_qblock_kinds[0]))

/* The kind of type t, or NULL when t is not a block-quantized type. */
static inline const tu_qblock_kind *tu_qblock_kind_of(int t) {
    for (int k = 0; k < TU_QBLOCK_KINDS; k++)
        if (tu_qblock_kinds[k].type == t)
            return &tu_qblock_kinds[k];
    return NULL;
}

static inline void tu_put_f16(unsigned char *p, float v) {
    uint16_t h = tsr_f32_to_f16(v);
    p[0] = (unsigned char)h;
    p[1] = (unsigned char)(h >> 8);
}

/* Fills `rows` rows of `cols` elements of type t (cols a multiple of its
 * block) at dst. Scales vary by a random factor in [0.5, 1.5) per block, with
 * random signs for d where the format allows a negative d. */
static inline void tu_qblocks_fill(tu_rng *r, int t, void *dst, int rows, int cols) {
    const tu_qblock_kind *k = tu_qblock_kind_of(t);
    CHECK(k != NULL, "type %d has no random block kind", t);
    const size_t bb = tsr_dtype_block_bytes(t), nb = (size_t)rows * cols / tsr_dtype_block(t);
    unsigned char *p = dst;
    const double s = 1.0 / sqrt((double)cols);
    for (size_t b = 0; b < nb; b++, p += bb) {
        for (size_t i = 0; i < bb; i++)
            p[i] = (unsigned char)tu_rng_below(r, 256);
        const float sign =
            t == TSR_Q2_K || t == TSR_Q4_K || t == TSR_Q5_K || tu_rng_below(r, 2) == 0 ? 1.0f
                                                                                       : -1.0f;
        tu_put_f16(p + k->d_at, sign * (float)(k->d * s * tu_rng_float(r, 0.5f, 1.5f)));
        if (k->m_at >= 0)
            tu_put_f16(p + k->m_at, (float)(k->m * s * tu_rng_float(r, -1.0f, 1.0f)));
    }
}

#endif
