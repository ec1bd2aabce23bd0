//! Stage 1, in the initramfs: find the OS image and the state partition,
//! assemble the real root under `/sysroot`, and switch to it.
//!
//! Every path is under `root` (`/` on a real boot) so the whole sequence runs in
//! tests against a temporary directory and a [`Recording`](crate::sys::Recording).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::nocloud;
use crate::plan::{self, BootPlan, Source};
use crate::probe::{self, BlockDev};
use crate::sys::Sys;

mod assemble;
mod drivers;
mod state;
#[cfg(test)]
mod tests;

pub use assemble::{assemble, copy_tree};
pub use drivers::Drivers;
pub use state::{mkfs_ext4, mount_state, State};

pub(super) const NOSUID: libc::c_ulong = libc::MS_NOSUID;
pub(super) const NODEV: libc::c_ulong = libc::MS_NODEV;
pub(super) const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

/// Where the new root is assembled, under the initramfs root.
pub const NEWROOT: &str = "sysroot";
/// Where the ISO stays mounted (moved into the new root with `/run`).
pub const ISO_MOUNT: &str = "run/berth/iso";
/// Where the state filesystem is mounted (moved along with `/run`).
pub const STATE_MOUNT: &str = "run/berth/state";
/// What stage 2 runs.
pub const BERTH: &str = "usr/bin/berth";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot mount {what} on {}: {source}", target.display())]
    Mount {
        what: String,
        target: PathBuf,
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("no ISO labelled {label} appeared within {}s (block devices seen: {seen}); raise the wait with berth.wait=SECS", wait.as_secs())]
    NoIso {
        label: &'static str,
        wait: Duration,
        seen: String,
    },
    #[error("no partition named {name} appeared within {}s (block devices seen: {seen})", wait.as_secs())]
    NoSlot {
        name: String,
        wait: Duration,
        seen: String,
    },
    #[error("cannot attach {} to a loop device: {source}", file.display())]
    Loop { file: PathBuf, source: io::Error },
    #[error("no state device ({dev}) was found and berth.state.required is set")]
    StateRequired { dev: String },
    #[error("the OS image has no {}: it is not a Berth root", path.display())]
    NotBerth { path: PathBuf },
    #[error(transparent)]
    Gpt(#[from] berth_sys::gpt::Error),
    #[error("switch_root failed at {step}: {source}")]
    SwitchRoot {
        step: &'static str,
        source: io::Error,
    },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn mount(
    sys: &mut dyn Sys,
    what: &str,
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), Error> {
    sys.mount(source, target, fstype, flags, data)
        .map_err(|source| Error::Mount {
            what: what.to_string(),
            target: target.to_path_buf(),
            source,
        })
}

pub(super) fn mkdir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(io_err(path))
}

/// `/proc`, `/sys`, `/dev` and `/run`. Already mounted (EBUSY) is fine: a kernel
/// with devtmpfs automount, or stage 1 run a second time.
pub fn early_mounts(sys: &mut dyn Sys, root: &Path) -> Result<(), Error> {
    for (fstype, dir, flags, data) in [
        ("proc", "proc", NOSUID | NODEV | NOEXEC, ""),
        ("sysfs", "sys", NOSUID | NODEV | NOEXEC, ""),
        ("devtmpfs", "dev", NOSUID, "mode=0755"),
        ("tmpfs", "run", NOSUID | NODEV, "mode=0755"),
    ] {
        let target = root.join(dir);
        mkdir(&target)?;
        match sys.mount(fstype, &target, fstype, flags, data) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            other => other.map_err(|source| Error::Mount {
                what: fstype.into(),
                target: target.clone(),
                source,
            })?,
        }
    }
    Ok(())
}

pub(super) fn devices(root: &Path) -> Vec<BlockDev> {
    probe::block_devices(&root.join("sys/class/block"), &root.join("dev"))
}

pub(super) fn seen(root: &Path) -> String {
    let names: Vec<String> = devices(root).into_iter().map(|d| d.name).collect();
    if names.is_empty() {
        "none — is the storage driver in the initramfs?".into()
    } else {
        names.join(", ")
    }
}

