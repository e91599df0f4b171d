//! A reader for the plain block style that rules files are written in, at a fraction of
//! yaml-rust2's cost (its scanner allocates several strings per scalar): block mappings
//! and sequences, one-line scalars (plain, or quoted without escapes) and one-line flow
//! lists of scalars, with comments and blank lines anywhere.
//!
//! It builds the tree that [`crate::document`] builds from yaml-rust2's events, with the
//! same positions, or gives up (`None`) at the first thing outside that subset: anchors,
//! aliases, tags, flow mappings, block and multi-line scalars, escapes, tabs, carriage
//! returns, document markers, empty values, and anything YAML would refuse. yaml-rust2
//! then reads the file, so what a file means, and every error it gets, does not depend on
//! this reader. The tests check that the two agree wherever this one answers.

use std::borrow::Cow;

use crate::document::{MAX_DEPTH, MAX_NODES, Node, NodeKind, Position};

/// A line with content: blank lines and comment-only lines are skipped.
struct Line<'s> {
    /// 1-based.
    number: usize,
    /// Leading spaces.
    indent: usize,
    text: &'s str,
}

impl Line<'_> {
    fn byte(&self, at: usize) -> Option<u8> {
        self.text.as_bytes().get(at).copied()
    }

    /// The first byte at or after `at` that is not a space.
    fn skip_spaces(&self, mut at: usize) -> usize {
        while self.byte(at) == Some(b' ') {
            at += 1;
        }
        at
    }

    /// Whether the line is a block sequence entry (`- ...`).
    fn is_entry(&self) -> bool {
        self.byte(self.indent) == Some(b'-') && matches!(self.byte(self.indent + 1), None | Some(b' '))
    }

    /// Whether only spaces, then nothing or a comment, follow `end` (the end of a value):
    /// a comment needs a space before it.
    fn ends_after(&self, end: usize) -> bool {
        let rest = self.skip_spaces(end);
        match self.byte(rest) {
            None => true,
            Some(b'#') => rest > end,
            Some(_) => false,
        }
    }

    fn position(&self, at: usize) -> Position {
        // Every byte before a token is ASCII, so the byte offset is the column.
        Position { line: self.number, column: at + 1 }
    }
}

/// Characters a plain scalar may start with: none is a YAML indicator. (`-` may start
/// one too when it is not an entry's dash; see [`starts_plain`].)
fn is_plain_start(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'~' | b'+')
}

/// Characters a plain key or flow item may hold after its first: no indicator that
/// could end it, start a comment or open a collection there.
fn is_plain_word(b: u8) -> bool {
    PLAIN_WORD[usize::from(b)]
}

/// [`is_plain_word`] as a table: it is asked of every byte of a file.
const PLAIN_WORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'_' | b'.' | b'-' | b'+' | b'/' | b'*' | b'~' | b'(' | b')' | b'@' | b'$' | b'^' | b'=')
            || matches!(c, b'?' | b'<' | b'>' | b'!' | b'%');
        b += 1;
    }
    table
};

fn starts_plain(line: &Line<'_>, at: usize) -> bool {
    match line.byte(at) {
        Some(b'-') => line.byte(at + 1).is_some_and(is_plain_word),
        Some(b) => is_plain_start(b),
        None => false,
    }
}

/// A key or flow item starting at `at`: quoted, or one plain word. Its text, whether it
/// was quoted, and where it ends.
fn word<'s>(line: &Line<'s>, at: usize) -> Option<(&'s str, bool, usize)> {
    match line.byte(at)? {
        b'"' | b'\'' => quoted(line, at).map(|(text, end)| (text, true, end)),
        _ if starts_plain(line, at) => {
            let end = (at + 1..=line.text.len()).find(|&i| !line.byte(i).is_some_and(is_plain_word))?;
            Some((line.text.get(at..end)?, false, end))
        }
        _ => None,
    }
}

/// Whether the word ending at `end` is a key: `:` then a space or the end of the line.
fn ends_key(line: &Line<'_>, end: usize) -> bool {
    line.byte(end) == Some(b':') && matches!(line.byte(end + 1), None | Some(b' '))
}

/// Longest key read here (yaml-rust2 refuses simple keys past 1024 characters).
const MAX_KEY_BYTES: usize = 1000;

