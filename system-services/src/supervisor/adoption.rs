//! Saved state and adoption: `<run_dir>/services/<name>.json`, and taking
//! over the containers a previous berthd left running.

use super::*;

/// Re-adoption state of one service, `<run_dir>/services/<name>.json`,
/// rewritten whenever what it holds changes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Saved {
    pub(super) definition: String,
    pub(super) restarts: u32,
    pub(super) timeline: Entry,
    /// Where the service was; a berthd that restarts continues from there
    /// (a completed oneshot is not run again, a stopped service stays stopped).
    #[serde(default)]
    pub(super) phase: Option<Phase>,
    #[serde(default)]
    pub(super) exit_code: Option<i32>,
    #[serde(default)]
    pub(super) error: Option<String>,
}

impl Manager {
    // ----- adoption and saved state ------------------------------------------

    pub(super) fn state_path(&self, name: &str) -> PathBuf {
        self.options
            .run_dir
            .join("services")
            .join(format!("{name}.json"))
    }

    pub(super) fn save(&self, name: &str) {
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
                // The run dir is tmpfs: the state only has to outlive a berthd
                // restart, so the fsyncs would buy nothing but latency.
                let options = berth_sys::atomic::Options::mode(0o644).not_durable();
                berth_sys::atomic::write(&path, &text, &options)
            });
        if let Err(e) = result {
            log::warn!("{name}: cannot save its state to {}: {e}", path.display());
        }
    }

    pub(super) fn forget(&self, name: &str) {
        let _ = std::fs::remove_file(self.state_path(name));
    }

    /// Saves the state of every service that ran and changed since its last save.
    pub(super) fn persist(&mut self) {
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
    pub(super) fn adopt(&mut self) {
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
    pub(super) fn reattach(&self, name: &str) -> String {
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
    pub(super) fn restore(&mut self, name: &str, saved: Saved, lost: bool) {
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
}
