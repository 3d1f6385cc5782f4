/* kernels/cpu/cpu_backend.c - the CPU implementation of the kernel backend:
 * f32 activations; weights in f32 (OpenBLAS SGEMM) or kept in their GGUF
 * block formats (cpu_qmatmul.c, on the dot kernels of qdot.h); OpenMP for
 * the loops OpenBLAS does not cover. Its f32 path is also the reference every
 * other backend's ops are tested against, so clarity beats cleverness here.
 *
 * What it is not: the quantized kernels themselves (cpu_qmatmul.c, qdot*.c),
 * the KV store and paged attention (cpu_attention.c). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_attention.h"
#include "kernels/cpu/cpu_qmatmul.h"
#include "kernels/cpu/cpu_train.h"

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    int n_threads;
    tsr_cpu_scratch scratch; /* quantized matmuls' activations and tiles */
} cpu_ctx;

/* Allocations of at least this many bytes (weight matrices, the KV pool)
 * start on a 2 MiB boundary and ask for transparent huge pages: a decode step
 * streams every weight once, and with 4 KiB pages a 92 MiB model is 23,000
 * TLB entries and as many page faults at load. Where THP is off (or "never")
 * the advice is ignored and nothing else changes. */
#define HUGE_BYTES ((size_t)2 << 20)

static void *cpu_alloc(tsr_backend *b, size_t bytes) {
    (void)b;
    void *p = NULL;
    /* 64-byte alignment for vector loads; round size up as aligned_alloc requires */
    size_t n = (bytes + 63) & ~(size_t)63;
    const size_t align = n >= HUGE_BYTES ? HUGE_BYTES : 64;
    if (posix_memalign(&p, align, n ? n : 64) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (align == HUGE_BYTES)
        (void)madvise(p, n & ~(HUGE_BYTES - 1), MADV_HUGEPAGE);
#endif
    return p;
}

static void cpu_free(tsr_backend *b, void *p) {
    (void)b;
    free(p);
}

static tsr_status cpu_memcpy(tsr_backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    if (bytes)
        memmove(dst, src, bytes);
    return TSR_OK;
}

static tsr_status cpu_sync(tsr_backend *b) {
    (void)b;
    return TSR_OK;
}

static void cpu_destroy(tsr_backend *b) {
    tsr_cpu_scratch_free(&((cpu_ctx *)b->ctx)->scratch);
    free(b->ctx);
    free(b);
}

/* Block types with a dot kernel stay as they are; everything else becomes
 * f32 (F16 and BF16 included: there is no f16 kernel yet). */
static tsr_status cpu_weight_upload(tsr_backend *b, tsr_weight *w, const void *src,
                                    tsr_dtype src_type, int rows, int cols) {
    const size_t src_row = tsr_dtype_row_bytes(src_type, (uint64_t)cols);
    if (!src_row || rows < 0)
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "cpu: cannot store a %d x %d weight of type %s (%d): unknown type, "
                             "or %d columns cut its %zu-element blocks",
                             rows, cols, tsr_dtype_name(src_type) ? tsr_dtype_name(src_type) : "?",
                             (int)src_type, cols, tsr_dtype_block(src_type));
    const tsr_dtype keep = src_type == TSR_F32 || tsr_cpu_qtype_kept(src_type) ? src_type : TSR_F32;
    const size_t row = tsr_dtype_row_bytes(keep, (uint64_t)cols);
    w->data = cpu_alloc(b, (size_t)rows * row);
    if (!w->data)
        return tsr_error_set(TSR_ERR_NOMEM, "cpu: cannot allocate a %d x %d %s weight", rows, cols,
                             tsr_dtype_name(keep));
    if (keep == src_type) {
        memcpy(w->data, src, (size_t)rows * row);
    } else {
        for (int r = 0; r < rows; r++)
            tsr_dequantize(src_type, (const char *)src + (size_t)r * src_row,
                           (float *)w->data + (size_t)r * cols, (size_t)cols);
    }
    w->dtype = keep;
    w->rows = rows;
    w->cols = cols;
    return TSR_OK;
}

static int cpu_weight_adopt(tsr_backend *b, tsr_weight *w, void *data, tsr_dtype type, int rows,
                            int cols) {
    (void)b;
    if (!(type == TSR_F32 || tsr_cpu_qtype_kept(type)) || rows < 0 ||
        !tsr_dtype_row_bytes(type, (uint64_t)cols))
        return 0;
    w->data = data;
    w->dtype = type;
    w->rows = rows;
    w->cols = cols;
    return 1;
}

