/* tests/lora/lora_driver.c - test tool run under mpirun (one rank per TP
 * rank, pp = 1): creates a LoRA adapter over a model shard, runs
 * Forward / ForwardBackward / OptimStep on a batch written by Python and
 * writes what happened, with every matrix gathered whole, for test_lora.py
 * to compare with the NumPy reference and between layouts.
 *
 *   mpirun -np TP lora_driver [flags] MODEL IN OUT
 *
 * Flags: --rank R (4) --alpha A (8) --rslora --targets LIST (q,k,v,o,gate,up,down)
 *        --seed S (A's init, 1) --b-seed S (7) --b-scale X (0.02: B is drawn
 *        uniform(-X, X) from tsr_lora_init_values(b-seed) over the full matrix
 *        and set through tsr_lora_set, so dA is not zero; 0 keeps PEFT's B = 0)
 *        --steps N (1) --accum (each step's batch in two ForwardBackward calls,
 *        the sequences split in halves) --lr --beta1 --beta2 --eps --wd
 *        --max-norm (AdamW and clipping; 1e-3 0.9 0.999 1e-8 0.01 0)
 *        --nan (B[0][0] of the first adapted matrix of layer 0 set to NaN
 *        before the run) --head-rows N (LM-head chunk; 0 = default)
 *        --threads N (CPU threads per rank, 1)
 *        --dropout P (LoRA dropout, 0) --dropout-key K (0: step k's batch has
 *        dropout_key K + k; with --accum both halves share it and the second
 *        half's token_offset is the first half's length, so the masks are the
 *        whole batch's)
 *        --backend cpu|cuda (cpu) --act f32|bf16 --weights f32|bf16 (CUDA's
 *        activation and weight types; f32 f32 is its reference precision)
 *
 * IN and OUT are record files (little-endian, no padding):
 *   "TSRL" u32 version (1) u32 n_records
 *   record: u32 name length, name, u8 kind ('f' f32, 'd' f64, 'i' int32),
 *           u32 ndim, u64 dims[ndim], data
 * IN holds seq_start (i), tokens (i) and optionally weights (f).
 * OUT (written by world rank 0): cfg.scale, cfg.tp, cfg.dropout, cfg.seed,
 * cfg.dropout_key; init.L.T.A / .B (the adapter as created, L the layer, T
 * the target name); per step k:
 * sK.fwd_loss (Forward, before the step's backward), sK.loss, sK.weight_sum,
 * sK.n_loss_tokens (ForwardBackward, summed over its calls), sK.L.T.dA / .dB
 * (the reduced gradient sums), sK.status (0 or the tsr_status of OptimStep),
 * sK.norm, sK.step, sK.mean_loss, sK.acc_weight (the accumulated weight after
 * the step: 0), sK.L.T.A / .B (after the step). Matrices are (r, d_in) and
 * (d_out, r) f32; scalars are 1-element f64.
 *
 * Exits 0 on success, 1 on a failure (with a message), 2 on bad usage, 77
 * when --backend cuda cannot run here.
 * What it is not: a checker; test_lora.py compares. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "runtime/model/lora.h"
#include "runtime/model/model.h"
#include "runtime/train/train.h"
#include "runtime/train/train_comm.h"

/* ---- the record files ---- */

typedef struct {
    char name[128];
    char kind;
    uint32_t ndim;
    uint64_t dims[4];
    size_t count;
    void *data;
} record;

static int read_records(const char *path, record **out, uint32_t *n_out) {
    FILE *f = fopen(path, "rb");
    char magic[4];
    uint32_t ver, n;
    if (!f || fread(magic, 1, 4, f) != 4 || memcmp(magic, "TSRL", 4) || fread(&ver, 4, 1, f) != 1 ||
        ver != 1 || fread(&n, 4, 1, f) != 1 || n > 1000)
        return fprintf(stderr, "lora_driver: %s is not a TSRL file\n", path), 1;
    record *r = calloc(n ? n : 1, sizeof *r);
    for (uint32_t i = 0; r && i < n; i++) {
        uint32_t len;
        uint8_t kind;
        if (fread(&len, 4, 1, f) != 1 || len >= sizeof r[i].name ||
            fread(r[i].name, 1, len, f) != len || fread(&kind, 1, 1, f) != 1 ||
            fread(&r[i].ndim, 4, 1, f) != 1 || r[i].ndim > 4 ||
            fread(r[i].dims, 8, r[i].ndim, f) != r[i].ndim)
            return fprintf(stderr, "lora_driver: %s: bad record %u\n", path, i), 1;
        r[i].kind = (char)kind;
        r[i].count = 1;
        for (uint32_t d = 0; d < r[i].ndim; d++)
            r[i].count *= r[i].dims[d];
        size_t es = kind == 'd' ? 8 : 4;
        r[i].data = malloc(r[i].count * es + 1);
        if (!r[i].data || fread(r[i].data, es, r[i].count, f) != r[i].count)
            return fprintf(stderr, "lora_driver: %s: truncated record %s\n", path, r[i].name), 1;
    }
    fclose(f);
    *out = r;
    *n_out = n;
    return 0;
}

