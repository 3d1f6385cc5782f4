/* tests/comm/test_idle.c - waiting in tsr_comm_bcast_idle does not spin.
 *
 * Rank 0 sleeps 2 s before its broadcast; the other ranks wait in
 * tsr_comm_bcast_idle meanwhile. Their process CPU time over the wait must
 * stay under 25% of the wall time (the design's goal is a few percent; the
 * margin keeps this a behavioural check, not a benchmark). The measured
 * figures are printed, and for comparison so is the figure for a plain
 * blocking MPI_Bcast, which polls (not asserted: that is MPI's business).
 *
 *   mpirun -np 2 test_idle      (needs at least 2 ranks, else exits 77) */
#include "comm_test.h"

static double now_s(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Rank 0 sleeps `delay_s`, then broadcasts; others wait. Returns this rank's
 * CPU fraction over its wait (0 on rank 0). */
static double wait_once(tsr_comm_group_t *w, double delay_s, int idle, double *wall_out) {
    int rank = tsr_comm_rank(w);
    char msg[64] = "";
    CHECK_OK(tsr_comm_barrier(w));
    double t0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    if (rank == 0) {
        struct timespec ts = {(time_t)delay_s, (long)((delay_s - (double)(time_t)delay_s) * 1e9)};
        nanosleep(&ts, NULL);
        snprintf(msg, sizeof msg, "step descriptor %d", idle);
    }
    if (idle)
        CHECK_OK(tsr_comm_bcast_idle(w, msg, sizeof msg, 0));
    else
        CHECK(MPI_Bcast(msg, (int)sizeof msg, MPI_BYTE, 0, MPI_COMM_WORLD) == MPI_SUCCESS, "bcast");
    double wall = now_s(CLOCK_MONOTONIC) - t0, cpu = now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    char want[64];
    snprintf(want, sizeof want, "step descriptor %d", idle);
    CHECK(strcmp(msg, want) == 0, "received \"%s\", want \"%s\"", msg, want);
    *wall_out = wall;
    return rank == 0 ? 0 : cpu / wall;
}

int main(int argc, char **argv) {
    CHECK(tsr_comm_mpi_init(&argc, &argv, &ct_rank, &ct_world) == TSR_OK, "MPI start: %s",
          tsr_error_msg());
    if (ct_world < 2) {
        SAY("SKIP: test_idle needs at least 2 ranks\n");
        tsr_comm_mpi_finalize();
        return 77;
    }
    tsr_comm_grid g;
    tsr_comm_grid_config cfg = TSR_COMM_GRID_CONFIG_INIT;
    CHECK_OK(tsr_comm_grid_init(&g, &cfg));

    double wall = 0;
    double frac = wait_once(g.world, 2.0, 1, &wall);
    double spin_wall = 0;
    double spin = wait_once(g.world, 1.0, 0, &spin_wall);

    /* Every waiting rank's figures, printed by rank 0. */
    double mine[4] = {frac, wall, spin, spin_wall};
    double *all = tu_xmalloc(sizeof mine * (size_t)ct_world);
    CHECK(MPI_Gather(mine, 4, MPI_DOUBLE, all, 4, MPI_DOUBLE, 0, MPI_COMM_WORLD) == MPI_SUCCESS,
          "gather");
    for (int r = 1; r < ct_world; r++)
        SAY("rank %d: idle broadcast: CPU %.2f%% of a %.2f s wait; plain MPI_Bcast: CPU %.1f%% "
            "of %.2f s\n",
            r, 100 * all[4 * r], all[4 * r + 1], 100 * all[4 * r + 2], all[4 * r + 3]);
    free(all);
    CHECK(wall > 1.0, "the wait lasted %.2f s: rank 0 did not hold it back", wall);
    CHECK(frac < 0.25, "waiting in tsr_comm_bcast_idle used %.1f%% of a core (limit 25%%)",
          100 * frac);

    tsr_comm_grid_free(&g);
    tsr_comm_mpi_finalize();
    SAY("PASS\n");
    return 0;
}
