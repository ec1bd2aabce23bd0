//! Service log capture: timestamped, size-rotated files under `/var/log/berth`.
//!
//! Every line a service writes to stdout or stderr lands in
//! `<dir>/<service>.log` as `2026-11-23T08:40:01.123Z stdout hello`. When the
//! file would grow past [`LogConfig::max_file_size`] it is renamed to
//! `<service>.log.1` (older ones shift to `.2`, `.3`, …, the oldest beyond
//! [`LogConfig::max_files`] is overwritten), so a service that floods its output
//! costs at most `(max_files + 1) × max_file_size` of disk.
//!
//! Capture ([`capture`], [`spawn_capture`]) reads a pipe in a thread of its own
//! with a fixed-size buffer, so a flood costs berthd neither memory nor a stall;
//! a disk that is full only drops lines, it never stops the pipe being drained
//! (a service blocked on a full pipe would hang).
//!
//! Reading ([`LogReader`]) serves `berth logs [-f] [--since T] [-n N]` straight
//! from the files: the last N lines across the rotated files, oldest first,
//! and a follower that notices rotation (a new inode behind the name) and
//! truncation (a file shorter than what was read).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use berth_sys::time::Timestamp;

/// Where berthd keeps service logs.
pub const DEFAULT_DIR: &str = "/var/log/berth";

/// The name berthd's own log goes by.
pub const BERTHD: &str = "berthd";

/// A line read back longer than this (not one berthd wrote) is cut, so a
/// corrupt file cannot make the reader hold it whole.
const MAX_READ_LINE: usize = 1 << 20;

/// How much a capture thread reads from its pipe at once.
const READ_CHUNK: usize = 64 * 1024;

