//! [`DispatchConfig`] and [`DispatchMode`]: how the dispatcher behaves (seed 000's dataclass).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// How kernels are chosen (seed 001's five modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DispatchMode {
    /// A kernel map fixed at build or start-up; no selection at run time.
    Static,
    /// The selection engine decides per call, with a cache.
    #[default]
    Dynamic,
    /// Like `Config`, with the rules file watched and swapped while running.
    HotReload,
    /// Rules from a YAML/JSON file decide.
    Config,
    /// The dispatcher picks one of the others per operation.
    Auto,
}

impl DispatchMode {
    /// Every mode, in the seed's order.
    pub const ALL: [DispatchMode; 5] = [
        DispatchMode::Static,
        DispatchMode::Dynamic,
        DispatchMode::HotReload,
        DispatchMode::Config,
        DispatchMode::Auto,
    ];

    /// The seed's name of the mode (`DYNAMIC`, `HOT_RELOAD`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            DispatchMode::Static => "STATIC",
            DispatchMode::Dynamic => "DYNAMIC",
            DispatchMode::HotReload => "HOT_RELOAD",
            DispatchMode::Config => "CONFIG",
            DispatchMode::Auto => "AUTO",
        }
    }
}

impl fmt::Display for DispatchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DispatchMode {
    type Err = ConfigError;

    /// Parses a mode name, ignoring case and accepting `-` for `_` (`hot-reload`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let normal = name.trim().to_ascii_uppercase().replace('-', "_");
        DispatchMode::ALL.into_iter().find(|mode| mode.as_str() == normal).ok_or_else(|| ConfigError::InvalidMode {
            value: name.to_owned(),
            suggestion: layerzero_types::nearest_name(&normal, DispatchMode::ALL.map(DispatchMode::as_str)),
        })
    }
}

/// Everything that steers the dispatcher: mode, cache, fallback, hot-reload, execution,
/// monitoring, circuit breaker and the static kernel map, with seed 000's defaults.
///
/// A `DispatchConfig` is always valid: build one with [`DispatchConfig::builder`] (checked
/// by [`DispatchConfigBuilder::build`]), [`DispatchConfig::default`] or
/// [`DispatchConfig::from_env`]. Read it through its getters.
///
/// ```
/// use layerzero_config::{ConfigError, DispatchConfig, DispatchMode};
///
/// let production = DispatchConfig::builder()
///     .mode(DispatchMode::Dynamic)
///     .cache_size(50_000)
///     .cache_ttl_seconds(7200.0)
///     .recovery_timeout_seconds(60.0)
///     .build()?;
/// assert_eq!(production.cache_size(), 50_000);
/// assert_eq!(production.failure_threshold(), 5); // the seed's default
///
/// let err = DispatchConfig::builder().cache_ttl_seconds(-1.0).build().unwrap_err();
/// assert_eq!(err.to_string(), "cache_ttl_seconds must be a finite number above 0, got -1");
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DispatchConfig {
    mode: DispatchMode,
    enable_cache: bool,
    cache_size: usize,
    cache_ttl_seconds: f64,
    enable_fallback: bool,
    max_fallback_attempts: u32,
    fallback_timeout_ms: f64,
    config_path: Option<String>,
    watch_interval_seconds: f64,
    validate_on_reload: bool,
    enable_transforms: bool,
    enable_cuda_graphs: bool,
    sync_after_execution: bool,
    enable_telemetry: bool,
    record_timing: bool,
    log_fallbacks: bool,
    circuit_breaker_enabled: bool,
    failure_threshold: u32,
    recovery_timeout_seconds: f64,
    static_kernel_map: BTreeMap<String, String>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            mode: DispatchMode::Dynamic,
            enable_cache: true,
            cache_size: 10_000,
            cache_ttl_seconds: 3600.0,
            enable_fallback: true,
            max_fallback_attempts: 3,
            fallback_timeout_ms: 100.0,
            config_path: None,
            watch_interval_seconds: 1.0,
            validate_on_reload: true,
            enable_transforms: true,
            enable_cuda_graphs: false,
            sync_after_execution: false,
            enable_telemetry: true,
            record_timing: true,
            log_fallbacks: true,
            circuit_breaker_enabled: true,
            failure_threshold: 5,
            recovery_timeout_seconds: 30.0,
            static_kernel_map: BTreeMap::new(),
        }
    }
}

