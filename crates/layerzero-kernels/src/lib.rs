//! LayerZero's built-in kernels: CPU (the embedded default) and CUDA.
//!
//! With the `cuda` feature, [`cuda`] holds the CUDA backend: device discovery, PTX modules
//! loaded once per device, and memory-bound kernels (rms_norm in three variants with an
//! optional fused residual add, swiglu from two inputs or one fused gate-up input).

#![deny(unsafe_code)]

#[cfg(feature = "cuda")]
pub mod cuda;
