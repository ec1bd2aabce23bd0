//! Kernel modules from `modules.dep`, dependencies first, with finit_module
//! (init_module for the zstd-compressed ones of the initramfs).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

mod options;
pub use options::Options;

/// A parsed `modules.dep`: module name → (path, direct dependencies' paths).
#[derive(Debug, Default)]
pub struct ModuleDep {
    /// In file order, so "load everything" is deterministic.
    names: Vec<String>,
    entries: HashMap<String, (PathBuf, Vec<PathBuf>)>,
}

/// `kernel/fs/ext4/ext4.ko.xz` → `ext4`; dashes and underscores are the same
/// thing to the kernel, so names are kept with underscores.
pub fn module_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy())
        .unwrap_or_default();
    let stem = file.split(".ko").next().unwrap_or(&file);
    stem.replace('-', "_")
}

pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

impl ModuleDep {
    /// `dir/modules.dep` (`dir` is `/lib/modules/<release>`), parsed.
    pub fn read(dir: &Path) -> io::Result<ModuleDep> {
        Ok(ModuleDep::parse(&std::fs::read_to_string(
            dir.join("modules.dep"),
        )?))
    }

    pub fn parse(text: &str) -> ModuleDep {
        let mut dep = ModuleDep::default();
        for line in text.lines() {
            let Some((module, deps)) = line.split_once(':') else {
                continue;
            };
            let path = PathBuf::from(module.trim());
            let name = module_name(&path);
            let deps = deps.split_whitespace().map(PathBuf::from).collect();
            if dep.entries.insert(name.clone(), (path, deps)).is_none() {
                dep.names.push(name);
            }
        }
        dep
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The file of the module `name` (relative to the modules directory).
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.entries
            .get(&normalize(name))
            .map(|(path, _)| path.as_path())
    }

    /// The files to load for `wanted`, each after everything it depends on and
    /// each once; names `modules.dep` does not know come back apart.
    pub fn resolve(&self, wanted: &[String]) -> (Vec<PathBuf>, Vec<String>) {
        let mut order = Vec::new();
        let mut missing = Vec::new();
        let mut done = HashSet::new();
        for name in wanted {
            let name = normalize(name);
            if self.entries.contains_key(&name) {
                self.visit(&name, &mut done, &mut order);
            } else {
                missing.push(name);
            }
        }
        (order, missing)
    }

    fn visit(&self, name: &str, done: &mut HashSet<String>, order: &mut Vec<PathBuf>) {
        // Marked before recursing: a (broken) cyclic modules.dep must not recurse forever.
        if !done.insert(name.to_string()) {
            return;
        }
        let Some((path, deps)) = self.entries.get(name) else {
            return;
        };
        for dep in deps {
            let dep_name = module_name(dep);
            if self.entries.contains_key(&dep_name) {
                self.visit(&dep_name, done, order);
            } else if !order.contains(dep) {
                // A dependency without a line of its own (a trimmed file): load it by path.
                order.push(dep.clone());
            }
        }
        order.push(path.clone());
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain data; zeroed is a valid value for it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).ok()
}

/// What loading came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub loaded: usize,
    pub already: usize,
    /// Loaded but found no hardware (ENODEV).
    pub absent: usize,
    /// `(module, why)`, for the warning.
    pub failed: Vec<(String, String)>,
    pub missing: Vec<String>,
    /// Asked for, and not loaded: the blacklist names them.
    pub blacklisted: Vec<String>,
}

/// Loads `wanted` (or every module `modules.dep` lists, when `None`) from
/// `dir` (`/lib/modules/<release>`) through any loader (PID 1's goes through
/// its `Sys`): `load(path, kernel_decodes, params)` is called for each file
/// (`kernel_decodes`: an `.xz` or `.gz` file, for the kernel to decompress),
/// dependencies first, with every parameter `options` has for that module.
/// A wanted module the blacklist in `options` names is not loaded (one that
/// another needs still is).
pub fn load_with(
    dir: &Path,
    wanted: Option<&[String]>,
    options: &Options,
    load: impl FnMut(&Path, bool, &str) -> io::Result<()>,
) -> io::Result<Report> {
    let dep = ModuleDep::read(dir)?;
    Ok(load_from(dir, &dep, wanted, options, load))
}

