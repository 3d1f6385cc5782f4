/* tests/peft/peft_driver.c - drives runtime/peft for the tests in this folder.
 *
 *   peft_driver selftest [MODEL | default]
 *       C round trips, bit-exact: random adapters saved and loaded for a small
 *       synthetic config (several ranks, target sets, rsLoRA, dropout, names,
 *       replacing an existing adapter by exchange and by the fallback) and,
 *       when MODEL (a .gguf file or HF directory; "default": $TESSERA_MODEL or
 *       the default model in $TESSERA_MODELS or ~/.cache/tessera/models)
 *       exists, for its config with all seven targets; plus the save-side refusals. Exits 0 or 1.
 *   peft_driver save DIR CONFIG SEED R ALPHA TARGETS [--rslora] [--dropout X]
 *                    [--base NAME] [--raw FILE]
 *       Saves a random adapter (uniform in [-1, 1), seeded); --raw also writes
 *       its matrices as raw f32 in canonical order (layer, then target in
 *       q,k,v,o,gate,up,down order, A then B) for the Python test.
 *   peft_driver load DIR CONFIG [--raw FILE]
 *       Loads; prints one JSON line (r, alpha, use_rslora, dropout, targets,
 *       n_layers, base_model) on stdout and writes the matrices as with save.
 *       On a refusal prints "error: <status>: <message>" to stderr, exits 2.
 *
 * CONFIG is "synthetic" (n_embd 48, 4 heads of 16, 2 KV heads, n_ff 80,
 * 3 layers: n_head*head_dim != n_embd, so d_in/d_out mix-ups show) or a
 * model path. TARGETS is a comma list of q,k,v,o,gate,up,down or "all". */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/status.h"
#include "shard/peft.h"
#include "shard/model_file.h"
#include "tests/common/check.h"
#include "tests/common/tmpdir.h"

static tsr_model_config synthetic_config(void) {
    tsr_model_config c;
    memset(&c, 0, sizeof c);
    c.arch = TSR_ARCH_LLAMA;
    c.n_embd = 48;
    c.n_layer = 3;
    c.n_head = 4;
    c.n_head_kv = 2;
    c.head_dim = 16;
    c.n_ff = 80;
    c.n_vocab = 100;
    c.n_ctx_train = 128;
    c.rms_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    return c;
}

/* 1 when the config was found (a missing model path gives 0 without error). */
static int get_config(const char *spec, tsr_model_config *cfg) {
    if (strcmp(spec, "synthetic") == 0) {
        *cfg = synthetic_config();
        return 1;
    }
    struct stat sb;
    if (stat(spec, &sb) != 0)
        return 0;
    tsr_model_file_t *mf = NULL;
    CHECK_OK(tsr_model_file_open(spec, &mf));
    *cfg = *tsr_model_file_config(mf);
    tsr_model_file_close(mf);
    return 1;
}

static unsigned parse_targets(const char *list) {
    if (strcmp(list, "all") == 0)
        return TSR_LORA_TARGETS_ALL;
    static const char *short_names[TSR_LORA_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
    unsigned m = 0;
    char *dup = strdup(list), *save = NULL;
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int t = 0;
        while (t < TSR_LORA_N_TARGETS && strcmp(tok, short_names[t]) != 0)
            t++;
        CHECK(t < TSR_LORA_N_TARGETS, "unknown target '%s'", tok);
        m |= TSR_LORA_TARGET_BIT(t);
    }
    free(dup);
    return m;
}

static void fill_random(tsr_peft_adapter *a, const tsr_model_config *cfg, uint64_t seed) {
    tu_rng rng = {seed};
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            if (!(a->targets & TSR_LORA_TARGET_BIT(t)))
                continue;
            int din, dout;
            CHECK_OK(tsr_peft_target_dims(cfg, t, &din, &dout));
            for (size_t i = 0; i < (size_t)a->r * din; i++)
                a->A[TSR_PEFT_IDX(l, t)][i] = tu_rng_float(&rng, -1.0f, 1.0f);
            for (size_t i = 0; i < (size_t)dout * a->r; i++)
                a->B[TSR_PEFT_IDX(l, t)][i] = tu_rng_float(&rng, -1.0f, 1.0f);
        }
}

