/* kernels/cpu/cpu_attention.c - the CPU backend's KV store and blocked
 * (online-softmax) paged attention over an f16 or f32 cache; the contract and
 * the scheme are in cpu_attention.h.
 *
 * Layout of the work: tokens are sorted by (sequence, position) and cut into
 * tiles; an item is (tile, KV head, range of that head's query heads). For an
 * item the keys 0 .. the tile's last position are visited in blocks of KEYS
 * positions. Each block's K and V rows of the KV head are gathered once (row
 * pointers into an f32 cache, or rows converted from f16 into a scratch) and
 * then every query row of the item whose position reaches the block takes its
 * online-softmax step over the block's first n = min(KEYS, pos + 1 - start)
 * keys (with AVX2 two rows with the same n at a time, each K and V chunk
 * loaded once for both):
 *     s_j = scale * q.k_j,  m' = max(m, max_j s_j),  p_j = exp(s_j - m'),
 *     l = l exp(m - m') + sum_j p_j,  o = o exp(m - m') + sum_j p_j v_j,
 * and at the end o / l. The running o lives in the output row itself.
 *
 * What it is not: the maths of any other op (cpu_backend.c), training
 * attention (cpu_train.c). */
#include "kernels/cpu/cpu_attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ATTN_X86 1
#define ATTN_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define ATTN_X86 0
#endif

enum {
    KEYS = 32, /* positions per key block: blocks start at multiples of KEYS */
    TILE = 16, /* tokens of one sequence per tile */
};

/* ---- KV store ------------------------------------------------------------------------ */

#if ATTN_X86
ATTN_AVX2 static void f32_to_f16_avx2(uint16_t *dst, const float *src, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = tsr_f32_to_f16(src[i]);
}
#endif

static void f32_to_f16_rows(uint16_t *dst, const float *src, int n, tsr_isa isa) {
#if ATTN_X86
    if (isa != TSR_ISA_REF) {
        f32_to_f16_avx2(dst, src, n);
        return;
    }
#endif
    (void)isa;
    for (int i = 0; i < n; i++)
        dst[i] = tsr_f32_to_f16(src[i]);
}

tsr_status tsr_cpu_kv_store(void *k_cache, void *v_cache, tsr_dtype cache_dtype, const float *k,
                            const float *v, const int32_t *slot, int n, int kv_dim, tsr_isa isa) {
    if (cache_dtype == TSR_F32) {
        const size_t row = (size_t)kv_dim * sizeof(float);
        for (int t = 0; t < n; t++) {
            memcpy((char *)k_cache + (size_t)slot[t] * row, k + (size_t)t * kv_dim, row);
            memcpy((char *)v_cache + (size_t)slot[t] * row, v + (size_t)t * kv_dim, row);
        }
        return TSR_OK;
    }
    if (cache_dtype != TSR_F16)
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "cpu: the KV cache holds f16 or f32, not %s (%d)",
                             tsr_dtype_name(cache_dtype) ? tsr_dtype_name(cache_dtype) : "?",
                             (int)cache_dtype);
    uint16_t *kc = k_cache, *vc = v_cache;
    for (int t = 0; t < n; t++) {
        f32_to_f16_rows(kc + (size_t)slot[t] * kv_dim, k + (size_t)t * kv_dim, kv_dim, isa);
        f32_to_f16_rows(vc + (size_t)slot[t] * kv_dim, v + (size_t)t * kv_dim, kv_dim, isa);
    }
    return TSR_OK;
}

/* ---- one query row over one key block -------------------------------------------------- */

/* The state one block step reads and updates: k[j], v[j] (j < n) the block's
 * rows of one KV head in f32; s a 2 * KEYS-float scratch; m, l the row's running
 * maximum and sum; o its running output (head_dim). */
typedef struct {
    const float *const *k, *const *v;
    int n, hd;
    float scale;
    float *s;
} block_in;

