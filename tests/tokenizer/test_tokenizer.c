/* tests/tokenizer/test_tokenizer.c - unit tests of runtime/tokenizer on tiny
 * hand-built vocabularies: byte merges and rank order, special and
 * user-defined tokens, lstrip/rstrip, split behaviours, streaming decode of
 * split multi-byte characters, invalid UTF-8, malformed tokenizer.json and
 * GGUF metadata (refused with a message, never a crash).
 * Every check asserts; the first failure ends the program with status 1. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/tokenizer/tokenizer.h"
#include "shard/gguf.h"
#include "tests/common/byte_level.h"
#include "tests/common/check.h"
#include "tests/common/tmpdir.h"

/* ---- a tiny byte-level vocab ------------------------------------------- */

#define MAX_TOK 400
typedef struct {
    char text[MAX_TOK][64];
    tsr_strref refs[MAX_TOK];
    int32_t types[MAX_TOK];
    size_t n;
    tsr_strref merges[64];
    size_t n_merges;
} tiny_vocab;

static int32_t add_tok(tiny_vocab *v, const char *s, int type) {
    snprintf(v->text[v->n], sizeof v->text[0], "%s", s);
    v->types[v->n] = type;
    return (int32_t)v->n++;
}

/* Byte-level text of raw bytes ("Ġ" for ' '). */
static const char *bl(const char *raw, char *buf) {
    char *w = buf;
    for (const unsigned char *p = (const unsigned char *)raw; *p; p++)
        tu_put_cp(&w, tu_byte_cp(*p));
    *w = '\0';
    return buf;
}

static void add_merge(tiny_vocab *v, const char *a_raw, const char *b_raw) {
    static char store[64][80];
    char ba[32], bb[32], cat[64];
    snprintf(store[v->n_merges], sizeof store[0], "%s %s", bl(a_raw, ba), bl(b_raw, bb));
    v->merges[v->n_merges].ptr = store[v->n_merges];
    v->merges[v->n_merges].len = strlen(store[v->n_merges]);
    v->n_merges++;
    snprintf(cat, sizeof cat, "%s%s", ba, bb);
    add_tok(v, cat, TSR_TOKEN_TYPE_NORMAL);
}

enum { ID_IM_START = 256, ID_IM_END, ID_EOT, ID_TOOL, ID_LONG, ID_FIRST_MERGE };

/* Ids: 0..255 the bytes (in byte order), then specials, then merges. */
static void make_vocab(tiny_vocab *v) {
    memset(v, 0, sizeof *v);
    for (unsigned b = 0; b < 256; b++) {
        char *w = v->text[v->n];
        tu_put_cp(&w, tu_byte_cp(b));
        *w = '\0';
        v->types[v->n++] = TSR_TOKEN_TYPE_NORMAL;
    }
    add_tok(v, "<|im_start|>", TSR_TOKEN_TYPE_CONTROL);  /* 256 */
    add_tok(v, "<|im_end|>", TSR_TOKEN_TYPE_CONTROL);    /* 257 */
    add_tok(v, "<|eot|>", TSR_TOKEN_TYPE_CONTROL);       /* 258 */
    add_tok(v, "<tool>", TSR_TOKEN_TYPE_USER_DEFINED);   /* 259 */
    add_tok(v, "<|im_start|>x", TSR_TOKEN_TYPE_CONTROL); /* 260: longer, same prefix */
    add_merge(v, "h", "e");                              /* 261 "he"    rank 0 */
    add_merge(v, "l", "l");                              /* 262 "ll"    rank 1 */
    add_merge(v, "he", "ll");                            /* 263 "hell"  rank 2 */
    add_merge(v, "hell", "o");                           /* 264 "hello" rank 3 */
    add_merge(v, " ", "w");                              /* 265 " w"    rank 4 */
    add_merge(v, "a", "a");                              /* 266 "aa"    rank 5 */
    add_merge(v, "aa", "aa");                            /* 267 "aaaa"  rank 6 */
    add_merge(v, "o", "r");                              /* 268 "or"    rank 7 */
    add_merge(v, " w", "or");                            /* 269 " wor"  rank 8 */
    add_merge(v, "\xE2\x82", "\xAC");                    /* 270 second half of "€" (E2 82 AC) */
    add_merge(v, "\xE2", "\x82");                        /* 271 */
    for (size_t i = 0; i < v->n; i++) {
        v->refs[i].ptr = v->text[i];
        v->refs[i].len = strlen(v->text[i]);
    }
}

/* The spec's strict_merges: 0 (GGUF, as llama.cpp) skips a merge naming a
 * token the vocab lacks, 1 (tokenizer.json, as HF) refuses it. */
