/* tests/train/train_ops_driver.c - runs training-op test cases written by
 * Python (tests/train/train_io.py) on a kernel backend and writes the results
 * back, so one NumPy-checked test (test_train_ops.py) covers every backend.
 *
 * usage: train_ops_driver [--backend cpu|cuda] [--act f32|bf16] [--weights bf16|f32]
 *                         [--threads N] IN OUT
 * (--weights: the CUDA backend's weight storage; f32 is its reference-precision
 * mode, with f32 activations only)
 *
 * File format (IN and OUT alike; little-endian, no padding):
 *   "TSRC"  u32 version (1)  u32 n_cases
 *   per case:
 *     str op
 *     u32 n_ints    { str name, i64 value }    * n_ints
 *     u32 n_floats  { str name, f64 value }    * n_floats
 *     u32 n_arrays  { str name, u8 kind, u32 ndim, u64 dims[ndim], data } * n_arrays
 *   str = u32 length + bytes (no NUL). data = prod(dims) elements of the kind:
 *     'a' activation: f32 in the file, the backend's activation type on the
 *         device (act_from_f32 / act_to_f32)
 *     'f' f32 on the device (LoRA parameters, optimizer state, lse, ...)
 *     'i' int32 on the device (positions, targets, sequence tables)
 *     'w' a weight matrix (rows, cols) = dims, f32 in the file, uploaded with
 *         weight_upload (the backend's weight storage); not written back
 *     'd' f64 that stays on the host (sumsq's result)
 * OUT has the same cases in the same order: the op, one int "status" (0: ran,
 * 2: the backend has no such slot), no floats, and every array but the
 * weights as it is after the op (inputs included, so in-place ops and
 * accumulating outputs come back, and inputs the op must not touch can be
 * checked). Every device array carries a guard tail that must survive the op.
 *
 * Ops (int params / float params / arrays; "*" marks arrays the op writes):
 *   matmul         n accumulate / - / x, W(w), y*
 *   matmul_dx      n accumulate / - / dy, W(w), dx*
 *   lora_fwd       n d_in d_out r / scale / x, A(f), B(f), y*, xa*(f)
 *   lora_bwd       n d_in d_out r / scale / dy, x, xa(f), A(f), B(f), dA*(f),
 *                  dB*(f), t*(f), [dx*] (absent: NULL is passed)
 *   rmsnorm        n dim / eps / x, w, y*
 *   rmsnorm_bwd    n dim / eps / dy, x, w, dx*
 *   rope, rope_bwd n n_heads head_dim / - / x* (in place), pos(i), inv_freq(f)
 *   swiglu         n dim / - / gate, up, out*
 *   swiglu_bwd     n dim alias / - / dout, gate, up, dgate*, dup* (alias=1:
 *                  dgate is gate's buffer and dup is up's, results come back
 *                  in gate and up; dgate/dup are then still required, unused)
 *   attn_train_fwd n_tokens n_seqs n_head n_kv_head head_dim / scale /
 *                  q, k, v, seq_start(i), tok_seq(i), out*, lse*(f)
 *   attn_train_bwd the same / scale / q, k, v, out, lse(f), dout, seq_start(i),
 *                  tok_seq(i), dq*, dk*, dv*
 *   ce_rowmax      n V / - / logits, rowmax*(f)
 *   ce_sums        n V row0 / - / logits, rowmax(f), target(i), sumexp*(f), tlogit*(f)
 *   ce_grad        n V row0 alias / - / logits, rowmax(f), sumexp(f), target(i),
 *                  weight(f), dlogits* (alias=1: written into logits' buffer)
 *   adamw          n t0 steps / lr beta1 beta2 eps weight_decay / p*(f),
 *                  m*(f), v*(f), g(f) of steps*n values: step k uses g[k*n..]
 *                  and t = t0 + k
 *   sumsq          n / - / x(f), out*(d, 1 value)
 *   scale_f32      n / s / x*(f)
 *   lora_dropout   n d layer target row0 col0 seed key accumulate inplace / p /
 *                  x, out* (seed and key: the u64 bit patterns as i64;
 *                  inplace=1: out is x's buffer, the result comes back in x)
 *   fill_zero      - / - / x*(a), f*(f) (both zeroed whole)
 *
 * Exits 0 when every case ran (or was unsupported), 1 on a bad file, an op
 * error or a clobbered guard (with a message naming the case), 2 on bad usage,
 * 77 when the requested backend cannot be created here (no CUDA build or GPU).
 *
 * What it is not: a checker. It computes; test_train_ops.py compares. */
