//! The real [`Sys`]: system calls.

use super::*;

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

    fn load_module(&mut self, path: &Path, compressed: bool, params: &str) -> io::Result<()> {
        load_module_file(path, params, compressed)
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
