/* tests/common/op_cases.h - the one table of kernel op cases that every
 * backend test runs: shapes, seeds and tolerances per op, and the inputs both
 * programs build the same way (paged-attention block tables).
 *
 * Two programs read it:
 *   tests/unit/test_kernels.c  (OPC_ON_REF)  the CPU backend against double
 *                              loops written in the test, per element
 *   tests/cuda/test_cuda_ops.c (OPC_ON_CUDA) the CUDA backend against the CPU
 *                              backend, max |gpu - cpu| / max |cpu| per case
 * A case marked for one program only is one the other cannot take as it
 * stands: the reference loops in double are slow on the CUDA test's model-size
 * shapes, and the CPU's f32 rope angle drifts past the CUDA f32 limit at the
 * reference test's large positions. A new case should be OPC_ON_BOTH unless
 * one of those reasons applies.
 *
 * Each op's inputs come from an RNG seeded with that op's seed, so the data of
 * one op does not depend on which ops ran before it.
 *
 * What it is not: a test. It holds data and input builders; the programs
 * own the loops, the comparisons and the messages. */
#ifndef TSR_TESTS_COMMON_OP_CASES_H
#define TSR_TESTS_COMMON_OP_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "tests/common/check.h"

/* Which programs run a case. */
enum { OPC_ON_REF = 1, OPC_ON_CUDA = 2, OPC_ON_BOTH = 3 };

#define OPC_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- ops, seeds and tolerances ---------------------------------------------------- */

typedef enum {
    OPC_MEMORY,
    OPC_MATMUL,
    OPC_RMSNORM,
    OPC_ROPE,
    OPC_KV_STORE,
    OPC_ATTENTION,
    OPC_SWIGLU,
    OPC_ADD,
    OPC_ADD_BIAS,
    OPC_EMBEDDING,
    OPC_ARGMAX,
    OPC_TOPK,
    OPC_ROW_EXPSUM,
    OPC_COUNT,
} opc_op;

typedef struct {
    const char *name;
    uint64_t seed; /* the RNG seed of the op's inputs */
    /* OPC_ON_REF: |got - want| <= ref_rtol * scale, per element, against the
     * double loop (scale: the op's sum of magnitudes, or |want|; see the
     * test). -1: compared exactly (or by rule: argmax, topk, kv_store). */
    double ref_rtol;
    /* OPC_ON_CUDA: largest max|gpu - cpu| / max|cpu| per case, with CUDA
     * activations in f32 and weights in bf16, both in f32 (the reference
     * precision), and activations in bf16. */
    double cuda_f32, cuda_f32_weights, cuda_bf16;
} opc_op_info;

/* act f32: 1e-5 but matmul 1e-2 with bf16 weights (the CUDA backend may round
 * x to bf16 for its bf16 GEMM); act bf16: 1e-2; memory round trips are exact
 * in every mode (bf16 must round to nearest even like tsr_f32_to_bf16). */
static const opc_op_info opc_ops[OPC_COUNT] = {
    [OPC_MEMORY] = {"memory", 0x6d656d, -1, 0, 0, 0},
    [OPC_MATMUL] = {"matmul", 0x6d61746d, 1e-5, 1e-2, 1e-5, 1e-2},
    [OPC_RMSNORM] = {"rmsnorm", 0x726d73, 1e-5, 1e-5, 1e-5, 1e-2},
    [OPC_ROPE] = {"rope", 0x726f7065, 1e-5, 1e-5, 1e-5, 1e-2},
    [OPC_KV_STORE] = {"kv_store", 0x6b7673, -1, 1e-5, 1e-5, 1e-2},
    [OPC_ATTENTION] = {"attention", 0x617474, 1e-5, 1e-5, 1e-5, 1e-2},
    [OPC_SWIGLU] = {"swiglu", 0x737769, 1e-5, 1e-5, 1e-5, 1e-2},
    [OPC_ADD] = {"add", 0x616464, 1e-7, 1e-5, 1e-5, 1e-2},
    [OPC_ADD_BIAS] = {"add_bias", 0x616462, 1e-7, 1e-5, 1e-5, 1e-2},
    [OPC_EMBEDDING] = {"embedding", 0x656d62, -1, 1e-5, 1e-5, 1e-2},
    [OPC_ARGMAX] = {"argmax", 0x61726d, -1, 1e-5, 1e-5, 1e-2},
    [OPC_TOPK] = {"topk", 0x746f706b, -1, 1e-5, 1e-5, 1e-2},
    [OPC_ROW_EXPSUM] = {"row_expsum", 0x726f77, 1e-6, 1e-5, 1e-5, 1e-2},
};

