/* runtime/tokenizer/tokenizer.c - the byte-level BPE tokenizer proper:
 * building from a tsr_tokenizer_spec, encoding (added-token split, regex
 * pre-tokenizer, rank-ordered merges), decoding and accessors.
 *
 * What it is not: a file reader. tok_gguf.c and tok_json.c turn GGUF
 * metadata and tokenizer.json into a spec; chat.c renders chat prompts. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "runtime/tokenizer/tokenizer.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "runtime/tokenizer/tok_internal.h"

/* One compiled pre-tokenizer stage. */
typedef struct {
    tsr_pre_kind kind;
    pcre2_code *re; /* TSR_PRE_SPLIT */
    tsr_split_behavior behavior;
    int invert;
} tok_stage;

/* Open-addressing hash of merges: key (left id << 32 | right id). */
typedef struct {
    uint64_t key;
    int32_t rank; /* -1: empty slot */
    int32_t result;
} merge_slot;

struct tsr_tokenizer {
    size_t n_vocab;
    char *text;         /* token texts, each NUL-terminated */
    uint32_t *text_off; /* [n_vocab] */
    uint32_t *text_len; /* [n_vocab] */
    char *bytes;        /* decoded bytes of each token */
    uint32_t *bytes_off, *bytes_len;
    uint8_t *type; /* [n_vocab] tsr_token_type */
    uint8_t *attr; /* [n_vocab] TSR_TOKEN_ATTR_* */
    uint8_t *eog;  /* [n_vocab] end-of-generation flag */

    int32_t *vocab_slots; /* token ids by hash of text; -1 empty */
    size_t vocab_mask;

    merge_slot *merges;
    size_t merge_mask;
    size_t n_merges;

    int32_t byte_id[256]; /* id of the single-byte token for each byte; -1 */

    tok_stage *stages;
    size_t n_stages;
    int ignore_merges;

    /* Added (control / user-defined) tokens for splitting text: ids sorted
     * by first byte, then by length descending. */
    int32_t *added;
    size_t n_added;
    uint32_t added_first[257]; /* added[added_first[b] .. added_first[b+1]) */

    int32_t bos, eos, eot, eom, pad, unk;
    int add_bos, add_eos;
    char *chat_template;
};

/* ---- hashing ----------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

static int32_t vocab_lookup(const tsr_tokenizer_t *t, const char *s, size_t n) {
    size_t i = (size_t)hash_bytes(s, n) & t->vocab_mask;
    for (;;) {
        int32_t id = t->vocab_slots[i];
        if (id < 0)
            return -1;
        if (t->text_len[id] == n && memcmp(t->text + t->text_off[id], s, n) == 0)
            return id;
        i = (i + 1) & t->vocab_mask;
    }
}

/* Inserts id; a later token with the same text replaces an earlier one (as a
 * Python dict or llama.cpp's token_to_id would). */
static void vocab_insert(tsr_tokenizer_t *t, int32_t id) {
    const char *s = t->text + t->text_off[id];
    size_t n = t->text_len[id];
    size_t i = (size_t)hash_bytes(s, n) & t->vocab_mask;
    for (;;) {
        int32_t cur = t->vocab_slots[i];
        if (cur < 0) {
            t->vocab_slots[i] = id;
            return;
        }
        if (t->text_len[cur] == n && memcmp(t->text + t->text_off[cur], s, n) == 0) {
            t->vocab_slots[i] = id;
            return;
        }
        i = (i + 1) & t->vocab_mask;
    }
}

static const merge_slot *merge_lookup(const tsr_tokenizer_t *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)hash_u64(key) & t->merge_mask;
    for (;;) {
        const merge_slot *s = &t->merges[i];
        if (s->rank < 0)
            return NULL;
        if (s->key == key)
            return s;
        i = (i + 1) & t->merge_mask;
    }
}

/* Returns 1 if inserted, 0 if the pair already had a (lower) rank. */
static int merge_insert(tsr_tokenizer_t *t, int32_t a, int32_t b, int32_t rank, int32_t result) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)hash_u64(key) & t->merge_mask;
    for (;;) {
        merge_slot *s = &t->merges[i];
        if (s->rank < 0) {
            s->key = key;
            s->rank = rank;
            s->result = result;
            return 1;
        }
        if (s->key == key)
            return 0;
        i = (i + 1) & t->merge_mask;
    }
}

/* ---- building ---------------------------------------------------------- */

void tsr_tokenizer_free(tsr_tokenizer_t *t) {
    if (!t)
        return;
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->bytes);
    free(t->bytes_off);
    free(t->bytes_len);
    free(t->type);
    free(t->attr);
    free(t->eog);
    free(t->vocab_slots);
    free(t->merges);
    for (size_t i = 0; i < t->n_stages; i++)
        pcre2_code_free(t->stages[i].re);
    free(t->stages);
    free(t->added);
    free(t->chat_template);
    free(t);
}

/* Parses "<0xAB>" (a BYTE-type token's text); -1 if it is not one. */
static int parse_byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Fills the decoded bytes of token id: the byte-level map applied to each
 * character, or the text itself for control/user-defined tokens and for
 * texts that contain a character outside the map (as HF's ByteLevel
 * decoder does). */
