/* runtime/tokenizer/tok_json.c - builds a tokenizer from a Hugging Face
 * tokenizer.json (+ optional tokenizer_config.json).
 *
 * What is read: model (type BPE, vocab, merges in either encoding,
 * ignore_merges), added_tokens, normalizer (none or NFC), pre_tokenizer
 * (Sequence / Split / ByteLevel / Digits, regexes taken from the file),
 * decoder (must be byte-level), post_processor (TemplateProcessing: BOS/EOS),
 * and from the config: bos/eos/pad/unk tokens, add_bos_token, add_eos_token,
 * chat_template. What is not: anything that is not byte-level BPE. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json_name.h"
#include "base/log.h"
#include "runtime/tokenizer/tokenizer.h"

/* Refuse ids beyond this: a corrupt file must not make us allocate GBs. */
#define MAX_VOCAB (1u << 24)

typedef struct {
    const char *path;     /* tokenizer.json, for messages */
    const char *cfg_path; /* tokenizer_config.json or NULL */
    json_t *root, *cfg;
    size_t n;
    tsr_strref *tokens;
    int32_t *types;
    uint8_t *attrs;
    tsr_strref *pairs;
    size_t n_merges;
    tsr_pre_stage *stages;
    size_t n_stages, cap_stages;
    char **owned; /* strings we made (escaped patterns) */
    size_t n_owned, cap_owned;
    int has_byte_level;
} jctx;

static tsr_status jerr(const jctx *c, tsr_status s, const char *where, const char *what) {
    return tsr_error_set(s, "%s: %s: %s", c->path, where, what);
}

/* Optional boolean member; dflt when absent or null. */
static tsr_status get_bool(const jctx *c, const json_t *obj, const char *key, const char *where,
                           int dflt, int *out) {
    const json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (!v || json_is_null(v))
        return TSR_OK;
    if (!json_is_boolean(v))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: %s.%s: expected a boolean, got %s", c->path,
                             where, key, tsr_json_type_name(v));
    *out = json_is_true(v);
    return TSR_OK;
}

static tsr_status own(jctx *c, char *s) {
    if (!s)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    if (c->n_owned == c->cap_owned) {
        size_t cap = c->cap_owned ? 2 * c->cap_owned : 8;
        char **p = realloc(c->owned, cap * sizeof *p);
        if (!p) {
            free(s);
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        }
        c->owned = p;
        c->cap_owned = cap;
    }
    c->owned[c->n_owned++] = s;
    return TSR_OK;
}

static tsr_status add_stage(jctx *c, tsr_pre_kind kind, const char *pattern, tsr_split_behavior beh,
                            int invert) {
    if (c->n_stages == c->cap_stages) {
        size_t cap = c->cap_stages ? 2 * c->cap_stages : 4;
        tsr_pre_stage *p = realloc(c->stages, cap * sizeof *p);
        if (!p)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        c->stages = p;
        c->cap_stages = cap;
    }
    tsr_pre_stage *s = &c->stages[c->n_stages++];
    s->kind = kind;
    s->pattern = pattern;
    s->behavior = beh;
    s->invert = invert;
    return TSR_OK;
}

/* A literal string (no NUL) as a PCRE2 pattern: every ASCII
 * non-alphanumeric is escaped (always legal in PCRE2), the rest copied. */
