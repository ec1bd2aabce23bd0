//! Writing: one file per service, size-rotated, lines cut to a limit.

use super::*;

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

    pub(super) fn line_limit(&self) -> usize {
        // Splitting backs off to a UTF-8 boundary by up to 3 bytes.
        self.max_line.max(16)
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig::new(DEFAULT_DIR)
    }
}

pub(super) fn live_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.log"))
}

pub(super) fn rotated_path(dir: &Path, service: &str, n: usize) -> PathBuf {
    dir.join(format!("{service}.log.{n}"))
}

pub(super) fn check_name(service: &str) -> Result<(), LogError> {
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
pub(super) struct Inner {
    service: String,
    path: PathBuf,
    config: LogConfig,
    file: Option<File>,
    size: u64,
    buf: Vec<u8>,
    buf_lines: u64,
    stats: WriterStats,
    /// While writes fail: `dropped_lines` when they began to.
    failing_since: Option<u64>,
    /// When the console last heard that a full disk recycles this log.
    recycled_notice: Option<std::time::Instant>,
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
                failing_since: None,
                recycled_notice: None,
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

    pub(super) fn write_batch(&self, stream: Stream, time: Timestamp, batch: &Batch) {
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
        let mut notices = Vec::new();
        let mut start = 0;
        for &end in &batch.ends {
            let line = &batch.data[start..end];
            start = end;
            let len = (prefix.len() + line.len() + 1) as u64;
            let pending = inner.size + inner.buf.len() as u64;
            if pending > 0 && pending + len > inner.config.max_file_size {
                notices.extend(inner.flush());
                inner.rotate();
            }
            inner.buf.extend_from_slice(prefix);
            inner.buf.extend_from_slice(line);
            inner.buf.push(b'\n');
            inner.buf_lines += 1;
        }
        notices.extend(inner.flush());
        drop(inner);
        for notice in notices {
            // On berthd's stderr, which is the console: the log files may be
            // what cannot be written, and berthd's own log is one of them.
            eprintln!("berthd: logs: {notice}");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves nothing half-done
        // that matters more than keeping the logs flowing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl Inner {
    /// Writes the buffer out. Returns what the console should hear when
    /// writing starts to fail or works again.
    fn flush(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
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
        let mut freed = 0;
        let result = loop {
            let Some(f) = &mut self.file else {
                break Err(None);
            };
            let start = self.size;
            match f.write_all(&self.buf) {
                Ok(()) => break Ok(()),
                Err(e) => {
                    // Part may have been written; the file knows how much.
                    self.size = f.metadata().map(|m| m.len()).unwrap_or(self.size);
                    let written = self.size.saturating_sub(start) as usize;
                    self.buf.drain(..written.min(self.buf.len()));
                    // A full disk: this service's oldest rotated file goes
                    // first, so its newest lines still land.
                    if e.raw_os_error() == Some(libc::ENOSPC) && self.remove_oldest_rotated() {
                        freed += 1;
                        continue;
                    }
                    break Err(Some(e));
                }
            }
        };
        let mut notice = None;
        match result {
            Ok(()) => {
                self.size += self.buf.len() as u64;
                self.stats.lines += self.buf_lines;
                self.stats.bytes += self.buf.len() as u64;
                if let Some(since) = self.failing_since.take() {
                    notice = Some(format!(
                        "{}: writing again; {} lines were dropped",
                        self.service,
                        self.stats.dropped_lines - since
                    ));
                }
            }
            Err(e) => {
                if let Some(e) = e {
                    self.fail(e);
                }
                if self.failing_since.is_none() {
                    self.failing_since = Some(self.stats.dropped_lines);
                    notice = Some(format!(
                        "{}: {}; its lines are dropped until it can be written",
                        self.service,
                        self.stats.last_error.as_deref().unwrap_or("cannot write")
                    ));
                }
                self.stats.dropped_lines += self.buf_lines;
            }
        }
        // A log that rotates on a full disk recycles its own files all the
        // time: say so once a minute, not once a file.
        let quiet = self
            .recycled_notice
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
        if freed > 0 && !quiet {
            self.recycled_notice = Some(std::time::Instant::now());
            let freed = format!(
                "{}: the disk is full; its oldest rotated log files make room for its new lines",
                self.service
            );
            notice = Some(match notice {
                Some(n) => format!("{freed}; {n}"),
                None => freed,
            });
        }
        self.buf.clear();
        self.buf_lines = 0;
        notice
    }

    /// Removes this service's oldest rotated file; false when it has none.
    fn remove_oldest_rotated(&mut self) -> bool {
        (1..=self.config.max_files)
            .rev()
            .map(|n| rotated_path(&self.config.dir, &self.service, n))
            .any(|p| fs::remove_file(p).is_ok())
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
pub(super) struct Batch {
    pub(super) data: Vec<u8>,
    pub(super) ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, line: &[u8]) {
        self.data.extend_from_slice(line);
        self.ends.push(self.data.len());
    }

    pub(super) fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }
}

/// Cuts bytes into lines of at most `max` bytes, holding back a partial one.
#[derive(Debug)]
pub(super) struct Splitter {
    max: usize,
    pub(super) pending: Vec<u8>,
}

impl Splitter {
    pub(super) fn new(max: usize) -> Splitter {
        Splitter {
            max,
            pending: Vec::with_capacity(max),
        }
    }

    pub(super) fn feed(&mut self, mut data: &[u8], out: &mut Batch) {
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
    pub(super) fn finish(&mut self, out: &mut Batch) {
        if !self.pending.is_empty() {
            out.push(&self.pending);
            self.pending.clear();
        }
    }
}

/// Where to cut a full line so that it does not end inside a UTF-8
/// character (when it looks like UTF-8 at all): before a lead byte whose
/// continuation bytes have not all arrived.
pub(super) fn utf8_cut(bytes: &[u8]) -> usize {
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
