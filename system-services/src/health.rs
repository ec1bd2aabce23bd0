//! Healthchecks: compose's `healthcheck.test` run inside the container
//! (`CMD`, `CMD-SHELL`, a shell string) through [`Runtime::exec`], and Berth's
//! `tcp:PORT` (a connection to localhost in the container's network namespace),
//! `file:PATH` (a path in the container's root; while it is missing, the
//! service may say why in `PATH.waiting`) and `http:SOCKET PATH` (a 2xx answer
//! to a GET on a unix socket in the container's root) checked by berthd
//! itself, which costs no process in the container.
//!
//! A thread per running container runs the checks ([`spawn`]); the supervisor
//! turns results into a status with a [`Tracker`] (retries, start period).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_configs::forms::Command;
use berth_configs::model::Healthcheck;

use berth_sys::watch::DirWatch;

use crate::runtime::Runtime;

/// What a healthcheck does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Run this argv in the container; exit 0 is healthy.
    Exec(Vec<String>),
    /// Something accepts TCP connections on this port on localhost.
    Tcp(u16),
    /// This absolute path exists inside the container.
    File(String),
    /// A GET of `path` on the unix socket `socket` (inside the container)
    /// answers 2xx: an API that serves, where a socket file can be there
    /// long before (dockerd's, podman's).
    Http { socket: String, path: String },
    /// `["NONE"]`: declared but switched off; the service counts as healthy.
    None,
}

impl Check {
    /// The check of a service's healthcheck; `None` when it has none that runs.
    pub fn from_healthcheck(hc: &Healthcheck) -> Option<Check> {
        if hc.disable {
            return None;
        }
        match hc.test.as_ref()? {
            Command::Shell(s) => {
                let s = s.trim();
                if let Some(port) = s.strip_prefix("tcp:") {
                    port.trim().parse().ok().map(Check::Tcp)
                } else if let Some(path) = s.strip_prefix("file:") {
                    Some(Check::File(path.trim().to_string()))
                } else if let Some(rest) = s.strip_prefix("http:") {
                    berth_configs::forms::http_check(rest)
                        .map(|(socket, path)| Check::Http { socket, path })
                } else {
                    Some(Check::Exec(vec!["/bin/sh".into(), "-c".into(), s.into()]))
                }
            }
            Command::Exec(args) => match args.first().map(String::as_str) {
                Some("NONE") => Some(Check::None),
                Some("CMD") => Some(Check::Exec(args[1..].to_vec())),
                Some("CMD-SHELL") => Some(Check::Exec(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    args[1..].join(" "),
                ])),
                // Validation rejects other lists; treat them as an argv rather than fail.
                Some(_) => Some(Check::Exec(args.clone())),
                None => None,
            },
        }
    }
}

/// Timing of the checks (compose's defaults, but a faster first check: a boot
/// should not wait 30 s for its first healthy service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures (after the start period) that make it unhealthy.
    pub retries: u32,
    /// Failures in this time after the start do not count.
    pub start_period: Duration,
    /// Until the first success, checks run this often.
    pub start_interval: Duration,
}

impl Settings {
    pub fn from_healthcheck(hc: &Healthcheck) -> Settings {
        let interval = hc
            .interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30))
            .max(Duration::from_millis(10));
        Settings {
            interval,
            timeout: hc.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
            retries: hc.retries.unwrap_or(3).max(1),
            start_period: hc.start_period.map(|d| d.0).unwrap_or_default(),
            start_interval: hc
                .start_interval
                .map(|d| d.0)
                .unwrap_or(interval.min(Duration::from_secs(1)))
                .max(Duration::from_millis(10)),
        }
    }
}

pub use berth_api::Health;

/// Turns check results into a [`Health`] the way Docker does: one success is
/// healthy; `retries` failures in a row, not counting the start period, unhealthy.
#[derive(Debug, Clone)]
pub struct Tracker {
    settings: Settings,
    started: Instant,
    failures: u32,
    status: Health,
}

impl Tracker {
    pub fn new(settings: Settings) -> Tracker {
        Tracker {
            settings,
            started: Instant::now(),
            failures: 0,
            status: Health::Starting,
        }
    }

    pub fn status(&self) -> Health {
        self.status
    }

