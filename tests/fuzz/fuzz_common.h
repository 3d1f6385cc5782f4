/* tests/fuzz/fuzz_common.h - what the libFuzzer harnesses of tests/fuzz share:
 * the fuzz input split into several files, files whose bytes come from memory
 * (a memfd, reached as /proc/self/fd/N, for the readers that only take a
 * path), a scratch directory for the readers that take a directory, and the
 * tokenizer the encode/validate harnesses run with.
 *
 * What it is not: a test framework. A harness is one LLVMFuzzerTestOneInput;
 * an invariant it checks is FZ_ASSERT, which aborts, so libFuzzer reports it
 * as a crash and keeps the input. */
#ifndef TSR_TESTS_FUZZ_COMMON_H
#define TSR_TESTS_FUZZ_COMMON_H

#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/tokenizer/tokenizer.h"
#include "shard/gguf.h"

/* Aborts (a libFuzzer crash, input kept) when `cond` is false. */
#define FZ_ASSERT(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* With TSR_FUZZ_DEBUG set, says why an input was refused (to check that a
 * seed gets as far as it should: TSR_FUZZ_DEBUG=1 ./fuzz_x -runs=0 seeds/x). */
static inline void fz_refused(const char *what) {
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("TSR_FUZZ_DEBUG") != NULL;
    if (verbose)
        fprintf(stderr, "fuzz: %s refused: %s\n", what, tsr_error_msg());
}

/* The separator between the files of a multi-file input
 * ("tokenizer.json <SEP> tokenizer_config.json"). Seeds are written with it
 * (tests/fuzz/make_seeds.py) and each harness's dictionary holds it. */
#define FZ_SEP "\n%%%%\n"
#define FZ_SEP_LEN (sizeof FZ_SEP - 1)

typedef struct {
    const uint8_t *p;
    size_t n;
} fz_part;

/* Splits data at FZ_SEP into at most `max` parts (the last part keeps any
 * further separators). Returns the number of parts (>= 1). */
static inline size_t fz_split(const uint8_t *data, size_t size, fz_part *parts, size_t max) {
    size_t k = 0, start = 0;
    for (size_t i = 0; k + 1 < max && i + FZ_SEP_LEN <= size; i++) {
        if (memcmp(data + i, FZ_SEP, FZ_SEP_LEN) == 0) {
            parts[k].p = data + start;
            parts[k].n = i - start;
            k++;
            start = i + FZ_SEP_LEN;
            i = start - 1;
        }
    }
    parts[k].p = data + start;
    parts[k].n = size - start;
    return k + 1;
}

/* A file whose contents are set from memory: a memfd, path "/proc/self/fd/N".
 * Made once and rewritten for each input. */
typedef struct {
    int fd;
    char path[64];
} fz_memfile;

static inline void fz_memfile_set(fz_memfile *f, const void *data, size_t n) {
    if (f->fd <= 0) {
        f->fd = memfd_create("tsr-fuzz", 0);
        FZ_ASSERT(f->fd > 0, "memfd_create: %s", strerror(errno));
        snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
    }
    FZ_ASSERT(ftruncate(f->fd, 0) == 0, "ftruncate: %s", strerror(errno));
    const uint8_t *p = data;
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(f->fd, p + done, n - done, (off_t)done);
        FZ_ASSERT(w > 0, "pwrite: %s", strerror(errno));
        done += (size_t)w;
    }
}

/* ---- a scratch directory, removed at exit ---- */

static char fz_dir_root[512];

static int fz_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void fz_dir_remove(void) {
    if (fz_dir_root[0])
        nftw(fz_dir_root, fz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* $TMPDIR/tsr-fuzz-XXXXXX, made on the first call. */
static inline const char *fz_dir(void) {
    if (!fz_dir_root[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(fz_dir_root, sizeof fz_dir_root, "%s/tsr-fuzz-XXXXXX",
                 base && base[0] ? base : "/tmp");
        FZ_ASSERT(mkdtemp(fz_dir_root), "mkdtemp %s: %s", fz_dir_root, strerror(errno));
        atexit(fz_dir_remove);
    }
    return fz_dir_root;
}

/* Writes data to <fz_dir()>/name (replacing it); data NULL removes it. */
static inline void fz_dir_write(const char *name, const void *data, size_t n) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", fz_dir(), name);
    if (!data) {
        unlink(p);
        return;
    }
    FILE *f = fopen(p, "wb");
    FZ_ASSERT(f, "cannot create %s: %s", p, strerror(errno));
    FZ_ASSERT(n == 0 || fwrite(data, 1, n, f) == n, "cannot write %s", p);
    FZ_ASSERT(fclose(f) == 0, "cannot close %s", p);
}

/* ---- the tokenizer of the encode / request harnesses ---- */

/* The byte-level token text of byte b (GPT-2's byte-to-unicode map:
 * printable bytes stand for themselves, the 68 others for U+0100 + k in byte
 * order) into out (3 bytes suffice); returns its length. */
static inline size_t fz_byte_token(int b, char *out) {
    int k = 0;
    for (int i = 0; i < b; i++)
        k += !((i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE);
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    unsigned cp = printable ? (unsigned)b : 0x100u + (unsigned)k;
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* The default model's tokenizer when TESSERA_FUZZ_MODEL names a GGUF file
 * (the ctest entries set it to the fetched SmolLM2), else a small one built
 * here: the 256 byte tokens, a few merges, and ChatML's special tokens and
 * template, so a harness still runs on a machine without the model. Loaded
 * once; NULL never (a model that does not load aborts: the setup is wrong). */
static inline const tsr_tokenizer_t *fz_tokenizer(void) {
    static tsr_tokenizer_t *tok;
    if (tok)
        return tok;
    const char *model = getenv("TESSERA_FUZZ_MODEL");
    if (model && model[0] && access(model, R_OK) == 0) {
        tsr_gguf_t *g = NULL;
        FZ_ASSERT(tsr_gguf_open(model, &g) == TSR_OK, "%s", tsr_error_msg());
        FZ_ASSERT(tsr_tokenizer_from_gguf(g, &tok) == TSR_OK, "%s", tsr_error_msg());
        tsr_gguf_close(g);
        return tok;
    }
    static char store[256 + 8][8];
    static tsr_strref toks[256 + 8];
    static int32_t types[256 + 8];
    size_t n = 0;
    for (int b = 0; b < 256; b++) {
        toks[n].ptr = store[n];
        toks[n].len = fz_byte_token(b, store[n]);
        types[n++] = TSR_TOKEN_TYPE_NORMAL;
    }
    static const char *extra[] = {"Ġt",           "he",        "Ġthe", "<|endoftext|>",
                                  "<|im_start|>", "<|im_end|>"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        toks[n].ptr = extra[i];
        toks[n].len = strlen(extra[i]);
        types[n++] = extra[i][0] == '<' ? TSR_TOKEN_TYPE_CONTROL : TSR_TOKEN_TYPE_NORMAL;
    }
    static const tsr_strref merges[] = {{"Ġ t", 4}, {"h e", 3}, {"Ġt he", 6}};
    tsr_tokenizer_spec spec = TSR_TOKENIZER_SPEC_INIT;
    spec.n_tokens = n;
    spec.tokens = toks;
    spec.token_types = types;
    spec.n_merges = 3;
    spec.merges = merges;
    spec.strict_merges = 1;
    spec.bos_id = spec.eos_id = (int32_t)n - 3;
    spec.chat_template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
                         "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
    FZ_ASSERT(tsr_tokenizer_from_spec(&spec, &tok) == TSR_OK, "%s", tsr_error_msg());
    return tok;
}

#endif
