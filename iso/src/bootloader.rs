//! GRUB for the installed disk: images made once at build time with
//! `grub-mkimage` (shipped in the OS at [`SHIPPED_DIR`] so the installer has
//! them), placed on a disk by code — no `grub-install`, no mounts.
//!
//! BIOS: the MBR's first 440 bytes are GRUB's `boot.img`, told at byte 0x5c
//! the LBA of `core.img`, which sits at the start of the BIOS boot partition
//! and is told at byte 500 of its first sector where its second sector is.
//! UEFI: `core` for x86_64-efi is the removable-media loader
//! `EFI/BOOT/BOOTX64.EFI` on the ESP. Both carry every module they need and
//! an early config that finds the ESP by its label and reads
//! `/boot/grub/grub.cfg` there.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::disk::{Layout, ESP_LABEL};
use crate::{io_err, run, Error, Result};

/// Where the OS ships the images (the console binds `/usr/share/berth`).
pub const SHIPPED_DIR: &str = "/usr/share/berth/boot";

pub const BOOT_IMG: &str = "boot.img";
pub const CORE_IMG: &str = "core.img";
pub const EFI_IMG: &str = "bootx64.efi";

/// GRUB's `boot.img` in Debian's grub-pc-bin.
const GRUB_BOOT_IMG: &str = "/usr/lib/grub/i386-pc/boot.img";

/// Where in boot.img the LBA of core.img goes (GRUB_BOOT_MACHINE_KERNEL_SECTOR).
const KERNEL_SECTOR_OFFSET: usize = 0x5c;
/// Where in core.img's first sector the start of the rest of it goes: the
/// first blocklist entry (0x200 − GRUB_BOOT_MACHINE_LIST_SIZE).
const BLOCKLIST_START_OFFSET: u64 = 500;
/// The MBR boot code ends where the disk signature and partition table begin.
const MBR_CODE: usize = 440;

/// The modules built into both images: disks, the ESP, the config and Linux.
const COMMON_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "search",
    "search_label",
    "normal",
    "configfile",
    "linux",
    "echo",
    "test",
    "loadenv",
    "serial",
    "terminal",
    "halt",
    "reboot",
    "gzio",
];
/// `linux16`: grub.cfg boots the kernel with the 16-bit protocol under BIOS (grub.rs).
const BIOS_MODULES: &[&str] = &["biosdisk", "minicmd", "linux16"];
const EFI_MODULES: &[&str] = &["efi_gop", "all_video"];

/// The config built into both images.
fn early_config() -> String {
    format!(
        "search --no-floppy --label {ESP_LABEL} --set=root\n\
         set prefix=($root)/boot/grub\n\
         configfile ($root)/boot/grub/grub.cfg\n"
    )
}

/// The three images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub boot_img: PathBuf,
    pub core_img: PathBuf,
    pub efi: PathBuf,
}

impl Images {
    /// The images as [`build`] leaves them in `dir` (or the OS ships them).
    pub fn in_dir(dir: &Path) -> Images {
        Images {
            boot_img: dir.join(BOOT_IMG),
            core_img: dir.join(CORE_IMG),
            efi: dir.join(EFI_IMG),
        }
    }

    /// The images the running OS ships.
    pub fn shipped() -> Images {
        Images::in_dir(Path::new(SHIPPED_DIR))
    }

    pub fn all(&self) -> [&Path; 3] {
        [&self.boot_img, &self.core_img, &self.efi]
    }
}

