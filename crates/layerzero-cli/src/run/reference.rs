//! The float64 reference `run` checks every kernel's output against: the textbook
//! formulas in plain loops, sharing no code with the kernels.

/// `x / sqrt(mean(x²) + eps) · weight` per row of `cols`.
pub(crate) fn rms_norm(x: &[f64], weight: &[f64], eps: f64) -> Vec<f64> {
    let cols = weight.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let mean_square = row.iter().map(|v| v * v).sum::<f64>() / cols as f64;
        let scale = 1.0 / (mean_square + eps).sqrt();
        out.extend(row.iter().zip(weight).map(|(v, w)| v * scale * w));
    }
    out
}

/// `a · wᵀ` for `a` `[m, k]` and a linear layer's weight `w` `[n, k]`.
pub(crate) fn linear(a: &[f64], w: &[f64], k: usize) -> Vec<f64> {
    let n = w.len() / k;
    let mut out = Vec::with_capacity(a.len() / k * n);
    for row in a.chunks(k) {
        for w_row in w.chunks(k) {
            out.push(row.iter().zip(w_row).map(|(x, y)| x * y).sum());
        }
    }
    out
}

/// Rotate-half (NeoX/Llama) rotary embedding of `x` `[seq, heads, head_dim]`, token `s`
/// at position `offset + s`, angles computed here in float64 from `theta`.
pub(crate) fn rope(x: &[f64], heads: usize, head_dim: usize, offset: usize, theta: f64) -> Vec<f64> {
    let half = head_dim / 2;
    let mut out = x.to_vec();
    for (index, (head_in, head_out)) in x.chunks(head_dim).zip(out.chunks_mut(head_dim)).enumerate() {
        // Every head of one token shares its position.
        let position = (offset + index / heads) as f64;
        for i in 0..half {
            let angle = position * theta.powf(-2.0 * i as f64 / head_dim as f64);
            let (cos, sin) = (angle.cos(), angle.sin());
            let (a, b) = (head_in[i], head_in[i + half]);
            head_out[i] = a * cos - b * sin;
            head_out[i + half] = b * cos + a * sin;
        }
    }
    out
}

/// Causal attention with grouped KV heads: `q` `[seq_q, heads, d]`, `k` and `v`
/// `[seq_k, kv_heads, d]`; query row `i` sits at position `seq_k - seq_q + i` and sees
/// keys `0..=` that position.
pub(crate) fn causal_attention(q: &[f64], k: &[f64], v: &[f64], heads: usize, kv_heads: usize, d: usize) -> Vec<f64> {
    let seq_q = q.len() / (heads * d);
    let seq_k = k.len() / (kv_heads * d);
    let group = heads / kv_heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; q.len()];
    for i in 0..seq_q {
        let visible = seq_k - seq_q + i + 1;
        for h in 0..heads {
            let kv = h / group;
            let query = &q[(i * heads + h) * d..][..d];
            let scores: Vec<f64> = (0..visible)
                .map(|j| query.iter().zip(&k[(j * kv_heads + kv) * d..][..d]).map(|(a, b)| a * b).sum::<f64>() * scale)
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let row = &mut out[(i * heads + h) * d..][..d];
            for (j, w) in weights.iter().enumerate() {
                for (o, x) in row.iter_mut().zip(&v[(j * kv_heads + kv) * d..][..d]) {
                    *o += w / total * x;
                }
            }
        }
    }
    out
}

/// `silu(gate) · up`.
pub(crate) fn swiglu(gate: &[f64], up: &[f64]) -> Vec<f64> {
    gate.iter().zip(up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect()
}

/// The largest difference between `actual` and `expected`, relative to the largest
/// magnitude in `expected` (so values near zero do not blow the ratio up).
pub(crate) fn max_rel_error(actual: &[f64], expected: &[f64]) -> f64 {
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    let worst = actual.iter().zip(expected).fold(0.0f64, |m, (a, e)| m.max((a - e).abs()));
    if actual.len() != expected.len() || actual.iter().any(|v| !v.is_finite()) { f64::INFINITY } else { worst / scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_a_constant_row_is_the_weight() {
        let out = rms_norm(&[3.0, 3.0, -3.0, -3.0], &[1.0, 2.0], 0.0);
        assert_eq!(out, [1.0, 2.0, -1.0, -2.0]);
    }

    #[test]
    fn linear_uses_the_weight_rows() {
        // a = [1, 2], w = [[1, 0], [0, 1], [1, 1]]
        assert_eq!(linear(&[1.0, 2.0], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 2), [1.0, 2.0, 3.0]);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_rotates_later() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(rope(&x, 1, 4, 0, 10000.0), x);
        let turned = rope(&[1.0, 0.0, 0.0, 0.0], 1, 4, 1, 10000.0);
        assert!((turned[0] - 1f64.cos()).abs() < 1e-12 && (turned[2] - 1f64.sin()).abs() < 1e-12, "{turned:?}");
    }

    #[test]
    fn attention_of_one_key_returns_its_value() {
        let out = causal_attention(&[1.0, 1.0, -1.0, 0.5], &[0.3, 0.7], &[5.0, 6.0], 2, 1, 2);
        assert_eq!(out, [5.0, 6.0, 5.0, 6.0]);
    }

    #[test]
    fn error_is_relative_to_the_largest_value() {
        assert_eq!(max_rel_error(&[1.0, 0.1], &[2.0, 0.0]), 0.5);
        assert!(max_rel_error(&[f64::NAN], &[1.0]).is_infinite());
    }
}
