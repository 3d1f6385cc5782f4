/* tests/unit/test_attention.c - kernels/cpu/cpu_attention: the CPU's KV store
 * and blocked paged attention at every instruction-set level it has.
 *
 *  - kv_store into an f16 cache: every level writes exactly tsr_f32_to_f16's
 *    bits (round to nearest even, subnormals, overflow to inf, the halfway
 *    cases), NaN stays NaN; into an f32 cache, the values themselves.
 *  - attention, f32 and f16 caches, head dims 64, 48, 80, 128 and 5 (not a
 *    multiple of 8: plain C at every level), GQA, MHA and MQA, several
 *    sequences, contexts over many key blocks (up to 700 positions):
 *      * within 1e-6 (V is in [-1, 1]) of the unblocked softmax the CPU
 *        backend ran before (one float scores row per query, a plain sum),
 *        on the values the cache holds;
 *      * the AVX2 level within 1e-6 of plain C;
 *      * each token's output bitwise the same whatever it is batched with
 *        (alone, in the batch, the batch reversed) and however many threads
 *        run (1 or 3): the engine's concurrent and single runs must agree.
 * The double-precision reference of every backend's attention is
 * tests/unit/test_kernels.c; this test is about the blocked scheme's own
 * promises. A level the CPU lacks is skipped with a message. Exits 0 on
 * success, 1 with a message at the first failure. */
#include "kernels/cpu/cpu_attention.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "tests/common/check.h"

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ---- kv_store ------------------------------------------------------------------------ */

static void test_store(tu_rng *r, tsr_isa isa) {
    enum { N = 4096, DIM = 37 }; /* DIM: a vector body and a scalar tail per row */
    float *x = tu_xmalloc(N * sizeof *x);
    /* edge values, then random magnitudes over f16's whole range and beyond */
    static const float edge[] = {0.0f,          -0.0f,         1.0f,           65504.0f,
                                 65519.0f,      65520.0f,      -65520.0f,      1e6f,
                                 INFINITY,      -INFINITY,     5.9604645e-8f,  2.9802322e-8f,
                                 2.9802326e-8f, 6.1035156e-5f, 6.1031e-5f,     1.0009766f,
                                 1.00048828f,   1.00146484f,   -3.0517578e-5f, 1e-10f};
    const size_t n_edge = sizeof edge / sizeof edge[0];
    for (size_t i = 0; i < N; i++) {
        if (i < n_edge) {
            x[i] = edge[i];
            continue;
        }
        const double e = -30 + 50 * tu_rng_unit(r), m = ldexp(1.0, (int)e);
        x[i] = (float)((tu_rng_unit(r) < 0.5 ? -1 : 1) * m * (1 + tu_rng_unit(r)));
    }
    x[N - 1] = NAN;
    enum { ROWS = N / DIM };
    int32_t slot[ROWS];
    for (int i = 0; i < ROWS; i++)
        slot[i] = ROWS - 1 - i; /* reversed: rows land elsewhere */
    uint16_t *kc = tu_xmalloc(N * sizeof *kc), *vc = tu_xmalloc(N * sizeof *vc);
    CHECK_OK(tsr_cpu_kv_store(kc, vc, TSR_F16, x, x, slot, ROWS, DIM, isa));
    for (int t = 0; t < ROWS; t++)
        for (int i = 0; i < DIM; i++) {
            const float v = x[(size_t)t * DIM + i];
            const uint16_t got = kc[(size_t)slot[t] * DIM + i], want = tsr_f32_to_f16(v);
            if (isnan(v))
                CHECK(isnan(tsr_f16_to_f32(got)), "%s: NaN stored as 0x%04x", tsr_isa_name(isa),
                      got);
            else
                CHECK(got == want && vc[(size_t)slot[t] * DIM + i] == want,
                      "%s: f16 store of %.9g gave 0x%04x, want 0x%04x", tsr_isa_name(isa),
                      (double)v, got, want);
        }
    float *fk = tu_xmalloc(N * sizeof *fk), *fv = tu_xmalloc(N * sizeof *fv);
    CHECK_OK(tsr_cpu_kv_store(fk, fv, TSR_F32, x, x, slot, ROWS, DIM, isa));
    for (int t = 0; t < ROWS; t++)
        CHECK(!memcmp(fk + (size_t)slot[t] * DIM, x + (size_t)t * DIM, DIM * sizeof *x) &&
                  !memcmp(fv + (size_t)slot[t] * DIM, x + (size_t)t * DIM, DIM * sizeof *x),
              "%s: f32 store changed row %d", tsr_isa_name(isa), t);
    CHECK_ERR(tsr_cpu_kv_store(kc, vc, TSR_BF16, x, x, slot, ROWS, DIM, isa), TSR_ERR_UNSUPPORTED,
              "bf16");
    free(x), free(kc), free(vc), free(fk), free(fv);
}

