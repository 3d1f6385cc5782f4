/* runtime/tokenizer/tokenizer.h - byte-level BPE tokenizer (GPT-2 family:
 * SmolLM2, GPT-2, Llama 3, Qwen2) loaded from GGUF metadata or from a
 * Hugging Face tokenizer.json.
 *
 * What it is: vocab + merge ranks in hash maps, a regex pre-tokenizer
 * (PCRE2, Unicode classes, JIT when available), special/added-token
 * splitting, a rank-ordered BPE merge loop, full and streaming detokenizers.
 * The results match the Hugging Face `tokenizers` library for the same vocab,
 * merges, pre-tokenizer and added tokens (tests/tokenizer checks this on
 * thousands of strings).
 *
 * What it is not: SentencePiece/Unigram/WordPiece ("llama" GGUF model type,
 * Llama 1/2, Mistral) are refused with TSR_ERR_UNSUPPORTED; normalizers other
 * than none/NFC are refused, and NFC is not applied (see docs/tokenizer.md).
 *
 * Threads: a tsr_tokenizer_t is immutable after loading; any number of
 * threads may encode/decode with it at once. A tsr_detok_stream belongs to one
 * thread at a time. */
#ifndef TSR_RUNTIME_TOKENIZER_H
#define TSR_RUNTIME_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "shard/gguf.h"

typedef struct tsr_tokenizer tsr_tokenizer_t; /* opaque, immutable once built */

/* Token types, numbered as GGUF's tokenizer.ggml.token_type. */
typedef enum {
    TSR_TOKEN_TYPE_UNDEFINED = 0,
    TSR_TOKEN_TYPE_NORMAL = 1,
    TSR_TOKEN_TYPE_UNKNOWN = 2,
    TSR_TOKEN_TYPE_CONTROL = 3,      /* special: matched in text only with PARSE_SPECIAL */
    TSR_TOKEN_TYPE_USER_DEFINED = 4, /* added, not special: always matched in text */
    TSR_TOKEN_TYPE_UNUSED = 5,
    TSR_TOKEN_TYPE_BYTE = 6,
} tsr_token_type;

/* Attributes of added tokens (Hugging Face AddedToken flags). */
enum {
    TSR_TOKEN_ATTR_LSTRIP = 1u << 0, /* a match also eats whitespace on its left */
    TSR_TOKEN_ATTR_RSTRIP = 1u << 1, /* ... and on its right */
};

/* ---- building ---------------------------------------------------------- */

/* One pre-tokenizer stage. Stages run in order; each splits every piece the
 * previous stage produced (as a Hugging Face pre_tokenizers.Sequence does). */
typedef enum {
    TSR_PRE_SPLIT = 0,        /* split by `pattern` (PCRE2 syntax, UTF + UCP) */
    TSR_PRE_PREFIX_SPACE = 1, /* prepend ' ' to a piece not starting with one
                                 (ByteLevel add_prefix_space) */
} tsr_pre_kind;

/* How a TSR_PRE_SPLIT stage treats the matches (Hugging Face's
 * SplitDelimiterBehavior). The gaps between matches are always kept. */
typedef enum {
    TSR_SPLIT_ISOLATED = 0, /* matches and gaps are separate pieces */
    TSR_SPLIT_REMOVED,      /* matches dropped */
    TSR_SPLIT_MERGED_WITH_PREVIOUS,
    TSR_SPLIT_MERGED_WITH_NEXT,
    TSR_SPLIT_CONTIGUOUS,
} tsr_split_behavior;

typedef struct {
    tsr_pre_kind kind;
    const char *pattern; /* TSR_PRE_SPLIT: a regex, NUL-terminated */
    tsr_split_behavior behavior;
    int invert; /* nonzero: the pattern describes the gaps, not the matches */
} tsr_pre_stage;

