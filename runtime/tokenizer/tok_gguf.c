/* runtime/tokenizer/tok_gguf.c - builds a tokenizer from GGUF metadata
 * (tokenizer.ggml.* and tokenizer.chat_template), as llama.cpp writes it.
 * What it is not: a GGUF parser (shard/gguf.c is). */
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/tokenizer.h"

/* Optional integer id: -1 when the key is absent. */
static tsr_status opt_id(const tsr_gguf_t *g, const char *key, int32_t *out) {
    *out = -1;
    if (!tsr_gguf_find(g, key))
        return TSR_OK;
    int64_t v;
    TSR_TRY(tsr_gguf_get_i64(g, key, &v));
    if (v < -1 || v > INT32_MAX)
        return tsr_error_set(TSR_ERR_FORMAT, "%s = %lld is not a token id", key, (long long)v);
    *out = (int32_t)v;
    return TSR_OK;
}

static tsr_status opt_bool(const tsr_gguf_t *g, const char *key, int dflt, int *out) {
    *out = dflt;
    if (!tsr_gguf_find(g, key))
        return TSR_OK;
    return tsr_gguf_get_bool(g, key, out);
}

static char *dup_ref(tsr_strref s) {
    char *p = malloc(s.len + 1);
    if (p) {
        memcpy(p, s.ptr, s.len);
        p[s.len] = '\0';
    }
    return p;
}

/* The first control token among `names` present in the vocab, or -1. */
static int32_t find_by_text(const tsr_strref *tokens, const int32_t *types, size_t n,
                            const char *const *names) {
    for (const char *const *nm = names; *nm; nm++)
        for (size_t i = 0; i < n; i++)
            if ((!types || types[i] == TSR_TOKEN_TYPE_CONTROL) && tsr_strref_eq(tokens[i], *nm))
                return (int32_t)i;
    return -1;
}

static tsr_status from_gguf(const tsr_gguf_t *g, tsr_tokenizer_t **out, int32_t **types_out,
                            char **pre_out, char **tmpl_out) {
    tsr_strref model;
    if (!tsr_gguf_find(g, "tokenizer.ggml.model"))
        return tsr_error_set(TSR_ERR_FORMAT, "the file has no tokenizer (tokenizer.ggml.model "
                                             "is missing)");
    TSR_TRY(tsr_gguf_get_str(g, "tokenizer.ggml.model", &model));
    if (!tsr_strref_eq(model, "gpt2"))
        return tsr_error_set(TSR_ERR_UNSUPPORTED,
                             "tokenizer.ggml.model is \"%.*s\"; only \"gpt2\" (byte-level BPE: "
                             "SmolLM2, GPT-2, Llama 3, Qwen2) is supported",
                             (int)(model.len > 64 ? 64 : model.len), model.ptr);

    tsr_tokenizer_spec sp = TSR_TOKENIZER_SPEC_INIT;
    uint64_t n_tok = 0, n_merges = 0;
    TSR_TRY(tsr_gguf_get_str_arr(g, "tokenizer.ggml.tokens", &sp.tokens, &n_tok));
    sp.n_tokens = (size_t)n_tok;

    if (tsr_gguf_find(g, "tokenizer.ggml.token_type")) {
        int64_t *tt = NULL;
        uint64_t n_tt = 0;
        TSR_TRY(tsr_gguf_get_i64_arr(g, "tokenizer.ggml.token_type", &tt, &n_tt));
        if (n_tt != n_tok) {
            free(tt);
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                                 (unsigned long long)n_tt, (unsigned long long)n_tok);
        }
        int32_t *types = malloc((n_tt ? n_tt : 1) * sizeof *types);
        if (!types) {
            free(tt);
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        }
        for (uint64_t i = 0; i < n_tt; i++) {
            if (tt[i] < 0 || tt[i] > TSR_TOKEN_TYPE_BYTE) {
                tsr_status st = tsr_error_set(TSR_ERR_FORMAT,
                                              "tokenizer.ggml.token_type[%llu] = %lld is not a "
                                              "token type",
                                              (unsigned long long)i, (long long)tt[i]);
                free(tt);
                free(types);
                return st;
            }
            types[i] = (int32_t)tt[i];
        }
        free(tt);
        *types_out = types;
        sp.token_types = types;
    }

    if (tsr_gguf_find(g, "tokenizer.ggml.merges")) {
        TSR_TRY(tsr_gguf_get_str_arr(g, "tokenizer.ggml.merges", &sp.merges, &n_merges));
        sp.n_merges = (size_t)n_merges;
    }

    if (tsr_gguf_find(g, "tokenizer.ggml.pre")) {
        tsr_strref pre;
        TSR_TRY(tsr_gguf_get_str(g, "tokenizer.ggml.pre", &pre));
        if (!(*pre_out = dup_ref(pre)))
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        sp.pre_name = *pre_out;
    }
    if (tsr_gguf_find(g, "tokenizer.chat_template")) {
        tsr_strref tm;
        TSR_TRY(tsr_gguf_get_str(g, "tokenizer.chat_template", &tm));
        if (!(*tmpl_out = dup_ref(tm)))
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        sp.chat_template = *tmpl_out;
    }

    TSR_TRY(opt_id(g, "tokenizer.ggml.bos_token_id", &sp.bos_id));
    TSR_TRY(opt_id(g, "tokenizer.ggml.eos_token_id", &sp.eos_id));
    TSR_TRY(opt_id(g, "tokenizer.ggml.eot_token_id", &sp.eot_id));
    TSR_TRY(opt_id(g, "tokenizer.ggml.eom_token_id", &sp.eom_id));
    TSR_TRY(opt_id(g, "tokenizer.ggml.padding_token_id", &sp.pad_id));
    TSR_TRY(opt_id(g, "tokenizer.ggml.unknown_token_id", &sp.unk_id));
    /* Absent: no BOS, as GPT-2-style tokenizers in Hugging Face. */
    TSR_TRY(opt_bool(g, "tokenizer.ggml.add_bos_token", 0, &sp.add_bos));
    TSR_TRY(opt_bool(g, "tokenizer.ggml.add_eos_token", 0, &sp.add_eos));

    if (sp.eot_id < 0) {
        static const char *const eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>",
                                                "<end_of_turn>", NULL};
        sp.eot_id = find_by_text(sp.tokens, sp.token_types, sp.n_tokens, eot_names);
    }
    if (sp.eom_id < 0) {
        static const char *const eom_names[] = {"<|eom_id|>", NULL};
        sp.eom_id = find_by_text(sp.tokens, sp.token_types, sp.n_tokens, eom_names);
    }
    return tsr_tokenizer_from_spec(&sp, out);
}

tsr_status tsr_tokenizer_from_gguf(const tsr_gguf_t *g, tsr_tokenizer_t **out) {
    *out = NULL;
    if (!g)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: NULL GGUF handle");
    int32_t *types = NULL;
    char *pre = NULL, *tmpl = NULL;
    tsr_status st = from_gguf(g, out, &types, &pre, &tmpl);
    free(types);
    free(pre);
    free(tmpl);
    if (st != TSR_OK)
        return tsr_error_wrap(st, "loading the tokenizer from GGUF");
    return TSR_OK;
}