static void cpu_weight_free(tsr_backend *b, tsr_weight *w) {
    if (!w)
        return;
    cpu_free(b, w->data);
    w->data = NULL;
}

static void *cpu_vector_upload(tsr_backend *b, const float *src, size_t n) {
    float *p = cpu_alloc(b, n * sizeof(float));
    if (p)
        memcpy(p, src, n * sizeof(float));
    return p;
}

static tsr_status cpu_act_convert(tsr_backend *b, float *dst, const void *src, size_t n) {
    return cpu_memcpy(b, dst, src, n * sizeof(float));
}

static tsr_status cpu_act_from_f32(tsr_backend *b, void *dst, const float *src, size_t n) {
    return cpu_memcpy(b, dst, src, n * sizeof(float));
}

/* One thread pool (OpenMP) for everything: OpenBLAS runs single-threaded
 * inside each OpenMP thread on a band of W's rows. Two pools (OpenBLAS's own
 * threads next to OpenMP's spinning ones) fight over the cores and halve
 * decode speed on a small machine. */
static tsr_status cpu_matmul(tsr_backend *b, void *yv, const void *xv, const tsr_weight *w, int n,
                             int accumulate) {
    if (w->dtype != TSR_F32)
        return tsr_cpu_qmatmul(&((cpu_ctx *)b->ctx)->scratch, yv, xv, w, n, accumulate);
    if (n <= 0)
        return TSR_OK;
    float *y = yv;
    const float *x = xv, *W = w->data;
    const float beta = accumulate ? 1.0f : 0.0f;
    const int rows = w->rows, cols = w->cols;
#pragma omp parallel if ((long)rows * cols * n > 65536)
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        /* bands of whole 16-row groups keep loads aligned */
        int per = ((rows + nt - 1) / nt + 15) & ~15;
        int r0 = t * per, r1 = r0 + per < rows ? r0 + per : rows;
        if (r0 < r1) {
            const float *Wb = W + (size_t)r0 * cols;
            if (n == 1)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, r1 - r0, cols, 1.0f, Wb, cols, x, 1, beta,
                            y + r0, 1);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1 - r0, cols, 1.0f, x,
                            cols, Wb, cols, beta, y + r0, rows);
        }
    }
    return TSR_OK;
}

static tsr_status cpu_rmsnorm(tsr_backend *b, void *yv, const void *xv, const void *wv, int n,
                              int dim, float eps) {
    (void)b;
    float *y = yv;
    const float *x = xv, *w = wv;
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * dim;
        float *yr = y + (size_t)t * dim;
        double ss = 0; /* double: a 4096-wide sum of squares loses digits in f32 */
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / dim + eps));
        for (int i = 0; i < dim; i++)
            yr[i] = xr[i] * r * w[i];
    }
    return TSR_OK;
}

static tsr_status cpu_rope(tsr_backend *b, void *xv, const int32_t *pos, const float *inv_freq,
                           int n, int n_heads, int head_dim) {
    (void)b;
    float *x = xv;
    int half = head_dim / 2;
#pragma omp parallel for if (n > 4)
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < half; i++) {
            /* angle in double: positions up to 1e5 times frequencies near 1 */
            double a = (double)pos[t] * (double)inv_freq[i];
            float c = (float)cos(a), s = (float)sin(a);
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((size_t)t * n_heads + h) * head_dim;
                float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x0 * s + x1 * c;
            }
        }
    }
    return TSR_OK;
}

static tsr_status cpu_kv_store(tsr_backend *b, void *kc, void *vc, tsr_dtype cache_dtype,
                               const void *k, const void *v, const int32_t *slot, int n,
                               int kv_dim) {
    (void)b;
    return tsr_cpu_kv_store(kc, vc, cache_dtype, k, v, slot, n, kv_dim, tsr_isa_best());
}

static tsr_status cpu_attention(tsr_backend *b, void *out, const void *q, const void *kc,
                                const void *vc, const tsr_attn_desc *d) {
    (void)b;
    return tsr_cpu_attention(out, q, kc, vc, d, tsr_isa_best());
}

static tsr_status cpu_swiglu(tsr_backend *b, void *outv, const void *gv, const void *uv, int n,
                             int dim) {
    (void)b;
    float *out = outv;
    const float *g = gv, *u = uv;
    size_t total = (size_t)n * dim;
    for (size_t i = 0; i < total; i++)
        out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    return TSR_OK;
}

static tsr_status cpu_add(tsr_backend *b, void *yv, const void *xv, int n, int dim) {
    (void)b;
    float *y = yv;
    const float *x = xv;
    size_t total = (size_t)n * dim;
    for (size_t i = 0; i < total; i++)
        y[i] += x[i];
    return TSR_OK;
}

