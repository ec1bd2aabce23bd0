//! The kernel: Debian's `linux-image-amd64`, from bookworm-backports when the
//! build host's apt knows it, fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x` into a cache under the target directory. Nothing is installed
//! on the host. The Debian package ships no `modules.dep` (its postinst runs
//! depmod), so `depmod -b` generates the index in the cache.
//!
//! Why backports' kernel (6.12 against bookworm's 6.1; docs/benchmarks.md, "Debian's
//! 6.12 kernel"): its image holds 4.9 MB of bss against 17.3 MB, and it makes the
//! tracing tree's files only when they are looked at, where 6.1 keeps about 9 MB of
//! slab for them from boot on. That is what the smallest machine is short of: with
//! 6.1 a 88 MiB machine cannot even unpack the initramfs; with 6.12 an 80 MiB one
//! boots (a login there is slow), and at 96 MiB a login comes 2.4 s after the
//! ready line instead of 9-11 s. Its image is zstd-compressed where 6.1's is xz,
//! so every boot reaches Berth about 2 s sooner under emulation.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{io_err, run, Error, Result};

/// The meta package whose dependency names the current kernel.
pub const META_PACKAGE: &str = "linux-image-amd64";

/// The release whose `META_PACKAGE` is preferred (see the module's comment).
pub const PREFERRED_RELEASE: &str = "bookworm-backports";

#[derive(Debug, Clone)]
pub struct Kernel {
    /// The versioned package, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: String,
    /// `uname -r`, e.g. `6.1.0-56-amd64`.
    pub version: String,
    /// The unpacked package.
    pub root: PathBuf,
    pub vmlinuz: PathBuf,
    /// `<root>/lib/modules/<version>`, with depmod's index files.
    pub modules_dir: PathBuf,
}

/// The package `meta` depends on, from `apt-cache depends`: `meta` as
/// [`PREFERRED_RELEASE`] has it, or as the host's default release has it when
/// apt has no such release (a warning says so).
pub fn resolve_package(meta: &str) -> Result<String> {
    match depends(meta, Some(PREFERRED_RELEASE)) {
        Ok(package) => Ok(package),
        Err(e) => {
            log::warn!(
                "{e}; using the kernel of the host's default release \
                 (add {PREFERRED_RELEASE} to apt's sources for the one Berth is measured with)"
            );
            depends(meta, None)
        }
    }
}

fn depends(meta: &str, release: Option<&str>) -> Result<String> {
    let mut cmd = Command::new("apt-cache");
    if let Some(release) = release {
        cmd.args(["-t", release]);
    }
    let out = run(cmd.args(["depends", meta]))?;
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Kernel(format!(
                "`apt-cache depends {meta}` names no linux-image-* package"
            ))
        })
}

/// Fetches (or reuses from `cache`) the kernel `meta` depends on.
pub fn fetch(cache: &Path, meta: &str) -> Result<Kernel> {
    std::fs::create_dir_all(cache).map_err(io_err(cache))?;
    let package = match resolve_package(meta) {
        Ok(p) => p,
        Err(e) => {
            // Offline or no apt lists: a kernel fetched earlier still builds.
            match cached_packages(cache)?.pop() {
                Some(p) => {
                    log::warn!("{e}; using the cached {p}");
                    p
                }
                None => return Err(e),
            }
        }
    };
    let root = cache.join(&package);
    let stamp = root.join(".berth-complete");
    if !stamp.exists() {
        unpack(cache, &package, &root)?;
        std::fs::write(&stamp, b"").map_err(io_err(&stamp))?;
    }
    describe(&package, &root)
}

