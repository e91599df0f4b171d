//! `layerzero diff OLD NEW --workload FILE`: which selections a new rules file changes,
//! over a list of (operation, context) cases, before anyone deploys it.
//!
//! The workload is a YAML (or JSON) list of cases:
//!
//! ```yaml
//! - name: decode, long cache      # optional, shown in the report
//!   operation: attention.decode
//!   context: {seq_len_q: 1, seq_len_k: 4096, dtype: bfloat16, platform: cuda}
//! - operation: rms_norm
//!   context: {batch_size: 8, dtype: float16}
//! ```
//!
//! Context keys are `SelectionContext` field names (as in rule conditions, without
//! operators), each value of its field's type.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use layerzero::selection_engine::SelectionEngine;
use layerzero::types::{Operation, SelectionContext};
use serde::Deserialize;

use crate::dispatcher::load_rules;
use crate::error::CliError;
use crate::explain::{decided_by, kernel_specs, offline_engine, parse_context};
use crate::table::Table;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    name: Option<String>,
    operation: String,
    #[serde(default)]
    context: BTreeMap<String, serde_yaml::Value>,
}

/// A case ready to select: its label, operation and context.
struct Prepared {
    label: String,
    operation: Operation,
    context: SelectionContext,
}

fn read_workload(path: &Path) -> Result<Vec<Prepared>, CliError> {
    let source = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    let cases: Vec<Case> = serde_yaml::from_str(&source).map_err(|e| {
        let at = e.location().map(|l| format!("{}:{}: ", l.line(), l.column())).unwrap_or_default();
        CliError::invalid(format!("{}:{at}{e}", path.display()))
    })?;
    let mut problems = Vec::new();
    let mut prepared = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let settings: Vec<String> = case
            .context
            .iter()
            .map(|(k, v)| match v {
                serde_yaml::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={}", serde_yaml::to_string(other).unwrap_or_default().trim()),
            })
            .collect();
        let operation = Operation::parse(&case.operation);
        let context = parse_context(&settings);
        match (operation, context) {
            (Ok(operation), Ok(context)) => {
                let label = case.name.unwrap_or_else(|| format!("[{i}] {}", case.operation));
                prepared.push(Prepared { label, operation, context });
            }
            (Err(e), _) => problems.push(format!("{}: [{i}].operation: {e}", path.display())),
            (_, Err(e)) => problems.push(format!("{}: [{i}].context: {e}", path.display())),
        }
    }
    if problems.is_empty() { Ok(prepared) } else { Err(CliError::invalid(problems.join("\n"))) }
}

/// One engine's answer for a case: the kernel (or the failure) and what decided.
fn answer(engine: &SelectionEngine, case: &Prepared) -> (String, &'static str) {
    match engine.select(case.operation, &case.context) {
        Ok(selection) => (selection.kernel.to_string(), decided_by(selection.reason)),
        Err(_) => ("(none)".to_owned(), "no valid kernel"),
    }
}

pub(crate) struct DiffArgs<'a> {
    pub(crate) old: &'a Path,
    pub(crate) new: &'a Path,
    pub(crate) workload: &'a Path,
    pub(crate) catalog: Option<&'a PathBuf>,
    pub(crate) json: bool,
}

pub(crate) fn diff(args: &DiffArgs<'_>) -> Result<(), CliError> {
    let old_policy = load_rules(args.old)?.compiled;
    let new_policy = load_rules(args.new)?.compiled;
    let cases = read_workload(args.workload)?;
    let specs = kernel_specs(args.catalog.map(PathBuf::as_path))?;
    let old = offline_engine(&specs, old_policy)?;
    let new = offline_engine(&specs, new_policy)?;
    let results: Vec<_> = cases.iter().map(|case| (case, answer(&old, case), answer(&new, case))).collect();
    let changed = results.iter().filter(|(_, a, b)| a.0 != b.0).count();
    let mut out = std::io::stdout().lock();
    if args.json {
        let cases: Vec<_> = results
            .iter()
            .map(|(case, a, b)| {
                serde_json::json!({
                    "case": case.label,
                    "operation": case.operation.to_string(),
                    "old": {"kernel": a.0, "decided_by": a.1},
                    "new": {"kernel": b.0, "decided_by": b.1},
                    "changed": a.0 != b.0,
                })
            })
            .collect();
        let report = serde_json::json!({"cases": cases, "changed": changed, "total": results.len()});
        crate::table::write_json(&mut out, &report)?;
        return Ok(());
    }
    let mut table = Table::new(["case", "operation", "old", "new", ""]);
    for (case, a, b) in &results {
        let mark = if a.0 == b.0 { "same" } else { "CHANGED" };
        table.row(vec![
            case.label.clone(),
            case.operation.to_string(),
            format!("{} ({})", a.0, a.1),
            format!("{} ({})", b.0, b.1),
            mark.to_owned(),
        ]);
    }
    write!(out, "{}", table.render())?;
    writeln!(out, "{changed} of {} selections change", results.len())?;
    Ok(())
}
