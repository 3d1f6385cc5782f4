/* tests/dist/engine_probe.c - test tool run under mpirun: drives the engine
 * on a tp x pp grid and writes what rank 0 sees, for comparison between
 * layouts by test_layouts.py.
 *
 *   mpirun -np N engine_probe [--stage-host] [--device cpu|cuda] [--comm mpi|nccl]
 *                             [--act-dtype f32|bf16] [--weight-dtype file|f32]
 *                             [--kv-dtype f16|f32]
 *                             MODEL OUTDIR TP PP ID [ID ...]
 *
 * --stage-host sets tsr_engine_config.stage_host (activations through host
 * scratch buffers, the path of GPUs with --comm mpi); the other flags choose
 * the device and data backend as tessera's do.
 * Writes OUTDIR/logits.f32 (every position's logits of the ids, one prefill
 * step, TSR_OUT_LOGITS), OUTDIR/greedy.txt (64 greedy tokens generated
 * after the ids, one ARGMAX decode step per token, end-of-generation ignored),
 * OUTDIR/batch.txt (the first 16 greedy tokens of two sequences decoded
 * together in the same steps: the ids, and the ids minus their first three
 * tokens) and OUTDIR/rss.txt ("rank peak_rss_kb" per rank). Exits 1 when
 * the same prefill step with TSR_OUT_TOPK (40 per row, merged over the TP
 * ranks) is not exactly the 40 best of each row of logits.f32, or when the
 * step with per-row draws (draw_check) does not bring what rank 0's
 * sampler needs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "runtime/engine/engine.h"
#include "runtime/sample/sampler.h"

static int die(const char *what, int rank) {
    fprintf(stderr, "[rank %d] engine_probe: %s: %s\n", rank, what, tsr_error_msg());
    return 1;
}

static int write_tokens(const char *dir, const char *name, const int32_t *t, int n) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f)
        return 1;
    for (int i = 0; i < n; i++)
        fprintf(f, "%d%c", t[i], i + 1 < n ? ' ' : '\n');
    return fclose(f) != 0;
}

/* The prefill step once more as TSR_OUT_TOPK with per-row draws, cycling
 * through the modes: from the candidates alone, whole, and top_k off
 * (ROW_TOP) at two settings, one whose candidates almost surely decide the
 * draw (T 0.5, top_p 0.5) and one almost surely not (T 1.5, no cut, u
 * 0.999). Checks each ROW_TOP row's (max, sum) against double sums over
 * logits (the LOGITS step's), that exactly the WHOLE rows and the ROW_TOP
 * rows tsr_sampler_pick_sorted cannot decide came whole and equal to
 * logits, and that both ROW_TOP outcomes happened. 0 when all holds. */
