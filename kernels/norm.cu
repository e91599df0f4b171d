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

// The pointer and stride arguments every norm entry point and device function passes on.
#define LZ_NORM_PASS x, x_stride, residual, residual_stride, residual_out, residual_out_stride, weight, y, y_stride

// Loads this thread's packs of `row` (packs first, first + step, ... below `packs`) into
// `regs`, adding the residual and storing the sum to residual_out when there is one, and
// returns the thread's share of the row's sum of squares.
template <typename T, int V, bool RESIDUAL>
__device__ __forceinline__ float load_row(Pack<T> (&regs)[V], const T* __restrict__ x, long x_stride,
                                          const T* __restrict__ residual, long residual_stride,
                                          T* __restrict__ residual_out, long residual_out_stride, long row, int packs,
                                          int first, int step) {
    using P = Pack<T>;
    const P* xr = reinterpret_cast<const P*>(x + row * x_stride);
    float sum_sq = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int p = first + i * step;
        if (p < packs) {
            P v = xr[p];
            if constexpr (RESIDUAL) {
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
    return sum_sq;
}

// Whether a thread holding V packs of a row also loads its packs of the weight (and bias)
// before the reductions, so that those loads (L2 hits after the first rows) are in flight
// with the row's rather than waited for after the barrier. Only for V ≤ 2: with V = 4 it
// is far slower, likely from register pressure under __launch_bounds__(1024) (measured on
// the H100, bf16 GB/s: rms_norm 16384×4096 V = 2 2834 → 2851, 65536×4096 2981 → 3003;
// V = 4 2834 → 2081). layer_norm does not preload (see there).
template <int V> constexpr bool PRELOAD = V <= 2;

// Loads this thread's packs (first, first + step, ... below `packs`) of a row-long vector
// (the weight, the bias) when PRELOAD<V>; otherwise leaves `regs` to be unused.
template <typename T, int V, bool PRE = PRELOAD<V>>
__device__ __forceinline__ void preload_vector(Pack<T> (&regs)[V], const T* __restrict__ v, int packs, int first, int step) {
    if constexpr (PRE) {
        using P = Pack<T>;
        const P* vr = reinterpret_cast<const P*>(v);
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int p = first + i * step;
            if (p < packs) regs[i] = vr[p];
        }
    }
}

// Pack i (at p) of a row-long vector: preloaded, or loaded now.
template <typename T, int V, bool PRE = PRELOAD<V>>
__device__ __forceinline__ Pack<T> vector_pack(const Pack<T> (&regs)[V], const T* __restrict__ v, int i, int p) {
    if constexpr (PRE) return regs[i];
    else return reinterpret_cast<const Pack<T>*>(v)[p];
}

// Writes regs · inv_rms · weight to this thread's packs of `row` in y (`w`: the weight's
// packs, when preloaded).
template <typename T, int V, bool PRE = PRELOAD<V>>
__device__ __forceinline__ void store_row(const Pack<T> (&regs)[V], const Pack<T> (&w)[V], const T* __restrict__ weight,
                                          T* __restrict__ y, long y_stride, long row, int packs, int first, int step,
                                          float inv_rms) {
    using P = Pack<T>;
    P* yr = reinterpret_cast<P*>(y + row * y_stride);
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int p = first + i * step;
        if (p < packs) {
            const P wv = vector_pack<T, V, PRE>(w, weight, i, p);
            P out;
#pragma unroll
            for (int k = 0; k < P::N; ++k) out.v[k] = from_float<T>(to_float(regs[i].v[k]) * inv_rms * to_float(wv.v[k]));
            yr[p] = out;
        }
    }
}

