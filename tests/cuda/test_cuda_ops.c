/* tests/cuda/test_cuda_ops.c - every op of the CUDA backend against the CPU
 * backend on the same random data, with CUDA activations in f32 and in bf16.
 *
 * The cases, seeds and limits are the OPC_ON_CUDA rows of
 * tests/common/op_cases.h, the table tests/unit/test_kernels.c also runs.
 * Each case builds its inputs once on the host (fixed seeds, never zeros),
 * gives the same values to both backends through the backend table, runs the
 * op on both and compares what comes back. Ops: the memory calls (to_device,
 * to_host, copy, act_from_f32/act_to_f32, vector_upload), matmul (n = 1
 * decode, n = 37 prefill, odd sizes, accumulate), rmsnorm (also in place),
 * rope (positions up to 600), kv_store + paged attention (GQA 9/3 with
 * head_dim 64 and 128, block size 16, several sequences with shuffled block
 * tables, prefill beside decode), swiglu (also out = gate), add, add_bias,
 * embedding (row0 != 0, ids outside the slice give zeros), argmax, topk
 * and row_expsum (NaN and all -inf rows).
 *
 * Metric, per case: err = max_i |gpu_i - cpu_i| / max_i |cpu_i|, the largest
 * absolute difference relative to the largest magnitude of the CPU result
 * (the reference). Limits:
 *   act f32:  1e-5 for every op but matmul; matmul 1e-2 (the CUDA backend may
 *             round x to bf16 for its bf16 GEMM; measured errors are printed).
 *   act bf16: 1e-2 for every op.
 *   memory:   0 in both modes (round trips are exact; bf16 activations must
 *             round to nearest even exactly like tsr_f32_to_bf16).
 * Fairness: the CUDA backend stores weights in bf16, so matmul and embedding
 * weights are rounded through bf16 on the host before either backend sees
 * them; in bf16 mode every activation input is rounded through bf16 first
 * too, so both backends start from identical values and only the arithmetic
 * differs.
 *
 * Traps, as in tests/unit/test_kernels.c: outputs start as NaN (an element
 * the op did not write shows), every buffer has a guard tail that must
 * survive, and unused KV cache slots hold NaN (an attention kernel that
 * touches a slot past pos, even multiplied by a zero weight, poisons its
 * result; kv_store must not write slots nobody owns).
 *
 * Output: one line per op and mode with the largest error seen and its case;
 * a FAIL line naming op, mode and shape for every failed case. `-v` prints
 * every case. Exits 0 when all pass, 1 when any fails (API errors end the run
 * at once), 77 ("skipped: no CUDA device (...)") when this build has no CUDA
 * backend or the machine no GPU. `--cpu-vs-cpu` puts a second CPU backend in
 * the CUDA slot (f32 only): it checks this test's own bookkeeping anywhere.
 *
 * What it is not: a test of the CPU backend (tests/unit/test_kernels.c checks
 * it against double-precision loops) or a benchmark. */
#include "kernels/backend.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/dtype.h"
#include "tests/common/check.h"
#include "tests/common/op_cases.h"

enum { BE_CPU = 0, BE_GPU = 1, GUARD = 16 };
/* Exactly representable in bf16 (1.5 * 2^13), so it survives both modes. */
static const float GUARD_VALUE = 12288.0f;

typedef struct {
    double limit;   /* largest err allowed */
    double max_err; /* largest err seen */
    int cases, failed;
    char worst[160]; /* the case with max_err */
} op_stat;

typedef struct {
    tsr_backend *be[2]; /* BE_CPU, BE_GPU */
    tsr_dtype act;      /* the CUDA backend's activation type */
    const char *mode;   /* "f32", "bf16" or "f32 weights" */
    tsr_dtype wdt;      /* the CUDA backend's weight type: bf16, or f32 (reference precision) */
    tu_rng rng;
    char what[160]; /* the case being run, for failure messages */
    op_stat ops[OPC_COUNT];
    int failures;
    int verbose;
    int cpu_vs_cpu; /* --cpu-vs-cpu: a second CPU backend stands in for CUDA */
} ctx;

/* `call` must return TSR_OK; otherwise ends the run naming mode and case
 * (a CUDA error can be sticky: nothing after it would mean anything). */
