//! Every kernel and dtype against the float64 reference, on random inputs of awkward sizes.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::reference::{self, Problem};
use common::{DTYPES, assert_close, poisoned, random, rng, tensor};
use layerzero_kernels::{
    attention_naive, attention_split_kv, attention_tiled, layer_norm, matmul, rms_norm, rms_norm_add_then_norm, rope,
    swiglu,
};
use layerzero_types::{
    AttentionArgs, DType, KernelResult, Layout, MatmulArgs, NormArgs, Residual, RopeArgs, RopeStyle, SwigluArgs,
    SwigluInput, Tensor, TensorView,
};

#[test]
fn norms_match_the_reference() {
    let mut rng = rng(1);
    for &(rows, hidden) in &[(1, 1), (3, 7), (5, 33), (2, 4096), (17, 100)] {
        for dtype in DTYPES {
            let (x, xr) = tensor(&random(&mut rng, rows * hidden), &[rows, hidden], dtype);
            let (w, wr) = tensor(&random(&mut rng, hidden), &[hidden], dtype);
            let (b, br) = tensor(&random(&mut rng, hidden), &[hidden], dtype);
            for with_bias in [false, true] {
                let mut out = poisoned(&[rows, hidden], dtype);
                layer_norm(&mut NormArgs {
                    input: x.view(),
                    weight: w.view(),
                    bias: with_bias.then(|| b.view()),
                    output: out.view_mut(),
                    eps: 1e-5,
                    residual: None,
                })
                .unwrap();
                let want = reference::layer_norm(&xr, &wr, with_bias.then_some(&br[..]), hidden, 1e-5);
                assert_close(&format!("layer_norm {rows}x{hidden} bias={with_bias}"), &out, &want);
            }
            let mut out = poisoned(&[rows, hidden], dtype);
            rms_norm(&mut NormArgs::new(x.view(), w.view(), out.view_mut(), 1e-6)).unwrap();
            assert_close(&format!("rms_norm {rows}x{hidden}"), &out, &reference::rms_norm(&xr, &wr, hidden, 1e-6));
        }
    }
}

