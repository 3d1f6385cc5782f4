/* runtime/cmd/cmd_train.c - `tessera train`: LoRA training inside the MPI
 * job, on any tp x pp layout. Rank 0 reads and tokenizes the JSONL file and
 * runs the training loop (runtime/train/train_loop.h) through the engine's
 * training operations, which carry each batch to the other ranks; the
 * adapter is gathered whole to rank 0 and saved as a PEFT directory.
 *
 * What it is not: the loop, the epoch plan (runtime/train/epoch.h) or the
 * data reader (runtime/train/train_data.h); this file reads options,
 * prints and chooses the exit status. */
#include <stdio.h>
#include <string.h>

#include "base/fs.h"
#include "base/clock.h"
#include "runtime/cmd/cmd.h"
#include "runtime/model/lora.h"
#include "runtime/train/epoch.h"
#include "runtime/train/train_data.h"
#include "runtime/train/train_loop.h"

void cmd_train_usage(FILE *f) {
    fputs("usage: [mpirun -np N] tessera train --model PATH --data FILE.jsonl --out DIR [options]\n"
          "\n"
          "Trains a LoRA adapter on the examples of FILE.jsonl and saves it in DIR in Hugging\n"
          "Face PEFT's format (adapter_config.json, adapter_model.safetensors), with loss.csv.\n"
          "Rank 0 reads the data file and sends the tokens to the other ranks.\n"
          "\n"
          "data (one JSON object per line; docs/lora.md):\n"
          "  {\"prompt\": \"...\", \"completion\": \"...\"}   loss on the completion and EOS\n"
          "  {\"messages\": [{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": \"...\"}, "
          "...]}\n"
          "                        rendered with the model's chat template; loss on the\n"
          "                        assistant messages and their end-of-turn tokens\n"
          "\n"
          "options:\n"
          "  --steps N             optimizer steps (default: --epochs)\n"
          "  --epochs N            passes over the data (default 1; ignored with --steps)\n"
          "  --batch-size B        examples per step (default 8)\n"
          "  --lr LR               AdamW learning rate (default 1e-4)\n"
          "  --weight-decay W      AdamW weight decay (default 0)\n"
          "  --adam-eps E          AdamW epsilon (default 1e-8)\n"
          "  --max-grad-norm G     clip the global gradient norm (default 1.0; 0 = off)\n"
          "  --rank R              LoRA rank (default 8)\n"
          "  --alpha A             LoRA alpha; scaling alpha / r (default 16)\n"
          "  --targets LIST        q,k,v,o,gate,up,down or all (default q,v)\n"
          "  --seed S              A's initialisation and the per-epoch shuffle (default 0)\n"
          "  --ctx N               most tokens per example; longer ones are refused (default 512)\n"
          "  --dropout P           LoRA dropout on the adapters' inputs (default 0)\n"
          "  --tp T  --pp P        tensor / pipeline parallel degrees (tp*pp = the job's ranks)\n"
          "  --pp-layers A,B,...   layers per pipeline stage (default: even)\n"
          "  --micro-batches M     micro-batches per step with --pp > 1 (GPipe; default pp)\n"
          "  --comm mpi|nccl       activations between ranks (default mpi)\n"
          "  --comm-timeout S      deadline of every wait between ranks; past it the silent\n"
          "                        ranks are named and the job ends (default 60; 0 = none)\n"
          "  --device cpu|cuda  --act-dtype bf16|f32  --weight-dtype file|f32|q8_0|q4_0|bf16  "
          "--gpu N\n"
          "  --threads N           CPU threads per rank\n"
          "\n"
          "Rank 0 prints one line per step to stdout:\n"
          "  step 3/20  loss 2.3456  grad_norm 1.234  tokens 412  tok/s 123.4\n"
          "Exit status: 0 saved; 1 a failure (a non-finite step saves nothing); 2 bad usage.\n",
          f);
}

/* After a phase every rank ran on its own: all ranks learn whether all
 * succeeded. 0 when they did; otherwise the exit status (the failing rank
 * reports; the others stay quiet). */
static int train_agree(tsr_comm_grid *g, tsr_status st) {
    tsr_status all = tsr_comm_agree(g->world, st);
    if (st != TSR_OK)
        return cmd_fail(st);
    if (all != TSR_OK)
        return all == TSR_ERR_INVALID || all == TSR_ERR_RANGE ? 2 : 1;
    return 0;
}

/* Rank 0's step line on stdout. */
static void print_step(void *user, const tsr_train_step_info *i) {
    (void)user;
    printf("step %d/%d  loss %.4f  grad_norm %.3f  tokens %d  tok/s %.1f\n", i->step, i->total,
           i->loss, i->grad_norm, i->tokens, i->seconds > 0 ? i->tokens / i->seconds : 0.0);
    fflush(stdout);
}

/* Rank 0 of tessera train: the adapter created, the loop over steps
 * (tsr_train_loop_run), then the adapter saved. The other ranks run the
 * engine's operations (cmd_run_worker). Returns the exit status. */
