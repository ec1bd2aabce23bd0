//! Writing one tar stream's entries into a layer directory, each relative to
//! a directory fd (see the module above for the rules).

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::{
    Limits, Rejection, UnpackError, UnpackReport, OPAQUE_MARKER, READ_BUFFER, WHITEOUT_PREFIX,
};

/// Unpacks an uncompressed tar stream into the existing directory `root`.
///
/// On error `root` may hold part of the layer; [`unpack_layer`] is the entry
/// point that cleans up. Needs root for whiteouts (device nodes), opaque
/// markers (`trusted.*` xattrs) and ownership; as another user those fail with
/// an error naming the entry, and ownership is left as is.
pub fn unpack_tar(
    reader: impl Read,
    root: &Path,
    limits: &Limits,
) -> Result<UnpackReport, UnpackError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Io {
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    let setgid_dirs = rustix::fs::fstat(&root_fd).is_ok_and(|st| st.st_mode & 0o2000 != 0);
    let mut unpacker = Unpacker {
        root: root_fd,
        limits: *limits,
        report: UnpackReport::default(),
        parent_cache: None,
        as_root: rustix::process::geteuid().is_root(),
        setgid_dirs,
        buffer: vec![0; READ_BUFFER],
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        unpacker.entry(&mut entry)?;
    }
    Ok(unpacker.report)
}

struct Unpacker {
    root: OwnedFd,
    limits: Limits,
    report: UnpackReport,
    /// The last parent directory opened: tars list a directory's entries together.
    parent_cache: Option<(Vec<u8>, OwnedFd)>,
    as_root: bool,
    /// A setgid directory makes new entries inherit its group, so 0:0 must be set.
    setgid_dirs: bool,
    buffer: Vec<u8>,
}

/// An entry name split into its parent components and final name.
pub(super) struct Name<'a> {
    pub(super) parent: Vec<&'a [u8]>,
    pub(super) file: Option<&'a [u8]>,
}

pub(super) fn parse_name(raw: &[u8]) -> Result<Name<'_>, Rejection> {
    if raw.first() == Some(&b'/') {
        return Err(Rejection::Absolute);
    }
    if raw.contains(&0) {
        return Err(Rejection::BadName);
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(Rejection::DotDot),
            part => parts.push(part),
        }
    }
    let file = parts.pop();
    Ok(Name {
        parent: parts,
        file,
    })
}

