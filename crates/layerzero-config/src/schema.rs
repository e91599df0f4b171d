//! [`ConfigSchema`]: reads a rules file, reporting every problem with its path, message,
//! value, line and column (seed 000's `SchemaError`), then compiles it.

use std::fmt;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::document::{self, Node, NodeKind, Position, Scalar};
use crate::model::{ConditionValue, Defaults, DispatchRule, KernelsConfig, OrderedMap};
use crate::{CompiledConfig, ConfigError, LintWarning, lint};

/// One problem in a rules file: where (`path`, `position`), what (`message`, in seed 000's
/// words), the offending `value` as written, and a `hint` when a near name exists.
///
/// `Display` gives the seed's form, `path: message (value)`;
/// [`located`](SchemaError::located) prefixes the line and column and adds the hint.
///
/// ```
/// use layerzero_config::ConfigSchema;
///
/// let errors = ConfigSchema.validate("version: \"2.0\"\n");
/// assert_eq!(errors[0].to_string(), "version: Unsupported version, must be one of ['1.0'] (2.0)");
/// assert_eq!((errors[0].position.line, errors[0].position.column), (1, 10));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SchemaError {
    /// Where in the document: `dispatch_rules[0].conditions.dtype`.
    pub path: String,
    /// What is wrong: `Invalid dtype`.
    pub message: String,
    /// The value as written, when there is one: `fp16`.
    pub value: Option<String>,
    /// Line and column of the value (or of its nearest known parent).
    pub position: Position,
    /// A likely fix: `did you mean 'float16'?`.
    pub hint: Option<String>,
}

impl SchemaError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SchemaError {
            path: path.into(),
            message: message.into(),
            value: None,
            position: Position::default(),
            hint: None,
        }
    }

    pub(crate) fn value(mut self, value: impl fmt::Display) -> Self {
        self.value = Some(value.to_string());
        self
    }

    pub(crate) fn hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    pub(crate) fn did_you_mean(self, name: Option<&str>) -> Self {
        self.hint(name.map(|n| format!("did you mean '{n}'?")))
    }

    fn at(mut self, position: Position) -> Self {
        self.position = position;
        self
    }

    /// `line:column: path: message (value); hint`, for people reading a terminal.
    pub fn located(&self) -> String {
        let mut out = String::new();
        if self.position.is_known() {
            out.push_str(&format!("{}: ", self.position));
        }
        out.push_str(&self.to_string());
        if let Some(hint) = &self.hint {
            out.push_str("; ");
            out.push_str(hint);
        }
        out
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(value) = &self.value {
            write!(f, " ({value})")?;
        }
        Ok(())
    }
}

/// A rules file that passed validation: what it says, its compiled form, and the lint
/// warnings (valid but surely wrong).
#[derive(Debug)]
pub struct LoadedConfig {
    /// The file as serde types.
    pub config: KernelsConfig,
    /// The rules compiled for evaluation.
    pub compiled: CompiledConfig,
    /// Things that are allowed but probably not meant.
    pub warnings: Vec<LintWarning>,
}

/// Seed 000's `ConfigSchema`: validates and loads rules files (YAML, or JSON).
///
/// ```
/// use layerzero_config::ConfigSchema;
///
/// let source = r#"
/// version: "1.0"
/// dispatch_rules:
///   - operation: "attention.*"
///     conditions:
///       dtype: fp16
///       batch_size: "8"
///     kernel: flash_attention_v2
///     priority: 2000
/// "#;
/// let errors = ConfigSchema.validate(source);
/// let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
/// assert_eq!(texts, [
///     "dispatch_rules[0].conditions.dtype: Invalid dtype (fp16)",
///     "dispatch_rules[0].conditions.batch_size: Must be integer (8)",
///     "dispatch_rules[0].priority: Must be between 0 and 1000 (2000)",
/// ]);
/// assert_eq!(errors[0].located(),
///     "6:14: dispatch_rules[0].conditions.dtype: Invalid dtype (fp16); did you mean 'float16'?");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ConfigSchema;

