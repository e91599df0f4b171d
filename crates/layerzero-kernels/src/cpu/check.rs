//! Argument checks shared by the CPU kernels: each failure says what was expected.

use layerzero_types::{DType, Device, KernelError, TensorView, TensorViewMut};

pub(crate) fn invalid(message: String) -> KernelError {
    KernelError::InvalidArgument(message)
}

/// The metadata the checks read, from a read-only or a writable view.
pub(crate) struct Meta<'a> {
    pub(crate) name: &'static str,
    pub(crate) dims: &'a [usize],
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    pub(crate) contiguous: bool,
}

impl<'a> Meta<'a> {
    pub(crate) fn of(name: &'static str, view: &'a TensorView<'_>) -> Self {
        Meta { name, dims: view.dims(), dtype: view.dtype(), device: view.device(), contiguous: view.is_contiguous() }
    }

    pub(crate) fn of_mut(name: &'static str, view: &'a TensorViewMut<'_>) -> Self {
        Meta { name, dims: view.dims(), dtype: view.dtype(), device: view.device(), contiguous: view.is_contiguous() }
    }
}

/// Every tensor is on the host and of the first tensor's dtype.
pub(crate) fn same_host_dtype(kernel: &str, tensors: &[&Meta<'_>]) -> Result<DType, KernelError> {
    let Some(first) = tensors.first() else {
        return Err(invalid(format!("{kernel}: no tensors given")));
    };
    for t in tensors {
        if t.device != Device::Cpu {
            return Err(invalid(format!("{kernel}: {} must be on the cpu, it is on {}", t.name, t.device)));
        }
        if t.dtype != first.dtype {
            return Err(invalid(format!(
                "{kernel}: {} must have the dtype of {} ({}), it has {}",
                t.name, first.name, first.dtype, t.dtype
            )));
        }
    }
    Ok(first.dtype)
}

/// The tensor is dense and row-major (this kernel does not read strides).
pub(crate) fn contiguous(kernel: &str, t: &Meta<'_>) -> Result<(), KernelError> {
    if t.contiguous {
        Ok(())
    } else {
        Err(KernelError::Unsupported(format!("{kernel}: {} must be contiguous (row-major, no gaps)", t.name)))
    }
}

/// The tensor has exactly these dimensions.
pub(crate) fn dims_equal(kernel: &str, t: &Meta<'_>, expected: &[usize], why: &str) -> Result<(), KernelError> {
    if t.dims == expected {
        Ok(())
    } else {
        Err(invalid(format!("{kernel}: {} must have shape {expected:?} ({why}), it has {:?}", t.name, t.dims)))
    }
}
