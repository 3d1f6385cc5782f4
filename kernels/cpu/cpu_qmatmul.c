/* kernels/cpu/cpu_qmatmul.c - matmul over weights kept in block formats: the
 * int8 path for inference, dequantized L2 tiles into SGEMM for training (see
 * the header). Threads: one OpenMP team per call, each thread a band of
 * weight rows (forward) or of token rows (backward). */
#include "kernels/cpu/cpu_qmatmul.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/qdot.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Bytes of one thread's dequantized tile: half of a 1 MiB L2 leaves room for
 * SGEMM's packed panels of the activations. */
#define TILE_BYTES (512u << 10)

void tsr_cpu_scratch_free(tsr_cpu_scratch *s) {
    free(s->p);
    s->p = NULL;
    s->cap = 0;
}

static tsr_status scratch_reserve(tsr_cpu_scratch *s, size_t bytes, const char *what) {
    if (bytes <= s->cap)
        return TSR_OK;
    size_t cap = (bytes + 4095) & ~(size_t)4095;
    void *p = NULL;
    if (posix_memalign(&p, 64, cap) != 0)
        return tsr_error_set(TSR_ERR_NOMEM, "cpu: cannot allocate %zu bytes of %s scratch", cap,
                             what);
    free(s->p);
    s->p = p;
    s->cap = cap;
    return TSR_OK;
}

int tsr_cpu_qtype_kept(tsr_dtype t) { return tsr_qkernel_get(t, tsr_isa_best()) != NULL; }

int tsr_cpu_qmatmul_tile_min(void) {
    static int v;
    if (!v) {
        const char *e = getenv("TSR_QMM_TILE_MIN");
        long x = e && *e ? strtol(e, NULL, 10) : 0;
        v = x >= 1 && x <= 1 << 30 ? (int)x : INT_MAX;
    }
    return v;
}

static void team(int *t, int *nt) {
#ifdef _OPENMP
    *t = omp_get_thread_num();
    *nt = omp_get_num_threads();
#else
    *t = 0;
    *nt = 1;
#endif
}

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Weight rows per tile: TILE_BYTES of f32, a multiple of 16, at least 16. */
static int tile_rows(int cols) {
    size_t t = TILE_BYTES / ((size_t)cols * sizeof(float));
    t &= ~(size_t)15;
    return t < 16 ? 16 : t > 1024 ? 1024 : (int)t;
}

static tsr_status check(const tsr_weight *w, const char *op) {
    if (!tsr_dtype_row_bytes(w->dtype, (uint64_t)w->cols))
        return tsr_error_set(TSR_ERR_INVALID, "cpu %s: %d columns of %s cut a block", op, w->cols,
                             tsr_dtype_name(w->dtype) ? tsr_dtype_name(w->dtype) : "?");
    return TSR_OK;
}

static tsr_status qmatmul_tiled(tsr_cpu_scratch *s, float *y, const float *x, const tsr_weight *w,
                                int n, int accumulate) {
    const int rows = w->rows, cols = w->cols, T = tile_rows(cols);
    const size_t wrow = tsr_dtype_row_bytes(w->dtype, (uint64_t)cols);
    const size_t per_thread = (size_t)T * cols;
    TSR_TRY(scratch_reserve(s, (size_t)max_threads() * per_thread * sizeof(float), "tile"));
    const unsigned char *W = w->data;
    float *tiles = s->p;
    const float beta = accumulate ? 1.0f : 0.0f;
#pragma omp parallel
    {
        int t, nt;
        team(&t, &nt);
        float *buf = tiles + (size_t)t * per_thread;
        const int per = (rows + nt - 1) / nt;
        const int r0 = t * per, r1 = r0 + per < rows ? r0 + per : rows;
        for (int r = r0; r < r1; r += T) {
            const int tr = r + T < r1 ? T : r1 - r;
            for (int j = 0; j < tr; j++)
                tsr_dequantize(w->dtype, W + (size_t)(r + j) * wrow, buf + (size_t)j * cols,
                               (size_t)cols);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, tr, cols, 1.0f, x, cols, buf,
                        cols, beta, y + r, rows);
        }
    }
    return TSR_OK;
}

tsr_status tsr_cpu_qmatmul_exact(tsr_cpu_scratch *s, float *y, const float *x, const tsr_weight *w,
                                 int n, int accumulate) {
    TSR_TRY(check(w, "matmul"));
    if (n <= 0)
        return TSR_OK;
    return qmatmul_tiled(s, y, x, w, n, accumulate);
}

/* The int8 products of weight rows [r0, r1) with the n quantized activation
 * rows A: y(n, rows) columns r0..r1-1 (or +=). One activation row: the dot
 * kernel row by row (decode streams the weights once, nothing to reuse).
 * More, with a multi-row kernel: tiles of QMM_TILE_BYTES of weight rows
 * (they stay in L2; the kernel keeps its few activation rows in L1), each
 * swept by all activation rows (the kernel takes them 8 at a time, reading
 * each weight block once per 8 rows); the values are the dot kernel's, bit
 * for bit. Accumulating goes through a buffer of QMM_ACC_ROWS activation
 * rows by the tile. */
#define QMM_TILE_BYTES (256u << 10)
#define QMM_TILE_ROWS 256
#define QMM_ACC_ROWS 16

