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
        // Only a file with problems needs the position of a path: read it again then.
        let mut positions = None;
        let mut locate = |path: &str| locate(positions.get_or_insert_with(|| Reader::positions(&root)), path);
        let compiled = match CompiledConfig::compile(&config) {
            Ok(compiled) => Some(compiled),
            Err(compile_errors) => {
                for error in compile_errors {
                    // A field the reader already refused (a kernel of the wrong type, say)
                    // reaches the compiler empty; do not report it twice.
                    if !errors.iter().any(|e| e.path == error.path) {
                        let position = locate(&error.path);
                        errors.push(error.at(position));
                    }
                }
                None
            }
        };
        match compiled {
            Some(compiled) if errors.is_empty() => {
                let mut warnings = lint::lint(&config, &compiled);
                for warning in &mut warnings {
                    warning.position = locate(&warning.path);
                }
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
    let mut path = String::with_capacity(parent.len() + key.len() + 1);
    path.push_str(parent);
    // Writing to a String cannot fail.
    let _ = write_key(&mut path, parent.is_empty(), key);
    path
}

/// Writes the `.key` or `["key"]` that [`key_path`] adds to its parent.
fn write_key(out: &mut impl fmt::Write, at_root: bool, key: &str) -> fmt::Result {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match (at_root, plain) {
        (true, true) => out.write_str(key),
        (false, true) => write!(out, ".{key}"),
        (_, false) => write!(out, "[{key:?}]"),
    }
}

/// A path in the document as the reader descends (`dispatch_rules[3].conditions.dtype`),
/// kept on the stack and written out only for an error or a recorded position: a valid
/// file's paths are never built.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl Path<'_> {
    const DISPATCH_RULES: Path<'static> = Path::Key(&Path::Root, "dispatch_rules");
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, key) => {
                parent.fmt(f)?;
                write_key(f, matches!(parent, Path::Root), key)
            }
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

const TOP_LEVEL_KEYS: [&str; 7] =
    ["version", "defaults", "dispatch_rules", "kernel_locks", "kernel_allows", "kernel_denies", "fallback_chains"];
const DEFAULTS_KEYS: [&str; 2] = ["fallback_policy", "default_priority"];
const RULE_KEYS: [&str; 4] = ["operation", "conditions", "kernel", "priority"];

/// Turns the document tree into [`KernelsConfig`], collecting structural errors (types,
/// unknown keys, missing sections) and, when asked, the position of every path it visits.
#[derive(Default)]
struct Reader {
    errors: Vec<SchemaError>,
    positions: Option<FxHashMap<String, Position>>,
}

impl Reader {
    /// The position of every path that reading `root` visits.
    fn positions(root: &Node<'_>) -> FxHashMap<String, Position> {
        let mut reader = Reader { errors: Vec::new(), positions: Some(FxHashMap::default()) };
        reader.config(root);
        reader.positions.unwrap_or_default()
    }

    fn error(&mut self, path: Path<'_>, message: &str, node: &Node<'_>) {
        self.errors.push(SchemaError::new(path.to_string(), message).value(node.display_value()).at(node.position));
    }

    fn visit(&mut self, path: Path<'_>, node: &Node<'_>) {
        if let Some(positions) = &mut self.positions {
            positions.insert(path.to_string(), node.position);
        }
    }

