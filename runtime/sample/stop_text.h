/* runtime/sample/stop_text.h - stop strings over streamed text. Text arrives piece
 * by piece; what could still be the start of a stop string is held back, and
 * once a stop string is complete, the text before it is released and the
 * rest dropped. Used by the CLI generation loop and the server's scheduler.
 *
 * What it is not: token-level stopping (end-of-generation ids, stop ids). */
#ifndef TSR_RUNTIME_STOP_TEXT_H
#define TSR_RUNTIME_STOP_TEXT_H

#include <stddef.h>

#include "base/status.h"

typedef struct {
    const char *const *stop; /* not owned; must outlive the matcher */
    size_t n_stop;
    char *buf;
    size_t len, cap;
    size_t consumed; /* bytes handed out by the last call, dropped at the next */
} tsr_stop_text;

void tsr_stop_text_init(tsr_stop_text *m, const char *const *stop, size_t n_stop);
void tsr_stop_text_free(tsr_stop_text *m); /* NULL ok */

/* Appends text[0..n). out and out_len receive the text that is now final (valid
 * until the next call). Sets *stopped to 1 when a stop string completed: the
 * text before it is in *out, everything after is gone, and the caller ends
 * the sequence. */
tsr_status tsr_stop_text_push(tsr_stop_text *m, const char *text, size_t n, const char **out,
                              size_t *out_len, int *stopped);

/* End of the sequence (not by a stop string): all held text. */
void tsr_stop_text_flush(tsr_stop_text *m, const char **out, size_t *out_len);

#endif
