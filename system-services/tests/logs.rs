//! Log capture and reading with real pipes and threads.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use berthd::logs::{
    parse_since, pipe, spawn_capture, LogConfig, LogDir, LogLine, LogReader, LogWriter, Logger,
    Query, Stream, Timestamp,
};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn small(dir: &Path, max_file_size: u64, max_files: usize) -> LogConfig {
    LogConfig {
        max_file_size,
        max_files,
        ..LogConfig::new(dir)
    }
}

fn messages(lines: impl IntoIterator<Item = LogLine>) -> Vec<String> {
    lines.into_iter().map(|l| l.message().to_string()).collect()
}

fn read_all(reader: &LogReader, query: &Query) -> Result<Vec<LogLine>> {
    Ok(reader
        .lines(query)?
        .collect::<std::result::Result<_, _>>()?)
}

fn numbered(from: usize, to: usize) -> Vec<String> {
    (from..=to).map(|i| format!("line {i:03}")).collect()
}

fn write_numbered(writer: &LogWriter, from: usize, to: usize) {
    for line in numbered(from, to) {
        writer.write_text(Stream::Stdout, line.as_bytes());
    }
}

#[test]
fn lines_are_captured_with_timestamps_and_streams() -> Result {
    let dir = tempfile::tempdir()?;
    let logs = LogDir::new(LogConfig::new(dir.path()));
    let writer = logs.writer("web")?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let before = Timestamp::now();
    let out = spawn_capture(writer.clone(), out_r, Stream::Stdout)?;
    let err = spawn_capture(logs.writer("web")?, err_r, Stream::Stderr)?;
    File::from(out_w).write_all(b"hello\nworld\n")?;
    File::from(err_w).write_all(b"oops\n")?;
    let out = out.join().map_err(|_| "stdout thread panicked")??;
    let err = err.join().map_err(|_| "stderr thread panicked")??;
    let after = Timestamp::now();
    assert_eq!((out.lines, out.bytes, err.lines), (2, 12, 1));

    let text = fs::read_to_string(dir.path().join("web.log"))?;
    assert_eq!(text.lines().count(), 3, "{text}");
    for raw in text.lines() {
        // 2026-11-23T08:40:01.123Z stdout hello
        let (stamp, rest) = raw.split_once(' ').ok_or("no space")?;
        assert_eq!(stamp.len(), 24, "{raw}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
            "{raw}"
        );
        let t = Timestamp::parse(stamp).ok_or("bad stamp")?;
        assert!(before <= t && t <= after, "{raw}");
        assert!(
            ["stdout hello", "stdout world", "stderr oops"].contains(&rest),
            "{raw}"
        );
    }
    let lines = read_all(&logs.reader("web")?, &Query::default())?;
    let mut got: Vec<(Option<Stream>, String)> = lines
        .iter()
        .map(|l| (l.stream(), l.message().to_string()))
        .collect();
    got.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        got,
        [
            (Some(Stream::Stdout), "hello".to_string()),
            (Some(Stream::Stderr), "oops".to_string()),
            (Some(Stream::Stdout), "world".to_string()),
        ]
    );
    Ok(())
}

#[test]
fn partial_lines_are_flushed_after_a_while_and_at_eof() -> Result {
    let dir = tempfile::tempdir()?;
    let config = LogConfig {
        flush_after: Duration::from_millis(100),
        ..LogConfig::new(dir.path())
    };
    let writer = LogWriter::open(&config, "shell")?;
    let (r, w) = pipe()?;
    let capture = spawn_capture(writer, r, Stream::Stdout)?;
    let mut w = File::from(w);
    w.write_all(b"prompt> ")?;
    let reader = LogReader::new(dir.path(), "shell")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = messages(read_all(&reader, &Query::default())?);
        if lines == ["prompt> "] {
            break;
        }
        assert!(lines.is_empty(), "{lines:?}");
        assert!(Instant::now() < deadline, "the partial line never came");
        thread::sleep(Duration::from_millis(20));
    }
    // The pipe is still open: the flush came from the timer, not EOF.
    w.write_all(b"ls\nno newline at the end")?;
    drop(w);
    capture.join().map_err(|_| "capture panicked")??;
    let lines = messages(read_all(&reader, &Query::default())?);
    assert_eq!(lines, ["prompt> ", "ls", "no newline at the end"]);
    Ok(())
}

