/* tests/unit/test_hf_config.c - unit tests for shard/hf_config.
 *
 * Writes config.json files shaped like real Llama 2, Llama 3.1, Mistral and
 * Qwen2 checkpoints (and broken variants) into a fresh mkdtemp directory and
 * checks the resulting tsr_model_config, or the status and message.
 *
 * What it is not: a test of tsr_model_config_validate() itself (shard/config
 * has its own), though configs it refuses are checked to come back with the
 * file name. Exits 0 on success, 1 with a message on the first failure. */
#include "shard/hf_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "tests/common/check.h"
#include "tests/common/tmpdir.h"

#define FEQ(a, b) ((a) == (float)(b))

/* Writes `text` to tmp/sub/config.json (creating sub) and returns the path
 * in `path`. */
static void write_config(const char *tmp, const char *sub, const char *text, char *path,
                         size_t cap) {
    snprintf(path, cap, "%s/%s", tmp, sub);
    struct stat sb;
    if (stat(path, &sb) != 0)
        CHECK(mkdir(path, 0700) == 0, "mkdir %s", path);
    snprintf(path, cap, "%s/%s/config.json", tmp, sub);
    FILE *fp = fopen(path, "wb");
    CHECK(fp, "create %s", path);
    CHECK(fputs(text, fp) >= 0, "write");
    CHECK(fclose(fp) == 0, "close");
}

/* Loads `text` written to tmp/sub/config.json. */
static tsr_status load(const char *tmp, const char *sub, const char *text, tsr_model_config *c) {
    char path[4096];
    write_config(tmp, sub, text, path, sizeof path);
    return tsr_hf_config_load(path, c);
}

/* TinyLlama-1.1B-Chat's config (Llama 2 layout, GQA). */
static const char *k_tinyllama = "{\n"
                                 "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                                 "  \"attention_bias\": false,\n"
                                 "  \"bos_token_id\": 1,\n"
                                 "  \"eos_token_id\": 2,\n"
                                 "  \"hidden_act\": \"silu\",\n"
                                 "  \"hidden_size\": 2048,\n"
                                 "  \"initializer_range\": 0.02,\n"
                                 "  \"intermediate_size\": 5632,\n"
                                 "  \"max_position_embeddings\": 2048,\n"
                                 "  \"model_type\": \"llama\",\n"
                                 "  \"num_attention_heads\": 32,\n"
                                 "  \"num_hidden_layers\": 22,\n"
                                 "  \"num_key_value_heads\": 4,\n"
                                 "  \"pretraining_tp\": 1,\n"
                                 "  \"rms_norm_eps\": 1e-05,\n"
                                 "  \"rope_scaling\": null,\n"
                                 "  \"rope_theta\": 10000.0,\n"
                                 "  \"tie_word_embeddings\": false,\n"
                                 "  \"torch_dtype\": \"bfloat16\",\n"
                                 "  \"transformers_version\": \"4.35.0\",\n"
                                 "  \"use_cache\": true,\n"
                                 "  \"vocab_size\": 32000\n"
                                 "}\n";

static const char *k_llama31 =
    "{\"_name_or_path\": \"meta-llama/Llama-3.1-8B\",\n"
    " \"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false,\n"
    " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009],\n"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"intermediate_size\": 14336,\n"
    " \"max_position_embeddings\": 131072, \"mlp_bias\": false, \"model_type\": \"llama\",\n"
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,\n"
    " \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05,\n"
    " \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,\n"
    "                  \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},\n"
    " \"rope_theta\": 500000.0, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\",\n"
    " \"vocab_size\": 128256}\n";

