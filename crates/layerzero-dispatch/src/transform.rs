//! Layout transforms (`enable_transforms`): running an attention kernel whose spec takes
//! only another layout than the caller's tensors are in.
//!
//! The two layouts, BSHD and BHSD, differ by the order of the sequence and head axes. The
//! transform copies query, key and value into contiguous scratch tensors in the kernel's
//! layout, gives the kernel a scratch output in that layout, and copies the result back
//! into the caller's output in the caller's layout (with the caller's strides). It works on
//! host memory, for every dtype with a Rust element type; tensors in device memory are
//! refused (the executor then skips the kernel). It allocates four tensors per call, so it
//! is a convenience for kernels that would otherwise not run at all, not a fast path.

use half::{bf16, f16};
use layerzero_types::{
    AttentionArgs, DType, Device, Element, KernelError, KernelImpl, KernelSpec, Layout, OpArgs, Tensor, TensorView,
    TensorViewMut,
};

/// The layouts a kernel's spec accepts, as bits (`Layout::ALL` order); all when it names none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayoutSet(u8);

impl LayoutSet {
    pub(crate) const ANY: LayoutSet = LayoutSet(0b11);

    pub(crate) fn of(spec: &KernelSpec) -> LayoutSet {
        match &spec.constraints.layouts {
            None => LayoutSet::ANY,
            Some(layouts) => LayoutSet(layouts.iter().fold(0, |bits, layout| bits | bit(*layout))),
        }
    }

    #[inline]
    pub(crate) fn accepts(self, layout: Layout) -> bool {
        self.0 & bit(layout) != 0
    }

    /// The layout to transform into: the first accepted.
    pub(crate) fn first(self) -> Option<Layout> {
        Layout::ALL.into_iter().find(|layout| self.accepts(*layout))
    }
}

const fn bit(layout: Layout) -> u8 {
    match layout {
        Layout::Bshd => 1,
        Layout::Bhsd => 2,
    }
}

/// A kernel's code and the layouts its spec accepts.
#[derive(Clone)]
pub(crate) struct KernelEntry {
    pub(crate) code: KernelImpl,
    pub(crate) layouts: LayoutSet,
}

impl KernelEntry {
    pub(crate) fn new(spec: &KernelSpec, code: KernelImpl) -> KernelEntry {
        KernelEntry { code, layouts: LayoutSet::of(spec) }
    }

    /// The layout the kernel needs for `args` when it is not theirs (attention only).
    #[inline]
    pub(crate) fn needs_layout(&self, args: &OpArgs<'_>) -> Option<Layout> {
        match args {
            OpArgs::Attention(attention) if !self.layouts.accepts(attention.layout) => self.layouts.first(),
            _ => None,
        }
    }
}

/// Why a transform could not be made (the kernel is then skipped, not blamed).
pub(crate) type TransformError = String;

/// Runs `code` on `args` transformed into `target`, then writes its output back into
/// `args.output` in `args.layout`. The outer `Err` is a transform that could not be made;
/// the inner result is the kernel's.
pub(crate) fn run_in_layout(
    code: &KernelImpl,
    args: &mut AttentionArgs<'_>,
    target: Layout,
) -> Result<Result<(), KernelError>, TransformError> {
    for (name, device) in [
        ("query", args.query.device()),
        ("key", args.key.device()),
        ("value", args.value.device()),
        ("output", args.output.device()),
    ] {
        if device != Device::Cpu {
            return Err(format!("{name} is in {device} memory; layout transforms copy host memory only"));
        }
    }
    let query = transposed(&args.query)?;
    let key = transposed(&args.key)?;
    let value = transposed(&args.value)?;
    let mut output = Tensor::zeros(&swap(args.output.dims())?, args.output.dtype()).map_err(|e| e.to_string())?;
    let mut transformed = OpArgs::Attention(AttentionArgs {
        query: query.view(),
        key: key.view(),
        value: value.view(),
        output: output.view_mut(),
        layout: target,
        is_causal: args.is_causal,
        scale: args.scale,
        window_size: args.window_size,
    });
    let outcome = code.call(&mut transformed);
    if outcome.is_ok() {
        write_back(&output.view(), &mut args.output)?;
    }
    Ok(outcome)
}

