/* kernels/cpu/qdot.c - CPU feature detection, the choice of dot kernel per
 * weight format and instruction-set level, and the activation quantizers. */
#include "kernels/cpu/qdot.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define TSR_X86 1
#endif

#ifdef TSR_X86
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

static unsigned detect(void) {
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1,
              f16c = (c >> 29) & 1;
    if (!osxsave || !avx)
        return 0;
    const uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* the OS does not save YMM state */
        return 0;
    const int zmm = (xcr0 & 0xe0) == 0xe0;
    if (fma)
        f |= TSR_CPU_FMA;
    if (f16c)
        f |= TSR_CPU_F16C;
    if (__get_cpuid_max(0, NULL) < 7)
        return f;
    __cpuid_count(7, 0, a, b, c, d);
    if ((b >> 5) & 1)
        f |= TSR_CPU_AVX2;
    if (zmm) {
        if ((b >> 16) & 1)
            f |= TSR_CPU_AVX512F;
        if ((b >> 30) & 1)
            f |= TSR_CPU_AVX512BW;
        if ((b >> 31) & 1)
            f |= TSR_CPU_AVX512VL;
        if ((c >> 11) & 1)
            f |= TSR_CPU_AVX512VNNI;
    }
    if ((d >> 25) & 1 && (xcr0 & 0x60000) == 0x60000)
        f |= TSR_CPU_AMX_INT8;
    const unsigned max_sub = a;
    if (max_sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        if ((a >> 4) & 1)
            f |= TSR_CPU_AVXVNNI;
        if (zmm && (a >> 5) & 1)
            f |= TSR_CPU_AVX512BF16;
    }
    return f;
}
#else
static unsigned detect(void) { return 0; }
#endif

unsigned tsr_cpu_features(void) {
    static int done;
    static unsigned f;
    if (!done) { /* idempotent: a race computes the same value twice */
        f = detect();
        done = 1;
    }
    return f;
}

static const char *const isa_names[TSR_ISA_COUNT] = {"ref", "avx2", "avxvnni", "avx512"};

const char *tsr_isa_name(tsr_isa isa) {
    return (unsigned)isa < TSR_ISA_COUNT ? isa_names[isa] : "?";
}

int tsr_isa_supported(tsr_isa isa) {
    const unsigned f = tsr_cpu_features();
    const unsigned avx2 = TSR_CPU_AVX2 | TSR_CPU_FMA | TSR_CPU_F16C;
    const unsigned avx512 =
        avx2 | TSR_CPU_AVX512F | TSR_CPU_AVX512BW | TSR_CPU_AVX512VL | TSR_CPU_AVX512VNNI;
    switch (isa) {
    case TSR_ISA_REF: return 1;
    case TSR_ISA_AVX2: return (f & avx2) == avx2;
    case TSR_ISA_AVXVNNI: return (f & (avx2 | TSR_CPU_AVXVNNI)) == (avx2 | TSR_CPU_AVXVNNI);
    case TSR_ISA_AVX512: return (f & avx512) == avx512;
    default: return 0;
    }
}

tsr_isa tsr_isa_best(void) {
    static int done;
    static tsr_isa best;
    if (done)
        return best;
    tsr_isa cap = TSR_ISA_COUNT - 1;
    const char *env = getenv("TSR_CPU_ISA");
    if (env && *env) {
        int k = 0;
        while (k < TSR_ISA_COUNT && strcmp(env, isa_names[k]) != 0)
            k++;
        if (k < TSR_ISA_COUNT)
            cap = (tsr_isa)k;
        else
            fprintf(stderr,
                    "tessera: TSR_CPU_ISA=%s is not one of ref, avx2, avxvnni, avx512; "
                    "ignored\n",
                    env);
    }
    best = TSR_ISA_REF;
    for (int k = 1; k <= (int)cap; k++)
        if (tsr_isa_supported((tsr_isa)k))
            best = (tsr_isa)k;
    done = 1;
    return best;
}

const tsr_qkernel *tsr_qkernel_exact(tsr_dtype t, tsr_isa isa) {
    switch (isa) {
    case TSR_ISA_REF: return tsr_qkernels_ref(t);
    case TSR_ISA_AVX2: return tsr_qkernels_avx2(t);
    case TSR_ISA_AVXVNNI: return tsr_qkernels_avxvnni(t);
    case TSR_ISA_AVX512: return tsr_qkernels_avx512(t);
    default: return NULL;
    }
}