macro_rules! config_fields {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {
        impl DispatchConfig {
            $($(#[$doc])* pub fn $field(&self) -> $ty { self.$field })*
        }
        impl DispatchConfigBuilder {
            $($(#[$doc])* pub fn $field(mut self, value: $ty) -> Self { self.config.$field = value; self })*
        }
    };
}

config_fields! {
    /// Primary dispatch mode (default `DYNAMIC`).
    mode: DispatchMode,
    /// Cache selections (default `true`).
    enable_cache: bool,
    /// Most cached selections (default 10000; at least 1 when the cache is on).
    cache_size: usize,
    /// Seconds a cached selection lives (default 3600).
    cache_ttl_seconds: f64,
    /// Walk the fallback chain when a kernel fails (default `true`).
    enable_fallback: bool,
    /// Most fallback kernels to try (default 3).
    max_fallback_attempts: u32,
    /// Time budget for fallback attempts, in milliseconds (default 100).
    fallback_timeout_ms: f64,
    /// Seconds between polls of the watched config file (default 1).
    watch_interval_seconds: f64,
    /// Validate a changed config before applying it (default `true`).
    validate_on_reload: bool,
    /// Allow tensor transformations (default `true`).
    enable_transforms: bool,
    /// Allow CUDA graph capture (default `false`).
    enable_cuda_graphs: bool,
    /// Synchronise the device after each kernel (default `false`).
    sync_after_execution: bool,
    /// Collect telemetry (default `true`).
    enable_telemetry: bool,
    /// Record kernel timings (default `true`).
    record_timing: bool,
    /// Log fallback events (default `true`).
    log_fallbacks: bool,
    /// Use per-kernel circuit breakers (default `true`).
    circuit_breaker_enabled: bool,
    /// Failures before a kernel's circuit opens (default 5; at least 1).
    failure_threshold: u32,
    /// Seconds an open circuit waits before half-open (default 30).
    recovery_timeout_seconds: f64,
}

impl DispatchConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> DispatchConfigBuilder {
        DispatchConfigBuilder { config: DispatchConfig::default() }
    }

    /// Path of the YAML/JSON rules file (default none).
    pub fn config_path(&self) -> Option<&str> {
        self.config_path.as_deref()
    }

    /// Operation name to kernel id, for STATIC dispatch (default empty).
    pub fn static_kernel_map(&self) -> &BTreeMap<String, String> {
        &self.static_kernel_map
    }

    /// A builder starting from this configuration.
    pub fn to_builder(&self) -> DispatchConfigBuilder {
        DispatchConfigBuilder { config: self.clone() }
    }

    /// Reads the `LAYERZERO_*` environment variables over the defaults (see
    /// [`DispatchConfig::from_vars`] for the list). A variable that is set but cannot be
    /// read is an error naming it.
    pub fn from_env() -> Result<DispatchConfig, ConfigError> {
        DispatchConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup` (for tests and
    /// for embedding programs with their own environment).
    ///
    /// Variables: `LAYERZERO_DISPATCH_MODE` (a mode name), `LAYERZERO_CACHE_SIZE`,
    /// `LAYERZERO_CACHE_TTL_SECONDS`, `LAYERZERO_CONFIG_PATH`, `LAYERZERO_ENABLE_CACHE`,
    /// `LAYERZERO_ENABLE_FALLBACK`, `LAYERZERO_MAX_FALLBACK_ATTEMPTS`,
    /// `LAYERZERO_FALLBACK_TIMEOUT_MS`, `LAYERZERO_WATCH_INTERVAL_SECONDS`,
    /// `LAYERZERO_VALIDATE_ON_RELOAD`, `LAYERZERO_ENABLE_CUDA_GRAPHS`,
    /// `LAYERZERO_ENABLE_TELEMETRY`, `LAYERZERO_CIRCUIT_BREAKER`,
    /// `LAYERZERO_FAILURE_THRESHOLD`, `LAYERZERO_RECOVERY_TIMEOUT_SECONDS`. Booleans are
    /// `true`/`false`/`1`/`0`/`yes`/`no` in any case.
    ///
    /// ```
    /// use layerzero_config::{DispatchConfig, DispatchMode};
    ///
    /// let env = |name: &str| match name {
    ///     "LAYERZERO_DISPATCH_MODE" => Some("hot_reload".to_string()),
    ///     "LAYERZERO_CACHE_SIZE" => Some("500".to_string()),
    ///     _ => None,
    /// };
    /// let config = DispatchConfig::from_vars(env)?;
    /// assert_eq!((config.mode(), config.cache_size()), (DispatchMode::HotReload, 500));
    ///
    /// let bad = DispatchConfig::from_vars(|name| (name == "LAYERZERO_CACHE_SIZE").then(|| "-1".into()));
    /// assert_eq!(bad.unwrap_err().to_string(), "LAYERZERO_CACHE_SIZE: expected a non-negative integer, got `-1`");
    /// # Ok::<(), layerzero_config::ConfigError>(())
    /// ```
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<DispatchConfig, ConfigError> {
        let mut b = DispatchConfig::builder();
        let var = |name: &'static str| lookup(name).map(|value| (name, value));
        if let Some((name, value)) = var("LAYERZERO_DISPATCH_MODE") {
            b = b.mode(value.parse().map_err(|err: ConfigError| env_error(name, &value, &err.to_string()))?);
        }
        if let Some(path) = lookup("LAYERZERO_CONFIG_PATH") {
            b = b.config_path(Some(path).filter(|path| !path.is_empty()));
        }
        macro_rules! read {
            ($($var:literal => $setter:ident as $parse:ident),* $(,)?) => {$(
                if let Some((name, value)) = var($var) {
                    b = b.$setter($parse(name, &value)?);
                }
            )*};
        }
        read! {
            "LAYERZERO_CACHE_SIZE" => cache_size as parse_usize,
            "LAYERZERO_CACHE_TTL_SECONDS" => cache_ttl_seconds as parse_f64,
            "LAYERZERO_ENABLE_CACHE" => enable_cache as parse_bool,
            "LAYERZERO_ENABLE_FALLBACK" => enable_fallback as parse_bool,
            "LAYERZERO_MAX_FALLBACK_ATTEMPTS" => max_fallback_attempts as parse_u32,
            "LAYERZERO_FALLBACK_TIMEOUT_MS" => fallback_timeout_ms as parse_f64,
            "LAYERZERO_WATCH_INTERVAL_SECONDS" => watch_interval_seconds as parse_f64,
            "LAYERZERO_VALIDATE_ON_RELOAD" => validate_on_reload as parse_bool,
            "LAYERZERO_ENABLE_CUDA_GRAPHS" => enable_cuda_graphs as parse_bool,
            "LAYERZERO_ENABLE_TELEMETRY" => enable_telemetry as parse_bool,
            "LAYERZERO_CIRCUIT_BREAKER" => circuit_breaker_enabled as parse_bool,
            "LAYERZERO_FAILURE_THRESHOLD" => failure_threshold as parse_u32,
            "LAYERZERO_RECOVERY_TIMEOUT_SECONDS" => recovery_timeout_seconds as parse_f64,
        }
        b.build()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.enable_cache && self.cache_size == 0 {
            return Err(ConfigError::InvalidField {
                field: "cache_size",
                message: "must be at least 1 when enable_cache is true, got 0".into(),
            });
        }
        if self.failure_threshold == 0 {
            return Err(ConfigError::InvalidField {
                field: "failure_threshold",
                message: "must be at least 1, got 0".into(),
            });
        }
        for (field, value) in [
            ("cache_ttl_seconds", self.cache_ttl_seconds),
            ("fallback_timeout_ms", self.fallback_timeout_ms),
            ("watch_interval_seconds", self.watch_interval_seconds),
            ("recovery_timeout_seconds", self.recovery_timeout_seconds),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::InvalidField {
                    field,
                    message: format!("must be a finite number above 0, got {value}"),
                });
            }
        }
        for (operation, kernel) in &self.static_kernel_map {
            layerzero_types::Operation::parse(operation)
                .map_err(|err| ConfigError::InvalidField { field: "static_kernel_map", message: err.to_string() })?;
            layerzero_types::KernelId::new(kernel)
                .map_err(|err| ConfigError::InvalidField { field: "static_kernel_map", message: err.to_string() })?;
        }
        Ok(())
    }
}

fn env_error(variable: &'static str, value: &str, expected: &str) -> ConfigError {
    ConfigError::InvalidEnv { variable, value: value.to_owned(), expected: expected.to_owned() }
}

fn parse_usize(variable: &'static str, value: &str) -> Result<usize, ConfigError> {
    value.trim().parse().map_err(|_| env_error(variable, value, "a non-negative integer"))
}

fn parse_u32(variable: &'static str, value: &str) -> Result<u32, ConfigError> {
    value.trim().parse().map_err(|_| env_error(variable, value, "a non-negative integer"))
}

fn parse_f64(variable: &'static str, value: &str) -> Result<f64, ConfigError> {
    value.trim().parse().map_err(|_| env_error(variable, value, "a number"))
}

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(env_error(variable, value, "true or false")),
    }
}

