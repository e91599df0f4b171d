//! Hot reload: the time of one `HotReloadDispatcher::reload` (read the file, parse,
//! schema-check, compile, check its kernels against the registry, swap) for rules files
//! of 10, 100 and 1000 rules (target ≤ 5 ms), next to its parts measured alone: reading
//! the file, and `ConfigSchema::load` (parse, check, compile) of the same text.
//!
//! Also the price of hot reload on the hot path: a dispatch on a cache hit through a
//! `HotReloadDispatcher` beside the same call through a `ConfigDrivenDispatcher` (the
//! difference is the call's epoch marker, one `ArcSwap` load), with a no-op kernel.
//!
//! `cargo bench -p layerzero-benches --bench reload`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use layerzero::config::{ConfigSchema, DispatchConfig};
use layerzero::dispatch::{ConfigDrivenDispatcher, Dispatcher, HotReloadDispatcher};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::types::{
    DType, KernelImpl, KernelSpec, NormArgs, OpArgs, Operation, OperationType, Platform, SelectionContext, Tensor,
    TensorViewMut,
};

const KERNELS: usize = 8;

fn kernels() -> Arc<KernelRegistry> {
    let registry = Arc::new(KernelRegistry::new());
    for i in 0..KERNELS {
        let spec = KernelSpec::new(&format!("reload_bench_{i}"), Platform::Cpu)
            .unwrap()
            .for_operation(OperationType::AttentionCausal)
            .for_operation(OperationType::NormRms)
            .with_dtypes([DType::F16, DType::BF16, DType::F32]);
        // Specs only: a reload reads the registry's names, it runs no kernel.
        registry.register(spec).unwrap();
    }
    registry
}

/// A rules file of `n` rules over two operations, with two conditions each, a lock and a
/// fallback chain.
fn rules_file(n: usize) -> String {
    let mut yaml = String::from("version: \"1.0\"\ndefaults:\n  fallback_policy: reload_bench_0\ndispatch_rules:\n");
    for i in 0..n {
        let operation = if i % 2 == 0 { "attention.*" } else { "rms_norm" };
        yaml.push_str(&format!(
            "  - operation: \"{operation}\"\n    conditions:\n      batch_size_gte: {}\n      dtype: [float16, bfloat16]\n    kernel: reload_bench_{}\n    priority: {}\n",
            1 + i,
            i % KERNELS,
            i % 1000
        ));
    }
    yaml.push_str("fallback_chains:\n  rms_norm: [reload_bench_1, reload_bench_2]\n");
    yaml
}

fn bench_reload(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("layerzero-reload-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernels = kernels();
    let mut group = c.benchmark_group("reload");
    for rules in [10usize, 100, 1000] {
        let path: PathBuf = dir.join(format!("rules_{rules}.yaml"));
        let text = rules_file(rules);
        std::fs::write(&path, &text).unwrap();
        let config = DispatchConfig::builder().config_path(Some(path.display().to_string())).build().unwrap();
        let dispatcher =
            HotReloadDispatcher::new(Arc::clone(&kernels), Arc::new(BackendRegistry::detect()), config, None).unwrap();
        println!("reload/{rules} rules: {} bytes", text.len());
        group.bench_with_input(BenchmarkId::new("read_file", rules), &path, |b, path| {
            b.iter(|| black_box(std::fs::read(path).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("parse_check_compile", rules), &text, |b, text| {
            b.iter(|| black_box(ConfigSchema.load(text).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("reload_validated", rules), &dispatcher, |b, dispatcher| {
            b.iter(|| black_box(dispatcher.reload(true, Duration::ZERO).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("reload_unvalidated", rules), &dispatcher, |b, dispatcher| {
            b.iter(|| black_box(dispatcher.reload(false, Duration::ZERO).unwrap()))
        });
        let stats = dispatcher.stats();
        println!(
            "reload/{rules} rules: last reload {:.3} ms (stats.last_reload_time_ms), {} reloads, {} failed",
            stats.last_reload_time_ms, stats.total_reloads, stats.failed_reloads
        );
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench_dispatch_hit(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("layerzero-reload-bench-hit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let registry = Arc::new(KernelRegistry::new());
    let spec = KernelSpec::new("reload_bench_noop", Platform::Cpu).unwrap().for_operation(OperationType::NormRms);
    registry.register_with_impl(spec, KernelImpl::norm(|_: &mut NormArgs<'_>| Ok(()))).unwrap();
    let path = dir.join("kernels.yaml");
    let rules = "version: \"1.0\"\nkernel_locks: {rms_norm: reload_bench_noop}\n";
    std::fs::write(&path, rules).unwrap();
    let config = DispatchConfig::builder()
        .config_path(Some(path.display().to_string()))
        .enable_telemetry(false)
        .record_timing(false)
        .build()
        .unwrap();
    let backends = Arc::new(BackendRegistry::detect());
    let hot = HotReloadDispatcher::new(Arc::clone(&registry), Arc::clone(&backends), config.clone(), None).unwrap();
    let policy = ConfigSchema.load(rules).unwrap().compiled;
    let plain = ConfigDrivenDispatcher::new(registry, backends, config, policy, None).unwrap();

    let input = Tensor::zeros(&[1, 8], DType::F32).unwrap();
    let weight = Tensor::zeros(&[8], DType::F32).unwrap();
    let mut out = vec![0f32; 8];
    let context = SelectionContext::builder().build().unwrap();
    let rms: Operation = OperationType::NormRms.into();
    let mut group = c.benchmark_group("dispatch_hit");
    for (name, dispatcher) in [("config", &plain as &dyn Dispatcher), ("hot_reload", &hot as &dyn Dispatcher)] {
        group.bench_function(name, |b| {
            let output = TensorViewMut::from_slice(&mut out, &[1, 8]).unwrap();
            let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), output, 1e-6));
            b.iter(|| black_box(dispatcher.dispatch(rms, &mut args, Some(&context)).unwrap()))
        });
    }
    group.finish();
    drop(hot);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench_reload, bench_dispatch_hit
}
criterion_main!(benches);
