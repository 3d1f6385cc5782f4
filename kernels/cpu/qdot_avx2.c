/* kernels/cpu/qdot_avx2.c - the AVX2+FMA+F16C dot kernels of the 32-wide
 * formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL); the K-quants' are in
 * qdot_avx2_k.c.
 *
 * This file is also the body of the AVX-VNNI and AVX-512 kernels:
 * qdot_avxvnni.c and qdot_avx512.c define QDOT_TABLE, QDOT_LEVEL,
 * QDOT_FALLBACK and QDOT_DPBUSD and include it, so the levels cannot drift
 * apart. They differ in the instruction that multiplies 32 unsigned by 32
 * signed bytes and sums each 4 products into an int32 (maddubs + madd here,
 * vpdpbusd there) and, at the AVX-512 level, in the Q5 fifth bits (a mask
 * register). 256-bit registers at every level: two blocks per 512-bit
 * register measured slower on Zen 4 (Q4_1 58 against 52 ns per 1536-wide
 * row, Q8_0 49 against 47), whose 512-bit operations take two passes.
 *
 * Per block of 32: the weights are widened to 32 bytes in element order
 * (4- and 5-bit ones unsigned, 0..15 or 0..31; the -8 and -16 offsets and
 * the Q4_1/Q5_1 min come from the activation sum s, as in qdot_ref.c), the
 * byte products summed into 8 int32 lanes, and those lanes, as floats, times
 * d_w * d_a added into 8 f32 lanes with FMA; two blocks per iteration into
 * two accumulators, one horizontal sum at the end. Q8_0 and IQ4_NL weights
 * are signed: |w| times a with w's sign (|w| <= 128, |a| <= 127, so
 * maddubs's 16-bit pair sums cannot saturate).
 *
 * The multi-row kernels (dotn: several weight rows by several activation
 * rows, each value bit for bit QDOT_ROW's) follow the row kernels.
 *
 * Compiled with -mavx2 -mfma -mf16c (kernels/CMakeLists.txt); where those
 * are not given (a non-x86 build) the table has no kernels of its own. */
#include "kernels/cpu/qdot.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifndef QDOT_TABLE /* compiled as itself: the AVX2 level */
#define QDOT_OWN 1 /* the activation quantizer is compiled here only */
#define QDOT_TABLE tsr_qkernels_avx2
#define QDOT_LEVEL TSR_ISA_AVX2
#define QDOT_FALLBACK(t) tsr_qkernels_avx2_k(t)
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define QDOT_ENABLED 1
#endif
#endif

#ifdef QDOT_ENABLED
#include <immintrin.h>

#ifndef QDOT_DPBUSD
/* 8 int32 lanes, lane i = the sum of u[4i+k] * s[4i+k] over k < 4, u
 * unsigned and s signed bytes (the pair sums must fit an int16). */
#define QDOT_DPBUSD(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#endif

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* Signed weight bytes times signed activation bytes: |w| * (a with w's sign). */
static inline __m256i dot_signed(__m256i w, __m256i a) {
    return QDOT_DPBUSD(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}

/* The 16 bytes at p as 32 nibbles in element order: low nibbles in bytes
 * 0..15, high nibbles in bytes 16..31. */
static inline __m256i nibbles(const uint8_t *p) {
    const __m256i x = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return _mm256_and_si256(_mm256_srlv_epi64(x, _mm256_set_epi64x(4, 4, 0, 0)),
                            _mm256_set1_epi8(0x0f));
}

/* q with 16 added to byte j where bit j of the little-endian u32 at p is
 * set (the fifth bits of Q5_0/Q5_1; q's bytes are nibbles, so add = or).
 * With AVX-512BW+VL (the AVX-512 level) the u32 is a mask register and one
 * masked add does it; else byte j gets byte j / 8 of the u32, keeps bit
 * j % 8, and a compare turns that into 0xff. */
static inline __m256i add_fifth_bits(__m256i q, const uint8_t *p) {
    uint32_t qh;
    memcpy(&qh, p, 4);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    return _mm256_mask_add_epi8(q, _cvtu32_mask32(qh), q, _mm256_set1_epi8(0x10));
#else
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)qh),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    return _mm256_or_si256(q,
                           _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit),
                                            _mm256_set1_epi8(0x10)));
