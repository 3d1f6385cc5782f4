/* runtime/train/epoch.c - the epoch plan (see epoch.h). */
#include "runtime/train/epoch.h"

#include <limits.h>

#include "base/rng.h"

void tsr_epoch_shuffle(int *perm, int n, uint64_t seed, int epoch) {
    uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(epoch + 1));
    for (int i = 0; i < n; i++)
        perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(tsr_splitmix64(&s) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int tsr_epoch_total_steps(int n_examples, int batch, int steps, int epochs) {
    if (n_examples < 1 || batch < 1)
        return 0;
    if (steps > 0)
        return steps;
    long long per_epoch = (n_examples + (long long)batch - 1) / batch;
    long long total = per_epoch * (epochs > 0 ? epochs : 1);
    return total > INT_MAX ? 0 : (int)total;
}

void tsr_epoch_step_batch(int k, int n_examples, int batch, int *epoch, int *first, int *count) {
    int per_epoch = (int)((n_examples + (long long)batch - 1) / batch);
    *epoch = k / per_epoch;
    *first = (k % per_epoch) * batch;
    *count = n_examples - *first < batch ? n_examples - *first : batch;
}
