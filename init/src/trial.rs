//! A trial boot of a new OS image (ARCHITECTURE.md §7): GRUB booted the
//! slot `berth os upgrade` armed, once, with `berth.trial=1`. This system
//! makes itself the default only when it is healthy — every system service
//! ready and the optional `berth.upgrade.health_check` passing — within
//! `berth.upgrade.health_timeout`; otherwise it records why and reboots,
//! and GRUB, whose try is used up, boots the committed slot.
//!
//! A boot that tries new kernel arguments (`berth.args_trial=1`,
//! [`berth_iso::kernel_args`]) is a trial by the same measure: healthy, its
//! arguments are kept; not, they are dropped and recorded, and it reboots
//! with the arguments from before. One boot can try both.
//!
//! Every boot of an installed slot also brings the slot records up to date
//! ([`berth_iso::slots::Records::on_boot`]).

use std::path::Path;
use std::time::{Duration, Instant};

use berth_iso::kernel_args;
use berth_iso::slots::{self, Installed, Records, Status};

use crate::supervisor::Api;

/// How long a trial boot has to become healthy unless the config says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for every service to be ready.
    Waiting,
    /// The health check runs as `pid`.
    Checking { pid: i32 },
    /// Failed; reboot.
    Failed,
    /// Committed, or given up on committing: nothing more to do.
    Done,
}

#[derive(Debug)]
pub struct Trial {
    slot: char,
    version: String,
    /// The slot itself is on trial (an upgrade or a rollback's first boot).
    slot_trial: bool,
    /// The kernel arguments on trial, when this boot tries new ones.
    args: Option<String>,
    installed: Option<Installed>,
    timeout: Duration,
    deadline: Instant,
    health_check: Option<String>,
    phase: Phase,
    /// Why it is not healthy yet, for the record if time runs out.
    waiting_on: String,
}

/// The running OS version, from its os-release.
pub fn running_version(root: &Path) -> String {
    berth_iso::slots::os_version(root).unwrap_or_else(|| "unknown".into())
}

/// Brings the slot records up to date for this boot; returns the trial to
/// run when this is one.
pub fn begin(root: &Path, cmdline: &str) -> Option<Trial> {
    let (slot, trial) = slots::from_cmdline(cmdline)?;
    let version = running_version(root);
    let mut records = match Records::load(root) {
        Ok(r) => r,
        Err(e) => {
            log::error!("slot records: {e}; starting them afresh");
            Records::default()
        }
    };
    let before = records.clone();
    for note in records.on_boot(slot, &version, trial) {
        if note.contains("failed") {
            log::error!("{note}");
        } else {
            log::info!("{note}");
        }
    }
    // Most boots change nothing: no synced write on the boot path then.
    if records != before {
        if let Err(e) = records.save(root) {
            log::error!("slot records: {e}");
        }
    }
    let args_trial = kernel_args::on_trial(cmdline);
    if !trial && !args_trial {
        return None;
    }
    let installed = match Installed::find(&root.join("sys/class/block"), &root.join("dev")) {
        Ok(Some(i)) => Some(i),
        Ok(None) => {
            log::error!("trial boot, but no disk with BERTH_EFI, BERTH_A and BERTH_B was found");
            None
        }
        Err(e) => {
            log::error!("trial boot: {e}");
            None
        }
    };
    let args = args_trial.then(|| {
        installed
            .as_ref()
            .and_then(|i| i.read_env().ok())
            .and_then(|env| env.get(kernel_args::NEXT).cloned())
            .unwrap_or_default()
    });
    let (timeout, health_check) = health_settings(root);
    let what = match (&args, trial) {
        (Some(a), true) => format!(
            "trial boot of {version} in slot {slot} with the kernel arguments `{a}`: both are kept"
        ),
        (Some(a), false) => format!("trial boot of the kernel arguments `{a}`: they are kept"),
        (None, _) => format!("trial boot of {version} in slot {slot}: it becomes the default"),
    };
    log::info!(
        "{what} once every service is ready{} (within {}s)",
        health_check
            .as_deref()
            .map(|c| format!(" and `{c}` exits 0"))
            .unwrap_or_default(),
        timeout.as_secs()
    );
    Some(Trial {
        slot,
        version,
        slot_trial: trial,
        args,
        installed,
        timeout,
        deadline: Instant::now() + timeout,
        health_check,
        phase: Phase::Waiting,
        waiting_on: "berthd has not answered".into(),
    })
}

/// `berth.upgrade.health_timeout` and `health_check` from the system's
/// config (a config that does not load leaves the defaults).
fn health_settings(root: &Path) -> (Duration, Option<String>) {
    match berth_configs::Layout::new(root).load() {
        Ok(loaded) => {
            let upgrade = &loaded.config.berth.upgrade;
            (
                upgrade.health_timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
                upgrade
                    .health_check
                    .clone()
                    .filter(|c| !c.trim().is_empty()),
            )
        }
        Err(e) => {
            log::warn!("trial boot: the config does not load ({e}); default health settings");
            (DEFAULT_TIMEOUT, None)
        }
    }
}

impl Trial {
    /// Whether the loop should still ask berthd how the services are.
    pub fn wants_status(&self) -> bool {
        self.phase == Phase::Waiting
    }

    /// The next moment [`Trial::poll`] must run.
    pub fn wake(&self) -> Option<Instant> {
        match self.phase {
            Phase::Done => None,
            Phase::Failed => Some(Instant::now()),
            _ => Some(self.deadline),
        }
    }

