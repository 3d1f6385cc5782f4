/* kernels/cpu/qdot.h - dot products between weight rows kept in their GGUF
 * block formats and activation rows quantized to 8 bits per block: the
 * kernels behind the CPU backend's matmul over quantized weights.
 *
 * An activation row is quantized once per matmul into one of two layouts,
 * whichever the weight format's kernel reads:
 *  - tsr_q8a, blocks of 32 (for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL): a
 *    scale d, the block's sum s = d * sum(qs) (the min/offset terms of the
 *    weight formats need it) and 32 int8 values;
 *  - tsr_q8k, super-blocks of 256 (for the K-quants Q2_K .. Q6_K): a scale,
 *    256 int8 values and the sum of each 16 of them.
 * Values are x ~ d * q with q = rint(x / d), d = max|x| / 127 (so |q| <= 127
 * and the unsigned-by-signed byte products of AVX2/VNNI cannot overflow).
 *
 * Each format has a plain C kernel (the reference and the fallback) and, where
 * written, vectorised ones for AVX2+FMA, AVX-VNNI (256-bit VNNI of recent
 * Intel and AMD cores) and AVX-512 (F, BW, VL, VNNI). One binary carries all
 * of them; tsr_qkernel_get picks the best the running CPU has (cpuid), capped
 * by the environment variable TSR_CPU_ISA=ref|avx2|avxvnni|avx512 for tests,
 * benchmarks and bug reports.
 *
 * What it is not: no threading, no cache tiling (cpu_qmatmul.c does both;
 * the multi-row kernels only block rows in registers), no weight quantizers
 * (kernels/dtype.h has those). */
#ifndef TSR_KERNELS_CPU_QDOT_H
#define TSR_KERNELS_CPU_QDOT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/dtype.h"

#define TSR_QK 32   /* elements per block of the 32-wide formats */
#define TSR_QKK 256 /* elements per super-block of the K-quants */

typedef struct {
    float d, s; /* scale, d * sum(qs) */
    int8_t qs[TSR_QK];
} tsr_q8a;

typedef struct {
    float d;
    int8_t qs[TSR_QKK];
    int16_t bsums[TSR_QKK / 16]; /* bsums[j] = qs[16j] + ... + qs[16j + 15] */
} tsr_q8k;

typedef enum { TSR_ACT_Q8A, TSR_ACT_Q8K } tsr_act_kind;

/* Instruction-set levels, lowest first. */
typedef enum {
    TSR_ISA_REF,     /* plain C */
    TSR_ISA_AVX2,    /* AVX2 + FMA + F16C */
    TSR_ISA_AVXVNNI, /* the above + AVX-VNNI */
    TSR_ISA_AVX512,  /* the AVX2 level + AVX-512 F, BW, VL and VNNI */
    TSR_ISA_COUNT,
} tsr_isa;

/* The dot product of one weight row of `n` elements (the weight's block
 * format, n a whole number of blocks) with one activation row quantized in
 * the kernel's layout. `w` needs no alignment; `a` is an array of the
 * layout's structs (aligned as they are, 4 bytes, and no more). */
typedef float (*tsr_qdot_fn)(int n, const void *w, const void *a);

/* The dots of `nw` weight rows (row j at w + j * w_stride bytes) with `na`
 * activation rows (row i at a + i * a_stride bytes, a multiple of 4):
 * y[i * ldy + j] = dot(n, w_j, a_i), bit for bit the value the format's
 * `dot` of the same level returns (the same integer sums, the same f32
 * products, accumulator lanes and final reduction), so a row's result never
 * depends on the rows it was computed with. What it adds: each weight block
 * is loaded and unpacked once for several activation rows, and each
 * activation block is read from L1 for several weight rows. Best with nw of
 * a few dozen rows that sit in L1/L2 and na of 8 or more; na = 1 is no
 * faster than `dot`. y must not overlap w or a. */
