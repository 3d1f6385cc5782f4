/* kernels/cuda/attention.cu - causal attention over the paged KV cache for
 * prefill and decode in one fused kernel: scores are never written to memory.
 *
 * One block per (query head, token); its ATT_WARPS warps take the token's
 * cache positions round-robin. A warp holds the query (pre-scaled) and its
 * own output accumulator in registers, head_dim / 32 values per lane, and
 * keeps the flash-attention running (max, sum) pair: for each position it
 * computes the score with a warp reduction, rescales its accumulator by
 * exp(old_max - new_max) and adds exp(score - new_max) * v. At the end the
 * warps' partial results are merged through shared memory with the same
 * rescaling. All arithmetic is f32 whatever the storage type.
 *
 * What it is not: a tensor-core kernel. Prefill re-reads K/V once per query
 * token (from L2 for short prompts); tiles of queries sharing K/V loads
 * through mma are the next step for long prompts. */
#include <math.h>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_util.cuh"

#define ATT_WARPS 4
#define ATT_MAX_PER_LANE 8 /* head_dim <= 256 */

template <typename T>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_kernel(T *__restrict__ out, const T *__restrict__ q, const T *__restrict__ kc,
                     const T *__restrict__ vc, tsr_attn_desc d) {
    __shared__ float s_max[ATT_WARPS], s_sum[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_PER_LANE * 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int h = blockIdx.x, hd = d.head_dim;
    const int kv_head = h / (d.n_head / d.n_kv_head);
    const size_t kv_dim = (size_t)d.n_kv_head * hd;
    const size_t head_off = (size_t)kv_head * hd;

    for (int t = blockIdx.y; t < d.n_tokens; t += gridDim.y) {
        const T *qh = q + ((size_t)t * d.n_head + h) * hd;
        float qr[ATT_MAX_PER_LANE], acc[ATT_MAX_PER_LANE];
#pragma unroll
        for (int k = 0; k < ATT_MAX_PER_LANE; k++) {
            const int i = lane + 32 * k;
            qr[k] = i < hd ? tsr_ld(qh[i]) * d.scale : 0.0f;
            acc[k] = 0.0f;
        }
        const int32_t *table = d.block_tables + (size_t)d.seq[t] * d.max_blocks;
        const int npos = d.pos[t] + 1;
        float m = -INFINITY, l = 0.0f;
        for (int p = warp; p < npos; p += ATT_WARPS) {
            const size_t slot = (size_t)table[p / d.block_size] * d.block_size + p % d.block_size;
            const T *kp = kc + slot * kv_dim + head_off;
            const T *vp = vc + slot * kv_dim + head_off;
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < ATT_MAX_PER_LANE; k++) {
                const int i = lane + 32 * k;
                if (i < hd)
                    s += qr[k] * tsr_ld(kp[i]);
            }
            s = tsr_warp_sum(s);
            const float mn = fmaxf(m, s);
            const float corr = expf(m - mn); /* 0 on the first position (m = -inf) */
            const float pe = expf(s - mn);
            l = l * corr + pe;
#pragma unroll
            for (int k = 0; k < ATT_MAX_PER_LANE; k++) {
                const int i = lane + 32 * k;
                if (i < hd)
                    acc[k] = acc[k] * corr + pe * tsr_ld(vp[i]);
            }
            m = mn;
        }
        if (lane == 0) {
            s_max[warp] = m;
            s_sum[warp] = l;
        }
#pragma unroll
        for (int k = 0; k < ATT_MAX_PER_LANE; k++) {
            const int i = lane + 32 * k;
            if (i < hd)
                s_acc[warp][i] = acc[k];
        }
        __syncthreads();
        /* merge: warps that saw no position have max -inf and weight 0 */
        float gm = -INFINITY;
        for (int w = 0; w < ATT_WARPS; w++)
            gm = fmaxf(gm, s_max[w]);
        float wgt[ATT_WARPS], total = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) {
            wgt[w] = s_sum[w] > 0.0f ? expf(s_max[w] - gm) : 0.0f;
            total += s_sum[w] * wgt[w];
        }
        const float inv = 1.0f / total;
        T *oh = out + ((size_t)t * d.n_head + h) * hd;
        for (int i = threadIdx.x; i < hd; i += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < ATT_WARPS; w++)
                o += s_acc[w][i] * wgt[w];
            oh[i] = tsr_st<T>(o * inv);
        }
        __syncthreads(); /* the shared arrays are reused by the next token */
    }
}

cudaError_t tsr_cuda_attention(cudaStream_t s, tsr_dtype act, void *out, const void *q,
                               const void *k_cache, const void *v_cache, const tsr_attn_desc *d) {
    if (d->n_tokens <= 0)
        return cudaSuccess;
    if (d->head_dim <= 0 || d->head_dim > ATT_MAX_PER_LANE * 32 || d->n_kv_head <= 0 ||
        d->n_head % d->n_kv_head != 0 || d->n_head > 65535)
        return cudaErrorInvalidValue;
    const dim3 grid((unsigned)d->n_head, (unsigned)(d->n_tokens < 65535 ? d->n_tokens : 65535));
    TSR_DISPATCH_ACT(act, T,
                     attention_kernel<T><<<grid, ATT_WARPS * 32, 0, s>>>(
                         (T *)out, (const T *)q, (const T *)k_cache, (const T *)v_cache, *d));
    return cudaGetLastError();
}