#[test]
fn long_lines_are_split() -> Result {
    let dir = tempfile::tempdir()?;
    let writer = LogWriter::open(&LogConfig::new(dir.path()), "chatty")?;
    let (r, w) = pipe()?;
    let capture = spawn_capture(writer, r, Stream::Stderr)?;
    let long = "x".repeat(40 * 1024);
    // Written from another thread: 40 KiB may not fit the pipe at once.
    let feeder =
        thread::spawn(move || File::from(w).write_all(format!("{long}\nshort\n").as_bytes()));
    feeder.join().map_err(|_| "feeder panicked")??;
    capture.join().map_err(|_| "capture panicked")??;
    let lines = read_all(&LogReader::new(dir.path(), "chatty")?, &Query::default())?;
    let lens: Vec<usize> = lines.iter().map(|l| l.message().len()).collect();
    assert_eq!(lens, [16 * 1024, 16 * 1024, 8 * 1024, 5]);
    Ok(())
}

/// Sizes oldest first: a rotation meanwhile moves files to names already
/// counted, so the sum never counts one file twice.
fn total_size(dir: &Path, service: &str, keep: usize) -> (u64, usize) {
    let mut paths: Vec<_> = (1..=keep + 2)
        .rev()
        .map(|n| dir.join(format!("{service}.log.{n}")))
        .collect();
    paths.push(dir.join(format!("{service}.log")));
    let mut total = 0;
    let mut files = 0;
    for p in paths {
        if let Ok(m) = fs::metadata(p) {
            total += m.len();
            files += 1;
        }
    }
    (total, files)
}

#[test]
fn a_50_mb_flood_stays_within_the_rotation_limit() -> Result {
    let dir = tempfile::tempdir()?;
    let config = small(dir.path(), 1 << 20, 3);
    let limit = config.max_total_size();
    let writer = LogWriter::open(&config, "flood")?;
    let (r, w) = pipe()?;
    let start = Instant::now();
    let capture = spawn_capture(writer.clone(), r, Stream::Stdout)?;

    let done = Arc::new(AtomicBool::new(false));
    let biggest = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, biggest, path) = (done.clone(), biggest.clone(), dir.path().to_path_buf());
        thread::spawn(move || {
            let mut most_files = 0;
            while !done.load(Ordering::Relaxed) {
                let (total, files) = total_size(&path, "flood", 3);
                biggest.fetch_max(total, Ordering::Relaxed);
                most_files = most_files.max(files);
                thread::sleep(Duration::from_millis(2));
            }
            most_files
        })
    };

    const LINES: usize = 500_000;
    let feeder = thread::spawn(move || -> std::io::Result<()> {
        let mut w = File::from(w);
        let mut chunk = Vec::with_capacity(1 << 16);
        for i in 0..LINES {
            // 100 bytes a line.
            writeln!(chunk, "flood {i:07} {}", "y".repeat(85))?;
            if chunk.len() > 60_000 {
                w.write_all(&chunk)?;
                chunk.clear();
            }
        }
        w.write_all(&chunk)
    });
    feeder.join().map_err(|_| "feeder panicked")??;
    let stats = capture.join().map_err(|_| "capture panicked")??;
    done.store(true, Ordering::Relaxed);
    let most_files = sampler.join().map_err(|_| "sampler panicked")?;
    let elapsed = start.elapsed();

    assert_eq!(stats.bytes, 50_000_000);
    assert_eq!(stats.lines, LINES as u64);
    let (total, files) = total_size(dir.path(), "flood", 3);
    let biggest = biggest.load(Ordering::Relaxed).max(total);
    assert!(biggest <= limit, "{biggest} bytes on disk, limit {limit}");
    assert!(total > 3_000_000, "rotated files kept: {total}");
    assert_eq!((files, most_files), (4, 4));
    assert!(writer.stats().rotations >= 40, "{:?}", writer.stats());
    eprintln!("flood: {LINES} lines in {elapsed:?}");

    let reader = LogReader::new(dir.path(), "flood")?;
    let last = read_all(
        &reader,
        &Query {
            tail: Some(1),
            since: None,
        },
    )?;
    assert!(
        last[0]
            .message()
            .starts_with(&format!("flood {:07} ", LINES - 1)),
        "{last:?}"
    );
    // Every kept line is whole, and they run on without a gap.
    let all = read_all(&reader, &Query::default())?;
    let numbers: Vec<usize> = all
        .iter()
        .map(|l| l.message()[6..13].parse())
        .collect::<std::result::Result<_, _>>()?;
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(numbers.last(), Some(&(LINES - 1)));
    Ok(())
}

