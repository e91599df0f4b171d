//! The CUDA kernels as registered [`KernelImpl`]s, each with the [`KernelSpec`] that says
//! what it runs.
//!
//! A registered kernel finds the [`CudaDevice`] of its tensors' device among the devices
//! it was registered with and calls that device's view entry point. Tensors in host
//! memory, on a device it was not registered with, or spread over two devices are typed
//! errors; nothing is ever copied between devices behind the caller's back.

use std::sync::Arc;

use layerzero_registry::{BackendHealth, BackendRegistry, KernelRegistry, RegistryError};
use layerzero_types::{
    ComputeCapability, DType, Device, DimConstraint, KernelConstraints, KernelError, KernelImpl, KernelSpec, Layout,
    NormArgs, OperationType, Platform, RopeArgs, SwigluArgs, SwigluInput, TypesError,
};

use super::{CudaDevice, CudaError, LayerNormVariant, RmsNormVariant, RopeVariant, SwigluVariant, SwigluViews};

/// The dtypes every CUDA kernel here takes.
const CUDA_DTYPES: [DType; 3] = [DType::BF16, DType::F16, DType::F32];

/// The PTX is compiled for sm_90 (kernels/ptx), so the driver loads it on Hopper and later.
const PTX_ARCH: ComputeCapability = ComputeCapability::new(9, 0);

/// cuBLAS runs bf16 GEMMs from Ampere on; the spec claims no older card.
const CUBLAS_BF16_ARCH: ComputeCapability = ComputeCapability::new(8, 0);

fn spec(
    id: &str,
    operation: OperationType,
    priority: u32,
    constraints: KernelConstraints,
) -> Result<KernelSpec, TypesError> {
    let spec = KernelSpec::new(id, Platform::Cuda)?
        .for_operation(operation)
        .with_priority(priority)
        .with_constraints(constraints);
    spec.validate()?;
    Ok(spec)
}

/// The memory-bound kernels of `kernels/*.cu`: one launch on the device's stream, no
/// allocation, no synchronisation, no driver call but the launch once the modules are
/// loaded (which [`register_cuda_kernels`] does), so they may be captured in a CUDA graph;
/// each reduces in a fixed order, so results are bit-identical run to run.
fn ptx_constraints() -> KernelConstraints {
    KernelConstraints {
        dtypes: Some(CUDA_DTYPES.to_vec()),
        deterministic: true,
        cuda_graph_safe: true,
        min_compute_capability: Some(PTX_ARCH),
        ..KernelConstraints::default()
    }
}

/// The row limit of the block variants (rms_norm, layer_norm, with or without the fused
/// residual add): a multiple of the 16-byte pack, at most 8 · 1024 packs. That is 65536
/// bf16 / f16 elements (multiples of 8) and 32768 f32 (multiples of 4); one spec covers the
/// three dtypes, so it states what all three take (`ops::block_packs`; a test checks).
const BLOCK_HIDDEN: DimConstraint = DimConstraint::Range { min: 8, max: 32768, multiple_of: 8 };

/// The row limit of the rms_norm warp variant: a multiple of the pack, at most 4 · 32
/// packs (1024 bf16 / f16, 512 f32), as every dtype takes it (`ops::warp_packs`).
const WARP_HIDDEN: DimConstraint = DimConstraint::Range { min: 8, max: 512, multiple_of: 8 };

/// The intermediate sizes of the swiglu vector variant: multiples of the pack (8 bf16 / f16,
/// 4 f32), any length (`ops::swiglu_vector_takes`).
const SWIGLU_VECTOR_HIDDEN: DimConstraint = DimConstraint::Range { min: 8, max: u32::MAX, multiple_of: 8 };

/// The head dimensions of the rope vector variant with the whole head rotated: NeoX rotates
/// half-heads in packs (multiples of 16 for bf16 / f16), and a head is at most 1024 units of
/// 16 bytes (4096 f32 channels interleaved); partial rotation's width is checked at launch
/// (`ops::rope_vector_units`).
const ROPE_VECTOR_HEAD_DIM: DimConstraint = DimConstraint::Range { min: 16, max: 4096, multiple_of: 16 };

