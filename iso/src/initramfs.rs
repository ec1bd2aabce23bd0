//! The initramfs: `/init` (the static `berth`), `/dev/console`, the mount points
//! stage 1 uses, and only the kernel modules needed to reach the root, with a
//! trimmed `modules.dep` in load order. Also the kernel-only baseline: an
//! initramfs whose `/init` is busybox printing a marker and powering off.

use std::io::Write;
use std::path::Path;

use crate::cpio::{Archive, Entry};
use crate::kernel::Kernel;
use crate::modules::{Closure, ModuleIndex};
use crate::{io_err, Result};

/// Modules stage 1 needs to find and mount the OS image and the state
/// partition on the machines Berth targets (QEMU/KVM clouds, PCs). Bus
/// drivers come first in spirit: without virtio_pci, ata_piix or the USB host
/// controllers the disk drivers have nothing to bind to.
pub const BOOT_MODULES: &[&str] = &[
    // buses and host controllers
    "virtio_pci",
    "virtio_mmio",
    "ata_piix",
    "ata_generic",
    "ahci",
    "xhci_pci",
    "ehci_pci",
    "uhci_hcd",
    "ohci_pci",
    // hardware watchdogs (QEMU's i6300esb, Intel PCs' iTCO): a trial boot
    // arms one in stage 1 (init/src/watchdog.rs)
    "i6300esb",
    "iTCO_wdt",
    // a hypervisor's entropy device, so the kernel's random pool is ready
    // seconds sooner where the CPU has no RDRAND (QEMU's default CPU)
    "virtio_rng",
    // disks
    "virtio_blk",
    "virtio_scsi",
    "nvme",
    "sd_mod",
    "sr_mod",
    "usb_storage",
    "uas",
    // file systems and what they need to mount
    "isofs",
    "squashfs",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_iso8859_1",
    "nls_ascii",
    "nls_utf8",
    "overlay",
    "loop",
    // ext4 checksums (soft dependency, also pulled by ext4's softdep)
    "crc32c_generic",
];

/// What [`build`] produced.
#[derive(Debug, Clone)]
pub struct Initramfs {
    /// cpio newc, zstd-compressed: what the boot loader loads.
    pub compressed: Vec<u8>,
    pub uncompressed_size: u64,
    pub modules: Closure,
}

/// The initramfs for `kernel` with `init` (stage 1's binary) as `/init`.
pub fn build(init: &Path, kernel: &Kernel, index: &ModuleIndex) -> Result<Initramfs> {
    let mut archive = Archive::new();
    let init = std::fs::read(init).map_err(io_err(init))?;
    archive.file("init", 0o755, init)?;
    skeleton(&mut archive)?;

    let closure = index.closure(BOOT_MODULES)?;
    let kdir = format!("lib/modules/{}", kernel.version);
    for name in &closure.load_order {
        let Some(rel) = index.path_of(name) else {
            continue;
        };
        let data = crate::modules::read_for_image(&kernel.modules_dir.join(rel))?;
        let stored = stored_module(rel);
        let data = if stored != rel {
            compress_module(rel, &data)?
        } else {
            // Compressed ones (.ko.xz) stay so: the kernel's finit_module
            // decompresses what it was built to accept.
            data
        };
        archive.file(&format!("{kdir}/{stored}"), 0o644, data)?;
    }
    archive.file(
        &format!("{kdir}/modules.dep"),
        0o644,
        index.trimmed_dep(&closure, stored_module).into_bytes(),
    )?;
    // Stage 1 loads the drivers of the devices present, matched by their
    // modaliases, and filesystems by `fs-TYPE` (init/src/stage1/drivers.rs).
    let aliases = kernel.modules_dir.join("modules.alias");
    let aliases = std::fs::read_to_string(&aliases).map_err(io_err(&aliases))?;
    archive.file(
        &format!("{kdir}/modules.alias"),
        0o644,
        crate::modules::trimmed_alias(&aliases, &closure).into_bytes(),
    )?;
    // Lets stage 1 tell "built in" from "missing" without a warning.
    for extra in ["modules.builtin", "modules.builtin.modinfo"] {
        let src = kernel.modules_dir.join(extra);
        if src.exists() {
            let data = std::fs::read(&src).map_err(io_err(&src))?;
            archive.file(&format!("{kdir}/{extra}"), 0o644, data)?;
        }
    }
    let raw = archive.to_newc()?;
    let compressed = compress(&raw)?;
    Ok(Initramfs {
        compressed,
        uncompressed_size: raw.len() as u64,
        modules: closure,
    })
}

