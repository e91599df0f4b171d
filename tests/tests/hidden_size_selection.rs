//! Hidden-size limits as spec constraints: a norm's calls are routed, through selection,
//! to the variant whose `hidden_size` constraint takes their rows, and a row past every
//! variant's limit is a typed selection error naming each kernel's rejection, before any
//! kernel runs. CPU-only: the kernels are test kernels shaped like the CUDA warp and block
//! variants.

use std::sync::Arc;

use layerzero::config::{ConfigSchema, DispatchConfig, DispatchMode};
use layerzero::dispatch::{ConfigDrivenDispatcher, DispatchError, Dispatcher, create_dynamic_dispatcher};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::selection_engine::{RejectReason, SelectionError};
use layerzero::types::{
    Constraint, DType, DimConstraint, KernelError, KernelImpl, KernelResult, KernelSpec, NormArgs, OpArgs, Operation,
    OperationType, Platform, SwigluArgs, SwigluInput, Tensor,
};

const RMS: Operation = Operation::Known(OperationType::NormRms);

/// A "warp" variant for rows up to 1024 (preferred where it fits) and a "block" variant
/// for 1024..=65536, multiples of 8, each writing its own mark into the output.
fn kernels() -> Arc<KernelRegistry> {
    let kernels = Arc::new(KernelRegistry::new());
    let variant = |id: &str, priority: u32, min: u32, max: u32| {
        KernelSpec::new(id, Platform::Cpu)
            .expect("a valid id")
            .for_operation(OperationType::NormRms)
            .with_dtypes([DType::F32])
            .with_priority(priority)
            .with_hidden_size(DimConstraint::Range { min, max, multiple_of: 8 })
    };
    kernels.register_with_impl(variant("hidden.warp", 80, 8, 1024), writes(1.0)).expect("registered");
    kernels.register_with_impl(variant("hidden.block", 70, 1024, 65536), writes(2.0)).expect("registered");
    kernels
}

/// A kernel that writes `mark` into every output element, so a test sees which one ran.
fn writes(mark: f32) -> KernelImpl {
    KernelImpl::norm(move |args: &mut NormArgs<'_>| -> KernelResult {
        args.output.as_mut_slice::<f32>().map_err(KernelError::Tensor)?.fill(mark);
        Ok(())
    })
}

/// Two rows of `hidden` f32 elements, their weight and output.
struct Rows {
    x: Tensor,
    w: Tensor,
    y: Tensor,
}

impl Rows {
    fn new(hidden: usize) -> Rows {
        Rows {
            x: Tensor::zeros(&[2, hidden], DType::F32).expect("x"),
            w: Tensor::zeros(&[hidden], DType::F32).expect("w"),
            y: Tensor::zeros(&[2, hidden], DType::F32).expect("y"),
        }
    }

    fn args(&mut self) -> OpArgs<'_> {
        OpArgs::Norm(NormArgs::new(self.x.view(), self.w.view(), self.y.view_mut(), 1e-6))
    }

    fn mark(&self) -> f32 {
        self.y.to_f32_vec().expect("f32")[0]
    }
}

/// Dispatches rms_norm over rows of `hidden` and returns the kernel that ran and its mark.
fn run(dispatcher: &dyn Dispatcher, hidden: usize) -> Result<(String, f32), DispatchError> {
    let mut rows = Rows::new(hidden);
    let result = dispatcher.dispatch(RMS, &mut rows.args(), None)?;
    Ok((result.kernel_id.as_str().to_owned(), rows.mark()))
}

#[test]
fn norm_calls_are_routed_by_their_hidden_size() {
    let dispatcher =
        create_dynamic_dispatcher(kernels(), Arc::new(BackendRegistry::detect()), DispatchConfig::default(), true)
            .expect("a dispatcher");
    // Alternating sizes: the remembered selection of one size never serves another.
    for _ in 0..3 {
        assert_eq!(run(&dispatcher, 512).expect("512"), ("hidden.warp".to_owned(), 1.0));
        assert_eq!(run(&dispatcher, 1024).expect("1024"), ("hidden.warp".to_owned(), 1.0));
        assert_eq!(run(&dispatcher, 4096).expect("4096"), ("hidden.block".to_owned(), 2.0));
    }
    // The selection says why the preferred kernel was passed over.
    let mut rows = Rows::new(4096);
    let context = rows.args().context().expect("a context");
    assert_eq!(context.hidden_size, Some(4096));
    let selection = dispatcher.selection_engine().select(RMS, &context).expect("a selection");
    assert_eq!(selection.kernel.as_str(), "hidden.block");
    let explained = dispatcher.selection_engine().explain_selection(RMS, &context).to_string();
    assert!(explained.contains("hidden_size=4096"), "{explained}");
    assert!(
        explained.contains("hidden.warp [cpu, priority 80]: rejected: hidden_size requires a multiple of 8 in 8..=1024, context has 4096"),
        "{explained}"
    );
}