#define RUN_OK(c, call)                                                                            \
    do {                                                                                           \
        tsr_status rs_ = (call);                                                                   \
        if (rs_ != TSR_OK) {                                                                       \
            fprintf(stderr, "%s:%d: FAIL [%s] %s: %s returned %s\n  last error: %s\n", __FILE__,   \
                    __LINE__, (c)->mode, (c)->what, #call, tsr_status_str(rs_), tsr_error_msg());  \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* Ends the run when `cond` is false (broken contracts that are not numbers). */
#define REQUIRE(c, cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FAIL [%s] %s: ", __FILE__, __LINE__, (c)->mode, (c)->what);    \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n  last error: %s\n", tsr_error_msg());                              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* ---- inputs ---------------------------------------------------------------------- */

static float bf16_round(float f) { return tsr_bf16_to_f32(tsr_f32_to_bf16(f)); }

static void round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] = bf16_round(x[i]);
}

/* n random activations in [lo, hi), rounded through bf16 in bf16 mode. */
static float *rand_act(ctx *c, size_t n, float lo, float hi) {
    float *x = tu_xmalloc(n * sizeof *x);
    tu_rng_fill(&c->rng, x, n, lo, hi);
    if (c->act == TSR_BF16)
        round_bf16(x, n);
    return x;
}

/* n random weights in [lo, hi), always rounded through bf16 (the CUDA
 * backend's weight storage), so the CPU reference uses the same values. */
static float *rand_weight(ctx *c, size_t n, float lo, float hi) {
    float *w = tu_xmalloc(n * sizeof *w);
    tu_rng_fill(&c->rng, w, n, lo, hi);
    round_bf16(w, n);
    return w;
}

/* ---- buffer pairs: the same activations on both backends ---------------------------- */

typedef struct {
    void *p[2];
    size_t n; /* activations before the guard */
} pbuf;

/* n activations from host (NULL: NaN) plus GUARD guard values, on both. */
static pbuf pbuf_new(ctx *c, const float *host, size_t n) {
    pbuf d = {{NULL, NULL}, n};
    float *tmp = tu_xmalloc((n + GUARD) * sizeof *tmp);
    for (size_t i = 0; i < n; i++)
        tmp[i] = host ? host[i] : NAN;
    for (size_t i = n; i < n + GUARD; i++)
        tmp[i] = GUARD_VALUE;
    for (int b = 0; b < 2; b++) {
        tsr_backend *be = c->be[b];
        RUN_OK(c, tsr_backend_alloc(be, (n + GUARD) * tsr_backend_act_size(be), "test buffer",
                                    &d.p[b]));
        RUN_OK(c, be->iface->act_from_f32(be, d.p[b], tmp, n + GUARD));
    }
    free(tmp);
    return d;
}

/* Reads both copies back as f32 into fresh arrays (caller frees) and checks
 * the guards. */
static void pbuf_read(ctx *c, const pbuf *d, float **cpu, float **gpu) {
    float *out[2];
    for (int b = 0; b < 2; b++) {
        tsr_backend *be = c->be[b];
        out[b] = tu_xmalloc((d->n + GUARD) * sizeof(float));
        RUN_OK(c, be->iface->act_to_f32(be, out[b], d->p[b], d->n + GUARD));
        for (size_t i = d->n; i < d->n + GUARD; i++)
            REQUIRE(c, out[b][i] == GUARD_VALUE,
                    "the %s backend wrote past the output (element %zu of %zu is %g)",
                    b == BE_GPU ? "CUDA" : "CPU", i, d->n, (double)out[b][i]);
    }
    *cpu = out[BE_CPU];
    *gpu = out[BE_GPU];
}

static void pbuf_free(ctx *c, pbuf *d) {
    for (int b = 0; b < 2; b++) {
        tsr_backend_free(c->be[b], d->p[b]);
        d->p[b] = NULL;
    }
}

/* Raw bytes (int32 metadata, f32 inv_freq) on both backends. */
static void raw_new(ctx *c, const void *host, size_t bytes, void *p[2]) {
    for (int b = 0; b < 2; b++) {
        RUN_OK(c, tsr_backend_alloc(c->be[b], bytes ? bytes : 1, "test metadata", &p[b]));
        if (bytes)
            RUN_OK(c, c->be[b]->iface->to_device(c->be[b], p[b], host, bytes));
    }
}

static void raw_free(ctx *c, void *p[2]) {
    for (int b = 0; b < 2; b++) {
        tsr_backend_free(c->be[b], p[b]);
        p[b] = NULL;
    }
}

/* Waits for both backends; an asynchronous CUDA error shows here, named
 * after the op just run. */
static void sync_both(ctx *c) {
    for (int b = 0; b < 2; b++)
        RUN_OK(c, tsr_backend_sync(c->be[b]));
}

/* ---- comparison ------------------------------------------------------------------- */

/* Records err = max|gpu - cpu| / max|cpu| for one case of `op`. Where the
 * CPU result is NaN (unwritten cache slots) the GPU's must be NaN too; a NaN
 * from the GPU elsewhere is an infinite error. */
static void compare(ctx *c, opc_op op, const float *gpu, const float *cpu, size_t n) {
    op_stat *st = &c->ops[op];
    double max_ref = 0, max_diff = 0;
    size_t worst = 0, nan_bad = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (isnan(cpu[i])) {
            if (!isnan(gpu[i]) && nan_bad == SIZE_MAX)
                nan_bad = i;
            continue;
        }
        double d = fabs((double)gpu[i] - (double)cpu[i]);
        if (isnan(d))
            d = INFINITY;
        if (d > max_diff) {
            max_diff = d;
            worst = i;
        }
        if (fabs((double)cpu[i]) > max_ref)
            max_ref = fabs((double)cpu[i]);
    }
    double err = max_ref > 0 ? max_diff / max_ref : max_diff;
    st->cases++;
    if (err > st->max_err || st->cases == 1) {
        st->max_err = err > st->max_err ? err : st->max_err;
        snprintf(st->worst, sizeof st->worst, "%s", c->what);
    }
    int bad = !(err <= st->limit) || nan_bad != SIZE_MAX;
    if (c->verbose || bad)
        printf("  %s [%s] %s: err %.3g (limit %.1g)%s\n", bad ? "FAIL" : "case", c->mode, c->what,
               err, st->limit, bad ? "" : " ok");
    if (!bad)
        return;
    if (nan_bad != SIZE_MAX)
        printf("    element %zu: the CPU left it NaN (never written), the CUDA backend wrote %g\n",
               nan_bad, (double)gpu[nan_bad]);
    else
        printf("    worst element %zu of %zu: cuda %.9g, cpu %.9g (max |cpu| %.4g)\n", worst, n,
               (double)gpu[worst], (double)cpu[worst], max_ref);
    if (op == OPC_ROPE && c->act == TSR_F32)
        printf("    (the CPU computes the angle pos * inv_freq in double: in f32 it is off by\n"
               "     up to ~3e-5 rad at pos 600, which alone exceeds the f32 limit)\n");
    st->failed++;
    c->failures++;
}

/* ---- memory ------------------------------------------------------------------------ */

