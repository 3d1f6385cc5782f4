/* runtime/cmd/options.c - the options of the `tessera` program: one table
 * of every flag with the subcommands it applies to (read by base/opt.h),
 * their values read and checked into a cmd_options, and tessera's usage
 * text. A flag the table gives to a subcommand that does not use it is
 * accepted and ignored there, as it always was; one given to a subcommand
 * outside its mask is refused ("--out does not apply to 'generate'").
 *
 * What it is not: the subcommands (cmd_<name>.c) nor range checks that
 * belong to the library (sampling values: tsr_sampling_params_validate;
 * LoRA settings: tsr_lora_config_check). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/opt.h"
#include "runtime/cmd/cmd.h"
#include "runtime/model/lora.h"

typedef enum {
    O_MODEL,
    O_ADAPTER,
    O_PROMPT,
    O_CHAT,
    O_SYSTEM,
    O_TEXT,
    O_FILE,
    O_MAX_TOKENS,
    O_MIN_TOKENS,
    O_CTX,
    O_THREADS,
    O_BATCH,
    O_TEMP,
    O_TOP_K,
    O_TOP_P,
    O_MIN_P,
    O_SEED,
    O_REPEAT,
    O_FREQ,
    O_PRES,
    O_STOP,
    O_STOP_ID,
    O_IGNORE_EOS,
    O_VERBOSE,
    O_HELP,
    O_TP,
    O_PP,
    O_PP_LAYERS,
    O_HOST,
    O_PORT,
    O_AUTH,
    O_TLS_CERT,
    O_TLS_KEY,
    O_MAX_SEQS,
    O_KV_POS,
    O_MAX_BATCH,
    O_QUEUE,
    O_ADAPTER_MEM,
    O_GRACE,
    O_LOG_PROMPTS,
    O_HOST_SAMPLING,
    O_METRICS_PORT,
    O_DEVICE,
    O_COMM,
    O_COMM_TIMEOUT,
    O_ACT_DTYPE,
    O_WEIGHT_DTYPE,
    O_KV_DTYPE,
    O_GPU,
    O_DATA,
    O_OUT,
    O_STEPS,
    O_EPOCHS,
    O_LR,
    O_BATCH_SIZE,
    O_RANK,
    O_ALPHA,
    O_TARGETS,
    O_MAX_GRAD_NORM,
    O_WEIGHT_DECAY,
    O_DROPOUT,
    O_MICRO,
    O_ADAM_EPS,
    O_DTYPE,
    O__COUNT
} opt_id;

/* The subcommands that run under MPI on a model: each accepts every flag of
 * the others (and ignores those it does not use), except where a row says. */
#define RUN (CMD_GENERATE | CMD_TOKENIZE | CMD_PERPLEXITY | CMD_SERVE | CMD_TRAIN)

static const tsr_opt_cmd k_cmds[] = {
    {"generate", CMD_GENERATE}, {"tokenize", CMD_TOKENIZE}, {"perplexity", CMD_PERPLEXITY},
    {"serve", CMD_SERVE},       {"train", CMD_TRAIN},       {"merge-lora", CMD_MERGE_LORA},
};

