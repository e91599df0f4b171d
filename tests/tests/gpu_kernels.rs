//! The CUDA kernels against a float64 reference: every variant and dtype, odd sizes,
//! poisoned outputs, and refusals that match each variant's stated limits.
//!
//! `cargo test -p layerzero-tests --features cuda --test gpu_kernels`; without a GPU each
//! test prints why it skips.
#![cfg(feature = "cuda")]

use layerzero::types::{DType, KernelError, RopeStyle, Tensor};
use layerzero_kernels::cuda::{
    self, CudaDevice, LayerNormVariant, RmsNormVariant, RopeTables, RopeVariant, SwigluDeviceInput, SwigluVariant,
};
use layerzero_tests::values;

fn gpu() -> Option<CudaDevice> {
    match cuda::discover() {
        Ok(devices) => {
            let first = devices.into_iter().next();
            if first.is_none() {
                eprintln!("skipping: no CUDA GPU here (no driver, or no device)");
            }
            first
        }
        Err(e) => {
            eprintln!("skipping: CUDA discovery failed: {e}");
            None
        }
    }
}

/// The values as the dtype stores them.
fn rounded(values: &[f32], dtype: DType) -> Vec<f32> {
    Tensor::from_f32(values, &[values.len()], dtype).unwrap().to_f32_vec().unwrap()
}

fn upload(gpu: &CudaDevice, values: &[f32], dims: &[usize], dtype: DType) -> Tensor {
    Tensor::from_f32(values, dims, dtype).unwrap().to_cuda(gpu.stream()).unwrap()
}

fn poisoned(gpu: &CudaDevice, dims: &[usize], dtype: DType) -> Tensor {
    upload(gpu, &vec![f32::NAN; dims.iter().product()], dims, dtype)
}

fn download(t: &Tensor) -> Vec<f32> {
    t.to_host().unwrap().to_f32_vec().unwrap()
}

fn relative_error(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len());
    assert!(out.iter().all(|v| v.is_finite()), "an output is NaN or infinite (unwritten or overflowed)");
    let diff: f64 = out.iter().zip(reference).map(|(&o, &r)| (f64::from(o) - r).powi(2)).sum();
    let norm: f64 = reference.iter().map(|r| r * r).sum();
    (diff / norm.max(1e-30)).sqrt()
}

fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F32 { 1e-5 } else { 1e-2 }
}

fn pack(dtype: DType) -> usize {
    16 / dtype.size_in_bytes()
}

/// What each variant says it supports, to check refusals against.
fn norm_supports(variant: RmsNormVariant, dtype: DType, hidden: usize) -> bool {
    let p = pack(dtype);
    match variant {
        RmsNormVariant::Block => hidden.is_multiple_of(p) && hidden <= 8 * 1024 * p,
        RmsNormVariant::Warp => hidden.is_multiple_of(p) && hidden <= 4 * 32 * p,
        RmsNormVariant::Scalar => true,
        RmsNormVariant::BlockTuned { packs_per_thread } => {
            let packs = hidden / p;
            hidden.is_multiple_of(p) && packs.div_ceil(usize::from(packs_per_thread)) <= 1024
        }
    }
}

const DTYPES: [DType; 3] = [DType::BF16, DType::F16, DType::F32];
const NORM_VARIANTS: [RmsNormVariant; 5] = [
    RmsNormVariant::Block,
    RmsNormVariant::Warp,
    RmsNormVariant::Scalar,
    RmsNormVariant::BlockTuned { packs_per_thread: 1 },
    RmsNormVariant::BlockTuned { packs_per_thread: 8 },
];