static void test_memory(ctx *c) {
    c->rng = opc_rng(OPC_MEMORY);
    enum { N = 1001 };
    tsr_backend *g = c->be[BE_GPU];
    snprintf(c->what, sizeof c->what, "memory");
    REQUIRE(c, g->iface->act_dtype == c->act, "the CUDA backend reports act_dtype %d, asked for %d",
            (int)g->iface->act_dtype, (int)c->act);
    REQUIRE(c, tsr_backend_act_size(g) == (c->act == TSR_BF16 ? 2u : 4u),
            "act size %zu for act_dtype %s", tsr_backend_act_size(g), c->mode);
    REQUIRE(c, c->cpu_vs_cpu || g->iface->host_memory == 0, "the CUDA backend claims host_memory");
    REQUIRE(c, c->cpu_vs_cpu || tsr_backend_stream(g) != NULL, "the CUDA backend has no stream");

    /* act_from_f32 -> act_to_f32 gives the values themselves (f32) or their
     * round-to-nearest-even bf16 (unrounded input here on purpose). */
    float *h = tu_xmalloc(N * sizeof *h), *want = tu_xmalloc(N * sizeof *want);
    float *back = tu_xmalloc(N * sizeof *back);
    tu_rng_fill(&c->rng, h, N, -3, 3);
    h[0] = 1.00390625f; /* 1 + 2^-8: a tie, rounds to even (1.0) */
    h[1] = 1.01171875f; /* 1 + 3*2^-8: a tie, rounds to even (1.015625) */
    h[2] = -65504.0f;
    h[3] = 1e-30f;
    for (int i = 0; i < N; i++)
        want[i] = c->act == TSR_BF16 ? bf16_round(h[i]) : h[i];
    void *a, *b;
    snprintf(c->what, sizeof c->what, "memory act_from_f32/act_to_f32 n=%d", N);
    RUN_OK(c, tsr_backend_alloc(g, N * tsr_backend_act_size(g), "test", &a));
    RUN_OK(c, tsr_backend_alloc(g, N * tsr_backend_act_size(g), "test", &b));
    RUN_OK(c, g->iface->act_from_f32(g, a, h, N));
    RUN_OK(c, g->iface->act_to_f32(g, back, a, N));
    compare(c, OPC_MEMORY, back, want, N);

    /* copy, then to_host with no sync in between (to_host synchronises) */
    snprintf(c->what, sizeof c->what, "memory copy + act_to_f32 n=%d", N);
    RUN_OK(c, g->iface->copy(g, b, a, N * tsr_backend_act_size(g)));
    RUN_OK(c, g->iface->act_to_f32(g, back, b, N));
    compare(c, OPC_MEMORY, back, want, N);
    snprintf(c->what, sizeof c->what, "memory copy + to_host n=%d", N);
    memset(back, 0, N * sizeof *back);
    RUN_OK(c, g->iface->copy(g, a, b, N * tsr_backend_act_size(g)));
    if (c->act == TSR_F32) {
        RUN_OK(c, g->iface->to_host(g, back, a, N * sizeof *back));
    } else {
        uint16_t *raw = tu_xmalloc(N * sizeof *raw);
        RUN_OK(c, g->iface->to_host(g, raw, a, N * sizeof *raw));
        for (int i = 0; i < N; i++)
            back[i] = tsr_bf16_to_f32(raw[i]);
        free(raw);
    }
    compare(c, OPC_MEMORY, back, want, N);
    tsr_backend_free(g, a);
    tsr_backend_free(g, b);

    /* int32 metadata round trip */
    snprintf(c->what, sizeof c->what, "memory int32 to_device/to_host");
    int32_t ids[7] = {3, -1, 7, INT32_MAX, INT32_MIN, 600, 49151}, ids_back[7];
    void *di;
    RUN_OK(c, tsr_backend_alloc(g, sizeof ids, "test", &di));
    RUN_OK(c, g->iface->to_device(g, di, ids, sizeof ids));
    RUN_OK(c, g->iface->to_host(g, ids_back, di, sizeof ids));
    float fi[7], fb[7];
    for (int i = 0; i < 7; i++) {
        fi[i] = (float)ids[i];
        fb[i] = ids_back[i] == ids[i] ? fi[i] : NAN;
    }
    compare(c, OPC_MEMORY, fb, fi, 7);
    tsr_backend_free(g, di);

    /* vector_upload: activations of the backend's type */
    snprintf(c->what, sizeof c->what, "memory vector_upload n=%d", N);
    float *v = g->iface->vector_upload(g, h, N);
    REQUIRE(c, v != NULL, "vector_upload returned NULL");
    RUN_OK(c, g->iface->act_to_f32(g, back, v, N));
    compare(c, OPC_MEMORY, back, want, N);
    tsr_backend_free(g, v);
    tsr_backend_free(g, NULL);
    free(h), free(want), free(back);
}

/* ---- matmul ------------------------------------------------------------------------ */

static void test_matmul(ctx *c) {
    c->rng = opc_rng(OPC_MATMUL);
    for (size_t k = 0; k < OPC_LEN(opc_matmul_cases); k++) {
        const opc_matmul_case *mc = &opc_matmul_cases[k];
        if (!(mc->on & OPC_ON_CUDA))
            continue;
        int n = mc->n, rows = mc->rows, cols = mc->cols;
        for (int acc = 0; acc < 2; acc++) {
            snprintf(c->what, sizeof c->what, "matmul n=%d rows=%d cols=%d accumulate=%d", n, rows,
                     cols, acc);
            size_t nx = (size_t)n * cols, ny = (size_t)n * rows;
            float *x = rand_act(c, nx, -1, 1), *y0 = rand_act(c, ny, -4, 4);
            float *w = rand_weight(c, (size_t)rows * cols, -1, 1);
            tsr_weight W[2];
            for (int b = 0; b < 2; b++) {
                RUN_OK(c, c->be[b]->iface->weight_upload(c->be[b], &W[b], w, TSR_F32, rows, cols));
                REQUIRE(c, W[b].rows == rows && W[b].cols == cols, "weight shape %dx%d", W[b].rows,
                        W[b].cols);
            }
            REQUIRE(c, c->cpu_vs_cpu || W[BE_GPU].dtype == c->wdt,
                    "the CUDA backend stores weights as dtype %d, not %s: the CPU reference "
                    "no longer matches its storage",
                    (int)W[BE_GPU].dtype, c->wdt == TSR_BF16 ? "bf16" : "f32");
            pbuf dx = pbuf_new(c, x, nx), dy = pbuf_new(c, acc ? y0 : NULL, ny);
            for (int b = 0; b < 2; b++)
                RUN_OK(c, c->be[b]->iface->matmul(c->be[b], dy.p[b], dx.p[b], &W[b], n, acc));
            sync_both(c);
            float *cpu, *gpu;
            pbuf_read(c, &dy, &cpu, &gpu);
            if (n > 0)
                compare(c, OPC_MATMUL, gpu, cpu, ny);
            free(cpu), free(gpu);
            /* x is an input: unchanged on the GPU */
            pbuf_read(c, &dx, &cpu, &gpu);
            REQUIRE(c, !memcmp(gpu, x, nx * sizeof *x), "matmul changed its input x");
            free(cpu), free(gpu);
            for (int b = 0; b < 2; b++)
                c->be[b]->iface->weight_free(c->be[b], &W[b]);
            pbuf_free(c, &dx);
            pbuf_free(c, &dy);
            free(x), free(y0), free(w);
        }
    }
}

/* ---- rmsnorm ----------------------------------------------------------------------- */

