/* tests/common/check.h - the check helpers every C test shares: CHECK and
 * EXPECT macros that print file:line, a count of checks run and of failed
 * EXPECTs, the "failed with this status and a message containing ..." check,
 * a seeded RNG on base/rng.h, and float comparisons against a double
 * reference with a relative tolerance.
 *
 *   CHECK(cond, fmt, ...)    ends the test (exit 1) when cond is false
 *   EXPECT(cond, fmt, ...)   reports and counts a failure, goes on; main
 *                            returns tu_failures != 0
 *   CHECK_OK(call)           call must return TSR_OK
 *   CHECK_ERR(call, want, "sub", ...)  call must return want with a message
 *                            containing every substring
 *   CHECK_HAS(text, sub)     text must contain sub
 *   CHECK_CLOSE(what, got, want, n, rtol, scale, floor)  see tu_close
 * The message is optional: CHECK(p != NULL) prints the condition alone.
 *
 * A program whose failures must end more than itself (an MPI job: one rank
 * exiting alone leaves the others waiting) defines TU_FAIL_PREFIX() (prints
 * what goes before file:line, e.g. the rank) and TU_FAIL_EXIT() (ends it all)
 * before including this header; tests/comm/comm_test.h does.
 *
 * What it is not: a test framework. No registration, no fixtures; a test is a
 * main() that calls its cases in order. Function bodies live here (static
 * inline) because each test is one translation unit and this header is all the
 * shared code there is. */
#ifndef TSR_TESTS_COMMON_CHECK_H
#define TSR_TESTS_COMMON_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/status.h"

#ifndef TU_FAIL_PREFIX
#define TU_FAIL_PREFIX() ((void)0)
#endif
#ifndef TU_FAIL_EXIT
#define TU_FAIL_EXIT() exit(1)
#endif

/* Checks run (CHECK, EXPECT and the macros built on them) and EXPECTs that
 * failed, in this test program. */
static int tu_checks __attribute__((unused));
static int tu_failures __attribute__((unused));

/* Prints "file:line: FAIL: cond: message" and the library's last error.
 * `fmt` starts with a space (the macros prepend one, so that a check without
 * a message still gives a valid format). */
__attribute__((format(printf, 4, 5))) static inline void
tu_report_(const char *file, int line, const char *cond, const char *fmt, ...) {
    TU_FAIL_PREFIX();
    fprintf(stderr, "%s:%d: FAIL: %s:", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  last error: %s\n", tsr_error_msg());
    fflush(stderr);
}

/* Ends the test when `cond` is false. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        tu_checks++;                                                                               \
        if (!(cond)) {                                                                             \
            tu_report_(__FILE__, __LINE__, #cond, " " __VA_ARGS__);                                \
            TU_FAIL_EXIT();                                                                        \
        }                                                                                          \
    } while (0)

/* Reports and counts a failure when `cond` is false, and goes on. */
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        tu_checks++;                                                                               \
        if (!(cond)) {                                                                             \
            tu_report_(__FILE__, __LINE__, #cond, " " __VA_ARGS__);                                \
            tu_failures++;                                                                         \
        }                                                                                          \
    } while (0)

/* `call` must return TSR_OK. */
#define CHECK_OK(call)                                                                             \
    do {                                                                                           \
        tsr_status chk_s_ = (call);                                                                \
        CHECK(chk_s_ == TSR_OK, "%s returned %s", #call, tsr_status_str(chk_s_));                  \
    } while (0)

/* `text` must contain `sub`. */
#define CHECK_HAS(text, sub)                                                                       \
    do {                                                                                           \
        const char *chk_t_ = (text), *chk_u_ = (sub);                                              \
        CHECK(chk_t_ &&strstr(chk_t_, chk_u_), "\"%s\" lacks \"%s\"", chk_t_ ? chk_t_ : "(null)",  \
              chk_u_);                                                                             \
    } while (0)

/* `call` must return `want` with a message containing every given substring
 * (give "" for no substring). */
#define CHECK_ERR(call, want, ...)                                                                 \
    do {                                                                                           \
        tsr_error_clear();                                                                         \
        tsr_status chk_s_ = (call);                                                                \
        CHECK(chk_s_ == (want), "%s returned %s, want %s", #call, tsr_status_str(chk_s_),          \
              tsr_status_str(want));                                                               \
        CHECK(tsr_error_msg()[0] != '\0', "%s failed without a message", #call);                   \
        const char *chk_subs_[] = {__VA_ARGS__};                                                   \
        for (size_t chk_k_ = 0; chk_k_ < sizeof chk_subs_ / sizeof chk_subs_[0]; chk_k_++)         \
            CHECK(strstr(tsr_error_msg(), chk_subs_[chk_k_]), "message lacks \"%s\"",              \
                  chk_subs_[chk_k_]);                                                              \
    } while (0)

/* ---- seeded RNG (splitmix64: tiny, full period, good enough for tests) ---- */

typedef struct {
    uint64_t s;
} tu_rng;

static inline uint64_t tu_rng_u64(tu_rng *r) { return tsr_splitmix64(&r->s); }

/* Uniform in [0, n); n > 0. */
static inline uint64_t tu_rng_below(tu_rng *r, uint64_t n) { return tu_rng_u64(r) % n; }

/* Uniform double in [0, 1). */
static inline double tu_rng_unit(tu_rng *r) { return (double)(tu_rng_u64(r) >> 11) * 0x1.0p-53; }

/* Uniform float in [lo, hi), never exactly 0 (tests use no zeros). */
static inline float tu_rng_float(tu_rng *r, float lo, float hi) {
    for (;;) {
        float f = (float)(lo + (hi - lo) * tu_rng_unit(r));
        if (f != 0.0f)
            return f;
    }
}

static inline void tu_rng_fill(tu_rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++)
        x[i] = tu_rng_float(r, lo, hi);
}

/* Fisher-Yates shuffle of n ints. */
static inline void tu_shuffle_int(tu_rng *r, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)tu_rng_below(r, (uint64_t)i + 1), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ---- comparisons ---------------------------------------------------------- */

/* Checks |got[i] - want[i]| <= rtol * scale_i for every i, where scale_i is
 * scale[i] when `scale` is given, else max(|want[i]|, floor). Prints the
 * first offender (with `what`) and returns 0 on failure, 1 when all agree.
 * Also returns 0 when got[i] is NaN and want[i] is not. */
static inline int tu_close(const char *what, const float *got, const double *want, size_t n,
                           double rtol, const double *scale, double floor) {
    for (size_t i = 0; i < n; i++) {
        double s = scale ? scale[i] : fmax(fabs(want[i]), floor);
        double err = fabs((double)got[i] - want[i]);
        if (!(err <= rtol * s)) {
            fprintf(stderr, "  %s: element %zu: got %.9g, want %.9g (error %.3g, allowed %.3g)\n",
                    what, i, (double)got[i], want[i], err, rtol * s);
            return 0;
        }
    }
    return 1;
}

/* CHECK that float results match a double reference (see tu_close). */
#define CHECK_CLOSE(what, got, want, n, rtol, scale, floor)                                        \
    CHECK(tu_close((what), (got), (want), (n), (rtol), (scale), (floor)),                          \
          "%s differs from the "                                                                   \
          "reference",                                                                             \
          (what))

/* Largest |x[i]| (for tolerances relative to the size of a whole result). */
static inline double tu_max_abs(const double *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(x[i]) > m)
            m = fabs(x[i]);
    return m;
}

/* malloc that ends the test on failure. */
static inline void *tu_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    CHECK(p != NULL, "out of memory allocating %zu bytes", n);
    return p;
}

#endif