static tsr_status cpu_add_bias(tsr_backend *b, void *yv, const void *bv, int n, int dim) {
    (void)b;
    float *y = yv;
    const float *bias = bv;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < dim; i++)
            y[(size_t)t * dim + i] += bias[i];
    return TSR_OK;
}

static tsr_status cpu_embedding(tsr_backend *b, void *outv, const tsr_weight *table,
                                const int32_t *ids, int n, int row0) {
    (void)b;
    float *out = outv;
    const size_t dim = (size_t)table->cols;
    const size_t row = tsr_dtype_row_bytes(table->dtype, dim);
    for (int t = 0; t < n; t++) {
        long r = (long)ids[t] - row0;
        if (r >= 0 && r < table->rows)
            tsr_dequantize(table->dtype, (const char *)table->data + (size_t)r * row, out + t * dim,
                           dim);
        else
            memset(out + t * dim, 0, dim * sizeof(float));
    }
    return TSR_OK;
}

/* The largest value of l[j0..j1) that is not NaN (-inf when none), and in
 * *nan whether a NaN is there; vectorised (the scans below call it on
 * blocks, row_expsum on whole rows). */
static inline float max_of(const float *l, int j0, int j1, int *nan) {
    float mx = -INFINITY;
    int bad = 0;
#pragma omp simd reduction(max : mx) reduction(| : bad)
    for (int j = j0; j < j1; j++) {
        mx = l[j] > mx ? l[j] : mx;
        bad |= l[j] != l[j];
    }
    *nan = bad;
    return mx;
}

/* The first strictly larger value wins (ties: the lowest column; NaN never
 * wins, and a NaN in column 0 keeps column 0). A block of ARGMAX_BLOCK values
 * is first reduced to its maximum (vectorised) and scanned only when that
 * beats the best so far. Rows in parallel. */
#define ARGMAX_BLOCK 64
static tsr_status cpu_argmax(tsr_backend *b, float *val, int32_t *idx, const void *lv, int n,
                             int V) {
    (void)b;
    const float *logits = lv;
#pragma omp parallel for if (n > 1)
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * V;
        int best = 0;
        for (int j0 = 1; j0 < V; j0 += ARGMAX_BLOCK) {
            const int j1 = j0 + ARGMAX_BLOCK < V ? j0 + ARGMAX_BLOCK : V;
            int nan;
            if (!(max_of(l, j0, j1, &nan) > l[best]))
                continue;
            for (int j = j0; j < j1; j++)
                if (l[j] > l[best])
                    best = j;
        }
        val[i] = l[best];
        idx[i] = best;
    }
    return TSR_OK;
}

/* Per row: a sorted list of the best k so far; a value enters by insertion
 * when it beats the last (V log-free: k is small, and after the first
 * entries few values beat the k-th). Once the list is full, a block of
 * TOPK_BLOCK values is first reduced to its maximum (vectorised) and skipped
 * when that cannot enter. Rows in parallel. */
#define TOPK_BLOCK 64
static tsr_status cpu_topk(tsr_backend *b, float *val, int32_t *idx, const void *lv, int n, int V,
                           int k) {
    (void)b;
    if (n < 0 || V < 0 || k < 1 || k > TSR_TOPK_MAX)
        return tsr_error_set(TSR_ERR_INVALID, "cpu topk: n %d, V %d, k %d (k must be in 1..%d)", n,
                             V, k, TSR_TOPK_MAX);
    const float *logits = lv;
#pragma omp parallel for if (n > 1)
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * V;
        float *v = val + (size_t)i * k;
        int32_t *c = idx + (size_t)i * k;
        int m = 0; /* entries filled */
        for (int j0 = 0; j0 < V; j0 += TOPK_BLOCK) {
            const int j1 = j0 + TOPK_BLOCK < V ? j0 + TOPK_BLOCK : V;
            if (m == k) { /* the list is full: skip a block that holds nothing better */
                int nan;
                const float bmax = max_of(l, j0, j1, &nan);
                /* a later column never beats an equal value, nor anything a NaN */
                if (!nan && !(bmax > v[k - 1]))
                    continue;
            }
            for (int j = j0; j < j1; j++) {
                const float x = l[j];
                if (m == k && !tsr_topk_before(x, j, v[k - 1], c[k - 1]))
                    continue;
                int at = m < k ? m++ : k - 1; /* the slot it takes, then moves up from */
                while (at > 0 && tsr_topk_before(x, j, v[at - 1], c[at - 1])) {
                    v[at] = v[at - 1];
                    c[at] = c[at - 1];
                    at--;
                }
                v[at] = x;
                c[at] = j;
            }
        }
        for (; m < k; m++) {
            v[m] = -INFINITY;
            c[m] = -1;
        }
    }
    return TSR_OK;
}

