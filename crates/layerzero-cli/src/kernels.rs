//! `layerzero kernels`: the kernels of this build, what each supports, and whether its
//! backend is available here.

use std::io::Write;

use layerzero::registry::{get_global_backend_registry, get_global_kernel_registry};
use layerzero::types::{KernelSpec, Support};

use crate::error::CliError;
use crate::table::Table;

/// A one-line summary of what a kernel accepts.
fn constraints(spec: &KernelSpec) -> String {
    let c = &spec.constraints;
    let mut parts = Vec::new();
    if let Some(dtypes) = &c.dtypes {
        parts.push(format!("dtypes {}", dtypes.iter().map(|d| d.as_str()).collect::<Vec<_>>().join("/")));
    }
    if let Some(head_dim) = &c.head_dim {
        parts.push(format!("head_dim {head_dim}"));
    }
    if let Some(hidden_size) = &c.hidden_size {
        parts.push(format!("hidden_size {hidden_size}"));
    }
    if let Some(range) = &c.seq_len_q {
        parts.push(format!("seq_len_q {range}"));
    }
    if let Some(range) = &c.seq_len_k {
        parts.push(format!("seq_len_k {range}"));
    }
    for (flag, name) in [
        (c.gqa, "gqa"),
        (c.sliding_window, "sliding window"),
        (c.dropout, "dropout"),
        (c.deterministic, "deterministic"),
        (c.cuda_graph_safe, "cuda graph safe"),
        (c.residual, "fused residual add"),
    ] {
        if flag {
            parts.push(name.to_owned());
        }
    }
    match c.causal {
        Support::Supported => parts.push("causal or not".to_owned()),
        Support::Required => parts.push("causal only".to_owned()),
        Support::Unsupported => {}
    }
    if let Some(layouts) = &c.layouts {
        parts.push(format!("layouts {}", layouts.iter().map(ToString::to_string).collect::<Vec<_>>().join("/")));
    }
    if let Some(cc) = c.min_compute_capability {
        parts.push(format!("compute capability >= {cc}"));
    }
    if parts.is_empty() { "-".to_owned() } else { parts.join(", ") }
}

pub(crate) fn kernels(json: bool) -> Result<(), CliError> {
    let snapshot = get_global_kernel_registry().snapshot();
    let backends = get_global_backend_registry();
    let mut out = std::io::stdout().lock();
    if json {
        let kernels: Vec<_> = snapshot
            .iter()
            .map(|spec| {
                let mut value = serde_json::to_value(&**spec).unwrap_or_default();
                if let Some(object) = value.as_object_mut() {
                    object.insert("available".into(), backends.is_available(&spec.backend).into());
                    object.insert("has_implementation".into(), snapshot.implementation(spec.id).is_some().into());
                }
                value
            })
            .collect();
        crate::table::write_json(&mut out, &serde_json::json!({ "kernels": kernels }))?;
        return Ok(());
    }
    let mut table = Table::new(["kernel", "operations", "backend", "priority", "available", "constraints"]);
    for spec in snapshot.iter() {
        let operations: Vec<String> = spec.operations.iter().map(ToString::to_string).collect();
        table.row(vec![
            spec.id.to_string(),
            operations.join(" "),
            spec.backend.clone(),
            spec.priority.to_string(),
            if backends.is_available(&spec.backend) { "yes" } else { "no" }.to_owned(),
            constraints(spec),
        ]);
    }
    write!(out, "{}", table.render())?;
    writeln!(out, "{} kernels", snapshot.len())?;
    Ok(())
}
