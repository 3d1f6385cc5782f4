/* kernels/cuda/cuda_backend.c - the CUDA implementation of the kernel backend
 * table: device memory, bf16 weights, cuBLASLt GEMMs and the op launchers of
 * the .cu files, everything enqueued on one stream per backend.
 *
 * Storage: weights bf16 (converted from the host f32 rows at upload, rounded
 * to nearest even); activations bf16 or f32 (act_dtype), norm weights and
 * biases in the activation type, RoPE frequencies f32. GEMMs take bf16 inputs
 * and accumulate in f32: with f32 activations the input rows are first
 * converted into a bf16 scratch and the product is written in f32.
 *
 * cuBLASLt's heuristic query costs tens of microseconds, more than a decode
 * GEMM itself, so each (m, n, k, output type) keeps its descriptors and chosen
 * algorithm in a small cache.
 *
 * What it is not: thread-safe (one engine thread per backend), or a memory
 * pool (cudaMalloc per buffer; buffers are long-lived). */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/add.h"
#include "kernels/cuda/argmax.h"
#include "kernels/cuda/row_expsum.h"
#include "kernels/cuda/topk.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attn_train.h"
#include "kernels/cuda/ce.h"
#include "kernels/cuda/convert.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/kv_store.h"
#include "kernels/cuda/lora_dropout.h"
#include "kernels/cuda/optim.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rmsnorm_bwd.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/swiglu.h"
#include "kernels/cuda/swiglu_bwd.h"

#define LT_CACHE 256
#define LT_WORKSPACE ((size_t)32 << 20)

/* A cached GEMM: column-major C(m, n) = op(A) op(B), packed operands. */
typedef struct {
    int m, n, k, ta, tb, ab_f32, c_f32; /* key; m = 0 marks a free entry */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

typedef struct {
    int device;
    tsr_dtype act;
    tsr_dtype wdt; /* weight storage: bf16, or f32 (reference precision) */
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace; /* LT_WORKSPACE bytes for cuBLASLt */
    void *xbf;
    size_t xbf_cap; /* bf16 GEMM inputs from f32 activations */
    void *stage;
    size_t stage_cap; /* f32 staging for act_to_f32 / act_from_f32 */
    void *tmp[4];
    size_t tmp_cap[4]; /* training scratch (f32 copies, partial sums) */
    void *pick;
    size_t pick_cap; /* argmax / top-k results before their copy to the host */
    lt_plan plans[LT_CACHE];
    int next_evict;
} cuda_ctx;

static cuda_ctx *ctx_of(tsr_backend *b) { return b->ctx; }

/* ---- checks: statement, file:line, device and the library's message ---- */

static tsr_status check_cuda(cudaError_t e, const char *stmt, const char *file, int line, int dev) {
    if (e == cudaSuccess)
        return TSR_OK;
    return tsr_error_set(TSR_ERR_BACKEND, "%s failed at %s:%d on GPU %d: %s (%s)", stmt, file, line,
                         dev, cudaGetErrorString(e), cudaGetErrorName(e));
}

static tsr_status check_cublas(cublasStatus_t e, const char *stmt, const char *file, int line,
                               int dev) {
    if (e == CUBLAS_STATUS_SUCCESS)
        return TSR_OK;
    return tsr_error_set(TSR_ERR_BACKEND, "%s failed at %s:%d on GPU %d: %s (%s)", stmt, file, line,
                         dev, cublasLtGetStatusString(e), cublasLtGetStatusName(e));
}

#define CU(c, call) check_cuda((call), #call, __FILE__, __LINE__, (c)->device)
#define LT(c, call) check_cublas((call), #call, __FILE__, __LINE__, (c)->device)

static size_t act_bytes(const cuda_ctx *c) { return c->act == TSR_F32 ? 4 : 2; }

/* Grows a device scratch buffer to at least `bytes` (contents not kept). */
static tsr_status scratch(cuda_ctx *c, void **p, size_t *cap, size_t bytes, const char *what) {
    if (bytes <= *cap)
        return TSR_OK;
    size_t n = *cap ? *cap : 1 << 16;
    while (n < bytes)
        n *= 2;
    /* the old buffer may still be read by queued work */
    TSR_TRY(CU(c, cudaStreamSynchronize(c->stream)));
    cudaFree(*p);
    *p = NULL;
    *cap = 0;
    cudaError_t e = cudaMalloc(p, n);
    if (e != cudaSuccess) {
        *p = NULL;
        return tsr_error_set(TSR_ERR_NOMEM, "cuda: cannot allocate %zu bytes of %s on GPU %d: %s",
                             n, what, c->device, cudaGetErrorString(e));
    }
    *cap = n;
    return TSR_OK;
}

/* ---- memory ---- */

static void *cuda_alloc(tsr_backend *b, size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError(); /* an allocation failure is not sticky; clear it */
        return NULL;
    }
    return p;
}

static void cuda_free(tsr_backend *b, void *p) {
    if (p) {
        /* queued kernels may still use it */
        cudaStreamSynchronize(ctx_of(b)->stream);
        cudaFree(p);
    }
}

