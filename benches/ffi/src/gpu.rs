//! The kernel calls, on buffers wrapped from raw device addresses.

use std::mem::ManuallyDrop;

use cudarc::driver::{CudaSlice, sys};
use layerzero_kernels::cuda::{LayerNormVariant, RmsNormVariant, RopeVariant, SwigluVariant, SwigluViews};
use layerzero_types::{DType, RopeStyle, TensorView, TensorViewMut};

use crate::{Gpu, guarded};

/// Device memory of another owner, as [`lz_wrap`] returns it. LayerZero never frees it:
/// [`lz_release`] lets go of the handle only.
pub struct Buffer {
    slice: ManuallyDrop<CudaSlice<u8>>,
}

/// Wraps `len` bytes of device memory at `address` on `gpu` (a PyTorch tensor's
/// `data_ptr()` and `nbytes`) for the kernel calls; null (see
/// [`lz_last_error`](crate::lz_last_error)) when the range is not inside one allocation
/// of the GPU's context, or lies on another GPU.
///
/// # Safety
/// `gpu` came from [`lz_open`](crate::lz_open) and is open. The memory must stay allocated
/// until [`lz_release`], and while kernels queued on it run.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lz_wrap(gpu: *const Gpu, address: u64, len: usize) -> *mut Buffer {
    let mut buffer = None;
    guarded(|| {
        // SAFETY: the caller vouches that `gpu` is open.
        let gpu = unsafe { gpu.as_ref() }.ok_or("gpu is null")?;
        let stream = gpu.device.stream();
        stream.context().bind_to_thread().map_err(|e| e.to_string())?;
        let (mut base, mut size) = (0, 0);
        // SAFETY: two writable locals; the driver checks `address` itself.
        let status = unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, address) };
        let inside = address.checked_add(len as u64).is_some_and(|end| end <= base + size as u64);
        if status != sys::cudaError_enum::CUDA_SUCCESS || !inside {
            return Err(format!(
                "{len} bytes at {address:#x} are not inside one allocation of {} ({status:?})",
                gpu.device.device()
            ));
        }
        let mut ordinal: i32 = -1;
        // SAFETY: the driver writes one int (the device ordinal) through a pointer to a
        // live local.
        let status = unsafe {
            sys::cuPointerGetAttribute(
                (&raw mut ordinal).cast(),
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                address,
            )
        };
        let expected = gpu.device.device().ordinal().map(i32::from);
        if status != sys::cudaError_enum::CUDA_SUCCESS || Some(ordinal) != expected {
            return Err(format!(
                "memory at {address:#x} is on cuda:{ordinal}, not {} ({status:?}); LayerZero never copies it",
                gpu.device.device()
            ));
        }
        // SAFETY: the range lies inside a live allocation of this context (checked above),
        // which the caller keeps alive; the slice is never freed (`ManuallyDrop`, then
        // `leak` in `lz_release`).
        let slice = unsafe { stream.upgrade_device_ptr::<u8>(address, len) };
        buffer = Some(Buffer { slice: ManuallyDrop::new(slice) });
        Ok(())
    });
    buffer.map_or(std::ptr::null_mut(), |b| Box::into_raw(Box::new(b)))
}

/// Lets go of a buffer from [`lz_wrap`] (null: nothing to do); the memory stays its owner's.
///
/// # Safety
/// `buffer` is null or came from [`lz_wrap`] and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lz_release(buffer: *mut Buffer) {
    if !buffer.is_null() {
        // SAFETY: the caller hands back the box `lz_wrap` made.
        let buffer = unsafe { Box::from_raw(buffer) };
        // Waits for the work queued on it as a drop would, then forgets the address.
        let _ = ManuallyDrop::into_inner(buffer.slice).leak();
    }
}

/// `0` bfloat16, `1` float16, `2` float32.
fn dtype(code: u32) -> Result<DType, String> {
    match code {
        0 => Ok(DType::BF16),
        1 => Ok(DType::F16),
        2 => Ok(DType::F32),
        other => Err(format!("dtype code {other} is none of 0 (bf16), 1 (f16), 2 (f32)")),
    }
}

/// The handles of one call: each must be non-null, and a written one may be passed only
/// once (Rust would otherwise hold a writable reference to a buffer beside another
/// reference to it). A buffer read twice is fine.
struct Handles {
    written: Vec<*const Buffer>,
    read: Vec<*const Buffer>,
}

