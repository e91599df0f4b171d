//! The C interface on a GPU: each kernel call gives, byte for byte, what the library's own
//! call gives on the same inputs, and every bad call is refused with a reason.
//!
//! `cargo test -p layerzero-bench-ffi --features cuda --test ffi_gpu`; without a GPU each test
//! prints why it skips.
#![cfg(feature = "cuda")]
// A test fails by panicking: unwrapping is how it reports.
#![allow(clippy::unwrap_used)]

use std::ffi::c_char;

use cudarc::driver::DevicePtr;
use layerzero_bench_ffi::{
    Buffer, Gpu, lz_close, lz_last_error, lz_layer_norm, lz_open, lz_release, lz_rms_norm, lz_rope_neox_qk, lz_swiglu,
    lz_wrap,
};
use layerzero_kernels::cuda::{
    self, CudaDevice, LayerNormVariant, RmsNormVariant, RopeTables, RopeVariant, SwigluDeviceInput, SwigluVariant,
};
use layerzero_types::{DType, RopeStyle, Tensor};

const BF16: u32 = 0;

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 512];
    // SAFETY: `buf` has 512 writable bytes.
    unsafe { lz_last_error(buf.as_mut_ptr(), buf.len()) };
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The library's own device (for the reference calls) and the interface's handle on GPU 0.
struct Both {
    device: CudaDevice,
    gpu: *mut Gpu,
    wrapped: Vec<*mut Buffer>,
}

impl Both {
    fn open() -> Option<Both> {
        let device = match cuda::discover() {
            Ok(devices) => devices.into_iter().next(),
            Err(e) => {
                eprintln!("skipping: CUDA discovery failed: {e}");
                return None;
            }
        };
        let Some(device) = device else {
            eprintln!("skipping: no CUDA GPU here (no driver, or no device)");
            return None;
        };
        let gpu = lz_open(0);
        assert!(!gpu.is_null(), "lz_open: {}", last_error());
        Some(Both { device, gpu, wrapped: Vec::new() })
    }

    fn tensor(&self, dims: &[usize], dtype: DType, seed: u64) -> Tensor {
        let n = dims.iter().product();
        let values: Vec<f32> =
            (0..n).map(|i| (((i as u64 * 7919 + seed * 104_729) % 2000) as f32 - 1000.0) / 400.0).collect();
        Tensor::from_f32(&values, dims, dtype).unwrap().to_cuda(self.device.stream()).unwrap()
    }

    /// The interface's handle on a tensor's memory (released when the test ends).
    fn wrap(&mut self, t: &Tensor) -> *mut Buffer {
        let slice = t.cuda_bytes().unwrap();
        let (address, _guard) = slice.device_ptr(self.device.stream());
        // SAFETY: the GPU is open; the tensor outlives the handle (released in `drop`,
        // before the tensors of the test body are freed, after a synchronize).
        let buffer = unsafe { lz_wrap(self.gpu, address, slice.len()) };
        assert!(!buffer.is_null(), "lz_wrap: {}", last_error());
        self.wrapped.push(buffer);
        buffer
    }

    fn bytes(&self, t: &Tensor) -> Vec<u8> {
        self.device.synchronize().unwrap();
        t.to_host().unwrap().as_bytes().unwrap().to_vec()
    }
}

impl Drop for Both {
    fn drop(&mut self) {
        let _ = self.device.synchronize();
        for b in self.wrapped.drain(..) {
            // SAFETY: each came from `lz_wrap` and is released once.
            unsafe { lz_release(b) };
        }
        // SAFETY: from `lz_open`, closed once.
        unsafe { lz_close(self.gpu) };
    }
}

