/* runtime/server/grpc_api.c - tessera.v1 messages <-> runtime types, and the
 * validation of every request field. No transport here (see grpc_api.h). */
#include "runtime/server/grpc_api.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/sample/sampler.h"
#include "runtime/tokenizer/chat.h"

#define refuse tsr_api_refuse

grpc_status_code tsr_api_refuse(tsr_api_error *e, grpc_status_code code, const char *fmt, ...) {
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

/* Length of the valid UTF-8 prefix of s[0..n): n when all of it is valid. */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3, cp = c & 0x07;
        } else {
            return i;
        }
        if (n - i <= k)
            return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += k + 1;
    }
    return n;
}

int tsr_api_utf8_valid(const char *s, size_t n) {
    return utf8_valid_prefix((const unsigned char *)s, n) == n;
}

grpc_status_code tsr_api_check_id(const char *id, tsr_api_error *err) {
    size_t n = strlen(id);
    if (n > TSR_API_MAX_ID)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "request_id is %zu bytes long; at most %d are allowed", n, TSR_API_MAX_ID);
    if (!tsr_api_utf8_valid(id, n))
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "request_id is not valid UTF-8");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x20 || id[i] == 0x7F)
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "request_id contains a control character (byte %zu); use printable "
                          "characters",
                          i);
    return GRPC_STATUS_OK;
}

static int vocab_size(const tsr_api_ctx *ctx) {
    if (ctx->model && ctx->model->n_vocab > 0)
        return ctx->model->n_vocab;
    return (int)tsr_tokenizer_n_vocab(ctx->tok);
}

/* ---- chat ---------------------------------------------------------------- */

static grpc_status_code render_error(tsr_status st, tsr_api_error *err) {
    if (st == TSR_ERR_UNSUPPORTED)
        return refuse(err, GRPC_STATUS_FAILED_PRECONDITION,
                      "this model has no chat template Tessera can render (%s); send the "
                      "prompt as text or tokens instead",
                      tsr_error_msg());
    if (st == TSR_ERR_INVALID)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "chat: %s", tsr_error_msg());
    return refuse(err, GRPC_STATUS_INTERNAL, "chat rendering failed: %s", tsr_error_msg());
}

/* A marker with no whitespace at either end (templates may trim content)
 * and nothing a template treats specially. */
static const char k_continue_mark[] = "\xe2\x9f\xa6tsr-continue-5c1e\xe2\x9f\xa7";