static tsr_status cuda_to_device(tsr_backend *b, void *dst, const void *src, size_t bytes) {
    cuda_ctx *c = ctx_of(b);
    if (!bytes)
        return TSR_OK;
    return CU(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
}

static tsr_status cuda_to_host(tsr_backend *b, void *dst, const void *src, size_t bytes) {
    cuda_ctx *c = ctx_of(b);
    if (!bytes)
        return TSR_OK;
    TSR_TRY(CU(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream)));
    return CU(c, cudaStreamSynchronize(c->stream));
}

static tsr_status cuda_copy(tsr_backend *b, void *dst, const void *src, size_t bytes) {
    cuda_ctx *c = ctx_of(b);
    if (!bytes)
        return TSR_OK;
    return CU(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}

static tsr_status cuda_sync(tsr_backend *b) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, cudaStreamSynchronize(c->stream));
}

static void plan_destroy(lt_plan *p) {
    if (!p->m)
        return;
    cublasLtMatmulDescDestroy(p->op);
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->c);
    memset(p, 0, sizeof *p);
}

static void cuda_destroy(tsr_backend *b) {
    cuda_ctx *c = ctx_of(b);
    if (c) {
        cudaSetDevice(c->device);
        if (c->stream)
            cudaStreamSynchronize(c->stream);
        for (int i = 0; i < LT_CACHE; i++)
            plan_destroy(&c->plans[i]);
        cudaFree(c->workspace);
        cudaFree(c->xbf);
        cudaFree(c->stage);
        for (int i = 0; i < 4; i++)
            cudaFree(c->tmp[i]);
        cudaFree(c->pick);
        if (c->lt)
            cublasLtDestroy(c->lt);
        if (c->stream)
            cudaStreamDestroy(c->stream);
        free(c);
    }
    free(b);
}

static void *cuda_stream_of(tsr_backend *b) { return ctx_of(b)->stream; }

/* ---- weights and vectors ---- */

static tsr_status cuda_weight_upload_f32(tsr_backend *b, tsr_weight *w, const float *src, int rows,
                                         int cols) {
    cuda_ctx *c = ctx_of(b);
    const size_t n = (size_t)rows * cols;
    if (c->wdt == TSR_F32) {
        w->data = cuda_alloc(b, n * 4);
        if (!w->data)
            return tsr_error_set(TSR_ERR_NOMEM,
                                 "cuda: cannot allocate a %d x %d f32 weight on GPU %d", rows, cols,
                                 c->device);
        tsr_status st = CU(c, cudaMemcpy(w->data, src, n * 4, cudaMemcpyHostToDevice));
        if (st != TSR_OK) {
            cudaFree(w->data);
            w->data = NULL;
            return st;
        }
        w->dtype = TSR_F32;
        w->rows = rows;
        w->cols = cols;
        return TSR_OK;
    }
    uint16_t *host = malloc(n * sizeof *host);
    if (!host)
        return tsr_error_set(TSR_ERR_NOMEM, "cuda: out of host memory converting a %d x %d weight",
                             rows, cols);
    for (size_t i = 0; i < n; i++)
        host[i] = tsr_f32_to_bf16(src[i]);
    w->data = cuda_alloc(b, n * 2);
    tsr_status st = TSR_OK;
    if (!w->data)
        st = tsr_error_set(TSR_ERR_NOMEM, "cuda: cannot allocate a %d x %d bf16 weight on GPU %d",
                           rows, cols, c->device);
    /* synchronous: the host buffer is freed right after */
    if (st == TSR_OK)
        st = CU(c, cudaMemcpy(w->data, host, n * 2, cudaMemcpyHostToDevice));
    free(host);
    if (st != TSR_OK) {
        cudaFree(w->data);
        w->data = NULL;
        return st;
    }
    w->dtype = TSR_BF16;
    w->rows = rows;
    w->cols = cols;
    return TSR_OK;
}

/* Any file type: dequantized to f32 on the host, then stored as the
 * backend's weight type (bf16 or f32). */
static tsr_status cuda_weight_upload(tsr_backend *b, tsr_weight *w, const void *src,
                                     tsr_dtype src_type, int rows, int cols) {
    const size_t src_row = tsr_dtype_row_bytes(src_type, (uint64_t)cols);
    if (!src_row || rows < 0)
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "cuda: cannot store a %d x %d weight of type %s (%d): unknown type, "
                             "or %d columns cut its %zu-element blocks",
                             rows, cols, tsr_dtype_name(src_type) ? tsr_dtype_name(src_type) : "?",
                             (int)src_type, cols, tsr_dtype_block(src_type));
    if (src_type == TSR_F32)
        return cuda_weight_upload_f32(b, w, src, rows, cols);
    float *f = malloc((size_t)rows * cols * sizeof *f);
    if (!f)
        return tsr_error_set(TSR_ERR_NOMEM, "cuda: out of host memory converting a %d x %d weight",
                             rows, cols);
    for (int r = 0; r < rows; r++)
        tsr_dequantize(src_type, (const char *)src + (size_t)r * src_row, f + (size_t)r * cols,
                       (size_t)cols);
    tsr_status st = cuda_weight_upload_f32(b, w, f, rows, cols);
    free(f);
    return st;
}

static void cuda_weight_free(tsr_backend *b, tsr_weight *w) {
    if (!w)
        return;
    cuda_free(b, w->data);
    w->data = NULL;
}