static void decode_token_bytes(tsr_tokenizer_t *t, int32_t id, size_t *bytes_pos) {
    const char *s = t->text + t->text_off[id];
    size_t n = t->text_len[id];
    char *dst = t->bytes + *bytes_pos;
    t->bytes_off[id] = (uint32_t)*bytes_pos;
    int type = t->type[id];
    size_t m = 0;
    int raw = type == TSR_TOKEN_TYPE_CONTROL || type == TSR_TOKEN_TYPE_USER_DEFINED;
    int bv = type == TSR_TOKEN_TYPE_BYTE ? parse_byte_token(s, n) : -1;
    if (bv >= 0) {
        dst[m++] = (char)bv;
    } else if (!raw) {
        const unsigned char *u = (const unsigned char *)s;
        size_t i = 0;
        while (i < n) {
            uint32_t cp;
            size_t k = tsr_utf8_decode1(u + i, n - i, &cp);
            int b = tsr_cp_to_byte(cp);
            if (b < 0) {
                raw = 1;
                break;
            }
            dst[m++] = (char)b;
            i += k;
        }
    }
    if (raw && bv < 0) {
        memcpy(dst, s, n);
        m = n;
    }
    t->bytes_len[id] = (uint32_t)m;
    *bytes_pos += m;
}

static tsr_status compile_stage(const tsr_pre_stage *in, size_t idx, tok_stage *out) {
    out->kind = in->kind;
    out->behavior = in->behavior;
    out->invert = in->invert;
    out->re = NULL;
    if (in->kind == TSR_PRE_PREFIX_SPACE)
        return TSR_OK;
    if (in->kind != TSR_PRE_SPLIT)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: pre-tokenizer stage %zu: unknown kind %d",
                             idx, (int)in->kind);
    if (!in->pattern)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: pre-tokenizer stage %zu has no pattern",
                             idx);
    if ((unsigned)in->behavior > TSR_SPLIT_CONTIGUOUS)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: pre-tokenizer stage %zu: bad behavior %d",
                             idx, (int)in->behavior);
    int err = 0;
    PCRE2_SIZE erroff = 0;
    out->re = pcre2_compile((PCRE2_SPTR)in->pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                            &err, &erroff, NULL);
    if (!out->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return tsr_error_set(TSR_ERR_INVALID,
                             "tokenizer: pre-tokenizer regex %zu does not compile at offset %zu: "
                             "%s (pattern: %.200s)",
                             idx, (size_t)erroff, (const char *)msg, in->pattern);
    }
    /* JIT is an optimisation only: fall back to the interpreter silently. */
    (void)pcre2_jit_compile(out->re, PCRE2_JIT_COMPLETE);
    return TSR_OK;
}

/* Named pre-tokenizers (GGUF tokenizer.ggml.pre), as llama.cpp maps them. */
static tsr_status stages_for_name(const char *name, tsr_pre_stage st[2], size_t *n,
                                  int *ignore_merges) {
    static const char *const gpt2[] = {"gpt2", "default", "", NULL};
    static const char *const digits_then_gpt2[] = {
        "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", NULL};
    static const char *const llama3[] = {"llama-bpe", "llama3",  "llama-v3",
                                         "falcon3",   "pixtral", NULL};
    static const char *const qwen2[] = {"qwen2",  "stablelm2", "hunyuan", "deepseek-r1-qwen",
                                        "megrez", NULL};
    const char *nm = name ? name : "default";
    memset(st, 0, 2 * sizeof *st);
    *ignore_merges = 0;
    for (const char *const *p = digits_then_gpt2; *p; p++) {
        if (strcmp(nm, *p) == 0) {
            st[0].kind = TSR_PRE_SPLIT;
            st[0].pattern = "\\p{N}";
            st[1].kind = TSR_PRE_SPLIT;
            st[1].pattern = TSR_PRE_REGEX_GPT2;
            *n = 2;
            return TSR_OK;
        }
    }
    for (const char *const *p = llama3; *p; p++) {
        if (strcmp(nm, *p) == 0) {
            st[0].kind = TSR_PRE_SPLIT;
            st[0].pattern = TSR_PRE_REGEX_LLAMA3;
            *n = 1;
            *ignore_merges = 1;
            return TSR_OK;
        }
    }
    for (const char *const *p = qwen2; *p; p++) {
        if (strcmp(nm, *p) == 0) {
            st[0].kind = TSR_PRE_SPLIT;
            st[0].pattern = TSR_PRE_REGEX_QWEN2;
            *n = 1;
            return TSR_OK;
        }
    }
    int known = 0;
    for (const char *const *p = gpt2; *p; p++)
        known |= strcmp(nm, *p) == 0;
    if (!known)
        TSR_LOG_W("tokenizer: unknown pre-tokenizer '%s'; using the GPT-2 regex "
                  "(tokenization may differ from the model's own)",
                  nm);
    st[0].kind = TSR_PRE_SPLIT;
    st[0].pattern = TSR_PRE_REGEX_GPT2;
    *n = 1;
    return TSR_OK;
}

