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
 * The multi-row kernels (dotn, bit for bit the row kernels' values) follow
 * the row kernels.
 *
 * Not here: the 32-wide formats (qdot_avx512.c). */
#include <immintrin.h>
#include <stdlib.h>
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

/* ---- several rows at once (tsr_qdotn_fn) ------------------------------------------ */

/* One weight row by `ra` activation rows (ra = 8, or 4 or 2 for the tails):
 * each super-block's scales and quants are unpacked once for the ra rows.
 * Every pair sees exactly the operations of the kernels above: the same
 * int32 lanes of isum (and of the mins' sums), each super-block's FMA of
 * d_w * d_a (and fnmadd of dmin_w * d_a) into its own accumulators, the
 * same final additions and horizontal sum. Integer sums are exact (modular
 * at worst), so the planes may enter isum in any order; the f32 operations
 * are the same ones in the same order. The products d_w * d_a of a chunk of
 * super-blocks are first written to a small table, 8 activation rows per
 * vector multiply, and then broadcast from memory (no arithmetic port).
 * One weight row per tile: 8 activation rows take 24 of the 32 registers
 * (accumulators, mins' accumulators, isum). */
#define KN_RA 8
#define KN_CHUNK 16 /* super-blocks per scale table */
/* The activations' d table lives on the stack for rows of up to this many
 * super-blocks (n <= 65536: 8 KiB), on the heap for longer ones (`dot` in
 * a loop if that allocation fails). */
#define KN_NB_STACK 256
#define KN_INLINE static inline __attribute__((always_inline))

enum { KF_Q2_K, KF_Q3_K, KF_Q4_K, KF_Q5_K, KF_Q6_K };

KN_INLINE int kf_bytes(int f) {
    static const int bytes[] = {84, 110, 144, 176, 210};
    return bytes[f];
}
/* whether the format has mins (a dmin and an accm accumulator) */
KN_INLINE int kf_mins(int f) { return f == KF_Q2_K || f == KF_Q4_K || f == KF_Q5_K; }

/* A super-block's scales: sc the int16 scales the plane pairs pick from,
 * mins the int16 mins times which the bsums give msum (formats with mins),
 * shift the power of two of the constant offset (Q3_K's 4, Q6_K's 32) whose
 * product with sc * bsums starts isum, or -1. */
typedef struct {
    __m256i sc, mins;
} kscales;

KN_INLINE kscales k_unpack_scales(int f, const uint8_t *p) {
    kscales s;
    switch (f) {
    case KF_Q2_K: {
        const __m128i sc8 = load128(p), m15 = _mm_set1_epi8(15);
        s.sc = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, m15));
        s.mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), m15));
        break;
    }
    case KF_Q3_K:
        s.sc = _mm256_cvtepi8_epi16(q3k_scales(p + 96));
        s.mins = _mm256_setzero_si256();
        break;
    case KF_Q4_K:
    case KF_Q5_K: {
        const __m128i sm = k_scales_mins(p + 4);
        s.sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        s.mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
            sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
        break;
    }
    default: s.sc = _mm256_cvtepi8_epi16(load128(p + 192)); s.mins = _mm256_setzero_si256();
    }
    return s;
}

/* The f16 d (and dmin) of the super-block at p, in every lane. */
KN_INLINE void k_scale_f16(int f, const uint8_t *p, __m256 *d, __m256 *dmin) {
    const int at = f == KF_Q2_K ? 80 : f == KF_Q3_K ? 108 : f == KF_Q6_K ? 208 : 0;
    uint32_t u = 0;
    memcpy(&u, p + at, kf_mins(f) ? 4 : 2);
    const __m128 v = _mm_cvtph_ps(_mm_cvtsi32_si128((int)u));
    *d = _mm256_broadcastss_ps(v);
    *dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(v));
}

/* isum's start for activation block a: minus the constant offset times sc
 * times the bsums (Q3_K, Q6_K), else 0 */