grpc_status_code tsr_api_render_chat(const tsr_api_ctx *ctx, const Tessera__V1__ChatInput *chat,
                                     char **out, tsr_api_error *err) {
    *out = NULL;
    size_t n = chat ? chat->n_messages : 0;
    if (n == 0)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "chat.messages is empty: give at least one message");
    tsr_chat_msg *msgs = calloc(n, sizeof *msgs);
    if (!msgs)
        return refuse(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    grpc_status_code code = GRPC_STATUS_OK;
    char *marked = NULL, *real = NULL;
    for (size_t i = 0; i < n; i++) {
        const Tessera__V1__ChatMessage *cm = chat->messages[i];
        msgs[i].role = cm->role;
        msgs[i].content = cm->content;
        if (!cm->role[0]) {
            code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "chat.messages[%zu].role is empty: use \"system\", \"user\" or "
                          "\"assistant\"",
                          i);
            goto cleanup;
        }
        if (!tsr_api_utf8_valid(cm->role, strlen(cm->role))) {
            code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "chat.messages[%zu].role is not valid UTF-8", i);
            goto cleanup;
        }
        size_t cl = strlen(cm->content);
        size_t ok = utf8_valid_prefix((const unsigned char *)cm->content, cl);
        if (ok != cl) {
            code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "chat.messages[%zu].content is not valid UTF-8 (bad byte at offset "
                          "%zu)",
                          i, ok);
            goto cleanup;
        }
    }
    tsr_status st;
    if (!chat->continue_final_message) {
        st = tsr_chat_render(ctx->tok, msgs, n, 1, out);
        if (st != TSR_OK)
            code = render_error(st, err);
        goto cleanup;
    }
    /* Continue the final message: render once with a marker in place of its
     * content to learn what the template writes after it, then cut that
     * tail off the real rendering. */
    if (!msgs[n - 1].content[0]) {
        code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "chat.continue_final_message is set but the final message is empty: "
                      "give the text to continue");
        goto cleanup;
    }
    const char *final_content = msgs[n - 1].content;
    msgs[n - 1].content = k_continue_mark;
    st = tsr_chat_render(ctx->tok, msgs, n, 0, &marked);
    msgs[n - 1].content = final_content;
    if (st == TSR_OK)
        st = tsr_chat_render(ctx->tok, msgs, n, 0, &real);
    if (st != TSR_OK) {
        code = render_error(st, err);
        goto cleanup;
    }
    const char *mark = NULL;
    for (const char *p = strstr(marked, k_continue_mark); p; p = strstr(p + 1, k_continue_mark))
        mark = p;
    size_t marked_len = strlen(marked), real_len = strlen(real);
    size_t tail = mark ? marked_len - (size_t)(mark - marked) - (sizeof k_continue_mark - 1) : 0;
    if (!mark || tail > real_len || real_len - tail < (size_t)(mark - marked)) {
        code = refuse(err, GRPC_STATUS_INTERNAL,
                      "chat: cannot locate the final message in the rendered template");
        goto cleanup;
    }
    real[real_len - tail] = '\0';
    *out = real;
    real = NULL;
cleanup:
    free(marked);
    free(real);
    free(msgs);
    return code;
}

/* ---- Generate -------------------------------------------------------------- */

