/* shard/config.h - the hyper-parameters of a Llama-family model, whatever file
 * they came from (GGUF metadata or a Hugging Face config.json).
 *
 * What it is not: it says nothing about how the model is split over ranks
 * (that is the shard plan) nor where the weights are. */
#ifndef TSR_SHARD_CONFIG_H
#define TSR_SHARD_CONFIG_H

#include <stdint.h>

#include "base/status.h"

typedef enum {
    TSR_ARCH_LLAMA = 0, /* Llama 1/2/3, SmolLM, Mistral-style dense models */
    TSR_ARCH_QWEN2 = 1, /* Llama plus biases on Q, K and V */
} tsr_arch;

typedef enum {
    TSR_ROPE_SCALING_NONE = 0,
    TSR_ROPE_SCALING_LINEAR = 1, /* positions divided by factor */
    TSR_ROPE_SCALING_LLAMA3 = 2, /* Llama 3.1 frequency-dependent scaling */
} tsr_rope_scaling;

typedef struct {
    tsr_arch arch;
    char name[128];   /* general.name or the HF directory name; may be "" */
    int n_embd;       /* hidden size C */
    int n_layer;      /* decoder blocks */
    int n_head;       /* query heads */
    int n_head_kv;    /* key/value heads (GQA); divides n_head */
    int head_dim;     /* per-head size; n_head * head_dim need not equal n_embd */
    int n_ff;         /* MLP intermediate size */
    int n_vocab;      /* rows of the embedding */
    int n_ctx_train;  /* context length the model was trained for */
    float rms_eps;    /* RMSNorm epsilon */
    float rope_theta; /* RoPE base frequency */
    tsr_rope_scaling rope_scaling;
    float rope_factor;           /* LINEAR and LLAMA3 */
    float rope_low_freq_factor;  /* LLAMA3 */
    float rope_high_freq_factor; /* LLAMA3 */
    int rope_orig_ctx;           /* LLAMA3: original_max_position_embeddings */
    int tied_embeddings;         /* LM head reuses the token embedding */
    int qkv_bias;                /* Q, K, V projections carry biases (Qwen2) */
} tsr_model_config;

/* Checks the invariants every consumer relies on (positive sizes, n_head a
 * multiple of n_head_kv, even head_dim, finite eps/theta). Returns
 * TSR_ERR_FORMAT naming the offending field. */
tsr_status tsr_model_config_validate(const tsr_model_config *c);

#endif
