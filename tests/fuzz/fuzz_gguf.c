/* tests/fuzz/fuzz_gguf.c - libFuzzer harness: a GGUF file's bytes.
 *
 * Parses the image in memory (tsr_gguf_open_memory) and reads back every
 * key, array and tensor descriptor through the public getters; when the
 * image parses, builds the tokenizer from its metadata and opens it as a
 * model (tsr_model_file_open, through a memfd) and reads a row of every
 * tensor the config implies. Nothing may crash, leak or hang; a parsed
 * tensor must lie inside the image. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/tokenizer.h"
#include "shard/gguf.h"
#include "shard/model_file.h"
#include "tests/fuzz/fuzz_common.h"

static void read_back(const tsr_gguf_t *g, const uint8_t *data, size_t size) {
    for (size_t i = 0; i < tsr_gguf_n_kv(g); i++) {
        const tsr_gguf_kv *kv = tsr_gguf_kv_at(g, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(kv->key.len < 255 ? kv->key.len : 255),
                 kv->key.ptr);
        FZ_ASSERT((const uint8_t *)kv->key.ptr >= data &&
                      (const uint8_t *)kv->key.ptr + kv->key.len <= data + size,
                  "key %zu outside the image", i);
        uint64_t u;
        int64_t s;
        double f;
        int b;
        tsr_strref str;
        (void)tsr_gguf_get_u64(g, key, &u);
        (void)tsr_gguf_get_i64(g, key, &s);
        (void)tsr_gguf_get_f64(g, key, &f);
        (void)tsr_gguf_get_bool(g, key, &b);
        if (tsr_gguf_get_str(g, key, &str) == TSR_OK)
            FZ_ASSERT((const uint8_t *)str.ptr >= data &&
                          (const uint8_t *)str.ptr + str.len <= data + size,
                      "string '%s' outside the image", key);
        const tsr_strref *strs;
        uint64_t n;
        if (tsr_gguf_get_str_arr(g, key, &strs, &n) == TSR_OK)
            for (uint64_t j = 0; j < n; j++)
                FZ_ASSERT((const uint8_t *)strs[j].ptr >= data &&
                              (const uint8_t *)strs[j].ptr + strs[j].len <= data + size,
                          "string %llu of '%s' outside the image", (unsigned long long)j, key);
        int64_t *ia = NULL;
        double *fa = NULL;
        if (tsr_gguf_get_i64_arr(g, key, &ia, &n) == TSR_OK)
            free(ia);
        if (tsr_gguf_get_f64_arr(g, key, &fa, &n) == TSR_OK)
            free(fa);
        FZ_ASSERT(tsr_gguf_find(g, key) != NULL || kv->key.len >= 255 ||
                      memchr(kv->key.ptr, 0, kv->key.len),
                  "key '%s' not found by name", key);
    }
    for (size_t i = 0; i < tsr_gguf_n_tensors(g); i++) {
        const tsr_gguf_tensor *t = tsr_gguf_tensor_at(g, i);
        const uint8_t *d = t->data;
        FZ_ASSERT(d >= data && d <= data + size && t->nbytes <= (uint64_t)(data + size - d),
                  "tensor %zu (%llu bytes at offset %llu) outside the image", i,
                  (unsigned long long)t->nbytes, (unsigned long long)t->offset);
        if (t->nbytes) {
            volatile uint8_t sink = d[0] ^ d[t->nbytes - 1]; /* ASan checks both ends */
            (void)sink;
        }
    }
}

/* Every tensor a model needs, one row each (the dequantizers over whatever
 * blocks the file holds). */
static void read_model(const uint8_t *data, size_t size) {
    static fz_memfile f;
    fz_memfile_set(&f, data, size);
    tsr_model_file_t *mf = NULL;
    if (tsr_model_file_open(f.path, &mf) != TSR_OK) {
        fz_refused("model");
        return;
    }
    const tsr_model_config *c = tsr_model_file_config(mf);
    const char *names[] = {
        "token_embd.weight",        "output_norm.weight",    "output.weight",
        "blk.0.attn_q.weight",      "blk.0.attn_k.weight",   "blk.0.attn_v.weight",
        "blk.0.attn_output.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight",
        "blk.0.ffn_down.weight",    "blk.0.attn_norm.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int rows, cols;
        if (tsr_model_file_shape(mf, names[i], &rows, &cols) != TSR_OK)
            continue;
        FZ_ASSERT(rows > 0 && cols > 0, "%s is %d x %d", names[i], rows, cols);
        if (cols > (1 << 20))
            continue;
        float *row = malloc((size_t)cols * sizeof *row);
        FZ_ASSERT(row, "out of memory");
        (void)tsr_model_file_read(mf, names[i], rows - 1, 1, 0, cols, row);
        free(row);
    }
    (void)c;
    tsr_model_file_close(mf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tsr_gguf_t *g = NULL;
    if (tsr_gguf_open_memory(data, size, "fuzz.gguf", &g) != TSR_OK) {
        FZ_ASSERT(g == NULL, "a failed open left a handle");
        fz_refused("gguf");
        return 0;
    }
    read_back(g, data, size);
    tsr_tokenizer_t *tok = NULL;
    if (tsr_tokenizer_from_gguf(g, &tok) == TSR_OK) {
        int32_t *ids = NULL;
        size_t n = 0;
        static const char text[] = "Hello <|im_start|> world 123 \xc3\xa9";
        if (tsr_tokenizer_encode(tok, text, sizeof text - 1, 1, &ids, &n) == TSR_OK) {
            char *back = NULL;
            if (tsr_tokenizer_decode(tok, ids, n, 0, &back, NULL) == TSR_OK)
                free(back);
        }
        free(ids);
        tsr_tokenizer_free(tok);
    } else {
        fz_refused("tokenizer");
    }
    tsr_gguf_close(g);
    read_model(data, size);
    return 0;
}