grpc_status_code tsr_api_generate_request(const tsr_api_ctx *ctx,
                                          const Tessera__V1__GenerateRequest *m,
                                          uint64_t seed_if_zero, tsr_gen_request *r,
                                          char **prompt_text, tsr_api_error *err) {
    if (prompt_text)
        *prompt_text = NULL;
    grpc_status_code code = tsr_api_check_id(m->request_id, err);
    if (code != GRPC_STATUS_OK)
        return code;
    /* the adapter's name; whether it exists is the engine thread's to say
     * (NOT_FOUND), as adapters come and go between calls */
    if (m->adapter[0]) {
        code = tsr_api_check_adapter_name(m->adapter, "adapter", err);
        if (code != GRPC_STATUS_OK)
            return code;
    }

    /* ---- sampling (proto3 zeros mapped to their documented defaults) ---- */
    Tessera__V1__SamplingParams defaults = TESSERA__V1__SAMPLING_PARAMS__INIT;
    const Tessera__V1__SamplingParams *sp = m->sampling ? m->sampling : &defaults;
    tsr_sampling_params p = TSR_SAMPLING_PARAMS_INIT;
    p.temperature = sp->temperature;
    p.top_k = sp->top_k;
    p.top_p = sp->top_p == 0.0f ? 1.0f : sp->top_p;
    p.min_p = sp->min_p;
    p.repetition_penalty = sp->repetition_penalty == 0.0f ? 1.0f : sp->repetition_penalty;
    p.frequency_penalty = sp->frequency_penalty;
    p.presence_penalty = sp->presence_penalty;
    p.seed = sp->seed ? sp->seed : seed_if_zero;
    if (!isfinite(p.frequency_penalty))
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "sampling.frequency_penalty must be a finite number");
    if (!isfinite(p.presence_penalty))
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "sampling.presence_penalty must be a finite number");
    if (tsr_sampling_params_validate(&p) != TSR_OK)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "sampling.%s", tsr_error_msg());
    if (sp->top_logprobs < 0 || sp->top_logprobs > TSR_API_MAX_TOP_LOGPROBS)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "sampling.top_logprobs must be in 0..%d (got %d)", TSR_API_MAX_TOP_LOGPROBS,
                      sp->top_logprobs);
    if (sp->max_tokens < 0)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "sampling.max_tokens must be > 0, or 0 for the server default (got %d)",
                      sp->max_tokens);
    if (sp->min_tokens < 0)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "sampling.min_tokens must be >= 0 (got %d)", sp->min_tokens);
    if (sp->n_stop > TSR_API_MAX_STOP)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "sampling.stop has %zu strings; at most %d are allowed", sp->n_stop,
                      TSR_API_MAX_STOP);
    for (size_t i = 0; i < sp->n_stop; i++) {
        size_t len = strlen(sp->stop[i]);
        if (len == 0)
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "sampling.stop[%zu] is empty: remove it", i);
        if (len > TSR_API_MAX_STOP_LEN)
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "sampling.stop[%zu] is %zu bytes long; at most %d are allowed", i, len,
                          TSR_API_MAX_STOP_LEN);
        if (!tsr_api_utf8_valid(sp->stop[i], len))
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "sampling.stop[%zu] is not valid UTF-8", i);
    }
    const int n_vocab = vocab_size(ctx);
    for (size_t i = 0; i < sp->n_stop_token_ids; i++)
        if (sp->stop_token_ids[i] < 0 || sp->stop_token_ids[i] >= n_vocab)
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "sampling.stop_token_ids[%zu] = %d is not a token id of this model "
                          "(valid ids are 0..%d)",
                          i, sp->stop_token_ids[i], n_vocab - 1);

    /* ---- the prompt ---- */
    int32_t *ids = NULL;
    size_t n_ids = 0;
    char *text = NULL; /* the prompt as text, for the log */
    tsr_status st;
    switch (m->input_case) {
    case TESSERA__V1__GENERATE_REQUEST__INPUT_TEXT: {
        size_t len = strlen(m->text);
        if (len == 0)
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "text is empty: give a prompt");
        st = tsr_tokenizer_encode_ex(ctx->tok, m->text, len,
                                     TSR_TOK_PARSE_SPECIAL | TSR_TOK_ADD_SPECIAL, &ids, &n_ids);
        if (st == TSR_ERR_INVALID)
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "text is not valid UTF-8: %s",
                          tsr_error_msg());
        if (st != TSR_OK)
            return refuse(err, GRPC_STATUS_INTERNAL, "tokenizing the text failed: %s",
                          tsr_error_msg());
        if (prompt_text)
            text = strdup(m->text);
        break;
    }
    case TESSERA__V1__GENERATE_REQUEST__INPUT_TOKENS: {
        const Tessera__V1__TokenIds *t = m->tokens;
        if (!t || t->n_ids == 0)
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "tokens.ids is empty: give at least one token id");
        for (size_t i = 0; i < t->n_ids; i++)
            if (t->ids[i] < 0 || t->ids[i] >= n_vocab)
                return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                              "tokens.ids[%zu] = %d is not a token id of this model (valid ids "
                              "are 0..%d)",
                              i, t->ids[i], n_vocab - 1);
        ids = malloc(t->n_ids * sizeof *ids);
        if (!ids)
            return refuse(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        memcpy(ids, t->ids, t->n_ids * sizeof *ids);
        n_ids = t->n_ids;
        if (prompt_text && tsr_tokenizer_decode(ctx->tok, ids, n_ids, 0, &text, NULL) != TSR_OK)
            text = NULL;
        break;
    }
    case TESSERA__V1__GENERATE_REQUEST__INPUT_CHAT: {
        char *rendered = NULL;
        code = tsr_api_render_chat(ctx, m->chat, &rendered, err);
        if (code != GRPC_STATUS_OK)
            return code;
        st = tsr_tokenizer_encode_ex(ctx->tok, rendered, strlen(rendered), TSR_TOK_PARSE_SPECIAL,
                                     &ids, &n_ids);
        if (st != TSR_OK) {
            free(rendered);
            return refuse(
                err, st == TSR_ERR_INVALID ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_INTERNAL,
                "tokenizing the chat failed: %s", tsr_error_msg());
        }
        if (prompt_text)
            text = rendered;
        else
            free(rendered);
        break;
    }
    default:
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "the request has no input: set one of text, tokens or chat");
    }
    /* A text made only of characters the vocabulary has no token for (SmolLM2
     * has none for the byte 0x1D, say) tokenizes to nothing, as in Hugging
     * Face: there is no prompt to run. */
    if (n_ids == 0) {
        free(ids);
        free(text);
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "the prompt tokenizes to no tokens: every character in it is one the "
                      "model's vocabulary has no token for (docs/tokenizer.md); give a prompt "
                      "with text the model can read");
    }
    /* ids and text are ours from here: hand them to r or free them */
    r->prompt = ids;
    r->n_prompt = (int)(n_ids < (size_t)1 << 30 ? n_ids : (size_t)1 << 30);
    ids = NULL;
    const int ctx_len = ctx->context_length;
    if (n_ids >= (size_t)ctx_len) {
        code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "the prompt has %zu tokens but the context holds %d: shorten it to at "
                      "most %d tokens (one position must stay free for the answer)",
                      n_ids, ctx_len, ctx_len - 1);
        goto fail;
    }
    const int room = ctx_len - r->n_prompt;
    int max_tokens = sp->max_tokens;
    if (max_tokens == 0) {
        max_tokens = ctx->default_max_tokens > 0 ? ctx->default_max_tokens : 256;
        if (max_tokens > room)
            max_tokens = room; /* the default never makes a request fail */
    } else if (max_tokens > room) {
        code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "the prompt has %d tokens and sampling.max_tokens is %d, but the context "
                      "holds %d: reduce max_tokens to at most %d",
                      r->n_prompt, max_tokens, ctx_len, room);
        goto fail;
    }
    if (sp->min_tokens > max_tokens) {
        code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "sampling.min_tokens (%d) is larger than max_tokens (%d)", sp->min_tokens,
                      max_tokens);
        goto fail;
    }

    r->sampling = p;
    r->max_tokens = max_tokens;
    r->min_tokens = sp->min_tokens;
    r->ignore_eos = sp->ignore_eos ? 1 : 0;
    r->logprobs = sp->logprobs || sp->top_logprobs > 0;
    r->top_logprobs = sp->top_logprobs;
    snprintf(r->adapter, sizeof r->adapter, "%s", m->adapter);
    if (sp->n_stop) {
        r->stop = calloc(sp->n_stop, sizeof *r->stop);
        if (!r->stop)
            goto nomem;
        for (size_t i = 0; i < sp->n_stop; i++) {
            r->stop[i] = strdup(sp->stop[i]);
            if (!r->stop[i])
                goto nomem;
            r->n_stop = (int)i + 1;
        }
    }
    if (sp->n_stop_token_ids) {
        r->stop_ids = malloc(sp->n_stop_token_ids * sizeof *r->stop_ids);
        if (!r->stop_ids)
            goto nomem;
        memcpy(r->stop_ids, sp->stop_token_ids, sp->n_stop_token_ids * sizeof *r->stop_ids);
        r->n_stop_ids = (int)sp->n_stop_token_ids;
    }
    if (prompt_text)
        *prompt_text = text;
    else
        free(text);
    return GRPC_STATUS_OK;
