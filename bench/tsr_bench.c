/* bench/tsr_bench.c - the `tsr_bench` program: single-rank CPU throughput of
 * the model forward, measured the way llama.cpp's llama-bench measures it.
 *
 *   tsr_bench --model M [--threads N] [--prompt-tokens 512] [--gen-tokens 128]
 *             [--reps 3] [--decode-prompt 16] [--no-warmup] [--json]
 *
 * What it measures, on one rank's CPU backend:
 *  - load: tsr_model_file_open + tsr_model_load + KV cache allocation (once);
 *  - prefill ("pp"): one sequence, P prompt token ids in one batch, logits for
 *    the last row only, on a fresh cache slot each rep;
 *  - decode ("tg"): after a short prompt of --decode-prompt tokens, G greedy
 *    steps of one token each (forward, logits of that token, argmax). Only the
 *    G steps are timed;
 *  - peak RSS (getrusage ru_maxrss) at the end.
 * Each rate is reported as the median over reps, with min and max.
 *
 * Prompt token ids come from a fixed splitmix64 stream over [0, n_vocab)
 * (seed TSR_BENCH_SEED): dense-model cost does not depend on token content,
 * and bench/compare_llamacpp.py regenerates the same ids for llama.cpp.
 *
 * What it is not: no tokenizer, no sampling beyond argmax, no multi-rank or
 * multi-sequence runs, no correctness check (tests/model does that). Results go
 * to stdout (text, or one JSON object with --json); errors to stderr. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "runtime/model.h"
#include "runtime/sampler.h"

#define TSR_BENCH_SEED 0x7e55e7a5eedULL

typedef struct {
    const char *model;
    int threads; /* 0 = all online cores */
    int prompt_tokens, gen_tokens, reps, decode_prompt;
    int warmup, json;
} options;

/* Everything the measurements need, built in order and freed in reverse. */
typedef struct {
    tsr_model_file_t *mf;
    tsr_backend *be;
    tsr_model model;
    int model_loaded;
    tsr_kv_cache kv;
    int32_t *ids, *pos, *seq; /* (max_tokens) batch arrays */
    float *logits;            /* (n_vocab) last row */
    int max_tokens;
} bench;

/* The per-rep rates of one test and their summary. */
typedef struct {
    double *tok_s; /* (reps) */
    double median, min, max;
} series;

/* Weight bytes one decode step streams: every matrix applied to a token (all
 * layers' projections and the LM head; the embedding lookup reads one row). */
typedef struct {
    double file_bytes; /* as stored in the GGUF file (quantized) */
    double f32_bytes;  /* as Tessera holds them after dequantizing at load */
    char dtypes[160];  /* distinct storage types of those tensors, "q4_1,q8_0" */
} weight_traffic;

static void usage(FILE *f) {
    fputs("usage: tsr_bench --model PATH [options]\n"
          "\n"
          "  --model PATH          a .gguf file or a Hugging Face directory\n"
          "  --threads N           CPU threads (default: all online cores)\n"
          "  --prompt-tokens P     prefill test length, one batch (default 512)\n"
          "  --gen-tokens G        decode test length, one token per step (default 128)\n"
          "  --decode-prompt D     tokens prefilled (untimed) before the decode test (default 16)\n"
          "  --reps R              repetitions of each test; median/min/max reported (default 3)\n"
          "  --no-warmup           skip the untimed warm-up run\n"
          "  --json                print one JSON object instead of text\n",
          f);
}

