/* launcher/tessera_cli.c - `tessera-cli`, the command-line client of a
 * Tessera server: generate (streamed to stdout), health, info, tokenize,
 * detokenize, abort and train (a LoRA adapter trained on the server from a
 * local JSONL file, saved locally), over gRPC (the C core API, through cli_rpc.h) with
 * protobuf-c messages from proto/tessera/v1/tessera.proto and
 * proto/grpc/health/v1/health.proto.
 *
 *   tessera-cli [--addr HOST:PORT] [--auth-token-file F] [--tls-ca F]
 *               [--timeout S] COMMAND [flags]
 *
 * Program output (generated text, ids, info) goes to stdout; statistics and
 * errors go to stderr, prefixed "tessera-cli: ". Exit codes: 0 success, 1 the
 * call failed (any gRPC status, unreachable server, not SERVING, generation
 * ended in error or was cancelled), 2 bad flags (and, for train, a bad data
 * file or --out), 128+signal when interrupted (130 for Ctrl-C), after
 * cancelling the call in flight (train: after the step in flight, and saving).
 *
 * What it is not: a server or a load generator (bench/ has that); it checks
 * the syntax of flag values only and leaves their ranges to the server, so
 * the server's own message reaches the user. docs/cli.md is its manual. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <jansson.h>

#include "grpc/health/v1/health.pb-c.h"
#include "base/clock.h"
#include "base/opt.h"
#include "launcher/cli_parse.h"
#include "launcher/cli_plot.h"
#include "launcher/cli_rpc.h"
#include "launcher/cli_train.h"
#include "runtime/train/epoch.h"
#include "tessera/v1/tessera.pb-c.h"

#ifndef TSR_CLI_VERSION
#define TSR_CLI_VERSION "unknown"
#endif

#define DEFAULT_ADDR "127.0.0.1:50051"
#define EXIT_FAIL 1
#define EXIT_USAGE 2
/* Largest response train accepts: SaveAdapter's files come in one message. */
#define TRAIN_MAX_RECV_BYTES (1 << 30)

/* ---- options ------------------------------------------------------------ */

/* Commands, as bits so each option can say where it applies. */
enum {
    CMD_GENERATE = 1u << 0,
    CMD_HEALTH = 1u << 1,
    CMD_INFO = 1u << 2,
    CMD_TOKENIZE = 1u << 3,
    CMD_DETOKENIZE = 1u << 4,
    CMD_ABORT = 1u << 5,
    CMD_TRAIN = 1u << 6,
    CMD_ANY = 0x7fu,
};

static const struct {
    const char *name;
    unsigned bit;
} k_commands[] = {
    {"generate", CMD_GENERATE}, {"health", CMD_HEALTH},         {"info", CMD_INFO},
    {"tokenize", CMD_TOKENIZE}, {"detokenize", CMD_DETOKENIZE}, {"abort", CMD_ABORT},
    {"train", CMD_TRAIN},
};

typedef enum {
    O_ADDR, O_AUTH_FILE, O_TLS_CA, O_TLS_NAME, O_TIMEOUT, O_VERBOSE,
    O_PROMPT, O_CHAT, O_SYSTEM, O_TOKENS, O_MAX_TOKENS, O_TEMPERATURE, O_TOP_K, O_TOP_P,
    O_MIN_P, O_SEED, O_REPEAT_PENALTY, O_FREQ_PENALTY, O_PRES_PENALTY, O_STOP, O_STOP_ID,
    O_MIN_TOKENS, O_IGNORE_EOS, O_LOGPROBS, O_REQUEST_ID, O_ADAPTER, O_QUIET,
    O_WAIT, O_SERVICE, O_JSON, O_TEXT, O_PARSE_SPECIAL, O_ADD_SPECIAL, O_IDS, O_SKIP_SPECIAL,
    O_DATA, O_OUT, O_STEPS, O_EPOCHS, O_LR, O_BATCH_SIZE, O_RANK, O_ALPHA, O_TARGETS,
    O_MAX_GRAD_NORM, O_WEIGHT_DECAY, O_ADAM_EPS, O_DROPOUT, O_RESUME,
    O__COUNT
} opt_id;

typedef struct {
    const char *name; /* without the leading "--" */
    opt_id id;
    int takes_value;  /* 0 = a switch */
    unsigned cmds;    /* commands it applies to */
} cli_option;

static const cli_option k_options[] = {
    {"addr", O_ADDR, 1, CMD_ANY},
    {"auth-token-file", O_AUTH_FILE, 1, CMD_ANY},
    {"tls-ca", O_TLS_CA, 1, CMD_ANY},
    {"tls-server-name", O_TLS_NAME, 1, CMD_ANY},
    {"timeout", O_TIMEOUT, 1, CMD_ANY},
    {"verbose", O_VERBOSE, 0, CMD_ANY},
    {"prompt", O_PROMPT, 1, CMD_GENERATE},
    {"chat", O_CHAT, 1, CMD_GENERATE | CMD_TOKENIZE},
    {"system", O_SYSTEM, 1, CMD_GENERATE | CMD_TOKENIZE},
    {"tokens", O_TOKENS, 1, CMD_GENERATE},
    {"max-tokens", O_MAX_TOKENS, 1, CMD_GENERATE},
    {"temperature", O_TEMPERATURE, 1, CMD_GENERATE},
    {"top-k", O_TOP_K, 1, CMD_GENERATE},
    {"top-p", O_TOP_P, 1, CMD_GENERATE},
    {"min-p", O_MIN_P, 1, CMD_GENERATE},
    {"seed", O_SEED, 1, CMD_GENERATE | CMD_TRAIN},
    {"repeat-penalty", O_REPEAT_PENALTY, 1, CMD_GENERATE},
    {"frequency-penalty", O_FREQ_PENALTY, 1, CMD_GENERATE},
    {"presence-penalty", O_PRES_PENALTY, 1, CMD_GENERATE},
    {"stop", O_STOP, 1, CMD_GENERATE},
    {"stop-id", O_STOP_ID, 1, CMD_GENERATE},
    {"min-tokens", O_MIN_TOKENS, 1, CMD_GENERATE},
    {"ignore-eos", O_IGNORE_EOS, 0, CMD_GENERATE},
    {"logprobs", O_LOGPROBS, 1, CMD_GENERATE},
    {"request-id", O_REQUEST_ID, 1, CMD_GENERATE | CMD_ABORT},
    {"adapter", O_ADAPTER, 1, CMD_GENERATE | CMD_TRAIN},
    {"quiet", O_QUIET, 0, CMD_GENERATE},
    {"wait", O_WAIT, 1, CMD_HEALTH},
    {"service", O_SERVICE, 1, CMD_HEALTH},
    {"json", O_JSON, 0, CMD_INFO},
    {"text", O_TEXT, 1, CMD_TOKENIZE},
    {"parse-special", O_PARSE_SPECIAL, 0, CMD_TOKENIZE},
    {"add-special", O_ADD_SPECIAL, 0, CMD_TOKENIZE},
    {"ids", O_IDS, 1, CMD_DETOKENIZE},
    {"skip-special", O_SKIP_SPECIAL, 0, CMD_DETOKENIZE},
    {"data", O_DATA, 1, CMD_TRAIN},
    {"out", O_OUT, 1, CMD_TRAIN},
    {"steps", O_STEPS, 1, CMD_TRAIN},
    {"epochs", O_EPOCHS, 1, CMD_TRAIN},
    {"lr", O_LR, 1, CMD_TRAIN},
    {"batch-size", O_BATCH_SIZE, 1, CMD_TRAIN},
    {"rank", O_RANK, 1, CMD_TRAIN},
    {"alpha", O_ALPHA, 1, CMD_TRAIN},
    {"targets", O_TARGETS, 1, CMD_TRAIN},
    {"max-grad-norm", O_MAX_GRAD_NORM, 1, CMD_TRAIN},
    {"weight-decay", O_WEIGHT_DECAY, 1, CMD_TRAIN},
    {"adam-eps", O_ADAM_EPS, 1, CMD_TRAIN},
    {"dropout", O_DROPOUT, 1, CMD_TRAIN},
    {"resume", O_RESUME, 0, CMD_TRAIN},
};
#define N_OPTIONS (sizeof k_options / sizeof k_options[0])

/* The command line, parsed but not yet interpreted: the last value of each
 * option (switches hold "1"), and every value of the repeatable ones. All
 * strings point into argv. */
typedef struct {
    const char *cmd_name;
    unsigned cmd;
    const char *val[O__COUNT];
    const char **stops; /* every --stop, in order */
    size_t n_stops;
    const char **stop_ids; /* every --stop-id, in order */
    size_t n_stop_ids;
    int help, version;
} cli_args;

/* What the commands share once the flags are read. */
typedef struct {
    tsr_cli_conn_t *conn;
    const char *addr;
    double timeout_s; /* 0 = none */
    int have_token;
    int verbose;
} cli_ctx;

