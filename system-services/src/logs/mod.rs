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

mod capture;
mod reader;
mod writer;

pub use capture::*;
pub use reader::*;
pub use writer::*;

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

#[cfg(test)]
mod tests;
