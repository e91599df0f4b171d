//! GPU timings of LayerZero's CUDA kernels on the anchor shapes of `../shared/GPU.md` §5,
//! next to the device-to-device copy ceiling measured in the same run (2 GiB) and a copy of
//! the bytes each shape moves, plus the host cost of a launch through LayerZero against a
//! raw cudarc launch of the same kernel.
//!
//! `cargo bench -p layerzero-benches --features cuda --bench gpu_bench` on a machine with a
//! GPU, or through `cargo xtask gpu-bundle` for the device machine. PyTorch eager,
//! torch.compile and liger-kernel on the same shapes: `python3 benches/gpu/peers.py`.
//!
//! With `LZ_BENCH_LAUNCH_ONLY` set, only the launch-overhead rows run (about a second), so
//! that many processes can be run in a row: the ratios move by a few percent from one
//! process to the next, more than the spread within one process (and as much with address
//! randomisation off or the process pinned to one core: it is not the layout in memory).
//! `LZ_BENCH_LAUNCH_PROCESSES=30` runs them in 30 processes and summarises each path's
//! ratio over those: its median, a 95% interval of the median, and the processes over the
//! 1.05 target.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use layerzero::dispatch::{DispatchConfig, DispatchMode, Dispatcher, create_dynamic_dispatcher};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::types::{DType, NormArgs, OpArgs, OperationType, RopeStyle, Tensor};
use layerzero_kernels::cuda::{
    self, CudaDevice, LayerNormVariant, RmsNormVariant, RopeTables, RopeVariant, SwigluDeviceInput, SwigluVariant, ptx,
};

const ITERATIONS: usize = 100;

/// Median device times of one piece of work, in milliseconds, measured two ways.
#[derive(Clone, Copy)]
struct Timing {
    /// As triton's `do_bench` (peers.py) measures: a 256 MiB memset (the L2 flush) is queued
    /// before each start event, so the card is busy while the host queues the launch and
    /// no input is left warm in L2. The figure compared with the peers.
    busy: f64,
    /// With the stream idle when the start event is recorded (this bench's former method):
    /// the host's time to queue the launch is counted in, as a caller that waits on every
    /// launch would see it.
    idle: f64,
}

/// Times `run` both ways after a warm-up of at least 25 ms (as `do_bench`: after seconds of
/// host work the card's clocks are down, and a few launches are not enough to bring them
/// back); `flush` is the 256 MiB buffer cleared before each busy sample.
fn time_ms(gpu: &CudaDevice, flush: &mut CudaSlice<u8>, mut run: impl FnMut()) -> Timing {
    let warm_up = Instant::now();
    while warm_up.elapsed().as_millis() < 25 {
        run();
        gpu.synchronize().expect("sync");
    }
    let stream = gpu.stream();
    // cudarc's default events do not time; ask for timing ones.
    let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let median = |mut samples: Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    };
    let events: Vec<_> = (0..ITERATIONS)
        .map(|_| {
            stream.memset_zeros(flush).expect("flush");
            let start = stream.record_event(timing).expect("event");
            run();
            (start, stream.record_event(timing).expect("event"))
        })
        .collect();
    gpu.synchronize().expect("sync");
    let busy = median(events.iter().map(|(start, end)| f64::from(start.elapsed_ms(end).expect("elapsed"))).collect());
    let idle = median(
        (0..ITERATIONS)
            .map(|_| {
                gpu.synchronize().expect("sync");
                let start = stream.record_event(timing).expect("event");
                run();
                let end = stream.record_event(timing).expect("event");
                end.synchronize().expect("sync");
                f64::from(start.elapsed_ms(&end).expect("elapsed"))
            })
            .collect(),
    );
    Timing { busy, idle }
}

fn random_tensor(gpu: &CudaDevice, dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_f32(&values, dims, DType::BF16).expect("tensor").to_cuda(gpu.stream()).expect("upload")
}

/// A device-to-device copy that moves `bytes` (half read, half written), the anchor of a
/// group of rows that move as many: a copy of 2 GiB (the ceiling) runs faster than one of
/// a few hundred MiB, so each group's "% of copy" is also worth reading against its own.
fn copy_row(gpu: &CudaDevice, flush: &mut CudaSlice<u8>, shape: &str, bytes: f64, ceiling: f64) {
    let half = (bytes / 2.0) as usize;
    let src = gpu.stream().alloc_zeros::<u8>(half).expect("alloc");
    let mut dst = gpu.stream().alloc_zeros::<u8>(half).expect("alloc");
    let t = time_ms(gpu, flush, || gpu.stream().memcpy_dtod(&src, &mut dst).expect("copy"));
    row("copy d2d, the same bytes", shape, t, 2.0 * half as f64, ceiling);
}