impl ConfigSchema {
    /// Every problem in `source`, in the order found (empty when the file is valid).
    pub fn validate(&self, source: &str) -> Vec<SchemaError> {
        match self.load(source) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Schema { errors }) => errors,
            Err(other) => vec![SchemaError::new("", other.to_string())],
        }
    }

    /// Validates, compiles and lints `source`. Fails with [`ConfigError::Schema`] holding
    /// every problem.
    pub fn load(&self, source: &str) -> Result<LoadedConfig, ConfigError> {
        let root = document::parse(source)
            .map_err(|e| ConfigError::Schema { errors: vec![SchemaError::new("", e.message).at(e.position)] })?;
        let mut reader = Reader::default();
        let config = reader.config(&root);
        let mut errors = reader.errors;
        let positions = reader.positions;
        let compiled = match CompiledConfig::compile(&config) {
            Ok(compiled) => Some(compiled),
            Err(compile_errors) => {
                for error in compile_errors {
                    // A field the reader already refused (a kernel of the wrong type, say)
                    // reaches the compiler empty; do not report it twice.
                    if !errors.iter().any(|e| e.path == error.path) {
                        let position = locate(&positions, &error.path);
                        errors.push(error.at(position));
                    }
                }
                None
            }
        };
        match compiled {
            Some(compiled) if errors.is_empty() => {
                let warnings = lint::lint(&config, &compiled)
                    .into_iter()
                    .map(|mut warning| {
                        warning.position = locate(&positions, &warning.path);
                        warning
                    })
                    .collect::<Vec<_>>();
                let mut warnings = warnings;
                warnings.sort_by_key(|w| w.position);
                Ok(LoadedConfig { config, compiled, warnings })
            }
            _ => {
                // File order, like a compiler (a stable sort keeps one line's errors in
                // the order found).
                errors.sort_by_key(|e| e.position);
                Err(ConfigError::Schema { errors })
            }
        }
    }

    /// Reads and loads the file at `path`.
    pub fn load_file(&self, path: impl AsRef<std::path::Path>) -> Result<LoadedConfig, ConfigError> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError::Schema {
            errors: vec![SchemaError::new("", format!("Cannot read {}: {e}", path.display()))],
        })?;
        self.load(&source)
    }
}

/// The position of `path`, or of its nearest recorded parent.
fn locate(positions: &FxHashMap<String, Position>, path: &str) -> Position {
    let mut path = path;
    loop {
        if let Some(&position) = positions.get(path) {
            return position;
        }
        match path.rfind(['.', '[']) {
            Some(cut) if cut > 0 => path = &path[..cut],
            _ => return Position::default(),
        }
    }
}

/// Joins a map key onto a path: `parent.key`, or `parent["key"]` when the key is not a
/// plain identifier (`kernel_locks["attention.causal"]`).
pub(crate) fn key_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (true, false) => format!("[{key:?}]"),
        (false, true) => format!("{parent}.{key}"),
        (false, false) => format!("{parent}[{key:?}]"),
    }
}

const TOP_LEVEL_KEYS: [&str; 7] =
    ["version", "defaults", "dispatch_rules", "kernel_locks", "kernel_allows", "kernel_denies", "fallback_chains"];
const DEFAULTS_KEYS: [&str; 2] = ["fallback_policy", "default_priority"];
const RULE_KEYS: [&str; 4] = ["operation", "conditions", "kernel", "priority"];

/// Turns the document tree into [`KernelsConfig`], collecting structural errors (types,
/// unknown keys, missing sections) and the position of every path it visits.
#[derive(Default)]
struct Reader {
    errors: Vec<SchemaError>,
    positions: FxHashMap<String, Position>,
    key_positions: FxHashMap<String, Position>,
}

impl Reader {
    fn error(&mut self, path: &str, message: &str, node: &Node) {
        self.errors.push(SchemaError::new(path, message).value(node.display_value()).at(node.position));
    }

    fn visit(&mut self, path: &str, node: &Node) {
        self.positions.insert(path.to_owned(), node.position);
    }

