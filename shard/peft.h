/* shard/peft.h - LoRA adapters on disk in Hugging Face PEFT's format: a
 * directory holding adapter_config.json and adapter_model.safetensors, as
 * PeftModel.save_pretrained() writes them and PeftModel.from_pretrained()
 * reads them (docs/lora.md describes the format and what is accepted).
 *
 * The adapter here is a plain host description: full (unsharded) row-major
 * f32 matrices, one A (r, d_in) and one B (d_out, r) per adapted projection
 * of every layer, as PyTorch's nn.Linear stores them. The adapted weight of a
 * projection is W + scaling * B A, scaling = alpha / r (alpha / sqrt(r) with
 * rsLoRA); tsr_peft_scaling() computes it.
 *
 * What it is not: it applies nothing, shards nothing and knows no device
 * memory (the in-memory adapter and its kernels do that); it reads and writes
 * files. It does not convert Q/K rows: Tessera's Q/K weights are in Hugging
 * Face's (rotate-half) order for every model format, so a PEFT adapter's
 * matrices apply unchanged. */
#ifndef TSR_SHARD_PEFT_H
#define TSR_SHARD_PEFT_H

#include <stddef.h>

#include "base/fs.h"
#include "base/status.h"
#include "shard/config.h"
#include "shard/lora_targets.h"

/* The files of an adapter directory, and the prefix of PEFT's tensor names. */
#define TSR_PEFT_CONFIG_FILE TSR_FS_ADAPTER_CONFIG /* "adapter_config.json" */
#define TSR_PEFT_WEIGHTS_FILE "adapter_model.safetensors"
#define TSR_PEFT_BIN_FILE "adapter_model.bin" /* PyTorch pickle: refused */
#define TSR_PEFT_NAME_PREFIX "base_model.model.model.layers."

/* The projections are shard/lora_targets.h's tsr_lora_target; an adapter's
 * `targets` is a bitmask of TSR_LORA_TARGET_BIT(t). */

/* Index of (layer, target) in A and B. */
#define TSR_PEFT_IDX(layer, t) ((layer)*TSR_LORA_N_TARGETS + (t))

typedef struct {
    int r;                /* rank, > 0 */
    float alpha;          /* lora_alpha; finite */
    int use_rslora;       /* scaling alpha / sqrt(r) instead of alpha / r */
    float dropout;        /* lora_dropout in [0, 1); training only */
    unsigned targets;     /* TSR_LORA_TARGET_BIT(t) mask; non-zero, within TSR_LORA_TARGETS_ALL */
    int n_layers;         /* = the model config's n_layer */
    char base_model[256]; /* base_model_name_or_path, "" when unknown */
    /* [n_layers * TSR_LORA_N_TARGETS], indexed TSR_PEFT_IDX(layer, t); NULL
     * where t is not in `targets`. A[i] is (r, d_in), B[i] is (d_out, r), both
     * row-major f32, each its own allocation owned by the adapter (with
     * tsr_peft_init/load; a caller that fills the struct itself owns its
     * pointers and must not call tsr_peft_free on it). */
    float **A;
    float **B;
} tsr_peft_adapter;

/* PEFT's module name of `t` ("q_proj"), or NULL when out of range. */
const char *tsr_peft_target_name(int t);

/* The (d_in, d_out) of projection `t` for this model: q: n_embd ->
 * n_head*head_dim; k, v: n_embd -> n_head_kv*head_dim; o: n_head*head_dim ->
 * n_embd; gate, up: n_embd -> n_ff; down: n_ff -> n_embd. TSR_ERR_INVALID
 * when `t` is out of range. */
tsr_status tsr_peft_target_dims(const tsr_model_config *cfg, int t, int *d_in, int *d_out);

/* alpha / r, or alpha / sqrt(r) with use_rslora (PEFT's LoraLayer scaling). */
float tsr_peft_scaling(const tsr_peft_adapter *a);

/* Allocates an adapter for `cfg` with every targeted A and B zero-filled
 * (the caller initialises them; PEFT's init is A random, B zero); dropout 0,
 * use_rslora 0, base_model "". On error *a is left zeroed (tsr_peft_free on
 * it is safe). */
tsr_status tsr_peft_init(tsr_peft_adapter *a, const tsr_model_config *cfg, int r, float alpha,
                         unsigned targets);

/* Frees the matrices and the pointer arrays and zeroes *a. NULL, and a
 * zeroed adapter, are allowed. */
void tsr_peft_free(tsr_peft_adapter *a);

/* Sets a->n_layers = cfg->n_layer and allocates a->A and a->B with every
 * pointer NULL, for a reader that fills the matrices itself (tsr_peft_free
 * frees it). TSR_ERR_NOMEM. */
tsr_status tsr_peft_alloc_arrays(tsr_peft_adapter *a, const tsr_model_config *cfg);

/* PEFT's name of lora_A (ab = 0) or lora_B (ab = 1) of (layer, t) into buf
 * (cap bytes; 160 always suffice): TSR_PEFT_NAME_PREFIX
 * "{layer}.{self_attn|mlp}.{module}.lora_{A|B}.weight". */
