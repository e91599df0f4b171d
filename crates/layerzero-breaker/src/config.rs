//! Seed 000's `CircuitBreakerConfig`, validated once into the integer settings the state
//! machine runs on.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::saturating_nanos;
use crate::error::{BreakerError, ConfigProblem};

/// The largest value a threshold or `half_open_max_calls` may have: each is held in 16 bits
/// of the breaker's one state word.
pub const MAX_COUNT: u32 = u16::MAX as u32;

/// How a breaker opens and recovers (seed 000). The defaults are the seed's.
///
/// ```
/// use layerzero_breaker::CircuitBreakerConfig;
///
/// let config = CircuitBreakerConfig {
///     failure_threshold: 3,   // open after 3 consecutive failures
///     success_threshold: 2,   // close after 2 successful trial calls
///     cooldown_seconds: 15.0, // wait 15 s before HALF_OPEN
///     half_open_max_calls: 2, // at most 2 trial calls at once
///     ..CircuitBreakerConfig::default()
/// };
/// assert!(config.validate().is_ok());
///
/// let bad = CircuitBreakerConfig { failure_threshold: 0, cooldown_seconds: -1.0, ..config };
/// let err = bad.validate().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid circuit breaker config: failure_threshold: must be at least 1 (got 0); \
///      cooldown_seconds: must be finite and not negative (got -1.0)"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures in CLOSED that open the breaker (1 to [`MAX_COUNT`]).
    pub failure_threshold: u32,
    /// Successful trial calls in HALF_OPEN that close it (1 to [`MAX_COUNT`]).
    pub success_threshold: u32,
    /// How long OPEN refuses every call before HALF_OPEN (finite, ≥ 0).
    pub cooldown_seconds: f64,
    /// Trial calls HALF_OPEN admits at once (1 to [`MAX_COUNT`]).
    pub half_open_max_calls: u32,
    /// When set, a breaker that has not closed this long after it last opened is closed by
    /// force at the next call (finite, ≥ 0).
    pub reset_timeout_seconds: Option<f64>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            success_threshold: 2,
            cooldown_seconds: 30.0,
            half_open_max_calls: 3,
            reset_timeout_seconds: None,
        }
    }
}

impl CircuitBreakerConfig {
    /// Checks every field; the error lists all invalid ones at once.
    pub fn validate(&self) -> Result<(), BreakerError> {
        self.settings().map(|_| ())
    }

    /// The validated settings, in nanoseconds and counts.
    pub(crate) fn settings(&self) -> Result<Settings, BreakerError> {
        let mut problems = Vec::new();
        let mut count = |field: &'static str, value: u32| {
            if value == 0 {
                problems.push(ConfigProblem { field, value: value.to_string(), message: "must be at least 1" });
            } else if value > MAX_COUNT {
                problems.push(ConfigProblem { field, value: value.to_string(), message: "must be at most 65535" });
            }
        };
        count("failure_threshold", self.failure_threshold);
        count("success_threshold", self.success_threshold);
        count("half_open_max_calls", self.half_open_max_calls);
        let mut seconds = |field: &'static str, value: f64| match Duration::try_from_secs_f64(value) {
            Ok(duration) => Some(saturating_nanos(duration)),
            Err(_) => {
                let message =
                    if value.is_finite() && value > 0.0 { "is too large" } else { "must be finite and not negative" };
                problems.push(ConfigProblem { field, value: format!("{value:?}"), message });
                None
            }
        };
        let cooldown_ns = seconds("cooldown_seconds", self.cooldown_seconds);
        let reset_timeout_ns = self.reset_timeout_seconds.map(|value| seconds("reset_timeout_seconds", value));
        match (cooldown_ns, reset_timeout_ns) {
            (Some(cooldown_ns), None | Some(Some(_))) if problems.is_empty() => Ok(Settings {
                failure_threshold: self.failure_threshold,
                success_threshold: self.success_threshold,
                half_open_max_calls: self.half_open_max_calls,
                cooldown_ns,
                reset_timeout_ns: reset_timeout_ns.flatten(),
            }),
            _ => Err(BreakerError::InvalidConfig { problems }),
        }
    }
}

/// A validated config: every count in 1..=MAX_COUNT, times in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) failure_threshold: u32,
    pub(crate) success_threshold: u32,
    pub(crate) half_open_max_calls: u32,
    pub(crate) cooldown_ns: u64,
    pub(crate) reset_timeout_ns: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: CircuitBreakerConfig) -> Vec<(&'static str, &'static str)> {
        match config.validate() {
            Err(BreakerError::InvalidConfig { problems }) => problems.iter().map(|p| (p.field, p.message)).collect(),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn the_seed_defaults_are_valid() {
        let config = CircuitBreakerConfig::default();
        assert_eq!((config.failure_threshold, config.success_threshold, config.half_open_max_calls), (5, 2, 3));
        assert_eq!(config.cooldown_seconds, 30.0);
        assert_eq!(config.reset_timeout_seconds, None);
        let settings = config.settings().unwrap();
        assert_eq!(settings.cooldown_ns, 30_000_000_000);
    }

    #[test]
    fn zero_thresholds_are_each_reported() {
        let config = CircuitBreakerConfig {
            failure_threshold: 0,
            success_threshold: 0,
            half_open_max_calls: 0,
            ..CircuitBreakerConfig::default()
        };
        assert_eq!(
            problems(config),
            [
                ("failure_threshold", "must be at least 1"),
                ("success_threshold", "must be at least 1"),
                ("half_open_max_calls", "must be at least 1"),
            ]
        );
    }

    #[test]
    fn counts_above_the_state_word_are_refused() {
        let config = CircuitBreakerConfig { failure_threshold: MAX_COUNT + 1, ..CircuitBreakerConfig::default() };
        assert_eq!(problems(config), [("failure_threshold", "must be at most 65535")]);
        let config = CircuitBreakerConfig { failure_threshold: MAX_COUNT, ..CircuitBreakerConfig::default() };
        assert!(config.validate().is_ok());
    }

    #[test]
    fn non_finite_and_negative_seconds_are_refused() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5] {
            let config = CircuitBreakerConfig { cooldown_seconds: bad, ..CircuitBreakerConfig::default() };
            assert_eq!(problems(config), [("cooldown_seconds", "must be finite and not negative")], "{bad}");
            let config = CircuitBreakerConfig { reset_timeout_seconds: Some(bad), ..CircuitBreakerConfig::default() };
            assert_eq!(problems(config), [("reset_timeout_seconds", "must be finite and not negative")], "{bad}");
        }
        let config = CircuitBreakerConfig { cooldown_seconds: 1e30, ..CircuitBreakerConfig::default() };
        assert_eq!(problems(config), [("cooldown_seconds", "is too large")]);
    }

    #[test]
    fn zero_seconds_are_valid() {
        let config =
            CircuitBreakerConfig { cooldown_seconds: 0.0, reset_timeout_seconds: Some(0.0), ..Default::default() };
        let settings = config.settings().unwrap();
        assert_eq!((settings.cooldown_ns, settings.reset_timeout_ns), (0, Some(0)));
    }

    #[test]
    fn the_config_reads_from_the_seed_field_names() {
        let config: CircuitBreakerConfig =
            serde_json::from_str(r#"{"failure_threshold": 3, "cooldown_seconds": 15.0}"#).unwrap();
        assert_eq!(config.failure_threshold, 3);
        assert_eq!(config.cooldown_seconds, 15.0);
        assert_eq!(config.success_threshold, 2);
    }
}
