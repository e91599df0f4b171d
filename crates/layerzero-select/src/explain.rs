//! [`Explanation`]: why a selection came out as it did, for people (`Display`) and
//! machines (serde).

use std::fmt;

use layerzero_registry::BackendRegistry;
use layerzero_types::{ContextField, Operation, SelectionContext};
use serde::Serialize;

use crate::engine::{EngineState, Validity, decide};

/// The verdict on one candidate kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// It can run the context and the policy lets it be chosen.
    Valid,
    /// It cannot be chosen, and why.
    Rejected {
        /// The reason, for people.
        reason: String,
    },
}

/// One candidate: a kernel registered for the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CandidateTrace {
    /// The kernel's id.
    pub kernel: String,
    /// Its backend.
    pub backend: String,
    /// Its base priority.
    pub priority: u32,
    /// Whether it can be chosen.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// What happened to one rule that applies to the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RuleOutcome {
    /// Its conditions held and its kernel was valid: it decided.
    Chosen,
    /// A condition did not hold.
    ConditionFailed {
        /// The condition as written (`seq_len_gt: 8192`).
        condition: String,
        /// The context's value of the field, or `absent`.
        actual: String,
    },
    /// Its conditions held, but its kernel cannot be chosen: the rule was skipped.
    KernelUnusable {
        /// Why the kernel cannot be chosen.
        reason: String,
    },
    /// Not evaluated: a lock or an earlier rule decided.
    NotReached,
}

/// One rule in evaluation order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    /// Index in `dispatch_rules`.
    pub rule: usize,
    /// Its operation name or pattern.
    pub operation: String,
    /// Its kernel.
    pub kernel: String,
    /// Its priority.
    pub priority: u32,
    /// What happened.
    #[serde(flatten)]
    pub outcome: RuleOutcome,
}

/// The lock that applies to the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockTrace {
    /// The lock's key as written.
    pub lock: String,
    /// The kernel it forces.
    pub kernel: String,
    /// `None` if the kernel is usable, else why not (selection then fails).
    pub problem: Option<String>,
}

/// The structured trace of one selection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The operation.
    pub operation: String,
    /// The known fields of the context, `name=value`.
    pub context: Vec<String>,
    /// The policy version used.
    pub policy_version: u64,
    /// The kernel registry version used.
    pub registry_version: u64,
    /// Every registered kernel for the operation, in registration order.
    pub candidates: Vec<CandidateTrace>,
    /// The lock for the operation, if any.
    pub lock: Option<LockTrace>,
    /// Every rule for the operation, in evaluation order.
    pub rules: Vec<RuleTrace>,
    /// The chosen kernel, or `None` when selection failed.
    pub chosen: Option<String>,
    /// Why it was chosen, or why selection failed.
    pub decision: String,
    /// The fallbacks, in order.
    pub fallbacks: Vec<String>,
}

