/* tests/unit/test_qmatmul.c - the CPU backend over weights kept in their GGUF
 * block formats: matmul (int8 dot kernels on activations quantized per row),
 * matmul_exact (dequantized tiles into SGEMM, activations as they are),
 * accumulate, matmul_dx, embedding rows and weight_upload's choices, for
 * every block type, against double references built from tsr_dequantize and,
 * for matmul, from the activations as tsr_quantize_act rounds them. Also: a
 * row's matmul result is bitwise the same whatever else is in the batch.
 * Random blocks; odd shapes, and batches of 1 to 70 rows that cut the
 * multi-row kernels' and cpu_qmatmul's tiles anywhere. */
#include "kernels/backend.h"
#include "kernels/cpu/cpu_qmatmul.h"
#include "kernels/cpu/qdot.h"
#include "tests/common/check.h"
#include "tests/common/qblocks.h"

/* W dequantized, (rows, cols) in double. */
static double *dequant(const tsr_weight *w) {
    const size_t row = tsr_dtype_row_bytes(w->dtype, (uint64_t)w->cols);
    float *f = tu_xmalloc((size_t)w->cols * sizeof *f);
    double *d = tu_xmalloc((size_t)w->rows * w->cols * sizeof *d);
    for (int r = 0; r < w->rows; r++) {
        tsr_dequantize(w->dtype, (const char *)w->data + (size_t)r * row, f, (size_t)w->cols);
        for (int j = 0; j < w->cols; j++)
            d[(size_t)r * w->cols + j] = f[j];
    }
    free(f);
    return d;
}

/* x(n, cols) as the int8 path sees it: quantized per block and decoded. */
static double *act_as_quantized(int t, const float *x, int n, int cols) {
    const tsr_qkernel *k = tsr_qkernel_get((tsr_dtype)t, tsr_isa_best());
    CHECK(k != NULL);
    double *q = tu_xmalloc((size_t)n * cols * sizeof *q);
    void *buf = tu_xmalloc(tsr_act_row_bytes(k->act, cols));
    for (int i = 0; i < n; i++) {
        tsr_quantize_act(k->act, x + (size_t)i * cols, buf, cols);
        double *qi = q + (size_t)i * cols;
        if (k->act == TSR_ACT_Q8A) {
            const tsr_q8a *a = buf;
            for (int j = 0; j < cols; j++)
                qi[j] = (double)a[j / TSR_QK].d * a[j / TSR_QK].qs[j % TSR_QK];
        } else {
            const tsr_q8k *a = buf;
            for (int j = 0; j < cols; j++)
                qi[j] = (double)a[j / TSR_QKK].d * a[j / TSR_QKK].qs[j % TSR_QKK];
        }
    }
    free(buf);
    return q;
}

/* want(n, rows) = y0 + x W^T and scale(n, rows) = |y0| + |x| |W|^T. */
static void reference(const double *x, const double *W, const float *y0, int n, int rows, int cols,
                      double *want, double *scale) {
    for (int i = 0; i < n; i++)
        for (int r = 0; r < rows; r++) {
            double s = y0 ? y0[(size_t)i * rows + r] : 0, a = fabs(s);
            for (int j = 0; j < cols; j++) {
                const double p = x[(size_t)i * cols + j] * W[(size_t)r * cols + j];
                s += p;
                a += fabs(p);
            }
            want[(size_t)i * rows + r] = s;
            scale[(size_t)i * rows + r] = a;
        }
}