static int cmp_added(const void *pa, const void *pb, const tsr_tokenizer_t *t) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    unsigned char fa = (unsigned char)t->text[t->text_off[a]];
    unsigned char fb = (unsigned char)t->text[t->text_off[b]];
    if (fa != fb)
        return fa < fb ? -1 : 1;
    if (t->text_len[a] != t->text_len[b])
        return t->text_len[a] > t->text_len[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

/* Insertion sort (added-token lists are short: tens to a few hundred). */
static void sort_added(tsr_tokenizer_t *t) {
    for (size_t i = 1; i < t->n_added; i++) {
        int32_t x = t->added[i];
        size_t j = i;
        while (j > 0 && cmp_added(&t->added[j - 1], &x, t) > 0) {
            t->added[j] = t->added[j - 1];
            j--;
        }
        t->added[j] = x;
    }
}

static int is_eog_text(const char *s) {
    static const char *const names[] = {
        "<|endoftext|>", "<|im_end|>",    "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>",
        "<|end|>",       "<end_of_turn>", "</s>",       NULL};
    for (const char *const *p = names; *p; p++)
        if (strcmp(s, *p) == 0)
            return 1;
    return 0;
}

static tsr_status check_id(const char *what, int32_t id, size_t n_vocab) {
    if (id < -1 || (id >= 0 && (size_t)id >= n_vocab))
        return tsr_error_set(TSR_ERR_FORMAT, "tokenizer: %s id %d is outside the vocab (%zu)", what,
                             (int)id, n_vocab);
    return TSR_OK;
}

static tsr_status build(const tsr_tokenizer_spec *sp, tsr_tokenizer_t *t) {
    size_t n = sp->n_tokens;
    if (n == 0 || !sp->tokens)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: empty vocab");
    if (n > (size_t)INT32_MAX)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: vocab too large (%zu)", n);
    t->n_vocab = n;

    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += sp->tokens[i].len + 1;
    if (total > UINT32_MAX)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: vocab text too large");
    t->text = malloc(total ? total : 1);
    t->bytes = malloc(total ? total : 1);
    t->text_off = malloc(n * sizeof *t->text_off);
    t->text_len = malloc(n * sizeof *t->text_len);
    t->bytes_off = malloc(n * sizeof *t->bytes_off);
    t->bytes_len = malloc(n * sizeof *t->bytes_len);
    t->type = malloc(n);
    t->attr = calloc(n, 1);
    t->eog = calloc(n, 1);
    t->vocab_mask = pow2_at_least(2 * n) - 1;
    t->vocab_slots = malloc((t->vocab_mask + 1) * sizeof *t->vocab_slots);
    if (!t->text || !t->bytes || !t->text_off || !t->text_len || !t->bytes_off || !t->bytes_len ||
        !t->type || !t->attr || !t->eog || !t->vocab_slots)
        return tsr_error_set(TSR_ERR_NOMEM, "tokenizer: out of memory for %zu tokens", n);
    memset(t->vocab_slots, 0xff, (t->vocab_mask + 1) * sizeof *t->vocab_slots);

    size_t pos = 0, bpos = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t ty = sp->token_types ? sp->token_types[i] : TSR_TOKEN_TYPE_NORMAL;
        if (ty < 0 || ty > TSR_TOKEN_TYPE_BYTE)
            return tsr_error_set(TSR_ERR_FORMAT, "tokenizer: token %zu has unknown type %d", i,
                                 (int)ty);
        if (sp->tokens[i].len && !sp->tokens[i].ptr)
            return tsr_error_set(TSR_ERR_INVALID, "tokenizer: token %zu has no text", i);
        t->type[i] = (uint8_t)ty;
        t->attr[i] = sp->token_attrs ? sp->token_attrs[i] : 0;
        t->text_off[i] = (uint32_t)pos;
        t->text_len[i] = (uint32_t)sp->tokens[i].len;
        if (sp->tokens[i].len)
            memcpy(t->text + pos, sp->tokens[i].ptr, sp->tokens[i].len);
        pos += sp->tokens[i].len;
        t->text[pos++] = '\0';
        decode_token_bytes(t, (int32_t)i, &bpos);
        if (t->text_len[i] > 0)
            vocab_insert(t, (int32_t)i);
    }

    /* Single-byte tokens: the entry whose text is the byte's GPT-2 char. */
    size_t missing_bytes = 0;
    for (int b = 0; b < 256; b++) {
        char u[4];
        size_t k = tsr_utf8_encode1(tsr_byte_to_cp((unsigned char)b), u);
        t->byte_id[b] = vocab_lookup(t, u, k);
        missing_bytes += t->byte_id[b] < 0;
    }
    if (missing_bytes)
        TSR_LOG_I("tokenizer: %zu of the 256 byte tokens are missing from the vocab; "
                  "text containing those bytes will lose them",
                  missing_bytes);

    /* Merges. */
    if (sp->n_merges > (size_t)INT32_MAX)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: too many merges (%zu)", sp->n_merges);
    if (sp->n_merges && !sp->merges && !sp->merge_pairs)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: n_merges set but no merges given");
    t->merge_mask = pow2_at_least(2 * sp->n_merges + 1) - 1;
    t->merges = malloc((t->merge_mask + 1) * sizeof *t->merges);
    if (!t->merges)
        return tsr_error_set(TSR_ERR_NOMEM, "tokenizer: out of memory for merges");
    for (size_t i = 0; i <= t->merge_mask; i++)
        t->merges[i].rank = -1;
    tsr_tok_buf cat = {0};
    size_t bad = 0;
    for (size_t i = 0; i < sp->n_merges; i++) {
        tsr_strref a, b;
        if (sp->merge_pairs) {
            a = sp->merge_pairs[2 * i];
            b = sp->merge_pairs[2 * i + 1];
        } else {
            tsr_strref m = sp->merges[i];
            /* Split at the first space after the first character: byte-level
             * tokens never contain a literal space. */
            const char *sp_at = m.len > 1 ? memchr(m.ptr + 1, ' ', m.len - 1) : NULL;
            if (!sp_at) {
                tsr_tok_buf_free(&cat);
                return tsr_error_set(TSR_ERR_FORMAT,
                                     "tokenizer: merge %zu (\"%.*s\") is not \"a b\"", i,
                                     (int)(m.len > 80 ? 80 : m.len), m.ptr ? m.ptr : "");
            }
            a.ptr = m.ptr;
            a.len = (size_t)(sp_at - m.ptr);
            b.ptr = sp_at + 1;
            b.len = m.len - a.len - 1;
        }
        int32_t ia = vocab_lookup(t, a.ptr, a.len);
        int32_t ib = vocab_lookup(t, b.ptr, b.len);
        cat.n = 0;
        if (tsr_tok_buf_put(&cat, a.ptr, a.len) != TSR_OK ||
            tsr_tok_buf_put(&cat, b.ptr, b.len) != TSR_OK) {
            tsr_tok_buf_free(&cat);
            return TSR_ERR_NOMEM;
        }
        int32_t ir = vocab_lookup(t, cat.p, cat.n);
        if ((ia < 0 || ib < 0 || ir < 0) && sp->strict_merges) {
            const char *which = ia < 0   ? "its first token"
                                : ib < 0 ? "its second token"
                                         : "the merged token";
            tsr_status st = tsr_error_set(TSR_ERR_FORMAT,
                                          "tokenizer: merge %zu (\"%.*s\" + \"%.*s\"): %s is not "
                                          "in the vocab",
                                          i, (int)(a.len > 60 ? 60 : a.len), a.ptr,
                                          (int)(b.len > 60 ? 60 : b.len), b.ptr, which);
            tsr_tok_buf_free(&cat);
            return st;
        }
        if (ia < 0 || ib < 0 || ir < 0) {
            if (bad++ == 0)
                TSR_LOG_W("tokenizer: merge %zu (\"%.*s\" + \"%.*s\") names a token not in the "
                          "vocab; skipped",
                          i, (int)a.len, a.ptr, (int)b.len, b.ptr);
            continue;
        }
        t->n_merges += (size_t)merge_insert(t, ia, ib, (int32_t)i, ir);
    }
    tsr_tok_buf_free(&cat);
    if (bad > 1)
        TSR_LOG_W("tokenizer: %zu merges skipped in all", bad);

    /* Pre-tokenizer. */
    tsr_pre_stage named[2];
    const tsr_pre_stage *st = sp->pre_stages;
    size_t n_st = sp->n_pre_stages;
    int ign = 0;
    if (n_st == 0) {
        TSR_TRY(stages_for_name(sp->pre_name, named, &n_st, &ign));
        st = named;
    }
    t->ignore_merges = sp->ignore_merges >= 0 ? sp->ignore_merges : ign;
    t->stages = calloc(n_st ? n_st : 1, sizeof *t->stages);
    if (!t->stages)
        return TSR_ERR_NOMEM;
    for (size_t i = 0; i < n_st; i++) {
        TSR_TRY(compile_stage(&st[i], i, &t->stages[i]));
        t->n_stages++;
    }

    /* Special ids. */
    TSR_TRY(check_id("bos", sp->bos_id, n));
    TSR_TRY(check_id("eos", sp->eos_id, n));
    TSR_TRY(check_id("eot", sp->eot_id, n));
    TSR_TRY(check_id("eom", sp->eom_id, n));
    TSR_TRY(check_id("pad", sp->pad_id, n));
    TSR_TRY(check_id("unk", sp->unk_id, n));
    t->bos = sp->bos_id;
    t->eos = sp->eos_id;
    t->eot = sp->eot_id;
    t->eom = sp->eom_id;
    t->pad = sp->pad_id;
    t->unk = sp->unk_id;
    t->add_bos = sp->add_bos && t->bos >= 0;
    t->add_eos = sp->add_eos && t->eos >= 0;

    /* Added tokens and end-of-generation flags. */
    size_t n_added = 0;
    for (size_t i = 0; i < n; i++) {
        int ty = t->type[i];
        if ((ty == TSR_TOKEN_TYPE_CONTROL || ty == TSR_TOKEN_TYPE_USER_DEFINED) && t->text_len[i])
            n_added++;
        if (ty == TSR_TOKEN_TYPE_CONTROL && is_eog_text(t->text + t->text_off[i]))
            t->eog[i] = 1;
    }
    int32_t eog_ids[3] = {t->eos, t->eot, t->eom};
    for (int k = 0; k < 3; k++)
        if (eog_ids[k] >= 0)
            t->eog[eog_ids[k]] = 1;
    t->added = malloc((n_added ? n_added : 1) * sizeof *t->added);
    if (!t->added)
        return TSR_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        int ty = t->type[i];
        if ((ty == TSR_TOKEN_TYPE_CONTROL || ty == TSR_TOKEN_TYPE_USER_DEFINED) && t->text_len[i])
            t->added[t->n_added++] = (int32_t)i;
    }
    sort_added(t);
    size_t j = 0;
    for (unsigned b = 0; b <= 256; b++) {
        while (j < t->n_added && (unsigned char)t->text[t->text_off[t->added[j]]] < b)
            j++;
        t->added_first[b] = (uint32_t)j;
    }

    if (sp->chat_template) {
        t->chat_template = strdup(sp->chat_template);
        if (!t->chat_template)
            return TSR_ERR_NOMEM;
    }
    return TSR_OK;
}

