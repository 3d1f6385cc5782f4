/* runtime/cmd/tessera_main.c - the `tessera` program: generate, tokenize and
 * perplexity, on one rank or on a tp x pp grid under mpirun.
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
 * unless asked (--file -). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include "base/log.h"
#include "base/rng.h"
#include "base/clock.h"
#include "comm/comm.h"
#include "runtime/engine/engine.h"
#include "runtime/sample/generate.h"
#include "runtime/server/grpc_api.h"
#include "runtime/server/grpc_server.h"
#include "runtime/server/metrics.h"
#include "runtime/server/scheduler.h"
#include "runtime/model/lora.h"
#include "shard/merge.h"
#include "shard/peft.h"
#include "runtime/tokenizer/chat.h"
#include "runtime/train/train.h"
#include "runtime/train/train_comm.h"
#include "runtime/train/train_data.h"

#define MAX_STOP 16

typedef struct {
    const char *model;
    const char *adapter; /* --adapter DIR: a PEFT LoRA adapter (generate, perplexity, serve) */
    const char *prompt, *chat, *system, *text, *file;
    int max_tokens, min_tokens, ctx, threads, n_batch, verbose, ignore_eos, raw_ids;
    int have_ctx;
    int tp, pp;
    /* --device, --comm, --act-dtype (-1: the device's default), --gpu (-1: by local rank) */
    tsr_device device;
    tsr_comm_kind comm;
    int act_dtype, weight_dtype, gpu;
    int pp_layers[256];
    int n_pp_layers;
    /* serve */
    const char *host, *auth_token_file, *tls_cert, *tls_key;
    int port, max_seqs, kv_positions, max_batch_tokens, queue, log_prompts, host_sampling;
    int metrics_port; /* 0 = no metrics endpoint */
    double grace_s;
    tsr_sampling_params sp;
    const char *stop[MAX_STOP];
    size_t n_stop;
    int32_t stop_ids[MAX_STOP];
    size_t n_stop_ids;
    /* train */
    const char *data, *out, *targets;
    int steps, epochs, batch_size, lora_rank;
    float lr, alpha, max_grad_norm, weight_decay, dropout, adam_eps;
    int micro_batches; /* --micro-batches: per training batch with --pp > 1 (0 = pp) */
    int have_seed;
} options;

/* Everything one command needs, built in order and freed in reverse. */
typedef struct {
    tsr_comm_grid *grid;
    tsr_model_file_t *mf;
    tsr_tokenizer_t *tok; /* rank 0 only */
    tsr_engine engine;
    int engine_ready;
    int peer_failed; /* the error came from another rank (it reported it) */
    int serving;     /* tessera serve: many sequences, a front end on rank 0 */
    tsr_grpc_server_t *server;
    tsr_metrics *metrics;            /* serve, rank 0, --metrics-port: owned by cmd_serve */
    tsr_metrics_http_t *metrics_http;
    tsr_lm lm;
    tsr_lora_adapter lora; /* --adapter: this rank's pieces, set on the engine's model */
    int lora_ready;
} session;

/* This process's rank and world size, known from MPI init on. Written once
 * in main before anything else runs. */
static int g_rank, g_world = 1;

/* Usage and input errors: every rank sees the same arguments, so rank 0
 * alone reports them. */
#define PERR(...)                                                                                  \
    do {                                                                                           \
        if (g_rank == 0)                                                                           \
            fprintf(stderr, __VA_ARGS__);                                                          \
    } while (0)

static void train_usage(FILE *f) {
    fputs("usage: [mpirun -np N] tessera train --model PATH --data FILE.jsonl --out DIR [options]\n"
          "\n"
          "Trains a LoRA adapter on the examples of FILE.jsonl and saves it in DIR in Hugging\n"
          "Face PEFT's format (adapter_config.json, adapter_model.safetensors), with loss.csv.\n"
          "Rank 0 reads the data file and sends the tokens to the other ranks.\n"
          "\n"
          "data (one JSON object per line; docs/lora.md):\n"
          "  {\"prompt\": \"...\", \"completion\": \"...\"}   loss on the completion and EOS\n"
          "  {\"messages\": [{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": \"...\"}, ...]}\n"
          "                        rendered with the model's chat template; loss on the\n"
          "                        assistant messages and their end-of-turn tokens\n"
          "\n"
          "options:\n"
          "  --steps N             optimizer steps (default: --epochs)\n"
          "  --epochs N            passes over the data (default 1; ignored with --steps)\n"
          "  --batch-size B        examples per step (default 8)\n"
          "  --lr LR               AdamW learning rate (default 1e-4)\n"
          "  --weight-decay W      AdamW weight decay (default 0)\n"
          "  --adam-eps E          AdamW epsilon (default 1e-8)\n"
          "  --max-grad-norm G     clip the global gradient norm (default 1.0; 0 = off)\n"
          "  --rank R              LoRA rank (default 8)\n"
          "  --alpha A             LoRA alpha; scaling alpha / r (default 16)\n"
          "  --targets LIST        q,k,v,o,gate,up,down or all (default q,v)\n"
          "  --seed S              A's initialisation and the per-epoch shuffle (default 0)\n"
          "  --ctx N               most tokens per example; longer ones are refused (default 512)\n"
          "  --dropout P           LoRA dropout on the adapters' inputs (default 0)\n"
          "  --tp T  --pp P        tensor / pipeline parallel degrees (tp*pp = the job's ranks)\n"
          "  --pp-layers A,B,...   layers per pipeline stage (default: even)\n"
          "  --micro-batches M     micro-batches per step with --pp > 1 (GPipe; default pp)\n"
          "  --comm mpi|nccl       activations between ranks (default mpi)\n"
          "  --device cpu|cuda  --act-dtype bf16|f32  --weight-dtype bf16|f32  --gpu N\n"
          "  --threads N           CPU threads per rank\n"
          "\n"
          "Rank 0 prints one line per step to stdout:\n"
          "  step 3/20  loss 2.3456  grad_norm 1.234  tokens 412  tok/s 123.4\n"
          "Exit status: 0 saved; 1 a failure (a non-finite step saves nothing); 2 bad usage.\n",
          f);
}

static void usage(FILE *f) {
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
          "  --act-dtype bf16|f32  CUDA activation type (default bf16; the CPU is f32)\n"
          "  --weight-dtype bf16|f32  CUDA weight type (default bf16; f32 is the reference-\n"
          "                        precision mode: full f32 GEMMs, needs --act-dtype f32)\n"
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
          "  --host-sampling   bring every sampled row's logits to rank 0 (default: rows\n"
          "                    bring device-side candidates where their draw allows)\n"
          "  --metrics-port N (0 = off)  Prometheus /metrics and /healthz over HTTP on --host\n"
          "other:\n"
          "  --file -              read the text from standard input\n"
          "  --verbose             log loading details to stderr\n",
          f);
}

