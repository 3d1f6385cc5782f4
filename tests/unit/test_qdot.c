/* tests/unit/test_qdot.c - unit tests for kernels/cpu/qdot: the dot kernels
 * of every weight format that has a reference kernel, at every
 * instruction-set level this CPU runs, and the two activation quantizers.
 *
 * The formats are found by asking every tsr_dtype id for its reference
 * kernel, so a format that gains one later is covered without a change here
 * (only its f16 scale fields must be listed in scale_fields below; an
 * unlisted format fails the test saying so). For each format, rows of
 * n = 1, 2, 3, 7 and 17 blocks are built from random bytes with sane random
 * f16 scales, and activations with varied magnitudes, all-zero blocks and
 * blocks with one large outlier, at unaligned addresses (the activations
 * aligned as their structs). Checks:
 *  - the reference kernel against the weight row dequantized by
 *    tsr_dequantize (the ground truth, bit-exact with gguf-py) times the
 *    quantized activations d*q, summed in double;
 *  - every other level with a kernel for the format, where the CPU runs it,
 *    against the reference (a level the CPU lacks is skipped, saying so);
 * both within 1e-5 of the scale sum |a_i| * max |w_j| over the 32 elements
 * j of i's group (zero when the scale is zero). The max and not |w_i| alone:
 * formats with a min (Q4_1, Q5_1, the K-quants' dmin) sum d*q*a and m*a
 * apart, as the kernels must, and an element with d*q ~ -m cancels to a
 * small w_i whose product still carries the rounding of the two terms;
 * random q spread over their range make the group's max bound both terms;
 *  - the quantizers: |q| <= 127 with 127 reached in every nonzero block,
 *    |x - d*q| <= d/2 up to rounding, s = d * sum(qs) for tsr_q8a, the
 *    bsums for tsr_q8k, d = 0 and q = 0 for a block of zeros.
 *
 * `test_qdot --bench` instead prints ns per row of every kernel at 576 and
 * 1536 elements (ctest does not pass it). Exits 0 on success, 1 with a
 * message naming the format, level and row at the first failure. */
#include "kernels/cpu/qdot.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "tests/common/check.h"

#define RTOL 1e-5

/* The f16 scale fields of each block format (byte offsets in a block, from
 * the layouts in kernels/dtype.c); every other byte is random. */
static const struct {
    tsr_dtype t;
    int n;
    int off[2];
} scale_fields[] = {
    {TSR_Q4_0, 1, {0}},    {TSR_Q4_1, 2, {0, 2}}, {TSR_Q5_0, 1, {0}},      {TSR_Q5_1, 2, {0, 2}},
    {TSR_Q8_0, 1, {0}},    {TSR_IQ4_NL, 1, {0}},  {TSR_Q2_K, 2, {80, 82}}, {TSR_Q3_K, 1, {108}},
    {TSR_Q4_K, 2, {0, 2}}, {TSR_Q5_K, 2, {0, 2}}, {TSR_Q6_K, 1, {208}},
};

static int scale_field_index(int t) {
    for (size_t i = 0; i < sizeof scale_fields / sizeof scale_fields[0]; i++)
        if ((int)scale_fields[i].t == t)
            return (int)i;
    return -1;
}

/* nb random blocks of format t; the scales are +-[2^-12, 2^-2), one in 16 zero. */
static void rand_weights(tu_rng *r, int t, uint8_t *w, int nb) {
    const size_t bb = tsr_dtype_block_bytes(t);
    const int f = scale_field_index(t);
    CHECK(f >= 0, "%s has a reference kernel but test_qdot does not know its scale fields",
          tsr_dtype_name(t));
    for (int b = 0; b < nb; b++) {
        uint8_t *p = w + (size_t)b * bb;
        for (size_t i = 0; i < bb; i++)
            p[i] = (uint8_t)tu_rng_u64(r);
        for (int k = 0; k < scale_fields[f].n; k++) {
            float v = ldexpf(1.0f + (float)tu_rng_unit(r), -2 - (int)tu_rng_below(r, 10));
            if (tu_rng_below(r, 2))
                v = -v;
            if (tu_rng_below(r, 16) == 0)
                v = 0;
            const uint16_t h = tsr_f32_to_f16(v);
            p[scale_fields[f].off[k]] = (uint8_t)(h & 0xff);
            p[scale_fields[f].off[k] + 1] = (uint8_t)(h >> 8);
        }
    }
}

