/* tests/unit/test_kv_cache.c - unit tests for runtime/kv_cache: block
 * allocation for the paged KV cache.
 *
 * Reserve grows a slot by whole blocks and never shrinks it; release returns
 * every block; running out of blocks or past max_ctx is TSR_ERR_RANGE with the
 * slot (and the free list) unchanged; slots map positions to distinct cache
 * rows; a seeded random workload keeps the bookkeeping consistent; the
 * device storage really has n_blocks * block_size rows of kv_dim per layer,
 * in the element type asked for (f16 rows are half as long); the CPU's
 * cache type is f16 by default, f32 on request, anything else refused.
 * Exits 0 on success, 1 with a message at the first failure. */
#include "runtime/model/kv_cache.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/check.h"

/* Every invariant of the bookkeeping. */
static void check_consistent(const tsr_kv_cache *kv, const char *when) {
    char *used = calloc((size_t)kv->n_blocks, 1);
    CHECK(used, "calloc");
    int total = 0;
    for (int s = 0; s < kv->max_seqs; s++) {
        int nb = kv->n_seq_blocks[s];
        CHECK(nb >= 0 && nb <= kv->max_blocks, "%s: slot %d holds %d blocks", when, s, nb);
        for (int b = 0; b < kv->max_blocks; b++) {
            int32_t id = kv->tables[(size_t)s * kv->max_blocks + b];
            if (b >= nb) {
                CHECK(id == -1, "%s: slot %d column %d is %d past its %d blocks", when, s, b, id,
                      nb);
                continue;
            }
            CHECK(id >= 0 && id < kv->n_blocks, "%s: slot %d block %d id %d", when, s, b, id);
            CHECK(!used[id], "%s: block %d is held twice", when, id);
            used[id] = 1;
        }
        total += nb;
    }
    CHECK(kv->n_free >= 0 && kv->n_free + total == kv->n_blocks,
          "%s: %d free + %d held != %d blocks", when, kv->n_free, total, kv->n_blocks);
    CHECK(tsr_kv_cache_used_blocks(kv) == total, "%s: used_blocks %d, held %d", when,
          tsr_kv_cache_used_blocks(kv), total);
    for (int i = 0; i < kv->n_free; i++) {
        int id = kv->free_list[i];
        CHECK(id >= 0 && id < kv->n_blocks && !used[id], "%s: free block %d is held or repeated",
              when, id);
        used[id] = 1;
    }
    free(used);
}

/* A copy of the bookkeeping, to prove a refused call changed nothing. */
typedef struct {
    int32_t *tables;
    int *n_seq_blocks, *free_list, n_free;
} snapshot;

static snapshot take(const tsr_kv_cache *kv) {
    snapshot s;
    size_t nt = (size_t)kv->max_seqs * kv->max_blocks;
    s.tables = tu_xmalloc(nt * sizeof *s.tables);
    s.n_seq_blocks = tu_xmalloc((size_t)kv->max_seqs * sizeof *s.n_seq_blocks);
    s.free_list = tu_xmalloc((size_t)kv->n_blocks * sizeof *s.free_list);
    memcpy(s.tables, kv->tables, nt * sizeof *s.tables);
    memcpy(s.n_seq_blocks, kv->n_seq_blocks, (size_t)kv->max_seqs * sizeof *s.n_seq_blocks);
    memcpy(s.free_list, kv->free_list, (size_t)kv->n_blocks * sizeof *s.free_list);
    s.n_free = kv->n_free;
    return s;
}

static int same(const tsr_kv_cache *kv, snapshot *s) {
    size_t nt = (size_t)kv->max_seqs * kv->max_blocks;
    int eq = !memcmp(s->tables, kv->tables, nt * sizeof *s->tables) &&
             !memcmp(s->n_seq_blocks, kv->n_seq_blocks,
                     (size_t)kv->max_seqs * sizeof *s->n_seq_blocks) &&
             s->n_free == kv->n_free &&
             !memcmp(s->free_list, kv->free_list, (size_t)kv->n_free * sizeof *s->free_list);
    free(s->tables);
    free(s->n_seq_blocks);
    free(s->free_list);
    return eq;
}

