/* kernels/cpu/qdot_ref.c - the plain C dot kernels: the reference every
 * vectorised kernel is tested against, and the fallback on CPUs without
 * AVX2. Integer sums per block, then one f32 multiply-add per block, in the
 * same order as the vectorised kernels' scalar tails so results agree to
 * rounding. Block layouts: kernels/dtype.c. */
#include <string.h>

#include "kernels/cpu/qdot.h"

static inline float f16(const uint8_t *p) { return tsr_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static inline uint32_t u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* sum over the block of q[j] * a[j] for 4-bit q: low nibbles are elements
 * 0..15, high nibbles 16..31 */
static inline int dot_nibbles(const uint8_t *qs, const int8_t *a) {
    int s = 0;
    for (int j = 0; j < 16; j++)
        s += (qs[j] & 0xf) * a[j] + (qs[j] >> 4) * a[j + 16];
    return s;
}

static float dot_q8_0(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8a *a = act;
    float sum = 0;
    for (int b = 0; b < n / TSR_QK; b++, p += 34) {
        const int8_t *q = (const int8_t *)(p + 2);
        int s = 0;
        for (int j = 0; j < 32; j++)
            s += q[j] * a[b].qs[j];
        sum += f16(p) * a[b].d * (float)s;
    }
    return sum;
}

/* x = d * (q - 8): sum x * a = d * (da * sum q a - 8 * s) */
static float dot_q4_0(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8a *a = act;
    float sum = 0;
    for (int b = 0; b < n / TSR_QK; b++, p += 18)
        sum += f16(p) * (a[b].d * (float)dot_nibbles(p + 2, a[b].qs) - 8.0f * a[b].s);
    return sum;
}

/* x = d * q + m: sum x * a = d * da * sum q a + m * s */
static float dot_q4_1(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8a *a = act;
    float sum = 0;
    for (int b = 0; b < n / TSR_QK; b++, p += 20)
        sum += f16(p) * a[b].d * (float)dot_nibbles(p + 4, a[b].qs) + f16(p + 2) * a[b].s;
    return sum;
}

/* sum q a for 5-bit q: nibbles as dot_nibbles, bit j of qh the fifth bit of element j */
static inline int dot_5bit(const uint8_t *qs, uint32_t qh, const int8_t *a) {
    int s = 0;
    for (int j = 0; j < 16; j++) {
        const int lo = (qs[j] & 0xf) | (int)((qh >> j) & 1) << 4;
        const int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        s += lo * a[j] + hi * a[j + 16];
    }
    return s;
}

static float dot_q5_0(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8a *a = act;
    float sum = 0;
    for (int b = 0; b < n / TSR_QK; b++, p += 22)
        sum += f16(p) * (a[b].d * (float)dot_5bit(p + 6, u32le(p + 2), a[b].qs) - 16.0f * a[b].s);
    return sum;
}

static float dot_q5_1(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8a *a = act;
    float sum = 0;
    for (int b = 0; b < n / TSR_QK; b++, p += 24)
        sum +=
            f16(p) * a[b].d * (float)dot_5bit(p + 8, u32le(p + 4), a[b].qs) + f16(p + 2) * a[b].s;
    return sum;
}

static const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

static float dot_iq4_nl(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8a *a = act;
    float sum = 0;
    for (int b = 0; b < n / TSR_QK; b++, p += 18) {
        const uint8_t *qs = p + 2;
        int s = 0;
        for (int j = 0; j < 16; j++)
            s +=
                iq4nl_values[qs[j] & 0xf] * a[b].qs[j] + iq4nl_values[qs[j] >> 4] * a[b].qs[j + 16];
        sum += f16(p) * a[b].d * (float)s;
    }
    return sum;
}

#define K(fn, kind)                                                                                \
    { .dot = fn, .act = kind, .isa = TSR_ISA_REF }
static const tsr_qkernel k_q8_0 = K(dot_q8_0, TSR_ACT_Q8A), k_q4_0 = K(dot_q4_0, TSR_ACT_Q8A),
                         k_q4_1 = K(dot_q4_1, TSR_ACT_Q8A), k_q5_0 = K(dot_q5_0, TSR_ACT_Q8A),
                         k_q5_1 = K(dot_q5_1, TSR_ACT_Q8A), k_iq4_nl = K(dot_iq4_nl, TSR_ACT_Q8A);
#undef K

const tsr_qkernel *tsr_qkernels_ref(tsr_dtype t) {
    switch (t) {
    case TSR_Q8_0: return &k_q8_0;
    case TSR_Q4_0: return &k_q4_0;
    case TSR_Q4_1: return &k_q4_1;
    case TSR_Q5_0: return &k_q5_0;
    case TSR_Q5_1: return &k_q5_1;
    case TSR_IQ4_NL: return &k_iq4_nl;
    default: return tsr_qkernels_ref_k(t);
    }
}