static void test_rmsnorm(ctx *c) {
    c->rng = opc_rng(OPC_RMSNORM);
    for (size_t a = 0; a < OPC_LEN(opc_rows); a++)
        for (size_t d = 0; d < OPC_LEN(opc_rmsnorm_dims); d++)
            for (size_t e = 0; e < OPC_LEN(opc_rmsnorm_eps); e++)
                for (int inplace = 0; inplace < 2; inplace++) {
                    if (!(opc_rows[a].on & opc_rmsnorm_dims[d].on & OPC_ON_CUDA))
                        continue;
                    int n = opc_rows[a].v, dim = opc_rmsnorm_dims[d].v;
                    float eps = opc_rmsnorm_eps[e];
                    size_t total = (size_t)n * dim;
                    snprintf(c->what, sizeof c->what, "rmsnorm n=%d dim=%d eps=%g%s", n, dim,
                             (double)eps, inplace ? " in place" : "");
                    float *x = tu_xmalloc(total * sizeof *x);
                    for (int t = 0; t < n; t++) {
                        float mag = opc_rmsnorm_row_mag(t);
                        tu_rng_fill(&c->rng, x + (size_t)t * dim, (size_t)dim, -mag, mag);
                    }
                    if (c->act == TSR_BF16)
                        round_bf16(x, total);
                    float *w = rand_act(c, (size_t)dim, -1.5f, 1.5f);
                    void *wv[2];
                    for (int b = 0; b < 2; b++) {
                        wv[b] = c->be[b]->iface->vector_upload(c->be[b], w, (size_t)dim);
                        REQUIRE(c, wv[b] != NULL, "vector_upload");
                    }
                    pbuf dx = pbuf_new(c, x, total);
                    pbuf dy = inplace ? dx : pbuf_new(c, NULL, total);
                    for (int b = 0; b < 2; b++)
                        RUN_OK(c, c->be[b]->iface->rmsnorm(c->be[b], dy.p[b], dx.p[b], wv[b], n,
                                                           dim, eps));
                    sync_both(c);
                    float *cpu, *gpu;
                    pbuf_read(c, &dy, &cpu, &gpu);
                    compare(c, OPC_RMSNORM, gpu, cpu, total);
                    free(cpu), free(gpu);
                    for (int b = 0; b < 2; b++)
                        tsr_backend_free(c->be[b], wv[b]);
                    pbuf_free(c, &dx);
                    if (!inplace)
                        pbuf_free(c, &dy);
                    free(x), free(w);
                }
}

/* ---- rope -------------------------------------------------------------------------- */

static void test_rope(ctx *c) {
    c->rng = opc_rng(OPC_ROPE);
    size_t k = 0; /* cases run so far */
    for (size_t ci = 0; ci < OPC_LEN(opc_rope_cases); ci++) {
        const opc_rope_case *rc = &opc_rope_cases[ci];
        if (!(rc->on & OPC_ON_CUDA))
            continue;
        int n = rc->n, nh = rc->n_heads, hd = rc->head_dim, half = hd / 2;
        size_t total = (size_t)n * nh * hd;
        snprintf(c->what, sizeof c->what, "rope n=%d heads=%d head_dim=%d theta=%g", n, nh, hd,
                 rc->theta);
        float *inv = tu_xmalloc((size_t)half * sizeof *inv);
        for (int i = 0; i < half; i++)
            inv[i] = rc->theta > 0 ? (float)pow(rc->theta, -2.0 * i / hd)
                                   : tu_rng_float(&c->rng, 1e-4f, 1.0f);
        int32_t *pos = tu_xmalloc((size_t)n * sizeof *pos);
        for (int t = 0; t < n; t++)
            pos[t] = t < 8 && n > 1 ? opc_rope_pos_cuda[(t + k) % 8]
                                    : (int32_t)tu_rng_below(&c->rng, OPC_ROPE_POS_CUDA_BOUND);
        if (n == 1)
            pos[0] = k % 2 ? 600 : 599;
        float *x = rand_act(c, total, -2, 2);
        pbuf dx = pbuf_new(c, x, total);
        void *dpos[2], *dinv[2];
        raw_new(c, pos, (size_t)n * sizeof *pos, dpos);
        raw_new(c, inv, (size_t)half * sizeof *inv, dinv);
        for (int b = 0; b < 2; b++)
            RUN_OK(c, c->be[b]->iface->rope(c->be[b], dx.p[b], dpos[b], dinv[b], n, nh, hd));
        sync_both(c);
        float *cpu, *gpu;
        pbuf_read(c, &dx, &cpu, &gpu);
        compare(c, OPC_ROPE, gpu, cpu, total);
        free(cpu), free(gpu);
        pbuf_free(c, &dx);
        raw_free(c, dpos);
        raw_free(c, dinv);
        free(inv), free(pos), free(x);
        k++;
    }
}

/* ---- kv_store + paged attention ------------------------------------------------------ */

/* Stores `n` tokens (seq[i], pos[i]) of K/V into both caches. */
static void store_tokens(ctx *c, const pbuf *kc, const pbuf *vc, float *const *K, float *const *V,
                         const int32_t *seq, const int32_t *pos, const int32_t *slot, int n,
                         int kv_dim) {
    float *kb = tu_xmalloc((size_t)n * kv_dim * sizeof *kb);
    float *vb = tu_xmalloc((size_t)n * kv_dim * sizeof *vb);
    for (int i = 0; i < n; i++) {
        memcpy(kb + (size_t)i * kv_dim, K[seq[i]] + (size_t)pos[i] * kv_dim,
               (size_t)kv_dim * sizeof *kb);
        memcpy(vb + (size_t)i * kv_dim, V[seq[i]] + (size_t)pos[i] * kv_dim,
               (size_t)kv_dim * sizeof *vb);
    }
    pbuf dk = pbuf_new(c, kb, (size_t)n * kv_dim), dv = pbuf_new(c, vb, (size_t)n * kv_dim);
    void *dslot[2];
    raw_new(c, slot, (size_t)n * sizeof *slot, dslot);
    for (int b = 0; b < 2; b++)
        RUN_OK(c, c->be[b]->iface->kv_store(c->be[b], kc->p[b], vc->p[b],
                                            tsr_backend_act_dtype(c->be[b]), dk.p[b], dv.p[b],
                                            dslot[b], n, kv_dim));
    sync_both(c);
    pbuf_free(c, &dk);
    pbuf_free(c, &dv);
    raw_free(c, dslot);
    free(kb), free(vb);
}