template <typename T, int V, bool RESIDUAL, bool PRE = PRELOAD<V>>
__device__ __forceinline__ void rms_norm_block_body(const T* __restrict__ x, long x_stride, const T* __restrict__ residual,
                                               long residual_stride, T* __restrict__ residual_out, long residual_out_stride,
                                               const T* __restrict__ weight, T* __restrict__ y, long y_stride, int hidden,
                                               float eps) {
    const long row = blockIdx.x;
    const int packs = hidden / Pack<T>::N;
    Pack<T> regs[V];
    const float sum_sq = load_row<T, V, RESIDUAL>(regs, x, x_stride, residual, residual_stride, residual_out,
                                        residual_out_stride, row, packs, threadIdx.x, blockDim.x);
    Pack<T> w[V];
    preload_vector<T, V, PRE>(w, weight, packs, threadIdx.x, blockDim.x);
    const float inv_rms = rsqrtf(block_sum(sum_sq) / hidden + eps);
    store_row<T, V, PRE>(regs, w, weight, y, y_stride, row, packs, threadIdx.x, blockDim.x, inv_rms);
}

// The residual's presence is uniform over the launch: branching once here gives each case
// its own straight code (a test of `residual` inside the load loop cost rms_norm ~1% of
// bandwidth on the H100, and the same test of `bias` cost layer_norm ~2.5%).
template <typename T, int V>
__device__ __forceinline__ void rms_norm_block(const T* __restrict__ x, long x_stride, const T* __restrict__ residual,
                                               long residual_stride, T* __restrict__ residual_out, long residual_out_stride,
                                               const T* __restrict__ weight, T* __restrict__ y, long y_stride, int hidden,
                                               float eps) {
    if (residual != nullptr)
        rms_norm_block_body<T, V, true>(LZ_NORM_PASS, hidden, eps);
    else
        rms_norm_block_body<T, V, false>(LZ_NORM_PASS, hidden, eps);
}

// Rows of 513 to 1024 packs, 2 packs a thread in blocks of up to 512 threads, without the
// residual: all of an SM's 2048 threads are resident only at 32 registers or fewer a thread,
// hence the `_wide` entry points' launch bounds, which leave no room for the weight preload.
// On the H100 (bf16 4096×8192, GB/s, four pairs of buffers in one process): 2 packs under
// 1024-thread bounds 2512–2552 (47 registers: half the threads resident), 4 packs a thread
// 2614–2645, these entry points 2638–2691; a copy of the same bytes 2646–2673. The residual
// case is never launched here (the fused add takes 1 pack a thread on such rows) but is
// handled.
template <typename T>
__device__ __forceinline__ void rms_norm_block_wide(const T* __restrict__ x, long x_stride, const T* __restrict__ residual,
                                                    long residual_stride, T* __restrict__ residual_out,
                                                    long residual_out_stride, const T* __restrict__ weight, T* __restrict__ y,
                                                    long y_stride, int hidden, float eps) {
    if (residual != nullptr)
        rms_norm_block_body<T, 2, true>(LZ_NORM_PASS, hidden, eps);
    else
        rms_norm_block_body<T, 2, false, false>(LZ_NORM_PASS, hidden, eps);
}

template <typename T, int V, bool RESIDUAL>
__device__ __forceinline__ void rms_norm_warp_body(const T* __restrict__ x, long x_stride, const T* __restrict__ residual,
                                              long residual_stride, T* __restrict__ residual_out, long residual_out_stride,
                                              const T* __restrict__ weight, T* __restrict__ y, long y_stride, int rows,
                                              int hidden, float eps) {
    const long row = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;  // whole warps leave together: the shuffles below stay full-warp
    const int lane = threadIdx.x & 31;
    const int packs = hidden / Pack<T>::N;
    Pack<T> regs[V];
    const float sum_sq = load_row<T, V, RESIDUAL>(regs, x, x_stride, residual, residual_stride, residual_out,
                                        residual_out_stride, row, packs, lane, 32);
    Pack<T> w[V];
    preload_vector<T, V>(w, weight, packs, lane, 32);
    const float inv_rms = rsqrtf(warp_sum(sum_sq) / hidden + eps);
    store_row<T, V>(regs, w, weight, y, y_stride, row, packs, lane, 32, inv_rms);
}

