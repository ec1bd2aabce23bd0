//! Berth's configuration: `#cloud-config` documents from several sources, parsed
//! with positions, translated (`rancher:` → `berth:`), merged in a fixed order,
//! and validated into one [`CloudConfig`].
//!
//! ```text
//! text ──parse_document──▶ Document (tree + diagnostics) ──load──▶ Loaded (config + merged tree)
//! ```
//!
//! A document with errors is rejected as a whole and the rest still load — a bad
//! user-data must never stop a boot (ARCHITECTURE.md §6).

use std::sync::Arc;

pub mod choice;
pub mod cmdline;
pub mod compat;
pub mod compose;
pub mod datasource;
pub mod de;
pub mod diag;
pub mod emit;
pub mod forms;
pub mod kernel_args;
pub mod keypath;
pub mod local;
pub mod merge;
pub mod model;
pub mod node;
pub mod normalize;
pub mod schema;
pub mod sources;
pub mod userdata;
pub mod validate;

pub use diag::{Diagnostic, Origin, Severity};
pub use model::CloudConfig;
pub use node::Node;
pub use sources::{Error, Layout};

/// The defaults built into every Berth image.
pub const DEFAULT_YML: &str = include_str!("../default.yml");

/// The name the built-in defaults go by in diagnostics and origins.
pub const DEFAULTS_SOURCE: &str = "default.yml (built in)";