static void row_block_ref(const block_in *b, const float *q, float *m, float *l, float *o) {
    const int n = b->n, hd = b->hd;
    float bm = -INFINITY;
    for (int j = 0; j < n; j++) {
        const float *kj = b->k[j];
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int i = 0; i < hd; i++)
            dot += q[i] * kj[i];
        b->s[j] = dot * b->scale;
        if (b->s[j] > bm)
            bm = b->s[j];
    }
    const float mn = bm > *m ? bm : *m;
    const float corr = expf(*m - mn);
    float sum = 0;
    for (int j = 0; j < n; j++) {
        b->s[j] = expf(b->s[j] - mn);
        sum += b->s[j];
    }
    *l = *l * corr + sum;
    *m = mn;
    if (corr != 1.0f)
        for (int i = 0; i < hd; i++)
            o[i] *= corr;
    for (int j = 0; j < n; j++) {
        const float *vj = b->v[j];
        const float p = b->s[j];
#pragma omp simd
        for (int i = 0; i < hd; i++)
            o[i] += p * vj[i];
    }
}

#if ATTN_X86
/* exp(x) for x <= 0 (scores minus their maximum), within 2 ulp: x = n ln2 +
 * r with |r| <= ln2 / 2, e^r by Cephes' expf polynomial, 2^n through the
 * exponent bits. Below -87 (where 2^n would leave the normal range) the
 * result is 0: such a weight is under 1e-38 of the row's largest, which is 1.
 * NaN stays NaN. */
ATTN_AVX2 static inline __m256 exp_avx2(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    const __m256 zero_mask = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(lo, x); /* NaN in x passes (max returns its second operand) */
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(zero_mask, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

ATTN_AVX2 static inline float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ATTN_AVX2 static inline float hmax_avx2(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* s[j .. j+7] = scale * q.k[j + i] for 8 keys: one accumulator per key over
 * the head's 8-float chunks, then one fixed reduction tree, so a key's score
 * does not depend on which keys share its group. */
ATTN_AVX2 static inline void scores8_avx2(const float *q, const float *const *k, int hd,
                                          __m256 scale, float *s) {
    __m256 a[8];
#pragma GCC unroll 8
    for (int u = 0; u < 8; u++)
        a[u] = _mm256_setzero_ps();
    for (int i = 0; i < hd; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++)
            a[u] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k[u] + i), a[u]);
    }
    const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    const __m256 sum =
        _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
    _mm256_storeu_ps(s, _mm256_mul_ps(sum, scale));
}

/* o[off .. off + 8 nv) += sum_j p[j] v[j][off ..], the chunk in registers. */
ATTN_AVX2 static inline __attribute__((always_inline)) void
pv_chunk_avx2(float *o, const float *p, const float *const *v, int n, int off, const int nv) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int c = 0; c < nv; c++)
        acc[c] = _mm256_loadu_ps(o + off + 8 * c);
    for (int j = 0; j < n; j++) {
        const __m256 pj = _mm256_broadcast_ss(p + j);
        const float *vj = v[j] + off;
#pragma GCC unroll 8
        for (int c = 0; c < nv; c++)
            acc[c] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8 * c), acc[c]);
    }
#pragma GCC unroll 8
    for (int c = 0; c < nv; c++)
        _mm256_storeu_ps(o + off + 8 * c, acc[c]);
}

/* s[j .. j+3] = scale * qa.k[j + u], t[..] the same for qb: two query rows
 * against 4 keys, each key loaded once for both. Every (row, key) sum runs the
 * chunks in the same order and reduces its lanes by the same tree as
 * scores8_avx2 ((0+1)+(2+3)) + ((4+5)+(6+7)), so a row's scores are the same
 * bits whichever kernel computed them. */
ATTN_AVX2 static inline void scores2x4_avx2(const float *qa, const float *qb, const float *const *k,
                                            int hd, __m256 scale, float *s, float *t) {
    __m256 a[4], c[4];
#pragma GCC unroll 4
    for (int u = 0; u < 4; u++)
        a[u] = c[u] = _mm256_setzero_ps();
    for (int i = 0; i < hd; i += 8) {
        const __m256 xa = _mm256_loadu_ps(qa + i), xb = _mm256_loadu_ps(qb + i);
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++) {
            __m256 kv = _mm256_loadu_ps(k[u] + i);
            __asm__("" : "+x"(kv)); /* one load for both rows: GCC would fold it into each FMA */
            a[u] = _mm256_fmadd_ps(xa, kv, a[u]);
            c[u] = _mm256_fmadd_ps(xb, kv, c[u]);
        }
    }
    const __m256 ua = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 uc = _mm256_hadd_ps(_mm256_hadd_ps(c[0], c[1]), _mm256_hadd_ps(c[2], c[3]));
    const __m128 sc = _mm256_castps256_ps128(scale);
    _mm_storeu_ps(
        s, _mm_mul_ps(_mm_add_ps(_mm256_castps256_ps128(ua), _mm256_extractf128_ps(ua, 1)), sc));
    _mm_storeu_ps(
        t, _mm_mul_ps(_mm_add_ps(_mm256_castps256_ps128(uc), _mm256_extractf128_ps(uc, 1)), sc));
}

