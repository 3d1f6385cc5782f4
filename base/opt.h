/* base/opt.h - the one command-line option parser of the tree's programs
 * (tessera, tessera-cli, tessera-launch), and the strict parsers of flag
 * values they share.
 *
 * A program describes its options in one table: each long option's name,
 * an id (the index of its value), whether it takes a value, and the
 * commands it applies to, as a bit mask. tsr_opt_parse reads argv into the
 * last value of each option and the list of every option given, in order
 * (so a repeatable option such as --stop keeps all its values); values
 * follow their flag ("--top-p 0.9") or an '=' ("--top-p=0.9"). Applying
 * the table's command masks is a second call (tsr_opt_check_cmd), so a
 * program can answer --help before it asks for a command.
 *
 * What it is not: a getopt. No clusters of short flags, no abbreviations of
 * long ones, no permutation past a "--"; and it reads flag values as
 * strings: their meaning and range are the program's. Errors come back as a
 * tsr_status with a message (tsr_error_msg) naming the flag; the program
 * prints it with its own prefix. */
#ifndef TSR_BASE_OPT_H
#define TSR_BASE_OPT_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* An option that applies to every command. */
#define TSR_OPT_ANY (~0u)

/* One row of a program's option table. Several rows may share an id (an
 * alias: "ctx-size" for "ctx"). */
typedef struct {
    const char *name; /* without the leading "--" */
    int id;           /* index of its value: 0 <= id < tsr_opt_spec.n_ids */
    int takes_value;  /* 0: a switch, whose value is "1" */
    unsigned cmds;    /* bit mask of the commands it applies to (TSR_OPT_ANY: all) */
    char short_name;  /* 'h' for "-h"; 0 when there is none */
} tsr_opt;

/* A command word and its bit. */
typedef struct {
    const char *name;
    unsigned bit;
} tsr_opt_cmd;

/* What tsr_opt_parse reads against. */
typedef struct {
    const tsr_opt *opts;
    size_t n_opts;
    int n_ids;               /* ids are 0 .. n_ids-1 */
    const tsr_opt_cmd *cmds; /* the command words; NULL (n_cmds 0): a program without */
    size_t n_cmds;
    const char *extra_hint; /* appended to "unexpected argument 'x'"; NULL: none */
} tsr_opt_spec;

/* One option as given on the command line. */
typedef struct {
    int id;
    const char *value; /* points into argv; "1" for a switch */
} tsr_opt_item;

/* A command line, read but not yet interpreted. Every string points into
 * argv. */
typedef struct {
    const char *cmd_name; /* the command word as given; NULL when none */
    unsigned cmd;         /* its bit; 0 when none */
    const char **val;     /* n_ids entries: each option's last value, NULL when absent */
    tsr_opt_item *items;  /* every option given, in argv order (n_items) */
    size_t n_items;
} tsr_opt_args;

/* Reads argv[first .. argc) into *a (free it with tsr_opt_args_free, also
 * after an error). "--name value", "--name=value", a switch "--name" and
 * its short "-c" are options; with spec->cmds, the first other word is the
 * command and must be one of them; any other word is refused. Errors
 * (TSR_ERR_INVALID): "unknown flag '--x'", "--x needs a value", "--x takes no
 * value", "unknown command 'x' (commands: a, b)", "unexpected argument 'x'"
 * (+ spec->extra_hint); TSR_ERR_NOMEM. */
tsr_status tsr_opt_parse(const tsr_opt_spec *spec, int argc, char **argv, int first,
                         tsr_opt_args *a);

/* The table's command masks: TSR_ERR_INVALID with "no command given (a, b)"
 * when spec has commands and none was given, or "--x does not apply to
 * 'cmd'" for the first option (in table order) given to a command outside
 * its mask. TSR_OK otherwise. */
tsr_status tsr_opt_check_cmd(const tsr_opt_spec *spec, const tsr_opt_args *a);

/* Frees what tsr_opt_parse allocated and empties *a. NULL ok. */
void tsr_opt_args_free(tsr_opt_args *a);

/* The name (without "--") of the first table row with this id; "?" when
 * none. */
const char *tsr_opt_name(const tsr_opt_spec *spec, int id);

/* Every value given for option `id`, in order, into out[0 .. cap); returns
 * how many were given (which may be more than cap). */
size_t tsr_opt_values(const tsr_opt_args *a, int id, const char **out, size_t cap);

/* Typed reads of an option's last value. An absent option leaves *out
 * untouched and returns TSR_OK; a bad value returns TSR_ERR_INVALID with a
 * message naming the flag and the value:
 *   tsr_opt_get_i32     "--x expects an integer, got 'v'"
 *   tsr_opt_get_int     "--x expects an integer in [lo, hi], got 'v'"
 *   tsr_opt_get_f32     "--x expects a number, got 'v'"  (finite) */
tsr_status tsr_opt_get_i32(const tsr_opt_spec *spec, const tsr_opt_args *a, int id, int32_t *out);
tsr_status tsr_opt_get_int(const tsr_opt_spec *spec, const tsr_opt_args *a, int id, int lo, int hi,
                           int *out);
tsr_status tsr_opt_get_f32(const tsr_opt_spec *spec, const tsr_opt_args *a, int id, float *out);

/* Strict value parsers. Each parses all of `s` (leading/trailing blanks
 * allowed) into *out. Returns 0, or -1 leaving *out untouched when `s` is
 * not a number of that type (junk, empty, NULL, out of range, NaN). */
int tsr_opt_parse_i32(const char *s, int32_t *out);
int tsr_opt_parse_u64(const char *s, uint64_t *out); /* no sign allowed */
int tsr_opt_parse_f32(const char *s, float *out);    /* finite only */
int tsr_opt_parse_f64(const char *s, double *out);   /* finite only */

#endif
