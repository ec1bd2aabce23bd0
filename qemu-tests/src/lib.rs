//! A harness for booting Berth in QEMU: the QEMU process (killed when the
//! [`Vm`] is dropped, and by the kernel if the test process dies), the serial
//! console as a pipe with [`Vm::expect`], host-forwarded ports, NoCloud seeds,
//! blank disks, BIOS and UEFI (OVMF) firmware. TCG unless `BERTH_QEMU_KVM=1`.
//!
//! Tests that need built artifacts read their paths from the environment
//! (`cargo xtask test` sets them; see [`Artifacts`]) and skip with a recorded
//! reason when they are absent (berth-testkit; `cargo xtask test` lists skips
//! and fails on them under `CI=true`).

mod config;
mod media;
pub mod metadata;
mod net;
pub mod registry;
pub mod ssh;
pub mod steps;
mod vm;

pub use config::{free_udp_port, ovmf, Boot, Config, Drive, Firmware, Link, Nic};
pub use media::{
    baseline_initrd, blank_disk, configdrive, nocloud_seed, overlay, state_superblock,
    superblock_is_clean,
};
pub use net::{free_port, relay_command, DnsNetns};
pub use vm::{baseline_append, berth_append, berth_lines, Vm, PRIORITY_ENV, SLOTS_ENV, TIMES_ENV};

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What the kernel-only baseline's `/init` prints before powering off.
pub const BASELINE_MARKER: &str = "BERTH-BASELINE-INIT-RAN";
/// The kernel's line when it hands over to the initramfs' `/init`.
pub const KERNEL_HANDOVER: &str = "Run /init as init process";
/// PID 1's first line in the initramfs (init/src/stage1.rs; console.rs
/// prefixes every line with `berth: `).
pub const INIT_MARKER: &str = "berth: stage 1";
/// PID 1 after switch_root into the OS image.
pub const STAGE2_MARKER: &str = "berth: stage 2";
/// The line berthd prints when every default service is up.
pub const READY_MARKER: &str = "berth: system ready";

/// A cloud-config fragment (the end of a `#cloud-config` document) that
/// turns the docker engine off, for tests that never use it: without it a
/// boot is ready about half a minute of emulated CPU sooner (containerd and
/// dockerd are 46 and 72 MiB of Go loaded from squashfs). A macro, so that
/// `concat!` can append it to a literal.
#[macro_export]
macro_rules! no_engine {
    () => {
        "berth:\n  services:\n    docker: null\n"
    };
}

/// At most this many VMs run at once on the machine, across test threads and
/// processes: the machines have two cores and TCG is CPU-bound.
pub const MAX_VMS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot run `{program}`: {source} (install it, or run `cargo xtask test`, which does)"
    )]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error(transparent)]
    Registry(#[from] berth_testkit::registry::Error),
    #[error(
        "{vm}: no `{pattern}` on the console after {waited:?}\n{}",
        fence(transcript)
    )]
    Timeout {
        vm: String,
        pattern: String,
        waited: Duration,
        transcript: String,
    },
    #[error(
        "{vm}: QEMU exited ({status}) before `{pattern}` appeared\n{}",
        fence(transcript)
    )]
    Exited {
        vm: String,
        pattern: String,
        status: String,
        transcript: String,
    },
    #[error("no OVMF firmware found (looked for {0}); install the `ovmf` package")]
    NoOvmf(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A transcript for a failure message. Berth's own lines and the last lines
/// come first: CI shows the head and the tail of a long output, and the
/// middle of a whole transcript is where a hang's last words would be lost.
fn fence(transcript: &str) -> String {
    const LAST: usize = 40;
    let last_of = |lines: Vec<&str>| lines[lines.len().saturating_sub(LAST)..].join("\n");
    let own = last_of(berth_lines(transcript).lines().collect());
    let tail = last_of(transcript.lines().collect());
    format!(
        "----- Berth's last {LAST} lines -----\n{own}\n----- the console's last {LAST} lines -----\n{tail}\n----- console transcript -----\n{transcript}\n----- end of transcript -----"
    )
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Paths of the built artifacts, from the environment `cargo xtask test` sets.
#[derive(Debug, Clone)]
pub struct Artifacts;

impl Artifacts {
    pub const VMLINUZ: &'static str = "BERTH_VMLINUZ";
    pub const INITRD: &'static str = "BERTH_INITRD";
    pub const ISO: &'static str = "BERTH_ISO";
    /// The disk images: raw and qcow2.
    pub const DISK: &'static str = "BERTH_DISK";
    pub const QCOW2: &'static str = "BERTH_QCOW2";

    /// The path in `var`, or `None` after recording why the caller skips
    /// (berth-testkit: `cargo xtask test` counts it).
    /// (`_test` is kept for the callers; berth-testkit names the test.)
    pub fn get(var: &str, _test: &str) -> Option<PathBuf> {
        match std::env::var_os(var).map(PathBuf::from) {
            Some(p) if p.exists() => Some(p),
            Some(p) => {
                berth_testkit::skip!("{var}={} does not exist", p.display());
                None
            }
            None => {
                berth_testkit::skip!(
                    "{var} is not set (`cargo xtask test` builds the artifacts and sets it)"
                );
                None
            }
        }
    }
}

/// Runs `program` to completion: its stdout, or an error with its stderr.
pub fn run_checked(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            program: program.into(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
