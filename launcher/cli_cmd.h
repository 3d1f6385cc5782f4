/* launcher/cli_cmd.h - what the files of the tessera-cli program share:
 * the option ids and the parsed command line (tessera_cli.c reads it with
 * base/opt.h against its option table), the context every command runs with, the helpers that
 * turn a bad flag value or a failed call into a message and an exit code,
 * and the commands themselves (cli_cmd_generate.c, cli_cmd_misc.c,
 * cli_cmd_train.c).
 *
 * What it is not: a library header. It belongs to the program (not to
 * tsr_cli); every function here prints to stderr and returns an exit code
 * (0, EXIT_FAIL, EXIT_USAGE or 128 + signal), as docs/cli.md documents. */
#ifndef TSR_LAUNCHER_CLI_CMD_H
#define TSR_LAUNCHER_CLI_CMD_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "base/opt.h"
#include "launcher/cli_rpc.h"
#include "tessera/v1/tessera.pb-c.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* Every option of every command (k_options in tessera_cli.c names them). */
typedef enum {
    O_ADDR,
    O_AUTH_FILE,
    O_TLS_CA,
    O_TLS_NAME,
    O_TIMEOUT,
    O_VERBOSE,
    O_PROMPT,
    O_CHAT,
    O_SYSTEM,
    O_TOKENS,
    O_MAX_TOKENS,
    O_TEMPERATURE,
    O_TOP_K,
    O_TOP_P,
    O_MIN_P,
    O_SEED,
    O_REPEAT_PENALTY,
    O_FREQ_PENALTY,
    O_PRES_PENALTY,
    O_STOP,
    O_STOP_ID,
    O_MIN_TOKENS,
    O_IGNORE_EOS,
    O_LOGPROBS,
    O_REQUEST_ID,
    O_ADAPTER,
    O_QUIET,
    O_WAIT,
    O_SERVICE,
    O_JSON,
    O_TEXT,
    O_PARSE_SPECIAL,
    O_ADD_SPECIAL,
    O_IDS,
    O_SKIP_SPECIAL,
    O_DATA,
    O_OUT,
    O_STEPS,
    O_EPOCHS,
    O_LR,
    O_BATCH_SIZE,
    O_RANK,
    O_ALPHA,
    O_TARGETS,
    O_MAX_GRAD_NORM,
    O_WEIGHT_DECAY,
    O_ADAM_EPS,
    O_DROPOUT,
    O_RESUME,
    O_HELP,
    O_VERSION,
    O__COUNT
} opt_id;

/* The command line, parsed but not yet interpreted: the last value of each
 * option (switches hold "1"), and every value of the repeatable ones. All
 * strings point into argv. */
typedef struct {
    const char *cmd_name;
    unsigned cmd;
    const char **val;   /* O__COUNT entries; NULL when absent (points into opt) */
    const char **stops; /* every --stop, in order (malloc'd) */
    size_t n_stops;
    const char **stop_ids; /* every --stop-id, in order (malloc'd) */
    size_t n_stop_ids;
    tsr_opt_args opt; /* what tsr_opt_parse read */
} cli_args;

/* What the commands share once the flags are read. */
typedef struct {
    tsr_cli_conn_t *conn;
    const char *addr;
    double timeout_s; /* 0 = none */
    int have_token;
    int verbose;
    /* The signal that asked us to stop (SIGINT, SIGTERM), 0 while none:
     * the call in flight is cancelled. Set by main's handlers. */
    volatile sig_atomic_t *signal;
    /* train: the signal that asked to stop after the step in flight and
     * save the adapter (the calls are left to finish); 0 while none. */
    volatile sig_atomic_t *stop;
} cli_ctx;

/* Prints "tessera-cli: <message>" and the --help hint on stderr; returns
 * EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The option's name without its "--" ("?" for an unknown id). */
const char *cli_option_name(opt_id id);

/* Parsers for option values: 0, or EXIT_USAGE after printing the flag and
 * what it expects. Absent options leave *out untouched. cli_opt_seconds
 * takes a number >= 0. */
int cli_opt_i32(const cli_args *a, opt_id id, int32_t *out);
int cli_opt_f32(const cli_args *a, opt_id id, float *out);
int cli_opt_seconds(const cli_args *a, opt_id id, double *out);

/* Says the call in flight was cancelled; returns 128 + *cx->signal. */
int cli_interrupted_exit(const cli_ctx *cx);

/* Prints why a call failed (`what` names it) and returns the exit code. */
int cli_report_failure(const cli_ctx *cx, const char *what, const tsr_cli_status *st);

/* The commands: each returns the program's exit code. */
/* The chat input of --chat and --system (generate, tokenize): the system
 * message when given, then the user's. The strings point into argv; *c owns
 * nothing to free and must stay in place while c->chat is used. */
typedef struct {
    Tessera__V1__ChatInput chat;
    Tessera__V1__ChatMessage sys, user;
    Tessera__V1__ChatMessage *msgs[2];
} cli_chat;
void cli_chat_init(cli_chat *c, const cli_args *a);

int cli_cmd_generate(const cli_ctx *cx, const cli_args *a);   /* cli_cmd_generate.c */
int cli_cmd_health(const cli_ctx *cx, const cli_args *a);     /* cli_cmd_misc.c */
int cli_cmd_info(const cli_ctx *cx, const cli_args *a);       /* cli_cmd_misc.c */
int cli_cmd_tokenize(const cli_ctx *cx, const cli_args *a);   /* cli_cmd_misc.c */
int cli_cmd_detokenize(const cli_ctx *cx, const cli_args *a); /* cli_cmd_misc.c */
int cli_cmd_abort(const cli_ctx *cx, const cli_args *a);      /* cli_cmd_misc.c */
int cli_cmd_train(const cli_ctx *cx, const cli_args *a);      /* cli_cmd_train.c */

#endif