tsr_status tsr_tokenizer_from_spec(const tsr_tokenizer_spec *spec, tsr_tokenizer_t **out) {
    *out = NULL;
    if (!spec)
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: NULL spec");
    tsr_tokenizer_t *t = calloc(1, sizeof *t);
    if (!t)
        return tsr_error_set(TSR_ERR_NOMEM, "tokenizer: out of memory");
    tsr_status st = build(spec, t);
    if (st != TSR_OK) {
        tsr_tokenizer_free(t);
        return st;
    }
    *out = t;
    return TSR_OK;
}

/* ---- encoding ---------------------------------------------------------- */

typedef struct {
    const char *p;
    size_t n;
} piece;

typedef struct {
    piece *a;
    size_t n, cap;
} piece_vec;

typedef struct {
    int32_t rank, left, right, a, b, result;
} bigram;

typedef struct {
    int32_t id, prev, next;
} symbol;

/* Per-call scratch, so a shared tokenizer stays immutable. */
typedef struct {
    int32_t *ids;
    size_t n_ids, cap_ids;
    piece_vec cur, next;
    size_t *spans; /* (start, end, is_match) triples for a split */
    size_t n_spans, cap_spans;
    char **bufs; /* text made by PREFIX_SPACE stages */
    size_t n_bufs, cap_bufs;
    symbol *sym;
    size_t cap_sym;
    bigram *heap;
    size_t n_heap, cap_heap;
    tsr_tok_buf tmp;
    pcre2_match_data *md;
} enc_ctx;

