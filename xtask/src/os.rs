//! `cargo xtask build` / `run`: the bootable OS from the static `berth`, the
//! system images, Debian's kernel and the boot-media code in `berth-iso`.
//!
//! Each artifact records a fingerprint of its inputs next to itself
//! (`<artifact>.inputs`) and is rebuilt only when that changes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use berth_iso::{grub, initramfs, iso, kernel, modules::ModuleIndex, rootfs};

use crate::{mib, target_dir, workspace_root};

/// Where the build puts what it makes.
pub fn out_dir() -> PathBuf {
    target_dir().join("berth")
}

#[derive(Debug, Clone)]
pub struct Artifacts {
    pub berth: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    pub iso: PathBuf,
    /// The raw disk image (installed layout) and its qcow2.
    pub disk: PathBuf,
    pub qcow2: PathBuf,
}

/// The static busybox from `busybox-static`.
const BUSYBOX: &str = "/bin/busybox";

/// Builds everything stale; prints each artifact's size.
pub fn build() -> Result<Artifacts> {
    let total = Instant::now();
    let binaries = crate::build_binaries()?;
    let berth = binaries.berth;
    crate::images(None)?;
    let out = out_dir();

    progress("kernel (Debian linux-image-amd64)");
    let kernel = kernel::fetch(&out.join("cache/kernel"), kernel::META_PACKAGE)
        .context("fetching the kernel")?;
    let vmlinuz = out.join("vmlinuz");
    let fp = fingerprint(&[&kernel.vmlinuz], &[&kernel.package])?;
    if stale(&vmlinuz, &fp) {
        std::fs::copy(&kernel.vmlinuz, &vmlinuz)
            .with_context(|| format!("copying {}", kernel.vmlinuz.display()))?;
        record(&vmlinuz, &fp)?;
    }
    report(&vmlinuz, &kernel.package)?;

    progress("initramfs (cpio newc + zstd)");
    let initrd = out.join("initrd");
    let modules = initramfs::BOOT_MODULES.join(",");
    let fp = fingerprint(
        &[&binaries.initramfs_init, &vmlinuz],
        &[
            &kernel.package,
            &modules,
            &sources_of(&workspace_root().join("iso/src"))?,
        ],
    )?;
    if stale(&initrd, &fp) {
        let index = ModuleIndex::load(&kernel.modules_dir)?;
        let built = initramfs::build(&binaries.initramfs_init, &kernel, &index)?;
        write_atomic(&initrd, &built.compressed)?;
        record(&initrd, &fp)?;
        println!(
            "    {} modules ({} built in), {:.1} MiB uncompressed",
            built.modules.load_order.len(),
            built.modules.builtin.len(),
            mib(built.uncompressed_size)
        );
    }
    report(&initrd, "zstd")?;

    progress("GRUB for installed disks (grub-mkimage: boot.img, core.img, BOOTX64.EFI)");
    // grub-mkimage writes new files each time, and their mtimes are inputs of
    // the rootfs: made only when GRUB or the code that makes them changed.
    let boot_dir = out.join("boot");
    let boot_images = berth_iso::bootloader::Images::in_dir(&boot_dir);
    let grub_fp = fingerprint(
        &[
            Path::new("/usr/bin/grub-mkimage"),
            Path::new("/usr/lib/grub/i386-pc/boot.img"),
            Path::new("/usr/lib/grub/x86_64-efi/linux.mod"),
            &workspace_root().join("iso/src/bootloader.rs"),
            &workspace_root().join("iso/src/disk.rs"),
        ],
        &[],
    )?;
    let boot_images =
        if stale(&boot_images.efi, &grub_fp) || !boot_images.all().iter().all(|p| p.exists()) {
            let made = berth_iso::bootloader::build(&boot_dir).context("making GRUB's images")?;
            record(&made.efi, &grub_fp)?;
            made
        } else {
            boot_images
        };
    for image in boot_images.all() {
        report(image, "GRUB")?;
    }

    progress("rootfs.squashfs (staging + mksquashfs -comp zstd)");
    let rootfs_out = out.join("rootfs.squashfs");
    let store_index = crate::image_store_dir().join("images/index.json");
    // `cargo xtask build --os-version V` stamps V into the OS (os-release)
    // and its OS image; by default the workspace's version.
    let version_owned =
        std::env::var("BERTH_OS_VERSION").unwrap_or_else(|_| env!("CARGO_PKG_VERSION").into());
    let version = version_owned.as_str();
    let catalogues = workspace_root().join("configs");
    let mut catalogue_sources = String::new();
    for name in rootfs::CATALOGUES {
        let dir = catalogues.join(name);
        if dir.is_dir() {
            catalogue_sources.push_str(&sources_of(&dir)?);
        }
    }
    let fp = fingerprint(
        &[
            &berth,
            &vmlinuz,
            Path::new(BUSYBOX),
            &store_index,
            &boot_images.core_img,
            &boot_images.efi,
        ],
        &[
            &kernel.package,
            &rootfs::RUNTIME_MODULE_PREFIXES.join(","),
            &rootfs::RUNTIME_MODULE_EXCLUDED.join(","),
            version,
            &sources_of(&workspace_root().join("iso/src"))?,
            &catalogue_sources,
        ],
    )?;
    if stale(&rootfs_out, &fp) {
        let staging = out.join("rootfs-staging");
        let start = Instant::now();
        let staged = rootfs::stage(
            &rootfs::Spec {
                berth: &berth,
                kernel: &kernel,
                busybox: Path::new(BUSYBOX),
                image_store: Some(&crate::image_store_dir()),
                version,
                catalogues: Some(&catalogues),
                boot_images: Some(&boot_images),
            },
            &staging,
        )
        .context("staging the root file system")?;
        println!(
            "    staged in {:.0}s: {} modules, images {} ({} layers, pre-unpacked; \
             {} identical files ({} MiB) made one inode each)",
            start.elapsed().as_secs_f64(),
            staged.modules,
            staged.images.join(", "),
            staged.layers,
            staged.shared.files,
            staged.shared.bytes / (1024 * 1024)
        );
        let start = Instant::now();
        rootfs::mksquashfs(&staging, &rootfs_out).context("mksquashfs")?;
        println!("    mksquashfs in {:.0}s", start.elapsed().as_secs_f64());
        record(&rootfs_out, &fp)?;
    }
    report(&rootfs_out, "zstd squashfs")?;

    progress("berth.iso (grub-mkrescue, BIOS + UEFI)");
    let iso_out = out.join("berth.iso");
    let cfg = grub::GrubConfig {
        title: format!("Berth {version}"),
        ..grub::GrubConfig::default()
    }
    .render();
    let fp = fingerprint(&[&vmlinuz, &initrd, &rootfs_out], &[&cfg])?;
    if stale(&iso_out, &fp) {
        iso::build(&iso::Spec {
            vmlinuz: &vmlinuz,
            initrd: &initrd,
            rootfs: &rootfs_out,
            grub_cfg: &cfg,
            work_dir: &out.join("iso-tree"),
            out: &iso_out,
        })
        .context("grub-mkrescue")?;
        let label = iso::volume_id(&iso_out)?;
        if label != berth_iso::ISO_VOLUME_ID {
            bail!(
                "{} has volume id {label:?}, not {}",
                iso_out.display(),
                berth_iso::ISO_VOLUME_ID
            );
        }
        record(&iso_out, &fp)?;
    }
    report(&iso_out, "hybrid BIOS/UEFI, volume BERTH_ISO")?;

    progress("berth.img and berth.qcow2 (the installed layout, BIOS + UEFI)");
    let img_out = out.join("berth.img");
    let qcow2_out = out.join("berth.qcow2");
    let fp = fingerprint(
        &[
            &vmlinuz,
            &initrd,
            &rootfs_out,
            &boot_images.core_img,
            &boot_images.efi,
        ],
        // The version is in the ESP (the boot menu's titles).
        &[&sources_of(&workspace_root().join("iso/src"))?, version],
    )?;
    if stale(&img_out, &fp) || !qcow2_out.exists() {
        disk_image(
            &berth_iso::disk::Payload {
                version: version.to_string(),
                vmlinuz: vmlinuz.clone(),
                initrd: initrd.clone(),
                rootfs: rootfs_out.clone(),
                boot: boot_images.clone(),
                config: Vec::new(),
            },
            &img_out,
            &qcow2_out,
        )?;
        record(&img_out, &fp)?;
    }
    report(&img_out, "raw, sparse")?;
    report(&qcow2_out, "qcow2, compressed")?;

    progress("berth-os.tar (the OS image for upgrades, an oci-archive)");
    let os_out = out.join("berth-os.tar");
    let os_args = berth_iso::grub::os_args();
    let fp = fingerprint(&[&vmlinuz, &initrd, &rootfs_out], &[version, &os_args])?;
    if stale(&os_out, &fp) {
        let store_dir = out.join("os-store");
        let _ = std::fs::remove_dir_all(&store_dir);
        let store = berth_images::Store::open(&store_dir)?;
        let reference = format!("berth/os:{version}");
        berth_images::os_image::build(
            &store,
            &reference,
            version,
            &os_args,
            [&vmlinuz, &initrd, &rootfs_out],
        )
        .context("building the OS image")?;
        berth_images::archive::export(&store, &reference, &os_out)
            .context("writing berth-os.tar")?;
        std::fs::remove_dir_all(&store_dir)?;
        record(&os_out, &fp)?;
    }
    report(&os_out, &format!("version {version}"))?;
    println!("==> OS built in {:.0}s", total.elapsed().as_secs_f64());
    Ok(Artifacts {
        berth,
        vmlinuz,
        initrd,
        rootfs: rootfs_out,
        iso: iso_out,
        disk: img_out,
        qcow2: qcow2_out,
    })
}

