//! Compiled rules: a [`KernelsConfig`] turned into interned ids, typed values and
//! precompiled globs and regexes, grouped by operation, so that evaluating a rule
//! against a context allocates nothing and compares no kernel or operation names.

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use layerzero_types::{
    ContextField, DType, Device, FieldKind, FieldValue, KernelId, Layout, Operation, OperationType, Platform,
    SelectionContext, TypesError, nearest_name,
};
use regex::{Regex, RegexBuilder};
use rustc_hash::FxHashMap;

use crate::model::{ConditionValue, KernelsConfig, SCHEMA_VERSION};
use crate::schema::{SchemaError, key_path};

/// Longest accepted glob or regex, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Most memory a compiled regex may take, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A condition's operator: the suffix of its key (`batch_size_gte` → `gte`; none → `eq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `field` or `field_eq`: equal.
    Eq,
    /// `field_ne`: not equal.
    Ne,
    /// `field_gt`: greater than.
    Gt,
    /// `field_gte`: greater or equal.
    Gte,
    /// `field_lt`: less than.
    Lt,
    /// `field_lte`: less or equal.
    Lte,
    /// `field_in`: one of a list (a bare field with a list value means this too).
    In,
    /// `field_not_in`: none of a list.
    NotIn,
    /// `field_match`: glob pattern.
    Match,
    /// `field_regex`: regular expression, matching the whole value.
    Regex,
}

impl Operator {
    /// Every operator, suffixes longest first (the order keys are parsed in).
    pub const ALL: [Operator; 10] = [
        Operator::NotIn,
        Operator::Regex,
        Operator::Match,
        Operator::Gte,
        Operator::Lte,
        Operator::Eq,
        Operator::Ne,
        Operator::Gt,
        Operator::Lt,
        Operator::In,
    ];

