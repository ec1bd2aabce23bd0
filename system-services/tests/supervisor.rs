//! The supervisor with real containers (libcontainer through the forker), as
//! root, on the busybox test image: dependency order with a oneshot, a crash
//! loop with backoff beside a steady service, a healthcheck run inside the
//! container gating a dependent, reverse-order stop with SIGKILL after the
//! grace period, a reconcile that recreates only the changed service, and a
//! privileged service given a device node that appeared after it started.
//!
//! Like `tests/runtime.rs`, this test has its own `main` (`harness = false`):
//! the forker must be forked while the process is single-threaded.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_configs::forms::{Command, Duration as D};
use berth_configs::model::{Condition, Dependency, Healthcheck, RestartPolicy, Service};
use berthd::health::Health;
use berthd::logs::{LogConfig, LogDir, Query};
use berthd::runtime::{ImageLayers, Runtime, Youki};
use berthd::supervisor::{Backoff, FixedImages, Options, Phase, Snapshot, Supervisor};

type Result<T = ()> = std::result::Result<T, String>;
type Case = (&'static str, fn(&Env) -> Result);

struct Env {
    runtime: Arc<Youki>,
    image: ImageLayers,
    dir: PathBuf,
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        berth_testkit::skip!("real containers need root (cargo xtask test runs as root)");
        return;
    }
    let dir = match tempfile::Builder::new()
        .prefix("berthd-supervisor-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    // Before any thread: fork the forker.
    let (runtime, image) = common::runtime_and_image(dir.path(), None);
    let runtime = Arc::new(runtime);
    let env = Env {
        runtime,
        image,
        dir: dir.path().to_path_buf(),
    };
    let cases: &[Case] = &[
        (
            "oneshot_runs_to_completion_first",
            oneshot_runs_to_completion_first,
        ),
        (
            "crash_loop_backs_off_beside_a_steady_service",
            crash_loop_backs_off_beside_a_steady_service,
        ),
        (
            "healthcheck_in_the_container_gates_a_dependent",
            healthcheck_in_the_container_gates_a_dependent,
        ),
        (
            "stop_in_reverse_order_with_sigkill_after_grace",
            stop_in_reverse_order_with_sigkill_after_grace,
        ),
        (
            "a_stop_before_the_handler_is_in_goes_again",
            a_stop_before_the_handler_is_in_goes_again,
        ),
        (
            "reconcile_recreates_only_the_changed_service",
            reconcile_recreates_only_the_changed_service,
        ),
        (
            "a_privileged_service_gets_the_devices_that_come_and_go",
            a_privileged_service_gets_the_devices_that_come_and_go,
        ),
    ];
    let mut failed = Vec::new();
    for (name, case) in cases {
        let started = Instant::now();
        match case(&env) {
            Ok(()) => println!("test {name} ... ok ({:.1?})", started.elapsed()),
            Err(e) => {
                println!("test {name} ... FAILED: {e}");
                failed.push(*name);
            }
        }
    }
    env.runtime.reap_strays();
    drop(env);
    drop(dir);
    if !failed.is_empty() {
        println!("\n{} failed: {failed:?}", failed.len());
        std::process::exit(1);
    }
    println!("\nall {} supervisor cases passed", cases.len());
}

fn sh(script: &str, restart: Option<RestartPolicy>) -> Service {
    Service {
        image: Some("busybox".into()),
        command: Some(Command::Exec(vec![
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
        ])),
        restart,
        ..Service::default()
    }
}

fn depends(mut s: Service, on: &str, condition: Condition) -> Service {
    s.depends_on.insert(
        on.into(),
        Dependency {
            condition,
            ..Default::default()
        },
    );
    s
}

/// A supervisor over `services` with its own log and run dirs under `case`.
fn supervise(
    env: &Env,
    case: &str,
    services: &[(&str, Service)],
) -> Result<(Supervisor, Arc<LogDir>)> {
    let base = env.dir.join(case);
    let logs = Arc::new(LogDir::new(LogConfig::new(base.join("log"))));
    let mut options = Options::new(base.join("run"));
    options.backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_millis(800),
        reset_after: Duration::from_secs(60),
    };
    options.stop_grace = Duration::from_secs(1);
    let sup = Supervisor::start(
        Arc::clone(&env.runtime) as Arc<dyn Runtime>,
        Arc::new(FixedImages(env.image.clone())),
        Arc::clone(&logs),
        options,
        services
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect::<BTreeMap<_, _>>(),
    )
    .map_err(|e| e.to_string())?;
    Ok((sup, logs))
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn wait(sup: &Supervisor, what: &str, secs: u64, pred: impl Fn(&Snapshot) -> bool) -> Result {
    if sup.wait_for(Duration::from_secs(secs), pred) {
        Ok(())
    } else {
        Err(format!(
            "timed out waiting for {what}: {:#?}",
            sup.services()
        ))
    }
}

fn state_is(s: &Snapshot, name: &str, phase: Phase) -> bool {
    s.service(name).is_some_and(|x| x.state == phase)
}

fn log_text(logs: &LogDir, name: &str) -> String {
    logs.reader(name)
        .and_then(|r| r.lines(&Query::default()))
        .map(|lines| {
            lines
                .filter_map(|l| l.ok())
                .map(|l| l.message().to_string() + "\n")
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f`, then shuts the supervisor down whatever happened.
fn with_shutdown(sup: &Supervisor, f: impl FnOnce() -> Result) -> Result {
    let result = f();
    let down = sup.shutdown().map_err(|e| e.to_string());
    result.and(down)
}

fn oneshot_runs_to_completion_first(env: &Env) -> Result {
    let mut setup = sh("echo preparing; sleep 0.5; echo prepared", None);
    setup.oneshot = true;
    let (sup, logs) = supervise(
        env,
        "oneshot",
        &[
            ("os-setup", setup),
            (
                "os-app",
                depends(
                    sh("echo app up; sleep 1000", None),
                    "os-setup",
                    Condition::ServiceCompletedSuccessfully,
                ),
            ),
        ],
    )?;
    with_shutdown(&sup, || {
        wait(&sup, "os-app running", 30, |s| {
            state_is(s, "os-app", Phase::Running)
        })?;
        let setup = sup.service("os-setup").ok_or("no os-setup")?;
        check(
            setup.state == Phase::Exited && setup.exit_code == Some(0),
            || format!("{setup:?}"),
        )?;
        let t = sup.timeline();
        let find = |n: &str| t.services.iter().find(|e| e.service == n).cloned();
        let (s, a) = (
            find("os-setup").ok_or("no entry")?,
            find("os-app").ok_or("no entry")?,
        );
        check(
            s.exited.is_some() && a.created >= s.exited && s.started.is_some(),
            || format!("timeline {t:?}"),
        )?;
        wait(&sup, "app output", 10, |_| {
            log_text(&logs, "os-app").contains("app up")
        })?;
        let text = log_text(&logs, "os-setup");
        check(text == "preparing\nprepared\n", || {
            format!("setup log {text:?}")
        })
    })
}

fn crash_loop_backs_off_beside_a_steady_service(env: &Env) -> Result {
    let (sup, logs) = supervise(
        env,
        "crash",
        &[
            (
                "cl-crash",
                sh("echo boom; exit 7", Some(RestartPolicy::Always)),
            ),
            (
                "cl-steady",
                sh("exec sleep 1000", Some(RestartPolicy::Always)),
            ),
        ],
    )?;
    with_shutdown(&sup, || {
        wait(&sup, "steady running", 30, |s| {
            state_is(s, "cl-steady", Phase::Running)
        })?;
        let steady_pid = sup
            .service("cl-steady")
            .and_then(|s| s.pid)
            .ok_or("no pid")?;
        wait(&sup, "a first restart", 30, |s| {
            s.service("cl-crash").is_some_and(|c| c.restarts >= 1)
        })?;
        let t = Instant::now();
        wait(&sup, "three restarts", 30, |s| {
            s.service("cl-crash").is_some_and(|c| c.restarts >= 3)
        })?;
        // A restart is counted when it is scheduled: between the first and the
        // third exit lie the first two delays, 200 + 400 ms.
        check(t.elapsed() >= Duration::from_millis(580), || {
            format!("too fast: {:?}", t.elapsed())
        })?;
        let crash = sup.service("cl-crash").ok_or("no crash")?;
        check(
            crash.exit_code == Some(7) || crash.state == Phase::Running,
            || format!("{crash:?}"),
        )?;
        let steady = sup.service("cl-steady").ok_or("no steady")?;
        check(
            steady.state == Phase::Running
                && steady.pid == Some(steady_pid)
                && steady.restarts == 0,
            || format!("{steady:?}"),
        )?;
        check(Path::new(&format!("/proc/{steady_pid}")).exists(), || {
            "steady is gone".into()
        })?;
        let booms = log_text(&logs, "cl-crash").matches("boom").count();
        check(booms >= 3, || format!("{booms} booms logged"))
    })
}

fn healthcheck_in_the_container_gates_a_dependent(env: &Env) -> Result {
    let mut db = sh("sleep 1; touch /tmp/ready; exec sleep 1000", None);
    db.healthcheck = Some(Healthcheck {
        test: Some(Command::Exec(vec![
            "CMD".into(),
            "test".into(),
            "-f".into(),
            "/tmp/ready".into(),
        ])),
        interval: Some(D(Duration::from_millis(200))),
        timeout: Some(D(Duration::from_secs(5))),
        retries: Some(100),
        ..Default::default()
    });
    let mut files = sh("sleep 0.5; touch /tmp/up; exec sleep 1000", None);
    files.healthcheck = Some(Healthcheck {
        test: Some(Command::Shell("file:/tmp/up".into())),
        interval: Some(D(Duration::from_millis(100))),
        ..Default::default()
    });
    let (sup, _) = supervise(
        env,
        "health",
        &[
            ("hc-db", db),
            ("hc-files", files),
            (
                "hc-app",
                depends(
                    sh("exec sleep 1000", None),
                    "hc-db",
                    Condition::ServiceHealthy,
                ),
            ),
        ],
    )?;
    with_shutdown(&sup, || {
        wait(&sup, "db running", 30, |s| {
            state_is(s, "hc-db", Phase::Running)
        })?;
        let db = sup.service("hc-db").ok_or("no db")?;
        check(db.health == Some(Health::Starting), || format!("{db:?}"))?;
        check(
            sup.service("hc-app")
                .is_some_and(|a| a.state == Phase::Waiting),
            || format!("app should wait: {:?}", sup.service("hc-app")),
        )?;
        wait(&sup, "app running", 30, |s| {
            state_is(s, "hc-app", Phase::Running)
        })?;
        let db = sup.service("hc-db").ok_or("no db")?;
        check(db.health == Some(Health::Healthy) && db.ready, || {
            format!("{db:?}")
        })?;
        wait(&sup, "files healthy", 10, |s| {
            s.service("hc-files").and_then(|f| f.health) == Some(Health::Healthy)
        })?;
        let t = sup.timeline();
        let find = |n: &str| t.services.iter().find(|e| e.service == n).cloned();
        let (d, a) = (
            find("hc-db").ok_or("no entry")?,
            find("hc-app").ok_or("no entry")?,
        );
        check(d.ready.is_some() && a.created >= d.ready, || {
            format!("timeline {t:?}")
        })?;
        check(d.ready >= d.started.map(|s| s + 0.9), || {
            format!("ready too soon: {d:?}")
        })
    })
}

fn stop_in_reverse_order_with_sigkill_after_grace(env: &Env) -> Result {
    let trap = "trap 'echo term; exit 0' TERM; while true; do sleep 0.1; done";
    let (sup, _) = supervise(
        env,
        "stop",
        &[
            ("st-base", sh(trap, Some(RestartPolicy::Always))),
            // PID 1 without a handler ignores SIGTERM: SIGKILL after the grace period.
            (
                "st-mid",
                depends(
                    sh("exec sleep 1000", Some(RestartPolicy::Always)),
                    "st-base",
                    Condition::ServiceStarted,
                ),
            ),
            (
                "st-top",
                depends(
                    sh(trap, Some(RestartPolicy::Always)),
                    "st-mid",
                    Condition::ServiceStarted,
                ),
            ),
        ],
    )?;
    wait(&sup, "top running", 30, |s| {
        state_is(s, "st-top", Phase::Running)
    })?;
    let pids: Vec<i32> = ["st-base", "st-mid", "st-top"]
        .iter()
        .filter_map(|n| sup.service(n).and_then(|s| s.pid))
        .collect();
    let t = Instant::now();
    sup.shutdown().map_err(|e| e.to_string())?;
    let took = t.elapsed();
    let timeline = sup.timeline();
    let exited = |n: &str| {
        timeline
            .services
            .iter()
            .find(|e| e.service == n)
            .and_then(|e| e.exited)
    };
    let (b, m, top) = (exited("st-base"), exited("st-mid"), exited("st-top"));
    check(top.is_some() && top <= m && m <= b, || {
        format!("exit order top {top:?} mid {m:?} base {b:?}")
    })?;
    check(took >= Duration::from_secs(1), || {
        format!("mid was not given its grace period: {took:?}")
    })?;
    let mid = sup.service("st-mid").ok_or("no mid")?;
    check(mid.exit_code == Some(137), || format!("mid {mid:?}"))?;
    let base = sup.service("st-base").ok_or("no base")?;
    check(base.exit_code == Some(0), || format!("base {base:?}"))?;
    for pid in pids {
        check(!Path::new(&format!("/proc/{pid}")).exists(), || {
            format!("{pid} still runs")
        })?;
    }
    check(!env.dir.join("run/containers/st-mid").exists(), || {
        "bundle left behind".into()
    })
}

/// A stop that reaches a container's init before it has a handler for the
/// signal is dropped by the kernel (a namespace's init gets only the signals
/// it handles); berthd sends it again once the handler is in, so the service
/// stops cleanly then, not killed at the end of its grace period.
fn a_stop_before_the_handler_is_in_goes_again(env: &Env) -> Result {
    let mut late = sh(
        "sleep 1; trap 'echo term; exit 0' TERM; while true; do sleep 0.1; done",
        Some(RestartPolicy::Always),
    );
    late.stop_grace_period = Some(D(Duration::from_secs(20)));
    let (sup, logs) = supervise(env, "late", &[("late", late)])?;
    with_shutdown(&sup, || {
        wait(&sup, "late running", 30, |s| {
            state_is(s, "late", Phase::Running)
        })?;
        let stopped = sup.stop_service("late").map_err(|e| e.to_string())?;
        check(stopped.state == Phase::Stopped, || format!("{stopped:?}"))?;
        check(stopped.exit_code == Some(0), || {
            format!("not stopped by its handler: {stopped:?}")
        })?;
        let log = log_text(&logs, "late");
        check(log.contains("term"), || format!("log {log:?}"))
    })
}

fn reconcile_recreates_only_the_changed_service(env: &Env) -> Result {
    let keep = sh("exec sleep 1000", None);
    let (sup, _) = supervise(
        env,
        "reconcile",
        &[
            ("rc-keep", keep.clone()),
            ("rc-change", sh("exec sleep 1000", None)),
            ("rc-gone", sh("exec sleep 1000", None)),
        ],
    )?;
    with_shutdown(&sup, || {
        wait(&sup, "all running", 30, |s| {
            ["rc-keep", "rc-change", "rc-gone"]
                .iter()
                .all(|n| state_is(s, n, Phase::Running))
        })?;
        let pid = |n: &str| sup.service(n).and_then(|s| s.pid);
        let (keep_pid, change_pid) = (pid("rc-keep"), pid("rc-change"));
        let new: BTreeMap<String, Service> = [
            ("rc-keep", keep),
            ("rc-change", sh("exec sleep 2000", None)),
            ("rc-new", sh("exec sleep 1000", None)),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        let report = sup.reconcile(new).map_err(|e| e.to_string())?;
        check(
            report.recreated == ["rc-change"]
                && report.removed == ["rc-gone"]
                && report.added == ["rc-new"],
            || format!("{report:?}"),
        )?;
        wait(&sup, "changed and new running", 30, |s| {
            state_is(s, "rc-change", Phase::Running) && state_is(s, "rc-new", Phase::Running)
        })?;
        check(pid("rc-keep") == keep_pid && keep_pid.is_some(), || {
            "the unchanged service was touched".into()
        })?;
        check(pid("rc-change") != change_pid, || {
            "the changed service was not recreated".into()
        })?;
        // The init execs the command just after `start` returns.
        let runs_new = |pid: Option<i32>| {
            std::fs::read(format!("/proc/{}/cmdline", pid.unwrap_or(0)))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("2000"))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !runs_new(pid("rc-change")) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        check(runs_new(pid("rc-change")), || {
            // What ran instead, for a failure seen once in a full run (and never alone).
            let now = pid("rc-change");
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", now.unwrap_or(0)))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "));
            format!(
                "does not run the new command after 5 s: pid {now:?} (was {change_pid:?}), \
                 cmdline {cmdline:?}, {:?}",
                sup.service("rc-change")
            )
        })?;
        check(sup.service("rc-gone").is_none(), || {
            "removed service still listed".into()
        })
    })
}

/// A loop device added on the host (`LOOP_CTL_ADD`, as `losetup` does when
/// every loop device is in use) while a privileged service runs reaches its
/// `/dev` through the uevent berthd hears; removed, it goes again.
fn a_privileged_service_gets_the_devices_that_come_and_go(env: &Env) -> Result {
    const LOOP_CTL_ADD: libc::c_ulong = 0x4C80;
    const LOOP_CTL_REMOVE: libc::c_ulong = 0x4C81;
    let mut service = sh("sleep 600", None);
    service.privileged = true;
    let (sup, _logs) = supervise(env, "devices", &[("dev-priv", service)])?;
    let sup = Arc::new(sup);
    berthd::host::devices::spawn(Arc::clone(&sup));
    with_shutdown(&sup, || {
        wait(&sup, "dev-priv running", 30, |s| {
            state_is(s, "dev-priv", Phase::Running)
        })?;
        let pid = sup
            .service("dev-priv")
            .and_then(|s| s.pid)
            .ok_or("no pid")?;
        let control = std::fs::File::open("/dev/loop-control")
            .map_err(|e| format!("/dev/loop-control: {e}"))?;
        // A number no loop device has yet.
        let number = (300..400)
            .find(|n| !Path::new(&format!("/dev/loop{n}")).exists())
            .ok_or("no free loop number")?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&control);
        // SAFETY: ioctl on an open loop-control fd with an integer argument.
        if unsafe { libc::ioctl(fd, LOOP_CTL_ADD, number) } < 0 {
            return Err(format!(
                "LOOP_CTL_ADD {number}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let inside = PathBuf::from(format!("/proc/{pid}/root/dev/loop{number}"));
        let appeared = poll(Duration::from_secs(15), || inside.exists());
        // SAFETY: as above.
        let removed = unsafe { libc::ioctl(fd, LOOP_CTL_REMOVE, number) } >= 0;
        check(appeared, || {
            format!("{} did not appear in the service's /dev", inside.display())
        })?;
        check(removed, || format!("LOOP_CTL_REMOVE {number} failed"))?;
        check(poll(Duration::from_secs(15), || !inside.exists()), || {
            format!("{} stayed after the host lost it", inside.display())
        })
    })
}

fn poll(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}
