/* bench/tsr_bench.c - the `tsr_bench` program: single-rank throughput of the
 * model forward on the CPU or one GPU, measured the way llama.cpp's
 * llama-bench measures it.
 *
 *   tsr_bench --model M [--device cpu|cuda] [--act-dtype bf16|f32]
 *             [--weight-dtype file|f32|q8_0|q4_0|bf16] [--kv-dtype f16|f32] [--gpu N]
 *             [--threads N] [--prompt-tokens 512] [--gen-tokens 128]
 *             [--batch 1] [--reps 3] [--decode-prompt 16] [--no-warmup] [--json]
 *
 * What it measures, on one rank's backend (CPU by default):
 *  - load: tsr_model_file_open + backend creation + tsr_model_load + KV cache
 *    allocation (once);
 *  - prefill ("pp"): one sequence, P prompt token ids in one batch, logits for
 *    the last row only, on a fresh cache slot each rep;
 *  - decode ("tg"): B sequences (--batch, default 1), each prefilled (untimed)
 *    with --decode-prompt tokens, then G greedy steps that each carry B
 *    tokens, one per sequence (forward, then each row's argmax picked on the
 *    device, as the engine's greedy steps do).
 *    Only the G steps are timed; the rate is the aggregate B*G / time, and the
 *    time of one step is reported too;
 *  - peak RSS (getrusage ru_maxrss) at the end.
 * Each rate is reported as the median over reps, with min and max.
 *
 * On CUDA every timed region ends with tsr_backend_sync (the forward already
 * waits, as it brings its results to the host), so a time covers the device's
 * work, the host-side launches and the results' trip to the host.
 *
 * Prompt token ids come from a fixed tsr_splitmix64 stream over [0, n_vocab)
 * (seed TSR_BENCH_SEED): dense-model cost does not depend on token content,
 * and bench/compare_llamacpp.py regenerates the same ids for llama.cpp.
 *
 * What it is not: no tokenizer, no sampling beyond argmax, no multi-rank runs
 * (bench/tsr_bench_dist.c), no scheduler (the B decode sequences advance in
 * lockstep), no correctness check (tests/model does that). Results go to
 * stdout (text, or one JSON object with --json); errors to stderr. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "base/rng.h"
#include "runtime/model/model.h"
#include "runtime/sample/sampler.h"

#define TSR_BENCH_SEED 0x7e55e7a5eedULL

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } device_kind;

typedef struct {
    const char *model;
    int threads; /* 0 = all online cores; CPU backend only */
    int prompt_tokens, gen_tokens, reps, decode_prompt;
    int batch; /* decode sequences advanced together */
    int warmup, json;
    device_kind device;
    int act_dtype;    /* TSR_F32 or TSR_BF16; -1 = the device's default (f32 CPU, bf16 CUDA) */
    int weight_dtype; /* CUDA: TSR_BF16 (default) or TSR_F32 (reference precision); CPU:
                         TSR_MODEL_WEIGHTS_FILE (default), TSR_F32, TSR_Q8_0, TSR_Q4_0 */
    int kv_dtype;     /* KV cache elements: TSR_F16 or TSR_F32 (CPU); -1 = the device's
                         default (f16 on the CPU, the activation type on CUDA) */
    int gpu;          /* CUDA device index */
} options;

/* Everything the measurements need, built in order and freed in reverse. */
typedef struct {
    tsr_model_file_t *mf;
    tsr_backend *be;
    tsr_model model;
    int model_loaded;
    tsr_kv_cache kv;
    int32_t *ids, *pos, *seq; /* (max_tokens) batch arrays */
    int32_t *out, *tok;       /* (batch) output rows; each decode sequence's next token */
    float *logits;            /* (batch, n_vocab) output rows */
    int max_tokens, batch;
} bench;

typedef tsr_bench_series series;

/* Weight bytes one decode step streams: every matrix applied to a token (all
 * layers' projections and the LM head; the embedding lookup reads one row). */
typedef struct {
    double file_bytes; /* as stored in the GGUF file (quantized) */
    double f32_bytes;  /* as Tessera holds them after dequantizing at load */
    char dtypes[160];  /* distinct storage types of those tensors, "q4_1,q8_0" */
} weight_traffic;

