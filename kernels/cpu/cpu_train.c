/* kernels/cpu/cpu_train.c - the CPU backend's training (LoRA) ops: matmul
 * input gradient, LoRA forward/backward, RMSNorm/RoPE/SwiGLU backward, causal
 * attention over contiguous sequences with its backward, vocabulary-parallel
 * cross-entropy pieces, AdamW, sum of squares and scaling, LoRA dropout's
 * mask and zero fills. f32 everywhere;
 * sums that can lose digits (norms, softmax denominators, sumsq) accumulate in
 * double. Contracts are in kernels/backend.h.
 *
 * Like cpu_backend.c this is the reference other backends are checked
 * against (tests/train/), so each op is written the plain way. OpenMP is used
 * where output rows are independent; GEMMs are single-threaded OpenBLAS calls
 * on bands of the output (one thread pool, see cpu_matmul).
 *
 * What it is not: a fused or memory-efficient kernel (attention backward
 * recomputes the probabilities row by row instead of storing them). */
#include "kernels/cpu/cpu_train.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Work (multiply-adds) below which a loop or GEMM stays on one thread. */
enum { PAR_WORK = 65536 };

/* ---- GEMM in bands ----------------------------------------------------------------- */

/* C(M, N) = alpha * op(A) op(B) + beta * C for contiguous row-major matrices:
 * op(A) is (M, K) (A stored (K, M) when trans_a), op(B) is (K, N) (B stored
 * (N, K) when trans_b). The larger of M and N is cut into 16-aligned bands,
 * one per OpenMP thread, each a single-threaded cblas_sgemm. beta is 0 or 1
 * in this file; with K == 0 the product is empty and C becomes beta * C. */
static void band_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                       const float *B, float beta, float *C) {
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        for (size_t i = 0; i < (size_t)M * N; i++)
            C[i] = beta == 0.0f ? 0.0f : beta * C[i];
        return;
    }
    const int lda = trans_a ? M : K, ldb = trans_b ? K : N, ldc = N;
    const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    const int split_rows = M >= N;
    const int len = split_rows ? M : N;
#pragma omp parallel if ((long)M * N * K > PAR_WORK)
    {
        int nt = 1, tid = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        tid = omp_get_thread_num();
#endif
        int per = ((len + nt - 1) / nt + 15) & ~15;
        int i0 = tid * per, i1 = i0 + per < len ? i0 + per : len;
        if (i0 < i1) {
            if (split_rows) {
                const float *Ab = trans_a ? A + i0 : A + (size_t)i0 * lda;
                cblas_sgemm(CblasRowMajor, ta, tb, i1 - i0, N, K, alpha, Ab, lda, B, ldb, beta,
                            C + (size_t)i0 * ldc, ldc);
            } else {
                const float *Bb = trans_b ? B + (size_t)i0 * ldb : B + i0;
                cblas_sgemm(CblasRowMajor, ta, tb, M, i1 - i0, K, alpha, A, lda, Bb, ldb, beta,
                            C + i0, ldc);
            }
        }
    }
}

static tsr_status check_sizes(const char *op, long a, long b, long c, long d) {
    if (a < 0 || b < 0 || c < 0 || d < 0)
        return tsr_error_set(TSR_ERR_INVALID, "cpu %s: negative size (%ld, %ld, %ld, %ld)", op, a,
                             b, c, d);
    return TSR_OK;
}

/* ---- matmul and LoRA --------------------------------------------------------------- */

tsr_status tsr_cpu_matmul_dx(tsr_backend *b, void *dx, const void *dy, const tsr_weight *w, int n,
                             int accumulate) {
    (void)b;
    TSR_TRY(check_sizes("matmul_dx", n, w->rows, w->cols, 0));
    /* dx(n, cols) = dy(n, rows) W(rows, cols) */
    band_sgemm(0, 0, n, w->cols, w->rows, 1.0f, dy, w->data, accumulate ? 1.0f : 0.0f, dx);
    return TSR_OK;
}

tsr_status tsr_cpu_lora_fwd(tsr_backend *b, void *y, const void *x, const float *A, const float *B,
                            float *xa, int n, int d_in, int d_out, int r, float scale) {
    (void)b;
    TSR_TRY(check_sizes("lora_fwd", n, d_in, d_out, r));
    band_sgemm(0, 1, n, r, d_in, 1.0f, x, A, 0.0f, xa);   /* xa(n, r) = x A^T */
    band_sgemm(0, 1, n, d_out, r, scale, xa, B, 1.0f, y); /* y += scale xa B^T */
    return TSR_OK;
}

