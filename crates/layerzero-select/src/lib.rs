//! LayerZero's selection engine: for one operation and one call's context, which kernel
//! runs, which to fall back to, and why.
//!
//! This crate decides; it does not run kernels or watch files (that is the dispatcher's
//! work), nor parse rules files (that is `layerzero-config`, whose
//! [`CompiledConfig`](layerzero_config::CompiledConfig) it evaluates).
//!
//! Start from [`SelectionEngine`]:
//!
//! ```
//! use std::sync::Arc;
//!
//! use layerzero_config::{ConfigSchema, DispatchConfig};
//! use layerzero_registry::{BackendRegistry, KernelRegistry};
//! use layerzero_select::{SelectionEngine, SelectionReason};
//! use layerzero_types::{DType, KernelSpec, OperationType, Platform, SelectionContext};
//!
//! let kernels = Arc::new(KernelRegistry::new());
//! kernels.register(KernelSpec::new("rms_norm_rowwise", Platform::Cpu)?
//!     .for_operation(OperationType::NormRms).with_priority(10))?;
//! kernels.register(KernelSpec::new("rms_norm_f32_wide", Platform::Cpu)?
//!     .for_operation(OperationType::NormRms).with_dtypes([DType::F32]))?;
//!
//! let policy = ConfigSchema.load(r#"
//! version: "1.0"
//! dispatch_rules:
//!   - {operation: rms_norm, conditions: {batch_size_gte: 64}, kernel: rms_norm_f32_wide, priority: 100}
//! "#)?.compiled;
//! let engine = SelectionEngine::with_config(
//!     kernels, Arc::new(BackendRegistry::detect()), &DispatchConfig::default(), policy);
//!
//! let big = SelectionContext::builder().batch_size(128).dtype(DType::F32).build()?;
//! let selection = engine.select(OperationType::NormRms.into(), &big)?;
//! assert_eq!(selection.kernel.as_str(), "rms_norm_f32_wide");
//! assert_eq!(selection.reason, SelectionReason::Rule { rule: 0 });
//!
//! // The rule's kernel cannot run bf16: the rule is skipped, and the score decides.
//! let bf16 = SelectionContext::builder().batch_size(128).dtype(DType::BF16).build()?;
//! assert_eq!(engine.select(OperationType::NormRms.into(), &bf16)?.kernel.as_str(), "rms_norm_rowwise");
//! let explanation = engine.explain_selection(OperationType::NormRms.into(), &bf16);
//! assert!(explanation.to_string().contains("matched, skipped: its kernel cannot be used: dtype requires"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture invariant: a cache hit takes no lock, allocates nothing and writes no
//! shared memory; a kernel that cannot run the context is never selected, whatever the
//! rules say; a lock never silently yields another kernel.

#![forbid(unsafe_code)]

mod cache;
mod engine;
mod explain;
mod program;
mod selection;

pub use cache::ContextKey;
pub use engine::{CacheOutcome, SelectionEngine, Shared};
pub use explain::{CandidateTrace, Explanation, LockTrace, RuleOutcome, RuleTrace, Verdict};
pub use selection::{CandidateRejection, MAX_FALLBACKS, RejectReason, Selection, SelectionError, SelectionReason};
