//! Where config sources live on a Berth system, in merge order (later wins):
//! built-in defaults → OEM → datasource user-data (cached on state) → local
//! changes (`berth config set`) → kernel command line.
//!
//! Every path is under a root directory, `/` on a running system, so the same
//! code works on a build host and in tests.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::{Diagnostic, Origin};
use crate::node::Node;
use crate::{cmdline, defaults, load, parse_compose, parse_document, Document, Loaded};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot lock {}: {source}", path.display())]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot render {what} as YAML: {source}")]
    Render {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// The config files of a Berth system rooted at `root`.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Config shipped on the OEM partition by whoever built the disk image.
    pub fn oem(&self) -> PathBuf {
        self.root.join("oem/cloud-config.yml")
    }

    /// The last user-data a datasource delivered, cached on the state partition.
    pub fn user_data(&self) -> PathBuf {
        self.root.join("var/lib/berth/config/user-data.yml")
    }

    /// The last user-data that loaded without errors: what stands in for
    /// [`Layout::user_data`] when a datasource delivers a document with
    /// errors, so a bad change never takes the machine back to the defaults
    /// (and out of reach: the SSH keys are in there).
    pub fn user_data_good(&self) -> PathBuf {
        self.root.join("var/lib/berth/config/user-data.good.yml")
    }

    /// The last NoCloud `meta-data` (instance id, `local-hostname`), cached on
    /// the state partition next to the user-data it came with.
    pub fn meta_data(&self) -> PathBuf {
        self.root.join("var/lib/berth/config/meta-data.yml")
    }

    /// The instance id the cached user-data and meta-data belong to: a disk
    /// that boots with another is a new instance ([`crate::datasource`]).
    pub fn instance_id(&self) -> PathBuf {
        self.root.join("var/lib/berth/config/instance-id")
    }

    /// User-data's `#!` scripts, cached with it.
    pub fn scripts(&self) -> PathBuf {
        self.root.join("var/lib/berth/config/scripts")
    }

    /// The instance id whose scripts have run (they run once per instance).
    pub fn scripts_done(&self) -> PathBuf {
        self.root.join("var/lib/berth/config/scripts.done")
    }

    /// What this boot's datasource probe tried and found (`berth config sources`).
    pub fn datasource_report(&self) -> PathBuf {
        self.root.join("run/berth/datasources.json")
    }

    /// The SSH host keys, made once per instance by the console.
    pub fn ssh_host_keys(&self) -> PathBuf {
        self.root.join("var/lib/berth/ssh")
    }

    /// Changes made on the machine with `berth config set|merge`.
    pub fn local(&self) -> PathBuf {
        self.root.join("var/lib/berth/config/local.yml")
    }

    /// Takes the lock every change of [`Layout::local`] holds from reading
    /// it to writing it back, so two `berth config set` at once cannot lose
    /// one of the changes. Blocks until the lock is free; released on drop.
    pub fn lock_local(&self) -> Result<FileLock, Error> {
        FileLock::exclusive(&self.root.join("var/lib/berth/config/.local.yml.lock"))
    }

    pub fn cmdline(&self) -> PathBuf {
        self.root.join("proc/cmdline")
    }

    /// The catalogue of optional services shipped with the OS, one compose-style
    /// file per service (`NAME.yml`), switched on by `berth.services_include`.
    pub fn catalogue(&self) -> PathBuf {
        self.root.join("usr/share/berth/services")
    }

    /// Every source that exists, earliest first, with the service files that
    /// `berth.services_include` switches on and the chosen console and engine
    /// ([`crate::choice`]) placed right after the defaults (so every other
    /// source can still change what they declare).
    pub fn documents(&self) -> Result<Vec<Document>, Error> {
        let mut docs = self.sources()?;
        // Read from the documents themselves, not a validated merge: a source that
        // changes an included service must not lose the include that brings it.
        let mut switches = std::collections::BTreeMap::new();
        for doc in &docs {
            let path = ["berth".to_string(), "services_include".to_string()];
            let found = doc
                .tree
                .as_ref()
                .and_then(|t| crate::keypath::lookup(t, &path));
            for entry in found.and_then(Node::as_map).unwrap_or_default() {
                let on = entry.value.as_scalar().is_some_and(|v| {
                    matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "on")
                });
                switches.insert(entry.key.clone(), on);
            }
        }
        let enabled: Vec<String> = switches
            .into_iter()
            .filter_map(|(name, on)| on.then_some(name))
            .collect();
        let included: Vec<Document> = enabled.iter().map(|name| self.service_file(name)).collect();
        let after_included = 1 + included.len();
        docs.splice(1..1, included);
        self.splice_choices(&mut docs, after_included);
        Ok(docs)
    }

    /// Where `services_include` key `name` points: a path, or the catalogue.
    pub fn service_file_path(&self, name: &str) -> Option<PathBuf> {
        if name.starts_with("http://") || name.starts_with("https://") {
            return None;
        }
        Some(match name.strip_prefix('/') {
            Some(path) => self.root.join(path),
            None => self.catalogue().join(format!("{name}.yml")),
        })
    }

    fn service_file(&self, name: &str) -> Document {
        let missing = |source: Arc<str>, message: String| Document {
            diagnostics: vec![Diagnostic::error(
                Some(Origin::new(&source, 1, 1)),
                format!("berth.services_include.{name}"),
                message,
            )],
            source,
            tree: None,
        };
        let Some(path) = self.service_file_path(name) else {
            return missing(
                Arc::from(name),
                "service files are read from the catalogue or a local path; URLs are not fetched yet".into(),
            );
        };
        let source = source_name(&path);
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_compose(&source, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !name.starts_with('/') => missing(
                source,
                format!(
                    "there is no service `{name}` in the catalogue ({})",
                    self.catalogue().display()
                ),
            ),
            Err(e) => missing(source, format!("cannot read the service file: {e}")),
        }
    }

    /// The config sources proper, without included service files.
    fn sources(&self) -> Result<Vec<Document>, Error> {
        let mut docs = vec![defaults()];
        if let Some(text) = read_optional(&self.oem())? {
            docs.push(parse_document(&source_name(&self.oem()), &text));
        }
        if let Some(text) = read_optional(&self.meta_data())? {
            docs.extend(meta_data_document(&source_name(&self.meta_data()), &text));
        }
        for path in [self.user_data(), self.local()] {
            if let Some(text) = read_optional(&path)? {
                docs.push(parse_document(&source_name(&path), &text));
            }
        }
        if let Some(text) = read_optional(&self.cmdline())? {
            let parsed = cmdline::parse(&text);
            docs.extend(parsed.embedded);
            docs.push(Document {
                source: Arc::from(cmdline::SOURCE),
                tree: Some(parsed.tree),
                diagnostics: parsed.diagnostics,
            });
        }
        Ok(docs)
    }

    /// Every source merged and validated. When the user-data is left out for
    /// its errors and a last good copy exists ([`Layout::user_data_good`]),
    /// that copy takes its place; the errors are still reported, with a
    /// warning saying what stood in.
    pub fn load(&self) -> Result<Loaded, Error> {
        let docs = self.documents()?;
        let user_data = source_name(&self.user_data());
        let has_user_data = docs.iter().any(|d| d.source == user_data);
        let loaded = load(docs.clone());
        if !has_user_data || !loaded.rejected.contains(&user_data) {
            return Ok(loaded);
        }
        let good_path = self.user_data_good();
        let Some(text) = read_optional(&good_path)? else {
            return Ok(loaded);
        };
        let good = parse_document(&source_name(&good_path), &text);
        let docs = docs
            .into_iter()
            .map(|d| {
                if d.source == user_data {
                    good.clone()
                } else {
                    d
                }
            })
            .collect();
        let mut fallback = load(docs);
        // The bad document's own findings, then what was done about them.
        let mut diagnostics: Vec<Diagnostic> = loaded
            .diagnostics
            .into_iter()
            .filter(|d| d.origin.as_ref().is_some_and(|o| o.source == user_data))
            .collect();
        diagnostics.push(Diagnostic::warning(
            Some(Origin::new(&user_data, 1, 1)),
            "user-data",
            format!(
                "{user_data} has errors and is left out; the last good user-data ({}) is used in its place",
                good.source
            ),
        ));
        diagnostics.append(&mut fallback.diagnostics);
        fallback.diagnostics = diagnostics;
        fallback.rejected.push(user_data);
        Ok(fallback)
    }

    /// After a datasource's user-data was cached: keeps a copy of it as the
    /// last good user-data when it loads without errors. Whether it did.
    pub fn keep_good_user_data(&self) -> Result<bool, Error> {
        let path = self.user_data();
        let Some(text) = read_optional(&path)? else {
            return Ok(false);
        };
        // Kept because it validated: the same text again (a boot with the
        // same seed) is not validated again.
        if read_optional(&self.user_data_good())?.as_deref() == Some(text.as_str()) {
            return Ok(true);
        }
        let loaded = load(self.documents()?);
        if loaded.rejected.contains(&source_name(&path)) {
            return Ok(false);
        }
        write_atomic(&self.user_data_good(), text.as_bytes())?;
        Ok(true)
    }

    /// The local-changes document (empty when there is none yet).
    pub fn local_document(&self) -> Result<Document, Error> {
        let path = self.local();
        let text = read_optional(&path)?.unwrap_or_else(|| "#cloud-config\n".into());
        Ok(parse_document(&source_name(&path), &text))
    }

    /// Replaces the local-changes file atomically (a crash leaves the old or
    /// the new file); callers that read it first hold [`Layout::lock_local`].
    pub fn write_local(&self, tree: &Node) -> Result<(), Error> {
        write_atomic(&self.local(), render(tree).as_bytes())
    }
}

