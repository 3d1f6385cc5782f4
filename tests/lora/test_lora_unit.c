/* tests/lora/test_lora_unit.c - runtime/model/lora.c without a model: the target
 * parser, the configuration checks, the initialisation stream, and adapters
 * over every TP rank of tp = 1..4 (and pp = 2) of a small configuration:
 * shapes and offsets follow the shard plan, the pieces of A put together are
 * the same full matrix in every layout, every element of every factor has
 * exactly one owning copy, B and all state start at zero, get/set round-trip;
 * LoRA dropout's hash (pinned values, threshold edges, the drop rate).
 * (Gradients and the optimizer are covered by test_lora.py against NumPy.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/check.h"
#include "runtime/model/lora.h"

static void test_parse(void) {
    unsigned m = 0;
    CHECK_OK(tsr_lora_parse_targets("q,k,v,o,gate,up,down", &m));
    CHECK(m == TSR_LORA_TARGETS_ALL, "mask 0x%x", m);
    CHECK_OK(tsr_lora_parse_targets(" q_proj , v ", &m));
    CHECK(m == (TSR_LORA_TARGET_BIT(TSR_LORA_Q) | TSR_LORA_TARGET_BIT(TSR_LORA_V)), "mask 0x%x", m);
    CHECK_OK(tsr_lora_parse_targets("all", &m));
    CHECK(m == TSR_LORA_TARGETS_ALL, "mask 0x%x", m);
    CHECK_OK(tsr_lora_parse_targets("down_proj,down", &m));
    CHECK(m == TSR_LORA_TARGET_BIT(TSR_LORA_DOWN), "mask 0x%x", m);
    CHECK_ERR(tsr_lora_parse_targets("q,foo", &m), TSR_ERR_INVALID, "unknown module 'foo'");
    CHECK_ERR(tsr_lora_parse_targets("q,,v", &m), TSR_ERR_INVALID, "empty item");
    CHECK_ERR(tsr_lora_parse_targets("", &m), TSR_ERR_INVALID, "empty item");
    for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
        CHECK_OK(tsr_lora_parse_targets(tsr_lora_target_peft_name((tsr_lora_target)t), &m));
        CHECK(m == TSR_LORA_TARGET_BIT(t), "%s", tsr_lora_target_peft_name((tsr_lora_target)t));
    }
    CHECK(!strcmp(tsr_lora_target_name(TSR_LORA_GATE), "gate"), "name");
    CHECK(!strcmp(tsr_lora_target_name((tsr_lora_target)99), "?"), "name of a bad target");
}

static void test_config(void) {
    tsr_lora_config c = TSR_LORA_CONFIG_INIT;
    CHECK_OK(tsr_lora_config_check(&c));
    CHECK(c.rank == 8 && c.alpha == 8.0f, "PEFT defaults");
    CHECK(fabsf(tsr_lora_scale(&c) - 1.0f) < 1e-7f, "alpha / r");
    c.rank = 16;
    c.alpha = 32;
    c.use_rslora = 1;
    CHECK(fabsf(tsr_lora_scale(&c) - 8.0f) < 1e-6f, "alpha / sqrt(r)");
    c.dropout = 0.1f;
    CHECK_OK(tsr_lora_config_check(&c));
    c.dropout = 0.999f;
    CHECK_OK(tsr_lora_config_check(&c));
    c.dropout = 1.5f;
    CHECK_ERR(tsr_lora_config_check(&c), TSR_ERR_INVALID, "dropout");
    c.dropout = 1.0f;
    CHECK_ERR(tsr_lora_config_check(&c), TSR_ERR_INVALID, "must be in [0, 1)");
    c.dropout = -0.1f;
    CHECK_ERR(tsr_lora_config_check(&c), TSR_ERR_INVALID, "dropout");
    c.dropout = NAN;
    CHECK_ERR(tsr_lora_config_check(&c), TSR_ERR_INVALID, "dropout");
    c.dropout = 0;
    c.rank = 0;
    CHECK_ERR(tsr_lora_config_check(&c), TSR_ERR_INVALID, "rank 0");
    c.rank = 4;
    c.alpha = -1;
    CHECK_ERR(tsr_lora_config_check(&c), TSR_ERR_INVALID, "alpha");
    c.alpha = 8;
    c.targets = 0;
    CHECK_ERR(tsr_lora_config_check(&c), TSR_ERR_INVALID, "target");
}

static void test_init_values(void) {
    enum { N = 20000 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    tsr_lora_init_values(42, 3, TSR_LORA_O, 0.5f, a, N);
    tsr_lora_init_values(42, 3, TSR_LORA_O, 0.5f, b, N);
    CHECK(!memcmp(a, b, N * sizeof *a), "the stream is deterministic");
    double sum = 0, sq = 0, mx = 0;
    for (int i = 0; i < N; i++) {
        CHECK(a[i] >= -0.5f && a[i] <= 0.5f, "value %g outside the bound", (double)a[i]);
        sum += a[i];
        sq += (double)a[i] * a[i];
        mx = fmax(mx, fabs(a[i]));
    }
    /* uniform(-0.5, 0.5): mean 0, variance 1/12 */
    CHECK(fabs(sum / N) < 0.01 && fabs(sq / N - 1.0 / 12) < 0.003 && mx > 0.499,
          "mean %g, variance %g, max %g", sum / N, sq / N, mx);
    tsr_lora_init_values(42, 3, TSR_LORA_DOWN, 0.5f, b, N);
    CHECK(memcmp(a, b, N * sizeof *a), "another target draws another stream");
    tsr_lora_init_values(43, 3, TSR_LORA_O, 0.5f, b, N);
    CHECK(memcmp(a, b, N * sizeof *a), "another seed draws another stream");
    free(a);
    free(b);
}

