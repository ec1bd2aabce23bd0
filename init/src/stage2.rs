//! Stage 2, PID 1 on the real root: finish the API mounts, read the boot
//! switches, and hand over to the supervisor loop.

use std::path::{Path, PathBuf};

use crate::modules;
use crate::plan;
use crate::supervisor::{self, Main};
use crate::sys::Sys;

/// Mounts the initramfs did not need: ptys and shared memory for services,
/// and the cgroup2 hierarchy berthd's containers live in.
pub fn mounts(sys: &mut dyn Sys, root: &Path) {
    for (fstype, dir, flags, data) in [
        (
            "devpts",
            "dev/pts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "gid=5,mode=620,ptmxmode=666",
        ),
        (
            "tmpfs",
            "dev/shm",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
        (
            "cgroup2",
            "sys/fs/cgroup",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "",
        ),
    ] {
        let target = root.join(dir);
        let _ = std::fs::create_dir_all(&target);
        match sys.mount(fstype, &target, fstype, flags, data) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => log::warn!("cannot mount {fstype} on /{dir}: {e}"),
        }
    }
}

/// Where the drivers are (paths in `modules.dep`) that nothing before the
/// ready line uses: input devices (the power button's `evdev` is asked for
/// by name), sound, graphics, video capture, sensors, memory-error
/// reporting, SMBus, floppy disks, optical drives and legacy IDE controllers
/// (stage 1 loaded their drivers if the boot medium, the seed or the state
/// was behind them; berthd loads them for a `mounts` entry whose device is
/// not there) and QEMU's firmware interface. On one CPU
/// every driver loaded before berthd delays the ready line, and these only
/// probe their hardware (a PS/2 mouse's probe runs on for most of a second
/// under emulation); they are loaded once the line is out.
const AFTER_READY: &[&str] = &[
    "kernel/drivers/input/",
    "kernel/sound/",
    "kernel/drivers/gpu/",
    "kernel/drivers/media/",
    "kernel/drivers/hwmon/",
    "kernel/drivers/edac/",
    "kernel/drivers/i2c/",
    "kernel/drivers/block/floppy.ko",
    "kernel/drivers/scsi/sr_mod.ko",
    "kernel/drivers/cdrom/",
    "kernel/drivers/ata/ata_piix.ko",
    "kernel/drivers/ata/ata_generic.ko",
    "kernel/drivers/firmware/qemu_fw_cfg.ko",
];

/// `present` (module names) split into what stage 2 loads before berthd
/// and what waits for the ready line ([`AFTER_READY`]). A name
/// `modules.dep` does not know stays in the first part, to be reported.
pub fn split_after_ready(
    dep: &modules::ModuleDep,
    present: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    present.into_iter().partition(|name| {
        !dep.path(name).is_some_and(|path| {
            let path = path.to_string_lossy();
            AFTER_READY.iter().any(|prefix| path.starts_with(prefix))
        })
    })
}

/// Loads `wanted` from `dir`, skipping what is in the kernel already (a
/// module file is read and its signature checked before the kernel finds
/// it is a duplicate).
fn load_present(
    sys: &mut dyn Sys,
    dir: &Path,
    dep: &modules::ModuleDep,
    wanted: &[String],
    options: &modules::Options,
) -> modules::Report {
    let loaded = |name: &str| Path::new("/sys/module").join(name).exists();
    modules::load_from(
        dir,
        dep,
        Some(wanted),
        options,
        |path, compressed, params| {
            if loaded(&modules::module_name(path)) {
                return Err(std::io::Error::from_raw_os_error(libc::EEXIST));
            }
            sys.load_module(path, compressed, params)
        },
    )
}

fn log_report(when: &str, report: &modules::Report) {
    for (name, why) in &report.failed {
        log::warn!("module {name} ({when}): {why}");
    }
    for name in &report.missing {
        log::debug!("module {name} not found (built in?)");
    }
    for name in &report.blacklisted {
        log::info!("module {name} ({when}) not loaded: the blacklist names it");
    }
}

/// What stage 2 runs, from the boot switches and whether this build has berthd.
pub fn choose_main(rescue: bool, berthd_available: bool, berth: PathBuf) -> Main {
    if rescue {
        match supervisor::find_shell() {
            Some(shell) => {
                log::info!("berth.rescue: a shell instead of berthd");
                return Main::Shell(shell);
            }
            None => log::error!("berth.rescue: the OS image has no busybox; starting berthd"),
        }
    }
    if berthd_available {
        Main::Berthd(berth)
    } else {
        log::info!("berthd not present");
        Main::Nothing
    }
}