static int train_rank0(tsr_session *s, const cmd_options *o, const tsr_lora_config *lc,
                       const tsr_train_data *data) {
    tsr_engine *e = &s->engine;
    const int n_ex = data->n_examples, B = o->batch_size;
    const int per_epoch = tsr_epoch_total_steps(n_ex, B, 0, 1);
    const int total = tsr_epoch_total_steps(n_ex, B, o->steps, o->epochs);
    tsr_status st = total > 0 ? TSR_OK
                              : tsr_error_set(TSR_ERR_RANGE, "%d epochs of %d steps are too many",
                                              o->epochs, per_epoch);
    if (st == TSR_OK)
        st = tsr_engine_adapter_create(e, 0, lc);
    if (st != TSR_OK)
        return cmd_fail(st);
    fprintf(stderr,
            "tessera train: %d steps of %d examples (%d per epoch), LoRA r=%d alpha=%g "
            "targets=%s dropout %g, lr %g, tp=%d pp=%d on %s (%s activations)\n",
            total, B, per_epoch, lc->rank, (double)lc->alpha, o->targets, (double)lc->dropout,
            (double)o->lr, o->tp, o->pp, tsr_backend_name(e->be),
            tsr_dtype_name(tsr_backend_act_dtype(e->be)));
    tsr_train_loop_config tc = {
        .steps = total,
        .batch_size = B,
        .seed = o->sp.seed,
        .optim = {{o->lr, 0.9f, 0.999f, o->adam_eps, o->weight_decay}, o->max_grad_norm},
        .out = o->out,
        .base_model = o->model,
        .on_step = print_step,
    };
    tsr_train_loop_result res;
    st = tsr_train_loop_run(e, 0, &tc, data, &res);
    if (res.failed_step) {
        if (st == TSR_ERR_COMM || st == TSR_ERR_INTERNAL || st == TSR_ERR_BACKEND) {
            cmd_fail(st);
            tsr_comm_abort(s->grid, 1, "a training step failed");
        }
        /* refused on every rank alike (a non-finite loss or norm): the
         * adapter keeps its last good state, and nothing is saved */
        fprintf(stderr,
                "tessera train: step %d/%d failed: %s; stopping without saving the "
                "adapter\n",
                res.failed_step, total, tsr_error_msg());
        return 1;
    }
    if (res.gather_failed && st == TSR_ERR_COMM) {
        cmd_fail(st);
        tsr_comm_abort(s->grid, 1, "gathering the adapter failed");
    }
    if (st != TSR_OK)
        return cmd_fail(st);
    fprintf(stderr, "tessera train: saved the adapter (%d steps) in %s, peak RSS %.0f MiB\n", total,
            o->out, cmd_peak_rss_kb() / 1024.0);
    return 0;
}

/* tessera train: every rank builds the engine (its shard, a one-position
 * KV cache it never uses); rank 0 reads and tokenizes the data and drives
 * the steps, which the engine broadcasts to the others. */
int cmd_train(tsr_comm_grid *grid, const cmd_options *o) {
    tsr_session s = {0};
    tsr_train_data data = {0};
    int rc = 0;
    const int ctx = o->have_ctx ? o->ctx : 512;
    tsr_lora_config lc = TSR_LORA_CONFIG_INIT;
    lc.rank = o->lora_rank;
    lc.alpha = o->alpha;
    lc.seed = o->sp.seed;
    lc.dropout = o->dropout;
    tsr_status st = tsr_lora_parse_targets(o->targets, &lc.targets);
    if (st == TSR_OK)
        st = tsr_lora_config_check(&lc);
    int out_exists;
    if (st == TSR_OK && g_rank == 0 &&
        (st = tsr_fs_check_adapter_dir(o->out, &out_exists)) != TSR_OK)
        tsr_error_wrap(st, "--out");
    if ((rc = train_agree(grid, st)))
        return rc;

    /* the model file everywhere, the tokenizer and the data on rank 0 */
    st = cmd_session_open(&s, grid, o, 0);
    if (st != TSR_OK) {
        rc = cmd_fail_open(&s, st);
        goto cleanup;
    }
    double t0 = tsr_now_s();
    st = TSR_OK;
    if (g_rank == 0)
        st = tsr_train_data_load(o->data, s.tok, ctx, &data);
    if ((rc = train_agree(grid, st)))
        goto cleanup;
    if (g_rank == 0)
        fprintf(
            stderr, "tessera train: %d examples, %d tokens (%ld carry loss) from %s in %.2f s\n",
            data.n_examples, data.start[data.n_examples], data.n_target, o->data, tsr_now_s() - t0);
    tsr_session_free(&s);
    st = cmd_session_open(&s, grid, o, 1); /* the engine: one position of KV cache */
    if (st != TSR_OK) {
        rc = cmd_fail_open(&s, st);
        goto cleanup;
    }
    if (g_rank != 0) {
        tsr_train_data_free(&data);
        return cmd_run_worker(&s);
    }
    rc = train_rank0(&s, o, &lc, &data);
cleanup:
    tsr_train_data_free(&data);
    tsr_session_free(&s);
    return rc;
}