static char *escape_literal(const char *s, size_t n) {
    char *p = malloc(2 * n + 1), *q = p;
    if (!p)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x80 &&
            !((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')))
            *q++ = '\\';
        *q++ = (char)ch;
    }
    *q = '\0';
    return p;
}

static tsr_status parse_pre(jctx *c, const json_t *p, const char *where, int depth) {
    if (!p || json_is_null(p))
        return TSR_OK;
    if (depth > 8)
        return jerr(c, TSR_ERR_FORMAT, where, "pre-tokenizers nested too deeply");
    if (!json_is_object(p))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: %s: expected an object, got %s", c->path, where,
                             tsr_json_type_name(p));
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type)
        return jerr(c, TSR_ERR_FORMAT, where, "missing \"type\"");
    char sub[256];
    if (strcmp(type, "Sequence") == 0) {
        const json_t *arr = json_object_get(p, "pretokenizers");
        if (!json_is_array(arr))
            return jerr(c, TSR_ERR_FORMAT, where, "Sequence without a \"pretokenizers\" array");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", where, i);
            TSR_TRY(parse_pre(c, json_array_get(arr, i), sub, depth + 1));
        }
        return TSR_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        int prefix, use_regex;
        TSR_TRY(get_bool(c, p, "add_prefix_space", where, 1, &prefix));
        TSR_TRY(get_bool(c, p, "use_regex", where, 1, &use_regex));
        c->has_byte_level = 1;
        if (prefix)
            TSR_TRY(add_stage(c, TSR_PRE_PREFIX_SPACE, NULL, TSR_SPLIT_ISOLATED, 0));
        if (use_regex)
            TSR_TRY(add_stage(c, TSR_PRE_SPLIT, TSR_PRE_REGEX_GPT2, TSR_SPLIT_ISOLATED, 0));
        return TSR_OK;
    }
    if (strcmp(type, "Digits") == 0) {
        int indiv;
        TSR_TRY(get_bool(c, p, "individual_digits", where, 0, &indiv));
        return add_stage(c, TSR_PRE_SPLIT, indiv ? "\\p{N}" : "\\p{N}+", TSR_SPLIT_ISOLATED, 0);
    }
    if (strcmp(type, "Split") == 0) {
        const json_t *pat = json_object_get(p, "pattern");
        const json_t *rx = json_object_get(pat, "Regex");
        const json_t *lit = json_object_get(pat, "String");
        const char *pattern;
        if (json_is_string(rx)) {
            if (strlen(json_string_value(rx)) != json_string_length(rx))
                return jerr(c, TSR_ERR_FORMAT, where, "Split regex contains a NUL");
            pattern = json_string_value(rx);
        } else if (json_is_string(lit)) {
            size_t n = json_string_length(lit);
            if (memchr(json_string_value(lit), 0, n))
                return jerr(c, TSR_ERR_UNSUPPORTED, where, "Split string contains a NUL");
            char *e = escape_literal(json_string_value(lit), n);
            TSR_TRY(own(c, e));
            pattern = e;
        } else {
            return jerr(c, TSR_ERR_FORMAT, where,
                        "Split needs \"pattern\": {\"Regex\": ...} or {\"String\": ...}");
        }
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        static const struct {
            const char *name;
            tsr_split_behavior b;
        } behs[] = {{"Isolated", TSR_SPLIT_ISOLATED},
                    {"Removed", TSR_SPLIT_REMOVED},
                    {"MergedWithPrevious", TSR_SPLIT_MERGED_WITH_PREVIOUS},
                    {"MergedWithNext", TSR_SPLIT_MERGED_WITH_NEXT},
                    {"Contiguous", TSR_SPLIT_CONTIGUOUS}};
        int found = -1;
        for (size_t i = 0; beh && i < sizeof behs / sizeof behs[0]; i++)
            if (strcmp(beh, behs[i].name) == 0)
                found = (int)i;
        if (found < 0)
            return tsr_error_set(TSR_ERR_UNSUPPORTED,
                                 "%s: %s: Split behavior \"%s\" is not "
                                 "supported",
                                 c->path, where, beh ? beh : "(missing)");
        int invert;
        TSR_TRY(get_bool(c, p, "invert", where, 0, &invert));
        return add_stage(c, TSR_PRE_SPLIT, pattern, behs[found].b, invert);
    }
    return tsr_error_set(TSR_ERR_UNSUPPORTED,
                         "%s: %s: pre-tokenizer \"%s\" is not supported (byte-level BPE only: "
                         "Sequence, Split, ByteLevel, Digits)",
                         c->path, where, type);
}