    /// Takes one result; returns the new status when it changed.
    pub fn record(&mut self, ok: bool) -> Option<Health> {
        let before = self.status;
        if ok {
            self.failures = 0;
            self.status = Health::Healthy;
        } else if self.status == Health::Starting
            && self.started.elapsed() < self.settings.start_period
        {
            // Failures while the service is still starting up do not count.
        } else {
            self.failures += 1;
            if self.failures >= self.settings.retries {
                self.status = Health::Unhealthy;
            }
        }
        (self.status != before).then_some(self.status)
    }
}

/// Why a healthcheck failed, as `berth ps` shows it.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// `file:PATH` is not there (yet); `waiting` is what the service says it
    /// waits for, from `PATH.waiting`.
    #[error("{path}: {source}{}", waiting.as_ref().map(|w| format!("; waiting for {w}")).unwrap_or_default())]
    File {
        path: String,
        #[source]
        source: std::io::Error,
        waiting: Option<String>,
    },
    #[error("the container's network namespace: {0}")]
    NetNs(#[source] std::io::Error),
    #[error("joining the container's network namespace: {0}")]
    JoinNetNs(#[source] std::io::Error),
    #[error("tcp:{port}: {source}")]
    Tcp {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("http:{socket} {path}: {why}")]
    Http {
        socket: String,
        path: String,
        why: String,
    },
    #[error("starting the check: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the check panicked")]
    Panicked,
    #[error(transparent)]
    Exec(#[from] crate::runtime::RuntimeError),
    /// The command ran and failed: its status and the start of its output.
    #[error("{command}: {status}: {output}")]
    Failed {
        command: String,
        status: crate::runtime::Exit,
        output: String,
    },
    #[error("{command}: timed out after {timeout:?}")]
    TimedOut { command: String, timeout: Duration },
}

/// Runs `check` once for container `id` whose init is `pid`.
pub fn run_check(
    check: &Check,
    runtime: &dyn Runtime,
    id: &str,
    pid: i32,
    timeout: Duration,
) -> Result<(), CheckError> {
    match check {
        Check::None => Ok(()),
        Check::File(path) => {
            let p = in_root(pid, path);
            std::fs::symlink_metadata(&p)
                .map(|_| ())
                .map_err(|source| CheckError::File {
                    path: path.clone(),
                    source,
                    // A service may say why the file is not there yet in
                    // `PATH.waiting` (netconf: which interface, address or route).
                    waiting: std::fs::read_to_string(format!("{p}.waiting"))
                        .ok()
                        .map(|why| why.trim().to_string())
                        .filter(|why| !why.is_empty()),
                })
        }
        Check::Tcp(port) => tcp_in_netns(pid, *port, timeout),
        Check::Http { socket, path } => http_get(pid, socket, path, timeout),
        Check::Exec(argv) => {
            let out = runtime.exec(id, argv, timeout)?;
            match out.exit {
                Some(e) if e.success() => Ok(()),
                Some(status) => Err(CheckError::Failed {
                    command: argv.join(" "),
                    status,
                    output: out.output.trim().to_string(),
                }),
                None => Err(CheckError::TimedOut {
                    command: argv.join(" "),
                    timeout,
                }),
            }
        }
    }
}

/// Connects to localhost:`port` from inside the network namespace of `pid`. A
/// network namespace belongs to a thread, so a short-lived thread joins it and
/// nothing else in berthd is affected.
fn tcp_in_netns(pid: i32, port: u16, timeout: Duration) -> Result<(), CheckError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(CheckError::NetNs)?;
    let worker = std::thread::Builder::new()
        .name("health tcp".into())
        .stack_size(64 << 10)
        .spawn(move || {
            // SAFETY: setns with an open namespace descriptor changes only this
            // thread's network namespace; the thread ends right after the check.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(CheckError::JoinNetNs(std::io::Error::last_os_error()));
            }
            let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match TcpStream::connect_timeout(&v4, timeout) {
                Ok(_) => Ok(()),
                Err(e4) => {
                    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
                    TcpStream::connect_timeout(&v6, timeout)
                        .map(|_| ())
                        .map_err(|_| CheckError::Tcp { port, source: e4 })
                }
            }
        })
        .map_err(CheckError::Spawn)?;
    worker.join().unwrap_or(Err(CheckError::Panicked))
}