/* n activations: per 32, values in +-m for m in [1e-3, 1e3), a zero block
 * (1 in 8) or one outlier of 1000 m (1 in 8); and one activation block (of
 * `qa` elements) in 6 zeroed whole. */
static void rand_acts(tu_rng *r, float *x, int n, int qa) {
    for (int c = 0; c < n; c += 32) {
        const int mode = (int)tu_rng_below(r, 8);
        const float m = powf(10.0f, (float)(6.0 * tu_rng_unit(r) - 3.0));
        for (int i = 0; i < 32; i++)
            x[c + i] = mode == 0 ? 0.0f : tu_rng_float(r, -m, m);
        if (mode == 1)
            x[c + (int)tu_rng_below(r, 32)] = (tu_rng_below(r, 2) ? 1000.0f : -1000.0f) * m;
    }
    for (int c = 0; c < n; c += qa)
        if (tu_rng_below(r, 6) == 0)
            memset(x + c, 0, (size_t)qa * sizeof *x);
}

static int act_block(tsr_act_kind k) { return k == TSR_ACT_Q8K ? TSR_QKK : TSR_QK; }

/* The values d*q of a quantized activation row, in double. */
static void act_values(tsr_act_kind k, const void *a, int n, double *out) {
    for (int i = 0; i < n; i++) {
        if (k == TSR_ACT_Q8K) {
            const tsr_q8k *q = (const tsr_q8k *)a + i / TSR_QKK;
            out[i] = (double)q->d * q->qs[i % TSR_QKK];
        } else {
            const tsr_q8a *q = (const tsr_q8a *)a + i / TSR_QK;
            out[i] = (double)q->d * q->qs[i % TSR_QK];
        }
    }
}

/* ---- the kernels ------------------------------------------------------------------ */

typedef struct {
    int rows;     /* rows checked */
    double worst; /* largest error / scale (error alone where the scale is 0) */
} tally;

static void tally_add(tally *y, double err, double scale) {
    y->rows++;
    const double e = scale > 0 ? err / scale : err;
    if (e > y->worst)
        y->worst = e;
}

static const int block_counts[] = {1, 2, 3, 7, 17};
enum { TRIALS = 40 }; /* rows per block count and format */

