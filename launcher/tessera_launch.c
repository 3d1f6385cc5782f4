/* launcher/tessera_launch.c - the `tessera-launch` program: one safe command
 * that starts a Tessera job under mpirun, or under srun inside a Slurm
 * allocation.
 *
 *   tessera-launch [--config FILE] [--model M] [--tp T] [--pp P] [--hosts h:n,... | --hostfile F]
 *                  [--np N] [--env NAME[=VALUE]]... [--mpirun PATH] [--dry-run]
 *                  serve|generate|perplexity|train [that command's flags]
 *
 * It reads the config (launch_config.h), lets the flags override it, checks
 * the layout against the model with the shard plan the runtime uses (same
 * messages), checks tp x pp against --np, the hosts' slots or the Slurm
 * allocation, and only then starts anything (launch_cmd.h builds the command,
 * launch_run.h runs it and stops it cleanly on a signal). docs/launcher.md
 * is the user's guide.
 *
 * Exit codes: the job's own (0 also after a clean stop); 2 bad flags or a
 * bad config, refused before anything started; 128 + signal when a stop
 * signal did not end the job cleanly or it was killed; 127 the runner could
 * not be started. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launcher/launch_cmd.h"
#include "launcher/launch_config.h"
#include "launcher/launch_run.h"
#include "shard/model_file.h"
#include "shard/plan.h"

extern char **environ;

#ifndef TSR_LAUNCH_VERSION
#define TSR_LAUNCH_VERSION "0"
#endif

static void usage(FILE *f) {
    fputs("usage: tessera-launch [options] serve|generate|perplexity|train [command flags]\n"
          "\n"
          "Starts a Tessera job: mpirun (or srun inside a Slurm allocation) with tp x pp ranks\n"
          "of `tessera COMMAND`, after checking the layout against the model.\n"
          "\n"
          "options (also accepted after the command):\n"
          "  --config FILE          YAML config (docs/launcher.md); flags override it\n"
          "  --model M              GGUF file or Hugging Face directory\n"
          "  --tp T --pp P          tensor / pipeline parallel degrees (default 1)\n"
          "  --pp-layers A,B,...    layers per pipeline stage\n"
          "  --hosts h1:n1,h2:n2    hosts and their slots (mpirun --host)\n"
          "  --hostfile F           an Open MPI hostfile\n"
          "  --np N                 the number of ranks you expect: must equal tp x pp\n"
          "  --env NAME[=VALUE]     forward a variable to the ranks (repeatable; PREFIX* too);\n"
          "                         NCCL_* and CUDA_VISIBLE_DEVICES are always forwarded\n"
          "  --oversubscribe        allow more ranks than slots (binds to none)\n"
          "  --bind-to X            mpirun --bind-to (default core, none when oversubscribed)\n"
          "  --cpus-per-rank N      mpirun --map-by slot:PE=N\n"
          "  --runner auto|mpirun|srun   (auto: srun --mpi=pmix inside Slurm, else mpirun)\n"
          "  --mpirun PATH  --srun PATH  --tessera PATH\n"
          "  --mpi-arg ARG          an extra mpirun argument (repeatable)\n"
          "  --stop-timeout S       after SIGINT/SIGTERM, seconds before the job is killed\n"
          "                         (default: serve's --grace + 15, else 10)\n"
          "  --dry-run              print the command (shell-quoted) and exit\n"
          "  --help, --version\n"
          "\n"
          "read from the command's flags too: --model --tp --pp --pp-layers, and for serve\n"
          "--host --port --auth-token-file --tls-cert --tls-key. Everything else is passed to\n"
          "tessera as given (`--` ends the options above).\n"
          "\n"
          "exit: the job's code (0 after a clean stop); 2 a bad flag or config (nothing started);\n"
          "128+N stopped by signal N without a clean end; 127 the runner could not start.\n",
          f);
}

/* ---- flags ---- */

typedef struct {
    const char *config;
    int dry_run, help, version;
    tsr_launch_config over; /* what the flags say */
} cli;

enum { A_NONE, A_VALUE };

/* The launcher's own options. */
static const struct {
    const char *name;
    int arg;
} launcher_opts[] = {
    {"config", A_VALUE},       {"model", A_VALUE},
    {"tp", A_VALUE},           {"pp", A_VALUE},
    {"pp-layers", A_VALUE},    {"hosts", A_VALUE},
    {"hostfile", A_VALUE},     {"np", A_VALUE},
    {"env", A_VALUE},          {"mpirun", A_VALUE},
    {"srun", A_VALUE},         {"tessera", A_VALUE},
    {"runner", A_VALUE},       {"oversubscribe", A_NONE},
    {"bind-to", A_VALUE},      {"cpus-per-rank", A_VALUE},
    {"stop-timeout", A_VALUE}, {"mpi-arg", A_VALUE},
    {"dry-run", A_NONE},       {"help", A_NONE},
    {"version", A_NONE},
};

