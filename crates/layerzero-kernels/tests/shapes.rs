//! Shape handling, by property: any valid shape gives the reference's answer, any invalid
//! one a typed error (never a panic).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::reference::{self, Problem};
use common::{error_against_magnitude, poisoned, random, relative_error, rng, tensor};
use layerzero_kernels::{
    attention_naive, attention_split_kv, attention_tiled, layer_norm, matmul, rms_norm, rms_norm_add_then_norm, rope,
    swiglu,
};
use layerzero_types::{
    AttentionArgs, DType, KernelError, KernelResult, Layout, MatmulArgs, NormArgs, Residual, RopeArgs, RopeStyle,
    SwigluArgs, SwigluInput, Tensor, TensorView, TensorViewMut,
};
use proptest::prelude::*;

type AttentionKernel = fn(&mut AttentionArgs<'_>) -> KernelResult;
const ATTENTION_KERNELS: [AttentionKernel; 3] = [attention_naive, attention_tiled, attention_split_kv];

fn abs(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| v.abs()).collect()
}

fn is_typed_error(result: KernelResult) -> bool {
    matches!(result, Err(KernelError::InvalidArgument(_) | KernelError::Unsupported(_) | KernelError::Tensor(_)))
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Bshd), Just(Layout::Bhsd)]
}

prop_compose! {
    fn attention_problem()(
        batch in 1usize..3, seq_q in 1usize..12, seq_k in 0usize..20, kv_heads in 1usize..3, group in 1usize..4,
        head_dim in 1usize..10, head_dim_v in 1usize..10, causal in any::<bool>(),
        window in proptest::option::of(1usize..8), scale in proptest::option::of(0.05f32..2.0), layout in layout(),
    ) -> Problem {
        Problem { batch, seq_q, seq_k, heads: kv_heads * group, kv_heads, head_dim, head_dim_v, causal, window, scale, layout }
    }
}

