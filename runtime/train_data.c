/* runtime/train_data.c - JSONL training examples (runtime/train_data.h). */
#include "runtime/train_data.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/chat.h"

/* A growing example list. */
typedef struct {
    int32_t *tokens;
    uint8_t *target;
    size_t n, cap;
} seq_buf;

static tsr_status seq_push(seq_buf *s, const int32_t *ids, size_t n, int target) {
    if (s->n + n > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->n + n)
            cap *= 2;
        int32_t *t = realloc(s->tokens, cap * sizeof *t);
        if (t)
            s->tokens = t;
        uint8_t *m = t ? realloc(s->target, cap) : NULL;
        if (!t || !m)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        s->target = m;
        s->cap = cap;
    }
    memcpy(s->tokens + s->n, ids, n * sizeof *ids);
    memset(s->target + s->n, target ? 1 : 0, n);
    s->n += n;
    return TSR_OK;
}

/* Appends the tokens of text[0..len) with special tokens parsed. */
static tsr_status push_text(seq_buf *s, const tsr_tokenizer_t *tok, const char *text, size_t len,
                            int target) {
    if (len == 0)
        return TSR_OK;
    int32_t *ids = NULL;
    size_t n = 0;
    TSR_TRY(tsr_tokenizer_encode_ex(tok, text, len, TSR_TOK_PARSE_SPECIAL, &ids, &n));
    tsr_status st = seq_push(s, ids, n, target);
    free(ids);
    return st;
}

/* prompt/completion */
static tsr_status build_pc(seq_buf *s, const tsr_tokenizer_t *tok, const char *where,
                           const char *prompt, const char *completion) {
    int32_t eos = tsr_tokenizer_eos(tok), bos = tsr_tokenizer_bos(tok);
    if (eos < 0)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: the model's tokenizer has no EOS token to end a completion",
                             where);
    if (tsr_tokenizer_add_bos(tok) && bos >= 0)
        TSR_TRY(seq_push(s, &bos, 1, 0));
    TSR_TRY(push_text(s, tok, prompt, strlen(prompt), 0));
    TSR_TRY(push_text(s, tok, completion, strlen(completion), 1));
    return seq_push(s, &eos, 1, 1);
}

/* messages: the assistant spans by rendering prefixes (see the header). */
static tsr_status build_chat(seq_buf *s, const tsr_tokenizer_t *tok, const char *where,
                             const tsr_chat_msg *msgs, size_t n) {
    char *full = NULL, *pre = NULL, *with = NULL;
    tsr_status st = tsr_chat_render(tok, msgs, n, 0, &full);
    if (st != TSR_OK)
        return tsr_error_set(st, "%s: %s", where, tsr_error_msg());
    const size_t full_len = strlen(full);
    size_t done = 0; /* bytes of `full` tokenized so far */
    for (size_t k = 0; k < n && st == TSR_OK; k++) {
        if (strcmp(msgs[k].role, "assistant"))
            continue;
        st = tsr_chat_render(tok, msgs, k, 1, &pre);
        if (st == TSR_OK)
            st = tsr_chat_render(tok, msgs, k + 1, 0, &with);
        if (st != TSR_OK) {
            st = tsr_error_set(st, "%s: %s", where, tsr_error_msg());
            break;
        }
        size_t a = strlen(pre), b = strlen(with);
        if (a < done || a > b || b > full_len || memcmp(pre, full, a) || memcmp(with, full, b)) {
            st = tsr_error_set(TSR_ERR_FORMAT,
                               "%s: the chat template's rendering of the conversation up to "
                               "message %zu is not a prefix of the whole conversation's, so the "
                               "assistant's tokens cannot be located",
                               where, k + 1);
            break;
        }
        st = push_text(s, tok, full + done, a - done, 0);
        /* the assistant piece: loss up to and including its last end-of-turn
         * token; what follows it (a newline) carries none */
        size_t n0 = s->n;
        if (st == TSR_OK)
            st = push_text(s, tok, full + a, b - a, 1);
        if (st == TSR_OK) {
            size_t last = s->n;
            for (size_t i = s->n; i > n0; i--)
                if (tsr_tokenizer_is_eog(tok, s->tokens[i - 1])) {
                    last = i;
                    break;
                }
            for (size_t i = last; i < s->n; i++)
                s->target[i] = 0;
        }
        done = b;
        free(pre);
        free(with);
        pre = with = NULL;
    }
    if (st == TSR_OK)
        st = push_text(s, tok, full + done, full_len - done, 0);
    free(pre);
    free(with);
    free(full);
    return st;
}

