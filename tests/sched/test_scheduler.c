/* tests/sched/test_scheduler.c - continuous batching on the default model,
 * without the gRPC front end: requests go straight into the admission queue
 * and their events are read back.
 *
 *   test_scheduler MODEL   (exits 77 when MODEL is absent)
 *
 * Checks: 32 concurrent greedy requests (different prompts, lengths and
 * max_tokens, a budget small enough to chunk long prompts) each produce
 * exactly the tokens of the same request run alone; a request cancelled
 * mid-stream ends with CANCELLED; a stop string ends the text before it;
 * when everything is done, no KV block is in use and no sequence active;
 * 12 sampled requests batched together (top-k 1 to 256, temperatures,
 * top-p, min-p, seeds, min_tokens and ignore_eos, greedy with ignore_eos;
 * one with a penalty and one without top-k, which take whole rows) give the same tokens whether each step brings the rows'
 * top-k candidates from the device or the whole rows (host_sampling), and
 * the device run did use top-k steps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/server/scheduler.h"
#include "tests/common/check.h"

#define N_REQ 32

typedef struct {
    int32_t tokens[512];
    int n_tokens;
    char text[4096];
    size_t text_len;
    tsr_fin_reason finish;
    int done;
} result;

static tsr_gen_request *make_request(const tsr_tokenizer_t *tok, const char *prompt, int max_tokens,
                                     const char *stop) {
    tsr_gen_request *r = tsr_gen_request_new();
    size_t n;
    CHECK(tsr_tokenizer_encode(tok, prompt, strlen(prompt), 1, &r->prompt, &n) == TSR_OK, "encode");
    r->n_prompt = (int)n;
    tsr_sampling_params sp = TSR_SAMPLING_PARAMS_INIT;
    r->sampling = sp;
    r->max_tokens = max_tokens;
    r->t_arrival = tsr_now_s();
    if (stop) {
        r->stop = malloc(sizeof *r->stop);
        r->stop[0] = strdup(stop);
        r->n_stop = 1;
    }
    return r;
}

/* Moves pending events into res; returns 1 once the final event is seen. */
static int drain(tsr_gen_request *r, result *res) {
    tsr_gen_event *ev;
    while ((ev = tsr_gen_request_take(r))) {
        if (ev->kind == TSR_EV_CHUNK) {
            for (int i = 0; i < ev->n_tokens && res->n_tokens < 512; i++)
                res->tokens[res->n_tokens++] = ev->tokens[i];
            if (res->text_len + ev->text_len < sizeof res->text) {
                memcpy(res->text + res->text_len, ev->text, ev->text_len);
                res->text_len += ev->text_len;
                res->text[res->text_len] = '\0';
            }
        } else {
            res->finish = ev->finish;
            res->done = 1;
        }
        tsr_gen_event_free(ev);
    }
    return res->done;
}

#define N_SAMPLED 16

/* N_SAMPLED sampled requests (top-k 1 to 256 with temperatures, top-p and
 * min-p, min_tokens and ignore_eos; greedy with ignore_eos; one with a
 * repetition penalty, which needs whole rows; five without top-k, with
 * top-p, min-p or neither) pushed together into a fresh scheduler with
 * host_sampling as given; their tokens in res, the steps by output kind in
 * kinds, the sampled rows by path (tsr_scheduler_row_counts) in paths. */
