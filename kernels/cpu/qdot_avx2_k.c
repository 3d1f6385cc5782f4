/* kernels/cpu/qdot_avx2_k.c - the avx2 dot kernels of the K-quants (none
 * written yet). */
#include "kernels/cpu/qdot.h"

const tsr_qkernel *tsr_qkernels_avx2_k(tsr_dtype t) {
    (void)t;
    return NULL;
}
