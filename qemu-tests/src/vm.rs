//! A running QEMU: at most [`MAX_VMS`] at once, its serial console as a
//! transcript to wait on, its monitor, and its end.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{fence, io_err, Config, Error, Result, MAX_VMS};

/// The kernel-only baseline's command line: serial console, and a panic ends
/// the VM at once (with `-no-reboot`) instead of hanging a test.
pub fn baseline_append() -> String {
    "console=ttyS0,115200n8 panic=-1".to_string()
}

/// Berth's kernel command line for a direct kernel boot: the baseline's and
/// Berth's own arguments, as its GRUB entries give them.
pub fn berth_append() -> String {
    format!("{} {}", baseline_append(), berth_iso::grub::KERNEL_ARGS)
}

// ---- VM slots --------------------------------------------------------------

/// Where the slots' lock files are: one directory for every test process on
/// the machine (`cargo xtask test` runs the test files side by side).
pub const SLOTS_ENV: &str = "BERTH_QEMU_SLOTS";

/// A file each VM appends one line to when it ends: the test file, the VM,
/// how long it waited for a slot and how long it ran (tab-separated seconds).
/// `cargo xtask test` sums them, so the suite says where its time goes.
pub const TIMES_ENV: &str = "BERTH_QEMU_TIMES";

/// This test process's place when VMs wait for a slot: lower goes first
/// (0-255; 50 when unset).
pub const PRIORITY_ENV: &str = "BERTH_QEMU_PRIORITY";

/// One of [`MAX_VMS`] places for a running VM: an exclusive `flock` on one of
/// the lock files in [`SLOTS_ENV`]'s directory, so the limit holds across
/// threads and processes alike, and a test that dies frees its slot.
#[derive(Debug)]
struct Slot {
    _lock: std::fs::File,
}

