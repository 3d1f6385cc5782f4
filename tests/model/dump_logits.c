/* tests/model/dump_logits.c - test tool: runs token ids through the model
 * and writes the logits of every position as raw little-endian f32 (T, V),
 * for comparison with the NumPy reference.
 *
 *   dump_logits [--adapter DIR] [--weights file|f32] [--kv-dtype f16|f32]
 *               MODEL OUT.f32 MODE ID [ID ...]
 *
 * --adapter DIR applies a PEFT LoRA adapter directory (shard/peft.h) with
 * tsr_model_set_lora. The reference path is the default: weights dequantized
 * to f32 (--weights file keeps the file's blocks) and an f32 KV cache
 * (--kv-dtype f16 takes the CPU engine's default cache).
 *
 * MODE: "prefill" (one batch), "decode" (one token per step) or "chunk:N"
 * (prefill in chunks of N). All modes must give the same logits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/model/model.h"
#include "shard/peft.h"

static int die(const char *what) {
    fprintf(stderr, "dump_logits: %s: %s\n", what, tsr_error_msg());
    return 1;
}

/* The whole adapter `dir` on the one rank's model. */
static int set_adapter(tsr_model *m, const char *dir, tsr_lora_adapter *ad) {
    tsr_peft_adapter pa = {0};
    if (tsr_peft_load(dir, &m->cfg, &pa) != TSR_OK)
        return die("adapter");
    tsr_lora_config lc = TSR_LORA_CONFIG_INIT;
    lc.rank = pa.r;
    lc.alpha = pa.alpha;
    lc.use_rslora = pa.use_rslora;
    lc.targets = pa.targets;
    tsr_lora_shard sh = tsr_lora_shard_single(&m->cfg);
    if (tsr_lora_adapter_init_frozen(ad, &lc, &m->cfg, &sh, m->be) != TSR_OK)
        return die("adapter init");
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++)
            if (pa.targets & (1u << t)) {
                if (tsr_lora_set(ad, l, (tsr_lora_target)t, TSR_LORA_A, pa.A[TSR_PEFT_IDX(l, t)]) !=
                        TSR_OK ||
                    tsr_lora_set(ad, l, (tsr_lora_target)t, TSR_LORA_B, pa.B[TSR_PEFT_IDX(l, t)]) !=
                        TSR_OK)
                    return die("adapter set");
            }
    tsr_peft_free(&pa);
    if (tsr_model_set_lora(m, ad) != TSR_OK)
        return die("set_lora");
    return 0;
}

int main(int argc, char **argv) {
    const char *adapter = NULL;
    int weights = TSR_F32;        /* the reference path unless --weights file */
    tsr_dtype kv_dtype = TSR_F32; /* and unless --kv-dtype f16 */
    while (argc > 2 && (!strcmp(argv[1], "--adapter") || !strcmp(argv[1], "--weights") ||
                        !strcmp(argv[1], "--kv-dtype"))) {
        if (!strcmp(argv[1], "--adapter"))
            adapter = argv[2];
        else if (!strcmp(argv[1], "--kv-dtype") && !strcmp(argv[2], "f16"))
            kv_dtype = TSR_F16;
        else if (!strcmp(argv[1], "--kv-dtype") && strcmp(argv[2], "f32"))
            return fprintf(stderr, "dump_logits: --kv-dtype f16|f32\n"), 2;
        else if (!strcmp(argv[1], "--weights") && !strcmp(argv[2], "file"))
            weights = TSR_MODEL_WEIGHTS_FILE;
        else if (!strcmp(argv[1], "--weights") && strcmp(argv[2], "f32"))
            return fprintf(stderr, "dump_logits: --weights file|f32\n"), 2;
        argv += 2;
        argc -= 2;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: dump_logits [--adapter DIR] [--weights file|f32] [--kv-dtype "
                        "f16|f32] MODEL OUT.f32 prefill|decode|chunk:N ID...\n");
        return 2;
    }
    int n = argc - 4, chunk = n;
    if (!strcmp(argv[3], "decode"))
        chunk = 1;
    else if (!strncmp(argv[3], "chunk:", 6))
        chunk = atoi(argv[3] + 6);
    else if (strcmp(argv[3], "prefill"))
        return fprintf(stderr, "dump_logits: bad mode '%s'\n", argv[3]), 2;
    if (chunk < 1)
        return 2;
    int32_t *ids = malloc((size_t)n * 3 * sizeof *ids);
    for (int i = 0; i < n; i++)
        ids[i] = atoi(argv[4 + i]);
    int32_t *pos = ids + n, *seq = ids + 2 * n;
    tsr_model_file_t *mf;
    tsr_backend *be;
    tsr_model m;
    tsr_kv_cache kv;
    if (tsr_model_file_open(argv[1], &mf) != TSR_OK)
        return die("open");
    const tsr_model_config *c = tsr_model_file_config(mf);
    tsr_model_slice sl = tsr_model_slice_full(c);
    if (tsr_backend_cpu_create(0, &be) != TSR_OK ||
        tsr_model_load(&m, mf, &sl, 1, 1, weights, be, NULL) != TSR_OK)
        return die("load");
    tsr_lora_adapter ad = {0};
    if (adapter && set_adapter(&m, adapter, &ad))
        return 1;
    int bs = 16, ctx = (n + bs - 1) / bs * bs;
    if (tsr_kv_cache_init(&kv, be, kv_dtype, c->n_layer, c->n_head_kv * c->head_dim, bs, ctx / bs,
                          1, ctx) != TSR_OK ||
        tsr_kv_cache_reserve(&kv, 0, n) != TSR_OK)
        return die("kv cache");
    size_t V = (size_t)c->n_vocab;
    float *logits = malloc((size_t)n * V * sizeof *logits);
    int32_t *rows = malloc((size_t)n * sizeof *rows);
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        seq[i] = 0;
        rows[i] = i;
    }
    for (int i = 0; i < n; i += chunk) {
        int k = n - i < chunk ? n - i : chunk;
        tsr_batch b = {k, ids + i, pos + i, seq + i, k, rows, 0, NULL};
        if (tsr_model_forward(&m, &kv, &b, NULL, NULL, logits + (size_t)i * V) != TSR_OK)
            return die("forward");
    }
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(logits, sizeof *logits, (size_t)n * V, f) != (size_t)n * V || fclose(f))
        return fprintf(stderr, "dump_logits: cannot write %s\n", argv[2]), 1;
    free(logits);
    free(rows);
    free(ids);
    tsr_kv_cache_free(&kv);
    tsr_model_set_lora(&m, NULL);
    tsr_lora_adapter_free(&ad);
    tsr_model_free(&m);
    tsr_backend_destroy(be);
    tsr_model_file_close(mf);
    return 0;
}
