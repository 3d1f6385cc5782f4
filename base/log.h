/* base/log.h - the one logging function. Lines go to stderr and carry
 * "[rank r/N]" once the rank is known. Quiet by default: warnings and errors
 * only; --verbose raises the level. Not for program output (that is stdout). */
#ifndef TSR_BASE_LOG_H
#define TSR_BASE_LOG_H

typedef enum {
    TSR_LOG_ERROR = 0,
    TSR_LOG_WARN = 1,
    TSR_LOG_INFO = 2,
    TSR_LOG_DEBUG = 3,
} tsr_log_level;

/* Sets the level below which lines are dropped, and this process's rank and
 * world size (world <= 1 prints no rank tag). Call once from main, before any
 * other thread starts. */
void tsr_log_init(tsr_log_level level, int rank, int world);

int tsr_log_enabled(tsr_log_level level);

void tsr_log(tsr_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define TSR_LOG_E(...) tsr_log(TSR_LOG_ERROR, __VA_ARGS__)
#define TSR_LOG_W(...) tsr_log(TSR_LOG_WARN, __VA_ARGS__)
#define TSR_LOG_I(...) tsr_log(TSR_LOG_INFO, __VA_ARGS__)
#define TSR_LOG_D(...) tsr_log(TSR_LOG_DEBUG, __VA_ARGS__)

#endif