/* The GPT-2 pre-tokenizer regex (Hugging Face ByteLevel use_regex=true). */
#define TSR_PRE_REGEX_GPT2                                                                         \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
/* Llama 3 (tokenizer.ggml.pre "llama-bpe"). */
#define TSR_PRE_REGEX_LLAMA3                                                                       \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* Qwen2 / Qwen2.5 (tokenizer.ggml.pre "qwen2"). */
#define TSR_PRE_REGEX_QWEN2                                                                        \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* Everything a tokenizer is built from, already extracted from its file.
 * Nothing is retained: tsr_tokenizer_from_spec copies what it needs.
 * Token strings are in byte-level form ("Ġthe" for " the"). */
typedef struct {
    size_t n_tokens;
    const tsr_strref *tokens;   /* [n_tokens]; an empty string marks a hole */
    const int32_t *token_types; /* [n_tokens] tsr_token_type; NULL: all normal */
    const uint8_t *token_attrs; /* [n_tokens] TSR_TOKEN_ATTR_* bits; NULL: none */

    /* Merges in rank order (first = merged first), either as "a b" strings
     * (merges) or as pairs (merge_pairs[2*i], merge_pairs[2*i+1]). Set one. */
    size_t n_merges;
    const tsr_strref *merges;
    const tsr_strref *merge_pairs;
    /* A merge naming a token the vocab lacks (either side, or the two
     * joined): 1 refuses the tokenizer with TSR_ERR_FORMAT naming the merge
     * (tokenizer.json, as HF tokenizers refuses it); 0 skips the merge with
     * a warning (GGUF, as llama.cpp loads such files). */
    int strict_merges;

    /* Pre-tokenizer: explicit stages, or, when n_pre_stages is 0, a name as
     * in GGUF's tokenizer.ggml.pre ("gpt2", "smollm", "llama-bpe", "qwen2",
     * ...; NULL or "default" = gpt2; unknown names fall back to gpt2 with a
     * warning). */
    size_t n_pre_stages;
    const tsr_pre_stage *pre_stages;
    const char *pre_name;
    int ignore_merges; /* a piece that is itself a vocab entry skips BPE
                          (Llama 3); -1 = as the pre_name implies */

    int32_t bos_id, eos_id, eot_id, eom_id, pad_id, unk_id; /* -1: none */
    int add_bos;               /* TSR_TOK_ADD_SPECIAL prepends bos_id */
    int add_eos;               /* TSR_TOK_ADD_SPECIAL appends eos_id */
    const char *chat_template; /* Jinja source or NULL; copied */
} tsr_tokenizer_spec;

#define TSR_TOKENIZER_SPEC_INIT                                                                    \
    {                                                                                              \
        /* .n_tokens = */ 0, /* .tokens = */ NULL, /* .token_types = */ NULL,                      \
            /* .token_attrs = */ NULL, /* .n_merges = */ 0, /* .merges = */ NULL,                  \
            /* .merge_pairs = */ NULL, /* .strict_merges = */ 0, /* .n_pre_stages = */ 0,          \
            /* .pre_stages = */ NULL, /* .pre_name = */ NULL, /* .ignore_merges = */ -1,           \
            /* .bos_id = */ -1, /* .eos_id = */ -1, /* .eot_id = */ -1, /* .eom_id = */ -1,        \
            /* .pad_id = */ -1, /* .unk_id = */ -1, /* .add_bos = */ 0, /* .add_eos = */ 0,        \
            /* .chat_template = */ NULL                                                            \
    }

/* Builds a tokenizer from an in-memory description. Fails with
 * TSR_ERR_FORMAT when a merge names an unknown token or a special id is out
 * of range, TSR_ERR_INVALID when a regex does not compile (the message quotes
 * PCRE2's reason and offset). On error *out is NULL. */
tsr_status tsr_tokenizer_from_spec(const tsr_tokenizer_spec *spec, tsr_tokenizer_t **out);

