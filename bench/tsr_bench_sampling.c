/* bench/tsr_bench_sampling.c - the `tsr_bench_sampling` program: what a
 * sampled token costs where, with whole rows against device-side candidates,
 * on real logits of the model.
 *
 *   tsr_bench_sampling --model M [--k 128] [--reps 3] [--threads N]
 *
 * The rows: one rank (the CPU backend) runs a fixed English text through
 * the model, and every position's logits are one row (teacher forcing, so
 * the rows are the next-token distributions a generation meets). For each
 * sampling setting (temperature, top_p, min_p; top_k off) it prints:
 *  - host row: rank 0's time per row for tsr_sampler_sample on the whole
 *    row (what `serve --host-sampling` and every whole row cost rank 0's one
 *    host thread);
 *  - device ops: the backend's topk (K) plus row_expsum per row, here on the
 *    CPU backend (on a GPU these run on the device and on each TP rank's
 *    slice);
 *  - host cand: rank 0's time per row for tsr_sampler_sample_row_top on the
 *    K candidates;
 *  - whole %: the share of rows whose K candidates cannot decide the draw
 *    (tsr_sampler_pick_sorted < 0), which then come whole, at K = 16, 32, 64,
 *    128 and 256 (the scheduler's K is 128).
 * Times are the tsr_bench_median over --reps passes over all rows.
 *
 * What it is not: a test (tests/unit/test_sampler and tests/sched check the
 * draws), nor the copy and gather a whole row also costs on a GPU or over TP
 * (bench/loadgen.py measures serving end to end). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "runtime/engine/engine.h"
#include "runtime/sample/sampler.h"
#include "runtime/tokenizer/tokenizer.h"

static const char TEXT[] =
    "The harbour town woke slowly. Fishing boats came in with the tide, and the market "
    "filled with the smell of salt and bread. Anna counted the crates twice, because the "
    "numbers never matched the ledger on Mondays. Her brother said the ledger was wrong; "
    "she said the crates were. They were both right, in a way: the ledger had been written "
    "by a tired clerk on Sunday night, and the crates had been stacked by a boy who could "
    "not count past twenty. When the sun rose over the lighthouse, the argument ended the "
    "way it always did, with coffee and a promise to fix it next week.\n\n"
    "def merge(a, b):\n    out = []\n    i = j = 0\n    while i < len(a) and j < len(b):\n"
    "        if a[i] <= b[j]:\n            out.append(a[i]); i += 1\n        else:\n"
    "            out.append(b[j]); j += 1\n    return out + a[i:] + b[j:]\n\n"
    "Question: what is the capital of France, and why did it become the capital? "
    "Answer: Paris became the capital because the early kings made it their seat, and "
    "the river Seine made trade easy. Over the centuries the city grew around its "
    "islands, its university and its markets, until it was the largest city in Europe.";

static int die(const char *what) {
    fprintf(stderr, "tsr_bench_sampling: %s: %s\n", what, tsr_error_msg());
    return 1;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int K = 128, reps = 3, threads = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"k", required_argument, 0, 'k'},
                                         {"reps", required_argument, 0, 'r'},
                                         {"threads", required_argument, 0, 't'},
                                         {0, 0, 0, 0}};
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'k': K = atoi(optarg); break;
        case 'r': reps = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: tsr_bench_sampling --model M [--k 128] [--reps 3] "
                            "[--threads N]\n");
            return 2;
        }
    }
    if (!model || K < 1 || K > TSR_TOPK_MAX || reps < 1) {
        fprintf(stderr, "tsr_bench_sampling: --model is needed; --k in 1..%d; --reps >= 1\n",
                TSR_TOPK_MAX);
        return 2;
    }
    int rank, world;
    if (tsr_comm_mpi_init(&argc, &argv, &rank, &world) != TSR_OK || world != 1) {
        fprintf(stderr, "tsr_bench_sampling: runs as one process (no mpirun)\n");
        return 2;
    }
    tsr_comm_grid grid;
    tsr_comm_grid_config gc = TSR_COMM_GRID_CONFIG_INIT;
    tsr_model_file_t *mf;
    tsr_tokenizer_t *tok;
    if (tsr_comm_grid_init(&grid, &gc) != TSR_OK)
        return die("grid");
    if (tsr_model_file_open(model, &mf) != TSR_OK)
        return die("model");
    if (tsr_tokenizer_from_gguf(tsr_model_file_gguf(mf), &tok) != TSR_OK)
        return die("tokenizer");
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (tsr_tokenizer_encode(tok, TEXT, strlen(TEXT), 0, &ids, &n_ids) != TSR_OK)
        return die("encode");
    tsr_engine_config ec = TSR_ENGINE_CONFIG_INIT;
    ec.max_seqs = 1;
    ec.max_ctx = (int)n_ids + 16;
    ec.threads = threads;
    tsr_plan_config pc = {1, 1, NULL, 0};
    tsr_engine e;
    if (tsr_engine_init(&e, &grid, mf, &pc, &ec) != TSR_OK)
        return die("engine");
    const int n = (int)n_ids, V = e.mcfg.n_vocab;
    float *rows = malloc((size_t)n * V * sizeof *rows);
    int32_t *pos = malloc((size_t)n * 3 * sizeof *pos), *seq = pos + n, *out = seq + n;
    if (!rows || !pos)
        return die("out of memory");
    for (int i = 0; i < n; i++)
        pos[i] = i, seq[i] = 0, out[i] = i;
    tsr_step s = {n, ids, pos, seq, n, out, TSR_OUT_LOGITS, 0, NULL, 0, NULL, 0, NULL};
    if (tsr_engine_step(&e, &s, NULL, rows) != TSR_OK)
        return die("logits step");

    const tsr_backend_i *I = e.be->iface;
    float *tv = malloc((size_t)n * TSR_TOPK_MAX * sizeof *tv), *ex = malloc((size_t)n * 2 * 4);
    int32_t *ti = malloc((size_t)n * TSR_TOPK_MAX * sizeof *ti);
    float *inv_t = malloc((size_t)n * sizeof *inv_t);
    double *t_host = malloc((size_t)reps * 3 * sizeof *t_host), *t_dev = t_host + reps,
           *t_cand = t_dev + reps;
    if (!tv || !ex || !ti || !inv_t || !t_host)
        return die("out of memory");
    static const struct {
        float T, top_p, min_p;
    } set[] = {{0.7f, 0.9f, 0}, {0.8f, 0.95f, 0},    {1.0f, 0.9f, 0},
               {1.0f, 1.0f, 0}, {1.0f, 1.0f, 0.05f}, {1.3f, 1.0f, 0}};
    static const int ks[] = {16, 32, 64, 128, 256};
    printf("tsr_bench_sampling: %d rows of %d logits (%s), K = %d, tsr_bench_median of %d passes\n",
           n, V, model, K, reps);
    printf("| T | top_p | min_p | host row us | device ops us | host cand us |");
    for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++)
        printf(" whole %% K=%d |", ks[j]);
    printf("\n|---:|---:|---:|---:|---:|---:|");
    for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++)
        printf("---:|");
    printf("\n");
    for (size_t c = 0; c < sizeof set / sizeof set[0]; c++) {
        tsr_sampling_params p = TSR_SAMPLING_PARAMS_INIT;
        p.temperature = set[c].T;
        p.top_p = set[c].top_p;
        p.min_p = set[c].min_p;
        p.seed = 42;
        tsr_sampler host, cand;
        if (tsr_sampler_init(&host, &p, V) != TSR_OK || tsr_sampler_init(&cand, &p, V) != TSR_OK)
            return die("sampler");
        for (int i = 0; i < n; i++)
            inv_t[i] = 1.0f / p.temperature;
        int whole[5] = {0};
        for (int r = 0; r < reps; r++) {
            int32_t t;
            double t0 = tsr_now_s();
            for (int i = 0; i < n; i++)
                if (tsr_sampler_sample(&host, rows + (size_t)i * V, NULL, 0, &t) != TSR_OK)
                    return die("sample");
            t_host[r] = (tsr_now_s() - t0) / n;
            t0 = tsr_now_s();
            if (I->topk(e.be, tv, ti, rows, n, V, K) != TSR_OK ||
                I->row_expsum(e.be, ex, rows, inv_t, n, V) != TSR_OK)
                return die("device ops");
            t_dev[r] = (tsr_now_s() - t0) / n;
            t0 = tsr_now_s();
            for (int i = 0; i < n; i++) {
                const float *v = tv + (size_t)i * K;
                const int32_t *id = ti + (size_t)i * K;
                if (tsr_sampler_pick_sorted(v, K, 0, ex[2 * i], ex[2 * i + 1], p.temperature,
                                            p.top_p, p.min_p, tsr_sampler_peek_unit(&cand)) < 0)
                    tsr_sampler_sample_row_whole(&cand, rows + (size_t)i * V, ex[2 * i],
                                                 ex[2 * i + 1], &t); /* the fallback */
                else if (tsr_sampler_sample_row_top(&cand, v, id, K, ex[2 * i], ex[2 * i + 1],
                                                    &t) != TSR_OK)
                    return die("sample_row_top");
            }
            t_cand[r] = (tsr_now_s() - t0) / n;
        }
        /* how many rows come whole, by K (one draw's u per row, as the scheduler peeks it) */
        for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++) {
            if (I->topk(e.be, tv, ti, rows, n, V, ks[j]) != TSR_OK)
                return die("topk");
            tsr_sampler probe;
            if (tsr_sampler_init(&probe, &p, V) != TSR_OK)
                return die("sampler");
            for (int i = 0; i < n; i++) {
                int32_t t;
                whole[j] += tsr_sampler_pick_sorted(tv + (size_t)i * ks[j], ks[j], 0, ex[2 * i],
                                                    ex[2 * i + 1], p.temperature, p.top_p, p.min_p,
                                                    tsr_sampler_peek_unit(&probe)) < 0;
                tsr_sampler_sample(&probe, rows + (size_t)i * V, NULL, 0, &t); /* next u */
            }
            tsr_sampler_free(&probe);
        }
        printf("| %.1f | %.2f | %.2f | %.1f | %.1f | %.1f |", (double)p.temperature,
               (double)p.top_p, (double)p.min_p, 1e6 * tsr_bench_median(t_host, reps),
               1e6 * tsr_bench_median(t_dev, reps), 1e6 * tsr_bench_median(t_cand, reps));
        for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++)
            printf(" %.1f |", 100.0 * whole[j] / n);
        printf("\n");
        tsr_sampler_free(&host);
        tsr_sampler_free(&cand);
    }
    printf("(host cand includes the rows that fall back to the whole row at K = %d)\n", K);
    free(tv), free(ex), free(ti), free(inv_t), free(t_host), free(rows), free(pos), free(ids);
    tsr_engine_free(&e);
    tsr_tokenizer_free(tok);
    tsr_model_file_close(mf);
    tsr_comm_grid_free(&grid);
    tsr_comm_mpi_finalize();
    return 0;
}
