//! `layerzero schema`: the JSON Schema of rules files (schema v1.0), for editors.
//!
//! Built by hand with schemars' `json_schema!` rather than derived from
//! `layerzero-config`'s serde types: those keep conditions as an untyped map (typed only
//! when the rules compile), while the schema can say more, one property per
//! `field_operator` key with the value type of its field, so an editor completes
//! `batch_size_gte` and refuses `dtype: fp16`.

use layerzero::config::Operator;
use layerzero::types::{ContextField, DType, FieldKind, Layout, Platform};
use schemars::{Schema, json_schema};
use serde_json::{Map, Value, json};

/// The type of one value of a field.
fn scalar(kind: FieldKind) -> Value {
    match kind {
        FieldKind::Int => json!({"type": "integer", "minimum": 0}),
        FieldKind::Bool => json!({"type": "boolean"}),
        FieldKind::Float => json!({"type": "number"}),
        FieldKind::DType => json!({"enum": DType::ALL.map(DType::as_str)}),
        FieldKind::Device => json!({"type": "string", "pattern": "^(cpu|cuda(:[0-9]+)?)$"}),
        FieldKind::Platform => json!({"enum": Platform::ALL.map(Platform::as_str)}),
        FieldKind::Layout => {
            let names: Vec<String> =
                Layout::ALL.iter().flat_map(|l| [l.as_str().to_owned(), l.as_str().to_lowercase()]).collect();
            json!({"enum": names})
        }
        FieldKind::ComputeCapability => {
            json!({"anyOf": [{"type": "string", "pattern": "^[0-9]+\\.[0-9]+$"}, {"type": "number"}]})
        }
    }
}

/// The value schema of `field_op`, or `None` when the loader refuses that operator on
/// that field (ordering needs a number, patterns need text).
fn condition(kind: FieldKind, op: Operator) -> Option<Value> {
    let numeric = matches!(kind, FieldKind::Int | FieldKind::Float | FieldKind::ComputeCapability);
    let textual = matches!(kind, FieldKind::DType | FieldKind::Device | FieldKind::Platform | FieldKind::Layout);
    match op {
        Operator::Eq | Operator::Ne | Operator::In | Operator::NotIn => {
            Some(json!({"anyOf": [scalar(kind), {"type": "array", "items": scalar(kind)}]}))
        }
        Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte => numeric.then(|| scalar(kind)),
        Operator::Match | Operator::Regex => textual.then(|| json!({"type": "string"})),
    }
}

fn conditions() -> Value {
    let mut properties = Map::new();
    for field in ContextField::ALL {
        if let Some(schema) = condition(field.kind(), Operator::Eq) {
            properties.insert(field.as_str().to_owned(), schema);
        }
        for op in Operator::ALL {
            if let Some(schema) = condition(field.kind(), op) {
                properties.insert(format!("{}_{}", field.as_str(), op.as_str()), schema);
            }
        }
    }
    json!({
        "type": "object",
        "description": "All must hold. A key is a context field (equality; a list means IN) or field_operator.",
        "properties": properties,
        "additionalProperties": false,
    })
}

/// The JSON Schema (draft 2020-12) of a rules file.
pub(crate) fn rules_schema() -> Schema {
    let kernel = json!({"type": "string", "minLength": 1});
    let priority = json!({"type": "integer", "minimum": 0, "maximum": 1000});
    json_schema!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/layerzero/layerzero/schemas/kernels-1.0.json",
        "title": "LayerZero kernel dispatch rules (schema v1.0)",
        "type": "object",
        "required": ["version"],
        "additionalProperties": false,
        "properties": {
            "version": {"description": "Schema version.", "enum": ["1.0", 1.0]},
            "defaults": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "fallback_policy": {"description": "Kernel to fall back to after an operation's chain.", "type": "string"},
                    "default_priority": priority.clone(),
                },
            },
            "dispatch_rules": {
                "description": "Evaluated by priority, highest first; the first matching rule whose kernel can run wins.",
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["operation", "kernel"],
                    "additionalProperties": false,
                    "properties": {
                        "operation": {"description": "Operation name or glob (attention.*).", "type": "string", "minLength": 1},
                        "conditions": conditions(),
                        "kernel": kernel.clone(),
                        "priority": priority,
                    },
                },
            },
            "kernel_locks": {
                "description": "Operation name or glob -> the kernel forced for it.",
                "type": "object",
                "additionalProperties": kernel.clone(),
            },
            "kernel_allows": {"description": "If not empty, only kernels matching one of these globs.", "type": "array", "items": {"type": "string"}},
            "kernel_denies": {"description": "Kernels matching one of these globs are never chosen.", "type": "array", "items": {"type": "string"}},
            "fallback_chains": {
                "description": "Operation name or glob -> kernels to fall back to, in order.",
                "type": "object",
                "additionalProperties": {"type": "array", "items": kernel},
            },
        },
    })
}

pub(crate) fn schema() -> Result<(), crate::error::CliError> {
    let text =
        serde_json::to_string_pretty(&rules_schema()).map_err(|e| crate::error::CliError::usage(e.to_string()))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_typed_per_field_and_operator() {
        let conditions = conditions();
        let properties = &conditions["properties"];
        assert_eq!(properties["batch_size_gte"], json!({"type": "integer", "minimum": 0}));
        assert!(
            properties["dtype"]["anyOf"][0]["enum"].as_array().is_some_and(|names| names.contains(&json!("bfloat16")))
        );
        // The loader refuses ordering on text and patterns on numbers; so does the schema.
        assert!(properties.get("dtype_gt").is_none());
        assert!(properties.get("batch_size_match").is_none());
        assert!(properties.get("platform_match").is_some());
    }
}
