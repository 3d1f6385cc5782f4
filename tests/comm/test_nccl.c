/* tests/comm/test_nccl.c - the NCCL backend: the same collective checks as
 * test_collectives (comm_test.h), on device buffers, over a grid whose tp
 * group is the whole world.
 *
 * Exits 77 ("SKIP: ...") when the build has no NCCL, when there is no CUDA
 * device, or when this host runs more ranks than it has GPUs (NCCL refuses
 * two ranks on one GPU): ctest registers np 1 and np 2, and np 2 skips on a
 * one-GPU machine. */
#include "comm_test.h"

#ifndef TSR_HAVE_NCCL

int main(void) {
    printf("SKIP: built without NCCL\n");
    return 77;
}

#else

#include <cuda_runtime_api.h>

static void *dev_alloc(size_t n) {
    void *p = NULL;
    cudaError_t rc = cudaMalloc(&p, n ? n : 1);
    CHECK(rc == cudaSuccess, "cudaMalloc(%zu): %s", n, cudaGetErrorString(rc));
    return p;
}
static void dev_release(void *p) { cudaFree(p); }
static void dev_put(void *dst, const void *src, size_t n) {
    cudaError_t rc = cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice);
    CHECK(rc == cudaSuccess, "cudaMemcpy to device: %s", cudaGetErrorString(rc));
}
static void dev_get(void *dst, const void *src, size_t n) {
    cudaError_t rc = cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost);
    CHECK(rc == cudaSuccess, "cudaMemcpy to host: %s", cudaGetErrorString(rc));
}

static const ct_mem dev_mem = {
    /* .name = */ "device",
    /* .alloc = */ dev_alloc,
    /* .release = */ dev_release,
    /* .put = */ dev_put,
    /* .get = */ dev_get,
};

int main(int argc, char **argv) {
    CHECK(tsr_comm_mpi_init(&argc, &argv, &ct_rank, &ct_world) == TSR_OK, "MPI start: %s",
          tsr_error_msg());
    /* Every rank decides to skip together: the smallest device count wins. */
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess)
        count = 0;
    MPI_Comm node;
    int local_size = 1;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, ct_rank, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);
    int enough = count > 0 && count >= local_size, all_enough = 0;
    MPI_Allreduce(&enough, &all_enough, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_enough) {
        if (count == 0)
            SAY("SKIP: no CUDA device\n");
        else
            SAY("SKIP: %d ranks on a host with %d GPU(s); NCCL needs one GPU per rank\n",
                local_size, count);
        tsr_comm_mpi_finalize();
        return 77;
    }
    SAY("test_nccl: %d rank%s, NCCL backend, %d GPU(s) on this host\n", ct_world,
        ct_world > 1 ? "s" : "", count);

    tsr_comm_grid g;
    tsr_comm_grid_config cfg = TSR_COMM_GRID_CONFIG_INIT;
    cfg.tp = ct_world;
    cfg.kind = TSR_COMM_NCCL;
    cfg.timeout_s = 60;
    CHECK_OK(tsr_comm_grid_init(&g, &cfg));
    CHECK(tsr_comm_kind_of(g.tp_group) == TSR_COMM_NCCL, "tp group backend");
    CHECK(tsr_comm_kind_of(g.pp_group) == TSR_COMM_NCCL, "pp group backend");
    CHECK(tsr_comm_kind_of(g.world) == TSR_COMM_MPI, "the world group is the MPI control plane");
    CHECK(tsr_comm_stream(g.tp_group) != NULL, "an NCCL group has its own stream");
    CHECK(tsr_comm_rank(g.tp_group) == ct_rank && tsr_comm_size(g.tp_group) == ct_world,
          "tp group");
    ct_run_collectives(g.tp_group, &dev_mem);

    /* The pp group has one member here: collectives on it are copies. */
    float one = 2.5f, *d = dev_alloc(sizeof one);
    dev_put(d, &one, sizeof one);
    CHECK_OK(tsr_comm_allreduce(g.pp_group, d, d, 1, TSR_F32, TSR_COMM_SUM));
    dev_get(&one, d, sizeof one);
    CHECK(one == 2.5f, "one-rank all-reduce gave %g", (double)one);
    dev_release(d);

    tsr_comm_grid_free(&g);
    tsr_comm_mpi_finalize();
    SAY("PASS\n");
    return 0;
}

#endif