static void test_matmul(tsr_backend *be, tu_rng *r, int t) {
    const int blk = (int)tsr_dtype_block(t);
    /* rows and n that are not multiples of the tiles: the kernels' 2, 4 and
     * 8 activation rows and 1 or 2 weight rows, cpu_qmatmul's weight tiles
     * (300 short rows: several per thread) and chunks of 64 activation rows */
    const int shapes[][2] = {{1, blk}, {37, 3 * blk}, {130, 5 * blk}, {300, blk}};
    const int ns[] = {1, 2, 3, 4, 5, 16, 17, 41, 64, 70};
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        const int rows = shapes[sh][0], cols = shapes[sh][1];
        void *blocks = tu_xmalloc((size_t)rows * tsr_dtype_row_bytes(t, (uint64_t)cols));
        tu_qblocks_fill(r, t, blocks, rows, cols);
        tsr_weight w;
        CHECK_OK(tsr_backend_weight_upload(be, &w, blocks, (tsr_dtype)t, rows, cols));
        CHECK((int)w.dtype == t, "%s: kept as %s", tsr_dtype_name(t), tsr_dtype_name(w.dtype));
        double *W = dequant(&w);
        /* the activations of every batch: the first n of NMAX rows, among
         * them one with an outlier and one of zeros; and each row alone */
        enum { NMAX = 70 };
        float *x = tu_xmalloc((size_t)NMAX * cols * sizeof *x);
        float *alone = tu_xmalloc((size_t)NMAX * rows * sizeof *alone);
        tu_rng_fill(r, x, (size_t)NMAX * cols, -2.0f, 2.0f);
        x[cols + 1] = 60.0f;
        memset(x + 2 * (size_t)cols, 0, (size_t)cols * sizeof *x);
        for (int i = 0; i < NMAX; i++)
            CHECK_OK(
                tsr_backend_matmul(be, alone + (size_t)i * rows, x + (size_t)i * cols, &w, 1, 0));
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            const int n = ns[k];
            if (n > 41 && cols > 3 * blk) /* the references' time */
                continue;
            float *y = tu_xmalloc((size_t)n * rows * sizeof *y);
            float *y0 = tu_xmalloc((size_t)n * rows * sizeof *y0);
            tu_rng_fill(r, y0, (size_t)n * rows, -1.0f, 1.0f);
            double *xq = act_as_quantized(t, x, n, cols);
            double *xd = tu_xmalloc((size_t)n * cols * sizeof *xd);
            for (size_t i = 0; i < (size_t)n * cols; i++)
                xd[i] = x[i];
            double *want = tu_xmalloc((size_t)n * rows * sizeof *want);
            double *scale = tu_xmalloc((size_t)n * rows * sizeof *scale);
            char what[96];
            for (int exact = 0; exact < 2; exact++)
                for (int acc = 0; acc < 2; acc++) {
                    memcpy(y, y0, (size_t)n * rows * sizeof *y);
                    CHECK_OK(exact ? tsr_backend_matmul_exact(be, y, x, &w, n, acc)
                                   : tsr_backend_matmul(be, y, x, &w, n, acc));
                    reference(exact ? xd : xq, W, acc ? y0 : NULL, n, rows, cols, want, scale);
                    snprintf(what, sizeof what, "%s matmul%s %dx%d n=%d%s", tsr_dtype_name(t),
                             exact ? "_exact" : "", rows, cols, n, acc ? " accumulate" : "");
                    CHECK_CLOSE(what, y, want, (size_t)n * rows, 2e-6, scale, 0);
                }
            /* each row alone gives bitwise the batch's row */
            CHECK_OK(tsr_backend_matmul(be, y, x, &w, n, 0));
            for (int i = 0; i < n; i++)
                CHECK(!memcmp(alone + (size_t)i * rows, y + (size_t)i * rows,
                              (size_t)rows * sizeof *y),
                      "%s %dx%d: row %d of a batch of %d differs from the row alone",
                      tsr_dtype_name(t), rows, cols, i, n);
            /* dx = dy W, always on dequantized tiles */
            float *dx = tu_xmalloc((size_t)n * cols * sizeof *dx);
            double *dwant = tu_xmalloc((size_t)n * cols * sizeof *dwant);
            double *dscale = tu_xmalloc((size_t)n * cols * sizeof *dscale);
            for (int acc = 0; acc < 2; acc++) {
                tu_rng_fill(r, dx, (size_t)n * cols, -1.0f, 1.0f);
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < cols; j++) {
                        double s = acc ? dx[(size_t)i * cols + j] : 0, a = fabs(s);
                        for (int q = 0; q < rows; q++) {
                            const double p =
                                (double)y0[(size_t)i * rows + q] * W[(size_t)q * cols + j];
                            s += p;
                            a += fabs(p);
                        }
                        dwant[(size_t)i * cols + j] = s;
                        dscale[(size_t)i * cols + j] = a;
                    }
                CHECK_OK(tsr_backend_matmul_dx(be, dx, y0, &w, n, acc));
                snprintf(what, sizeof what, "%s matmul_dx %dx%d n=%d%s", tsr_dtype_name(t), rows,
                         cols, n, acc ? " accumulate" : "");
                CHECK_CLOSE(what, dx, dwant, (size_t)n * cols, 2e-6, dscale, 0);
            }
            free(dx);
            free(dwant);
            free(dscale);
            free(y);
            free(y0);
            free(xd);
            free(xq);
            free(want);
            free(scale);
        }
        /* embedding: the rows as tsr_dequantize gives them; others' rows zero */
        int32_t ids[4] = {0, rows - 1, rows, -1};
        float *e = tu_xmalloc(4 * (size_t)cols * sizeof *e);
        CHECK_OK(tsr_backend_embedding(be, e, &w, ids, 4, 0));
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < cols; j++) {
                const double want = i < 2 ? W[(size_t)ids[i] * cols + j] : 0.0;
                CHECK(e[(size_t)i * cols + j] == want, "%s embedding row %d col %d: %g vs %g",
                      tsr_dtype_name(t), ids[i], j, (double)e[(size_t)i * cols + j], want);
            }
        free(e);
        free(x);
        free(alone);
        free(W);
        free(blocks);
        tsr_backend_weight_free(be, &w);
    }
    printf("ok   %-7s matmul (int8, %s), batch independence, matmul_exact, matmul_dx, "
           "embedding\n",
           tsr_dtype_name(t), tsr_isa_name(tsr_qkernel_get((tsr_dtype)t, tsr_isa_best())->isa));
}

