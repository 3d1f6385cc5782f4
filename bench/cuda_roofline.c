/* bench/cuda_roofline.c - the `cuda_roofline` program: what one GPU can do at
 * best, measured on it, so that tsr_bench's CUDA numbers can stand next to a
 * ceiling of the same machine (docs/benchmarks.md, "GPU (CUDA backend)").
 *
 *   cuda_roofline [--gpu 0] [--mib 1024] [--warmup 3] [--reps 10]
 *                 [--model-dims 30,576,1536,192,49152] [--json]
 *
 * What it measures, each as the median of --reps timed repetitions after
 * --warmup untimed ones, timed with cudaEvents on one stream:
 *  - device memory bandwidth: cudaMemcpyAsync device-to-device of a --mib
 *    buffer, counting read + write bytes (2 x size / time). Without nvcc there
 *    is no read-only kernel here; a D2D copy is what the runtime offers from C
 *    (on an H100 80GB HBM3 it gives about 2980 GB/s, 89% of what the memory
 *    clock and bus width imply; the text report prints both);
 *  - bf16 GEMM rate through cuBLASLt (bf16 A, B and D, f32 compute and
 *    scale): 8192 x 8192 x 8192, the compute ceiling, and the GEMMs of one
 *    decode or prefill step of the model given by --model-dims (layers, C,
 *    FFN, KV width, vocabulary; the default is SmolLM2-135M) for m = 1..64 and
 *    512 tokens: y(m, n) = x(m, k) W(n, k)^T, the CUDA backend's layout. For
 *    the small shapes each repetition runs enough calls to last ~2 ms, and the
 *    weight matrix rotates over copies that together exceed 4x the L2 cache, so
 *    that every call reads its weights from device memory as a decode step
 *    does (each layer's weights are read once per step). The activations stay
 *    in L2, as they would. Each shape is timed twice: launched back to back
 *    on the stream (what an engine that launches every GEMM sees, host cost
 *    included) and replayed from a CUDA graph of the same calls (the device's
 *    time alone);
 *  - from those, per m, the time of the GEMMs of one whole step (every layer's
 *    Q, K, V, O, gate, up, down and the LM head): a GEMM-only ceiling on the
 *    step rate at that batch.
 *
 * What it is not: no attention, norms or other kernels, no launch-overhead
 * model beyond what back-to-back cuBLASLt calls show, no multi-GPU. Exits 77
 * when there is no usable GPU (cudaGetDeviceCount fails or finds none), so
 * scripts can tell "skipped" from "failed". Results go to stdout (text, or one
 * JSON object with --json); errors to stderr. */
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "base/rng.h"

#define MAX_REPS 1000
#define EXIT_SKIP 77

/* ---- checks: the statement, file:line, host and the library's own words ---- */

static void report_failure(const char *lib, const char *stmt, const char *file, int line,
                           const char *name, const char *msg) {
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    fprintf(stderr, "cuda_roofline: [%s] %s:%d: %s failed: %s: %s (%s)\n", host, file, line, stmt,
            lib, msg, name);
}

/* On failure: report and jump to `label` (CUDA_CHECK, CUBLAS_CHECK: to the
 * function's `cleanup`, with its status still the failure's). */
#define CUDA_CHECK_TO(call, label)                                                                 \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            report_failure("CUDA", #call, __FILE__, __LINE__, cudaGetErrorName(e_),                \
                           cudaGetErrorString(e_));                                                \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

#define CUBLAS_CHECK_TO(call, label)                                                               \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            report_failure("cuBLASLt", #call, __FILE__, __LINE__, cublasLtGetStatusName(s_),       \
                           cublasLtGetStatusString(s_));                                           \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

#define CUDA_CHECK(call) CUDA_CHECK_TO(call, cleanup)
#define CUBLAS_CHECK(call) CUBLAS_CHECK_TO(call, cleanup)

/* ---- options ---- */

