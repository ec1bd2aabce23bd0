//! console-init's second half: the init of the console container. It starts
//! sshd and the gettys, restarts whichever exits (after a second, so a program
//! that cannot start does not spin), reaps every process that ends up as its
//! child (it is a subreaper: orphans of SSH sessions come to it, not to the
//! host's PID 1), and on SIGTERM/SIGINT passes the signal on, waits for its
//! children and returns.
//!
//! Single-threaded: the signals it handles are blocked and taken synchronously
//! with `sigtimedwait`, so there are no handlers and no races with `waitpid`.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a program that exited waits before it is started again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How long children get after SIGTERM before they are killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the loop looks whether the SSH server listens, until it does
/// (a server that sends no readiness message, Dropbear, is found so).
const TICK: Duration = Duration::from_millis(100);
/// The longest the loop waits without a signal once nothing is due.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// When programs that wait for readiness start anyway, counted from the
/// supervisor's start: a login prompt must come even when the SSH server
/// never does, since it is how a bad config gets fixed.
pub const AFTER_READY_FALLBACK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot become a child subreaper: {0}")]
    Subreaper(#[source] io::Error),
    #[error("cannot block signals: {0}")]
    Signals(#[source] io::Error),
}

/// A program to keep running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// What log lines call it (`sshd`, `getty ttyS0`).
    pub name: String,
    pub argv: Vec<String>,
    /// Started once `ready` first answers (or [`AFTER_READY_FALLBACK`] after
    /// the supervisor's start, if it has not by then), not at once. The login
    /// prompts wait for the SSH server: on a busy boot CPU they would only
    /// slow the start that the machine's ready line waits for.
    pub after_ready: bool,
    /// Set in its environment besides what console-init has.
    pub env: Vec<(String, String)>,
}

#[derive(Debug)]
struct Slot {
    program: Program,
    pid: Option<libc::pid_t>,
    /// When to start it (again).
    start_at: Option<Instant>,
}

/// Where the supervisor's news goes (stderr in the service, a list in tests).
pub trait Report {
    fn line(&mut self, text: String);
}

/// Blocks the signals the supervisor takes with `sigtimedwait`. Call before
/// any thread exists; children get an empty mask back in [`spawn`].
fn block_signals() -> Result<libc::sigset_t, SuperviseError> {
    // SAFETY: sigset_t is a plain bitmask initialised by sigemptyset before use;
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        // SIGIO: a readiness message arrived ([`crate::notify`]).
        for signal in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGIO,
        ] {
            libc::sigaddset(&mut set, signal);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(SuperviseError::Signals(io::Error::from_raw_os_error(rc)));
        }
        Ok(set)
    }
}

/// Waits up to `timeout` for one of `set`; the signal number, if one came.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX as _),
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are valid for the call; no siginfo is asked for.
    let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (signal > 0).then_some(signal)
}

fn set_subreaper() -> Result<(), SuperviseError> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(SuperviseError::Subreaper(io::Error::last_os_error()));
    }
    Ok(())
}

