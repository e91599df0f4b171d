// SwiGLU: out = silu(gate) · up = gate / (1 + e^-gate) · up, in f32, rounded once.
//
// Rows of `inter` elements; gate, up and out each have their own row stride (in elements),
// so one fused gate-up tensor [rows, 2·inter] is the same kernel with up = gate + inter and
// both strides 2·inter.
// - swiglu_vec_<dtype>: two 16-byte packs per thread, 256 threads a block, each block one
//   chunk of 512 packs of a row (thread t takes packs t and t+256 of the chunk).
//   Needs inter % packsize == 0 and 16-byte aligned rows. Launch: 256 threads,
//   grid = (ceil(inter / packsize / 512), min(rows, 65535)); blocks step over rows by
//   gridDim.y. On the H100 (16384x14336 bf16, NVRTC 12.9 PTX, five rounds on the same
//   tensors) this ran at 3045-3050 GB/s against 3026-3030 for one pack a thread over a flat
//   grid; four packs a thread ran at 3036-3041 without the row loop and 2828-2884 with it.
// - swiglu_scalar_<dtype>: any size and alignment, one element per thread.
// Bytes moved: 2 reads + 1 write of rows·inter elements. FLOPs: ~5 per element.
#include "common.cuh"

using namespace lz;

__device__ __forceinline__ float silu(float g) { return g / (1.f + __expf(-g)); }

constexpr int SWIGLU_VEC_PACKS = 2;

template <typename T>
__device__ __forceinline__ void swiglu_vec(const T* __restrict__ gate, long gate_stride, const T* __restrict__ up,
                                           long up_stride, T* __restrict__ out, long out_stride, int rows, int inter) {
    using P = Pack<T>;
    const int packs = inter / P::N;
    const int first = blockIdx.x * blockDim.x * SWIGLU_VEC_PACKS + threadIdx.x;
    for (long row = blockIdx.y; row < rows; row += gridDim.y) {
        const P* g_row = reinterpret_cast<const P*>(gate + row * gate_stride);
        const P* u_row = reinterpret_cast<const P*>(up + row * up_stride);
        P* o_row = reinterpret_cast<P*>(out + row * out_stride);
        P g[SWIGLU_VEC_PACKS], u[SWIGLU_VEC_PACKS];
#pragma unroll
        for (int i = 0; i < SWIGLU_VEC_PACKS; ++i) {
            const int p = first + i * blockDim.x;
            if (p < packs) {
                g[i] = g_row[p];
                u[i] = u_row[p];
            }
        }
#pragma unroll
        for (int i = 0; i < SWIGLU_VEC_PACKS; ++i) {
            const int p = first + i * blockDim.x;
            if (p >= packs) continue;
            P o;
#pragma unroll
            for (int k = 0; k < P::N; ++k) o.v[k] = from_float<T>(silu(to_float(g[i].v[k])) * to_float(u[i].v[k]));
            o_row[p] = o;
        }
    }
}

template <typename T>
__device__ __forceinline__ void swiglu_scalar(const T* __restrict__ gate, long gate_stride, const T* __restrict__ up,
                                              long up_stride, T* __restrict__ out, long out_stride, int rows, int inter) {
    const long index = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long)rows * inter) return;
    const long row = index / inter;
    const long col = index - row * inter;
    out[row * out_stride + col] =
        from_float<T>(silu(to_float(gate[row * gate_stride + col])) * to_float(up[row * up_stride + col]));
}

#define LZ_SWIGLU(NAME, T)                                                                                        \
    extern "C" __global__ void __launch_bounds__(256) swiglu_vec_##NAME(const T* gate, long gate_stride, const T* up, long up_stride, T* out, \
                                                 long out_stride, int rows, int inter) {                          \
        swiglu_vec<T>(gate, gate_stride, up, up_stride, out, out_stride, rows, inter);                            \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(256) swiglu_scalar_##NAME(const T* gate, long gate_stride, const T* up, long up_stride,   \
                                                    T* out, long out_stride, int rows, int inter) {               \
        swiglu_scalar<T>(gate, gate_stride, up, up_stride, out, out_stride, rows, inter);                         \
    }

LZ_SWIGLU(bf16, __nv_bfloat16)
LZ_SWIGLU(f16, __half)
LZ_SWIGLU(f32, float)
