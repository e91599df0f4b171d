//! The rules-file and kernel-catalog loaders on arbitrary bytes: no panic, no hang.
//!
//! `cargo +nightly fuzz run config_parse -- -max_total_time=300`

#![no_main]

use layerzero_config::{ConfigSchema, KernelCatalog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else { return };
    if let Ok(loaded) = ConfigSchema.load(source) {
        // A loaded config compiles again from its serde form, and prints.
        let _ = layerzero_config::CompiledConfig::compile(&loaded.config);
        for warning in &loaded.warnings {
            let _ = warning.to_string();
        }
    } else {
        for error in ConfigSchema.validate(source) {
            let _ = error.located();
        }
    }
    let _ = KernelCatalog::from_yaml(source);
});
