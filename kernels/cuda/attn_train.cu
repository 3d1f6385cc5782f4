/* kernels/cuda/attn_train.cu - causal attention for training over contiguous
 * sequences (rows seq_start[s] .. seq_start[s+1]-1 are sequence s), with the
 * log-sum-exp kept for the backward.
 *
 * Forward: one block per (query head, token), warps over the token's earlier
 * rows with the online softmax of attention.cu; lse = max + log(sum).
 * Backward (the flash-attention recurrences, with p recomputed from lse):
 *   delta_i = dout_i . out_i
 *   p_ij = exp(scale q_i.k_j - lse_i),  dp_ij = dout_i . v_j,
 *   ds_ij = p_ij (dp_ij - delta_i)
 *   dq_i = scale sum_j ds_ij k_j ;  dk_j += scale ds_ij q_i ;  dv_j += p_ij dout_i
 * dq is reduced inside the block; dk and dv receive contributions from every
 * later token and every query head of the KV group, so they are accumulated
 * with atomics in f32 scratch and converted at the end.
 *
 * What it is not: fast for long sequences (no tensor cores, K/V re-read per
 * query row); LoRA steps on short examples are GEMM-bound anyway. */
#include <math.h>

#include "kernels/cuda/attn_train.h"
#include "kernels/cuda/convert.h"
#include "kernels/cuda/cuda_util.cuh"

#define AT_WARPS 4
#define AT_PER_LANE 8 /* head_dim <= 256 */

/* Merges the warps' (max, sum, acc[hd]) partials into the block's result:
 * returns the merged max and sum, leaves each warp's rescale weight in wgt. */
__device__ __forceinline__ void at_merge(const float *s_max, const float *s_sum, float *wgt,
                                         float *gmax, float *gsum) {
    float gm = -INFINITY;
    for (int w = 0; w < AT_WARPS; w++)
        gm = fmaxf(gm, s_max[w]);
    float total = 0.0f;
    for (int w = 0; w < AT_WARPS; w++) {
        wgt[w] = s_sum[w] > 0.0f ? expf(s_max[w] - gm) : 0.0f;
        total += s_sum[w] * wgt[w];
    }
    *gmax = gm;
    *gsum = total;
}

template <typename T>
__global__ void __launch_bounds__(AT_WARPS * 32)
    attn_fwd_kernel(T *__restrict__ out, float *__restrict__ lse, const T *__restrict__ q,
                    const T *__restrict__ k, const T *__restrict__ v, tsr_attn_train_desc d) {
    __shared__ float s_max[AT_WARPS], s_sum[AT_WARPS];
    __shared__ float s_acc[AT_WARPS][AT_PER_LANE * 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int h = blockIdx.x, hd = d.head_dim;
    const size_t kv_dim = (size_t)d.n_kv_head * hd;
    const size_t koff = (size_t)(h / (d.n_head / d.n_kv_head)) * hd;
    for (int i = blockIdx.y; i < d.n_tokens; i += gridDim.y) {
        const T *qi = q + ((size_t)i * d.n_head + h) * hd;
        float qr[AT_PER_LANE], acc[AT_PER_LANE];
#pragma unroll
        for (int c = 0; c < AT_PER_LANE; c++) {
            const int e = lane + 32 * c;
            qr[c] = e < hd ? tsr_ld(qi[e]) * d.scale : 0.0f;
            acc[c] = 0.0f;
        }
        const int start = d.seq_start[d.tok_seq[i]];
        float m = -INFINITY, l = 0.0f;
        for (int j = start + warp; j <= i; j += AT_WARPS) {
            const T *kj = k + (size_t)j * kv_dim + koff, *vj = v + (size_t)j * kv_dim + koff;
            float sc = 0.0f;
#pragma unroll
            for (int c = 0; c < AT_PER_LANE; c++) {
                const int e = lane + 32 * c;
                if (e < hd)
                    sc += qr[c] * tsr_ld(kj[e]);
            }
            sc = tsr_warp_sum(sc);
            const float mn = fmaxf(m, sc), corr = expf(m - mn), pe = expf(sc - mn);
            l = l * corr + pe;
#pragma unroll
            for (int c = 0; c < AT_PER_LANE; c++) {
                const int e = lane + 32 * c;
                if (e < hd)
                    acc[c] = acc[c] * corr + pe * tsr_ld(vj[e]);
            }
            m = mn;
        }
        if (lane == 0) {
            s_max[warp] = m;
            s_sum[warp] = l;
        }
#pragma unroll
        for (int c = 0; c < AT_PER_LANE; c++) {
            const int e = lane + 32 * c;
            if (e < hd)
                s_acc[warp][e] = acc[c];
        }
        __syncthreads();
        float wgt[AT_WARPS], gm, gs;
        at_merge(s_max, s_sum, wgt, &gm, &gs);
        T *oi = out + ((size_t)i * d.n_head + h) * hd;
        for (int e = threadIdx.x; e < hd; e += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < AT_WARPS; w++)
                o += s_acc[w][e] * wgt[w];
            oi[e] = tsr_st<T>(o / gs);
        }
        if (threadIdx.x == 0)
            lse[(size_t)i * d.n_head + h] = gm + logf(gs);
        __syncthreads();
    }
}

