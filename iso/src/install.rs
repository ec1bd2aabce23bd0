//! `berth install`: what makes a disk safe to install to, and the install
//! itself on top of [`crate::disk::write`]. Every refusal happens before the
//! first byte is written, and says why.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::bootloader::Images;
use crate::disk::{self, Payload, Progress, Written, MIB, MIN_DISK_BYTES};
use crate::{Error, Result};

/// Where the live ISO is mounted (stage 1 puts it there).
pub const LIVE_MEDIUM: &str = "/run/berth/iso";

/// How the system sees itself, for the checks: its `/sys/class/block`, the
/// mount tables to search and the boot medium's mount point.
#[derive(Debug, Clone)]
pub struct Host {
    pub sys_block: PathBuf,
    /// `mountinfo` files: this process's and PID 1's (the host's, when the
    /// installer runs in the console's mount namespace).
    pub mountinfo: Vec<PathBuf>,
    pub swaps: PathBuf,
    pub medium: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            sys_block: "/sys/class/block".into(),
            mountinfo: vec!["/proc/self/mountinfo".into(), "/proc/1/mountinfo".into()],
            swaps: "/proc/swaps".into(),
            medium: LIVE_MEDIUM.into(),
        }
    }
}

/// What a disk holds in its first and last MiB, if anything.
fn signature(file: &mut File, size: u64) -> std::io::Result<Option<String>> {
    let mut head = vec![0u8; MIB.min(size) as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut head)?;
    let found = if head.get(512..520) == Some(b"EFI PART") {
        Some("a GPT partition table")
    } else if head.get(510..512) == Some(&[0x55, 0xAA]) {
        Some("an MBR partition table or boot sector")
    } else if head.get(1024 + 0x38..1024 + 0x3a) == Some(&[0x53, 0xEF]) {
        Some("an ext2/3/4 filesystem")
    } else if head.get(0x8001..0x8006) == Some(b"CD001") {
        Some("an ISO 9660 filesystem")
    } else if head.get(0x10040..0x10048) == Some(b"_BHRfS_M") {
        Some("a btrfs filesystem")
    } else if head.get(0..4) == Some(b"XFSB") {
        Some("an XFS filesystem")
    } else if head.get(0..4) == Some(b"hsqs") {
        Some("a squashfs filesystem")
    } else {
        head.iter().position(|b| *b != 0).map(|_| "data")
    };
    if let Some(what) = found {
        return Ok(Some(format!("{what} in its first MiB")));
    }
    let tail = MIB.min(size);
    let mut end = vec![0u8; tail as usize];
    file.seek(SeekFrom::Start(size - tail))?;
    file.read_exact(&mut end)?;
    Ok(end
        .iter()
        .any(|b| *b != 0)
        .then(|| "data in its last MiB (a backup GPT, RAID or LVM metadata)".to_string()))
}

/// `major:minor` of the disk and every partition of it, from sysfs.
fn device_numbers(host: &Host, name: &str) -> Vec<String> {
    let dir = host.sys_block.join(name);
    let mut out = Vec::new();
    if let Ok(dev) = std::fs::read_to_string(dir.join("dev")) {
        out.push(dev.trim().to_string());
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let sub = entry.path();
            if sub.join("partition").exists() {
                if let Ok(dev) = std::fs::read_to_string(sub.join("dev")) {
                    out.push(dev.trim().to_string());
                }
            }
        }
    }
    out
}

/// Where any of `numbers` is mounted, by the mount tables.
fn mounted_at(host: &Host, numbers: &[String]) -> Option<String> {
    for table in &host.mountinfo {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if let (Some(devno), Some(point)) = (fields.get(2), fields.get(4)) {
                if numbers.iter().any(|n| n == devno) {
                    return Some(point.to_string());
                }
            }
        }
    }
    None
}

/// Checks `disk` can be installed to; returns its size in bytes.
pub fn check(host: &Host, disk: &Path, force: bool) -> Result<u64> {
    let refuse =
        |why: String| Error::Disk(format!("{}: {why}; nothing was written", disk.display()));
    let meta = std::fs::metadata(disk).map_err(|e| refuse(format!("{e}")))?;
    if !meta.file_type().is_block_device() {
        return Err(refuse("is not a block device".into()));
    }
    let name = disk
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if host.sys_block.join(&name).join("partition").exists() {
        return Err(refuse(
            "is a partition; give the whole disk (e.g. /dev/vda, not /dev/vda1)".into(),
        ));
    }
    let numbers = device_numbers(host, &name);
    if let Some(point) = mounted_at(host, &numbers) {
        let medium = host.medium.to_string_lossy();
        return Err(refuse(if point == medium {
            "Berth booted from it (the live medium)".into()
        } else {
            format!(
                "it is mounted (on {point}){}",
                if point.starts_with("/run/berth/state") {
                    ": the live system keeps its state there; boot with berth.state.dev=none to install over it"
                } else {
                    ""
                }
            )
        }));
    }
    if let Ok(swaps) = std::fs::read_to_string(&host.swaps) {
        if swaps
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .any(|dev| {
                Path::new(dev)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&name))
            })
        {
            return Err(refuse("it holds active swap".into()));
        }
    }
    let mut file = File::open(disk).map_err(|e| refuse(format!("{e}")))?;
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| refuse(format!("{e}")))?;
    if size < MIN_DISK_BYTES {
        return Err(refuse(format!(
            "it is {:.1} GiB; Berth needs at least {} GiB",
            size as f64 / (1u64 << 30) as f64,
            MIN_DISK_BYTES >> 30
        )));
    }
    if !force {
        if let Some(what) = signature(&mut file, size).map_err(|e| refuse(format!("{e}")))? {
            return Err(refuse(format!(
                "it holds {what}; `--force` installs over it"
            )));
        }
    }
    Ok(size)
}

