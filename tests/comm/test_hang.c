/* tests/comm/test_hang.c - a rank that stops (SIGSTOP) instead of dying is
 * found: the others' waits pass the deadline, the census names the stopped
 * rank, and the job ends. run_hang.sh checks the exit code, the time taken,
 * the message and that no process is left.
 *
 *   mpirun -np 3 test_hang MODE TIMEOUT_S PIDDIR
 *
 * Every rank writes its pid to PIDDIR/rank.N first. The last rank is the one
 * that stops itself (raise(SIGSTOP)); the modes say where the others are:
 *   allreduce  all ranks loop all-reduces on a tp group of every rank; the
 *              last stops at iteration 200, the others wait in #201.
 *   p2p        a pp pipeline: rank i sends to i + 1 and receives from i - 1
 *              in a ring; the last stops at iteration 200, so its successor
 *              (rank 0) waits in a receive from it and the middle ranks wait
 *              on rank 0 or in sends.
 *   idle       ranks 1.. wait in the idle broadcast for longer than the
 *              deadline (which must not end the job), then get a step;
 *              after it the last stops and rank 0's next all-reduce waits.
 * Each mode returns only by the job being aborted: reaching the end of
 * main is a failure. */
#include <signal.h>

#include "comm_test.h"

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    CHECK(tsr_comm_mpi_init(&argc, &argv, &ct_rank, &ct_world) == TSR_OK, "MPI start: %s",
          tsr_error_msg());
    CHECK(argc == 4, "usage: test_hang allreduce|p2p|idle TIMEOUT_S PIDDIR");
    CHECK(ct_world >= 2, "test_hang needs at least 2 ranks");
    const char *mode = argv[1];
    const double timeout = atof(argv[2]);
    char path[4096];
    snprintf(path, sizeof path, "%s/rank.%d", argv[3], ct_rank);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "cannot write %s", path);
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);

    const int last = ct_world - 1;
    tsr_comm_grid g;
    tsr_comm_grid_config cfg = TSR_COMM_GRID_CONFIG_INIT;
    cfg.timeout_s = timeout;
    if (!strcmp(mode, "p2p"))
        cfg.pp = ct_world;
    else
        cfg.tp = ct_world;
    CHECK_OK(tsr_comm_grid_init(&g, &cfg));
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = 1.0f;

    if (!strcmp(mode, "allreduce")) {
        for (int it = 0;; it++) {
            if (it == 200 && ct_rank == last)
                raise(SIGSTOP);
            CHECK_OK(tsr_comm_allreduce(g.tp_group, x, x, 64, TSR_F32, TSR_COMM_MAX));
        }
    } else if (!strcmp(mode, "p2p")) {
        tsr_comm_group_t *pp = g.pp_group;
        int me = tsr_comm_rank(pp), n = tsr_comm_size(pp);
        for (int it = 0;; it++) {
            if (it == 200 && ct_rank == last)
                raise(SIGSTOP);
            if (me == 0) {
                CHECK_OK(tsr_comm_send(pp, x, 64, TSR_F32, 1, 7));
                CHECK_OK(tsr_comm_recv(pp, x, 64, TSR_F32, n - 1, 7));
            } else {
                CHECK_OK(tsr_comm_recv(pp, x, 64, TSR_F32, me - 1, 7));
                CHECK_OK(tsr_comm_send(pp, x, 64, TSR_F32, (me + 1) % n, 7));
            }
        }
    } else if (!strcmp(mode, "idle")) {
        char step[32] = "";
        if (ct_rank == 0) {
            sleep_s(timeout + 0.5); /* the others wait past the deadline */
            snprintf(step, sizeof step, "step 1");
        }
        CHECK_OK(tsr_comm_bcast_idle(g.world, step, sizeof step, 0));
        CHECK(strcmp(step, "step 1") == 0, "idle broadcast gave \"%s\"", step);
        CHECK_OK(tsr_comm_allreduce(g.tp_group, x, x, 64, TSR_F32, TSR_COMM_SUM));
        if (ct_rank == last)
            raise(SIGSTOP);
        if (ct_rank == 0)
            CHECK_OK(tsr_comm_allreduce(g.tp_group, x, x, 64, TSR_F32, TSR_COMM_SUM));
        else /* waiting for the next step, which will not come */
            CHECK_OK(tsr_comm_bcast_idle(g.world, step, sizeof step, 0));
    } else {
        CHECK(0, "unknown mode \"%s\"", mode);
    }
    fprintf(stderr, "[rank %d] FAIL: a wait on a stopped rank returned\n", ct_rank);
    tsr_comm_abort(&g, 9, "test_hang reached its end");
}
