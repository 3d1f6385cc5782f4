/* launcher/cli_train.c - data file, output directory and loss.csv of
 * `tessera-cli train` (see cli_train.h). The data file is read by
 * runtime/train/train_record.c and the epoch plan is runtime/train/epoch.c,
 * as in `tessera train`; the directory rule and the atomic write are
 * base/fs.h's, as tsr_peft_save's, so the client and `tessera train` agree
 * on what a data file and an --out may be. */
#include "launcher/cli_train.h"
#include "base/fs.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/train/train_record.h"

/* ---- the data file ---------------------------------------------------------- */

static void example_free(tsr_cli_train_example *e) {
    if (e->msg.input_case == TESSERA__V1__TRAIN_EXAMPLE__INPUT_PROMPT_COMPLETION) {
        free(e->pc.prompt);
        free(e->pc.completion);
    }
    for (size_t i = 0; e->msgs && i < e->chat.n_messages; i++) {
        free(e->msgs[i].role);
        free(e->msgs[i].content);
    }
    free(e->msgs);
    free(e->msg_ptrs);
    memset(e, 0, sizeof *e);
}

/* Builds *e from one record (copies of its strings). */
static tsr_status build_example(tsr_cli_train_example *e, const tsr_train_record *r) {
    memset(e, 0, sizeof *e);
    tessera__v1__train_example__init(&e->msg);
    tessera__v1__prompt_completion__init(&e->pc);
    tessera__v1__chat_input__init(&e->chat);
    if (!r->chat) {
        e->msg.input_case = TESSERA__V1__TRAIN_EXAMPLE__INPUT_PROMPT_COMPLETION;
        e->pc.prompt = strdup(r->prompt);
        e->pc.completion = strdup(r->completion);
        return e->pc.prompt && e->pc.completion ? TSR_OK
                                                : tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    }
    const size_t n = r->n_msgs;
    e->msg.input_case = TESSERA__V1__TRAIN_EXAMPLE__INPUT_CHAT;
    e->msgs = calloc(n, sizeof *e->msgs);
    e->msg_ptrs = calloc(n, sizeof *e->msg_ptrs);
    if (!e->msgs || !e->msg_ptrs)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    e->chat.messages = e->msg_ptrs;
    for (size_t i = 0; i < n; i++) {
        tessera__v1__chat_message__init(&e->msgs[i]);
        e->msg_ptrs[i] = &e->msgs[i];
        e->chat.n_messages = i + 1; /* what example_free frees */
        e->msgs[i].role = strdup(r->msgs[i].role);
        e->msgs[i].content = strdup(r->msgs[i].content);
        if (!e->msgs[i].role || !e->msgs[i].content)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    }
    return TSR_OK;
}

/* One record of the file, appended to the tsr_cli_train_data at ctx. */
static tsr_status load_record(void *ctx, const tsr_train_record *r, const char *where, int line) {
    tsr_cli_train_data *d = ctx;
    if (d->n >= (size_t)INT_MAX / 2)
        return tsr_error_set(TSR_ERR_RANGE, "%s: too many examples", where);
    if ((d->n & (d->n - 1)) == 0) { /* 0, 1, 2, 4, ...: grow to the next power of two */
        tsr_cli_train_example *g = realloc(d->ex, (d->n ? 2 * d->n : 1) * sizeof *g);
        if (!g)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        d->ex = g;
    }
    tsr_cli_train_example *e = &d->ex[d->n];
    tsr_status st = build_example(e, r);
    if (st != TSR_OK) {
        example_free(e);
        return st;
    }
    e->line = line;
    d->n++;
    return TSR_OK;
}

tsr_status tsr_cli_train_data_load(const char *path, tsr_cli_train_data *d) {
    memset(d, 0, sizeof *d);
    tsr_status st = tsr_train_jsonl_read(path, load_record, d);
    if (st != TSR_OK) {
        tsr_cli_train_data_free(d);
        return st;
    }
    /* the examples do not move from here on: point their messages home */
    for (size_t k = 0; k < d->n; k++) {
        tsr_cli_train_example *e = &d->ex[k];
        if (e->msg.input_case == TESSERA__V1__TRAIN_EXAMPLE__INPUT_PROMPT_COMPLETION)
            e->msg.prompt_completion = &e->pc;
        else
            e->msg.chat = &e->chat;
    }
    return TSR_OK;
}

void tsr_cli_train_data_free(tsr_cli_train_data *d) {
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        example_free(&d->ex[i]);
    free(d->ex);
    memset(d, 0, sizeof *d);
}

/* ---- the output directory ----------------------------------------------------- */

tsr_status tsr_cli_train_check_out_dir(const char *dir, int *exists) {
    tsr_status st = tsr_fs_check_adapter_dir(dir, exists);
    return st == TSR_OK ? st : tsr_error_wrap(st, "--out");
}

tsr_status tsr_cli_train_write_dir(const char *dir, const tsr_cli_out_file *files, size_t n_files) {
    for (size_t i = 0; i < n_files; i++)
        if (!files[i].name[0] || strchr(files[i].name, '/'))
            return tsr_error_set(TSR_ERR_INVALID, "bad file name '%s'", files[i].name);
    tsr_fs_dir_write w;
    tsr_status st = tsr_fs_dir_write_begin(&w, dir, 1);
    for (size_t i = 0; i < n_files && st == TSR_OK; i++) {
        char path[PATH_MAX + 256];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", w.tmp, files[i].name) >= sizeof path)
            st = tsr_error_set(TSR_ERR_INVALID, "'%s/%s': path too long", w.tmp, files[i].name);
        else
            st = tsr_fs_write_file(path, files[i].data, files[i].len);
    }
    if (st == TSR_OK)
        st = tsr_fs_dir_write_commit(&w, NULL);
    tsr_fs_dir_write_free(&w);
    return st;
}