struct Reader<'s> {
    lines: Vec<Line<'s>>,
    /// The line being read.
    next: usize,
    nodes: usize,
}

/// Reads `source`, or `None` when it is outside the subset this module reads.
pub(crate) fn parse(source: &str) -> Option<Node<'_>> {
    // yaml-rust2 reads `\r` as a line break and NUL as the end, even in a comment; tabs
    // and other control characters are left to it too.
    let control = |b: &u8| (*b < b' ' && *b != b'\n') | (*b == 0x7f);
    // In blocks without an early exit, so that the compiler can vectorise the scan.
    if source.as_bytes().chunks(64).any(|block| block.iter().fold(false, |seen, b| seen | control(b))) {
        return None;
    }
    let lines = source
        .split('\n')
        .enumerate()
        .filter_map(|(i, text)| {
            let indent = text.bytes().take_while(|&b| b == b' ').count();
            match text.as_bytes().get(indent) {
                None | Some(b'#') => None,
                Some(_) => Some(Line { number: i + 1, indent, text }),
            }
        })
        .collect();
    let mut reader = Reader { lines, next: 0, nodes: 0 };
    let first = reader.lines.first()?;
    if first.indent != 0 || reader.lines.iter().any(|l| l.text.starts_with("---") || l.text.starts_with("...")) {
        return None;
    }
    let root = reader.map(0, 1)?;
    (reader.next == reader.lines.len()).then_some(root)
}

impl<'s> Reader<'s> {
    fn node(&mut self, kind: NodeKind<'s>, position: Position) -> Option<Node<'s>> {
        self.nodes += 1;
        (self.nodes < MAX_NODES).then_some(Node { kind, position })
    }

    fn line(&self) -> Option<&Line<'s>> {
        self.lines.get(self.next)
    }

