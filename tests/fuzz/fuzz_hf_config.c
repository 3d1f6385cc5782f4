/* tests/fuzz/fuzz_hf_config.c - libFuzzer harness: a Hugging Face
 * config.json's bytes through tsr_hf_config_parse. A config that parses must
 * also pass tsr_model_config_validate (the parser promises it). */
#include <stdint.h>

#include "shard/config.h"
#include "shard/hf_config.h"
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tsr_model_config c;
    if (tsr_hf_config_parse((const char *)data, size, "/fuzz/model/config.json", &c) == TSR_OK)
        FZ_ASSERT(tsr_model_config_validate(&c) == TSR_OK, "accepted but invalid: %s",
                  tsr_error_msg());
    else
        fz_refused("config");
    return 0;
}