    /// The entries of a mapping, with duplicate and non-string keys reported.
    fn entries<'n>(&mut self, path: &str, node: &'n Node) -> Vec<(String, &'n Node)> {
        self.visit(path, node);
        let NodeKind::Map(entries) = &node.kind else {
            if !node.is_null() {
                self.error(path, "Must be a mapping", node);
            }
            return Vec::new();
        };
        let mut out: Vec<(String, &Node)> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let NodeKind::Scalar { text, .. } = &key.kind else {
                self.error(path, "Keys must be strings", key);
                continue;
            };
            let child = key_path(path, text);
            if out.iter().any(|(k, _)| k == text) {
                self.errors.push(SchemaError::new(child, "Duplicate key").at(key.position));
                continue;
            }
            self.visit(&child, value);
            self.key_positions.insert(child, key.position);
            out.push((text.clone(), value));
        }
        out
    }

    fn unknown_key(&mut self, path: &str, key: &str, known: &[&'static str], node: &Node) {
        let suggestion = layerzero_types::nearest_name(key, known.iter().copied());
        let mut error = SchemaError::new(key_path(path, key), "Unknown key").did_you_mean(suggestion);
        error.position = self.key_positions.get(&key_path(path, key)).copied().unwrap_or(node.position);
        self.errors.push(error);
    }

    fn string(&mut self, path: &str, node: &Node) -> Option<String> {
        match node.scalar() {
            Some(Scalar::Str(s)) => Some(s.to_owned()),
            _ => {
                self.error(path, "Must be string", node);
                None
            }
        }
    }

    fn strings(&mut self, path: &str, node: &Node) -> Vec<String> {
        self.visit(path, node);
        match &node.kind {
            NodeKind::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let item_path = format!("{path}[{i}]");
                    self.visit(&item_path, item);
                    self.string(&item_path, item)
                })
                .collect(),
            _ if node.is_null() => Vec::new(),
            _ => {
                self.error(path, "Must be a list", node);
                Vec::new()
            }
        }
    }

    fn priority(&mut self, path: &str, node: &Node) -> Option<u32> {
        match node.scalar() {
            Some(Scalar::Int(p)) if (0..=1000).contains(&p) => u32::try_from(p).ok(),
            Some(Scalar::Int(_)) => {
                self.error(path, "Must be between 0 and 1000", node);
                None
            }
            _ => {
                self.error(path, "Must be integer", node);
                None
            }
        }
    }

    fn config(&mut self, root: &Node) -> KernelsConfig {
        let mut config = KernelsConfig::default();
        if !matches!(root.kind, NodeKind::Map(_)) {
            self.errors.push(SchemaError::new("", "Config must be a mapping").at(root.position));
            return config;
        }
        for (key, node) in self.entries("", root) {
            match key.as_str() {
                "version" => {
                    config.version = match &node.kind {
                        NodeKind::Scalar { text, .. } => text.clone(),
                        _ => {
                            self.error("version", "Must be string", node);
                            continue;
                        }
                    }
                }
                "defaults" => config.defaults = self.defaults(node),
                "dispatch_rules" => {
                    self.visit("dispatch_rules", node);
                    match &node.kind {
                        NodeKind::Seq(rules) => {
                            config.dispatch_rules =
                                rules.iter().enumerate().map(|(i, rule)| self.rule(i, rule)).collect();
                        }
                        _ if node.is_null() => {}
                        _ => self.error("dispatch_rules", "Must be a list", node),
                    }
                }
                "kernel_locks" => {
                    let mut locks = Vec::new();
                    for (operation, kernel) in self.entries("kernel_locks", node) {
                        if let Some(kernel) = self.string(&key_path("kernel_locks", &operation), kernel) {
                            locks.push((operation, kernel));
                        }
                    }
                    config.kernel_locks = OrderedMap(locks);
                }
                "kernel_allows" => config.kernel_allows = self.strings("kernel_allows", node),
                "kernel_denies" => config.kernel_denies = self.strings("kernel_denies", node),
                "fallback_chains" => {
                    let mut chains = Vec::new();
                    for (operation, kernels) in self.entries("fallback_chains", node) {
                        let kernels = self.strings(&key_path("fallback_chains", &operation), kernels);
                        chains.push((operation, kernels));
                    }
                    config.fallback_chains = OrderedMap(chains);
                }
                other => self.unknown_key("", other, &TOP_LEVEL_KEYS, node),
            }
        }
        config
    }

    fn defaults(&mut self, node: &Node) -> Defaults {
        let mut defaults = Defaults::default();
        for (key, value) in self.entries("defaults", node) {
            let path = key_path("defaults", &key);
            match key.as_str() {
                "fallback_policy" => defaults.fallback_policy = self.string(&path, value),
                "default_priority" => {
                    if let Some(p) = self.priority(&path, value) {
                        defaults.default_priority = p;
                    }
                }
                other => self.unknown_key("defaults", other, &DEFAULTS_KEYS, value),
            }
        }
        defaults
    }

    fn rule(&mut self, index: usize, node: &Node) -> DispatchRule {
        let path = format!("dispatch_rules[{index}]");
        let mut rule = DispatchRule::default();
        if !matches!(node.kind, NodeKind::Map(_)) {
            self.visit(&path, node);
            self.error(&path, "Must be a mapping", node);
            return rule;
        }
        for (key, value) in self.entries(&path, node) {
            let field = key_path(&path, &key);
            match key.as_str() {
                "operation" => rule.operation = self.string(&field, value).unwrap_or_default(),
                "kernel" => rule.kernel = self.string(&field, value).unwrap_or_default(),
                "priority" => rule.priority = self.priority(&field, value),
                "conditions" => {
                    let mut conditions = Vec::new();
                    for (name, value) in self.entries(&field, value) {
                        let condition_path = key_path(&field, &name);
                        if let Some(value) = self.condition_value(&condition_path, value, true) {
                            conditions.push((name, value));
                        }
                    }
                    rule.conditions = OrderedMap(conditions);
                }
                other => self.unknown_key(&path, other, &RULE_KEYS, value),
            }
        }
        rule
    }

    fn condition_value(&mut self, path: &str, node: &Node, list_allowed: bool) -> Option<ConditionValue> {
        Some(match (&node.kind, node.scalar()) {
            (NodeKind::Seq(items), _) if list_allowed => ConditionValue::List(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| {
                        let item_path = format!("{path}[{i}]");
                        self.visit(&item_path, item);
                        self.condition_value(&item_path, item, false)
                    })
                    .collect(),
            ),
            (_, Some(Scalar::Bool(b))) => ConditionValue::Bool(b),
            (_, Some(Scalar::Int(i))) => ConditionValue::Int(i),
            (_, Some(Scalar::Float(f))) => ConditionValue::Float(f),
            (_, Some(Scalar::Str(s))) => ConditionValue::Str(s.to_owned()),
            (_, Some(Scalar::Null)) => {
                self.error(path, "Must have a value", node);
                return None;
            }
            _ => {
                self.error(path, "Must be a value or a list of values", node);
                return None;
            }
        })
    }
}