KN_INLINE __m256i k_isum0(int f, const kscales *s, const tsr_q8k *a) {
    if (f != KF_Q3_K && f != KF_Q6_K)
        return _mm256_setzero_si256();
    const __m256i t = _mm256_madd_epi16(s->sc, load256(a->bsums));
    return _mm256_sub_epi32(_mm256_setzero_si256(),
                            f == KF_Q3_K ? _mm256_slli_epi32(t, 2) : _mm256_slli_epi32(t, 5));
}

/* Planes 2 pp and 2 pp + 1 (elements 64 pp .. 64 pp + 63) of the super-block
 * at p as unsigned bytes, and the scale words they are multiplied by (what
 * scale_packed picks). */
KN_INLINE void k_planes(int f, const uint8_t *p, const kscales *s, int pp, __m256i *q0, __m256i *q1,
                        __m256i *pick) {
    const int h = pp / 2, k = pp % 2;
#define W(w) (char)(2 * (w)), (char)(2 * (w) + 1)
#define W4(w) W(w), W(w), W(w), W(w)
    if (f == KF_Q4_K || f == KF_Q5_K) {
        const uint8_t *qs = p + (f == KF_Q5_K ? 48 : 16);
        const __m256i m15 = _mm256_set1_epi8(15), q4 = load256(qs + 32 * pp);
        __m256i lo = _mm256_and_si256(q4, m15),
                hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m15);
        if (f == KF_Q5_K) {
            const __m256i qh = load256(p + 16), sixteen = _mm256_set1_epi8(16);
            lo = _mm256_mask_add_epi8(
                lo, _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << 2 * pp))), lo, sixteen);
            hi = _mm256_mask_add_epi8(
                hi, _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(2 << 2 * pp))), hi, sixteen);
        }
        *q0 = lo;
        *q1 = hi;
        *pick = _mm256_shuffle_epi8(
            s->sc, _mm256_setr_epi8(W4(2 * pp), W4(2 * pp + 1), W4(2 * pp), W4(2 * pp + 1)));
        return;
    }
    const __m256i half = h ? _mm256_permute2x128_si256(s->sc, s->sc, 0x11)
                           : _mm256_permute2x128_si256(s->sc, s->sc, 0x00);
    *pick = k ? _mm256_shuffle_epi8(half, _mm256_setr_epi8(W4(4), W4(6), W4(5), W4(7)))
              : _mm256_shuffle_epi8(half, _mm256_setr_epi8(W4(0), W4(2), W4(1), W4(3)));
#undef W4
#undef W
    const __m256i m3 = _mm256_set1_epi8(3);
    if (f == KF_Q2_K || f == KF_Q3_K) {
        /* element 128h + 32s + l: bits 2s..2s+1 of qs[32h + l], s = 2k, 2k + 1 */
        const __m256i q2 = load256(p + (f == KF_Q2_K ? 16 : 32) + 32 * h);
        __m256i a = _mm256_and_si256(_mm256_srli_epi16(q2, 4 * k), m3);
        __m256i b = _mm256_and_si256(_mm256_srli_epi16(q2, 4 * k + 2), m3);
        if (f == KF_Q3_K) {
            const __m256i hm = load256(p), four = _mm256_set1_epi8(4);
            a = _mm256_mask_add_epi8(
                a, _mm256_test_epi8_mask(hm, _mm256_set1_epi8((char)(1 << (4 * h + 2 * k)))), a,
                four);
            b = _mm256_mask_add_epi8(
                b, _mm256_test_epi8_mask(hm, _mm256_set1_epi8((char)(1 << (4 * h + 2 * k + 1)))), b,
                four);
        }
        *q0 = a;
        *q1 = b;
        return;
    }
    /* Q6_K: element 128h + 32j + l, j = 2k, 2k + 1: low 4 bits nibble k of
     * ql[64h + 32(j % 2) + l], top 2 bits 2j..2j+1 of qh[32h + l] */
    const __m256i m15 = _mm256_set1_epi8(15), m48 = _mm256_set1_epi8(48);
    const __m256i ql0 = load256(p + 64 * h), ql1 = load256(p + 64 * h + 32);
    const __m256i qh = load256(p + 128 + 32 * h);
    if (k == 0) {
        *q0 = _mm256_or_si256(_mm256_and_si256(ql0, m15),
                              _mm256_and_si256(_mm256_slli_epi16(qh, 4), m48));
        *q1 = _mm256_or_si256(_mm256_and_si256(ql1, m15),
                              _mm256_and_si256(_mm256_slli_epi16(qh, 2), m48));
    } else {
        *q0 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m15),
                              _mm256_and_si256(qh, m48));
        *q1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15),
                              _mm256_and_si256(_mm256_srli_epi16(qh, 2), m48));
    }
}

