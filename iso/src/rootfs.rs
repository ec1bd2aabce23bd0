//! The OS image (`rootfs.squashfs`): a staging tree made here, then
//! `mksquashfs -comp zstd`. Layout (usr-merged; see `iso/README.md`):
//!
//! - `/usr/bin/berth`, `/usr/sbin/init`, `/usr/sbin/berthd` and `/usr/sbin/modprobe` → berth
//! - `/usr/lib/modules/<kver>`: the modules the running system needs, with
//!   depmod's index files
//! - `/usr/bin/busybox` (static) and its applet links in `/usr/share/berth/busybox`
//! - e2fsprogs (`mkfs.ext4`, `e2fsck`, …) with the shared libraries they use
//! - `/usr/share/berth/etc`: defaults the tmpfs `/etc` is seeded from
//! - `/usr/share/berth/{images,layers}`: every system image, pre-unpacked

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_images::progress::Quiet;
use berth_images::unpack::Limits;
use berth_images::Store;

use crate::kernel::Kernel;
use crate::modules::ModuleIndex;
use crate::{io_err, run, Error, Result};

/// Module paths (under `lib/modules/<kver>/`) the running system may load:
/// storage and file systems again (hotplug, `mounts:`), NICs QEMU and clouds
/// offer, and everything networking and the user engine need (bridges, veth,
/// bonds, VLANs, VXLAN, netfilter in both its iptables and nf_tables forms,
/// IPVS, traffic control). Wireless, sound, GPU and exotic hardware stay out
/// to keep the image small.
pub const RUNTIME_MODULE_PREFIXES: &[&str] = &[
    "kernel/arch/x86/crypto/",
    "kernel/crypto/",
    "kernel/lib/",
    "kernel/fs/overlayfs/",
    "kernel/fs/ext4/",
    "kernel/fs/jbd2/",
    "kernel/fs/mbcache",
    "kernel/fs/fat/",
    "kernel/fs/isofs/",
    "kernel/fs/squashfs/",
    "kernel/fs/nls/",
    "kernel/fs/fuse/",
    "kernel/fs/xfs/",
    "kernel/fs/btrfs/",
    "kernel/fs/autofs/",
    "kernel/fs/efivarfs/",
    "kernel/fs/nfs/",
    "kernel/fs/nfs_common/",
    "kernel/fs/lockd/",
    "kernel/net/sunrpc/",
    "kernel/drivers/block/",
    "kernel/drivers/ata/",
    "kernel/drivers/nvme/",
    "kernel/drivers/virtio/",
    "kernel/drivers/cdrom/",
    "kernel/drivers/scsi/sd_mod",
    "kernel/drivers/scsi/sr_mod",
    "kernel/drivers/scsi/sg",
    "kernel/drivers/scsi/virtio_scsi",
    "kernel/drivers/scsi/scsi_mod",
    "kernel/drivers/scsi/vmw_pvscsi",
    "kernel/drivers/usb/storage/",
    "kernel/drivers/usb/host/",
    // Keyboards and mice that follow the HID and PS/2 standards, Hyper-V's,
    // and the power button's evdev; vendor quirk drivers, touchscreens,
    // tablets and joysticks stay out.
    "kernel/drivers/hid/hid.ko",
    "kernel/drivers/hid/hid-generic",
    "kernel/drivers/hid/hid-hyperv",
    "kernel/drivers/hid/uhid",
    "kernel/drivers/hid/usbhid/",
    "kernel/drivers/hid/i2c-hid/",
    "kernel/drivers/input/evdev",
    "kernel/drivers/input/mouse/psmouse",
    "kernel/drivers/input/misc/uinput",
    "kernel/drivers/input/misc/pcspkr",
    "kernel/drivers/input/serio/",
    "kernel/drivers/md/",
    "kernel/drivers/char/hw_random/",
    "kernel/drivers/char/tpm/",
    "kernel/drivers/watchdog/",
    "kernel/drivers/firmware/",
    "kernel/drivers/acpi/",
    "kernel/drivers/vhost/",
    "kernel/drivers/net/virtio_net",
    "kernel/drivers/net/net_failover",
    "kernel/drivers/net/ethernet/intel/e1000/",
    "kernel/drivers/net/ethernet/intel/e1000e/",
    "kernel/drivers/net/ethernet/intel/igb/",
    "kernel/drivers/net/ethernet/intel/igc/",
    "kernel/drivers/net/ethernet/intel/ixgbe/",
    "kernel/drivers/net/ethernet/intel/iavf/",
    "kernel/drivers/net/ethernet/realtek/",
    "kernel/drivers/net/ethernet/amazon/",
    "kernel/drivers/net/ethernet/google/",
    "kernel/drivers/net/vmxnet3/",
    "kernel/drivers/net/hyperv/",
    "kernel/drivers/net/bonding/",
    "kernel/drivers/net/team/",
    "kernel/drivers/net/veth",
    "kernel/drivers/net/vxlan/",
    "kernel/drivers/net/geneve",
    "kernel/drivers/net/macvlan",
    "kernel/drivers/net/macvtap",
    "kernel/drivers/net/ipvlan/",
    "kernel/drivers/net/dummy",
    "kernel/drivers/net/tun",
    "kernel/drivers/net/tap",
    "kernel/drivers/net/ifb",
    "kernel/drivers/net/wireguard/",
    "kernel/drivers/net/nlmon",
    "kernel/net/bridge/",
    "kernel/net/8021q/",
    "kernel/net/802/",
    "kernel/net/llc/",
    "kernel/net/netfilter/",
    "kernel/net/ipv4/",
    "kernel/net/ipv6/",
    "kernel/net/sched/",
    "kernel/net/core/",
    "kernel/net/packet/",
    "kernel/net/unix/",
    "kernel/net/key/",
    "kernel/net/xfrm/",
    "kernel/net/vmw_vsock/",
    "kernel/net/openvswitch/",
    "kernel/net/sctp/",
    "kernel/net/tls/",
    "kernel/net/mpls/",
    "kernel/net/netlink/",
    "kernel/net/wireguard/",
];