    /// A block mapping whose first key starts at `column` of the current line, and whose
    /// other keys start lines indented by `column`; `depth` counts it.
    fn map(&mut self, column: usize, depth: usize) -> Option<Node<'s>> {
        if depth >= MAX_DEPTH {
            return None;
        }
        let mut entries = Vec::new();
        let mut at = column;
        loop {
            let (key, after) = self.key(at)?;
            let value = self.value_of_key(after, column, depth)?;
            entries.push((key, value));
            match self.line() {
                Some(line) if line.indent == column && !line.is_entry() => at = column,
                Some(line) if line.indent >= column => return None,
                _ => break,
            }
        }
        // yaml-rust2 marks a block mapping at its first key.
        let position = entries.first()?.0.position;
        self.node(NodeKind::Map(entries), position)
    }

    /// The key starting at `at` of the current line, and where its `:` ends.
    fn key(&mut self, at: usize) -> Option<(Node<'s>, usize)> {
        let line = self.line()?;
        let (text, quoted, end) = word(line, at)?;
        if text.len() > MAX_KEY_BYTES || !ends_key(line, end) {
            return None;
        }
        let position = line.position(at);
        let key = self.node(NodeKind::Scalar { text: Cow::Borrowed(text), quoted }, position)?;
        Some((key, end + 1))
    }

    /// The value after a key whose `:` ends at `after` on the current line: on that line,
    /// or a block on the lines below (a sequence may sit at the mapping's own indent).
    fn value_of_key(&mut self, after: usize, map_indent: usize, depth: usize) -> Option<Node<'s>> {
        let line = self.line()?;
        let at = line.skip_spaces(after);
        if !matches!(line.byte(at), None | Some(b'#')) {
            let value = self.inline_value(at, depth)?;
            self.next += 1;
            return Some(value);
        }
        self.next += 1;
        let below = self.line()?;
        let indent = below.indent;
        match (indent.cmp(&map_indent), below.is_entry()) {
            (std::cmp::Ordering::Greater, true) => self.seq(indent, false, depth + 1),
            (std::cmp::Ordering::Equal, true) => self.seq(indent, true, depth + 1),
            (std::cmp::Ordering::Greater, false) => self.map(indent, depth + 1),
            // An empty value (null): left to yaml-rust2.
            _ => None,
        }
    }

    /// A block sequence whose entries' dashes sit at `indent`, from the current line;
    /// `indentless` when at its mapping's own indent.
    fn seq(&mut self, indent: usize, indentless: bool, depth: usize) -> Option<Node<'s>> {
        if depth >= MAX_DEPTH {
            return None;
        }
        let first = self.line()?;
        // yaml-rust2 marks an indented sequence at its first dash, one at its mapping's
        // indent at its first entry.
        let position = if indentless { first.position(first.skip_spaces(indent + 1)) } else { first.position(indent) };
        let mut items = Vec::new();
        loop {
            let line = self.line()?;
            let at = line.skip_spaces(indent + 1);
            if at == indent + 1 || matches!(line.byte(at), None | Some(b'#')) || line.byte(at) == Some(b'-') {
                // An empty entry, a block below the dash, or a sequence in a sequence.
                return None;
            }
            let item = if self.starts_key(at) {
                self.map(at, depth + 1)?
            } else {
                let item = self.inline_value(at, depth)?;
                self.next += 1;
                item
            };
            items.push(item);
            match self.line() {
                Some(line) if line.indent == indent && line.is_entry() => {}
                Some(line) if line.indent > indent => return None,
                _ => break,
            }
        }
        self.node(NodeKind::Seq(items), position)
    }

    /// Whether a key (`name:` then a space or the end of the line) starts at `at`.
    fn starts_key(&self, at: usize) -> bool {
        self.line().and_then(|line| word(line, at).map(|(.., end)| ends_key(line, end))).unwrap_or(false)
    }

    /// A scalar or flow list starting at `at` of the current line and ending it.
    fn inline_value(&mut self, at: usize, depth: usize) -> Option<Node<'s>> {
        let line = self.line()?;
        let (kind, end) = match line.byte(at)? {
            b'[' => return self.flow_list(at, depth + 1),
            b'"' | b'\'' => {
                let (text, end) = quoted(line, at)?;
                (NodeKind::Scalar { text: Cow::Borrowed(text), quoted: true }, end)
            }
            _ => {
                let (text, end) = plain_value(line, at)?;
                (NodeKind::Scalar { text: Cow::Borrowed(text), quoted: false }, end)
            }
        };
        if !line.ends_after(end) {
            return None;
        }
        let position = line.position(at);
        self.node(kind, position)
    }

    /// `[a, "b", c]` on one line, ending it.
    fn flow_list(&mut self, open: usize, depth: usize) -> Option<Node<'s>> {
        if depth >= MAX_DEPTH {
            return None;
        }
        let line = self.line()?;
        let mut items = Vec::new();
        let mut at = line.skip_spaces(open + 1);
        let mut scalars = Vec::new();
        if line.byte(at) == Some(b']') {
            at += 1;
        } else {
            loop {
                let (text, quoted, end) = word(line, at)?;
                scalars.push((text, quoted, line.position(at)));
                at = line.skip_spaces(end);
                match line.byte(at)? {
                    b',' => {
                        at = line.skip_spaces(at + 1);
                        if line.byte(at) == Some(b']') {
                            // A trailing comma: left to yaml-rust2.
                            return None;
                        }
                    }
                    b']' => {
                        at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if !line.ends_after(at) {
            return None;
        }
        let position = line.position(open);
        for (text, quoted, position) in scalars {
            items.push(self.node(NodeKind::Scalar { text: Cow::Borrowed(text), quoted }, position)?);
        }
        self.node(NodeKind::Seq(items), position)
    }
}

/// A quoted scalar starting at `at` and closing on the same line, without escapes (and
/// in printable ASCII): its text, and where it ends.
fn quoted<'s>(line: &Line<'s>, at: usize) -> Option<(&'s str, usize)> {
    let quote = line.byte(at)?;
    let close = (at + 1..line.text.len()).find(|&i| line.byte(i) == Some(quote))?;
    let text = line.text.get(at + 1..close)?;
    let plain_text = text.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'\\');
    // `''` inside single quotes is an escaped quote.
    (plain_text && line.byte(close + 1) != Some(b'\'')).then_some((text, close + 1))
}