nomem:
    code = refuse(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
    free(text);
    return code;
}

/* ---- Tokenize, Detokenize, GetModelInfo ---------------------------------- */

static grpc_status_code pack_or_fail(const ProtobufCMessage *m, uint8_t **out, size_t *len,
                                     tsr_api_error *err) {
    if (tsr_api_pack(m, out, len) != TSR_OK)
        return refuse(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return GRPC_STATUS_OK;
}

grpc_status_code tsr_api_tokenize(const tsr_api_ctx *ctx, const uint8_t *in, size_t n,
                                  uint8_t **out, size_t *out_len, tsr_api_error *err) {
    Tessera__V1__TokenizeRequest *m = tessera__v1__tokenize_request__unpack(NULL, n, in);
    if (!m)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "malformed TokenizeRequest (not a tessera.v1 message)");
    grpc_status_code code = GRPC_STATUS_OK;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    char *rendered = NULL;
    tsr_status st;
    if (m->input_case == TESSERA__V1__TOKENIZE_REQUEST__INPUT_TEXT) {
        unsigned flags = (m->parse_special ? TSR_TOK_PARSE_SPECIAL : 0u) |
                         (m->add_special ? TSR_TOK_ADD_SPECIAL : 0u);
        st = tsr_tokenizer_encode_ex(ctx->tok, m->text, strlen(m->text), flags, &ids, &n_ids);
    } else if (m->input_case == TESSERA__V1__TOKENIZE_REQUEST__INPUT_CHAT) {
        /* as Generate does: the template writes any BOS itself */
        code = tsr_api_render_chat(ctx, m->chat, &rendered, err);
        if (code != GRPC_STATUS_OK)
            goto cleanup;
        st = tsr_tokenizer_encode_ex(ctx->tok, rendered, strlen(rendered), TSR_TOK_PARSE_SPECIAL,
                                     &ids, &n_ids);
    } else {
        code =
            refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "the request has no input: set text or chat");
        goto cleanup;
    }
    if (st != TSR_OK) {
        code =
            refuse(err, st == TSR_ERR_INVALID ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_INTERNAL,
                   "%s", tsr_error_msg());
        goto cleanup;
    }
    Tessera__V1__TokenizeResponse resp = TESSERA__V1__TOKENIZE_RESPONSE__INIT;
    resp.n_ids = n_ids;
    resp.ids = ids;
    code = pack_or_fail(&resp.base, out, out_len, err);
