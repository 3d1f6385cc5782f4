/* tests/fuzz/fuzz_safetensors.c - libFuzzer harness: one safetensors file's
 * bytes (the 8-byte header length, the JSON header, the data).
 *
 * Parses the image in memory (tsr_safetensors_open_memory) and reads back
 * every tensor and metadata entry; a parsed tensor must lie inside the image,
 * be found by its name, and have nbytes = n_elem * elem_size. */
#include <stdint.h>
#include <string.h>

#include "shard/safetensors.h"
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tsr_safetensors_t *st = NULL;
    if (tsr_safetensors_open_memory(data, size, "fuzz.safetensors", &st) != TSR_OK) {
        FZ_ASSERT(st == NULL, "a failed open left a handle");
        return 0;
    }
    const char *prev = NULL;
    for (size_t i = 0; i < tsr_safetensors_n_tensors(st); i++) {
        const tsr_st_tensor *t = tsr_safetensors_tensor_at(st, i);
        FZ_ASSERT(t && t->name, "tensor %zu missing", i);
        FZ_ASSERT(!prev || strcmp(prev, t->name) < 0, "tensors out of order at %zu", i);
        prev = t->name;
        FZ_ASSERT(tsr_safetensors_find_tensor(st, t->name) == t, "'%s' not found", t->name);
        FZ_ASSERT(t->n_dims <= TSR_ST_MAX_DIMS, "'%s' has %u dims", t->name, t->n_dims);
        FZ_ASSERT(t->nbytes == t->n_elem * t->elem_size, "'%s': nbytes %zu", t->name, t->nbytes);
        const uint8_t *d = t->data;
        FZ_ASSERT(d >= data && d <= data + size && t->nbytes <= (size_t)(data + size - d),
                  "'%s' outside the image", t->name);
        if (t->nbytes) {
            volatile uint8_t sink = d[0] ^ d[t->nbytes - 1];
            (void)sink;
        }
        (void)tsr_st_tensor_loadable(t);
    }
    FZ_ASSERT(tsr_safetensors_tensor_at(st, tsr_safetensors_n_tensors(st)) == NULL,
              "tensor_at past the end");
    for (size_t i = 0; i < tsr_safetensors_n_meta(st); i++) {
        const char *k, *v;
        tsr_safetensors_meta_at(st, i, &k, &v);
        FZ_ASSERT(k && v, "metadata %zu missing", i);
        FZ_ASSERT(tsr_safetensors_find_meta(st, k) != NULL, "metadata '%s' not found", k);
    }
    tsr_safetensors_close(st);
    return 0;
}