static void test_attention_case(ctx *c, const opc_attn_case *ac) {
    tu_rng *r = &c->rng;
    const int hd = ac->head_dim, bs = ac->block_size, S = ac->n_seqs;
    const int kv_dim = ac->n_kv * hd, q_dim = ac->n_head * hd;
    const float scale = ac->scale > 0 ? ac->scale : 1.0f / sqrtf((float)hd);
    opc_attn_layout L;
    opc_attn_layout_init(&L, ac, r);
    const int *len = L.len, n_blocks = L.n_blocks, max_blocks = L.max_blocks, max_len = L.max_len;
    const int32_t *tables = L.tables;

    float *K[OPC_MAX_SEQS], *V[OPC_MAX_SEQS];
    for (int s = 0; s < S; s++) {
        K[s] = rand_act(c, (size_t)len[s] * kv_dim, -1, 1);
        V[s] = rand_act(c, (size_t)len[s] * kv_dim, -1, 1);
    }
    size_t cache_n = (size_t)n_blocks * bs * kv_dim;
    pbuf kc = pbuf_new(c, NULL, cache_n), vc = pbuf_new(c, NULL, cache_n);

    /* Phase 0 stores the prior positions (shuffled order); phase 1 stores
     * the new tokens (interleaved across sequences), then runs attention for
     * them. */
    for (int phase = 0; phase < 2; phase++) {
        int32_t *seq, *pos, *slot;
        const int n = opc_attn_phase(&L, ac, phase, r, &seq, &pos, &slot);
        if (n == 0)
            continue;
        snprintf(c->what, sizeof c->what,
                 "kv_store %s: kv_dim=%d block=%d blocks=%d tokens=%d (phase %d)", ac->label,
                 kv_dim, bs, n_blocks, n, phase);
        store_tokens(c, &kc, &vc, K, V, seq, pos, slot, n, kv_dim);

        if (phase == 1) {
            /* The whole caches agree, NaN (never written) slots included. */
            float *cpu, *gpu;
            pbuf_read(c, &kc, &cpu, &gpu);
            compare(c, OPC_KV_STORE, gpu, cpu, cache_n);
            free(cpu), free(gpu);
            pbuf_read(c, &vc, &cpu, &gpu);
            compare(c, OPC_KV_STORE, gpu, cpu, cache_n);
            free(cpu), free(gpu);

            snprintf(c->what, sizeof c->what,
                     "attention %s: heads=%d kv_heads=%d head_dim=%d block=%d seqs=%d tokens=%d "
                     "max_pos=%d",
                     ac->label, ac->n_head, ac->n_kv, hd, bs, S, n, max_len - 1);
            float *q = rand_act(c, (size_t)n * q_dim, -2, 2);
            pbuf dq = pbuf_new(c, q, (size_t)n * q_dim);
            pbuf dout = pbuf_new(c, NULL, (size_t)n * q_dim);
            void *dpos[2], *dseq[2], *dtab[2];
            raw_new(c, pos, (size_t)n * sizeof *pos, dpos);
            raw_new(c, seq, (size_t)n * sizeof *seq, dseq);
            raw_new(c, tables, (size_t)S * max_blocks * sizeof *tables, dtab);
            for (int b = 0; b < 2; b++) {
                tsr_attn_desc d = {
                    .n_tokens = n,
                    .n_head = ac->n_head,
                    .n_kv_head = ac->n_kv,
                    .head_dim = hd,
                    .block_size = bs,
                    .max_blocks = max_blocks,
                    .kv_dtype = tsr_backend_act_dtype(c->be[b]), /* both caches: activations */
                    .scale = scale,
                    .pos = dpos[b],
                    .seq = dseq[b],
                    .block_tables = dtab[b],
                };
                RUN_OK(c, c->be[b]->iface->attention(c->be[b], dout.p[b], dq.p[b], kc.p[b], vc.p[b],
                                                     &d));
            }
            sync_both(c);
            pbuf_read(c, &dout, &cpu, &gpu);
            compare(c, OPC_ATTENTION, gpu, cpu, (size_t)n * q_dim);
            free(cpu), free(gpu);
            pbuf_free(c, &dq);
            pbuf_free(c, &dout);
            raw_free(c, dpos);
            raw_free(c, dseq);
            raw_free(c, dtab);
            free(q);
        }
        free(seq), free(pos), free(slot);
    }
    pbuf_free(c, &kc);
    pbuf_free(c, &vc);
    for (int s = 0; s < S; s++)
        free(K[s]), free(V[s]);
    opc_attn_layout_free(&L);
}

static void test_attention(ctx *c) {
    c->rng = opc_rng(OPC_ATTENTION);
    for (size_t k = 0; k < OPC_LEN(opc_attn_cases); k++)
        if (opc_attn_cases[k].on & OPC_ON_CUDA)
            test_attention_case(c, &opc_attn_cases[k]);
}

/* ---- element-wise ops --------------------------------------------------------------- */

static void test_swiglu(ctx *c) {
    c->rng = opc_rng(OPC_SWIGLU);
    for (size_t a = 0; a < OPC_LEN(opc_rows); a++)
        for (size_t d = 0; d < OPC_LEN(opc_swiglu_dims); d++)
            for (int alias = 0; alias < 2; alias++) {
                if (!(opc_rows[a].on & opc_swiglu_dims[d].on & OPC_ON_CUDA))
                    continue;
                int n = opc_rows[a].v, dim = opc_swiglu_dims[d].v;
                size_t total = (size_t)n * dim;
                snprintf(c->what, sizeof c->what, "swiglu n=%d dim=%d%s", n, dim,
                         alias ? " out=gate" : "");
                float *g = rand_act(c, total, -12, 12), *u = rand_act(c, total, -3, 3);
                pbuf dg = pbuf_new(c, g, total), du = pbuf_new(c, u, total);
                pbuf dout = alias ? dg : pbuf_new(c, NULL, total);
                for (int b = 0; b < 2; b++)
                    RUN_OK(c,
                           c->be[b]->iface->swiglu(c->be[b], dout.p[b], dg.p[b], du.p[b], n, dim));
                sync_both(c);
                float *cpu, *gpu;
                pbuf_read(c, &dout, &cpu, &gpu);
                compare(c, OPC_SWIGLU, gpu, cpu, total);
                free(cpu), free(gpu);
                pbuf_free(c, &dg);
                pbuf_free(c, &du);
                if (!alias)
                    pbuf_free(c, &dout);
                free(g), free(u);
            }
}

/* argmax: both backends see the same (rounded) logits, so the picks must be
 * identical: value and column, ties going to the lowest column. */