/// Makes the images in `dir` with `grub-mkimage` (build host only).
pub fn build(dir: &Path) -> Result<Images> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let images = Images::in_dir(dir);
    let early = dir.join("early.cfg");
    std::fs::write(&early, early_config()).map_err(io_err(&early))?;
    std::fs::copy(GRUB_BOOT_IMG, &images.boot_img).map_err(io_err(Path::new(GRUB_BOOT_IMG)))?;
    for (format, out, extra) in [
        ("i386-pc", &images.core_img, BIOS_MODULES),
        ("x86_64-efi", &images.efi, EFI_MODULES),
    ] {
        run(Command::new("grub-mkimage")
            .args(["--format", format, "--prefix", "/boot/grub", "--config"])
            .arg(&early)
            .arg("--output")
            .arg(out)
            .args(COMMON_MODULES)
            .args(extra))?;
    }
    let core = std::fs::metadata(&images.core_img)
        .map_err(io_err(&images.core_img))?
        .len();
    if core > crate::disk::BIOS_BOOT_BYTES {
        return Err(Error::Disk(format!(
            "core.img is {core} bytes; the BIOS boot partition holds {}",
            crate::disk::BIOS_BOOT_BYTES
        )));
    }
    Ok(images)
}

/// Places core.img in the BIOS boot partition, then boot.img in the MBR —
/// the last write of an install, after which the disk boots under BIOS.
pub fn install_bios(disk: &File, layout: &Layout, images: &Images) -> Result<()> {
    let disk_err = |e: std::io::Error| Error::Disk(format!("writing GRUB for BIOS: {e}"));
    let core = std::fs::read(&images.core_img).map_err(io_err(&images.core_img))?;
    let part = layout.bios_boot();
    if core.len() as u64 > part.bytes || core.len() < 512 {
        return Err(Error::Disk(format!(
            "{} is {} bytes; it must fit the BIOS boot partition ({} bytes)",
            images.core_img.display(),
            core.len(),
            part.bytes
        )));
    }
    let core_lba = part.start / layout.sector;
    let mut f = disk;
    f.seek(SeekFrom::Start(part.start)).map_err(disk_err)?;
    f.write_all(&core).map_err(disk_err)?;
    f.seek(SeekFrom::Start(part.start + BLOCKLIST_START_OFFSET))
        .map_err(disk_err)?;
    f.write_all(&(core_lba + 1).to_le_bytes())
        .map_err(disk_err)?;
    f.sync_data().map_err(disk_err)?;
    let mut boot = std::fs::read(&images.boot_img).map_err(io_err(&images.boot_img))?;
    if boot.len() < MBR_CODE {
        return Err(Error::Disk(format!(
            "{} is {} bytes, not a boot sector",
            images.boot_img.display(),
            boot.len()
        )));
    }
    boot[KERNEL_SECTOR_OFFSET..KERNEL_SECTOR_OFFSET + 8].copy_from_slice(&core_lba.to_le_bytes());
    f.seek(SeekFrom::Start(0)).map_err(disk_err)?;
    f.write_all(&boot[..MBR_CODE]).map_err(disk_err)?;
    f.sync_data().map_err(disk_err)?;
    Ok(())
}

/// GRUB's environment block: 1024 bytes, padded with `#`. GRUB rewrites it
/// in place through its block list, so it must never be replaced by a new file.
pub fn grubenv(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut text = String::from("# GRUB Environment Block\n");
    for (k, v) in vars {
        text.push_str(&format!("{k}={v}\n"));
    }
    let mut bytes = text.into_bytes();
    bytes.resize(1024, b'#');
    bytes
}

/// grubenv: [`BOOT_PENDING`] from GRUB's start of a boot until that boot got
/// as far as berthd (or, on a trial, until PID 1 committed it). One byte of
/// value: grubenv's content stays within one sector with the largest kernel
/// arguments armed ([`crate::kernel_args`]'s tests count it).
pub const BOOT_VAR: &str = "berth_boot";
pub const BOOT_PENDING: &str = "1";
/// grubenv: `1` shows the menu on the next boot (`berth reboot --menu`).
pub const MENU_VAR: &str = "berth_menu";
/// How long the disk's menu waits, when it shows, before the default entry.
pub const MENU_TIMEOUT_S: u32 = 10;

