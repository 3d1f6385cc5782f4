/* tests/unit/test_kernels.c - every op of a kernel backend against a naive C
 * loop in double precision, on random data with odd sizes.
 *
 * Ops: matmul (n = 1 takes the gemv path, n > 1 gemm; plain and
 * accumulate), rmsnorm (also in place), rope (large positions, several
 * heads), kv_store + paged attention with an f32 and an f16 cache (GQA,
 * scrambled block tables, several sequences of different lengths in one
 * batch, chunks continuing an existing cache, head dims 5 to 128, contexts
 * over many key blocks up to 700 positions), swiglu (also out = gate), add, add_bias, embedding (row0 offset,
 * rows outside the table give zeros). Every output buffer carries a guard
 * tail that must survive, outputs start as NaN so unwritten elements show,
 * and unused KV cache slots hold NaN so reading one poisons the result.
 *
 * The ops go through the backend table only, so the same checks can run on
 * any backend; today that is the CPU one. The cases (shapes, seeds,
 * tolerances) are the OPC_ON_REF rows of tests/common/op_cases.h, the table
 * tests/cuda/test_cuda_ops.c runs on CUDA. Exits 0 on success, 1 with a
 * message at the first failure. */
#include "kernels/backend.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/check.h"
#include "tests/common/op_cases.h"

enum { GUARD = 16 };
static const float GUARD_VALUE = 1234.5f;

/* Relative tolerance of `op` for results in f32 activations. */
#define RTOL(op) (opc_ops[op].ref_rtol)

/* ---- device buffers with a guard tail ------------------------------------------ */

typedef struct {
    void *p;
    size_t n; /* activations before the guard */
} dbuf;

/* n activations from host (NULL: NaN) followed by GUARD guard values. */
static dbuf dbuf_new(tsr_backend *be, const float *host, size_t n) {
    dbuf d = {NULL, n};
    CHECK_OK(tsr_backend_alloc(be, (n + GUARD) * tsr_backend_act_size(be), "test buffer", &d.p));
    float *tmp = tu_xmalloc((n + GUARD) * sizeof *tmp);
    for (size_t i = 0; i < n; i++)
        tmp[i] = host ? host[i] : NAN;
    for (size_t i = n; i < n + GUARD; i++)
        tmp[i] = GUARD_VALUE;
    CHECK_OK(be->iface->act_from_f32(be, d.p, tmp, n + GUARD));
    free(tmp);
    return d;
}

/* Reads the n activations back and checks the guard. */
static void dbuf_read(tsr_backend *be, const dbuf *d, float *out, const char *what) {
    float *tmp = tu_xmalloc((d->n + GUARD) * sizeof *tmp);
    CHECK_OK(be->iface->act_to_f32(be, tmp, d->p, d->n + GUARD));
    for (size_t i = d->n; i < d->n + GUARD; i++)
        CHECK(tmp[i] == GUARD_VALUE, "%s wrote past its output (element %zu of %zu)", what, i,
              d->n);
    memcpy(out, tmp, d->n * sizeof *out);
    free(tmp);
}

static void dbuf_free(tsr_backend *be, dbuf *d) {
    tsr_backend_free(be, d->p);
    d->p = NULL;
}

/* Raw bytes (int32 metadata, f32 inv_freq) on the device. */
static void *dev_raw(tsr_backend *be, const void *host, size_t bytes) {
    void *p;
    CHECK_OK(tsr_backend_alloc(be, bytes, "test metadata", &p));
    CHECK_OK(be->iface->to_device(be, p, host, bytes));
    return p;
}

static float *rand_vec(tu_rng *r, size_t n, float lo, float hi) {
    float *x = tu_xmalloc(n * sizeof *x);
    tu_rng_fill(r, x, n, lo, hi);
    return x;
}

/* ---- memory ------------------------------------------------------------------------ */

static void test_memory(tsr_backend *be) {
    tu_rng rng = opc_rng(OPC_MEMORY), *r = &rng;
    enum { N = 37 };
    float *h = rand_vec(r, N, -1, 1), back[N];
    dbuf a = dbuf_new(be, h, N), b = dbuf_new(be, NULL, N);
    CHECK_OK(be->iface->copy(be, b.p, a.p, N * tsr_backend_act_size(be)));
    CHECK_OK(be->iface->sync(be));
    dbuf_read(be, &b, back, "copy");
    CHECK(!memcmp(back, h, sizeof back), "copy");
    int32_t ids[5] = {3, -1, 7, INT32_MAX, INT32_MIN}, ids_back[5];
    void *di = dev_raw(be, ids, sizeof ids);
    CHECK_OK(be->iface->to_host(be, ids_back, di, sizeof ids));
    CHECK(!memcmp(ids, ids_back, sizeof ids), "int32 round trip");
    float *v = be->iface->vector_upload(be, h, N);
    CHECK(v != NULL, "vector_upload");
    CHECK_OK(be->iface->act_to_f32(be, back, v, N));
    CHECK(!memcmp(back, h, sizeof back), "vector_upload contents");
    tsr_backend_free(be, v);
    tsr_backend_free(be, di);
    tsr_backend_free(be, NULL);
    dbuf_free(be, &a);
    dbuf_free(be, &b);
    free(h);
}

