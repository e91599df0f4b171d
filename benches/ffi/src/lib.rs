//! A C interface to LayerZero's CUDA kernels on device memory that another library
//! allocated: bench tooling, not a public API.
//!
//! `benches/gpu/same_tensors.py` loads this library with ctypes and times LayerZero's
//! kernels on PyTorch's tensors, beside PyTorch eager, torch.compile and liger-kernel, in
//! one process. Where a tensor lies in the card's memory moves a memory-bound kernel's
//! speed (and a copy's) by several percent, so kernels timed on tensors of their own, in
//! separate processes, are not compared like for like; here they run on the very same
//! bytes. The calls go through the same Rust code as every other LayerZero launch
//! (`layerzero_kernels::cuda`), so the launch configuration is the library's own.
//!
//! The protocol: [`lz_open`] a device, `lz_wrap` each tensor's memory, call the kernels
//! (`lz_rms_norm`, `lz_layer_norm`, `lz_rope_neox_qk`, `lz_swiglu`), then `lz_release`
//! each wrapped buffer (the memory stays its owner's) and [`lz_close`] the device (the
//! functions in code font exist with the `cuda` feature). Kernels run on the device's default stream, PyTorch's default stream too, so
//! its events time them. A call returns 0, or -1 with the reason in [`lz_last_error`];
//! nothing unwinds across the boundary (a panic becomes an error).
//!
//! Built without the `cuda` feature (as the workspace builds by default), [`lz_open`]
//! fails saying so and the kernel functions are absent.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

#[cfg(feature = "cuda")]
mod gpu;
#[cfg(feature = "cuda")]
pub use gpu::{Buffer, lz_layer_norm, lz_release, lz_rms_norm, lz_rope_neox_qk, lz_swiglu, lz_wrap};

thread_local! {
    /// The message of this thread's last failed call.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `message` as this thread's last error.
fn set_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Runs `body`; 0 when it succeeds, -1 (with the message kept for [`lz_last_error`]) when
/// it fails or panics.
fn guarded(body: impl FnOnce() -> Result<(), String>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(message)) => {
            set_error(message);
            -1
        }
        Err(_) => {
            set_error("layerzero-bench-ffi: a call panicked".to_owned());
            -1
        }
    }
}

/// Copies this thread's last error message into `buf` (at most `len - 1` bytes, then a
/// NUL) and returns the message's full length in bytes; `buf` may be null to ask for the
/// length alone.
///
/// # Safety
/// `buf` is null or points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lz_last_error(buf: *mut c_char, len: usize) -> usize {
    LAST_ERROR.with(|e| {
        let message = e.borrow();
        if !buf.is_null() && len > 0 {
            let n = message.len().min(len - 1);
            // SAFETY: the caller vouches for `len` writable bytes at `buf`; `n + 1 <= len`.
            unsafe {
                std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
                *buf.add(n) = 0;
            }
        }
        message.len()
    })
}

/// One GPU, as [`lz_open`] returns it.
pub struct Gpu {
    #[cfg(feature = "cuda")]
    device: layerzero_kernels::cuda::CudaDevice,
}

/// Opens GPU `ordinal` and loads LayerZero's kernels on it; null (see [`lz_last_error`])
/// when there is no such GPU, no driver, or the library was built without CUDA.
#[unsafe(no_mangle)]
pub extern "C" fn lz_open(ordinal: u32) -> *mut Gpu {
    let mut gpu = None;
    guarded(|| {
        gpu = Some(open(ordinal)?);
        Ok(())
    });
    gpu.map_or(std::ptr::null_mut(), |g| Box::into_raw(Box::new(g)))
}

#[cfg(feature = "cuda")]
fn open(ordinal: u32) -> Result<Gpu, String> {
    let devices = layerzero_kernels::cuda::discover().map_err(|e| e.to_string())?;
    let found = devices.len();
    let device = devices
        .into_iter()
        .nth(ordinal as usize)
        .ok_or_else(|| format!("no GPU {ordinal}: this machine has {found} (no driver counts as none)"))?;
    device.load_modules().map_err(|e| e.to_string())?;
    Ok(Gpu { device })
}

#[cfg(not(feature = "cuda"))]
fn open(_ordinal: u32) -> Result<Gpu, String> {
    Err("layerzero-bench-ffi was built without its `cuda` feature".to_owned())
}

/// Closes a GPU from [`lz_open`] (null: nothing to do). Release its buffers first.
///
/// # Safety
/// `gpu` is null or came from [`lz_open`] and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lz_close(gpu: *mut Gpu) {
    if !gpu.is_null() {
        // SAFETY: the caller hands back the box `lz_open` made.
        drop(unsafe { Box::from_raw(gpu) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: a null buffer asks for the length only; then a buffer of that length + 1.
        let len = unsafe { lz_last_error(std::ptr::null_mut(), 0) };
        let mut buf = vec![0 as c_char; len + 1];
        // SAFETY: `buf` has `len + 1` writable bytes.
        unsafe { lz_last_error(buf.as_mut_ptr(), buf.len()) };
        let bytes: Vec<u8> = buf[..len].iter().map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn opening_a_gpu_that_is_not_there_fails_with_a_reason() {
        let gpu = lz_open(4096);
        assert!(gpu.is_null());
        let message = last_error();
        assert!(message.contains("no GPU 4096") || message.contains("without its `cuda` feature"), "{message}");
        // SAFETY: null is allowed.
        unsafe { lz_close(gpu) };
    }

    #[test]
    fn the_error_message_is_truncated_to_the_buffer_and_terminated() {
        set_error("abcdef".to_owned());
        let mut buf = [1 as c_char; 4];
        // SAFETY: `buf` has 4 writable bytes.
        let len = unsafe { lz_last_error(buf.as_mut_ptr(), buf.len()) };
        assert_eq!(len, 6);
        assert_eq!(buf.map(|c| c as u8), *b"abc\0");
    }

    #[test]
    fn a_panic_becomes_an_error() {
        assert_eq!(guarded(|| panic!("boom")), -1);
        assert!(last_error().contains("panicked"));
        assert_eq!(guarded(|| Ok(())), 0);
    }
}
