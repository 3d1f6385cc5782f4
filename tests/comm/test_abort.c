/* tests/comm/test_abort.c - tsr_comm_abort ends the whole job.
 *
 * The last rank aborts with exit code 3 while every other rank waits in
 * tsr_comm_bcast_idle for data from it that never comes. The job must end
 * (not hang) with the aborting rank's message; ctest checks mpirun's exit
 * code and output (run_abort.sh). With one rank, that rank aborts alone. */
#include "comm_test.h"

int main(int argc, char **argv) {
    CHECK(tsr_comm_mpi_init(&argc, &argv, &ct_rank, &ct_world) == TSR_OK, "MPI start: %s",
          tsr_error_msg());
    tsr_comm_grid g;
    tsr_comm_grid_config cfg = TSR_COMM_GRID_CONFIG_INIT;
    CHECK_OK(tsr_comm_grid_init(&g, &cfg));
    int last = ct_world - 1;
    if (ct_rank == last)
        tsr_comm_abort(&g, 3, "deliberate abort from the test");
    char buf[16];
    tsr_comm_bcast_idle(g.world, buf, sizeof buf, last); /* never completes */
    fprintf(stderr, "[rank %d] FAIL: the idle broadcast returned after an abort\n", ct_rank);
    return 1;
}
