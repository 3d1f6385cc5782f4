/* kernels/cpu/qdot_ref_k.c - the plain C dot kernels of the K-quants (Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K) against tsr_q8k activations: the reference the
 * vectorised kernels are tested against, and the fallback on CPUs without
 * AVX2. Block layouts and their exact dequantization: kernels/dtype.c.
 *
 * Every kernel sums exact integers per super-block: isum, the weights'
 * unsigned quants times the activations, each group weighted by its scale,
 * and msum, the groups' mins (or constant offsets) times the activations'
 * bsums; then one f32 step per super-block:
 *     sum += d * da * isum - dmin * da * msum
 * (Q3_K and Q6_K, whose offsets share d, subtract in integers first:
 * d * da * (isum - msum)).
 * Offsets are folded into msum so that quants stay unsigned, as the
 * vectorised kernels need them: Q6_K's q - 32 is q' - 32 with q' in 0..63,
 * Q3_K's q (the hmask bit clear subtracts 4) is q' - 4 with q' in 0..7.
 *
 * Not here: the 32-wide formats (qdot_ref.c), vectorised kernels
 * (qdot_<isa>_k.c). */
#include "kernels/cpu/qdot.h"

static inline float f16(const uint8_t *p) { return tsr_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

/* sum over 16 elements of the unsigned quants q[j] and the activations a[j] */
static inline int dot16(const uint8_t *q, const int8_t *a) {
    int s = 0;
    for (int j = 0; j < 16; j++)
        s += q[j] * a[j];
    return s;
}

/* Q2_K {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin}: element 128h + 32s + l
 * is bits 2s..2s+1 of qs[32h + l]; 16-element group g has scale
 * scales[g] & 15 and min scales[g] >> 4. */
static float dot_q2_k(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8k *a = act;
    float sum = 0;
    for (int b = 0; b < n / TSR_QKK; b++, p += 84) {
        const uint8_t *sc = p, *qs = p + 16;
        uint8_t q[TSR_QKK];
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int l = 0; l < 32; l++)
                    q[128 * h + 32 * s + l] = (qs[32 * h + l] >> (2 * s)) & 3;
        int isum = 0, msum = 0;
        for (int g = 0; g < 16; g++) {
            isum += (sc[g] & 15) * dot16(q + 16 * g, a[b].qs + 16 * g);
            msum += (sc[g] >> 4) * a[b].bsums[g];
        }
        sum += f16(p + 80) * a[b].d * (float)isum - f16(p + 82) * a[b].d * (float)msum;
    }
    return sum;
}

/* The 16 scales of a Q3_K block (6 bits each, minus 32) from its 12 packed
 * bytes: the low 4 bits of scale g are nibble g / 8 of byte g % 8, the top 2
 * bits are field g / 4 of byte 8 + g % 4. */
static void q3k_scales(const uint8_t *s, int sc[16]) {
    for (int g = 0; g < 16; g++) {
        const int lo = (s[g % 8] >> (4 * (g / 8))) & 0xf;
        const int hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        sc[g] = (lo | hi << 4) - 32;
    }
}

/* Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}: low 2 bits as Q2_K's,
 * the third bit e / 32 of hmask[e % 32]; x = d * scale * (q' - 4) with
 * q' = low | bit << 2. */
static float dot_q3_k(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8k *a = act;
    float sum = 0;
    for (int b = 0; b < n / TSR_QKK; b++, p += 110) {
        const uint8_t *hm = p, *qs = p + 32;
        int sc[16];
        q3k_scales(p + 96, sc);
        uint8_t q[TSR_QKK];
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int l = 0; l < 32; l++)
                    q[128 * h + 32 * s + l] = (uint8_t)(((qs[32 * h + l] >> (2 * s)) & 3) |
                                                        ((hm[l] >> (4 * h + s)) & 1) << 2);
        int isum = 0, msum = 0;
        for (int g = 0; g < 16; g++) {
            isum += sc[g] * dot16(q + 16 * g, a[b].qs + 16 * g);
            msum += 4 * sc[g] * a[b].bsums[g];
        }
        sum += f16(p + 108) * a[b].d * (float)(isum - msum);
    }
    return sum;
}