type NormKernel = fn(&mut NormArgs<'_>) -> KernelResult;

#[test]
fn rms_norm_with_a_residual_matches_the_reference_fused_and_unfused() {
    let mut rng = rng(11);
    for &(rows, hidden) in &[(1, 1), (3, 7), (5, 33), (17, 100), (2, 4096), (3, 4097)] {
        for dtype in DTYPES {
            let (x, xr) = tensor(&random(&mut rng, rows * hidden), &[rows, hidden], dtype);
            let (r, rr) = tensor(&random(&mut rng, rows * hidden), &[rows, hidden], dtype);
            let (w, wr) = tensor(&random(&mut rng, hidden), &[hidden], dtype);
            let sum: Vec<f64> = xr.iter().zip(&rr).map(|(a, b)| a + b).collect();
            let want = reference::rms_norm(&sum, &wr, hidden, 1e-6);
            let mut outputs = Vec::new();
            let kernels: [(&str, NormKernel); 2] = [("fused", rms_norm), ("add_then_norm", rms_norm_add_then_norm)];
            for (name, kernel) in kernels {
                let (mut out, mut stream) = (poisoned(&[rows, hidden], dtype), poisoned(&[rows, hidden], dtype));
                kernel(&mut NormArgs {
                    input: x.view(),
                    weight: w.view(),
                    bias: None,
                    output: out.view_mut(),
                    eps: 1e-6,
                    residual: Some(Residual { input: r.view(), output: stream.view_mut() }),
                })
                .unwrap();
                let what = format!("{name} add + rms_norm {rows}x{hidden}");
                assert_close(&format!("{what}: residual.output"), &stream, &sum);
                assert_close(&format!("{what}: output"), &out, &want);
                // The sum is stored rounded to the dtype, and that stored sum is what is
                // normalised: a plain rms_norm of residual.output gives the same bits.
                let mut again = poisoned(&[rows, hidden], dtype);
                rms_norm(&mut NormArgs::new(stream.view(), w.view(), again.view_mut(), 1e-6)).unwrap();
                assert_eq!(out.to_f32_vec().unwrap(), again.to_f32_vec().unwrap(), "{what} {dtype}");
                outputs.push((out.to_f32_vec().unwrap(), stream.to_f32_vec().unwrap()));
            }
            assert_eq!(outputs[0], outputs[1], "fused and unfused differ at {rows}x{hidden} {dtype}");
        }
    }
}

#[test]
fn the_stored_residual_sum_is_rounded_to_the_dtype() {
    // 1 + 2⁻⁹ is not a bfloat16 (8 bits of mantissa): the sum 1 + 2⁻⁹ is stored as 1, and
    // the row normalised is [1, 1], so the output is exactly the weight.
    let x = Tensor::from_f32(&[1.0, 1.0], &[1, 2], DType::BF16).unwrap();
    let r = Tensor::from_f32(&[0.0, 1.0 / 512.0], &[1, 2], DType::BF16).unwrap();
    let w = Tensor::from_f32(&[1.0, 2.0], &[2], DType::BF16).unwrap();
    for kernel in [rms_norm, rms_norm_add_then_norm] {
        let (mut out, mut stream) = (poisoned(&[1, 2], DType::BF16), poisoned(&[1, 2], DType::BF16));
        kernel(&mut NormArgs {
            input: x.view(),
            weight: w.view(),
            bias: None,
            output: out.view_mut(),
            eps: 0.0,
            residual: Some(Residual { input: r.view(), output: stream.view_mut() }),
        })
        .unwrap();
        assert_eq!(stream.to_f32_vec().unwrap(), [1.0, 1.0]);
        assert_eq!(out.to_f32_vec().unwrap(), [1.0, 2.0]);
    }
}

#[test]
fn rms_norm_of_a_higher_rank_input_normalises_the_last_dimension() {
    let x = Tensor::from_f32(&[3.0, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], &[2, 2, 2], DType::F32).unwrap();
    let w = Tensor::from_f32(&[1.0, 2.0], &[2], DType::F32).unwrap();
    let mut out = poisoned(&[2, 2, 2], DType::F32);
    rms_norm(&mut NormArgs::new(x.view(), w.view(), out.view_mut(), 0.0)).unwrap();
    let got = out.to_f32_vec().unwrap();
    let r = (12.5f32).sqrt();
    assert_eq!(&got[..2], &[3.0 / r, 8.0 / r]);
    // A zero row with eps 0 divides 0 by 0; eps exists for that reason.
    assert!(got[2].is_nan());
    assert_eq!(&got[4..], &[1.0, 2.0, 1.0, 2.0]);
}

#[test]
fn swiglu_matches_the_reference_separate_and_fused() {
    let mut rng = rng(2);
    for &(rows, width) in &[(1, 1), (3, 5), (2, 4099), (7, 64)] {
        for dtype in DTYPES {
            let (gate, gr) = tensor(
                &random(&mut rng, rows * width).iter().map(|v| v * 8.0).collect::<Vec<_>>(),
                &[rows, width],
                dtype,
            );
            let (up, ur) = tensor(&random(&mut rng, rows * width), &[rows, width], dtype);
            let want = reference::swiglu(&gr, &ur);
            let mut out = poisoned(&[rows, width], dtype);
            swiglu(&mut SwigluArgs {
                input: SwigluInput::Separate { gate: gate.view(), up: up.view() },
                output: out.view_mut(),
            })
            .unwrap();
            assert_close(&format!("swiglu separate {rows}x{width}"), &out, &want);

            let mut fused = Vec::new();
            let (g32, u32_) = (gate.to_f32_vec().unwrap(), up.to_f32_vec().unwrap());
            for r in 0..rows {
                fused.extend_from_slice(&g32[r * width..(r + 1) * width]);
                fused.extend_from_slice(&u32_[r * width..(r + 1) * width]);
            }
            let (gate_up, _) = tensor(&fused, &[rows, 2 * width], dtype);
            let mut out = poisoned(&[rows, width], dtype);
            swiglu(&mut SwigluArgs { input: SwigluInput::Fused(gate_up.view()), output: out.view_mut() }).unwrap();
            assert_close(&format!("swiglu fused {rows}x{width}"), &out, &want);
        }
    }
}

#[test]
fn rope_matches_the_reference_in_both_styles_and_layouts() {
    let mut rng = rng(3);
    // (batch, seq, heads, head_dim, rotary_dim, offset)
    for &(batch, seq, heads, head_dim, rotary, offset) in
        &[(1, 1, 1, 2, 2, 0), (2, 5, 3, 16, 16, 7), (1, 9, 2, 12, 8, 3), (1, 33, 4, 64, 64, 100)]
    {
        let half = rotary / 2;
        let positions = offset + seq + 2;
        let angles: Vec<f32> =
            (0..positions * half).map(|i| (i / half) as f32 * 0.37 / (1.0 + (i % half) as f32)).collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let (cos64, sin64): (Vec<f64>, Vec<f64>) =
            (cos.iter().map(|&v| f64::from(v)).collect(), sin.iter().map(|&v| f64::from(v)).collect());
        for dtype in DTYPES {
            for layout in Layout::ALL {
                for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
                    let p = Problem {
                        batch,
                        seq_q: seq,
                        seq_k: seq,
                        heads,
                        kv_heads: heads,
                        head_dim,
                        head_dim_v: head_dim,
                        causal: false,
                        window: None,
                        scale: None,
                        layout,
                    };
                    let shape = p.shape(p.q_dims());
                    let (mut x, xr) = tensor(&random(&mut rng, batch * seq * heads * head_dim), &shape, dtype);
                    rope(&mut RopeArgs {
                        x: x.view_mut(),
                        cos: TensorView::from_slice(&cos, &[positions, half]).unwrap(),
                        sin: TensorView::from_slice(&sin, &[positions, half]).unwrap(),
                        position_offset: offset,
                        style,
                        layout,
                    })
                    .unwrap();
                    let want = reference::rope(&xr, p.q_dims(), layout, &cos64, &sin64, half, offset, style);
                    assert_close(&format!("rope {style} {layout} {:?}", p.q_dims()), &x, &want);
                }
            }
        }
    }
}

