//! Dotted key paths, as used by `berth config get/set` and the kernel command line:
//! `berth.network.interfaces.eth0.dhcp`, `write_files.0.path`.
//!
//! Map keys may contain dots (sysctl names, registry hosts), so a segment can be
//! quoted (`berth.registries.auth."reg.example.com:5000".username`), and below a
//! key whose values are plain scalars (`sysctl`, `environment`, `labels`,
//! `bond_opts`) the rest of the path is one key: `berth.sysctl.net.ipv4.ip_forward`.

use crate::diag::Origin;
use crate::node::{Entry, Node, Value};

/// Keys whose children are free-form names with scalar values.
const SCALAR_MAPS: &[&str] = &["sysctl", "environment", "labels", "bond_opts"];

/// The top-level cloud-init keys; anything else under `berth.` on the kernel
/// command line belongs to the `berth:` section.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "hostname",
    "ssh_authorized_keys",
    "ssh_genkeytypes",
    "users",
    "write_files",
    "runcmd",
    "bootcmd",
    "mounts",
];

/// Why a key path cannot be split or set. The texts are what `berth config get/set`
/// and the kernel command line's diagnostics show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPathError {
    #[error("unterminated quote in key `{0}`")]
    UnterminatedQuote(String),
    #[error("empty segment in key `{0}`")]
    EmptySegment(String),
    #[error("key `{0}` ends with a dot")]
    TrailingDot(String),
    #[error("expected `.` after a quoted segment in `{0}`")]
    AfterQuote(String),
    #[error("empty key")]
    Empty,
    #[error("`{list}` is a list of {len}; `{key}` is not an index in it")]
    NotAnIndexUnder {
        list: String,
        len: usize,
        key: String,
    },
    #[error("`{key}` is not an index in a list of {len}")]
    NotAnIndex { key: String, len: usize },
    #[error("cannot set a key inside a scalar value")]
    InsideScalar,
}

/// Splits a dotted path into keys.
pub fn split(path: &str) -> Result<Vec<String>, KeyPathError> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if segments
            .last()
            .is_some_and(|s: &String| SCALAR_MAPS.contains(&s.as_str()))
            && !rest.starts_with('"')
        {
            segments.push(rest.to_string());
            break;
        }
        let (segment, tail) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| KeyPathError::UnterminatedQuote(path.to_string()))?;
            (quoted[..end].to_string(), &quoted[end + 1..])
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        if segment.is_empty() {
            return Err(KeyPathError::EmptySegment(path.to_string()));
        }
        segments.push(segment);
        rest = match tail.strip_prefix('.') {
            Some("") => return Err(KeyPathError::TrailingDot(path.to_string())),
            Some(t) => t,
            None if tail.is_empty() => tail,
            None => return Err(KeyPathError::AfterQuote(path.to_string())),
        };
    }
    if segments.is_empty() {
        return Err(KeyPathError::Empty);
    }
    Ok(segments)
}