/// [`load_with`] for a caller that has parsed `dir`'s `modules.dep` already.
pub fn load_from(
    dir: &Path,
    dep: &ModuleDep,
    wanted: Option<&[String]>,
    options: &Options,
    mut load: impl FnMut(&Path, bool, &str) -> io::Result<()>,
) -> Report {
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let builtin: HashSet<String> = builtin.lines().map(|l| module_name(Path::new(l))).collect();
    let all;
    let wanted = match wanted {
        Some(w) => w,
        None => {
            all = dep.names().to_vec();
            &all
        }
    };
    let (blacklisted, wanted): (Vec<String>, Vec<String>) = wanted
        .iter()
        .map(|w| normalize(w))
        .partition(|w| options.is_blacklisted(w));
    let (files, missing) = dep.resolve(&wanted);
    let not_for_this_cpu = match std::fs::read_to_string(CPU_MODALIAS) {
        Ok(cpu) if !files.is_empty() => not_for_cpu(
            &std::fs::read_to_string(dir.join("modules.alias")).unwrap_or_default(),
            cpu.trim(),
        ),
        _ => HashSet::new(),
    };
    let mut report = Report {
        missing: missing
            .into_iter()
            .filter(|m| !builtin.contains(m))
            .collect(),
        blacklisted,
        ..Report::default()
    };
    for rel in files {
        let path = dir.join(&rel);
        let name = module_name(&rel);
        let file = rel.to_string_lossy();
        // `.zst` is decoded by load_module_file itself.
        let kernel_decodes = [".xz", ".gz"].iter().any(|e| file.ends_with(e));
        if not_for_this_cpu.contains(&name) {
            // What its init would say (ENODEV), without the load: a module
            // whose init fails is freed only after RCU grace periods, and
            // crc32c_intel's failed load under QEMU's default CPU cost a disk
            // boot about 65 ms before its state mount (docs/benchmarks.md,
            // "Drivers for a CPU feature").
            log::debug!("module {name}: not for this CPU");
            report.absent += 1;
            continue;
        }
        let args = options.params_for(&name);
        let started = std::time::Instant::now();
        match load(&path, kernel_decodes, &args) {
            Ok(()) => {
                // The time says which driver a slow boot spent itself on.
                log::debug!(
                    "loaded module {name} in {} ms",
                    started.elapsed().as_millis()
                );
                report.loaded += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => report.already += 1,
            // The module's init found nothing to drive (crc32c_intel on a CPU
            // without SSE 4.2, a controller that is not there): not a problem.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENXIO)) => {
                log::debug!("module {name}: no such device");
                report.absent += 1;
            }
            Err(e) => {
                let why = match e.raw_os_error() {
                    Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) if kernel_decodes => format!(
                        "{e} (this kernel cannot decompress modules: ship them uncompressed)"
                    ),
                    _ => e.to_string(),
                };
                report.failed.push((name, why));
            }
        }
    }
    report
}

// finit_module(2) flag: the file is compressed and the kernel decompresses it (Linux 5.17+
// with CONFIG_MODULE_DECOMPRESS). Not in the libc crate.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Modules named `*.ko.zst` are decoded here, not by the kernel: a kernel
/// decompresses only the one format it was built for (Debian's: xz), and the
/// initramfs keeps its drivers in zstd so that the kernel's unpack before
/// `/init` copies them instead of decoding all of them, when a boot loads a
/// few (iso/src/initramfs.rs).
pub const ZSTD_SUFFIX: &str = ".zst";

/// The largest module a `.zst` file may decode to. Debian's largest (amdgpu)
/// is 29 MB; a corrupt or hostile frame must not take PID 1's memory.
const MAX_MODULE_BYTES: usize = 64 << 20;

