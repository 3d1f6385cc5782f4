/* tests/unit/test_opt.c - base/opt.h: the table-driven option parser (both
 * value spellings, switches, short flags, repeated options, commands and
 * their masks, every error message) and the strict number parsers (moved
 * here from tests/cli/test_cli_parse.c with their checks). Exits 0, or 1 at
 * the first failed check. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/opt.h"
#include "tests/common/check.h"

enum { CMD_RUN = 1u << 0, CMD_SHOW = 1u << 1 };
enum { O_MODEL, O_STOP, O_VERBOSE, O_CTX, O_COUNT_, O_LIMIT, O__N };

static const tsr_opt k_opts[] = {
    {"model", O_MODEL, 1, TSR_OPT_ANY, 0},       {"stop", O_STOP, 1, CMD_RUN, 0},
    {"verbose", O_VERBOSE, 0, TSR_OPT_ANY, 'v'}, {"ctx", O_CTX, 1, CMD_RUN, 0},
    {"ctx-size", O_CTX, 1, CMD_RUN, 0},          {"count", O_COUNT_, 1, CMD_SHOW, 'n'},
    {"limit", O_LIMIT, 1, TSR_OPT_ANY, 0},
};
static const tsr_opt_cmd k_cmds[] = {{"run", CMD_RUN}, {"show", CMD_SHOW}};

static const tsr_opt_spec k_spec = {k_opts, sizeof k_opts / sizeof k_opts[0], O__N, k_cmds,
                                    2,      "(values follow their flag)"};
static const tsr_opt_spec k_plain = {k_opts, sizeof k_opts / sizeof k_opts[0], O__N, NULL, 0, NULL};

/* Parses the NULL-terminated words (argv[0] is "prog") against spec. */
static tsr_status parse(const tsr_opt_spec *spec, tsr_opt_args *a, const char **words) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"prog";
    for (; *words; words++)
        argv[argc++] = (char *)*words;
    return tsr_opt_parse(spec, argc, argv, 1, a);
}

/* The command line must be refused with a message holding `want`. */
static void refused(const tsr_opt_spec *spec, const char **words, const char *want) {
    tsr_opt_args a;
    tsr_error_clear();
    tsr_status st = parse(spec, &a, words);
    if (st == TSR_OK)
        st = tsr_opt_check_cmd(spec, &a);
    CHECK(st == TSR_ERR_INVALID, "%s: accepted", words[0]);
    CHECK(strstr(tsr_error_msg(), want), "message '%s' lacks '%s'", tsr_error_msg(), want);
    tsr_opt_args_free(&a);
}