/* ---- attention ----------------------------------------------------------------------- */

typedef struct {
    int n_head, n_kv, hd, bs, n_seqs;
    int len[3];   /* positions of each sequence (all in the cache) */
    int fresh[3]; /* the last `fresh` positions of each are the batch */
    const char *label;
} attn_case;

static const attn_case cases[] = {
    {9, 3, 64, 16, 2, {700, 40}, {3, 40}, "long context beside a prefill"},
    {8, 2, 48, 16, 3, {33, 64, 97}, {1, 64, 20}, "hd48, three sequences"},
    {4, 1, 80, 8, 2, {65, 5}, {17, 5}, "hd80 mqa"},
    {9, 3, 128, 16, 1, {130}, {130}, "hd128 prefill"},
    {4, 4, 64, 4, 2, {31, 33}, {31, 2}, "mha around a block edge"},
    {3, 1, 5, 1, 2, {50, 9}, {50, 1}, "hd5 (plain C)"},
};

/* A case's cache and batch. */
typedef struct {
    const attn_case *c;
    tsr_dtype kt;
    int kv_dim, q_dim, max_blocks, n;
    int32_t *tables;    /* (n_seqs, max_blocks) */
    void *kc, *vc;      /* the caches */
    float *K[3], *V[3]; /* what the cache holds, by (seq, pos), f32 */
    int32_t *seq, *pos; /* (n) the batch */
    float *q;           /* (n, q_dim) */
} setup;

static void setup_init(setup *S, const attn_case *c, tsr_dtype kt, tu_rng *r) {
    memset(S, 0, sizeof *S);
    S->c = c;
    S->kt = kt;
    S->kv_dim = c->n_kv * c->hd;
    S->q_dim = c->n_head * c->hd;
    int total_blocks = 0;
    for (int s = 0; s < c->n_seqs; s++) {
        const int nb = (c->len[s] + c->bs - 1) / c->bs;
        S->max_blocks = nb > S->max_blocks ? nb : S->max_blocks;
        total_blocks += nb;
        S->n += c->fresh[s];
    }
    int *pool = tu_xmalloc((size_t)total_blocks * sizeof *pool);
    for (int b = 0; b < total_blocks; b++)
        pool[b] = b;
    tu_shuffle_int(r, pool, total_blocks);
    S->tables = tu_xmalloc((size_t)c->n_seqs * S->max_blocks * sizeof *S->tables);
    for (int s = 0, k = 0; s < c->n_seqs; s++)
        for (int j = 0; j < S->max_blocks; j++)
            S->tables[s * S->max_blocks + j] = j < (c->len[s] + c->bs - 1) / c->bs ? pool[k++] : -1;
    free(pool);
    const size_t elt = kt == TSR_F16 ? 2 : 4;
    const size_t cache_n = (size_t)total_blocks * c->bs * S->kv_dim;
    S->kc = tu_xmalloc(cache_n * elt);
    S->vc = tu_xmalloc(cache_n * elt);
    memset(S->kc, 0xff, cache_n * elt); /* NaN in both types */
    memset(S->vc, 0xff, cache_n * elt);
    for (int s = 0; s < c->n_seqs; s++) {
        const size_t m = (size_t)c->len[s] * S->kv_dim;
        S->K[s] = tu_xmalloc(m * sizeof(float));
        S->V[s] = tu_xmalloc(m * sizeof(float));
        tu_rng_fill(r, S->K[s], m, -1, 1);
        tu_rng_fill(r, S->V[s], m, -1, 1);
        int32_t *slot = tu_xmalloc((size_t)c->len[s] * sizeof *slot);
        for (int p = 0; p < c->len[s]; p++)
            slot[p] = S->tables[s * S->max_blocks + p / c->bs] * c->bs + p % c->bs;
        CHECK_OK(tsr_cpu_kv_store(S->kc, S->vc, kt, S->K[s], S->V[s], slot, c->len[s], S->kv_dim,
                                  TSR_ISA_REF));
        free(slot);
        if (kt == TSR_F16) /* the reference reads what the cache holds */
            for (size_t i = 0; i < m; i++) {
                S->K[s][i] = tsr_f16_to_f32(tsr_f32_to_f16(S->K[s][i]));
                S->V[s][i] = tsr_f16_to_f32(tsr_f32_to_f16(S->V[s][i]));
            }
    }
    S->seq = tu_xmalloc((size_t)S->n * sizeof *S->seq);
    S->pos = tu_xmalloc((size_t)S->n * sizeof *S->pos);
    int *order = tu_xmalloc((size_t)S->n * sizeof *order);
    for (int i = 0; i < S->n; i++)
        order[i] = i;
    tu_shuffle_int(r, order, S->n); /* sequences interleave in the batch */
    for (int s = 0, k = 0; s < c->n_seqs; s++)
        for (int p = c->len[s] - c->fresh[s]; p < c->len[s]; p++, k++) {
            S->seq[order[k]] = s;
            S->pos[order[k]] = p;
        }
    free(order);
    S->q = tu_xmalloc((size_t)S->n * S->q_dim * sizeof *S->q);
    tu_rng_fill(r, S->q, (size_t)S->n * S->q_dim, -2, 2);
}

