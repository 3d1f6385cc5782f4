/* runtime/tessera_main.c - the `tessera` program: generate, tokenize and
 * perplexity on one rank's CPU backend.
 *
 *   tessera generate --model M (--prompt TEXT | --chat TEXT) [options]
 *   tessera tokenize --model M (--text TEXT | --file F)
 *   tessera perplexity --model M --file F [--ctx N]
 *
 * Generated text goes to stdout as it is produced; statistics and messages go
 * to stderr. Nothing is read from standard input unless asked (--file -). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/log.h"
#include "runtime/generate.h"
#include "runtime/tokenizer/chat.h"

#define MAX_STOP 16

typedef struct {
    const char *model;
    const char *prompt, *chat, *system, *text, *file;
    int max_tokens, min_tokens, ctx, threads, n_batch, verbose, ignore_eos, raw_ids;
    int have_ctx;
    tsr_sampling_params sp;
    const char *stop[MAX_STOP];
    size_t n_stop;
    int32_t stop_ids[MAX_STOP];
    size_t n_stop_ids;
} options;

/* Everything one command needs, built in order and freed in reverse. */
typedef struct {
    tsr_model_file_t *mf;
    tsr_tokenizer_t *tok;
    tsr_backend *be;
    tsr_model model;
    int model_loaded;
    tsr_kv_cache kv;
} session;

static void usage(FILE *f) {
    fputs("usage: tessera COMMAND --model PATH [options]\n"
          "\n"
          "commands:\n"
          "  generate    --prompt TEXT | --chat TEXT [--system TEXT]\n"
          "  tokenize    --text TEXT | --file F   (prints token ids; special tokens parsed)\n"
          "  perplexity  --file F [--ctx N]       (llama.cpp-compatible chunked perplexity)\n"
          "\n"
          "model:\n"
          "  --model PATH          a .gguf file or a Hugging Face directory\n"
          "  --threads N           CPU threads (default: all cores)\n"
          "  --ctx N               context length (generate: default min(model, 4096);\n"
          "                        perplexity: chunk length, default 512)\n"
          "  --batch N             prefill chunk size (default 512)\n"
          "generation:\n"
          "  --max-tokens N        (default 256)   --min-tokens N\n"
          "  --temperature T       (default 0 = greedy)\n"
          "  --top-k K  --top-p P  --min-p P  --seed S\n"
          "  --repeat-penalty R  --frequency-penalty F  --presence-penalty P\n"
          "  --stop STRING         (repeatable)    --stop-id ID (repeatable)\n"
          "  --ignore-eos\n"
          "other:\n"
          "  --file -              read the text from standard input\n"
          "  --verbose             log loading details to stderr\n",
          f);
}

