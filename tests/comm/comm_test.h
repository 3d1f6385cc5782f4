/* tests/comm/comm_test.h - what the multi-rank comm tests share: the checks
 * of tests/common/check.h made to end the whole MPI job (never one rank alone,
 * which would leave the others waiting), seeded data per (case, rank), and one
 * set of collective checks that runs on any group whose buffers are reached
 * through a small memory table (host memory for MPI, device memory for NCCL).
 *
 * Every rank generates its data from an RNG keyed by (case, group rank), so
 * every rank can compute the expected result of a collective by itself.
 *
 * What it is not: a framework. Each test is a main() that runs its cases in
 * order; function bodies live here (static) because each test is one
 * translation unit. */
#ifndef TSR_TESTS_COMM_COMM_TEST_H
#define TSR_TESTS_COMM_COMM_TEST_H

#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/status.h"
#include "comm/comm.h"
#include "kernels/dtype.h"

/* This process's world rank and size, for failure messages (set by main). */
static int ct_rank, ct_world = 1;

/* Failures end the whole job with "[rank r/N] file:line: FAIL: ...". */
#define TU_FAIL_PREFIX() fprintf(stderr, "[rank %d/%d] ", ct_rank, ct_world)
#define TU_FAIL_EXIT() MPI_Abort(MPI_COMM_WORLD, 1)
#include "tests/common/check.h"

/* Prints on world rank 0 only. */
#define SAY(...)                                                                                   \
    do {                                                                                           \
        if (ct_rank == 0) {                                                                        \
            printf(__VA_ARGS__);                                                                   \
            fflush(stdout);                                                                        \
        }                                                                                          \
    } while (0)

/* ---- seeded data ---- */

/* The stream of case `seed` on group rank `rank`. */
static inline tu_rng ct_rng_for(uint64_t seed, int rank) {
    tu_rng r = {seed * 0x100000001b3ull + (uint64_t)rank * 0x9e3779b97f4a7c15ull + 1};
    tu_rng_u64(&r);
    return r;
}

/* ---- typed buffers ---- */

static const int ct_dtypes[] = {TSR_F32, TSR_COMM_I32, TSR_BF16, TSR_F16};
#define CT_NDTYPES (sizeof ct_dtypes / sizeof ct_dtypes[0])

static inline size_t ct_esize(int dtype) {
    return dtype == TSR_F32 || dtype == TSR_COMM_I32 ? 4 : 2;
}

static inline const char *ct_dname(int dtype) {
    switch (dtype) {
    case TSR_F32: return "f32";
    case TSR_COMM_I32: return "i32";
    case TSR_BF16: return "bf16";
    case TSR_F16: return "f16";
    }
    return "?";
}

/* Element i of a host buffer, as a double. */
static inline double ct_get(int dtype, const void *buf, size_t i) {
    switch (dtype) {
    case TSR_F32: return ((const float *)buf)[i];
    case TSR_COMM_I32: return ((const int32_t *)buf)[i];
    case TSR_BF16: return tsr_bf16_to_f32(((const uint16_t *)buf)[i]);
    case TSR_F16: return tsr_f16_to_f32(((const uint16_t *)buf)[i]);
    }
    return NAN;
}

/* Fills n elements with group rank `rank`'s data for case `seed`: floats in
 * [-1, 1) (rounded to the 16-bit types), int32 in [-1000, 1000]. When
 * `small_ints`, every value is an integer in [-8, 8] (exact in every type). */
static inline void ct_fill(int dtype, uint64_t seed, int rank, size_t n, int small_ints,
                           void *out) {
    tu_rng r = ct_rng_for(seed, rank);
    for (size_t i = 0; i < n; i++) {
        float f = small_ints ? (float)((int)(tu_rng_u64(&r) % 17) - 8) : tu_rng_float(&r, -1, 1);
        switch (dtype) {
        case TSR_F32: ((float *)out)[i] = f; break;
        case TSR_COMM_I32:
            ((int32_t *)out)[i] = small_ints ? (int32_t)f : (int32_t)(tu_rng_u64(&r) % 2001) - 1000;
            break;
        case TSR_BF16: ((uint16_t *)out)[i] = tsr_f32_to_bf16(f); break;
        case TSR_F16: ((uint16_t *)out)[i] = tsr_f32_to_f16(f); break;
        }
    }
}