/* The online-softmax step of one row once its scores s[0 .. n) are in:
 * s[n .. n8) = -inf, the new maximum into *m, s = exp(s - m), *l and the
 * running output o (hd floats) rescaled. */
ATTN_AVX2 static inline void softmax_step_avx2(float *s, int n, int n8, float *m, float *l,
                                               float *o, int hd) {
    for (int j = n; j < n8; j++)
        s[j] = -INFINITY;
    __m256 mx = _mm256_loadu_ps(s);
    for (int j = 8; j < n8; j += 8)
        mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + j));
    const float bm = hmax_avx2(mx);
    const float mn = bm > *m ? bm : *m;
    const float corr = expf(*m - mn);
    const __m256 mnv = _mm256_set1_ps(mn);
    __m256 sum = _mm256_setzero_ps();
    for (int j = 0; j < n8; j += 8) {
        const __m256 p = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), mnv));
        _mm256_storeu_ps(s + j, p);
        sum = _mm256_add_ps(sum, p);
    }
    *l = *l * corr + hsum_avx2(sum);
    *m = mn;
    if (corr != 1.0f) {
        const __m256 cv = _mm256_set1_ps(corr);
        for (int i = 0; i < hd; i += 8)
            _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(o + i), cv));
    }
}

/* b->k holds valid pointers up to n rounded up to 8 (the caller pads with
 * row 0); hd is a multiple of 8. */
ATTN_AVX2 static void row_block_avx2(const block_in *b, const float *q, float *m, float *l,
                                     float *o) {
    const int n = b->n, hd = b->hd, n8 = (n + 7) & ~7;
    float *s = b->s;
    const __m256 scale = _mm256_set1_ps(b->scale);
    for (int j = 0; j < n8; j += 8)
        scores8_avx2(q, b->k + j, hd, scale, s + j);
    softmax_step_avx2(s, n, n8, m, l, o, hd);
    for (int off = 0; off < hd; off += 64) {
        switch ((hd - off) / 8) {
        case 1: pv_chunk_avx2(o, s, b->v, n, off, 1); break;
        case 2: pv_chunk_avx2(o, s, b->v, n, off, 2); break;
        case 3: pv_chunk_avx2(o, s, b->v, n, off, 3); break;
        case 4: pv_chunk_avx2(o, s, b->v, n, off, 4); break;
        case 5: pv_chunk_avx2(o, s, b->v, n, off, 5); break;
        case 6: pv_chunk_avx2(o, s, b->v, n, off, 6); break;
        case 7: pv_chunk_avx2(o, s, b->v, n, off, 7); break;
        default: pv_chunk_avx2(o, s, b->v, n, off, 8); break;
        }
    }
}

/* oa[off .. off + 8 nv) += sum_j pa[j] v[j][off ..], and ob with pb: each V
 * chunk loaded once for two rows; per lane the same sequence of FMAs as
 * pv_chunk_avx2. */