/// Loads the module file at `path` with `params`: `*.zst` decoded here and
/// handed over with init_module(2), any other file with finit_module(2);
/// `kernel_decodes` asks the kernel to decompress it (`.xz`, `.gz`).
pub fn load_module_file(path: &Path, params: &str, kernel_decodes: bool) -> io::Result<()> {
    let params = CString::new(params.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in module parameters"))?;
    if path.to_string_lossy().ends_with(ZSTD_SUFFIX) {
        let image = decode_zstd_module(path)?;
        // SAFETY: init_module reads `image.len()` bytes from a live buffer and a
        // NUL-terminated parameter string; both outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_init_module,
                image.as_ptr(),
                image.len(),
                params.as_ptr(),
            )
        };
        return if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
    }
    let file = File::open(path)?;
    let flags = if kernel_decodes {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: finit_module reads from a valid open fd and a NUL-terminated
    // parameter string; both outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The module image a `.ko.zst` file holds, at most [`MAX_MODULE_BYTES`]:
/// decoded in one call into a buffer of the size the frame declares.
pub fn decode_zstd_module(path: &Path) -> io::Result<Vec<u8>> {
    let invalid = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let frame = std::fs::read(path)?;
    let size = match zstd::zstd_safe::get_frame_content_size(&frame) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(invalid("a zstd frame without its size".into())),
        Err(_) => return Err(invalid("not a zstd module".into())),
    };
    if size > MAX_MODULE_BYTES as u64 {
        return Err(invalid(format!(
            "decodes to more than {} MiB",
            MAX_MODULE_BYTES >> 20
        )));
    }
    zstd::bulk::decompress(&frame, size as usize)
        .map_err(|e| invalid(format!("not a zstd module: {e}")))
}

