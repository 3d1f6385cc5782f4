/* runtime/train/epoch.h - the epoch plan of LoRA training: which examples
 * each optimizer step takes, in which order. `tessera train` and
 * `tessera-cli train` both follow it, so a job trained on the server
 * through tessera-cli sees its examples in the same order as one trained in
 * the MPI job (tests/cli/test_cli_train.py checks it against an independent
 * implementation).
 *
 * What it is not: the data (train_record.h, train_data.h) nor the loop that
 * runs the steps (train_loop.h). Pure functions: no allocation, no errors. */
#ifndef TSR_RUNTIME_TRAIN_EPOCH_H
#define TSR_RUNTIME_TRAIN_EPOCH_H

#include <stdint.h>

/* The example order of epoch `epoch` (0-based) into perm[0..n): a
 * Fisher-Yates shuffle from splitmix64 seeded with
 * seed ^ (0xD1B54A32D192ED03 * (epoch + 1)), the same on every rank. */
void tsr_epoch_shuffle(int *perm, int n, uint64_t seed, int epoch);

/* The step plan: each epoch is ceil(n_examples / batch) steps of `batch`
 * examples in its shuffled order, the last one holding what is left.
 * Returns the number of steps: `steps` when > 0, else epochs (<= 0: 1)
 * times the steps per epoch; 0 when that would not fit an int, or when
 * n_examples or batch is < 1. */
int tsr_epoch_total_steps(int n_examples, int batch, int steps, int epochs);

/* Where step k (0-based) takes its examples: epoch *epoch, positions
 * [*first, *first + *count) of that epoch's shuffled order. n_examples and
 * batch >= 1. */
void tsr_epoch_step_batch(int k, int n_examples, int batch, int *epoch, int *first, int *count);

#endif