ATTN_AVX2 static inline __attribute__((always_inline)) void
pv2_chunk_avx2(float *oa, float *ob, const float *pa, const float *pb, const float *const *v, int n,
               int off, const int nv) {
    __m256 a[4], c[4];
#pragma GCC unroll 4
    for (int u = 0; u < nv; u++) {
        a[u] = _mm256_loadu_ps(oa + off + 8 * u);
        c[u] = _mm256_loadu_ps(ob + off + 8 * u);
    }
    for (int j = 0; j < n; j++) {
        const __m256 xa = _mm256_broadcast_ss(pa + j), xb = _mm256_broadcast_ss(pb + j);
        const float *vj = v[j] + off;
#pragma GCC unroll 4
        for (int u = 0; u < nv; u++) {
            __m256 vv = _mm256_loadu_ps(vj + 8 * u);
            __asm__("" : "+x"(vv)); /* as in scores2x4_avx2 */
            a[u] = _mm256_fmadd_ps(xa, vv, a[u]);
            c[u] = _mm256_fmadd_ps(xb, vv, c[u]);
        }
    }
#pragma GCC unroll 4
    for (int u = 0; u < nv; u++) {
        _mm256_storeu_ps(oa + off + 8 * u, a[u]);
        _mm256_storeu_ps(ob + off + 8 * u, c[u]);
    }
}

/* Two rows over the same n keys of the block: the bits of row_block_avx2 for
 * each, with every K and V chunk loaded once for both. b->s holds 2 * KEYS. */
ATTN_AVX2 static void rows2_block_avx2(const block_in *b, const float *qa, const float *qb,
                                       float *ma, float *la, float *oa, float *mb, float *lb,
                                       float *ob) {
    const int n = b->n, hd = b->hd, n8 = (n + 7) & ~7;
    float *sa = b->s, *sb = b->s + KEYS;
    const __m256 scale = _mm256_set1_ps(b->scale);
    for (int j = 0; j < n8; j += 4)
        scores2x4_avx2(qa, qb, b->k + j, hd, scale, sa + j, sb + j);
    softmax_step_avx2(sa, n, n8, ma, la, oa, hd);
    softmax_step_avx2(sb, n, n8, mb, lb, ob, hd);
    for (int off = 0; off < hd; off += 32) {
        switch ((hd - off) / 8) {
        case 1: pv2_chunk_avx2(oa, ob, sa, sb, b->v, n, off, 1); break;
        case 2: pv2_chunk_avx2(oa, ob, sa, sb, b->v, n, off, 2); break;
        case 3: pv2_chunk_avx2(oa, ob, sa, sb, b->v, n, off, 3); break;
        default: pv2_chunk_avx2(oa, ob, sa, sb, b->v, n, off, 4); break;
        }
    }
}

