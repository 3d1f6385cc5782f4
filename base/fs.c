/* base/fs.c - whole-file reads and complete writes. */
#include "base/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

tsr_status tsr_fs_read_file(const char *path, size_t max, char **out, size_t *len) {
    *out = NULL;
    if (len)
        *len = 0;
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return tsr_error_set(TSR_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    tsr_status st = buf ? TSR_OK : TSR_ERR_NOMEM;
    while (st == TSR_OK) {
        if (n + 1 >= cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                st = TSR_ERR_NOMEM;
                break;
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (max && n > max) {
            st = tsr_error_set(TSR_ERR_RANGE, "'%s' is larger than the %zu bytes allowed",
                               path, max);
            break;
        }
        if (r == 0)
            break;
    }
    if (st == TSR_ERR_NOMEM)
        tsr_error_set(st, "reading '%s': out of memory after %zu bytes", path, n);
    else if (st == TSR_OK && ferror(f))
        st = tsr_error_set(TSR_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
    if (!is_stdin)
        fclose(f);
    if (st != TSR_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return TSR_OK;
}

tsr_status tsr_fs_write_all(int fd, const void *buf, size_t n, const char *what) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return tsr_error_set(TSR_ERR_IO, "cannot write '%s': %s", what,
                                 w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return TSR_OK;
}
