//! The residual add fused with rms_norm as a selection choice: a norm call with a
//! [`Residual`] says so in its context (`fused_residual: true`), and only kernels whose
//! spec claims `residual` may run it. Among those, priority picks the fused CPU kernel and
//! a rule can pick the unfused one; a kernel without the capability is never chosen, and
//! layer_norm with a residual is a typed error.

use std::sync::Arc;

use layerzero::config::{ConfigSchema, DispatchConfig, DispatchMode};
use layerzero::dispatch::{
    ConfigDrivenDispatcher, DispatchError, Dispatcher, DynamicDispatcher, create_dynamic_dispatcher,
};
use layerzero::kernels::{register_cpu_kernels, rms_norm};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::selection_engine::SelectionError;
use layerzero::types::{
    Constraint, DType, KernelError, KernelImpl, KernelSpec, NormArgs, OpArgs, Operation, OperationType, Platform,
    Residual, SelectionContext, Tensor,
};

const RMS: Operation = Operation::Known(OperationType::NormRms);
const ROWS: usize = 3;
const HIDDEN: usize = 5;

/// The CPU kernels, plus `plain_rms_norm`: the CPU rms_norm code under a spec that does
/// not claim `residual`, at a priority above every other rms_norm kernel.
fn kernels() -> Arc<KernelRegistry> {
    let kernels = Arc::new(KernelRegistry::new());
    register_cpu_kernels(&kernels).expect("the CPU kernels register");
    let plain = KernelSpec::new("plain_rms_norm", Platform::Cpu)
        .expect("a valid id")
        .for_operation(OperationType::NormRms)
        .with_dtypes([DType::F32, DType::BF16])
        .with_priority(900);
    assert!(!plain.constraints.residual, "a spec takes no residual unless it says so");
    kernels.register_with_impl(plain, KernelImpl::norm(rms_norm)).expect("registered");
    kernels
}

fn dynamic(kernels: &Arc<KernelRegistry>) -> DynamicDispatcher {
    create_dynamic_dispatcher(Arc::clone(kernels), Arc::new(BackendRegistry::detect()), DispatchConfig::default(), true)
        .expect("a dispatcher")
}

/// What a call produced: the kernel that ran, the output and, with a residual, the sum.
struct Ran {
    kernel: String,
    output: Vec<f32>,
    sum: Option<Vec<f32>>,
}

fn inputs(dtype: DType) -> (Tensor, Tensor, Tensor) {
    let values = |seed: f32| -> Vec<f32> { (0..ROWS * HIDDEN).map(|i| ((i as f32 + seed) * 0.37).sin()).collect() };
    let x = Tensor::from_f32(&values(1.0), &[ROWS, HIDDEN], dtype).expect("x");
    let stream = Tensor::from_f32(&values(7.0), &[ROWS, HIDDEN], dtype).expect("residual");
    let weight: Vec<f32> = (0..HIDDEN).map(|i| 0.5 + i as f32 * 0.25).collect();
    (x, stream, Tensor::from_f32(&weight, &[HIDDEN], dtype).expect("weight"))
}

/// rms_norm through `dispatcher`, with the residual stream when `with_residual`.
fn run(
    dispatcher: &dyn Dispatcher,
    operation: Operation,
    dtype: DType,
    with_residual: bool,
) -> Result<Ran, DispatchError> {
    let (x, stream, w) = inputs(dtype);
    let mut y = Tensor::zeros(&[ROWS, HIDDEN], dtype).expect("y");
    let mut sum = Tensor::zeros(&[ROWS, HIDDEN], dtype).expect("sum");
    let mut args = OpArgs::Norm(NormArgs {
        input: x.view(),
        weight: w.view(),
        bias: None,
        output: y.view_mut(),
        eps: 1e-6,
        residual: with_residual.then(|| Residual { input: stream.view(), output: sum.view_mut() }),
    });
    let result = dispatcher.dispatch(operation, &mut args, None)?;
    Ok(Ran {
        kernel: result.kernel_id.as_str().to_owned(),
        output: y.to_f32_vec().expect("f32"),
        sum: with_residual.then(|| sum.to_f32_vec().expect("f32")),
    })
}

/// The float64 answer: the residual stream after the add, and its rms_norm.
fn expected(dtype: DType) -> (Vec<f64>, Vec<f64>) {
    let (x, stream, w) = inputs(dtype);
    let wide = |t: &Tensor| -> Vec<f64> { t.to_f32_vec().expect("f32").into_iter().map(f64::from).collect() };
    let (x, stream, w) = (wide(&x), wide(&stream), wide(&w));
    let sum: Vec<f64> = x.iter().zip(&stream).map(|(a, b)| a + b).collect();
    let mut normed = Vec::with_capacity(sum.len());
    for row in sum.chunks(HIDDEN) {
        let rms = (row.iter().map(|v| v * v).sum::<f64>() / HIDDEN as f64 + 1e-6).sqrt();
        normed.extend(row.iter().zip(&w).map(|(v, w)| v / rms * w));
    }
    (sum, normed)
}

fn assert_close(what: &str, got: &[f32], want: &[f64], dtype: DType) {
    let tolerance = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
    let diff = got.iter().zip(want).map(|(&g, w)| (f64::from(g) - w).powi(2)).sum::<f64>().sqrt();
    let norm = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    assert!(diff / norm <= tolerance, "{what} {dtype}: relative error {:e}", diff / norm);
}

