/* runtime/train/loss_csv.c - loss.csv, written by `tessera train` and
 * tessera-cli train and read back by tessera-cli's --resume. */
#include "runtime/train/loss_csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CSV_HEADER "step,loss,grad_norm,tokens\n"

char *tsr_loss_csv_format(const tsr_loss_row *log, size_t n, size_t *len) {
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    fputs(CSV_HEADER, f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%d,%.6f,%.6f,%ld\n", log[i].step, log[i].loss, log[i].grad_norm, log[i].tokens);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    if (len)
        *len = size;
    return buf;
}

int tsr_loss_csv_parse(const char *text, tsr_loss_row **log, size_t *n) {
    *log = NULL;
    *n = 0;
    if (strncmp(text, CSV_HEADER, strlen(CSV_HEADER)) != 0)
        return -1;
    size_t cap = 0, count = 0;
    tsr_loss_row *out = NULL;
    for (const char *p = text + strlen(CSV_HEADER); *p;) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        char row[256];
        tsr_loss_row r;
        int used = -1;
        if (ll == 0 || ll >= sizeof row)
            goto bad;
        memcpy(row, p, ll);
        row[ll] = '\0';
        if (sscanf(row, "%d,%lf,%lf,%ld%n", &r.step, &r.loss, &r.grad_norm, &r.tokens, &used) !=
                4 ||
            used != (int)ll)
            goto bad;
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            tsr_loss_row *g = realloc(out, cap * sizeof *g);
            if (!g)
                goto bad;
            out = g;
        }
        out[count++] = r;
        p += ll + (eol ? 1 : 0);
    }
    *log = out;
    *n = count;
    return 0;
bad:
    free(out);
    return -1;
}