/// Logs a report: one debug line on success, a warning per problem.
pub fn log_report(what: &str, report: &Report) {
    log::debug!(
        "{what}: {} modules loaded, {} already there",
        report.loaded,
        report.already
    );
    for (name, why) in &report.failed {
        log::warn!("module {name}: {why}");
    }
    for name in &report.missing {
        log::warn!("module {name} not found");
    }
    for name in &report.blacklisted {
        log::info!("module {name} not loaded: the blacklist names it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz kernel/crypto/crc32c_generic.ko.xz
kernel/fs/mbcache.ko.xz:
kernel/fs/jbd2/jbd2.ko.xz: kernel/crypto/crc32c_generic.ko.xz
kernel/lib/crc16.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio.ko.xz:
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/scsi_mod.ko:
";

    fn names(order: &[PathBuf]) -> Vec<String> {
        order.iter().map(|p| module_name(p)).collect()
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let dep = ModuleDep::parse(DEP);
        let (order, missing) = dep.resolve(&["ext4".into(), "jbd2".into(), "virtio_blk".into()]);
        assert!(missing.is_empty());
        let n = names(&order);
        assert_eq!(
            n,
            [
                "crc16",
                "mbcache",
                "crc32c_generic",
                "jbd2",
                "ext4",
                "virtio",
                "virtio_ring",
                "virtio_blk"
            ]
        );
        let pos = |m: &str| n.iter().position(|x| x == m).expect(m);
        assert!(pos("crc32c_generic") < pos("jbd2"));
        assert!(pos("virtio") < pos("virtio_ring"));
    }

    #[test]
    fn dashes_and_unknown_names() {
        let dep = ModuleDep::parse(DEP);
        let (order, missing) = dep.resolve(&["usb_storage".into(), "nosuch".into()]);
        assert_eq!(names(&order), ["scsi_mod", "usb_storage"]);
        assert_eq!(missing, ["nosuch"]);
    }

    #[test]
    fn zstd_modules_are_decoded_here_not_by_the_kernel() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/fs/overlayfs/overlay.ko.zst:\nkernel/lib/crc16.ko.xz:\n",
        )
        .expect("write");
        let mut calls = Vec::new();
        load_with(
            dir.path(),
            None,
            &Options::default(),
            |path, kernel_decodes, _| {
                calls.push((module_name(path), kernel_decodes));
                Ok(())
            },
        )
        .expect("load");
        assert_eq!(
            calls,
            [("overlay".to_string(), false), ("crc16".to_string(), true)]
        );

        let image = b"\x7fELF a module's body ".repeat(4000);
        let path = dir.path().join("overlay.ko.zst");
        let frame = zstd::bulk::compress(&image, 19).expect("compress");
        std::fs::write(&path, frame).expect("write");
        assert_eq!(decode_zstd_module(&path).expect("decode"), image);

        std::fs::write(&path, b"not a zstd frame").expect("write");
        let e = decode_zstd_module(&path).expect_err("garbage decodes");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("overlay.ko.zst"), "{e}");
    }

    #[test]
    fn loads_everything_in_order_and_reports_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("modules.dep"), DEP).expect("write");
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/block/loop.ko\n",
        )
        .expect("write");
        let fails = [
            ("crc16.ko.xz", libc::EEXIST),
            ("scsi_mod.ko", libc::ENOENT),
            ("virtio_blk.ko.xz", libc::ENODEV),
        ];
        let mut calls = Vec::new();
        let mut record = |path: &Path, compressed: bool, _: &str| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            calls.push(format!(
                "{}{}",
                path.display(),
                if compressed { " compressed" } else { "" }
            ));
            match fails.iter().find(|(f, _)| *f == name) {
                Some((_, errno)) => Err(io::Error::from_raw_os_error(*errno)),
                None => Ok(()),
            }
        };
        let report = load_with(dir.path(), None, &Options::default(), &mut record).expect("load");
        assert_eq!(report.loaded, 7);
        assert_eq!(report.already, 1);
        assert_eq!(report.absent, 1);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, "scsi_mod");
        let first = &calls[0];
        assert!(
            first.ends_with("kernel/lib/crc16.ko.xz compressed"),
            "{first}"
        );
        assert!(calls
            .iter()
            .any(|c| c.ends_with("usb-storage.ko") && !c.contains("compressed")));

        let wanted = ["loop".to_string(), "isofs".to_string()];
        let report = load_with(dir.path(), Some(&wanted), &Options::default(), |_, _, _| {
            Ok(())
        })
        .expect("load");
        assert_eq!(report.missing, ["isofs"], "loop is built in");
    }

    #[test]
    fn parameters_go_to_the_named_module_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("modules.dep"), DEP).expect("write");
        let mut seen = Vec::new();
        let options = Options::default().with_params("usb-storage", "delay_use=1");
        let wanted = ["usb-storage".to_string()];
        let report = load_with(dir.path(), Some(&wanted), &options, |path, _, args| {
            seen.push((module_name(path), args.to_string()));
            Ok(())
        })
        .expect("load");
        assert_eq!(report.loaded, 2);
        assert_eq!(
            seen,
            [
                ("scsi_mod".to_string(), String::new()),
                ("usb_storage".to_string(), "delay_use=1".to_string())
            ]
        );
    }

    #[test]
    fn the_blacklist_skips_what_is_wanted_but_not_what_another_needs() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("modules.dep"), DEP).expect("write");
        let options = Options::from_cmdline(
            "modprobe.blacklist=scsi_mod,loop sd-mod.x=1 usb_storage.delay_use=2",
        );
        let wanted = ["usb-storage".to_string(), "loop".to_string()];
        let mut seen = Vec::new();
        let report = load_with(dir.path(), Some(&wanted), &options, |path, _, args| {
            seen.push(format!("{} {args}", module_name(path)));
            Ok(())
        })
        .expect("load");
        // scsi_mod is blacklisted, but usb-storage needs it: loaded (kmod
        // does the same); loop is wanted and blacklisted: not loaded.
        assert_eq!(seen, ["scsi_mod ", "usb_storage delay_use=2"]);
        assert_eq!(report.blacklisted, ["loop"]);
        // Everything (`None`): each module that is blacklisted and needed by
        // none is left out.
        let mut seen = Vec::new();
        load_with(dir.path(), None, &options, |path, _, _| {
            seen.push(module_name(path));
            Ok(())
        })
        .expect("load");
        assert!(seen.contains(&"scsi_mod".to_string()), "{seen:?}");
        assert!(!seen.contains(&"loop".to_string()), "{seen:?}");
    }

    #[test]
    fn release_is_known() {
        assert!(kernel_release().is_some_and(|r| !r.is_empty()));
    }
}