    /// Advances the trial; `Some(reason)` means: reboot now, it failed.
    pub fn poll(&mut self, now: Instant, status: Option<&Api>) -> Option<String> {
        if self.phase == Phase::Waiting {
            match status {
                Some(Api::Settled(_, failing)) if failing.is_empty() => self.healthy_services(),
                Some(Api::Settled(_, failing)) => {
                    self.waiting_on = format!("not ready: {}", failing.join(", "))
                }
                Some(Api::Settling(pending)) => {
                    self.waiting_on = format!("still starting: {}", pending.join(", "))
                }
                Some(Api::Down) => self.waiting_on = "berthd does not answer".into(),
                None => {}
            }
        }
        if matches!(self.phase, Phase::Waiting | Phase::Checking { .. }) && now >= self.deadline {
            if let Phase::Checking { pid } = self.phase {
                // SAFETY: kill(2) on our own child; no memory involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                self.waiting_on = format!(
                    "the health check `{}` did not finish",
                    self.health_check.as_deref().unwrap_or("")
                );
            }
            let reason = format!(
                "not healthy within {}s ({})",
                self.timeout.as_secs(),
                self.waiting_on
            );
            return Some(self.fail(&reason));
        }
        if self.phase == Phase::Failed {
            self.phase = Phase::Done;
            return Some(self.waiting_on.clone());
        }
        None
    }

    /// Whether `pid` was the health check; records its verdict.
    pub fn reaped(&mut self, pid: i32, status: libc::c_int) -> bool {
        if self.phase != (Phase::Checking { pid }) {
            return false;
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            self.commit();
        } else {
            let how = if libc::WIFEXITED(status) {
                format!("exit code {}", libc::WEXITSTATUS(status))
            } else {
                format!("signal {}", libc::WTERMSIG(status))
            };
            let reason = format!(
                "the health check `{}` failed ({how})",
                self.health_check.as_deref().unwrap_or("")
            );
            self.waiting_on = self.fail(&reason);
            self.phase = Phase::Failed;
        }
        true
    }

    fn healthy_services(&mut self) {
        let Some(check) = self.health_check.clone() else {
            self.commit();
            return;
        };
        log::info!("trial boot: every service is ready; running the health check `{check}`");
        let mut cmd = std::process::Command::new("/usr/bin/sh");
        cmd.args(["-c", &check]).stdin(std::process::Stdio::null());
        // SAFETY: `reset_signal_mask` only calls async-signal-safe functions.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, crate::sys::reset_signal_mask);
        }
        match cmd.spawn() {
            // Reaped by the loop's waitpid(-1), which hands it to `reaped`.
            Ok(child) => {
                self.phase = Phase::Checking {
                    pid: child.id() as i32,
                }
            }
            Err(e) => {
                self.waiting_on = self.fail(&format!("cannot run the health check `{check}`: {e}"));
                self.phase = Phase::Failed;
            }
        }
    }

    fn commit(&mut self) {
        let root = Path::new("/");
        let Some(installed) = &self.installed else {
            self.waiting_on =
                self.fail("the installed disk was not found, so nothing can be committed");
            self.phase = Phase::Failed;
            return;
        };
        let slot_trial = self.slot_trial;
        let written = installed.read_env().and_then(|mut env| {
            if slot_trial {
                env.insert("berth_default".into(), self.slot.to_string());
                env.remove("berth_try");
            }
            if self.args.is_some() {
                kernel_args::commit(&mut env);
            }
            // Healthy: the next boot need not show GRUB's menu.
            berth_iso::bootloader::boot_got_far(&mut env);
            installed.write_env(&env)
        });
        if let Err(e) = written {
            self.waiting_on = self.fail(&format!("cannot commit this boot to grubenv: {e}"));
            self.phase = Phase::Failed;
            return;
        }
        if let Some(args) = &self.args {
            log::info!(
                "the kernel arguments `{args}` are healthy and kept: every boot's from now on"
            );
        }
        if !slot_trial {
            self.phase = Phase::Done;
            return;
        }
        let mut records = Records::load(root).unwrap_or_default();
        records.set(self.slot, &self.version, Status::Committed, None);
        if let Err(e) = records.save(root) {
            // grubenv decides what boots; the next boot fixes the record.
            log::error!("slot records: {e}");
        }
        log::info!(
            "OS {} in slot {} is healthy and committed: the default from now on",
            self.version,
            self.slot
        );
        self.phase = Phase::Done;
    }

    /// Records the failure; returns the reason.
    fn fail(&mut self, reason: &str) -> String {
        let root = Path::new("/");
        let mut records = Records::load(root).unwrap_or_default();
        if self.slot_trial {
            records.set(
                self.slot,
                &self.version,
                Status::Failed,
                Some(reason.to_string()),
            );
        }
        if let Some(args) = &self.args {
            records.kernel_args_failed = Some(kernel_args::Failed {
                args: args.clone(),
                reason: reason.to_string(),
                at: slots::now(),
            });
        }
        // Records first: a cut before grubenv's write leaves a used-up trial
        // there, which the next boot records as failed too.
        if let Err(e) = records.save(root) {
            log::error!("slot records: {e}");
        }
        if let (Some(args), Some(installed)) = (&self.args, &self.installed) {
            let dropped = installed.read_env().and_then(|mut env| {
                kernel_args::fail(&mut env);
                installed.write_env(&env)
            });
            if let Err(e) = dropped {
                log::error!("kernel arguments `{args}`: cannot drop them from grubenv: {e}");
            }
            log::error!(
                "the trial of the kernel arguments `{args}` failed: {reason}; rebooting with the ones before"
            );
        }
        if self.slot_trial {
            log::error!(
                "trial boot of {} in slot {} failed: {reason}; rebooting into slot {}",
                self.version,
                self.slot,
                slots::other(self.slot)
            );
        }
        self.phase = Phase::Done;
        reason.to_string()
    }
}
