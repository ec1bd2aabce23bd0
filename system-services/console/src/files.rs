//! Writing files the way account and config files must be written: whole or not
//! at all (temp file + rename), with the mode and owner they need *before* they
//! become visible (a shadow file must never be world-readable, not even briefly),
//! and not at all when the content is already right — running console-init
//! twice changes nothing.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub use berth_sys::atomic::WriteError;

/// Mode and owner a written file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Attributes {
    pub const fn root(mode: u32) -> Self {
        Attributes {
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// What `path` has now, if it exists: a rewritten file keeps them (e.g.
    /// `/etc/shadow` stays `root:shadow 0640`).
    pub fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path).ok()?;
        Some(Attributes {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }
}

pub use berth_sys::atomic::Outcome;

/// Replaces `path` with `bytes` atomically unless it already holds exactly
/// that with `attrs`; a file that only needs its mode or owner fixed gets just that.
pub fn write_if_changed(
    path: &Path,
    bytes: &[u8],
    attrs: Attributes,
) -> Result<Outcome, WriteError> {
    let err = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let options = berth_sys::atomic::Options::mode(attrs.mode).owner(attrs.uid, attrs.gid);
    berth_sys::atomic::write_if_changed(path, bytes, &options).map_err(err)
}

fn set_attributes(path: &Path, attrs: Attributes) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(attrs.uid), Some(attrs.gid))?;
    // After chown, which clears set-id bits.
    fs::set_permissions(path, fs::Permissions::from_mode(attrs.mode))
}

/// Creates `path` (and missing parents, root-owned) as a directory with `attrs`,
/// or fixes the mode and owner of the one that is there.
pub fn ensure_dir(path: &Path, attrs: Attributes) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(path).map_err(err)?;
    if Attributes::of(path) != Some(attrs) {
        set_attributes(path, attrs).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(mode: u32) -> Attributes {
        use std::os::unix::fs::MetadataExt;
        // Whoever runs the tests owns what they write.
        let probe = tempfile::NamedTempFile::new().expect("temp file");
        let meta = probe.as_file().metadata().expect("metadata");
        Attributes {
            mode,
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }

    #[test]
    fn writes_then_leaves_an_identical_file_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("etc/shadow");
        let a = attrs(0o640);
        assert_eq!(
            write_if_changed(&path, b"x\n", a).ok(),
            Some(Outcome::Written)
        );
        assert_eq!(Attributes::of(&path), Some(a));
        assert_eq!(
            write_if_changed(&path, b"x\n", a).ok(),
            Some(Outcome::Unchanged)
        );
        assert_eq!(
            write_if_changed(&path, b"y\n", a).ok(),
            Some(Outcome::Written)
        );
        assert_eq!(fs::read(&path).ok().as_deref(), Some(&b"y\n"[..]));
        // A mode change alone is applied too.
        let b = attrs(0o600);
        assert_eq!(
            write_if_changed(&path, b"y\n", b).ok(),
            Some(Outcome::Written)
        );
        assert_eq!(Attributes::of(&path), Some(b));
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("etc"))
            .expect("read dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with("berth-tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
