/* bench/bench_util.h - what the benchmark programs share (beyond
 * base/clock.h and base/rng.h, whose tsr_splitmix64 is the prompt id stream
 * mirrored in bench/compare_llamacpp.py): medians and the per-rep series with its summary,
 * JSON string and series output, and the process's peak RSS.
 *
 * What it is not: part of Tessera (only bench/ links it). */
#ifndef TSR_BENCH_UTIL_H
#define TSR_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>

#include "base/clock.h"
#include "base/rng.h"

/* qsort comparator for doubles, ascending. */
int tsr_bench_cmp_double(const void *a, const void *b);

/* Median of v[0..n), n >= 1 (sorts v): the middle value, or the mean of the
 * middle two. */
double tsr_bench_median(double *v, int n);

/* The per-rep values of one test (tokens/s, or ms for step times) and their
 * summary. */
typedef struct {
    double *tok_s; /* (reps) */
    double median, min, max;
} tsr_bench_series;

/* median, min and max of s->tok_s[0..n), n >= 1 (tok_s is not reordered). */
void tsr_bench_series_summarize(tsr_bench_series *s, int n);

/* s as a JSON string literal (quotes, backslashes and control characters
 * escaped). */
void tsr_bench_json_string(FILE *f, const char *s);

/* "key": {"median": .., "min": .., "max": .., "reps": [..]} */
void tsr_bench_json_series(FILE *f, const char *key, const tsr_bench_series *s, int reps);

/* The process's peak resident set (getrusage), KiB. */
long tsr_bench_peak_rss_kib(void);

#endif
