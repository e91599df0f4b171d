//! Tensors: an owned [`Tensor`], and [`TensorView`] / [`TensorViewMut`] borrowed over a
//! caller's memory without a copy.
//!
//! Kernels take views, so an engine that already owns its buffers passes them in place.
//! Shapes and strides are stored inline (up to [`MAX_RANK`] dimensions): making a view
//! allocates nothing. Every view is bounds-checked when it is made, so a kernel indexing
//! within its shape and strides can never read past the data.

use std::fmt;

use half::{bf16, f16};

use crate::{DType, Device, Element, FloatElement, TypesError};

/// The largest rank a tensor may have.
pub const MAX_RANK: usize = 6;

/// A tensor's dimensions, stored inline. Its element count is known to fit in `usize`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: u8,
    numel: usize,
}

impl Shape {
    /// A shape with these dimensions; fails above [`MAX_RANK`] or when the element count
    /// overflows.
    pub fn new(dims: &[usize]) -> Result<Shape, TypesError> {
        if dims.len() > MAX_RANK {
            return Err(TypesError::RankTooLarge { rank: dims.len(), max: MAX_RANK });
        }
        let numel = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| TypesError::ShapeOverflow { shape: dims.to_vec() })?;
        let mut inline = [0; MAX_RANK];
        inline[..dims.len()].copy_from_slice(dims);
        // `dims.len() <= MAX_RANK` was checked above, so it fits in a u8.
        Ok(Shape { dims: inline, rank: dims.len() as u8, numel })
    }

    /// The dimensions.
    #[inline]
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank()]
    }

    /// The number of dimensions.
    #[inline]
    pub fn rank(&self) -> usize {
        usize::from(self.rank)
    }

    /// The number of elements.
    #[inline]
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Row-major strides (in elements) for this shape.
    pub fn contiguous_strides(&self) -> Strides {
        let mut strides = [0; MAX_RANK];
        let mut step = 1;
        for axis in (0..self.rank()).rev() {
            strides[axis] = step;
            // Cannot overflow: the product of all dims fits in usize.
            step *= self.dims[axis].max(1);
        }
        Strides { values: strides, rank: self.rank }
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.dims().fmt(f)
    }
}

/// A view's strides, in elements, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Strides {
    values: [usize; MAX_RANK],
    rank: u8,
}

impl Strides {
    /// The strides, one per dimension.
    #[inline]
    pub fn as_slice(&self) -> &[usize] {
        &self.values[..usize::from(self.rank)]
    }
}

impl fmt::Debug for Strides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

/// Metadata every tensor-like value has: shape, dtype, device.
pub trait TensorMeta {
    /// The shape.
    fn shape(&self) -> &Shape;
    /// The element type.
    fn dtype(&self) -> DType;
    /// Where the data lives.
    fn device(&self) -> Device;
}

/// The shape `dims`, which must hold exactly `len` elements.
fn shape_holding(dims: &[usize], len: usize) -> Result<Shape, TypesError> {
    let shape = Shape::new(dims)?;
    if shape.numel() != len {
        return Err(TypesError::ElementCountMismatch { shape: dims.to_vec(), expected: shape.numel(), actual: len });
    }
    Ok(shape)
}

/// Checks that `dims` with `strides` stays within `len` elements, returning both inline.
fn checked_layout(dims: &[usize], strides: &[usize], len: usize) -> Result<(Shape, Strides), TypesError> {
    let shape = Shape::new(dims)?;
    if strides.len() != dims.len() {
        return Err(TypesError::StridesOutOfBounds {
            shape: dims.to_vec(),
            strides: strides.to_vec(),
            needed: 0,
            available: len,
        });
    }
    let mut inline = [0; MAX_RANK];
    inline[..strides.len()].copy_from_slice(strides);
    let strides_inline = Strides { values: inline, rank: shape.rank };
    if shape.numel() == 0 {
        return Ok((shape, strides_inline));
    }
    // One past the furthest element reachable: 1 + Σ (dim - 1) · stride.
    let furthest = dims
        .iter()
        .zip(strides)
        .try_fold(0usize, |acc, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x)))
        .and_then(|x| x.checked_add(1));
    match furthest {
        Some(needed) if needed <= len => Ok((shape, strides_inline)),
        _ => Err(TypesError::StridesOutOfBounds {
            shape: dims.to_vec(),
            strides: strides.to_vec(),
            needed: furthest.unwrap_or(usize::MAX),
            available: len,
        }),
    }
}

fn is_contiguous(shape: &Shape, strides: &Strides) -> bool {
    let expected = shape.contiguous_strides();
    shape.dims().iter().zip(strides.as_slice().iter().zip(expected.as_slice())).all(|(&d, (s, e))| d <= 1 || s == e)
}

fn cast<T: Element>(bytes: &[u8], dtype: DType) -> Result<&[T], TypesError> {
    if dtype != T::DTYPE {
        return Err(TypesError::DTypeMismatch { expected: T::DTYPE, actual: dtype });
    }
    bytemuck::try_cast_slice(bytes).map_err(|_| TypesError::Misaligned { dtype, align: align_of::<T>() })
}

