//! The baseline `cargo xtask bench boot` sets Berth against: what people run
//! when they do not run a container OS — Debian 12 with systemd, `docker.io`
//! and `openssh-server`, made with `mmdebstrap`, booted with Berth's kernel
//! (Debian's own `linux-image`, so the image's initramfs is made for it), the
//! same QEMU settings (TCG, one vCPU) and the same memory.
//!
//! The image is cached under `target/berth/debian/` and rebuilt only when
//! its recipe (this file's constants) or the kernel package changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Printed on the serial console by a unit of the image once `docker
/// version` answers: the moment Berth's `docker: healthy` stands for.
pub const ENGINE_MARKER: &str = "berth-bench: docker answers";

/// What the image holds besides `--variant=apt`'s essential set: an init,
/// the kernel (for its modules and an initramfs made by initramfs-tools, as
/// Debian boots), the engine and an SSH server. `apparmor` is docker.io's
/// recommendation and in every standard Debian install: the kernel has
/// AppArmor on, and without `apparmor_parser` dockerd refuses to run a
/// container.
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "initramfs-tools",
    "docker.io",
    "openssh-server",
    "iproute2",
    "apparmor",
];

/// Backports too, for Berth's kernel package when it comes from there
/// (`berth_iso::kernel::PREFERRED_RELEASE`); apt takes nothing else from it
/// unless asked, so the rest is Debian 12's own.
fn suites() -> [String; 4] {
    berth_images::recipe::debian_sources("bookworm")
}

/// DHCP on the virtio NIC with systemd-networkd, as Debian's cloud images do.
const NETWORK: &str = "[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n";

/// The bench's SSH key comes in on a second raw drive (the key's line,
/// zero-padded) so the cached image does not depend on a per-run key.
const KEY_UNIT: &str = "[Unit]
Description=authorized_keys from the bench's key drive
Before=ssh.service
Requires=dev-vdb.device
After=dev-vdb.device

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p -m 700 /root/.ssh && head -n 1 /dev/vdb > /root/.ssh/authorized_keys'

[Install]
WantedBy=multi-user.target
";

/// The engine-ready marker: docker's socket answering, polled as Berth's
/// health check polls it.
const MARKER_UNIT: &str = "[Unit]
Description=bench marker: docker answers
Wants=docker.service
After=docker.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'until docker version >/dev/null 2>&1; do sleep 0.1; done; echo berth-bench: docker answers > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
";

/// The built baseline.
pub struct Image {
    /// The ext4 root filesystem, `qemu-img convert -c` like `berth.qcow2`
    /// (the two are compared), booted through a qcow2 overlay.
    pub qcow2: PathBuf,
    /// initramfs-tools' initrd for the kernel, from inside the image.
    pub initrd: PathBuf,
}

/// Builds (or reuses) the image for `kernel_package` (e.g.
/// `linux-image-6.12.95+deb12-amd64`, the package Berth's vmlinuz comes from).
pub fn build(dir: &Path, kernel_package: &str) -> Result<Image> {
    let image = Image {
        qcow2: dir.join("debian.qcow2"),
        initrd: dir.join("debian-initrd.img"),
    };
    let fp = crate::os::fingerprint(
        &[],
        &[
            &PACKAGES.join(","),
            &suites().join("\n"),
            NETWORK,
            KEY_UNIT,
            MARKER_UNIT,
            kernel_package,
        ],
    )?;
    if !crate::os::stale(&image.qcow2, &fp) && image.initrd.exists() {
        return Ok(image);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tree = dir.join("tree");
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    let files = dir.join("files");
    std::fs::create_dir_all(&files)?;
    for (name, text) in [
        ("80-dhcp.network", NETWORK),
        ("bench-key.service", KEY_UNIT),
        ("bench-marker.service", MARKER_UNIT),
    ] {
        std::fs::write(files.join(name), text)?;
    }
    let hooks = [
        format!(
            "cp {0}/80-dhcp.network \"$1/etc/systemd/network/\" && \
             cp {0}/bench-key.service {0}/bench-marker.service \"$1/etc/systemd/system/\"",
            files.display()
        ),
        "chroot \"$1\" systemctl enable systemd-networkd bench-key.service bench-marker.service"
            .to_string(),
        "echo debian > \"$1/etc/hostname\"".to_string(),
    ];
    let started = Instant::now();
    println!(
        "==> mmdebstrap: Debian 12 with systemd, docker.io, openssh-server ({kernel_package})"
    );
    let mut mm = Command::new("mmdebstrap");
    mm.args(["--variant=apt", "--mode=root", "--quiet"])
        .arg(format!("--include={},{kernel_package}", PACKAGES.join(",")));
    for hook in &hooks {
        mm.arg(format!("--customize-hook={hook}"));
    }
    mm.arg("bookworm").arg(&tree).args(suites());
    crate::step("mmdebstrap", &mut mm)?;

    let version = kernel_package
        .strip_prefix("linux-image-")
        .with_context(|| format!("{kernel_package} is not a linux-image-* package"))?;
    let initrd = tree.join(format!("boot/initrd.img-{version}"));
    std::fs::copy(&initrd, &image.initrd)
        .with_context(|| format!("copying {} (initramfs-tools made none?)", initrd.display()))?;

    // The root filesystem: ext4 from the tree, sized like a small cloud disk.
    let raw_tmp = dir.join("debian-root.img.tmp");
    let _ = std::fs::remove_file(&raw_tmp);
    crate::step(
        "mkfs.ext4 -d (the Debian tree)",
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "debian-root", "-d"])
            .arg(&tree)
            .arg(&raw_tmp)
            .arg("4G"),
    )?;
    let qcow2_tmp = dir.join("debian.qcow2.tmp");
    crate::step(
        "qemu-img convert -c -O qcow2 (the Debian disk)",
        Command::new("qemu-img")
            .args(["convert", "-c", "-O", "qcow2"])
            .arg(&raw_tmp)
            .arg(&qcow2_tmp),
    )?;
    std::fs::rename(&qcow2_tmp, &image.qcow2)?;
    std::fs::remove_file(&raw_tmp)?;
    std::fs::remove_dir_all(&tree)?;
    crate::os::record(&image.qcow2, &fp)?;
    println!(
        "    Debian image built in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(image)
}