fn row(name: &str, shape: &str, t: Timing, bytes: f64, ceiling: f64) {
    let gbps = bytes / t.busy / 1e6;
    println!(
        "{name:<40} {shape:<18} {:>8.1} µs {gbps:>6.0} GB/s {:>6.1}% of copy   (idle start: {:>6.0} GB/s)",
        t.busy * 1e3,
        100.0 * gbps / ceiling,
        bytes / t.idle / 1e6
    );
}

fn main() {
    // Before discovery: the processes that measure open the GPU, this one does not.
    if let Some(count) = std::env::var_os("LZ_BENCH_LAUNCH_PROCESSES") {
        launch_processes(&count);
        return;
    }
    let devices: Arc<[CudaDevice]> = cuda::discover().expect("discovery").into();
    let Some(gpu) = devices.first() else {
        println!("skipping: no CUDA GPU on this machine");
        return;
    };
    if let Some(dir) = std::env::var_os("LZ_PARITY_DIR") {
        parity_dump(gpu, std::path::Path::new(&dir));
        return;
    }
    if std::env::var_os("LZ_BENCH_LAUNCH_ONLY").is_some() {
        launch_overhead(&devices, gpu);
        return;
    }
    let info = cuda::backend_info(&devices);
    println!("{} ({}), {}", gpu.info().name, gpu.device(), info.version.unwrap_or_default());

    println!(
        "Timed as peers.py's do_bench: median of {ITERATIONS}, a 256 MiB L2 flush queued before each start event; \
         'idle start' is the median with the stream idle at the start event (host launch time counted in)."
    );
    let mut flush = gpu.stream().alloc_zeros::<u8>(256 << 20).expect("alloc");
    let flush = &mut flush;

    // The copy ceiling: 2 GiB device to device, read + write counted.
    let copy_bytes = 2usize << 30;
    let src = gpu.stream().alloc_zeros::<u8>(copy_bytes).expect("alloc");
    let mut dst = gpu.stream().alloc_zeros::<u8>(copy_bytes).expect("alloc");
    let copy = time_ms(gpu, flush, || gpu.stream().memcpy_dtod(&src, &mut dst).expect("copy"));
    let ceiling = 2.0 * copy_bytes as f64 / copy.busy / 1e6;
    drop((src, dst));
    row("copy d2d (ceiling)", "2 GiB", copy, 2.0 * copy_bytes as f64, ceiling);

    let e = 2.0; // bytes per bf16
    for (rows, hidden) in [(16384, 4096), (65536, 4096), (4096, 8192)] {
        let x = random_tensor(gpu, &[rows, hidden], 1);
        let w = random_tensor(gpu, &[hidden], 2);
        let mut y = random_tensor(gpu, &[rows, hidden], 3);
        let bytes = 2.0 * (rows * hidden) as f64 * e + hidden as f64 * e;
        copy_row(gpu, flush, &format!("{rows}x{hidden}"), bytes, ceiling);
        let tuned = [1, 2, 4, 8].map(|packs_per_thread| RmsNormVariant::BlockTuned { packs_per_thread });
        for variant in [RmsNormVariant::Block, RmsNormVariant::Warp, RmsNormVariant::Scalar].into_iter().chain(tuned) {
            if gpu.rms_norm(variant, &x, None, &w, &mut y, 1e-6).is_err() {
                continue; // outside this variant's limits
            }
            let ms = time_ms(gpu, flush, || gpu.rms_norm(variant, &x, None, &w, &mut y, 1e-6).expect("rms_norm"));
            row(&format!("rms_norm {variant:?}"), &format!("{rows}x{hidden}"), ms, bytes, ceiling);
        }
    }
    {
        let (rows, hidden) = (16384, 4096);
        let x = random_tensor(gpu, &[rows, hidden], 4);
        let r = random_tensor(gpu, &[rows, hidden], 5);
        let w = random_tensor(gpu, &[hidden], 6);
        let mut y = random_tensor(gpu, &[rows, hidden], 7);
        let mut r_out = random_tensor(gpu, &[rows, hidden], 8);
        let bytes = 4.0 * (rows * hidden) as f64 * e + hidden as f64 * e;
        copy_row(gpu, flush, &format!("{rows}x{hidden}"), bytes, ceiling);
        let tuned = [1, 2, 4, 8].map(|packs_per_thread| RmsNormVariant::BlockTuned { packs_per_thread });
        for variant in [RmsNormVariant::Block, RmsNormVariant::Scalar].into_iter().chain(tuned) {
            let ms = time_ms(gpu, flush, || {
                gpu.rms_norm(variant, &x, Some((&r, &mut r_out)), &w, &mut y, 1e-6).expect("add+rms_norm")
            });
            row(&format!("add+rms_norm {variant:?} (4 passes)"), &format!("{rows}x{hidden}"), ms, bytes, ceiling);
        }
    }
    {
        let (rows, hidden) = (16384, 4096);
        let x = random_tensor(gpu, &[rows, hidden], 20);
        let w = random_tensor(gpu, &[hidden], 21);
        let b = random_tensor(gpu, &[hidden], 22);
        let mut y = random_tensor(gpu, &[rows, hidden], 23);
        let bytes = 2.0 * (rows * hidden) as f64 * e + 2.0 * hidden as f64 * e;
        for variant in [LayerNormVariant::Block, LayerNormVariant::Scalar] {
            let ms =
                time_ms(gpu, flush, || gpu.layer_norm(variant, &x, &w, Some(&b), &mut y, 1e-5).expect("layer_norm"));
            row(&format!("layer_norm {variant:?}"), &format!("{rows}x{hidden}"), ms, bytes, ceiling);
        }
    }
    {
        // NeoX rope in place on q [16384, 32, 128] and k [16384, 8, 128], token-major.
        let (tokens, head_dim) = (16384, 128);
        let mut q = random_tensor(gpu, &[1, tokens, 32, head_dim], 24);
        let mut k = random_tensor(gpu, &[1, tokens, 8, head_dim], 25);
        let angles: Vec<f32> = (0..tokens * head_dim / 2).map(|i| (i % 977) as f32 * 0.01).collect();
        let cos =
            Tensor::from_f32(&angles.iter().map(|a| a.cos()).collect::<Vec<_>>(), &[tokens, head_dim / 2], DType::F32)
                .expect("cos")
                .to_cuda(gpu.stream())
                .expect("upload");
        let sin =
            Tensor::from_f32(&angles.iter().map(|a| a.sin()).collect::<Vec<_>>(), &[tokens, head_dim / 2], DType::F32)
                .expect("sin")
                .to_cuda(gpu.stream())
                .expect("upload");
        // q and k read and written, cos and sin read once per token.
        let bytes = 2.0 * (tokens * 40 * head_dim) as f64 * e + 2.0 * (tokens * head_dim / 2) as f64 * 4.0;
        copy_row(gpu, flush, "16384x(32+8)x128", bytes, ceiling);
        for variant in [RopeVariant::Vector, RopeVariant::Scalar] {
            let ms = time_ms(gpu, flush, || {
                gpu.rope_in_place(variant, RopeStyle::Neox, &mut q, RopeTables { cos: &cos, sin: &sin }, 0)
                    .expect("rope q");
                gpu.rope_in_place(variant, RopeStyle::Neox, &mut k, RopeTables { cos: &cos, sin: &sin }, 0)
                    .expect("rope k");
            });
            row(&format!("rope NeoX {variant:?}, q, k: 2 launches"), "16384x(32+8)x128", ms, bytes, ceiling);
            let ms = time_ms(gpu, flush, || {
                gpu.rope_qk_in_place(variant, RopeStyle::Neox, &mut q, &mut k, RopeTables { cos: &cos, sin: &sin }, 0)
                    .expect("rope q+k");
            });
            row(&format!("rope NeoX {variant:?}, q+k 1 launch"), "16384x(32+8)x128", ms, bytes, ceiling);
        }
    }
    {
        let (rows, inter) = (16384, 14336);
        let gate = random_tensor(gpu, &[rows, inter], 9);
        let up = random_tensor(gpu, &[rows, inter], 10);
        let gate_up = random_tensor(gpu, &[rows, 2 * inter], 11);
        let mut out = random_tensor(gpu, &[rows, inter], 12);
        let bytes = 3.0 * (rows * inter) as f64 * e;
        copy_row(gpu, flush, &format!("{rows}x{inter}"), bytes, ceiling);
        for variant in [SwigluVariant::Vector, SwigluVariant::Scalar] {
            let ms = time_ms(gpu, flush, || {
                gpu.swiglu(variant, SwigluDeviceInput::Separate { gate: &gate, up: &up }, &mut out).expect("swiglu")
            });
            row(&format!("swiglu {variant:?}, two inputs"), &format!("{rows}x{inter}"), ms, bytes, ceiling);
            let ms = time_ms(gpu, flush, || {
                gpu.swiglu(variant, SwigluDeviceInput::Fused(&gate_up), &mut out).expect("swiglu")
            });
            row(&format!("swiglu {variant:?}, fused gate-up"), &format!("{rows}x2*{inter}"), ms, bytes, ceiling);
        }
    }

    launch_overhead(&devices, gpu);
    matmul_rows(gpu, flush);
}