static void test_format(tu_rng *r, int t) {
    const tsr_qkernel *ref = tsr_qkernel_exact((tsr_dtype)t, TSR_ISA_REF);
    const char *name = tsr_dtype_name(t);
    CHECK(ref->isa == TSR_ISA_REF, "%s: the reference kernel says it is %s", name,
          tsr_isa_name(ref->isa));
    CHECK(tsr_qkernel_get((tsr_dtype)t, TSR_ISA_REF) == ref, "%s", name);
    const int blk = (int)tsr_dtype_block(t), qa = act_block(ref->act);
    CHECK(blk % qa == 0, "%s: blocks of %d elements, activation blocks of %d", name, blk, qa);

    tally ty[TSR_ISA_COUNT] = {{0, 0}};
    for (size_t c = 0; c < sizeof block_counts / sizeof block_counts[0]; c++) {
        const int nb = block_counts[c], n = nb * blk;
        const size_t wbytes = tsr_dtype_row_bytes(t, (uint64_t)n);
        const size_t abytes = tsr_act_row_bytes(ref->act, n);
        float *x = tu_xmalloc((size_t)n * sizeof *x), *wf = tu_xmalloc((size_t)n * sizeof *wf);
        double *av = tu_xmalloc((size_t)n * sizeof *av);
        for (int trial = 0; trial < TRIALS; trial++) {
            /* exact sizes (a read past either row shows under ASan); weights
             * at addresses of every alignment, activations at every multiple
             * of their structs' alignment (4) below 16 */
            const size_t woff = (size_t)trial % 4, aoff = 4 * ((size_t)(trial / 4) % 4);
            uint8_t *wbuf = tu_xmalloc(wbytes + woff), *abuf = tu_xmalloc(abytes + aoff);
            uint8_t *w = wbuf + woff, *a = abuf + aoff;
            rand_weights(r, t, w, nb);
            rand_acts(r, x, n, qa);
            tsr_quantize_act(ref->act, x, a, n);
            tsr_dequantize(t, w, wf, (size_t)n);
            act_values(ref->act, a, n, av);
            double want = 0, scale = 0;
            for (int g = 0; g < n; g += 32) {
                double wmax = 0;
                for (int i = g; i < g + 32; i++)
                    wmax = fmax(wmax, fabs((double)wf[i]));
                for (int i = g; i < g + 32; i++) {
                    want += (double)wf[i] * av[i];
                    scale += wmax * fabs(av[i]);
                }
            }
            const float got_ref = ref->dot(n, w, a);
            const double err_ref = fabs((double)got_ref - want);
            CHECK(err_ref <= RTOL * scale,
                  "%s ref, %d blocks, trial %d: %.9g, dequantize-then-f64 %.9g "
                  "(error %.3g, allowed %.3g)",
                  name, nb, trial, (double)got_ref, want, err_ref, RTOL * scale);
            tally_add(&ty[TSR_ISA_REF], err_ref, scale);

            for (int isa = 1; isa < TSR_ISA_COUNT; isa++) {
                const tsr_qkernel *k = tsr_qkernel_exact((tsr_dtype)t, (tsr_isa)isa);
                if (!k || !tsr_isa_supported((tsr_isa)isa))
                    continue;
                const float got = k->dot(n, w, a);
                const double err = fabs((double)got - (double)got_ref);
                CHECK(err <= RTOL * scale,
                      "%s %s, %d blocks, trial %d: %.9g, ref %.9g (error %.3g, "
                      "allowed %.3g)",
                      name, tsr_isa_name((tsr_isa)isa), nb, trial, (double)got, (double)got_ref,
                      err, RTOL * scale);
                tally_add(&ty[isa], err, scale);
            }
            free(wbuf);
            free(abuf);
        }
        free(x);
        free(wf);
        free(av);
    }

    printf("  %-6s ref      %3d rows of 1..17 blocks vs dequantize-then-f64: worst error "
           "%.2g of the scale\n",
           name, ty[TSR_ISA_REF].rows, ty[TSR_ISA_REF].worst);
    for (int isa = 1; isa < TSR_ISA_COUNT; isa++) {
        const char *iname = tsr_isa_name((tsr_isa)isa);
        const tsr_qkernel *k = tsr_qkernel_exact((tsr_dtype)t, (tsr_isa)isa);
        if (!k) {
            printf("  %-6s %-8s no kernel (falls back to a lower level)\n", name, iname);
            continue;
        }
        CHECK(k->isa == (tsr_isa)isa, "%s: the %s table's kernel says it is %s", name, iname,
              tsr_isa_name(k->isa));
        CHECK(k->act == ref->act, "%s %s reads another activation layout than ref", name, iname);
        if (!tsr_isa_supported((tsr_isa)isa)) {
            printf("  %-6s %-8s SKIPPED: this CPU lacks %s\n", name, iname, iname);
            continue;
        }
        CHECK(tsr_qkernel_get((tsr_dtype)t, (tsr_isa)isa) == k, "%s %s", name, iname);
        printf("  %-6s %-8s %3d rows vs ref: worst error %.2g of the scale\n", name, iname,
               ty[isa].rows, ty[isa].worst);
    }
}

/* ---- the multi-row kernels --------------------------------------------------------- */

/* dotn of every level the CPU runs against the same level's dot, bit for
 * bit: nw weight rows by na = 1..DOTN_NA activation rows (every tile size
 * and tail), odd block counts and long rows, rows at strides that are not their sizes
 * and at unaligned addresses, outputs at a leading dimension wider than nw
 * (what lies between must stay untouched). One activation block in 50
 * holds an infinity (its products are NaN, which must come out as dot's
 * NaN, bit for bit, too). */
enum { DOTN_NA = 19 };