static const tsr_opt k_opts[] = {
    {"model", O_MODEL, 1, TSR_OPT_ANY, 0},
    {"help", O_HELP, 0, TSR_OPT_ANY, 0},
    {"adapter", O_ADAPTER, 1, CMD_GENERATE | CMD_PERPLEXITY | CMD_SERVE | CMD_MERGE_LORA, 0},
    {"prompt", O_PROMPT, 1, RUN, 0},
    {"chat", O_CHAT, 1, RUN, 0},
    {"system", O_SYSTEM, 1, RUN, 0},
    {"text", O_TEXT, 1, RUN, 0},
    {"file", O_FILE, 1, RUN, 0},
    {"max-tokens", O_MAX_TOKENS, 1, RUN, 0},
    {"min-tokens", O_MIN_TOKENS, 1, RUN, 0},
    {"ctx", O_CTX, 1, RUN, 0},
    {"ctx-size", O_CTX, 1, RUN, 0},
    {"threads", O_THREADS, 1, RUN, 0},
    {"batch", O_BATCH, 1, RUN, 0},
    {"temperature", O_TEMP, 1, RUN, 0},
    {"top-k", O_TOP_K, 1, RUN, 0},
    {"top-p", O_TOP_P, 1, RUN, 0},
    {"min-p", O_MIN_P, 1, RUN, 0},
    {"seed", O_SEED, 1, RUN, 0},
    {"repeat-penalty", O_REPEAT, 1, RUN, 0},
    {"frequency-penalty", O_FREQ, 1, RUN, 0},
    {"presence-penalty", O_PRES, 1, RUN, 0},
    {"stop", O_STOP, 1, RUN, 0},
    {"stop-id", O_STOP_ID, 1, RUN, 0},
    {"ignore-eos", O_IGNORE_EOS, 0, RUN, 0},
    {"verbose", O_VERBOSE, 0, RUN, 0},
    {"tp", O_TP, 1, RUN, 0},
    {"pp", O_PP, 1, RUN, 0},
    {"pp-layers", O_PP_LAYERS, 1, RUN, 0},
    {"host", O_HOST, 1, RUN, 0},
    {"port", O_PORT, 1, RUN, 0},
    {"auth-token-file", O_AUTH, 1, RUN, 0},
    {"tls-cert", O_TLS_CERT, 1, RUN, 0},
    {"tls-key", O_TLS_KEY, 1, RUN, 0},
    {"max-seqs", O_MAX_SEQS, 1, RUN, 0},
    {"kv-positions", O_KV_POS, 1, RUN, 0},
    {"max-batch-tokens", O_MAX_BATCH, 1, RUN, 0},
    {"queue", O_QUEUE, 1, RUN, 0},
    {"adapter-memory", O_ADAPTER_MEM, 1, RUN, 0},
    {"grace", O_GRACE, 1, RUN, 0},
    {"log-prompts", O_LOG_PROMPTS, 0, RUN, 0},
    {"host-sampling", O_HOST_SAMPLING, 0, RUN, 0},
    {"metrics-port", O_METRICS_PORT, 1, RUN, 0},
    {"device", O_DEVICE, 1, RUN, 0},
    {"comm", O_COMM, 1, RUN, 0},
    {"comm-timeout", O_COMM_TIMEOUT, 1, RUN, 0},
    {"act-dtype", O_ACT_DTYPE, 1, RUN, 0},
    {"weight-dtype", O_WEIGHT_DTYPE, 1, RUN, 0},
    {"kv-dtype", O_KV_DTYPE, 1, RUN, 0},
    {"gpu", O_GPU, 1, RUN, 0},
    {"data", O_DATA, 1, CMD_TRAIN, 0},
    {"out", O_OUT, 1, CMD_TRAIN | CMD_MERGE_LORA, 0},
    {"steps", O_STEPS, 1, CMD_TRAIN, 0},
    {"epochs", O_EPOCHS, 1, CMD_TRAIN, 0},
    {"lr", O_LR, 1, RUN, 0},
    {"batch-size", O_BATCH_SIZE, 1, RUN, 0},
    {"rank", O_RANK, 1, RUN, 0},
    {"alpha", O_ALPHA, 1, RUN, 0},
    {"targets", O_TARGETS, 1, RUN, 0},
    {"max-grad-norm", O_MAX_GRAD_NORM, 1, RUN, 0},
    {"weight-decay", O_WEIGHT_DECAY, 1, RUN, 0},
    {"dropout", O_DROPOUT, 1, RUN, 0},
    {"micro-batches", O_MICRO, 1, RUN, 0},
    {"adam-eps", O_ADAM_EPS, 1, RUN, 0},
    {"dtype", O_DTYPE, 1, CMD_MERGE_LORA, 0},
};

static const tsr_opt_spec k_spec = {
    k_opts, sizeof k_opts / sizeof k_opts[0], O__COUNT,
    k_cmds, sizeof k_cmds / sizeof k_cmds[0], NULL,
};

unsigned cmd_lookup(const char *name) {
    for (size_t k = 0; k < sizeof k_cmds / sizeof k_cmds[0]; k++)
        if (strcmp(name, k_cmds[k].name) == 0)
            return k_cmds[k].bit;
    return 0;
}

static int parse_layers(const char *s, cmd_options *o) {
    o->n_pp_layers = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 1 || v > 1 << 20 || o->n_pp_layers == 256 ||
            (*end && *end != ',')) {
            PERR("tessera: --pp-layers expects positive integers separated by commas, got '%s'\n",
                 s);
            return -1;
        }
        o->pp_layers[o->n_pp_layers++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return o->n_pp_layers ? 0 : -1;
}

