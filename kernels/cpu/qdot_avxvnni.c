/* kernels/cpu/qdot_avxvnni.c - the AVX-VNNI dot kernels of the 32-wide
 * formats: qdot_avx2.c's, with the 256-bit VEX vpdpbusd in place of
 * maddubs + madd (no 16-bit pair sums, one instruction instead of two).
 * The K-quants have no kernels at this level (they use AVX2's).
 *
 * Compiled with -mavx2 -mfma -mf16c -mavxvnni (kernels/CMakeLists.txt). */
#include "kernels/cpu/qdot.h"

#define QDOT_TABLE tsr_qkernels_avxvnni
#define QDOT_LEVEL TSR_ISA_AVXVNNI
#define QDOT_FALLBACK(t) ((void)(t), (const tsr_qkernel *)NULL)
#if defined(__AVXVNNI__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define QDOT_ENABLED 1
#define QDOT_DPBUSD(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u), (s))
#define QDOT_DPBUSD_ACC(acc, u, s) _mm256_dpbusd_avx_epi32((acc), (u), (s))
#endif

#include "kernels/cpu/qdot_avx2.c"