tsr_status tsr_cpu_lora_bwd(tsr_backend *b, void *dx, float *dA, float *dB, const void *dy,
                            const void *x, const float *xa, const float *A, const float *B,
                            float *t, int n, int d_in, int d_out, int r, float scale) {
    (void)b;
    TSR_TRY(check_sizes("lora_bwd", n, d_in, d_out, r));
    band_sgemm(1, 0, d_out, r, n, scale, dy, xa, 1.0f, dB); /* dB(d_out, r) += s dy^T xa */
    band_sgemm(0, 0, n, r, d_out, scale, dy, B, 0.0f, t);   /* t(n, r) = s dy B */
    band_sgemm(1, 0, r, d_in, n, 1.0f, t, x, 1.0f, dA);     /* dA(r, d_in) += t^T x */
    if (dx)
        band_sgemm(0, 0, n, d_in, r, 1.0f, t, A, 1.0f, dx); /* dx(n, d_in) += t A */
    return TSR_OK;
}

/* ---- element-wise and per-row backward ops --------------------------------------------- */

tsr_status tsr_cpu_rmsnorm_bwd(tsr_backend *b, void *dxv, const void *dyv, const void *xv,
                               const void *wv, int n, int dim, float eps) {
    (void)b;
    TSR_TRY(check_sizes("rmsnorm_bwd", n, dim, 0, 0));
    float *dx = dxv;
    const float *dy = dyv, *x = xv, *w = wv;
    /* y_i = x_i r w_i with r = (mean(x^2) + eps)^(-1/2), so
     * dx_i = r w_i dy_i - x_i r^3 / dim * sum_j w_j dy_j x_j. */
#pragma omp parallel for if ((long)n * dim > PAR_WORK)
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * dim, *dyr = dy + (size_t)t * dim;
        float *dxr = dx + (size_t)t * dim;
        double ss = 0, dot = 0;
        for (int i = 0; i < dim; i++) {
            ss += (double)xr[i] * xr[i];
            dot += (double)w[i] * dyr[i] * xr[i];
        }
        double r = 1.0 / sqrt(ss / dim + eps);
        double c = r * r * r / dim * dot;
        for (int i = 0; i < dim; i++)
            dxr[i] += (float)(r * w[i] * dyr[i] - xr[i] * c);
    }
    return TSR_OK;
}

