/* tests/fuzz/fuzz_peft.c - libFuzzer harness: a PEFT LoRA adapter directory,
 * given as one input split at FZ_SEP: adapter_config.json SEP
 * adapter_model.safetensors. Loads it (tsr_peft_load) for a small model
 * (2 layers, n_embd 16, 4 heads of 4, 2 KV heads, n_ff 32); an adapter that
 * loads must have a positive rank, finite alpha, targets within the seven
 * projections, and finite matrices of every targeted (layer, projection). */
#include <math.h>
#include <stdint.h>

#include "shard/peft.h"
#include "tests/fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_part p[2] = {{0}};
    size_t n = fz_split(data, size, p, 2);
    fz_dir_write(TSR_PEFT_CONFIG_FILE, p[0].p, p[0].n);
    fz_dir_write(TSR_PEFT_WEIGHTS_FILE, n > 1 ? p[1].p : NULL, n > 1 ? p[1].n : 0);
    tsr_model_config cfg = {0};
    cfg.arch = TSR_ARCH_LLAMA;
    cfg.n_embd = 16, cfg.n_layer = 2, cfg.n_head = 4, cfg.n_head_kv = 2, cfg.head_dim = 4;
    cfg.n_ff = 32, cfg.n_vocab = 64, cfg.n_ctx_train = 128;
    cfg.rms_eps = 1e-5f, cfg.rope_theta = 10000.0f;
    tsr_peft_adapter a;
    if (tsr_peft_load(fz_dir(), &cfg, &a) != TSR_OK) {
        fz_refused("adapter");
        return 0;
    }
    FZ_ASSERT(a.r > 0 && isfinite(a.alpha) && a.targets && !(a.targets & ~TSR_LORA_TARGETS_ALL),
              "accepted r %d, alpha %g, targets %#x", a.r, (double)a.alpha, a.targets);
    FZ_ASSERT(a.n_layers == cfg.n_layer, "n_layers %d", a.n_layers);
    for (int l = 0; l < a.n_layers; l++)
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            int on = (a.targets & TSR_LORA_TARGET_BIT(t)) != 0;
            float *A = a.A[TSR_PEFT_IDX(l, t)], *B = a.B[TSR_PEFT_IDX(l, t)];
            FZ_ASSERT(on == (A != NULL) && on == (B != NULL), "layer %d target %d", l, t);
            if (!on)
                continue;
            int d_in, d_out;
            FZ_ASSERT(tsr_peft_target_dims(&cfg, t, &d_in, &d_out) == TSR_OK, "dims");
            for (int i = 0; i < a.r * d_in; i++)
                FZ_ASSERT(isfinite(A[i]), "A of layer %d target %d: %g", l, t, (double)A[i]);
            for (int i = 0; i < d_out * a.r; i++)
                FZ_ASSERT(isfinite(B[i]), "B of layer %d target %d: %g", l, t, (double)B[i]);
        }
    tsr_peft_free(&a);
    return 0;
}
