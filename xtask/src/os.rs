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
    let berth = crate::build_berth()?;
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
        &[&berth, &vmlinuz],
        &[
            &kernel.package,
            &modules,
            &sources_of(&workspace_root().join("iso/src"))?,
        ],
    )?;
    if stale(&initrd, &fp) {
        let index = ModuleIndex::load(&kernel.modules_dir)?;
        let built = initramfs::build(&berth, &kernel, &index)?;
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
    let boot_images =
        berth_iso::bootloader::build(&out.join("boot")).context("making GRUB's images")?;
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
            "    staged in {:.0}s: {} modules, images {} ({} layers, pre-unpacked)",
            start.elapsed().as_secs_f64(),
            staged.modules,
            staged.images.join(", "),
            staged.layers
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
        &[&sources_of(&workspace_root().join("iso/src"))?],
    )?;
    if stale(&img_out, &fp) || !qcow2_out.exists() {
        disk_image(
            &berth_iso::disk::Payload {
                vmlinuz: vmlinuz.clone(),
                initrd: initrd.clone(),
                rootfs: rootfs_out.clone(),
                boot: boot_images.clone(),
                config: Vec::new(),
                kernel_args: String::new(),
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
    let fp = fingerprint(&[&vmlinuz, &initrd, &rootfs_out], &[version])?;
    if stale(&os_out, &fp) {
        let store_dir = out.join("os-store");
        let _ = std::fs::remove_dir_all(&store_dir);
        let store = berth_images::Store::open(&store_dir)?;
        let reference = format!("berth/os:{version}");
        berth_images::os_image::build(
            &store,
            &reference,
            version,
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
/// switch to its root, before berthd) and `unhealthy` (no system images: no
/// service ever gets ready). Each is its own version, `<this>-<name>`.
pub const TEST_OS_IMAGES: [&str; 4] = ["next", "panic", "hang", "unhealthy"];

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
            &[&version, "test-os-3"],
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
        match name {
            "hang" => {
                let hang = work.join("hang.sh");
                std::fs::write(
                    &hang,
                    "#!/usr/bin/sh\necho 'berth test image: PID 1 hangs here' >/dev/console\nwhile :; do sleep 3600; done\n",
                )?;
                excludes.push("usr/bin/berth".into());
                pseudo.push(format!("usr/bin/berth f 755 0 0 cat {}", hang.display()));
            }
            "unhealthy" => excludes.push("usr/share/berth/layers".into()),
            _ => {}
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

/// `cargo xtask run [--fresh] [--kvm] [--config FILE]`.
pub fn run(args: &[String]) -> Result<()> {
    let mut fresh = false;
    let mut kvm = false;
    let mut disk = false;
    let mut config: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--fresh" => fresh = true,
            "--kvm" => kvm = true,
            "--disk" => disk = true,
            "--config" => {
                config = Some(
                    it.next()
                        .context("--config needs a cloud-config file")?
                        .into(),
                )
            }
            other => {
                bail!("unknown option `{other}` (run takes --disk, --fresh, --kvm, --config FILE)")
            }
        }
    }
    let artifacts = build()?;
    let out = out_dir();

    let seed = out.join("seed.img");
    let user_data = run_user_data(config.as_deref())?;
    let (mut vm, booted) = if disk {
        // A copy-on-write disk over the qcow2 image (the build output stays
        // pristine), 8 GiB: the image grows into it on its first boot.
        let vm_disk = out.join("run-disk.qcow2");
        if fresh || !vm_disk.exists() {
            let _ = std::fs::remove_file(&vm_disk);
            qemu_tests::overlay(&artifacts.qcow2, &vm_disk, 8 << 30)?;
            println!("==> new 8 GiB disk over {}", artifacts.qcow2.display());
        }
        (
            qemu_tests::Config::new("berth", qemu_tests::Boot::Disk).drive(&vm_disk, false),
            vm_disk,
        )
    } else {
        let state = out.join("state.img");
        if fresh || !state.exists() {
            // Blank (all zeros, sparse) so stage 1's autoformat may take it.
            qemu_tests::blank_disk(&state, 4 << 30)?;
            println!("==> blank 4 GiB state disk {}", state.display());
        }
        (
            qemu_tests::Config::new("berth", qemu_tests::Boot::Cdrom(artifacts.iso.clone()))
                .drive(&state, false),
            artifacts.iso.clone(),
        )
    };
    vm = vm.forward(2222, 22);
    vm.kvm = kvm;
    vm.cpus = 2;
    qemu_tests::nocloud_seed(
        &seed,
        &user_data,
        "instance-id: berth-dev\nlocal-hostname: berth\n",
    )?;
    vm = vm.drive(&seed, true);
    println!("==> NoCloud seed {}", seed.display());
    let scratch = tempfile_dir()?;
    let mut cmd = vm.command(&scratch)?;
    // The serial console on this terminal; Ctrl-A X quits QEMU.
    cmd.arg("-nographic");
    println!(
        "==> booting {} ({}; Ctrl-A X quits; ssh -p 2222 berth@127.0.0.1 once the console service runs)",
        booted.display(),
        if kvm { "KVM" } else { "TCG" }
    );
    let status = cmd
        .status()
        .context("starting qemu-system-x86_64 (the qemu-system-x86 package)")?;
    let _ = std::fs::remove_dir_all(&scratch);
    if !status.success() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = out_dir().join("qemu-scratch");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    Ok(dir)
}

/// `#cloud-config` with the user's `~/.ssh/id_*.pub`, if there are any.
/// The user-data `cargo xtask run` boots with: autoformat of its blank state
/// disk (`/dev/vda`), the user's SSH public keys, and `--config FILE` merged
/// over both (the file wins, as a later source does).
fn run_user_data(config: Option<&Path>) -> Result<String> {
    let mut text = String::from(
        "#cloud-config\n# From `cargo xtask run`: its state disk is /dev/vda.\n\
         berth:\n  state:\n    autoformat: [/dev/vda]\n",
    );
    let keys = ssh_public_keys()?;
    if !keys.is_empty() {
        text.push_str("ssh_authorized_keys:\n");
        for key in keys {
            // JSON strings are valid YAML scalars and quote whatever a comment holds.
            text.push_str(&format!("  - {}\n", json_string(&key)));
        }
    }
    let Some(file) = config else {
        return Ok(text);
    };
    let user_text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let user = berth_configs::parse_document(
        &std::sync::Arc::from(file.display().to_string()),
        &user_text,
    );
    for d in &user.diagnostics {
        eprintln!("{d}");
    }
    let valid = user.is_valid();
    let (Some(user_tree), true) = (user.tree, valid) else {
        println!(
            "==> {} has errors: booting with it unchanged (the console shows them; the state disk is not autoformatted)",
            file.display()
        );
        return Ok(user_text);
    };
    let mut tree = berth_configs::parse_document(&std::sync::Arc::from("xtask run"), &text)
        .tree
        .context("the built-in run config does not parse")?;
    berth_configs::merge::merge(&mut tree, user_tree);
    Ok(berth_configs::sources::render(&tree))
}

/// `~/.ssh/id_*.pub`, sorted.
fn ssh_public_keys() -> Result<Vec<String>> {
    let Some(home) = std::env::var_os("HOME").map(PathBuf::from) else {
        return Ok(Vec::new());
    };
    let Ok(entries) = std::fs::read_dir(home.join(".ssh")) else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("id_") && name.ends_with(".pub") {
            let key = std::fs::read_to_string(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            keys.push(key.trim().to_string());
        }
    }
    keys.sort();
    Ok(keys)
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `free -m`'s "used" once the machine has been idle for a moment (the
/// boot's or the switch's page cache and services settle), printing `free`.
pub(crate) fn idle_used_mib(ssh: &qemu_tests::ssh::Ssh) -> Result<u64> {
    std::thread::sleep(std::time::Duration::from_secs(10));
    let free = ssh.check("free -m")?;
    for line in free.lines() {
        println!("      {line}");
    }
    free.lines()
        .find(|l| l.starts_with("Mem:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no `Mem:` line with a number in:\n{free}"))
}

/// Runs the QEMU boot tests against freshly built artifacts.
/// Seconds from `sudo berth poweroff` (typed over SSH) until QEMU has exited:
/// every service stopped, state unmounted, the machine off.
fn poweroff(
    ssh: &qemu_tests::ssh::Ssh,
    vm: &mut qemu_tests::Vm,
    timeout: std::time::Duration,
) -> Result<f64> {
    let start = std::time::Instant::now();
    // The session may end with the machine; its exit status says nothing.
    let _ = ssh.run("sudo berth poweroff");
    vm.wait_exit(timeout)?;
    Ok(start.elapsed().as_secs_f64())
}

/// `cargo xtask bench boot`: QEMU start → marker, kernel-only baseline vs the ISO.
pub fn bench_boot() -> Result<()> {
    use qemu_tests::{Boot, Config, Vm};
    use std::time::Duration;
    let artifacts = build()?;
    let timeout = Duration::from_secs(300);
    let scratch = tempfile_dir()?;
    let initrd = qemu_tests::baseline_initrd(&scratch)?;
    let debian = crate::bench::debian::build_for_bench()?;
    println!(
        "RESULT iso_mib {:.1} MiB",
        mib(std::fs::metadata(&artifacts.iso)?.len())
    );
    let busybox = crate::bench::debian::busybox_archive(&crate::image_store_dir(), &scratch)?;

    println!("==> kernel-only baseline (direct kernel boot, busybox /init)");
    let mut vm = Vm::start(&Config::new(
        "bench-baseline",
        Boot::Kernel {
            kernel: artifacts.vmlinuz.clone(),
            initrd,
            append: qemu_tests::baseline_append(),
        },
    ))?;
    let baseline = vm.expect(qemu_tests::BASELINE_MARKER, timeout)?;
    drop(vm);
    println!("    marker after {:.2}s", baseline.as_secs_f64());
    println!(
        "RESULT boot_kernel_baseline {:.2} s",
        baseline.as_secs_f64()
    );

    // The same kernel booted the same way (QEMU loads it), the ISO attached
    // for the root, the user engine off as the goal says; the check is
    // Berth's own ready line.
    let key_dir = scratch.join("bench-ssh");
    let _ = std::fs::remove_dir_all(&key_dir);
    std::fs::create_dir_all(&key_dir)?;
    let port = qemu_tests::free_port()?;
    let ssh = qemu_tests::ssh::Ssh::new(&key_dir, port, "berth")?;
    let seed = scratch.join("bench-seed.img");
    qemu_tests::nocloud_seed(
        &seed,
        &format!(
            "#cloud-config\nssh_authorized_keys: [{}]\nberth:\n  services:\n    docker: null\n",
            json_string(ssh.public_key())
        ),
        "instance-id: bench\n",
    )?;
    let berth_boot = |memory: u32, seed: &Path, forward: bool| -> Result<Vm> {
        let mut config = Config::new(
            &format!("bench-berth-{memory}m"),
            Boot::Kernel {
                kernel: artifacts.vmlinuz.clone(),
                initrd: artifacts.initrd.clone(),
                append: "console=ttyS0 panic=-1".into(),
            },
        )
        .memory(memory)
        .drive(&artifacts.iso, true)
        .drive(seed, true);
        if forward {
            config = config.forward(port, 22);
        }
        Ok(Vm::start(&config)?)
    };

    println!("==> Berth (direct kernel boot, same kernel, 1 GiB, without the user engine)");
    let mut vm = berth_boot(1024, &seed, true)?;
    let handover = vm.expect(qemu_tests::KERNEL_HANDOVER, timeout)?;
    let ready = vm.expect(qemu_tests::READY_MARKER, timeout)?;
    println!(
        "    /init after {:.2}s, `{}` after {:.2}s",
        handover.as_secs_f64(),
        qemu_tests::READY_MARKER,
        ready.as_secs_f64()
    );
    // Where the time went, from berthd's own timeline.
    match ssh
        .wait(timeout)
        .and_then(|_| ssh.check("sudo berth boot-time"))
    {
        Ok(breakdown) => {
            println!("    berth boot-time (seconds since the kernel started):");
            for line in breakdown.lines() {
                println!("      {line}");
            }
        }
        Err(e) => println!("    no breakdown: {e}"),
    }
    // Shutdown: `berth poweroff` typed in the console → QEMU gone.
    let shutdown = poweroff(&ssh, &mut vm, timeout)?;
    println!("    `berth poweroff` took {shutdown:.2}s");
    drop(vm);
    println!("RESULT boot_init_handover {:.2} s", handover.as_secs_f64());
    println!("RESULT boot_ready {:.2} s", ready.as_secs_f64());

    // The smallest memory that still reaches ready, halving from 256 MiB.
    println!(
        "==> smallest -m that reaches `{}`",
        qemu_tests::READY_MARKER
    );
    let mut smallest = None;
    for memory in [256u32, 128, 96, 64] {
        let mut vm = berth_boot(memory, &seed, false)?;
        // Out of memory shows as an OOM panic (QEMU exits) or a boot that stalls.
        match vm.expect(qemu_tests::READY_MARKER, Duration::from_secs(150)) {
            Ok(at) => {
                println!("    -m {memory}: ready after {:.2}s", at.as_secs_f64());
                smallest = Some(memory);
            }
            Err(e) => {
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                println!("    -m {memory}: not ready ({first})");
                break;
            }
        }
    }
    if let Some(memory) = smallest {
        println!("RESULT boot_smallest_memory {memory} MiB");
    }

    // With every default service, the user engine included: when its socket
    // answers, and the memory in use once the machine is idle.
    println!("==> every default service (the docker engine too), 1 GiB");
    let full_seed = scratch.join("bench-seed-full.img");
    qemu_tests::nocloud_seed(
        &full_seed,
        &format!(
            "#cloud-config\nssh_authorized_keys: [{}]\n",
            json_string(ssh.public_key())
        ),
        "instance-id: bench-full\n",
    )?;
    let mut vm = berth_boot(1024, &full_seed, true)?;
    let engine = vm.expect("docker: healthy", timeout)?;
    let full_ready = vm.expect_anywhere(qemu_tests::READY_MARKER, timeout)?;
    println!(
        "    docker socket up after {:.2}s, `{}` after {:.2}s",
        engine.as_secs_f64(),
        qemu_tests::READY_MARKER,
        full_ready.as_secs_f64()
    );
    println!("RESULT boot_engine_socket {:.2} s", engine.as_secs_f64());
    println!(
        "RESULT engine_socket_after_ready_without_engine {:.2} s",
        engine.as_secs_f64() - ready.as_secs_f64()
    );
    ssh.wait(timeout)?;
    let version = ssh.check("docker version --format '{{.Server.Version}}'")?;
    println!("    the engine answers: docker {}", version.trim());
    let docker_used = idle_used_mib(&ssh)?;
    println!("RESULT memory_used_idle_all_services {docker_used} MiB");
    let first_container = crate::bench::debian::first_container(&ssh, &busybox)?;
    println!(
        "    docker run --rm busybox true: {:.2}s",
        first_container.as_secs_f64()
    );
    println!(
        "RESULT first_container_s {:.2} s",
        first_container.as_secs_f64()
    );

    // The other choices, switched to on the running machine: how long a
    // switch takes and what each costs in memory, docker and the default
    // console being the baseline.
    println!("==> berth console switch busybox (typed in the console it replaces)");
    let start = std::time::Instant::now();
    // The session ends with the console it runs in; its exit status says nothing.
    ssh.run("sudo berth console switch busybox")?;
    ssh.wait_for("test -x /usr/sbin/dropbear", timeout)?;
    println!(
        "RESULT console_switch_busybox {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let busybox_used = idle_used_mib(&ssh)?;
    println!("RESULT memory_used_idle_busybox_console {busybox_used} MiB");
    println!("==> berth engine switch podman");
    let start = std::time::Instant::now();
    ssh.check("sudo berth engine switch podman")?;
    println!(
        "RESULT engine_switch_podman {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let podman_used = idle_used_mib(&ssh)?;
    println!("RESULT memory_used_idle_podman_busybox_console {podman_used} MiB");
    if docker_used > 0 {
        println!(
            "RESULT memory_podman_busybox_vs_docker_default {:.2} ratio",
            podman_used as f64 / docker_used as f64
        );
    }
    let shutdown_all = poweroff(&ssh, &mut vm, timeout)?;
    println!("RESULT shutdown_all_services_s {shutdown_all:.2} s");
    drop(vm);

    // What users would otherwise run, booted the same way in the same run.
    let theirs = crate::bench::debian::measure(
        &debian,
        &artifacts.vmlinuz,
        1024,
        &scratch,
        &busybox,
        timeout,
    )?;
    crate::bench::debian::print_ratios(
        &theirs,
        &crate::bench::debian::Figures {
            engine_ready: engine,
            memory_used_idle_mib: docker_used,
            first_container,
            image_bytes: std::fs::metadata(&artifacts.qcow2)?.len(),
        },
    );

    // The cloud image: firmware, GRUB from the disk, slot A, state on the
    // disk. Its first boot also grows and formats state; the second is the
    // one every later boot matches.
    println!("==> the disk image (SeaBIOS, GRUB from disk), 1 GiB, without the user engine");
    let disk = scratch.join("bench-disk.qcow2");
    let _ = std::fs::remove_file(&disk);
    qemu_tests::overlay(&artifacts.qcow2, &disk, 8 << 30)?;
    let disk_boot = || -> Result<Vm> {
        Ok(Vm::start(
            &Config::new("bench-disk", Boot::Disk)
                .drive(&disk, false)
                .drive(&seed, true)
                .forward(port, 22),
        )?)
    };
    let mut vm = disk_boot()?;
    let first = vm.expect(qemu_tests::READY_MARKER, timeout)?;
    ssh.wait(timeout)?;
    let _ = ssh.run("sudo berth poweroff");
    vm.wait_exit(timeout)?;
    drop(vm);
    let mut vm = disk_boot()?;
    let disk_ready = vm.expect(qemu_tests::READY_MARKER, timeout)?;
    // berthd's start to its config loaded, NoCloud read by stage 1.
    ssh.wait(timeout)?;
    let nocloud_ms = qemu_tests::metadata::config_loaded_ms(&ssh)?;
    drop(vm);

    // The same with EC2's metadata service emulated (IMDSv2, at
    // 169.254.169.254 through a guestfwd, DMI saying EC2): the probe, a
    // temporary DHCP lease and the cache included.
    println!("==> the disk image on emulated EC2 (IMDSv2), berthd start to config loaded");
    let ec2_disk = scratch.join("bench-ec2.qcow2");
    let _ = std::fs::remove_file(&ec2_disk);
    qemu_tests::overlay(&artifacts.qcow2, &ec2_disk, 8 << 30)?;
    let imds = qemu_tests::metadata::imds_v2(
        ssh.public_key().to_string(),
        b"#cloud-config\nberth:\n  services:\n    docker: null\n".to_vec(),
    )?;
    let mut vm = Vm::start(
        &Config::new("bench-ec2", Boot::Disk)
            .drive(&ec2_disk, false)
            .forward(port, 22)
            .restricted_network()
            .user_net("169.254.0.0/16")
            .guestfwd(
                "169.254.169.254:80",
                &qemu_tests::relay_command(&scratch, imds.port)?,
            )
            .smbios("type=1,manufacturer=Amazon EC2,product=t3.micro"),
    )?;
    vm.expect(qemu_tests::READY_MARKER, timeout)?;
    ssh.wait(timeout)?;
    let ec2_ms = qemu_tests::metadata::config_loaded_ms(&ssh)?;
    let _ = ssh.run("sudo berth poweroff");
    vm.wait_exit(timeout)?;
    drop(vm);
    println!(
        "    config loaded {ec2_ms} ms after berthd started on EC2, {nocloud_ms} ms with NoCloud"
    );
    println!("RESULT datasource_ec2_ms {ec2_ms} ms");
    println!("RESULT datasource_nocloud_ms {nocloud_ms} ms");
    println!(
        "    first boot (grows and formats state) ready after {:.2}s, the next after {:.2}s",
        first.as_secs_f64(),
        disk_ready.as_secs_f64()
    );
    println!("RESULT boot_ready_disk_first {:.2} s", first.as_secs_f64());
    println!("RESULT boot_ready_disk {:.2} s", disk_ready.as_secs_f64());
    println!(
        "RESULT boot_ready_disk_vs_kernel {:.2} ratio",
        disk_ready.as_secs_f64() / baseline.as_secs_f64()
    );
    println!("RESULT shutdown_s {shutdown:.2} s");
    println!(
        "RESULT boot_ready_vs_kernel {:.2} ratio",
        ready.as_secs_f64() / baseline.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// `cargo xtask bench install`: the installer's writer against `dd` of the
/// same bytes to the same kind of disk (a file on this host), and the sizes
/// of the images.
pub fn bench_install() -> Result<()> {
    let artifacts = build()?;
    let scratch = tempfile_dir()?;
    let payload = berth_iso::disk::Payload {
        vmlinuz: artifacts.vmlinuz.clone(),
        initrd: artifacts.initrd.clone(),
        rootfs: artifacts.rootfs.clone(),
        boot: berth_iso::bootloader::Images::in_dir(&out_dir().join("boot")),
        config: Vec::new(),
        kernel_args: String::new(),
    };
    let size = berth_iso::disk::MIN_DISK_BYTES;
    let mut install_s = Vec::new();
    let mut dd_s = Vec::new();
    for round in 0..3 {
        let target = scratch.join(format!("install-{round}.img"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&target)?;
        file.set_len(size)?;
        let start = std::time::Instant::now();
        berth_iso::disk::write(&file, size, &payload, &berth_iso::disk::Quiet)?;
        install_s.push(start.elapsed().as_secs_f64());
        drop(file);
        std::fs::remove_file(&target)?;

        // dd of the same payload (kernel, initrd, rootfs), synced at the end.
        let target = scratch.join(format!("dd-{round}.img"));
        let start = std::time::Instant::now();
        for (i, input) in [&payload.rootfs, &payload.vmlinuz, &payload.initrd]
            .into_iter()
            .enumerate()
        {
            let status = std::process::Command::new("dd")
                .arg(format!("if={}", input.display()))
                .arg(format!("of={}", target.display()))
                .args(["bs=4M", "conv=notrunc,fsync", "status=none"])
                .arg(format!("seek={}", i * 256))
                .status()
                .context("running dd")?;
            if !status.success() {
                bail!("dd failed: {status}");
            }
        }
        dd_s.push(start.elapsed().as_secs_f64());
        std::fs::remove_file(&target)?;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (install, dd) = (median(&mut install_s), median(&mut dd_s));
    println!("    install {install:.2}s (median of 3: write, read back, ESP, GRUB), dd {dd:.2}s");
    println!("RESULT install_s {install:.2} s");
    println!("RESULT install_vs_dd {:.2} ratio", install / dd);
    use std::os::unix::fs::MetadataExt;
    let qcow2 = std::fs::metadata(&artifacts.qcow2)?.len();
    let raw = std::fs::metadata(&artifacts.disk)?;
    println!("RESULT image_qcow2_mib {:.1} MiB", mib(qcow2));
    println!(
        "RESULT image_raw_allocated_mib {:.1} MiB",
        mib(raw.blocks() * 512)
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The longest stretch without an SSH answer while `during` runs: the
/// machine's downtime, from its last answer to its first one after.
fn downtime(ssh: &qemu_tests::ssh::Ssh, during: impl FnOnce() -> Result<()>) -> Result<f64> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (ssh, stop) = (ssh.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if ssh.run("true").is_ok_and(|o| o.status.success()) {
                    answers.push(Instant::now());
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            answers
        })
    };
    let result = during();
    // One more answer after `during`: the new system is up.
    ssh.wait(std::time::Duration::from_secs(600))?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let answers = poller
        .join()
        .map_err(|_| anyhow::anyhow!("the SSH poller panicked"))?;
    result?;
    Ok(answers
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .fold(0.0, f64::max))
}

/// `cargo xtask bench upgrade`: an installed machine upgrades to the
/// `next` test image from a registry on the host. Reports the time from
/// `berth os upgrade` to the commit, and the downtime (last SSH answer of the
/// old system to the first of the new) against a plain `berth reboot`.
pub fn bench_upgrade() -> Result<()> {
    use qemu_tests::{Boot, Config, Vm};
    use std::time::{Duration, Instant};
    let artifacts = build()?;
    let images = test_os_images(&artifacts)?;
    let scratch = tempfile_dir()?.join("bench-upgrade");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let registry = qemu_tests::registry::Registry::start(&scratch)?;
    let next = registry.push(&images.join("next.tar"), "berth/os", "next")?;
    let port = qemu_tests::free_port()?;
    let ssh = qemu_tests::ssh::Ssh::new(&scratch, port, "berth")?;
    let disk = scratch.join("vm.qcow2");
    qemu_tests::overlay(&artifacts.qcow2, &disk, 6 << 30)?;
    let seed = scratch.join("seed.iso");
    qemu_tests::nocloud_seed(
        &seed,
        &format!(
            "#cloud-config\nssh_authorized_keys:\n  - {}\n",
            ssh.public_key()
        ),
        "instance-id: bench-upgrade\n",
    )?;
    let config = Config::new("bench-upgrade", Boot::Disk)
        .drive(&disk, false)
        .drive(&seed, true)
        .forward(port, 22)
        .watchdog()
        .reboots();
    let timeout = Duration::from_secs(600);
    let mut vm = Vm::start(&config)?;
    vm.expect(qemu_tests::READY_MARKER, timeout)?;
    ssh.wait(timeout)?;

    println!("==> a plain reboot");
    let reboot = downtime(&ssh, || {
        let _ = ssh.run("sudo berth reboot");
        vm.expect(qemu_tests::READY_MARKER, timeout)?;
        Ok(())
    })?;
    println!("    downtime {reboot:.1}s");

    println!("==> berth os upgrade {next}");
    let start = Instant::now();
    let mut to_commit = 0.0;
    let upgrade = downtime(&ssh, || {
        let out = ssh.run(&format!("sudo berth os upgrade --insecure {next}"))?;
        let said = String::from_utf8_lossy(&out.stderr);
        if !String::from_utf8_lossy(&out.stdout).contains("on trial") {
            bail!("the upgrade did not reboot into its trial: {said}");
        }
        vm.expect("is healthy and committed", timeout)?;
        to_commit = start.elapsed().as_secs_f64();
        Ok(())
    })?;
    println!("    {to_commit:.1}s from `berth os upgrade` to the commit, downtime {upgrade:.1}s");
    println!("RESULT upgrade_to_commit_s {to_commit:.1} s");
    println!("RESULT upgrade_downtime_s {upgrade:.1} s");
    println!("RESULT reboot_downtime_s {reboot:.1} s");
    println!(
        "RESULT upgrade_downtime_vs_reboot {:.2} ratio",
        upgrade / reboot
    );
    drop(vm);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
