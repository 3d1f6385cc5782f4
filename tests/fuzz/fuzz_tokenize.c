/* tests/fuzz/fuzz_tokenize.c - libFuzzer harness: the tokenizer on arbitrary
 * bytes. The default model's tokenizer when TESSERA_FUZZ_MODEL names its
 * GGUF, else a small built-in one (fuzz_common.h).
 *
 * Invariants, each an assertion: valid UTF-8 encodes (invalid UTF-8 is
 * refused, never crashes); every id is in the vocab; decoding the ids gives
 * the input bytes back exactly, with special tokens parsed or not, except
 * the bytes the vocabulary has no token for, which are dropped as Hugging
 * Face drops them (docs/tokenizer.md: SmolLM2 has none for 0x1D, say); the
 * streaming detokenizer's pieces concatenate to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_common.h"

/* has_byte[b]: the vocabulary holds the byte-level token of byte b. */
static unsigned char has_byte[256];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const tsr_tokenizer_t *tok = fz_tokenizer();
    for (int b = 0; b < 256; b++) {
        char t[4];
        size_t n = fz_byte_token(b, t);
        has_byte[b] = tsr_tokenizer_find_token(tok, t, n) >= 0;
    }
    return 0;
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int utf8_valid(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k = c < 0x80                 ? 1
                   : c >= 0xC2 && c <= 0xDF ? 2
                   : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4
                                            : 0;
        if (!k || i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) ||
            (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F))
            return 0;
        i += k;
    }
    return 1;
}

static void round_trip(const tsr_tokenizer_t *tok, const uint8_t *data, size_t size, int special) {
    int32_t *ids = NULL;
    size_t n = 0;
    tsr_status st = tsr_tokenizer_encode(tok, (const char *)data, size, special, &ids, &n);
    if (st != TSR_OK) {
        FZ_ASSERT(st == TSR_ERR_INVALID && ids == NULL && n == 0, "encode failed with %s: %s",
                  tsr_status_str(st), tsr_error_msg());
        return;
    }
    FZ_ASSERT(ids != NULL, "ids NULL after a successful encode");
    for (size_t i = 0; i < n; i++)
        FZ_ASSERT(ids[i] >= 0 && (size_t)ids[i] < tsr_tokenizer_n_vocab(tok), "id %d", ids[i]);
    char *back = NULL;
    size_t len = 0;
    st = tsr_tokenizer_decode(tok, ids, n, 0, &back, &len);
    FZ_ASSERT(st == TSR_OK, "decode: %s", tsr_error_msg());
    uint8_t *want = malloc(size + 1), *raw = malloc(size + 1);
    FZ_ASSERT(want && raw, "out of memory");
    size_t n_want = 0, n_raw = 0;
    for (size_t i = 0; i < size; i++)
        if (has_byte[data[i]])
            want[n_want++] = data[i];
    for (size_t i = 0; i < n; i++) {
        size_t tl;
        const char *t = tsr_tokenizer_token_bytes(tok, ids[i], &tl);
        FZ_ASSERT(t && n_raw + tl <= size, "token %d: %zu bytes after %zu", ids[i], tl, n_raw);
        memcpy(raw + n_raw, t, tl);
        n_raw += tl;
    }
    FZ_ASSERT(n_raw == n_want && memcmp(raw, want, n_want) == 0,
              "the tokens' bytes are not the input less its bytes without a token (special "
              "%d): %zu bytes in, %zu expected back, %zu out, %zu tokens",
              special, size, n_want, n_raw, n);
    /* decode repairs UTF-8 (U+FFFD); a whole character dropped leaves it valid */
    if (utf8_valid(want, n_want))
        FZ_ASSERT(len == n_want && memcmp(back, want, n_want) == 0,
                  "decode(encode(x)) != x less its bytes without a token (special %d)", special);
    free(raw);
    free(want);
    tsr_detok_stream s;
    tsr_detok_stream_init(&s, tok, 0);
    size_t at = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *t;
        size_t tl;
        st = i < n ? tsr_detok_stream_push(&s, ids[i], &t, &tl)
                   : tsr_detok_stream_flush(&s, &t, &tl);
        FZ_ASSERT(st == TSR_OK, "stream: %s", tsr_error_msg());
        FZ_ASSERT(at + tl <= len && memcmp(back + at, t, tl) == 0,
                  "the streamed text differs from decode at byte %zu", at);
        at += tl;
    }
    FZ_ASSERT(at == len, "the stream gave %zu bytes, decode %zu", at, len);
    tsr_detok_stream_free(&s);
    free(back);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const tsr_tokenizer_t *tok = fz_tokenizer();
    round_trip(tok, data, size, 0);
    round_trip(tok, data, size, 1);
    return 0;
}
