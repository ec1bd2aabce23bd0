//! PID 1's loop: one thread, one poll(2) over a signalfd and the power buttons.
//! It reaps every child, keeps its one main child running (berthd, or the
//! shell in rescue and emergency mode), reports readiness and turns signals and
//! the power button into an orderly shutdown. It never returns.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_api::{Phase, ServiceStatus};

use crate::input;
use crate::shutdown::{self, Timeouts};
use crate::sys::{Action, Sys};
use crate::trial::Trial;
use crate::watchdog::Watchdog;

/// berthd's API socket.
pub const SOCKET: &str = berth_api::SOCKET;

/// What PID 1 keeps running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Main {
    /// `PROGRAM daemon`, restarted with backoff when it exits.
    Berthd(PathBuf),
    /// A shell on the console, respawned when it exits.
    Shell(PathBuf),
    /// Nothing: only reap and wait for a shutdown request.
    Nothing,
}

/// Where a busybox might be: the running root, or the OS image still mounted
/// under `/sysroot` when stage 1 failed after mounting it.
const SHELLS: &[&str] = &[
    "/usr/bin/busybox",
    "/bin/busybox",
    "/usr/sbin/busybox",
    "/sysroot/usr/bin/busybox",
    "/sysroot/bin/busybox",
];

pub fn find_shell() -> Option<PathBuf> {
    SHELLS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Stage 1 or 2 failed: say why, and keep a shell on the console for good.
pub fn emergency(reason: &str) -> ! {
    log::error!("{reason}");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if berth_iso::slots::from_cmdline(&cmdline).is_some_and(|(_, trial)| trial) {
        // Nobody chose this OS image by hand at this console: its try is
        // used up, so rebooting is the way back to the committed slot.
        log::error!(
            "trial boot failed before the system came up; rebooting into the committed slot"
        );
        crate::shutdown::run(
            &mut crate::sys::Linux,
            Action::Reboot,
            None,
            crate::shutdown::Timeouts::default(),
        );
    }
    // A person at an emergency shell must not be reset under their feet.
    if let Some(dog) = Watchdog::take_handed_over() {
        dog.disarm();
    }
    let main = match find_shell() {
        Some(shell) => {
            log::error!(
                "starting an emergency shell ({}); fix the problem and reboot with `reboot -f`, or power off",
                shell.display()
            );
            Main::Shell(shell)
        }
        None => {
            let image =
                if Path::new("/sysroot/usr").exists() || Path::new("/usr/share/berth").exists() {
                    "the OS image has no busybox"
                } else {
                    "the initramfs has no busybox and the OS image was never mounted"
                };
            log::error!(
                "no emergency shell: {image}; the machine waits here (the power button and Ctrl-Alt-Del still work)"
            );
            Main::Nothing
        }
    };
    run(&mut crate::sys::Linux, main, Path::new(SOCKET), None, None)
}

fn block_signals() -> io::Result<File> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for these calls.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGPWR,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGHUP,
        ] {
            libc::sigaddset(&mut set, sig);
        }
    }
    // SAFETY: blocking signals in this (only) thread. A child inherits the
    // mask across fork and exec; `spawn` empties it again for berthd and the
    // shell (see `sys::reset_signal_mask`).
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `set` is valid; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn read_signals(fd: &mut File) -> Vec<i32> {
    // struct signalfd_siginfo is 128 bytes; ssi_signo is its first field.
    let mut buf = [0u8; 128 * 8];
    let mut out = Vec::new();
    while let Ok(n) = fd.read(&mut buf) {
        if n == 0 {
            break;
        }
        for info in buf[..n].chunks_exact(128) {
            out.push(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32);
        }
    }
    out
}

/// What berthd's API says about the boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    /// No answer (not listening yet, or not 200).
    Down,
    /// Services still on their way up.
    Settling(Vec<String>),
    /// Every service has come to rest: a one-line summary, and the services
    /// that came to rest unhealthy (failed, restarting, waiting on an error).
    Settled(String, Vec<String>),
}

/// Which services a look at berthd's list waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The ready line: every service but those kept for after it
    /// ([`ServiceStatus::after_ready`]), which berthd starts once these have
    /// come to rest.
    ReadyLine,
    /// A trial boot's verdict on a new OS image: every service.
    Every,
}