/* The RNG for `op`'s inputs: the same stream whenever the op starts. */
static inline tu_rng opc_rng(opc_op op) {
    tu_rng r = {opc_ops[op].seed};
    return r;
}

/* A size and the programs that run it; an op's grid of sizes runs the
 * combinations whose sizes all carry the program's bit. */
typedef struct {
    int v;
    unsigned on;
} opc_size;

/* ---- matmul ------------------------------------------------------------------------ */

/* y (n, rows) [+]= x (n, cols) W (rows, cols)^T, plain and accumulating.
 * n = 1 takes the gemv path, n > 1 gemm. */
typedef struct {
    int n, rows, cols;
    unsigned on;
} opc_matmul_case;

static const opc_matmul_case opc_matmul_cases[] = {
    {1, 1, 1, OPC_ON_BOTH},
    {1, 5, 64, OPC_ON_BOTH},
    {1, 96, 17, OPC_ON_BOTH},
    {1, 1000, 97, OPC_ON_BOTH},
    {2, 33, 96, OPC_ON_BOTH},
    {3, 5, 96, OPC_ON_BOTH},
    {5, 17, 1, OPC_ON_BOTH},
    {17, 64, 5, OPC_ON_BOTH},
    {1, 64, 96, OPC_ON_REF},
    {17, 96, 64, OPC_ON_REF},
    {3, 1, 3, OPC_ON_REF},
    /* large enough for the CPU backend to split W's rows across threads, with
     * bands that do not divide the rows (and threads left idle) */
    {9, 77, 100, OPC_ON_REF},
    {40, 20, 100, OPC_ON_REF},
    {2, 300, 130, OPC_ON_REF},
    /* SmolLM2-135M's shapes: decode (n = 1) and a 37-token prefill */
    {1, 576, 576, OPC_ON_CUDA},
    {1, 8191, 576, OPC_ON_CUDA},
    {37, 576, 576, OPC_ON_CUDA},
    {37, 1536, 576, OPC_ON_CUDA},
    {37, 576, 1536, OPC_ON_CUDA},
    {37, 130, 1000, OPC_ON_CUDA},
    {37, 8191, 576, OPC_ON_CUDA},
    {64, 256, 192, OPC_ON_CUDA},
    /* n = 0 is a no-op (test_kernels checks it apart, output aliasing input) */
    {0, 64, 64, OPC_ON_CUDA},
};

/* ---- row-wise ops: rmsnorm, swiglu, add, add_bias ----------------------------------- */

/* Rows (tokens) per call, for rmsnorm, swiglu, add and add_bias. */
static const opc_size opc_rows[] = {
    {1, OPC_ON_BOTH}, {3, OPC_ON_BOTH}, {17, OPC_ON_REF}, {37, OPC_ON_CUDA}};

static const opc_size opc_rmsnorm_dims[] = {{5, OPC_ON_BOTH},   {64, OPC_ON_REF},
                                            {96, OPC_ON_REF},   {97, OPC_ON_CUDA},
                                            {576, OPC_ON_CUDA}, {1536, OPC_ON_CUDA}};
static const float opc_rmsnorm_eps[] = {1e-5f, 1e-6f};

static const opc_size opc_swiglu_dims[] = {
    {5, OPC_ON_BOTH}, {64, OPC_ON_REF}, {96, OPC_ON_REF}, {97, OPC_ON_CUDA}, {1536, OPC_ON_CUDA}};