/// The OS to install, from a medium laid out as the live ISO is; `version`
/// is its version (the running live system's, [`crate::slots::os_version`]).
pub fn payload_from(medium: &Path, boot: Images, version: String) -> Result<Payload> {
    let payload = Payload {
        version,
        vmlinuz: medium.join("boot/vmlinuz"),
        initrd: medium.join("boot/initrd"),
        rootfs: medium.join(crate::ISO_ROOTFS_PATH),
        boot,
        config: Vec::new(),
    };
    for path in [
        payload.vmlinuz.as_path(),
        payload.initrd.as_path(),
        payload.rootfs.as_path(),
    ]
    .into_iter()
    .chain(payload.boot.all())
    {
        if !path.is_file() {
            return Err(Error::Disk(format!(
                "{} is missing: `berth install` runs from the live ISO",
                path.display()
            )));
        }
    }
    Ok(payload)
}

/// The config sources a live system carries over to the one it installs.
pub const CARRIED: &[&str] = &["user-data.yml", "local.yml"];

/// Beyond this a document is not a cloud-config (the parser's own limit).
const MAX_CONFIG: usize = 4 << 20;

/// The installed system's config sources: the cloud-config at `source` (a
/// path or an http(s) URL), checked before anything is written; without one,
/// the live system's own sources in `live_config`.
pub fn config_files(source: Option<&str>, live_config: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let Some(source) = source else {
        return Ok(CARRIED
            .iter()
            .filter_map(|name| {
                let data = std::fs::read(live_config.join(name)).ok()?;
                Some((name.to_string(), data))
            })
            .collect());
    };
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        berth_images::http::get(source, MAX_CONFIG, std::time::Duration::from_secs(60))
            .map_err(|e| Error::Disk(format!("the config: {e}; nothing was written")))?
    } else {
        std::fs::read(source).map_err(crate::io_err(Path::new(source)))?
    };
    let doc = berth_configs::parse_document(&source.into(), &String::from_utf8_lossy(&text));
    let loaded = berth_configs::load(vec![berth_configs::defaults(), doc]);
    let errors = loaded.error_messages();
    if !errors.is_empty() {
        return Err(Error::Disk(format!(
            "{source} is not a valid cloud-config; nothing was written:\n{}",
            errors.join("\n")
        )));
    }
    Ok(vec![("user-data.yml".into(), text)])
}

/// Checks `disk` and writes the installed layout onto it.
pub fn install(
    host: &Host,
    disk: &Path,
    force: bool,
    payload: &Payload,
    progress: &dyn Progress,
) -> Result<Written> {
    let size = check(host, disk, force)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(crate::io_err(disk))?;
    let written = disk::write(&file, size, payload, progress)?;
    // The kernel still has the old table; lsblk and the new partitions'
    // nodes appear once it reads the new one.
    use std::os::fd::AsRawFd;
    const BLKRRPART: libc::Ioctl = 0x125F;
    // SAFETY: BLKRRPART takes no argument; `file` is open for the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKRRPART) } != 0 {
        log::warn!(
            "{}: the kernel did not re-read the partition table ({}); it will at the next boot",
            disk.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d");
        let size = 4 * MIB;
        let mut data = vec![0u8; size as usize];
        let check = |data: &[u8]| {
            std::fs::write(&path, data).expect("write");
            signature(&mut File::open(&path).expect("open"), size).expect("read")
        };
        assert_eq!(check(&data), None);
        data[1024 + 0x38] = 0x53;
        data[1024 + 0x39] = 0xEF;
        assert!(check(&data).expect("ext").contains("ext2/3/4"));
        data[512..520].copy_from_slice(b"EFI PART");
        assert!(check(&data).expect("gpt").contains("GPT"));
        let mut tail = vec![0u8; size as usize];
        tail[size as usize - 100] = 1;
        assert!(check(&tail).expect("tail").contains("last MiB"));
    }

    #[test]
    fn mounted_partitions_are_found_by_device_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path().join("sys/class/block/vdb");
        std::fs::create_dir_all(sys.join("vdb1")).expect("mkdir");
        std::fs::write(sys.join("dev"), "254:16\n").expect("dev");
        std::fs::write(sys.join("vdb1/dev"), "254:17\n").expect("dev");
        std::fs::write(sys.join("vdb1/partition"), "1\n").expect("partition");
        let mountinfo = dir.path().join("mountinfo");
        std::fs::write(
            &mountinfo,
            "36 25 254:17 / /run/berth/state rw,nodev - ext4 /dev/vdb1 rw\n",
        )
        .expect("mountinfo");
        let host = Host {
            sys_block: dir.path().join("sys/class/block"),
            mountinfo: vec![mountinfo],
            swaps: dir.path().join("swaps"),
            medium: LIVE_MEDIUM.into(),
        };
        let numbers = device_numbers(&host, "vdb");
        assert_eq!(numbers.len(), 2);
        assert_eq!(
            mounted_at(&host, &numbers).as_deref(),
            Some("/run/berth/state")
        );
        assert_eq!(mounted_at(&host, &["254:32".into()]), None);
    }

    #[test]
    fn a_missing_device_is_refused_with_nothing_written() {
        let e = check(
            &Host::default(),
            Path::new("/dev/berth-no-such-disk"),
            false,
        )
        .expect_err("refused");
        assert!(e.to_string().contains("nothing was written"), "{e}");
    }
}