/// The name a module file has in the initramfs: `.ko` files are stored as
/// `.ko.zst` ([`compress_module`]).
fn stored_module(rel: &str) -> String {
    if rel.ends_with(".ko") {
        format!("{rel}{}", berth_sys::modules::ZSTD_SUFFIX)
    } else {
        rel.to_string()
    }
}

/// Each driver compressed on its own, so the kernel's unpack before `/init`
/// copies the drivers (the outer zstd stream stores compressed data as it is)
/// and stage 1 decodes only those it loads (`berth_sys::modules`): a QEMU boot
/// loads about 1.5 MB of the 10 MB, and the unpacked initramfs takes 4.5 MB of a
/// small machine's memory instead of 12. The kernel's own module decompression
/// (xz only, in Debian's) gave back in stage 1 nearly all that the unpack saved
/// (docs/benchmarks.md, "Drivers decoded when loaded").
fn compress_module(rel: &str, data: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(data, 19).map_err(io_err(Path::new(rel)))
}

/// Directories and device nodes every initramfs here has. `/dev/console` must
/// exist before devtmpfs is mounted: the kernel opens it as init's stdio.
fn skeleton(archive: &mut Archive) -> Result<()> {
    for dir in ["proc", "sys", "dev", "run", "tmp", "mnt", "sysroot"] {
        archive.dir(dir)?;
    }
    archive.insert(
        "dev/console",
        Entry::CharDev {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    )?;
    archive.insert(
        "dev/null",
        Entry::CharDev {
            mode: 0o666,
            major: 1,
            minor: 3,
        },
    )?;
    Ok(())
}

/// Level 19: the initramfs is built once and read on every boot; zstd
/// decompression speed barely depends on the level.
///
/// The window is capped at 1 MiB ([`INITRAMFS_WINDOW_LOG`]): the kernel
/// unpacks the initramfs through a buffer the size of the window, allocated
/// while the unpacked files already fill memory. Level 19's own 8 MiB window
/// made a 96 MiB machine run out of memory there, before `/init`; 1 MiB costs
/// about 2% in size (2.38 → 2.43 MB).
fn compress(raw: &[u8]) -> Result<Vec<u8>> {
    let name = Path::new("<initramfs zstd>");
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 19).map_err(io_err(name))?;
    encoder
        .window_log(INITRAMFS_WINDOW_LOG)
        .map_err(io_err(name))?;
    encoder.write_all(raw).map_err(io_err(name))?;
    encoder.finish().map_err(io_err(name))
}

/// log2 of the initramfs's zstd window: 1 MiB.
const INITRAMFS_WINDOW_LOG: u32 = 20;