#endif
}

/* Scales of one block, lane 0 d_w * d_a (what the block's integer sum is
 * multiplied by), lane 1 what goes into the scalar term: d_w * s for the
 * formats with an offset (Q4_0, Q5_0; times -8 or -16 at the end) and m * s
 * for those with a min (Q4_1, Q5_1). Lanes 2 and 3 are 0. The f16 fields
 * are converted together and the activation's d and s loaded together. */
_Static_assert(offsetof(tsr_q8a, s) == offsetof(tsr_q8a, d) + 4, "tsr_q8a: d and s adjacent");

static inline __m128 act_ds(const tsr_q8a *a) {
    return _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)&a->d));
}

/* the f16 d at p */
static inline __m128 scales_d(const uint8_t *p, const tsr_q8a *a) {
    int16_t h;
    memcpy(&h, p, 2);
    return _mm_mul_ps(_mm_cvtph_ps(_mm_set1_epi16(h)), act_ds(a));
}

/* the f16 d and m at p, p + 2 */
static inline __m128 scales_dm(const uint8_t *p, const tsr_q8a *a) {
    int32_t dm;
    memcpy(&dm, p, 4);
    return _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(dm)), act_ds(a));
}

/* d_w * d_a in all 8 lanes, for the formats without a scalar term (Q8_0,
 * IQ4_NL): converted and multiplied 8 wide, no broadcast */
static inline __m256 scale8_d(const uint8_t *p, const tsr_q8a *a) {
    int16_t h;
    memcpy(&h, p, 2);
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_set1_epi16(h)), _mm256_broadcast_ss(&a->d));
}

/* acc + (lane 0 of sc) * (the int32 lanes as floats) */
static inline __m256 fmadd_lanes(__m128 sc, __m256i s, __m256 acc) {
    return _mm256_fmadd_ps(_mm256_broadcastss_ps(sc), _mm256_cvtepi32_ps(s), acc);
}

/* One block each: the weights at p against activation block a, added into
 * acc; the scales into *e (whose lane 1 is the scalar term). */

static inline __m256 blk_q8_0(const uint8_t *p, const tsr_q8a *a, __m256 acc, __m128 *e) {
    (void)e;
    return _mm256_fmadd_ps(scale8_d(p, a),
                           _mm256_cvtepi32_ps(dot_signed(load32(p + 2), load32(a->qs))), acc);
}

static inline __m256 blk_q4_0(const uint8_t *p, const tsr_q8a *a, __m256 acc, __m128 *e) {
    const __m128 sc = scales_d(p, a);
    *e = _mm_add_ps(*e, sc);
    return fmadd_lanes(sc, QDOT_DPBUSD(nibbles(p + 2), load32(a->qs)), acc);
}

static inline __m256 blk_q4_1(const uint8_t *p, const tsr_q8a *a, __m256 acc, __m128 *e) {
    const __m128 sc = scales_dm(p, a);
    *e = _mm_add_ps(*e, sc);
    return fmadd_lanes(sc, QDOT_DPBUSD(nibbles(p + 4), load32(a->qs)), acc);
}

static inline __m256 blk_q5_0(const uint8_t *p, const tsr_q8a *a, __m256 acc, __m128 *e) {
    const __m128 sc = scales_d(p, a);
    *e = _mm_add_ps(*e, sc);
    const __m256i q = add_fifth_bits(nibbles(p + 6), p + 2);
    return fmadd_lanes(sc, QDOT_DPBUSD(q, load32(a->qs)), acc);
}

static inline __m256 blk_q5_1(const uint8_t *p, const tsr_q8a *a, __m256 acc, __m128 *e) {
    const __m128 sc = scales_dm(p, a);
    *e = _mm_add_ps(*e, sc);
    const __m256i q = add_fifth_bits(nibbles(p + 8), p + 4);
    return fmadd_lanes(sc, QDOT_DPBUSD(q, load32(a->qs)), acc);
}

/* The IQ4_NL block's 32 values (signed bytes) from its nibbles at p. */
static inline __m256i iq4_nl_values(const uint8_t *p) {
    /* the format's 16 values, in both 128-bit lanes for the byte shuffle */
    const __m256i values =
        _mm256_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
                         -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    return _mm256_shuffle_epi8(values, nibbles(p));
}