static const record *find_record(const record *r, uint32_t n, const char *name, char kind) {
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(r[i].name, name) && r[i].kind == kind)
            return &r[i];
    return NULL;
}

typedef struct {
    FILE *f; /* NULL on ranks other than 0 */
    uint32_t n;
} writer;

static void put(writer *w, const char *name, char kind, int ndim, const uint64_t *dims,
                const void *data) {
    if (!w->f)
        return;
    uint32_t len = (uint32_t)strlen(name), nd = (uint32_t)ndim;
    uint8_t k = (uint8_t)kind;
    size_t count = 1;
    for (int d = 0; d < ndim; d++)
        count *= dims[d];
    fwrite(&len, 4, 1, w->f);
    fwrite(name, 1, len, w->f);
    fwrite(&k, 1, 1, w->f);
    fwrite(&nd, 4, 1, w->f);
    fwrite(dims, 8, nd, w->f);
    fwrite(data, kind == 'd' ? 8 : 4, count, w->f);
    w->n++;
}

static void put_scalar(writer *w, const char *name, double v) {
    uint64_t one = 1;
    put(w, name, 'd', 1, &one, &v);
}

static int fail(int rank, const char *what) {
    fprintf(stderr, "[rank %d] lora_driver: %s: %s\n", rank, what, tsr_error_msg());
    return 1;
}

/* Writes the whole A/B (or dA/dB) of every adapted matrix as PREFIX.L.T.A/B. */
static tsr_status put_adapter(writer *w, const tsr_lora_adapter *a, tsr_comm_grid *g,
                              const char *prefix, int grads) {
    const int r = a->cfg.rank;
    for (int l = a->layer_begin; l < a->layer_begin + a->n_layers; l++) {
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            const tsr_lora_matrix *m = tsr_lora_matrix_of_c(a, l, (tsr_lora_target)t);
            if (!m)
                continue;
            size_t na = (size_t)r * m->d_in, nb = (size_t)m->d_out * r;
            float *buf = malloc((na > nb ? na : nb) * sizeof *buf);
            if (!buf)
                return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
            char name[128];
            uint64_t da[2] = {(uint64_t)r, (uint64_t)m->d_in},
                     db[2] = {(uint64_t)m->d_out, (uint64_t)r};
            tsr_status st = tsr_train_gather_lora(a, g, l, (tsr_lora_target)t,
                                                  grads ? TSR_LORA_DA : TSR_LORA_A, buf);
            snprintf(name, sizeof name, "%s.%d.%s.%s", prefix, l, tsr_lora_target_name(t),
                     grads ? "dA" : "A");
            if (st == TSR_OK)
                put(w, name, 'f', 2, da, buf);
            if (st == TSR_OK)
                st = tsr_train_gather_lora(a, g, l, (tsr_lora_target)t,
                                           grads ? TSR_LORA_DB : TSR_LORA_B, buf);
            snprintf(name, sizeof name, "%s.%d.%s.%s", prefix, l, tsr_lora_target_name(t),
                     grads ? "dB" : "B");
            if (st == TSR_OK)
                put(w, name, 'f', 2, db, buf);
            free(buf);
            if (st != TSR_OK)
                return st;
        }
    }
    return TSR_OK;
}

/* Draws B uniform(-scale, scale) over the full matrix and sets this rank's rows. */
static tsr_status randomize_b(tsr_lora_adapter *a, uint64_t seed, float scale) {
    const int r = a->cfg.rank;
    for (int l = a->layer_begin; l < a->layer_begin + a->n_layers; l++) {
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            const tsr_lora_matrix *m = tsr_lora_matrix_of(a, l, (tsr_lora_target)t);
            if (!m)
                continue;
            float *full = malloc((size_t)m->d_out * r * sizeof *full);
            if (!full)
                return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
            tsr_lora_init_values(seed, l, t, scale, full, (size_t)m->d_out * r);
            tsr_status st =
                tsr_lora_set(a, l, (tsr_lora_target)t, TSR_LORA_B, full + (size_t)m->out_begin * r);
            free(full);
            if (st != TSR_OK)
                return st;
        }
    }
    return TSR_OK;
}