/// The kernel-only baseline: `/init` is a busybox shell script that prints
/// `marker` on the console and powers the machine off at once. It measures
/// firmware + kernel + initramfs unpack, the floor any init can reach.
pub fn baseline(busybox: &Path, marker: &str) -> Result<Vec<u8>> {
    let mut archive = Archive::new();
    let data = std::fs::read(busybox).map_err(io_err(busybox))?;
    archive.file("bin/busybox", 0o755, data)?;
    archive.symlink("bin/sh", "busybox")?;
    skeleton(&mut archive)?;
    let script = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox echo '{marker}'\n\
         /bin/busybox poweroff -f\n"
    );
    archive.file("init", 0o755, script.into_bytes())?;
    compress(&archive.to_newc()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_initramfs_decodes_with_a_1_mib_window() {
        // 4 MiB that do not compress to nothing, so level 19 would pick its 8 MiB window.
        let raw: Vec<u8> = (0u32..1 << 20)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect();
        let compressed = compress(&raw).expect("compress");
        let mut decoder = zstd::stream::Decoder::new(&compressed[..]).expect("decoder");
        decoder.window_log_max(20).expect("window_log_max");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut decoder, &mut out).expect("decodes within 1 MiB");
        assert_eq!(out, raw);
    }

    /// (name, data) of each file in a cpio newc archive.
    fn newc_files(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
        let field = |at: usize| {
            let hex = std::str::from_utf8(&raw[at..at + 8]).expect("hex");
            usize::from_str_radix(hex, 16).expect("field")
        };
        let (mut files, mut at) = (Vec::new(), 0);
        loop {
            assert_eq!(&raw[at..at + 6], b"070701");
            let (mode, size, name_len) = (field(at + 14), field(at + 54), field(at + 94));
            let name =
                String::from_utf8(raw[at + 110..at + 110 + name_len - 1].to_vec()).expect("name");
            let data_at = (at + 110 + name_len).next_multiple_of(4);
            if name == "TRAILER!!!" {
                return files;
            }
            if mode & 0o170000 == 0o100000 {
                files.push((name, raw[data_at..data_at + size].to_vec()));
            }
            at = (data_at + size).next_multiple_of(4);
        }
    }

    #[test]
    fn drivers_are_stored_zstd_compressed_under_the_names_modules_dep_gives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let modules_dir = dir.path().join("lib/modules/6.12.0-test");
        std::fs::create_dir_all(modules_dir.join("kernel/fs/overlayfs")).expect("mkdir");
        std::fs::create_dir_all(modules_dir.join("kernel/drivers/block")).expect("mkdir");
        let overlay = b"\x7fELF overlay's code ".repeat(3000);
        std::fs::write(modules_dir.join("kernel/fs/overlayfs/overlay.ko"), &overlay)
            .expect("write");
        // Compressed by the distribution: stored as it is, for the kernel to decode.
        std::fs::write(modules_dir.join("kernel/drivers/block/loop.ko.xz"), b"xz").expect("write");
        std::fs::write(
            modules_dir.join("modules.dep"),
            "kernel/drivers/block/loop.ko.xz:\nkernel/fs/overlayfs/overlay.ko: kernel/drivers/block/loop.ko.xz\n",
        )
        .expect("write");
        std::fs::write(
            modules_dir.join("modules.alias"),
            "alias fs-overlay overlay\n",
        )
        .expect("write");
        let builtin: String = BOOT_MODULES
            .iter()
            .filter(|m| !["overlay", "loop"].contains(m))
            .map(|m| format!("kernel/{m}.ko\n"))
            .collect();
        std::fs::write(modules_dir.join("modules.builtin"), builtin).expect("write");
        let init = dir.path().join("init");
        std::fs::write(&init, b"\x7fELF init").expect("write");
        let kernel = Kernel {
            package: "linux-image-test".into(),
            version: "6.12.0-test".into(),
            root: dir.path().into(),
            vmlinuz: dir.path().join("vmlinuz"),
            modules_dir: modules_dir.clone(),
        };
        let index = ModuleIndex::load(&modules_dir).expect("index");

        let built = build(&init, &kernel, &index).expect("build");
        let raw = zstd::stream::decode_all(&built.compressed[..]).expect("zstd");
        let files: std::collections::BTreeMap<_, _> = newc_files(&raw).into_iter().collect();
        let kdir = "lib/modules/6.12.0-test";
        assert_eq!(
            files[&format!("{kdir}/modules.dep")],
            b"kernel/drivers/block/loop.ko.xz:\nkernel/fs/overlayfs/overlay.ko.zst: kernel/drivers/block/loop.ko.xz\n"
        );
        assert_eq!(
            files[&format!("{kdir}/kernel/drivers/block/loop.ko.xz")],
            b"xz"
        );
        let stored = &files[&format!("{kdir}/kernel/fs/overlayfs/overlay.ko.zst")];
        assert!(stored.len() < overlay.len() / 10, "{} bytes", stored.len());
        let path = dir.path().join("overlay.ko.zst");
        std::fs::write(&path, stored).expect("write");
        assert_eq!(
            berth_sys::modules::decode_zstd_module(&path).expect("decodes"),
            overlay
        );
        assert!(!files.contains_key(&format!("{kdir}/kernel/fs/overlayfs/overlay.ko")));
    }

    #[test]
    fn baseline_has_init_and_console() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("busybox");
        std::fs::write(&fake, b"\x7fELF fake").expect("write");
        let bytes = baseline(&fake, "MARKER-123").expect("baseline");
        let raw = zstd::stream::decode_all(&bytes[..]).expect("zstd");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("MARKER-123"));
        assert!(text.contains("dev/console"));
        assert!(text.contains("poweroff -f"));
    }
}