static tsr_status cuda_act_from_f32(tsr_backend *b, void *dst, const float *src, size_t n) {
    cuda_ctx *c = ctx_of(b);
    if (!n)
        return TSR_OK;
    if (c->act == TSR_F32)
        return cuda_to_device(b, dst, src, n * 4);
    TSR_TRY(scratch(c, &c->stage, &c->stage_cap, n * 4, "f32 staging"));
    TSR_TRY(CU(c, cudaMemcpyAsync(c->stage, src, n * 4, cudaMemcpyHostToDevice, c->stream)));
    return CU(c, tsr_cuda_convert(c->stream, dst, c->act, c->stage, TSR_F32, n));
}

static tsr_status cuda_act_to_f32(tsr_backend *b, float *dst, const void *src, size_t n) {
    cuda_ctx *c = ctx_of(b);
    if (!n)
        return TSR_OK;
    if (c->act == TSR_F32)
        return cuda_to_host(b, dst, src, n * 4);
    TSR_TRY(scratch(c, &c->stage, &c->stage_cap, n * 4, "f32 staging"));
    TSR_TRY(CU(c, tsr_cuda_convert(c->stream, c->stage, TSR_F32, src, c->act, n)));
    return cuda_to_host(b, dst, c->stage, n * 4);
}

static void *cuda_vector_upload(tsr_backend *b, const float *src, size_t n) {
    void *p = cuda_alloc(b, n * act_bytes(ctx_of(b)));
    if (p && cuda_act_from_f32(b, p, src, n) != TSR_OK) {
        cuda_free(b, p);
        return NULL;
    }
    /* the staging buffer is reused by the next upload: finish this one */
    if (p && cuda_sync(b) != TSR_OK) {
        cuda_free(b, p);
        return NULL;
    }
    return p;
}

/* ---- GEMM ---- */

/* The cached plan for column-major C(m, n) = op(A)(m, k) op(B)(k, n) with
 * packed operands (lda = ta ? k : m, ldb = tb ? n : k, ldc = m), A and B bf16
 * or f32, C bf16 or f32, f32 accumulation. */
static tsr_status plan_get(cuda_ctx *c, int m, int n, int k, int ta, int tb, int ab_f32, int c_f32,
                           lt_plan **out) {
    for (int i = 0; i < LT_CACHE; i++) {
        lt_plan *p = &c->plans[i];
        if (p->m == m && p->n == n && p->k == k && p->ta == ta && p->tb == tb &&
            p->ab_f32 == ab_f32 && p->c_f32 == c_f32) {
            *out = p;
            return TSR_OK;
        }
    }
    lt_plan *p = NULL;
    for (int i = 0; i < LT_CACHE && !p; i++)
        if (!c->plans[i].m)
            p = &c->plans[i];
    if (!p) { /* full: evict round-robin */
        p = &c->plans[c->next_evict];
        c->next_evict = (c->next_evict + 1) % LT_CACHE;
        plan_destroy(p);
    }
    lt_plan np = {0};
    cublasLtMatmulPreference_t pref = NULL;
    const cudaDataType_t abt = ab_f32 ? CUDA_R_32F : CUDA_R_16BF;
    const cudaDataType_t ct = c_f32 ? CUDA_R_32F : CUDA_R_16BF;
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                            opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    size_t ws = LT_WORKSPACE;
    tsr_status st;
    TSR_CHECK_GOTO(st, LT(c, cublasLtMatmulDescCreate(&np.op, CUBLAS_COMPUTE_32F, CUDA_R_32F)));
    TSR_CHECK_GOTO(st, LT(c, cublasLtMatmulDescSetAttribute(np.op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                            &opa, sizeof opa)));
    TSR_CHECK_GOTO(st, LT(c, cublasLtMatmulDescSetAttribute(np.op, CUBLASLT_MATMUL_DESC_TRANSB,
                                                            &opb, sizeof opb)));
    TSR_CHECK_GOTO(st,
                   LT(c, cublasLtMatrixLayoutCreate(&np.a, abt, ta ? (uint64_t)k : (uint64_t)m,
                                                    ta ? (uint64_t)m : (uint64_t)k, ta ? k : m)));
    TSR_CHECK_GOTO(st,
                   LT(c, cublasLtMatrixLayoutCreate(&np.b, abt, tb ? (uint64_t)n : (uint64_t)k,
                                                    tb ? (uint64_t)k : (uint64_t)n, tb ? n : k)));
    TSR_CHECK_GOTO(st, LT(c, cublasLtMatrixLayoutCreate(&np.c, ct, (uint64_t)m, (uint64_t)n, m)));
    TSR_CHECK_GOTO(st, LT(c, cublasLtMatmulPreferenceCreate(&pref)));
    TSR_CHECK_GOTO(st, LT(c, cublasLtMatmulPreferenceSetAttribute(
                                 pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws)));
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    TSR_CHECK_GOTO(st, LT(c, cublasLtMatmulAlgoGetHeuristic(c->lt, np.op, np.a, np.b, np.c, np.c,
                                                            pref, 1, &h, &found)));
    if (found < 1) {
        st = tsr_error_set(TSR_ERR_UNSUPPORTED,
                           "cuBLASLt has no %s algorithm for a %d x %d x %d product on GPU %d",
                           ab_f32 ? "f32" : "bf16", m, n, k, c->device);
        goto cleanup;
    }
    np.algo = h.algo;
    np.m = m;
    np.n = n;
    np.k = k;
    np.ta = ta;
    np.tb = tb;
    np.ab_f32 = ab_f32;
    np.c_f32 = c_f32;
    *p = np;
    *out = p;
    cublasLtMatmulPreferenceDestroy(pref);
    return TSR_OK;
cleanup:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    np.m = 1; /* destroy what was created (NULL handles are accepted) */
    plan_destroy(&np);
    return st;
}