/// A plain scalar in block context starting at `at`: words of [`is_plain_word`]
/// characters and `:` separated by single spaces, up to the end of the line or a
/// comment; its text and where it ends.
fn plain_value<'s>(line: &Line<'s>, at: usize) -> Option<(&'s str, usize)> {
    if !starts_plain(line, at) {
        return None;
    }
    let mut end = at;
    let mut i = at;
    loop {
        while line.byte(i).is_some_and(|b| is_plain_word(b) || b == b':') {
            i += 1;
        }
        if i == end {
            // Neither a word character nor the end: an indicator, a tab, a quote.
            return None;
        }
        end = i;
        i = line.skip_spaces(i);
        match line.byte(i) {
            None => break,
            Some(b'#') if i > end => break,
            Some(_) if i > end => {}
            Some(_) => return None,
        }
    }
    let text = line.text.get(at..end)?;
    // `a: b` in a value is a mapping YAML refuses; `a:` ends in one.
    (!text.contains(": ") && !text.ends_with(':')).then_some((text, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::parse_yaml;

    /// Where two trees first differ, for a readable failure.
    fn difference(a: &Node<'_>, b: &Node<'_>, path: &str) -> Option<String> {
        match (&a.kind, &b.kind) {
            (NodeKind::Seq(x), NodeKind::Seq(y)) if x.len() == y.len() => {
                let inner =
                    x.iter().zip(y).enumerate().find_map(|(i, (x, y))| difference(x, y, &format!("{path}[{i}]")));
                inner.or_else(|| {
                    (a.position != b.position).then(|| format!("{path}: {:?} vs {:?}", a.position, b.position))
                })
            }
            (NodeKind::Map(x), NodeKind::Map(y)) if x.len() == y.len() => {
                let inner = x.iter().zip(y).enumerate().find_map(|(i, ((xk, xv), (yk, yv)))| {
                    difference(xk, yk, &format!("{path}.key{i}")).or_else(|| difference(xv, yv, &format!("{path}.{i}")))
                });
                inner.or_else(|| {
                    (a.position != b.position).then(|| format!("{path}: {:?} vs {:?}", a.position, b.position))
                })
            }
            _ => (a != b).then(|| format!("{path}: {a:?} vs {b:?}")),
        }
    }

    fn assert_agrees(source: &str, fast: Node<'_>) {
        match parse_yaml(source) {
            Ok(slow) => assert!(fast == slow, "{source}\n{}", difference(&fast, &slow, "").unwrap_or_default()),
            Err(error) => panic!("{source}\nyaml-rust2 refuses it: {error:?}"),
        }
    }

    /// Every construct this reader handles, with comments and blank lines between.
    const EXAMPLE: &str = r#"# A rules file.
version: "1.0"

defaults:
  fallback_policy: torch_sdpa   # the last resort
  default_priority: 50
dispatch_rules:
  - operation: "attention.*"
    conditions:
      batch_size_gte: 8
      dtype: [float16, 'bfloat16']
      device_match: cuda:*
      dropout_p: 0.0
    kernel: flash_attention_v2
    priority: 100
  # between rules
  - operation: rms_norm
    conditions: {}
    kernel: a b  c
  - "x"
  - [ ]
kernel_locks:
  attention.causal: flash_v3
  "rms_norm": -1
kernel_allows: [ "flash_*" , b ]
fallback_chains:
  rope:
  - rope_cpu
  - rope_ref
    # a comment more indented than anything
kernel_denies:
- "*_debug"   # é
"#;

    #[test]
    fn it_reads_what_yaml_rust2_reads_with_the_same_positions() {
        // `conditions: {}` is a flow mapping: outside the subset.
        assert_eq!(parse(EXAMPLE), None);
        let example = EXAMPLE.replace("conditions: {}", "conditions: []");
        let fast = parse(&example).expect("inside the subset");
        assert_agrees(&example, fast);
    }

    #[test]
    fn it_gives_up_outside_the_subset() {
        for source in [
            "a: &x 1\n",
            "a: *x\n",
            "a: !tag 1\n",
            "a: |\n  text\n",
            "a: b\n  c\n",
            "a:\n",
            "a: \"\\n\"\n",
            "a:\tb\n",
            "a: b\r\n",
            "---\na: b\n",
            "a: b: c\n",
            "a: [b,]\n",
            "a: [b\n",
            "- a\n",
            "a: 'it''s'\n",
            "a: b#c\n",
            " a: b\n",
        ] {
            assert_eq!(parse(source), None, "{source:?}");
        }
    }

    /// The subset's example, every way one byte can change, read by both readers:
    /// wherever this one answers, yaml-rust2 reads the same tree.
    #[test]
    fn where_it_answers_it_agrees_with_yaml_rust2_under_mutation() {
        let example = EXAMPLE.replace("conditions: {}", "conditions: []");
        let bytes = example.as_bytes();
        let inserts: &[&[u8]] = &[
            b" ",
            b"-",
            b":",
            b"#",
            b"\"",
            b"'",
            b"[",
            b"]",
            b",",
            b"{",
            b"\n",
            b"\t",
            b"a",
            b"*",
            b"&",
            b"|",
            b"\\",
            "é".as_bytes(),
        ];
        let (mut answered, mut cases) = (0, 0);
        for i in 0..=bytes.len() {
            let mut variants: Vec<Vec<u8>> = Vec::new();
            if i < bytes.len() {
                variants.push([&bytes[..i], &bytes[i + 1..]].concat());
            }
            for insert in inserts {
                variants.push([&bytes[..i], insert, &bytes[i..]].concat());
                if i < bytes.len() {
                    variants.push([&bytes[..i], insert, &bytes[i + 1..]].concat());
                }
            }
            for variant in variants {
                let Ok(source) = String::from_utf8(variant) else { continue };
                cases += 1;
                if let Some(fast) = parse(&source) {
                    answered += 1;
                    assert_agrees(&source, fast);
                }
            }
        }
        assert!(answered > cases / 4, "the mutations stay inside the subset often enough ({answered} of {cases})");
    }

    /// Rules files in the shapes people write, for the long campaign below.
    const SHAPES: [&str; 3] = [
        "version: \"1.0\"\ndispatch_rules:\n- operation: rope\n  kernel: a\n- operation: \"rms_*\"\n  conditions:\n    \
         dtype:\n    - float16\n    - bfloat16\n  kernel: b\nkernel_locks:\n  rope: a\n",
        "a:\n  b:\n    c:\n      - d: [e, 'f']\n        g: h\n      - i\n    j: k\n  l:\n  - m\nn: o p\n",
        "version: '1.0'\ndefaults: \n  fallback_policy: x\nfallback_chains:\n  \"attention.*\": [a, b]\n  \
         rope: []\n# end\n",
    ];

    /// Several random edits at once on every shape, a few million times: run it after
    /// changing this reader.
    #[test]
    #[ignore = "minutes long: cargo test --release -p layerzero-config -- --ignored block_yaml"]
    fn where_it_answers_it_agrees_with_yaml_rust2_under_many_edits() {
        let example = EXAMPLE.replace("conditions: {}", "conditions: []");
        let seeds: Vec<&str> = std::iter::once(example.as_str()).chain(SHAPES).collect();
        for seed in &seeds {
            assert_agrees(seed, parse(seed).expect("every shape is inside the subset"));
        }
        let pieces: &[&str] = &[
            " ", "  ", "-", "- ", ":", ": ", "#", " #", "\"", "'", "[", "]", ",", "{", "}", "\n", "\n  ", "\n- ", "\t",
            "a", "*", "&", "!", "|", ">", "?", "%", "@", "\\", "é", "~", "0", "-1", ".", "a: b", "- a: b", "\r", "''",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut answered, mut cases) = (0, 0);
        for _ in 0..3_000_000 {
            let mut source = seeds[next(seeds.len())].to_owned();
            for _ in 0..1 + next(3) {
                let at = next(source.len() + 1);
                if !source.is_char_boundary(at) {
                    continue;
                }
                match next(3) {
                    0 => source.insert_str(at, pieces[next(pieces.len())]),
                    1 => {
                        let end = (at + 1 + next(4)).min(source.len());
                        if source.is_char_boundary(end) {
                            source.replace_range(at..end, "");
                        }
                    }
                    _ => {
                        let end = (at + 1).min(source.len());
                        if source.is_char_boundary(end) {
                            source.replace_range(at..end, pieces[next(pieces.len())]);
                        }
                    }
                }
            }
            cases += 1;
            if let Some(fast) = parse(&source) {
                answered += 1;
                assert_agrees(&source, fast);
            }
        }
        println!("{answered} of {cases} edited files read by both readers, alike");
    }
}