static void run_sampled(tsr_engine *e, const tsr_tokenizer_t *tok, tsr_request_queue *q,
                        tsr_server_stats *stats, char (*prompts)[512], int host_sampling,
                        result *res, long kinds[4], long paths[4]) {
    static const struct {
        int top_k;
        float temperature, top_p, min_p, repeat;
        int min_tokens, ignore_eos; /* end-of-generation banned: more candidates */
    } sp[N_SAMPLED] = {
        {40, 0.8f, 1.0f, 0.0f, 1.0f, 0, 0},
        {1, 1.0f, 1.0f, 0.0f, 1.0f, 0, 0},
        {256, 1.3f, 1.0f, 0.0f, 1.0f, 0, 0},
        {50, 1.0f, 0.9f, 0.0f, 1.0f, 0, 0},
        {20, 0.7f, 1.0f, 0.05f, 1.0f, 0, 0},
        {200, 2.0f, 0.95f, 0.0f, 1.0f, 0, 0},
        {5, 1.5f, 1.0f, 0.0f, 1.0f, 0, 1},
        {64, 0.9f, 0.8f, 0.02f, 1.0f, 0, 0},
        {40, 1.0f, 1.0f, 0.0f, 1.3f, 0, 0},
        {0, 0.9f, 0.9f, 0.0f, 1.0f, 0, 0},
        {100, 1.1f, 1.0f, 0.0f, 1.0f, 20, 0},
        {0, 0.0f, 1.0f, 0.0f, 1.0f, 0, 1},
        /* top_k off: candidates and the row's normaliser, or the whole row */
        {0, 0.8f, 0.9f, 0.0f, 1.0f, 0, 0},
        {0, 1.0f, 1.0f, 0.0f, 1.0f, 0, 0},
        {0, 0.7f, 1.0f, 0.05f, 1.0f, 0, 0},
        {0, 1.5f, 1.0f, 0.0f, 1.0f, 0, 0},
    };
    tsr_sched_config sc = {48, 0.01, NULL, NULL, host_sampling, 0};
    tsr_scheduler_t *s;
    CHECK(tsr_scheduler_create(e, tok, q, stats, &sc, &s) == TSR_OK, "scheduler");
    tsr_gen_request *reqs[N_SAMPLED];
    memset(res, 0, N_SAMPLED * sizeof *res);
    for (int i = 0; i < N_SAMPLED; i++) {
        reqs[i] = make_request(tok, prompts[i % 8], 24, NULL);
        reqs[i]->sampling.top_k = sp[i].top_k;
        reqs[i]->sampling.temperature = sp[i].temperature;
        reqs[i]->sampling.top_p = sp[i].top_p;
        reqs[i]->sampling.min_p = sp[i].min_p;
        reqs[i]->sampling.repetition_penalty = sp[i].repeat;
        reqs[i]->sampling.seed = 1000 + (uint64_t)i;
        reqs[i]->min_tokens = sp[i].min_tokens;
        reqs[i]->ignore_eos = sp[i].ignore_eos;
        CHECK(tsr_request_queue_push(q, reqs[i]) == TSR_OK, "push");
    }
    for (int done = 0; done < N_SAMPLED;) {
        CHECK(tsr_scheduler_iterate(s) == TSR_OK, "iterate");
        done = 0;
        for (int i = 0; i < N_SAMPLED; i++)
            done += drain(reqs[i], &res[i]);
    }
    for (int i = 0; i < N_SAMPLED; i++) {
        CHECK(res[i].finish != TSR_FIN_ERROR && res[i].n_tokens > 0, "sampled request %d failed",
              i);
        tsr_gen_request_release(reqs[i]);
    }
    CHECK(tsr_scheduler_iterate(s) == TSR_OK, "iterate"); /* frees the last slots */
    tsr_scheduler_step_counts(s, kinds);
    tsr_scheduler_row_counts(s, paths);
    tsr_scheduler_free(s);
}