static void test_merge_outside_vocab(void) {
    static tiny_vocab v;
    make_vocab(&v);
    tsr_strref merges[2] = {{"h e", 3}, {"q e", 3}}; /* "qe" is no token */
    tsr_tokenizer_spec sp = TSR_TOKENIZER_SPEC_INIT;
    sp.n_tokens = v.n;
    sp.tokens = v.refs;
    sp.token_types = v.types;
    sp.n_merges = 2;
    sp.merges = merges;
    tsr_tokenizer_t *t = NULL;
    CHECK_OK(tsr_tokenizer_from_spec(&sp, &t));
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(tsr_tokenizer_encode(t, "he", 2, 0, &ids, &n));
    CHECK(n == 1 && ids[0] == 261, "\"he\" is one token after the kept merge");
    free(ids);
    tsr_tokenizer_free(t);
    sp.strict_merges = 1;
    t = (tsr_tokenizer_t *)1;
    CHECK_ERR(tsr_tokenizer_from_spec(&sp, &t), TSR_ERR_FORMAT, "merge 1");
    CHECK(t == NULL);
}

static tsr_tokenizer_t *make_tok(const tsr_pre_stage *stages, size_t n_stages) {
    static tiny_vocab v;
    make_vocab(&v);
    tsr_tokenizer_spec sp = TSR_TOKENIZER_SPEC_INIT;
    sp.n_tokens = v.n;
    sp.tokens = v.refs;
    sp.token_types = v.types;
    sp.n_merges = v.n_merges;
    sp.merges = v.merges;
    sp.pre_name = "gpt2";
    sp.pre_stages = stages;
    sp.n_pre_stages = n_stages;
    sp.bos_id = ID_IM_START;
    sp.eos_id = ID_IM_END;
    sp.add_bos = 1;
    sp.chat_template = "{{ '<|im_start|>' }}<|im_end|>";
    tsr_tokenizer_t *t = NULL;
    CHECK_OK(tsr_tokenizer_from_spec(&sp, &t));
    CHECK(t != NULL);
    return t;
}

static void expect_ids(const tsr_tokenizer_t *t, const char *text, size_t len, unsigned flags,
                       const int32_t *want, size_t n_want) {
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(tsr_tokenizer_encode_ex(t, text, len, flags, &ids, &n));
    int same = n == n_want && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!same) {
        fprintf(stderr, "encode(\"%.*s\") gave", (int)len, text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", (int)ids[i]);
        fprintf(stderr, "; want");
        for (size_t i = 0; i < n_want; i++)
            fprintf(stderr, " %d", (int)want[i]);
        fprintf(stderr, "\n");
    }
    CHECK(same);
    /* Every encoding must decode back to the text. */
    char *back = NULL;
    size_t bl_len = 0;
    CHECK_OK(tsr_tokenizer_decode(t, ids, n, 0, &back, &bl_len));
    if (!(flags & TSR_TOK_ADD_SPECIAL))
        CHECK(bl_len == len && memcmp(back, text, len) == 0);
    free(back);
    free(ids);
}

#define EXPECT_IDS(t, s, flags, ...)                                                               \
    do {                                                                                           \
        static const int32_t want_[] = {__VA_ARGS__};                                              \
        expect_ids(t, s, sizeof(s) - 1, flags, want_, sizeof want_ / sizeof want_[0]);             \
    } while (0)

static void test_merges(void) {
    tsr_tokenizer_t *t = make_tok(NULL, 0);
    CHECK(tsr_tokenizer_n_vocab(t) == 272);
    EXPECT_IDS(t, "hello", 0, 264);
    EXPECT_IDS(t, "hello world", 0, 264, 269, 'l', 'd');
    EXPECT_IDS(t, "hell", 0, 263);
    EXPECT_IDS(t, "helo", 0, 261, 'l', 'o');
    /* Rank order and leftmost tie-breaking: "aaa" -> aa a; "aaaaa" -> aaaa a. */
    EXPECT_IDS(t, "aaa", 0, 266, 'a');
    EXPECT_IDS(t, "aaaa", 0, 267);
    EXPECT_IDS(t, "aaaaa", 0, 267, 'a');
    /* A merge whose left side is itself a merge: E2 82 first (rank 10),
     * then (E2 82)+AC (rank 9) -> one token for "€". */
    EXPECT_IDS(t, "\xE2\x82\xAC", 0, 270);
    tsr_tokenizer_free(t);
}

static void test_empty(void) {
    tsr_tokenizer_t *t = make_tok(NULL, 0);
    int32_t *ids = NULL;
    size_t n = 7;
    CHECK_OK(tsr_tokenizer_encode(t, "", 0, 1, &ids, &n));
    CHECK(ids != NULL && n == 0);
    free(ids);
    CHECK_OK(tsr_tokenizer_encode(t, NULL, 0, 1, &ids, &n));
    CHECK(n == 0);
    free(ids);
    /* NUL is an ordinary character. */
    CHECK_OK(tsr_tokenizer_encode(t, "a\0b", 3, 0, &ids, &n));
    CHECK(n == 3 && ids[0] == 'a' && ids[1] == 0 && ids[2] == 'b');
    free(ids);
    tsr_tokenizer_free(t);
}

