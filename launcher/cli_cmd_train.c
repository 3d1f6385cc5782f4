/* launcher/cli_cmd_train.c - `tessera-cli train`: a LoRA adapter trained on
 * the server from a local JSONL file (docs/cli.md, "train"). It checks the
 * data file and --out first (cli_train.h), creates the adapter or finds it
 * again (--resume), runs ForwardBackward and OptimStep once per step in
 * `tessera train`'s example order, shows progress, and saves the adapter's
 * files, loss.csv and loss.png into --out with SaveAdapter's answer. The
 * first Ctrl-C stops after the step in flight and saves.
 *
 * What it is not: the local file work (cli_train.c: data file, shuffle and
 * step plan, --out check and atomic write, loss.csv) or the plot
 * (cli_plot.c); no training happens here, only calls. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/train/loss_csv.h"
#include "base/clock.h"
#include "launcher/cli_cmd.h"
#include "launcher/cli_parse.h"
#include "launcher/cli_plot.h"
#include "launcher/cli_train.h"
#include "runtime/train/epoch.h"
#include "tessera/v1/tessera.pb-c.h"

/* The flags of train, checked. targets points into a malloc'd copy of
 * --targets (train_opts_free). */
typedef struct {
    const char *data, *adapter, *out;
    int steps, epochs, batch;
    int32_t rank;
    float lr, alpha, max_grad_norm, weight_decay, dropout, adam_eps; /* adam_eps 0: 1e-8 */
    uint64_t seed;
    char *targets_buf;
    char *targets[16];
    size_t n_targets;
    int resume;
} train_opts;

static void train_opts_free(train_opts *o) { free(o->targets_buf); }

