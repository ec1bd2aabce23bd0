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
use std::sync::atomic::{AtomicBool, Ordering};
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
use crate::runtime::{ContainerConfig, Exit, ImageLayers, Runtime, Signal, Status};
use crate::timeline::{self, Entry, Timeline};

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
}

/// `write_files` entries by the service whose filesystem they go into.
pub type ServiceFiles = BTreeMap<String, Vec<crate::host::write_files::Entry>>;

impl Options {
    pub fn new(run_dir: impl Into<PathBuf>) -> Options {
        Options {
            run_dir: run_dir.into(),
            backoff: Backoff::default(),
            stop_grace: Duration::from_secs(10),
            environment: BTreeMap::new(),
            files: Arc::default(),
        }
    }
}

/// Where service images come from.
pub trait Images: Send + Sync {
    /// The unpacked layers and config of `reference`.
    fn layers(&self, reference: &str) -> Result<ImageLayers, String>;
}

/// Images from Berth's OCI store, layers unpacked on first use.
#[derive(Debug)]
pub struct StoreImages {
    store: Store,
}

impl StoreImages {
    pub fn new(store: Store) -> StoreImages {
        StoreImages { store }
    }
}

impl Images for StoreImages {
    fn layers(&self, reference: &str) -> Result<ImageLayers, String> {
        let image = self
            .store
            .resolve(reference)
            .map_err(|e| format!("image `{reference}`: {e}"))?;
        let layers = self
            .store
            .unpack_image(
                &image,
                &berth_images::unpack::Limits::default(),
                &berth_images::progress::Quiet,
            )
            .map_err(|e| format!("image `{reference}`: {e}"))?;
        Ok(ImageLayers {
            layers,
            config: image.config.config.clone(),
        })
    }
}

/// The same layers for every reference (tests, or a single system image).
#[derive(Debug, Clone)]
pub struct FixedImages(pub ImageLayers);