/// This boot got far enough ([`BOOT_VAR`]): the next one goes straight to
/// the default entry. Whether `vars` changed.
pub fn boot_got_far(vars: &mut std::collections::BTreeMap<String, String>) -> bool {
    vars.remove(BOOT_VAR).is_some()
}

/// The next boot shows the menu ([`MENU_VAR`]).
pub fn ask_for_menu(vars: &mut std::collections::BTreeMap<String, String>) {
    vars.insert(MENU_VAR.into(), "1".into());
}

/// The installed disk's grub.cfg: boots the committed slot (`berth_default`,
/// A at first), or once the slot `berth_try` names. The try is used up and
/// saved *before* the kernel loads, so a trial that panics, hangs or loses
/// power comes back to the committed slot; and when the try cannot be saved
/// the trial does not happen at all, rather than being retried forever.
///
/// The kernel arguments kept in grubenv ([`crate::kernel_args`]) come last,
/// so that they override Berth's own (`cryptomgr.notests=0`); a trial of new
/// ones is used up the same way before the kernel loads.
///
/// The menu does not show, and nothing waits for a key, unless the boot
/// before never got as far as berthd ([`BOOT_VAR`] still set: a
/// panic, a hang, a power cut, a disk stage 1 could not find) or the running
/// system asked for it ([`MENU_VAR`]); then it shows on both terminals for
/// [`MENU_TIMEOUT_S`]. A local keyboard's Shift still opens it on any boot.
/// Ubuntu shows its menu after a failed boot the same way (`recordfail`).
pub fn disk_grub_cfg(version: &str) -> String {
    crate::grub::GrubConfig {
        title: "Berth ".into(),
        title_var: Some("berth_version".into()),
        os_args_var: Some("berth_os_args".into()),
        kernel: "/$berth_slot/vmlinuz".into(),
        initrd: "/$berth_slot/initrd".into(),
        extra_args: "berth.slot=$berth_slot $berth_trial $berth_args_trial $berth_kargs".into(),
        menu: crate::grub::Menu::AfterFailedBoot,
        preamble: format!(
            "load_env berth_default berth_try {committed} {next} {try_} {boot} {menu}\n\
             if [ \"${boot}\" = {pending} ]; then set {menu}=1; fi\n\
             if [ \"${menu}\" = 1 ]; then\n\
             \x20   set timeout_style=menu\n\
             \x20   set timeout={menu_timeout}\n\
             else\n\
             \x20   # Hidden, 0, and only the local keyboard, whose Shift GRUB can\n\
             \x20   # read without waiting: with a serial terminal among the inputs,\n\
             \x20   # Debian's GRUB makes a hidden 0 into a 3 s wait for Esc.\n\
             \x20   terminal_input console\n\
             \x20   set timeout_style=hidden\n\
             \x20   set timeout=0\n\
             fi\n\
             set {boot}={pending}\n\
             unset {menu}\n\
             save_env {boot} {menu}\n\
             set berth_slot=A\n\
             if [ \"$berth_default\" = B ]; then set berth_slot=B; fi\n\
             set berth_trial=\n\
             set berth_next=\n\
             if [ \"$berth_try\" = A ]; then set berth_next=A; fi\n\
             if [ \"$berth_try\" = B ]; then set berth_next=B; fi\n\
             if [ -n \"$berth_next\" ]; then\n\
             \x20   set berth_try=\n\
             \x20   if save_env berth_try; then\n\
             \x20       set berth_slot=$berth_next\n\
             \x20       set berth_trial={trial}\n\
             \x20   fi\n\
             fi\n\
             set berth_kargs=\"${committed}\"\n\
             set berth_args_trial=\n\
             if [ \"${try_}\" = 1 ]; then\n\
             \x20   set {try_}=\n\
             \x20   if save_env {try_}; then\n\
             \x20       set berth_kargs=\"${next}\"\n\
             \x20       set berth_args_trial={args_trial}\n\
             \x20   fi\n\
             fi\n\
             # The menu names the version the booted slot holds, and the kernel gets\n\
             # that version's own arguments, both written beside its kernel; a slot\n\
             # written before there was such a file, or by an image that did not\n\
             # carry its arguments, has this grub.cfg's.\n\
             set berth_version={version}\n\
             set berth_os_args=\"{os_args}\"\n\
             if [ -f /$berth_slot/version.cfg ]; then source /$berth_slot/version.cfg; fi\n",
            os_args = crate::grub::os_args(),
            trial = crate::slots::TRIAL_ARG,
            committed = crate::kernel_args::COMMITTED,
            next = crate::kernel_args::NEXT,
            try_ = crate::kernel_args::TRY,
            args_trial = crate::kernel_args::TRIAL_ARG,
            boot = BOOT_VAR,
            pending = BOOT_PENDING,
            menu = MENU_VAR,
            menu_timeout = MENU_TIMEOUT_S,
        ),
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The titles name the booted slot's version, and the entries boot with
    /// its arguments, read from the file written beside its kernel once the
    /// slot is chosen, the writer's own when the slot has none.
    #[test]
    fn the_menu_names_the_booted_slots_version_and_boots_its_arguments() {
        let cfg = disk_grub_cfg("0.1.0");
        assert!(
            cfg.contains("menuentry 'Berth '\"$berth_version\" --id normal {"),
            "{cfg}"
        );
        assert!(cfg.contains("menuentry 'Berth '\"$berth_version\"' (debug)' --id debug {"));
        let chosen = cfg.find("set berth_slot=$berth_next").expect("slot chosen");
        let default = cfg
            .find("set berth_version=0.1.0\n")
            .expect("default version");
        let source = cfg
            .find("if [ -f /$berth_slot/version.cfg ]; then source /$berth_slot/version.cfg; fi")
            .expect("sourced");
        let first_entry = cfg.find("menuentry").expect("entries");
        assert!(chosen < default && default < source && source < first_entry);
        let own_args = cfg
            .find(&format!(
                "set berth_os_args=\"{}\"\n",
                crate::grub::os_args()
            ))
            .expect("default arguments");
        assert!(default < own_args && own_args < source);
        for line in cfg.lines().filter(|l| l.trim_start().starts_with("linux")) {
            assert!(
                line.contains("vmlinuz $berth_os_args") && !line.contains("panic=10"),
                "{line}"
            );
        }
    }

    #[test]
    fn grubenv_is_one_kib_padded() {
        let env = grubenv(&[("berth_default", "A")]);
        assert_eq!(env.len(), 1024);
        assert!(env.starts_with(b"# GRUB Environment Block\nberth_default=A\n#"));
        assert!(env.ends_with(b"##"));
    }

    #[test]
    fn the_disk_config_boots_the_slot_grubenv_names() {
        let cfg = disk_grub_cfg("0.1.0");
        assert!(cfg.contains("load_env berth_default berth_try"));
        assert!(cfg.contains("if save_env berth_try; then"));
        assert!(cfg.contains("set berth_trial=berth.trial=1"));
        assert!(cfg.contains("berth.slot=$berth_slot $berth_trial"));
        assert!(cfg.contains("linux /$berth_slot/vmlinuz $berth_os_args"));
        assert!(cfg.contains("berth.slot=$berth_slot"));
        assert!(cfg.contains("initrd /$berth_slot/initrd"));
        assert!(cfg.contains("linux16 /$berth_slot/vmlinuz $berth_os_args"));
        assert!(cfg.contains("initrd16 /$berth_slot/initrd"));
        assert!(!cfg.contains("berth.console.autologin"));
    }

    #[test]
    fn the_disk_menu_shows_only_after_a_boot_that_did_not_get_far_or_when_asked() {
        let cfg = disk_grub_cfg("0.1.0");
        // No one-second window on the disk: that is the live ISO's.
        assert!(!cfg.contains("set timeout=1\n"), "{cfg}");
        assert!(cfg.contains(" berth_boot berth_menu\n"), "{cfg}");
        let pending = cfg
            .find("if [ \"$berth_boot\" = 1 ]; then set berth_menu=1; fi")
            .expect("pending");
        let asked = cfg.find("if [ \"$berth_menu\" = 1 ]; then").expect("asked");
        let menu = cfg.find("    set timeout=10\n").expect("menu");
        let hidden = cfg.find("    set timeout=0\n").expect("hidden");
        let keyboard = cfg.find("    terminal_input console\n").expect("keyboard");
        let mark = cfg
            .find("set berth_boot=1\nunset berth_menu\n")
            .expect("mark");
        let saved = cfg.find("save_env berth_boot berth_menu\n").expect("saved");
        let slot = cfg.find("set berth_slot=A").expect("slot");
        assert!(pending < asked && asked < menu && menu < keyboard && keyboard < hidden);
        // The mark is saved before anything that could fail to boot.
        assert!(hidden < mark && mark < saved && saved < slot);
        let mut vars = std::collections::BTreeMap::new();
        vars.insert(BOOT_VAR.to_string(), BOOT_PENDING.to_string());
        assert!(boot_got_far(&mut vars));
        assert!(!boot_got_far(&mut vars), "nothing to write the second time");
        ask_for_menu(&mut vars);
        assert_eq!(vars.get(MENU_VAR).map(String::as_str), Some("1"));
    }

    #[test]
    fn the_disk_config_tries_new_kernel_arguments_once() {
        let cfg = disk_grub_cfg("0.1.0");
        assert!(cfg.contains(
            "load_env berth_default berth_try berth_args berth_args_next berth_args_try "
        ));
        assert!(cfg.contains("set berth_kargs=\"$berth_args\"\n"));
        let armed = cfg
            .find("if [ \"$berth_args_try\" = 1 ]; then")
            .expect("armed");
        let saved = cfg.find("if save_env berth_args_try; then").expect("saved");
        let next = cfg
            .find("set berth_kargs=\"$berth_args_next\"")
            .expect("next");
        let flag = cfg
            .find("set berth_args_trial=berth.args_trial=1")
            .expect("flag");
        assert!(armed < saved && saved < next && next < flag);
        // The kept arguments come after Berth's own, in every entry.
        for line in cfg.lines().filter(|l| l.trim_start().starts_with("linux")) {
            let own = line.find("$berth_os_args").expect("own");
            let kept = line.find("$berth_args_trial $berth_kargs").expect("kept");
            assert!(own < kept, "{line}");
            assert!(line.ends_with("$berth_kargs"), "{line}");
        }
    }

    #[test]
    fn boot_code_points_at_core_and_keeps_the_partition_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = Images::in_dir(dir.path());
        let mut boot = vec![0u8; 512];
        boot[0] = 0xEB;
        std::fs::write(&images.boot_img, &boot).expect("boot.img");
        std::fs::write(&images.core_img, vec![7u8; 4096]).expect("core.img");
        let path = dir.path().join("disk");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("disk");
        file.set_len(crate::disk::MIN_DISK_BYTES).expect("size");
        let layout = Layout::new(crate::disk::MIN_DISK_BYTES, 512).expect("layout");
        let mut f = &file;
        crate::disk::write_gpt(&mut f, &layout).expect("gpt");
        install_bios(&file, &layout, &images).expect("install");
        let mut head = vec![0u8; 3 * 1024 * 1024];
        f.seek(SeekFrom::Start(0)).expect("seek");
        std::io::Read::read_exact(&mut f, &mut head).expect("read");
        assert_eq!(head[0], 0xEB);
        assert_eq!(&head[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(&head[510..512], &[0x55, 0xAA]);
        assert_eq!(head[450], 0xEE, "the protective MBR entry is kept");
        let core = 1 << 20;
        assert_eq!(head[core], 7);
        assert_eq!(&head[core + 500..core + 508], &2049u64.to_le_bytes());
    }
}