/* out[i] = the dot of weight row w with activation row a[i]; da: the
 * activations' d, 8 floats per super-block. */
KN_INLINE void k_tile(int f, int ra, int nb, const uint8_t *w, const tsr_q8k *const *a,
                      const float *da, float *out) {
    const int bytes = kf_bytes(f);
    __m256 acc[KN_RA], accm[KN_RA];
#pragma GCC unroll 8
    for (int i = 0; i < ra; i++)
        acc[i] = accm[i] = _mm256_setzero_ps();
    for (int b0 = 0; b0 < nb; b0 += KN_CHUNK) {
        const int b1 = b0 + KN_CHUNK < nb ? b0 + KN_CHUNK : nb;
        _Alignas(32) float sc[KN_CHUNK][2][8]; /* d_w * d_a, dmin_w * d_a */
        for (int b = b0; b < b1; b++) {
            __m256 d, dmin;
            k_scale_f16(f, w + (size_t)b * bytes, &d, &dmin);
            const __m256 dab = _mm256_load_ps(da + (size_t)b * 8);
            _mm256_store_ps(sc[b - b0][0], _mm256_mul_ps(d, dab));
            if (kf_mins(f))
                _mm256_store_ps(sc[b - b0][1], _mm256_mul_ps(dmin, dab));
        }
        for (int b = b0; b < b1; b++) {
            const uint8_t *p = w + (size_t)b * bytes;
            const float *scb = sc[b - b0][0];
            const kscales s = k_unpack_scales(f, p);
            __m256i isum[KN_RA];
#pragma GCC unroll 8
            for (int i = 0; i < ra; i++) {
                isum[i] = k_isum0(f, &s, a[i] + b);
                if (kf_mins(f))
                    accm[i] = _mm256_fnmadd_ps(
                        _mm256_broadcast_ss(scb + 8 + i),
                        _mm256_cvtepi32_ps(_mm256_madd_epi16(s.mins, load256(a[i][b].bsums))),
                        accm[i]);
            }
#pragma GCC unroll 4
            for (int pp = 0; pp < 4; pp++) {
                __m256i q0, q1, pick;
                k_planes(f, p, &s, pp, &q0, &q1, &pick);
#pragma GCC unroll 8
                for (int i = 0; i < ra; i++)
                    isum[i] = _mm256_dpwssd_epi32(
                        isum[i],
                        _mm256_packs_epi32(dot32(q0, a[i][b].qs + 64 * pp),
                                           dot32(q1, a[i][b].qs + 64 * pp + 32)),
                        pick);
            }
#pragma GCC unroll 8
            for (int i = 0; i < ra; i++)
                acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(scb + i), _mm256_cvtepi32_ps(isum[i]),
                                         acc[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < ra; i++)
        out[i] = kf_mins(f) ? hsum8(_mm256_add_ps(acc[i], accm[i])) : hsum8(acc[i]);
}

typedef void (*k_tile_fn)(int nb, const uint8_t *w, const tsr_q8k *const *a, const float *da,
                          float *out);

/* Activation rows in groups of 8; a last group of 2..7 takes the 2-, 4- or
 * 8-row tile with its last row repeated, a single row `dot`. tiles[]: the
 * tiles of 2, 4 and 8 rows. */
KN_INLINE void k_dotn_rows(const k_tile_fn tiles[3], tsr_qdot_fn dot, int n, const void *w,
                           size_t ws, int nw, const void *a, size_t as, int na, float *y,
                           size_t ldy) {
    const int nb = n / TSR_QKK;
    const uint8_t *W = w, *A = a;
    _Alignas(32) float stack[KN_NB_STACK * 8];
    float *da = nb <= KN_NB_STACK ? stack : aligned_alloc(32, (size_t)nb * 8 * sizeof(float));
    if (!da) {
        for (int i = 0; i < na; i++)
            for (int j = 0; j < nw; j++)
                y[(size_t)i * ldy + j] = dot(n, W + (size_t)j * ws, A + (size_t)i * as);
        return;
    }
    for (int i0 = 0; i0 < na;) {
        const int left = na - i0;
        if (left == 1) {
            for (int j = 0; j < nw; j++)
                y[(size_t)i0 * ldy + j] = dot(n, W + (size_t)j * ws, A + (size_t)i0 * as);
            break;
        }
        const int t = left > 4 ? 2 : left > 2 ? 1 : 0, ra = 2 << t;
        const tsr_q8k *ap[KN_RA];
        for (int i = 0; i < ra; i++)
            ap[i] = (const tsr_q8k *)(A + (size_t)(i < left ? i0 + i : na - 1) * as);
        for (int b = 0; b < nb; b++)
            for (int i = 0; i < 8; i++)
                da[b * 8 + i] = i < ra ? ap[i][b].d : 0.0f;
        const int got = left < ra ? left : ra;
        for (int j = 0; j < nw; j++) {
            float out[KN_RA];
            tiles[t](nb, W + (size_t)j * ws, ap, da, out);
            for (int i = 0; i < got; i++)
                y[(size_t)(i0 + i) * ldy + j] = out[i];
        }
        i0 += got;
    }
    if (da != stack)
        free(da);
}

#define KN(name, f, dot)                                                                           \
    static void name##_2(int nb, const uint8_t *w, const tsr_q8k *const *a, const float *da,       \
                         float *out) {                                                             \
        k_tile(f, 2, nb, w, a, da, out);                                                           \
    }                                                                                              \
    static void name##_4(int nb, const uint8_t *w, const tsr_q8k *const *a, const float *da,       \
                         float *out) {                                                             \
        k_tile(f, 4, nb, w, a, da, out);                                                           \
    }                                                                                              \
    static void name##_8(int nb, const uint8_t *w, const tsr_q8k *const *a, const float *da,       \
                         float *out) {                                                             \
        k_tile(f, 8, nb, w, a, da, out);                                                           \
    }                                                                                              \
    static void name(int n, const void *w, size_t ws, int nw, const void *a, size_t as, int na,    \
                     float *y, size_t ldy) {                                                       \
        static const k_tile_fn tiles[3] = {name##_2, name##_4, name##_8};                          \
        k_dotn_rows(tiles, dot, n, w, ws, nw, a, as, na, y, ldy);                                  \
    }

KN(dotn_q2_k, KF_Q2_K, dot_q2_k)
KN(dotn_q3_k, KF_Q3_K, dot_q3_k)
KN(dotn_q4_k, KF_Q4_K, dot_q4_k)
KN(dotn_q5_k, KF_Q5_K, dot_q5_k)
KN(dotn_q6_k, KF_Q6_K, dot_q6_k)
#undef KN

#define K(fn)                                                                                      \
    { .dot = dot_##fn, .dotn = dotn_##fn, .act = TSR_ACT_Q8K, .isa = TSR_ISA_AVX512 }
static const tsr_qkernel k_q2_k = K(q2_k), k_q3_k = K(q3_k), k_q4_k = K(q4_k), k_q5_k = K(q5_k),
                         k_q6_k = K(q6_k);
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
