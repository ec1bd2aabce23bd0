//! berthd's acceptance tests (the berthd issue's "done when"), against the real
//! `berth daemon` running real containers of the busybox test image (root).
//! Every assertion reads what really happened: processes in `/proc`, cgroup
//! files, namespaces, the service logs and berthd's own log.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A shell loop that ends cleanly on SIGTERM, saying so in its log (a shell
/// runs its trap once the foreground `sleep` returns).
fn looping(name: &str) -> String {
    format!(
        r#"["/bin/sh", "-c", "trap 'echo {name} stopping; exit 0' TERM; echo {name} up; while :; do sleep 0.1; done"]"#
    )
}

fn line_index(log: &str, needle: &str) -> usize {
    log.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}` in berthd's log:\n{log}"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn eight_services_start_behave_and_stop_as_declared() {
    let Some((dir, store, image)) = root_test("berth-acceptance-") else {
        return;
    };
    let config = write_config(
        dir.path(),
        &format!(
            r#"#cloud-config
berth:
  services:
    acc-init:
      image: {image}
      command: ["/bin/sh", "-c", "echo init done; sleep 0.3"]
      oneshot: true
    acc-db:
      image: {image}
      command: ["/bin/sh", "-c", "trap 'echo acc-db stopping; exit 0' TERM; sleep 0.5; touch /tmp/ready; echo acc-db up; while :; do sleep 0.1; done"]
      restart: always
      depends_on:
        acc-init:
          condition: service_completed_successfully
      healthcheck:
        test: ["CMD-SHELL", "test -f /tmp/ready"]
        interval: 200ms
        retries: 2
    acc-web:
      image: {image}
      command: {web}
      restart: always
      depends_on:
        acc-db:
          condition: service_healthy
    acc-side:
      image: {image}
      command: {side}
      restart: unless-stopped
      network_mode: host
      pid: host
      depends_on:
        acc-web:
          condition: service_started
    acc-limits:
      image: {image}
      command: {limits}
      restart: "no"
      mem_limit: 64m
      pids_limit: 32
      cpus: 0.5
    acc-done:
      image: {image}
      command: ["/bin/sh", "-c", "echo done here; exit 4"]
      restart: "no"
    acc-flaky:
      image: {image}
      command: ["/bin/sh", "-c", "echo flaky failing; exit 1"]
      restart: on-failure:2
    acc-crash:
      image: {image}
      command: ["/bin/sh", "-c", "echo crashing; exit 1"]
      restart: always
"#,
            web = looping("acc-web"),
            side = looping("acc-side"),
            limits = looping("acc-limits"),
        ),
    );
    let mut daemon = Daemon::start(dir.path(), &store, &config);

    // Everything long-running comes up; the dependency chain is respected.
    wait_until("the chain to be up", Duration::from_secs(60), || {
        let ps = daemon.ps();
        let get = |n: &str| ps.iter().find(|s| s["name"] == n).cloned();
        ["acc-web", "acc-side", "acc-limits"]
            .iter()
            .all(|n| get(n).is_some_and(|s| s["state"] == "running"))
            && get("acc-db").is_some_and(|s| s["health"] == "healthy")
    });
    let timeline = daemon.get("/v1/timeline");
    let entry = |name: &str| {
        timeline["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|e| e["service"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {timeline:#}"))
    };
    let (init, db, web, side) = (
        entry("acc-init"),
        entry("acc-db"),
        entry("acc-web"),
        entry("acc-side"),
    );
    assert!(
        num(&init["exited"]) <= num(&db["created"]),
        "service_completed_successfully: db created before init completed\n{timeline:#}"
    );
    assert!(
        num(&db["ready"]) <= num(&web["created"]),
        "service_healthy: web created before db was healthy\n{timeline:#}"
    );
    assert!(
        num(&web["started"]) <= num(&side["created"]),
        "service_started: side created before web started\n{timeline:#}"
    );
    let init_status = daemon.service("acc-init");
    assert!(
        init_status["state"] == "exited" && init_status["exit_code"] == 0,
        "{init_status}"
    );
    assert!(daemon.logs("acc-init").contains("init done"));

    // Real processes: each running service's pid is its cgroup's init.
    let ps = daemon.ps();
    let pid_of = |name: &str| -> i32 {
        ps.iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["pid"].as_i64())
            .unwrap_or_else(|| panic!("no pid for {name}")) as i32
    };
    let mut pids = Vec::new();
    for name in ["acc-db", "acc-web", "acc-side", "acc-limits"] {
        let pid = pid_of(name);
        assert!(alive(pid), "{name}: pid {pid} is not running");
        // berthd reports the pid once the container is started; the init's
        // exec of `sh` may still be under way, so wait for it to happen.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while comm(pid).as_deref() != Some("sh") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(comm(pid).as_deref(), Some("sh"), "{name}: pid {pid}");
        let members = cgroup_pids(name);
        assert!(members.contains(&pid), "{name}: {pid} not in {members:?}");
        pids.push(pid);
    }

    // Limits, from the kernel's own files.
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let dir = cgroup_dir("", "acc-limits");
        assert_eq!(read_trim(&dir.join("memory.max")), "67108864");
        assert_eq!(read_trim(&dir.join("pids.max")), "32");
        assert_eq!(read_trim(&dir.join("cpu.max")), "50000 100000");
    } else {
        let read = |controller: &str, file: &str| {
            read_trim(&cgroup_dir(controller, "acc-limits").join(file))
        };
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("pids", "pids.max"), "32");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
    }
    // No limits where none were asked for.
    let web_pids = cgroup_dir("pids", "acc-web").join("pids.max");
    assert_eq!(read_trim(&web_pids), "max");

    // Host namespaces: the host's network and pid namespaces for acc-side,
    // its own for acc-web.
    let side_pid = pid_of("acc-side").to_string();
    let web_pid = pid_of("acc-web").to_string();
    for kind in ["net", "pid"] {
        let host = namespace("self", kind);
        assert_eq!(namespace(&side_pid, kind), host, "acc-side {kind}");
        assert_ne!(namespace(&web_pid, kind), host, "acc-web {kind}");
    }
    for kind in ["mnt", "uts", "ipc"] {
        assert_ne!(
            namespace(&side_pid, kind),
            namespace("self", kind),
            "acc-side keeps its own {kind} namespace"
        );
    }

    // Restart policies and the crash loop, while the rest runs undisturbed.
    let mut saw_restarting = false;
    wait_until(
        "the crash loop to back off three times and flaky to give up",
        Duration::from_secs(60),
        || {
            let crash = daemon.service("acc-crash");
            saw_restarting |= crash["state"] == "restarting";
            crash["restarts"].as_u64().unwrap_or(0) >= 3
                && daemon.service("acc-flaky")["state"] == "failed"
        },
    );
    assert!(saw_restarting, "the crash loop is visible as `restarting`");
    // The backoff doubles from 1 s, as berthd's log says when it schedules each.
    let own = daemon.own_log();
    for (n, delay) in [(1, "1s"), (2, "2s"), (3, "4s")] {
        let needle = format!("acc-crash: restarting in {delay} (restart {n})");
        assert!(own.contains(&needle), "no `{needle}` in\n{own}");
    }
    let flaky = daemon.service("acc-flaky");
    assert_eq!(flaky["restarts"], 2, "{flaky}");
    assert!(
        flaky["error"]
            .as_str()
            .unwrap_or_default()
            .contains("gave up after 2"),
        "{flaky}"
    );
    assert_eq!(daemon.logs("acc-flaky").matches("flaky failing").count(), 3);
    let done = daemon.service("acc-done");
    assert!(
        done["state"] == "exited" && done["exit_code"] == 4 && done["restarts"] == 0,
        "restart: no: {done}"
    );
    assert!(daemon.logs("acc-done").contains("done here"));
    // The crash loop touched nobody else.
    for (name, pid) in ["acc-db", "acc-web", "acc-side", "acc-limits"]
        .iter()
        .zip(&pids)
    {
        let s = daemon.service(name);
        assert!(
            s["pid"] == *pid && s["restarts"] == 0 && s["state"] == "running",
            "{name} was disturbed: {s}"
        );
    }
    assert!(daemon.logs("acc-web").contains("acc-web up"));

    // Orderly stop: dependents before what they depend on, each by SIGTERM.
    let status = daemon.stop(Duration::from_secs(60));
    assert!(status.success(), "berthd exited with {status:?}");
    let own = daemon.own_log();
    assert!(
        line_index(&own, "acc-side: stopped") < line_index(&own, "acc-web: stopping"),
        "acc-side stops before acc-web:\n{own}"
    );
    assert!(
        line_index(&own, "acc-web: stopped") < line_index(&own, "acc-db: stopping"),
        "acc-web stops before acc-db:\n{own}"
    );
    for name in ["acc-db", "acc-web", "acc-side", "acc-limits"] {
        let log = std::fs::read_to_string(dir.path().join(format!("log/{name}.log")))
            .expect("service log");
        assert!(
            log.contains(&format!("{name} stopping")),
            "{name} stopped by its signal, not killed:\n{log}"
        );
    }
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} still runs after the stop");
    }
    for name in ["acc-db", "acc-web", "acc-side", "acc-limits"] {
        assert!(
            !cgroup_dir("pids", name).exists(),
            "{name}: cgroup left behind"
        );
    }
}

#[test]
fn a_killed_service_process_restarts_per_policy_with_backoff() {
    let Some((dir, store, image)) = root_test("berth-kill-") else {
        return;
    };
    let config = write_config(
        dir.path(),
        &format!(
            r#"#cloud-config
berth:
  services:
    kill-always:
      image: {image}
      command: {always}
      restart: always
    kill-onfail:
      image: {image}
      command: {onfail}
      restart: on-failure:1
    kill-no:
      image: {image}
      command: {no}
      restart: "no"
"#,
            always = looping("kill-always"),
            onfail = looping("kill-onfail"),
            no = looping("kill-no"),
        ),
    );
    let daemon = Daemon::start(dir.path(), &store, &config);
    let running = |name: &str| {
        let s = daemon.service(name);
        (s["state"] == "running").then(|| s["pid"].as_i64().unwrap_or(0) as i32)
    };
    let mut pids = Vec::new();
    wait_until("all three running", Duration::from_secs(60), || {
        pids = ["kill-always", "kill-onfail", "kill-no"]
            .iter()
            .filter_map(|n| running(n))
            .collect();
        pids.len() == 3
    });

    // SIGKILL to each init, as an OOM kill or an admin would.
    for pid in &pids {
        signal(*pid, libc::SIGKILL);
    }
    let killed = Instant::now();
    // `berth ps` shows the backoff: restarting (137) with the count, then
    // running again under a new pid.
    let mut table = String::new();
    wait_until(
        "kill-always to be restarting",
        Duration::from_secs(10),
        || {
            table = stdout(&daemon.berth(&["ps"]));
            table
                .lines()
                .any(|l| l.starts_with("kill-always ") && l.contains("restarting (137)"))
        },
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("kill-always "))
        .expect("row");
    assert_eq!(
        row.split_whitespace().nth(5),
        Some("1"),
        "restarts column: {table}"
    );
    let mut always = 0;
    wait_until("kill-always to run again", Duration::from_secs(10), || {
        always = running("kill-always").unwrap_or(0);
        always != 0
    });
    let first_delay = killed.elapsed();
    assert!(always != pids[0], "a new container, not the old pid");
    assert!(
        first_delay >= Duration::from_millis(900),
        "restarted after the 1 s backoff, not at once: {first_delay:?}"
    );
    let onfail = daemon.service("kill-onfail");
    assert!(
        onfail["restarts"] == 1 && onfail["state"] != "failed",
        "on-failure:1 restarts once: {onfail}"
    );
    let no = daemon.service("kill-no");
    assert!(
        no["state"] == "exited" && no["exit_code"] == 137 && no["restarts"] == 0,
        "restart: no stays down: {no}"
    );

    // Again: the backoff has doubled, and on-failure:1 has used its restart.
    wait_until("kill-onfail to run again", Duration::from_secs(10), || {
        running("kill-onfail").is_some()
    });
    let onfail_pid = running("kill-onfail").expect("onfail pid");
    signal(always, libc::SIGKILL);
    signal(onfail_pid, libc::SIGKILL);
    let killed = Instant::now();
    wait_until(
        "kill-always to run a third time",
        Duration::from_secs(15),
        || running("kill-always").is_some_and(|p| p != always),
    );
    let second_delay = killed.elapsed();
    assert!(
        second_delay >= Duration::from_millis(1900),
        "the second restart waited the doubled backoff (2 s): {second_delay:?}"
    );
    let s = daemon.service("kill-always");
    assert_eq!(s["restarts"], 2, "{s}");
    wait_until("kill-onfail to give up", Duration::from_secs(10), || {
        daemon.service("kill-onfail")["state"] == "failed"
    });
    let ps = stdout(&daemon.berth(&["ps"]));
    assert!(
        ps.contains("kill-onfail: exited with code 137 and gave up after 1 restarts"),
        "{ps}"
    );
    for (name, log) in [("kill-always", 3), ("kill-onfail", 2), ("kill-no", 1)] {
        let text = daemon.logs(name);
        assert_eq!(
            text.matches(&format!("{name} up")).count(),
            log,
            "{name} ran {log} times:\n{text}"
        );
    }
}