static int parse_int(const char *s, const char *flag, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "tessera: %s expects an integer in [%d, %d], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_float(const char *s, const char *flag, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s || !isfinite(v)) {
        fprintf(stderr, "tessera: %s expects a number, got '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

enum {
    OPT_MODEL = 256, OPT_PROMPT, OPT_CHAT, OPT_SYSTEM, OPT_TEXT, OPT_FILE, OPT_MAX_TOKENS,
    OPT_MIN_TOKENS, OPT_CTX, OPT_THREADS, OPT_BATCH, OPT_TEMP, OPT_TOP_K, OPT_TOP_P, OPT_MIN_P,
    OPT_SEED, OPT_REPEAT, OPT_FREQ, OPT_PRES, OPT_STOP, OPT_STOP_ID, OPT_IGNORE_EOS, OPT_VERBOSE,
    OPT_HELP,
};

static int parse_options(int argc, char **argv, options *o) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, OPT_MODEL},
        {"prompt", required_argument, 0, OPT_PROMPT},
        {"chat", required_argument, 0, OPT_CHAT},
        {"system", required_argument, 0, OPT_SYSTEM},
        {"text", required_argument, 0, OPT_TEXT},
        {"file", required_argument, 0, OPT_FILE},
        {"max-tokens", required_argument, 0, OPT_MAX_TOKENS},
        {"min-tokens", required_argument, 0, OPT_MIN_TOKENS},
        {"ctx", required_argument, 0, OPT_CTX},
        {"ctx-size", required_argument, 0, OPT_CTX},
        {"threads", required_argument, 0, OPT_THREADS},
        {"batch", required_argument, 0, OPT_BATCH},
        {"temperature", required_argument, 0, OPT_TEMP},
        {"top-k", required_argument, 0, OPT_TOP_K},
        {"top-p", required_argument, 0, OPT_TOP_P},
        {"min-p", required_argument, 0, OPT_MIN_P},
        {"seed", required_argument, 0, OPT_SEED},
        {"repeat-penalty", required_argument, 0, OPT_REPEAT},
        {"frequency-penalty", required_argument, 0, OPT_FREQ},
        {"presence-penalty", required_argument, 0, OPT_PRES},
        {"stop", required_argument, 0, OPT_STOP},
        {"stop-id", required_argument, 0, OPT_STOP_ID},
        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"verbose", no_argument, 0, OPT_VERBOSE},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0},
    };
    tsr_sampling_params sp = TSR_SAMPLING_PARAMS_INIT;
    o->sp = sp;
    o->max_tokens = 256;
    optind = 2; /* argv[1] is the command */
    int c, seed;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case OPT_MODEL: o->model = optarg; break;
        case OPT_PROMPT: o->prompt = optarg; break;
        case OPT_CHAT: o->chat = optarg; break;
        case OPT_SYSTEM: o->system = optarg; break;
        case OPT_TEXT: o->text = optarg; break;
        case OPT_FILE: o->file = optarg; break;
        case OPT_MAX_TOKENS: r = parse_int(optarg, "--max-tokens", 1, 1 << 24, &o->max_tokens); break;
        case OPT_MIN_TOKENS: r = parse_int(optarg, "--min-tokens", 0, 1 << 24, &o->min_tokens); break;
        case OPT_CTX: r = parse_int(optarg, "--ctx", 8, 1 << 20, &o->ctx); o->have_ctx = 1; break;
        case OPT_THREADS: r = parse_int(optarg, "--threads", 1, 1024, &o->threads); break;
        case OPT_BATCH: r = parse_int(optarg, "--batch", 1, 1 << 16, &o->n_batch); break;
        case OPT_TEMP: r = parse_float(optarg, "--temperature", &o->sp.temperature); break;
        case OPT_TOP_K: r = parse_int(optarg, "--top-k", 0, 1 << 24, &o->sp.top_k); break;
        case OPT_TOP_P: r = parse_float(optarg, "--top-p", &o->sp.top_p); break;
        case OPT_MIN_P: r = parse_float(optarg, "--min-p", &o->sp.min_p); break;
        case OPT_SEED:
            r = parse_int(optarg, "--seed", 0, 2147483647, &seed);
            o->sp.seed = (uint64_t)seed;
            break;
        case OPT_REPEAT: r = parse_float(optarg, "--repeat-penalty", &o->sp.repetition_penalty); break;
        case OPT_FREQ: r = parse_float(optarg, "--frequency-penalty", &o->sp.frequency_penalty); break;
        case OPT_PRES: r = parse_float(optarg, "--presence-penalty", &o->sp.presence_penalty); break;
        case OPT_STOP:
            if (o->n_stop == MAX_STOP) {
                fprintf(stderr, "tessera: at most %d --stop strings\n", MAX_STOP);
                return -1;
            }
            o->stop[o->n_stop++] = optarg;
            break;
        case OPT_STOP_ID:
            if (o->n_stop_ids == MAX_STOP) {
                fprintf(stderr, "tessera: at most %d --stop-id values\n", MAX_STOP);
                return -1;
            }
            r = parse_int(optarg, "--stop-id", 0, 1 << 30, &o->stop_ids[o->n_stop_ids++]);
            break;
        case OPT_IGNORE_EOS: o->ignore_eos = 1; break;
        case OPT_VERBOSE: o->verbose = 1; break;
        case OPT_HELP: usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        if (r)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "tessera: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->model) {
        fprintf(stderr, "tessera: --model PATH is required\n");
        return -1;
    }
    return 0;
}

