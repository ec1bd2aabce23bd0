//! Reading and following: `berth logs [-f] [--since T] [-n N]` straight
//! from the files, across rotation and truncation.

use super::*;

/// One line of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The line as stored, without its newline (invalid UTF-8 replaced).
    pub line: String,
    /// `None` for a line not in berthd's format.
    pub timestamp: Option<Timestamp>,
}

impl LogLine {
    pub(super) fn new(bytes: &[u8]) -> LogLine {
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
pub(super) struct Source {
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
pub(super) fn last_line(file: &File) -> io::Result<Option<Vec<u8>>> {
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
pub(super) fn lines_from_end(file: &File, n: usize) -> io::Result<(u64, usize)> {
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
pub(super) struct Current {
    path: PathBuf,
    reader: BufReader<File>,
    ino: u64,
    /// Bytes consumed from the file, buffered or not.
    offset: u64,
}

#[derive(Debug)]
pub(super) struct Cursor {
    reader: LogReader,
    queue: VecDeque<Source>,
    current: Option<Current>,
    pending: Vec<u8>,
    since: Option<Timestamp>,
    /// Whether the last stamped line passed `since`: a line without a stamp
    /// goes with the one before it.
    passing: bool,
}

pub(super) enum Step {
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