    /// The operator's suffix without the underscore (`gte`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Ne => "ne",
            Operator::Gt => "gt",
            Operator::Gte => "gte",
            Operator::Lt => "lt",
            Operator::Lte => "lte",
            Operator::In => "in",
            Operator::NotIn => "not_in",
            Operator::Match => "match",
            Operator::Regex => "regex",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits a condition key into its field and operator.
///
/// ```
/// use layerzero_config::{parse_condition_key, Operator};
/// use layerzero_types::ContextField;
///
/// assert_eq!(parse_condition_key("seq_len_q_gte").unwrap(), (ContextField::SeqLenQ, Operator::Gte));
/// assert_eq!(parse_condition_key("dtype").unwrap(), (ContextField::DType, Operator::Eq));
/// let err = parse_condition_key("batch_sise_gt").unwrap_err();
/// assert_eq!(err.to_string(), ": Unknown condition field (batch_sise)");
/// assert_eq!(err.hint.as_deref(), Some("did you mean 'batch_size'?"));
/// ```
pub fn parse_condition_key(key: &str) -> Result<(ContextField, Operator), SchemaError> {
    if let Some(field) = ContextField::from_name(key) {
        return Ok((field, Operator::Eq));
    }
    let field_names = || ContextField::ALL.into_iter().map(ContextField::as_str);
    let mut unknown_field = None;
    for op in Operator::ALL {
        if let Some(prefix) = key.strip_suffix(op.as_str()).and_then(|k| k.strip_suffix('_')) {
            if let Some(field) = ContextField::from_name(prefix) {
                return Ok((field, op));
            }
            unknown_field.get_or_insert(prefix);
        }
    }
    if let Some(prefix) = unknown_field {
        return Err(SchemaError::new("", "Unknown condition field")
            .value(prefix)
            .did_you_mean(nearest_name(prefix, field_names())));
    }
    // The longest known field the key starts with: the rest is an unknown operator.
    let field = field_names().filter(|f| key.starts_with(f) && key[f.len()..].starts_with('_')).max_by_key(|f| f.len());
    if let Some(field) = field {
        let op = &key[field.len() + 1..];
        return Err(SchemaError::new("", "Unknown operator")
            .value(op)
            .did_you_mean(nearest_name(op, Operator::ALL.map(Operator::as_str))));
    }
    Err(SchemaError::new("", "Unknown condition field").value(key).did_you_mean(nearest_name(key, field_names())))
}

/// A [`CompiledCondition`]'s test, as [`CompiledCondition::test`] exposes it. Every form
/// is false when the context lacks the field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConditionTest<'a> {
    /// An integer field's value is in `lo..=hi` (outside it when `negate`).
    IntRange {
        /// Lowest value that passes (fails, when `negate`).
        lo: u64,
        /// Highest value that passes (fails, when `negate`).
        hi: u64,
        /// Whether the range is the set that fails.
        negate: bool,
    },
    /// The value is one of these.
    In(&'a [FieldValue]),
    /// The value is none of these.
    NotIn(&'a [FieldValue]),
    /// Any other test: evaluate it with [`CompiledCondition::holds`].
    Other,
}

/// One compiled condition: a field, and a test of its value.
#[derive(Clone, Debug)]
pub struct CompiledCondition {
    key: String,
    value: ConditionValue,
    field: ContextField,
    test: Test,
}

#[derive(Clone, Debug)]
enum Test {
    /// An integer field in `lo..=hi` (or not, when `negate`): `eq`, `ne`, `gt`, `gte`,
    /// `lt` and `lte` on integer fields, read without building a `FieldValue`.
    IntRange {
        get: fn(&SelectionContext) -> Option<u32>,
        lo: u64,
        hi: u64,
        negate: bool,
    },
    Eq(FieldValue),
    Ne(FieldValue),
    Order(Operator, FieldValue),
    In(Box<[FieldValue]>),
    NotIn(Box<[FieldValue]>),
    Glob(Arc<GlobMatcher>),
    Regex(Arc<Regex>),
}

impl CompiledCondition {
    /// The condition's key as written (`batch_size_gte`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value as written.
    pub fn value(&self) -> &ConditionValue {
        &self.value
    }

    /// The context field it tests.
    pub fn field(&self) -> ContextField {
        self.field
    }

    /// The test in a form a caller can lower to its own representation (the selection
    /// engine turns it into integer checks on its packed context key). Tests with no
    /// simple form (orderings on floats and compute capabilities, globs, regexes) are
    /// [`ConditionTest::Other`]: evaluate those with [`holds`](Self::holds).
    pub fn test(&self) -> ConditionTest<'_> {
        match &self.test {
            Test::IntRange { lo, hi, negate, .. } => ConditionTest::IntRange { lo: *lo, hi: *hi, negate: *negate },
            Test::Eq(v) => ConditionTest::In(std::slice::from_ref(v)),
            Test::In(values) => ConditionTest::In(values),
            Test::Ne(v) => ConditionTest::NotIn(std::slice::from_ref(v)),
            Test::NotIn(values) => ConditionTest::NotIn(values),
            Test::Order(..) | Test::Glob(_) | Test::Regex(_) => ConditionTest::Other,
        }
    }

    /// Whether the context satisfies the condition. An absent field satisfies none.
    ///
    /// Cost: one field read and one comparison (a list scan for `_in`, a precompiled
    /// automaton for `_match` and `_regex`); no allocation.
    pub fn holds(&self, ctx: &SelectionContext) -> bool {
        if let Test::IntRange { get, lo, hi, negate } = self.test {
            return get(ctx).is_some_and(|v| (lo..=hi).contains(&u64::from(v)) != negate);
        }
        let Some(actual) = ctx.get(self.field) else { return false };
        match &self.test {
            Test::Eq(expected) => actual == *expected,
            Test::Ne(expected) => actual != *expected,
            Test::Order(op, expected) => match compare(actual, *expected) {
                Some(order) => match op {
                    Operator::Gt => order.is_gt(),
                    Operator::Gte => order.is_ge(),
                    Operator::Lt => order.is_lt(),
                    _ => order.is_le(),
                },
                None => false,
            },
            Test::In(values) => values.contains(&actual),
            Test::NotIn(values) => !values.contains(&actual),
            Test::IntRange { .. } => false, // handled above
            Test::Glob(glob) => with_text(actual, |text| glob.is_match(text)),
            Test::Regex(regex) => with_text(actual, |text| regex.is_match(text)),
        }
    }
}

impl fmt::Display for CompiledCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.value)
    }
}

fn compare(a: FieldValue, b: FieldValue) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (FieldValue::Int(a), FieldValue::Int(b)) => Some(a.cmp(&b)),
        (FieldValue::Float(a), FieldValue::Float(b)) => a.partial_cmp(&b),
        (FieldValue::ComputeCapability(a), FieldValue::ComputeCapability(b)) => Some(a.cmp(&b)),
        _ => None,
    }
}

/// Calls `f` with the value's text, formatted on the stack (no allocation).
fn with_text(value: FieldValue, f: impl FnOnce(&str) -> bool) -> bool {
    match value {
        FieldValue::DType(d) => f(d.as_str()),
        FieldValue::Platform(p) => f(p.as_str()),
        FieldValue::Layout(l) => f(l.as_str()),
        FieldValue::Device(Device::Cpu) => f("cpu"),
        FieldValue::Device(Device::Cuda(ordinal)) => {
            let mut buf = [0u8; 16];
            let mut cursor = &mut buf[..];
            // "cuda:" and at most 5 digits always fit in 16 bytes.
            if write!(cursor, "cuda:{ordinal}").is_err() {
                return false;
            }
            let len = 16 - cursor.len();
            std::str::from_utf8(&buf[..len]).is_ok_and(f)
        }
        _ => false,
    }
}

