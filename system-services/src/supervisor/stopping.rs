//! Stopping: one service at a time or a whole job (shutdown, reconcile) in
//! reverse dependency order, with the grace period and SIGKILL timers.

use super::*;

pub(super) enum AfterStop {
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
pub(super) struct StopJob {
    /// Every service of the job.
    pub(super) all: BTreeSet<String>,
    /// Not asked to stop yet.
    pub(super) pending: BTreeSet<String>,
    pub(super) then: AfterStop,
}

impl StopJob {
    pub(super) fn new(services: impl IntoIterator<Item = String>, then: AfterStop) -> StopJob {
        let all: BTreeSet<String> = services.into_iter().collect();
        StopJob {
            pending: all.clone(),
            all,
            then,
        }
    }
}

/// How often a stopping service whose init dropped the stop signal is looked
/// at for the handler it installs (a program started a moment ago, such as
/// chronyd on a restart right after its start, installs it within a few
/// hundred milliseconds): sending the signal again then stops it at once
/// instead of at the end of its grace period, with SIGKILL.
pub(super) const REDELIVER_POLL: Duration = Duration::from_millis(50);

impl Manager {
    // ----- stopping ---------------------------------------------------------

    pub(super) fn begin_stop(&mut self, name: &str) {
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
                // Looked at before the signal is sent: a handler installed
                // between the kill and a look after it would hide that this
                // one was dropped (at worst, one installed between this look
                // and the kill gets the signal twice).
                let dropped = self.runtime.signal_fate(name, signal) == Some(SignalFate::Dropped);
                let at = match self.runtime.kill(name, signal) {
                    Ok(()) => {
                        if dropped {
                            log::info!(
                                "{name}: its init has no handler for {signal} yet, so the kernel \
                                 dropped it; sending it again once it has one"
                            );
                            self.timers.push(Timer {
                                at: std::cmp::Reverse(Instant::now() + REDELIVER_POLL),
                                name: name.to_string(),
                                gen,
                                kind: TimerKind::Redeliver,
                            });
                        }
                        Instant::now() + grace
                    }
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

    pub(super) fn progress_stop_job(&mut self) {
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

    pub(super) fn finish_stop_job(&mut self, then: AfterStop) {
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

    pub(super) fn remove_container(&mut self, name: &str) {
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
}
