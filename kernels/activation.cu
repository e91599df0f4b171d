// SwiGLU: out = silu(gate) · up = gate / (1 + e^-gate) · up, in f32, rounded once.
//
// Rows of `inter` elements; gate, up and out each have their own row stride (in elements),
// so one fused gate-up tensor [rows, 2·inter] is the same kernel with up = gate + inter and
// both strides 2·inter.
// - swiglu_vec_<dtype>: one 16-byte pack per thread over rows·(inter / packsize) packs.
//   Needs inter % packsize == 0 and 16-byte aligned rows. Launch: 256 threads,
//   grid = ceil(rows · inter / packsize / 256).
// - swiglu_scalar_<dtype>: any size and alignment, one element per thread.
// Bytes moved: 2 reads + 1 write of rows·inter elements. FLOPs: ~5 per element.
#include "common.cuh"

using namespace lz;

__device__ __forceinline__ float silu(float g) { return g / (1.f + __expf(-g)); }

template <typename T>
__device__ __forceinline__ void swiglu_vec(const T* __restrict__ gate, long gate_stride, const T* __restrict__ up,
                                           long up_stride, T* __restrict__ out, long out_stride, int rows, int inter) {
    using P = Pack<T>;
    const long packs_per_row = inter / P::N;
    const long index = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= rows * packs_per_row) return;
    const long row = index / packs_per_row;
    const long pack = index - row * packs_per_row;
    const P g = reinterpret_cast<const P*>(gate + row * gate_stride)[pack];
    const P u = reinterpret_cast<const P*>(up + row * up_stride)[pack];
    P o;
#pragma unroll
    for (int k = 0; k < P::N; ++k) o.v[k] = from_float<T>(silu(to_float(g.v[k])) * to_float(u.v[k]));
    reinterpret_cast<P*>(out + row * out_stride)[pack] = o;
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