#[test]
fn rms_norm_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    let shapes = [
        (1, 1),
        (3, 17),
        (1, 64),
        (37, 256),
        (3, 1024),
        (1, 4095),
        (5, 4096),
        (2, 6000),
        (3, 8192),
        (3, 8193),
        (2, 16384),
        (1, 65536),
    ];
    let eps = 1e-6f32;
    for dtype in DTYPES {
        for (rows, hidden) in shapes {
            for fused in [false, true] {
                let x = rounded(&values(rows * hidden, 1 + hidden as u64), dtype);
                let r = rounded(&values(rows * hidden, 2 + rows as u64), dtype);
                let w = rounded(&values(hidden, 3), dtype);
                // The kernel stores x + r in the dtype, then normalises the stored sum.
                let sum = rounded(&x.iter().zip(&r).map(|(a, b)| a + b).collect::<Vec<_>>(), dtype);
                let reference = rms_norm_reference(if fused { &sum } else { &x }, &w, eps);
                for variant in NORM_VARIANTS {
                    let dims = [rows, hidden];
                    let (xd, rd, wd) = (
                        upload(&gpu, &x, &dims, dtype),
                        upload(&gpu, &r, &dims, dtype),
                        upload(&gpu, &w, &[hidden], dtype),
                    );
                    let mut y = poisoned(&gpu, &dims, dtype);
                    let mut r_out = poisoned(&gpu, &dims, dtype);
                    let residual = fused.then_some((&rd, &mut r_out));
                    let result = gpu.rms_norm(variant, &xd, residual, &wd, &mut y, eps);
                    let case = format!("{variant:?} {dtype} rows={rows} hidden={hidden} fused={fused}");
                    if !norm_supports(variant, dtype, hidden) {
                        assert!(
                            matches!(result, Err(KernelError::Unsupported(_))),
                            "{case}: expected a refusal, got {result:?}"
                        );
                        continue;
                    }
                    result.unwrap_or_else(|e| panic!("{case}: {e}"));
                    gpu.synchronize().unwrap();
                    let error = relative_error(&download(&y), &reference);
                    assert!(error <= tolerance(dtype), "{case}: relative error {error:e}");
                    if fused {
                        let stored: Vec<f64> = sum.iter().map(|&v| f64::from(v)).collect();
                        assert_eq!(relative_error(&download(&r_out), &stored), 0.0, "{case}: residual_out");
                    }
                }
            }
        }
    }
}

/// The rms_norm reference in float64: rows of `w.len()` elements of `x`, each scaled by `w`.
fn rms_norm_reference(x: &[f32], w: &[f32], eps: f32) -> Vec<f64> {
    let hidden = w.len();
    let mut reference = Vec::with_capacity(x.len());
    for row in x.chunks(hidden) {
        let mean_sq = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / hidden as f64;
        let inv = 1.0 / (mean_sq + f64::from(eps)).sqrt();
        reference.extend(row.iter().zip(w).map(|(&v, &w)| f64::from(v) * inv * f64::from(w)));
    }
    reference
}

/// A launch made after other code changed this thread's current CUDA context (to none,
/// then to a context of its own) still runs, in the device's context, and gives the right
/// result: the launch path remembers the context it bound, and a launch that fails because
/// another is current binds again and retries.
#[test]
fn a_launch_survives_another_context_made_current() {
    use cudarc::driver::sys;
    let Some(gpu) = gpu() else { return };
    let (dtype, rows, hidden, eps) = (DType::BF16, 3, 64, 1e-6f32);
    let x = rounded(&values(rows * hidden, 5), dtype);
    let w = rounded(&values(hidden, 6), dtype);
    let reference = rms_norm_reference(&x, &w, eps);
    let (xd, wd) = (upload(&gpu, &x, &[rows, hidden], dtype), upload(&gpu, &w, &[hidden], dtype));
    // Every output is allocated first: an allocation binds the device's context itself.
    let mut outputs: Vec<Tensor> = (0..3).map(|_| poisoned(&gpu, &[rows, hidden], dtype)).collect();
    let mut launch = |i: usize| gpu.rms_norm(RmsNormVariant::Warp, &xd, None, &wd, &mut outputs[i], eps);

    launch(0).expect("a launch with the device's context current");
    // SAFETY: makes no context current on this thread; nothing else runs on it meanwhile.
    unsafe { cudarc::driver::result::ctx::set_current(std::ptr::null_mut()) }.expect("unset the context");
    launch(1).expect("a launch with no context current");
    let mut device = 0;
    let mut other: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: both write through pointers to live locals; creating a context makes it
    // current on this thread, and it is destroyed below, after the launch.
    unsafe {
        sys::cuDeviceGet(&mut device, 0).result().expect("device 0");
        sys::cuCtxCreate_v4(&mut other, std::ptr::null_mut(), 0, device).result().expect("a context of the test's own");
    }
    launch(2).expect("a launch with another context current");
    // SAFETY: `other` was created above and nothing uses it any more.
    unsafe { sys::cuCtxDestroy_v2(other) }.result().expect("destroy the test's context");
    gpu.synchronize().unwrap();
    for (i, y) in outputs.iter().enumerate() {
        let error = relative_error(&download(y), &reference);
        assert!(error <= tolerance(dtype), "launch {i}: relative error {error:e}");
    }
}