fn cached_packages(cache: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(cache).map_err(io_err(cache))? {
        let entry = entry.map_err(io_err(cache))?;
        if entry.path().join(".berth-complete").exists() {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found.sort();
    Ok(found)
}

fn unpack(cache: &Path, package: &str, root: &Path) -> Result<()> {
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(io_err(&debs))?;
    let find_deb = || -> Result<Option<PathBuf>> {
        for entry in std::fs::read_dir(&debs).map_err(io_err(&debs))? {
            let path = entry.map_err(io_err(&debs))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb")) {
                return Ok(Some(path));
            }
        }
        Ok(None)
    };
    let deb = match find_deb()? {
        Some(deb) => deb,
        None => {
            log::info!("apt-get download {package}");
            run(Command::new("apt-get")
                .args(["download", "-q", package])
                .current_dir(&debs))?;
            find_deb()?.ok_or_else(|| {
                Error::Kernel(format!(
                    "apt-get download {package} left no .deb in {}",
                    debs.display()
                ))
            })?
        }
    };
    // Unpack beside the final place and rename, so an interrupted build never
    // leaves a half-extracted kernel that looks complete.
    let partial = cache.join(format!("{package}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
    }
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    decompress_modules(&partial)?;
    let kernel = describe_paths(&partial)?;
    let base = kernel
        .1
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .ok_or_else(|| Error::Kernel("odd module directory layout".into()))?
        .to_path_buf();
    depmod(&base, &kernel.0)?;
    if root.exists() {
        std::fs::remove_dir_all(root).map_err(io_err(root))?;
    }
    std::fs::rename(&partial, root).map_err(io_err(root))?;
    Ok(())
}

/// Debian's 6.12 ships its modules xz-compressed (`.ko.xz`). They are stored
/// decompressed: the root's squashfs compresses them anyway, the kernel would
/// otherwise decode xz at every load (slow under emulation, where each of
/// docker's netfilter modules is loaded at its start), and stage 2 and the
/// image's module lists name modules by their `.ko` paths.
fn decompress_modules(root: &Path) -> Result<()> {
    for lib in ["lib/modules", "usr/lib/modules"] {
        let modules = root.join(lib);
        if modules.is_dir() {
            run(Command::new("find")
                .arg(&modules)
                .args(["-name", "*.ko.xz", "-exec", "xz", "-d", "{}", "+"]))?;
        }
    }
    Ok(())
}

/// Runs `depmod -b <base> <version>` so `<base>/lib/modules/<version>` gets its
/// index files (modules.dep, .alias, .softdep, and their .bin forms).
pub fn depmod(base: &Path, version: &str) -> Result<()> {
    // depmod lives in /sbin, which is not on a normal user's PATH.
    let program = ["/usr/sbin/depmod", "/sbin/depmod"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("depmod");
    run(Command::new(program).arg("-b").arg(base).arg(version))?;
    Ok(())
}

/// (version, modules dir, vmlinuz) of an unpacked kernel package.
fn describe_paths(root: &Path) -> Result<(String, PathBuf, PathBuf)> {
    // Debian moved modules under /usr/lib in trixie; accept both.
    for lib in ["lib/modules", "usr/lib/modules"] {
        let dir = root.join(lib);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let version = entry.file_name().to_string_lossy().into_owned();
            let vmlinuz = root.join("boot").join(format!("vmlinuz-{version}"));
            if vmlinuz.is_file() {
                return Ok((version, entry.path(), vmlinuz));
            }
        }
    }
    Err(Error::Kernel(format!(
        "{} holds no lib/modules/<version> with a matching boot/vmlinuz-<version>",
        root.display()
    )))
}

fn describe(package: &str, root: &Path) -> Result<Kernel> {
    let (version, modules_dir, vmlinuz) = describe_paths(root)?;
    Ok(Kernel {
        package: package.to_string(),
        version,
        root: root.to_path_buf(),
        vmlinuz,
        modules_dir,
    })
}

/// Where a bzImage decompresses itself, from its boot-protocol header
/// (the kernel's `Documentation/arch/x86/boot.rst`): from `pref_address`, which
/// is also the lowest address a relocatable x86_64 kernel moves itself to
/// (`LOAD_PHYSICAL_ADDR`, 16 MiB on Debian's), for `init_size` bytes, what the
/// decompressor, the decompressed image and its bss need.
///
/// It bounds the smallest machine the kernel boots on, whatever runs after it:
/// QEMU's `-kernel` and GRUB put the initrd at the top of memory, above this
/// region (QEMU without checking, so a smaller machine overwrites the initrd
/// while decompressing: "Initramfs unpacking failed: invalid magic").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecompressionRegion {
    pub start: u64,
    pub size: u64,
}

/// The header fields [`DecompressionRegion`] reads, and the boot protocol
/// version that has them (2.10).
const HEADER_MAGIC_AT: usize = 0x202;
const HEADER_MAGIC: &[u8] = b"HdrS";
const HEADER_VERSION: usize = 0x206;
const PREF_ADDRESS: usize = 0x258;
const INIT_SIZE: usize = 0x260;
const VERSION_WITH_INIT_SIZE: u16 = 0x020a;

impl DecompressionRegion {
    /// Reads the header of the bzImage at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read as _;
        let mut header = Vec::with_capacity(INIT_SIZE + 4);
        std::fs::File::open(path)
            .and_then(|f| f.take((INIT_SIZE + 4) as u64).read_to_end(&mut header))
            .map_err(io_err(path))?;
        Self::parse(&header)
            .map_err(|reason| Error::Kernel(format!("{}: {reason}", path.display())))
    }

    fn parse(header: &[u8]) -> std::result::Result<Self, String> {
        let field = |at: usize, len: usize| {
            header
                .get(at..at + len)
                .ok_or_else(|| format!("too short for a bzImage header ({} bytes)", header.len()))
        };
        if field(HEADER_MAGIC_AT, 4)? != HEADER_MAGIC {
            return Err("not a bzImage (no `HdrS` at 0x202)".to_string());
        }
        let le = |bytes: &[u8]| bytes.iter().rev().fold(0u64, |n, b| n << 8 | u64::from(*b));
        let version = le(field(HEADER_VERSION, 2)?) as u16;
        if version < VERSION_WITH_INIT_SIZE {
            return Err(format!(
                "boot protocol {}.{:02} has no init_size (2.10 and later do)",
                version >> 8,
                version & 0xff
            ));
        }
        Ok(Self {
            start: le(field(PREF_ADDRESS, 8)?),
            size: le(field(INIT_SIZE, 4)?),
        })
    }

    /// The least memory a machine needs to boot this kernel with an initrd of
    /// `initrd_len` bytes above the region (the firmware's own tables come on top).
    pub fn least_memory(&self, initrd_len: u64) -> u64 {
        self.start + self.size + initrd_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.ko.xz` in either module directory becomes its `.ko` with the same bytes,
    /// and nothing compressed is left for stage 2's `.ko` paths to miss.
    #[test]
    fn xz_modules_are_stored_decompressed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for lib in [
            "lib/modules/6.12.0-test/kernel",
            "usr/lib/modules/6.12.0-test/kernel",
        ] {
            let mods = dir.path().join(lib);
            std::fs::create_dir_all(&mods).expect("mkdir");
            let ko = mods.join("a.ko");
            std::fs::write(&ko, b"module bytes").expect("write");
            run(Command::new("xz").arg(&ko)).expect("xz");
            assert!(mods.join("a.ko.xz").exists() && !ko.exists());
        }
        decompress_modules(dir.path()).expect("decompress");
        for lib in [
            "lib/modules/6.12.0-test/kernel",
            "usr/lib/modules/6.12.0-test/kernel",
        ] {
            let mods = dir.path().join(lib);
            assert_eq!(
                std::fs::read(mods.join("a.ko")).expect("a.ko"),
                b"module bytes"
            );
            assert!(!mods.join("a.ko.xz").exists());
        }
    }

    /// A header as Debian's 6.12 kernel has it (boot protocol 2.15, 16 MiB,
    /// 55.9 MiB) gives the region and the floor; older protocols and
    /// non-bzImages are refused with the reason.
    #[test]
    fn the_decompression_region_comes_from_the_boot_header() {
        let mut header = vec![0u8; INIT_SIZE + 4];
        header[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
        header[HEADER_VERSION..HEADER_VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        header[PREF_ADDRESS..PREF_ADDRESS + 8].copy_from_slice(&0x100_0000u64.to_le_bytes());
        header[INIT_SIZE..INIT_SIZE + 4].copy_from_slice(&58_646_528u32.to_le_bytes());
        let region = DecompressionRegion::parse(&header).expect("parse");
        assert_eq!(
            region,
            DecompressionRegion {
                start: 16 << 20,
                size: 58_646_528
            }
        );
        assert_eq!(
            region.least_memory(1 << 20),
            (16 << 20) + 58_646_528 + (1 << 20)
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vmlinuz");
        std::fs::write(&path, &header).expect("write");
        assert_eq!(DecompressionRegion::read(&path).expect("read"), region);

        header[HEADER_VERSION..HEADER_VERSION + 2].copy_from_slice(&0x0209u16.to_le_bytes());
        let old = DecompressionRegion::parse(&header).expect_err("2.09");
        assert!(old.contains("2.09 has no init_size"), "{old}");
        header[HEADER_MAGIC_AT] = b'X';
        let e = DecompressionRegion::parse(&header).expect_err("no magic");
        assert!(e.contains("not a bzImage"), "{e}");
        std::fs::write(&path, b"short").expect("write");
        let e = DecompressionRegion::read(&path)
            .expect_err("short")
            .to_string();
        assert!(e.contains("vmlinuz") && e.contains("too short"), "{e}");
    }
}