/* tessera's serve flags the launcher reads (and writes back itself). */
static const char *const serve_opts[] = {"host", "port", "auth-token-file", "tls-cert", "tls-key"};

/* tessera's flags that take no value (the 0 rows of runtime/cmd/options.c). */
static const char *const bool_flags[] = {"ignore-eos", "verbose", "log-prompts", "host-sampling",
                                         "help"};

static int is_in(const char *name, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(name, list[i]))
            return 1;
    return 0;
}

static int launcher_opt(const char *name) {
    for (size_t i = 0; i < sizeof launcher_opts / sizeof *launcher_opts; i++)
        if (!strcmp(name, launcher_opts[i].name))
            return (int)i;
    return -1;
}

#define USAGE_ERR(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "tessera-launch: " __VA_ARGS__);                                           \
        fputs("\nTry 'tessera-launch --help'.\n", stderr);                                         \
        return -1;                                                                                 \
    } while (0)

static int set_int(const char *flag, const char *v, long lo, long hi, int *out) {
    if (tsr_launch_parse_int(v, lo, hi, out))
        USAGE_ERR("--%s expects an integer in [%ld, %ld], got '%s'", flag, lo, hi, v);
    return 0;
}

static int set_str(char **dst, const char *v) {
    free(*dst);
    *dst = strdup(v);
    return *dst ? 0 : -1;
}

/* Applies one launcher or serve option. */
static int apply_opt(cli *a, const char *name, const char *v) {
    tsr_launch_config *o = &a->over;
    if (!strcmp(name, "config"))
        a->config = v;
    else if (!strcmp(name, "model"))
        return set_str(&o->model, v);
    else if (!strcmp(name, "tp"))
        return set_int(name, v, 1, 4096, &o->tp);
    else if (!strcmp(name, "pp"))
        return set_int(name, v, 1, 4096, &o->pp);
    else if (!strcmp(name, "pp-layers")) {
        if (tsr_launch_parse_layers(v, "--pp-layers", o->pp_layers, TSR_LAUNCH_MAX_STAGES,
                                    &o->n_pp_layers) != TSR_OK)
            USAGE_ERR("%s", tsr_error_msg());
    } else if (!strcmp(name, "hosts"))
        return tsr_launch_strv_push(&o->hosts, v) == TSR_OK ? 0 : -1;
    else if (!strcmp(name, "hostfile"))
        return set_str(&o->hostfile, v);
    else if (!strcmp(name, "np"))
        return set_int(name, v, 1, 1 << 20, &o->np);
    else if (!strcmp(name, "env"))
        return tsr_launch_strv_push(&o->env, v) == TSR_OK ? 0 : -1;
    else if (!strcmp(name, "mpirun"))
        return set_str(&o->mpirun, v);
    else if (!strcmp(name, "srun"))
        return set_str(&o->srun, v);
    else if (!strcmp(name, "tessera"))
        return set_str(&o->tessera, v);
    else if (!strcmp(name, "runner")) {
        if (strcmp(v, "auto") && strcmp(v, "mpirun") && strcmp(v, "srun"))
            USAGE_ERR("--runner expects auto, mpirun or srun, got '%s'", v);
        return set_str(&o->runner, v);
    } else if (!strcmp(name, "oversubscribe"))
        o->oversubscribe = 1;
    else if (!strcmp(name, "bind-to"))
        return set_str(&o->bind_to, v);
    else if (!strcmp(name, "cpus-per-rank"))
        return set_int(name, v, 1, 4096, &o->cpus_per_rank);
    else if (!strcmp(name, "stop-timeout")) {
        char *end;
        errno = 0;
        double s = strtod(v, &end);
        if (errno || end == v || *end || !(s >= 0) || s > 1e6)
            USAGE_ERR("--stop-timeout expects seconds, got '%s'", v);
        o->stop_timeout = s;
    } else if (!strcmp(name, "mpi-arg"))
        return tsr_launch_strv_push(&o->mpi_args, v) == TSR_OK ? 0 : -1;
    else if (!strcmp(name, "dry-run"))
        a->dry_run = 1;
    else if (!strcmp(name, "help"))
        a->help = 1;
    else if (!strcmp(name, "version"))
        a->version = 1;
    else if (!strcmp(name, "host"))
        return set_str(&o->host, v);
    else if (!strcmp(name, "port"))
        return set_int(name, v, 1, 65535, &o->port);
    else if (!strcmp(name, "auth-token-file"))
        return set_str(&o->auth_token_file, v);
    else if (!strcmp(name, "tls-cert"))
        return set_str(&o->tls_cert, v);
    else if (!strcmp(name, "tls-key"))
        return set_str(&o->tls_key, v);
    return 0;
}

