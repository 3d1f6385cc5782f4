/* kernels/cuda/rope.cu - rotate-half RoPE in place, one thread per (token,
 * head, pair); with `inverse`, the rotation by minus the angle (the backward
 * of RoPE, a rotation being orthogonal). The angle pos * inv_freq and its sine/cosine are computed in
 * double, as on the CPU: at positions near 1e5 an f32 angle is off by ~1e-2
 * radians. */
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/rope.h"

template <typename T>
__global__ void rope_kernel(T *x, const int32_t *__restrict__ pos,
                            const float *__restrict__ inv_freq, int n, int n_heads, int head_dim,
                            double sign) {
    const int half = head_dim / 2;
    const size_t total = (size_t)n * n_heads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const size_t th = idx / half; /* token * n_heads + head */
        const int t = (int)(th / n_heads);
        double sn, cs;
        sincos(sign * (double)pos[t] * (double)inv_freq[i], &sn, &cs);
        T *v = x + th * head_dim;
        const float x0 = tsr_ld(v[i]), x1 = tsr_ld(v[i + half]);
        const float c = (float)cs, sf = (float)sn;
        v[i] = tsr_st<T>(x0 * c - x1 * sf);
        v[i + half] = tsr_st<T>(x0 * sf + x1 * c);
    }
}

cudaError_t tsr_cuda_rope(cudaStream_t s, tsr_dtype act, void *x, const int32_t *pos,
                          const float *inv_freq, int n, int n_heads, int head_dim, int inverse) {
    const size_t total = (size_t)n * n_heads * (head_dim / 2);
    if (total == 0)
        return cudaSuccess;
    const unsigned th = 256;
    TSR_DISPATCH_ACT(act, T,
                     rope_kernel<T><<<tsr_grid_for(total, th), th, 0, s>>>(
                         (T *)x, pos, inv_freq, n, n_heads, head_dim, inverse ? -1.0 : 1.0));
    return cudaGetLastError();
}
