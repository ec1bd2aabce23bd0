//! The system calls PID 1 makes that change the machine, behind a trait.
//!
//! Stage logic calls these through [`Sys`] so that tests can run it against
//! [`Recording`], which writes down what would have happened instead of doing it
//! (the way youki and Firecracker test their mount and jailer code). Reading
//! files (sysfs, block devices, `modules.dep`) is not behind the trait: tests
//! point those at temporary directories and image files instead.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

pub use berth_sys::modules::load_module_file;
pub use berth_sys::power::Action;
pub use berth_sys::process::reset_signal_mask;

/// Result of waiting for any child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Reaped(i32),
    NoChildren,
    TimedOut,
}

/// An attached loop device. It is set to clear itself when its last user
/// goes away, so the open descriptor must be kept until the device is mounted;
/// dropping this before that detaches it again.
#[derive(Debug)]
pub struct LoopDevice {
    pub node: PathBuf,
    pub fd: Option<File>,
}

/// A mount point as listed in `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub target: PathBuf,
    pub fstype: String,
}

pub trait Sys {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> io::Result<()>;
    fn umount(&mut self, target: &Path, flags: libc::c_int) -> io::Result<()>;
    /// Loads one module file; `compressed` asks the kernel to decompress it.
    fn load_module(&mut self, path: &Path, compressed: bool, params: &str) -> io::Result<()>;
    /// Attaches `file` read-only to a free loop device.
    fn attach_loop(&mut self, file: &Path, dev_dir: &Path) -> io::Result<LoopDevice>;
    /// Asks the kernel to read a disk's partition table again.
    fn reread_partitions(&mut self, disk: &Path) -> io::Result<()>;
    /// Tells the kernel partition `number` of `disk` now spans `bytes` from
    /// `start` (BLKPG): works while other partitions of the disk are in use.
    fn resize_partition(
        &mut self,
        disk: &Path,
        number: u32,
        start: u64,
        bytes: u64,
    ) -> io::Result<()>;
    /// Grows the mounted ext4 at `mountpoint` to `blocks` blocks, online.
    fn resize_ext4(&mut self, mountpoint: &Path, blocks: u64) -> io::Result<()>;
    /// Runs `argv` with `root` as its root directory and waits for it.
    fn run_chrooted(&mut self, root: &Path, argv: &[&str]) -> io::Result<ExitStatus>;
    fn chdir(&mut self, dir: &Path) -> io::Result<()>;
    fn chroot(&mut self, dir: &Path) -> io::Result<()>;
    fn kill(&mut self, pid: i32, sig: i32) -> io::Result<()>;
    /// Reaps one child, waiting at most `timeout`.
    fn wait_any(&mut self, timeout: Duration) -> Wait;
    fn sync(&mut self);
    fn mounts(&mut self) -> io::Result<Vec<MountEntry>>;
    fn reboot(&mut self, action: Action) -> io::Result<()>;
}

pub(crate) fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Writes `value` (ASCII, e.g. `b"-999"`) to `/proc/self/oom_score_adj`;
/// whether it worked. Only async-signal-safe calls: it runs between fork and
/// exec too.
pub fn set_oom_score_adj(value: &[u8]) -> bool {
    // SAFETY: the path is a NUL-terminated static string; the descriptor is
    // checked, written with a buffer of the length passed, and closed.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        let n = libc::write(fd, value.as_ptr().cast(), value.len());
        libc::close(fd);
        n == value.len() as isize
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens a device node, waiting for devtmpfs to create it.
pub(crate) fn open_when_present(node: &Path, timeout: Duration) -> io::Result<File> {
    let deadline = Instant::now() + timeout;
    loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(node)
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Mount points in mount order from `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let target = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some(MountEntry {
                target: PathBuf::from(unescape(target)),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

mod linux;
mod recording;

pub use linux::Linux;
pub use recording::Recording;

#[cfg(test)]
mod tests;