static tsr_status check_normalizer(const jctx *c, const json_t *n, const char *where) {
    if (!n || json_is_null(n))
        return TSR_OK;
    const char *type = json_string_value(json_object_get(n, "type"));
    if (!type)
        return jerr(c, TSR_ERR_FORMAT, where, "missing \"type\"");
    if (strcmp(type, "Sequence") == 0) {
        const json_t *arr = json_object_get(n, "normalizers");
        char sub[128];
        for (size_t i = 0; i < json_array_size(arr); i++) {
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", where, i);
            TSR_TRY(check_normalizer(c, json_array_get(arr, i), sub));
        }
        return TSR_OK;
    }
    if (strcmp(type, "NFC") == 0) {
        TSR_LOG_W("%s: the NFC normalizer is not applied; text that is not already in NFC may "
                  "tokenize differently from Hugging Face",
                  c->path);
        return TSR_OK;
    }
    return tsr_error_set(TSR_ERR_UNSUPPORTED, "%s: %s: normalizer \"%s\" is not supported", c->path,
                         where, type);
}

static int decoder_is_byte_level(const json_t *d) {
    const char *type = json_string_value(json_object_get(d, "type"));
    if (!type)
        return 0;
    if (strcmp(type, "ByteLevel") == 0)
        return 1;
    if (strcmp(type, "Sequence") == 0) {
        const json_t *arr = json_object_get(d, "decoders");
        for (size_t i = 0; i < json_array_size(arr); i++)
            if (decoder_is_byte_level(json_array_get(arr, i)))
                return 1;
    }
    return 0;
}

static int32_t id_of(const jctx *c, const char *s, size_t n) {
    for (size_t i = c->n; i-- > 0;)
        if (c->tokens[i].len == n && n && memcmp(c->tokens[i].ptr, s, n) == 0)
            return (int32_t)i;
    return -1;
}

/* A token named in tokenizer_config.json: "text" or {"content": "text"}. */
static tsr_status config_token(const jctx *c, const char *key, int32_t *id) {
    const json_t *v = json_object_get(c->cfg, key);
    if (!v || json_is_null(v))
        return TSR_OK;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: %s: expected a string or {\"content\": ...}",
                             c->cfg_path, key);
    int32_t x = id_of(c, json_string_value(v), json_string_length(v));
    if (x < 0)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: %s \"%s\" is not in the vocab", c->cfg_path, key,
                             json_string_value(v));
    *id = x;
    return TSR_OK;
}

/* BOS/EOS from a TemplateProcessing post-processor (possibly inside a
 * Sequence): a SpecialToken first in "single" is BOS, last is EOS. */
static void template_specials(const jctx *c, const json_t *pp, int32_t *bos, int32_t *eos,
                              int depth) {
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type || depth > 4)
        return;
    if (strcmp(type, "Sequence") == 0) {
        const json_t *arr = json_object_get(pp, "processors");
        for (size_t i = 0; i < json_array_size(arr); i++)
            template_specials(c, json_array_get(arr, i), bos, eos, depth + 1);
        return;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return;
    const json_t *single = json_object_get(pp, "single");
    size_t n = json_array_size(single);
    for (int end = 0; end < 2 && n > 0; end++) {
        const json_t *item = json_array_get(single, end ? n - 1 : 0);
        const json_t *name = json_object_get(json_object_get(item, "SpecialToken"), "id");
        if (!json_is_string(name))
            continue;
        const json_t *ids = json_object_get(
            json_object_get(json_object_get(pp, "special_tokens"), json_string_value(name)), "ids");
        int32_t id = -1;
        if (json_is_integer(json_array_get(ids, 0)) && json_array_size(ids) == 1)
            id = (int32_t)json_integer_value(json_array_get(ids, 0));
        else
            id = id_of(c, json_string_value(name), json_string_length(name));
        if (id >= 0 && (size_t)id < c->n)
            *(end ? eos : bos) = id;
    }
}