static inline __m256 blk_iq4_nl(const uint8_t *p, const tsr_q8a *a, __m256 acc, __m128 *e) {
    (void)e;
    return _mm256_fmadd_ps(
        scale8_d(p, a), _mm256_cvtepi32_ps(dot_signed(iq4_nl_values(p + 2), load32(a->qs))), acc);
}

/* The row loop: two blocks per iteration into two accumulators, then the
 * odd block; the scalar term is lane 1 of the summed scales times `k`. */
#define QDOT_ROW(name, blk, bytes, k)                                                              \
    static float name(int n, const void *w, const void *act) {                                     \
        const uint8_t *p = w;                                                                      \
        const tsr_q8a *a = act;                                                                    \
        const int nb = n / TSR_QK;                                                                 \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                             \
        __m128 e0 = _mm_setzero_ps(), e1 = _mm_setzero_ps();                                       \
        int b = 0;                                                                                 \
        for (; b + 2 <= nb; b += 2) {                                                              \
            acc0 = blk(p + (size_t)b * (bytes), a + b, acc0, &e0);                                 \
            acc1 = blk(p + (size_t)(b + 1) * (bytes), a + b + 1, acc1, &e1);                       \
        }                                                                                          \
        if (b < nb)                                                                                \
            acc0 = blk(p + (size_t)b * (bytes), a + b, acc0, &e0);                                 \
        const __m128 e = _mm_add_ps(e0, e1);                                                       \
        return hsum(_mm256_add_ps(acc0, acc1)) + (k)*_mm_cvtss_f32(_mm_movehdup_ps(e));            \
    }

QDOT_ROW(dot_q8_0, blk_q8_0, 34, 0.0f)
QDOT_ROW(dot_q4_0, blk_q4_0, 18, -8.0f)
QDOT_ROW(dot_q4_1, blk_q4_1, 20, 1.0f)
QDOT_ROW(dot_q5_0, blk_q5_0, 22, -16.0f)
QDOT_ROW(dot_q5_1, blk_q5_1, 24, 1.0f)
QDOT_ROW(dot_iq4_nl, blk_iq4_nl, 18, 0.0f)
#undef QDOT_ROW

/* ---- several rows at once (tsr_qdotn_fn) ------------------------------------------ */

/* A tile of QDOTN_RW weight rows by `ra` activation rows (ra = QDOTN_RA, or
 * 4 or 2 for the tails) keeps one accumulator per (weight row, activation
 * row) pair in registers: each weight block is unpacked once for the ra
 * activation rows, each activation block loaded once for the QDOTN_RW weight
 * rows. Every pair sees exactly QDOT_ROW's operations: the even blocks in
 * order into one accumulator, the odd ones into the other (two passes over
 * the blocks here, one pass per accumulator), d_w * d_a times the block's
 * int32 lanes FMA'd into 8 f32 lanes, the scalar term summed per parity from
 * the same products (m * s or d * s, one lane per activation row instead of
 * lane 1 of a vector per pair), then the same additions and horizontal sum.
 * The activations' d and s are first copied block by block into a small
 * table (16 floats per block: 8 d, then 8 s) so that those products take
 * one vector multiply per weight block. 16 registers (AVX2, AVX-VNNI): one
 * weight row by 8 activation rows; 32 (AVX-512): two by 8. */
#ifndef QDOTN_RW
#define QDOTN_RW 1
#endif
#define QDOTN_RA 8
/* The table of d and s lives on the stack for rows of up to this many
 * blocks (n <= 16384: 32 KiB), on the heap for longer ones (`dot` in a loop
 * if that allocation fails). */
#define QDOTN_NB_STACK 512

#define QDOTN_INLINE static inline __attribute__((always_inline))

enum { F_Q8_0, F_Q4_0, F_Q4_1, F_Q5_0, F_Q5_1, F_IQ4_NL };

QDOTN_INLINE int fmt_bytes(int f) {
    static const int bytes[] = {34, 18, 20, 22, 24, 18};
    return bytes[f];
}
QDOTN_INLINE int fmt_signed(int f) { return f == F_Q8_0 || f == F_IQ4_NL; }
QDOTN_INLINE int fmt_has_sum(int f) { return !fmt_signed(f); }
/* what QDOT_ROW multiplies the scalar term by */
QDOTN_INLINE float fmt_k(int f) {
    return f == F_Q4_0 ? -8.0f : f == F_Q5_0 ? -16.0f : f == F_Q4_1 || f == F_Q5_1 ? 1.0f : 0.0f;
}