static void test_parse(void) {
    tsr_opt_args a;
    const char *w1[] = {"--model", "m.gguf", "run",           "--stop=a",       "-v",
                        "--stop",  "b",      "--ctx-size=64", "--model=n.gguf", NULL};
    CHECK_OK(parse(&k_spec, &a, w1));
    CHECK_OK(tsr_opt_check_cmd(&k_spec, &a));
    CHECK(a.cmd == CMD_RUN && strcmp(a.cmd_name, "run") == 0, "command");
    CHECK(strcmp(a.val[O_MODEL], "n.gguf") == 0, "the last value wins");
    CHECK(strcmp(a.val[O_STOP], "b") == 0 && strcmp(a.val[O_VERBOSE], "1") == 0, "values");
    CHECK(strcmp(a.val[O_CTX], "64") == 0, "an alias shares its id");
    CHECK(a.val[O_LIMIT] == NULL && a.val[O_COUNT_] == NULL, "absent options are NULL");
    const char *stops[4];
    CHECK(tsr_opt_values(&a, O_STOP, stops, 4) == 2, "both --stop");
    CHECK(strcmp(stops[0], "a") == 0 && strcmp(stops[1], "b") == 0, "in order");
    CHECK(tsr_opt_values(&a, O_STOP, stops, 1) == 2, "the count past cap");
    CHECK(a.n_items == 6, "six options given");
    CHECK(strcmp(tsr_opt_name(&k_spec, O_CTX), "ctx") == 0, "the first row's name");
    CHECK(strcmp(tsr_opt_name(&k_spec, 99), "?") == 0, "an unknown id");
    tsr_opt_args_free(&a);
    tsr_opt_args_free(&a); /* emptied: freeing again is harmless */
    tsr_opt_args_free(NULL);

    /* an empty value after '=', and a value that looks like a flag */
    const char *w2[] = {"show", "--model=", "-n", "3", "--limit", "--verbose", NULL};
    CHECK_OK(parse(&k_spec, &a, w2));
    CHECK_OK(tsr_opt_check_cmd(&k_spec, &a));
    CHECK(strcmp(a.val[O_MODEL], "") == 0 && strcmp(a.val[O_COUNT_], "3") == 0, "values");
    CHECK(strcmp(a.val[O_LIMIT], "--verbose") == 0 && !a.val[O_VERBOSE], "taken as a value");
    tsr_opt_args_free(&a);

    /* without commands: every option applies, no word is a command */
    const char *w3[] = {"--stop", "x", "--count=2", NULL};
    CHECK_OK(parse(&k_plain, &a, w3));
    CHECK_OK(tsr_opt_check_cmd(&k_plain, &a));
    CHECK(a.cmd == 0 && a.cmd_name == NULL, "no command");
    tsr_opt_args_free(&a);

    /* --help before a command: parsing succeeds, the check asks for one */
    const char *w4[] = {"--verbose", NULL};
    CHECK_OK(parse(&k_spec, &a, w4));
    CHECK(tsr_opt_check_cmd(&k_spec, &a) == TSR_ERR_INVALID, "no command");
    CHECK(strstr(tsr_error_msg(), "no command given (run, show)"), "%s", tsr_error_msg());
    tsr_opt_args_free(&a);
}

static void test_errors(void) {
    refused(&k_spec, (const char *[]){"run", "--bogus", NULL}, "unknown flag '--bogus'");
    refused(&k_spec, (const char *[]){"run", "--bogus=1", NULL}, "unknown flag '--bogus'");
    refused(&k_spec, (const char *[]){"run", "-x", NULL}, "unknown flag '-x'");
    refused(&k_spec, (const char *[]){"run", "-vv", NULL}, "unknown flag '-vv'");
    refused(&k_spec, (const char *[]){"run", "--", NULL}, "unknown flag '--'");
    refused(&k_spec, (const char *[]){"run", "--model", NULL}, "--model needs a value");
    refused(&k_spec, (const char *[]){"show", "-n", NULL}, "-n needs a value");
    refused(&k_spec, (const char *[]){"run", "--verbose=1", NULL}, "--verbose takes no value");
    refused(&k_spec, (const char *[]){"walk", NULL},
            "unknown command 'walk' (commands: run, show)");
    refused(&k_spec, (const char *[]){"run", "show", NULL},
            "unexpected argument 'show' (values follow their flag)");
    refused(&k_plain, (const char *[]){"run", NULL}, "unexpected argument 'run'");
    refused(&k_spec, (const char *[]){"show", "--stop", "x", NULL},
            "--stop does not apply to 'show'");
    refused(&k_spec, (const char *[]){"show", "--ctx-size", "8", NULL},
            "--ctx does not apply to 'show'");
    refused(&k_spec, (const char *[]){"run", "-n", "2", NULL}, "--count does not apply to 'run'");
}