static void test_argmax(ctx *c) {
    c->rng = opc_rng(OPC_ARGMAX);
    for (size_t a = 0; a < OPC_LEN(opc_argmax_rows_cuda); a++)
        for (size_t k = 0; k < OPC_LEN(opc_pick_vocab_cuda); k++)
            for (int tie = 0; tie < 2; tie++) {
                int n = opc_argmax_rows_cuda[a], V = opc_pick_vocab_cuda[k];
                size_t total = (size_t)n * V;
                snprintf(c->what, sizeof c->what, "argmax n=%d V=%d%s", n, V,
                         tie ? " planted ties" : "");
                float *l = rand_act(c, total, -20, 20);
                if (tie && V > 2) /* the row's max at two columns: the lower must win */
                    for (int i = 0; i < n; i++) {
                        int j1 = (int)((i * 7919u + 3) % (unsigned)V), j0 = j1 / 2;
                        l[(size_t)i * V + j0] = l[(size_t)i * V + j1] = 40.0f;
                    }
                pbuf dl = pbuf_new(c, l, total);
                float val[2][64];
                int32_t idx[2][64];
                for (int b = 0; b < 2; b++)
                    RUN_OK(c, c->be[b]->iface->argmax(c->be[b], val[b], idx[b], dl.p[b], n, V));
                double worst = 0;
                for (int i = 0; i < n; i++) {
                    REQUIRE(c, idx[BE_GPU][i] == idx[BE_CPU][i] && val[BE_GPU][i] == val[BE_CPU][i],
                            "row %d: gpu picked column %d (%g), cpu column %d (%g)", i,
                            idx[BE_GPU][i], val[BE_GPU][i], idx[BE_CPU][i], val[BE_CPU][i]);
                    if (idx[BE_GPU][i] != idx[BE_CPU][i])
                        worst = 1;
                }
                float zero = 0.0f, w = (float)worst;
                compare(c, OPC_ARGMAX, &w, &zero, 1);
                pbuf_free(c, &dl);
                free(l);
            }
}

/* qsort by tsr_topk_before over (value, column) pairs of one row */
typedef struct {
    float v;
    int32_t i;
} tk_pair;

static int tk_cmp(const void *a, const void *b) {
    const tk_pair *x = a, *y = b;
    return tsr_topk_before(x->v, x->i, y->v, y->i) ? -1 : tsr_topk_before(y->v, y->i, x->v, x->i);
}

/* Both backends' topk against a full sort of each row (the order of
 * kernels/backend.h: NaN first, larger, lower column), and against each
 * other bit for bit: planted ties, a NaN row entry, -inf entries, k > V. */
static void test_topk(ctx *c) {
    c->rng = opc_rng(OPC_TOPK);
    for (size_t a = 0; a < OPC_LEN(opc_topk_rows_cuda); a++)
        for (size_t vi = 0; vi < OPC_LEN(opc_pick_vocab_cuda); vi++)
            for (size_t ki = 0; ki < OPC_LEN(opc_topk_k_cuda); ki++) {
                const int n = opc_topk_rows_cuda[a], V = opc_pick_vocab_cuda[vi],
                          k = opc_topk_k_cuda[ki];
                const size_t total = (size_t)n * V, m = (size_t)n * k;
                snprintf(c->what, sizeof c->what, "topk n=%d V=%d k=%d", n, V, k);
                float *l = rand_act(c, total, -20, 20);
                for (int i = 0; i < n && V > 4; i++) {
                    float *row = l + (size_t)i * V;
                    const int j1 = (int)((i * 7919u + 3) % (unsigned)V);
                    row[j1 / 2] = row[j1] = 25.0f; /* a tie at the top */
                    row[(j1 + 1) % V] = row[(j1 + 2) % V] = row[(j1 + 3) % V] = 1.5f;
                    row[(j1 + 4) % V] = -INFINITY;
                    if (i == 2)
                        row[V / 3] = NAN; /* a broken row: the NaN comes first */
                }
                pbuf dl = pbuf_new(c, l, total);
                float *val[2], *ref_v = malloc(m * sizeof *ref_v);
                int32_t *idx[2], *ref_i = malloc(m * sizeof *ref_i);
                tk_pair *row = malloc((size_t)V * sizeof *row);
                REQUIRE(c, ref_v && ref_i && row, "out of memory");
                for (int b = 0; b < 2; b++) {
                    val[b] = malloc(m * sizeof *val[b]);
                    idx[b] = malloc(m * sizeof *idx[b]);
                    REQUIRE(c, val[b] && idx[b], "out of memory");
                    RUN_OK(c, c->be[b]->iface->topk(c->be[b], val[b], idx[b], dl.p[b], n, V, k));
                }
                float *seen = malloc(total * sizeof *seen); /* what the device holds */
                REQUIRE(c, seen != NULL, "out of memory");
                {
                    float *cpu_copy, *gpu_copy;
                    pbuf_read(c, &dl, &cpu_copy, &gpu_copy);
                    memcpy(seen, gpu_copy, total * sizeof *seen);
                    free(cpu_copy);
                    free(gpu_copy);
                }
                for (int i = 0; i < n; i++) {
                    for (int j = 0; j < V; j++)
                        row[j] = (tk_pair){seen[(size_t)i * V + j], j};
                    qsort(row, (size_t)V, sizeof *row, tk_cmp);
                    for (int j = 0; j < k; j++) {
                        ref_v[(size_t)i * k + j] = j < V ? row[j].v : -INFINITY;
                        ref_i[(size_t)i * k + j] = j < V ? row[j].i : -1;
                    }
                }
                double worst = 0;
                for (size_t e = 0; e < m; e++)
                    for (int b = 0; b < 2; b++) {
                        const float x = val[b][e], y = ref_v[e];
                        const int same_v = (x != x && y != y) || x == y;
                        REQUIRE(c, idx[b][e] == ref_i[e] && same_v,
                                "%s row %zu entry %zu: column %d (%g), the sort says %d (%g)",
                                b == BE_GPU ? "gpu" : "cpu", e / (size_t)k, e % (size_t)k,
                                idx[b][e], (double)x, ref_i[e], (double)y);
                        if (idx[b][e] != ref_i[e])
                            worst = 1;
                    }
                float zero = 0.0f, w = (float)worst;
                compare(c, OPC_TOPK, &w, &zero, 1);
                for (int b = 0; b < 2; b++) {
                    free(val[b]);
                    free(idx[b]);
                }
                free(seen);
                free(row);
                free(ref_v);
                free(ref_i);
                pbuf_free(c, &dl);
                free(l);
            }
}

/* row_expsum: each row's maximum must be the same float on both backends,
 * and the sum of exp((l - max) / T) agree within the mode's limit, at a
 * temperature per row; a NaN entry and an all -inf row give NaN sums. */
