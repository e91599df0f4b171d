//! The executor's optional steps: layout transforms (`enable_transforms`) and the
//! device-sync hook (`sync_after_execution`), through a static dispatcher.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use layerzero::config::DispatchConfig;
use layerzero::dispatch::{AttemptError, DeviceSync, DispatchError, Dispatcher, StaticDispatcherBuilder};
use layerzero::kernels::attention_naive;
use layerzero::types::{
    AttentionArgs, DType, KernelError, KernelId, KernelImpl, KernelResult, KernelSpec, Layout, OpArgs, Operation,
    OperationType, Platform, Support, Tensor,
};

const CAUSAL: Operation = Operation::Known(OperationType::AttentionCausal);

fn attention_spec(id: &str, layouts: Option<Vec<Layout>>) -> KernelSpec {
    let mut spec = KernelSpec::new(id, Platform::Cpu).unwrap().for_operation(OperationType::AttentionCausal);
    spec.constraints.causal = Support::Supported;
    spec.constraints.layouts = layouts;
    spec
}

fn marking(mark: f32) -> KernelImpl {
    KernelImpl::attention(move |args: &mut AttentionArgs<'_>| -> KernelResult {
        args.output.as_mut_slice::<f32>()?.fill(mark);
        Ok(())
    })
}

/// Distinct values, so a transposition error shows: `[batch, heads, seq, dim]` = `shape`.
fn tensor(shape: [usize; 4], seed: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
    Tensor::from_f32(&values, &shape, DType::F32).unwrap()
}

/// Runs attention on BHSD inputs (2 batches, 3 heads, 5 tokens, 4 channels) through
/// `dispatcher`, returning the result and the output.
fn attend_bhsd(dispatcher: &dyn Dispatcher) -> (Result<layerzero::types::DispatchResult<()>, DispatchError>, Vec<f32>) {
    let shape = [2, 3, 5, 4];
    let (q, k, v) = (tensor(shape, 0.1), tensor(shape, 0.7), tensor(shape, 1.3));
    let mut out = Tensor::zeros(&shape, DType::F32).unwrap();
    let mut args = OpArgs::Attention(AttentionArgs {
        query: q.view(),
        key: k.view(),
        value: v.view(),
        output: out.view_mut(),
        layout: Layout::Bhsd,
        is_causal: true,
        scale: None,
        window_size: None,
    });
    let result = dispatcher.dispatch(CAUSAL, &mut args, None);
    (result, out.as_slice::<f32>().unwrap().to_vec())
}

/// The CPU reference run directly in BHSD (it takes both layouts).
fn reference_bhsd() -> Vec<f32> {
    let shape = [2, 3, 5, 4];
    let (q, k, v) = (tensor(shape, 0.1), tensor(shape, 0.7), tensor(shape, 1.3));
    let mut out = Tensor::zeros(&shape, DType::F32).unwrap();
    let mut args = AttentionArgs {
        query: q.view(),
        key: k.view(),
        value: v.view(),
        output: out.view_mut(),
        layout: Layout::Bhsd,
        is_causal: true,
        scale: None,
        window_size: None,
    };
    attention_naive(&mut args).unwrap();
    out.as_slice::<f32>().unwrap().to_vec()
}

/// `attention_naive` behind a spec that takes BSHD only, and it checks it is given BSHD.
fn bshd_only_attention() -> KernelImpl {
    KernelImpl::attention(|args: &mut AttentionArgs<'_>| -> KernelResult {
        if args.layout != Layout::Bshd || !args.output.is_contiguous() {
            return Err(KernelError::Unsupported("this kernel takes contiguous BSHD only".into()));
        }
        attention_naive(args)
    })
}

#[test]
fn a_bshd_only_kernel_runs_on_bhsd_inputs_through_a_layout_transform() {
    let dispatcher = StaticDispatcherBuilder::new()
        .with_kernel(attention_spec("exec_bshd_only", Some(vec![Layout::Bshd])), bshd_only_attention(), CAUSAL, true)
        .with_config(DispatchConfig::builder().enable_transforms(true).build().unwrap())
        .build()
        .unwrap();
    let (result, output) = attend_bhsd(&dispatcher);
    let result = result.unwrap();
    assert_eq!((result.kernel_id.as_str(), result.was_fallback), ("exec_bshd_only", false));
    let reference = reference_bhsd();
    for (got, want) in output.iter().zip(&reference) {
        assert!((got - want).abs() <= 1e-6, "{output:?}\nvs\n{reference:?}");
    }
}