static void test_special(void) {
    tsr_tokenizer_t *t = make_tok(NULL, 0);
    /* Parsed: control tokens become ids; leftmost-longest wins. */
    EXPECT_IDS(t, "<|im_start|>hello<|im_end|>", TSR_TOK_PARSE_SPECIAL, ID_IM_START, 264,
               ID_IM_END);
    EXPECT_IDS(t, "<|im_start|>xhello", TSR_TOK_PARSE_SPECIAL, ID_LONG, 264);
    EXPECT_IDS(t, "<<|im_end|>>", TSR_TOK_PARSE_SPECIAL, '<', ID_IM_END, '>');
    EXPECT_IDS(t, "<|im_start", TSR_TOK_PARSE_SPECIAL, '<', '|', 'i', 'm', '_', 's', 't', 'a', 'r',
               't');
    /* Not parsed: plain text ... */
    EXPECT_IDS(t, "<|eot|>", 0, '<', '|', 'e', 'o', 't', '|', '>');
    /* ... but user-defined tokens are always matched. */
    EXPECT_IDS(t, "a<tool>b", 0, 'a', ID_TOOL, 'b');
    EXPECT_IDS(t, "a<tool>b", TSR_TOK_PARSE_SPECIAL, 'a', ID_TOOL, 'b');
    /* ADD_SPECIAL prepends BOS (add_bos is set in this spec). */
    EXPECT_IDS(t, "hello", TSR_TOK_ADD_SPECIAL, ID_IM_START, 264);

    /* Decoding: control tokens as text, or skipped. */
    int32_t ids[] = {ID_IM_START, 264, ID_TOOL, ID_IM_END};
    char *s = NULL;
    size_t n = 0;
    CHECK_OK(tsr_tokenizer_decode(t, ids, 4, 0, &s, &n));
    CHECK(strcmp(s, "<|im_start|>hello<tool><|im_end|>") == 0 && n == strlen(s));
    free(s);
    CHECK_OK(tsr_tokenizer_decode(t, ids, 4, TSR_DETOK_SKIP_SPECIAL, &s, NULL));
    CHECK(strcmp(s, "hello<tool>") == 0);
    free(s);
    int32_t bad[] = {1, 99999};
    CHECK(tsr_tokenizer_decode(t, bad, 2, 0, &s, &n) == TSR_ERR_RANGE && s == NULL);
    CHECK(strstr(tsr_error_msg(), "99999") != NULL);

    /* Accessors. */
    CHECK(tsr_tokenizer_bos(t) == ID_IM_START && tsr_tokenizer_eos(t) == ID_IM_END);
    CHECK(tsr_tokenizer_add_bos(t) == 1);
    CHECK(tsr_tokenizer_is_eog(t, ID_IM_END)); /* eos, and by name */
    CHECK(!tsr_tokenizer_is_eog(t, ID_IM_START) && !tsr_tokenizer_is_eog(t, -1) &&
          !tsr_tokenizer_is_eog(t, 1 << 20));
    CHECK(tsr_tokenizer_eot(t) == -1); /* from_spec does no guessing */
    CHECK(tsr_tokenizer_find_special(t, "<|im_end|>") == ID_IM_END);
    CHECK(tsr_tokenizer_find_special(t, "<tool>") == ID_TOOL);
    CHECK(tsr_tokenizer_find_special(t, "hello") == -1); /* normal token */
    CHECK(tsr_tokenizer_find_special(t, "<nope>") == -1);
    CHECK(tsr_tokenizer_find_token(t, "hello", 5) == 264);
    CHECK(strcmp(tsr_tokenizer_token_text(t, 269), "\xC4\xA0wor") == 0); /* "Ġwor" */
    CHECK(tsr_tokenizer_token_text(t, -3) == NULL);
    CHECK(tsr_tokenizer_token_type(t, ID_TOOL) == TSR_TOKEN_TYPE_USER_DEFINED);
    size_t bn = 0;
    const char *b = tsr_tokenizer_token_bytes(t, 269, &bn);
    CHECK(bn == 4 && memcmp(b, " wor", 4) == 0);
    CHECK(tsr_tokenizer_chat_template(t) != NULL);
    tsr_tokenizer_free(t);
}

