//! A lock-free circuit breaker per kernel (CLOSED / OPEN / HALF_OPEN), with a Clock trait for tests.
//!
//! Not built yet: this crate is an empty placeholder in the workspace layout.
