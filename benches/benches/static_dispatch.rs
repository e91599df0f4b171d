//! STATIC mode's router (`#[static_dispatch]`) next to a direct call of the same kernel and
//! the ways a hand-rolled registry dispatches: a `dyn Trait` table, a
//! `HashMap<String, Box<dyn Fn>>` (SipHash and FxHash), and `KernelImpl` (an `Arc<dyn Fn>`).
//!
//! The kernel does nothing (`#[inline(never)]`, so every variant pays one real call), which
//! leaves the dispatch as the whole difference. Target (PERF.md): the router within 1 ns of
//! the direct call.
//!
//! In a release build the router's `dispatch` is a jump on the operation, one compare of the
//! arguments' kind and a direct `call` of the kernel; the typed fast path (`rms_norm(args)`)
//! is the same instructions as the direct call (read with `objdump -d` on the bench binary).
//!
//! `cargo bench -p layerzero-benches --bench static_dispatch`

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use layerzero::static_dispatch;
use layerzero::types::{
    ArgsKind, AttentionArgs, DType, KernelError, KernelImpl, KernelResult, MatmulArgs, NormArgs, OpArgs, OperationType,
    RopeArgs, SwigluArgs, Tensor, TensorViewMut,
};
use rustc_hash::FxHashMap;

/// The kernel every variant calls: reads one field so the call is not a no-op to the optimiser.
#[inline(never)]
fn rms_norm_noop(args: &mut NormArgs<'_>) -> KernelResult {
    black_box(args.eps);
    Ok(())
}

#[inline(never)]
fn layer_norm_noop(args: &mut NormArgs<'_>) -> KernelResult {
    black_box(args.eps + 1.0);
    Ok(())
}

#[inline(never)]
fn attention_noop(args: &mut AttentionArgs<'_>) -> KernelResult {
    black_box(args.is_causal);
    Ok(())
}

#[inline(never)]
fn rope_noop(args: &mut RopeArgs<'_>) -> KernelResult {
    black_box(args.position_offset);
    Ok(())
}

#[inline(never)]
fn swiglu_noop(args: &mut SwigluArgs<'_>) -> KernelResult {
    black_box(&args.output);
    Ok(())
}

#[inline(never)]
fn matmul_noop(args: &mut MatmulArgs<'_>) -> KernelResult {
    black_box(&args.output);
    Ok(())
}

/// Every operation mapped, so the router's `match` is as wide as it gets (11 operations).
#[static_dispatch(
    "attention.causal" => attention_noop,
    "attention.full" => attention_noop,
    "attention.cross" => attention_noop,
    "attention.sliding_window" => attention_noop,
    "attention.decode" => attention_noop,
    "attention.prefill" => attention_noop,
    "rms_norm" => rms_norm_noop,
    "layer_norm" => layer_norm_noop,
    "rope" => rope_noop,
    "swiglu" => swiglu_noop,
    "matmul" => matmul_noop,
    exhaustive,
)]
struct BenchRouter;