/// The slot priority of this test process (lower goes first), from
/// [`PRIORITY_ENV`]; 50 when unset.
fn priority() -> u8 {
    std::env::var(PRIORITY_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(50)
}

/// A place in the queue for a slot: a file named by priority and time, held
/// with a `flock` while its owner waits. A file nobody holds is a waiter that
/// died, and is removed.
struct Ticket {
    path: PathBuf,
    _lock: std::fs::File,
}

impl Ticket {
    fn take(queue: &Path) -> Result<Ticket> {
        std::fs::create_dir_all(queue).map_err(io_err(queue))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        let path = queue.join(format!("{:03}-{nanos:024}-{tid}", priority()));
        let file = std::fs::File::create(&path).map_err(io_err(&path))?;
        lock_exclusive(&file, true);
        Ok(Ticket { path, _lock: file })
    }

    /// Whether a live ticket sorts before this one.
    fn behind_another(&self, queue: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(queue) else {
            return false;
        };
        let mine = self.path.file_name().unwrap_or_default();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.as_os_str() >= mine {
                continue;
            }
            match std::fs::File::open(entry.path()) {
                // Lockable: its owner is gone.
                Ok(f) if lock_exclusive(&f, false) => {
                    let _ = std::fs::remove_file(entry.path());
                }
                Ok(_) => return true,
                Err(_) => {}
            }
        }
        false
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `flock(LOCK_EX)`, blocking or not; whether it was taken.
fn lock_exclusive(file: &std::fs::File, block: bool) -> bool {
    use std::os::fd::AsRawFd;
    let flags = if block {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a descriptor the caller owns; the lock goes with it.
    unsafe { libc::flock(file.as_raw_fd(), flags) == 0 }
}

impl Slot {
    /// Waits for a free slot. Waiters queue by [`PRIORITY_ENV`], then by
    /// arrival: `cargo xtask test` puts the files with the longest chains of
    /// boots first, so they are not left to run alone at the end.
    fn take() -> Result<Slot> {
        let dir = std::env::var_os(SLOTS_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("berth-qemu-slots"));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let queue = dir.join("queue");
        let ticket = Ticket::take(&queue)?;
        loop {
            if !ticket.behind_another(&queue) {
                for n in 0..MAX_VMS {
                    let path = dir.join(format!("slot-{n}"));
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    if lock_exclusive(&file, false) {
                        return Ok(Slot { _lock: file });
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A poisoned lock only means another test panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---- the console -----------------------------------------------------------

#[derive(Debug, Default)]
struct Transcript {
    bytes: Vec<u8>,
    /// Where the next `expect` starts searching.
    cursor: usize,
    eof: bool,
}

#[derive(Debug, Default)]
struct Console {
    state: Mutex<Transcript>,
    grew: Condvar,
}

/// PID 1's, berthd's and the services' own lines of a transcript, for
/// failure messages (the kernel's are left out).
pub fn berth_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains("berth") || l.contains("ERROR") || l.contains("WARN"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running QEMU. Dropping it kills QEMU (and prints the console transcript
/// if the thread is panicking, i.e. a test failed).
#[derive(Debug)]
pub struct Vm {
    name: String,
    /// QEMU's human monitor, for what a person would do to the machine.
    monitor: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<Console>,
    started: Instant,
    /// How long [`Vm::start`] waited for a slot.
    waited: Duration,
    _scratch: tempfile::TempDir,
    _slot: Slot,
}

impl Vm {
    /// Starts QEMU with the serial console on a pipe. Waits for a free slot
    /// first (at most [`MAX_VMS`] at once).
    pub fn start(config: &Config) -> Result<Vm> {
        let asked = Instant::now();
        let slot = Slot::take()?;
        let waited = asked.elapsed();
        let scratch = tempfile::Builder::new()
            .prefix("berth-qemu-")
            .tempdir()
            .map_err(io_err(Path::new("<tempdir>")))?;
        let mut cmd = config.command(scratch.path())?;
        let monitor = scratch.path().join("monitor.sock");
        cmd.args(["-display", "none", "-serial", "stdio", "-monitor"])
            .arg(format!("unix:{},server=on,wait=off", monitor.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe; it touches no memory of
        // the parent. PR_SET_PDEATHSIG makes the kernel kill QEMU if the test
        // process dies without running Drop (SIGKILL, abort).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: "qemu-system-x86_64".into(),
            source,
        })?;
        let console = Arc::new(Console::default());
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let console = Arc::clone(&console);
            std::thread::spawn(move || pump(stream, &console));
        }
        Ok(Vm {
            name: config.name.clone(),
            monitor,
            stdin: child.stdin.take(),
            child,
            console,
            started,
            waited,
            _scratch: scratch,
            _slot: slot,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits until `pattern` appears on the console after the previous match,
    /// returning the time since QEMU started. Fails with the whole transcript
    /// on timeout or if QEMU exits first.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        let needle = pattern.as_bytes();
        let mut state = lock(&self.console.state);
        loop {
            let from = state.cursor.min(state.bytes.len());
            if let Some(pos) = find(&state.bytes[from..], needle) {
                state.cursor = from + pos + needle.len();
                return Ok(self.started.elapsed());
            }
            if state.eof {
                drop(state);
                let status = self
                    .child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                return Err(Error::Exited {
                    vm: self.name.clone(),
                    pattern: pattern.to_string(),
                    status,
                    transcript: self.transcript(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(state);
                return Err(Error::Timeout {
                    vm: self.name.clone(),
                    pattern: pattern.to_string(),
                    waited: timeout,
                    transcript: self.transcript(),
                });
            }
            state = self
                .console
                .grew
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until `pattern` has appeared anywhere on the console, before or
    /// after the previous match (for lines whose order against others is not
    /// fixed, like two services' output); the cursor does not move.
    pub fn expect_anywhere(&mut self, pattern: &str, timeout: Duration) -> Result<Duration> {
        let cursor = lock(&self.console.state).cursor;
        lock(&self.console.state).cursor = 0;
        let found = self.expect(pattern, timeout);
        lock(&self.console.state).cursor = cursor;
        found
    }

    /// Types `text` on the serial console.
    pub fn send(&mut self, text: &str) -> Result<()> {
        if let Some(stdin) = self.stdin.as_mut() {
            stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush())
                .map_err(io_err(Path::new("<qemu serial>")))?;
        }
        Ok(())
    }

    /// A command on QEMU's monitor, e.g. `system_powerdown` (the ACPI power
    /// button). Returns once QEMU has read it.
    pub fn monitor(&mut self, command: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match std::os::unix::net::UnixStream::connect(&self.monitor) {
                Ok(s) => break s,
                // QEMU creates the socket while it starts.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(io_err(&self.monitor)(e)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io_err(&self.monitor))?;
        stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io_err(&self.monitor))?;
        // The monitor echoes the command back once it has taken it.
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while find(&seen, command.as_bytes()).is_none() {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        Ok(())
    }

    /// Waits for QEMU to exit on its own (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(io_err(Path::new("<qemu>")))? {
                return Ok(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    vm: self.name.clone(),
                    pattern: "<QEMU exit>".into(),
                    waited: timeout,
                    transcript: self.transcript(),
                });
            }
            // Wake on console output (the guest's last words) or every 100 ms:
            // Child has no blocking wait with a timeout.
            let state = lock(&self.console.state);
            let _ = self
                .console
                .grew
                .wait_timeout(state, (deadline - now).min(Duration::from_millis(100)));
        }
    }

    /// Everything the console printed so far (lossy UTF-8, ANSI left in).
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&lock(&self.console.state).bytes).into_owned()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Kill first: a failed expect must not leave QEMU burning a core.
        let _ = self.child.kill();
        let _ = self.child.wait();
        record_time(&self.name, self.waited, self.started.elapsed());
        if std::thread::panicking() {
            eprintln!(
                "{}: console transcript\n{}",
                self.name,
                fence(&self.transcript())
            );
        }
    }
}

/// Appends this VM's line to [`TIMES_ENV`]'s file, if it is set. One short
/// `O_APPEND` write, so lines from concurrent processes do not interleave.
fn record_time(vm: &str, waited: Duration, ran: Duration) {
    let Some(path) = std::env::var_os(TIMES_ENV) else {
        return;
    };
    let file = berth_testkit::binary_name().unwrap_or_default();
    let line = format!(
        "{file}\t{vm}\t{:.1}\t{:.1}\n",
        waited.as_secs_f64(),
        ran.as_secs_f64()
    );
    if let Err(e) = berth_testkit::append_line(Path::new(&path), &line) {
        eprintln!("{}: {e}", Path::new(&path).display());
    }
}

fn pump(mut stream: Box<dyn Read + Send>, console: &Console) {
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        let mut state = lock(&console.state);
        if n == 0 {
            state.eof = true;
            console.grew.notify_all();
            return;
        }
        state.bytes.extend_from_slice(&buf[..n]);
        console.grew.notify_all();
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    #[test]
    fn a_waiter_queues_behind_a_live_ticket_of_higher_priority_and_not_a_dead_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = dir.path().join("queue");
        let mine = Ticket::take(&queue).expect("ticket");
        // Priority 0 sorts before this process's (50 unless set).
        let first = queue.join("000-0-1");
        let held = std::fs::File::create(&first).expect("ticket");
        assert!(lock_exclusive(&held, false));
        assert!(mine.behind_another(&queue));
        // Its owner died: the lock is gone, and so is the ticket.
        drop(held);
        assert!(!mine.behind_another(&queue));
        assert!(!first.exists());
        // A later arrival of the same priority waits behind this one.
        let later = Ticket::take(&queue).expect("ticket");
        assert!(later.behind_another(&queue));
        assert!(!mine.behind_another(&queue));
        drop(mine);
        assert!(!later.behind_another(&queue));
    }
}