/* The full matrix of one factor, put together from every TP rank's owning pieces;
 * *cover counts how many owners wrote each element. */
typedef struct {
    float *val;
    int *cover;
} whole;

static void add_piece(const tsr_lora_adapter *a, const tsr_lora_matrix *m, int is_a, whole *w) {
    tsr_lora_buf which = is_a ? TSR_LORA_A : TSR_LORA_B;
    size_t n = tsr_lora_piece_size(a, m, which);
    const int r = a->cfg.rank;
    float *p = malloc(n * sizeof *p);
    CHECK_OK(tsr_lora_get(a, m->layer, m->target, which, p));
    if (!(is_a ? m->a_owner : m->b_owner)) {
        free(p);
        return;
    }
    for (int i = 0; i < (is_a ? r : m->n_out); i++) {
        for (int j = 0; j < (is_a ? m->n_in : r); j++) {
            size_t at =
                is_a ? (size_t)i * m->d_in + m->in_begin + j : (size_t)(m->out_begin + i) * r + j;
            w->val[at] = p[(size_t)i * (is_a ? m->n_in : r) + j];
            w->cover[at]++;
        }
    }
    free(p);
}

static void test_layouts(void) {
    tsr_model_config c = {0};
    c.n_embd = 32, c.n_layer = 3, c.n_head = 4, c.n_head_kv = 2, c.head_dim = 8, c.n_ff = 64;
    c.n_vocab = 96;
    tsr_backend *be;
    CHECK_OK(tsr_backend_cpu_create(1, &be));
    tsr_lora_config lc = TSR_LORA_CONFIG_INIT;
    lc.rank = 3;
    lc.seed = 99;
    lc.targets = TSR_LORA_TARGETS_ALL;
    const int r = lc.rank;
    static const int tps[] = {1, 2, 4}; /* 4 > 2 KV heads: replicated */
    for (size_t ti = 0; ti < sizeof tps / sizeof tps[0]; ti++) {
        const int tp = tps[ti];
        for (int pp = 1; pp <= 2; pp++) {
            tsr_shard_plan plan;
            tsr_plan_config pc = {tp, pp, NULL, 0};
            CHECK_OK(tsr_shard_plan_init(&c, &pc, &plan));
            for (int l = 0; l < c.n_layer; l++) {
                for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
                    whole wa = {0}, wb = {0};
                    int d_in = 0, d_out = 0;
                    for (int s = 0; s < pp; s++) {
                        for (int k = 0; k < tp; k++) {
                            tsr_lora_shard sh;
                            CHECK_OK(tsr_lora_shard_of(&plan, k, s, &sh));
                            if (l < sh.slice.layer_begin || l >= sh.slice.layer_end)
                                continue;
                            tsr_lora_adapter a;
                            CHECK_OK(tsr_lora_adapter_init(&a, &lc, &c, &sh, be));
                            CHECK(a.n_params == a.repl_n + a.shared_n + a.local_n, "regions");
                            CHECK((a.shared_n > 0) == (tp > c.n_head_kv), "shared region");
                            const tsr_lora_matrix *m =
                                tsr_lora_matrix_of_c(&a, l, (tsr_lora_target)t);
                            CHECK(m, "layer %d target %d missing", l, t);
                            d_in = m->d_in, d_out = m->d_out;
                            if (!wa.val) {
                                wa.val = calloc((size_t)r * d_in, sizeof(float));
                                wa.cover = calloc((size_t)r * d_in, sizeof(int));
                                wb.val = calloc((size_t)d_out * r, sizeof(float));
                                wb.cover = calloc((size_t)d_out * r, sizeof(int));
                            }
                            /* column-parallel: A whole, B sliced; row-parallel: the reverse */
                            if (m->a_replicated)
                                CHECK(m->n_in == d_in && (tp == 1 || m->n_out < d_out),
                                      "tp %d target %d: n_in %d n_out %d", tp, t, m->n_in,
                                      m->n_out);
                            else
                                CHECK(m->n_out == d_out && (tp == 1 || m->n_in < d_in),
                                      "tp %d target %d: n_in %d n_out %d", tp, t, m->n_in,
                                      m->n_out);
                            add_piece(&a, m, 1, &wa);
                            add_piece(&a, m, 0, &wb);
                            /* set/get of B round-trips; the state starts at zero */
                            size_t nb = tsr_lora_piece_size(&a, m, TSR_LORA_B);
                            float *x = malloc(nb * sizeof *x), *y = malloc(nb * sizeof *y);
                            for (size_t i = 0; i < nb; i++)
                                x[i] = (float)i - 0.5f;
                            CHECK_OK(tsr_lora_set(&a, l, (tsr_lora_target)t, TSR_LORA_B, x));
                            CHECK_OK(tsr_lora_get(&a, l, (tsr_lora_target)t, TSR_LORA_B, y));
                            CHECK(!memcmp(x, y, nb * sizeof *x), "set/get B");
                            const tsr_lora_buf zeros[] = {TSR_LORA_DA, TSR_LORA_DB, TSR_LORA_MA,
                                                          TSR_LORA_VA, TSR_LORA_MB, TSR_LORA_VB};
                            for (size_t z = 0; z < sizeof zeros / sizeof zeros[0]; z++) {
                                size_t nz = tsr_lora_piece_size(&a, m, zeros[z]);
                                float *q = malloc(nz * sizeof *q);
                                CHECK_OK(tsr_lora_get(&a, l, (tsr_lora_target)t, zeros[z], q));
                                for (size_t i = 0; i < nz; i++)
                                    CHECK(q[i] == 0.0f, "state %d not zero", (int)zeros[z]);
                                free(q);
                            }
                            free(x);
                            free(y);
                            tsr_lora_adapter_free(&a);
                        }
                    }
                    /* every element owned once; A is the full matrix of the stream; B = 0 */
                    float *full = malloc((size_t)r * d_in * sizeof *full);
                    tsr_lora_init_values(lc.seed, l, t, (float)(1.0 / sqrt((double)d_in)), full,
                                         (size_t)r * d_in);
                    for (int i = 0; i < r * d_in; i++)
                        CHECK(wa.cover[i] == 1 && wa.val[i] == full[i],
                              "tp %d pp %d layer %d target %d: A[%d] cover %d", tp, pp, l, t, i,
                              wa.cover[i]);
                    for (int i = 0; i < d_out * r; i++)
                        CHECK(wb.cover[i] == 1 && wb.val[i] == 0.0f,
                              "tp %d pp %d layer %d target %d: B[%d] cover %d", tp, pp, l, t, i,
                              wb.cover[i]);
                    free(full);
                    free(wa.val), free(wa.cover), free(wb.val), free(wb.cover);
                }
            }
            tsr_shard_plan_free(&plan);
        }
    }
    /* a refused adapter is zeroed and free on it is harmless */
    tsr_lora_adapter a;
    tsr_lora_shard sh = tsr_lora_shard_single(&c);
    lc.dropout = 1.0f;
    CHECK_ERR(tsr_lora_adapter_init(&a, &lc, &c, &sh, be), TSR_ERR_INVALID, "dropout");
    tsr_lora_adapter_free(&a);
    tsr_lora_adapter_free(NULL);
    lc.dropout = 0.05f; /* dropout is a training-time setting: any adapter may carry it */
    CHECK_OK(tsr_lora_adapter_init(&a, &lc, &c, &sh, be));
    CHECK(a.cfg.dropout == 0.05f, "the adapter keeps cfg.dropout");
    tsr_lora_adapter_free(&a);
    lc.dropout = 0;
    lc.targets = TSR_LORA_TARGET_BIT(TSR_LORA_Q);
    CHECK_OK(tsr_lora_adapter_init(&a, &lc, &c, &sh, be));
    CHECK(!tsr_lora_matrix_of(&a, 0, TSR_LORA_V) && !tsr_lora_matrix_of(&a, 3, TSR_LORA_Q) &&
              tsr_lora_matrix_of(&a, 2, TSR_LORA_Q),
          "matrix_of: only adapted targets of held layers");
    float one = 1;
    CHECK_ERR(tsr_lora_set(&a, 0, TSR_LORA_V, TSR_LORA_A, &one), TSR_ERR_INVALID, "not adapted");
    tsr_lora_adapter_free(&a);
    /* a frozen (inference) adapter: the same A, no gradient or moment slabs */
    tsr_lora_adapter f;
    CHECK_OK(tsr_lora_adapter_init(&a, &lc, &c, &sh, be));
    CHECK_OK(tsr_lora_adapter_init_frozen(&f, &lc, &c, &sh, be));
    {
        const tsr_lora_matrix *mq = tsr_lora_matrix_of_c(&f, 2, TSR_LORA_Q);
        size_t na = tsr_lora_piece_size(&f, mq, TSR_LORA_A);
        float *x = malloc(na * sizeof *x), *y = malloc(na * sizeof *y);
        CHECK(x && y, "out of memory");
        CHECK_OK(tsr_lora_get(&a, 2, TSR_LORA_Q, TSR_LORA_A, x));
        CHECK_OK(tsr_lora_get(&f, 2, TSR_LORA_Q, TSR_LORA_A, y));
        CHECK(!memcmp(x, y, na * sizeof *x), "frozen adapter: A differs from the trainable one");
        CHECK(!f.grad && !f.m && !f.v && !mq->dA && !mq->mB, "frozen adapter has training state");
        CHECK_ERR(tsr_lora_get(&f, 2, TSR_LORA_Q, TSR_LORA_DA, x), TSR_ERR_INVALID, "not there");
        CHECK_OK(tsr_lora_zero_grads(&f));
        free(x), free(y);
    }
    tsr_lora_adapter_free(&f);
    tsr_lora_adapter_free(&a);
    tsr_backend_destroy(be);
}

