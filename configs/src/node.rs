//! A YAML tree in which every value remembers where it came from.
//!
//! A YAML library's value type forgets positions, and positions are what make an error
//! useful ("user-data:12:7") and what `berth config get --origin` reports after
//! several sources have been merged. So documents are parsed from yaml-rust2's
//! event stream into this tree, with hard limits that make hostile input
//! (deep nesting, alias bombs, huge documents) fail fast instead of hanging.

use std::collections::HashMap;
use std::sync::Arc;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::{Diagnostic, Origin};

/// Bounds on what a single document may cost to load.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    /// Counts every node, including the copies an alias expands to.
    pub max_nodes: usize,
    /// Counts the text of every key and scalar, including alias copies: a few
    /// aliases of one large string must not multiply it into gigabytes.
    pub max_expanded_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 << 20,
            max_depth: 64,
            max_nodes: 250_000,
            max_expanded_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// `quoted` scalars are always strings; plain ones are typed by the field they land in.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub origin: Origin,
    /// Tagged `!!binary`: the scalar is base64 text.
    pub binary: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_origin: Origin,
    /// The key as the user wrote it when a translation renamed it (`rancher` for `berth`).
    pub written_as: Option<String>,
    pub value: Node,
}

impl Entry {
    pub fn new(key: impl Into<String>, key_origin: Origin, value: Node) -> Self {
        Entry {
            key: key.into(),
            key_origin,
            written_as: None,
            value,
        }
    }

    /// The key as it should appear in messages to the user.
    pub fn shown_key(&self) -> &str {
        self.written_as.as_deref().unwrap_or(&self.key)
    }
}

impl Node {
    pub fn new(value: Value, origin: Origin) -> Self {
        Node {
            value,
            origin,
            binary: false,
        }
    }

    pub fn null(origin: Origin) -> Self {
        Node::new(Value::Null, origin)
    }

    pub fn string(text: impl Into<String>, origin: Origin) -> Self {
        Node::new(
            Value::Scalar {
                text: text.into(),
                quoted: true,
            },
            origin,
        )
    }

    pub fn empty_map(origin: Origin) -> Self {
        Node::new(Value::Map(Vec::new()), origin)
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Vec<Entry>> {
        match &mut self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.as_map_mut()?
            .iter_mut()
            .find(|e| e.key == key)
            .map(|e| &mut e.value)
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let entries = self.as_map_mut()?;
        let index = entries.iter().position(|e| e.key == key)?;
        Some(entries.remove(index))
    }

    /// Number of nodes in this subtree, itself included.
    pub fn size(&self) -> usize {
        1 + match &self.value {
            Value::Null | Value::Scalar { .. } => 0,
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(entries) => entries.iter().map(|e| e.value.size()).sum(),
        }
    }

    /// Bytes of key and scalar text in this subtree.
    pub fn text_bytes(&self) -> usize {
        match &self.value {
            Value::Null => 0,
            Value::Scalar { text, .. } => text.len(),
            Value::Seq(items) => items.iter().map(Node::text_bytes).sum(),
            Value::Map(entries) => entries
                .iter()
                .map(|e| e.key.len() + e.value.text_bytes())
                .sum(),
        }
    }

    /// Converts to JSON, typing plain scalars the way YAML 1.2's core schema does.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Scalar { text, quoted: true } => J::String(text.clone()),
            Value::Scalar {
                text,
                quoted: false,
            } => match resolve_plain(text) {
                Plain::Null => J::Null,
                Plain::Bool(b) => J::Bool(b),
                Plain::Int(i) => J::from(i),
                Plain::UInt(u) => J::from(u),
                Plain::Float(f) => serde_json::Number::from_f64(f)
                    .map(J::Number)
                    .unwrap_or_else(|| J::String(text.clone())),
                Plain::Str => J::String(text.clone()),
            },
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// What a plain (unquoted) scalar means under YAML 1.2's core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plain {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str,
}

pub fn resolve_plain(text: &str) -> Plain {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "true" | "True" | "TRUE" => return Plain::Bool(true),
        "false" | "False" | "FALSE" => return Plain::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Plain::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Plain::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).map_or(Plain::Str, Plain::UInt);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8).map_or(Plain::Str, Plain::UInt);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Plain::Int(i);
        }
        if let Ok(u) = text.parse::<u64>() {
            return Plain::UInt(u);
        }
        return Plain::Str;
    }
    let looks_numeric = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric {
        if let Ok(f) = text.parse::<f64>() {
            return Plain::Float(f);
        }
    }
    Plain::Str
}

