//! Merging config sources. Later sources win (ARCHITECTURE.md §6):
//!
//! - mappings merge key by key, recursively;
//! - a key set to null (`key:` or `key: null`) removes what earlier sources set;
//! - lists replace the earlier list, except the top-level `ssh_authorized_keys`,
//!   `write_files` and `runcmd`, which append — keys and files from every source
//!   are wanted, as cloud-init users expect;
//! - scalars replace.
//!
//! Every node keeps the origin it was parsed with, so the merged tree says which
//! source set each value.

use std::collections::{HashMap, HashSet};

use crate::node::{Node, Value};

/// Top-level lists that accumulate across sources instead of replacing.
pub const APPENDING_LISTS: &[&str] = &["ssh_authorized_keys", "write_files", "runcmd"];

/// Merges `overlay` (the later source) into `base`.
pub fn merge(base: &mut Node, overlay: Node) {
    merge_at(base, overlay, 0, None);
}

fn merge_at(base: &mut Node, overlay: Node, depth: usize, key: Option<&str>) {
    match (&mut base.value, overlay.value) {
        (Value::Map(base_entries), Value::Map(overlay_entries)) => {
            // Indexed, so merging large mappings stays linear.
            let mut positions: HashMap<String, usize> = base_entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.key.clone(), i))
                .collect();
            let mut removed = HashSet::new();
            for entry in overlay_entries {
                let existing = positions.get(&entry.key).copied();
                match (existing, &entry.value.value) {
                    (Some(i), Value::Null) => {
                        removed.insert(i);
                        positions.remove(&entry.key);
                    }
                    (None, Value::Null) => {}
                    (Some(i), _) => {
                        let key = entry.key.clone();
                        let target = &mut base_entries[i];
                        target.key_origin = entry.key_origin;
                        target.written_as = entry.written_as;
                        merge_at(&mut target.value, entry.value, depth + 1, Some(&key));
                    }
                    (None, _) => {
                        positions.insert(entry.key.clone(), base_entries.len());
                        base_entries.push(entry);
                    }
                }
            }
            if !removed.is_empty() {
                let mut index = 0;
                base_entries.retain(|_| {
                    let keep = !removed.contains(&index);
                    index += 1;
                    keep
                });
            }
        }
        (Value::Seq(base_items), Value::Seq(overlay_items))
            if depth == 1 && key.is_some_and(|k| APPENDING_LISTS.contains(&k)) =>
        {
            base_items.extend(overlay_items);
        }
        (_, value) => {
            base.value = value;
            base.origin = overlay.origin;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::node::{parse, Limits};

    fn doc(name: &str, text: &str) -> Node {
        parse(&Arc::from(name), text, &Limits::default()).expect("parses")
    }

    #[test]
    fn later_wins_maps_merge_lists_replace_or_append() {
        let mut base = doc(
            "a",
            "hostname: one\nssh_authorized_keys: [k1]\nberth:\n  modules: [m1]\n  sysctl: {x: 1, y: 2}\n",
        );
        merge(
            &mut base,
            doc(
                "b",
                "hostname: two\nssh_authorized_keys: [k2]\nberth:\n  modules: [m2]\n  sysctl: {y: 3}\n",
            ),
        );
        assert_eq!(
            base.to_json(),
            serde_json::json!({
                "hostname": "two",
                "ssh_authorized_keys": ["k1", "k2"],
                "berth": {"modules": ["m2"], "sysctl": {"x": 1, "y": 3}}
            })
        );
        let hostname = base.get("hostname").expect("hostname");
        assert_eq!(&*hostname.origin.source, "b");
        let x = base
            .get("berth")
            .and_then(|b| b.get("sysctl"))
            .and_then(|s| s.get("x"));
        assert_eq!(x.map(|n| &*n.origin.source), Some("a"));
    }

    #[test]
    fn null_removes_an_earlier_value() {
        let mut base = doc(
            "a",
            "berth:\n  services:\n    ntp: {image: x}\n    docker: {image: y}\n",
        );
        merge(&mut base, doc("b", "berth:\n  services:\n    ntp: null\n"));
        assert_eq!(
            base.to_json(),
            serde_json::json!({"berth": {"services": {"docker": {"image": "y"}}}})
        );
    }

    #[test]
    fn nested_lists_named_like_appending_ones_still_replace() {
        let mut base = doc("a", "users: [{name: u, ssh_authorized_keys: [k1]}]\n");
        merge(
            &mut base,
            doc("b", "users: [{name: u, ssh_authorized_keys: [k2]}]\n"),
        );
        assert_eq!(
            base.to_json(),
            serde_json::json!({"users": [{"name": "u", "ssh_authorized_keys": ["k2"]}]})
        );
    }
}