static void setup_free(setup *S) {
    free(S->tables), free(S->kc), free(S->vc), free(S->seq), free(S->pos), free(S->q);
    for (int s = 0; s < S->c->n_seqs; s++)
        free(S->K[s]), free(S->V[s]);
}

/* Attention of tokens idx[0 .. m) of the batch, in that order, on `threads`
 * threads at level isa; out (n, q_dim) gets their rows. */
static void run(const setup *S, const int *idx, int m, tsr_isa isa, int threads, float *out) {
    const attn_case *c = S->c;
    int32_t *seq = tu_xmalloc((size_t)m * sizeof *seq), *pos = tu_xmalloc((size_t)m * sizeof *pos);
    float *q = tu_xmalloc((size_t)m * S->q_dim * sizeof *q);
    float *o = tu_xmalloc((size_t)m * S->q_dim * sizeof *o);
    for (int i = 0; i < m; i++) {
        seq[i] = S->seq[idx[i]];
        pos[i] = S->pos[idx[i]];
        memcpy(q + (size_t)i * S->q_dim, S->q + (size_t)idx[i] * S->q_dim,
               (size_t)S->q_dim * sizeof *q);
    }
    tsr_attn_desc d = {
        .n_tokens = m,
        .n_head = c->n_head,
        .n_kv_head = c->n_kv,
        .head_dim = c->hd,
        .block_size = c->bs,
        .max_blocks = S->max_blocks,
        .kv_dtype = S->kt,
        .scale = 1.0f / sqrtf((float)c->hd),
        .pos = pos,
        .seq = seq,
        .block_tables = S->tables,
    };
    set_threads(threads);
    CHECK_OK(tsr_cpu_attention(o, q, S->kc, S->vc, &d, isa));
    for (int i = 0; i < m; i++)
        memcpy(out + (size_t)idx[i] * S->q_dim, o + (size_t)i * S->q_dim,
               (size_t)S->q_dim * sizeof *o);
    free(seq), free(pos), free(q), free(o);
}

/* The CPU backend's attention before the blocked one: a float row of scores
 * per query, max, exp, sum, then the weighted sum of V, on the cache's values. */
static void run_unblocked(const setup *S, float *out) {
    const attn_case *c = S->c;
    const int hd = c->hd, group = c->n_head / c->n_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    float *scores = tu_xmalloc(1000 * sizeof *scores);
    for (int t = 0; t < S->n; t++)
        for (int h = 0; h < c->n_head; h++) {
            const float *qh = S->q + ((size_t)t * c->n_head + h) * hd;
            float *oh = out + ((size_t)t * c->n_head + h) * hd;
            const float *K = S->K[S->seq[t]], *V = S->V[S->seq[t]];
            const size_t ho = (size_t)(h / group) * hd;
            const int np = S->pos[t] + 1;
            float mx = -INFINITY, sum = 0;
            for (int p = 0; p < np; p++) {
                float s = 0;
                for (int i = 0; i < hd; i++)
                    s += qh[i] * K[(size_t)p * S->kv_dim + ho + i];
                scores[p] = s * scale;
                mx = scores[p] > mx ? scores[p] : mx;
            }
            for (int p = 0; p < np; p++)
                sum += (scores[p] = expf(scores[p] - mx));
            memset(oh, 0, (size_t)hd * sizeof *oh);
            for (int p = 0; p < np; p++)
                for (int i = 0; i < hd; i++)
                    oh[i] += scores[p] / sum * V[(size_t)p * S->kv_dim + ho + i];
        }
    free(scores);
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        m = d > m || d != d ? d : m;
    }
    return m;
}

