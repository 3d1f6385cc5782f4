/* runtime/cmd/main.c - the `tessera` program: generate, tokenize and
 * perplexity, serve, train and merge-lora, on one rank or on a tp x pp grid
 * under mpirun.
 *
 *   [mpirun -np N] tessera generate --model M (--prompt T | --chat T) [--tp T --pp P]
 *                  [--adapter DIR]   (also perplexity and serve: a PEFT LoRA adapter)
 *   tessera tokenize --model M (--text TEXT | --file F)
 *   [mpirun -np N] tessera perplexity --model M --file F [--ctx N] [--tp T --pp P]
 *   [mpirun -np N] tessera serve --model M [--port P] [--tp T --pp P]
 *   [mpirun -np N] tessera train --model M --data F.jsonl --out DIR [--steps N] [--tp T]
 *   tessera merge-lora --model M --adapter DIR --out OUTDIR [--dtype f32|bf16]
 *
 * generate, perplexity, serve and train run on the CPU or on CUDA GPUs (--device,
 * --act-dtype, --gpu), with activations between ranks over MPI (through host
 * memory) or NCCL (--comm).
 *
 * Every rank runs this program (SPMD). Rank 0 parses the text, drives the
 * engine and prints; the other ranks execute the engine's steps and stay
 * quiet unless --verbose. Generated text goes to stdout as it is produced;
 * statistics and messages go to stderr. Nothing is read from standard input
 * unless asked (--file -).
 *
 * This file sets up MPI and the grid and dispatches to cmd_<name>.c; the
 * options are options.c's. What it is not: library code (cmd.h). */
#include <string.h>
#include <sys/resource.h>

#include "base/log.h"
#include "runtime/cmd/cmd.h"

int g_rank, g_world = 1;

int cmd_fail(tsr_status st) {
    const char *msg = tsr_error_msg()[0] ? tsr_error_msg() : tsr_status_str(st);
    if (g_world > 1)
        fprintf(stderr, "[rank %d/%d] tessera: error: %s\n", g_rank, g_world, msg);
    else
        PERR("tessera: error: %s\n", msg);
    return st == TSR_ERR_INVALID || st == TSR_ERR_RANGE ? 2 : 1;
}

int cmd_fail_open(const tsr_session *s, tsr_status st) {
    if (s->peer_failed && g_rank != 0)
        return st == TSR_ERR_INVALID || st == TSR_ERR_RANGE ? 2 : 1;
    return cmd_fail(st);
}

int cmd_run_worker(tsr_session *s) {
    tsr_status st = tsr_engine_serve(&s->engine);
    if (st != TSR_OK) {
        cmd_fail(st);
        tsr_comm_abort(s->grid, 1, "engine step failed");
    }
    tsr_session_free_engine(s); /* stopped by rank 0: nothing to tell it */
    tsr_session_free(s);
    return 0;
}

void cmd_abort_if_step_failed(const tsr_session *s, tsr_status st) {
    if (st == TSR_ERR_COMM || st == TSR_ERR_INTERNAL || st == TSR_ERR_BACKEND ||
        st == TSR_ERR_NOMEM) {
        cmd_fail(st);
        tsr_comm_abort(s->grid, 1, "engine step failed");
    }
}

long cmd_peak_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* MPI is up and the options read: the grid over the job (its device chosen
 * first with NCCL), then the subcommand. Returns the exit status. */
static int run(const cmd_options *opts) {
    cmd_options o = *opts;
    const int engine_cmd = o.cmd != CMD_TOKENIZE; /* tokenize needs no device */
    if (o.tp * o.pp != g_world && engine_cmd) {
        PERR("tessera: --tp %d x --pp %d needs %d ranks, the job has %d (mpirun -np %d)\n", o.tp,
             o.pp, o.tp * o.pp, g_world, o.tp * o.pp);
        return 2;
    }
    tsr_comm_grid_config gc = TSR_COMM_GRID_CONFIG_INIT;
    gc.tp = engine_cmd ? o.tp : 1;
    gc.pp = engine_cmd ? o.pp : 1;
    gc.kind = engine_cmd ? o.comm : TSR_COMM_MPI;
    gc.timeout_s = o.comm_timeout_s;
    tsr_engine_config dev = TSR_ENGINE_CONFIG_INIT;
    cmd_device_config(&o, &dev);
    tsr_status st = TSR_OK;
    /* What this build cannot do is the same on every rank: rank 0 says it. */
    if (engine_cmd && (st = tsr_engine_config_check(&dev, gc.kind)) != TSR_OK) {
        PERR("tessera: error: %s\n", tsr_error_msg());
        return 2;
    }
    /* NCCL's groups are built on the GPU: choose it first, so a host without
     * one is named (by its rank) instead of failing inside NCCL. Every rank
     * gets the same status and leaves. */
    if (gc.kind == TSR_COMM_NCCL) {
        st = tsr_engine_device_probe(&dev, gc.kind);
        if (st != TSR_OK) {
            if (strstr(tsr_error_msg(), "another rank failed") && g_rank != 0)
                return st == TSR_ERR_INVALID || st == TSR_ERR_RANGE ? 2 : 1; /* it reported */
            return cmd_fail(st);
        }
        gc.device = dev.gpu;
        o.gpu = dev.gpu;
    }
    tsr_comm_grid grid;
    st = tsr_comm_grid_init(&grid, &gc);
    if (st != TSR_OK) {
        if (gc.kind == TSR_COMM_NCCL && g_world > 1) {
            /* a rank that failed inside ncclCommInitRank may have left its
             * peers in it (docs/comm.md): end the job */
            cmd_fail(st);
            tsr_comm_abort(NULL, 1, "building the NCCL groups failed");
        }
        PERR("tessera: %s\n", tsr_error_msg());
        return 2;
    }
    int rc;
    switch (o.cmd) {
    case CMD_GENERATE: rc = cmd_generate(&grid, &o); break;
    case CMD_TOKENIZE: rc = cmd_tokenize(&grid, &o); break;
    case CMD_SERVE: rc = cmd_serve(&grid, &o); break;
    case CMD_TRAIN: rc = cmd_train(&grid, &o); break;
    default: rc = cmd_perplexity(&grid, &o); break;
    }
    tsr_comm_grid_free(&grid);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        cmd_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const unsigned cmd = cmd_lookup(argv[1]);
    if (!cmd) {
        PERR("tessera: unknown command '%s'\n", argv[1]);
        cmd_usage(stderr);
        return 2;
    }
    cmd_options o;
    if (cmd == CMD_MERGE_LORA) {
        /* a single-process file conversion: no MPI */
        int r = cmd_options_read(argc, argv, &o);
        return r ? (r > 0 ? 0 : 2) : cmd_merge_lora(&o);
    }
    if (tsr_comm_mpi_init(&argc, &argv, &g_rank, &g_world) != TSR_OK) {
        PERR("tessera: %s\n", tsr_error_msg());
        return 1;
    }
    int r = cmd_options_read(argc, argv, &o), rc = r > 0 ? 0 : 2;
    if (r == 0) {
        /* Rank 0 speaks for the job; the others only log with --verbose. */
        tsr_log_init(o.verbose ? TSR_LOG_INFO : (g_rank == 0 ? TSR_LOG_WARN : TSR_LOG_ERROR),
                     g_rank, g_world);
        rc = run(&o);
    }
    tsr_comm_mpi_finalize();
    return rc;
}
