//! The registered CUDA kernels through a `DynamicDispatcher`: each one, chosen by selection
//! from device views, matches the CPU kernel the same dispatcher chooses for host views;
//! tensors on the wrong device are refused with typed errors, never copied or read.
//!
//! `cargo test -p layerzero-tests --features cuda --test gpu_dispatch`; without a GPU each
//! test prints why it skips.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use layerzero::dispatch::{DispatchConfig, DispatchMode, Dispatcher, DynamicDispatcher, create_dynamic_dispatcher};
use layerzero::registry::{BackendRegistry, KernelRegistry};
use layerzero::types::{
    DType, Device, KernelError, KernelId, Layout, MatmulArgs, NormArgs, OpArgs, OperationType, Residual, RopeArgs,
    RopeStyle, SwigluArgs, SwigluInput, Tensor, TensorView, TensorViewMut, TypesError,
};
use layerzero_kernels::cuda::{self, CudaDevice};
use layerzero_tests::values;

/// The GPUs, or `None` (printing why) where there are none.
fn gpus() -> Option<Arc<[CudaDevice]>> {
    match cuda::discover() {
        Ok(devices) if devices.is_empty() => {
            eprintln!("skipping: no CUDA GPU here (no driver, or no device)");
            None
        }
        Ok(devices) => Some(devices.into()),
        Err(e) => {
            eprintln!("skipping: CUDA discovery failed: {e}");
            None
        }
    }
}

/// A dispatcher over the CPU kernels and the CUDA kernels `keep` selects, with the host
/// CPU and the `cuda` backend (these devices) available.
fn dispatcher(devices: &Arc<[CudaDevice]>, keep: impl Fn(&str) -> bool) -> DynamicDispatcher {
    let kernels = KernelRegistry::new();
    layerzero_kernels::register_cpu_kernels(&kernels).unwrap();
    for device in devices.iter() {
        device.load_modules().unwrap();
    }
    let chosen: Vec<_> = cuda::cuda_kernels(Arc::clone(devices))
        .unwrap()
        .into_iter()
        .filter(|(spec, _)| keep(spec.id.as_str()))
        .collect();
    assert!(!chosen.is_empty(), "no CUDA kernel kept");
    kernels.register_all_with_impls(chosen).unwrap();
    let backends = BackendRegistry::detect();
    cuda::register_cuda_backend(&backends, devices).unwrap();
    let config = DispatchConfig::builder().mode(DispatchMode::Dynamic).build().unwrap();
    create_dynamic_dispatcher(Arc::new(kernels), Arc::new(backends), config, true).unwrap()
}

fn relative_error(gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len());
    assert!(gpu.iter().all(|v| v.is_finite()), "a GPU output is NaN or infinite (unwritten or overflowed)");
    let diff: f64 = gpu.iter().zip(cpu).map(|(&g, &c)| (f64::from(g) - f64::from(c)).powi(2)).sum();
    let norm: f64 = cpu.iter().map(|&c| f64::from(c).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

/// Builds one call's arguments over `inputs`, writing into `output`.
type Build = dyn for<'a> Fn(&'a [Tensor], TensorViewMut<'a>) -> OpArgs<'a>;

/// Runs `build` through `dispatcher` on host tensors and on their device copies (the
/// output poisoned with NaN, except where the call reads it, as rope does in place);
/// returns the kernel chosen for the device call and the relative error between the two.
fn gpu_against_cpu(
    dispatcher: &DynamicDispatcher,
    gpu: &CudaDevice,
    operation: OperationType,
    inputs: &[Tensor],
    output: &Tensor,
    output_is_read: bool,
    build: &Build,
) -> (KernelId, f64) {
    let mut host_out = output.clone();
    let mut args = build(inputs, host_out.view_mut());
    let on_cpu = dispatcher.dispatch(operation.into(), &mut args, None).expect("the CPU dispatch");
    assert!(on_cpu.kernel_id.as_str().starts_with("cpu."), "host views chose {}", on_cpu.kernel_id);

    let device_inputs: Vec<Tensor> = inputs.iter().map(|t| t.to_cuda(gpu.stream()).unwrap()).collect();
    let first = if output_is_read {
        output.clone()
    } else {
        Tensor::from_f32(&vec![f32::NAN; output.numel()], output.dims(), output.dtype()).unwrap()
    };
    let mut device_out = first.to_cuda(gpu.stream()).unwrap();
    let mut args = build(&device_inputs, device_out.view_mut());
    let context = args.context().unwrap();
    assert_eq!(
        (context.device, context.effective_platform()),
        (Some(gpu.device()), Some(layerzero::types::Platform::Cuda))
    );
    let on_gpu = dispatcher.dispatch(operation.into(), &mut args, None).expect("the GPU dispatch");
    gpu.synchronize().unwrap();
    let gpu_values = device_out.to_host().unwrap().to_f32_vec().unwrap();
    let cpu_values = host_out.to_f32_vec().unwrap();
    (on_gpu.kernel_id, relative_error(&gpu_values, &cpu_values))
}

fn tensor(n: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::from_f32(&values(n.iter().product(), seed), n, dtype).unwrap()
}

/// bf16 and f16 within 1e-2 relative (GPU.md §4), f32 within 1e-5.
fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F32 { 1e-5 } else { 1e-2 }
}

