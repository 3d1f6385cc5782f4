/* runtime/server/train_api.c - the adapter and training calls of
 * tessera.v1 (CreateAdapter ... DeleteAdapter): request messages into
 * tsr_ctl_request, with every check a call goes through before it reaches
 * the engine thread, and the finished request back into a response.
 *
 * Examples are tokenized here, on the gRPC thread, as `tessera train` does
 * a JSONL record (runtime/train/train_data.h), and their per-token weights turned
 * from the API's convention (weights[i] weighs predicting token i) into the
 * trainer's (weights[i] weighs predicting token i+1 from position i).
 *
 * What it is not: transport, and nothing that needs the engine (whether an
 * adapter exists is the engine thread's answer). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/server/grpc_api.h"
#include "runtime/tokenizer/chat.h"
#include "runtime/train/train_data.h"

#define refuse tsr_api_refuse

grpc_status_code tsr_api_check_adapter_name(const char *name, const char *field,
                                            tsr_api_error *err) {
    size_t n = strlen(name);
    if (n == 0)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "%s is empty: name the adapter", field);
    if (n > TSR_ADAPTER_NAME_MAX)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "%s has %zu characters (at most %d)",
                      field, n, TSR_ADAPTER_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-' || (c == '.' && i > 0);
        if (!ok)
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "%s '%.64s': character %zu is not one of A-Z a-z 0-9 . _ - (and a "
                          "name does not start with '.')",
                          field, tsr_api_utf8_valid(name, n) ? name : "?", i + 1);
    }
    return GRPC_STATUS_OK;
}

/* ---- examples ---- */

/* The batch being built: sequences end to end, trainer-convention weights. */
typedef struct {
    int32_t *start, *tokens;
    float *weights;
    int n_seqs;
    size_t n_tokens, cap;
} batch_acc;

static int acc_push(batch_acc *b, const int32_t *ids, const float *w, size_t n) {
    if (b->n_tokens + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n_tokens + n)
            cap *= 2;
        int32_t *t = realloc(b->tokens, cap * sizeof *t);
        if (t)
            b->tokens = t;
        float *ww = t ? realloc(b->weights, cap * sizeof *ww) : NULL;
        if (!t || !ww)
            return 0;
        b->weights = ww;
        b->cap = cap;
    }
    memcpy(b->tokens + b->n_tokens, ids, n * sizeof *ids);
    memcpy(b->weights + b->n_tokens, w, n * sizeof *w);
    b->n_tokens += n;
    b->start[++b->n_seqs] = (int32_t)b->n_tokens;
    return 1;
}

/* The chat's messages as chat.h's, checked as a Generate chat is. */
static grpc_status_code chat_msgs(const Tessera__V1__ChatInput *chat, size_t k, tsr_chat_msg **out,
                                  tsr_api_error *err) {
    *out = NULL;
    if (!chat || chat->n_messages == 0)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "examples[%zu].chat.messages is empty", k);
    if (chat->continue_final_message)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "examples[%zu].chat.continue_final_message is for generation; a training "
                      "conversation is whole",
                      k);
    tsr_chat_msg *m = calloc(chat->n_messages, sizeof *m);
    if (!m)
        return refuse(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < chat->n_messages; i++) {
        const Tessera__V1__ChatMessage *cm = chat->messages[i];
        if (strcmp(cm->role, "system") && strcmp(cm->role, "user") &&
            strcmp(cm->role, "assistant")) {
            free(m);
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "examples[%zu].chat.messages[%zu].role '%.32s': want system, user or "
                          "assistant",
                          k, i, tsr_api_utf8_valid(cm->role, strlen(cm->role)) ? cm->role : "?");
        }
        if (!tsr_api_utf8_valid(cm->content, strlen(cm->content))) {
            free(m);
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "examples[%zu].chat.messages[%zu].content is not valid UTF-8", k, i);
        }
        m[i].role = cm->role;
        m[i].content = cm->content;
    }
    *out = m;
    return GRPC_STATUS_OK;
}

/* Example k: its tokens and API-convention weights (per token), from the
 * explicit weights or the input kind's default. */