static int32_t first_control_named(const jctx *c, const char *const *names) {
    for (const char *const *nm = names; *nm; nm++) {
        int32_t id = id_of(c, *nm, strlen(*nm));
        if (id >= 0 && c->types[id] == TSR_TOKEN_TYPE_CONTROL)
            return id;
    }
    return -1;
}

static tsr_status load_json(const char *path, json_t **out) {
    json_error_t e;
    FILE *f = fopen(path, "rb");
    if (!f)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fclose(f);
    *out = json_load_file(path, JSON_ALLOW_NUL, &e);
    if (!*out)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", path,
                             e.text, e.line, e.column);
    if (!json_is_object(*out))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: the top level is %s, not an object", path,
                             tsr_json_type_name(*out));
    return TSR_OK;
}

static tsr_status parse_vocab(jctx *c, const json_t *model, const json_t *added) {
    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab))
        return jerr(c, TSR_ERR_FORMAT, "model.vocab", "missing or not an object");
    /* Size = 1 + the largest id in vocab and added_tokens. */
    size_t n = 0;
    const char *key;
    size_t klen;
    json_t *val;
    json_object_keylen_foreach((json_t *)vocab, key, klen, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= (json_int_t)MAX_VOCAB)
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: model.vocab[\"%.*s\"]: not a token id (0..%u)", c->path,
                                 (int)(klen > 60 ? 60 : klen), key, MAX_VOCAB - 1);
        if ((size_t)json_integer_value(val) + 1 > n)
            n = (size_t)json_integer_value(val) + 1;
    }
    if (added && !json_is_null(added) && !json_is_array(added))
        return jerr(c, TSR_ERR_FORMAT, "added_tokens", "not an array");
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        const json_t *id = json_object_get(a, "id");
        const json_t *content = json_object_get(a, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= (json_int_t)MAX_VOCAB || !json_is_string(content))
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: added_tokens[%zu]: needs an integer \"id\" "
                                 "(0..%u) and a string \"content\"",
                                 c->path, i, MAX_VOCAB - 1);
        if ((size_t)json_integer_value(id) + 1 > n)
            n = (size_t)json_integer_value(id) + 1;
    }
    if (n == 0)
        return jerr(c, TSR_ERR_FORMAT, "model.vocab", "empty");
    c->n = n;
    c->tokens = calloc(n, sizeof *c->tokens);
    c->types = malloc(n * sizeof *c->types);
    c->attrs = calloc(n, 1);
    if (!c->tokens || !c->types || !c->attrs)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory for %zu tokens", n);
    for (size_t i = 0; i < n; i++)
        c->types[i] = TSR_TOKEN_TYPE_UNUSED; /* holes */
    json_object_keylen_foreach((json_t *)vocab, key, klen, val) {
        size_t id = (size_t)json_integer_value(val);
        c->tokens[id].ptr = key;
        c->tokens[id].len = klen;
        c->types[id] = TSR_TOKEN_TYPE_NORMAL;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        size_t id = (size_t)json_integer_value(json_object_get(a, "id"));
        const json_t *content = json_object_get(a, "content");
        int special, lstrip, rstrip;
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        TSR_TRY(get_bool(c, a, "special", where, 0, &special));
        TSR_TRY(get_bool(c, a, "lstrip", where, 0, &lstrip));
        TSR_TRY(get_bool(c, a, "rstrip", where, 0, &rstrip));
        c->tokens[id].ptr = json_string_value(content);
        c->tokens[id].len = json_string_length(content);
        c->types[id] = special ? TSR_TOKEN_TYPE_CONTROL : TSR_TOKEN_TYPE_USER_DEFINED;
        c->attrs[id] =
            (uint8_t)((lstrip ? TSR_TOKEN_ATTR_LSTRIP : 0) | (rstrip ? TSR_TOKEN_ATTR_RSTRIP : 0));
    }
    return TSR_OK;
}