typedef void (*tsr_qdotn_fn)(int n, const void *w, size_t w_stride, int nw, const void *a,
                             size_t a_stride, int na, float *y, size_t ldy);

typedef struct {
    tsr_qdot_fn dot;
    tsr_qdotn_fn dotn; /* optional: NULL means `dot` in a loop */
    tsr_act_kind act;
    tsr_isa isa;
} tsr_qkernel;

/* Feature bits of the running CPU (cpuid and xgetbv: a feature the OS does
 * not save the registers of counts as absent). */
enum {
    TSR_CPU_AVX2 = 1u << 0,
    TSR_CPU_FMA = 1u << 1,
    TSR_CPU_F16C = 1u << 2,
    TSR_CPU_AVX512F = 1u << 3,
    TSR_CPU_AVX512BW = 1u << 4,
    TSR_CPU_AVX512VL = 1u << 5,
    TSR_CPU_AVX512VNNI = 1u << 6,
    TSR_CPU_AVXVNNI = 1u << 7,
    TSR_CPU_AMX_INT8 = 1u << 8,
    TSR_CPU_AVX512BF16 = 1u << 9,
};
unsigned tsr_cpu_features(void);

/* "ref", "avx2", "avxvnni", "avx512". */
const char *tsr_isa_name(tsr_isa isa);
/* Whether this CPU can run kernels of `isa`. */
int tsr_isa_supported(tsr_isa isa);
/* The best level this CPU supports, lowered to TSR_CPU_ISA when that is
 * set (an unknown value is ignored with a warning on stderr, once). */
tsr_isa tsr_isa_best(void);

/* The kernel for weights of type `t` at level `isa` or, where that level has
 * none for `t`, the best lower one. NULL when `t` has no kernel at all (plain
 * types: the backend keeps those as f32). `isa` must be supported. */
const tsr_qkernel *tsr_qkernel_get(tsr_dtype t, tsr_isa isa);
/* Exactly the kernel of level `isa` for `t`, NULL when that level has none
 * (tests use it to check each level against the reference). */
const tsr_qkernel *tsr_qkernel_exact(tsr_dtype t, tsr_isa isa);

/* Bytes of one activation row of `n` elements in layout `k` (n a multiple of
 * its block). */
size_t tsr_act_row_bytes(tsr_act_kind k, int n);
/* Quantizes x (n floats, a multiple of the layout's block) into `out`: the
 * same bytes at every level (the AVX2 one where the CPU has it). */
void tsr_quantize_act(tsr_act_kind k, const float *x, void *out, int n);
/* The two quantizers behind it, for tests: the plain C one, and the AVX2 one
 * (returns 0 and does nothing in a build without AVX2; call it only where
 * tsr_isa_supported(TSR_ISA_AVX2)). */
void tsr_quantize_act_ref(tsr_act_kind k, const float *x, void *out, int n);
int tsr_quantize_act_avx2(tsr_act_kind k, const float *x, void *out, int n);
/* The values a quantized row stands for: x[i] = d * q[i] (f32). */
void tsr_dequantize_act(tsr_act_kind k, const void *a, float *x, int n);

/* Per-level tables, the kernel for `t` or NULL: qdot_<isa>.c has the
 * 32-wide formats and asks qdot_<isa>_k.c for the K-quants. AVX-VNNI has
 * kernels for the 32-wide formats only (its K-quants use AVX2's). */
const tsr_qkernel *tsr_qkernels_ref(tsr_dtype t);
const tsr_qkernel *tsr_qkernels_avx2(tsr_dtype t);
const tsr_qkernel *tsr_qkernels_avxvnni(tsr_dtype t);
const tsr_qkernel *tsr_qkernels_avx512(tsr_dtype t);
const tsr_qkernel *tsr_qkernels_ref_k(tsr_dtype t);
const tsr_qkernel *tsr_qkernels_avx2_k(tsr_dtype t);
const tsr_qkernel *tsr_qkernels_avx512_k(tsr_dtype t);

#endif