/* `call` must fail with `want` and leave the bookkeeping as it was. */
#define CHECK_REFUSED(kv, call, want, ...)                                                         \
    do {                                                                                           \
        snapshot snap_ = take(kv);                                                                 \
        CHECK_ERR(call, want, __VA_ARGS__);                                                        \
        CHECK(same(kv, &snap_), "%s changed the cache although refused", #call);                   \
    } while (0)

static void test_init(tsr_backend *be) {
    tsr_kv_cache kv;
    CHECK_ERR(tsr_kv_cache_init(&kv, be, TSR_F32, 2, 0, 4, 10, 2, 16), TSR_ERR_INVALID, "");
    CHECK_ERR(tsr_kv_cache_init(&kv, be, TSR_F32, 2, 8, 0, 10, 2, 16), TSR_ERR_INVALID, "");
    CHECK_ERR(tsr_kv_cache_init(&kv, be, TSR_F32, 2, 8, 4, 0, 2, 16), TSR_ERR_INVALID, "");
    CHECK_ERR(tsr_kv_cache_init(&kv, be, TSR_F32, 2, 8, 4, 10, 0, 16), TSR_ERR_INVALID, "");
    CHECK_ERR(tsr_kv_cache_init(&kv, be, TSR_F32, 2, 8, 4, 10, 2, 0), TSR_ERR_INVALID, "");
    CHECK_ERR(tsr_kv_cache_init(&kv, be, TSR_F32, -1, 8, 4, 10, 2, 16), TSR_ERR_INVALID, "");
    tsr_kv_cache_free(&kv); /* zeroed by the failed init: safe */
    tsr_kv_cache_free(NULL);

    /* max_blocks = ceil(max_ctx / block_size); everything starts free. */
    static const struct {
        int bs, max_ctx, want;
    } mb[] = {{4, 16, 4}, {4, 17, 5}, {4, 1, 1}, {1, 7, 7}, {16, 15, 1}};
    for (size_t i = 0; i < sizeof mb / sizeof mb[0]; i++) {
        CHECK_OK(tsr_kv_cache_init(&kv, be, TSR_F32, 1, 8, mb[i].bs, 10, 3, mb[i].max_ctx));
        CHECK(kv.max_blocks == mb[i].want, "block %d ctx %d: max_blocks %d, want %d", mb[i].bs,
              mb[i].max_ctx, kv.max_blocks, mb[i].want);
        CHECK(tsr_kv_cache_used_blocks(&kv) == 0 && kv.n_free == 10, "fresh cache not empty");
        check_consistent(&kv, "fresh");
        tsr_kv_cache_free(&kv);
        CHECK(kv.k == NULL && kv.tables == NULL && kv.n_blocks == 0, "free does not zero");
        tsr_kv_cache_free(&kv); /* twice is fine */
    }
}

/* The device storage: two distinct buffers per layer of the full size. */
static void test_storage(tsr_backend *be, tu_rng *r) {
    tsr_kv_cache kv;
    const int layers = 3, kv_dim = 24, bs = 4, nb = 5;
    CHECK_OK(tsr_kv_cache_init(&kv, be, TSR_F32, layers, kv_dim, bs, nb, 2, 12));
    size_t n = (size_t)nb * bs * kv_dim;
    float *h = tu_xmalloc(n * sizeof *h), *back = tu_xmalloc(n * sizeof *back);
    for (int l = 0; l < layers; l++) {
        CHECK(kv.k[l] && kv.v[l] && kv.k[l] != kv.v[l], "layer %d buffers", l);
        for (int m = 0; m < l; m++)
            CHECK(kv.k[m] != kv.k[l] && kv.v[m] != kv.v[l], "layers %d and %d share", m, l);
        /* Fill every row of K then V (ASan sees an undersized buffer) and
         * check V did not overwrite K. */
        tu_rng_fill(r, h, n, -1, 1);
        CHECK_OK(be->iface->act_from_f32(be, kv.k[l], h, n));
        tu_rng_fill(r, back, n, -1, 1);
        CHECK_OK(be->iface->act_from_f32(be, kv.v[l], back, n));
        CHECK_OK(be->iface->act_to_f32(be, back, kv.k[l], n));
        CHECK(!memcmp(h, back, n * sizeof *h), "layer %d: K and V overlap", l);
    }
    free(h);
    free(back);
    tsr_kv_cache_free(&kv);
}

/* Element types: the CPU's choice and an f16 cache's smaller rows. */
static void test_dtype(tsr_backend *be) {
    tsr_dtype t = TSR_Q8_0;
    CHECK_OK(tsr_kv_cache_dtype(be, TSR_KV_DTYPE_DEFAULT, &t));
    CHECK(t == TSR_F16, "the CPU's default KV cache type is %s, want f16", tsr_dtype_name(t));
    CHECK_OK(tsr_kv_cache_dtype(be, TSR_F32, &t));
    CHECK(t == TSR_F32, "--kv-dtype f32 gave %s", tsr_dtype_name(t));
    CHECK_OK(tsr_kv_cache_dtype(be, TSR_F16, &t));
    CHECK(t == TSR_F16, "--kv-dtype f16 gave %s", tsr_dtype_name(t));
    CHECK_ERR(tsr_kv_cache_dtype(be, TSR_BF16, &t), TSR_ERR_UNSUPPORTED, "bf16");
    CHECK_ERR(tsr_kv_cache_dtype(be, TSR_Q8_0, &t), TSR_ERR_UNSUPPORTED, "q8_0");

    tsr_kv_cache kv;
    CHECK_ERR(tsr_kv_cache_init(&kv, be, TSR_Q8_0, 2, 8, 4, 10, 2, 16), TSR_ERR_INVALID, "q8_0");
    const int layers = 2, kv_dim = 24, bs = 4, nb = 5;
    CHECK_OK(tsr_kv_cache_init(&kv, be, TSR_F16, layers, kv_dim, bs, nb, 2, 12));
    CHECK(kv.dtype == TSR_F16, "dtype not kept");
    CHECK(tsr_kv_cache_position_bytes(&kv) == (size_t)2 * layers * kv_dim * 2,
          "f16: %zu bytes per position", tsr_kv_cache_position_bytes(&kv));
    const size_t n = (size_t)nb * bs * kv_dim;
    for (int l = 0; l < layers; l++) { /* every f16 row is there (ASan sees an undersized one) */
        memset(kv.k[l], 0x3c, n * sizeof(uint16_t));
        memset(kv.v[l], 0x3c, n * sizeof(uint16_t));
    }
    tsr_kv_cache_free(&kv);
    CHECK_OK(tsr_kv_cache_init(&kv, be, TSR_F32, layers, kv_dim, bs, nb, 2, 12));
    CHECK(tsr_kv_cache_position_bytes(&kv) == (size_t)2 * layers * kv_dim * 4,
          "f32: %zu bytes per position", tsr_kv_cache_position_bytes(&kv));
    tsr_kv_cache_free(&kv);
}

static void test_reserve_release(tsr_backend *be) {
    tsr_kv_cache kv;
    /* 10 blocks of 4, 3 slots, max_ctx 18 -> 5 blocks per slot */
    CHECK_OK(tsr_kv_cache_init(&kv, be, TSR_F32, 2, 8, 4, 10, 3, 18));
    CHECK(kv.max_blocks == 5, "max_blocks");

    CHECK_OK(tsr_kv_cache_reserve(&kv, 0, 0));
    CHECK(kv.n_seq_blocks[0] == 0 && tsr_kv_cache_used_blocks(&kv) == 0, "0 positions: no block");
    CHECK_OK(tsr_kv_cache_reserve(&kv, 0, 1));
    CHECK(kv.n_seq_blocks[0] == 1 && tsr_kv_cache_used_blocks(&kv) == 1, "1 position: 1 block");
    int32_t first = kv.tables[0];
    CHECK_OK(tsr_kv_cache_reserve(&kv, 0, 4));
    CHECK(kv.n_seq_blocks[0] == 1 && kv.tables[0] == first, "4 positions: still 1 block");
    CHECK_OK(tsr_kv_cache_reserve(&kv, 0, 5));
    CHECK(kv.n_seq_blocks[0] == 2 && kv.tables[0] == first, "5 positions: 2 blocks, first kept");
    CHECK_OK(tsr_kv_cache_reserve(&kv, 0, 2));
    CHECK(kv.n_seq_blocks[0] == 2, "a smaller reserve does not shrink");
    CHECK_OK(tsr_kv_cache_reserve(&kv, 0, 8));
    CHECK(kv.n_seq_blocks[0] == 2 && tsr_kv_cache_used_blocks(&kv) == 2, "8 positions: 2 blocks");
    check_consistent(&kv, "after growing slot 0");

    /* Slot arithmetic: slot(seq, pos) = table[pos / bs] * bs + pos % bs. */
    for (int p = 0; p < 8; p++) {
        int32_t want = kv.tables[p / 4] * 4 + p % 4;
        CHECK(tsr_kv_cache_slot(&kv, 0, p) == want, "slot(0, %d) = %d, want %d", p,
              tsr_kv_cache_slot(&kv, 0, p), want);
    }

    /* Slot 1 takes a full context (5 blocks): 7 used, 3 free. */
    CHECK_OK(tsr_kv_cache_reserve(&kv, 1, 18));
    CHECK(kv.n_seq_blocks[1] == 5 && tsr_kv_cache_used_blocks(&kv) == 7, "slot 1: 5 blocks");
    check_consistent(&kv, "after slot 1");

    /* Running out: slot 2 wants 4 blocks, 3 are free. Nothing changes. */
    CHECK_REFUSED(&kv, tsr_kv_cache_reserve(&kv, 2, 16), TSR_ERR_RANGE, "out of blocks");
    CHECK(kv.n_seq_blocks[2] == 0, "refused slot grew");
    /* Growing a slot that already has blocks, past what is free. */
    CHECK_OK(tsr_kv_cache_reserve(&kv, 2, 12));
    CHECK(tsr_kv_cache_used_blocks(&kv) == 10 && kv.n_free == 0, "full");
    CHECK_REFUSED(&kv, tsr_kv_cache_reserve(&kv, 0, 9), TSR_ERR_RANGE, "out of blocks");
    CHECK(kv.n_seq_blocks[0] == 2 && kv.tables[0] == first, "refused slot 0 changed");
    CHECK_OK(tsr_kv_cache_reserve(&kv, 0, 8)); /* within what it has: fine when full */
    check_consistent(&kv, "full");

    /* Every reserved position of every slot maps to its own cache row. */
    char *seen = calloc((size_t)kv.n_blocks * kv.block_size, 1);
    CHECK(seen, "calloc");
    const int len[3] = {8, 18, 12};
    for (int s = 0; s < 3; s++)
        for (int p = 0; p < len[s]; p++) {
            int32_t sl = tsr_kv_cache_slot(&kv, s, p);
            CHECK(sl >= 0 && sl < kv.n_blocks * kv.block_size, "slot(%d, %d) = %d", s, p, sl);
            CHECK(!seen[sl], "slot(%d, %d) = %d is shared", s, p, sl);
            CHECK(sl / kv.block_size == kv.tables[s * kv.max_blocks + p / kv.block_size] &&
                      sl % kv.block_size == p % kv.block_size,
                  "slot(%d, %d) arithmetic", s, p);
            seen[sl] = 1;
        }
    free(seen);

    /* Release returns everything; the blocks are reused. */
    tsr_kv_cache_release(&kv, 1);
    CHECK(kv.n_seq_blocks[1] == 0 && tsr_kv_cache_used_blocks(&kv) == 5 && kv.n_free == 5,
          "release of slot 1");
    for (int b = 0; b < kv.max_blocks; b++)
        CHECK(kv.tables[kv.max_blocks + b] == -1, "released table column %d", b);
    check_consistent(&kv, "after release");
    tsr_kv_cache_release(&kv, 1); /* twice: nothing */
    tsr_kv_cache_release(&kv, -1);
    tsr_kv_cache_release(&kv, 3);
    tsr_kv_cache_release(&kv, INT_MAX);
    check_consistent(&kv, "after odd releases");
    CHECK_OK(tsr_kv_cache_reserve(&kv, 1, 20 - 2)); /* the same 5 blocks again */
    CHECK(tsr_kv_cache_used_blocks(&kv) == 10, "reuse");
    check_consistent(&kv, "after reuse");

    /* Bad slots. */
    CHECK_REFUSED(&kv, tsr_kv_cache_reserve(&kv, -1, 1), TSR_ERR_INVALID, "-1");
    CHECK_REFUSED(&kv, tsr_kv_cache_reserve(&kv, 3, 1), TSR_ERR_INVALID, "3");
    tsr_kv_cache_free(&kv);
}

static void test_max_ctx(tsr_backend *be) {
    tsr_kv_cache kv;
    /* max_ctx 18 with blocks of 4: 5 blocks hold 20 positions, but a sequence
     * may only have 18 (the header: "TSR_ERR_RANGE when ... n_pos exceeds
     * max_ctx"). Plenty of blocks, so only the context limit can refuse. */
    CHECK_OK(tsr_kv_cache_init(&kv, be, TSR_F32, 1, 8, 4, 40, 2, 18));
    CHECK_OK(tsr_kv_cache_reserve(&kv, 0, 18));
    CHECK(kv.n_seq_blocks[0] == 5, "18 positions");
    CHECK_REFUSED(&kv, tsr_kv_cache_reserve(&kv, 0, 21), TSR_ERR_RANGE, "context");
    CHECK_REFUSED(&kv, tsr_kv_cache_reserve(&kv, 1, 1000), TSR_ERR_RANGE, "context");
    CHECK_REFUSED(&kv, tsr_kv_cache_reserve(&kv, 1, 19), TSR_ERR_RANGE, "context");
    CHECK_REFUSED(&kv, tsr_kv_cache_reserve(&kv, 0, 20), TSR_ERR_RANGE, "context");
    /* n_pos + block_size - 1 must not overflow */
    CHECK_REFUSED(&kv, tsr_kv_cache_reserve(&kv, 1, INT_MAX), TSR_ERR_RANGE, "context");
    CHECK_REFUSED(&kv, tsr_kv_cache_reserve(&kv, 1, INT_MAX - 2), TSR_ERR_RANGE, "context");
    check_consistent(&kv, "after context refusals");
    tsr_kv_cache_free(&kv);
}

/* A seeded random workload of reserves (growing) and releases. */
static void test_random(tsr_backend *be, tu_rng *r) {
    tsr_kv_cache kv;
    const int slots = 5, bs = 3, ctx = 42; /* whole blocks (see test_max_ctx) */
    CHECK_OK(tsr_kv_cache_init(&kv, be, TSR_F32, 1, 4, bs, 23, slots, ctx));
    int len[5] = {0};
    for (int it = 0; it < 3000; it++) {
        int s = (int)tu_rng_below(r, (uint64_t)slots);
        if (tu_rng_below(r, 6) == 0) {
            tsr_kv_cache_release(&kv, s);
            len[s] = 0;
        } else {
            int want = len[s] + 1 + (int)tu_rng_below(r, 8);
            int need = (want + bs - 1) / bs;
            snapshot snap = take(&kv);
            tsr_status st = tsr_kv_cache_reserve(&kv, s, want);
            if (want > ctx || need - kv.n_seq_blocks[s] > kv.n_free) {
                CHECK(st == TSR_ERR_RANGE, "iteration %d: reserve(%d, %d) gave %s", it, s, want,
                      tsr_status_str(st));
                CHECK(same(&kv, &snap), "iteration %d: refused reserve changed the cache", it);
            } else {
                CHECK(st == TSR_OK, "iteration %d: reserve(%d, %d) with %d free: %s", it, s, want,
                      kv.n_free, tsr_error_msg());
                (void)same(&kv, &snap);
                len[s] = want;
                CHECK(kv.n_seq_blocks[s] == need, "iteration %d: %d blocks for %d positions", it,
                      kv.n_seq_blocks[s], want);
            }
        }
        check_consistent(&kv, "random workload");
    }
    tsr_kv_cache_free(&kv);
}

int main(void) {
    tsr_backend *be = NULL;
    CHECK_OK(tsr_backend_cpu_create(1, &be));
    tu_rng r = {0x6b7663616368ull};
    test_init(be);
    test_storage(be, &r);
    test_dtype(be);
    test_reserve_release(be);
    test_random(be, &r);
    printf("  init, storage, element types, reserve/release, random workload ok\n");
    test_max_ctx(be);
    printf("  context limit ok\n");
    tsr_backend_destroy(be);
    printf("test_kv_cache: all passed\n");
    return 0;
}