static grpc_status_code one_example(const tsr_api_ctx *ctx, const Tessera__V1__TrainExample *ex,
                                    size_t k, int32_t **ids_out, float **w_out, size_t *n_out,
                                    tsr_api_error *err) {
    int32_t *ids = NULL;
    uint8_t *target = NULL;
    size_t n = 0;
    char where[64];
    snprintf(where, sizeof where, "examples[%zu]", k);
    tsr_status st = TSR_OK;
    grpc_status_code code = GRPC_STATUS_OK;
    switch (ex->input_case) {
    case TESSERA__V1__TRAIN_EXAMPLE__INPUT_TOKENS: {
        n = ex->tokens ? ex->tokens->n_ids : 0;
        ids = malloc((n + 1) * sizeof *ids);
        if (!ids)
            return refuse(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < n; i++) {
            int32_t t = ex->tokens->ids[i];
            if (ctx->model && (t < 0 || t >= ctx->model->n_vocab)) {
                free(ids);
                return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                              "%s.tokens[%zu] = %d is outside the vocabulary (0..%d)", where, i, t,
                              ctx->model->n_vocab - 1);
            }
            ids[i] = t;
        }
        break;
    }
    case TESSERA__V1__TRAIN_EXAMPLE__INPUT_TEXT:
        if (!tsr_api_utf8_valid(ex->text, strlen(ex->text)))
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "%s.text is not valid UTF-8", where);
        st = tsr_tokenizer_encode_ex(ctx->tok, ex->text, strlen(ex->text),
                                     TSR_TOK_PARSE_SPECIAL | TSR_TOK_ADD_SPECIAL, &ids, &n);
        break;
    case TESSERA__V1__TRAIN_EXAMPLE__INPUT_PROMPT_COMPLETION: {
        const Tessera__V1__PromptCompletion *pc = ex->prompt_completion;
        if (!tsr_api_utf8_valid(pc->prompt, strlen(pc->prompt)) ||
            !tsr_api_utf8_valid(pc->completion, strlen(pc->completion)))
            return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "%s.prompt_completion is not valid UTF-8", where);
        st = tsr_train_example_pc(ctx->tok, where, pc->prompt, pc->completion, &ids, &target, &n);
        break;
    }
    case TESSERA__V1__TRAIN_EXAMPLE__INPUT_CHAT: {
        tsr_chat_msg *msgs;
        code = chat_msgs(ex->chat, k, &msgs, err);
        if (code != GRPC_STATUS_OK)
            return code;
        st = tsr_train_example_chat(ctx->tok, where, msgs, ex->chat->n_messages, &ids, &target, &n);
        free(msgs);
        break;
    }
    default:
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "%s has no input: set tokens, text, prompt_completion or chat", where);
    }
    if (st != TSR_OK) {
        free(ids);
        free(target);
        return refuse(err,
                      st == TSR_ERR_NOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                          : GRPC_STATUS_INVALID_ARGUMENT,
                      "%s", tsr_error_msg());
    }
    if (n == 0)
        code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "%s has no tokens", where);
    else if (ctx->model && ctx->model->n_ctx_train > 0 && n > (size_t)ctx->model->n_ctx_train)
        code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "%s has %zu tokens, longer than the model's context (%d)", where, n,
                      ctx->model->n_ctx_train);
    else if (ex->n_weights != 0 && ex->n_weights != n)
        code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "%s has %zu weights for %zu tokens (give one per token, or none)", where,
                      ex->n_weights, n);
    float *w = code == GRPC_STATUS_OK ? malloc(n * sizeof *w) : NULL;
    if (code == GRPC_STATUS_OK && !w)
        code = refuse(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; code == GRPC_STATUS_OK && i < n; i++) {
        if (ex->n_weights) {
            float v = ex->weights[i];
            if (!(isfinite(v) && v >= 0))
                code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                              "%s.weights[%zu] = %g: weights are finite and >= 0", where, i,
                              (double)v);
            else if (i == 0 && v != 0)
                code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                              "%s.weights[0] = %g: nothing predicts the first token (give 0)",
                              where, (double)v);
            w[i] = v;
        } else {
            w[i] = i == 0 ? 0.0f : target ? (float)target[i] : 1.0f;
        }
    }
    free(target);
    if (code != GRPC_STATUS_OK) {
        free(ids);
        free(w);
        return code;
    }
    *ids_out = ids;
    *w_out = w;
    *n_out = n;
    return GRPC_STATUS_OK;
}