/// A config tree as a `#cloud-config` document.
pub fn render(tree: &Node) -> String {
    format!("#cloud-config\n{}", crate::emit::to_yaml(tree))
}

/// What a datasource's meta-data says about the config: its `local-hostname`
/// is the hostname unless user-data (which merges later) sets one, as in
/// cloud-init, and its `public-keys` (a list, one key, or a map of named keys,
/// as NoCloud and the clouds give them) are the default user's SSH keys,
/// added to those user-data lists; a `network` mapping (a cloud's static
/// network config, cached by a datasource) is `berth.network`. Meta-data that
/// does not parse is ignored with a warning.
pub fn meta_data_document(source: &Arc<str>, text: &str) -> Option<Document> {
    use crate::node::{Entry, Value};
    let mut diagnostics = Vec::new();
    let tree =
        match crate::node::parse_with_warnings(source, text, &Default::default(), &mut diagnostics)
        {
            Ok(tree) => tree,
            Err(mut d) => {
                d.severity = crate::Severity::Warning;
                return Some(Document {
                    source: Arc::clone(source),
                    tree: None,
                    diagnostics: vec![d],
                });
            }
        };
    let map = tree.as_map()?;
    let mut entries = Vec::new();
    if let Some(entry) = map
        .iter()
        .find(|e| e.key == "local-hostname" || e.key == "hostname")
        .filter(|e| e.value.as_scalar().is_some())
    {
        entries.push(Entry::new(
            "hostname",
            entry.key_origin.clone(),
            entry.value.clone(),
        ));
    }
    if let Some(entry) = map.iter().find(|e| e.key == "public-keys") {
        let keys: Vec<Node> = match &entry.value.value {
            Value::Scalar { .. } => vec![entry.value.clone()],
            Value::Seq(items) => items
                .iter()
                .filter(|n| n.as_scalar().is_some())
                .cloned()
                .collect(),
            Value::Map(named) => named
                .iter()
                .filter(|e| e.value.as_scalar().is_some())
                .map(|e| e.value.clone())
                .collect(),
            Value::Null => Vec::new(),
        };
        if !keys.is_empty() {
            entries.push(Entry::new(
                "ssh_authorized_keys",
                entry.key_origin.clone(),
                Node::new(Value::Seq(keys), entry.value.origin.clone()),
            ));
        }
    }
    // A cloud's static network config (cached by a datasource in
    // `berth.network`'s shape): netconf applies it like user-data's.
    if let Some(entry) = map
        .iter()
        .find(|e| e.key == "network")
        .filter(|e| e.value.as_map().is_some())
    {
        let network = Entry::new("network", entry.key_origin.clone(), entry.value.clone());
        entries.push(Entry::new(
            "berth",
            entry.key_origin.clone(),
            Node::new(Value::Map(vec![network]), entry.value.origin.clone()),
        ));
    }
    if entries.is_empty() {
        return None;
    }
    Some(Document {
        source: Arc::clone(source),
        tree: Some(Node::new(Value::Map(entries), tree.origin.clone())),
        diagnostics: Vec::new(),
    })
}