fn display(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), UnpackError> {
        let raw_name = entry.path_bytes().into_owned();
        let name_text = display(&raw_name);
        let reject = |reason| UnpackError::Rejected {
            entry: name_text.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        self.report.entries += 1;
        if self.report.entries > self.limits.max_entries {
            return Err(reject(Rejection::TooManyEntries {
                limit: self.limits.max_entries,
            }));
        }
        let name = parse_name(&raw_name).map_err(&reject)?;
        let result = match name.file {
            None => self.root_metadata(entry),
            Some(file) if file == OPAQUE_MARKER.as_bytes() => self.opaque(&name.parent),
            Some(file) if file.starts_with(WHITEOUT_PREFIX.as_bytes()) => {
                self.whiteout(&name.parent, &file[WHITEOUT_PREFIX.len()..])
            }
            Some(file) => self.create(entry, kind, &name.parent, file),
        };
        result.map_err(|e| match e {
            Failure::Rejected(reason) => reject(reason),
            Failure::Io(source) => UnpackError::Entry {
                entry: name_text.clone(),
                source,
            },
            Failure::Read(source) => UnpackError::Read(source),
        })
    }

    fn root_metadata<R: Read>(&mut self, entry: &tar::Entry<R>) -> Result<(), Failure> {
        if entry.header().entry_type().is_dir() {
            // fchmod needs a real descriptor, not the O_PATH one we keep.
            let fd = rustix::fs::openat(
                &self.root,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::fchmod(&fd, header_mode(entry.header()))?;
        }
        Ok(())
    }

    /// Opens (creating missing directories) the parent of an entry.
    fn parent(&mut self, parts: &[&[u8]]) -> Result<&OwnedFd, Failure> {
        let key = parts.join(&b'/');
        let hit = matches!(&self.parent_cache, Some((cached, _)) if *cached == key);
        if !hit {
            let fd = self.walk(parts, true)?;
            self.parent_cache = Some((key, fd));
        }
        match &self.parent_cache {
            Some((_, fd)) => Ok(fd),
            None => Err(Failure::Io(io::Error::other("parent cache empty"))),
        }
    }

    /// Opens the directory `parts` inside the root, creating missing ones when
    /// `create` (a tar may name a file before, or without, its directory).
    fn walk(&self, parts: &[&[u8]], create: bool) -> Result<OwnedFd, Failure> {
        let resolve = ResolveFlags::IN_ROOT
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if parts.is_empty() {
            return Ok(rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?);
        }
        // The common case, one syscall: every directory already exists.
        if let Ok(fd) = rustix::fs::openat2(
            &self.root,
            OsStr::from_bytes(&parts.join(&b'/')),
            flags,
            Mode::empty(),
            resolve,
        ) {
            return Ok(fd);
        }
        let mut dir = rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?;
        for (i, part) in parts.iter().enumerate() {
            let part = OsStr::from_bytes(part);
            let so_far = || display(&parts[..=i].join(&b'/'));
            let open =
                |dir: &OwnedFd| rustix::fs::openat2(dir, part, flags, Mode::empty(), resolve);
            dir = match open(&dir) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open(&dir).map_err(|e| classify_walk(e, so_far()))?
                }
                Err(e) => return Err(classify_walk(e, so_far())),
            };
        }
        Ok(dir)
    }

    fn opaque(&mut self, parent: &[&[u8]]) -> Result<(), Failure> {
        let dir = self.parent(parent)?;
        // fsetxattr needs a real descriptor, not an O_PATH one.
        let fd = rustix::fs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::fs::fsetxattr(&fd, "trusted.overlay.opaque", b"y", XattrFlags::empty())?;
        self.report.opaque_dirs += 1;
        Ok(())
    }

    fn whiteout(&mut self, parent: &[&[u8]], target: &[u8]) -> Result<(), Failure> {
        if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Other `.wh..wh.` names are aufs bookkeeping with no meaning here.
            return Ok(());
        }
        if matches!(target, b"" | b"." | b"..") {
            return Err(Failure::Rejected(Rejection::BadWhiteout(display(target))));
        }
        self.create_fresh(parent, target, |dir| {
            rustix::fs::mknodat(
                dir,
                OsStr::from_bytes(target),
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
        })?;
        self.report.whiteouts += 1;
        Ok(())
    }

    /// Clears the way for a new entry: a directory stays when a directory
    /// replaces it, an empty one may be replaced, a full one may not.
    fn remove_existing(
        &mut self,
        parent: &[&[u8]],
        file: &[u8],
        keep_dir: bool,
    ) -> Result<bool, Failure> {
        let dir = self.parent(parent)?;
        let name = OsStr::from_bytes(file);
        let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(true);
            }
            match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                Ok(()) => {}
                Err(Errno::NOTEMPTY | Errno::EXIST) => {
                    let mut path = parent.to_vec();
                    path.push(file);
                    return Err(Failure::Rejected(Rejection::ReplacesDirectory(display(
                        &path.join(&b'/'),
                    ))));
                }
                Err(e) => return Err(e.into()),
            }
            // The cached parent may have been this directory or inside it.
            self.parent_cache = None;
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        }
        Ok(false)
    }

    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        kind: tar::EntryType,
        parent: &[&[u8]],
        file: &[u8],
    ) -> Result<(), Failure> {
        use tar::EntryType as T;
        let name = OsStr::from_bytes(file);
        let header = entry.header().clone();
        let mode = header_mode(&header);
        // Some writers leave numeric fields blank; tar reads that as 0.
        let owner = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = entry.size();
                let total = self.report.bytes.saturating_add(size);
                if total > self.limits.max_bytes {
                    return Err(Failure::Rejected(Rejection::TooLarge {
                        size,
                        limit: self.limits.max_bytes,
                    }));
                }
                let xattrs = user_xattrs(entry, &mut self.report)?;
                let fd = self.create_fresh(parent, file, |dir| {
                    rustix::fs::openat(
                        dir,
                        name,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                })?;
                let mut out = std::fs::File::from(fd);
                let written = copy(entry, &mut out, &mut self.buffer)?;
                self.report.bytes += written;
                self.chown(&out, None, owner)?;
                rustix::fs::fchmod(&out, mode)?;
                for (key, value) in &xattrs {
                    rustix::fs::fsetxattr(&out, key.as_slice(), value, XattrFlags::empty())?;
                }
                let mtime = header.mtime().unwrap_or(0);
                rustix::fs::futimens(&out, &timestamps(mtime))?;
            }
            T::Directory => {
                let xattrs = user_xattrs(entry, &mut self.report)?;
                if mode.bits() & 0o2000 != 0 {
                    self.setgid_dirs = true;
                }
                let dir = self.parent(parent)?;
                match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
                    Err(Errno::EXIST) => {
                        if !self.remove_existing(parent, file, true)? {
                            let dir = self.parent(parent)?;
                            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
                        }
                    }
                    other => other?,
                }
                let dir = self.parent(parent)?;
                let fd = rustix::fs::openat2(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                )?;
                self.chown(&fd, None, owner)?;
                rustix::fs::fchmod(&fd, mode)?;
                for (key, value) in &xattrs {
                    rustix::fs::fsetxattr(&fd, key.as_slice(), value, XattrFlags::empty())?;
                }
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or(Failure::Rejected(Rejection::BadName))?
                    .into_owned();
                if target.contains(&0) {
                    return Err(Failure::Rejected(Rejection::BadName));
                }
                // The target is only data here: it is resolved later, inside the
                // container's own root, never by this unpacker.
                self.create_fresh(parent, file, |dir| {
                    rustix::fs::symlinkat(OsStr::from_bytes(&target), dir, name)
                })?;
                if self.needs_chown(owner) {
                    let dir = self.parent(parent)?;
                    let dir = rustix::io::fcntl_dupfd_cloexec(dir, 0)?;
                    self.chown(&dir, Some(name), owner)?;
                }
            }
            T::Link => {
                let raw = entry
                    .link_name_bytes()
                    .ok_or(Failure::Rejected(Rejection::BadName))?
                    .into_owned();
                let target_name = parse_name(&raw).map_err(Failure::Rejected)?;
                let bad = || Failure::Rejected(Rejection::BadHardlink(display(&raw)));
                let target_file = target_name.file.ok_or_else(bad)?;
                let target_dir = self.walk(&target_name.parent, false).map_err(|_| bad())?;
                let stat = rustix::fs::statat(
                    &target_dir,
                    OsStr::from_bytes(target_file),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|_| bad())?;
                if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                    return Err(bad());
                }
                if target_name.parent == parent && target_file == file {
                    return Ok(());
                }
                self.remove_existing(parent, file, false)?;
                let dir = self.parent(parent)?;
                // Without AT_SYMLINK_FOLLOW linkat links the name itself, and
                // it was just checked to be a regular file inside this layer.
                rustix::fs::linkat(
                    &target_dir,
                    OsStr::from_bytes(target_file),
                    dir,
                    name,
                    AtFlags::empty(),
                )?;
            }
            T::Fifo => {
                self.create_fresh(parent, file, |dir| {
                    rustix::fs::mknodat(dir, name, FileType::Fifo, mode, 0)
                })?;
                if self.needs_chown(owner) {
                    let dir = self.parent(parent)?;
                    let dir = rustix::io::fcntl_dupfd_cloexec(dir, 0)?;
                    self.chown(&dir, Some(name), owner)?;
                }
            }
            T::Char | T::Block => {
                self.report.devices_skipped_count += 1;
                if self.report.devices_skipped.len() < 8 {
                    let mut path = parent.to_vec();
                    path.push(file);
                    self.report.devices_skipped.push(display(&path.join(&b'/')));
                }
            }
            _ => {
                // Unknown kinds (e.g. Solaris ACL records) carry nothing a
                // container root needs.
                log::debug!("skipping tar entry of type {kind:?}");
            }
        }
        Ok(())
    }

    /// Runs `create` for a new entry; when the name is taken, clears it (see
    /// [`Self::remove_existing`]) and tries once more. Trying first saves a
    /// stat per entry: names are almost always new.
    fn create_fresh<T>(
        &mut self,
        parent: &[&[u8]],
        file: &[u8],
        create: impl Fn(&OwnedFd) -> rustix::io::Result<T>,
    ) -> Result<T, Failure> {
        let dir = self.parent(parent)?;
        match create(dir) {
            Err(Errno::EXIST) => {}
            other => return Ok(other?),
        }
        self.remove_existing(parent, file, false)?;
        let dir = self.parent(parent)?;
        Ok(create(dir)?)
    }

    /// Whether an entry must be given its owner. Only root can, and what root
    /// creates is already 0:0 unless a setgid directory passed its group on.
    fn needs_chown(&self, owner: (u64, u64)) -> bool {
        self.as_root && (owner != (0, 0) || self.setgid_dirs)
    }

    /// Gives an entry the tar's owner. As anyone but root the files stay
    /// ours, as with `tar -x`.
    fn chown(
        &self,
        fd: &impl AsFd,
        name: Option<&OsStr>,
        (uid, gid): (u64, u64),
    ) -> Result<(), Failure> {
        if !self.needs_chown((uid, gid)) {
            return Ok(());
        }
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(Failure::Io(io::Error::other(format!(
                "owner {uid}:{gid} is out of range"
            ))));
        };
        let (uid, gid) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        match name {
            Some(name) => {
                rustix::fs::chownat(fd, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?
            }
            None => rustix::fs::fchown(fd, Some(uid), Some(gid))?,
        }
        Ok(())
    }
}

