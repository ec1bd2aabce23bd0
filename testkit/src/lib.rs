//! A test that cannot run says so where `cargo xtask test` counts it.
//!
//! `cargo test` captures a passing test's output, so a test that returns early
//! (not root, a tool missing, no built artifacts) looks exactly like one that
//! passed. Tests call [`skip!`] (or [`unsupported_here!`]) instead of printing,
//! then return. Each call
//!
//! - writes `BERTH-SKIP <test>: <reason>` to the real standard error, past the
//!   test harness' capture, so a person running `cargo test` sees it, and
//! - appends the same line to the file named by `BERTH_SKIP_LOG` when it is set
//!   (`cargo xtask test` sets it, and at the end lists what was skipped; under
//!   `CI=true` any [`Kind::Skip`] fails the run).
//!
//! [`Kind::Unsupported`] is for what this *kind* of machine cannot do whoever
//! runs the tests (the host kernel has no bonding driver, say): it is listed
//! but does not fail CI, so its reason has to say why the machine cannot.
//!
//! The test's name is the harness' thread name (`module::tests::name`) after
//! the test binary's (`netns::bond_of_two_veths`); tests with their own `main`
//! (`harness = false`) are named by their binary alone.

pub mod daemon;
pub mod http;
pub mod registry;
pub mod skopeo;

pub use daemon::{daemon_command, daemon_socket};

use std::fmt;
use std::io::Write;

/// The environment variable naming the file skips are appended to.
pub const LOG_ENV: &str = "BERTH_SKIP_LOG";

/// Why a test did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something this run lacks that `cargo xtask test` provides (root, a tool,
    /// the built artifacts): fails under CI.
    Skip,
    /// This kind of machine cannot run the test at all (a kernel feature the
    /// host does not have); listed, but allowed under CI.
    Unsupported,
}

impl Kind {
    /// The line's first word.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Skip => "BERTH-SKIP",
            Kind::Unsupported => "BERTH-UNSUPPORTED",
        }
    }
}

/// One recorded skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub test: String,
    pub reason: String,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line: a reason with newlines would break the log's format.
        let reason = self.reason.replace('\n', " ");
        write!(f, "{} {}: {}", self.kind.tag(), self.test, reason)
    }
}

impl Record {
    /// Parses one line as [`Display`](fmt::Display) writes it; `None` for any other line.
    pub fn parse(line: &str) -> Option<Record> {
        let (tag, rest) = line.trim_end().split_once(' ')?;
        let kind = [Kind::Skip, Kind::Unsupported]
            .into_iter()
            .find(|k| k.tag() == tag)?;
        let (test, reason) = rest.split_once(": ")?;
        if test.is_empty() || test.contains(char::is_whitespace) {
            return None;
        }
        Some(Record {
            kind,
            test: test.to_string(),
            reason: reason.to_string(),
        })
    }
}

/// The test binary's name (`console` for `target/debug/deps/console-0123abcd`).
pub fn binary_name() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_str()?;
    let name = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name,
        _ => stem,
    };
    Some(name.to_string())
}

/// Appends `line` to the file at `path` in one `O_APPEND` write, so lines
/// from parallel tests and test binaries do not interleave.
pub fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
}

/// The name of the running test: `binary::thread-name`, or the test binary
/// alone outside the harness' named threads. `module_path` names the binary
/// when the executable's name cannot be read.
pub fn test_name(module_path: &str) -> String {
    let krate = binary_name().unwrap_or_else(|| {
        module_path
            .split("::")
            .next()
            .unwrap_or(module_path)
            .to_string()
    });
    match std::thread::current().name() {
        Some(name) if name != "main" => format!("{krate}::{name}"),
        _ => krate.to_string(),
    }
}