/* The scales of the weight block at p: d in every lane of *d and the factor
 * of the activations' sums (m for Q4_1 and Q5_1, d for Q4_0 and Q5_0) in
 * every lane of *e. */
QDOTN_INLINE void block_scales(int f, const uint8_t *p, __m256 *d, __m256 *e) {
    if (f == F_Q4_1 || f == F_Q5_1) {
        int32_t dm;
        memcpy(&dm, p, 4);
        const __m128 v = _mm_cvtph_ps(_mm_cvtsi32_si128(dm));
        *d = _mm256_broadcastss_ps(v);
        *e = _mm256_broadcastss_ps(_mm_movehdup_ps(v));
    } else {
        int16_t h;
        memcpy(&h, p, 2);
        *d = *e = _mm256_cvtph_ps(_mm_set1_epi16(h));
    }
}

/* The 32 values of the weight block at p as bytes in element order:
 * unsigned for the 4- and 5-bit formats, signed for Q8_0 and IQ4_NL. */
QDOTN_INLINE __m256i block_values(int f, const uint8_t *p) {
    switch (f) {
    case F_Q8_0: return load32(p + 2);
    case F_Q4_0: return nibbles(p + 2);
    case F_Q4_1: return nibbles(p + 4);
    case F_Q5_0: return add_fifth_bits(nibbles(p + 6), p + 2);
    case F_Q5_1: return add_fifth_bits(nibbles(p + 8), p + 4);
    default: return iq4_nl_values(p + 2);
    }
}

/* The integer sums of signed weights w and activations x (QDOT_ROW's
 * dot_signed: 8 int32 lanes, each the sum of 4 products). With vpdpbusd
 * (QDOTN_VNNI) the activations, made unsigned by adding 128 once per block
 * (xu = x ^ 0x80), are multiplied by w as they are, starting from
 * corr = -128 * (the lanes' sums of w): the same integers, one
 * instruction per pair instead of a sign and a vpdpbusd. */
#ifdef QDOT_DPBUSD_ACC
#define QDOTN_VNNI 1
#else
#define QDOTN_VNNI 0
#endif

/* Blocks per pass of the scale table below (even): 64 blocks, two weight
 * rows: 4 KiB of stack. */
#define QDOTN_CHUNK 64

/* out[j * ra + i] = the dot of weight row w[j] with activation row a[i]
 * (QDOT_ROW's value); ds: the activations' d and s (see above). For each
 * chunk of blocks, the products d_w * d_a of every pair are first written to
 * a small table, 8 activation rows per vector multiply, and the scalar terms
 * summed; the main loop, one pass per parity, then takes each product with
 * a broadcast from memory, which costs no arithmetic port (on Zen 4 the
 * multiplies, FMAs and vpdpbusd all share two). */