/// Host cost per launch of a tiny rms_norm (one row of 64): through LayerZero's checked
/// entry point, through a DynamicDispatcher with its defaults (the context from the device
/// views, a selection-cache hit, the breaker, the executor, timing and telemetry; issue
/// 12's target: at most 1.05x the raw launch), the same with timing off (telemetry's
/// counts only), with telemetry and timing off and its prepared call, through a raw cudarc
/// `launch_builder` launch of the same kernel and arguments, and through `cuLaunchKernel`
/// alone; then cudarc's `bind_to_thread` alone.
///
/// Each is timed in batches of 500 launches with the stream drained between batches, so
/// the launch queue never fills and the figure is the host's, not the card's; 60 batches
/// each, the seven taking turns in a rotating order so that clock or driver drift favours
/// none; the median batch, per launch.
fn launch_overhead(devices: &Arc<[CudaDevice]>, gpu: &CudaDevice) {
    let x = random_tensor(gpu, &[1, 64], 13);
    let w = random_tensor(gpu, &[64], 14);
    let mut y = random_tensor(gpu, &[1, 64], 15);
    let mut y_dispatch = random_tensor(gpu, &[1, 64], 16);
    let mut y_untimed = random_tensor(gpu, &[1, 64], 17);
    let mut y_prepared = random_tensor(gpu, &[1, 64], 18);
    let module = gpu.stream().context().load_module(cudarc::nvrtc::Ptx::from_src(ptx::NORM)).expect("module");
    let function = module.load_function("rms_norm_warp_bf16_v1").expect("function");

    // Only the warp variant is registered beside the CPU kernels, so selection picks the
    // kernel the raw launch runs.
    let kernels = KernelRegistry::new();
    layerzero_kernels::register_cpu_kernels(&kernels).expect("cpu kernels");
    let warp: Vec<_> = cuda::cuda_kernels(Arc::clone(devices))
        .expect("specs")
        .into_iter()
        .filter(|(spec, _)| spec.id.as_str() == "cuda.rms_norm.warp")
        .collect();
    kernels.register_all_with_impls(warp).expect("register");
    let kernels = Arc::new(kernels);
    let backends = BackendRegistry::detect();
    cuda::register_cuda_backend(&backends, devices).expect("backend");
    let backends = Arc::new(backends);
    let defaults = DispatchConfig::builder().mode(DispatchMode::Dynamic).build().expect("config");
    let quiet = defaults.to_builder().enable_telemetry(false).record_timing(false).build().expect("config");
    let counts_only = defaults.to_builder().record_timing(false).build().expect("config");
    let dispatcher =
        create_dynamic_dispatcher(Arc::clone(&kernels), Arc::clone(&backends), defaults, true).expect("dispatcher");
    let untimed =
        create_dynamic_dispatcher(Arc::clone(&kernels), Arc::clone(&backends), quiet, true).expect("dispatcher");
    let counting = create_dynamic_dispatcher(kernels, backends, counts_only, true).expect("dispatcher");
    let mut args = OpArgs::Norm(NormArgs::new(x.view(), w.view(), y_dispatch.view_mut(), 1e-6));
    let chosen = dispatcher.dispatch(OperationType::NormRms.into(), &mut args, None).expect("dispatch").kernel_id;
    let context = args.context().expect("a context");
    let prepared = untimed.prepare(OperationType::NormRms.into(), &context).expect("a selection");
    let mut untimed_args = OpArgs::Norm(NormArgs::new(x.view(), w.view(), y_untimed.view_mut(), 1e-6));
    let mut prepared_args = OpArgs::Norm(NormArgs::new(x.view(), w.view(), y_prepared.view_mut(), 1e-6));
    let mut y_counting = random_tensor(gpu, &[1, 64], 19);
    let mut counting_args = OpArgs::Norm(NormArgs::new(x.view(), w.view(), y_counting.view_mut(), 1e-6));

    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let (xs, ws) = (x.cuda_bytes().expect("x"), w.cuda_bytes().expect("w"));
    let (null, zero, stride, rows, hidden, eps) = (0u64, 0i64, 64i64, 1i32, 64i32, 1e-6f32);
    let mut ys = y.cuda_bytes_mut().expect("y").clone();
    let (x_address, y_address, w_address) = {
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        (xs.device_ptr(gpu.stream()).0, ys.device_ptr_mut(gpu.stream()).0, ws.device_ptr(gpu.stream()).0)
    };
    let mut layerzero = || gpu.rms_norm(RmsNormVariant::Warp, &x, None, &w, &mut y, 1e-6).expect("launch");
    let mut dispatch = || {
        dispatcher.dispatch(OperationType::NormRms.into(), &mut args, None).expect("dispatch");
    };
    let mut raw = || {
        let mut builder = gpu.stream().launch_builder(&function);
        builder.arg(xs).arg(&stride).arg(&null).arg(&zero).arg(&null).arg(&zero).arg(ws).arg(&mut ys);
        builder.arg(&stride).arg(&rows).arg(&hidden).arg(&eps);
        // SAFETY: the arguments match rms_norm_warp_bf16_v1 (see kernels/norm.cu) and the
        // buffers hold one row of 64 elements, which is all the launch touches.
        unsafe { builder.launch(cfg) }.expect("raw launch");
    };
    let mut bare = || {
        fn param<T>(value: &T) -> *mut std::ffi::c_void {
            (value as *const T).cast_mut().cast()
        }
        let mut params = [
            param(&x_address),
            param(&stride),
            param(&null),
            param(&zero),
            param(&null),
            param(&zero),
            param(&w_address),
            param(&y_address),
            param(&stride),
            param(&rows),
            param(&hidden),
            param(&eps),
        ];
        // SAFETY: as the raw launch above: the same kernel, arguments and buffers (which
        // outlive every launch), on the device's stream, whose context is current.
        unsafe {
            cudarc::driver::result::launch_kernel(
                function.cu_function(),
                cfg.grid_dim,
                cfg.block_dim,
                0,
                gpu.stream().cu_stream(),
                &mut params,
            )
        }
        .expect("bare launch");
    };
    let mut dispatch_untimed = || {
        untimed.dispatch(OperationType::NormRms.into(), &mut untimed_args, None).expect("dispatch");
    };
    let mut prepared_call = || {
        prepared.dispatch(&mut prepared_args).expect("prepared");
    };
    let mut dispatch_counting = || {
        counting.dispatch(OperationType::NormRms.into(), &mut counting_args, None).expect("dispatch");
    };
    let candidates: [&mut dyn FnMut(); 7] = [
        &mut layerzero,
        &mut dispatch,
        &mut raw,
        &mut bare,
        &mut dispatch_untimed,
        &mut prepared_call,
        &mut dispatch_counting,
    ];
    const BATCH: usize = 500;
    const BATCHES: usize = 60;
    let mut samples = [const { Vec::new() }; 7];
    for batch in 0..BATCHES + 2 {
        for turn in 0..candidates.len() {
            let which = (batch + turn) % candidates.len();
            gpu.synchronize().expect("sync");
            let start = Instant::now();
            for _ in 0..BATCH {
                candidates[which]();
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / BATCH as f64;
            if batch >= 2 {
                samples[which].push(us); // the first two rounds warm up
            }
        }
    }
    gpu.synchronize().expect("sync");
    let [layerzero_us, dispatch_us, raw_us, bare_us, untimed_us, prepared_us, counting_us] = samples.map(|mut s| {
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    });
    println!(
        "launch overhead (host, tiny rms_norm): LayerZero {layerzero_us:.2} µs, raw cudarc {raw_us:.2} µs, ratio {:.3} \
         (bare cuLaunchKernel {bare_us:.2} µs, ratio {:.3})",
        layerzero_us / raw_us,
        layerzero_us / bare_us
    );
    println!(
        "launch overhead (host, tiny rms_norm) through a DynamicDispatcher ({chosen}): {dispatch_us:.2} µs, ratio to raw cudarc {:.3}",
        dispatch_us / raw_us
    );
    println!(
        "launch overhead through a DynamicDispatcher, telemetry and timing off: {untimed_us:.2} µs, ratio {:.3}; \
         its prepared call: {prepared_us:.2} µs, ratio {:.3}",
        untimed_us / raw_us,
        prepared_us / raw_us
    );
    println!(
        "launch overhead through a DynamicDispatcher, telemetry on and timing off: {counting_us:.2} µs, ratio {:.3}",
        counting_us / raw_us
    );
    // The same ratios in one line for `LZ_BENCH_LAUNCH_PROCESSES` (see `launch_processes`).
    println!(
        "{RATIOS_PREFIX}entry={:.4} defaults={:.4} counts={:.4} quiet={:.4} prepared={:.4}",
        layerzero_us / raw_us,
        dispatch_us / raw_us,
        counting_us / raw_us,
        untimed_us / raw_us,
        prepared_us / raw_us
    );
    // What cudarc's launch path spends asking the driver for the current context (which
    // LayerZero's launch path does once per thread): `bind_to_thread` alone.
    let ctx = gpu.stream().context();
    let mut binds: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..BATCH {
                ctx.bind_to_thread().expect("bind");
            }
            start.elapsed().as_secs_f64() * 1e6 / BATCH as f64
        })
        .collect();
    binds.sort_by(f64::total_cmp);
    println!("cudarc bind_to_thread (cuCtxGetCurrent) alone: {:.3} µs", binds[binds.len() / 2]);
}

