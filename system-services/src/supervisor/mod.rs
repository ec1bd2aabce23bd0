//! The service manager: turns `berth.services` into supervised containers.
//!
//! One *manager* thread owns every service's state and is the only one to
//! decide anything; everything slow or blocking happens in helper threads that
//! report back as [`Event`]s on one channel:
//!
//! ```text
//!   starter thread (per start)   image → create → capture logs → start ─┐
//!   waiter thread (per container) pidfd readable → try_wait ─────────────┤
//!   health thread (per container) check every interval ──────────────────┼─▶ manager
//!   Supervisor handle (API)       start/stop/restart/reconcile/shutdown ─┘    (timers for
//!                                                                              backoff, SIGKILL)
//! ```
//!
//! After every event the manager asks the [`Graph`] which waiting services may
//! start, and publishes a [`Snapshot`] that readers (the API) use without ever
//! waiting for the manager. A crash-looping service only ever costs a timer and
//! a starter thread per attempt, so it cannot hold others back.
//!
//! State for re-adoption lives in `<run_dir>/services/<name>.json` beside the
//! runtime's own: when berthd starts and the runtime says a service's container
//! still runs its current definition, it is adopted instead of started again.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_configs::model::{RestartPolicy, Service};
use berth_images::Store;
use serde::{Deserialize, Serialize};

use crate::graph::{Graph, GraphError, State};
use crate::health::{self, Check, Health, Settings, Tracker};
use crate::logs::{self, LogDir, Stream};
use crate::runtime::{ContainerConfig, Exit, ImageLayers, Runtime, Signal, SignalFate, Status};
use crate::timeline::{self, Entry, Timeline};

mod adoption;
mod commands;
mod images;
mod manager;
mod stopping;

#[cfg(test)]
use adoption::Saved;
pub use images::{FixedImages, ImageError, Images, StoreImages};
pub use manager::LaunchError;
use manager::*;
use stopping::*;