/// `[a, b, c, d]` → `[a, c, b, d]`, for 4-D shapes.
fn swap(dims: &[usize]) -> Result<[usize; 4], TransformError> {
    match dims {
        [a, b, c, d] => Ok([*a, *c, *b, *d]),
        _ => Err(format!("attention tensors are 4-D, got shape {dims:?}")),
    }
}

/// A contiguous copy of a 4-D view with axes 1 and 2 swapped.
fn transposed(view: &TensorView<'_>) -> Result<Tensor, TransformError> {
    let dims = swap(view.dims())?;
    macro_rules! by_dtype {
        ($($dtype:path => $ty:ty),*) => {
            match view.dtype() {
                $($dtype => copy_swapped::<$ty>(view, dims),)*
                other => Err(format!("no layout transform for {other} tensors")),
            }
        };
    }
    by_dtype!(DType::F32 => f32, DType::F16 => f16, DType::BF16 => bf16, DType::F64 => f64,
              DType::I8 => i8, DType::U8 => u8, DType::I32 => i32, DType::I64 => i64)
}

fn copy_swapped<T: Element>(view: &TensorView<'_>, dims: [usize; 4]) -> Result<Tensor, TransformError> {
    let data = view.strided_data::<T>().map_err(|e| e.to_string())?;
    let [s0, s1, s2, s3] = strides4(view.strides())?;
    let mut out = Vec::with_capacity(dims.iter().product());
    // Target index [a, i, j, d] reads source [a, j, i, d].
    for a in 0..dims[0] {
        for i in 0..dims[1] {
            for j in 0..dims[2] {
                for d in 0..dims[3] {
                    let at = a * s0 + j * s1 + i * s2 + d * s3;
                    // In bounds: the view was checked to reach only elements inside `data`.
                    out.push(*data.get(at).ok_or_else(|| format!("element {at} is outside the view"))?);
                }
            }
        }
    }
    Tensor::from_vec(out, &dims).map_err(|e| e.to_string())
}

/// Copies contiguous `scratch` (axes 1 and 2 swapped) into `output` with its strides.
fn write_back(scratch: &TensorView<'_>, output: &mut TensorViewMut<'_>) -> Result<(), TransformError> {
    macro_rules! by_dtype {
        ($($dtype:path => $ty:ty),*) => {
            match output.dtype() {
                $($dtype => write_swapped::<$ty>(scratch, output),)*
                other => Err(format!("no layout transform for {other} tensors")),
            }
        };
    }
    by_dtype!(DType::F32 => f32, DType::F16 => f16, DType::BF16 => bf16, DType::F64 => f64,
              DType::I8 => i8, DType::U8 => u8, DType::I32 => i32, DType::I64 => i64)
}

fn write_swapped<T: Element>(scratch: &TensorView<'_>, output: &mut TensorViewMut<'_>) -> Result<(), TransformError> {
    let source = scratch.as_slice::<T>().map_err(|e| e.to_string())?;
    let dims = swap(output.dims())?;
    let [s0, s1, s2, s3] = strides4(output.strides())?;
    let target = output.strided_data_mut::<T>().map_err(|e| e.to_string())?;
    let mut next = source.iter();
    // Scratch index [a, i, j, d] (row-major) is output [a, j, i, d].
    for a in 0..dims[0] {
        for i in 0..dims[1] {
            for j in 0..dims[2] {
                for d in 0..dims[3] {
                    let value = next.next().ok_or("the scratch output is shorter than the output")?;
                    let at = a * s0 + j * s1 + i * s2 + d * s3;
                    *target.get_mut(at).ok_or_else(|| format!("element {at} is outside the output"))? = *value;
                }
            }
        }
    }
    Ok(())
}

fn strides4(strides: &[usize]) -> Result<[usize; 4], TransformError> {
    <[usize; 4]>::try_from(strides).map_err(|_| format!("attention tensors are 4-D, got strides {strides:?}"))
}