static grpc_status_code examples(const tsr_api_ctx *ctx, Tessera__V1__TrainExample **ex, size_t n,
                                 tsr_ctl_request *r, tsr_api_error *err) {
    if (n == 0)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "the batch is empty: give at least one example");
    if (n > TSR_API_MAX_EXAMPLES)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "the batch has %zu examples (at most %d per call; accumulate over calls)", n,
                      TSR_API_MAX_EXAMPLES);
    batch_acc b = {0};
    b.start = calloc(n + 1, sizeof *b.start);
    if (!b.start)
        return refuse(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    grpc_status_code code = GRPC_STATUS_OK;
    for (size_t k = 0; k < n && code == GRPC_STATUS_OK; k++) {
        int32_t *ids = NULL;
        float *w = NULL;
        size_t len = 0;
        code = one_example(ctx, ex[k], k, &ids, &w, &len, err);
        if (code != GRPC_STATUS_OK)
            break;
        if (b.n_tokens + len > TSR_API_MAX_TRAIN_TOKENS) {
            code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "the batch has more than %d tokens (at example %zu): split it over "
                          "several calls (gradients accumulate)",
                          TSR_API_MAX_TRAIN_TOKENS, k);
        } else {
            /* the trainer's weights: position i weighs predicting token i+1 */
            for (size_t i = 0; i + 1 < len; i++)
                w[i] = w[i + 1];
            w[len - 1] = 0.0f;
            if (!acc_push(&b, ids, w, len))
                code = refuse(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        }
        free(ids);
        free(w);
    }
    r->n_seqs = b.n_seqs;
    r->seq_start = b.start;
    r->tokens = b.tokens;
    r->weights = b.weights;
    return code;
}

/* ---- LoRA config and optimizer ---- */

static grpc_status_code lora_config(const Tessera__V1__LoraConfig *m, tsr_lora_config *out,
                                    tsr_api_error *err) {
    Tessera__V1__LoraConfig none = TESSERA__V1__LORA_CONFIG__INIT;
    if (!m)
        m = &none;
    tsr_lora_config c = TSR_LORA_CONFIG_INIT;
    c.rank = m->rank ? m->rank : 8;
    c.alpha = m->alpha != 0 ? m->alpha : 16.0f;
    c.use_rslora = m->use_rslora;
    c.dropout = m->dropout;
    c.seed = m->seed;
    if (m->n_target_modules) {
        c.targets = 0;
        for (size_t i = 0; i < m->n_target_modules; i++) {
            unsigned t;
            if (tsr_lora_parse_targets(m->target_modules[i], &t) != TSR_OK)
                return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "config.target_modules[%zu]: %s",
                              i, tsr_error_msg());
            c.targets |= t;
        }
    }
    if (m->rank < 0 || m->rank > 1024)
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "config.rank %d: want 1..1024 (0 = 8)",
                      m->rank);
    tsr_status st = tsr_lora_config_check(&c);
    if (st != TSR_OK)
        return refuse(err,
                      st == TSR_ERR_UNSUPPORTED ? GRPC_STATUS_UNIMPLEMENTED
                                                : GRPC_STATUS_INVALID_ARGUMENT,
                      "config: %s", tsr_error_msg());
    *out = c;
    return GRPC_STATUS_OK;
}

static void lora_to_proto(const tsr_lora_config *c, Tessera__V1__LoraConfig *m, char **names,
                          char *store) {
    tessera__v1__lora_config__init(m);
    m->rank = c->rank;
    m->alpha = c->alpha;
    m->use_rslora = c->use_rslora;
    m->dropout = c->dropout;
    m->seed = c->seed;
    size_t n = 0;
    for (int t = 0; t < TSR_LORA_N_TARGETS; t++)
        if (c->targets & TSR_LORA_TARGET_BIT(t)) {
            snprintf(store + 8 * n, 8, "%s", tsr_lora_target_name((tsr_lora_target)t));
            names[n] = store + 8 * n;
            n++;
        }
    m->n_target_modules = n;
    m->target_modules = names;
}

static grpc_status_code abs_path(const char *p, const char *field, char *out, size_t cap,
                                 tsr_api_error *err) {
    size_t n = strlen(p);
    if (n == 0 || p[0] != '/')
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                      "%s '%.200s' must be an absolute path on the server", field,
                      tsr_api_utf8_valid(p, n) ? p : "?");
    if (n >= cap - 32 || !tsr_api_utf8_valid(p, n))
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "%s is too long or not UTF-8", field);
    memcpy(out, p, n + 1);
    return GRPC_STATUS_OK;
}

/* ---- requests ---- */

#define UNPACK(type, fn)                                                                           \
    type *m = fn(NULL, n, in);                                                                     \
    if (!m)                                                                                        \
        return refuse(err, GRPC_STATUS_INVALID_ARGUMENT,                                           \
                      "malformed request (not a tessera.v1 message)");

static grpc_status_code name_into(const char *name, const char *field, tsr_ctl_request *r,
                                  tsr_api_error *err) {
    grpc_status_code code = tsr_api_check_adapter_name(name, field, err);
    if (code == GRPC_STATUS_OK)
        snprintf(r->name, sizeof r->name, "%s", name);
    return code;
}