/// Modules for the devices that are present, as udev's coldplug finds them:
/// the `modalias` of every device on a bus under `sysfs` (`/sys`), and the
/// CPU's, matched against the `modules.alias` patterns in `dir`. NIC drivers
/// (virtio_net, e1000…) are not in the initramfs, so without this the network
/// would never come up.
pub fn for_present_devices(dir: &Path, sysfs: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("modules.alias")).unwrap_or_default();
    let aliases = parse_aliases(&text);
    let mut wanted: Vec<String> = Vec::new();
    for modalias in present_modaliases(sysfs) {
        for alias in &aliases {
            if modalias.starts_with(alias.literal)
                && glob_match(alias.pattern.as_bytes(), modalias.as_bytes())
            {
                let module = normalize(alias.module);
                if !wanted.contains(&module) {
                    wanted.push(module);
                }
            }
        }
    }
    wanted
}

/// The modules an alias names (`net-pf-16-proto-12-family-nftables`,
/// `fs-overlay`, a modalias), from `modules.alias` in `dir`; a plain module
/// name stands for itself.
pub fn resolve_alias(dir: &Path, name: &str) -> Vec<String> {
    let aliases = std::fs::read_to_string(dir.join("modules.alias")).unwrap_or_default();
    let mut out: Vec<String> = parse_aliases(&aliases)
        .into_iter()
        .filter(|a| {
            name.starts_with(a.literal) && glob_match(a.pattern.as_bytes(), name.as_bytes())
        })
        .map(|a| normalize(a.module))
        .collect();
    out.dedup();
    if out.is_empty() {
        out.push(normalize(name));
    }
    out
}

/// `modprobe [-q] [-v] [-a] [--] NAME|ALIAS [PARAM=VALUE…]`, for the kernel's
/// on-demand loading (it runs `/sbin/modprobe -q -- ALIAS` when netfilter,
/// a filesystem or a protocol is first used) and for programs in system
/// containers that call modprobe (dockerd). A module gets the parameters of
/// `conf_dir` (`/etc/modprobe.d`), then the kernel command line's (`kernel`),
/// then the command's own. An alias is not resolved to a blacklisted module;
/// a module named outright is loaded all the same, as kmod does. Returns the
/// exit code.
pub fn modprobe(
    dir: &Path,
    conf_dir: &Path,
    kernel: &Options,
    args: &[String],
    mut load: impl FnMut(&Path, bool, &str) -> io::Result<()>,
) -> i32 {
    let mut quiet = false;
    let mut all = false;
    let mut words = Vec::new();
    let mut options_done = false;
    for a in args {
        match a.as_str() {
            "--" if !options_done => options_done = true,
            "-q" | "--quiet" if !options_done => quiet = true,
            "-a" | "--all" if !options_done => all = true,
            // Verbosity and "use the config" flags change nothing here.
            "-v" | "--verbose" | "-b" | "--use-blacklist" | "-s" | "--syslog" if !options_done => {}
            other if other.starts_with('-') && !options_done => {
                if !quiet {
                    eprintln!("modprobe: option {other} is not supported");
                }
                return 1;
            }
            other => words.push(other.to_string()),
        }
    }
    let Some(first) = words.first() else {
        if !quiet {
            eprintln!("modprobe: no module named");
        }
        return 1;
    };
    // Without -a, what follows the name are its parameters.
    let (names, own): (Vec<&String>, String) = if all {
        (words.iter().collect(), String::new())
    } else {
        (vec![first], words[1..].join(" "))
    };
    let configured = Options::from_modprobe_d(conf_dir).then(kernel.clone());
    let mut status = 0;
    for name in names {
        let wanted = resolve_alias(dir, name);
        let mut options = if wanted == [normalize(name)] {
            configured.named()
        } else {
            configured.clone()
        };
        for module in &wanted {
            options = options.with_params(module, &own);
        }
        match load_with(dir, Some(&wanted), &options, &mut load) {
            Ok(r) if r.failed.is_empty() && r.missing.is_empty() && r.blacklisted.is_empty() => {}
            Ok(r) => {
                status = 1;
                if !quiet {
                    for (m, why) in &r.failed {
                        eprintln!("modprobe: {m}: {why}");
                    }
                    for m in &r.blacklisted {
                        eprintln!("modprobe: {m}: the blacklist names it (modprobe.d or modprobe.blacklist=)");
                    }
                    for m in &r.missing {
                        eprintln!("modprobe: module {m} not found in {}", dir.display());
                    }
                }
            }
            Err(e) => {
                status = 1;
                if !quiet {
                    eprintln!("modprobe: {}: {e}", dir.display());
                }
            }
        }
    }
    status
}