/* Splits "--name=value" / "--name value"; returns the number of argv words
 * used (1 or 2), 0 when argv[i] is not an option. */
static int split_opt(int argc, char **argv, int i, int takes_value, char *name, size_t nn,
                     const char **value) {
    const char *s = argv[i];
    if (strncmp(s, "--", 2) || !s[2])
        return 0;
    const char *eq = strchr(s + 2, '=');
    size_t len = eq ? (size_t)(eq - s - 2) : strlen(s + 2);
    snprintf(name, nn, "%.*s", (int)len, s + 2);
    *value = NULL;
    if (eq) {
        *value = eq + 1;
        return 1;
    }
    if (takes_value > 0 && i + 1 < argc) {
        *value = argv[i + 1];
        return 2;
    }
    /* a tessera flag: its value follows unless the next word is an option */
    if (takes_value < 0 && i + 1 < argc && strncmp(argv[i + 1], "--", 2)) {
        *value = argv[i + 1];
        return 2;
    }
    return 1;
}

static int parse_cli(int argc, char **argv, cli *a) {
    int cmd = -1, raw = 0;
    for (int i = 1; i < argc;) {
        const char *s = argv[i];
        if (!raw && !strcmp(s, "--")) {
            if (cmd < 0)
                USAGE_ERR("'--' before the command");
            raw = 1;
            i++;
            continue;
        }
        if (!strncmp(s, "--", 2) && s[2]) {
            char name[128];
            const char *v;
            int used;
            snprintf(name, sizeof name, "%.*s", (int)strcspn(s + 2, "="), s + 2);
            /* the launcher's own options and the serve flags it reads */
            int lo = raw ? -1 : launcher_opt(name);
            int so = !raw && is_in(name, serve_opts, sizeof serve_opts / sizeof *serve_opts);
            if (lo >= 0 || so) {
                int takes = lo >= 0 ? launcher_opts[lo].arg == A_VALUE : 1;
                used = split_opt(argc, argv, i, takes, name, sizeof name, &v);
                if (takes && !v)
                    USAGE_ERR("--%s needs a value", name);
                if (!takes && v && strchr(s, '='))
                    USAGE_ERR("--%s takes no value", name);
                if (apply_opt(a, name, v ? v : ""))
                    return -1;
                i += used;
                continue;
            }
            if (cmd < 0)
                USAGE_ERR("unknown option '%s' (tessera-launch's options come before the "
                          "command, the command's own flags after it)",
                          s);
            /* a flag of the command, passed through */
            int is_bool = is_in(name, bool_flags, sizeof bool_flags / sizeof *bool_flags);
            used = split_opt(argc, argv, i, is_bool ? 0 : -1, name, sizeof name, &v);
            if (!name[0])
                USAGE_ERR("bad flag '%s'", s);
            if (tsr_launch_flags_add(&a->over.args[cmd], name, v) != TSR_OK)
                return -1;
            i += used;
            continue;
        }
        if (cmd < 0 && !strcmp(s, "-h")) {
            a->help = 1;
            i++;
            continue;
        }
        if (cmd >= 0)
            USAGE_ERR("unexpected argument '%s' after the command (flags are --name value)", s);
        cmd = tsr_launch_command_parse(s);
        if (cmd < 0)
            USAGE_ERR("unknown command '%s' (serve, generate, perplexity or train)", s);
        a->over.command = cmd;
        i++;
    }
    return 0;
}

/* ---- the machine ---- */

/* Finds an executable: a path with '/' as is, else in $PATH. The result is
 * an absolute path in out (PATH_MAX), symbolic links kept (mpirun stays
 * mpirun, not orterun); 0, or -1. */
