//! The hot loops, compiled twice: for the baseline target (SSE2 on x86-64) and for
//! AVX2 + FMA, chosen at run time. The loop bodies are ordinary safe Rust that
//! autovectorises; only the call into the AVX2 copy is `unsafe`, after the CPU was asked.
//!
//! Why: the default x86-64 target has 4-wide SSE2 only, which leaves decode attention and
//! SwiGLU compute-bound (see the `kernels_cpu` benchmark); the AVX2 copies are 8-wide.

#![allow(unsafe_code)]

use super::math;

/// Whether the CPU runs AVX2 and FMA (cached by std after the first question).
#[cfg(target_arch = "x86_64")]
fn wide() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Defines `$name` (safe, dispatching) over an `#[inline(always)]` body, with an AVX2+FMA
/// copy of the body used when the CPU has those features.
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            if wide() {
                // SAFETY: `avx2` is `body` compiled with AVX2 and FMA enabled, and the CPU
                // was just checked to have both, which is the only requirement of calling a
                // `#[target_feature]` function; the arguments are passed through unchanged.
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}

multiversion! {
    /// Replaces each x by e^(x − shift) and returns their sum.
    fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
        for v in x.iter_mut() {
            *v = math::exp(*v - shift);
        }
        math::sum(x)
    }
}

multiversion! {
    /// `out = silu(gate) · up`, elementwise.
    fn silu_mul(out: &mut [f32], gate: &[f32], up: &[f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = math::silu(g) * u;
        }
    }
}

multiversion! {
    /// `scores[r · tk + j] = q_r · k_j` for the `rows` query rows of `q` (`d` wide) and
    /// the `tk` key rows of `k`, `k_stride` apart.
    fn dot_rows(q: &[f32], d: usize, k: &[f32], k_stride: usize, tk: usize, scores: &mut [f32]) {
        let rows = scores.len() / tk.max(1);
        for j in 0..tk {
            let k_row = &k[j * k_stride..j * k_stride + d];
            for (r, q_row) in q.chunks_exact(d).enumerate().take(rows) {
                scores[r * tk + j] = math::dot(q_row, k_row);
            }
        }
    }
}

multiversion! {
    /// `out_r += Σ_j p[r · tk + j] · v_j` for the `tk` value rows of `v`, `v_stride` apart,
    /// and the rows of `out` (`dv` wide).
    fn axpy_rows(p: &[f32], tk: usize, v: &[f32], v_stride: usize, dv: usize, out: &mut [f32]) {
        for j in 0..tk {
            let v_row = &v[j * v_stride..j * v_stride + dv];
            for (r, out_row) in out.chunks_exact_mut(dv).enumerate() {
                let weight = p[r * tk + j];
                if weight != 0.0 {
                    math::axpy(out_row, weight, v_row);
                }
            }
        }
    }
}

multiversion! {
    /// Widens bfloat16 bits to f32 (a shift: bf16 is the top half of an f32).
    fn bf16_widen(src: &[half::bf16], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }
}

multiversion! {
    /// Narrows f32 to bfloat16, rounding to nearest even (NaN stays NaN).
    fn bf16_narrow(src: &[f32], dst: &mut [half::bf16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            let bits = s.to_bits();
            let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1));
            let narrowed = if s.is_nan() { 0x7FC0 } else { (rounded >> 16) as u16 };
            *d = half::bf16::from_bits(narrowed);
        }
    }
}

multiversion! {
    /// One RMS-normalised row: `y = x / sqrt(mean(x²) + eps) · weight`.
    fn rms_row(x: &[f32], weight: &[f32], eps: f32, y: &mut [f32]) {
        let inv = 1.0 / (math::sum_of_squares(x) / x.len() as f32 + eps).sqrt();
        for ((y, &x), &w) in y.iter_mut().zip(x).zip(weight) {
            *y = x * inv * w;
        }
    }
}

multiversion! {
    /// One layer-normalised row: `y = (x − mean) / sqrt(var + eps) · weight + bias`, the
    /// variance from a second pass over the row.
    fn layer_row(x: &[f32], weight: &[f32], bias: Option<&[f32]>, eps: f32, y: &mut [f32]) {
        let n = x.len() as f32;
        let mean = math::sum(x) / n;
        let inv = 1.0 / (math::sum_of_squared_deviations(x, mean) / n + eps).sqrt();
        match bias {
            Some(bias) => {
                for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(weight).zip(bias) {
                    *y = (x - mean) * inv * w + b;
                }
            }
            None => {
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(weight) {
                    *y = (x - mean) * inv * w;
                }
            }
        }
    }
}

multiversion! {
    /// Rotate-half (NeoX): channel `i` pairs with `i + cos.len()`.
    fn rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let (lo, hi) = x.split_at_mut(cos.len());
        for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
            let (x1, x2) = (*a, *b);
            *a = x1 * c - x2 * s;
            *b = x2 * c + x1 * s;
        }
    }
}

multiversion! {
    /// Interleaved (GPT-J): channel `2i` pairs with `2i + 1`.
    fn rotate_pairs(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        for ((pair, &c), &s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
            let (x1, x2) = (pair[0], pair[1]);
            pair[0] = x1 * c - x2 * s;
            pair[1] = x2 * c + x1 * s;
        }
    }
}

multiversion! {
    /// `out = silu(gate) · up` on bfloat16 values, converting inline (one pass, no buffers).
    fn silu_mul_bf16(out: &mut [half::bf16], gate: &[half::bf16], up: &[half::bf16]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            let g = f32::from_bits(u32::from(g.to_bits()) << 16);
            let u = f32::from_bits(u32::from(u.to_bits()) << 16);
            let y = math::silu(g) * u;
            let bits = y.to_bits();
            let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1));
            let narrowed = if y.is_nan() { 0x7FC0 } else { (rounded >> 16) as u16 };
            *o = half::bf16::from_bits(narrowed);
        }
    }
}
