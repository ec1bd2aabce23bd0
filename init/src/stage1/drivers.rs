//! Which kernel modules stage 1 loads. The initramfs carries drivers for
//! every kind of machine (SATA, NVMe, USB, virtio, IDE…) and the filesystems a
//! boot may mount; loading all of them cost seconds under emulation, most of
//! it for hardware the machine does not have. So stage 1 loads:
//!
//! - the drivers of the devices present, by matching their `modalias` against
//!   the initramfs's `modules.alias`, as udev's coldplug does;
//! - again while it waits for a device, because a controller's driver makes
//!   new devices appear (a SATA disk, a USB stick) that need drivers of their
//!   own;
//! - a filesystem's module just before it is first mounted (`fs-TYPE`, the
//!   alias the kernel itself asks for), and the loop driver before the ISO's
//!   root is attached;
//! - everything it carries, as a last resort, when the device it waits for has
//!   not appeared within [`EVERYTHING_AFTER`]: a driver the aliases do not name
//!   must not make a machine unbootable.
//!
//! Two kinds of driver are held back (`berth_sys::probe::OPTICAL_DRIVERS`
//! and `IDE_DRIVERS`) until a search has
//! found nothing where the others reach: optical drives' and the legacy IDE
//! controllers'. QEMU's `pc` machine (and OpenStack's, and Proxmox's) has an
//! IDE controller with a CD drive on it unless told otherwise, and a boot
//! from virtio disks never reads either; yet probing the drive costs about
//! 0.15 s of the one emulated CPU even when it is empty, and the controller's
//! driver 0.2 s more, most of it libata's wait after resetting each channel,
//! which `finit_module` sits through. A search that misses (the boot medium,
//! the seed, the state partition) loads them and looks again; stage 2 loads
//! them after the ready line, and berthd before a `mounts` entry whose device
//! is not there yet.
//!
//! A live boot whose state partition is not on the disks already there will
//! load the IDE driver at its state search anyway, so it starts that driver's
//! probe early instead, in the background ([`Drivers::start_ide`]): libata's
//! waits then pass while the image is mounted and the seed read.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_sys::probe::{IDE_DRIVERS, OPTICAL_DRIVERS};

use crate::modules;
use crate::sys::Sys;

/// How long a wait for a device goes on with the matched drivers only.
pub const EVERYTHING_AFTER: Duration = Duration::from_secs(3);

/// What a filesystem needs besides its own module: FAT's code page and
/// character sets, which the kernel would ask a `modprobe` for, and the
/// initramfs has none.
const ALSO: &[(&str, &[&str])] = &[(
    "vfat",
    &["nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8"],
)];

/// Whether the kernel command line's `modprobe.blacklist=` keeps a module
/// out: a device's driver, yes; what stage 1 loads by name to reach the root
/// (loop, filesystems), no, as kmod loads a module named outright.
#[derive(Debug, Clone, Copy)]
enum Blacklist {
    Applies,
    Ignored,
}

#[derive(Debug)]
pub struct Drivers {
    /// `lib/modules/<release>` in the initramfs; `None` when it carries no
    /// modules (a kernel with everything built in).
    dir: Option<PathBuf>,
    /// `/sys`, where the devices and their buses are listed.
    sysfs: PathBuf,
    /// Modules this boot has loaded or tried, so none is read twice.
    tried: HashSet<String>,
    everything: bool,
    /// Of the drivers held back (optical and IDE; AHCI, NVMe, virtio and
    /// USB never are), what is not loaded yet, on purpose.
    held: Vec<&'static str>,
    everything_after: Duration,
    /// When the current wait for a device began.
    waiting_since: Option<Instant>,
    /// The kernel command line's module parameters and blacklist ([`Blacklist`]).
    options: modules::Options,
    /// The IDE controller's probe runs in the background
    /// ([`Drivers::start_ide`]): what is loaded meanwhile does not wait for it.
    background_probe: bool,
}