static const char k_usage[] =
    "usage: tessera-cli [global flags] COMMAND [flags]\n"
    "\n"
    "Commands:\n"
    "  generate    (--prompt TEXT | --chat TEXT [--system TEXT] | --tokens 1,2,3)\n"
    "              [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P]\n"
    "              [--seed S] [--repeat-penalty R] [--frequency-penalty F]\n"
    "              [--presence-penalty P] [--stop S]... [--stop-id N]... [--min-tokens N]\n"
    "              [--ignore-eos] [--logprobs N] [--request-id ID] [--adapter NAME] [--quiet]\n"
    "              streams the answer to stdout; usage and timings to stderr\n"
    "  health      [--wait S] [--service NAME]   prints SERVING or NOT_SERVING;\n"
    "              exit 0 only when SERVING; --wait polls up to S seconds\n"
    "  info        [--json]                      model and server information\n"
    "  tokenize    (--text T | --chat T [--system T]) [--parse-special] [--add-special]\n"
    "              prints the ids on one line, separated by spaces\n"
    "  detokenize  --ids 1,2,3 [--skip-special]  prints the text\n"
    "  abort       --request-id ID               cancels a queued or running request\n"
    "  train       --data F.jsonl --adapter NAME --out DIR [--steps N | --epochs N]\n"
    "              [--batch-size B] [--lr LR] [--rank R] [--alpha A] [--targets q,v,...]\n"
    "              [--seed S] [--max-grad-norm G] [--weight-decay W] [--adam-eps E]\n"
    "              [--dropout P] [--resume]\n"
    "              trains a LoRA adapter on the server (defaults: 1 epoch, batch 8, lr 1e-4,\n"
    "              rank 8, alpha 16, targets q,v, seed 0, max-grad-norm 1, weight decay 0,\n"
    "              adam-eps 1e-8);\n"
    "              one line per step on stdout; saves the adapter (PEFT), loss.csv and\n"
    "              loss.png in DIR. Ctrl-C stops after the current step and saves\n"
    "\n"
    "Global flags (before or after the command):\n"
    "  --addr HOST:PORT         server address (default " DEFAULT_ADDR ")\n"
    "  --auth-token-file F      bearer token file (default: $TESSERA_AUTH_TOKEN, if set)\n"
    "  --tls-ca F               server certificate or CA (PEM); turns TLS on\n"
    "  --tls-server-name NAME   name the certificate must carry, if not the host of --addr\n"
    "  --timeout S              deadline of each call in seconds (default none)\n"
    "  --verbose                say more on stderr\n"
    "  --help, --version\n"
    "\n"
    "Values take the next argument or follow '=' (--top-p=0.9). Exit status: 0 ok,\n"
    "1 the call failed, 2 bad flags (train: or a bad --data or --out), 130 interrupted.\n"
    "See docs/cli.md.\n";

/* Reports a usage error and returns EXIT_USAGE. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("tessera-cli: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nTry 'tessera-cli --help'.\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

static const cli_option *find_option(const char *name, size_t len) {
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strlen(k_options[i].name) == len && memcmp(k_options[i].name, name, len) == 0)
            return &k_options[i];
    return NULL;
}

static const char *option_name(opt_id id) {
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (k_options[i].id == id)
            return k_options[i].name;
    return "?";
}

/* Fills *a from argv. Returns 0, or EXIT_USAGE after printing why. The
 * repeatable-option arrays are malloc'd (freed by free_args). */
static int parse_args(int argc, char **argv, cli_args *a) {
    memset(a, 0, sizeof *a);
    a->stops = calloc((size_t)argc, sizeof *a->stops);
    a->stop_ids = calloc((size_t)argc, sizeof *a->stop_ids);
    if (!a->stops || !a->stop_ids) {
        fputs("tessera-cli: out of memory\n", stderr);
        return EXIT_FAIL;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            a->help = 1;
            continue;
        }
        if (strcmp(arg, "--version") == 0) {
            a->version = 1;
            continue;
        }
        if (strcmp(arg, "-v") == 0) {
            a->val[O_VERBOSE] = "1";
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (arg[0] == '-' && arg[1] != '\0')
                return usage_error("unknown flag '%s'", arg);
            if (a->cmd_name)
                return usage_error("unexpected argument '%s' (values follow their flag, "
                                   "e.g. --prompt \"...\")",
                                   arg);
            if (strcmp(arg, "help") == 0) {
                a->help = 1;
                continue;
            }
            for (size_t k = 0; k < sizeof k_commands / sizeof k_commands[0]; k++)
                if (strcmp(arg, k_commands[k].name) == 0)
                    a->cmd = k_commands[k].bit;
            if (!a->cmd)
                return usage_error("unknown command '%s' (commands: generate, health, info, "
                                   "tokenize, detokenize, abort, train)",
                                   arg);
            a->cmd_name = arg;
            continue;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_option *o = find_option(name, name_len);
        if (!o)
            return usage_error("unknown flag '--%.*s'", (int)name_len, name);
        const char *value = "1";
        if (o->takes_value) {
            if (eq) {
                value = eq + 1;
            } else {
                if (i + 1 >= argc)
                    return usage_error("--%s needs a value", o->name);
                value = argv[++i];
            }
        } else if (eq) {
            return usage_error("--%s takes no value", o->name);
        }
        if (o->id == O_STOP)
            a->stops[a->n_stops++] = value;
        else if (o->id == O_STOP_ID)
            a->stop_ids[a->n_stop_ids++] = value;
        a->val[o->id] = value;
    }
    if (a->help || a->version)
        return 0;
    if (!a->cmd)
        return usage_error("no command given (generate, health, info, tokenize, detokenize, "
                           "abort, train)");
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (a->val[k_options[i].id] && !(k_options[i].cmds & a->cmd))
            return usage_error("--%s does not apply to '%s'", k_options[i].name, a->cmd_name);
    return 0;
}

static void free_args(cli_args *a) {
    free(a->stops);
    free(a->stop_ids);
}

/* Parsers for option values: 0, or EXIT_USAGE after printing the flag and
 * what it expects. Absent options leave *out untouched. */
static int opt_i32(const cli_args *a, opt_id id, int32_t *out) {
    if (a->val[id] && tsr_opt_parse_i32(a->val[id], out) != 0)
        return usage_error("--%s expects an integer, got '%s'", option_name(id), a->val[id]);
    return 0;
}
static int opt_f32(const cli_args *a, opt_id id, float *out) {
    if (a->val[id] && tsr_opt_parse_f32(a->val[id], out) != 0)
        return usage_error("--%s expects a number, got '%s'", option_name(id), a->val[id]);
    return 0;
}
static int opt_seconds(const cli_args *a, opt_id id, double *out) {
    double v;
    if (!a->val[id])
        return 0;
    if (tsr_opt_parse_f64(a->val[id], &v) != 0 || v < 0)
        return usage_error("--%s expects seconds (a number >= 0), got '%s'", option_name(id),
                           a->val[id]);
    *out = v;
    return 0;
}

/* ---- signals ------------------------------------------------------------ */

/* The signal that asked us to stop (SIGINT, SIGTERM), 0 while none: the call
 * in flight is cancelled. With g_stop below, the only global state: a signal
 * handler can reach nothing else. */
static volatile sig_atomic_t g_signal;
/* train: the signal that asked to stop after the step in flight and save
 * the adapter (the calls are left to finish); 0 while none. */
static volatile sig_atomic_t g_stop;

static void on_signal(int sig) { g_signal = sig; }

/* train: the first signal stops the training gently (g_stop), the second
 * cancels the call in flight (g_signal), a third kills the process. */
static void on_train_signal(int sig) {
    if (!g_stop) {
        g_stop = sig;
        return;
    }
    g_signal = sig;
    signal(SIGINT, SIG_DFL); /* async-signal-safe, unlike most of libc */
    signal(SIGTERM, SIG_DFL);
}

/* One-shot handlers: a second Ctrl-C kills the process at once, should
 * the cancellation itself hang. `train` counts its signals instead. */
static void install_signal_handlers(int train) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = train ? on_train_signal : on_signal;
    sa.sa_flags = train ? 0 : SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* gRPC core's own log lines ("E1125 ... ssl_transport_security.cc ...")
 * repeat what the call's status says, in a developer's terms; a user sees
 * the status. They stay with --verbose, GRPC_VERBOSITY or GRPC_TRACE. */
static void drop_grpc_log(gpr_log_func_args *args) { (void)args; }

static int interrupted_exit(void) {
    fputs("tessera-cli: interrupted; the call was cancelled\n", stderr);
    return 128 + (int)g_signal;
}

/* ---- reporting ---------------------------------------------------------- */

/* Prints why a call failed and returns the exit code. */
static int report_failure(const cli_ctx *cx, const char *what, const tsr_cli_status *st) {
    if (st->interrupted || g_signal)
        return interrupted_exit();
    if (st->local_error) {
        fprintf(stderr, "tessera-cli: %s: %s\n", what, st->details);
        return EXIT_FAIL;
    }
    if (st->unreachable) {
        fprintf(stderr, "tessera-cli: cannot reach %s: UNAVAILABLE: %s\n", cx->addr,
                st->details);
        return EXIT_FAIL;
    }
    fprintf(stderr, "tessera-cli: %s: %s", tsr_cli_status_name(st->code), st->details);
    if (st->code == GRPC_STATUS_DEADLINE_EXCEEDED && cx->timeout_s > 0)
        fprintf(stderr, " (--timeout %g s)", cx->timeout_s);
    if (st->code == GRPC_STATUS_UNAUTHENTICATED && !cx->have_token)
        fputs(" (no token was sent: use --auth-token-file or TESSERA_AUTH_TOKEN)", stderr);
    fputc('\n', stderr);
    return EXIT_FAIL;
}

