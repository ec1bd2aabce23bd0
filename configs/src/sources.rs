//! Where config sources live on a Berth system, in merge order (later wins):
//! built-in defaults → OEM → datasource user-data (cached on state) → local
//! changes (`berth config set`) → kernel command line.
//!
//! Every path is under a root directory, `/` on a running system, so the same
//! code works on a build host and in tests.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::node::Node;
use crate::{cmdline, defaults, load, parse_document, Document, Loaded};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot render the config as YAML: {0}")]
    Render(#[from] serde_yaml::Error),
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

    /// Changes made on the machine with `berth config set|merge`.
    pub fn local(&self) -> PathBuf {
        self.root.join("var/lib/berth/config/local.yml")
    }

    pub fn cmdline(&self) -> PathBuf {
        self.root.join("proc/cmdline")
    }

    /// Every source that exists, earliest first.
    pub fn documents(&self) -> Result<Vec<Document>, Error> {
        let mut docs = vec![defaults()];
        for path in [self.oem(), self.user_data(), self.local()] {
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

    pub fn load(&self) -> Result<Loaded, Error> {
        Ok(load(self.documents()?))
    }

    /// The local-changes document (empty when there is none yet).
    pub fn local_document(&self) -> Result<Document, Error> {
        let path = self.local();
        let text = read_optional(&path)?.unwrap_or_else(|| "#cloud-config\n".into());
        Ok(parse_document(&source_name(&path), &text))
    }

    /// Replaces the local-changes file atomically (a crash leaves the old or the new file).
    pub fn write_local(&self, tree: &Node) -> Result<(), Error> {
        let path = self.local();
        let text = format!("#cloud-config\n{}", serde_yaml::to_string(&tree.to_yaml())?);
        write_atomic(&path, text.as_bytes())
    }
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

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config")
    ));
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