void tsr_peft_tensor_name(char *buf, size_t cap, int layer, int t, int ab);

/* Parses a PEFT LoRA tensor name: returns 1 and fills layer/t/ab when `name`
 * is one tsr_peft_tensor_name writes, with a canonical decimal layer (its
 * range is not checked here); else 0. */
int tsr_peft_parse_tensor_name(const char *name, long *layer, int *t, int *ab);

/* Writes `a` as a PEFT adapter directory `dir`: adapter_config.json (the keys
 * PeftConfig/LoraConfig write, task_type CAUSAL_LM) and
 * adapter_model.safetensors (F32, PEFT's tensor names
 * base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
 * and ...mlp.{gate,up,down}_proj...).
 *
 * Atomic (base/fs.h, tsr_fs_dir_write_*): both files are written and
 * fsync'd in a new folder "<dir>.tmp-XXXXXX" beside `dir`, which then
 * replaces `dir` in one rename (renameat2 RENAME_EXCHANGE when `dir` exists;
 * then the old adapter, now under the temp name, is removed). At every
 * instant `dir` is either the complete old adapter or the complete new one;
 * a crash can leave a stale "<dir>.tmp-XXXXXX" beside it, never a
 * half-written `dir`. Where the file system cannot exchange (EINVAL), the old
 * `dir` is first renamed to "<dir>.old-XXXXXX": a crash between the two
 * renames leaves no `dir`, the old adapter complete under the .old name and
 * the new one complete under the .tmp name (docs/lora.md). An existing `dir`
 * is replaced only as tsr_fs_check_adapter_dir allows: a directory (not a
 * symbolic link) holding nothing but regular files, empty or with an
 * adapter_config.json (so a wrong path cannot wipe a real directory); other
 * files in it are dropped.
 *
 * Checks first (TSR_ERR_INVALID, nothing written): r > 0, finite alpha,
 * dropout in [0, 1), targets within TSR_LORA_TARGETS_ALL and non-zero,
 * n_layers == cfg->n_layer, every targeted A/B non-NULL and every other
 * NULL, every value finite (the message names the tensor), base_model valid
 * UTF-8; then `dir` as tsr_fs_check_adapter_dir checks it (its errors and
 * codes). TSR_ERR_IO for file-system errors (the message names the path);
 * an error after the new adapter is in place (the final fsync of the parent
 * directory) is also reported.
 *
 * Concurrent saves to one `dir` are not coordinated (the last swap wins;
 * each leaves a complete adapter).
 *
 * Test hook (read from the environment; for tests/peft only):
 * TSR_PEFT_SAVE_PAUSE=<stage> prints "tsr_peft_save: paused at <stage>" to
 * stderr and sleeps 60 s at that stage: "tensors" (safetensors written, no
 * config yet), "files" (both files fsync'd, before any rename), "aside" (the
 * old dir renamed aside; fallback path only), "swapped" (new dir in place,
 * old not yet removed). TSR_PEFT_SAVE_NO_EXCHANGE=1 forces the fallback. */
tsr_status tsr_peft_save(const char *dir, const tsr_peft_adapter *a, const tsr_model_config *cfg);

/* Reads the PEFT adapter directory `dir` for a model with config `cfg` into
 * *out (allocated; tsr_peft_free it). Accepts F32, F16 and BF16 tensors
 * (converted to f32 exactly) and PEFT's adapter_config.json (keys this
 * reader does not know are ignored). targets is the set of projections
 * that have tensors; each must be adapted in every layer with both lora_A
 * (r, d_in) and lora_B (d_out, r) of exactly those shapes.
 *
 * Refused, with a message naming the file, key or tensor (and the expected
 * and found shape): TSR_ERR_IO (missing directory or files),
 * TSR_ERR_UNSUPPORTED (adapter_model.bin only; peft_type other than LORA;
 * use_dora, fan_in_fan_out, lora_bias, use_qalora true; non-empty
 * modules_to_save, rank_pattern, alpha_pattern; layers_to_transform,
 * layer_replication, trainable_token_indices, alora_invocation_tokens,
 * target_parameters, use_bdlora, kasa_config, monteclora_config,
 * arrow_config set; init_lora_weights pissa*, olora, corda, loftq, lora_ga,
 * which change the base weights; a target_modules
 * entry that is not one of the seven projections; bias, DoRA or embedding
 * tensors; dtypes other than F32/F16/BF16), TSR_ERR_FORMAT (bad JSON or
 * field types, a corrupt safetensors file, an unknown tensor name, a layer
 * index outside the model, a wrong shape, a missing lora_A/lora_B, a target
 * missing in some layer, tensors disagreeing with a target_modules list, a
 * non-finite value). On error *out is zeroed. */
tsr_status tsr_peft_load(const char *dir, const tsr_model_config *cfg, tsr_peft_adapter *out);

#endif
