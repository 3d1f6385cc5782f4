/* base/status.h - status codes and error propagation for all library code.
 *
 * Library code (kernels/, comm/, shard/, runtime/) never exits: every fallible
 * function returns a tsr_status and writes a human-readable reason with
 * tsr_error_set(). Only a program's main() decides to end the process.
 * The last error message is thread-local, so the gRPC thread and the engine
 * thread do not overwrite each other's messages. */
#ifndef TSR_BASE_STATUS_H
#define TSR_BASE_STATUS_H

#include <stddef.h>

typedef enum {
    TSR_OK = 0,
    TSR_ERR_INVALID,     /* bad argument or bad input data */
    TSR_ERR_IO,          /* file missing, unreadable, short read */
    TSR_ERR_FORMAT,      /* a file is corrupt, truncated or inconsistent */
    TSR_ERR_UNSUPPORTED, /* valid input we do not handle (dtype, arch) */
    TSR_ERR_NOMEM,       /* allocation failed */
    TSR_ERR_RANGE,       /* value out of range (token id, context length) */
    TSR_ERR_BACKEND,     /* a kernel backend failed (CUDA, cuBLAS) */
    TSR_ERR_COMM,        /* a collective or peer failed */
    TSR_ERR_INTERNAL,    /* a broken invariant: a bug */
    TSR_ERR_UNAVAILABLE, /* the service is shutting down or not ready: retry later */
} tsr_status;

/* The largest code above (keep it the last one): range checks on codes that
 * crossed a process boundary use it. */
#define TSR_ERR_LAST TSR_ERR_UNAVAILABLE

/* Short name of a status ("format error"). Never NULL. */
const char *tsr_status_str(tsr_status s);

/* Records a printf-style message for the calling thread and returns `s`, so
 * callers can write `return tsr_error_set(TSR_ERR_FORMAT, "...", ...)`. */
tsr_status tsr_error_set(tsr_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes context to the current thread's message ("loading x.gguf: ...")
 * and returns `s` unchanged. */
tsr_status tsr_error_wrap(tsr_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The calling thread's last message; "" when none. Valid until the next set. */
const char *tsr_error_msg(void);

/* Clears the calling thread's message. */
void tsr_error_clear(void);

/* Evaluates `call`; returns its status from the enclosing function if not OK. */
#define TSR_TRY(call)                                                                              \
    do {                                                                                           \
        tsr_status tsr_try_s_ = (call);                                                            \
        if (tsr_try_s_ != TSR_OK)                                                                  \
            return tsr_try_s_;                                                                     \
    } while (0)

/* Evaluates `call` into `st`; jumps to `cleanup` if not OK. */
#define TSR_CHECK_GOTO(st, call)                                                                   \
    do {                                                                                           \
        (st) = (call);                                                                             \
        if ((st) != TSR_OK)                                                                        \
            goto cleanup;                                                                          \
    } while (0)

#endif