/// Mounts the OS image read-only at `root/sysroot`.
pub fn mount_image(
    sys: &mut dyn Sys,
    root: &Path,
    plan: &BootPlan,
    drivers: &mut Drivers,
) -> Result<(), Error> {
    let newroot = root.join(NEWROOT);
    mkdir(&newroot)?;
    match &plan.source {
        Source::Iso => {
            let found = probe::wait_for(
                plan.wait,
                || {
                    let look = || probe::find_iso(&devices(root), plan::ISO_LABEL);
                    look().or_else(|| drivers.while_waiting(sys).then(look).flatten())
                },
                || {
                    log::info!(
                        "waiting up to {}s for {}",
                        plan.wait.as_secs(),
                        plan::ISO_LABEL
                    )
                },
            );
            drivers.done_waiting();
            let iso = found.ok_or_else(|| Error::NoIso {
                label: plan::ISO_LABEL,
                wait: plan.wait,
                seen: seen(root),
            })?;
            log::info!("boot medium {} on {}", plan::ISO_LABEL, iso.node.display());
            drivers.filesystem(sys, root, "iso9660");
            let mnt = root.join(ISO_MOUNT);
            mkdir(&mnt)?;
            mount(
                sys,
                "the ISO",
                &iso.node.to_string_lossy(),
                &mnt,
                "iso9660",
                libc::MS_RDONLY | NOSUID | NODEV,
                "",
            )?;
            let squashfs = mnt.join("berth/rootfs.squashfs");
            drivers.modules(sys, &["loop"]);
            drivers.filesystem(sys, root, "squashfs");
            let dev = sys
                .attach_loop(&squashfs, &root.join("dev"))
                .map_err(|source| Error::Loop {
                    file: squashfs.clone(),
                    source,
                })?;
            // `dev` (the open loop device) lives until after the mount.
            mount(
                sys,
                "rootfs.squashfs",
                &dev.node.to_string_lossy(),
                &newroot,
                "squashfs",
                libc::MS_RDONLY,
                "",
            )
        }
        Source::Slot(slot) => {
            let name = format!("BERTH_{slot}");
            let found = probe::wait_for(
                plan.wait,
                || {
                    let look = || probe::find_partname(&devices(root), &name);
                    look().or_else(|| drivers.while_waiting(sys).then(look).flatten())
                },
                || log::info!("waiting up to {}s for {name}", plan.wait.as_secs()),
            );
            drivers.done_waiting();
            let part = found.ok_or_else(|| Error::NoSlot {
                name: name.clone(),
                wait: plan.wait,
                seen: seen(root),
            })?;
            log::info!("OS image: slot {slot} on {}", part.node.display());
            drivers.filesystem(sys, root, "squashfs");
            mount(
                sys,
                &name,
                &part.node.to_string_lossy(),
                &newroot,
                "squashfs",
                libc::MS_RDONLY,
                "",
            )
        }
    }
}