/// The device that runs a call whose first tensor is on `device`.
fn device_for(devices: &[CudaDevice], device: Device) -> Result<&CudaDevice, KernelError> {
    match device {
        Device::Cuda(_) => match devices.iter().find(|d| d.device() == device) {
            Some(gpu) => Ok(gpu),
            None => Err(unregistered(device)),
        },
        Device::Cpu => Err(on_host()),
    }
}

// Errors out of line (`#[cold]`), off the path every call runs (see `ops::unsupported_dtype`).

#[cold]
#[inline(never)]
fn unregistered(device: Device) -> KernelError {
    KernelError::Backend {
        backend: "cuda",
        message: format!("no CUDA device {device} was registered with these kernels"),
    }
}

#[cold]
#[inline(never)]
fn on_host() -> KernelError {
    KernelError::InvalidArgument(
        "the CUDA kernels take tensors in device memory, got one on cpu (no copy is made)".to_owned(),
    )
}

#[cold]
#[inline(never)]
fn rms_norm_bias() -> KernelError {
    KernelError::InvalidArgument("rms_norm takes no bias, one was given".to_owned())
}

fn rms_norm(devices: Arc<[CudaDevice]>, variant: RmsNormVariant) -> KernelImpl {
    KernelImpl::norm(move |args: &mut NormArgs<'_>| {
        let gpu = device_for(&devices, args.input.device())?;
        if args.bias.is_some() {
            return Err(rms_norm_bias());
        }
        let residual = args.residual.as_mut().map(|r| (r.input, r.output.reborrow()));
        gpu.rms_norm_view(variant, args.input, residual, args.weight, args.output.reborrow(), args.eps)
    })
}

fn layer_norm(devices: Arc<[CudaDevice]>, variant: LayerNormVariant) -> KernelImpl {
    KernelImpl::norm(move |args: &mut NormArgs<'_>| {
        if args.residual.is_some() {
            return Err(KernelError::InvalidArgument("layer_norm takes no residual, one was given".to_owned()));
        }
        let gpu = device_for(&devices, args.input.device())?;
        gpu.layer_norm_view(variant, args.input, args.weight, args.bias, args.output.reborrow(), args.eps)
    })
}

fn rope(devices: Arc<[CudaDevice]>, variant: RopeVariant) -> KernelImpl {
    KernelImpl::rope(move |args: &mut RopeArgs<'_>| {
        let gpu = device_for(&devices, args.x.device())?;
        if args.layout != Layout::Bshd {
            return Err(KernelError::Unsupported(format!("the CUDA rope kernels take BSHD, not {}", args.layout)));
        }
        gpu.rope_in_place_view(variant, args.style, args.x.reborrow(), args.cos, args.sin, args.position_offset)
    })
}

fn swiglu(devices: Arc<[CudaDevice]>, variant: SwigluVariant) -> KernelImpl {
    KernelImpl::swiglu(move |args: &mut SwigluArgs<'_>| {
        let gpu = device_for(&devices, args.output.device())?;
        let input = match &args.input {
            SwigluInput::Separate { gate, up } => SwigluViews::Separate { gate: *gate, up: *up },
            SwigluInput::Fused(gate_up) => SwigluViews::Fused(*gate_up),
        };
        gpu.swiglu_view(variant, input, args.output.reborrow())
    })
}

fn matmul(devices: Arc<[CudaDevice]>) -> KernelImpl {
    KernelImpl::matmul(move |args| {
        let gpu = device_for(&devices, args.a.device())?;
        gpu.matmul_view(args.a, args.b, args.output.reborrow())
    })
}

