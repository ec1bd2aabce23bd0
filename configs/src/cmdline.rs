//! The kernel command line as a config source.
//!
//! `berth.hostname=x berth.network.interfaces.eth0.dhcp=true` set single keys
//! (values are YAML scalars or flow collections: `berth.modules=[a,b]`), a bare
//! `berth.KEY` means `true`, `berth.cloud_config=<base64>` carries a whole
//! document, and `berth.cloud_config_url=URL` names a user-data URL. `rancher.*`
//! keys are accepted as RancherOS wrote them. Keys only PID 1 uses while booting
//! (`berth.debug`, `berth.rescue`, `berth.slot`, `berth.wait`) are returned apart.

use std::sync::Arc;

use base64::Engine as _;

use crate::diag::{Diagnostic, Origin};
use crate::keypath;
use crate::merge::merge;
use crate::node::{self, Entry, Limits, Node, Value};
use crate::Document;

/// Name of the kernel command line as a config source.
pub const SOURCE: &str = "kernel cmdline";

/// Name of the document carried by `berth.cloud_config=`.
pub const EMBEDDED_SOURCE: &str = "kernel cmdline (berth.cloud_config)";

/// Boot switches read by PID 1, not part of the cloud-config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    pub debug: bool,
    pub rescue: bool,
    /// The installed slot GRUB booted (`A` or `B`).
    pub slot: Option<String>,
    /// `berth.wait=SECS`: how long stage 1 waits for the boot medium to appear.
    pub wait: Option<u64>,
}

#[derive(Debug)]
pub struct Cmdline {
    /// The document `berth.cloud_config=` carries: a source of its own, so an
    /// error in it leaves out only it, not the single keys beside it.
    pub embedded: Option<Document>,
    /// The config the single keys set, already normalized.
    pub tree: Node,
    pub boot: BootParams,
    pub diagnostics: Vec<Diagnostic>,
}

/// Splits the command line into `(byte offset, word)`, honouring double quotes
/// the way the kernel does (`key="a b"`).
fn words(cmdline: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in cmdline.char_indices() {
        if c == '"' {
            quoted = !quoted;
            start.get_or_insert(i);
            continue;
        }
        if c.is_whitespace() && !quoted {
            if let Some(s) = start.take() {
                out.push((s, std::mem::take(&mut current)));
            }
            continue;
        }
        start.get_or_insert(i);
        current.push(c);
    }
    if let Some(s) = start {
        out.push((s, current));
    }
    out
}

pub fn parse(cmdline: &str) -> Cmdline {
    let source: Arc<str> = Arc::from(SOURCE);
    let mut tree = Node::empty_map(Origin::new(&source, 1, 1));
    let mut boot = BootParams::default();
    let mut diagnostics = Vec::new();
    let mut embedded = None;

    for (offset, word) in words(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (word.clone(), None),
        };
        let (section, rest) = match key.split_once('.') {
            Some((s @ ("berth" | "rancher"), rest)) => (s, rest.to_string()),
            _ => continue,
        };
        let key_origin = Origin::new(&source, 1, offset + 1);
        let value_origin = Origin::new(&source, 1, offset + key.len() + 2);
        match (section, rest.as_str()) {
            ("berth", "debug") => boot.debug = value.as_deref().is_none_or(is_true),
            ("berth", "rescue") => boot.rescue = value.as_deref().is_none_or(is_true),
            ("berth", "slot") => boot.slot = value,
            ("berth", "wait") => match value.as_deref().map(str::parse::<u64>) {
                Some(Ok(secs)) => boot.wait = Some(secs),
                _ => diagnostics.push(Diagnostic::error(
                    Some(value_origin),
                    key.clone(),
                    "berth.wait takes a number of seconds, e.g. berth.wait=60",
                )),
            },
            ("berth", "cloud_config") => {
                match decode_cloud_config(value.as_deref().unwrap_or_default()) {
                    Ok(text) => {
                        let name: Arc<str> = Arc::from(EMBEDDED_SOURCE);
                        embedded = Some(crate::parse_document(&name, &text));
                    }
                    Err(e) => diagnostics.push(Diagnostic::error(
                        Some(value_origin),
                        key.clone(),
                        e.to_string(),
                    )),
                }
            }
            ("berth", "cloud_config_url") => {
                let url = value.unwrap_or_default();
                let list = Node::new(
                    Value::Seq(vec![Node::string(
                        format!("url:{url}"),
                        value_origin.clone(),
                    )]),
                    value_origin,
                );
                merge(
                    &mut tree,
                    keypath::build(&["berth".into(), "datasources".into()], list),
                );
            }
            _ => {
                let segments = match keypath::split(&rest) {
                    Ok(s) => s,
                    Err(e) => {
                        diagnostics.push(Diagnostic::error(
                            Some(key_origin),
                            key.clone(),
                            e.to_string(),
                        ));
                        continue;
                    }
                };
                let value_node = match value {
                    None => Node::new(
                        Value::Scalar {
                            text: "true".into(),
                            quoted: false,
                        },
                        value_origin,
                    ),
                    Some(text) => match parse_value(&source, &text, &value_origin) {
                        Ok(node) => node,
                        Err(d) => {
                            diagnostics.push(Diagnostic {
                                path: key.clone(),
                                ..d
                            });
                            continue;
                        }
                    },
                };
                let mut path = Vec::with_capacity(segments.len() + 1);
                let top_level =
                    section == "berth" && keypath::TOP_LEVEL_KEYS.contains(&segments[0].as_str());
                if !top_level {
                    path.push(section.to_string());
                }
                path.extend(segments);
                let mut single = keypath::build(&path, value_node);
                if let Some(first) = single.as_map_mut().and_then(|m| m.first_mut()) {
                    first.key_origin = key_origin;
                }
                merge(&mut tree, single);
            }
        }
    }
    crate::normalize::normalize(&mut tree, &mut diagnostics);
    Cmdline {
        embedded,
        tree,
        boot,
        diagnostics,
    }
}