ATTN_AVX2 static void f16_to_f32_avx2(float *dst, const uint16_t *src, int n) {
    for (int i = 0; i < n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
}
#endif

/* ---- items and the driver ------------------------------------------------------------ */

typedef struct {
    int32_t seq, pos, tok;
} tok_key;

typedef struct {
    int first, count; /* into the sorted tokens */
    int64_t cost;     /* sum of (pos + 1): keys visited per query row */
} tile;

typedef struct {
    int tile, kv_head, h0, h1; /* query heads kv_head * group + [h0, h1) */
} item;

typedef struct {
    const tsr_attn_desc *d;
    const float *q;
    float *out;
    const void *kc, *vc;
    const tok_key *toks;
    int vec; /* the AVX2 kernels */
} attn_job;

/* One thread's scratch. */
typedef struct {
    float *kbuf, *vbuf;     /* (KEYS, hd) f16 rows converted */
    const float **kp, **vp; /* (KEYS) rows of the block */
    float *s;               /* (2, KEYS) scores, then weights, of one or two rows */
    float *m, *l;           /* (TILE * group) per query row of the item */
} scratch;

static int cmp_tok(const void *a, const void *b) {
    const tok_key *x = a, *y = b;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    if (x->pos != y->pos)
        return x->pos < y->pos ? -1 : 1;
    return (x->tok > y->tok) - (x->tok < y->tok);
}

/* Keys of the block starting at p0 that a query at position pos sees. */
static int keys_of(int pos, int p0) { return pos + 1 - p0 < KEYS ? pos + 1 - p0 : KEYS; }

static void run_item(const attn_job *job, const tile *t, const item *it, scratch *w) {
    const tsr_attn_desc *d = job->d;
    const int hd = d->head_dim, group = d->n_head / d->n_kv_head, bs = d->block_size;
    const int heads = it->h1 - it->h0, hq0 = it->kv_head * group + it->h0;
    const size_t kv_dim = (size_t)d->n_kv_head * hd, head_off = (size_t)it->kv_head * hd;
    const tok_key *toks = job->toks + t->first;
    const int nt = t->count;
    const int32_t *table = d->block_tables + (size_t)toks[0].seq * d->max_blocks;
    const int f16 = d->kv_dtype == TSR_F16;

    for (int r = 0; r < nt * heads; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0;
    }
    for (int ti = 0; ti < nt; ti++)
        memset(job->out + ((size_t)toks[ti].tok * d->n_head + hq0) * hd, 0,
               (size_t)heads * hd * sizeof(float));

    const int max_pos = toks[nt - 1].pos;
    block_in b = {w->kp, w->vp, 0, hd, d->scale, w->s};
    int first = 0;
    for (int p0 = 0; p0 <= max_pos; p0 += KEYS) {
        const int nk = keys_of(max_pos, p0);
        for (int j = 0; j < nk; j++) {
            const int p = p0 + j;
            const size_t off = ((size_t)table[p / bs] * bs + p % bs) * kv_dim + head_off;
            if (!f16) {
                w->kp[j] = (const float *)job->kc + off;
                w->vp[j] = (const float *)job->vc + off;
                continue;
            }
            const uint16_t *ks = (const uint16_t *)job->kc + off,
                           *vs = (const uint16_t *)job->vc + off;
            float *kd = w->kbuf + (size_t)j * hd, *vd = w->vbuf + (size_t)j * hd;
#if ATTN_X86
            if (job->vec) {
                f16_to_f32_avx2(kd, ks, hd);
                f16_to_f32_avx2(vd, vs, hd);
            } else
#endif
            {
                for (int i = 0; i < hd; i++) {
                    kd[i] = tsr_f16_to_f32(ks[i]);
                    vd[i] = tsr_f16_to_f32(vs[i]);
                }
            }
            w->kp[j] = kd;
            w->vp[j] = vd;
        }
        for (int j = nk; j < KEYS; j++) /* padding the 8-key score groups read */
            w->kp[j] = w->kp[0];
        while (first < nt && toks[first].pos < p0)
            first++;
        /* the rows (token ti, head h) = r = ti * heads + h that reach this
         * block; with AVX2, two rows that take the same keys go together */
        for (int r = first * heads; r < nt * heads;) {
            const int n = keys_of(toks[r / heads].pos, p0);
            const size_t row = ((size_t)toks[r / heads].tok * d->n_head + hq0 + r % heads) * hd;
            b.n = n;
#if ATTN_X86
            if (job->vec && r + 1 < nt * heads && keys_of(toks[(r + 1) / heads].pos, p0) == n) {
                const size_t row2 =
                    ((size_t)toks[(r + 1) / heads].tok * d->n_head + hq0 + (r + 1) % heads) * hd;
                rows2_block_avx2(&b, job->q + row, job->q + row2, &w->m[r], &w->l[r],
                                 job->out + row, &w->m[r + 1], &w->l[r + 1], job->out + row2);
                r += 2;
                continue;
            }
            if (job->vec) {
                row_block_avx2(&b, job->q + row, &w->m[r], &w->l[r], job->out + row);
                r++;
                continue;
            }
#endif
            row_block_ref(&b, job->q + row, &w->m[r], &w->l[r], job->out + row);
            r++;
        }
    }
    for (int ti = 0; ti < nt; ti++)
        for (int h = 0; h < heads; h++) {
            float *o = job->out + ((size_t)toks[ti].tok * d->n_head + hq0 + h) * hd;
            const float inv = 1.0f / w->l[ti * heads + h];
            for (int i = 0; i < hd; i++)
                o[i] *= inv;
        }
}

/* The most expensive tiles first (dynamic scheduling then evens out the
 * threads), ties in token order. */
static int cmp_tile_cost(const void *a, const void *b) {
    const tile *x = a, *y = b;
    if (x->cost != y->cost)
        return x->cost > y->cost ? -1 : 1;
    return (x->first > y->first) - (x->first < y->first);
}

static int n_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

tsr_status tsr_cpu_attention(float *out, const float *q, const void *k_cache, const void *v_cache,
                             const tsr_attn_desc *d, tsr_isa isa) {
    if (d->kv_dtype != TSR_F16 && d->kv_dtype != TSR_F32)
        return tsr_error_set(
            TSR_ERR_UNSUPPORTED, "cpu: attention reads a KV cache of f16 or f32, not %s (%d)",
            tsr_dtype_name(d->kv_dtype) ? tsr_dtype_name(d->kv_dtype) : "?", (int)d->kv_dtype);
    if (d->n_kv_head <= 0 || d->n_head % d->n_kv_head != 0 || d->head_dim <= 0)
        return tsr_error_set(TSR_ERR_INVALID,
                             "cpu: attention needs n_kv_head (%d) to divide n_head (%d) and "
                             "head_dim (%d) > 0",
                             d->n_kv_head, d->n_head, d->head_dim);
    const int n = d->n_tokens, hd = d->head_dim, group = d->n_head / d->n_kv_head;
    if (n <= 0)
        return TSR_OK;
    tok_key *toks = malloc((size_t)n * sizeof *toks);
    tile *tiles = malloc((size_t)n * sizeof *tiles);
    item *items = NULL;
    tsr_status st = TSR_OK;
    if (!toks || !tiles)
        goto nomem;
    for (int i = 0; i < n; i++)
        toks[i] = (tok_key){d->seq[i], d->pos[i], i};
    qsort(toks, (size_t)n, sizeof *toks, cmp_tok);
    int n_tiles = 0;
    for (int i = 0; i < n; i++) {
        if (i == 0 || toks[i].seq != toks[i - 1].seq || tiles[n_tiles - 1].count == TILE)
            tiles[n_tiles++] = (tile){i, 0, 0};
        tiles[n_tiles - 1].count++;
        tiles[n_tiles - 1].cost += (int64_t)toks[i].pos + 1;
    }
    qsort(tiles, (size_t)n_tiles, sizeof *tiles, cmp_tile_cost);

    const int threads = n_threads();
    /* Too few (tile, KV head) items to share out (decode of a few
     * sequences): cut each KV head's query heads into pairs, which still
     * read each K/V block once for two rows. */
    const int split = group > 1 && n_tiles * d->n_kv_head < 4 * threads ? (group + 1) / 2 : 1;
    const int n_items = n_tiles * d->n_kv_head * split;
    items = malloc((size_t)n_items * sizeof *items);
    if (!items)
        goto nomem;
    for (int i = 0, k = 0; i < n_tiles; i++)
        for (int h = 0; h < d->n_kv_head; h++)
            for (int s = 0; s < split; s++)
                items[k++] = (item){i, h, s * group / split, (s + 1) * group / split};

    attn_job job = {d, q, out, k_cache, v_cache, toks, 0};
#if ATTN_X86
    job.vec = isa != TSR_ISA_REF && hd % 8 == 0;
#else
    (void)isa;
#endif
    int failed = 0;
#pragma omp parallel if (n_items > 1) reduction(| : failed)
    {
        scratch w = {0};
        const int f16 = d->kv_dtype == TSR_F16;
        w.kbuf = f16 ? malloc((size_t)KEYS * hd * sizeof(float)) : NULL;
        w.vbuf = f16 ? malloc((size_t)KEYS * hd * sizeof(float)) : NULL;
        w.kp = malloc(KEYS * sizeof *w.kp);
        w.vp = malloc(KEYS * sizeof *w.vp);
        w.s = malloc(2 * KEYS * sizeof *w.s);
        w.m = malloc((size_t)TILE * group * sizeof *w.m);
        w.l = malloc((size_t)TILE * group * sizeof *w.l);
        const int ok = w.kp && w.vp && w.s && w.m && w.l && (!f16 || (w.kbuf && w.vbuf));
        if (!ok)
            failed = 1;
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < n_items; i++)
            if (ok)
                run_item(&job, &tiles[items[i].tile], &items[i], &w);
        free(w.kbuf), free(w.vbuf), free(w.kp), free(w.vp), free(w.s), free(w.m), free(w.l);
    }
    if (failed)
        st = tsr_error_set(TSR_ERR_NOMEM, "cpu: attention scratch allocation failed");
    goto done;
nomem:
    st =
        tsr_error_set(TSR_ERR_NOMEM, "cpu: attention cannot allocate its work list (%d tokens)", n);
done:
    free(toks), free(tiles), free(items);
    return st;
}