/// The names of a catalogue's entries (`NAME.yml` files in `dir`), sorted;
/// none when the directory is missing.
pub fn catalogue_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".yml").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

pub fn source_name(path: &Path) -> Arc<str> {
    Arc::from(path.display().to_string())
}

fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces `path` with `bytes` atomically (a crash leaves the old or the
/// new file), readable by root only: config sources can hold secrets
/// (passwords, registry credentials, write_files contents).
///
/// Written by the one atomic writer ([`berth_sys::atomic`]: a unique
/// temporary file, mode 0600 from the start, fsynced, renamed, directory
/// fsynced). The directory is made 0700 (created so, or tightened when it is
/// looser). Concurrent writers never share a temporary file; a
/// read-modify-write of the same file also needs a lock ([`Layout::lock_local`]).
/// A file that already holds `bytes` is left as it is: nothing is synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir).map_err(err)?;
    berth_sys::atomic::write_if_changed(path, bytes, &berth_sys::atomic::Options::private())
        .map(|_| ())
        .map_err(err)
}

/// Creates `dir` with mode 0700 (its missing parents with the usual 0755),
/// or tightens it to 0700 when it exists with group or other permissions.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// An exclusive flock(2) on a lock file, released when dropped (or when the
/// process dies: a killed `berth config set` leaves no stale lock).
#[derive(Debug)]
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    /// Opens (creating, 0600, in a 0700 directory) and locks `path`, waiting
    /// for whoever holds it.
    pub fn exclusive(path: &Path) -> Result<FileLock, Error> {
        let err = |source| Error::Lock {
            path: path.to_path_buf(),
            source,
        };
        private_dir(path.parent().unwrap_or(Path::new("."))).map_err(err)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(FileLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(err(e.into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn config_files_are_private_to_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(root.path());
        let local = layout.local();
        let dir = local.parent().expect("dir").to_path_buf();
        // A directory and a file an older Berth left readable by everyone.
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(&local, "#cloud-config\n").expect("write");
        std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        write_atomic(&local, b"#cloud-config\nhostname: a\n").expect("write");
        assert_eq!(mode(&local), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            std::fs::read_to_string(&local).expect("read"),
            "#cloud-config\nhostname: a\n"
        );
        // A fresh directory is made 0700, the user-data cache 0600.
        let fresh = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(fresh.path());
        write_atomic(&layout.user_data(), b"#cloud-config\n").expect("write");
        assert_eq!(mode(&layout.user_data()), 0o600);
        assert_eq!(mode(layout.user_data().parent().expect("dir")), 0o700);
        // Only the config directory itself: /var/lib stays traversable.
        assert_eq!(mode(&fresh.path().join("var/lib")), 0o755 & !umask());
        let lock = layout.lock_local().expect("lock");
        drop(lock);
        let names: Vec<String> = std::fs::read_dir(layout.user_data().parent().expect("dir"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        assert_eq!(
            mode(&fresh.path().join("var/lib/berth/config/.local.yml.lock")),
            0o600
        );
    }

    #[test]
    fn the_local_lock_excludes_a_second_holder() {
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(root.path());
        let first = layout.lock_local().expect("lock");
        let (tx, rx) = std::sync::mpsc::channel();
        let second = {
            let layout = layout.clone();
            std::thread::spawn(move || {
                let lock = layout.lock_local().expect("second lock");
                let _ = tx.send(());
                drop(lock);
            })
        };
        // The second holder is blocked in flock(2) until the first lets go:
        // nothing arrives while the first holds it.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(first);
        rx.recv().expect("the second holder got the lock");
        second.join().expect("join");
    }

    /// The process' umask (read by setting it back).
    fn umask() -> u32 {
        let dir = tempfile::tempdir().expect("tempdir");
        let probe = dir.path().join("probe");
        std::fs::DirBuilder::new()
            .mode(0o777)
            .create(&probe)
            .expect("mkdir");
        0o777 & !mode(&probe)
    }
}