/* ---- matmul -------------------------------------------------------------------------- */

static void test_matmul(tsr_backend *be) {
    tu_rng rng = opc_rng(OPC_MATMUL), *r = &rng;
    for (size_t c = 0; c < OPC_LEN(opc_matmul_cases); c++) {
        const opc_matmul_case *mc = &opc_matmul_cases[c];
        if (!(mc->on & OPC_ON_REF))
            continue;
        int n = mc->n, rows = mc->rows, cols = mc->cols;
        for (int acc = 0; acc < 2; acc++) {
            float *x = rand_vec(r, (size_t)n * cols, -1, 1);
            float *w = rand_vec(r, (size_t)rows * cols, -1, 1);
            float *y0 = rand_vec(r, (size_t)n * rows, -4, 4);
            float *got = tu_xmalloc((size_t)n * rows * sizeof *got);
            double *want = tu_xmalloc((size_t)n * rows * sizeof *want);
            double *scale = tu_xmalloc((size_t)n * rows * sizeof *scale);
            tsr_weight W;
            CHECK_OK(be->iface->weight_upload(be, &W, w, TSR_F32, rows, cols));
            CHECK(W.rows == rows && W.cols == cols, "weight shape");
            dbuf dx = dbuf_new(be, x, (size_t)n * cols);
            dbuf dy = dbuf_new(be, acc ? y0 : NULL, (size_t)n * rows);
            CHECK_OK(be->iface->matmul(be, dy.p, dx.p, &W, n, acc));
            dbuf_read(be, &dy, got, "matmul");
            for (int t = 0; t < n; t++)
                for (int o = 0; o < rows; o++) {
                    double s = acc ? y0[t * rows + o] : 0, a = fabs(s);
                    for (int i = 0; i < cols; i++) {
                        double p = (double)x[t * cols + i] * w[o * cols + i];
                        s += p;
                        a += fabs(p);
                    }
                    want[t * rows + o] = s;
                    scale[t * rows + o] = a;
                }
            char what[96];
            snprintf(what, sizeof what, "matmul n=%d rows=%d cols=%d accumulate=%d", n, rows, cols,
                     acc);
            CHECK_CLOSE(what, got, want, (size_t)n * rows, RTOL(OPC_MATMUL), scale, 0);
            /* x is an input: unchanged */
            float *xb = tu_xmalloc((size_t)n * cols * sizeof *xb);
            dbuf_read(be, &dx, xb, "matmul input");
            CHECK(!memcmp(xb, x, (size_t)n * cols * sizeof *x), "%s changed its input", what);
            free(xb);
            be->iface->weight_free(be, &W);
            dbuf_free(be, &dx);
            dbuf_free(be, &dy);
            free(x), free(w), free(y0), free(got), free(want), free(scale);
        }
    }
    /* n = 0 is a no-op. */
    float w1 = 1.0f;
    tsr_weight W;
    CHECK_OK(be->iface->weight_upload(be, &W, &w1, TSR_F32, 1, 1));
    dbuf dy = dbuf_new(be, NULL, 0);
    CHECK_OK(be->iface->matmul(be, dy.p, dy.p, &W, 0, 0));
    float none[1];
    dbuf_read(be, &dy, none, "matmul n=0");
    be->iface->weight_free(be, &W);
    dbuf_free(be, &dy);
}

/* ---- rmsnorm ------------------------------------------------------------------------- */