/// What one boot of the baseline measured.
pub struct Figures {
    /// QEMU start → the engine marker on the console.
    pub engine_ready: Duration,
    /// Memory in use once idle, the engine running (`idle_used_mib`).
    pub memory_used_idle_mib: u64,
    /// Context switches a second once idle, the engine running (`idle_wakeups`).
    pub idle_wakeups: f64,
    /// `docker run --rm busybox true`, timed inside the guest.
    pub first_container: Duration,
    /// `qemu-img convert -c` of the root filesystem.
    pub image_bytes: u64,
}

/// Boots the image with `vmlinuz` and `memory` MiB and measures it. `busybox`
/// is the `docker load` archive Berth gets too.
pub fn measure(
    image: &Image,
    vmlinuz: &Path,
    memory: u32,
    scratch: &Path,
    busybox: &Path,
    timeout: Duration,
) -> Result<Figures> {
    use qemu_tests::{Boot, Config, Vm};
    let dir = scratch.join("bench-debian");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = qemu_tests::free_port()?;
    let ssh = qemu_tests::ssh::Ssh::new(&dir, port, "root")?;
    // The key drive: the key text, zero-padded to a sector multiple.
    let key = dir.join("key.img");
    let mut bytes = format!("{}\n", ssh.public_key()).into_bytes();
    bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
    std::fs::write(&key, bytes)?;
    let disk = dir.join("debian.qcow2");
    qemu_tests::overlay(&image.qcow2, &disk, 4 << 30)?;

    println!("==> Debian 12 + systemd + docker.io (same kernel, direct kernel boot, {memory} MiB)");
    let mut vm = Vm::start(
        &Config::new(
            "bench-debian",
            Boot::Kernel {
                kernel: vmlinuz.to_path_buf(),
                initrd: image.initrd.clone(),
                append: "root=/dev/vda rw console=ttyS0 panic=-1".into(),
            },
        )
        .memory(memory)
        .drive(&disk, false)
        .drive(&key, true)
        .forward(port, 22),
    )?;
    let engine_ready = vm.expect(ENGINE_MARKER, timeout)?;
    println!(
        "    docker answers after {:.2}s",
        engine_ready.as_secs_f64()
    );
    ssh.wait(timeout)?;
    let version = ssh.check("docker version --format '{{.Server.Version}}'")?;
    println!("    the engine answers: docker {}", version.trim());
    let memory_used_idle_mib = crate::bench::vm::idle_used_mib(&ssh)?;
    let idle_wakeups = crate::bench::vm::idle_wakeups(&ssh)?;
    let first_container = first_container(&ssh, busybox)?;
    println!(
        "    docker run --rm busybox true: {:.2}s",
        first_container.as_secs_f64()
    );
    let _ = ssh.run("systemctl poweroff");
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Figures {
        engine_ready,
        idle_wakeups,
        memory_used_idle_mib,
        first_container,
        image_bytes: std::fs::metadata(&image.qcow2)?.len(),
    })
}