/// Asks berthd for `GET /v1/services` on its socket, through berth-api's
/// client with short timeouts: PID 1 must not hang on a wedged berthd.
pub fn api_status(socket: &Path, scope: Scope) -> Api {
    let client = berth_api::Client::new(socket).with_timeouts(berth_api::Timeouts {
        connect: Duration::from_secs(1),
        read: Some(Duration::from_secs(1)),
        write: Some(Duration::from_secs(1)),
    });
    match client.services() {
        Ok(services) => settled(&services, scope),
        // berthd answers but the list is not what this PID 1 knows; do not hold the boot on it.
        Err(berth_api::ClientError::Decode { .. }) => {
            Api::Settled("service list not understood".into(), Vec::new())
        }
        Err(_) => Api::Down,
    }
}

/// Whether every service of `scope` in berthd's list has come to rest
/// ([`ServiceStatus::at_rest`]).
pub fn settled(services: &[ServiceStatus], scope: Scope) -> Api {
    let mut ready = Vec::new();
    let mut other = Vec::new();
    let mut pending = Vec::new();
    let mut failing = Vec::new();
    let mut later = Vec::new();
    for s in services {
        let (name, state) = (&s.name, s.state);
        if s.after_ready && scope == Scope::ReadyLine {
            later.push(name.clone());
        } else if s.ready {
            ready.push(name.clone());
        } else if s.at_rest() {
            if !matches!(state, Phase::Exited | Phase::Stopped) {
                failing.push(format!("{name} {state}"));
            }
            other.push(format!("{name} {state}"));
        } else {
            pending.push(format!("{name} {state}"));
        }
    }
    if !pending.is_empty() {
        return Api::Settling(pending);
    }
    let mut summary = format!("{} ready", ready.len());
    if !ready.is_empty() {
        summary.push_str(&format!(": {}", ready.join(", ")));
    }
    if !other.is_empty() {
        summary.push_str(&format!("; not ready: {}", other.join(", ")));
    }
    if !later.is_empty() {
        summary.push_str(&format!("; starting after it: {}", later.join(", ")));
    }
    Api::Settled(summary, failing)
}

/// VmRSS of this process in KiB.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status}")
    }
}

/// Restart delays: 1 s doubling to 30 s; back to 1 s after a run of a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= Duration::from_secs(60) {
            *self = Backoff::default();
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        delay
    }
}

enum Ready {
    Pending { next_note: Instant },
    Done,
}

struct Loop {
    main: Main,
    pid: Option<i32>,
    started: Instant,
    backoff: Backoff,
    restart_at: Option<Instant>,
    ready: Ready,
    socket: PathBuf,
    buttons: Vec<File>,
    rescan_buttons_until: Instant,
    next_button_scan: Instant,
    watchdog: Option<Watchdog>,
    trial: Option<Trial>,
    next_trial_status: Instant,
    after_ready: Option<AfterReady>,
    /// When the work kept for after the ready line starts anyway, should the
    /// line not come (a service that never gets ready).
    after_ready_by: Instant,
    /// The read end of the pipe berthd writes a byte to when a service's
    /// phase or readiness changes ([`berth_api::NOTIFY_FD_ENV`]).
    notify: Option<OwnedFd>,
    /// How many times that pipe woke PID 1 before the ready line.
    notices: u32,
}

/// How often PID 1 asks berthd whether the boot is ready when berthd does
/// not tell it of changes (the pipe could not be made, or it broke).
const READY_POLL: Duration = Duration::from_millis(200);
/// How often it asks when berthd does: a byte on the pipe that never came
/// would otherwise hold the ready line.
const READY_POLL_NOTIFIED: Duration = Duration::from_secs(1);

/// Work kept for after the ready line (drivers no service needs), run on a
/// thread of PID 1 once the line is out.
pub type AfterReady = Box<dyn FnOnce() + Send>;

/// How long into stage 2 the work kept for after the ready line waits for it at most.
const AFTER_READY_AT_THE_LATEST: Duration = Duration::from_secs(60);

/// berthd's `oom_score_adj`: the OOM killer takes any container before the
/// manager that would restart it (services get 0 unless they say otherwise;
/// see berthd's runtime spec). PID 1 itself is never chosen by the kernel and
/// says so with -1000.
pub const BERTHD_OOM_SCORE_ADJ: &[u8] = b"-999";
pub const INIT_OOM_SCORE_ADJ: &[u8] = b"-1000";

