//! The state partition: found by label or named, autoformatted when asked
//! and blank, checked and mounted.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gpt;
use crate::plan::{self, BootPlan, DevSpec, Source};
use crate::probe::{self};
use crate::sys::Sys;

use super::*;

/// How state came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Disk(PathBuf),
    Formatted(PathBuf),
    Ram,
}

pub(super) fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The state device the plan names, if it is there now (no drivers loaded,
/// no waiting).
pub(super) fn state_dev_present(root: &Path, plan: &BootPlan) -> Option<PathBuf> {
    // The live ISO does not adopt an installed disk's state by its label: it
    // would hold it mounted, and `berth install --force` could not reinstall
    // that disk. Naming it (`berth.state.dev=`) still works.
    let candidates = || {
        // A writable ext4 state is never on an optical disc, and opening an
        // empty drive is slow: leave them out.
        let all: Vec<_> = devices(root)
            .into_iter()
            .filter(|d| !d.is_optical())
            .collect();
        if plan.source != Source::Iso {
            return all;
        }
        all.iter()
            .filter(|d| {
                let installed = crate::installed::on_installed_disk(root, d, &all);
                if installed {
                    log::info!(
                        "{} is an installed Berth's state; the live system leaves it alone",
                        d.node.display()
                    );
                }
                !installed
            })
            .cloned()
            .collect()
    };
    match &plan.state.dev {
        DevSpec::Label(l) => probe::find_ext(&candidates(), Some(l), None).map(|d| d.node),
        DevSpec::Uuid(u) => probe::find_ext(&devices(root), None, Some(u)).map(|d| d.node),
        DevSpec::Path(p) => Some(under(root, p)).filter(|p| p.exists()),
    }
}

/// `release` loads drivers held back that a state partition could be
/// behind ([`Drivers::release_ide`]); whether it loaded any.
pub(super) fn find_state_dev(
    root: &Path,
    plan: &BootPlan,
    mut release: impl FnMut() -> bool,
) -> Option<PathBuf> {
    let look = || state_dev_present(root, plan);
    // The boot medium has already appeared, so the disks have been probed; a
    // default search waits only a moment, and only where a disk can still be
    // on its way. A device the user named is waited for as long as the medium
    // was (`berth.state.wait=false` turns that off).
    let default = plan.state.dev == DevSpec::Label(plan::STATE_LABEL.into());
    let wait = match (plan.state.wait, default) {
        (false, _) => Duration::ZERO,
        (true, true) if late_disks_possible(root) => Duration::from_secs(1),
        (true, true) => Duration::ZERO,
        (true, false) => plan.wait,
    };
    if let Some(found) = look() {
        return Some(found);
    }
    // Behind an IDE controller whose driver was held back (the boot medium
    // and the seed were elsewhere): load it and look again before waiting.
    if release() {
        if let Some(found) = look() {
            return Some(found);
        }
    }
    probe::wait_for(wait, look, || {
        if !default {
            log::info!("waiting for the state device {:?}", plan.state.dev)
        }
    })
}

/// Whether a disk may still appear after stage 1's drivers are loaded.
///
/// Loading a module returns once the probes it started have finished (the
/// kernel waits for a module's async work before `finit_module` returns), so
/// disks behind SATA/IDE, SCSI and virtio controllers are all there by now.
/// Three kinds of controller find theirs later, from work queues of their own:
/// NVMe (namespaces are scanned after the controller's reset), USB (hub
/// enumeration, then usb-storage's settle delay) and MMC/SD.
pub(super) fn late_disks_possible(root: &Path) -> bool {
    let any_in = |dir: &str| {
        std::fs::read_dir(root.join(dir)).is_ok_and(|mut entries| entries.next().is_some())
    };
    any_in("sys/class/nvme") || any_in("sys/bus/usb/devices") || any_in("sys/class/mmc_host")
}

/// Formats the first blank disk among `berth.state.autoformat` as the state
/// disk. A disk that is not blank is left alone, with a warning.
pub(super) fn autoformat(sys: &mut dyn Sys, root: &Path, plan: &BootPlan) -> Option<PathBuf> {
    for disk in &plan.state.autoformat {
        let node = under(root, disk);
        if let Err(e) = gpt::check_blank(&node) {
            log::warn!("autoformat: {e}");
            continue;
        }
        log::info!(
            "autoformat: {} is blank; making it the state disk",
            disk.display()
        );
        match format(sys, root, &node) {
            Ok(part) => return Some(part),
            Err(e) => log::error!("autoformat of {} failed: {e}", disk.display()),
        }
    }
    None
}

pub(super) fn format(sys: &mut dyn Sys, root: &Path, disk: &Path) -> Result<PathBuf, Error> {
    let name = disk
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sector = std::fs::read_to_string(
        root.join("sys/class/block")
            .join(&name)
            .join("queue/logical_block_size"),
    )
    .ok()
    .and_then(|s| s.trim().parse::<u64>().ok())
    .filter(|s| *s == 512 || *s == 4096)
    .unwrap_or(512);
    gpt::write_state_disk(disk, sector)?;
    sys.reread_partitions(disk).map_err(io_err(disk))?;
    let part = gpt::first_partition(disk);
    let appeared = probe::wait_for(
        Duration::from_secs(5),
        || part.exists().then_some(()),
        || (),
    );
    if appeared.is_none() {
        return Err(Error::Io {
            path: part,
            source: io::Error::new(io::ErrorKind::NotFound, "the new partition did not appear"),
        });
    }
    mkfs_ext4(sys, root, &part)?;
    Ok(part)
}

/// Makes an ext4 filesystem labelled `BERTH_STATE` on `part` (checked blank
/// by the caller).
pub fn mkfs_ext4(sys: &mut dyn Sys, root: &Path, part: &Path) -> Result<(), Error> {
    let part = part.to_path_buf();
    // mkfs.ext4 is a dynamically linked Debian binary: it runs inside the new
    // root, which needs /dev, /proc and /sys for the duration.
    let newroot = root.join(NEWROOT);
    let mkfs = ["usr/sbin/mkfs.ext4", "sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| newroot.join(p).exists())
        .ok_or_else(|| Error::NotBerth {
            path: PathBuf::from("/usr/sbin/mkfs.ext4"),
        })?;
    let mut bound = Vec::new();
    for dir in ["dev", "proc", "sys"] {
        let target = newroot.join(dir);
        mount(
            sys,
            dir,
            &root.join(dir).to_string_lossy(),
            &target,
            "",
            libc::MS_BIND | libc::MS_REC,
            "",
        )?;
        bound.push(target);
    }
    let in_root = Path::new("/").join(part.strip_prefix(root).unwrap_or(&part));
    let status = sys.run_chrooted(
        &newroot,
        &[
            &format!("/{mkfs}"),
            "-q",
            // The disk was checked blank just now; -F only skips the prompt.
            "-F",
            // No discard of the whole partition first: a blank disk has
            // nothing to free, and on large cloud volumes (EBS, PD) and SSDs
            // that pass takes seconds to minutes of the first boot.
            "-E",
            "nodiscard",
            "-L",
            plan::STATE_LABEL,
            &in_root.to_string_lossy(),
        ],
    );
    for target in bound.iter().rev() {
        let _ = sys.umount(target, libc::MNT_DETACH);
    }
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Error::Io {
            path: part,
            source: io::Error::other(format!("mkfs.ext4 failed: {s}")),
        }),
        Err(e) => Err(Error::Io {
            path: part,
            source: e,
        }),
    }
}

