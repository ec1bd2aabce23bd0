//! `berth ps|logs|service|boot-time` against a real `berth daemon` started by
//! the test (root: it runs real containers) with temp dirs for the socket,
//! logs, run dir, and an image store holding the busybox test image.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{berth, root_test, stdout, text, write_config, Daemon, BERTH};

/// How long the services here get to reach a state.
const WITHIN: Duration = Duration::from_secs(60);

#[test]
fn ps_logs_service_and_boot_time_against_a_real_daemon() {
    let Some((dir, store_dir, image)) = root_test("berth-cli-service-") else {
        return;
    };

    let config = write_config(
        dir.path(),
        &format!(
            r#"#cloud-config
berth:
  services:
    cli-setup:
      image: {image}
      command: ["/bin/sh", "-c", "echo setting up; sleep 0.3"]
      oneshot: true
    cli-web:
      image: {image}
      command: ["/bin/sh", "-c", "echo web says hello; touch /tmp/ready; exec sleep 1000"]
      restart: always
      depends_on:
        cli-setup:
          condition: service_completed_successfully
      healthcheck:
        test: file:/tmp/ready
        interval: 200ms
    cli-crash:
      image: {image}
      command: ["/bin/sh", "-c", "echo crashing; exit 3"]
      restart: on-failure:2
"#
        ),
    );
    let mut daemon = Daemon::start(dir.path(), &store_dir, &config);
    let socket = daemon.socket.clone();

    common::wait_until("cli-web healthy", WITHIN, || {
        let o = berth(&socket, &["ps", "-o", "json"]);
        o.status.success()
            && serde_json::from_slice::<serde_json::Value>(&o.stdout)
                .ok()
                .and_then(|v| {
                    v.as_array()?
                        .iter()
                        .find(|s| s["name"] == "cli-web")
                        .map(|s| s["health"] == "healthy")
                })
                .unwrap_or(false)
    });
    common::wait_until("cli-crash to give up", WITHIN, || {
        stdout(&berth(&socket, &["ps"])).contains("gave up after 2")
    });
    let ps = stdout(&berth(&socket, &["ps"]));
    let line = |name: &str| {
        ps.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{ps}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(ps.starts_with("NAME"), "{ps}");
    let web = line("cli-web");
    assert_eq!(
        (web[2].as_str(), web[3].as_str(), web[4].as_str()),
        ("running", "healthy", "0"),
        "{ps}"
    );
    assert_eq!(
        line("cli-setup")[2..4],
        ["exited".to_string(), "(0)".to_string()],
        "{ps}"
    );
    let crash = line("cli-crash");
    assert_eq!(
        (crash[2].as_str(), crash[4].as_str()),
        ("failed", "2"),
        "{ps}"
    );

    let logs = stdout(&berth(&socket, &["logs", "cli-web"]));
    assert!(logs.trim_end().ends_with("stdout web says hello"), "{logs}");
    let crash_logs = stdout(&berth(&socket, &["logs", "-n", "2", "cli-crash"]));
    assert_eq!(crash_logs.matches("crashing").count(), 2, "{crash_logs}");
    let own = stdout(&berth(&socket, &["logs", "berthd"]));
    assert!(own.contains("API listening on"), "{own}");
    let since = stdout(&berth(&socket, &["logs", "--since", "1h", "cli-setup"]));
    assert!(since.contains("setting up"), "{since}");
    let unknown = berth(&socket, &["logs", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no service named `nope`"),
        "{}",
        text(&unknown)
    );

    let stopped = stdout(&berth(&socket, &["service", "stop", "cli-web"]));
    assert_eq!(stopped.trim(), "cli-web: stopped");
    let started = stdout(&berth(&socket, &["service", "start", "cli-web"]));
    assert!(started.starts_with("cli-web: running (pid "), "{started}");
    let listed = stdout(&berth(&socket, &["service", "ls"]));
    assert!(listed.contains("cli-web"), "{listed}");
    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&berth(&socket, &["service", "inspect", "cli-web"])))
            .expect("json");
    assert_eq!(inspect["state"], "running");

    let svg = dir.path().join("boot.svg");
    let boot = stdout(&berth(
        &socket,
        &["boot-time", "--svg", svg.to_str().expect("utf-8")],
    ));
    assert!(
        boot.contains("berthd started at")
            && boot.contains("cli-setup")
            && boot.contains("cli-web"),
        "{boot}"
    );
    let chart = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        chart.starts_with("<svg") && chart.contains("cli-web"),
        "{chart}"
    );

    let gone = Command::new(BERTH)
        .args(["ps", "--socket"])
        .arg(dir.path().join("missing.sock"))
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("is berthd running?"),
        "{}",
        text(&gone)
    );

    let status = daemon.stop(Duration::from_secs(30));
    assert!(status.success(), "berthd exited with {status:?}");
    assert!(!socket.exists(), "the socket is removed on exit");
}