/// Paths under [`RUNTIME_MODULE_PREFIXES`] that stay out all the same: the
/// kernel's self-tests (`test_bpf` alone is 4.6 MB) and NVMe and NFS over
/// RDMA, which would bring the InfiniBand core. A module something kept
/// depends on still ships, through the closure.
pub const RUNTIME_MODULE_EXCLUDED: &[&str] = &[
    "kernel/lib/test_",
    "kernel/drivers/nvme/target/",
    "kernel/drivers/nvme/host/nvme-rdma",
    "kernel/net/sunrpc/xprtrdma/",
];

/// Whether the module at `path` (under `lib/modules/<kver>/`) is a root of the
/// run-time set.
pub fn is_runtime_module(path: &str) -> bool {
    RUNTIME_MODULE_PREFIXES.iter().any(|p| path.starts_with(p))
        && !RUNTIME_MODULE_EXCLUDED.iter().any(|p| path.starts_with(p))
}

/// e2fsprogs programs copied from the host, with the names they are run as.
pub const E2FSPROGS: &[(&str, &[&str])] = &[
    ("/usr/sbin/mke2fs", &["mkfs.ext4", "mkfs.ext2", "mkfs.ext3"]),
    ("/usr/sbin/e2fsck", &["fsck.ext4", "fsck.ext2", "fsck.ext3"]),
    ("/usr/sbin/tune2fs", &["e2label"]),
    ("/usr/sbin/resize2fs", &[]),
    ("/usr/sbin/dumpe2fs", &[]),
];

#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// The static `berth` binary.
    pub berth: &'a Path,
    pub kernel: &'a Kernel,
    /// A static busybox (the `busybox-static` package's `/bin/busybox`).
    pub busybox: &'a Path,
    /// The store `cargo xtask images` built the system images into.
    pub image_store: Option<&'a Path>,
    /// The version written to os-release.
    pub version: &'a str,
    /// The directory holding the catalogues ([`CATALOGUES`]), each shipped
    /// at `/usr/share/berth/NAME`.
    pub catalogues: Option<&'a Path>,
    /// GRUB's images for installed disks, shipped at
    /// [`crate::bootloader::SHIPPED_DIR`] for `berth install`.
    pub boot_images: Option<&'a crate::bootloader::Images>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub modules: usize,
    pub images: Vec<String>,
    pub layers: usize,
    /// Identical files across the layers, made one inode.
    pub shared: crate::hardlink::Shared,
}

