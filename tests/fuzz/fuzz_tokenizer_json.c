/* tests/fuzz/fuzz_tokenizer_json.c - libFuzzer harness: a Hugging Face
 * tokenizer.json and tokenizer_config.json, given as one input split at
 * FZ_SEP (no separator: no tokenizer_config.json).
 *
 * Loads them (tsr_tokenizer_from_json, through memfds); a tokenizer that
 * loads then encodes and decodes a fixed text with and without special
 * tokens, streams the decode, and renders a chat with its template. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/chat.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_common.h"

static void exercise(const tsr_tokenizer_t *tok) {
    static const char text[] =
        "Hello, world! <|im_start|>user\n  numbers 12345 \xc3\xa9\xe2\x82\xac "
        "\xf0\x9f\x98\x80<|endoftext|>";
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (tsr_tokenizer_encode_ex(tok, text, sizeof text - 1,
                                    special ? TSR_TOK_PARSE_SPECIAL | TSR_TOK_ADD_SPECIAL : 0, &ids,
                                    &n) == TSR_OK) {
            for (size_t i = 0; i < n; i++)
                FZ_ASSERT(ids[i] >= 0 && (size_t)ids[i] < tsr_tokenizer_n_vocab(tok),
                          "id %d outside the vocab of %zu", ids[i], tsr_tokenizer_n_vocab(tok));
            char *back = NULL;
            size_t len = 0;
            if (tsr_tokenizer_decode(tok, ids, n, special ? TSR_DETOK_SKIP_SPECIAL : 0, &back,
                                     &len) == TSR_OK)
                free(back);
            tsr_detok_stream s;
            tsr_detok_stream_init(&s, tok, 0);
            for (size_t i = 0; i < n; i++) {
                const char *t;
                size_t tl;
                (void)tsr_detok_stream_push(&s, ids[i], &t, &tl);
            }
            const char *t;
            size_t tl;
            (void)tsr_detok_stream_flush(&s, &t, &tl);
            tsr_detok_stream_free(&s);
        }
        free(ids);
    }
    for (int32_t id = 0; id < 4 && (size_t)id < tsr_tokenizer_n_vocab(tok); id++) {
        (void)tsr_tokenizer_is_eog(tok, id);
        (void)tsr_tokenizer_token_text(tok, id);
    }
    const tsr_chat_msg msgs[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}};
    char *out = NULL;
    if (tsr_chat_render(tok, msgs, 3, 1, &out) == TSR_OK)
        free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static fz_memfile fj, fc;
    fz_part p[2] = {{0}};
    size_t n = fz_split(data, size, p, 2);
    fz_memfile_set(&fj, p[0].p, p[0].n);
    if (n > 1)
        fz_memfile_set(&fc, p[1].p, p[1].n);
    tsr_tokenizer_t *tok = NULL;
    if (tsr_tokenizer_from_json(fj.path, n > 1 ? fc.path : NULL, &tok) != TSR_OK) {
        FZ_ASSERT(tok == NULL, "a failed load left a tokenizer");
        fz_refused("tokenizer");
        return 0;
    }
    exercise(tok);
    tsr_tokenizer_free(tok);
    return 0;
}
