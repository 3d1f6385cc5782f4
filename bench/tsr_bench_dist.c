/* bench/tsr_bench_dist.c - the `tsr_bench_dist` program: throughput and
 * per-rank memory of the engine on a tp x pp grid of ranks (CPU, or one GPU
 * each with --device cuda), run under mpirun (one process per rank).
 *
 *   mpirun -np T*P tsr_bench_dist --model M --tp T --pp P [--threads N]
 *          [--prompt-tokens 256] [--gen-tokens 64] [--batch 1] [--reps 3]
 *          [--decode-prompt 16] [--micro-batches 0] [--comm-iters 200]
 *          [--device cpu|cuda] [--comm mpi|nccl] [--act-dtype bf16|f32]
 *          [--gpu N] [--no-warmup] [--json]
 *
 * What it measures, everything timed on world rank 0 through tsr_engine_step
 * (so descriptor broadcast, every stage's forward, the pipeline sends, the
 * TP all-reduces and the result's trip back to rank 0 are all inside):
 *  - load: tsr_model_file_open + tsr_engine_init on each rank after a
 *    barrier; the maximum over ranks is reported, with every rank's time;
 *  - prefill: one sequence, P prompt ids in one step, TSR_OUT_ARGMAX on the
 *    last row (--prompt-tokens 0 skips it);
 *  - decode: B sequences (--batch) each prefilled (untimed) with D ids, then G
 *    timed steps of B tokens, one per sequence, argmax for each. The rate is
 *    the aggregate B * G / time;
 *  - peak RSS (ru_maxrss) and the RSS at the end of the measurements
 *    (/proc/self/statm) of every rank, gathered to rank 0, next to the f32
 *    weight bytes the shard plan assigns to the rank;
 *  - after the engine has stopped, two collective micro-benchmarks on the
 *    data path's message sizes, through the engine's own data path
 *    (tsr_engine_tp_allreduce / _pp_send / _pp_recv on backend buffers, so a
 *    GPU with --comm mpi includes the copies through the host): the per-call
 *    time of an all-reduce of B * C activations over the TP group (the engine
 *    does 2 per layer per step), and the one-way time of a B * C activation
 *    send between PP stages 0 and 1 (ping-pong).
 * Rates are the median over reps, with min and max, after one untimed warm-up.
 *
 * Prompt ids are the tsr_splitmix64 stream of tsr_bench (seed TSR_BENCH_SEED);
 * decode sequence k starts at id k * D of the stream.
 *
 * What it is not: no tokenizer, no sampling beyond argmax, no correctness
 * check (tests/dist/test_layouts.py checks layouts against one rank), and no
 * data parallelism (world size must be tp * pp). Results go to stdout on rank
 * 0 (text, or one JSON object with --json); errors go to stderr. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/rng.h"
#include "bench/bench_util.h"
#include "runtime/engine/engine.h"

#define TSR_BENCH_SEED 0x7e55e7a5eedULL /* as in tsr_bench.c */

typedef struct {
    const char *model;
    int tp, pp;
    int threads; /* per rank; 0 = cores / ranks on this host, at least 1 */
    int prompt_tokens, gen_tokens, batch, reps, decode_prompt, micro_batches, comm_iters;
    int warmup, json;
    tsr_device device;  /* --device */
    tsr_comm_kind comm; /* --comm */
    int act_dtype, gpu; /* --act-dtype (-1: the device's), --gpu (-1: by local rank) */
} options;

typedef tsr_bench_series series;

/* What rank 0 reports about the job besides the rates. */
typedef struct {
    int world, cores, ranks_on_host, hosts, oversubscribed, threads, micro_batches;
    float *load_s;         /* (world) */
    int32_t *peak_rss_kib; /* (world) ru_maxrss */
    int32_t *end_rss_kib;  /* (world) resident at the end of the measurements */
    double *weight_mib;    /* (world) f32 weight bytes of the rank's shard, from the plan */
    double allreduce_us;   /* per call, B*C floats over the TP group; < 0 when tp == 1 */
    double pp_send_us;     /* one way, B*C floats stage 0 -> 1; < 0 when pp == 1 */
    const char *device;    /* the kernel backend's name: "cpu", "cuda" */
    const char *act_dtype; /* "f32", "bf16" */
    const char *comm;      /* data backend of the tp/pp groups: "mpi", "nccl" */
    int staged;            /* activations cross the host on their way to MPI */
} job_info;

/* A message every rank would print alike: rank 0 speaks for the job. */
#define PERR(rank, ...) ((rank) == 0 ? fprintf(stderr, __VA_ARGS__) : 0)