#include "kernels/backend.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

enum { MAX_NAME = 64, MAX_PARAMS = 32, MAX_ARRAYS = 32, MAX_DIMS = 4, GUARD = 16 };
enum { STATUS_RAN = 0, STATUS_UNSUPPORTED = 2 };
static const uint32_t VERSION = 1;
/* Elements per array, far above any test and far below size_t overflow. */
static const uint64_t MAX_COUNT = (uint64_t)1 << 34;
/* Exactly representable in bf16, so it survives both activation types. */
static const float GUARD_F32 = 12288.0f;
static const int32_t GUARD_I32 = 0x7eadbeef;
static const double GUARD_F64 = -4.5e300;

typedef struct {
    char name[MAX_NAME];
    char kind;
    uint32_t ndim;
    uint64_t dims[MAX_DIMS];
    size_t count;
    void *host; /* count elements of the file's type (f32, int32 or f64) */
    void *dev;  /* count + GUARD elements on the device ('d': host) */
    tsr_weight w;
} array;

typedef struct {
    int index;
    char op[MAX_NAME];
    int n_ints, n_floats, n_arrays;
    char int_names[MAX_PARAMS][MAX_NAME];
    int64_t ints[MAX_PARAMS];
    char float_names[MAX_PARAMS][MAX_NAME];
    double floats[MAX_PARAMS];
    array arrays[MAX_ARRAYS];
} tcase;

typedef struct {
    tsr_backend *be;
    const char *path;
} ctx;

/* ---- errors: this is a program's main, so it may end the process ---------------- */

static void die(const tcase *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

static void die(const tcase *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "train_ops_driver: ");
    if (c)
        fprintf(stderr, "case %d (%s): ", c->index, c->op);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    const char *msg = tsr_error_msg();
    if (msg[0])
        fprintf(stderr, " [%s]", msg);
    fprintf(stderr, "\n");
    exit(1);
}

#define OK(c, call)                                                                                \
    do {                                                                                           \
        tsr_status ok_s_ = (call);                                                                 \
        if (ok_s_ != TSR_OK)                                                                       \
            die(c, "%s failed: %s", #call, tsr_status_str(ok_s_));                                 \
    } while (0)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p)
        die(NULL, "out of memory (%zu bytes)", n);
    return p;
}

/* ---- reading and writing the format ------------------------------------------------ */

static void rd(FILE *f, void *p, size_t n) {
    if (n && fread(p, 1, n, f) != n)
        die(NULL, "input file truncated");
}

static uint32_t rd_u32(FILE *f) {
    uint32_t v;
    rd(f, &v, sizeof v);
    return v;
}

static void rd_str(FILE *f, char *out) {
    uint32_t n = rd_u32(f);
    if (n >= MAX_NAME)
        die(NULL, "name of %u bytes in the input (max %d)", n, MAX_NAME - 1);
    rd(f, out, n);
    out[n] = '\0';
}

static void wr(FILE *f, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, f) != n)
        die(NULL, "cannot write the output file");
}

static void wr_u32(FILE *f, uint32_t v) { wr(f, &v, sizeof v); }

static void wr_str(FILE *f, const char *s) {
    wr_u32(f, (uint32_t)strlen(s));
    wr(f, s, strlen(s));
}

static size_t elem_size(char kind) {
    switch (kind) {
    case 'a':
    case 'f':
    case 'w': return sizeof(float);
    case 'i': return sizeof(int32_t);
    case 'd': return sizeof(double);
    default: return 0;
    }
}

