// Rotary position embedding on token-major (BSHD) rows: x [tokens, heads, head_dim], token t
// at position offset + (t % seq). cos and sin are f32 [max_positions, rot / 2], rot ≤ head_dim.
// Rotation of a pair (a, b) by angle θ: (a·cosθ − b·sinθ, b·cosθ + a·sinθ), in f32.
// NeoX pairs channel i with i + rot/2; interleaved pairs 2i with 2i + 1. Channels past rot
// are copied when out ≠ x (out of place) and left alone in place (out == x).
//
// Every kernel takes the rows of up to two tensors of the same tokens and head_dim (queries
// and keys): heads0 heads of x0 → out0, then heads1 heads of x1 → out1 (heads1 = 0: one
// tensor; x1 and out1 are then never read). One launch rotates both.
// - rope_<style>_vec_<dtype>: a thread owns one 16-byte unit of a head — NeoX: the pack at
//   channel u·N and its partner at u·N + rot/2; interleaved: the pack at u·N (N/2 pairs);
//   past rot: one pack, copied out of place — loads that unit's cos and sin once, and
//   rotates it in heads g, g + G, g + 2G, ... of its token (x0's heads, then x1's). Several
//   heads per thread amortise the table loads and the index math; several tokens per block
//   keep blocks near 320 threads. Needs head_dim and rot/2 (NeoX) or rot (interleaved)
//   multiples of the pack size N = 16 / sizeof(T), 16-byte aligned rows and tables.
//   Launch: block (units · G, tokens_per_block), grid ceil(tokens / tokens_per_block), with
//   units = (NeoX ? rot/2 : rot) / N + (head_dim − rot) / N.
//   Rows are loaded and stored with plain 16-byte accesses (the streaming hints __ldcs /
//   __stcs measured 1.5-2% slower on the H100 for q+k in place); the tables go through the
//   read-only cache (__ldg: every head reuses them).
// - rope_<style>_scalar_<dtype>: one thread per (token, head, channel pair or tail channel);
//   any size.
// Bytes moved: x read and written once, plus cos and sin (rot floats per token).
// x and out may be the same buffer (in place), so neither is declared __restrict__; a thread
// reads each element it writes before writing it, and no other thread touches it.
#include "common.cuh"

using namespace lz;

// The row of head h of token `token`: x0's heads first, then x1's.
__device__ __forceinline__ long row_of(int h, long token, int heads0, int heads1, int head_dim, bool& second) {
    second = h >= heads0;
    return second ? (token * heads1 + (h - heads0)) * head_dim : (token * heads0 + h) * head_dim;
}

template <typename T> __device__ __forceinline__ Pack<T> load_pack(const T* p) {
    return *reinterpret_cast<const Pack<T>*>(p);
}

template <typename T> __device__ __forceinline__ void store_pack(T* p, const Pack<T>& v) {
    *reinterpret_cast<Pack<T>*>(p) = v;
}

// K floats of a table from p (16-byte aligned when K % 4 == 0, 8-byte when K == 2).
template <int K> __device__ __forceinline__ void load_table(float (&d)[K], const float* __restrict__ p) {
    if constexpr (K % 4 == 0) {
#pragma unroll
        for (int i = 0; i < K / 4; ++i) {
            const float4 v = __ldg(reinterpret_cast<const float4*>(p) + i);
            d[4 * i] = v.x;
            d[4 * i + 1] = v.y;
            d[4 * i + 2] = v.z;
            d[4 * i + 3] = v.w;
        }
    } else {
        const float2 v = __ldg(reinterpret_cast<const float2*>(p));
        d[0] = v.x;
        d[1] = v.y;
    }
}

