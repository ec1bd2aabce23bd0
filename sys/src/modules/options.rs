//! What modprobe adds to a module load besides the file: parameters from
//! `/etc/modprobe.d` and from the kernel command line (`module.param=value`),
//! and the modules not to load (`blacklist` lines, `modprobe.blacklist=`).
//!
//! The kernel applies `module.param=value` from its command line only to
//! modules built into it; for a loadable module it is modprobe's job (kmod
//! reads `/proc/cmdline`). Berth loads modules itself, so it does the same:
//! `nvme_core.default_ps_max_latency_us=0` or `modprobe.blacklist=floppy` on
//! the command line (or in `berth.kernel_args`) mean what they mean elsewhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::normalize;

/// Parameters per module and the modules not to load, in the order they
/// apply: a later value of the same parameter wins, as the kernel keeps the
/// last one it parses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// (normalized module name, `param=value …`).
    params: Vec<(String, String)>,
    /// Not loaded for a device, an alias or a list of Berth's own; still
    /// loaded when named outright ([`Options::named`]) or when a module that
    /// is loaded needs it, as with kmod.
    blacklist: BTreeSet<String>,
}

impl Options {
    /// `module.param[=value]` words and `modprobe.blacklist=a,b` of a kernel
    /// command line; everything else on it is not about modules. Words after
    /// `--` are init's, not the kernel's.
    pub fn from_cmdline(cmdline: &str) -> Options {
        let mut options = Options::default();
        for word in kernel_words(cmdline) {
            if word == "--" {
                break;
            }
            let (key, value) = match word.split_once('=') {
                Some((key, value)) => (key, Some(unquote(value))),
                None => (word.as_str(), None),
            };
            let Some((module, param)) = key.split_once('.') else {
                continue;
            };
            if module.is_empty() || param.is_empty() {
                continue;
            }
            if module == "modprobe" {
                if param == "blacklist" {
                    options.blacklist.extend(
                        value
                            .unwrap_or_default()
                            .split(',')
                            .filter(|m| !m.is_empty())
                            .map(normalize),
                    );
                }
                continue;
            }
            let param = match value {
                Some(v) if v.chars().any(char::is_whitespace) => format!("{param}=\"{v}\""),
                Some(v) => format!("{param}={v}"),
                None => param.to_string(),
            };
            options.params.push((normalize(module), param));
        }
        options
    }

    /// The running kernel's command line, as [`Options::from_cmdline`]
    /// reads it; nothing when it cannot be read.
    pub fn kernel(root: &Path) -> Options {
        let cmdline = std::fs::read_to_string(root.join("proc/cmdline")).unwrap_or_default();
        Options::from_cmdline(&cmdline)
    }

    /// `options MODULE PARAM=VALUE…` and `blacklist MODULE` lines of the
    /// `*.conf` files in `conf_dir` (`/etc/modprobe.d`), in the files' order.
    pub fn from_modprobe_d(conf_dir: &Path) -> Options {
        let mut options = Options::default();
        let Ok(entries) = std::fs::read_dir(conf_dir) else {
            return options;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for line in text.lines() {
                let mut words = line.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("options"), Some(module)) => {
                        let params: Vec<&str> = words.collect();
                        options = options.with_params(module, &params.join(" "));
                    }
                    (Some("blacklist"), Some(module)) => {
                        options.blacklist.insert(normalize(module));
                    }
                    _ => {}
                }
            }
        }
        options
    }

    /// These, then `later`'s (whose values win).
    pub fn then(mut self, later: Options) -> Options {
        self.params.extend(later.params);
        self.blacklist.extend(later.blacklist);
        self
    }

    /// These, then `params` (`a=1 b=2`) for `module`.
    pub fn with_params(mut self, module: &str, params: &str) -> Options {
        if !params.trim().is_empty() {
            self.params
                .push((normalize(module), params.trim().to_string()));
        }
        self
    }

    /// The same parameters without the blacklist: for a module named
    /// outright (`modprobe floppy`, `berth.modules: [floppy]`), which kmod
    /// loads whatever its blacklist says.
    pub fn named(&self) -> Options {
        Options {
            params: self.params.clone(),
            blacklist: BTreeSet::new(),
        }
    }

    /// Every parameter given for `module`, in order.
    pub fn params_for(&self, module: &str) -> String {
        let module = normalize(module);
        let given: Vec<&str> = self
            .params
            .iter()
            .filter(|(m, _)| *m == module)
            .map(|(_, p)| p.as_str())
            .collect();
        given.join(" ")
    }

    pub fn is_blacklisted(&self, module: &str) -> bool {
        self.blacklist.contains(&normalize(module))
    }
}

/// The command line's words as the kernel splits them: at spaces, except
/// inside double quotes (`mod.opt="a b"` is one word).
fn kernel_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `"a b"` → `a b`; anything else as it is.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_parameters_and_the_blacklist_come_from_the_command_line() {
        let options = Options::from_cmdline(
            "BOOT_IMAGE=/A/vmlinuz console=ttyS0,115200n8 panic=10 cryptomgr.notests=1 \
             nvme-core.default_ps_max_latency_us=0 loop.max_part=7 usbcore.nousb \
             modprobe.blacklist=floppy,pcspkr modprobe.blacklist=sr-mod berth.slot=A \
             dyndbg.x=\"file a.c +p\" -- init.arg=1\n",
        );
        assert_eq!(
            options.params_for("nvme_core"),
            "default_ps_max_latency_us=0"
        );
        assert_eq!(options.params_for("loop"), "max_part=7");
        // A flag without a value is a boolean parameter set to true.
        assert_eq!(options.params_for("usbcore"), "nousb");
        // A quoted value keeps its spaces, quoted again for the kernel.
        assert_eq!(options.params_for("dyndbg"), "x=\"file a.c +p\"");
        // What follows `--` is init's.
        assert_eq!(options.params_for("init"), "");
        // `BOOT_IMAGE=/A/vmlinuz` has its dot in the value: not a module's.
        let modules: Vec<&str> = options.params.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            modules,
            [
                "cryptomgr",
                "nvme_core",
                "loop",
                "usbcore",
                "berth",
                "dyndbg"
            ]
        );
        for module in ["floppy", "pcspkr", "sr_mod"] {
            assert!(options.is_blacklisted(module), "{module}");
        }
        assert!(!options.is_blacklisted("loop"));
        assert!(!options.named().is_blacklisted("floppy"));
        assert_eq!(options.named().params_for("loop"), "max_part=7");
    }

    #[test]
    fn later_sources_come_after_and_every_value_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("10-a.conf"),
            "options bonding max_bonds=0\nblacklist pcspkr\n# blacklist floppy\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("README"), "options bonding mode=4\n").expect("write");
        let options = Options::from_modprobe_d(dir.path())
            .then(Options::from_cmdline("bonding.max_bonds=2"))
            .with_params("bonding", "miimon=100");
        // The kernel keeps the last value of a parameter given twice.
        assert_eq!(
            options.params_for("bonding"),
            "max_bonds=0 max_bonds=2 miimon=100"
        );
        assert!(options.is_blacklisted("pcspkr"));
        assert!(!options.is_blacklisted("floppy"));
        assert_eq!(
            Options::from_modprobe_d(&dir.path().join("none")),
            Options::default()
        );
    }
}