grpc_status_code tsr_api_ctl_request(const tsr_api_ctx *ctx, tsr_ctl_kind kind, const uint8_t *in,
                                     size_t n, tsr_ctl_request *r, tsr_api_error *err) {
    r->kind = kind;
    grpc_status_code code = GRPC_STATUS_OK;
    switch (kind) {
    case TSR_CTL_CREATE: {
        UNPACK(Tessera__V1__CreateAdapterRequest, tessera__v1__create_adapter_request__unpack);
        code = name_into(m->name, "name", r, err);
        if (code == GRPC_STATUS_OK)
            code = lora_config(m->config, &r->lora, err);
        tessera__v1__create_adapter_request__free_unpacked(m, NULL);
        return code;
    }
    case TSR_CTL_FORWARD_BACKWARD: {
        UNPACK(Tessera__V1__ForwardBackwardRequest, tessera__v1__forward_backward_request__unpack);
        code = name_into(m->adapter, "adapter", r, err);
        if (code == GRPC_STATUS_OK)
            code = examples(ctx, m->examples, m->n_examples, r, err);
        tessera__v1__forward_backward_request__free_unpacked(m, NULL);
        return code;
    }
    case TSR_CTL_FORWARD: {
        UNPACK(Tessera__V1__ForwardRequest, tessera__v1__forward_request__unpack);
        if (m->adapter[0])
            code = name_into(m->adapter, "adapter", r, err);
        if (code == GRPC_STATUS_OK)
            code = examples(ctx, m->examples, m->n_examples, r, err);
        tessera__v1__forward_request__free_unpacked(m, NULL);
        return code;
    }
    case TSR_CTL_OPTIM_STEP: {
        UNPACK(Tessera__V1__OptimStepRequest, tessera__v1__optim_step_request__unpack);
        code = name_into(m->adapter, "adapter", r, err);
        Tessera__V1__AdamWParams none = TESSERA__V1__ADAM_WPARAMS__INIT;
        const Tessera__V1__AdamWParams *h = m->adamw ? m->adamw : &none;
        tsr_optim_params p = {{h->lr, h->beta1 != 0 ? h->beta1 : 0.9f,
                               h->beta2 != 0 ? h->beta2 : 0.999f, h->eps != 0 ? h->eps : 1e-8f,
                               h->weight_decay},
                              m->max_grad_norm};
        if (code == GRPC_STATUS_OK && !(h->lr > 0 && isfinite(h->lr)))
            code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "adamw.lr %g: the learning rate must be finite and > 0", (double)h->lr);
        if (code == GRPC_STATUS_OK && tsr_train_check_optim(&p) != TSR_OK)
            code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT, "%s", tsr_error_msg());
        r->optim = p;
        tessera__v1__optim_step_request__free_unpacked(m, NULL);
        return code;
    }
    case TSR_CTL_SAVE: {
        UNPACK(Tessera__V1__SaveAdapterRequest, tessera__v1__save_adapter_request__unpack);
        code = name_into(m->adapter, "adapter", r, err);
        if (code == GRPC_STATUS_OK && m->path[0])
            code = abs_path(m->path, "path", r->path, sizeof r->path, err);
        if (code == GRPC_STATUS_OK && !m->path[0] && !m->return_files)
            code = refuse(err, GRPC_STATUS_INVALID_ARGUMENT,
                          "nothing to do: give a path on the server, or return_files, or both");
        r->return_files = m->return_files;
        tessera__v1__save_adapter_request__free_unpacked(m, NULL);
        return code;
    }
    case TSR_CTL_LOAD: {
        UNPACK(Tessera__V1__LoadAdapterRequest, tessera__v1__load_adapter_request__unpack);
        code = name_into(m->name, "name", r, err);
        if (code == GRPC_STATUS_OK)
            code = abs_path(m->path, "path", r->path, sizeof r->path, err);
        tessera__v1__load_adapter_request__free_unpacked(m, NULL);
        return code;
    }
    case TSR_CTL_LIST: {
        UNPACK(Tessera__V1__ListAdaptersRequest, tessera__v1__list_adapters_request__unpack);
        tessera__v1__list_adapters_request__free_unpacked(m, NULL);
        return GRPC_STATUS_OK;
    }
    case TSR_CTL_DELETE: {
        UNPACK(Tessera__V1__DeleteAdapterRequest, tessera__v1__delete_adapter_request__unpack);
        code = name_into(m->name, "name", r, err);
        tessera__v1__delete_adapter_request__free_unpacked(m, NULL);
        return code;
    }
    }
    return refuse(err, GRPC_STATUS_UNIMPLEMENTED, "unknown adapter call %d", (int)kind);
}