static void read_case(FILE *f, tcase *c) {
    rd_str(f, c->op);
    c->n_ints = (int)rd_u32(f);
    if (c->n_ints > MAX_PARAMS)
        die(c, "%d int params (max %d)", c->n_ints, MAX_PARAMS);
    for (int i = 0; i < c->n_ints; i++) {
        rd_str(f, c->int_names[i]);
        rd(f, &c->ints[i], sizeof c->ints[i]);
    }
    c->n_floats = (int)rd_u32(f);
    if (c->n_floats > MAX_PARAMS)
        die(c, "%d float params (max %d)", c->n_floats, MAX_PARAMS);
    for (int i = 0; i < c->n_floats; i++) {
        rd_str(f, c->float_names[i]);
        rd(f, &c->floats[i], sizeof c->floats[i]);
    }
    c->n_arrays = (int)rd_u32(f);
    if (c->n_arrays > MAX_ARRAYS)
        die(c, "%d arrays (max %d)", c->n_arrays, MAX_ARRAYS);
    for (int i = 0; i < c->n_arrays; i++) {
        array *a = &c->arrays[i];
        rd_str(f, a->name);
        uint8_t kind;
        rd(f, &kind, 1);
        a->kind = (char)kind;
        if (!elem_size(a->kind))
            die(c, "array %s has unknown kind '%c'", a->name, a->kind);
        a->ndim = rd_u32(f);
        if (a->ndim > MAX_DIMS)
            die(c, "array %s has %u dims (max %d)", a->name, a->ndim, MAX_DIMS);
        a->count = 1;
        for (uint32_t d = 0; d < a->ndim; d++) {
            rd(f, &a->dims[d], sizeof a->dims[d]);
            if (a->count && a->dims[d] > MAX_COUNT / a->count)
                die(c, "array %s is larger than %llu elements", a->name,
                    (unsigned long long)MAX_COUNT);
            a->count *= a->dims[d];
        }
        if (a->kind == 'w' && a->ndim != 2)
            die(c, "weight %s must be 2-D", a->name);
        a->host = xmalloc(a->count * elem_size(a->kind));
        rd(f, a->host, a->count * elem_size(a->kind));
    }
}

static void write_case(FILE *f, const tcase *c, int status) {
    wr_str(f, c->op);
    wr_u32(f, 1);
    wr_str(f, "status");
    int64_t s = status;
    wr(f, &s, sizeof s);
    wr_u32(f, 0);
    uint32_t n = 0;
    for (int i = 0; i < c->n_arrays; i++)
        n += status == STATUS_RAN && c->arrays[i].kind != 'w';
    wr_u32(f, n);
    for (int i = 0; status == STATUS_RAN && i < c->n_arrays; i++) {
        const array *a = &c->arrays[i];
        if (a->kind == 'w')
            continue;
        wr_str(f, a->name);
        uint8_t kind = (uint8_t)a->kind;
        wr(f, &kind, 1);
        wr_u32(f, a->ndim);
        wr(f, a->dims, a->ndim * sizeof a->dims[0]);
        wr(f, a->host, a->count * elem_size(a->kind));
    }
}

/* ---- moving arrays ----------------------------------------------------------------- */

static void upload(tsr_backend *be, tcase *c, array *a) {
    size_t n = a->count;
    switch (a->kind) {
    case 'w':
        OK(c,
           be->iface->weight_upload(be, &a->w, a->host, TSR_F32, (int)a->dims[0], (int)a->dims[1]));
        return;
    case 'd': {
        double *h = xmalloc((n + GUARD) * sizeof *h);
        memcpy(h, a->host, n * sizeof *h);
        for (size_t i = n; i < n + GUARD; i++)
            h[i] = GUARD_F64;
        a->dev = h;
        return;
    }
    case 'i': {
        int32_t *h = xmalloc((n + GUARD) * sizeof *h);
        memcpy(h, a->host, n * sizeof *h);
        for (size_t i = n; i < n + GUARD; i++)
            h[i] = GUARD_I32;
        OK(c, tsr_backend_alloc(be, (n + GUARD) * sizeof *h, a->name, &a->dev));
        OK(c, be->iface->to_device(be, a->dev, h, (n + GUARD) * sizeof *h));
        free(h);
        return;
    }
    default: { /* 'a', 'f' */
        float *h = xmalloc((n + GUARD) * sizeof *h);
        memcpy(h, a->host, n * sizeof *h);
        for (size_t i = n; i < n + GUARD; i++)
            h[i] = GUARD_F32;
        if (a->kind == 'a') {
            OK(c, tsr_backend_alloc(be, (n + GUARD) * tsr_backend_act_size(be), a->name, &a->dev));
            OK(c, be->iface->act_from_f32(be, a->dev, h, n + GUARD));
        } else {
            OK(c, tsr_backend_alloc(be, (n + GUARD) * sizeof *h, a->name, &a->dev));
            OK(c, be->iface->to_device(be, a->dev, h, (n + GUARD) * sizeof *h));
        }
        free(h);
        return;
    }
    }
}