/* Row-major Y(M, N) = alpha op(P)(M, K) op(Q)(K, N) + beta Y, all packed.
 * Row-major Y is column-major Y^T = op(Q)^T op(P)^T, so Q is cuBLAS's A and
 * P its B, with the same transpose flags. P and Q are bf16 or f32 (pq_f32),
 * Y bf16 or f32 (y_f32). */
static tsr_status rm_gemm(cuda_ctx *c, void *Y, const void *P, int tp, const void *Q, int tq, int M,
                          int N, int K, float alpha, float beta, int pq_f32, int y_f32) {
    if (M <= 0 || N <= 0)
        return TSR_OK;
    lt_plan *p = NULL;
    TSR_TRY(plan_get(c, N, M, K, tq, tp, pq_f32, y_f32, &p));
    return LT(c, cublasLtMatmul(c->lt, p->op, &alpha, Q, p->a, P, p->b, &beta, Y, p->c, Y, p->c,
                                &p->algo, c->workspace, LT_WORKSPACE, c->stream));
}

/* Activations as bf16 GEMM inputs: themselves when bf16, else converted. */
static tsr_status act_as_bf16(cuda_ctx *c, const void *x, size_t count, const void **out) {
    if (c->act == TSR_BF16) {
        *out = x;
        return TSR_OK;
    }
    TSR_TRY(scratch(c, &c->xbf, &c->xbf_cap, count * 2, "bf16 GEMM inputs"));
    TSR_TRY(CU(c, tsr_cuda_convert(c->stream, c->xbf, TSR_BF16, x, TSR_F32, count)));
    *out = c->xbf;
    return TSR_OK;
}

/* Activations as f32 (LoRA GEMMs): themselves when f32, else converted into
 * training scratch `slot`. */
static tsr_status act_as_f32(cuda_ctx *c, const void *x, size_t count, int slot,
                             const float **out) {
    if (c->act == TSR_F32) {
        *out = x;
        return TSR_OK;
    }
    TSR_TRY(scratch(c, &c->tmp[slot], &c->tmp_cap[slot], count * 4, "f32 training scratch"));
    TSR_TRY(CU(c, tsr_cuda_convert(c->stream, c->tmp[slot], TSR_F32, x, c->act, count)));
    *out = c->tmp[slot];
    return TSR_OK;
}

/* y(M, N) (activations) += alpha op(P) op(Q) with f32 P and Q: directly when
 * activations are f32, else through f32 scratch `slot` and an add. */
static tsr_status gemm_into_act(cuda_ctx *c, void *y, const float *P, int tp, const float *Q,
                                int tq, int M, int N, int K, float alpha, int slot) {
    if (c->act == TSR_F32)
        return rm_gemm(c, y, P, tp, Q, tq, M, N, K, alpha, 1.0f, 1, 1);
    const size_t count = (size_t)M * N;
    TSR_TRY(scratch(c, &c->tmp[slot], &c->tmp_cap[slot], count * 4, "f32 training scratch"));
    TSR_TRY(rm_gemm(c, c->tmp[slot], P, tp, Q, tq, M, N, K, alpha, 0.0f, 1, 1));
    return CU(c, tsr_cuda_add_f32(c->stream, c->act, y, c->tmp[slot], count));
}

/* y(n, rows) = x(n, cols) W^T: P = x, Q = W (rows, cols) transposed. */
static tsr_status cuda_matmul(tsr_backend *b, void *y, const void *x, const tsr_weight *w, int n,
                              int accumulate) {
    cuda_ctx *c = ctx_of(b);
    if (n <= 0)
        return TSR_OK;
    if (w->dtype == TSR_F32) /* reference precision: f32 activations, full f32 GEMM */
        return rm_gemm(c, y, x, 0, w->data, 1, n, w->rows, w->cols, 1.0f, accumulate ? 1.0f : 0.0f,
                       1, 1);
    const void *xin;
    TSR_TRY(act_as_bf16(c, x, (size_t)n * w->cols, &xin));
    return rm_gemm(c, y, xin, 0, w->data, 1, n, w->rows, w->cols, 1.0f, accumulate ? 1.0f : 0.0f, 0,
                   c->act == TSR_F32);
}

/* ---- the other ops: thin wrappers over the .cu launchers ---- */

static tsr_status cuda_rmsnorm(tsr_backend *b, void *y, const void *x, const void *w, int n,
                               int dim, float eps) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_rmsnorm(c->stream, c->act, y, x, w, n, dim, eps));
}

