/* launcher/launch_cmd.c - builds the mpirun/srun command line of
 * tessera-launch; see launch_cmd.h. */
#include "launcher/launch_cmd.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- shell quoting (the same words as Python's shlex.quote) ---- */

static int shell_safe(const char *s) {
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_@%+=:,./-", *s))
            return 0;
    return 1;
}

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (*len + n + 1 > c)
            c *= 2;
        char *b = realloc(*buf, c);
        if (!b)
            return -1;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

int tsr_launch_shell_quote_append(char **buf, size_t *len, size_t *cap, const char *s) {
    if (shell_safe(s))
        return append(buf, len, cap, s, strlen(s));
    if (append(buf, len, cap, "'", 1))
        return -1;
    for (const char *p = s; *p; p++) {
        int r = *p == '\'' ? append(buf, len, cap, "'\"'\"'", 5) : append(buf, len, cap, p, 1);
        if (r)
            return -1;
    }
    return append(buf, len, cap, "'", 1);
}

char *tsr_launch_cmd_shell_line(const tsr_launch_cmd *cmd) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (append(&buf, &len, &cap, "", 0))
        return NULL;
    for (size_t i = 0; i < cmd->env.n; i++) {
        const char *eq = strchr(cmd->env.v[i], '=');
        if (append(&buf, &len, &cap, cmd->env.v[i], (size_t)(eq - cmd->env.v[i]) + 1) ||
            tsr_launch_shell_quote_append(&buf, &len, &cap, eq + 1) ||
            append(&buf, &len, &cap, " ", 1)) {
            free(buf);
            return NULL;
        }
    }
    for (size_t i = 0; i < cmd->argv.n; i++) {
        if ((i && append(&buf, &len, &cap, " ", 1)) ||
            tsr_launch_shell_quote_append(&buf, &len, &cap, cmd->argv.v[i])) {
            free(buf);
            return NULL;
        }
    }
    return buf;
}

/* ---- hosts ---- */

static tsr_status host_entry(const char *e, int *slots, char **first) {
    const char *colon = strrchr(e, ':');
    size_t nlen = colon ? (size_t)(colon - e) : strlen(e);
    int n = 1;
    if (!nlen || (colon && tsr_launch_parse_int(colon + 1, 1, 1 << 20, &n)))
        return tsr_error_set(TSR_ERR_INVALID,
                             "bad host '%s': expected NAME or NAME:SLOTS (e.g. node1:8)", e);
    *slots += n;
    if (!*first && !(*first = strndup(e, nlen)))
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    return TSR_OK;
}

tsr_status tsr_launch_hosts_parse(const tsr_launch_strv *hosts, int *slots, char **first) {
    *slots = 0;
    *first = NULL;
    for (size_t i = 0; i < hosts->n; i++) {
        /* an entry may itself be a comma list ("a:8,b:8") */
        char *copy = strdup(hosts->v[i]), *save = NULL;
        if (!copy)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        tsr_status st = TSR_OK;
        int any = 0;
        for (char *t = strtok_r(copy, ",", &save); t && st == TSR_OK;
             t = strtok_r(NULL, ",", &save)) {
            st = host_entry(t, slots, first);
            any = 1;
        }
        if (st == TSR_OK && !any)
            st = tsr_error_set(TSR_ERR_INVALID, "empty host entry '%s'", hosts->v[i]);
        free(copy);
        if (st != TSR_OK) {
            free(*first);
            *first = NULL;
            return st;
        }
    }
    if (!*first)
        return tsr_error_set(TSR_ERR_INVALID, "the host list is empty");
    return TSR_OK;
}

