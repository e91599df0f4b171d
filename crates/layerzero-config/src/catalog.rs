//! [`KernelCatalog`]: kernel specs as data, so that a rules file can be checked and
//! explained against kernels that are not on this machine.

use layerzero_types::KernelSpec;
use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::document::MAX_DOCUMENT_BYTES;

/// A list of [`KernelSpec`]s read from YAML or JSON: constraints as data, no code.
///
/// ```
/// use layerzero_config::KernelCatalog;
///
/// let catalog = KernelCatalog::from_yaml(r#"
/// kernels:
///   - id: flash_attention_v2
///     operations: [attention.causal, attention.prefill]
///     platform: cuda
///     backend: cuda
///     priority: 100
///     constraints:
///       dtypes: [float16, bfloat16]
///       head_dim: {range: {min: 32, max: 256, multiple_of: 8}}
///       causal: supported
/// "#)?;
/// assert_eq!(catalog.kernels[0].id.as_str(), "flash_attention_v2");
/// # Ok::<(), layerzero_config::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelCatalog {
    /// The kernels, each validated.
    pub kernels: Vec<KernelSpec>,
}

impl KernelCatalog {
    /// Reads a catalog (`kernels: [...]`) from YAML or JSON and validates every spec.
    pub fn from_yaml(source: &str) -> Result<KernelCatalog, ConfigError> {
        if source.len() > MAX_DOCUMENT_BYTES {
            return Err(ConfigError::Catalog { message: format!("larger than {MAX_DOCUMENT_BYTES} bytes") });
        }
        let catalog = match serde_yaml::from_str::<KernelCatalog>(source) {
            Ok(catalog) => catalog,
            // serde_yaml wants enums as tags (`!range {..}`); the specs' JSON form is a
            // one-key map (`{range: {..}}`). Read that form through JSON values, and
            // report serde_yaml's error (it has the line and column) if that fails too.
            Err(yaml_error) => serde_yaml::from_str::<serde_yaml::Value>(source)
                .ok()
                .and_then(|value| serde_json::to_value(value).ok())
                .and_then(|value| serde_json::from_value(value).ok())
                .ok_or_else(|| ConfigError::Catalog { message: yaml_error.to_string() })?,
        };
        for spec in &catalog.kernels {
            spec.validate().map_err(|e| ConfigError::Catalog { message: e.to_string() })?;
        }
        Ok(catalog)
    }
}
