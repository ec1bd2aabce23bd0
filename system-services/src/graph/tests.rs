use super::*;
use berth_configs::forms::{Command, KeyValues};
use berth_configs::model::{Dependency, Healthcheck};

fn svc() -> Service {
    Service {
        image: Some("busybox".into()),
        ..Service::default()
    }
}

fn dep(condition: Condition) -> Dependency {
    Dependency {
        condition,
        ..Dependency::default()
    }
}

fn with_deps(deps: &[(&str, Condition)]) -> Service {
    let mut s = svc();
    for (name, c) in deps {
        s.depends_on.insert(name.to_string(), dep(*c));
    }
    s
}

fn label(mut s: Service, key: &str, value: &str) -> Service {
    let mut labels = s.labels.0.clone();
    labels.insert(key.to_string(), Some(value.to_string()));
    s.labels = KeyValues(labels);
    s
}

fn healthchecked(mut s: Service) -> Service {
    s.healthcheck = Some(Healthcheck {
        test: Some(Command::Shell("true".into())),
        ..Healthcheck::default()
    });
    s
}

fn services(list: Vec<(&str, Service)>) -> BTreeMap<String, Service> {
    list.into_iter().map(|(n, s)| (n.to_string(), s)).collect()
}

fn states(list: &[(&str, State)]) -> BTreeMap<String, State> {
    list.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

fn graph(list: Vec<(&str, Service)>) -> Graph {
    match Graph::new(&services(list)) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}

const STARTED: Condition = Condition::ServiceStarted;
const HEALTHY: Condition = Condition::ServiceHealthy;
const COMPLETED: Condition = Condition::ServiceCompletedSuccessfully;

#[test]
fn independent_services_start_together() {
    let g = graph(vec![
        ("a", svc()),
        ("b", svc()),
        ("c", with_deps(&[("a", STARTED)])),
    ]);
    let plan = g.evaluate(&BTreeMap::new());
    assert_eq!(plan.ready, ["a", "b"]);
    assert!(plan.blocked.is_empty());
}

#[test]
fn service_started_waits_for_started() {
    let g = graph(vec![("a", svc()), ("c", with_deps(&[("a", STARTED)]))]);
    for (st, ready) in [
        (State::Pending, false),
        (State::Starting, false),
        (State::Started, true),
        (State::Healthy, true),
        (State::Exited(0), true),
    ] {
        let plan = g.evaluate(&states(&[("a", st)]));
        assert_eq!(plan.ready.contains(&"c".to_string()), ready, "{st:?}");
    }
    // Already started services are not planned again.
    let plan = g.evaluate(&states(&[("a", State::Started), ("c", State::Started)]));
    assert!(plan.ready.is_empty());
}

#[test]
fn service_healthy_waits_for_the_healthcheck() {
    let g = graph(vec![
        ("a", healthchecked(svc())),
        ("c", with_deps(&[("a", HEALTHY)])),
    ]);
    assert!(g
        .evaluate(&states(&[("a", State::Started)]))
        .ready
        .is_empty());
    assert_eq!(g.evaluate(&states(&[("a", State::Healthy)])).ready, ["c"]);
}

#[test]
fn service_healthy_without_healthcheck_means_started() {
    let mut disabled = healthchecked(svc());
    if let Some(h) = disabled.healthcheck.as_mut() {
        h.disable = true;
    }
    let g = graph(vec![
        ("a", svc()),
        ("b", disabled),
        ("c", with_deps(&[("a", HEALTHY), ("b", HEALTHY)])),
    ]);
    let plan = g.evaluate(&states(&[("a", State::Started), ("b", State::Started)]));
    assert_eq!(plan.ready, ["c"]);
}

#[test]
fn completed_successfully_waits_for_exit_zero() {
    let g = graph(vec![("a", svc()), ("c", with_deps(&[("a", COMPLETED)]))]);
    assert!(g
        .evaluate(&states(&[("a", State::Healthy)]))
        .ready
        .is_empty());
    assert_eq!(g.evaluate(&states(&[("a", State::Exited(0))])).ready, ["c"]);
    let plan = g.evaluate(&states(&[("a", State::Exited(3))]));
    assert_eq!(
        plan.blocked,
        [Blocked {
            service: "c".into(),
            dependency: "a".into(),
            reason: Reason::Exited(3)
        }]
    );
}

#[test]
fn oneshot_runs_to_completion_before_dependents() {
    let mut once = svc();
    once.oneshot = true;
    let g = graph(vec![("init", once), ("c", with_deps(&[("init", STARTED)]))]);
    assert!(g
        .evaluate(&states(&[("init", State::Started)]))
        .ready
        .is_empty());
    assert!(g
        .evaluate(&states(&[("init", State::Healthy)]))
        .ready
        .is_empty());
    assert_eq!(
        g.evaluate(&states(&[("init", State::Exited(0))])).ready,
        ["c"]
    );
    let plan = g.evaluate(&states(&[("init", State::Exited(1))]));
    assert!(plan.ready.is_empty());
    assert_eq!(plan.blocked[0].reason, Reason::Exited(1));
    assert_eq!(
        plan.blocked[0].to_string(),
        "`c` can never start: its dependency `init` exited with code 1 and will not be restarted"
    );
}

#[test]
fn exit_that_will_be_restarted_is_waited_out() {
    let mut once = svc();
    once.oneshot = true;
    once.restart = Some(RestartPolicy::OnFailure(Some(3)));
    let mut daemon = svc();
    daemon.restart = Some(RestartPolicy::Always);
    let g = graph(vec![
        ("init", once),
        ("d", daemon),
        ("c", with_deps(&[("init", STARTED), ("d", HEALTHY)])),
    ]);
    let plan = g.evaluate(&states(&[
        ("init", State::Exited(1)),
        ("d", State::Exited(2)),
    ]));
    assert!(plan.ready.is_empty());
    assert!(plan.blocked.is_empty());
    // Once the supervisor gives up, it says Failed.
    let plan = g.evaluate(&states(&[("init", State::Failed), ("d", State::Exited(2))]));
    assert_eq!(plan.blocked[0].reason, Reason::Failed);
}

#[test]
fn crashed_dependency_without_restart_blocks() {
    let g = graph(vec![("a", svc()), ("c", with_deps(&[("a", STARTED)]))]);
    let plan = g.evaluate(&states(&[("a", State::Exited(137))]));
    assert_eq!(plan.blocked[0].reason, Reason::Exited(137));
}

#[test]
fn failure_blocks_dependents_transitively() {
    let g = graph(vec![
        ("a", svc()),
        ("b", with_deps(&[("a", STARTED)])),
        ("c", with_deps(&[("b", HEALTHY)])),
        ("x", svc()),
    ]);
    let plan = g.evaluate(&states(&[("a", State::Failed)]));
    assert_eq!(plan.ready, ["x"]);
    assert_eq!(
        plan.blocked,
        [
            Blocked {
                service: "b".into(),
                dependency: "a".into(),
                reason: Reason::Failed
            },
            Blocked {
                service: "c".into(),
                dependency: "b".into(),
                reason: Reason::Blocked
            },
        ]
    );
    assert_eq!(
        plan.blocked[1].to_string(),
        "`c` can never start: its dependency `b` can never start"
    );
}

#[test]
fn optional_dependencies() {
    let mut c = svc();
    c.depends_on.insert(
        "gone".into(),
        Dependency {
            required: Some(false),
            ..Dependency::default()
        },
    );
    c.depends_on.insert(
        "a".into(),
        Dependency {
            required: Some(false),
            ..Dependency::default()
        },
    );
    let g = graph(vec![("a", svc()), ("c", c)]);
    // Dropped when missing; ordering only when present.
    assert_eq!(g.dependencies("c").len(), 1);
    assert_eq!(g.evaluate(&BTreeMap::new()).ready, ["a"]);
    assert_eq!(g.evaluate(&states(&[("a", State::Failed)])).ready, ["c"]);
}

#[test]
fn missing_required_dependency_blocks_only_that_service() {
    let g = graph(vec![("a", svc()), ("c", with_deps(&[("nope", STARTED)]))]);
    let plan = g.evaluate(&BTreeMap::new());
    assert_eq!(plan.ready, ["a"]);
    assert_eq!(plan.blocked[0].reason, Reason::Missing);
    assert_eq!(plan.blocked[0].dependency, "nope");
}

#[test]
fn ordering_labels_order_but_do_not_require() {
    let g = graph(vec![
        ("a", svc()),
        ("b", label(svc(), AFTER_LABEL, "a, nowhere")),
        ("early", label(svc(), BEFORE_LABEL, "a")),
    ]);
    let plan = g.evaluate(&BTreeMap::new());
    assert_eq!(plan.ready, ["early"]);
    let plan = g.evaluate(&states(&[("early", State::Starting)]));
    assert!(plan.ready.is_empty());
    let plan = g.evaluate(&states(&[("early", State::Started)]));
    assert_eq!(plan.ready, ["a"]);
    let plan = g.evaluate(&states(&[("early", State::Started), ("a", State::Started)]));
    assert_eq!(plan.ready, ["b"]);
    // a never comes: b starts anyway.
    let plan = g.evaluate(&states(&[("early", State::Failed), ("a", State::Failed)]));
    assert_eq!(plan.ready, ["b"]);
    assert!(plan.blocked.is_empty());
    assert_eq!(g.dependencies("a")[0].kind, EdgeKind::Before);
}

#[test]
fn ordering_after_a_oneshot_waits_for_its_end() {
    let mut once = svc();
    once.oneshot = true;
    let g = graph(vec![
        ("init", once),
        ("b", label(svc(), AFTER_LABEL, "init")),
    ]);
    assert!(g
        .evaluate(&states(&[("init", State::Started)]))
        .ready
        .is_empty());
    assert_eq!(
        g.evaluate(&states(&[("init", State::Exited(1))])).ready,
        ["b"]
    );
}

#[test]
fn network_mode_service_is_a_dependency_recreated_with_it() {
    let mut b = svc();
    b.network_mode = Some("service:a".into());
    let g = graph(vec![("a", svc()), ("b", b)]);
    assert_eq!(g.evaluate(&BTreeMap::new()).ready, ["a"]);
    assert_eq!(g.affected(["a"]), BTreeSet::from(["a".into(), "b".into()]));
}

#[test]
fn dependents_stop_first_and_start_last() {
    let g = graph(vec![
        ("network", svc()),
        ("ntp", with_deps(&[("network", STARTED)])),
        ("console", with_deps(&[("network", STARTED)])),
        (
            "docker",
            with_deps(&[("network", STARTED), ("console", STARTED)]),
        ),
        ("lone", svc()),
    ]);
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        g.dependents_closure("network"),
        set(&["console", "docker", "ntp"])
    );
    assert_eq!(g.dependents_closure("console"), set(&["docker"]));
    assert_eq!(g.dependents_closure("docker"), set(&[]));
    assert_eq!(g.dependents_closure("lone"), set(&[]));
    assert_eq!(g.dependents_closure("unknown"), set(&[]));
    assert_eq!(
        g.start_waves(),
        vec![
            vec!["lone".to_string(), "network".into()],
            vec!["console".into(), "ntp".into()],
            vec!["docker".into()],
        ]
    );
    let order = g.order();
    let pos = |n: &str| order.iter().position(|o| o == n);
    assert!(pos("network") < pos("console") && pos("console") < pos("docker"));
}