/// Fills `staging` (emptied first) with the root file system.
pub fn stage(spec: &Spec<'_>, staging: &Path) -> Result<Report> {
    if staging.exists() {
        std::fs::remove_dir_all(staging).map_err(io_err(staging))?;
    }
    let mut report = Report::default();
    for dir in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "usr/share/berth/etc",
        "usr/share/berth/busybox",
        // Mount points: the root is read-only, so they must exist in the image.
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "etc",
        "var",
        "home",
        "opt",
        "root",
        "mnt",
        "media",
        "srv",
    ] {
        mkdir(&staging.join(dir))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("usr/sbin/init", "../bin/berth"),
        ("usr/sbin/berthd", "../bin/berth"),
        // The kernel's on-demand module loader (`/sbin/modprobe`).
        ("usr/sbin/modprobe", "../bin/berth"),
        ("usr/bin/sh", "busybox"),
    ] {
        symlink(target, &staging.join(link))?;
    }
    copy(spec.berth, &staging.join("usr/bin/berth"), 0o755)?;
    stage_busybox(spec.busybox, staging)?;
    stage_e2fsprogs(staging)?;
    report.modules = stage_modules(spec.kernel, staging)?;
    stage_etc(staging, spec.version)?;
    if let Some(catalogues) = spec.catalogues {
        for name in CATALOGUES {
            let dir = catalogues.join(name);
            if dir.is_dir() {
                stage_catalogue(&dir, &staging.join("usr/share/berth").join(name))?;
            }
        }
    }
    if let Some(boot) = spec.boot_images {
        let dir = staging.join(crate::bootloader::SHIPPED_DIR.trim_start_matches('/'));
        mkdir(&dir)?;
        for image in boot.all() {
            let name = image.file_name().unwrap_or_default();
            copy(image, &dir.join(name), 0o644)?;
        }
    }
    if let Some(store) = spec.image_store {
        let (images, layers) = stage_images(store, &staging.join("usr/share/berth"))?;
        report.images = images;
        report.layers = layers;
        report.shared =
            crate::hardlink::link_identical_files(&staging.join("usr/share/berth/layers"))?;
    }
    Ok(report)
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io_err(path))
}

fn symlink(target: &str, link: &Path) -> Result<()> {
    if let Some(parent) = link.parent() {
        mkdir(parent)?;
    }
    std::os::unix::fs::symlink(target, link).map_err(io_err(link))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        mkdir(parent)?;
    }
    std::fs::copy(from, to).map_err(io_err(from))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).map_err(io_err(to))
}

/// Busybox and a link per applet, in a directory of their own so they never
/// shadow a real program; the emergency shell puts it on its PATH.
fn stage_busybox(busybox: &Path, staging: &Path) -> Result<()> {
    copy(busybox, &staging.join("usr/bin/busybox"), 0o755)?;
    let list = run(Command::new(busybox).arg("--list"))?;
    for applet in String::from_utf8_lossy(&list).lines() {
        let applet = applet.trim();
        // Applet names are plain words; anything else is not a file name.
        if applet.is_empty() || applet.contains('/') || applet.starts_with('.') {
            continue;
        }
        symlink(
            "/usr/bin/busybox",
            &staging.join("usr/share/berth/busybox").join(applet),
        )?;
    }
    Ok(())
}

