//! `Tensor` in GPU memory (the `cuda` feature): host → device → host keeps every byte.
//!
//! Run with `cargo test -p layerzero-tests --features cuda --test gpu_tensor`. Where no CUDA
//! driver exists each test prints why it is skipping and passes.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};
use layerzero::types::{DType, Device, Tensor, TypesError};

/// The default stream of GPU 0, or `None` (with the reason printed) where there is none.
fn gpu_stream() -> Option<Arc<CudaStream>> {
    // SAFETY: `is_culib_present` only tries to open the driver library by its usual names
    // and closes it again; it runs no driver code.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        eprintln!("skipping: no CUDA driver library (libcuda) on this machine");
        return None;
    }
    match CudaContext::new(0) {
        Ok(ctx) => Some(ctx.default_stream()),
        Err(e) => {
            eprintln!("skipping: the CUDA driver is present but GPU 0 cannot be opened: {e}");
            None
        }
    }
}

#[test]
fn tensors_round_trip_through_gpu_memory() {
    let Some(stream) = gpu_stream() else { return };
    let values: Vec<f32> = (0..4099).map(|i| (i as f32 * 0.37).sin() * 100.0).collect();
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        let host = Tensor::from_f32(&values, &[1, 4099], dtype).unwrap();
        let device = host.to_cuda(&stream).unwrap();
        assert_eq!(device.device(), Device::Cuda(0));
        assert_eq!(device.dims(), [1, 4099]);
        assert_eq!(device.cuda_bytes().unwrap().len(), host.size_in_bytes());
        // Host access to device memory is a typed error, not a wrong answer.
        assert!(matches!(device.as_slice::<f32>(), Err(TypesError::DeviceMismatch { .. })));
        let back = device.to_host().unwrap();
        assert_eq!(back.dtype(), dtype);
        assert_eq!(back.to_f32_vec().unwrap(), host.to_f32_vec().unwrap(), "{dtype}");
    }
}

#[test]
fn float8_bytes_survive_the_round_trip() {
    let Some(stream) = gpu_stream() else { return };
    let bytes: Vec<u8> = (0..=255).collect();
    let host = Tensor::from_bytes(&bytes, &[16, 16], DType::F8E4M3).unwrap();
    let back = host.to_cuda(&stream).unwrap().to_host().unwrap();
    assert_eq!(back.dtype(), DType::F8E4M3);
    assert_eq!(back.as_bytes().unwrap(), bytes.as_slice());
}