fn cast_mut<T: Element>(bytes: &mut [u8], dtype: DType) -> Result<&mut [T], TypesError> {
    if dtype != T::DTYPE {
        return Err(TypesError::DTypeMismatch { expected: T::DTYPE, actual: dtype });
    }
    bytemuck::try_cast_slice_mut(bytes).map_err(|_| TypesError::Misaligned { dtype, align: align_of::<T>() })
}

fn check_alignment(bytes: &[u8], dtype: DType) -> Result<(), TypesError> {
    // Element types are naturally aligned (size = alignment for every dtype here).
    let align = dtype.size_in_bytes();
    if bytes.as_ptr().align_offset(align) != 0 {
        return Err(TypesError::Misaligned { dtype, align });
    }
    Ok(())
}

/// A read-only view of memory as a tensor: host memory, or (with the `cuda` feature) device
/// memory, whose host accessors ([`as_slice`](Self::as_slice), [`strided_data`](Self::strided_data))
/// return [`TypesError::DeviceMismatch`] naming the device instead of reading it.
///
/// ```
/// use layerzero_types::{DType, TensorView};
///
/// let data = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let view = TensorView::from_slice(&data, &[2, 3]).unwrap();
/// assert_eq!(view.dtype(), DType::F32);
/// assert_eq!(view.as_slice::<f32>().unwrap()[4], 5.0);
///
/// // The transpose, as strides over the same memory.
/// let t = TensorView::from_slice_strided(&data, &[3, 2], &[1, 3]).unwrap();
/// assert!(!t.is_contiguous());
/// assert!(t.as_slice::<f32>().is_err());
/// ```
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    /// Host memory; empty for a device view.
    bytes: &'a [u8],
    /// Device memory, for a view of a CUDA tensor; `None` on the host.
    #[cfg(feature = "cuda")]
    cuda: Option<&'a cudarc::driver::CudaSlice<u8>>,
    shape: Shape,
    strides: Strides,
    dtype: DType,
    device: Device,
}

impl<'a> TensorView<'a> {
    /// A contiguous view of `data` with these dimensions.
    pub fn from_slice<T: Element>(data: &'a [T], dims: &[usize]) -> Result<Self, TypesError> {
        let shape = shape_holding(dims, data.len())?;
        Self::from_slice_strided(data, dims, shape.contiguous_strides().as_slice())
    }

    /// A view of `data` with explicit strides (in elements); every reachable element must
    /// be inside `data`.
    pub fn from_slice_strided<T: Element>(
        data: &'a [T],
        dims: &[usize],
        strides: &[usize],
    ) -> Result<Self, TypesError> {
        let (shape, strides) = checked_layout(dims, strides, data.len())?;
        Ok(TensorView {
            bytes: bytemuck::cast_slice(data),
            #[cfg(feature = "cuda")]
            cuda: None,
            shape,
            strides,
            dtype: T::DTYPE,
            device: Device::Cpu,
        })
    }

    /// A contiguous view of raw bytes as `dtype` (for dtypes without a Rust type, such as
    /// the float8 formats). The bytes must be aligned for the dtype.
    pub fn from_bytes(bytes: &'a [u8], dims: &[usize], dtype: DType) -> Result<Self, TypesError> {
        check_alignment(bytes, dtype)?;
        let shape = Shape::new(dims)?;
        let len = bytes.len() / dtype.size_in_bytes();
        if shape.numel() != len || !bytes.len().is_multiple_of(dtype.size_in_bytes()) {
            return Err(TypesError::ElementCountMismatch {
                shape: dims.to_vec(),
                expected: shape.numel(),
                actual: len,
            });
        }
        let strides = shape.contiguous_strides();
        Ok(TensorView {
            bytes,
            #[cfg(feature = "cuda")]
            cuda: None,
            shape,
            strides,
            dtype,
            device: Device::Cpu,
        })
    }

    /// The elements in row-major order; fails unless the view is contiguous and of type `T`.
    pub fn as_slice<T: Element>(&self) -> Result<&'a [T], TypesError> {
        if !self.is_contiguous() {
            return Err(TypesError::NotContiguous { shape: self.dims().to_vec(), strides: self.strides().to_vec() });
        }
        let all = cast::<T>(self.host_bytes()?, self.dtype)?;
        Ok(&all[..self.numel()])
    }

    /// The memory behind the view, to index with [`strides`](Self::strides): element
    /// `[i, j, ..]` is at `i * strides[0] + j * strides[1] + ..`, always in bounds.
    pub fn strided_data<T: Element>(&self) -> Result<&'a [T], TypesError> {
        cast::<T>(self.host_bytes()?, self.dtype)
    }

    /// The host memory behind the view; for a device view, an error naming its device.
    #[inline(always)]
    fn host_bytes(&self) -> Result<&'a [u8], TypesError> {
        #[cfg(feature = "cuda")]
        if self.cuda.is_some() {
            return Err(TypesError::DeviceMismatch { expected: Device::Cpu, actual: self.device });
        }
        Ok(self.bytes)
    }

    /// The same contiguous data with other dimensions of equal element count.
    pub fn reshape(&self, dims: &[usize]) -> Result<TensorView<'a>, TypesError> {
        let shape = reshaped(&self.shape, &self.strides, dims)?;
        Ok(TensorView { shape, strides: shape.contiguous_strides(), ..*self })
    }

    /// The same memory with axes `a` and `b` swapped (dims and strides), without a copy:
    /// a `[n, k]` linear weight seen as the `[k, n]` right operand of a matmul. Host or
    /// device alike; it reaches the same elements, so it stays in bounds.
    pub fn transpose(&self, a: usize, b: usize) -> Result<TensorView<'a>, TypesError> {
        let rank = self.shape.rank();
        if a >= rank || b >= rank {
            return Err(TypesError::InvalidContext {
                field: "transpose",
                message: format!("axes {a} and {b} of a rank-{rank} tensor"),
            });
        }
        let (mut dims, mut strides) = (self.shape.dims().to_vec(), self.strides.as_slice().to_vec());
        dims.swap(a, b);
        strides.swap(a, b);
        let mut view = *self;
        view.shape = Shape::new(&dims)?;
        view.strides.values[..rank].copy_from_slice(&strides);
        Ok(view)
    }
}