/* seed, key, layer, target, token, column, stream, bits: from dropout_stream
 * and dropout_bits of tests/reference/train_ref.py */
#define DROPOUT_PINS                                                                               \
    {0x0ull, 0x0ull, 0, 0, 0, 0, 0xfd0c822e52afcb14ull, 12442833u},                                \
        {0x1ull, 0x0ull, 0, 0, 0, 0, 0xc498626d7a4e4b33ull, 7800235u},                             \
        {0x2aull, 0x7ull, 3, 6, 123, 456, 0x0c1f1cec4f0f3a3dull, 6155949u},                        \
        {0xffffffffffffffffull,                                                                    \
         0x123456789abcdef0ull,                                                                    \
         29,                                                                                       \
         4,                                                                                        \
         100000,                                                                                   \
         1535,                                                                                     \
         0x849d787e4961fdbdull,                                                                    \
         3035084u},                                                                                \
    {                                                                                              \
        0x5ull, 0x1ull, 1, 3, 7, 300, 0xa6969e3e88374416ull, 8044051u                              \
    }

/* LoRA dropout's hash (runtime/model/lora.h): values pinned from the NumPy copy in
 * tests/reference/train_ref.py, the threshold's edges, and the drop rate. */
static void test_dropout_hash(void) {
    CHECK(tsr_lora_dropout_threshold(0.0f) == 0, "threshold(0)");
    CHECK(tsr_lora_dropout_threshold(0.5f) == 1u << 23, "threshold(0.5)");
    CHECK(tsr_lora_dropout_threshold(0x1.0p-24f) == 1, "threshold(2^-24)");
    CHECK(tsr_lora_dropout_threshold(0x1.8p-25f) == 1, "threshold(1.5 * 2^-25) rounds up");
    CHECK(tsr_lora_dropout_threshold(0.3f) == 5033165, "threshold(0.3) = %u",
          tsr_lora_dropout_threshold(0.3f));
    static const struct {
        uint64_t seed, key;
        int layer, target;
        int64_t token, col;
        uint64_t stream;
        uint32_t bits;
    } pin[] = {DROPOUT_PINS};
    for (size_t i = 0; i < sizeof pin / sizeof pin[0]; i++) {
        uint64_t st = tsr_lora_dropout_stream(pin[i].seed, pin[i].key, pin[i].layer, pin[i].target);
        CHECK(st == pin[i].stream, "pin %zu: stream 0x%016llx, want 0x%016llx", i,
              (unsigned long long)st, (unsigned long long)pin[i].stream);
        uint32_t b = tsr_lora_dropout_bits(st, pin[i].token, pin[i].col);
        CHECK(b == pin[i].bits, "pin %zu: bits %u, want %u", i, b, pin[i].bits);
    }
    /* the drop rate over 200 x 500 elements is p within 5 sigma */
    const uint64_t st = tsr_lora_dropout_stream(1, 2, 3, TSR_LORA_UP);
    const uint32_t thr = tsr_lora_dropout_threshold(0.3f);
    long dropped = 0, total = 200L * 500;
    for (int i = 0; i < 200; i++)
        for (int j = 0; j < 500; j++)
            dropped += tsr_lora_dropout_bits(st, i, j) < thr;
    const double rate = (double)dropped / total, sd = sqrt(0.3 * 0.7 / total);
    CHECK(fabs(rate - 0.3) < 5 * sd, "drop rate %g for p = 0.3", rate);
    CHECK(tsr_lora_dropout_stream(1, 2, 3, TSR_LORA_UP) !=
                  tsr_lora_dropout_stream(1, 3, 3, TSR_LORA_UP) &&
              tsr_lora_dropout_stream(1, 2, 3, TSR_LORA_UP) !=
                  tsr_lora_dropout_stream(1, 2, 3, TSR_LORA_DOWN) &&
              tsr_lora_dropout_stream(1, 2, 3, TSR_LORA_UP) !=
                  tsr_lora_dropout_stream(1, 2, 4, TSR_LORA_UP) &&
              tsr_lora_dropout_stream(1, 2, 3, TSR_LORA_UP) !=
                  tsr_lora_dropout_stream(2, 2, 3, TSR_LORA_UP),
          "key, target, layer and seed each change the stream");
}

int main(void) {
    test_parse();
    test_config();
    test_init_values();
    test_dropout_hash();
    test_layouts();
    printf("PASS\n");
    return 0;
}
