/* tests/common/byte_level.h - GPT-2's byte-level alphabet, written
 * independently of runtime/tokenizer so that the tests that build tiny
 * byte-level vocabularies (tests/tokenizer/test_tokenizer.c,
 * tests/server/test_grpc_api.c) check the library against a second reading
 * of the rule rather than against itself.
 *
 * What it is not: a tokenizer; only the byte -> code point map and the
 * UTF-8 writing of those code points (all below U+0800). */
#ifndef TSR_TESTS_COMMON_BYTE_LEVEL_H
#define TSR_TESTS_COMMON_BYTE_LEVEL_H

/* GPT-2's byte -> code point map: printable bytes map to themselves, the
 * others to 256, 257, ... in byte order. */
static inline unsigned tu_byte_cp(unsigned b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)
        return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174))
            k++;
    return 256 + k;
}

/* Writes code point `cp` (< 0x800) as UTF-8 at *w and advances *w. */
static inline void tu_put_cp(char **w, unsigned cp) {
    if (cp < 0x80) {
        *(*w)++ = (char)cp;
    } else {
        *(*w)++ = (char)(0xC0 | (cp >> 6));
        *(*w)++ = (char)(0x80 | (cp & 0x3F));
    }
}

#endif