QDOTN_INLINE void tile(int f, int ra, int nb, const uint8_t *const *w, const tsr_q8a *const *a,
                       const float *ds, float *out) {
    const int bytes = fmt_bytes(f);
    __m256 acc[2][QDOTN_RW][QDOTN_RA], sum[2][QDOTN_RW];
#pragma GCC unroll 8
    for (int j = 0; j < QDOTN_RW; j++)
#pragma GCC unroll 2
        for (int par = 0; par < 2; par++) {
            sum[par][j] = _mm256_setzero_ps();
#pragma GCC unroll 8
            for (int i = 0; i < ra; i++)
                acc[par][j][i] = _mm256_setzero_ps();
        }
    for (int b0 = 0; b0 < nb; b0 += QDOTN_CHUNK) {
        const int b1 = b0 + QDOTN_CHUNK < nb ? b0 + QDOTN_CHUNK : nb;
        _Alignas(32) float sc[QDOTN_CHUNK][QDOTN_RW][8];
        /* b0 is even: block b0 + 2t + par has parity par */
        for (int b = b0; b < b1; b += 2) {
#pragma GCC unroll 2
            for (int par = 0; par < 2; par++) {
                if (par && b + 1 == b1)
                    break;
                const float *dsb = ds + (size_t)(b + par) * 16;
#pragma GCC unroll 8
                for (int j = 0; j < QDOTN_RW; j++) {
                    __m256 d, m;
                    block_scales(f, w[j] + (size_t)(b + par) * bytes, &d, &m);
                    _mm256_store_ps(sc[b + par - b0][j], _mm256_mul_ps(d, _mm256_load_ps(dsb)));
                    if (fmt_has_sum(f))
                        sum[par][j] =
                            _mm256_add_ps(sum[par][j], _mm256_mul_ps(m, _mm256_load_ps(dsb + 8)));
                }
            }
        }
#pragma GCC unroll 2
        for (int par = 0; par < 2; par++) {
            __m256 c[QDOTN_RW][QDOTN_RA];
#pragma GCC unroll 8
            for (int j = 0; j < QDOTN_RW; j++)
#pragma GCC unroll 8
                for (int i = 0; i < ra; i++)
                    c[j][i] = acc[par][j][i];
            for (int b = b0 + par; b < b1; b += 2) {
                const float *scb = sc[b - b0][0];
                __m256i x[QDOTN_RA];
#pragma GCC unroll 8
                for (int i = 0; i < ra; i++) {
                    x[i] = load32(a[i][b].qs);
                    if (fmt_signed(f) && QDOTN_VNNI)
                        x[i] = _mm256_xor_si256(x[i], _mm256_set1_epi8((char)0x80));
                }
#pragma GCC unroll 8
                for (int j = 0; j < QDOTN_RW; j++) {
                    const __m256i q = block_values(f, w[j] + (size_t)b * bytes);
#if QDOTN_VNNI
                    const __m256i corr =
                        fmt_signed(f)
                            ? _mm256_sub_epi32(_mm256_setzero_si256(),
                                               QDOT_DPBUSD_ACC(_mm256_setzero_si256(),
                                                               _mm256_set1_epi8((char)0x80), q))
                            : _mm256_setzero_si256();
#else
                    const __m256i qa = fmt_signed(f) ? _mm256_sign_epi8(q, q) : q;
#endif
#pragma GCC unroll 8
                    for (int i = 0; i < ra; i++) {
#if QDOTN_VNNI
                        const __m256i s = QDOT_DPBUSD_ACC(corr, fmt_signed(f) ? x[i] : q,
                                                          fmt_signed(f) ? q : x[i]);
#else
                        const __m256i s = fmt_signed(f) ? QDOT_DPBUSD(qa, _mm256_sign_epi8(x[i], q))
                                                        : QDOT_DPBUSD(q, x[i]);
#endif
                        c[j][i] = _mm256_fmadd_ps(_mm256_broadcast_ss(scb + 8 * j + i),
                                                  _mm256_cvtepi32_ps(s), c[j][i]);
                    }
                }
            }
#pragma GCC unroll 8
            for (int j = 0; j < QDOTN_RW; j++)
#pragma GCC unroll 8
                for (int i = 0; i < ra; i++)
                    acc[par][j][i] = c[j][i];
        }
    }
    const float k = fmt_k(f);
#pragma GCC unroll 8
    for (int j = 0; j < QDOTN_RW; j++) {
        float es[8];
        _mm256_storeu_ps(es, _mm256_add_ps(sum[0][j], sum[1][j]));
#pragma GCC unroll 8
        for (int i = 0; i < ra; i++)
            out[j * ra + i] = hsum(_mm256_add_ps(acc[0][j][i], acc[1][j][i])) + k * es[i];
    }
}

typedef void (*tile_fn)(int nb, const uint8_t *const *w, const tsr_q8a *const *a, const float *ds,
                        float *out);

/* Weight rows in groups of QDOTN_RW, activation rows in groups of
 * QDOTN_RA; a last group of weight rows repeats the last row, a last group
 * of 2..7 activation rows takes the 2-, 4- or 8-row tile with the last row
 * repeated, a single one `dot`. tiles[]: the tiles of 2, 4 and 8 rows. */
