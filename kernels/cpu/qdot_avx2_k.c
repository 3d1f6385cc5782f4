/* kernels/cpu/qdot_avx2_k.c - the AVX2+FMA+F16C dot kernels of the K-quants
 * (Q2_K .. Q6_K) against tsr_q8k activations; compiled with -mavx2 -mfma
 * -mf16c and only called once cpuid says the CPU has them (qdot.c).
 *
 * The weights' quants are unpacked to unsigned bytes (0..63) in the order of
 * the activations, so _mm256_maddubs_epi16(quants, activations) gives int16
 * pairs of products (at most 2 * 63 * 127, no saturation), and
 * _mm256_madd_epi16 with the groups' scales turns them into int32. As in the
 * reference (qdot_ref_k.c), mins and constant offsets (Q6_K's -32, Q3_K's
 * -4) come from the activations' bsums, and each super-block's integer sums
 * enter the f32 accumulators once; results differ from the reference only by
 * the order of f32 additions.
 *
 * Not here: the 32-wide formats (qdot_avx2.c). */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/qdot.h"

static inline float f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* The f16 pair (d, dmin) at p times the activations' scale, in lanes 0 and 1 */
static inline __m128 f16x2(const uint8_t *p, float da) {
    uint32_t u;
    memcpy(&u, p, 4);
    return _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)u)), _mm_set1_ps(da));
}

static inline __m256i load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline __m128i load128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* For formats with a scale per 16 elements: `sc` holds the 16 scales as
 * int16, scale16(sc, h, k) the scales of the 32 elements 128h + 32k ..
 * 128h + 32k + 31 in the layout of maddubs' output (8 lanes of group
 * 8h + 2k, then 8 of group 8h + 2k + 1). */
static inline __m256i scale16(__m256i sc, int h, int k) {
    const __m256i half =
        h ? _mm256_permute2x128_si256(sc, sc, 0x11) : _mm256_permute2x128_si256(sc, sc, 0x00);
    const __m256i pick = _mm256_setr_m128i(_mm_set1_epi16((short)(0x0100 + 0x0404 * k)),
                                           _mm_set1_epi16((short)(0x0302 + 0x0404 * k)));
    return _mm256_shuffle_epi8(half, pick);
}

/* For formats with a scale per 32 elements: `sc` holds the 8 scales as
 * int16 in both lanes, scale32(sc, j) scale j in every lane. */
static inline __m256i scale32(__m256i sc, int j) {
    return _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)(0x0100 + 0x0202 * j)));
}

/* sum over 32 elements of q * a, scaled: 8 int32 */
static inline __m256i dot32(__m256i q, const int8_t *a, __m256i scale) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, load256(a)), scale);
}

static float dot_q2_k(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8k *a = act;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m15 = _mm_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int b = 0; b < n / TSR_QKK; b++, p += 84) {
        const __m128i sc8 = load128(p);
        const __m256i sc = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, m15));
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), m15));
        const __m256i msum = _mm256_madd_epi16(mins, load256(a[b].bsums));
        __m256i isum = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256i q2 = load256(p + 16 + 32 * h);
#pragma GCC unroll 4
            for (int s = 0; s < 4; s++) {
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(q2, 2 * s), m3);
                isum =
                    _mm256_add_epi32(isum, dot32(q, a[b].qs + 128 * h + 32 * s, scale16(sc, h, s)));
            }
        }
        const __m128 ds = f16x2(p + 80, a[b].d);
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(ds), _mm256_cvtepi32_ps(isum), acc);
        accm = _mm256_fnmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(ds)),
                                _mm256_cvtepi32_ps(msum), accm);
    }
    return hsum(_mm256_add_ps(acc, accm));
}

/* The 16 scales of a Q3_K block (6 bits, minus 32) as int8, from its 12
 * packed bytes (layout: q3k_scales in qdot_ref_k.c); loads only those 12
 * bytes. */