template <typename T, bool NEOX>
__device__ __forceinline__ void rope_vec(const T* x0, T* out0, int heads0, const T* x1, T* out1, int heads1,
                                         const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                                         long tokens, int head_dim, int rot, int seq, long offset) {
    using P = Pack<T>;
    constexpr int N = P::N;
    constexpr int K = NEOX ? N : N / 2;  // table entries per unit
    const long token = (long)blockIdx.x * blockDim.y + threadIdx.y;
    if (token >= tokens) return;
    const int half = rot / 2;
    const int rotating = (NEOX ? half : rot) / N;
    const int units = rotating + (head_dim - rot) / N;
    const int unit = threadIdx.x % units;
    const int group = threadIdx.x / units;
    const int groups = blockDim.x / units;
    const int heads = heads0 + heads1;
    bool second;
    if (unit >= rotating) {
        const int first = rot + (unit - rotating) * N;
        for (int h = group; h < heads; h += groups) {
            const long row = row_of(h, token, heads0, heads1, head_dim, second);
            const T* xr = (second ? x1 : x0) + row;
            T* yr = (second ? out1 : out0) + row;
            if (yr != xr) store_pack(yr + first, load_pack(xr + first));
        }
        return;
    }
    const long position = offset + token % seq;
    float cs[K], sn[K];
    load_table<K>(cs, cos_table + position * half + unit * K);
    load_table<K>(sn, sin_table + position * half + unit * K);
    const int first = unit * N;
    for (int h = group; h < heads; h += groups) {
        const long row = row_of(h, token, heads0, heads1, head_dim, second);
        const T* xr = (second ? x1 : x0) + row;
        T* yr = (second ? out1 : out0) + row;
        if (NEOX) {
            const P a = load_pack(xr + first);
            const P b = load_pack(xr + first + half);
            P ya, yb;
#pragma unroll
            for (int k = 0; k < N; ++k) {
                const float fa = to_float(a.v[k]), fb = to_float(b.v[k]);
                ya.v[k] = from_float<T>(fa * cs[k] - fb * sn[k]);
                yb.v[k] = from_float<T>(fb * cs[k] + fa * sn[k]);
            }
            store_pack(yr + first, ya);
            store_pack(yr + first + half, yb);
        } else {
            const P v = load_pack(xr + first);
            P o;
#pragma unroll
            for (int k = 0; k < N; k += 2) {
                const float fa = to_float(v.v[k]), fb = to_float(v.v[k + 1]);
                o.v[k] = from_float<T>(fa * cs[k / 2] - fb * sn[k / 2]);
                o.v[k + 1] = from_float<T>(fb * cs[k / 2] + fa * sn[k / 2]);
            }
            store_pack(yr + first, o);
        }
    }
}

// One thread per (token, head, j) with j < head_dim - rot/2: j < rot/2 is a pair, the rest
// are tail channels rot..head_dim (shifted by rot/2).
template <typename T, bool NEOX>
__device__ __forceinline__ void rope_scalar(const T* x0, T* out0, int heads0, const T* x1, T* out1, int heads1,
                                            const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                                            long tokens, int head_dim, int rot, int seq, long offset) {
    const int half = rot / 2;
    const int per_row = head_dim - half;
    const int heads = heads0 + heads1;
    const long index = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= tokens * heads * per_row) return;
    const long token_head = index / per_row;
    const int j = index - token_head * per_row;
    const long token = token_head / heads;
    bool second;
    const long row = row_of(token_head - token * heads, token, heads0, heads1, head_dim, second);
    const long position = offset + token % seq;
    const T* xr = (second ? x1 : x0) + row;
    T* yr = (second ? out1 : out0) + row;
    if (j >= half) {
        const int channel = j + half;  // rot .. head_dim
        if (yr != xr) yr[channel] = xr[channel];
        return;
    }
    const int ia = NEOX ? j : 2 * j;
    const int ib = NEOX ? j + half : 2 * j + 1;
    const float cs = cos_table[position * half + j], sn = sin_table[position * half + j];
    const float fa = to_float(xr[ia]), fb = to_float(xr[ib]);
    yr[ia] = from_float<T>(fa * cs - fb * sn);
    yr[ib] = from_float<T>(fb * cs + fa * sn);
}

#define LZ_ROPE_ARGS(T)                                                                                             \
    const T *x0, T *out0, int heads0, const T *x1, T *out1, int heads1, const float *cos_table, const float *sin_table, \
        long tokens, int head_dim, int rot, int seq, long offset
#define LZ_ROPE_PASS x0, out0, heads0, x1, out1, heads1, cos_table, sin_table, tokens, head_dim, rot, seq, offset
#define LZ_ROPE(NAME, T)                                                                                                       \
    extern "C" __global__ void __launch_bounds__(1024) rope_neox_vec_##NAME(LZ_ROPE_ARGS(T)) { rope_vec<T, true>(LZ_ROPE_PASS); } \
    extern "C" __global__ void __launch_bounds__(1024) rope_interleaved_vec_##NAME(LZ_ROPE_ARGS(T)) {                         \
        rope_vec<T, false>(LZ_ROPE_PASS);                                                                                      \
    }                                                                                                                          \
    extern "C" __global__ void __launch_bounds__(256) rope_neox_scalar_##NAME(LZ_ROPE_ARGS(T)) {                              \
        rope_scalar<T, true>(LZ_ROPE_PASS);                                                                                    \
    }                                                                                                                          \
    extern "C" __global__ void __launch_bounds__(256) rope_interleaved_scalar_##NAME(LZ_ROPE_ARGS(T)) {                       \
        rope_scalar<T, false>(LZ_ROPE_PASS);                                                                                   \
    }

LZ_ROPE(bf16, __nv_bfloat16)
LZ_ROPE(f16, __half)
LZ_ROPE(f32, float)