/* ---- responses ---- */

/* An AdapterInfo pointing into `info` and the caller's scratch. */
typedef struct {
    Tessera__V1__AdapterInfo msg;
    Tessera__V1__LoraConfig cfg;
    char *names[TSR_LORA_N_TARGETS];
    char store[8 * TSR_LORA_N_TARGETS];
} info_msg;

static void info_to_proto(const tsr_adapter_info *a, info_msg *o) {
    tessera__v1__adapter_info__init(&o->msg);
    lora_to_proto(&a->cfg, &o->cfg, o->names, o->store);
    o->msg.name = (char *)a->name;
    o->msg.config = &o->cfg;
    o->msg.step = a->step;
    o->msg.n_params = a->n_params;
    o->msg.pending_batches = a->pending_batches;
    o->msg.source = (char *)a->source;
}

tsr_status tsr_api_ctl_response(const tsr_ctl_request *r, uint8_t **out, size_t *len) {
    switch (r->kind) {
    case TSR_CTL_CREATE:
    case TSR_CTL_LOAD: {
        info_msg im;
        info_to_proto(&r->info, &im);
        return tsr_api_pack(&im.msg.base, out, len);
    }
    case TSR_CTL_FORWARD_BACKWARD:
    case TSR_CTL_FORWARD: {
        Tessera__V1__ForwardBackwardResponse m = TESSERA__V1__FORWARD_BACKWARD_RESPONSE__INIT;
        m.loss = r->stats.weight_sum > 0 ? r->stats.loss / r->stats.weight_sum : 0.0;
        m.loss_sum = r->stats.loss;
        m.weight_sum = r->stats.weight_sum;
        m.n_tokens = r->stats.n_tokens;
        m.n_loss_tokens = r->stats.n_loss_tokens;
        m.pending_batches = r->pending_batches;
        int32_t *counts = malloc(((size_t)r->n_seqs + 1) * sizeof *counts);
        if (!counts)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        for (int s = 0; s < r->n_seqs; s++)
            counts[s] = r->seq_start[s + 1] - r->seq_start[s];
        m.n_example_tokens = (size_t)r->n_seqs;
        m.example_tokens = counts;
        tsr_status st = tsr_api_pack(&m.base, out, len);
        free(counts);
        return st;
    }
    case TSR_CTL_OPTIM_STEP: {
        Tessera__V1__OptimStepResponse m = TESSERA__V1__OPTIM_STEP_RESPONSE__INIT;
        m.step = r->result.step;
        m.grad_norm = r->result.grad_norm;
        m.loss = r->result.loss;
        m.weight_sum = r->result.weight_sum;
        m.n_loss_tokens = r->result.n_loss_tokens;
        return tsr_api_pack(&m.base, out, len);
    }
    case TSR_CTL_SAVE: {
        Tessera__V1__SaveAdapterResponse m = TESSERA__V1__SAVE_ADAPTER_RESPONSE__INIT;
        m.path = (char *)r->path;
        m.step = r->step;
        m.adapter_config_json.data = r->config_json;
        m.adapter_config_json.len = r->config_len;
        m.adapter_model_safetensors.data = r->safetensors;
        m.adapter_model_safetensors.len = r->safetensors_len;
        return tsr_api_pack(&m.base, out, len);
    }
    case TSR_CTL_LIST: {
        Tessera__V1__ListAdaptersResponse m = TESSERA__V1__LIST_ADAPTERS_RESPONSE__INIT;
        info_msg *im = calloc((size_t)r->n_list + 1, sizeof *im);
        Tessera__V1__AdapterInfo **ptrs = calloc((size_t)r->n_list + 1, sizeof *ptrs);
        tsr_status st = TSR_OK;
        if (!im || !ptrs) {
            st = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        } else {
            for (int i = 0; i < r->n_list; i++) {
                info_to_proto(&r->list[i], &im[i]);
                ptrs[i] = &im[i].msg;
            }
            m.n_adapters = (size_t)r->n_list;
            m.adapters = ptrs;
            m.max_adapters = r->max_adapters;
            st = tsr_api_pack(&m.base, out, len);
        }
        free(ptrs);
        free(im);
        return st;
    }
    case TSR_CTL_DELETE: {
        Tessera__V1__DeleteAdapterResponse m = TESSERA__V1__DELETE_ADAPTER_RESPONSE__INIT;
        return tsr_api_pack(&m.base, out, len);
    }
    }
    return tsr_error_set(TSR_ERR_INTERNAL, "unknown adapter call %d", (int)r->kind);
}