/* A 64-bit FNV-1a hash of a buffer's bytes. */
static inline uint64_t ct_hash(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* ---- where the buffers live ---- */

typedef struct {
    const char *name;
    void *(*alloc)(size_t bytes);
    void (*release)(void *p);
    void (*put)(void *dst, const void *host_src, size_t bytes);
    void (*get)(void *host_dst, const void *src, size_t bytes);
} ct_mem;

static inline void *host_alloc(size_t n) { return tu_xmalloc(n); }
static inline void host_release(void *p) { free(p); }
static inline void host_copy(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }

static const ct_mem ct_host_mem = {
    /* .name = */ "host",
    /* .alloc = */ host_alloc,
    /* .release = */ host_release,
    /* .put = */ host_copy,
    /* .get = */ host_copy,
};

/* Every rank of `g` must hold the same bytes: group rank 0's hash is
 * broadcast (over the control plane, host memory on every backend) and
 * compared. */
static inline void ct_check_same_everywhere(tsr_comm_group_t *g, const void *host, size_t bytes,
                                            const char *what) {
    uint64_t mine = ct_hash(host, bytes), root = mine;
    CHECK_OK(tsr_comm_bcast_idle(g, &root, sizeof root, 0));
    CHECK(root == mine, "%s: this rank holds different bytes from group rank 0", what);
}

/* ---- the collective checks ---- */

static const size_t ct_sizes[] = {1, 3, 1000, 65537};
#define CT_NSIZES (sizeof ct_sizes / sizeof ct_sizes[0])

/* One all-reduce of n elements of dt on every rank's data for case `seed`
 * (small integers when `ints`), against a double reference computed from
 * every rank's data. */
static inline void ct_allreduce_case(tsr_comm_group_t *g, const ct_mem *m, int dt, size_t n,
                                     tsr_comm_op op, int in_place, int ints, uint64_t seed) {
    int rank = tsr_comm_rank(g), size = tsr_comm_size(g);
    size_t bytes = n * ct_esize(dt);
    void *mine = tu_xmalloc(bytes), *other = tu_xmalloc(bytes), *got = tu_xmalloc(bytes);
    double *want = tu_xmalloc(n * sizeof(double)), *abs_sum = tu_xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        want[i] = op == TSR_COMM_SUM ? 0 : -INFINITY;
        abs_sum[i] = 0;
    }
    for (int r = 0; r < size; r++) {
        ct_fill(dt, seed, r, n, ints, other);
        if (r == rank)
            memcpy(mine, other, bytes);
        for (size_t i = 0; i < n; i++) {
            double v = ct_get(dt, other, i);
            want[i] = op == TSR_COMM_SUM ? want[i] + v : fmax(want[i], v);
            abs_sum[i] += fabs(v);
        }
    }
    void *dsend = m->alloc(bytes);
    void *drecv = in_place ? dsend : m->alloc(bytes);
    m->put(dsend, mine, bytes);
    CHECK_OK(tsr_comm_allreduce(g, dsend, drecv, n, dt, op));
    m->get(got, drecv, bytes);
    if (!in_place) { /* the send buffer is left alone */
        m->get(other, dsend, bytes);
        CHECK(memcmp(other, mine, bytes) == 0, "out-of-place all-reduce changed its send buffer");
    }
    /* Rounding: each of the size-1 additions rounds once, by at most half an
     * ulp of a partial sum, itself <= abs_sum (plus f16's subnormal step).
     * Max, integers and small-integer sums are exact. */
    double ulp = dt == TSR_F32 ? 0x1p-23 : dt == TSR_BF16 ? 0x1p-7 : 0x1p-10;
    double tiny = dt == TSR_F16 ? 0x1p-24 : 0;
    int exact = op == TSR_COMM_MAX || ints || dt == TSR_COMM_I32;
    for (size_t i = 0; i < n; i++) {
        double v = ct_get(dt, got, i);
        double tol = exact ? 0 : 0.5 * ulp * abs_sum[i] * (size - 1) + tiny;
        CHECK(fabs(v - want[i]) <= tol,
              "all-reduce %s %s n=%zu %s%s: element %zu = %.9g, want %.9g (tolerance %.3g)",
              op == TSR_COMM_SUM ? "sum" : "max", ct_dname(dt), n,
              in_place ? "in place" : "out of place", ints ? ", small integers" : "", i, v, want[i],
              tol);
    }
    /* Tensor parallelism needs every rank to hold the same bits. */
    ct_check_same_everywhere(g, got, bytes, "all-reduce result");
    m->release(dsend);
    if (!in_place)
        m->release(drecv);
    free(mine);
    free(other);
    free(got);
    free(want);
    free(abs_sum);
}

