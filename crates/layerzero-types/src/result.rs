//! What a dispatch returns.

use crate::KernelId;

/// Where the time of one dispatch went, in nanoseconds.
///
/// `total_ns` covers the whole call; `selection_ns` the context, cache and selection;
/// `execution_ns` the kernel (and any fallbacks): the rest of the total, so the two parts
/// add up to it. All three are 0 where no time is recorded: `record_timing` off, or a
/// `#[static_dispatch]` router, which reads no clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchTiming {
    /// The whole call.
    pub total_ns: u64,
    /// Choosing the kernel.
    pub selection_ns: u64,
    /// Running it.
    pub execution_ns: u64,
}

impl DispatchTiming {
    /// The whole call, in microseconds.
    pub fn total_us(&self) -> f64 {
        self.total_ns as f64 / 1e3
    }

    /// Choosing the kernel, in microseconds.
    pub fn selection_us(&self) -> f64 {
        self.selection_ns as f64 / 1e3
    }

    /// Running it, in microseconds.
    pub fn execution_us(&self) -> f64 {
        self.execution_ns as f64 / 1e3
    }
}

/// The outcome of one dispatch: the output, which kernel produced it, how long it took,
/// and whether a fallback kernel ran instead of the first choice.
///
/// `O` is whatever the call produces: an owned tensor, or `()` when the kernel wrote into
/// a buffer the caller passed.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchResult<O> {
    /// The output.
    pub output: O,
    /// The kernel that produced it.
    pub kernel_id: KernelId,
    /// Where the time went.
    pub timing: DispatchTiming,
    /// Whether the first choice failed (or was refused) and a fallback produced the output.
    pub was_fallback: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsecond_accessors() {
        let timing = DispatchTiming { total_ns: 2_500, selection_ns: 40, execution_ns: 2_000 };
        assert_eq!(timing.total_us(), 2.5);
        assert_eq!(timing.selection_us(), 0.04);
        assert_eq!(timing.execution_us(), 2.0);
    }
}