/* Sleeps `s` seconds in short steps; returns early (1) on a signal. */
static int sleep_interruptible(double s) {
    double end = tsr_now_s() + s;
    while (!g_signal) {
        double left = end - tsr_now_s();
        if (left <= 0)
            return 0;
        if (left > 0.05)
            left = 0.05;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
    return 1;
}

/* ---- generate ----------------------------------------------------------- */

typedef struct {
    int printed_any;       /* some text reached stdout */
    char last_char;        /* the last byte written */
    int have_final;
    Tessera__V1__FinishReason finish;
    int prompt_tokens, completion_tokens, cached_tokens;
    double queued_s, ttft_s, total_s;
    char *error;           /* GenerateFinal.error (malloc'd) */
    char request_id[256];
    FILE *logprobs;        /* open_memstream of the logprob lines; NULL = not asked */
} gen_state;

static const char *finish_name(Tessera__V1__FinishReason r) {
    switch (r) {
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_STOP: return "stop";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_LENGTH: return "length";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_CANCELLED: return "cancelled";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_ERROR: return "error";
    default: return "unspecified";
    }
}

/* Writes one chunk's logprobs as lines "id logprob | top: id 'text' lp, ...". */
static void log_logprobs(FILE *f, const Tessera__V1__GenerateChunk *ch) {
    for (size_t i = 0; i < ch->n_logprobs; i++) {
        const Tessera__V1__TokenLogprob *lp = ch->logprobs[i];
        fprintf(f, "  token %d  logprob %.4f", lp->token_id, lp->logprob);
        for (size_t k = 0; k < lp->n_top; k++) {
            const Tessera__V1__TopLogprob *t = lp->top[k];
            fprintf(f, "%s %d ", k == 0 ? "  | top:" : ",", t->token_id);
            /* the token text, quoted, with control bytes escaped */
            fputc('\'', f);
            for (const unsigned char *p = (const unsigned char *)t->text; *p; p++) {
                if (*p < 0x20 || *p == '\'' || *p == '\\')
                    fprintf(f, "\\x%02x", *p);
                else
                    fputc(*p, f);
            }
            fprintf(f, "' %.4f", t->logprob);
        }
        fputc('\n', f);
    }
}

static int gen_on_message(void *ctx, const uint8_t *data, size_t len, char *why, size_t why_size) {
    gen_state *g = ctx;
    Tessera__V1__GenerateResponse *r =
        tessera__v1__generate_response__unpack(NULL, len, data);
    if (!r) {
        snprintf(why, why_size, "cannot decode a GenerateResponse (%zu bytes)", len);
        return -1;
    }
    int rc = 0;
    if (r->request_id && r->request_id[0] && !g->request_id[0])
        snprintf(g->request_id, sizeof g->request_id, "%s", r->request_id);
    if (r->kind_case == TESSERA__V1__GENERATE_RESPONSE__KIND_CHUNK) {
        const Tessera__V1__GenerateChunk *ch = r->chunk;
        size_t n = strlen(ch->text);
        if (n > 0) {
            if (fwrite(ch->text, 1, n, stdout) != n || fflush(stdout) != 0) {
                snprintf(why, why_size, "writing to stdout: %s", strerror(errno));
                rc = -1;
            }
            g->printed_any = 1;
            g->last_char = ch->text[n - 1];
        }
        if (g->logprobs)
            log_logprobs(g->logprobs, ch);
    } else if (r->kind_case == TESSERA__V1__GENERATE_RESPONSE__KIND_FINAL) {
        const Tessera__V1__GenerateFinal *fin = r->final;
        g->have_final = 1;
        g->finish = fin->finish_reason;
        if (fin->usage) {
            g->prompt_tokens = fin->usage->prompt_tokens;
            g->completion_tokens = fin->usage->completion_tokens;
            g->cached_tokens = fin->usage->cached_tokens;
        }
        if (fin->timings) {
            g->queued_s = fin->timings->queued_s;
            g->ttft_s = fin->timings->time_to_first_token_s;
            g->total_s = fin->timings->total_s;
        }
        if (fin->error && fin->error[0]) {
            free(g->error);
            g->error = strdup(fin->error);
        }
    }
    tessera__v1__generate_response__free_unpacked(r, NULL);
    return rc;
}

static int cmd_generate(const cli_ctx *cx, const cli_args *a) {
    int n_inputs = !!a->val[O_PROMPT] + !!a->val[O_CHAT] + !!a->val[O_TOKENS];
    if (n_inputs != 1)
        return usage_error("generate needs exactly one of --prompt, --chat and --tokens");
    if (a->val[O_SYSTEM] && !a->val[O_CHAT])
        return usage_error("--system goes with --chat");

    Tessera__V1__SamplingParams sp = TESSERA__V1__SAMPLING_PARAMS__INIT;
    int rc = 0;
    if ((rc = opt_f32(a, O_TEMPERATURE, &sp.temperature)) ||
        (rc = opt_i32(a, O_TOP_K, &sp.top_k)) ||
        (rc = opt_f32(a, O_TOP_P, &sp.top_p)) || (rc = opt_f32(a, O_MIN_P, &sp.min_p)) ||
        (rc = opt_f32(a, O_REPEAT_PENALTY, &sp.repetition_penalty)) ||
        (rc = opt_f32(a, O_FREQ_PENALTY, &sp.frequency_penalty)) ||
        (rc = opt_f32(a, O_PRES_PENALTY, &sp.presence_penalty)) ||
        (rc = opt_i32(a, O_MAX_TOKENS, &sp.max_tokens)) ||
        (rc = opt_i32(a, O_MIN_TOKENS, &sp.min_tokens)))
        return rc;
    if (a->val[O_SEED] && tsr_opt_parse_u64(a->val[O_SEED], &sp.seed) != 0)
        return usage_error("--seed expects an unsigned integer, got '%s'", a->val[O_SEED]);
    if (a->val[O_LOGPROBS]) {
        int32_t n;
        if (tsr_opt_parse_i32(a->val[O_LOGPROBS], &n) != 0 || n < 0)
            return usage_error("--logprobs expects a count of alternatives >= 0, got '%s'",
                               a->val[O_LOGPROBS]);
        sp.logprobs = 1;
        sp.top_logprobs = n;
    }
    sp.ignore_eos = a->val[O_IGNORE_EOS] != NULL;
    sp.n_stop = a->n_stops;
    sp.stop = (char **)a->stops;

    /* Stop ids: each --stop-id takes one id or a list ("2,32000"). */
    int32_t *stop_ids = NULL, *tokens = NULL;
    size_t n_stop_ids = 0, n_tokens = 0;
    gen_state g;
    memset(&g, 0, sizeof g);
    char *lp_buf = NULL;
    size_t lp_len = 0;
    rc = EXIT_FAIL;
    for (size_t i = 0; i < a->n_stop_ids; i++) {
        int32_t *ids;
        size_t n;
        if (tsr_cli_parse_id_list(a->stop_ids[i], &ids, &n) != 0) {
            rc = usage_error("--stop-id expects token ids (N or N,M,...), got '%s'",
                             a->stop_ids[i]);
            goto cleanup;
        }
        int32_t *grown = realloc(stop_ids, (n_stop_ids + n) * sizeof *grown);
        if (!grown) {
            free(ids);
            fputs("tessera-cli: out of memory\n", stderr);
            goto cleanup;
        }
        stop_ids = grown;
        memcpy(stop_ids + n_stop_ids, ids, n * sizeof *ids);
        n_stop_ids += n;
        free(ids);
    }
    sp.n_stop_token_ids = n_stop_ids;
    sp.stop_token_ids = stop_ids;

    Tessera__V1__GenerateRequest req = TESSERA__V1__GENERATE_REQUEST__INIT;
    Tessera__V1__TokenIds tok_msg = TESSERA__V1__TOKEN_IDS__INIT;
    Tessera__V1__ChatInput chat = TESSERA__V1__CHAT_INPUT__INIT;
    Tessera__V1__ChatMessage sys_msg = TESSERA__V1__CHAT_MESSAGE__INIT;
    Tessera__V1__ChatMessage user_msg = TESSERA__V1__CHAT_MESSAGE__INIT;
    Tessera__V1__ChatMessage *msgs[2];
    req.sampling = &sp;
    if (a->val[O_REQUEST_ID])
        req.request_id = (char *)a->val[O_REQUEST_ID];
    if (a->val[O_ADAPTER])
        req.adapter = (char *)a->val[O_ADAPTER];
    if (a->val[O_PROMPT]) {
        req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_TEXT;
        req.text = (char *)a->val[O_PROMPT];
    } else if (a->val[O_TOKENS]) {
        if (tsr_cli_parse_id_list(a->val[O_TOKENS], &tokens, &n_tokens) != 0) {
            rc = usage_error("--tokens expects token ids (1,2,3), got '%s'", a->val[O_TOKENS]);
            goto cleanup;
        }
        tok_msg.n_ids = n_tokens;
        tok_msg.ids = tokens;
        req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_TOKENS;
        req.tokens = &tok_msg;
    } else {
        size_t n = 0;
        if (a->val[O_SYSTEM]) {
            sys_msg.role = "system";
            sys_msg.content = (char *)a->val[O_SYSTEM];
            msgs[n++] = &sys_msg;
        }
        user_msg.role = "user";
        user_msg.content = (char *)a->val[O_CHAT];
        msgs[n++] = &user_msg;
        chat.n_messages = n;
        chat.messages = msgs;
        req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_CHAT;
        req.chat = &chat;
    }

    if (sp.logprobs && !(g.logprobs = open_memstream(&lp_buf, &lp_len))) {
        fprintf(stderr, "tessera-cli: open_memstream: %s\n", strerror(errno));
        goto cleanup;
    }

    tsr_cli_status st;
    int call_rc = tsr_cli_call_stream(cx->conn, "/tessera.v1.Tessera/Generate",
                                      &req.base, gen_on_message, &g, &st);
    /* Text never ends mid-line on the terminal, whatever happened. */
    if (call_rc == 0 || (g.printed_any && g.last_char != '\n')) {
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (g.logprobs) {
        fclose(g.logprobs);
        g.logprobs = NULL;
        if (lp_len > 0)
            fprintf(stderr, "tessera-cli: logprobs:\n%s", lp_buf);
    }
    if (call_rc != 0) {
        rc = report_failure(cx, "generate", &st);
        goto cleanup;
    }
    if (!g.have_final) {
        fputs("tessera-cli: the stream ended without a final message\n", stderr);
        goto cleanup;
    }
    if (cx->verbose)
        fprintf(stderr, "tessera-cli: request %s, queued %.3g s\n",
                g.request_id[0] ? g.request_id : "(no id)", g.queued_s);
    if (!a->val[O_QUIET]) {
        fprintf(stderr, "tessera-cli: prompt %d tokens, completion %d tokens", g.prompt_tokens,
                g.completion_tokens);
        if (g.cached_tokens > 0)
            fprintf(stderr, " (%d cached)", g.cached_tokens);
        fprintf(stderr, ", finish %s, ttft %.3g s, total %.3g s\n", finish_name(g.finish),
                g.ttft_s, g.total_s);
    }
    switch (g.finish) {
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_ERROR:
        fprintf(stderr, "tessera-cli: generation failed: %s\n", g.error ? g.error : "(no message)");
        break;
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_CANCELLED:
        fputs("tessera-cli: the server cancelled the request (aborted or shutting down)\n",
              stderr);
        break;
    default:
        rc = 0;
    }
cleanup:
    if (g.logprobs)
        fclose(g.logprobs);
    free(lp_buf);
    free(g.error);
    free(stop_ids);
    free(tokens);
    return rc;
}

/* ---- health ------------------------------------------------------------- */

static const char *serving_name(Grpc__Health__V1__HealthCheckResponse__ServingStatus s) {
    switch (s) {
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING: return "SERVING";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING: return "NOT_SERVING";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN:
        return "SERVICE_UNKNOWN";
    default: return "UNKNOWN";
    }
}

/* One Check. Returns 0 with *status set, or -1 with *st saying why. */
static int health_check(const cli_ctx *cx, const char *service,
                        Grpc__Health__V1__HealthCheckResponse__ServingStatus *status,
                        tsr_cli_status *st) {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    ProtobufCMessage *resp;
    if (tsr_cli_call_unary(cx->conn, "/grpc.health.v1.Health/Check", &req.base,
                           &grpc__health__v1__health_check_response__descriptor, &resp, st) != 0)
        return -1;
    *status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int cmd_health(const cli_ctx *cx, const cli_args *a) {
    double wait_s = -1; /* < 0: one check */
    int rc = opt_seconds(a, O_WAIT, &wait_s);
    if (rc)
        return rc;
    const char *service = a->val[O_SERVICE] ? a->val[O_SERVICE] : "";
    Grpc__Health__V1__HealthCheckResponse__ServingStatus status;
    tsr_cli_status st;

    if (wait_s < 0) {
        if (health_check(cx, service, &status, &st) != 0)
            return report_failure(cx, "health", &st);
        printf("%s\n", serving_name(status));
        return status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                   ? 0 : EXIT_FAIL;
    }

    /* Poll until SERVING. A server that is not up yet (unreachable, or
     * UNAVAILABLE/NOT_SERVING while it loads) is worth waiting for; any
     * other answer (NOT_FOUND for an unknown service, UNIMPLEMENTED) is not. */
    double start = tsr_now_s(), end = start + wait_s;
    int have_status = 0, have_error = 0, attempts = 0;
    for (;;) {
        double left = end - tsr_now_s();
        double per_call = cx->timeout_s > 0 ? cx->timeout_s : 2.0;
        if (per_call > left)
            per_call = left > 0.05 ? left : 0.05;
        tsr_cli_conn_set_timeout(cx->conn, per_call);
        attempts++;
        if (health_check(cx, service, &status, &st) == 0) {
            have_status = 1;
            have_error = 0;
            if (status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
                printf("SERVING\n");
                if (cx->verbose)
                    fprintf(stderr, "tessera-cli: SERVING after %.1f s (%d checks)\n",
                            tsr_now_s() - start, attempts);
                return 0;
            }
            if (cx->verbose)
                fprintf(stderr, "tessera-cli: %s, waiting\n", serving_name(status));
        } else {
            if (st.interrupted || g_signal)
                return interrupted_exit();
            int transient = st.unreachable || st.code == GRPC_STATUS_UNAVAILABLE ||
                            st.code == GRPC_STATUS_DEADLINE_EXCEEDED;
            if (!transient || st.local_error)
                return report_failure(cx, "health", &st);
            have_error = 1;
            /* A fresh channel, so the next check connects at once instead
             * of waiting out gRPC's reconnect backoff. */
            if (st.unreachable && tsr_cli_conn_reset(cx->conn) != 0) {
                fprintf(stderr, "tessera-cli: cannot create a channel to %s\n", cx->addr);
                return EXIT_FAIL;
            }
            if (cx->verbose)
                fprintf(stderr, "tessera-cli: %s: %s, waiting\n",
                        st.unreachable ? "unreachable" : tsr_cli_status_name(st.code),
                        st.details);
        }
        if (tsr_now_s() >= end)
            break;
        double pause = end - tsr_now_s();
        if (sleep_interruptible(pause < 0.2 ? pause : 0.2))
            return interrupted_exit();
    }
    if (have_error) {
        fprintf(stderr, "tessera-cli: not SERVING after %g s; last attempt: ", wait_s);
        if (st.unreachable)
            fprintf(stderr, "cannot reach %s: UNAVAILABLE: %s\n", cx->addr, st.details);
        else
            fprintf(stderr, "%s: %s\n", tsr_cli_status_name(st.code), st.details);
    } else if (have_status) {
        printf("%s\n", serving_name(status));
        fprintf(stderr, "tessera-cli: not SERVING after %g s\n", wait_s);
    }
    return EXIT_FAIL;
}

/* ---- info --------------------------------------------------------------- */

static int print_info_json(const Tessera__V1__ModelInfo *m, const Tessera__V1__ServerInfo *s) {
    json_t *root = json_pack(
        "{s:{s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i},"
        "s:{s:i,s:i,s:i,s:i,s:i,s:f,s:s,s:i}}",
        "model", "name", m->name, "architecture", m->architecture, "format", m->format,
        "n_layer", m->n_layer, "n_embd", m->n_embd, "n_head",
        m->n_head, "n_head_kv", m->n_head_kv, "head_dim",
        m->head_dim, "n_ff", m->n_ff, "vocab_size",
        m->vocab_size, "context_length", m->context_length,
        "train_context_length", m->train_context_length, "tp", m->tp,
        "pp", m->pp, "bos_token_id", m->bos_token_id, "eos_token_id",
        m->eos_token_id,
        "server", "active_requests", s->active_requests, "queued_requests",
        s->queued_requests, "kv_blocks_used", s->kv_blocks_used,
        "kv_blocks_total", s->kv_blocks_total, "kv_block_size",
        s->kv_block_size, "uptime_s", s->uptime_s, "version", s->version,
        "world_size", s->world_size);
    if (!root) {
        fputs("tessera-cli: json_pack failed (invalid UTF-8 in a server string?)\n", stderr);
        return EXIT_FAIL;
    }
    int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    fputc('\n', stdout);
    if (rc != 0 || fflush(stdout) != 0) {
        fprintf(stderr, "tessera-cli: writing to stdout: %s\n", strerror(errno));
        return EXIT_FAIL;
    }
    return 0;
}

static void print_info_text(const Tessera__V1__ModelInfo *m, const Tessera__V1__ServerInfo *s) {
    printf("model:        %s (%s, %s)\n", m->name[0] ? m->name : "(unnamed)", m->architecture,
           m->format);
    printf("layers:       %d, embedding %d, feed-forward %d\n", m->n_layer, m->n_embd, m->n_ff);
    printf("heads:        %d query, %d key/value, head dim %d\n", m->n_head, m->n_head_kv,
           m->head_dim);
    printf("vocabulary:   %d tokens (bos %d, eos %d)\n", m->vocab_size, m->bos_token_id,
           m->eos_token_id);
    printf("context:      %d tokens served (trained on %d)\n", m->context_length,
           m->train_context_length);
    printf("layout:       tp %d x pp %d on %d ranks\n", m->tp, m->pp, s->world_size);
    printf("server:       version %s, up %.1f s\n", s->version[0] ? s->version : "?",
           s->uptime_s);
    printf("requests:     %d active, %d queued\n", s->active_requests, s->queued_requests);
    printf("kv cache:     %d of %d blocks in use (%d tokens per block)\n", s->kv_blocks_used,
           s->kv_blocks_total, s->kv_block_size);
}

static int cmd_info(const cli_ctx *cx, const cli_args *a) {
    Tessera__V1__GetModelInfoRequest mreq = TESSERA__V1__GET_MODEL_INFO_REQUEST__INIT;
    Tessera__V1__GetServerInfoRequest sreq = TESSERA__V1__GET_SERVER_INFO_REQUEST__INIT;
    ProtobufCMessage *m = NULL, *s = NULL;
    tsr_cli_status st;
    int rc;
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/GetModelInfo", &mreq.base,
                           &tessera__v1__model_info__descriptor, &m, &st) != 0) {
        rc = report_failure(cx, "GetModelInfo", &st);
        goto cleanup;
    }
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/GetServerInfo", &sreq.base,
                           &tessera__v1__server_info__descriptor, &s, &st) != 0) {
        rc = report_failure(cx, "GetServerInfo", &st);
        goto cleanup;
    }
    if (a->val[O_JSON]) {
        rc = print_info_json((Tessera__V1__ModelInfo *)m, (Tessera__V1__ServerInfo *)s);
    } else {
        print_info_text((Tessera__V1__ModelInfo *)m, (Tessera__V1__ServerInfo *)s);
        rc = 0;
    }