/// GETs `path` on the unix socket `socket` in the root of `pid`'s container.
/// An API that has made its socket but does not serve yet answers once it
/// does, within `timeout`.
fn http_get(pid: i32, socket: &str, path: &str, timeout: Duration) -> Result<(), CheckError> {
    use berth_api::client::{Client, ClientError, Timeouts};
    let failed = |why: String| CheckError::Http {
        socket: socket.to_string(),
        path: path.to_string(),
        why,
    };
    let client = Client::new(in_root(pid, socket)).with_timeouts(Timeouts {
        connect: timeout,
        read: Some(timeout),
        write: Some(timeout),
    });
    match client.request("GET", path) {
        Ok(answer) if (200..300).contains(&answer.status()) => Ok(()),
        Ok(answer) => Err(failed(format!("answered {}", answer.status()))),
        // The client's own messages speak of berthd: say what happened.
        Err(ClientError::Connect { source, .. } | ClientError::Io { source, .. }) => {
            Err(failed(source.to_string()))
        }
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Runs `check` in a thread of its own until `stop` is set, reporting each
/// result through `report`.
pub fn spawn(
    check: Check,
    settings: Settings,
    runtime: Arc<dyn Runtime>,
    id: String,
    pid: i32,
    stop: Arc<StopChecks>,
    report: impl Fn(Result<(), CheckError>) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("health {id}"))
        .stack_size(128 << 10)
        .spawn(move || {
            let mut healthy_once = false;
            // A change in a `file:` check's directory ends the wait, for the
            // check's whole life: the service's ready file is seen as it
            // appears, and as it goes. An `http:` check watches its socket's
            // directory until it first passes (its API's socket is asked as it
            // appears); after that an engine's run directory changes with
            // every container, and says nothing of whether the API answers.
            // A woken look is reported only when it says something new: a
            // pass before any report, or a result unlike the last one reported
            // (the file went away, or came back). So a service still starting
            // has its failures counted at the check's own pace, and a busy
            // directory costs a look per change but sends the supervisor
            // nothing.
            let mut last: Option<bool> = None;
            let mut watch = match &check {
                Check::File(path) | Check::Http { socket: path, .. } => watch_dir_of(pid, path),
                _ => None,
            };
            let mut due = Instant::now() + settings.start_interval;
            // What changed before the watch was made (a socket bound while
            // this thread was starting) wakes nothing: one look right away,
            // treated as a woken one, so that it is reported only if it passes.
            let mut look_now = watch.is_some();
            // A socket is made (bind) a moment before it listens, and a look
            // woken by its making can fall in between and be refused; nothing
            // wakes the watch when it listens. So after such a look, looks
            // again at doubling steps, each reported only if it passes, until
            // the check's own look is due: (when, step).
            let mut soon: Option<(Instant, Duration)> = None;
            loop {
                if healthy_once && !matches!(check, Check::File(_)) {
                    watch = None;
                }
                let woke = if std::mem::take(&mut look_now) {
                    Wake::Changed
                } else {
                    let until = soon.map_or(due, |(when, _)| when.min(due));
                    let Some(woke) = nap(until, &stop, watch.as_ref()) else {
                        return;
                    };
                    if until < due {
                        Wake::Changed
                    } else {
                        woke
                    }
                };
                let result = run_check(&check, &*runtime, &id, pid, settings.timeout);
                if stop.stopped() {
                    return;
                }
                soon = match &check {
                    Check::Http { socket, .. }
                        if woke == Wake::Changed
                            && result.is_err()
                            && socket_exists(pid, socket) =>
                    {
                        let step = soon.map_or(SOON, |(_, step)| step * 2);
                        Some((Instant::now() + step, step))
                    }
                    _ => None,
                };
                let news = match last {
                    None => result.is_ok(),
                    Some(ok) => ok != result.is_ok(),
                };
                if woke == Wake::Changed && !news {
                    continue;
                }
                healthy_once |= result.is_ok();
                last = Some(result.is_ok());
                report(result);
                due = Instant::now()
                    + if healthy_once {
                        settings.interval
                    } else {
                        settings.start_interval
                    };
            }
        })
}

/// The first step of the looks again at a socket that refused a woken look.
const SOON: Duration = Duration::from_millis(25);

/// Whether an `http:` check's socket is there, in the container's root.
fn socket_exists(pid: i32, socket: &str) -> bool {
    std::fs::symlink_metadata(in_root(pid, socket)).is_ok()
}

/// `path` in the root of `pid`'s container, as its init sees it, through procfs.
fn in_root(pid: i32, path: &str) -> String {
    format!("/proc/{pid}/root/{}", path.trim_start_matches('/'))
}

/// Why [`nap`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Due,
    Changed,
}