/// Records that the running test did not run; use [`skip!`] or [`unsupported_here!`].
pub fn record(kind: Kind, module_path: &str, reason: fmt::Arguments<'_>) {
    let record = Record {
        kind,
        test: test_name(module_path),
        reason: reason.to_string(),
    };
    let line = format!("{record}\n");
    // Straight to fd 2: `eprintln!` would be captured, and hidden, by libtest.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(LOG_ENV) {
        if let Err(e) = append_line(std::path::Path::new(&path), &line) {
            // A skip that cannot be counted must not pass silently.
            panic!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
}

/// Records that this test is skipped, with `format!`-style reason; the caller
/// then returns. Fails `cargo xtask test` under `CI=true`.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {
        $crate::record($crate::Kind::Skip, module_path!(), format_args!($($arg)*))
    };
}

/// Records that this kind of machine cannot run this test (say why the
/// machine cannot); the caller then returns. Listed, but allowed under CI.
#[macro_export]
macro_rules! unsupported_here {
    ($($arg:tt)*) => {
        $crate::record($crate::Kind::Unsupported, module_path!(), format_args!($($arg)*))
    };
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How often the threads of process `pid` have been switched out so far
/// (voluntary and not): each wait a thread woke from counts, so the
/// difference over a while says whether something idle kept waking. Only
/// the threads named `thread` (their 15-byte `comm`) when given; `None` when
/// the process has no such thread (or is gone).
pub fn context_switches(pid: u32, thread: Option<&str>) -> Option<u64> {
    let mut total = None;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if thread.is_some_and(|name| comm.trim_end() != name) {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        *total.get_or_insert(0) += status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

/// Every record in a skip log's text, in order; other lines are ignored.
pub fn parse_log(text: &str) -> Vec<Record> {
    text.lines().filter_map(Record::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back() {
        let r = Record {
            kind: Kind::Unsupported,
            test: "netns::bond_of_two_veths".into(),
            reason: "no bonding: the host kernel\nhas none".into(),
        };
        let line = r.to_string();
        assert_eq!(
            line,
            "BERTH-UNSUPPORTED netns::bond_of_two_veths: no bonding: the host kernel has none"
        );
        let back = Record::parse(&line).expect("parses");
        assert_eq!(back.kind, Kind::Unsupported);
        assert_eq!(back.test, r.test);
        assert_eq!(back.reason, "no bonding: the host kernel has none");
    }

    #[test]
    fn other_lines_are_not_records() {
        for line in [
            "",
            "skipped: needs root",
            "BERTH-SKIPPED x: y",
            "BERTH-SKIP : empty name",
            "BERTH-SKIP no-reason",
            "test foo ... ok",
        ] {
            assert_eq!(Record::parse(line), None, "{line:?}");
        }
    }

    #[test]
    fn the_test_is_named_by_crate_and_thread() {
        // The binary (this crate's unit tests) names it, not the module path.
        assert_eq!(
            test_name("elsewhere::tests"),
            "berth_testkit::tests::the_test_is_named_by_crate_and_thread"
        );
        let outside = std::thread::Builder::new()
            .name("main".into())
            .spawn(|| test_name("elsewhere"))
            .expect("spawn")
            .join()
            .expect("join");
        assert_eq!(outside, "berth_testkit");
    }

    #[test]
    fn a_skip_is_appended_to_the_log() {
        let dir = std::env::temp_dir().join(format!("berth-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let log = dir.join("skips.log");
        // A child process, so the environment variable is its own.
        if std::env::var_os("BERTH_TESTKIT_CHILD").is_some() {
            skip!("one {}", 1);
            unsupported_here!("two");
            return;
        }
        let _ = std::fs::remove_file(&log);
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "tests::a_skip_is_appended_to_the_log", "--quiet"])
            .env("BERTH_TESTKIT_CHILD", "1")
            .env(LOG_ENV, &log)
            .status()
            .expect("run the child");
        assert!(status.success());
        let text = std::fs::read_to_string(&log).expect("the log");
        let _ = std::fs::remove_dir_all(&dir);
        let records = parse_log(&text);
        assert_eq!(
            records,
            vec![
                Record {
                    kind: Kind::Skip,
                    test: "berth_testkit::tests::a_skip_is_appended_to_the_log".into(),
                    reason: "one 1".into(),
                },
                Record {
                    kind: Kind::Unsupported,
                    test: "berth_testkit::tests::a_skip_is_appended_to_the_log".into(),
                    reason: "two".into(),
                },
            ]
        );
    }
}