/* Two passes per row, the sum in double, rounded once; rows in parallel. */
static tsr_status cpu_row_expsum(tsr_backend *b, float *out, const void *lv, const float *inv_t,
                                 int n, int V) {
    (void)b;
    if (n < 0 || V < 1)
        return tsr_error_set(TSR_ERR_INVALID, "cpu row_expsum: n %d, V %d", n, V);
    const float *logits = lv;
#pragma omp parallel for if (n > 1)
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * V;
        int nan;
        const float mx = max_of(l, 0, V, &nan);
        double z = 0;
        const double it = inv_t[i];
        for (int j = 0; j < V && mx > -INFINITY; j++)
            z += exp(((double)l[j] - mx) * it);
        out[2 * i] = mx;
        out[2 * i + 1] = nan || !(mx > -INFINITY) ? NAN : (float)z;
    }
    return TSR_OK;
}

static tsr_status cpu_matmul_exact(tsr_backend *b, void *y, const void *x, const tsr_weight *w,
                                   int n, int accumulate) {
    if (w->dtype != TSR_F32)
        return tsr_cpu_qmatmul_exact(&((cpu_ctx *)b->ctx)->scratch, y, x, w, n, accumulate);
    return cpu_matmul(b, y, x, w, n, accumulate);
}

static tsr_status cpu_matmul_dx(tsr_backend *b, void *dx, const void *dy, const tsr_weight *w,
                                int n, int accumulate) {
    if (w->dtype != TSR_F32)
        return tsr_cpu_qmatmul_dx(&((cpu_ctx *)b->ctx)->scratch, dx, dy, w, n, accumulate);
    return tsr_cpu_matmul_dx(b, dx, dy, w, n, accumulate);
}

static const tsr_backend_i cpu_iface = {
    .name = "cpu",
    .act_dtype = TSR_F32,
    .host_memory = 1,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_memcpy,
    .to_host = cpu_memcpy,
    .copy = cpu_memcpy,
    .sync = cpu_sync,
    .destroy = cpu_destroy,
    .weight_upload = cpu_weight_upload,
    .weight_free = cpu_weight_free,
    .weight_adopt = cpu_weight_adopt,
    .vector_upload = cpu_vector_upload,
    .act_to_f32 = cpu_act_convert,
    .act_from_f32 = cpu_act_from_f32,
    .matmul = cpu_matmul,
    .matmul_exact = cpu_matmul_exact,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .add_bias = cpu_add_bias,
    .embedding = cpu_embedding,
    .argmax = cpu_argmax,
    .topk = cpu_topk,
    .row_expsum = cpu_row_expsum,
    .stream = NULL,
    .matmul_dx = cpu_matmul_dx,
    .lora_fwd = tsr_cpu_lora_fwd,
    .lora_bwd = tsr_cpu_lora_bwd,
    .rmsnorm_bwd = tsr_cpu_rmsnorm_bwd,
    .rope_bwd = tsr_cpu_rope_bwd,
    .swiglu_bwd = tsr_cpu_swiglu_bwd,
    .attn_train_fwd = tsr_cpu_attn_train_fwd,
    .attn_train_bwd = tsr_cpu_attn_train_bwd,
    .ce_rowmax = tsr_cpu_ce_rowmax,
    .ce_sums = tsr_cpu_ce_sums,
    .ce_grad = tsr_cpu_ce_grad,
    .adamw = tsr_cpu_adamw,
    .sumsq = tsr_cpu_sumsq,
    .scale_f32 = tsr_cpu_scale_f32,
    .lora_dropout = tsr_cpu_lora_dropout,
    .fill_zero = tsr_cpu_fill_zero,
};

tsr_status tsr_backend_cpu_create(int n_threads, tsr_backend **out) {
    *out = NULL;
    tsr_backend *b = calloc(1, sizeof *b);
    cpu_ctx *ctx = calloc(1, sizeof *ctx);
    if (!b || !ctx) {
        free(b);
        free(ctx);
        return tsr_error_set(TSR_ERR_NOMEM, "cpu: out of memory creating the backend");
    }
    ctx->n_threads = n_threads;
    openblas_set_num_threads(1); /* see cpu_matmul */
#ifdef _OPENMP
    if (n_threads > 0)
        omp_set_num_threads(n_threads);
#endif
    b->iface = &cpu_iface;
    b->ctx = ctx;
    *out = b;
    return TSR_OK;
}
