/* shard/config.c - invariants of tsr_model_config. */
#include "shard/config.h"

#include <math.h>

tsr_status tsr_model_config_validate(const tsr_model_config *c) {
    struct {
        const char *name;
        int v;
    } sizes[] = {{"n_embd", c->n_embd},       {"n_layer", c->n_layer},        {"n_head", c->n_head},
                 {"n_head_kv", c->n_head_kv}, {"head_dim", c->head_dim},      {"n_ff", c->n_ff},
                 {"n_vocab", c->n_vocab},     {"n_ctx_train", c->n_ctx_train}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v <= 0 || sizes[i].v > (1 << 24))
            return tsr_error_set(TSR_ERR_FORMAT, "model config: %s = %d is out of range",
                                 sizes[i].name, sizes[i].v);
    if (c->n_head % c->n_head_kv)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "model config: %d attention heads is not a multiple of %d KV heads",
                             c->n_head, c->n_head_kv);
    if (c->head_dim % 2)
        return tsr_error_set(TSR_ERR_FORMAT, "model config: head_dim %d must be even for RoPE",
                             c->head_dim);
    if (!(c->rms_eps > 0 && c->rms_eps < 1))
        return tsr_error_set(TSR_ERR_FORMAT, "model config: rms_eps %g is out of range",
                             (double)c->rms_eps);
    if (!(c->rope_theta > 1 && isfinite(c->rope_theta)))
        return tsr_error_set(TSR_ERR_FORMAT, "model config: rope_theta %g is out of range",
                             (double)c->rope_theta);
    if (c->rope_scaling != TSR_ROPE_SCALING_NONE &&
        !(c->rope_factor >= 1 && isfinite(c->rope_factor)))
        return tsr_error_set(TSR_ERR_FORMAT, "model config: rope scaling factor %g is out of range",
                             (double)c->rope_factor);
    if (c->rope_scaling == TSR_ROPE_SCALING_LLAMA3 &&
        !(c->rope_orig_ctx > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
          c->rope_low_freq_factor > 0))
        return tsr_error_set(TSR_ERR_FORMAT,
                             "model config: llama3 rope scaling needs original context > 0 and "
                             "high_freq_factor > low_freq_factor > 0");
    return TSR_OK;
}
