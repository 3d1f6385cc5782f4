/* launcher/cli_train.h - the local half of `tessera-cli train`: the JSONL
 * data file read into TrainExample messages, the output directory's check
 * and its atomic replacement. The per-epoch shuffle, the step plan and
 * loss.csv are `tessera train`'s own (runtime/train/epoch.h, loss_csv.h).
 *
 * What it is not: the RPCs (cli_cmd_train.c drives CreateAdapter,
 * ForwardBackward, OptimStep and SaveAdapter through cli_rpc.h) and not a
 * tokenizer: examples go to the server as text, and the server tokenizes
 * and masks them. Every fallible function returns a tsr_status with the
 * reason recorded by tsr_error_set (base/status.h) and never prints. */
#ifndef TSR_LAUNCHER_CLI_TRAIN_H
#define TSR_LAUNCHER_CLI_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "tessera/v1/tessera.pb-c.h"

/* One example of the data file, as ForwardBackward sends it. msg points into
 * the rest of the struct; every string is owned (malloc'd). */
typedef struct {
    Tessera__V1__TrainExample msg; /* prompt_completion or chat */
    Tessera__V1__PromptCompletion pc;
    Tessera__V1__ChatInput chat;
    Tessera__V1__ChatMessage *msgs; /* chat.n_messages of them */
    Tessera__V1__ChatMessage **msg_ptrs;
    int line; /* 1-based line of the data file */
} tsr_cli_train_example;

typedef struct {
    tsr_cli_train_example *ex; /* n of them, in file order */
    size_t n;
} tsr_cli_train_data;

/* Reads `path`: one JSON object per line, {"prompt": S, "completion": S} or
 * {"messages": [{"role": "system"|"user"|"assistant", "content": S}, ...]}
 * (at least one assistant message); other keys are ignored, blank lines
 * skipped. Returns TSR_OK with *d filled (free with tsr_cli_train_data_free),
 * or the reader's status (runtime/train/train_record.h) with *d empty and
 * the message naming "path:line" and what is wrong (or the I/O error, or
 * "no example"). */
tsr_status tsr_cli_train_data_load(const char *path, tsr_cli_train_data *d);

/* Frees what load filled and empties *d. NULL ok. */
void tsr_cli_train_data_free(tsr_cli_train_data *d);

/* Whether `dir` can take a saved adapter: tsr_fs_check_adapter_dir's rule
 * (base/fs.h: absent with a writable parent, or a directory of regular files
 * that is empty or holds adapter_config.json). Returns TSR_OK (with *exists
 * set), or the rule's status with its message prefixed by "--out". */
tsr_status tsr_cli_train_check_out_dir(const char *dir, int *exists);

/* A file to write: `name` (no slash) with len bytes of data. */
typedef struct {
    const char *name;
    const uint8_t *data;
    size_t len;
} tsr_cli_out_file;

/* Writes the files (names without a slash) into dir atomically through
 * base/fs.h's tsr_fs_dir_write_*: a fresh "<dir>.tmp-XXXXXX" beside dir
 * (mode 0777 less the umask), each file fsync'd, then put in dir's place in
 * one rename (an existing adapter directory exchanged and its old files
 * removed), after checking dir again with the adapter-directory rule.
 * Returns TSR_OK, or a status (TSR_ERR_INVALID for a bad file name, the
 * rule's, TSR_ERR_IO) leaving dir as it was and removing the temporary
 * directory. */
tsr_status tsr_cli_train_write_dir(const char *dir, const tsr_cli_out_file *files, size_t n_files);

#endif
