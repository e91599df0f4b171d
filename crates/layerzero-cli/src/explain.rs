//! `layerzero explain`: the selection for one operation and context, and why, from a rules
//! file and a set of kernels that need not be on this machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use layerzero::config::{CompiledConfig, DispatchConfig, KernelCatalog};
use layerzero::registry::{BackendInfo, BackendRegistry, KernelRegistry};
use layerzero::selection_engine::{SelectionEngine, SelectionReason, Verdict};
use layerzero::types::{ContextField, FieldKind, KernelSpec, Operation, SelectionContext};

use crate::dispatcher::load_rules;
use crate::error::CliError;

/// The kernels to select among: a catalog file's, or this build's built-in ones.
pub(crate) fn kernel_specs(catalog: Option<&Path>) -> Result<Vec<KernelSpec>, CliError> {
    match catalog {
        Some(path) => {
            let source = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
            let catalog =
                KernelCatalog::from_yaml(&source).map_err(|e| CliError::invalid(format!("{}: {e}", path.display())))?;
            Ok(catalog.kernels)
        }
        None => layerzero::kernels::cpu_kernel_specs().map_err(|e| CliError::usage(format!("built-in kernels: {e}"))),
    }
}

/// A selection engine over `specs` with every backend they name assumed present and
/// healthy, so that a laptop can explain a GPU deployment.
pub(crate) fn offline_engine(specs: &[KernelSpec], policy: CompiledConfig) -> Result<SelectionEngine, CliError> {
    let kernels = Arc::new(KernelRegistry::new());
    kernels.register_all(specs.iter().cloned()).map_err(|e| CliError::invalid(format!("kernels: {e}")))?;
    let backends = Arc::new(BackendRegistry::new());
    let mut seen = Vec::new();
    for spec in specs {
        if !seen.contains(&spec.backend) {
            seen.push(spec.backend.clone());
            let info =
                BackendInfo { name: spec.backend.clone(), platform: spec.platform, version: None, devices: Vec::new() };
            backends.register(info).map_err(|e| CliError::invalid(format!("backend {}: {e}", spec.backend)))?;
        }
    }
    let config = DispatchConfig::builder().enable_cache(false).build().map_err(CliError::usage)?;
    Ok(SelectionEngine::with_config(kernels, backends, &config, policy))
}

/// A context from `FIELD=VALUE` settings, each value parsed as its field's type.
pub(crate) fn parse_context<S: AsRef<str>>(settings: &[S]) -> Result<SelectionContext, String> {
    let mut ctx = SelectionContext::default();
    for setting in settings {
        let setting = setting.as_ref();
        let Some((name, value)) = setting.split_once('=') else {
            return Err(format!("`{setting}`: expected FIELD=VALUE"));
        };
        let (name, value) = (name.trim(), value.trim());
        let field = ContextField::from_name(name).ok_or_else(|| {
            let names = ContextField::ALL.map(ContextField::as_str);
            let hint = layerzero::types::nearest_name(name, names)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            format!("`{name}` is not a context field{hint}")
        })?;
        set_field(&mut ctx, field, value).map_err(|e| format!("{name}={value}: {e}"))?;
    }
    ctx.platform = ctx.effective_platform();
    ctx.validate().map_err(|e| e.to_string())?;
    Ok(ctx)
}

fn set_field(ctx: &mut SelectionContext, field: ContextField, value: &str) -> Result<(), String> {
    use ContextField as F;
    let int = || value.parse::<u32>().map_err(|_| "expected a non-negative integer".to_owned());
    let flag = || value.parse::<bool>().map_err(|_| "expected true or false".to_owned());
    let text = |e: &dyn std::fmt::Display| e.to_string();
    match field.kind() {
        FieldKind::Int => {
            let v = Some(int()?);
            match field {
                F::BatchSize => ctx.batch_size = v,
                F::SeqLen => ctx.seq_len = v,
                F::SeqLenQ => ctx.seq_len_q = v,
                F::SeqLenK => ctx.seq_len_k = v,
                F::HeadDim => ctx.head_dim = v,
                F::NumHeads => ctx.num_heads = v,
                F::NumKvHeads => ctx.num_kv_heads = v,
                F::TpSize => ctx.tp_size = v,
                F::PpSize => ctx.pp_size = v,
                F::LayerIndex => ctx.layer_index = v,
                F::HiddenSize => ctx.hidden_size = v,
                _ => ctx.window_size = v,
            }
        }
        FieldKind::Bool => {
            let v = Some(flag()?);
            match field {
                F::IsCausal => ctx.is_causal = v,
                F::EnableGqa => ctx.enable_gqa = v,
                F::IsCudaGraphCapturing => ctx.is_cuda_graph_capturing = v,
                F::FusedResidual => ctx.fused_residual = v,
                _ => ctx.requires_deterministic = v,
            }
        }
        FieldKind::Float => ctx.dropout_p = Some(value.parse::<f32>().map_err(|_| "expected a number".to_owned())?),
        FieldKind::DType => ctx.dtype = Some(value.parse().map_err(|e| text(&e))?),
        FieldKind::Device => ctx.device = Some(value.parse().map_err(|e| text(&e))?),
        FieldKind::Platform => ctx.platform = Some(value.parse().map_err(|e| text(&e))?),
        FieldKind::Layout => ctx.layout = Some(value.parse().map_err(|e| text(&e))?),
        FieldKind::ComputeCapability => ctx.compute_capability = Some(value.parse().map_err(|e| text(&e))?),
    }
    Ok(())
}