#[test]
fn affected_follows_restart_true_dependents() {
    let mut b = with_deps(&[]);
    b.depends_on.insert(
        "a".into(),
        Dependency {
            restart: Some(true),
            ..Dependency::default()
        },
    );
    let mut c = svc();
    c.depends_on.insert(
        "b".into(),
        Dependency {
            restart: Some(true),
            ..Dependency::default()
        },
    );
    let d = with_deps(&[("a", STARTED)]);
    let g = graph(vec![("a", svc()), ("b", b), ("c", c), ("d", d)]);
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(g.affected(["a"]), set(&["a", "b", "c"]));
    assert_eq!(g.affected(["b", "unknown"]), set(&["b", "c"]));
    assert_eq!(g.affected(["d"]), set(&["d"]));
    assert_eq!(g.dependents("a").collect::<Vec<_>>(), ["b", "d"]);
}

#[test]
fn cycles_are_errors_naming_them() {
    let err = Graph::new(&services(vec![
        ("a", with_deps(&[("b", STARTED)])),
        ("b", label(svc(), AFTER_LABEL, "c")),
        ("c", with_deps(&[("a", HEALTHY)])),
        ("d", with_deps(&[("a", STARTED)])),
    ]))
    .map(|_| ())
    .err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("dependency cycle: a -> b -> c -> a")
    );
    let err = Graph::new(&services(vec![
        ("a", svc()),
        ("b", label(with_deps(&[("a", STARTED)]), BEFORE_LABEL, "a")),
    ]))
    .map(|_| ())
    .err();
    assert_eq!(
        err,
        Some(GraphError::Cycle(vec!["a".into(), "b".into(), "a".into()]))
    );
    let err = Graph::new(&services(vec![("a", with_deps(&[("a", STARTED)]))]))
        .map(|_| ())
        .err();
    assert_eq!(err, Some(GraphError::Cycle(vec!["a".into(), "a".into()])));
}

#[test]
fn duplicate_edges_between_a_pair_are_fine() {
    let b = label(with_deps(&[("a", STARTED)]), AFTER_LABEL, "a");
    let g = graph(vec![("a", label(svc(), BEFORE_LABEL, "b")), ("b", b)]);
    assert_eq!(g.order(), ["a", "b"]);
    assert_eq!(g.dependencies("b").len(), 3);
}

#[test]
fn the_default_services_come_up_in_order() {
    let loaded = berth_configs::load(vec![berth_configs::defaults()]);
    let services = &loaded.config.berth.services;
    assert!(services.contains_key("network"), "{:?}", services.keys());
    let g = match Graph::new(services) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(g.order().len(), services.len());
    let first = g.evaluate(&BTreeMap::new()).ready;
    assert!(first.contains(&"network".to_string()), "{first:?}");
    assert!(!first.contains(&"docker".to_string()), "{first:?}");
    // network stops last: everything else depends on it.
    let others: BTreeSet<String> = services
        .keys()
        .filter(|n| n.as_str() != "network")
        .cloned()
        .collect();
    assert_eq!(g.dependents_closure("network"), others);
}
