//! The host side of a container's bundle: its output pipes, finding its
//! processes, and paths looked up inside its root.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

use crate::runtime::spec::{self, HostDevice};
use crate::runtime::ContainerConfig;

/// The container's stdout and stderr in its bundle directory.
pub(super) const STDOUT_FIFO: &str = "stdout";
pub(super) const STDERR_FIFO: &str = "stderr";

/// Makes the named pipe for one output stream: (read end for berthd, write end
/// for the container).
///
/// Named rather than anonymous so a berthd that restarts can open it again
/// ([`Runtime::reattach`]). The container's end is opened read-write: the pipe
/// then always has a reader, so while berthd is away a write fills the pipe
/// buffer and then blocks until berthd is back — it never fails with EPIPE or
/// kills the service with SIGPIPE. (O_RDWR also opens a FIFO without waiting
/// for a peer.)
pub(super) fn output_fifo(path: &Path) -> std::io::Result<(OwnedFd, OwnedFd)> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        FileType::Fifo,
        Mode::RUSR | Mode::WUSR,
        0,
    )?;
    let write = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    // A bigger buffer lets a chatty service run on longer while berthd
    // restarts; the default (64 KiB) is fine where the limit is lower.
    let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_BUFFER);
    let read = fifo_reader(path)?;
    Ok((read, write))
}

/// What a container may write while nobody reads (berthd restarting).
pub(super) const PIPE_BUFFER: usize = 256 << 10;

/// Opens `path`, which must be a FIFO, for reading. Non-blocking, because an
/// open for reading alone would wait for a writer; the log capture polls.
pub(super) fn fifo_reader(path: &Path) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Fifo {
        return Err(std::io::Error::other(format!(
            "{} is not a FIFO",
            path.display()
        )));
    }
    Ok(fd)
}

/// This process's children, from `/proc/self/task/*/children` (or, without
/// CONFIG_PROC_CHILDREN, by scanning every process's parent).
pub(super) fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let mut found_file = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                found_file = true;
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    if found_file {
        return pids;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(me) {
            pids.push(pid);
        }
    }
    pids
}

/// Mount points the runtime must find (or create) in the root itself: mounts
/// that are not inside another mount the runtime makes (/dev, /proc, /sys).
pub(super) fn mount_points(config: &ContainerConfig, berth_mount: bool) -> Vec<String> {
    let mut points: Vec<String> = ["/proc", "/dev", "/sys", "/run", "/tmp"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    points.extend(
        config
            .service
            .tmpfs
            .0
            .iter()
            .map(|t| t.split(':').next().unwrap_or_default().to_string()),
    );
    points.extend(config.service.volumes.iter().map(|v| v.target.clone()));
    if berth_mount {
        points.push(spec::BERTH_IN_CONTAINER.into());
    }
    if let Some(dir) = config
        .service
        .working_dir
        .clone()
        .or_else(|| config.image.config.working_dir.clone())
    {
        points.push(dir);
    }
    points.retain(|p| {
        !["/dev/", "/proc/", "/sys/"]
            .iter()
            .any(|m| p.starts_with(m))
    });
    points
}

/// Whether `path` (absolute inside the container) exists in `root`, resolving
/// symlinks as the container would (never outside the root).
pub(super) fn exists_in_root(root: &Path, path: &str) -> bool {
    let Ok(dir) = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return true;
    }
    rustix::fs::openat2(
        &dir,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )
    .is_ok()
}

/// A small file from the image (`etc/passwd`), read without following links out of it.
pub(super) fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    use std::io::Read;
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )
    .ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

pub(super) fn host_device(path: &Path) -> Option<HostDevice> {
    let stat = rustix::fs::stat(path).ok()?;
    let block = match FileType::from_raw_mode(stat.st_mode) {
        FileType::BlockDevice => true,
        FileType::CharacterDevice => false,
        _ => return None,
    };
    Some(HostDevice {
        block,
        major: rustix::fs::major(stat.st_rdev).into(),
        minor: rustix::fs::minor(stat.st_rdev).into(),
        mode: stat.st_mode,
        uid: stat.st_uid,
        gid: stat.st_gid,
    })
}

/// Detaches the mount at `path`; not being mounted is fine.
pub(super) fn unmount(path: &Path) -> std::io::Result<()> {
    match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