/// Restart backoff: `initial`, doubling up to `max`; back to `initial` once a
/// run lasted `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Backoff {
    /// The delay after `delay`: twice as long, at most `max`.
    pub fn next(&self, delay: Duration) -> Duration {
        (delay * 2).min(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// How the supervisor runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Re-adoption state goes to `<run_dir>/services/` (`/run/berth`).
    pub run_dir: PathBuf,
    pub backoff: Backoff,
    /// `stop_grace_period` when a service has none.
    pub stop_grace: Duration,
    /// `berth.environment`, given to every service.
    pub environment: BTreeMap<String, String>,
    /// `write_files` entries for each service's own filesystem; the daemon
    /// replaces them when the config changes.
    pub files: Arc<Mutex<ServiceFiles>>,
    /// How long the `after_ready` services wait for the boot to be ready at most.
    pub after_ready_at_the_latest: Duration,
}

/// `write_files` entries by the service whose filesystem they go into.
pub type ServiceFiles = BTreeMap<String, Vec<crate::host::write_files::Entry>>;

/// How long after berthd's start the `after_ready` services start at the
/// latest: longer than a boot with the engine takes under emulation on a
/// loaded machine, as PID 1 waits for its own work kept for after the ready
/// line; a service that never gets ready then holds them back no longer.
pub const AFTER_READY_AT_THE_LATEST: Duration = Duration::from_secs(60);

impl Options {
    pub fn new(run_dir: impl Into<PathBuf>) -> Options {
        Options {
            run_dir: run_dir.into(),
            backoff: Backoff::default(),
            stop_grace: Duration::from_secs(10),
            environment: BTreeMap::new(),
            files: Arc::default(),
            after_ready_at_the_latest: AFTER_READY_AT_THE_LATEST,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no service named `{name}`")]
    UnknownService { name: String },
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("berthd is shutting down")]
    ShuttingDown,
    #[error("another config change is still being applied; try again")]
    Busy,
    #[error("the service manager has stopped")]
    Gone,
    #[error("cannot start the service manager: {0}")]
    Spawn(#[source] std::io::Error),
}

pub use berth_api::{Phase, ReconcileReport, ServiceStatus};

/// What the API reads: published by the manager after every event.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub services: Vec<ServiceStatus>,
    pub timeline: Timeline,
    /// The running privileged services (name, init's pid): their `/dev` holds
    /// the host's device nodes, kept in step by `host::devices`.
    pub host_devices: Vec<(String, i32)>,
    /// The manager has finished (after shutdown).
    pub finished: bool,
}

impl Snapshot {
    pub fn service(&self, name: &str) -> Option<&ServiceStatus> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[derive(Debug)]
struct Shared {
    snapshot: Mutex<Snapshot>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handle: cheap to share (`Arc`) between the API's threads.
#[derive(Debug)]
pub struct Supervisor {
    tx: Mutex<Sender<Event>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Command {
    Start(String),
    Stop(String),
    Restart(String),
    Reconcile(BTreeMap<String, Service>),
    Shutdown,
    /// Ends the manager and leaves every container as it is (a berthd that dies).
    #[cfg(test)]
    Abandon,
}

type Reply = SyncSender<Result<Option<ReconcileReport>, SupervisorError>>;

/// A container that is up, as its starter thread reports it.
struct Launched {
    pid: i32,
    pidfd: Option<OwnedFd>,
    created: Duration,
    started: Duration,
}

enum Event {
    Launched {
        name: String,
        gen: u64,
        result: Result<Launched, LaunchError>,
    },
    Exited {
        name: String,
        gen: u64,
        exit: Option<Exit>,
    },
    Health {
        name: String,
        gen: u64,
        result: Result<(), health::CheckError>,
    },
    Command(Command, Reply),
}

impl Supervisor {
    /// Adopts what still runs from a previous berthd, then starts `services`
    /// as their dependencies allow, in a manager thread of its own.
    pub fn start(
        runtime: Arc<dyn Runtime>,
        images: Arc<dyn Images>,
        logs: Arc<LogDir>,
        options: Options,
        services: BTreeMap<String, Service>,
    ) -> Result<Supervisor, SupervisorError> {
        let graph = Graph::new(&services)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            snapshot: Mutex::new(Snapshot::default()),
            changed: Condvar::new(),
        });
        let after_ready_by = Instant::now() + options.after_ready_at_the_latest;
        let mut manager = Manager {
            runtime,
            images,
            logs,
            backoff: options.backoff,
            options,
            tx: tx.clone(),
            shared: Arc::clone(&shared),
            services: BTreeMap::new(),
            graph,
            timers: BinaryHeap::new(),
            stop_job: None,
            shutting_down: false,
            finished: false,
            berthd_started: timeline::since_boot(),
            next_seq: 0,
            boot_ready: false,
            after_ready_by,
        };
        for (name, def) in services {
            manager
                .services
                .insert(name, Svc::new(def, manager.backoff.initial));
        }
        // Publish the declared services before anyone can ask: an API reader
        // (PID 1 waiting for "system ready") must never see an empty list.
        manager.publish();
        let thread = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || manager.run(rx))
            .map_err(SupervisorError::Spawn)?;
        Ok(Supervisor {
            tx: Mutex::new(tx),
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().clone()
    }

    pub fn services(&self) -> Vec<ServiceStatus> {
        self.shared.lock().services.clone()
    }

    pub fn service(&self, name: &str) -> Option<ServiceStatus> {
        self.shared.lock().service(name).cloned()
    }

    pub fn timeline(&self) -> Timeline {
        self.shared.lock().timeline.clone()
    }

    /// Waits until `pred` holds for the published snapshot, at most `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Snapshot) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut snap = self.shared.lock();
        loop {
            if pred(&snap) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || snap.finished {
                return pred(&snap);
            }
            snap = self
                .shared
                .changed
                .wait_timeout(snap, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn command(&self, command: Command) -> Result<Option<ReconcileReport>, SupervisorError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Event::Command(command, reply))
            .map_err(|_| SupervisorError::Gone)?;
        answer.recv().map_err(|_| SupervisorError::Gone)?
    }

    /// Starts a stopped, exited or failed service (restart counters reset) and
    /// waits up to `wait` for it to be up (or to give up).
    pub fn start_service(
        &self,
        name: &str,
        wait: Duration,
    ) -> Result<ServiceStatus, SupervisorError> {
        self.command(Command::Start(name.to_string()))?;
        self.settle(name, wait, |s| {
            s.ready
                || !matches!(s.state, Phase::Waiting | Phase::Starting) && s.state != Phase::Running
        })
    }

    /// Stops a service (stop signal, SIGKILL after its grace period); it stays
    /// stopped until started again. Returns once it has stopped.
    pub fn stop_service(&self, name: &str) -> Result<ServiceStatus, SupervisorError> {
        self.command(Command::Stop(name.to_string()))?;
        self.settle(name, Duration::from_secs(120), |s| {
            !matches!(s.state, Phase::Starting | Phase::Running | Phase::Stopping)
        })
    }

    /// Stops and starts a service again.
    pub fn restart_service(
        &self,
        name: &str,
        wait: Duration,
    ) -> Result<ServiceStatus, SupervisorError> {
        let before = self.service(name).and_then(|s| s.pid);
        self.command(Command::Restart(name.to_string()))?;
        self.settle(name, wait, |s| {
            (s.ready && s.state == Phase::Running && (s.pid != before || before.is_none()))
                || matches!(s.state, Phase::Failed | Phase::Exited | Phase::Restarting)
        })
    }

    fn settle(
        &self,
        name: &str,
        wait: Duration,
        done: impl Fn(&ServiceStatus) -> bool,
    ) -> Result<ServiceStatus, SupervisorError> {
        self.wait_for(wait, |snap| snap.service(name).is_none_or(&done));
        self.service(name)
            .ok_or_else(|| SupervisorError::UnknownService {
                name: name.to_string(),
            })
    }

    /// Applies a new set of services: removed ones stop, changed ones (and
    /// their `restart: true` dependents) are recreated, new ones start; the
    /// rest are not touched. Returns once the old containers are stopped.
    pub fn reconcile(
        &self,
        services: BTreeMap<String, Service>,
    ) -> Result<ReconcileReport, SupervisorError> {
        self.command(Command::Reconcile(services))
            .map(Option::unwrap_or_default)
    }

    /// Ends the manager without stopping anything, as if berthd died.
    #[cfg(test)]
    fn abandon(&self) {
        let _ = self.command(Command::Abandon);
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
    }

    /// Stops every service in reverse dependency order and ends the manager.
    pub fn shutdown(&self) -> Result<(), SupervisorError> {
        let result = self.command(Command::Shutdown).map(|_| ());
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
        match result {
            Err(SupervisorError::Gone) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