tsr_status tsr_launch_hostfile_parse(const char *path, int *slots, char **first) {
    *slots = 0;
    *first = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return tsr_error_set(TSR_ERR_IO, "hostfile '%s': %s", path, strerror(errno));
    char line[1024];
    int lineno = 0, unknown = 0;
    tsr_status st = TSR_OK;
    while (st == TSR_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save = NULL, *name = strtok_r(line, " \t\r\n", &save);
        if (!name)
            continue;
        int n = -1;
        for (char *t = strtok_r(NULL, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
            if (!strncmp(t, "slots=", 6)) {
                if (tsr_launch_parse_int(t + 6, 1, 1 << 20, &n))
                    st = tsr_error_set(TSR_ERR_INVALID, "%s:%d: bad '%s' (slots=N, N >= 1)", path,
                                       lineno, t);
            } else if (strncmp(t, "max_slots=", 10) && strncmp(t, "max-slots=", 10)) {
                st = tsr_error_set(
                    TSR_ERR_INVALID,
                    "%s:%d: unknown field '%s' (expected NAME [slots=N] [max_slots=N])", path,
                    lineno, t);
            }
        }
        if (st != TSR_OK)
            break;
        if (n < 0)
            unknown = 1;
        else
            *slots += n;
        if (!*first && !(*first = strdup(name)))
            st = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    }
    fclose(f);
    if (st == TSR_OK && !*first)
        st = tsr_error_set(TSR_ERR_INVALID, "hostfile '%s' names no host", path);
    if (st != TSR_OK) {
        free(*first);
        *first = NULL;
        return st;
    }
    if (unknown)
        *slots = -1;
    return TSR_OK;
}

/* ---- environment forwarding ---- */

/* An ordered set of variables for the ranks: value NULL = forward the
 * launcher's own value. */
typedef struct {
    tsr_launch_strv names, values; /* values.v[i] is "" when forward[i] */
    int *forward;
} env_set;

static tsr_status env_put(env_set *es, const char *name, size_t nlen, const char *value) {
    char nm[256];
    if (nlen >= sizeof nm)
        return tsr_error_set(TSR_ERR_INVALID, "environment variable name too long");
    memcpy(nm, name, nlen);
    nm[nlen] = '\0';
    for (size_t i = 0; i < es->names.n; i++) {
        if (!strcmp(es->names.v[i], nm)) {
            /* a later entry wins: replace in place */
            char *v = strdup(value ? value : "");
            if (!v)
                return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
            free(es->values.v[i]);
            es->values.v[i] = v;
            es->forward[i] = !value;
            return TSR_OK;
        }
    }
    int *fw = realloc(es->forward, (es->names.n + 1) * sizeof *fw);
    if (!fw)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    es->forward = fw;
    es->forward[es->names.n] = !value;
    TSR_TRY(tsr_launch_strv_push(&es->names, nm));
    return tsr_launch_strv_push(&es->values, value ? value : "");
}

static void env_free(env_set *es) {
    tsr_launch_strv_free(&es->names);
    tsr_launch_strv_free(&es->values);
    free(es->forward);
}

static int valid_name(const char *s, size_t n) {
    if (!n || isdigit((unsigned char)s[0]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds one --env / env: entry. `implicit` entries (the defaults NCCL_* and
 * CUDA_VISIBLE_DEVICES) are silent when nothing matches. */
static tsr_status env_add(env_set *es, const char *spec, char *const *environ, int implicit,
                          tsr_launch_strv *notes) {
    const char *eq = strchr(spec, '=');
    size_t star = strcspn(spec, "*");
    if (eq) {
        if (!valid_name(spec, (size_t)(eq - spec)))
            return tsr_error_set(TSR_ERR_INVALID,
                                 "bad --env '%s': expected NAME, NAME=VALUE or PREFIX*", spec);
        return env_put(es, spec, (size_t)(eq - spec), eq + 1);
    }
    if (spec[star] == '*') {
        if (spec[star + 1] || (star && !valid_name(spec, star)))
            return tsr_error_set(TSR_ERR_INVALID,
                                 "bad --env '%s': a pattern is PREFIX* ('*' at the end only)",
                                 spec);
        /* every set variable with the prefix, sorted so the command is stable */
        tsr_launch_strv hits = {0};
        tsr_status st = TSR_OK;
        for (char *const *e = environ; e && *e && st == TSR_OK; e++) {
            const char *q = strchr(*e, '=');
            if (q && (size_t)(q - *e) >= star && !strncmp(*e, spec, star) && q - *e > 0)
                st = tsr_launch_strv_push(&hits, *e);
        }
        if (st == TSR_OK && hits.n > 1)
            qsort(hits.v, hits.n, sizeof *hits.v, cmp_str);
        for (size_t i = 0; i < hits.n && st == TSR_OK; i++)
            st = env_put(es, hits.v[i], strcspn(hits.v[i], "="), NULL);
        if (st == TSR_OK && !hits.n && !implicit) {
            char note[300];
            snprintf(note, sizeof note, "no variable matches --env %s: nothing forwarded", spec);
            st = tsr_launch_strv_push(notes, note);
        }
        tsr_launch_strv_free(&hits);
        return st;
    }
    if (!valid_name(spec, strlen(spec)))
        return tsr_error_set(TSR_ERR_INVALID,
                             "bad --env '%s': expected NAME, NAME=VALUE or PREFIX*", spec);
    size_t n = strlen(spec);
    for (char *const *e = environ; e && *e; e++)
        if (!strncmp(*e, spec, n) && (*e)[n] == '=')
            return env_put(es, spec, n, NULL);
    if (!implicit) {
        char note[300];
        snprintf(note, sizeof note, "%s is not set here: not forwarded", spec);
        return tsr_launch_strv_push(notes, note);
    }
    return TSR_OK;
}

/* ---- the command ---- */

static tsr_status push_int(tsr_launch_strv *sv, int v) {
    char s[32];
    snprintf(s, sizeof s, "%d", v);
    return tsr_launch_strv_push(sv, s);
}

static tsr_status push2(tsr_launch_strv *sv, const char *a, const char *b) {
    TSR_TRY(tsr_launch_strv_push(sv, a));
    return tsr_launch_strv_push(sv, b);
}

/* `tessera CMD --model M --tp T --pp P [...] flags` */
static tsr_status tessera_args(const tsr_launch_config *c, const tsr_launch_site *site,
                               tsr_launch_strv *a) {
    TSR_TRY(tsr_launch_strv_push(a, site->tessera));
    TSR_TRY(tsr_launch_strv_push(a, tsr_launch_command_name(c->command)));
    TSR_TRY(push2(a, "--model", c->model));
    TSR_TRY(tsr_launch_strv_push(a, "--tp"));
    TSR_TRY(push_int(a, c->tp));
    TSR_TRY(tsr_launch_strv_push(a, "--pp"));
    TSR_TRY(push_int(a, c->pp));
    if (c->n_pp_layers) {
        char buf[TSR_LAUNCH_MAX_STAGES * 8] = "";
        size_t len = 0;
        for (int i = 0; i < c->n_pp_layers; i++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%d", i ? "," : "",
                                    c->pp_layers[i]);
        TSR_TRY(push2(a, "--pp-layers", buf));
    }
    if (c->command == TSR_LAUNCH_SERVE) {
        if (c->host)
            TSR_TRY(push2(a, "--host", c->host));
        if (c->port) {
            TSR_TRY(tsr_launch_strv_push(a, "--port"));
            TSR_TRY(push_int(a, c->port));
        }
        if (c->auth_token_file)
            TSR_TRY(push2(a, "--auth-token-file", c->auth_token_file));
        if (c->tls_cert)
            TSR_TRY(push2(a, "--tls-cert", c->tls_cert));
        if (c->tls_key)
            TSR_TRY(push2(a, "--tls-key", c->tls_key));
    }
    const tsr_launch_flags *fl = &c->args[c->command];
    for (size_t i = 0; i < fl->n; i++) {
        char flag[160];
        snprintf(flag, sizeof flag, "--%s", fl->v[i].name);
        if (!fl->v[i].values.n)
            TSR_TRY(tsr_launch_strv_push(a, flag));
        for (size_t j = 0; j < fl->v[i].values.n; j++)
            TSR_TRY(push2(a, flag, fl->v[i].values.v[j]));
    }
    return TSR_OK;
}

static tsr_status note(tsr_launch_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static tsr_status note(tsr_launch_cmd *cmd, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return tsr_launch_strv_push(&cmd->notes, buf);
}

static tsr_status build(const tsr_launch_config *c, const tsr_launch_site *site,
                        tsr_launch_cmd *cmd) {
    const int world = c->tp * c->pp;
    cmd->world = world;
    cmd->in_slurm = site->slurm_job_id != NULL;
    const char *runner = c->runner ? c->runner : "auto";
    int have_hosts = c->hosts.n > 0 || c->hostfile;

    if (c->np && c->np != world)
        return tsr_error_set(TSR_ERR_INVALID, "tp=%d x pp=%d needs %d ranks, but --np asks for %d",
                             c->tp, c->pp, world, c->np);
    if (!strcmp(runner, "srun") && !cmd->in_slurm)
        return tsr_error_set(TSR_ERR_INVALID,
                             "runner srun needs a Slurm allocation (SLURM_JOB_ID is not set): "
                             "use sbatch/salloc, or runner mpirun");

    int slots = -1; /* known slots for the ranks, -1 unknown */
    if (cmd->in_slurm) {
        if (have_hosts)
            return tsr_error_set(TSR_ERR_INVALID,
                                 "--hosts/--hostfile are for runs outside Slurm; inside an "
                                 "allocation (job %s) the nodes come from Slurm",
                                 site->slurm_job_id);
        int ntasks = 0, nnodes = 0;
        if (site->slurm_ntasks && tsr_launch_parse_int(site->slurm_ntasks, 1, 1 << 24, &ntasks))
            ntasks = 0;
        if (site->slurm_nnodes && tsr_launch_parse_int(site->slurm_nnodes, 1, 1 << 24, &nnodes))
            nnodes = 0;
        if (ntasks && ntasks != world)
            return tsr_error_set(TSR_ERR_INVALID,
                                 "tp=%d x pp=%d needs %d ranks, the Slurm allocation has %d tasks "
                                 "(SLURM_NTASKS; submit with sbatch -n %d)",
                                 c->tp, c->pp, world, ntasks, world);
        if (!ntasks && nnodes > world)
            return tsr_error_set(TSR_ERR_INVALID,
                                 "tp=%d x pp=%d needs %d ranks, fewer than the allocation's %d "
                                 "nodes (SLURM_JOB_NUM_NODES)",
                                 c->tp, c->pp, world, nnodes);
        free(cmd->rank0_node);
        cmd->rank0_node = strdup(site->slurmd_nodename ? site->slurmd_nodename : site->hostname);
        if (!strcmp(runner, "mpirun"))
            cmd->runner = TSR_LAUNCH_RUNNER_MPIRUN;
        else if (site->srun_has_pmix)
            cmd->runner = TSR_LAUNCH_RUNNER_SRUN;
        else if (!strcmp(runner, "srun"))
            return tsr_error_set(TSR_ERR_INVALID,
                                 "runner srun: `srun --mpi=list` offers no pmix plugin here");
        else {
            cmd->runner = TSR_LAUNCH_RUNNER_MPIRUN;
            TSR_TRY(note(
                cmd,
                "srun offers no pmix (srun --mpi=list): starting mpirun inside the allocation"));
        }
    } else {
        cmd->runner = TSR_LAUNCH_RUNNER_MPIRUN;
        char *first = NULL;
        if (c->hosts.n) {
            TSR_TRY(tsr_launch_hosts_parse(&c->hosts, &slots, &first));
        } else if (c->hostfile) {
            TSR_TRY(tsr_launch_hostfile_parse(c->hostfile, &slots, &first));
        } else {
            slots = site->ncpu;
            first = strdup(site->hostname);
        }
        cmd->rank0_node = first;
        if (slots >= 0 && world > slots) {
            if (c->oversubscribe == 0 || (have_hosts && c->oversubscribe != 1))
                return tsr_error_set(
                    TSR_ERR_INVALID, "tp=%d x pp=%d needs %d ranks, %s %d slots (%s)", c->tp, c->pp,
                    world, have_hosts ? "the hosts give" : "this machine has", slots,
                    have_hosts ? "add slots, or set oversubscribe: true"
                               : "oversubscribe is false");
            cmd->oversubscribed = 1;
            if (!have_hosts && c->oversubscribe != 1)
                TSR_TRY(note(
                    cmd, "%d ranks on %d CPUs: oversubscribing (--oversubscribe --bind-to none)",
                    world, slots));
        }
        if (c->oversubscribe == 1)
            cmd->oversubscribed = 1;
    }
    if (!cmd->rank0_node)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");

    /* the variables for the ranks */
    env_set es = {0};
    tsr_status st = TSR_OK;
    static const char *const implicit[] = {"NCCL_*", "CUDA_VISIBLE_DEVICES"};
    for (size_t i = 0; i < 2 && st == TSR_OK; i++)
        st = env_add(&es, implicit[i], site->environ, 1, &cmd->notes);
    for (size_t i = 0; i < c->env.n && st == TSR_OK; i++)
        st = env_add(&es, c->env.v[i], site->environ, 0, &cmd->notes);

    tsr_launch_strv *a = &cmd->argv;
    if (st == TSR_OK && cmd->runner == TSR_LAUNCH_RUNNER_MPIRUN) {
        if (site->is_root) {
            st = tsr_launch_strv_push(&cmd->env, "OMPI_ALLOW_RUN_AS_ROOT=1");
            if (st == TSR_OK)
                st = tsr_launch_strv_push(&cmd->env, "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1");
        }
        if (st == TSR_OK)
            st = push2(a, site->mpirun, "-np");
        if (st == TSR_OK)
            st = push_int(a, world);
        if (st == TSR_OK && !cmd->in_slurm && c->hosts.n) {
            /* one --host list, as given */
            char *joined = NULL;
            size_t len = 0, cap = 0;
            for (size_t i = 0; i < c->hosts.n; i++)
                if (append(&joined, &len, &cap, ",", i ? 1 : 0) ||
                    append(&joined, &len, &cap, c->hosts.v[i], strlen(c->hosts.v[i])))
                    st = tsr_error_set(TSR_ERR_NOMEM, "out of memory");
            if (st == TSR_OK)
                st = push2(a, "--host", joined);
            free(joined);
        } else if (st == TSR_OK && !cmd->in_slurm && c->hostfile) {
            st = push2(a, "--hostfile", c->hostfile);
        }
        const char *bind = c->bind_to ? c->bind_to : cmd->oversubscribed ? "none" : "core";
        int pe = c->cpus_per_rank;
        if (!pe && !cmd->in_slurm && !have_hosts && !cmd->oversubscribed)
            pe = site->ncpu / world; /* a local run: each rank gets its share of the cores */
        char map[64] = "slot";
        if (pe >= 2 && !strcmp(bind, "core"))
            snprintf(map, sizeof map, "slot:PE=%d", pe);
        if (st == TSR_OK)
            st = push2(a, "--map-by", map);
        if (st == TSR_OK)
            st = push2(a, "--bind-to", bind);
        if (st == TSR_OK && cmd->oversubscribed)
            st = tsr_launch_strv_push(a, "--oversubscribe");
        for (size_t i = 0; i < es.names.n && st == TSR_OK; i++) {
            char kv[4096];
            if (es.forward[i])
                snprintf(kv, sizeof kv, "%s", es.names.v[i]);
            else
                snprintf(kv, sizeof kv, "%s=%s", es.names.v[i], es.values.v[i]);
            st = push2(a, "-x", kv);
        }
        if (st == TSR_OK)
            st = tsr_launch_strv_extend(a, &c->mpi_args);
    } else if (st == TSR_OK) {
        /* srun passes the whole environment (--export=ALL); only the
         * NAME=VALUE entries need setting */
        for (size_t i = 0; i < es.names.n && st == TSR_OK; i++) {
            if (es.forward[i])
                continue;
            char kv[4096];
            snprintf(kv, sizeof kv, "%s=%s", es.names.v[i], es.values.v[i]);
            st = tsr_launch_strv_push(&cmd->env, kv);
        }
        if (st == TSR_OK)
            st = push2(a, site->srun, "--mpi=pmix");
        if (st == TSR_OK)
            st = tsr_launch_strv_push(a, "-n");
        if (st == TSR_OK)
            st = push_int(a, world);
        if (st == TSR_OK)
            st = tsr_launch_strv_push(a, "--export=ALL");
        if (st == TSR_OK)
            st = tsr_launch_strv_push(a, "--kill-on-bad-exit=1");
        if (st == TSR_OK)
            st = tsr_launch_strv_extend(a, &c->srun_args);
    }
    env_free(&es);
    if (st == TSR_OK)
        st = tessera_args(c, site, a);
    return st;
}

tsr_status tsr_launch_cmd_build(const tsr_launch_config *c, const tsr_launch_site *site,
                                tsr_launch_cmd *out) {
    memset(out, 0, sizeof *out);
    tsr_status st = build(c, site, out);
    if (st != TSR_OK)
        tsr_launch_cmd_free(out);
    return st;
}

void tsr_launch_cmd_free(tsr_launch_cmd *cmd) {
    if (!cmd)
        return;
    free(cmd->rank0_node);
    tsr_launch_strv_free(&cmd->env);
    tsr_launch_strv_free(&cmd->argv);
    tsr_launch_strv_free(&cmd->notes);
    memset(cmd, 0, sizeof *cmd);
}