static void test_rmsnorm(tsr_backend *be) {
    tu_rng rng = opc_rng(OPC_RMSNORM), *r = &rng;
    for (size_t a = 0; a < OPC_LEN(opc_rows); a++)
        for (size_t b = 0; b < OPC_LEN(opc_rmsnorm_dims); b++)
            for (size_t e = 0; e < OPC_LEN(opc_rmsnorm_eps); e++)
                for (int inplace = 0; inplace < 2; inplace++) {
                    if (!(opc_rows[a].on & opc_rmsnorm_dims[b].on & OPC_ON_REF))
                        continue;
                    int n = opc_rows[a].v, dim = opc_rmsnorm_dims[b].v;
                    float eps = opc_rmsnorm_eps[e];
                    size_t total = (size_t)n * dim;
                    float *x = tu_xmalloc(total * sizeof *x);
                    for (int t = 0; t < n; t++) {
                        float mag = opc_rmsnorm_row_mag(t);
                        tu_rng_fill(r, x + (size_t)t * dim, (size_t)dim, -mag, mag);
                    }
                    float *w = rand_vec(r, (size_t)dim, -1.5f, 1.5f);
                    float *got = tu_xmalloc(total * sizeof *got);
                    double *want = tu_xmalloc(total * sizeof *want);
                    dbuf dx = dbuf_new(be, x, total), dw = dbuf_new(be, w, (size_t)dim);
                    dbuf dy = inplace ? dx : dbuf_new(be, NULL, total);
                    CHECK_OK(be->iface->rmsnorm(be, dy.p, dx.p, dw.p, n, dim, eps));
                    dbuf_read(be, &dy, got, "rmsnorm");
                    for (int t = 0; t < n; t++) {
                        double ss = 0;
                        for (int i = 0; i < dim; i++)
                            ss += (double)x[t * dim + i] * x[t * dim + i];
                        double inv = 1.0 / sqrt(ss / dim + eps);
                        for (int i = 0; i < dim; i++)
                            want[t * dim + i] = x[t * dim + i] * inv * w[i];
                    }
                    char what[96];
                    snprintf(what, sizeof what, "rmsnorm n=%d dim=%d eps=%g%s", n, dim, (double)eps,
                             inplace ? " in place" : "");
                    CHECK_CLOSE(what, got, want, total, RTOL(OPC_RMSNORM), NULL, 1e-30);
                    dbuf_free(be, &dx);
                    dbuf_free(be, &dw);
                    if (!inplace)
                        dbuf_free(be, &dy);
                    free(x), free(w), free(got), free(want);
                }
}

/* ---- rope ---------------------------------------------------------------------------- */

static void test_rope(tsr_backend *be) {
    tu_rng rng = opc_rng(OPC_ROPE), *r = &rng;
    size_t c = 0; /* cases run so far */
    for (size_t k = 0; k < OPC_LEN(opc_rope_cases); k++) {
        const opc_rope_case *rc = &opc_rope_cases[k];
        if (!(rc->on & OPC_ON_REF))
            continue;
        int n = rc->n, nh = rc->n_heads, hd = rc->head_dim, half = hd / 2;
        size_t total = (size_t)n * nh * hd;
        float *inv = tu_xmalloc((size_t)half * sizeof *inv);
        for (int i = 0; i < half; i++)
            inv[i] =
                rc->theta > 0 ? (float)pow(rc->theta, -2.0 * i / hd) : tu_rng_float(r, 1e-4f, 1.0f);
        int32_t *pos = tu_xmalloc((size_t)n * sizeof *pos);
        for (int t = 0; t < n; t++)
            pos[t] = t < 8 && n > 1 ? opc_rope_pos_ref[(t + c) % 8]
                                    : (int32_t)tu_rng_below(r, OPC_ROPE_POS_REF_BOUND);
        float *x = rand_vec(r, total, -2, 2), *got = tu_xmalloc(total * sizeof *got);
        double *want = tu_xmalloc(total * sizeof *want), *scale = tu_xmalloc(total * sizeof *scale);
        dbuf dx = dbuf_new(be, x, total);
        void *dpos = dev_raw(be, pos, (size_t)n * sizeof *pos);
        void *dinv = dev_raw(be, inv, (size_t)half * sizeof *inv);
        CHECK_OK(be->iface->rope(be, dx.p, dpos, dinv, n, nh, hd));
        dbuf_read(be, &dx, got, "rope");
        for (int t = 0; t < n; t++)
            for (int h = 0; h < nh; h++) {
                const float *v = x + ((size_t)t * nh + h) * hd;
                size_t o = ((size_t)t * nh + h) * hd;
                for (int i = 0; i < half; i++) {
                    double a = (double)pos[t] * (double)inv[i], cs = cos(a), sn = sin(a);
                    want[o + i] = v[i] * cs - v[i + half] * sn;
                    want[o + i + half] = v[i] * sn + v[i + half] * cs;
                    scale[o + i] = scale[o + i + half] = fabs(v[i]) + fabs(v[i + half]);
                }
            }
        char what[96];
        snprintf(what, sizeof what, "rope n=%d heads=%d head_dim=%d", n, nh, hd);
        CHECK_CLOSE(what, got, want, total, RTOL(OPC_ROPE), scale, 0);
        dbuf_free(be, &dx);
        tsr_backend_free(be, dpos);
        tsr_backend_free(be, dinv);
        free(inv), free(pos), free(x), free(got), free(want), free(scale);
        c++;
    }
}

/* ---- kv_store + paged attention ----------------------------------------------------- */

/* A KV cache buffer of n elements of `t` (f32 or f16) that starts as NaN,
 * followed by a guard tail. */
typedef struct {
    void *p;
    size_t n;
    tsr_dtype t;
} cbuf;

