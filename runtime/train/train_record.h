/* runtime/train/train_record.h - the JSONL training file, read record by record:
 * one JSON object a line, either {"prompt": ..., "completion": ...} or
 * {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
 * with at least one assistant message; other keys are ignored and blank
 * lines skipped (docs/lora.md, "Data"). Shared by `tessera train`
 * (runtime/train/train_data.c, which tokenizes the records) and `tessera-cli
 * train` (launcher/cli_train.c, which sends them as TrainExample messages),
 * so both accept and refuse the same files with the same messages.
 *
 * What it is not: no tokenizer, no chat template, no example limits: only
 * the file's syntax and shape. */
#ifndef TSR_RUNTIME_TRAIN_RECORD_H
#define TSR_RUNTIME_TRAIN_RECORD_H

#include <stddef.h>

#include "base/status.h"

typedef struct {
    const char *role, *content;
} tsr_train_msg;

/* One record; its strings live until the callback returns. */
typedef struct {
    int chat; /* 0: prompt/completion; 1: messages */
    const char *prompt, *completion;
    const tsr_train_msg *msgs; /* chat: n_msgs >= 1, roles checked */
    size_t n_msgs;
} tsr_train_record;

/* Called for each record in file order; `where` is "PATH:LINE". A status
 * other than TSR_OK (with its message set) stops the read and is returned. */
typedef tsr_status (*tsr_train_record_fn)(void *ctx, const tsr_train_record *r, const char *where,
                                          int line);

/* Reads the file at path. Errors, each naming the file (and line):
 * TSR_ERR_IO (cannot open or read), TSR_ERR_FORMAT (a line that is not
 * valid JSON or not a record of the format: which key is missing or of
 * which type, a bad role, no assistant message), TSR_ERR_INVALID (no record
 * at all), TSR_ERR_NOMEM, or what fn returned. */
tsr_status tsr_train_jsonl_read(const char *path, tsr_train_record_fn fn, void *ctx);

#endif