static int parse_int(const char *s, const char *flag, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        PERR("tessera: %s expects an integer in [%d, %d], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_float(const char *s, const char *flag, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s || !isfinite(v)) {
        PERR("tessera: %s expects a number, got '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

enum {
    OPT_MODEL = 256, OPT_PROMPT, OPT_CHAT, OPT_SYSTEM, OPT_TEXT, OPT_FILE, OPT_MAX_TOKENS,
    OPT_MIN_TOKENS, OPT_CTX, OPT_THREADS, OPT_BATCH, OPT_TEMP, OPT_TOP_K, OPT_TOP_P, OPT_MIN_P,
    OPT_SEED, OPT_REPEAT, OPT_FREQ, OPT_PRES, OPT_STOP, OPT_STOP_ID, OPT_IGNORE_EOS, OPT_VERBOSE,
    OPT_HELP, OPT_TP, OPT_PP, OPT_PP_LAYERS, OPT_HOST, OPT_PORT, OPT_AUTH, OPT_TLS_CERT,
    OPT_TLS_KEY, OPT_MAX_SEQS, OPT_KV_POS, OPT_MAX_BATCH, OPT_QUEUE, OPT_GRACE, OPT_LOG_PROMPTS,
    OPT_METRICS_PORT, OPT_DEVICE, OPT_COMM, OPT_ACT_DTYPE, OPT_WEIGHT_DTYPE, OPT_GPU,
    OPT_DATA, OPT_OUT, OPT_STEPS, OPT_EPOCHS, OPT_LR, OPT_BATCH_SIZE, OPT_RANK, OPT_ALPHA,
    OPT_TARGETS, OPT_MAX_GRAD_NORM, OPT_WEIGHT_DECAY, OPT_ADAPTER, OPT_DROPOUT, OPT_MICRO, OPT_ADAM_EPS,
    OPT_HOST_SAMPLING,
};

static int parse_layers(const char *s, options *o) {
    o->n_pp_layers = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 1 || v > 1 << 20 || o->n_pp_layers == 256 ||
            (*end && *end != ',')) {
            PERR("tessera: --pp-layers expects positive integers separated by commas, got '%s'\n", s);
            return -1;
        }
        o->pp_layers[o->n_pp_layers++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return o->n_pp_layers ? 0 : -1;
}

static int parse_options(int argc, char **argv, options *o) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, OPT_MODEL},
        {"prompt", required_argument, 0, OPT_PROMPT},
        {"chat", required_argument, 0, OPT_CHAT},
        {"system", required_argument, 0, OPT_SYSTEM},
        {"text", required_argument, 0, OPT_TEXT},
        {"file", required_argument, 0, OPT_FILE},
        {"max-tokens", required_argument, 0, OPT_MAX_TOKENS},
        {"min-tokens", required_argument, 0, OPT_MIN_TOKENS},
        {"ctx", required_argument, 0, OPT_CTX},
        {"ctx-size", required_argument, 0, OPT_CTX},
        {"threads", required_argument, 0, OPT_THREADS},
        {"batch", required_argument, 0, OPT_BATCH},
        {"temperature", required_argument, 0, OPT_TEMP},
        {"top-k", required_argument, 0, OPT_TOP_K},
        {"top-p", required_argument, 0, OPT_TOP_P},
        {"min-p", required_argument, 0, OPT_MIN_P},
        {"seed", required_argument, 0, OPT_SEED},
        {"repeat-penalty", required_argument, 0, OPT_REPEAT},
        {"frequency-penalty", required_argument, 0, OPT_FREQ},
        {"presence-penalty", required_argument, 0, OPT_PRES},
        {"stop", required_argument, 0, OPT_STOP},
        {"stop-id", required_argument, 0, OPT_STOP_ID},
        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"verbose", no_argument, 0, OPT_VERBOSE},
        {"help", no_argument, 0, OPT_HELP},
        {"tp", required_argument, 0, OPT_TP},
        {"pp", required_argument, 0, OPT_PP},
        {"pp-layers", required_argument, 0, OPT_PP_LAYERS},
        {"host", required_argument, 0, OPT_HOST},
        {"port", required_argument, 0, OPT_PORT},
        {"auth-token-file", required_argument, 0, OPT_AUTH},
        {"tls-cert", required_argument, 0, OPT_TLS_CERT},
        {"tls-key", required_argument, 0, OPT_TLS_KEY},
        {"max-seqs", required_argument, 0, OPT_MAX_SEQS},
        {"kv-positions", required_argument, 0, OPT_KV_POS},
        {"max-batch-tokens", required_argument, 0, OPT_MAX_BATCH},
        {"queue", required_argument, 0, OPT_QUEUE},
        {"grace", required_argument, 0, OPT_GRACE},
        {"log-prompts", no_argument, 0, OPT_LOG_PROMPTS},
        {"host-sampling", no_argument, 0, OPT_HOST_SAMPLING},
        {"metrics-port", required_argument, 0, OPT_METRICS_PORT},
        {"device", required_argument, 0, OPT_DEVICE},
        {"comm", required_argument, 0, OPT_COMM},
        {"act-dtype", required_argument, 0, OPT_ACT_DTYPE},
        {"weight-dtype", required_argument, 0, OPT_WEIGHT_DTYPE},
        {"gpu", required_argument, 0, OPT_GPU},
        {"data", required_argument, 0, OPT_DATA},
        {"out", required_argument, 0, OPT_OUT},
        {"steps", required_argument, 0, OPT_STEPS},
        {"epochs", required_argument, 0, OPT_EPOCHS},
        {"lr", required_argument, 0, OPT_LR},
        {"batch-size", required_argument, 0, OPT_BATCH_SIZE},
        {"rank", required_argument, 0, OPT_RANK},
        {"alpha", required_argument, 0, OPT_ALPHA},
        {"targets", required_argument, 0, OPT_TARGETS},
        {"max-grad-norm", required_argument, 0, OPT_MAX_GRAD_NORM},
        {"weight-decay", required_argument, 0, OPT_WEIGHT_DECAY},
        {"adapter", required_argument, 0, OPT_ADAPTER},
        {"dropout", required_argument, 0, OPT_DROPOUT},
        {"micro-batches", required_argument, 0, OPT_MICRO},
        {"adam-eps", required_argument, 0, OPT_ADAM_EPS},
        {0, 0, 0, 0},
    };
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
    o->act_dtype = TSR_ENGINE_ACT_DEFAULT;
    o->weight_dtype = TSR_ENGINE_ACT_DEFAULT;
    o->gpu = -1;
    o->batch_size = 8;
    o->lora_rank = 8;
    o->lr = 1e-4f;
    o->alpha = 16.0f;
    o->adam_eps = 1e-8f;
    o->max_grad_norm = 1.0f;
    o->targets = "q,v";
    const int train = !strcmp(argv[1], "train");
    optind = 2; /* argv[1] is the command */
    int c, seed;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case OPT_MODEL: o->model = optarg; break;
        case OPT_ADAPTER: o->adapter = optarg; break;
        case OPT_PROMPT: o->prompt = optarg; break;
        case OPT_CHAT: o->chat = optarg; break;
        case OPT_SYSTEM: o->system = optarg; break;
        case OPT_TEXT: o->text = optarg; break;
        case OPT_FILE: o->file = optarg; break;
        case OPT_MAX_TOKENS: r = parse_int(optarg, "--max-tokens", 1, 1 << 24, &o->max_tokens); break;
        case OPT_MIN_TOKENS: r = parse_int(optarg, "--min-tokens", 0, 1 << 24, &o->min_tokens); break;
        case OPT_CTX: r = parse_int(optarg, "--ctx", 8, 1 << 20, &o->ctx); o->have_ctx = 1; break;
        case OPT_THREADS: r = parse_int(optarg, "--threads", 1, 1024, &o->threads); break;
        case OPT_BATCH: r = parse_int(optarg, "--batch", 1, 1 << 16, &o->n_batch); break;
        case OPT_TEMP: r = parse_float(optarg, "--temperature", &o->sp.temperature); break;
        case OPT_TOP_K: r = parse_int(optarg, "--top-k", 0, 1 << 24, &o->sp.top_k); break;
        case OPT_TOP_P: r = parse_float(optarg, "--top-p", &o->sp.top_p); break;
        case OPT_MIN_P: r = parse_float(optarg, "--min-p", &o->sp.min_p); break;
        case OPT_SEED:
            r = parse_int(optarg, "--seed", 0, 2147483647, &seed);
            o->sp.seed = (uint64_t)seed;
            o->have_seed = 1;
            break;
        case OPT_REPEAT: r = parse_float(optarg, "--repeat-penalty", &o->sp.repetition_penalty); break;
        case OPT_FREQ: r = parse_float(optarg, "--frequency-penalty", &o->sp.frequency_penalty); break;
        case OPT_PRES: r = parse_float(optarg, "--presence-penalty", &o->sp.presence_penalty); break;
        case OPT_STOP:
            if (o->n_stop == MAX_STOP) {
                PERR("tessera: at most %d --stop strings\n", MAX_STOP);
                return -1;
            }
            o->stop[o->n_stop++] = optarg;
            break;
        case OPT_STOP_ID:
            if (o->n_stop_ids == MAX_STOP) {
                PERR("tessera: at most %d --stop-id values\n", MAX_STOP);
                return -1;
            }
            r = parse_int(optarg, "--stop-id", 0, 1 << 30, &o->stop_ids[o->n_stop_ids++]);
            break;
        case OPT_IGNORE_EOS: o->ignore_eos = 1; break;
        case OPT_TP: r = parse_int(optarg, "--tp", 1, 4096, &o->tp); break;
        case OPT_PP: r = parse_int(optarg, "--pp", 1, 4096, &o->pp); break;
        case OPT_PP_LAYERS: r = parse_layers(optarg, o); break;
        case OPT_HOST: o->host = optarg; break;
        case OPT_PORT: r = parse_int(optarg, "--port", 0, 65535, &o->port); break;
        case OPT_AUTH: o->auth_token_file = optarg; break;
        case OPT_TLS_CERT: o->tls_cert = optarg; break;
        case OPT_TLS_KEY: o->tls_key = optarg; break;
        case OPT_MAX_SEQS: r = parse_int(optarg, "--max-seqs", 1, 4096, &o->max_seqs); break;
        case OPT_KV_POS: r = parse_int(optarg, "--kv-positions", 16, 1 << 26, &o->kv_positions); break;
        case OPT_MAX_BATCH: r = parse_int(optarg, "--max-batch-tokens", 1, 1 << 20, &o->max_batch_tokens); break;
        case OPT_QUEUE: r = parse_int(optarg, "--queue", 1, 1 << 20, &o->queue); break;
        case OPT_GRACE: {
            float g;
            r = parse_float(optarg, "--grace", &g);
            o->grace_s = g;
            break;
        }
        case OPT_LOG_PROMPTS: o->log_prompts = 1; break;
        case OPT_HOST_SAMPLING: o->host_sampling = 1; break;
        case OPT_METRICS_PORT: r = parse_int(optarg, "--metrics-port", 0, 65535, &o->metrics_port); break;
        case OPT_DEVICE:
            if (!strcmp(optarg, "cpu") || !strcmp(optarg, "cuda")) {
                o->device = optarg[1] == 'p' ? TSR_DEVICE_CPU : TSR_DEVICE_CUDA;
            } else {
                PERR("tessera: --device expects cpu or cuda, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_COMM:
            if (tsr_comm_kind_parse(optarg, &o->comm) != TSR_OK) {
                PERR("tessera: --comm: %s\n", tsr_error_msg());
                r = -1;
            }
            break;
        case OPT_ACT_DTYPE:
            if (!strcmp(optarg, "bf16") || !strcmp(optarg, "f32")) {
                o->act_dtype = optarg[0] == 'b' ? TSR_BF16 : TSR_F32;
            } else {
                PERR("tessera: --act-dtype expects bf16 or f32, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_WEIGHT_DTYPE:
            if (!strcmp(optarg, "bf16") || !strcmp(optarg, "f32")) {
                o->weight_dtype = optarg[0] == 'b' ? TSR_BF16 : TSR_F32;
            } else {
                PERR("tessera: --weight-dtype expects bf16 or f32, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_GPU: r = parse_int(optarg, "--gpu", 0, 1023, &o->gpu); break;
        case OPT_VERBOSE: o->verbose = 1; break;
        case OPT_DATA: o->data = optarg; break;
        case OPT_OUT: o->out = optarg; break;
        case OPT_STEPS: r = parse_int(optarg, "--steps", 1, 1 << 30, &o->steps); break;
        case OPT_EPOCHS: r = parse_int(optarg, "--epochs", 1, 1 << 20, &o->epochs); break;
        case OPT_BATCH_SIZE: r = parse_int(optarg, "--batch-size", 1, 1 << 16, &o->batch_size); break;
        case OPT_RANK: r = parse_int(optarg, "--rank", 1, 4096, &o->lora_rank); break;
        case OPT_TARGETS: o->targets = optarg; break;
        case OPT_LR:
            r = parse_float(optarg, "--lr", &o->lr);
            if (!r && !(o->lr > 0)) {
                PERR("tessera: --lr must be > 0, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_ALPHA:
            r = parse_float(optarg, "--alpha", &o->alpha);
            if (!r && !(o->alpha > 0)) {
                PERR("tessera: --alpha must be > 0, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_MAX_GRAD_NORM:
            r = parse_float(optarg, "--max-grad-norm", &o->max_grad_norm);
            if (!r && o->max_grad_norm < 0) {
                PERR("tessera: --max-grad-norm must be >= 0 (0 = no clipping), got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_DROPOUT:
            r = parse_float(optarg, "--dropout", &o->dropout);
            if (!r && !(o->dropout >= 0 && o->dropout < 1)) {
                PERR("tessera: --dropout must be in [0, 1), got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_ADAM_EPS:
            r = parse_float(optarg, "--adam-eps", &o->adam_eps);
            if (!r && !(o->adam_eps > 0)) {
                PERR("tessera: --adam-eps must be > 0, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_MICRO:
            r = parse_int(optarg, "--micro-batches", 1, 4096, &o->micro_batches);
            break;
        case OPT_WEIGHT_DECAY:
            r = parse_float(optarg, "--weight-decay", &o->weight_decay);
            if (!r && o->weight_decay < 0) {
                PERR("tessera: --weight-decay must be >= 0, got '%s'\n", optarg);
                r = -1;
            }
            break;
        case OPT_HELP:
            if (g_rank == 0)
                (train ? train_usage : usage)(stdout);
            tsr_comm_mpi_finalize();
            exit(0);
        default: (train ? train_usage : usage)(stderr); return -1;
        }
        if (r)
            return -1;
    }
    if (optind < argc) {
        PERR("tessera: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->model) {
        PERR("tessera: --model PATH is required\n");
        return -1;
    }
    if (!train && (o->data || o->out || o->steps || o->epochs)) {
        PERR("tessera: --data, --out, --steps and --epochs belong to `tessera train`\n");
        return -1;
    }
    if (o->adapter && (train || !strcmp(argv[1], "tokenize"))) {
        PERR("tessera: --adapter belongs to generate, perplexity and serve\n");
        return -1;
    }
    if (train) {
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
        PERR("tessera: --weight-dtype bf16 needs --device cuda (the CPU backend keeps f32)\n");
        return -1;
    }
    if (o->weight_dtype == TSR_F32 && o->device == TSR_DEVICE_CUDA && o->act_dtype != TSR_F32) {
        PERR("tessera: --weight-dtype f32 needs --act-dtype f32 (full-precision GEMMs)\n");
        return -1;
    }
    if (o->device == TSR_DEVICE_CPU && o->gpu >= 0) {
        PERR("tessera: --gpu needs --device cuda\n");
        return -1;
    }
    return 0;
}

/* The device part of the engine's config, from the options. */
static void device_config(const options *o, tsr_engine_config *ec) {
    ec->device = o->device;
    ec->act_dtype = o->act_dtype;
    ec->weight_dtype = o->weight_dtype;
    ec->gpu = o->gpu;
}

/* Reads a whole file (or stdin for "-") into a NUL-terminated buffer. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        PERR("tessera: cannot open '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    int err = ferror(f);
    if (f != stdin)
        fclose(f);
    if (!buf || err) {
        PERR("tessera: cannot read '%s'\n", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The adapter goes before the engine: its buffers live on the engine's
 * backend, which tsr_engine_free destroys. */
static void session_drop_adapter(session *s) {
    if (!s->lora_ready)
        return;
    if (s->engine.model_loaded)
        tsr_model_set_lora(&s->engine.model, NULL);
    tsr_lora_adapter_free(&s->lora);
    s->lora_ready = 0;
}

static void session_free(session *s) {
    tsr_grpc_server_shutdown(s->server);
    s->server = NULL;
    tsr_metrics_http_stop(s->metrics_http);
    s->metrics_http = NULL;
    if (s->engine_ready) {
        if (g_rank == 0)
            tsr_engine_stop(&s->engine);
        session_drop_adapter(s);
        tsr_engine_free(&s->engine);
    }
    session_drop_adapter(s);
    tsr_tokenizer_free(s->tok);
    tsr_model_file_close(s->mf);
}

/* ---- serve ---- */

static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

/* The front end's view of the engine: owned by main, shared with the gRPC
 * thread through atomics and the queue. */
static tsr_request_queue g_queue;
static tsr_server_stats g_stats;

/* Reads a whole small file (PEM, token) into a NUL-terminated string,
 * trailing whitespace trimmed for tokens. NULL and a message on failure. */
static char *slurp(const char *path, int trim) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        tsr_error_set(TSR_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    while (trim && n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return buf;
}

static tsr_status load_tokenizer(session *s);

static tsr_status start_server(session *s, const options *o) {
    static char addr[300];
    snprintf(addr, sizeof addr, strchr(o->host, ':') ? "[%s]:%d" : "%s:%d", o->host, o->port);
    char *token = NULL, *cert = NULL, *key = NULL;
    tsr_status st = TSR_OK;
    if (o->auth_token_file && !(token = slurp(o->auth_token_file, 1)))
        st = TSR_ERR_IO;
    if (st == TSR_OK && token && !token[0])
        st = tsr_error_set(TSR_ERR_INVALID, "the auth token file '%s' is empty", o->auth_token_file);
    if (st == TSR_OK && (!o->tls_cert != !o->tls_key))
        st = tsr_error_set(TSR_ERR_INVALID, "TLS needs both --tls-cert and --tls-key");
    if (st == TSR_OK && o->tls_cert && (!(cert = slurp(o->tls_cert, 0)) || !(key = slurp(o->tls_key, 0))))
        st = TSR_ERR_IO;
    if (st == TSR_OK)
        st = tsr_request_queue_init(&g_queue, o->queue);
    if (st == TSR_OK) {
        const tsr_model_config *c = tsr_model_file_config(s->mf);
        tsr_grpc_server_config gc = {
            .listen_addr = addr,
            .auth_token = token,
            .tls_cert_pem = cert,
            .tls_key_pem = key,
            .log_prompts = o->log_prompts,
            .default_max_tokens = 256,
            .queue = &g_queue,
            .stats = &g_stats,
            .tok = s->tok,
            .model = c,
            .model_format = tsr_model_file_format(s->mf),
            .context_length = o->have_ctx ? o->ctx : 2048,
            .tp = o->tp,
            .pp = o->pp,
            .world_size = g_world,
            .metrics = s->metrics,
        };
        st = tsr_grpc_server_start(&gc, &s->server);
        if (st == TSR_OK)
            fprintf(stderr, "tessera: serving on %s (%s%s); loading the model\n", addr,
                    cert ? "TLS" : "plaintext", token ? ", bearer-token auth" : "");
    }
    if (st == TSR_OK && s->metrics) {
        /* the model's own name, as GetModelInfo reports it; else the path's last part */
        const char *name = tsr_model_file_config(s->mf)->name;
        if (!name[0] || !tsr_api_utf8_valid(name, strlen(name))) {
            const char *slash = strrchr(o->model, '/');
            name = slash && slash[1] ? slash + 1 : o->model;
        }
        tsr_metrics_set_info(s->metrics, name, o->tp, o->pp);
        tsr_metrics_http_config mc = {o->host, o->metrics_port, s->metrics};
        st = tsr_metrics_http_start(&mc, &s->metrics_http);
        if (st == TSR_OK)
            fprintf(stderr, "tessera: metrics on http://%s%s%s:%d/metrics\n",
                    strchr(o->host, ':') ? "[" : "", o->host, strchr(o->host, ':') ? "]" : "",
                    tsr_metrics_http_port(s->metrics_http));
    }
    free(token);
    free(cert);
    free(key);
    return st;
}

static tsr_status load_tokenizer(session *s) {
    const tsr_gguf_t *g = tsr_model_file_gguf(s->mf);
    if (g)
        return tsr_tokenizer_from_gguf(g, &s->tok);
    char tj[4200], tc[4200];
    const char *dir = tsr_model_file_dir(s->mf);
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    snprintf(tc, sizeof tc, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(tc, "r");
    if (f)
        fclose(f);
    return tsr_tokenizer_from_json(tj, f ? tc : NULL, &s->tok);
}

/* PEFT's target order is TSR_LORA_*'s: the bit masks are the same. */
_Static_assert(TSR_PEFT_Q == (int)TSR_LORA_Q && TSR_PEFT_K == (int)TSR_LORA_K &&
                   TSR_PEFT_V == (int)TSR_LORA_V && TSR_PEFT_O == (int)TSR_LORA_O &&
                   TSR_PEFT_GATE == (int)TSR_LORA_GATE && TSR_PEFT_UP == (int)TSR_LORA_UP &&
                   TSR_PEFT_DOWN == (int)TSR_LORA_DOWN &&
                   TSR_PEFT_N_TARGETS == (int)TSR_LORA_N_TARGETS,
               "PEFT and LoRA target orders differ");

/* --adapter on this rank: reads the whole PEFT directory (every rank reads
 * the same files; they are small next to the model), checks it against the
 * model (tsr_peft_load: rank, targets, shapes), keeps this rank's pieces of
 * each matrix in an adapter on the engine's backend and sets it on the
 * engine's model. Dropout is a training-time setting and is ignored. */
static tsr_status load_adapter(session *s, const options *o) {
    const tsr_model_config *mc = &s->engine.mcfg;
    tsr_peft_adapter pa = {0};
    tsr_status st = tsr_peft_load(o->adapter, mc, &pa);
    if (st != TSR_OK)
        return tsr_error_wrap(st, "--adapter");
    tsr_lora_config lc = TSR_LORA_CONFIG_INIT;
    lc.rank = pa.r;
    lc.alpha = pa.alpha;
    lc.use_rslora = pa.use_rslora;
    lc.targets = pa.targets;
    lc.dropout = 0.0f; /* inference: no dropout */
    tsr_lora_shard shard;
    st = tsr_lora_shard_of(&s->engine.plan, s->grid->tp_rank, s->grid->pp_rank, &shard);
    if (st == TSR_OK) {
        st = tsr_lora_adapter_init_frozen(&s->lora, &lc, mc, &shard, s->engine.be);
        if (st != TSR_OK)
            st = tsr_error_wrap(st, "--adapter");
    }
    s->lora_ready = st == TSR_OK;
    for (int l = shard.slice.layer_begin; st == TSR_OK && l < shard.slice.layer_end; l++)
        for (int t = 0; st == TSR_OK && t < TSR_LORA_N_TARGETS; t++)
            st = tsr_lora_set_full(&s->lora, l, (tsr_lora_target)t, pa.A[TSR_PEFT_IDX(l, t)],
                                   pa.B[TSR_PEFT_IDX(l, t)]);
    tsr_peft_free(&pa);
    if (st == TSR_OK)
        st = tsr_backend_sync(s->engine.be);
    if (st == TSR_OK)
        st = tsr_model_set_lora(&s->engine.model, &s->lora);
    if (st == TSR_OK)
        TSR_LOG_I("adapter %s: r %d, scale %g, targets 0x%x", o->adapter, s->lora.cfg.rank,
                  (double)s->lora.scale, s->lora.cfg.targets);
    return st;
}

/* Opens the model (every rank) and the tokenizer (rank 0); with ctx != 0 also
 * builds the engine: each rank loads only its shard and a one-sequence KV
 * cache of ctx positions (-1: the model's context, at most 4096).
 * Collective: on any rank's failure every rank returns an error; the failing
 * rank's message names the problem. */
static tsr_status session_open(session *s, tsr_comm_grid *grid, const options *o, int ctx) {
    int serving = s->serving;
    tsr_metrics *metrics = s->metrics;
    memset(s, 0, sizeof *s);
    s->serving = serving;
    s->metrics = metrics;
    s->grid = grid;
    double t0 = tsr_now_s();
    tsr_status st = tsr_model_file_open(o->model, &s->mf);
    if (st == TSR_OK && g_rank == 0)
        st = load_tokenizer(s);
    tsr_status all = tsr_comm_agree(grid->world, st);
    if (st != TSR_OK)
        return st;
    if (all != TSR_OK) {
        s->peer_failed = 1;
        return tsr_error_set(all, "another rank could not open the model (see its message)");
    }
    if (ctx == 0)
        return TSR_OK;
    if (s->serving && g_rank == 0) {
        /* the front end comes up before the weights: health says NOT_SERVING
         * while they load */
        st = start_server(s, o);
        if (st != TSR_OK)
            return st; /* peers find out through the engine's agreement */
    }
    if (ctx < 0) {
        int train = tsr_model_file_config(s->mf)->n_ctx_train;
        ctx = train < 4096 ? train : 4096;
    }
    tsr_plan_config pc = {o->tp, o->pp, o->n_pp_layers ? o->pp_layers : NULL, o->n_pp_layers};
    tsr_engine_config ec = TSR_ENGINE_CONFIG_INIT;
    device_config(o, &ec);
    ec.threads = o->threads;
    ec.max_ctx = ctx;
    ec.micro_batches = o->micro_batches;
    if (s->serving) {
        ec.max_seqs = o->max_seqs;
        int positions = o->kv_positions ? o->kv_positions : o->max_seqs * ctx / 2;
        if (positions < ctx)
            positions = ctx;
        ec.kv_blocks = (positions + ec.block_size - 1) / ec.block_size;
    }
    /* The layout check is the same on every rank: one message, from rank 0. */
    tsr_shard_plan plan;
    st = tsr_shard_plan_init(tsr_model_file_config(s->mf), &pc, &plan);
    if (st != TSR_OK) {
        s->peer_failed = 1;
        return st;
    }
    tsr_shard_plan_free(&plan);
    st = tsr_engine_init(&s->engine, grid, s->mf, &pc, &ec);
    if (st != TSR_OK) {
        s->peer_failed = strstr(tsr_error_msg(), "another rank failed") != NULL;
        return st;
    }
    s->engine_ready = 1;
    if (o->adapter) {
        /* every rank loads its pieces; all learn whether all could. On a
         * failure no step was ever broadcast: the engine is freed without
         * the stop message (which the peers would never read). */
        st = load_adapter(s, o);
        all = tsr_comm_agree(grid->world, st);
        if (all != TSR_OK) {
            session_drop_adapter(s);
            s->engine_ready = 0;
            tsr_engine_free(&s->engine);
            if (st != TSR_OK)
                return st;
            s->peer_failed = 1;
            return tsr_error_set(all, "another rank could not load the adapter (see its message)");
        }
    }
    tsr_engine_lm(&s->engine, &s->lm);
    const tsr_model_config *c = tsr_model_file_config(s->mf);
    const tsr_model_slice *sl = &s->engine.slice;
    TSR_LOG_I("loaded %s (%s, %d layers, %d heads / %d KV heads, vocab %d) in %.2f s; this rank: "
              "layers %d-%d, heads %d+%d, KV heads %d+%d, FFN %d+%d, vocab %d+%d",
              o->model, tsr_model_file_format(s->mf), c->n_layer, c->n_head, c->n_head_kv,
              c->n_vocab, tsr_now_s() - t0, sl->layer_begin, sl->layer_end - 1, sl->head_begin,
              sl->n_head, sl->kv_head_begin, sl->n_kv_head, sl->ff_begin, sl->n_ff,
              sl->vocab_begin, sl->n_vocab);
    return TSR_OK;
}

static int fail(tsr_status st) {
    const char *msg = tsr_error_msg()[0] ? tsr_error_msg() : tsr_status_str(st);
    if (g_world > 1)
        fprintf(stderr, "[rank %d/%d] tessera: error: %s\n", g_rank, g_world, msg);
    else
        PERR("tessera: error: %s\n", msg);
    return st == TSR_ERR_INVALID || st == TSR_ERR_RANGE ? 2 : 1;
}

/* An error of session_open: the rank where it happened reports it; the
 * others only report when they are rank 0 (one line for the job). */
static int fail_open(const session *s, tsr_status st) {
    if (s->peer_failed && g_rank != 0)
        return st == TSR_ERR_INVALID || st == TSR_ERR_RANGE ? 2 : 1;
    return fail(st);
}

/* Ranks other than 0: execute the engine's steps until rank 0 stops it. A
 * failure here would leave the peers waiting forever: end the whole job. */
static int run_worker(session *s) {
    tsr_status st = tsr_engine_serve(&s->engine);
    if (st != TSR_OK) {
        fail(st);
        tsr_comm_abort(s->grid, 1, "engine step failed");
    }
    s->engine_ready = 0; /* stopped by rank 0: nothing to tell it */
    session_drop_adapter(s);
    tsr_engine_free(&s->engine);
    session_free(s);
    return 0;
}

/* Rank 0: a failure inside a step (not bad input, which is refused before
 * anything is broadcast) leaves peers mid-step: end the whole job. */
static void abort_if_step_failed(const session *s, tsr_status st) {
    if (st == TSR_ERR_COMM || st == TSR_ERR_INTERNAL || st == TSR_ERR_BACKEND ||
        st == TSR_ERR_NOMEM) {
        fail(st);
        tsr_comm_abort(s->grid, 1, "engine step failed");
    }
}

static int emit_stdout(void *user, const char *text, size_t len, int32_t token) {
    (void)user;
    (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static long peak_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int cmd_generate(tsr_comm_grid *grid, const options *o) {
    if (!o->prompt == !o->chat) {
        if (g_rank == 0)
            PERR("tessera generate: give exactly one of --prompt TEXT or --chat TEXT\n");
        return 2;
    }
    session s = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    char *rendered = NULL;
    int rc = 0;
    tsr_status st = session_open(&s, grid, o, o->have_ctx ? o->ctx : -1);
    if (st != TSR_OK) {
        rc = fail_open(&s, st);
        goto cleanup;
    }
    if (g_rank != 0)
        return run_worker(&s);
    const char *text = o->prompt;
    if (o->chat) {
        tsr_chat_msg msgs[2];
        size_t nm = 0;
        if (o->system)
            msgs[nm++] = (tsr_chat_msg){"system", o->system};
        msgs[nm++] = (tsr_chat_msg){"user", o->chat};
        st = tsr_chat_render(s.tok, msgs, nm, 1, &rendered);
        if (st != TSR_OK) {
            rc = fail(st);
            goto cleanup;
        }
        text = rendered;
    }
    /* A chat rendering carries its own special tokens; a raw prompt gets BOS
     * when the model asks for it. Special tokens in the text are parsed. */
    unsigned flags = TSR_TOK_PARSE_SPECIAL | (o->chat ? 0 : TSR_TOK_ADD_SPECIAL);
    st = tsr_tokenizer_encode_ex(s.tok, text, strlen(text), flags, &ids, &n);
    if (st == TSR_OK && n == 0)
        st = tsr_error_set(TSR_ERR_INVALID, "the prompt is empty");
    if (st != TSR_OK) {
        rc = fail(st);
        goto cleanup;
    }
    tsr_gen_params gp = {
        .sampling = o->sp,
        .max_tokens = o->max_tokens,
        .min_tokens = o->min_tokens,
        .stop = o->stop,
        .n_stop = o->n_stop,
        .stop_ids = o->stop_ids,
        .n_stop_ids = o->n_stop_ids,
        .ignore_eos = o->ignore_eos,
        .n_batch = o->n_batch,
    };
    tsr_gen_result res;
    st = tsr_generate(&s.lm, s.tok, ids, n, &gp, emit_stdout, NULL, &res);
    fputc('\n', stdout);
    fflush(stdout);
    if (st != TSR_OK) {
        abort_if_step_failed(&s, st);
        rc = fail(st);
        goto cleanup;
    }
    static const char *reasons[] = {"stop", "length", "cancelled"};
    fprintf(stderr,
            "tessera: prompt %d tokens (%.1f tok/s), completion %d tokens (%.1f tok/s), finish %s, peak RSS %.0f MiB\n",
            res.n_prompt, res.prefill_s > 0 ? res.n_prompt / res.prefill_s : 0.0, res.n_completion,
            res.decode_s > 0 ? res.n_completion / res.decode_s : 0.0, reasons[res.finish],
            peak_rss_kb() / 1024.0);
cleanup:
    free(ids);
    free(rendered);
    session_free(&s);
    return rc;
}

static int cmd_tokenize(tsr_comm_grid *grid, const options *o) {
    if (g_rank != 0)
        return 0; /* nothing to do on other ranks */
    if (!o->text == !o->file) {
        PERR("tessera tokenize: give exactly one of --text TEXT or --file F\n");
        return 2;
    }
    size_t len = 0;
    char *buf = NULL;
    const char *text = o->text;
    if (o->file) {
        buf = read_file(o->file, &len);
        if (!buf)
            return 1;
        text = buf;
    } else {
        len = strlen(text);
    }
    session s = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    tsr_status st = session_open(&s, grid, o, 0);
    if (st == TSR_OK)
        st = tsr_tokenizer_encode(s.tok, text, len, 1, &ids, &n);
    if (st != TSR_OK) {
        rc = fail(st);
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        PERR("tessera: %zu tokens\n", n);
    }
    free(ids);
    free(buf);
    session_free(&s);
    return rc;
}

/* log-softmax probability of `target` in logits(n) */
static double nll(const float *logits, int n, int target) {
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)logits[i] - mx);
    return -((double)logits[target] - mx - log(sum));
}

/* llama.cpp's perplexity: the text is cut into chunks of ctx tokens (BOS in
 * the first slot when the model adds one); each chunk is evaluated from a
 * fresh cache and only its second half is scored, so every scored token has
 * at least ctx/2 tokens of context. */
static int cmd_perplexity(tsr_comm_grid *grid, const options *o) {
    if (!o->file) {
        if (g_rank == 0)
            PERR("tessera perplexity: --file F is required\n");
        return 2;
    }
    int ctx = o->have_ctx ? o->ctx : 512;
    size_t len = 0;
    char *text = NULL;
    session s = {0};
    int32_t *ids = NULL;
    float *logits = NULL;
    size_t n = 0;
    int rc = 0;
    tsr_status st = session_open(&s, grid, o, ctx);
    if (st != TSR_OK) {
        rc = fail_open(&s, st);
        goto cleanup;
    }
    if (g_rank != 0)
        return run_worker(&s);
    text = read_file(o->file, &len);
    if (!text) {
        rc = 1;
        goto cleanup;
    }
    st = tsr_tokenizer_encode(s.tok, text, len, 0, &ids, &n);
    if (st != TSR_OK) {
        rc = fail(st);
        goto cleanup;
    }
    int n_chunks = (int)(n / (size_t)ctx);
    if (n_chunks < 1) {
        PERR("tessera perplexity: the text has %zu tokens; at least %d (one --ctx chunk) are needed\n",
                n, ctx);
        rc = 2;
        goto cleanup;
    }
    const int V = s.lm.n_vocab, first = ctx / 2;
    int32_t bos = tsr_tokenizer_bos(s.tok);
    int add_bos = tsr_tokenizer_add_bos(s.tok) && bos >= 0;
    logits = malloc((size_t)ctx * V * sizeof *logits);
    int32_t *chunk = malloc((size_t)ctx * sizeof *chunk);
    if (!logits || !chunk) {
        free(chunk);
        rc = fail(tsr_error_set(TSR_ERR_NOMEM, "out of memory"));
        goto cleanup;
    }
    PERR("tessera: %zu tokens, %d chunks of %d\n", n, n_chunks, ctx);
    double sum = 0, sum2 = 0, t0 = tsr_now_s();
    long count = 0;
    for (int c = 0; c < n_chunks; c++) {
        memcpy(chunk, ids + (size_t)c * ctx, (size_t)ctx * sizeof *chunk);
        if (add_bos)
            chunk[0] = bos;
        st = tsr_score_tokens(&s.lm, chunk, (size_t)ctx, o->n_batch, logits);
        if (st != TSR_OK) {
            abort_if_step_failed(&s, st);
            free(chunk);
            rc = fail(st);
            goto cleanup;
        }
        for (int j = first; j < ctx - 1; j++) {
            double v = nll(logits + (size_t)j * V, V, ids[(size_t)c * ctx + j + 1]);
            sum += v;
            sum2 += v * v;
            count++;
        }
        printf("[%d]%.4f,", c + 1, exp(sum / count));
        fflush(stdout);
    }
    free(chunk);
    double mean = sum / count, var = sum2 / count - mean * mean;
    double err = count > 1 && var > 0 ? sqrt(var / (count - 1)) : 0;
    double ppl = exp(mean);
    printf("\n");
    PERR("tessera: %ld tokens scored in %.2f s (%.1f tok/s); PPL uncertainty +/- %.5f\n",
            count, tsr_now_s() - t0, n_chunks * ctx / (tsr_now_s() - t0), ppl * err);
    PERR("tessera: mean NLL %.9f over %ld tokens\n", mean, count);
    printf("Final estimate: PPL = %.4f\n", ppl);
cleanup:
    free(ids);
    free(logits);
    free(text);
    session_free(&s);
    return rc;
}

static int cmd_serve(tsr_comm_grid *grid, const options *o) {
    /* Every rank ignores SIGTERM/SIGINT's default: rank 0 turns them into a
     * graceful shutdown and tells the others; they must not die first. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    session s = {0};
    memset(&s, 0, sizeof s);
    s.serving = 1;
    /* the metrics live on rank 0, from before the front end starts to after
     * it stops; if rank 0 cannot make them, every rank stops here together */
    tsr_status st = TSR_OK;
    if (g_rank == 0 && o->metrics_port > 0)
        st = tsr_metrics_create(&s.metrics);
    tsr_metrics *metrics = s.metrics;
    if (tsr_comm_agree(grid->world, st) != TSR_OK)
        return g_rank == 0 ? fail(st) : 1;
    int ctx = o->have_ctx ? o->ctx : 2048;
    st = session_open(&s, grid, o, ctx);
    if (st != TSR_OK) {
        int rc = fail_open(&s, st);
        session_free(&s);
        tsr_metrics_free(metrics);
        if (g_rank == 0)
            tsr_request_queue_free(&g_queue);
        return rc;
    }
    if (g_rank != 0)
        return run_worker(&s);

    tsr_scheduler_t *sched = NULL;
    tsr_sched_config sc = {o->max_batch_tokens, 0.05, metrics, o->model, o->host_sampling};
    st = tsr_scheduler_create(&s.engine, s.tok, &g_queue, &g_stats, &sc, &sched);
    if (st != TSR_OK) {
        int rc = fail(st);
        session_free(&s);
        tsr_metrics_free(metrics);
        tsr_request_queue_free(&g_queue);
        return rc;
    }
    atomic_store(&g_stats.ready, 1);
    if (metrics)
        tsr_metric_set(metrics->up, 1); /* /healthz: 200 */
    fprintf(stderr,
            "tessera: ready (tp=%d pp=%d, %d sequences x %d positions, %d KV blocks of %d; %s, "
            "%s activations, %s between ranks)\n",
            o->tp, o->pp, s.engine.cfg.max_seqs, s.engine.kv.max_ctx, s.engine.kv.n_blocks,
            s.engine.kv.block_size, s.engine.be->iface->name,
            tsr_dtype_name(s.engine.be->iface->act_dtype), tsr_comm_kind_name(o->comm));
    while (!g_signal && st == TSR_OK)
        st = tsr_scheduler_iterate(sched);
    if (st != TSR_OK) {
        /* an engine failure: peers may be mid-step; health goes NOT_SERVING
         * and the job ends */
        atomic_store(&g_stats.engine_failed, 1);
        if (metrics)
            tsr_metric_set(metrics->up, 0);
        fail(st);
        tsr_comm_abort(grid, 1, "engine step failed while serving");
    }
    /* graceful shutdown: no new calls, in-flight ones get the grace period */
    fprintf(stderr, "tessera: %s: draining %d requests (grace %.0f s)\n",
            g_signal == SIGINT ? "SIGINT" : "SIGTERM", tsr_scheduler_pending(sched), o->grace_s);
    tsr_grpc_server_stop_accepting(s.server);
    if (metrics)
        tsr_metric_set(metrics->up, 0); /* /healthz: 503, as gRPC health turns NOT_SERVING */
    tsr_request_queue_close(&g_queue);
    double until = tsr_now_s() + o->grace_s;
    while (st == TSR_OK && tsr_scheduler_pending(sched) > 0 && tsr_now_s() < until)
        st = tsr_scheduler_iterate(sched);
    tsr_scheduler_cancel_all(sched);
    if (st == TSR_OK)
        st = tsr_scheduler_iterate(sched); /* releases the cancelled slots */
    /* let the front end deliver the last events before it is torn down */
    double flush_until = tsr_now_s() + 2.0;
    while (tsr_grpc_server_active_calls(s.server) > 0 && tsr_now_s() < flush_until) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    tsr_scheduler_free(sched);
    session_free(&s); /* stops the engine on every rank, then the servers */
    tsr_metrics_free(metrics);
    tsr_request_queue_free(&g_queue);
    fprintf(stderr, "tessera: stopped\n");
    return st == TSR_OK ? 0 : 1;
}

/* ---- train ----
 * LoRA training inside the MPI job, on any tp x pp layout: rank 0 reads and
 * tokenizes the JSONL file and drives the engine's training operations
 * (runtime/engine/engine.h), which carry each batch to the other ranks; the
 * adapter is gathered whole to rank 0 and saved as a PEFT directory. */

/* After a phase every rank ran on its own: all ranks learn whether all
 * succeeded. 0 when they did; otherwise the exit status (the failing rank
 * reports; the others stay quiet). */
static int train_agree(tsr_comm_grid *g, tsr_status st) {
    tsr_status all = tsr_comm_agree(g->world, st);
    if (st != TSR_OK)
        return fail(st);
    if (all != TSR_OK)
        return all == TSR_ERR_INVALID || all == TSR_ERR_RANGE ? 2 : 1;
    return 0;
}

/* Whether tsr_peft_save will be able to put an adapter at `dir`: its parent
 * exists and is writable, and an existing `dir` is a directory of regular
 * files that is empty or holds adapter_config.json. */
static tsr_status check_out_dir(const char *dir) {
    char parent[4096];
    if (!dir[0] || strlen(dir) >= sizeof parent)
        return tsr_error_set(TSR_ERR_INVALID, "--out: bad path '%s'", dir);
    snprintf(parent, sizeof parent, "%s", dir);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/')
        parent[--n] = '\0';
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    if (access(parent, W_OK | X_OK) != 0)
        return tsr_error_set(TSR_ERR_IO, "--out %s: cannot write in '%s': %s", dir, parent,
                             strerror(errno));
    struct stat sb;
    if (lstat(dir, &sb) != 0)
        return errno == ENOENT ? TSR_OK
                               : tsr_error_set(TSR_ERR_IO, "--out %s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return tsr_error_set(TSR_ERR_INVALID,
                             "--out %s exists and is not a directory (it would not be replaced)",
                             dir);
    DIR *d = opendir(dir);
    if (!d)
        return tsr_error_set(TSR_ERR_IO, "--out %s: %s", dir, strerror(errno));
    int entries = 0, has_config = 0, other = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        entries++;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat es;
        if (lstat(p, &es) != 0 || !S_ISREG(es.st_mode))
            other = 1;
        if (!strcmp(e->d_name, "adapter_config.json"))
            has_config = 1;
    }
    closedir(d);
    if (other || (entries && !has_config))
        return tsr_error_set(TSR_ERR_INVALID,
                             "--out %s exists and is not an adapter directory (it is replaced only "
                             "when empty or holding an adapter_config.json and plain files)",
                             dir);
    return TSR_OK;
}

/* The order of epoch `epoch`: a Fisher-Yates shuffle from splitmix64 seeded
 * with seed and the epoch, the same on every rank. */
static void shuffle_epoch(int *perm, int n, uint64_t seed, int epoch) {
    uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(epoch + 1));
    for (int i = 0; i < n; i++)
        perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(tsr_splitmix64(&s) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

typedef struct {
    double loss, grad_norm;
    long tokens;
} step_log;

/* Rank 0 of tessera train: the loop over steps through the engine, then the
 * adapter gathered and saved. The other ranks run the engine's operations
 * (run_worker). Returns the exit status. */
static int train_loop(session *s, const options *o, const tsr_lora_config *lc,
                      const tsr_train_data *data) {
    tsr_engine *e = &s->engine;
    const tsr_model_config *mc = &e->mcfg;
    const int n_ex = data->n_examples, B = o->batch_size;
    const int per_epoch = (n_ex + B - 1) / B;
    const int total = o->steps ? o->steps : (o->epochs ? o->epochs : 1) * per_epoch;
    size_t max_tok = 0;
    for (int i = 0; i < n_ex; i++)
        max_tok += (size_t)(data->start[i + 1] - data->start[i]);
    int *perm = malloc((size_t)n_ex * sizeof *perm);
    int32_t *bstart = malloc(((size_t)B + 1) * sizeof *bstart);
    int32_t *btok = malloc((max_tok + 1) * sizeof *btok);
    float *bweight = malloc((max_tok + 1) * sizeof *bweight);
    step_log *logs = calloc((size_t)total, sizeof *logs);
    tsr_peft_adapter pa = {0};
    int rc = 0;
    tsr_status st = perm && bstart && btok && bweight && logs
                        ? TSR_OK
                        : tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    if (st == TSR_OK)
        st = tsr_engine_adapter_create(e, 0, lc);
    if (st != TSR_OK) {
        rc = fail(st);
        goto done;
    }
    fprintf(stderr,
            "tessera train: %d steps of %d examples (%d per epoch), LoRA r=%d alpha=%g "
            "targets=%s dropout %g, lr %g, tp=%d pp=%d on %s (%s activations)\n",
            total, B, per_epoch, lc->rank, (double)lc->alpha, o->targets, (double)lc->dropout,
            (double)o->lr, o->tp, o->pp, e->be->iface->name,
            tsr_dtype_name(e->be->iface->act_dtype));
    tsr_optim_params op = {{o->lr, 0.9f, 0.999f, o->adam_eps, o->weight_decay}, o->max_grad_norm};
    int epoch = 0, pos = 0;
    shuffle_epoch(perm, n_ex, o->sp.seed, epoch);
    for (int k = 0; k < total; k++) {
        if (pos >= n_ex) {
            shuffle_epoch(perm, n_ex, o->sp.seed, ++epoch);
            pos = 0;
        }
        int nb = n_ex - pos < B ? n_ex - pos : B, n_tok = 0;
        bstart[0] = 0;
        for (int i = 0; i < nb; i++) {
            int ex = perm[pos + i], a = data->start[ex], len = data->start[ex + 1] - a;
            memcpy(btok + n_tok, data->tokens + a, (size_t)len * sizeof *btok);
            /* weight[j] is for predicting token j+1 */
            for (int j = 0; j < len; j++)
                bweight[n_tok + j] = j + 1 < len ? (float)data->target[a + j + 1] : 0.0f;
            n_tok += len;
            bstart[i + 1] = n_tok;
        }
        pos += nb;
        tsr_train_batch b = {.n_seqs = nb, .seq_start = bstart, .tokens = btok, .weights = bweight};
        double ts = tsr_now_s();
        tsr_optim_result res = {0};
        st = tsr_engine_train_batch(e, 0, &b, 1, NULL);
        if (st == TSR_OK)
            st = tsr_engine_optim_step(e, 0, &op, &res);
        if (st == TSR_ERR_COMM || st == TSR_ERR_INTERNAL || st == TSR_ERR_BACKEND) {
            fail(st);
            tsr_comm_abort(s->grid, 1, "a training step failed");
        }
        if (st != TSR_OK) {
            /* refused on every rank alike (a non-finite loss or norm): the
             * adapter keeps its last good state, and nothing is saved */
            fprintf(stderr, "tessera train: step %d/%d failed: %s; stopping without saving the "
                            "adapter\n",
                    k + 1, total, tsr_error_msg());
            rc = 1;
            goto done;
        }
        double dt = tsr_now_s() - ts;
        logs[k] = (step_log){res.loss, res.grad_norm, n_tok};
        printf("step %d/%d  loss %.4f  grad_norm %.3f  tokens %d  tok/s %.1f\n", k + 1, total,
               res.loss, res.grad_norm, n_tok, dt > 0 ? n_tok / dt : 0.0);
        fflush(stdout);
    }
    st = tsr_engine_adapter_gather(e, 0, &pa);
    if (st == TSR_ERR_COMM) {
        fail(st);
        tsr_comm_abort(s->grid, 1, "gathering the adapter failed");
    }
    if (st == TSR_OK) {
        snprintf(pa.base_model, sizeof pa.base_model, "%s", o->model);
        st = tsr_peft_save(o->out, &pa, mc);
    }
    /* loss.csv after the save: the save replaces the directory */
    if (st == TSR_OK) {
        char p[4200];
        snprintf(p, sizeof p, "%s/loss.csv", o->out);
        FILE *f = fopen(p, "w");
        if (!f) {
            st = tsr_error_set(TSR_ERR_IO, "cannot write '%s': %s", p, strerror(errno));
        } else {
            fprintf(f, "step,loss,grad_norm,tokens\n");
            for (int k = 0; k < total; k++)
                fprintf(f, "%d,%.6f,%.6f,%ld\n", k + 1, logs[k].loss, logs[k].grad_norm,
                        logs[k].tokens);
            if (fclose(f))
                st = tsr_error_set(TSR_ERR_IO, "cannot write '%s': %s", p, strerror(errno));
        }
    }
    if (st == TSR_OK)
        fprintf(stderr, "tessera train: saved the adapter (%d steps) in %s, peak RSS %.0f MiB\n",
                total, o->out, peak_rss_kb() / 1024.0);
    else
        rc = fail(st);
done:
    tsr_peft_free(&pa);
    free(logs);
    free(bweight);
    free(btok);
    free(bstart);
    free(perm);
    return rc;
}

/* tessera train: every rank builds the engine (its shard, a one-position
 * KV cache it never uses); rank 0 reads and tokenizes the data and drives
 * the steps, which the engine broadcasts to the others. */
static int cmd_train(tsr_comm_grid *grid, const options *o) {
    session s = {0};
    tsr_train_data data = {0};
    int rc = 0;
    const int ctx = o->have_ctx ? o->ctx : 512;
    tsr_lora_config lc = TSR_LORA_CONFIG_INIT;
    lc.rank = o->lora_rank;
    lc.alpha = o->alpha;
    lc.seed = o->sp.seed;
    lc.dropout = o->dropout;
    tsr_status st = tsr_lora_parse_targets(o->targets, &lc.targets);
    if (st == TSR_OK)
        st = tsr_lora_config_check(&lc);
    if (st == TSR_OK && g_rank == 0)
        st = check_out_dir(o->out);
    if ((rc = train_agree(grid, st)))
        return rc;

    /* the model file everywhere, the tokenizer and the data on rank 0 */
    st = session_open(&s, grid, o, 0);
    if (st != TSR_OK) {
        rc = fail_open(&s, st);
        goto cleanup;
    }
    double t0 = tsr_now_s();
    st = TSR_OK;
    if (g_rank == 0)
        st = tsr_train_data_load(o->data, s.tok, ctx, &data);
    if ((rc = train_agree(grid, st)))
        goto cleanup;
    if (g_rank == 0)
        fprintf(stderr, "tessera train: %d examples, %d tokens (%ld carry loss) from %s in %.2f s\n",
                data.n_examples, data.start[data.n_examples], data.n_target, o->data,
                tsr_now_s() - t0);
    session_free(&s);
    st = session_open(&s, grid, o, 1); /* the engine: one position of KV cache */
    if (st != TSR_OK) {
        rc = fail_open(&s, st);
        goto cleanup;
    }
    if (g_rank != 0) {
        tsr_train_data_free(&data);
        return run_worker(&s);
    }
    rc = train_loop(&s, o, &lc, &data);
cleanup:
    tsr_train_data_free(&data);
    session_free(&s);
    return rc;
}

/* ---- merge-lora ---------------------------------------------------------- */

static void merge_usage(FILE *f) {
    fputs("usage: tessera merge-lora --model M --adapter DIR --out OUTDIR [--dtype f32|bf16]\n"
          "\n"
          "Folds the PEFT LoRA adapter DIR into the weights of M (a .gguf file or a Hugging\n"
          "Face directory) and writes OUTDIR, a Hugging Face directory (config.json,\n"
          "model.safetensors, tokenizer files) that `tessera generate --model OUTDIR` runs\n"
          "like `--model M --adapter DIR`. Each adapted weight becomes W + scaling * B A.\n"
          "OUTDIR must not exist (or be empty); it appears complete or not at all.\n"
          "\n"
          "  --dtype f32|bf16   weight type in model.safetensors (default f32)\n"
          "\n"
          "One process (no mpirun). Exit status: 0 written; 1 a failure; 2 bad usage.\n",
          f);
}

/* Runs before MPI is set up: the merge is a single-process file conversion.
 * Under mpirun with more than one rank it refuses (every rank exits 2). */
static int cmd_merge_lora(int argc, char **argv) {
    static const struct option lo[] = {{"model", required_argument, 0, 'm'},
                                       {"adapter", required_argument, 0, 'a'},
                                       {"out", required_argument, 0, 'o'},
                                       {"dtype", required_argument, 0, 'd'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *model = NULL, *adapter = NULL, *out = NULL;
    tsr_merge_dtype dtype = TSR_MERGE_F32;
    optind = 2;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":", lo, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'a': adapter = optarg; break;
        case 'o': out = optarg; break;
        case 'd':
            if (!strcmp(optarg, "f32"))
                dtype = TSR_MERGE_F32;
            else if (!strcmp(optarg, "bf16"))
                dtype = TSR_MERGE_BF16;
            else {
                fprintf(stderr, "tessera merge-lora: --dtype must be f32 or bf16, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'h': merge_usage(stdout); return 0;
        case ':':
            fprintf(stderr, "tessera merge-lora: %s needs a value\n", argv[optind - 1]);
            merge_usage(stderr);
            return 2;
        default:
            fprintf(stderr, "tessera merge-lora: unknown option '%s'\n", argv[optind - 1]);
            merge_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tessera merge-lora: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model || !adapter || !out) {
        fprintf(stderr, "tessera merge-lora: --model, --adapter and --out are required\n");
        merge_usage(stderr);
        return 2;
    }
    /* mpirun sets one of these in every rank it starts. */
    static const char *const size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                            "MPI_LOCALNRANKS", NULL};
    for (const char *const *v = size_vars; *v; v++) {
        const char *e = getenv(*v);
        if (e && atoi(e) > 1) {
            const char *r = getenv("OMPI_COMM_WORLD_RANK");
            if (!r || atoi(r) == 0)
                fprintf(stderr, "tessera merge-lora: runs as one process; do not start it "
                                "under mpirun with more than one rank (%s=%s)\n",
                        *v, e);
            return 2;
        }
    }
    tsr_log_init(TSR_LOG_WARN, 0, 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tsr_status st = tsr_merge_lora(model, adapter, out, dtype);
    if (st != TSR_OK) {
        fprintf(stderr, "tessera merge-lora: error: %s\n",
                tsr_error_msg()[0] ? tsr_error_msg() : tsr_status_str(st));
        return st == TSR_ERR_INVALID || st == TSR_ERR_RANGE ? 2 : 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "tessera merge-lora: wrote %s (%s) in %.1f s\n", out,
            dtype == TSR_MERGE_BF16 ? "bf16" : "f32",
            (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "merge-lora"))
        return cmd_merge_lora(argc, argv);
    if (strcmp(cmd, "generate") && strcmp(cmd, "tokenize") && strcmp(cmd, "perplexity") &&
        strcmp(cmd, "serve") && strcmp(cmd, "train")) {
        PERR("tessera: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    if (tsr_comm_mpi_init(&argc, &argv, &g_rank, &g_world) != TSR_OK) {
        PERR("tessera: %s\n", tsr_error_msg());
        return 1;
    }
    options o = {0};
    int rc = 2;
    tsr_comm_grid grid;
    int have_grid = 0;
    if (parse_options(argc, argv, &o))
        goto done;
    /* Rank 0 speaks for the job; the others only log with --verbose. */
    tsr_log_init(o.verbose ? TSR_LOG_INFO : (g_rank == 0 ? TSR_LOG_WARN : TSR_LOG_ERROR), g_rank,
                 g_world);
    if (o.tp * o.pp != g_world && strcmp(cmd, "tokenize")) {
        PERR("tessera: --tp %d x --pp %d needs %d ranks, the job has %d (mpirun -np %d)\n", o.tp,
             o.pp, o.tp * o.pp, g_world, o.tp * o.pp);
        goto done;
    }
    const int engine_cmd = strcmp(cmd, "tokenize") != 0; /* tokenize needs no device */
    tsr_comm_grid_config gc = TSR_COMM_GRID_CONFIG_INIT;
    gc.tp = engine_cmd ? o.tp : 1;
    gc.pp = engine_cmd ? o.pp : 1;
    gc.kind = engine_cmd ? o.comm : TSR_COMM_MPI;
    tsr_engine_config dev = TSR_ENGINE_CONFIG_INIT;
    device_config(&o, &dev);
    tsr_status st = TSR_OK;
    /* What this build cannot do is the same on every rank: rank 0 says it. */
    if (engine_cmd && (st = tsr_engine_config_check(&dev, gc.kind)) != TSR_OK) {
        PERR("tessera: error: %s\n", tsr_error_msg());
        goto done;
    }
    /* NCCL's groups are built on the GPU: choose it first, so a host without
     * one is named (by its rank) instead of failing inside NCCL. Every rank
     * gets the same status and leaves. */
    if (gc.kind == TSR_COMM_NCCL) {
        st = tsr_engine_device_probe(&dev, gc.kind);
        if (st != TSR_OK) {
            if (strstr(tsr_error_msg(), "another rank failed") && g_rank != 0)
                rc = st == TSR_ERR_INVALID || st == TSR_ERR_RANGE ? 2 : 1; /* it reported */
            else
                rc = fail(st);
            goto done;
        }
        gc.device = dev.gpu;
        o.gpu = dev.gpu;
    }
    st = tsr_comm_grid_init(&grid, &gc);
    if (st != TSR_OK) {
        if (gc.kind == TSR_COMM_NCCL && g_world > 1) {
            /* a rank that failed inside ncclCommInitRank may have left its
             * peers in it (docs/comm.md): end the job */
            fail(st);
            tsr_comm_abort(NULL, 1, "building the NCCL groups failed");
        }
        PERR("tessera: %s\n", tsr_error_msg());
        goto done;
    }
    have_grid = 1;
    if (!strcmp(cmd, "generate"))
        rc = cmd_generate(&grid, &o);
    else if (!strcmp(cmd, "tokenize"))
        rc = cmd_tokenize(&grid, &o);
    else if (!strcmp(cmd, "serve"))
        rc = cmd_serve(&grid, &o);
    else if (!strcmp(cmd, "train"))
        rc = cmd_train(&grid, &o);
    else
        rc = cmd_perplexity(&grid, &o);
done:
    if (have_grid)
        tsr_comm_grid_free(&grid);
    tsr_comm_mpi_finalize();
    return rc;
}
