// Rotary position embedding on token-major (BSHD) rows: x [tokens, heads, head_dim], token t
// at position offset + (t % seq). cos and sin are f32 [max_positions, rot / 2], rot ≤ head_dim.
// Rotation of a pair (a, b) by angle θ: (a·cosθ − b·sinθ, b·cosθ + a·sinθ), in f32.
// NeoX pairs channel i with i + rot/2; interleaved pairs 2i with 2i + 1. Channels past rot
// are copied when out ≠ x (out of place) and left alone in place (out == x).
// - rope_<style>_vec_<dtype>: one thread per (token, head, 16-byte chunk of the head). Needs
//   head_dim and rot/2 (NeoX) or rot (interleaved) multiples of the pack size, 16-byte
//   aligned rows. Launch: 256 threads, grid = ceil(tokens · heads · head_dim / pack / 256).
// - rope_<style>_scalar_<dtype>: one thread per (token, head, channel pair or tail channel);
//   any size.
// Bytes moved: x read and written once, plus cos and sin (rot floats per token).
// x and out may be the same buffer (in place), so neither is declared __restrict__.
#include "common.cuh"

using namespace lz;

template <typename T, bool NEOX>
__device__ __forceinline__ void rope_vec(const T* x, T* out, const float* __restrict__ cos_table,
                                         const float* __restrict__ sin_table, long tokens, int heads, int head_dim,
                                         int rot, int seq, long offset) {
    using P = Pack<T>;
    const int chunks = head_dim / P::N;
    const long index = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= tokens * heads * chunks) return;
    const long row = index / chunks;  // (token, head)
    const int chunk = index - row * chunks;
    const long token = row / heads;
    const long position = offset + token % seq;
    const int half = rot / 2;
    const int first = chunk * P::N;  // first channel of this chunk
    const T* xr = x + row * head_dim;
    T* yr = out + row * head_dim;
    const float* c = cos_table + position * half;
    const float* s = sin_table + position * half;
    if (first >= rot) {
        if (out != x) reinterpret_cast<P*>(yr)[chunk] = reinterpret_cast<const P*>(xr)[chunk];
        return;
    }
    if (NEOX) {
        if (first >= half) return;  // the partner chunk in the first half rotates this one
        const P a = reinterpret_cast<const P*>(xr + first)[0];
        const P b = reinterpret_cast<const P*>(xr + first + half)[0];
        P ya, yb;
#pragma unroll
        for (int k = 0; k < P::N; ++k) {
            const float cs = c[first + k], sn = s[first + k];
            const float fa = to_float(a.v[k]), fb = to_float(b.v[k]);
            ya.v[k] = from_float<T>(fa * cs - fb * sn);
            yb.v[k] = from_float<T>(fb * cs + fa * sn);
        }
        reinterpret_cast<P*>(yr + first)[0] = ya;
        reinterpret_cast<P*>(yr + first + half)[0] = yb;
    } else {
        const P v = reinterpret_cast<const P*>(xr)[chunk];
        P o;
#pragma unroll
        for (int k = 0; k < P::N; k += 2) {
            const int pair = (first + k) / 2;
            const float cs = c[pair], sn = s[pair];
            const float fa = to_float(v.v[k]), fb = to_float(v.v[k + 1]);
            o.v[k] = from_float<T>(fa * cs - fb * sn);
            o.v[k + 1] = from_float<T>(fb * cs + fa * sn);
        }
        reinterpret_cast<P*>(yr)[chunk] = o;
    }
}

// One thread per (token, head, j) with j < head_dim - rot/2: j < rot/2 is a pair, the rest
// are tail channels rot..head_dim (shifted by rot/2).
template <typename T, bool NEOX>
__device__ __forceinline__ void rope_scalar(const T* x, T* out, const float* __restrict__ cos_table,
                                            const float* __restrict__ sin_table, long tokens, int heads, int head_dim,
                                            int rot, int seq, long offset) {
    const int half = rot / 2;
    const int per_row = head_dim - half;
    const long index = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= tokens * heads * per_row) return;
    const long row = index / per_row;
    const int j = index - row * per_row;
    const long position = offset + (row / heads) % seq;
    const T* xr = x + row * head_dim;
    T* yr = out + row * head_dim;
    if (j >= half) {
        const int channel = j + half;  // rot .. head_dim
        if (out != x) yr[channel] = xr[channel];
        return;
    }
    const int ia = NEOX ? j : 2 * j;
    const int ib = NEOX ? j + half : 2 * j + 1;
    const float cs = cos_table[position * half + j], sn = sin_table[position * half + j];
    const float fa = to_float(xr[ia]), fb = to_float(xr[ib]);
    yr[ia] = from_float<T>(fa * cs - fb * sn);
    yr[ib] = from_float<T>(fb * cs + fa * sn);
}

#define LZ_ROPE_ARGS(T) \
    const T *x, T *out, const float *cos_table, const float *sin_table, long tokens, int heads, int head_dim, int rot, int seq, long offset
#define LZ_ROPE_PASS x, out, cos_table, sin_table, tokens, heads, head_dim, rot, seq, offset
#define LZ_ROPE(NAME, T)                                                                                                      \
    extern "C" __global__ void __launch_bounds__(256) rope_neox_vec_##NAME(LZ_ROPE_ARGS(T)) { rope_vec<T, true>(LZ_ROPE_PASS); } \
    extern "C" __global__ void __launch_bounds__(256) rope_interleaved_vec_##NAME(LZ_ROPE_ARGS(T)) {                         \
        rope_vec<T, false>(LZ_ROPE_PASS);                                                                                     \
    }                                                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) rope_neox_scalar_##NAME(LZ_ROPE_ARGS(T)) {                             \
        rope_scalar<T, true>(LZ_ROPE_PASS);                                                                                   \
    }                                                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) rope_interleaved_scalar_##NAME(LZ_ROPE_ARGS(T)) {                      \
        rope_scalar<T, false>(LZ_ROPE_PASS);                                                                                  \
    }

LZ_ROPE(bf16, __nv_bfloat16)
LZ_ROPE(f16, __half)
LZ_ROPE(f32, float)