fn is_true(v: &str) -> bool {
    !matches!(v, "0" | "false" | "no" | "off")
}

/// Why `berth.cloud_config=` holds no config; the text is the diagnostic's.
#[derive(Debug, thiserror::Error)]
enum CloudConfigError {
    #[error("berth.cloud_config is not valid base64: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("berth.cloud_config does not decode to UTF-8 text")]
    NotUtf8(#[source] std::string::FromUtf8Error),
}

fn decode_cloud_config(value: &str) -> Result<String, CloudConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(value.trim()))
        .map_err(CloudConfigError::Base64)?;
    String::from_utf8(bytes).map_err(CloudConfigError::NotUtf8)
}

/// A value is YAML on one line; its positions are shifted to where it sits on the command line.
fn parse_value(source: &Arc<str>, text: &str, at: &Origin) -> Result<Node, Diagnostic> {
    let limits = Limits {
        max_bytes: 64 << 10,
        ..Limits::default()
    };
    let mut node = node::parse(source, text, &limits).map_err(|mut d| {
        d.origin = Some(shift(d.origin.as_ref().unwrap_or(at), at));
        d
    })?;
    // An empty value parses as an empty document; on the command line it means null.
    if text.is_empty() {
        return Ok(Node::null(at.clone()));
    }
    relocate(&mut node, at);
    Ok(node)
}

fn shift(origin: &Origin, at: &Origin) -> Origin {
    Origin::new(&origin.source, 1, at.column + origin.column - 1)
}

fn relocate(node: &mut Node, at: &Origin) {
    node.origin = shift(&node.origin, at);
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| relocate(n, at)),
        Value::Map(entries) => entries.iter_mut().for_each(|e: &mut Entry| {
            e.key_origin = shift(&e.key_origin, at);
            relocate(&mut e.value, at);
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_and_flags() {
        let c = parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 berth.hostname=box berth.network.interfaces.eth0.dhcp=true \
             berth.modules=[bonding,8021q] berth.sysctl.net.ipv4.ip_forward=1 berth.debug berth.slot=B",
        );
        assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
        assert_eq!(
            c.tree.to_json(),
            serde_json::json!({
                "hostname": "box",
                "berth": {
                    "network": {"interfaces": {"eth0": {"dhcp": true}}},
                    "modules": ["bonding", "8021q"],
                    "sysctl": {"net.ipv4.ip_forward": 1}
                }
            })
        );
        assert_eq!(
            c.boot,
            BootParams {
                debug: true,
                rescue: false,
                slot: Some("B".into()),
                wait: None,
            }
        );
        let hostname = c.tree.get("hostname").expect("hostname");
        assert_eq!(hostname.origin.column, 50);
    }

    #[test]
    fn wait_is_seconds() {
        let c = parse("berth.wait=90");
        assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
        assert_eq!(c.boot.wait, Some(90));
        assert_eq!(c.tree.to_json(), serde_json::json!({}));
        let c = parse("berth.wait=soon");
        assert_eq!(c.diagnostics.len(), 1);
        assert_eq!(c.boot.wait, None);
    }

    #[test]
    fn quoted_values_keep_spaces() {
        let c = parse("berth.ssh_authorized_keys=\"[ssh-ed25519 AAAA me@host]\"");
        assert_eq!(
            c.tree.to_json(),
            serde_json::json!({"ssh_authorized_keys": ["ssh-ed25519 AAAA me@host"]})
        );
    }

    #[test]
    fn base64_document_and_url() {
        let doc = base64::engine::general_purpose::STANDARD
            .encode("#cloud-config\nhostname: from-b64\nberth:\n  ntp: {servers: [a]}\n");
        let c = parse(&format!(
            "berth.cloud_config={doc} berth.cloud_config_url=http://127.0.0.1:8000/ud"
        ));
        assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
        let embedded = c.embedded.expect("embedded document");
        assert!(embedded.is_valid(), "{:?}", embedded.diagnostics);
        assert_eq!(
            embedded.tree.map(|t| t.to_json()),
            Some(serde_json::json!({"hostname": "from-b64", "berth": {"ntp": {"servers": ["a"]}}}))
        );
        assert_eq!(
            c.tree.to_json(),
            serde_json::json!({"berth": {"datasources": ["url:http://127.0.0.1:8000/ud"]}})
        );
    }

    #[test]
    fn bad_values_are_reported_with_their_column() {
        let c = parse("quiet berth.modules=[a,b berth.hostname=ok berth.cloud_config=%%%");
        assert_eq!(c.diagnostics.len(), 2, "{:?}", c.diagnostics);
        let first = &c.diagnostics[0];
        assert_eq!(first.path, "berth.modules");
        assert!(first.origin.as_ref().is_some_and(|o| o.column >= 21));
        assert_eq!(c.tree.to_json(), serde_json::json!({"hostname": "ok"}));
    }

    #[test]
    fn rancher_keys_translate() {
        let c = parse("rancher.state.dev=LABEL=RANCHER_STATE rancher.state.autoformat=[/dev/sda]");
        assert_eq!(
            c.tree.to_json(),
            serde_json::json!({"berth": {"state": {"dev": "LABEL=RANCHER_STATE", "autoformat": ["/dev/sda"]}}})
        );
    }
}
