/* tests/tokenizer/tsr_tok_dump.c - a small CLI around the tokenizer for the
 * Python comparison tests (compare_hf.py, chat_ref.py) and for timing.
 *
 *   tsr_tok_dump (--gguf F | --json F [--config F]) [mode] < in.jsonl > out.jsonl
 *
 * Modes:
 *   (default) encode: each input line is a JSON object {"text": S,
 *             "special": bool}; each output line is {"ids": [...],
 *             "decoded": S2, "decoded_skip": S3} or {"error": msg}. The
 *             streaming decoder is checked against the full decode here;
 *             a difference is reported as {"error": "stream mismatch ..."}.
 *   --chat    each line {"messages": [{"role","content"}...],
 *             "add_generation_prompt": bool} -> {"text": S} or {"error"}.
 *   --info    one JSON object: n_vocab, bos, eos, eot, pad, add_bos,
 *             chat_template, chat_style, eog ids.
 *   --bench FILE [REPS]  load time (REPS loads) and encode throughput on
 *             FILE's bytes, printed as text.
 * JSON lines keep NULs and newlines in strings intact.
 * Not a user tool: tessera's own CLI is runtime/cmd/. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/tokenizer/chat.h"
#include "base/clock.h"
#include "runtime/tokenizer/tokenizer.h"
#include "shard/gguf.h"

typedef struct {
    const char *gguf, *json, *config;
} src;

static tsr_status load(const src *s, tsr_tokenizer_t **t) {
    if (s->gguf) {
        tsr_gguf_t *g = NULL;
        TSR_TRY(tsr_gguf_open(s->gguf, &g));
        tsr_status st = tsr_tokenizer_from_gguf(g, t);
        tsr_gguf_close(g);
        return st;
    }
    return tsr_tokenizer_from_json(s->json, s->config, t);
}

static void print_json_line(json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
    json_decref(j);
}

static json_t *error_obj(const char *what) {
    json_t *o = json_object();
    char buf[1200];
    snprintf(buf, sizeof buf, "%s%s", what, tsr_error_msg());
    json_object_set_new(o, "error", json_string(buf));
    return o;
}

/* Decodes ids through the streaming decoder; returns malloc'd text. */
static tsr_status stream_decode(const tsr_tokenizer_t *t, const int32_t *ids, size_t n,
                                unsigned flags, char **out, size_t *out_len) {
    tsr_detok_stream ds;
    tsr_detok_stream_init(&ds, t, flags);
    size_t cap = 64, len = 0;
    char *buf = malloc(cap);
    tsr_status st = buf ? TSR_OK : TSR_ERR_NOMEM;
    for (size_t i = 0; i <= n && st == TSR_OK; i++) {
        const char *txt;
        size_t tl;
        st = i < n ? tsr_detok_stream_push(&ds, ids[i], &txt, &tl)
                   : tsr_detok_stream_flush(&ds, &txt, &tl);
        if (st != TSR_OK)
            break;
        if (len + tl + 1 > cap) {
            while (len + tl + 1 > cap)
                cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                st = TSR_ERR_NOMEM;
                break;
            }
            buf = nb;
        }
        memcpy(buf + len, txt, tl);
        len += tl;
    }
    tsr_detok_stream_free(&ds);
    if (st != TSR_OK) {
        free(buf);
        return st;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return TSR_OK;
}

static json_t *encode_one(const tsr_tokenizer_t *t, const json_t *in) {
    const json_t *jt = json_object_get(in, "text");
    if (!json_is_string(jt))
        return error_obj("input line has no \"text\" string");
    int special = json_is_true(json_object_get(in, "special"));
    int32_t *ids = NULL;
    size_t n = 0;
    if (tsr_tokenizer_encode(t, json_string_value(jt), json_string_length(jt), special, &ids, &n) !=
        TSR_OK)
        return error_obj("encode: ");
    json_t *o = json_object();
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_integer(ids[i]));
    json_object_set_new(o, "ids", arr);
    static const unsigned flag_set[2] = {0, TSR_DETOK_SKIP_SPECIAL};
    static const char *const keys[2] = {"decoded", "decoded_skip"};
    for (int k = 0; k < 2; k++) {
        char *full = NULL, *streamed = NULL;
        size_t fl = 0, sl = 0;
        if (tsr_tokenizer_decode(t, ids, n, flag_set[k], &full, &fl) != TSR_OK) {
            json_decref(o);
            free(ids);
            return error_obj("decode: ");
        }
        if (stream_decode(t, ids, n, flag_set[k], &streamed, &sl) != TSR_OK) {
            free(full);
            json_decref(o);
            free(ids);
            return error_obj("stream decode: ");
        }
        if (fl != sl || memcmp(full, streamed, fl) != 0) {
            free(full);
            free(streamed);
            json_decref(o);
            free(ids);
            return error_obj("stream mismatch: streamed text differs from the full decode");
        }
        json_object_set_new(o, keys[k], json_stringn(full, fl));
        free(full);
        free(streamed);
    }
    free(ids);
    return o;
}

static json_t *chat_one(const tsr_tokenizer_t *t, const json_t *in) {
    const json_t *msgs = json_object_get(in, "messages");
    size_t n = json_array_size(msgs);
    tsr_chat_msg *m = calloc(n ? n : 1, sizeof *m);
    if (!m)
        return error_obj("out of memory");
    for (size_t i = 0; i < n; i++) {
        m[i].role = json_string_value(json_object_get(json_array_get(msgs, i), "role"));
        m[i].content = json_string_value(json_object_get(json_array_get(msgs, i), "content"));
    }
    char *text = NULL;
    tsr_status st =
        tsr_chat_render(t, m, n, json_is_true(json_object_get(in, "add_generation_prompt")), &text);
    free(m);
    if (st != TSR_OK)
        return error_obj("chat: ");
    json_t *o = json_object();
    json_object_set_new(o, "text", json_string(text));
    free(text);
    return o;
}

