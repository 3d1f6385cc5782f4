/* kernels/cpu/qdot_avxvnni.c - the avxvnni dot kernels (none written yet: every
 * format falls back to a lower level). */
#include "kernels/cpu/qdot.h"

const tsr_qkernel *tsr_qkernels_avxvnni(tsr_dtype t) {
    (void)t;
    return NULL;
}