static inline __m128i q3k_scales(const uint8_t *s) {
    uint32_t hi;
    memcpy(&hi, s + 8, 4);
    const __m128i m15 = _mm_set1_epi8(15), lo8 = _mm_loadl_epi64((const __m128i *)s);
    /* low 4 bits: the nibbles of bytes 0..7, low ones first */
    const __m128i lo =
        _mm_unpacklo_epi64(_mm_and_si128(lo8, m15), _mm_and_si128(_mm_srli_epi16(lo8, 4), m15));
    /* top 2 bits of scale g: field g / 4 of byte 8 + g % 4 */
    const __m128i f = _mm_srlv_epi32(_mm_set1_epi32((int)hi), _mm_setr_epi32(0, 2, 4, 6));
    const __m128i top = _mm_and_si128(_mm_slli_epi32(f, 4), _mm_set1_epi8(0x30));
    return _mm_sub_epi8(_mm_or_si128(lo, top), _mm_set1_epi8(32));
}

/* bit i of each byte of hm moved to bit `to`, the other bits clear */
static inline __m256i bit_to(__m256i hm, int i, int to, __m256i mask) {
    if (i < to)
        return _mm256_and_si256(_mm256_slli_epi16(hm, to - i), mask);
    return _mm256_and_si256(_mm256_srli_epi16(hm, i - to), mask);
}

static float dot_q3_k(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8k *a = act;
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / TSR_QKK; b++, p += 110) {
        const __m256i sc = _mm256_cvtepi8_epi16(q3k_scales(p + 96));
        const __m256i hm = load256(p);
        /* q = q' - 4: sum scale * 4 * a over each group from the bsums */
        __m256i isum =
            _mm256_sub_epi32(_mm256_setzero_si256(),
                             _mm256_slli_epi32(_mm256_madd_epi16(sc, load256(a[b].bsums)), 2));
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256i q2 = load256(p + 32 + 32 * h);
#pragma GCC unroll 4
            for (int s = 0; s < 4; s++) {
                const __m256i q =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q2, 2 * s), m3),
                                    bit_to(hm, 4 * h + s, 2, m4));
                isum =
                    _mm256_add_epi32(isum, dot32(q, a[b].qs + 128 * h + 32 * s, scale16(sc, h, s)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(p + 108) * a[b].d), _mm256_cvtepi32_ps(isum), acc);
    }
    return hsum(acc);
}

/* The 8 scales then the 8 mins of a Q4_K or Q5_K block (6 bits each) as
 * bytes, from its 12 packed bytes (layout: k_scales_mins in qdot_ref_k.c);
 * loads only those 12 bytes. In 32-bit words s0, s1, s2 of the packed bytes:
 * scales 0..3 = s0 & 63, mins 0..3 = s1 & 63 (bytewise), scales 4..7 = (s2 &
 * 15) | (s0 >> 6) << 4, mins 4..7 = (s2 >> 4 & 15) | (s1 >> 6) << 4. */
static inline __m128i k_scales_mins(const uint8_t *s) {
    uint32_t s2;
    memcpy(&s2, s + 8, 4);
    const __m128i x = _mm_insert_epi32(_mm_loadl_epi64((const __m128i *)s), (int)s2, 2);
    const __m128i low = _mm_srlv_epi32(_mm_shuffle_epi32(x, _MM_SHUFFLE(2, 1, 2, 0)),
                                       _mm_setr_epi32(0, 0, 0, 4)); /* s0, s2, s1, s2 >> 4 */
    const __m128i top = _mm_srli_epi32(_mm_shuffle_epi32(x, _MM_SHUFFLE(1, 1, 0, 0)), 2);
    return _mm_or_si128(
        _mm_and_si128(low, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f)),
        _mm_and_si128(top, _mm_setr_epi32(0, 0x30303030, 0, 0x30303030)));
}

