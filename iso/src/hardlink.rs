//! One inode for each file the pre-unpacked system image layers share.
//!
//! The system images are built from the same Debian release, so the console,
//! docker, podman and ntp images carry byte-identical copies of libc,
//! libcrypto, bash, the docker CLI and so on (about 200 MiB across the
//! layers). mksquashfs already stores such data once, but each copy stays its
//! own inode, and the kernel caches pages per inode: a library the ntp
//! service has read is read and decompressed again when the console starts,
//! and both copies then sit in the page cache. Made hard links, the copies
//! are one inode in the squashfs, so every container that maps the file maps
//! the same pages.
//!
//! Only files that are identical in everything a container can see are
//! linked: content, size, mode, owner and modification time. A file with
//! extended attributes (a capability, say) is left alone. A container never
//! writes through to a lower layer (overlayfs copies a file up first), so a
//! link cannot carry one container's change into another.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{io_err, Result};

/// What [`link_identical_files`] shared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shared {
    /// Inodes replaced by a link to an identical one.
    pub files: usize,
    /// Their total size: what the page cache no longer holds twice.
    pub bytes: u64,
}

/// Everything but the content that must match for two files to be one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Attributes {
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: i64,
}

/// One inode found under the root and every path that names it.
#[derive(Debug)]
struct Inode {
    paths: Vec<PathBuf>,
}

/// Replaces each regular file under `root` with a hard link to the first (in
/// path order) identical file, so that identical files are one inode.
pub fn link_identical_files(root: &Path) -> Result<Shared> {
    let mut candidates: BTreeMap<Attributes, BTreeMap<(u64, u64), Inode>> = BTreeMap::new();
    collect(root, &mut candidates)?;
    let mut shared = Shared::default();
    for (attributes, inodes) in candidates {
        if inodes.len() < 2 {
            continue;
        }
        // Path order, so the build picks the same keeper every time.
        let mut inodes: Vec<Inode> = inodes.into_values().collect();
        inodes.sort_by(|a, b| a.paths[0].cmp(&b.paths[0]));
        let mut keepers: HashMap<[u8; 32], PathBuf> = HashMap::new();
        for inode in inodes {
            let digest = sha256(&inode.paths[0])?;
            let Some(keeper) = keepers.get(&digest) else {
                keepers.insert(digest, inode.paths[0].clone());
                continue;
            };
            for path in &inode.paths {
                replace_with_link(keeper, path)?;
            }
            shared.files += 1;
            shared.bytes += attributes.size;
        }
    }
    Ok(shared)
}

/// Groups the regular, non-empty, xattr-free files under `dir` by their
/// attributes and inode.
fn collect(
    dir: &Path,
    candidates: &mut BTreeMap<Attributes, BTreeMap<(u64, u64), Inode>>,
) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(dir))?;
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        if meta.is_dir() {
            collect(&path, candidates)?;
            continue;
        }
        if !meta.is_file() || meta.len() == 0 || has_xattrs(&path)? {
            continue;
        }
        let attributes = Attributes {
            size: meta.len(),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        };
        candidates
            .entry(attributes)
            .or_default()
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| Inode { paths: Vec::new() })
            .paths
            .push(path);
    }
    Ok(())
}

fn has_xattrs(path: &Path) -> Result<bool> {
    let names =
        rustix::fs::llistxattr_query(path).map_err(|e| io_err(path)(std::io::Error::from(e)))?;
    Ok(names > 0)
}