/* add and add_bias */
static const opc_size opc_add_dims[] = {
    {5, OPC_ON_BOTH}, {64, OPC_ON_REF}, {96, OPC_ON_REF}, {97, OPC_ON_CUDA}, {576, OPC_ON_CUDA}};

/* Rows of very different sizes, some small enough that eps matters: the
 * magnitude of row t's rmsnorm input. */
static inline float opc_rmsnorm_row_mag(int t) {
    return t % 3 == 0 ? 1e-3f : t % 3 == 1 ? 3.0f : 100.0f;
}

/* ---- rope ---------------------------------------------------------------------------- */

typedef struct {
    int n, n_heads, head_dim;
    double theta; /* 0: random inv_freq (as with rope scaling) */
    unsigned on;
} opc_rope_case;

static const opc_rope_case opc_rope_cases[] = {
    {1, 1, 64, 10000, OPC_ON_REF},   {3, 4, 64, 10000, OPC_ON_REF},
    {17, 3, 64, 500000, OPC_ON_REF}, {5, 2, 96, 10000, OPC_ON_REF},
    {17, 4, 2, 10000, OPC_ON_REF},   {3, 6, 64, 0, OPC_ON_REF},
    {7, 1, 128, 1e6, OPC_ON_REF},    {1, 9, 64, 10000, OPC_ON_CUDA},
    {1, 3, 128, 1e6, OPC_ON_CUDA},   {37, 9, 64, 100000, OPC_ON_CUDA},
    {37, 3, 64, 10000, OPC_ON_CUDA}, {5, 32, 128, 5e5, OPC_ON_CUDA},
    {17, 1, 2, 10000, OPC_ON_CUDA},  {37, 6, 96, 0, OPC_ON_CUDA},
    {2, 1, 64, 10000, OPC_ON_CUDA},
};

/* Positions: the first 8 tokens of a multi-token case take these (rotated
 * by the case's index), the others are uniform below the bound. The CUDA
 * test stays at or below 600 (see the file comment) and puts its single
 * tokens at 599 and 600. */
static const int32_t opc_rope_pos_ref[8] = {0, 1, 7, 100, 5000, 8191, 32767, 131071};
enum { OPC_ROPE_POS_REF_BOUND = 8192 };
static const int32_t opc_rope_pos_cuda[8] = {0, 1, 15, 16, 255, 599, 600, 17};
enum { OPC_ROPE_POS_CUDA_BOUND = 601 };

/* ---- kv_store + paged attention ------------------------------------------------------ */

enum { OPC_MAX_SEQS = 4 };

typedef struct {
    int n_head, n_kv, head_dim, block_size;
    float scale; /* 0: 1/sqrt(head_dim) */
    int n_seqs;
    int prior[OPC_MAX_SEQS]; /* positions already in the cache per sequence */
    int fresh[OPC_MAX_SEQS]; /* new tokens in this batch per sequence */
    const char *label;
    unsigned on;
} opc_attn_case;