/// Every child that has exited: `(pid, status)`.
fn reap() -> Vec<(libc::pid_t, i32)> {
    let mut out = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the exit status into the local `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return out;
        }
        out.push((pid, status));
    }
}

fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended ({status:#x})")
    }
}

fn spawn(program: &Program) -> io::Result<libc::pid_t> {
    let (first, rest) = program
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
    let mut command = Command::new(first);
    command
        .args(rest)
        .envs(program.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions: signal, sigemptyset/sigprocmask on a local
    // set, and setsid. The signals the supervisor blocks would stay blocked
    // across exec (sshd would never see SIGTERM), and so would SIGIO's ignored
    // disposition; its own session lets agetty take its tty as controlling
    // terminal and keeps terminal signals to one program.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGIO, libc::SIG_DFL);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::setsid();
            Ok(())
        });
    }
    let child = command.spawn()?;
    // The supervisor reaps with waitpid(-1); the Child handle is not needed
    // (dropping it neither waits nor kills).
    Ok(child.id() as libc::pid_t)
}

fn kill(pid: libc::pid_t, signal: i32) {
    // SAFETY: kill(2) with a pid this process started and has not yet reaped.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Runs `programs` until SIGTERM or SIGINT. `ready` is asked every [`TICK`]
/// (and at every signal) until it answers `true` once; `on_ready` is then
/// called once, and the programs that wait for readiness are started. `tick`
/// is called at every wake-up from then on (or from [`AFTER_READY_FALLBACK`]
/// on, like those programs) and says how long the loop may sleep before it
/// wants to be called again. Otherwise the loop sleeps until a signal or
/// the next (re)start that is due: an idle console does not wake.
pub fn run(
    programs: Vec<Program>,
    report: &mut dyn Report,
    mut ready: impl FnMut() -> bool,
    on_ready: impl FnOnce(&mut dyn Report),
    mut tick: impl FnMut(&mut dyn Report) -> Duration,
) -> Result<(), SuperviseError> {
    let signals = block_signals()?;
    set_subreaper()?;
    let started = Instant::now();
    let fallback = started + AFTER_READY_FALLBACK;
    let mut slots: Vec<Slot> = programs
        .into_iter()
        .map(|program| Slot {
            start_at: Some(if program.after_ready {
                fallback
            } else {
                started
            }),
            program,
            pid: None,
        })
        .collect();
    let mut on_ready = Some(on_ready);
    let stop_signal = loop {
        let now = Instant::now();
        if on_ready.is_some() && ready() {
            if let Some(f) = on_ready.take() {
                f(report);
            }
            for slot in slots.iter_mut().filter(|s| s.program.after_ready) {
                // Not yet started for the first time: now, not at the fallback.
                if slot.start_at == Some(fallback) {
                    slot.start_at = Some(now);
                }
            }
        }
        for slot in slots
            .iter_mut()
            .filter(|s| s.start_at.is_some_and(|t| t <= now))
        {
            slot.start_at = None;
            match spawn(&slot.program) {
                Ok(pid) => slot.pid = Some(pid),
                Err(e) => {
                    report.line(format!(
                        "cannot start {}: {e}; trying again in 1s",
                        slot.program.name
                    ));
                    slot.start_at = Some(now + RESTART_DELAY);
                }
            }
        }
        let mut wait = MAX_WAIT;
        if on_ready.is_none() || now >= fallback {
            wait = wait.min(tick(report));
        }
        if on_ready.is_some() {
            wait = wait.min(TICK);
        }
        for start in slots.iter().filter_map(|s| s.start_at) {
            wait = wait.min(start.saturating_duration_since(now));
        }
        let signal = wait_signal(&signals, wait);
        for (pid, status) in reap() {
            if let Some(slot) = slots.iter_mut().find(|s| s.pid == Some(pid)) {
                slot.pid = None;
                slot.start_at = Some(Instant::now() + RESTART_DELAY);
                report.line(format!(
                    "{} {}; restarting it in 1s",
                    slot.program.name,
                    describe(status)
                ));
            }
        }
        // SIGHUP, SIGCHLD and SIGIO only wake the loop.
        if let Some(s @ (libc::SIGTERM | libc::SIGINT)) = signal {
            break s;
        }
    };
    report.line(format!("stopping ({})", signal_name(stop_signal)));
    stop(&mut slots, &signals, report);
    Ok(())
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}

/// Passes SIGTERM on (and SIGHUP to the gettys' sessions, which is what ends a
/// login shell), waits up to [`STOP_GRACE`], then kills what is left.
fn stop(slots: &mut [Slot], signals: &libc::sigset_t, report: &mut dyn Report) {
    let mut running: BTreeMap<libc::pid_t, String> = slots
        .iter()
        .filter_map(|s| Some((s.pid?, s.program.name.clone())))
        .collect();
    for (pid, name) in &running {
        kill(*pid, libc::SIGTERM);
        if name.starts_with("getty") {
            // The whole session: agetty, or the login and shell it became.
            kill(-*pid, libc::SIGHUP);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while !running.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            for (pid, name) in &running {
                report.line(format!("{name} did not stop in time; killing it"));
                kill(*pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
            for (pid, _) in reap() {
                running.remove(&pid);
            }
            return;
        }
        wait_signal(signals, TICK.min(deadline - now));
        for (pid, _) in reap() {
            running.remove(&pid);
        }
    }
}
