//! The new root: the OS image's tree with state, /run and the API
//! filesystems in place.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::sys::Sys;

use super::*;

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
    // `/tmp` is one view too (`docker run -v /tmp/work:/w` typed in the console),
    // in memory and empty at each boot as on most distributions.
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
        mount(
            sys,
            "/tmp shared",
            "none",
            &newroot.join("tmp"),
            "",
            libc::MS_SHARED,
            "",
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