static tsr_status grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return TSR_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return tsr_error_set(TSR_ERR_NOMEM, "tokenizer: out of memory (%zu x %zu bytes)", c, elem);
    *p = q;
    *cap = c;
    return TSR_OK;
}

static tsr_status push_id(enc_ctx *c, int32_t id) {
    TSR_TRY(grow((void **)&c->ids, &c->cap_ids, c->n_ids + 1, sizeof *c->ids));
    c->ids[c->n_ids++] = id;
    return TSR_OK;
}

static tsr_status push_piece(piece_vec *v, const char *p, size_t n) {
    if (n == 0)
        return TSR_OK;
    TSR_TRY(grow((void **)&v->a, &v->cap, v->n + 1, sizeof *v->a));
    v->a[v->n].p = p;
    v->a[v->n].n = n;
    v->n++;
    return TSR_OK;
}

static tsr_status push_span(enc_ctx *c, size_t s, size_t e, size_t is_match) {
    if (e <= s)
        return TSR_OK;
    TSR_TRY(grow((void **)&c->spans, &c->cap_spans, 3 * (c->n_spans + 1), sizeof *c->spans));
    size_t *sp = c->spans + 3 * c->n_spans++;
    sp[0] = s;
    sp[1] = e;
    sp[2] = is_match;
    return TSR_OK;
}

/* Splits one piece by a regex stage, appending the resulting pieces to
 * c->next (Hugging Face's Split pre-tokenizer semantics). */
static tsr_status split_piece(enc_ctx *c, const tok_stage *st, piece pc) {
    c->n_spans = 0;
    size_t off = 0, last = 0;
    const unsigned char *subj = (const unsigned char *)pc.p;
    while (off < pc.n) {
        int rc = pcre2_match(st->re, subj, pc.n, off, PCRE2_NO_UTF_CHECK, c->md, NULL);
#ifdef PCRE2_ERROR_JIT_STACKLIMIT
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(st->re, subj, pc.n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, c->md,
                             NULL);
#endif
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return tsr_error_set(TSR_ERR_INTERNAL, "tokenizer: regex match failed: %s",
                                 (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t s = ov[0], e = ov[1];
        if (e <= s) { /* empty match: step one character */
            uint32_t cp;
            off = s + tsr_utf8_decode1(subj + s, pc.n - s, &cp);
            continue;
        }
        TSR_TRY(push_span(c, last, s, 0));
        TSR_TRY(push_span(c, s, e, 1));
        last = off = e;
    }
    TSR_TRY(push_span(c, last, pc.n, 0));

    size_t ns = c->n_spans;
    size_t *sp = c->spans;
    if (st->invert)
        for (size_t i = 0; i < ns; i++)
            sp[3 * i + 2] = !sp[3 * i + 2];

    switch (st->behavior) {
    case TSR_SPLIT_ISOLATED:
        for (size_t i = 0; i < ns; i++)
            TSR_TRY(push_piece(&c->next, pc.p + sp[3 * i], sp[3 * i + 1] - sp[3 * i]));
        return TSR_OK;
    case TSR_SPLIT_REMOVED:
        for (size_t i = 0; i < ns; i++)
            if (!sp[3 * i + 2])
                TSR_TRY(push_piece(&c->next, pc.p + sp[3 * i], sp[3 * i + 1] - sp[3 * i]));
        return TSR_OK;
    case TSR_SPLIT_MERGED_WITH_PREVIOUS:
    case TSR_SPLIT_CONTIGUOUS: {
        /* Fold left: a span joins the previous output span when (previous
         * behaviour) it is a match following a non-match, (contiguous) it
         * has the same kind as the previous span. */
        size_t out_s = 0, out_e = 0, have = 0, prev_match = 0;
        for (size_t i = 0; i < ns; i++) {
            size_t s = sp[3 * i], e = sp[3 * i + 1], m = sp[3 * i + 2];
            int join =
                st->behavior == TSR_SPLIT_CONTIGUOUS ? (m == prev_match) : (m && !prev_match);
            if (join && have) {
                out_e = e;
            } else {
                if (have)
                    TSR_TRY(push_piece(&c->next, pc.p + out_s, out_e - out_s));
                out_s = s;
                out_e = e;
                have = 1;
            }
            prev_match = m;
        }
        if (have)
            TSR_TRY(push_piece(&c->next, pc.p + out_s, out_e - out_s));
        return TSR_OK;
    }
    case TSR_SPLIT_MERGED_WITH_NEXT: {
        /* Fold right: a match preceding a non-match joins it. */
        size_t base = c->next.n;
        size_t out_s = 0, out_e = 0, have = 0, prev_match = 0;
        for (size_t i = ns; i-- > 0;) {
            size_t s = sp[3 * i], e = sp[3 * i + 1], m = sp[3 * i + 2];
            if (m && !prev_match && have) {
                out_s = s;
            } else {
                if (have)
                    TSR_TRY(push_piece(&c->next, pc.p + out_s, out_e - out_s));
                out_s = s;
                out_e = e;
                have = 1;
            }
            prev_match = m;
        }
        if (have)
            TSR_TRY(push_piece(&c->next, pc.p + out_s, out_e - out_s));
        for (size_t i = base, k = c->next.n - 1; i < k; i++, k--) {
            piece tmp = c->next.a[i];
            c->next.a[i] = c->next.a[k];
            c->next.a[k] = tmp;
        }
        return TSR_OK;
    }
    }
    return tsr_error_set(TSR_ERR_INTERNAL, "tokenizer: bad split behavior");
}

static tsr_status prefix_space_stage(enc_ctx *c) {
    size_t need = 0;
    for (size_t i = 0; i < c->cur.n; i++)
        need += c->cur.a[i].n + 1;
    TSR_TRY(grow((void **)&c->bufs, &c->cap_bufs, c->n_bufs + 1, sizeof *c->bufs));
    char *buf = malloc(need ? need : 1);
    if (!buf)
        return tsr_error_set(TSR_ERR_NOMEM, "tokenizer: out of memory");
    c->bufs[c->n_bufs++] = buf;
    size_t pos = 0;
    for (size_t i = 0; i < c->cur.n; i++) {
        piece pc = c->cur.a[i];
        char *dst = buf + pos;
        size_t k = 0;
        if (pc.p[0] != ' ')
            dst[k++] = ' ';
        memcpy(dst + k, pc.p, pc.n);
        k += pc.n;
        TSR_TRY(push_piece(&c->next, dst, k));
        pos += k;
    }
    return TSR_OK;
}

/* Min-heap on (rank, left position). */
static int bigram_less(const bigram *x, const bigram *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->left < y->left;
}

static tsr_status heap_push(enc_ctx *c, bigram g) {
    TSR_TRY(grow((void **)&c->heap, &c->cap_heap, c->n_heap + 1, sizeof *c->heap));
    size_t i = c->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_less(&g, &c->heap[p]))
            break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i] = g;
    return TSR_OK;
}