static tsr_status cuda_rope(tsr_backend *b, void *x, const int32_t *pos, const float *inv_freq,
                            int n, int n_heads, int head_dim) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_rope(c->stream, c->act, x, pos, inv_freq, n, n_heads, head_dim, 0));
}

/* The CUDA kernels read and write a cache of the activation type only. */
static tsr_status cuda_kv_dtype_check(const cuda_ctx *c, tsr_dtype cache_dtype) {
    if (cache_dtype == c->act)
        return TSR_OK;
    return tsr_error_set(TSR_ERR_UNSUPPORTED,
                         "cuda: the KV cache holds the activation type (%s), not %s; "
                         "--kv-dtype is for the CPU",
                         tsr_dtype_name(c->act),
                         tsr_dtype_name(cache_dtype) ? tsr_dtype_name(cache_dtype) : "?");
}

static tsr_status cuda_kv_store(tsr_backend *b, void *kc, void *vc, tsr_dtype cache_dtype,
                                const void *k, const void *v, const int32_t *slot, int n,
                                int kv_dim) {
    cuda_ctx *c = ctx_of(b);
    TSR_TRY(cuda_kv_dtype_check(c, cache_dtype));
    return CU(c, tsr_cuda_kv_store(c->stream, c->act, kc, vc, k, v, slot, n, kv_dim));
}

static tsr_status cuda_attention(tsr_backend *b, void *out, const void *q, const void *kc,
                                 const void *vc, const tsr_attn_desc *d) {
    cuda_ctx *c = ctx_of(b);
    TSR_TRY(cuda_kv_dtype_check(c, d->kv_dtype));
    if (d->head_dim > 256)
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "cuda: attention supports head_dim <= 256, not %d", d->head_dim);
    return CU(c, tsr_cuda_attention(c->stream, c->act, out, q, kc, vc, d));
}

static tsr_status cuda_swiglu(tsr_backend *b, void *out, const void *gate, const void *up, int n,
                              int dim) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_swiglu(c->stream, c->act, out, gate, up, (size_t)n * dim));
}

static tsr_status cuda_add(tsr_backend *b, void *y, const void *x, int n, int dim) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_add(c->stream, c->act, y, x, (size_t)n * dim));
}

static tsr_status cuda_add_bias(tsr_backend *b, void *y, const void *bias, int n, int dim) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_add_bias(c->stream, c->act, y, bias, n, dim));
}

static tsr_status cuda_embedding(tsr_backend *b, void *out, const tsr_weight *table,
                                 const int32_t *ids, int n, int row0) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_embedding(c->stream, c->act, out, table->data, table->dtype, table->rows,
                                    table->cols, ids, n, row0));
}

/* Each row's maximum and column on the device, then 8 bytes a row to the
 * host (one copy: values and columns share a scratch buffer). */
static tsr_status cuda_argmax(tsr_backend *b, float *val, int32_t *idx, const void *logits, int n,
                              int V) {
    cuda_ctx *c = ctx_of(b);
    if (n <= 0)
        return TSR_OK;
    TSR_TRY(scratch(c, &c->pick, &c->pick_cap, (size_t)n * 8, "argmax results"));
    float *dv = c->pick;
    int32_t *di = (int32_t *)(dv + n);
    TSR_TRY(CU(c, tsr_cuda_argmax(c->stream, c->act, dv, di, logits, n, V)));
    TSR_TRY(CU(c, cudaMemcpyAsync(val, dv, (size_t)n * 4, cudaMemcpyDeviceToHost, c->stream)));
    TSR_TRY(CU(c, cudaMemcpyAsync(idx, di, (size_t)n * 4, cudaMemcpyDeviceToHost, c->stream)));
    return CU(c, cudaStreamSynchronize(c->stream));
}

static tsr_status cuda_topk(tsr_backend *b, float *val, int32_t *idx, const void *logits, int n,
                            int V, int k) {
    cuda_ctx *c = ctx_of(b);
    if (n < 0 || V < 0 || k < 1 || k > TSR_TOPK_MAX)
        return tsr_error_set(TSR_ERR_INVALID, "cuda topk: n %d, V %d, k %d (k must be in 1..%d)", n,
                             V, k, TSR_TOPK_MAX);
    if (n == 0)
        return TSR_OK;
    const size_t m = (size_t)n * k;
    TSR_TRY(scratch(c, &c->pick, &c->pick_cap, m * 8, "top-k results"));
    float *dv = c->pick;
    int32_t *di = (int32_t *)(dv + m);
    TSR_TRY(CU(c, tsr_cuda_topk(c->stream, c->act, dv, di, logits, n, V, k)));
    TSR_TRY(CU(c, cudaMemcpyAsync(val, dv, m * 4, cudaMemcpyDeviceToHost, c->stream)));
    TSR_TRY(CU(c, cudaMemcpyAsync(idx, di, m * 4, cudaMemcpyDeviceToHost, c->stream)));
    return CU(c, cudaStreamSynchronize(c->stream));
}

/* The temperatures go up and the (max, sum) pairs come back through the
 * pick scratch: 12 bytes a row each way in all. */