cleanup:
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    if (s)
        protobuf_c_message_free_unpacked(s, NULL);
    return rc;
}

/* ---- tokenize, detokenize, abort ---------------------------------------- */

static int cmd_tokenize(const cli_ctx *cx, const cli_args *a) {
    if (!!a->val[O_TEXT] + !!a->val[O_CHAT] != 1)
        return usage_error("tokenize needs exactly one of --text and --chat");
    if (a->val[O_SYSTEM] && !a->val[O_CHAT])
        return usage_error("--system goes with --chat");
    Tessera__V1__TokenizeRequest req = TESSERA__V1__TOKENIZE_REQUEST__INIT;
    Tessera__V1__ChatInput chat = TESSERA__V1__CHAT_INPUT__INIT;
    Tessera__V1__ChatMessage sys_msg = TESSERA__V1__CHAT_MESSAGE__INIT;
    Tessera__V1__ChatMessage user_msg = TESSERA__V1__CHAT_MESSAGE__INIT;
    Tessera__V1__ChatMessage *msgs[2];
    req.parse_special = a->val[O_PARSE_SPECIAL] != NULL;
    req.add_special = a->val[O_ADD_SPECIAL] != NULL;
    if (a->val[O_TEXT]) {
        req.input_case = TESSERA__V1__TOKENIZE_REQUEST__INPUT_TEXT;
        req.text = (char *)a->val[O_TEXT];
    } else {
        size_t n = 0;
        if (a->val[O_SYSTEM]) {
            sys_msg.role = "system";
            sys_msg.content = (char *)a->val[O_SYSTEM];
            msgs[n++] = &sys_msg;
        }
        user_msg.role = "user";
        user_msg.content = (char *)a->val[O_CHAT];
        msgs[n++] = &user_msg;
        chat.n_messages = n;
        chat.messages = msgs;
        req.input_case = TESSERA__V1__TOKENIZE_REQUEST__INPUT_CHAT;
        req.chat = &chat;
    }
    ProtobufCMessage *resp;
    tsr_cli_status st;
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/Tokenize", &req.base,
                           &tessera__v1__tokenize_response__descriptor, &resp, &st) != 0)
        return report_failure(cx, "tokenize", &st);
    const Tessera__V1__TokenizeResponse *r = (const Tessera__V1__TokenizeResponse *)resp;
    for (size_t i = 0; i < r->n_ids; i++)
        printf(i ? " %d" : "%d", r->ids[i]);
    putchar('\n');
    if (cx->verbose)
        fprintf(stderr, "tessera-cli: %zu tokens\n", r->n_ids);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int cmd_detokenize(const cli_ctx *cx, const cli_args *a) {
    if (!a->val[O_IDS])
        return usage_error("detokenize needs --ids 1,2,3");
    Tessera__V1__DetokenizeRequest req = TESSERA__V1__DETOKENIZE_REQUEST__INIT;
    int32_t *ids;
    size_t n;
    if (tsr_cli_parse_id_list(a->val[O_IDS], &ids, &n) != 0)
        return usage_error("--ids expects token ids (1,2,3), got '%s'", a->val[O_IDS]);
    req.n_ids = n;
    req.ids = ids;
    req.skip_special = a->val[O_SKIP_SPECIAL] != NULL;
    ProtobufCMessage *resp;
    tsr_cli_status st;
    int rc = 0;
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/Detokenize", &req.base,
                           &tessera__v1__detokenize_response__descriptor, &resp, &st) != 0) {
        rc = report_failure(cx, "detokenize", &st);
    } else {
        printf("%s\n", ((const Tessera__V1__DetokenizeResponse *)resp)->text);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    free(ids);
    return rc;
}