/// Sleeps until `due`, or until `watch` sees a change; `None` as soon as
/// `stop` is told. One wait, however long: an idle machine's checks do not
/// wake it between looks.
fn nap(due: Instant, stop: &StopChecks, watch: Option<&DirWatch>) -> Option<Wake> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    loop {
        if stop.stopped() {
            return None;
        }
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(Wake::Due);
        }
        let timeout = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = vec![PollFd::new(&stop.wake, PollFlags::IN)];
        if let Some(w) = watch {
            fds.push(PollFd::new(w, PollFlags::IN));
        }
        // EINTR and a timeout both go round: the loop's own checks decide.
        if !matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0) {
            continue;
        }
        let changed = fds.get(1).is_some_and(|fd| !fd.revents().is_empty());
        if let Some(w) = watch.filter(|_| changed && !stop.stopped()) {
            w.drain();
            return Some(Wake::Changed);
        }
    }
}

/// Ends a container's healthcheck thread: set by the supervisor when the
/// container stops or restarts, and seen at once however long the thread's
/// wait (an eventfd it polls with its other wake-ups).
#[derive(Debug)]
pub struct StopChecks {
    stopped: AtomicBool,
    wake: OwnedFd,
}

impl StopChecks {
    pub fn new() -> std::io::Result<Arc<StopChecks>> {
        use rustix::event::{eventfd, EventfdFlags};
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Arc::new(StopChecks {
            stopped: AtomicBool::new(false),
            wake,
        }))
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // The counter stays non-zero, so every later poll sees it too.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// A watch on the directory of a `file:` check's path or an `http:` check's
/// socket, in the container's root; `None` when the directory cannot be
/// watched (not there yet): the check then looks at its interval, as any other.
fn watch_dir_of(pid: i32, path: &str) -> Option<DirWatch> {
    let file = in_root(pid, path);
    let dir = std::path::Path::new(&file).parent()?;
    let watch = DirWatch::new().ok()?;
    watch.add(dir).ok()?;
    Some(watch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_configs::forms::Duration as D;

    fn hc(test: Command) -> Healthcheck {
        Healthcheck {
            test: Some(test),
            ..Default::default()
        }
    }

    #[test]
    fn checks_from_compose_and_berth_forms() {
        let exec = |v: &[&str]| Command::Exec(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            Check::from_healthcheck(&hc(exec(&["CMD", "test", "-f", "/x"]))),
            Some(Check::Exec(vec!["test".into(), "-f".into(), "/x".into()]))
        );
        assert_eq!(
            Check::from_healthcheck(&hc(exec(&["CMD-SHELL", "pidof x || exit 1"]))),
            Some(Check::Exec(vec![
                "/bin/sh".into(),
                "-c".into(),
                "pidof x || exit 1".into()
            ]))
        );
        assert_eq!(
            Check::from_healthcheck(&hc(Command::Shell("tcp:8080".into()))),
            Some(Check::Tcp(8080))
        );
        assert_eq!(
            Check::from_healthcheck(&hc(Command::Shell("file:/run/ready".into()))),
            Some(Check::File("/run/ready".into()))
        );
        assert_eq!(
            Check::from_healthcheck(&hc(Command::Shell(
                "http:/run/docker/docker.sock /_ping".into()
            ))),
            Some(Check::Http {
                socket: "/run/docker/docker.sock".into(),
                path: "/_ping".into()
            })
        );
        assert_eq!(
            Check::from_healthcheck(&hc(exec(&["NONE"]))),
            Some(Check::None)
        );
        let mut off = hc(Command::Shell("true".into()));
        off.disable = true;
        assert_eq!(Check::from_healthcheck(&off), None);
    }

    #[test]
    fn tracker_counts_retries_after_the_start_period() {
        let mut h = hc(Command::Shell("true".into()));
        h.retries = Some(2);
        h.interval = Some(D(Duration::from_secs(5)));
        let s = Settings::from_healthcheck(&h);
        assert_eq!(s.start_interval, Duration::from_secs(1));
        let mut t = Tracker::new(s);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(Health::Unhealthy));
        assert_eq!(t.record(true), Some(Health::Healthy));
        assert_eq!(t.record(false), None, "one failure is not enough");

        h.start_period = Some(D(Duration::from_secs(60)));
        let mut t = Tracker::new(Settings::from_healthcheck(&h));
        for _ in 0..5 {
            assert_eq!(t.record(false), None, "failures in the start period");
        }
        assert_eq!(t.status(), Health::Starting);
    }

    #[test]
    fn file_and_tcp_checks_look_inside_the_process() {
        let me = std::process::id() as i32;
        let rt = crate::runtime::Recording::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ready");
        let check = Check::File(path.display().to_string());
        let err = run_check(&check, &rt, "x", me, Duration::from_secs(1))
            .expect_err("missing")
            .to_string();
        assert!(!err.contains("waiting for"), "{err}");
        std::fs::write(dir.path().join("ready.waiting"), "eth0: a DHCP lease\n").expect("write");
        let err = run_check(&check, &rt, "x", me, Duration::from_secs(1))
            .expect_err("missing")
            .to_string();
        assert!(err.ends_with("; waiting for eth0: a DHCP lease"), "{err}");
        std::fs::write(&path, "").expect("write");
        assert!(run_check(&check, &rt, "x", me, Duration::from_secs(1)).is_ok());

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tcp = Check::Tcp(port);
        assert!(run_check(&tcp, &rt, "x", me, Duration::from_secs(1)).is_ok());
        drop(listener);
        assert!(run_check(&tcp, &rt, "x", me, Duration::from_secs(1)).is_err());
    }

    /// `check` on this process with a start interval of a minute, so that a
    /// report within the test's wait can only come from a wake-up: the
    /// thread (named `health ID`), its reports (healthy or not) and its stop.
    fn watched(
        id: &str,
        check: Check,
    ) -> (
        std::thread::JoinHandle<()>,
        std::sync::mpsc::Receiver<bool>,
        Arc<StopChecks>,
    ) {
        let settings = Settings {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            retries: 1,
            start_period: Duration::ZERO,
            start_interval: Duration::from_secs(60),
        };
        let stop = StopChecks::new().expect("eventfd");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = spawn(
            check,
            settings,
            Arc::new(crate::runtime::Recording::new()),
            id.into(),
            std::process::id() as i32,
            Arc::clone(&stop),
            move |result| {
                let _ = tx.send(result.is_ok());
            },
        )
        .expect("spawn");
        (thread, rx, stop)
    }

    /// Between its looks a check sleeps in one wait, with or without a
    /// watch, and a stop ends that wait at once.
    #[test]
    fn a_waiting_check_sleeps_until_its_look_or_its_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (id, check) in [
            ("nap-exec", Check::Exec(vec!["true".into()])),
            (
                "nap-file",
                Check::File(dir.path().join("ready").display().to_string()),
            ),
        ] {
            let (thread, rx, stop) = watched(id, check);
            std::thread::sleep(Duration::from_millis(100));
            // The kernel keeps 15 bytes of a thread's name.
            let name = format!("health {id}");
            let switches = || {
                berth_testkit::context_switches(std::process::id(), Some(&name))
                    .expect("the check's thread")
            };
            let before = switches();
            std::thread::sleep(Duration::from_millis(500));
            let woke = switches() - before;
            let stopping = Instant::now();
            stop.stop();
            thread.join().expect("health thread");
            assert!(woke <= 1, "{id}: woke {woke} times in 0.5 s");
            assert!(
                stopping.elapsed() < Duration::from_secs(2),
                "{id}: stopped after {:?}",
                stopping.elapsed()
            );
            assert!(rx.try_recv().is_err(), "{id}: nothing was due");
        }
    }