pub fn run(berthd_available: bool) -> ! {
    let mut sys = crate::sys::Linux;
    crate::console::ensure_console_fds();
    crate::console::reopen_kmsg();
    crate::timeline::mark(Path::new("/run"), "stage2_start");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let switches = plan::switches(&cmdline);
    crate::console::set_verbose(switches.debug);
    log::info!("stage 2");
    mounts(&mut sys, Path::new("/"));
    // Ctrl-Alt-Del becomes SIGINT to us (an orderly reboot) instead of an
    // immediate hard reset.
    // SAFETY: reboot(CAD_OFF) has no memory arguments and only sets a flag.
    unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF) };
    // The power button's drivers, if they are modules (missing is fine: built in).
    let mut after_ready = None;
    if let Some(release) = modules::kernel_release() {
        let dir = Path::new("/lib/modules").join(release);
        // Plus the drivers of the hardware that is there (NICs above all): the
        // initramfs carried only what reaching the root needed.
        // overlayfs, which every container's root is: left to the kernel's
        // request at berthd's first mount, it costs a `/sbin/modprobe` run
        // that parses modules.alias and modules.dep again (in the first
        // container's start).
        // The kernel command line's parameters go to each module, and its
        // blacklist (`modprobe.blacklist=`) keeps a driver out; overlayfs is
        // loaded whatever it says, as no service could start without it.
        let options = modules::Options::kernel(Path::new("/"));
        let mut wanted = ["button", "evdev"].map(String::from).to_vec();
        match modules::ModuleDep::read(&dir) {
            Ok(dep) => {
                let overlay = ["overlay".to_string()];
                let report = load_present(&mut sys, &dir, &dep, &overlay, &options.named());
                log_report("stage 2", &report);
                let present = modules::for_present_devices(&dir, Path::new("/sys"));
                let (now, later) = split_after_ready(&dep, present);
                wanted.extend(now);
                let report = load_present(&mut sys, &dir, &dep, &wanted, &options);
                crate::timeline::mark(Path::new("/run"), "stage2_modules");
                log_report("stage 2", &report);
                if !later.is_empty() {
                    after_ready = Some(Box::new(move || {
                        let report =
                            load_present(&mut crate::sys::Linux, &dir, &dep, &later, &options);
                        crate::timeline::mark(Path::new("/run"), "modules_after_ready");
                        log_report("after the ready line", &report);
                        berth_sys::alloc::trim();
                    }) as supervisor::AfterReady);
                }
            }
            Err(e) => log::debug!("{}/modules.dep: {e}", dir.display()),
        }
    }
    let main = choose_main(
        switches.rescue,
        berthd_available,
        PathBuf::from("/usr/bin/berth"),
    );
    if main == Main::Nothing {
        // Nothing will ever report ready; the boot tests still need the marker.
        supervisor::announce_ready(" (berthd not present in this build)");
    }
    let trial = crate::trial::begin(Path::new("/"), &cmdline);
    // Stage 1's buffers (the drivers it decoded, the tables it matched) are
    // freed; the memory goes back to the kernel for good.
    berth_sys::alloc::trim();
    supervisor::run(
        &mut sys,
        main,
        Path::new(supervisor::SOCKET),
        trial,
        after_ready,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recording;

    #[test]
    fn drivers_no_service_needs_wait_for_the_ready_line() {
        let dep = modules::ModuleDep::parse(
            "kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n\
             kernel/drivers/input/mouse/psmouse.ko:\n\
             kernel/drivers/input/misc/pcspkr.ko:\n\
             kernel/drivers/block/floppy.ko:\n\
             kernel/drivers/firmware/qemu_fw_cfg.ko:\n\
             kernel/drivers/scsi/sr_mod.ko: kernel/drivers/cdrom/cdrom.ko\n\
             kernel/drivers/cdrom/cdrom.ko:\n\
             kernel/drivers/ata/ata_piix.ko:\n",
        );
        let present = [
            "psmouse",
            "virtio_net",
            "pcspkr",
            "floppy",
            "sr_mod",
            "ata_piix",
            "qemu_fw_cfg",
            "not_there",
        ]
        .map(String::from)
        .to_vec();
        let (now, later) = split_after_ready(&dep, present);
        assert_eq!(now, ["virtio_net", "not_there"]);
        assert_eq!(
            later,
            [
                "psmouse",
                "pcspkr",
                "floppy",
                "sr_mod",
                "ata_piix",
                "qemu_fw_cfg"
            ]
        );
    }

    #[test]
    fn api_mounts_in_order() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut sys = Recording::default();
        mounts(&mut sys, root.path());
        let r = root.path().to_string_lossy().to_string();
        let calls: Vec<String> = sys.calls.iter().map(|c| c.replace(&r, "")).collect();
        assert_eq!(
            calls,
            [
                "mount devpts /dev/pts devpts [nosuid,noexec] gid=5,mode=620,ptmxmode=666",
                "mount tmpfs /dev/shm tmpfs [nosuid,nodev] mode=1777",
                "mount cgroup2 /sys/fs/cgroup cgroup2 [nosuid,nodev,noexec] ",
            ]
        );
    }

    #[test]
    fn berthd_or_nothing() {
        let b = PathBuf::from("/usr/bin/berth");
        assert_eq!(choose_main(false, true, b.clone()), Main::Berthd(b.clone()));
        assert_eq!(choose_main(false, false, b), Main::Nothing);
    }
}