static const char *k_qwen2 =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0,\n"
    " \"bos_token_id\": 151643, \"eos_token_id\": 151643, \"hidden_act\": \"silu\",\n"
    " \"hidden_size\": 896, \"initializer_range\": 0.02, \"intermediate_size\": 4864,\n"
    " \"max_position_embeddings\": 131072, \"max_window_layers\": 24,\n"
    " \"model_type\": \"qwen2\", \"num_attention_heads\": 14, \"num_hidden_layers\": 24,\n"
    " \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0,\n"
    " \"sliding_window\": 131072, \"tie_word_embeddings\": true,\n"
    " \"torch_dtype\": \"bfloat16\", \"use_cache\": true, \"use_sliding_window\": false,\n"
    " \"vocab_size\": 151936}\n";

static const char *k_mistral =
    "{\"architectures\": [\"MistralForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2,\n"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,\n"
    " \"intermediate_size\": 14336, \"max_position_embeddings\": 32768,\n"
    " \"model_type\": \"mistral\", \"num_attention_heads\": 32, \"num_hidden_layers\": 32,\n"
    " \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0,\n"
    " \"sliding_window\": %s, \"tie_word_embeddings\": false, \"vocab_size\": 32000}\n";

/* A minimal Llama config plus the `extra` fields. `extra` must not repeat a
 * key of the base: duplicate keys are refused. */
static void minimal(char *out, size_t cap, const char *extra) {
    snprintf(out, cap,
             "{\"model_type\": \"llama\", \"hidden_size\": 256, \"intermediate_size\": 688,"
             " \"num_attention_heads\": 8, \"num_hidden_layers\": 2, \"vocab_size\": 1000,"
             " \"max_position_embeddings\": 512%s%s}",
             extra[0] ? ", " : "", extra);
}