/// The host's e2fsprogs and the shared libraries `ldd` says they load, at the
/// same paths (the image is usr-merged like Debian, so /lib paths resolve).
fn stage_e2fsprogs(staging: &Path) -> Result<()> {
    let mut libs = BTreeSet::new();
    for (program, aliases) in E2FSPROGS {
        let program = Path::new(program);
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        copy(program, &staging.join("usr/sbin").join(&name), 0o755)?;
        for alias in *aliases {
            symlink(&name, &staging.join("usr/sbin").join(alias))?;
        }
        let out = run(Command::new("ldd").arg(program))?;
        for line in String::from_utf8_lossy(&out).lines() {
            // "libext2fs.so.2 => /lib/x86_64-linux-gnu/libext2fs.so.2 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)"
            let path = line
                .split("=>")
                .last()
                .and_then(|s| s.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(path) = path {
                libs.insert(PathBuf::from(path));
            }
        }
    }
    for lib in libs {
        // Resolve the symlink chain so the real file is copied under the
        // name the loader asks for.
        let real = std::fs::canonicalize(&lib).map_err(io_err(&lib))?;
        let rel = lib.strip_prefix("/").unwrap_or(&lib);
        let dest = usr_merged(staging, rel);
        if !dest.exists() {
            copy(&real, &dest, 0o755)?;
        }
    }
    let conf = Path::new("/etc/mke2fs.conf");
    if conf.exists() {
        copy(
            conf,
            &staging.join("usr/share/berth/etc/mke2fs.conf"),
            0o644,
        )?;
    }
    Ok(())
}

/// `lib/x` → `usr/lib/x` (the staging tree's `/lib` is a symlink already, but
/// writing through the real path keeps this independent of that).
fn usr_merged(staging: &Path, rel: &Path) -> PathBuf {
    for top in ["lib", "lib64", "bin", "sbin"] {
        if let Ok(rest) = rel.strip_prefix(top) {
            return staging.join("usr").join(top).join(rest);
        }
    }
    staging.join(rel)
}

/// The run-time module set (closure of [`is_runtime_module`]) and
/// depmod's index for it, so modprobe inside containers works too.
fn stage_modules(kernel: &Kernel, staging: &Path) -> Result<usize> {
    let index = ModuleIndex::load(&kernel.modules_dir)?;
    let mut roots = index.matching(is_runtime_module);
    roots.extend(crate::initramfs::BOOT_MODULES.iter().map(|m| m.to_string()));
    let closure = index.closure(&roots)?;
    let dest = staging.join("usr/lib/modules").join(&kernel.version);
    for name in &closure.load_order {
        if let Some(rel) = index.path_of(name) {
            std::fs::create_dir_all(dest.join(rel).parent().unwrap_or(&dest))
                .map_err(io_err(&dest))?;
            let to = dest.join(rel);
            let data = crate::modules::read_for_image(&kernel.modules_dir.join(rel))?;
            std::fs::write(&to, data).map_err(io_err(&to))?;
        }
    }
    for extra in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let from = kernel.modules_dir.join(extra);
        if from.exists() {
            std::fs::copy(&from, dest.join(extra)).map_err(io_err(&from))?;
        }
    }
    crate::kernel::depmod(staging, &kernel.version)?;
    Ok(closure.load_order.len())
}

/// The catalogues of service files: optional services (`berth.services_include`),
/// consoles (`berth.console.name`) and user engines (`berth.engine.name`).
pub const CATALOGUES: &[&str] = &["services", "consoles", "engines"];

/// Copies the `*.yml` service files of a catalogue.
fn stage_catalogue(catalogue: &Path, dest: &Path) -> Result<()> {
    mkdir(dest)?;
    for entry in std::fs::read_dir(catalogue).map_err(io_err(catalogue))? {
        let path = entry.map_err(io_err(catalogue))?.path();
        if let (Some(name), Some("yml")) =
            (path.file_name(), path.extension().and_then(|e| e.to_str()))
        {
            copy(&path, &dest.join(name), 0o644)?;
        }
    }
    Ok(())
}