template <typename T, int V>
__device__ __forceinline__ void rms_norm_warp(const T* __restrict__ x, long x_stride, const T* __restrict__ residual,
                                              long residual_stride, T* __restrict__ residual_out, long residual_out_stride,
                                              const T* __restrict__ weight, T* __restrict__ y, long y_stride, int rows,
                                              int hidden, float eps) {
    if (residual != nullptr)
        rms_norm_warp_body<T, V, true>(LZ_NORM_PASS, rows, hidden, eps);
    else
        rms_norm_warp_body<T, V, false>(LZ_NORM_PASS, rows, hidden, eps);
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

#define LZ_RMS_NORM(NAME, T)                                                                                            \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_block_##NAME##_v1(LZ_NORM_ARGS(T)) { rms_norm_block<T, 1>(LZ_NORM_PASS, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_block_##NAME##_v2(LZ_NORM_ARGS(T)) { rms_norm_block<T, 2>(LZ_NORM_PASS, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_block_##NAME##_v4(LZ_NORM_ARGS(T)) { rms_norm_block<T, 4>(LZ_NORM_PASS, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_block_##NAME##_v8(LZ_NORM_ARGS(T)) { rms_norm_block<T, 8>(LZ_NORM_PASS, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(512, 4) rms_norm_block_##NAME##_v2_wide(LZ_NORM_ARGS(T)) { rms_norm_block_wide<T>(LZ_NORM_PASS, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(256) rms_norm_warp_##NAME##_v1(LZ_NORM_ARGS(T)) { rms_norm_warp<T, 1>(LZ_NORM_PASS, rows, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(256) rms_norm_warp_##NAME##_v2(LZ_NORM_ARGS(T)) { rms_norm_warp<T, 2>(LZ_NORM_PASS, rows, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(256) rms_norm_warp_##NAME##_v4(LZ_NORM_ARGS(T)) { rms_norm_warp<T, 4>(LZ_NORM_PASS, rows, hidden, eps); } \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_scalar_##NAME(LZ_NORM_ARGS(T)) { rms_norm_scalar<T>(LZ_NORM_PASS, hidden, eps); }

LZ_RMS_NORM(bf16, __nv_bfloat16)
LZ_RMS_NORM(f16, __half)
LZ_RMS_NORM(f32, float)

// Layer normalisation: y = (x − mean) / sqrt(var + eps) · w + b, per row, f32 statistics.
// One block per row with the row in registers (V packs per thread): the mean and then the
// variance of (x − mean) are two block reductions over registers, so memory is read once
// and written once. Needs hidden % packsize == 0, 16-byte aligned rows, hidden ≤
// 1024·V·packsize. Bytes moved: rows·hidden read and written, plus weight and bias.
// layer_norm_scalar_<dtype>: any hidden and alignment, reads x three times.
template <typename T, int V, bool BIAS>
__device__ __forceinline__ void layer_norm_block_body(const T* __restrict__ x, long x_stride, const T* __restrict__ weight,
                                                 const T* __restrict__ bias, T* __restrict__ y, long y_stride, int hidden,
                                                 float eps) {
    using P = Pack<T>;
    const long row = blockIdx.x;
    const int packs = hidden / P::N;
    const P* xr = reinterpret_cast<const P*>(x + row * x_stride);
    // The row stays in registers as loaded (converting again is exact and cheap). The
    // weight and bias are loaded after the reductions: preloading them (PRELOAD) costs
    // layer_norm ~6% on the H100 (bf16 16384×4096: 2822-2838 → 2634-2662 GB/s).
    // Also measured there, on the same tensors as liger's kernel (which this one matches,
    // 0.994-0.998 of it; ncu: equal cycles), and no better: the row brought into shared
    // memory by one bulk copy (cp.async.bulk), with or without a bulk store of y (0.980-
    // 0.998); L2::256B or L2::128B prefetch hints on x's loads (0.996-0.999); occupancy
    // forced up by launch bounds (256, 8) (0.953: spills) or 512 threads of one pack (0.92).
    P regs[V];
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int p = threadIdx.x + i * blockDim.x;
        if (p < packs) {
            regs[i] = xr[p];
#pragma unroll
            for (int k = 0; k < P::N; ++k) sum += to_float(regs[i].v[k]);
        }
    }
    const float mean = block_sum(sum) / hidden;
    float sum_sq = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int p = threadIdx.x + i * blockDim.x;
        if (p < packs) {
#pragma unroll
            for (int k = 0; k < P::N; ++k) {
                const float d = to_float(regs[i].v[k]) - mean;
                sum_sq += d * d;
            }
        }
    }
    const float inv_std = rsqrtf(block_sum(sum_sq) / hidden + eps);
    P* yr = reinterpret_cast<P*>(y + row * y_stride);
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int p = threadIdx.x + i * blockDim.x;
        if (p < packs) {
            const P wv = reinterpret_cast<const P*>(weight)[p];
            P bv;
            if constexpr (BIAS) bv = reinterpret_cast<const P*>(bias)[p];
            P out;
#pragma unroll
            for (int k = 0; k < P::N; ++k) {
                const float scaled = (to_float(regs[i].v[k]) - mean) * inv_std * to_float(wv.v[k]);
                out.v[k] = from_float<T>(BIAS ? scaled + to_float(bv.v[k]) : scaled);
            }
            yr[p] = out;
        }
    }
}