tsr_status tsr_cpu_rope_bwd(tsr_backend *b, void *xv, const int32_t *pos, const float *inv_freq,
                            int n, int n_heads, int head_dim) {
    (void)b;
    TSR_TRY(check_sizes("rope_bwd", n, n_heads, head_dim, 0));
    float *x = xv;
    const int half = head_dim / 2;
    /* RoPE is a rotation, so its Jacobian transposed is the rotation by the
     * opposite angle: same cos, negated sin (angles in double as in cpu_rope). */
#pragma omp parallel for if (n > 4)
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < half; i++) {
            double a = (double)pos[t] * (double)inv_freq[i];
            float c = (float)cos(a), s = (float)-sin(a);
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

tsr_status tsr_cpu_swiglu_bwd(tsr_backend *b, void *dgatev, void *dupv, const void *doutv,
                              const void *gatev, const void *upv, int n, int dim) {
    (void)b;
    TSR_TRY(check_sizes("swiglu_bwd", n, dim, 0, 0));
    float *dgate = dgatev, *dup = dupv;
    const float *dout = doutv, *gate = gatev, *up = upv;
    const long total = (long)n * dim;
    /* out = g sig(g) u:  d/dg = u sig(g) (1 + g (1 - sig(g))),  d/du = g sig(g).
     * All three inputs are read before either output is written (aliasing). */
#pragma omp parallel for if (total > PAR_WORK)
    for (long i = 0; i < total; i++) {
        float g = gate[i], u = up[i], d = dout[i];
        float s = 1.0f / (1.0f + expf(-g));
        dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
        dup[i] = d * g * s;
    }
    return TSR_OK;
}

/* ---- attention over contiguous sequences --------------------------------------------- */

/* Checks the descriptor against its own invariants (on the CPU its arrays are
 * host memory) and returns the longest sequence in *max_len. */
static tsr_status check_attn_desc(const tsr_attn_train_desc *d, int *max_len) {
    if (d->n_tokens < 0 || d->n_seqs < 0 || d->n_head < 1 || d->n_kv_head < 1 || d->head_dim < 1 ||
        d->n_head % d->n_kv_head != 0)
        return tsr_error_set(TSR_ERR_INVALID,
                             "cpu attn_train: bad descriptor (n_tokens %d, n_seqs %d, n_head %d, "
                             "n_kv_head %d, head_dim %d)",
                             d->n_tokens, d->n_seqs, d->n_head, d->n_kv_head, d->head_dim);
    if (d->seq_start[0] != 0 || d->seq_start[d->n_seqs] != d->n_tokens)
        return tsr_error_set(TSR_ERR_INVALID,
                             "cpu attn_train: seq_start must run from 0 to n_tokens (%d), got "
                             "%d .. %d",
                             d->n_tokens, (int)d->seq_start[0], (int)d->seq_start[d->n_seqs]);
    int longest = 0;
    for (int s = 0; s < d->n_seqs; s++) {
        int len = d->seq_start[s + 1] - d->seq_start[s];
        if (len < 0)
            return tsr_error_set(TSR_ERR_INVALID, "cpu attn_train: seq_start decreases at %d", s);
        if (len > longest)
            longest = len;
    }
    for (int t = 0; t < d->n_tokens; t++) {
        int s = d->tok_seq[t];
        if (s < 0 || s >= d->n_seqs || t < d->seq_start[s] || t >= d->seq_start[s + 1])
            return tsr_error_set(TSR_ERR_INVALID,
                                 "cpu attn_train: tok_seq[%d] = %d disagrees with seq_start", t, s);
    }
    *max_len = longest;
    return TSR_OK;
}

static inline float dot_f32(const float *a, const float *b, int n) {
    float s = 0;
    /* vectorised: the reassociated sum is fine at f32 */
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

tsr_status tsr_cpu_attn_train_fwd(tsr_backend *b, void *outv, float *lse, const void *qv,
                                  const void *kv, const void *vv, const tsr_attn_train_desc *d) {
    (void)b;
    int max_len = 0;
    TSR_TRY(check_attn_desc(d, &max_len));
    float *out = outv;
    const float *q = qv, *k = kv, *v = vv;
    const int hd = d->head_dim, nh = d->n_head, nkv = d->n_kv_head, group = nh / nkv;
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        float *p = malloc(((size_t)max_len + 1) * sizeof *p);
        if (!p)
            failed = 1;
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int t = 0; t < d->n_tokens; t++) {
            for (int h = 0; h < nh; h++) {
                if (!p)
                    continue;
                const int start = d->seq_start[d->tok_seq[t]];
                const float *qh = q + ((size_t)t * nh + h) * hd;
                float *oh = out + ((size_t)t * nh + h) * hd;
                const size_t koff = (size_t)(h / group) * hd;
                float mx = -INFINITY;
                for (int j = start; j <= t; j++) {
                    float s = dot_f32(qh, k + (size_t)j * nkv * hd + koff, hd) * d->scale;
                    p[j - start] = s;
                    if (s > mx)
                        mx = s;
                }
                double sum = 0;
                for (int j = start; j <= t; j++) {
                    p[j - start] = expf(p[j - start] - mx);
                    sum += p[j - start];
                }
                const float inv = (float)(1.0 / sum);
                memset(oh, 0, (size_t)hd * sizeof *oh);
                for (int j = start; j <= t; j++) {
                    const float *vj = v + (size_t)j * nkv * hd + koff;
                    const float wgt = p[j - start] * inv;
#pragma omp simd
                    for (int i = 0; i < hd; i++)
                        oh[i] += wgt * vj[i];
                }
                lse[(size_t)t * nh + h] = mx + (float)log(sum);
            }
        }
        free(p);
    }
    if (failed)
        return tsr_error_set(TSR_ERR_NOMEM, "cpu attn_train_fwd: scratch allocation failed");
    return TSR_OK;
}

/* With S_ij = scale q_i.k_j, P_ij = exp(S_ij - lse_i) and D_i = dout_i.out_i:
 *   dS_ij = P_ij (dout_i.v_j - D_i)
 *   dq_i = scale sum_j dS_ij k_j ;  dk_j = scale sum_i dS_ij q_i ;  dv_j = sum_i P_ij dout_i
 * where i runs over the query rows (and the query heads of j's KV group) that
 * see key j. Pass 1 owns query rows (D, dq), pass 2 owns key rows (dk, dv), so
 * neither needs atomics; P is recomputed in each. */