#[test]
fn swiglu_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    // 70000 rows: more than a launch's grid y holds (65535), so the vector variant's blocks
    // loop over rows.
    let shapes = [(1, 1), (3, 17), (2, 4095), (4, 8192), (3, 14336), (70_000, 8)];
    for dtype in DTYPES {
        for (rows, inter) in shapes {
            let gate = rounded(&values(rows * inter, 7 + inter as u64), dtype);
            let up = rounded(&values(rows * inter, 11 + rows as u64), dtype);
            let reference: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(&g, &u)| {
                    let g = f64::from(g);
                    g / (1.0 + (-g).exp()) * f64::from(u)
                })
                .collect();
            let mut fused = Vec::with_capacity(2 * rows * inter);
            for (g, u) in gate.chunks(inter).zip(up.chunks(inter)) {
                fused.extend_from_slice(g);
                fused.extend_from_slice(u);
            }
            let dims = [rows, inter];
            let (gd, ud) = (upload(&gpu, &gate, &dims, dtype), upload(&gpu, &up, &dims, dtype));
            let fd = upload(&gpu, &fused, &[rows, 2 * inter], dtype);
            for variant in [SwigluVariant::Vector, SwigluVariant::Scalar] {
                for fused_input in [false, true] {
                    let case = format!("{variant:?} {dtype} rows={rows} inter={inter} fused={fused_input}");
                    let input = if fused_input {
                        SwigluDeviceInput::Fused(&fd)
                    } else {
                        SwigluDeviceInput::Separate { gate: &gd, up: &ud }
                    };
                    let mut out = poisoned(&gpu, &dims, dtype);
                    let result = gpu.swiglu(variant, input, &mut out);
                    if variant == SwigluVariant::Vector && !inter.is_multiple_of(pack(dtype)) {
                        assert!(matches!(result, Err(KernelError::Unsupported(_))), "{case}: expected a refusal");
                        continue;
                    }
                    result.unwrap_or_else(|e| panic!("{case}: {e}"));
                    gpu.synchronize().unwrap();
                    let error = relative_error(&download(&out), &reference);
                    assert!(error <= tolerance(dtype), "{case}: relative error {error:e}");
                }
            }
        }
    }
}

