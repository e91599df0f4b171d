//! The one error type of this crate.

use std::fmt;
use std::time::Duration;

use layerzero_types::KernelId;

use crate::CircuitState;

/// Why a breaker refused a call, a configuration or a registration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError {
    /// The configuration has one or more invalid fields; all of them are listed.
    #[error("invalid circuit breaker config: {}", join(.problems))]
    InvalidConfig {
        /// Every invalid field, in declaration order.
        problems: Vec<ConfigProblem>,
    },
    /// The breaker is OPEN (cooldown not over, or forced open), or HALF_OPEN with all of its
    /// trial permits taken. Seed 003's `CircuitOpenError`.
    #[error("circuit is {state}: call refused")]
    CircuitOpen {
        /// The state that refused the call (`Open` or `HalfOpen`).
        state: CircuitState,
        /// How long until the cooldown ends, when that is what the call waits for;
        /// `None` when forced open or when waiting for a trial call to finish.
        retry_after: Option<Duration>,
    },
    /// [`CircuitBreakerRegistry::insert`](crate::CircuitBreakerRegistry::insert) for a kernel
    /// that has a breaker already.
    #[error("kernel `{kernel}` already has a circuit breaker")]
    AlreadyExists {
        /// The kernel.
        kernel: KernelId,
    },
}

/// One invalid field of a [`CircuitBreakerConfig`](crate::CircuitBreakerConfig).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// The field's name, as in seed 000 (`failure_threshold`, `cooldown_seconds`, ...).
    pub field: &'static str,
    /// The rejected value, as written in Rust.
    pub value: String,
    /// What is wrong with it, as a lower-case phrase.
    pub message: &'static str,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (got {})", self.field, self.message, self.value)
    }
}

fn join(problems: &[ConfigProblem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