static void test_dotn_format(tu_rng *r, int t) {
    const char *name = tsr_dtype_name(t);
    const tsr_qkernel *ref = tsr_qkernel_exact((tsr_dtype)t, TSR_ISA_REF);
    const int blk = (int)tsr_dtype_block(t), qa = act_block(ref->act);
    static const int nws[] = {1, 2, 3, 5, 8};
    for (int isa = 0; isa < TSR_ISA_COUNT; isa++) {
        const tsr_qkernel *k = tsr_qkernel_exact((tsr_dtype)t, (tsr_isa)isa);
        const char *iname = tsr_isa_name((tsr_isa)isa);
        if (!k || !k->dotn)
            continue;
        if (!tsr_isa_supported((tsr_isa)isa)) {
            printf("  %-6s %-8s dotn SKIPPED: this CPU lacks %s\n", name, iname, iname);
            continue;
        }
        long pairs = 0;
        /* the block counts above, and rows longer than the kernels keep
         * their tables of the activations' scales on the stack for */
        const int counts[] = {1, 2, 3, 7, 17, qa == TSR_QK ? 600 : 260};
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            const int nb = counts[c], n = nb * blk;
            const size_t wb = tsr_dtype_row_bytes(t, (uint64_t)n),
                         ab = tsr_act_row_bytes(k->act, n);
            for (size_t q = 0; q < sizeof nws / sizeof nws[0]; q++) {
                const int nw = nws[q];
                const size_t ws = wb + (size_t)(q % 3), as = ab + 4 * (q % 2), ldy = (size_t)nw + 3;
                uint8_t *wbuf = tu_xmalloc(ws * nw + 1), *abuf = tu_xmalloc(as * DOTN_NA);
                uint8_t *w = wbuf + 1;
                float *x = tu_xmalloc((size_t)n * sizeof *x);
                float *y = tu_xmalloc(ldy * DOTN_NA * sizeof *y);
                for (int j = 0; j < nw; j++)
                    rand_weights(r, t, w + (size_t)j * ws, n / blk);
                for (int i = 0; i < DOTN_NA; i++) {
                    rand_acts(r, x, n, qa);
                    if (tu_rng_below(r, 50) == 0)
                        x[tu_rng_below(r, (uint64_t)n)] = INFINITY;
                    tsr_quantize_act(k->act, x, abuf + (size_t)i * as, n);
                }
                for (int na = 1; na <= DOTN_NA; na++) {
                    for (size_t e = 0; e < ldy * DOTN_NA; e++)
                        y[e] = -12345.0f;
                    k->dotn(n, w, ws, nw, abuf, as, na, y, ldy);
                    for (int i = 0; i < DOTN_NA; i++)
                        for (int j = 0; j < (int)ldy; j++) {
                            const float got = y[(size_t)i * ldy + j];
                            if (i >= na || j >= nw) {
                                CHECK(got == -12345.0f, "%s %s dotn wrote y[%d][%d] outside %dx%d",
                                      name, iname, i, j, na, nw);
                                continue;
                            }
                            const float want = k->dot(n, w + (size_t)j * ws, abuf + (size_t)i * as);
                            uint32_t gb, wb32;
                            memcpy(&gb, &got, 4);
                            memcpy(&wb32, &want, 4);
                            CHECK(gb == wb32,
                                  "%s %s dotn, %d blocks, %d weight rows x %d activation rows: "
                                  "(%d, %d) = %.9g (0x%08x), dot %.9g (0x%08x)",
                                  name, iname, nb, nw, na, j, i, (double)got, (unsigned)gb,
                                  (double)want, (unsigned)wb32);
                            pairs++;
                        }
                }
                free(wbuf);
                free(abuf);
                free(x);
                free(y);
            }
        }
        printf("  %-6s %-8s dotn = dot bit for bit: %ld pairs (1..%d activation rows, 1..%d "
               "blocks)\n",
               name, iname, pairs, DOTN_NA, counts[sizeof counts / sizeof counts[0] - 1]);
    }
}

/* ---- the activation quantizers ---------------------------------------------------- */

