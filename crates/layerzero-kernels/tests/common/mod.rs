//! Shared by the reference tests: random data, rounding, the error measure.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use layerzero_types::{DType, Tensor};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// Uniform values in [-1, 1).
pub fn random(rng: &mut SmallRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A tensor of `dtype` holding `values` rounded to it, and the rounded values as f64 (the
/// reference's inputs).
pub fn tensor(values: &[f32], dims: &[usize], dtype: DType) -> (Tensor, Vec<f64>) {
    let t = Tensor::from_f32(values, dims, dtype).unwrap();
    let rounded = t.to_f32_vec().unwrap().into_iter().map(f64::from).collect();
    (t, rounded)
}

/// An output tensor full of NaN, so that any element a kernel does not write fails.
pub fn poisoned(dims: &[usize], dtype: DType) -> Tensor {
    let n: usize = dims.iter().product();
    Tensor::from_f32(&vec![f32::NAN; n], dims, dtype).unwrap()
}

pub fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F32 { 1e-5 } else { 1e-2 }
}

/// ‖out − ref‖ / ‖ref‖ (or ‖out‖ when the reference is zero); infinite if any output is
/// not finite, so NaN never passes.
pub fn relative_error(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "output and reference lengths differ");
    if out.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = out.iter().zip(reference).map(|(&o, &r)| (f64::from(o) - r).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = reference.iter().map(|r| r * r).sum::<f64>().sqrt();
    if norm == 0.0 { diff } else { diff / norm }
}

/// ‖out − ref‖ / ‖scale‖, where `scale` is the same computation run on the inputs' absolute
/// values (‖|A|·|B|‖ for a matmul, attention over |V|). Rounding in a sum is bounded by the sum
/// of the terms' magnitudes, not by the result's, so when random signs cancel (a dot product of
/// six terms that lands near zero) this is the measure the tolerance applies to; with no
/// cancellation it equals [`relative_error`]. Infinite if any output is not finite.
pub fn error_against_magnitude(out: &[f32], reference: &[f64], scale: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "output and reference lengths differ");
    assert_eq!(reference.len(), scale.len(), "reference and scale lengths differ");
    if out.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = out.iter().zip(reference).map(|(&o, &r)| (f64::from(o) - r).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = scale.iter().map(|r| r * r).sum::<f64>().sqrt();
    if norm == 0.0 { diff } else { diff / norm }
}

/// Asserts the tensor matches the reference within the dtype's tolerance.
pub fn assert_close(what: &str, out: &Tensor, reference: &[f64]) {
    let dtype = out.dtype();
    let err = relative_error(&out.to_f32_vec().unwrap(), reference);
    assert!(err <= tolerance(dtype), "{what} {dtype}: relative error {err:e} above {:e}", tolerance(dtype));
}

/// The float64 references: simple, obviously correct, slow.
pub mod reference {
    use layerzero_types::{Layout, RopeStyle};

    pub fn rms_norm(x: &[f64], w: &[f64], hidden: usize, eps: f64) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(hidden) {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / hidden as f64;
            let inv = 1.0 / (ms + eps).sqrt();
            out.extend(row.iter().zip(w).map(|(v, w)| v * inv * w));
        }
        out
    }

    pub fn layer_norm(x: &[f64], w: &[f64], b: Option<&[f64]>, hidden: usize, eps: f64) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(hidden) {
            let mean = row.iter().sum::<f64>() / hidden as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / hidden as f64;
            let inv = 1.0 / (var + eps).sqrt();
            for (i, v) in row.iter().enumerate() {
                out.push((v - mean) * inv * w[i] + b.map_or(0.0, |b| b[i]));
            }
        }
        out
    }

    pub fn silu(x: f64) -> f64 {
        x / (1.0 + (-x).exp())
    }

    pub fn swiglu(gate: &[f64], up: &[f64]) -> Vec<f64> {
        gate.iter().zip(up).map(|(&g, &u)| silu(g) * u).collect()
    }

    /// `a` is `[m, k]` row-major, `b` is `[k, n]` row-major.
    pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    /// Index of element `[b, s, h, d]` in a contiguous tensor of this layout.
    pub fn index(layout: Layout, dims: [usize; 4], b: usize, s: usize, h: usize, d: usize) -> usize {
        let [_, seq, heads, dim] = dims;
        match layout {
            Layout::Bshd => ((b * seq + s) * heads + h) * dim + d,
            Layout::Bhsd => ((b * heads + h) * seq + s) * dim + d,
        }
    }

    /// `dims` is `[batch, seq, heads, head_dim]` whatever the layout.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        x: &[f64],
        dims: [usize; 4],
        layout: Layout,
        cos: &[f64],
        sin: &[f64],
        half: usize,
        offset: usize,
        style: RopeStyle,
    ) -> Vec<f64> {
        let mut out = x.to_vec();
        let [batch, seq, heads, _] = dims;
        for b in 0..batch {
            for s in 0..seq {
                for h in 0..heads {
                    let at = |d| index(layout, dims, b, s, h, d);
                    for i in 0..half {
                        let (c, sn) = (cos[(offset + s) * half + i], sin[(offset + s) * half + i]);
                        let (i1, i2) = match style {
                            RopeStyle::Neox => (at(i), at(i + half)),
                            RopeStyle::Interleaved => (at(2 * i), at(2 * i + 1)),
                        };
                        out[i1] = x[i1] * c - x[i2] * sn;
                        out[i2] = x[i2] * c + x[i1] * sn;
                    }
                }
            }
        }
        out
    }

    /// An attention problem: sizes and flags.
    #[derive(Clone, Copy, Debug)]
    pub struct Problem {
        pub batch: usize,
        pub seq_q: usize,
        pub seq_k: usize,
        pub heads: usize,
        pub kv_heads: usize,
        pub head_dim: usize,
        pub head_dim_v: usize,
        pub causal: bool,
        pub window: Option<usize>,
        pub scale: Option<f32>,
        pub layout: Layout,
    }

    impl Problem {
        pub fn q_dims(&self) -> [usize; 4] {
            [self.batch, self.seq_q, self.heads, self.head_dim]
        }
        pub fn k_dims(&self) -> [usize; 4] {
            [self.batch, self.seq_k, self.kv_heads, self.head_dim]
        }
        pub fn v_dims(&self) -> [usize; 4] {
            [self.batch, self.seq_k, self.kv_heads, self.head_dim_v]
        }
        pub fn o_dims(&self) -> [usize; 4] {
            [self.batch, self.seq_q, self.heads, self.head_dim_v]
        }
        /// `[b, s, h, d]` reordered to the layout's shape.
        pub fn shape(&self, dims: [usize; 4]) -> Vec<usize> {
            match self.layout {
                Layout::Bshd => dims.to_vec(),
                Layout::Bhsd => vec![dims[0], dims[2], dims[1], dims[3]],
            }
        }
    }

    /// Softmax attention, one (batch, head, query) at a time; a query that sees no key
    /// gives zeros.
    pub fn attention(p: &Problem, q: &[f64], k: &[f64], v: &[f64]) -> Vec<f64> {
        let scale = p.scale.map_or(1.0 / (p.head_dim as f64).sqrt(), f64::from);
        let group = p.heads / p.kv_heads;
        let mut out = vec![0.0; p.batch * p.seq_q * p.heads * p.head_dim_v];
        for b in 0..p.batch {
            for h in 0..p.heads {
                let kvh = h / group;
                for i in 0..p.seq_q {
                    let pos = p.seq_k as i64 - p.seq_q as i64 + i as i64;
                    let visible: Vec<usize> = (0..p.seq_k)
                        .filter(|&j| !p.causal || j as i64 <= pos)
                        .filter(|&j| p.window.is_none_or(|w| j as i64 > pos - w as i64))
                        .collect();
                    let scores: Vec<f64> = visible
                        .iter()
                        .map(|&j| {
                            (0..p.head_dim)
                                .map(|d| {
                                    q[index(p.layout, p.q_dims(), b, i, h, d)]
                                        * k[index(p.layout, p.k_dims(), b, j, kvh, d)]
                                })
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for e in 0..p.head_dim_v {
                        let value: f64 = visible
                            .iter()
                            .zip(&weights)
                            .map(|(&j, w)| w * v[index(p.layout, p.v_dims(), b, j, kvh, e)])
                            .sum();
                        out[index(p.layout, p.o_dims(), b, i, h, e)] = if total > 0.0 { value / total } else { 0.0 };
                    }
                }
            }
        }
        out
    }
}
