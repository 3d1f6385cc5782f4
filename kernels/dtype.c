/* kernels/dtype.c - type sizes and scalar dequantizers (the reference for any
 * vectorised or device version). Block layouts follow the GGUF/ggml format. */
#include "kernels/dtype.h"

#include <math.h>
#include <string.h>

typedef struct {
    const char *name;
    size_t block;
    size_t bytes;
} dtype_info;

static const dtype_info infos[TSR_DTYPE_COUNT] = {
    [TSR_F32] = {"f32", 1, 4},     [TSR_F16] = {"f16", 1, 2},       [TSR_Q4_0] = {"q4_0", 32, 18},
    [TSR_Q4_1] = {"q4_1", 32, 20}, [TSR_Q5_0] = {"q5_0", 32, 22},   [TSR_Q5_1] = {"q5_1", 32, 24},
    [TSR_Q8_0] = {"q8_0", 32, 34}, [TSR_Q6_K] = {"q6_k", 256, 210}, [TSR_BF16] = {"bf16", 1, 2},
};

static const dtype_info *info(int t) {
    if (t < 0 || t >= TSR_DTYPE_COUNT || !infos[t].name)
        return NULL;
    return &infos[t];
}

const char *tsr_dtype_name(int t) { return info(t) ? info(t)->name : NULL; }
size_t tsr_dtype_block(int t) { return info(t) ? info(t)->block : 0; }
size_t tsr_dtype_block_bytes(int t) { return info(t) ? info(t)->bytes : 0; }

size_t tsr_dtype_row_bytes(int t, uint64_t n) {
    const dtype_info *d = info(t);
    if (!d || n % d->block)
        return 0;
    uint64_t blocks = n / d->block;
    if (blocks > SIZE_MAX / d->bytes)
        return 0;
    return (size_t)(blocks * d->bytes);
}

float tsr_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t tsr_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0);
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return sign | 0x7c00;
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal */
        if (absx < 0x33000000u)
            return sign;
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        /* value = m * 2^(e-150); the half subnormal unit is 2^-24 */
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return sign | (uint16_t)q;
    }
    uint32_t e = (absx >> 23) - 127 + 15, m = absx & 0x7fffff;
    uint32_t h = e << 10 | m >> 13, rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* may carry into the exponent, which is correct */
    return sign | (uint16_t)h;
}

float tsr_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t tsr_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

void tsr_dequantize(int t, const void *src, float *dst, size_t n) {
    const uint8_t *p = src;
    switch (t) {
    case TSR_F32: memcpy(dst, src, n * 4); return;
    case TSR_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = tsr_f16_to_f32(rd16(p + 2 * i));
        return;
    case TSR_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = tsr_bf16_to_f32(rd16(p + 2 * i));
        return;
    case TSR_Q8_0: /* {f16 d; int8 q[32]}: x = d*q */
        for (size_t b = 0; b < n / 32; b++, p += 34, dst += 32) {
            float d = tsr_f16_to_f32(rd16(p));
            for (int j = 0; j < 32; j++)
                dst[j] = d * (float)(int8_t)p[2 + j];
        }
        return;
    case TSR_Q4_0: /* {f16 d; u8 qs[16]}: x = d*(q-8); low nibbles 0..15, high 16..31 */
        for (size_t b = 0; b < n / 32; b++, p += 18, dst += 32) {
            float d = tsr_f16_to_f32(rd16(p));
            for (int j = 0; j < 16; j++) {
                dst[j] = d * (float)((p[2 + j] & 0xf) - 8);
                dst[j + 16] = d * (float)((p[2 + j] >> 4) - 8);
            }
        }
        return;
    case TSR_Q4_1: /* {f16 d; f16 m; u8 qs[16]}: x = d*q + m */
        for (size_t b = 0; b < n / 32; b++, p += 20, dst += 32) {
            float d = tsr_f16_to_f32(rd16(p)), m = tsr_f16_to_f32(rd16(p + 2));
            for (int j = 0; j < 16; j++) {
                dst[j] = d * (float)(p[4 + j] & 0xf) + m;
                dst[j + 16] = d * (float)(p[4 + j] >> 4) + m;
            }
        }
        return;
    case TSR_Q5_0:   /* {f16 d; u32 qh; u8 qs[16]}: 5th bit of element j in qh bit j */
    case TSR_Q5_1: { /* {f16 d; f16 m; u32 qh; u8 qs[16]} */
        int has_m = t == TSR_Q5_1;
        size_t bb = has_m ? 24 : 22;
        for (size_t b = 0; b < n / 32; b++, p += bb, dst += 32) {
            float d = tsr_f16_to_f32(rd16(p)), m = has_m ? tsr_f16_to_f32(rd16(p + 2)) : 0;
            const uint8_t *qhp = p + (has_m ? 4 : 2), *qs = qhp + 4;
            uint32_t qh = (uint32_t)qhp[0] | (uint32_t)qhp[1] << 8 | (uint32_t)qhp[2] << 16 |
                          (uint32_t)qhp[3] << 24;
            for (int j = 0; j < 16; j++) {
                int lo = (qs[j] & 0xf) | (int)((qh >> j) & 1) << 4;
                int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
                dst[j] = has_m ? d * (float)lo + m : d * (float)(lo - 16);
                dst[j + 16] = has_m ? d * (float)hi + m : d * (float)(hi - 16);
            }
        }
        return;
    }
    case TSR_Q6_K: /* {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} per 256 */
        for (size_t b = 0; b < n / 256; b++, p += 210, dst += 256) {
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            float d = tsr_f16_to_f32(rd16(p + 208));
            for (int half = 0; half < 2; half++) {
                float *y = dst + 128 * half;
                const uint8_t *l = ql + 64 * half, *h = qh + 32 * half;
                const int8_t *s = sc + 8 * half;
                for (int l32 = 0; l32 < 32; l32++) {
                    int is = l32 / 16;
                    int q1 = (int)((l[l32] & 0xf) | ((h[l32] >> 0) & 3) << 4) - 32;
                    int q2 = (int)((l[l32 + 32] & 0xf) | ((h[l32] >> 2) & 3) << 4) - 32;
                    int q3 = (int)((l[l32] >> 4) | ((h[l32] >> 4) & 3) << 4) - 32;
                    int q4 = (int)((l[l32 + 32] >> 4) | ((h[l32] >> 6) & 3) << 4) - 32;
                    y[l32] = d * s[is] * (float)q1;
                    y[l32 + 32] = d * s[is + 2] * (float)q2;
                    y[l32 + 64] = d * s[is + 4] * (float)q3;
                    y[l32 + 96] = d * s[is + 6] * (float)q4;
                }
            }
        }
        return;
    }
}
