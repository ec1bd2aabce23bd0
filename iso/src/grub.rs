//! The GRUB configuration of the live ISO: serial and VGA terminals, entries for
//! a normal, a debug (`berth.debug`) and a rescue (`berth.rescue`) boot.

use std::fmt::Write as _;

/// Kernel arguments every entry shares.
///
/// `console=` order matters: the *last* one becomes `/dev/console`, where
/// PID 1's stdio and the emergency shell go. ttyS0 is last because the serial
/// port is what QEMU `-nographic`, cloud serial consoles and the tests see;
/// kernel messages and /dev/kmsg still reach both.
pub const CONSOLE_ARGS: &str = "console=tty0 console=ttyS0,115200n8";

/// Kernel arguments of every Berth boot, whatever loads the kernel (GRUB from
/// the ISO or the disk, QEMU's `-kernel` in the tests and the bench).
///
/// `cryptomgr.notests=1`: Debian's kernel tests every crypto algorithm it
/// registers before the first use, at boot and again for each crypto module
/// loaded later. Under emulation that was 0.25 s of the 2.4 s from the kernel's
/// start to `/init`, and 0.31 s of the boot to the ready line (docs/benchmarks.md,
/// "The kernel's crypto self-tests"); on hardware it is tens of milliseconds. The tests catch an implementation that
/// computes wrong results (a bad build, a broken CPU), not an attacker; a
/// machine booted with `fips=1` runs them whatever this says, as FIPS requires.
///
/// `percpu_alloc=page`: with the default (`embed`) allocator a machine with
/// few CPUs gets per-CPU chunks of 2 MiB per CPU, and with memory cgroups
/// accounting kernel memory every chunk after the first carries an 8-byte
/// owner pointer per 4 bytes of it, allocated whole: 4 MiB on one CPU, 2 MiB on
/// two, for the ~300 KiB the cgroups of a booted Berth use. The page allocator
/// sizes chunks to the static per-CPU area (256 KiB here), so that table is
/// 512 KiB. On an 80 MiB machine that is 3.1 MiB more available once idle
/// (docs/benchmarks.md, "Per-CPU chunks"); boots under emulation measured no
/// slower. The cost is 4 KiB mappings for per-CPU data instead of the kernel's
/// 2 MiB direct map; `percpu_alloc=embed` in `berth.kernel_args` restores it.
pub const KERNEL_ARGS: &str = "cryptomgr.notests=1 percpu_alloc=page";

/// The kernel arguments this version of Berth boots with, before an entry's
/// own (`berth.debug`) and the machine's: the consoles, a reboot on panic
/// (so boot counting can fall back) and [`KERNEL_ARGS`]. An OS image carries
/// them (`io.berth.os.kernel_args`), so that an upgraded slot boots with its
/// own version's arguments, not the installer's ([`crate::esp::slot_version_file`]).
pub fn os_args() -> String {
    format!("{CONSOLE_ARGS} panic=10 {KERNEL_ARGS}")
}

#[derive(Debug, Clone)]
pub struct GrubConfig {
    /// The menu title prefix, e.g. `Berth 0.1.0`.
    pub title: String,
    /// A GRUB variable whose value follows the title prefix (the installed
    /// disk's `berth_version`, the booted slot's version).
    pub title_var: Option<String>,
    /// A GRUB variable holding the OS's own arguments ([`os_args`]) in place
    /// of this build's, set by the preamble (the installed disk's
    /// `berth_os_args`, the booted slot's).
    pub os_args_var: Option<String>,
    pub kernel: String,
    pub initrd: String,
    /// Extra kernel arguments for every entry (e.g. a `berth.cloud_config=`).
    pub extra_args: String,
    /// GRUB commands run before the menu (the installed disk picks its slot).
    pub preamble: String,
    /// When the menu shows ([`Menu`]).
    pub menu: Menu,
}

/// When GRUB shows its menu instead of booting the default entry at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Menu {
    /// Esc (or F4) within a second, on either terminal: the live ISO, where
    /// the person at the machine may want the debug or rescue entry.
    EscWindow,
    /// Never unless asked, or unless the boot before did not get far: the
    /// installed disk's preamble sets the timeout ([`crate::bootloader`]).
    /// A second of every boot spent waiting for a key nobody types is a
    /// second a server's restart takes longer.
    AfterFailedBoot,
}

/// What the live ISO adds to every entry: the person at the machine is logged
/// in on the local consoles, as RancherOS's live ISO did (SSH still needs a key).
pub const LIVE_ARGS: &str = "berth.console.autologin=[ttyS0,tty1]";

impl Default for GrubConfig {
    fn default() -> Self {
        GrubConfig {
            title: "Berth".into(),
            title_var: None,
            os_args_var: None,
            kernel: "/boot/vmlinuz".into(),
            initrd: "/boot/initrd".into(),
            extra_args: LIVE_ARGS.into(),
            preamble: String::new(),
            menu: Menu::EscWindow,
        }
    }
}

/// The menu entries: (id, title suffix, extra kernel arguments).
pub const ENTRIES: &[(&str, &str, &str)] = &[
    ("normal", "", ""),
    ("debug", " (debug)", "berth.debug"),
    ("rescue", " (rescue shell)", "berth.rescue"),
];

