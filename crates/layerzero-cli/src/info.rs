//! `layerzero info`: the kernels registered in this build and this machine's backends.

use std::io::{self, Write};

use layerzero::registry::{BackendStatus, KernelSnapshot, get_global_backend_registry, get_global_kernel_registry};

pub(crate) fn info(json: bool) -> io::Result<()> {
    let kernels = get_global_kernel_registry().snapshot();
    let backends = get_global_backend_registry().backends();
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &info_json(&kernels, &backends))?;
        writeln!(out)
    } else {
        write_info(&mut out, &kernels, &backends)
    }
}

fn write_info(out: &mut impl Write, kernels: &KernelSnapshot, backends: &[BackendStatus]) -> io::Result<()> {
    writeln!(out, "backends:")?;
    for backend in backends {
        let version = backend.info.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default();
        writeln!(out, "  {}{version} ({}): {}", backend.info.name, backend.info.platform, backend.health)?;
        for device in &backend.info.devices {
            let mut facts = Vec::new();
            if let Some(cc) = device.compute_capability {
                facts.push(format!("compute capability {cc}"));
            }
            if let Some(units) = device.compute_units {
                facts.push(format!("{units} compute units"));
            }
            if let Some(bytes) = device.memory_bytes {
                facts.push(format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30)));
            }
            if !device.features.is_empty() {
                facts.push(device.features.join(" "));
            }
            writeln!(out, "    {} {}: {}", device.device, device.name, facts.join(", "))?;
        }
    }
    writeln!(out, "kernels: {} registered", kernels.len())?;
    for kernel in kernels.iter() {
        let operations: Vec<_> = kernel.operations.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "  {} [{}] backend={} priority={}",
            kernel.id,
            operations.join(", "),
            kernel.backend,
            kernel.priority
        )?;
    }
    Ok(())
}

fn info_json(kernels: &KernelSnapshot, backends: &[BackendStatus]) -> serde_json::Value {
    let backends: Vec<_> = backends
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.info.name,
                "platform": b.info.platform.as_str(),
                "version": b.info.version,
                "health": b.health.to_string(),
                "available": b.health.is_available(),
                "devices": b.info.devices.iter().map(|d| serde_json::json!({
                    "device": d.device.to_string(),
                    "name": d.name,
                    "compute_capability": d.compute_capability.map(|cc| cc.to_string()),
                    "compute_units": d.compute_units,
                    "memory_bytes": d.memory_bytes,
                    "features": d.features,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let kernels: Vec<_> = kernels.iter().map(|k| serde_json::to_value(&**k).unwrap_or_default()).collect();
    serde_json::json!({ "backends": backends, "kernels": kernels })
}

#[cfg(test)]
mod tests {
    use layerzero::registry::{BackendRegistry, KernelRegistry};
    use layerzero::types::{KernelSpec, OperationType, Platform};

    use super::*;

    fn fixture() -> (KernelSnapshot, Vec<BackendStatus>) {
        let kernels = KernelRegistry::new();
        kernels
            .register(KernelSpec::new("cli_test_norm", Platform::Cpu).unwrap().for_operation(OperationType::NormRms))
            .unwrap();
        let snapshot = KernelSnapshot::clone(&kernels.snapshot());
        (snapshot, BackendRegistry::detect().backends())
    }

    #[test]
    fn text_lists_backends_and_kernels() {
        let (kernels, backends) = fixture();
        let mut out = Vec::new();
        write_info(&mut out, &kernels, &backends).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("backends:\n  cpu (cpu): healthy\n    cpu "), "{text}");
        assert!(text.contains("kernels: 1 registered\n  cli_test_norm [rms_norm] backend=cpu priority=50\n"), "{text}");
    }

    #[test]
    fn json_has_the_same_facts() {
        let (kernels, backends) = fixture();
        let value = info_json(&kernels, &backends);
        assert_eq!(value["backends"][0]["name"], "cpu");
        assert_eq!(value["backends"][0]["available"], true);
        assert_eq!(value["kernels"][0]["id"], "cli_test_norm");
        assert_eq!(value["kernels"][0]["operations"][0], "rms_norm");
    }
}
