// RMS normalisation, optionally fused with the residual add that precedes it in a decoder
// layer:   s = x + residual (stored to residual_out, in T);   y = s / sqrt(mean(s²) + eps) · w
// With residual == nullptr it is plain rms_norm of x. Accumulation is in f32; the output is
// rounded once.
//
// Three variants, the same contract:
// - rms_norm_block_<dtype>_v<V>: one block per row; each thread keeps V 16-byte packs of the
//   row in registers, so memory is read once and written once. Needs hidden % (16/sizeof(T))
//   == 0, 16-byte aligned rows; hidden ≤ 1024·V·(16/sizeof(T)) (bf16: V=8 → 65536).
//   Launch: grid = rows, block = 32..1024 threads (ceil(packs / V) rounded up to a warp);
//   __launch_bounds__(1024) keeps registers within what a 1024-thread block may hold.
// - rms_norm_warp_<dtype>_v<V>: one warp per row, 8 rows per 256-thread block, reductions by
//   shuffles only (no shared memory, no barrier). For small rows: hidden ≤ 32·V·packsize
//   (bf16: V=4 → 1024). Same alignment needs.
// - rms_norm_scalar_<dtype>: any hidden, any alignment; one block per row, reads x twice.
// Bytes moved: (1 + has_residual) reads and (1 + has_residual) writes of rows·hidden
// elements, plus the weight. FLOPs: ~4 per element.
#include "common.cuh"

using namespace lz;

template <typename T, int V>
__device__ __forceinline__ void rms_norm_block(const T* __restrict__ x, long x_stride, const T* __restrict__ residual,
                                               long residual_stride, T* __restrict__ residual_out, long residual_out_stride,
                                               const T* __restrict__ weight, T* __restrict__ y, long y_stride, int hidden,
                                               float eps) {
    using P = Pack<T>;
    const long row = blockIdx.x;
    const int packs = hidden / P::N;
    const P* xr = reinterpret_cast<const P*>(x + row * x_stride);
    P regs[V];
    float sum_sq = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int p = threadIdx.x + i * blockDim.x;
        if (p < packs) {
            P v = xr[p];
            if (residual != nullptr) {
                const P r = reinterpret_cast<const P*>(residual + row * residual_stride)[p];
#pragma unroll
                for (int k = 0; k < P::N; ++k) v.v[k] = from_float<T>(to_float(v.v[k]) + to_float(r.v[k]));
                reinterpret_cast<P*>(residual_out + row * residual_out_stride)[p] = v;
            }
#pragma unroll
            for (int k = 0; k < P::N; ++k) {
                const float f = to_float(v.v[k]);
                sum_sq += f * f;
            }
            regs[i] = v;
        }
    }
    const float inv_rms = rsqrtf(block_sum(sum_sq) / hidden + eps);
    const P* wr = reinterpret_cast<const P*>(weight);
    P* yr = reinterpret_cast<P*>(y + row * y_stride);
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int p = threadIdx.x + i * blockDim.x;
        if (p < packs) {
            const P w = wr[p];
            P out;
#pragma unroll
            for (int k = 0; k < P::N; ++k) out.v[k] = from_float<T>(to_float(regs[i].v[k]) * inv_rms * to_float(w.v[k]));
            yr[p] = out;
        }
    }
}

