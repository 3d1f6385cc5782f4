/* tests/fuzz/fuzz_train_jsonl.c - libFuzzer harness: a training JSONL file
 * (runtime/train/train_record.c's records, then train_data.c's tokenization,
 * chat rendering and loss masks) with the default model's tokenizer when
 * TESSERA_FUZZ_MODEL names it. Data that loads must be consistent: examples
 * delimited in order, ids in the vocab, the target count equal to the sum of
 * the mask, no example longer than the limit. */
#include <stdint.h>

#include "runtime/train/train_data.h"
#include "tests/fuzz/fuzz_common.h"

#define MAX_TOKENS 512

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    (void)fz_tokenizer();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static fz_memfile f;
    fz_memfile_set(&f, data, size);
    const tsr_tokenizer_t *tok = fz_tokenizer();
    tsr_train_data d;
    if (tsr_train_data_load(f.path, tok, MAX_TOKENS, &d) != TSR_OK) {
        fz_refused("training data");
        return 0;
    }
    FZ_ASSERT(d.n_examples > 0 && d.start[0] == 0, "%d examples, start %d", d.n_examples,
              d.start[0]);
    long targets = 0;
    for (int e = 0; e < d.n_examples; e++) {
        int len = d.start[e + 1] - d.start[e];
        FZ_ASSERT(len > 0 && len <= MAX_TOKENS, "example %d has %d tokens", e, len);
        FZ_ASSERT(d.line[e] >= 1, "example %d line %d", e, d.line[e]);
        for (int i = d.start[e]; i < d.start[e + 1]; i++) {
            FZ_ASSERT(d.tokens[i] >= 0 && (size_t)d.tokens[i] < tsr_tokenizer_n_vocab(tok),
                      "token %d", d.tokens[i]);
            targets += d.target[i];
        }
    }
    FZ_ASSERT(targets == d.n_target, "%ld targets, n_target %ld", targets, d.n_target);
    tsr_train_data_free(&d);
    return 0;
}
