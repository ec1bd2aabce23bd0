//! The supervisor against the [`Recording`] runtime: the test plays the
//! containers' exits and healthcheck results and reads the calls made.

use super::*;
use crate::runtime::recording::{Call, Recording};
use berth_configs::forms::{Command as Cmd, Duration as D};
use berth_configs::model::{Condition, Dependency, Healthcheck};

struct Env {
    rt: Arc<Recording>,
    sup: Supervisor,
    _dir: tempfile::TempDir,
}

fn service(restart: Option<RestartPolicy>) -> Service {
    Service {
        image: Some("busybox".into()),
        command: Some(Cmd::Shell("sleep 1000".into())),
        restart,
        ..Default::default()
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

fn with_health(mut s: Service) -> Service {
    s.healthcheck = Some(Healthcheck {
        test: Some(Cmd::Exec(vec!["CMD".into(), "true".into()])),
        interval: Some(D(Duration::from_millis(20))),
        retries: Some(1),
        ..Default::default()
    });
    s
}

fn start(services: &[(&str, Service)], setup: impl FnOnce(&Recording)) -> Env {
    start_with(services, setup, |_| {})
}

fn start_with(
    services: &[(&str, Service)],
    setup: impl FnOnce(&Recording),
    options_for_test: impl FnOnce(&mut Options),
) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(Recording::new());
    setup(&rt);
    let mut options = Options::new(dir.path().join("run"));
    options.backoff = Backoff {
        initial: Duration::from_millis(40),
        max: Duration::from_millis(160),
        reset_after: Duration::from_secs(60),
    };
    options.stop_grace = Duration::from_millis(200);
    options_for_test(&mut options);
    let logs = Arc::new(LogDir::new(logs::LogConfig::new(dir.path().join("log"))));
    let sup = Supervisor::start(
        Arc::clone(&rt) as Arc<dyn Runtime>,
        Arc::new(FixedImages(ImageLayers::default())),
        logs,
        options,
        services
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect(),
    )
    .expect("supervisor");
    Env { rt, sup, _dir: dir }
}

impl Env {
    fn wait(&self, what: &str, pred: impl Fn(&Snapshot) -> bool) {
        if !self.sup.wait_for(Duration::from_secs(5), pred) {
            panic!("timed out waiting for {what}: {:#?}", self.sup.services());
        }
    }

    fn state(&self, name: &str) -> Phase {
        self.sup.service(name).expect("service").state
    }

    fn running(&self, name: &str) {
        self.wait(&format!("{name} running"), |s| {
            s.service(name).is_some_and(|x| x.state == Phase::Running)
        });
    }

    fn creates(&self) -> Vec<String> {
        self.rt
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Create { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    fn kills(&self) -> Vec<(String, Signal)> {
        self.rt
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Kill { id, signal } => Some((id, signal)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn declared_services_are_listed_as_soon_as_the_supervisor_exists() {
    let env = start(
        &[
            ("a", service(None)),
            ("b", depends(service(None), "a", Condition::ServiceHealthy)),
        ],
        |_| {},
    );
    // No wait: PID 1 polls the API right after berthd starts.
    let names: Vec<String> = env.sup.services().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn a_oneshot_completes_before_its_dependent_starts() {
    let mut setup = service(None);
    setup.oneshot = true;
    let env = start(
        &[
            ("setup", setup),
            (
                "app",
                depends(
                    service(None),
                    "setup",
                    Condition::ServiceCompletedSuccessfully,
                ),
            ),
            ("other", service(None)),
        ],
        |_| {},
    );
    env.running("setup");
    env.running("other");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(env.state("app"), Phase::Waiting);
    assert!(!env.creates().contains(&"app".to_string()));
    env.rt.exit("setup", Exit::Code(0));
    env.running("app");
    let setup = env.sup.service("setup").expect("setup");
    assert_eq!(
        (setup.state, setup.ready, setup.exit_code),
        (Phase::Exited, true, Some(0))
    );
    let timeline = env.sup.timeline();
    let names: Vec<&str> = timeline
        .services
        .iter()
        .map(|e| e.service.as_str())
        .collect();
    assert!(
        names.contains(&"app") && names.contains(&"setup"),
        "{names:?}"
    );
    env.sup.shutdown().expect("shutdown");
}

#[test]
fn a_failed_oneshot_blocks_its_dependent_with_a_reason() {
    let mut setup = service(None);
    setup.oneshot = true;
    let env = start(
        &[
            ("setup", setup),
            (
                "app",
                depends(service(None), "setup", Condition::ServiceStarted),
            ),
        ],
        |_| {},
    );
    env.running("setup");
    env.rt.exit("setup", Exit::Code(3));
    env.wait("app blocked", |s| {
        s.service("app").and_then(|a| a.error.clone()).is_some()
    });
    let app = env.sup.service("app").expect("app");
    assert_eq!(app.state, Phase::Waiting);
    assert!(
        app.error
            .as_deref()
            .unwrap_or_default()
            .contains("`setup` exited with code 3"),
        "{app:?}"
    );
    env.sup.shutdown().expect("shutdown");
}

#[test]
fn a_crash_loop_backs_off_and_leaves_others_alone() {
    let env = start(
        &[
            ("crash", service(Some(RestartPolicy::Always))),
            ("steady", service(Some(RestartPolicy::Always))),
        ],
        |_| {},
    );
    env.running("steady");
    let mut gaps = Vec::new();
    for round in 0..4 {
        env.running("crash");
        let exited = Instant::now();
        env.rt.exit("crash", Exit::Code(1));
        env.wait("a restart", |s| {
            s.service("crash").is_some_and(|c| c.restarts == round + 1)
        });
        env.running("crash");
        gaps.push(exited.elapsed());
    }
    // At least 40, 80, 160, 160 ms: a timer never fires early. (That the
    // delay stops growing at `max` is the arithmetic's, tested below: a
    // wall-clock upper bound would only measure how busy the machine is.)
    for (gap, min) in gaps.iter().zip([40, 80, 160, 160]) {
        assert!(*gap >= Duration::from_millis(min), "{gaps:?}");
    }
    let steady = env.sup.service("steady").expect("steady");
    assert_eq!((steady.state, steady.restarts), (Phase::Running, 0));
    assert_eq!(env.creates().iter().filter(|c| *c == "steady").count(), 1);
    env.sup.shutdown().expect("shutdown");
}

#[test]
fn the_backoff_doubles_up_to_its_cap() {
    let backoff = Backoff {
        initial: Duration::from_millis(40),
        max: Duration::from_millis(160),
        reset_after: Duration::from_secs(60),
    };
    let delays: Vec<u128> =
        std::iter::successors(Some(backoff.initial), |d| Some(backoff.next(*d)))
            .take(5)
            .map(|d| d.as_millis())
            .collect();
    assert_eq!(delays, [40, 80, 160, 160, 160]);
    assert_eq!(
        Backoff::default().next(Duration::from_secs(20)),
        Duration::from_secs(30)
    );
}

#[test]
fn on_failure_gives_up_after_n_and_ignores_success() {
    let env = start(
        &[
            ("flaky", service(Some(RestartPolicy::OnFailure(Some(2))))),
            ("clean", service(Some(RestartPolicy::OnFailure(None)))),
            ("never", service(Some(RestartPolicy::No))),
        ],
        |_| {},
    );
    for _ in 0..3 {
        env.running("flaky");
        env.rt.exit("flaky", Exit::Code(2));
        env.wait("flaky to leave running", |s| {
            s.service("flaky")
                .is_some_and(|c| c.state != Phase::Running)
        });
    }
    env.wait("flaky failed", |s| {
        s.service("flaky").is_some_and(|c| c.state == Phase::Failed)
    });
    let flaky = env.sup.service("flaky").expect("flaky");
    assert_eq!(flaky.restarts, 2);
    assert!(flaky.error.unwrap_or_default().contains("gave up after 2"));
    env.running("clean");
    env.rt.exit("clean", Exit::Code(0));
    env.running("never");
    env.rt.exit("never", Exit::Signal(9));
    env.wait("both exited", |s| {
        s.service("clean").is_some_and(|c| c.state == Phase::Exited)
            && s.service("never").is_some_and(|c| c.state == Phase::Exited)
    });
    assert_eq!(
        env.sup.service("never").and_then(|s| s.exit_code),
        Some(137)
    );
    env.sup.shutdown().expect("shutdown");
}

#[test]
fn a_healthcheck_gates_a_dependent() {
    let env = start(
        &[
            ("db", with_health(service(None))),
            (
                "app",
                depends(service(None), "db", Condition::ServiceHealthy),
            ),
        ],
        |rt| rt.set_exec("db", Exit::Code(1)),
    );
    env.running("db");
    env.wait("db unhealthy", |s| {
        s.service("db").and_then(|d| d.health) == Some(Health::Unhealthy)
    });
    assert_eq!(env.state("app"), Phase::Waiting);
    env.rt.set_exec("db", Exit::Code(0));
    env.running("app");
    let db = env.sup.service("db").expect("db");
    assert_eq!((db.health, db.ready), (Some(Health::Healthy), true));
    let t = env.sup.timeline();
    let db_t = t
        .services
        .iter()
        .find(|e| e.service == "db")
        .expect("db entry");
    let app_t = t
        .services
        .iter()
        .find(|e| e.service == "app")
        .expect("app entry");
    assert!(db_t.ready.is_some() && app_t.created >= db_t.ready, "{t:?}");
    env.sup.shutdown().expect("shutdown");
}

fn after_ready(mut s: Service) -> Service {
    s.after_ready = true;
    s
}

/// `after_ready` services and their dependents are created only once every
/// other service has come to rest (an unhealthy one has not), and the API
/// marks them so PID 1's ready line does not wait for them.
#[test]
fn after_ready_services_start_once_the_others_are_at_rest() {
    let env = start(
        &[
            ("db", with_health(service(None))),
            ("ntp", after_ready(service(None))),
            (
                "clock-user",
                depends(service(None), "ntp", Condition::ServiceStarted),
            ),
        ],
        |rt| rt.set_exec("db", Exit::Code(1)),
    );
    env.wait("db unhealthy", |s| {
        s.service("db").and_then(|d| d.health) == Some(Health::Unhealthy)
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(env.creates(), ["db"]);
    let kept: Vec<(String, bool)> = env
        .sup
        .services()
        .into_iter()
        .map(|s| (s.name, s.after_ready))
        .collect();
    assert_eq!(
        kept,
        [
            ("clock-user".to_string(), true),
            ("db".to_string(), false),
            ("ntp".to_string(), true)
        ]
    );
    env.rt.set_exec("db", Exit::Code(0));
    env.running("ntp");
    env.running("clock-user");
    assert_eq!(env.creates(), ["db", "ntp", "clock-user"]);
    env.sup.shutdown().expect("shutdown");
}

/// A service that never comes to rest holds the `after_ready` ones back
/// only until their deadline.
#[test]
fn after_ready_services_start_at_their_deadline_anyway() {
    let env = start_with(
        &[
            ("db", with_health(service(None))),
            ("ntp", after_ready(service(None))),
        ],
        |rt| rt.set_exec("db", Exit::Code(1)),
        |o| o.after_ready_at_the_latest = Duration::from_millis(300),
    );
    env.running("ntp");
    assert_eq!(
        env.sup.service("db").and_then(|d| d.health),
        Some(Health::Unhealthy)
    );
    env.sup.shutdown().expect("shutdown");
}

#[test]
fn shutdown_stops_dependents_first_and_kills_after_the_grace_period() {
    let env = start(
        &[
            ("base", service(Some(RestartPolicy::Always))),
            (
                "mid",
                depends(
                    service(Some(RestartPolicy::Always)),
                    "base",
                    Condition::ServiceStarted,
                ),
            ),
            (
                "top",
                depends(
                    service(Some(RestartPolicy::Always)),
                    "mid",
                    Condition::ServiceStarted,
                ),
            ),
        ],
        |rt| rt.ignore_signals("mid"),
    );
    env.running("top");
    let t = Instant::now();
    env.sup.shutdown().expect("shutdown");
    let kills = env.kills();
    assert_eq!(
        kills,
        [
            ("top".to_string(), Signal::SIGTERM),
            ("mid".to_string(), Signal::SIGTERM),
            ("mid".to_string(), Signal::SIGKILL),
            ("base".to_string(), Signal::SIGTERM),
        ]
    );
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(env.rt.containers().is_empty(), "every container deleted");
}

/// A service is stopped as soon as what depends on it has stopped, not after
/// a whole "level" of the graph: `a` (under `b`) does not wait for `e`, which
/// ignores SIGTERM and is killed after its grace period on the other branch.
#[test]
fn shutdown_stops_independent_branches_in_parallel() {
    let always = || service(Some(RestartPolicy::Always));
    let env = start(
        &[
            ("a", always()),
            ("b", depends(always(), "a", Condition::ServiceStarted)),
            ("c", always()),
            ("d", depends(always(), "c", Condition::ServiceStarted)),
            ("e", depends(always(), "d", Condition::ServiceStarted)),
        ],
        |rt| rt.ignore_signals("e"),
    );
    for n in ["a", "b", "c", "d", "e"] {
        env.running(n);
    }
    env.sup.shutdown().expect("shutdown");
    let kills = env.kills();
    let at = |name: &str, signal: Signal| {
        kills
            .iter()
            .position(|k| k.0 == name && k.1 == signal)
            .unwrap_or_else(|| panic!("no {signal} for {name}: {kills:?}"))
    };
    assert!(
        at("a", Signal::SIGTERM) < at("e", Signal::SIGKILL),
        "a waited for e's grace period: {kills:?}"
    );
    // Dependents still stop before what they depend on.
    assert!(
        at("b", Signal::SIGTERM) < at("a", Signal::SIGTERM),
        "{kills:?}"
    );
    assert!(
        at("e", Signal::SIGKILL) < at("d", Signal::SIGTERM),
        "{kills:?}"
    );
    assert!(
        at("d", Signal::SIGTERM) < at("c", Signal::SIGTERM),
        "{kills:?}"
    );
    assert!(env.rt.containers().is_empty(), "every container deleted");
}

/// A stop that comes before the service's init has installed its handler
/// (chronyd restarted a moment after its start) is dropped by the kernel; the
/// signal goes again once the handler is in, so the service stops then and
/// not at the end of its grace period, killed.
#[test]
fn a_stop_signal_dropped_before_the_handler_goes_again() {
    let mut s = service(Some(RestartPolicy::Always));
    s.stop_grace_period = Some(D(Duration::from_secs(30)));
    let env = start(&[("ntp", s)], |rt| rt.ignore_signals("ntp"));
    env.running("ntp");
    let rt = Arc::clone(&env.rt);
    let handler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        rt.install_handlers("ntp");
    });
    let t = Instant::now();
    let stopped = env.sup.stop_service("ntp").expect("stop");
    handler.join().expect("handler thread");
    assert_eq!(stopped.state, Phase::Stopped);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        env.kills(),
        [
            ("ntp".to_string(), Signal::SIGTERM),
            ("ntp".to_string(), Signal::SIGTERM)
        ]
    );
    assert_eq!(
        env.sup.service("ntp").expect("ntp").exit_code,
        Some(128 + 15)
    );
}

#[test]
fn stop_start_and_restart_by_request() {
    let mut s = service(Some(RestartPolicy::Always));
    s.stop_signal = Some(berth_configs::compose::StopSignal::parse("SIGINT").expect("signal"));
    let env = start(&[("ntp", s)], |_| {});
    env.running("ntp");
    let stopped = env.sup.stop_service("ntp").expect("stop");
    assert_eq!(stopped.state, Phase::Stopped);
    assert_eq!(env.kills(), [("ntp".to_string(), Signal::SIGINT)]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        env.state("ntp"),
        Phase::Stopped,
        "always does not undo a stop"
    );
    let started = env
        .sup
        .start_service("ntp", Duration::from_secs(5))
        .expect("start");
    assert_eq!(started.state, Phase::Running);
    let pid = started.pid;
    let restarted = env
        .sup
        .restart_service("ntp", Duration::from_secs(5))
        .expect("restart");
    assert_eq!(restarted.state, Phase::Running);
    assert_ne!(restarted.pid, pid);
    assert!(matches!(
        env.sup.stop_service("nope"),
        Err(SupervisorError::UnknownService { .. })
    ));
    env.sup.shutdown().expect("shutdown");
    assert!(matches!(
        env.sup.start_service("ntp", Duration::ZERO),
        Err(SupervisorError::Gone)
    ));
}

#[test]
fn reconcile_recreates_only_what_changed() {
    let mut restartable = depends(service(None), "b", Condition::ServiceStarted);
    if let Some(d) = restartable.depends_on.get_mut("b") {
        d.restart = Some(true);
    }
    let env = start(
        &[
            ("a", service(None)),
            ("b", service(None)),
            ("c", restartable.clone()),
            ("gone", service(None)),
        ],
        |_| {},
    );
    for n in ["a", "b", "c", "gone"] {
        env.running(n);
    }
    let mut b2 = service(None);
    b2.command = Some(Cmd::Shell("sleep 2000".into()));
    let new: BTreeMap<String, Service> = [
        ("a", service(None)),
        ("b", b2),
        ("c", restartable),
        ("new", service(None)),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    let report = env.sup.reconcile(new).expect("reconcile");
    assert_eq!(report.added, ["new"]);
    assert_eq!(report.removed, ["gone"]);
    assert_eq!(report.recreated, ["b", "c"]);
    assert_eq!(report.unchanged, ["a"]);
    for n in ["a", "b", "c", "new"] {
        env.running(n);
    }
    assert!(env.sup.service("gone").is_none());
    let creates = env.creates();
    let count = |n: &str| creates.iter().filter(|c| *c == n).count();
    assert_eq!(
        (count("a"), count("b"), count("c"), count("new")),
        (1, 2, 2, 1)
    );
    env.sup.shutdown().expect("shutdown");
}

#[test]
fn a_failing_create_is_retried_per_policy_and_reported() {
    let env = start(
        &[
            ("bad", service(Some(RestartPolicy::Always))),
            ("once", service(None)),
        ],
        |rt| {
            rt.fail_next(
                crate::runtime::recording::Op::Create,
                "bad",
                "no such image",
            );
            rt.fail_next(crate::runtime::recording::Op::Start, "once", "no cgroup");
        },
    );
    env.running("bad");
    assert_eq!(env.sup.service("bad").map(|s| s.restarts), Some(1));
    env.wait("once failed", |s| {
        s.service("once").is_some_and(|c| c.state == Phase::Failed)
    });
    let once = env.sup.service("once").expect("once");
    assert!(once.error.unwrap_or_default().contains("no cgroup"));
    assert!(
        !env.rt.containers().contains(&"once".to_string()),
        "cleaned up"
    );
    env.sup.shutdown().expect("shutdown");
}

#[test]
fn a_running_container_with_saved_state_is_adopted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(Recording::new());
    let def = service(Some(RestartPolicy::Always));
    let run = dir.path().join("run");
    let make = |rt: &Recording, id: &str| {
        let created = rt
            .create(&ContainerConfig {
                id: id.into(),
                service_name: id.into(),
                service: def.clone(),
                image: ImageLayers::default(),
                environment: BTreeMap::new(),
                service_network: None,
                files: Vec::new(),
            })
            .expect("create");
        rt.start(id).expect("start");
        created
    };
    let _keep = (make(&rt, "kept"), make(&rt, "stale"));
    std::fs::create_dir_all(run.join("services")).expect("mkdir");
    let saved = Saved {
        definition: fingerprint(&def),
        restarts: 4,
        timeline: Entry {
            service: "kept".into(),
            started: Some(1.0),
            ..Default::default()
        },
        phase: Some(Phase::Running),
        ..Default::default()
    };
    std::fs::write(
        run.join("services/kept.json"),
        serde_json::to_vec(&saved).expect("json"),
    )
    .expect("write");
    let logs = Arc::new(LogDir::new(logs::LogConfig::new(dir.path().join("log"))));
    let sup = Supervisor::start(
        Arc::clone(&rt) as Arc<dyn Runtime>,
        Arc::new(FixedImages(ImageLayers::default())),
        Arc::clone(&logs),
        Options::new(&run),
        [
            ("kept".to_string(), def.clone()),
            ("stale".to_string(), def),
        ]
        .into_iter()
        .collect(),
    )
    .expect("supervisor");
    assert!(sup.wait_for(Duration::from_secs(5), |s| {
        s.services.len() == 2 && s.services.iter().all(|x| x.state == Phase::Running)
    }));
    let kept = sup.service("kept").expect("kept");
    assert!(kept.adopted && kept.restarts == 4, "{kept:?}");
    // Its output is read again: what it prints now reaches its log.
    assert!(rt.write_stdout("kept", b"still here\n"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = logs
            .reader("kept")
            .and_then(|r| r.lines(&logs::Query::default()))
            .expect("log")
            .filter_map(|l| l.ok().map(|l| l.message().to_string()))
            .collect();
        if lines.iter().any(|l| l == "still here") {
            break;
        }
        assert!(Instant::now() < deadline, "not logged: {lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let creates: Vec<Call> = rt
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Create { .. } | Call::Delete { .. }))
        .collect();
    assert_eq!(
        &creates[2..],
        [
            Call::Delete { id: "stale".into() },
            Call::Create {
                id: "stale".into(),
                service: "stale".into()
            }
        ],
        "no saved state: recreated; the adopted one is not created again"
    );
    sup.shutdown().expect("shutdown");
}

#[test]
fn a_restarted_berthd_continues_where_the_last_one_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    let mut setup = Service {
        command: Some(Cmd::Shell("true".into())),
        oneshot: true,
        ..service(None)
    };
    setup.restart = None;
    let crashy = service(Some(RestartPolicy::OnFailure(Some(5))));
    let services: BTreeMap<String, Service> = [
        ("setup".to_string(), setup),
        ("off".to_string(), service(Some(RestartPolicy::Always))),
        ("crashy".to_string(), crashy),
    ]
    .into_iter()
    .collect();
    let boot = |rt: &Arc<Recording>| {
        let mut options = Options::new(&run);
        options.backoff.initial = Duration::from_millis(40);
        Supervisor::start(
            Arc::clone(rt) as Arc<dyn Runtime>,
            Arc::new(FixedImages(ImageLayers::default())),
            Arc::new(LogDir::new(logs::LogConfig::new(dir.path().join("log")))),
            options,
            services.clone(),
        )
        .expect("supervisor")
    };
    let rt = Arc::new(Recording::new());
    let first = boot(&rt);
    let ran = |s: &Snapshot, n: &str| s.service(n).is_some_and(|x| x.state == Phase::Running);
    assert!(first.wait_for(Duration::from_secs(5), |s| ran(s, "off")
        && ran(s, "crashy")));
    rt.exit("setup", Exit::Code(0));
    first.stop_service("off").expect("stop");
    rt.exit("crashy", Exit::Code(1));
    assert!(first.wait_for(Duration::from_secs(5), |s| {
        s.service("crashy")
            .is_some_and(|x| x.restarts == 1 && x.state == Phase::Running)
            && s.service("setup").is_some_and(|x| x.state == Phase::Exited)
    }));
    // berthd dies here (nothing is stopped) while crashy's container ends unseen.
    first.abandon();
    rt.exit("crashy", Exit::Code(1));
    let creates_before = rt
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Create { .. }))
        .count();

    let second = boot(&rt);
    assert!(second.wait_for(Duration::from_secs(5), |s| {
        s.service("crashy")
            .is_some_and(|x| x.restarts == 2 && x.state == Phase::Running)
    }));
    let setup = second.service("setup").expect("setup");
    assert!(setup.state == Phase::Exited && setup.ready, "{setup:?}");
    assert_eq!(second.service("off").expect("off").state, Phase::Stopped);
    let created: Vec<String> = rt.calls()[..]
        .iter()
        .filter_map(|c| match c {
            Call::Create { id, .. } => Some(id.clone()),
            _ => None,
        })
        .skip(creates_before)
        .collect();
    assert_eq!(
        created,
        ["crashy"],
        "the completed oneshot and the stopped service are not started again"
    );
    second.shutdown().expect("shutdown");
    assert!(
        std::fs::read_dir(run.join("services"))
            .expect("dir")
            .next()
            .is_none(),
        "an orderly stop leaves no state behind"
    );
}