template <typename T, int V>
__device__ __forceinline__ void rms_norm_warp(const T* __restrict__ x, long x_stride, const T* __restrict__ residual,
                                              long residual_stride, T* __restrict__ residual_out, long residual_out_stride,
                                              const T* __restrict__ weight, T* __restrict__ y, long y_stride, int rows,
                                              int hidden, float eps) {
    using P = Pack<T>;
    const long row = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;  // whole warps leave together: the shuffles below stay full-warp
    const int lane = threadIdx.x & 31;
    const int packs = hidden / P::N;
    const P* xr = reinterpret_cast<const P*>(x + row * x_stride);
    P regs[V];
    float sum_sq = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int p = lane + i * 32;
        if (p < packs) {
            P v = xr[p];
            if (residual != nullptr) {
                const P r = reinterpret_cast<const P*>(residual + row * residual_stride)[p];
#pragma unroll
                for (int k = 0; k < P::N; ++k) v.v[k] = from_float<T>(to_float(v.v[k]) + to_float(r.v[k]));
                reinterpret_cast<P*>(residual_out + row * residual_out_stride)[p] = v;
            }
#pragma unroll
            for (int k = 0; k < P::N; ++k) {
                const float f = to_float(v.v[k]);
                sum_sq += f * f;
            }
            regs[i] = v;
        }
    }
    const float inv_rms = rsqrtf(warp_sum(sum_sq) / hidden + eps);
    const P* wr = reinterpret_cast<const P*>(weight);
    P* yr = reinterpret_cast<P*>(y + row * y_stride);
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int p = lane + i * 32;
        if (p < packs) {
            const P w = wr[p];
            P out;
#pragma unroll
            for (int k = 0; k < P::N; ++k) out.v[k] = from_float<T>(to_float(regs[i].v[k]) * inv_rms * to_float(w.v[k]));
            yr[p] = out;
        }
    }
}

template <typename T>
__device__ __forceinline__ void rms_norm_scalar(const T* __restrict__ x, long x_stride, const T* __restrict__ residual,
                                                long residual_stride, T* __restrict__ residual_out, long residual_out_stride,
                                                const T* __restrict__ weight, T* __restrict__ y, long y_stride, int hidden,
                                                float eps) {
    const long row = blockIdx.x;
    float sum_sq = 0.f;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        float f = to_float(x[row * x_stride + j]);
        if (residual != nullptr) {
            const T s = from_float<T>(f + to_float(residual[row * residual_stride + j]));
            residual_out[row * residual_out_stride + j] = s;
            f = to_float(s);
        }
        sum_sq += f * f;
    }
    const float inv_rms = rsqrtf(block_sum(sum_sq) / hidden + eps);
    // Each thread re-reads only the elements it wrote above, so residual_out is safe to read.
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        const float f = residual != nullptr ? to_float(residual_out[row * residual_out_stride + j])
                                            : to_float(x[row * x_stride + j]);
        y[row * y_stride + j] = from_float<T>(f * inv_rms * to_float(weight[j]));
    }
}

#define LZ_NORM_ARGS(T)                                                                                         \
    const T *x, long x_stride, const T *residual, long residual_stride, T *residual_out, long residual_out_stride, \
        const T *weight, T *y, long y_stride, int rows, int hidden, float eps
#define LZ_NORM_PASS x, x_stride, residual, residual_stride, residual_out, residual_out_stride, weight, y, y_stride

#define LZ_RMS_NORM(NAME, T)                                                                                            \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_block_##NAME##_v1(LZ_NORM_ARGS(T)) { rms_norm_block<T, 1>(LZ_NORM_PASS, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_block_##NAME##_v2(LZ_NORM_ARGS(T)) { rms_norm_block<T, 2>(LZ_NORM_PASS, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_block_##NAME##_v4(LZ_NORM_ARGS(T)) { rms_norm_block<T, 4>(LZ_NORM_PASS, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_block_##NAME##_v8(LZ_NORM_ARGS(T)) { rms_norm_block<T, 8>(LZ_NORM_PASS, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(256) rms_norm_warp_##NAME##_v1(LZ_NORM_ARGS(T)) { rms_norm_warp<T, 1>(LZ_NORM_PASS, rows, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(256) rms_norm_warp_##NAME##_v2(LZ_NORM_ARGS(T)) { rms_norm_warp<T, 2>(LZ_NORM_PASS, rows, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(256) rms_norm_warp_##NAME##_v4(LZ_NORM_ARGS(T)) { rms_norm_warp<T, 4>(LZ_NORM_PASS, rows, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_scalar_##NAME(LZ_NORM_ARGS(T)) { rms_norm_scalar<T>(LZ_NORM_PASS, hidden, eps); }

LZ_RMS_NORM(bf16, __nv_bfloat16)
LZ_RMS_NORM(f16, __half)
LZ_RMS_NORM(f32, float)