/// How a launch-only process starts the line of its ratios.
const RATIOS_PREFIX: &str = "launch ratios to raw cudarc: ";

/// The paths of that line, by key: what each is, for the summary.
const PATHS: [(&str, &str); 5] = [
    ("entry", "checked entry point"),
    ("defaults", "DynamicDispatcher, defaults"),
    ("counts", "  telemetry on, timing off"),
    ("quiet", "  telemetry and timing off"),
    ("prepared", "  its prepared call"),
];

/// Runs the launch-overhead rows in `count` fresh processes of this executable, one after
/// another, echoing each one's output, then prints for each path the median over the
/// processes of its ratio to the raw cudarc launch, a 95% confidence interval of that
/// median (distribution-free: `layerzero_benches::stats`), the range, and how many
/// processes were over issue 12's 1.05 target. Exits 2 on a count that is not a positive
/// integer, 1 when a process fails or prints no ratios.
fn launch_processes(count: &std::ffi::OsStr) {
    let Some(count) = count.to_str().and_then(|c| c.parse::<usize>().ok()).filter(|&c| c > 0) else {
        eprintln!("LZ_BENCH_LAUNCH_PROCESSES must be a positive number of processes, not {count:?}");
        std::process::exit(2);
    };
    let exe = std::env::current_exe().expect("the path of this executable");
    let mut ratios: [Vec<f64>; PATHS.len()] = Default::default();
    for process in 1..=count {
        let output = std::process::Command::new(&exe)
            .env("LZ_BENCH_LAUNCH_ONLY", "1")
            .env_remove("LZ_BENCH_LAUNCH_PROCESSES")
            .env_remove("LZ_PARITY_DIR")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("start a launch-only process");
        let text = String::from_utf8_lossy(&output.stdout);
        print!("{text}");
        if !output.status.success() {
            eprintln!("launch-only process {process} of {count} failed: {}", output.status);
            std::process::exit(1);
        }
        if text.starts_with("skipping") {
            return; // no GPU: the process said so
        }
        let Some(line) = text.lines().find_map(|line| line.strip_prefix(RATIOS_PREFIX)) else {
            eprintln!("launch-only process {process} of {count} printed no line starting {RATIOS_PREFIX:?}");
            std::process::exit(1);
        };
        for pair in line.split_whitespace() {
            let parsed = pair.split_once('=').and_then(|(key, value)| {
                let index = PATHS.iter().position(|(k, _)| *k == key)?;
                Some((index, value.parse::<f64>().ok()?))
            });
            match parsed {
                Some((index, value)) => ratios[index].push(value),
                None => {
                    eprintln!("launch-only process {process} of {count}: cannot read {pair:?} in {line:?}");
                    std::process::exit(1);
                }
            }
        }
    }
    println!(
        "launch overhead over {count} processes, ratio to a raw cudarc launch: median [95% interval of the median] \
         (lowest-highest process), processes over 1.05"
    );
    for ((_, name), values) in PATHS.iter().zip(&ratios) {
        let over = values.iter().filter(|&&r| r > 1.05).count();
        let (low, high) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &r| (l.min(r), h.max(r)));
        match layerzero_benches::stats::median_interval(values, 0.95) {
            Some(m) => println!(
                "  {name:<28} {:.3} [{:.3}, {:.3}] ({low:.3}-{high:.3}) {over} of {}",
                m.median,
                m.low,
                m.high,
                values.len()
            ),
            None => println!(
                "  {name:<28} too few processes for an interval ({low:.3}-{high:.3}) {over} of {}",
                values.len()
            ),
        }
    }
}