#[test]
fn matmul_matches_the_reference_with_plain_and_transposed_weights() {
    let mut rng = rng(4);
    for &(m, k, n) in &[(1, 1, 1), (3, 7, 5), (17, 64, 33), (1, 300, 129), (65, 1, 9)] {
        for dtype in DTYPES {
            let (a, ar) = tensor(&random(&mut rng, m * k), &[m, k], dtype);
            let (b, br) = tensor(&random(&mut rng, k * n), &[k, n], dtype);
            let want = reference::matmul(&ar, &br, m, k, n);
            let mut out = poisoned(&[m, n], dtype);
            matmul(&mut MatmulArgs { a: a.view(), b: b.view(), output: out.view_mut() }).unwrap();
            assert_close(&format!("matmul {m}x{k}x{n}"), &out, &want);

            // The same b stored as a [n, k] weight, passed transposed through strides.
            let b_rows = b.to_f32_vec().unwrap();
            let weight: Vec<f32> = (0..n * k).map(|i| b_rows[(i % k) * n + i / k]).collect();
            let (weight, _) = tensor(&weight, &[n, k], dtype);
            let bytes = weight.view();
            let mut out = poisoned(&[m, n], dtype);
            let bt = strided(&bytes, &[k, n], &[1, k]);
            matmul(&mut MatmulArgs { a: a.view(), b: bt, output: out.view_mut() }).unwrap();
            assert_close(&format!("matmul transposed weight {m}x{k}x{n}"), &out, &want);
        }
    }
}

/// The same memory as `view`, with other dims and strides.
fn strided<'a>(view: &TensorView<'a>, dims: &[usize], strides: &[usize]) -> TensorView<'a> {
    match view.dtype() {
        DType::F32 => TensorView::from_slice_strided(view.as_slice::<f32>().unwrap(), dims, strides).unwrap(),
        DType::F16 => TensorView::from_slice_strided(view.as_slice::<half::f16>().unwrap(), dims, strides).unwrap(),
        DType::BF16 => TensorView::from_slice_strided(view.as_slice::<half::bf16>().unwrap(), dims, strides).unwrap(),
        other => panic!("no test views of {other}"),
    }
}