/// The `dyn Trait` registry: one trait object per operation, indexed by the operation.
trait Kernel {
    fn run(&self, args: &mut OpArgs<'_>) -> KernelResult;
}

struct Typed<A>(A);

macro_rules! dyn_kernel {
    ($($variant:ident: $args:ident),*) => {$(
        impl Kernel for Typed<fn(&mut $args<'_>) -> KernelResult> {
            fn run(&self, args: &mut OpArgs<'_>) -> KernelResult {
                match args {
                    OpArgs::$variant(args) => (self.0)(args),
                    other => Err(KernelError::WrongArguments { expected: ArgsKind::$variant, actual: other.kind() }),
                }
            }
        }
    )*};
}
dyn_kernel!(Attention: AttentionArgs, Norm: NormArgs, Rope: RopeArgs, Swiglu: SwigluArgs, Matmul: MatmulArgs);

fn dyn_kernel(op: OperationType) -> Box<dyn Kernel> {
    match op {
        OperationType::NormRms => Box::new(Typed::<fn(&mut NormArgs<'_>) -> KernelResult>(rms_norm_noop)),
        OperationType::NormLayer => Box::new(Typed::<fn(&mut NormArgs<'_>) -> KernelResult>(layer_norm_noop)),
        OperationType::Rope => Box::new(Typed::<fn(&mut RopeArgs<'_>) -> KernelResult>(rope_noop)),
        OperationType::Swiglu => Box::new(Typed::<fn(&mut SwigluArgs<'_>) -> KernelResult>(swiglu_noop)),
        OperationType::Matmul => Box::new(Typed::<fn(&mut MatmulArgs<'_>) -> KernelResult>(matmul_noop)),
        _ => Box::new(Typed::<fn(&mut AttentionArgs<'_>) -> KernelResult>(attention_noop)),
    }
}

fn kernel_impl(op: OperationType) -> KernelImpl {
    match op {
        OperationType::NormRms => KernelImpl::norm(rms_norm_noop),
        OperationType::NormLayer => KernelImpl::norm(layer_norm_noop),
        OperationType::Rope => KernelImpl::rope(rope_noop),
        OperationType::Swiglu => KernelImpl::swiglu(swiglu_noop),
        OperationType::Matmul => KernelImpl::matmul(matmul_noop),
        _ => KernelImpl::attention(attention_noop),
    }
}

type BoxedKernel = Box<dyn Fn(&mut OpArgs<'_>) -> KernelResult>;

fn boxed(op: OperationType) -> BoxedKernel {
    let kernel = kernel_impl(op);
    Box::new(move |args| kernel.call(args))
}

fn norm_args<'a>(input: &'a Tensor, weight: &'a Tensor, out: &'a mut [f32; 8]) -> NormArgs<'a> {
    NormArgs {
        input: input.view(),
        weight: weight.view(),
        bias: None,
        output: TensorViewMut::from_slice(out, &[2, 4]).expect("8 elements for [2, 4]"),
        eps: 1e-6,
        residual: None,
    }
}

fn dispatch(c: &mut Criterion) {
    let input = Tensor::zeros(&[2, 4], DType::F32).expect("a small tensor");
    let weight = Tensor::zeros(&[4], DType::F32).expect("a small tensor");
    let mut out = [0f32; 8];
    let op = OperationType::NormRms;

    let dyn_table: Vec<Box<dyn Kernel>> = OperationType::ALL.into_iter().map(dyn_kernel).collect();
    let sip: HashMap<String, BoxedKernel> =
        OperationType::ALL.into_iter().map(|op| (op.to_string(), boxed(op))).collect();
    let fx: FxHashMap<String, BoxedKernel> =
        OperationType::ALL.into_iter().map(|op| (op.to_string(), boxed(op))).collect();
    let impls: Vec<KernelImpl> = OperationType::ALL.into_iter().map(kernel_impl).collect();

    let mut group = c.benchmark_group("dispatch of a no-op rms_norm kernel");
    group.bench_function("baseline: direct call", |b| {
        let mut args = norm_args(&input, &weight, &mut out);
        b.iter(|| rms_norm_noop(black_box(&mut args)))
    });
    group.bench_function("#[static_dispatch] dispatch(op, OpArgs)", |b| {
        let mut args = OpArgs::Norm(norm_args(&input, &weight, &mut out));
        b.iter(|| BenchRouter.dispatch(black_box(op), black_box(&mut args)))
    });
    group.bench_function("#[static_dispatch] fast path rms_norm(args)", |b| {
        let mut args = norm_args(&input, &weight, &mut out);
        b.iter(|| black_box(&BenchRouter).rms_norm(black_box(&mut args)))
    });
    group.bench_function("&dyn Trait table by op", |b| {
        let mut args = OpArgs::Norm(norm_args(&input, &weight, &mut out));
        b.iter(|| dyn_table[black_box(op) as usize].run(black_box(&mut args)))
    });
    group.bench_function("KernelImpl (Arc<dyn Fn>) table by op", |b| {
        let mut args = OpArgs::Norm(norm_args(&input, &weight, &mut out));
        b.iter(|| impls[black_box(op) as usize].call(black_box(&mut args)))
    });
    group.bench_function("HashMap<String, Box<dyn Fn>> by &str (SipHash)", |b| {
        let mut args = OpArgs::Norm(norm_args(&input, &weight, &mut out));
        b.iter(|| match sip.get(black_box("rms_norm")) {
            Some(kernel) => kernel(black_box(&mut args)),
            None => Err(KernelError::NoKernel { operation: op.into() }),
        })
    });
    group.bench_function("FxHashMap<String, Box<dyn Fn>> by &str", |b| {
        let mut args = OpArgs::Norm(norm_args(&input, &weight, &mut out));
        b.iter(|| match fx.get(black_box("rms_norm")) {
            Some(kernel) => kernel(black_box(&mut args)),
            None => Err(KernelError::NoKernel { operation: op.into() }),
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = dispatch
}
criterion_main!(benches);
