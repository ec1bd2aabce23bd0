//! Kernel module dependency closure from `modules.dep` (+ `modules.softdep`,
//! `modules.alias` for soft dependencies named by alias, and `modules.builtin`
//! so a module compiled into the kernel is not an error).
//!
//! The initramfs gets a trimmed `modules.dep` naming only what it carries, in
//! load order (dependencies first), so PID 1 can load the file top to bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::{io_err, Error, Result};

/// A module's canonical name: file stem with `-` folded to `_`, as the kernel does.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// `kernel/fs/ext4/ext4.ko.xz` → `ext4`.
pub fn name_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.find(".ko").map(|i| &file[..i]).unwrap_or(file);
    canonical(stem)
}

#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    /// name → (path relative to the modules dir, hard dependencies' names).
    modules: BTreeMap<String, (String, Vec<String>)>,
    /// name → soft `pre:` dependencies (names or aliases).
    softdeps: BTreeMap<String, Vec<String>>,
    /// exact alias → module names.
    aliases: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
}

/// What a closure resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// Module names, every one after all of its dependencies.
    pub load_order: Vec<String>,
    /// Requested names that are compiled into the kernel (nothing to load).
    pub builtin: Vec<String>,
}

impl ModuleIndex {
    /// Reads the index files of `/lib/modules/<kver>` (`modules.dep` required).
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str, required: bool| -> Result<Option<(PathBuf, String)>> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some((path, text))),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err(&path)(e)),
            }
        };
        let mut index = ModuleIndex::default();
        if let Some((path, text)) = read("modules.dep", true)? {
            index.parse_dep(&path, &text)?;
        }
        if let Some((path, text)) = read("modules.softdep", false)? {
            index.parse_softdep(&path, &text)?;
        }
        if let Some((_, text)) = read("modules.alias", false)? {
            index.parse_alias(&text);
        }
        if let Some((_, text)) = read("modules.builtin", false)? {
            index.parse_builtin(&text);
        }
        Ok(index)
    }

    /// `path: dep dep …` lines.
    pub fn parse_dep(&mut self, path: &Path, text: &str) -> Result<()> {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((module, deps)) = line.split_once(':') else {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    text: line.to_string(),
                });
            };
            let deps = deps.split_whitespace().map(name_of_path).collect();
            self.modules
                .insert(name_of_path(module), (module.trim().to_string(), deps));
        }
        Ok(())
    }

    /// `softdep <module> pre: a b post: c` lines; only `pre:` must load first.
    pub fn parse_softdep(&mut self, path: &Path, text: &str) -> Result<()> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    text: line.to_string(),
                });
            };
            let mut in_pre = false;
            let pre = self.softdeps.entry(canonical(module)).or_default();
            for word in words {
                match word {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    dep if in_pre => pre.push(canonical(dep)),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// `alias <pattern> <module>` lines; only exact (wildcard-free) aliases
    /// matter here, because soft dependencies name things like `crc32c`.
    pub fn parse_alias(&mut self, text: &str) {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(alias), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                if !alias.contains(['*', '?', '[']) {
                    self.aliases
                        .entry(canonical(alias))
                        .or_default()
                        .push(canonical(module));
                }
            }
        }
    }

    pub fn parse_builtin(&mut self, text: &str) {
        self.builtin
            .extend(text.lines().filter(|l| !l.is_empty()).map(name_of_path));
    }

    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.modules.get(&canonical(name)).map(|(p, _)| p.as_str())
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    /// Every module name whose path `keep` accepts.
    pub fn matching(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        self.modules
            .iter()
            .filter(|(_, (path, _))| keep(path))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The closure of `roots` over hard and soft-`pre` dependencies. A root that
    /// is built into the kernel is reported, not an error; a root that exists
    /// nowhere is. Soft dependencies that resolve to nothing are skipped, as
    /// modprobe does.
    pub fn closure<S: AsRef<str>>(&self, roots: &[S]) -> Result<Closure> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut builtin = Vec::new();
        for root in roots {
            let name = canonical(root.as_ref());
            if self.modules.contains_key(&name) {
                self.visit(&name, &mut done, &mut BTreeSet::new(), &mut order);
            } else if let Some(targets) = self.aliases.get(&name) {
                for t in targets {
                    self.visit(t, &mut done, &mut BTreeSet::new(), &mut order);
                }
            } else if self.builtin.contains(&name) {
                builtin.push(name);
            } else {
                return Err(Error::MissingModule {
                    name,
                    needed_by: "the module list".into(),
                });
            }
        }
        Ok(Closure {
            load_order: order,
            builtin,
        })
    }

    /// Depth-first post-order; `stack` breaks (invalid but possible) cycles.
    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        stack: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if done.contains(name) || !stack.insert(name.to_string()) {
            return;
        }
        for dep in self.direct_deps(name) {
            self.visit(&dep, done, stack, order);
        }
        stack.remove(name);
        if self.modules.contains_key(name) && done.insert(name.to_string()) {
            order.push(name.to_string());
        }
    }

    /// Soft `pre:` dependencies (resolved through aliases) then hard ones.
    fn direct_deps(&self, name: &str) -> Vec<String> {
        let mut deps = Vec::new();
        for soft in self.softdeps.get(name).into_iter().flatten() {
            if self.modules.contains_key(soft) {
                deps.push(soft.clone());
            } else if let Some(targets) = self.aliases.get(soft) {
                deps.extend(targets.iter().cloned());
            }
        }
        if let Some((_, hard)) = self.modules.get(name) {
            deps.extend(hard.iter().cloned());
        }
        deps
    }

    /// A `modules.dep` for exactly `closure`, lines in load order. Each line
    /// lists the module's whole dependency closure (soft `pre:` included),
    /// dependents before dependencies like depmod writes it, so both "load
    /// the file top to bottom" and modprobe's "load the list from its end"
    /// work.
    /// `stored` maps a module's path to the name it is stored under (the
    /// initramfs compresses `.ko` files to `.ko.zst`).
    pub fn trimmed_dep(&self, closure: &Closure, stored: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for name in &closure.load_order {
            let Some(path) = self.path_of(name) else {
                continue;
            };
            let mut order = Vec::new();
            let mut done = BTreeSet::new();
            for dep in self.direct_deps(name) {
                self.visit(&dep, &mut done, &mut BTreeSet::new(), &mut order);
            }
            out.push_str(&stored(path));
            out.push(':');
            for dep in order.iter().rev() {
                if let Some(p) = self.path_of(dep) {
                    out.push(' ');
                    out.push_str(&stored(p));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// The `alias PATTERN MODULE` lines of a `modules.alias` text whose module
/// is in `closure`: what the initramfs needs to match devices and `fs-TYPE`.
pub fn trimmed_alias(text: &str, closure: &Closure) -> String {
    let carried: BTreeSet<&str> = closure.load_order.iter().map(String::as_str).collect();
    let mut out = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("alias"), Some(_), Some(module), None) =
            (words.next(), words.next(), words.next(), words.next())
        {
            if carried.contains(canonical(module).as_str()) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The trailer the kernel's sign-file appends after a module's PKCS#7 signature.
const SIGNATURE_MARKER: &[u8] = b"~Module signature appended~\n";
/// `struct module_signature`, between the signature and the marker; its last
/// four bytes are the signature's length, big-endian.
const SIGNATURE_INFO_LEN: usize = 12;

/// A module file without its appended signature (the file as it was before
/// signing); unsigned or malformed files come back whole.
///
/// Why Berth ships its modules unsigned: Debian's kernel checks each signed
/// module's SHA-256 and RSA signature as it loads it, but does not enforce
/// the result (`CONFIG_MODULE_SIG_FORCE` is off and Berth boots without
/// Secure Boot's lockdown), so the check only decides whether the kernel is
/// marked tainted. Under emulation it was most of each load's time (scsi_mod
/// 175 ms signed, 39 ms unsigned). The modules' integrity comes from the OS
/// image they ship in, which installs and upgrades verify.
pub fn unsigned(module: &[u8]) -> &[u8] {
    let Some(body) = module.strip_suffix(SIGNATURE_MARKER) else {
        return module;
    };
    let Some(info_at) = body.len().checked_sub(SIGNATURE_INFO_LEN) else {
        return module;
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&body[body.len() - 4..]);
    let signature_len = u32::from_be_bytes(len) as usize;
    match info_at.checked_sub(signature_len) {
        Some(end) => &module[..end],
        None => module,
    }
}

/// Reads the module file at `path` for an image: an uncompressed `.ko` loses
/// its signature ([`unsigned`]); a compressed one (signed before it was
/// compressed) is copied as it is.
pub fn read_for_image(path: &Path) -> Result<Vec<u8>> {
    let mut data = std::fs::read(path).map_err(io_err(path))?;
    if path.extension().is_some_and(|e| e == "ko") {
        let keep = unsigned(&data).len();
        data.truncate(keep);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(body: &[u8], signature: &[u8]) -> Vec<u8> {
        let mut file = body.to_vec();
        file.extend_from_slice(signature);
        file.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
        file.extend_from_slice(&(signature.len() as u32).to_be_bytes());
        file.extend_from_slice(SIGNATURE_MARKER);
        file
    }

    #[test]
    fn a_signed_module_loses_exactly_its_signature() {
        let body = b"\x7fELF module text";
        assert_eq!(unsigned(&signed(body, &[0xa5; 565])), body);
        assert_eq!(unsigned(&signed(b"", &[1, 2, 3])), b"");
    }

    #[test]
    fn unsigned_and_malformed_modules_come_back_whole() {
        let plain = b"\x7fELF no signature here".to_vec();
        assert_eq!(unsigned(&plain), &plain[..]);
        // A length larger than the file: not a signature this code understands.
        let mut lying = signed(b"\x7fELF", &[7; 4]);
        let at = lying.len() - SIGNATURE_MARKER.len() - 4;
        lying[at..at + 4].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(unsigned(&lying), &lying[..]);
        // The marker alone, with no room for the signature's description.
        assert_eq!(unsigned(SIGNATURE_MARKER), SIGNATURE_MARKER);
    }

    #[test]
    fn only_an_uncompressed_module_file_is_unsigned_for_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = signed(b"\x7fELF", &[9; 16]);
        for (name, expect) in [("a.ko", &b"\x7fELF"[..]), ("a.ko.xz", &file[..])] {
            let path = dir.path().join(name);
            std::fs::write(&path, &file).expect("write");
            assert_eq!(read_for_image(&path).expect("read"), expect, "{name}");
        }
    }

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/usb/core/usbcore.ko: kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/common/usb-common.ko:
kernel/drivers/scsi/scsi_mod.ko:
kernel/net/unrelated.ko:
";

    fn index() -> ModuleIndex {
        let mut i = ModuleIndex::default();
        i.parse_dep(Path::new("modules.dep"), DEP).expect("dep");
        i.parse_softdep(
            Path::new("modules.softdep"),
            "# comment\nsoftdep ext4 pre: crc32c post: nothing\n",
        )
        .expect("softdep");
        i.parse_alias(
            "alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\nalias pci:v*d* virtio_blk\n",
        );
        i.parse_builtin("kernel/drivers/block/loop.ko\nkernel/fs/isofs/isofs.ko\n");
        i
    }

    fn assert_before(order: &[String], a: &str, b: &str) {
        let pos = |n: &str| {
            order
                .iter()
                .position(|x| x == n)
                .unwrap_or_else(|| panic!("{n} missing from {order:?}"))
        };
        assert!(pos(a) < pos(b), "{a} must load before {b}: {order:?}");
    }

    #[test]
    fn closure_is_dependencies_first_with_softdeps_and_builtins() {
        let c = index()
            .closure(&["ext4", "usb-storage", "loop", "virtio_blk"])
            .expect("closure");
        assert_eq!(c.builtin, ["loop"]);
        for dep in ["crc16", "mbcache", "jbd2", "crc32c_generic"] {
            assert_before(&c.load_order, dep, "ext4");
        }
        assert_before(&c.load_order, "usb_common", "usbcore");
        assert_before(&c.load_order, "usbcore", "usb_storage");
        assert_before(&c.load_order, "scsi_mod", "usb_storage");
        assert_before(&c.load_order, "virtio", "virtio_blk");
        assert!(!c.load_order.iter().any(|m| m == "unrelated"));
        let unique: BTreeSet<_> = c.load_order.iter().collect();
        assert_eq!(unique.len(), c.load_order.len(), "no duplicates");
    }

    #[test]
    fn unknown_module_is_an_error() {
        let err = index().closure(&["nosuchmod"]).expect_err("must fail");
        assert!(err.to_string().contains("nosuchmod"), "{err}");
    }

    #[test]
    fn names_fold_dashes_and_extensions() {
        assert_eq!(name_of_path("kernel/a/usb-storage.ko.xz"), "usb_storage");
        assert_eq!(name_of_path("kernel/a/b.ko.zst"), "b");
        assert_eq!(name_of_path("kernel/a/b.ko"), "b");
    }

    #[test]
    fn trimmed_dep_lists_only_the_closure_in_load_order() {
        let i = index();
        let c = i.closure(&["ext4"]).expect("closure");
        let dep = i.trimmed_dep(&c, |p| format!("{p}.zst"));
        let lines: Vec<&str> = dep.lines().collect();
        assert_eq!(lines.len(), 5, "{dep}");
        let ext4 = lines.last().expect("ext4 line");
        assert!(ext4.starts_with("kernel/fs/ext4/ext4.ko.zst:"), "{dep}");
        for p in ["crc16", "mbcache", "jbd2", "crc32c_generic"] {
            assert!(ext4.contains(&format!("/{p}.ko.zst")), "{ext4}");
        }
        // The result parses back and gives the same closure.
        let mut back = ModuleIndex::default();
        back.parse_dep(Path::new("trimmed"), &dep).expect("parse");
        let again = back.closure(&["ext4"]).expect("closure");
        assert_eq!(
            again.load_order.iter().collect::<BTreeSet<_>>(),
            c.load_order.iter().collect::<BTreeSet<_>>()
        );
    }

    #[test]
    fn trimmed_alias_keeps_only_carried_modules() {
        let i = index();
        let c = i.closure(&["ext4"]).expect("closure");
        let text = "# comment\nalias fs-ext4 ext4\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\nalias crc32c crc32c_generic\n";
        assert_eq!(
            trimmed_alias(text, &c),
            "alias fs-ext4 ext4\nalias crc32c crc32c_generic\n"
        );
    }

    #[test]
    fn malformed_dep_line_is_reported_with_its_line() {
        let mut i = ModuleIndex::default();
        let err = i
            .parse_dep(Path::new("modules.dep"), "a.ko:\nno colon here\n")
            .expect_err("must fail");
        assert!(err.to_string().contains("modules.dep:2"), "{err}");
    }

    #[test]
    fn matching_selects_by_path() {
        let got = index().matching(|path| path.starts_with("kernel/drivers/usb/"));
        assert_eq!(got, ["usb_common", "usb_storage", "usbcore"]);
    }
}