static void usage(FILE *f) {
    fputs(
        "usage: mpirun -np TP*PP tsr_bench_dist --model PATH --tp TP --pp PP [options]\n"
        "\n"
        "  --model PATH          a .gguf file or a Hugging Face directory\n"
        "  --tp T, --pp P        tensor- and pipeline-parallel degrees (T * P ranks)\n"
        "  --threads N           CPU threads per rank (default: cores / ranks on the host, >= 1)\n"
        "  --prompt-tokens P     prefill test length, one step (default 256; 0 skips the test)\n"
        "  --gen-tokens G        decode steps per rep (default 64)\n"
        "  --batch B             sequences decoded together, one token each per step (default 1)\n"
        "  --decode-prompt D     ids prefilled (untimed) per sequence before decoding (default "
        "16)\n"
        "  --micro-batches M     pipeline micro-batches per step (default 0 = the engine's: pp)\n"
        "  --reps R              repetitions of each test; median/min/max reported (default 3)\n"
        "  --comm-iters K        iterations of the collective micro-benchmarks (default 200; 0 "
        "skips)\n"
        "  --device cpu|cuda     where each rank's shard runs (default cpu)\n"
        "  --comm mpi|nccl       activations between ranks (default mpi; nccl: --device cuda)\n"
        "  --act-dtype bf16|f32  CUDA activation type (default bf16)\n"
        "  --gpu N               CUDA device (default: local rank modulo the GPUs)\n"
        "  --no-warmup           skip the untimed warm-up run\n"
        "  --json                print one JSON object instead of text\n",
        f);
}