static int cmd_abort(const cli_ctx *cx, const cli_args *a) {
    if (!a->val[O_REQUEST_ID] || !a->val[O_REQUEST_ID][0])
        return usage_error("abort needs --request-id ID");
    Tessera__V1__AbortRequest req = TESSERA__V1__ABORT_REQUEST__INIT;
    req.request_id = (char *)a->val[O_REQUEST_ID];
    ProtobufCMessage *resp;
    tsr_cli_status st;
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/Abort", &req.base,
                           &tessera__v1__abort_response__descriptor, &resp, &st) != 0)
        return report_failure(cx, "abort", &st);
    int found = ((const Tessera__V1__AbortResponse *)resp)->found;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!found) {
        fprintf(stderr, "tessera-cli: no request '%s' is queued or running\n", req.request_id);
        return EXIT_FAIL;
    }
    printf("aborted %s\n", req.request_id);
    return 0;
}

/* ---- train -------------------------------------------------------------- */

/* The flags of train, checked. targets points into a malloc'd copy of
 * --targets (train_opts_free). */
typedef struct {
    const char *data, *adapter, *out;
    int steps, epochs, batch;
    int32_t rank;
    float lr, alpha, max_grad_norm, weight_decay, dropout, adam_eps; /* adam_eps 0: 1e-8 */
    uint64_t seed;
    char *targets_buf;
    char *targets[16];
    size_t n_targets;
    int resume;
} train_opts;

static void train_opts_free(train_opts *o) { free(o->targets_buf); }