static void test_getters(void) {
    tsr_opt_args a;
    const char *w[] = {"run", "--ctx", "12", "--limit", "x1", "--model", "2.5", NULL};
    CHECK_OK(parse(&k_spec, &a, w));
    int32_t i = 7;
    int n = 7;
    float f = 0;
    CHECK_OK(tsr_opt_get_i32(&k_spec, &a, O_CTX, &i));
    CHECK(i == 12, "--ctx 12");
    CHECK_OK(tsr_opt_get_int(&k_spec, &a, O_CTX, 8, 16, &n));
    CHECK(n == 12, "--ctx 12 in range");
    n = 7;
    CHECK(tsr_opt_get_int(&k_spec, &a, O_CTX, 13, 16, &n) == TSR_ERR_INVALID && n == 7, "range");
    CHECK(strcmp(tsr_error_msg(), "--ctx expects an integer in [13, 16], got '12'") == 0, "%s",
          tsr_error_msg());
    CHECK(tsr_opt_get_i32(&k_spec, &a, O_LIMIT, &i) == TSR_ERR_INVALID && i == 12, "junk");
    CHECK(strcmp(tsr_error_msg(), "--limit expects an integer, got 'x1'") == 0, "%s",
          tsr_error_msg());
    CHECK(tsr_opt_get_f32(&k_spec, &a, O_LIMIT, &f) == TSR_ERR_INVALID, "junk");
    CHECK(strcmp(tsr_error_msg(), "--limit expects a number, got 'x1'") == 0, "%s",
          tsr_error_msg());
    CHECK_OK(tsr_opt_get_f32(&k_spec, &a, O_MODEL, &f));
    CHECK(f == 2.5f, "2.5");
    i = 7;
    CHECK_OK(tsr_opt_get_i32(&k_spec, &a, O_STOP, &i));
    CHECK(i == 7, "an absent option leaves the value");
    tsr_opt_args_free(&a);
}

/* The number parsers, with tests/cli/test_cli_parse.c's checks. */
static void test_numbers(void) {
    int32_t i = 7;
    CHECK(tsr_opt_parse_i32("42", &i) == 0 && i == 42, "42");
    CHECK(tsr_opt_parse_i32(" -5 ", &i) == 0 && i == -5, "-5");
    CHECK(tsr_opt_parse_i32("2147483647", &i) == 0 && i == INT32_MAX, "INT32_MAX");
    i = 7;
    CHECK(tsr_opt_parse_i32("2147483648", &i) == -1 && i == 7, "overflow");
    CHECK(tsr_opt_parse_i32("1.5", &i) == -1 && i == 7, "a fraction");
    CHECK(tsr_opt_parse_i32("12abc", &i) == -1, "junk");
    CHECK(tsr_opt_parse_i32("", &i) == -1, "empty");
    CHECK(tsr_opt_parse_i32("  ", &i) == -1, "blanks");
    CHECK(tsr_opt_parse_i32(NULL, &i) == -1, "NULL");

    uint64_t u = 0;
    CHECK(tsr_opt_parse_u64("18446744073709551615", &u) == 0 && u == UINT64_MAX, "UINT64_MAX");
    CHECK(tsr_opt_parse_u64("18446744073709551616", &u) == -1, "overflow");
    CHECK(tsr_opt_parse_u64("-1", &u) == -1, "a sign");
    CHECK(tsr_opt_parse_u64("+1", &u) == -1, "a sign");
    CHECK(tsr_opt_parse_u64("0", &u) == 0 && u == 0, "0");

    float f = 0;
    CHECK(tsr_opt_parse_f32("0.9", &f) == 0 && fabsf(f - 0.9f) < 1e-7f, "0.9");
    CHECK(tsr_opt_parse_f32("-0.5", &f) == 0 && f == -0.5f, "-0.5");
    CHECK(tsr_opt_parse_f32("1e-3", &f) == 0 && fabsf(f - 1e-3f) < 1e-9f, "1e-3");
    CHECK(tsr_opt_parse_f32("nan", &f) == -1, "nan");
    CHECK(tsr_opt_parse_f32("inf", &f) == -1, "inf");
    CHECK(tsr_opt_parse_f32("1e39", &f) == -1, "overflows a float");
    CHECK(tsr_opt_parse_f32("0.9x", &f) == -1, "junk");
    double d = 0;
    CHECK(tsr_opt_parse_f64("2.5", &d) == 0 && d == 2.5, "2.5");
    CHECK(tsr_opt_parse_f64("1e400", &d) == -1, "overflow");
}

int main(void) {
    test_parse();
    test_errors();
    test_getters();
    test_numbers();
    printf("test_opt: ok\n");
    return 0;
}