typedef struct {
    int gpu;
    int mib;                                    /* bandwidth buffer size */
    int warmup, reps;                           /* per measurement */
    int n_layer, n_embd, n_ff, kv_dim, n_vocab; /* --model-dims */
    int json;
} options;

static void usage(FILE *f) {
    fputs("usage: cuda_roofline [options]\n"
          "\n"
          "  --gpu N                 CUDA device (default 0)\n"
          "  --mib M                 bandwidth test buffer in MiB (default 1024)\n"
          "  --warmup W              untimed repetitions per measurement (default 3)\n"
          "  --reps R                timed repetitions per measurement; median reported\n"
          "                          (default 10)\n"
          "  --model-dims L,C,F,KV,V layers, hidden size, FFN size, KV width (kv heads x\n"
          "                          head dim) and vocabulary of the model whose step GEMMs\n"
          "                          are timed\n"
          "                          (default 30,576,1536,192,49152: SmolLM2-135M)\n"
          "  --json                  print one JSON object instead of text\n"
          "\n"
          "Exits 77 when no CUDA device is usable.\n",
          f);
}

static int parse_int(const char *s, const char *flag, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "cuda_roofline: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo,
                hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_dims(const char *s, options *o) {
    int v[5];
    char extra;
    if (sscanf(s, "%d,%d,%d,%d,%d%c", &v[0], &v[1], &v[2], &v[3], &v[4], &extra) != 5 || v[0] < 1 ||
        v[1] < 1 || v[2] < 1 || v[3] < 1 || v[4] < 1) {
        fprintf(stderr,
                "cuda_roofline: --model-dims expects L,C,F,KV,V (five positive integers), "
                "got '%s'\n",
                s);
        return -1;
    }
    o->n_layer = v[0];
    o->n_embd = v[1];
    o->n_ff = v[2];
    o->kv_dim = v[3];
    o->n_vocab = v[4];
    return 0;
}

enum { OPT_GPU = 256, OPT_MIB, OPT_WARMUP, OPT_REPS, OPT_DIMS, OPT_JSON, OPT_HELP };

/* Returns 0 to go on, 1 when --help was printed, -1 on a bad command line. */
static int parse_options(int argc, char **argv, options *o) {
    static const struct option longopts[] = {
        {"gpu", required_argument, 0, OPT_GPU},
        {"mib", required_argument, 0, OPT_MIB},
        {"warmup", required_argument, 0, OPT_WARMUP},
        {"reps", required_argument, 0, OPT_REPS},
        {"model-dims", required_argument, 0, OPT_DIMS},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0},
    };
    *o = (options){.mib = 1024,
                   .warmup = 3,
                   .reps = 10,
                   .n_layer = 30,
                   .n_embd = 576,
                   .n_ff = 1536,
                   .kv_dim = 192,
                   .n_vocab = 49152};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case OPT_GPU: r = parse_int(optarg, "--gpu", 0, 1023, &o->gpu); break;
        case OPT_MIB: r = parse_int(optarg, "--mib", 1, 1 << 18, &o->mib); break;
        case OPT_WARMUP: r = parse_int(optarg, "--warmup", 0, 1000, &o->warmup); break;
        case OPT_REPS: r = parse_int(optarg, "--reps", 1, MAX_REPS, &o->reps); break;
        case OPT_DIMS: r = parse_dims(optarg, o); break;
        case OPT_JSON: o->json = 1; break;
        case OPT_HELP: usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
        if (r)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "cuda_roofline: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

/* ---- small helpers ---- */

/* Median, min and max of v[0..n) (v is sorted in place). */
static void summarize(double *v, int n, double *median, double *min, double *max) {
    qsort(v, (size_t)n, sizeof *v, tsr_bench_cmp_double);
    *min = v[0];
    *max = v[n - 1];
    *median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Fills `bytes` of device memory with bf16 values uniform in [-1, 1), tiling
 * one 16 MiB host pattern (not zeros: a GPU's clocks depend on the data). */
static int fill_random_bf16(void *dev, size_t bytes) {
    const size_t tile = (size_t)16 << 20;
    uint16_t *h = malloc(tile);
    if (!h) {
        fprintf(stderr, "cuda_roofline: out of host memory\n");
        return -1;
    }
    uint64_t rng = 0x5eedULL;
    for (size_t i = 0; i < tile / 2; i++) {
        float f = (float)((double)(tsr_splitmix64(&rng) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        h[i] = (uint16_t)(u >> 16);
    }
    int rc = -1;
    for (size_t off = 0; off < bytes; off += tile) {
        size_t n = bytes - off < tile ? bytes - off : tile;
        CUDA_CHECK(cudaMemcpy((char *)dev + off, h, n, cudaMemcpyHostToDevice));
    }
    rc = 0;
cleanup:
    free(h);
    return rc;
}

/* ---- the device ---- */

typedef struct {
    char name[256];
    int major, minor, sms;
    size_t mem_bytes;
    int l2_bytes;
    int mem_clock_khz, bus_bits; /* 0 when the driver does not say */
    double peak_gbs;             /* 2 (DDR) x clock x bus width, 0 when unknown */
    int runtime_version, driver_version;
    size_t cublaslt_version;
} device_info;

static int device_query(int gpu, device_info *d) {
    memset(d, 0, sizeof *d);
    struct cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, gpu));
    snprintf(d->name, sizeof d->name, "%s", p.name);
    d->major = p.major;
    d->minor = p.minor;
    d->sms = p.multiProcessorCount;
    d->mem_bytes = p.totalGlobalMem;
    d->l2_bytes = p.l2CacheSize;
    if (cudaDeviceGetAttribute(&d->mem_clock_khz, cudaDevAttrMemoryClockRate, gpu) != cudaSuccess)
        d->mem_clock_khz = 0;
    if (cudaDeviceGetAttribute(&d->bus_bits, cudaDevAttrGlobalMemoryBusWidth, gpu) != cudaSuccess)
        d->bus_bits = 0;
    (void)cudaGetLastError(); /* an attribute the driver lacks is not an error here */
    d->peak_gbs = 2.0 * d->mem_clock_khz * 1e3 * (d->bus_bits / 8.0) / 1e9;
    CUDA_CHECK(cudaRuntimeGetVersion(&d->runtime_version));
    CUDA_CHECK(cudaDriverGetVersion(&d->driver_version));
    d->cublaslt_version = cublasLtGetVersion();
    return 0;
cleanup: /* nothing to free */
    return -1;
}

/* ---- (a) memory bandwidth ---- */

typedef struct {
    size_t bytes; /* copied per repetition */
    double ms[MAX_REPS];
    double ms_median, gbs, gbs_min, gbs_max; /* read + write */
} bandwidth_result;

static int measure_bandwidth(const options *o, cudaStream_t stream, bandwidth_result *r) {
    void *src = NULL, *dst = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    int rc = -1;
    memset(r, 0, sizeof *r);
    r->bytes = (size_t)o->mib << 20;
    CUDA_CHECK(cudaMalloc(&src, r->bytes));
    CUDA_CHECK(cudaMalloc(&dst, r->bytes));
    CUDA_CHECK(cudaMemset(src, 0x3c, r->bytes));
    CUDA_CHECK(cudaMemset(dst, 0, r->bytes));
    CUDA_CHECK(cudaEventCreate(&t0));
    CUDA_CHECK(cudaEventCreate(&t1));
    for (int i = 0; i < o->warmup + o->reps; i++) {
        CUDA_CHECK(cudaEventRecord(t0, stream));
        CUDA_CHECK(cudaMemcpyAsync(dst, src, r->bytes, cudaMemcpyDeviceToDevice, stream));
        CUDA_CHECK(cudaEventRecord(t1, stream));
        CUDA_CHECK(cudaEventSynchronize(t1));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
        if (i >= o->warmup)
            r->ms[i - o->warmup] = ms;
    }
    double sorted[MAX_REPS], mn, mx;
    memcpy(sorted, r->ms, (size_t)o->reps * sizeof *sorted);
    summarize(sorted, o->reps, &r->ms_median, &mn, &mx);
    r->gbs = 2.0 * r->bytes / (r->ms_median * 1e-3) / 1e9;
    r->gbs_min = 2.0 * r->bytes / (mx * 1e-3) / 1e9;
    r->gbs_max = 2.0 * r->bytes / (mn * 1e-3) / 1e9;
    rc = 0;
cleanup:
    if (t0)
        cudaEventDestroy(t0);
    if (t1)
        cudaEventDestroy(t1);
    cudaFree(src);
    cudaFree(dst);
    return rc;
}

/* ---- (b) bf16 GEMMs through cuBLASLt ---- */

/* One GEMM y(m, n) = x(m, k) W(n, k)^T, row-major, as the backend's matmul:
 * in cuBLASLt's column-major terms D(n, m) = op(A)(n, k) B(k, m) with A = W
 * stored (k, n) and op = transpose ("TN"). */
typedef struct {
    const char *name; /* which projection of the model, or "peak" */
    int m, n, k;
    int copies;      /* weight copies rotated over */
    int iters;       /* calls per timed repetition */
    double us;       /* median time of one call, launched back to back on the stream */
    double tflops;   /* 2 m n k / us */
    double gbs;      /* (A + B + D bytes) / us */
    double us_graph; /* the same calls captured in a CUDA graph and replayed: the
                         device's time without the host's launch cost between calls */
    double tflops_graph, gbs_graph;
} gemm_result;

typedef struct {
    cublasLtHandle_t lt;
    cudaStream_t stream;
    void *workspace;
    size_t workspace_bytes;
    size_t rotate_bytes; /* the weight copies of a small GEMM span at least this */
} gemm_ctx;

static int measure_gemm(const options *o, gemm_ctx *g, gemm_result *r) {
    int rc = -1;
    void *a = NULL, *b = NULL, *d = NULL;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    int capturing = 0;
    const int m = r->m, n = r->n, k = r->k;
    const size_t a_bytes = (size_t)n * k * 2, a_stride = (a_bytes + 255) / 256 * 256;
    const size_t b_bytes = (size_t)k * m * 2, d_bytes = (size_t)n * m * 2;

    r->copies = a_bytes >= g->rotate_bytes ? 1 : (int)((g->rotate_bytes + a_bytes - 1) / a_bytes);
    CUDA_CHECK(cudaMalloc(&a, a_stride * r->copies));
    CUDA_CHECK(cudaMalloc(&b, b_bytes));
    CUDA_CHECK(cudaMalloc(&d, d_bytes));
    if (fill_random_bf16(a, a_stride * r->copies) || fill_random_bf16(b, b_bytes))
        goto cleanup;
    CUDA_CHECK(cudaMemset(d, 0, d_bytes));

    CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, (uint64_t)k, (uint64_t)m, k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, (uint64_t)n, (uint64_t)m, n));
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = g->workspace_bytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(g->lt, op, la, lb, ld, ld, pref, 1, &heur, &found));
    if (found < 1) {
        fprintf(stderr,
                "cuda_roofline: cuBLASLt has no algorithm for the bf16 GEMM m=%d n=%d k=%d\n", m, n,
                k);
        goto cleanup;
    }
    CUDA_CHECK(cudaEventCreate(&t0));
    CUDA_CHECK(cudaEventCreate(&t1));

    const float alpha = 1.0f, beta = 0.0f;
    long call = 0;
#define GEMM_CALL_TO(label)                                                                        \
    CUBLAS_CHECK_TO(cublasLtMatmul(g->lt, op, &alpha,                                              \
                                   (char *)a + (size_t)(call++ % r->copies) * a_stride, la, b, lb, \
                                   &beta, d, ld, d, ld, &heur.algo, g->workspace,                  \
                                   g->workspace_bytes, g->stream),                                 \
                    label)
#define GEMM_CALL() GEMM_CALL_TO(cleanup)

    /* calibration (untimed, doubles as the first warm-up): calls per ~2 ms */
    float ms;
    GEMM_CALL();
    CUDA_CHECK(cudaEventRecord(t0, g->stream));
    for (int i = 0; i < 8; i++)
        GEMM_CALL();
    CUDA_CHECK(cudaEventRecord(t1, g->stream));
    CUDA_CHECK(cudaEventSynchronize(t1));
    CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
    double per_call = ms / 8.0;
    r->iters = per_call >= 2.0 ? 1 : (int)(2.0 / (per_call > 1e-4 ? per_call : 1e-4));
    if (r->iters > 4096)
        r->iters = 4096;
    if (r->iters < 1)
        r->iters = 1;

    double samples[MAX_REPS];
    for (int rep = 0; rep < o->warmup + o->reps; rep++) {
        CUDA_CHECK(cudaEventRecord(t0, g->stream));
        for (int i = 0; i < r->iters; i++)
            GEMM_CALL();
        CUDA_CHECK(cudaEventRecord(t1, g->stream));
        CUDA_CHECK(cudaEventSynchronize(t1));
        CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
        if (rep >= o->warmup)
            samples[rep - o->warmup] = 1e3 * ms / r->iters;
    }
    double mn, mx;
    summarize(samples, o->reps, &r->us, &mn, &mx);

    double flop = 2.0 * m * n * (double)k, bytes = (double)(a_bytes + b_bytes + d_bytes);
    r->tflops = flop / (r->us * 1e-6) / 1e12;
    r->gbs = bytes / (r->us * 1e-6) / 1e9;

    /* The same iters calls captured once and replayed as a graph. Optional:
     * when capture fails the stream timing stands alone (graph fields 0). */
    CUDA_CHECK_TO(cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal), graph_fail);
    capturing = 1;
    for (int i = 0; i < r->iters; i++)
        GEMM_CALL_TO(graph_fail);
    capturing = 0;
    CUDA_CHECK_TO(cudaStreamEndCapture(g->stream, &graph), graph_fail);
    CUDA_CHECK_TO(cudaGraphInstantiate(&exec, graph, 0), graph_fail);
    for (int rep = 0; rep < o->warmup + o->reps; rep++) {
        CUDA_CHECK_TO(cudaEventRecord(t0, g->stream), graph_fail);
        CUDA_CHECK_TO(cudaGraphLaunch(exec, g->stream), graph_fail);
        CUDA_CHECK_TO(cudaEventRecord(t1, g->stream), graph_fail);
        CUDA_CHECK_TO(cudaEventSynchronize(t1), graph_fail);
        CUDA_CHECK_TO(cudaEventElapsedTime(&ms, t0, t1), graph_fail);
        if (rep >= o->warmup)
            samples[rep - o->warmup] = 1e3 * ms / r->iters;
    }
    summarize(samples, o->reps, &r->us_graph, &mn, &mx);
    r->tflops_graph = flop / (r->us_graph * 1e-6) / 1e12;
    r->gbs_graph = bytes / (r->us_graph * 1e-6) / 1e9;
    rc = 0;
    goto cleanup;