static void test_valid(const char *tmp) {
    tsr_model_config c;

    CHECK(load(tmp, "TinyLlama-1.1B", k_tinyllama, &c) == TSR_OK, "tinyllama");
    CHECK(c.arch == TSR_ARCH_LLAMA, "arch");
    CHECK(strcmp(c.name, "TinyLlama-1.1B") == 0, "name from directory: %s", c.name);
    CHECK(c.n_embd == 2048 && c.n_ff == 5632 && c.n_layer == 22 && c.n_vocab == 32000, "sizes");
    CHECK(c.n_head == 32 && c.n_head_kv == 4 && c.head_dim == 64, "heads");
    CHECK(c.n_ctx_train == 2048, "ctx");
    CHECK(FEQ(c.rms_eps, 1e-5) && FEQ(c.rope_theta, 10000.0), "eps/theta");
    CHECK(c.rope_scaling == TSR_ROPE_SCALING_NONE, "no scaling");
    CHECK(!c.tied_embeddings && !c.qkv_bias, "flags");

    CHECK(load(tmp, "llama31", k_llama31, &c) == TSR_OK, "llama 3.1");
    CHECK(strcmp(c.name, "meta-llama/Llama-3.1-8B") == 0, "name from _name_or_path: %s", c.name);
    CHECK(c.n_head_kv == 8 && c.head_dim == 128 && c.n_vocab == 128256, "sizes");
    CHECK(c.n_ctx_train == 131072 && FEQ(c.rope_theta, 500000.0), "ctx/theta");
    CHECK(c.rope_scaling == TSR_ROPE_SCALING_LLAMA3, "llama3 scaling");
    CHECK(FEQ(c.rope_factor, 8.0) && FEQ(c.rope_low_freq_factor, 1.0) &&
              FEQ(c.rope_high_freq_factor, 4.0) && c.rope_orig_ctx == 8192,
          "llama3 params");

    CHECK(load(tmp, "qwen2", k_qwen2, &c) == TSR_OK, "qwen2");
    CHECK(c.arch == TSR_ARCH_QWEN2 && c.qkv_bias == 1 && c.tied_embeddings == 1, "qwen2 flags");
    CHECK(c.n_embd == 896 && c.n_head == 14 && c.n_head_kv == 2 && c.head_dim == 64, "qwen2 heads");
    CHECK(FEQ(c.rope_theta, 1e6) && FEQ(c.rms_eps, 1e-6), "qwen2 theta/eps");
    CHECK(c.n_ctx_train == 131072, "qwen2 ctx (sliding window unused)");

    char buf[4096];
    snprintf(buf, sizeof buf, k_mistral, "4096");
    CHECK(load(tmp, "mistral01", buf, &c) == TSR_OK, "mistral v0.1");
    CHECK(c.arch == TSR_ARCH_LLAMA && !c.qkv_bias, "mistral arch");
    CHECK(c.n_ctx_train == 4096, "context capped at the sliding window: %d", c.n_ctx_train);
    snprintf(buf, sizeof buf, k_mistral, "null");
    CHECK(load(tmp, "mistral02", buf, &c) == TSR_OK, "mistral v0.2");
    CHECK(c.n_ctx_train == 32768, "no window: %d", c.n_ctx_train);

    /* Defaults: kv heads, head_dim, theta, eps, tie; architectures only. */
    CHECK(load(tmp, "defaults",
               "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 256,"
               " \"intermediate_size\": 688, \"num_attention_heads\": 8,"
               " \"num_hidden_layers\": 2, \"vocab_size\": 1000,"
               " \"max_position_embeddings\": 512, \"num_key_value_heads\": null}",
               &c) == TSR_OK,
          "defaults");
    CHECK(c.n_head_kv == 8 && c.head_dim == 32, "kv/head_dim defaults");
    CHECK(FEQ(c.rope_theta, 10000.0) && FEQ(c.rms_eps, 1e-6), "theta/eps defaults");
    CHECK(!c.tied_embeddings && !c.qkv_bias && c.rope_scaling == TSR_ROPE_SCALING_NONE,
          "flag defaults");

    /* Explicit head_dim, integer theta, linear scaling, attention_bias. */
    minimal(buf, sizeof buf,
            "\"head_dim\": 64, \"rope_theta\": 100000, \"attention_bias\": true,"
            " \"rope_scaling\": {\"type\": \"linear\", \"factor\": 4.0},"
            " \"_name_or_path\": \"\"");
    CHECK(load(tmp, "explicit", buf, &c) == TSR_OK, "explicit");
    CHECK(c.head_dim == 64 && FEQ(c.rope_theta, 100000.0) && c.qkv_bias == 1, "explicit");
    CHECK(c.rope_scaling == TSR_ROPE_SCALING_LINEAR && FEQ(c.rope_factor, 4.0), "linear");
    CHECK(strcmp(c.name, "explicit") == 0, "empty _name_or_path falls back: %s", c.name);

    minimal(buf, sizeof buf, "\"rope_scaling\": {\"rope_type\": \"default\"}");
    CHECK(load(tmp, "ropedefault", buf, &c) == TSR_OK, "rope_type default");
    CHECK(c.rope_scaling == TSR_ROPE_SCALING_NONE, "default scaling");

    /* In memory: no directory, no name. */
    minimal(buf, sizeof buf, "");
    CHECK(tsr_hf_config_parse(buf, strlen(buf), "config.json", &c) == TSR_OK, "parse");
    CHECK(c.name[0] == '\0', "no directory name: %s", c.name);
    minimal(buf, sizeof buf, "");
    CHECK(tsr_hf_config_parse(buf, strlen(buf), "/a/b/model-x/config.json", &c) == TSR_OK, "parse");
    CHECK(strcmp(c.name, "model-x") == 0, "dir name: %s", c.name);
}

