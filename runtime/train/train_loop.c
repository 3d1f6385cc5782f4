/* runtime/train/train_loop.c - the training loop of `tessera train` and
 * the check of its output directory (see train_loop.h). */
#include "runtime/train/train_loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "runtime/train/epoch.h"
#include "runtime/train/loss_csv.h"
#include "base/fs.h"
#include "shard/peft.h"

/* loss.csv after the save (the save replaces the directory), written
 * durably beside the adapter files. */
static tsr_status write_loss_csv(const char *out, const tsr_loss_row *logs, int total) {
    char p[4200];
    if ((size_t)snprintf(p, sizeof p, "%s/loss.csv", out) >= sizeof p)
        return tsr_error_set(TSR_ERR_INVALID, "'%s/loss.csv': path too long", out);
    size_t len;
    char *text = tsr_loss_csv_format(logs, (size_t)total, &len);
    if (!text)
        return tsr_error_set(TSR_ERR_NOMEM, "loss.csv: out of memory for %d rows", total);
    tsr_status st = tsr_fs_write_file(p, text, len);
    free(text);
    return st;
}

tsr_status tsr_train_loop_run(tsr_engine *e, int slot, const tsr_train_loop_config *cfg,
                              const tsr_train_data *data, tsr_train_loop_result *res) {
    memset(res, 0, sizeof *res);
    const int n_ex = data->n_examples, B = cfg->batch_size, total = cfg->steps;
    if (n_ex < 1 || B < 1 || total < 1)
        return tsr_error_set(TSR_ERR_INVALID,
                             "training needs examples (%d), a batch size (%d) and steps (%d) >= 1",
                             n_ex, B, total);
    size_t max_tok = 0;
    for (int i = 0; i < n_ex; i++)
        max_tok += (size_t)(data->start[i + 1] - data->start[i]);
    int *perm = malloc((size_t)n_ex * sizeof *perm);
    int32_t *bstart = malloc(((size_t)B + 1) * sizeof *bstart);
    int32_t *btok = malloc((max_tok + 1) * sizeof *btok);
    float *bweight = malloc((max_tok + 1) * sizeof *bweight);
    tsr_loss_row *logs = calloc((size_t)total, sizeof *logs);
    tsr_peft_adapter pa = {0};
    tsr_status st = perm && bstart && btok && bweight && logs
                        ? TSR_OK
                        : tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    int shuffled = -1; /* the epoch perm holds */
    for (int k = 0; st == TSR_OK && k < total; k++) {
        int epoch, first, nb, n_tok = 0;
        tsr_epoch_step_batch(k, n_ex, B, &epoch, &first, &nb);
        if (epoch != shuffled) {
            tsr_epoch_shuffle(perm, n_ex, cfg->seed, epoch);
            shuffled = epoch;
        }
        bstart[0] = 0;
        for (int i = 0; i < nb; i++) {
            int ex = perm[first + i], a = data->start[ex], len = data->start[ex + 1] - a;
            memcpy(btok + n_tok, data->tokens + a, (size_t)len * sizeof *btok);
            /* weight[j] is for predicting token j+1 */
            for (int j = 0; j < len; j++)
                bweight[n_tok + j] = j + 1 < len ? (float)data->target[a + j + 1] : 0.0f;
            n_tok += len;
            bstart[i + 1] = n_tok;
        }
        tsr_train_batch b = {.n_seqs = nb, .seq_start = bstart, .tokens = btok, .weights = bweight};
        double ts = tsr_now_s();
        tsr_optim_result r = {0};
        st = tsr_engine_train_batch(e, slot, &b, 1, NULL);
        if (st == TSR_OK)
            st = tsr_engine_optim_step(e, slot, &cfg->optim, &r);
        if (st != TSR_OK) {
            res->failed_step = k + 1;
            break;
        }
        double dt = tsr_now_s() - ts;
        logs[k] = (tsr_loss_row){k + 1, r.loss, r.grad_norm, n_tok};
        if (cfg->on_step) {
            tsr_train_step_info info = {k + 1, total, r.loss, r.grad_norm, n_tok, dt};
            cfg->on_step(cfg->user, &info);
        }
    }
    if (st == TSR_OK) {
        st = tsr_engine_adapter_gather(e, slot, &pa);
        res->gather_failed = st != TSR_OK;
    }
    if (st == TSR_OK) {
        snprintf(pa.base_model, sizeof pa.base_model, "%s", cfg->base_model ? cfg->base_model : "");
        st = tsr_peft_save(cfg->out, &pa, &e->mcfg);
    }
    if (st == TSR_OK)
        st = write_loss_csv(cfg->out, logs, total);
    tsr_peft_free(&pa);
    free(logs);
    free(bweight);
    free(btok);
    free(bstart);
    free(perm);
    return st;
}