/// Starts `main`; berthd gets `notify` (the write end of PID 1's pipe) as
/// its [`berth_api::NOTIFY_FD_ENV`].
fn spawn(main: &Main, notify: Option<&OwnedFd>) -> io::Result<i32> {
    let mut cmd = match main {
        Main::Berthd(program) => {
            let mut c = Command::new(program);
            c.arg("daemon").stdin(Stdio::null());
            if let Some(fd) = notify.map(AsRawFd::as_raw_fd) {
                c.env(berth_api::NOTIFY_FD_ENV, fd.to_string());
                // SAFETY: fcntl is async-signal-safe and changes only the
                // child's descriptor table: the write end survives its exec.
                unsafe {
                    c.pre_exec(move || {
                        if libc::fcntl(fd, libc::F_SETFD, 0) == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::last_os_error())
                        }
                    });
                }
            }
            c
        }
        Main::Shell(busybox) => {
            let mut c = Command::new(busybox);
            c.arg0("sh")
                .env(
                    "PATH",
                    "/usr/sbin:/usr/bin:/usr/share/berth/busybox:/sysroot/usr/sbin:/sysroot/usr/bin:/sysroot/usr/share/berth/busybox",
                )
                .env("PS1", "berth# ");
            // SAFETY: setsid and ioctl are async-signal-safe and touch no memory
            // of the parent; the shell gets the console as its controlling tty so
            // Ctrl-C works.
            unsafe {
                c.pre_exec(|| {
                    libc::setsid();
                    libc::ioctl(0, libc::TIOCSCTTY, 1);
                    Ok(())
                });
            }
            c
        }
        Main::Nothing => return Err(io::Error::from(io::ErrorKind::Unsupported)),
    };
    // PID 1 blocks the signals it reads from its signalfd, and a mask
    // survives exec: berthd (and through it every service) must start with
    // none blocked.
    // SAFETY: `reset_signal_mask` only calls async-signal-safe functions on a
    // local set (see there).
    unsafe {
        cmd.pre_exec(crate::sys::reset_signal_mask);
    }
    if matches!(main, Main::Berthd(_)) {
        // SAFETY: open, write and close are async-signal-safe; the path and
        // value are static.
        unsafe {
            cmd.pre_exec(|| {
                crate::sys::set_oom_score_adj(BERTHD_OOM_SCORE_ADJ);
                Ok(())
            });
        }
    }
    // The child is reaped by the loop's waitpid(-1), never through `Child`.
    cmd.spawn().map(|c| c.id() as i32)
}