QDOTN_INLINE void dotn_rows(const tile_fn tiles[3], tsr_qdot_fn dot, int n, const void *w,
                            size_t ws, int nw, const void *a, size_t as, int na, float *y,
                            size_t ldy) {
    const int nb = n / TSR_QK;
    const uint8_t *W = w, *A = a;
    _Alignas(32) float stack[QDOTN_NB_STACK * 16];
    float *ds = nb <= QDOTN_NB_STACK ? stack : aligned_alloc(32, (size_t)nb * 16 * sizeof(float));
    if (!ds) {
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
        const tsr_q8a *ap[QDOTN_RA];
        for (int i = 0; i < ra; i++)
            ap[i] = (const tsr_q8a *)(A + (size_t)(i < left ? i0 + i : na - 1) * as);
        for (int b = 0; b < nb; b++) {
            float *d = ds + (size_t)b * 16;
            for (int i = 0; i < 8; i++) {
                d[i] = i < ra ? ap[i][b].d : 0.0f;
                d[8 + i] = i < ra ? ap[i][b].s : 0.0f;
            }
        }
        const int got = left < ra ? left : ra;
        for (int j0 = 0; j0 < nw; j0 += QDOTN_RW) {
            const uint8_t *wp[QDOTN_RW];
            for (int j = 0; j < QDOTN_RW; j++)
                wp[j] = W + (size_t)(j0 + j < nw ? j0 + j : nw - 1) * ws;
            float out[QDOTN_RW * QDOTN_RA];
            tiles[t](nb, wp, ap, ds, out);
            for (int j = 0; j < QDOTN_RW && j0 + j < nw; j++)
                for (int i = 0; i < got; i++)
                    y[(size_t)(i0 + i) * ldy + j0 + j] = out[j * ra + i];
        }
        i0 += got;
    }
    if (ds != stack)
        free(ds);
}

#define QDOTN(name, f, dot)                                                                        \
    static void name##_2(int nb, const uint8_t *const *w, const tsr_q8a *const *a,                 \
                         const float *ds, float *out) {                                            \
        tile(f, 2, nb, w, a, ds, out);                                                             \
    }                                                                                              \
    static void name##_4(int nb, const uint8_t *const *w, const tsr_q8a *const *a,                 \
                         const float *ds, float *out) {                                            \
        tile(f, 4, nb, w, a, ds, out);                                                             \
    }                                                                                              \
    static void name##_8(int nb, const uint8_t *const *w, const tsr_q8a *const *a,                 \
                         const float *ds, float *out) {                                            \
        tile(f, 8, nb, w, a, ds, out);                                                             \
    }                                                                                              \
    static void name(int n, const void *w, size_t ws, int nw, const void *a, size_t as, int na,    \
                     float *y, size_t ldy) {                                                       \
        static const tile_fn tiles[3] = {name##_2, name##_4, name##_8};                            \
        dotn_rows(tiles, dot, n, w, ws, nw, a, as, na, y, ldy);                                    \
    }

QDOTN(dotn_q8_0, F_Q8_0, dot_q8_0)
QDOTN(dotn_q4_0, F_Q4_0, dot_q4_0)
QDOTN(dotn_q4_1, F_Q4_1, dot_q4_1)
QDOTN(dotn_q5_0, F_Q5_0, dot_q5_0)
QDOTN(dotn_q5_1, F_Q5_1, dot_q5_1)
QDOTN(dotn_iq4_nl, F_IQ4_NL, dot_iq4_nl)
#undef QDOTN

#define K(fn)                                                                                      \
    { .dot = dot_##fn, .dotn = dotn_##fn, .act = TSR_ACT_Q8A, .isa = QDOT_LEVEL }
static const tsr_qkernel k_q8_0 = K(q8_0), k_q4_0 = K(q4_0), k_q4_1 = K(q4_1), k_q5_0 = K(q5_0),
                         k_q5_1 = K(q5_1), k_iq4_nl = K(iq4_nl);
#undef K

const tsr_qkernel *QDOT_TABLE(tsr_dtype t) {
    switch (t) {
    case TSR_Q8_0: return &k_q8_0;
    case TSR_Q4_0: return &k_q4_0;
    case TSR_Q4_1: return &k_q4_1;
    case TSR_Q5_0: return &k_q5_0;
    case TSR_Q5_1: return &k_q5_1;
    case TSR_IQ4_NL: return &k_iq4_nl;
    default: return QDOT_FALLBACK(t);
    }
}

/* ---- the activation quantizer (the AVX2 level only) ------------------------------ */

#ifdef QDOT_OWN
/* qdot.c's plain C quantizer, 8 floats at a time, byte for byte: max |x|
 * (exact in any order), d = max / 127 and 1 / d as there, q = x * (1/d)
 * rounded in the current mode (rintf's rounding) and packed, exact integer
 * sums; a block with a NaN or an infinity gets d = NaN, q = 0. */
static float block_d(const float *x, int n, float *inv) {
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        m = _mm256_max_ps(m, _mm256_and_ps(v, abs));
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
    if (_mm256_movemask_ps(nan) || !(amax <= FLT_MAX)) {
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

/* the 8 values at x times inv, rounded, as int32 (0 where d is NaN) */
static inline __m256i round8(const float *x, __m256 inv, int ok) {
    if (!ok)
        return _mm256_setzero_si256();
    return _mm256_cvtps_epi32(
        _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x), inv), _MM_FROUND_CUR_DIRECTION));
}

/* the low byte of each int32, sign-extended: what the plain C's (int8_t)
 * cast keeps (the same as the value where |v| <= 127; also where 1 / d
 * overflowed, in a block whose max |x| is under 2^-121, and x / d rounds to
 * INT_MIN: the bytes are 0 there too, and the sums wrap alike) */
static inline __m256i low_byte(__m256i q) {
    return _mm256_srai_epi32(_mm256_slli_epi32(q, 24), 24);
}

/* 32 int32 as their low bytes in order at out; returns their (wrapping) sum */
static inline int pack32(__m256i q0, __m256i q1, __m256i q2, __m256i q3, int8_t *out) {
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(low_byte(q0), low_byte(q1)),
                                         _mm256_packs_epi32(low_byte(q2), low_byte(q3)));
    _mm256_storeu_si256((__m256i *)out,
                        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 0, 3, 2)));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(t);
}