/* Reads a whole file (or stdin for "-") into a NUL-terminated buffer. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "tessera: cannot open '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    int err = ferror(f);
    if (f != stdin)
        fclose(f);
    if (!buf || err) {
        fprintf(stderr, "tessera: cannot read '%s'\n", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void session_free(session *s) {
    tsr_kv_cache_free(&s->kv);
    if (s->model_loaded)
        tsr_model_free(&s->model);
    tsr_backend_destroy(s->be);
    tsr_tokenizer_free(s->tok);
    tsr_model_file_close(s->mf);
}

static tsr_status load_tokenizer(session *s) {
    const tsr_gguf_t *g = tsr_model_file_gguf(s->mf);
    if (g)
        return tsr_tokenizer_from_gguf(g, &s->tok);
    char tj[4200], tc[4200];
    const char *dir = tsr_model_file_dir(s->mf);
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    snprintf(tc, sizeof tc, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(tc, "r");
    if (f)
        fclose(f);
    return tsr_tokenizer_from_json(tj, f ? tc : NULL, &s->tok);
}

/* Opens the model and tokenizer; with `ctx` > 0 also loads the weights and a
 * single-sequence KV cache of that many positions. */
static tsr_status session_open(session *s, const options *o, int ctx) {
    memset(s, 0, sizeof *s);
    double t0 = now_s();
    TSR_TRY(tsr_model_file_open(o->model, &s->mf));
    TSR_TRY(load_tokenizer(s));
    if (ctx <= 0)
        return TSR_OK;
    const tsr_model_config *c = tsr_model_file_config(s->mf);
    TSR_TRY(tsr_backend_cpu_create(o->threads, &s->be));
    tsr_model_slice slice = tsr_model_slice_full(c);
    TSR_TRY(tsr_model_load(&s->model, s->mf, &slice, 1, 1, s->be, NULL));
    s->model_loaded = 1;
    const int bs = 16;
    TSR_TRY(tsr_kv_cache_init(&s->kv, s->be, c->n_layer, c->n_head_kv * c->head_dim, bs,
                              (ctx + bs - 1) / bs, 1, ctx));
    TSR_LOG_I("loaded %s (%s, %d layers, %d heads / %d KV heads, vocab %d) in %.2f s",
              o->model, tsr_model_file_format(s->mf), c->n_layer, c->n_head, c->n_head_kv,
              c->n_vocab, now_s() - t0);
    return TSR_OK;
}

static int fail(tsr_status st) {
    fprintf(stderr, "tessera: error: %s\n", tsr_error_msg()[0] ? tsr_error_msg() : tsr_status_str(st));
    return st == TSR_ERR_INVALID || st == TSR_ERR_RANGE ? 2 : 1;
}

