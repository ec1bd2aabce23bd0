use super::*;
use berth_configs::forms::KeyValues;

#[test]
fn berth_environment_goes_below_each_services_own() {
    let mut services = BTreeMap::new();
    services.insert(
        "a".to_string(),
        Service {
            environment: KeyValues(
                [
                    ("OWN".to_string(), Some("a".to_string())),
                    ("SHARED".to_string(), Some("service".to_string())),
                    ("UNSET".to_string(), None),
                ]
                .into(),
            ),
            ..Service::default()
        },
    );
    services.insert("b".to_string(), Service::default());
    let env: BTreeMap<String, String> = [
        ("SHARED".to_string(), "berth".to_string()),
        ("UNSET".to_string(), "berth".to_string()),
    ]
    .into();
    let out = with_environment(services, &env);
    let a = &out["a"].environment;
    assert_eq!(a.get("OWN"), Some("a"));
    assert_eq!(a.get("SHARED"), Some("service"), "the service's own wins");
    assert_eq!(a.get("UNSET"), Some("berth"), "as the spec layers it");
    assert_eq!(out["b"].environment.get("SHARED"), Some("berth"));
}

#[test]
fn engine_args_and_environment_reach_the_engine_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yml");
    std::fs::write(
        &file,
        "#cloud-config\nberth:\n  engine:\n    args: [--debug]\n    environment:\n      HTTP_PROXY: http://proxy:3128\n  services:\n    docker:\n      image: berth/docker:latest\n      command: [--host=unix:///run/docker/docker.sock]\n",
    )
    .expect("write");
    let (config, messages) = load_config(&ConfigSource::Files(vec![file]));
    assert!(
        messages.iter().all(|(l, _)| *l > log::Level::Error),
        "{messages:?}"
    );
    let docker = &config.services["docker"];
    assert_eq!(
        docker.command.as_ref().map(|c| c.argv()),
        Some(vec![
            "--host=unix:///run/docker/docker.sock".to_string(),
            "--debug".to_string()
        ])
    );
    assert_eq!(
        docker.environment.get("HTTP_PROXY"),
        Some("http://proxy:3128")
    );
    assert_eq!(config.engine, "docker");
}

#[test]
fn engine_settings_are_merged_into_daemon_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yml");
    std::fs::write(
        &file,
        "#cloud-config\nrancher:\n  docker:\n    insecure_registry: [a.example:5000]\n    registry_mirror: http://mirror.example\n    storage_driver: overlay2\n    tls: true\nberth:\n  services:\n    docker:\n      image: berth/docker:latest\n      command: [--host=unix:///run/docker/docker.sock]\n",
    )
    .expect("write");
    let (config, _) = load_config(&ConfigSource::Files(vec![file]));
    let argv = config.services["docker"]
        .command
        .as_ref()
        .expect("command")
        .argv();
    assert!(argv.contains(&"--tlsverify".to_string()), "{argv:?}");
    let root = tempfile::tempdir().expect("tempdir");
    // No file yet: it is made.
    merge_daemon_json(root.path(), &config.engine_settings);
    let path = root.path().join(DAEMON_JSON);
    let read = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&path).expect("daemon.json")).expect("json")
    };
    assert_eq!(
        read(),
        serde_json::json!({
            "insecure-registries": ["a.example:5000"],
            "registry-mirrors": ["http://mirror.example"],
            "storage-driver": "overlay2",
        })
    );
    // The user's file: lists joined, its own values kept, merged once.
    std::fs::write(
        &path,
        r#"{"insecure-registries": ["b.example:5000"], "storage-driver": "vfs", "debug": true}"#,
    )
    .expect("daemon.json");
    for _ in 0..2 {
        merge_daemon_json(root.path(), &config.engine_settings);
    }
    assert_eq!(
        read(),
        serde_json::json!({
            "insecure-registries": ["b.example:5000", "a.example:5000"],
            "registry-mirrors": ["http://mirror.example"],
            "storage-driver": "vfs",
            "debug": true,
        })
    );
}

#[test]
fn host_settings_only_on_the_systems_own_config() {
    let mut options = Options::default();
    assert_eq!(host_root(&options), Some(PathBuf::from("/")));
    options.config = ConfigSource::Files(vec![PathBuf::from("/tmp/x.yml")]);
    assert_eq!(host_root(&options), None, "tests with config files");
    options.config = ConfigSource::Layout(PathBuf::from("/tmp/root"));
    assert_eq!(host_root(&options), None);
    options.host = HostSettings::Root(PathBuf::from("/tmp/root"));
    assert_eq!(host_root(&options), Some(PathBuf::from("/tmp/root")));
    options.config = ConfigSource::Layout(PathBuf::from("/"));
    options.host = HostSettings::Off;
    assert_eq!(host_root(&options), None);
}