/// Defaults for the tmpfs `/etc` (stage 1 copies `/usr/share/berth/etc`).
fn stage_etc(staging: &Path, version: &str) -> Result<()> {
    let etc = staging.join("usr/share/berth/etc");
    let os_release = format!(
        "NAME=\"Berth\"\n\
         ID=berth\n\
         PRETTY_NAME=\"Berth {version}\"\n\
         VERSION=\"{version}\"\n\
         VERSION_ID=\"{version}\"\n\
         HOME_URL=\"https://github.com/berth-os/berth\"\n"
    );
    let files: &[(&str, &str, u32)] = &[
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/sh\n\
             berth:x:1000:1000:Berth:/home/berth:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            0o644,
        ),
        (
            "group",
            "root:x:0:\nwheel:x:10:berth\ndocker:x:999:berth\nberth:x:1000:\nnogroup:x:65534:\n",
            0o644,
        ),
        (
            "shadow",
            "root:*:1::::::\nberth:*:1::::::\nnobody:*:1::::::\n",
            0o600,
        ),
        ("hostname", "berth\n", 0o644),
        (
            "hosts",
            "127.0.0.1\tlocalhost\n127.0.1.1\tberth\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            0o644,
        ),
        // Replaced by the network service once DHCP or static config says more.
        ("resolv.conf", "", 0o644),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
            0o644,
        ),
        ("os-release", &os_release, 0o644),
        // Loading bonding would otherwise create a `bond0` with default
        // options before netconf can create it with the configured ones.
        (
            "modprobe.d/berth.conf",
            "options bonding max_bonds=0\n",
            0o644,
        ),
    ];
    for (name, text, mode) in files {
        let path = etc.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&path, text).map_err(io_err(&path))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(io_err(&path))?;
    }
    let lib = staging.join("usr/lib/os-release");
    std::fs::write(&lib, os_release).map_err(io_err(&lib))?;
    Ok(())
}

/// Copies every image of `source` into a store at `dest` and unpacks its
/// layers there. The compressed layer blobs are then dropped: the unpacked
/// directories are all a booted system reads (`Store::unpack_image` skips a
/// layer whose directory exists), and keeping both would double the image.
/// Manifests and configs stay so the store resolves as usual.
fn stage_images(source: &Path, dest: &Path) -> Result<(Vec<String>, usize)> {
    let wrap = |reference: &str| {
        let reference = reference.to_string();
        move |source| Error::Image { reference, source }
    };
    let src = Store::open(source).map_err(wrap("<source store>"))?;
    let dst = Store::open(dest).map_err(wrap("<staging store>"))?;
    let mut names = Vec::new();
    let mut layers = BTreeSet::new();
    let mut layer_blobs = BTreeSet::new();
    for image in src.list().map_err(wrap("<source store>"))? {
        let r = image.reference.clone();
        let mut blobs = vec![
            (image.descriptor.digest.clone(), image.descriptor.size),
            (image.manifest_digest.clone(), 0),
            (
                image.manifest.config.digest.clone(),
                image.manifest.config.size,
            ),
        ];
        for layer in &image.manifest.layers {
            blobs.push((layer.digest.clone(), layer.size));
            layer_blobs.insert(layer.digest.clone());
        }
        for (digest, size) in blobs {
            if dst.has_blob(&digest) {
                continue;
            }
            let file = src.open_blob(&digest).map_err(wrap(&r))?;
            let size = (size > 0).then_some(size);
            dst.put_blob(file, Some(&digest), size).map_err(wrap(&r))?;
        }
        dst.tag(&r, &image.descriptor).map_err(wrap(&r))?;
        let resolved = dst.resolve(&r).map_err(wrap(&r))?;
        let dirs = dst
            .unpack_image(&resolved, &Limits::default(), &Quiet)
            .map_err(wrap(&r))?;
        layers.extend(dirs);
        names.push(r);
    }
    for digest in layer_blobs {
        let path = dst.blob_path(&digest);
        std::fs::remove_file(&path).map_err(io_err(&path))?;
    }
    Ok((names, layers.len()))
}