static bigram heap_pop(enc_ctx *c) {
    bigram top = c->heap[0];
    bigram last = c->heap[--c->n_heap];
    size_t i = 0, n = c->n_heap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const bigram *best = &last;
        if (l < n && bigram_less(&c->heap[l], best))
            m = l, best = &c->heap[l];
        if (r < n && bigram_less(&c->heap[r], best))
            m = r;
        if (m == i)
            break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n > 0)
        c->heap[i] = last;
    return top;
}

static tsr_status try_pair(const tsr_tokenizer_t *t, enc_ctx *c, int32_t l, int32_t r) {
    const merge_slot *m = merge_lookup(t, c->sym[l].id, c->sym[r].id);
    if (!m)
        return TSR_OK;
    bigram g = {m->rank, l, r, c->sym[l].id, c->sym[r].id, m->result};
    return heap_push(c, g);
}

/* BPE on one pre-tokenized piece: start from its bytes' tokens and apply
 * the lowest-ranked merge (leftmost on ties) until none applies. */
static tsr_status bpe_piece(const tsr_tokenizer_t *t, enc_ctx *c, piece pc) {
    const unsigned char *s = (const unsigned char *)pc.p;
    if (pc.n == 1) {
        int32_t id = t->byte_id[s[0]];
        return id >= 0 ? push_id(c, id) : TSR_OK;
    }
    if (t->ignore_merges) {
        c->tmp.n = 0;
        TSR_TRY(tsr_tok_buf_reserve(&c->tmp, 2 * pc.n));
        for (size_t i = 0; i < pc.n; i++)
            c->tmp.n += tsr_utf8_encode1(tsr_byte_to_cp(s[i]), c->tmp.p + c->tmp.n);
        int32_t id = vocab_lookup(t, c->tmp.p, c->tmp.n);
        if (id >= 0)
            return push_id(c, id);
    }
    TSR_TRY(grow((void **)&c->sym, &c->cap_sym, pc.n, sizeof *c->sym));
    int32_t ns = 0;
    for (size_t i = 0; i < pc.n; i++) {
        int32_t id = t->byte_id[s[i]];
        if (id < 0)
            continue; /* no token for this byte: dropped, as HF does */
        c->sym[ns].id = id;
        c->sym[ns].prev = ns - 1;
        c->sym[ns].next = ns + 1;
        ns++;
    }
    if (ns == 0)
        return TSR_OK;
    c->sym[ns - 1].next = -1;
    c->n_heap = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        TSR_TRY(try_pair(t, c, i, i + 1));
    while (c->n_heap > 0) {
        bigram g = heap_pop(c);
        symbol *L = &c->sym[g.left], *R = &c->sym[g.right];
        if (L->id != g.a || R->id != g.b || L->next != g.right)
            continue; /* stale: one side has merged since */
        L->id = g.result;
        R->id = -1;
        L->next = R->next;
        if (R->next >= 0)
            c->sym[R->next].prev = g.left;
        if (L->prev >= 0)
            TSR_TRY(try_pair(t, c, L->prev, g.left));
        if (L->next >= 0)
            TSR_TRY(try_pair(t, c, g.left, L->next));
    }
    for (int32_t i = 0; i >= 0; i = c->sym[i].next)
        TSR_TRY(push_id(c, c->sym[i].id));
    return TSR_OK;
}

/* Pre-tokenizes and BPE-encodes one stretch of text free of added tokens. */
static tsr_status encode_segment(const tsr_tokenizer_t *t, enc_ctx *c, const char *p, size_t n) {
    if (n == 0)
        return TSR_OK;
    c->cur.n = 0;
    TSR_TRY(push_piece(&c->cur, p, n));
    for (size_t k = 0; k < t->n_stages; k++) {
        const tok_stage *st = &t->stages[k];
        c->next.n = 0;
        if (st->kind == TSR_PRE_PREFIX_SPACE) {
            TSR_TRY(prefix_space_stage(c));
        } else {
            for (size_t i = 0; i < c->cur.n; i++)
                TSR_TRY(split_piece(c, st, c->cur.a[i]));
        }
        piece_vec tmp = c->cur;
        c->cur = c->next;
        c->next = tmp;
    }
    for (size_t i = 0; i < c->cur.n; i++)
        TSR_TRY(bpe_piece(t, c, c->cur.a[i]));
    return TSR_OK;
}

