//! LayerZero's vocabulary: the types every other crate speaks.
//!
//! This crate names things and checks them; it decides and runs nothing. It holds
//! operations ([`Operation`], [`OperationType`]), the facts of a call
//! ([`SelectionContext`]), element types and devices ([`DType`], [`Device`], [`Platform`],
//! [`Layout`]), what a kernel is and can run ([`KernelId`], [`KernelSpec`] with its
//! [`KernelConstraints`], and the [`Rejection`] saying why it cannot), tensors
//! ([`Tensor`], and [`TensorView`] / [`TensorViewMut`] over a caller's memory), and what a
//! dispatch returns ([`DispatchResult`], [`DispatchTiming`]), and how kernels are called
//! ([`OpArgs`] with one argument struct per operation family, [`KernelImpl`], [`KernelError`]).
//!
//! Start from [`KernelSpec`] and [`SelectionContext`]:
//!
//! ```
//! use layerzero_types::{
//!     DType, DimConstraint, KernelSpec, Layout, OperationType, Platform, SelectionContext,
//!     Support, Tensor,
//! };
//!
//! let mut spec = KernelSpec::new("attention_tiled", Platform::Cpu)?
//!     .for_operation(OperationType::AttentionCausal)
//!     .with_dtypes([DType::F32, DType::BF16]);
//! spec.constraints.head_dim = Some(DimConstraint::Range { min: 16, max: 256, multiple_of: 16 });
//! spec.constraints.causal = Support::Supported;
//! spec.constraints.gqa = true;
//!
//! let q = Tensor::zeros(&[1, 128, 32, 128], DType::BF16)?;
//! let k = Tensor::zeros(&[1, 128, 8, 128], DType::BF16)?;
//! let mut ctx = SelectionContext::from_attention(&q, &k, Layout::Bshd)?;
//! ctx.is_causal = Some(true);
//! assert!(spec.check(&ctx).is_ok());
//!
//! ctx.head_dim = Some(100);
//! let rejection = spec.check(&ctx).unwrap_err();
//! assert_eq!(rejection.to_string(),
//!     "attention_tiled: head_dim requires a multiple of 16 in 16..=256, context has 100");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture invariant: no dependency on any other LayerZero crate, and no logic beyond
//! parsing and validation. Names are parsed once into small `Copy` ids; comparing them is
//! integer comparison.
//!
//! Features: `cuda` adds GPU memory to [`Tensor`] through cudarc (loaded at run time, so
//! the crate still builds on machines without CUDA), and device views: a view of a CUDA
//! tensor (or of a caller's `CudaSlice<u8>`, `TensorView::from_cuda`) carries its device,
//! so contexts built from it say `cuda:N`; its host accessors return
//! [`TypesError::DeviceMismatch`] naming that device, so a CPU kernel handed device memory
//! refuses it instead of reading it.

#![forbid(unsafe_code)]

mod args;
mod context;
mod device;
mod dtype;
mod error;
mod intern;
mod kernel;
mod operation;
mod result;
mod tensor;

pub use args::{
    ArgsKind, ArgsSignature, AttentionArgs, KernelError, KernelImpl, KernelResult, MatmulArgs, NormArgs, OpArgs,
    Residual, RopeArgs, RopeStyle, SwigluArgs, SwigluInput,
};
pub use context::{ContextField, FieldKind, FieldValue, SelectionContext, SelectionContextBuilder};
pub use device::{ComputeCapability, Device, Layout, Platform};
pub use dtype::{DType, Element, FloatElement};
pub use error::TypesError;
pub use intern::nearest_name;
pub use kernel::{Constraint, DimConstraint, DimRange, KernelConstraints, KernelId, KernelSpec, Rejection, Support};
pub use operation::{CustomOperation, Operation, OperationType, get_operation_type};
pub use result::{DispatchResult, DispatchTiming};
pub use tensor::{MAX_RANK, Shape, Strides, Tensor, TensorMeta, TensorView, TensorViewMut};