/* Fills *o from the flags with tessera train's defaults. 0 or EXIT_USAGE. */
static int train_parse(const cli_args *a, train_opts *o) {
    memset(o, 0, sizeof *o);
    o->data = a->val[O_DATA];
    o->adapter = a->val[O_ADAPTER];
    o->out = a->val[O_OUT];
    if (!o->data || !o->adapter || !o->out)
        return cli_usage_error("train needs --data FILE.jsonl, --adapter NAME and --out DIR");
    if (!o->adapter[0])
        return cli_usage_error("--adapter is empty: name the adapter");
    o->epochs = 1;
    o->batch = 8;
    o->rank = 8;
    o->lr = 1e-4f;
    o->alpha = 16.0f;
    o->max_grad_norm = 1.0f;
    o->resume = a->val[O_RESUME] != NULL;
    int rc;
    if ((rc = cli_opt_i32(a, O_STEPS, &o->steps)) || (rc = cli_opt_i32(a, O_EPOCHS, &o->epochs)) ||
        (rc = cli_opt_i32(a, O_BATCH_SIZE, &o->batch)) || (rc = cli_opt_i32(a, O_RANK, &o->rank)) ||
        (rc = cli_opt_f32(a, O_LR, &o->lr)) || (rc = cli_opt_f32(a, O_ALPHA, &o->alpha)) ||
        (rc = cli_opt_f32(a, O_MAX_GRAD_NORM, &o->max_grad_norm)) ||
        (rc = cli_opt_f32(a, O_WEIGHT_DECAY, &o->weight_decay)) ||
        (rc = cli_opt_f32(a, O_ADAM_EPS, &o->adam_eps)) ||
        (rc = cli_opt_f32(a, O_DROPOUT, &o->dropout)))
        return rc;
    /* Where the protocol reads 0 as "the default", the client refuses it
     * rather than send a value the server would silently replace. */
    static const struct {
        opt_id id;
        const char *what;
    } positive[] = {{O_STEPS, "a number of steps >= 1"},
                    {O_EPOCHS, "a number of epochs >= 1"},
                    {O_BATCH_SIZE, "examples per step, >= 1"},
                    {O_RANK, "a LoRA rank >= 1"},
                    {O_LR, "a learning rate > 0"},
                    {O_ALPHA, "a LoRA alpha > 0"},
                    {O_ADAM_EPS, "an AdamW epsilon > 0"}};
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++) {
        opt_id id = positive[i].id;
        double v = id == O_STEPS        ? o->steps
                   : id == O_EPOCHS     ? o->epochs
                   : id == O_BATCH_SIZE ? o->batch
                   : id == O_RANK       ? o->rank
                   : id == O_LR         ? (double)o->lr
                   : id == O_ALPHA      ? (double)o->alpha
                                        : (double)o->adam_eps;
        if (a->val[id] && !(v > 0))
            return cli_usage_error("--%s expects %s, got '%s'", cli_option_name(id),
                                   positive[i].what, a->val[id]);
    }
    if (a->val[O_SEED] && tsr_opt_parse_u64(a->val[O_SEED], &o->seed) != 0)
        return cli_usage_error("--seed expects an unsigned integer, got '%s'", a->val[O_SEED]);
    const char *targets = a->val[O_TARGETS] ? a->val[O_TARGETS] : "q,v";
    if (!(o->targets_buf = strdup(targets))) {
        fputs("tessera-cli: out of memory\n", stderr);
        return EXIT_FAIL;
    }
    for (char *p = o->targets_buf;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        while (*p == ' ')
            p++;
        tsr_cli_rstrip(p);
        if (!*p || o->n_targets == sizeof o->targets / sizeof o->targets[0])
            return cli_usage_error("--targets expects modules separated by commas "
                                   "(q,k,v,o,gate,up,down or all), got '%s'",
                                   targets);
        o->targets[o->n_targets++] = p;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* The bit of a target module name (short or PEFT's "*_proj"), 0x7f for
 * "all", 0 for a name the client does not know. */
static unsigned target_bits(const char *name) {
    static const char *const names[] = {"q", "k", "v", "o", "gate", "up", "down"};
    if (!strcmp(name, "all"))
        return 0x7fu;
    size_t n = strlen(name);
    if (n > 5 && !strcmp(name + n - 5, "_proj"))
        n -= 5;
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == n && !strncmp(name, names[i], n))
            return 1u << i;
    return 0;
}

/* The progress line on stderr: rewritten in place on a terminal, one line
 * per step otherwise. */
typedef struct {
    int tty;
    int open; /* a line without its newline is on the terminal */
} progress_line;

static void progress_show(progress_line *p, int k, int total, double loss, double grad_norm,
                          double tok_s) {
    enum { BAR = 24 };
    char bar[BAR + 1];
    int filled = total > 0 ? (int)((long long)k * BAR / total) : BAR;
    for (int i = 0; i < BAR; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[BAR] = '\0';
    fprintf(stderr, "%stessera-cli: [%s] step %d/%d  loss %.4f  grad_norm %.3f  tok/s %.1f%s",
            p->tty ? "\r" : "", bar, k, total, loss, grad_norm, tok_s, p->tty ? "\033[K" : "\n");
    fflush(stderr);
    p->open = p->tty;
}

/* Ends a progress line left open on the terminal, before another message. */
static void progress_end(progress_line *p) {
    if (p->open)
        fputc('\n', stderr);
    p->open = 0;
}

/* The adapter named `name` in a ListAdapters answer, or NULL. */
static const Tessera__V1__AdapterInfo *find_adapter(const Tessera__V1__ListAdaptersResponse *l,
                                                    const char *name) {
    for (size_t i = 0; l && i < l->n_adapters; i++)
        if (!strcmp(l->adapters[i]->name, name))
            return l->adapters[i];
    return NULL;
}

static tsr_status list_adapters(const cli_ctx *cx, Tessera__V1__ListAdaptersResponse **out,
                                tsr_cli_status *st) {
    Tessera__V1__ListAdaptersRequest req = TESSERA__V1__LIST_ADAPTERS_REQUEST__INIT;
    return tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/ListAdapters", &req.base,
                              &tessera__v1__list_adapters_response__descriptor,
                              (ProtobufCMessage **)out, st);
}

/* Warns about each flag given on the command line that the resumed adapter
 * does not have: --resume keeps the adapter's own config. */
static void resume_warn_config(const cli_args *a, const train_opts *o,
                               const Tessera__V1__AdapterInfo *info) {
    const Tessera__V1__LoraConfig *c = info->config;
    if (!c)
        return;
    if (a->val[O_RANK] && c->rank != o->rank)
        fprintf(stderr, "tessera-cli: warning: adapter '%s' has rank %d; --rank %d is ignored\n",
                info->name, c->rank, o->rank);
    if (a->val[O_ALPHA] && c->alpha != o->alpha)
        fprintf(stderr, "tessera-cli: warning: adapter '%s' has alpha %g; --alpha %g is ignored\n",
                info->name, (double)c->alpha, (double)o->alpha);
    if (a->val[O_DROPOUT] && c->dropout != o->dropout)
        fprintf(stderr,
                "tessera-cli: warning: adapter '%s' has dropout %g; --dropout %g is ignored\n",
                info->name, (double)c->dropout, (double)o->dropout);
    if (a->val[O_TARGETS]) {
        unsigned want = 0, have = 0;
        for (size_t i = 0; i < o->n_targets; i++)
            want |= target_bits(o->targets[i]);
        for (size_t i = 0; i < c->n_target_modules; i++)
            have |= target_bits(c->target_modules[i]);
        if (want != have) {
            fprintf(stderr, "tessera-cli: warning: adapter '%s' targets ", info->name);
            for (size_t i = 0; i < c->n_target_modules; i++)
                fprintf(stderr, "%s%s", i ? "," : "", c->target_modules[i]);
            fprintf(stderr, "; --targets %s is ignored\n", a->val[O_TARGETS]);
        }
    }
}

/* The server's per-call limits (runtime/server/grpc_api.h): a step of more
 * examples goes out in several ForwardBackward calls, whose gradients the
 * server accumulates until OptimStep, so the step is the same. */
enum { CLI_MAX_EXAMPLES_PER_CALL = 1024 };

/* The example a "more than N tokens (at example K)" refusal names: the call
 * must end before it. 1 with *k set, else 0. */
static int token_limit_split(const tsr_cli_status *st, int *k) {
    const char *p = st->code == GRPC_STATUS_INVALID_ARGUMENT
                        ? strstr(st->details, "tokens (at example ")
                        : NULL;
    return p && sscanf(p, "tokens (at example %d)", k) == 1;
}

/* ForwardBackward of a step's count examples in as few calls as the limits
 * allow: at most CLI_MAX_EXAMPLES_PER_CALL each, and a call the server
 * refuses for its token count is cut before the example it names. Adds the
 * calls' tokens to *n_tokens. TSR_OK, or the failed call's status with *st
 * saying why and *failed_first the index in batch of that call's first
 * example. */
static tsr_status forward_backward_step(const cli_ctx *cx, const char *adapter,
                                        Tessera__V1__TrainExample **batch, int count,
                                        long *n_tokens, tsr_cli_status *st, int *failed_first) {
    *n_tokens = 0;
    for (int first = 0; first < count;) {
        int n =
            count - first < CLI_MAX_EXAMPLES_PER_CALL ? count - first : CLI_MAX_EXAMPLES_PER_CALL;
        for (;;) {
            Tessera__V1__ForwardBackwardRequest req = TESSERA__V1__FORWARD_BACKWARD_REQUEST__INIT;
            req.adapter = (char *)adapter;
            req.n_examples = (size_t)n;
            req.examples = batch + first;
            Tessera__V1__ForwardBackwardResponse *r = NULL;
            tsr_status s = tsr_cli_call_unary(
                cx->conn, "/tessera.v1.Tessera/ForwardBackward", &req.base,
                &tessera__v1__forward_backward_response__descriptor, (ProtobufCMessage **)&r, st);
            if (s == TSR_OK) {
                *n_tokens += (long)r->n_tokens;
                protobuf_c_message_free_unpacked(&r->base, NULL);
                break;
            }
            int k;
            if (token_limit_split(st, &k) && k > 0 && k < n) {
                n = k; /* nothing of a refused call accumulated: send its head alone */
                continue;
            }
            *failed_first = first;
            return s;
        }
        first += n;
    }
    return TSR_OK;
}

/* After a ForwardBackward refused for "examples[k]...": which line of the
 * data file that example is. */
static void explain_example(const tsr_cli_status *st, const train_opts *o,
                            const tsr_cli_train_data *d, const int *batch_ex, int count) {
    const char *p = strstr(st->details, "examples[");
    int k;
    if (p && sscanf(p, "examples[%d]", &k) == 1 && k >= 0 && k < count)
        fprintf(stderr, "tessera-cli: examples[%d] of that batch is %s:%d\n", k, o->data,
                d->ex[batch_ex[k]].line);
}

/* SaveAdapter with return_files, then DIR written with the adapter's two
 * files, loss.csv and loss.png. Returns 0 or the exit code (reported). */
static int train_save(const cli_ctx *cx, const train_opts *o, const tsr_loss_row *log, size_t n_log,
                      int *saved_step) {
    Tessera__V1__SaveAdapterRequest req = TESSERA__V1__SAVE_ADAPTER_REQUEST__INIT;
    req.adapter = (char *)o->adapter;
    req.return_files = 1;
    Tessera__V1__SaveAdapterResponse *r = NULL;
    tsr_cli_status st;
    if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/SaveAdapter", &req.base,
                           &tessera__v1__save_adapter_response__descriptor, (ProtobufCMessage **)&r,
                           &st) != TSR_OK)
        return cli_report_failure(cx, "SaveAdapter", &st);
    int rc = EXIT_FAIL;
    char *csv = NULL;
    uint8_t *rgb = NULL, *png = NULL;
    double *xs = NULL, *ys = NULL;
    size_t csv_len = 0, png_len = 0;
    if (!r->adapter_config_json.len || !r->adapter_model_safetensors.len) {
        fprintf(stderr,
                "tessera-cli: SaveAdapter: the server sent no adapter files "
                "(adapter_config.json %zu bytes, adapter_model.safetensors %zu bytes)\n",
                r->adapter_config_json.len, r->adapter_model_safetensors.len);
        goto cleanup;
    }
    xs = malloc((n_log + 1) * sizeof *xs);
    ys = malloc((n_log + 1) * sizeof *ys);
    if (!xs || !ys || !(csv = tsr_loss_csv_format(log, n_log, &csv_len))) {
        fputs("tessera-cli: out of memory\n", stderr);
        goto cleanup;
    }
    for (size_t i = 0; i < n_log; i++) {
        xs[i] = log[i].step;
        ys[i] = log[i].loss;
    }
    tsr_cli_plot_opts po = {.width = 800,
                            .height = 480,
                            .title = "training loss",
                            .x_label = "step",
                            .y_label = "loss"};
    if (tsr_cli_plot_line(xs, ys, n_log, &po, &rgb) != 0 ||
        tsr_cli_png_encode(rgb, po.width, po.height, &png, &png_len) != 0) {
        fputs("tessera-cli: cannot draw loss.png (out of memory?)\n", stderr);
        goto cleanup;
    }
    const tsr_cli_out_file files[] = {
        {"adapter_config.json", r->adapter_config_json.data, r->adapter_config_json.len},
        {"adapter_model.safetensors", r->adapter_model_safetensors.data,
         r->adapter_model_safetensors.len},
        {"loss.csv", (const uint8_t *)csv, csv_len},
        {"loss.png", png, png_len},
    };
    if (tsr_cli_train_write_dir(o->out, files, sizeof files / sizeof files[0]) != TSR_OK) {
        fprintf(stderr, "tessera-cli: saving the adapter: %s\n", tsr_error_msg());
        goto cleanup;
    }
    *saved_step = r->step;
    rc = 0;