int main(int argc, char **argv) {
    int rank, world;
    if (tsr_comm_mpi_init(&argc, &argv, &rank, &world) != TSR_OK)
        return fprintf(stderr, "lora_driver: MPI did not start\n"), 1;
    tsr_lora_config lc = TSR_LORA_CONFIG_INIT;
    lc.rank = 4;
    lc.seed = 1;
    lc.targets = TSR_LORA_TARGETS_ALL;
    uint64_t b_seed = 7, dropout_key = 0;
    float b_scale = 0.02f;
    int steps = 1, accum = 0, nan_mode = 0, threads = 1, cuda = 0;
    tsr_dtype act = TSR_F32, wdt = TSR_F32;
    tsr_optim_params op = {{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f}, 0.0f};
    tsr_train_config tc = TSR_TRAIN_CONFIG_INIT;
    int a = 1;
    for (; a < argc && !strncmp(argv[a], "--", 2); a++) {
        const char *f = argv[a];
        const char *v = a + 1 < argc ? argv[a + 1] : "";
        if (!strcmp(f, "--rslora"))
            lc.use_rslora = 1;
        else if (!strcmp(f, "--accum"))
            accum = 1;
        else if (!strcmp(f, "--nan"))
            nan_mode = 1;
        else {
            a++;
            if (!strcmp(f, "--rank"))
                lc.rank = atoi(v);
            else if (!strcmp(f, "--alpha"))
                lc.alpha = strtof(v, NULL);
            else if (!strcmp(f, "--targets")) {
                if (tsr_lora_parse_targets(v, &lc.targets) != TSR_OK)
                    return fail(rank, "--targets");
            } else if (!strcmp(f, "--dropout"))
                lc.dropout = strtof(v, NULL);
            else if (!strcmp(f, "--dropout-key"))
                dropout_key = strtoull(v, NULL, 10);
            else if (!strcmp(f, "--seed"))
                lc.seed = strtoull(v, NULL, 10);
            else if (!strcmp(f, "--b-seed"))
                b_seed = strtoull(v, NULL, 10);
            else if (!strcmp(f, "--b-scale"))
                b_scale = strtof(v, NULL);
            else if (!strcmp(f, "--steps"))
                steps = atoi(v);
            else if (!strcmp(f, "--lr"))
                op.adamw.lr = strtof(v, NULL);
            else if (!strcmp(f, "--beta1"))
                op.adamw.beta1 = strtof(v, NULL);
            else if (!strcmp(f, "--beta2"))
                op.adamw.beta2 = strtof(v, NULL);
            else if (!strcmp(f, "--eps"))
                op.adamw.eps = strtof(v, NULL);
            else if (!strcmp(f, "--wd"))
                op.adamw.weight_decay = strtof(v, NULL);
            else if (!strcmp(f, "--max-norm"))
                op.max_grad_norm = strtof(v, NULL);
            else if (!strcmp(f, "--head-rows"))
                tc.head_rows = atoi(v);
            else if (!strcmp(f, "--threads"))
                threads = atoi(v);
            else if (!strcmp(f, "--backend"))
                cuda = !strcmp(v, "cuda");
            else if (!strcmp(f, "--act"))
                act = !strcmp(v, "bf16") ? TSR_BF16 : TSR_F32;
            else if (!strcmp(f, "--weights"))
                wdt = !strcmp(v, "bf16") ? TSR_BF16 : TSR_F32;
            else
                return fprintf(stderr, "lora_driver: unknown flag %s\n", f), 2;
        }
    }
    if (argc - a != 3)
        return fprintf(stderr, "usage: lora_driver [flags] MODEL IN OUT\n"), 2;
    const char *model_path = argv[a], *in_path = argv[a + 1], *out_path = argv[a + 2];

    record *recs;
    uint32_t n_recs;
    if (read_records(in_path, &recs, &n_recs))
        return 1;
    const record *rs = find_record(recs, n_recs, "seq_start", 'i');
    const record *rt = find_record(recs, n_recs, "tokens", 'i');
    const record *rw = find_record(recs, n_recs, "weights", 'f');
    if (!rs || !rt || rs->count < 2)
        return fprintf(stderr, "lora_driver: IN needs seq_start and tokens\n"), 2;
    tsr_train_batch batch = {.n_seqs = (int)rs->count - 1,
                             .seq_start = rs->data,
                             .tokens = rt->data,
                             .weights = rw ? rw->data : NULL,
                             .dropout_key = dropout_key};

    tsr_comm_grid grid;
    tsr_comm_grid_config gc = TSR_COMM_GRID_CONFIG_INIT;
    gc.tp = world;
    if (tsr_comm_grid_init(&grid, &gc) != TSR_OK)
        return fail(rank, "grid");
    tsr_model_file_t *mf;
    if (tsr_model_file_open(model_path, &mf) != TSR_OK)
        return fail(rank, "model");
    const tsr_model_config *mc = tsr_model_file_config(mf);
    tsr_shard_plan plan;
    tsr_plan_config pc = {world, 1, NULL, 0};
    tsr_lora_shard shard;
    if (tsr_shard_plan_init(mc, &pc, &plan) != TSR_OK ||
        tsr_lora_shard_of(&plan, grid.tp_rank, 0, &shard) != TSR_OK)
        return fail(rank, "plan");
    tsr_backend *be;
    if (cuda) {
        tsr_status st = tsr_backend_cuda_create(0, act, wdt, &be);
        if (st == TSR_ERR_UNSUPPORTED || (st != TSR_OK && tsr_backend_cuda_device_count() == 0)) {
            fprintf(stderr, "lora_driver: no CUDA backend here: %s\n", tsr_error_msg());
            return 77;
        }
        if (st != TSR_OK)
            return fail(rank, "backend");
    } else if (tsr_backend_cpu_create(threads, &be) != TSR_OK) {
        return fail(rank, "backend");
    }
    tsr_train_mpi h;
    tsr_train_mpi_init(&h, &grid, be);
    tsr_model_comm mcomm = tsr_train_mpi_model_comm(&h); /* pp = 1: the world is the TP group */
    tsr_model m;
    if (tsr_model_load(&m, mf, &shard.slice, 1, 1, TSR_F32, be, &mcomm) != TSR_OK)
        return fail(rank, "load");
    tsr_train_comm tcomm = tsr_train_mpi_comm(&h);
    tsr_trainer tr;
    tsr_lora_adapter ad;
    if (tsr_trainer_init(&tr, &m, &tcomm, &tc) != TSR_OK)
        return fail(rank, "trainer");
    if (tsr_lora_adapter_init(&ad, &lc, mc, &shard, be) != TSR_OK)
        return fail(rank, "adapter");
    if (b_scale > 0 && randomize_b(&ad, b_seed, b_scale) != TSR_OK)
        return fail(rank, "random B");
    if (nan_mode) {
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            tsr_lora_matrix *mm = tsr_lora_matrix_of(&ad, 0, (tsr_lora_target)t);
            if (!mm)
                continue;
            size_t n = tsr_lora_piece_size(&ad, mm, TSR_LORA_B);
            float *bb = malloc(n * sizeof *bb);
            if (!bb || tsr_lora_get(&ad, 0, (tsr_lora_target)t, TSR_LORA_B, bb) != TSR_OK)
                return fail(rank, "nan");
            bb[0] = NAN;
            if (tsr_lora_set(&ad, 0, (tsr_lora_target)t, TSR_LORA_B, bb) != TSR_OK)
                return fail(rank, "nan");
            free(bb);
            break;
        }
    }

    writer w = {NULL, 0};
    uint32_t zero = 0, one = 1;
    if (rank == 0) {
        w.f = fopen(out_path, "wb");
        if (!w.f)
            return fprintf(stderr, "lora_driver: cannot write %s\n", out_path), 1;
        fwrite("TSRL", 1, 4, w.f);
        fwrite(&one, 4, 1, w.f);
        fwrite(&zero, 4, 1, w.f); /* the count, rewritten at the end */
    }
    put_scalar(&w, "cfg.scale", ad.scale);
    put_scalar(&w, "cfg.tp", world);
    put_scalar(&w, "cfg.dropout", ad.cfg.dropout);
    put_scalar(&w, "cfg.seed", (double)ad.cfg.seed);
    put_scalar(&w, "cfg.dropout_key", (double)dropout_key);
    if (put_adapter(&w, &ad, &grid, "init", 0) != TSR_OK)
        return fail(rank, "gather");

    /* the two halves for --accum */
    const int ns = batch.n_seqs, h1 = ns / 2 > 0 ? ns / 2 : 1;
    const int32_t *ss = batch.seq_start;
    int32_t *ss2 = malloc(((size_t)ns + 1) * sizeof *ss2);
    for (int s = h1; s <= ns; s++)
        ss2[s - h1] = ss[s] - ss[h1];
    tsr_train_batch parts[2] = {
        {.n_seqs = h1, .seq_start = ss, .tokens = batch.tokens, .weights = batch.weights},
        {.n_seqs = ns - h1,
         .seq_start = ss2,
         .tokens = batch.tokens + ss[h1],
         .weights = batch.weights ? batch.weights + ss[h1] : NULL,
         .token_offset = ss[h1]}, /* the whole batch's dropout masks */
    };
    const int n_parts = accum && ns > 1 ? 2 : 1;
    if (n_parts == 1)
        parts[0] = batch;

    int rc = 0;
    for (int k = 0; k < steps && !rc; k++) {
        char name[64];
        tsr_train_stats fs, sum = {0};
        if (tsr_train_forward(&tr, &ad, &batch, &fs) != TSR_OK)
            return fail(rank, "forward");
        snprintf(name, sizeof name, "s%d.fwd_loss", k);
        put_scalar(&w, name, fs.loss);
        for (int p = 0; p < n_parts; p++) {
            tsr_train_stats st;
            parts[p].dropout_key = dropout_key + (uint64_t)k; /* one key per step's batch */
            if (tsr_train_forward_backward(&tr, &ad, &parts[p], &st) != TSR_OK)
                return fail(rank, "forward_backward");
            sum.loss += st.loss;
            sum.weight_sum += st.weight_sum;
            sum.n_loss_tokens += st.n_loss_tokens;
        }
        snprintf(name, sizeof name, "s%d.loss", k);
        put_scalar(&w, name, sum.loss);
        snprintf(name, sizeof name, "s%d.weight_sum", k);
        put_scalar(&w, name, sum.weight_sum);
        snprintf(name, sizeof name, "s%d.n_loss_tokens", k);
        put_scalar(&w, name, (double)sum.n_loss_tokens);
        if (tsr_train_reduce_grads(&tr, &ad) != TSR_OK)
            return fail(rank, "reduce");
        snprintf(name, sizeof name, "s%d", k);
        if (put_adapter(&w, &ad, &grid, name, 1) != TSR_OK)
            return fail(rank, "gather");
        tsr_optim_result res = {0};
        tsr_status st = tsr_train_optim_step(&tr, &ad, &op, &res);
        if (st != TSR_OK && rank == 0)
            fprintf(stderr, "lora_driver: step %d refused: %s\n", k, tsr_error_msg());
        snprintf(name, sizeof name, "s%d.status", k);
        put_scalar(&w, name, st);
        snprintf(name, sizeof name, "s%d.norm", k);
        put_scalar(&w, name, res.grad_norm);
        snprintf(name, sizeof name, "s%d.step", k);
        put_scalar(&w, name, ad.step);
        snprintf(name, sizeof name, "s%d.mean_loss", k);
        put_scalar(&w, name, res.loss);
        snprintf(name, sizeof name, "s%d.acc_weight", k);
        put_scalar(&w, name, ad.weight_sum + ad.loss_sum + ad.n_loss_tokens);
        snprintf(name, sizeof name, "s%d", k);
        if (put_adapter(&w, &ad, &grid, name, 0) != TSR_OK)
            return fail(rank, "gather");
    }
    if (w.f) {
        fseek(w.f, 8, SEEK_SET);
        fwrite(&w.n, 4, 1, w.f);
        if (fclose(w.f))
            rc = 1;
    }
    free(ss2);
    for (uint32_t i = 0; i < n_recs; i++)
        free(recs[i].data);
    free(recs);
    tsr_train_mpi_free(&h);
    tsr_lora_adapter_free(&ad);
    tsr_trainer_free(&tr);
    tsr_model_free(&m);
    tsr_backend_destroy(be);
    tsr_shard_plan_free(&plan);
    tsr_model_file_close(mf);
    tsr_comm_grid_free(&grid);
    tsr_comm_mpi_finalize();
    return rc;
}