/* All-reduce sum and max for every dtype and size, in place and out of
 * place, on random floats and on small integers. */
static inline void ct_allreduce(tsr_comm_group_t *g, const ct_mem *m) {
    uint64_t seed = 100;
    for (size_t d = 0; d < CT_NDTYPES; d++)
        for (size_t s = 0; s < CT_NSIZES; s++)
            for (int op = 0; op < 2; op++)
                for (int in_place = 0; in_place < 2; in_place++)
                    for (int ints = 0; ints < 2; ints++)
                        ct_allreduce_case(g, m, ct_dtypes[d], ct_sizes[s], (tsr_comm_op)op,
                                          in_place, ints, ++seed);
    SAY("ok   all-reduce sum/max: f32 i32 bf16 f16 x n=1,3,1000,65537 x in/out of place (%s)\n",
        m->name);
}

/* Argmax with frequent ties: values from {0,1,2,3}, distinct indices, so the
 * lowest index among the ranks holding the maximum must win. */
static inline void ct_argmax(tsr_comm_group_t *g) {
    int rank = tsr_comm_rank(g), size = tsr_comm_size(g);
    for (int all_equal = 0; all_equal < 2; all_equal++) {
        size_t n = 1000;
        float *v = tu_xmalloc(n * sizeof *v), *want_v = tu_xmalloc(n * sizeof *v);
        int32_t *ix = tu_xmalloc(n * sizeof *ix), *want_i = tu_xmalloc(n * sizeof *ix);
        for (size_t i = 0; i < n; i++) {
            want_v[i] = -INFINITY;
            want_i[i] = INT32_MAX;
        }
        for (int r = 0; r < size; r++) {
            tu_rng rng = ct_rng_for(7 + (uint64_t)all_equal, r);
            for (size_t i = 0; i < n; i++) {
                float val = all_equal ? 1.5f : (float)(tu_rng_u64(&rng) % 4);
                /* distinct across ranks; which rank has the lowest varies */
                int32_t idx = (int32_t)(tu_rng_u64(&rng) % 100000) * size + r;
                if (r == rank) {
                    v[i] = val;
                    ix[i] = idx;
                }
                if (val > want_v[i] || (val == want_v[i] && idx < want_i[i])) {
                    want_v[i] = val;
                    want_i[i] = idx;
                }
            }
        }
        CHECK_OK(tsr_comm_allreduce_argmax(g, v, ix, n));
        for (size_t i = 0; i < n; i++)
            CHECK(v[i] == want_v[i] && ix[i] == want_i[i],
                  "argmax%s element %zu: (%g, %d), want (%g, %d)", all_equal ? " all equal" : "", i,
                  (double)v[i], ix[i], (double)want_v[i], want_i[i]);
        free(v);
        free(want_v);
        free(ix);
        free(want_i);
    }
    SAY("ok   argmax with ties (lowest index wins)\n");
}