cleanup:
    free(png);
    free(rgb);
    free(csv);
    free(xs);
    free(ys);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

/* Rows of DIR/loss.csv from an earlier run, up to step `upto`, for a
 * resumed run to continue. Returns how many went into log (capacity cap). */
static size_t previous_log(const train_opts *o, int upto, tsr_loss_row *log, size_t cap) {
    char path[4200];
    snprintf(path, sizeof path, "%s/loss.csv", o->out);
    char *text = tsr_cli_read_file(path, NULL);
    if (!text)
        return 0;
    tsr_loss_row *rows = NULL;
    size_t n = 0, kept = 0;
    if (tsr_loss_csv_parse(text, &rows, &n) != 0)
        fprintf(stderr, "tessera-cli: warning: %s is not a loss.csv; starting a new one\n", path);
    for (size_t i = 0; i < n && kept < cap; i++)
        if (rows[i].step >= 1 && rows[i].step <= upto &&
            (kept == 0 || rows[i].step > log[kept - 1].step))
            log[kept++] = rows[i];
    free(rows);
    free(text);
    return kept;
}

int cli_cmd_train(const cli_ctx *cx, const cli_args *a) {
    train_opts o;
    int rc = train_parse(a, &o);
    if (rc) {
        train_opts_free(&o);
        return rc;
    }
    tsr_cli_train_data data = {0};
    Tessera__V1__AdapterInfo *created = NULL;
    Tessera__V1__ListAdaptersResponse *list = NULL;
    int *perm = NULL, *batch_ex = NULL;
    Tessera__V1__TrainExample **batch = NULL;
    tsr_loss_row *log = NULL;
    progress_line prog = {.tty = isatty(STDERR_FILENO)};
    tsr_cli_status st;

    /* Everything local first: a bad file or --out costs no call. */
    if (tsr_cli_train_data_load(o.data, &data) != TSR_OK) {
        fprintf(stderr, "tessera-cli: %s\n", tsr_error_msg());
        rc = EXIT_USAGE;
        goto cleanup;
    }
    int out_exists;
    if (tsr_cli_train_check_out_dir(o.out, &out_exists) != TSR_OK) {
        fprintf(stderr, "tessera-cli: %s\n", tsr_error_msg());
        rc = EXIT_USAGE;
        goto cleanup;
    }
    const int n_ex = (int)data.n;
    const int total = tsr_epoch_total_steps(n_ex, o.batch, o.steps, o.epochs);
    if (total <= 0) {
        rc = cli_usage_error("--epochs %d of %d examples is too many steps", o.epochs, n_ex);
        goto cleanup;
    }
    perm = malloc((size_t)n_ex * sizeof *perm);
    batch_ex = malloc((size_t)o.batch * sizeof *batch_ex);
    batch = malloc((size_t)o.batch * sizeof *batch);
    log = malloc(((size_t)total + 1) * sizeof *log);
    if (!perm || !batch_ex || !batch || !log) {
        fputs("tessera-cli: out of memory\n", stderr);
        rc = EXIT_FAIL;
        goto cleanup;
    }
    if (*cx->stop) {
        fputs("tessera-cli: interrupted before training started; nothing was created\n", stderr);
        rc = 128 + (int)*cx->stop;
        goto cleanup;
    }

    /* The adapter: a new one, or with --resume the one already there. */
    const Tessera__V1__AdapterInfo *info = NULL;
    if (o.resume) {
        if (list_adapters(cx, &list, &st) != TSR_OK) {
            rc = cli_report_failure(cx, "ListAdapters", &st);
            goto cleanup;
        }
        info = find_adapter(list, o.adapter);
        if (info)
            resume_warn_config(a, &o, info);
        else
            fprintf(stderr, "tessera-cli: no adapter '%s' on the server to resume; creating it\n",
                    o.adapter);
    }
    if (!info) {
        Tessera__V1__CreateAdapterRequest req = TESSERA__V1__CREATE_ADAPTER_REQUEST__INIT;
        Tessera__V1__LoraConfig cfg = TESSERA__V1__LORA_CONFIG__INIT;
        req.name = (char *)o.adapter;
        req.config = &cfg;
        cfg.rank = o.rank;
        cfg.alpha = o.alpha;
        cfg.n_target_modules = o.n_targets;
        cfg.target_modules = o.targets;
        cfg.dropout = o.dropout;
        cfg.seed = o.seed;
        if (tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/CreateAdapter", &req.base,
                               &tessera__v1__adapter_info__descriptor,
                               (ProtobufCMessage **)&created, &st) != TSR_OK) {
            rc = cli_report_failure(cx, "CreateAdapter", &st);
            if (st.code == GRPC_STATUS_ALREADY_EXISTS && !st.local_error && !*cx->signal) {
                Tessera__V1__ListAdaptersResponse *l = NULL;
                tsr_cli_status lst;
                const Tessera__V1__AdapterInfo *old =
                    list_adapters(cx, &l, &lst) == TSR_OK ? find_adapter(l, o.adapter) : NULL;
                char at[64] = "";
                if (old)
                    snprintf(at, sizeof at, " (it is at step %d)", old->step);
                fprintf(stderr,
                        "tessera-cli: the server already has an adapter '%s'%s: add --resume to "
                        "continue training it, or delete it (DeleteAdapter) to start afresh\n",
                        o.adapter, at);
                if (l)
                    protobuf_c_message_free_unpacked(&l->base, NULL);
            }
            goto cleanup;
        }
        info = created;
    }
    const int start = info->step > 0 ? info->step : 0;
    const Tessera__V1__LoraConfig *lc = info->config;
    if (info->pending_batches > 0)
        fprintf(stderr,
                "tessera-cli: warning: adapter '%s' has %d ForwardBackward batch(es) accumulated "
                "since its last step; they count in the next one\n",
                o.adapter, info->pending_batches);

    size_t n_log = 0;
    if (start > 0 && out_exists)
        n_log = previous_log(&o, start, log, (size_t)total + 1);
    const int per_epoch = (n_ex + o.batch - 1) / o.batch;
    if (created)
        fprintf(stderr, "tessera-cli: training new adapter '%s': %d step%s", o.adapter, total,
                total == 1 ? "" : "s");
    else
        fprintf(stderr, "tessera-cli: resuming adapter '%s' at step %d: steps %d..%d", o.adapter,
                start, start + 1, total);
    fprintf(stderr, " of %d examples (%d steps per epoch) from %s (%d examples)", o.batch,
            per_epoch, o.data, n_ex);
    if (lc) {
        fprintf(stderr, ", LoRA r=%d alpha=%g targets=", lc->rank, (double)lc->alpha);
        for (size_t i = 0; i < lc->n_target_modules; i++)
            fprintf(stderr, "%s%s", i ? "," : "", lc->target_modules[i]);
        fprintf(stderr, " dropout %g", (double)lc->dropout);
    }
    fprintf(stderr, ", lr %g\n", (double)o.lr);
    if (start >= total)
        fprintf(stderr,
                "tessera-cli: adapter '%s' is already at step %d of %d: nothing to "
                "train; saving it\n",
                o.adapter, start, total);

    /* The steps. */
    Tessera__V1__AdamWParams adamw = TESSERA__V1__ADAM_WPARAMS__INIT;
    adamw.lr = o.lr;
    adamw.weight_decay = o.weight_decay;
    adamw.eps = o.adam_eps;
    Tessera__V1__OptimStepRequest oreq = TESSERA__V1__OPTIM_STEP_REQUEST__INIT;
    oreq.adapter = (char *)o.adapter;
    oreq.adamw = &adamw;
    oreq.max_grad_norm = o.max_grad_norm;
    int shuffled_epoch = -1, k = start, warned_step = 0;
    for (; k < total && !*cx->stop; k++) {
        int epoch, first, count;
        tsr_epoch_step_batch(k, n_ex, o.batch, &epoch, &first, &count);
        if (epoch != shuffled_epoch) {
            tsr_epoch_shuffle(perm, n_ex, o.seed, epoch);
            shuffled_epoch = epoch;
        }
        for (int i = 0; i < count; i++) {
            batch_ex[i] = perm[first + i];
            batch[i] = &data.ex[batch_ex[i]].msg;
        }
        Tessera__V1__OptimStepResponse *os = NULL;
        double t0 = tsr_now_s();
        const char *what = "ForwardBackward";
        long n_tokens = 0;
        int failed_first = 0;
        int ok = forward_backward_step(cx, o.adapter, batch, count, &n_tokens, &st,
                                       &failed_first) == TSR_OK;
        const int fb_ok = ok;
        if (ok) {
            what = "OptimStep";
            ok = tsr_cli_call_unary(cx->conn, "/tessera.v1.Tessera/OptimStep", &oreq.base,
                                    &tessera__v1__optim_step_response__descriptor,
                                    (ProtobufCMessage **)&os, &st) == TSR_OK;
        }
        if (!ok) {
            progress_end(&prog);
            fprintf(stderr, "tessera-cli: step %d/%d: %s failed\n", k + 1, total, what);
            rc = cli_report_failure(cx, what, &st);
            if (!fb_ok)
                explain_example(&st, &o, &data, batch_ex + failed_first, count - failed_first);
            if (!*cx->signal)
                fprintf(stderr,
                        "tessera-cli: nothing was saved; adapter '%s' stays on the "
                        "server (--resume continues it)\n",
                        o.adapter);
            goto cleanup;
        }
        double dt = tsr_now_s() - t0, tok_s = dt > 0 ? (double)n_tokens / dt : 0.0;
        if (os->step != k + 1 && !warned_step) {
            progress_end(&prog);
            fprintf(stderr,
                    "tessera-cli: warning: the server counts step %d where this run is "
                    "at %d (is another client training '%s'?)\n",
                    os->step, k + 1, o.adapter);
            warned_step = 1;
        }
        log[n_log++] = (tsr_loss_row){k + 1, os->loss, os->grad_norm, n_tokens};
        printf("step %d/%d  loss %.4f  grad_norm %.3f  tokens %ld  tok/s %.1f\n", k + 1, total,
               os->loss, os->grad_norm, n_tokens, tok_s);
        fflush(stdout);
        progress_show(&prog, k + 1, total, os->loss, os->grad_norm, tok_s);
        protobuf_c_message_free_unpacked(&os->base, NULL);
    }
    progress_end(&prog);
    const int stopped = k < total; /* by a signal */
    if (stopped)
        fprintf(stderr,
                "tessera-cli: interrupted after step %d of %d; saving the adapter "
                "(Ctrl-C again to abandon the save)\n",
                k, total);

    int saved_step = 0;
    if ((rc = train_save(cx, &o, log, n_log, &saved_step)))
        goto cleanup;
    fprintf(stderr,
            "tessera-cli: saved adapter '%s' (step %d) in %s: adapter_config.json, "
            "adapter_model.safetensors, loss.csv, loss.png\n",
            o.adapter, saved_step, o.out);
    if (stopped) {
        fprintf(stderr, "tessera-cli: training stopped at step %d of %d; --resume continues it\n",
                k, total);
        rc = 128 + (int)*cx->stop;
    }
cleanup:
    progress_end(&prog);
    if (created)
        protobuf_c_message_free_unpacked(&created->base, NULL);
    if (list)
        protobuf_c_message_free_unpacked(&list->base, NULL);
    free(log);
    free(batch);
    free(batch_ex);
    free(perm);
    tsr_cli_train_data_free(&data);
    train_opts_free(&o);
    return rc;
}
