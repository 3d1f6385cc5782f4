/* tests/server/test_grpc_api.c - unit test of runtime/server/grpc_api.c (the
 * protobuf <-> runtime translation and request validation) without a
 * network or a model: a tiny byte-level tokenizer (the 256 bytes plus
 * ChatML's two control tokens) and a 16-position context.
 * Checks the boundary arithmetic (prompt vs context, max_tokens default and
 * limit), the 0-means-default mappings, the seed substitution, chat
 * rendering with continue_final_message, chunk merging with logprobs,
 * UTF-8 repair of the engine's error text, and the UTF-8 validator. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/server/grpc_api.h"
#include "tests/common/byte_level.h"
#include "tests/common/check.h"

enum { ID_IM_START = 256, ID_IM_END = 257, N_VOCAB = 258, CTX = 16 };

static tsr_tokenizer_t *tiny_tokenizer(void) {
    static char text[N_VOCAB][16];
    static tsr_strref refs[N_VOCAB];
    static int32_t types[N_VOCAB];
    for (unsigned b = 0; b < 256; b++) {
        char *w = text[b];
        tu_put_cp(&w, tu_byte_cp(b));
        *w = '\0';
        types[b] = TSR_TOKEN_TYPE_NORMAL;
    }
    snprintf(text[ID_IM_START], sizeof text[0], "<|im_start|>");
    snprintf(text[ID_IM_END], sizeof text[0], "<|im_end|>");
    types[ID_IM_START] = types[ID_IM_END] = TSR_TOKEN_TYPE_CONTROL;
    for (int i = 0; i < N_VOCAB; i++)
        refs[i] = (tsr_strref){text[i], strlen(text[i])};
    tsr_tokenizer_spec sp = TSR_TOKENIZER_SPEC_INIT;
    sp.n_tokens = N_VOCAB;
    sp.tokens = refs;
    sp.token_types = types;
    sp.pre_name = "gpt2";
    sp.eos_id = ID_IM_END;
    sp.chat_template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' "
                       "+ message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
    tsr_tokenizer_t *t = NULL;
    CHECK(tsr_tokenizer_from_spec(&sp, &t) == TSR_OK);
    return t;
}

/* The tiny tokenizer without a token for byte `hole` (an empty string marks
 * a hole in the vocabulary). */
static tsr_tokenizer_t *holed_tokenizer(unsigned hole) {
    static char text[256][8];
    static tsr_strref refs[256];
    for (unsigned b = 0; b < 256; b++) {
        char *w = text[b];
        tu_put_cp(&w, tu_byte_cp(b));
        *w = '\0';
        refs[b] = (tsr_strref){text[b], b == hole ? 0 : strlen(text[b])};
    }
    tsr_tokenizer_spec sp = TSR_TOKENIZER_SPEC_INIT;
    sp.n_tokens = 256;
    sp.tokens = refs;
    sp.pre_name = "gpt2";
    tsr_tokenizer_t *t = NULL;
    CHECK(tsr_tokenizer_from_spec(&sp, &t) == TSR_OK);
    return t;
}

/* Validates m; returns the code and, on success, leaves the request in *out
 * (caller releases). */
static grpc_status_code gen(const tsr_api_ctx *ctx, const Tessera__V1__GenerateRequest *m,
                            tsr_gen_request **out, tsr_api_error *err) {
    tsr_gen_request *r = tsr_gen_request_new();
    CHECK(r);
    char *prompt = NULL;
    grpc_status_code c = tsr_api_generate_request(ctx, m, 777, r, &prompt, err);
    if (c == GRPC_STATUS_OK)
        CHECK(prompt != NULL);
    free(prompt);
    if (out && c == GRPC_STATUS_OK)
        *out = r;
    else
        tsr_gen_request_release(r);
    return c;
}

