/* kernels/cpu/qdot_avx512_k.c - the avx512 dot kernels of the K-quants (none
 * written yet). */
#include "kernels/cpu/qdot.h"

const tsr_qkernel *tsr_qkernels_avx512_k(tsr_dtype t) {
    (void)t;
    return NULL;
}
