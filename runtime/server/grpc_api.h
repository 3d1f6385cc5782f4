/* runtime/server/grpc_api.h - private to the gRPC front end: turns
 * tessera.v1 protobuf messages into the runtime's types and back, with every
 * check a request goes through before it reaches the engine.
 *
 * Each refusal comes with the gRPC status code it maps to and a message a
 * person can act on ("the prompt has 9000 tokens but the context holds
 * 8192: ...").
 *
 * What it is not: transport. Nothing here touches a call, a completion
 * queue or the network (only gRPC's status-code enum is used), so the
 * validation can be exercised without a server. */
#ifndef TSR_RUNTIME_SERVER_GRPC_API_H
#define TSR_RUNTIME_SERVER_GRPC_API_H

#include <grpc/status.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/server/request.h"
#include "runtime/tokenizer/tokenizer.h"
#include "shard/config.h"
#include "tessera/v1/tessera.pb-c.h"

/* What validation needs to know of the model; all borrowed. */
typedef struct {
    const tsr_tokenizer_t *tok;
    const tsr_model_config *model; /* NULL: sizes from the tokenizer only */
    const char *model_format;
    int context_length;     /* positions one sequence may hold */
    int default_max_tokens; /* for max_tokens = 0 */
    int tp, pp;
} tsr_api_ctx;

/* A refusal: a gRPC status code and its message. */
typedef struct {
    grpc_status_code code;
    char msg[512];
} tsr_api_error;

/* Limits on what a request may carry besides the message-size limit. */
enum {
    TSR_API_MAX_ID = 127,       /* bytes of request_id */
    TSR_API_MAX_STOP = 16,      /* stop strings */
    TSR_API_MAX_STOP_LEN = 256, /* bytes per stop string */
    TSR_API_MAX_TOP_LOGPROBS = 20,
};

/* Fills e (code and printf-style message) and returns code. */
grpc_status_code tsr_api_refuse(tsr_api_error *e, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* An adapter name: 1..TSR_ADAPTER_NAME_MAX characters of [A-Za-z0-9._-],
 * not starting with '.'. `field` names it in the message. */
grpc_status_code tsr_api_check_adapter_name(const char *name, const char *field,
                                            tsr_api_error *err);

/* ---- the adapter and training calls (runtime/server/train_api.c) ---- */

/* Limits on one training call. */
enum {
    TSR_API_MAX_EXAMPLES = 1024,      /* examples per ForwardBackward / Forward */
    TSR_API_MAX_TRAIN_TOKENS = 65536, /* tokens per ForwardBackward / Forward */
};

/* Checks and converts the serialized request of adapter call `kind` into r
 * (the examples tokenized and weighted: see tessera.v1.TrainExample).
 * Returns GRPC_STATUS_OK or the refusal (err filled); r may then hold
 * partial data that tsr_ctl_request_release frees. */
grpc_status_code tsr_api_ctl_request(const tsr_api_ctx *ctx, tsr_ctl_kind kind, const uint8_t *in,
                                     size_t n, tsr_ctl_request *r, tsr_api_error *err);

/* The serialized response of a finished call (r->code == 0). TSR_ERR_NOMEM. */
tsr_status tsr_api_ctl_response(const tsr_ctl_request *r, uint8_t **out, size_t *len);

/* Valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). */
int tsr_api_utf8_valid(const char *s, size_t n);

/* Checks a GenerateRequest and fills the request fields that precede
 * submission (prompt, sampling, limits, stops, adapter, logprobs); the
 * caller sets id, client, t_arrival and deadline. The request id in `m` is
 * only checked here (length, printable UTF-8), not copied.
 * A sampling seed of 0 becomes `seed_if_zero` (proto3 cannot tell 0 from
 * unset; a server that picks a fresh seed per request keeps sampled answers
 * varied).
 * prompt_text (may be NULL): receives a malloc'd copy of the prompt as text
 * (the text, the rendered chat, or the decoded ids) for the access log.
 * Returns GRPC_STATUS_OK, or the refusal's code with `err` filled; r may
 * then hold partial data that tsr_gen_request_release frees. */
grpc_status_code tsr_api_generate_request(const tsr_api_ctx *ctx,
                                          const Tessera__V1__GenerateRequest *m,
                                          uint64_t seed_if_zero, tsr_gen_request *r,
                                          char **prompt_text, tsr_api_error *err);

/* Checks a request id (see TSR_API_MAX_ID). */
grpc_status_code tsr_api_check_id(const char *id, tsr_api_error *err);

/* Renders a chat (tessera.v1.ChatInput) into prompt text with the model's
 * template: ending with the assistant-turn opener, or, with
 * continue_final_message, cut right after the last message's content so the
 * model continues it. *out is malloc'd. */
grpc_status_code tsr_api_render_chat(const tsr_api_ctx *ctx, const Tessera__V1__ChatInput *chat,
                                     char **out, tsr_api_error *err);

/* The unary methods that only need the model and tokenizer: each takes the
 * serialized request and, on GRPC_STATUS_OK, gives a malloc'd serialized
 * response. */
grpc_status_code tsr_api_tokenize(const tsr_api_ctx *ctx, const uint8_t *in, size_t n,
                                  uint8_t **out, size_t *out_len, tsr_api_error *err);
grpc_status_code tsr_api_detokenize(const tsr_api_ctx *ctx, const uint8_t *in, size_t n,
                                    uint8_t **out, size_t *out_len, tsr_api_error *err);
grpc_status_code tsr_api_model_info(const tsr_api_ctx *ctx, uint8_t **out, size_t *out_len,
                                    tsr_api_error *err);

/* Serializes any message into a malloc'd buffer. TSR_ERR_NOMEM only. */
tsr_status tsr_api_pack(const ProtobufCMessage *m, uint8_t **out, size_t *len);

/* A GenerateResponse chunk carrying the CHUNK events evs[0..n) merged in
 * order (their tokens, text and logprobs concatenated). */
tsr_status tsr_api_pack_chunk(const tsr_api_ctx *ctx, const char *request_id,
                              tsr_gen_event *const *evs, int n, uint8_t **out, size_t *len);
/* A GenerateResponse final from a FINAL event. */
tsr_status tsr_api_pack_final(const char *request_id, const tsr_gen_event *ev, uint8_t **out,
                              size_t *len);

#endif
