//! LayerZero's built-in kernels. Today: the CPU backend, the embedded default that lets
//! LayerZero run end to end on any machine with no GPU.
//!
//! Every operation LayerZero names has CPU kernels here: attention (full, causal, cross,
//! sliding window, prefill and decode, GQA/MQA, BSHD and BHSD) in three implementations
//! with different trade-offs, rms_norm, layer_norm, rope (NeoX and interleaved), swiglu
//! (separate or fused) and matmul (through the `gemm` crate), for float32, float16 and
//! bfloat16, accumulating in f32, multi-threaded with rayon. Each comes with a
//! [`KernelSpec`](layerzero_types::KernelSpec) whose constraints are what it really
//! supports, and every kernel checks its arguments: bad input is a typed
//! [`KernelError`](layerzero_types::KernelError) that says what was expected, never a panic.
//!
//! What it is not: it does not choose between kernels (that is selection's job), it does
//! not allocate outputs (callers pass them).
//!
//! Start from [`register_cpu_kernels`], or call a kernel such as [`rms_norm`] directly:
//!
//! ```
//! use layerzero_kernels::{register_cpu_kernels, rms_norm};
//! use layerzero_registry::KernelRegistry;
//! use layerzero_types::{NormArgs, TensorView, TensorViewMut};
//!
//! let registry = KernelRegistry::new();
//! register_cpu_kernels(&registry)?;
//! assert!(registry.get_by_name("cpu.attention.tiled").is_some());
//!
//! let x = [1.0f32, 2.0, 3.0, 4.0];
//! let weight = [1.0f32; 2];
//! let mut out = [0.0f32; 4];
//! let mut args = NormArgs {
//!     input: TensorView::from_slice(&x, &[2, 2])?,
//!     weight: TensorView::from_slice(&weight, &[2])?,
//!     bias: None,
//!     output: TensorViewMut::from_slice(&mut out, &[2, 2])?,
//!     eps: 0.0,
//!     residual: None,
//! };
//! rms_norm(&mut args)?;
//! // Row [1, 2]: rms = sqrt(2.5).
//! assert!((out[0] - 1.0 / 2.5f32.sqrt()).abs() < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `unsafe` is denied except in two private modules, each with `// SAFETY:` comments: one
//! wraps the `gemm` crate's raw-pointer entry point behind bounds checks, the other calls
//! the AVX2+FMA copies of the hot loops after asking the CPU for those features (the
//! benchmark in `benches/benches/kernels_cpu.rs` shows what that buys).

//!
//! With the `cuda` feature, the `cuda` module holds the CUDA backend: device discovery, PTX modules
//! loaded once per device, memory-bound kernels (rms_norm in block, warp and scalar
//! variants with an optional fused residual add, layer_norm, rope, and swiglu from two
//! inputs or one fused gate-up input) and matmul through cuBLAS, registered with their specs
//! by `cuda::register_cuda_kernels` so a dispatcher runs them on device views
//! (`Tensor::view` of a CUDA tensor). Its `unsafe` is confined to `cuda/launch.rs`, which
//! bounds-checks every buffer against what the kernel will index before launching.

#![deny(unsafe_code)]

mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use cpu::{
    attention_naive, attention_split_kv, attention_tiled, cpu_kernel_specs, cpu_kernels, layer_norm, matmul,
    register_cpu_kernels, rms_norm, rms_norm_add_then_norm, rope, swiglu,
};