static inline float dot_q45_k(int n, const uint8_t *p, const tsr_q8k *a, int five) {
    const int bytes = five ? 176 : 144;
    const __m256i m15 = _mm256_set1_epi8(15), m16 = _mm256_set1_epi8(16);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int b = 0; b < n / TSR_QKK; b++, p += bytes) {
        const __m128i sm = k_scales_mins(p + 4);
        const __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        /* min j times bsums 2j and 2j + 1 */
        const __m256i mins2 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
            sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
        const __m256i msum = _mm256_madd_epi16(mins2, load256(a[b].bsums));
        const uint8_t *qs = p + (five ? 48 : 16);
        const __m256i qh = five ? load256(p + 16) : _mm256_setzero_si256();
        __m256i isum = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i q4 = load256(qs + 32 * c);
            __m256i lo = _mm256_and_si256(q4, m15);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m15);
            if (five) {
                lo = _mm256_or_si256(lo, bit_to(qh, 2 * c, 4, m16));
                hi = _mm256_or_si256(hi, bit_to(qh, 2 * c + 1, 4, m16));
            }
            isum = _mm256_add_epi32(isum, dot32(lo, a[b].qs + 64 * c, scale32(sc, 2 * c)));
            isum = _mm256_add_epi32(isum, dot32(hi, a[b].qs + 64 * c + 32, scale32(sc, 2 * c + 1)));
        }
        const __m128 ds = f16x2(p, a[b].d);
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(ds), _mm256_cvtepi32_ps(isum), acc);
        accm = _mm256_fnmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(ds)),
                                _mm256_cvtepi32_ps(msum), accm);
    }
    return hsum(_mm256_add_ps(acc, accm));
}

static float dot_q4_k(int n, const void *w, const void *a) { return dot_q45_k(n, w, a, 0); }
static float dot_q5_k(int n, const void *w, const void *a) { return dot_q45_k(n, w, a, 1); }

static float dot_q6_k(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8k *a = act;
    const __m256i m15 = _mm256_set1_epi8(15), m48 = _mm256_set1_epi8(48);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / TSR_QKK; b++, p += 210) {
        const __m256i sc = _mm256_cvtepi8_epi16(load128(p + 192));
        /* q = q' - 32: sum scale * 32 * a over each group from the bsums */
        __m256i isum =
            _mm256_sub_epi32(_mm256_setzero_si256(),
                             _mm256_slli_epi32(_mm256_madd_epi16(sc, load256(a[b].bsums)), 5));
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256i ql0 = load256(p + 64 * h), ql1 = load256(p + 64 * h + 32);
            const __m256i qh = load256(p + 128 + 32 * h);
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(ql0, m15),
                                _mm256_and_si256(_mm256_slli_epi16(qh, 4), m48)),
                _mm256_or_si256(_mm256_and_si256(ql1, m15),
                                _mm256_and_si256(_mm256_slli_epi16(qh, 2), m48)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m15),
                                _mm256_and_si256(qh, m48)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), m48)),
            };
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++)
                isum = _mm256_add_epi32(isum,
                                        dot32(q[k], a[b].qs + 128 * h + 32 * k, scale16(sc, h, k)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(p + 208) * a[b].d), _mm256_cvtepi32_ps(isum), acc);
    }
    return hsum(acc);
}

#define K(fn)                                                                                      \
    { fn, TSR_ACT_Q8K, TSR_ISA_AVX2 }
static const tsr_qkernel k_q2_k = K(dot_q2_k), k_q3_k = K(dot_q3_k), k_q4_k = K(dot_q4_k),
                         k_q5_k = K(dot_q5_k), k_q6_k = K(dot_q6_k);
#undef K

const tsr_qkernel *tsr_qkernels_avx2_k(tsr_dtype t) {
    switch (t) {
    case TSR_Q2_K: return &k_q2_k;
    case TSR_Q3_K: return &k_q3_k;
    case TSR_Q4_K: return &k_q4_k;
    case TSR_Q5_K: return &k_q5_k;
    case TSR_Q6_K: return &k_q6_k;
    default: return NULL;
    }
}
