/* kernels/cpu/qdot_ref_k.c - the ref dot kernels of the K-quants (none
 * written yet). */
#include "kernels/cpu/qdot.h"

const tsr_qkernel *tsr_qkernels_ref_k(tsr_dtype t) {
    (void)t;
    return NULL;
}