/// The reader of an integer field, for [`Test::IntRange`].
fn int_field(field: ContextField) -> Option<fn(&SelectionContext) -> Option<u32>> {
    use ContextField as F;
    Some(match field {
        F::BatchSize => |c| c.batch_size,
        F::SeqLen => |c| c.seq_len,
        F::SeqLenQ => |c| c.seq_len_q,
        F::SeqLenK => |c| c.seq_len_k,
        F::HeadDim => |c| c.head_dim,
        F::NumHeads => |c| c.num_heads,
        F::NumKvHeads => |c| c.num_kv_heads,
        F::TpSize => |c| c.tp_size,
        F::PpSize => |c| c.pp_size,
        F::LayerIndex => |c| c.layer_index,
        F::WindowSize => |c| c.window_size,
        F::HiddenSize => |c| c.hidden_size,
        _ => return None,
    })
}

/// `op n` on an integer as an inclusive range (empty when `lo > hi`), and whether to negate.
fn int_range(op: Operator, n: u64) -> (u64, u64, bool) {
    match op {
        Operator::Ne => (n, n, true),
        Operator::Gt => (n.saturating_add(1), if n == u64::MAX { 0 } else { u64::MAX }, false),
        Operator::Gte => (n, u64::MAX, false),
        Operator::Lt => (if n == 0 { 1 } else { 0 }, n.saturating_sub(1), false),
        Operator::Lte => (0, n, false),
        _ => (n, n, false),
    }
}

fn is_textual(kind: FieldKind) -> bool {
    matches!(kind, FieldKind::DType | FieldKind::Device | FieldKind::Platform | FieldKind::Layout)
}

/// Types one scalar against the field's kind, with seed 000's messages.
fn typed(field: ContextField, value: &ConditionValue) -> Result<FieldValue, SchemaError> {
    let wrong = |message: &str| SchemaError::new("", message).value(value);
    let text = match value {
        ConditionValue::Str(s) => Some(s.as_str()),
        _ => None,
    };
    let parse = |message: &str, result: Result<FieldValue, TypesError>| {
        result.map_err(|err| {
            let suggestion = match err {
                TypesError::InvalidDType { suggestion, .. } => suggestion,
                _ => None,
            };
            wrong(message).did_you_mean(suggestion)
        })
    };
    match field.kind() {
        FieldKind::Int => match value {
            ConditionValue::Int(i) => u64::try_from(*i).map(FieldValue::Int).map_err(|_| wrong("Must be non-negative")),
            _ => Err(wrong("Must be integer")),
        },
        FieldKind::Bool => match value {
            ConditionValue::Bool(b) => Ok(FieldValue::Bool(*b)),
            _ => Err(wrong("Must be boolean")),
        },
        FieldKind::Float => match value {
            ConditionValue::Int(i) => Ok(FieldValue::Float(*i as f64)),
            ConditionValue::Float(f) if f.is_finite() => Ok(FieldValue::Float(*f)),
            _ => Err(wrong("Must be number")),
        },
        FieldKind::DType => match text {
            Some(t) => parse("Invalid dtype", t.parse::<DType>().map(FieldValue::DType)),
            None => Err(wrong("Invalid dtype")),
        },
        FieldKind::Device => match text {
            Some(t) => parse("Invalid device", t.parse::<Device>().map(FieldValue::Device)),
            None => Err(wrong("Invalid device")),
        },
        FieldKind::Platform => match text {
            Some(t) => parse("Invalid platform", t.parse::<Platform>().map(FieldValue::Platform)),
            None => Err(wrong("Invalid platform")),
        },
        FieldKind::Layout => match text {
            Some(t) => parse("Invalid layout", t.parse::<Layout>().map(FieldValue::Layout)),
            None => Err(wrong("Invalid layout")),
        },
        FieldKind::ComputeCapability => {
            let t = match value {
                ConditionValue::Str(s) => s.clone(),
                ConditionValue::Float(f) => format!("{f:?}"),
                _ => return Err(wrong("Invalid compute capability")),
            };
            parse("Invalid compute capability", t.parse().map(FieldValue::ComputeCapability))
        }
    }
}

fn pattern_text(value: &ConditionValue) -> Result<&str, SchemaError> {
    match value {
        ConditionValue::Str(s) if s.len() > MAX_PATTERN_BYTES => {
            Err(SchemaError::new("", format!("Pattern is longer than {MAX_PATTERN_BYTES} bytes")))
        }
        ConditionValue::Str(s) => Ok(s),
        other => Err(SchemaError::new("", "Must be string").value(other)),
    }
}

/// Compiles a glob (`*`, `?`, `[...]`, `{a,b}`), refusing oversized ones.
pub(crate) fn compile_glob(pattern: &str) -> Result<GlobMatcher, SchemaError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(SchemaError::new("", format!("Pattern is longer than {MAX_PATTERN_BYTES} bytes")));
    }
    Glob::new(pattern)
        .map(|glob| glob.compile_matcher())
        .map_err(|err| SchemaError::new("", "Invalid glob pattern").value(pattern).hint(Some(err.kind().to_string())))
}