/// Builds a [`DispatchConfig`]; [`build`](Self::build) checks it.
#[derive(Clone, Debug)]
#[must_use]
pub struct DispatchConfigBuilder {
    config: DispatchConfig,
}

impl DispatchConfigBuilder {
    /// Path of the YAML/JSON rules file.
    pub fn config_path(mut self, path: Option<String>) -> Self {
        self.config.config_path = path;
        self
    }

    /// Maps an operation to a kernel for STATIC dispatch.
    pub fn static_kernel(mut self, operation: impl Into<String>, kernel: impl Into<String>) -> Self {
        self.config.static_kernel_map.insert(operation.into(), kernel.into());
        self
    }

    /// Checks the configuration: a cache of at least one entry when caching is on, a
    /// failure threshold of at least 1, finite positive times, and valid operation and
    /// kernel names in the static map.
    pub fn build(self) -> Result<DispatchConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds() {
        let c = DispatchConfig::default();
        assert_eq!(c.mode(), DispatchMode::Dynamic);
        assert!(c.enable_cache() && c.enable_fallback() && c.validate_on_reload() && c.enable_transforms());
        assert!(!c.enable_cuda_graphs() && !c.sync_after_execution());
        assert!(c.enable_telemetry() && c.record_timing() && c.log_fallbacks() && c.circuit_breaker_enabled());
        assert_eq!((c.cache_size(), c.cache_ttl_seconds()), (10_000, 3600.0));
        assert_eq!((c.max_fallback_attempts(), c.fallback_timeout_ms()), (3, 100.0));
        assert_eq!((c.config_path(), c.watch_interval_seconds()), (None, 1.0));
        assert_eq!((c.failure_threshold(), c.recovery_timeout_seconds()), (5, 30.0));
        assert!(c.static_kernel_map().is_empty());
        assert_eq!(DispatchConfig::builder().build().unwrap(), c);
    }