static void test_generate(const tsr_api_ctx *ctx) {
    tsr_api_error err;
    tsr_gen_request *r = NULL;
    Tessera__V1__SamplingParams sp = TESSERA__V1__SAMPLING_PARAMS__INIT;
    Tessera__V1__TokenIds ti = TESSERA__V1__TOKEN_IDS__INIT;
    int32_t ids[CTX];
    for (int i = 0; i < CTX; i++)
        ids[i] = 'a' + i;
    Tessera__V1__GenerateRequest m = TESSERA__V1__GENERATE_REQUEST__INIT;
    m.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_TOKENS;
    m.tokens = &ti;
    ti.ids = ids;

    /* 15 prompt tokens fill all but one position: the default max becomes 1 */
    ti.n_ids = CTX - 1;
    CHECK(gen(ctx, &m, &r, &err) == GRPC_STATUS_OK);
    CHECK(r->n_prompt == CTX - 1 && r->max_tokens == 1);
    /* defaults: top_p 0 -> 1, repetition_penalty 0 -> 1, seed 0 -> the given one */
    CHECK(r->sampling.top_p == 1.0f && r->sampling.repetition_penalty == 1.0f);
    CHECK(r->sampling.seed == 777 && r->logprobs == 0 && r->n_stop == 0);
    tsr_gen_request_release(r);
    /* 16 tokens leave nothing */
    ti.n_ids = CTX;
    CHECK(gen(ctx, &m, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "the prompt has 16 tokens but the context holds 16"));
    /* explicit max_tokens: exactly the room is fine, one more is not */
    ti.n_ids = 10;
    m.sampling = &sp;
    sp.max_tokens = 6;
    sp.seed = 42;
    CHECK(gen(ctx, &m, &r, &err) == GRPC_STATUS_OK);
    CHECK(r->max_tokens == 6 && r->sampling.seed == 42);
    tsr_gen_request_release(r);
    sp.max_tokens = 7;
    CHECK(gen(ctx, &m, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "reduce max_tokens to at most 6"));
    sp.max_tokens = 0;
    /* top_logprobs implies logprobs; stops are copied */
    char *stops[] = {"ab", "\xc3\xa9"};
    int32_t stop_ids[] = {ID_IM_END};
    sp.top_logprobs = 20;
    sp.n_stop = 2;
    sp.stop = stops;
    sp.n_stop_token_ids = 1;
    sp.stop_token_ids = stop_ids;
    CHECK(gen(ctx, &m, &r, &err) == GRPC_STATUS_OK);
    CHECK(r->logprobs == 1 && r->top_logprobs == 20 && r->n_stop == 2 &&
          strcmp(r->stop[1], "\xc3\xa9") == 0 && r->n_stop_ids == 1 && r->stop_ids[0] == ID_IM_END);
    tsr_gen_request_release(r);
    char *bad_stop[] = {"\xc3"};
    sp.stop = bad_stop;
    sp.n_stop = 1;
    CHECK(gen(ctx, &m, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "stop[0] is not valid UTF-8"));
    sp.n_stop = 0;
    sp.top_p = NAN;
    CHECK(gen(ctx, &m, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT && strstr(err.msg, "top_p"));
    sp.top_p = 0;
    stop_ids[0] = N_VOCAB + 2; /* the model's vocabulary (ctx->model) bounds ids */
    CHECK(gen(ctx, &m, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    stop_ids[0] = 0;

    /* text: BOS is not added (this tokenizer does not ask for it) and
     * control tokens in the text are parsed */
    m.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_TEXT;
    m.text = "<|im_start|>hi";
    CHECK(gen(ctx, &m, &r, &err) == GRPC_STATUS_OK);
    CHECK(r->n_prompt == 3 && r->prompt[0] == ID_IM_START && r->prompt[1] == 'h');
    tsr_gen_request_release(r);
    m.text = "ab\xed\xa0\x80"; /* an encoded surrogate */
    CHECK(gen(ctx, &m, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT && strstr(err.msg, "UTF-8"));
    /* an adapter name is checked for its form here; whether it exists is
     * the engine thread's answer */
    m.adapter = "x-1.v2";
    m.text = "hi";
    CHECK(gen(ctx, &m, &r, &err) == GRPC_STATUS_OK && strcmp(r->adapter, "x-1.v2") == 0);
    tsr_gen_request_release(r);
    m.adapter = "no spaces";
    CHECK(gen(ctx, &m, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT && strstr(err.msg, "adapter"));
    m.adapter = ".hidden";
    CHECK(gen(ctx, &m, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    m.adapter = "";
    m.request_id = "tab\there";
    CHECK(gen(ctx, &m, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    m.request_id = "";

    /* a text whose every character has no token tokenizes to nothing (as in
     * Hugging Face; SmolLM2 has no token for 0x1D): refused, not an empty
     * prompt for the engine (found by tests/fuzz/fuzz_grpc) */
    tsr_tokenizer_t *holed = holed_tokenizer(0x1D);
    tsr_api_ctx hctx = *ctx;
    hctx.tok = holed;
    m.text = "\x1d\x1d";
    CHECK(gen(&hctx, &m, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "no tokens"));
    m.text = "a\x1d";
    CHECK(gen(&hctx, &m, &r, &err) == GRPC_STATUS_OK && r->n_prompt == 1 && r->prompt[0] == 'a');
    tsr_gen_request_release(r);
    tsr_tokenizer_free(holed);
}

static void test_chat(const tsr_api_ctx *ctx) {
    Tessera__V1__ChatMessage u = TESSERA__V1__CHAT_MESSAGE__INIT, a = u;
    u.role = "user";
    u.content = "hi";
    a.role = "assistant";
    a.content = "  he";
    Tessera__V1__ChatMessage *msgs[] = {&u, &a};
    Tessera__V1__ChatInput chat = TESSERA__V1__CHAT_INPUT__INIT;
    chat.messages = msgs;
    chat.n_messages = 1;
    tsr_api_error err;
    char *out = NULL;
    CHECK(tsr_api_render_chat(ctx, &chat, &out, &err) == GRPC_STATUS_OK);
    CHECK(strcmp(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n") == 0);
    free(out);
    chat.n_messages = 2;
    chat.continue_final_message = 1;
    CHECK(tsr_api_render_chat(ctx, &chat, &out, &err) == GRPC_STATUS_OK);
    CHECK(strcmp(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n  he") == 0);
    free(out);
    a.content = "";
    CHECK(tsr_api_render_chat(ctx, &chat, &out, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    chat.n_messages = 0;
    CHECK(tsr_api_render_chat(ctx, &chat, &out, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(out == NULL);
}

static void test_pack(const tsr_api_ctx *ctx) {
    int32_t t1[] = {'a', 'b'}, t2[] = {'c'};
    float l1[] = {-0.5f, -1.5f}, l2[] = {-2.5f};
    tsr_top_logprob top1[] = {{'x', -3}, {'y', -4}, {'z', -5}, {ID_IM_END, -6}};
    tsr_top_logprob top2[] = {{'q', -7}, {'r', -8}};
    tsr_gen_event e1 = {0}, e2 = {0};
    e1.kind = e2.kind = TSR_EV_CHUNK;
    e1.n_tokens = 2, e1.tokens = t1, e1.logprobs = l1, e1.n_top = 2, e1.top = top1;
    e1.text = "ab", e1.text_len = 2;
    e2.n_tokens = 1, e2.tokens = t2, e2.logprobs = l2, e2.n_top = 2, e2.top = top2;
    e2.text = "c", e2.text_len = 1;
    tsr_gen_event *evs[] = {&e1, &e2};
    uint8_t *buf;
    size_t len;
    CHECK(tsr_api_pack_chunk(ctx, "id-1", evs, 2, &buf, &len) == TSR_OK);
    Tessera__V1__GenerateResponse *r = tessera__v1__generate_response__unpack(NULL, len, buf);
    CHECK(r && strcmp(r->request_id, "id-1") == 0 &&
          r->kind_case == TESSERA__V1__GENERATE_RESPONSE__KIND_CHUNK);
    Tessera__V1__GenerateChunk *c = r->chunk;
    CHECK(c->n_token_ids == 3 && c->token_ids[2] == 'c' && strcmp(c->text, "abc") == 0);
    CHECK(c->n_logprobs == 3 && c->logprobs[1]->logprob == -1.5f && c->logprobs[1]->n_top == 2);
    CHECK(c->logprobs[1]->top[1]->token_id == ID_IM_END &&
          strcmp(c->logprobs[1]->top[1]->text, "<|im_end|>") == 0);
    CHECK(c->logprobs[2]->top[0]->token_id == 'q' && c->logprobs[2]->top[0]->logprob == -7);
    tessera__v1__generate_response__free_unpacked(r, NULL);
    free(buf);

    tsr_gen_event f = {0};
    f.kind = TSR_EV_FINAL;
    f.finish = TSR_FIN_ERROR;
    f.prompt_tokens = 5, f.completion_tokens = 2, f.cached_tokens = 1;
    f.queued_s = 0.25, f.ttft_s = 0.5, f.total_s = 1;
    snprintf(f.error, sizeof f.error, "bad \xff byte");
    CHECK(tsr_api_pack_final("id-2", &f, &buf, &len) == TSR_OK);
    r = tessera__v1__generate_response__unpack(NULL, len, buf);
    CHECK(r && r->kind_case == TESSERA__V1__GENERATE_RESPONSE__KIND_FINAL);
    CHECK(r->final->finish_reason == TESSERA__V1__FINISH_REASON__FINISH_REASON_ERROR);
    CHECK(r->final->usage->prompt_tokens == 5 && r->final->usage->cached_tokens == 1);
    CHECK(r->final->timings->time_to_first_token_s == 0.5);
    CHECK(strcmp(r->final->error, "bad ? byte") == 0);
    tessera__v1__generate_response__free_unpacked(r, NULL);
    free(buf);
}

static void test_unary(const tsr_api_ctx *ctx) {
    Tessera__V1__TokenizeRequest tq = TESSERA__V1__TOKENIZE_REQUEST__INIT;
    tq.input_case = TESSERA__V1__TOKENIZE_REQUEST__INPUT_TEXT;
    tq.text = "<|im_end|>";
    uint8_t in[256], *out;
    size_t n = tessera__v1__tokenize_request__pack(&tq, in), on;
    tsr_api_error err;
    CHECK(tsr_api_tokenize(ctx, in, n, &out, &on, &err) == GRPC_STATUS_OK);
    Tessera__V1__TokenizeResponse *tr = tessera__v1__tokenize_response__unpack(NULL, on, out);
    CHECK(tr && tr->n_ids == 10); /* plain text without parse_special */
    tessera__v1__tokenize_response__free_unpacked(tr, NULL);
    free(out);
    tq.parse_special = 1;
    n = tessera__v1__tokenize_request__pack(&tq, in);
    CHECK(tsr_api_tokenize(ctx, in, n, &out, &on, &err) == GRPC_STATUS_OK);
    tr = tessera__v1__tokenize_response__unpack(NULL, on, out);
    CHECK(tr && tr->n_ids == 1 && tr->ids[0] == ID_IM_END);
    tessera__v1__tokenize_response__free_unpacked(tr, NULL);
    free(out);

    int32_t ids[] = {'o', 'k', ID_IM_END};
    Tessera__V1__DetokenizeRequest dq = TESSERA__V1__DETOKENIZE_REQUEST__INIT;
    dq.ids = ids;
    dq.n_ids = 3;
    dq.skip_special = 1;
    n = tessera__v1__detokenize_request__pack(&dq, in);
    CHECK(tsr_api_detokenize(ctx, in, n, &out, &on, &err) == GRPC_STATUS_OK);
    Tessera__V1__DetokenizeResponse *dr = tessera__v1__detokenize_response__unpack(NULL, on, out);
    CHECK(dr && strcmp(dr->text, "ok") == 0);
    tessera__v1__detokenize_response__free_unpacked(dr, NULL);
    free(out);
    ids[2] = N_VOCAB;
    n = tessera__v1__detokenize_request__pack(&dq, in);
    CHECK(tsr_api_detokenize(ctx, in, n, &out, &on, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    const uint8_t junk[] = {0xff, 0xff, 0xff};
    CHECK(tsr_api_tokenize(ctx, junk, sizeof junk, &out, &on, &err) ==
          GRPC_STATUS_INVALID_ARGUMENT);

    CHECK(tsr_api_model_info(ctx, &out, &on, &err) == GRPC_STATUS_OK);
    Tessera__V1__ModelInfo *mi = tessera__v1__model_info__unpack(NULL, on, out);
    CHECK(mi && mi->context_length == CTX && mi->vocab_size == N_VOCAB + 2 &&
          mi->eos_token_id == ID_IM_END && mi->tp == 2 && strcmp(mi->name, "tiny") == 0);
    tessera__v1__model_info__free_unpacked(mi, NULL);
    free(out);
}

static void test_utf8(void) {
    CHECK(tsr_api_utf8_valid("", 0));
    CHECK(tsr_api_utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
    CHECK(tsr_api_utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    CHECK(!tsr_api_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    CHECK(!tsr_api_utf8_valid("\xc0\xaf", 2));         /* overlong */
    CHECK(!tsr_api_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    CHECK(!tsr_api_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!tsr_api_utf8_valid("\xe2\x82", 2));         /* truncated */
    CHECK(!tsr_api_utf8_valid("\x80", 1));
}

/* Packs m and runs tsr_api_ctl_request on the bytes into a fresh r. */
static grpc_status_code ctl(const tsr_api_ctx *ctx, tsr_ctl_kind kind, const ProtobufCMessage *m,
                            tsr_ctl_request **out, tsr_api_error *err) {
    uint8_t *buf;
    size_t len;
    CHECK(tsr_api_pack(m, &buf, &len) == TSR_OK);
    tsr_ctl_request *r = tsr_ctl_request_new();
    grpc_status_code code = tsr_api_ctl_request(ctx, kind, buf, len, r, err);
    free(buf);
    if (out)
        *out = r;
    else
        tsr_ctl_request_release(r);
    return code;
}

static void test_ctl(const tsr_api_ctx *ctx) {
    tsr_api_error err;
    tsr_ctl_request *r;
    /* two token examples: one with weights (target-aligned), one without */
    int32_t ids0[] = {3, 4, 5, 6}, ids1[] = {7, 8, 9};
    float w0[] = {0, 0.5f, 0, 2};
    Tessera__V1__TokenIds t0 = TESSERA__V1__TOKEN_IDS__INIT, t1 = t0;
    t0.n_ids = 4, t0.ids = ids0;
    t1.n_ids = 3, t1.ids = ids1;
    Tessera__V1__TrainExample e0 = TESSERA__V1__TRAIN_EXAMPLE__INIT, e1 = e0;
    e0.input_case = TESSERA__V1__TRAIN_EXAMPLE__INPUT_TOKENS, e0.tokens = &t0;
    e0.n_weights = 4, e0.weights = w0;
    e1.input_case = TESSERA__V1__TRAIN_EXAMPLE__INPUT_TOKENS, e1.tokens = &t1;
    Tessera__V1__TrainExample *exs[] = {&e0, &e1};
    Tessera__V1__ForwardBackwardRequest fb = TESSERA__V1__FORWARD_BACKWARD_REQUEST__INIT;
    fb.adapter = "a";
    fb.n_examples = 2, fb.examples = exs;
    CHECK(ctl(ctx, TSR_CTL_FORWARD_BACKWARD, &fb.base, &r, &err) == GRPC_STATUS_OK);
    CHECK(r->n_seqs == 2 && r->seq_start[0] == 0 && r->seq_start[1] == 4 && r->seq_start[2] == 7);
    CHECK(r->tokens[0] == 3 && r->tokens[4] == 7 && r->tokens[6] == 9);
    /* the trainer's weights: position i weighs predicting token i+1 */
    const float want[] = {0.5f, 0, 2, 0, 1, 1, 0};
    for (int i = 0; i < 7; i++)
        CHECK(r->weights[i] == want[i]);
    CHECK(strcmp(r->name, "a") == 0);
    /* the response carries the example sizes and the mean loss */
    r->stats = (tsr_train_stats){3.0, 1.5, 7, 4};
    r->pending_batches = 2;
    uint8_t *buf;
    size_t len;
    CHECK(tsr_api_ctl_response(r, &buf, &len) == TSR_OK);
    Tessera__V1__ForwardBackwardResponse *resp =
        tessera__v1__forward_backward_response__unpack(NULL, len, buf);
    CHECK(resp && resp->loss == 2.0 && resp->n_tokens == 7 && resp->n_example_tokens == 2 &&
          resp->example_tokens[0] == 4 && resp->example_tokens[1] == 3 &&
          resp->pending_batches == 2);
    tessera__v1__forward_backward_response__free_unpacked(resp, NULL);
    free(buf);
    tsr_ctl_request_release(r);
    /* refusals */
    w0[0] = 1;
    CHECK(ctl(ctx, TSR_CTL_FORWARD_BACKWARD, &fb.base, NULL, &err) ==
              GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "weights[0]"));
    w0[0] = 0, w0[2] = NAN;
    CHECK(ctl(ctx, TSR_CTL_FORWARD_BACKWARD, &fb.base, NULL, &err) ==
              GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "examples[0].weights[2]"));
    w0[2] = 0, e0.n_weights = 3;
    CHECK(ctl(ctx, TSR_CTL_FORWARD_BACKWARD, &fb.base, NULL, &err) ==
              GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "3 weights for 4 tokens"));
    e0.n_weights = 4, ids1[1] = ctx->model->n_vocab;
    CHECK(ctl(ctx, TSR_CTL_FORWARD_BACKWARD, &fb.base, NULL, &err) ==
              GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "examples[1].tokens[1]"));
    ids1[1] = 8, e1.input_case = TESSERA__V1__TRAIN_EXAMPLE__INPUT__NOT_SET;
    CHECK(ctl(ctx, TSR_CTL_FORWARD_BACKWARD, &fb.base, NULL, &err) ==
              GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "no input"));
    fb.n_examples = 0;
    CHECK(ctl(ctx, TSR_CTL_FORWARD_BACKWARD, &fb.base, NULL, &err) ==
              GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "empty"));
    fb.adapter = "";
    CHECK(ctl(ctx, TSR_CTL_FORWARD_BACKWARD, &fb.base, NULL, &err) ==
              GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "adapter is empty"));
    /* CreateAdapter: defaults and checks */
    Tessera__V1__CreateAdapterRequest ca = TESSERA__V1__CREATE_ADAPTER_REQUEST__INIT;
    ca.name = "n1";
    CHECK(ctl(ctx, TSR_CTL_CREATE, &ca.base, &r, &err) == GRPC_STATUS_OK);
    CHECK(r->lora.rank == 8 && r->lora.alpha == 16.0f &&
          r->lora.targets == (TSR_LORA_TARGET_BIT(TSR_LORA_Q) | TSR_LORA_TARGET_BIT(TSR_LORA_V)));
    tsr_ctl_request_release(r);
    Tessera__V1__LoraConfig lc = TESSERA__V1__LORA_CONFIG__INIT;
    char *targets[] = {"q", "down_proj", "bogus"};
    lc.n_target_modules = 3, lc.target_modules = targets;
    ca.config = &lc;
    CHECK(ctl(ctx, TSR_CTL_CREATE, &ca.base, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "target_modules[2]"));
    lc.n_target_modules = 2, lc.rank = -3;
    CHECK(ctl(ctx, TSR_CTL_CREATE, &ca.base, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    lc.rank = 4;
    CHECK(ctl(ctx, TSR_CTL_CREATE, &ca.base, &r, &err) == GRPC_STATUS_OK);
    CHECK(r->lora.rank == 4 && r->lora.targets == (TSR_LORA_TARGET_BIT(TSR_LORA_Q) |
                                                   TSR_LORA_TARGET_BIT(TSR_LORA_DOWN)));
    tsr_ctl_request_release(r);
    ca.name = "bad/name";
    CHECK(ctl(ctx, TSR_CTL_CREATE, &ca.base, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    /* OptimStep: lr required, defaults for the rest */
    Tessera__V1__OptimStepRequest os = TESSERA__V1__OPTIM_STEP_REQUEST__INIT;
    Tessera__V1__AdamWParams aw = TESSERA__V1__ADAM_WPARAMS__INIT;
    os.adapter = "a";
    CHECK(ctl(ctx, TSR_CTL_OPTIM_STEP, &os.base, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "lr"));
    aw.lr = 1e-3f;
    os.adamw = &aw;
    CHECK(ctl(ctx, TSR_CTL_OPTIM_STEP, &os.base, &r, &err) == GRPC_STATUS_OK);
    CHECK(r->optim.adamw.beta1 == 0.9f && r->optim.adamw.beta2 == 0.999f &&
          r->optim.adamw.eps == 1e-8f && r->optim.adamw.lr == 1e-3f);
    tsr_ctl_request_release(r);
    aw.beta2 = 1.5f;
    CHECK(ctl(ctx, TSR_CTL_OPTIM_STEP, &os.base, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    /* SaveAdapter / LoadAdapter paths */
    Tessera__V1__SaveAdapterRequest sa = TESSERA__V1__SAVE_ADAPTER_REQUEST__INIT;
    sa.adapter = "a";
    CHECK(ctl(ctx, TSR_CTL_SAVE, &sa.base, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "nothing to do"));
    sa.path = "relative/dir";
    CHECK(ctl(ctx, TSR_CTL_SAVE, &sa.base, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT &&
          strstr(err.msg, "absolute"));
    sa.path = "";
    sa.return_files = 1;
    CHECK(ctl(ctx, TSR_CTL_SAVE, &sa.base, NULL, &err) == GRPC_STATUS_OK);
    Tessera__V1__LoadAdapterRequest la = TESSERA__V1__LOAD_ADAPTER_REQUEST__INIT;
    la.name = "l";
    CHECK(ctl(ctx, TSR_CTL_LOAD, &la.base, NULL, &err) == GRPC_STATUS_INVALID_ARGUMENT);
    la.path = "/srv/adapters/x";
    CHECK(ctl(ctx, TSR_CTL_LOAD, &la.base, &r, &err) == GRPC_STATUS_OK &&
          strcmp(r->path, "/srv/adapters/x") == 0);
    tsr_ctl_request_release(r);
    /* garbage bytes */
    tsr_ctl_request *g = tsr_ctl_request_new();
    const uint8_t junk[] = {0xff, 0xff, 0xff};
    CHECK(tsr_api_ctl_request(ctx, TSR_CTL_DELETE, junk, 3, g, &err) ==
          GRPC_STATUS_INVALID_ARGUMENT);
    tsr_ctl_request_release(g);
}

int main(void) {
    tsr_tokenizer_t *tok = tiny_tokenizer();
    tsr_model_config mc;
    memset(&mc, 0, sizeof mc);
    snprintf(mc.name, sizeof mc.name, "tiny");
    mc.n_vocab = N_VOCAB + 2; /* a padded embedding: ids past the tokenizer are valid */
    tsr_api_ctx ctx = {tok, &mc, "gguf", CTX, 256, 2, 1};
    test_generate(&ctx);
    test_chat(&ctx);
    test_pack(&ctx);
    test_unary(&ctx);
    test_utf8();
    test_ctl(&ctx);
    tsr_tokenizer_free(tok);
    printf("test_grpc_api: %d checks passed\n", tu_checks);
    return 0;
}