static void test_invalid(const char *tmp) {
    tsr_model_config c, sentinel;
    memset(&sentinel, 0x5a, sizeof sentinel);
    char buf[4096];

#define BAD(sub, text, want, ...)                                                                  \
    do {                                                                                           \
        c = sentinel;                                                                              \
        CHECK_ERR(load(tmp, sub, text, &c), want, sub "/config.json", __VA_ARGS__);                \
        CHECK(memcmp(&c, &sentinel, sizeof c) == 0, "config written on error");                    \
    } while (0)

    BAD("no_hidden",
        "{\"model_type\": \"llama\", \"intermediate_size\": 688, \"num_attention_heads\": 8,"
        " \"num_hidden_layers\": 2, \"vocab_size\": 1000, \"max_position_embeddings\": 512}",
        TSR_ERR_FORMAT, "missing required field \"hidden_size\"");
    BAD("str_hidden",
        "{\"model_type\": \"llama\", \"hidden_size\": \"4096\", \"intermediate_size\": 688,"
        " \"num_attention_heads\": 8, \"num_hidden_layers\": 2, \"vocab_size\": 1000,"
        " \"max_position_embeddings\": 512}",
        TSR_ERR_FORMAT, "\"hidden_size\"", "is a string, not an integer");
    BAD("real_layers",
        "{\"model_type\": \"llama\", \"hidden_size\": 256, \"intermediate_size\": 688,"
        " \"num_attention_heads\": 8, \"num_hidden_layers\": 2.5, \"vocab_size\": 1000,"
        " \"max_position_embeddings\": 512}",
        TSR_ERR_FORMAT, "\"num_hidden_layers\"", "not an integer");
    BAD("zero_vocab",
        "{\"model_type\": \"llama\", \"hidden_size\": 256, \"intermediate_size\": 688,"
        " \"num_attention_heads\": 8, \"num_hidden_layers\": 2, \"vocab_size\": 0,"
        " \"max_position_embeddings\": 512}",
        TSR_ERR_FORMAT, "\"vocab_size\" = 0", "out of range");
    BAD("neg_ff",
        "{\"model_type\": \"llama\", \"hidden_size\": 256, \"intermediate_size\": -688,"
        " \"num_attention_heads\": 8, \"num_hidden_layers\": 2, \"vocab_size\": 1000,"
        " \"max_position_embeddings\": 512}",
        TSR_ERR_FORMAT, "\"intermediate_size\" = -688");
    BAD("huge_hidden",
        "{\"model_type\": \"llama\", \"hidden_size\": 4294967296, \"intermediate_size\": 688,"
        " \"num_attention_heads\": 8, \"num_hidden_layers\": 2, \"vocab_size\": 1000,"
        " \"max_position_embeddings\": 512}",
        TSR_ERR_FORMAT, "\"hidden_size\" = 4294967296");

    minimal(buf, sizeof buf, "\"num_key_value_heads\": 3");
    BAD("kv_not_divisor", buf, TSR_ERR_FORMAT, "num_attention_heads (8)",
        "num_key_value_heads (3)");
    minimal(buf, sizeof buf, "\"num_key_value_heads\": 16");
    BAD("kv_more", buf, TSR_ERR_FORMAT, "num_key_value_heads (16)");
    BAD("hidden_not_div",
        "{\"model_type\": \"llama\", \"hidden_size\": 250, \"intermediate_size\": 688,"
        " \"num_attention_heads\": 8, \"num_hidden_layers\": 2, \"vocab_size\": 1000,"
        " \"max_position_embeddings\": 512}",
        TSR_ERR_FORMAT, "hidden_size (250)", "head_dim");
    minimal(buf, sizeof buf, "\"head_dim\": 33");
    BAD("odd_head_dim", buf, TSR_ERR_FORMAT, "head_dim"); /* from config validate */
    minimal(buf, sizeof buf, "\"rms_norm_eps\": \"1e-5\"");
    BAD("str_eps", buf, TSR_ERR_FORMAT, "\"rms_norm_eps\"", "not a number");
    minimal(buf, sizeof buf, "\"rope_theta\": -1.0");
    BAD("neg_theta", buf, TSR_ERR_FORMAT, "\"rope_theta\"", "out of range");
    minimal(buf, sizeof buf, "\"tie_word_embeddings\": \"true\"");
    BAD("str_tie", buf, TSR_ERR_FORMAT, "\"tie_word_embeddings\"", "not a boolean");

    minimal(buf, sizeof buf, "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0}");
    BAD("yarn", buf, TSR_ERR_UNSUPPORTED, "rope_scaling type \"yarn\"");
    minimal(buf, sizeof buf, "\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}");
    BAD("dynamic", buf, TSR_ERR_UNSUPPORTED, "\"dynamic\"");
    minimal(buf, sizeof buf, "\"rope_scaling\": {\"type\": \"linear\"}");
    BAD("linear_nofactor", buf, TSR_ERR_FORMAT, "\"rope_scaling.factor\"");
    minimal(buf, sizeof buf,
            "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0,"
            " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}");
    BAD("llama3_nolow", buf, TSR_ERR_FORMAT, "\"rope_scaling.low_freq_factor\"");
    minimal(buf, sizeof buf,
            "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0,"
            " \"low_freq_factor\": 4.0, \"high_freq_factor\": 4.0,"
            " \"original_max_position_embeddings\": 8192}");
    BAD("llama3_eq", buf, TSR_ERR_FORMAT, "high_freq_factor", "low_freq_factor");
    minimal(buf, sizeof buf, "\"rope_scaling\": {\"factor\": 8.0}");
    BAD("rope_notype", buf, TSR_ERR_FORMAT, "rope_type");
    minimal(buf, sizeof buf, "\"rope_scaling\": \"linear\"");
    BAD("rope_str", buf, TSR_ERR_FORMAT, "\"rope_scaling\"", "not an object");

    BAD("gpt2", "{\"model_type\": \"gpt2\", \"n_embd\": 768}", TSR_ERR_UNSUPPORTED,
        "model_type \"gpt2\"");
    BAD("arch_only_unknown", "{\"architectures\": [\"GPT2LMHeadModel\"]}", TSR_ERR_UNSUPPORTED,
        "GPT2LMHeadModel");
    BAD("no_type", "{\"hidden_size\": 256}", TSR_ERR_FORMAT, "model_type");
    minimal(buf, sizeof buf, "\"hidden_act\": \"gelu\"");
    BAD("gelu", buf, TSR_ERR_UNSUPPORTED, "hidden_act \"gelu\"");
    minimal(buf, sizeof buf, "\"mlp_bias\": true");
    BAD("mlp_bias", buf, TSR_ERR_UNSUPPORTED, "mlp_bias");
    snprintf(buf, sizeof buf, "%s", k_qwen2);
    memcpy(strstr(buf, "\"use_sliding_window\": false"), "\"use_sliding_window\": true ", 27);
    BAD("qwen2_sw", buf, TSR_ERR_UNSUPPORTED, "use_sliding_window");

    BAD("not_json", "{\"model_type\": \"llama\",", TSR_ERR_FORMAT, "not valid JSON");
    BAD("array", "[1, 2]", TSR_ERR_FORMAT, "is an array, not an object");
    BAD("empty", "", TSR_ERR_FORMAT, "not valid JSON");
    BAD("dup", "{\"model_type\": \"llama\", \"model_type\": \"llama\"}", TSR_ERR_FORMAT,
        "duplicate");

    char path[4200];
    snprintf(path, sizeof path, "%.4000s/nowhere/config.json", tmp);
    c = sentinel;
    CHECK_ERR(tsr_hf_config_load(path, &c), TSR_ERR_IO, path, "cannot open");
    CHECK(memcmp(&c, &sentinel, sizeof c) == 0, "config written on error");
#undef BAD
}

int main(void) {
    const char *tmp = tu_tmpdir_make("tsr_hfcfg_test");
    test_valid(tmp);
    printf("  valid configs ok\n");
    test_invalid(tmp);
    printf("  invalid configs ok\n");
    CHECK(tu_tmpdir_remove() == 0, "cannot remove %s", tmp);
    printf("test_hf_config: all passed\n");
    return 0;
}
