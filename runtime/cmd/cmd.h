/* runtime/cmd/cmd.h - what the files of the `tessera` program share: the
 * options of every subcommand read from one table (options.c, over
 * base/opt.h), the rank-aware reporting of errors (main.c), and the entry
 * point of each subcommand (cmd_<name>.c).
 *
 * What it is not: library code. Everything that is not parsing options,
 * printing or choosing an exit status lives in runtime/ and shard/
 * (runtime/engine/session.h, runtime/train/train_loop.h, shard/merge.h). */
#ifndef TSR_RUNTIME_CMD_CMD_H
#define TSR_RUNTIME_CMD_CMD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/status.h"
#include "comm/comm.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/session.h"
#include "runtime/sample/sampler.h"
#include "shard/merge.h"

#define CMD_MAX_STOP 16

/* The subcommands, as bits of the option table's masks. */
enum {
    CMD_GENERATE = 1u << 0,
    CMD_TOKENIZE = 1u << 1,
    CMD_PERPLEXITY = 1u << 2,
    CMD_SERVE = 1u << 3,
    CMD_TRAIN = 1u << 4,
    CMD_MERGE_LORA = 1u << 5,
};

/* Every option of every subcommand, read and checked. */
typedef struct {
    unsigned cmd; /* the subcommand's bit */
    const char *model;
    const char *adapter; /* --adapter DIR: a PEFT LoRA adapter (generate, perplexity, serve,
                            merge-lora) */
    const char *prompt, *chat, *system, *text, *file;
    int max_tokens, min_tokens, ctx, threads, n_batch, verbose, ignore_eos;
    int have_ctx;
    int tp, pp;
    /* --device, --comm, --act-dtype, --weight-dtype, --kv-dtype (-1: the device's
     * default), --gpu (-1: by local rank) */
    tsr_device device;
    tsr_comm_kind comm;
    double comm_timeout_s; /* --comm-timeout: the deadline of every wait between ranks */
    int act_dtype, weight_dtype, kv_dtype, gpu;
    int pp_layers[256];
    int n_pp_layers;
    /* serve */
    const char *host, *auth_token_file, *tls_cert, *tls_key;
    int port, max_seqs, kv_positions, max_batch_tokens, queue, log_prompts, host_sampling;
    int adapter_memory_mib; /* serve: the most all adapters may take together; 0 = no cap */
    int metrics_port;       /* 0 = no metrics endpoint */
    double grace_s;
    tsr_sampling_params sp;
    const char *stop[CMD_MAX_STOP];
    size_t n_stop;
    int32_t stop_ids[CMD_MAX_STOP];
    size_t n_stop_ids;
    /* train */
    const char *data, *out, *targets;
    int steps, epochs, batch_size, lora_rank;
    float lr, alpha, max_grad_norm, weight_decay, dropout, adam_eps;
    int micro_batches; /* --micro-batches: per training batch with --pp > 1 (0 = pp) */
    int have_seed;
    /* merge-lora */
    tsr_merge_dtype merge_dtype;
} cmd_options;

/* This process's rank and world size, known from MPI init on (0 and 1
 * before, and in merge-lora). Written once in main before anything else
 * runs. */
extern int g_rank, g_world;

/* Usage and input errors: every rank sees the same arguments, so rank 0
 * alone reports them. */
#define PERR(...)                                                                                  \
    do {                                                                                           \
        if (g_rank == 0)                                                                           \
            fprintf(stderr, __VA_ARGS__);                                                          \
    } while (0)

/* The subcommand's bit for `name`; 0 when there is none. */
unsigned cmd_lookup(const char *name);

/* Reads argv[1] (the subcommand) and the options after it into *o.
 * Returns 0; or 1 after --help printed the subcommand's usage on stdout
 * (the caller exits 0); or -1 after rank 0 printed why (the caller exits 2). */
int cmd_options_read(int argc, char **argv, cmd_options *o);

/* The device part of the engine's config, from the options. */
void cmd_device_config(const cmd_options *o, tsr_engine_config *ec);

/* The plan and engine configuration of a command's session: a one-sequence
 * KV cache of ctx positions (-1: the model's context, at most 4096). */
void cmd_session_config(const cmd_options *o, int ctx, tsr_plan_config *pc, tsr_engine_config *ec);

/* Opens the session of a command (tsr_session_open) and, with ctx != 0,
 * its engine and --adapter (tsr_session_start_engine). Collective; report
 * a failure with cmd_fail_open. */
tsr_status cmd_session_open(tsr_session *s, tsr_comm_grid *grid, const cmd_options *o, int ctx);

/* Usage texts: tessera's, and train's and merge-lora's own. */
void cmd_usage(FILE *f);
void cmd_train_usage(FILE *f);
void cmd_merge_usage(FILE *f);

/* Prints the error (with [rank r/N] under a job of several ranks) and
 * returns the exit status: 2 for bad input (TSR_ERR_INVALID, TSR_ERR_RANGE),
 * else 1. */
int cmd_fail(tsr_status st);

/* An error of tsr_session_open / _start_engine: the rank where it happened
 * reports it; the others only when they are rank 0 (one line for the job). */
int cmd_fail_open(const tsr_session *s, tsr_status st);

/* Ranks other than 0: execute the engine's steps until rank 0 stops it,
 * then free the session. A failure here would leave the peers waiting
 * forever: it ends the whole job. Returns 0. */
int cmd_run_worker(tsr_session *s);

/* Rank 0: a failure inside a step (not bad input, which is refused before
 * anything is broadcast) leaves peers mid-step: end the whole job. */
void cmd_abort_if_step_failed(const tsr_session *s, tsr_status st);

/* Peak resident set of this process, in KiB. */
long cmd_peak_rss_kb(void);

/* The subcommands. Each returns the exit status. merge-lora runs before
 * MPI is set up, on its own options. */
int cmd_generate(tsr_comm_grid *grid, const cmd_options *o);
int cmd_tokenize(tsr_comm_grid *grid, const cmd_options *o);
int cmd_perplexity(tsr_comm_grid *grid, const cmd_options *o);
int cmd_serve(tsr_comm_grid *grid, const cmd_options *o);
int cmd_train(tsr_comm_grid *grid, const cmd_options *o);
int cmd_merge_lora(const cmd_options *o);

#endif