graph_fail:
    if (capturing) { /* a call failed during capture: end it and drop what was captured */
        cudaGraph_t partial = NULL;
        cudaStreamEndCapture(g->stream, &partial);
        if (partial)
            cudaGraphDestroy(partial);
    }
    (void)cudaGetLastError();
    fprintf(stderr,
            "cuda_roofline: m=%d n=%d k=%d: no CUDA graph timing (above); the stream "
            "timing stands alone\n",
            m, n, k);
    r->us_graph = r->tflops_graph = r->gbs_graph = 0;
    rc = 0;
#undef GEMM_CALL
#undef GEMM_CALL_TO
cleanup:
    if (exec)
        cudaGraphExecDestroy(exec);
    if (graph)
        cudaGraphDestroy(graph);
    if (t0)
        cudaEventDestroy(t0);
    if (t1)
        cudaEventDestroy(t1);
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (ld)
        cublasLtMatrixLayoutDestroy(ld);
    if (op)
        cublasLtMatmulDescDestroy(op);
    cudaFree(a);
    cudaFree(b);
    cudaFree(d);
    return rc;
}

/* The distinct weight shapes of one layer and the head, and how many times a
 * step applies each. */
typedef struct {
    const char *name;
    int n, k;
    int per_layer; /* 0: once per step (the head) */
} proj_shape;

