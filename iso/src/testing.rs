//! A fixture for tests here and in the crates that read an installed disk
//! (PID 1's trial, berthd's kernel arguments): a disk image with Berth's
//! layout, its ESP written by the installer's own code from stand-in files.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::disk::{self, Layout, Payload};
use crate::Result;

/// Makes `path` a disk of the smallest size Berth installs to, with the GPT
/// and an ESP holding `boot_dir`'s stand-in kernel, initrd and GRUB images
/// (made there), grubenv and grub.cfg; the slots stay blank.
pub fn installed_disk(path: &Path, boot_dir: &Path) -> Result<(File, Layout)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(crate::io_err(path))?;
    file.set_len(disk::MIN_DISK_BYTES)
        .map_err(crate::io_err(path))?;
    let layout = Layout::new(disk::MIN_DISK_BYTES, 512)?;
    disk::write_gpt(&mut &file, &layout)?;
    std::fs::create_dir_all(boot_dir).map_err(crate::io_err(boot_dir))?;
    for name in ["boot.img", "core.img", "bootx64.efi", "vmlinuz", "initrd"] {
        let stand_in = boot_dir.join(name);
        std::fs::write(&stand_in, name).map_err(crate::io_err(&stand_in))?;
    }
    let payload = Payload {
        version: env!("CARGO_PKG_VERSION").into(),
        vmlinuz: boot_dir.join("vmlinuz"),
        initrd: boot_dir.join("initrd"),
        rootfs: boot_dir.join("vmlinuz"),
        boot: crate::bootloader::Images::in_dir(boot_dir),
        config: Vec::new(),
    };
    crate::esp::write(&file, &layout.esp(), &payload)?;
    Ok((file, layout))
}
