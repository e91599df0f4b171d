//! LayerZero's built-in kernels: CPU (the embedded default) and CUDA.
//!
//! Not built yet: this crate is an empty placeholder in the workspace layout.