static void test_stream(void) {
    tsr_tokenizer_t *t = make_tok(NULL, 0);
    tsr_detok_stream ds;
    tsr_detok_stream_init(&ds, t, 0);
    const char *txt;
    size_t n;
    /* "€" = E2 82 AC split over three byte tokens. */
    CHECK_OK(tsr_detok_stream_push(&ds, 0xE2, &txt, &n));
    CHECK(n == 0 && txt[0] == '\0');
    CHECK_OK(tsr_detok_stream_push(&ds, 0x82, &txt, &n));
    CHECK(n == 0);
    CHECK_OK(tsr_detok_stream_push(&ds, 0xAC, &txt, &n));
    CHECK(n == 3 && memcmp(txt, "\xE2\x82\xAC", 3) == 0);
    /* Text then a lead byte: the text comes out, the lead byte waits. */
    CHECK_OK(tsr_detok_stream_push(&ds, 264, &txt, &n));
    CHECK(n == 5 && memcmp(txt, "hello", 5) == 0);
    CHECK_OK(tsr_detok_stream_push(&ds, 271, &txt, &n)); /* E2 82 */
    CHECK(n == 0);
    CHECK(tsr_detok_stream_push(&ds, -1, &txt, &n) == TSR_ERR_RANGE); /* state kept */
    CHECK_OK(tsr_detok_stream_push(&ds, 0xAC, &txt, &n));
    CHECK(n == 3 && memcmp(txt, "\xE2\x82\xAC", 3) == 0);
    /* A broken sequence becomes U+FFFD as soon as it is known to be broken. */
    CHECK_OK(tsr_detok_stream_push(&ds, 0xE2, &txt, &n));
    CHECK(n == 0);
    CHECK_OK(tsr_detok_stream_push(&ds, 'a', &txt, &n));
    CHECK(n == 4 && memcmp(txt,
                           "\xEF\xBF\xBD"
                           "a",
                           4) == 0);
    CHECK_OK(tsr_detok_stream_push(&ds, 0xFF, &txt, &n));
    CHECK(n == 3 && memcmp(txt, "\xEF\xBF\xBD", 3) == 0);
    /* Control tokens: text, or nothing with SKIP_SPECIAL. */
    CHECK_OK(tsr_detok_stream_push(&ds, ID_IM_END, &txt, &n));
    CHECK(strcmp(txt, "<|im_end|>") == 0);
    /* Flush: an incomplete tail becomes one U+FFFD. */
    CHECK_OK(tsr_detok_stream_push(&ds, 0xF0, &txt, &n));
    CHECK(n == 0);
    CHECK_OK(tsr_detok_stream_push(&ds, 0x9F, &txt, &n));
    CHECK(n == 0);
    CHECK_OK(tsr_detok_stream_flush(&ds, &txt, &n));
    CHECK(n == 3 && memcmp(txt, "\xEF\xBF\xBD", 3) == 0);
    CHECK_OK(tsr_detok_stream_flush(&ds, &txt, &n));
    CHECK(n == 0);
    tsr_detok_stream_free(&ds);
    tsr_detok_stream_free(&ds); /* twice is fine */
    tsr_detok_stream_free(NULL);

    tsr_detok_stream_init(&ds, t, TSR_DETOK_SKIP_SPECIAL);
    CHECK_OK(tsr_detok_stream_push(&ds, ID_IM_START, &txt, &n));
    CHECK(n == 0);
    CHECK_OK(tsr_detok_stream_push(&ds, ID_TOOL, &txt, &n)); /* user-defined: kept */
    CHECK(strcmp(txt, "<tool>") == 0);
    tsr_detok_stream_free(&ds);

    /* Full decode repairs the same way (one U+FFFD per maximal bad part). */
    int32_t ids[] = {0xE2, 0x82, 'x', 0xC0, 0xAF, 0xED, 0xA0, 0x80};
    char *s = NULL;
    size_t sl = 0;
    CHECK_OK(tsr_tokenizer_decode(t, ids, 8, 0, &s, &sl));
    CHECK(strcmp(s, "\xEF\xBF\xBD"
                    "x"
                    "\xEF\xBF\xBD\xEF\xBF\xBD"
                    "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD") == 0);
    free(s);
    tsr_tokenizer_free(t);
}

static void expect_invalid(const tsr_tokenizer_t *t, const char *s, size_t len, size_t off) {
    int32_t *ids = (int32_t *)1;
    size_t n = 5;
    CHECK(tsr_tokenizer_encode(t, s, len, 1, &ids, &n) == TSR_ERR_INVALID);
    CHECK(ids == NULL && n == 0);
    char want[64];
    snprintf(want, sizeof want, "offset %zu", off);
    CHECK(strstr(tsr_error_msg(), want) != NULL);
}

static void test_invalid_utf8(void) {
    tsr_tokenizer_t *t = make_tok(NULL, 0);
    expect_invalid(t,
                   "ab\xFF"
                   "cd",
                   5, 2);
    expect_invalid(t, "\xC0\xAF", 2, 0);           /* overlong '/' */
    expect_invalid(t, "ok \xED\xA0\x80", 6, 3);    /* surrogate */
    expect_invalid(t, "x\xF4\x90\x80\x80", 5, 1);  /* > U+10FFFF */
    expect_invalid(t, "abc\xE2\x82", 5, 3);        /* truncated at the end */
    expect_invalid(t, "\x80", 1, 0);               /* lone continuation */
    expect_invalid(t, "hello \xE2\x28\xA1", 9, 6); /* bad second byte */
    tsr_tokenizer_free(t);
}