/* Reads a->dev back into a->host and checks the guard tail. */
static void download(tsr_backend *be, tcase *c, array *a) {
    size_t n = a->count, bad = (size_t)-1;
    switch (a->kind) {
    case 'w': return;
    case 'd': {
        double *h = a->dev;
        for (size_t i = 0; i < GUARD && bad == (size_t)-1; i++)
            if (h[n + i] != GUARD_F64)
                bad = n + i;
        memcpy(a->host, h, n * sizeof *h);
        break;
    }
    case 'i': {
        int32_t *h = xmalloc((n + GUARD) * sizeof *h);
        OK(c, be->iface->to_host(be, h, a->dev, (n + GUARD) * sizeof *h));
        for (size_t i = 0; i < GUARD && bad == (size_t)-1; i++)
            if (h[n + i] != GUARD_I32)
                bad = n + i;
        memcpy(a->host, h, n * sizeof *h);
        free(h);
        break;
    }
    default: {
        float *h = xmalloc((n + GUARD) * sizeof *h);
        if (a->kind == 'a')
            OK(c, be->iface->act_to_f32(be, h, a->dev, n + GUARD));
        else
            OK(c, be->iface->to_host(be, h, a->dev, (n + GUARD) * sizeof *h));
        for (size_t i = 0; i < GUARD && bad == (size_t)-1; i++)
            if (h[n + i] != GUARD_F32)
                bad = n + i;
        memcpy(a->host, h, n * sizeof *h);
        free(h);
        break;
    }
    }
    if (bad != (size_t)-1)
        die(c, "array %s: the op wrote past its end (element %zu of %zu)", a->name, bad, n);
}

static void release(tsr_backend *be, array *a) {
    if (a->kind == 'w')
        be->iface->weight_free(be, &a->w);
    else if (a->kind == 'd')
        free(a->dev);
    else
        tsr_backend_free(be, a->dev);
    a->dev = NULL;
    free(a->host);
    a->host = NULL;
}

/* ---- parameter access (a missing or mis-sized one ends the run) ---------------------- */

static int64_t I(const tcase *c, const char *name) {
    for (int i = 0; i < c->n_ints; i++)
        if (!strcmp(c->int_names[i], name))
            return c->ints[i];
    die(c, "missing int param %s", name);
}

static float F(const tcase *c, const char *name) {
    for (int i = 0; i < c->n_floats; i++)
        if (!strcmp(c->float_names[i], name))
            return (float)c->floats[i];
    die(c, "missing float param %s", name);
}

static array *find(tcase *c, const char *name) {
    for (int i = 0; i < c->n_arrays; i++)
        if (!strcmp(c->arrays[i].name, name))
            return &c->arrays[i];
    return NULL;
}

/* The device pointer of array `name`, which must have `kind` and `count`
 * elements; optional arrays that are absent give NULL. */
static void *arr_get(tcase *c, const char *name, char kind, int64_t count, int optional) {
    array *a = find(c, name);
    if (!a) {
        if (optional)
            return NULL;
        die(c, "missing array %s", name);
    }
    if (a->kind != kind)
        die(c, "array %s has kind '%c', want '%c'", name, a->kind, kind);
    if (count < 0 || a->count != (size_t)count)
        die(c, "array %s has %zu elements, want %lld", name, a->count, (long long)count);
    return a->dev;
}
#define A(name, kind, count) arr_get(c, name, kind, count, 0)

static const tsr_weight *W(tcase *c, const char *name, int64_t rows, int64_t cols) {
    A(name, 'w', rows * cols);
    array *a = find(c, name);
    if ((int64_t)a->dims[0] != rows || (int64_t)a->dims[1] != cols)
        die(c, "weight %s is (%llu, %llu), want (%lld, %lld)", name, (unsigned long long)a->dims[0],
            (unsigned long long)a->dims[1], (long long)rows, (long long)cols);
    return &a->w;
}

/* ---- the ops ----------------------------------------------------------------------- */

/* Runs case c; returns STATUS_UNSUPPORTED when the backend lacks the slot. */
#define NEED(slot)                                                                                 \
    do {                                                                                           \
        if (!be->iface->slot)                                                                      \
            return STATUS_UNSUPPORTED;                                                             \
    } while (0)