static tsr_status cuda_row_expsum(tsr_backend *b, float *out, const void *logits,
                                  const float *inv_t, int n, int V) {
    cuda_ctx *c = ctx_of(b);
    if (n < 0 || V < 1)
        return tsr_error_set(TSR_ERR_INVALID, "cuda row_expsum: n %d, V %d", n, V);
    if (n == 0)
        return TSR_OK;
    TSR_TRY(scratch(c, &c->pick, &c->pick_cap, (size_t)n * 12, "row sums"));
    float *dout = c->pick, *dt = dout + 2 * (size_t)n;
    TSR_TRY(CU(c, cudaMemcpyAsync(dt, inv_t, (size_t)n * 4, cudaMemcpyHostToDevice, c->stream)));
    TSR_TRY(CU(c, tsr_cuda_row_expsum(c->stream, c->act, dout, logits, dt, n, V)));
    TSR_TRY(CU(c, cudaMemcpyAsync(out, dout, (size_t)n * 8, cudaMemcpyDeviceToHost, c->stream)));
    return CU(c, cudaStreamSynchronize(c->stream));
}

/* ---- CUDA graphs ---- */

static tsr_status cuda_capture_begin(tsr_backend *b) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
}

static tsr_status cuda_capture_end(tsr_backend *b, void **graph) {
    cuda_ctx *c = ctx_of(b);
    cudaGraph_t g = NULL;
    cudaGraphExec_t exec = NULL;
    *graph = NULL;
    tsr_status st = CU(c, cudaStreamEndCapture(c->stream, &g));
    if (st == TSR_OK)
        st = CU(c, cudaGraphInstantiate(&exec, g, 0));
    if (g)
        cudaGraphDestroy(g);
    if (st == TSR_OK)
        *graph = exec;
    return st;
}

static tsr_status cuda_graph_launch(tsr_backend *b, void *graph) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, cudaGraphLaunch((cudaGraphExec_t)graph, c->stream));
}

static void cuda_graph_free(tsr_backend *b, void *graph) {
    if (graph) {
        cudaStreamSynchronize(ctx_of(b)->stream);
        cudaGraphExecDestroy((cudaGraphExec_t)graph);
    }
}

/* ---- training ---- */

/* dx(n, cols) = dy(n, rows) W(rows, cols), bf16 GEMM inputs. */
static tsr_status cuda_matmul_dx(tsr_backend *b, void *dx, const void *dy, const tsr_weight *w,
                                 int n, int accumulate) {
    cuda_ctx *c = ctx_of(b);
    if (n <= 0)
        return TSR_OK;
    if (w->dtype == TSR_F32)
        return rm_gemm(c, dx, dy, 0, w->data, 0, n, w->cols, w->rows, 1.0f,
                       accumulate ? 1.0f : 0.0f, 1, 1);
    const void *din;
    TSR_TRY(act_as_bf16(c, dy, (size_t)n * w->rows, &din));
    return rm_gemm(c, dx, din, 0, w->data, 0, n, w->cols, w->rows, 1.0f, accumulate ? 1.0f : 0.0f,
                   0, c->act == TSR_F32);
}

/* LoRA GEMMs run in f32 (rank r is small; the adapter is f32 master data). */
static tsr_status cuda_lora_fwd(tsr_backend *b, void *y, const void *x, const float *A,
                                const float *B, float *xa, int n, int d_in, int d_out, int r,
                                float scale) {
    cuda_ctx *c = ctx_of(b);
    if (n <= 0)
        return TSR_OK;
    const float *xf;
    TSR_TRY(act_as_f32(c, x, (size_t)n * d_in, 0, &xf));
    TSR_TRY(rm_gemm(c, xa, xf, 0, A, 1, n, r, d_in, 1.0f, 0.0f, 1, 1)); /* x A^T */
    return gemm_into_act(c, y, xa, 0, B, 1, n, d_out, r, scale, 1);     /* += s xa B^T */
}

static tsr_status cuda_lora_bwd(tsr_backend *b, void *dx, float *dA, float *dB, const void *dy,
                                const void *x, const float *xa, const float *A, const float *B,
                                float *t, int n, int d_in, int d_out, int r, float scale) {
    cuda_ctx *c = ctx_of(b);
    if (n <= 0)
        return TSR_OK;
    const float *dyf, *xf;
    TSR_TRY(act_as_f32(c, dy, (size_t)n * d_out, 0, &dyf));
    TSR_TRY(act_as_f32(c, x, (size_t)n * d_in, 1, &xf));
    TSR_TRY(rm_gemm(c, dB, dyf, 1, xa, 0, d_out, r, n, scale, 1.0f, 1, 1)); /* += s dy^T xa */
    TSR_TRY(rm_gemm(c, t, dyf, 0, B, 0, n, r, d_out, scale, 0.0f, 1, 1));   /* t = s dy B */
    TSR_TRY(rm_gemm(c, dA, t, 1, xf, 0, r, d_in, n, 1.0f, 1.0f, 1, 1));     /* += t^T x */
    if (!dx)
        return TSR_OK;
    return gemm_into_act(c, dx, t, 0, A, 0, n, d_in, r, 1.0f, 2); /* += t A */
}

static tsr_status cuda_rmsnorm_bwd(tsr_backend *b, void *dx, const void *dy, const void *x,
                                   const void *w, int n, int dim, float eps) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_rmsnorm_bwd(c->stream, c->act, dx, dy, x, w, n, dim, eps));
}

