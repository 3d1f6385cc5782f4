/* runtime/train/train_data.c - JSONL training examples (runtime/train/train_data.h). */
#include "runtime/train/train_data.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/chat.h"
#include "runtime/train/train_record.h"

/* A growing example list. */
typedef struct {
    int32_t *tokens;
    uint8_t *target;
    size_t n, cap;
} seq_buf;

static tsr_status seq_push(seq_buf *s, const int32_t *ids, size_t n, int target) {
    if (n == 0) /* text the vocabulary drops entirely: nothing to append (and no buffer yet) */
        return TSR_OK;
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

/* tsr_train_data_load's state while the file is read. */
typedef struct {
    const tsr_tokenizer_t *tok;
    int max_tokens;
    seq_buf all;
    int32_t *start, *lines; /* per example: first token in all, line of the file */
    size_t n_ex, cap_ex;
} load_ctx;

/* One record: tokenized and appended. */
static tsr_status load_record(void *ctxp, const tsr_train_record *r, const char *where, int line) {
    load_ctx *c = ctxp;
    const size_t before = c->all.n;
    if (!r->chat) {
        TSR_TRY(build_pc(&c->all, c->tok, where, r->prompt, r->completion));
    } else {
        tsr_chat_msg *cm = calloc(r->n_msgs, sizeof *cm);
        if (!cm)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < r->n_msgs; i++)
            cm[i] = (tsr_chat_msg){r->msgs[i].role, r->msgs[i].content};
        tsr_status st = build_chat(&c->all, c->tok, where, cm, r->n_msgs);
        free(cm);
        TSR_TRY(st);
    }
    const size_t n_tok = c->all.n - before;
    if (c->max_tokens > 0 && n_tok > (size_t)c->max_tokens)
        return tsr_error_set(TSR_ERR_RANGE,
                             "%s: the example has %zu tokens, more than --ctx %d (raise --ctx "
                             "or shorten the example; examples are not truncated)",
                             where, n_tok, c->max_tokens);
    if (n_tok < 2)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: the example has fewer than 2 tokens", where);
    if (c->all.n > (size_t)INT32_MAX / 2)
        return tsr_error_set(TSR_ERR_RANGE, "%s: the data file has too many tokens", where);
    if (c->n_ex + 2 > c->cap_ex) {
        const size_t cap = c->cap_ex ? c->cap_ex * 2 : 64;
        int32_t *a = realloc(c->start, cap * sizeof *a);
        if (a)
            c->start = a;
        int32_t *b = a ? realloc(c->lines, cap * sizeof *b) : NULL;
        if (!a || !b)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        c->lines = b;
        c->cap_ex = cap;
    }
    c->start[c->n_ex] = (int32_t)before;
    c->lines[c->n_ex] = line;
    c->n_ex++;
    return TSR_OK;
}

tsr_status tsr_train_data_load(const char *path, const tsr_tokenizer_t *tok, int max_tokens,
                               tsr_train_data *out) {
    memset(out, 0, sizeof *out);
    load_ctx c = {.tok = tok, .max_tokens = max_tokens};
    tsr_status st = tsr_train_jsonl_read(path, load_record, &c);
    seq_buf all = c.all;
    int32_t *start = c.start, *lines = c.lines;
    const size_t n_ex = c.n_ex;
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