impl Images for FixedImages {
    fn layers(&self, _: &str) -> Result<ImageLayers, String> {
        Ok(self.0.clone())
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
        result: Result<Launched, String>,
    },
    Exited {
        name: String,
        gen: u64,
        exit: Option<Exit>,
    },
    Health {
        name: String,
        gen: u64,
        result: Result<(), String>,
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

/// What is known about one service.
#[derive(Debug)]
struct Svc {
    def: Service,
    /// Start it when its dependencies allow (false once stopped by request).
    desired_up: bool,
    phase: Phase,
    /// Counts containers; events from an older one are ignored.
    gen: u64,
    pid: Option<i32>,
    tracker: Option<Tracker>,
    health_stop: Option<Arc<AtomicBool>>,
    ready: bool,
    restarts: u32,
    backoff: Duration,
    started_at: Option<Instant>,
    exit_code: Option<i32>,
    error: Option<String>,
    has_container: bool,
    restart_after_stop: bool,
    adopted: bool,
    timeline: Entry,
    /// Order in the timeline (first creation).
    seq: Option<u64>,
    /// What the saved state last held, to rewrite it only on a change.
    saved: Option<(Phase, u32, bool, Option<i32>)>,
}

impl Svc {
    fn new(def: Service, backoff: Duration) -> Svc {
        Svc {
            def,
            desired_up: true,
            phase: Phase::Waiting,
            gen: 0,
            pid: None,
            tracker: None,
            health_stop: None,
            ready: false,
            restarts: 0,
            backoff,
            started_at: None,
            exit_code: None,
            error: None,
            has_container: false,
            restart_after_stop: false,
            adopted: false,
            timeline: Entry::default(),
            seq: None,
            saved: None,
        }
    }

    fn active(&self) -> bool {
        matches!(
            self.phase,
            Phase::Starting | Phase::Running | Phase::Stopping
        )
    }

    fn graph_state(&self) -> State {
        match self.phase {
            Phase::Waiting | Phase::Stopped => State::Pending,
            Phase::Starting | Phase::Stopping => State::Starting,
            Phase::Running
                if self.tracker.as_ref().map(Tracker::status) == Some(Health::Healthy) =>
            {
                State::Healthy
            }
            Phase::Running => State::Started,
            Phase::Restarting | Phase::Exited => State::Exited(self.exit_code.unwrap_or(-1)),
            Phase::Failed => State::Failed,
        }
    }

    fn stop_health(&mut self) {
        if let Some(flag) = self.health_stop.take() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Restart,
    Kill,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: std::cmp::Reverse<Instant>,
    name: String,
    gen: u64,
    kind: TimerKind,
}

enum AfterStop {
    Shutdown(Reply),
    Reconcile {
        services: BTreeMap<String, Service>,
        graph: Graph,
        report: ReconcileReport,
        reply: Reply,
    },
}

/// Services being stopped: each one as soon as every service of the job that
/// depends on it (directly or not) has stopped, so services with no
/// dependency between them stop in parallel and one slow service holds back
/// only what it depends on.
struct StopJob {
    /// Every service of the job.
    all: BTreeSet<String>,
    /// Not asked to stop yet.
    pending: BTreeSet<String>,
    then: AfterStop,
}

impl StopJob {
    fn new(services: impl IntoIterator<Item = String>, then: AfterStop) -> StopJob {
        let all: BTreeSet<String> = services.into_iter().collect();
        StopJob {
            pending: all.clone(),
            all,
            then,
        }
    }
}

/// Re-adoption state of one service, `<run_dir>/services/<name>.json`,
/// rewritten whenever what it holds changes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    definition: String,
    restarts: u32,
    timeline: Entry,
    /// Where the service was; a berthd that restarts continues from there
    /// (a completed oneshot is not run again, a stopped service stays stopped).
    #[serde(default)]
    phase: Option<Phase>,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    error: Option<String>,
}

struct Manager {
    runtime: Arc<dyn Runtime>,
    images: Arc<dyn Images>,
    logs: Arc<LogDir>,
    options: Options,
    backoff: Backoff,
    tx: Sender<Event>,
    shared: Arc<Shared>,
    services: BTreeMap<String, Svc>,
    graph: Graph,
    timers: BinaryHeap<Timer>,
    stop_job: Option<StopJob>,
    shutting_down: bool,
    finished: bool,
    berthd_started: Duration,
    next_seq: u64,
}

/// A stable fingerprint of a service definition (FNV-1a of its debug form), to
/// tell whether an adopted container still runs the current definition.
fn fingerprint(def: &Service) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{def:?}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

fn policy_text(p: Option<RestartPolicy>) -> String {
    match p.unwrap_or(RestartPolicy::No) {
        RestartPolicy::No => "no".into(),
        RestartPolicy::Always => "always".into(),
        RestartPolicy::UnlessStopped => "unless-stopped".into(),
        RestartPolicy::OnFailure(None) => "on-failure".into(),
        RestartPolicy::OnFailure(Some(n)) => format!("on-failure:{n}"),
    }
}

fn stop_signal(def: &Service) -> Signal {
    let Some(text) = def.stop_signal.as_deref() else {
        return Signal::SIGTERM;
    };
    let upper = text.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .ok()
        .or_else(|| {
            text.trim()
                .parse::<i32>()
                .ok()
                .and_then(|n| Signal::try_from(n).ok())
        })
        .unwrap_or(Signal::SIGTERM)
}

/// Waits until the pidfd is readable (the process exited).
fn wait_pidfd(fd: &OwnedFd) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd that outlives the call; the fd is owned by the caller.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r > 0
            || (r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
        {
            return;
        }
    }
}

impl Manager {
    fn run(mut self, rx: Receiver<Event>) {
        self.adopt();
        self.schedule();
        self.persist();
        self.publish();
        while !self.finished {
            let timeout = self
                .timers
                .peek()
                .map(|t| t.at.0.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(timeout) {
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
                // Every handle is gone: stop as if asked to.
                Err(RecvTimeoutError::Disconnected) => {
                    if !self.shutting_down {
                        let (reply, _) = mpsc::sync_channel(1);
                        self.command(Command::Shutdown, reply);
                    }
                    if self.services.values().all(|s| !s.active()) {
                        self.finished = true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            self.fire_timers();
            self.progress_stop_job();
            self.schedule();
            self.persist();
            self.publish();
        }
        self.publish();
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Launched { name, gen, result } => self.launched(&name, gen, result),
            Event::Exited { name, gen, exit } => self.exited(&name, gen, exit),
            Event::Health { name, gen, result } => self.health(&name, gen, result),
            Event::Command(c, reply) => self.command(c, reply),
        }
    }

    // ----- starting ---------------------------------------------------------

    fn schedule(&mut self) {
        if self.shutting_down {
            return;
        }
        let states: BTreeMap<String, State> = self
            .services
            .iter()
            .map(|(n, s)| (n.clone(), s.graph_state()))
            .collect();
        let plan = self.graph.evaluate(&states);
        for b in plan.blocked {
            if let Some(svc) = self.services.get_mut(&b.service) {
                if svc.phase == Phase::Waiting && svc.desired_up {
                    svc.error = Some(b.to_string());
                }
            }
        }
        for name in plan.ready {
            let go = self
                .services
                .get(&name)
                .is_some_and(|s| s.desired_up && s.phase == Phase::Waiting);
            if go {
                self.launch(&name);
            }
        }
    }

    fn launch(&mut self, name: &str) {
        let network = self.network_of(name);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.gen += 1;
        svc.phase = Phase::Starting;
        svc.error = None;
        svc.ready = false;
        let gen = svc.gen;
        let config = ContainerConfig {
            id: name.to_string(),
            service_name: name.to_string(),
            service: svc.def.clone(),
            image: ImageLayers::default(),
            environment: self.options.environment.clone(),
            service_network: network,
            files: self
                .options
                .files
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(name)
                .cloned()
                .unwrap_or_default(),
        };
        let (runtime, images, logs, tx) = (
            Arc::clone(&self.runtime),
            Arc::clone(&self.images),
            Arc::clone(&self.logs),
            self.tx.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("start {name}"))
            .spawn(move || {
                let name = config.id.clone();
                let result = launch(&*runtime, &*images, &logs, config);
                let _ = tx.send(Event::Launched { name, gen, result });
            });
        if let Err(e) = spawned {
            log::error!("{name}: cannot start a thread to start it: {e}");
            self.start_failed(name, format!("cannot start a thread: {e}"));
        }
    }

    /// `/proc/PID/ns/net` of the service whose network this one joins.
    fn network_of(&self, name: &str) -> Option<PathBuf> {
        let mode = self.services.get(name)?.def.network_mode.as_deref()?;
        let target = mode
            .strip_prefix("service:")
            .or_else(|| mode.strip_prefix("container:"))?;
        let pid = self.services.get(target)?.pid?;
        Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    fn launched(&mut self, name: &str, gen: u64, result: Result<Launched, String>) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.gen != gen || svc.phase != Phase::Starting {
            return;
        }
        let launched = match result {
            Ok(l) => l,
            Err(e) => {
                log::error!("{name}: {e}");
                self.start_failed(name, e);
                return;
            }
        };
        svc.has_container = true;
        svc.pid = Some(launched.pid);
        svc.started_at = Some(Instant::now());
        svc.phase = Phase::Running;
        svc.exit_code = None;
        svc.adopted = false;
        if svc.seq.is_none() {
            svc.seq = Some(self.next_seq);
            self.next_seq += 1;
        }
        svc.timeline = Entry {
            service: name.to_string(),
            created: Some(timeline::secs(launched.created)),
            started: Some(timeline::secs(launched.started)),
            ready: None,
            exited: None,
            restarts: svc.restarts,
        };
        log::info!("{name}: started (pid {})", launched.pid);
        self.watch(name, gen, launched.pidfd, false);
        self.start_health(name);
        if !self.services.get(name).is_some_and(|s| s.desired_up) {
            // Stopped while it was being created.
            self.begin_stop(name);
        }
        self.save(name);
    }

    /// Starts waiting for the container's exit.
    fn watch(&mut self, name: &str, gen: u64, pidfd: Option<OwnedFd>, adopted: bool) {
        let (runtime, tx, id) = (Arc::clone(&self.runtime), self.tx.clone(), name.to_string());
        let spawned = std::thread::Builder::new()
            .name(format!("wait {name}"))
            .stack_size(64 << 10)
            .spawn(move || {
                if let Some(fd) = &pidfd {
                    wait_pidfd(fd);
                }
                let exit = loop {
                    match runtime.try_wait(&id) {
                        Ok(Some(exit)) => break Some(exit),
                        // Exited, but not our child: whoever reaped it has the status.
                        Ok(None) if adopted && pidfd.is_some() => break None,
                        Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                        Err(_) if pidfd.is_some() || !adopted => break None,
                        // Adopted without a pidfd: all there is to go by is the runtime's state.
                        Err(_) => match runtime.state(&id) {
                            Ok(st) if st.status == Status::Running => {
                                std::thread::sleep(Duration::from_millis(100))
                            }
                            _ => break None,
                        },
                    }
                };
                let _ = tx.send(Event::Exited {
                    name: id,
                    gen,
                    exit,
                });
            });
        if let Err(e) = spawned {
            log::error!("{name}: cannot start a thread to wait for it: {e}");
        }
    }

    fn start_health(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.stop_health();
        let check = svc.def.healthcheck.as_ref().and_then(|hc| {
            Check::from_healthcheck(hc).map(|c| (c, Settings::from_healthcheck(hc)))
        });
        let Some((check, settings)) = check else {
            svc.tracker = None;
            self.became_ready(name);
            return;
        };
        let mut tracker = Tracker::new(settings);
        if check == Check::None {
            tracker.record(true);
            svc.tracker = Some(tracker);
            self.became_ready(name);
            return;
        }
        svc.tracker = Some(tracker);
        let Some(pid) = svc.pid else {
            return;
        };
        let stop = Arc::new(AtomicBool::new(false));
        svc.health_stop = Some(Arc::clone(&stop));
        let (tx, id, gen) = (self.tx.clone(), name.to_string(), svc.gen);
        let spawned = health::spawn(
            check,
            settings,
            Arc::clone(&self.runtime),
            name.to_string(),
            pid,
            stop,
            move |result| {
                let _ = tx.send(Event::Health {
                    name: id.clone(),
                    gen,
                    result,
                });
            },
        );
        if let Err(e) = spawned {
            log::error!("{name}: cannot start its healthcheck thread: {e}");
        }
    }

    fn health(&mut self, name: &str, gen: u64, result: Result<(), String>) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.gen != gen || svc.phase != Phase::Running {
            return;
        }
        let Some(tracker) = svc.tracker.as_mut() else {
            return;
        };
        let ok = result.is_ok();
        let change = tracker.record(ok);
        match &result {
            Err(e) => svc.error = Some(format!("healthcheck: {e}")),
            Ok(()) => svc.error = None,
        }
        if let Some(h) = change {
            log::info!(
                "{name}: {h}{}",
                result.err().map(|e| format!(" ({e})")).unwrap_or_default()
            );
            if h == Health::Healthy {
                self.became_ready(name);
            }
        }
    }

    fn became_ready(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.ready || svc.def.oneshot {
            return;
        }
        svc.ready = true;
        if svc.timeline.ready.is_none() {
            svc.timeline.ready = Some(timeline::secs(timeline::since_boot()));
        }
        self.save(name);
    }

    // ----- exits and restarts ----------------------------------------------

    fn exited(&mut self, name: &str, gen: u64, exit: Option<Exit>) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.gen != gen || !svc.active() {
            return;
        }
        svc.stop_health();
        svc.pid = None;
        svc.tracker = None;
        let code = exit.map(|e| e.code()).unwrap_or(-1);
        svc.exit_code = Some(code);
        svc.timeline.exited = Some(timeline::secs(timeline::since_boot()));
        let how = exit.map_or("exited (status unknown)".to_string(), |e| e.to_string());
        let was_stopping = svc.phase == Phase::Stopping || !svc.desired_up;
        if svc.def.oneshot && code == 0 {
            svc.ready = true;
            svc.timeline.ready = svc.timeline.exited;
        } else {
            svc.ready = false;
        }
        self.remove_container(name);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if was_stopping {
            log::info!("{name}: stopped ({how})");
            svc.phase = Phase::Stopped;
            if svc.restart_after_stop {
                svc.restart_after_stop = false;
                svc.desired_up = true;
                svc.phase = Phase::Waiting;
            }
            return;
        }
        log::info!("{name}: {how}");
        self.after_exit(name, Some(code), None);
    }

    fn start_failed(&mut self, name: &str, error: String) {
        if let Some(svc) = self.services.get_mut(name) {
            svc.has_container = false;
            svc.pid = None;
            svc.exit_code = None;
            svc.error = Some(error.clone());
            if !svc.desired_up {
                svc.phase = Phase::Stopped;
                return;
            }
        }
        self.after_exit(name, None, Some(error));
    }

    /// Decides what follows an exit (`code`) or a failed start (`error`).
    fn after_exit(&mut self, name: &str, code: Option<i32>, error: Option<String>) {
        let backoff = self.backoff;
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let ok = code == Some(0);
        let policy = svc.def.restart.unwrap_or(RestartPolicy::No);
        let restart = match policy {
            RestartPolicy::No => false,
            // A oneshot that completed is done, whatever the policy.
            RestartPolicy::Always | RestartPolicy::UnlessStopped => !(svc.def.oneshot && ok),
            RestartPolicy::OnFailure(max) => !ok && max.is_none_or(|m| svc.restarts < m),
        };
        if restart {
            if svc
                .started_at
                .is_some_and(|t| t.elapsed() >= backoff.reset_after)
            {
                svc.backoff = backoff.initial;
            }
            let delay = svc.backoff;
            svc.backoff = backoff.next(svc.backoff);
            svc.restarts += 1;
            svc.phase = Phase::Restarting;
            log::info!("{name}: restarting in {delay:?} (restart {})", svc.restarts);
            let gen = svc.gen;
            self.timers.push(Timer {
                at: std::cmp::Reverse(Instant::now() + delay),
                name: name.to_string(),
                gen,
                kind: TimerKind::Restart,
            });
        } else if let Some(e) = error {
            svc.phase = Phase::Failed;
            svc.error = Some(e);
        } else if !ok && matches!(policy, RestartPolicy::OnFailure(Some(_))) {
            svc.phase = Phase::Failed;
            svc.error = Some(format!(
                "exited with code {} and gave up after {} restarts",
                code.unwrap_or(-1),
                svc.restarts
            ));
            log::warn!("{name}: {}", svc.error.as_deref().unwrap_or_default());
        } else {
            svc.phase = Phase::Exited;
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|t| t.at.0 <= now) {
            let Some(t) = self.timers.pop() else {
                break;
            };
            let Some(svc) = self.services.get_mut(&t.name) else {
                continue;
            };
            if svc.gen != t.gen {
                continue;
            }
            match t.kind {
                TimerKind::Restart if svc.phase == Phase::Restarting && svc.desired_up => {
                    svc.phase = Phase::Waiting;
                }
                TimerKind::Kill if svc.phase == Phase::Stopping => {
                    log::warn!(
                        "{}: still running after its grace period; killing it",
                        t.name
                    );
                    if let Err(e) = self.runtime.kill(&t.name, Signal::SIGKILL) {
                        log::error!("{}: {e}", t.name);
                    }
                }
                _ => {}
            }
        }
    }

    // ----- stopping ---------------------------------------------------------

    fn begin_stop(&mut self, name: &str) {
        let grace = self.options.stop_grace;
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.desired_up = false;
        match svc.phase {
            Phase::Running => {
                svc.stop_health();
                svc.ready = false;
                let signal = stop_signal(&svc.def);
                let grace = svc.def.stop_grace_period.map(|d| d.0).unwrap_or(grace);
                svc.phase = Phase::Stopping;
                let gen = svc.gen;
                log::info!("{name}: stopping ({signal}, SIGKILL after {grace:?})");
                let at = match self.runtime.kill(name, signal) {
                    Ok(()) => Instant::now() + grace,
                    Err(e) => {
                        log::error!("{name}: {e}");
                        Instant::now()
                    }
                };
                self.timers.push(Timer {
                    at: std::cmp::Reverse(at),
                    name: name.to_string(),
                    gen,
                    kind: TimerKind::Kill,
                });
            }
            // Stopped once its start completes (see `launched`).
            Phase::Starting | Phase::Stopping => {}
            Phase::Waiting | Phase::Restarting => svc.phase = Phase::Stopped,
            Phase::Exited | Phase::Failed | Phase::Stopped => {}
        }
    }

    fn progress_stop_job(&mut self) {
        // Until nothing more can start stopping: a service that stops at once
        // (one that was not running) frees its dependencies in the same pass.
        loop {
            let Some(job) = self.stop_job.as_ref() else {
                return;
            };
            let active = |n: &String| self.services.get(n).is_some_and(Svc::active);
            // Free to stop: no service of the job that depends on it is still
            // to stop or stopping.
            let free: Vec<String> = job
                .pending
                .iter()
                .filter(|name| {
                    self.graph
                        .dependents_closure(name)
                        .iter()
                        .filter(|d| job.all.contains(*d))
                        .all(|d| !job.pending.contains(d) && !active(d))
                })
                .cloned()
                .collect();
            if free.is_empty() {
                let done = job.pending.is_empty() && !job.all.iter().any(active);
                if done {
                    if let Some(job) = self.stop_job.take() {
                        self.finish_stop_job(job.then);
                    }
                }
                return;
            }
            for name in &free {
                if let Some(job) = self.stop_job.as_mut() {
                    job.pending.remove(name);
                }
                self.begin_stop(name);
            }
        }
    }

    fn finish_stop_job(&mut self, then: AfterStop) {
        match then {
            AfterStop::Shutdown(reply) => {
                log::info!("every service has stopped");
                for name in self.services.keys() {
                    self.forget(name);
                }
                self.finished = true;
                let mut snap = self.shared.lock();
                snap.finished = true;
                drop(snap);
                let _ = reply.send(Ok(None));
            }
            AfterStop::Reconcile {
                mut services,
                graph,
                report,
                reply,
            } => {
                for name in &report.removed {
                    if let Some(mut svc) = self.services.remove(name) {
                        svc.stop_health();
                    }
                    self.forget(name);
                }
                for name in &report.recreated {
                    if let Some(def) = services.remove(name) {
                        let mut svc = Svc::new(def, self.backoff.initial);
                        if let Some(old) = self.services.get(name) {
                            svc.gen = old.gen + 1;
                            svc.seq = old.seq;
                            svc.timeline = old.timeline.clone();
                        }
                        self.services.insert(name.clone(), svc);
                    }
                }
                for name in &report.added {
                    if let Some(def) = services.remove(name) {
                        self.services
                            .insert(name.clone(), Svc::new(def, self.backoff.initial));
                    }
                }
                self.graph = graph;
                log::info!(
                    "config applied: added {:?}, removed {:?}, recreated {:?}",
                    report.added,
                    report.removed,
                    report.recreated
                );
                let _ = reply.send(Ok(Some(report)));
            }
        }
    }

    fn remove_container(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if !svc.has_container {
            return;
        }
        svc.has_container = false;
        if let Err(e) = self.runtime.delete(name) {
            log::error!("{name}: {e}");
        }
    }

    // ----- commands ---------------------------------------------------------

    fn command(&mut self, command: Command, reply: Reply) {
        // Start, stop and restart answer at once; their callers then watch the
        // snapshot, which must already show the command's effect.
        let (answer, reply) = match command {
            Command::Start(_) | Command::Stop(_) | Command::Restart(_) => {
                let (tx, rx) = mpsc::sync_channel(1);
                (Some((rx, reply)), tx)
            }
            _ => (None, reply),
        };
        self.command_inner(command, reply);
        if let Some((rx, reply)) = answer {
            self.schedule();
            self.publish();
            if let Ok(result) = rx.try_recv() {
                let _ = reply.send(result);
            }
        }
    }

    fn command_inner(&mut self, command: Command, reply: Reply) {
        if self.shutting_down {
            let _ = reply.send(Err(SupervisorError::ShuttingDown));
            return;
        }
        let unknown = |name: &str| SupervisorError::UnknownService {
            name: name.to_string(),
        };
        let initial = self.backoff.initial;
        match command {
            Command::Start(name) => {
                let Some(svc) = self.services.get_mut(&name) else {
                    let _ = reply.send(Err(unknown(&name)));
                    return;
                };
                svc.desired_up = true;
                svc.restart_after_stop = svc.phase == Phase::Stopping;
                if matches!(
                    svc.phase,
                    Phase::Stopped | Phase::Exited | Phase::Failed | Phase::Restarting
                ) {
                    svc.phase = Phase::Waiting;
                    svc.restarts = 0;
                    svc.backoff = initial;
                    svc.error = None;
                }
                let _ = reply.send(Ok(None));
            }
            Command::Stop(name) => {
                if !self.services.contains_key(&name) {
                    let _ = reply.send(Err(unknown(&name)));
                    return;
                }
                self.begin_stop(&name);
                let _ = reply.send(Ok(None));
            }
            Command::Restart(name) => {
                let Some(svc) = self.services.get_mut(&name) else {
                    let _ = reply.send(Err(unknown(&name)));
                    return;
                };
                svc.backoff = initial;
                if svc.active() {
                    self.begin_stop(&name);
                    if let Some(svc) = self.services.get_mut(&name) {
                        svc.restart_after_stop = true;
                    }
                } else {
                    svc.desired_up = true;
                    svc.phase = Phase::Waiting;
                    svc.error = None;
                }
                let _ = reply.send(Ok(None));
            }
            Command::Reconcile(services) => {
                if self.stop_job.is_some() {
                    let _ = reply.send(Err(SupervisorError::Busy));
                    return;
                }
                let graph = match Graph::new(&services) {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        return;
                    }
                };
                let mut report = ReconcileReport::default();
                let mut changed = Vec::new();
                for (name, svc) in &self.services {
                    match services.get(name) {
                        None => report.removed.push(name.clone()),
                        Some(def) if *def != svc.def => changed.push(name.as_str()),
                        Some(_) => {}
                    }
                }
                report.added = services
                    .keys()
                    .filter(|n| !self.services.contains_key(*n))
                    .cloned()
                    .collect();
                let mut recreate: BTreeSet<String> = graph.affected(changed.iter().copied());
                recreate.extend(self.graph.affected(changed.iter().copied()));
                recreate.retain(|n| self.services.contains_key(n) && services.contains_key(n));
                report.recreated = recreate.iter().cloned().collect();
                report.unchanged = self
                    .services
                    .keys()
                    .filter(|n| services.contains_key(*n) && !recreate.contains(*n))
                    .cloned()
                    .collect();
                let to_stop: Vec<&str> = report
                    .removed
                    .iter()
                    .chain(report.recreated.iter())
                    .map(String::as_str)
                    .collect();
                for name in &to_stop {
                    if let Some(svc) = self.services.get_mut(*name) {
                        svc.desired_up = false;
                    }
                }
                let to_stop: Vec<String> = to_stop.iter().map(|n| n.to_string()).collect();
                self.stop_job = Some(StopJob::new(
                    to_stop,
                    AfterStop::Reconcile {
                        services,
                        graph,
                        report,
                        reply,
                    },
                ));
            }
            #[cfg(test)]
            Command::Abandon => {
                self.finished = true;
                let _ = reply.send(Ok(None));
            }
            Command::Shutdown => {
                log::info!("stopping every service");
                self.shutting_down = true;
                for svc in self.services.values_mut() {
                    svc.desired_up = false;
                }
                // A config change being applied is abandoned: everything stops.
                if let Some(job) = self.stop_job.take() {
                    if let AfterStop::Reconcile { reply, .. } = job.then {
                        let _ = reply.send(Err(SupervisorError::ShuttingDown));
                    }
                }
                self.stop_job = Some(StopJob::new(
                    self.services.keys().cloned(),
                    AfterStop::Shutdown(reply),
                ));
            }
        }
    }