fn run_attention(
    kernel: AttentionKernel,
    p: &Problem,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &mut Tensor,
) -> KernelResult {
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
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn attention_valid_shapes_match_the_reference(p in attention_problem(), seed in any::<u64>()) {
        let mut rng = rng(seed);
        let (q, qr) = tensor(&random(&mut rng, p.q_dims().iter().product()), &p.shape(p.q_dims()), DType::F32);
        let (k, kr) = tensor(&random(&mut rng, p.k_dims().iter().product()), &p.shape(p.k_dims()), DType::F32);
        let (v, vr) = tensor(&random(&mut rng, p.v_dims().iter().product()), &p.shape(p.v_dims()), DType::F32);
        let want = reference::attention(&p, &qr, &kr, &vr);
        let magnitude = reference::attention(&p, &qr, &kr, &abs(&vr));
        for kernel in ATTENTION_KERNELS {
            let mut out = poisoned(&p.shape(p.o_dims()), DType::F32);
            run_attention(kernel, &p, &q, &k, &v, &mut out).unwrap();
            let err = error_against_magnitude(&out.to_f32_vec().unwrap(), &want, &magnitude);
            prop_assert!(err <= 1e-5, "{p:?}: relative error {err:e}");
        }
    }

    #[test]
    fn attention_invalid_shapes_are_errors(p in attention_problem(), which in 0usize..6) {
        let mut q_dims = p.q_dims();
        let mut k_dims = p.k_dims();
        let mut v_dims = p.v_dims();
        let mut o_dims = p.o_dims();
        match which {
            0 => q_dims[2] = p.kv_heads * 2 + 1, // query heads that KV heads do not divide (kv_heads 2)...
            1 => k_dims[3] += 1,                   // key head_dim differs from the query's
            2 => v_dims[1] += 1,                   // value length differs from the key's
            3 => o_dims[3] += 1,                   // output of the wrong width
            4 => k_dims[0] += 1,                   // batch differs
            _ => o_dims[1] += 1,                   // output of the wrong length
        }
        if which == 0 {
            // Only a real mismatch: with kv_heads 1 every head count divides.
            k_dims[2] = 2;
            v_dims[2] = 2;
            q_dims[2] = 3;
            o_dims[2] = 3;
        }
        let zeros = |dims: [usize; 4]| Tensor::zeros(&p.shape(dims), DType::F32).unwrap();
        let (q, k, v) = (zeros(q_dims), zeros(k_dims), zeros(v_dims));
        for kernel in ATTENTION_KERNELS {
            let mut out = zeros(o_dims);
            prop_assert!(is_typed_error(run_attention(kernel, &p, &q, &k, &v, &mut out)), "case {which} {p:?}");
        }
    }

    #[test]
    fn norms_valid_and_invalid(rows in 0usize..5, hidden in 1usize..40, delta in 1usize..3, seed in any::<u64>()) {
        let mut rng = rng(seed);
        let (x, xr) = tensor(&random(&mut rng, rows * hidden), &[rows, hidden], DType::F32);
        let (w, wr) = tensor(&random(&mut rng, hidden), &[hidden], DType::F32);
        let mut out = poisoned(&[rows, hidden], DType::F32);
        rms_norm(&mut NormArgs::new(x.view(), w.view(), out.view_mut(), 1e-5)).unwrap();
        let err = relative_error(&out.to_f32_vec().unwrap(), &reference::rms_norm(&xr, &wr, hidden, 1e-5));
        prop_assert!(err <= 1e-5);

        let bad_weight = Tensor::zeros(&[hidden + delta], DType::F32).unwrap();
        let mut out = poisoned(&[rows, hidden], DType::F32);
        let args = NormArgs::new(x.view(), bad_weight.view(), out.view_mut(), 1e-5);
        let result = layer_norm(&mut { args });
        prop_assert!(is_typed_error(result));
        let mut bad_out = poisoned(&[rows + delta, hidden], DType::F32);
        let args = NormArgs::new(x.view(), w.view(), bad_out.view_mut(), 1e-5);
        let result = rms_norm(&mut { args });
        prop_assert!(is_typed_error(result));
    }

    #[test]
    fn residual_norms_valid_and_invalid(rows in 0usize..5, hidden in 1usize..40, delta in 1usize..3, seed in any::<u64>()) {
        let mut rng = rng(seed);
        let (x, xr) = tensor(&random(&mut rng, rows * hidden), &[rows, hidden], DType::F32);
        let (r, rr) = tensor(&random(&mut rng, rows * hidden), &[rows, hidden], DType::F32);
        let (w, wr) = tensor(&random(&mut rng, hidden), &[hidden], DType::F32);
        let sum: Vec<f64> = xr.iter().zip(&rr).map(|(a, b)| a + b).collect();
        let short = Tensor::zeros(&[rows, hidden + delta], DType::F32).unwrap();
        let half = Tensor::zeros(&[rows, hidden], DType::BF16).unwrap();
        for kernel in [rms_norm, rms_norm_add_then_norm] {
            let (mut out, mut stream) = (poisoned(&[rows, hidden], DType::F32), poisoned(&[rows, hidden], DType::F32));
            let residual = Some(Residual { input: r.view(), output: stream.view_mut() });
            kernel(&mut NormArgs { input: x.view(), weight: w.view(), bias: None, output: out.view_mut(), eps: 1e-5, residual }).unwrap();
            prop_assert!(relative_error(&stream.to_f32_vec().unwrap(), &sum) <= 1e-6);
            let err = relative_error(&out.to_f32_vec().unwrap(), &reference::rms_norm(&sum, &wr, hidden, 1e-5));
            prop_assert!(err <= 1e-5);

            // A residual of another shape or dtype, or a sum of another shape, is refused.
            for bad_input in [short.view(), half.view()] {
                let residual = Some(Residual { input: bad_input, output: stream.view_mut() });
                let result = kernel(&mut NormArgs { input: x.view(), weight: w.view(), bias: None, output: out.view_mut(), eps: 1e-5, residual });
                prop_assert!(matches!(result, Err(KernelError::InvalidArgument(_))), "{result:?}");
            }
            let mut bad_stream = poisoned(&[rows + delta, hidden], DType::F32);
            let residual = Some(Residual { input: r.view(), output: bad_stream.view_mut() });
            let result = kernel(&mut NormArgs { input: x.view(), weight: w.view(), bias: None, output: out.view_mut(), eps: 1e-5, residual });
            prop_assert!(matches!(result, Err(KernelError::InvalidArgument(_))), "{result:?}");
        }
        // layer_norm takes no residual.
        let (mut out, mut stream) = (poisoned(&[rows, hidden], DType::F32), poisoned(&[rows, hidden], DType::F32));
        let residual = Some(Residual { input: r.view(), output: stream.view_mut() });
        let result = layer_norm(&mut NormArgs { input: x.view(), weight: w.view(), bias: None, output: out.view_mut(), eps: 1e-5, residual });
        prop_assert!(matches!(result, Err(KernelError::InvalidArgument(ref m)) if m.contains("no residual")), "{result:?}");
    }

    #[test]
    fn matmul_valid_and_invalid(m in 0usize..9, k in 0usize..9, n in 0usize..9, delta in 1usize..3, seed in any::<u64>()) {
        let mut rng = rng(seed);
        let (a, ar) = tensor(&random(&mut rng, m * k), &[m, k], DType::F32);
        let (b, br) = tensor(&random(&mut rng, k * n), &[k, n], DType::F32);
        let mut out = poisoned(&[m, n], DType::F32);
        matmul(&mut MatmulArgs { a: a.view(), b: b.view(), output: out.view_mut() }).unwrap();
        let magnitude = reference::matmul(&abs(&ar), &abs(&br), m, k, n);
        let err = error_against_magnitude(&out.to_f32_vec().unwrap(), &reference::matmul(&ar, &br, m, k, n), &magnitude);
        prop_assert!(err <= 1e-5, "relative error {err:e}");

        let b_bad = Tensor::zeros(&[k + delta, n], DType::F32).unwrap();
        let mut out = poisoned(&[m, n], DType::F32);
        let result = matmul(&mut MatmulArgs { a: a.view(), b: b_bad.view(), output: out.view_mut() });
        prop_assert!(is_typed_error(result));
        let mut out_bad = poisoned(&[m, n + delta], DType::F32);
        let result = matmul(&mut MatmulArgs { a: a.view(), b: b.view(), output: out_bad.view_mut() });
        prop_assert!(is_typed_error(result));
    }

    #[test]
    fn rope_positions_past_the_table_are_errors(seq in 1usize..6, offset in 0usize..6, spare in 0usize..3, style_neox in any::<bool>()) {
        let (half, head_dim) = (2, 6);
        let positions = offset + seq + spare;
        let table = vec![0.5f32; positions * half];
        let style = if style_neox { RopeStyle::Neox } else { RopeStyle::Interleaved };
        let mut x = vec![1.0f32; seq * head_dim];
        let call = |x: &mut [f32], position_offset| rope(&mut RopeArgs {
            x: TensorViewMut::from_slice(x, &[1, seq, 1, head_dim]).unwrap(),
            cos: TensorView::from_slice(&table, &[positions, half]).unwrap(),
            sin: TensorView::from_slice(&table, &[positions, half]).unwrap(),
            position_offset,
            style,
            layout: Layout::Bshd,
        });
        prop_assert!(call(&mut x, offset).is_ok());
        prop_assert!(is_typed_error(call(&mut x, offset + spare + 1)));
    }

    #[test]
    fn swiglu_valid_and_invalid(rows in 0usize..4, width in 1usize..20, seed in any::<u64>()) {
        let mut rng = rng(seed);
        let (g, gr) = tensor(&random(&mut rng, rows * width), &[rows, width], DType::F32);
        let (u, ur) = tensor(&random(&mut rng, rows * width), &[rows, width], DType::F32);
        let mut out = poisoned(&[rows, width], DType::F32);
        swiglu(&mut SwigluArgs { input: SwigluInput::Separate { gate: g.view(), up: u.view() }, output: out.view_mut() }).unwrap();
        prop_assert!(relative_error(&out.to_f32_vec().unwrap(), &reference::swiglu(&gr, &ur)) <= 1e-5);

        let odd = Tensor::zeros(&[rows, 2 * width + 1], DType::F32).unwrap();
        let mut out = poisoned(&[rows, width], DType::F32);
        let result = swiglu(&mut SwigluArgs { input: SwigluInput::Fused(odd.view()), output: out.view_mut() });
        prop_assert!(is_typed_error(result));
        let short = Tensor::zeros(&[rows, width + 1], DType::F32).unwrap();
        let mut out = poisoned(&[rows, width], DType::F32);
        let result = swiglu(&mut SwigluArgs { input: SwigluInput::Separate { gate: g.view(), up: short.view() }, output: out.view_mut() });
        prop_assert!(is_typed_error(result));
    }
}

