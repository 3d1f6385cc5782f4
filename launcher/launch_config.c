/* launcher/launch_config.c - the YAML config of tessera-launch (libyaml's
 * document loader) and the merge of config and flags. See launch_config.h;
 * the schema is documented in docs/launcher.md and must stay in step with
 * the key table below. */
#include "launcher/launch_config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---- small containers ---- */

tsr_status tsr_launch_strv_push(tsr_launch_strv *sv, const char *s) {
    if (sv->n + 2 > sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 8;
        char **v = realloc(sv->v, cap * sizeof *v);
        if (!v)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        sv->v = v;
        sv->cap = cap;
    }
    char *copy = strdup(s);
    if (!copy)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    sv->v[sv->n++] = copy;
    sv->v[sv->n] = NULL;
    return TSR_OK;
}

tsr_status tsr_launch_strv_extend(tsr_launch_strv *sv, const tsr_launch_strv *from) {
    for (size_t i = 0; i < from->n; i++)
        TSR_TRY(tsr_launch_strv_push(sv, from->v[i]));
    return TSR_OK;
}

void tsr_launch_strv_free(tsr_launch_strv *sv) {
    if (!sv)
        return;
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    memset(sv, 0, sizeof *sv);
}

static tsr_launch_flag *flags_find_mut(tsr_launch_flags *fl, const char *name) {
    for (size_t i = 0; i < fl->n; i++)
        if (!strcmp(fl->v[i].name, name))
            return &fl->v[i];
    return NULL;
}

const tsr_launch_flag *tsr_launch_flags_find(const tsr_launch_flags *fl, const char *name) {
    return flags_find_mut((tsr_launch_flags *)fl, name);
}

tsr_status tsr_launch_flags_add(tsr_launch_flags *fl, const char *name, const char *value) {
    tsr_launch_flag *f = flags_find_mut(fl, name);
    if (!f) {
        tsr_launch_flag *v = realloc(fl->v, (fl->n + 1) * sizeof *v);
        if (!v)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        fl->v = v;
        f = &fl->v[fl->n];
        memset(f, 0, sizeof *f);
        if (!(f->name = strdup(name)))
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        fl->n++;
    }
    return value ? tsr_launch_strv_push(&f->values, value) : TSR_OK;
}

static void flag_free(tsr_launch_flag *f) {
    free(f->name);
    tsr_launch_strv_free(&f->values);
}

void tsr_launch_flags_free(tsr_launch_flags *fl) {
    if (!fl)
        return;
    for (size_t i = 0; i < fl->n; i++)
        flag_free(&fl->v[i]);
    free(fl->v);
    memset(fl, 0, sizeof *fl);
}

static const char *const command_names[TSR_LAUNCH_N_COMMANDS] = {"serve", "generate", "perplexity",
                                                                 "train"};

const char *tsr_launch_command_name(tsr_launch_command c) {
    return (int)c >= 0 && c < TSR_LAUNCH_N_COMMANDS ? command_names[c] : NULL;
}

int tsr_launch_command_parse(const char *name) {
    for (int i = 0; i < TSR_LAUNCH_N_COMMANDS; i++)
        if (!strcmp(name, command_names[i]))
            return i;
    return -1;
}

int tsr_launch_parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

tsr_status tsr_launch_parse_layers(const char *s, const char *what, int *layers, int max, int *n) {
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 1 || v > 1 << 20 || *n == max || (*end && *end != ','))
            return tsr_error_set(TSR_ERR_INVALID,
                                 "%s expects positive integers separated by commas, got '%s'", what,
                                 s);
        layers[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (!*n)
        return tsr_error_set(TSR_ERR_INVALID, "%s is empty", what);
    return TSR_OK;
}

/* ---- the YAML document ---- */

typedef struct {
    const char *path;
    yaml_document_t *doc;
    tsr_launch_config *c;
} loader;

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

#define BAD(L, node, ...) bad_at((L), (node), __VA_ARGS__)