cleanup:
    free(ids);
    free(rendered);
    tessera__v1__tokenize_request__free_unpacked(m, NULL);
    return code;
}

grpc_status_code tsr_api_detokenize(const tsr_api_ctx *ctx, const uint8_t *in, size_t n,
                                    uint8_t **out, size_t *out_len, tsr_api_error *err) {
    Tessera__V1__DetokenizeRequest *m = tessera__v1__detokenize_request__unpack(NULL, n, in);
    if (!m)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "malformed DetokenizeRequest (not a tessera.v1 message)");
    grpc_status_code code = GRPC_STATUS_OK;
    char *text = NULL;
    const size_t nv = tsr_tokenizer_n_vocab(ctx->tok);
    for (size_t i = 0; i < m->n_ids; i++) {
        if (m->ids[i] < 0 || (size_t)m->ids[i] >= nv) {
            code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "ids[%zu] = %d is not a token id of this tokenizer (valid ids are "
                          "0..%zu)",
                          i, m->ids[i], nv - 1);
            goto cleanup;
        }
    }
    if (tsr_tokenizer_decode(ctx->tok, m->ids, m->n_ids,
                             m->skip_special ? TSR_DETOK_SKIP_SPECIAL : 0u, &text,
                             NULL) != TSR_OK) {
        code = refuse(err, GRPC_STATUS_INTERNAL, "detokenizing failed: %s", tsr_error_msg());
        goto cleanup;
    }
    Tessera__V1__DetokenizeResponse resp = TESSERA__V1__DETOKENIZE_RESPONSE__INIT;
    resp.text = text;
    code = pack_or_fail(&resp.base, out, out_len, err);
cleanup:
    free(text);
    tessera__v1__detokenize_request__free_unpacked(m, NULL);
    return code;
}