/* delta(n, n_head) = rowwise dot of dout and out, one warp per (row, head). */
template <typename T>
__global__ void attn_delta_kernel(float *delta, const T *__restrict__ dout,
                                  const T *__restrict__ out, size_t rows, int hd) {
    const size_t r = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (r >= rows)
        return;
    float s = 0.0f;
    for (int e = lane; e < hd; e += 32)
        s += tsr_ld(dout[r * hd + e]) * tsr_ld(out[r * hd + e]);
    s = tsr_warp_sum(s);
    if (lane == 0)
        delta[r] = s;
}

template <typename T>
__global__ void __launch_bounds__(AT_WARPS * 32)
    attn_bwd_kernel(T *__restrict__ dq, float *dk32, float *dv32, const T *__restrict__ dout,
                    const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v,
                    const float *__restrict__ lse, const float *__restrict__ delta,
                    tsr_attn_train_desc d) {
    __shared__ float s_dq[AT_WARPS][AT_PER_LANE * 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int h = blockIdx.x, hd = d.head_dim;
    const size_t kv_dim = (size_t)d.n_kv_head * hd;
    const size_t koff = (size_t)(h / (d.n_head / d.n_kv_head)) * hd;
    for (int i = blockIdx.y; i < d.n_tokens; i += gridDim.y) {
        const size_t qo = ((size_t)i * d.n_head + h) * hd;
        float qr[AT_PER_LANE], dor[AT_PER_LANE], dqa[AT_PER_LANE];
#pragma unroll
        for (int c = 0; c < AT_PER_LANE; c++) {
            const int e = lane + 32 * c;
            qr[c] = e < hd ? tsr_ld(q[qo + e]) : 0.0f;
            dor[c] = e < hd ? tsr_ld(dout[qo + e]) : 0.0f;
            dqa[c] = 0.0f;
        }
        const float li = lse[(size_t)i * d.n_head + h], di = delta[(size_t)i * d.n_head + h];
        const int start = d.seq_start[d.tok_seq[i]];
        for (int j = start + warp; j <= i; j += AT_WARPS) {
            const T *kj = k + (size_t)j * kv_dim + koff, *vj = v + (size_t)j * kv_dim + koff;
            float sc = 0.0f, dp = 0.0f;
#pragma unroll
            for (int c = 0; c < AT_PER_LANE; c++) {
                const int e = lane + 32 * c;
                if (e < hd) {
                    sc += qr[c] * tsr_ld(kj[e]);
                    dp += dor[c] * tsr_ld(vj[e]);
                }
            }
            sc = tsr_warp_sum(sc);
            dp = tsr_warp_sum(dp);
            const float p = expf(sc * d.scale - li);
            const float ds = p * (dp - di) * d.scale;
            float *dkj = dk32 + (size_t)j * kv_dim + koff, *dvj = dv32 + (size_t)j * kv_dim + koff;
#pragma unroll
            for (int c = 0; c < AT_PER_LANE; c++) {
                const int e = lane + 32 * c;
                if (e < hd) {
                    dqa[c] += ds * tsr_ld(kj[e]);
                    atomicAdd(dkj + e, ds * qr[c]);
                    atomicAdd(dvj + e, p * dor[c]);
                }
            }
        }
#pragma unroll
        for (int c = 0; c < AT_PER_LANE; c++) {
            const int e = lane + 32 * c;
            if (e < hd)
                s_dq[warp][e] = dqa[c];
        }
        __syncthreads();
        for (int e = threadIdx.x; e < hd; e += blockDim.x) {
            float g = 0.0f;
            for (int w = 0; w < AT_WARPS; w++)
                g += s_dq[w][e];
            dq[qo + e] = tsr_st<T>(g);
        }
        __syncthreads();
    }
}

static int desc_ok(const tsr_attn_train_desc *d) {
    return d->head_dim > 0 && d->head_dim <= AT_PER_LANE * 32 && d->n_kv_head > 0 &&
           d->n_head % d->n_kv_head == 0 && d->n_head <= 65535;
}

cudaError_t tsr_cuda_attn_train_fwd(cudaStream_t s, tsr_dtype act, void *out, float *lse,
                                    const void *q, const void *k, const void *v,
                                    const tsr_attn_train_desc *d) {
    if (d->n_tokens <= 0)
        return cudaSuccess;
    if (!desc_ok(d))
        return cudaErrorInvalidValue;
    const dim3 grid((unsigned)d->n_head, (unsigned)(d->n_tokens < 65535 ? d->n_tokens : 65535));
    TSR_DISPATCH_ACT(act, T,
                     attn_fwd_kernel<T><<<grid, AT_WARPS * 32, 0, s>>>(
                         (T *)out, lse, (const T *)q, (const T *)k, (const T *)v, *d));
    return cudaGetLastError();
}

cudaError_t tsr_cuda_attn_train_bwd(cudaStream_t s, tsr_dtype act, void *dq, void *dk, void *dv,
                                    const void *dout, const void *q, const void *k, const void *v,
                                    const void *out, const float *lse, float *dk32, float *dv32,
                                    float *delta, const tsr_attn_train_desc *d) {
    if (d->n_tokens <= 0)
        return cudaSuccess;
    if (!desc_ok(d))
        return cudaErrorInvalidValue;
    const size_t kv_count = (size_t)d->n_tokens * d->n_kv_head * d->head_dim;
    const size_t rows = (size_t)d->n_tokens * d->n_head;
    cudaError_t e;
    if ((e = cudaMemsetAsync(dk32, 0, kv_count * sizeof(float), s)) != cudaSuccess ||
        (e = cudaMemsetAsync(dv32, 0, kv_count * sizeof(float), s)) != cudaSuccess)
        return e;
    const dim3 grid((unsigned)d->n_head, (unsigned)(d->n_tokens < 65535 ? d->n_tokens : 65535));
    TSR_DISPATCH_ACT(act, T,
                     attn_delta_kernel<T><<<tsr_grid_for(rows * 32, 256), 256, 0, s>>>(
                         delta, (const T *)dout, (const T *)out, rows, d->head_dim);
                     attn_bwd_kernel<T><<<grid, AT_WARPS * 32, 0, s>>>(
                         (T *)dq, dk32, dv32, (const T *)dout, (const T *)q, (const T *)k,
                         (const T *)v, lse, delta, *d));
    if ((e = cudaGetLastError()) != cudaSuccess)
        return e;
    if ((e = tsr_cuda_convert(s, dk, act, dk32, TSR_F32, kv_count)) != cudaSuccess)
        return e;
    return tsr_cuda_convert(s, dv, act, dv32, TSR_F32, kv_count);
}