tsr_status tsr_cpu_attn_train_bwd(tsr_backend *b, void *dqv, void *dkv, void *dvv,
                                  const void *doutv, const void *qv, const void *kv, const void *vv,
                                  const void *outv, const float *lse,
                                  const tsr_attn_train_desc *d) {
    (void)b;
    int max_len = 0;
    TSR_TRY(check_attn_desc(d, &max_len));
    float *dq = dqv, *dk = dkv, *dv = dvv;
    const float *dout = doutv, *q = qv, *k = kv, *v = vv, *out = outv;
    const int hd = d->head_dim, nh = d->n_head, nkv = d->n_kv_head, group = nh / nkv;
    const float scale = d->scale;
    float *D = malloc(((size_t)d->n_tokens * nh + 1) * sizeof *D);
    if (!D)
        return tsr_error_set(TSR_ERR_NOMEM, "cpu attn_train_bwd: cannot allocate %d x %d floats",
                             d->n_tokens, nh);

#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int t = 0; t < d->n_tokens; t++) {
        for (int h = 0; h < nh; h++) {
            const size_t row = (size_t)t * nh + h;
            const int start = d->seq_start[d->tok_seq[t]];
            const float *qh = q + row * hd, *doh = dout + row * hd;
            float *dqh = dq + row * hd;
            const size_t koff = (size_t)(h / group) * hd;
            const float Dt = dot_f32(doh, out + row * hd, hd);
            D[row] = Dt;
            memset(dqh, 0, (size_t)hd * sizeof *dqh);
            for (int j = start; j <= t; j++) {
                const float *kj = k + (size_t)j * nkv * hd + koff;
                const float *vj = v + (size_t)j * nkv * hd + koff;
                float P = expf(dot_f32(qh, kj, hd) * scale - lse[row]);
                float ds = P * (dot_f32(doh, vj, hd) - Dt) * scale;
#pragma omp simd
                for (int i = 0; i < hd; i++)
                    dqh[i] += ds * kj[i];
            }
        }
    }

#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int j = 0; j < d->n_tokens; j++) {
        for (int g = 0; g < nkv; g++) {
            const size_t krow = (size_t)j * nkv + g;
            const int end = d->seq_start[d->tok_seq[j] + 1];
            const float *kj = k + krow * hd, *vj = v + krow * hd;
            float *dkj = dk + krow * hd, *dvj = dv + krow * hd;
            memset(dkj, 0, (size_t)hd * sizeof *dkj);
            memset(dvj, 0, (size_t)hd * sizeof *dvj);
            for (int h = g * group; h < (g + 1) * group; h++) {
                for (int t = j; t < end; t++) {
                    const size_t row = (size_t)t * nh + h;
                    const float *qh = q + row * hd, *doh = dout + row * hd;
                    float P = expf(dot_f32(qh, kj, hd) * scale - lse[row]);
                    float ds = P * (dot_f32(doh, vj, hd) - D[row]) * scale;
#pragma omp simd
                    for (int i = 0; i < hd; i++) {
                        dvj[i] += P * doh[i];
                        dkj[i] += ds * qh[i];
                    }
                }
            }
        }
    }
    free(D);
    return TSR_OK;
}

/* ---- vocabulary-parallel cross-entropy ---------------------------------------------- */

tsr_status tsr_cpu_ce_rowmax(tsr_backend *b, float *rowmax, const void *logitsv, int n, int V) {
    (void)b;
    TSR_TRY(check_sizes("ce_rowmax", n, V, 0, 0));
    const float *logits = logitsv;
#pragma omp parallel for if ((long)n * V > PAR_WORK)
    for (int t = 0; t < n; t++) {
        const float *l = logits + (size_t)t * V;
        float mx = -INFINITY;
        for (int j = 0; j < V; j++)
            mx = l[j] > mx ? l[j] : mx;
        rowmax[t] = mx;
    }
    return TSR_OK;
}

/* The column of this slice holding target `tg`, or -1 when another slice
 * owns it or the row has no target. */
static inline long owned_col(int32_t tg, int V, int row0) {
    long c = (long)tg - row0;
    return tg >= 0 && c >= 0 && c < V ? c : -1;
}

tsr_status tsr_cpu_ce_sums(tsr_backend *b, float *sumexp, float *tlogit, const void *logitsv,
                           const float *rowmax, const int32_t *target, int n, int V, int row0) {
    (void)b;
    TSR_TRY(check_sizes("ce_sums", n, V, 0, 0));
    const float *logits = logitsv;
#pragma omp parallel for if ((long)n * V > PAR_WORK)
    for (int t = 0; t < n; t++) {
        const float *l = logits + (size_t)t * V;
        const float mx = rowmax[t];
        double s = 0;
        for (int j = 0; j < V; j++)
            s += expf(l[j] - mx);
        sumexp[t] = (float)s;
        long c = owned_col(target[t], V, row0);
        tlogit[t] = c >= 0 ? l[c] : 0.0f;
    }
    return TSR_OK;
}