fn sha256(path: &Path) -> Result<[u8; 32]> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = berth_images::digest::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// Links `keeper` at a temporary name beside `path`, then renames it over
/// `path`: a failure leaves `path` as it was, never missing.
fn replace_with_link(keeper: &Path, path: &Path) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.berth-link"));
    std::fs::hard_link(keeper, &temporary).map_err(io_err(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, SystemTime};

    const MTIME: Duration = Duration::from_secs(1_700_000_000);

    fn write(root: &Path, rel: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_modified(SystemTime::UNIX_EPOCH + MTIME)
            .expect("mtime");
        path
    }

    fn ino(path: &Path) -> u64 {
        std::fs::symlink_metadata(path).expect("stat").ino()
    }

    #[test]
    fn identical_files_across_layers_become_one_inode() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        let a = write(root, "console/usr/lib/libc.so.6", b"libc", 0o644);
        let b = write(root, "docker/usr/lib/libc.so.6", b"libc", 0o644);
        let c = write(root, "ntp/lib/libc.so.6", b"libc", 0o644);
        let shared = link_identical_files(root).expect("link");
        assert_eq!(shared, Shared { files: 2, bytes: 8 });
        assert_eq!(ino(&a), ino(&b));
        assert_eq!(ino(&a), ino(&c));
        assert_eq!(std::fs::read(&c).expect("read"), b"libc");
        // Nothing is left behind at the temporary names.
        for layer in ["console/usr/lib", "docker/usr/lib", "ntp/lib"] {
            let names: Vec<_> = std::fs::read_dir(root.join(layer))
                .expect("ls")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names, ["libc.so.6"], "{layer}");
        }
        // A second pass finds nothing more to share.
        assert_eq!(
            link_identical_files(root).expect("again"),
            Shared::default()
        );
    }

    #[test]
    fn files_that_differ_in_anything_a_container_sees_stay_apart() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        let base = write(root, "a/bin/tool", b"same", 0o755);
        let other_content = write(root, "b/bin/tool", b"diff", 0o755);
        let other_mode = write(root, "c/bin/tool", b"same", 0o700);
        let other_mtime = write(root, "d/bin/tool", b"same", 0o755);
        File::options()
            .write(true)
            .open(&other_mtime)
            .expect("open")
            .set_modified(SystemTime::UNIX_EPOCH + MTIME + Duration::from_secs(1))
            .expect("mtime");
        let empty_a = write(root, "a/etc/empty", b"", 0o644);
        let empty_b = write(root, "b/etc/empty", b"", 0o644);
        assert_eq!(link_identical_files(root).expect("link"), Shared::default());
        let inodes = [
            &base,
            &other_content,
            &other_mode,
            &other_mtime,
            &empty_a,
            &empty_b,
        ]
        .map(|p| ino(p));
        let distinct: std::collections::BTreeSet<_> = inodes.iter().collect();
        assert_eq!(distinct.len(), inodes.len());
    }

    #[test]
    fn a_file_with_extended_attributes_is_left_alone() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        let plain = write(root, "a/bin/ping", b"ping", 0o755);
        let marked = write(root, "b/bin/ping", b"ping", 0o755);
        if let Err(e) =
            rustix::fs::setxattr(&marked, "user.berth", b"1", rustix::fs::XattrFlags::empty())
        {
            panic!("this file system refuses user xattrs ({e}); run the test on one that has them");
        }
        assert_eq!(link_identical_files(root).expect("link"), Shared::default());
        assert_ne!(ino(&plain), ino(&marked));
    }

    #[test]
    fn existing_links_and_symlinks_are_kept() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        let perl = write(root, "a/usr/bin/perl", b"perl", 0o755);
        let perl5 = root.join("a/usr/bin/perl5.36");
        std::fs::hard_link(&perl, &perl5).expect("link");
        let other = write(root, "b/usr/bin/perl", b"perl", 0o755);
        let other5 = root.join("b/usr/bin/perl5.36");
        std::fs::hard_link(&other, &other5).expect("link");
        let symlink = root.join("b/usr/bin/perl-link");
        std::os::unix::fs::symlink("perl", &symlink).expect("symlink");
        // One inode (b's, with two names) replaced by a's.
        assert_eq!(
            link_identical_files(root).expect("link"),
            Shared { files: 1, bytes: 4 }
        );
        for path in [&perl5, &other, &other5] {
            assert_eq!(ino(path), ino(&perl), "{}", path.display());
        }
        assert!(std::fs::symlink_metadata(&symlink)
            .expect("lstat")
            .is_symlink());
    }
}