static tsr_status cuda_rope_bwd(tsr_backend *b, void *x, const int32_t *pos, const float *inv_freq,
                                int n, int n_heads, int head_dim) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_rope(c->stream, c->act, x, pos, inv_freq, n, n_heads, head_dim, 1));
}

static tsr_status cuda_swiglu_bwd(tsr_backend *b, void *dgate, void *dup, const void *dout,
                                  const void *gate, const void *up, int n, int dim) {
    cuda_ctx *c = ctx_of(b);
    return CU(c,
              tsr_cuda_swiglu_bwd(c->stream, c->act, dgate, dup, dout, gate, up, (size_t)n * dim));
}

static tsr_status cuda_attn_train_fwd(tsr_backend *b, void *out, float *lse, const void *q,
                                      const void *k, const void *v, const tsr_attn_train_desc *d) {
    cuda_ctx *c = ctx_of(b);
    if (d->head_dim > 256)
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "cuda: attention supports head_dim <= 256, not %d", d->head_dim);
    return CU(c, tsr_cuda_attn_train_fwd(c->stream, c->act, out, lse, q, k, v, d));
}

static tsr_status cuda_attn_train_bwd(tsr_backend *b, void *dq, void *dk, void *dv,
                                      const void *dout, const void *q, const void *k, const void *v,
                                      const void *out, const float *lse,
                                      const tsr_attn_train_desc *d) {
    cuda_ctx *c = ctx_of(b);
    if (d->head_dim > 256)
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "cuda: attention supports head_dim <= 256, not %d", d->head_dim);
    const size_t kv = (size_t)d->n_tokens * d->n_kv_head * d->head_dim * 4;
    const size_t rows = (size_t)d->n_tokens * d->n_head * 4;
    TSR_TRY(scratch(c, &c->tmp[0], &c->tmp_cap[0], kv, "attention dK scratch"));
    TSR_TRY(scratch(c, &c->tmp[1], &c->tmp_cap[1], kv, "attention dV scratch"));
    TSR_TRY(scratch(c, &c->tmp[2], &c->tmp_cap[2], rows, "attention delta scratch"));
    return CU(c, tsr_cuda_attn_train_bwd(c->stream, c->act, dq, dk, dv, dout, q, k, v, out, lse,
                                         c->tmp[0], c->tmp[1], c->tmp[2], d));
}

static tsr_status cuda_ce_rowmax(tsr_backend *b, float *rowmax, const void *logits, int n, int V) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_ce_rowmax(c->stream, c->act, rowmax, logits, n, V));
}

static tsr_status cuda_ce_sums(tsr_backend *b, float *sumexp, float *tlogit, const void *logits,
                               const float *rowmax, const int32_t *target, int n, int V, int row0) {
    cuda_ctx *c = ctx_of(b);
    return CU(
        c, tsr_cuda_ce_sums(c->stream, c->act, sumexp, tlogit, logits, rowmax, target, n, V, row0));
}

static tsr_status cuda_ce_grad(tsr_backend *b, void *dlogits, const void *logits,
                               const float *rowmax, const float *sumexp, const int32_t *target,
                               const float *weight, int n, int V, int row0) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_ce_grad(c->stream, c->act, dlogits, logits, rowmax, sumexp, target,
                                  weight, n, V, row0));
}

static tsr_status cuda_adamw(tsr_backend *b, float *p, const float *g, float *m, float *v, size_t n,
                             const tsr_adamw_params *h, int t) {
    cuda_ctx *c = ctx_of(b);
    if (t < 1)
        return tsr_error_set(TSR_ERR_INVALID, "adamw: step %d (steps count from 1)", t);
    const float bc1 = (float)(1.0 - pow(h->beta1, t)), bc2 = (float)(1.0 - pow(h->beta2, t));
    return CU(c, tsr_cuda_adamw(c->stream, p, g, m, v, n, h->lr, h->beta1, h->beta2, h->eps,
                                h->weight_decay, bc1, bc2));
}

static tsr_status cuda_sumsq(tsr_backend *b, double *out, const float *x, size_t n) {
    cuda_ctx *c = ctx_of(b);
    TSR_TRY(scratch(c, &c->tmp[3], &c->tmp_cap[3], sizeof(double), "sum-of-squares scratch"));
    TSR_TRY(CU(c, tsr_cuda_sumsq(c->stream, c->tmp[3], x, n)));
    return cuda_to_host(b, out, c->tmp[3], sizeof *out);
}

static tsr_status cuda_scale_f32(tsr_backend *b, float *x, size_t n, float s) {
    cuda_ctx *c = ctx_of(b);
    return CU(c, tsr_cuda_scale_f32(c->stream, x, n, s));
}

static tsr_status cuda_lora_dropout(tsr_backend *b, void *out, const void *x, int n, int d,
                                    const tsr_lora_dropout_desc *dd, int accumulate) {
    cuda_ctx *c = ctx_of(b);
    if (n < 0 || d < 0 || dd->row0 < 0 || dd->col0 < 0 || !(dd->p >= 0.0f && dd->p < 1.0f))
        return tsr_error_set(TSR_ERR_INVALID,
                             "cuda lora_dropout: n %d, d %d, row0 %d, col0 %d, p %g (sizes and "
                             "offsets >= 0, p in [0, 1))",
                             n, d, dd->row0, dd->col0, (double)dd->p);
    const uint64_t stream = tsr_lora_dropout_stream(dd->seed, dd->key, dd->layer, dd->target);
    return CU(c, tsr_cuda_lora_dropout(c->stream, c->act, out, x, n, d, stream, dd->row0, dd->col0,
                                       tsr_lora_dropout_threshold(dd->p), 1.0f / (1.0f - dd->p),
                                       accumulate));
}