/// Compiles one condition (`key: value`), with seed 000's error texts on failure (the
/// error's path is relative: `""` for the value, `[i]` for a list item).
///
/// ```
/// use layerzero_config::{compile_condition, ConditionValue};
/// use layerzero_types::SelectionContext;
///
/// let cond = compile_condition("batch_size_gte", &ConditionValue::Int(8)).unwrap();
/// assert!(cond.holds(&SelectionContext::builder().batch_size(8).build().unwrap()));
/// assert!(!cond.holds(&SelectionContext::default())); // absent: no match
///
/// let err = compile_condition("batch_size", &ConditionValue::Str("8".into())).unwrap_err();
/// assert_eq!(err.to_string(), ": Must be integer (8)");
/// ```
pub fn compile_condition(key: &str, value: &ConditionValue) -> Result<CompiledCondition, SchemaError> {
    compile_condition_with(key, value, &mut PatternCache::default())
}

/// [`compile_condition`], taking `_match` and `_regex` patterns from `patterns`.
fn compile_condition_with<'a>(
    key: &str,
    value: &'a ConditionValue,
    patterns: &mut PatternCache<'a>,
) -> Result<CompiledCondition, SchemaError> {
    let (field, op) = parse_condition_key(key)?;
    let kind = field.kind();
    let list = |items: &[ConditionValue]| -> Result<Box<[FieldValue]>, SchemaError> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                typed(field, item).map_err(|mut e| {
                    e.path = format!("[{i}]");
                    e
                })
            })
            .collect()
    };
    let single = |value: &ConditionValue| match value {
        ConditionValue::List(_) => Err(SchemaError::new("", "Must be a single value").value(value)),
        v => typed(field, v),
    };
    let test = match (op, value) {
        (Operator::Eq | Operator::In, ConditionValue::List(items)) => Test::In(list(items)?),
        (Operator::Ne | Operator::NotIn, ConditionValue::List(items)) => Test::NotIn(list(items)?),
        (Operator::Eq, v) => Test::Eq(single(v)?),
        (Operator::Ne, v) => Test::Ne(single(v)?),
        (Operator::In, v) => Test::In(Box::new([single(v)?])),
        (Operator::NotIn, v) => Test::NotIn(Box::new([single(v)?])),
        (Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte, v) => {
            if !matches!(kind, FieldKind::Int | FieldKind::Float | FieldKind::ComputeCapability) {
                return Err(SchemaError::new("", format!("Operator '{op}' needs a numeric field")).value(field));
            }
            Test::Order(op, single(v)?)
        }
        (Operator::Match | Operator::Regex, v) => {
            if !is_textual(kind) {
                return Err(SchemaError::new(
                    "",
                    format!("Operator '{op}' needs a text field (dtype, device, platform, layout)"),
                )
                .value(field));
            }
            let pattern = pattern_text(v)?;
            if op == Operator::Match {
                Test::Glob(patterns.glob(pattern)?)
            } else {
                Test::Regex(patterns.regex(pattern)?)
            }
        }
    };
    let test = match (test, int_field(field)) {
        (Test::Eq(FieldValue::Int(n)), Some(get)) => int_test(get, Operator::Eq, n),
        (Test::Ne(FieldValue::Int(n)), Some(get)) => int_test(get, Operator::Ne, n),
        (Test::Order(op, FieldValue::Int(n)), Some(get)) => int_test(get, op, n),
        (test, _) => test,
    };
    Ok(CompiledCondition { key: key.to_owned(), value: value.clone(), field, test })
}

/// Compiles a condition's regex, anchored so that it must match the whole value.
fn compile_regex(pattern: &str) -> Result<Regex, SchemaError> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|err| {
            let first_line = err.to_string().lines().last().unwrap_or_default().trim().to_owned();
            SchemaError::new("", "Invalid regex").value(pattern).hint(Some(first_line))
        })
}

/// The patterns of one file compiled so far, by their text: a pattern written on many
/// rules (the usual `attention.*`) compiles once, and its rules share the automaton.
/// Only successes are kept; a bad pattern is compiled again, for its error, where it
/// is written again.
#[derive(Default)]
struct PatternCache<'a> {
    operations: FxHashMap<&'a str, OperationMatcher>,
    globs: FxHashMap<&'a str, Arc<GlobMatcher>>,
    regexes: FxHashMap<&'a str, Arc<Regex>>,
}

impl<'a> PatternCache<'a> {
    fn operation(&mut self, text: &'a str) -> Result<OperationMatcher, SchemaError> {
        if let Some(matcher) = self.operations.get(text) {
            return Ok(matcher.clone());
        }
        let matcher = OperationMatcher::parse(text)?;
        self.operations.insert(text, matcher.clone());
        Ok(matcher)
    }