static int find_program(const char *name, char *out) {
    if (strchr(name, '/')) {
        if (access(name, X_OK) != 0)
            return -1;
        if (name[0] == '/') {
            snprintf(out, PATH_MAX, "%s", name);
            return 0;
        }
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd))
            return -1;
        while (!strncmp(name, "./", 2))
            name += 2;
        return snprintf(out, PATH_MAX, "%s/%s", cwd, name) < PATH_MAX ? 0 : -1;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char dir[PATH_MAX], cand[PATH_MAX + 256];
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        snprintf(dir, sizeof dir, "%.*s", (int)n, n ? p : ".");
        snprintf(cand, sizeof cand, "%s/%s", dir, name);
        if (access(cand, X_OK) == 0 && cand[0] == '/' && strlen(cand) < PATH_MAX) {
            memcpy(out, cand, strlen(cand) + 1);
            return 0;
        }
        p += n;
        if (*p == ':')
            p++;
    }
    return -1;
}

/* tessera: --tessera / config, else next to this program (installed), else
 * ../runtime/tessera (the build tree), else $PATH. */
static int find_tessera_at(const char *given, char *out) {
    if (given)
        return find_program(given, out);
    char self[PATH_MAX], cand[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            snprintf(cand, sizeof cand, "%s/tessera", self);
            if (!find_program(cand, out))
                return 0;
            snprintf(cand, sizeof cand, "%s/../runtime/tessera", self);
            if (!find_program(cand, out))
                return 0;
        }
    }
    return find_program("tessera", out);
}

/* The canonical path of the tessera program (how /proc shows the ranks). */
static int find_tessera(const char *given, char *out) {
    char found[PATH_MAX];
    if (find_tessera_at(given, found) || !realpath(found, out))
        return -1;
    return 0;
}

/* Runs argv with stdout+stderr into buf (when given) and stdin from
 * /dev/null, killing it after timeout_s. Returns its exit code, or -1. */
