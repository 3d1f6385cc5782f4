/* kernels/cpu/qdot_avx512_k.c - the AVX-512 level's dot kernels of the
 * K-quants (Q2_K .. Q6_K) against tsr_q8k activations; compiled with -mavx512f
 * -mavx512bw -mavx512vl -mavx512vnni and only called once cpuid says the CPU
 * has them (qdot.c).
 *
 * They work on 256-bit vectors (the VL forms of VNNI and the BW mask ops):
 * on Zen 4, whose 512-bit ops cost two 256-bit ones, 512-bit versions of
 * these kernels were no faster than the AVX2 ones, as interleaving the
 * weights' nibbles and bit planes with the activations takes cross-lane
 * shuffles that 256 bits avoid.
 *
 * The weights' quants are unpacked to unsigned bytes (0..63) in the order of
 * the activations; _mm256_dpbusd_epi32 sums 4 products per int32 lane (at
 * most 4 * 63 * 127, so each fits in int16); the sums of two 32-element
 * planes are packed to int16 (_mm256_packs_epi32, exact) and multiplied by
 * their groups' scales into the accumulator in one _mm256_dpwssd_epi32. As in
 * the reference (qdot_ref_k.c), mins and constant offsets (Q6_K's -32,
 * Q3_K's -4) come from the activations' bsums, and each super-block's
 * integer sums enter the f32 accumulators once; results differ from the
 * reference only by the order of f32 additions.
 *
 * Not here: the 32-wide formats (qdot_avx512.c). */
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

static inline float hsum8(__m256 v) {
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_movehdup_ps(t));
    return _mm_cvtss_f32(t);
}

/* dpbusd's int32 sums of two 32-element planes (dA, dB), packed to int16
 * and multiplied by their groups' scales into isum. `sc` holds int16 scales
 * in both 128-bit lanes; after packs, lane 0 holds lanes 0..3 of dA then of
 * dB, lane 1 lanes 4..7 of each: their scales are words w0 and w1 of `sc`
 * in lane 0, w2 and w3 in lane 1. */
static inline __m256i scale_packed(__m256i isum, __m256i dA, __m256i dB, __m256i sc, int w0, int w1,
                                   int w2, int w3) {
#define W(w) (char)(2 * (w)), (char)(2 * (w) + 1)
#define W4(w) W(w), W(w), W(w), W(w)
    const __m256i pick = _mm256_setr_epi8(W4(w0), W4(w1), W4(w2), W4(w3));
#undef W4
#undef W
    return _mm256_dpwssd_epi32(isum, _mm256_packs_epi32(dA, dB), _mm256_shuffle_epi8(sc, pick));
}

/* sum over 32 elements of q * a, 4 per int32 lane */
static inline __m256i dot32(__m256i q, const int8_t *a) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, load256(a));
}

/* For formats with a scale per 16 elements (Q2_K, Q3_K, Q6_K): plane k of
 * half h is elements 128h + 32k .. + 31, groups 8h + 2k and 8h + 2k + 1;
 * `sc` holds the 16 scales as int16, d[k] the planes' dpbusd sums. */
static inline __m256i scale_half(__m256i isum, const __m256i d[4], __m256i sc, int h) {
    const __m256i half =
        h ? _mm256_permute2x128_si256(sc, sc, 0x11) : _mm256_permute2x128_si256(sc, sc, 0x00);
    isum = scale_packed(isum, d[0], d[1], half, 0, 2, 1, 3);
    return scale_packed(isum, d[2], d[3], half, 4, 6, 5, 7);
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
            /* element 128h + 32s + l: bits 2s..2s+1 of qs[32h + l] */
            const __m256i q2 = load256(p + 16 + 32 * h);
            __m256i d[4];
#pragma GCC unroll 4
            for (int s = 0; s < 4; s++)
                d[s] = dot32(_mm256_and_si256(_mm256_srli_epi16(q2, 2 * s), m3),
                             a[b].qs + 128 * h + 32 * s);
            isum = scale_half(isum, d, sc, h);
        }
        const __m128 ds = f16x2(p + 80, a[b].d);
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(ds), _mm256_cvtepi32_ps(isum), acc);
        accm = _mm256_fnmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(ds)),
                                _mm256_cvtepi32_ps(msum), accm);
    }
    return hsum8(_mm256_add_ps(acc, accm));
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