int main(int argc, char **argv) {
    if (argc < 2 || access(argv[1], R_OK) != 0) {
        printf("SKIP: model not found at %s\n", argc > 1 ? argv[1] : "(none)");
        return 77;
    }
    int rank, world;
    CHECK(tsr_comm_mpi_init(&argc, &argv, &rank, &world) == TSR_OK, "mpi");
    tsr_comm_grid grid;
    tsr_comm_grid_config gc = TSR_COMM_GRID_CONFIG_INIT;
    CHECK(tsr_comm_grid_init(&grid, &gc) == TSR_OK, "grid");
    tsr_model_file_t *mf;
    CHECK(tsr_model_file_open(argv[1], &mf) == TSR_OK, "model");
    tsr_tokenizer_t *tok;
    CHECK(tsr_tokenizer_from_gguf(tsr_model_file_gguf(mf), &tok) == TSR_OK, "tokenizer");
    tsr_plan_config pc = TSR_PLAN_CONFIG_INIT;
    tsr_engine_config ec = TSR_ENGINE_CONFIG_INIT;
    ec.max_seqs = 8; /* fewer slots than requests: the rest wait */
    ec.max_ctx = 512;
    tsr_engine e;
    CHECK(tsr_engine_init(&e, &grid, mf, &pc, &ec) == TSR_OK, "engine");
    tsr_request_queue q;
    CHECK(tsr_request_queue_init(&q, 64) == TSR_OK, "queue");
    tsr_server_stats stats;
    memset(&stats, 0, sizeof stats);
    tsr_sched_config sc = {48, 0.01, NULL, NULL, 0, 0}; /* small budget: prompts are chunked */
    tsr_scheduler_t *s;
    CHECK(tsr_scheduler_create(&e, tok, &q, &stats, &sc, &s) == TSR_OK, "scheduler");

    static const char *subjects[] = {"France",        "the ocean", "a small robot", "winter",
                                     "prime numbers", "the moon",  "coffee",        "a library"};
    char prompts[N_REQ][512];
    for (int i = 0; i < N_REQ; i++) {
        int len = snprintf(prompts[i], sizeof prompts[i],
                           "<|im_start|>user\nWrite one sentence about %s.", subjects[i % 8]);
        for (int k = 0; k < i % 5; k++) /* some long prompts, to be chunked */
            len += snprintf(prompts[i] + len, sizeof prompts[i] - (size_t)len,
                            " Please be precise and clear.");
        snprintf(prompts[i] + len, sizeof prompts[i] - (size_t)len,
                 "<|im_end|>\n<|im_start|>assistant\n");
    }

    /* each request alone */
    static result alone[N_REQ], together[N_REQ];
    for (int i = 0; i < N_REQ; i++) {
        tsr_gen_request *r = make_request(tok, prompts[i], 4 + i % 7, NULL);
        CHECK(tsr_request_queue_push(&q, r) == TSR_OK, "push");
        while (!drain(r, &alone[i]))
            CHECK(tsr_scheduler_iterate(s) == TSR_OK, "iterate");
        tsr_gen_request_release(r);
        CHECK(alone[i].n_tokens > 0, "request %d produced no tokens", i);
    }
    /* all together */
    tsr_gen_request *reqs[N_REQ];
    for (int i = 0; i < N_REQ; i++) {
        reqs[i] = make_request(tok, prompts[i], 4 + i % 7, NULL);
        CHECK(tsr_request_queue_push(&q, reqs[i]) == TSR_OK, "push");
    }
    int done = 0, steps = 0, max_active = 0;
    while (done < N_REQ) {
        CHECK(tsr_scheduler_iterate(s) == TSR_OK, "iterate");
        steps++;
        if (atomic_load(&stats.active) > max_active)
            max_active = atomic_load(&stats.active);
        done = 0;
        for (int i = 0; i < N_REQ; i++)
            done += drain(reqs[i], &together[i]);
    }
    for (int i = 0; i < N_REQ; i++) {
        CHECK(together[i].n_tokens == alone[i].n_tokens &&
                  !memcmp(together[i].tokens, alone[i].tokens, (size_t)alone[i].n_tokens * 4),
              "request %d: batched tokens differ from the request alone", i);
        CHECK(!strcmp(together[i].text, alone[i].text), "request %d: text differs", i);
        CHECK(together[i].finish == alone[i].finish, "request %d: finish differs", i);
        tsr_gen_request_release(reqs[i]);
    }
    CHECK(max_active == 8, "the batch never filled its 8 slots (max %d)", max_active);
    printf("32 concurrent requests in %d steps (8 at a time) match their single runs\n", steps);

    /* cancellation mid-stream */
    result rc = {0};
    tsr_gen_request *r = make_request(tok, prompts[0], 200, NULL);
    r->ignore_eos = 1;
    CHECK(tsr_request_queue_push(&q, r) == TSR_OK, "push");
    for (int i = 0; i < 6; i++)
        CHECK(tsr_scheduler_iterate(s) == TSR_OK, "iterate");
    drain(r, &rc);
    CHECK(!rc.done && rc.n_tokens > 0, "the long request should be streaming");
    atomic_store(&r->cancelled, 1);
    CHECK(tsr_scheduler_iterate(s) == TSR_OK, "iterate");
    CHECK(drain(r, &rc) && rc.finish == TSR_FIN_CANCELLED, "cancel did not end the request");
    tsr_gen_request_release(r);

    /* the scheduler takes from the queue only as many requests as it has
     * slots: the rest stay in the bounded queue (so that a burst past it is
     * refused there); a request cancelled while still queued leaves the
     * queue at the next iteration, finished as cancelled */
    tsr_gen_request *many[12];
    static result rm[12];
    memset(rm, 0, sizeof rm);
    for (int i = 0; i < 12; i++) {
        many[i] = make_request(tok, prompts[i % 8], 200, NULL);
        many[i]->ignore_eos = 1;
        CHECK(tsr_request_queue_push(&q, many[i]) == TSR_OK, "push");
    }
    atomic_store(&many[11]->cancelled, 1);
    CHECK(tsr_scheduler_pending(s) == 12, "pending %d, want 12 (all queued)",
          tsr_scheduler_pending(s));
    CHECK(tsr_scheduler_iterate(s) == TSR_OK, "iterate");
    CHECK(tsr_request_queue_len(&q) == 3,
          "after one iteration %d requests are left in the queue, want 3 (8 slots taken, one "
          "cancelled)",
          tsr_request_queue_len(&q));
    CHECK(drain(many[11], &rm[11]) && rm[11].finish == TSR_FIN_CANCELLED,
          "the request cancelled in the queue did not finish as cancelled");
    CHECK(tsr_scheduler_pending(s) == 11, "pending %d, want 11", tsr_scheduler_pending(s));
    for (int i = 0; i < 11; i++)
        atomic_store(&many[i]->cancelled, 1);
    for (int left = 11, guard = 0; left > 0; guard++) {
        CHECK(guard < 100, "cancelled requests never finished");
        CHECK(tsr_scheduler_iterate(s) == TSR_OK, "iterate");
        left = 0;
        for (int i = 0; i < 11; i++)
            left += !drain(many[i], &rm[i]);
    }
    for (int i = 0; i < 12; i++)
        tsr_gen_request_release(many[i]);
    CHECK(tsr_scheduler_pending(s) == 0 && tsr_request_queue_len(&q) == 0,
          "requests left after cancelling all");
    printf("the scheduler holds at most its 8 slots of requests; the rest wait in the queue\n");

    /* a stop string taken from the expected answer */
    const char *full = alone[0].text;
    CHECK(strlen(full) > 6, "answer too short for the stop test: '%s'", full);
    char stop[4] = {full[3], full[4], full[5], 0};
    result rs = {0};
    r = make_request(tok, prompts[0], 8, stop);
    CHECK(tsr_request_queue_push(&q, r) == TSR_OK, "push");
    while (!drain(r, &rs))
        CHECK(tsr_scheduler_iterate(s) == TSR_OK, "iterate");
    CHECK(rs.finish == TSR_FIN_STOP && rs.text_len == 3 && !memcmp(rs.text, full, 3),
          "stop string '%s': got '%s'", stop, rs.text);
    tsr_gen_request_release(r);

    /* everything released: one more iteration frees the last slots */
    CHECK(tsr_scheduler_iterate(s) == TSR_OK, "iterate");
    CHECK(atomic_load(&stats.active) == 0 && tsr_kv_cache_used_blocks(&e.kv) == 0,
          "resources left: %d active, %d KV blocks", atomic_load(&stats.active),
          tsr_kv_cache_used_blocks(&e.kv));
    tsr_scheduler_free(s);

    /* sampling from device-side top-k candidates picks exactly the tokens
     * the host picks from whole rows, batched, with the same seeds */
    static result host_run[N_SAMPLED], dev_run[N_SAMPLED];
    long host_kinds[4], dev_kinds[4], host_paths[4], dev_paths[4];
    run_sampled(&e, tok, &q, &stats, prompts, 1, host_run, host_kinds, host_paths);
    run_sampled(&e, tok, &q, &stats, prompts, 0, dev_run, dev_kinds, dev_paths);
    int differ_from_greedy = 0;
    for (int i = 0; i < N_SAMPLED; i++) {
        CHECK(
            dev_run[i].n_tokens == host_run[i].n_tokens &&
                !memcmp(dev_run[i].tokens, host_run[i].tokens, (size_t)host_run[i].n_tokens * 4) &&
                dev_run[i].finish == host_run[i].finish,
            "sampled request %d: top-k candidates from the device gave other tokens than the "
            "whole row on the host (%d vs %d tokens)",
            i, dev_run[i].n_tokens, host_run[i].n_tokens);
        /* against the greedy answer of the same prompt (shorter: compare its length) */
        const result *g = &alone[i % 8];
        const int m = g->n_tokens < dev_run[i].n_tokens ? g->n_tokens : dev_run[i].n_tokens;
        const int same = memcmp(dev_run[i].tokens, g->tokens, (size_t)m * 4) == 0;
        if (i == 1 || i == 11)
            CHECK(same,
                  "request %d (top_k 1, or greedy with ignore_eos) must give the greedy "
                  "tokens",
                  i);
        else
            differ_from_greedy += !same;
    }
    CHECK(host_kinds[TSR_OUT_TOPK] == 0, "--host-sampling ran %ld top-k steps",
          host_kinds[TSR_OUT_TOPK]);
    CHECK(dev_kinds[TSR_OUT_TOPK] > 0 && dev_kinds[TSR_OUT_LOGITS] < host_kinds[TSR_OUT_LOGITS],
          "device sampling: %ld top-k steps, %ld whole-row steps (host: %ld)",
          dev_kinds[TSR_OUT_TOPK], dev_kinds[TSR_OUT_LOGITS], host_kinds[TSR_OUT_LOGITS]);
    /* every path was taken: top-k candidates, top_k off decided by the
     * candidates, top_k off sent whole, whole rows (the penalty) */
    CHECK(host_paths[0] == 0 && host_paths[1] == 0 && host_paths[2] == 0 && host_paths[3] > 0,
          "--host-sampling drew rows from candidates");
    CHECK(dev_paths[0] > 0 && dev_paths[1] > 0 && dev_paths[2] > 0 && dev_paths[3] > 0,
          "device sampling rows by path: %ld top-k, %ld top_k off from candidates, %ld top_k off "
          "sent whole, %ld whole",
          dev_paths[0], dev_paths[1], dev_paths[2], dev_paths[3]);
    CHECK(differ_from_greedy >= N_SAMPLED / 2,
          "only %d of %d sampled answers leave the greedy path", differ_from_greedy, N_SAMPLED - 2);
    printf("%d sampled requests: device candidates (%ld top-k steps, %ld whole-row steps; rows: "
           "%ld top-k, %ld top_k off from candidates, %ld of them sent whole, %ld whole) match "
           "host sampling token for token\n",
           N_SAMPLED, dev_kinds[TSR_OUT_TOPK], dev_kinds[TSR_OUT_LOGITS], dev_paths[0],
           dev_paths[1] + dev_paths[2], dev_paths[2], dev_paths[3]);

    tsr_request_queue_free(&q);
    tsr_engine_free(&e);
    tsr_tokenizer_free(tok);
    tsr_model_file_close(mf);
    tsr_comm_grid_free(&grid);
    tsr_comm_mpi_finalize();
    printf("PASS\n");
    return 0;
}