/* The value readers: 0, or -1 after rank 0 printed the flag and what it
 * expects. An absent option leaves *out as it is. */
static int get_int(const tsr_opt_args *a, opt_id id, int lo, int hi, int *out) {
    if (tsr_opt_get_int(&k_spec, a, id, lo, hi, out) != TSR_OK) {
        PERR("tessera: %s\n", tsr_error_msg());
        return -1;
    }
    return 0;
}

static int get_float(const tsr_opt_args *a, opt_id id, float *out) {
    if (tsr_opt_get_f32(&k_spec, a, id, out) != TSR_OK) {
        PERR("tessera: %s\n", tsr_error_msg());
        return -1;
    }
    return 0;
}

/* A float that must hold `ok`; `rule` says which ("must be > 0"). */
static int get_float_if(const tsr_opt_args *a, opt_id id, float *out, int (*ok)(float),
                        const char *rule) {
    if (get_float(a, id, out))
        return -1;
    if (a->val[id] && !ok(*out)) {
        PERR("tessera: --%s %s, got '%s'\n", tsr_opt_name(&k_spec, id), rule, a->val[id]);
        return -1;
    }
    return 0;
}
static int positive(float v) { return v > 0; }
static int non_negative(float v) { return v >= 0; }
static int below_one(float v) { return v >= 0 && v < 1; }
static int timeout_ok(float v) { return v >= 0 && v <= TSR_COMM_TIMEOUT_MAX_S; }

/* cpu|cuda, bf16|f32: the device flags' words. */
static int read_device(const tsr_opt_args *a, cmd_options *o) {
    const char *v = a->val[O_DEVICE];
    if (v) {
        if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
            PERR("tessera: --device expects cpu or cuda, got '%s'\n", v);
            return -1;
        }
        o->device = v[1] == 'p' ? TSR_DEVICE_CPU : TSR_DEVICE_CUDA;
    }
    if ((v = a->val[O_COMM]) && tsr_comm_kind_parse(v, &o->comm) != TSR_OK) {
        PERR("tessera: --comm: %s\n", tsr_error_msg());
        return -1;
    }
    if ((v = a->val[O_ACT_DTYPE])) {
        if (strcmp(v, "bf16") && strcmp(v, "f32")) {
            PERR("tessera: --act-dtype expects bf16 or f32, got '%s'\n", v);
            return -1;
        }
        o->act_dtype = v[0] == 'b' ? TSR_BF16 : TSR_F32;
    }
    if ((v = a->val[O_WEIGHT_DTYPE])) {
        static const struct {
            const char *name;
            int type;
        } wt[] = {{"file", TSR_ENGINE_ACT_DEFAULT},
                  {"f32", TSR_F32},
                  {"bf16", TSR_BF16},
                  {"q8_0", TSR_Q8_0},
                  {"q4_0", TSR_Q4_0}};
        size_t k = 0;
        while (k < sizeof wt / sizeof wt[0] && strcmp(v, wt[k].name))
            k++;
        if (k == sizeof wt / sizeof wt[0]) {
            PERR("tessera: --weight-dtype expects file, f32, bf16, q8_0 or q4_0, got '%s'\n", v);
            return -1;
        }
        o->weight_dtype = wt[k].type;
    }
    if ((v = a->val[O_KV_DTYPE])) {
        if (strcmp(v, "f16") && strcmp(v, "f32")) {
            PERR("tessera: --kv-dtype expects f16 or f32, got '%s'\n", v);
            return -1;
        }
        o->kv_dtype = v[1] == '1' ? TSR_F16 : TSR_F32;
    }
    return get_int(a, O_GPU, 0, 1023, &o->gpu);
}

/* --stop (each kept) and --stop-id (each a token id), at most CMD_MAX_STOP. */
static int read_stops(const tsr_opt_args *a, cmd_options *o) {
    o->n_stop = tsr_opt_values(a, O_STOP, o->stop, CMD_MAX_STOP);
    if (o->n_stop > CMD_MAX_STOP) {
        PERR("tessera: at most %d --stop strings\n", CMD_MAX_STOP);
        return -1;
    }
    const char *ids[CMD_MAX_STOP];
    o->n_stop_ids = tsr_opt_values(a, O_STOP_ID, ids, CMD_MAX_STOP);
    if (o->n_stop_ids > CMD_MAX_STOP) {
        PERR("tessera: at most %d --stop-id values\n", CMD_MAX_STOP);
        return -1;
    }
    for (size_t k = 0; k < o->n_stop_ids; k++) {
        int32_t v;
        if (tsr_opt_parse_i32(ids[k], &v) != 0 || v < 0 || v > 1 << 30) {
            PERR("tessera: --stop-id expects an integer in [0, %d], got '%s'\n", 1 << 30, ids[k]);
            return -1;
        }
        o->stop_ids[k] = v;
    }
    return 0;
}