/// Finds, makes or fakes the state filesystem and mounts it at `root/run/berth/state`.
pub fn mount_state(
    sys: &mut dyn Sys,
    root: &Path,
    plan: &BootPlan,
    drivers: &mut Drivers,
) -> Result<State, Error> {
    let target = root.join(STATE_MOUNT);
    mkdir(&target)?;
    // An installed disk's state partition: grown with its disk, formatted
    // on the first boot.
    let installed = match plan.source {
        Source::Slot(_) => crate::installed::prepare(sys, root, &devices(root)),
        Source::Iso => None,
    };
    let found = match (
        &installed,
        find_state_dev(root, plan, || drivers.release_ide(sys)),
    ) {
        (Some(p), Some(dev)) if p.formatted && p.node == dev => Some(State::Formatted(dev)),
        (_, Some(dev)) => Some(State::Disk(dev)),
        (_, None) => autoformat(sys, root, plan).map(State::Formatted),
    };
    if let Some(State::Disk(dev)) = &found {
        // Said on every boot so a test (and a person) can tell whether the last
        // shutdown was orderly.
        match std::fs::File::open(dev).map(|mut f| probe::ext_clean(&mut f)) {
            Ok(Ok(Some(true))) => log::info!("state {} was cleanly unmounted", dev.display()),
            Ok(Ok(Some(false))) => log::warn!(
                "state {} was not cleanly unmounted; the journal will be replayed",
                dev.display()
            ),
            _ => {}
        }
    }
    if let Some(State::Disk(dev) | State::Formatted(dev)) = &found {
        drivers.filesystem(sys, root, &plan.state.fstype);
        match sys.mount(
            &dev.to_string_lossy(),
            &target,
            &plan.state.fstype,
            NODEV | NOSUID,
            "",
        ) {
            Ok(()) => {
                log::info!("state on {}", dev.display());
                if let Some(p) = installed.as_ref().filter(|p| &p.node == dev) {
                    if let (Some(bytes), false) = (p.grew, p.formatted) {
                        crate::installed::grow_filesystem(sys, dev, &target, bytes);
                    }
                    if p.formatted {
                        // The installer's cloud-config waits on the ESP.
                        drivers.filesystem(sys, root, "vfat");
                        match crate::installed::take_install_config(
                            sys,
                            root,
                            &devices(root),
                            &target,
                        ) {
                            Ok(_) => {}
                            Err(e) => log::error!("the installed system's cloud-config: {e}"),
                        }
                    }
                }
                return Ok(found.unwrap_or(State::Ram));
            }
            Err(e) if plan.state.required => {
                return Err(Error::Mount {
                    what: "the state partition".into(),
                    target,
                    source: e,
                })
            }
            Err(e) => log::error!("cannot mount the state partition {}: {e}", dev.display()),
        }
    }
    if plan.state.required {
        return Err(Error::StateRequired {
            dev: format!("{:?}", plan.state.dev),
        });
    }
    log::info!("no state partition: running from RAM, nothing is kept across reboots");
    mount(
        sys,
        "tmpfs state",
        "tmpfs",
        &target,
        "tmpfs",
        NODEV | NOSUID,
        "mode=0755",
    )?;
    Ok(State::Ram)
}
