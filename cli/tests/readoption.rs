//! berthd killed with SIGKILL while services run, then started again: it
//! re-adopts the same containers (no duplicates) and their logs continue,
//! including what they printed while no berthd was reading. Real `berth
//! daemon`, real containers of the busybox test image (root).
//!
//! The only test in its binary: it makes the test process a child subreaper
//! (standing in for PID 1, which reaps the orphaned container inits on a Berth
//! system) and reaps zombie children, which must not race other tests' commands.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

/// Tick numbers in a `berth logs` output, in order.
fn ticks(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            l.rsplit_once(" tick ")
                .and_then(|(_, n)| n.trim().parse().ok())
        })
        .collect()
}

/// Live processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                && alive(*pid)
        })
        .collect()
}

/// Reaps this process's zombie children except `keep` (orphaned container
/// inits and the dead berthd's forker, which the subreaper inherited).
fn reap_orphans(keep: i32) -> usize {
    let mut reaped = 0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let children: BTreeSet<i32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    for pid in children {
        if pid != keep && !alive(pid) {
            // SAFETY: waitpid on one specific zombie child; the status is discarded.
            if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == pid {
                reaped += 1;
            }
        }
    }
    reaped
}

#[test]
fn sigkilled_berthd_readopts_its_containers_and_logs_continue() {
    if !is_root() {
        berth_testkit::skip!("berthd runs real containers, which needs root");
        return;
    }
    // SAFETY: prctl with integer arguments only; affects this process alone.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
    let dir = tempfile::Builder::new()
        .prefix("berth-readopt-")
        .tempdir()
        .expect("tempdir");
    let (store, image) = busybox();
    let config = write_config(
        dir.path(),
        &format!(
            r#"#cloud-config
berth:
  services:
    ra-setup:
      image: {image}
      command: ["/bin/sh", "-c", "echo setup ran"]
      oneshot: true
    ra-ticker:
      image: {image}
      command: ["/bin/sh", "-c", "i=0; while :; do echo ra-ticker-marker tick $i; i=$((i+1)); sleep 0.05; done"]
      restart: always
      depends_on:
        ra-setup:
          condition: service_completed_successfully
    ra-quiet:
      image: {image}
      command: ["/bin/sh", "-c", "touch /tmp/ok; while :; do sleep 0.1; done; : ra-quiet-marker"]
      restart: always
      healthcheck:
        test: file:/tmp/ok
        interval: 200ms
"#
        ),
    );
    let mut first = Daemon::start(dir.path(), &store, &config);
    let running = |d: &Daemon, name: &str| -> Option<i32> {
        let s = d.service(name);
        (s["state"] == "running").then(|| s["pid"].as_i64().unwrap_or(0) as i32)
    };
    let mut before = (0, 0);
    wait_until("both running", Duration::from_secs(60), || {
        match (running(&first, "ra-ticker"), running(&first, "ra-quiet")) {
            (Some(t), Some(q)) => {
                before = (t, q);
                first.service("ra-quiet")["health"] == "healthy"
            }
            _ => false,
        }
    });
    wait_until("some ticks logged", Duration::from_secs(30), || {
        ticks(&first.logs("ra-ticker")).len() >= 5
    });

    // berthd dies; the services do not notice.
    first.kill();
    let last_seen =
        ticks(&std::fs::read_to_string(dir.path().join("log/ra-ticker.log")).unwrap_or_default())
            .last()
            .copied()
            .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        alive(before.0) && alive(before.1),
        "the containers outlive berthd (no SIGPIPE, no EPIPE exit)"
    );
    reap_orphans(0);

    // A new berthd on the same state.
    let mut second = Daemon::start(dir.path(), &store, &config);
    wait_until(
        "the services to be adopted",
        Duration::from_secs(30),
        || running(&second, "ra-ticker").is_some() && running(&second, "ra-quiet").is_some(),
    );
    let ticker = second.service("ra-ticker");
    let quiet = second.service("ra-quiet");
    assert!(
        ticker["pid"] == before.0 && ticker["adopted"] == true && ticker["restarts"] == 0,
        "the same container, adopted: {ticker}"
    );
    assert!(
        quiet["pid"] == before.1 && quiet["adopted"] == true,
        "{quiet}"
    );
    let ps = stdout(&second.berth(&["ps"]));
    let row = ps
        .lines()
        .find(|l| l.starts_with("ra-ticker "))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(
        row.contains(" running ") && row.trim_end().ends_with(&before.0.to_string()),
        "{ps}"
    );
    let setup = second.service("ra-setup");
    assert!(
        setup["state"] == "exited" && setup["exit_code"] == 0,
        "the oneshot completed before and is not run again: {setup}"
    );
    assert_eq!(second.logs("ra-setup").matches("setup ran").count(), 1);
    wait_until("ra-quiet healthy again", Duration::from_secs(10), || {
        second.service("ra-quiet")["health"] == "healthy"
    });

    // No duplicates: one container per service, by cgroup and by process.
    for (name, pid, marker) in [
        ("ra-ticker", before.0, "ra-ticker-marker"),
        ("ra-quiet", before.1, "ra-quiet-marker"),
    ] {
        let members = cgroup_pids(name);
        let shells: Vec<i32> = outermost(&members)
            .into_iter()
            .filter(|p| comm(*p).as_deref() == Some("sh"))
            .collect();
        assert_eq!(shells, [pid], "{name}: cgroup members {members:?}");
        assert_eq!(
            outermost(&processes_with(marker)),
            [pid],
            "{name}: one process runs it"
        );
    }
    let containers: Vec<_> = std::fs::read_dir(dir.path().join("run/containers"))
        .expect("containers dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(containers.len(), 2, "{containers:?}");

    // The logs continue: what was printed while berthd was away (buffered in
    // the FIFO) and what is printed now, without a gap.
    let mut numbers = Vec::new();
    wait_until("new ticks in the log", Duration::from_secs(30), || {
        numbers = ticks(&second.logs("ra-ticker"));
        numbers.last().copied().unwrap_or(0) >= last_seen + 40
    });
    let expected: Vec<u64> = (0..=numbers.last().copied().unwrap_or(0)).collect();
    assert_eq!(numbers, expected, "every tick logged once, in order");
    let own = second.own_log();
    assert!(
        own.contains(&format!(
            "ra-ticker: adopted the running container (pid {}); its output is captured again",
            before.0
        )),
        "{own}"
    );

    // An orderly stop ends the adopted containers too.
    let status = second.stop(Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    for pid in [before.0, before.1] {
        assert!(!alive(pid), "pid {pid} still runs after the stop");
    }
    for name in ["ra-ticker", "ra-quiet"] {
        assert!(!cgroup_dir("pids", name).exists(), "{name}: cgroup left");
    }
    reap_orphans(0);
}