static void test_row_expsum(ctx *c) {
    c->rng = opc_rng(OPC_ROW_EXPSUM);
    for (size_t a = 0; a < OPC_LEN(opc_expsum_rows_cuda); a++)
        for (size_t vi = 0; vi < OPC_LEN(opc_expsum_vocab); vi++) {
            if (!(opc_expsum_vocab[vi].on & OPC_ON_CUDA))
                continue;
            const int n = opc_expsum_rows_cuda[a], V = opc_expsum_vocab[vi].v;
            const size_t total = (size_t)n * V;
            snprintf(c->what, sizeof c->what, "row_expsum n=%d V=%d", n, V);
            float *l = rand_act(c, total, -20, 20);
            float *inv_t = tu_xmalloc((size_t)n * sizeof *inv_t);
            tu_rng_fill(&c->rng, inv_t, (size_t)n, 0.3f, 3.0f);
            for (int i = 0; i < n && V > 4; i++) {
                float *row = l + (size_t)i * V;
                row[(i * 7919u + 3) % (unsigned)V] = -INFINITY;
                if (i == 2)
                    row[V / 3] = NAN;
                if (i == 3)
                    for (int j = 0; j < V; j++)
                        row[j] = -INFINITY;
            }
            pbuf dl = pbuf_new(c, l, total);
            float *out[2], *sums[2];
            for (int b = 0; b < 2; b++) {
                out[b] = tu_xmalloc((size_t)n * 2 * sizeof *out[b]);
                sums[b] = tu_xmalloc((size_t)n * sizeof *sums[b]);
                RUN_OK(c, c->be[b]->iface->row_expsum(c->be[b], out[b], dl.p[b], inv_t, n, V));
                for (int i = 0; i < n; i++)
                    sums[b][i] = out[b][2 * i + 1];
            }
            for (int i = 0; i < n; i++) {
                const float g = out[BE_GPU][2 * i], r = out[BE_CPU][2 * i];
                REQUIRE(c, g == r || (isnan(g) && isnan(r)), "row %d: gpu max %g, cpu max %g", i,
                        (double)g, (double)r);
                REQUIRE(c, !(V > 4 && (i == 2 || i == 3)) || isnan(sums[BE_CPU][i]),
                        "row %d: the cpu sum %g of a broken row is not NaN", i,
                        (double)sums[BE_CPU][i]);
            }
            compare(c, OPC_ROW_EXPSUM, sums[BE_GPU], sums[BE_CPU], (size_t)n);
            for (int b = 0; b < 2; b++) {
                free(out[b]);
                free(sums[b]);
            }
            free(inv_t);
            pbuf_free(c, &dl);
            free(l);
        }
}

static void test_add(ctx *c) {
    for (int bias = 0; bias < 2; bias++) {
        c->rng = opc_rng(bias ? OPC_ADD_BIAS : OPC_ADD);
        for (size_t a = 0; a < OPC_LEN(opc_rows); a++)
            for (size_t d = 0; d < OPC_LEN(opc_add_dims); d++) {
                if (!(opc_rows[a].on & opc_add_dims[d].on & OPC_ON_CUDA))
                    continue;
                int n = opc_rows[a].v, dim = opc_add_dims[d].v;
                size_t total = (size_t)n * dim, xn = bias ? (size_t)dim : total;
                snprintf(c->what, sizeof c->what, "%s n=%d dim=%d", bias ? "add_bias" : "add", n,
                         dim);
                float *y = rand_act(c, total, -5, 5), *x = rand_act(c, xn, -5, 5);
                pbuf dy = pbuf_new(c, y, total), dx = {{NULL, NULL}, 0};
                void *bv[2] = {NULL, NULL};
                if (bias) {
                    /* biases come from vector_upload, as in the runtime */
                    for (int b = 0; b < 2; b++) {
                        bv[b] = c->be[b]->iface->vector_upload(c->be[b], x, xn);
                        REQUIRE(c, bv[b] != NULL, "vector_upload");
                        RUN_OK(c, c->be[b]->iface->add_bias(c->be[b], dy.p[b], bv[b], n, dim));
                    }
                } else {
                    dx = pbuf_new(c, x, xn);
                    for (int b = 0; b < 2; b++)
                        RUN_OK(c, c->be[b]->iface->add(c->be[b], dy.p[b], dx.p[b], n, dim));
                }
                sync_both(c);
                float *cpu, *gpu;
                pbuf_read(c, &dy, &cpu, &gpu);
                compare(c, bias ? OPC_ADD_BIAS : OPC_ADD, gpu, cpu, total);
                free(cpu), free(gpu);
                pbuf_free(c, &dy);
                if (bias)
                    for (int b = 0; b < 2; b++)
                        tsr_backend_free(c->be[b], bv[b]);
                else
                    pbuf_free(c, &dx);
                free(y), free(x);
            }
    }
}

static void test_embedding(ctx *c) {
    c->rng = opc_rng(OPC_EMBEDDING);
    static const int ns[] = {1, 37};
    const int rows = OPC_EMBEDDING_ROWS_CUDA;
    for (size_t d = 0; d < OPC_LEN(opc_embedding_dims); d++)
        for (size_t k = 0; k < OPC_LEN(opc_embedding_row0s); k++)
            for (int m = 0; m < 2; m++) {
                if (!(opc_embedding_dims[d].on & opc_embedding_row0s[k].on & OPC_ON_CUDA))
                    continue;
                int dim = opc_embedding_dims[d].v, row0 = opc_embedding_row0s[k].v, n = ns[m];
                snprintf(c->what, sizeof c->what, "embedding n=%d rows=%d dim=%d row0=%d", n, rows,
                         dim, row0);
                float *tab = rand_weight(c, (size_t)rows * dim, -1, 1);
                tsr_weight W[2];
                for (int b = 0; b < 2; b++)
                    RUN_OK(c, c->be[b]->iface->weight_upload(c->be[b], &W[b], tab, TSR_F32, rows,
                                                             dim));
                /* in the slice, at its edges, just outside, and far outside */
                static const int64_t edge[] = {0, 998, -1, 999, 500};
                int32_t *ids = tu_xmalloc((size_t)n * sizeof *ids);
                for (int t = 0; t < n; t++) {
                    int64_t id;
                    if (n == 1)
                        id = row0 + (k == 0 ? 998 : -1); /* decode: in (first), out (others) */
                    else if (t < 5)
                        id = row0 + edge[t];
                    else if (t == 5)
                        id = INT32_MIN;
                    else if (t == 6)
                        id = INT32_MAX;
                    else if (t == 7)
                        id = -1;
                    else
                        id = row0 - 50 + (int64_t)tu_rng_below(&c->rng, (uint64_t)rows + 100);
                    ids[t] = (int32_t)id;
                }
                void *dids[2];
                raw_new(c, ids, (size_t)n * sizeof *ids, dids);
                pbuf dout = pbuf_new(c, NULL, (size_t)n * dim);
                for (int b = 0; b < 2; b++)
                    RUN_OK(c, c->be[b]->iface->embedding(c->be[b], dout.p[b], &W[b], dids[b], n,
                                                         row0));
                sync_both(c);
                float *cpu, *gpu;
                pbuf_read(c, &dout, &cpu, &gpu);
                compare(c, OPC_EMBEDDING, gpu, cpu, (size_t)n * dim);
                free(cpu), free(gpu);
                for (int b = 0; b < 2; b++)
                    c->be[b]->iface->weight_free(c->be[b], &W[b]);
                raw_free(c, dids);
                pbuf_free(c, &dout);
                free(tab), free(ids);
            }
}