/* The 6-bit scales and mins of the 8 sub-blocks of a Q4_K or Q5_K block
 * from its 12 packed bytes: sub-blocks 0..3 keep theirs in the low 6 bits of
 * bytes j (scale) and j + 4 (min); 4..7 have their low 4 bits in the nibbles
 * of byte j + 4 and their top 2 bits in the top bits of bytes j - 4 (scale)
 * and j (min). */
static void k_scales_mins(const uint8_t *s, int sc[8], int m[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0xf) | (s[j] >> 6) << 4;
        m[j + 4] = (s[j + 8] >> 4) | (s[j + 4] >> 6) << 4;
    }
}

/* Q4_K {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]} and Q5_K {f16 d; f16
 * dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: element 64c + 32k + l is
 * nibble k of qs[32c + l], plus (Q5_K) bit 2c + k of qh[l] as its fifth
 * bit; 32-element sub-block j has a scale and a min. */
static inline float dot_q45_k(int n, const uint8_t *p, const tsr_q8k *a, int five) {
    const int bytes = five ? 176 : 144;
    float sum = 0;
    for (int b = 0; b < n / TSR_QKK; b++, p += bytes) {
        const uint8_t *qh = p + 16, *qs = p + (five ? 48 : 16);
        int sc[8], m[8];
        k_scales_mins(p + 4, sc, m);
        uint8_t q[TSR_QKK];
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                q[64 * c + l] = qs[32 * c + l] & 0xf;
                q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
            }
        if (five)
            for (int j = 0; j < 8; j++)
                for (int l = 0; l < 32; l++)
                    q[32 * j + l] |= ((qh[l] >> j) & 1) << 4;
        int isum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            isum += sc[j] * (dot16(q + 32 * j, a[b].qs + 32 * j) +
                             dot16(q + 32 * j + 16, a[b].qs + 32 * j + 16));
            msum += m[j] * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
        }
        sum += f16(p) * a[b].d * (float)isum - f16(p + 2) * a[b].d * (float)msum;
    }
    return sum;
}

static float dot_q4_k(int n, const void *w, const void *a) { return dot_q45_k(n, w, a, 0); }
static float dot_q5_k(int n, const void *w, const void *a) { return dot_q45_k(n, w, a, 1); }

/* Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: element 128h + 32k + l
 * has its low 4 bits in nibble k / 2 of ql[64h + 32(k % 2) + l] and its top
 * 2 bits in bits 2k..2k+1 of qh[32h + l]; x = d * scales[e / 16] * (q' - 32). */
static float dot_q6_k(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8k *a = act;
    float sum = 0;
    for (int b = 0; b < n / TSR_QKK; b++, p += 210) {
        const uint8_t *ql = p, *qh = p + 128;
        const int8_t *sc = (const int8_t *)(p + 192);
        uint8_t q[TSR_QKK];
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++)
                    q[128 * h + 32 * k + l] =
                        (uint8_t)(((ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xf) |
                                  ((qh[32 * h + l] >> (2 * k)) & 3) << 4);
        int isum = 0, msum = 0;
        for (int g = 0; g < 16; g++) {
            isum += sc[g] * dot16(q + 16 * g, a[b].qs + 16 * g);
            msum += 32 * sc[g] * a[b].bsums[g];
        }
        sum += f16(p + 208) * a[b].d * (float)(isum - msum);
    }
    return sum;
}

#define K(fn)                                                                                      \
    { .dot = fn, .act = TSR_ACT_Q8K, .isa = TSR_ISA_REF }
static const tsr_qkernel k_q2_k = K(dot_q2_k), k_q3_k = K(dot_q3_k), k_q4_k = K(dot_q4_k),
                         k_q5_k = K(dot_q5_k), k_q6_k = K(dot_q6_k);
#undef K

const tsr_qkernel *tsr_qkernels_ref_k(tsr_dtype t) {
    switch (t) {
    case TSR_Q2_K: return &k_q2_k;
    case TSR_Q3_K: return &k_q3_k;
    case TSR_Q4_K: return &k_q4_k;
    case TSR_Q5_K: return &k_q5_k;
    case TSR_Q6_K: return &k_q6_k;
    default: return NULL;
    }
}