static int parse_int(const char *s, const char *flag, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "tsr_bench: %s expects an integer in [%d, %d], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

enum { OPT_MODEL = 256, OPT_THREADS, OPT_PROMPT, OPT_GEN, OPT_REPS, OPT_DPROMPT, OPT_NO_WARMUP,
       OPT_JSON, OPT_HELP };

/* Returns 0 to go on, 1 when --help was printed, -1 on a bad command line. */
static int parse_options(int argc, char **argv, options *o) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, OPT_MODEL},
        {"threads", required_argument, 0, OPT_THREADS},
        {"prompt-tokens", required_argument, 0, OPT_PROMPT},
        {"gen-tokens", required_argument, 0, OPT_GEN},
        {"reps", required_argument, 0, OPT_REPS},
        {"decode-prompt", required_argument, 0, OPT_DPROMPT},
        {"no-warmup", no_argument, 0, OPT_NO_WARMUP},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0},
    };
    *o = (options){.prompt_tokens = 512, .gen_tokens = 128, .reps = 3, .decode_prompt = 16,
                   .warmup = 1};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case OPT_MODEL: o->model = optarg; break;
        case OPT_THREADS: r = parse_int(optarg, "--threads", 0, 1024, &o->threads); break;
        case OPT_PROMPT: r = parse_int(optarg, "--prompt-tokens", 1, 1 << 16, &o->prompt_tokens); break;
        case OPT_GEN: r = parse_int(optarg, "--gen-tokens", 1, 1 << 16, &o->gen_tokens); break;
        case OPT_REPS: r = parse_int(optarg, "--reps", 1, 1000, &o->reps); break;
        case OPT_DPROMPT: r = parse_int(optarg, "--decode-prompt", 1, 1 << 16, &o->decode_prompt); break;
        case OPT_NO_WARMUP: o->warmup = 0; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_HELP: usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
        if (r)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "tsr_bench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->model) {
        fprintf(stderr, "tsr_bench: --model PATH is required\n");
        return -1;
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

/* splitmix64: the prompt id stream. Mirrored in bench/compare_llamacpp.py. */
static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void bench_free(bench *b) {
    free(b->ids);
    free(b->logits);
    tsr_kv_cache_free(&b->kv);
    if (b->model_loaded)
        tsr_model_free(&b->model);
    tsr_backend_destroy(b->be);
    tsr_model_file_close(b->mf);
}

/* Opens the model, loads every weight onto a CPU backend of n_threads and
 * allocates a one-sequence cache of ctx positions. */
static tsr_status bench_open(bench *b, const char *path, int n_threads, int ctx, int max_tokens) {
    memset(b, 0, sizeof *b);
    TSR_TRY(tsr_model_file_open(path, &b->mf));
    const tsr_model_config *c = tsr_model_file_config(b->mf);
    TSR_TRY(tsr_backend_cpu_create(n_threads, &b->be));
    tsr_model_slice slice = tsr_model_slice_full(c);
    TSR_TRY(tsr_model_load(&b->model, b->mf, &slice, 1, 1, b->be, NULL));
    b->model_loaded = 1;
    const int bs = 16;
    TSR_TRY(tsr_kv_cache_init(&b->kv, b->be, c->n_layer, c->n_head_kv * c->head_dim, bs,
                              (ctx + bs - 1) / bs, 1, ctx));
    b->max_tokens = max_tokens;
    b->ids = malloc((size_t)max_tokens * 3 * sizeof *b->ids);
    b->logits = malloc((size_t)c->n_vocab * sizeof *b->logits);
    if (!b->ids || !b->logits)
        return tsr_error_set(TSR_ERR_NOMEM, "bench buffers");
    b->pos = b->ids + max_tokens;
    b->seq = b->ids + 2 * max_tokens;
    return TSR_OK;
}

/* Runs tokens[0..n) of sequence 0 at positions pos0.. as one batch and leaves
 * the last row's logits in b->logits. */
static tsr_status run_batch(bench *b, const int32_t *tokens, int n, int pos0) {
    TSR_TRY(tsr_kv_cache_reserve(&b->kv, 0, pos0 + n));
    for (int i = 0; i < n; i++) {
        b->ids[i] = tokens[i];
        b->pos[i] = pos0 + i;
        b->seq[i] = 0;
    }
    int32_t last = n - 1;
    tsr_batch batch = {n, b->ids, b->pos, b->seq, 1, &last};
    return tsr_model_forward(&b->model, &b->kv, &batch, NULL, NULL, b->logits);
}

/* Prefill test: P tokens in one batch on a fresh slot. Returns tokens/s. */
static tsr_status test_prefill(bench *b, const int32_t *prompt, int p, double *tok_s) {
    tsr_kv_cache_release(&b->kv, 0);
    double t0 = now_s();
    TSR_TRY(run_batch(b, prompt, p, 0));
    double dt = now_s() - t0;
    *tok_s = p / dt;
    return TSR_OK;
}

/* Decode test: prefill d prompt tokens (untimed), then g greedy single-token
 * steps (timed). Returns tokens/s of the steps. */