type AttentionKernel = fn(&mut AttentionArgs<'_>) -> KernelResult;

const ATTENTION_KERNELS: [(&str, AttentionKernel); 3] =
    [("naive", attention_naive), ("tiled", attention_tiled), ("split_kv", attention_split_kv)];

fn problem(batch: usize, seq_q: usize, seq_k: usize, heads: usize, kv_heads: usize, head_dim: usize) -> Problem {
    Problem {
        batch,
        seq_q,
        seq_k,
        heads,
        kv_heads,
        head_dim,
        head_dim_v: head_dim,
        causal: false,
        window: None,
        scale: None,
        layout: Layout::Bshd,
    }
}

fn check_attention(p: Problem, seed: u64) {
    let mut rng = rng(seed);
    let (nq, nk, nv) = (p.q_dims().iter().product(), p.k_dims().iter().product(), p.v_dims().iter().product());
    let (q32, k32, v32) = (random(&mut rng, nq), random(&mut rng, nk), random(&mut rng, nv));
    // Larger scores make the softmax peaked, which tests the running max.
    let q32: Vec<f32> = q32.iter().map(|v| v * 3.0).collect();
    for dtype in DTYPES {
        let (q, qr) = tensor(&q32, &p.shape(p.q_dims()), dtype);
        let (k, kr) = tensor(&k32, &p.shape(p.k_dims()), dtype);
        let (v, vr) = tensor(&v32, &p.shape(p.v_dims()), dtype);
        let want = reference::attention(&p, &qr, &kr, &vr);
        for (name, kernel) in ATTENTION_KERNELS {
            if name == "split_kv" && p.seq_q > 64 {
                continue;
            }
            let mut out = poisoned(&p.shape(p.o_dims()), dtype);
            kernel(&mut AttentionArgs {
                query: q.view(),
                key: k.view(),
                value: v.view(),
                output: out.view_mut(),
                layout: p.layout,
                is_causal: p.causal,
                scale: p.scale,
                window_size: p.window.map(|w| w as u32),
            })
            .unwrap_or_else(|e| panic!("{name} {p:?}: {e}"));
            assert_close(&format!("attention {name} {p:?}"), &out, &want);
        }
    }
}

#[test]
fn attention_full_and_cross() {
    for layout in Layout::ALL {
        for (i, p) in [
            problem(1, 1, 1, 1, 1, 1),
            problem(2, 7, 7, 4, 4, 16),
            problem(1, 5, 33, 6, 3, 8),
            problem(1, 70, 130, 2, 1, 24),
        ]
        .into_iter()
        .enumerate()
        {
            check_attention(Problem { layout, ..p }, 10 + i as u64);
        }
    }
}

#[test]
fn attention_causal_prefill_with_gqa() {
    for layout in Layout::ALL {
        for (i, p) in [problem(1, 3, 3, 2, 1, 8), problem(2, 9, 9, 4, 2, 16), problem(1, 131, 131, 4, 1, 32)]
            .into_iter()
            .enumerate()
        {
            check_attention(Problem { layout, causal: true, ..p }, 20 + i as u64);
        }
    }
}

#[test]
fn attention_causal_with_more_queries_than_keys_gives_zeros_for_hidden_rows() {
    // Bottom-right alignment: query rows 0..6 sit before the first key and see nothing.
    for layout in Layout::ALL {
        check_attention(Problem { layout, causal: true, ..problem(2, 10, 4, 2, 2, 8) }, 30);
    }
}

#[test]
fn attention_sliding_window_and_scale() {
    for layout in Layout::ALL {
        check_attention(Problem { layout, causal: true, window: Some(17), ..problem(1, 150, 150, 2, 1, 16) }, 40);
        check_attention(Problem { layout, causal: true, window: Some(1), ..problem(1, 5, 9, 2, 2, 8) }, 41);
        check_attention(Problem { layout, window: Some(4), scale: Some(0.3), ..problem(1, 6, 6, 2, 1, 8) }, 42);
    }
}

#[test]
fn attention_decode_against_a_long_cache() {
    for layout in Layout::ALL {
        check_attention(Problem { layout, causal: true, ..problem(2, 1, 1100, 8, 2, 64) }, 50);
        check_attention(Problem { layout, causal: true, window: Some(600), ..problem(1, 3, 1300, 4, 1, 16) }, 51);
        check_attention(Problem { layout, ..problem(1, 1, 1, 4, 1, 8) }, 52);
    }
}

#[test]
fn attention_value_head_dim_may_differ() {
    for layout in Layout::ALL {
        check_attention(Problem { layout, causal: true, head_dim_v: 12, ..problem(1, 9, 9, 2, 2, 8) }, 60);
    }
}

#[test]
fn attention_reads_strided_keys() {
    // Keys stored head-major ([b, h, s, d]) but passed as a BSHD view through strides.
    let p = Problem { causal: true, ..problem(1, 5, 11, 4, 2, 8) };
    let mut rng = rng(70);
    let q32 = random(&mut rng, p.q_dims().iter().product());
    let k32 = random(&mut rng, p.k_dims().iter().product());
    let v32 = random(&mut rng, p.v_dims().iter().product());
    let qr: Vec<f64> = q32.iter().map(|&v| f64::from(v)).collect();
    let kr: Vec<f64> = k32.iter().map(|&v| f64::from(v)).collect();
    let vr: Vec<f64> = v32.iter().map(|&v| f64::from(v)).collect();
    let want = reference::attention(&p, &qr, &kr, &vr);
    let mut k_head_major = vec![0f32; k32.len()];
    for s in 0..p.seq_k {
        for h in 0..p.kv_heads {
            for d in 0..p.head_dim {
                k_head_major[(h * p.seq_k + s) * p.head_dim + d] = k32[(s * p.kv_heads + h) * p.head_dim + d];
            }
        }
    }
    let key =
        TensorView::from_slice_strided(&k_head_major, &p.k_dims(), &[k32.len(), p.head_dim, p.seq_k * p.head_dim, 1])
            .unwrap();
    for (name, kernel) in ATTENTION_KERNELS {
        let mut out = poisoned(&p.o_dims(), DType::F32);
        kernel(&mut AttentionArgs {
            query: TensorView::from_slice(&q32, &p.q_dims()).unwrap(),
            key,
            value: TensorView::from_slice(&v32, &p.v_dims()).unwrap(),
            output: out.view_mut(),
            layout: Layout::Bshd,
            is_causal: true,
            scale: None,
            window_size: None,
        })
        .unwrap();
        assert_close(&format!("strided keys {name}"), &out, &want);
    }
}