static tsr_status parse_merges(jctx *c, const json_t *model) {
    const json_t *merges = json_object_get(model, "merges");
    if (!merges || json_is_null(merges))
        return TSR_OK;
    if (!json_is_array(merges))
        return jerr(c, TSR_ERR_FORMAT, "model.merges", "not an array");
    size_t n = json_array_size(merges);
    c->pairs = malloc((n ? 2 * n : 1) * sizeof *c->pairs);
    if (!c->pairs)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory for %zu merges", n);
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(merges, i);
        tsr_strref *a = &c->pairs[2 * i], *b = &c->pairs[2 * i + 1];
        if (json_is_string(m)) { /* old encoding: "a b" */
            const char *s = json_string_value(m);
            size_t len = json_string_length(m);
            const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
            if (!sp)
                return tsr_error_set(TSR_ERR_FORMAT,
                                     "%s: model.merges[%zu]: \"%.60s\" is not "
                                     "\"a b\"",
                                     c->path, i, s);
            a->ptr = s;
            a->len = (size_t)(sp - s);
            b->ptr = sp + 1;
            b->len = len - a->len - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a->ptr = json_string_value(json_array_get(m, 0));
            a->len = json_string_length(json_array_get(m, 0));
            b->ptr = json_string_value(json_array_get(m, 1));
            b->len = json_string_length(json_array_get(m, 1));
        } else {
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: model.merges[%zu]: expected \"a b\" or "
                                 "[\"a\", \"b\"], got %s",
                                 c->path, i, tsr_json_type_name(m));
        }
    }
    c->n_merges = n;
    return TSR_OK;
}