/// Removes everything under `dir` on the same filesystem, except `keep`;
/// mount points (other filesystems) are left alone. This is how switch_root
/// frees the initramfs's memory.
pub fn remove_same_fs(dir: &Path, keep: &Path) -> io::Result<()> {
    let dev = std::fs::symlink_metadata(dir)?.dev();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path == keep {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            remove_same_fs(&path, keep)?;
            // Not empty when a mount point sits inside: leave it.
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// The initramfs is ramfs or tmpfs; only then may its contents be deleted.
pub(super) fn is_ram_root(root: &Path) -> bool {
    let Ok(c) = crate::sys::cstr(root) else {
        return false;
    };
    // SAFETY: statfs is plain data, valid zeroed.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid path and `st` a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    matches!(st.f_type as i64, RAMFS_MAGIC | TMPFS_MAGIC)
}

/// Moves the new root onto `/` and chroots into it; stage 2 then runs in
/// this same process (see [`crate::main`]).
pub fn switch_root(sys: &mut dyn Sys, root: &Path, free_initramfs: bool) -> Result<(), Error> {
    let newroot = root.join(NEWROOT);
    if free_initramfs {
        if let Err(e) = remove_same_fs(root, &newroot) {
            log::warn!("could not free the initramfs: {e}");
        }
    }
    let step = |step, r: io::Result<()>| r.map_err(|source| Error::SwitchRoot { step, source });
    step("chdir", sys.chdir(&newroot))?;
    step("move", sys.mount(".", root, "", libc::MS_MOVE, ""))?;
    step("chroot", sys.chroot(Path::new(".")))?;
    step("chdir /", sys.chdir(Path::new("/")))
}

/// Stage 1 start to finish: on success this process is on the new root,
/// ready to be stage 2.
pub fn run(sys: &mut dyn Sys, root: &Path) -> Result<(), Error> {
    prepare(sys, root)?;
    // /run is in the new root by now (assemble moved it).
    crate::timeline::mark(&root.join(NEWROOT).join("run"), "stage1_end");
    switch_root(sys, root, is_ram_root(root))
}

/// Everything up to the switch: mounts, plan, modules, image, state, assembly.
pub fn prepare(sys: &mut dyn Sys, root: &Path) -> Result<(), Error> {
    early_mounts(sys, root)?;
    crate::console::ensure_console_fds();
    crate::console::reopen_kmsg();
    log::info!("stage 1");
    crate::timeline::mark(&root.join("run"), "stage1_start");
    let cmdline = std::fs::read_to_string(root.join("proc/cmdline")).unwrap_or_default();
    let plan = plan::plan(&cmdline);
    crate::console::set_verbose(plan.debug);
    if plan.debug {
        // Every debug line into dmesg too: the kernel otherwise lets a writer
        // of /dev/kmsg have ten lines in five seconds and drops the rest.
        let _ = std::fs::write(root.join("proc/sys/kernel/printk_devkmsg"), "on\n");
    }
    for p in &plan.problems {
        log::warn!("kernel command line: {p}");
    }
    let mut drivers = Drivers::new(root);
    drivers.coldplug(sys);
    // A live system whose state is not on the disks already there looks
    // behind the IDE controller at its state search: that probe, mostly
    // libata's waits after each reset, runs meanwhile (an installed system's
    // state is on its own disk).
    if plan.source == Source::Iso && state::state_dev_present(root, &plan).is_none() {
        drivers.start_ide(sys);
    }
    crate::timeline::mark(&root.join("run"), "stage1_drivers");
    // A trial boot is watched from here on: whatever of the new OS image
    // (or under the new kernel arguments) hangs, the machine resets and GRUB
    // falls back (see crate::watchdog).
    let trial = berth_iso::slots::from_cmdline(&cmdline).is_some_and(|(_, t)| t)
        || berth_iso::kernel_args::on_trial(&cmdline);
    if root == Path::new("/") && trial {
        if let Some(dog) = crate::watchdog::open_present(root) {
            dog.hand_over();
        }
    }
    mount_image(sys, root, &plan, &mut drivers)?;
    crate::timeline::mark(&root.join("run"), "stage1_image");
    // The seed is looked for once, after the boot medium: by then the storage
    // drivers have found what is attached at boot. On discs too, if the disks
    // have none (cloud-localds's seed as a CD, the usual way).
    let mut devs = devices(root);
    let mut found = nocloud::find(&devs);
    if found.is_none() && drivers.release_held(sys) {
        devs = devices(root);
        found = nocloud::find(&devs);
    }
    if let Some((_, fstype)) = found {
        drivers.filesystem(sys, root, fstype);
    }
    let seed = nocloud::read(sys, root, &devs);
    if let Some(seed) = &seed {
        // berthd's datasource probe: NoCloud answered this boot (local, first).
        let marker = root.join(nocloud::MARKER);
        let written = marker
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&marker, seed.device.to_string_lossy().as_bytes()));
        if let Err(e) = written {
            log::warn!("{}: {e}", marker.display());
        }
    }
    let plan = match seed.as_ref().and_then(|s| s.user_data.as_deref()) {
        Some(text) => {
            let doc = berth_configs::parse_document(&std::sync::Arc::from(USER_DATA), text);
            let with_seed = plan::plan_with(&cmdline, vec![doc]);
            for p in with_seed
                .problems
                .iter()
                .filter(|p| !plan.problems.contains(p))
            {
                log::warn!("{p}");
            }
            with_seed
        }
        None => plan,
    };
    log::debug!("boot plan: {plan:?}");
    crate::timeline::mark(&root.join("run"), "stage1_seed");
    mount_state(sys, root, &plan, &mut drivers)?;
    crate::timeline::mark(&root.join("run"), "stage1_state");
    assemble(sys, root)?;
    if let Some(seed) = &seed {
        if let Err(e) = nocloud::cache(seed, &root.join(NEWROOT)) {
            log::error!("cannot keep the NoCloud seed on the state partition: {e}");
        }
    }
    Ok(())
}

/// How stage 1 names the seed's user-data in its messages.
pub(super) const USER_DATA: &str = "NoCloud user-data";