/* From GGUF metadata: tokenizer.ggml.{model,tokens,merges,token_type,pre,
 * bos_token_id,eos_token_id,eot_token_id,eom_token_id,padding_token_id,
 * unknown_token_id,add_bos_token,add_eos_token} and tokenizer.chat_template.
 * tokenizer.ggml.model must be "gpt2" (byte-level BPE); anything else is
 * TSR_ERR_UNSUPPORTED naming it. The GGUF handle may be closed afterwards. */
tsr_status tsr_tokenizer_from_gguf(const tsr_gguf_t *g, tsr_tokenizer_t **out);

/* From a Hugging Face tokenizer.json (model.type "BPE", merges as "a b"
 * strings or as ["a","b"] pairs; added_tokens; pre_tokenizer Split /
 * ByteLevel / Digits / Sequence, whose regexes are taken from the file) and
 * optionally tokenizer_config.json (bos_token, eos_token, pad_token,
 * add_bos_token, add_eos_token, chat_template). config_path may be NULL.
 * Malformed or unsupported files are refused with a message naming the file
 * and the JSON path of the problem. */
tsr_status tsr_tokenizer_from_json(const char *tokenizer_json_path,
                                   const char *tokenizer_config_json_path, tsr_tokenizer_t **out);

/* Frees. NULL is allowed. */
void tsr_tokenizer_free(tsr_tokenizer_t *t);

/* ---- encoding ---------------------------------------------------------- */

/* Flags for tsr_tokenizer_encode_ex. */
enum {
    /* Control (special) tokens written in the text, such as "<|im_start|>",
     * become their ids (leftmost-longest match). Without it they are
     * tokenized as plain text. User-defined (non-special added) tokens are
     * always matched, with or without this flag, as in Hugging Face. */
    TSR_TOK_PARSE_SPECIAL = 1u << 0,
    /* Prepend BOS / append EOS when the model's metadata asks for it
     * (add_bos_token / add_eos_token; see tsr_tokenizer_add_bos). */
    TSR_TOK_ADD_SPECIAL = 1u << 1,
};

/* Tokenizes text[0..len) (UTF-8; NUL bytes are ordinary characters). Never
 * adds BOS/EOS: this is exactly the text's tokens (Hugging Face's
 * encode(text, add_special_tokens=False)). parse_special: see
 * TSR_TOK_PARSE_SPECIAL. *ids is malloc'd (caller frees; non-NULL even when
 * *n is 0). Invalid UTF-8 is refused with TSR_ERR_INVALID, naming the byte
 * offset; *ids is then NULL and *n 0. */
tsr_status tsr_tokenizer_encode(const tsr_tokenizer_t *t, const char *text, size_t len,
                                int parse_special, int32_t **ids, size_t *n);

/* As tsr_tokenizer_encode with TSR_TOK_* flags (e.g. ADD_SPECIAL for a
 * prompt that should start with BOS). */
tsr_status tsr_tokenizer_encode_ex(const tsr_tokenizer_t *t, const char *text, size_t len,
                                   unsigned flags, int32_t **ids, size_t *n);

/* ---- decoding ---------------------------------------------------------- */

/* Flags for decoding. */
enum {
    TSR_DETOK_SKIP_SPECIAL = 1u << 0, /* control tokens produce no text */
};

/* Decodes ids[0..n) into a malloc'd, NUL-terminated UTF-8 string (*len
 * excludes the NUL; len may be NULL). Byte-level tokens become their bytes;
 * control and user-defined tokens become their text (or nothing for control
 * tokens with TSR_DETOK_SKIP_SPECIAL). Bytes that do not form valid UTF-8 are
 * replaced by U+FFFD, one per maximal invalid subsequence (as Rust's
 * from_utf8_lossy, hence as Hugging Face). An id outside [0, n_vocab) is
 * TSR_ERR_RANGE. */