/* ---- driver ------------------------------------------------------------------------- */

/* Runs every op in one mode; returns the number of failed cases. */
static int run_mode(tsr_backend *cpu, tsr_backend *gpu, tsr_dtype act, tsr_dtype wdt, int verbose,
                    int cpu_vs_cpu) {
    ctx c = {.be = {cpu, gpu},
             .act = act,
             .mode = act == TSR_BF16  ? "bf16"
                     : wdt == TSR_F32 ? "f32 weights"
                                      : "f32",
             .wdt = wdt,
             .verbose = verbose,
             .cpu_vs_cpu = cpu_vs_cpu};
    /* Every op seeds its own inputs (opc_rng): the same inputs in every mode
     * (up to rounding). f32 weights (reference precision): matmul is a full
     * f32 GEMM, 1e-5 too. */
    for (int op = 0; op < OPC_COUNT; op++)
        c.ops[op].limit = act == TSR_BF16  ? opc_ops[op].cuda_bf16
                          : wdt == TSR_F32 ? opc_ops[op].cuda_f32_weights
                                           : opc_ops[op].cuda_f32;
    if (cpu_vs_cpu)
        printf("act f32, CPU backend (1 thread) in the CUDA slot: a check of this test itself\n");
    else
        printf("mode %s (CUDA activations in %s, weights in %s; reference: CPU backend)\n", c.mode,
               act == TSR_BF16 ? "bf16" : "f32", wdt == TSR_BF16 ? "bf16" : "f32");
    test_memory(&c);
    test_matmul(&c);
    test_rmsnorm(&c);
    test_rope(&c);
    test_attention(&c);
    test_swiglu(&c);
    test_add(&c);
    test_embedding(&c);
    test_argmax(&c);
    test_topk(&c);
    test_row_expsum(&c);
    for (int op = 0; op < OPC_COUNT; op++) {
        const op_stat *st = &c.ops[op];
        printf("  [%-4s] %-10s %3d cases  max err %.3e  limit %.0e  %s%s%s\n", c.mode,
               opc_ops[op].name, st->cases, st->max_err, st->limit, st->failed ? "FAIL" : "ok",
               st->cases ? "  worst: " : "", st->worst);
        if (st->cases == 0) {
            printf("  FAIL [%s] %s: no case ran\n", c.mode, opc_ops[op].name);
            c.failures++;
        }
    }
    return c.failures;
}

int main(int argc, char **argv) {
    int verbose = 0, cpu_vs_cpu = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-v"))
            verbose = 1;
        else if (!strcmp(argv[i], "--cpu-vs-cpu"))
            cpu_vs_cpu = 1;
        else {
            fprintf(stderr, "usage: test_cuda_ops [-v] [--cpu-vs-cpu]\n"
                            "  -v            print every case\n"
                            "  --cpu-vs-cpu  run the comparisons with a second CPU backend in\n"
                            "                place of CUDA (f32 only): checks this test's own\n"
                            "                bookkeeping on a machine without a GPU\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (cpu_vs_cpu) {
        tsr_backend *a = NULL, *b = NULL;
        CHECK_OK(tsr_backend_cpu_create(0, &a));
        CHECK_OK(tsr_backend_cpu_create(1, &b));
        int failures = run_mode(a, b, TSR_F32, TSR_F32, verbose, 1);
        tsr_backend_destroy(a);
        tsr_backend_destroy(b);
        printf("test_cuda_ops --cpu-vs-cpu: %s\n", failures ? "FAILED" : "all passed");
        return failures ? 1 : 0;
    }

    int ndev = tsr_backend_cuda_device_count();
    tsr_backend *gpu = NULL;
    if (ndev == 0) {
        tsr_error_clear();
        tsr_status s = tsr_backend_cuda_create(0, TSR_F32, TSR_BF16, &gpu);
        printf("skipped: no CUDA device (tsr_backend_cuda_device_count() is 0: %s)\n",
               s != TSR_OK && tsr_error_msg()[0] ? tsr_error_msg() : "no driver or no GPU");
        tsr_backend_destroy(gpu);
        return 77;
    }
    tsr_backend *cpu = NULL;
    CHECK_OK(tsr_backend_cpu_create(0, &cpu));
    static const tsr_dtype modes[] = {TSR_F32, TSR_BF16, TSR_F32};
    static const tsr_dtype wmodes[] = {TSR_BF16, TSR_BF16, TSR_F32};
    int failures = 0;
    for (int m = 0; m < 3; m++) {
        tsr_error_clear();
        tsr_status s = tsr_backend_cuda_create(0, modes[m], wmodes[m], &gpu);
        if (s == TSR_ERR_UNSUPPORTED && m == 0) {
            printf("skipped: no CUDA device (%d device(s) counted, but: %s)\n", ndev,
                   tsr_error_msg());
            tsr_backend_destroy(cpu);
            return 77;
        }
        CHECK(s == TSR_OK, "tsr_backend_cuda_create(0, %s) returned %s",
              modes[m] == TSR_BF16 ? "TSR_BF16" : "TSR_F32", tsr_status_str(s));
        if (m == 0)
            printf("CUDA devices: %d; testing device 0 (%s backend)\n", ndev, gpu->iface->name);
        failures += run_mode(cpu, gpu, modes[m], wmodes[m], verbose, 0);
        tsr_backend_destroy(gpu);
        gpu = NULL;
    }
    tsr_backend_destroy(cpu);
    if (failures) {
        printf("test_cuda_ops: %d case(s) FAILED (see FAIL lines above)\n", failures);
        return 1;
    }
    printf("test_cuda_ops: all passed\n");
    return 0;
}