/* What the cache holds for value x: x itself, or x rounded to f16. */
static float cache_value(tsr_dtype t, float x) {
    return t == TSR_F16 ? tsr_f16_to_f32(tsr_f32_to_f16(x)) : x;
}

static size_t cbuf_elt(tsr_dtype t) { return t == TSR_F16 ? 2 : 4; }

static cbuf cbuf_new(tsr_backend *be, tsr_dtype t, size_t n) {
    cbuf c = {NULL, n, t};
    const size_t e = cbuf_elt(t);
    unsigned char *tmp = tu_xmalloc((n + GUARD) * e);
    for (size_t i = 0; i < n + GUARD; i++) {
        const float f = i < n ? NAN : GUARD_VALUE;
        if (t == TSR_F16) {
            const uint16_t h = tsr_f32_to_f16(f);
            memcpy(tmp + i * e, &h, e);
        } else {
            memcpy(tmp + i * e, &f, e);
        }
    }
    c.p = dev_raw(be, tmp, (n + GUARD) * e);
    free(tmp);
    return c;
}

/* The cache's n elements as f32 (f16 widened exactly); checks the guard. */
static void cbuf_read(tsr_backend *be, const cbuf *c, float *out, const char *what) {
    const size_t e = cbuf_elt(c->t);
    unsigned char *tmp = tu_xmalloc((c->n + GUARD) * e);
    CHECK_OK(be->iface->to_host(be, tmp, c->p, (c->n + GUARD) * e));
    for (size_t i = 0; i < c->n + GUARD; i++) {
        float f;
        if (c->t == TSR_F16) {
            uint16_t h;
            memcpy(&h, tmp + i * e, e);
            f = tsr_f16_to_f32(h);
        } else {
            memcpy(&f, tmp + i * e, e);
        }
        if (i < c->n)
            out[i] = f;
        else
            CHECK(f == cache_value(c->t, GUARD_VALUE),
                  "%s wrote past the cache (element %zu of %zu)", what, i, c->n);
    }
    free(tmp);
}

/* want(n, q_dim): the attention of each token over K, V (by sequence and
 * position), in double. */
static void attention_ref(const opc_attn_case *ac, float *const *K, float *const *V, const float *q,
                          const int32_t *seq, const int32_t *pos, int n, float scale,
                          double *want) {
    const int hd = ac->head_dim, kv_dim = ac->n_kv * hd, q_dim = ac->n_head * hd;
    const int group = ac->n_head / ac->n_kv;
    int max_pos = 0;
    for (int i = 0; i < n; i++)
        max_pos = pos[i] > max_pos ? pos[i] : max_pos;
    double *sc = tu_xmalloc(((size_t)max_pos + 1) * sizeof *sc);
    for (int i = 0; i < n; i++) {
        int s = seq[i], np = pos[i] + 1;
        for (int h = 0; h < ac->n_head; h++) {
            const float *qh = q + (size_t)i * q_dim + (size_t)h * hd;
            size_t ko = (size_t)(h / group) * hd;
            double mx = -INFINITY, sum = 0;
            for (int p = 0; p < np; p++) {
                double dot = 0;
                for (int j = 0; j < hd; j++)
                    dot += (double)qh[j] * K[s][(size_t)p * kv_dim + ko + j];
                sc[p] = dot * scale;
                mx = fmax(mx, sc[p]);
            }
            for (int p = 0; p < np; p++)
                sum += (sc[p] = exp(sc[p] - mx));
            for (int j = 0; j < hd; j++) {
                double o = 0;
                for (int p = 0; p < np; p++)
                    o += sc[p] / sum * V[s][(size_t)p * kv_dim + ko + j];
                want[(size_t)i * q_dim + (size_t)h * hd + j] = o;
            }
        }
    }
    free(sc);
}

/* One case with the cache in `kt` (f32 or f16): kv_store writes exactly the
 * tokens' slots (f16: each value rounded to nearest even, as tsr_f32_to_f16),
 * and attention matches the double loop over the values the cache holds
 * within the op's f32 tolerance; with f16 it also stays within f16's
 * rounding of the unrounded K and V. */
