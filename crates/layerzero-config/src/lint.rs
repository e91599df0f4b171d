//! Lint warnings: rules files that are valid but surely wrong.

use std::fmt;

use layerzero_types::KernelId;
use serde::Serialize;

use crate::compile::{CompiledConfig, KernelPolicy, OperationMatcher};
use crate::document::Position;
use crate::model::KernelsConfig;
use crate::schema::key_path;

/// Something a rules file allows but probably does not mean: a rule that can never
/// apply, a lock on a denied kernel, a regex where a glob is read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LintWarning {
    /// Where: `dispatch_rules[0].kernel`.
    pub path: String,
    /// What is probably wrong.
    pub message: String,
    /// Line and column (0 when unknown).
    pub position: Position,
}

impl fmt::Display for LintWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.position.is_known() {
            write!(f, "{}: ", self.position)?;
        }
        write!(f, "warning: {}: {}", self.path, self.message)
    }
}

fn warn(out: &mut Vec<LintWarning>, path: String, message: String) {
    out.push(LintWarning { path, message, position: Position::default() });
}

fn excluded(compiled: &CompiledConfig, name: &str) -> Option<String> {
    let id = KernelId::lookup(name)?;
    match compiled.kernel_policy(id) {
        KernelPolicy::Allowed => None,
        KernelPolicy::Denied { pattern } => {
            Some(format!("kernel '{name}' is denied by kernel_denies pattern '{pattern}'"))
        }
        KernelPolicy::NotAllowed => Some(format!("kernel '{name}' matches no kernel_allows pattern")),
    }
}

/// Characters that mean something in a regex and nothing (or something else) in a glob.
fn looks_like_regex(pattern: &str) -> bool {
    pattern.contains(".*") || pattern.contains(".+") || pattern.contains(['^', '$', '\\', '(', ')', '|', '+'])
}

/// Whether `a` covers `b` (every operation `b` applies to, `a` applies to too), as far as
/// the text tells: the same text, `*`, or a glob that matches `b`'s exact name.
fn covers(a: &OperationMatcher, b: &OperationMatcher) -> bool {
    if a.as_str() == b.as_str() || a.as_str() == "*" {
        return true;
    }
    match (a, b) {
        (OperationMatcher::Glob(glob), OperationMatcher::Exact(op)) => glob.matches(*op),
        _ => false,
    }
}

pub(crate) fn lint(config: &KernelsConfig, compiled: &CompiledConfig) -> Vec<LintWarning> {
    let mut out = Vec::new();
    for (i, rule) in config.dispatch_rules.iter().enumerate() {
        if let Some(why) = excluded(compiled, &rule.kernel) {
            warn(&mut out, format!("dispatch_rules[{i}].kernel"), format!("Rule can never apply: its {why}"));
        }
    }
    // Shadowing: an earlier rule in evaluation order that covers the operation with a
    // subset of the conditions matches whenever the later one does.
    let rules = compiled.rules();
    for (later_pos, later) in rules.iter().enumerate() {
        let later_conditions = &config.dispatch_rules[later.index].conditions;
        let shadow = rules[..later_pos].iter().find(|earlier| {
            let earlier_conditions = &config.dispatch_rules[earlier.index].conditions;
            covers(&earlier.operation, &later.operation)
                && earlier_conditions.iter().all(|(k, v)| later_conditions.get(k) == Some(v))
        });
        if let Some(earlier) = shadow {
            warn(
                &mut out,
                format!("dispatch_rules[{}]", later.index),
                format!(
                    "Rule is shadowed by dispatch_rules[{}] (priority {}), whose operation and conditions are the \
                     same or weaker: it applies only when kernel '{}' cannot run",
                    earlier.index,
                    earlier.priority,
                    earlier.kernel.as_str()
                ),
            );
        }
    }
    for (operation, kernel) in config.kernel_locks.iter() {
        if let Some(why) = excluded(compiled, kernel) {
            warn(&mut out, key_path("kernel_locks", operation), format!("Lock can never be satisfied: its {why}"));
        }
    }
    for (operation, kernels) in config.fallback_chains.iter() {
        for (i, kernel) in kernels.iter().enumerate() {
            if let Some(why) = excluded(compiled, kernel) {
                let path = format!("{}[{i}]", key_path("fallback_chains", operation));
                warn(&mut out, path, format!("Fallback is never used: its {why}"));
            }
        }
    }
    if let Some(policy) = &config.defaults.fallback_policy
        && let Some(why) = excluded(compiled, policy)
    {
        warn(&mut out, "defaults.fallback_policy".into(), format!("Fallback is never used: its {why}"));
    }
    for (list, patterns) in [("kernel_allows", &config.kernel_allows), ("kernel_denies", &config.kernel_denies)] {
        for (i, pattern) in patterns.iter().enumerate() {
            if looks_like_regex(pattern) {
                let glob = pattern.replace(".*", "*").replace(".+", "?*");
                warn(
                    &mut out,
                    format!("{list}[{i}]"),
                    format!("Pattern '{pattern}' looks like a regex, but {list} uses globs (did you mean '{glob}'?)"),
                );
            }
        }
    }
    out.dedup();
    out
}