/// One parsed config source.
#[derive(Debug, Clone)]
pub struct Document {
    pub source: Arc<str>,
    /// The normalized tree, when the text parsed at all, less any values of the wrong type.
    pub tree: Option<Node>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Document {
    /// Usable: it parsed and has no errors.
    pub fn is_valid(&self) -> bool {
        self.tree.is_some() && !diag::has_errors(&self.diagnostics)
    }

    /// This document's errors, one rendered line each.
    pub fn error_messages(&self) -> Vec<String> {
        diag::error_messages(&self.diagnostics)
    }
}

/// Parses and checks one document on its own: syntax, types, unknown keys.
pub fn parse_document(source: &Arc<str>, text: &str) -> Document {
    let mut diagnostics = Vec::new();
    let first_line = text.lines().next().unwrap_or_default().trim_end();
    if first_line.starts_with("#!") {
        diagnostics.push(Diagnostic::error(
            Some(Origin::new(source, 1, 1)),
            "",
            "this is a script, not a cloud-config; Berth runs commands from `runcmd:` instead",
        ));
        return Document {
            source: Arc::clone(source),
            tree: None,
            diagnostics,
        };
    }
    if !text.trim().is_empty() && first_line != "#cloud-config" {
        diagnostics.push(Diagnostic::warning(
            Some(Origin::new(source, 1, 1)),
            "",
            "the first line is not `#cloud-config`; cloud-init would ignore this document",
        ));
    }
    let tree =
        match node::parse_with_warnings(source, text, &node::Limits::default(), &mut diagnostics) {
            Ok(tree) => tree,
            Err(d) => {
                diagnostics.push(d);
                return Document {
                    source: Arc::clone(source),
                    tree: None,
                    diagnostics,
                };
            }
        };
    finish_document(source, tree, diagnostics)
}

/// Parses a compose-style service file (`services: {NAME: {...}}` at the top,
/// as `docker compose` and RancherOS's service catalogue write them) into a
/// document that sets those services under `berth.services`. Positions stay
/// those of the file, so findings point into it.
pub fn parse_compose(source: &Arc<str>, text: &str) -> Document {
    let mut diagnostics = Vec::new();
    let tree =
        match node::parse_with_warnings(source, text, &node::Limits::default(), &mut diagnostics) {
            Ok(tree) => tree,
            Err(d) => {
                diagnostics.push(d);
                return Document {
                    source: Arc::clone(source),
                    tree: None,
                    diagnostics,
                };
            }
        };
    let Some(entries) = tree.as_map() else {
        return finish_document(source, tree, diagnostics);
    };
    let mut services = None;
    for entry in entries {
        match entry.key.as_str() {
            "services" => services = Some(entry.value.clone()),
            // Compose's own bookkeeping; Berth has one network and no top-level volumes.
            "version" | "name" => {}
            other => diagnostics.push(Diagnostic::warning(
                Some(entry.key_origin.clone()),
                other,
                format!("`{other}` is not used: a service file contributes only its `services`"),
            )),
        }
    }
    let Some(services) = services else {
        diagnostics.push(Diagnostic::error(
            Some(tree.origin.clone()),
            "",
            "a service file needs a `services:` mapping at the top level",
        ));
        return Document {
            source: Arc::clone(source),
            tree: None,
            diagnostics,
        };
    };
    let path = ["berth".to_string(), "services".to_string()];
    finish_document(source, keypath::build(&path, services), diagnostics)
}

/// Reads a YAML file that is not a cloud-config (an image recipe, say) into
/// `T`, with the same parser and limits: every finding (syntax, wrong types,
/// unknown keys) is located in `source` by line and column.
pub fn parse_typed<T: serde::de::DeserializeOwned>(
    source: &str,
    text: &str,
) -> Result<T, Vec<Diagnostic>> {
    let source: Arc<str> = Arc::from(source);
    let mut findings = Vec::new();
    let tree = node::parse_with_warnings(&source, text, &node::Limits::default(), &mut findings)
        .map_err(|d| vec![d])?;
    let collector = de::Collector::default();
    let value = de::from_node::<T>(&tree, &collector);
    findings.extend(collector.into_inner());
    match value {
        Ok(value) if !diag::has_errors(&findings) => Ok(value),
        Ok(_) => Err(findings.into_iter().filter(Diagnostic::is_error).collect()),
        Err(e) => {
            findings.retain(Diagnostic::is_error);
            findings.push(e.into_diagnostic());
            Err(findings)
        }
    }
}

/// Normalizes and type-checks a parsed document.
fn finish_document(
    source: &Arc<str>,
    mut tree: Node,
    mut diagnostics: Vec<Diagnostic>,
) -> Document {
    if tree.as_map().is_none() {
        diagnostics.push(Diagnostic::error(
            Some(tree.origin.clone()),
            "",
            "a cloud-config must be a mapping of keys (like `hostname: x`) at the top level",
        ));
        return Document {
            source: Arc::clone(source),
            tree: None,
            diagnostics,
        };
    }
    normalize::normalize(&mut tree, &mut diagnostics);
    diagnostics.extend(check_types(&mut tree));
    Document {
        source: Arc::clone(source),
        tree: Some(tree),
        diagnostics,
    }
}

/// Type and key findings for a tree. A value of the wrong type is reported and
/// removed, and the check repeats, so one run reports every such error (not just
/// the first) and leaves the tree holding only well-typed values.
fn check_types(tree: &mut Node) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut previous: Option<Vec<String>> = None;
    // Each round removes one node; past 100 errors the document is rejected anyway.
    for _ in 0..100 {
        let collector = de::Collector::default();
        let result = de::from_node::<CloudConfig>(tree, &collector);
        let findings = collector.into_inner();
        match result {
            Ok(_) => {
                out.extend(findings);
                break;
            }
            Err(e) => {
                let keys = e.keys.clone();
                if previous.as_ref() != Some(&keys) {
                    out.push(e.into_diagnostic());
                }
                previous = Some(keys.clone());
                if keys.is_empty() || !keypath::remove(tree, &keys) {
                    out.extend(findings);
                    break;
                }
            }
        }
    }
    out.sort_by(|a, b| {
        let pos = |d: &Diagnostic| d.origin.as_ref().map(|o| (o.line, o.column));
        pos(a).cmp(&pos(b))
    });
    out.dedup();
    out
}