fn reshaped(shape: &Shape, strides: &Strides, dims: &[usize]) -> Result<Shape, TypesError> {
    if !is_contiguous(shape, strides) {
        return Err(TypesError::NotContiguous { shape: shape.dims().to_vec(), strides: strides.as_slice().to_vec() });
    }
    let new = Shape::new(dims)?;
    if new.numel() != shape.numel() {
        return Err(TypesError::ElementCountMismatch {
            shape: dims.to_vec(),
            expected: new.numel(),
            actual: shape.numel(),
        });
    }
    Ok(new)
}

/// The metadata accessors and [`TensorMeta`] of the tensor types, which all store
/// `shape`, `dtype` and `device`.
macro_rules! tensor_metadata {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// The dimensions.
            #[inline]
            pub fn dims(&self) -> &[usize] {
                self.shape.dims()
            }

            /// The element type.
            #[inline]
            pub fn dtype(&self) -> DType {
                self.dtype
            }

            /// Where the data lives.
            #[inline]
            pub fn device(&self) -> Device {
                self.device
            }

            /// The number of elements.
            #[inline]
            pub fn numel(&self) -> usize {
                self.shape.numel()
            }
        }

        impl TensorMeta for $ty {
            #[inline]
            fn shape(&self) -> &Shape {
                &self.shape
            }
            #[inline]
            fn dtype(&self) -> DType {
                self.dtype
            }
            #[inline]
            fn device(&self) -> Device {
                self.device
            }
        }
    )*};
}

/// The stride accessors of the two view types.
macro_rules! view_strides {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// The strides, in elements.
            pub fn strides(&self) -> &[usize] {
                self.strides.as_slice()
            }

            /// Whether the view is dense and row-major.
            pub fn is_contiguous(&self) -> bool {
                is_contiguous(&self.shape, &self.strides)
            }
        }
    )*};
}

tensor_metadata!(TensorView<'_>, TensorViewMut<'_>, Tensor);
view_strides!(TensorView<'_>, TensorViewMut<'_>);

impl fmt::Debug for TensorView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorView")
            .field("shape", &self.shape)
            .field("strides", &self.strides)
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// A writable view of memory as a tensor: where kernels write their outputs. Like
/// [`TensorView`], it may be of device memory, which its host accessors refuse.
///
/// ```
/// use layerzero_types::TensorViewMut;
///
/// let mut out = vec![0.0f32; 4];
/// let mut view = TensorViewMut::from_slice(&mut out, &[2, 2]).unwrap();
/// view.as_mut_slice::<f32>().unwrap()[3] = 1.0;
/// assert_eq!(out, [0.0, 0.0, 0.0, 1.0]);
/// ```
pub struct TensorViewMut<'a> {
    /// Host memory; empty for a device view.
    bytes: &'a mut [u8],
    /// Device memory, for a view of a CUDA tensor; `None` on the host.
    #[cfg(feature = "cuda")]
    cuda: Option<&'a mut cudarc::driver::CudaSlice<u8>>,
    shape: Shape,
    strides: Strides,
    dtype: DType,
    device: Device,
}

impl<'a> TensorViewMut<'a> {
    /// A contiguous writable view of `data` with these dimensions.
    pub fn from_slice<T: Element>(data: &'a mut [T], dims: &[usize]) -> Result<Self, TypesError> {
        let shape = shape_holding(dims, data.len())?;
        let strides = shape.contiguous_strides();
        Ok(TensorViewMut {
            bytes: bytemuck::cast_slice_mut(data),
            #[cfg(feature = "cuda")]
            cuda: None,
            shape,
            strides,
            dtype: T::DTYPE,
            device: Device::Cpu,
        })
    }

