/* tests/fuzz/fuzz_launch_config.c - libFuzzer harness: tessera-launch's YAML
 * config (launcher/launch_config.c over libyaml). Loads it (through a
 * memfd), then merges it over a second copy of itself, as the launcher
 * merges flags over a file. */
#include <stdint.h>

#include "launcher/launch_config.h"
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static fz_memfile f;
    fz_memfile_set(&f, data, size);
    tsr_launch_config a = TSR_LAUNCH_CONFIG_INIT, b = TSR_LAUNCH_CONFIG_INIT;
    if (tsr_launch_config_load(f.path, &a) == TSR_OK &&
        tsr_launch_config_load(f.path, &b) == TSR_OK) {
        FZ_ASSERT(a.n_pp_layers >= 0 && a.n_pp_layers <= TSR_LAUNCH_MAX_STAGES, "%d stages",
                  a.n_pp_layers);
        (void)tsr_launch_config_merge(&a, &b);
    } else {
        fz_refused("config");
    }
    tsr_launch_config_free(&a);
    tsr_launch_config_free(&b);
    return 0;
}
