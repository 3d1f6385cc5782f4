/* tests/comm/test_collectives.c - the MPI backend under mpirun: every
 * collective against a serial computation (comm_test.h), every (tp, pp) grid
 * that fits the world, argument checks, and invalid grids.
 *
 *   mpirun -np N test_collectives      (N = 1..4 in ctest)
 *
 * Exits 0 when every rank passed; a failing rank aborts the whole job. */
#include "comm_test.h"

/* The grid's numbers follow the layout r = (dp * pp + pp_rank) * tp + tp_rank,
 * its groups have the right ranks and sizes, and an all-reduce over a tp (pp)
 * group sums exactly the world ranks that share this rank's dp and pp (tp). */
static void check_grid(int tp, int pp) {
    tsr_comm_grid g;
    tsr_comm_grid_config cfg = TSR_COMM_GRID_CONFIG_INIT;
    cfg.tp = tp;
    cfg.pp = pp;
    CHECK_OK(tsr_comm_grid_init(&g, &cfg));
    int r = ct_rank, dp = ct_world / (tp * pp);
    CHECK(g.world_rank == r && g.world_size == ct_world, "world %d/%d", g.world_rank, g.world_size);
    CHECK(g.tp == tp && g.pp == pp && g.dp == dp, "degrees tp %d pp %d dp %d", g.tp, g.pp, g.dp);
    CHECK(r == (g.dp_rank * pp + g.pp_rank) * tp + g.tp_rank,
          "rank %d is not (dp %d * pp %d + pp_rank %d) * tp %d + tp_rank %d", r, g.dp_rank, pp,
          g.pp_rank, tp, g.tp_rank);
    CHECK(g.tp_rank >= 0 && g.tp_rank < tp && g.pp_rank >= 0 && g.pp_rank < pp && g.dp_rank >= 0 &&
              g.dp_rank < dp,
          "coordinates (%d, %d, %d) out of range", g.tp_rank, g.pp_rank, g.dp_rank);
    /* mpirun on one host: every rank is local. */
    CHECK(g.local_size == ct_world && g.local_rank == r, "local %d/%d", g.local_rank, g.local_size);
    CHECK(g.host[0] != '\0', "empty host name");
    CHECK(tsr_comm_rank(g.world) == r && tsr_comm_size(g.world) == ct_world, "world group");
    CHECK(tsr_comm_rank(g.tp_group) == g.tp_rank && tsr_comm_size(g.tp_group) == tp,
          "tp group %d/%d, want %d/%d", tsr_comm_rank(g.tp_group), tsr_comm_size(g.tp_group),
          g.tp_rank, tp);
    CHECK(tsr_comm_rank(g.pp_group) == g.pp_rank && tsr_comm_size(g.pp_group) == pp,
          "pp group %d/%d, want %d/%d", tsr_comm_rank(g.pp_group), tsr_comm_size(g.pp_group),
          g.pp_rank, pp);
    CHECK(tsr_comm_kind_of(g.tp_group) == TSR_COMM_MPI && tsr_comm_stream(g.tp_group) == NULL,
          "tp group backend");

    int32_t tp_mask = 0, pp_mask = 0;
    for (int w = 0; w < ct_world; w++) {
        int w_tp = w % tp, w_pp = (w / tp) % pp, w_dp = w / (tp * pp);
        if (w_dp == g.dp_rank && w_pp == g.pp_rank)
            tp_mask |= 1 << w;
        if (w_dp == g.dp_rank && w_tp == g.tp_rank)
            pp_mask |= 1 << w;
    }
    int32_t bit = 1 << r, got = 0;
    CHECK_OK(tsr_comm_allreduce(g.tp_group, &bit, &got, 1, TSR_COMM_I32, TSR_COMM_SUM));
    CHECK(got == tp_mask, "tp all-reduce summed ranks 0x%x, want 0x%x", (unsigned)got,
          (unsigned)tp_mask);
    CHECK_OK(tsr_comm_allreduce(g.pp_group, &bit, &got, 1, TSR_COMM_I32, TSR_COMM_SUM));
    CHECK(got == pp_mask, "pp all-reduce summed ranks 0x%x, want 0x%x", (unsigned)got,
          (unsigned)pp_mask);
    /* Group ranks order by tp_rank / pp_rank: a broadcast from group rank 0
     * comes from the member with coordinate 0. */
    int32_t from = r;
    CHECK_OK(tsr_comm_broadcast(g.tp_group, &from, 1, TSR_COMM_I32, 0));
    CHECK(from == r - g.tp_rank, "tp broadcast from world rank %d, want %d", from, r - g.tp_rank);
    from = r;
    CHECK_OK(tsr_comm_broadcast(g.pp_group, &from, 1, TSR_COMM_I32, 0));
    CHECK(from == r - g.pp_rank * tp, "pp broadcast from world rank %d, want %d", from,
          r - g.pp_rank * tp);
    tsr_comm_grid_free(&g);
    tsr_comm_grid_free(&g); /* freed grids are zeroed: a second free is harmless */
}