static const int k_tokens[] = {1, 2, 4, 8, 16, 32, 64, 512};
#define N_TOKENS ((int)(sizeof k_tokens / sizeof k_tokens[0]))
#define N_PROJ 5

static void model_shapes(const options *o, proj_shape s[N_PROJ]) {
    s[0] = (proj_shape){"q,o", o->n_embd, o->n_embd, 2};
    s[1] = (proj_shape){"k,v", o->kv_dim, o->n_embd, 2};
    s[2] = (proj_shape){"gate,up", o->n_ff, o->n_embd, 2};
    s[3] = (proj_shape){"down", o->n_embd, o->n_ff, 1};
    s[4] = (proj_shape){"lm_head", o->n_vocab, o->n_embd, 0};
}

/* ---- output ---- */

typedef struct {
    int m;
    double ms;                    /* GEMMs of one step, launched back to back */
    double tok_s;                 /* m / ms */
    double ms_graph, tok_s_graph; /* the same from the graph replays */
} step_result;

static void json_gemm(FILE *f, const gemm_result *r) {
    fputs("{\"name\": ", f);
    tsr_bench_json_string(f, r->name);
    fprintf(f,
            ", \"m\": %d, \"n\": %d, \"k\": %d, \"copies\": %d, \"iters\": %d, \"us\": %.3f"
            ", \"tflops\": %.3f, \"gbs\": %.1f, \"us_graph\": %.3f, \"tflops_graph\": %.3f"
            ", \"gbs_graph\": %.1f}",
            r->m, r->n, r->k, r->copies, r->iters, r->us, r->tflops, r->gbs, r->us_graph,
            r->tflops_graph, r->gbs_graph);
}

