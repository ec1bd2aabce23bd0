//! The EFI system partition of the installed disk, written as a FAT32 volume
//! straight into its byte range ([`crate::disk::CachedRegion`]): each slot's kernel
//! and initrd, grubenv, the installed system's first cloud-config, and last
//! GRUB's UEFI loader and config — a write cut short leaves no loader that
//! could boot a half-written system.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::disk::{CachedRegion, Part, Payload, ESP_LABEL};
use crate::{Error, Result};

/// Where on the ESP the installer leaves the installed system's config
/// sources; PID 1 moves them onto the state partition when it makes that.
pub const CONFIG_DIR: &str = "berth/config";

/// Where a slot's kernel and initrd go: `A/vmlinuz`, `A/initrd`.
pub fn slot_files(slot: char) -> (String, String) {
    (format!("{slot}/vmlinuz"), format!("{slot}/initrd"))
}

/// Where a slot's version and kernel arguments go, as a GRUB script
/// (`set berth_version="…"`, `set berth_os_args="…"`) that the disk's grub.cfg
/// sources once it has chosen the slot: the menu names the version each slot
/// holds, and the slot boots with its own version's arguments, not those of
/// the Berth that wrote grub.cfg at install.
pub fn slot_version_file(slot: char) -> String {
    format!("{slot}/version.cfg")
}

/// The content of [`slot_version_file`]: the version with anything GRUB's
/// quoting could take as code (quotes, `$`, backslashes, newlines) made `_`,
/// and the OS's own kernel arguments ([`crate::grub::os_args`]), refused
/// unless each is a plain argument. Without arguments (an OS image from
/// before images carried them), the slot boots with grub.cfg's.
pub fn version_cfg(version: &str, os_args: Option<&str>) -> Result<Vec<u8>> {
    let safe: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+~-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut cfg = format!("set berth_version=\"{safe}\"\n");
    if let Some(args) = os_args {
        crate::kernel_args::check_os_args(args).map_err(|reason| {
            Error::Disk(format!(
                "the kernel arguments {args:?} cannot be booted: {reason}"
            ))
        })?;
        cfg.push_str(&format!("set berth_os_args=\"{args}\"\n"));
    }
    Ok(cfg.into_bytes())
}

fn label() -> [u8; 11] {
    let mut l = [b' '; 11];
    for (i, b) in ESP_LABEL.bytes().take(11).enumerate() {
        l[i] = b;
    }
    l
}

/// Formats `part` of `disk` as FAT32 and writes slot A's files and GRUB.
pub fn write(disk: &File, part: &Part, payload: &Payload) -> Result<()> {
    let fat_err = |what: String| move |e: std::io::Error| Error::Disk(format!("ESP: {what}: {e}"));
    let mut volume = CachedRegion::new(disk, part);
    fatfs::format_volume(
        &mut volume,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .volume_label(label()),
    )
    .map_err(fat_err("formatting FAT32".into()))?;
    let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())
        .map_err(fat_err("opening the new volume".into()))?;
    let root = fs.root_dir();
    for dir in [
        "A",
        "B",
        "berth",
        CONFIG_DIR,
        "boot",
        "boot/grub",
        "EFI",
        "EFI/BOOT",
    ] {
        root.create_dir(dir)
            .map_err(fat_err(format!("creating {dir}")))?;
    }
    let put = |path: &str, data: &[u8]| -> Result<()> {
        let mut f = root
            .create_file(path)
            .map_err(fat_err(format!("creating {path}")))?;
        f.truncate()
            .map_err(fat_err(format!("truncating {path}")))?;
        f.write_all(data)
            .map_err(fat_err(format!("writing {path}")))?;
        f.flush().map_err(fat_err(format!("writing {path}")))
    };
    let read = |p: &Path| std::fs::read(p).map_err(crate::io_err(p));
    let (kernel, initrd) = slot_files('A');
    put(&kernel, &read(&payload.vmlinuz)?)?;
    put(&initrd, &read(&payload.initrd)?)?;
    put(
        &slot_version_file('A'),
        &version_cfg(&payload.version, Some(&crate::grub::os_args()))?,
    )?;
    put(
        "boot/grub/grubenv",
        &crate::bootloader::grubenv(&[("berth_default", "A")]),
    )?;
    for (name, data) in &payload.config {
        put(&format!("{CONFIG_DIR}/{name}"), data)?;
    }
    put("EFI/BOOT/BOOTX64.EFI", &read(&payload.boot.efi)?)?;
    put(
        crate::slots::GRUB_CFG,
        crate::bootloader::disk_grub_cfg(env!("CARGO_PKG_VERSION")).as_bytes(),
    )?;
    drop(root);
    fs.unmount().map_err(fat_err("closing the volume".into()))?;
    volume
        .flush()
        .map_err(fat_err("writing the volume".into()))?;
    Ok(())
}

/// Reads `path` from the FAT volume in `part` (for checks and for tests).
pub fn read_file(disk: &File, part: &Part, path: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let err = |e: std::io::Error| Error::Disk(format!("ESP: reading {path}: {e}"));
    let fs = fatfs::FileSystem::new(CachedRegion::new(disk, part), fatfs::FsOptions::new())
        .map_err(err)?;
    let mut data = Vec::new();
    fs.root_dir()
        .open_file(path)
        .map_err(err)?
        .read_to_end(&mut data)
        .map_err(err)?;
    Ok(data)
}
