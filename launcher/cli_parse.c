/* launcher/cli_parse.c - id-list, file and token parsing for tessera-cli
 * (see cli_parse.h). */
#include "launcher/cli_parse.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TSR_CLI_MAX_FILE (16u << 20)

int tsr_cli_parse_id_list(const char *s, int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!s)
        return -1;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += (*p == ',' || isspace((unsigned char)*p));
    int32_t *v = malloc(cap * sizeof *v);
    if (!v)
        return -1;
    size_t k = 0;
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    while (*p) {
        char *end;
        errno = 0;
        if (!(isdigit((unsigned char)*p) || *p == '-' || *p == '+'))
            goto bad; /* empty element or junk */
        long long x = strtoll(p, &end, 10);
        if (errno || end == p || x < INT32_MIN || x > INT32_MAX)
            goto bad;
        v[k++] = (int32_t)x;
        p = end;
        int separated = 0;
        while (isspace((unsigned char)*p)) {
            p++;
            separated = 1;
        }
        if (*p == ',') {
            p++;
            separated = 1;
            while (isspace((unsigned char)*p))
                p++;
            if (!*p)
                goto bad; /* trailing comma */
        }
        if (*p && !separated)
            goto bad; /* "1x", "1-2" */
    }
    if (k == 0)
        goto bad;
    *ids = v;
    *n = k;
    return 0;
bad:
    free(v);
    return -1;
}

char *tsr_cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            if (cap >= TSR_CLI_MAX_FILE) {
                errno = EFBIG;
                goto fail;
            }
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap + 1);
            if (!nb)
                goto fail;
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                errno = EIO;
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    if (!buf && !(buf = malloc(1)))
        return NULL;
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
fail : {
    int e = errno;
    free(buf);
    fclose(f);
    errno = e;
    return NULL;
}
}

char *tsr_cli_rstrip(char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

int tsr_cli_is_token_chars(const char *s) {
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            return 0;
    return 1;
}