    fn glob(&mut self, pattern: &'a str) -> Result<Arc<GlobMatcher>, SchemaError> {
        if let Some(glob) = self.globs.get(pattern) {
            return Ok(Arc::clone(glob));
        }
        let glob = Arc::new(compile_glob(pattern)?);
        self.globs.insert(pattern, Arc::clone(&glob));
        Ok(glob)
    }

    fn regex(&mut self, pattern: &'a str) -> Result<Arc<Regex>, SchemaError> {
        if let Some(regex) = self.regexes.get(pattern) {
            return Ok(Arc::clone(regex));
        }
        let regex = Arc::new(compile_regex(pattern)?);
        self.regexes.insert(pattern, Arc::clone(&regex));
        Ok(regex)
    }
}

fn int_test(get: fn(&SelectionContext) -> Option<u32>, op: Operator, n: u64) -> Test {
    let (lo, hi, negate) = int_range(op, n);
    Test::IntRange { get, lo, hi, negate }
}

/// A set of known operations ([`OperationType`]), one bit per [`OperationType::index`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KnownOperations(u16);

const _: () = assert!(OperationType::COUNT <= 16, "KnownOperations holds one bit per known operation");

impl KnownOperations {
    fn of(operation: OperationType) -> KnownOperations {
        KnownOperations(1 << operation.index())
    }

    pub(crate) fn contains(self, operation: OperationType) -> bool {
        self.0 & (1 << operation.index()) != 0
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = OperationType> {
        OperationType::ALL.into_iter().filter(move |&op| self.contains(op))
    }
}

/// An operation glob, compiled: the pattern as written, its matcher, and the known
/// operations it matches, found once when it compiles (so that matching a known
/// operation is a bit test). Cloning it shares it: every rule, lock and chain of a file
/// that writes the same pattern holds one compiled glob.
#[derive(Clone, Debug)]
pub struct OperationGlob(Arc<OperationGlobParts>);

#[derive(Debug)]
struct OperationGlobParts {
    pattern: String,
    matcher: GlobMatcher,
    known: KnownOperations,
}

impl OperationGlob {
    fn new(pattern: &str) -> Result<OperationGlob, SchemaError> {
        let matcher = compile_glob(pattern)?;
        let known = OperationType::ALL
            .into_iter()
            .filter(|op| matcher.is_match(op.as_str()))
            .fold(KnownOperations::default(), |set, op| KnownOperations(set.0 | KnownOperations::of(op).0));
        Ok(OperationGlob(Arc::new(OperationGlobParts { pattern: pattern.to_owned(), matcher, known })))
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.0.pattern
    }

    /// Whether the operation's name matches: a bit test for a known operation, the glob
    /// for a custom one.
    pub fn matches(&self, operation: Operation) -> bool {
        match operation.known() {
            Some(op) => self.0.known.contains(op),
            None => self.0.matcher.is_match(operation.as_str()),
        }
    }
}

/// Which operations a rule, lock or chain applies to: one name, or a glob.
#[derive(Clone, Debug)]
pub enum OperationMatcher {
    /// Exactly this operation.
    Exact(Operation),
    /// Operations whose name matches the glob.
    Glob(OperationGlob),
}

impl OperationMatcher {
    /// Parses a name (exact) or a pattern (any of `* ? [ {`).
    pub fn parse(text: &str) -> Result<OperationMatcher, SchemaError> {
        if text.is_empty() {
            return Err(SchemaError::new("", "Missing required field"));
        }
        if text.contains(['*', '?', '[', '{']) {
            return OperationGlob::new(text).map(OperationMatcher::Glob);
        }
        Operation::parse(text).map(OperationMatcher::Exact).map_err(|err| match err {
            TypesError::UnknownOperation { suggestion, .. } => {
                SchemaError::new("", "Unknown operation").value(text).did_you_mean(suggestion)
            }
            other => SchemaError::new("", "Invalid operation name").value(text).hint(Some(other.to_string())),
        })
    }

    /// Whether `operation` is matched.
    pub fn matches(&self, operation: Operation) -> bool {
        match self {
            OperationMatcher::Exact(op) => *op == operation,
            OperationMatcher::Glob(glob) => glob.matches(operation),
        }
    }

    /// The known operations matched.
    pub(crate) fn known_operations(&self) -> KnownOperations {
        match self {
            OperationMatcher::Exact(op) => op.known().map(KnownOperations::of).unwrap_or_default(),
            OperationMatcher::Glob(glob) => glob.0.known,
        }
    }

    /// Whether this is an exact name.
    pub fn is_exact(&self) -> bool {
        matches!(self, OperationMatcher::Exact(_))
    }