/* The longest added token starting at text[pos] that may match, or -1. */
static int32_t match_added(const tsr_tokenizer_t *t, const char *text, size_t len, size_t pos,
                           int parse_special) {
    unsigned char b = (unsigned char)text[pos];
    for (uint32_t k = t->added_first[b]; k < t->added_first[b + 1]; k++) {
        int32_t id = t->added[k];
        size_t n = t->text_len[id];
        if (n > len - pos)
            continue;
        if (!parse_special && t->type[id] == TSR_TOKEN_TYPE_CONTROL)
            continue;
        if (memcmp(text + pos, t->text + t->text_off[id], n) == 0)
            return id;
    }
    return -1;
}

/* Length of the Unicode whitespace character ending at text[end), or 0. */
static size_t space_before(const char *text, size_t start, size_t end) {
    if (end <= start)
        return 0;
    size_t b = end - 1;
    while (b > start && ((unsigned char)text[b] & 0xC0) == 0x80)
        b--;
    uint32_t cp;
    size_t k = tsr_utf8_decode1((const unsigned char *)text + b, end - b, &cp);
    return (b + k == end && tsr_unicode_is_space(cp)) ? k : 0;
}

static size_t space_after(const char *text, size_t pos, size_t len) {
    if (pos >= len)
        return 0;
    uint32_t cp;
    size_t k = tsr_utf8_decode1((const unsigned char *)text + pos, len - pos, &cp);
    return tsr_unicode_is_space(cp) ? k : 0;
}

static void enc_ctx_free(enc_ctx *c) {
    free(c->ids);
    free(c->cur.a);
    free(c->next.a);
    free(c->spans);
    for (size_t i = 0; i < c->n_bufs; i++)
        free(c->bufs[i]);
    free(c->bufs);
    free(c->sym);
    free(c->heap);
    tsr_tok_buf_free(&c->tmp);
    pcre2_match_data_free(c->md);
}

static tsr_status encode_all(const tsr_tokenizer_t *t, enc_ctx *c, const char *text, size_t len,
                             unsigned flags) {
    int parse_special = (flags & TSR_TOK_PARSE_SPECIAL) != 0;
    if ((flags & TSR_TOK_ADD_SPECIAL) && t->add_bos)
        TSR_TRY(push_id(c, t->bos));
    size_t seg = 0, pos = 0;
    while (pos < len) {
        unsigned char b = (unsigned char)text[pos];
        if (t->added_first[b] == t->added_first[b + 1]) {
            pos++;
            continue;
        }
        int32_t id = match_added(t, text, len, pos, parse_special);
        if (id < 0) {
            pos++;
            continue;
        }
        size_t seg_end = pos;
        if (t->attr[id] & TSR_TOKEN_ATTR_LSTRIP)
            for (size_t k; (k = space_before(text, seg, seg_end)) > 0;)
                seg_end -= k;
        TSR_TRY(encode_segment(t, c, text + seg, seg_end - seg));
        TSR_TRY(push_id(c, id));
        pos += t->text_len[id];
        if (t->attr[id] & TSR_TOKEN_ATTR_RSTRIP)
            for (size_t k; (k = space_after(text, pos, len)) > 0;)
                pos += k;
        seg = pos;
    }
    TSR_TRY(encode_segment(t, c, text + seg, len - seg));
    if ((flags & TSR_TOK_ADD_SPECIAL) && t->add_eos)
        TSR_TRY(push_id(c, t->eos));
    return TSR_OK;
}

tsr_status tsr_tokenizer_encode_ex(const tsr_tokenizer_t *t, const char *text, size_t len,
                                   unsigned flags, int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!t || (!text && len))
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: encode: NULL argument");
    tsr_utf8_check chk = tsr_utf8_validate((const unsigned char *)text, len);
    if (chk.valid != len)
        return tsr_error_set(
            TSR_ERR_INVALID,
            "tokenizer: input is not valid UTF-8 at byte offset %zu (byte 0x%02x%s)", chk.valid,
            (unsigned char)text[chk.valid], chk.incomplete ? ", truncated sequence" : "");
    enc_ctx c;
    memset(&c, 0, sizeof c);
    c.md = pcre2_match_data_create(1, NULL);
    tsr_status st = c.md ? TSR_OK : tsr_error_set(TSR_ERR_NOMEM, "tokenizer: out of memory");
    if (st == TSR_OK)
        st = grow((void **)&c.ids, &c.cap_ids, len / 3 + 4, sizeof *c.ids);
    if (st == TSR_OK)
        st = encode_all(t, &c, text ? text : "", len, flags);
    if (st != TSR_OK) {
        enc_ctx_free(&c);
        return st;
    }
    *ids = c.ids;
    *n = c.n_ids;
    c.ids = NULL;
    enc_ctx_free(&c);
    return TSR_OK;
}

tsr_status tsr_tokenizer_encode(const tsr_tokenizer_t *t, const char *text, size_t len,
                                int parse_special, int32_t **ids, size_t *n) {
    return tsr_tokenizer_encode_ex(t, text, len, parse_special ? TSR_TOK_PARSE_SPECIAL : 0u, ids,
                                   n);
}

/* ---- decoding ---------------------------------------------------------- */