/// The specs of the CUDA kernels, without code (for listings and `explain` on machines
/// without a GPU). Each states its row limits (`hidden_size` for norms and swiglu,
/// `head_dim` for rope), so selection routes a call to a variant that takes it; a limit
/// that differs by dtype is stated as all three dtypes take it (the spec covers the three),
/// and the kernel still checks its own, looser limit before launch (defence in depth, and
/// for direct calls), refusing as [`KernelError::Unsupported`].
///
/// | id | operation | priority | spec limit | the kernel's own, by dtype | beyond the spec (checked before launch) |
/// |---|---|---|---|---|---|
/// | `cuda.rms_norm.block` | `rms_norm`, with or without a residual | 80 | `hidden_size` a multiple of 8 in 8..=32768 | multiple of 8, ≤ 65536 (bf16, f16); of 4, ≤ 32768 (f32) | - |
/// | `cuda.rms_norm.warp` | `rms_norm`, with or without a residual | 70 | `hidden_size` a multiple of 8 in 8..=512 | multiple of 8, ≤ 1024 (bf16, f16); of 4, ≤ 512 (f32) | - |
/// | `cuda.rms_norm.scalar` | `rms_norm`, with or without a residual | 60 | any | any | - |
/// | `cuda.layer_norm.block` | `layer_norm` | 80 | as `cuda.rms_norm.block` | as `cuda.rms_norm.block` | - |
/// | `cuda.layer_norm.scalar` | `layer_norm` | 60 | any | any | - |
/// | `cuda.rope.vector` | `rope` (BSHD) | 80 | `head_dim` a multiple of 16 in 16..=4096 | ≤ 1024 units of 16 bytes | the rotated width a multiple of 16 bytes / element |
/// | `cuda.rope.scalar` | `rope` (BSHD) | 60 | any | any | - |
/// | `cuda.swiglu.vector` | `swiglu` | 80 | `hidden_size` (intermediate) a multiple of 8 | multiple of 8 (bf16, f16), of 4 (f32) | - |
/// | `cuda.swiglu.scalar` | `swiglu` | 60 | any | any | - |
/// | `cuda.matmul.cublas` | `matmul` | 80 | - | - | `b` row-major or transposed (strides `[1, k]`) |
///
/// The three rms_norm variants fuse a [`residual`](NormArgs::residual) add into their pass
/// (`norm.cu`: the sum is stored in the dtype and that rounded sum normalised); the
/// layer_norm kernels refuse one. All take bf16, f16 and f32 in contiguous device memory. The PTX kernels need compute
/// capability 9.0 (the PTX targets sm_90), are deterministic and CUDA-graph safe;
/// `cuda.matmul.cublas` needs 8.0, and claims neither (cuBLAS picks its algorithm and
/// workspace per call).
pub fn cuda_kernel_specs() -> Result<Vec<KernelSpec>, TypesError> {
    Ok(cuda_kernels(Arc::from(Vec::new()))?.into_iter().map(|(spec, _)| spec).collect())
}

/// Every CUDA kernel with its code, running on `devices`.
pub fn cuda_kernels(devices: Arc<[CudaDevice]>) -> Result<Vec<(KernelSpec, KernelImpl)>, TypesError> {
    use OperationType as Op;
    let d = || Arc::clone(&devices);
    let with_hidden = |hidden: DimConstraint| KernelConstraints { hidden_size: Some(hidden), ..ptx_constraints() };
    let rope_vector = KernelConstraints {
        head_dim: Some(ROPE_VECTOR_HEAD_DIM),
        layouts: Some(vec![Layout::Bshd]),
        ..ptx_constraints()
    };
    let rope_scalar = KernelConstraints { layouts: Some(vec![Layout::Bshd]), ..ptx_constraints() };
    let cublas = KernelConstraints {
        dtypes: Some(CUDA_DTYPES.to_vec()),
        min_compute_capability: Some(CUBLAS_BF16_ARCH),
        ..KernelConstraints::default()
    };
    // Every rms_norm variant of norm.cu takes the fused residual add.
    let rms =
        |hidden_size: Option<DimConstraint>| KernelConstraints { residual: true, hidden_size, ..ptx_constraints() };
    Ok(vec![
        (spec("cuda.rms_norm.block", Op::NormRms, 80, rms(Some(BLOCK_HIDDEN)))?, rms_norm(d(), RmsNormVariant::Block)),
        (spec("cuda.rms_norm.warp", Op::NormRms, 70, rms(Some(WARP_HIDDEN)))?, rms_norm(d(), RmsNormVariant::Warp)),
        (spec("cuda.rms_norm.scalar", Op::NormRms, 60, rms(None))?, rms_norm(d(), RmsNormVariant::Scalar)),
        (
            spec("cuda.layer_norm.block", Op::NormLayer, 80, with_hidden(BLOCK_HIDDEN))?,
            layer_norm(d(), LayerNormVariant::Block),
        ),
        (
            spec("cuda.layer_norm.scalar", Op::NormLayer, 60, ptx_constraints())?,
            layer_norm(d(), LayerNormVariant::Scalar),
        ),
        (spec("cuda.rope.vector", Op::Rope, 80, rope_vector)?, rope(d(), RopeVariant::Vector)),
        (spec("cuda.rope.scalar", Op::Rope, 60, rope_scalar)?, rope(d(), RopeVariant::Scalar)),
        (
            spec("cuda.swiglu.vector", Op::Swiglu, 80, with_hidden(SWIGLU_VECTOR_HIDDEN))?,
            swiglu(d(), SwigluVariant::Vector),
        ),
        (spec("cuda.swiglu.scalar", Op::Swiglu, 60, ptx_constraints())?, swiglu(d(), SwigluVariant::Scalar)),
        (spec("cuda.matmul.cublas", Op::Matmul, 80, cublas)?, matmul(d())),
    ])
}