#[test]
fn bad_arguments_are_refused_before_launch() {
    let Some(gpu) = gpu() else { return };
    let x = upload(&gpu, &values(64, 1), &[4, 16], DType::BF16);
    let w = upload(&gpu, &values(16, 2), &[16], DType::BF16);
    let w_wrong = upload(&gpu, &values(8, 2), &[8], DType::BF16);
    let host_w = Tensor::from_f32(&values(16, 2), &[16], DType::BF16).unwrap();
    let mut y = poisoned(&gpu, &[4, 16], DType::BF16);
    let mut y_f32 = poisoned(&gpu, &[4, 16], DType::F32);
    let refused = |r: Result<(), KernelError>| matches!(r, Err(KernelError::InvalidArgument(_)));
    assert!(refused(gpu.rms_norm(RmsNormVariant::Block, &x, None, &w_wrong, &mut y, 1e-6)), "weight shape");
    assert!(refused(gpu.rms_norm(RmsNormVariant::Block, &x, None, &host_w, &mut y, 1e-6)), "weight on the host");
    assert!(refused(gpu.rms_norm(RmsNormVariant::Block, &x, None, &w, &mut y_f32, 1e-6)), "output dtype");
    assert!(refused(gpu.rms_norm(RmsNormVariant::Block, &x, None, &w, &mut y, f32::NAN)), "eps");
    let ints = upload(&gpu, &values(64, 1), &[4, 16], DType::F64);
    let mut out64 = poisoned(&gpu, &[4, 16], DType::F64);
    let w64 = upload(&gpu, &values(16, 2), &[16], DType::F64);
    assert!(matches!(
        gpu.rms_norm(RmsNormVariant::Scalar, &ints, None, &w64, &mut out64, 1e-6),
        Err(KernelError::Unsupported(_))
    ));
    let gate_up_wrong = upload(&gpu, &values(4 * 24, 3), &[4, 24], DType::BF16);
    let mut out = poisoned(&gpu, &[4, 16], DType::BF16);
    assert!(refused(gpu.swiglu(SwigluVariant::Vector, SwigluDeviceInput::Fused(&gate_up_wrong), &mut out)));
    // Nothing was launched: the poisoned output is untouched.
    assert!(download(&y).iter().all(|v| v.is_nan()));
}

#[test]
fn layer_norm_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    let eps = 1e-5f32;
    for dtype in DTYPES {
        for (rows, hidden) in [(1, 1), (3, 17), (1, 4095), (5, 4096), (3, 8193), (2, 16384)] {
            let x = rounded(&values(rows * hidden, 21 + hidden as u64), dtype);
            let w = rounded(&values(hidden, 22), dtype);
            let b = rounded(&values(hidden, 23), dtype);
            for with_bias in [false, true] {
                let mut reference = Vec::with_capacity(rows * hidden);
                for row in x.chunks(hidden) {
                    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / hidden as f64;
                    let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / hidden as f64;
                    let inv = 1.0 / (var + f64::from(eps)).sqrt();
                    reference.extend(row.iter().enumerate().map(|(j, &v)| {
                        let shift = if with_bias { f64::from(b[j]) } else { 0.0 };
                        (f64::from(v) - mean) * inv * f64::from(w[j]) + shift
                    }));
                }
                let (xd, wd, bd) = (
                    upload(&gpu, &x, &[rows, hidden], dtype),
                    upload(&gpu, &w, &[hidden], dtype),
                    upload(&gpu, &b, &[hidden], dtype),
                );
                for variant in [LayerNormVariant::Block, LayerNormVariant::Scalar] {
                    let case = format!("{variant:?} {dtype} rows={rows} hidden={hidden} bias={with_bias}");
                    let mut y = poisoned(&gpu, &[rows, hidden], dtype);
                    let result = gpu.layer_norm(variant, &xd, &wd, with_bias.then_some(&bd), &mut y, eps);
                    if variant == LayerNormVariant::Block && !norm_supports(RmsNormVariant::Block, dtype, hidden) {
                        assert!(matches!(result, Err(KernelError::Unsupported(_))), "{case}: expected a refusal");
                        continue;
                    }
                    result.unwrap_or_else(|e| panic!("{case}: {e}"));
                    gpu.synchronize().unwrap();
                    let error = relative_error(&download(&y), &reference);
                    assert!(error <= tolerance(dtype), "{case}: relative error {error:e}");
                }
            }
        }
    }
}

