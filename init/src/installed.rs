//! The state partition of an installed disk (ARCHITECTURE.md §7): the
//! partition named `BERTH_STATE`, last on the disk that holds the slots.
//!
//! A disk image or a fresh install leaves it blank, so that whatever size
//! of disk it lands on (a cloud's root volume, `qemu-img resize`) it is
//! first grown to the end of that disk, then formatted — and the cloud-config
//! `berth install --config` left on the ESP becomes the installed system's
//! user-data. A later boot on a disk that grew grows the partition and the
//! mounted ext4 online. A partition that holds anything is never formatted.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use berth_iso::disk::ESP_NAME;
use berth_sys::gpt::STATE_NAME;

use crate::probe::{self, BlockDev};
use crate::stage1::{self, Error};
use crate::sys::Sys;

/// Where the ESP is mounted while its cloud-config is taken.
pub const ESP_MOUNT: &str = "run/berth/esp";

/// What [`prepare`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The state partition's node.
    pub node: PathBuf,
    /// It was blank and is now a new ext4 filesystem.
    pub formatted: bool,
    /// Its new size in bytes, when it grew with its disk.
    pub grew: Option<u64>,
}

/// The disk a partition is on, and its partition number, from sysfs.
fn disk_of(root: &Path, part: &BlockDev) -> Option<(PathBuf, u32)> {
    let sys = root.join("sys/class/block").join(&part.name);
    let number = std::fs::read_to_string(sys.join("partition"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let real = std::fs::canonicalize(&sys).ok()?;
    let disk = real.parent()?.file_name()?.to_string_lossy().into_owned();
    Some((part.node.with_file_name(disk), number))
}

/// Whether `dev` is a partition of a disk that holds Berth's slots.
pub fn on_installed_disk(root: &Path, dev: &BlockDev, all: &[BlockDev]) -> bool {
    let Some((disk, _)) = disk_of(root, dev) else {
        return false;
    };
    all.iter().any(|d| {
        d.partname.as_deref() == Some("BERTH_A")
            && disk_of(root, d).is_some_and(|(other, _)| other == disk)
    })
}

/// Grows `BERTH_STATE` to the end of its disk when there is room, and
/// formats it when it is blank. `None` without such a partition.
pub fn prepare(sys: &mut dyn Sys, root: &Path, devices: &[BlockDev]) -> Option<Prepared> {
    let part = probe::find_partname(devices, STATE_NAME)?;
    let mut prepared = Prepared {
        node: part.node.clone(),
        formatted: false,
        grew: None,
    };
    match disk_of(root, &part) {
        Some((disk, number)) => match grow(sys, &disk, number) {
            Ok(Some(bytes)) => {
                log::info!(
                    "{STATE_NAME} grew to the end of {} ({:.1} GiB)",
                    disk.display(),
                    bytes as f64 / (1u64 << 30) as f64
                );
                prepared.grew = Some(bytes);
            }
            Ok(None) => {}
            Err(e) => log::warn!("{STATE_NAME} could not grow with its disk: {e}"),
        },
        None => log::warn!("{}: cannot tell its disk", part.node.display()),
    }
    if crate::gpt::check_blank(&part.node).is_ok() {
        log::info!(
            "{STATE_NAME} on {} is blank: formatting it",
            part.node.display()
        );
        match stage1::mkfs_ext4(sys, root, &part.node) {
            Ok(()) => prepared.formatted = true,
            Err(e) => log::error!("formatting {STATE_NAME}: {e}"),
        }
    }
    Some(prepared)
}

/// Why [`BERTH_STATE`](STATE_NAME) could not grow with its disk.
#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("{}: {source}", disk.display())]
    Disk { disk: PathBuf, source: io::Error },
    #[error("{}: {source}", disk.display())]
    Table {
        disk: PathBuf,
        source: berth_sys::gpt::Error,
    },
    #[error("telling the kernel that partition {number} of {} grew: {source}", disk.display())]
    Kernel {
        disk: PathBuf,
        number: u32,
        source: io::Error,
    },
}

/// The GPT first (backup header moved to the new end), then the kernel's
/// view of the partition. Returns its new size in bytes when it grew.
fn grow(sys: &mut dyn Sys, disk: &Path, number: u32) -> Result<Option<u64>, GrowError> {
    let disk_err = |source| GrowError::Disk {
        disk: disk.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(disk_err)?;
    let grown =
        berth_sys::gpt::grow_last(&mut file, STATE_NAME).map_err(|source| GrowError::Table {
            disk: disk.to_path_buf(),
            source,
        })?;
    let Some(part) = grown else {
        return Ok(None);
    };
    file.sync_all().map_err(disk_err)?;
    sys.resize_partition(disk, number, part.start, part.bytes)
        .map_err(|source| GrowError::Kernel {
            disk: disk.to_path_buf(),
            number,
            source,
        })?;
    Ok(Some(part.bytes))
}

/// Grows the ext4 mounted at `mountpoint` (on `node`) to `bytes`.
pub fn grow_filesystem(sys: &mut dyn Sys, node: &Path, mountpoint: &Path, bytes: u64) {
    let block = match ext_block_size(node) {
        Ok(b) => b,
        Err(e) => {
            log::warn!("{}: cannot read its block size: {e}", node.display());
            return;
        }
    };
    match sys.resize_ext4(mountpoint, bytes / block) {
        Ok(()) => log::info!("the state filesystem grew to fill {STATE_NAME}"),
        Err(e) => log::warn!("growing the state filesystem: {e}"),
    }
}

fn ext_block_size(node: &Path) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(node)?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    // s_log_block_size at 0x18: the block size is 1024 << it.
    let log = u32::from_le_bytes([sb[0x18], sb[0x19], sb[0x1a], sb[0x1b]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 || log > 6 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not ext4"));
    }
    Ok(1024 << log)
}

/// Moves the cloud-config the installer left on the ESP onto the state
/// partition (mounted at `state`) as the installed system's user-data.
pub fn take_install_config(
    sys: &mut dyn Sys,
    root: &Path,
    devices: &[BlockDev],
    state: &Path,
) -> Result<bool, Error> {
    let Some(esp) = probe::find_partname(devices, ESP_NAME) else {
        return Ok(false);
    };
    let mnt = root.join(ESP_MOUNT);
    std::fs::create_dir_all(&mnt).map_err(|source| Error::Io {
        path: mnt.clone(),
        source,
    })?;
    sys.mount(
        &esp.node.to_string_lossy(),
        &mnt,
        "vfat",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )
    .map_err(|source| Error::Mount {
        what: "the ESP".into(),
        target: mnt.clone(),
        source,
    })?;
    let dir = mnt.join(berth_iso::esp::CONFIG_DIR);
    let result = copy_config(&dir, state);
    sys.sync();
    let _ = sys.umount(&mnt, 0);
    result.map_err(|source| Error::Io { path: dir, source })
}

/// Copies every file in `from` into the state's config directory (0600 in
/// 0700, as config sources can hold secrets), removing each once copied.
fn copy_config(from: &Path, state: &Path) -> io::Result<bool> {
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let dir = state.join("var/lib/berth/config");
    let mut taken = false;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let text = std::fs::read(entry.path())?;
        let name = entry.file_name().to_string_lossy().to_lowercase();
        // The one config writer: 0600 in a 0700 directory, synced.
        berth_configs::sources::write_atomic(&dir.join(&name), &text).map_err(io::Error::other)?;
        log::info!(
            "the installed system's {name} ({} bytes) is on the state partition",
            text.len()
        );
        if let Err(e) = std::fs::remove_file(entry.path()) {
            log::warn!("{}: {e}; it stays on the ESP", entry.path().display());
        }
        taken = true;
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recording;

    #[test]
    fn the_config_moves_from_the_esp_to_state_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let esp = dir.path().join("esp").join(berth_iso::esp::CONFIG_DIR);
        std::fs::create_dir_all(&esp).expect("mkdir");
        // FAT keeps names upper-case on some writers; they come back lower.
        std::fs::write(esp.join("USER-DATA.YML"), "#cloud-config\n").expect("write");
        std::fs::write(esp.join("local.yml"), "berth: {}\n").expect("write");
        let state = dir.path().join("state");
        assert!(copy_config(&esp, &state).expect("copy"));
        let config = state.join("var/lib/berth/config");
        assert_eq!(
            std::fs::read_to_string(config.join("user-data.yml")).expect("read"),
            "#cloud-config\n"
        );
        assert!(config.join("local.yml").exists());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(config.join("user-data.yml"))
                .expect("meta")
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&config).expect("meta").mode() & 0o777,
            0o700
        );
        assert!(
            std::fs::read_dir(&esp).expect("esp").next().is_none(),
            "taken off the ESP"
        );
        assert!(!copy_config(&dir.path().join("nothing"), &state).expect("none"));
    }

    #[test]
    fn a_blank_state_partition_grows_then_is_formatted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // A disk image with the installed layout, grown by 1 GiB since.
        let disk = root.join("dev/vda");
        std::fs::create_dir_all(disk.parent().expect("parent")).expect("mkdir");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&disk)
            .expect("disk");
        let size = berth_iso::disk::MIN_DISK_BYTES;
        file.set_len(size).expect("size");
        let layout = berth_iso::disk::Layout::new(size, 512).expect("layout");
        let mut f = &file;
        berth_iso::disk::write_gpt(&mut f, &layout).expect("gpt");
        file.set_len(size + (1 << 30)).expect("grow");
        // The partition node: a blank file standing for /dev/vda5.
        let node = root.join("dev/vda5");
        std::fs::write(&node, vec![0u8; 2 << 20]).expect("vda5");
        let sys_block = root.join("sys/class/block");
        let real = root.join("sys/devices/virtio0/block/vda/vda5");
        std::fs::create_dir_all(&real).expect("sysfs");
        std::fs::write(real.join("partition"), "5\n").expect("partition");
        std::fs::create_dir_all(&sys_block).expect("class");
        std::os::unix::fs::symlink(&real, sys_block.join("vda5")).expect("link");
        for d in ["usr/sbin", "dev", "proc", "sys"] {
            std::fs::create_dir_all(root.join(stage1::NEWROOT).join(d)).expect("newroot");
        }
        std::fs::write(root.join(stage1::NEWROOT).join("usr/sbin/mkfs.ext4"), b"").expect("mkfs");
        let devices = vec![BlockDev {
            name: "vda5".into(),
            node: node.clone(),
            partition: true,
            partname: Some(STATE_NAME.into()),
            size: 2 << 20,
        }];
        let mut sys = Recording::default();
        // check_blank wants 64 MiB at least.
        std::fs::write(&node, vec![0u8; 64 << 20]).expect("vda5");
        let prepared = prepare(&mut sys, root, &devices).expect("prepared");
        assert!(prepared.formatted, "{:?}", sys.calls);
        let grew = prepared.grew.expect("grew");
        assert!(grew >= layout.parts()[4].bytes + (1 << 30) - (1 << 20));
        assert!(sys.calls.iter().any(|c| c.starts_with(&format!(
            "resizepart {} 5 {}",
            disk.display(),
            layout.parts()[4].start
        ))));
        assert!(
            sys.calls.iter().any(|c| c.contains("mkfs.ext4")),
            "{:?}",
            sys.calls
        );
        // A partition that holds anything is left alone.
        std::fs::write(&node, {
            let mut d = vec![0u8; 64 << 20];
            d[1024] = 1;
            d
        })
        .expect("vda5");
        let mut sys = Recording::default();
        let again = prepare(&mut sys, root, &devices).expect("prepared");
        assert!(!again.formatted);
        assert!(again.grew.is_none(), "it already fills its disk");
        assert!(!sys.calls.iter().any(|c| c.contains("mkfs")));
    }
}