/* merge-lora's own options and rules (it prints as "tessera merge-lora"). */
static int read_merge(const tsr_opt_args *a, cmd_options *o) {
    const char *d = a->val[O_DTYPE];
    o->merge_dtype = TSR_MERGE_F32;
    if (d && !strcmp(d, "bf16")) {
        o->merge_dtype = TSR_MERGE_BF16;
    } else if (d && strcmp(d, "f32")) {
        fprintf(stderr, "tessera merge-lora: --dtype must be f32 or bf16, not '%s'\n", d);
        return -1;
    }
    if (!o->model || !o->adapter || !o->out) {
        fprintf(stderr, "tessera merge-lora: --model, --adapter and --out are required\n");
        cmd_merge_usage(stderr);
        return -1;
    }
    return 0;
}

static void set_defaults(cmd_options *o) {
    tsr_sampling_params sp = TSR_SAMPLING_PARAMS_INIT;
    o->sp = sp;
    o->max_tokens = 256;
    o->tp = o->pp = 1;
    o->host = "127.0.0.1";
    o->port = 50051;
    o->max_seqs = 32;
    o->max_batch_tokens = 512;
    o->queue = 256;
    o->grace_s = 30;
    o->device = TSR_DEVICE_CPU;
    o->comm = TSR_COMM_MPI;
    o->comm_timeout_s = TSR_COMM_TIMEOUT_DEFAULT_S;
    o->act_dtype = TSR_ENGINE_ACT_DEFAULT;
    o->weight_dtype = TSR_ENGINE_ACT_DEFAULT;
    o->kv_dtype = TSR_ENGINE_ACT_DEFAULT;
    o->gpu = -1;
    o->batch_size = 8;
    o->lora_rank = 8;
    o->lr = 1e-4f;
    o->alpha = 16.0f;
    o->adam_eps = 1e-8f;
    o->max_grad_norm = 1.0f;
    o->targets = "q,v";
}