/// Why the CUDA kernels could not be registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The registry refused them (an id taken, ...).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A device could not load the kernels' modules.
    #[error(transparent)]
    Cuda(#[from] CudaError),
}

/// Registers every CUDA kernel, running on `devices`, all or none. Each device loads its
/// modules and opens its cuBLAS handle first, so no dispatch (and no graph capture) pays
/// for either; a device whose cuBLAS cannot be opened still registers (its matmul calls
/// fail with that error, and fall back). With no
/// devices the kernels are registered (so explain and listings show them) but every call
/// is a typed error; give the backend registry [`register_cuda_backend`] so selection
/// never picks them there.
pub fn register_cuda_kernels(registry: &KernelRegistry, devices: Arc<[CudaDevice]>) -> Result<(), RegisterError> {
    for gpu in devices.iter() {
        gpu.load_modules()?;
        // A missing cuBLAS is not the other kernels' problem: the handle's error is kept
        // and every matmul call on this device returns it (typed; fallbacks then run).
        let _ = gpu.load_cublas();
    }
    let kernels = cuda_kernels(devices).map_err(RegistryError::from)?;
    Ok(registry.register_all_with_impls(kernels)?)
}

/// Registers the `cuda` backend with `devices`: healthy when there is at least one,
/// unavailable (with the reason) otherwise, so selection offers CUDA kernels only where a
/// GPU exists.
pub fn register_cuda_backend(backends: &BackendRegistry, devices: &[CudaDevice]) -> Result<(), RegistryError> {
    let health = if devices.is_empty() {
        let reason = if super::launch::driver_present() { "no CUDA device found" } else { "no CUDA driver found" };
        BackendHealth::Unavailable { reason: reason.to_owned() }
    } else {
        BackendHealth::Healthy
    };
    backends.register_with_health(super::backend_info(devices), health)
}

#[cfg(test)]
mod tests {
    use layerzero_types::{Constraint, SelectionContext};

    use super::*;

    fn ctx() -> layerzero_types::SelectionContextBuilder {
        SelectionContext::builder().device(Device::Cuda(0)).compute_capability(ComputeCapability::new(9, 0))
    }