// As rms_norm_block: one uniform branch on the bias, each case straight code.
template <typename T, int V>
__device__ __forceinline__ void layer_norm_block(const T* __restrict__ x, long x_stride, const T* __restrict__ weight,
                                                 const T* __restrict__ bias, T* __restrict__ y, long y_stride, int hidden,
                                                 float eps) {
    if (bias != nullptr)
        layer_norm_block_body<T, V, true>(x, x_stride, weight, bias, y, y_stride, hidden, eps);
    else
        layer_norm_block_body<T, V, false>(x, x_stride, weight, bias, y, y_stride, hidden, eps);
}

template <typename T>
__device__ __forceinline__ void layer_norm_scalar(const T* __restrict__ x, long x_stride, const T* __restrict__ weight,
                                                  const T* __restrict__ bias, T* __restrict__ y, long y_stride, int hidden,
                                                  float eps) {
    const long row = blockIdx.x;
    float sum = 0.f;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) sum += to_float(x[row * x_stride + j]);
    const float mean = block_sum(sum) / hidden;
    float sum_sq = 0.f;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        const float d = to_float(x[row * x_stride + j]) - mean;
        sum_sq += d * d;
    }
    const float inv_std = rsqrtf(block_sum(sum_sq) / hidden + eps);
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        const float shift = bias != nullptr ? to_float(bias[j]) : 0.f;
        y[row * y_stride + j] = from_float<T>((to_float(x[row * x_stride + j]) - mean) * inv_std * to_float(weight[j]) + shift);
    }
}

#define LZ_LN_ARGS(T) const T *x, long x_stride, const T *weight, const T *bias, T *y, long y_stride, int rows, int hidden, float eps
#define LZ_LAYER_NORM(NAME, T)                                                                                                \
    extern "C" __global__ void __launch_bounds__(1024) layer_norm_block_##NAME##_v1(LZ_LN_ARGS(T)) {                         \
        layer_norm_block<T, 1>(x, x_stride, weight, bias, y, y_stride, hidden, eps);                                          \
    }                                                                                                                         \
    extern "C" __global__ void __launch_bounds__(1024) layer_norm_block_##NAME##_v2(LZ_LN_ARGS(T)) {                         \
        layer_norm_block<T, 2>(x, x_stride, weight, bias, y, y_stride, hidden, eps);                                          \
    }                                                                                                                         \
    extern "C" __global__ void __launch_bounds__(1024) layer_norm_block_##NAME##_v4(LZ_LN_ARGS(T)) {                         \
        layer_norm_block<T, 4>(x, x_stride, weight, bias, y, y_stride, hidden, eps);                                          \
    }                                                                                                                         \
    extern "C" __global__ void __launch_bounds__(1024) layer_norm_block_##NAME##_v8(LZ_LN_ARGS(T)) {                         \
        layer_norm_block<T, 8>(x, x_stride, weight, bias, y, y_stride, hidden, eps);                                          \
    }                                                                                                                         \
    extern "C" __global__ void __launch_bounds__(1024) layer_norm_scalar_##NAME(LZ_LN_ARGS(T)) {                             \
        layer_norm_scalar<T>(x, x_stride, weight, bias, y, y_stride, hidden, eps);                                            \
    }

LZ_LAYER_NORM(bf16, __nv_bfloat16)
LZ_LAYER_NORM(f16, __half)
LZ_LAYER_NORM(f32, float)