/// cuBLAS bf16 GEMMs of a Llama-8B layer: prefill (16384 tokens) and a batch-32 decode,
/// in TFLOP/s and, for decode, GB/s of weight read (GPU.md §5 anchors: 656–715 TFLOP/s
/// prefill, 0.0285 ms for 32×6144×4096).
fn matmul_rows(gpu: &CudaDevice, flush: &mut CudaSlice<u8>) {
    for (what, m, k, n) in [
        ("matmul prefill qkv", 16384, 4096, 6144),
        ("matmul prefill up", 16384, 4096, 14336),
        ("matmul decode qkv", 32, 4096, 6144),
    ] {
        let a = random_tensor(gpu, &[m, k], 21);
        let b = random_tensor(gpu, &[k, n], 22);
        let mut c = random_tensor(gpu, &[m, n], 23);
        let ms = time_ms(gpu, flush, || gpu.matmul(&a, &b, &mut c).expect("matmul")).busy;
        let tflops = 2.0 * (m * k * n) as f64 / ms / 1e9;
        let weight_gbps = (k * n * 2) as f64 / ms / 1e6;
        println!(
            "{what:<34} {:<22} {:>9.1} µs {tflops:>8.0} TFLOP/s {weight_gbps:>7.0} GB/s of B",
            format!("{m}x{k}x{n}"),
            ms * 1e3
        );
    }
}