#[test]
fn every_cuda_kernel_through_the_dispatcher_matches_the_cpu_kernel() {
    let Some(devices) = gpus() else { return };
    let gpu = &devices[0];
    let mut checked = Vec::new();
    for spec in cuda::cuda_kernel_specs().unwrap() {
        let id = spec.id.as_str().to_owned();
        let dispatcher = dispatcher(&devices, |kept| kept == id);
        for dtype in [DType::BF16, DType::F16, DType::F32] {
            let (rows, hidden, inter) = (3, 256, 512);
            let (operation, inputs, output, read, build): (_, Vec<Tensor>, Tensor, bool, Box<Build>) = match spec
                .operations[0]
                .known()
            {
                Some(OperationType::NormRms) => (
                    OperationType::NormRms,
                    vec![tensor(&[rows, hidden], dtype, 1), tensor(&[hidden], dtype, 2)],
                    Tensor::zeros(&[rows, hidden], dtype).unwrap(),
                    false,
                    Box::new(|t: &[Tensor], output| {
                        OpArgs::Norm(NormArgs::new(t[0].view(), t[1].view(), output, 1e-6))
                    }),
                ),
                Some(OperationType::NormLayer) => (
                    OperationType::NormLayer,
                    vec![tensor(&[rows, hidden], dtype, 3), tensor(&[hidden], dtype, 4), tensor(&[hidden], dtype, 5)],
                    Tensor::zeros(&[rows, hidden], dtype).unwrap(),
                    false,
                    Box::new(|t: &[Tensor], output| {
                        OpArgs::Norm(NormArgs {
                            input: t[0].view(),
                            weight: t[1].view(),
                            bias: Some(t[2].view()),
                            output,
                            eps: 1e-5,
                            residual: None,
                        })
                    }),
                ),
                Some(OperationType::Rope) => {
                    let (seq, heads, head_dim, positions) = (5, 4, 64, 16);
                    let (cos, sin): (Vec<f32>, Vec<f32>) = (0..positions * head_dim / 2)
                        .map(|i| {
                            let (p, f) = ((i / (head_dim / 2)) as f32, (i % (head_dim / 2)) as f32);
                            let angle = p * 10000f32.powf(-2.0 * f / head_dim as f32);
                            (angle.cos(), angle.sin())
                        })
                        .unzip();
                    (
                        OperationType::Rope,
                        vec![
                            Tensor::from_vec(cos, &[positions, head_dim / 2]).unwrap(),
                            Tensor::from_vec(sin, &[positions, head_dim / 2]).unwrap(),
                        ],
                        tensor(&[1, seq, heads, head_dim], dtype, 6),
                        true,
                        Box::new(|t: &[Tensor], x| {
                            OpArgs::Rope(RopeArgs {
                                x,
                                cos: t[0].view(),
                                sin: t[1].view(),
                                position_offset: 3,
                                style: RopeStyle::Neox,
                                layout: Layout::Bshd,
                            })
                        }),
                    )
                }
                Some(OperationType::Swiglu) => (
                    OperationType::Swiglu,
                    vec![tensor(&[rows, inter], dtype, 7), tensor(&[rows, inter], dtype, 8)],
                    Tensor::zeros(&[rows, inter], dtype).unwrap(),
                    false,
                    Box::new(|t: &[Tensor], output| {
                        OpArgs::Swiglu(SwigluArgs {
                            input: SwigluInput::Separate { gate: t[0].view(), up: t[1].view() },
                            output,
                        })
                    }),
                ),
                Some(OperationType::Matmul) => (
                    OperationType::Matmul,
                    // A linear layer: x [5, 64] times a [48, 64] weight seen as [64, 48].
                    vec![tensor(&[5, 64], dtype, 9), tensor(&[48, 64], dtype, 10)],
                    Tensor::zeros(&[5, 48], dtype).unwrap(),
                    false,
                    Box::new(|t: &[Tensor], output| {
                        OpArgs::Matmul(MatmulArgs { a: t[0].view(), b: t[1].view().transpose(0, 1).unwrap(), output })
                    }),
                ),
                other => panic!("{id}: no case for {other:?}"),
            };
            let (kernel, error) = gpu_against_cpu(&dispatcher, gpu, operation, &inputs, &output, read, &*build);
            assert_eq!(kernel.as_str(), id, "selection chose another kernel for device views");
            assert!(error <= tolerance(dtype), "{id} {dtype}: relative error {error:e} against the CPU kernel");
            checked.push(format!("{id} {dtype}: {error:.1e}"));
        }
    }
    println!("{}", checked.join("\n"));
    assert_eq!(checked.len(), 3 * cuda::cuda_kernel_specs().unwrap().len());
}