impl Handles {
    fn new() -> Handles {
        Handles { written: Vec::with_capacity(2), read: Vec::with_capacity(4) }
    }

    /// A buffer the call writes.
    ///
    /// # Safety
    /// `b` is null or a live buffer from [`lz_wrap`].
    unsafe fn write<'a>(&mut self, what: &str, b: *mut Buffer) -> Result<&'a mut CudaSlice<u8>, String> {
        let b_const = b.cast_const();
        if self.written.contains(&b_const) || self.read.contains(&b_const) {
            return Err(format!("{what} is passed twice"));
        }
        // SAFETY: the caller vouches for `b`; no other reference of this call points to it
        // (checked above, and every later handle is checked against it).
        let buffer = unsafe { b.as_mut() }.ok_or_else(|| format!("{what} is null"))?;
        self.written.push(b_const);
        Ok(&mut buffer.slice)
    }

    /// A buffer the call reads.
    ///
    /// # Safety
    /// As [`write`](Self::write).
    unsafe fn read<'a>(&mut self, what: &str, b: *const Buffer) -> Result<&'a CudaSlice<u8>, String> {
        if self.written.contains(&b) {
            return Err(format!("{what} is also written"));
        }
        // SAFETY: the caller vouches for `b`; no writable reference of this call points to
        // it (checked above).
        let buffer = unsafe { b.as_ref() }.ok_or_else(|| format!("{what} is null"))?;
        self.read.push(b);
        Ok(&buffer.slice)
    }
}

fn view<'a>(slice: &'a CudaSlice<u8>, dims: &[usize], dtype: DType) -> Result<TensorView<'a>, String> {
    TensorView::from_cuda(slice, dims, dtype).map_err(|e| e.to_string())
}

fn view_mut<'a>(slice: &'a mut CudaSlice<u8>, dims: &[usize], dtype: DType) -> Result<TensorViewMut<'a>, String> {
    TensorViewMut::from_cuda(slice, dims, dtype).map_err(|e| e.to_string())
}

/// One kernel call: the GPU and the dtype resolved, the call's handles checked as taken,
/// and any error kept for [`lz_last_error`](crate::lz_last_error).
fn kernel_call(
    gpu: *const Gpu,
    dtype_code: u32,
    body: impl FnOnce(&Gpu, DType, &mut Handles) -> Result<(), String>,
) -> i32 {
    guarded(|| {
        // SAFETY: every caller's contract says `gpu` is null or open.
        let gpu = unsafe { gpu.as_ref() }.ok_or("gpu is null")?;
        body(gpu, dtype(dtype_code)?, &mut Handles::new())
    })
}

/// rms_norm (the block-per-row variant) of `x` `[rows, hidden]` into `y`, with weight
/// `[hidden]`; with `residual` and `residual_out` (both or neither), first
/// `residual_out = x + residual`, normalised in the same pass.
///
/// # Safety
/// `gpu` is open; each buffer is null (an error, except the residual pair) or live; each
/// holds exactly its shape's bytes.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lz_rms_norm(
    gpu: *const Gpu,
    x: *const Buffer,
    residual: *const Buffer,
    residual_out: *mut Buffer,
    weight: *const Buffer,
    y: *mut Buffer,
    rows: usize,
    hidden: usize,
    dtype_code: u32,
    eps: f32,
) -> i32 {
    kernel_call(gpu, dtype_code, |gpu, dtype, h| {
        let dims = [rows, hidden];
        // SAFETY (each handle): the caller vouches for the buffers; `Handles` refuses a
        // writable one passed twice.
        let y = view_mut(unsafe { h.write("y", y) }?, &dims, dtype)?;
        let residual = match (residual.is_null(), residual_out.is_null()) {
            (true, true) => None,
            (false, false) => {
                let out = view_mut(unsafe { h.write("residual_out", residual_out) }?, &dims, dtype)?;
                Some((view(unsafe { h.read("residual", residual) }?, &dims, dtype)?, out))
            }
            _ => return Err("residual and residual_out come together".to_owned()),
        };
        let x = view(unsafe { h.read("x", x) }?, &dims, dtype)?;
        let weight = view(unsafe { h.read("weight", weight) }?, &[hidden], dtype)?;
        gpu.device.rms_norm_view(RmsNormVariant::Block, x, residual, weight, y, eps).map_err(|e| e.to_string())
    })
}

