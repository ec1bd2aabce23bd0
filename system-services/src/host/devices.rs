//! Device nodes that appear or go while privileged services run.
//!
//! A privileged service's `/dev` is its own tmpfs, filled with the host's
//! device nodes when its container is made ([`fill`], as Docker does).
//! Without more, a disk attached later (a cloud volume, a USB stick, a loop
//! device) is missing there: `docker run --device /dev/vdc` fails with "no
//! such file or directory", and so does anything that looks for it in the
//! engine. Berth has no udev, so berthd keeps those `/dev`s in step itself:
//! on each kernel uevent that names a device node (and every few seconds, for
//! a service started meanwhile) it makes the host's new nodes in every running
//! privileged service's `/dev` and removes the ones the host lost.
//!
//! The nodes are made through `/proc/PID/root`. A privileged service is root
//! on the host in every way that matters (all capabilities, every device), so
//! a link it planted under its `/dev` gains it nothing it does not have.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::supervisor::Supervisor;

/// How often the running privileged services are looked at when no uevent
/// comes: a service started since gets what appeared while it was made.
const RECHECK: Duration = Duration::from_secs(5);

/// What is needed to make the same node elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// `st_mode`: the type (block or character) and the permissions.
    pub mode: u32,
    pub rdev: u64,
    pub uid: u32,
    pub gid: u32,
}

/// The device nodes under `dev`, by path relative to it: what a privileged
/// container gets, the way Docker equips one. The nodes are made in the
/// container's own `/dev` rather than binding the host's, because the runtime
/// rewrites `/dev` (ptmx, the fd symlinks) and must never do that to the
/// host's. `pts`, `shm` and `mqueue` are the container's own filesystems and
/// `console` its own terminal.
pub fn scan(dev: &Path) -> BTreeMap<PathBuf, Node> {
    use std::os::unix::fs::FileTypeExt;
    let mut nodes = BTreeMap::new();
    let mut dirs = vec![dev.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let skip = ["pts", "shm", "mqueue"].map(|d| dev.join(d));
                if !skip.contains(&path) {
                    dirs.push(path);
                }
                continue;
            }
            if !(kind.is_char_device() || kind.is_block_device()) || path == dev.join("console") {
                continue;
            }
            let (Ok(meta), Ok(rel)) = (std::fs::symlink_metadata(&path), path.strip_prefix(dev))
            else {
                continue;
            };
            nodes.insert(
                rel.to_path_buf(),
                Node {
                    mode: meta.mode(),
                    rdev: meta.rdev(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                },
            );
        }
    }
    nodes
}

/// What one [`sync`] changed, by relative path, and what it could not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
    pub failed: Vec<(PathBuf, String)>,
}

/// Makes every device node of the host in the `/dev` of the container whose
/// init is `pid`. The runtime calls it between the container's create and its
/// start, so the service finds them from its first instruction. Made here, a
/// node costs three system calls; listed in the spec, libcontainer made each
/// through its safe path walk, about 27 (3,152 for the console's 114 nodes).
pub fn fill(pid: i32) -> Changes {
    let dev = PathBuf::from(format!("/proc/{pid}/root/dev"));
    sync(&dev, &BTreeMap::new(), &scan(Path::new("/dev")))
}