#[test]
fn each_kernel_gives_what_the_library_gives() {
    let Some(mut g) = Both::open() else { return };
    let (rows, hidden) = (5, 4096);
    let x = g.tensor(&[rows, hidden], DType::BF16, 1);
    let r = g.tensor(&[rows, hidden], DType::BF16, 2);
    let w = g.tensor(&[hidden], DType::BF16, 3);
    let b = g.tensor(&[hidden], DType::BF16, 4);
    let (hx, hr, hw, hb) = (g.wrap(&x), g.wrap(&r), g.wrap(&w), g.wrap(&b));

    // rms_norm, plain and with the residual add.
    let mut want = g.tensor(&[rows, hidden], DType::BF16, 9);
    let got = g.tensor(&[rows, hidden], DType::BF16, 9);
    let hgot = g.wrap(&got);
    g.device.rms_norm(RmsNormVariant::Block, &x, None, &w, &mut want, 1e-6).unwrap();
    // SAFETY: every handle is live and holds its shape's bytes.
    assert_eq!(
        unsafe { lz_rms_norm(g.gpu, hx, std::ptr::null(), std::ptr::null_mut(), hw, hgot, rows, hidden, BF16, 1e-6) },
        0,
        "{}",
        last_error()
    );
    assert_eq!(g.bytes(&got), g.bytes(&want), "rms_norm");

    let mut want_sum = g.tensor(&[rows, hidden], DType::BF16, 9);
    let got_sum = g.tensor(&[rows, hidden], DType::BF16, 9);
    let hsum = g.wrap(&got_sum);
    g.device.rms_norm(RmsNormVariant::Block, &x, Some((&r, &mut want_sum)), &w, &mut want, 1e-6).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { lz_rms_norm(g.gpu, hx, hr, hsum, hw, hgot, rows, hidden, BF16, 1e-6) }, 0, "{}", last_error());
    assert_eq!(g.bytes(&got), g.bytes(&want), "add+rms_norm output");
    assert_eq!(g.bytes(&got_sum), g.bytes(&want_sum), "add+rms_norm sum");

    // layer_norm with a bias.
    g.device.layer_norm(LayerNormVariant::Block, &x, &w, Some(&b), &mut want, 1e-5).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { lz_layer_norm(g.gpu, hx, hw, hb, hgot, rows, hidden, BF16, 1e-5) }, 0, "{}", last_error());
    assert_eq!(g.bytes(&got), g.bytes(&want), "layer_norm");

    // swiglu, two inputs and fused.
    let fused = g.tensor(&[rows, 2 * hidden], DType::BF16, 5);
    let hfused = g.wrap(&fused);
    g.device.swiglu(SwigluVariant::Vector, SwigluDeviceInput::Separate { gate: &x, up: &r }, &mut want).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { lz_swiglu(g.gpu, hx, hr, hgot, rows, hidden, BF16) }, 0, "{}", last_error());
    assert_eq!(g.bytes(&got), g.bytes(&want), "swiglu");
    g.device.swiglu(SwigluVariant::Vector, SwigluDeviceInput::Fused(&fused), &mut want).unwrap();
    // SAFETY: as above; a null `up` means `gate` is the fused input.
    assert_eq!(unsafe { lz_swiglu(g.gpu, hfused, std::ptr::null(), hgot, rows, hidden, BF16) }, 0, "{}", last_error());
    assert_eq!(g.bytes(&got), g.bytes(&want), "swiglu fused");

    // NeoX rope of q and k in place, positions offset by 3.
    let (tokens, q_heads, k_heads, d, positions) = (6, 4, 2, 128, 16);
    let cos = g.tensor(&[positions, d / 2], DType::F32, 6);
    let sin = g.tensor(&[positions, d / 2], DType::F32, 7);
    let mut q_want = g.tensor(&[1, tokens, q_heads, d], DType::BF16, 8);
    let mut k_want = g.tensor(&[1, tokens, k_heads, d], DType::BF16, 10);
    let (q_got, k_got) =
        (g.tensor(&[1, tokens, q_heads, d], DType::BF16, 8), g.tensor(&[1, tokens, k_heads, d], DType::BF16, 10));
    let (hq, hk, hc, hs) = (g.wrap(&q_got), g.wrap(&k_got), g.wrap(&cos), g.wrap(&sin));
    let tables = RopeTables { cos: &cos, sin: &sin };
    g.device.rope_qk_in_place(RopeVariant::Vector, RopeStyle::Neox, &mut q_want, &mut k_want, tables, 3).unwrap();
    // SAFETY: as above.
    let rc = unsafe { lz_rope_neox_qk(g.gpu, hq, hk, hc, hs, tokens, q_heads, k_heads, d, positions, BF16, 3) };
    assert_eq!(rc, 0, "{}", last_error());
    assert_eq!(g.bytes(&q_got), g.bytes(&q_want), "rope q");
    assert_eq!(g.bytes(&k_got), g.bytes(&k_want), "rope k");
}

