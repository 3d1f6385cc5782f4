/* bench/bench_util.c - the benchmark programs' shared helpers (bench_util.h). */
#include "bench/bench_util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

int tsr_bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double tsr_bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, tsr_bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void tsr_bench_series_summarize(tsr_bench_series *s, int n) {
    double *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) {
        s->median = s->min = s->max = s->tok_s[0];
        return;
    }
    memcpy(sorted, s->tok_s, (size_t)n * sizeof *sorted);
    s->median = tsr_bench_median(sorted, n);
    s->min = sorted[0];
    s->max = sorted[n - 1];
    free(sorted);
}

void tsr_bench_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

void tsr_bench_json_series(FILE *f, const char *key, const tsr_bench_series *s, int reps) {
    fprintf(f, "\"%s\": {\"median\": %.3f, \"min\": %.3f, \"max\": %.3f, \"reps\": [", key,
            s->median, s->min, s->max);
    for (int i = 0; i < reps; i++)
        fprintf(f, "%s%.3f", i ? ", " : "", s->tok_s[i]);
    fputs("]}", f);
}

long tsr_bench_peak_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss; /* KiB on Linux */
}