static void write_raw(const char *path, const tsr_peft_adapter *a, const tsr_model_config *cfg) {
    FILE *fp = fopen(path, "wb");
    CHECK(fp, "cannot create %s: %s", path, strerror(errno));
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            if (!(a->targets & TSR_LORA_TARGET_BIT(t)))
                continue;
            int din, dout;
            CHECK_OK(tsr_peft_target_dims(cfg, t, &din, &dout));
            size_t na = (size_t)a->r * din, nb = (size_t)dout * a->r;
            CHECK(fwrite(a->A[TSR_PEFT_IDX(l, t)], sizeof(float), na, fp) == na, "write %s", path);
            CHECK(fwrite(a->B[TSR_PEFT_IDX(l, t)], sizeof(float), nb, fp) == nb, "write %s", path);
        }
    CHECK(fclose(fp) == 0, "close %s", path);
}

/* Bit-exact comparison of two adapters (fields and every matrix). */
static void check_same(const tsr_peft_adapter *x, const tsr_peft_adapter *y,
                       const tsr_model_config *cfg, const char *what) {
    CHECK(x->r == y->r && x->targets == y->targets && x->n_layers == y->n_layers &&
              x->use_rslora == y->use_rslora,
          "%s: r %d/%d targets 0x%x/0x%x layers %d/%d rslora %d/%d", what, x->r, y->r, x->targets,
          y->targets, x->n_layers, y->n_layers, x->use_rslora, y->use_rslora);
    CHECK(memcmp(&x->alpha, &y->alpha, sizeof x->alpha) == 0, "%s: alpha %.9g vs %.9g", what,
          (double)x->alpha, (double)y->alpha);
    CHECK(memcmp(&x->dropout, &y->dropout, sizeof x->dropout) == 0, "%s: dropout %.9g vs %.9g",
          what, (double)x->dropout, (double)y->dropout);
    CHECK(strcmp(x->base_model, y->base_model) == 0, "%s: base_model '%s' vs '%s'", what,
          x->base_model, y->base_model);
    for (int l = 0; l < x->n_layers; l++)
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            int i = TSR_PEFT_IDX(l, t);
            if (!(x->targets & TSR_LORA_TARGET_BIT(t))) {
                CHECK(!y->A[i] && !y->B[i], "%s: layer %d target %d should be NULL", what, l, t);
                continue;
            }
            int din, dout;
            CHECK_OK(tsr_peft_target_dims(cfg, t, &din, &dout));
            CHECK(memcmp(x->A[i], y->A[i], (size_t)x->r * din * sizeof(float)) == 0,
                  "%s: layer %d %s A differs", what, l, tsr_peft_target_name(t));
            CHECK(memcmp(x->B[i], y->B[i], (size_t)dout * x->r * sizeof(float)) == 0,
                  "%s: layer %d %s B differs", what, l, tsr_peft_target_name(t));
        }
}

static void roundtrip(const char *dir, const tsr_model_config *cfg, int r, float alpha,
                      unsigned targets, int rslora, float dropout, const char *base,
                      uint64_t seed) {
    tsr_peft_adapter a, b;
    CHECK_OK(tsr_peft_init(&a, cfg, r, alpha, targets));
    a.use_rslora = rslora;
    a.dropout = dropout;
    snprintf(a.base_model, sizeof a.base_model, "%s", base);
    fill_random(&a, cfg, seed);
    CHECK_OK(tsr_peft_save(dir, &a, cfg));
    CHECK_OK(tsr_peft_load(dir, cfg, &b));
    char what[96];
    snprintf(what, sizeof what, "r=%d targets=0x%x seed=%llu", r, targets,
             (unsigned long long)seed);
    check_same(&a, &b, cfg, what);
    tsr_peft_free(&a);
    tsr_peft_free(&b);
}

/* "default": $TESSERA_MODEL, else $TESSERA_MODELS (or ~/.cache/tessera/models)
 * + the default model's file name, as the other tests find it. */