impl Drivers {
    pub fn new(root: &Path) -> Drivers {
        let dir = match modules::kernel_release() {
            Some(release) => Some(root.join("lib/modules").join(release)),
            None => {
                log::warn!("cannot tell the kernel release; no modules loaded");
                None
            }
        };
        Drivers::in_dir(dir, root)
    }

    /// `dir` is the modules directory; tests give their own.
    pub fn in_dir(dir: Option<PathBuf>, root: &Path) -> Drivers {
        let dir = dir.filter(|d| {
            let found = d.join("modules.dep").exists();
            if !found {
                log::debug!(
                    "no {}/modules.dep: everything needed is built in",
                    d.display()
                );
            }
            found
        });
        Drivers {
            dir,
            sysfs: root.join("sys"),
            tried: HashSet::new(),
            everything: false,
            held: OPTICAL_DRIVERS.iter().chain(IDE_DRIVERS).copied().collect(),
            everything_after: EVERYTHING_AFTER,
            waiting_since: None,
            options: modules::Options::kernel(root),
            background_probe: false,
        }
    }

    /// A shorter (or longer) wait before [`Drivers::everything`].
    pub fn everything_after(mut self, wait: Duration) -> Drivers {
        self.everything_after = wait;
        self
    }

    /// Loads the drivers of the devices that have none yet (but those held
    /// back, see [`Drivers::release_held`]); repeats while a round of loading
    /// makes new devices appear (virtio's PCI transport before its block
    /// devices, SCSI hosts before their disks). Whether it loaded anything.
    pub fn coldplug(&mut self, sys: &mut dyn Sys) -> bool {
        let Some(dir) = self.dir.clone() else {
            return false;
        };
        let mut loaded = false;
        for _ in 0..4 {
            let wanted: Vec<String> = modules::for_present_devices(&dir, &self.sysfs)
                .into_iter()
                .filter(|m| !self.tried.contains(m))
                .filter(|m| !self.held.contains(&m.as_str()))
                .collect();
            if wanted.is_empty() {
                break;
            }
            self.load(sys, &dir, Some(&wanted), Blacklist::Applies, "devices");
            loaded = true;
        }
        loaded
    }

    /// Starts the IDE controller's probe without waiting for it: its own
    /// driver is loaded with `async_probe`, so `finit_module` returns before
    /// libata has reset the channels, and so is everything loaded after it,
    /// which would otherwise wait for that probe. `ata_generic`, which claims
    /// the same controllers, stays held; releasing it ([`Drivers::release_ide`],
    /// [`Drivers::release_held`]) loads it the usual way, and a module loaded
    /// without `async_probe` returns only once every asynchronous probe in the
    /// kernel has ended (`do_init_module` waits for them). That load is where
    /// the probe is waited for, so a search after it sees the IDE disks as
    /// before. Without `ata_generic` to wait with (not there, not matching
    /// this controller, or blacklisted) nothing starts early. Whether it
    /// started.
    pub fn start_ide(&mut self, sys: &mut dyn Sys) -> bool {
        const WAITS: &str = "ata_generic";
        let Some(dir) = self.dir.clone() else {
            return false;
        };
        let present: Vec<String> = modules::for_present_devices(&dir, &self.sysfs)
            .into_iter()
            .filter(|m| IDE_DRIVERS.contains(&m.as_str()) && self.held.contains(&m.as_str()))
            .collect();
        let early: Vec<String> = present.iter().filter(|m| *m != WAITS).cloned().collect();
        if early.is_empty()
            || !present.iter().any(|m| m == WAITS)
            || self.options.is_blacklisted(WAITS)
        {
            return false;
        }
        self.held.retain(|m| !early.iter().any(|e| e == m));
        self.background_probe = true;
        self.load(
            sys,
            &dir,
            Some(&early),
            Blacklist::Applies,
            "IDE, probing in the background",
        );
        true
    }

