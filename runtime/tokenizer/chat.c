/* runtime/tokenizer/chat.c - chat prompt rendering for the template
 * families Tessera recognises (ChatML, Llama 3, Llama 3.1+). The family is
 * detected from markers in the Jinja source; the rendering is hand-written
 * to reproduce what the template renders for plain role/content messages.
 * What it is not: a Jinja interpreter. */
#include "runtime/tokenizer/chat.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/tok_internal.h"

tsr_chat_style tsr_chat_detect(const char *tmpl) {
    if (!tmpl)
        return TSR_CHAT_UNKNOWN;
    if (strstr(tmpl, "<|start_header_id|>") && strstr(tmpl, "<|eot_id|>"))
        return strstr(tmpl, "Cutting Knowledge Date") ? TSR_CHAT_LLAMA31 : TSR_CHAT_LLAMA3;
    if (strstr(tmpl, "<|im_start|>") && strstr(tmpl, "<|im_end|>"))
        return TSR_CHAT_CHATML;
    return TSR_CHAT_UNKNOWN;
}

const char *tsr_chat_style_name(tsr_chat_style s) {
    switch (s) {
    case TSR_CHAT_CHATML: return "chatml";
    case TSR_CHAT_LLAMA3: return "llama3";
    case TSR_CHAT_LLAMA31: return "llama3.1";
    case TSR_CHAT_UNKNOWN: break;
    }
    return "unknown";
}

static tsr_status put(tsr_tok_buf *b, const char *s) { return tsr_tok_buf_put(b, s, strlen(s)); }

/* Jinja's `trim` (Python str.strip()): drops Unicode whitespace at both
 * ends. Writes the kept range. */
static void trim(const char *s, const char **start, size_t *len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), b = 0, e = n;
    while (b < e) {
        uint32_t cp;
        size_t k = tsr_utf8_decode1(u + b, e - b, &cp);
        if (!tsr_unicode_is_space(cp) && !(cp >= 0x1C && cp <= 0x1F))
            break;
        b += k;
    }
    while (e > b) {
        size_t p = e - 1;
        while (p > b && (u[p] & 0xC0) == 0x80)
            p--;
        uint32_t cp;
        tsr_utf8_decode1(u + p, e - p, &cp);
        if (!tsr_unicode_is_space(cp) && !(cp >= 0x1C && cp <= 0x1F))
            break;
        e = p;
    }
    *start = s + b;
    *len = e - b;
}

/* Finds a default system message written as a literal in a ChatML template:
 * "<|im_start|>system" + newline + TEXT + "<|im_end|>" inside one Jinja
 * string (no closing quote in between). Jinja escapes (\n, \', \", \\) are
 * undone. Returns a malloc'd string, or NULL when there is none. */
static char *chatml_default_system(const char *tmpl) {
    static const char head[] = "<|im_start|>system";
    for (const char *p = strstr(tmpl, head); p; p = strstr(p + 1, head)) {
        const char *q = p + sizeof head - 1;
        if (q[0] == '\n')
            q += 1;
        else if (q[0] == '\\' && q[1] == 'n')
            q += 2;
        else
            continue;
        const char *end = strstr(q, "<|im_end|>");
        if (!end)
            return NULL;
        /* The literal must not close before <|im_end|>. */
        int closed = 0;
        for (const char *r = q; r < end; r++) {
            if (*r == '\\' && r + 1 < end) {
                r++;
                continue;
            }
            if (*r == '\'' || *r == '"')
                closed = 1;
        }
        if (closed || end == q)
            continue;
        char *out = malloc((size_t)(end - q) + 1), *w = out;
        if (!out)
            return NULL;
        for (const char *r = q; r < end; r++) {
            if (*r == '\\' && r + 1 < end) {
                r++;
                *w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r;
            } else {
                *w++ = *r;
            }
        }
        *w = '\0';
        return out;
    }
    return NULL;
}

static tsr_status render_chatml(const char *tmpl, const tsr_chat_msg *msgs, size_t n, int gen,
                                tsr_tok_buf *b) {
    int first_is_system = n > 0 && strcmp(msgs[0].role, "system") == 0;
    /* SmolLM2 checks `loop.first` inside the message loop, so an empty
     * conversation gets no default; Qwen2 checks before the loop. */
    int in_loop = strstr(tmpl, "loop.first") != NULL;
    if (!first_is_system && (n > 0 || !in_loop)) {
        char *sys = chatml_default_system(tmpl);
        if (sys) {
            tsr_status st = put(b, "<|im_start|>system\n");
            if (st == TSR_OK)
                st = put(b, sys);
            if (st == TSR_OK)
                st = put(b, "<|im_end|>\n");
            free(sys);
            TSR_TRY(st);
        }
    }
    for (size_t i = 0; i < n; i++) {
        TSR_TRY(put(b, "<|im_start|>"));
        TSR_TRY(put(b, msgs[i].role));
        TSR_TRY(put(b, "\n"));
        TSR_TRY(put(b, msgs[i].content));
        TSR_TRY(put(b, "<|im_end|>\n"));
    }
    if (gen)
        TSR_TRY(put(b, "<|im_start|>assistant\n"));
    return TSR_OK;
}

