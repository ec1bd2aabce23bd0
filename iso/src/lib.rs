//! Boot media for Berth, shared by the build (`cargo xtask build`) and, later, the
//! on-target installer/upgrader: the kernel (Debian's `linux-image-amd64`), the
//! module closure, the initramfs (cpio newc + zstd, written here), the
//! `rootfs.squashfs` staging tree, the GRUB configuration and the hybrid
//! BIOS/UEFI ISO. The layout contract with PID 1 is in `iso/README.md`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod bootloader;
pub mod cpio;
pub mod disk;
pub mod esp;
pub mod grub;
pub mod hardlink;
pub mod initramfs;
pub mod install;
pub mod iso;
pub mod kernel;
pub mod kernel_args;
pub mod modules;
pub mod rootfs;
pub mod slots;
pub mod testing;

/// The ISO 9660 volume id PID 1 looks for to find the live medium.
pub const ISO_VOLUME_ID: &str = "BERTH_ISO";
/// Where the OS image sits on the ISO.
pub const ISO_ROOTFS_PATH: &str = "berth/rootfs.squashfs";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot run `{program}`: {source} (is it installed?)")]
    Spawn { program: String, source: io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{0}")]
    Kernel(String),
    #[error("module `{name}` is neither in modules.dep nor built in (needed by {needed_by})")]
    MissingModule { name: String, needed_by: String },
    #[error("{}:{line}: malformed line: {text}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("cpio entry `{name}`: {reason}")]
    Cpio { name: String, reason: &'static str },
    #[error("{0}")]
    Disk(String),
    #[error(transparent)]
    Gpt(#[from] berth_sys::gpt::Error),
    #[error("staging image {reference}: {source}")]
    Image {
        reference: String,
        source: berth_images::StoreError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `cmd`, returning its stdout; a failure carries the command line and stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let command = std::iter::once(program.clone())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    log::debug!("running {command}");
    let output = cmd
        .output()
        .map_err(|source| Error::Spawn { program, source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The tail is where tools put the reason; whole logs drown it.
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(Error::Command {
            command,
            status: output.status,
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(output.stdout)
}