tsr_status tsr_tokenizer_decode(const tsr_tokenizer_t *t, const int32_t *ids, size_t n,
                                unsigned flags, char **text, size_t *len);

/* The raw bytes one token stands for (no UTF-8 repair; may be a fragment of
 * a character). Points into the tokenizer; NULL and *len 0 when id is out of
 * range. */
const char *tsr_tokenizer_token_bytes(const tsr_tokenizer_t *t, int32_t id, size_t *len);

/* Streaming detokenizer: push ids one at a time, get back only text that is
 * complete UTF-8. A character split across tokens is held until its last
 * byte arrives; flush() at the end of generation emits what is left (an
 * incomplete tail becomes U+FFFD). The concatenation of all outputs equals
 * tsr_tokenizer_decode of the same ids with the same flags.
 * Fields are private. */
typedef struct {
    const tsr_tokenizer_t *tok;
    unsigned flags;
    unsigned char pend[4]; /* an incomplete UTF-8 sequence (< 4 bytes) */
    size_t n_pend;
    char *out; /* text returned by the last push/flush */
    size_t out_cap;
} tsr_detok_stream;

/* Binds s to tok (which must outlive it). Cannot fail. */
void tsr_detok_stream_init(tsr_detok_stream *s, const tsr_tokenizer_t *tok, unsigned flags);
/* Releases s's buffer. NULL is allowed; s may be init'ed again. */
void tsr_detok_stream_free(tsr_detok_stream *s);
/* Feeds one id. *text and *len receive the newly completed text (possibly
 * empty), valid until the next push/flush/free on s. *text is
 * NUL-terminated. TSR_ERR_RANGE for a bad id (state unchanged). */
tsr_status tsr_detok_stream_push(tsr_detok_stream *s, int32_t id, const char **text, size_t *len);
/* Emits the held incomplete bytes (as U+FFFD) and resets the state. */
tsr_status tsr_detok_stream_flush(tsr_detok_stream *s, const char **text, size_t *len);

/* ---- accessors (all O(1) unless noted; never fail) --------------------- */

size_t tsr_tokenizer_n_vocab(const tsr_tokenizer_t *t);
int32_t tsr_tokenizer_bos(const tsr_tokenizer_t *t); /* -1: none */
int32_t tsr_tokenizer_eos(const tsr_tokenizer_t *t); /* -1: none */
int32_t tsr_tokenizer_eot(const tsr_tokenizer_t *t); /* -1: none */
int32_t tsr_tokenizer_pad(const tsr_tokenizer_t *t); /* -1: none */
int tsr_tokenizer_add_bos(const tsr_tokenizer_t *t); /* model wants BOS first */
/* End of generation: eos, eot, eom, and control tokens whose text is one of
 * <|endoftext|>, <|im_end|>, <|eot_id|>, <|eom_id|>, <|end_of_text|>,
 * <|end|>, <end_of_turn>, </s>. False for out-of-range ids. */
int tsr_tokenizer_is_eog(const tsr_tokenizer_t *t, int32_t id);
/* Token text as stored in the vocab (byte-level form, "Ġthe"), NUL-terminated,
 * owned by t; NULL when id is out of range. */
const char *tsr_tokenizer_token_text(const tsr_tokenizer_t *t, int32_t id);
tsr_token_type tsr_tokenizer_token_type(const tsr_tokenizer_t *t, int32_t id);
/* Id of a control or user-defined token by its exact text ("<|im_end|>"),
 * or -1. O(1) expected. */
int32_t tsr_tokenizer_find_special(const tsr_tokenizer_t *t, const char *text);
/* Id of any vocab entry by its byte-level text ("Ġthe"), or -1. */
int32_t tsr_tokenizer_find_token(const tsr_tokenizer_t *t, const char *text, size_t len);
/* The chat template source (Jinja) or NULL. */
const char *tsr_tokenizer_chat_template(const tsr_tokenizer_t *t);

#endif