    /// A writable view with explicit strides (in elements); every reachable element must be
    /// inside `data`. Strides that make two indices share an element are allowed; the
    /// kernel then writes that element more than once.
    pub fn from_slice_strided<T: Element>(
        data: &'a mut [T],
        dims: &[usize],
        strides: &[usize],
    ) -> Result<Self, TypesError> {
        let (shape, strides) = checked_layout(dims, strides, data.len())?;
        Ok(TensorViewMut {
            bytes: bytemuck::cast_slice_mut(data),
            #[cfg(feature = "cuda")]
            cuda: None,
            shape,
            strides,
            dtype: T::DTYPE,
            device: Device::Cpu,
        })
    }

    /// A read-only view of the same memory.
    pub fn as_view(&self) -> TensorView<'_> {
        TensorView {
            bytes: self.bytes,
            #[cfg(feature = "cuda")]
            cuda: self.cuda.as_deref(),
            shape: self.shape,
            strides: self.strides,
            dtype: self.dtype,
            device: self.device,
        }
    }

    /// A shorter-lived writable view of the same memory, so this one can be used again.
    pub fn reborrow(&mut self) -> TensorViewMut<'_> {
        TensorViewMut {
            bytes: self.bytes,
            #[cfg(feature = "cuda")]
            cuda: self.cuda.as_deref_mut(),
            shape: self.shape,
            strides: self.strides,
            dtype: self.dtype,
            device: self.device,
        }
    }

    /// The elements in row-major order, writable; fails unless contiguous and of type `T`.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T], TypesError> {
        if !self.is_contiguous() {
            return Err(TypesError::NotContiguous { shape: self.dims().to_vec(), strides: self.strides().to_vec() });
        }
        let numel = self.numel();
        let dtype = self.dtype;
        let all = cast_mut::<T>(self.host_bytes_mut()?, dtype)?;
        Ok(&mut all[..numel])
    }

    /// The memory behind the view, writable, to index with [`strides`](Self::strides).
    pub fn strided_data_mut<T: Element>(&mut self) -> Result<&mut [T], TypesError> {
        let dtype = self.dtype;
        cast_mut::<T>(self.host_bytes_mut()?, dtype)
    }

    /// The host memory behind the view; for a device view, an error naming its device.
    #[inline(always)]
    fn host_bytes_mut(&mut self) -> Result<&mut [u8], TypesError> {
        #[cfg(feature = "cuda")]
        if self.cuda.is_some() {
            return Err(TypesError::DeviceMismatch { expected: Device::Cpu, actual: self.device });
        }
        Ok(self.bytes)
    }

    /// The same contiguous memory with other dimensions of equal element count.
    pub fn reshape(self, dims: &[usize]) -> Result<TensorViewMut<'a>, TypesError> {
        let shape = reshaped(&self.shape, &self.strides, dims)?;
        Ok(TensorViewMut { shape, strides: shape.contiguous_strides(), ..self })
    }
}

impl fmt::Debug for TensorViewMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_view().fmt(f).map(|_| ())
    }
}

/// Host memory of some element type, kept in a `Vec` of that type so that it is aligned
/// for it; seen as bytes, and cast back to the type by views.
trait HostBytes: Send + Sync {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
    fn clone_box(&self) -> Box<dyn HostBytes>;
}

impl<T: bytemuck::Pod + Send + Sync> HostBytes for Vec<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(self)
    }
    fn clone_box(&self) -> Box<dyn HostBytes> {
        Box::new(self.clone())
    }
}

enum Storage {
    Host(Box<dyn HostBytes>),
    #[cfg(feature = "cuda")]
    Cuda(cudarc::driver::CudaSlice<u8>),
}

impl Clone for Storage {
    fn clone(&self) -> Self {
        match self {
            Storage::Host(host) => Storage::Host(host.clone_box()),
            #[cfg(feature = "cuda")]
            Storage::Cuda(slice) => Storage::Cuda(slice.clone()),
        }
    }
}

/// An owned tensor: dense, row-major, on the host (or, with the `cuda` feature, on a GPU).
///
/// For tests, the CLI, and callers who want LayerZero to own a buffer. Kernels work on
/// views, which a tensor lends with [`view`](Self::view) and [`view_mut`](Self::view_mut).
///
/// ```
/// use layerzero_types::{DType, Tensor};
///
/// let t = Tensor::from_f32(&[1.0, 2.0, 3.0, 4.0], &[2, 2], DType::BF16).unwrap();
/// assert_eq!(t.dtype(), DType::BF16);
/// assert_eq!(t.to_f32_vec().unwrap(), [1.0, 2.0, 3.0, 4.0]);
/// assert!(t.as_slice::<f32>().is_err()); // it holds bf16, not f32
/// ```
#[derive(Clone)]
pub struct Tensor {
    storage: Storage,
    shape: Shape,
    dtype: DType,
    device: Device,
}

impl Tensor {
    /// A host tensor that takes ownership of `data`, without a copy.
    pub fn from_vec<T: Element>(data: Vec<T>, dims: &[usize]) -> Result<Tensor, TypesError> {
        let shape = shape_holding(dims, data.len())?;
        Ok(Tensor { storage: Storage::Host(Box::new(data)), shape, dtype: T::DTYPE, device: Device::Cpu })
    }