static void test_split_behaviours(void) {
    /* A custom pipeline: split on '-' with each behaviour, then GPT-2. */
    static const struct {
        tsr_split_behavior b;
        int invert;
        int32_t want[8];
        size_t n;
    } cases[] = {
        {TSR_SPLIT_ISOLATED, 0, {264, '-', 264}, 3},
        {TSR_SPLIT_REMOVED, 0, {264, 264}, 2},
        {TSR_SPLIT_MERGED_WITH_PREVIOUS, 0, {264, '-', 264}, 3},
        {TSR_SPLIT_MERGED_WITH_NEXT, 0, {264, '-', 264}, 3},
        {TSR_SPLIT_CONTIGUOUS, 0, {264, '-', 264}, 3},
        {TSR_SPLIT_REMOVED, 1, {'-'}, 1}, /* inverted: the words are removed */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tsr_pre_stage st[1] = {{TSR_PRE_SPLIT, "-", cases[i].b, cases[i].invert}};
        tsr_tokenizer_t *t = make_tok(st, 1);
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(tsr_tokenizer_encode(t, "hello-hello", 11, 0, &ids, &n));
        CHECK(n == cases[i].n && memcmp(ids, cases[i].want, n * sizeof *ids) == 0);
        free(ids);
        tsr_tokenizer_free(t);
    }
    /* Prefix space: "world" -> " world" -> " wor" l d. */
    tsr_pre_stage ps[2] = {{TSR_PRE_PREFIX_SPACE, NULL, TSR_SPLIT_ISOLATED, 0},
                           {TSR_PRE_SPLIT, TSR_PRE_REGEX_GPT2, TSR_SPLIT_ISOLATED, 0}};
    tsr_tokenizer_t *t = make_tok(ps, 2);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(tsr_tokenizer_encode(t, "world", 5, 0, &ids, &n));
    CHECK(n == 3 && ids[0] == 269 && ids[1] == 'l' && ids[2] == 'd');
    free(ids);
    tsr_tokenizer_free(t);
    /* A regex that does not compile is refused with PCRE2's reason. */
    tsr_pre_stage badst[1] = {{TSR_PRE_SPLIT, "(unclosed", TSR_SPLIT_ISOLATED, 0}};
    static tiny_vocab v;
    make_vocab(&v);
    tsr_tokenizer_spec sp = TSR_TOKENIZER_SPEC_INIT;
    sp.n_tokens = v.n;
    sp.tokens = v.refs;
    sp.pre_stages = badst;
    sp.n_pre_stages = 1;
    t = (tsr_tokenizer_t *)1;
    CHECK(tsr_tokenizer_from_spec(&sp, &t) == TSR_ERR_INVALID && t == NULL);
    CHECK(strstr(tsr_error_msg(), "does not compile") != NULL);
    /* A special id outside the vocab. */
    sp.n_pre_stages = 0;
    sp.eos_id = 5000;
    CHECK(tsr_tokenizer_from_spec(&sp, &t) == TSR_ERR_FORMAT && t == NULL);
    CHECK(strstr(tsr_error_msg(), "eos") != NULL);
}

static void test_long_input(void) {
    tsr_tokenizer_t *t = make_tok(NULL, 0);
    size_t len = 200000;
    char *s = malloc(len);
    CHECK(s != NULL);
    memset(s, 'a', len); /* one piece of 200k bytes: the heap path */
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(tsr_tokenizer_encode(t, s, len, 0, &ids, &n));
    CHECK(n == len / 4);
    for (size_t i = 0; i < n; i++)
        CHECK(ids[i] == 267);
    free(ids);
    memset(s, ' ', len); /* whitespace run against \s+(?!\S) */
    CHECK_OK(tsr_tokenizer_encode(t, s, len, 0, &ids, &n));
    CHECK(n == len);
    free(ids);
    free(s);
    tsr_tokenizer_free(t);
}

/* ---- tokenizer.json ------------------------------------------------------ */

/* Writes `content` to `name` in the test's directory; returns the path. */
static const char *write_tmp(const char *name, const char *content) {
    const char *path = tu_tmp_path(name);
    tu_write_text(path, content);
    return path;
}

/* A small valid tokenizer.json; MERGES is spliced in. Vocab: the 26 lower
 * case letters ids 0..25, "Ġ" 26, merges "h e" -> "he" 27, "l l" -> "ll"
 * 28, "he ll" -> "hell" 29, "hell o" -> "hello" 30, "Ġ w" -> "Ġw" 31,
 * added tokens <|endoftext|> 32 (special), <extra> 33 (not special, rstrip). */