/// PID 1 hands berthd the write end of a pipe (`BERTH_NOTIFY_FD`) and asks
/// the API again whenever a byte arrives. Here the test is PID 1: once the
/// service waits on a gate the test holds, it asks only when told, so a
/// change berthd did not announce leaves it waiting.
#[test]
fn berthd_writes_to_the_notify_pipe_when_a_service_gets_ready() {
    use std::os::unix::process::CommandExt;

    let Some((dir, store_dir, image)) = root_test("berth-cli-notify-") else {
        return;
    };
    let gate = dir.path().join("gate");
    std::fs::create_dir(&gate).expect("gate dir");
    let config = write_config(
        dir.path(),
        &format!(
            r#"#cloud-config
berth:
  services:
    notify-web:
      image: {image}
      command: ["/bin/sh", "-c", "until [ -e /gate/open ]; do sleep 0.05; done; touch /tmp/ready; exec sleep 1000"]
      volumes:
        - {gate}:/gate:ro
      healthcheck:
        test: file:/tmp/ready
        interval: 100ms
"#,
            gate = gate.display()
        ),
    );
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(made, 0, "pipe2: {}", std::io::Error::last_os_error());
    let (read_end, write_end) = (fds[0], fds[1]);
    let mut daemon = Daemon::start_prepared(dir.path(), &store_dir, &config, |c| {
        c.env(berth_api::NOTIFY_FD_ENV, write_end.to_string());
        // SAFETY: fcntl is async-signal-safe and touches only the child's
        // descriptor table.
        unsafe {
            c.pre_exec(move || {
                if libc::fcntl(write_end, libc::F_SETFD, 0) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    });
    // SAFETY: the test owns `write_end`; the daemon has its own copy now.
    unsafe { libc::close(write_end) };
    let wait_for_notice = |what: &str| {
        let mut poll = libc::pollfd {
            fd: read_end,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, 60_000) };
        assert!(n == 1, "no notice from berthd within 60 s ({what})");
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is valid for 64 bytes; the pipe is non-blocking.
        while unsafe { libc::read(read_end, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    };

    // The API's start is the first notice; then the service runs, waiting.
    wait_for_notice("the API's start");
    common::wait_until("notify-web running", WITHIN, || {
        daemon.service("notify-web")["state"] == "running"
    });
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is valid for 64 bytes; the pipe is non-blocking.
    while unsafe { libc::read(read_end, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    assert_eq!(daemon.service("notify-web")["ready"], false);

    // From here the test asks only after a notice: readiness that came
    // without one would leave it waiting until the 60 s run out.
    std::fs::write(gate.join("open"), b"").expect("open the gate");
    let mut notices = 0;
    loop {
        wait_for_notice(&format!(
            "notify-web getting ready, after {notices} notices"
        ));
        notices += 1;
        if daemon.service("notify-web")["ready"] == true {
            break;
        }
    }
    let status = daemon.stop(Duration::from_secs(30));
    assert!(status.success(), "berthd exited with {status:?}");
    // SAFETY: the test owns `read_end`.
    unsafe { libc::close(read_end) };
}
