//! A YAML (or JSON) document as a tree whose every node knows its line and column, so
//! that a semantic error ("priority must be between 0 and 1000") can point at the value.
//!
//! The tree is built from `yaml-rust2`'s event parser with an explicit stack, under limits
//! on input size, nesting depth and node count: hostile input gets an error, not a crash.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Largest accepted document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Deepest accepted nesting of lists and maps.
pub const MAX_DEPTH: usize = 32;
/// Most nodes (scalars, lists, maps) in one document.
pub const MAX_NODES: usize = 100_000;

/// Where a value sits in its file: 1-based line and column (0 when unknown, as for
/// configs built in code or read from JSON that YAML could not parse).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Position {
    /// Whether the position is known.
    pub fn is_known(self) -> bool {
        self.line > 0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node<'s> {
    pub(crate) kind: NodeKind<'s>,
    pub(crate) position: Position,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum NodeKind<'s> {
    /// A scalar as written, and whether it was quoted (a quoted scalar is always a string).
    Scalar {
        text: Cow<'s, str>,
        quoted: bool,
    },
    Seq(Vec<Node<'s>>),
    Map(Vec<(Node<'s>, Node<'s>)>),
}

/// A scalar's meaning under YAML 1.2's core schema.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Node<'_> {
    pub(crate) fn scalar(&self) -> Option<Scalar<'_>> {
        let NodeKind::Scalar { text, quoted } = &self.kind else { return None };
        if *quoted {
            return Some(Scalar::Str(text));
        }
        Some(match text.as_ref() {
            "" | "~" | "null" | "Null" | "NULL" => Scalar::Null,
            "true" | "True" | "TRUE" => Scalar::Bool(true),
            "false" | "False" | "FALSE" => Scalar::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" => Scalar::Float(f64::INFINITY),
            "-.inf" | "-.Inf" | "-.INF" => Scalar::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => Scalar::Float(f64::NAN),
            t => {
                if let Some(int) = parse_int(t) {
                    Scalar::Int(int)
                } else if looks_numeric(t)
                    && let Ok(float) = t.parse::<f64>()
                {
                    Scalar::Float(float)
                } else {
                    Scalar::Str(t)
                }
            }
        })
    }

    /// The scalar's text as written (for messages), or a short description of a collection.
    pub(crate) fn display_value(&self) -> String {
        match &self.kind {
            NodeKind::Scalar { text, .. } => text.to_string(),
            NodeKind::Seq(_) => "a list".to_owned(),
            NodeKind::Map(_) => "a mapping".to_owned(),
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.scalar(), Some(Scalar::Null))
    }
}

fn parse_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(octal) = digits.strip_prefix("0o") {
        i64::from_str_radix(octal, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

fn looks_numeric(text: &str) -> bool {
    let body = text.trim_start_matches(['-', '+']);
    body.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && body.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
}

/// Why a document could not be read at all.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DocumentError {
    pub(crate) message: String,
    pub(crate) position: Position,
}

fn position(marker: &Marker) -> Position {
    Position { line: marker.line(), column: marker.col() + 1 }
}

/// Parses one YAML document (JSON is YAML too; JSON that YAML rejects is read as JSON).
pub(crate) fn parse(source: &str) -> Result<Node<'_>, DocumentError> {
    if source.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError {
            message: format!("Document is too large ({} bytes, at most {MAX_DOCUMENT_BYTES})", source.len()),
            position: Position::default(),
        });
    }
    // Most rules files are plain block YAML, which the block reader reads for a fraction
    // of the cost; it gives up on anything else, and yaml-rust2 reads that.
    if let Some(node) = crate::block_yaml::parse(source) {
        return Ok(node);
    }
    match parse_yaml(source) {
        Ok(node) => Ok(node),
        Err(yaml_error) if source.trim_start().starts_with(['{', '[']) => parse_json(source).map_err(|_| yaml_error),
        Err(yaml_error) => Err(yaml_error),
    }
}