/// cos and sin tables `[positions, rot / 2]` for base 10000.
fn rope_tables(positions: usize, rot: usize) -> (Vec<f32>, Vec<f32>) {
    let half = rot / 2;
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for i in 0..half {
            let angle = p as f64 * 10000f64.powf(-2.0 * i as f64 / rot as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

#[test]
fn rope_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    // (batch, seq, heads, head_dim, rot, offset)
    let shapes = [
        (1, 1, 1, 2, 2, 0),
        (2, 3, 4, 64, 64, 0),
        (1, 5, 3, 128, 64, 7),
        (1, 3, 2, 18, 18, 0),
        (3, 1, 8, 128, 128, 100),
    ];
    for dtype in DTYPES {
        for (batch, seq, heads, head_dim, rot, offset) in shapes {
            let dims = [batch, seq, heads, head_dim];
            let n = batch * seq * heads * head_dim;
            let x = rounded(&values(n, 31 + head_dim as u64), dtype);
            let positions = offset + seq + 3;
            let (cos, sin) = rope_tables(positions, rot);
            let (cos_d, sin_d) = (
                upload(&gpu, &cos, &[positions, rot / 2], DType::F32),
                upload(&gpu, &sin, &[positions, rot / 2], DType::F32),
            );
            let half = rot / 2;
            for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
                let reference = rope_reference(&x, heads, head_dim, (seq, offset), (&cos, &sin, half), style);
                for variant in [RopeVariant::Vector, RopeVariant::Scalar] {
                    for in_place in [true, false] {
                        let case = format!(
                            "{variant:?} {style} {dtype} {dims:?} rot={rot} offset={offset} in_place={in_place}"
                        );
                        let (result, out) = if in_place {
                            let mut xd = upload(&gpu, &x, &dims, dtype);
                            let result = gpu.rope_in_place(
                                variant,
                                style,
                                &mut xd,
                                RopeTables { cos: &cos_d, sin: &sin_d },
                                offset,
                            );
                            (result, xd)
                        } else {
                            let xd = upload(&gpu, &x, &dims, dtype);
                            let mut out = poisoned(&gpu, &dims, dtype);
                            let result = gpu.rope(
                                variant,
                                style,
                                &xd,
                                &mut out,
                                RopeTables { cos: &cos_d, sin: &sin_d },
                                offset,
                            );
                            (result, out)
                        };
                        let p = pack(dtype);
                        let rotated = if style == RopeStyle::Neox { half } else { rot };
                        if variant == RopeVariant::Vector && (!head_dim.is_multiple_of(p) || !rotated.is_multiple_of(p))
                        {
                            assert!(matches!(result, Err(KernelError::Unsupported(_))), "{case}: expected a refusal");
                            continue;
                        }
                        result.unwrap_or_else(|e| panic!("{case}: {e}"));
                        gpu.synchronize().unwrap();
                        let error = relative_error(&download(&out), &reference);
                        assert!(error <= tolerance(dtype), "{case}: relative error {error:e}");
                    }
                }
            }
        }
    }
}

/// The rope reference in float64: rows of `head_dim`, `heads` per token, in place.
fn rope_reference(
    x: &[f32],
    heads: usize,
    head_dim: usize,
    (seq, offset): (usize, usize),
    (cos, sin, half): (&[f32], &[f32], usize),
    style: RopeStyle,
) -> Vec<f64> {
    let mut reference: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    for (r, row) in reference.chunks_mut(head_dim).enumerate() {
        let position = offset + (r / heads) % seq;
        for i in 0..half {
            let (c, s) = (f64::from(cos[position * half + i]), f64::from(sin[position * half + i]));
            let (ia, ib) = if style == RopeStyle::Neox { (i, i + half) } else { (2 * i, 2 * i + 1) };
            let (a, b) = (row[ia], row[ib]);
            row[ia] = a * c - b * s;
            row[ib] = b * c + a * s;
        }
    }
    reference
}

/// Queries and keys in one launch: each as the float64 reference rotates it alone, for
/// head counts that do not divide the kernel's head groups, a partial rotary width, and
/// positions past the first.
#[test]
fn rope_of_queries_and_keys_in_one_launch_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    // (batch, seq, q heads, k heads, head_dim, rot, offset)
    let shapes = [
        (1, 1, 1, 1, 2, 2, 0),
        (2, 3, 4, 2, 64, 64, 0),
        (1, 5, 3, 1, 128, 64, 7),
        (1, 3, 2, 2, 18, 18, 0),
        (3, 7, 32, 8, 128, 128, 100),
        (1, 4, 5, 3, 256, 128, 1),
    ];
    for dtype in DTYPES {
        for (batch, seq, q_heads, k_heads, head_dim, rot, offset) in shapes {
            let (q_dims, k_dims) = ([batch, seq, q_heads, head_dim], [batch, seq, k_heads, head_dim]);
            let q = rounded(&values(q_dims.iter().product(), 41 + head_dim as u64), dtype);
            let k = rounded(&values(k_dims.iter().product(), 43 + head_dim as u64), dtype);
            let positions = offset + seq + 2;
            let (cos, sin) = rope_tables(positions, rot);
            let (cos_d, sin_d) = (
                upload(&gpu, &cos, &[positions, rot / 2], DType::F32),
                upload(&gpu, &sin, &[positions, rot / 2], DType::F32),
            );
            let half = rot / 2;
            for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
                let tables = (cos.as_slice(), sin.as_slice(), half);
                let q_reference = rope_reference(&q, q_heads, head_dim, (seq, offset), tables, style);
                let k_reference = rope_reference(&k, k_heads, head_dim, (seq, offset), tables, style);
                for variant in [RopeVariant::Vector, RopeVariant::Scalar] {
                    let case =
                        format!("{variant:?} {style} {dtype} q {q_dims:?} k {k_dims:?} rot={rot} offset={offset}");
                    let (mut qd, mut kd) = (upload(&gpu, &q, &q_dims, dtype), upload(&gpu, &k, &k_dims, dtype));
                    let result = gpu.rope_qk_in_place(
                        variant,
                        style,
                        &mut qd,
                        &mut kd,
                        RopeTables { cos: &cos_d, sin: &sin_d },
                        offset,
                    );
                    let p = pack(dtype);
                    let rotated = if style == RopeStyle::Neox { half } else { rot };
                    if variant == RopeVariant::Vector && (!head_dim.is_multiple_of(p) || !rotated.is_multiple_of(p)) {
                        assert!(matches!(result, Err(KernelError::Unsupported(_))), "{case}: expected a refusal");
                        continue;
                    }
                    result.unwrap_or_else(|e| panic!("{case}: {e}"));
                    gpu.synchronize().unwrap();
                    let q_error = relative_error(&download(&qd), &q_reference);
                    let k_error = relative_error(&download(&kd), &k_reference);
                    assert!(q_error <= tolerance(dtype), "{case}: q relative error {q_error:e}");
                    assert!(k_error <= tolerance(dtype), "{case}: k relative error {k_error:e}");
                }
            }
        }
    }
}

