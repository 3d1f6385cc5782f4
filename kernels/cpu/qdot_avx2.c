/* kernels/cpu/qdot_avx2.c - the avx2 dot kernels (none written yet: every
 * format falls back to a lower level). */
#include "kernels/cpu/qdot.h"

const tsr_qkernel *tsr_qkernels_avx2(tsr_dtype t) { return tsr_qkernels_avx2_k(t); }
