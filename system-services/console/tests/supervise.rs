//! The supervisor as a process: programs that exit are restarted after a
//! second, orphans are reaped, readiness is reported once, a program that
//! waits for readiness starts after it, and SIGTERM stops every child and
//! ends the supervisor cleanly; once nothing is due, it does not wake.
//!
//! The test runs itself again with `BERTH_SUPERVISE_CHILD` set to be the
//! supervisor (which must be single-threaded), and watches it from outside.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_console::supervise::{self, Program, Report};

const CHILD: &str = "BERTH_SUPERVISE_CHILD";

struct Stderr;

impl Report for Stderr {
    fn line(&mut self, text: String) {
        eprintln!("console-init: {text}");
    }
}

fn program(name: &str, script: &str) -> Program {
    Program {
        name: name.into(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        after_ready: false,
        env: Vec::new(),
    }
}

fn supervisor() -> ExitCode {
    let programs = vec![
        program("flaky", "exit 3"),
        // Prints its pid, then becomes a long sleep that only a signal ends.
        program("steady", "echo steady pid $$ >&2; exec sleep 1000"),
        // Leaves an orphan behind every time it runs; the subreaper inherits it.
        program("orphans", "(sleep 0.2) & exit 0"),
        // Like a login prompt: started once ready, long before the fallback.
        Program {
            after_ready: true,
            ..program("late", "echo late started >&2; exec sleep 1000")
        },
    ];
    let started = Instant::now();
    let ready = || started.elapsed() > Duration::from_millis(300);
    match supervise::run(
        programs,
        &mut Stderr,
        ready,
        |r| r.line("ready".into()),
        |_| Duration::from_secs(60),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("supervisor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Children of `pid` that are zombies.
fn zombies_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.len() > 1 && fields[0] == "Z" && fields[1] == pid.to_string() {
            out.push(stat);
        }
    }
    out
}

/// A supervisor with nothing to do once its one program runs.
fn idle_supervisor() -> ExitCode {
    let programs = vec![program("steady", "exec sleep 1000")];
    match supervise::run(
        programs,
        &mut Stderr,
        || true,
        |r| r.line("ready".into()),
        |_| Duration::from_secs(60),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// How often an idle supervisor woke in a second (a wake-up per tick would be ten).
fn idle_wakeups() -> Result<u64, String> {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .env(CHILD, "idle")
        .stderr(Stdio::piped())
        .spawn()
        .expect("supervisor");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let ready = lines.any(|l| l.is_ok_and(|l| l.contains("console-init: ready")));
    // Its program is started in the pass that saw it ready: let that settle.
    std::thread::sleep(Duration::from_millis(300));
    let switches = || berth_testkit::context_switches(pid, None).unwrap_or_default();
    let before = switches();
    std::thread::sleep(Duration::from_secs(1));
    let woke = switches() - before;
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
    if !ready {
        return Err("the idle supervisor never said ready".into());
    }
    Ok(woke)
}

fn main() -> ExitCode {
    match std::env::var(CHILD).as_deref() {
        Ok("idle") => return idle_supervisor(),
        Ok(_) => return supervisor(),
        Err(_) => {}
    }
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .env(CHILD, "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("supervisor");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Watch until flaky has been restarted twice and steady and ready are
    // there (events, not a guess at how long that takes); give up after a
    // minute so a broken supervisor fails instead of hanging.
    let mut lines: Vec<String> = Vec::new();
    let seen = |lines: &[String], needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen(&lines, "flaky exited with status 3; restarting it in 1s") < 2
        || seen(&lines, "console-init: ready") < 1
        || seen(&lines, "steady pid") < 1
        || seen(&lines, "late started") < 1
    {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    // A child that has just exited is a zombie until the supervisor's next
    // tick reaps it; one that is never reaped stays. Look until there is none.
    let deadline = Instant::now() + Duration::from_secs(10);
    let zombies = loop {
        let now = zombies_of(pid);
        if now.is_empty() || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the supervisor did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The rest of its output, up to the end of its stderr (a child that
    // outlived it and holds the pipe is reported below; the wait is bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        lines.push(line);
    }
    for line in &lines {
        println!("| {line}");
    }
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    let steady_pid = lines
        .iter()
        // Anywhere in the line: the supervisor's own lines share the pipe,
        // and an unbuffered write of theirs can land in front of it.
        .find_map(|l| l.split("steady pid ").nth(1))
        .and_then(|p| p.trim().parse::<u32>().ok());

    let mut failures = Vec::new();
    if !status.success() {
        failures.push(format!("the supervisor ended with {status}"));
    }
    if count("flaky exited with status 3; restarting it in 1s") < 2 {
        failures.push("flaky was not restarted at least twice".into());
    }
    if count("console-init: ready") != 1 {
        failures.push("ready was not reported exactly once".into());
    }
    if count("stopping (SIGTERM)") != 1 {
        failures.push("no `stopping (SIGTERM)` line".into());
    }
    let position = |needle: &str| lines.iter().position(|l| l.contains(needle));
    match (position("console-init: ready"), position("late started")) {
        (Some(ready), Some(late)) if late < ready => {
            failures.push("late started before the supervisor was ready".into())
        }
        (_, None) => failures.push("late never started".into()),
        _ => {}
    }
    if count("late started") != 1 {
        failures.push("late was restarted".into());
    }
    if count("steady pid") != 1 {
        failures.push("steady was restarted, or never ran".into());
    }
    match steady_pid {
        Some(p) if std::path::Path::new(&format!("/proc/{p}")).exists() => {
            failures.push(format!("steady's sleep (pid {p}) outlived the supervisor"))
        }
        Some(_) => {}
        None => failures.push("steady never said its pid".into()),
    }
    if !zombies.is_empty() {
        failures.push(format!("unreaped children: {zombies:?}"));
    }
    match idle_wakeups() {
        Ok(woke) if woke > 2 => {
            failures.push(format!("an idle supervisor woke {woke} times in a second"))
        }
        Ok(_) => {}
        Err(e) => failures.push(e),
    }
    if failures.is_empty() {
        println!("supervise: ok");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            println!("supervise: FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}
