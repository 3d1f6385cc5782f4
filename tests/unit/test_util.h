/* tests/unit/test_util.h - the few helpers the C unit tests share: check
 * macros that print file:line and end the test, a seeded RNG, and a
 * relative-error comparison against a double-precision reference.
 *
 * What it is not: a test framework. No registration, no fixtures; a test is a
 * main() that calls its cases in order and exits 0, or 1 at the first failed
 * check. Function bodies live here (static inline) because each test is one
 * translation unit and this header is all the shared code there is. */
#ifndef TSR_TESTS_UNIT_TEST_UTIL_H
#define TSR_TESTS_UNIT_TEST_UTIL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/rng.h"

/* Ends the test with "file:line: FAIL: cond: message" and the library's last
 * error message when `cond` is false. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FAIL: %s: ", __FILE__, __LINE__, #cond);                       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n  last error: %s\n", tsr_error_msg());                              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* `call` must return TSR_OK. */
#define CHECK_OK(call)                                                                             \
    do {                                                                                           \
        tsr_status chk_s_ = (call);                                                                \
        CHECK(chk_s_ == TSR_OK, "%s returned %s", #call, tsr_status_str(chk_s_));                  \
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
static inline double tu_rng_unit(tu_rng *r) {
    return (double)(tu_rng_u64(r) >> 11) * 0x1.0p-53;
}

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
    CHECK(tu_close((what), (got), (want), (n), (rtol), (scale), (floor)), "%s differs from the "   \
          "reference", (what))

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
    if (!p) {
        fprintf(stderr, "FAIL: out of memory allocating %zu bytes\n", n);
        exit(1);
    }
    return p;
}

#endif