#[test]
fn mixed_dtypes_are_invalid_arguments_that_name_both() {
    let x = Tensor::zeros(&[2, 4], DType::F32).unwrap();
    let w = Tensor::zeros(&[4], DType::BF16).unwrap();
    let mut out = Tensor::zeros(&[2, 4], DType::F32).unwrap();
    let err = rms_norm(&mut NormArgs::new(x.view(), w.view(), out.view_mut(), 1e-6)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid argument: cpu.rms_norm: weight must have the dtype of input (float32), it has bfloat16"
    );
}

#[test]
fn unsupported_dtypes_and_strided_outputs_are_refused() {
    let x = Tensor::zeros(&[2, 4], DType::F64).unwrap();
    let w = Tensor::zeros(&[4], DType::F64).unwrap();
    let mut out = Tensor::zeros(&[2, 4], DType::F64).unwrap();
    let result = rms_norm(&mut NormArgs::new(x.view(), w.view(), out.view_mut(), 1e-6));
    assert!(matches!(result, Err(KernelError::Unsupported(ref m)) if m.contains("float64")), "{result:?}");

    let a = Tensor::zeros(&[2, 2], DType::F32).unwrap();
    let mut memory = vec![0f32; 8];
    let strided_out = TensorViewMut::from_slice_strided(&mut memory, &[2, 2], &[4, 1]).unwrap();
    let result = matmul(&mut MatmulArgs { a: a.view(), b: a.view(), output: strided_out });
    assert!(matches!(result, Err(KernelError::Unsupported(ref m)) if m.contains("contiguous")), "{result:?}");
}