    /// The entries of a mapping (key, key position, value), with duplicate and
    /// non-string keys reported.
    fn entries<'n, 's>(&mut self, path: Path<'_>, node: &'n Node<'s>) -> Vec<(&'n str, Position, &'n Node<'s>)> {
        self.visit(path, node);
        let NodeKind::Map(entries) = &node.kind else {
            if !node.is_null() {
                self.error(path, "Must be a mapping", node);
            }
            return Vec::new();
        };
        let mut out: Vec<(&str, Position, &Node<'_>)> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let NodeKind::Scalar { text, .. } = &key.kind else {
                self.error(path, "Keys must be strings", key);
                continue;
            };
            let child = Path::Key(&path, text);
            if out.iter().any(|(k, ..)| k == text) {
                self.errors.push(SchemaError::new(child.to_string(), "Duplicate key").at(key.position));
                continue;
            }
            self.visit(child, value);
            out.push((text, key.position, value));
        }
        out
    }

    fn unknown_key(&mut self, path: Path<'_>, key: &str, position: Position, known: &[&'static str]) {
        let suggestion = layerzero_types::nearest_name(key, known.iter().copied());
        let mut error = SchemaError::new(Path::Key(&path, key).to_string(), "Unknown key").did_you_mean(suggestion);
        error.position = position;
        self.errors.push(error);
    }

    fn string(&mut self, path: Path<'_>, node: &Node<'_>) -> Option<String> {
        match node.scalar() {
            Some(Scalar::Str(s)) => Some(s.to_owned()),
            _ => {
                self.error(path, "Must be string", node);
                None
            }
        }
    }

    fn strings(&mut self, path: Path<'_>, node: &Node<'_>) -> Vec<String> {
        self.visit(path, node);
        match &node.kind {
            NodeKind::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let item_path = Path::Index(&path, i);
                    self.visit(item_path, item);
                    self.string(item_path, item)
                })
                .collect(),
            _ if node.is_null() => Vec::new(),
            _ => {
                self.error(path, "Must be a list", node);
                Vec::new()
            }
        }
    }

    fn priority(&mut self, path: Path<'_>, node: &Node<'_>) -> Option<u32> {
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

    fn config(&mut self, root: &Node<'_>) -> KernelsConfig {
        let mut config = KernelsConfig::default();
        if !matches!(root.kind, NodeKind::Map(_)) {
            self.errors.push(SchemaError::new("", "Config must be a mapping").at(root.position));
            return config;
        }
        for (key, key_position, node) in self.entries(Path::Root, root) {
            let path = Path::Key(&Path::Root, key);
            match key {
                "version" => {
                    config.version = match &node.kind {
                        NodeKind::Scalar { text, .. } => text.to_string(),
                        _ => {
                            self.error(path, "Must be string", node);
                            continue;
                        }
                    }
                }
                "defaults" => config.defaults = self.defaults(node),
                "dispatch_rules" => {
                    self.visit(path, node);
                    match &node.kind {
                        NodeKind::Seq(rules) => {
                            config.dispatch_rules =
                                rules.iter().enumerate().map(|(i, rule)| self.rule(i, rule)).collect();
                        }
                        _ if node.is_null() => {}
                        _ => self.error(path, "Must be a list", node),
                    }
                }
                "kernel_locks" => {
                    let mut locks = Vec::new();
                    for (operation, _, kernel) in self.entries(path, node) {
                        if let Some(kernel) = self.string(Path::Key(&path, operation), kernel) {
                            locks.push((operation.to_owned(), kernel));
                        }
                    }
                    config.kernel_locks = OrderedMap(locks);
                }
                "kernel_allows" => config.kernel_allows = self.strings(path, node),
                "kernel_denies" => config.kernel_denies = self.strings(path, node),
                "fallback_chains" => {
                    let mut chains = Vec::new();
                    for (operation, _, kernels) in self.entries(path, node) {
                        let kernels = self.strings(Path::Key(&path, operation), kernels);
                        chains.push((operation.to_owned(), kernels));
                    }
                    config.fallback_chains = OrderedMap(chains);
                }
                other => self.unknown_key(Path::Root, other, key_position, &TOP_LEVEL_KEYS),
            }
        }
        config
    }

    fn defaults(&mut self, node: &Node<'_>) -> Defaults {
        let path = Path::Key(&Path::Root, "defaults");
        let mut defaults = Defaults::default();
        for (key, key_position, value) in self.entries(path, node) {
            let field = Path::Key(&path, key);
            match key {
                "fallback_policy" => defaults.fallback_policy = self.string(field, value),
                "default_priority" => {
                    if let Some(p) = self.priority(field, value) {
                        defaults.default_priority = p;
                    }
                }
                other => self.unknown_key(path, other, key_position, &DEFAULTS_KEYS),
            }
        }
        defaults
    }

    fn rule(&mut self, index: usize, node: &Node<'_>) -> DispatchRule {
        let path = Path::Index(&Path::DISPATCH_RULES, index);
        let mut rule = DispatchRule::default();
        if !matches!(node.kind, NodeKind::Map(_)) {
            self.visit(path, node);
            self.error(path, "Must be a mapping", node);
            return rule;
        }
        for (key, key_position, value) in self.entries(path, node) {
            let field = Path::Key(&path, key);
            match key {
                "operation" => rule.operation = self.string(field, value).unwrap_or_default(),
                "kernel" => rule.kernel = self.string(field, value).unwrap_or_default(),
                "priority" => rule.priority = self.priority(field, value),
                "conditions" => {
                    let mut conditions = Vec::new();
                    for (name, _, value) in self.entries(field, value) {
                        if let Some(value) = self.condition_value(Path::Key(&field, name), value, true) {
                            conditions.push((name.to_owned(), value));
                        }
                    }
                    rule.conditions = OrderedMap(conditions);
                }
                other => self.unknown_key(path, other, key_position, &RULE_KEYS),
            }
        }
        rule
    }

    fn condition_value(&mut self, path: Path<'_>, node: &Node<'_>, list_allowed: bool) -> Option<ConditionValue> {
        Some(match (&node.kind, node.scalar()) {
            (NodeKind::Seq(items), _) if list_allowed => ConditionValue::List(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| {
                        let item_path = Path::Index(&path, i);
                        self.visit(item_path, item);
                        self.condition_value(item_path, item, false)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_prints_as_the_paths_of_errors_are_written() {
        let rule = Path::Index(&Path::DISPATCH_RULES, 3);
        let conditions = Path::Key(&rule, "conditions");
        assert_eq!(
            Path::Index(&Path::Key(&conditions, "dtype"), 1).to_string(),
            "dispatch_rules[3].conditions.dtype[1]"
        );
        let locks = Path::Key(&Path::Root, "kernel_locks");
        assert_eq!(Path::Key(&locks, "attention.causal").to_string(), key_path("kernel_locks", "attention.causal"));
        assert_eq!(Path::Key(&locks, "attention.causal").to_string(), r#"kernel_locks["attention.causal"]"#);
        for key in ["version", "a b", "", "x\"y"] {
            assert_eq!(Path::Key(&Path::Root, key).to_string(), key_path("", key));
            assert_eq!(Path::Key(&rule, key).to_string(), key_path("dispatch_rules[3]", key));
        }
    }
}