/// `mksquashfs staging out -comp zstd`, replacing `out`.
pub fn mksquashfs(staging: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        std::fs::remove_file(out).map_err(io_err(out))?;
    }
    run(Command::new("mksquashfs")
        .arg(staging)
        .arg(out)
        .args(["-comp", "zstd", "-Xcompression-level", "15"])
        // 64 KiB blocks. A block is decoded whole whenever any byte of it is
        // read, and a small file shares its (fragment) block with others, so
        // every block size above what is read costs every boot and every
        // machine short of memory. Under icount (docs/benchmarks.md, "Smaller
        // squashfs blocks"): ready 0.2 s sooner than with 256 KiB, docker's
        // API 0.3 s, and a 96 MiB machine lets a user in within 15 s of the
        // ready line where with 256 KiB it re-read evicted blocks for minutes;
        // for a root 6% (10 MiB) larger. zstd 19 in 1 MiB blocks made it 9.5 MB
        // smaller but the SSH server's start 0.8 s longer; xz would make it
        // 119 MB and decodes twelve times slower ("The ISO's size").
        .args(["-b", "64K", "-noappend", "-no-progress", "-quiet"])
        // Reproducible: no build time in the superblock.
        .args(["-mkfs-time", "0"]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Docker Swarm loads (docs/cluster.md), at Debian 6.1's paths: the
    /// run-time set must keep them when the prefixes are trimmed. The QEMU
    /// cluster test uses them for real.
    #[test]
    fn the_modules_docker_swarm_needs_ship() {
        let swarm = [
            "kernel/drivers/net/vxlan/vxlan.ko",
            "kernel/net/ipv4/udp_tunnel.ko",
            "kernel/net/ipv6/ip6_udp_tunnel.ko",
            "kernel/net/netfilter/ipvs/ip_vs.ko",
            "kernel/net/netfilter/ipvs/ip_vs_rr.ko",
            "kernel/net/netfilter/ipvs/ip_vs_wrr.ko",
            "kernel/net/netfilter/ipvs/ip_vs_sh.ko",
            "kernel/net/netfilter/xt_ipvs.ko",
            "kernel/net/netfilter/xt_u32.ko",
            "kernel/net/netfilter/xt_mark.ko",
            "kernel/net/netfilter/xt_policy.ko",
            "kernel/net/netfilter/nf_conntrack_netlink.ko",
            "kernel/net/bridge/br_netfilter.ko",
            "kernel/net/xfrm/xfrm_user.ko",
            "kernel/net/xfrm/xfrm_algo.ko",
            "kernel/net/key/af_key.ko",
            "kernel/net/ipv4/esp4.ko",
            "kernel/crypto/gcm.ko",
            "kernel/crypto/authenc.ko",
        ];
        for path in swarm {
            assert!(
                is_runtime_module(path),
                "{path} is not in the run-time module set"
            );
        }
    }

    /// Standard keyboards and mice, the power button and the storage and
    /// network drivers stay; self-tests, vendor HID quirks, touchscreens and
    /// RDMA go.
    #[test]
    fn the_run_time_set_keeps_standard_input_and_drops_tests_and_quirks() {
        for kept in [
            "kernel/drivers/hid/hid.ko",
            "kernel/drivers/hid/hid-generic.ko",
            "kernel/drivers/hid/usbhid/usbhid.ko",
            "kernel/drivers/input/evdev.ko",
            "kernel/drivers/input/mouse/psmouse.ko",
            "kernel/drivers/input/serio/serio_raw.ko",
            "kernel/lib/crc32c_generic.ko",
            "kernel/drivers/nvme/host/nvme.ko",
            "kernel/drivers/nvme/host/nvme-tcp.ko",
            "kernel/net/sunrpc/sunrpc.ko",
        ] {
            assert!(is_runtime_module(kept), "{kept} left out");
        }
        for dropped in [
            "kernel/lib/test_bpf.ko",
            "kernel/drivers/hid/hid-apple.ko",
            "kernel/drivers/hid/hid-picolcd.ko",
            "kernel/drivers/input/touchscreen/sur40.ko",
            "kernel/drivers/input/joystick/xpad.ko",
            "kernel/drivers/nvme/target/nvmet.ko",
            "kernel/drivers/nvme/host/nvme-rdma.ko",
            "kernel/net/sunrpc/xprtrdma/rpcrdma.ko",
        ] {
            assert!(!is_runtime_module(dropped), "{dropped} kept");
        }
    }
}