/// The node at `path`, if it exists. Numeric segments index lists.
pub fn lookup<'a>(tree: &'a Node, path: &[String]) -> Option<&'a Node> {
    path.iter().try_fold(tree, |node, key| match &node.value {
        Value::Map(_) => node.get(key),
        Value::Seq(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The origin of the deepest existing node along `path`; what an error about
/// `path` should point at when the exact value is absent.
pub fn nearest_origin(tree: &Node, path: &[String]) -> Origin {
    let mut node = tree;
    let mut origin = tree.origin.clone();
    for key in path {
        let next = match &node.value {
            Value::Map(entries) => entries.iter().find(|e| &e.key == key).map(|e| {
                origin = e.key_origin.clone();
                &e.value
            }),
            Value::Seq(items) => key
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .inspect(|item| {
                    origin = item.origin.clone();
                }),
            _ => None,
        };
        match next {
            Some(n) => {
                if !matches!(n.value, Value::Map(_)) {
                    origin = n.origin.clone();
                }
                node = n;
            }
            None => break,
        }
    }
    origin
}

/// A tree holding just `value` at `path` (for `config set` and the kernel command line).
pub fn build(path: &[String], value: Node) -> Node {
    let origin = value.origin.clone();
    path.iter().rev().fold(value, |inner, key| {
        Node::new(
            Value::Map(vec![Entry::new(key.clone(), origin.clone(), inner)]),
            origin.clone(),
        )
    })
}

/// Sets `path` in `tree` to `value`, creating mappings on the way; a null value
/// removes the key. Numeric segments index existing list items.
pub fn set(tree: &mut Node, path: &[String], value: Node) -> Result<(), KeyPathError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(KeyPathError::Empty);
    };
    let mut node = tree;
    for (depth, key) in parents.iter().enumerate() {
        let origin = node.origin.clone();
        if matches!(node.value, Value::Null | Value::Scalar { .. }) {
            node.value = Value::Map(Vec::new());
        }
        node = match &mut node.value {
            Value::Map(entries) => {
                let index = match entries.iter().position(|e| &e.key == key) {
                    Some(i) => i,
                    None => {
                        entries.push(Entry::new(
                            key.clone(),
                            origin.clone(),
                            Node::empty_map(origin),
                        ));
                        entries.len() - 1
                    }
                };
                &mut entries[index].value
            }
            Value::Seq(items) => {
                let len = items.len();
                key.parse::<usize>()
                    .ok()
                    .and_then(|i| items.get_mut(i))
                    .ok_or_else(|| KeyPathError::NotAnIndexUnder {
                        list: path[..depth].join("."),
                        len,
                        key: key.clone(),
                    })?
            }
            _ => return Err(KeyPathError::InsideScalar),
        };
    }
    match &mut node.value {
        Value::Seq(items) => {
            let len = items.len();
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < len)
                .ok_or_else(|| KeyPathError::NotAnIndex {
                    key: last.clone(),
                    len,
                })?;
            if matches!(value.value, Value::Null) {
                items.remove(i);
            } else {
                items[i] = value;
            }
        }
        _ => {
            if !matches!(node.value, Value::Map(_)) {
                node.value = Value::Map(Vec::new());
            }
            if let Value::Map(entries) = &mut node.value {
                let existing = entries.iter().position(|e| &e.key == last);
                match (existing, matches!(value.value, Value::Null)) {
                    (Some(i), true) => {
                        entries.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => entries[i].value = value,
                    (None, false) => {
                        entries.push(Entry::new(last.clone(), value.origin.clone(), value))
                    }
                }
            }
        }
    }
    Ok(())
}

/// Removes the node at `path`; false when there is none.
pub fn remove(tree: &mut Node, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = tree;
    for key in parents {
        let next = match &mut node.value {
            Value::Map(entries) => entries
                .iter_mut()
                .find(|e| &e.key == key)
                .map(|e| &mut e.value),
            Value::Seq(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match &mut node.value {
        Value::Map(entries) => match entries.iter().position(|e| &e.key == last) {
            Some(i) => {
                entries.remove(i);
                true
            }
            None => false,
        },
        // Replace rather than remove, so later indexes (and their paths) stay put.
        // Null first, so later indexes (and the paths shown for them) stay put;
        // remove it only if null is not acceptable there either.
        Value::Seq(items) => match last.parse::<usize>().ok().filter(|i| *i < items.len()) {
            Some(i) if matches!(items[i].value, Value::Null) => {
                items.remove(i);
                true
            }
            Some(i) => {
                items[i].value = Value::Null;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Every scalar under `node` with its path, for `config get --origin` on a subtree.
pub fn leaves<'a>(node: &'a Node, prefix: &str, out: &mut Vec<(String, &'a Node)>) {
    match &node.value {
        Value::Map(entries) if !entries.is_empty() => {
            for e in entries {
                leaves(&e.value, &join(prefix, &e.key), out);
            }
        }
        Value::Seq(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                leaves(item, &join(prefix, &i.to_string()), out);
            }
        }
        _ => out.push((prefix.to_string(), node)),
    }
}

fn join(prefix: &str, key: &str) -> String {
    let key = if key.contains('.') {
        format!("\"{key}\"")
    } else {
        key.to_string()
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_plain_quoted_and_scalar_map_paths() {
        assert_eq!(
            split("berth.network.interfaces.eth0.dhcp"),
            Ok(vec!["berth", "network", "interfaces", "eth0", "dhcp"]
                .into_iter()
                .map(String::from)
                .collect())
        );
        assert_eq!(
            split("berth.sysctl.net.ipv4.ip_forward").map(|s| s.len()),
            Ok(3)
        );
        assert_eq!(
            split("berth.registries.auth.\"r.example.com:5000\".username"),
            Ok(vec![
                "berth",
                "registries",
                "auth",
                "r.example.com:5000",
                "username"
            ]
            .into_iter()
            .map(String::from)
            .collect())
        );
        assert!(split("a..b").is_err());
        assert!(split("a.").is_err());
        assert!(split("\"a").is_err());
        assert!(split("").is_err());
    }
}