static tsr_status test_decode(bench *b, const int32_t *prompt, int d, int g, double *tok_s) {
    int n_vocab = tsr_model_file_config(b->mf)->n_vocab;
    tsr_kv_cache_release(&b->kv, 0);
    TSR_TRY(run_batch(b, prompt, d, 0));
    int32_t tok = tsr_argmax(b->logits, n_vocab);
    double t0 = now_s();
    for (int i = 0; i < g; i++) {
        TSR_TRY(run_batch(b, &tok, 1, d + i));
        tok = tsr_argmax(b->logits, n_vocab);
    }
    double dt = now_s() - t0;
    *tok_s = g / dt;
    return TSR_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void series_summarize(series *s, int n) {
    double *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) {
        s->median = s->min = s->max = s->tok_s[0];
        return;
    }
    memcpy(sorted, s->tok_s, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    s->min = sorted[0];
    s->max = sorted[n - 1];
    s->median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    free(sorted);
}

/* Sums the weight bytes of one decode step from the GGUF tensor table. All
 * zero for a Hugging Face directory (its storage types are not tallied). */
static void weight_traffic_count(const tsr_model_file_t *mf, weight_traffic *w) {
    memset(w, 0, sizeof *w);
    const tsr_gguf_t *g = tsr_model_file_gguf(mf);
    if (!g)
        return;
    int untied = tsr_gguf_find_tensor(g, "output.weight") != NULL;
    int seen[TSR_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < tsr_gguf_n_tensors(g); i++) {
        const tsr_gguf_tensor *t = tsr_gguf_tensor_at(g, i);
        if (untied && tsr_strref_eq(t->name, "token_embd.weight"))
            continue; /* only one row is gathered per token */
        uint64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        w->file_bytes += (double)t->nbytes;
        w->f32_bytes += 4.0 * (double)n;
        if (t->n_dims >= 2 && t->type >= 0 && t->type < TSR_DTYPE_COUNT && !seen[t->type]) {
            seen[t->type] = 1;
            const char *name = tsr_dtype_name(t->type);
            size_t len = strlen(w->dtypes);
            snprintf(w->dtypes + len, sizeof w->dtypes - len, "%s%s", len ? "," : "",
                     name ? name : "?");
        }
    }
}

/* Writes s as a JSON string literal. */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_series(FILE *f, const char *key, const series *s, int reps) {
    fprintf(f, "\"%s\": {\"median\": %.3f, \"min\": %.3f, \"max\": %.3f, \"reps\": [", key,
            s->median, s->min, s->max);
    for (int i = 0; i < reps; i++)
        fprintf(f, "%s%.3f", i ? ", " : "", s->tok_s[i]);
    fputs("]}", f);
}

static void print_json(const options *o, const tsr_model_config *c, int threads, double load_s,
                       const series *pp, const series *tg, const weight_traffic *w,
                       const int32_t *prompt, double rss) {
    FILE *f = stdout;
    fputs("{\"engine\": \"tessera\", \"model\": ", f);
    json_string(f, o->model);
    fputs(", \"model_name\": ", f);
    json_string(f, c->name);
    fprintf(f, ", \"n_layer\": %d, \"n_embd\": %d, \"n_vocab\": %d", c->n_layer, c->n_embd,
            c->n_vocab);
    fputs(", \"weight_types\": ", f);
    json_string(f, w->dtypes);
    fprintf(f,
            ", \"threads\": %d, \"prompt_tokens\": %d, \"gen_tokens\": %d, \"decode_prompt\": %d"
            ", \"reps\": %d, \"warmup\": %s, \"prompt_seed\": %llu, \"prompt_head\": [%d, %d, %d, %d]",
            threads, o->prompt_tokens, o->gen_tokens, o->decode_prompt, o->reps,
            o->warmup ? "true" : "false", (unsigned long long)TSR_BENCH_SEED, prompt[0],
            prompt[1 % o->prompt_tokens], prompt[2 % o->prompt_tokens], prompt[3 % o->prompt_tokens]);
    fprintf(f, ", \"load_s\": %.4f, ", load_s);
    json_series(f, "prefill_tok_s", pp, o->reps);
    fputs(", ", f);
    json_series(f, "decode_tok_s", tg, o->reps);
    fprintf(f,
            ", \"peak_rss_mib\": %.1f, \"weight_bytes_per_token_file\": %.0f"
            ", \"weight_bytes_per_token_f32\": %.0f}\n",
            rss, w->file_bytes, w->f32_bytes);
}

static void print_text(const options *o, const tsr_model_config *c, int threads, double load_s,
                       const series *pp, const series *tg, const weight_traffic *w, double rss) {
    printf("model      %s (%s, %d layers, C=%d, vocab %d, weights %s)\n", o->model,
           c->name[0] ? c->name : "?", c->n_layer, c->n_embd, c->n_vocab,
           w->dtypes[0] ? w->dtypes : "?");
    printf("threads    %d, reps %d%s\n", threads, o->reps, o->warmup ? " (after one warm-up)" : "");
    printf("load       %.3f s\n", load_s);
    printf("%-10s %12s %12s %12s\n", "test", "median t/s", "min t/s", "max t/s");
    char name[32];
    snprintf(name, sizeof name, "pp%d", o->prompt_tokens);
    printf("%-10s %12.2f %12.2f %12.2f\n", name, pp->median, pp->min, pp->max);
    snprintf(name, sizeof name, "tg%d", o->gen_tokens);
    printf("%-10s %12.2f %12.2f %12.2f\n", name, tg->median, tg->min, tg->max);
    printf("peak RSS   %.1f MiB\n", rss);
    if (w->f32_bytes > 0)
        printf("weights/token  %.1f MiB as f32 in memory (%.1f MiB in the file) -> %.1f GB/s at the "
               "median decode rate\n",
               w->f32_bytes / 1048576.0, w->file_bytes / 1048576.0, w->f32_bytes * tg->median / 1e9);
}

int main(int argc, char **argv) {
    options o;
    int r = parse_options(argc, argv, &o);
    if (r)
        return r > 0 ? 0 : 2;
    int threads = o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    int dprompt = o.decode_prompt;
    int ctx = o.prompt_tokens > dprompt + o.gen_tokens ? o.prompt_tokens : dprompt + o.gen_tokens;
    int max_tokens = o.prompt_tokens > dprompt ? o.prompt_tokens : dprompt;

    bench b;
    int rc = 1;
    int32_t *prompt = NULL;
    series pp = {0}, tg = {0};
    tsr_status st;
    double t0 = now_s();
    st = bench_open(&b, o.model, threads, ctx, max_tokens);
    double load_s = now_s() - t0;
    if (st != TSR_OK)
        goto cleanup;
    const tsr_model_config *c = tsr_model_file_config(b.mf);
    if (ctx > c->n_ctx_train)
        fprintf(stderr, "tsr_bench: warning: %d positions exceed the model's training context %d\n",
                ctx, c->n_ctx_train);

    prompt = malloc((size_t)max_tokens * sizeof *prompt);
    pp.tok_s = malloc((size_t)o.reps * sizeof *pp.tok_s);
    tg.tok_s = malloc((size_t)o.reps * sizeof *tg.tok_s);
    if (!prompt || !pp.tok_s || !tg.tok_s) {
        st = tsr_error_set(TSR_ERR_NOMEM, "bench buffers");
        goto cleanup;
    }
    uint64_t rng = TSR_BENCH_SEED;
    for (int i = 0; i < max_tokens; i++)
        prompt[i] = (int32_t)(splitmix64(&rng) % (uint64_t)c->n_vocab);

    if (o.warmup) { /* first touch of the caches, page faults, OpenMP pool start */
        double ignored;
        TSR_CHECK_GOTO(st, test_prefill(&b, prompt, o.prompt_tokens, &ignored));
        TSR_CHECK_GOTO(st, test_decode(&b, prompt, dprompt, o.gen_tokens < 8 ? o.gen_tokens : 8,
                                       &ignored));
    }
    for (int i = 0; i < o.reps; i++) {
        TSR_CHECK_GOTO(st, test_prefill(&b, prompt, o.prompt_tokens, &pp.tok_s[i]));
        TSR_CHECK_GOTO(st, test_decode(&b, prompt, dprompt, o.gen_tokens, &tg.tok_s[i]));
    }
    series_summarize(&pp, o.reps);
    series_summarize(&tg, o.reps);
    weight_traffic w;
    weight_traffic_count(b.mf, &w);
    double rss = peak_rss_mib();
    if (o.json)
        print_json(&o, c, threads, load_s, &pp, &tg, &w, prompt, rss);
    else
        print_text(&o, c, threads, load_s, &pp, &tg, &w, rss);
    fflush(stdout);
    rc = 0;
cleanup:
    if (rc)
        fprintf(stderr, "tsr_bench: error: %s\n",
                tsr_error_msg()[0] ? tsr_error_msg() : tsr_status_str(st));
    free(prompt);
    free(pp.tok_s);
    free(tg.tok_s);
    bench_free(&b);
    return rc;
}