static void print_json(const options *o, const device_info *d, const bandwidth_result *bw,
                       const gemm_result *peak, const gemm_result *g, int n_g,
                       const step_result *steps) {
    FILE *f = stdout;
    fputs("{\"tool\": \"cuda_roofline\", \"device\": {\"index\": ", f);
    fprintf(f, "%d, \"name\": ", o->gpu);
    tsr_bench_json_string(f, d->name);
    fprintf(f,
            ", \"sm\": \"%d.%d\", \"sms\": %d, \"mem_bytes\": %zu, \"l2_bytes\": %d"
            ", \"mem_clock_khz\": %d, \"bus_bits\": %d, \"peak_gbs\": %.1f"
            ", \"cuda_runtime\": %d, \"cuda_driver\": %d, \"cublaslt\": %zu}",
            d->major, d->minor, d->sms, d->mem_bytes, d->l2_bytes, d->mem_clock_khz, d->bus_bits,
            d->peak_gbs, d->runtime_version, d->driver_version, d->cublaslt_version);
    fprintf(f, ", \"warmup\": %d, \"reps\": %d", o->warmup, o->reps);
    fprintf(f,
            ", \"bandwidth\": {\"method\": \"cudaMemcpyAsync D2D, read+write bytes\""
            ", \"bytes\": %zu"
            ", \"ms\": %.4f, \"gbs\": %.1f, \"gbs_min\": %.1f, \"gbs_max\": %.1f, \"reps_ms\": [",
            bw->bytes, bw->ms_median, bw->gbs, bw->gbs_min, bw->gbs_max);
    for (int i = 0; i < o->reps; i++)
        fprintf(f, "%s%.4f", i ? ", " : "", bw->ms[i]);
    fputs("]}, \"gemm_peak\": ", f);
    json_gemm(f, peak);
    fprintf(f,
            ", \"model_dims\": {\"n_layer\": %d, \"n_embd\": %d, \"n_ff\": %d, \"kv_dim\": %d"
            ", \"n_vocab\": %d}, \"gemm\": [",
            o->n_layer, o->n_embd, o->n_ff, o->kv_dim, o->n_vocab);
    for (int i = 0; i < n_g; i++) {
        fputs(i ? ", " : "", f);
        json_gemm(f, &g[i]);
    }
    fputs("], \"step_gemm\": [", f);
    for (int i = 0; i < N_TOKENS; i++)
        fprintf(f,
                "%s{\"m\": %d, \"ms\": %.4f, \"tok_s\": %.1f, \"ms_graph\": %.4f"
                ", \"tok_s_graph\": %.1f}",
                i ? ", " : "", steps[i].m, steps[i].ms, steps[i].tok_s, steps[i].ms_graph,
                steps[i].tok_s_graph);
    fputs("]}\n", f);
}