/// One tensor of a parity case: its name, dims, dtype and raw little-endian bytes.
struct Dumped {
    name: &'static str,
    dims: Vec<usize>,
    dtype: DType,
    bytes: Vec<u8>,
}

fn dumped(name: &'static str, t: &Tensor) -> Dumped {
    let host = t.to_host().expect("download");
    Dumped { name, dims: t.dims().to_vec(), dtype: t.dtype(), bytes: host.as_bytes().expect("bytes").to_vec() }
}

/// With `LZ_PARITY_DIR` set, `gpu_bench` runs each CUDA kernel family once on fresh inputs
/// (odd sizes among them) and writes the inputs and outputs there, raw, with a
/// `manifest.txt` (a line per tensor: case, parameters, name, dtype, dims, file) for
/// `parity.py`, which runs PyTorch on the same inputs and compares both with a float64
/// reference.
fn parity_dump(gpu: &CudaDevice, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("parity dir");
    let mut manifest = String::new();
    let mut write = |case: &str, params: &str, tensors: Vec<Dumped>| {
        for t in tensors {
            let file = format!("{case}.{}.bin", t.name);
            std::fs::write(dir.join(&file), &t.bytes).expect("write");
            let dims: Vec<String> = t.dims.iter().map(usize::to_string).collect();
            manifest.push_str(&format!("{case} {params} {} {} {} {file}\n", t.name, t.dtype, dims.join("x")));
        }
    };
    let mut seed = 100;
    let mut fresh = |dims: &[usize]| {
        seed += 1;
        random_tensor(gpu, dims, seed)
    };
    for (case, variant, rows, hidden) in [
        ("rms_norm_block", RmsNormVariant::Block, 33, 4096),
        ("rms_norm_warp", RmsNormVariant::Warp, 37, 256),
        ("rms_norm_scalar", RmsNormVariant::Scalar, 3, 4095),
    ] {
        let (x, w, mut y) = (fresh(&[rows, hidden]), fresh(&[hidden]), fresh(&[rows, hidden]));
        gpu.rms_norm(variant, &x, None, &w, &mut y, 1e-6).expect("rms_norm");
        write(case, "eps=1e-6", vec![dumped("x", &x), dumped("w", &w), dumped("y", &y)]);
    }
    {
        let (rows, hidden) = (33, 4096);
        let (x, r, w) = (fresh(&[rows, hidden]), fresh(&[rows, hidden]), fresh(&[hidden]));
        let (mut y, mut r_out) = (fresh(&[rows, hidden]), fresh(&[rows, hidden]));
        gpu.rms_norm(RmsNormVariant::Block, &x, Some((&r, &mut r_out)), &w, &mut y, 1e-6).expect("add+rms_norm");
        let tensors = vec![dumped("x", &x), dumped("r", &r), dumped("w", &w), dumped("y", &y), dumped("r_out", &r_out)];
        write("add_rms_norm_block", "eps=1e-6", tensors);
    }
    for (case, variant, rows, hidden) in [
        ("layer_norm_block", LayerNormVariant::Block, 33, 4096),
        ("layer_norm_scalar", LayerNormVariant::Scalar, 3, 4095),
    ] {
        let (x, w, b, mut y) = (fresh(&[rows, hidden]), fresh(&[hidden]), fresh(&[hidden]), fresh(&[rows, hidden]));
        gpu.layer_norm(variant, &x, &w, Some(&b), &mut y, 1e-5).expect("layer_norm");
        write(case, "eps=1e-5", vec![dumped("x", &x), dumped("w", &w), dumped("b", &b), dumped("y", &y)]);
    }
    {
        // q and k of 17 tokens at positions 5.., NeoX, in one launch.
        let (seq, head_dim, positions, offset) = (17, 128, 64, 5);
        let angles: Vec<f32> = (0..positions * head_dim / 2)
            .map(|i| {
                let (p, j) = (i / (head_dim / 2), i % (head_dim / 2));
                p as f32 * 10000f32.powf(-2.0 * j as f32 / head_dim as f32)
            })
            .collect();
        let table = |f: fn(f32) -> f32| {
            let values: Vec<f32> = angles.iter().map(|&a| f(a)).collect();
            Tensor::from_f32(&values, &[positions, head_dim / 2], DType::F32)
                .expect("table")
                .to_cuda(gpu.stream())
                .expect("upload")
        };
        let (cos, sin) = (table(f32::cos), table(f32::sin));
        let (mut q, mut k) = (fresh(&[1, seq, 32, head_dim]), fresh(&[1, seq, 8, head_dim]));
        let (q_in, k_in) = (dumped("q", &q), dumped("k", &k));
        gpu.rope_qk_in_place(
            RopeVariant::Vector,
            RopeStyle::Neox,
            &mut q,
            &mut k,
            RopeTables { cos: &cos, sin: &sin },
            offset,
        )
        .expect("rope");
        let tensors =
            vec![q_in, k_in, dumped("cos", &cos), dumped("sin", &sin), dumped("q_out", &q), dumped("k_out", &k)];
        write("rope_neox_qk", &format!("offset={offset}"), tensors);
    }
    {
        let (rows, inter) = (33, 14336);
        let (gate, up, mut out) = (fresh(&[rows, inter]), fresh(&[rows, inter]), fresh(&[rows, inter]));
        gpu.swiglu(SwigluVariant::Vector, SwigluDeviceInput::Separate { gate: &gate, up: &up }, &mut out)
            .expect("swiglu");
        write("swiglu", "-", vec![dumped("gate", &gate), dumped("up", &up), dumped("out", &out)]);
        let (gate_up, mut out) = (fresh(&[rows, 2 * inter]), fresh(&[rows, inter]));
        gpu.swiglu(SwigluVariant::Vector, SwigluDeviceInput::Fused(&gate_up), &mut out).expect("swiglu fused");
        write("swiglu_fused", "-", vec![dumped("gate_up", &gate_up), dumped("out", &out)]);
    }
    {
        let (m, k, n) = (33, 4096, 512);
        let (a, b, mut out) = (fresh(&[m, k]), fresh(&[k, n]), fresh(&[m, n]));
        gpu.matmul(&a, &b, &mut out).expect("matmul");
        write("matmul", "-", vec![dumped("a", &a), dumped("b", &b), dumped("out", &out)]);
    }
    gpu.synchronize().expect("sync");
    std::fs::write(dir.join("manifest.txt"), manifest).expect("manifest");
    println!("parity cases written to {}", dir.display());
}