pub(crate) fn explain(
    state: &EngineState,
    backends: &BackendRegistry,
    operation: Operation,
    ctx: &SelectionContext,
) -> Explanation {
    let plan = state.plan(operation);
    let validity = Validity::new(plan, ctx, backends);
    let reasons: Vec<_> = (0..plan.candidates.len()).map(|i| validity.reason(i)).collect();
    let candidates = plan
        .candidates
        .iter()
        .zip(&reasons)
        .map(|(c, reason)| CandidateTrace {
            kernel: c.spec.id.to_string(),
            backend: c.spec.backend.clone(),
            priority: c.spec.priority,
            verdict: match reason {
                None => Verdict::Valid,
                Some(reason) => Verdict::Rejected { reason: reason.to_string() },
            },
        })
        .collect();
    let lock = plan.lock.as_ref().map(|lock| LockTrace {
        lock: lock.key.clone(),
        kernel: lock.kernel.to_string(),
        problem: match lock.candidate {
            None => Some("not registered for this operation".to_owned()),
            Some(i) => reasons[i].as_ref().map(ToString::to_string),
        },
    });
    let result = decide(state, backends, operation, ctx);
    let decided_by_rule = match &result {
        Ok(selection) => match selection.reason {
            crate::SelectionReason::Rule { rule } => Some(rule as usize),
            _ => None,
        },
        Err(_) => None,
    };
    let mut reached = plan.lock.is_none();
    let policy_rules = state.policy.rules();
    let rules = plan
        .rules
        .iter()
        .map(|planned| {
            let rule = &policy_rules[planned.rule];
            let outcome = if !reached {
                RuleOutcome::NotReached
            } else if let Some(failed) = rule.first_failure(ctx) {
                RuleOutcome::ConditionFailed {
                    condition: failed.to_string(),
                    actual: ctx.get(failed.field()).map_or_else(|| "absent".to_owned(), |v| v.to_string()),
                }
            } else if let Some(reason) = match planned.candidate {
                None => Some("not registered for this operation".to_owned()),
                Some(i) => reasons[i].as_ref().map(ToString::to_string),
            } {
                RuleOutcome::KernelUnusable { reason }
            } else {
                reached = false;
                debug_assert_eq!(decided_by_rule, Some(rule.index));
                RuleOutcome::Chosen
            };
            RuleTrace {
                rule: rule.index,
                operation: rule.operation.as_str().to_owned(),
                kernel: rule.kernel.to_string(),
                priority: rule.priority,
                outcome,
            }
        })
        .collect();
    let context = ContextField::ALL
        .into_iter()
        .filter_map(|field| ctx.get(field).map(|value| format!("{field}={value}")))
        .collect();
    let (chosen, decision, fallbacks) = match result {
        Ok(selection) => (
            Some(selection.kernel.to_string()),
            selection.reason.to_string(),
            selection.fallbacks().iter().map(ToString::to_string).collect(),
        ),
        Err(err) => (None, err.to_string(), Vec::new()),
    };
    Explanation {
        operation: operation.to_string(),
        context,
        policy_version: state.policy_version,
        registry_version: state.registry_version(),
        candidates,
        lock,
        rules,
        chosen,
        decision,
        fallbacks,
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "selection for {} (policy v{}, registry v{})",
            self.operation, self.policy_version, self.registry_version
        )?;
        let context = if self.context.is_empty() { "(empty)".to_owned() } else { self.context.join(" ") };
        writeln!(f, "context: {context}")?;
        writeln!(f, "candidates:")?;
        if self.candidates.is_empty() {
            writeln!(f, "  (none registered)")?;
        }
        for c in &self.candidates {
            let verdict = match &c.verdict {
                Verdict::Valid => "valid".to_owned(),
                Verdict::Rejected { reason } => format!("rejected: {reason}"),
            };
            writeln!(f, "  {} [{}, priority {}]: {verdict}", c.kernel, c.backend, c.priority)?;
        }
        match &self.lock {
            None => writeln!(f, "lock: none")?,
            Some(lock) => match &lock.problem {
                None => writeln!(f, "lock: {:?} forces {}", lock.lock, lock.kernel)?,
                Some(problem) => {
                    writeln!(f, "lock: {:?} forces {}, which cannot be used: {problem}", lock.lock, lock.kernel)?
                }
            },
        }
        writeln!(f, "rules (evaluation order):")?;
        if self.rules.is_empty() {
            writeln!(f, "  (none for this operation)")?;
        }
        for r in &self.rules {
            let outcome = match &r.outcome {
                RuleOutcome::Chosen => "matched: chosen".to_owned(),
                RuleOutcome::ConditionFailed { condition, actual } if actual == "absent" => {
                    format!("no match: `{condition}` fails (the field is absent from the context)")
                }
                RuleOutcome::ConditionFailed { condition, actual } => {
                    format!("no match: `{condition}` fails (context has {actual})")
                }
                RuleOutcome::KernelUnusable { reason } => {
                    format!("matched, skipped: its kernel cannot be used: {reason}")
                }
                RuleOutcome::NotReached => "not reached".to_owned(),
            };
            writeln!(
                f,
                "  dispatch_rules[{}] {} -> {} (priority {}): {outcome}",
                r.rule, r.operation, r.kernel, r.priority
            )?;
        }
        match &self.chosen {
            Some(kernel) => writeln!(f, "chosen: {kernel} ({})", self.decision)?,
            None => writeln!(f, "failed: {}", self.decision)?,
        }
        if self.fallbacks.is_empty() {
            write!(f, "fallbacks: none")
        } else {
            write!(f, "fallbacks: {}", self.fallbacks.join(", "))
        }
    }
}