/// The CPU's modalias: its vendor, family, model and every feature it has.
const CPU_MODALIAS: &str = "/sys/devices/system/cpu/modalias";

/// The modules `modules.alias` (`aliases`) ties to CPU features (`cpu:`
/// aliases: SSE 4.2's crc32c_intel, AES-NI's aesni_intel) of which `cpu`
/// (the CPU's modalias) matches none. Each is one implementation of
/// something with a generic one beside it, and its init refuses a CPU
/// without the feature.
fn not_for_cpu(aliases: &str, cpu: &str) -> HashSet<String> {
    let mut cpu_modules: HashMap<String, bool> = HashMap::new();
    let cpu_lines = aliases.lines().filter(|l| l.starts_with("alias cpu:"));
    for alias in cpu_lines.filter_map(parse_alias) {
        let matches = glob_match(alias.pattern.as_bytes(), cpu.as_bytes());
        *cpu_modules.entry(normalize(alias.module)).or_default() |= matches;
    }
    cpu_modules
        .into_iter()
        .filter(|(_, matches)| !matches)
        .map(|(module, _)| module)
        .collect()
}

/// One `alias PATTERN MODULE` line.
struct Alias<'a> {
    pattern: &'a str,
    /// The pattern up to its first wildcard: a cheap filter before the glob,
    /// found once per line rather than once per device.
    literal: &'a str,
    module: &'a str,
}

/// `alias PATTERN MODULE` lines.
fn parse_aliases(text: &str) -> Vec<Alias<'_>> {
    text.lines().filter_map(parse_alias).collect()
}

/// One line, if it is an `alias PATTERN MODULE` line.
fn parse_alias(line: &str) -> Option<Alias<'_>> {
    let mut words = line.split_whitespace();
    if words.next() != Some("alias") {
        return None;
    }
    let pattern = words.next()?;
    let literal = &pattern[..pattern.find(['*', '?', '[']).unwrap_or(pattern.len())];
    Some(Alias {
        pattern,
        literal,
        module: words.next()?,
    })
}

/// The `modalias` of each device on a bus (`sysfs/bus/*/devices/*`), and
/// the CPU's, which is on none (its features' modules), each once. Walking
/// all of `sysfs/devices` finds the same, but reads several times as many
/// directories: a tenth of a second and more, twice a boot, under emulation.
fn present_modaliases(sysfs: &Path) -> Vec<String> {
    let sorted = |dir: &Path| -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.sort();
        paths
    };
    let mut files: Vec<PathBuf> = sorted(&sysfs.join("bus"))
        .iter()
        .flat_map(|bus| sorted(&bus.join("devices")))
        .map(|device| device.join("modalias"))
        .collect();
    files.push(sysfs.join("devices/system/cpu/modalias"));
    let mut out: Vec<String> = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let text = text.trim();
        if !text.is_empty() && !out.iter().any(|m| m == text) {
            out.push(text.to_string());
        }
    }
    out
}

