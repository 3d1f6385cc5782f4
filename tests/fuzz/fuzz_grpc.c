/* tests/fuzz/fuzz_grpc.c - libFuzzer harness: every gRPC request message of
 * the server, as the wire bytes a client sends.
 *
 * The first byte picks the method; the rest is the serialized request. Each
 * goes through what runtime/server/grpc_server.c does with it before the
 * engine sees it: protobuf-c's unpack, then the validation and conversion of
 * runtime/server/grpc_api.c and train_api.c (tsr_api_generate_request,
 * tsr_api_tokenize, tsr_api_detokenize, tsr_api_ctl_request for the eight
 * adapter calls) with the default model's tokenizer when TESSERA_FUZZ_MODEL
 * names it. A refusal must carry a status code other than OK and a message;
 * an accepted Tokenize response must unpack again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "runtime/server/grpc_api.h"
#include "runtime/server/request.h"
#include "tessera/v1/tessera.pb-c.h"
#include "tests/fuzz/fuzz_common.h"

static tsr_api_ctx ctx;
static tsr_model_config model;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ctx.tok = fz_tokenizer();
    model.arch = TSR_ARCH_LLAMA;
    snprintf(model.name, sizeof model.name, "fuzz");
    model.n_embd = 64, model.n_layer = 2, model.n_head = 4, model.n_head_kv = 2;
    model.head_dim = 16, model.n_ff = 128, model.n_ctx_train = 2048;
    model.n_vocab = (int)tsr_tokenizer_n_vocab(ctx.tok);
    model.rms_eps = 1e-5f, model.rope_theta = 10000.0f;
    ctx.model = &model;
    ctx.model_format = "gguf";
    ctx.context_length = 2048;
    ctx.default_max_tokens = 64;
    ctx.tp = ctx.pp = 1;
    return 0;
}

static void refused(grpc_status_code code, const tsr_api_error *err) {
    FZ_ASSERT(code != GRPC_STATUS_OK && err->code == code && err->msg[0],
              "a refusal without code or message (%d, %d, '%s')", (int)code, (int)err->code,
              err->msg);
}

static void generate(const uint8_t *d, size_t n) {
    Tessera__V1__GenerateRequest *m = tessera__v1__generate_request__unpack(NULL, n, d);
    if (!m)
        return;
    tsr_api_error err = {0};
    grpc_status_code code = tsr_api_check_id(m->request_id, &err);
    if (code != GRPC_STATUS_OK) {
        refused(code, &err);
    } else {
        tsr_gen_request *r = tsr_gen_request_new();
        FZ_ASSERT(r, "out of memory");
        char *text = NULL;
        code = tsr_api_generate_request(&ctx, m, 12345, r, &text, &err);
        if (code != GRPC_STATUS_OK) {
            refused(code, &err);
        } else {
            FZ_ASSERT(r->n_prompt > 0 && r->n_prompt <= ctx.context_length,
                      "accepted a prompt of %d tokens", r->n_prompt);
            for (int i = 0; i < r->n_prompt; i++)
                FZ_ASSERT(r->prompt[i] >= 0 && r->prompt[i] < model.n_vocab, "prompt id %d",
                          r->prompt[i]);
        }
        free(text);
        tsr_gen_request_release(r);
    }
    tessera__v1__generate_request__free_unpacked(m, NULL);
}

static void unary(int which, const uint8_t *d, size_t n) {
    uint8_t *out = NULL;
    size_t len = 0;
    tsr_api_error err = {0};
    grpc_status_code code;
    if (which == 0) {
        code = tsr_api_tokenize(&ctx, d, n, &out, &len, &err);
        if (code == GRPC_STATUS_OK) {
            Tessera__V1__TokenizeResponse *r =
                tessera__v1__tokenize_response__unpack(NULL, len, out);
            FZ_ASSERT(r, "the Tokenize response does not unpack");
            for (size_t i = 0; i < r->n_ids; i++)
                FZ_ASSERT(r->ids[i] >= 0 && r->ids[i] < model.n_vocab, "id %d", r->ids[i]);
            tessera__v1__tokenize_response__free_unpacked(r, NULL);
        }
    } else if (which == 1) {
        code = tsr_api_detokenize(&ctx, d, n, &out, &len, &err);
    } else {
        code = tsr_api_model_info(&ctx, &out, &len, &err);
    }
    if (code != GRPC_STATUS_OK)
        refused(code, &err);
    else
        FZ_ASSERT(out || len == 0, "no response");
    free(out);
}

static void ctl(tsr_ctl_kind kind, const uint8_t *d, size_t n) {
    tsr_ctl_request *r = tsr_ctl_request_new();
    FZ_ASSERT(r, "out of memory");
    tsr_api_error err = {0};
    grpc_status_code code = tsr_api_ctl_request(&ctx, kind, d, n, r, &err);
    if (code != GRPC_STATUS_OK)
        refused(code, &err);
    tsr_ctl_request_release(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    int method = data[0] % 14;
    switch (method) {
    case 0: generate(d, n); break;
    case 1: unary(0, d, n); break;
    case 2: unary(1, d, n); break;
    case 3: unary(2, d, n); break;
    case 4: {
        Tessera__V1__AbortRequest *m = tessera__v1__abort_request__unpack(NULL, n, d);
        if (m)
            tessera__v1__abort_request__free_unpacked(m, NULL);
        break;
    }
    case 5: {
        Grpc__Health__V1__HealthCheckRequest *m =
            grpc__health__v1__health_check_request__unpack(NULL, n, d);
        if (m)
            grpc__health__v1__health_check_request__free_unpacked(m, NULL);
        break;
    }
    default: ctl((tsr_ctl_kind)(method - 6 + TSR_CTL_CREATE), d, n); break;
    }
    return 0;
}