    /// A `file:` check sees its file as it is written, not at its next look,
    /// and as it is removed.
    #[test]
    fn a_file_check_wakes_when_the_file_is_written_or_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ready");
        let (thread, rx, stop) = watched("file", Check::File(path.display().to_string()));
        std::thread::sleep(Duration::from_millis(100));
        // Written as the one atomic writer does: a temporary name, renamed.
        berth_sys::atomic::write(&path, b"", &berth_sys::atomic::Options::mode(0o644))
            .expect("write");
        // The temporary file's creation wakes it too; that look fails and is
        // not reported, so the first report is the file's.
        let healthy = rx.recv_timeout(Duration::from_secs(10));
        std::fs::remove_file(&path).expect("remove");
        // Later events of the write find the file there: no news, no report.
        let gone = rx.recv_timeout(Duration::from_secs(10));
        stop.stop();
        thread.join().expect("health thread");
        assert_eq!(healthy, Ok(true));
        assert_eq!(gone, Ok(false), "the removal is reported at once");
    }

    /// What is there before the watch is made is seen at once, not at the
    /// first look `start_interval` (60 s here) away: a ready file or socket
    /// can appear while the check's thread is still starting.
    #[test]
    fn a_watched_check_sees_what_was_there_before_its_watch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ready");
        std::fs::write(&path, b"").expect("write");
        let (thread, rx, stop) = watched("before", Check::File(path.display().to_string()));
        let healthy = rx.recv_timeout(Duration::from_secs(10));
        stop.stop();
        thread.join().expect("health thread");
        assert_eq!(healthy, Ok(true));
    }

    /// An `http:` check sees its socket as it is made: the engine is reported
    /// healthy as soon as it answers.
    #[test]
    fn an_http_check_wakes_when_its_socket_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        let (thread, rx, stop) = watched(
            "http",
            Check::Http {
                socket: socket.display().to_string(),
                path: "/_ping".into(),
            },
        );
        std::thread::sleep(Duration::from_millis(100));
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let server = answer_once(listener, Duration::ZERO, "200 OK");
        let healthy = rx.recv_timeout(Duration::from_secs(10));
        stop.stop();
        thread.join().expect("health thread");
        assert_eq!(healthy, Ok(true));
        server.join().expect("server");
    }

    /// A socket bound some time before it listens (the look its making woke
    /// is refused, and listen() wakes no watch) is still seen as it starts
    /// to listen, not at the first look 60 s away.
    #[test]
    fn an_http_check_sees_a_socket_that_listens_after_it_was_made() {
        use rustix::net::{bind, listen, socket, AddressFamily, SocketAddrUnix, SocketType};
        let dir = tempfile::tempdir().expect("tempdir");
        let socket_path = dir.path().join("api.sock");
        let (thread, rx, stop) = watched(
            "late-listen",
            Check::Http {
                socket: socket_path.display().to_string(),
                path: "/_ping".into(),
            },
        );
        std::thread::sleep(Duration::from_millis(100));
        let fd = socket(AddressFamily::UNIX, SocketType::STREAM, None).expect("socket");
        bind(&fd, &SocketAddrUnix::new(&socket_path).expect("address")).expect("bind");
        std::thread::sleep(Duration::from_millis(300));
        listen(&fd, 8).expect("listen");
        let listener = std::os::unix::net::UnixListener::from(fd);
        let server = answer_once(listener, Duration::ZERO, "200 OK");
        let healthy = rx.recv_timeout(Duration::from_secs(10));
        stop.stop();
        thread.join().expect("health thread");
        assert_eq!(healthy, Ok(true));
        server.join().expect("server");
    }

    /// Serves one connection on `listener` after `delay`: reads the request
    /// head and answers `status`.
    fn answer_once(
        listener: std::os::unix::net::UnixListener,
        delay: Duration,
        status: &'static str,
    ) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            std::thread::sleep(delay);
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = std::io::BufReader::new(stream);
            let mut first = String::new();
            reader.read_line(&mut first).expect("request");
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("head");
                if line.trim().is_empty() {
                    break;
                }
            }
            write!(
                reader.get_mut(),
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nOK"
            )
            .expect("answer");
            first
        })
    }

    #[test]
    fn an_http_check_waits_for_an_api_that_listens_before_it_serves() {
        let me = std::process::id() as i32;
        let rt = crate::runtime::Recording::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        let check = Check::Http {
            socket: socket.display().to_string(),
            path: "/_ping".into(),
        };
        let err = run_check(&check, &rt, "x", me, Duration::from_secs(1))
            .expect_err("no socket")
            .to_string();
        assert!(
            err.starts_with(&format!("http:{} /_ping: ", socket.display())),
            "{err}"
        );

        // Listening, but serving only a moment later: still healthy.
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let server = answer_once(listener, Duration::from_millis(300), "200 OK");
        run_check(&check, &rt, "x", me, Duration::from_secs(5)).expect("healthy");
        assert_eq!(server.join().expect("server"), "GET /_ping HTTP/1.1\r\n");

        std::fs::remove_file(&socket).expect("rm");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let server = answer_once(listener, Duration::ZERO, "404 Not Found");
        let err = run_check(&check, &rt, "x", me, Duration::from_secs(5))
            .expect_err("404")
            .to_string();
        assert!(err.ends_with("answered 404"), "{err}");
        server.join().expect("server");

        // A socket nobody answers on fails within the timeout.
        std::fs::remove_file(&socket).expect("rm");
        let _silent = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let started = Instant::now();
        assert!(run_check(&check, &rt, "x", me, Duration::from_millis(500)).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
