/* runtime/sample/stop_text.c - hold-back matching of stop strings. */
#include "runtime/sample/stop_text.h"

#include <stdlib.h>
#include <string.h>

void tsr_stop_text_init(tsr_stop_text *m, const char *const *stop, size_t n_stop) {
    memset(m, 0, sizeof *m);
    m->stop = stop;
    m->n_stop = n_stop;
}

void tsr_stop_text_free(tsr_stop_text *m) {
    if (!m)
        return;
    free(m->buf);
    memset(m, 0, sizeof *m);
}

static void drop_consumed(tsr_stop_text *m) {
    if (!m->consumed)
        return;
    memmove(m->buf, m->buf + m->consumed, m->len - m->consumed);
    m->len -= m->consumed;
    m->consumed = 0;
}

tsr_status tsr_stop_text_push(tsr_stop_text *m, const char *text, size_t n, const char **out,
                              size_t *out_len, int *stopped) {
    drop_consumed(m);
    *stopped = 0;
    if (m->len + n + 1 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 256;
        while (cap < m->len + n + 1)
            cap *= 2;
        char *b = realloc(m->buf, cap);
        if (!b)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        m->buf = b;
        m->cap = cap;
    }
    memcpy(m->buf + m->len, text, n);
    m->len += n;
    m->buf[m->len] = '\0';
    /* the earliest complete stop string wins */
    long best = -1;
    for (size_t i = 0; i < m->n_stop; i++) {
        size_t sl = strlen(m->stop[i]);
        if (!sl || sl > m->len)
            continue;
        for (size_t off = 0; off + sl <= m->len; off++)
            if (!memcmp(m->buf + off, m->stop[i], sl)) {
                if (best < 0 || (long)off < best)
                    best = (long)off;
                break;
            }
    }
    *out = m->buf;
    if (best >= 0) {
        *out_len = (size_t)best;
        *stopped = 1;
        m->consumed = m->len; /* the rest is dropped */
        return TSR_OK;
    }
    /* hold back the longest suffix that is a proper prefix of a stop string */
    size_t hold = 0;
    for (size_t i = 0; i < m->n_stop; i++) {
        size_t sl = strlen(m->stop[i]);
        for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
            if (k <= m->len && !memcmp(m->buf + m->len - k, m->stop[i], k)) {
                hold = k;
                break;
            }
    }
    *out_len = m->len - hold;
    m->consumed = *out_len;
    return TSR_OK;
}

void tsr_stop_text_flush(tsr_stop_text *m, const char **out, size_t *out_len) {
    drop_consumed(m);
    *out = m->buf ? m->buf : "";
    *out_len = m->len;
    m->consumed = m->len;
}