    /// The name or pattern as written.
    pub fn as_str(&self) -> &str {
        match self {
            OperationMatcher::Exact(op) => op.as_str(),
            OperationMatcher::Glob(glob) => glob.as_str(),
        }
    }
}

fn kernel_id(name: &str) -> Result<KernelId, SchemaError> {
    if name.is_empty() {
        return Err(SchemaError::new("", "Missing required field"));
    }
    KernelId::new(name).map_err(|err| {
        let hint = match err {
            TypesError::InvalidName { reason, .. } => Some(reason.to_owned()),
            _ => None,
        };
        SchemaError::new("", "Invalid kernel id").value(name).hint(hint)
    })
}

/// Collects compile errors, prefixing each with the path of what failed (written out
/// only for an error).
struct Errors(Vec<SchemaError>);

impl Errors {
    fn at<T>(&mut self, path: impl FnOnce() -> String, result: Result<T, SchemaError>) -> Option<T> {
        result
            .map_err(|mut e| {
                e.path.insert_str(0, &path());
                self.0.push(e);
            })
            .ok()
    }
}

/// One compiled dispatch rule.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    /// Its index in the file's `dispatch_rules`.
    pub index: usize,
    /// The operations it applies to.
    pub operation: OperationMatcher,
    /// Conditions, all of which must hold.
    pub conditions: Vec<CompiledCondition>,
    /// The kernel it chooses.
    pub kernel: KernelId,
    /// Its priority (the file's, or `defaults.default_priority`).
    pub priority: u32,
}

impl CompiledRule {
    /// Whether every condition holds. Allocates nothing.
    pub fn matches(&self, ctx: &SelectionContext) -> bool {
        self.conditions.iter().all(|c| c.holds(ctx))
    }

    /// The first condition that does not hold, if any.
    pub fn first_failure(&self, ctx: &SelectionContext) -> Option<&CompiledCondition> {
        self.conditions.iter().find(|c| !c.holds(ctx))
    }
}

/// One compiled kernel lock.
#[derive(Clone, Debug)]
pub struct CompiledLock {
    /// Its index in the file's `kernel_locks`.
    pub index: usize,
    /// The operations it locks.
    pub operation: OperationMatcher,
    /// The kernel it forces.
    pub kernel: KernelId,
}

/// A kernel's standing under `kernel_denies` and `kernel_allows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPolicy<'a> {
    /// Neither denied nor excluded by the allow list.
    Allowed,
    /// Matched this deny pattern.
    Denied {
        /// The pattern.
        pattern: &'a str,
    },
    /// An allow list exists and no pattern of it matches.
    NotAllowed,
}

#[derive(Clone, Debug)]
struct Patterns(Vec<(String, Arc<GlobMatcher>)>);

impl Patterns {
    fn compile<'a>(errors: &mut Errors, patterns: &mut PatternCache<'a>, name: &str, list: &'a [String]) -> Patterns {
        Patterns(
            list.iter()
                .enumerate()
                .filter_map(|(i, p)| errors.at(|| format!("{name}[{i}]"), patterns.glob(p)).map(|g| (p.clone(), g)))
                .collect(),
        )
    }

    fn first_match(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(_, glob)| glob.is_match(name)).map(|(p, _)| p.as_str())
    }
}

/// A rules file compiled for evaluation: rules in evaluation order (priority, highest
/// first; ties in file order) and indexed by operation, locks, allow/deny patterns and
/// fallback chains, all with interned kernel ids.
///
/// ```
/// use layerzero_config::{CompiledConfig, ConfigSchema};
/// use layerzero_types::{DType, OperationType, SelectionContext};
///
/// let loaded = ConfigSchema.load(r#"
/// version: "1.0"
/// dispatch_rules:
///   - {operation: "attention.*", conditions: {dtype: [float16, bfloat16]}, kernel: fast, priority: 10}
///   - {operation: attention.causal, conditions: {seq_len_gt: 8192}, kernel: long, priority: 90}
/// "#)?;
/// let compiled: &CompiledConfig = &loaded.compiled;
/// let ctx = SelectionContext::builder().dtype(DType::F16).seq_len(16384).build()?;
/// let matching: Vec<&str> = compiled
///     .rules_for(OperationType::AttentionCausal.into())
///     .filter(|rule| rule.matches(&ctx))
///     .map(|rule| rule.kernel.as_str())
///     .collect();
/// assert_eq!(matching, ["long", "fast"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct CompiledConfig {
    rules: Vec<CompiledRule>,
    rules_by_known_operation: Vec<Vec<u32>>,
    locks: Vec<CompiledLock>,
    allows: Option<Patterns>,
    denies: Patterns,
    chains: Vec<(OperationMatcher, Vec<KernelId>)>,
    fallback_policy: Option<KernelId>,
    default_priority: u32,
}