    #[test]
    fn without_devices_every_kernel_registers_and_refuses_calls_by_type() {
        let registry = KernelRegistry::new();
        register_cuda_kernels(&registry, Arc::from(Vec::new())).unwrap();
        let specs = cuda_kernel_specs().unwrap();
        assert_eq!(registry.len(), specs.len());
        for spec in &specs {
            assert!(registry.implementation(spec.id).is_some(), "{} has no code", spec.id);
            assert_eq!((spec.platform, spec.backend.as_str()), (Platform::Cuda, "cuda"), "{}", spec.id);
        }
        // A host tensor handed to a CUDA kernel is refused, never copied.
        let x = layerzero_types::Tensor::from_f32(&[1.0; 8], &[1, 8], DType::F32).unwrap();
        let w = layerzero_types::Tensor::from_f32(&[1.0; 8], &[8], DType::F32).unwrap();
        let mut y = layerzero_types::Tensor::zeros(&[1, 8], DType::F32).unwrap();
        let block = registry.get_by_name("cuda.rms_norm.block").unwrap().id;
        let code = registry.implementation(block).unwrap();
        let mut args = layerzero_types::OpArgs::Norm(NormArgs::new(x.view(), w.view(), y.view_mut(), 1e-6));
        let refused = code.call(&mut args).unwrap_err();
        assert!(matches!(&refused, KernelError::InvalidArgument(m) if m.contains("got one on cpu")), "{refused}");
        // layer_norm refuses a residual before it looks for a device.
        let mut sum = layerzero_types::Tensor::zeros(&[1, 8], DType::F32).unwrap();
        let layer_norm = registry.get_by_name("cuda.layer_norm.block").unwrap().id;
        let mut args = layerzero_types::OpArgs::Norm(NormArgs {
            input: x.view(),
            weight: w.view(),
            bias: None,
            output: y.view_mut(),
            eps: 1e-6,
            residual: Some(layerzero_types::Residual { input: x.view(), output: sum.view_mut() }),
        });
        let refused = registry.implementation(layer_norm).unwrap().call(&mut args).unwrap_err();
        assert!(matches!(&refused, KernelError::InvalidArgument(m) if m.contains("no residual")), "{refused}");
    }

    #[test]
    fn specs_claim_cuda_bf16_f16_f32_and_what_each_variant_runs() {
        let specs = cuda_kernel_specs().unwrap();
        let get = |id: &str| specs.iter().find(|s| s.id.as_str() == id).unwrap();
        for spec in &specs {
            for dtype in CUDA_DTYPES {
                assert!(spec.check(&ctx().dtype(dtype).build().unwrap()).is_ok(), "{} refuses {dtype}", spec.id);
            }
            let int8 = ctx().dtype(DType::I8).build().unwrap();
            assert_eq!(spec.check(&int8).unwrap_err().constraint, Constraint::DType, "{}", spec.id);
            let on_cpu = SelectionContext::builder().device(Device::Cpu).dtype(DType::F32).build().unwrap();
            assert_eq!(spec.check(&on_cpu).unwrap_err().constraint, Constraint::Platform, "{}", spec.id);
            let ampere = ctx().compute_capability(ComputeCapability::new(8, 0)).build().unwrap();
            assert_eq!(spec.check(&ampere).is_ok(), spec.id.as_str() == "cuda.matmul.cublas", "{} on sm_80", spec.id);
            let capturing = ctx().is_cuda_graph_capturing(true).build().unwrap();
            assert_eq!(spec.check(&capturing).is_ok(), spec.id.as_str() != "cuda.matmul.cublas", "{}", spec.id);
            let residual = ctx().fused_residual(true).build().unwrap();
            let rms_norm = spec.id.as_str().starts_with("cuda.rms_norm.");
            assert_eq!(spec.check(&residual).is_ok(), rms_norm, "{} and a residual", spec.id);
        }
        let bhsd = ctx().layout(Layout::Bhsd).build().unwrap();
        assert_eq!(get("cuda.rope.scalar").check(&bhsd).unwrap_err().constraint, Constraint::Layout);
        let head_dim = |d| ctx().layout(Layout::Bshd).head_dim(d).build().unwrap();
        assert!(get("cuda.rope.vector").check(&head_dim(128)).is_ok());
        assert_eq!(get("cuda.rope.vector").check(&head_dim(72)).unwrap_err().constraint, Constraint::HeadDim);
        assert!(get("cuda.rope.scalar").check(&head_dim(72)).is_ok());
    }