/* The finished example out of s (ownership passes), or s freed on error. */
static tsr_status take(seq_buf *s, tsr_status st, int32_t **tokens, uint8_t **target, size_t *n) {
    if (st != TSR_OK) {
        free(s->tokens);
        free(s->target);
        *tokens = NULL;
        *target = NULL;
        *n = 0;
        return st;
    }
    *tokens = s->tokens;
    *target = s->target;
    *n = s->n;
    return TSR_OK;
}

tsr_status tsr_train_example_pc(const tsr_tokenizer_t *tok, const char *where, const char *prompt,
                                const char *completion, int32_t **tokens, uint8_t **target,
                                size_t *n) {
    seq_buf s = {0};
    return take(&s, build_pc(&s, tok, where, prompt, completion), tokens, target, n);
}

tsr_status tsr_train_example_chat(const tsr_tokenizer_t *tok, const char *where,
                                  const tsr_chat_msg *msgs, size_t n_msgs, int32_t **tokens,
                                  uint8_t **target, size_t *n) {
    seq_buf s = {0};
    return take(&s, build_chat(&s, tok, where, msgs, n_msgs), tokens, target, n);
}

static const char *jtype(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* One record into s (appended). */
static tsr_status parse_record(seq_buf *s, const tsr_tokenizer_t *tok, const char *where,
                               const json_t *root) {
    if (!json_is_object(root))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: expected a JSON object, got %s", where,
                             jtype(root));
    const json_t *msgs = json_object_get(root, "messages");
    const json_t *prompt = json_object_get(root, "prompt");
    const json_t *comp = json_object_get(root, "completion");
    if (msgs && (prompt || comp))
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: a record has either \"messages\" or \"prompt\"/\"completion\", "
                             "not both",
                             where);
    if (!msgs) {
        if (!prompt || !comp)
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: expected {\"prompt\": ..., \"completion\": ...} or "
                                 "{\"messages\": [...]}; missing \"%s\"",
                                 where, !msgs && !prompt && !comp ? "messages"
                                        : !prompt                 ? "prompt"
                                                                  : "completion");
        if (!json_is_string(prompt) || !json_is_string(comp))
            return tsr_error_set(TSR_ERR_FORMAT, "%s: \"%s\" must be a string, got %s", where,
                                 json_is_string(prompt) ? "completion" : "prompt",
                                 jtype(json_is_string(prompt) ? comp : prompt));
        return build_pc(s, tok, where, json_string_value(prompt), json_string_value(comp));
    }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"messages\" must be a non-empty array, got %s",
                             where, json_is_array(msgs) ? "an empty array" : jtype(msgs));
    size_t n = json_array_size(msgs);
    tsr_chat_msg *cm = calloc(n, sizeof *cm);
    if (!cm)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    tsr_status st = TSR_OK;
    int n_assistant = 0;
    for (size_t i = 0; i < n && st == TSR_OK; i++) {
        const json_t *m = json_array_get(msgs, i);
        const json_t *role = json_is_object(m) ? json_object_get(m, "role") : NULL;
        const json_t *content = json_is_object(m) ? json_object_get(m, "content") : NULL;
        if (!json_is_object(m))
            st = tsr_error_set(TSR_ERR_FORMAT, "%s: message %zu must be an object, got %s", where,
                               i + 1, jtype(m));
        else if (!json_is_string(role) || !json_is_string(content))
            st = tsr_error_set(TSR_ERR_FORMAT,
                               "%s: message %zu needs string \"role\" and \"content\"", where,
                               i + 1);
        else if (strcmp(json_string_value(role), "system") &&
                 strcmp(json_string_value(role), "user") &&
                 strcmp(json_string_value(role), "assistant"))
            st = tsr_error_set(TSR_ERR_FORMAT,
                               "%s: message %zu has role \"%s\" (want system, user or assistant)",
                               where, i + 1, json_string_value(role));
        else {
            cm[i].role = json_string_value(role);
            cm[i].content = json_string_value(content);
            n_assistant += !strcmp(cm[i].role, "assistant");
        }
    }
    if (st == TSR_OK && !n_assistant)
        st = tsr_error_set(TSR_ERR_FORMAT,
                           "%s: the conversation has no assistant message (nothing to learn)",
                           where);
    if (st == TSR_OK)
        st = build_chat(s, tok, where, cm, n);
    free(cm);
    return st;
}