/// Length of `2026-11-23T08:40:01.123Z`.

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("`{service}` cannot name a log file")]
    InvalidName { service: String },
    #[error("cannot create log directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open the log of `{service}` at {}: {source}", path.display())]
    Open {
        service: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the log of `{service}` at {}: {source}", path.display())]
    Read {
        service: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the {stream} pipe of `{service}`: {source}")]
    Pipe {
        service: String,
        stream: Stream,
        source: io::Error,
    },
    #[error("cannot start the {stream} log thread of `{service}`: {source}")]
    Spawn {
        service: String,
        stream: Stream,
        source: io::Error,
    },
    #[error("`{text}` is neither a time (2026-11-23T08:40:01Z, 2026-11-23 08:40) nor a duration (10m, 1h30m)")]
    Since { text: String },
}

/// Which output of a service a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn parse(text: &str) -> Option<Stream> {
        match text {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--since`: a time ([`Timestamp::parse`]) or a duration back from `now`
/// (`10m`, `1h30m`, `90s`, bare seconds).
pub fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp, LogError> {
    if let Some(t) = Timestamp::parse(text) {
        return Ok(t);
    }
    let d = berth_configs::forms::Duration::parse(text).map_err(|_| LogError::Since {
        text: text.to_string(),
    })?;
    let ms = i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX);
    Ok(Timestamp(now.0.saturating_sub(ms)))
}

// ---------------------------------------------------------------------------
// Writing.

/// Limits of one service's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// The live file is rotated before it would grow past this.
    pub max_file_size: u64,
    /// Rotated files kept besides the live one; 0 truncates in place.
    pub max_files: usize,
    /// Longer lines are split into lines of at most this many bytes.
    pub max_line: usize,
    /// A partial line (no newline yet) is written out after waiting this long.
    pub flush_after: Duration,
}

impl LogConfig {
    /// The defaults (10 MiB × 3 rotated, 16 KiB lines, 200 ms) in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            max_file_size: 10 << 20,
            max_files: 3,
            max_line: 16 << 10,
            flush_after: Duration::from_millis(200),
        }
    }

    /// The most disk one service's log can take.
    pub fn max_total_size(&self) -> u64 {
        let line = (self.line_limit() + berth_sys::time::TIMESTAMP_LEN + 8 + 1) as u64;
        (self.max_files as u64 + 1).saturating_mul(self.max_file_size.max(line))
    }

    fn line_limit(&self) -> usize {
        // Splitting backs off to a UTF-8 boundary by up to 3 bytes.
        self.max_line.max(16)
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig::new(DEFAULT_DIR)
    }
}

fn live_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.log"))
}

fn rotated_path(dir: &Path, service: &str, n: usize) -> PathBuf {
    dir.join(format!("{service}.log.{n}"))
}

fn check_name(service: &str) -> Result<(), LogError> {
    if berth_configs::validate::valid_service_name(service) {
        Ok(())
    } else {
        Err(LogError::InvalidName {
            service: service.to_string(),
        })
    }
}

/// Counters of one service's log since berthd opened it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub lines: u64,
    pub bytes: u64,
    pub rotations: u64,
    /// Lines lost to write errors (full disk, …).
    pub dropped_lines: u64,
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    service: String,
    path: PathBuf,
    config: LogConfig,
    file: Option<File>,
    size: u64,
    buf: Vec<u8>,
    buf_lines: u64,
    stats: WriterStats,
}

/// The log of one service. Clones share the file, so stdout and stderr (and
/// every restart of the service) write whole lines into one log without
/// tearing each other's lines.
#[derive(Debug, Clone)]
pub struct LogWriter {
    inner: Arc<Mutex<Inner>>,
}

impl LogWriter {
    /// Opens (creating) `<config.dir>/<service>.log` for appending. Keep one
    /// writer per service and clone it: two writers on one file would each
    /// count only their own bytes towards rotation.
    pub fn open(config: &LogConfig, service: &str) -> Result<LogWriter, LogError> {
        check_name(service)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&config.dir)
            .map_err(|source| LogError::CreateDir {
                path: config.dir.clone(),
                source,
            })?;
        let path = live_path(&config.dir, service);
        let file = open_append(&path).map_err(|source| LogError::Open {
            service: service.to_string(),
            path: path.clone(),
            source,
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            inner: Arc::new(Mutex::new(Inner {
                service: service.to_string(),
                path,
                config: config.clone(),
                file: Some(file),
                size,
                buf: Vec::new(),
                buf_lines: 0,
                stats: WriterStats::default(),
            })),
        })
    }

    pub fn service(&self) -> String {
        self.lock().service.clone()
    }

    pub fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    pub fn config(&self) -> LogConfig {
        self.lock().config.clone()
    }

    pub fn stats(&self) -> WriterStats {
        self.lock().stats.clone()
    }

    /// Writes `text` as lines of `stream` stamped now: split at newlines and at
    /// the line limit; a trailing part without newline is a line too.
    pub fn write_text(&self, stream: Stream, text: &[u8]) {
        let max_line = self.lock().config.line_limit();
        let mut splitter = Splitter::new(max_line);
        let mut batch = Batch::default();
        splitter.feed(text, &mut batch);
        splitter.finish(&mut batch);
        self.write_batch(stream, Timestamp::now(), &batch);
    }

    fn write_batch(&self, stream: Stream, time: Timestamp, batch: &Batch) {
        if batch.ends.is_empty() {
            return;
        }
        let mut prefix = [0u8; berth_sys::time::TIMESTAMP_LEN + 8];
        prefix[..berth_sys::time::TIMESTAMP_LEN].copy_from_slice(&time.format());
        prefix[berth_sys::time::TIMESTAMP_LEN] = b' ';
        let name = stream.as_str().as_bytes();
        prefix[berth_sys::time::TIMESTAMP_LEN + 1..berth_sys::time::TIMESTAMP_LEN + 1 + name.len()]
            .copy_from_slice(name);
        prefix[berth_sys::time::TIMESTAMP_LEN + 1 + name.len()] = b' ';
        let prefix = &prefix[..berth_sys::time::TIMESTAMP_LEN + 2 + name.len()];

        let mut inner = self.lock();
        let mut start = 0;
        for &end in &batch.ends {
            let line = &batch.data[start..end];
            start = end;
            let len = (prefix.len() + line.len() + 1) as u64;
            let pending = inner.size + inner.buf.len() as u64;
            if pending > 0 && pending + len > inner.config.max_file_size {
                inner.flush();
                inner.rotate();
            }
            inner.buf.extend_from_slice(prefix);
            inner.buf.extend_from_slice(line);
            inner.buf.push(b'\n');
            inner.buf_lines += 1;
        }
        inner.flush();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves nothing half-done
        // that matters more than keeping the logs flowing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl Inner {
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.file.is_none() {
            // The last rotation could not reopen the file; try again.
            match open_append(&self.path) {
                Ok(f) => {
                    self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(f);
                }
                Err(e) => self.fail(e),
            }
        }
        let result = match &mut self.file {
            Some(f) => f.write_all(&self.buf),
            None => Ok(()),
        };
        match (&self.file, result) {
            (Some(_), Ok(())) => {
                self.size += self.buf.len() as u64;
                self.stats.lines += self.buf_lines;
                self.stats.bytes += self.buf.len() as u64;
            }
            (Some(f), Err(e)) => {
                // Part may have been written; the file knows how much.
                self.size = f.metadata().map(|m| m.len()).unwrap_or(self.size);
                self.stats.dropped_lines += self.buf_lines;
                self.fail(e);
            }
            (None, _) => self.stats.dropped_lines += self.buf_lines,
        }
        self.buf.clear();
        self.buf_lines = 0;
    }

    fn fail(&mut self, e: io::Error) {
        self.stats.last_error = Some(format!("{}: {e}", self.path.display()));
    }

    fn rotate(&mut self) {
        self.stats.rotations += 1;
        let (dir, service, keep) = (&self.config.dir, &self.service, self.config.max_files);
        if keep == 0 {
            self.truncate();
            return;
        }
        self.file = None;
        let mut failed = None;
        for n in (1..keep).rev() {
            match fs::rename(
                rotated_path(dir, service, n),
                rotated_path(dir, service, n + 1),
            ) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => failed = Some(e),
                _ => {}
            }
        }
        match fs::rename(&self.path, rotated_path(dir, service, 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => failed = Some(e),
            _ => {}
        }
        if let Some(e) = failed {
            self.fail(e);
        }
        match open_append(&self.path) {
            Ok(f) => {
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(f);
                if self.size >= self.config.max_file_size {
                    // The rename failed: the file is still the full one, and
                    // the disk limit matters more than its contents.
                    self.truncate();
                }
            }
            Err(e) => self.fail(e),
        }
    }

    fn truncate(&mut self) {
        let result = match &self.file {
            Some(f) => f.set_len(0),
            None => Ok(()),
        };
        match result {
            Ok(()) => self.size = 0,
            Err(e) => self.fail(e),
        }
    }
}

/// Lines cut from a byte stream, stored end to end.
#[derive(Debug, Default)]
struct Batch {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, line: &[u8]) {
        self.data.extend_from_slice(line);
        self.ends.push(self.data.len());
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }
}

/// Cuts bytes into lines of at most `max` bytes, holding back a partial one.
#[derive(Debug)]
struct Splitter {
    max: usize,
    pending: Vec<u8>,
}

impl Splitter {
    fn new(max: usize) -> Splitter {
        Splitter {
            max,
            pending: Vec::with_capacity(max),
        }
    }

    fn feed(&mut self, mut data: &[u8], out: &mut Batch) {
        while !data.is_empty() {
            let room = self.max - self.pending.len();
            // A newline right after `room` bytes still ends a line of `max`.
            let window = &data[..data.len().min(room + 1)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                if self.pending.is_empty() {
                    out.push(&data[..i]);
                } else {
                    self.pending.extend_from_slice(&data[..i]);
                    out.push(&self.pending);
                    self.pending.clear();
                }
                data = &data[i + 1..];
                continue;
            }
            let take = data.len().min(room);
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() >= self.max {
                let cut = utf8_cut(&self.pending);
                out.push(&self.pending[..cut]);
                self.pending.drain(..cut);
            }
        }
    }

    /// Emits the partial line, if any.
    fn finish(&mut self, out: &mut Batch) {
        if !self.pending.is_empty() {
            out.push(&self.pending);
            self.pending.clear();
        }
    }
}

/// Where to cut a full line so that it does not end inside a UTF-8
/// character (when it looks like UTF-8 at all): before a lead byte whose
/// continuation bytes have not all arrived.
fn utf8_cut(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let b = bytes[len - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back && back < len {
            len - back
        } else {
            len
        };
    }
    len
}

/// What a capture copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub bytes: u64,
    pub lines: u64,
}

/// Copies `fd` (the read end of a service's stdout or stderr pipe) into
/// `writer` until EOF, in the calling thread.
pub fn capture(writer: &LogWriter, fd: OwnedFd, stream: Stream) -> Result<CaptureStats, LogError> {
    let config = writer.config();
    let pipe_error = |source| LogError::Pipe {
        service: writer.service(),
        stream,
        source,
    };
    let mut pipe = File::from(fd);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut splitter = Splitter::new(config.line_limit());
    let mut batch = Batch::default();
    let mut stats = CaptureStats::default();
    let mut partial_since: Option<Instant> = None;
    loop {
        // Without a partial line there is nothing to time out for.
        let wait = partial_since.map(|t| config.flush_after.saturating_sub(t.elapsed()));
        let readable = match wait {
            Some(w) if w.is_zero() => false,
            Some(w) => wait_readable(pipe.as_fd(), Some(w)).map_err(pipe_error)?,
            None => true,
        };
        if !readable {
            splitter.finish(&mut batch);
            stats.lines += batch.ends.len() as u64;
            writer.write_batch(stream, Timestamp::now(), &batch);
            batch.clear();
            partial_since = None;
            continue;
        }
        let n = match pipe.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // A non-blocking pipe: wait for it like a blocking read would.
                wait_readable(pipe.as_fd(), wait).map_err(pipe_error)?;
                continue;
            }
            Err(e) => return Err(pipe_error(e)),
        };
        if n == 0 {
            splitter.finish(&mut batch);
        } else {
            stats.bytes += n as u64;
            splitter.feed(&buf[..n], &mut batch);
        }
        let emitted = !batch.ends.is_empty();
        stats.lines += batch.ends.len() as u64;
        writer.write_batch(stream, Timestamp::now(), &batch);
        batch.clear();
        if n == 0 {
            return Ok(stats);
        }
        // The partial line's clock starts with its first byte.
        partial_since = match (splitter.pending.is_empty(), partial_since) {
            (true, _) => None,
            (false, Some(t)) if !emitted => Some(t),
            (false, _) => Some(Instant::now()),
        };
    }
}

/// [`capture`] in a thread of its own; join it for the result after the
/// service exits (the pipe's write ends all closed).
pub fn spawn_capture(
    writer: LogWriter,
    fd: OwnedFd,
    stream: Stream,
) -> Result<JoinHandle<Result<CaptureStats, LogError>>, LogError> {
    let service = writer.service();
    std::thread::Builder::new()
        .name(format!("log {service} {stream}"))
        // Buffers live on the heap; the thread itself needs little.
        .stack_size(256 << 10)
        .spawn(move || capture(&writer, fd, stream))
        .map_err(|source| LogError::Spawn {
            service,
            stream,
            source,
        })
}

/// Waits until `fd` is readable (or hung up); false on timeout.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let ms = match timeout {
        // Round up: a timeout rounded down to 0 would spin.
        Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
        None => -1,
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid, initialised pollfd that outlives the
        // call, matching nfds = 1; `fd` is borrowed, so it stays open.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A pipe for a service's stdout or stderr: (read end, write end), both
/// close-on-exec (the runtime dups the write end onto the container's fd 1/2).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One [`LogWriter`] per service name, so that restarts of a service and its
/// two streams share one file and one size count.
#[derive(Debug)]
pub struct LogDir {
    config: LogConfig,
    writers: Mutex<BTreeMap<String, LogWriter>>,
}

impl LogDir {
    pub fn new(config: LogConfig) -> LogDir {
        LogDir {
            config,
            writers: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The writer of `service`, opened on first use.
    pub fn writer(&self, service: &str) -> Result<LogWriter, LogError> {
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = writers.get(service) {
            return Ok(w.clone());
        }
        let w = LogWriter::open(&self.config, service)?;
        writers.insert(service.to_string(), w.clone());
        Ok(w)
    }

    pub fn reader(&self, service: &str) -> Result<LogReader, LogError> {
        LogReader::new(&self.config.dir, service)
    }
}

/// berthd's own log, through the same writer as the services' (service
/// [`BERTHD`]), as the `log` crate's backend.
#[derive(Debug)]
pub struct Logger {
    writer: LogWriter,
    level: log::LevelFilter,
    echo: bool,
}

impl Logger {
    pub fn new(writer: LogWriter, level: log::LevelFilter) -> Logger {
        Logger {
            writer,
            level,
            echo: false,
        }
    }

    /// Also print each line on berthd's stderr (the console, before the
    /// state disk is there to hold the file).
    pub fn with_stderr(mut self, echo: bool) -> Logger {
        self.echo = echo;
        self
    }

    /// Makes this the process's logger.
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        let level = self.level;
        log::set_logger(Box::leak(Box::new(self)))?;
        log::set_max_level(level);
        Ok(())
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = format!("{} {}: {}", record.level(), record.target(), record.args());
        self.writer.write_text(Stream::Stderr, text.as_bytes());
        if self.echo {
            // Nowhere to report a failing stderr; the file has the line.
            let _ = writeln!(io::stderr().lock(), "{text}");
        }
    }

    fn flush(&self) {}
}

// ---------------------------------------------------------------------------
// Reading.

/// One line of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The line as stored, without its newline (invalid UTF-8 replaced).
    pub line: String,
    /// `None` for a line not in berthd's format.
    pub timestamp: Option<Timestamp>,
}

impl LogLine {
    fn new(bytes: &[u8]) -> LogLine {
        let line = String::from_utf8_lossy(bytes).into_owned();
        let timestamp = line.split(' ').next().and_then(Timestamp::parse);
        LogLine { line, timestamp }
    }

    pub fn stream(&self) -> Option<Stream> {
        self.timestamp?;
        self.line.split(' ').nth(1).and_then(Stream::parse)
    }

    /// What the service wrote, without timestamp and stream.
    pub fn message(&self) -> &str {
        if self.stream().is_none() {
            return &self.line;
        }
        self.line.splitn(3, ' ').nth(2).unwrap_or_default()
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

/// Which lines of a log to show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Query {
    /// Only the last N lines (`-n N`).
    pub tail: Option<usize>,
    /// Only lines stamped at or after this (`--since`).
    pub since: Option<Timestamp>,
}

/// Reads one service's log files, live and rotated.
#[derive(Debug, Clone)]
pub struct LogReader {
    dir: PathBuf,
    service: String,
}

/// An open log file and where reading it starts.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    file: File,
    ino: u64,
    start: u64,
}

impl LogReader {
    pub fn new(dir: impl Into<PathBuf>, service: &str) -> Result<LogReader, LogError> {
        check_name(service)?;
        Ok(LogReader {
            dir: dir.into(),
            service: service.to_string(),
        })
    }

    /// The log files there are now, oldest first (the live one last).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = (1..)
            .map(|n| rotated_path(&self.dir, &self.service, n))
            .take_while(|p| p.exists())
            .collect();
        out.reverse();
        let live = live_path(&self.dir, &self.service);
        if live.exists() {
            out.push(live);
        }
        out
    }

    /// The lines `query` selects, oldest first, read as the iterator goes.
    /// A partial last line (being written) is left out.
    pub fn lines(&self, query: &Query) -> Result<Lines, LogError> {
        Ok(Lines {
            cursor: self.cursor(query)?,
        })
    }

    /// Like [`LogReader::lines`], then every line written after, across
    /// rotations, for as long as the [`Follow`] is kept.
    pub fn follow(&self, query: &Query) -> Result<Follow, LogError> {
        Ok(Follow {
            cursor: self.cursor(query)?,
            poll: Duration::from_millis(100),
        })
    }

    fn read_error(&self, path: &Path, source: io::Error) -> LogError {
        LogError::Read {
            service: self.service.clone(),
            path: path.to_path_buf(),
            source,
        }
    }

    fn open(&self, path: &Path) -> Result<Option<Source>, LogError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LogError::Open {
                    service: self.service.clone(),
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        };
        let ino = file.metadata().map_err(|e| self.read_error(path, e))?.ino();
        Ok(Some(Source {
            path: path.to_path_buf(),
            file,
            ino,
            start: 0,
        }))
    }

    /// Opens the files (newest first, so a rotation meanwhile shows up as
    /// an inode seen twice rather than a file missed) and finds the start.
    fn cursor(&self, query: &Query) -> Result<Cursor, LogError> {
        let mut sources: Vec<Source> = Vec::new();
        let live = live_path(&self.dir, &self.service);
        let mut paths = vec![live];
        for n in 1.. {
            let p = rotated_path(&self.dir, &self.service, n);
            if !p.exists() {
                break;
            }
            paths.push(p);
        }
        for path in paths {
            if let Some(s) = self.open(&path)? {
                if !sources.iter().any(|o| o.ino == s.ino) {
                    sources.push(s);
                }
            }
        }
        sources.reverse();

        if let Some(since) = query.since {
            // Whole files that end before `since` need no reading.
            while sources.len() > 1 {
                let last = last_line(&sources[0].file)
                    .map_err(|e| self.read_error(&sources[0].path, e))?;
                match last.and_then(|l| LogLine::new(&l).timestamp) {
                    Some(t) if t < since => {
                        sources.remove(0);
                    }
                    _ => break,
                }
            }
        }
        if let Some(mut need) = query.tail {
            let mut first = 0;
            for (i, s) in sources.iter_mut().enumerate().rev() {
                let (start, found) =
                    lines_from_end(&s.file, need).map_err(|e| self.read_error(&s.path, e))?;
                s.start = start;
                need -= found;
                first = i;
                if need == 0 {
                    break;
                }
            }
            sources.drain(..first);
        }
        let mut cursor = Cursor {
            reader: self.clone(),
            queue: sources.into(),
            current: None,
            pending: Vec::new(),
            since: query.since,
            passing: query.since.is_none(),
        };
        cursor.advance()?;
        Ok(cursor)
    }
}

/// The last complete line of `file`, if any.
fn last_line(file: &File) -> io::Result<Option<Vec<u8>>> {
    let (start, found) = lines_from_end(file, 1)?;
    if found == 0 {
        return Ok(None);
    }
    let mut f = file;
    f.seek(SeekFrom::Start(start))?;
    let mut line = Vec::new();
    BufReader::new(f)
        .take(MAX_READ_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(Some(line))
}

/// Where the last `n` complete lines of `file` start, and how many there
/// are (fewer than `n` when the file holds fewer).
fn lines_from_end(file: &File, n: usize) -> io::Result<(u64, usize)> {
    let len = file.metadata()?.len();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut end = len;
    // The (n+1)th newline from the end closes the line before the first one
    // wanted; the first newline closes the last complete line.
    let mut newlines = 0;
    while end > 0 {
        let start = end.saturating_sub(READ_CHUNK as u64);
        // Within READ_CHUNK, so it fits in usize.
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        for (i, &b) in chunk.iter().enumerate().rev() {
            if b == b'\n' {
                newlines += 1;
                if newlines == n + 1 {
                    return Ok((start + i as u64 + 1, n));
                }
            }
        }
        end = start;
    }
    Ok((0, newlines))
}

#[derive(Debug)]
struct Current {
    path: PathBuf,
    reader: BufReader<File>,
    ino: u64,
    /// Bytes consumed from the file, buffered or not.
    offset: u64,
}

#[derive(Debug)]
struct Cursor {
    reader: LogReader,
    queue: VecDeque<Source>,
    current: Option<Current>,
    pending: Vec<u8>,
    since: Option<Timestamp>,
    /// Whether the last stamped line passed `since`: a line without a stamp
    /// goes with the one before it.
    passing: bool,
}

enum Step {
    Line(LogLine),
    /// The end of what the live file holds now.
    End,
}

impl Cursor {
    /// Moves on to the next queued file.
    fn advance(&mut self) -> Result<bool, LogError> {
        let Some(s) = self.queue.pop_front() else {
            return Ok(false);
        };
        let mut file = s.file;
        file.seek(SeekFrom::Start(s.start))
            .map_err(|e| self.reader.read_error(&s.path, e))?;
        self.current = Some(Current {
            path: s.path,
            reader: BufReader::with_capacity(READ_CHUNK, file),
            ino: s.ino,
            offset: s.start,
        });
        Ok(true)
    }

    /// The next line that passes the filter, or the end of the data for now.
    fn step(&mut self) -> Result<Step, LogError> {
        loop {
            let Some(bytes) = self.raw_line()? else {
                return Ok(Step::End);
            };
            let line = LogLine::new(&bytes);
            if let (Some(since), Some(t)) = (self.since, line.timestamp) {
                self.passing = t >= since;
            }
            if self.passing {
                return Ok(Step::Line(line));
            }
        }
    }

    /// The next complete line; at the end of a file that is not the live one,
    /// its unterminated tail counts as a line (nothing more will come).
    fn raw_line(&mut self) -> Result<Option<Vec<u8>>, LogError> {
        loop {
            let Some(cur) = self.current.as_mut() else {
                return Ok(None);
            };
            let room = (MAX_READ_LINE - self.pending.len()) as u64;
            let before = self.pending.len();
            let read = (&mut cur.reader)
                .take(room)
                .read_until(b'\n', &mut self.pending);
            let n = match read {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.reader.read_error(&cur.path, e)),
            };
            cur.offset += n as u64;
            if self.pending.last() == Some(&b'\n') && self.pending.len() > before {
                self.pending.pop();
                return Ok(Some(std::mem::take(&mut self.pending)));
            }
            if self.pending.len() >= MAX_READ_LINE {
                return Ok(Some(std::mem::take(&mut self.pending)));
            }
            // End of this file for now.
            if self.queue.is_empty() {
                return Ok(None);
            }
            let tail = std::mem::take(&mut self.pending);
            self.advance()?;
            if !tail.is_empty() {
                return Ok(Some(tail));
            }
        }
    }

    /// After the live file ran dry: has it been rotated or truncated? Queues
    /// what to read next; false when nothing changed.
    fn check_rotation(&mut self) -> Result<bool, LogError> {
        let dir = &self.reader.dir;
        let service = &self.reader.service;
        let live = live_path(dir, service);
        let Some(cur) = self.current.as_mut() else {
            // No file yet: wait for the service's first line.
            return match self.reader.open(&live)? {
                Some(s) => {
                    self.queue.push_back(s);
                    self.advance()
                }
                None => Ok(false),
            };
        };
        let now = match fs::metadata(&live) {
            Ok(m) => Some(m.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.reader.read_error(&live, e)),
        };
        if now == Some(cur.ino) {
            let len = cur
                .reader
                .get_ref()
                .metadata()
                .map_err(|e| self.reader.read_error(&cur.path, e))?
                .len();
            if len >= cur.offset {
                return Ok(false);
            }
            // Truncated in place: start over from its beginning.
            cur.reader
                .seek(SeekFrom::Start(0))
                .map_err(|e| self.reader.read_error(&cur.path, e))?;
            cur.offset = 0;
            self.pending.clear();
            return Ok(true);
        }
        // The file we read was renamed away. It is complete (berthd renames
        // only after writing), so what follows it is the file that now sits
        // one place newer than it: `.log.{k-1}` if it is `.log.k` now.
        let old_ino = cur.ino;
        let mut next = None;
        for k in 1.. {
            let p = rotated_path(dir, service, k);
            match fs::metadata(&p) {
                Ok(m) if m.ino() == old_ino => {
                    next = Some(if k == 1 {
                        live.clone()
                    } else {
                        rotated_path(dir, service, k - 1)
                    });
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // Gone altogether (rotated past the last kept): the oldest there is.
        let next = match next {
            Some(p) => p,
            None => match self.reader.files().into_iter().next() {
                Some(p) => p,
                None => return Ok(false),
            },
        };
        match self.reader.open(&next)? {
            // Between the rename and the new file's creation.
            None => Ok(false),
            Some(s) if s.ino == old_ino => Ok(false),
            Some(s) => {
                self.queue.push_back(s);
                Ok(true)
            }
        }
    }
}

/// Lines of a log, oldest first ([`LogReader::lines`]).
#[derive(Debug)]
pub struct Lines {
    cursor: Cursor,
}

impl Iterator for Lines {
    type Item = Result<LogLine, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.cursor.step() {
            Ok(Step::Line(l)) => Some(Ok(l)),
            Ok(Step::End) => None,
            Err(e) => {
                // One error ends the iteration rather than repeating forever.
                self.cursor.current = None;
                self.cursor.queue.clear();
                Some(Err(e))
            }
        }
    }
}

/// `berth logs -f` ([`LogReader::follow`]): the selected lines, then each new
/// one as it is written. As an iterator it blocks and never ends.
#[derive(Debug)]
pub struct Follow {
    cursor: Cursor,
    poll: Duration,
}

impl Follow {
    /// How often to look for new lines and rotation (default 100 ms).
    pub fn with_poll_interval(mut self, poll: Duration) -> Follow {
        self.poll = poll;
        self
    }

    /// The next line, waiting at most `timeout` (forever with `None`).
    pub fn next_line(&mut self, timeout: Option<Duration>) -> Result<Option<LogLine>, LogError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Step::Line(l) = self.cursor.step()? {
                return Ok(Some(l));
            }
            if self.cursor.check_rotation()? {
                continue;
            }
            let nap = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.min(self.poll)
                }
                None => self.poll,
            };
            std::thread::sleep(nap);
        }
    }
}

impl Iterator for Follow {
    type Item = Result<LogLine, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_line(None).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_durations() {
        let now = Timestamp(1_000_000_000);
        assert_eq!(
            parse_since("10m", now).ok(),
            Some(Timestamp(1_000_000_000 - 600_000))
        );
        assert_eq!(
            parse_since("90", now).ok(),
            Some(Timestamp(1_000_000_000 - 90_000))
        );
        assert_eq!(
            parse_since("1970-01-02", now).ok(),
            Some(Timestamp(86_400_000))
        );
        assert!(matches!(
            parse_since("soon", now),
            Err(LogError::Since { .. })
        ));
    }

    #[test]
    fn splitter_cuts_lines_and_long_ones() {
        let mut s = Splitter::new(8);
        let mut b = Batch::default();
        s.feed(b"abc\n12345678\n123456789\nxy", &mut b);
        let lines: Vec<&[u8]> = b
            .ends
            .iter()
            .scan(0, |start, &end| {
                let l = &b.data[*start..end];
                *start = end;
                Some(l)
            })
            .collect();
        assert_eq!(lines, [&b"abc"[..], b"12345678", b"12345678", b"9"]);
        assert_eq!(s.pending, b"xy");
        // Never splits a UTF-8 character.
        let mut s = Splitter::new(8);
        let mut b = Batch::default();
        s.feed("1234567é\n".as_bytes(), &mut b);
        assert_eq!(&b.data[..b.ends[0]], b"1234567");
        assert_eq!(&b.data[b.ends[0]..], "é".as_bytes());
    }

    #[test]
    fn log_lines_parse() {
        let l = LogLine::new(b"2026-11-23T08:40:01.123Z stderr hello world");
        assert_eq!(l.timestamp, Some(Timestamp(1_795_423_201_123)));
        assert_eq!(l.stream(), Some(Stream::Stderr));
        assert_eq!(l.message(), "hello world");
        let l = LogLine::new(b"garbage here");
        assert_eq!(
            (l.timestamp, l.stream(), l.message()),
            (None, None, "garbage here")
        );
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        for bad in ["../etc/passwd", "a/b", "", ".hidden"] {
            assert!(LogReader::new("/tmp", bad).is_err(), "{bad}");
            assert!(
                LogWriter::open(&LogConfig::new("/nonexistent"), bad).is_err(),
                "{bad}"
            );
        }
    }
}
