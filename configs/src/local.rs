//! Changing `local.yml` (what `berth config set|merge` and `berth service
//! enable|disable` write): the change is checked against every other source
//! and written only if the whole system config stays valid with it.

use crate::diag::Diagnostic;
use crate::node::Node;
use crate::sources::{source_name, write_atomic, Error, FileLock, Layout};
use crate::{cmdline, load, parse_document, Document};

/// What [`commit_local`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Commit {
    /// `local.yml` holds the new tree; these are the warnings it raised.
    Written { warnings: Vec<Diagnostic> },
    /// The new tree would make the config invalid, for these errors (each
    /// located in the new `local.yml`); nothing was written.
    Rejected { errors: Vec<Diagnostic> },
}

/// Writes `local` as the new local config if the whole system config stays
/// valid with it. Takes the [`Layout::lock_local`] guard the caller has held
/// since it read the old local config, so a concurrent change waits for this
/// one instead of being lost.
pub fn commit_local(layout: &Layout, local: &Node, _held: &FileLock) -> Result<Commit, Error> {
    let local_path = layout.local();
    let source = source_name(&local_path);
    let text = crate::sources::render(local);
    let new_local = parse_document(&source, &text);
    let mut docs: Vec<Document> = layout
        .documents()?
        .into_iter()
        .filter(|d| d.source != source)
        .collect();
    // Local changes sit just before the kernel command line in the merge order.
    let at = docs
        .iter()
        .position(|d| &*d.source == cmdline::SOURCE)
        .unwrap_or(docs.len());
    docs.insert(at, new_local);
    let loaded = load(docs);
    let ours = |d: &&Diagnostic| d.origin.as_ref().is_some_and(|o| o.source == source);
    if loaded.rejected.contains(&source) {
        let errors = loaded
            .diagnostics
            .iter()
            .filter(ours)
            .filter(|d| d.is_error())
            .cloned()
            .collect();
        return Ok(Commit::Rejected { errors });
    }
    let warnings = loaded
        .diagnostics
        .iter()
        .filter(ours)
        .filter(|d| d.severity == crate::Severity::Warning)
        .cloned()
        .collect();
    write_atomic(&local_path, text.as_bytes())?;
    Ok(Commit::Written { warnings })
}