#[test]
fn every_cuda_rms_norm_takes_a_residual_through_the_dispatcher_as_the_cpu_kernel_does() {
    let Some(devices) = gpus() else { return };
    let gpu = &devices[0];
    let mut checked = Vec::new();
    for id in ["cuda.rms_norm.block", "cuda.rms_norm.warp", "cuda.rms_norm.scalar"] {
        let dispatcher = dispatcher(&devices, |kept| kept == id);
        for dtype in [DType::BF16, DType::F16, DType::F32] {
            // An odd row count; hidden 256 fits every variant's limits.
            let (rows, hidden) = (5, 256);
            let host =
                [tensor(&[rows, hidden], dtype, 11), tensor(&[rows, hidden], dtype, 12), tensor(&[hidden], dtype, 13)];
            let device: Vec<Tensor> = host.iter().map(|t| t.to_cuda(gpu.stream()).unwrap()).collect();
            let poisoned = || Tensor::from_f32(&vec![f32::NAN; rows * hidden], &[rows, hidden], dtype).unwrap();
            let mut results = Vec::new();
            for (t, on_device) in [(&host[..], false), (&device[..], true)] {
                let (mut y, mut sum) = if on_device {
                    (poisoned().to_cuda(gpu.stream()).unwrap(), poisoned().to_cuda(gpu.stream()).unwrap())
                } else {
                    (poisoned(), poisoned())
                };
                let mut args = OpArgs::Norm(NormArgs {
                    input: t[0].view(),
                    weight: t[2].view(),
                    bias: None,
                    output: y.view_mut(),
                    eps: 1e-6,
                    residual: Some(Residual { input: t[1].view(), output: sum.view_mut() }),
                });
                assert_eq!(args.context().unwrap().fused_residual, Some(true));
                let ran = dispatcher.dispatch(OperationType::NormRms.into(), &mut args, None).expect("add + rms_norm");
                gpu.synchronize().unwrap();
                let host_values = |t: &Tensor| t.to_host().unwrap().to_f32_vec().unwrap();
                results.push((ran.kernel_id, host_values(&y), host_values(&sum)));
            }
            let (cpu, gpu_run) = (&results[0], &results[1]);
            assert_eq!(cpu.0.as_str(), "cpu.rms_norm", "host views with a residual");
            assert_eq!(gpu_run.0.as_str(), id, "selection chose another kernel for device views");
            let (output_error, sum_error) = (relative_error(&gpu_run.1, &cpu.1), relative_error(&gpu_run.2, &cpu.2));
            assert!(output_error <= tolerance(dtype), "{id} {dtype}: output relative error {output_error:e}");
            assert!(sum_error <= tolerance(dtype), "{id} {dtype}: residual.output relative error {sum_error:e}");
            checked.push(format!("{id} + residual {dtype}: {output_error:.1e} (sum {sum_error:.1e})"));
        }
    }
    println!("{}", checked.join("\n"));
}

#[test]
fn matmul_takes_a_row_major_right_operand_too() {
    let Some(devices) = gpus() else { return };
    let dispatcher = dispatcher(&devices, |id| id == "cuda.matmul.cublas");
    let inputs = [tensor(&[7, 33], DType::BF16, 11), tensor(&[33, 17], DType::BF16, 12)];
    let output = Tensor::zeros(&[7, 17], DType::BF16).unwrap();
    let (kernel, error) =
        gpu_against_cpu(&dispatcher, &devices[0], OperationType::Matmul, &inputs, &output, false, &|t, output| {
            OpArgs::Matmul(MatmulArgs { a: t[0].view(), b: t[1].view(), output })
        });
    assert_eq!(kernel.as_str(), "cuda.matmul.cublas");
    assert!(error <= 1e-2, "relative error {error:e}");
}