const char *tsr_tokenizer_token_bytes(const tsr_tokenizer_t *t, int32_t id, size_t *len) {
    if (!t || id < 0 || (size_t)id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    *len = t->bytes_len[id];
    return t->bytes + t->bytes_off[id];
}

static int skip_token(const tsr_tokenizer_t *t, int32_t id, unsigned flags) {
    return (flags & TSR_DETOK_SKIP_SPECIAL) && t->type[id] == TSR_TOKEN_TYPE_CONTROL;
}

tsr_status tsr_tokenizer_decode(const tsr_tokenizer_t *t, const int32_t *ids, size_t n,
                                unsigned flags, char **text, size_t *len) {
    *text = NULL;
    if (len)
        *len = 0;
    if (!t || (!ids && n))
        return tsr_error_set(TSR_ERR_INVALID, "tokenizer: decode: NULL argument");
    tsr_tok_buf raw = {0}, out = {0};
    tsr_status st = TSR_OK;
    for (size_t i = 0; i < n && st == TSR_OK; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_vocab) {
            st = tsr_error_set(TSR_ERR_RANGE,
                               "tokenizer: decode: id %d at position %zu is "
                               "outside the vocab (%zu)",
                               (int)ids[i], i, t->n_vocab);
            break;
        }
        if (skip_token(t, ids[i], flags))
            continue;
        st = tsr_tok_buf_put(&raw, t->bytes + t->bytes_off[ids[i]], t->bytes_len[ids[i]]);
    }
    size_t tail = 0;
    if (st == TSR_OK)
        st = tsr_tok_buf_put_lossy(&out, (const unsigned char *)raw.p, raw.n, 0, &tail);
    if (st == TSR_OK)
        st = tsr_tok_buf_reserve(&out, 0);
    tsr_tok_buf_free(&raw);
    if (st != TSR_OK) {
        tsr_tok_buf_free(&out);
        return st;
    }
    out.p[out.n] = '\0';
    *text = out.p;
    if (len)
        *len = out.n;
    return TSR_OK;
}

void tsr_detok_stream_init(tsr_detok_stream *s, const tsr_tokenizer_t *tok, unsigned flags) {
    memset(s, 0, sizeof *s);
    s->tok = tok;
    s->flags = flags;
}

void tsr_detok_stream_free(tsr_detok_stream *s) {
    if (!s)
        return;
    free(s->out);
    s->out = NULL;
    s->out_cap = 0;
    s->n_pend = 0;
}

/* Runs bytes (held tail first) through the lossy UTF-8 filter into s->out. */
static tsr_status stream_emit(tsr_detok_stream *s, const char *bytes, size_t n, int final,
                              const char **text, size_t *len) {
    tsr_tok_buf in = {0}, out = {0};
    out.p = s->out;
    out.cap = s->out_cap;
    tsr_status st = tsr_tok_buf_put(&in, s->pend, s->n_pend);
    if (st == TSR_OK)
        st = tsr_tok_buf_put(&in, bytes, n);
    size_t tail = 0;
    if (st == TSR_OK)
        st = tsr_tok_buf_put_lossy(&out, (const unsigned char *)in.p, in.n, !final, &tail);
    if (st == TSR_OK)
        st = tsr_tok_buf_reserve(&out, 0);
    s->out = out.p;
    s->out_cap = out.cap;
    if (st != TSR_OK) {
        tsr_tok_buf_free(&in);
        return st;
    }
    memcpy(s->pend, in.p + in.n - tail, tail);
    s->n_pend = tail;
    tsr_tok_buf_free(&in);
    s->out[out.n] = '\0';
    *text = s->out;
    *len = out.n;
    return TSR_OK;
}

tsr_status tsr_detok_stream_push(tsr_detok_stream *s, int32_t id, const char **text, size_t *len) {
    *text = "";
    *len = 0;
    const tsr_tokenizer_t *t = s->tok;
    if (id < 0 || (size_t)id >= t->n_vocab)
        return tsr_error_set(TSR_ERR_RANGE, "tokenizer: stream: id %d is outside the vocab (%zu)",
                             (int)id, t->n_vocab);
    if (skip_token(t, id, s->flags))
        return stream_emit(s, "", 0, 0, text, len);
    return stream_emit(s, t->bytes + t->bytes_off[id], t->bytes_len[id], 0, text, len);
}

tsr_status tsr_detok_stream_flush(tsr_detok_stream *s, const char **text, size_t *len) {
    return stream_emit(s, "", 0, 1, text, len);
}

/* ---- accessors --------------------------------------------------------- */

size_t tsr_tokenizer_n_vocab(const tsr_tokenizer_t *t) { return t->n_vocab; }
int32_t tsr_tokenizer_bos(const tsr_tokenizer_t *t) { return t->bos; }
int32_t tsr_tokenizer_eos(const tsr_tokenizer_t *t) { return t->eos; }
int32_t tsr_tokenizer_eot(const tsr_tokenizer_t *t) { return t->eot; }
int32_t tsr_tokenizer_pad(const tsr_tokenizer_t *t) { return t->pad; }
int tsr_tokenizer_add_bos(const tsr_tokenizer_t *t) { return t->add_bos; }

int tsr_tokenizer_is_eog(const tsr_tokenizer_t *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_vocab && t->eog[id];
}

const char *tsr_tokenizer_token_text(const tsr_tokenizer_t *t, int32_t id) {
    if (id < 0 || (size_t)id >= t->n_vocab)
        return NULL;
    return t->text + t->text_off[id];
}

tsr_token_type tsr_tokenizer_token_type(const tsr_tokenizer_t *t, int32_t id) {
    if (id < 0 || (size_t)id >= t->n_vocab)
        return TSR_TOKEN_TYPE_UNDEFINED;
    return (tsr_token_type)t->type[id];
}

int32_t tsr_tokenizer_find_token(const tsr_tokenizer_t *t, const char *text, size_t len) {
    if (!text)
        return -1;
    return vocab_lookup(t, text, len);
}

int32_t tsr_tokenizer_find_special(const tsr_tokenizer_t *t, const char *text) {
    if (!text)
        return -1;
    int32_t id = vocab_lookup(t, text, strlen(text));
    if (id < 0)
        return -1;
    int ty = t->type[id];
    return ty == TSR_TOKEN_TYPE_CONTROL || ty == TSR_TOKEN_TYPE_USER_DEFINED ? id : -1;
}

const char *tsr_tokenizer_chat_template(const tsr_tokenizer_t *t) { return t->chat_template; }
