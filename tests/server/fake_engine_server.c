/* tests/server/fake_engine_server.c - the real gRPC front end
 * (runtime/server/grpc_server.c) with the real tokenizer of the default
 * model, in front of a FAKE engine, so the transport can be tested without
 * running the model.
 *
 * The fake engine runs on the main thread as the real one will: it pops
 * requests from the queue, and every `--delay-ms` it "generates" one token
 * per request by echoing the prompt back (token i of the answer is prompt
 * token i). A request finishes with STOP when the prompt is used up and
 * with LENGTH at max_tokens; when `cancelled` is set it finishes with
 * CANCELLED at the next step and prints "fake-engine: cancelled id=X".
 * Magic seeds steer it (the server replaces seed 0 by a random odd seed):
 *   seed 1000000 + ms   one token every `ms` milliseconds (slow streams)
 *   seed 666            FINAL with FINISH_REASON_ERROR
 *   seed 667            as 666, and the engine marks itself failed
 * Logprobs: token i gets -0.125*(i+1); alternative j is (token+j+1) mod vocab
 * with logprob -0.125*(i+1) - (j+1).
 *
 * SIGTERM/SIGINT: stop accepting, close the queue, keep stepping until every
 * call has finished or --grace-s passed, cancel the rest, shut the server
 * down, exit 0 (the shape `tessera serve` follows).
 *
 * Prints "PORT <n>" on stdout once listening. Exit 77 when the model file
 * is absent. Not a user tool. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/server/grpc_server.h"
#include "shard/model_file.h"

static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

typedef struct {
    tsr_gen_request *r;
    int pos;        /* answer tokens produced */
    double next_at; /* when the next token is due */
    double delay;   /* seconds per token */
    double t_start, t_first;
    tsr_detok_stream ds;
} fake_seq;

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    if (b)
        b[n] = '\0';
    fclose(f);
    return b;
}