/* Fills *o from the flags with tessera train's defaults. 0 or EXIT_USAGE. */
static int train_parse(const cli_args *a, train_opts *o) {
    memset(o, 0, sizeof *o);
    o->data = a->val[O_DATA];
    o->adapter = a->val[O_ADAPTER];
    o->out = a->val[O_OUT];
    if (!o->data || !o->adapter || !o->out)
        return usage_error("train needs --data FILE.jsonl, --adapter NAME and --out DIR");
    if (!o->adapter[0])
        return usage_error("--adapter is empty: name the adapter");
    o->epochs = 1;
    o->batch = 8;
    o->rank = 8;
    o->lr = 1e-4f;
    o->alpha = 16.0f;
    o->max_grad_norm = 1.0f;
    o->resume = a->val[O_RESUME] != NULL;
    int rc;
    if ((rc = opt_i32(a, O_STEPS, &o->steps)) || (rc = opt_i32(a, O_EPOCHS, &o->epochs)) ||
        (rc = opt_i32(a, O_BATCH_SIZE, &o->batch)) || (rc = opt_i32(a, O_RANK, &o->rank)) ||
        (rc = opt_f32(a, O_LR, &o->lr)) || (rc = opt_f32(a, O_ALPHA, &o->alpha)) ||
        (rc = opt_f32(a, O_MAX_GRAD_NORM, &o->max_grad_norm)) ||
        (rc = opt_f32(a, O_WEIGHT_DECAY, &o->weight_decay)) ||
        (rc = opt_f32(a, O_ADAM_EPS, &o->adam_eps)) ||
        (rc = opt_f32(a, O_DROPOUT, &o->dropout)))
        return rc;
    /* Where the protocol reads 0 as "the default", the client refuses it
     * rather than send a value the server would silently replace. */
    static const struct {
        opt_id id;
        const char *what;
    } positive[] = {{O_STEPS, "a number of steps >= 1"}, {O_EPOCHS, "a number of epochs >= 1"},
                    {O_BATCH_SIZE, "examples per step, >= 1"}, {O_RANK, "a LoRA rank >= 1"},
                    {O_LR, "a learning rate > 0"}, {O_ALPHA, "a LoRA alpha > 0"},
                    {O_ADAM_EPS, "an AdamW epsilon > 0"}};
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++) {
        opt_id id = positive[i].id;
        double v = id == O_STEPS ? o->steps : id == O_EPOCHS ? o->epochs
                   : id == O_BATCH_SIZE ? o->batch : id == O_RANK ? o->rank
                   : id == O_LR ? (double)o->lr : id == O_ALPHA ? (double)o->alpha
                   : (double)o->adam_eps;
        if (a->val[id] && !(v > 0))
            return usage_error("--%s expects %s, got '%s'", option_name(id), positive[i].what,
                               a->val[id]);
    }
    if (a->val[O_SEED] && tsr_opt_parse_u64(a->val[O_SEED], &o->seed) != 0)
        return usage_error("--seed expects an unsigned integer, got '%s'", a->val[O_SEED]);
    const char *targets = a->val[O_TARGETS] ? a->val[O_TARGETS] : "q,v";
    if (!(o->targets_buf = strdup(targets))) {
        fputs("tessera-cli: out of memory\n", stderr);
        return EXIT_FAIL;
    }
    for (char *p = o->targets_buf;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        while (*p == ' ')
            p++;
        tsr_cli_rstrip(p);
        if (!*p || o->n_targets == sizeof o->targets / sizeof o->targets[0])
            return usage_error("--targets expects modules separated by commas "
                               "(q,k,v,o,gate,up,down or all), got '%s'",
                               targets);
        o->targets[o->n_targets++] = p;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* The bit of a target module name (short or PEFT's "*_proj"), 0x7f for
 * "all", 0 for a name the client does not know. */
static unsigned target_bits(const char *name) {
    static const char *const names[] = {"q", "k", "v", "o", "gate", "up", "down"};
    if (!strcmp(name, "all"))
        return 0x7fu;
    size_t n = strlen(name);
    if (n > 5 && !strcmp(name + n - 5, "_proj"))
        n -= 5;
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == n && !strncmp(name, names[i], n))
            return 1u << i;
    return 0;
}

/* The progress line on stderr: rewritten in place on a terminal, one line
 * per step otherwise. */
typedef struct {
    int tty;
    int open; /* a line without its newline is on the terminal */
} progress_line;

static void progress_show(progress_line *p, int k, int total, double loss, double grad_norm,
                          double tok_s) {
    enum { BAR = 24 };
    char bar[BAR + 1];
    int filled = total > 0 ? (int)((long long)k * BAR / total) : BAR;
    for (int i = 0; i < BAR; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[BAR] = '\0';
    fprintf(stderr, "%stessera-cli: [%s] step %d/%d  loss %.4f  grad_norm %.3f  tok/s %.1f%s",
            p->tty ? "\r" : "", bar, k, total, loss, grad_norm, tok_s, p->tty ? "\033[K" : "\n");
    fflush(stderr);
    p->open = p->tty;
}

/* Ends a progress line left open on the terminal, before another message. */
static void progress_end(progress_line *p) {
    if (p->open)
        fputc('\n', stderr);
    p->open = 0;
}

/* The adapter named `name` in a ListAdapters answer, or NULL. */
static const Tessera__V1__AdapterInfo *find_adapter(const Tessera__V1__ListAdaptersResponse *l,
                                                    const char *name) {
    for (size_t i = 0; l && i < l->n_adapters; i++)
        if (!strcmp(l->adapters[i]->name, name))
            return l->adapters[i];
    return NULL;
}

static int list_adapters(const cli_ctx *cx, Tessera__V1__ListAdaptersResponse **out,
                         tsr_cli_status *st) {
    Tessera__V1__ListAdaptersRequest req = TESSERA__V1__LIST_ADAPTERS_REQUEST__INIT;
    return tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/ListAdapters", &req.base,
                              &tessera__v1__list_adapters_response__descriptor,
                              (ProtobufCMessage **)out, st);
}

/* Warns about each flag given on the command line that the resumed adapter
 * does not have: --resume keeps the adapter's own config. */
static void resume_warn_config(const cli_args *a, const train_opts *o,
                               const Tessera__V1__AdapterInfo *info) {
    const Tessera__V1__LoraConfig *c = info->config;
    if (!c)
        return;
    if (a->val[O_RANK] && c->rank != o->rank)
        fprintf(stderr, "tessera-cli: warning: adapter '%s' has rank %d; --rank %d is ignored\n",
                info->name, c->rank, o->rank);
    if (a->val[O_ALPHA] && c->alpha != o->alpha)
        fprintf(stderr, "tessera-cli: warning: adapter '%s' has alpha %g; --alpha %g is ignored\n",
                info->name, (double)c->alpha, (double)o->alpha);
    if (a->val[O_DROPOUT] && c->dropout != o->dropout)
        fprintf(stderr,
                "tessera-cli: warning: adapter '%s' has dropout %g; --dropout %g is ignored\n",
                info->name, (double)c->dropout, (double)o->dropout);
    if (a->val[O_TARGETS]) {
        unsigned want = 0, have = 0;
        for (size_t i = 0; i < o->n_targets; i++)
            want |= target_bits(o->targets[i]);
        for (size_t i = 0; i < c->n_target_modules; i++)
            have |= target_bits(c->target_modules[i]);
        if (want != have) {
            fprintf(stderr, "tessera-cli: warning: adapter '%s' targets ", info->name);
            for (size_t i = 0; i < c->n_target_modules; i++)
                fprintf(stderr, "%s%s", i ? "," : "", c->target_modules[i]);
            fprintf(stderr, "; --targets %s is ignored\n", a->val[O_TARGETS]);
        }
    }
}

/* The server's per-call limits (runtime/server/grpc_api.h): a step of more
 * examples goes out in several ForwardBackward calls, whose gradients the
 * server accumulates until OptimStep, so the step is the same. */
enum { CLI_MAX_EXAMPLES_PER_CALL = 1024 };

/* The example a "more than N tokens (at example K)" refusal names: the call
 * must end before it. 1 with *k set, else 0. */
static int token_limit_split(const tsr_cli_status *st, int *k) {
    const char *p = st->code == GRPC_STATUS_INVALID_ARGUMENT ? strstr(st->details, "tokens (at example ")
                                                             : NULL;
    return p && sscanf(p, "tokens (at example %d)", k) == 1;
}

/* ForwardBackward of a step's count examples in as few calls as the limits
 * allow: at most CLI_MAX_EXAMPLES_PER_CALL each, and a call the server
 * refuses for its token count is cut before the example it names. Adds the
 * calls' tokens to *n_tokens. 0, or -1 with *st the failed call's status and
 * *failed_first the index in batch of that call's first example. */
static int forward_backward_step(const cli_ctx *cx, const char *adapter,
                                 Tessera__V1__TrainExample **batch, int count, long *n_tokens,
                                 tsr_cli_status *st, int *failed_first) {
    *n_tokens = 0;
    for (int first = 0; first < count;) {
        int n = count - first < CLI_MAX_EXAMPLES_PER_CALL ? count - first
                                                          : CLI_MAX_EXAMPLES_PER_CALL;
        for (;;) {
            Tessera__V1__ForwardBackwardRequest req = TESSERA__V1__FORWARD_BACKWARD_REQUEST__INIT;
            req.adapter = (char *)adapter;
            req.n_examples = (size_t)n;
            req.examples = batch + first;
            Tessera__V1__ForwardBackwardResponse *r = NULL;
            if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/ForwardBackward", &req.base,
                                   &tessera__v1__forward_backward_response__descriptor,
                                   (ProtobufCMessage **)&r, st) == 0) {
                *n_tokens += (long)r->n_tokens;
                protobuf_c_message_free_unpacked(&r->base, NULL);
                break;
            }
            int k;
            if (token_limit_split(st, &k) && k > 0 && k < n) {
                n = k; /* nothing of a refused call accumulated: send its head alone */
                continue;
            }
            *failed_first = first;
            return -1;
        }
        first += n;
    }
    return 0;
}

/* After a ForwardBackward refused for "examples[k]...": which line of the
 * data file that example is. */
static void explain_example(const tsr_cli_status *st, const train_opts *o,
                            const tsr_cli_train_data *d, const int *batch_ex, int count) {
    const char *p = strstr(st->details, "examples[");
    int k;
    if (p && sscanf(p, "examples[%d]", &k) == 1 && k >= 0 && k < count)
        fprintf(stderr, "tessera-cli: examples[%d] of that batch is %s:%d\n", k, o->data,
                d->ex[batch_ex[k]].line);
}

/* SaveAdapter with return_files, then DIR written with the adapter's two
 * files, loss.csv and loss.png. Returns 0 or the exit code (reported). */