const tsr_qkernel *tsr_qkernel_get(tsr_dtype t, tsr_isa isa) {
    for (int k = (int)isa; k >= 0; k--) {
        /* AVX-VNNI is not a step below AVX-512: a CPU with AVX-512 VNNI
         * need not have AVX-VNNI (Ice Lake, Zen 4) */
        if (k == TSR_ISA_AVXVNNI && !tsr_isa_supported(TSR_ISA_AVXVNNI))
            continue;
        const tsr_qkernel *q = tsr_qkernel_exact(t, (tsr_isa)k);
        if (q)
            return q;
    }
    return NULL;
}

/* ---- activation quantizers ---------------------------------------------------------- */

size_t tsr_act_row_bytes(tsr_act_kind k, int n) {
    return k == TSR_ACT_Q8K ? (size_t)(n / TSR_QKK) * sizeof(tsr_q8k)
                            : (size_t)(n / TSR_QK) * sizeof(tsr_q8a);
}

/* d = max|x| / 127 and q = rint(x / d) (ties to even, as NumPy's rint);
 * a block of zeros gets d = 0 and q = 0. A block holding a NaN or an
 * infinity gets d = NaN and q = 0, so every product with it is NaN: a broken
 * activation shows in the result instead of turning into finite garbage. */
static float block_scale(const float *x, int n, float *inv) {
    float amax = 0;
    for (int i = 0; i < n; i++) {
        const float a = fabsf(x[i]);
        amax = a > amax || a != a ? a : amax; /* a NaN sticks */
    }
    if (!(amax <= FLT_MAX)) {
        *inv = 0.0f;
        return NAN;
    }
    const float d = amax / 127.0f;
    *inv = d > 0 ? 1.0f / d : 0.0f;
    if (!(*inv <= FLT_MAX)) { /* max |x| under ~2^-120: 1 / d overflows; a zero block */
        *inv = 0.0f;
        return 0.0f;
    }
    return d;
}

static void quantize_q8a(const float *x, tsr_q8a *out, int n) {
    for (int b = 0; b < n / TSR_QK; b++, x += TSR_QK) {
        float inv;
        const float d = block_scale(x, TSR_QK, &inv);
        const int ok = d == d; /* else q = 0, d NaN */
        int sum = 0;
        for (int i = 0; i < TSR_QK; i++) {
            const int q = ok ? (int)rintf(x[i] * inv) : 0;
            out[b].qs[i] = (int8_t)q;
            sum += q;
        }
        out[b].d = d;
        out[b].s = d * (float)sum;
    }
}

static void quantize_q8k(const float *x, tsr_q8k *out, int n) {
    for (int b = 0; b < n / TSR_QKK; b++, x += TSR_QKK) {
        float inv;
        out[b].d = block_scale(x, TSR_QKK, &inv);
        const int ok = out[b].d == out[b].d; /* else q = 0, d NaN */
        for (int g = 0; g < TSR_QKK / 16; g++) {
            int sum = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) {
                const int q = ok ? (int)rintf(x[i] * inv) : 0;
                out[b].qs[i] = (int8_t)q;
                sum += q;
            }
            out[b].bsums[g] = (int16_t)sum;
        }
    }
}

void tsr_quantize_act(tsr_act_kind k, const float *x, void *out, int n) {
    if (tsr_isa_best() >= TSR_ISA_AVX2 && tsr_quantize_act_avx2(k, x, out, n))
        return;
    tsr_quantize_act_ref(k, x, out, n);
}

void tsr_quantize_act_ref(tsr_act_kind k, const float *x, void *out, int n) {
    if (k == TSR_ACT_Q8K)
        quantize_q8k(x, out, n);
    else
        quantize_q8a(x, out, n);
}

void tsr_dequantize_act(tsr_act_kind k, const void *a, float *x, int n) {
    if (k == TSR_ACT_Q8K) {
        const tsr_q8k *b = a;
        for (int i = 0; i < n; i++)
            x[i] = b[i / TSR_QKK].d * (float)b[i / TSR_QKK].qs[i % TSR_QKK];
    } else {
        const tsr_q8a *b = a;
        for (int i = 0; i < n; i++)
            x[i] = b[i / TSR_QK].d * (float)b[i / TSR_QK].qs[i % TSR_QK];
    }
}