static int emit_stdout(void *user, const char *text, size_t len, int32_t token) {
    (void)user;
    (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static long peak_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int cmd_generate(const options *o) {
    if (!o->prompt == !o->chat) {
        fprintf(stderr, "tessera generate: give exactly one of --prompt TEXT or --chat TEXT\n");
        return 2;
    }
    session s;
    int32_t *ids = NULL;
    size_t n = 0;
    char *rendered = NULL;
    int rc = 0;
    tsr_status st = tsr_model_file_open(o->model, &s.mf); /* for the context length */
    if (st != TSR_OK)
        return fail(st);
    int ctx_train = tsr_model_file_config(s.mf)->n_ctx_train;
    tsr_model_file_close(s.mf);
    int ctx = o->have_ctx ? o->ctx : (ctx_train < 4096 ? ctx_train : 4096);
    st = session_open(&s, o, ctx);
    if (st != TSR_OK) {
        rc = fail(st);
        goto cleanup;
    }
    const char *text = o->prompt;
    if (o->chat) {
        tsr_chat_msg msgs[2];
        size_t nm = 0;
        if (o->system)
            msgs[nm++] = (tsr_chat_msg){"system", o->system};
        msgs[nm++] = (tsr_chat_msg){"user", o->chat};
        st = tsr_chat_render(s.tok, msgs, nm, 1, &rendered);
        if (st != TSR_OK) {
            rc = fail(st);
            goto cleanup;
        }
        text = rendered;
    }
    /* A chat rendering carries its own special tokens; a raw prompt gets BOS
     * when the model asks for it. Special tokens in the text are parsed. */
    unsigned flags = TSR_TOK_PARSE_SPECIAL | (o->chat ? 0 : TSR_TOK_ADD_SPECIAL);
    st = tsr_tokenizer_encode_ex(s.tok, text, strlen(text), flags, &ids, &n);
    if (st == TSR_OK && n == 0)
        st = tsr_error_set(TSR_ERR_INVALID, "the prompt is empty");
    if (st != TSR_OK) {
        rc = fail(st);
        goto cleanup;
    }
    tsr_gen_params gp = {
        .sampling = o->sp,
        .max_tokens = o->max_tokens,
        .min_tokens = o->min_tokens,
        .stop = o->stop,
        .n_stop = o->n_stop,
        .stop_ids = o->stop_ids,
        .n_stop_ids = o->n_stop_ids,
        .ignore_eos = o->ignore_eos,
        .n_batch = o->n_batch,
    };
    tsr_gen_result res;
    st = tsr_generate(&s.model, &s.kv, s.tok, ids, n, &gp, emit_stdout, NULL, &res);
    fputc('\n', stdout);
    fflush(stdout);
    if (st != TSR_OK) {
        rc = fail(st);
        goto cleanup;
    }
    static const char *reasons[] = {"stop", "length", "cancelled"};
    fprintf(stderr,
            "tessera: prompt %d tokens (%.1f tok/s), completion %d tokens (%.1f tok/s), finish %s, peak RSS %.0f MiB\n",
            res.n_prompt, res.prefill_s > 0 ? res.n_prompt / res.prefill_s : 0.0, res.n_completion,
            res.decode_s > 0 ? res.n_completion / res.decode_s : 0.0, reasons[res.finish],
            peak_rss_kb() / 1024.0);
cleanup:
    free(ids);
    free(rendered);
    session_free(&s);
    return rc;
}

static int cmd_tokenize(const options *o) {
    if (!o->text == !o->file) {
        fprintf(stderr, "tessera tokenize: give exactly one of --text TEXT or --file F\n");
        return 2;
    }
    size_t len = 0;
    char *buf = NULL;
    const char *text = o->text;
    if (o->file) {
        buf = read_file(o->file, &len);
        if (!buf)
            return 1;
        text = buf;
    } else {
        len = strlen(text);
    }
    session s;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    tsr_status st = session_open(&s, o, 0);
    if (st == TSR_OK)
        st = tsr_tokenizer_encode(s.tok, text, len, 1, &ids, &n);
    if (st != TSR_OK) {
        rc = fail(st);
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        fprintf(stderr, "tessera: %zu tokens\n", n);
    }
    free(ids);
    free(buf);
    session_free(&s);
    return rc;
}

/* log-softmax probability of `target` in logits(n) */
static double nll(const float *logits, int n, int target) {
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)logits[i] - mx);
    return -((double)logits[target] - mx - log(sum));
}

