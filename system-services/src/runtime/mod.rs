//! berthd's container runtime layer (ARCHITECTURE.md §3–§4).
//!
//! ```text
//!  berthd (later multi-threaded)                   forker (single-threaded, forked first)
//!  ─────────────────────────────                   ─────────────────────────────────────
//!  Youki::create: bundle dir, overlay root,
//!  spec (spec::generate) → config.json,
//!  stdout/stderr FIFOs ── create + fds (SCM_RIGHTS) ──▶ libcontainer build(as_sibling)
//!                       ◀──────── init pid ──────────   (init becomes berthd's child)
//!  pidfd_open(init) ─ reap with waitid(P_PIDFD)
//!  delete of a reaped init: cgroup rmdir, state removed (no forker round trip);
//!  the bundle renamed into removing/, unmounted and removed on a thread
//! ```
//!
//! A container's stdout and stderr are named pipes in its bundle, opened
//! read-write on the container's side: they outlive berthd, so a berthd that
//! restarts reattaches to them ([`Runtime::reattach`]) and the logs continue.
//!
//! The supervisor talks to the [`Runtime`] trait only, so it can be tested with a
//! [`Recording`] implementation; [`youki::Youki`] is the real one.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_configs::model::Service;
use berth_images::oci::RunConfig;

pub mod cgroups;
pub mod forker;
pub mod recording;
pub mod seccomp;
pub mod spec;
pub mod youki;

pub use berth_sys::process::SignalFate;
pub use forker::{Forker, ForkerError};
pub use nix::sys::signal::Signal;
pub use recording::Recording;
pub use spec::SpecError;
pub use youki::{Youki, YoukiConfig};

/// What to create: one container for one service.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The container id (letters, digits, `_+-.`); usually the service name.
    pub id: String,
    /// The service it runs; names its cgroup (`/berth/<service>`) and hostname.
    pub service_name: String,
    pub service: Service,
    pub image: ImageLayers,
    /// `berth.environment`: given to every system service, below its own environment.
    pub environment: BTreeMap<String, String>,
    /// For `network_mode: service:NAME`: that service's `/proc/PID/ns/net`.
    pub service_network: Option<PathBuf>,
    /// `write_files` entries that go into this container's own filesystem,
    /// written into its fresh root before it starts.
    pub files: Vec<crate::host::write_files::Entry>,
}

/// An image as the runtime uses it: unpacked layer directories and the config.
#[derive(Debug, Clone, Default)]
pub struct ImageLayers {
    /// Layer directories in image order, base first (as the manifest lists them).
    pub layers: Vec<PathBuf>,
    pub config: RunConfig,
}

/// A created (not yet started) container.
#[derive(Debug)]
pub struct Created {
    pub id: String,
    /// The container's init, a child of this process.
    pub pid: i32,
    /// A pidfd of the init: readable once it exits (for an event loop); then
    /// [`Runtime::try_wait`] reaps it. `None` from runtimes without real processes.
    pub pidfd: Option<OwnedFd>,
    /// Read ends of the container's stdout and stderr (possibly non-blocking).
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Read ends of a running container's stdout and stderr, opened again.
#[derive(Debug)]
pub struct Output {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// How a container's init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }

    /// The shell's view: the code, or 128 + the signal.
    pub fn code(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// What [`Runtime::exec`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// `None` when it ran past its timeout and was killed.
    pub exit: Option<Exit>,
    /// The start of its stdout and stderr, interleaved (at most 4 KiB).
    pub output: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
    Paused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    pub pid: Option<i32>,
    /// Set once the init has been reaped.
    pub exit: Option<Exit>,
}

/// The runtime operations the supervisor needs. Implementations are shared across
/// the supervisor's tasks; every call blocks briefly (use `spawn_blocking` from async code).
pub trait Runtime: Send + Sync {
    /// Prepares the root and creates the container; its init waits for [`Runtime::start`].
    fn create(&self, config: &ContainerConfig) -> Result<Created, RuntimeError>;
    /// Runs the container's process.
    fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Sends `signal` to the container's init.
    fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError>;
    /// What `signal` comes to in the container's init now (see
    /// [`SignalFate::Dropped`]); `None` when this runtime cannot tell.
    fn signal_fate(&self, id: &str, signal: Signal) -> Option<SignalFate> {
        let _ = (id, signal);
        None
    }
    /// Kills whatever still runs in the container, reaps its init, removes its cgroup,
    /// state and root. The id can be created again when this returns; a runtime
    /// may finish unmounting and removing the root after that.
    fn delete(&self, id: &str) -> Result<(), RuntimeError>;
    fn state(&self, id: &str) -> Result<ContainerState, RuntimeError>;
    /// Reaps the init if it has exited; `Ok(None)` while it runs. Repeated calls
    /// after the exit return the same status.
    fn try_wait(&self, id: &str) -> Result<Option<Exit>, RuntimeError>;

    /// Runs `argv` inside the running container `id` (healthchecks) and waits
    /// for it at most `timeout`, killing it then. Runtimes without it say so.
    fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let _ = (argv, timeout);
        Err(RuntimeError::Container {
            id: id.into(),
            step: "exec",
            message: "this runtime cannot run commands in containers".into(),
        })
    }

    /// The mounted root filesystem of container `id`, as the host sees it, if
    /// this runtime has one (where a config reload writes new `write_files`).
    fn root_of(&self, _id: &str) -> Option<PathBuf> {
        None
    }

    /// Opens the output of container `id`, created by an earlier instance of
    /// berthd, again (re-adoption): read ends of its stdout and stderr.
    /// `Ok(None)` when this runtime (or the container) cannot reattach.
    fn reattach(&self, id: &str) -> Result<Option<Output>, RuntimeError> {
        let _ = id;
        Ok(None)
    }

    /// Polls [`Runtime::try_wait`] until the init exits or `timeout` passes.
    fn wait_timeout(&self, id: &str, timeout: Duration) -> Result<Option<Exit>, RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_wait(id)? {
                return Ok(Some(exit));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Why a runtime operation failed: which container, which step, and the cause.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("container `{id}`: {step}: {source}")]
    Io {
        id: String,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("container `{id}`: assembling the root: {source}")]
    Rootfs {
        id: String,
        source: berth_images::rootfs::RootfsError,
    },
    /// libcontainer (in the forker) refused or failed.
    #[error("container `{id}`: {step}: {message}")]
    Container {
        id: String,
        step: &'static str,
        message: String,
    },
    #[error("container `{id}` is not known to this runtime")]
    Unknown { id: String },
    #[error("container `{id}`: {step}: {source}")]
    Forker {
        id: String,
        step: &'static str,
        source: ForkerError,
    },
}