/// `lock`, `rule` or `score`: what decided a selection.
pub(crate) fn decided_by(reason: SelectionReason) -> &'static str {
    match reason {
        SelectionReason::Lock { .. } => "lock",
        SelectionReason::Rule { .. } => "rule",
        SelectionReason::Score { .. } => "score",
    }
}

pub(crate) struct ExplainArgs<'a> {
    pub(crate) config: &'a Path,
    pub(crate) catalog: Option<&'a PathBuf>,
    pub(crate) operation: &'a str,
    pub(crate) settings: &'a [String],
    pub(crate) json: bool,
}

pub(crate) fn explain(args: &ExplainArgs<'_>) -> Result<(), CliError> {
    let operation = Operation::parse(args.operation).map_err(|e| CliError::usage(format!("--op: {e}")))?;
    let context = parse_context(args.settings).map_err(|e| CliError::usage(format!("--set {e}")))?;
    let policy = load_rules(args.config)?.compiled;
    let specs = kernel_specs(args.catalog.map(PathBuf::as_path))?;
    let engine = offline_engine(&specs, policy)?;
    let explanation = engine.explain_selection(operation, &context);
    let selection = engine.select(operation, &context).ok();
    let mut out = std::io::stdout().lock();
    if args.json {
        let candidates: Vec<_> = explanation
            .candidates
            .iter()
            .map(|c| {
                let (verdict, reason) = match &c.verdict {
                    Verdict::Valid => ("valid", None),
                    Verdict::Rejected { reason } => ("rejected", Some(reason.clone())),
                };
                serde_json::json!({
                    "kernel": c.kernel, "backend": c.backend, "priority": c.priority,
                    "verdict": verdict, "reason": reason,
                })
            })
            .collect();
        let report = serde_json::json!({
            "operation": explanation.operation,
            "context": explanation.context,
            "kernel": explanation.chosen,
            "fallbacks": explanation.fallbacks,
            "decided_by": selection.map(|s| decided_by(s.reason)),
            "decision": explanation.decision,
            "candidates": candidates,
            "lock": explanation.lock,
            "rules": explanation.rules,
        });
        crate::table::write_json(&mut out, &report)?;
    } else {
        writeln!(out, "{explanation}")?;
    }
    match selection {
        Some(_) => Ok(()),
        // The trace above says why; the exit code says it to scripts.
        None => Err(CliError::Invalid(String::new())),
    }
}

#[cfg(test)]
mod tests {
    use layerzero::types::{ComputeCapability, DType, Device, Platform};

    use super::*;

    #[test]
    fn settings_are_typed_by_their_field() {
        let ctx = parse_context(&[
            "batch_size=16",
            "dtype=bfloat16",
            "device=cuda:1",
            "is_causal=true",
            "dropout_p=0.1",
            "compute_capability=9.0",
        ])
        .unwrap();
        assert_eq!(ctx.batch_size, Some(16));
        assert_eq!(ctx.dtype, Some(DType::BF16));
        assert_eq!(ctx.device, Some(Device::Cuda(1)));
        // The platform follows the device, as the builder does it.
        assert_eq!(ctx.platform, Some(Platform::Cuda));
        assert_eq!(ctx.is_causal, Some(true));
        assert_eq!(ctx.dropout_p, Some(0.1));
        assert_eq!(ctx.compute_capability, Some(ComputeCapability::new(9, 0)));
    }

    #[test]
    fn every_flag_lands_in_its_own_field() {
        for field in ContextField::ALL.into_iter().filter(|f| f.kind() == FieldKind::Bool) {
            let ctx = parse_context(&[&format!("{field}=true")]).unwrap();
            let set: Vec<_> = ContextField::ALL.into_iter().filter(|f| ctx.get(*f).is_some()).collect();
            assert_eq!(set, [field]);
            assert_eq!(ctx.get(field), Some(layerzero::types::FieldValue::Bool(true)));
        }
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let error = |settings: &[&str]| parse_context(settings).unwrap_err();
        assert_eq!(error(&["batch_size"]), "`batch_size`: expected FIELD=VALUE");
        assert_eq!(error(&["is_causal=yes"]), "is_causal=yes: expected true or false");
        assert!(
            error(&["num_heads=8", "num_kv_heads=3"]).contains("num_kv_heads"),
            "{}",
            error(&["num_heads=8", "num_kv_heads=3"])
        );
    }
}