static tsr_status cuda_fill_zero(tsr_backend *b, void *p, size_t bytes) {
    cuda_ctx *c = ctx_of(b);
    if (!bytes)
        return TSR_OK;
    return CU(c, cudaMemsetAsync(p, 0, bytes, c->stream));
}

/* One table per activation type; everything but act_dtype is shared. */
#define CUDA_IFACE(act)                                                                            \
    {                                                                                              \
        .name = "cuda", .act_dtype = (act), .host_memory = 0, .alloc = cuda_alloc,                 \
        .free = cuda_free, .to_device = cuda_to_device, .to_host = cuda_to_host,                   \
        .copy = cuda_copy, .sync = cuda_sync, .destroy = cuda_destroy,                             \
        .weight_upload = cuda_weight_upload, .weight_free = cuda_weight_free,                      \
        .vector_upload = cuda_vector_upload, .act_to_f32 = cuda_act_to_f32,                        \
        .act_from_f32 = cuda_act_from_f32, .matmul = cuda_matmul, .rmsnorm = cuda_rmsnorm,         \
        .rope = cuda_rope, .kv_store = cuda_kv_store, .attention = cuda_attention,                 \
        .swiglu = cuda_swiglu, .add = cuda_add, .add_bias = cuda_add_bias,                         \
        .embedding = cuda_embedding, .argmax = cuda_argmax, .topk = cuda_topk,                     \
        .row_expsum = cuda_row_expsum, .stream = cuda_stream_of,                                   \
        .capture_begin = cuda_capture_begin, .capture_end = cuda_capture_end,                      \
        .graph_launch = cuda_graph_launch, .graph_free = cuda_graph_free,                          \
        .matmul_dx = cuda_matmul_dx, .lora_fwd = cuda_lora_fwd, .lora_bwd = cuda_lora_bwd,         \
        .rmsnorm_bwd = cuda_rmsnorm_bwd, .rope_bwd = cuda_rope_bwd, .swiglu_bwd = cuda_swiglu_bwd, \
        .attn_train_fwd = cuda_attn_train_fwd, .attn_train_bwd = cuda_attn_train_bwd,              \
        .ce_rowmax = cuda_ce_rowmax, .ce_sums = cuda_ce_sums, .ce_grad = cuda_ce_grad,             \
        .adamw = cuda_adamw, .sumsq = cuda_sumsq, .scale_f32 = cuda_scale_f32,                     \
        .lora_dropout = cuda_lora_dropout, .fill_zero = cuda_fill_zero,                            \
    }

static const tsr_backend_i cuda_iface_f32 = CUDA_IFACE(TSR_F32);
static const tsr_backend_i cuda_iface_bf16 = CUDA_IFACE(TSR_BF16);

int tsr_backend_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

tsr_status tsr_backend_cuda_create(int device, tsr_dtype act_dtype, tsr_dtype weight_dtype,
                                   tsr_backend **out) {
    *out = NULL;
    if (act_dtype != TSR_F32 && act_dtype != TSR_BF16)
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "cuda: activations must be f32 or bf16, not %s",
                             tsr_dtype_name(act_dtype));
    if (weight_dtype != TSR_F32 && weight_dtype != TSR_BF16)
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "cuda: weights must be bf16 or f32, not %s",
                             tsr_dtype_name(weight_dtype));
    if (weight_dtype == TSR_F32 && act_dtype != TSR_F32)
        return tsr_error_set(
            TSR_ERR_UNSUPPORTED,
            "cuda: f32 weights (the reference-precision mode) need f32 activations");
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        return tsr_error_set(TSR_ERR_BACKEND, "cuda: no usable CUDA device (%s)",
                             e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports none");
    }
    if (device < 0 || device >= count)
        return tsr_error_set(TSR_ERR_INVALID, "cuda: GPU %d does not exist (this host has %d)",
                             device, count);
    tsr_backend *b = calloc(1, sizeof *b);
    cuda_ctx *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return tsr_error_set(TSR_ERR_NOMEM, "cuda: out of memory creating the backend");
    }
    c->device = device;
    c->act = act_dtype;
    c->wdt = weight_dtype;
    b->ctx = c;
    b->iface = act_dtype == TSR_F32 ? &cuda_iface_f32 : &cuda_iface_bf16;
    tsr_status st;
    TSR_CHECK_GOTO(st, CU(c, cudaSetDevice(device)));
    TSR_CHECK_GOTO(st, CU(c, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)));
    TSR_CHECK_GOTO(st, LT(c, cublasLtCreate(&c->lt)));
    TSR_CHECK_GOTO(st, CU(c, cudaMalloc(&c->workspace, LT_WORKSPACE)));
    *out = b;
    return TSR_OK;
cleanup:
    cuda_destroy(b);
    return st;
}
