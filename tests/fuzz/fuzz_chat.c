/* tests/fuzz/fuzz_chat.c - libFuzzer harness: the chat template engine.
 * The input, split at FZ_SEP, is a Jinja template source, the BOS text, then
 * role and content of each message in turn. Detects the template's family
 * (tsr_chat_detect) and renders the conversation with and without the
 * generation prompt. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/chat.h"
#include "tests/fuzz/fuzz_common.h"

#define MAX_PARTS 18

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_part p[MAX_PARTS];
    size_t n = fz_split(data, size, p, MAX_PARTS);
    char *s[MAX_PARTS];
    for (size_t i = 0; i < n; i++) {
        s[i] = malloc(p[i].n + 1);
        FZ_ASSERT(s[i], "out of memory");
        memcpy(s[i], p[i].p, p[i].n);
        s[i][p[i].n] = 0;
    }
    tsr_chat_msg msgs[MAX_PARTS / 2];
    size_t n_msgs = 0;
    for (size_t i = 2; i + 1 < n; i += 2) {
        msgs[n_msgs].role = s[i];
        msgs[n_msgs].content = s[i + 1];
        n_msgs++;
    }
    tsr_chat_style style = tsr_chat_detect(s[0]);
    FZ_ASSERT(tsr_chat_style_name(style) != NULL, "style %d has no name", (int)style);
    for (int agp = 0; agp < 2; agp++) {
        char *out = NULL;
        tsr_status st =
            tsr_chat_render_template(s[0], n > 1 ? s[1] : NULL, msgs, n_msgs, agp, &out);
        FZ_ASSERT(st != TSR_OK || out, "rendered without output");
        free(out);
    }
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    return 0;
}