tsr_status tsr_train_data_alloc(tsr_train_data *out, int n_examples, size_t n_tokens) {
    memset(out, 0, sizeof *out);
    out->start = calloc((size_t)n_examples + 1, sizeof *out->start);
    out->tokens = calloc(n_tokens + 1, sizeof *out->tokens);
    out->target = calloc(n_tokens + 1, 1);
    out->line = calloc((size_t)n_examples + 1, sizeof *out->line);
    out->n_examples = n_examples;
    if (!out->start || !out->tokens || !out->target || !out->line) {
        tsr_train_data_free(out);
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    }
    return TSR_OK;
}

void tsr_train_data_free(tsr_train_data *d) {
    if (!d)
        return;
    free(d->start);
    free(d->tokens);
    free(d->target);
    free(d->line);
    memset(d, 0, sizeof *d);
}

tsr_status tsr_train_data_load(const char *path, const tsr_tokenizer_t *tok, int max_tokens,
                               tsr_train_data *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return tsr_error_set(TSR_ERR_IO, "cannot open the data file '%s': %s", path,
                             strerror(errno));
    seq_buf all = {0};
    int32_t *start = NULL, *lines = NULL;
    size_t n_ex = 0, cap_ex = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    int lineno = 0;
    tsr_status st = TSR_OK;
    char where[4200];
    while (st == TSR_OK && (len = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        size_t i = 0;
        while (i < (size_t)len && strchr(" \t\r\n", line[i]))
            i++;
        if (i == (size_t)len)
            continue; /* blank */
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        json_error_t je;
        json_t *root = json_loadb(line, (size_t)len, 0, &je);
        if (!root) {
            st = tsr_error_set(TSR_ERR_FORMAT, "%s: not valid JSON: %s (column %d)", where,
                               je.text, je.column);
            break;
        }
        size_t before = all.n;
        st = parse_record(&all, tok, where, root);
        json_decref(root);
        if (st != TSR_OK)
            break;
        size_t n_tok = all.n - before;
        if (max_tokens > 0 && n_tok > (size_t)max_tokens) {
            st = tsr_error_set(TSR_ERR_RANGE,
                               "%s: the example has %zu tokens, more than --ctx %d (raise --ctx "
                               "or shorten the example; examples are not truncated)",
                               where, n_tok, max_tokens);
            break;
        }
        if (n_tok < 2) {
            st = tsr_error_set(TSR_ERR_FORMAT, "%s: the example has fewer than 2 tokens", where);
            break;
        }
        if (all.n > (size_t)INT32_MAX / 2) {
            st = tsr_error_set(TSR_ERR_RANGE, "%s: the data file has too many tokens", where);
            break;
        }
        if (n_ex + 2 > cap_ex) {
            cap_ex = cap_ex ? cap_ex * 2 : 64;
            int32_t *a = realloc(start, cap_ex * sizeof *a);
            if (a)
                start = a;
            int32_t *b = a ? realloc(lines, cap_ex * sizeof *b) : NULL;
            if (!a || !b) {
                st = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
                break;
            }
            lines = b;
        }
        start[n_ex] = (int32_t)before;
        lines[n_ex] = lineno;
        n_ex++;
    }
    if (st == TSR_OK && ferror(f))
        st = tsr_error_set(TSR_ERR_IO, "cannot read the data file '%s': %s", path,
                           strerror(errno));
    fclose(f);
    free(line);
    if (st == TSR_OK && n_ex == 0)
        st = tsr_error_set(TSR_ERR_INVALID,
                           "the data file '%s' holds no example (one JSON object per line)",
                           path);
    if (st == TSR_OK)
        st = tsr_train_data_alloc(out, (int)n_ex, all.n);
    if (st == TSR_OK) {
        memcpy(out->start, start, n_ex * sizeof *start);
        out->start[n_ex] = (int32_t)all.n;
        memcpy(out->line, lines, n_ex * sizeof *lines);
        memcpy(out->tokens, all.tokens, all.n * sizeof *all.tokens);
        memcpy(out->target, all.target, all.n);
        for (size_t e = 0; e < n_ex; e++) {
            out->target[out->start[e]] = 0; /* an example's first token predicts nothing */
        }
        for (size_t i = 0; i < all.n; i++)
            out->n_target += out->target[i];
    }
    free(start);
    free(lines);
    free(all.tokens);
    free(all.target);
    return st;
}