/* One block of `qn` quantized values with scale d, from x: the bounds, the
 * rounding, a zero block's d. Returns sum(q). */
static int check_act_block(const char *what, int blk, const float *x, float d, const int8_t *q,
                           int qn) {
    float amax = 0;
    int sum = 0, qmax = 0;
    for (int i = 0; i < qn; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    for (int i = 0; i < qn; i++) {
        CHECK(q[i] >= -127 && q[i] <= 127, "%s block %d: q[%d] = %d", what, blk, i, q[i]);
        const double err = fabs((double)x[i] - (double)d * q[i]);
        CHECK(err <= (double)d * (0.5 + 256 * FLT_EPSILON),
              "%s block %d: x[%d] = %.9g, d*q = %.9g*%d (error %.3g, d/2 = %.3g)", what, blk, i,
              (double)x[i], (double)d, q[i], err, 0.5 * (double)d);
        sum += q[i];
        qmax = abs(q[i]) > qmax ? abs(q[i]) : qmax;
    }
    if (amax == 0)
        CHECK(d == 0 && qmax == 0, "%s block %d of zeros: d = %g, max |q| = %d", what, blk,
              (double)d, qmax);
    else
        CHECK(qmax == 127 && fabs((double)d - amax / 127.0) <= 1e-6 * (double)d,
              "%s block %d: max|x| = %.9g, d = %.9g, max |q| = %d", what, blk, (double)amax,
              (double)d, qmax);
    return sum;
}

static void test_quantizers(tu_rng *r) {
    int blocks[2] = {0, 0}, zeros[2] = {0, 0};
    for (int trial = 0; trial < 200; trial++) {
        for (int kind = 0; kind < 2; kind++) {
            const tsr_act_kind k = kind ? TSR_ACT_Q8K : TSR_ACT_Q8A;
            const int qa = act_block(k), nb = 1 + (int)tu_rng_below(r, 5), n = nb * qa;
            float *x = tu_xmalloc((size_t)n * sizeof *x);
            void *a = tu_xmalloc(tsr_act_row_bytes(k, n));
            rand_acts(r, x, n, qa);
            if (trial % 10 == 0) /* a zero block for sure */
                memset(x + (size_t)qa * tu_rng_below(r, (uint64_t)nb), 0, (size_t)qa * sizeof *x);
            tsr_quantize_act(k, x, a, n);
            for (int b = 0; b < nb; b++) {
                const float *xb = x + (size_t)b * qa;
                if (k == TSR_ACT_Q8A) {
                    const tsr_q8a *q = (const tsr_q8a *)a + b;
                    const int sum = check_act_block("q8a", b, xb, q->d, q->qs, TSR_QK);
                    CHECK(q->s == q->d * (float)sum, "q8a block %d: s = %.9g, d * sum(qs) = %.9g",
                          b, (double)q->s, (double)(q->d * (float)sum));
                    zeros[kind] += q->d == 0;
                } else {
                    const tsr_q8k *q = (const tsr_q8k *)a + b;
                    check_act_block("q8k", b, xb, q->d, q->qs, TSR_QKK);
                    for (int g = 0; g < TSR_QKK / 16; g++) {
                        int s = 0;
                        for (int i = 0; i < 16; i++)
                            s += q->qs[16 * g + i];
                        CHECK(q->bsums[g] == s, "q8k block %d: bsums[%d] = %d, sum = %d", b, g,
                              q->bsums[g], s);
                    }
                    zeros[kind] += q->d == 0;
                }
                blocks[kind]++;
            }
            free(x);
            free(a);
        }
    }
    CHECK(zeros[0] > 0 && zeros[1] > 0);
    printf("  quantizers: %d q8a blocks (%d zero), %d q8k blocks (%d zero): bounds, rounding, "
           "s, bsums\n",
           blocks[0], zeros[0], blocks[1], zeros[1]);
}

/* The AVX2 quantizer against the plain C one, byte for byte: random blocks
 * and blocks of zeros (with -0), ties (half-integers with max |x| = 127,
 * so d = 1), a NaN, infinities, values near FLT_MAX and below 2^-121 (where
 * 1 / d overflows), denormals. */
static void test_quantizer_levels(tu_rng *r) {
    if (!tsr_isa_supported(TSR_ISA_AVX2)) {
        printf("  quantizer avx2 SKIPPED: this CPU lacks avx2\n");
        return;
    }
    int blocks = 0;
    for (int trial = 0; trial < 400; trial++) {
        for (int kind = 0; kind < 2; kind++) {
            const tsr_act_kind k = kind ? TSR_ACT_Q8K : TSR_ACT_Q8A;
            const int qa = act_block(k), nb = 1 + (int)tu_rng_below(r, 4), n = nb * qa;
            float *x = tu_xmalloc((size_t)n * sizeof *x);
            const size_t bytes = tsr_act_row_bytes(k, n);
            uint8_t *want = tu_xmalloc(bytes), *got = tu_xmalloc(bytes);
            rand_acts(r, x, n, qa);
            for (int b = 0; b < nb; b++) {
                float *xb = x + (size_t)b * qa;
                const int mode = (int)tu_rng_below(r, 9);
                for (int i = 0; i < qa; i++) {
                    const float u = tu_rng_float(r, -1.0f, 1.0f);
                    switch (mode) {
                    case 0: xb[i] = (i & 1) ? -0.0f : 0.0f; break;
                    case 1: xb[i] = (float)((int)tu_rng_below(r, 255) - 127) * 0.5f; break;
                    case 2: xb[i] = u * 3e38f; break;
                    case 3: xb[i] = u * 1e-38f; break;
                    case 4: xb[i] = u * 1e-42f; break;
                    case 5: xb[i] = u * 2e-37f; break;
                    default: break;
                    }
                }
                if (mode == 1)
                    xb[tu_rng_below(r, (uint64_t)qa)] = 127.0f;
                if (mode == 6)
                    xb[tu_rng_below(r, (uint64_t)qa)] = NAN;
                if (mode == 7)
                    xb[tu_rng_below(r, (uint64_t)qa)] = tu_rng_below(r, 2) ? INFINITY : -INFINITY;
                blocks++;
            }
            memset(want, 0x5a, bytes);
            memset(got, 0xa5, bytes);
            tsr_quantize_act_ref(k, x, want, n);
            CHECK(tsr_quantize_act_avx2(k, x, got, n) == 1, "the avx2 quantizer is not built");
            for (size_t i = 0; i < bytes; i++)
                CHECK(want[i] == got[i],
                      "%s quantizer avx2 vs ref, %d blocks, trial %d: byte %zu (block %zu) is "
                      "0x%02x, ref 0x%02x",
                      kind ? "q8k" : "q8a", nb, trial, i, i / (bytes / (size_t)nb), got[i],
                      want[i]);
            free(x);
            free(want);
            free(got);
        }
    }
    printf("  quantizer avx2 = ref byte for byte: %d blocks (zeros, ties, NaN, inf, huge, "
           "tiny)\n",
           blocks);
}

/* ---- --bench --------------------------------------------------------------------- */

static volatile float bench_sink;

/* ns per row of `k` over `rows` rows of n elements (in cache): the fastest
 * of 10 windows of ~20 ms (the machine is shared; the minimum is the
 * kernel's own speed). */
static double bench_kernel(const tsr_qkernel *k, int n, const uint8_t *w, size_t rb, int rows,
                           const void *a) {
    float s = 0;
    double best = INFINITY;
    for (int win = 0; win < 10; win++) {
        long iters = 0;
        const double t0 = tsr_now_s();
        double t;
        do {
            for (int i = 0; i < 16; i++)
                for (int row = 0; row < rows; row++)
                    s += k->dot(n, w + (size_t)row * rb, a);
            iters += 16L * rows;
            t = tsr_now_s() - t0;
        } while (t < 0.02);
        best = fmin(best, t * 1e9 / (double)iters);
    }
    bench_sink = s;
    return best;
}

/* ns per (weight row, activation row) pair of k->dotn over `rows` weight
 * rows and na activation rows (in cache), as bench_kernel. */
static double bench_dotn(const tsr_qkernel *k, int n, const uint8_t *w, size_t rb, int rows,
                         const void *a, size_t ab, int na) {
    float *y = tu_xmalloc((size_t)rows * na * sizeof *y);
    double best = INFINITY;
    for (int win = 0; win < 10; win++) {
        long iters = 0;
        const double t0 = tsr_now_s();
        double t;
        do {
            for (int i = 0; i < 4; i++)
                k->dotn(n, w, rb, rows, a, ab, na, y, (size_t)rows);
            iters += 4L * rows * na;
            t = tsr_now_s() - t0;
        } while (t < 0.02);
        best = fmin(best, t * 1e9 / (double)iters);
    }
    bench_sink = y[0];
    free(y);
    return best;
}

static void bench(void) {
    tu_rng r = {0xbe7c4};
    const int sizes[2] = {576, 1536};
    enum { ROWS = 16 };
    enum { NA = 32 };
    printf("ns per row (%d rows in cache, one activation row); speed-up over ref in (); "
           "[dotn: ns per row and activation row, 8 and %d activation rows]\n",
           ROWS, NA);
    for (int t = 0; t < TSR_DTYPE_COUNT; t++) {
        const tsr_qkernel *ref = tsr_qkernel_exact((tsr_dtype)t, TSR_ISA_REF);
        if (!tsr_dtype_name(t) || !ref)
            continue;
        for (int si = 0; si < 2; si++) {
            const int n = sizes[si], blk = (int)tsr_dtype_block(t);
            if (n % blk) {
                printf("  %-6s n=%-5d not a whole number of blocks\n", tsr_dtype_name(t), n);
                continue;
            }
            const size_t rb = tsr_dtype_row_bytes(t, (uint64_t)n);
            uint8_t *w = tu_xmalloc(rb * ROWS);
            float *x = tu_xmalloc((size_t)n * sizeof *x);
            const size_t ab = tsr_act_row_bytes(ref->act, n);
            uint8_t *a = tu_xmalloc(ab * NA);
            rand_weights(&r, t, w, ROWS * (n / blk));
            for (int i = 0; i < NA; i++) {
                rand_acts(&r, x, n, act_block(ref->act));
                tsr_quantize_act(ref->act, x, a + (size_t)i * ab, n);
            }
            printf("  %-6s n=%-5d", tsr_dtype_name(t), n);
            const double t_ref = bench_kernel(ref, n, w, rb, ROWS, a);
            printf(" ref %7.1f", t_ref);
            for (int isa = 1; isa < TSR_ISA_COUNT; isa++) {
                const tsr_qkernel *k = tsr_qkernel_exact((tsr_dtype)t, (tsr_isa)isa);
                if (!k || !tsr_isa_supported((tsr_isa)isa))
                    continue;
                const double tk = bench_kernel(k, n, w, rb, ROWS, a);
                printf("  %s %6.1f (%4.1fx)", tsr_isa_name((tsr_isa)isa), tk, t_ref / tk);
                if (k->dotn)
                    printf(" [%5.1f %5.1f]", bench_dotn(k, n, w, rb, ROWS, a, ab, 8),
                           bench_dotn(k, n, w, rb, ROWS, a, ab, NA));
            }
            printf("\n");
            free(w);
            free(x);
            free(a);
        }
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        bench();
        return 0;
    }
    tu_rng r = {0x9d07};
    printf("CPU levels:");
    for (int isa = 0; isa < TSR_ISA_COUNT; isa++)
        printf(" %s%s", tsr_isa_name((tsr_isa)isa),
               tsr_isa_supported((tsr_isa)isa) ? "" : " (not on this CPU)");
    printf("\n");
    test_quantizers(&r);
    test_quantizer_levels(&r);
    int formats = 0;
    for (int t = 0; t < TSR_DTYPE_COUNT; t++) {
        if (!tsr_dtype_name(t) || !tsr_qkernel_exact((tsr_dtype)t, TSR_ISA_REF))
            continue;
        test_format(&r, t);
        test_dotn_format(&r, t);
        formats++;
    }
    CHECK(formats >= 6, "only %d formats have a reference kernel", formats);
    printf("test_qdot: all passed (%d formats, %d checks)\n", formats, tu_checks);
    return 0;
}