static tsr_status bad_at(const loader *L, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static tsr_status bad_at(const loader *L, const yaml_node_t *n, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tsr_error_set(TSR_ERR_INVALID, "%s:%d: %s", L->path, line_of(n), msg);
}

static const char *scalar(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

/* A plain (unquoted) null: "", "~", "null". */
static int is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = scalar(n);
    return !s[0] || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

static tsr_status want_scalar(const loader *L, const yaml_node_t *n, const char *key) {
    if (n->type != YAML_SCALAR_NODE)
        return BAD(L, n, "%s must be a single value, not a %s", key,
                   n->type == YAML_SEQUENCE_NODE ? "list" : "mapping");
    return TSR_OK;
}

static tsr_status get_string(const loader *L, const yaml_node_t *n, const char *key, char **out) {
    TSR_TRY(want_scalar(L, n, key));
    if (is_null(n))
        return TSR_OK;
    free(*out);
    *out = strdup(scalar(n));
    return *out ? TSR_OK : tsr_error_set(TSR_ERR_NOMEM, "out of memory");
}

/* A path: a leading "~/" becomes $HOME/ (YAML has no shell to do it). */
static tsr_status get_path(const loader *L, const yaml_node_t *n, const char *key, char **out) {
    TSR_TRY(get_string(L, n, key, out));
    const char *home = getenv("HOME");
    if (*out && !strncmp(*out, "~/", 2) && home && *home) {
        size_t len = strlen(home) + strlen(*out);
        char *p = malloc(len);
        if (!p)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        snprintf(p, len, "%s/%s", home, *out + 2);
        free(*out);
        *out = p;
    }
    return TSR_OK;
}

static tsr_status get_int(const loader *L, const yaml_node_t *n, const char *key, long lo, long hi,
                          int *out) {
    TSR_TRY(want_scalar(L, n, key));
    if (is_null(n))
        return TSR_OK;
    if (tsr_launch_parse_int(scalar(n), lo, hi, out))
        return BAD(L, n, "%s must be an integer in [%ld, %ld], got '%s'", key, lo, hi, scalar(n));
    return TSR_OK;
}

/* YAML 1.1 booleans */
static int parse_bool(const char *s, int *out) {
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
                                      "YES",  "on",   "On",   "ON"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No",
                                     "NO",    "off",   "Off",   "OFF"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (!strcmp(s, yes[i])) {
            *out = 1;
            return 0;
        }
        if (!strcmp(s, no[i])) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static tsr_status get_bool(const loader *L, const yaml_node_t *n, const char *key, int *out) {
    TSR_TRY(want_scalar(L, n, key));
    if (is_null(n))
        return TSR_OK;
    if (parse_bool(scalar(n), out))
        return BAD(L, n, "%s must be true or false, got '%s'", key, scalar(n));
    return TSR_OK;
}

static tsr_status get_seconds(const loader *L, const yaml_node_t *n, const char *key, double *out) {
    TSR_TRY(want_scalar(L, n, key));
    if (is_null(n))
        return TSR_OK;
    char *end;
    errno = 0;
    double v = strtod(scalar(n), &end);
    if (errno || end == scalar(n) || *end || !(v >= 0) || v > 1e6)
        return BAD(L, n, "%s must be a number of seconds in [0, 1e6], got '%s'", key, scalar(n));
    *out = v;
    return TSR_OK;
}

/* A list of scalars, or one scalar (split at commas when `split`). */
static tsr_status get_list(const loader *L, const yaml_node_t *n, const char *key, int split,
                           tsr_launch_strv *out) {
    if (n->type == YAML_MAPPING_NODE)
        return BAD(L, n, "%s must be a list, not a mapping", key);
    if (n->type == YAML_SCALAR_NODE) {
        if (is_null(n))
            return TSR_OK;
        if (!split)
            return tsr_launch_strv_push(out, scalar(n));
        char *copy = strdup(scalar(n)), *save = NULL;
        if (!copy)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        tsr_status st = TSR_OK;
        for (char *t = strtok_r(copy, ", ", &save); t && st == TSR_OK;
             t = strtok_r(NULL, ", ", &save))
            st = tsr_launch_strv_push(out, t);
        free(copy);
        return st;
    }
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        const yaml_node_t *e = yaml_document_get_node(L->doc, *it);
        if (!e || e->type != YAML_SCALAR_NODE)
            return BAD(L, e ? e : n, "each entry of %s must be a single value", key);
        if (is_null(e))
            return BAD(L, e, "%s has an empty entry", key);
        TSR_TRY(tsr_launch_strv_push(out, scalar(e)));
    }
    return TSR_OK;
}

static tsr_status get_layers(const loader *L, const yaml_node_t *n) {
    tsr_launch_strv items = {0};
    tsr_status st = get_list(L, n, "pp_layers", 1, &items);
    tsr_launch_config *c = L->c;
    c->n_pp_layers = 0;
    for (size_t i = 0; st == TSR_OK && i < items.n; i++) {
        int v;
        if (c->n_pp_layers == TSR_LAUNCH_MAX_STAGES ||
            tsr_launch_parse_int(items.v[i], 1, 1 << 20, &v))
            st = BAD(L, n, "pp_layers must be positive integers (layers per stage), got '%s'",
                     items.v[i]);
        else
            c->pp_layers[c->n_pp_layers++] = v;
    }
    tsr_launch_strv_free(&items);
    return st;
}

/* The flags of one command: `name: value`, `name: true` (bare flag),
 * `name: false` (left out), `name: [a, b]` (repeated). Names may use _ or -;
 * they are written with -. */
static tsr_status get_command_flags(const loader *L, const yaml_node_t *n, const char *section,
                                    tsr_launch_flags *out) {
    if (is_null(n))
        return TSR_OK;
    if (n->type != YAML_MAPPING_NODE)
        return BAD(L, n, "%s must be a mapping of flag names to values (e.g. max_seqs: 16)",
                   section);
    static const char *const launcher_keys[] = {
        "model", "tp", "pp", "pp-layers", "host", "port", "auth-token-file", "tls-cert", "tls-key"};
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(L->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(L->doc, p->value);
        if (k->type != YAML_SCALAR_NODE || is_null(k))
            return BAD(L, k, "%s: flag names must be plain words", section);
        char name[128];
        snprintf(name, sizeof name, "%s", scalar(k));
        if (name[0] == '-' || !name[0])
            return BAD(L, k, "%s: write flag names without dashes ('%s')", section, scalar(k));
        for (char *q = name; *q; q++)
            if (*q == '_')
                *q = '-';
        for (size_t i = 0; i < sizeof launcher_keys / sizeof *launcher_keys; i++)
            if (!strcmp(name, launcher_keys[i]))
                return BAD(L, k, "%s: '%s' is a top-level key of the config, not a %s flag",
                           section, scalar(k), section);
        if (tsr_launch_flags_find(out, name))
            return BAD(L, k, "%s: duplicate flag '%s'", section, scalar(k));
        if (v->type == YAML_MAPPING_NODE)
            return BAD(L, v, "%s.%s must be a value or a list of values", section, scalar(k));
        if (v->type == YAML_SEQUENCE_NODE) {
            tsr_launch_strv vals = {0};
            tsr_status st = get_list(L, v, name, 0, &vals);
            for (size_t i = 0; st == TSR_OK && i < vals.n; i++)
                st = tsr_launch_flags_add(out, name, vals.v[i]);
            tsr_launch_strv_free(&vals);
            TSR_TRY(st);
            continue;
        }
        int b;
        if (v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !parse_bool(scalar(v), &b)) {
            if (b)
                TSR_TRY(tsr_launch_flags_add(out, name, NULL));
            continue;
        }
        if (is_null(v))
            return BAD(L, v, "%s.%s has no value (write true for a flag without one)", section,
                       scalar(k));
        TSR_TRY(tsr_launch_flags_add(out, name, scalar(v)));
    }
    return TSR_OK;
}

static tsr_status get_tls(const loader *L, const yaml_node_t *n) {
    if (is_null(n))
        return TSR_OK;
    if (n->type != YAML_MAPPING_NODE)
        return BAD(L, n, "tls must be a mapping with cert and key");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(L->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(L->doc, p->value);
        const char *key = k->type == YAML_SCALAR_NODE ? scalar(k) : "";
        if (!strcmp(key, "cert"))
            TSR_TRY(get_path(L, v, "tls.cert", &L->c->tls_cert));
        else if (!strcmp(key, "key"))
            TSR_TRY(get_path(L, v, "tls.key", &L->c->tls_key));
        else
            return BAD(L, k, "unknown key 'tls.%s' (tls has cert and key)", key);
    }
    return TSR_OK;
}

/* The top-level keys; docs/launcher.md lists the same. */
static const char *const known_keys =
    "command, model, tessera, tp, pp, pp_layers, host, port, auth_token_file, tls, hosts, "
    "hostfile, np, oversubscribe, bind_to, cpus_per_rank, env, runner, mpirun, mpi_args, srun, "
    "srun_args, stop_timeout, serve, generate, perplexity, train";

static tsr_status get_key(const loader *L, const char *key, const yaml_node_t *k,
                          const yaml_node_t *v) {
    tsr_launch_config *c = L->c;
    if (!strcmp(key, "command")) {
        char *s = NULL;
        TSR_TRY(get_string(L, v, key, &s));
        if (!s)
            return TSR_OK;
        c->command = tsr_launch_command_parse(s);
        tsr_status st =
            c->command < 0
                ? BAD(L, v, "command must be serve, generate, perplexity or train, got '%s'", s)
                : TSR_OK;
        free(s);
        return st;
    }
    if (!strcmp(key, "model"))
        return get_path(L, v, key, &c->model);
    if (!strcmp(key, "tessera"))
        return get_path(L, v, key, &c->tessera);
    if (!strcmp(key, "tp"))
        return get_int(L, v, key, 1, 4096, &c->tp);
    if (!strcmp(key, "pp"))
        return get_int(L, v, key, 1, 4096, &c->pp);
    if (!strcmp(key, "pp_layers"))
        return get_layers(L, v);
    if (!strcmp(key, "host"))
        return get_string(L, v, key, &c->host);
    if (!strcmp(key, "port"))
        return get_int(L, v, key, 1, 65535, &c->port);
    if (!strcmp(key, "auth_token_file"))
        return get_path(L, v, key, &c->auth_token_file);
    if (!strcmp(key, "tls"))
        return get_tls(L, v);
    if (!strcmp(key, "hosts"))
        return get_list(L, v, key, 1, &c->hosts);
    if (!strcmp(key, "hostfile"))
        return get_path(L, v, key, &c->hostfile);
    if (!strcmp(key, "np"))
        return get_int(L, v, key, 1, 1 << 20, &c->np);
    if (!strcmp(key, "oversubscribe"))
        return get_bool(L, v, key, &c->oversubscribe);
    if (!strcmp(key, "bind_to"))
        return get_string(L, v, key, &c->bind_to);
    if (!strcmp(key, "cpus_per_rank"))
        return get_int(L, v, key, 1, 4096, &c->cpus_per_rank);
    if (!strcmp(key, "env"))
        return get_list(L, v, key, 0, &c->env);
    if (!strcmp(key, "runner")) {
        TSR_TRY(get_string(L, v, key, &c->runner));
        if (c->runner && strcmp(c->runner, "auto") && strcmp(c->runner, "mpirun") &&
            strcmp(c->runner, "srun"))
            return BAD(L, v, "runner must be auto, mpirun or srun, got '%s'", c->runner);
        return TSR_OK;
    }
    if (!strcmp(key, "mpirun"))
        return get_path(L, v, key, &c->mpirun);
    if (!strcmp(key, "mpi_args"))
        return get_list(L, v, key, 0, &c->mpi_args);
    if (!strcmp(key, "srun"))
        return get_path(L, v, key, &c->srun);
    if (!strcmp(key, "srun_args"))
        return get_list(L, v, key, 0, &c->srun_args);
    if (!strcmp(key, "stop_timeout"))
        return get_seconds(L, v, key, &c->stop_timeout);
    int cmd = tsr_launch_command_parse(key);
    if (cmd >= 0)
        return get_command_flags(L, v, key, &c->args[cmd]);
    return BAD(L, k, "unknown key '%s' (known keys: %s)", key, known_keys);
}

tsr_status tsr_launch_config_load(const char *path, tsr_launch_config *out) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return tsr_error_set(TSR_ERR_IO, "config '%s': %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    }
    yaml_parser_set_input_file(&parser, f);
    tsr_status st = TSR_OK;
    if (!yaml_parser_load(&parser, &doc)) {
        /* libyaml's marks are 0-based */
        yaml_mark_t m = parser.problem_mark;
        if (parser.context)
            st = tsr_error_set(TSR_ERR_INVALID, "%s:%zu:%zu: YAML syntax error: %s %s", path,
                               m.line + 1, m.column + 1, parser.problem ? parser.problem : "?",
                               parser.context);
        else
            st = tsr_error_set(TSR_ERR_INVALID, "%s:%zu:%zu: YAML syntax error: %s", path,
                               m.line + 1, m.column + 1, parser.problem ? parser.problem : "?");
        yaml_parser_delete(&parser);
        fclose(f);
        return st;
    }
    loader L = {path, &doc, out};
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || is_null(root)) {
        /* an empty file: nothing given */
    } else if (root->type != YAML_MAPPING_NODE) {
        st = BAD(&L, root, "the config must be a mapping of keys to values (key: value)");
    } else {
        for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
             st == TSR_OK && p < root->data.mapping.pairs.top; p++) {
            const yaml_node_t *k = yaml_document_get_node(&doc, p->key);
            const yaml_node_t *v = yaml_document_get_node(&doc, p->value);
            if (k->type != YAML_SCALAR_NODE) {
                st = BAD(&L, k, "keys must be plain words");
                break;
            }
            for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < p; q++) {
                const yaml_node_t *k2 = yaml_document_get_node(&doc, q->key);
                if (k2->type == YAML_SCALAR_NODE && !strcmp(scalar(k2), scalar(k))) {
                    st =
                        BAD(&L, k, "duplicate key '%s' (first at line %d)", scalar(k), line_of(k2));
                    break;
                }
            }
            if (st == TSR_OK)
                st = get_key(&L, scalar(k), k, v);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return st;
}

/* ---- merge ---- */

static void take_str(char **dst, char **src) {
    if (*src) {
        free(*dst);
        *dst = *src;
        *src = NULL;
    }
}

static void take_strv(tsr_launch_strv *dst, tsr_launch_strv *src) {
    if (src->n) {
        tsr_launch_strv_free(dst);
        *dst = *src;
        memset(src, 0, sizeof *src);
    }
}

tsr_status tsr_launch_config_merge(tsr_launch_config *base, tsr_launch_config *over) {
    if (over->command >= 0)
        base->command = over->command;
    take_str(&base->model, &over->model);
    take_str(&base->tessera, &over->tessera);
    if (over->tp)
        base->tp = over->tp;
    if (over->pp)
        base->pp = over->pp;
    if (over->n_pp_layers) {
        memcpy(base->pp_layers, over->pp_layers, sizeof base->pp_layers);
        base->n_pp_layers = over->n_pp_layers;
    }
    take_str(&base->host, &over->host);
    if (over->port)
        base->port = over->port;
    take_str(&base->auth_token_file, &over->auth_token_file);
    take_str(&base->tls_cert, &over->tls_cert);
    take_str(&base->tls_key, &over->tls_key);
    /* --hosts and --hostfile each replace both of the file's */
    if (over->hosts.n || over->hostfile) {
        tsr_launch_strv_free(&base->hosts);
        free(base->hostfile);
        base->hostfile = NULL;
    }
    take_strv(&base->hosts, &over->hosts);
    take_str(&base->hostfile, &over->hostfile);
    if (over->np)
        base->np = over->np;
    if (over->oversubscribe >= 0)
        base->oversubscribe = over->oversubscribe;
    take_str(&base->bind_to, &over->bind_to);
    if (over->cpus_per_rank)
        base->cpus_per_rank = over->cpus_per_rank;
    TSR_TRY(tsr_launch_strv_extend(&base->env, &over->env));
    tsr_launch_strv_free(&over->env);
    take_str(&base->mpirun, &over->mpirun);
    take_str(&base->srun, &over->srun);
    TSR_TRY(tsr_launch_strv_extend(&base->mpi_args, &over->mpi_args));
    tsr_launch_strv_free(&over->mpi_args);
    TSR_TRY(tsr_launch_strv_extend(&base->srun_args, &over->srun_args));
    tsr_launch_strv_free(&over->srun_args);
    take_str(&base->runner, &over->runner);
    if (over->stop_timeout >= 0)
        base->stop_timeout = over->stop_timeout;
    for (int c = 0; c < TSR_LAUNCH_N_COMMANDS; c++) {
        tsr_launch_flags *b = &base->args[c], *o = &over->args[c];
        /* drop the file's flags that the command line gives again */
        size_t keep = 0;
        for (size_t i = 0; i < b->n; i++) {
            if (tsr_launch_flags_find(o, b->v[i].name))
                flag_free(&b->v[i]);
            else
                b->v[keep++] = b->v[i];
        }
        b->n = keep;
        for (size_t i = 0; i < o->n; i++) {
            if (!o->v[i].values.n)
                TSR_TRY(tsr_launch_flags_add(b, o->v[i].name, NULL));
            for (size_t j = 0; j < o->v[i].values.n; j++)
                TSR_TRY(tsr_launch_flags_add(b, o->v[i].name, o->v[i].values.v[j]));
        }
        tsr_launch_flags_free(o);
    }
    return TSR_OK;
}

void tsr_launch_config_free(tsr_launch_config *c) {
    if (!c)
        return;
    free(c->model);
    free(c->tessera);
    free(c->host);
    free(c->auth_token_file);
    free(c->tls_cert);
    free(c->tls_key);
    tsr_launch_strv_free(&c->hosts);
    free(c->hostfile);
    free(c->bind_to);
    tsr_launch_strv_free(&c->env);
    free(c->mpirun);
    free(c->srun);
    tsr_launch_strv_free(&c->mpi_args);
    tsr_launch_strv_free(&c->srun_args);
    free(c->runner);
    for (int i = 0; i < TSR_LAUNCH_N_COMMANDS; i++)
        tsr_launch_flags_free(&c->args[i]);
    tsr_launch_config init = TSR_LAUNCH_CONFIG_INIT;
    *c = init;
}