static const opc_attn_case opc_attn_cases[] = {
    /* GQA 6/2, a chunk continuing a 9-token cache beside a decode step */
    {6, 2, 64, 4, 0, 2, {9, 3}, {5, 1}, "gqa chunk", OPC_ON_REF},
    /* MHA 4/4, a fresh prefill beside a continuing sequence */
    {4, 4, 64, 4, 0, 2, {0, 13}, {6, 2}, "mha", OPC_ON_REF},
    /* one KV head for all, odd head_dim, block size 1 */
    {3, 1, 5, 1, 0.7f, 2, {4, 0}, {3, 5}, "block 1", OPC_ON_REF},
    /* head_dim 96, blocks larger than the sequences, three sequences */
    {8, 2, 96, 16, 0, 3, {1, 20, 0}, {1, 1, 17}, "big blocks", OPC_ON_REF},
    /* a single token at position 0 */
    {2, 1, 64, 4, 0, 1, {0}, {1}, "first token", OPC_ON_REF},
    /* large scale: peaked softmax */
    {4, 2, 64, 4, 2.0f, 2, {7, 2}, {2, 3}, "peaked", OPC_ON_REF},
    /* The CPU's blocked attention visits keys in blocks of 32 and tiles of
     * 16 tokens: cases across several of each. head_dim 48 and 80 (not
     * powers of two), 128; GQA 8/2, MQA, three sequences where one is a
     * long prefill, a 700-position context. */
    {8, 2, 48, 16, 0, 3, {40, 0, 65}, {1, 33, 30}, "hd48 blocks", OPC_ON_REF},
    {4, 1, 80, 16, 0, 2, {100, 5}, {3, 40}, "hd80 mqa", OPC_ON_REF},
    {9, 3, 128, 16, 0, 2, {0, 33}, {70, 2}, "hd128 prefill", OPC_ON_REF},
    {9, 3, 64, 16, 0, 2, {690, 31}, {10, 1}, "long context", OPC_ON_REF},
    {3, 3, 64, 8, 0.5f, 1, {0}, {100}, "prefill 100", OPC_ON_REF},
    /* n = 1 decode at position 599 */
    {9, 3, 64, 16, 0, 1, {599}, {1}, "decode", OPC_ON_CUDA},
    /* n = 37 prefill of a fresh sequence */
    {9, 3, 64, 16, 0, 1, {0}, {37}, "prefill", OPC_ON_CUDA},
    /* a 37-token chunk continuing a 64-token cache beside a chunk that
     * crosses a block boundary */
    {9, 3, 64, 16, 0, 2, {64, 15}, {37, 16}, "chunks", OPC_ON_CUDA},
    /* head_dim 128: decode steps of four sequences of different lengths */
    {9, 3, 128, 16, 0, 4, {17, 255, 600, 0}, {1, 1, 1, 1}, "decode batch", OPC_ON_CUDA},
    /* head_dim 128: prefill beside decode (continuous batching) */
    {9, 3, 128, 16, 0, 3, {300, 0, 583}, {1, 37, 17}, "mixed", OPC_ON_CUDA},
    /* the per-rank heads of 9/3 split three ways (tp = 3) */
    {3, 1, 64, 16, 0, 2, {100, 7}, {5, 1}, "tp3 slice", OPC_ON_CUDA},
    /* MQA, peaked softmax (large scale) */
    {8, 1, 64, 16, 0.5f, 2, {40, 3}, {3, 37}, "mqa peaked", OPC_ON_CUDA},
};

/* Where a case's tokens live: every sequence gets ceil(len / block_size)
 * blocks drawn from a shuffled pool that also has 3 spare blocks nobody owns;
 * unused table columns are -1. */
typedef struct {
    int len[OPC_MAX_SEQS]; /* prior + fresh */
    int max_len, max_blocks, n_blocks;
    int32_t *tables; /* (n_seqs, max_blocks) */
} opc_attn_layout;

/* Slot (block * block_size + offset) of sequence s, position p. */
static inline int32_t opc_attn_slot(const opc_attn_layout *L, const opc_attn_case *ac, int s,
                                    int p) {
    return L->tables[s * L->max_blocks + p / ac->block_size] * ac->block_size + p % ac->block_size;
}

static inline void opc_attn_layout_init(opc_attn_layout *L, const opc_attn_case *ac, tu_rng *r) {
    const int bs = ac->block_size, S = ac->n_seqs;
    int need[OPC_MAX_SEQS];
    L->max_len = 0, L->max_blocks = 1, L->n_blocks = 3;
    for (int s = 0; s < S; s++) {
        L->len[s] = ac->prior[s] + ac->fresh[s];
        L->max_len = L->len[s] > L->max_len ? L->len[s] : L->max_len;
        need[s] = (L->len[s] + bs - 1) / bs;
        if (need[s] + 1 > L->max_blocks)
            L->max_blocks = need[s] + 1;
        L->n_blocks += need[s];
    }
    int *pool = tu_xmalloc((size_t)L->n_blocks * sizeof *pool);
    for (int b = 0; b < L->n_blocks; b++)
        pool[b] = b;
    tu_shuffle_int(r, pool, L->n_blocks);
    L->tables = tu_xmalloc((size_t)S * L->max_blocks * sizeof *L->tables);
    for (int i = 0, k = 0; i < S * L->max_blocks; i++)
        L->tables[i] = (i % L->max_blocks) < need[i / L->max_blocks] ? pool[k++] : -1;
    free(pool);
}