/* Types without a kernel become f32; a row that cuts a block is refused. */
static void test_upload(tsr_backend *be) {
    uint16_t h[64];
    for (int i = 0; i < 64; i++)
        h[i] = tsr_f32_to_f16((float)i / 8 - 4);
    tsr_weight w;
    CHECK_OK(tsr_backend_weight_upload(be, &w, h, TSR_F16, 2, 32));
    CHECK(w.dtype == TSR_F32 && w.rows == 2 && w.cols == 32);
    CHECK(((float *)w.data)[63] == (float)63 / 8 - 4);
    tsr_backend_weight_free(be, &w);
    unsigned char q[64] = {0};
    CHECK_ERR(tsr_backend_weight_upload(be, &w, q, TSR_Q4_0, 2, 48), TSR_ERR_UNSUPPORTED, "q4_0",
              "48 columns", "32-element blocks");
    CHECK_ERR(tsr_backend_weight_upload(be, &w, q, (tsr_dtype)5, 1, 32), TSR_ERR_UNSUPPORTED,
              "type ? (5)");
    printf("ok   upload: f16 kept as f32, cut blocks and unknown types refused\n");
}

int main(void) {
    tsr_backend *be;
    CHECK_OK(tsr_backend_cpu_create(2, &be));
    tu_rng r = {0x9d0715};
    printf("cpu: best level %s\n", tsr_isa_name(tsr_isa_best()));
    for (int k = 0; k < TU_QBLOCK_KINDS; k++) {
        const int t = tu_qblock_kinds[k].type;
        if (!tsr_cpu_qtype_kept((tsr_dtype)t)) {
            printf("skip %-7s no dot kernel yet: stored as f32\n", tsr_dtype_name(t));
            continue;
        }
        test_matmul(be, &r, t);
    }
    test_upload(be);
    tsr_backend_destroy(be);
    return tu_failures != 0;
}