static inline void ct_allgather(tsr_comm_group_t *g, const ct_mem *m) {
    int rank = tsr_comm_rank(g), size = tsr_comm_size(g);
    for (size_t d = 0; d < CT_NDTYPES; d++)
        for (size_t s = 0; s < CT_NSIZES; s++) {
            int dt = ct_dtypes[d];
            size_t n = ct_sizes[s], bytes = n * ct_esize(dt);
            uint64_t seed = 300 + d * 10 + s;
            unsigned char *mine = tu_xmalloc(bytes), *want = tu_xmalloc(bytes * (size_t)size),
                          *got = tu_xmalloc(bytes * (size_t)size);
            for (int r = 0; r < size; r++)
                ct_fill(dt, seed, r, n, 0, want + (size_t)r * bytes);
            memcpy(mine, want + (size_t)rank * bytes, bytes);
            void *dsend = m->alloc(bytes), *drecv = m->alloc(bytes * (size_t)size);
            m->put(dsend, mine, bytes);
            CHECK_OK(tsr_comm_allgather(g, dsend, drecv, n, dt));
            m->get(got, drecv, bytes * (size_t)size);
            CHECK(memcmp(got, want, bytes * (size_t)size) == 0, "all-gather %s n=%zu differs",
                  ct_dname(dt), n);
            m->release(dsend);
            m->release(drecv);
            free(mine);
            free(want);
            free(got);
        }
    SAY("ok   all-gather: every dtype and size\n");
}

static inline void ct_broadcast(tsr_comm_group_t *g, const ct_mem *m) {
    int rank = tsr_comm_rank(g), size = tsr_comm_size(g);
    for (int root = 0; root < size; root++)
        for (size_t d = 0; d < CT_NDTYPES; d++)
            for (size_t s = 0; s < CT_NSIZES; s++) {
                int dt = ct_dtypes[d];
                size_t n = ct_sizes[s], bytes = n * ct_esize(dt);
                uint64_t seed = 500 + d * 10 + s;
                void *want = tu_xmalloc(bytes), *got = tu_xmalloc(bytes);
                ct_fill(dt, seed, root, n, 0, want);
                /* non-roots start from their own, different data */
                ct_fill(dt, seed, rank, n, 0, got);
                void *buf = m->alloc(bytes);
                m->put(buf, got, bytes);
                CHECK_OK(tsr_comm_broadcast(g, buf, n, dt, root));
                m->get(got, buf, bytes);
                CHECK(memcmp(got, want, bytes) == 0, "broadcast from %d, %s n=%zu differs", root,
                      ct_dname(dt), n);
                m->release(buf);
                free(want);
                free(got);
            }
    SAY("ok   broadcast from every root\n");
}

/* A ring: every rank sends to rank+1 and receives from rank-1. Even ranks
 * send first, odd ranks receive first, so blocking calls cannot deadlock. */
static inline void ct_ring(tsr_comm_group_t *g, const ct_mem *m) {
    int rank = tsr_comm_rank(g), size = tsr_comm_size(g);
    if (size < 2) {
        SAY("skip send/recv ring (one rank)\n");
        return;
    }
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    for (size_t d = 0; d < CT_NDTYPES; d++)
        for (size_t s = 0; s < CT_NSIZES; s++) {
            int dt = ct_dtypes[d];
            size_t n = ct_sizes[s], bytes = n * ct_esize(dt);
            uint64_t seed = 700 + d * 10 + s;
            void *mine = tu_xmalloc(bytes), *want = tu_xmalloc(bytes), *got = tu_xmalloc(bytes);
            ct_fill(dt, seed, rank, n, 0, mine);
            ct_fill(dt, seed, prev, n, 0, want);
            void *sbuf = m->alloc(bytes), *rbuf = m->alloc(bytes);
            m->put(sbuf, mine, bytes);
            int tag = (int)(d * 10 + s);
            if (rank % 2 == 0) {
                CHECK_OK(tsr_comm_send(g, sbuf, n, dt, next, tag));
                CHECK_OK(tsr_comm_recv(g, rbuf, n, dt, prev, tag));
            } else {
                CHECK_OK(tsr_comm_recv(g, rbuf, n, dt, prev, tag));
                CHECK_OK(tsr_comm_send(g, sbuf, n, dt, next, tag));
            }
            m->get(got, rbuf, bytes);
            CHECK(memcmp(got, want, bytes) == 0, "ring %s n=%zu: data from rank %d differs",
                  ct_dname(dt), n, prev);
            m->release(sbuf);
            m->release(rbuf);
            free(mine);
            free(want);
            free(got);
        }
    SAY("ok   send/recv ring\n");
}