#[test]
fn device_views_refuse_host_access_and_cpu_kernels_refuse_device_tensors() {
    let Some(devices) = gpus() else { return };
    let gpu = &devices[0];
    let x = tensor(&[2, 64], DType::F32, 13).to_cuda(gpu.stream()).unwrap();
    let w = tensor(&[64], DType::F32, 14).to_cuda(gpu.stream()).unwrap();
    let mut y = Tensor::zeros(&[2, 64], DType::F32).unwrap().to_cuda(gpu.stream()).unwrap();
    let on_device = TypesError::DeviceMismatch { expected: Device::Cpu, actual: gpu.device() };
    assert_eq!(x.view().as_slice::<f32>().unwrap_err(), on_device);
    assert_eq!(x.view().strided_data::<f32>().unwrap_err(), on_device);
    assert_eq!(y.view_mut().as_mut_slice::<f32>().unwrap_err(), on_device);
    assert_eq!(y.view_mut().strided_data_mut::<f32>().unwrap_err(), on_device);
    assert!(x.view().cuda_bytes().is_ok() && tensor(&[1], DType::F32, 1).view().cuda_bytes().is_err());
    // A caller's own allocation, viewed in place.
    let view = TensorView::from_cuda(x.cuda_bytes().unwrap(), &[2, 64], DType::F32).unwrap();
    assert_eq!(view.device(), gpu.device());
    assert!(TensorView::from_cuda(x.cuda_bytes().unwrap(), &[3, 64], DType::F32).is_err(), "past the allocation");
    let strided = TensorView::from_cuda_strided(x.cuda_bytes().unwrap(), &[64, 2], &[1, 64], DType::F32).unwrap();
    assert!(!strided.is_contiguous());
    assert!(TensorView::from_cuda_strided(x.cuda_bytes().unwrap(), &[64, 3], &[1, 64], DType::F32).is_err());

    // The CPU kernel, called directly with device views: a typed error naming the device.
    let mut args = OpArgs::Norm(NormArgs::new(x.view(), w.view(), y.view_mut(), 1e-6));
    let refused = layerzero_kernels::cpu_kernels()
        .unwrap()
        .into_iter()
        .find(|(spec, _)| spec.id.as_str() == "cpu.rms_norm")
        .unwrap()
        .1
        .call(&mut args)
        .unwrap_err();
    assert!(refused.to_string().contains(&gpu.device().to_string()), "{refused}");

    // Through a dispatcher with only CPU kernels: nothing can run device views.
    let kernels = KernelRegistry::new();
    layerzero_kernels::register_cpu_kernels(&kernels).unwrap();
    let config = DispatchConfig::builder().mode(DispatchMode::Dynamic).build().unwrap();
    let cpu_only =
        create_dynamic_dispatcher(Arc::new(kernels), Arc::new(BackendRegistry::detect()), config, true).unwrap();
    assert!(cpu_only.dispatch(OperationType::NormRms.into(), &mut args, None).is_err());
}

#[test]
fn a_tensor_on_the_wrong_device_is_refused_never_copied() {
    let Some(devices) = gpus() else { return };
    let gpu = &devices[0];
    let x = tensor(&[2, 64], DType::F32, 15).to_cuda(gpu.stream()).unwrap();
    let host_w = tensor(&[64], DType::F32, 16);
    let mut y = Tensor::zeros(&[2, 64], DType::F32).unwrap().to_cuda(gpu.stream()).unwrap();
    let kernels = cuda::cuda_kernels(Arc::clone(&devices)).unwrap();
    let (_, block) = kernels.iter().find(|(spec, _)| spec.id.as_str() == "cuda.rms_norm.block").unwrap();

    // The weight left on the host.
    let mut args = OpArgs::Norm(NormArgs::new(x.view(), host_w.view(), y.view_mut(), 1e-6));
    let refused = block.call(&mut args).unwrap_err();
    assert!(matches!(&refused, KernelError::InvalidArgument(m) if m.contains("weight")), "{refused}");

    // Kernels registered with no devices: cuda:0 is not theirs.
    let orphans = cuda::cuda_kernels(Arc::from(Vec::new())).unwrap();
    let (_, orphan) = orphans.iter().find(|(spec, _)| spec.id.as_str() == "cuda.rms_norm.block").unwrap();
    let w = host_w.to_cuda(gpu.stream()).unwrap();
    let mut args = OpArgs::Norm(NormArgs::new(x.view(), w.view(), y.view_mut(), 1e-6));
    assert!(matches!(orphan.call(&mut args), Err(KernelError::Backend { backend: "cuda", .. })));

    // A second GPU, where there is one: its weight with the first GPU's input.
    if let Some(other) = devices.get(1) {
        let w1 = host_w.to_cuda(other.stream()).unwrap();
        let mut args = OpArgs::Norm(NormArgs::new(x.view(), w1.view(), y.view_mut(), 1e-6));
        let refused = block.call(&mut args).unwrap_err();
        assert!(refused.to_string().contains(&other.device().to_string()), "{refused}");
    } else {
        eprintln!("one GPU: the two-device case is not exercised");
    }
}
