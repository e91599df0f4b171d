//! LayerZero's configuration: [`DispatchConfig`] (how the dispatcher behaves), the YAML
//! schema v1.0 of rules files ([`KernelsConfig`]) with [`ConfigSchema`] validation, the
//! compiled rules the selection engine evaluates ([`CompiledConfig`]), and kernel catalogs
//! ([`KernelCatalog`]).
//!
//! This crate reads, checks and compiles; it does not select kernels (that is
//! `layerzero-select`, which evaluates a [`CompiledConfig`]) or watch files.
//!
//! Start from [`ConfigSchema::load`] for a rules file, or [`DispatchConfig::builder`] /
//! [`DispatchConfig::from_env`] for dispatcher settings:
//!
//! ```
//! use layerzero_config::ConfigSchema;
//! use layerzero_types::{DType, OperationType, Platform, SelectionContext};
//!
//! let loaded = ConfigSchema.load(r#"
//! version: "1.0"
//! dispatch_rules:
//!   - operation: "attention.*"
//!     conditions:
//!       batch_size_gte: 8
//!       dtype: [float16, bfloat16]
//!       platform: cuda
//!     kernel: flash_attention_v2
//!     priority: 100
//! kernel_allows: ["flash_attn.*"]
//! "#)?;
//!
//! let ctx = SelectionContext::builder()
//!     .batch_size(16)
//!     .dtype(DType::BF16)
//!     .platform(Platform::Cuda)
//!     .build()?;
//! let rule = loaded.compiled.rules_for(OperationType::AttentionCausal.into()).next().unwrap();
//! assert!(rule.matches(&ctx));
//!
//! // Valid, but surely wrong: the allow list is a regex, and excludes the rule's kernel.
//! let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.path.clone()).collect();
//! assert_eq!(warnings, ["dispatch_rules[0].kernel", "kernel_allows[0]"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture invariant: depends on `layerzero-types` only; compiled rules hold no
//! strings on the evaluation path (interned ids, typed values, precompiled patterns), and
//! no input, however hostile, makes this crate panic: size, depth and pattern limits turn
//! into errors.

#![forbid(unsafe_code)]

mod block_yaml;
mod catalog;
mod compile;
mod dispatch_config;
mod document;
mod error;
mod lint;
mod model;
mod schema;

pub use catalog::KernelCatalog;
pub use compile::{
    CompiledCondition, CompiledConfig, CompiledLock, CompiledRule, ConditionTest, KernelPolicy, MAX_PATTERN_BYTES,
    OperationGlob, OperationMatcher, Operator, compile_condition, parse_condition_key,
};
pub use dispatch_config::{DispatchConfig, DispatchConfigBuilder, DispatchMode};
pub use document::{MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_NODES, Position};
pub use error::ConfigError;
pub use lint::LintWarning;
pub use model::{ConditionValue, Defaults, DispatchRule, KernelsConfig, OrderedMap, SCHEMA_VERSION};
pub use schema::{ConfigSchema, LoadedConfig, SchemaError};