static void print_text(const options *o, const device_info *d, const bandwidth_result *bw,
                       const gemm_result *peak, const gemm_result *g, int n_g,
                       const step_result *steps) {
    printf("device     %d: %s, sm %d.%d, %d SMs, %.1f GiB, L2 %.0f MiB, CUDA runtime %d driver %d, "
           "cuBLASLt %zu\n",
           o->gpu, d->name, d->major, d->minor, d->sms, d->mem_bytes / 1073741824.0,
           d->l2_bytes / 1048576.0, d->runtime_version, d->driver_version, d->cublaslt_version);
    printf("method     median of %d reps after %d warm-ups, cudaEvents on one stream\n", o->reps,
           o->warmup);
    printf("bandwidth  %.1f GB/s (read + write; min %.1f, max %.1f) copying %zu MiB device to "
           "device",
           bw->gbs, bw->gbs_min, bw->gbs_max, bw->bytes >> 20);
    if (d->peak_gbs > 0)
        printf("; %.0f%% of the %.0f GB/s the memory clock and bus imply",
               100 * bw->gbs / d->peak_gbs, d->peak_gbs);
    printf("\n");
    printf("bf16 GEMM  %.1f TFLOP/s at %d x %d x %d (cuBLASLt, f32 compute)\n", peak->tflops,
           peak->m, peak->n, peak->k);
    printf("\nGEMMs of the model (L=%d C=%d FF=%d KV=%d V=%d): y(m, n) = x(m, k) W(n, k)^T, "
           "weights rotated past L2\n",
           o->n_layer, o->n_embd, o->n_ff, o->kv_dim, o->n_vocab);
    printf("(stream: calls launched back to back; graph: the same calls replayed from a CUDA "
           "graph)\n");
    printf("%-8s %5s %6s %5s | %10s %9s %9s | %10s %9s %9s\n", "proj", "m", "n", "k", "us/call",
           "TFLOP/s", "GB/s", "graph us", "TFLOP/s", "GB/s");
    for (int i = 0; i < n_g; i++)
        printf("%-8s %5d %6d %5d | %10.2f %9.2f %9.1f | %10.2f %9.2f %9.1f\n", g[i].name, g[i].m,
               g[i].n, g[i].k, g[i].us, g[i].tflops, g[i].gbs, g[i].us_graph, g[i].tflops_graph,
               g[i].gbs_graph);
    printf("\nGEMMs of one whole step (every layer's projections and the head), per batch "
           "size m\n");
    printf("%5s | %10s %12s | %10s %12s\n", "m", "ms/step", "tok/s", "graph ms", "tok/s");
    for (int i = 0; i < N_TOKENS; i++)
        printf("%5d | %10.4f %12.1f | %10.4f %12.1f\n", steps[i].m, steps[i].ms, steps[i].tok_s,
               steps[i].ms_graph, steps[i].tok_s_graph);
}

