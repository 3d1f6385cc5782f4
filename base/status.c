/* base/status.c - thread-local error messages behind tsr_status. */
#include "base/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char err_msg[1024];

const char *tsr_status_str(tsr_status s) {
    switch (s) {
    case TSR_OK: return "ok";
    case TSR_ERR_INVALID: return "invalid argument";
    case TSR_ERR_IO: return "I/O error";
    case TSR_ERR_FORMAT: return "format error";
    case TSR_ERR_UNSUPPORTED: return "unsupported";
    case TSR_ERR_NOMEM: return "out of memory";
    case TSR_ERR_RANGE: return "out of range";
    case TSR_ERR_BACKEND: return "backend error";
    case TSR_ERR_COMM: return "communication error";
    case TSR_ERR_INTERNAL: return "internal error";
    case TSR_ERR_UNAVAILABLE: return "unavailable";
    }
    return "unknown status";
}

tsr_status tsr_error_set(tsr_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return s;
}

tsr_status tsr_error_wrap(tsr_status s, const char *fmt, ...) {
    char prefix[512], old[sizeof err_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_msg, sizeof old);
    snprintf(err_msg, sizeof err_msg, "%.400s: %.600s", prefix, old);
    return s;
}

const char *tsr_error_msg(void) { return err_msg; }

void tsr_error_clear(void) { err_msg[0] = '\0'; }
