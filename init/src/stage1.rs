//! Stage 1, in the initramfs: find the OS image and the state partition,
//! assemble the real root under `/sysroot`, and switch to it.
//!
//! Every path is under `root` (`/` on a real boot) so the whole sequence runs in
//! tests against a temporary directory and a [`Recording`](crate::sys::Recording).

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gpt;
use crate::modules;
use crate::nocloud;
use crate::plan::{self, BootPlan, DevSpec, Source};
use crate::probe::{self, BlockDev};
use crate::sys::Sys;

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

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
    #[error("switch_root failed at {step}: {source}")]
    SwitchRoot {
        step: &'static str,
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[allow(clippy::too_many_arguments)]
fn mount(
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

fn mkdir(path: &Path) -> Result<(), Error> {
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

/// Loads every module the initramfs carries (it only carries what reaching the
/// root needs); a problem with one is a warning.
pub fn load_modules(sys: &mut dyn Sys, root: &Path) {
    let Some(release) = modules::kernel_release() else {
        log::warn!("cannot tell the kernel release; no modules loaded");
        return;
    };
    let dir = root.join("lib/modules").join(&release);
    match modules::load(sys, &dir, None) {
        Ok(report) => modules::log_report("initramfs", &report),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::debug!(
                "no {}/modules.dep: everything needed is built in",
                dir.display()
            )
        }
        Err(e) => log::warn!("{}: {e}", dir.display()),
    }
}

fn devices(root: &Path) -> Vec<BlockDev> {
    probe::block_devices(&root.join("sys/class/block"), &root.join("dev"))
}

fn seen(root: &Path) -> String {
    let names: Vec<String> = devices(root).into_iter().map(|d| d.name).collect();
    if names.is_empty() {
        "none — is the storage driver in the initramfs?".into()
    } else {
        names.join(", ")
    }
}

/// Mounts the OS image read-only at `root/sysroot`.
pub fn mount_image(sys: &mut dyn Sys, root: &Path, plan: &BootPlan) -> Result<(), Error> {
    let newroot = root.join(NEWROOT);
    mkdir(&newroot)?;
    match &plan.source {
        Source::Iso => {
            let iso = probe::wait_for(
                plan.wait,
                || probe::find_iso(&devices(root), plan::ISO_LABEL),
                || {
                    log::info!(
                        "waiting up to {}s for {}",
                        plan.wait.as_secs(),
                        plan::ISO_LABEL
                    )
                },
            )
            .ok_or_else(|| Error::NoIso {
                label: plan::ISO_LABEL,
                wait: plan.wait,
                seen: seen(root),
            })?;
            log::info!("boot medium {} on {}", plan::ISO_LABEL, iso.node.display());
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
            let part = probe::wait_for(
                plan.wait,
                || probe::find_partname(&devices(root), &name),
                || log::info!("waiting up to {}s for {name}", plan.wait.as_secs()),
            )
            .ok_or_else(|| Error::NoSlot {
                name: name.clone(),
                wait: plan.wait,
                seen: seen(root),
            })?;
            log::info!("OS image: slot {slot} on {}", part.node.display());
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

/// How state came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Disk(PathBuf),
    Formatted(PathBuf),
    Ram,
}

fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn find_state_dev(root: &Path, plan: &BootPlan) -> Option<PathBuf> {
    // The live ISO does not adopt an installed disk's state by its label: it
    // would hold it mounted, and `berth install --force` could not reinstall
    // that disk. Naming it (`berth.state.dev=`) still works.
    let candidates = || {
        let all = devices(root);
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
    let look = || match &plan.state.dev {
        DevSpec::Label(l) => probe::find_ext(&candidates(), Some(l), None).map(|d| d.node),
        DevSpec::Uuid(u) => probe::find_ext(&devices(root), None, Some(u)).map(|d| d.node),
        DevSpec::Path(p) => Some(under(root, p)).filter(|p| p.exists()),
    };
    // The boot medium has already appeared, so the disks have been probed; a
    // default search waits only a moment. A device the user named is waited for
    // as long as the medium was (`berth.state.wait=false` turns that off).
    let default = plan.state.dev == DevSpec::Label(plan::STATE_LABEL.into());
    let wait = match (plan.state.wait, default) {
        (false, _) => Duration::ZERO,
        (true, true) => Duration::from_secs(1),
        (true, false) => plan.wait,
    };
    probe::wait_for(wait, look, || {
        if !default {
            log::info!("waiting for the state device {:?}", plan.state.dev)
        }
    })
}

/// Formats the first blank disk among `berth.state.autoformat` as the state
/// disk. A disk that is not blank is left alone, with a warning.
fn autoformat(sys: &mut dyn Sys, root: &Path, plan: &BootPlan) -> Option<PathBuf> {
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

fn format(sys: &mut dyn Sys, root: &Path, disk: &Path) -> Result<PathBuf, Error> {
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
    gpt::write_gpt(disk, sector).map_err(|e| Error::Io {
        path: disk.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })?;
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
pub fn mount_state(sys: &mut dyn Sys, root: &Path, plan: &BootPlan) -> Result<State, Error> {
    let target = root.join(STATE_MOUNT);
    mkdir(&target)?;
    // An installed disk's state partition: grown with its disk, formatted
    // on the first boot.
    let installed = match plan.source {
        Source::Slot(_) => crate::installed::prepare(sys, root, &devices(root)),
        Source::Iso => None,
    };
    let found = match (&installed, find_state_dev(root, plan)) {
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

/// Copies a directory tree (files, directories, symlinks, modes).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&src)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_dir() {
            match std::fs::create_dir(&dst) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            std::fs::set_permissions(&dst, meta.permissions())?;
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Directories bound from the state partition.
pub const FROM_STATE: [&str; 6] = ["var", "home", "opt", "srv", "mnt", "media"];

/// The engine's data, below `/var`.
pub const DOCKER_DATA: &str = "var/lib/docker";

/// Mount points made shared: the paths the host, the console and the user
/// engine see as one (each service binds them with `rshared`/`rslave`).
pub const USER_PATHS: [&str; 6] = ["home", "opt", "srv", "mnt", "media", DOCKER_DATA];

/// Builds the rest of the new root on the mounted image: `/etc` (tmpfs seeded
/// from the image's defaults), [`FROM_STATE`] from state and shared, `/tmp`, and moves
/// `/dev`, `/proc`, `/sys` and `/run` (with the ISO and state under it) across.
pub fn assemble(sys: &mut dyn Sys, root: &Path) -> Result<(), Error> {
    let newroot = root.join(NEWROOT);
    let berth = newroot.join(BERTH);
    if !berth.exists() {
        return Err(Error::NotBerth { path: berth });
    }
    let etc = newroot.join("etc");
    mount(
        sys,
        "/etc",
        "tmpfs",
        &etc,
        "tmpfs",
        NOSUID | NODEV,
        "mode=0755",
    )?;
    let defaults = newroot.join("usr/share/berth/etc");
    if defaults.is_dir() {
        copy_tree(&defaults, &etc).map_err(io_err(&defaults))?;
    } else {
        log::warn!("the OS image has no /usr/share/berth/etc; /etc starts empty");
    }
    let mtab = etc.join("mtab");
    if std::fs::symlink_metadata(&mtab).is_err() {
        let _ = std::os::unix::fs::symlink("../proc/self/mounts", &mtab);
    }

    let state = root.join(STATE_MOUNT);
    // `/opt`, `/srv`, `/mnt` and `/media` too: they are where people put their
    // own software and files, and the OS image's are read-only.
    for dir in FROM_STATE {
        let src = state.join(dir);
        mkdir(&src)?;
        let _ = std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755));
        mount(
            sys,
            &format!("/{dir} from state"),
            &src.to_string_lossy(),
            &newroot.join(dir),
            "",
            libc::MS_BIND,
            "",
        )?;
    }
    // The engine's data is its own mount so that it can be shared alone.
    let docker = newroot.join(DOCKER_DATA);
    mkdir(&docker)?;
    mount(
        sys,
        "/var/lib/docker",
        &docker.to_string_lossy(),
        &docker,
        "",
        libc::MS_BIND,
        "",
    )?;
    // The user's paths are one view for the host, the console and the engine:
    // shared mounts, so that what is mounted below them later (`mounts:`, a
    // disk mounted by hand in the console) appears in all three.
    for dir in USER_PATHS {
        mount(
            sys,
            &format!("/{dir} shared"),
            "none",
            &newroot.join(dir),
            "",
            libc::MS_SHARED,
            "",
        )?;
    }
    // Where `write_files` and the engine's flags put the engine's own config.
    mkdir(&newroot.join("etc/docker"))?;
    if newroot.join("tmp").is_dir() {
        mount(
            sys,
            "/tmp",
            "tmpfs",
            &newroot.join("tmp"),
            "tmpfs",
            NOSUID | NODEV,
            "mode=1777",
        )?;
    }
    for dir in ["dev", "proc", "sys", "run"] {
        mount(
            sys,
            &format!("/{dir}"),
            &root.join(dir).to_string_lossy(),
            &newroot.join(dir),
            "",
            libc::MS_MOVE,
            "",
        )?;
    }
    Ok(())
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
fn is_ram_root(root: &Path) -> bool {
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

/// Moves the new root onto `/`, chroots into it and execs stage 2. Only
/// returns on failure.
pub fn switch_root(sys: &mut dyn Sys, root: &Path, free_initramfs: bool) -> Error {
    let newroot = root.join(NEWROOT);
    if free_initramfs {
        if let Err(e) = remove_same_fs(root, &newroot) {
            log::warn!("could not free the initramfs: {e}");
        }
    }
    let step = |step, r: io::Result<()>| r.map_err(|source| Error::SwitchRoot { step, source });
    let result = (|| {
        step("chdir", sys.chdir(&newroot))?;
        step("move", sys.mount(".", root, "", libc::MS_MOVE, ""))?;
        step("chroot", sys.chroot(Path::new(".")))?;
        step("chdir /", sys.chdir(Path::new("/")))
    })();
    if let Err(e) = result {
        return e;
    }
    let e = sys.exec(&Path::new("/").join(BERTH), "init");
    Error::SwitchRoot {
        step: "exec /usr/bin/berth",
        source: e,
    }
}

/// Stage 1 start to finish. Returns only on failure.
pub fn run(sys: &mut dyn Sys, root: &Path) -> Error {
    match prepare(sys, root) {
        Ok(()) => {}
        Err(e) => return e,
    }
    crate::timeline::mark(&root.join("run"), "stage1_end");
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
    for p in &plan.problems {
        log::warn!("kernel command line: {p}");
    }
    load_modules(sys, root);
    // A trial boot is watched from here on: whatever of the new OS image
    // hangs, the machine resets and GRUB falls back (see crate::watchdog).
    if root == Path::new("/") && berth_iso::slots::from_cmdline(&cmdline).is_some_and(|(_, t)| t) {
        if let Some(dog) = crate::watchdog::open_present(root) {
            dog.hand_over();
        }
    }
    mount_image(sys, root, &plan)?;
    // The seed is looked for once, after the boot medium: by then the storage
    // drivers have found what is attached at boot.
    let seed = nocloud::read(sys, root, &devices(root));
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
    mount_state(sys, root, &plan)?;
    assemble(sys, root)?;
    if let Some(seed) = &seed {
        if let Err(e) = nocloud::cache(seed, &root.join(NEWROOT)) {
            log::error!("cannot keep the NoCloud seed on the state partition: {e}");
        }
    }
    Ok(())
}

/// How stage 1 names the seed's user-data in its messages.
const USER_DATA: &str = "NoCloud user-data";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recording;

    fn plan(cmdline: &str) -> BootPlan {
        crate::plan::plan(cmdline)
    }

    fn fake_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let nr = dir.path().join(NEWROOT);
        for d in [
            "usr/bin",
            "usr/sbin",
            "usr/share/berth/etc/ssh",
            "etc",
            "var",
            "home",
            "opt",
            "srv",
            "mnt",
            "media",
            "tmp",
            "dev",
            "proc",
            "sys",
            "run",
        ] {
            std::fs::create_dir_all(nr.join(d)).expect("mkdir");
        }
        std::fs::write(nr.join(BERTH), b"").expect("berth");
        std::fs::write(nr.join("usr/sbin/mkfs.ext4"), b"").expect("mkfs");
        std::fs::write(nr.join("usr/share/berth/etc/hostname"), b"berth\n").expect("etc");
        std::fs::write(nr.join("usr/share/berth/etc/ssh/sshd_config"), b"x").expect("etc");
        std::os::unix::fs::symlink("/proc/self/mounts", nr.join("usr/share/berth/etc/fstab"))
            .expect("symlink");
        std::fs::create_dir_all(dir.path().join("sys/class/block")).expect("sys");
        dir
    }

    fn add_disk(root: &Path, name: &str, size: u64) -> PathBuf {
        let sys = root.join("sys/class/block").join(name);
        std::fs::create_dir_all(&sys).expect("mkdir");
        std::fs::write(
            sys.join("uevent"),
            format!("DEVTYPE=disk\nDEVNAME={name}\n"),
        )
        .expect("w");
        std::fs::write(sys.join("size"), (size / 512).to_string()).expect("w");
        let node = root.join("dev").join(name);
        std::fs::create_dir_all(root.join("dev")).expect("dev");
        std::fs::File::create(&node)
            .and_then(|f| f.set_len(size))
            .expect("disk");
        node
    }

    fn rel(root: &Path, calls: &[String]) -> Vec<String> {
        let r = root.to_string_lossy().to_string();
        calls.iter().map(|c| c.replace(&r, "")).collect()
    }

    #[test]
    fn early_mounts_tolerate_already_mounted() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut sys = Recording {
            mount_fails: vec![(root.path().join("dev"), libc::EBUSY)],
            ..Recording::default()
        };
        early_mounts(&mut sys, root.path()).expect("mounts");
        assert_eq!(
            rel(root.path(), &sys.calls),
            [
                "mount proc /proc proc [nosuid,nodev,noexec] ",
                "mount sysfs /sys sysfs [nosuid,nodev,noexec] ",
                "mount devtmpfs /dev devtmpfs [nosuid] mode=0755",
                "mount tmpfs /run tmpfs [nosuid,nodev] mode=0755",
            ]
        );
        let mut sys = Recording {
            mount_fails: vec![(root.path().join("sys"), libc::ENODEV)],
            ..Recording::default()
        };
        assert!(early_mounts(&mut sys, root.path()).is_err());
    }

    #[test]
    fn no_iso_is_an_error_that_names_what_was_seen() {
        let root = fake_root();
        add_disk(root.path(), "vda", 1 << 20);
        let mut sys = Recording::default();
        let e = mount_image(&mut sys, root.path(), &plan("berth.wait=0")).expect_err("no iso");
        let text = e.to_string();
        assert!(text.contains("BERTH_ISO") && text.contains("vda"), "{text}");
    }

    #[test]
    fn iso_then_loop_then_squashfs() {
        let root = fake_root();
        // A crafted ISO descriptor on "sr0".
        let node = add_disk(root.path(), "sr0", 64 * 2048);
        let mut img = std::fs::read(&node).expect("read");
        let p = 16 * 2048;
        img[p] = 1;
        img[p + 1..p + 6].copy_from_slice(b"CD001");
        img[p + 40..p + 72].copy_from_slice(format!("{:<32}", "BERTH_ISO").as_bytes());
        std::fs::write(&node, img).expect("write");
        let mut sys = Recording::default();
        mount_image(&mut sys, root.path(), &plan("")).expect("image");
        assert_eq!(
            rel(root.path(), &sys.calls),
            [
                "mount /dev/sr0 /run/berth/iso iso9660 [ro,nosuid,nodev] ",
                "loop /run/berth/iso/berth/rootfs.squashfs",
                "mount /dev/loop0 /sysroot squashfs [ro] ",
            ]
        );
    }

    #[test]
    fn slot_partition_by_name() {
        let root = fake_root();
        let sysdir = root.path().join("sys/class/block/vda2");
        std::fs::create_dir_all(&sysdir).expect("mkdir");
        std::fs::write(
            sysdir.join("uevent"),
            "DEVTYPE=partition\nDEVNAME=vda2\nPARTNAME=BERTH_B\n",
        )
        .expect("w");
        std::fs::write(sysdir.join("size"), "1000").expect("w");
        let mut sys = Recording::default();
        mount_image(&mut sys, root.path(), &plan("berth.slot=b")).expect("image");
        assert_eq!(
            rel(root.path(), &sys.calls),
            ["mount /dev/vda2 /sysroot squashfs [ro] "]
        );
        let e = mount_image(&mut sys, root.path(), &plan("berth.slot=A berth.wait=0"))
            .expect_err("no A");
        assert!(e.to_string().contains("BERTH_A"));
    }

    #[test]
    fn state_falls_back_to_ram_and_says_so() {
        let root = fake_root();
        let mut sys = Recording::default();
        let s = mount_state(&mut sys, root.path(), &plan("berth.state.wait=false")).expect("state");
        assert_eq!(s, State::Ram);
        assert_eq!(
            rel(root.path(), &sys.calls),
            ["mount tmpfs /run/berth/state tmpfs [nosuid,nodev] mode=0755"]
        );
        let e = mount_state(
            &mut sys,
            root.path(),
            &plan("berth.state.wait=false berth.state.required=true"),
        )
        .expect_err("required");
        assert!(matches!(e, Error::StateRequired { .. }));
    }

    #[test]
    fn autoformat_refuses_a_disk_with_data() {
        let root = fake_root();
        let disk = add_disk(root.path(), "vda", 128 << 20);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .expect("open");
        use std::io::{Seek, SeekFrom, Write};
        f.seek(SeekFrom::Start(700 << 10)).expect("seek");
        f.write_all(b"precious").expect("write");
        drop(f);
        let before = std::fs::read(&disk).expect("read");
        let mut sys = Recording::default();
        let s = mount_state(
            &mut sys,
            root.path(),
            &plan("berth.state.wait=false berth.state.autoformat=/dev/vda"),
        )
        .expect("state");
        assert_eq!(s, State::Ram);
        assert_eq!(
            std::fs::read(&disk).expect("read"),
            before,
            "not one byte changed"
        );
        assert!(!sys.calls.iter().any(|c| c.contains("mkfs")));
    }

    #[test]
    fn autoformat_partitions_and_formats_a_blank_disk() {
        let root = fake_root();
        let disk = add_disk(root.path(), "vda", 128 << 20);
        // The partition node the kernel would create after BLKRRPART.
        std::fs::write(root.path().join("dev/vda1"), b"").expect("part");
        let mut sys = Recording::default();
        let s = mount_state(
            &mut sys,
            root.path(),
            &plan("berth.state.wait=false berth.state.autoformat=/dev/vda"),
        )
        .expect("state");
        assert_eq!(s, State::Formatted(root.path().join("dev/vda1")));
        assert_eq!(
            rel(root.path(), &sys.calls),
            [
                "rereadpt /dev/vda",
                "mount /dev /sysroot/dev  [bind,rec] ",
                "mount /proc /sysroot/proc  [bind,rec] ",
                "mount /sys /sysroot/sys  [bind,rec] ",
                "chroot-run /sysroot /usr/sbin/mkfs.ext4 -q -F -L BERTH_STATE /dev/vda1",
                "umount /sysroot/sys detach",
                "umount /sysroot/proc detach",
                "umount /sysroot/dev detach",
                "mount /dev/vda1 /run/berth/state ext4 [nosuid,nodev] ",
            ]
        );
        let data = std::fs::read(&disk).expect("read");
        assert_eq!(&data[512..520], b"EFI PART");
    }

    #[test]
    fn assemble_seeds_etc_binds_state_and_moves_api_mounts() {
        let root = fake_root();
        let mut sys = Recording::default();
        assemble(&mut sys, root.path()).expect("assemble");
        assert_eq!(
            rel(root.path(), &sys.calls),
            [
                "mount tmpfs /sysroot/etc tmpfs [nosuid,nodev] mode=0755",
                "mount /run/berth/state/var /sysroot/var  [bind] ",
                "mount /run/berth/state/home /sysroot/home  [bind] ",
                "mount /run/berth/state/opt /sysroot/opt  [bind] ",
                "mount /run/berth/state/srv /sysroot/srv  [bind] ",
                "mount /run/berth/state/mnt /sysroot/mnt  [bind] ",
                "mount /run/berth/state/media /sysroot/media  [bind] ",
                "mount /sysroot/var/lib/docker /sysroot/var/lib/docker  [bind] ",
                "mount none /sysroot/home  [shared] ",
                "mount none /sysroot/opt  [shared] ",
                "mount none /sysroot/srv  [shared] ",
                "mount none /sysroot/mnt  [shared] ",
                "mount none /sysroot/media  [shared] ",
                "mount none /sysroot/var/lib/docker  [shared] ",
                "mount tmpfs /sysroot/tmp tmpfs [nosuid,nodev] mode=1777",
                "mount /dev /sysroot/dev  [move] ",
                "mount /proc /sysroot/proc  [move] ",
                "mount /sys /sysroot/sys  [move] ",
                "mount /run /sysroot/run  [move] ",
            ]
        );
        let etc = root.path().join(NEWROOT).join("etc");
        assert_eq!(
            std::fs::read_to_string(etc.join("hostname")).expect("hostname"),
            "berth\n"
        );
        assert!(etc.join("ssh/sshd_config").exists());
        assert_eq!(
            std::fs::read_link(etc.join("fstab")).expect("link"),
            Path::new("/proc/self/mounts")
        );
        assert!(std::fs::symlink_metadata(etc.join("mtab")).is_ok());
    }

    #[test]
    fn assemble_refuses_a_root_without_berth() {
        let root = fake_root();
        std::fs::remove_file(root.path().join(NEWROOT).join(BERTH)).expect("rm");
        let e = assemble(&mut Recording::default(), root.path()).expect_err("not berth");
        assert!(e.to_string().contains("usr/bin/berth"), "{e}");
    }

    #[test]
    fn switch_root_frees_the_initramfs_and_execs_stage_2() {
        let root = fake_root();
        std::fs::write(root.path().join("init"), b"binary").expect("init");
        std::fs::create_dir_all(root.path().join("lib/modules/6.1/kernel")).expect("mkdir");
        std::fs::write(root.path().join("lib/modules/6.1/modules.dep"), b"").expect("w");
        let mut sys = Recording::default();
        let e = switch_root(&mut sys, root.path(), true);
        assert!(e.to_string().contains("exec"), "{e}");
        assert_eq!(
            rel(root.path(), &sys.calls),
            [
                "chdir /sysroot",
                // The target is the (temporary) root itself.
                "mount .   [move] ",
                "chroot .",
                "chdir /",
                "exec /usr/bin/berth as init",
            ]
        );
        let left: Vec<_> = std::fs::read_dir(root.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from(NEWROOT)]);
        assert!(
            root.path().join(NEWROOT).join(BERTH).exists(),
            "the new root is kept"
        );
    }
}
