/* runtime/train/train_data.h - training examples from a JSONL file, tokenized,
 * with a per-token loss mask (the data side of `tessera train`).
 *
 * One JSON object per line (blank lines are skipped), either
 *   {"prompt": "...", "completion": "..."}
 *       tokens = [BOS when the model adds one] encode(prompt)
 *                encode(completion) EOS;
 *       loss on the completion's tokens and the EOS;
 * or
 *   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
 *       the conversation rendered with the model's chat template
 *       (runtime/tokenizer/chat.h) and tokenized with special tokens parsed;
 *       loss on every assistant message's tokens: its content and its
 *       end-of-turn token (e.g. "<|im_end|>"), not the turn header
 *       ("<|im_start|>assistant\n") nor what follows the end-of-turn token.
 * Other keys are ignored. Text is encoded with special tokens parsed, as
 * `tessera generate` does.
 *
 * How the assistant spans are found: the conversation up to each assistant
 * message is rendered with the generation prompt (ending with the assistant
 * header) and again including that message; both must be prefixes of the
 * whole rendering. The rendering is cut at those offsets and each piece is
 * tokenized on its own, so the span boundaries fall exactly between tokens
 * (the pieces meet next to special tokens, where whole-text tokenization
 * would cut too).
 *
 * What it is not: no batching, shuffling or padding (train_loop.c and
 * epoch.c do that); no streaming: the whole file is held in memory. */
#ifndef TSR_RUNTIME_TRAIN_DATA_H
#define TSR_RUNTIME_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "runtime/tokenizer/chat.h"
#include "runtime/tokenizer/tokenizer.h"

typedef struct {
    int n_examples;
    int32_t *start;  /* (n_examples + 1): example e is tokens start[e] .. start[e+1]-1 */
    int32_t *tokens; /* (start[n_examples]) token ids */
    uint8_t *target; /* (start[n_examples]) 1: this token is a loss target (it is predicted
                         from the tokens before it, which carry weight 1 at the position
                         before it in a tsr_train_batch) */
    int32_t *line;   /* (n_examples) the 1-based line of the file each example came from */
    long n_target;   /* sum of target */
} tsr_train_data;

/* Reads and tokenizes `path`. max_tokens > 0: an example longer than that is
 * refused (not truncated). Errors name "path:line" and what is wrong:
 * TSR_ERR_IO (cannot read the file), TSR_ERR_FORMAT (bad JSON, a record of
 * neither kind, wrong field types, an unknown role, a conversation without
 * an assistant message, no EOS token for prompt/completion, a template whose
 * prefixes are not prefixes of the whole), TSR_ERR_RANGE (an example longer
 * than max_tokens), TSR_ERR_INVALID (the file holds no example),
 * TSR_ERR_UNSUPPORTED (messages with a model that has no known chat
 * template). On error *out is zeroed. */
tsr_status tsr_train_data_load(const char *path, const tsr_tokenizer_t *tok, int max_tokens,
                               tsr_train_data *out);

/* Allocates *out's arrays for n_examples examples of n_tokens tokens in all
 * (zero-filled; start[n_examples] = n_tokens is the caller's to set), for a
 * rank that receives the data rather than reading it. TSR_ERR_NOMEM. */
tsr_status tsr_train_data_alloc(tsr_train_data *out, int n_examples, size_t n_tokens);

void tsr_train_data_free(tsr_train_data *d); /* NULL ok; zeroes */

/* One example, tokenized and masked as a record of the file is: a
 * prompt/completion pair, or a conversation (chat.h's messages). *tokens
 * and *target (1: a loss target) get n malloc'd entries each (the caller
 * frees both). Errors as tsr_train_data_load's, with `where` (e.g.
 * "example 3") in place of "path:line". */
tsr_status tsr_train_example_pc(const tsr_tokenizer_t *tok, const char *where, const char *prompt,
                                const char *completion, int32_t **tokens, uint8_t **target,
                                size_t *n);
tsr_status tsr_train_example_chat(const tsr_tokenizer_t *tok, const char *where,
                                  const tsr_chat_msg *msgs, size_t n_msgs, int32_t **tokens,
                                  uint8_t **target, size_t *n);

#endif