static tsr_status from_json(jctx *c, tsr_tokenizer_t **out) {
    TSR_TRY(load_json(c->path, &c->root));
    if (c->cfg_path)
        TSR_TRY(load_json(c->cfg_path, &c->cfg));

    const json_t *model = json_object_get(c->root, "model");
    if (!json_is_object(model))
        return jerr(c, TSR_ERR_FORMAT, "model", "missing or not an object");
    const json_t *mtype = json_object_get(model, "type");
    if (mtype && !(json_is_string(mtype) && strcmp(json_string_value(mtype), "BPE") == 0))
        return tsr_error_set(
            TSR_ERR_UNSUPPORTED, "%s: model.type is %s%s%s; only byte-level \"BPE\" is supported",
            c->path, json_is_string(mtype) ? "\"" : "",
            json_is_string(mtype) ? json_string_value(mtype) : tsr_json_type_name(mtype),
            json_is_string(mtype) ? "\"" : "");
    int byte_fallback;
    TSR_TRY(get_bool(c, model, "byte_fallback", "model", 0, &byte_fallback));
    if (byte_fallback)
        return jerr(c, TSR_ERR_UNSUPPORTED, "model.byte_fallback",
                    "true (a SentencePiece-style BPE, not byte-level)");
    const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const json_t *v = json_object_get(model, affixes[k]);
        if (json_is_string(v) && json_string_length(v) > 0)
            return tsr_error_set(TSR_ERR_UNSUPPORTED, "%s: model.%s is set; not supported", c->path,
                                 affixes[k]);
    }

    TSR_TRY(parse_vocab(c, model, json_object_get(c->root, "added_tokens")));
    TSR_TRY(parse_merges(c, model));
    TSR_TRY(check_normalizer(c, json_object_get(c->root, "normalizer"), "normalizer"));
    TSR_TRY(parse_pre(c, json_object_get(c->root, "pre_tokenizer"), "pre_tokenizer", 0));
    if (!c->has_byte_level && !decoder_is_byte_level(json_object_get(c->root, "decoder")))
        return tsr_error_set(
            TSR_ERR_UNSUPPORTED,
            "%s: not a byte-level BPE tokenizer (neither pre_tokenizer nor decoder "
            "is ByteLevel)",
            c->path);

    tsr_tokenizer_spec sp = TSR_TOKENIZER_SPEC_INIT;
    sp.n_tokens = c->n;
    sp.tokens = c->tokens;
    sp.token_types = c->types;
    sp.token_attrs = c->attrs;
    sp.n_merges = c->n_merges;
    sp.merge_pairs = c->pairs;
    sp.strict_merges = 1; /* HF tokenizers refuses merges outside the vocab */
    /* No stages at all means "no pre-tokenization"; express it as a split
     * that never matches rather than falling back to a named default. */
    if (c->n_stages == 0)
        TSR_TRY(add_stage(c, TSR_PRE_SPLIT, "(*FAIL)", TSR_SPLIT_ISOLATED, 0));
    sp.n_pre_stages = c->n_stages;
    sp.pre_stages = c->stages;
    TSR_TRY(get_bool(c, model, "ignore_merges", "model", 0, &sp.ignore_merges));

    int32_t tp_bos = -1, tp_eos = -1;
    template_specials(c, json_object_get(c->root, "post_processor"), &tp_bos, &tp_eos, 0);
    sp.bos_id = tp_bos;
    sp.eos_id = tp_eos;
    sp.add_bos = tp_bos >= 0;
    sp.add_eos = tp_eos >= 0;
    if (c->cfg) {
        TSR_TRY(config_token(c, "bos_token", &sp.bos_id));
        TSR_TRY(config_token(c, "eos_token", &sp.eos_id));
        TSR_TRY(config_token(c, "pad_token", &sp.pad_id));
        TSR_TRY(config_token(c, "unk_token", &sp.unk_id));
        const json_t *ab = json_object_get(c->cfg, "add_bos_token");
        const json_t *ae = json_object_get(c->cfg, "add_eos_token");
        if (json_is_boolean(ab))
            sp.add_bos = json_is_true(ab);
        if (json_is_boolean(ae))
            sp.add_eos = json_is_true(ae);
        const json_t *ct = json_object_get(c->cfg, "chat_template");
        if (json_is_array(ct)) { /* [{"name": ..., "template": ...}]: "default" or the first */
            const json_t *pick = NULL;
            for (size_t i = 0; i < json_array_size(ct); i++) {
                const json_t *e = json_array_get(ct, i);
                const char *nm = json_string_value(json_object_get(e, "name"));
                if (!pick || (nm && strcmp(nm, "default") == 0))
                    pick = e;
            }
            ct = json_object_get(pick, "template");
        }
        if (ct && !json_is_null(ct) && !json_is_string(ct))
            return tsr_error_set(TSR_ERR_FORMAT, "%s: chat_template: expected a string, got %s",
                                 c->cfg_path, tsr_json_type_name(ct));
        sp.chat_template = json_string_value(ct);
    }
    if (sp.eos_id < 0) {
        static const char *const eos_names[] = {"<|endoftext|>", "<|end_of_text|>", "</s>", NULL};
        sp.eos_id = first_control_named(c, eos_names);
    }
    static const char *const eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                            NULL};
    static const char *const eom_names[] = {"<|eom_id|>", NULL};
    sp.eot_id = first_control_named(c, eot_names);
    sp.eom_id = first_control_named(c, eom_names);
    return tsr_tokenizer_from_spec(&sp, out);
}

tsr_status tsr_tokenizer_from_json(const char *tokenizer_json_path,
                                   const char *tokenizer_config_json_path, tsr_tokenizer_t **out) {
    *out = NULL;
    if (!tokenizer_json_path)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: NULL tokenizer.json path");
    jctx c;
    memset(&c, 0, sizeof c);
    c.path = tokenizer_json_path;
    c.cfg_path = tokenizer_config_json_path;
    tsr_status st = from_json(&c, out);
    json_decref(c.root);
    json_decref(c.cfg);
    free(c.tokens);
    free(c.types);
    free(c.attrs);
    free(c.pairs);
    free(c.stages);
    for (size_t i = 0; i < c.n_owned; i++)
        free(c.owned[i]);
    free(c.owned);
    return st;
}