grpc_status_code tsr_api_model_info(const tsr_api_ctx *ctx, uint8_t **out, size_t *out_len,
                                    tsr_api_error *err) {
    Tessera__V1__ModelInfo mi = TESSERA__V1__MODEL_INFO__INIT;
    const tsr_model_config *c = ctx->model;
    char name[sizeof c->name + 1] = "";
    if (c) {
        /* a name that is not UTF-8 would make the reply unparsable */
        size_t nl = strnlen(c->name, sizeof c->name);
        if (tsr_api_utf8_valid(c->name, nl))
            memcpy(name, c->name, nl);
        mi.name = name;
        mi.architecture = c->arch == TSR_ARCH_QWEN2 ? "qwen2" : "llama";
        mi.n_layer = c->n_layer;
        mi.n_embd = c->n_embd;
        mi.n_head = c->n_head;
        mi.n_head_kv = c->n_head_kv;
        mi.head_dim = c->head_dim;
        mi.n_ff = c->n_ff;
        mi.train_context_length = c->n_ctx_train;
    }
    mi.format = (char *)(ctx->model_format ? ctx->model_format : "");
    mi.vocab_size = vocab_size(ctx);
    mi.context_length = ctx->context_length;
    mi.tp = ctx->tp;
    mi.pp = ctx->pp;
    mi.bos_token_id = tsr_tokenizer_bos(ctx->tok);
    mi.eos_token_id = tsr_tokenizer_eos(ctx->tok);
    return pack_or_fail(&mi.base, out, out_len, err);
}

/* ---- responses ------------------------------------------------------------- */

tsr_status tsr_api_pack(const ProtobufCMessage *m, uint8_t **out, size_t *len) {
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory packing a %s", m->descriptor->name);
    *len = protobuf_c_message_pack(m, buf);
    *out = buf;
    return TSR_OK;
}

