/* shard/hf_config.h - reads a Hugging Face config.json into a
 * tsr_model_config.
 *
 * Accepted models: model_type "llama" (LlamaForCausalLM), "mistral"
 * (MistralForCausalLM) and "qwen2" (Qwen2ForCausalLM). Fields and defaults
 * follow transformers' LlamaConfig / MistralConfig / Qwen2Config:
 *
 *   required: hidden_size, intermediate_size, num_attention_heads,
 *             num_hidden_layers, vocab_size, max_position_embeddings
 *             (JSON integers > 0)
 *   defaults: num_key_value_heads = num_attention_heads,
 *             head_dim = hidden_size / num_attention_heads (must divide),
 *             rms_norm_eps = 1e-6, rope_theta = 10000,
 *             tie_word_embeddings = false, attention_bias = false,
 *             hidden_act = "silu" (anything else is unsupported)
 *   rope_scaling: null, absent, {"type"|"rope_type": "default"}, "linear"
 *             (factor) or "llama3" (factor, low_freq_factor,
 *             high_freq_factor, original_max_position_embeddings); any other
 *             type ("dynamic", "yarn", ...) is TSR_ERR_UNSUPPORTED.
 *
 * Arch: qwen2 gives TSR_ARCH_QWEN2 with qkv_bias = 1; llama and mistral give
 * TSR_ARCH_LLAMA with qkv_bias = attention_bias. Caution: in transformers a
 * Llama attention_bias also puts a bias on o_proj, which tsr_model_config
 * cannot express; the weight loader must refuse an o_proj.bias it cannot use.
 * mlp_bias = true is refused here. Mistral's sliding_window W (when not null)
 * caps n_ctx_train at W, so that full attention over at most W tokens equals
 * the model's sliding-window attention; Qwen2's use_sliding_window = true is
 * refused.
 *
 * name: "_name_or_path" when present and non-empty, else the basename of the
 * directory holding config.json ("" when there is none), truncated to fit.
 *
 * What it is not: it reads no weights and no tokenizer files, and ignores
 * fields that do not change the forward pass (torch_dtype, bos/eos ids...). */
#ifndef TSR_SHARD_HF_CONFIG_H
#define TSR_SHARD_HF_CONFIG_H

#include <stddef.h>

#include "base/status.h"
#include "shard/config.h"

/* Reads `config_json_path` and fills *out, then runs
 * tsr_model_config_validate(). On error *out is untouched and the message
 * names the file and the field: TSR_ERR_IO (cannot read), TSR_ERR_FORMAT
 * (bad JSON, missing field, wrong JSON type, value out of range, heads not a
 * multiple of KV heads), TSR_ERR_UNSUPPORTED (model type, activation, rope
 * scaling type or feature Tessera does not implement). */
tsr_status tsr_hf_config_load(const char *config_json_path, tsr_model_config *out);

/* Same, from JSON text in memory (`len` bytes, not NUL-terminated). `name`
 * is used in messages and, like a path, for the model-name fallback. */
tsr_status tsr_hf_config_parse(const char *json_text, size_t len, const char *name,
                               tsr_model_config *out);

#endif
