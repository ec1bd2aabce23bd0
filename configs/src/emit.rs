//! YAML out: what `berth config show` prints and what `local.yml` holds.
//!
//! Written here rather than through a YAML library so that what is printed is
//! exactly what [`crate::node::parse`] reads back: a plain scalar keeps the
//! user's spelling (`0644` stays `0644`, typed by the field it lands in, as it
//! was when read), a string that would read as something else is quoted, and
//! `!!binary` keeps its tag. Block style throughout; multi-line strings are
//! literal blocks so file contents stay readable.

use std::fmt::Write as _;

use crate::node::{resolve_plain, Node, Plain, Value};

/// `node` as a YAML document (no `---`), ending in a newline.
pub fn to_yaml(node: &Node) -> String {
    let mut out = String::new();
    match &node.value {
        Value::Map(entries) if !entries.is_empty() => block_map(&mut out, node, 0),
        Value::Seq(items) if !items.is_empty() => block_seq(&mut out, node, 0),
        _ => {
            inline(&mut out, node, 0);
            out.push('\n');
        }
    }
    out
}

/// JSON (any serde value) as YAML: what the CLI prints for `--format text`.
pub fn json_to_yaml(value: &serde_json::Value) -> String {
    to_yaml(&from_json(value))
}

fn from_json(value: &serde_json::Value) -> Node {
    use serde_json::Value as J;
    let origin = crate::diag::Origin::new(&std::sync::Arc::from("json"), 1, 1);
    let v = match value {
        J::Null => Value::Null,
        J::Bool(b) => Value::Scalar {
            text: b.to_string(),
            quoted: false,
        },
        J::Number(n) => Value::Scalar {
            text: n.to_string(),
            quoted: false,
        },
        J::String(s) => Value::Scalar {
            text: s.clone(),
            quoted: true,
        },
        J::Array(items) => Value::Seq(items.iter().map(from_json).collect()),
        J::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| crate::node::Entry::new(k.clone(), origin.clone(), from_json(v)))
                .collect(),
        ),
    };
    Node::new(v, origin)
}

fn indent(out: &mut String, level: usize) {
    out.extend(std::iter::repeat_n(' ', level));
}

/// A mapping's entries, each on its own line at `level`.
fn block_map(out: &mut String, node: &Node, level: usize) {
    let Value::Map(entries) = &node.value else {
        return;
    };
    for (i, e) in entries.iter().enumerate() {
        // The first entry of a mapping inside a sequence item follows the `- `.
        if i > 0 || !out.ends_with("- ") {
            indent(out, level);
        }
        key(out, &e.key);
        out.push(':');
        value_after(out, &e.value, level, true);
    }
}

/// A sequence's items, each `- ` at `level`.
fn block_seq(out: &mut String, node: &Node, level: usize) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !out.ends_with("- ") {
            indent(out, level);
        }
        out.push('-');
        value_after(out, item, level, false);
    }
}

/// What follows `key:` or `-`: a scalar on the same line, or a nested
/// collection (a mapping under a key goes on the next lines, indented; under
/// `- ` it starts on the same line).
fn value_after(out: &mut String, node: &Node, level: usize, in_map: bool) {
    match &node.value {
        Value::Map(entries) if !entries.is_empty() => {
            if in_map {
                out.push('\n');
                block_map(out, node, level + 2);
            } else {
                out.push(' ');
                block_map(out, node, level + 2);
            }
        }
        Value::Seq(items) if !items.is_empty() => {
            if in_map {
                // Compact form: a sequence under a key at the key's own indentation
                // is valid YAML, but nesting it reads better.
                out.push('\n');
                block_seq(out, node, level + 2);
            } else {
                out.push(' ');
                block_seq(out, node, level + 2);
            }
        }
        _ => {
            out.push(' ');
            inline(out, node, level);
            out.push('\n');
        }
    }
}

/// A scalar, null or empty collection, on the current line.
fn inline(out: &mut String, node: &Node, level: usize) {
    if node.binary {
        out.push_str("!!binary ");
    }
    match &node.value {
        Value::Null => out.push_str("null"),
        Value::Map(_) => out.push_str("{}"),
        Value::Seq(_) => out.push_str("[]"),
        Value::Scalar { text, quoted } => {
            // A plain scalar keeps its spelling and so its meaning; a string is
            // plain only when it cannot be read as anything but that string.
            let plain = plain_safe(text) && (!quoted || resolve_plain(text) == Plain::Str);
            if plain {
                out.push_str(text);
            } else if literal_safe(text) {
                literal(out, text, level + 2);
            } else {
                double_quoted(out, text);
            }
        }
    }
}

fn key(out: &mut String, k: &str) {
    if plain_safe(k) && resolve_plain(k) == Plain::Str {
        out.push_str(k);
    } else {
        double_quoted(out, k);
    }
}

/// Whether `text` reads back as the same text when written plain in block context.
fn plain_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    let second = text.chars().nth(1);
    let indicator = match first {
        // `-1`, `?x`, `:x` are plain; `- `, `? `, `: ` (or alone) are syntax.
        '-' | '?' | ':' => second.is_none_or(|c| c == ' '),
        ',' | '[' | ']' | '{' | '}' | '#' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%'
        | '@' | '`' => true,
        _ => false,
    };
    !indicator
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.ends_with(':')
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.starts_with("---")
        && !text.starts_with("...")
        && !text.chars().any(|c| c.is_control() || is_special_space(c))
}

/// Characters YAML treats as line breaks or that a reader would not see.
fn is_special_space(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// Whether `text` can be a literal block (`|`) and read back unchanged.
fn literal_safe(text: &str) -> bool {
    text.contains('\n')
        && !text.starts_with([' ', '\n', '\t'])
        && !text
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || is_special_space(c))
        // A block's own indentation is found from its first line; a tab there
        // or a blank-only first line would confuse it.
        && text.lines().next().is_some_and(|l| !l.trim().is_empty())
}

fn literal(out: &mut String, text: &str, level: usize) {
    let trailing = text.len() - text.trim_end_matches('\n').len();
    out.push_str(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    let body = text.trim_end_matches('\n');
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            indent(out, level);
            out.push_str(line);
        }
    }
    // The kept final line breaks (the newline after the last line is the
    // caller's); `|+` keeps the blank lines that follow.
    for _ in 1..trailing {
        out.push('\n');
    }
}

fn double_quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() || is_special_space(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