static tsr_status llama3_msg(tsr_tok_buf *b, const char *role, const char *content) {
    const char *s;
    size_t len;
    trim(content, &s, &len);
    TSR_TRY(put(b, "<|start_header_id|>"));
    TSR_TRY(put(b, role));
    TSR_TRY(put(b, "<|end_header_id|>\n\n"));
    TSR_TRY(tsr_tok_buf_put(b, s, len));
    return put(b, "<|eot_id|>");
}

static tsr_status render_llama3(tsr_chat_style style, const char *bos, const tsr_chat_msg *msgs,
                                size_t n, int gen, tsr_tok_buf *b) {
    size_t i = 0;
    if (style == TSR_CHAT_LLAMA31) {
        const char *sys = "", *s;
        size_t len;
        if (n > 0 && strcmp(msgs[0].role, "system") == 0)
            sys = msgs[i++].content;
        trim(sys, &s, &len);
        TSR_TRY(put(b, bos));
        TSR_TRY(put(b, "<|start_header_id|>system<|end_header_id|>\n\n"
                       "Cutting Knowledge Date: December 2023\n"
                       "Today Date: 26 Jul 2024\n\n"));
        TSR_TRY(tsr_tok_buf_put(b, s, len));
        TSR_TRY(put(b, "<|eot_id|>"));
    }
    for (; i < n; i++) {
        if (i == 0 && style == TSR_CHAT_LLAMA3) /* 3.1 wrote BOS before its header */
            TSR_TRY(put(b, bos));
        TSR_TRY(llama3_msg(b, msgs[i].role, msgs[i].content));
    }
    if (gen)
        TSR_TRY(put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n"));
    return TSR_OK;
}

tsr_status tsr_chat_render_template(const char *tmpl, const char *bos_text,
                                    const tsr_chat_msg *msgs, size_t n, int add_generation_prompt,
                                    char **out) {
    *out = NULL;
    if (!tmpl)
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "chat: the model has no chat template");
    if (n && !msgs)
        return tsr_error_set(TSR_ERR_INVALID, "chat: NULL messages");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return tsr_error_set(TSR_ERR_INVALID, "chat: message %zu has a NULL %s", i,
                                 msgs[i].role ? "content" : "role");
    tsr_chat_style style = tsr_chat_detect(tmpl);
    tsr_tok_buf b = {0};
    tsr_status st;
    switch (style) {
    case TSR_CHAT_CHATML: st = render_chatml(tmpl, msgs, n, add_generation_prompt, &b); break;
    case TSR_CHAT_LLAMA3:
    case TSR_CHAT_LLAMA31:
        st = render_llama3(style, bos_text ? bos_text : "<|begin_of_text|>", msgs, n,
                           add_generation_prompt, &b);
        break;
    default:
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "chat: template not recognised (supported: ChatML with "
                             "<|im_start|>/<|im_end|>, Llama 3 with <|start_header_id|>/"
                             "<|eot_id|>); it begins: \"%.80s\"",
                             tmpl);
    }
    if (st == TSR_OK)
        st = tsr_tok_buf_reserve(&b, 0);
    if (st != TSR_OK) {
        tsr_tok_buf_free(&b);
        return st;
    }
    b.p[b.n] = '\0';
    *out = b.p;
    return TSR_OK;
}

tsr_status tsr_chat_render(const tsr_tokenizer_t *t, const tsr_chat_msg *msgs, size_t n,
                           int add_generation_prompt, char **out) {
    *out = NULL;
    if (!t)
        return tsr_error_set(TSR_ERR_INVALID, "chat: NULL tokenizer");
    int32_t bos = tsr_tokenizer_bos(t);
    const char *bos_text = bos >= 0 ? tsr_tokenizer_token_text(t, bos) : NULL;
    return tsr_chat_render_template(tsr_tokenizer_chat_template(t), bos_text, msgs, n,
                                    add_generation_prompt, out);
}
