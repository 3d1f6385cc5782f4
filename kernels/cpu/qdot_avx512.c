/* kernels/cpu/qdot_avx512.c - the AVX-512 (F, BW, VL, VNNI) dot kernels of
 * the 32-wide formats: qdot_avx2.c's, with the 256-bit EVEX vpdpbusd of
 * AVX512-VNNI+VL in place of maddubs + madd and a mask register for the Q5
 * fifth bits (the 256-bit forms: qdot_avx2.c says why); the K-quants' are in
 * qdot_avx512_k.c.
 *
 * Compiled with -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl
 * -mavx512vnni (kernels/CMakeLists.txt). */
#include "kernels/cpu/qdot.h"

#define QDOT_TABLE tsr_qkernels_avx512
#define QDOT_LEVEL TSR_ISA_AVX512
#define QDOT_FALLBACK(t) tsr_qkernels_avx512_k(t)
#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__) &&                   \
    defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define QDOT_ENABLED 1
#define QDOT_DPBUSD(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#define QDOT_DPBUSD_ACC(acc, u, s) _mm256_dpbusd_epi32((acc), (u), (s))
#define QDOTN_RW 2 /* 32 registers: two weight rows per tile */
#endif

#include "kernels/cpu/qdot_avx2.c"