static int draw_check(tsr_engine *e, tsr_comm_grid *grid, int n, const int32_t *ids,
                      const int32_t *pos, const int32_t *seq, const int32_t *rows,
                      const float *logits) {
    enum { K = 40 };
    const int V = e->mcfg.n_vocab;
    float *tv = malloc((size_t)n * K * sizeof *tv), *ex = malloc((size_t)n * 2 * sizeof *ex);
    float *whole_rows = malloc((size_t)n * V * sizeof *whole_rows);
    int32_t *ti = malloc((size_t)n * K * sizeof *ti), *whole = malloc((size_t)n * sizeof *whole);
    tsr_row_draw *d = calloc((size_t)n, sizeof *d);
    if (!tv || !ex || !whole_rows || !ti || !whole || !d)
        tsr_comm_abort(grid, 1, "engine_probe: out of memory");
    for (int i = 0; i < n; i++) {
        const int m = i % 4;
        d[i].mode = m == 0 ? TSR_DRAW_CAND : m == 1 ? TSR_DRAW_WHOLE : TSR_DRAW_ROW_TOP;
        d[i].temperature = m == 2 ? 0.5f : 1.5f;
        d[i].top_p = m == 2 ? 0.5f : 1.0f;
        d[i].min_p = 0;
        d[i].u = m == 2 ? 0.25 + 0.01 * i : 0.999;
    }
    tsr_step t = {n, ids, pos, seq, n, rows, TSR_OUT_TOPK, 0, NULL, 0, NULL, K, d};
    const tsr_top_out to = {ti, tv, ex, whole, whole_rows};
    int rc = 0, decided = 0, sent = 0;
    /* malformed steps are refused on rank 0 before anything is broadcast */
    {
        tsr_row_draw bad = d[2];
        d[2].mode = 7;
        const tsr_status s1 = tsr_engine_step_top(e, &t, &to);
        d[2] = bad;
        d[2].top_p = 1.5f;
        const tsr_status s2 = tsr_engine_step_top(e, &t, &to);
        d[2] = bad;
        tsr_step lg = t;
        lg.out = TSR_OUT_LOGITS;
        const tsr_status s3 = tsr_engine_step_top(e, &lg, &to);
        t.draw = NULL;
        const tsr_status s4 = tsr_engine_step(e, &t, ti, tv); /* top-k needs step_top */
        t.draw = d;
        if (s1 != TSR_ERR_INVALID || s2 != TSR_ERR_INVALID || s3 != TSR_ERR_INVALID ||
            s4 != TSR_ERR_INVALID) {
            fprintf(stderr,
                    "engine_probe: malformed draw steps gave %s, %s, %s, %s (want "
                    "INVALID)\n",
                    tsr_status_str(s1), tsr_status_str(s2), tsr_status_str(s3), tsr_status_str(s4));
            rc = 1;
        }
    }
    if (tsr_engine_step_top(e, &t, &to) != TSR_OK)
        tsr_comm_abort(grid, 1, "engine_probe: top-k step with draws failed");
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * V;
        int want_whole = d[i].mode == TSR_DRAW_WHOLE;
        if (d[i].mode == TSR_DRAW_ROW_TOP) {
            double mx = -INFINITY, z = 0;
            for (int x = 0; x < V; x++)
                if (l[x] > mx)
                    mx = l[x];
            for (int x = 0; x < V; x++)
                z += exp(((double)l[x] - mx) / d[i].temperature);
            if (ex[2 * i] != (float)mx || !(fabs(ex[2 * i + 1] - z) <= 1e-4 * z)) {
                fprintf(stderr,
                        "engine_probe: row %d normaliser (%g, %g), the logits give "
                        "(%g, %g)\n",
                        i, (double)ex[2 * i], (double)ex[2 * i + 1], mx, z);
                rc = 1;
            }
            want_whole =
                tsr_sampler_pick_sorted(tv + (size_t)i * K, K, 0, ex[2 * i], ex[2 * i + 1],
                                        d[i].temperature, d[i].top_p, d[i].min_p, d[i].u) < 0;
            decided += !want_whole;
            sent += want_whole;
        }
        if (whole[i] != want_whole) {
            fprintf(stderr, "engine_probe: row %d (draw mode %d) came %s\n", i, (int)d[i].mode,
                    whole[i] ? "whole" : "as candidates only");
            rc = 1;
        }
        if (whole[i] && memcmp(whole_rows + (size_t)i * V, l, (size_t)V * sizeof *l) != 0) {
            fprintf(stderr, "engine_probe: row %d came whole but not as the logits step's\n", i);
            rc = 1;
        }
    }
    printf("engine_probe: top_k-off rows: %d decided by %d candidates, %d sent whole\n", decided, K,
           sent);
    if (decided == 0 || sent == 0) {
        fprintf(stderr,
                "engine_probe: top_k-off rows: %d decided by their candidates, %d sent "
                "whole (both should happen)\n",
                decided, sent);
        rc = 1;
    }
    free(tv);
    free(ex);
    free(whole_rows);
    free(ti);
    free(whole);
    free(d);
    return rc;
}