#[test]
fn rope_of_queries_and_keys_refuses_keys_unlike_the_queries() {
    let Some(gpu) = gpu() else { return };
    let (cos, sin) = rope_tables(8, 64);
    let (cos_d, sin_d) = (upload(&gpu, &cos, &[8, 32], DType::F32), upload(&gpu, &sin, &[8, 32], DType::F32));
    let mut q = upload(&gpu, &values(3 * 4 * 64, 5), &[1, 3, 4, 64], DType::BF16);
    let before = download(&q);
    let tables = RopeTables { cos: &cos_d, sin: &sin_d };
    for (k_dims, k_dtype) in [
        ([1, 3, 2, 32], DType::BF16), // another head_dim
        ([1, 2, 2, 64], DType::BF16), // another seq
        ([1, 3, 2, 64], DType::F16),  // another dtype
    ] {
        let mut k = upload(&gpu, &values(k_dims.iter().product(), 6), &k_dims, k_dtype);
        let result = gpu.rope_qk_in_place(RopeVariant::Vector, RopeStyle::Neox, &mut q, &mut k, tables, 0);
        assert!(matches!(result, Err(KernelError::InvalidArgument(_))), "k {k_dims:?} {k_dtype}: {result:?}");
    }
    assert_eq!(download(&q), before, "nothing ran");
}