    /// A host tensor of zeros.
    pub fn zeros(dims: &[usize], dtype: DType) -> Result<Tensor, TypesError> {
        let shape = Shape::new(dims)?;
        let n = shape.numel();
        let bytes =
            n.checked_mul(dtype.size_in_bytes()).ok_or_else(|| TypesError::ShapeOverflow { shape: dims.to_vec() })?;
        // Fallible allocation: a huge shape is an error, not an abort.
        fn filled<T: bytemuck::Pod + Send + Sync>(n: usize, bytes: usize) -> Result<Box<dyn HostBytes>, TypesError> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).map_err(|_| TypesError::AllocationFailed { bytes })?;
            v.resize(n, T::zeroed());
            Ok(Box::new(v))
        }
        let host = match dtype {
            DType::F16 => filled::<f16>(n, bytes)?,
            DType::BF16 => filled::<bf16>(n, bytes)?,
            DType::F32 => filled::<f32>(n, bytes)?,
            DType::F64 => filled::<f64>(n, bytes)?,
            DType::I8 => filled::<i8>(n, bytes)?,
            DType::U8 | DType::F8E4M3 | DType::F8E5M2 => filled::<u8>(n, bytes)?,
            DType::I32 => filled::<i32>(n, bytes)?,
            DType::I64 => filled::<i64>(n, bytes)?,
        };
        Ok(Tensor { storage: Storage::Host(host), shape, dtype, device: Device::Cpu })
    }

    /// A host tensor of `dtype` (a float type: f16, bf16, f32, f64) from `f32` values,
    /// rounding to nearest even.
    pub fn from_f32(values: &[f32], dims: &[usize], dtype: DType) -> Result<Tensor, TypesError> {
        fn narrow<T: FloatElement>(values: &[f32]) -> Vec<T> {
            values.iter().map(|&v| T::from_f32(v)).collect()
        }
        match dtype {
            DType::F32 => Tensor::from_vec(values.to_vec(), dims),
            DType::F16 => Tensor::from_vec(narrow::<f16>(values), dims),
            DType::BF16 => Tensor::from_vec(narrow::<bf16>(values), dims),
            DType::F64 => Tensor::from_vec(values.iter().map(|&v| f64::from(v)).collect(), dims),
            other => Err(TypesError::UnsupportedDType { operation: "Tensor::from_f32", dtype: other }),
        }
    }

    /// A host tensor of `dtype` from its raw little-endian bytes (copied into storage
    /// aligned for the dtype). The way to make tensors of dtypes without a Rust type, such
    /// as the float8 formats.
    pub fn from_bytes(bytes: &[u8], dims: &[usize], dtype: DType) -> Result<Tensor, TypesError> {
        let shape = Shape::new(dims)?;
        let elements = bytes.len() / dtype.size_in_bytes();
        if elements != shape.numel() || !bytes.len().is_multiple_of(dtype.size_in_bytes()) {
            return Err(TypesError::ElementCountMismatch {
                shape: dims.to_vec(),
                expected: shape.numel(),
                actual: elements,
            });
        }
        fn copied<T: bytemuck::Pod + Send + Sync>(bytes: &[u8]) -> Box<dyn HostBytes> {
            Box::new(bytemuck::pod_collect_to_vec::<u8, T>(bytes))
        }
        let host = match dtype {
            DType::F16 => copied::<f16>(bytes),
            DType::BF16 => copied::<bf16>(bytes),
            DType::F32 => copied::<f32>(bytes),
            DType::F64 => copied::<f64>(bytes),
            DType::I8 => copied::<i8>(bytes),
            DType::U8 | DType::F8E4M3 | DType::F8E5M2 => Box::new(bytes.to_vec()),
            DType::I32 => copied::<i32>(bytes),
            DType::I64 => copied::<i64>(bytes),
        };
        Ok(Tensor { storage: Storage::Host(host), shape, dtype, device: Device::Cpu })
    }

    /// The raw bytes of a host tensor.
    pub fn as_bytes(&self) -> Result<&[u8], TypesError> {
        self.host_bytes()
    }

    /// The values widened to `f32`, for a host tensor of a float type (f64 is rounded).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, TypesError> {
        fn widen<T: FloatElement>(values: &[T]) -> Vec<f32> {
            values.iter().map(|&v| v.to_f32()).collect()
        }
        match self.dtype {
            DType::F32 => Ok(self.as_slice::<f32>()?.to_vec()),
            DType::F16 => Ok(widen(self.as_slice::<f16>()?)),
            DType::BF16 => Ok(widen(self.as_slice::<bf16>()?)),
            DType::F64 => Ok(self.as_slice::<f64>()?.iter().map(|&v| v as f32).collect()),
            other => Err(TypesError::UnsupportedDType { operation: "Tensor::to_f32_vec", dtype: other }),
        }
    }

    /// The size of the data in bytes.
    pub fn size_in_bytes(&self) -> usize {
        // Checked when the tensor was made.
        self.numel() * self.dtype.size_in_bytes()
    }

    fn host_bytes(&self) -> Result<&[u8], TypesError> {
        match &self.storage {
            Storage::Host(host) => Ok(host.bytes()),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(TypesError::DeviceMismatch { expected: Device::Cpu, actual: self.device }),
        }
    }

    fn host_bytes_mut(&mut self) -> Result<&mut [u8], TypesError> {
        match &mut self.storage {
            Storage::Host(host) => Ok(host.bytes_mut()),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(TypesError::DeviceMismatch { expected: Device::Cpu, actual: self.device }),
        }
    }

    /// A read-only view: of host memory for a host tensor, of device memory (which host
    /// accessors refuse) for a CUDA tensor.
    pub fn view(&self) -> TensorView<'_> {
        // A tensor's storage always matches its shape and dtype. A device tensor lends an
        // empty host slice beside its device memory; the view's host accessors refuse it.
        TensorView {
            bytes: self.host_bytes().unwrap_or(&[]),
            #[cfg(feature = "cuda")]
            cuda: match &self.storage {
                Storage::Cuda(slice) => Some(slice),
                Storage::Host(_) => None,
            },
            shape: self.shape,
            strides: self.shape.contiguous_strides(),
            dtype: self.dtype,
            device: self.device,
        }
    }

    /// A writable view: of host memory for a host tensor, of device memory (which host
    /// accessors refuse) for a CUDA tensor.
    pub fn view_mut(&mut self) -> TensorViewMut<'_> {
        let (shape, dtype, device) = (self.shape, self.dtype, self.device);
        match &mut self.storage {
            Storage::Host(host) => TensorViewMut {
                bytes: host.bytes_mut(),
                #[cfg(feature = "cuda")]
                cuda: None,
                shape,
                strides: shape.contiguous_strides(),
                dtype,
                device,
            },
            #[cfg(feature = "cuda")]
            Storage::Cuda(slice) => TensorViewMut {
                bytes: &mut [],
                cuda: Some(slice),
                shape,
                strides: shape.contiguous_strides(),
                dtype,
                device,
            },
        }
    }

    /// The elements of a host tensor of type `T`.
    pub fn as_slice<T: Element>(&self) -> Result<&[T], TypesError> {
        cast::<T>(self.host_bytes()?, self.dtype)
    }

    /// The elements of a host tensor of type `T`, writable.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T], TypesError> {
        let dtype = self.dtype;
        cast_mut::<T>(self.host_bytes_mut()?, dtype)
    }

    /// The same data with other dimensions of equal element count.
    pub fn reshape(mut self, dims: &[usize]) -> Result<Tensor, TypesError> {
        self.shape = reshaped(&self.shape, &self.shape.contiguous_strides(), dims)?;
        Ok(self)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Arc;

    use cudarc::driver::{CudaSlice, CudaStream};

    use super::{Storage, Tensor, TensorView, TensorViewMut, checked_layout};
    use crate::{DType, Device, TypesError};

    fn driver_error(e: cudarc::driver::DriverError) -> TypesError {
        TypesError::Cuda { message: e.to_string() }
    }

    /// The device a slice was allocated on.
    fn device_of(slice: &CudaSlice<u8>) -> Result<Device, TypesError> {
        u16::try_from(slice.ordinal())
            .map(Device::Cuda)
            .map_err(|_| TypesError::Cuda { message: "device ordinal above 65535".into() })
    }

    /// Whole elements of `dtype` in `bytes` bytes, or the error of a partial one.
    fn elements(bytes: usize, dims: &[usize], dtype: DType) -> Result<usize, TypesError> {
        let size = dtype.size_in_bytes();
        if !bytes.is_multiple_of(size) {
            return Err(TypesError::ElementCountMismatch {
                shape: dims.to_vec(),
                expected: super::Shape::new(dims)?.numel(),
                actual: bytes / size,
            });
        }
        Ok(bytes / size)
    }

    /// What a host view's device accessor says: the view is not in device memory.
    fn on_host() -> TypesError {
        TypesError::DeviceMismatch { expected: Device::Cuda(0), actual: Device::Cpu }
    }

    impl<'a> TensorView<'a> {
        /// A view of device memory as `dtype` with these dimensions and strides (in
        /// elements); every reachable element must be inside `slice`. CUDA allocations are
        /// aligned for every dtype.
        pub fn from_cuda_strided(
            slice: &'a CudaSlice<u8>,
            dims: &[usize],
            strides: &[usize],
            dtype: DType,
        ) -> Result<Self, TypesError> {
            let len = elements(slice.len(), dims, dtype)?;
            let (shape, strides) = checked_layout(dims, strides, len)?;
            Ok(TensorView { bytes: &[], cuda: Some(slice), shape, strides, dtype, device: device_of(slice)? })
        }

        /// A contiguous view of all of `slice` as `dtype` with these dimensions.
        pub fn from_cuda(slice: &'a CudaSlice<u8>, dims: &[usize], dtype: DType) -> Result<Self, TypesError> {
            let shape = super::shape_holding(dims, elements(slice.len(), dims, dtype)?)?;
            Self::from_cuda_strided(slice, dims, shape.contiguous_strides().as_slice(), dtype)
        }

        /// The device memory behind a device view, to index with
        /// [`strides`](Self::strides); an error for a host view.
        pub fn cuda_bytes(&self) -> Result<&'a CudaSlice<u8>, TypesError> {
            self.cuda.ok_or_else(on_host)
        }
    }

    impl<'a> TensorViewMut<'a> {
        /// A writable view of device memory; see [`TensorView::from_cuda_strided`].
        pub fn from_cuda_strided(
            slice: &'a mut CudaSlice<u8>,
            dims: &[usize],
            strides: &[usize],
            dtype: DType,
        ) -> Result<Self, TypesError> {
            let len = elements(slice.len(), dims, dtype)?;
            let (shape, strides) = checked_layout(dims, strides, len)?;
            let device = device_of(slice)?;
            Ok(TensorViewMut { bytes: &mut [], cuda: Some(slice), shape, strides, dtype, device })
        }

        /// A contiguous writable view of all of `slice` as `dtype` with these dimensions.
        pub fn from_cuda(slice: &'a mut CudaSlice<u8>, dims: &[usize], dtype: DType) -> Result<Self, TypesError> {
            let shape = super::shape_holding(dims, elements(slice.len(), dims, dtype)?)?;
            Self::from_cuda_strided(slice, dims, shape.contiguous_strides().as_slice(), dtype)
        }

        /// The device memory behind a device view, writable; an error for a host view.
        pub fn cuda_bytes_mut(&mut self) -> Result<&mut CudaSlice<u8>, TypesError> {
            self.cuda.as_deref_mut().ok_or_else(on_host)
        }

        /// The device memory behind a device view; an error for a host view.
        pub fn cuda_bytes(&self) -> Result<&CudaSlice<u8>, TypesError> {
            self.cuda.as_deref().ok_or_else(on_host)
        }
    }

    impl Tensor {
        /// Copies a host tensor to the GPU of `stream`.
        pub fn to_cuda(&self, stream: &Arc<CudaStream>) -> Result<Tensor, TypesError> {
            let bytes = self.host_bytes()?;
            let slice = stream.clone_htod(bytes).map_err(driver_error)?;
            let ordinal = u16::try_from(stream.context().ordinal())
                .map_err(|_| TypesError::Cuda { message: "device ordinal above 65535".into() })?;
            Ok(Tensor {
                storage: Storage::Cuda(slice),
                shape: self.shape,
                dtype: self.dtype,
                device: Device::Cuda(ordinal),
            })
        }

        /// Copies a tensor to the host (a copy even when it is there already).
        pub fn to_host(&self) -> Result<Tensor, TypesError> {
            match &self.storage {
                Storage::Host(_) => Ok(self.clone()),
                Storage::Cuda(slice) => {
                    let bytes = slice.stream().clone_dtoh(slice).map_err(driver_error)?;
                    Tensor::from_bytes(&bytes, self.shape.dims(), self.dtype)
                }
            }
        }

        /// The device memory of a CUDA tensor, as bytes.
        pub fn cuda_bytes(&self) -> Result<&CudaSlice<u8>, TypesError> {
            match &self.storage {
                Storage::Cuda(slice) => Ok(slice),
                Storage::Host(_) => Err(TypesError::DeviceMismatch { expected: Device::Cuda(0), actual: Device::Cpu }),
            }
        }

        /// The device memory of a CUDA tensor, as bytes, writable.
        pub fn cuda_bytes_mut(&mut self) -> Result<&mut CudaSlice<u8>, TypesError> {
            match &mut self.storage {
                Storage::Cuda(slice) => Ok(slice),
                Storage::Host(_) => Err(TypesError::DeviceMismatch { expected: Device::Cuda(0), actual: Device::Cpu }),
            }
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_check_rank_and_overflow() {
        assert_eq!(Shape::new(&[2, 3, 4]).unwrap().numel(), 24);
        assert_eq!(Shape::new(&[]).unwrap().numel(), 1);
        assert_eq!(Shape::new(&[5, 0]).unwrap().numel(), 0);
        assert!(matches!(Shape::new(&[1; 7]), Err(TypesError::RankTooLarge { rank: 7, max: 6 })));
        assert!(matches!(Shape::new(&[usize::MAX, 2]), Err(TypesError::ShapeOverflow { .. })));
        assert_eq!(Shape::new(&[2, 3, 4]).unwrap().contiguous_strides().as_slice(), [12, 4, 1]);
    }

    #[test]
    fn views_check_length_dtype_and_bounds() {
        let data = [0f32; 12];
        assert!(matches!(
            TensorView::from_slice(&data, &[5, 3]),
            Err(TypesError::ElementCountMismatch { expected: 15, actual: 12, .. })
        ));
        let view = TensorView::from_slice(&data, &[3, 4]).unwrap();
        assert!(matches!(
            view.as_slice::<half::bf16>(),
            Err(TypesError::DTypeMismatch { expected: DType::BF16, actual: DType::F32 })
        ));
        // The furthest element of [3, 4] with strides [4, 2] is 2*4 + 3*2 = 14 > 11.
        assert!(matches!(
            TensorView::from_slice_strided(&data, &[3, 4], &[4, 2]),
            Err(TypesError::StridesOutOfBounds { needed: 15, available: 12, .. })
        ));
        assert!(TensorView::from_slice_strided(&data, &[3, 4], &[4]).is_err());
        assert!(TensorView::from_slice_strided(&data, &[3, 2], &[4, 2]).is_ok());
        assert!(TensorView::from_slice_strided(&data, &[0, 100], &[1000, 1000]).is_ok());
    }

    #[test]
    fn contiguity_ignores_unit_dimensions() {
        let data = [0f32; 8];
        // A unit dimension's stride never moves, so any value is in bounds and contiguous.
        let v = TensorView::from_slice_strided(&data, &[1, 8], &[999, 1]).unwrap();
        assert!(v.is_contiguous());
        assert_eq!(v.as_slice::<f32>().unwrap().len(), 8);
        let v = TensorView::from_slice_strided(&data, &[2, 4], &[999, 1]);
        assert!(v.is_err(), "a stride past the data is refused");
    }

    #[test]
    fn transposes_swap_dims_and_strides_over_the_same_memory() {
        let data: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let v = TensorView::from_slice(&data, &[2, 3]).unwrap();
        let t = v.transpose(0, 1).unwrap();
        assert_eq!((t.dims(), t.strides()), (&[3, 2][..], &[1, 3][..]));
        // Element [2, 1] of the transpose is element [1, 2] of the original.
        assert_eq!(t.strided_data::<f32>().unwrap()[2 * t.strides()[0] + t.strides()[1]], 5.0);
        assert!(v.transpose(0, 2).is_err());
    }

    #[test]
    fn byte_views_need_alignment_and_whole_elements() {
        let words = [0u32; 4];
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        assert!(TensorView::from_bytes(bytes, &[8], DType::BF16).is_ok());
        assert!(matches!(
            TensorView::from_bytes(&bytes[1..5], &[2], DType::BF16),
            Err(TypesError::Misaligned { align: 2, .. })
        ));
        assert!(TensorView::from_bytes(&bytes[..3], &[1], DType::BF16).is_err());
        let fp8 = TensorView::from_bytes(bytes, &[4, 4], DType::F8E4M3).unwrap();
        assert_eq!(fp8.dtype(), DType::F8E4M3);
    }

    #[test]
    fn tensors_lend_views_and_reshape() {
        let mut t = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
        t.view_mut().as_mut_slice::<f32>().unwrap()[0] = 10.0;
        assert_eq!(t.as_slice::<f32>().unwrap()[0], 10.0);
        let v = t.view().reshape(&[3, 2]).unwrap();
        assert_eq!(v.dims(), [3, 2]);
        assert!(t.view().reshape(&[4, 2]).is_err());
        let t = t.reshape(&[6]).unwrap();
        assert_eq!(t.dims(), [6]);
    }

    #[test]
    fn half_precision_round_trips() {
        let values = [0.5, -1.25, 3.0, 65504.0];
        for dtype in [DType::F16, DType::BF16, DType::F32, DType::F64] {
            let t = Tensor::from_f32(&values, &[4], dtype).unwrap();
            assert_eq!(t.size_in_bytes(), 4 * dtype.size_in_bytes());
            let back = t.to_f32_vec().unwrap();
            for (a, b) in values.iter().zip(&back) {
                assert!((a - b).abs() <= a.abs() * 1e-2, "{dtype}: {a} vs {b}");
            }
        }
        assert!(Tensor::from_f32(&values, &[4], DType::I32).is_err());
        assert!(Tensor::zeros(&[2], DType::I64).unwrap().to_f32_vec().is_err());
    }

    #[test]
    fn tensors_from_raw_bytes() {
        let bytes: Vec<u8> = (0..8).collect();
        let fp8 = Tensor::from_bytes(&bytes, &[2, 4], DType::F8E5M2).unwrap();
        assert_eq!((fp8.dtype(), fp8.as_bytes().unwrap()), (DType::F8E5M2, bytes.as_slice()));
        let halves = Tensor::from_bytes(&bytes[1..], &[2, 2], DType::BF16);
        assert!(matches!(halves, Err(TypesError::ElementCountMismatch { .. })), "7 bytes are not 4 bf16");
        let halves = Tensor::from_bytes(&bytes, &[4], DType::F16).unwrap();
        assert_eq!(halves.as_slice::<f16>().unwrap()[0], f16::from_bits(0x0100));
    }

    #[test]
    fn zeros_are_typed_by_dtype() {
        for dtype in DType::ALL {
            let t = Tensor::zeros(&[3, 5], dtype).unwrap();
            assert_eq!(t.view().dtype(), dtype);
            assert_eq!(t.size_in_bytes(), 15 * dtype.size_in_bytes());
        }
        assert!(matches!(Tensor::zeros(&[usize::MAX / 2, 4], DType::F32), Err(TypesError::ShapeOverflow { .. })));
        assert!(matches!(Tensor::zeros(&[1 << 62], DType::F32), Err(TypesError::ShapeOverflow { .. })));
        assert!(matches!(Tensor::zeros(&[1 << 60], DType::U8), Err(TypesError::AllocationFailed { .. })));
    }
}