int main(int argc, char **argv) {
    int rank, world;
    if (tsr_comm_mpi_init(&argc, &argv, &rank, &world) != TSR_OK)
        return fprintf(stderr, "engine_probe: MPI did not start\n"), 1;
    tsr_engine_config ec = TSR_ENGINE_CONFIG_INIT;
    tsr_comm_grid_config gc = TSR_COMM_GRID_CONFIG_INIT;
    int a = 1;
    for (; a + 1 < argc && !strncmp(argv[a], "--", 2); a++) {
        if (!strcmp(argv[a], "--stage-host")) {
            ec.stage_host = 1;
        } else if (!strcmp(argv[a], "--device")) {
            ec.device = !strcmp(argv[++a], "cuda") ? TSR_DEVICE_CUDA : TSR_DEVICE_CPU;
        } else if (!strcmp(argv[a], "--act-dtype")) {
            ec.act_dtype = !strcmp(argv[++a], "bf16") ? TSR_BF16 : TSR_F32;
        } else if (!strcmp(argv[a], "--weight-dtype")) {
            ec.weight_dtype = !strcmp(argv[++a], "f32") ? TSR_F32 : TSR_ENGINE_ACT_DEFAULT;
        } else if (!strcmp(argv[a], "--kv-dtype")) {
            ec.kv_dtype = !strcmp(argv[++a], "f32") ? TSR_F32 : TSR_F16;
        } else if (!strcmp(argv[a], "--comm")) {
            if (tsr_comm_kind_parse(argv[++a], &gc.kind) != TSR_OK)
                return die("--comm", rank);
        } else {
            return fprintf(stderr, "engine_probe: unknown flag %s\n", argv[a]), 2;
        }
    }
    argv += a - 1;
    argc -= a - 1;
    if (argc < 6)
        return fprintf(stderr, "usage: engine_probe [flags] MODEL OUTDIR TP PP ID...\n"), 2;
    const char *dir = argv[2];
    int n = argc - 5;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++)
        ids[i] = atoi(argv[5 + i]);
    tsr_comm_grid grid;
    gc.tp = atoi(argv[3]);
    gc.pp = atoi(argv[4]);
    if (gc.kind == TSR_COMM_NCCL) { /* the GPU first: NCCL's groups are built on it */
        if (tsr_engine_device_probe(&ec, gc.kind) != TSR_OK)
            return die("device", rank);
        gc.device = ec.gpu;
    }
    if (tsr_comm_grid_init(&grid, &gc) != TSR_OK)
        return die("grid", rank);
    tsr_model_file_t *mf;
    if (tsr_model_file_open(argv[1], &mf) != TSR_OK)
        return die("model", rank);
    tsr_plan_config pc = {gc.tp, gc.pp, NULL, 0};
    ec.max_seqs = 2;
    ec.max_ctx = 256;
    ec.threads = 1;
    tsr_engine e;
    if (tsr_engine_init(&e, &grid, mf, &pc, &ec) != TSR_OK)
        return die("engine", rank);
    int rc = 0;
    if (rank != 0) {
        if (tsr_engine_serve(&e) != TSR_OK)
            tsr_comm_abort(&grid, 1, "engine_probe: step failed");
    } else {
        const int V = e.mcfg.n_vocab, G = 64, B = 16;
        int32_t *pos = malloc((size_t)n * 3 * sizeof *pos), *seq = pos + n, *rows = seq + n;
        float *logits = malloc((size_t)n * V * sizeof *logits);
        int32_t greedy[64], batch[2][16];
        for (int i = 0; i < n; i++) {
            pos[i] = i;
            seq[i] = 0;
            rows[i] = i;
        }
        /* 1: logits of every position */
        tsr_step s = {n, ids, pos, seq, n, rows, TSR_OUT_LOGITS, 0, NULL, 0, NULL, 0, NULL};
        if (tsr_engine_step(&e, &s, NULL, logits) != TSR_OK)
            tsr_comm_abort(&grid, 1, "engine_probe: logits step failed");
        char p[4096];
        snprintf(p, sizeof p, "%s/logits.f32", dir);
        FILE *f = fopen(p, "wb");
        if (!f || fwrite(logits, sizeof *logits, (size_t)n * V, f) != (size_t)n * V || fclose(f))
            rc = 1;
        /* 1b: the same step with TSR_OUT_TOPK: each row's K best, merged over
         * the TP ranks, must be exactly the K best of the row's logits above
         * (value, then the lower id) */
        {
            enum { K = 40 };
            float *tv = malloc((size_t)n * K * sizeof *tv);
            int32_t *ti = malloc((size_t)n * K * sizeof *ti);
            tsr_step t = {n, ids, pos, seq, n, rows, TSR_OUT_TOPK, 0, NULL, 0, NULL, K, NULL};
            const tsr_top_out to = {ti, tv, NULL, NULL, NULL};
            if (!tv || !ti || tsr_engine_step_top(&e, &t, &to) != TSR_OK)
                tsr_comm_abort(&grid, 1, "engine_probe: top-k step failed");
            for (int i = 0; i < n && rc == 0; i++) {
                const float *l = logits + (size_t)i * V;
                for (int j = 0; j < K && rc == 0; j++) {
                    const int32_t c = ti[(size_t)i * K + j];
                    /* the entry is the j-th best: exactly j entries come before it */
                    int before = 0;
                    for (int x = 0; c >= 0 && c < V && x < V; x++)
                        before += tsr_topk_before(l[x], x, l[c], c);
                    if (c < 0 || c >= V || before != j || tv[(size_t)i * K + j] != l[c]) {
                        fprintf(stderr,
                                "engine_probe: top-k row %d entry %d: id %d value %g "
                                "(%d entries of the logits come before it)\n",
                                i, j, c, (double)tv[(size_t)i * K + j], before);
                        rc = 1;
                    }
                }
            }
            free(tv);
            free(ti);
        }
        if (rc == 0 && draw_check(&e, &grid, n, ids, pos, seq, rows, logits) != 0)
            rc = 1;
        /* 2: greedy decode, one token per step */
        int32_t release = 0;
        tsr_step pre = {n, ids,      pos, seq,  1, rows + n - 1, TSR_OUT_ARGMAX,
                        1, &release, 0,   NULL, 0, NULL};
        if (tsr_engine_step(&e, &pre, &greedy[0], NULL) != TSR_OK)
            tsr_comm_abort(&grid, 1, "engine_probe: prefill failed");
        for (int g = 1; g < G; g++) {
            int32_t p1 = n + g - 1, s0 = 0, r0 = 0;
            tsr_step d = {1, &greedy[g - 1], &p1, &s0,  1, &r0, TSR_OUT_ARGMAX,
                          0, NULL,           0,   NULL, 0, NULL};
            if (tsr_engine_step(&e, &d, &greedy[g], NULL) != TSR_OK)
                tsr_comm_abort(&grid, 1, "engine_probe: decode failed");
        }
        rc |= write_tokens(dir, "greedy.txt", greedy, G);
        /* 3: two sequences in the same steps: slot 0 = ids, slot 1 = ids[3:] */
        int m = n - 3, tot = n + m;
        int32_t *bt = malloc((size_t)tot * 4 * sizeof *bt), *bp = bt + tot, *bs = bp + tot,
                *br = bs + tot;
        int32_t rel[2] = {0, 1};
        for (int i = 0; i < n; i++) {
            bt[i] = ids[i];
            bp[i] = i;
            bs[i] = 0;
        }
        for (int i = 0; i < m; i++) {
            bt[n + i] = ids[3 + i];
            bp[n + i] = i;
            bs[n + i] = 1;
        }
        br[0] = n - 1;
        br[1] = tot - 1;
        tsr_step bp0 = {tot, bt, bp, bs, 2, br, TSR_OUT_ARGMAX, 2, rel, 0, NULL, 0, NULL};
        int32_t out[2];
        if (tsr_engine_step(&e, &bp0, out, NULL) != TSR_OK)
            tsr_comm_abort(&grid, 1, "engine_probe: batch prefill failed");
        batch[0][0] = out[0];
        batch[1][0] = out[1];
        for (int g = 1; g < B; g++) {
            int32_t t2[2] = {batch[0][g - 1], batch[1][g - 1]};
            int32_t p2[2] = {n + g - 1, m + g - 1}, s2[2] = {0, 1}, r2[2] = {0, 1};
            tsr_step d = {2, t2, p2, s2, 2, r2, TSR_OUT_ARGMAX, 0, NULL, 0, NULL, 0, NULL};
            if (tsr_engine_step(&e, &d, out, NULL) != TSR_OK)
                tsr_comm_abort(&grid, 1, "engine_probe: batch decode failed");
            batch[0][g] = out[0];
            batch[1][g] = out[1];
        }
        snprintf(p, sizeof p, "%s/batch.txt", dir);
        f = fopen(p, "w");
        for (int k = 0; f && k < 2; k++)
            for (int g = 0; g < B; g++)
                fprintf(f, "%d%c", batch[k][g], g + 1 < B ? ' ' : '\n');
        if (!f || fclose(f))
            rc = 1;
        free(bt);
        free(pos);
        free(logits);
        tsr_engine_stop(&e);
    }
    /* per-rank peak RSS, gathered to rank 0 */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int32_t mine = (int32_t)ru.ru_maxrss, *all = malloc((size_t)world * sizeof *all);
    tsr_comm_allgather(grid.world, &mine, all, 1, TSR_COMM_I32);
    if (rank == 0) {
        char p[4096];
        snprintf(p, sizeof p, "%s/rss.txt", dir);
        FILE *f = fopen(p, "w");
        for (int r = 0; f && r < world; r++)
            fprintf(f, "%d %d\n", r, all[r]);
        if (!f || fclose(f))
            rc = 1;
    }
    free(all);
    free(ids);
    tsr_engine_free(&e);
    tsr_model_file_close(mf);
    tsr_comm_grid_free(&grid);
    tsr_comm_mpi_finalize();
    return rc;
}
