//! Host set-up: what `cargo xtask` needs installed, installed when we can.
//!
//! As root on Debian/Ubuntu, missing packages are installed with apt (and the
//! musl target with rustup); otherwise the exact commands are printed and the
//! task stops, so nothing fails later with a confusing error.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{step, MUSL_TARGET};

/// Debian packages the tasks use, with the command that proves each is there.
const APT_PACKAGES: &[(&str, &str)] = &[
    // A C toolchain for musl, for crates that build C code into the static binary.
    ("musl-tools", "musl-gcc"),
    // Image interop tests: layouts written by other tools must import, ours must read back.
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    // Pull tests run a real registry on 127.0.0.1.
    ("docker-registry", "docker-registry"),
    // System images are built from Debian packages.
    ("mmdebstrap", "mmdebstrap"),
    // The image benchmark's baseline: `zstd -dc | tar -x`.
    ("zstd", "zstd"),
    // The runtime benchmark's baseline: `runc run` on the same bundle.
    ("runc", "runc"),
    // The OS image: rootfs.squashfs, the hybrid ISO (grub-mkrescue drives
    // xorriso and needs both GRUB platforms and mtools for the EFI image).
    ("squashfs-tools", "mksquashfs"),
    ("xorriso", "xorriso"),
    ("grub-common", "grub-mkrescue"),
    ("grub-pc-bin", "/usr/lib/grub/i386-pc/boot.img"),
    ("grub-efi-amd64-bin", "/usr/lib/grub/x86_64-efi/kernel.img"),
    ("mtools", "mformat"),
    // Kernel: `apt-get download` + `dpkg-deb -x`, and depmod for its index.
    ("dpkg", "dpkg-deb"),
    ("kmod", "/usr/sbin/depmod"),
    // Debian's 6.12 ships its modules as .ko.xz; the build stores them decompressed.
    ("xz-utils", "xz"),
    // Shipped in the image: the emergency shell and the state file system tools.
    ("busybox-static", "/bin/busybox"),
    ("e2fsprogs", "/usr/sbin/mke2fs"),
    // The GPT writer's test cross-checks its table with fdisk.
    ("fdisk", "/usr/sbin/fdisk"),
    // Booting it: `cargo xtask run`, the QEMU tests, the boot benchmark.
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("ovmf", "/usr/share/OVMF/OVMF_CODE_4M.fd"),
    ("cloud-image-utils", "cloud-localds"),
    // The disk images: qcow2 conversion, and copy-on-write disks in the tests.
    ("qemu-utils", "qemu-img"),
    // The docker-host test's registry: a CA and a certificate made by the test.
    ("openssl", "openssl"),
    // netconf's privileged tests and benchmark: a DHCP server in a network
    // namespace, and dhcpcd as the benchmark's baseline client.
    ("dnsmasq-base", "/usr/sbin/dnsmasq"),
    ("dhcpcd-base", "/usr/sbin/dhcpcd"),
    // The console's tests: the real sshd on console-init's settings, and the
    // real ssh client logging in to it and to the VM.
    ("openssh-server", "/usr/sbin/sshd"),
    ("openssh-client", "ssh"),
    // The cloud test: the guestfwd relay to its metadata emulator, and gzip'd user-data.
    ("python3", "/usr/bin/python3"),
    // The busybox console's test: console-init's Dropbear setup, run for real.
    ("dropbear-bin", "/usr/sbin/dropbear"),
];

const RUSTUP_COMPONENTS: &[&str] = &["rustfmt", "clippy"];

/// A probe is a command name, or an absolute path that must exist (for
/// packages that ship only data, like GRUB's platform files).
fn have_command(name: &str) -> bool {
    if name.starts_with('/') {
        return Path::new(name).exists();
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, probe)| !have_command(probe))
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        if is_root() && have_command("apt-get") {
            let backports = qemu_backports_suite();
            if let Some(suite) = &backports {
                add_apt_suite(suite)?;
            }
            step(
                "apt-get update",
                Command::new("apt-get").args(["update", "-q"]),
            )?;
            let (qemu, rest): (Vec<&str>, Vec<&str>) = missing
                .iter()
                .partition(|p| backports.is_some() && p.starts_with("qemu-"));
            if !rest.is_empty() {
                apt_install(&rest, None)?;
            }
            if !qemu.is_empty() {
                apt_install(&qemu, backports.as_deref())?;
            }
        } else {
            bail!(
                "missing host packages; install them with:\n    sudo apt-get update && sudo apt-get install -y {}",
                missing.join(" ")
            );
        }
    }
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the musl target (https://rustup.rs)")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == MUSL_TARGET)
    {
        step(
            "rustup target add",
            Command::new("rustup").args(["target", "add", MUSL_TARGET]),
        )?;
    }
    let components = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()?;
    let components = String::from_utf8_lossy(&components.stdout);
    for component in RUSTUP_COMPONENTS {
        if !components.lines().any(|l| l.starts_with(component)) {
            step(
                &format!("rustup component add {component}"),
                Command::new("rustup").args(["component", "add", component]),
            )?;
        }
    }
    Ok(())
}