static char *tiny_json(const char *merges, const char *pre, const char *model_extra) {
    static char buf[8192];
    char vocab[2048];
    size_t k = 0;
    k += (size_t)snprintf(vocab + k, sizeof vocab - k, "{");
    for (int i = 0; i < 26; i++)
        k += (size_t)snprintf(vocab + k, sizeof vocab - k, "\"%c\": %d, ", 'a' + i, i);
    snprintf(vocab + k, sizeof vocab - k,
             "\"\\u0120\": 26, \"he\": 27, \"ll\": 28, \"hell\": 29, \"hello\": 30, "
             "\"\\u0120w\": 31}");
    snprintf(buf, sizeof buf,
             "{\"version\": \"1.0\", \"added_tokens\": ["
             "{\"id\": 32, \"content\": \"<|endoftext|>\", \"special\": true, \"lstrip\": false,"
             " \"rstrip\": false, \"normalized\": false, \"single_word\": false},"
             "{\"id\": 33, \"content\": \"<extra>\", \"special\": false, \"rstrip\": true}],"
             " \"normalizer\": null, \"pre_tokenizer\": %s,"
             " \"post_processor\": null, \"decoder\": {\"type\": \"ByteLevel\"},"
             " \"model\": {\"type\": \"BPE\", %s \"vocab\": %s, \"merges\": %s}}",
             pre, model_extra, vocab, merges);
    return buf;
}

#define PRE_BYTELEVEL "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}"

static void expect_json_ids(const char *json_text, const char *cfg_text, const char *text,
                            const int32_t *want, size_t n_want) {
    const char *p = write_tmp("tokenizer.json", json_text);
    char path[512];
    snprintf(path, sizeof path, "%s", p);
    const char *cfg = cfg_text ? write_tmp("tokenizer_config.json", cfg_text) : NULL;
    tsr_tokenizer_t *t = NULL;
    CHECK_OK(tsr_tokenizer_from_json(path, cfg, &t));
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(tsr_tokenizer_encode(t, text, strlen(text), 1, &ids, &n));
    CHECK(n == n_want && memcmp(ids, want, n * sizeof *ids) == 0);
    free(ids);
    tsr_tokenizer_free(t);
}

static void test_json_ok(void) {
    static const int32_t want[] = {30, 31, 'o' - 'a', 'r' - 'a', 'l' - 'a', 'd' - 'a', 32, 33, 27};
    const char *text = "hello world<|endoftext|><extra>   he";
    /* Both merges encodings give the same ids. */
    expect_json_ids(
        tiny_json("[\"h e\", \"l l\", \"he ll\", \"hell o\", \"\\u0120 w\"]", PRE_BYTELEVEL, ""),
        NULL, text, want, 9);
    expect_json_ids(
        tiny_json("[[\"h\", \"e\"], [\"l\", \"l\"], [\"he\", \"ll\"], [\"hell\", \"o\"],"
                  " [\"\\u0120\", \"w\"]]",
                  PRE_BYTELEVEL, ""),
        NULL, text, want, 9);
    /* The regex comes from the file: a Split on spaces that removes them. */
    static const int32_t want2[] = {30, 'w' - 'a', 'o' - 'a', 'r' - 'a', 'l' - 'a', 'd' - 'a'};
    expect_json_ids(tiny_json("[\"h e\", \"l l\", \"he ll\", \"hell o\"]",
                              "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\","
                              " \"pattern\": {\"String\": \" \"}, \"behavior\": \"Removed\","
                              " \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\":"
                              " false, \"use_regex\": false}]}",
                              ""),
                    NULL, "hello world", want2, 6);
    /* Config: bos/eos by text, add_bos, chat_template. */
    const char *p = write_tmp("tokenizer.json",
                              tiny_json("[\"h e\"]", PRE_BYTELEVEL, "\"ignore_merges\": false,"));
    char path[512];
    snprintf(path, sizeof path, "%s", p);
    const char *cfg = write_tmp("tokenizer_config.json",
                                "{\"bos_token\": {\"content\": \"<|endoftext|>\"}, \"eos_token\":"
                                " \"<|endoftext|>\", \"add_bos_token\": true, \"chat_template\":"
                                " \"{{ '<|im_start|>' }}x<|im_end|>\"}");
    tsr_tokenizer_t *t = NULL;
    CHECK_OK(tsr_tokenizer_from_json(path, cfg, &t));
    CHECK(tsr_tokenizer_bos(t) == 32 && tsr_tokenizer_eos(t) == 32 && tsr_tokenizer_add_bos(t));
    CHECK(tsr_tokenizer_is_eog(t, 32));
    CHECK(strstr(tsr_tokenizer_chat_template(t), "<|im_start|>") != NULL);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(tsr_tokenizer_encode_ex(t, "he", 2, TSR_TOK_ADD_SPECIAL, &ids, &n));
    CHECK(n == 2 && ids[0] == 32 && ids[1] == 27);
    free(ids);
    tsr_tokenizer_free(t);
}

static void expect_json_error(const char *json_text, tsr_status want, const char *needle) {
    const char *p = write_tmp("bad.json", json_text);
    tsr_tokenizer_t *t = (tsr_tokenizer_t *)1;
    tsr_status st = tsr_tokenizer_from_json(p, NULL, &t);
    if (st != want || !strstr(tsr_error_msg(), needle))
        fprintf(stderr, "json error case: status %d (want %d), message: %s (want \"%s\")\n",
                (int)st, (int)want, tsr_error_msg(), needle);
    CHECK(st == want && t == NULL);
    CHECK(strstr(tsr_error_msg(), needle) != NULL);
}

