/* launcher/launch_config.h - what tessera-launch is asked to run: the YAML
 * config file (docs/launcher.md has the one schema) and the command-line
 * flags, each read into the same struct, then merged (flags win).
 *
 * The config is read with libyaml's document loader. Every error names the
 * file and line ("serve.yaml:7: unknown key 'tpp'") and is returned as
 * TSR_ERR_INVALID with the message in tsr_error_msg(): the launcher refuses a
 * bad config before anything starts.
 *
 * What it is not: it does not check the layout against the model (tessera_launch.c
 * does that with shard/plan.h), does not look at hosts or Slurm (launch_cmd.h)
 * and runs nothing. */
#ifndef TSR_LAUNCHER_LAUNCH_CONFIG_H
#define TSR_LAUNCHER_LAUNCH_CONFIG_H

#include <stddef.h>

#include "base/status.h"

/* A growable, NULL-terminated vector of owned strings (an argv). */
typedef struct {
    char **v; /* (n + 1), v[n] == NULL; NULL while empty */
    size_t n;
    size_t cap;
} tsr_launch_strv;

/* Appends a copy of s. TSR_ERR_NOMEM. */
tsr_status tsr_launch_strv_push(tsr_launch_strv *sv, const char *s);
/* Appends every string of `from`. */
tsr_status tsr_launch_strv_extend(tsr_launch_strv *sv, const tsr_launch_strv *from);
/* Frees the strings and the vector and zeroes it. NULL ok. */
void tsr_launch_strv_free(tsr_launch_strv *sv);

/* One flag of the launched command: `--name v1 --name v2` (n_values > 1 for a
 * repeated flag), `--name` alone when values is empty. */
typedef struct {
    char *name;             /* without the leading "--"; owned */
    tsr_launch_strv values; /* owned */
} tsr_launch_flag;

typedef struct {
    tsr_launch_flag *v; /* (n), owned */
    size_t n;
} tsr_launch_flags;

/* Adds a value to flag `name` (creating it); value NULL adds a bare flag. */
tsr_status tsr_launch_flags_add(tsr_launch_flags *fl, const char *name, const char *value);
/* The flag named `name`, or NULL. */
const tsr_launch_flag *tsr_launch_flags_find(const tsr_launch_flags *fl, const char *name);
void tsr_launch_flags_free(tsr_launch_flags *fl); /* NULL ok */

#define TSR_LAUNCH_MAX_STAGES 256

/* The commands tessera-launch starts (index into the per-command flags). */
typedef enum {
    TSR_LAUNCH_SERVE = 0,
    TSR_LAUNCH_GENERATE,
    TSR_LAUNCH_PERPLEXITY,
    TSR_LAUNCH_TRAIN,
    TSR_LAUNCH_N_COMMANDS,
} tsr_launch_command;

/* "serve", ... ; NULL for an out-of-range value. */
const char *tsr_launch_command_name(tsr_launch_command c);
/* The command called `name`, or -1. */
int tsr_launch_command_parse(const char *name);

/* Everything a config file or the flags can say. Strings are owned; NULL,
 * 0 or -1 (as noted) mean "not given", so two of these merge field by field.
 * Start from TSR_LAUNCH_CONFIG_INIT. */
typedef struct {
    int command; /* tsr_launch_command, -1: not given */
    char *model;
    int tp, pp; /* 0: not given */
    int pp_layers[TSR_LAUNCH_MAX_STAGES];
    int n_pp_layers; /* 0: not given (even split) */
    char *host;      /* serve listen address */
    int port;        /* 0: not given */
    char *auth_token_file;
    char *tls_cert, *tls_key;
    tsr_launch_strv hosts; /* "name" or "name:slots" */
    char *hostfile;
    int np;                                       /* tasks the user expects; 0: not given */
    int oversubscribe;                            /* -1 not given, 0, 1 */
    char *bind_to;                                /* mpirun --bind-to value; NULL: automatic */
    int cpus_per_rank;                            /* mpirun --map-by slot:PE=N; 0: automatic */
    tsr_launch_strv env;                          /* "NAME", "NAME=VALUE", "PREFIX*" */
    char *mpirun;                                 /* path; NULL: "mpirun" from PATH */
    char *srun;                                   /* path; NULL: "srun" from PATH */
    tsr_launch_strv mpi_args;                     /* extra mpirun arguments, before the program */
    tsr_launch_strv srun_args;                    /* extra srun arguments, before the program */
    char *tessera;                                /* path of the tessera program */
    char *runner;                                 /* "auto", "mpirun" or "srun"; NULL: auto */
    double stop_timeout;                          /* seconds; < 0: not given */
    tsr_launch_flags args[TSR_LAUNCH_N_COMMANDS]; /* per-command flags */
} tsr_launch_config;

#define TSR_LAUNCH_CONFIG_INIT                                                                     \
    { .command = -1, .oversubscribe = -1, .stop_timeout = -1.0 }

/* Reads the YAML file at `path` into *out (which must be
 * TSR_LAUNCH_CONFIG_INIT). TSR_ERR_IO when it cannot be read,
 * TSR_ERR_INVALID for bad YAML, an unknown key, a duplicate key or a value
 * of the wrong type, each with "path:line: ..." in the message. On failure
 * *out holds whatever was read before the error (free it). */
tsr_status tsr_launch_config_load(const char *path, tsr_launch_config *out);

/* Moves every field given in `over` into `base`, replacing base's (env and
 * the per-command flags are appended; a per-command flag named in `over`
 * replaces base's flag of that name). `over` is left empty. */
tsr_status tsr_launch_config_merge(tsr_launch_config *base, tsr_launch_config *over);

/* Frees every owned field and resets *c to TSR_LAUNCH_CONFIG_INIT. NULL ok. */
void tsr_launch_config_free(tsr_launch_config *c);

/* Parses "16,14" into layers (at most max entries, each >= 1). TSR_OK, or
 * TSR_ERR_INVALID with a message naming `what`. */
tsr_status tsr_launch_parse_layers(const char *s, const char *what, int *layers, int max, int *n);

/* Parses all of s as an integer in [lo, hi] into *out; 0, or -1 (no message). */
int tsr_launch_parse_int(const char *s, long lo, long hi, int *out);

#endif