    // ----- adoption and saved state ------------------------------------------

    fn state_path(&self, name: &str) -> PathBuf {
        self.options
            .run_dir
            .join("services")
            .join(format!("{name}.json"))
    }

    fn save(&self, name: &str) {
        let Some(svc) = self.services.get(name) else {
            return;
        };
        let saved = Saved {
            definition: fingerprint(&svc.def),
            restarts: svc.restarts,
            timeline: svc.timeline.clone(),
            phase: Some(svc.phase),
            exit_code: svc.exit_code,
            error: svc.error.clone(),
        };
        let path = self.state_path(name);
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let text = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, text)?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = result {
            log::warn!("{name}: cannot save its state to {}: {e}", path.display());
        }
    }

    fn forget(&self, name: &str) {
        let _ = std::fs::remove_file(self.state_path(name));
    }

    /// Saves the state of every service that ran and changed since its last save.
    fn persist(&mut self) {
        if self.shutting_down {
            // Everything is being stopped on purpose; the next berthd starts afresh.
            return;
        }
        let changed: Vec<String> = self
            .services
            .iter_mut()
            .filter(|(_, s)| s.seq.is_some())
            .filter_map(|(name, s)| {
                let key = (s.phase, s.restarts, s.ready, s.exit_code);
                (s.saved != Some(key)).then(|| {
                    s.saved = Some(key);
                    name.clone()
                })
            })
            .collect();
        for name in changed {
            self.save(&name);
        }
    }