static json_t *info(const tsr_tokenizer_t *t) {
    json_t *o = json_object();
    json_object_set_new(o, "n_vocab", json_integer((json_int_t)tsr_tokenizer_n_vocab(t)));
    json_object_set_new(o, "bos", json_integer(tsr_tokenizer_bos(t)));
    json_object_set_new(o, "eos", json_integer(tsr_tokenizer_eos(t)));
    json_object_set_new(o, "eot", json_integer(tsr_tokenizer_eot(t)));
    json_object_set_new(o, "pad", json_integer(tsr_tokenizer_pad(t)));
    json_object_set_new(o, "add_bos", json_boolean(tsr_tokenizer_add_bos(t)));
    const char *tm = tsr_tokenizer_chat_template(t);
    json_object_set_new(o, "chat_template", tm ? json_string(tm) : json_null());
    json_object_set_new(o, "chat_style", json_string(tsr_chat_style_name(tsr_chat_detect(tm))));
    json_t *eog = json_array();
    for (size_t i = 0; i < tsr_tokenizer_n_vocab(t); i++)
        if (tsr_tokenizer_is_eog(t, (int32_t)i))
            json_array_append_new(eog, json_integer((json_int_t)i));
    json_object_set_new(o, "eog", eog);
    return o;
}

static int bench(const src *s, const char *file, int reps) {
    FILE *f = fopen(file, "rb");
    if (!f) {
        fprintf(stderr, "tsr_tok_dump: cannot open %s\n", file);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    if (!buf || fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(buf);
        fprintf(stderr, "tsr_tok_dump: cannot read %s\n", file);
        return 1;
    }
    fclose(f);
    double best = 1e9;
    tsr_tokenizer_t *t = NULL;
    for (int r = 0; r < reps; r++) {
        tsr_tokenizer_free(t);
        t = NULL;
        double t0 = tsr_now_s();
        if (load(s, &t) != TSR_OK) {
            fprintf(stderr, "tsr_tok_dump: %s\n", tsr_error_msg());
            free(buf);
            return 1;
        }
        double dt = tsr_now_s() - t0;
        best = dt < best ? dt : best;
    }
    printf("load: best of %d = %.1f ms (vocab %zu)\n", reps, best * 1e3, tsr_tokenizer_n_vocab(t));
    double t0 = tsr_now_s();
    int32_t *ids = NULL;
    size_t n = 0;
    int rounds = 0;
    do {
        free(ids);
        if (tsr_tokenizer_encode(t, buf, (size_t)sz, 0, &ids, &n) != TSR_OK) {
            fprintf(stderr, "tsr_tok_dump: %s\n", tsr_error_msg());
            free(buf);
            tsr_tokenizer_free(t);
            return 1;
        }
        rounds++;
    } while (tsr_now_s() - t0 < 1.0);
    double dt = (tsr_now_s() - t0) / rounds;
    printf("encode: %ld bytes -> %zu tokens in %.2f ms (%.1f MB/s, %.2f M tokens/s)\n", sz, n,
           dt * 1e3, (double)sz / dt / 1e6, (double)n / dt / 1e6);
    t0 = tsr_now_s();
    char *text = NULL;
    size_t tl = 0;
    if (tsr_tokenizer_decode(t, ids, n, 0, &text, &tl) == TSR_OK)
        printf("decode: %.2f ms, round trip %s\n", (tsr_now_s() - t0) * 1e3,
               tl == (size_t)sz && memcmp(text, buf, tl) == 0
                   ? "exact"
                   : "differs (bytes with no token in the vocab are dropped)");
    free(text);
    free(ids);
    free(buf);
    tsr_tokenizer_free(t);
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: tsr_tok_dump (--gguf F | --json F [--config F]) "
                    "[--chat | --info | --bench FILE [REPS]] < in.jsonl\n");
    return 2;
}

int main(int argc, char **argv) {
    src s = {0};
    const char *mode = "encode", *bench_file = NULL;
    int reps = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--gguf") == 0 && i + 1 < argc)
            s.gguf = argv[++i];
        else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
            s.json = argv[++i];
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            s.config = argv[++i];
        else if (strcmp(argv[i], "--chat") == 0 || strcmp(argv[i], "--info") == 0)
            mode = argv[i] + 2;
        else if (strcmp(argv[i], "--bench") == 0 && i + 1 < argc) {
            mode = "bench";
            bench_file = argv[++i];
            if (i + 1 < argc && argv[i + 1][0] != '-')
                reps = atoi(argv[++i]);
        } else
            return usage();
    }
    if (!s.gguf == !s.json)
        return usage();
    if (strcmp(mode, "bench") == 0)
        return bench(&s, bench_file, reps > 0 ? reps : 1);

    tsr_tokenizer_t *t = NULL;
    if (load(&s, &t) != TSR_OK) {
        fprintf(stderr, "tsr_tok_dump: %s\n", tsr_error_msg());
        return 1;
    }
    if (strcmp(mode, "info") == 0) {
        print_json_line(info(t));
        tsr_tokenizer_free(t);
        return 0;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int rc = 0;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        if (got == 0 || (got == 1 && line[0] == '\n'))
            continue;
        json_error_t e;
        json_t *in = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &e);
        if (!in) {
            fprintf(stderr, "tsr_tok_dump: bad input line: %s\n", e.text);
            rc = 1;
            break;
        }
        print_json_line(strcmp(mode, "chat") == 0 ? chat_one(t, in) : encode_one(t, in));
        json_decref(in);
    }
    free(line);
    tsr_tokenizer_free(t);
    return rc;
}