/// Every finding for `documents` merged in order, without leaving any out: what
/// `berth config validate` shows. (At boot, [`load`] leaves bad documents out.)
pub fn check(documents: Vec<Document>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut tree: Option<Node> = None;
    for doc in documents {
        out.extend(doc.diagnostics);
        if let Some(t) = doc.tree {
            match &mut tree {
                None => tree = Some(t),
                Some(base) => merge::merge(base, t),
            }
        }
    }
    if let Some(tree) = tree {
        let collector = de::Collector::default();
        if let Ok(config) = de::from_node::<CloudConfig>(&tree, &collector) {
            out.extend(validate::validate(&config, &tree));
        }
    }
    out
}

/// The built-in defaults as a document.
pub fn defaults() -> Document {
    parse_document(&Arc::from(DEFAULTS_SOURCE), DEFAULT_YML)
}

/// The result of loading every source.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: CloudConfig,
    /// The merged tree: every value with the origin that set it.
    pub tree: Node,
    pub diagnostics: Vec<Diagnostic>,
    /// Sources left out because they had errors.
    pub rejected: Vec<Arc<str>>,
}

impl Loaded {
    /// Every error found while loading, one rendered line each.
    pub fn error_messages(&self) -> Vec<String> {
        diag::error_messages(&self.diagnostics)
    }
}

/// Merges `documents` (earliest first; later win) into one validated config.
///
/// Documents with errors are left out. If the merged result still has errors
/// (a `depends_on` naming a service no source defines, a cycle across sources),
/// the latest source blamed for them is left out too, until what remains is
/// valid; the built-in defaults are never left out.
pub fn load(documents: Vec<Document>) -> Loaded {
    let mut diagnostics = Vec::new();
    let mut rejected = Vec::new();
    let mut accepted = Vec::new();
    for doc in documents {
        diagnostics.extend(doc.diagnostics.iter().cloned());
        match doc.tree {
            Some(tree) if !diag::has_errors(&doc.diagnostics) => accepted.push((doc.source, tree)),
            _ => rejected.push(doc.source),
        }
    }
    loop {
        let mut tree = match accepted.first() {
            Some((_, first)) => first.clone(),
            None => Node::empty_map(Origin::new(&Arc::from(DEFAULTS_SOURCE), 1, 1)),
        };
        for (_, doc) in accepted.iter().skip(1) {
            merge::merge(&mut tree, doc.clone());
        }
        let collector = de::Collector::default();
        let (config, mut findings) = match de::from_node::<CloudConfig>(&tree, &collector) {
            Ok(config) => {
                let findings = validate::validate(&config, &tree);
                (config, findings)
            }
            Err(e) => (CloudConfig::default(), vec![e.into_diagnostic()]),
        };
        findings.extend(
            collector
                .into_inner()
                .into_iter()
                .filter(Diagnostic::is_error),
        );
        let blamed = accepted.iter().rposition(|(source, _)| {
            &**source != DEFAULTS_SOURCE
                && findings
                    .iter()
                    .filter(|d| d.is_error())
                    .any(|d| d.origin.as_ref().is_some_and(|o| &o.source == source))
        });
        match blamed {
            Some(index) if findings.iter().any(Diagnostic::is_error) => {
                let (source, _) = accepted.remove(index);
                diagnostics.extend(findings.into_iter().filter(|d| {
                    d.is_error() && d.origin.as_ref().is_some_and(|o| o.source == source)
                }));
                rejected.push(source);
            }
            _ => {
                diagnostics.extend(findings);
                for source in &rejected {
                    diagnostics.push(Diagnostic::note(
                        None,
                        "",
                        format!("`{source}` was rejected because of the errors above; the config is loaded without it"),
                    ));
                }
                return Loaded {
                    config,
                    tree,
                    diagnostics,
                    rejected,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let loaded = load(vec![defaults()]);
        assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
        for name in ["network", "ntp", "console", "docker"] {
            assert!(loaded.config.berth.services.contains_key(name), "{name}");
        }
    }
}