#[test]
fn tail_reads_across_rotated_files() -> Result {
    let dir = tempfile::tempdir()?;
    // 41 bytes a line: 48 lines a file.
    let writer = LogWriter::open(&small(dir.path(), 2000, 3), "svc")?;
    write_numbered(&writer, 1, 150);
    let reader = LogReader::new(dir.path(), "svc")?;
    assert_eq!(reader.files().len(), 4);
    let tail = |n| {
        read_all(
            &reader,
            &Query {
                tail: Some(n),
                since: None,
            },
        )
        .map(messages)
    };
    assert_eq!(tail(100)?, numbered(51, 150));
    assert_eq!(tail(3)?, numbered(148, 150));
    assert_eq!(tail(0)?, Vec::<String>::new());
    assert_eq!(tail(1000)?, numbered(1, 150));
    assert_eq!(
        messages(read_all(&reader, &Query::default())?),
        numbered(1, 150)
    );
    // A line written meanwhile is not torn: the tail ends with whole lines.
    write_numbered(&writer, 151, 151);
    assert_eq!(tail(2)?, numbered(150, 151));
    Ok(())
}

#[test]
fn since_filters_by_timestamp_across_files() -> Result {
    let dir = tempfile::tempdir()?;
    let stamp = |min: u32| format!("2026-11-23T08:{min:02}:00.000Z");
    let file = |name: &str, mins: &[u32]| -> std::io::Result<()> {
        let text: String = mins
            .iter()
            .map(|m| format!("{} stdout at {m}\n", stamp(*m)))
            .collect();
        fs::write(dir.path().join(name), text)
    };
    file("svc.log.2", &[0, 1, 2])?;
    file("svc.log.1", &[3, 4, 5])?;
    file("svc.log", &[6, 7, 8])?;
    let reader = LogReader::new(dir.path(), "svc")?;
    let since = |min: u32, tail: Option<usize>| -> Result<Vec<String>> {
        let since = Some(Timestamp::parse(&stamp(min)).ok_or("stamp")?);
        Ok(messages(read_all(&reader, &Query { tail, since })?))
    };
    assert_eq!(since(4, None)?, ["at 4", "at 5", "at 6", "at 7", "at 8"]);
    assert_eq!(since(2, None)?.len(), 7);
    assert_eq!(since(9, None)?, Vec::<String>::new());
    assert_eq!(since(4, Some(2))?, ["at 7", "at 8"]);
    assert_eq!(since(7, Some(5))?, ["at 7", "at 8"]);

    // Durations count back from now; live lines are stamped now.
    let live = LogWriter::open(&LogConfig::new(dir.path()), "live")?;
    live.write_text(Stream::Stdout, b"old");
    // The cut is strictly after "old" was stamped, and "new" strictly after
    // the cut: wait for the clock to move rather than sleep.
    let cut = tick_after(Timestamp::now());
    tick_after(cut);
    live.write_text(Stream::Stdout, b"new");
    let reader = LogReader::new(dir.path(), "live")?;
    let query = |since| Query {
        tail: None,
        since: Some(since),
    };
    assert_eq!(messages(read_all(&reader, &query(cut))?), ["new"]);
    let hour = parse_since("1h", Timestamp::now())?;
    assert_eq!(messages(read_all(&reader, &query(hour))?), ["old", "new"]);
    Ok(())
}