#[test]
fn bad_calls_are_refused_with_a_reason() {
    let Some(mut g) = Both::open() else { return };
    let (rows, hidden) = (2, 64);
    let x = g.tensor(&[rows, hidden], DType::BF16, 1);
    let w = g.tensor(&[hidden], DType::BF16, 2);
    let y = g.tensor(&[rows, hidden], DType::BF16, 3);
    let (hx, hw, hy) = (g.wrap(&x), g.wrap(&w), g.wrap(&y));
    let null = std::ptr::null_mut::<Buffer>();

    // A range past the end of its allocation is not wrapped.
    let slice = x.cuda_bytes().unwrap();
    let address = slice.device_ptr(g.device.stream()).0;
    // SAFETY: the GPU is open; the call only asks the driver about the range.
    let past = unsafe { lz_wrap(g.gpu, address, slice.len() + (64 << 20)) };
    assert!(past.is_null());
    assert!(last_error().contains("not inside one allocation"), "{}", last_error());

    let refused = |rc: i32, expected: &str| {
        assert_eq!(rc, -1);
        let message = last_error();
        assert!(message.contains(expected), "expected `{expected}` in `{message}`");
    };
    // SAFETY (every call below): the handles are live or null, which the calls refuse.
    unsafe {
        refused(lz_rms_norm(std::ptr::null(), hx, null, null, hw, hy, rows, hidden, BF16, 1e-6), "gpu is null");
        refused(lz_rms_norm(g.gpu, null, null, null, hw, hy, rows, hidden, BF16, 1e-6), "x is null");
        refused(lz_rms_norm(g.gpu, hx, hx, null, hw, hy, rows, hidden, BF16, 1e-6), "come together");
        refused(lz_rms_norm(g.gpu, hy, null, null, hw, hy, rows, hidden, BF16, 1e-6), "x is also written");
        refused(lz_rms_norm(g.gpu, hx, hx, hy, hw, hy, rows, hidden, BF16, 1e-6), "residual_out is passed twice");
        refused(lz_rms_norm(g.gpu, hx, null, null, hw, hy, rows, hidden, 7, 1e-6), "dtype code 7");
        refused(
            lz_rms_norm(g.gpu, hx, null, null, hw, hy, rows + 1, hidden, BF16, 1e-6),
            "needs 192 elements, the data has 128",
        );
        // One tensor of [rows, hidden] is not a fused gate-up input of [rows, 2 · hidden].
        refused(lz_swiglu(g.gpu, hx, null, hy, rows, hidden, BF16), "needs 256 elements, the data has 128");
        // A buffer read twice is fine: swiglu of x with itself, x added to itself.
        assert_eq!(lz_swiglu(g.gpu, hx, hx, hy, rows, hidden, BF16), 0, "{}", last_error());
        let mut sum = g.tensor(&[rows, hidden], DType::BF16, 4);
        let hsum = g.wrap(&sum);
        assert_eq!(lz_rms_norm(g.gpu, hx, hx, hsum, hw, hy, rows, hidden, BF16, 1e-6), 0, "{}", last_error());
        let mut want = g.tensor(&[rows, hidden], DType::BF16, 5);
        g.device.rms_norm(RmsNormVariant::Block, &x, Some((&x, &mut sum)), &w, &mut want, 1e-6).unwrap();
        assert_eq!(g.bytes(&y), g.bytes(&want), "x + x, normalised");
        // A refusal leaves the interface usable.
        assert_eq!(lz_rms_norm(g.gpu, hx, null, null, hw, hy, rows, hidden, BF16, 1e-6), 0, "{}", last_error());
    }
}

/// Host memory is not device memory. (The driver's answer is a failed call, which the
/// sanitizers report: `run.sh` skips this test under them.)
#[test]
fn host_memory_is_not_wrapped() {
    let Some(g) = Both::open() else { return };
    let host = vec![0u8; 256];
    // SAFETY: the GPU is open; the call only asks the driver about the range.
    let on_host = unsafe { lz_wrap(g.gpu, host.as_ptr() as u64, host.len()) };
    assert!(on_host.is_null());
    assert!(last_error().contains("not inside one allocation"), "{}", last_error());
}
