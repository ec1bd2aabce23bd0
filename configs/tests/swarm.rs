//! `berth.engine.swarm`: what validates, what is refused and how the refusal
//! names the key (and never repeats the token, a secret).

use berth_configs::{defaults, load, parse_document};

const TOKEN: &str =
    "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx";

/// The error and warning lines for `user_data` over the defaults.
fn findings(user_data: &str) -> Vec<String> {
    let loaded = load(vec![
        defaults(),
        parse_document(&"user-data".into(), user_data),
    ]);
    loaded.error_messages()
}

fn swarm(body: &str) -> String {
    let body: String = body.lines().map(|l| format!("      {l}\n")).collect();
    format!("#cloud-config\nberth:\n  engine:\n    swarm:\n{body}")
}

#[test]
fn init_and_join_as_documented_are_valid_and_parsed() {
    let init = swarm("init: true\nadvertise_addr: eth1\nlabels: {zone: a}\n");
    assert_eq!(findings(&init), Vec::<String>::new());
    let join = swarm(&format!(
        "join: [10.9.9.1, \"manager.example:2377\", \"[fd00::1]:2377\"]\ntoken: {TOKEN}\nadvertise_addr: 10.9.9.2\nlisten_addr: 0.0.0.0:2377\ndata_path_addr: eth1\n"
    ));
    assert_eq!(findings(&join), Vec::<String>::new());
    let loaded = load(vec![defaults(), parse_document(&"u".into(), &join)]);
    let s = &loaded.config.berth.engine.swarm;
    assert!(!s.init);
    assert_eq!(s.join.0.len(), 3);
    assert_eq!(s.token.as_deref(), Some(TOKEN));
    // One manager may be a plain string.
    let one = swarm(&format!("join: 10.9.9.1:2377\ntoken: {TOKEN}\n"));
    assert_eq!(findings(&one), Vec::<String>::new());
}

#[test]
fn labels_become_engine_labels_in_daemon_json() {
    let init = swarm("init: true\nlabels: {zone: a, ssd: \"true\"}\n");
    let loaded = load(vec![defaults(), parse_document(&"u".into(), &init)]);
    let engine = &loaded.config.berth.engine;
    let json = engine.daemon_json(&loaded.config.berth.registries);
    assert_eq!(
        json.get("labels"),
        Some(&serde_json::json!(["ssd=true", "zone=a"]))
    );
}

#[test]
fn bad_values_are_errors_naming_the_key_and_never_the_token() {
    let cases: &[(&str, &str)] = &[
        ("join: [10.9.9.1]\n", "berth.engine.swarm.token: joining a swarm needs"),
        (
            "join: [10.9.9.1]\ntoken: SWMTKN-1-secretbutbroken\n",
            "berth.engine.swarm.token: not a swarm join token",
        ),
        ("advertise_addr: eth1\n", "berth.engine.swarm.join: neither `init: true` nor `join`"),
        (
            &format!("init: true\njoin: [10.9.9.1]\ntoken: {TOKEN}\n"),
            "berth.engine.swarm.join: `init: true` makes a new swarm",
        ),
        (
            &format!("join: [\"10.9.9.1:99999\"]\ntoken: {TOKEN}\n"),
            "berth.engine.swarm.join[0]: `10.9.9.1:99999`: `99999` is not a port",
        ),
        (
            &format!("join: [\"bad host\"]\ntoken: {TOKEN}\n"),
            "berth.engine.swarm.join[0]: `bad host`: not an IP address or host name",
        ),
        (
            "init: true\nadvertise_addr: 10.9.9.1/24\n",
            "berth.engine.swarm.advertise_addr: `10.9.9.1/24`: not an IP address or an interface name",
        ),
        (
            "init: true\ndata_path_addr: 10.9.9.1:4789\n",
            "berth.engine.swarm.data_path_addr: `10.9.9.1:4789`: takes no port",
        ),
        ("init: true\nlabels: [\"=x\"]\n", "berth.engine.swarm.labels"),
    ];
    for (body, expected) in cases {
        let found = findings(&swarm(body));
        assert!(
            found
                .iter()
                .any(|f| f.contains(expected) && f.starts_with("user-data:")),
            "{body}: expected `{expected}` in {found:#?}"
        );
        assert!(
            !found
                .iter()
                .any(|f| f.contains("secretbutbroken") || f.contains(TOKEN)),
            "the token is repeated: {found:#?}"
        );
    }
}

#[test]
fn swarm_is_refused_with_another_engine() {
    let text = "#cloud-config\nberth:\n  engine:\n    name: podman\n    swarm:\n      init: true\n";
    let found = findings(text);
    assert!(
        found.iter().any(|f| f.contains("berth.engine.swarm: Docker Swarm is part of the docker engine; berth.engine.name is `podman`")),
        "{found:#?}"
    );
}
