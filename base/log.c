/* base/log.c - leveled, rank-tagged logging to stderr. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>

/* Written once by main before threads start, read-only afterwards. */
static struct {
    tsr_log_level level;
    int rank, world;
} log_cfg = {TSR_LOG_WARN, 0, 1};

void tsr_log_init(tsr_log_level level, int rank, int world) {
    log_cfg.level = level;
    log_cfg.rank = rank;
    log_cfg.world = world;
}

int tsr_log_enabled(tsr_log_level level) { return level <= log_cfg.level; }

void tsr_log(tsr_log_level level, const char *fmt, ...) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (!tsr_log_enabled(level))
        return;
    char line[2048];
    int n = 0;
    if (log_cfg.world > 1)
        n = snprintf(line, sizeof line, "[rank %d/%d] ", log_cfg.rank, log_cfg.world);
    n += snprintf(line + n, sizeof line - (size_t)n, "%s: ", names[level]);
    va_list ap;
    va_start(ap, fmt);
    if (n < (int)sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* one fputs per line keeps lines whole when threads log together */
    fprintf(stderr, "%s\n", line);
}