#[test]
fn without_transforms_a_kernel_is_never_run_on_a_layout_it_does_not_take() {
    let dispatcher = StaticDispatcherBuilder::new()
        .with_kernel(
            attention_spec("exec_bshd_only_off", Some(vec![Layout::Bshd])),
            bshd_only_attention(),
            CAUSAL,
            true,
        )
        .with_kernel(attention_spec("exec_any_layout", None), marking(5.0), CAUSAL, false)
        .with_config(DispatchConfig::builder().enable_transforms(false).build().unwrap())
        .build()
        .unwrap();
    let (result, output) = attend_bhsd(&dispatcher);
    let result = result.unwrap();
    assert_eq!((result.kernel_id.as_str(), result.was_fallback, output[0]), ("exec_any_layout", true, 5.0));
    let kernel = dispatcher.telemetry();
    let skipped = kernel.kernel(KernelId::new("exec_bshd_only_off").unwrap());
    assert!(skipped.is_none_or(|k| k.failures == 0 && k.panics == 0), "a skip is not a failure: {skipped:?}");

    // Alone in its chain, the skip is the error.
    let alone = StaticDispatcherBuilder::new()
        .with_kernel(
            attention_spec("exec_bshd_only_off", Some(vec![Layout::Bshd])),
            bshd_only_attention(),
            CAUSAL,
            true,
        )
        .with_config(DispatchConfig::builder().enable_transforms(false).build().unwrap())
        .build()
        .unwrap();
    let err = attend_bhsd(&alone).0.unwrap_err();
    assert_eq!(
        err.to_string(),
        "every kernel for `attention.causal` failed: exec_bshd_only_off skipped: it does not take BHSD tensors and layout transforms are off"
    );
    assert!(matches!(
        err,
        DispatchError::FallbackChainExhausted { ref attempts, .. } if attempts[0].1 == AttemptError::LayoutUnsupported(Layout::Bhsd)
    ));
}

/// Counts synchronisations; fails them when asked (an asynchronous device error).
struct CountingSync {
    calls: AtomicU64,
    fail: bool,
}

impl DeviceSync for CountingSync {
    fn synchronize(&self, kernel: KernelId) -> KernelResult {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.fail {
            return Err(KernelError::Backend { backend: "test", message: format!("{kernel}: illegal address") });
        }
        Ok(())
    }
}

#[test]
fn sync_after_execution_runs_the_hook_and_a_sync_error_is_the_kernels_failure() {
    let build = |sync: bool| {
        StaticDispatcherBuilder::new()
            .with_kernel(attention_spec("exec_sync_first", None), marking(1.0), CAUSAL, true)
            .with_kernel(attention_spec("exec_sync_second", None), marking(2.0), CAUSAL, false)
            .with_config(DispatchConfig::builder().sync_after_execution(sync).build().unwrap())
            .build()
            .unwrap()
    };
    // On, with a hook: once per kernel that returned Ok.
    let dispatcher = build(true);
    let hook = Arc::new(CountingSync { calls: AtomicU64::new(0), fail: false });
    dispatcher.set_device_sync(hook.clone()).is_ok().then_some(()).expect("installed");
    assert!(dispatcher.set_device_sync(hook.clone()).is_err(), "the first hook stays");
    assert_eq!(attend_bhsd(&dispatcher).1[0], 1.0);
    assert_eq!(hook.calls.load(Ordering::Relaxed), 1);

    // A failing sync is the kernel's failure: counted, and the chain moves on (and the
    // fallback's sync fails as well here, so the chain is exhausted).
    let failing = build(true);
    let bad = Arc::new(CountingSync { calls: AtomicU64::new(0), fail: true });
    failing.set_device_sync(bad.clone()).is_ok().then_some(()).expect("installed");
    let err = attend_bhsd(&failing).0.unwrap_err();
    assert!(err.to_string().contains("exec_sync_first failed: test: exec_sync_first: illegal address"), "{err}");
    assert_eq!(bad.calls.load(Ordering::Relaxed), 2);
    assert_eq!(failing.telemetry().kernel(KernelId::new("exec_sync_first").unwrap()).unwrap().failures, 1);

    // Off: the hook is never called.
    let off = build(false);
    let unused = Arc::new(CountingSync { calls: AtomicU64::new(0), fail: true });
    off.set_device_sync(unused.clone()).is_ok().then_some(()).expect("installed");
    assert_eq!(attend_bhsd(&off).1[0], 1.0);
    assert_eq!(unused.calls.load(Ordering::Relaxed), 0);
}