/* llama.cpp's perplexity: the text is cut into chunks of ctx tokens (BOS in
 * the first slot when the model adds one); each chunk is evaluated from a
 * fresh cache and only its second half is scored, so every scored token has
 * at least ctx/2 tokens of context. */
static int cmd_perplexity(const options *o) {
    if (!o->file) {
        fprintf(stderr, "tessera perplexity: --file F is required\n");
        return 2;
    }
    int ctx = o->have_ctx ? o->ctx : 512;
    size_t len;
    char *text = read_file(o->file, &len);
    if (!text)
        return 1;
    session s;
    int32_t *ids = NULL;
    float *logits = NULL;
    size_t n = 0;
    int rc = 0;
    tsr_status st = session_open(&s, o, ctx);
    if (st == TSR_OK)
        st = tsr_tokenizer_encode(s.tok, text, len, 0, &ids, &n);
    if (st != TSR_OK) {
        rc = fail(st);
        goto cleanup;
    }
    int n_chunks = (int)(n / (size_t)ctx);
    if (n_chunks < 1) {
        fprintf(stderr, "tessera perplexity: the text has %zu tokens; at least %d (one --ctx chunk) are needed\n",
                n, ctx);
        rc = 2;
        goto cleanup;
    }
    const int V = s.model.cfg.n_vocab, first = ctx / 2;
    int32_t bos = tsr_tokenizer_bos(s.tok);
    int add_bos = tsr_tokenizer_add_bos(s.tok) && bos >= 0;
    logits = malloc((size_t)ctx * V * sizeof *logits);
    int32_t *chunk = malloc((size_t)ctx * sizeof *chunk);
    if (!logits || !chunk) {
        free(chunk);
        rc = fail(tsr_error_set(TSR_ERR_NOMEM, "out of memory"));
        goto cleanup;
    }
    fprintf(stderr, "tessera: %zu tokens, %d chunks of %d\n", n, n_chunks, ctx);
    double sum = 0, sum2 = 0, t0 = now_s();
    long count = 0;
    for (int c = 0; c < n_chunks; c++) {
        memcpy(chunk, ids + (size_t)c * ctx, (size_t)ctx * sizeof *chunk);
        if (add_bos)
            chunk[0] = bos;
        st = tsr_score_tokens(&s.model, &s.kv, chunk, (size_t)ctx, o->n_batch, logits);
        if (st != TSR_OK) {
            free(chunk);
            rc = fail(st);
            goto cleanup;
        }
        for (int j = first; j < ctx - 1; j++) {
            double v = nll(logits + (size_t)j * V, V, ids[(size_t)c * ctx + j + 1]);
            sum += v;
            sum2 += v * v;
            count++;
        }
        printf("[%d]%.4f,", c + 1, exp(sum / count));
        fflush(stdout);
    }
    free(chunk);
    double mean = sum / count, var = sum2 / count - mean * mean;
    double err = count > 1 && var > 0 ? sqrt(var / (count - 1)) : 0;
    double ppl = exp(mean);
    printf("\n");
    fprintf(stderr, "tessera: %ld tokens scored in %.2f s (%.1f tok/s); PPL uncertainty +/- %.5f\n",
            count, now_s() - t0, n_chunks * ctx / (now_s() - t0), ppl * err);
    printf("Final estimate: PPL = %.4f\n", ppl);
cleanup:
    free(ids);
    free(logits);
    free(text);
    session_free(&s);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    options o = {0};
    if (strcmp(cmd, "generate") && strcmp(cmd, "tokenize") && strcmp(cmd, "perplexity")) {
        fprintf(stderr, "tessera: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    if (parse_options(argc, argv, &o))
        return 2;
    tsr_log_init(o.verbose ? TSR_LOG_INFO : TSR_LOG_WARN, 0, 1);
    if (!strcmp(cmd, "generate"))
        return cmd_generate(&o);
    if (!strcmp(cmd, "tokenize"))
        return cmd_tokenize(&o);
    return cmd_perplexity(&o);
}
