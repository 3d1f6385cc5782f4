/* runtime/tokenizer/tok_internal.h - private helpers shared by the tokenizer's
 * .c files (UTF-8 handling, the GPT-2 byte<->unicode map, a growable byte
 * buffer). Not installed, not part of the API. */
#ifndef TSR_RUNTIME_TOK_INTERNAL_H
#define TSR_RUNTIME_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* Result of checking UTF-8 from some position: `valid` bytes are well-formed;
 * then either the end (err_len 0, incomplete 0), an incomplete sequence that
 * runs into the end (incomplete 1), or an ill-formed one whose maximal
 * invalid subpart is err_len bytes (Unicode 3.9 / Rust from_utf8_lossy). */
typedef struct {
    size_t valid;
    size_t err_len;
    int incomplete;
} tsr_utf8_check;

tsr_utf8_check tsr_utf8_validate(const unsigned char *s, size_t n);

/* Decodes one code point at s[0..n) (assumed well-formed); returns its
 * length in bytes and writes *cp. */
size_t tsr_utf8_decode1(const unsigned char *s, size_t n, uint32_t *cp);

/* Writes cp as UTF-8 into out (>= 4 bytes); returns the length. */
size_t tsr_utf8_encode1(uint32_t cp, char *out);

/* Unicode White_Space (what Rust's char::is_whitespace and Python's
 * str.isspace largely agree on). */
int tsr_unicode_is_space(uint32_t cp);

/* GPT-2's byte -> code point map (printable bytes map to themselves, the
 * rest to U+0100 and up). */
uint32_t tsr_byte_to_cp(unsigned char b);
/* Inverse; -1 when cp is not the image of a byte. */
int tsr_cp_to_byte(uint32_t cp);

/* A growable byte buffer, always NUL-terminated when non-empty. */
typedef struct {
    char *p;
    size_t n, cap;
} tsr_tok_buf;

tsr_status tsr_tok_buf_reserve(tsr_tok_buf *b, size_t extra);
tsr_status tsr_tok_buf_put(tsr_tok_buf *b, const void *data, size_t n);
void tsr_tok_buf_free(tsr_tok_buf *b);

/* Appends s[0..n) to b, replacing ill-formed UTF-8 with U+FFFD. When
 * `keep_tail` is set, an incomplete sequence at the very end is not
 * emitted; its length is returned in *tail (else *tail is 0 and the tail
 * becomes one U+FFFD). */
tsr_status tsr_tok_buf_put_lossy(tsr_tok_buf *b, const unsigned char *s, size_t n, int keep_tail,
                                 size_t *tail);

#endif