int tsr_quantize_act_avx2(tsr_act_kind k, const float *x, void *out, int n) {
    if (k == TSR_ACT_Q8K) {
        tsr_q8k *o = out;
        for (int b = 0; b < n / TSR_QKK; b++, x += TSR_QKK) {
            float inv;
            o[b].d = block_d(x, TSR_QKK, &inv);
            const int ok = o[b].d == o[b].d;
            const __m256 vi = _mm256_set1_ps(inv);
            for (int c = 0; c < TSR_QKK; c += 32) {
                const __m256i q0 = round8(x + c, vi, ok), q1 = round8(x + c + 8, vi, ok);
                const __m256i q2 = round8(x + c + 16, vi, ok), q3 = round8(x + c + 24, vi, ok);
                pack32(q0, q1, q2, q3, o[b].qs + c);
                /* the sums of each 16: lanes of q0 + q1 and of q2 + q3 */
                const __m256i s01 = _mm256_add_epi32(q0, q1), s23 = _mm256_add_epi32(q2, q3);
                const __m256i h = _mm256_hadd_epi32(s01, s23); /* 01 01 23 23 | 01 01 23 23 */
                __m128i t =
                    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                t = _mm_hadd_epi32(t, t); /* sum01, sum23, ... */
                o[b].bsums[c / 16] = (int16_t)_mm_cvtsi128_si32(t);
                o[b].bsums[c / 16 + 1] = (int16_t)_mm_extract_epi32(t, 1);
            }
        }
        return 1;
    }
    tsr_q8a *o = out;
    for (int b = 0; b < n / TSR_QK; b++, x += TSR_QK) {
        float inv;
        const float d = block_d(x, TSR_QK, &inv);
        const int ok = d == d;
        const __m256 vi = _mm256_set1_ps(inv);
        const int sum = pack32(round8(x, vi, ok), round8(x + 8, vi, ok), round8(x + 16, vi, ok),
                               round8(x + 24, vi, ok), o[b].qs);
        o[b].d = d;
        o[b].s = d * (float)sum;
    }
    return 1;
}
#endif

#else /* built without the level's instructions: no kernels of its own */

const tsr_qkernel *QDOT_TABLE(tsr_dtype t) { return QDOT_FALLBACK(t); }

#ifdef QDOT_OWN
int tsr_quantize_act_avx2(tsr_act_kind k, const float *x, void *out, int n) {
    (void)k, (void)x, (void)out, (void)n;
    return 0;
}
#endif

#endif
