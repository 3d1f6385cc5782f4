/* shard/lora_targets.h - the projections a LoRA adapter may adapt, one enum
 * for the file formats (shard/peft.h, shard/merge.h) and the runtime's
 * adapters (runtime/model/lora.h). The values are PEFT's module order and
 * part of the dropout stream's definition (runtime/model/lora.h), so they
 * never change.
 *
 * What it is not: names and shapes (tsr_peft_target_name,
 * tsr_peft_target_dims; tsr_lora_target_name). */
#ifndef TSR_SHARD_LORA_TARGETS_H
#define TSR_SHARD_LORA_TARGETS_H

/* PEFT's module names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
 * down_proj. A set of targets is a bitmask of TSR_LORA_TARGET_BIT(t). */
typedef enum {
    TSR_LORA_Q = 0,
    TSR_LORA_K = 1,
    TSR_LORA_V = 2,
    TSR_LORA_O = 3,
    TSR_LORA_GATE = 4,
    TSR_LORA_UP = 5,
    TSR_LORA_DOWN = 6,
    TSR_LORA_N_TARGETS = 7,
} tsr_lora_target;

#define TSR_LORA_TARGET_BIT(t) (1u << (unsigned)(t))
#define TSR_LORA_TARGETS_ALL ((1u << TSR_LORA_N_TARGETS) - 1u) /* all seven */

#endif
