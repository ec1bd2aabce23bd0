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

pub use berth_sys::modules::finit_module;
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
    fn load_module(&mut self, path: &Path, compressed: bool) -> io::Result<()>;
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
    /// Replaces this process; only returns on failure.
    fn exec(&mut self, path: &Path, argv0: &str) -> io::Error;
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

/// The real thing.
#[derive(Debug, Default)]
pub struct Linux;

// <linux/loop.h>; the libc crate does not carry the loop ioctls.
const LOOP_SET_FD: libc::Ioctl = 0x4C00;
const LOOP_SET_STATUS64: libc::Ioctl = 0x4C04;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const BLKRRPART: libc::Ioctl = 0x125F;
/// `_IO(0x12, 105)`: partition table operations.
const BLKPG: libc::Ioctl = 0x1269;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
/// `_IOW('f', 16, __u64)`: grow a mounted ext4 to the given block count.
const EXT4_IOC_RESIZE_FS: libc::Ioctl = 0x4008_6610;

/// `struct blkpg_partition` (linux/blkpg.h).
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg` (linux/blkpg.h).
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn loop_info(file: &Path) -> LoopInfo64 {
    let mut info = LoopInfo64 {
        device: 0,
        inode: 0,
        rdevice: 0,
        offset: 0,
        sizelimit: 0,
        number: 0,
        encrypt_type: 0,
        encrypt_key_size: 0,
        // Autoclear: the device frees itself when the last mount of it goes away,
        // so shutdown needs no loop bookkeeping.
        flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
        file_name: [0; 64],
        crypt_name: [0; 64],
        encrypt_key: [0; 32],
        init: [0; 2],
    };
    let name = file.as_os_str().as_bytes();
    let n = name.len().min(63);
    info.file_name[..n].copy_from_slice(&name[..n]);
    info
}

impl Sys for Linux {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> io::Result<()> {
        let source = cstr(source)?;
        let target = cstr(target)?;
        let fstype = cstr(fstype)?;
        let data = cstr(data)?;
        let opt = |c: &CString| {
            if c.as_bytes().is_empty() {
                std::ptr::null()
            } else {
                c.as_ptr()
            }
        };
        // SAFETY: every pointer is a NUL-terminated string (or null where the kernel
        // accepts null) that outlives the call.
        check(unsafe {
            libc::mount(
                opt(&source),
                target.as_ptr(),
                opt(&fstype),
                flags,
                opt(&data).cast(),
            )
        })
    }

    fn umount(&mut self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let target = cstr(target)?;
        // SAFETY: `target` is a valid C string for the duration of the call.
        check(unsafe { libc::umount2(target.as_ptr(), flags) })
    }

    fn load_module(&mut self, path: &Path, compressed: bool) -> io::Result<()> {
        finit_module(path, "", compressed)
    }

    fn attach_loop(&mut self, file: &Path, dev_dir: &Path) -> io::Result<LoopDevice> {
        let backing = File::open(file)?;
        let control = File::open(dev_dir.join("loop-control"))?;
        // The kernel may hand the same free device to a racing caller; a few tries
        // cover that (nothing else should be attaching loops this early).
        let mut last = io::Error::from(io::ErrorKind::NotFound);
        for _ in 0..5 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let node = dev_dir.join(format!("loop{n}"));
            let dev = open_when_present(&node, Duration::from_secs(2))?;
            let config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info: loop_info(file),
                reserved: [0; 8],
            };
            // SAFETY: `config` is a properly laid out `struct loop_config` that lives
            // across the call; the kernel only reads it.
            let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) };
            if r == 0 {
                return Ok(LoopDevice {
                    node,
                    fd: Some(dev),
                });
            }
            last = io::Error::last_os_error();
            match last.raw_os_error() {
                Some(libc::EBUSY) => continue,
                // Kernels before 5.8 have no LOOP_CONFIGURE: the two-step way.
                Some(libc::EINVAL) | Some(libc::ENOTTY) => {
                    // SAFETY: LOOP_SET_FD takes the backing fd by value.
                    let r =
                        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
                    if r < 0 {
                        last = io::Error::last_os_error();
                        if last.raw_os_error() == Some(libc::EBUSY) {
                            continue;
                        }
                        return Err(last);
                    }
                    let info = loop_info(file);
                    // SAFETY: `info` is a valid `struct loop_info64` that outlives the call.
                    check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &info) })?;
                    return Ok(LoopDevice {
                        node,
                        fd: Some(dev),
                    });
                }
                _ => return Err(last),
            }
        }
        Err(last)
    }

    fn reread_partitions(&mut self, disk: &Path) -> io::Result<()> {
        let dev = File::open(disk)?;
        // SAFETY: BLKRRPART takes no argument.
        check(unsafe { libc::ioctl(dev.as_raw_fd(), BLKRRPART) })
    }

    fn resize_partition(
        &mut self,
        disk: &Path,
        number: u32,
        start: u64,
        bytes: u64,
    ) -> io::Result<()> {
        let dev = File::open(disk)?;
        let too_big = |_| io::Error::from(io::ErrorKind::InvalidInput);
        let mut part = BlkpgPartition {
            start: i64::try_from(start).map_err(too_big)?,
            length: i64::try_from(bytes).map_err(too_big)?,
            pno: libc::c_int::try_from(number).map_err(too_big)?,
            devname: [0; 64],
            volname: [0; 64],
        };
        let mut arg = BlkpgIoctlArg {
            op: BLKPG_RESIZE_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
            data: (&mut part as *mut BlkpgPartition).cast(),
        };
        // SAFETY: BLKPG reads `arg` and the partition it points to, both
        // alive and properly laid out (repr(C), as linux/blkpg.h) for the call.
        check(unsafe { libc::ioctl(dev.as_raw_fd(), BLKPG, &mut arg) })
    }

    fn resize_ext4(&mut self, mountpoint: &Path, blocks: u64) -> io::Result<()> {
        let dir = File::open(mountpoint)?;
        let mut count = blocks;
        // SAFETY: EXT4_IOC_RESIZE_FS reads one u64, alive for the call.
        check(unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS, &mut count) })
    }

    fn run_chrooted(&mut self, root: &Path, argv: &[&str]) -> io::Result<ExitStatus> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let root = cstr(root)?;
        let mut command = Command::new(program);
        command.args(args).current_dir("/");
        // SAFETY: chroot and chdir are async-signal-safe syscalls on memory allocated
        // before fork; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                check(libc::chroot(root.as_ptr()))?;
                check(libc::chdir(c"/".as_ptr()))
            });
        }
        command.status()
    }

    fn chdir(&mut self, dir: &Path) -> io::Result<()> {
        std::env::set_current_dir(dir)
    }

    fn chroot(&mut self, dir: &Path) -> io::Result<()> {
        let dir = cstr(dir)?;
        // SAFETY: `dir` is a valid C string for the duration of the call.
        check(unsafe { libc::chroot(dir.as_ptr()) })
    }

    fn exec(&mut self, path: &Path, argv0: &str) -> io::Error {
        Command::new(path).arg0(argv0).exec()
    }

    fn kill(&mut self, pid: i32, sig: i32) -> io::Result<()> {
        // SAFETY: kill has no memory arguments.
        check(unsafe { libc::kill(pid, sig) })
    }

    fn wait_any(&mut self, timeout: Duration) -> Wait {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                return Wait::Reaped(pid);
            }
            if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                return Wait::NoChildren;
            }
            if Instant::now() >= deadline {
                return Wait::TimedOut;
            }
            // Shutdown is the only caller; polling every 20 ms keeps it simple and
            // independent of how SIGCHLD is delivered at that point.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sync(&mut self) {
        // SAFETY: sync has no arguments and cannot fail.
        unsafe { libc::sync() }
    }

    fn mounts(&mut self) -> io::Result<Vec<MountEntry>> {
        Ok(parse_mountinfo(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    fn reboot(&mut self, action: Action) -> io::Result<()> {
        // SAFETY: reboot has no memory arguments.
        check(unsafe { libc::reboot(action.reboot_cmd()) })
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

/// A [`Sys`] that records calls instead of making them, for tests.
#[derive(Debug, Default)]
pub struct Recording {
    pub calls: Vec<String>,
    /// What `mounts()` returns.
    pub mount_table: Vec<MountEntry>,
    /// Children `wait_any` reaps, in order; then `NoChildren`.
    pub children: Vec<i32>,
    /// `umount` fails with EBUSY for these.
    pub busy: Vec<PathBuf>,
    /// `mount` fails with this errno for these targets.
    pub mount_fails: Vec<(PathBuf, i32)>,
    /// `load_module` fails with this errno for paths ending like this.
    pub module_fails: Vec<(String, i32)>,
    /// Exit code of chrooted commands.
    pub chroot_exit: i32,
    /// Number of the next loop device `attach_loop` hands out.
    pub next_loop: u32,
}

impl Recording {
    fn record(&mut self, call: String) {
        self.calls.push(call);
    }
}

impl Sys for Recording {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> io::Result<()> {
        let mut f = Vec::new();
        for (bit, name) in [
            (libc::MS_RDONLY, "ro"),
            (libc::MS_BIND, "bind"),
            (libc::MS_MOVE, "move"),
            (libc::MS_REC, "rec"),
            (libc::MS_SHARED, "shared"),
            (libc::MS_REMOUNT, "remount"),
            (libc::MS_NOSUID, "nosuid"),
            (libc::MS_NODEV, "nodev"),
            (libc::MS_NOEXEC, "noexec"),
        ] {
            if flags & bit != 0 {
                f.push(name);
            }
        }
        self.record(format!(
            "mount {source} {} {fstype} [{}] {data}",
            target.display(),
            f.join(",")
        ));
        match self.mount_fails.iter().find(|(t, _)| t == target) {
            Some((_, errno)) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }

    fn umount(&mut self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let detach = if flags & libc::MNT_DETACH != 0 {
            " detach"
        } else {
            ""
        };
        self.record(format!("umount {}{detach}", target.display()));
        if self.busy.iter().any(|b| b == target) {
            Err(io::Error::from_raw_os_error(libc::EBUSY))
        } else {
            Ok(())
        }
    }

    fn load_module(&mut self, path: &Path, compressed: bool) -> io::Result<()> {
        let c = if compressed { " compressed" } else { "" };
        self.record(format!("load {}{c}", path.display()));
        let p = path.to_string_lossy();
        match self.module_fails.iter().find(|(end, _)| p.ends_with(end)) {
            Some((_, errno)) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }

    fn attach_loop(&mut self, file: &Path, dev_dir: &Path) -> io::Result<LoopDevice> {
        self.record(format!("loop {}", file.display()));
        let node = dev_dir.join(format!("loop{}", self.next_loop));
        self.next_loop += 1;
        Ok(LoopDevice { node, fd: None })
    }

    fn reread_partitions(&mut self, disk: &Path) -> io::Result<()> {
        self.record(format!("rereadpt {}", disk.display()));
        Ok(())
    }

    fn resize_partition(
        &mut self,
        disk: &Path,
        number: u32,
        start: u64,
        bytes: u64,
    ) -> io::Result<()> {
        self.record(format!(
            "resizepart {} {number} {start} {bytes}",
            disk.display()
        ));
        Ok(())
    }

    fn resize_ext4(&mut self, mountpoint: &Path, blocks: u64) -> io::Result<()> {
        self.record(format!("resize_ext4 {} {blocks}", mountpoint.display()));
        Ok(())
    }

    fn run_chrooted(&mut self, root: &Path, argv: &[&str]) -> io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        self.record(format!("chroot-run {} {}", root.display(), argv.join(" ")));
        Ok(ExitStatus::from_raw(self.chroot_exit << 8))
    }

    fn chdir(&mut self, dir: &Path) -> io::Result<()> {
        self.record(format!("chdir {}", dir.display()));
        Ok(())
    }

    fn chroot(&mut self, dir: &Path) -> io::Result<()> {
        self.record(format!("chroot {}", dir.display()));
        Ok(())
    }

    fn exec(&mut self, path: &Path, argv0: &str) -> io::Error {
        self.record(format!("exec {} as {argv0}", path.display()));
        io::Error::other("recording: exec does not replace the test")
    }

    fn kill(&mut self, pid: i32, sig: i32) -> io::Result<()> {
        let name = match sig {
            libc::SIGTERM => "TERM".to_string(),
            libc::SIGKILL => "KILL".to_string(),
            other => other.to_string(),
        };
        self.record(format!("kill {pid} {name}"));
        Ok(())
    }

    fn wait_any(&mut self, _timeout: Duration) -> Wait {
        if self.children.is_empty() {
            self.record("wait -> none".into());
            Wait::NoChildren
        } else {
            let pid = self.children.remove(0);
            self.record(format!("wait -> {pid}"));
            Wait::Reaped(pid)
        }
    }

    fn sync(&mut self) {
        self.record("sync".into());
    }

    fn mounts(&mut self) -> io::Result<Vec<MountEntry>> {
        Ok(self.mount_table.clone())
    }

    fn reboot(&mut self, action: Action) -> io::Result<()> {
        self.record(format!("reboot {}", action.name()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_targets_and_types() {
        let text = "22 1 0:21 / / ro,relatime - squashfs /dev/loop0 ro\n\
                    23 22 0:5 / /dev rw - devtmpfs devtmpfs rw\n\
                    40 22 8:1 /var /var rw - ext4 /dev/vda1 rw\n\
                    41 22 0:40 / /mnt/a\\040b rw - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].target, Path::new("/"));
        assert_eq!(m[0].fstype, "squashfs");
        assert_eq!(m[2].target, Path::new("/var"));
        assert_eq!(m[3].target, Path::new("/mnt/a b"));
    }
}

#[cfg(test)]
mod privileged {
    use super::*;

    /// Root with loop devices: attach a real file and read it back through the device.
    #[test]
    fn attach_loop_reads_the_file() {
        if !Path::new("/dev/loop-control").exists() || unsafe_is_not_root() {
            berth_testkit::skip!("needs root and /dev/loop-control");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("img");
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &data).expect("write");
        let dev = Linux.attach_loop(&file, Path::new("/dev")).expect("attach");
        let node = dev.node.clone();
        let name = node
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let size = std::fs::read_to_string(format!("/sys/block/{name}/size")).expect("size");
        let back = std::fs::read(&node).expect("read device");
        let ro = std::fs::read_to_string(format!("/sys/block/{name}/ro")).expect("ro");
        assert_eq!(size.trim(), "2048");
        assert_eq!(ro.trim(), "1");
        assert!(back == data);
        // Autoclear frees the device once its last user is gone, i.e. now.
        drop(dev);
        let size = std::fs::read_to_string(format!("/sys/block/{name}/size")).expect("size");
        assert_eq!(size.trim(), "0");
    }

    fn unsafe_is_not_root() -> bool {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() != 0 }
    }
}