static void test_json_errors(void) {
    tsr_tokenizer_t *t = (tsr_tokenizer_t *)1;
    CHECK(tsr_tokenizer_from_json("/nonexistent/tokenizer.json", NULL, &t) == TSR_ERR_IO);
    CHECK(t == NULL && strstr(tsr_error_msg(), "/nonexistent/tokenizer.json") != NULL);
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", TSR_ERR_FORMAT,
                      "not valid JSON");
    expect_json_error("[1, 2]", TSR_ERR_FORMAT, "not an object");
    expect_json_error("{}", TSR_ERR_FORMAT, "model");
    expect_json_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", TSR_ERR_UNSUPPORTED,
                      "Unigram");
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"vocab\": [1]}}", TSR_ERR_FORMAT,
                      "model.vocab");
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}}}", TSR_ERR_FORMAT,
                      "not a token id");
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}}}",
                      TSR_ERR_FORMAT, "not a token id");
    expect_json_error(tiny_json("[\"h e\", 7]", PRE_BYTELEVEL, ""), TSR_ERR_FORMAT,
                      "model.merges[1]");
    expect_json_error(tiny_json("[\"he\"]", PRE_BYTELEVEL, ""), TSR_ERR_FORMAT, "model.merges[0]");
    expect_json_error(tiny_json("[[\"h\"]]", PRE_BYTELEVEL, ""), TSR_ERR_FORMAT, "model.merges[0]");
    /* merges naming tokens outside the vocab: refused, as HF tokenizers does */
    expect_json_error(tiny_json("[\"h e\", \"h 9\"]", PRE_BYTELEVEL, ""), TSR_ERR_FORMAT,
                      "merge 1 (\"h\" + \"9\"): its second token is not in the vocab");
    expect_json_error(tiny_json("[\"q e\"]", PRE_BYTELEVEL, ""), TSR_ERR_FORMAT,
                      "merge 0 (\"q\" + \"e\"): the merged token is not in the vocab");
    expect_json_error(tiny_json("[\"\u00e9 e\"]", PRE_BYTELEVEL, ""), TSR_ERR_FORMAT,
                      "its first token is not in the vocab");
    expect_json_error(tiny_json("[]", "{\"type\": \"Metaspace\"}", ""), TSR_ERR_UNSUPPORTED,
                      "Metaspace");
    expect_json_error(tiny_json("[]",
                                "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"},"
                                " \"behavior\": \"Isolated\"}",
                                ""),
                      TSR_ERR_INVALID, "does not compile");
    expect_json_error(tiny_json("[]",
                                "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"x\"},"
                                " \"behavior\": \"Sideways\"}",
                                ""),
                      TSR_ERR_UNSUPPORTED, "Sideways");
    expect_json_error(tiny_json("[]", "{\"type\": \"ByteLevel\", \"use_regex\": \"yes\"}", ""),
                      TSR_ERR_FORMAT, "use_regex");
    expect_json_error(tiny_json("[]", PRE_BYTELEVEL, "\"byte_fallback\": true,"),
                      TSR_ERR_UNSUPPORTED, "byte_fallback");
    expect_json_error("{\"added_tokens\": [{\"id\": 1}], \"model\": {\"type\": \"BPE\", "
                      "\"vocab\": {\"a\": 0}}}",
                      TSR_ERR_FORMAT, "added_tokens[0]");
    /* Not byte-level at all (a SentencePiece-style BPE). */
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                      " \"decoder\": {\"type\": \"Metaspace\"}}",
                      TSR_ERR_UNSUPPORTED, "byte-level");
    /* A config naming a token that does not exist. */
    const char *p = write_tmp("tokenizer.json", tiny_json("[]", PRE_BYTELEVEL, ""));
    char path[512];
    snprintf(path, sizeof path, "%s", p);
    const char *cfg = write_tmp("tokenizer_config.json", "{\"eos_token\": \"</nope>\"}");
    CHECK(tsr_tokenizer_from_json(path, cfg, &t) == TSR_ERR_FORMAT && t == NULL);
    CHECK(strstr(tsr_error_msg(), "</nope>") != NULL);
}

/* ---- GGUF metadata (in-memory images) ----------------------------------- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} bytes;

static void b_put(bytes *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        CHECK(b->p != NULL);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void b_u32(bytes *b, uint32_t v) { b_put(b, &v, 4); } /* little-endian host */
static void b_u64(bytes *b, uint64_t v) { b_put(b, &v, 8); }
static void b_str(bytes *b, const char *s) {
    b_u64(b, strlen(s));
    b_put(b, s, strlen(s));
}
static void kv_str(bytes *b, const char *k, const char *v) {
    b_str(b, k);
    b_u32(b, 8);
    b_str(b, v);
}
static void kv_u32(bytes *b, const char *k, uint32_t v) {
    b_str(b, k);
    b_u32(b, 4);
    b_u32(b, v);
}
static void kv_strs(bytes *b, const char *k, const char *const *v, size_t n) {
    b_str(b, k);
    b_u32(b, 9);
    b_u32(b, 8);
    b_u64(b, n);
    for (size_t i = 0; i < n; i++)
        b_str(b, v[i]);
}
static void kv_i32s(bytes *b, const char *k, const int32_t *v, size_t n) {
    b_str(b, k);
    b_u32(b, 9);
    b_u32(b, 5);
    b_u64(b, n);
    b_put(b, v, 4 * n);
}