static void qmm_rows(const tsr_qkernel *k, int cols, const unsigned char *W, size_t wrow, int rows,
                     int r0, int r1, const unsigned char *A, size_t arow, int n, float *y,
                     int accumulate) {
    if (n == 1 || !k->dotn) {
        for (int r = r0; r < r1; r++) {
            const unsigned char *wr = W + (size_t)r * wrow;
            for (int i = 0; i < n; i++) {
                const float v = k->dot(cols, wr, A + (size_t)i * arow);
                float *yp = y + (size_t)i * rows + r;
                *yp = accumulate ? *yp + v : v;
            }
        }
        return;
    }
    int wt = (int)(QMM_TILE_BYTES / wrow);
    wt = wt < 8 ? 8 : wt > QMM_TILE_ROWS ? QMM_TILE_ROWS : wt;
    float tmp[QMM_ACC_ROWS * QMM_TILE_ROWS];
    for (int r = r0; r < r1; r += wt) {
        const int tr = r + wt < r1 ? wt : r1 - r;
        const unsigned char *wr = W + (size_t)r * wrow;
        if (!accumulate) {
            k->dotn(cols, wr, wrow, tr, A, arow, n, y + r, (size_t)rows);
            continue;
        }
        for (int i = 0; i < n; i += QMM_ACC_ROWS) {
            const int ni = i + QMM_ACC_ROWS < n ? QMM_ACC_ROWS : n - i;
            float *yi = y + (size_t)i * rows + r;
            k->dotn(cols, wr, wrow, tr, A + (size_t)i * arow, arow, ni, tmp, (size_t)tr);
            for (int ii = 0; ii < ni; ii++)
                for (int j = 0; j < tr; j++)
                    yi[(size_t)ii * rows + j] += tmp[ii * tr + j];
        }
    }
}

tsr_status tsr_cpu_qmatmul(tsr_cpu_scratch *s, float *y, const float *x, const tsr_weight *w, int n,
                           int accumulate) {
    TSR_TRY(check(w, "matmul"));
    if (n <= 0)
        return TSR_OK;
    const tsr_qkernel *k = tsr_qkernel_get(w->dtype, tsr_isa_best());
    if (!k)
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "cpu matmul: no kernel for %s weights",
                             tsr_dtype_name(w->dtype));
    if (n >= tsr_cpu_qmatmul_tile_min())
        return qmatmul_tiled(s, y, x, w, n, accumulate);
    const int rows = w->rows, cols = w->cols;
    const size_t wrow = tsr_dtype_row_bytes(w->dtype, (uint64_t)cols);
    const size_t arow = tsr_act_row_bytes(k->act, cols);
    TSR_TRY(scratch_reserve(s, (size_t)n * arow, "activation"));
    unsigned char *A = s->p;
    const unsigned char *W = w->data;
    const tsr_act_kind act = k->act;
#pragma omp parallel if ((long)rows * cols * n > 65536)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++)
            tsr_quantize_act(act, x + (size_t)i * cols, A + (size_t)i * arow, cols);
        int t, nt;
        team(&t, &nt);
        const int per = (rows + nt - 1) / nt;
        const int r0 = t * per, r1 = r0 + per < rows ? r0 + per : rows;
        if (r0 < r1)
            qmm_rows(k, cols, W, wrow, rows, r0, r1, A, arow, n, y, accumulate);
    }
    return TSR_OK;
}

tsr_status tsr_cpu_qmatmul_dx(tsr_cpu_scratch *s, float *dx, const float *dy, const tsr_weight *w,
                              int n, int accumulate) {
    TSR_TRY(check(w, "matmul_dx"));
    if (n <= 0)
        return TSR_OK;
    const int rows = w->rows, cols = w->cols, T = tile_rows(cols);
    const size_t wrow = tsr_dtype_row_bytes(w->dtype, (uint64_t)cols);
    const int blk = (int)tsr_dtype_block(w->dtype), nblk = cols / blk;
    const size_t blk_bytes = wrow / (size_t)nblk;
    const size_t per_thread = (size_t)T * cols;
    TSR_TRY(scratch_reserve(s, (size_t)max_threads() * per_thread * sizeof(float), "tile"));
    const unsigned char *W = w->data;
    float *tiles = s->p;
    /* each thread a band of dx's columns (whole blocks of W's rows) over every
     * tile of W: no two threads write the same dx element, and each
     * dequantizes only its band, so W is dequantized once in all */
#pragma omp parallel if ((long)n * rows * cols >= 65536)
    {
        int t, nt;
        team(&t, &nt);
        float *buf = tiles + (size_t)t * per_thread;
        const int per = (nblk + nt - 1) / nt;
        const int b0 = t * per, b1 = b0 + per < nblk ? b0 + per : nblk;
        const int c0 = b0 * blk, bw = (b1 - b0) * blk;
        for (int r = 0; r < rows && b0 < b1; r += T) {
            const int tr = r + T < rows ? T : rows - r;
            for (int j = 0; j < tr; j++)
                tsr_dequantize(w->dtype, W + (size_t)(r + j) * wrow + (size_t)b0 * blk_bytes,
                               buf + (size_t)j * bw, (size_t)bw);
            const float beta = r == 0 && !accumulate ? 0.0f : 1.0f;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, bw, tr, 1.0f, dy + r, rows,
                        buf, bw, beta, dx + c0, cols);
        }
    }
    return TSR_OK;
}