#[test]
fn follow_picks_up_lines_written_after_rotation() -> Result {
    let dir = tempfile::tempdir()?;
    let writer = LogWriter::open(&small(dir.path(), 2000, 3), "svc")?;
    write_numbered(&writer, 1, 30);
    let reader = LogReader::new(dir.path(), "svc")?;
    let mut follow = reader
        .follow(&Query {
            tail: Some(2),
            since: None,
        })?
        .with_poll_interval(Duration::from_millis(5));
    let wait = Some(Duration::from_secs(10));
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            follow
                .next_line(wait)?
                .ok_or("timed out")?
                .message()
                .to_string(),
        );
    }
    assert_eq!(got, numbered(29, 30));
    assert!(follow.next_line(Some(Duration::from_millis(50)))?.is_none());

    // A writer thread rotates the file several times while we follow.
    let feeder = {
        let writer = writer.clone();
        thread::spawn(move || {
            for i in 31..=400 {
                writer.write_text(Stream::Stdout, format!("line {i:03}").as_bytes());
                if i % 10 == 0 {
                    thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };
    let mut got = Vec::new();
    while got.len() < 370 {
        match follow.next_line(wait)? {
            Some(line) => got.push(line.message().to_string()),
            None => return Err(format!("stalled after {:?}", got.last()).into()),
        }
    }
    feeder.join().map_err(|_| "feeder panicked")?;
    assert_eq!(got, numbered(31, 400));
    assert!(writer.stats().rotations >= 7);
    assert!(follow.next_line(Some(Duration::from_millis(50)))?.is_none());
    Ok(())
}

#[test]
fn follow_waits_for_the_file_and_survives_truncation() -> Result {
    let dir = tempfile::tempdir()?;
    let reader = LogReader::new(dir.path(), "late")?;
    let mut follow = reader
        .follow(&Query::default())?
        .with_poll_interval(Duration::from_millis(5));
    assert!(follow.next_line(Some(Duration::from_millis(30)))?.is_none());
    // No rotated files kept: the file is truncated in place.
    let writer = LogWriter::open(&small(dir.path(), 2000, 0), "late")?;
    write_numbered(&writer, 1, 40);
    let wait = Some(Duration::from_secs(10));
    let mut got = Vec::new();
    for _ in 0..40 {
        got.push(
            follow
                .next_line(wait)?
                .ok_or("timed out")?
                .message()
                .to_string(),
        );
    }
    assert_eq!(got, numbered(1, 40));
    // 48 lines fit; 49 and 50 start the file over.
    write_numbered(&writer, 41, 50);
    assert_eq!(fs::metadata(dir.path().join("late.log"))?.len(), 2 * 41);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            follow
                .next_line(wait)?
                .ok_or("timed out")?
                .message()
                .to_string(),
        );
    }
    assert_eq!(got, numbered(49, 50));
    Ok(())
}

#[test]
fn berthd_logs_through_the_same_writer() -> Result {
    let dir = tempfile::tempdir()?;
    let logs = LogDir::new(LogConfig::new(dir.path()));
    Logger::new(logs.writer("berthd")?, log::LevelFilter::Info)
        .install()
        .map_err(|e| e.to_string())?;
    log::info!("starting {} services", 4);
    log::debug!("not shown");
    log::warn!("two\nlines");
    let lines = read_all(&logs.reader("berthd")?, &Query::default())?;
    let ours: Vec<&LogLine> = lines
        .iter()
        .filter(|l| !l.message().contains("berthd::"))
        .collect();
    assert_eq!(
        ours.iter().map(|l| l.message()).collect::<Vec<_>>(),
        ["INFO logs: starting 4 services", "WARN logs: two", "lines"]
    );
    assert!(ours.iter().all(|l| l.stream() == Some(Stream::Stderr)));
    Ok(())
}

/// The first clock reading later than `t`.
fn tick_after(t: Timestamp) -> Timestamp {
    loop {
        let now = Timestamp::now();
        if now > t {
            return now;
        }
        std::hint::spin_loop();
    }
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk> {
        let dir = tempfile::tempdir()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()?;
        if !status.success() {
            return Err(format!("mount tmpfs: {status}").into());
        }
        Ok(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// A full disk: the service's oldest rotated files make room for its newest
/// lines; with none left, lines are dropped and counted; once there is room
/// again, writing resumes by itself.
#[test]
fn a_full_disk_recycles_rotated_files_drops_what_it_must_and_recovers() -> Result {
    if !rustix::process::geteuid().is_root() {
        berth_testkit::skip!("mounting a small tmpfs needs root (cargo xtask test runs as root)");
        return Ok(());
    }
    let disk = SmallDisk::mount("256k")?;
    let writer = LogWriter::open(&small(disk.0.path(), 16 << 10, 3), "svc")?;
    let rotated = |n: usize| disk.0.path().join(format!("svc.log.{n}"));
    let line = "x".repeat(200);
    while !rotated(3).exists() {
        writer.write_text(Stream::Stdout, format!("{line}\n").as_bytes());
    }
    // Everything else on the disk: a filler up to the last byte.
    let filler = disk.0.path().join("filler");
    let mut f = File::create(&filler)?;
    while f.write_all(&[0u8; 4096]).is_ok() {}
    drop(f);

    // The live file's last page may still take a line or two.
    let mut last = String::new();
    for i in 0..100 {
        last = format!("after the disk filled {i}");
        writer.write_text(Stream::Stdout, format!("{last}\n").as_bytes());
        if !rotated(3).exists() {
            break;
        }
    }
    let stats = writer.stats();
    assert_eq!(stats.dropped_lines, 0, "{stats:?}");
    assert!(
        !rotated(3).exists(),
        "the oldest rotated file is still there"
    );
    let live = fs::read_to_string(disk.0.path().join("svc.log"))?;
    assert!(live.contains(&last), "{live}");

    // As it rotates, it keeps recycling its own files: nothing is dropped.
    for i in 0..500 {
        writer.write_text(Stream::Stdout, format!("{line} {i}\n").as_bytes());
    }
    let stats = writer.stats();
    assert_eq!(stats.dropped_lines, 0, "{stats:?}");
    assert!(stats.rotations > 3, "{stats:?}");

    // A log with no rotated files to give up drops its lines, and counts them.
    let other = LogWriter::open(&small(disk.0.path(), 16 << 10, 3), "other")?;
    for i in 0..100 {
        other.write_text(Stream::Stdout, format!("{line} {i}\n").as_bytes());
    }
    let stats = other.stats();
    assert!(stats.dropped_lines > 0, "{stats:?}");
    assert!(
        stats
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("No space left")),
        "{stats:?}"
    );

    // Room again: both write again by themselves.
    fs::remove_file(&filler)?;
    let dropped = other.stats().dropped_lines;
    other.write_text(Stream::Stdout, b"room again\n");
    assert_eq!(other.stats().dropped_lines, dropped);
    let live = fs::read_to_string(disk.0.path().join("other.log"))?;
    assert!(live.contains("room again"), "{live}");
    Ok(())
}
