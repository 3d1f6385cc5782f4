/* runtime/train/loss_csv.h - the loss.csv of a training run: a header
 * "step,loss,grad_norm,tokens" and one row per optimizer step
 * ("%d,%.6f,%.6f,%ld"). One definition for `tessera train`
 * (runtime/train/train_loop.c) and tessera-cli train, which also reads it
 * back to resume; part of the small tsr_train_record library.
 *
 * What it is not: the file's writing (base/fs.h) or its plot
 * (launcher/cli_plot.h). */
#ifndef TSR_RUNTIME_LOSS_CSV_H
#define TSR_RUNTIME_LOSS_CSV_H

#include <stddef.h>

/* One optimizer step, as loss.csv keeps it. */
typedef struct {
    int step; /* the adapter's step count after it (1-based) */
    double loss, grad_norm;
    long tokens;
} tsr_loss_row;

/* loss.csv: "step,loss,grad_norm,tokens" and one row per entry, as `tessera
 * train` writes it ("%d,%.6f,%.6f,%ld"). Returns a malloc'd text of *len
 * bytes (NUL-terminated), or NULL when out of memory. */
char *tsr_loss_csv_format(const tsr_loss_row *log, size_t n, size_t *len);

/* Reads a loss.csv written by tsr_loss_csv_format back: *log is a
 * malloc'd array of *n rows (possibly 0). Returns 0, or -1 (with *log NULL)
 * for a text that is not such a file. */
int tsr_loss_csv_parse(const char *text, tsr_loss_row **log, size_t *n);

#endif