static void test_attention_case(tsr_backend *be, tu_rng *r, const opc_attn_case *ac, tsr_dtype kt) {
    const int hd = ac->head_dim, bs = ac->block_size, S = ac->n_seqs;
    const int kv_dim = ac->n_kv * hd, q_dim = ac->n_head * hd;
    const float scale = ac->scale > 0 ? ac->scale : 1.0f / sqrtf((float)hd);
    opc_attn_layout L;
    opc_attn_layout_init(&L, ac, r);
    const int *len = L.len, n_blocks = L.n_blocks, max_blocks = L.max_blocks;
    const int32_t *tables = L.tables;

    /* Host K/V by (sequence, position), as given and as the cache holds them. */
    float *K[OPC_MAX_SEQS], *V[OPC_MAX_SEQS], *Kc[OPC_MAX_SEQS], *Vc[OPC_MAX_SEQS];
    for (int s = 0; s < S; s++) {
        const size_t m = (size_t)len[s] * kv_dim;
        K[s] = rand_vec(r, m, -1, 1);
        V[s] = rand_vec(r, m, -1, 1);
        Kc[s] = tu_xmalloc(m * sizeof *Kc[s]);
        Vc[s] = tu_xmalloc(m * sizeof *Vc[s]);
        for (size_t i = 0; i < m; i++) {
            Kc[s][i] = cache_value(kt, K[s][i]);
            Vc[s][i] = cache_value(kt, V[s][i]);
        }
    }
    /* The cache starts as NaN: a read of any slot not written poisons. */
    size_t cache_n = (size_t)n_blocks * bs * kv_dim;
    cbuf kc = cbuf_new(be, kt, cache_n), vc = cbuf_new(be, kt, cache_n);

    /* Two batches: the prior positions (in shuffled order), then the new
     * tokens (interleaved across sequences). Each is (seq, pos) pairs. */
    for (int phase = 0; phase < 2; phase++) {
        int32_t *seq, *pos, *slot;
        const int n = opc_attn_phase(&L, ac, phase, r, &seq, &pos, &slot);
        if (n == 0)
            continue;
        float *kb = tu_xmalloc((size_t)n * kv_dim * sizeof *kb);
        float *vb = tu_xmalloc((size_t)n * kv_dim * sizeof *vb);
        for (int i = 0; i < n; i++) {
            memcpy(kb + (size_t)i * kv_dim, K[seq[i]] + (size_t)pos[i] * kv_dim,
                   (size_t)kv_dim * sizeof *kb);
            memcpy(vb + (size_t)i * kv_dim, V[seq[i]] + (size_t)pos[i] * kv_dim,
                   (size_t)kv_dim * sizeof *vb);
        }
        dbuf dk = dbuf_new(be, kb, (size_t)n * kv_dim), dv = dbuf_new(be, vb, (size_t)n * kv_dim);
        void *dslot = dev_raw(be, slot, (size_t)n * sizeof *slot);
        CHECK_OK(be->iface->kv_store(be, kc.p, vc.p, kt, dk.p, dv.p, dslot, n, kv_dim));

        if (phase == 1) {
            /* kv_store wrote exactly the slots of every stored position. */
            float *kback = tu_xmalloc(cache_n * sizeof *kback),
                  *vback = tu_xmalloc(cache_n * sizeof *vback);
            cbuf_read(be, &kc, kback, "kv_store (K)");
            cbuf_read(be, &vc, vback, "kv_store (V)");
            char *owned = calloc((size_t)n_blocks * bs, 1);
            CHECK(owned, "calloc");
            for (int s = 0; s < S; s++)
                for (int p = 0; p < len[s]; p++) {
                    size_t sl = (size_t)opc_attn_slot(&L, ac, s, p);
                    owned[sl] = 1;
                    CHECK(!memcmp(kback + sl * kv_dim, Kc[s] + (size_t)p * kv_dim,
                                  (size_t)kv_dim * sizeof(float)) &&
                              !memcmp(vback + sl * kv_dim, Vc[s] + (size_t)p * kv_dim,
                                      (size_t)kv_dim * sizeof(float)),
                          "kv_store %s: seq %d pos %d (slot %zu) holds the wrong row",
                          tsr_dtype_name(kt), s, p, sl);
                }
            for (size_t sl = 0; sl < (size_t)n_blocks * bs; sl++)
                if (!owned[sl])
                    for (int i = 0; i < kv_dim; i++)
                        CHECK(isnan(kback[sl * kv_dim + i]) && isnan(vback[sl * kv_dim + i]),
                              "kv_store wrote slot %zu, which no token owns", sl);
            free(owned), free(kback), free(vback);

            /* Attention for the new tokens. */
            float *q = rand_vec(r, (size_t)n * q_dim, -2, 2);
            dbuf dq = dbuf_new(be, q, (size_t)n * q_dim),
                 dout = dbuf_new(be, NULL, (size_t)n * q_dim);
            void *dpos = dev_raw(be, pos, (size_t)n * sizeof *pos);
            void *dseq = dev_raw(be, seq, (size_t)n * sizeof *seq);
            void *dtab = dev_raw(be, tables, (size_t)S * max_blocks * sizeof *tables);
            tsr_attn_desc d = {
                .n_tokens = n,
                .n_head = ac->n_head,
                .n_kv_head = ac->n_kv,
                .head_dim = hd,
                .block_size = bs,
                .max_blocks = max_blocks,
                .kv_dtype = kt,
                .scale = scale,
                .pos = dpos,
                .seq = dseq,
                .block_tables = dtab,
            };
            CHECK_OK(be->iface->attention(be, dout.p, dq.p, kc.p, vc.p, &d));
            float *got = tu_xmalloc((size_t)n * q_dim * sizeof *got);
            dbuf_read(be, &dout, got, "attention");
            double *want = tu_xmalloc((size_t)n * q_dim * sizeof *want);
            char what[160];
            snprintf(what, sizeof what,
                     "attention %s (%s cache): heads=%d kv_heads=%d head_dim=%d block=%d seqs=%d",
                     ac->label, tsr_dtype_name(kt), ac->n_head, ac->n_kv, hd, bs, S);
            /* V is in [-1, 1]: tolerance relative to that scale. */
            attention_ref(ac, Kc, Vc, q, seq, pos, n, scale, want);
            CHECK_CLOSE(what, got, want, (size_t)n * q_dim, RTOL(OPC_ATTENTION), NULL, 1.0);
            if (kt == TSR_F16) {
                /* f16 keeps 11 significant bits: K and V move by up to 2^-12
                 * relative, a score by about that times sum |q k| * scale. */
                attention_ref(ac, K, V, q, seq, pos, n, scale, want);
                snprintf(what, sizeof what, "attention %s (f16 cache vs unrounded K, V)",
                         ac->label);
                CHECK_CLOSE(what, got, want, (size_t)n * q_dim, 1e-2, NULL, 1.0);
            }
            dbuf_free(be, &dq);
            dbuf_free(be, &dout);
            tsr_backend_free(be, dpos);
            tsr_backend_free(be, dseq);
            tsr_backend_free(be, dtab);
            free(q), free(got), free(want);
        }
        dbuf_free(be, &dk);
        dbuf_free(be, &dv);
        tsr_backend_free(be, dslot);
        free(seq), free(pos), free(slot), free(kb), free(vb);
    }
    tsr_backend_free(be, kc.p);
    tsr_backend_free(be, vc.p);
    for (int s = 0; s < S; s++)
        free(K[s]), free(V[s]), free(Kc[s]), free(Vc[s]);
    opc_attn_layout_free(&L);
}

