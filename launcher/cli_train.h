/* launcher/cli_train.h - the local half of `tessera-cli train`: the JSONL
 * data file read into TrainExample messages, the output directory's check
 * and its atomic replacement, and loss.csv. The per-epoch shuffle and the
 * step plan are `tessera train`'s own (runtime/train/epoch.h).
 *
 * What it is not: the RPCs (tessera_cli.c drives CreateAdapter,
 * ForwardBackward, OptimStep and SaveAdapter through cli_rpc.h) and not a
 * tokenizer: examples go to the server as text, and the server tokenizes
 * and masks them. Every function reports failure through a `why` buffer
 * (size why_size) and never prints. */
#ifndef TSR_LAUNCHER_CLI_TRAIN_H
#define TSR_LAUNCHER_CLI_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "tessera/v1/tessera.pb-c.h"

/* One example of the data file, as ForwardBackward sends it. msg points into
 * the rest of the struct; every string is owned (malloc'd). */
typedef struct {
    Tessera__V1__TrainExample msg;   /* prompt_completion or chat */
    Tessera__V1__PromptCompletion pc;
    Tessera__V1__ChatInput chat;
    Tessera__V1__ChatMessage *msgs;  /* chat.n_messages of them */
    Tessera__V1__ChatMessage **msg_ptrs;
    int line;                        /* 1-based line of the data file */
} tsr_cli_train_example;

typedef struct {
    tsr_cli_train_example *ex; /* n of them, in file order */
    size_t n;
} tsr_cli_train_data;

/* Reads `path`: one JSON object per line, {"prompt": S, "completion": S} or
 * {"messages": [{"role": "system"|"user"|"assistant", "content": S}, ...]}
 * (at least one assistant message); other keys are ignored, blank lines
 * skipped. Returns 0 with *d filled (free with tsr_cli_train_data_free), or
 * -1 with *d empty and `why` naming "path:line" and what is wrong (or the
 * I/O error, or "no example"). */
int tsr_cli_train_data_load(const char *path, tsr_cli_train_data *d, char *why, size_t why_size);

/* Frees what load filled and empties *d. NULL ok. */
void tsr_cli_train_data_free(tsr_cli_train_data *d);

/* Whether `dir` can take a saved adapter: its parent is a writable
 * directory, and `dir` is absent, an empty directory, or a directory of
 * plain files holding adapter_config.json (an adapter saved before). Returns
 * 0 (with *exists set), or -1 with `why`. */
int tsr_cli_train_check_out_dir(const char *dir, int *exists, char *why, size_t why_size);

/* A file to write: `name` (no slash) with len bytes of data. */
typedef struct {
    const char *name;
    const uint8_t *data;
    size_t len;
} tsr_cli_out_file;

/* Writes the files into a fresh "<dir>.tmp-XXXXXX" beside dir (mode 0777
 * less the umask), fsyncs them and it, then puts it in dir's place in one
 * rename: dir absent or empty: rename(2); dir an adapter directory: an
 * exchange (renameat2 RENAME_EXCHANGE, or a rename aside where the file
 * system has none) and the old files removed. Checks dir again first
 * (tsr_cli_train_check_out_dir). Returns 0, or -1 with `why`, leaving dir
 * as it was and removing the temporary directory. */
int tsr_cli_train_write_dir(const char *dir, const tsr_cli_out_file *files, size_t n_files,
                            char *why, size_t why_size);

/* One optimizer step, as loss.csv keeps it. */
typedef struct {
    int step; /* the adapter's step count after it (1-based) */
    double loss, grad_norm;
    long tokens;
} tsr_cli_step_log;

/* loss.csv: "step,loss,grad_norm,tokens" and one row per entry, as `tessera
 * train` writes it ("%d,%.6f,%.6f,%ld"). Returns a malloc'd text of *len
 * bytes (NUL-terminated), or NULL when out of memory. */
char *tsr_cli_train_loss_csv(const tsr_cli_step_log *log, size_t n, size_t *len);

/* Reads a loss.csv written by tsr_cli_train_loss_csv back: *log is a
 * malloc'd array of *n rows (possibly 0). Returns 0, or -1 (with *log NULL)
 * for a text that is not such a file. */
int tsr_cli_train_loss_csv_parse(const char *text, tsr_cli_step_log **log, size_t *n);

#endif