impl GrubConfig {
    pub fn render(&self) -> String {
        let mut cfg = String::new();
        // Serial first so a headless machine shows the menu; both terminals
        // take input, so a key on either opens it.
        cfg.push_str(
            "# Generated by berth-iso; edits are lost on the next build.\n\
             serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n\
             terminal_input serial console\n\
             terminal_output serial console\n\
             set default=normal\n",
        );
        if self.menu == Menu::EscWindow {
            cfg.push_str(
                "# Hidden: no menu unless Esc (or F4) is typed within the second,\n\
                 # on either terminal; then the menu stays until an entry is chosen.\n\
                 # Not 0: Debian's GRUB turns a hidden 0 into 3 s whenever an input\n\
                 # terminal cannot report Shift (a serial one never can).\n\
                 set timeout_style=hidden\n\
                 set timeout=1\n",
            );
        }
        cfg.push_str(
            "# panic=10: a kernel panic reboots, so boot counting can fall back.\n\
             # Under BIOS the 16-bit boot protocol (linux16): with the 32-bit one,\n\
             # GRUB moves the kernel to its load address with a byte-wise copy,\n\
             # about 3 s under emulation, before the kernel runs.\n",
        );
        cfg.push_str(&self.preamble);
        let os_args = match &self.os_args_var {
            Some(var) => format!("${var}"),
            None => os_args(),
        };
        for (id, suffix, args) in ENTRIES {
            let mut cmdline = os_args.clone();
            for extra in [*args, self.extra_args.as_str()] {
                if !extra.is_empty() {
                    cmdline.push(' ');
                    cmdline.push_str(extra);
                }
            }
            // A variable is expanded between double quotes; GRUB joins the
            // quoted pieces of one word, as a shell does.
            let title = match &self.title_var {
                None => format!("'{}{}'", escape(&self.title), escape(suffix)),
                Some(var) if suffix.is_empty() => format!("'{}'\"${var}\"", escape(&self.title)),
                Some(var) => format!("'{}'\"${var}\"'{}'", escape(&self.title), escape(suffix)),
            };
            let _ = write!(
                cfg,
                "\nmenuentry {title} --id {id} {{\n\
                 \x20   if [ \"$grub_platform\" = pc ]; then\n\
                 \x20       linux16 {kernel} {cmdline}\n\
                 \x20       initrd16 {initrd}\n\
                 \x20   else\n\
                 \x20       linux {kernel} {cmdline}\n\
                 \x20       initrd {initrd}\n\
                 \x20   fi\n\
                 }}\n",
                kernel = self.kernel,
                initrd = self.initrd,
            );
        }
        cfg
    }
}

/// GRUB single-quoted strings cannot contain `'`; it is closed, escaped, reopened.
fn escape(s: &str) -> String {
    s.replace('\'', "'\\''")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(cfg: &'a str, id: &str) -> &'a str {
        let start = cfg
            .find(&format!("--id {id} {{"))
            .unwrap_or_else(|| panic!("no entry {id} in\n{cfg}"));
        let end = cfg[start..].find("\n}").map_or(cfg.len(), |e| start + e);
        &cfg[start..end]
    }

    #[test]
    fn has_three_entries_with_their_flags() {
        let cfg = GrubConfig::default().render();
        let normal = entry(&cfg, "normal");
        assert!(normal.contains("linux /boot/vmlinuz console=tty0 console=ttyS0,115200n8"));
        assert!(normal.contains("initrd /boot/initrd"));
        // BIOS boots with the 16-bit protocol, UEFI with the 32-bit one.
        let bios = normal
            .find("if [ \"$grub_platform\" = pc ]; then")
            .expect("platform test");
        let linux16 = normal
            .find("linux16 /boot/vmlinuz console=tty0 console=ttyS0,115200n8 panic=10")
            .expect("linux16");
        let initrd16 = normal.find("initrd16 /boot/initrd\n").expect("initrd16");
        let other = normal.find("else").expect("else");
        let linux = normal
            .find("    linux /boot/vmlinuz console=tty0 console=ttyS0,115200n8 panic=10")
            .expect("linux");
        assert!(bios < linux16 && linux16 < initrd16 && initrd16 < other && other < linux);
        assert!(normal.trim_end().ends_with("fi"));
        assert!(!normal.contains("berth.debug") && !normal.contains("berth.rescue"));
        assert!(entry(&cfg, "debug").contains(" berth.debug"));
        assert!(entry(&cfg, "rescue").contains(" berth.rescue"));
        assert_eq!(cfg.matches("menuentry ").count(), 3);
        for id in ["normal", "debug", "rescue"] {
            assert_eq!(entry(&cfg, id).matches(KERNEL_ARGS).count(), 2, "{id}");
        }
    }

    #[test]
    fn serial_and_vga_terminals_and_a_one_second_window() {
        let cfg = GrubConfig::default().render();
        assert!(cfg.contains("serial --unit=0 --speed=115200"));
        assert!(cfg.contains("terminal_input serial console"));
        assert!(cfg.contains("terminal_output serial console"));
        assert!(cfg.contains("set timeout_style=hidden"));
        assert!(cfg.contains("set timeout=1"));
        assert!(cfg.contains("set default=normal"));
    }

    #[test]
    fn serial_console_is_last_so_it_is_dev_console() {
        let cfg = GrubConfig::default().render();
        let line = entry(&cfg, "normal");
        let tty0 = line.find("console=tty0").expect("tty0");
        let ttys0 = line.find("console=ttyS0").expect("ttyS0");
        assert!(tty0 < ttys0);
    }

    #[test]
    fn extra_args_and_quoted_titles() {
        let cfg = GrubConfig {
            title: "Berth's test".into(),
            extra_args: "berth.cloud_config=abc=".into(),
            ..GrubConfig::default()
        }
        .render();
        assert!(cfg.contains("menuentry 'Berth'\\''s test' --id normal"));
        for id in ["normal", "debug", "rescue"] {
            assert!(entry(&cfg, id).contains("berth.cloud_config=abc="));
        }
    }
}