static void test_case(const attn_case *c, tsr_dtype kt, tu_rng *r, const tsr_isa *isas, int n_isa) {
    setup S;
    setup_init(&S, c, kt, r);
    const size_t total = (size_t)S.n * S.q_dim;
    int *all = tu_xmalloc((size_t)S.n * sizeof *all), *rev = tu_xmalloc((size_t)S.n * sizeof *rev);
    for (int i = 0; i < S.n; i++)
        all[i] = i, rev[i] = S.n - 1 - i;
    float *old = tu_xmalloc(total * sizeof *old), *ref = tu_xmalloc(total * sizeof *ref);
    float *got = tu_xmalloc(total * sizeof *got), *alt = tu_xmalloc(total * sizeof *alt);
    run_unblocked(&S, old);
    for (int k = 0; k < n_isa; k++) {
        const char *lv = tsr_isa_name(isas[k]);
        run(&S, all, S.n, isas[k], 3, got);
        const double e = max_diff(got, old, total);
        printf("    %-32s %s cache, %-6s max |blocked - unblocked| %.2e\n", c->label,
               tsr_dtype_name(kt), lv, e);
        CHECK(e <= 1e-6, "%s (%s cache, %s): %.3g from the unblocked softmax", c->label,
              tsr_dtype_name(kt), lv, e);
        if (k == 0) {
            memcpy(ref, got, total * sizeof *ref);
        } else {
            const double el = max_diff(got, ref, total);
            CHECK(el <= 1e-6, "%s (%s cache): %s is %.3g from %s", c->label, tsr_dtype_name(kt), lv,
                  el, tsr_isa_name(isas[0]));
        }
        /* bitwise: one thread; the batch reversed; every token alone */
        run(&S, all, S.n, isas[k], 1, alt);
        CHECK(!memcmp(alt, got, total * sizeof *got), "%s (%s cache, %s): 1 and 3 threads differ",
              c->label, tsr_dtype_name(kt), lv);
        run(&S, rev, S.n, isas[k], 3, alt);
        CHECK(!memcmp(alt, got, total * sizeof *got),
              "%s (%s cache, %s): the batch's order changed a result", c->label, tsr_dtype_name(kt),
              lv);
        for (int i = 0; i < S.n; i++)
            run(&S, &i, 1, isas[k], 2, alt);
        CHECK(!memcmp(alt, got, total * sizeof *got),
              "%s (%s cache, %s): a token alone differs from the same token in the batch", c->label,
              tsr_dtype_name(kt), lv);
    }
    free(all), free(rev), free(old), free(ref), free(got), free(alt);
    setup_free(&S);
}

static void test_refusals(void) {
    float o[8], q[8];
    int32_t pos = 0, seq = 0, table = 0;
    uint16_t kc[8], vc[8];
    tsr_attn_desc d = {1, 2, 1, 4, 1, 1, TSR_BF16, 0.5f, &pos, &seq, &table};
    CHECK_ERR(tsr_cpu_attention(o, q, kc, vc, &d, TSR_ISA_REF), TSR_ERR_UNSUPPORTED, "bf16");
    d.kv_dtype = TSR_F16;
    d.n_kv_head = 3;
    CHECK_ERR(tsr_cpu_attention(o, q, kc, vc, &d, TSR_ISA_REF), TSR_ERR_INVALID, "divide");
}

int main(void) {
    tu_rng r = {0x617474656e74ull};
    tsr_isa isas[2] = {TSR_ISA_REF, TSR_ISA_AVX2};
    int n_isa = 1;
    if (tsr_isa_supported(TSR_ISA_AVX2))
        n_isa = 2;
    else
        printf("  skipping the AVX2 level: this CPU lacks AVX2, FMA or F16C\n");
    for (int k = 0; k < n_isa; k++)
        test_store(&r, isas[k]);
    printf("  kv_store (f16 bits as tsr_f32_to_f16, f32 as is) ok\n");
    static const tsr_dtype types[] = {TSR_F32, TSR_F16};
    for (size_t t = 0; t < 2; t++)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
            test_case(&cases[c], types[t], &r, isas, n_isa);
    printf("  attention (unblocked softmax, levels, batch and thread independence) ok\n");
    test_refusals();
    printf("test_attention: all passed\n");
    return 0;
}