static const char *resolve_model(const char *arg, char *buf, size_t cap) {
    if (!arg || strcmp(arg, "default") != 0)
        return arg;
    const char *m = getenv("TESSERA_MODEL");
    if (m && m[0])
        return m;
    const char *root = getenv("TESSERA_MODELS"), *home = getenv("HOME");
    if (root && root[0])
        snprintf(buf, cap, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", root);
    else
        snprintf(buf, cap, "%s/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                 home ? home : "");
    return buf;
}

static int cmd_selftest(const char *model_arg) {
    char model_buf[1024];
    const char *model = resolve_model(model_arg, model_buf, sizeof model_buf);
    const char *root = tu_tmpdir_make("tsr_peft_selftest");
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/adapter", root);
    tsr_model_config cfg = synthetic_config();

    /* Scaling. */
    tsr_peft_adapter a;
    CHECK_OK(tsr_peft_init(&a, &cfg, 16, 32.0f, TSR_LORA_TARGET_BIT(TSR_LORA_Q)));
    CHECK(tsr_peft_scaling(&a) == 2.0f, "scaling %g", (double)tsr_peft_scaling(&a));
    a.use_rslora = 1;
    CHECK(tsr_peft_scaling(&a) == 8.0f, "rslora scaling %g", (double)tsr_peft_scaling(&a));
    tsr_peft_free(&a);
    tsr_peft_free(&a); /* zeroed: a no-op */
    tsr_peft_free(NULL);

    /* Round trips: the first creates dir, the later ones replace it. */
    roundtrip(dir, &cfg, 4, 8.0f, TSR_LORA_TARGETS_ALL, 0, 0.0f, "", 1);
    roundtrip(dir, &cfg, 1, 1.0f, TSR_LORA_TARGET_BIT(TSR_LORA_Q) | TSR_LORA_TARGET_BIT(TSR_LORA_V),
              0, 0.05f, "HuggingFaceTB/SmolLM2-135M-Instruct", 2);
    roundtrip(dir, &cfg, 7, 13.5f,
              TSR_LORA_TARGET_BIT(TSR_LORA_O) | TSR_LORA_TARGET_BIT(TSR_LORA_DOWN), 1, 0.1f, "x",
              3);
    roundtrip(dir, &cfg, 3, 0.3f,
              TSR_LORA_TARGET_BIT(TSR_LORA_K) | TSR_LORA_TARGET_BIT(TSR_LORA_GATE) |
                  TSR_LORA_TARGET_BIT(TSR_LORA_UP),
              0, 0.333333f, "", 4);
    tu_check_no_leftovers(root);
    char slashed[1200];
    snprintf(slashed, sizeof slashed, "%s//", dir); /* trailing slashes */
    roundtrip(slashed, &cfg, 2, 4.0f, TSR_LORA_TARGETS_ALL, 0, 0.0f, "", 5);
    tu_check_no_leftovers(root);
    /* The fallback swap (rename aside, rename in). */
    setenv("TSR_PEFT_SAVE_NO_EXCHANGE", "1", 1);
    roundtrip(dir, &cfg, 5, 10.0f, TSR_LORA_TARGETS_ALL, 0, 0.0f, "fallback", 6);
    unsetenv("TSR_PEFT_SAVE_NO_EXCHANGE");
    tu_check_no_leftovers(root);
    /* The directory's mode follows the umask (mkdtemp would make it 0700). */
    mode_t old_mask = umask(022);
    roundtrip(dir, &cfg, 2, 4.0f, TSR_LORA_TARGET_BIT(TSR_LORA_UP), 0, 0.0f, "", 7);
    umask(old_mask);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0755, "mode %o",
          (unsigned)(sb.st_mode & 0777));
    printf("synthetic config: round trips bit-exact\n");

    /* Save-side refusals: nothing written, the previous adapter intact. */
    tsr_peft_adapter prev;
    CHECK_OK(tsr_peft_load(dir, &cfg, &prev));
    CHECK_OK(tsr_peft_init(&a, &cfg, 2, 4.0f, TSR_LORA_TARGET_BIT(TSR_LORA_Q)));
    a.A[TSR_PEFT_IDX(1, TSR_LORA_Q)][3] = NAN;
    CHECK_ERR(tsr_peft_save(dir, &a, &cfg), TSR_ERR_INVALID,
              "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
    a.A[TSR_PEFT_IDX(1, TSR_LORA_Q)][3] = 0.5f;
    a.dropout = 1.0f;
    CHECK_ERR(tsr_peft_save(dir, &a, &cfg), TSR_ERR_INVALID, "lora_dropout");
    a.dropout = 0.0f;
    snprintf(a.base_model, sizeof a.base_model, "bad \xff name");
    CHECK_ERR(tsr_peft_save(dir, &a, &cfg), TSR_ERR_INVALID, "UTF-8");
    a.base_model[0] = '\0';
    tsr_model_config other = cfg;
    other.n_layer = 4;
    CHECK_ERR(tsr_peft_save(dir, &a, &other), TSR_ERR_INVALID, "4");
    a.targets |= TSR_LORA_TARGET_BIT(TSR_LORA_K); /* k targeted, matrices NULL */
    CHECK_ERR(tsr_peft_save(dir, &a, &cfg), TSR_ERR_INVALID, "k_proj");
    a.targets = TSR_LORA_TARGET_BIT(TSR_LORA_Q);
    a.r = 0;
    CHECK_ERR(tsr_peft_save(dir, &a, &cfg), TSR_ERR_INVALID, "rank");
    a.r = 2;
    CHECK_ERR(tsr_peft_save("/", &a, &cfg), TSR_ERR_INVALID, "cannot be an adapter directory");
    /* A directory that is not an adapter is never replaced. */
    char other_dir[1100], path[1200];
    snprintf(other_dir, sizeof other_dir, "%s/not_an_adapter", root);
    CHECK(mkdir(other_dir, 0755) == 0, "mkdir");
    snprintf(path, sizeof path, "%s/notes.txt", other_dir);
    FILE *fp = fopen(path, "w");
    CHECK(fp && fputs("keep me\n", fp) >= 0 && fclose(fp) == 0, "write %s", path);
    CHECK_ERR(tsr_peft_save(other_dir, &a, &cfg), TSR_ERR_INVALID, "not an adapter directory");
    CHECK(access(path, F_OK) == 0, "%s was removed", path);
    snprintf(path, sizeof path, "%s/sub", root);
    CHECK(mkdir(path, 0755) == 0 && mkdir(strcat(path, "/inner"), 0755) == 0, "mkdir");
    path[strlen(path) - strlen("/inner")] = '\0';
    CHECK_ERR(tsr_peft_save(path, &a, &cfg), TSR_ERR_INVALID, "not a regular file");
    snprintf(path, sizeof path, "%s/not_an_adapter/notes.txt", root);
    CHECK_ERR(tsr_peft_save(path, &a, &cfg), TSR_ERR_IO, "not a directory");
    snprintf(path, sizeof path, "%s/link", root);
    CHECK(symlink(dir, path) == 0, "symlink");
    CHECK_ERR(tsr_peft_save(path, &a, &cfg), TSR_ERR_INVALID, "symbolic link");
    /* An empty directory is replaced. */
    snprintf(path, sizeof path, "%s/empty", root);
    CHECK(mkdir(path, 0755) == 0, "mkdir");
    CHECK_OK(tsr_peft_save(path, &a, &cfg));
    tsr_peft_adapter b;
    CHECK_OK(tsr_peft_load(dir, &cfg, &b));
    check_same(&prev, &b, &cfg, "after refused saves");
    tsr_peft_free(&b);
    tsr_peft_free(&prev);
    tsr_peft_free(&a);
    /* Load-side argument errors. */
    CHECK_ERR(tsr_peft_load(root, &cfg, &b), TSR_ERR_IO, "adapter_config.json");
    snprintf(path, sizeof path, "%s/missing", root);
    CHECK_ERR(tsr_peft_load(path, &cfg, &b), TSR_ERR_IO, "cannot open adapter directory");
    CHECK(b.A == NULL && b.r == 0, "failed load left data in the adapter");
    printf("save refusals: ok\n");

    /* The default model's config. */
    tsr_model_config mcfg;
    if (model && get_config(model, &mcfg)) {
        roundtrip(dir, &mcfg, 8, 16.0f, TSR_LORA_TARGETS_ALL, 0, 0.05f, mcfg.name, 11);
        roundtrip(dir, &mcfg, 16, 32.0f,
                  TSR_LORA_TARGET_BIT(TSR_LORA_Q) | TSR_LORA_TARGET_BIT(TSR_LORA_V), 1, 0.0f, "",
                  12);
        printf("model config (%s: %d layers, n_embd %d, %d/%d heads of %d, n_ff %d): round "
               "trips bit-exact\n",
               model, mcfg.n_layer, mcfg.n_embd, mcfg.n_head, mcfg.n_head_kv, mcfg.head_dim,
               mcfg.n_ff);
    } else {
        printf("skipped: the model config round trip (no model at %s)\n",
               model ? model : "(none given)");
    }
    CHECK(tu_tmpdir_remove() == 0, "cannot remove %s", root);
    printf("selftest passed\n");
    return 0;
}

static int refusal(tsr_status s) {
    fprintf(stderr, "error: %s: %s\n", tsr_status_str(s), tsr_error_msg());
    return 2;
}

static int cmd_save(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: save DIR CONFIG SEED R ALPHA TARGETS [options]\n");
        return 64;
    }
    const char *dir = argv[2], *raw = NULL, *base = "";
    tsr_model_config cfg;
    CHECK(get_config(argv[3], &cfg), "no model at %s", argv[3]);
    uint64_t seed = strtoull(argv[4], NULL, 10);
    int r = atoi(argv[5]), rslora = 0;
    float alpha = strtof(argv[6], NULL), dropout = 0.0f;
    unsigned targets = parse_targets(argv[7]);
    for (int i = 8; i < argc; i++) {
        if (strcmp(argv[i], "--rslora") == 0)
            rslora = 1;
        else if (strcmp(argv[i], "--dropout") == 0 && i + 1 < argc)
            dropout = strtof(argv[++i], NULL);
        else if (strcmp(argv[i], "--base") == 0 && i + 1 < argc)
            base = argv[++i];
        else if (strcmp(argv[i], "--raw") == 0 && i + 1 < argc)
            raw = argv[++i];
        else
            CHECK(0, "unknown option %s", argv[i]);
    }
    tsr_peft_adapter a;
    CHECK_OK(tsr_peft_init(&a, &cfg, r, alpha, targets));
    a.use_rslora = rslora;
    a.dropout = dropout;
    snprintf(a.base_model, sizeof a.base_model, "%s", base);
    fill_random(&a, &cfg, seed);
    if (raw)
        write_raw(raw, &a, &cfg);
    tsr_status s = tsr_peft_save(dir, &a, &cfg);
    tsr_peft_free(&a);
    return s == TSR_OK ? 0 : refusal(s);
}

static void print_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int cmd_load(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: load DIR CONFIG [--raw FILE]\n");
        return 64;
    }
    const char *raw = argc >= 6 && strcmp(argv[4], "--raw") == 0 ? argv[5] : NULL;
    tsr_model_config cfg;
    CHECK(get_config(argv[3], &cfg), "no model at %s", argv[3]);
    tsr_peft_adapter a;
    tsr_status s = tsr_peft_load(argv[2], &cfg, &a);
    if (s != TSR_OK) {
        CHECK(a.A == NULL && a.B == NULL && a.r == 0, "failed load left data in the adapter");
        return refusal(s);
    }
    printf("{\"r\": %d, \"alpha\": %.9g, \"use_rslora\": %s, \"dropout\": %.9g, \"scaling\": "
           "%.9g, \"n_layers\": %d, \"targets\": [",
           a.r, (double)a.alpha, a.use_rslora ? "true" : "false", (double)a.dropout,
           (double)tsr_peft_scaling(&a), a.n_layers);
    int first = 1;
    for (int t = 0; t < TSR_LORA_N_TARGETS; t++)
        if (a.targets & TSR_LORA_TARGET_BIT(t)) {
            printf("%s\"%s\"", first ? "" : ", ", tsr_peft_target_name(t));
            first = 0;
        }
    printf("], \"base_model\": ");
    print_json_string(a.base_model);
    printf("}\n");
    if (raw)
        write_raw(raw, &a, &cfg);
    tsr_peft_free(&a);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "selftest") == 0)
        return cmd_selftest(argc >= 3 ? argv[2] : NULL);
    if (argc >= 2 && strcmp(argv[1], "save") == 0)
        return cmd_save(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "load") == 0)
        return cmd_load(argc, argv);
    fprintf(stderr, "usage: peft_driver selftest [MODEL] | save ... | load ...\n");
    return 64;
}
