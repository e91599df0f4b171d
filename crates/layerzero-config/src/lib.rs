//! DispatchConfig, the YAML schema v1.0, validation, compiled rules, kernel profiles.
//!
//! Not built yet: this crate is an empty placeholder in the workspace layout.
