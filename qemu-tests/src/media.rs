//! Disks and seeds a test gives a VM: blank disks, qcow2 overlays, NoCloud
//! and ConfigDrive seeds, the baseline initramfs, and reading back the
//! state filesystem's superblock.
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{io_err, run_checked, Error, Result, BASELINE_MARKER};

/// A sparse blank raw disk of `size` bytes.
pub fn blank_disk(path: &Path, size: u64) -> Result<()> {
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    file.set_len(size).map_err(io_err(path))
}

/// A copy-on-write qcow2 disk over `base` (the build output stays pristine),
/// of `size` bytes (larger than the base: a bigger cloud volume).
pub fn overlay(base: &Path, path: &Path, size: u64) -> Result<()> {
    run_checked(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &base.to_string_lossy(),
            "-F",
            "qcow2",
            &path.to_string_lossy(),
            &size.to_string(),
        ],
    )
    .map(|_| ())
}

/// A NoCloud seed (`cidata` volume with `user-data` and `meta-data`), made
/// with `cloud-localds` from cloud-image-utils.
pub fn nocloud_seed(path: &Path, user_data: &str, meta_data: &str) -> Result<()> {
    let dir = tempfile::tempdir().map_err(io_err(Path::new("<tempdir>")))?;
    let ud = dir.path().join("user-data");
    let md = dir.path().join("meta-data");
    std::fs::write(&ud, user_data).map_err(io_err(&ud))?;
    std::fs::write(&md, meta_data).map_err(io_err(&md))?;
    run_checked(
        "cloud-localds",
        &[
            &path.to_string_lossy(),
            &ud.to_string_lossy(),
            &md.to_string_lossy(),
        ],
    )?;
    Ok(())
}

/// An OpenStack ConfigDrive: an ISO9660 volume labelled `config-2` holding
/// `openstack/latest/{meta_data.json,user_data,network_data.json}`, made
/// with `xorriso` as Nova makes it (with genisoimage's options).
pub fn configdrive(
    path: &Path,
    meta_data_json: &str,
    user_data: Option<&str>,
    network_data_json: Option<&str>,
) -> Result<()> {
    let dir = tempfile::tempdir().map_err(io_err(Path::new("<tempdir>")))?;
    let latest = dir.path().join("openstack/latest");
    std::fs::create_dir_all(&latest).map_err(io_err(&latest))?;
    let md = latest.join("meta_data.json");
    std::fs::write(&md, meta_data_json).map_err(io_err(&md))?;
    if let Some(ud) = user_data {
        let p = latest.join("user_data");
        std::fs::write(&p, ud).map_err(io_err(&p))?;
    }
    if let Some(net) = network_data_json {
        let p = latest.join("network_data.json");
        std::fs::write(&p, net).map_err(io_err(&p))?;
    }
    run_checked(
        "xorriso",
        &[
            "-as",
            "genisoimage",
            "-quiet",
            "-J",
            "-r",
            "-V",
            "config-2",
            "-o",
            &path.to_string_lossy(),
            &dir.path().to_string_lossy(),
        ],
    )?;
    Ok(())
}

/// Builds the kernel-only baseline initramfs into `dir` from the host's
/// static busybox (the `busybox-static` package).
pub fn baseline_initrd(dir: &Path) -> Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    let bytes =
        berth_iso::initramfs::baseline(busybox, BASELINE_MARKER).map_err(|e| Error::Command {
            command: "building the baseline initramfs".into(),
            stderr: e.to_string(),
        })?;
    let path = dir.join("baseline-initrd");
    std::fs::write(&path, bytes).map_err(io_err(&path))?;
    Ok(path)
}

/// The ext4 state partition of a disk image that Berth autoformatted (the
/// first GPT partition), as `dumpe2fs -h` describes it.
pub fn state_superblock(disk: &Path) -> Result<String> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).map_err(io_err(disk))?;
    let mut header = [0u8; 92];
    f.seek(SeekFrom::Start(512))
        .and_then(|_| f.read_exact(&mut header))
        .map_err(io_err(disk))?;
    if &header[..8] != b"EFI PART" {
        return Err(Error::Command {
            command: format!("read the GPT of {}", disk.display()),
            stderr: "no GPT header".into(),
        });
    }
    let u64_at = |b: &[u8], at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(x)
    };
    let entries_lba = u64_at(&header, 72);
    let mut entry = [0u8; 128];
    f.seek(SeekFrom::Start(entries_lba * 512))
        .and_then(|_| f.read_exact(&mut entry))
        .map_err(io_err(disk))?;
    let offset = u64_at(&entry, 32) * 512;
    // e2fsprogs reads a filesystem inside an image at `path?offset=N`.
    run_checked(
        "dumpe2fs",
        &["-h", &format!("{}?offset={offset}", disk.display())],
    )
}

/// Whether a `dumpe2fs -h` text says the filesystem needs no fsck or
/// journal replay: state `clean` and no `needs_recovery` feature.
pub fn superblock_is_clean(dumpe2fs: &str) -> bool {
    let state_clean = dumpe2fs.lines().any(|l| {
        l.starts_with("Filesystem state:") && l.split_whitespace().last() == Some("clean")
    });
    state_clean && !dumpe2fs.contains("needs_recovery")
}
