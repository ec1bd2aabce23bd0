//! The hybrid BIOS + UEFI ISO, made by `grub-mkrescue` (xorriso): El Torito for
//! BIOS (i386-pc), an EFI system partition image for UEFI (x86_64-efi), and an
//! MBR/GPT so the same file also boots when written to a USB stick.

use std::path::Path;
use std::process::Command;

use crate::{io_err, run, Result, ISO_ROOTFS_PATH, ISO_VOLUME_ID};

#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub rootfs: &'a Path,
    pub grub_cfg: &'a str,
    /// Scratch space for the ISO tree (emptied first).
    pub work_dir: &'a Path,
    pub out: &'a Path,
}

/// The GRUB modules on the ISO. grub.cfg (`GrubConfig::render`) uses serial
/// and terminal, `if [ … ]` (test), linux and linux16; grub-mkrescue's EFI
/// image finds the ISO with search; all_video lets the kernel's EFI frame
/// buffer take over the screen GRUB set up.
pub const GRUB_MODULES: &[&str] = &[
    "normal",
    "configfile",
    "echo",
    "test",
    "serial",
    "terminal",
    "terminfo",
    "linux",
    "linux16",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "search_label",
    "iso9660",
    "part_msdos",
    "part_gpt",
    "fat",
    "all_video",
];

/// Lays out the ISO tree and runs grub-mkrescue.
pub fn build(spec: &Spec<'_>) -> Result<()> {
    let tree = spec.work_dir;
    if tree.exists() {
        std::fs::remove_dir_all(tree).map_err(io_err(tree))?;
    }
    for dir in ["boot/grub", "berth"] {
        let d = tree.join(dir);
        std::fs::create_dir_all(&d).map_err(io_err(&d))?;
    }
    place(spec.vmlinuz, &tree.join("boot/vmlinuz"))?;
    place(spec.initrd, &tree.join("boot/initrd"))?;
    place(spec.rootfs, &tree.join(ISO_ROOTFS_PATH))?;
    let cfg = tree.join("boot/grub/grub.cfg");
    std::fs::write(&cfg, spec.grub_cfg).map_err(io_err(&cfg))?;
    if spec.out.exists() {
        std::fs::remove_file(spec.out).map_err(io_err(spec.out))?;
    }
    run(Command::new("grub-mkrescue")
        .arg("-o")
        .arg(spec.out)
        // Smaller: xz-compressed GRUB modules, no locales, themes or fonts
        // beyond the one the serial/VGA text terminals need.
        .args(["--compress=xz", "--locales=", "--themes=", "--fonts="])
        // Only the modules grub.cfg and grub-mkrescue's own load.cfg use,
        // with their dependencies: 0.6 MB of GRUB instead of 2.8 MB.
        .arg(format!("--install-modules={}", GRUB_MODULES.join(" ")))
        .arg(tree)
        // Everything after the tree goes to `xorriso -as mkisofs`.
        .args(["-volid", ISO_VOLUME_ID]))?;
    Ok(())
}

/// Hard-links (cheap, the rootfs is big) or copies when across file systems.
fn place(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map_err(io_err(from))?;
    Ok(())
}

/// The volume id of an ISO 9660 image (primary volume descriptor, sector 16,
/// bytes 40..72), to check what was built.
pub fn volume_id(iso: &Path) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(iso).map_err(io_err(iso))?;
    let mut pvd = [0u8; 72];
    f.seek(SeekFrom::Start(16 * 2048)).map_err(io_err(iso))?;
    f.read_exact(&mut pvd).map_err(io_err(iso))?;
    Ok(String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string())
}
