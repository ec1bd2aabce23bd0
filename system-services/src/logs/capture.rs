//! Pipe capture: a service's stdout and stderr copied into its log by a
//! thread of their own.

use super::*;

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
pub(super) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
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
