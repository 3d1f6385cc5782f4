/* runtime/cmd/cmd_tokenize.c - `tessera tokenize`: the token ids of a text
 * (--text, or --file, "-" for standard input) on one line of stdout, special
 * tokens parsed, as the model's tokenizer gives them. Rank 0 alone; no
 * engine.
 *
 * What it is not: the tokenizer (runtime/tokenizer/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "runtime/cmd/cmd.h"

int cmd_tokenize(tsr_comm_grid *grid, const cmd_options *o) {
    if (g_rank != 0)
        return 0; /* nothing to do on other ranks */
    if (!o->text == !o->file) {
        PERR("tessera tokenize: give exactly one of --text TEXT or --file F\n");
        return 2;
    }
    size_t len = 0;
    char *buf = NULL;
    const char *text = o->text;
    if (o->file) {
        tsr_status rst = tsr_fs_read_file(o->file, 0, &buf, &len);
        if (rst != TSR_OK) {
            PERR("tessera: %s\n", tsr_error_msg());
            return 1;
        }
        text = buf;
    } else {
        len = strlen(text);
    }
    tsr_session s = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    tsr_status st = cmd_session_open(&s, grid, o, 0);
    if (st == TSR_OK)
        st = tsr_tokenizer_encode(s.tok, text, len, 1, &ids, &n);
    if (st != TSR_OK) {
        rc = cmd_fail(st);
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        PERR("tessera: %zu tokens\n", n);
    }
    free(ids);
    free(buf);
    tsr_session_free(&s);
    return rc;
}