/* A GGUF v3 image with no tensors and a small byte-level vocab; `model` is
 * tokenizer.ggml.model. */
static bytes gguf_image(const char *model, int with_types) {
    static char tok_store[260][8];
    static const char *toks[260];
    size_t nt = 0;
    for (unsigned b = 0; b < 256; b++) {
        char *w = tok_store[nt];
        tu_put_cp(&w, tu_byte_cp(b));
        *w = '\0';
        toks[nt] = tok_store[nt];
        nt++;
    }
    toks[nt++] = "he";
    toks[nt++] = "<|im_end|>";
    toks[nt++] = "<|eot_id|>";
    int32_t types[260];
    for (size_t i = 0; i < nt; i++)
        types[i] = i >= 257 ? 3 : 1;
    const char *merges[] = {"h e"};
    bytes b = {0};
    b_put(&b, "GGUF", 4);
    b_u32(&b, 3);
    b_u64(&b, 0);                  /* tensors */
    b_u64(&b, with_types ? 7 : 6); /* kvs */
    kv_str(&b, "tokenizer.ggml.model", model);
    kv_str(&b, "tokenizer.ggml.pre", "no-such-pre");
    kv_strs(&b, "tokenizer.ggml.tokens", toks, nt);
    kv_strs(&b, "tokenizer.ggml.merges", merges, 1);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", 257);
    kv_str(&b, "tokenizer.chat_template", "<|im_start|>{{ x }}<|im_end|>");
    if (with_types)
        kv_i32s(&b, "tokenizer.ggml.token_type", types, nt);
    while (b.n % 32)
        b_put(&b, "", 1);
    return b;
}

static void test_gguf(void) {
    bytes img = gguf_image("gpt2", 1);
    tsr_gguf_t *g = NULL;
    tsr_status st = tsr_gguf_open_memory(img.p, img.n, "tiny.gguf", &g);
    if (st != TSR_OK) {
        fprintf(stderr, "note: GGUF reader refused the test image (%s); skipping GGUF checks\n",
                tsr_error_msg());
        free(img.p);
        return;
    }
    tsr_tokenizer_t *t = NULL;
    CHECK_OK(tsr_tokenizer_from_gguf(g, &t)); /* unknown pre: warning, GPT-2 regex */
    tsr_gguf_close(g);                        /* the tokenizer keeps its own copies */
    CHECK(tsr_tokenizer_n_vocab(t) == 259);
    CHECK(tsr_tokenizer_eos(t) == 257 && tsr_tokenizer_bos(t) == -1);
    CHECK(tsr_tokenizer_eot(t) == 258); /* found by name */
    CHECK(tsr_tokenizer_is_eog(t, 257) && tsr_tokenizer_is_eog(t, 258));
    CHECK(!tsr_tokenizer_add_bos(t));
    EXPECT_IDS(t, "hehe<|eot_id|>", TSR_TOK_PARSE_SPECIAL, 256, 256, 258);
    CHECK(strcmp(tsr_tokenizer_chat_template(t), "<|im_start|>{{ x }}<|im_end|>") == 0);
    tsr_tokenizer_free(t);
    free(img.p);

    img = gguf_image("llama", 1);
    CHECK_OK(tsr_gguf_open_memory(img.p, img.n, "spm.gguf", &g));
    t = (tsr_tokenizer_t *)1;
    CHECK(tsr_tokenizer_from_gguf(g, &t) == TSR_ERR_UNSUPPORTED && t == NULL);
    CHECK(strstr(tsr_error_msg(), "\"llama\"") != NULL);
    tsr_gguf_close(g);
    free(img.p);

    img = gguf_image("gpt2", 0); /* no token types: all normal, nothing special */
    CHECK_OK(tsr_gguf_open_memory(img.p, img.n, "notypes.gguf", &g));
    CHECK_OK(tsr_tokenizer_from_gguf(g, &t));
    CHECK(tsr_tokenizer_find_special(t, "<|im_end|>") == -1);
    tsr_tokenizer_free(t);
    tsr_gguf_close(g);
    free(img.p);
}

int main(void) {
    tu_tmpdir_make("tsr_tok_test");
    test_merges();
    test_empty();
    test_special();
    test_stream();
    test_invalid_utf8();
    test_split_behaviours();
    test_long_input();
    test_json_ok();
    test_json_errors();
    test_merge_outside_vocab();
    test_gguf();
    tsr_tokenizer_free(NULL);
    tu_tmpdir_remove();
    printf("test_tokenizer: %d checks passed\n", tu_checks);
    return 0;
}