impl Default for CompiledConfig {
    /// No rules, locks, lists or chains: the engine's scores decide alone.
    fn default() -> Self {
        CompiledConfig {
            rules: Vec::new(),
            rules_by_known_operation: vec![Vec::new(); OperationType::ALL.len()],
            locks: Vec::new(),
            allows: None,
            denies: Patterns(Vec::new()),
            chains: Vec::new(),
            fallback_policy: None,
            default_priority: 50,
        }
    }
}

impl CompiledConfig {
    /// Compiles `config`, returning every error (paths are absolute, positions unknown:
    /// [`crate::ConfigSchema::load`] adds them for files).
    pub fn compile(config: &KernelsConfig) -> Result<CompiledConfig, Vec<SchemaError>> {
        let mut errors = Errors(Vec::new());
        let mut patterns = PatternCache::default();
        if config.version.is_empty() {
            errors.at(|| "version".into(), Err::<(), _>(SchemaError::new("", "Missing required field")));
        } else if config.version != SCHEMA_VERSION {
            errors.at(
                || "version".into(),
                Err::<(), _>(
                    SchemaError::new("", format!("Unsupported version, must be one of ['{SCHEMA_VERSION}']"))
                        .value(&config.version),
                ),
            );
        }
        let default_priority = config.defaults.default_priority;
        if default_priority > 1000 {
            errors.at(
                || "defaults.default_priority".into(),
                Err::<(), _>(SchemaError::new("", "Must be between 0 and 1000").value(default_priority)),
            );
        }
        let fallback_policy = config
            .defaults
            .fallback_policy
            .as_deref()
            .and_then(|name| errors.at(|| "defaults.fallback_policy".into(), kernel_id(name)));

        let mut rules = Vec::with_capacity(config.dispatch_rules.len());
        for (index, rule) in config.dispatch_rules.iter().enumerate() {
            let path = || format!("dispatch_rules[{index}]");
            let operation = errors.at(|| format!("{}.operation", path()), patterns.operation(&rule.operation));
            let conditions: Vec<_> = rule
                .conditions
                .iter()
                .filter_map(|(key, value)| {
                    errors.at(
                        || key_path(&format!("{}.conditions", path()), key),
                        compile_condition_with(key, value, &mut patterns),
                    )
                })
                .collect();
            let kernel = errors.at(|| format!("{}.kernel", path()), kernel_id(&rule.kernel));
            let priority = rule.priority.unwrap_or(default_priority);
            if priority > 1000 {
                errors.at(
                    || format!("{}.priority", path()),
                    Err::<(), _>(SchemaError::new("", "Must be between 0 and 1000").value(priority)),
                );
            }
            if let (Some(operation), Some(kernel)) = (operation, kernel)
                && conditions.len() == rule.conditions.len()
            {
                rules.push(CompiledRule { index, operation, conditions, kernel, priority });
            }
        }
        // Stable: equal priorities keep file order.
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.priority));

        let mut locks = Vec::new();
        for (index, (operation, kernel)) in config.kernel_locks.iter().enumerate() {
            let path = || key_path("kernel_locks", operation);
            let matcher = errors.at(path, patterns.operation(operation));
            let kernel = errors.at(path, kernel_id(kernel));
            if let (Some(operation), Some(kernel)) = (matcher, kernel) {
                locks.push(CompiledLock { index, operation, kernel });
            }
        }
        let allows = (!config.kernel_allows.is_empty())
            .then(|| Patterns::compile(&mut errors, &mut patterns, "kernel_allows", &config.kernel_allows));
        let denies = Patterns::compile(&mut errors, &mut patterns, "kernel_denies", &config.kernel_denies);
        let mut chains = Vec::new();
        for (operation, kernels) in config.fallback_chains.iter() {
            let path = || key_path("fallback_chains", operation);
            let matcher = errors.at(path, patterns.operation(operation));
            let ids: Vec<_> = kernels
                .iter()
                .enumerate()
                .filter_map(|(i, k)| errors.at(|| format!("{}[{i}]", path()), kernel_id(k)))
                .collect();
            if let Some(matcher) = matcher {
                chains.push((matcher, ids));
            }
        }
        if !errors.0.is_empty() {
            return Err(errors.0);
        }
        let mut rules_by_known_operation = vec![Vec::new(); OperationType::COUNT];
        for (i, rule) in (0u32..).zip(&rules) {
            for op in rule.operation.known_operations().iter() {
                rules_by_known_operation[op.index()].push(i);
            }
        }
        Ok(CompiledConfig {
            rules,
            rules_by_known_operation,
            locks,
            allows,
            denies,
            chains,
            fallback_policy,
            default_priority,
        })
    }

    /// Every rule, in evaluation order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// The rules that apply to `operation`, in evaluation order. For the known operations
    /// this walks a precomputed index; custom operations match the globs.
    pub fn rules_for(&self, operation: Operation) -> impl Iterator<Item = &CompiledRule> + '_ {
        let known = operation.known().and_then(|op| self.rules_by_known_operation.get(op as usize));
        let indexed = known.into_iter().flatten().filter_map(|&i| self.rules.get(i as usize));
        let scanned = self.rules.iter().filter(move |rule| known.is_none() && rule.operation.matches(operation));
        indexed.chain(scanned)
    }

    /// The lock for `operation`: an exact name beats a pattern; among patterns the first
    /// in the file wins.
    pub fn lock_for(&self, operation: Operation) -> Option<&CompiledLock> {
        self.locks
            .iter()
            .find(|lock| lock.operation.is_exact() && lock.operation.matches(operation))
            .or_else(|| self.locks.iter().find(|lock| lock.operation.matches(operation)))
    }

    /// Every lock, in file order.
    pub fn locks(&self) -> &[CompiledLock] {
        &self.locks
    }

    /// Whether `kernel` may be chosen under `kernel_denies` and `kernel_allows` (a deny
    /// wins over an allow).
    pub fn kernel_policy(&self, kernel: KernelId) -> KernelPolicy<'_> {
        let name = kernel.as_str();
        if let Some(pattern) = self.denies.first_match(name) {
            return KernelPolicy::Denied { pattern };
        }
        match &self.allows {
            Some(allows) if allows.first_match(name).is_none() => KernelPolicy::NotAllowed,
            _ => KernelPolicy::Allowed,
        }
    }

    /// The configured fallback chain for `operation` (an exact key beats a pattern), or
    /// an empty slice.
    pub fn fallback_chain(&self, operation: Operation) -> &[KernelId] {
        self.chains
            .iter()
            .find(|(m, _)| m.is_exact() && m.matches(operation))
            .or_else(|| self.chains.iter().find(|(m, _)| m.matches(operation)))
            .map_or(&[], |(_, kernels)| kernels.as_slice())
    }

    /// `defaults.fallback_policy`.
    pub fn fallback_policy(&self) -> Option<KernelId> {
        self.fallback_policy
    }

    /// `defaults.default_priority`.
    pub fn default_priority(&self) -> u32 {
        self.default_priority
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ranges_at_their_edges() {
        let holds = |key: &str, n: i64, v: u32| {
            let ctx = SelectionContext { batch_size: Some(v), ..SelectionContext::default() };
            compile_condition(key, &ConditionValue::Int(n)).unwrap().holds(&ctx)
        };
        assert!(!holds("batch_size_lt", 0, 0));
        assert!(holds("batch_size_lte", 0, 0));
        assert!(holds("batch_size_gte", 0, 0));
        assert!(!holds("batch_size_gt", i64::MAX, u32::MAX));
        assert!(holds("batch_size_gt", i64::from(u32::MAX) - 1, u32::MAX));
        assert!(holds("batch_size_ne", 1, 0) && !holds("batch_size_ne", 0, 0));
        assert!(holds("batch_size_eq", i64::from(u32::MAX), u32::MAX));
    }

    #[test]
    fn an_operation_glob_matches_known_operations_as_its_glob_does() {
        let custom = Operation::parse("moe.topk_gating").unwrap();
        for pattern in ["attention.*", "*", "*norm*", "attention.{causal,full}", "r?pe", "[mr]*", "moe.*"] {
            let glob = Glob::new(pattern).unwrap().compile_matcher();
            let OperationMatcher::Glob(compiled) = OperationMatcher::parse(pattern).unwrap() else {
                panic!("{pattern} is a glob")
            };
            for op in OperationType::ALL.map(Operation::from).into_iter().chain([custom]) {
                assert_eq!(compiled.matches(op), glob.is_match(op.as_str()), "{pattern} on {}", op.as_str());
            }
        }
    }

    #[test]
    fn a_pattern_written_many_times_compiles_once() {
        let rule = |kernel: &str| crate::model::DispatchRule {
            operation: "attention.*".into(),
            conditions: crate::model::OrderedMap(vec![(
                "device_regex".into(),
                ConditionValue::Str("cuda:[01]".into()),
            )]),
            kernel: kernel.into(),
            priority: None,
        };
        let config = KernelsConfig {
            version: SCHEMA_VERSION.into(),
            dispatch_rules: vec![rule("a"), rule("b")],
            ..KernelsConfig::default()
        };
        let compiled = CompiledConfig::compile(&config).unwrap();
        let [a, b] = compiled.rules() else { panic!("two rules") };
        let (OperationMatcher::Glob(a_glob), OperationMatcher::Glob(b_glob)) = (&a.operation, &b.operation) else {
            panic!("glob operations")
        };
        assert!(Arc::ptr_eq(&a_glob.0, &b_glob.0));
        let (Test::Regex(a_regex), Test::Regex(b_regex)) = (&a.conditions[0].test, &b.conditions[0].test) else {
            panic!("regex conditions")
        };
        assert!(Arc::ptr_eq(a_regex, b_regex));
    }
}