tsr_status tsr_api_pack_chunk(const tsr_api_ctx *ctx, const char *request_id,
                              tsr_gen_event *const *evs, int n, uint8_t **out, size_t *len) {
    size_t n_tok = 0, n_text = 0, n_lp = 0, n_top = 0;
    for (int i = 0; i < n; i++) {
        const tsr_gen_event *e = evs[i];
        n_tok += (size_t)e->n_tokens;
        n_text += e->text ? e->text_len : 0;
        if (e->logprobs) {
            n_lp += (size_t)e->n_tokens;
            if (e->top)
                n_top += (size_t)e->n_tokens * (size_t)e->n_top;
        }
    }
    tsr_status st = TSR_OK;
    int32_t *ids = malloc((n_tok ? n_tok : 1) * sizeof *ids);
    char *text = malloc(n_text + 1);
    Tessera__V1__TokenLogprob *lp = calloc(n_lp ? n_lp : 1, sizeof *lp);
    Tessera__V1__TokenLogprob **lpp = calloc(n_lp ? n_lp : 1, sizeof *lpp);
    Tessera__V1__TopLogprob *tp = calloc(n_top ? n_top : 1, sizeof *tp);
    Tessera__V1__TopLogprob **tpp = calloc(n_top ? n_top : 1, sizeof *tpp);
    char **top_text = calloc(n_top ? n_top : 1, sizeof *top_text);
    if (!ids || !text || !lp || !lpp || !tp || !tpp || !top_text) {
        st = tsr_error_set(TSR_ERR_NOMEM, "out of memory packing a chunk");
        goto cleanup;
    }
    size_t it = 0, ix = 0, il = 0, iq = 0;
    for (int i = 0; i < n; i++) {
        const tsr_gen_event *e = evs[i];
        if (e->n_tokens > 0)
            memcpy(ids + it, e->tokens, (size_t)e->n_tokens * sizeof *ids);
        it += (size_t)e->n_tokens;
        if (e->text && e->text_len) {
            memcpy(text + ix, e->text, e->text_len);
            ix += e->text_len;
        }
        if (!e->logprobs)
            continue;
        for (int k = 0; k < e->n_tokens; k++) {
            Tessera__V1__TokenLogprob *l = &lp[il];
            tessera__v1__token_logprob__init(l);
            l->token_id = e->tokens[k];
            l->logprob = e->logprobs[k];
            if (e->top && e->n_top > 0) {
                l->n_top = (size_t)e->n_top;
                l->top = &tpp[iq];
                for (int j = 0; j < e->n_top; j++, iq++) {
                    const tsr_top_logprob *a = &e->top[(size_t)k * (size_t)e->n_top + (size_t)j];
                    Tessera__V1__TopLogprob *t = &tp[iq];
                    tessera__v1__top_logprob__init(t);
                    t->token_id = a->token_id;
                    t->logprob = a->logprob;
                    /* lossy decode: a lone byte-token shows as U+FFFD, and the
                     * string stays valid UTF-8 */
                    if (tsr_tokenizer_decode(ctx->tok, &a->token_id, 1, 0, &top_text[iq], NULL) !=
                        TSR_OK)
                        top_text[iq] = NULL;
                    t->text = top_text[iq] ? top_text[iq] : (char *)"";
                    tpp[iq] = t;
                }
            }
            lpp[il++] = l;
        }
    }
    text[ix] = '\0';
    Tessera__V1__GenerateChunk chunk = TESSERA__V1__GENERATE_CHUNK__INIT;
    chunk.n_token_ids = n_tok;
    chunk.token_ids = ids;
    chunk.text = text;
    chunk.n_logprobs = il;
    chunk.logprobs = lpp;
    Tessera__V1__GenerateResponse resp = TESSERA__V1__GENERATE_RESPONSE__INIT;
    resp.request_id = (char *)request_id;
    resp.kind_case = TESSERA__V1__GENERATE_RESPONSE__KIND_CHUNK;
    resp.chunk = &chunk;
    st = tsr_api_pack(&resp.base, out, len);
cleanup:
    if (top_text)
        for (size_t i = 0; i < n_top; i++)
            free(top_text[i]);
    free(top_text);
    free(tpp);
    free(tp);
    free(lpp);
    free(lp);
    free(text);
    free(ids);
    return st;
}

tsr_status tsr_api_pack_final(const char *request_id, const tsr_gen_event *ev, uint8_t **out,
                              size_t *len) {
    Tessera__V1__Usage usage = TESSERA__V1__USAGE__INIT;
    usage.prompt_tokens = ev->prompt_tokens;
    usage.completion_tokens = ev->completion_tokens;
    usage.cached_tokens = ev->cached_tokens;
    Tessera__V1__Timings timings = TESSERA__V1__TIMINGS__INIT;
    timings.queued_s = ev->queued_s;
    timings.time_to_first_token_s = ev->ttft_s;
    timings.total_s = ev->total_s;
    /* the engine's message is ours to keep valid UTF-8 */
    char error[sizeof ev->error];
    size_t el = strnlen(ev->error, sizeof ev->error - 1);
    memcpy(error, ev->error, el);
    error[el] = '\0';
    for (size_t i = 0; i < el;) {
        size_t ok = utf8_valid_prefix((const unsigned char *)error + i, el - i);
        i += ok;
        if (i < el)
            error[i++] = '?';
    }
    Tessera__V1__GenerateFinal fin = TESSERA__V1__GENERATE_FINAL__INIT;
    fin.finish_reason = (Tessera__V1__FinishReason)ev->finish;
    fin.usage = &usage;
    fin.timings = &timings;
    fin.error = error;
    Tessera__V1__GenerateResponse resp = TESSERA__V1__GENERATE_RESPONSE__INIT;
    resp.request_id = (char *)request_id;
    resp.kind_case = TESSERA__V1__GENERATE_RESPONSE__KIND_FINAL;
    resp.final = &fin;
    return tsr_api_pack(&resp.base, out, len);
}