/// layer_norm (the block-per-row variant) of `x` `[rows, hidden]` into `y`, with weight
/// and, unless null, bias `[hidden]`.
///
/// # Safety
/// As [`lz_rms_norm`].
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lz_layer_norm(
    gpu: *const Gpu,
    x: *const Buffer,
    weight: *const Buffer,
    bias: *const Buffer,
    y: *mut Buffer,
    rows: usize,
    hidden: usize,
    dtype_code: u32,
    eps: f32,
) -> i32 {
    kernel_call(gpu, dtype_code, |gpu, dtype, h| {
        // SAFETY (each handle): as in `lz_rms_norm`.
        let y = view_mut(unsafe { h.write("y", y) }?, &[rows, hidden], dtype)?;
        let x = view(unsafe { h.read("x", x) }?, &[rows, hidden], dtype)?;
        let weight = view(unsafe { h.read("weight", weight) }?, &[hidden], dtype)?;
        let bias = if bias.is_null() { None } else { Some(view(unsafe { h.read("bias", bias) }?, &[hidden], dtype)?) };
        gpu.device.layer_norm_view(LayerNormVariant::Block, x, weight, bias, y, eps).map_err(|e| e.to_string())
    })
}

/// NeoX rope of `q` `[tokens, q_heads, head_dim]` and `k` `[tokens, k_heads, head_dim]` in
/// place, in one launch (the vector variant), token `t` at position `offset + t` of the
/// float32 tables `cos` and `sin` `[positions, head_dim / 2]`.
///
/// # Safety
/// As [`lz_rms_norm`].
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lz_rope_neox_qk(
    gpu: *const Gpu,
    q: *mut Buffer,
    k: *mut Buffer,
    cos: *const Buffer,
    sin: *const Buffer,
    tokens: usize,
    q_heads: usize,
    k_heads: usize,
    head_dim: usize,
    positions: usize,
    dtype_code: u32,
    offset: usize,
) -> i32 {
    kernel_call(gpu, dtype_code, |gpu, dtype, h| {
        let table = [positions, head_dim / 2];
        // SAFETY (each handle): as in `lz_rms_norm`.
        let q = view_mut(unsafe { h.write("q", q) }?, &[1, tokens, q_heads, head_dim], dtype)?;
        let k = view_mut(unsafe { h.write("k", k) }?, &[1, tokens, k_heads, head_dim], dtype)?;
        let cos = view(unsafe { h.read("cos", cos) }?, &table, DType::F32)?;
        let sin = view(unsafe { h.read("sin", sin) }?, &table, DType::F32)?;
        gpu.device
            .rope_qk_in_place_view(RopeVariant::Vector, RopeStyle::Neox, q, k, cos, sin, offset)
            .map_err(|e| e.to_string())
    })
}

/// swiglu (the vector variant) into `out` `[rows, inter]`: `silu(gate) · up` with `gate`
/// and `up` `[rows, inter]`, or, when `up` is null, with `gate` the fused gate-up input
/// `[rows, 2 · inter]` (gate first in each row).
///
/// # Safety
/// As [`lz_rms_norm`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lz_swiglu(
    gpu: *const Gpu,
    gate: *const Buffer,
    up: *const Buffer,
    out: *mut Buffer,
    rows: usize,
    inter: usize,
    dtype_code: u32,
) -> i32 {
    kernel_call(gpu, dtype_code, |gpu, dtype, h| {
        // SAFETY (each handle): as in `lz_rms_norm`.
        let out = view_mut(unsafe { h.write("out", out) }?, &[rows, inter], dtype)?;
        let input = if up.is_null() {
            let fused = inter.checked_mul(2).ok_or("inter is too large")?;
            SwigluViews::Fused(view(unsafe { h.read("gate_up", gate) }?, &[rows, fused], dtype)?)
        } else {
            SwigluViews::Separate {
                gate: view(unsafe { h.read("gate", gate) }?, &[rows, inter], dtype)?,
                up: view(unsafe { h.read("up", up) }?, &[rows, inter], dtype)?,
            }
        };
        gpu.device.swiglu_view(SwigluVariant::Vector, input, out).map_err(|e| e.to_string())
    })
}