/* The weights as the backend holds them (bf16 on CUDA, f32 on the CPU),
 * counted from the loaded model rather than from the file. */
typedef struct {
    double bytes;           /* every matrix and vector, the shared head once */
    double bytes_per_token; /* what one decode step reads: every layer's matrices
                               and vectors, the final norm, the LM head, one
                               embedding row */
    double matmul_params;   /* weights one token is multiplied by (layers + head):
                               a forward is 2 * matmul_params FLOPs per token
                               plus attention */
    char dtype[16];         /* storage type of the matrices */
} backend_weights;

static void usage(FILE *f) {
    fputs("usage: tsr_bench --model PATH [options]\n"
          "\n"
          "  --model PATH          a .gguf file or a Hugging Face directory\n"
          "  --device cpu|cuda     backend (default cpu)\n"
          "  --act-dtype bf16|f32  activation type on CUDA (default bf16; the CPU is f32)\n"
          "  --weight-dtype T      CPU: file (default: the GGUF's blocks), f32, q8_0, q4_0;\n"
          "                        CUDA: bf16 (default) or f32 (needs f32 activations)\n"
          "  --kv-dtype f16|f32    KV cache elements on the CPU (default f16; CUDA keeps its\n"
          "                        activation type)\n"
          "  --gpu N               CUDA device index (default 0)\n"
          "  --threads N           CPU threads (default: all online cores)\n"
          "  --prompt-tokens P     prefill test length, one batch (default 512)\n"
          "  --gen-tokens G        decode test length in steps (default 128)\n"
          "  --batch B             decode sequences, one token each per step (default 1);\n"
          "                        the decode rate is the aggregate B*G / time\n"
          "  --decode-prompt D     tokens prefilled (untimed) into each sequence before the\n"
          "                        decode test (default 16)\n"
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
        fprintf(stderr, "tsr_bench: %s expects an integer in [%d, %d], got '%s'\n", flag, lo, hi,
                s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

enum {
    OPT_MODEL = 256,
    OPT_THREADS,
    OPT_PROMPT,
    OPT_GEN,
    OPT_REPS,
    OPT_DPROMPT,
    OPT_NO_WARMUP,
    OPT_JSON,
    OPT_HELP,
    OPT_DEVICE,
    OPT_ACT_DTYPE,
    OPT_WEIGHT_DTYPE,
    OPT_KV_DTYPE,
    OPT_GPU,
    OPT_BATCH
};

static const char *device_name(device_kind d) { return d == DEVICE_CUDA ? "cuda" : "cpu"; }

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
        {"device", required_argument, 0, OPT_DEVICE},
        {"act-dtype", required_argument, 0, OPT_ACT_DTYPE},
        {"weight-dtype", required_argument, 0, OPT_WEIGHT_DTYPE},
        {"kv-dtype", required_argument, 0, OPT_KV_DTYPE},
        {"gpu", required_argument, 0, OPT_GPU},
        {"batch", required_argument, 0, OPT_BATCH},
        {0, 0, 0, 0},
    };
    *o = (options){.prompt_tokens = 512,
                   .gen_tokens = 128,
                   .reps = 3,
                   .decode_prompt = 16,
                   .batch = 1,
                   .warmup = 1,
                   .device = DEVICE_CPU,
                   .act_dtype = -1,
                   .weight_dtype = -2,
                   .kv_dtype = -1};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case OPT_MODEL: o->model = optarg; break;
        case OPT_THREADS: r = parse_int(optarg, "--threads", 0, 1024, &o->threads); break;
        case OPT_PROMPT:
            r = parse_int(optarg, "--prompt-tokens", 1, 1 << 16, &o->prompt_tokens);
            break;
        case OPT_GEN: r = parse_int(optarg, "--gen-tokens", 1, 1 << 16, &o->gen_tokens); break;
        case OPT_REPS: r = parse_int(optarg, "--reps", 1, 1000, &o->reps); break;
        case OPT_DPROMPT:
            r = parse_int(optarg, "--decode-prompt", 1, 1 << 16, &o->decode_prompt);
            break;
        case OPT_NO_WARMUP: o->warmup = 0; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_HELP: usage(stdout); return 1;
        case OPT_GPU: r = parse_int(optarg, "--gpu", 0, 1023, &o->gpu); break;
        case OPT_BATCH: r = parse_int(optarg, "--batch", 1, 4096, &o->batch); break;
        case OPT_DEVICE:
            if (!strcmp(optarg, "cpu")) {
                o->device = DEVICE_CPU;
            } else if (!strcmp(optarg, "cuda")) {
                o->device = DEVICE_CUDA;
            } else {
                fprintf(stderr, "tsr_bench: --device expects cpu or cuda, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_ACT_DTYPE:
            if (!strcmp(optarg, "bf16")) {
                o->act_dtype = TSR_BF16;
            } else if (!strcmp(optarg, "f32")) {
                o->act_dtype = TSR_F32;
            } else {
                fprintf(stderr, "tsr_bench: --act-dtype expects bf16 or f32, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_WEIGHT_DTYPE:
            if (!strcmp(optarg, "bf16") || !strcmp(optarg, "f32")) {
                o->weight_dtype = optarg[0] == 'b' ? TSR_BF16 : TSR_F32;
            } else if (!strcmp(optarg, "file")) {
                o->weight_dtype = TSR_MODEL_WEIGHTS_FILE;
            } else if (!strcmp(optarg, "q8_0") || !strcmp(optarg, "q4_0")) {
                o->weight_dtype = optarg[1] == '8' ? TSR_Q8_0 : TSR_Q4_0;
            } else {
                fprintf(stderr,
                        "tsr_bench: --weight-dtype expects file, f32, q8_0, q4_0 or bf16, got "
                        "'%s'\n",
                        optarg);
                r = -1;
            }
            break;
        case OPT_KV_DTYPE:
            if (!strcmp(optarg, "f16") || !strcmp(optarg, "f32")) {
                o->kv_dtype = optarg[1] == '1' ? TSR_F16 : TSR_F32;
            } else {
                fprintf(stderr, "tsr_bench: --kv-dtype expects f16 or f32, got '%s'\n", optarg);
                r = -1;
            }
            break;
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
    if (o->act_dtype < 0)
        o->act_dtype = o->device == DEVICE_CUDA ? TSR_BF16 : TSR_F32;
    if (o->device == DEVICE_CPU && o->act_dtype != TSR_F32) {
        fprintf(stderr, "tsr_bench: the CPU backend computes in f32 (--act-dtype f32)\n");
        return -1;
    }
    if (o->weight_dtype == -2)
        o->weight_dtype = o->device == DEVICE_CUDA ? TSR_BF16 : TSR_MODEL_WEIGHTS_FILE;
    const int cuda_type = o->weight_dtype == TSR_BF16 || o->weight_dtype == TSR_F32;
    if (o->device == DEVICE_CUDA ? !cuda_type : o->weight_dtype == TSR_BF16) {
        fprintf(stderr, "tsr_bench: --weight-dtype: bf16 is for --device cuda; file, q8_0 and "
                        "q4_0 for the CPU\n");
        return -1;
    }
    return 0;
}

static void bench_free(bench *b) {
    free(b->ids);
    free(b->out);
    free(b->logits);
    tsr_kv_cache_free(&b->kv);
    if (b->model_loaded)
        tsr_model_free(&b->model);
    tsr_backend_destroy(b->be);
    tsr_model_file_close(b->mf);
}

/* Opens the model, creates the backend the options ask for (CPU with
 * n_threads, or CUDA), loads every weight onto it and allocates a cache of
 * `batch` sequence slots of ctx positions, with blocks for the larger of one
 * prefill of `prompt_pos` positions and `batch` sequences of `decode_pos`. */
static tsr_status bench_open(bench *b, const options *o, int n_threads, int ctx, int prompt_pos,
                             int decode_pos, int max_tokens) {
    memset(b, 0, sizeof *b);
    TSR_TRY(tsr_model_file_open(o->model, &b->mf));
    const tsr_model_config *c = tsr_model_file_config(b->mf);
    if (o->device == DEVICE_CUDA)
        TSR_TRY(tsr_backend_cuda_create(o->gpu, (tsr_dtype)o->act_dtype, (tsr_dtype)o->weight_dtype,
                                        &b->be));
    else
        TSR_TRY(tsr_backend_cpu_create(n_threads, &b->be));
    tsr_model_slice slice = tsr_model_slice_full(c);
    const int weights = o->device == DEVICE_CUDA ? TSR_MODEL_WEIGHTS_FILE : o->weight_dtype;
    TSR_TRY(tsr_model_load(&b->model, b->mf, &slice, 1, 1, weights, b->be, NULL));
    b->model_loaded = 1;
    const int bs = 16;
    int prefill_blocks = (prompt_pos + bs - 1) / bs;
    int decode_blocks = o->batch * ((decode_pos + bs - 1) / bs);
    tsr_dtype kv_dtype;
    TSR_TRY(
        tsr_kv_cache_dtype(b->be, o->kv_dtype < 0 ? TSR_KV_DTYPE_DEFAULT : o->kv_dtype, &kv_dtype));
    TSR_TRY(tsr_kv_cache_init(&b->kv, b->be, kv_dtype, c->n_layer, c->n_head_kv * c->head_dim, bs,
                              prefill_blocks > decode_blocks ? prefill_blocks : decode_blocks,
                              o->batch, ctx));
    b->max_tokens = max_tokens;
    b->batch = o->batch;
    b->ids = malloc((size_t)max_tokens * 3 * sizeof *b->ids);
    b->out = malloc((size_t)o->batch * 2 * sizeof *b->out);
    b->logits = malloc((size_t)o->batch * c->n_vocab * sizeof *b->logits);
    if (!b->ids || !b->out || !b->logits)
        return tsr_error_set(TSR_ERR_NOMEM, "bench buffers");
    b->pos = b->ids + max_tokens;
    b->seq = b->ids + 2 * max_tokens;
    b->tok = b->out + o->batch;
    return TSR_OK;
}

/* Runs tokens[0..n) of sequence `seq` at positions pos0.. as one batch and
 * leaves the last row's logits in b->logits. */
static tsr_status run_batch(bench *b, const int32_t *tokens, int n, int pos0, int seq) {
    TSR_TRY(tsr_kv_cache_reserve(&b->kv, seq, pos0 + n));
    for (int i = 0; i < n; i++) {
        b->ids[i] = tokens[i];
        b->pos[i] = pos0 + i;
        b->seq[i] = seq;
    }
    int32_t last = n - 1;
    tsr_batch batch = {n, b->ids, b->pos, b->seq, 1, &last, 0, NULL};
    return tsr_model_forward(&b->model, &b->kv, &batch, NULL, NULL, b->logits);
}

/* One decode step: token b->tok[s] of every sequence s < b->batch at position
 * pos, all in one batch; b->tok[s] becomes the argmax of its row, picked on
 * the device as the engine's greedy steps do (only 8 bytes a row reach the
 * host). */
static tsr_status run_decode_step(bench *b, int pos, int n_vocab) {
    (void)n_vocab;
    int nb = b->batch;
    for (int s = 0; s < nb; s++) {
        TSR_TRY(tsr_kv_cache_reserve(&b->kv, s, pos + 1));
        b->ids[s] = b->tok[s];
        b->pos[s] = pos;
        b->seq[s] = s;
        b->out[s] = s;
    }
    tsr_batch batch = {nb, b->ids, b->pos, b->seq, nb, b->out, 0, NULL};
    /* b->logits holds batch * n_vocab floats: room for the values */
    return tsr_model_forward_greedy(&b->model, &b->kv, &batch, NULL, NULL, b->logits, b->tok);
}

/* Prefill test: P tokens in one batch on a fresh slot. Returns tokens/s. */
static tsr_status test_prefill(bench *b, const int32_t *prompt, int p, double *tok_s) {
    tsr_kv_cache_release(&b->kv, 0);
    double t0 = tsr_now_s();
    TSR_TRY(run_batch(b, prompt, p, 0, 0));
    TSR_TRY(tsr_backend_sync(b->be));
    double dt = tsr_now_s() - t0;
    *tok_s = p / dt;
    return TSR_OK;
}

/* Decode test: prefill d prompt tokens into each of the b->batch sequences
 * (untimed, one sequence at a time), then g greedy steps of one token per
 * sequence (timed). Returns the aggregate tokens/s (batch * g / time) and the
 * time of one step in ms; every slot is released again at the end. */
static tsr_status test_decode(bench *b, const int32_t *prompt, int d, int g, double *tok_s,
                              double *step_ms) {
    int n_vocab = tsr_model_file_config(b->mf)->n_vocab;
    for (int s = 0; s < b->batch; s++)
        tsr_kv_cache_release(&b->kv, s);
    for (int s = 0; s < b->batch; s++) {
        TSR_TRY(run_batch(b, prompt, d, 0, s));
        b->tok[s] = tsr_argmax(b->logits, n_vocab);
    }
    TSR_TRY(tsr_backend_sync(b->be));
    double t0 = tsr_now_s();
    for (int i = 0; i < g; i++)
        TSR_TRY(run_decode_step(b, d + i, n_vocab));
    TSR_TRY(tsr_backend_sync(b->be));
    double dt = tsr_now_s() - t0;
    for (int s = 0; s < b->batch; s++)
        tsr_kv_cache_release(&b->kv, s);
    *tok_s = (double)b->batch * g / dt;
    if (step_ms)
        *step_ms = 1e3 * dt / g;
    return TSR_OK;
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

static double weight_nbytes(const tsr_weight *w) {
    if (!w->data)
        return 0;
    return (double)tsr_dtype_row_bytes(w->dtype, (uint64_t)w->rows * (uint64_t)w->cols);
}

static double weight_nparams(const tsr_weight *w) {
    return w->data ? (double)w->rows * w->cols : 0;
}

/* Counts the loaded model's weights as the backend stores them. */
static void backend_weights_count(const tsr_model *m, backend_weights *w) {
    memset(w, 0, sizeof *w);
    const tsr_model_config *c = &m->cfg;
    double act = (double)tsr_backend_act_size(m->be);
    double embd = weight_nbytes(&m->tok_embd);
    double head = weight_nbytes(&m->lm_head);
    double vec = 0, mats = 0, params = 0;
    int nl = m->slice.layer_end - m->slice.layer_begin;
    for (int l = 0; l < nl; l++) {
        const tsr_layer_weights *L = &m->layers[l];
        const tsr_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            mats += weight_nbytes(ws[i]);
            params += weight_nparams(ws[i]);
        }
        vec += 2.0 * c->n_embd * act; /* attn_norm, ffn_norm */
        if (L->bq)
            vec += (double)(m->slice.n_head + 2 * m->slice.n_kv_head) * c->head_dim * act;
    }
    if (m->out_norm)
        vec += c->n_embd * act;
    params += weight_nparams(&m->lm_head);
    w->bytes = embd + (m->lm_head_shared ? 0 : head) + mats + vec;
    w->bytes_per_token = mats + vec + head + (m->tok_embd.rows ? embd / m->tok_embd.rows : 0);
    w->matmul_params = params;
    const char *name = tsr_dtype_name(m->layers && nl ? m->layers[0].wq.dtype : m->lm_head.dtype);
    snprintf(w->dtype, sizeof w->dtype, "%s", name ? name : "?");
}

static void print_json(const options *o, const tsr_model_config *c, int threads, double load_s,
                       const series *pp, const series *tg, const series *step,
                       const weight_traffic *w, const backend_weights *bw, const int32_t *prompt,
                       double rss, const tsr_kv_cache *kv) {
    FILE *f = stdout;
    fputs("{\"engine\": \"tessera\", \"model\": ", f);
    tsr_bench_json_string(f, o->model);
    fputs(", \"model_name\": ", f);
    tsr_bench_json_string(f, c->name);
    fprintf(f, ", \"n_layer\": %d, \"n_embd\": %d, \"n_vocab\": %d", c->n_layer, c->n_embd,
            c->n_vocab);
    fputs(", \"weight_types\": ", f);
    tsr_bench_json_string(f, w->dtypes);
    fprintf(
        f,
        ", \"threads\": %d, \"prompt_tokens\": %d, \"gen_tokens\": %d, \"decode_prompt\": %d"
        ", \"reps\": %d, \"warmup\": %s, \"prompt_seed\": %llu, \"prompt_head\": [%d, %d, %d, %d]",
        threads, o->prompt_tokens, o->gen_tokens, o->decode_prompt, o->reps,
        o->warmup ? "true" : "false", (unsigned long long)TSR_BENCH_SEED, prompt[0],
        prompt[1 % o->prompt_tokens], prompt[2 % o->prompt_tokens], prompt[3 % o->prompt_tokens]);
    fprintf(f, ", \"load_s\": %.4f, ", load_s);
    tsr_bench_json_series(f, "prefill_tok_s", pp, o->reps);
    fputs(", ", f);
    tsr_bench_json_series(f, "decode_tok_s", tg, o->reps);
    fprintf(f,
            ", \"peak_rss_mib\": %.1f, \"weight_bytes_per_token_file\": %.0f"
            ", \"weight_bytes_per_token_f32\": %.0f",
            rss, w->file_bytes, w->f32_bytes);
    /* added with --device / --batch; the keys above keep their meaning
     * (decode_tok_s is the aggregate over the batch) */
    fprintf(f, ", \"device\": \"%s\", \"gpu\": %d, \"act_dtype\": \"%s\", \"batch\": %d, ",
            device_name(o->device), o->device == DEVICE_CUDA ? o->gpu : -1,
            tsr_dtype_name(o->act_dtype), o->batch);
    tsr_bench_json_series(f, "decode_step_ms", step, o->reps);
    fprintf(f,
            ", \"weight_dtype\": \"%s\", \"weight_bytes\": %.0f, \"weight_bytes_per_token\": %.0f"
            ", \"matmul_params\": %.0f",
            bw->dtype, bw->bytes, bw->bytes_per_token, bw->matmul_params);
    fprintf(f, ", \"kv_dtype\": \"%s\", \"kv_bytes_per_position\": %zu}\n",
            tsr_dtype_name(kv->dtype), tsr_kv_cache_position_bytes(kv));
}

/* The CPU report at batch 1 is the historical one, line for line; another
 * device or a batch adds lines. */
static void print_text(const options *o, const tsr_model_config *c, int threads, double load_s,
                       const series *pp, const series *tg, const series *step,
                       const weight_traffic *w, const backend_weights *bw, double rss,
                       const tsr_kv_cache *kv) {
    int extended = o->device != DEVICE_CPU || o->batch > 1;
    printf("model      %s (%s, %d layers, C=%d, vocab %d, weights %s)\n", o->model,
           c->name[0] ? c->name : "?", c->n_layer, c->n_embd, c->n_vocab,
           w->dtypes[0] ? w->dtypes : "?");
    if (o->device == DEVICE_CUDA)
        printf("device     cuda:%d, activations %s, weights %s on the device, decode batch %d\n",
               o->gpu, tsr_dtype_name(o->act_dtype), bw->dtype, o->batch);
    else if (extended)
        printf("device     cpu, decode batch %d\n", o->batch);
    if (o->device == DEVICE_CUDA)
        printf("reps       %d%s\n", o->reps, o->warmup ? " (after one warm-up)" : "");
    else
        printf("threads    %d, reps %d%s\n", threads, o->reps,
               o->warmup ? " (after one warm-up)" : "");
    printf("load       %.3f s\n", load_s);
    printf("%-10s %12s %12s %12s\n", "test", "median t/s", "min t/s", "max t/s");
    char name[32];
    snprintf(name, sizeof name, "pp%d", o->prompt_tokens);
    printf("%-10s %12.2f %12.2f %12.2f\n", name, pp->median, pp->min, pp->max);
    if (o->batch > 1)
        snprintf(name, sizeof name, "tg%d b%d", o->gen_tokens, o->batch);
    else
        snprintf(name, sizeof name, "tg%d", o->gen_tokens);
    printf("%-10s %12.2f %12.2f %12.2f\n", name, tg->median, tg->min, tg->max);
    if (extended)
        printf("%-10s %12.3f %12.3f %12.3f  (ms per decode step of %d tokens)\n", "step ms",
               step->median, step->min, step->max, o->batch);
    printf("peak RSS   %.1f MiB\n", rss);
    printf("kv cache   %s, %.1f KiB per position\n", tsr_dtype_name(kv->dtype),
           tsr_kv_cache_position_bytes(kv) / 1024.0);
    if (!extended) {
        printf("weights/token  %.1f MiB in memory (%s; %.1f MiB in the file, %.1f MiB as f32) "
               "-> %.1f GB/s at the median decode rate\n",
               bw->bytes_per_token / 1048576.0, bw->dtype, w->file_bytes / 1048576.0,
               w->f32_bytes / 1048576.0, bw->bytes_per_token * tg->median / 1e9);
        return;
    }
    /* every step reads the weights once, whatever the batch */
    printf("weights    %.1f MiB as %s on %s; %.1f MiB read per decode step -> %.1f GB/s at the "
           "median step time\n",
           bw->bytes / 1048576.0, bw->dtype, device_name(o->device),
           bw->bytes_per_token / 1048576.0,
           step->median > 0 ? bw->bytes_per_token / (step->median * 1e-3) / 1e9 : 0.0);
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
    if (o.batch > max_tokens)
        max_tokens = o.batch;

    bench b;
    int rc = 1;
    int32_t *prompt = NULL;
    series pp = {0}, tg = {0}, step = {0};
    tsr_status st;
    double t0 = tsr_now_s();
    st = bench_open(&b, &o, threads, ctx, o.prompt_tokens, dprompt + o.gen_tokens, max_tokens);
    double load_s = tsr_now_s() - t0;
    if (st != TSR_OK)
        goto cleanup;
    const tsr_model_config *c = tsr_model_file_config(b.mf);
    if (ctx > c->n_ctx_train)
        fprintf(stderr, "tsr_bench: warning: %d positions exceed the model's training context %d\n",
                ctx, c->n_ctx_train);

    prompt = malloc((size_t)max_tokens * sizeof *prompt);
    pp.tok_s = malloc((size_t)o.reps * sizeof *pp.tok_s);
    tg.tok_s = malloc((size_t)o.reps * sizeof *tg.tok_s);
    step.tok_s = malloc((size_t)o.reps * sizeof *step.tok_s);
    if (!prompt || !pp.tok_s || !tg.tok_s || !step.tok_s) {
        st = tsr_error_set(TSR_ERR_NOMEM, "bench buffers");
        goto cleanup;
    }
    uint64_t rng = TSR_BENCH_SEED;
    for (int i = 0; i < max_tokens; i++)
        prompt[i] = (int32_t)(tsr_splitmix64(&rng) % (uint64_t)c->n_vocab);

    /* warm-up: first touch of the caches, page faults, OpenMP pool start; on
     * CUDA module loading and cuBLASLt's first choice of algorithms */
    if (o.warmup) {
        double ignored;
        TSR_CHECK_GOTO(st, test_prefill(&b, prompt, o.prompt_tokens, &ignored));
        TSR_CHECK_GOTO(st, test_decode(&b, prompt, dprompt, o.gen_tokens < 8 ? o.gen_tokens : 8,
                                       &ignored, NULL));
    }
    for (int i = 0; i < o.reps; i++) {
        TSR_CHECK_GOTO(st, test_prefill(&b, prompt, o.prompt_tokens, &pp.tok_s[i]));
        TSR_CHECK_GOTO(
            st, test_decode(&b, prompt, dprompt, o.gen_tokens, &tg.tok_s[i], &step.tok_s[i]));
    }
    tsr_bench_series_summarize(&pp, o.reps);
    tsr_bench_series_summarize(&tg, o.reps);
    tsr_bench_series_summarize(&step, o.reps);
    weight_traffic w;
    weight_traffic_count(b.mf, &w);
    backend_weights bw;
    backend_weights_count(&b.model, &bw);
    double rss = (tsr_bench_peak_rss_kib() / 1024.0);
    if (o.json)
        print_json(&o, c, threads, load_s, &pp, &tg, &step, &w, &bw, prompt, rss, &b.kv);
    else
        print_text(&o, c, threads, load_s, &pp, &tg, &step, &w, &bw, rss, &b.kv);
    fflush(stdout);
    rc = 0;
cleanup:
    if (rc)
        fprintf(stderr, "tsr_bench: error: %s\n",
                tsr_error_msg()[0] ? tsr_error_msg() : tsr_status_str(st));
    free(prompt);
    free(pp.tok_s);
    free(tg.tok_s);
    free(step.tok_s);
    bench_free(&b);
    return rc;
}