static inline void opc_attn_layout_free(opc_attn_layout *L) {
    free(L->tables);
    L->tables = NULL;
}

/* The tokens of one phase: phase 0 the prior positions, phase 1 the new
 * tokens, each in a shuffled order (so sequences interleave). Fills fresh
 * arrays seq, pos and slot (caller frees) and returns their length (0: none,
 * nothing allocated). */
static inline int opc_attn_phase(const opc_attn_layout *L, const opc_attn_case *ac, int phase,
                                 tu_rng *r, int32_t **seq, int32_t **pos, int32_t **slot) {
    int n = 0;
    for (int s = 0; s < ac->n_seqs; s++)
        n += phase ? ac->fresh[s] : ac->prior[s];
    *seq = *pos = *slot = NULL;
    if (n == 0)
        return 0;
    int *order = tu_xmalloc((size_t)n * sizeof *order);
    *seq = tu_xmalloc((size_t)n * sizeof **seq);
    *pos = tu_xmalloc((size_t)n * sizeof **pos);
    *slot = tu_xmalloc((size_t)n * sizeof **slot);
    for (int i = 0; i < n; i++)
        order[i] = i;
    tu_shuffle_int(r, order, n);
    for (int s = 0, k = 0; s < ac->n_seqs; s++) {
        int p0 = phase ? ac->prior[s] : 0, p1 = phase ? L->len[s] : ac->prior[s];
        for (int p = p0; p < p1; p++, k++) {
            (*seq)[order[k]] = s;
            (*pos)[order[k]] = p;
        }
    }
    for (int i = 0; i < n; i++)
        (*slot)[i] = opc_attn_slot(L, ac, (*seq)[i], (*pos)[i]);
    free(order);
    return n;
}

/* ---- embedding ----------------------------------------------------------------------- */

/* test_kernels: a 7-row table and a fixed list of ids around row0; the CUDA
 * test: a 999-row table, decode (n = 1) and 37 tokens (see the test). */
static const opc_size opc_embedding_dims[] = {
    {5, OPC_ON_BOTH}, {96, OPC_ON_REF}, {97, OPC_ON_CUDA}, {576, OPC_ON_CUDA}};
static const opc_size opc_embedding_row0s[] = {
    {0, OPC_ON_BOTH}, {10, OPC_ON_BOTH}, {1000, OPC_ON_REF}, {24576, OPC_ON_CUDA}};
enum { OPC_EMBEDDING_ROWS_REF = 7, OPC_EMBEDDING_ROWS_CUDA = 999 };

/* ---- sampling ops: row_expsum, argmax, topk ----------------------------------------- */

/* Rows and vocabulary sizes. test_kernels runs argmax and topk on one
 * N x V matrix with planted ties, NaNs and -inf rows (OPC_PICKS_*); the CUDA
 * test runs the grids. */
enum { OPC_PICKS_N = 6, OPC_PICKS_V = 1000, OPC_PICKS_K = 40 };
enum { OPC_EXPSUM_ROWS_REF = 5 };
static const opc_size opc_expsum_vocab[] = {{1, OPC_ON_BOTH},   {7, OPC_ON_CUDA},
                                            {9, OPC_ON_REF},    {1000, OPC_ON_CUDA},
                                            {5000, OPC_ON_REF}, {49152, OPC_ON_CUDA}};
static const int opc_expsum_rows_cuda[] = {1, 5, 33};
static const int opc_argmax_rows_cuda[] = {1, 5, 64};
static const int opc_topk_rows_cuda[] = {1, 5, 33};
static const int opc_pick_vocab_cuda[] = {1, 7, 1000, 49152};
static const int opc_topk_k_cuda[] = {1, 40, 256};

#endif
