//! The manager thread: every service's state, the event loop, timers, stops,
//! and the starter threads it sends off.

use super::*;

/// What is known about one service.
#[derive(Debug)]
pub(super) struct Svc {
    pub(super) def: Service,
    /// Start it when its dependencies allow (false once stopped by request).
    pub(super) desired_up: bool,
    pub(super) phase: Phase,
    /// Counts containers; events from an older one are ignored.
    pub(super) gen: u64,
    pub(super) pid: Option<i32>,
    pub(super) tracker: Option<Tracker>,
    pub(super) health_stop: Option<Arc<health::StopChecks>>,
    pub(super) ready: bool,
    pub(super) restarts: u32,
    pub(super) backoff: Duration,
    pub(super) started_at: Option<Instant>,
    pub(super) exit_code: Option<i32>,
    pub(super) error: Option<String>,
    pub(super) has_container: bool,
    pub(super) restart_after_stop: bool,
    pub(super) adopted: bool,
    pub(super) timeline: Entry,
    /// Order in the timeline (first creation).
    pub(super) seq: Option<u64>,
    /// What the saved state last held, to rewrite it only on a change.
    pub(super) saved: Option<(Phase, u32, bool, Option<i32>)>,
}

impl Svc {
    pub(super) fn new(def: Service, backoff: Duration) -> Svc {
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

    pub(super) fn active(&self) -> bool {
        matches!(
            self.phase,
            Phase::Starting | Phase::Running | Phase::Stopping
        )
    }

    pub(super) fn graph_state(&self) -> State {
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

    pub(super) fn stop_health(&mut self) {
        if let Some(checks) = self.health_stop.take() {
            checks.stop();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    Restart,
    Kill,
    /// Look whether a stopping service's init, which dropped the stop
    /// signal, handles it now ([`super::stopping::REDELIVER_POLL`]).
    Redeliver,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timer {
    pub(super) at: std::cmp::Reverse<Instant>,
    pub(super) name: String,
    pub(super) gen: u64,
    pub(super) kind: TimerKind,
}

pub(super) struct Manager {
    pub(super) runtime: Arc<dyn Runtime>,
    pub(super) images: Arc<dyn Images>,
    pub(super) logs: Arc<LogDir>,
    pub(super) options: Options,
    pub(super) backoff: Backoff,
    pub(super) tx: Sender<Event>,
    pub(super) shared: Arc<Shared>,
    pub(super) services: BTreeMap<String, Svc>,
    pub(super) graph: Graph,
    pub(super) timers: BinaryHeap<Timer>,
    pub(super) stop_job: Option<StopJob>,
    pub(super) shutting_down: bool,
    pub(super) finished: bool,
    pub(super) berthd_started: Duration,
    pub(super) next_seq: u64,
    /// Whether the `after_ready` services may start: every other service
    /// came to rest once, or `after_ready_by` passed. It stays true.
    pub(super) boot_ready: bool,
    /// When the `after_ready` services start even if the boot has not come
    /// to rest (a service that never gets ready must not hold them back).
    pub(super) after_ready_by: Instant,
}

/// A stable fingerprint of a service definition (FNV-1a of its debug form), to
/// tell whether an adopted container still runs the current definition.
pub(super) fn fingerprint(def: &Service) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{def:?}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

pub(super) fn policy_text(p: Option<RestartPolicy>) -> String {
    match p.unwrap_or(RestartPolicy::No) {
        RestartPolicy::No => "no".into(),
        RestartPolicy::Always => "always".into(),
        RestartPolicy::UnlessStopped => "unless-stopped".into(),
        RestartPolicy::OnFailure(None) => "on-failure".into(),
        RestartPolicy::OnFailure(Some(n)) => format!("on-failure:{n}"),
    }
}

/// The parsed `stop_signal` (configs accepts only signals Linux numbers the
/// same on every architecture Berth runs on, so the conversion holds).
pub(super) fn stop_signal(def: &Service) -> Signal {
    def.stop_signal
        .and_then(|s| Signal::try_from(s.number()).ok())
        .unwrap_or(Signal::SIGTERM)
}

/// Waits until the pidfd is readable (the process exited).
pub(super) fn wait_pidfd(fd: &OwnedFd) {
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
    pub(super) fn run(mut self, rx: Receiver<Event>) {
        self.adopt();
        self.schedule();
        self.persist();
        self.publish();
        while !self.finished {
            let mut wake = self.timers.peek().map(|t| t.at.0);
            if !self.boot_ready {
                wake = Some(wake.map_or(self.after_ready_by, |w| w.min(self.after_ready_by)));
            }
            let timeout = wake
                .map(|w| w.saturating_duration_since(Instant::now()))
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

    pub(super) fn handle(&mut self, event: Event) {
        match event {
            Event::Launched { name, gen, result } => self.launched(&name, gen, result),
            Event::Exited { name, gen, exit } => self.exited(&name, gen, exit),
            Event::Health { name, gen, result } => self.health(&name, gen, result),
            Event::Command(c, reply) => self.command(c, reply),
        }
    }

    // ----- starting ---------------------------------------------------------

    pub(super) fn schedule(&mut self) {
        if self.shutting_down {
            return;
        }
        let states: BTreeMap<String, State> = self
            .services
            .iter()
            .map(|(n, s)| (n.clone(), s.graph_state()))
            .collect();
        let plan = self.graph.evaluate(&states);
        self.check_boot_ready();
        for b in plan.blocked {
            if let Some(svc) = self.services.get_mut(&b.service) {
                if svc.phase == Phase::Waiting && svc.desired_up {
                    svc.error = Some(b.to_string());
                }
            }
        }
        for name in plan.ready {
            let go = self.services.get(&name).is_some_and(|s| {
                s.desired_up && s.phase == Phase::Waiting && (self.boot_ready || !s.def.after_ready)
            });
            if go {
                self.launch(&name);
            }
        }
    }

    /// The services kept for after the ready line: those with `after_ready`
    /// and everything that depends on them.
    fn kept_for_after_ready(&self) -> BTreeSet<String> {
        let mut kept = BTreeSet::new();
        for (name, svc) in &self.services {
            if svc.def.after_ready {
                kept.insert(name.clone());
                kept.extend(self.graph.dependents_closure(name));
            }
        }
        kept
    }

    /// Lets the `after_ready` services start once every other service has
    /// come to rest, by the same test as PID 1's ready line, or once
    /// `after_ready_by` has passed.
    fn check_boot_ready(&mut self) {
        if self.boot_ready {
            return;
        }
        let statuses = self.statuses();
        let (kept, others): (Vec<&ServiceStatus>, Vec<&ServiceStatus>) =
            statuses.iter().partition(|s| s.after_ready);
        let names: Vec<&str> = kept.iter().map(|s| s.name.as_str()).collect();
        let pending: Vec<String> = others
            .iter()
            .filter(|s| !s.at_rest())
            .map(|s| format!("{} {}", s.name, s.state))
            .collect();
        if kept.is_empty() {
            // Nothing waits for the boot; a service added later starts at once.
        } else if pending.is_empty() {
            log::info!(
                "the boot is ready; starting what waited for it: {}",
                names.join(", ")
            );
        } else if Instant::now() >= self.after_ready_by {
            log::warn!(
                "the boot is not ready ({}); starting what waited for it anyway: {}",
                pending.join(", "),
                names.join(", ")
            );
        } else {
            return;
        }
        self.boot_ready = true;
        berth_sys::alloc::trim();
    }

    pub(super) fn launch(&mut self, name: &str) {
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
    pub(super) fn network_of(&self, name: &str) -> Option<PathBuf> {
        let mode = self.services.get(name)?.def.network_mode.as_deref()?;
        let target = mode
            .strip_prefix("service:")
            .or_else(|| mode.strip_prefix("container:"))?;
        let pid = self.services.get(target)?.pid?;
        Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    pub(super) fn launched(&mut self, name: &str, gen: u64, result: Result<Launched, LaunchError>) {
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
                self.start_failed(name, e.to_string());
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
    pub(super) fn watch(&mut self, name: &str, gen: u64, pidfd: Option<OwnedFd>, adopted: bool) {
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

    pub(super) fn start_health(&mut self, name: &str) {
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
        let stop = match health::StopChecks::new() {
            Ok(stop) => stop,
            Err(e) => {
                log::error!("{name}: cannot start its healthcheck: {e}");
                return;
            }
        };
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

    pub(super) fn health(&mut self, name: &str, gen: u64, result: Result<(), health::CheckError>) {
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

    pub(super) fn became_ready(&mut self, name: &str) {
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

    pub(super) fn exited(&mut self, name: &str, gen: u64, exit: Option<Exit>) {
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

    pub(super) fn start_failed(&mut self, name: &str, error: String) {
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
    pub(super) fn after_exit(&mut self, name: &str, code: Option<i32>, error: Option<String>) {
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

    pub(super) fn fire_timers(&mut self) {
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
                TimerKind::Redeliver if svc.phase == Phase::Stopping => {
                    let signal = stop_signal(&svc.def);
                    match self.runtime.signal_fate(&t.name, signal) {
                        Some(SignalFate::Caught | SignalFate::Blocked) => {
                            log::info!(
                                "{}: sending {signal} again, now that it handles it",
                                t.name
                            );
                            if let Err(e) = self.runtime.kill(&t.name, signal) {
                                log::error!("{}: {e}", t.name);
                            }
                        }
                        Some(SignalFate::Dropped) => self.timers.push(Timer {
                            at: std::cmp::Reverse(now + super::stopping::REDELIVER_POLL),
                            name: t.name,
                            gen: t.gen,
                            kind: TimerKind::Redeliver,
                        }),
                        _ => {}
                    }
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

    /// Every service as `GET /v1/services` shows it.
    pub(super) fn statuses(&self) -> Vec<ServiceStatus> {
        let now = Instant::now();
        let kept = self.kept_for_after_ready();
        self.services
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
                after_ready: kept.contains(name),
            })
            .collect()
    }

    pub(super) fn publish(&self) {
        let services = self.statuses();
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
        let host_devices = self
            .services
            .iter()
            .filter(|(_, s)| s.def.privileged && s.phase == Phase::Running)
            .filter_map(|(name, s)| Some((name.clone(), s.pid?)))
            .collect();
        let mut snap = self.shared.lock();
        snap.services = services;
        snap.host_devices = host_devices;
        snap.timeline = Timeline {
            berthd_started: timeline::secs(self.berthd_started),
            services: entries.into_iter().map(|(_, e)| e).collect(),
        };
        snap.finished = self.finished;
        drop(snap);
        self.shared.changed.notify_all();
    }
}

/// Why a service's container did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("the service has no image")]
    NoImage,
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Its log file cannot be opened, or its output not captured.
    #[error(transparent)]
    Log(#[from] crate::logs::LogError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// The starter thread's work: image, container, log capture, start.
pub(super) fn launch(
    runtime: &dyn Runtime,
    images: &dyn Images,
    logs: &LogDir,
    mut config: ContainerConfig,
) -> Result<Launched, LaunchError> {
    let name = config.id.clone();
    let reference = config.service.image.clone().ok_or(LaunchError::NoImage)?;
    config.image = images.layers(&reference)?;
    let writer = logs.writer(&name)?;
    let created = runtime.create(&config)?;
    let created_at = timeline::since_boot();
    let capture = logs::spawn_capture(writer.clone(), created.stdout, Stream::Stdout)
        .and_then(|_| logs::spawn_capture(writer, created.stderr, Stream::Stderr));
    if let Err(e) = capture {
        let _ = runtime.delete(&name);
        return Err(e.into());
    }
    if let Err(e) = runtime.start(&name) {
        let _ = runtime.delete(&name);
        return Err(e.into());
    }
    Ok(Launched {
        pid: created.pid,
        pidfd: created.pidfd,
        created: created_at,
        started: timeline::since_boot(),
    })
}