static int run_case(tsr_backend *be, tcase *c) {
    const char *op = c->op;
    if (!strcmp(op, "matmul") || !strcmp(op, "matmul_dx")) {
        int64_t n = I(c, "n"), acc = I(c, "accumulate");
        array *wa = find(c, "W");
        if (!wa || wa->kind != 'w')
            die(c, "missing weight W");
        int64_t rows = (int64_t)wa->dims[0], cols = (int64_t)wa->dims[1];
        const tsr_weight *w = W(c, "W", rows, cols);
        if (!strcmp(op, "matmul")) {
            NEED(matmul);
            OK(c, be->iface->matmul(be, A("y", 'a', n * rows), A("x", 'a', n * cols), w, (int)n,
                                    (int)acc));
        } else {
            NEED(matmul_dx);
            OK(c, be->iface->matmul_dx(be, A("dx", 'a', n * cols), A("dy", 'a', n * rows), w,
                                       (int)n, (int)acc));
        }
    } else if (!strcmp(op, "lora_fwd") || !strcmp(op, "lora_bwd")) {
        int64_t n = I(c, "n"), din = I(c, "d_in"), dout = I(c, "d_out"), r = I(c, "r");
        float s = F(c, "scale");
        const float *Am = A("A", 'f', r * din), *Bm = A("B", 'f', dout * r);
        if (!strcmp(op, "lora_fwd")) {
            NEED(lora_fwd);
            OK(c, be->iface->lora_fwd(be, A("y", 'a', n * dout), A("x", 'a', n * din), Am, Bm,
                                      A("xa", 'f', n * r), (int)n, (int)din, (int)dout, (int)r, s));
        } else {
            NEED(lora_bwd);
            OK(c, be->iface->lora_bwd(be, arr_get(c, "dx", 'a', n * din, 1), A("dA", 'f', r * din),
                                      A("dB", 'f', dout * r), A("dy", 'a', n * dout),
                                      A("x", 'a', n * din), A("xa", 'f', n * r), Am, Bm,
                                      A("t", 'f', n * r), (int)n, (int)din, (int)dout, (int)r, s));
        }
    } else if (!strcmp(op, "rmsnorm")) {
        NEED(rmsnorm);
        int64_t n = I(c, "n"), dim = I(c, "dim");
        OK(c, be->iface->rmsnorm(be, A("y", 'a', n * dim), A("x", 'a', n * dim), A("w", 'a', dim),
                                 (int)n, (int)dim, F(c, "eps")));
    } else if (!strcmp(op, "rmsnorm_bwd")) {
        NEED(rmsnorm_bwd);
        int64_t n = I(c, "n"), dim = I(c, "dim");
        OK(c, be->iface->rmsnorm_bwd(be, A("dx", 'a', n * dim), A("dy", 'a', n * dim),
                                     A("x", 'a', n * dim), A("w", 'a', dim), (int)n, (int)dim,
                                     F(c, "eps")));
    } else if (!strcmp(op, "rope") || !strcmp(op, "rope_bwd")) {
        int64_t n = I(c, "n"), nh = I(c, "n_heads"), hd = I(c, "head_dim");
        void *x = A("x", 'a', n * nh * hd);
        const int32_t *pos = A("pos", 'i', n);
        const float *inv = A("inv_freq", 'f', hd / 2);
        if (!strcmp(op, "rope")) {
            NEED(rope);
            OK(c, be->iface->rope(be, x, pos, inv, (int)n, (int)nh, (int)hd));
        } else {
            NEED(rope_bwd);
            OK(c, be->iface->rope_bwd(be, x, pos, inv, (int)n, (int)nh, (int)hd));
        }
    } else if (!strcmp(op, "swiglu")) {
        NEED(swiglu);
        int64_t n = I(c, "n"), dim = I(c, "dim");
        OK(c, be->iface->swiglu(be, A("out", 'a', n * dim), A("gate", 'a', n * dim),
                                A("up", 'a', n * dim), (int)n, (int)dim));
    } else if (!strcmp(op, "swiglu_bwd")) {
        NEED(swiglu_bwd);
        int64_t n = I(c, "n"), dim = I(c, "dim"), alias = I(c, "alias");
        void *gate = A("gate", 'a', n * dim), *up = A("up", 'a', n * dim);
        void *dgate = A("dgate", 'a', n * dim), *dup = A("dup", 'a', n * dim);
        OK(c, be->iface->swiglu_bwd(be, alias ? gate : dgate, alias ? up : dup,
                                    A("dout", 'a', n * dim), gate, up, (int)n, (int)dim));
    } else if (!strcmp(op, "attn_train_fwd") || !strcmp(op, "attn_train_bwd")) {
        int64_t nt = I(c, "n_tokens"), ns = I(c, "n_seqs"), nh = I(c, "n_head"),
                nkv = I(c, "n_kv_head"), hd = I(c, "head_dim");
        /* the descriptor's tables are device memory the op reads */
        tsr_attn_train_desc d = {
            .n_tokens = (int)nt,
            .n_seqs = (int)ns,
            .n_head = (int)nh,
            .n_kv_head = (int)nkv,
            .head_dim = (int)hd,
            .scale = F(c, "scale"),
            .seq_start = A("seq_start", 'i', ns + 1),
            .tok_seq = A("tok_seq", 'i', nt),
        };
        const void *q = A("q", 'a', nt * nh * hd), *k = A("k", 'a', nt * nkv * hd),
                   *v = A("v", 'a', nt * nkv * hd);
        if (!strcmp(op, "attn_train_fwd")) {
            NEED(attn_train_fwd);
            OK(c, be->iface->attn_train_fwd(be, A("out", 'a', nt * nh * hd), A("lse", 'f', nt * nh),
                                            q, k, v, &d));
        } else {
            NEED(attn_train_bwd);
            OK(c, be->iface->attn_train_bwd(
                      be, A("dq", 'a', nt * nh * hd), A("dk", 'a', nt * nkv * hd),
                      A("dv", 'a', nt * nkv * hd), A("dout", 'a', nt * nh * hd), q, k, v,
                      A("out", 'a', nt * nh * hd), A("lse", 'f', nt * nh), &d));
        }
    } else if (!strcmp(op, "ce_rowmax")) {
        NEED(ce_rowmax);
        int64_t n = I(c, "n"), V = I(c, "V");
        OK(c,
           be->iface->ce_rowmax(be, A("rowmax", 'f', n), A("logits", 'a', n * V), (int)n, (int)V));
    } else if (!strcmp(op, "ce_sums")) {
        NEED(ce_sums);
        int64_t n = I(c, "n"), V = I(c, "V");
        OK(c, be->iface->ce_sums(be, A("sumexp", 'f', n), A("tlogit", 'f', n),
                                 A("logits", 'a', n * V), A("rowmax", 'f', n), A("target", 'i', n),
                                 (int)n, (int)V, (int)I(c, "row0")));
    } else if (!strcmp(op, "ce_grad")) {
        NEED(ce_grad);
        int64_t n = I(c, "n"), V = I(c, "V");
        void *logits = A("logits", 'a', n * V);
        void *dl = I(c, "alias") ? logits : A("dlogits", 'a', n * V);
        OK(c, be->iface->ce_grad(be, dl, logits, A("rowmax", 'f', n), A("sumexp", 'f', n),
                                 A("target", 'i', n), A("weight", 'f', n), (int)n, (int)V,
                                 (int)I(c, "row0")));
    } else if (!strcmp(op, "adamw")) {
        NEED(adamw);
        int64_t n = I(c, "n"), t0 = I(c, "t0"), steps = I(c, "steps");
        tsr_adamw_params h = {
            .lr = F(c, "lr"),
            .beta1 = F(c, "beta1"),
            .beta2 = F(c, "beta2"),
            .eps = F(c, "eps"),
            .weight_decay = F(c, "weight_decay"),
        };
        float *p = A("p", 'f', n), *m = A("m", 'f', n), *v = A("v", 'f', n);
        const float *g = A("g", 'f', steps * n);
        for (int64_t k = 0; k < steps; k++)
            OK(c, be->iface->adamw(be, p, g + k * n, m, v, (size_t)n, &h, (int)(t0 + k)));
    } else if (!strcmp(op, "sumsq")) {
        NEED(sumsq);
        int64_t n = I(c, "n");
        OK(c, be->iface->sumsq(be, A("out", 'd', 1), A("x", 'f', n), (size_t)n));
    } else if (!strcmp(op, "lora_dropout")) {
        NEED(lora_dropout);
        int64_t n = I(c, "n"), d = I(c, "d");
        tsr_lora_dropout_desc dd = {
            .p = F(c, "p"),
            .seed = (uint64_t)I(c, "seed"),
            .key = (uint64_t)I(c, "key"),
            .layer = (int)I(c, "layer"),
            .target = (int)I(c, "target"),
            .row0 = (int)I(c, "row0"),
            .col0 = (int)I(c, "col0"),
        };
        void *x = A("x", 'a', n * d);
        void *out = I(c, "inplace") ? x : A("out", 'a', n * d);
        OK(c, be->iface->lora_dropout(be, out, x, (int)n, (int)d, &dd, (int)I(c, "accumulate")));
    } else if (!strcmp(op, "fill_zero")) {
        NEED(fill_zero);
        array *x = find(c, "x"), *f = find(c, "f");
        if (!x || x->kind != 'a' || !f || f->kind != 'f')
            die(c, "fill_zero needs arrays x (a) and f (f)");
        OK(c, be->iface->fill_zero(be, x->dev, x->count * tsr_backend_act_size(be)));
        OK(c, be->iface->fill_zero(be, f->dev, f->count * sizeof(float)));
    } else if (!strcmp(op, "scale_f32")) {
        NEED(scale_f32);
        int64_t n = I(c, "n");
        OK(c, be->iface->scale_f32(be, A("x", 'f', n), (size_t)n, F(c, "s")));
    } else {
        die(c, "unknown op");
    }
    OK(c, tsr_backend_sync(be));
    return STATUS_RAN;
}