/* Every value of the command line into *o: 0, or -1 after rank 0 said why. */
static int read_values(const tsr_opt_args *a, cmd_options *o) {
    const char *const *v = a->val;
    o->model = v[O_MODEL];
    o->adapter = v[O_ADAPTER];
    o->prompt = v[O_PROMPT];
    o->chat = v[O_CHAT];
    o->system = v[O_SYSTEM];
    o->text = v[O_TEXT];
    o->file = v[O_FILE];
    o->data = v[O_DATA];
    o->out = v[O_OUT];
    if (v[O_TARGETS])
        o->targets = v[O_TARGETS];
    if (v[O_HOST])
        o->host = v[O_HOST];
    o->auth_token_file = v[O_AUTH];
    o->tls_cert = v[O_TLS_CERT];
    o->tls_key = v[O_TLS_KEY];
    o->ignore_eos = v[O_IGNORE_EOS] != NULL;
    o->verbose = v[O_VERBOSE] != NULL;
    o->log_prompts = v[O_LOG_PROMPTS] != NULL;
    o->host_sampling = v[O_HOST_SAMPLING] != NULL;
    o->have_ctx = v[O_CTX] != NULL;
    if (o->cmd == CMD_MERGE_LORA)
        return read_merge(a, o);
    int seed = 0;
    float grace = (float)o->grace_s, comm_timeout = (float)o->comm_timeout_s;
    if (get_int(a, O_MAX_TOKENS, 1, 1 << 24, &o->max_tokens) ||
        get_int(a, O_MIN_TOKENS, 0, 1 << 24, &o->min_tokens) ||
        get_int(a, O_CTX, 8, 1 << 20, &o->ctx) || get_int(a, O_THREADS, 1, 1024, &o->threads) ||
        get_int(a, O_BATCH, 1, 1 << 16, &o->n_batch) || get_float(a, O_TEMP, &o->sp.temperature) ||
        get_int(a, O_TOP_K, 0, 1 << 24, &o->sp.top_k) || get_float(a, O_TOP_P, &o->sp.top_p) ||
        get_float(a, O_MIN_P, &o->sp.min_p) || get_int(a, O_SEED, 0, INT_MAX, &seed) ||
        get_float(a, O_REPEAT, &o->sp.repetition_penalty) ||
        get_float(a, O_FREQ, &o->sp.frequency_penalty) ||
        get_float(a, O_PRES, &o->sp.presence_penalty) || read_stops(a, o) ||
        get_int(a, O_TP, 1, 4096, &o->tp) || get_int(a, O_PP, 1, 4096, &o->pp) ||
        (v[O_PP_LAYERS] && parse_layers(v[O_PP_LAYERS], o)) ||
        get_int(a, O_PORT, 0, 65535, &o->port) || get_int(a, O_MAX_SEQS, 1, 4096, &o->max_seqs) ||
        get_int(a, O_KV_POS, 16, 1 << 26, &o->kv_positions) ||
        get_int(a, O_MAX_BATCH, 1, 1 << 20, &o->max_batch_tokens) ||
        get_int(a, O_QUEUE, 1, 1 << 20, &o->queue) ||
        get_int(a, O_ADAPTER_MEM, 1, 1 << 30, &o->adapter_memory_mib) ||
        get_float(a, O_GRACE, &grace) || get_int(a, O_METRICS_PORT, 0, 65535, &o->metrics_port) ||
        read_device(a, o) || get_int(a, O_STEPS, 1, 1 << 30, &o->steps) ||
        get_int(a, O_EPOCHS, 1, 1 << 20, &o->epochs) ||
        get_int(a, O_BATCH_SIZE, 1, 1 << 16, &o->batch_size) ||
        get_int(a, O_RANK, 1, 4096, &o->lora_rank) ||
        get_float_if(a, O_LR, &o->lr, positive, "must be > 0") ||
        get_float_if(a, O_ALPHA, &o->alpha, positive, "must be > 0") ||
        get_float_if(a, O_MAX_GRAD_NORM, &o->max_grad_norm, non_negative,
                     "must be >= 0 (0 = no clipping)") ||
        get_float_if(a, O_DROPOUT, &o->dropout, below_one, "must be in [0, 1)") ||
        get_float_if(a, O_ADAM_EPS, &o->adam_eps, positive, "must be > 0") ||
        get_int(a, O_MICRO, 1, 4096, &o->micro_batches) ||
        get_float_if(a, O_WEIGHT_DECAY, &o->weight_decay, non_negative, "must be >= 0") ||
        get_float_if(a, O_COMM_TIMEOUT, &comm_timeout, timeout_ok,
                     "must be a number of seconds in [0, 1000000] (0 = no deadline)"))
        return -1;
    o->grace_s = grace;
    o->comm_timeout_s = comm_timeout;
    o->sp.seed = (uint64_t)seed;
    o->have_seed = v[O_SEED] != NULL;
    return 0;
}

