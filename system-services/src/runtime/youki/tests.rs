use super::*;

#[test]
fn ids_are_checked_before_they_become_paths() {
    for ok in ["ntp", "console-1", "a.b_c+d"] {
        assert!(valid_id(ok), "{ok}");
    }
    for bad in ["", ".", "..", "a/b", "a b", "ü"] {
        assert!(!valid_id(bad), "{bad}");
    }
}

#[test]
fn mount_points_the_root_must_hold() {
    let config = ContainerConfig {
        id: "web".into(),
        service_name: "web".into(),
        service: berth_configs::model::Service {
            volumes: vec![
                "/srv:/srv".parse().expect("volume"),
                "data:/dev/data".parse().expect("volume"),
            ],
            tmpfs: berth_configs::forms::StringList(vec!["/cache:size=1m".into()]),
            working_dir: Some("/app".into()),
            ..Default::default()
        },
        image: Default::default(),
        environment: Default::default(),
        service_network: None,
        files: Vec::new(),
    };
    let points = mount_points(&config, true);
    for p in [
        "/proc",
        "/dev",
        "/sys",
        "/run",
        "/tmp",
        "/cache",
        "/srv",
        "/usr/bin/berth",
        "/app",
    ] {
        assert!(points.contains(&p.to_string()), "{p} in {points:?}");
    }
    assert!(
        !points.contains(&"/dev/data".to_string()),
        "inside /dev's tmpfs"
    );
}

#[test]
fn files_are_read_inside_the_root_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::write(dir.path().join("secret"), "outside").expect("write");
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").expect("write");
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("etc/group")).expect("symlink");
    assert_eq!(
        read_in_root(&root, "etc/passwd").as_deref(),
        Some("root:x:0:0::/:/bin/sh\n")
    );
    // The absolute link resolves inside the root, where there is no such file.
    assert_eq!(read_in_root(&root, "etc/group"), None);
    assert!(exists_in_root(&root, "/etc/passwd"));
    assert!(!exists_in_root(&root, "/run"));
}