    #[test]
    fn the_seeds_low_latency_example_builds() {
        let c = DispatchConfig::builder()
            .mode(DispatchMode::Static)
            .static_kernel("attention.causal", "flash_attn_v2_attention")
            .static_kernel("rms_norm", "liger_rms_norm")
            .circuit_breaker_enabled(false)
            .enable_telemetry(false)
            .build()
            .unwrap();
        assert_eq!(c.static_kernel_map().get("rms_norm").map(String::as_str), Some("liger_rms_norm"));
    }

    #[test]
    fn invalid_values_are_refused_with_the_field() {
        let field = |b: DispatchConfigBuilder| match b.build() {
            Err(ConfigError::InvalidField { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        let b = DispatchConfig::builder;
        assert_eq!(field(b().cache_size(0)), "cache_size");
        assert!(b().cache_size(0).enable_cache(false).build().is_ok());
        assert_eq!(field(b().failure_threshold(0)), "failure_threshold");
        assert_eq!(field(b().cache_ttl_seconds(f64::NAN)), "cache_ttl_seconds");
        assert_eq!(field(b().fallback_timeout_ms(-5.0)), "fallback_timeout_ms");
        assert_eq!(field(b().watch_interval_seconds(0.0)), "watch_interval_seconds");
        assert_eq!(field(b().recovery_timeout_seconds(f64::INFINITY)), "recovery_timeout_seconds");
        assert_eq!(field(b().static_kernel("attention.casual", "k")), "static_kernel_map");
        assert_eq!(field(b().static_kernel("rms_norm", "bad kernel")), "static_kernel_map");
    }

    #[test]
    fn modes_parse_leniently_and_suggest() {
        assert_eq!("HOT_RELOAD".parse::<DispatchMode>().unwrap(), DispatchMode::HotReload);
        assert_eq!("hot-reload".parse::<DispatchMode>().unwrap(), DispatchMode::HotReload);
        assert_eq!("auto".parse::<DispatchMode>().unwrap(), DispatchMode::Auto);
        let err = "DYNAMC".parse::<DispatchMode>().unwrap_err();
        assert_eq!(err.to_string(), "invalid dispatch mode `DYNAMC` (did you mean `DYNAMIC`?)");
    }

    #[test]
    fn env_reads_every_variable_and_names_bad_ones() {
        let vars = [
            ("LAYERZERO_DISPATCH_MODE", "CONFIG"),
            ("LAYERZERO_CACHE_SIZE", "123"),
            ("LAYERZERO_CACHE_TTL_SECONDS", "60"),
            ("LAYERZERO_CONFIG_PATH", "configs/kernels.yaml"),
            ("LAYERZERO_ENABLE_CACHE", "TRUE"),
            ("LAYERZERO_ENABLE_FALLBACK", "no"),
            ("LAYERZERO_MAX_FALLBACK_ATTEMPTS", "7"),
            ("LAYERZERO_FALLBACK_TIMEOUT_MS", "12.5"),
            ("LAYERZERO_WATCH_INTERVAL_SECONDS", "0.5"),
            ("LAYERZERO_VALIDATE_ON_RELOAD", "0"),
            ("LAYERZERO_ENABLE_CUDA_GRAPHS", "1"),
            ("LAYERZERO_ENABLE_TELEMETRY", "off"),
            ("LAYERZERO_CIRCUIT_BREAKER", "false"),
            ("LAYERZERO_FAILURE_THRESHOLD", "9"),
            ("LAYERZERO_RECOVERY_TIMEOUT_SECONDS", "15"),
        ];
        let lookup = |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
        let c = DispatchConfig::from_vars(lookup).unwrap();
        assert_eq!(c.mode(), DispatchMode::Config);
        assert_eq!((c.cache_size(), c.cache_ttl_seconds(), c.config_path()), (123, 60.0, Some("configs/kernels.yaml")));
        assert!(c.enable_cache() && !c.enable_fallback() && !c.validate_on_reload() && c.enable_cuda_graphs());
        assert!(!c.enable_telemetry() && !c.circuit_breaker_enabled());
        assert_eq!((c.max_fallback_attempts(), c.fallback_timeout_ms()), (7, 12.5));
        assert_eq!((c.watch_interval_seconds(), c.failure_threshold(), c.recovery_timeout_seconds()), (0.5, 9, 15.0));

        let one = |name: &'static str, value: &'static str| {
            DispatchConfig::from_vars(move |n| (n == name).then(|| value.to_owned()))
        };
        assert_eq!(
            one("LAYERZERO_ENABLE_CACHE", "maybe").unwrap_err().to_string(),
            "LAYERZERO_ENABLE_CACHE: expected true or false, got `maybe`"
        );
        assert!(matches!(
            one("LAYERZERO_DISPATCH_MODE", "FAST"),
            Err(ConfigError::InvalidEnv { variable: "LAYERZERO_DISPATCH_MODE", .. })
        ));
        assert!(matches!(one("LAYERZERO_CACHE_TTL_SECONDS", "soon"), Err(ConfigError::InvalidEnv { .. })));
        // Readable but invalid: the config check names the field.
        assert!(matches!(one("LAYERZERO_FAILURE_THRESHOLD", "0"), Err(ConfigError::InvalidField { .. })));
        assert_eq!(DispatchConfig::from_vars(|_| None).unwrap(), DispatchConfig::default());
    }
}