static void sleep_ms(double ms) {
    time_t sec = (time_t)(ms / 1000);
    struct timespec ts = {sec, (long)((ms - 1000 * (double)sec) * 1e6)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void post_final_code(fake_seq *q, tsr_fin_reason why, const char *error, int code);

static void post_final(fake_seq *q, tsr_fin_reason why, const char *error) {
    post_final_code(q, why, error, 0);
}

/* code != 0: the call ends with that gRPC status (the scheduler's refusals) */
static void post_final_code(fake_seq *q, tsr_fin_reason why, const char *error, int code) {
    tsr_gen_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        abort();
    ev->kind = TSR_EV_FINAL;
    ev->finish = why;
    ev->prompt_tokens = q->r->n_prompt;
    ev->completion_tokens = q->pos;
    double now = tsr_now_s();
    ev->queued_s = q->t_start - q->r->t_arrival;
    ev->ttft_s = q->t_first > 0 ? q->t_first - q->r->t_arrival : 0;
    ev->total_s = now - q->r->t_arrival;
    if (error)
        snprintf(ev->error, sizeof ev->error, "%s", error);
    ev->status_code = code;
    tsr_gen_request_post(q->r, ev);
}

/* One answer token; returns 1 when the request is finished. */
static int step(fake_seq *q, int n_vocab) {
    tsr_gen_request *r = q->r;
    int32_t tok = r->prompt[q->pos];
    tsr_gen_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        abort();
    ev->kind = TSR_EV_CHUNK;
    ev->n_tokens = 1;
    ev->tokens = malloc(sizeof *ev->tokens);
    ev->tokens[0] = tok;
    const char *piece = "";
    size_t len = 0;
    if (tsr_detok_stream_push(&q->ds, tok, &piece, &len) != TSR_OK)
        piece = "", len = 0;
    /* the stream's buffer is reused by the flush below: copy first */
    ev->text = malloc(len + 4 * 3 + 1);
    memcpy(ev->text, piece, len);
    ev->text_len = len;
    q->pos++;
    int done = q->pos >= r->max_tokens || q->pos >= r->n_prompt;
    if (done) {
        const char *tail;
        size_t tl;
        if (tsr_detok_stream_flush(&q->ds, &tail, &tl) == TSR_OK && tl <= 12) {
            memcpy(ev->text + len, tail, tl);
            ev->text_len += tl;
        }
    }
    ev->text[ev->text_len] = '\0';
    if (r->logprobs) {
        float lp = -0.125f * (float)q->pos;
        ev->logprobs = malloc(sizeof *ev->logprobs);
        ev->logprobs[0] = lp;
        if (r->top_logprobs > 0) {
            ev->n_top = r->top_logprobs;
            ev->top = calloc((size_t)r->top_logprobs, sizeof *ev->top);
            for (int j = 0; j < r->top_logprobs; j++) {
                ev->top[j].token_id = (tok + j + 1) % n_vocab;
                ev->top[j].logprob = lp - (float)(j + 1);
            }
        }
    }
    tsr_gen_request_post(r, ev);
    if (q->t_first == 0)
        q->t_first = tsr_now_s();
    if (!done)
        return 0;
    post_final(q, q->pos >= r->max_tokens ? TSR_FIN_LENGTH : TSR_FIN_STOP, NULL);
    return 1;
}

static void usage(void) {
    fprintf(stderr, "usage: fake_engine_server [--model F] [--listen ADDR] [--auth-token-file F]\n"
                    "  [--tls-cert F --tls-key F] [--queue N] [--max-active N] [--delay-ms N]\n"
                    "  [--ready-after-ms N] [--context N] [--max-message-bytes N] [--log-prompts]\n"
                    "  [--grace-s S] [--default-max-tokens N]\n");
}

int main(int argc, char **argv) {
    const char *model = NULL, *listen = "127.0.0.1:0", *token_file = NULL, *cert_file = NULL,
               *key_file = NULL;
    int queue_cap = 64, max_active = 64, context = 512, max_msg = 0, log_prompts = 0,
        default_max = 0;
    double delay_ms = 2, ready_after_ms = 0, grace_s = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--model"))
            model = v;
        else if (ARG("--listen"))
            listen = v;
        else if (ARG("--auth-token-file"))
            token_file = v;
        else if (ARG("--tls-cert"))
            cert_file = v;
        else if (ARG("--tls-key"))
            key_file = v;
        else if (ARG("--queue"))
            queue_cap = atoi(v);
        else if (ARG("--max-active"))
            max_active = atoi(v);
        else if (ARG("--delay-ms"))
            delay_ms = atof(v);
        else if (ARG("--ready-after-ms"))
            ready_after_ms = atof(v);
        else if (ARG("--context"))
            context = atoi(v);
        else if (ARG("--max-message-bytes"))
            max_msg = atoi(v);
        else if (ARG("--grace-s"))
            grace_s = atof(v);
        else if (ARG("--default-max-tokens"))
            default_max = atoi(v);
        else if (strcmp(a, "--log-prompts") == 0)
            log_prompts = 1;
        else {
            usage();
            return 2;
        }
#undef ARG
    }
    char def_model[1024];
    if (!model) {
        const char *dir = getenv("TESSERA_MODELS");
        const char *home = getenv("HOME");
        if (dir)
            snprintf(def_model, sizeof def_model, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", dir);
        else
            snprintf(def_model, sizeof def_model,
                     "%s/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : ".");
        model = def_model;
    }
    FILE *probe = fopen(model, "rb");
    if (!probe) {
        printf("SKIP: model not found at %s (run scripts/fetch-model.sh)\n", model);
        return 77;
    }
    fclose(probe);

    tsr_model_file_t *mf = NULL;
    tsr_tokenizer_t *tok = NULL;
    if (tsr_model_file_open(model, &mf) != TSR_OK ||
        tsr_tokenizer_from_gguf(tsr_model_file_gguf(mf), &tok) != TSR_OK) {
        fprintf(stderr, "fake_engine_server: %s\n", tsr_error_msg());
        return 1;
    }
    char *token = token_file ? read_file(token_file) : NULL;
    char *cert = cert_file ? read_file(cert_file) : NULL;
    char *key = key_file ? read_file(key_file) : NULL;
    if ((token_file && !token) || (cert_file && !cert) || (key_file && !key)) {
        fprintf(stderr, "fake_engine_server: cannot read a file given on the command line\n");
        return 2;
    }

    tsr_request_queue queue;
    tsr_server_stats stats;
    memset(&stats, 0, sizeof stats);
    atomic_store(&stats.kv_blocks_total, 1024);
    atomic_store(&stats.kv_block_size, 16);
    if (tsr_request_queue_init(&queue, queue_cap) != TSR_OK) {
        fprintf(stderr, "fake_engine_server: %s\n", tsr_error_msg());
        return 2;
    }
    const tsr_model_config *mc = tsr_model_file_config(mf);
    tsr_grpc_server_config cfg = {
        /* .listen_addr = */ listen,
        /* .auth_token = */ token,
        /* .tls_cert_pem = */ cert,
        /* .tls_key_pem = */ key,
        /* .max_message_bytes = */ max_msg,
        /* .log_prompts = */ log_prompts,
        /* .default_max_tokens = */ default_max,
        /* .queue = */ &queue,
        /* .stats = */ &stats,
        /* .tok = */ tok,
        /* .model = */ mc,
        /* .model_format = */ tsr_model_file_format(mf),
        /* .context_length = */ context,
        /* .tp = */ 1,
        /* .pp = */ 1,
        /* .world_size = */ 1,
        /* .metrics = */ NULL,
    };
    tsr_grpc_server_t *srv = NULL;
    if (tsr_grpc_server_start(&cfg, &srv) != TSR_OK) {
        fprintf(stderr, "fake_engine_server: %s\n", tsr_error_msg());
        tsr_request_queue_free(&queue);
        free(token);
        free(cert);
        free(key);
        tsr_tokenizer_free(tok);
        tsr_model_file_close(mf);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (ready_after_ms <= 0) /* ready before anyone can connect */
        atomic_store(&stats.ready, 1);
    printf("PORT %d\n", tsr_grpc_server_port(srv));
    fflush(stdout);

    const int n_vocab = mc->n_vocab;
    const double t0 = tsr_now_s();
    fake_seq *seqs = calloc((size_t)max_active, sizeof *seqs);
    tsr_gen_request **popped = calloc((size_t)max_active, sizeof *popped);
    int n_seq = 0, draining = 0;
    double grace_until = 0;
    for (;;) {
        double now = tsr_now_s();
        if (!atomic_load(&stats.ready) && now - t0 >= ready_after_ms / 1000)
            atomic_store(&stats.ready, 1);
        if (g_signal && !draining) {
            draining = 1;
            grace_until = now + grace_s;
            fprintf(stderr, "fake-engine: draining (signal %d)\n", (int)g_signal);
            tsr_grpc_server_stop_accepting(srv);
            tsr_request_queue_close(&queue);
        }
        if (draining && ((n_seq == 0 && tsr_request_queue_len(&queue) == 0 &&
                          tsr_grpc_server_active_calls(srv) == 0) ||
                         now >= grace_until))
            break;
        int room = max_active - n_seq;
        int got = room > 0 ? tsr_request_queue_pop(&queue, popped, room, n_seq ? 0 : 0.05) : 0;
        now = tsr_now_s();
        for (int i = 0; i < got; i++) {
            fake_seq *q = &seqs[n_seq++];
            memset(q, 0, sizeof *q);
            q->r = popped[i];
            q->t_start = now;
            uint64_t seed = q->r->sampling.seed;
            q->delay = seed >= 1000000 && seed < 1100000 ? (double)(seed - 1000000) / 1000
                                                         : delay_ms / 1000;
            q->next_at = now + q->delay;
            tsr_detok_stream_init(&q->ds, tok, 0);
        }
        if (n_seq == 0) {
            if (got == 0 && room <= 0)
                sleep_ms(1);
            continue;
        }
        for (int i = 0; i < n_seq;) {
            fake_seq *q = &seqs[i];
            int done = 0;
            if (atomic_load(&q->r->cancelled)) {
                fprintf(stderr, "fake-engine: cancelled id=%s\n", q->r->id);
                post_final(q, TSR_FIN_CANCELLED, NULL);
                done = 1;
            } else if (q->r->adapter[0]) { /* the fake has no adapters: as the scheduler answers */
                post_final_code(q, TSR_FIN_ERROR, "no adapter named 'french'", 5 /* NOT_FOUND */);
                done = 1;
            } else if (q->r->sampling.seed == 666 || q->r->sampling.seed == 667) {
                if (q->r->sampling.seed == 667)
                    atomic_store(&stats.engine_failed, 1);
                post_final(q, TSR_FIN_ERROR, "fake engine failure (seed 666)");
                done = 1;
            } else if (now >= q->next_at) {
                q->next_at += q->delay;
                done = step(q, n_vocab);
            }
            if (done) {
                tsr_detok_stream_free(&q->ds);
                tsr_gen_request_release(q->r);
                seqs[i] = seqs[--n_seq];
            } else {
                i++;
            }
        }
        int blocks = 0;
        for (int i = 0; i < n_seq; i++)
            blocks += (seqs[i].r->n_prompt + seqs[i].pos + 15) / 16;
        atomic_store(&stats.active, n_seq);
        atomic_store(&stats.queued, tsr_request_queue_len(&queue)); /* as the scheduler does */
        atomic_store(&stats.kv_blocks_used, blocks);
        sleep_ms(1);
    }
    /* grace is over: what is left is cancelled */
    for (int i = 0; i < n_seq; i++) {
        fprintf(stderr, "fake-engine: cancelled id=%s (shutdown)\n", seqs[i].r->id);
        post_final(&seqs[i], TSR_FIN_CANCELLED, NULL);
        tsr_detok_stream_free(&seqs[i].ds);
        tsr_gen_request_release(seqs[i].r);
    }
    atomic_store(&stats.active, 0);
    atomic_store(&stats.kv_blocks_used, 0);
    tsr_grpc_server_shutdown(srv);
    tsr_request_queue_free(&queue);
    free(seqs);
    free(popped);
    free(token);
    free(cert);
    free(key);
    tsr_tokenizer_free(tok);
    tsr_model_file_close(mf);
    fprintf(stderr, "fake-engine: exit 0\n");
    return 0;
}
