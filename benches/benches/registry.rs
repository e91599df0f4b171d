//! Registry lookups and constraint checks, next to the hash maps a hand-rolled registry
//! would use.
//!
//! `cargo bench -p layerzero-benches --bench registry`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use layerzero::registry::KernelRegistry;
use layerzero::types::{
    DType, DimConstraint, KernelId, KernelSpec, Operation, OperationType, Platform, SelectionContext, Support,
};
use rustc_hash::FxHashMap;

const KERNELS: usize = 256;

fn specs() -> Vec<KernelSpec> {
    (0..KERNELS)
        .map(|i| {
            let mut spec = KernelSpec::new(&format!("bench_kernel_{i}"), Platform::Cuda)
                .unwrap()
                .for_operation(OperationType::ALL[i % OperationType::ALL.len()])
                .with_dtypes([DType::F16, DType::BF16]);
            spec.constraints.head_dim = Some(DimConstraint::Range { min: 64, max: 256, multiple_of: 64 });
            spec.constraints.causal = Support::Supported;
            spec.constraints.gqa = true;
            spec
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let registry = KernelRegistry::new();
    registry.register_all(specs()).unwrap();
    let snapshot = registry.snapshot();
    let id = KernelId::lookup("bench_kernel_137").unwrap();

    let by_string: HashMap<String, usize> = (0..KERNELS).map(|i| (format!("bench_kernel_{i}"), i)).collect();
    let by_id: FxHashMap<KernelId, usize> = snapshot.iter().enumerate().map(|(i, s)| (s.id, i)).collect();

    let mut group = c.benchmark_group("kernel lookup");
    group.bench_function("baseline: HashMap<String> by &str (SipHash)", |b| {
        b.iter(|| by_string.get(black_box("bench_kernel_137")))
    });
    group.bench_function("baseline: FxHashMap<KernelId>", |b| b.iter(|| by_id.get(black_box(&id))));
    group.bench_function("KernelSnapshot::get (held snapshot)", |b| b.iter(|| snapshot.get(black_box(id)).is_some()));
    group.bench_function("KernelRegistry::get (load + Arc clone)", |b| b.iter(|| registry.get(black_box(id))));
    group.bench_function("KernelSnapshot::by_operation", |b| {
        b.iter(|| snapshot.by_operation(black_box(Operation::Known(OperationType::NormRms))).len())
    });
    group.finish();
}

fn checks(c: &mut Criterion) {
    let spec = &specs()[0];
    let ctx = SelectionContext::builder()
        .batch_size(8)
        .seq_len(2048)
        .num_heads(32)
        .num_kv_heads(8)
        .head_dim(128)
        .dtype(DType::BF16)
        .platform(Platform::Cuda)
        .is_causal(true)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("constraint check");
    group.bench_function("KernelSpec::check, passing context", |b| b.iter(|| black_box(spec).check(black_box(&ctx))));
    group.bench_function("operation parse (once per config load)", |b| {
        b.iter(|| Operation::parse(black_box("attention.causal")))
    });
    group.finish();
}

criterion_group!(benches, lookups, checks);
criterion_main!(benches);