#[test]
fn rope_refuses_positions_past_its_tables() {
    let Some(gpu) = gpu() else { return };
    let (cos, sin) = rope_tables(4, 64);
    let (cos_d, sin_d) = (upload(&gpu, &cos, &[4, 32], DType::F32), upload(&gpu, &sin, &[4, 32], DType::F32));
    let mut x = upload(&gpu, &values(3 * 2 * 64, 5), &[1, 3, 2, 64], DType::BF16);
    let before = download(&x);
    let result =
        gpu.rope_in_place(RopeVariant::Vector, RopeStyle::Neox, &mut x, RopeTables { cos: &cos_d, sin: &sin_d }, 2);
    assert!(matches!(result, Err(KernelError::InvalidArgument(_))), "{result:?}");
    assert_eq!(download(&x), before, "nothing ran");
}

/// cuBLAS matmul against a float64 product of the rounded inputs; the error is measured
/// against ‖|A|·|B|‖, the scale rounding in a sum obeys (random signs can cancel a dot
/// product to near zero).
#[test]
fn matmul_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        for (m, k, n) in [(1, 1, 1), (3, 17, 5), (1, 4096, 4095), (64, 4095, 33), (257, 128, 1024)] {
            let a = values(m * k, 11 + m as u64);
            let b = values(k * n, 13 + n as u64);
            let (ar, br) = (rounded(&a, dtype), rounded(&b, dtype));
            let mut out = poisoned(&gpu, &[m, n], dtype);
            gpu.matmul(&upload(&gpu, &a, &[m, k], dtype), &upload(&gpu, &b, &[k, n], dtype), &mut out).unwrap();
            let mut want = vec![0.0f64; m * n];
            let mut scale = vec![0.0f64; m * n];
            for i in 0..m {
                for p in 0..k {
                    let x = f64::from(ar[i * k + p]);
                    for j in 0..n {
                        let y = f64::from(br[p * n + j]);
                        want[i * n + j] += x * y;
                        scale[i * n + j] += (x * y).abs();
                    }
                }
            }
            let got = download(&out);
            assert!(got.iter().all(|v| v.is_finite()), "{dtype} {m}x{k}x{n}: an output is unwritten");
            let diff: f64 = got.iter().zip(&want).map(|(&g, &w)| (f64::from(g) - w).powi(2)).sum();
            let norm: f64 = scale.iter().map(|s| s * s).sum();
            let err = if norm == 0.0 { diff.sqrt() } else { (diff / norm).sqrt() };
            assert!(err <= tolerance(dtype), "{dtype} {m}x{k}x{n}: relative error {err:e}");
        }
    }
    // Mismatched shapes and dtypes are refused before cuBLAS sees them.
    let a = upload(&gpu, &values(6, 1), &[2, 3], DType::BF16);
    let b = upload(&gpu, &values(8, 2), &[4, 2], DType::BF16);
    let mut out = poisoned(&gpu, &[2, 2], DType::BF16);
    assert!(matches!(gpu.matmul(&a, &b, &mut out), Err(KernelError::InvalidArgument(_))));
    let b32 = upload(&gpu, &values(6, 2), &[3, 2], DType::F32);
    assert!(matches!(gpu.matmul(&a, &b32, &mut out), Err(KernelError::InvalidArgument(_))));
}