static void test_attention(tsr_backend *be) {
    static const tsr_dtype types[] = {TSR_F32, TSR_F16};
    for (size_t t = 0; t < OPC_LEN(types); t++) {
        tu_rng rng = opc_rng(OPC_ATTENTION), *r = &rng;
        for (size_t c = 0; c < OPC_LEN(opc_attn_cases); c++)
            if (opc_attn_cases[c].on & OPC_ON_REF)
                test_attention_case(be, r, &opc_attn_cases[c], types[t]);
    }
}

/* ---- elementwise ops ---------------------------------------------------------------- */

static void test_swiglu(tsr_backend *be) {
    tu_rng rng = opc_rng(OPC_SWIGLU), *r = &rng;
    for (size_t a = 0; a < OPC_LEN(opc_rows); a++)
        for (size_t b = 0; b < OPC_LEN(opc_swiglu_dims); b++)
            for (int alias = 0; alias < 2; alias++) {
                if (!(opc_rows[a].on & opc_swiglu_dims[b].on & OPC_ON_REF))
                    continue;
                int n = opc_rows[a].v, dim = opc_swiglu_dims[b].v;
                size_t total = (size_t)n * dim;
                float *g = rand_vec(r, total, -12, 12), *u = rand_vec(r, total, -3, 3);
                float *got = tu_xmalloc(total * sizeof *got);
                double *want = tu_xmalloc(total * sizeof *want);
                dbuf dg = dbuf_new(be, g, total), du = dbuf_new(be, u, total);
                dbuf dout = alias ? dg : dbuf_new(be, NULL, total);
                CHECK_OK(be->iface->swiglu(be, dout.p, dg.p, du.p, n, dim));
                dbuf_read(be, &dout, got, "swiglu");
                for (size_t i = 0; i < total; i++)
                    want[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
                char what[64];
                snprintf(what, sizeof what, "swiglu n=%d dim=%d%s", n, dim,
                         alias ? " out=gate" : "");
                CHECK_CLOSE(what, got, want, total, RTOL(OPC_SWIGLU), NULL, 1e-30);
                dbuf_free(be, &dg);
                dbuf_free(be, &du);
                if (!alias)
                    dbuf_free(be, &dout);
                free(g), free(u), free(got), free(want);
            }
}

static void test_add(tsr_backend *be) {
    for (int bias = 0; bias < 2; bias++) {
        const opc_op op = bias ? OPC_ADD_BIAS : OPC_ADD;
        tu_rng rng = opc_rng(op), *r = &rng;
        for (size_t a = 0; a < OPC_LEN(opc_rows); a++)
            for (size_t b = 0; b < OPC_LEN(opc_add_dims); b++) {
                if (!(opc_rows[a].on & opc_add_dims[b].on & OPC_ON_REF))
                    continue;
                int n = opc_rows[a].v, dim = opc_add_dims[b].v;
                size_t total = (size_t)n * dim, xn = bias ? (size_t)dim : total;
                float *y = rand_vec(r, total, -5, 5), *x = rand_vec(r, xn, -5, 5);
                float *got = tu_xmalloc(total * sizeof *got);
                double *want = tu_xmalloc(total * sizeof *want);
                double *scale = tu_xmalloc(total * sizeof *scale);
                dbuf dy = dbuf_new(be, y, total), dx = dbuf_new(be, x, xn);
                if (bias)
                    CHECK_OK(be->iface->add_bias(be, dy.p, dx.p, n, dim));
                else
                    CHECK_OK(be->iface->add(be, dy.p, dx.p, n, dim));
                dbuf_read(be, &dy, got, bias ? "add_bias" : "add");
                for (size_t i = 0; i < total; i++) {
                    double xv = x[bias ? i % (size_t)dim : i];
                    want[i] = y[i] + xv;
                    scale[i] = fabs(y[i]) + fabs(xv);
                }
                char what[64];
                snprintf(what, sizeof what, "%s n=%d dim=%d", bias ? "add_bias" : "add", n, dim);
                CHECK_CLOSE(what, got, want, total, RTOL(op), scale, 0);
                dbuf_free(be, &dy);
                dbuf_free(be, &dx);
                free(y), free(x), free(got), free(want), free(scale);
            }
    }
}

static void test_embedding(tsr_backend *be) {
    tu_rng rng = opc_rng(OPC_EMBEDDING), *r = &rng;
    const int rows = OPC_EMBEDDING_ROWS_REF;
    for (size_t a = 0; a < OPC_LEN(opc_embedding_dims); a++)
        for (size_t b = 0; b < OPC_LEN(opc_embedding_row0s); b++) {
            if (!(opc_embedding_dims[a].on & opc_embedding_row0s[b].on & OPC_ON_REF))
                continue;
            int dim = opc_embedding_dims[a].v, row0 = opc_embedding_row0s[b].v;
            float *tab = rand_vec(r, (size_t)rows * dim, -1, 1);
            tsr_weight W;
            CHECK_OK(be->iface->weight_upload(be, &W, tab, TSR_F32, rows, dim));
            int32_t ids[] = {row0 + 3, row0,      row0 + rows - 1, row0 - 1, row0 + rows,
                             -1,       INT32_MIN, INT32_MAX,       row0 + 3, row0 + 5,
                             0,        row0 + 1};
            const int n = (int)(sizeof ids / sizeof ids[0]);
            void *dids = dev_raw(be, ids, sizeof ids);
            dbuf dout = dbuf_new(be, NULL, (size_t)n * dim);
            CHECK_OK(be->iface->embedding(be, dout.p, &W, dids, n, row0));
            float *got = tu_xmalloc((size_t)n * dim * sizeof *got);
            dbuf_read(be, &dout, got, "embedding");
            for (int t = 0; t < n; t++) {
                long row = (long)ids[t] - row0;
                for (int i = 0; i < dim; i++) {
                    float want = row >= 0 && row < rows ? tab[row * dim + i] : 0.0f;
                    CHECK(got[t * dim + i] == want,
                          "embedding dim=%d row0=%d: token %d (id %d) element %d: got %g, want %g",
                          dim, row0, t, ids[t], i, (double)got[t * dim + i], (double)want);
                }
            }
            be->iface->weight_free(be, &W);
            tsr_backend_free(be, dids);
            dbuf_free(be, &dout);
            free(tab), free(got);
        }
}

/* row_expsum against double loops written here: the maximum exactly, the
 * sum of exp((l - max) * inv_t) within f32 rounding; NaN sums for a row
 * with a NaN entry and for an all -inf row. */
static void test_row_expsum(tsr_backend *be) {
    tu_rng rng = opc_rng(OPC_ROW_EXPSUM), *r = &rng;
    enum { n = OPC_EXPSUM_ROWS_REF };
    for (size_t a = 0; a < OPC_LEN(opc_expsum_vocab); a++) {
        if (!(opc_expsum_vocab[a].on & OPC_ON_REF))
            continue;
        const int V = opc_expsum_vocab[a].v;
        float *l = rand_vec(r, (size_t)n * V, -30, 30), inv_t[n], out[2 * n];
        tu_rng_fill(r, inv_t, n, 0.2f, 4.0f);
        l[V / 2] = -INFINITY;
        if (V > 1) {
            l[(size_t)2 * V + 1] = NAN;
            for (int j = 0; j < V; j++)
                l[(size_t)3 * V + j] = -INFINITY;
        }
        dbuf dl = dbuf_new(be, l, (size_t)n * V);
        CHECK_OK(be->iface->row_expsum(be, out, dl.p, inv_t, n, V));
        for (int i = 0; i < n; i++) {
            const float *x = l + (size_t)i * V;
            double mx = -INFINITY, z = 0;
            int nan = 0;
            for (int j = 0; j < V; j++) {
                nan |= x[j] != x[j];
                if (x[j] > mx)
                    mx = x[j];
            }
            for (int j = 0; j < V; j++)
                z += exp(((double)x[j] - mx) * inv_t[i]);
            if (nan || mx == -INFINITY) {
                CHECK(out[2 * i + 1] != out[2 * i + 1], "row_expsum V=%d row %d: sum %g, want NaN",
                      V, i, (double)out[2 * i + 1]);
                continue;
            }
            CHECK(out[2 * i] == (float)mx && fabs(out[2 * i + 1] - z) <= RTOL(OPC_ROW_EXPSUM) * z,
                  "row_expsum V=%d row %d: (%g, %g), want (%g, %g)", V, i, (double)out[2 * i],
                  (double)out[2 * i + 1], mx, z);
        }
        dbuf_free(be, &dl);
        free(l);
    }
}

/* argmax and topk against plain scans written here, on rows long enough for
 * the backend's block skipping: ties across blocks (the lowest column wins),
 * a NaN in column 0 (kept), NaNs elsewhere (topk puts them first), an all
 * -inf row, and the best value in the last, partial block. */
static void test_picks(tsr_backend *be) {
    tu_rng rng = opc_rng(OPC_ARGMAX), *r = &rng;
    enum { N = OPC_PICKS_N, V = OPC_PICKS_V, K = OPC_PICKS_K };
    float *l = rand_vec(r, (size_t)N * V, -10, 10), val[N], tv[N * K];
    int32_t idx[N], ti[N * K];
    l[0 * V + 700] = l[0 * V + 130] = 50;     /* row 0: a tie in two blocks */
    l[1 * V + 0] = NAN;                       /* row 1: NaN at column 0 */
    l[2 * V + 5] = NAN, l[2 * V + 900] = NAN; /* row 2: NaNs later */
    for (int j = 0; j < V; j++)
        l[3 * V + j] = -INFINITY; /* row 3: nothing finite */
    l[4 * V + V - 1] = 60;        /* row 4: the best in the partial last block */
    dbuf dl = dbuf_new(be, l, (size_t)N * V);
    CHECK_OK(be->iface->argmax(be, val, idx, dl.p, N, V));
    CHECK_OK(be->iface->topk(be, tv, ti, dl.p, N, V, K));
    for (int i = 0; i < N; i++) {
        const float *x = l + (size_t)i * V;
        int want = 0; /* the first strictly larger value; NaN never wins */
        for (int j = 1; j < V; j++)
            if (x[j] > x[want])
                want = j;
        CHECK(idx[i] == want, "argmax row %d: column %d, want %d", i, idx[i], want);
        /* topk: the K entries that come first in tsr_topk_before's order, by counting */
        for (int e = 0; e < K; e++) {
            const int c = ti[i * K + e];
            int before = 0;
            for (int j = 0; c >= 0 && j < V; j++)
                before += tsr_topk_before(x[j], j, x[c], c);
            CHECK(c >= 0 && before == e, "topk row %d entry %d: column %d with %d before it", i, e,
                  c, before);
        }
    }
    dbuf_free(be, &dl);
    free(l);
}

static void run_all(tsr_backend *be) {
    CHECK(be->iface->act_dtype == TSR_F32 && tsr_backend_act_size(be) == 4,
          "the tolerances here are for f32 activations");
    test_memory(be);
    test_matmul(be);
    printf("  matmul ok\n");
    test_rmsnorm(be);
    printf("  rmsnorm ok\n");
    test_rope(be);
    printf("  rope ok\n");
    test_attention(be);
    printf("  kv_store + attention ok\n");
    test_swiglu(be);
    test_add(be);
    test_embedding(be);
    printf("  swiglu, add, add_bias, embedding ok\n");
    test_row_expsum(be);
    test_picks(be);
    printf("  row_expsum, argmax, topk ok\n");
}

int main(void) {
    /* One thread and three (an odd split over the work). */
    static const int threads[] = {1, 3};
    for (int i = 0; i < 2; i++) {
        tsr_backend *be = NULL;
        CHECK_OK(tsr_backend_cpu_create(threads[i], &be));
        printf(" cpu backend, %d thread%s:\n", threads[i], threads[i] > 1 ? "s" : "");
        run_all(be);
        tsr_backend_destroy(be);
    }
    tsr_backend_destroy(NULL);
    printf("test_kernels: all passed\n");
    return 0;
}