static float dot_q3_k(int n, const void *w, const void *act) {
    const uint8_t *p = w;
    const tsr_q8k *a = act;
    const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
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
            /* element 128h + 32s + l: bits 2s..2s+1 of qs[32h + l], third
             * bit 4h + s of hmask[l] */
            const __m256i q2 = load256(p + 32 + 32 * h);
            __m256i d[4];
#pragma GCC unroll 4
            for (int s = 0; s < 4; s++) {
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(q2, 2 * s), m3);
                const __mmask32 hb =
                    _mm256_test_epi8_mask(hm, _mm256_set1_epi8((char)(1 << (4 * h + s))));
                d[s] = dot32(_mm256_mask_add_epi8(q, hb, q, four), a[b].qs + 128 * h + 32 * s);
            }
            isum = scale_half(isum, d, sc, h);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(p + 108) * a[b].d), _mm256_cvtepi32_ps(isum), acc);
    }
    return hsum8(acc);
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
    const __m256i m15 = _mm256_set1_epi8(15), sixteen = _mm256_set1_epi8(16);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int b = 0; b < n / TSR_QKK; b++, p += bytes) {
        const __m128i sm = k_scales_mins(p + 4);
        const __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        /* min j times bsums 2j and 2j + 1 */
        const __m128i mins2 = _mm_shuffle_epi8(
            sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15));
        const __m256i msum = _mm256_madd_epi16(_mm256_cvtepu8_epi16(mins2), load256(a[b].bsums));
        const uint8_t *qs = p + (five ? 48 : 16);
        const __m256i qh = five ? load256(p + 16) : _mm256_setzero_si256();
        __m256i isum = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            /* sub-blocks 2c and 2c + 1: the two nibbles of qs[32c .. 32c + 31],
             * fifth bits (Q5_K) bits 2c and 2c + 1 of qh */
            const __m256i q4 = load256(qs + 32 * c);
            __m256i lo = _mm256_and_si256(q4, m15);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m15);
            if (five) {
                const __mmask32 blo =
                    _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << 2 * c)));
                const __mmask32 bhi =
                    _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(2 << 2 * c)));
                lo = _mm256_mask_add_epi8(lo, blo, lo, sixteen);
                hi = _mm256_mask_add_epi8(hi, bhi, hi, sixteen);
            }
            isum = scale_packed(isum, dot32(lo, a[b].qs + 64 * c), dot32(hi, a[b].qs + 64 * c + 32),
                                sc, 2 * c, 2 * c + 1, 2 * c, 2 * c + 1);
        }
        const __m128 ds = f16x2(p, a[b].d);
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(ds), _mm256_cvtepi32_ps(isum), acc);
        accm = _mm256_fnmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(ds)),
                                _mm256_cvtepi32_ps(msum), accm);
    }
    return hsum8(_mm256_add_ps(acc, accm));
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
            /* element 128h + 32k + l: low 4 bits nibble k / 2 of
             * ql[64h + 32(k % 2) + l], top 2 bits 2k..2k+1 of qh[32h + l] */
            const __m256i ql0 = load256(p + 64 * h), ql1 = load256(p + 64 * h + 32);
            const __m256i qh = load256(p + 128 + 32 * h);
            const int8_t *ah = a[b].qs + 128 * h;
            const __m256i d[4] = {
                dot32(_mm256_or_si256(_mm256_and_si256(ql0, m15),
                                      _mm256_and_si256(_mm256_slli_epi16(qh, 4), m48)),
                      ah),
                dot32(_mm256_or_si256(_mm256_and_si256(ql1, m15),
                                      _mm256_and_si256(_mm256_slli_epi16(qh, 2), m48)),
                      ah + 32),
                dot32(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m15),
                                      _mm256_and_si256(qh, m48)),
                      ah + 64),
                dot32(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15),
                                      _mm256_and_si256(_mm256_srli_epi16(qh, 2), m48)),
                      ah + 96),
            };
            isum = scale_half(isum, d, sc, h);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(p + 208) * a[b].d), _mm256_cvtepi32_ps(isum), acc);
    }
    return hsum8(acc);
}

#define K(fn)                                                                                      \
    { fn, TSR_ACT_Q8K, TSR_ISA_AVX512 }
static const tsr_qkernel k_q2_k = K(dot_q2_k), k_q3_k = K(dot_q3_k), k_q4_k = K(dot_q4_k),
                         k_q5_k = K(dot_q5_k), k_q6_k = K(dot_q6_k);
#undef K

const tsr_qkernel *tsr_qkernels_avx512_k(tsr_dtype t) {
    switch (t) {
    case TSR_Q2_K: return &k_q2_k;
    case TSR_Q3_K: return &k_q3_k;
    case TSR_Q4_K: return &k_q4_k;
    case TSR_Q5_K: return &k_q5_k;
    case TSR_Q6_K: return &k_q6_k;
    default: return NULL;
    }
}