/* ---- main -------------------------------------------------------------------------- */

static int usage(void) {
    fprintf(stderr, "usage: train_ops_driver [--backend cpu|cuda] [--act f32|bf16] "
                    "[--weights bf16|f32] [--threads N] IN OUT\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *backend = "cpu", *act = "f32", *weights = "bf16", *in_path = NULL, *out_path = NULL;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            backend = argv[++i];
        else if (!strcmp(argv[i], "--act") && i + 1 < argc)
            act = argv[++i];
        else if (!strcmp(argv[i], "--weights") && i + 1 < argc)
            weights = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (argv[i][0] == '-')
            return usage();
        else if (!in_path)
            in_path = argv[i];
        else if (!out_path)
            out_path = argv[i];
        else
            return usage();
    }
    if (!in_path || !out_path)
        return usage();

    tsr_backend *be = NULL;
    if (!strcmp(backend, "cpu")) {
        OK(NULL, tsr_backend_cpu_create(threads, &be));
    } else if (!strcmp(backend, "cuda")) {
        tsr_dtype dt = !strcmp(act, "bf16") ? TSR_BF16 : TSR_F32;
        if (tsr_backend_cuda_device_count() < 1) {
            printf("skipped: no CUDA device (or no CUDA backend in this build)\n");
            return 77;
        }
        tsr_status s =
            tsr_backend_cuda_create(0, dt, !strcmp(weights, "f32") ? TSR_F32 : TSR_BF16, &be);
        if (s == TSR_ERR_UNSUPPORTED) {
            printf("skipped: %s\n", tsr_error_msg());
            return 77;
        }
        OK(NULL, s);
    } else {
        return usage();
    }

    FILE *in = fopen(in_path, "rb");
    if (!in)
        die(NULL, "cannot open %s", in_path);
    char magic[4];
    rd(in, magic, 4);
    if (memcmp(magic, "TSRC", 4) || rd_u32(in) != VERSION)
        die(NULL, "%s is not a version-%u TSRC file", in_path, VERSION);
    uint32_t n_cases = rd_u32(in);
    FILE *out = fopen(out_path, "wb");
    if (!out)
        die(NULL, "cannot create %s", out_path);
    wr(out, "TSRC", 4);
    wr_u32(out, VERSION);
    wr_u32(out, n_cases);

    tcase *c = xmalloc(sizeof *c);
    for (uint32_t k = 0; k < n_cases; k++) {
        memset(c, 0, sizeof *c);
        c->index = (int)k;
        read_case(in, c);
        for (int i = 0; i < c->n_arrays; i++)
            upload(be, c, &c->arrays[i]);
        int status = run_case(be, c);
        if (status == STATUS_RAN)
            for (int i = 0; i < c->n_arrays; i++)
                download(be, c, &c->arrays[i]);
        write_case(out, c, status);
        for (int i = 0; i < c->n_arrays; i++)
            release(be, &c->arrays[i]);
    }
    free(c);
    fclose(in);
    if (fclose(out) != 0)
        die(NULL, "cannot write %s", out_path);
    tsr_backend_destroy(be);
    return 0;
}