impl Loop {
    fn name(&self) -> &'static str {
        match self.main {
            Main::Berthd(_) => "berthd",
            Main::Shell(_) => "shell",
            Main::Nothing => "nothing",
        }
    }

    fn start_main(&mut self, now: Instant) {
        self.restart_at = None;
        // A new pipe for each berthd: the last one's write end went with it.
        self.notify = None;
        let write_end = match self.main {
            Main::Berthd(_) => match notify_pipe() {
                Ok((read, write)) => {
                    self.notify = Some(read);
                    Some(write)
                }
                Err(e) => {
                    log::warn!(
                        "cannot make berthd's notify pipe: {e}; asking it every {READY_POLL:?}"
                    );
                    None
                }
            },
            _ => None,
        };
        // PID 1 keeps only the read end: its copy of the write end closes here.
        match spawn(&self.main, write_end.as_ref()) {
            Ok(pid) => {
                log::debug!("{} started as pid {pid}", self.name());
                self.pid = Some(pid);
                self.started = now;
            }
            Err(e) => {
                let delay = self.backoff.after_exit(Duration::ZERO);
                log::error!(
                    "cannot start {}: {e}; trying again in {}s",
                    self.name(),
                    delay.as_secs()
                );
                self.restart_at = Some(now + delay);
            }
        }
    }

    fn reap(&mut self, now: Instant) {
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if self.trial.as_mut().is_some_and(|t| t.reaped(pid, status)) {
                continue;
            }
            if Some(pid) != self.pid {
                continue;
            }
            self.pid = None;
            let ran = now.saturating_duration_since(self.started);
            let delay = match self.main {
                Main::Shell(_) => Duration::from_secs(1),
                _ => self.backoff.after_exit(ran),
            };
            log::warn!(
                "{} exited ({}); restarting in {}s",
                self.name(),
                describe(status),
                delay.as_secs()
            );
            self.restart_at = Some(now + delay);
        }
    }

    fn check_ready(&mut self, now: Instant) {
        let Ready::Pending { next_note } = self.ready else {
            return;
        };
        let status = if self.pid.is_some() {
            api_status(&self.socket, Scope::ReadyLine)
        } else {
            Api::Down
        };
        if let Api::Settled(summary, _) = &status {
            announce_ready(&format!(" (services: {summary})"));
            if self.notices > 0 {
                log::info!(
                    "berthd told PID 1 of service changes {} times before the ready line",
                    self.notices
                );
            }
            self.ready = Ready::Done;
            // What starting took and no longer needs goes back to the kernel.
            berth_sys::alloc::trim();
        } else if now >= next_note {
            match status {
                Api::Settling(pending) => {
                    log::info!("waiting for services: {}", pending.join(", "))
                }
                _ => log::info!(
                    "still waiting for berthd to answer on {}",
                    self.socket.display()
                ),
            }
            self.ready = Ready::Pending {
                next_note: now + Duration::from_secs(60),
            };
        }
    }

    fn scan_buttons(&mut self, now: Instant) {
        if !self.buttons.is_empty() || now > self.rescan_buttons_until {
            return;
        }
        if now < self.next_button_scan {
            return;
        }
        self.next_button_scan = now + Duration::from_secs(1);
        for node in input::power_buttons(Path::new("/sys/class/input"), Path::new("/dev/input")) {
            match input::open(&node) {
                Ok(f) => {
                    log::debug!("watching the power button {}", node.display());
                    self.buttons.push(f);
                }
                Err(e) => log::warn!("power button {}: {e}", node.display()),
            }
        }
    }

    fn timeout(&self, now: Instant) -> libc::c_int {
        let mut next = now + Duration::from_secs(3600);
        if let Some(t) = self.restart_at {
            next = next.min(t);
        }
        if matches!(self.ready, Ready::Pending { .. }) {
            let poll = if self.notify.is_some() {
                READY_POLL_NOTIFIED
            } else {
                READY_POLL
            };
            next = next.min(now + poll);
        }
        if self.buttons.is_empty() && now <= self.rescan_buttons_until {
            next = next.min(self.next_button_scan);
        }
        if let Some(w) = &self.watchdog {
            next = next.min(w.due());
        }
        if self.after_ready.is_some() {
            next = next.min(self.after_ready_by);
        }
        if let Some(t) = &self.trial {
            if let Some(wake) = t.wake() {
                next = next.min(wake);
            }
            if t.wants_status() && matches!(self.ready, Ready::Done) {
                next = next.min(self.next_trial_status);
            }
        }
        let ms = next.saturating_duration_since(now).as_millis();
        libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
    }
}

/// A close-on-exec, non-blocking pipe: (read end, write end).
fn notify_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are new descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads what berthd wrote to the notify pipe. False when the pipe is done
/// with (berthd and every copy of its write end are gone) or broken.
fn drain(read_end: &OwnedFd) -> bool {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
        let n = unsafe { libc::read(read_end.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return false,
            n if n > 0 => continue,
            _ => match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => continue,
                kind => return kind == io::ErrorKind::WouldBlock,
            },
        }
    }
}

/// Prints the marker the boot tests wait for, with this process's memory use.
pub fn announce_ready(note: &str) {
    crate::timeline::mark(Path::new("/run"), "ready");
    let rss = rss_kib().map_or_else(|| "unknown".into(), |k| format!("{k} KiB"));
    log::info!("system ready{note}");
    log::info!("PID 1 resident memory (VmRSS): {rss}");
}

impl Loop {
    /// Starts the work kept for after the ready line once the line is out
    /// (or [`AFTER_READY_AT_THE_LATEST`] has passed), on a thread of its own.
    fn start_after_ready(&mut self, now: Instant) {
        if !matches!(self.ready, Ready::Done) && now < self.after_ready_by {
            return;
        }
        let Some(work) = self.after_ready.take() else {
            return;
        };
        if let Err(e) = std::thread::Builder::new()
            .name("after-ready".into())
            .spawn(work)
        {
            log::warn!("cannot start loading the drivers kept for after the ready line: {e}");
        }
    }