/// Errors inside one entry, turned into [`UnpackError`] with the entry's name.
enum Failure {
    Rejected(Rejection),
    Io(io::Error),
    Read(io::Error),
}

impl From<Errno> for Failure {
    fn from(e: Errno) -> Self {
        Failure::Io(e.into())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

fn classify_walk(e: Errno, so_far: String) -> Failure {
    match e {
        // RESOLVE_NO_SYMLINKS reports a symlink on the way as ELOOP.
        Errno::LOOP => Failure::Rejected(Rejection::SymlinkInPath(so_far)),
        Errno::NOTDIR => Failure::Rejected(Rejection::NotADirectory(so_far)),
        e => Failure::Io(e.into()),
    }
}

fn header_mode(header: &tar::Header) -> Mode {
    let default = if header.entry_type().is_dir() {
        0o755
    } else {
        0o644
    };
    Mode::from_raw_mode(header.mode().unwrap_or(default) & 0o7777)
}

fn timestamps(mtime: u64) -> Timestamps {
    let time = rustix::fs::Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

/// An xattr name and value, as the tar carries them.
type Xattr = (Vec<u8>, Vec<u8>);

/// The entry's `user.*` xattrs; every other namespace is counted and dropped.
fn user_xattrs<R: Read>(
    entry: &mut tar::Entry<R>,
    report: &mut UnpackReport,
) -> Result<Vec<Xattr>, Failure> {
    let mut kept = Vec::new();
    let Some(extensions) = entry.pax_extensions().map_err(Failure::Read)? else {
        return Ok(kept);
    };
    for extension in extensions {
        let extension = extension.map_err(Failure::Read)?;
        let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
            continue;
        };
        if name.starts_with(b"user.") && !name.contains(&0) {
            kept.push((name.to_vec(), extension.value_bytes().to_vec()));
        } else {
            report.xattrs_dropped += 1;
        }
    }
    Ok(kept)
}

/// Copies an entry's content; sparse holes arrive as zeros from `tar`.
fn copy(from: &mut impl Read, to: &mut impl Write, buffer: &mut [u8]) -> Result<u64, Failure> {
    let mut total = 0u64;
    loop {
        let n = match from.read(buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Read(e)),
        };
        to.write_all(&buffer[..n])?;
        total += n as u64;
    }
}