static int train_save(const cli_ctx *cx, const train_opts *o, const tsr_cli_step_log *log,
                      size_t n_log, int *saved_step) {
    Tessera__V1__SaveAdapterRequest req = TESSERA__V1__SAVE_ADAPTER_REQUEST__INIT;
    req.adapter = (char *)o->adapter;
    req.return_files = 1;
    Tessera__V1__SaveAdapterResponse *r = NULL;
    tsr_cli_status st;
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/SaveAdapter", &req.base,
                           &tessera__v1__save_adapter_response__descriptor,
                           (ProtobufCMessage **)&r, &st) != 0)
        return report_failure(cx, "SaveAdapter", &st);
    int rc = EXIT_FAIL;
    char *csv = NULL;
    uint8_t *rgb = NULL, *png = NULL;
    double *xs = NULL, *ys = NULL;
    size_t csv_len = 0, png_len = 0;
    if (!r->adapter_config_json.len || !r->adapter_model_safetensors.len) {
        fprintf(stderr, "tessera-cli: SaveAdapter: the server sent no adapter files "
                        "(adapter_config.json %zu bytes, adapter_model.safetensors %zu bytes)\n",
                r->adapter_config_json.len, r->adapter_model_safetensors.len);
        goto cleanup;
    }
    xs = malloc((n_log + 1) * sizeof *xs);
    ys = malloc((n_log + 1) * sizeof *ys);
    if (!xs || !ys || !(csv = tsr_cli_train_loss_csv(log, n_log, &csv_len))) {
        fputs("tessera-cli: out of memory\n", stderr);
        goto cleanup;
    }
    for (size_t i = 0; i < n_log; i++) {
        xs[i] = log[i].step;
        ys[i] = log[i].loss;
    }
    tsr_cli_plot_opts po = {.width = 800, .height = 480, .title = "training loss",
                            .x_label = "step", .y_label = "loss"};
    if (tsr_cli_plot_line(xs, ys, n_log, &po, &rgb) != 0 ||
        tsr_cli_png_encode(rgb, po.width, po.height, &png, &png_len) != 0) {
        fputs("tessera-cli: cannot draw loss.png (out of memory?)\n", stderr);
        goto cleanup;
    }
    const tsr_cli_out_file files[] = {
        {"adapter_config.json", r->adapter_config_json.data, r->adapter_config_json.len},
        {"adapter_model.safetensors", r->adapter_model_safetensors.data,
         r->adapter_model_safetensors.len},
        {"loss.csv", (const uint8_t *)csv, csv_len},
        {"loss.png", png, png_len},
    };
    char why[1024];
    if (tsr_cli_train_write_dir(o->out, files, sizeof files / sizeof files[0], why,
                                sizeof why) != 0) {
        fprintf(stderr, "tessera-cli: saving the adapter: %s\n", why);
        goto cleanup;
    }
    *saved_step = r->step;
    rc = 0;
cleanup:
    free(png);
    free(rgb);
    free(csv);
    free(xs);
    free(ys);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

/* Rows of DIR/loss.csv from an earlier run, up to step `upto`, for a
 * resumed run to continue. Returns how many went into log (capacity cap). */
static size_t previous_log(const train_opts *o, int upto, tsr_cli_step_log *log, size_t cap) {
    char path[4200];
    snprintf(path, sizeof path, "%s/loss.csv", o->out);
    char *text = tsr_cli_read_file(path, NULL);
    if (!text)
        return 0;
    tsr_cli_step_log *rows = NULL;
    size_t n = 0, kept = 0;
    if (tsr_cli_train_loss_csv_parse(text, &rows, &n) != 0)
        fprintf(stderr, "tessera-cli: warning: %s is not a loss.csv; starting a new one\n", path);
    for (size_t i = 0; i < n && kept < cap; i++)
        if (rows[i].step >= 1 && rows[i].step <= upto &&
            (kept == 0 || rows[i].step > log[kept - 1].step))
            log[kept++] = rows[i];
    free(rows);
    free(text);
    return kept;
}

static int cmd_train(const cli_ctx *cx, const cli_args *a) {
    train_opts o;
    int rc = train_parse(a, &o);
    if (rc) {
        train_opts_free(&o);
        return rc;
    }
    tsr_cli_train_data data = {0};
    Tessera__V1__AdapterInfo *created = NULL;
    Tessera__V1__ListAdaptersResponse *list = NULL;
    int *perm = NULL, *batch_ex = NULL;
    Tessera__V1__TrainExample **batch = NULL;
    tsr_cli_step_log *log = NULL;
    progress_line prog = {.tty = isatty(STDERR_FILENO)};
    tsr_cli_status st;
    char why[1024];

    /* Everything local first: a bad file or --out costs no call. */
    if (tsr_cli_train_data_load(o.data, &data, why, sizeof why) != 0) {
        fprintf(stderr, "tessera-cli: %s\n", why);
        rc = EXIT_USAGE;
        goto cleanup;
    }
    int out_exists;
    if (tsr_cli_train_check_out_dir(o.out, &out_exists, why, sizeof why) != 0) {
        fprintf(stderr, "tessera-cli: %s\n", why);
        rc = EXIT_USAGE;
        goto cleanup;
    }
    const int n_ex = (int)data.n;
    const int total = tsr_epoch_total_steps(n_ex, o.batch, o.steps, o.epochs);
    if (total <= 0) {
        rc = usage_error("--epochs %d of %d examples is too many steps", o.epochs, n_ex);
        goto cleanup;
    }
    perm = malloc((size_t)n_ex * sizeof *perm);
    batch_ex = malloc((size_t)o.batch * sizeof *batch_ex);
    batch = malloc((size_t)o.batch * sizeof *batch);
    log = malloc(((size_t)total + 1) * sizeof *log);
    if (!perm || !batch_ex || !batch || !log) {
        fputs("tessera-cli: out of memory\n", stderr);
        rc = EXIT_FAIL;
        goto cleanup;
    }
    if (g_stop) {
        fputs("tessera-cli: interrupted before training started; nothing was created\n", stderr);
        rc = 128 + (int)g_stop;
        goto cleanup;
    }

    /* The adapter: a new one, or with --resume the one already there. */
    const Tessera__V1__AdapterInfo *info = NULL;
    if (o.resume) {
        if (list_adapters(cx, &list, &st) != 0) {
            rc = report_failure(cx, "ListAdapters", &st);
            goto cleanup;
        }
        info = find_adapter(list, o.adapter);
        if (info)
            resume_warn_config(a, &o, info);
        else
            fprintf(stderr, "tessera-cli: no adapter '%s' on the server to resume; creating it\n",
                    o.adapter);
    }
    if (!info) {
        Tessera__V1__CreateAdapterRequest req = TESSERA__V1__CREATE_ADAPTER_REQUEST__INIT;
        Tessera__V1__LoraConfig cfg = TESSERA__V1__LORA_CONFIG__INIT;
        req.name = (char *)o.adapter;
        req.config = &cfg;
        cfg.rank = o.rank;
        cfg.alpha = o.alpha;
        cfg.n_target_modules = o.n_targets;
        cfg.target_modules = o.targets;
        cfg.dropout = o.dropout;
        cfg.seed = o.seed;
        if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/CreateAdapter", &req.base,
                               &tessera__v1__adapter_info__descriptor,
                               (ProtobufCMessage **)&created, &st) != 0) {
            rc = report_failure(cx, "CreateAdapter", &st);
            if (st.code == GRPC_STATUS_ALREADY_EXISTS && !st.local_error && !g_signal) {
                Tessera__V1__ListAdaptersResponse *l = NULL;
                tsr_cli_status lst;
                const Tessera__V1__AdapterInfo *old =
                    list_adapters(cx, &l, &lst) == 0 ? find_adapter(l, o.adapter) : NULL;
                char at[64] = "";
                if (old)
                    snprintf(at, sizeof at, " (it is at step %d)", old->step);
                fprintf(stderr,
                        "tessera-cli: the server already has an adapter '%s'%s: add --resume to "
                        "continue training it, or delete it (DeleteAdapter) to start afresh\n",
                        o.adapter, at);
                if (l)
                    protobuf_c_message_free_unpacked(&l->base, NULL);
            }
            goto cleanup;
        }
        info = created;
    }
    const int start = info->step > 0 ? info->step : 0;
    const Tessera__V1__LoraConfig *lc = info->config;
    if (info->pending_batches > 0)
        fprintf(stderr,
                "tessera-cli: warning: adapter '%s' has %d ForwardBackward batch(es) accumulated "
                "since its last step; they count in the next one\n",
                o.adapter, info->pending_batches);

    size_t n_log = 0;
    if (start > 0 && out_exists)
        n_log = previous_log(&o, start, log, (size_t)total + 1);
    const int per_epoch = (n_ex + o.batch - 1) / o.batch;
    if (created)
        fprintf(stderr, "tessera-cli: training new adapter '%s': %d step%s", o.adapter, total,
                total == 1 ? "" : "s");
    else
        fprintf(stderr, "tessera-cli: resuming adapter '%s' at step %d: steps %d..%d", o.adapter,
                start, start + 1, total);
    fprintf(stderr, " of %d examples (%d steps per epoch) from %s (%d examples)", o.batch,
            per_epoch, o.data, n_ex);
    if (lc) {
        fprintf(stderr, ", LoRA r=%d alpha=%g targets=", lc->rank, (double)lc->alpha);
        for (size_t i = 0; i < lc->n_target_modules; i++)
            fprintf(stderr, "%s%s", i ? "," : "", lc->target_modules[i]);
        fprintf(stderr, " dropout %g", (double)lc->dropout);
    }
    fprintf(stderr, ", lr %g\n", (double)o.lr);
    if (start >= total)
        fprintf(stderr, "tessera-cli: adapter '%s' is already at step %d of %d: nothing to "
                        "train; saving it\n",
                o.adapter, start, total);

    /* The steps. */
    Tessera__V1__AdamWParams adamw = TESSERA__V1__ADAM_WPARAMS__INIT;
    adamw.lr = o.lr;
    adamw.weight_decay = o.weight_decay;
    adamw.eps = o.adam_eps;
    Tessera__V1__OptimStepRequest oreq = TESSERA__V1__OPTIM_STEP_REQUEST__INIT;
    oreq.adapter = (char *)o.adapter;
    oreq.adamw = &adamw;
    oreq.max_grad_norm = o.max_grad_norm;
    int shuffled_epoch = -1, k = start, warned_step = 0;
    for (; k < total && !g_stop; k++) {
        int epoch, first, count;
        tsr_epoch_step_batch(k, n_ex, o.batch, &epoch, &first, &count);
        if (epoch != shuffled_epoch) {
            tsr_epoch_shuffle(perm, n_ex, o.seed, epoch);
            shuffled_epoch = epoch;
        }
        for (int i = 0; i < count; i++) {
            batch_ex[i] = perm[first + i];
            batch[i] = &data.ex[batch_ex[i]].msg;
        }
        Tessera__V1__OptimStepResponse *os = NULL;
        double t0 = tsr_now_s();
        const char *what = "ForwardBackward";
        long n_tokens = 0;
        int failed_first = 0;
        int ok = forward_backward_step(cx, o.adapter, batch, count, &n_tokens, &st,
                                       &failed_first) == 0;
        const int fb_ok = ok;
        if (ok) {
            what = "OptimStep";
            ok = tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/OptimStep", &oreq.base,
                                    &tessera__v1__optim_step_response__descriptor,
                                    (ProtobufCMessage **)&os, &st) == 0;
        }
        if (!ok) {
            progress_end(&prog);
            fprintf(stderr, "tessera-cli: step %d/%d: %s failed\n", k + 1, total, what);
            rc = report_failure(cx, what, &st);
            if (!fb_ok)
                explain_example(&st, &o, &data, batch_ex + failed_first, count - failed_first);
            if (!g_signal)
                fprintf(stderr, "tessera-cli: nothing was saved; adapter '%s' stays on the "
                                "server (--resume continues it)\n",
                        o.adapter);
            goto cleanup;
        }
        double dt = tsr_now_s() - t0, tok_s = dt > 0 ? (double)n_tokens / dt : 0.0;
        if (os->step != k + 1 && !warned_step) {
            progress_end(&prog);
            fprintf(stderr, "tessera-cli: warning: the server counts step %d where this run is "
                            "at %d (is another client training '%s'?)\n",
                    os->step, k + 1, o.adapter);
            warned_step = 1;
        }
        log[n_log++] = (tsr_cli_step_log){k + 1, os->loss, os->grad_norm, n_tokens};
        printf("step %d/%d  loss %.4f  grad_norm %.3f  tokens %ld  tok/s %.1f\n", k + 1, total,
               os->loss, os->grad_norm, n_tokens, tok_s);
        fflush(stdout);
        progress_show(&prog, k + 1, total, os->loss, os->grad_norm, tok_s);
        protobuf_c_message_free_unpacked(&os->base, NULL);
    }
    progress_end(&prog);
    const int stopped = k < total; /* by a signal */
    if (stopped)
        fprintf(stderr, "tessera-cli: interrupted after step %d of %d; saving the adapter "
                        "(Ctrl-C again to abandon the save)\n",
                k, total);

    int saved_step = 0;
    if ((rc = train_save(cx, &o, log, n_log, &saved_step)))
        goto cleanup;
    fprintf(stderr,
            "tessera-cli: saved adapter '%s' (step %d) in %s: adapter_config.json, "
            "adapter_model.safetensors, loss.csv, loss.png\n",
            o.adapter, saved_step, o.out);
    if (stopped) {
        fprintf(stderr, "tessera-cli: training stopped at step %d of %d; --resume continues it\n",
                k, total);
        rc = 128 + (int)g_stop;
    }