    /// Loads the drivers held back, for the devices present: a search that
    /// found nothing on the other disks looks on discs and IDE disks next.
    /// Whether that loaded anything (so new devices may be there).
    pub fn release_held(&mut self, sys: &mut dyn Sys) -> bool {
        self.background_probe = false;
        if std::mem::take(&mut self.held).is_empty() {
            return false;
        }
        self.coldplug(sys)
    }

    /// Loads the IDE controllers' drivers held back ([`IDE_DRIVERS`]), not the
    /// optical drives': what a search for a disk that is never a disc
    /// releases (the state partition). Whether that loaded anything.
    pub fn release_ide(&mut self, sys: &mut dyn Sys) -> bool {
        self.background_probe = false;
        let before = self.held.len();
        self.held.retain(|m| !IDE_DRIVERS.contains(m));
        self.held.len() != before && self.coldplug(sys)
    }

    /// What mounting a `fstype` filesystem needs, if it is not registered.
    pub fn filesystem(&mut self, sys: &mut dyn Sys, root: &Path, fstype: &str) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let registered = std::fs::read_to_string(root.join("proc/filesystems")).is_ok_and(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some(fstype))
        });
        if registered {
            return;
        }
        let also = ALSO
            .iter()
            .filter(|(fs, _)| *fs == fstype)
            .flat_map(|(_, modules)| modules.iter().map(|m| m.to_string()));
        let wanted: Vec<String> = modules::resolve_alias(&dir, &format!("fs-{fstype}"))
            .into_iter()
            .chain(also)
            .filter(|m| !self.tried.contains(m))
            .collect();
        if !wanted.is_empty() {
            self.load(sys, &dir, Some(&wanted), Blacklist::Ignored, fstype);
        }
    }

    /// Named modules (the loop driver), each once.
    pub fn modules(&mut self, sys: &mut dyn Sys, names: &[&str]) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let wanted: Vec<String> = names
            .iter()
            .map(|n| modules::normalize(n))
            .filter(|m| !self.tried.contains(m))
            .collect();
        if !wanted.is_empty() {
            self.load(sys, &dir, Some(&wanted), Blacklist::Ignored, "initramfs");
        }
    }

    /// One poll of a wait for a device: the drivers held back the first
    /// time, new devices' drivers, and everything once the wait has gone on
    /// for [`EVERYTHING_AFTER`]. Whether it loaded anything, so the caller
    /// can look again at once instead of after its poll interval.
    pub fn while_waiting(&mut self, sys: &mut dyn Sys) -> bool {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        // release_held() runs a coldplug round itself when it loads anything.
        let mut loaded = self.release_held(sys) || self.coldplug(sys);
        if !self.everything && since.elapsed() >= self.everything_after {
            self.everything(sys);
            loaded = true;
        }
        loaded
    }

    /// The wait is over (found or given up).
    pub fn done_waiting(&mut self) {
        self.waiting_since = None;
    }

    /// Every module the initramfs carries.
    pub fn everything(&mut self, sys: &mut dyn Sys) {
        self.everything = true;
        self.background_probe = false;
        self.held.clear();
        let Some(dir) = self.dir.clone() else {
            return;
        };
        log::info!("loading every driver the initramfs carries");
        self.load(sys, &dir, None, Blacklist::Applies, "initramfs");
    }

    fn load(
        &mut self,
        sys: &mut dyn Sys,
        dir: &Path,
        wanted: Option<&[String]>,
        blacklist: Blacklist,
        what: &str,
    ) {
        let named;
        let options = match blacklist {
            Blacklist::Applies => &self.options,
            Blacklist::Ignored => {
                named = self.options.named();
                &named
            }
        };
        let tried = &mut self.tried;
        let background = self.background_probe;
        let result = modules::load_with(dir, wanted, options, |path, compressed, params| {
            // A dependency shared with an earlier round: already in the kernel
            // (or failed there), not read again.
            if !tried.insert(modules::module_name(path)) {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            if background {
                // A parameter every module takes (the kernel's, not the module's).
                let params = format!("{params} async_probe");
                return sys.load_module(path, compressed, params.trim_start());
            }
            sys.load_module(path, compressed, params)
        });
        if let Some(wanted) = wanted {
            // Names without a file of their own (built in, or absent) are
            // tried too: asking again would give the same answer.
            tried.extend(wanted.iter().cloned());
        }
        match result {
            Ok(report) => modules::log_report(what, &report),
            Err(e) => log::warn!("{}: {e}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recording;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/usb/core/usbcore.ko:
kernel/lib/crc16.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko
kernel/drivers/block/loop.ko:
kernel/fs/fat/vfat.ko:
kernel/fs/nls/nls_cp437.ko:
kernel/fs/nls/nls_ascii.ko:
kernel/fs/nls/nls_iso8859-1.ko:
kernel/fs/nls/nls_utf8.ko:
kernel/drivers/cdrom/cdrom.ko:
kernel/drivers/scsi/sr_mod.ko: kernel/drivers/cdrom/cdrom.ko
kernel/drivers/ata/libata.ko:
kernel/drivers/ata/ata_piix.ko: kernel/drivers/ata/libata.ko
";

    const ALIAS: &str = "\
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias pci:v*d*sv*sd*bc0Csc03i30* usbcore
alias fs-ext4 ext4
alias fs-vfat vfat
alias scsi:t-0x05* sr_mod
alias pci:v00008086d00007010sv*sd*bc*sc*i* ata_piix
";

    /// A root with the modules above, a virtio PCI device in sysfs and
    /// iso9660 registered.
    fn root() -> (tempfile::TempDir, Drivers) {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("lib/modules/6.1");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("modules.dep"), DEP).expect("dep");
        std::fs::write(dir.join("modules.alias"), ALIAS).expect("alias");
        let pci = root.path().join("sys/devices/pci0000:00/0000:00:04.0");
        std::fs::create_dir_all(&pci).expect("mkdir");
        std::fs::write(
            pci.join("modalias"),
            "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\n",
        )
        .expect("modalias");
        on_bus(root.path(), "pci", &pci);
        std::fs::create_dir_all(root.path().join("proc")).expect("proc");
        std::fs::write(
            root.path().join("proc/filesystems"),
            "nodev\ttmpfs\n\tiso9660\n",
        )
        .expect("filesystems");
        let drivers = Drivers::in_dir(Some(dir), root.path());
        (root, drivers)
    }

    /// Lists `device` on `bus` in the root's sysfs, as the kernel does.
    fn on_bus(root: &Path, bus: &str, device: &Path) {
        let devices = root.join("sys/bus").join(bus).join("devices");
        std::fs::create_dir_all(&devices).expect("bus");
        let name = device.file_name().expect("device name");
        std::os::unix::fs::symlink(device, devices.join(name)).expect("link");
    }

    /// The module files loaded since the last call, by name.
    fn loaded(sys: &mut Recording) -> Vec<String> {
        loads(sys).into_iter().map(|(name, _)| name).collect()
    }

    #[test]
    fn only_the_drivers_of_present_devices_and_of_what_they_make_appear() {
        let (root, mut drivers) = root();
        let mut sys = Recording::default();
        drivers.coldplug(&mut sys);
        assert_eq!(loaded(&mut sys), ["virtio", "virtio_pci"], "no USB driver");
        // virtio_pci found a block device on the virtio bus.
        let blk = root
            .path()
            .join("sys/devices/pci0000:00/0000:00:04.0/virtio1");
        std::fs::create_dir_all(&blk).expect("mkdir");
        std::fs::write(blk.join("modalias"), "virtio:d00000002v00001AF4\n").expect("modalias");
        on_bus(root.path(), "virtio", &blk);
        drivers.while_waiting(&mut sys);
        assert_eq!(
            loaded(&mut sys),
            ["virtio_blk"],
            "virtio is not read a second time"
        );
        drivers.coldplug(&mut sys);
        assert!(loaded(&mut sys).is_empty());
    }

    #[test]
    fn the_kernel_command_line_gives_parameters_and_keeps_blacklisted_drivers_out() {
        let (root, _) = root();
        std::fs::write(
            root.path().join("proc/cmdline"),
            "console=ttyS0 virtio_pci.force_legacy=1 loop.max_part=7 vfat.x=1 \
             modprobe.blacklist=virtio_pci,loop,vfat\n",
        )
        .expect("cmdline");
        let mut drivers = Drivers::in_dir(Some(root.path().join("lib/modules/6.1")), root.path());
        let mut sys = Recording::default();
        // The device's driver is blacklisted: not loaded, nor virtio for it.
        drivers.coldplug(&mut sys);
        assert!(loaded(&mut sys).is_empty());
        // What stage 1 needs to reach the root is loaded by name, with its
        // parameters, whatever the blacklist says.
        drivers.modules(&mut sys, &["loop"]);
        drivers.filesystem(&mut sys, root.path(), "vfat");
        let calls: Vec<&str> = sys.calls.iter().map(String::as_str).collect();
        assert_eq!(
            calls[0],
            format!(
                "load {}/lib/modules/6.1/kernel/drivers/block/loop.ko [max_part=7]",
                root.path().display()
            )
        );
        assert!(
            calls[1].ends_with("kernel/fs/fat/vfat.ko [x=1]"),
            "{calls:?}"
        );
        assert!(calls[2].ends_with("nls_cp437.ko"), "{calls:?}");
    }

    /// Adds an optical drive (a SCSI device of type 5) to the root's sysfs.
    fn add_optical_drive(root: &Path) {
        let dev = root.join("sys/devices/pci0000:00/0000:00:01.1/ata2/host1/target1:0:0/1:0:0:0");
        std::fs::create_dir_all(&dev).expect("mkdir");
        std::fs::write(dev.join("modalias"), "scsi:t-0x05\n").expect("modalias");
        on_bus(root, "scsi", &dev);
    }

    #[test]
    fn the_optical_driver_waits_until_a_search_found_nothing_on_the_disks() {
        let (root, mut drivers) = root();
        add_optical_drive(root.path());
        let mut sys = Recording::default();
        assert!(drivers.coldplug(&mut sys));
        assert_eq!(loaded(&mut sys), ["virtio", "virtio_pci"], "no sr_mod yet");
        assert!(!drivers.coldplug(&mut sys), "nothing new");
        // The boot medium is not on the disks: the first poll loads the
        // optical driver, and says so, so the search looks again at once.
        assert!(drivers.while_waiting(&mut sys));
        assert_eq!(loaded(&mut sys), ["cdrom", "sr_mod"]);
        assert!(!drivers.release_held(&mut sys), "once");
        assert!(!drivers.while_waiting(&mut sys));
        assert!(loaded(&mut sys).is_empty());
    }

    /// Adds QEMU's PIIX3 IDE controller to the root's sysfs.
    fn add_ide_controller(root: &Path) {
        let pci = root.join("sys/devices/pci0000:00/0000:00:01.1");
        std::fs::create_dir_all(&pci).expect("mkdir");
        std::fs::write(
            pci.join("modalias"),
            "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80\n",
        )
        .expect("modalias");
        on_bus(root, "pci", &pci);
    }

    #[test]
    fn the_ide_controller_waits_too_and_a_state_search_releases_only_it() {
        let (root, mut drivers) = root();
        add_ide_controller(root.path());
        add_optical_drive(root.path());
        let mut sys = Recording::default();
        drivers.coldplug(&mut sys);
        assert_eq!(
            loaded(&mut sys),
            ["virtio", "virtio_pci"],
            "no ata_piix yet"
        );
        // The state partition is never on a disc: the optical driver stays held.
        assert!(drivers.release_ide(&mut sys));
        assert_eq!(loaded(&mut sys), ["libata", "ata_piix"]);
        assert!(!drivers.release_ide(&mut sys), "once");
        // A search for the boot medium that misses takes the rest.
        assert!(drivers.release_held(&mut sys));
        assert_eq!(loaded(&mut sys), ["cdrom", "sr_mod"]);
        assert!(!drivers.release_held(&mut sys));
    }

    /// `ata_generic` too, as Debian's `modules.alias` has it: it matches every
    /// IDE controller by its PCI class.
    fn add_ata_generic(root: &Path) {
        let dir = root.join("lib/modules/6.1");
        let mut dep = std::fs::read_to_string(dir.join("modules.dep")).expect("dep");
        dep.push_str("kernel/drivers/ata/ata_generic.ko: kernel/drivers/ata/libata.ko\n");
        std::fs::write(dir.join("modules.dep"), dep).expect("dep");
        let mut alias = std::fs::read_to_string(dir.join("modules.alias")).expect("alias");
        alias.push_str("alias pci:v*d*sv*sd*bc01sc01i* ata_generic\n");
        std::fs::write(dir.join("modules.alias"), alias).expect("alias");
    }

    /// The load calls since the last look: (module, with `async_probe`).
    fn loads(sys: &mut Recording) -> Vec<(String, bool)> {
        let names = sys
            .calls
            .iter()
            .filter_map(|c| c.strip_prefix("load "))
            .map(|c| {
                let path = c.split(' ').next().unwrap_or(c);
                (
                    modules::module_name(Path::new(path)),
                    c.contains("async_probe"),
                )
            })
            .collect();
        sys.calls.clear();
        names
    }

    /// A PIIX controller with its CD drive, both IDE drivers in the
    /// initramfs, and the first coldplug done.
    fn ide_machine() -> (tempfile::TempDir, Drivers, Recording) {
        let (root, mut drivers) = root();
        add_ide_controller(root.path());
        add_ata_generic(root.path());
        add_optical_drive(root.path());
        let mut sys = Recording::default();
        drivers.coldplug(&mut sys);
        sys.calls.clear();
        (root, drivers, sys)
    }

    #[test]
    fn the_ide_probe_starts_early_and_the_state_search_waits_for_it() {
        let (root, mut drivers, mut sys) = ide_machine();
        assert!(drivers.start_ide(&mut sys));
        assert_eq!(
            loads(&mut sys),
            [("libata".into(), true), ("ata_piix".into(), true)],
            "the controller's driver, not waited for; ata_generic held"
        );
        // The image and the seed meanwhile: their modules do not wait either.
        drivers.modules(&mut sys, &["loop"]);
        drivers.filesystem(&mut sys, root.path(), "vfat");
        let meanwhile = loads(&mut sys);
        assert!(meanwhile.iter().all(|(_, bg)| *bg), "{meanwhile:?}");
        assert_eq!(meanwhile[0], ("loop".into(), true));
        // The state search: ata_generic, loaded the usual way, is the wait.
        assert!(drivers.release_ide(&mut sys));
        assert_eq!(loads(&mut sys), [("ata_generic".into(), false)]);
        // Everything after it loads as before.
        assert!(drivers.release_held(&mut sys));
        assert_eq!(
            loads(&mut sys),
            [("cdrom".into(), false), ("sr_mod".into(), false)]
        );
    }

    #[test]
    fn a_missed_medium_search_waits_for_the_early_ide_probe_too() {
        let (_root, mut drivers, mut sys) = ide_machine();
        assert!(drivers.start_ide(&mut sys));
        loads(&mut sys);
        // The ISO is on the IDE CD drive: the first poll releases the rest,
        // each loaded the usual way, so the drive is there when it looks.
        assert!(drivers.while_waiting(&mut sys));
        let mut now = loads(&mut sys);
        now.sort();
        assert_eq!(
            now,
            [
                ("ata_generic".into(), false),
                ("cdrom".into(), false),
                ("sr_mod".into(), false)
            ]
        );
    }

    #[test]
    fn nothing_starts_early_without_ata_generic_to_wait_with() {
        // Not matching (an initramfs without it)...
        let (dir, mut drivers) = root();
        add_ide_controller(dir.path());
        let mut sys = Recording::default();
        drivers.coldplug(&mut sys);
        loads(&mut sys);
        assert!(!drivers.start_ide(&mut sys));
        assert!(sys.calls.is_empty());
        // ...or blacklisted: the state search would not wait at all.
        let (dir, _) = root();
        std::fs::write(
            dir.path().join("proc/cmdline"),
            "modprobe.blacklist=ata_generic\n",
        )
        .expect("cmdline");
        add_ide_controller(dir.path());
        add_ata_generic(dir.path());
        let mut drivers = Drivers::in_dir(Some(dir.path().join("lib/modules/6.1")), dir.path());
        drivers.coldplug(&mut sys);
        loads(&mut sys);
        assert!(!drivers.start_ide(&mut sys));
        assert!(sys.calls.is_empty());
        // No IDE controller: nothing to start.
        let (_dir, mut drivers) = root();
        assert!(!drivers.start_ide(&mut sys));
    }

    #[test]
    fn a_missed_search_releases_the_ide_controller_and_the_optical_driver_together() {
        let (root, mut drivers) = root();
        add_ide_controller(root.path());
        add_optical_drive(root.path());
        let mut sys = Recording::default();
        drivers.coldplug(&mut sys);
        loaded(&mut sys);
        assert!(drivers.while_waiting(&mut sys));
        let mut now = loaded(&mut sys);
        now.sort();
        assert_eq!(now, ["ata_piix", "cdrom", "libata", "sr_mod"]);
    }

    #[test]
    fn without_an_optical_drive_there_is_nothing_to_load_for_one() {
        let (_root, mut drivers) = root();
        let mut sys = Recording::default();
        drivers.coldplug(&mut sys);
        loaded(&mut sys);
        assert!(!drivers.release_held(&mut sys));
        assert!(sys.calls.is_empty());
    }

    #[test]
    fn a_filesystem_is_loaded_when_first_mounted_unless_it_is_registered() {
        let (root, mut drivers) = root();
        let mut sys = Recording::default();
        drivers.filesystem(&mut sys, root.path(), "iso9660");
        assert!(loaded(&mut sys).is_empty(), "registered");
        drivers.filesystem(&mut sys, root.path(), "ext4");
        assert_eq!(loaded(&mut sys), ["crc16", "ext4"]);
        drivers.filesystem(&mut sys, root.path(), "ext4");
        assert!(loaded(&mut sys).is_empty(), "tried once");
        drivers.filesystem(&mut sys, root.path(), "vfat");
        assert_eq!(
            loaded(&mut sys),
            [
                "vfat",
                "nls_cp437",
                "nls_ascii",
                "nls_iso8859_1",
                "nls_utf8"
            ]
        );
        drivers.modules(&mut sys, &["loop"]);
        assert_eq!(loaded(&mut sys), ["loop"]);
    }

    #[test]
    fn a_long_wait_loads_everything_carried_once() {
        let (_root, drivers) = root();
        let mut drivers = drivers.everything_after(Duration::ZERO);
        let mut sys = Recording::default();
        drivers.coldplug(&mut sys);
        loaded(&mut sys);
        drivers.while_waiting(&mut sys);
        let all = loaded(&mut sys);
        assert!(all.contains(&"usbcore".to_string()), "{all:?}");
        assert!(!all.contains(&"virtio".to_string()), "{all:?}");
        drivers.while_waiting(&mut sys);
        assert!(loaded(&mut sys).is_empty());
    }

    #[test]
    fn a_kernel_without_modules_loads_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut drivers = Drivers::in_dir(Some(root.path().join("lib/modules/6.1")), root.path());
        let mut sys = Recording::default();
        drivers.coldplug(&mut sys);
        drivers.filesystem(&mut sys, root.path(), "ext4");
        drivers.everything(&mut sys);
        assert!(sys.calls.is_empty());
    }
}
