/* runtime/tokenizer/tok_utf8.c - UTF-8 validation and repair, the GPT-2
 * byte<->unicode map, and a small growable buffer for the tokenizer.
 * Not a general Unicode library: only what byte-level BPE needs. */
#include "runtime/tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

tsr_utf8_check tsr_utf8_validate(const unsigned char *s, size_t n) {
    tsr_utf8_check r = {0, 0, 0};
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0; /* no overlongs */
            else if (c == 0xED)
                hi = 0x9F; /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90; /* no overlongs */
            else if (c == 0xF4)
                hi = 0x8F; /* <= U+10FFFF */
        } else {
            r.valid = i;
            r.err_len = 1;
            return r;
        }
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= n) {
                r.valid = i;
                r.incomplete = 1;
                return r;
            }
            unsigned d = s[i + k];
            unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
            if (d < l || d > h) {
                r.valid = i;
                r.err_len = k;
                return r;
            }
        }
        i += need + 1;
    }
    r.valid = n;
    return r;
}

size_t tsr_utf8_decode1(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80 || n < 2) {
        *cp = c;
        return 1;
    }
    if (c < 0xE0) {
        *cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
        return 2;
    }
    if (c < 0xF0 || n < 4) {
        *cp = n < 3 ? c : (((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu));
        return n < 3 ? 1 : 3;
    }
    *cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
    return 4;
}

size_t tsr_utf8_encode1(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int tsr_unicode_is_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

/* Bytes that GPT-2 keeps as themselves: '!'..'~', U+00A1..U+00AC,
 * U+00AE..U+00FF. The others (0..32, 127..160, 173) map, in byte order, to
 * U+0100 + k. */
static int byte_is_printable(unsigned b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
}

uint32_t tsr_byte_to_cp(unsigned char b) {
    if (byte_is_printable(b))
        return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++)
        if (!byte_is_printable(x))
            k++;
    return 256 + k;
}

int tsr_cp_to_byte(uint32_t cp) {
    if (cp < 256)
        return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) /* 68 non-printable bytes */
        return -1;
    unsigned k = cp - 256;
    for (unsigned x = 0; x < 256; x++) {
        if (!byte_is_printable(x)) {
            if (k == 0)
                return (int)x;
            k--;
        }
    }
    return -1;
}

tsr_status tsr_tok_buf_reserve(tsr_tok_buf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap)
        return TSR_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) {
        if (cap > ((size_t)-1) / 2)
            return tsr_error_set(TSR_ERR_NOMEM, "tokenizer: buffer size overflow");
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return tsr_error_set(TSR_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", cap);
    b->p = p;
    b->cap = cap;
    return TSR_OK;
}

tsr_status tsr_tok_buf_put(tsr_tok_buf *b, const void *data, size_t n) {
    TSR_TRY(tsr_tok_buf_reserve(b, n));
    if (n)
        memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return TSR_OK;
}

void tsr_tok_buf_free(tsr_tok_buf *b) {
    if (!b)
        return;
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

static const char k_replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

tsr_status tsr_tok_buf_put_lossy(tsr_tok_buf *b, const unsigned char *s, size_t n, int keep_tail,
                                 size_t *tail) {
    *tail = 0;
    TSR_TRY(tsr_tok_buf_reserve(b, n));
    while (n > 0) {
        tsr_utf8_check c = tsr_utf8_validate(s, n);
        TSR_TRY(tsr_tok_buf_put(b, s, c.valid));
        s += c.valid;
        n -= c.valid;
        if (n == 0)
            break;
        if (c.incomplete) {
            if (keep_tail) {
                *tail = n;
                return TSR_OK;
            }
            return tsr_tok_buf_put(b, k_replacement, sizeof k_replacement);
        }
        TSR_TRY(tsr_tok_buf_put(b, k_replacement, sizeof k_replacement));
        s += c.err_len;
        n -= c.err_len;
    }
    if (b->p == NULL)
        TSR_TRY(tsr_tok_buf_reserve(b, 0));
    b->p[b->n] = '\0';
    return TSR_OK;
}