    /// Takes over containers a previous berthd left running, when they run the
    /// current definition; anything else the runtime still has is removed.
    /// Services that had ended stay as they were (see [`Saved`]).
    fn adopt(&mut self) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let saved: Option<Saved> = std::fs::read(self.state_path(&name))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let current = self.services.get(&name).map(|s| fingerprint(&s.def));
            let saved = saved.filter(|s| Some(&s.definition) == current.as_ref());
            let Ok(state) = self.runtime.state(&name) else {
                if let Some(saved) = saved {
                    self.restore(&name, saved, false);
                }
                continue;
            };
            let running = state.status == Status::Running && state.exit.is_none();
            let pidfd = state.pid.filter(|_| running).and_then(|pid| {
                let p = rustix::process::Pid::from_raw(pid)?;
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
            });
            match (saved, state.pid) {
                (Some(saved), Some(pid)) if running => {
                    let output = self.reattach(&name);
                    log::info!("{name}: adopted the running container (pid {pid}); {output}");
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let Some(svc) = self.services.get_mut(&name) else {
                        continue;
                    };
                    svc.gen += 1;
                    svc.phase = Phase::Running;
                    svc.pid = Some(pid);
                    svc.has_container = true;
                    svc.adopted = true;
                    svc.restarts = saved.restarts;
                    svc.timeline = saved.timeline;
                    svc.seq = Some(seq);
                    let now = timeline::secs(timeline::since_boot());
                    let up = svc.timeline.started.map_or(0.0, |s| (now - s).max(0.0));
                    svc.started_at = Instant::now().checked_sub(Duration::from_secs_f64(up));
                    let gen = svc.gen;
                    self.watch(&name, gen, pidfd, true);
                    self.start_health(&name);
                }
                (saved, _) => {
                    log::info!(
                        "{name}: removing the container a previous berthd left ({:?})",
                        state.status
                    );
                    if let Err(e) = self.runtime.delete(&name) {
                        log::error!("{name}: {e}");
                    }
                    self.forget(&name);
                    if let Some(saved) = saved {
                        self.restore(&name, saved, true);
                    }
                }
            }
        }
    }

    /// Opens an adopted container's output again and captures it as before;
    /// says how that went, for the log.
    fn reattach(&self, name: &str) -> String {
        let output = match self.runtime.reattach(name) {
            Ok(Some(output)) => output,
            Ok(None) => return "its output is no longer captured".into(),
            Err(e) => return format!("its output is no longer captured: {e}"),
        };
        let captured = self
            .logs
            .writer(name)
            .map_err(|e| e.to_string())
            .and_then(|w| {
                logs::spawn_capture(w.clone(), output.stdout, Stream::Stdout)
                    .and_then(|_| logs::spawn_capture(w, output.stderr, Stream::Stderr))
                    .map_err(|e| e.to_string())
            });
        match captured {
            Ok(_) => "its output is captured again".into(),
            Err(e) => format!("its output is no longer captured: {e}"),
        }
    }

    /// Continues from a previous berthd's saved state when there is no
    /// container to adopt (`lost`: there was one, but it had exited).
    fn restore(&mut self, name: &str, saved: Saved, lost: bool) {
        let seq = self.next_seq;
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.restarts = saved.restarts;
        svc.timeline = saved.timeline;
        svc.seq = Some(seq);
        self.next_seq += 1;
        match saved.phase {
            Some(phase @ (Phase::Exited | Phase::Failed | Phase::Stopped)) => {
                svc.phase = phase;
                svc.exit_code = saved.exit_code;
                svc.error = saved.error;
                svc.ready = svc.def.oneshot && saved.exit_code == Some(0);
                svc.desired_up = phase != Phase::Stopped;
                log::info!("{name}: {phase} before berthd restarted; left so");
            }
            // Its container ended while no berthd watched (the status went to
            // PID 1): an exit like any other, restarted as its policy says. A
            // oneshot whose outcome is unknown runs again.
            Some(Phase::Running | Phase::Stopping) if lost && !svc.def.oneshot => {
                svc.exit_code = Some(-1);
                svc.started_at = None;
                log::info!("{name}: exited while berthd was away (status unknown)");
                self.after_exit(name, Some(-1), None);
            }
            _ => {}
        }
    }

    fn publish(&self) {
        let now = Instant::now();
        let services = self
            .services
            .iter()
            .map(|(name, s)| ServiceStatus {
                name: name.clone(),
                image: s.def.image.clone(),
                state: s.phase,
                health: s
                    .tracker
                    .as_ref()
                    .map(Tracker::status)
                    .filter(|_| s.phase == Phase::Running),
                ready: s.ready,
                pid: s.pid,
                restarts: s.restarts,
                uptime: s
                    .started_at
                    .filter(|_| s.phase == Phase::Running)
                    .map(|t| timeline::secs(now.duration_since(t))),
                exit_code: s.exit_code,
                error: s.error.clone(),
                oneshot: s.def.oneshot,
                restart: policy_text(s.def.restart),
                adopted: s.adopted,
            })
            .collect();
        let mut entries: Vec<(u64, Entry)> = self
            .services
            .iter()
            .filter_map(|(name, s)| {
                let mut e = s.timeline.clone();
                e.service = name.clone();
                e.restarts = s.restarts;
                s.seq.map(|q| (q, e))
            })
            .collect();
        entries.sort_by(|a, b| {
            let key = |e: &Entry| e.created.unwrap_or(f64::MAX);
            key(&a.1).total_cmp(&key(&b.1)).then(a.0.cmp(&b.0))
        });
        let mut snap = self.shared.lock();
        snap.services = services;
        snap.timeline = Timeline {
            berthd_started: timeline::secs(self.berthd_started),
            services: entries.into_iter().map(|(_, e)| e).collect(),
        };
        snap.finished = self.finished;
        drop(snap);
        self.shared.changed.notify_all();
    }
}

/// The starter thread's work: image, container, log capture, start.
fn launch(
    runtime: &dyn Runtime,
    images: &dyn Images,
    logs: &LogDir,
    mut config: ContainerConfig,
) -> Result<Launched, String> {
    let name = config.id.clone();
    let reference = config
        .service
        .image
        .clone()
        .ok_or_else(|| "the service has no image".to_string())?;
    config.image = images.layers(&reference)?;
    let writer = logs.writer(&name).map_err(|e| e.to_string())?;
    let created = runtime.create(&config).map_err(|e| e.to_string())?;
    let created_at = timeline::since_boot();
    let capture = logs::spawn_capture(writer.clone(), created.stdout, Stream::Stdout)
        .and_then(|_| logs::spawn_capture(writer, created.stderr, Stream::Stderr));
    if let Err(e) = capture {
        let _ = runtime.delete(&name);
        return Err(e.to_string());
    }
    if let Err(e) = runtime.start(&name) {
        let _ = runtime.delete(&name);
        return Err(e.to_string());
    }
    Ok(Launched {
        pid: created.pid,
        pidfd: created.pidfd,
        created: created_at,
        started: timeline::since_boot(),
    })
}

#[cfg(test)]
mod tests;