static int parse_int(const char *s, const char *flag, int lo, int hi, int rank, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        PERR(rank, "tsr_bench_dist: %s expects an integer in [%d, %d], got '%s'\n", flag, lo, hi,
             s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

enum {
    OPT_MODEL = 256,
    OPT_TP,
    OPT_PP,
    OPT_THREADS,
    OPT_PROMPT,
    OPT_GEN,
    OPT_BATCH,
    OPT_REPS,
    OPT_DPROMPT,
    OPT_MB,
    OPT_COMM_ITERS,
    OPT_NO_WARMUP,
    OPT_JSON,
    OPT_HELP,
    OPT_DEVICE,
    OPT_COMM,
    OPT_ACT_DTYPE,
    OPT_GPU
};

/* Every rank parses the same command line and reaches the same verdict; only
 * rank 0 prints. Returns 0 to go on, 1 when --help was printed, -1 on a bad
 * command line. */
static int parse_options(int argc, char **argv, int rank, options *o) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, OPT_MODEL},
        {"tp", required_argument, 0, OPT_TP},
        {"pp", required_argument, 0, OPT_PP},
        {"threads", required_argument, 0, OPT_THREADS},
        {"prompt-tokens", required_argument, 0, OPT_PROMPT},
        {"gen-tokens", required_argument, 0, OPT_GEN},
        {"batch", required_argument, 0, OPT_BATCH},
        {"reps", required_argument, 0, OPT_REPS},
        {"decode-prompt", required_argument, 0, OPT_DPROMPT},
        {"micro-batches", required_argument, 0, OPT_MB},
        {"comm-iters", required_argument, 0, OPT_COMM_ITERS},
        {"no-warmup", no_argument, 0, OPT_NO_WARMUP},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {"device", required_argument, 0, OPT_DEVICE},
        {"comm", required_argument, 0, OPT_COMM},
        {"act-dtype", required_argument, 0, OPT_ACT_DTYPE},
        {"gpu", required_argument, 0, OPT_GPU},
        {0, 0, 0, 0},
    };
    *o = (options){.tp = 1,
                   .pp = 1,
                   .prompt_tokens = 256,
                   .gen_tokens = 64,
                   .batch = 1,
                   .reps = 3,
                   .decode_prompt = 16,
                   .comm_iters = 200,
                   .warmup = 1,
                   .device = TSR_DEVICE_CPU,
                   .comm = TSR_COMM_MPI,
                   .act_dtype = TSR_ENGINE_ACT_DEFAULT,
                   .gpu = -1};
    opterr = rank == 0; /* getopt's own complaints from rank 0 only */
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case OPT_MODEL: o->model = optarg; break;
        case OPT_TP: r = parse_int(optarg, "--tp", 1, 1024, rank, &o->tp); break;
        case OPT_PP: r = parse_int(optarg, "--pp", 1, 1024, rank, &o->pp); break;
        case OPT_THREADS: r = parse_int(optarg, "--threads", 0, 1024, rank, &o->threads); break;
        case OPT_PROMPT:
            r = parse_int(optarg, "--prompt-tokens", 0, 1 << 16, rank, &o->prompt_tokens);
            break;
        case OPT_GEN:
            r = parse_int(optarg, "--gen-tokens", 1, 1 << 16, rank, &o->gen_tokens);
            break;
        case OPT_BATCH: r = parse_int(optarg, "--batch", 1, 4096, rank, &o->batch); break;
        case OPT_REPS: r = parse_int(optarg, "--reps", 1, 1000, rank, &o->reps); break;
        case OPT_DPROMPT:
            r = parse_int(optarg, "--decode-prompt", 1, 1 << 16, rank, &o->decode_prompt);
            break;
        case OPT_MB:
            r = parse_int(optarg, "--micro-batches", 0, 4096, rank, &o->micro_batches);
            break;
        case OPT_COMM_ITERS:
            r = parse_int(optarg, "--comm-iters", 0, 1 << 20, rank, &o->comm_iters);
            break;
        case OPT_NO_WARMUP: o->warmup = 0; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_DEVICE:
            if (!strcmp(optarg, "cpu") || !strcmp(optarg, "cuda")) {
                o->device = optarg[1] == 'p' ? TSR_DEVICE_CPU : TSR_DEVICE_CUDA;
            } else {
                PERR(rank, "tsr_bench_dist: --device expects cpu or cuda, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_COMM:
            if (tsr_comm_kind_parse(optarg, &o->comm) != TSR_OK) {
                PERR(rank, "tsr_bench_dist: --comm: %s\n", tsr_error_msg());
                r = -1;
            }
            break;
        case OPT_ACT_DTYPE:
            if (!strcmp(optarg, "bf16") || !strcmp(optarg, "f32")) {
                o->act_dtype = optarg[0] == 'b' ? TSR_BF16 : TSR_F32;
            } else {
                PERR(rank, "tsr_bench_dist: --act-dtype expects bf16 or f32, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_GPU: r = parse_int(optarg, "--gpu", 0, 1023, rank, &o->gpu); break;
        case OPT_HELP:
            if (rank == 0)
                usage(stdout);
            return 1;
        default:
            if (rank == 0)
                usage(stderr);
            return -1;
        }
        if (r)
            return -1;
    }
    if (optind < argc) {
        PERR(rank, "tsr_bench_dist: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->model) {
        PERR(rank, "tsr_bench_dist: --model PATH is required\n");
        return -1;
    }
    if (o->comm == TSR_COMM_NCCL && o->device != TSR_DEVICE_CUDA) {
        PERR(rank, "tsr_bench_dist: --comm nccl needs --device cuda\n");
        return -1;
    }
    if (o->device == TSR_DEVICE_CPU && (o->act_dtype == TSR_BF16 || o->gpu >= 0)) {
        PERR(rank, "tsr_bench_dist: %s needs --device cuda\n",
             o->gpu >= 0 ? "--gpu" : "--act-dtype bf16");
        return -1;
    }
    return 0;
}

/* Resident set now, KiB (second field of /proc/self/statm, in pages); 0 if
 * unreadable. */
static int32_t current_rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (!f)
        return 0;
    int n = fscanf(f, "%ld %ld", &size, &resident);
    fclose(f);
    return n == 2 ? (int32_t)(resident * (sysconf(_SC_PAGESIZE) / 1024)) : 0;
}

/* ---- the tests (rank 0) ---- */

/* Buffers for the steps rank 0 builds; sized for the largest step. */
typedef struct {
    int32_t *tokens, *pos, *seq, *rows, *release, *out; /* (cap) each */
    int cap;
} step_bufs;

static tsr_status step_bufs_init(step_bufs *b, int cap) {
    memset(b, 0, sizeof *b);
    b->tokens = malloc((size_t)cap * 6 * sizeof *b->tokens);
    if (!b->tokens)
        return tsr_error_set(TSR_ERR_NOMEM, "bench step buffers");
    b->pos = b->tokens + cap;
    b->seq = b->pos + cap;
    b->rows = b->seq + cap;
    b->release = b->rows + cap;
    b->out = b->release + cap;
    b->cap = cap;
    return TSR_OK;
}

static void step_bufs_free(step_bufs *b) {
    if (b)
        free(b->tokens);
}

/* Prefill test: P ids of sequence 0 in one step (every slot released first),
 * argmax of the last row. Returns tokens/s. */
static tsr_status test_prefill(tsr_engine *e, step_bufs *b, const int32_t *prompt, int p,
                               int n_slots, double *tok_s) {
    for (int i = 0; i < p; i++) {
        b->tokens[i] = prompt[i];
        b->pos[i] = i;
        b->seq[i] = 0;
    }
    for (int k = 0; k < n_slots; k++)
        b->release[k] = k;
    b->rows[0] = p - 1;
    tsr_step s = {p,       b->tokens,  b->pos, b->seq, 1, b->rows, TSR_OUT_ARGMAX,
                  n_slots, b->release, 0,      NULL,   0, NULL};
    double t0 = tsr_now_s();
    TSR_TRY(tsr_engine_step(e, &s, b->out, NULL));
    *tok_s = p / (tsr_now_s() - t0);
    return TSR_OK;
}

/* Decode test: nb sequences (slots 0..nb-1, released first), each prefilled
 * with d ids in one untimed step, then g timed steps of nb tokens (one per
 * sequence, greedy). Returns aggregate tokens/s of the g steps. */
static tsr_status test_decode(tsr_engine *e, step_bufs *b, const int32_t *prompt, int nb, int d,
                              int g, double *tok_s) {
    int n = nb * d;
    for (int k = 0; k < nb; k++) {
        for (int i = 0; i < d; i++) {
            b->tokens[k * d + i] = prompt[k * d + i];
            b->pos[k * d + i] = i;
            b->seq[k * d + i] = k;
        }
        b->rows[k] = k * d + d - 1;
        b->release[k] = k;
    }
    tsr_step pre = {n,  b->tokens,  b->pos, b->seq, nb, b->rows, TSR_OUT_ARGMAX,
                    nb, b->release, 0,      NULL,   0,  NULL};
    TSR_TRY(tsr_engine_step(e, &pre, b->out, NULL));
    for (int k = 0; k < nb; k++) {
        b->seq[k] = k;
        b->rows[k] = k;
    }
    double t0 = tsr_now_s();
    for (int step = 0; step < g; step++) {
        for (int k = 0; k < nb; k++) {
            b->tokens[k] = b->out[k]; /* the previous step's greedy token */
            b->pos[k] = d + step;
        }
        tsr_step s = {nb, b->tokens, b->pos, b->seq, nb, b->rows, TSR_OUT_ARGMAX,
                      0,  NULL,      0,      NULL,   0,  NULL};
        TSR_TRY(tsr_engine_step(e, &s, b->out, NULL));
    }
    *tok_s = (double)nb * g / (tsr_now_s() - t0);
    return TSR_OK;
}

/* Rank 0's measurements. Any failure inside a step leaves the peers mid-step,
 * so the caller ends the job on error. */
static tsr_status run_tests(tsr_engine *e, const options *o, series *pp, series *tg) {
    const int V = e->mcfg.n_vocab, P = o->prompt_tokens, B = o->batch, D = o->decode_prompt;
    int n_ids = P > B * D ? P : B * D;
    int32_t *prompt = malloc((size_t)n_ids * sizeof *prompt);
    step_bufs b;
    tsr_status st = step_bufs_init(&b, n_ids);
    if (st == TSR_OK && !prompt)
        st = tsr_error_set(TSR_ERR_NOMEM, "bench prompt");
    if (st != TSR_OK) {
        free(prompt);
        step_bufs_free(&b);
        return st;
    }
    uint64_t rng = TSR_BENCH_SEED;
    for (int i = 0; i < n_ids; i++)
        prompt[i] = (int32_t)(tsr_splitmix64(&rng) % (uint64_t)V);

    double ignored;
    if (o->warmup) { /* first touch, OpenMP pools, MPI connections */
        if (P > 0)
            TSR_CHECK_GOTO(st, test_prefill(e, &b, prompt, P, B, &ignored));
        TSR_CHECK_GOTO(
            st, test_decode(e, &b, prompt, B, D, o->gen_tokens < 8 ? o->gen_tokens : 8, &ignored));
    }
    for (int r = 0; r < o->reps; r++) {
        if (P > 0)
            TSR_CHECK_GOTO(st, test_prefill(e, &b, prompt, P, B, &pp->tok_s[r]));
        TSR_CHECK_GOTO(st, test_decode(e, &b, prompt, B, D, o->gen_tokens, &tg->tok_s[r]));
    }
    if (P > 0)
        tsr_bench_series_summarize(pp, o->reps);
    tsr_bench_series_summarize(tg, o->reps);
cleanup:
    free(prompt);
    step_bufs_free(&b);
    return st;
}

/* ---- collective micro-benchmarks (every rank, after the engine stopped) ---- */

/* Per-call microseconds of an in-place all-reduce of n activations (backend
 * buffer) over the TP group through the engine's data path, median of 5
 * batches of iters / 5 calls each; every rank of every TP group runs it at
 * once, as in the engine. -1 when tp == 1 or iters == 0. */
static tsr_status bench_allreduce(tsr_engine *e, void *buf, size_t n, int iters, double *us) {
    tsr_comm_grid *g = e->grid;
    *us = -1;
    if (g->tp == 1 || iters == 0)
        return TSR_OK;
    int per = iters / 5 > 0 ? iters / 5 : 1;
    double t[5];
    for (int i = 0; i < 20; i++)
        TSR_TRY(tsr_engine_tp_allreduce(e, buf, n));
    for (int k = 0; k < 5; k++) {
        TSR_TRY(tsr_comm_barrier(g->world));
        double t0 = tsr_now_s();
        for (int i = 0; i < per; i++)
            TSR_TRY(tsr_engine_tp_allreduce(e, buf, n));
        t[k] = (tsr_now_s() - t0) / per * 1e6;
    }
    *us = tsr_bench_median(t, 5);
    return TSR_OK;
}

/* One-way microseconds of n activations between PP stages 0 and 1 (a
 * ping-pong, half the round trip) through the engine's data path, every TP
 * column at once; stages >= 2 wait at the barriers. -1 when pp == 1 or
 * iters == 0. */
static tsr_status bench_pp_send(tsr_engine *e, void *buf, size_t n, int iters, double *us) {
    tsr_comm_grid *g = e->grid;
    *us = -1;
    if (g->pp == 1 || iters == 0)
        return TSR_OK;
    int per = iters / 5 > 0 ? iters / 5 : 1, me = g->pp_rank;
    double t[5];
    for (int k = -1; k < 5; k++) { /* k = -1: warm-up */
        TSR_TRY(tsr_comm_barrier(g->world));
        double t0 = tsr_now_s();
        for (int i = 0; me <= 1 && i < (k < 0 ? 20 : per); i++) {
            if (me == 0) {
                TSR_TRY(tsr_engine_pp_send(e, buf, n, 1, 7));
                TSR_TRY(tsr_engine_pp_recv(e, buf, n, 1, 7));
            } else {
                TSR_TRY(tsr_engine_pp_recv(e, buf, n, 0, 7));
                TSR_TRY(tsr_engine_pp_send(e, buf, n, 0, 7));
            }
        }
        if (k >= 0)
            t[k] = (tsr_now_s() - t0) / per / 2 * 1e6;
    }
    *us = tsr_bench_median(t, 5);
    return TSR_OK;
}

/* ---- report (rank 0) ---- */

static void rss_summary(const int32_t *kib, int n, double *max_mib, double *sum_mib) {
    *max_mib = *sum_mib = 0;
    for (int r = 0; r < n; r++) {
        double m = kib[r] / 1024.0;
        *sum_mib += m;
        if (m > *max_mib)
            *max_mib = m;
    }
}

static void print_json(const options *o, const tsr_model_config *c, const job_info *j,
                       const series *pp, const series *tg) {
    FILE *f = stdout;
    double load = 0, pk_max, pk_sum, end_max, end_sum;
    for (int r = 0; r < j->world; r++)
        load = j->load_s[r] > load ? j->load_s[r] : load;
    rss_summary(j->peak_rss_kib, j->world, &pk_max, &pk_sum);
    rss_summary(j->end_rss_kib, j->world, &end_max, &end_sum);
    fputs("{\"engine\": \"tessera\", \"bench\": \"dist\", \"model\": ", f);
    tsr_bench_json_string(f, o->model);
    fputs(", \"model_name\": ", f);
    tsr_bench_json_string(f, c->name);
    fprintf(f, ", \"n_layer\": %d, \"n_embd\": %d, \"n_vocab\": %d", c->n_layer, c->n_embd,
            c->n_vocab);
    fprintf(f,
            ", \"layout\": \"tp%d_pp%d\", \"tp\": %d, \"pp\": %d, \"ranks\": %d, \"hosts\": %d"
            ", \"cores\": %d, \"ranks_on_host\": %d, \"oversubscribed\": %s, \"threads\": %d"
            ", \"micro_batches\": %d",
            o->tp, o->pp, o->tp, o->pp, j->world, j->hosts, j->cores, j->ranks_on_host,
            j->oversubscribed ? "true" : "false", j->threads, j->micro_batches);
    fprintf(f,
            ", \"batch\": %d, \"prompt_tokens\": %d, \"gen_tokens\": %d, \"decode_prompt\": %d"
            ", \"reps\": %d, \"warmup\": %s, \"prompt_seed\": %llu",
            o->batch, o->prompt_tokens, o->gen_tokens, o->decode_prompt, o->reps,
            o->warmup ? "true" : "false", (unsigned long long)TSR_BENCH_SEED);
    fprintf(f, ", \"load_s\": %.4f, \"load_s_per_rank\": [", load);
    for (int r = 0; r < j->world; r++)
        fprintf(f, "%s%.4f", r ? ", " : "", j->load_s[r]);
    fputs("], ", f);
    if (o->prompt_tokens > 0)
        tsr_bench_json_series(f, "prefill_tok_s", pp, o->reps);
    else
        fputs("\"prefill_tok_s\": null", f);
    fputs(", ", f);
    tsr_bench_json_series(f, "decode_tok_s", tg, o->reps);
    fprintf(f, ", \"decode_step_ms\": %.3f", 1e3 * o->batch / tg->median);
    fputs(", \"peak_rss_mib\": [", f);
    for (int r = 0; r < j->world; r++)
        fprintf(f, "%s%.1f", r ? ", " : "", j->peak_rss_kib[r] / 1024.0);
    fputs("], \"end_rss_mib\": [", f);
    for (int r = 0; r < j->world; r++)
        fprintf(f, "%s%.1f", r ? ", " : "", j->end_rss_kib[r] / 1024.0);
    fputs("], \"weight_mib_f32\": [", f);
    for (int r = 0; r < j->world; r++)
        fprintf(f, "%s%.1f", r ? ", " : "", j->weight_mib[r]);
    fprintf(f, "], \"max_peak_rss_mib\": %.1f, \"sum_peak_rss_mib\": %.1f", pk_max, pk_sum);
    fprintf(f, ", \"max_end_rss_mib\": %.1f, \"sum_end_rss_mib\": %.1f", end_max, end_sum);
    fputs(", \"device\": ", f);
    tsr_bench_json_string(f, j->device);
    fputs(", \"act_dtype\": ", f);
    tsr_bench_json_string(f, j->act_dtype);
    fputs(", \"comm\": ", f);
    tsr_bench_json_string(f, j->comm);
    fprintf(f, ", \"comm_staged\": %s", j->staged ? "true" : "false");
    /* elements of the micro-benchmarks, in act_dtype (the key predates bf16) */
    fprintf(f, ", \"comm_floats\": %d", o->batch * c->n_embd);
    if (j->allreduce_us >= 0)
        fprintf(f, ", \"tp_allreduce_us\": %.2f", j->allreduce_us);
    else
        fputs(", \"tp_allreduce_us\": null", f);
    if (j->pp_send_us >= 0)
        fprintf(f, ", \"pp_send_us\": %.2f", j->pp_send_us);
    else
        fputs(", \"pp_send_us\": null", f);
    fputs("}\n", f);
}

static void print_text(const options *o, const tsr_model_config *c, const job_info *j,
                       const series *pp, const series *tg) {
    double load = 0, pk_max, pk_sum;
    for (int r = 0; r < j->world; r++)
        load = j->load_s[r] > load ? j->load_s[r] : load;
    rss_summary(j->peak_rss_kib, j->world, &pk_max, &pk_sum);
    printf("model      %s (%s, %d layers, C=%d, vocab %d)\n", o->model, c->name[0] ? c->name : "?",
           c->n_layer, c->n_embd, c->n_vocab);
    printf(
        "layout     tp=%d x pp=%d: %d ranks on %d host(s), %d cores, %d ranks on rank 0's host%s\n",
        o->tp, o->pp, j->world, j->hosts, j->cores, j->ranks_on_host,
        j->oversubscribed ? " (OVERSUBSCRIBED)" : "");
    printf("threads    %d per rank, micro-batches %d, reps %d%s\n", j->threads, j->micro_batches,
           o->reps, o->warmup ? " (after one warm-up)" : "");
    printf("device     %s, %s activations, %s between ranks%s\n", j->device, j->act_dtype, j->comm,
           j->staged ? " (through host memory)" : "");
    printf("load       %.3f s (slowest rank)\n", load);
    printf("%-14s %12s %12s %12s\n", "test", "median t/s", "min t/s", "max t/s");
    char name[48];
    if (o->prompt_tokens > 0) {
        snprintf(name, sizeof name, "pp%d", o->prompt_tokens);
        printf("%-14s %12.2f %12.2f %12.2f\n", name, pp->median, pp->min, pp->max);
    }
    snprintf(name, sizeof name, "tg%d x b%d", o->gen_tokens, o->batch);
    printf("%-14s %12.2f %12.2f %12.2f   (%.2f ms per step)\n", name, tg->median, tg->min, tg->max,
           1e3 * o->batch / tg->median);
    printf("%-6s %10s %10s %12s\n", "rank", "peak MiB", "end MiB", "f32 weights");
    for (int r = 0; r < j->world; r++)
        printf("%-6d %10.1f %10.1f %12.1f\n", r, j->peak_rss_kib[r] / 1024.0,
               j->end_rss_kib[r] / 1024.0, j->weight_mib[r]);
    printf("peak RSS   max %.1f MiB, sum %.1f MiB\n", pk_max, pk_sum);
    if (j->allreduce_us >= 0)
        printf("TP all-reduce of %d %s: %.1f us per call; the engine makes %d per decode step "
               "(2 per layer) -> %.2f ms\n",
               o->batch * c->n_embd, j->act_dtype, j->allreduce_us, 2 * c->n_layer,
               2 * c->n_layer * j->allreduce_us / 1e3);
    if (j->pp_send_us >= 0)
        printf("PP send of %d %s, stage 0 -> 1: %.1f us one way\n", o->batch * c->n_embd,
               j->act_dtype, j->pp_send_us);
}

/* ---- main ---- */

int main(int argc, char **argv) {
    int rank, world;
    if (tsr_comm_mpi_init(&argc, &argv, &rank, &world) != TSR_OK) {
        fprintf(stderr, "tsr_bench_dist: %s\n", tsr_error_msg());
        return 1;
    }
    options o;
    int rc = 2, have_grid = 0, have_engine = 0, reported = 0; /* reported: st's message printed */
    tsr_comm_grid grid;
    tsr_model_file_t *mf = NULL;
    tsr_engine e;
    series pp = {0}, tg = {0};
    job_info j = {0};
    void *comm_buf = NULL; /* backend buffer of the engine's device */
    tsr_status st = TSR_OK;

    int pr = parse_options(argc, argv, rank, &o);
    if (pr) {
        rc = pr > 0 ? 0 : 2;
        goto cleanup;
    }
    tsr_log_init(rank == 0 ? TSR_LOG_WARN : TSR_LOG_ERROR, rank, world);
    if (o.tp * o.pp != world) {
        PERR(rank,
             "tsr_bench_dist: --tp %d x --pp %d needs %d ranks, the job has %d (mpirun -np %d)\n",
             o.tp, o.pp, o.tp * o.pp, world, o.tp * o.pp);
        goto cleanup;
    }
    tsr_comm_grid_config gc = TSR_COMM_GRID_CONFIG_INIT;
    gc.tp = o.tp;
    gc.pp = o.pp;
    gc.kind = o.comm;
    tsr_engine_config ec = TSR_ENGINE_CONFIG_INIT;
    ec.device = o.device;
    ec.act_dtype = o.act_dtype;
    ec.gpu = o.gpu;
    if ((st = tsr_engine_config_check(&ec, gc.kind)) != TSR_OK) {
        PERR(rank, "tsr_bench_dist: %s\n", tsr_error_msg());
        reported = 1; /* the same on every rank */
        goto cleanup;
    }
    if (gc.kind == TSR_COMM_NCCL) { /* the GPU first: NCCL's groups are built on it */
        if ((st = tsr_engine_device_probe(&ec, gc.kind)) != TSR_OK) {
            if (rank == 0 || !strstr(tsr_error_msg(), "another rank failed"))
                fprintf(stderr, "[rank %d] tsr_bench_dist: %s\n", rank, tsr_error_msg());
            reported = 1;
            rc = 1;
            goto cleanup;
        }
        gc.device = ec.gpu;
    }
    if ((st = tsr_comm_grid_init(&grid, &gc)) != TSR_OK) {
        if (gc.kind == TSR_COMM_NCCL && world > 1) {
            /* a rank failing inside ncclCommInitRank may leave its peers in it */
            fprintf(stderr, "[rank %d] tsr_bench_dist: %s\n", rank, tsr_error_msg());
            tsr_comm_abort(NULL, 1, "tsr_bench_dist: building the NCCL groups failed");
        }
        PERR(rank, "tsr_bench_dist: %s\n", tsr_error_msg());
        reported = 1; /* the same on every rank: rank 0 speaks */
        goto cleanup;
    }
    have_grid = 1;
    rc = 1;

    /* Threads and oversubscription, as the engine's default would see them. */
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    j.world = world;
    j.cores = cores > 0 ? cores : 1;
    j.ranks_on_host = grid.local_size;
    j.threads = o.threads > 0 ? o.threads : j.cores / (grid.local_size > 0 ? grid.local_size : 1);
    if (j.threads < 1)
        j.threads = 1;
    int32_t flags[2] = {grid.local_size > j.cores, grid.local_rank == 0}, all_flags[2];
    TSR_CHECK_GOTO(st,
                   tsr_comm_allreduce(grid.world, flags, all_flags, 1, TSR_COMM_I32, TSR_COMM_MAX));
    TSR_CHECK_GOTO(st, tsr_comm_allreduce(grid.world, flags + 1, all_flags + 1, 1, TSR_COMM_I32,
                                          TSR_COMM_SUM));
    j.oversubscribed = all_flags[0];
    j.hosts = all_flags[1];

    /* Load, timed per rank from a common start. */
    TSR_CHECK_GOTO(st, tsr_comm_barrier(grid.world));
    double t0 = tsr_now_s();
    tsr_status ost = tsr_model_file_open(o.model, &mf);
    /* a rank that cannot open the file must not leave the others in init */
    tsr_status all = tsr_comm_agree(grid.world, ost);
    if (all != TSR_OK) {
        if (ost != TSR_OK)
            fprintf(stderr, "[rank %d] tsr_bench_dist: %s\n", rank, tsr_error_msg());
        rc = all == TSR_ERR_INVALID || all == TSR_ERR_RANGE || all == TSR_ERR_FORMAT ? 2 : 1;
        goto cleanup;
    }
    const tsr_model_config *c = tsr_model_file_config(mf);
    int D = o.decode_prompt, G = o.gen_tokens, P = o.prompt_tokens;
    tsr_plan_config pc = {o.tp, o.pp, NULL, 0};
    ec.threads = j.threads;
    ec.max_seqs = o.batch;
    ec.max_ctx = P > D + G ? P : D + G;
    ec.micro_batches = o.micro_batches;
    if ((st = tsr_engine_init(&e, &grid, mf, &pc, &ec)) != TSR_OK) {
        /* the failing rank names the problem, rank 0 says a peer failed; a
         * refused layout (TSR_ERR_INVALID) is the same on every rank */
        if (rank == 0 || (st != TSR_ERR_INVALID && !strstr(tsr_error_msg(), "another rank")))
            fprintf(stderr, "[rank %d] tsr_bench_dist: %s\n", rank, tsr_error_msg());
        reported = 1;
        rc = st == TSR_ERR_INVALID || st == TSR_ERR_RANGE ? 2 : 1;
        goto cleanup;
    }
    have_engine = 1;
    float my_load = (float)(tsr_now_s() - t0);
    j.micro_batches = o.pp > 1 ? e.cfg.micro_batches : 1;
    j.device = e.be->iface->name;
    j.act_dtype = tsr_dtype_name(e.be->iface->act_dtype);
    j.comm = tsr_comm_kind_name(o.comm);
    j.staged = e.tp_xfer == TSR_XFER_STAGED || e.pp_xfer == TSR_XFER_STAGED;
    if (rank == 0 && ec.max_ctx > c->n_ctx_train)
        fprintf(stderr,
                "tsr_bench_dist: warning: %d positions exceed the model's training context %d\n",
                ec.max_ctx, c->n_ctx_train);

    j.load_s = malloc((size_t)world * sizeof *j.load_s);
    j.peak_rss_kib = malloc((size_t)world * 2 * sizeof *j.peak_rss_kib);
    j.weight_mib = malloc((size_t)world * sizeof *j.weight_mib);
    pp.tok_s = calloc((size_t)o.reps, sizeof *pp.tok_s);
    tg.tok_s = calloc((size_t)o.reps, sizeof *tg.tok_s);
    size_t n_comm = (size_t)o.batch * c->n_embd, comm_bytes = n_comm * tsr_backend_act_size(e.be);
    /* zeros: garbage could hold NaNs or denormals, which are slower to add */
    void *zeros = calloc(comm_bytes, 1);
    if (zeros && tsr_backend_alloc(e.be, comm_bytes, "comm benchmark", &comm_buf) == TSR_OK &&
        e.be->iface->to_device(e.be, comm_buf, zeros, comm_bytes) != TSR_OK) {
        tsr_backend_free(e.be, comm_buf);
        comm_buf = NULL;
    }
    free(zeros);
    int ok = j.load_s && j.peak_rss_kib && j.weight_mib && pp.tok_s && tg.tok_s && comm_buf;
    if ((st = tsr_comm_agree(grid.world, ok ? TSR_OK : TSR_ERR_NOMEM)) != TSR_OK) {
        fprintf(stderr, "[rank %d] tsr_bench_dist: out of memory for the report\n", rank);
        reported = 1;
        goto cleanup; /* every rank agrees, so every rank leaves here */
    }
    j.end_rss_kib = j.peak_rss_kib + world;

    /* The measurements: rank 0 drives, the others serve. */
    if (rank == 0) {
        st = run_tests(&e, &o, &pp, &tg);
        if (st != TSR_OK) {
            fprintf(stderr, "[rank 0] tsr_bench_dist: %s\n", tsr_error_msg());
            tsr_comm_abort(&grid, 1, "tsr_bench_dist: a step failed");
        }
        st = tsr_engine_stop(&e);
    } else {
        st = tsr_engine_serve(&e);
    }
    if (st != TSR_OK) {
        fprintf(stderr, "[rank %d] tsr_bench_dist: %s\n", rank, tsr_error_msg());
        tsr_comm_abort(&grid, 1, "tsr_bench_dist: the engine failed");
    }
    int32_t my_rss[2] = {(int32_t)tsr_bench_peak_rss_kib(), current_rss_kib()};

    /* Collective micro-benchmarks and the gathers: every rank. Failures here
     * may leave peers inside a collective, so they end the job. */
    if ((st = tsr_backend_sync(e.be)) != TSR_OK || /* comm_buf's zeros are in place */
        (st = bench_allreduce(&e, comm_buf, n_comm, o.comm_iters, &j.allreduce_us)) != TSR_OK ||
        (st = bench_pp_send(&e, comm_buf, n_comm, o.comm_iters, &j.pp_send_us)) != TSR_OK ||
        (st = tsr_comm_allgather(grid.world, &my_load, j.load_s, 1, TSR_F32)) != TSR_OK ||
        (st = tsr_comm_allgather(grid.world, &my_rss[0], j.peak_rss_kib, 1, TSR_COMM_I32)) !=
            TSR_OK ||
        (st = tsr_comm_allgather(grid.world, &my_rss[1], j.end_rss_kib, 1, TSR_COMM_I32)) !=
            TSR_OK) {
        fprintf(stderr, "[rank %d] tsr_bench_dist: %s\n", rank, tsr_error_msg());
        tsr_comm_abort(&grid, 1, "tsr_bench_dist: a collective failed");
    }
    for (int r = 0; r < world; r++) /* world rank r = pp_rank * tp + tp_rank (dp = 1) */
        j.weight_mib[r] =
            tsr_shard_plan_weight_bytes(&e.plan, c, r % o.tp, r / o.tp, 4) / 1048576.0;

    if (rank == 0) {
        if (o.json)
            print_json(&o, c, &j, &pp, &tg);
        else
            print_text(&o, c, &j, &pp, &tg);
        fflush(stdout);
    }
    rc = 0;
cleanup:
    if (st != TSR_OK && rc == 0)
        rc = 1;
    if (st != TSR_OK && !reported)
        fprintf(stderr, "[rank %d] tsr_bench_dist: %s\n", rank,
                tsr_error_msg()[0] ? tsr_error_msg() : tsr_status_str(st));
    if (have_engine) {
        tsr_backend_free(e.be, comm_buf);
        tsr_engine_free(&e);
    }
    tsr_model_file_close(mf);
    free(pp.tok_s);
    free(tg.tok_s);
    free(j.load_s);
    free(j.peak_rss_kib);
    free(j.weight_mib);
    if (have_grid)
        tsr_comm_grid_free(&grid);
    tsr_comm_mpi_finalize();
    return rc;
}