/* The rules between options, once each is read. */
static int check_values(cmd_options *o) {
    if (!o->model) {
        PERR("tessera: --model PATH is required\n");
        return -1;
    }
    if (o->cmd == CMD_TRAIN) {
        unsigned mask;
        if (!o->data || !o->out) {
            PERR("tessera train: --data FILE.jsonl and --out DIR are required\n");
            return -1;
        }
        if (tsr_lora_parse_targets(o->targets, &mask) != TSR_OK) {
            PERR("tessera train: --targets: %s\n", tsr_error_msg());
            return -1;
        }
    }
    if (o->n_pp_layers && o->n_pp_layers != o->pp) {
        PERR("tessera: --pp-layers lists %d stages but --pp is %d\n", o->n_pp_layers, o->pp);
        return -1;
    }
    if (tsr_sampling_params_validate(&o->sp) != TSR_OK) {
        PERR("tessera: %s\n", tsr_error_msg());
        return -1;
    }
    /* device flags that cannot go together, whatever the build */
    if (o->comm == TSR_COMM_NCCL && o->device != TSR_DEVICE_CUDA) {
        PERR("tessera: --comm nccl needs --device cuda (NCCL moves GPU memory; --comm mpi works "
             "with either device)\n");
        return -1;
    }
    if (o->device == TSR_DEVICE_CPU && o->act_dtype == TSR_BF16) {
        PERR("tessera: --act-dtype bf16 needs --device cuda (the CPU backend computes in f32)\n");
        return -1;
    }
    if (o->device == TSR_DEVICE_CPU && o->weight_dtype == TSR_BF16) {
        PERR("tessera: --weight-dtype bf16 needs --device cuda (the CPU keeps the file's blocks, "
             "or f32, q8_0, q4_0)\n");
        return -1;
    }
    if (o->device == TSR_DEVICE_CUDA &&
        (o->weight_dtype == TSR_Q8_0 || o->weight_dtype == TSR_Q4_0)) {
        PERR("tessera: --weight-dtype %s needs --device cpu (CUDA stores bf16 or f32)\n",
             tsr_dtype_name(o->weight_dtype));
        return -1;
    }
    if (o->weight_dtype == TSR_F32 && o->device == TSR_DEVICE_CUDA && o->act_dtype != TSR_F32) {
        PERR("tessera: --weight-dtype f32 needs --act-dtype f32 (full-precision GEMMs)\n");
        return -1;
    }
    if (o->device == TSR_DEVICE_CUDA && o->kv_dtype != TSR_ENGINE_ACT_DEFAULT &&
        o->kv_dtype != (o->act_dtype == TSR_F32 ? TSR_F32 : TSR_BF16)) {
        PERR("tessera: --kv-dtype %s needs --device cpu (CUDA's KV cache holds its activation "
             "type)\n",
             tsr_dtype_name(o->kv_dtype));
        return -1;
    }
    if (o->device == TSR_DEVICE_CPU && o->gpu >= 0) {
        PERR("tessera: --gpu needs --device cuda\n");
        return -1;
    }
    return 0;
}

/* The usage text a subcommand's --help and syntax errors print. */
static void usage_of(unsigned cmd, FILE *f) {
    if (cmd == CMD_TRAIN)
        cmd_train_usage(f);
    else if (cmd == CMD_MERGE_LORA)
        cmd_merge_usage(f);
    else
        cmd_usage(f);
}

int cmd_options_read(int argc, char **argv, cmd_options *o) {
    memset(o, 0, sizeof *o);
    set_defaults(o);
    tsr_opt_args a;
    tsr_status st = tsr_opt_parse(&k_spec, argc, argv, 1, &a);
    o->cmd = a.cmd;
    const char *who = o->cmd == CMD_MERGE_LORA ? "tessera merge-lora" : "tessera";
    int rc = 0;
    if (st != TSR_OK) {
        PERR("%s: %s\n", who, tsr_error_msg());
        if (g_rank == 0)
            usage_of(o->cmd, stderr);
        rc = -1;
    } else if (a.val[O_HELP]) {
        if (g_rank == 0)
            usage_of(o->cmd, stdout);
        rc = 1;
    } else if (tsr_opt_check_cmd(&k_spec, &a) != TSR_OK) {
        PERR("%s: %s\n", who, tsr_error_msg());
        rc = -1;
    } else if (read_values(&a, o) || (o->cmd != CMD_MERGE_LORA && check_values(o))) {
        rc = -1;
    }
    tsr_opt_args_free(&a);
    return rc;
}

void cmd_device_config(const cmd_options *o, tsr_engine_config *ec) {
    ec->device = o->device;
    ec->act_dtype = o->act_dtype;
    ec->weight_dtype = o->weight_dtype;
    ec->kv_dtype = o->kv_dtype;
    ec->gpu = o->gpu;
}

void cmd_session_config(const cmd_options *o, int ctx, tsr_plan_config *pc, tsr_engine_config *ec) {
    *pc = (tsr_plan_config){o->tp, o->pp, o->n_pp_layers ? o->pp_layers : NULL, o->n_pp_layers};
    *ec = (tsr_engine_config)TSR_ENGINE_CONFIG_INIT;
    cmd_device_config(o, ec);
    ec->threads = o->threads;
    ec->max_ctx = ctx;
    ec->micro_batches = o->micro_batches;
}