static int run_capture(char *const *argv, char *const *env_add, double timeout_s, char *buf,
                       size_t n) {
    int fds[2];
    if (pipe(fds))
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        int dn = open("/dev/null", O_RDWR);
        dup2(dn, 0);
        dup2(buf ? fds[1] : dn, 1);
        dup2(buf ? fds[1] : dn, 2);
        close(fds[0]);
        for (char *const *e = env_add; e && *e; e++)
            putenv(*e);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    size_t len = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int status = 0, done = 0;
    while (!done) {
        char tmp[4096];
        ssize_t r = read(fds[0], tmp, sizeof tmp);
        if (r > 0 && buf && len + 1 < n) {
            size_t c = (size_t)r < n - 1 - len ? (size_t)r : n - 1 - len;
            memcpy(buf + len, tmp, c);
            len += c;
        }
        if (waitpid(pid, &status, WNOHANG) == pid) {
            done = 1;
            while ((r = read(fds[0], tmp, sizeof tmp)) > 0 && buf && len + 1 < n) {
                size_t c = (size_t)r < n - 1 - len ? (size_t)r : n - 1 - len;
                memcpy(buf + len, tmp, c);
                len += c;
            }
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            close(fds[0]);
            return -1;
        }
        if (r <= 0) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    close(fds[0]);
    if (buf)
        buf[len] = '\0';
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int srun_offers_pmix(const char *srun) {
    char out[8192];
    char *argv[] = {(char *)srun, "--mpi=list", NULL};
    if (run_capture(argv, NULL, 20, out, sizeof out) < 0)
        return 0;
    /* "MPI plugin types are...\n\tpmix\n\tnone\n..." */
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        l += strspn(l, " \t");
        if (!strncmp(l, "pmix", 4) && (!l[4] || l[4] == ' ' || l[4] == '\t' || l[4] == '_'))
            return 1;
        if (strstr(l, "pmix_v"))
            return 1;
    }
    return 0;
}

/* `tessera train --help` answers: the training command exists. */
static int tessera_has_train(const char *tessera) {
    char *argv[] = {(char *)tessera, "train", "--help", NULL};
    char *env[] = {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", NULL};
    return run_capture(argv, env, 60, NULL, 0) == 0;
}

/* -1 and a message when path cannot be read; with `note_only` a note and 0. */
static int readable(const char *what, const char *path, int note_only) {
    if (access(path, R_OK) == 0)
        return 0;
    fprintf(stderr, "tessera-launch: %s: %s '%s': %s\n", note_only ? "note" : "error", what, path,
            strerror(errno));
    return note_only ? 0 : -1;
}

/* The default stop timeout: serve's drain (--grace, default 30 s) plus 15 s. */
static double default_stop_timeout(const tsr_launch_config *c) {
    if (c->command != TSR_LAUNCH_SERVE)
        return 10;
    const tsr_launch_flag *g = tsr_launch_flags_find(&c->args[TSR_LAUNCH_SERVE], "grace");
    double grace = 30;
    if (g && g->values.n) {
        char *end;
        double v = strtod(g->values.v[g->values.n - 1], &end);
        if (end != g->values.v[g->values.n - 1] && !*end && v >= 0)
            grace = v;
    }
    return grace + 15;
}

/* CPUs this process may run on (taskset, cpusets), as mpirun would see
 * them for a local run. */
static int usable_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int error(const char *msg) {
    fprintf(stderr, "tessera-launch: error: %s\n", msg);
    return 2;
}

int main(int argc, char **argv) {
    cli a = {0};
    tsr_launch_config over = TSR_LAUNCH_CONFIG_INIT, c = TSR_LAUNCH_CONFIG_INIT;
    a.over = over;
    tsr_launch_cmd cmd = {0};
    int rc = 2;
    char *line = NULL;
    if (parse_cli(argc, argv, &a))
        goto done;
    if (a.help) {
        usage(stdout);
        rc = 0;
        goto done;
    }
    if (a.version) {
        printf("tessera-launch %s\n", TSR_LAUNCH_VERSION);
        rc = 0;
        goto done;
    }
    if (argc < 2) {
        usage(stderr);
        goto done;
    }
    /* the file, then the flags over it */
    if (a.config && tsr_launch_config_load(a.config, &c) != TSR_OK) {
        rc = error(tsr_error_msg());
        goto done;
    }
    if (tsr_launch_config_merge(&c, &a.over) != TSR_OK) {
        rc = error(tsr_error_msg());
        goto done;
    }
    if (c.command < 0) {
        rc = error(
            "no command: give serve, generate, perplexity or train (or command: in the config)");
        goto done;
    }
    if (!c.model) {
        rc = error("no model: give --model M or model: in the config");
        goto done;
    }
    if (!c.tp)
        c.tp = 1;
    if (!c.pp)
        c.pp = 1;
    if (c.command == TSR_LAUNCH_SERVE && (!c.tls_cert != !c.tls_key)) {
        rc = error("TLS needs both a certificate and a key (tls: cert and key, or --tls-cert and "
                   "--tls-key)");
        goto done;
    }
    /* the server's files: rank 0 reads them; a dry run only mentions them */
    if (c.command == TSR_LAUNCH_SERVE &&
        ((c.auth_token_file && readable("auth token file", c.auth_token_file, a.dry_run)) ||
         (c.tls_cert && readable("TLS certificate", c.tls_cert, a.dry_run)) ||
         (c.tls_key && readable("TLS key", c.tls_key, a.dry_run))))
        goto done;

    /* programs */
    char tessera[PATH_MAX], mpirun[PATH_MAX], srun[PATH_MAX];
    if (find_tessera(c.tessera, tessera)) {
        fprintf(stderr,
                "tessera-launch: error: the tessera program %s%s%s was not found (set "
                "tessera: in the config or --tessera PATH)\n",
                c.tessera ? "'" : "", c.tessera ? c.tessera : "", c.tessera ? "'" : "");
        goto done;
    }

    /* The layout against the model, exactly as every rank will check it. */
    tsr_model_file_t *mf = NULL;
    if (tsr_model_file_open(c.model, &mf) != TSR_OK) {
        rc = error(tsr_error_msg());
        goto done;
    }
    tsr_plan_config pc = {c.tp, c.pp, c.n_pp_layers ? c.pp_layers : NULL, c.n_pp_layers};
    tsr_shard_plan plan;
    tsr_status st = tsr_shard_plan_init(tsr_model_file_config(mf), &pc, &plan);
    if (st == TSR_OK)
        st = tsr_shard_plan_check_world(&plan, c.tp * c.pp);
    tsr_shard_plan_free(&plan);
    tsr_model_file_close(mf);
    if (st != TSR_OK) {
        rc = error(tsr_error_msg());
        goto done;
    }

    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    tsr_launch_site site = {
        .ncpu = usable_cpus(),
        .is_root = geteuid() == 0,
        .environ = environ,
        .hostname = host,
        .slurm_job_id = getenv("SLURM_JOB_ID"),
        .slurm_ntasks = getenv("SLURM_NTASKS") ? getenv("SLURM_NTASKS") : getenv("SLURM_NPROCS"),
        .slurm_nnodes =
            getenv("SLURM_JOB_NUM_NODES") ? getenv("SLURM_JOB_NUM_NODES") : getenv("SLURM_NNODES"),
        .slurmd_nodename = getenv("SLURMD_NODENAME"),
        .tessera = tessera,
        .mpirun = c.mpirun ? c.mpirun : "mpirun",
        .srun = c.srun ? c.srun : "srun",
    };
    if (site.ncpu < 1)
        site.ncpu = 1;
    const char *runner = c.runner ? c.runner : "auto";
    if (site.slurm_job_id && strcmp(runner, "mpirun")) {
        if (!find_program(site.srun, srun)) {
            site.srun = srun;
            site.srun_has_pmix = srun_offers_pmix(srun);
        } else if (!strcmp(runner, "srun")) {
            fprintf(stderr, "tessera-launch: error: runner srun: '%s' not found\n", site.srun);
            goto done;
        }
    }
    /* mpirun's path is needed unless srun runs the job; resolved after the
     * build below decided (a missing mpirun is an error then) */
    int have_mpirun = !find_program(site.mpirun, mpirun);
    if (have_mpirun)
        site.mpirun = mpirun;
    if (tsr_launch_cmd_build(&c, &site, &cmd) != TSR_OK) {
        rc = error(tsr_error_msg());
        goto done;
    }
    if (cmd.runner == TSR_LAUNCH_RUNNER_MPIRUN && !have_mpirun) {
        fprintf(stderr,
                "tessera-launch: error: mpirun '%s' not found (install Open MPI, or set "
                "mpirun: in the config or --mpirun PATH)\n",
                c.mpirun ? c.mpirun : "mpirun");
        goto done;
    }
    for (size_t i = 0; i < cmd.notes.n; i++)
        fprintf(stderr, "tessera-launch: note: %s\n", cmd.notes.v[i]);
    if (!(line = tsr_launch_cmd_shell_line(&cmd))) {
        rc = error("out of memory");
        goto done;
    }
    int has_train = c.command != TSR_LAUNCH_TRAIN || tessera_has_train(tessera);
    if (a.dry_run) {
        if (!has_train)
            fprintf(stderr,
                    "tessera-launch: note: %s has no train command yet "
                    "(`tessera train --help` fails): an older build?\n",
                    tessera);
        printf("%s\n", line);
        rc = 0;
        goto done;
    }
    if (!has_train) {
        fprintf(stderr,
                "tessera-launch: error: %s has no train command yet (`tessera train "
                "--help` fails): LoRA training is not implemented in this build\n",
                tessera);
        goto done;
    }

    fprintf(stderr, "tessera-launch: %d rank%s (tp=%d x pp=%d) with %s: %s\n", cmd.world,
            cmd.world == 1 ? "" : "s", c.tp, c.pp,
            cmd.runner == TSR_LAUNCH_RUNNER_SRUN ? "srun" : "mpirun", line);
    if (c.command == TSR_LAUNCH_SERVE) {
        const char *lh = c.host ? c.host : "127.0.0.1";
        int local_only = !strcmp(lh, "127.0.0.1") || !strcmp(lh, "localhost") || !strcmp(lh, "::1");
        fprintf(stderr, "tessera-launch: serve: rank 0 on %s, gRPC at %s%s%s:%d%s\n",
                cmd.rank0_node, strchr(lh, ':') ? "[" : "", lh, strchr(lh, ':') ? "]" : "",
                c.port ? c.port : 50051,
                local_only ? " (clients on that host only; --host 0.0.0.0 for others)" : "");
    }
    fflush(stderr);
    char tessera_real[PATH_MAX];
    tsr_launch_run_opts ro = {
        .stop_timeout = c.stop_timeout >= 0 ? c.stop_timeout : default_stop_timeout(&c),
        .tessera_real = realpath(tessera, tessera_real) ? tessera_real : tessera,
        .keep_stdin = 0,
    };
    for (size_t i = 0; i + 1 < cmd.argv.n; i++)
        if (!strcmp(cmd.argv.v[i], "--file") && !strcmp(cmd.argv.v[i + 1], "-"))
            ro.keep_stdin = 1;
    if (tsr_launch_run(&cmd, &ro, &rc) != TSR_OK)
        fprintf(stderr, "tessera-launch: %s\n", tsr_error_msg()); /* rc is 127 */
done:
    free(line);
    tsr_launch_cmd_free(&cmd);
    tsr_launch_config_free(&c);
    tsr_launch_config_free(&a.over);
    return rc;
}
