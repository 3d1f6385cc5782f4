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
    [TSR_F32] = {"f32", 1, 4},         [TSR_F16] = {"f16", 1, 2},
    [TSR_Q4_0] = {"q4_0", 32, 18},     [TSR_Q4_1] = {"q4_1", 32, 20},
    [TSR_Q5_0] = {"q5_0", 32, 22},     [TSR_Q5_1] = {"q5_1", 32, 24},
    [TSR_Q8_0] = {"q8_0", 32, 34},     [TSR_Q2_K] = {"q2_k", 256, 84},
    [TSR_Q3_K] = {"q3_k", 256, 110},   [TSR_Q4_K] = {"q4_k", 256, 144},
    [TSR_Q5_K] = {"q5_k", 256, 176},   [TSR_Q6_K] = {"q6_k", 256, 210},
    [TSR_IQ4_NL] = {"iq4_nl", 32, 18}, [TSR_BF16] = {"bf16", 1, 2},
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

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K or Q5_K block, from
 * its 12 packed bytes: sub-blocks 0..3 keep theirs in the low 6 bits of bytes
 * j (scale) and j + 4 (min); sub-blocks 4..7 have their low 4 bits in the two
 * nibbles of byte j + 4 and their top 2 bits in the top bits of bytes j - 4
 * (scale) and j (min). */
static void k_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* The 6-bit scale of sub-block j (0..15) of a Q3_K block, minus 32: the low
 * 4 bits are a nibble of bytes 0..7 (low nibbles for j < 8), the top 2 bits a
 * 2-bit field of bytes 8..11 (field j / 4 of byte 8 + j % 4). */
static int q3k_scale(const uint8_t *s, int j) {
    int lo = (s[j % 8] >> (4 * (j / 8))) & 0xf;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

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
    case TSR_IQ4_NL: { /* {f16 d; u8 qs[16]}: x = d*kv[q]; nibbles placed as Q4_0's */
        static const int8_t kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                      1,    13,   25,  38,  53,  69,  89,  113};
        for (size_t b = 0; b < n / 32; b++, p += 18, dst += 32) {
            float d = tsr_f16_to_f32(rd16(p));
            for (int j = 0; j < 16; j++) {
                dst[j] = d * (float)kv[p[2 + j] & 0xf];
                dst[j + 16] = d * (float)kv[p[2 + j] >> 4];
            }
        }
        return;
    }
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
    case TSR_Q2_K: /* {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin} per 256 */
        /* Element 128*h + 32*s + l (h < 2, s < 4, l < 32) is bits 2s..2s+1 of
         * qs[32h + l]; its 16-element group g = e / 16 has scale d*(scales[g]
         * & 15) and min dmin*(scales[g] >> 4): x = scale*q - min. */
        for (size_t b = 0; b < n / 256; b++, p += 84, dst += 256) {
            const uint8_t *sc = p, *qs = p + 16;
            float d = tsr_f16_to_f32(rd16(p + 80)), dmin = tsr_f16_to_f32(rd16(p + 82));
            for (int e = 0; e < 256; e++) {
                int h = e / 128, s = (e % 128) / 32, l = e % 32;
                int q = (qs[32 * h + l] >> (2 * s)) & 3;
                float dl = d * (float)(sc[e / 16] & 0xf), ml = dmin * (float)(sc[e / 16] >> 4);
                float prod = dl * (float)q; /* rounded on its own, as in ggml */
                dst[e] = prod - ml;
            }
        }
        return;
    case TSR_Q3_K: /* {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d} per 256 */
        /* Low 2 bits as Q2_K's; the third is bit e / 32 of hmask[e % 32], and a
         * clear bit subtracts 4: x = d*(scale - 32)*q, q in -4..3. */
        for (size_t b = 0; b < n / 256; b++, p += 110, dst += 256) {
            const uint8_t *hm = p, *qs = p + 32, *sc = p + 96;
            float d = tsr_f16_to_f32(rd16(p + 108));
            for (int e = 0; e < 256; e++) {
                int h = e / 128, s = (e % 128) / 32, l = e % 32;
                int q = ((qs[32 * h + l] >> (2 * s)) & 3) - (((hm[l] >> (e / 32)) & 1) ? 0 : 4);
                float dl = d * (float)q3k_scale(sc, e / 16);
                dst[e] = dl * (float)q;
            }
        }
        return;
    case TSR_Q4_K:   /* {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]} per 256 */
    case TSR_Q5_K: { /* {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} */
        /* Element 64*c + 32*k + l (c < 4, k < 2, l < 32) is nibble k of
         * qs[32c + l], plus (Q5_K) bit 2c+k of qh[l] as its fifth bit; its
         * 32-element group j = e / 32 has 6-bit scale and min (k_scale_min):
         * x = d*scale*q - dmin*min. */
        int five = t == TSR_Q5_K;
        size_t bb = five ? 176 : 144;
        for (size_t b = 0; b < n / 256; b++, p += bb, dst += 256) {
            const uint8_t *qh = p + 16, *qs = p + (five ? 48 : 16);
            float d = tsr_f16_to_f32(rd16(p)), dmin = tsr_f16_to_f32(rd16(p + 2));
            for (int j = 0; j < 8; j++) {
                int sc, m;
                k_scale_min(p + 4, j, &sc, &m);
                float dl = d * (float)sc, ml = dmin * (float)m;
                for (int l = 0; l < 32; l++) {
                    int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xf;
                    if (five)
                        q |= ((qh[l] >> j) & 1) << 4;
                    float prod = dl * (float)q;
                    dst[32 * j + l] = prod - ml;
                }
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

static void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

int tsr_quantize(int t, const float *src, void *dst, size_t n) {
    uint8_t *p = dst;
    if (n % 32 || (t != TSR_Q8_0 && t != TSR_Q4_0))
        return 0;
    for (size_t b = 0; b < n / 32; b++, src += 32) {
        float amax = 0, max = 0; /* the largest magnitude, and that value with its sign */
        for (int j = 0; j < 32; j++)
            if (fabsf(src[j]) > amax) {
                amax = fabsf(src[j]);
                max = src[j];
            }
        if (t == TSR_Q8_0) {
            const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
            wr16(p, tsr_f32_to_f16(d));
            for (int j = 0; j < 32; j++)
                p[2 + j] = (uint8_t)(int8_t)roundf(src[j] * id);
            p += 34;
        } else {
            const float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
            wr16(p, tsr_f32_to_f16(d));
            for (int j = 0; j < 16; j++) {
                const int8_t lo = (int8_t)(src[j] * id + 8.5f);
                const int8_t hi = (int8_t)(src[j + 16] * id + 8.5f);
                p[2 + j] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
            }
            p += 18;
        }
    }
    return 1;
}