fn origin_of(source: &Arc<str>, mark: &Marker) -> Origin {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Origin::new(source, mark.line(), mark.col() + 1)
}

enum Frame {
    Seq {
        items: Vec<Node>,
        anchor: usize,
        origin: Origin,
    },
    Map {
        entries: Vec<Entry>,
        /// Key → index in `entries`, so duplicate checks stay linear in the mapping's size.
        positions: HashMap<String, usize>,
        pending_key: Option<(String, Origin)>,
        anchor: usize,
        origin: Origin,
    },
}

/// Parses one YAML document into a [`Node`] tree. An empty document is an empty map.
pub fn parse(source: &Arc<str>, text: &str, limits: &Limits) -> Result<Node, Diagnostic> {
    parse_with_warnings(source, text, limits, &mut Vec::new())
}

/// [`parse`], also reporting what is accepted but suspicious: a key written twice
/// in one mapping (the later wins, as in cloud-init's YAML loader).
pub fn parse_with_warnings(
    source: &Arc<str>,
    text: &str,
    limits: &Limits,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Node, Diagnostic> {
    let start = Origin::new(source, 1, 1);
    if text.len() > limits.max_bytes {
        return Err(Diagnostic::error(
            Some(start),
            "",
            format!(
                "document is {} bytes; the limit is {} bytes",
                text.len(),
                limits.max_bytes
            ),
        ));
    }
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut nodes = 0usize;
    let mut bytes = 0usize;
    let mut documents = 0usize;

    loop {
        let (event, mark) = parser.next_token().map_err(|e| {
            Diagnostic::error(
                Some(origin_of(source, e.marker())),
                "",
                format!("YAML syntax error: {}", e.info()),
            )
        })?;
        let origin = origin_of(source, &mark);
        let finished = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => None,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::error(
                        Some(origin),
                        "",
                        "more than one YAML document (`---`); a cloud-config is a single document",
                    ));
                }
                None
            }
            Event::Scalar(text, style, anchor, tag) => {
                let quoted =
                    style != TScalarStyle::Plain || tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if !quoted && resolve_plain(&text) == Plain::Null {
                    Value::Null
                } else {
                    Value::Scalar { text, quoted }
                };
                let mut node = Node::new(value, origin);
                node.binary = tag.as_ref().is_some_and(|t| t.suffix == "binary");
                Some((node, anchor))
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err(Diagnostic::error(
                        Some(origin),
                        "",
                        "alias to an unknown anchor",
                    ));
                };
                nodes = nodes.saturating_add(target.size());
                bytes = bytes.saturating_add(target.text_bytes());
                if nodes > limits.max_nodes {
                    return Err(too_many_nodes(origin, limits));
                }
                if bytes > limits.max_expanded_bytes {
                    return Err(too_many_bytes(origin, limits));
                }
                let mut copy = target.clone();
                relocate_aliased(&mut copy, &origin);
                Some((copy, 0))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                    origin,
                });
                if stack.len() > limits.max_depth {
                    return Err(too_deep(&stack, limits));
                }
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    positions: HashMap::new(),
                    pending_key: None,
                    anchor,
                    origin,
                });
                if stack.len() > limits.max_depth {
                    return Err(too_deep(&stack, limits));
                }
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    anchor,
                    origin,
                }) => Some((Node::new(Value::Seq(items), origin), anchor)),
                _ => return Err(Diagnostic::error(Some(origin), "", "unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    mut entries,
                    positions,
                    anchor,
                    origin,
                    ..
                }) => {
                    if positions.len() < entries.len() {
                        // Keep only the last entry of each duplicated key.
                        let mut index = 0;
                        entries.retain(|e| {
                            let keep = e.key == "<<" || positions.get(&e.key) == Some(&index);
                            index += 1;
                            keep
                        });
                    }
                    let entries = apply_merge_keys(entries)?;
                    Some((Node::new(Value::Map(entries), origin), anchor))
                }
                _ => return Err(Diagnostic::error(Some(origin), "", "unbalanced mapping")),
            },
        };
        let Some((node, anchor)) = finished else {
            continue;
        };
        nodes += 1;
        if let Value::Scalar { text, .. } = &node.value {
            bytes = bytes.saturating_add(text.len());
        }
        if anchor > 0 {
            // Keeping the anchor's copy costs as much as an alias of it.
            nodes = nodes.saturating_add(node.size());
            bytes = bytes.saturating_add(node.text_bytes());
        }
        if nodes > limits.max_nodes {
            return Err(too_many_nodes(node.origin.clone(), limits));
        }
        if bytes > limits.max_expanded_bytes {
            return Err(too_many_bytes(node.origin.clone(), limits));
        }
        if anchor > 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                positions,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let key = match &node.value {
                        Value::Scalar { text, .. } => text.clone(),
                        Value::Null => String::new(),
                        _ => {
                            return Err(Diagnostic::error(
                                Some(node.origin),
                                "",
                                "a mapping key must be a plain string, not a list or mapping",
                            ))
                        }
                    };
                    let duplicate = if key == "<<" {
                        None
                    } else {
                        positions.get(&key).copied()
                    };
                    if let Some(i) = duplicate {
                        // The earlier entry is dropped when the mapping ends.
                        let first = &entries[i];
                        warnings.push(Diagnostic::warning(
                            Some(node.origin.clone()),
                            key.clone(),
                            format!(
                                "duplicate key `{key}`: this value wins over the one at line {}, column {}",
                                first.key_origin.line, first.key_origin.column
                            ),
                        ));
                    }
                    *pending_key = Some((key, node.origin));
                }
                Some((key, key_origin)) => {
                    positions.insert(key.clone(), entries.len());
                    entries.push(Entry::new(key, key_origin, node));
                }
            },
        }
    }
    Ok(match root {
        None
        | Some(Node {
            value: Value::Null, ..
        }) => Node::empty_map(start),
        Some(node) => node,
    })
}