/// Shell-style glob as modules.alias uses it: `*`, `?` and `[...]` classes.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
                continue;
            }
            Some(b'[') => {
                if let Some((matched, next)) = class_match(&pattern[p..], text[t]) {
                    if matched {
                        p += next;
                        t += 1;
                        continue;
                    }
                }
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((star, at)) => {
                p = star + 1;
                t = at + 1;
                backtrack = Some((star, at + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether `c` is in the class at the start of `pattern` (`[abc]`, `[a-z]`,
/// `[!x]`), and the class's length; `None` for an unterminated class.
fn class_match(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while let Some(&b) = pattern.get(i) {
        if b == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&e| e != b']') {
            let end = pattern[i + 2];
            matched |= (b..=end).contains(&c);
            i += 3;
        } else {
            matched |= b == c;
            i += 1;
        }
        first = false;
    }
    None
}

#[cfg(test)]
mod coldplug_tests {
    #[test]
    fn modprobe_resolves_the_kernels_aliases_and_loads_dependencies_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/net/netfilter/nf_tables.ko: kernel/lib/libcrc32c.ko\n\
             kernel/lib/libcrc32c.ko:\n\
             kernel/fs/overlayfs/overlay.ko:\n",
        )
        .expect("dep");
        std::fs::write(
            dir.path().join("modules.alias"),
            "alias net-pf-16-proto-12-family-nftables nf_tables\nalias fs-overlay overlay\n",
        )
        .expect("alias");
        let mut kernel = Options::default();
        let run = |kernel: &Options, args: &[&str]| {
            let mut loaded = Vec::new();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let code = modprobe(
                dir.path(),
                &dir.path().join("modprobe.d"),
                kernel,
                &args,
                |path, _, params| {
                    loaded.push(format!("{} {params}", module_name(path)));
                    Ok(())
                },
            );
            (code, loaded)
        };
        let (code, loaded) = run(&kernel, &["-q", "--", "net-pf-16-proto-12-family-nftables"]);
        assert_eq!(code, 0);
        assert_eq!(loaded, ["libcrc32c ", "nf_tables "]);
        let (code, loaded) = run(&kernel, &["overlay", "redirect_dir=on"]);
        assert_eq!(
            (code, loaded),
            (0, vec!["overlay redirect_dir=on".to_string()])
        );
        let (code, loaded) = run(&kernel, &["-a", "fs-overlay", "nf_tables"]);
        assert_eq!(code, 0);
        assert_eq!(loaded, ["overlay ", "libcrc32c ", "nf_tables "]);
        assert_eq!(run(&kernel, &["-q", "no-such-thing"]).0, 1);
        // modprobe.d options come first, the command line's after them.
        std::fs::create_dir(dir.path().join("modprobe.d")).expect("mkdir");
        std::fs::write(
            dir.path().join("modprobe.d/berth.conf"),
            "# comment\noptions overlay metacopy=off\n",
        )
        .expect("conf");
        let (_, loaded) = run(&kernel, &["fs-overlay"]);
        assert_eq!(loaded, ["overlay metacopy=off"]);
        let (_, loaded) = run(&kernel, &["overlay", "redirect_dir=on"]);
        assert_eq!(loaded, ["overlay metacopy=off redirect_dir=on"]);
        assert_eq!(run(&kernel, &["--remove", "overlay"]).0, 1);
        // The kernel command line's options come after modprobe.d's; its
        // blacklist keeps an alias from loading the module, not its name.
        kernel = Options::from_cmdline("overlay.index=0 modprobe.blacklist=nf-tables");
        let (_, loaded) = run(&kernel, &["overlay"]);
        assert_eq!(loaded, ["overlay metacopy=off index=0"]);
        let (code, loaded) = run(&kernel, &["-q", "net-pf-16-proto-12-family-nftables"]);
        assert_eq!((code, loaded.len()), (1, 0));
        let (code, loaded) = run(&kernel, &["nf_tables"]);
        assert_eq!(
            (code, loaded),
            (0, vec!["libcrc32c ".to_string(), "nf_tables ".to_string()])
        );
    }

    use super::*;

    #[test]
    fn a_cpu_features_module_is_not_for_a_cpu_without_it() {
        let aliases = "alias crc32c crc32c_intel\n\
             alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c-intel\n\
             alias cpu:type:x86,ven*fam*mod*:feature:*0099* aesni_intel\n\
             alias cpu:type:x86,ven*fam*mod*:feature:*0081* twofeatures\n\
             alias cpu:type:x86,ven*fam*mod*:feature:*0094* twofeatures\n\
             alias pci:v00001AF4d* virtio_pci\n";
        // QEMU's default CPU (qemu64): SSE 3 (0080) but neither SSE 4.2 (0094) nor AES-NI (0099).
        let qemu64 = "cpu:type:x86,ven0000fam0006mod0006:feature:,0000,0001,0080,0081,008D";
        let mut not = not_for_cpu(aliases, qemu64).into_iter().collect::<Vec<_>>();
        not.sort();
        assert_eq!(not, ["aesni_intel", "crc32c_intel"]);
        let sse42 = "cpu:type:x86,ven0000fam0006mod0006:feature:,0000,0081,0094,0099";
        assert!(not_for_cpu(aliases, sse42).is_empty());
        // Without any `cpu:` alias nothing is held back, whatever the CPU.
        assert!(not_for_cpu("alias crc32c crc32c_intel\n", qemu64).is_empty());
    }

    #[test]
    fn globs_match_like_modprobe() {
        let virtio = "virtio:d00000001v*";
        assert!(glob_match(virtio.as_bytes(), b"virtio:d00000001v00001AF4"));
        assert!(!glob_match(virtio.as_bytes(), b"virtio:d00000002v00001AF4"));
        let e1000 = "pci:v00008086d0000100Esv*sd*bc*sc*i*";
        assert!(glob_match(
            e1000.as_bytes(),
            b"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
        ));
        assert!(glob_match(b"acpi*:PNP0C0[CE]:*", b"acpi:PNP0C0C:"));
        assert!(!glob_match(b"acpi*:PNP0C0[CE]:*", b"acpi:PNP0C0D:"));
        assert!(glob_match(b"a[!b]c", b"axc") && !glob_match(b"a[!b]c", b"abc"));
        assert!(glob_match(b"x?z", b"xyz") && !glob_match(b"x?z", b"xz"));
    }

    #[test]
    fn present_devices_pick_their_drivers() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("modules.alias"),
            "# Aliases extracted from modules themselves.\n\
             alias virtio:d00000001v* virtio_net\n\
             alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c-intel\n",
        )
        .expect("aliases");
        let sys = dir.path().join("sys");
        let pci = sys.join("devices/pci0000:00/0000:00:03.0");
        let virtio = pci.join("virtio0");
        std::fs::create_dir_all(&virtio).expect("devices");
        std::fs::create_dir_all(sys.join("devices/system/cpu")).expect("cpu dir");
        std::fs::write(virtio.join("modalias"), "virtio:d00000001v00001AF4\n").expect("modalias");
        std::fs::write(
            pci.join("modalias"),
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n",
        )
        .expect("modalias");
        // As the kernel lists them: a link per device under its bus.
        for (bus, device) in [("pci", &pci), ("virtio", &virtio)] {
            let devices = sys.join("bus").join(bus).join("devices");
            std::fs::create_dir_all(&devices).expect("bus");
            let name = device.file_name().expect("name");
            std::os::unix::fs::symlink(device, devices.join(name)).expect("link");
        }
        // The CPU is on no bus; its features have modules too.
        std::fs::write(
            sys.join("devices/system/cpu/modalias"),
            "cpu:type:x86,ven0000fam0006mod003A:feature:,0000,0094,0099\n",
        )
        .expect("cpu");
        let wanted = for_present_devices(dir.path(), &sys);
        assert_eq!(wanted, ["virtio_net", "crc32c_intel"]);
    }
}