static void test_grids(void) {
    int n = 0;
    for (int tp = 1; tp <= ct_world; tp++)
        for (int pp = 1; pp <= ct_world; pp++)
            if (ct_world % (tp * pp) == 0) {
                check_grid(tp, pp);
                n++;
            }
    SAY("ok   %d grids (every tp x pp dividing %d)\n", n, ct_world);
}

/* Refusals that every rank reaches alike, with messages naming the numbers. */
static void test_invalid(void) {
    tsr_comm_grid g;
    tsr_comm_grid_config cfg = TSR_COMM_GRID_CONFIG_INIT;
    char tp_s[32], world_s[32];
    cfg.tp = ct_world + 1;
    cfg.pp = 1;
    snprintf(tp_s, sizeof tp_s, "tp %d x pp 1", ct_world + 1);
    snprintf(world_s, sizeof world_s, "world size %d", ct_world);
    CHECK_ERR(tsr_comm_grid_init(&g, &cfg), TSR_ERR_INVALID, tp_s, world_s);
    CHECK(g.world == NULL && g.tp_group == NULL, "a refused grid holds groups");
    if (ct_world == 4) { /* 2 x 3 = 6 is larger; 3 x 1 does not divide 4 */
        cfg.tp = 3;
        CHECK_ERR(tsr_comm_grid_init(&g, &cfg), TSR_ERR_INVALID, "tp 3 x pp 1", "world size 4");
        cfg.tp = 1;
        cfg.pp = 3;
        CHECK_ERR(tsr_comm_grid_init(&g, &cfg), TSR_ERR_INVALID, "tp 1 x pp 3", "world size 4");
    }
    cfg.tp = 0;
    cfg.pp = 1;
    CHECK_ERR(tsr_comm_grid_init(&g, &cfg), TSR_ERR_INVALID, "tp (0)");
    cfg.tp = 1;
    cfg.timeout_s = -1;
    CHECK_ERR(tsr_comm_grid_init(&g, &cfg), TSR_ERR_INVALID, "communication timeout");
    cfg.timeout_s = TSR_COMM_TIMEOUT_DEFAULT_S;
    if (!tsr_comm_has_nccl()) {
        cfg.kind = TSR_COMM_NCCL;
        CHECK_ERR(tsr_comm_grid_init(&g, &cfg), TSR_ERR_UNSUPPORTED, "no NCCL");
    }
    tsr_comm_kind k;
    CHECK_OK(tsr_comm_kind_parse("nccl", &k));
    CHECK(k == TSR_COMM_NCCL && strcmp(tsr_comm_kind_name(k), "nccl") == 0, "kind nccl");
    CHECK_OK(tsr_comm_kind_parse("mpi", &k));
    CHECK(k == TSR_COMM_MPI && strcmp(tsr_comm_kind_name(k), "mpi") == 0, "kind mpi");
    CHECK_ERR(tsr_comm_kind_parse("gloo", &k), TSR_ERR_INVALID, "\"gloo\"");
    SAY("ok   invalid grids refused on every rank\n");
}

