//! `volumes` and `tmpfs`: compose's mount syntaxes.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;

use super::{mount, SpecError};

/// A volume: a bind from the host (or a named volume directory) into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: VolumeSource,
    pub target: String,
    pub read_only: bool,
    /// Other mount options (`nosuid`, `rslave`, …).
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host path.
    Path(PathBuf),
    /// A named volume, kept under `<state>/volumes/<name>`.
    Named(String),
}

impl Volume {
    /// Parses compose's short syntax: `SOURCE:TARGET[:OPTS]`, or a bare `TARGET`
    /// (an anonymous volume, named after the service and the target).
    pub fn parse(service_name: &str, text: &str) -> Result<Self, SpecError> {
        let err = |reason: &str| SpecError::Volume {
            service: service_name.into(),
            volume: text.into(),
            reason: reason.into(),
        };
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, opts) = match parts.as_slice() {
            [t] => (None, *t, None),
            [s, t] => (Some(*s), *t, None),
            [s, t, o] => (Some(*s), *t, Some(*o)),
            _ => return Err(err("write it as SOURCE:TARGET[:ro|rw]")),
        };
        if !target.starts_with('/') {
            return Err(err("the target must be an absolute path"));
        }
        let source = match source {
            None => {
                let slug: String = target
                    .trim_matches('/')
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                VolumeSource::Named(format!("{service_name}_{slug}"))
            }
            Some(s) if s.starts_with('/') => VolumeSource::Path(PathBuf::from(s)),
            Some(s) if s.contains('/') || s.starts_with('.') || s.starts_with('~') => {
                return Err(err(
                    "a host path must be absolute (Berth has no project directory)",
                ))
            }
            Some(s)
                if !s.is_empty()
                    && s.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c)) =>
            {
                VolumeSource::Named(s.to_string())
            }
            Some(_) => return Err(err("the source must be an absolute path or a volume name")),
        };
        let mut read_only = false;
        let mut options = Vec::new();
        for o in opts.into_iter().flat_map(|o| o.split(',')) {
            match o {
                "ro" => read_only = true,
                "rw" => read_only = false,
                // SELinux relabelling and copy-up are not things Berth does.
                "z" | "Z" | "nocopy" | "bind" | "rbind" | "" => {}
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" | "noexec"
                | "nosuid" | "nodev" => options.push(o.to_string()),
                other => return Err(err(&format!("`{other}` is not a volume option"))),
            }
        }
        Ok(Volume {
            source,
            target: target.to_string(),
            read_only,
            options,
        })
    }

    /// The host directory or file this volume binds.
    pub fn host_path(&self, volumes_dir: &Path) -> PathBuf {
        match &self.source {
            VolumeSource::Path(p) => p.clone(),
            VolumeSource::Named(n) => volumes_dir.join(n),
        }
    }
}

/// `PATH[:OPTIONS]` → a tmpfs mount (`nosuid,nodev` plus the options given).
pub(super) fn tmpfs_mount(service_name: &str, entry: &str) -> Result<Mount, SpecError> {
    let (path, opts) = match entry.split_once(':') {
        Some((p, o)) => (p, Some(o)),
        None => (entry, None),
    };
    if !path.starts_with('/') {
        return Err(SpecError::Tmpfs {
            service: service_name.into(),
            tmpfs: entry.into(),
            reason: "the mount point must be an absolute path".into(),
        });
    }
    let mut options: Vec<&str> = vec!["nosuid", "nodev"];
    options.extend(
        opts.into_iter()
            .flat_map(|o| o.split(','))
            .filter(|o| !o.is_empty()),
    );
    Ok(mount(path, "tmpfs", "tmpfs", &options))
}