/// The busybox image as a `docker load` archive, from the image store's
/// `berth/busybox` (Debian's busybox-static; docker 20.10 reads neither zstd
/// layers nor OCI archives, so skopeo recompresses with gzip on the way).
/// The same archive goes into both engines.
pub fn busybox_archive(store: &Path, dir: &Path) -> Result<PathBuf> {
    let gzipped = dir.join("busybox-gzip");
    let out = dir.join("busybox.tar");
    let _ = std::fs::remove_dir_all(&gzipped);
    let _ = std::fs::remove_file(&out);
    for args in [
        vec![
            "--dest-compress-format".to_string(),
            "gzip".into(),
            format!(
                "oci:{}:berth/busybox:latest",
                store.join("images").display()
            ),
            format!("oci:{}:busybox", gzipped.display()),
        ],
        vec![
            format!("oci:{}:busybox", gzipped.display()),
            format!("docker-archive:{}:busybox:latest", out.display()),
        ],
    ] {
        crate::step(
            "skopeo copy (the busybox image for docker load)",
            Command::new("skopeo").args(["copy", "--quiet"]).args(&args),
        )?;
    }
    Ok(out)
}

/// `docker load` of `archive`, then `docker run --rm busybox true` timed
/// inside the guest (the SSH round trip is not in it).
pub fn first_container(ssh: &qemu_tests::ssh::Ssh, archive: &Path) -> Result<Duration> {
    let out = ssh.run_with_input("docker load", Some(archive))?;
    if !out.status.success() {
        bail!(
            "docker load: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let ns = ssh.check(
        "s=$(date +%s%N); docker run --rm busybox true >&2 || exit 1; e=$(date +%s%N); echo $((e - s))",
    )?;
    let ns: u64 = ns
        .trim()
        .parse()
        .with_context(|| format!("not a number of nanoseconds: {ns:?}"))?;
    Ok(Duration::from_nanos(ns))
}

/// The image for the kernel `cargo xtask build` uses, under `target/berth/debian`.
pub fn build_for_bench() -> Result<Image> {
    let out = crate::os::out_dir();
    let kernel =
        berth_iso::kernel::fetch(&out.join("cache/kernel"), berth_iso::kernel::META_PACKAGE)
            .context("fetching the kernel")?;
    build(&out.join("debian"), &kernel.package)
}

/// Prints Berth's figure over Debian's for each (lower is better for Berth).
pub fn print_ratios(debian: &Figures, berth: &Figures) {
    let rows = [
        (
            "boot_engine_ready_vs_debian",
            berth.engine_ready.as_secs_f64(),
            debian.engine_ready.as_secs_f64(),
        ),
        (
            "memory_idle_vs_debian",
            berth.memory_used_idle_mib as f64,
            debian.memory_used_idle_mib as f64,
        ),
        (
            "idle_wakeups_vs_debian",
            berth.idle_wakeups,
            debian.idle_wakeups,
        ),
        (
            "image_size_vs_debian",
            berth.image_bytes as f64,
            debian.image_bytes as f64,
        ),
        (
            "first_container_vs_debian",
            berth.first_container.as_secs_f64(),
            debian.first_container.as_secs_f64(),
        ),
    ];
    println!(
        "    Debian: docker answers {:.2}s, {} MiB used idle, {:.1} wake-ups a second idle, image {:.1} MiB, first container {:.2}s",
        debian.engine_ready.as_secs_f64(),
        debian.memory_used_idle_mib,
        debian.idle_wakeups,
        crate::mib(debian.image_bytes),
        debian.first_container.as_secs_f64()
    );
    for (name, ours, theirs) in rows {
        println!("RESULT {name} {:.2} ratio", ours / theirs);
    }
}

/// `cargo xtask bench debian`: the baseline alone (its figures, no ratios),
/// for working on it without the whole boot bench (nor a rebuild of the OS).
pub fn bench_alone() -> Result<()> {
    // The kernel and the busybox image of the last `cargo xtask build`: this
    // is for working on the baseline, so it does not rebuild the OS.
    let vmlinuz = crate::os::out_dir().join("vmlinuz");
    if !vmlinuz.exists() {
        bail!(
            "{} is missing: run `cargo xtask build` first",
            vmlinuz.display()
        );
    }
    let image = build_for_bench()?;
    let scratch = crate::os::out_dir().join("qemu-scratch");
    std::fs::create_dir_all(&scratch)?;
    let busybox = busybox_archive(&crate::image_store_dir(), &scratch)?;
    let figures = measure(
        &image,
        &vmlinuz,
        1024,
        &scratch,
        &busybox,
        Duration::from_secs(600),
    )?;
    println!(
        "RESULT debian_engine_ready {:.2} s",
        figures.engine_ready.as_secs_f64()
    );
    println!(
        "RESULT debian_memory_used_idle {} MiB",
        figures.memory_used_idle_mib
    );
    println!("RESULT debian_idle_wakeups {:.1} /s", figures.idle_wakeups);
    println!(
        "RESULT debian_image_mib {:.1} MiB",
        crate::mib(figures.image_bytes)
    );
    println!(
        "RESULT debian_first_container {:.2} s",
        figures.first_container.as_secs_f64()
    );
    Ok(())
}
