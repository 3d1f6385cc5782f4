/* shard/merge.h - folds a PEFT LoRA adapter into its base model's weights
 * and writes the result as a Hugging Face model directory (`tessera
 * merge-lora`, docs/lora.md "Merging an adapter").
 *
 * The output directory holds config.json (LlamaForCausalLM or
 * Qwen2ForCausalLM), model.safetensors (every weight under its Hugging Face
 * name, F32 or BF16; each adapted projection replaced by
 * W + scaling * B A, scaling from tsr_peft_scaling) and the tokenizer: the
 * base directory's tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json and generation_config.json when the base is a
 * Hugging Face directory; a tokenizer.json (byte-level BPE) and
 * tokenizer_config.json built from the GGUF metadata when it is a GGUF file
 * (as tests/reference/gguf_to_hf.py builds them).
 *
 * What it is not: no sharding, no MPI; one process reads the base one tensor
 * at a time (peak memory ~ the adapter plus the largest tensor). */
#ifndef TSR_SHARD_MERGE_H
#define TSR_SHARD_MERGE_H

#include "base/status.h"

typedef enum {
    TSR_MERGE_F32 = 0,
    TSR_MERGE_BF16 = 1, /* rounded to nearest, ties to even */
} tsr_merge_dtype;

/* Merges adapter directory `adapter_dir` into the model `model_path` (a
 * .gguf file or a Hugging Face directory) and writes `out_dir`.
 *
 * Atomic: everything is written and fsync'd in a new "<out_dir>.tmp-XXXXXX"
 * beside `out_dir`, which is then renamed to `out_dir`; a failure or crash
 * leaves no partial `out_dir` (at worst a stale .tmp- directory). `out_dir`
 * must not exist, or be an empty directory (TSR_ERR_INVALID otherwise: a
 * merge never overwrites a model).
 *
 * Errors: those of tsr_model_file_open and tsr_peft_load (a bad adapter is
 * refused before anything is written), TSR_ERR_UNSUPPORTED for a GGUF
 * tokenizer that cannot be expressed as tokenizer.json (not "gpt2", an
 * unknown tokenizer.ggml.pre), TSR_ERR_IO naming the path. */
tsr_status tsr_merge_lora(const char *model_path, const char *adapter_dir, const char *out_dir,
                          tsr_merge_dtype dtype);

#endif