#[test]
fn bad_flags_are_invalid_arguments() {
    let t = Tensor::zeros(&[1, 2, 1, 4], DType::F32).unwrap();
    let mut out = Tensor::zeros(&[1, 2, 1, 4], DType::F32).unwrap();
    let attend = |kernel: AttentionKernel, out: &mut Tensor, window_size, scale| {
        kernel(&mut AttentionArgs {
            query: t.view(),
            key: t.view(),
            value: t.view(),
            output: out.view_mut(),
            layout: Layout::Bshd,
            is_causal: true,
            scale,
            window_size,
        })
    };
    assert!(matches!(attend(attention_tiled, &mut out, Some(0), None), Err(KernelError::InvalidArgument(_))));
    assert!(matches!(attend(attention_naive, &mut out, None, Some(f32::NAN)), Err(KernelError::InvalidArgument(_))));
    assert!(attend(attention_split_kv, &mut out, Some(1), Some(0.5)).is_ok());
    let x = Tensor::zeros(&[1, 4], DType::F32).unwrap();
    let w = Tensor::zeros(&[4], DType::F32).unwrap();
    let mut out = Tensor::zeros(&[1, 4], DType::F32).unwrap();
    let result = rms_norm(&mut NormArgs {
        input: x.view(),
        weight: w.view(),
        bias: Some(w.view()),
        output: out.view_mut(),
        eps: 1e-6,
        residual: None,
    });
    assert!(matches!(result, Err(KernelError::InvalidArgument(ref m)) if m.contains("no bias")));
    let result = layer_norm(&mut NormArgs::new(x.view(), w.view(), out.view_mut(), -1.0));
    assert!(matches!(result, Err(KernelError::InvalidArgument(ref m)) if m.contains("eps")));
}

#[test]
fn split_kv_refuses_long_query_blocks_as_its_spec_says() {
    let p = Problem {
        batch: 1,
        seq_q: 65,
        seq_k: 65,
        heads: 1,
        kv_heads: 1,
        head_dim: 4,
        head_dim_v: 4,
        causal: true,
        window: None,
        scale: None,
        layout: Layout::Bshd,
    };
    let t = Tensor::zeros(&p.q_dims(), DType::F32).unwrap();
    let mut out = Tensor::zeros(&p.o_dims(), DType::F32).unwrap();
    let result = run_attention(attention_split_kv, &p, &t, &t, &t, &mut out);
    assert!(matches!(result, Err(KernelError::Unsupported(_))), "{result:?}");
}