#[test]
fn priority_picks_the_fused_kernel_and_a_kernel_without_the_capability_is_never_chosen() {
    let kernels = kernels();
    let dispatcher = dynamic(&kernels);
    for dtype in [DType::F32, DType::BF16] {
        let (sum, normed) = expected(dtype);
        // Alternating on one thread: the remembered selection of one kind of call never
        // serves the other (the signature packs the residual's presence).
        for _ in 0..3 {
            let plain = run(&dispatcher, RMS, dtype, false).expect("a plain rms_norm");
            assert_eq!(plain.kernel, "plain_rms_norm", "the highest priority runs a plain call");
            let fused = run(&dispatcher, RMS, dtype, true).expect("add + rms_norm");
            assert_eq!(fused.kernel, "cpu.rms_norm", "priority 50 beats add_then_norm's 40");
            assert_close("residual.output", fused.sum.as_deref().expect("a sum"), &sum, dtype);
            assert_close("output", &fused.output, &normed, dtype);
        }
    }

    // explain says why the higher-priority kernel was passed over.
    let context = SelectionContext::builder().dtype(DType::F32).fused_residual(true).build().expect("a context");
    let explanation = dispatcher.selection_engine().explain_selection(RMS, &context);
    assert_eq!(explanation.chosen.as_deref(), Some("cpu.rms_norm"));
    let plain = explanation.candidates.iter().find(|c| c.kernel == "plain_rms_norm").expect("a candidate");
    let text = format!("{:?}", plain.verdict);
    assert!(text.contains("residual requires no residual"), "{text}");
    let spec = kernels.get_by_name("plain_rms_norm").expect("registered");
    assert_eq!(spec.check(&context).map_err(|r| r.constraint), Err(Constraint::Residual));
}

#[test]
fn a_rule_picks_the_unfused_kernel_and_a_rule_for_an_incapable_kernel_is_skipped() {
    let kernels = kernels();
    let rules = "version: \"1.0\"\n\
                 dispatch_rules:\n  \
                 - {operation: rms_norm, conditions: {fused_residual: true}, kernel: plain_rms_norm, priority: 900}\n  \
                 - {operation: rms_norm, conditions: {fused_residual: true}, kernel: cpu.rms_norm.add_then_norm, priority: 500}\n";
    let policy = ConfigSchema.load(rules).expect("valid rules").compiled;
    let config = DispatchConfig::builder().mode(DispatchMode::Config).build().expect("config");
    let dispatcher =
        ConfigDrivenDispatcher::new(Arc::clone(&kernels), Arc::new(BackendRegistry::detect()), config, policy, None)
            .expect("a dispatcher");
    let (sum, normed) = expected(DType::BF16);
    for _ in 0..3 {
        let unfused = run(&dispatcher, RMS, DType::BF16, true).expect("add + rms_norm");
        assert_eq!(unfused.kernel, "cpu.rms_norm.add_then_norm");
        assert_close("residual.output", unfused.sum.as_deref().expect("a sum"), &sum, DType::BF16);
        assert_close("output", &unfused.output, &normed, DType::BF16);
        // The rules' condition does not hold without a residual: priority decides.
        assert_eq!(run(&dispatcher, RMS, DType::BF16, false).expect("rms_norm").kernel, "plain_rms_norm");
    }
    // Fused and unfused agree bit for bit: both normalise the sum as stored.
    let fused = run(&dynamic(&kernels), RMS, DType::BF16, true).expect("add + rms_norm");
    let unfused = run(&dispatcher, RMS, DType::BF16, true).expect("add + rms_norm");
    assert_eq!((fused.output, fused.sum), (unfused.output, unfused.sum));
}

#[test]
fn layer_norm_with_a_residual_is_a_typed_error() {
    let kernels = kernels();
    let layer_norm = Operation::Known(OperationType::NormLayer);
    let error = run(&dynamic(&kernels), layer_norm, DType::F32, true).err().expect("no layer_norm takes a residual");
    match &error {
        DispatchError::Selection(SelectionError::NoValidKernel { rejections, .. }) => {
            assert!(!rejections.is_empty());
            assert!(error.to_string().contains("residual"), "{error}");
        }
        other => panic!("expected no valid kernel, got {other:?}"),
    }
    // Without a residual the same call runs.
    assert_eq!(run(&dynamic(&kernels), layer_norm, DType::F32, false).expect("layer_norm").kernel, "cpu.layer_norm");

    // Called directly, the kernel refuses it as an invalid argument.
    let id = kernels.get_by_name("cpu.layer_norm").expect("registered").id;
    let code = kernels.implementation(id).expect("code");
    let (x, stream, w) = inputs(DType::F32);
    let (mut y, mut sum) = (
        Tensor::zeros(&[ROWS, HIDDEN], DType::F32).expect("y"),
        Tensor::zeros(&[ROWS, HIDDEN], DType::F32).expect("sum"),
    );
    let mut args = OpArgs::Norm(NormArgs {
        input: x.view(),
        weight: w.view(),
        bias: None,
        output: y.view_mut(),
        eps: 1e-6,
        residual: Some(Residual { input: stream.view(), output: sum.view_mut() }),
    });
    let refused = code.call(&mut args).expect_err("layer_norm refuses a residual");
    assert!(matches!(&refused, KernelError::InvalidArgument(m) if m.contains("no residual")), "{refused}");
}