/* Nobody leaves the barrier before rank 0 has entered it: rank 0 creates a
 * file (late) just before the barrier; every rank must see it right after. */
static inline void ct_barrier(tsr_comm_group_t *g) {
    int rank = tsr_comm_rank(g);
    char path[128] = "";
    if (rank == 0)
        snprintf(path, sizeof path, "/tmp/tsr_comm_barrier_%d_%ld", (int)getpid(),
                 (long)time(NULL));
    CHECK_OK(tsr_comm_bcast_idle(g, path, sizeof path, 0));
    if (rank == 0) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        FILE *f = fopen(path, "w");
        CHECK(f != NULL, "cannot create %s", path);
        fclose(f);
    }
    CHECK_OK(tsr_comm_barrier(g));
    CHECK(access(path, F_OK) == 0, "left the barrier before rank 0 entered it (%s missing)", path);
    CHECK_OK(tsr_comm_barrier(g));
    if (rank == 0)
        unlink(path);
    SAY("ok   barrier\n");
}

static inline void ct_bcast_idle(tsr_comm_group_t *g) {
    int rank = tsr_comm_rank(g), size = tsr_comm_size(g);
    static const size_t sizes[] = {1, 100, 100003};
    for (int root = 0; root < size; root++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t n = sizes[s];
            unsigned char *want = tu_xmalloc(n), *got = tu_xmalloc(n);
            tu_rng r = ct_rng_for(900 + s, root);
            for (size_t i = 0; i < n; i++)
                want[i] = (unsigned char)tu_rng_u64(&r);
            if (rank == root)
                memcpy(got, want, n);
            else
                memset(got, 0xa5, n);
            CHECK_OK(tsr_comm_bcast_idle(g, got, n, root));
            CHECK(memcmp(got, want, n) == 0, "idle broadcast from %d of %zu bytes differs", root,
                  n);
            free(want);
            free(got);
        }
    SAY("ok   idle broadcast from every root\n");
}

static inline void ct_agree(tsr_comm_group_t *g) {
    int rank = tsr_comm_rank(g), size = tsr_comm_size(g);
    CHECK(tsr_comm_agree(g, TSR_OK) == TSR_OK, "all OK must agree on OK");
    /* One failing rank (the last): everyone sees its status. */
    tsr_error_clear();
    tsr_status mine = rank == size - 1 ? TSR_ERR_FORMAT : TSR_OK;
    if (mine != TSR_OK)
        tsr_error_set(mine, "my own reason");
    tsr_status got = tsr_comm_agree(g, mine);
    CHECK(got == TSR_ERR_FORMAT, "agree gave %s, want %s", tsr_status_str(got),
          tsr_status_str(TSR_ERR_FORMAT));
    if (mine != TSR_OK)
        CHECK(strcmp(tsr_error_msg(), "my own reason") == 0,
              "the failing rank's own message was overwritten: %s", tsr_error_msg());
    else
        CHECK(strstr(tsr_error_msg(), "failed") != NULL, "no message naming the failing rank");
    /* Two failing ranks with different statuses: the worst (largest) wins. */
    if (size >= 2) {
        mine = rank == 0 ? TSR_ERR_IO : rank == 1 ? TSR_ERR_COMM : TSR_OK;
        got = tsr_comm_agree(g, mine);
        CHECK(got == TSR_ERR_COMM, "agree gave %s, want %s", tsr_status_str(got),
              tsr_status_str(TSR_ERR_COMM));
    }
    CHECK(tsr_comm_agree(g, TSR_OK) == TSR_OK, "agreement does not stick");
    SAY("ok   agree (one failing rank stops all; the worst status wins)\n");
}

/* Every collective on group `g`, buffers through `m`. */
static inline void ct_run_collectives(tsr_comm_group_t *g, const ct_mem *m) {
    ct_allreduce(g, m);
    ct_argmax(g);
    ct_allgather(g, m);
    ct_broadcast(g, m);
    ct_ring(g, m);
    ct_barrier(g);
    ct_bcast_idle(g);
    ct_agree(g);
}

#endif