fn too_deep(stack: &[Frame], limits: &Limits) -> Diagnostic {
    let origin = match stack.last() {
        Some(Frame::Seq { origin, .. } | Frame::Map { origin, .. }) => Some(origin.clone()),
        None => None,
    };
    Diagnostic::error(
        origin,
        "",
        format!("nesting is deeper than {} levels", limits.max_depth),
    )
}

fn too_many_bytes(origin: Origin, limits: &Limits) -> Diagnostic {
    Diagnostic::error(
        Some(origin),
        "",
        format!(
            "document expands to more than {} bytes of text (are aliases multiplying it?)",
            limits.max_expanded_bytes
        ),
    )
}

fn too_many_nodes(origin: Origin, limits: &Limits) -> Diagnostic {
    Diagnostic::error(
        Some(origin),
        "",
        format!(
            "document expands to more than {} values (are aliases multiplying it?)",
            limits.max_nodes
        ),
    )
}

/// An alias's copy keeps the anchor's positions except at its root, which is where
/// the user wrote `*name`; that is where a problem with this use should point.
fn relocate_aliased(node: &mut Node, origin: &Origin) {
    node.origin = origin.clone();
}

/// YAML merge keys (`<<: *defaults`), common in compose files: entries written in
/// the mapping itself win over merged ones, earlier merged maps win over later ones.
fn apply_merge_keys(entries: Vec<Entry>) -> Result<Vec<Entry>, Diagnostic> {
    if !entries.iter().any(|e| e.key == "<<") {
        return Ok(entries);
    }
    let (merges, mut own): (Vec<Entry>, Vec<Entry>) =
        entries.into_iter().partition(|e| e.key == "<<");
    let mut seen: std::collections::HashSet<String> = own.iter().map(|e| e.key.clone()).collect();
    for merge in merges {
        let sources = match merge.value.value {
            Value::Map(_) => vec![merge.value],
            Value::Seq(items) => items,
            _ => {
                return Err(Diagnostic::error(
                    Some(merge.key_origin),
                    "<<",
                    "a merge key (`<<`) needs a mapping or a list of mappings",
                ))
            }
        };
        for source in sources {
            let Value::Map(merged) = source.value else {
                return Err(Diagnostic::error(
                    Some(source.origin),
                    "<<",
                    "a merge key (`<<`) needs a mapping or a list of mappings",
                ));
            };
            for entry in merged {
                if seen.insert(entry.key.clone()) {
                    own.push(entry);
                }
            }
        }
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Arc<str> {
        Arc::from("test.yml")
    }

    #[test]
    fn records_line_and_column_of_values() {
        let node = parse(&src(), "a: 1\nb:\n  c: [x, y]\n", &Limits::default()).expect("parses");
        let c = node.get("b").and_then(|b| b.get("c")).expect("b.c");
        assert_eq!((c.origin.line, c.origin.column), (3, 6));
        let Value::Seq(items) = &c.value else {
            panic!("not a seq")
        };
        assert_eq!((items[1].origin.line, items[1].origin.column), (3, 10));
    }

    #[test]
    fn duplicate_keys_warn_and_the_later_wins() {
        let mut warnings = Vec::new();
        let node = parse_with_warnings(
            &src(),
            "a: 1\nb: 0\na: 2\n",
            &Limits::default(),
            &mut warnings,
        )
        .expect("parses");
        assert_eq!(node.get("a").and_then(Node::as_scalar), Some("2"));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].message.contains("line 1, column 1"),
            "{}",
            warnings[0]
        );
        assert_eq!(warnings[0].origin.as_ref().map(|o| o.line), Some(3));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse(&src(), "a: [1, 2\nb: 3\n", &Limits::default()).expect_err("bad yaml");
        assert!(err.origin.is_some());
        assert!(err.message.starts_with("YAML syntax error"), "{err}");
    }

    #[test]
    fn merge_keys_fill_in_missing_entries() {
        let text = "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n";
        let node = parse(&src(), text, &Limits::default()).expect("parses");
        let c = node.get("c").expect("c").to_json();
        assert_eq!(c, serde_json::json!({"y": 3, "x": 1}));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&src(), &text, &Limits::default()).expect_err("bomb");
        assert!(err.message.contains("expands to more than"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let err = parse(&src(), &text, &Limits::default()).expect_err("deep");
        assert!(
            err.message.contains("deeper") || err.message.contains("recursion"),
            "{err}"
        );
        let text = (0..200).fold(String::new(), |mut s, i| {
            s.push_str(&" ".repeat(i));
            s.push_str("k:\n");
            s
        });
        let err = parse(&src(), &text, &Limits::default()).expect_err("deep block");
        assert!(err.message.contains("deeper"), "{err}");
    }

    #[test]
    fn huge_documents_are_refused_before_parsing() {
        let text = format!("a: \"{}\"", "x".repeat(5 << 20));
        let err = parse(&src(), &text, &Limits::default()).expect_err("huge");
        assert!(err.message.contains("limit"), "{err}");
    }

    #[test]
    fn plain_scalars_resolve_like_yaml_core() {
        assert_eq!(resolve_plain("~"), Plain::Null);
        assert_eq!(resolve_plain("true"), Plain::Bool(true));
        assert_eq!(resolve_plain("-12"), Plain::Int(-12));
        assert_eq!(resolve_plain("1.5"), Plain::Float(1.5));
        assert_eq!(resolve_plain("0x10"), Plain::UInt(16));
        assert_eq!(resolve_plain("yes"), Plain::Str);
        assert_eq!(resolve_plain("1.2.3"), Plain::Str);
        assert_eq!(resolve_plain("e"), Plain::Str);
    }
}