cleanup:
    progress_end(&prog);
    if (created)
        protobuf_c_message_free_unpacked(&created->base, NULL);
    if (list)
        protobuf_c_message_free_unpacked(&list->base, NULL);
    free(log);
    free(batch);
    free(batch_ex);
    free(perm);
    tsr_cli_train_data_free(&data);
    train_opts_free(&o);
    return rc;
}

/* ---- main --------------------------------------------------------------- */

/* Reads the bearer token from --auth-token-file or $TESSERA_AUTH_TOKEN into
 * *token (malloc'd; NULL when neither is given). Returns 0 or EXIT_USAGE. */
static int load_token(const cli_args *a, char **token) {
    *token = NULL;
    const char *path = a->val[O_AUTH_FILE];
    if (path) {
        char *t = tsr_cli_read_file(path, NULL);
        if (!t)
            return usage_error("--auth-token-file %s: %s", path, strerror(errno));
        tsr_cli_rstrip(t);
        if (!tsr_cli_is_token_chars(t)) {
            free(t);
            return usage_error("--auth-token-file %s: %s", path,
                               "the token must be one line of printable ASCII without spaces");
        }
        *token = t;
        return 0;
    }
    const char *env = getenv("TESSERA_AUTH_TOKEN");
    if (env && env[0]) {
        if (!(*token = strdup(env)))
            return EXIT_FAIL;
        tsr_cli_rstrip(*token);
        if (!tsr_cli_is_token_chars(*token)) {
            free(*token);
            *token = NULL;
            return usage_error("TESSERA_AUTH_TOKEN must be printable ASCII without spaces");
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    cli_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) {
        free_args(&a);
        return rc;
    }
    if (a.help) {
        fputs(k_usage, stdout);
        free_args(&a);
        return 0;
    }
    if (a.version) {
        printf("tessera-cli %s (gRPC core %s, protobuf-c %s)\n", TSR_CLI_VERSION,
               grpc_version_string(), protobuf_c_version());
        free_args(&a);
        return 0;
    }

    char *token = NULL, *ca_pem = NULL;
    tsr_cli_conn_t *conn = NULL;
    int grpc_up = 0;
    cli_ctx cx = {.addr = a.val[O_ADDR] ? a.val[O_ADDR] : DEFAULT_ADDR,
                  .verbose = a.val[O_VERBOSE] != NULL};
    if ((rc = opt_seconds(&a, O_TIMEOUT, &cx.timeout_s)))
        goto done;
    if (a.val[O_TIMEOUT] && cx.timeout_s <= 0) {
        rc = usage_error("--timeout must be > 0 seconds");
        goto done;
    }
    if (!cx.addr[0]) {
        rc = usage_error("--addr is empty");
        goto done;
    }
    if ((rc = load_token(&a, &token)))
        goto done;
    cx.have_token = token != NULL;
    if (a.val[O_TLS_CA] && !(ca_pem = tsr_cli_read_file(a.val[O_TLS_CA], NULL))) {
        rc = usage_error("--tls-ca %s: %s", a.val[O_TLS_CA], strerror(errno));
        goto done;
    }
    if (a.val[O_TLS_NAME] && !ca_pem) {
        rc = usage_error("--tls-server-name goes with --tls-ca");
        goto done;
    }

    install_signal_handlers(a.cmd == CMD_TRAIN);
    if (!cx.verbose && !getenv("GRPC_VERBOSITY") && !getenv("GRPC_TRACE"))
        gpr_set_log_function(drop_grpc_log);
    grpc_init();
    grpc_up = 1;
    tsr_cli_conn_config cfg = {
        .addr = cx.addr,
        .auth_token = token,
        .tls_ca_pem = ca_pem,
        .tls_server_name = a.val[O_TLS_NAME],
        .timeout_s = cx.timeout_s,
        .user_agent = "tessera-cli/" TSR_CLI_VERSION,
        .max_recv_bytes = a.cmd == CMD_TRAIN ? TRAIN_MAX_RECV_BYTES : 0,
        .interrupted = &g_signal,
    };
    if (!(conn = tsr_cli_conn_open(&cfg))) {
        fprintf(stderr, "tessera-cli: cannot create a channel to %s%s\n", cx.addr,
                ca_pem ? " (are the TLS credentials valid PEM?)" : "");
        rc = EXIT_FAIL;
        goto done;
    }
    cx.conn = conn;
    if (cx.verbose)
        fprintf(stderr, "tessera-cli: %s %s%s%s\n", a.cmd_name, cx.addr, ca_pem ? " (TLS)" : "",
                token ? " with a bearer token" : "");

    switch (a.cmd) {
    case CMD_GENERATE: rc = cmd_generate(&cx, &a); break;
    case CMD_HEALTH: rc = cmd_health(&cx, &a); break;
    case CMD_INFO: rc = cmd_info(&cx, &a); break;
    case CMD_TOKENIZE: rc = cmd_tokenize(&cx, &a); break;
    case CMD_DETOKENIZE: rc = cmd_detokenize(&cx, &a); break;
    case CMD_ABORT: rc = cmd_abort(&cx, &a); break;
    case CMD_TRAIN: rc = cmd_train(&cx, &a); break;
    default: rc = EXIT_USAGE;
    }
    if (fflush(stdout) != 0 && rc == 0) {
        fprintf(stderr, "tessera-cli: writing to stdout: %s\n", strerror(errno));
        rc = EXIT_FAIL;
    }

done:
    tsr_cli_conn_close(conn);
    if (grpc_up)
        grpc_shutdown();
    free(token);
    free(ca_pem);
    free_args(&a);
    return rc;
}
