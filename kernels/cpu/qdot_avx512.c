/* kernels/cpu/qdot_avx512.c - the avx512 dot kernels (none written yet: every
 * format falls back to a lower level). */
#include "kernels/cpu/qdot.h"

const tsr_qkernel *tsr_qkernels_avx512(tsr_dtype t) { return tsr_qkernels_avx512_k(t); }
