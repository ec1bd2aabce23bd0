//! The manager's side of the API's commands: start, stop, restart, reconcile, shutdown.

use super::*;

impl Manager {
    // ----- commands ---------------------------------------------------------

    pub(super) fn command(&mut self, command: Command, reply: Reply) {
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

    pub(super) fn command_inner(&mut self, command: Command, reply: Reply) {
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
}
