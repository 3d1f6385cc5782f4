/* runtime/tokenizer/chat.h - renders a conversation into the prompt text a
 * model's chat template would produce.
 *
 * What it is: a fixed renderer per template family, chosen by looking for
 * markers in the model's Jinja chat template (tokenizer.chat_template).
 * What it is not: a Jinja interpreter. Templates of other families are
 * refused with TSR_ERR_UNSUPPORTED; tools, images and other message fields
 * are not rendered. See docs/tokenizer.md for the exact output. */
#ifndef TSR_RUNTIME_CHAT_H
#define TSR_RUNTIME_CHAT_H

#include <stddef.h>

#include "base/status.h"
#include "runtime/tokenizer/tokenizer.h"

/* One message. Both strings are UTF-8, NUL-terminated, borrowed. */
typedef struct {
    const char *role; /* "system", "user", "assistant", ... */
    const char *content;
} tsr_chat_msg;

typedef enum {
    TSR_CHAT_UNKNOWN = 0,
    /* <|im_start|>role\ncontent<|im_end|>\n ... (SmolLM2, Qwen2, Hermes).
     * A default system message literal in the template (SmolLM2, Qwen2) is
     * inserted when the first message is not a system message. */
    TSR_CHAT_CHATML,
    /* <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\n
     * content<|eot_id|> ... (Llama 3.0; content is trimmed). */
    TSR_CHAT_LLAMA3,
    /* Llama 3.1+ : as LLAMA3, with the system header that always carries
     * "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
     * followed by the (trimmed) system message, if any. */
    TSR_CHAT_LLAMA31,
} tsr_chat_style;

/* The family of a Jinja template source; TSR_CHAT_UNKNOWN for NULL or
 * unrecognised templates. */
tsr_chat_style tsr_chat_detect(const char *tmpl);

/* Short name of a style ("chatml"). Never NULL. */
const char *tsr_chat_style_name(tsr_chat_style s);

/* Renders msgs[0..n) with the model's chat template family. With
 * add_generation_prompt, ends with the header that opens an assistant turn.
 * *out is malloc'd, NUL-terminated (caller frees). The text contains special
 * tokens in written form ("<|im_start|>"), so encode it with
 * TSR_TOK_PARSE_SPECIAL. Llama 3 output already starts with BOS text, so do
 * not also ask for TSR_TOK_ADD_SPECIAL there.
 * Errors: TSR_ERR_UNSUPPORTED when the model has no template or one of an
 * unknown family (the message quotes its beginning); TSR_ERR_INVALID for a
 * NULL role or content. */
tsr_status tsr_chat_render(const tsr_tokenizer_t *t, const tsr_chat_msg *msgs, size_t n,
                           int add_generation_prompt, char **out);

/* As tsr_chat_render with an explicit template source and BOS text (used
 * by Llama 3 styles; NULL means "<|begin_of_text|>"). */
tsr_status tsr_chat_render_template(const char *tmpl, const char *bos_text,
                                    const tsr_chat_msg *msgs, size_t n, int add_generation_prompt,
                                    char **out);

#endif
