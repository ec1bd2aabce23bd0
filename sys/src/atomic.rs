//! The one atomic file writer: a crash leaves the old file or the new one,
//! never a mix, and never a file with the wrong owner or mode for a moment.
//!
//! The data goes to a uniquely named temporary file created with `O_EXCL |
//! O_NOFOLLOW` through a descriptor of the target's directory (a symlink
//! planted under the temporary name is refused, not followed); its owner and
//! mode are set before any byte is written, it is fsynced, renamed over the
//! target with renameat(2) in the same directory, and the directory is
//! fsynced so that the rename itself survives a crash. A file that only has
//! to outlive its writer, not the machine (on tmpfs), skips both fsyncs
//! ([`Options::durable`]): it is still replaced atomically.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};

use crate::check;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file that could not be written, named: [`write`] and friends return bare
/// `io::Error`s, and callers that write several files say which one failed
/// with this.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// How the new file is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Permission bits (including set-id bits), applied after the owner.
    pub mode: u32,
    /// `(uid, gid)`, or `None` for the writer's own.
    pub owner: Option<(u32, u32)>,
    /// Whether the file and its directory are fsynced, so that the new file
    /// survives a crash of the machine (the default). Without, readers still
    /// see the old file or the new one, never a mix.
    pub durable: bool,
}

impl Options {
    /// A durable file with `mode`, owned by the writer.
    pub fn mode(mode: u32) -> Options {
        Options {
            mode,
            owner: None,
            durable: true,
        }
    }

    /// Readable by the owner only (0600): secrets, config sources.
    pub fn private() -> Options {
        Options::mode(0o600)
    }

    pub fn owner(mut self, uid: u32, gid: u32) -> Options {
        self.owner = Some((uid, gid));
        self
    }

    /// A file that only has to outlive its writer (on tmpfs, or rebuilt
    /// after a reboot): no fsync of it or its directory.
    pub fn not_durable(mut self) -> Options {
        self.durable = false;
        self
    }
}

/// Replaces `path` with `bytes` atomically (see the module). The directory
/// must exist; the file name is never followed if it is a symlink (the
/// symlink itself is replaced).
pub fn write(path: &Path, bytes: &[u8], options: &Options) -> io::Result<()> {
    write_with(path, options, |f| f.write_all(bytes))
}

/// [`write`] with the content written by `fill` (a copy from another file, a
/// serializer), into the temporary file whose owner and mode are already
/// set; it is fsynced and renamed after `fill` returns `Ok`.
pub fn write_with(
    path: &Path,
    options: &Options,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = open_dir(dir)?;
    write_at_with(dir.as_fd(), name, options, fill)
}

/// Renames `from` over `to` in the same directory so that the move survives
/// a crash, for a file another program wrote (ssh-keygen does not fsync its
/// keys): `from` is fsynced before the rename and the directory after. A
/// rename that reaches the disk before the data leaves an empty file under
/// the final name after a power cut.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    File::open(from)?.sync_all()?;
    std::fs::rename(from, to)?;
    sync_dir(match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    })
}

/// Flushes what was written to the filesystem holding `path` (syncfs(2)):
/// for a tree built file by file, before the [`rename_durable`] that makes
/// it visible.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    // SAFETY: syncfs on a descriptor we own for the call.
    check(unsafe { libc::syncfs(dir.as_raw_fd()) })
}

/// fsyncs the directory `dir`: a rename or a new name in it survives a
/// crash only once it is synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    // SAFETY: fsync on a descriptor we own for the call.
    check(unsafe { libc::fsync(open_dir(dir)?.as_raw_fd()) })
}

/// Opens a directory for [`write_at`].
pub fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    let c = cstr(dir.as_os_str())?;
    // SAFETY: `c` is NUL-terminated and outlives the call; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary name: hidden, next to the target, unique across threads
/// (the counter), processes (the pid) and PID namespaces sharing a
/// directory (the random part).
fn temp_name(name: &OsStr) -> OsString {
    let random = u64::from_le_bytes(crate::random::unique::<8>());
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{}.{random:016x}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    tmp
}

/// Replaces `name` in the directory `dir` with `bytes` atomically.
pub fn write_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    bytes: &[u8],
    options: &Options,
) -> io::Result<()> {
    write_at_with(dir, name, options, |f| f.write_all(bytes))
}

/// [`write_at`] with the content written by `fill` (see [`write_with`]).
pub fn write_at_with(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    options: &Options,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    if name.is_empty() || name.as_bytes().contains(&b'/') || name == ".." || name == "." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", name.to_string_lossy()),
        ));
    }
    let target = cstr(name)?;
    let (tmp, mut file) = loop {
        let tmp = cstr(&temp_name(name))?;
        // SAFETY: `tmp` is NUL-terminated and outlives the call; the result is checked.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: `fd` is a fresh descriptor nothing else owns.
            break (tmp, File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    };
    let written = prepare(&file, options)
        .and_then(|()| fill(&mut file))
        .and_then(|()| {
            if options.durable {
                file.sync_all()
            } else {
                Ok(())
            }
        })
        .and_then(|()| {
            // SAFETY: both names are NUL-terminated and outlive the call; the
            // same directory descriptor on both sides keeps the rename atomic.
            check(unsafe {
                libc::renameat(
                    dir.as_raw_fd(),
                    tmp.as_ptr(),
                    dir.as_raw_fd(),
                    target.as_ptr(),
                )
            })
        });
    if let Err(e) = written {
        // SAFETY: `tmp` is NUL-terminated; removing our own temporary file.
        unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
        return Err(e);
    }
    if !options.durable {
        return Ok(());
    }
    // The rename itself survives a crash once the directory is synced.
    // SAFETY: fsync on a descriptor we borrow for the call.
    check(unsafe { libc::fsync(dir.as_raw_fd()) })
}