/* Argument checks: local, so every rank fails alike without communicating. */
static void test_arguments(tsr_comm_group_t *w) {
    int size = tsr_comm_size(w), rank = tsr_comm_rank(w);
    float buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK_ERR(tsr_comm_allreduce(NULL, buf, buf, 1, TSR_F32, TSR_COMM_SUM), TSR_ERR_INVALID,
              "NULL");
    CHECK_ERR(tsr_comm_allreduce(w, buf, buf, 1, TSR_Q8_0, TSR_COMM_SUM), TSR_ERR_UNSUPPORTED,
              "element type");
    CHECK_ERR(tsr_comm_allreduce(w, buf, buf, 1, TSR_F32, (tsr_comm_op)7), TSR_ERR_INVALID,
              "operation");
    CHECK_ERR(tsr_comm_allreduce(w, buf, buf + 1, 4, TSR_F32, TSR_COMM_SUM), TSR_ERR_INVALID,
              "overlap");
    CHECK_ERR(tsr_comm_allreduce(w, NULL, buf, 4, TSR_F32, TSR_COMM_SUM), TSR_ERR_INVALID,
              "send buffer");
    CHECK_ERR(tsr_comm_broadcast(w, buf, 1, TSR_F32, size), TSR_ERR_INVALID, "root");
    CHECK_ERR(tsr_comm_broadcast(w, buf, 1, TSR_F32, -1), TSR_ERR_INVALID, "root -1");
    CHECK_ERR(tsr_comm_allgather(w, buf, buf, 1, TSR_F32), TSR_ERR_INVALID, "overlap");
    CHECK_ERR(tsr_comm_send(w, buf, 1, TSR_F32, rank, 0), TSR_ERR_INVALID, "this rank");
    CHECK_ERR(tsr_comm_recv(w, buf, 1, TSR_F32, size, 0), TSR_ERR_INVALID, "peer");
    CHECK_ERR(tsr_comm_bcast_idle(w, buf, 4, size + 3), TSR_ERR_INVALID, "root");
    CHECK(tsr_comm_rank(NULL) == -1 && tsr_comm_size(NULL) == 0, "NULL group rank/size");
    /* count 0 is a no-op on every collective, with NULL buffers too */
    CHECK_OK(tsr_comm_allreduce(w, NULL, NULL, 0, TSR_F32, TSR_COMM_SUM));
    CHECK_OK(tsr_comm_allgather(w, NULL, NULL, 0, TSR_BF16));
    CHECK_OK(tsr_comm_broadcast(w, NULL, 0, TSR_F16, 0));
    CHECK_OK(tsr_comm_allreduce_argmax(w, NULL, NULL, 0));
    CHECK(buf[0] == 1 && buf[7] == 8, "a refused call touched its buffer");
    tsr_comm_grid_free(NULL);
    SAY("ok   argument checks\n");
}

int main(int argc, char **argv) {
    CHECK(tsr_comm_mpi_init(&argc, &argv, &ct_rank, &ct_world) == TSR_OK, "MPI start: %s",
          tsr_error_msg());
    /* A second init is harmless. */
    int r2 = -1, w2 = -1;
    CHECK_OK(tsr_comm_mpi_init(&argc, &argv, &r2, &w2));
    CHECK(r2 == ct_rank && w2 == ct_world, "second init");
    SAY("test_collectives: %d rank%s, MPI backend\n", ct_world, ct_world > 1 ? "s" : "");

    tsr_comm_grid g;
    tsr_comm_grid_config cfg = TSR_COMM_GRID_CONFIG_INIT;
    CHECK_OK(tsr_comm_grid_init(&g, &cfg));
    CHECK(tsr_comm_kind_of(g.world) == TSR_COMM_MPI, "world group backend");
    test_arguments(g.world);
    ct_run_collectives(g.world, &ct_host_mem);
    tsr_comm_grid_free(&g);

    test_grids();
    test_invalid();

    tsr_comm_mpi_finalize();
    SAY("PASS\n");
    return 0;
}