tsr_status tsr_cpu_ce_grad(tsr_backend *b, void *dlogitsv, const void *logitsv, const float *rowmax,
                           const float *sumexp, const int32_t *target, const float *weight, int n,
                           int V, int row0) {
    (void)b;
    TSR_TRY(check_sizes("ce_grad", n, V, 0, 0));
    float *dl = dlogitsv;
    const float *logits = logitsv;
#pragma omp parallel for if ((long)n * V > PAR_WORK)
    for (int t = 0; t < n; t++) {
        const float *l = logits + (size_t)t * V;
        float *g = dl + (size_t)t * V;
        const float w = weight[t];
        if (target[t] < 0 || w == 0.0f) {
            memset(g, 0, (size_t)V * sizeof *g); /* dl may alias l: no read after this */
            continue;
        }
        const float mx = rowmax[t], c = w / sumexp[t];
        for (int j = 0; j < V; j++)
            g[j] = expf(l[j] - mx) * c;
        long col = owned_col(target[t], V, row0);
        if (col >= 0)
            g[col] -= w;
    }
    return TSR_OK;
}

/* ---- optimizer and f32 helpers --------------------------------------------------------- */

tsr_status tsr_cpu_adamw(tsr_backend *b, float *p, const float *g, float *m, float *v, size_t n,
                         const tsr_adamw_params *h, int t) {
    (void)b;
    if (t < 1)
        return tsr_error_set(TSR_ERR_INVALID, "cpu adamw: step %d (must be >= 1)", t);
    /* Element-wise in double, state stored back in f32. */
    const double b1 = h->beta1, b2 = h->beta2, lr = h->lr, eps = h->eps, wd = h->weight_decay;
    const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
#pragma omp parallel for if (n > PAR_WORK)
    for (size_t i = 0; i < n; i++) {
        double gi = g[i], pi = p[i];
        double mi = b1 * m[i] + (1.0 - b1) * gi;
        double vi = b2 * v[i] + (1.0 - b2) * gi * gi;
        m[i] = (float)mi;
        v[i] = (float)vi;
        p[i] = (float)(pi - lr * ((mi / bc1) / (sqrt(vi / bc2) + eps) + wd * pi));
    }
    return TSR_OK;
}

tsr_status tsr_cpu_sumsq(tsr_backend *b, double *out, const float *x, size_t n) {
    (void)b;
    double s = 0;
#pragma omp parallel for reduction(+ : s) if (n > PAR_WORK)
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    *out = s;
    return TSR_OK;
}

tsr_status tsr_cpu_scale_f32(tsr_backend *b, float *x, size_t n, float s) {
    (void)b;
#pragma omp parallel for if (n > PAR_WORK)
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
    return TSR_OK;
}

/* ---- LoRA dropout ------------------------------------------------------------------ */

tsr_status tsr_cpu_lora_dropout(tsr_backend *b, void *outv, const void *xv, int n, int d,
                                const tsr_lora_dropout_desc *dd, int accumulate) {
    (void)b;
    TSR_TRY(check_sizes("lora_dropout", n, d, dd->row0, dd->col0));
    if (!(dd->p >= 0.0f && dd->p < 1.0f))
        return tsr_error_set(TSR_ERR_INVALID, "cpu lora_dropout: p = %g (must be in [0, 1))",
                             (double)dd->p);
    float *out = outv;
    const float *x = xv;
    const uint64_t stream = tsr_lora_dropout_stream(dd->seed, dd->key, dd->layer, dd->target);
    const uint32_t thr = tsr_lora_dropout_threshold(dd->p);
    const float inv = 1.0f / (1.0f - dd->p);
#pragma omp parallel for schedule(static) if ((long)n * d > PAR_WORK)
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * d;
        const float *xi = x + (size_t)i * d;
        for (int j = 0; j < d; j++) {
            const uint32_t bits =
                tsr_lora_dropout_bits(stream, (int64_t)dd->row0 + i, (int64_t)dd->col0 + j);
            const float v = bits < thr ? 0.0f : xi[j] * inv;
            o[j] = accumulate ? o[j] + v : v;
        }
    }
    return TSR_OK;
}

tsr_status tsr_cpu_fill_zero(tsr_backend *b, void *p, size_t bytes) {
    (void)b;
    if (bytes)
        memset(p, 0, bytes);
    return TSR_OK;
}