/* ---- main ---- */

int main(int argc, char **argv) {
    options o;
    int r = parse_options(argc, argv, &o);
    if (r)
        return r > 0 ? 0 : 2;

    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        fprintf(stderr, "cuda_roofline: no usable CUDA device (%s); skipping\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found none");
        return EXIT_SKIP;
    }
    if (o.gpu >= count) {
        fprintf(stderr, "cuda_roofline: --gpu %d, but this machine has %d CUDA device%s\n", o.gpu,
                count, count == 1 ? "" : "s");
        return 2;
    }

    int rc = 1;
    device_info dev;
    bandwidth_result *bw = calloc(1, sizeof *bw);
    gemm_result peak = {.name = "peak", .m = 8192, .n = 8192, .k = 8192};
    gemm_result g[N_PROJ * N_TOKENS];
    step_result steps[N_TOKENS];
    gemm_ctx gc = {0};
    proj_shape shapes[N_PROJ];
    int n_g = 0;
    if (!bw) {
        fprintf(stderr, "cuda_roofline: out of host memory\n");
        return 1;
    }
    CUDA_CHECK(cudaSetDevice(o.gpu));
    if (device_query(o.gpu, &dev))
        goto cleanup;
    CUDA_CHECK(cudaStreamCreateWithFlags(&gc.stream, cudaStreamNonBlocking));
    if (measure_bandwidth(&o, gc.stream, bw))
        goto cleanup;

    CUBLAS_CHECK(cublasLtCreate(&gc.lt));
    gc.workspace_bytes = (size_t)32 << 20;
    CUDA_CHECK(cudaMalloc(&gc.workspace, gc.workspace_bytes));
    gc.rotate_bytes = 4 * (size_t)(dev.l2_bytes > 0 ? dev.l2_bytes : 64 << 20);
    if (measure_gemm(&o, &gc, &peak))
        goto cleanup;

    model_shapes(&o, shapes);
    for (int t = 0; t < N_TOKENS; t++) {
        steps[t] = (step_result){.m = k_tokens[t]};
        int graph_ok = 1;
        for (int s = 0; s < N_PROJ; s++) {
            gemm_result *x = &g[n_g++];
            *x = (gemm_result){
                .name = shapes[s].name, .m = k_tokens[t], .n = shapes[s].n, .k = shapes[s].k};
            if (measure_gemm(&o, &gc, x))
                goto cleanup;
            int times = shapes[s].per_layer ? shapes[s].per_layer * o.n_layer : 1;
            steps[t].ms += times * x->us * 1e-3;
            steps[t].ms_graph += times * x->us_graph * 1e-3;
            graph_ok = graph_ok && x->us_graph > 0;
        }
        steps[t].tok_s = steps[t].m / (steps[t].ms * 1e-3);
        if (!graph_ok) /* a shape without graph timing: no graph total */
            steps[t].ms_graph = 0;
        steps[t].tok_s_graph = graph_ok ? steps[t].m / (steps[t].ms_graph * 1e-3) : 0;
    }

    if (o.json)
        print_json(&o, &dev, bw, &peak, g, n_g, steps);
    else
        print_text(&o, &dev, bw, &peak, g, n_g, steps);
    fflush(stdout);
    rc = 0;
cleanup:
    if (gc.lt)
        cublasLtDestroy(gc.lt);
    cudaFree(gc.workspace);
    if (gc.stream)
        cudaStreamDestroy(gc.stream);
    free(bw);
    return rc;
}