#[test]
fn a_row_past_every_limit_is_a_selection_error_naming_each_rejection() {
    let dispatcher =
        create_dynamic_dispatcher(kernels(), Arc::new(BackendRegistry::detect()), DispatchConfig::default(), true)
            .expect("a dispatcher");
    for hidden in [65544, 1020] {
        let error = run(&dispatcher, hidden).expect_err("no kernel takes these rows");
        let DispatchError::Selection(SelectionError::NoValidKernel { operation, rejections }) = &error else {
            panic!("expected a selection error, got {error}");
        };
        assert_eq!(*operation, RMS);
        let mut rejected: Vec<(&str, Constraint, &str)> = rejections
            .iter()
            .map(|r| match &r.reason {
                RejectReason::Constraint(rejection) => {
                    (r.kernel.as_str(), rejection.constraint, rejection.actual.as_str())
                }
                other => panic!("{} rejected for {other}, not a constraint", r.kernel),
            })
            .collect();
        rejected.sort_by_key(|r| r.0);
        let actual = hidden.to_string();
        assert_eq!(
            rejected,
            [
                ("hidden.block", Constraint::HiddenSize, actual.as_str()),
                ("hidden.warp", Constraint::HiddenSize, actual.as_str())
            ],
        );
        let text = error.to_string();
        assert!(
            text.contains(&format!(
                "hidden.block: hidden_size requires a multiple of 8 in 1024..=65536, context has {hidden}"
            )),
            "{text}"
        );
    }
}

#[test]
fn rules_name_hidden_size_conditions() {
    // The rule sends rows of at least 512 to the block variant; the warp variant cannot
    // take 2048 either way, and a rule never overrides a spec.
    let rules = "version: \"1.0\"\ndispatch_rules:\n  - {operation: rms_norm, kernel: hidden.block, priority: 500, conditions: {hidden_size_gte: 512}}\n  - {operation: rms_norm, kernel: hidden.warp, priority: 400, conditions: {hidden_size_gt: 1024}}\n";
    let policy = ConfigSchema.load(rules).expect("valid rules").compiled;
    let config = DispatchConfig::builder().mode(DispatchMode::Config).build().expect("config");
    let dispatcher = ConfigDrivenDispatcher::new(kernels(), Arc::new(BackendRegistry::detect()), config, policy, None)
        .expect("a dispatcher");
    assert_eq!(run(&dispatcher, 256).expect("256").0, "hidden.warp");
    // 512 and 1024: the rule picks block, which the spec lets start at 1024 only.
    assert_eq!(run(&dispatcher, 512).expect("512").0, "hidden.warp");
    assert_eq!(run(&dispatcher, 1024).expect("1024").0, "hidden.block");
    assert_eq!(run(&dispatcher, 2048).expect("2048").0, "hidden.block");

    // At 512 the first rule matches and is skipped (its kernel cannot take the rows); the
    // second's condition fails.
    let mut rows = Rows::new(512);
    let context = rows.args().context().expect("a context");
    let explained = dispatcher.selection_engine().explain_selection(RMS, &context).to_string();
    assert!(
        explained.contains(
            "dispatch_rules[0] rms_norm -> hidden.block (priority 500): matched, skipped: its kernel cannot be used: \
             hidden_size requires a multiple of 8 in 1024..=65536, context has 512"
        ),
        "{explained}"
    );
    assert!(explained.contains("`hidden_size_gt: 1024` fails (context has 512)"), "{explained}");
}

#[test]
fn swiglu_contexts_carry_the_intermediate_size() {
    let gate_up = Tensor::zeros(&[3, 2 * 11008], DType::BF16).expect("gate_up");
    let mut out = Tensor::zeros(&[3, 11008], DType::BF16).expect("out");
    let args = OpArgs::Swiglu(SwigluArgs { input: SwigluInput::Fused(gate_up.view()), output: out.view_mut() });
    let context = args.context().expect("a context");
    assert_eq!((context.hidden_size, context.batch_size), (Some(11008), Some(3)));
}
