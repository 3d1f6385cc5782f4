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
 * The multi-row kernels (dotn, bit for bit the row kernels' values) follow
 * the row kernels.
 *
 * Not here: the 32-wide formats (qdot_avx2.c). */
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

/* ---- several rows at once (tsr_qdotn_fn) ------------------------------------------ */

/* One weight row by `ra` activation rows (ra = 4, or 2 for the tails; 16
 * registers hold the accumulators, the mins' accumulators and isum of 4):
 * each super-block's scales and quants are unpacked once for the ra rows.
 * Every pair sees exactly the operations of the kernels above: the same
 * int32 lanes of isum (the planes may enter it in any order: integer sums
 * are exact) and of the mins' sums, each super-block's FMA of d_w * d_a
 * (and fnmadd of dmin_w * d_a) into its own accumulators, the same final
 * additions and horizontal sum. The products d_w * d_a of a chunk of
 * super-blocks are first written to a small table, 8 activation rows per
 * vector multiply, then broadcast from memory (no arithmetic port). */
#define KN_RA 4
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

/* A super-block's int16 scales (as scale16 and scale32 read them) and
 * mins (as the bsums are multiplied by them; formats with mins). */
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

/* Plane pl (elements 32 pl .. 32 pl + 31) of the super-block at p as
 * unsigned bytes, and its scales as dot32 takes them. */
KN_INLINE __m256i k_plane(int f, const uint8_t *p, const kscales *s, int pl, __m256i *scale) {
    const int h = pl / 4, k = pl % 4;
    if (f == KF_Q4_K || f == KF_Q5_K) {
        const int c = pl / 2, hi = pl % 2;
        *scale = scale32(s->sc, pl);
        const __m256i m15 = _mm256_set1_epi8(15);
        const __m256i q4 = load256(p + (f == KF_Q5_K ? 48 : 16) + 32 * c);
        __m256i q =
            hi ? _mm256_and_si256(_mm256_srli_epi16(q4, 4), m15) : _mm256_and_si256(q4, m15);
        if (f == KF_Q5_K)
            q = _mm256_or_si256(q, bit_to(load256(p + 16), pl, 4, _mm256_set1_epi8(16)));
        return q;
    }
    *scale = scale16(s->sc, h, k);
    const __m256i m3 = _mm256_set1_epi8(3);
    switch (f) {
    case KF_Q2_K: return _mm256_and_si256(_mm256_srli_epi16(load256(p + 16 + 32 * h), 2 * k), m3);
    case KF_Q3_K:
        return _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(load256(p + 32 + 32 * h), 2 * k), m3),
            bit_to(load256(p), 4 * h + k, 2, _mm256_set1_epi8(4)));
    default: {
        /* Q6_K: low 4 bits nibble k / 2 of ql[64h + 32(k % 2) + l], top 2
         * bits 2k..2k+1 of qh[32h + l] */
        const __m256i m15 = _mm256_set1_epi8(15), m48 = _mm256_set1_epi8(48);
        const __m256i ql = load256(p + 64 * h + 32 * (k % 2)), qh = load256(p + 128 + 32 * h);
        const __m256i lo4 =
            k < 2 ? _mm256_and_si256(ql, m15) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m15);
        const __m256i hi2 = k == 0   ? _mm256_slli_epi16(qh, 4)
                            : k == 1 ? _mm256_slli_epi16(qh, 2)
                            : k == 2 ? qh
                                     : _mm256_srli_epi16(qh, 2);
        return _mm256_or_si256(lo4, _mm256_and_si256(hi2, m48));
    }
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
#pragma GCC unroll 8
            for (int pl = 0; pl < 8; pl++) {
                __m256i scale;
                const __m256i q = k_plane(f, p, &s, pl, &scale);
#pragma GCC unroll 8
                for (int i = 0; i < ra; i++) {
                    isum[i] = _mm256_add_epi32(isum[i], dot32(q, a[i][b].qs + 32 * pl, scale));
                    /* keep the sum a running one: left alone, GCC reassociates
                     * the 8 planes' sums into trees and spills their terms */
                    __asm__("" : "+x"(isum[i]));
                }
            }
#pragma GCC unroll 8
            for (int i = 0; i < ra; i++)
                acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(scb + i), _mm256_cvtepi32_ps(isum[i]),
                                         acc[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < ra; i++)
        out[i] = kf_mins(f) ? hsum(_mm256_add_ps(acc[i], accm[i])) : hsum(acc[i]);
}

typedef void (*k_tile_fn)(int nb, const uint8_t *w, const tsr_q8k *const *a, const float *da,
                          float *out);

/* Activation rows in groups of 4; a last group of 3 takes the 4-row tile
 * with its last row repeated, of 2 the 2-row tile, a single row `dot`.
 * tiles[]: the tiles of 2 and 4 rows. */
KN_INLINE void k_dotn_rows(const k_tile_fn tiles[2], tsr_qdot_fn dot, int n, const void *w,
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
        const int t = left > 2 ? 1 : 0, ra = 2 << t;
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
    static void name(int n, const void *w, size_t ws, int nw, const void *a, size_t as, int na,    \
                     float *y, size_t ldy) {                                                       \
        static const k_tile_fn tiles[2] = {name##_2, name##_4};                                    \
        k_dotn_rows(tiles, dot, n, w, ws, nw, a, as, na, y, ldy);                                  \
    }

KN(dotn_q2_k, KF_Q2_K, dot_q2_k)
KN(dotn_q3_k, KF_Q3_K, dot_q3_k)
KN(dotn_q4_k, KF_Q4_K, dot_q4_k)
KN(dotn_q5_k, KF_Q5_K, dot_q5_k)
KN(dotn_q6_k, KF_Q6_K, dot_q6_k)
#undef KN

#define K(fn)                                                                                      \
    { .dot = dot_##fn, .dotn = dotn_##fn, .act = TSR_ACT_Q8K, .isa = TSR_ISA_AVX2 }
static const tsr_qkernel k_q2_k = K(q2_k), k_q3_k = K(q3_k), k_q4_k = K(q4_k), k_q5_k = K(q5_k),
                         k_q6_k = K(q6_k);
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