void cmd_usage(FILE *f) {
    fputs("usage: tessera COMMAND --model PATH [options]\n"
          "\n"
          "commands:\n"
          "  generate    --prompt TEXT | --chat TEXT [--system TEXT]\n"
          "  tokenize    --text TEXT | --file F   (prints token ids; special tokens parsed)\n"
          "  perplexity  --file F [--ctx N]       (llama.cpp-compatible chunked perplexity)\n"
          "  serve       [--host H] [--port P]    (gRPC server on rank 0; see docs/serving.md)\n"
          "  train       --data F.jsonl --out DIR (LoRA training; tessera train --help)\n"
          "  merge-lora  --adapter DIR --out OUTDIR [--dtype f32|bf16]  (base + adapter as a\n"
          "              Hugging Face directory; tessera merge-lora --help)\n"
          "\n"
          "model:\n"
          "  --model PATH          a .gguf file or a Hugging Face directory\n"
          "  --tp T  --pp P        tensor / pipeline parallel degrees (tp*pp = ranks)\n"
          "  --pp-layers A,B,...   layers per pipeline stage (default: even)\n"
          "  --threads N           CPU threads (default: all cores)\n"
          "  --adapter DIR         apply a PEFT LoRA adapter directory (adapter_config.json +\n"
          "                        adapter_model.safetensors, as `tessera train` writes it)\n"
          "                        in generate, perplexity and serve\n"
          "device (generate, perplexity, serve):\n"
          "  --device cpu|cuda     where the shard runs (default cpu)\n"
          "  --comm mpi|nccl       activations between ranks: mpi (default; GPUs go through\n"
          "                        host memory and may be shared) or nccl (--device cuda,\n"
          "                        one GPU per rank)\n"
          "  --comm-timeout S      deadline of every wait between ranks (collective, send,\n"
          "                        receive; mpi and nccl): past it, the ranks that do not\n"
          "                        answer are named and the job ends (default 60; 0 = none)\n"
          "  --act-dtype bf16|f32  CUDA activation type (default bf16; the CPU is f32)\n"
          "  --weight-dtype file|f32|q8_0|q4_0|bf16  how weights are kept. CPU: file (the\n"
          "                        default) keeps the GGUF's quantized blocks and runs int8\n"
          "                        dot kernels on them; f32 dequantizes at load (the\n"
          "                        reference path); q8_0|q4_0 quantize at load (safetensors\n"
          "                        models). CUDA: bf16 (default) or f32 (reference precision:\n"
          "                        full f32 GEMMs, needs --act-dtype f32)\n"
          "  --kv-dtype f16|f32    KV cache elements on the CPU (default f16, half the bytes\n"
          "                        per position; f32 is the reference). CUDA keeps its\n"
          "                        activation type\n"
          "  --gpu N               CUDA device (default: local rank modulo the GPUs;\n"
          "                        with nccl, the local rank)\n"
          "  --ctx N               context length (generate: default min(model, 4096);\n"
          "                        perplexity: chunk length, default 512)\n"
          "  --batch N             prefill chunk size (default 512)\n"
          "generation:\n"
          "  --max-tokens N        (default 256)   --min-tokens N\n"
          "  --temperature T       (default 0 = greedy)\n"
          "  --top-k K  --top-p P  --min-p P  --seed S\n"
          "  --repeat-penalty R  --frequency-penalty F  --presence-penalty P\n"
          "  --stop STRING         (repeatable)    --stop-id ID (repeatable)\n"
          "  --ignore-eos\n"
          "serve:\n"
          "  --host H (127.0.0.1)  --port P (50051)  --auth-token-file F\n"
          "  --tls-cert F --tls-key F   --max-seqs N (32)  --ctx N (2048)\n"
          "  --kv-positions N (max-seqs*ctx/2)  --max-batch-tokens N (512)\n"
          "  --queue N (256)  --grace S (30)  --log-prompts\n"
          "  --adapter-memory MIB (no cap: what the host has free)\n"
          "  --host-sampling   bring every sampled row's logits to rank 0 (default: rows\n"
          "                    bring device-side candidates where their draw allows)\n"
          "  --metrics-port N (0 = off)  Prometheus /metrics and /healthz over HTTP on --host\n"
          "other:\n"
          "  --file -              read the text from standard input\n"
          "  --verbose             log loading details to stderr\n",
          f);
}

tsr_status cmd_session_open(tsr_session *s, tsr_comm_grid *grid, const cmd_options *o, int ctx) {
    tsr_status st = tsr_session_open(s, grid, o->model);
    if (st != TSR_OK || ctx == 0)
        return st;
    tsr_plan_config pc;
    tsr_engine_config ec;
    cmd_session_config(o, ctx, &pc, &ec);
    return tsr_session_start_engine(s, &pc, &ec, o->adapter);
}