enum Open {
    Seq(Vec<Node<'static>>, Position),
    Map(Vec<(Node<'static>, Node<'static>)>, Option<Node<'static>>, Position),
}

pub(crate) fn parse_yaml(source: &str) -> Result<Node<'static>, DocumentError> {
    let mut parser = Parser::new_from_str(source);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node<'static>> = None;
    let mut nodes = 0usize;
    let error = |message: String, at: Position| DocumentError { message, position: at };
    loop {
        let (event, marker) =
            parser.next_token().map_err(|e| error(format!("Invalid YAML: {}", e.info()), position(e.marker())))?;
        let at = position(&marker);
        let node = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::DocumentStart => {
                if root.is_some() {
                    return Err(error("Only one YAML document is allowed".into(), at));
                }
                continue;
            }
            Event::Alias(_) => return Err(error("YAML aliases are not supported".into(), at)),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(error(format!("Nesting is deeper than {MAX_DEPTH} levels"), at));
                }
                stack.push(match event {
                    Event::SequenceStart(..) => Open::Seq(Vec::new(), at),
                    _ => Open::Map(Vec::new(), None, at),
                });
                continue;
            }
            Event::Scalar(text, style, _, _) => Node {
                kind: NodeKind::Scalar { text: Cow::Owned(text), quoted: style != TScalarStyle::Plain },
                position: at,
            },
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq(items, start)) => Node { kind: NodeKind::Seq(items), position: start },
                Some(Open::Map(entries, _, start)) => {
                    // A block mapping's start mark can sit after its first key; the first
                    // key is where a reader looks for it.
                    let position = entries.first().map_or(start, |(key, _)| key.position.min(start));
                    Node { kind: NodeKind::Map(entries), position }
                }
                None => return Err(error("Unbalanced YAML collection".into(), at)),
            },
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(error(format!("Document has more than {MAX_NODES} values"), at));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Open::Seq(items, _)) => items.push(node),
            Some(Open::Map(entries, pending, _)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
    Ok(root.unwrap_or(Node {
        kind: NodeKind::Scalar { text: Cow::Borrowed(""), quoted: false },
        position: Position { line: 1, column: 1 },
    }))
}

fn parse_json(source: &str) -> Result<Node<'static>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(source)?;
    Ok(from_json(value, 0))
}

fn from_json(value: serde_json::Value, depth: usize) -> Node<'static> {
    use serde_json::Value;
    let scalar = |text: String, quoted| Node {
        kind: NodeKind::Scalar { text: Cow::Owned(text), quoted },
        position: Position::default(),
    };
    match value {
        Value::Null => scalar("null".into(), false),
        Value::Bool(b) => scalar(b.to_string(), false),
        Value::Number(n) => scalar(n.to_string(), false),
        Value::String(s) => scalar(s, true),
        // serde_json refuses nesting past 128 levels itself; stop converting past ours.
        Value::Array(_) | Value::Object(_) if depth >= MAX_DEPTH => scalar("<too deep>".into(), false),
        Value::Array(items) => Node {
            kind: NodeKind::Seq(items.into_iter().map(|v| from_json(v, depth + 1)).collect()),
            position: Position::default(),
        },
        Value::Object(entries) => Node {
            kind: NodeKind::Map(entries.into_iter().map(|(k, v)| (scalar(k, true), from_json(v, depth + 1))).collect()),
            position: Position::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<'n, 's>(node: &'n Node<'s>) -> &'n [(Node<'s>, Node<'s>)] {
        match &node.kind {
            NodeKind::Map(entries) => entries,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn values_keep_their_positions() {
        let doc = parse("version: \"1.0\"\nrules:\n  - priority: 2000\n").unwrap();
        let entries = map(&doc);
        assert_eq!(entries[0].1.position, Position { line: 1, column: 10 });
        assert_eq!(entries[0].1.scalar(), Some(Scalar::Str("1.0")));
        let NodeKind::Seq(rules) = &entries[1].1.kind else { panic!("expected a list") };
        let (key, value) = &map(&rules[0])[0];
        assert_eq!(key.position, Position { line: 3, column: 5 });
        assert_eq!(value.position, Position { line: 3, column: 15 });
        assert_eq!(value.scalar(), Some(Scalar::Int(2000)));
    }

    #[test]
    fn scalars_resolve_like_yaml_1_2() {
        let doc = parse("[8, \"8\", 0.5, true, null, float16, 1e3, -3, .inf]").unwrap();
        let NodeKind::Seq(items) = doc.kind else { panic!("expected a list") };
        let values: Vec<_> = items.iter().map(|n| n.scalar().unwrap()).collect();
        assert_eq!(values[0], Scalar::Int(8));
        assert_eq!(values[1], Scalar::Str("8"));
        assert_eq!(values[2], Scalar::Float(0.5));
        assert_eq!(values[3], Scalar::Bool(true));
        assert_eq!(values[4], Scalar::Null);
        assert_eq!(values[5], Scalar::Str("float16"));
        assert_eq!(values[6], Scalar::Float(1000.0));
        assert_eq!(values[7], Scalar::Int(-3));
        assert_eq!(values[8], Scalar::Float(f64::INFINITY));
    }

    #[test]
    fn hostile_documents_are_refused() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(parse(&deep).unwrap_err().message.contains("deeper"));
        let big = "a".repeat(MAX_DOCUMENT_BYTES + 1);
        assert!(parse(&big).unwrap_err().message.contains("too large"));
        let alias = "a: &x [1]\nb: *x\n";
        assert!(parse(alias).unwrap_err().message.contains("aliases"));
        let broken = parse("a: [1, 2\n").unwrap_err();
        assert!(broken.message.starts_with("Invalid YAML"), "{}", broken.message);
        assert!(broken.position.is_known());
    }

    #[test]
    fn json_is_accepted() {
        let doc = parse("{\"version\": \"1.0\", \"kernel_denies\": [\"*_debug\"]}").unwrap();
        assert_eq!(map(&doc)[0].1.scalar(), Some(Scalar::Str("1.0")));
    }
}