/// Makes `dev` (a container's `/dev`) hold every node of `now` it lacks, and
/// removes the nodes `before` had that `now` has not — only where the node
/// there is still that device, so what the container made itself stays. A
/// node that cannot be made or removed does not stop the others.
pub fn sync(
    dev: &Path,
    before: &BTreeMap<PathBuf, Node>,
    now: &BTreeMap<PathBuf, Node>,
) -> Changes {
    let mut changes = Changes::default();
    // Every node is made relative to the one directory: through
    // `/proc/PID/root`, each path would go through the magic link again.
    let dir = match rustix::fs::open(
        dev,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        Err(e) => {
            // The service has just stopped, as a rule.
            changes.failed = now
                .keys()
                .map(|rel| (rel.clone(), format!("{}: {e}", dev.display())))
                .collect();
            return changes;
        }
    };
    for (rel, node) in now {
        match make(&dir, rel, node) {
            Ok(true) => changes.added.push(rel.clone()),
            Ok(false) => {}
            Err(e) => changes.failed.push((rel.clone(), e.to_string())),
        }
    }
    for (rel, node) in before {
        if now.contains_key(rel) {
            continue;
        }
        let Ok(stat) = rustix::fs::statat(&dir, rel, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let device = matches!(
            rustix::fs::FileType::from_raw_mode(stat.st_mode),
            rustix::fs::FileType::BlockDevice | rustix::fs::FileType::CharacterDevice
        );
        if device && stat.st_rdev == node.rdev {
            match rustix::fs::unlinkat(&dir, rel, AtFlags::empty()) {
                Ok(()) => changes.removed.push(rel.clone()),
                Err(e) => changes.failed.push((rel.clone(), e.to_string())),
            }
        }
    }
    changes
}

/// Makes the node `rel` under `dir`; `false` when something is there already.
fn make(dir: &OwnedFd, rel: &Path, node: &Node) -> io::Result<bool> {
    let kind = if node.mode & libc::S_IFMT == libc::S_IFBLK {
        rustix::fs::FileType::BlockDevice
    } else {
        rustix::fs::FileType::CharacterDevice
    };
    let perms = node.mode & 0o7777;
    let mknod = || rustix::fs::mknodat(dir, rel, kind, Mode::from_raw_mode(perms), node.rdev);
    match mknod() {
        Ok(()) => {}
        // Made meanwhile (console-init adds disks to the console itself),
        // or the container's own (its ptmx).
        Err(rustix::io::Errno::EXIST) => return Ok(false),
        // In a directory not made yet (`input/`, `net/`).
        Err(rustix::io::Errno::NOENT) => {
            let mut parent = PathBuf::new();
            for part in rel.parent().into_iter().flat_map(Path::components) {
                parent.push(part);
                match rustix::fs::mkdirat(dir, &parent, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match mknod() {
                Err(rustix::io::Errno::EXIST) => return Ok(false),
                other => other?,
            }
        }
        Err(e) => return Err(e.into()),
    }
    rustix::fs::chownat(
        dir,
        rel,
        Some(rustix::fs::Uid::from_raw(node.uid)),
        Some(rustix::fs::Gid::from_raw(node.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    // mknod's mode went through the umask.
    rustix::fs::chmodat(dir, rel, Mode::from_raw_mode(perms), AtFlags::empty())?;
    Ok(true)
}

/// Keeps the `/dev` of every running privileged service in step with the
/// host's, on a thread of its own, for as long as berthd runs.
pub fn spawn(supervisor: Arc<Supervisor>) {
    let uevents = match berth_sys::uevents::Uevents::open().and_then(|u| {
        u.set_timeout(RECHECK)?;
        Ok(u)
    }) {
        Ok(u) => u,
        Err(e) => {
            log::warn!(
                "device nodes that appear later will not reach privileged services: uevent socket: {e}"
            );
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("host-devices".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let dev = Path::new("/dev");
            let mut host = scan(dev);
            let mut seen: BTreeSet<i32> = BTreeSet::new();
            loop {
                let changed = uevents.wait();
                let snapshot = supervisor.snapshot();
                if snapshot.finished {
                    return;
                }
                let now = if changed { scan(dev) } else { host.clone() };
                for (name, pid) in &snapshot.host_devices {
                    // A service seen before needs only what changed; one
                    // started since may lack what appeared while it was made.
                    if now == host && seen.contains(pid) {
                        continue;
                    }
                    let container_dev = PathBuf::from(format!("/proc/{pid}/root/dev"));
                    let c = sync(&container_dev, &host, &now);
                    if !c.added.is_empty() || !c.removed.is_empty() {
                        log::info!(
                            "{name}: device nodes added {:?}, removed {:?}",
                            c.added,
                            c.removed
                        );
                    }
                    // Every node fails when the service has just stopped.
                    if let Some((rel, e)) = c.failed.first() {
                        log::debug!(
                            "{name}: {} device node(s) not made or removed, {}: {e}",
                            c.failed.len(),
                            rel.display()
                        );
                    }
                }
                seen = snapshot.host_devices.iter().map(|(_, pid)| *pid).collect();
                host = now;
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the device-node thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// Whether this test can make device nodes; says why not when it cannot.
    fn can_mknod() -> bool {
        let root = rustix::process::geteuid().is_root();
        if !root {
            berth_testkit::skip!("making device nodes needs CAP_MKNOD (run as root)");
        }
        root
    }

    fn node(kind: u32, perms: u32, (major, minor): (u32, u32), gid: u32) -> Node {
        Node {
            mode: kind | perms,
            rdev: libc::makedev(major, minor),
            uid: 0,
            gid,
        }
    }

    /// Makes a node at `path`, and the directories above it.
    fn mknod(path: &Path, node: &Node) {
        let parent = path.parent().expect("parent");
        std::fs::create_dir_all(parent).expect("mkdir");
        let dir = rustix::fs::open(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .expect("open");
        let name = Path::new(path.file_name().expect("name"));
        assert!(make(&dir, name, node).expect("mknod"), "{}", path.display());
    }

    /// A host `/dev` with a character node and a block node in a subdirectory.
    fn host_dev(dir: &Path) -> PathBuf {
        let dev = dir.join("host");
        mknod(&dev.join("null2"), &node(libc::S_IFCHR, 0o666, (1, 3), 0));
        mknod(
            &dev.join("input/disk9"),
            &node(libc::S_IFBLK, 0o640, (7, 200), 6),
        );
        dev
    }

    #[test]
    fn the_hosts_nodes_are_its_devices_but_not_its_terminal_or_its_own_filesystems() {
        let nodes = scan(Path::new("/dev"));
        let null = nodes.get(Path::new("null")).expect("/dev/null");
        assert_eq!(null.rdev, libc::makedev(1, 3));
        assert_eq!(null.mode & libc::S_IFMT, libc::S_IFCHR);
        assert!(!nodes.contains_key(Path::new("console")), "{nodes:?}");
        assert!(
            !nodes
                .keys()
                .any(|n| ["pts", "shm", "mqueue"].iter().any(|d| n.starts_with(d))),
            "{nodes:?}"
        );
    }

    #[test]
    fn new_nodes_are_made_and_gone_ones_removed_but_not_the_containers_own() {
        if !can_mknod() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let host = host_dev(dir.path());
        let container = dir.path().join("container");
        // The container's own: a node the host never had.
        mknod(
            &container.join("mine"),
            &node(libc::S_IFCHR, 0o600, (1, 5), 0),
        );

        let first = scan(&host);
        assert_eq!(
            first.keys().cloned().collect::<Vec<_>>(),
            [PathBuf::from("input/disk9"), PathBuf::from("null2")]
        );
        let changes = sync(&container, &BTreeMap::new(), &first);
        assert_eq!(changes.added.len(), 2);
        let made = std::fs::symlink_metadata(container.join("input/disk9")).expect("made");
        assert!(made.file_type().is_block_device());
        assert_eq!(made.rdev(), libc::makedev(7, 200));
        assert_eq!(made.mode() & 0o7777, 0o640);
        assert_eq!(made.gid(), 6);
        assert_eq!(scan(&container).len(), 3, "the two and its own");

        // Again: nothing to do.
        assert_eq!(sync(&container, &first, &first), Changes::default());

        // The host loses disk9; the container's own node stays.
        std::fs::remove_file(host.join("input/disk9")).expect("rm");
        let changes = sync(&container, &first, &scan(&host));
        assert_eq!(changes.removed, [PathBuf::from("input/disk9")]);
        assert!(container.join("mine").exists());
        assert!(container.join("null2").exists());
    }

    #[test]
    fn a_node_that_cannot_be_made_does_not_stop_the_others() {
        if !can_mknod() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let host = host_dev(dir.path());
        let container = dir.path().join("container");
        // A file where the host has a directory: `input/disk9` cannot be made.
        std::fs::create_dir_all(&container).expect("mkdir");
        std::fs::write(container.join("input"), "").expect("file");
        let changes = sync(&container, &BTreeMap::new(), &scan(&host));
        assert_eq!(changes.added, [PathBuf::from("null2")]);
        assert_eq!(changes.failed.len(), 1, "{changes:?}");
        assert_eq!(changes.failed[0].0, PathBuf::from("input/disk9"));
    }

    #[test]
    fn a_node_that_is_another_device_now_is_not_removed() {
        if !can_mknod() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let host = host_dev(dir.path());
        let container = dir.path().join("container");
        let before = scan(&host);
        // A `/dev` that is not there (the service has stopped): every node fails.
        let changes = sync(&container, &BTreeMap::new(), &before);
        assert!(
            changes.added.is_empty() && changes.failed.len() == 2,
            "{changes:?}"
        );
        std::fs::create_dir(&container).expect("mkdir");
        sync(&container, &BTreeMap::new(), &before);
        // The container put another device at that path.
        std::fs::remove_file(container.join("null2")).expect("rm");
        mknod(
            &container.join("null2"),
            &node(libc::S_IFCHR, 0o600, (1, 8), 0),
        );
        std::fs::remove_file(host.join("null2")).expect("rm");
        let changes = sync(&container, &before, &scan(&host));
        assert!(changes.removed.is_empty(), "{changes:?}");
        assert!(container.join("null2").exists());
    }
}
