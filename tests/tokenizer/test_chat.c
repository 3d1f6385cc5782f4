/* tests/tokenizer/test_chat.c - chat template detection and rendering:
 * SmolLM2's ChatML template (with its default system message), a plain
 * ChatML template, Qwen2-style default system, Llama 3.0 and 3.1 styles,
 * and refusals (unknown template, none, NULL fields). Exact strings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/chat.h"
#include "tests/common/check.h"

/* SmolLM2-135M-Instruct's tokenizer.chat_template, verbatim. */
static const char k_smollm2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

/* Plain ChatML (no default system message). */
static const char k_chatml[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Qwen2-style: default system checked before the loop, escapes as \n. */
static const char k_qwen2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Meta-Llama-3-8B-Instruct. */
static const char k_llama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/* The marker of Llama 3.1+ templates (abridged: detection needs only it). */
static const char k_llama31[] =
    "{{- bos_token }}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}{{- \"<|eot_id|>\" }}";

static void expect(const char *tmpl, const tsr_chat_msg *m, size_t n, int gen, const char *want) {
    char *out = NULL;
    tsr_status st = tsr_chat_render_template(tmpl, "<|begin_of_text|>", m, n, gen, &out);
    CHECK(st == TSR_OK);
    if (strcmp(out, want) != 0)
        fprintf(stderr, "rendered:\n[%s]\nwanted:\n[%s]\n", out, want);
    CHECK(strcmp(out, want) == 0);
    free(out);
}

int main(void) {
    CHECK(tsr_chat_detect(k_smollm2) == TSR_CHAT_CHATML);
    CHECK(tsr_chat_detect(k_chatml) == TSR_CHAT_CHATML);
    CHECK(tsr_chat_detect(k_llama3) == TSR_CHAT_LLAMA3);
    CHECK(tsr_chat_detect(k_llama31) == TSR_CHAT_LLAMA31);
    CHECK(tsr_chat_detect("[INST] {{ m }} [/INST]") == TSR_CHAT_UNKNOWN);
    CHECK(tsr_chat_detect(NULL) == TSR_CHAT_UNKNOWN);
    CHECK(strcmp(tsr_chat_style_name(TSR_CHAT_CHATML), "chatml") == 0);

    const tsr_chat_msg user[] = {{"user", "What is 2+2?"}};
    const tsr_chat_msg conv[] = {
        {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "  Bye \n"}};

    /* SmolLM2: default system inserted when the first message is not system. */
    expect(k_smollm2, user, 1, 1,
           "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
           "Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    expect(k_smollm2, user, 1, 0,
           "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
           "Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
    expect(k_smollm2, conv, 4, 1,
           "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
           "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n  Bye \n<|im_end|>\n"
           "<|im_start|>assistant\n");
    /* The default system message is inside the loop: none for no messages. */
    expect(k_smollm2, NULL, 0, 1, "<|im_start|>assistant\n");
    expect(k_chatml, user, 1, 1,
           "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    expect(k_qwen2, user, 1, 0,
           "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
           "What is 2+2?<|im_end|>\n");

    /* Llama 3: BOS first, content trimmed. */
    expect(k_llama3, conv, 4, 1,
           "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect(k_llama3, NULL, 0, 1, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    /* Llama 3.1: the system header is always there. */
    expect(k_llama31, user, 1, 1,
           "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
           "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect(k_llama31, conv, 2, 0,
           "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
           "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");

    /* Refusals. */
    char *out = (char *)1;
    CHECK(tsr_chat_render_template("[INST] {{ m }} [/INST]", NULL, user, 1, 1, &out) ==
          TSR_ERR_UNSUPPORTED);
    CHECK(out == NULL && strstr(tsr_error_msg(), "[INST]") != NULL);
    CHECK(tsr_chat_render_template(NULL, NULL, user, 1, 1, &out) == TSR_ERR_UNSUPPORTED);
    CHECK(strstr(tsr_error_msg(), "no chat template") != NULL);
    const tsr_chat_msg broken[] = {{"user", NULL}};
    CHECK(tsr_chat_render_template(k_chatml, NULL, broken, 1, 1, &out) == TSR_ERR_INVALID);
    CHECK(strstr(tsr_error_msg(), "content") != NULL);
    printf("test_chat: %d checks passed\n", tu_checks);
    return 0;
}