fn apt_install(packages: &[&str], suite: Option<&str>) -> Result<()> {
    let mut command = Command::new("apt-get");
    command.args(["install", "-y", "-q", "--no-install-recommends"]);
    if let Some(suite) = suite {
        command.args(["-t", suite]);
    }
    step(
        &format!("apt-get install {}", packages.join(" ")),
        command
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// QEMU's packages must all come from one release. Some machines ship
/// qemu-utils from bookworm-backports; bookworm's qemu-system-x86 then cannot
/// be installed beside it, so it has to come from backports too.
fn qemu_backports_suite() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "qemu-utils"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    version
        .contains("~bpo12")
        .then(|| "bookworm-backports".to_string())
}

/// Adds a Debian suite to apt's sources unless one already names it.
fn add_apt_suite(suite: &str) -> Result<()> {
    let sources = Path::new("/etc/apt/sources.list.d");
    let named = std::fs::read_dir(sources)
        .into_iter()
        .flatten()
        .flatten()
        .chain(
            std::fs::read_dir("/etc/apt")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name() == "sources.list"),
        )
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(suite)));
    if named {
        return Ok(());
    }
    let path = sources.join(format!("{suite}.sources"));
    println!("==> adding {suite} to apt's sources ({})", path.display());
    std::fs::write(
        &path,
        format!(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suite}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// Installs a cargo subcommand from crates.io when it is missing.
pub fn ensure_cargo_tool(binary: &str, krate: &str) -> Result<()> {
    if !have_command(binary) {
        step(
            &format!("cargo install {krate}"),
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["install", "--locked", krate]),
        )?;
    }
    Ok(())
}

/// Fails unless `binary` is statically linked (it must run with no libc on the image):
/// a dynamically linked ELF has a PT_INTERP program header naming its loader.
pub fn check_static(binary: &Path) -> Result<()> {
    const PT_INTERP: u32 = 3;
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| u64::from_le_bytes(b) as usize)
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02") {
        bail!("{} is not a 64-bit ELF file", binary.display());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("{} has a truncated ELF header", binary.display());
    };
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize) == Some(PT_INTERP) {
            bail!(
                "{} is dynamically linked; it must be static",
                binary.display()
            );
        }
    }
    Ok(())
}

/// What a whole `cargo xtask test` from a clean clone takes at its peak, in
/// GiB on the file system of `target/` and the temporary directory, with
/// some margin (measured on edc2b3e: a peak of 7.1 GB, `target/` 5.7 GB at
/// the end, the VMs' disks up to 1.3 GB more at once).
pub const TEST_DISK_GIB: u64 = 9;

/// Says how much space `dir`'s file system has, and warns when it is less than
/// `need_gib`: running out shows up much later as a build step's "No space
/// left on device", far from its cause.
pub fn report_free_space(dir: &Path, need_gib: u64) -> Result<()> {
    // `dir` may not exist yet on a clean clone: its nearest existing parent
    // is on the same file system.
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .context("no directory of the target path exists")?;
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(existing)
        .output()
        .context("running df")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let avail: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| {
            format!(
                "df printed no free space for {}: {text}",
                existing.display()
            )
        })?;
    let gib = avail as f64 / (1u64 << 30) as f64;
    if avail < need_gib << 30 {
        println!(
            "==> warning: {gib:.1} GiB free on {}'s file system; a full run from a clean clone \
             needs about {need_gib} GiB there, and may fail with \"No space left on device\"",
            existing.display()
        );
    } else {
        println!(
            "==> {gib:.1} GiB free on {}'s file system (a full run needs about {need_gib} GiB)",
            existing.display()
        );
    }
    Ok(())
}