    /// Each spec's row limit is exactly what all three dtypes' launch checks take (the
    /// `ops` functions the kernels call before launch): never more (selection would route
    /// a call to a kernel that refuses it), and no less than the dtypes have in common.
    #[test]
    fn row_limits_in_the_specs_are_what_every_dtype_launches() {
        use super::super::ops::{BlockRows, block_packs, rope_vector_units, swiglu_vector_takes, warp_packs};
        use layerzero_types::RopeStyle;

        let specs = cuda_kernel_specs().unwrap();
        let get = |id: &str| specs.iter().find(|s| s.id.as_str() == id).unwrap();
        let hidden = |id: &str| get(id).constraints.hidden_size.clone();
        /// Whether a variant's launch check takes `n` elements of a dtype.
        type Takes<'a> = &'a dyn Fn(DType, usize) -> bool;
        let every_dtype = |takes: Takes<'_>, n: usize| CUDA_DTYPES.iter().all(|&d| takes(d, n));
        let block = |rows: BlockRows| move |d: DType, n: usize| block_packs(d, n, rows).is_some();
        let launches: [(&str, Takes<'_>); 5] = [
            ("cuda.rms_norm.block", &block(BlockRows::Rms)),
            ("cuda.rms_norm.block", &block(BlockRows::AddRms)),
            ("cuda.layer_norm.block", &block(BlockRows::LayerNorm)),
            ("cuda.rms_norm.warp", &|d, n| warp_packs(d, n).is_some()),
            ("cuda.swiglu.vector", &swiglu_vector_takes),
        ];
        for (id, takes) in launches {
            let limit = hidden(id).unwrap_or_else(|| panic!("{id} states no hidden_size limit"));
            for n in 0..=70_000u32 {
                assert_eq!(limit.allows(n), every_dtype(takes, n as usize), "{id}: hidden_size {n} ({limit})");
            }
        }
        // The warp variant's own bf16 limit is twice the spec's, and the block's too.
        assert!(warp_packs(DType::BF16, 1024).is_some() && warp_packs(DType::F32, 1024).is_none());
        assert!(
            block_packs(DType::BF16, 65536, BlockRows::Rms).is_some()
                && block_packs(DType::F32, 65536, BlockRows::Rms).is_none()
        );
        for id in ["cuda.rms_norm.scalar", "cuda.layer_norm.scalar", "cuda.swiglu.scalar", "cuda.rope.scalar"] {
            assert_eq!(hidden(id), None, "{id} takes any row");
        }

        // Rope rotates the whole head: the spec's head_dim limit is what both styles take
        // in every dtype.
        let rope = get("cuda.rope.vector").constraints.head_dim.clone().unwrap();
        for head_dim in 0..=9_000u32 {
            let n = head_dim as usize;
            let launches = [RopeStyle::Neox, RopeStyle::Interleaved]
                .into_iter()
                .all(|style| CUDA_DTYPES.iter().all(|&d| rope_vector_units(style, d, n, n).is_ok()));
            assert_eq!(rope.allows(head_dim), launches, "rope head_dim {head_dim} ({rope})");
        }
    }

    #[test]
    fn selection_context_hidden_sizes_pick_the_variant_that_takes_them() {
        let specs = cuda_kernel_specs().unwrap();
        let takes = |id: &str, hidden: u32| {
            let spec = specs.iter().find(|s| s.id.as_str() == id).unwrap();
            spec.check(&ctx().dtype(DType::BF16).hidden_size(hidden).build().unwrap())
        };
        assert!(takes("cuda.rms_norm.warp", 512).is_ok());
        assert!(takes("cuda.rms_norm.block", 4096).is_ok());
        let rejection = takes("cuda.rms_norm.warp", 4096).unwrap_err();
        assert_eq!(rejection.constraint, Constraint::HiddenSize);
        assert_eq!(
            rejection.to_string(),
            "cuda.rms_norm.warp: hidden_size requires a multiple of 8 in 8..=512, context has 4096"
        );
        assert_eq!(takes("cuda.rms_norm.block", 4100).unwrap_err().constraint, Constraint::HiddenSize);
        assert!(takes("cuda.rms_norm.scalar", 4100).is_ok());
        assert_eq!(takes("cuda.swiglu.vector", 11006).unwrap_err().constraint, Constraint::HiddenSize);
        assert!(takes("cuda.swiglu.vector", 11008).is_ok());
    }

    #[test]
    fn the_backend_is_unavailable_without_a_device() {
        let backends = BackendRegistry::new();
        register_cuda_backend(&backends, &[]).unwrap();
        assert!(!backends.is_platform_available(Platform::Cuda));
        assert!(matches!(backends.health("cuda"), Some(BackendHealth::Unavailable { .. })));
    }
}