    /// Feeds the watchdog and moves a trial boot on; a failed trial asks
    /// for a reboot.
    fn tend(&mut self, now: Instant) -> Option<Action> {
        if let Some(w) = &mut self.watchdog {
            w.feed(now);
        }
        let trial = self.trial.as_mut()?;
        let status = (trial.wants_status()
            && matches!(self.ready, Ready::Done)
            && now >= self.next_trial_status)
            .then(|| {
                self.next_trial_status = now + Duration::from_secs(2);
                api_status(&self.socket, Scope::Every)
            });
        trial.poll(now, status.as_ref()).map(|_| Action::Reboot)
    }
}

/// The loop. Never returns. `trial` is a trial boot to commit or fail.
pub fn run(
    sys: &mut dyn Sys,
    main: Main,
    socket: &Path,
    trial: Option<Trial>,
    after_ready: Option<AfterReady>,
) -> ! {
    if !crate::sys::set_oom_score_adj(INIT_OOM_SCORE_ADJ) {
        log::warn!("cannot set PID 1's oom_score_adj");
    }
    let mut signals = match block_signals() {
        Ok(f) => Some(f),
        Err(e) => {
            log::error!("signalfd: {e}; shutdown requests will not be handled");
            None
        }
    };
    let now = Instant::now();
    let ready = match main {
        Main::Berthd(_) => Ready::Pending {
            next_note: now + Duration::from_secs(60),
        },
        _ => Ready::Done,
    };
    let mut l = Loop {
        restart_at: (main != Main::Nothing).then_some(now),
        main,
        pid: None,
        started: now,
        backoff: Backoff::default(),
        ready,
        socket: socket.to_path_buf(),
        buttons: Vec::new(),
        rescan_buttons_until: now + Duration::from_secs(10),
        next_button_scan: now,
        watchdog: Watchdog::take_handed_over()
            .or_else(|| crate::watchdog::open_present(Path::new("/"))),
        trial,
        next_trial_status: now,
        after_ready,
        after_ready_by: now + AFTER_READY_AT_THE_LATEST,
        notify: None,
        notices: 0,
    };
    loop {
        let now = Instant::now();
        l.reap(now);
        if l.restart_at.is_some_and(|t| t <= now) {
            l.start_main(now);
        }
        l.check_ready(now);
        l.start_after_ready(now);
        l.scan_buttons(now);

        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(1 + l.buttons.len());
        if let Some(s) = &signals {
            fds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for b in &l.buttons {
            fds.push(libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(n) = &l.notify {
            fds.push(libc::pollfd {
                fd: n.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let mut action = l.tend(now);
        let timeout = if action.is_some() { 0 } else { l.timeout(now) };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n > 0 {
            if let Some(s) = signals.as_mut() {
                for sig in read_signals(s) {
                    match Action::from_signal(sig) {
                        Some(a) => {
                            log::info!("signal {sig}: {}", a.name());
                            action = Some(a);
                        }
                        None => log::debug!("signal {sig}"),
                    }
                }
            }
            let offset = usize::from(signals.is_some());
            for (i, b) in l.buttons.iter_mut().enumerate() {
                if fds[offset + i].revents != 0 && input::pressed(b) {
                    log::info!("power button pressed");
                    action = Some(Action::PowerOff);
                }
            }
            // The next turn of the loop asks berthd (`check_ready`).
            let notified = l
                .notify
                .as_ref()
                .and_then(|_| fds.last())
                .map(|p| p.revents);
            if notified.is_some_and(|r| r != 0) {
                if matches!(l.ready, Ready::Pending { .. }) {
                    l.notices = l.notices.saturating_add(1);
                }
                if !l.notify.as_ref().is_some_and(drain) {
                    l.notify = None;
                }
            }
        }
        if let Some(action) = action {
            l.buttons.clear();
            let berthd = match l.main {
                Main::Berthd(_) => l.pid,
                _ => None,
            };
            if let (Main::Shell(_), Some(pid)) = (&l.main, l.pid) {
                // An interactive shell ignores SIGTERM; hanging up is what ends it.
                let _ = sys.kill(pid, libc::SIGHUP);
            }
            shutdown::run(sys, action, berthd, Timeouts::default());
            // reboot(2) failed: there is nothing left to do but stay alive.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notify_pipe_is_drained_until_berthd_is_gone() {
        let (read, write) = notify_pipe().expect("pipe");
        for _ in 0..3 {
            // SAFETY: one byte from a valid buffer to an open descriptor.
            let written = unsafe { libc::write(write.as_raw_fd(), b"!".as_ptr().cast(), 1) };
            assert_eq!(written, 1);
        }
        assert!(drain(&read), "bytes read, pipe still open");
        assert!(drain(&read), "nothing to read, pipe still open");
        drop(write);
        assert!(!drain(&read), "every write end closed");
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let quick = Duration::from_secs(1);
        let delays: Vec<u64> = (0..7).map(|_| b.after_exit(quick).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.after_exit(Duration::from_secs(120)).as_secs(), 1);
    }

    fn serve(
        reply: &'static [u8],
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("berth.sock");
        let t = berth_api::testing::answer_once(&sock, reply).expect("listen");
        (dir, sock, t)
    }

    #[test]
    fn asks_berthd_over_its_socket() {
        let (_d, sock, t) = serve(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]",
        );
        assert_eq!(
            api_status(&sock, Scope::ReadyLine),
            Api::Settled("0 ready".into(), Vec::new())
        );
        let req = t.join().expect("server");
        assert!(req.starts_with("GET /v1/services HTTP/1.1\r\n"), "{req}");

        let (_d, sock, t) = serve(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}");
        assert_eq!(api_status(&sock, Scope::ReadyLine), Api::Down);
        t.join().expect("server");

        // A list this PID 1 does not know does not hold the boot.
        let (_d, sock, t) = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n<html>");
        assert_eq!(
            api_status(&sock, Scope::ReadyLine),
            Api::Settled("service list not understood".into(), Vec::new())
        );
        t.join().expect("server");

        assert_eq!(
            api_status(Path::new("/nonexistent/berth.sock"), Scope::ReadyLine),
            Api::Down
        );
    }

    /// A service as berthd lists it: `name`, `state`, ready or not, why not.
    fn svc(name: &str, state: Phase, ready: bool, error: Option<&str>) -> ServiceStatus {
        berth_api::testing::service_status(name, state, ready, error)
    }

    #[test]
    fn settles_when_every_service_is_at_rest() {
        let services = [
            svc("console", Phase::Running, true, None),
            svc("docker", Phase::Starting, false, None),
            svc("network", Phase::Running, false, None),
            svc("ntp", Phase::Waiting, false, None),
        ];
        assert_eq!(
            settled(&services, Scope::ReadyLine),
            Api::Settling(vec![
                "docker starting".into(),
                "network running".into(),
                "ntp waiting".into()
            ])
        );
        let services = [
            svc("console", Phase::Running, true, None),
            svc("docker", Phase::Failed, false, Some("no image")),
            svc("init-disk", Phase::Exited, true, None),
            svc("web", Phase::Waiting, false, Some("needs docker")),
        ];
        assert_eq!(
            settled(&services, Scope::ReadyLine),
            Api::Settled(
                "2 ready: console, init-disk; not ready: docker failed, web waiting".into(),
                vec!["docker failed".into(), "web waiting".into()]
            )
        );
    }

    /// A service kept for after the ready line (and what depends on it)
    /// does not hold the line, which names it; a trial's verdict waits for
    /// every service.
    #[test]
    fn the_ready_line_does_not_wait_for_what_starts_after_it() {
        let mut ntp = svc("ntp", Phase::Waiting, false, None);
        ntp.after_ready = true;
        let mut clock_user = svc("clock-user", Phase::Waiting, false, None);
        clock_user.after_ready = true;
        let services = [
            svc("console", Phase::Running, true, None),
            clock_user,
            svc("network", Phase::Running, true, None),
            ntp,
        ];
        assert_eq!(
            settled(&services, Scope::ReadyLine),
            Api::Settled(
                "2 ready: console, network; starting after it: clock-user, ntp".into(),
                Vec::new()
            )
        );
        assert_eq!(
            settled(&services, Scope::Every),
            Api::Settling(vec!["clock-user waiting".into(), "ntp waiting".into()])
        );
    }

    #[test]
    fn rss_is_measured() {
        assert!(rss_kib().is_some_and(|k| k > 0));
    }

    #[test]
    fn exit_statuses_read_well() {
        assert_eq!(describe(3 << 8), "exit code 3");
        assert_eq!(describe(libc::SIGKILL), "killed by signal 9");
    }
}
