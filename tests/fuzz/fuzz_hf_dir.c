/* tests/fuzz/fuzz_hf_dir.c - libFuzzer harness: a Hugging Face model
 * directory, its files given as one input split at FZ_SEP:
 *
 *   model.safetensors.index.json SEP model-00001-of-00002.safetensors
 *   SEP model-00002-of-00002.safetensors SEP config.json
 *
 * An empty first part means no index: the second part is then
 * model.safetensors. Opens the directory's weights (tsr_st_dir_open) and
 * reads back every tensor, then opens it as a model (tsr_model_file_open)
 * and reads one row of each tensor a layer needs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shard/model_file.h"
#include "shard/safetensors.h"
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_part p[4] = {{0}};
    size_t n = fz_split(data, size, p, 4);
    int indexed = p[0].n > 0;
    fz_dir_write("model.safetensors.index.json", indexed ? p[0].p : NULL, p[0].n);
    fz_dir_write(indexed ? "model-00001-of-00002.safetensors" : "model.safetensors",
                 n > 1 ? p[1].p : (const uint8_t *)"", n > 1 ? p[1].n : 0);
    fz_dir_write(indexed ? "model.safetensors" : "model-00001-of-00002.safetensors", NULL, 0);
    fz_dir_write("model-00002-of-00002.safetensors", n > 2 ? p[2].p : (const uint8_t *)"",
                 n > 2 ? p[2].n : 0);
    fz_dir_write("config.json", n > 3 ? p[3].p : (const uint8_t *)"{}", n > 3 ? p[3].n : 2);

    tsr_st_dir_t *d = NULL;
    if (tsr_st_dir_open(fz_dir(), &d) == TSR_OK) {
        FZ_ASSERT(tsr_st_dir_is_sharded(d) == indexed, "sharded %d, index %d",
                  tsr_st_dir_is_sharded(d), indexed);
        for (size_t i = 0; i < tsr_st_dir_n_tensors(d); i++) {
            const tsr_st_tensor *t = tsr_st_dir_tensor_at(d, i);
            FZ_ASSERT(t && tsr_st_dir_find(d, t->name) == t, "tensor %zu not found by name", i);
            if (t->nbytes) {
                volatile uint8_t sink =
                    ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
                (void)sink;
            }
        }
        for (size_t i = 0; i < tsr_st_dir_n_files(d); i++)
            FZ_ASSERT(tsr_st_dir_file_at(d, i), "file %zu missing", i);
        tsr_st_dir_close(d);
    } else {
        FZ_ASSERT(d == NULL, "a failed open left a handle");
        fz_refused("weights");
    }

    tsr_model_file_t *mf = NULL;
    if (tsr_model_file_open(fz_dir(), &mf) != TSR_OK) {
        fz_refused("model");
        return 0;
    }
    const char *names[] = {"token_embd.weight",   "output_norm.weight",  "output.weight",
                           "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight",
                           "blk.0.attn_q.bias"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int rows, cols;
        if (tsr_model_file_shape(mf, names[i], &rows, &cols) != TSR_OK || cols > (1 << 20))
            continue;
        float *row = malloc((size_t)cols * sizeof *row);
        FZ_ASSERT(row, "out of memory");
        (void)tsr_model_file_read(mf, names[i], rows - 1, 1, 0, cols, row);
        free(row);
    }
    tsr_model_file_close(mf);
    return 0;
}