/// Whether [`write_if_changed`] touched the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
}

/// [`write`], unless `path` already holds exactly `bytes` with the options'
/// mode (and owner, when they name one): then nothing is written and nothing
/// synced, so a boot that finds a file as the last one left it costs no
/// journal commit. A file with the right bytes and another mode or owner gets
/// just those fixed.
pub fn write_if_changed(path: &Path, bytes: &[u8], options: &Options) -> io::Result<Outcome> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // Not a symlink's target: `write` replaces a symlink, so one is "changed".
    if let Ok(mut file) = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        let meta = file.metadata()?;
        let mut current = Vec::with_capacity(bytes.len());
        if meta.is_file()
            && meta.len() == bytes.len() as u64
            && file.read_to_end(&mut current).is_ok()
            && current == bytes
        {
            let owner = options
                .owner
                .is_none_or(|owner| (meta.uid(), meta.gid()) == owner);
            if owner && meta.mode() & 0o7777 == options.mode & 0o7777 {
                return Ok(Outcome::Unchanged);
            }
            prepare(&file, options)?;
            if options.durable {
                file.sync_all()?;
            }
            return Ok(Outcome::Written);
        }
    }
    write(path, bytes, options).map(|()| Outcome::Written)
}

/// Owner first, then mode: chown clears set-id bits.
fn prepare(file: &File, options: &Options) -> io::Result<()> {
    let fd = file.as_raw_fd();
    if let Some((uid, gid)) = options.owner {
        let meta = file.metadata()?;
        use std::os::unix::fs::MetadataExt;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            // SAFETY: fchown on a descriptor we own.
            check(unsafe { libc::fchown(fd, uid, gid) })?;
        }
    }
    // After chown, which clears set-id bits.
    // SAFETY: fchmod on a descriptor we own.
    check(unsafe { libc::fchmod(fd, (options.mode & 0o7777) as libc::mode_t) })
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a file name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn replaces_the_file_with_its_mode_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"old").expect("write");
        write(&path, b"new", &Options::mode(0o640)).expect("atomic write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
        write(&path, b"secret", &Options::private()).expect("atomic write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
    }

    #[test]
    fn an_unchanged_file_is_not_written_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let options = Options::mode(0o640);
        assert_eq!(
            write_if_changed(&path, b"one", &options).expect("new"),
            Outcome::Written
        );
        let inode = std::fs::metadata(&path).expect("stat").ino();
        assert_eq!(
            write_if_changed(&path, b"one", &options).expect("same"),
            Outcome::Unchanged
        );
        assert_eq!(
            std::fs::metadata(&path).expect("stat").ino(),
            inode,
            "not replaced"
        );
        // The same bytes with another mode: only the mode is fixed.
        let private = Options::private();
        assert_eq!(
            write_if_changed(&path, b"one", &private).expect("mode"),
            Outcome::Written
        );
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!((meta.ino(), meta.mode() & 0o7777), (inode, 0o600));
        // Other bytes, of the same length too: replaced.
        assert_eq!(
            write_if_changed(&path, b"two", &private).expect("new bytes"),
            Outcome::Written
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_ne!(std::fs::metadata(&path).expect("stat").ino(), inode);
        // A symlink is replaced, not followed, even to a file with the bytes.
        let target = dir.path().join("target");
        std::fs::write(&target, b"two").expect("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert_eq!(
            write_if_changed(&link, b"two", &private).expect("link"),
            Outcome::Written
        );
        assert!(!std::fs::symlink_metadata(&link)
            .expect("lstat")
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep").expect("write");
        let path = dir.path().join("link");
        std::os::unix::fs::symlink(&outside, &path).expect("symlink");
        write(&path, b"new", &Options::private()).expect("atomic write");
        assert_eq!(std::fs::read(&outside).expect("read"), b"keep");
        assert!(!std::fs::symlink_metadata(&path)
            .expect("stat")
            .file_type()
            .is_symlink());
    }

    /// Concurrent writers and a reader: the reader sees one whole file or
    /// another, durable or not.
    fn writers_and_a_reader_never_see_a_torn_file(options: Options) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write(&path, &[0xFF; 4096], &options).expect("first write");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write(path, &[i; 4096], &options).expect("write");
                    }
                });
            }
            let path = &path;
            s.spawn(move || {
                for _ in 0..400 {
                    let data = std::fs::read(path).expect("read");
                    assert_eq!(data.len(), 4096, "a partial file");
                    assert!(data.iter().all(|&b| b == data[0]), "a torn write");
                }
            });
        });
        let data = std::fs::read(&path).expect("read");
        assert_eq!(data.len(), 4096);
        assert!(data.iter().all(|&b| b == data[0]), "a torn write");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn concurrent_writers_never_share_a_temporary_file() {
        writers_and_a_reader_never_see_a_torn_file(Options::private());
    }

    #[test]
    fn a_file_that_need_not_be_durable_is_still_replaced_atomically() {
        let options = Options::mode(0o644).not_durable();
        assert!(!options.durable && Options::mode(0o644).durable);
        writers_and_a_reader_never_see_a_torn_file(options);
        // A fill that fails leaves the old file as it was, and no temporary.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write(&path, b"old", &options).expect("write");
        let failed = write_with(&path, &options, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("the serializer failed"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        assert!(leftovers(dir.path()).is_empty());
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o644);
    }

    #[test]
    fn errors_name_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = write(&dir.path().join("nosuch/f"), b"x", &Options::private())
            .expect_err("no directory");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let d = open_dir(dir.path()).expect("dir");
        for bad in ["", "..", "a/b"] {
            assert!(write_at(d.as_fd(), OsStr::new(bad), b"x", &Options::private()).is_err());
        }
    }
}
