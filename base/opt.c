/* base/opt.c - the table-driven option parser and strict value parsers
 * (see opt.h). */
#include "base/opt.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the command line ---------------------------------------------------- */

static const tsr_opt *find_long(const tsr_opt_spec *spec, const char *name, size_t len) {
    for (size_t i = 0; i < spec->n_opts; i++)
        if (strlen(spec->opts[i].name) == len && memcmp(spec->opts[i].name, name, len) == 0)
            return &spec->opts[i];
    return NULL;
}

static const tsr_opt *find_short(const tsr_opt_spec *spec, char c) {
    for (size_t i = 0; i < spec->n_opts; i++)
        if (spec->opts[i].short_name && spec->opts[i].short_name == c)
            return &spec->opts[i];
    return NULL;
}

/* "a, b, c": the command words, for messages. */
static void command_list(const tsr_opt_spec *spec, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < spec->n_cmds && n < cap; k++) {
        int w = snprintf(buf + n, cap - n, "%s%s", k ? ", " : "", spec->cmds[k].name);
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

const char *tsr_opt_name(const tsr_opt_spec *spec, int id) {
    for (size_t i = 0; i < spec->n_opts; i++)
        if (spec->opts[i].id == id)
            return spec->opts[i].name;
    return "?";
}

static void record(tsr_opt_args *a, int id, const char *value) {
    a->items[a->n_items++] = (tsr_opt_item){id, value};
    a->val[id] = value;
}

tsr_status tsr_opt_parse(const tsr_opt_spec *spec, int argc, char **argv, int first,
                         tsr_opt_args *a) {
    memset(a, 0, sizeof *a);
    a->val = calloc(spec->n_ids > 0 ? (size_t)spec->n_ids : 1, sizeof *a->val);
    a->items = calloc(argc > 0 ? (size_t)argc : 1, sizeof *a->items);
    if (!a->val || !a->items)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory reading the command line");
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] == '-' && arg[1] != '\0' && arg[1] != '-') {
            const tsr_opt *o = arg[2] == '\0' ? find_short(spec, arg[1]) : NULL;
            if (!o)
                return tsr_error_set(TSR_ERR_INVALID, "unknown flag '%s'", arg);
            if (o->takes_value) {
                if (i + 1 >= argc)
                    return tsr_error_set(TSR_ERR_INVALID, "-%c needs a value", o->short_name);
                record(a, o->id, argv[++i]);
            } else {
                record(a, o->id, "1");
            }
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            if (spec->n_cmds && !a->cmd_name) {
                for (size_t k = 0; k < spec->n_cmds; k++)
                    if (strcmp(arg, spec->cmds[k].name) == 0)
                        a->cmd = spec->cmds[k].bit;
                if (!a->cmd) {
                    char list[512];
                    command_list(spec, list, sizeof list);
                    return tsr_error_set(TSR_ERR_INVALID, "unknown command '%s' (commands: %s)",
                                         arg, list);
                }
                a->cmd_name = arg;
                continue;
            }
            return tsr_error_set(TSR_ERR_INVALID, "unexpected argument '%s'%s%s", arg,
                                 spec->extra_hint ? " " : "",
                                 spec->extra_hint ? spec->extra_hint : "");
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const tsr_opt *o = name_len ? find_long(spec, name, name_len) : NULL;
        if (!o)
            return tsr_error_set(TSR_ERR_INVALID, "unknown flag '--%.*s'", (int)name_len, name);
        const char *value = "1";
        if (o->takes_value) {
            if (eq) {
                value = eq + 1;
            } else {
                if (i + 1 >= argc)
                    return tsr_error_set(TSR_ERR_INVALID, "--%s needs a value", o->name);
                value = argv[++i];
            }
        } else if (eq) {
            return tsr_error_set(TSR_ERR_INVALID, "--%s takes no value", o->name);
        }
        record(a, o->id, value);
    }
    return TSR_OK;
}

tsr_status tsr_opt_check_cmd(const tsr_opt_spec *spec, const tsr_opt_args *a) {
    if (spec->n_cmds && !a->cmd) {
        char list[512];
        command_list(spec, list, sizeof list);
        return tsr_error_set(TSR_ERR_INVALID, "no command given (%s)", list);
    }
    if (!a->cmd)
        return TSR_OK;
    for (size_t i = 0; i < spec->n_opts; i++) {
        const tsr_opt *o = &spec->opts[i];
        if (a->val[o->id] && !(o->cmds & a->cmd))
            return tsr_error_set(TSR_ERR_INVALID, "--%s does not apply to '%s'", o->name,
                                 a->cmd_name);
    }
    return TSR_OK;
}

void tsr_opt_args_free(tsr_opt_args *a) {
    if (!a)
        return;
    free(a->val);
    free(a->items);
    memset(a, 0, sizeof *a);
}

size_t tsr_opt_values(const tsr_opt_args *a, int id, const char **out, size_t cap) {
    size_t n = 0;
    for (size_t k = 0; k < a->n_items; k++)
        if (a->items[k].id == id) {
            if (n < cap)
                out[n] = a->items[k].value;
            n++;
        }
    return n;
}

tsr_status tsr_opt_get_i32(const tsr_opt_spec *spec, const tsr_opt_args *a, int id, int32_t *out) {
    const char *v = a->val[id];
    if (v && tsr_opt_parse_i32(v, out) != 0)
        return tsr_error_set(TSR_ERR_INVALID, "--%s expects an integer, got '%s'",
                             tsr_opt_name(spec, id), v);
    return TSR_OK;
}

tsr_status tsr_opt_get_int(const tsr_opt_spec *spec, const tsr_opt_args *a, int id, int lo, int hi,
                           int *out) {
    const char *v = a->val[id];
    int32_t x;
    if (!v)
        return TSR_OK;
    if (tsr_opt_parse_i32(v, &x) != 0 || x < lo || x > hi)
        return tsr_error_set(TSR_ERR_INVALID, "--%s expects an integer in [%d, %d], got '%s'",
                             tsr_opt_name(spec, id), lo, hi, v);
    *out = (int)x;
    return TSR_OK;
}

tsr_status tsr_opt_get_f32(const tsr_opt_spec *spec, const tsr_opt_args *a, int id, float *out) {
    const char *v = a->val[id];
    if (v && tsr_opt_parse_f32(v, out) != 0)
        return tsr_error_set(TSR_ERR_INVALID, "--%s expects a number, got '%s'",
                             tsr_opt_name(spec, id), v);
    return TSR_OK;
}

/* ---- values -------------------------------------------------------------- */

/* 1 when only blanks remain at p. */
static int only_blanks(const char *p) {
    while (*p && isspace((unsigned char)*p))
        p++;
    return *p == '\0';
}

int tsr_opt_parse_i32(const char *s, int32_t *out) {
    if (!s || only_blanks(s))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !only_blanks(end) || v < INT32_MIN || v > INT32_MAX)
        return -1;
    *out = (int32_t)v;
    return 0;
}

int tsr_opt_parse_u64(const char *s, uint64_t *out) {
    if (!s)
        return -1;
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s)) /* strtoull accepts "-1" and wraps it */
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !only_blanks(end))
        return -1;
    *out = (uint64_t)v;
    return 0;
}

int tsr_opt_parse_f64(const char *s, double *out) {
    if (!s || only_blanks(s))
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || !only_blanks(end) || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

int tsr_opt_parse_f32(const char *s, float *out) {
    double v;
    if (tsr_opt_parse_f64(s, &v) != 0 || fabs(v) > 3.4e38)
        return -1;
    *out = (float)v;
    return 0;
}