/// The OS images the upgrade tests install (`qemu-tests/tests/upgrade.rs`),
/// made from this build in `target/berth/test-os/` as oci-archives: `next`
/// (a newer version of the same OS), and three broken ones — `panic` (its
/// initrd is empty: the kernel panics), `hang` (its PID 1 hangs after the
/// switch to its root, before berthd: its `modules.dep` is a FIFO that stage
/// 2 waits on forever, with the watchdog armed and no longer fed) and
/// `unhealthy` (no system images: no service ever gets ready). Each is its
/// own version, `<this>-<name>`.
pub const TEST_OS_IMAGES: [&str; 4] = ["next", "panic", "hang", "unhealthy"];

/// The kernel arguments a test OS image carries: `next` reboots 5 s after a
/// panic rather than 10, as a new version might change its own arguments, so
/// the upgrade test can see that the trial boots with the new version's
/// arguments and the rollback with the old one's.
pub fn test_os_kernel_args(name: &str) -> String {
    let own = berth_iso::grub::os_args();
    if name == "next" {
        own.replace("panic=10", "panic=5")
    } else {
        own
    }
}

pub fn test_os_images(artifacts: &Artifacts) -> Result<PathBuf> {
    let out = out_dir();
    let dir = out.join("test-os");
    std::fs::create_dir_all(&dir)?;
    let staging = out.join("rootfs-staging");
    let base =
        std::env::var("BERTH_OS_VERSION").unwrap_or_else(|_| env!("CARGO_PKG_VERSION").into());
    let release = std::fs::read_to_string(staging.join("usr/lib/os-release"))
        .context("the rootfs staging tree (cargo xtask build) has no usr/lib/os-release")?;
    for name in TEST_OS_IMAGES {
        let version = format!("{base}-{name}");
        let archive = dir.join(format!("{name}.tar"));
        let fp = fingerprint(
            &[&artifacts.vmlinuz, &artifacts.initrd, &artifacts.rootfs],
            &[&version, &test_os_kernel_args(name), "test-os-5"],
        )?;
        if !stale(&archive, &fp) {
            continue;
        }
        progress(&format!("test OS image {name} ({version})"));
        let work = dir.join(format!("{name}.work"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let os_release = work.join("os-release");
        std::fs::write(
            &os_release,
            release
                .lines()
                .map(|l| {
                    if l.starts_with("VERSION_ID=") {
                        format!("VERSION_ID=\"{version}\"")
                    } else if l.starts_with("VERSION=") {
                        format!("VERSION=\"{version}\"")
                    } else if l.starts_with("PRETTY_NAME=") {
                        format!("PRETTY_NAME=\"Berth {version}\"")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n",
        )?;
        // The same tree with a few paths swapped (mksquashfs pseudo files),
        // compressed fast: these images live for one test run.
        // os-release is in two places: the host's (usr/lib) and the /etc
        // every boot links from usr/share/berth/etc.
        let stamped = ["usr/lib/os-release", "usr/share/berth/etc/os-release"];
        let mut excludes: Vec<String> = stamped.iter().map(|p| p.to_string()).collect();
        let mut pseudo: Vec<String> = stamped
            .iter()
            .map(|p| format!("{p} f 644 0 0 cat {}", os_release.display()))
            .collect();
        if name == "hang" {
            // Stage 2 is PID 1 itself, run from the initramfs on: a corrupt
            // root is what can still make it hang. Its first read from the
            // root is `modules.dep`; a FIFO there blocks that read for good.
            // (`lib` is a link to `usr/lib`, and a pseudo file's path must
            // not go through a link.)
            let modules = std::fs::read_dir(staging.join("usr/lib/modules"))
                .context("the rootfs staging tree has no usr/lib/modules")?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.join("modules.dep").exists())
                .context("no modules.dep under the rootfs staging tree's usr/lib/modules")?;
            let dep = modules
                .join("modules.dep")
                .strip_prefix(&staging)?
                .to_string_lossy()
                .into_owned();
            pseudo.push(format!("{dep} i 644 0 0 f"));
            excludes.push(dep);
        }
        // Only `next` runs its services. The others fail before berthd (the
        // panic in the kernel, the hang in stage 2) or because no
        // service can start (unhealthy): without the system images' layers
        // they are a quarter of the size, and each test upgrade to them
        // pulls and writes 120 MiB less under emulation.
        if name != "next" {
            excludes.push("usr/share/berth/layers".into());
        }
        let rootfs = work.join("rootfs.squashfs");
        let mut cmd = std::process::Command::new("mksquashfs");
        cmd.arg(&staging)
            .arg(&rootfs)
            .args(["-comp", "zstd", "-Xcompression-level", "3", "-b", "1M"])
            .args(["-noappend", "-no-progress", "-quiet", "-mkfs-time", "0"]);
        for p in &pseudo {
            cmd.arg("-p").arg(p);
        }
        // Old-style excludes, by path: what they name is left out.
        cmd.arg("-e").args(excludes.iter().map(|e| staging.join(e)));
        let status = cmd.status().context("running mksquashfs")?;
        if !status.success() {
            bail!("mksquashfs for the {name} test image failed: {status}");
        }
        let initrd = if name == "panic" {
            // Nothing in it: no /init, no root — the kernel panics.
            let empty = work.join("initrd");
            std::fs::write(&empty, vec![0u8; 4096])?;
            empty
        } else {
            artifacts.initrd.clone()
        };
        let store_dir = work.join("store");
        let store = berth_images::Store::open(&store_dir)?;
        let reference = format!("berth/os:{version}");
        berth_images::os_image::build(
            &store,
            &reference,
            &version,
            &test_os_kernel_args(name),
            [&artifacts.vmlinuz, &initrd, &rootfs],
        )
        .with_context(|| format!("building the {name} test image"))?;
        berth_images::archive::export(&store, &reference, &archive)?;
        std::fs::remove_dir_all(&work)?;
        record(&archive, &fp)?;
        report(&archive, &format!("version {version}"))?;
    }
    Ok(dir)
}

/// `berth-os.tar` is an OCI image other tools read: skopeo sees its version label.
pub fn check_os_image() -> Result<()> {
    let archive = out_dir().join("berth-os.tar");
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .context("running skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo inspect {}: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let config: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let version = &config["config"]["Labels"][berth_images::os_image::VERSION_LABEL];
    if !version.is_string() || config["architecture"] != "amd64" {
        bail!(
            "{} is not an amd64 image with a version label: {config}",
            archive.display()
        );
    }
    println!("==> berth-os.tar: skopeo reads OS version {version}");
    Ok(())
}

/// The cloud/VM images: a sparse raw disk of the smallest size Berth takes
/// (it grows to the disk it is put on), written by the installer's code,
/// then compressed to qcow2.
fn disk_image(payload: &berth_iso::disk::Payload, raw: &Path, qcow2: &Path) -> Result<()> {
    let tmp = raw.with_extension("img.tmp");
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let size = berth_iso::disk::MIN_DISK_BYTES;
    file.set_len(size)?;
    let written = berth_iso::disk::write(&file, size, payload, &berth_iso::disk::Quiet)
        .context("writing the disk image")?;
    drop(file);
    std::fs::rename(&tmp, raw)?;
    println!(
        "    slot A: {:.1} MiB, sha256 {} (read back)",
        mib(written.rootfs_bytes),
        &written.rootfs_sha256[..16]
    );
    let tmp = qcow2.with_extension("qcow2.tmp");
    crate::step(
        "qemu-img convert -c -O qcow2",
        std::process::Command::new("qemu-img")
            .args(["convert", "-c", "-O", "qcow2"])
            .arg(raw)
            .arg(&tmp),
    )?;
    std::fs::rename(&tmp, qcow2)?;
    Ok(())
}

fn progress(what: &str) {
    println!("==> {what}");
}

fn report(path: &Path, note: &str) -> Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .len();
    println!("    {} {:.1} MiB ({note})", path.display(), mib(size));
    Ok(())
}

/// Size and mtime of each input file plus free-form strings.
pub(crate) fn fingerprint(files: &[&Path], extra: &[&str]) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let mut fp = String::new();
    for f in files {
        let m = std::fs::metadata(f).with_context(|| format!("{}", f.display()))?;
        fp.push_str(&format!(
            "{} {} {}.{}\n",
            f.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ));
    }
    for e in extra {
        fp.push_str(e);
        fp.push('\n');
    }
    Ok(fp)
}

/// Source directories are inputs too (the boot-media code, the service
/// catalogue): sizes and mtimes of their files stand in for a hash.
fn sources_of(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    fingerprint(&refs, &[])
}

fn inputs_path(artifact: &Path) -> PathBuf {
    let mut name = artifact.as_os_str().to_owned();
    name.push(".inputs");
    PathBuf::from(name)
}

pub(crate) fn stale(artifact: &Path, fp: &str) -> bool {
    !artifact.exists()
        || std::fs::read_to_string(inputs_path(artifact)).map_or(true, |old| old != fp)
}

pub(crate) fn record(artifact: &Path, fp: &str) -> Result<()> {
    let path = inputs_path(artifact);
    std::fs::write(&path, fp).with_context(|| format!("writing {}", path.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
