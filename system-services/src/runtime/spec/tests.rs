use std::str::FromStr;

use super::caps::bounding_set;
use super::*;
use berth_configs::compose::{ByteSize, CapName, ComposeError};
use berth_configs::forms::{Command, KeyValues, StringList};
use oci_spec::runtime::{Capabilities, Capability};

/// Compose strings as the config parser would have typed them.
fn parsed<T: std::str::FromStr>(items: &[&str]) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    items
        .iter()
        .map(|s| s.parse().expect("a valid compose value"))
        .collect()
}

fn svc() -> Service {
    Service {
        image: Some("berth/busybox".into()),
        command: Some(Command::Exec(vec!["echo".into(), "hi".into()])),
        ..Service::default()
    }
}

fn ctx() -> SpecContext {
    SpecContext {
        volumes_dir: PathBuf::from("/var/lib/berth/volumes"),
        rootfs: PathBuf::from("rootfs"),
        ..SpecContext::default()
    }
}

fn gen(service: &Service) -> Spec {
    generate("web", service, &ImageInfo::default(), &ctx()).expect("spec")
}

fn ns_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .map(|n| n.typ())
        .collect()
}

fn mount_at<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
    spec.mounts()
        .as_ref()
        .and_then(|m| m.iter().find(|m| m.destination() == Path::new(dest)))
}

fn caps(spec: &Spec) -> Capabilities {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().clone())
        .and_then(|c| c.effective().clone())
        .unwrap_or_default()
}

fn args(spec: &Spec) -> Vec<String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default()
}

fn env(spec: &Spec) -> Vec<String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
}

fn resources(spec: &Spec) -> LinuxResources {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default()
}

#[test]
fn defaults_are_isolated_with_docker_capabilities_and_a_cgroup_under_berth() {
    let spec = gen(&svc());
    let types = ns_types(&spec);
    for t in [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ] {
        assert!(types.contains(&t), "{t:?} missing from {types:?}");
    }
    assert!(!types.contains(&LinuxNamespaceType::Cgroup));
    assert_eq!(spec.hostname().as_deref(), Some("web"));
    let linux = spec.linux().as_ref().expect("linux");
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/berth/web"))
    );
    assert_eq!(caps(&spec).len(), DEFAULT_CAPABILITIES.len());
    assert!(caps(&spec).contains(&Capability::NetBindService));
    assert!(!caps(&spec).contains(&Capability::SysAdmin));
    assert!(linux.masked_paths().as_ref().is_some_and(|m| !m.is_empty()));
    let root = spec.root().as_ref().expect("root");
    assert_eq!(root.path(), Path::new("rootfs"));
    assert_eq!(root.readonly(), Some(false));
    for dest in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ] {
        assert!(mount_at(&spec, dest).is_some(), "no mount at {dest}");
    }
    assert_eq!(
        mount_at(&spec, "/sys").and_then(|m| m.options().clone()),
        Some(vec![
            "nosuid".into(),
            "noexec".into(),
            "nodev".into(),
            "ro".into()
        ])
    );
    assert!(mount_at(&spec, "/usr/bin/berth").is_none());
    // Devices: deny all first, so a v1 devices cgroup does not inherit "allow all".
    let rules = resources(&spec).devices().clone().unwrap_or_default();
    assert!(!rules[0].allow() && rules[0].typ() == Some(LinuxDeviceType::A));
    let json = serde_json::to_value(&spec).expect("json");
    assert_eq!(json["annotations"]["io.berth.service"], "web");
}

#[test]
fn host_namespaces() {
    let spec = gen(&Service {
        network_mode: Some("host".into()),
        pid: Some("host".into()),
        ipc: Some("host".into()),
        uts: Some("host".into()),
        ..svc()
    });
    assert_eq!(ns_types(&spec), vec![LinuxNamespaceType::Mount]);
    assert_eq!(spec.hostname(), &None, "uts host keeps the host's name");
    assert!(!env(&spec).iter().any(|e| e.starts_with("HOSTNAME=")));

    let none = gen(&Service {
        network_mode: Some("none".into()),
        ..svc()
    });
    assert!(ns_types(&none).contains(&LinuxNamespaceType::Network));

    let err = generate(
        "web",
        &Service {
            pid: Some("container:x".into()),
            ..svc()
        },
        &ImageInfo::default(),
        &ctx(),
    )
    .expect_err("pid container:");
    assert!(err.to_string().contains("pid"), "{err}");
}

#[test]
fn network_of_another_service() {
    let service = Service {
        network_mode: Some("service:network".into()),
        ..svc()
    };
    let err = generate("web", &service, &ImageInfo::default(), &ctx()).expect_err("no netns");
    assert!(err.to_string().contains("`network`"), "{err}");
    let c = SpecContext {
        service_network: Some(PathBuf::from("/proc/42/ns/net")),
        ..ctx()
    };
    let spec = generate("web", &service, &ImageInfo::default(), &c).expect("spec");
    let ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let net = ns
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
        .expect("net");
    assert_eq!(net.path().as_deref(), Some(Path::new("/proc/42/ns/net")));
}

#[test]
fn cgroup_namespace_when_asked() {
    let c = SpecContext {
        cgroup_namespace: true,
        ..ctx()
    };
    let spec = generate("web", &svc(), &ImageInfo::default(), &c).expect("spec");
    assert!(ns_types(&spec).contains(&LinuxNamespaceType::Cgroup));
}

#[test]
fn capabilities_follow_docker_rules() {
    let with = |add: &[&str], drop: &[&str]| {
        capabilities(
            "web",
            &Service {
                cap_add: parsed(add),
                cap_drop: parsed(drop),
                ..svc()
            },
        )
    };
    let c = with(&["NET_ADMIN", "cap_sys_time"], &["CAP_MKNOD", "net_raw"]).expect("caps");
    assert!(c.contains(&Capability::NetAdmin) && c.contains(&Capability::SysTime));
    assert!(!c.contains(&Capability::Mknod) && !c.contains(&Capability::NetRaw));
    assert!(c.contains(&Capability::Chown));

    let all = with(&["ALL"], &["SYS_MODULE"]).expect("caps");
    assert!(all.contains(&Capability::SysAdmin) && !all.contains(&Capability::SysModule));
    // "All" is what this process may hand on.
    let grantable = bounding_set().map_or(ALL_CAPABILITIES.len(), |b| b.len());
    let module = usize::from(bounding_set().is_none_or(|b| b.contains(&Capability::SysModule)));
    assert_eq!(all.len(), grantable - module);

    let none = with(&["NET_BIND_SERVICE"], &["ALL"]).expect("caps");
    assert_eq!(none, [Capability::NetBindService].into_iter().collect());

    // A name Linux does not have never reaches the runtime: configs refuses it.
    assert!(matches!(
        "SYS_BOGUS".parse::<CapName>(),
        Err(ComposeError::Capability { .. })
    ));
    // Every capability configs accepts is one the runtime can grant.
    for name in ALL_CAPABILITIES {
        assert!(Capability::from_str(name).is_ok(), "{name}");
    }
}

#[test]
fn privileged_gets_everything_and_host_devices() {
    let spec = gen(&Service {
        privileged: true,
        cap_drop: vec![CapName::All],
        ..svc()
    });
    assert_eq!(
        caps(&spec).len(),
        bounding_set().map_or(ALL_CAPABILITIES.len(), |b| b.len())
    );
    // Its own /dev, never the host's (the runtime rewrites ptmx and the fd
    // links there), which the runtime fills with the host's device nodes
    // after create (host::devices::fill): the spec lists none, whatever the
    // host has.
    let dev = mount_at(&spec, "/dev").expect("/dev");
    assert_eq!(dev.typ().as_deref(), Some("tmpfs"));
    assert!(mount_at(&spec, "/dev/pts").is_some());
    let privileged = Service {
        privileged: true,
        ..svc()
    };
    assert!(device_paths(&privileged).is_empty());
    let mut ctx = ctx();
    ctx.host_devices.insert(
        PathBuf::from("/dev/ttyS0"),
        HostDevice {
            block: false,
            major: 4,
            minor: 64,
            mode: 0o660,
            uid: 0,
            gid: 5,
        },
    );
    let spec = generate("console", &privileged, &ImageInfo::default(), &ctx).expect("spec");
    assert!(spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .is_none());
    let rules = resources(&spec).devices().clone().unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow() && rules[0].typ() == Some(LinuxDeviceType::A));
    let linux = spec.linux().as_ref().expect("linux");
    assert!(linux.masked_paths().is_none());
    assert!(mount_at(&spec, "/sys")
        .and_then(|m| m.options().clone())
        .is_some_and(|o| o.contains(&"rw".to_string())));
}

#[test]
fn volumes_bind_paths_and_named_volumes() {
    let spec = gen(&Service {
        volumes: parsed(&[
            "/var/lib/data:/data",
            "/etc/ssl:/etc/ssl:ro",
            "logs:/var/log:rw,nosuid",
            "/cache",
        ]),
        ..svc()
    });
    let data = mount_at(&spec, "/data").expect("/data");
    assert_eq!(data.typ().as_deref(), Some("bind"));
    assert_eq!(data.source().as_deref(), Some(Path::new("/var/lib/data")));
    assert_eq!(
        data.options().clone(),
        Some(vec!["rbind".into(), "rw".into()])
    );
    let ssl = mount_at(&spec, "/etc/ssl").expect("/etc/ssl");
    assert_eq!(
        ssl.options().clone(),
        Some(vec!["rbind".into(), "ro".into()])
    );
    let logs = mount_at(&spec, "/var/log").expect("/var/log");
    assert_eq!(
        logs.source().as_deref(),
        Some(Path::new("/var/lib/berth/volumes/logs"))
    );
    assert_eq!(
        logs.options().clone(),
        Some(vec!["rbind".into(), "rw".into(), "nosuid".into()])
    );
    let cache = mount_at(&spec, "/cache").expect("/cache");
    assert_eq!(
        cache.source().as_deref(),
        Some(Path::new("/var/lib/berth/volumes/web_cache"))
    );
    assert!(spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
        .is_none());
    for bad in ["./rel:/x", "/a:rel", "/a:/b:bogus", "a:b:c:d"] {
        assert!(
            matches!(Volume::parse(bad), Err(ComposeError::Volume { .. })),
            "{bad}"
        );
    }
}

#[test]
fn a_shared_volume_makes_the_mount_namespace_shared() {
    let slave = gen(&Service {
        volumes: parsed(&["/home:/home:rslave"]),
        ..svc()
    });
    assert_eq!(
        mount_at(&slave, "/home").and_then(|m| m.options().clone()),
        Some(vec!["rbind".into(), "rw".into(), "rslave".into()])
    );
    assert!(slave
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
        .is_none());
    let shared = gen(&Service {
        volumes: parsed(&["/mnt:/mnt:rshared"]),
        ..svc()
    });
    assert_eq!(
        shared
            .linux()
            .as_ref()
            .and_then(|l| l.rootfs_propagation().clone())
            .as_deref(),
        Some("shared")
    );
}

#[test]
fn tmpfs_and_read_only() {
    let spec = gen(&Service {
        tmpfs: StringList(vec!["/cache:size=64m,mode=700".into(), "/run".into()]),
        read_only: true,
        ..svc()
    });
    assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
    let cache = mount_at(&spec, "/cache").expect("/cache");
    assert_eq!(cache.typ().as_deref(), Some("tmpfs"));
    assert_eq!(
        cache.options().clone(),
        Some(vec![
            "nosuid".into(),
            "nodev".into(),
            "size=64m".into(),
            "mode=700".into()
        ])
    );
    assert!(mount_at(&spec, "/tmp").is_some(), "read_only adds /tmp");
    let runs = spec.mounts().as_ref().map(|m| {
        m.iter()
            .filter(|m| m.destination() == Path::new("/run"))
            .count()
    });
    assert_eq!(runs, Some(1), "an explicit /run tmpfs is not doubled");

    // A volume at /tmp (the engines bind the host's) takes the tmpfs's place.
    let bound = gen(&Service {
        volumes: vec!["/tmp:/tmp:rslave".parse().expect("volume")],
        read_only: true,
        ..svc()
    });
    let tmps: Vec<_> = bound
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination() == Path::new("/tmp"))
        .map(|m| m.typ().clone())
        .collect();
    assert_eq!(
        tmps,
        [Some("bind".to_string())],
        "one mount at /tmp: the volume"
    );

    let rw = gen(&svc());
    assert!(mount_at(&rw, "/tmp").is_none() && mount_at(&rw, "/run").is_none());
}

#[test]
fn devices_from_host_numbers() {
    let mut c = ctx();
    c.host_devices.insert(
        PathBuf::from("/dev/ttyS0"),
        HostDevice {
            block: false,
            major: 4,
            minor: 64,
            mode: 0o20660,
            uid: 0,
            gid: 5,
        },
    );
    c.host_devices.insert(
        PathBuf::from("/dev/vda"),
        HostDevice {
            block: true,
            major: 253,
            minor: 0,
            mode: 0o60660,
            uid: 0,
            gid: 6,
        },
    );
    let service = Service {
        devices: parsed(&["/dev/ttyS0", "/dev/vda:/dev/disk0:r"]),
        ..svc()
    };
    let spec = generate("web", &service, &ImageInfo::default(), &c).expect("spec");
    let linux = spec.linux().as_ref().expect("linux");
    let devices = linux.devices().clone().unwrap_or_default();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].path(), Path::new("/dev/ttyS0"));
    assert_eq!(
        (devices[0].typ(), devices[0].major(), devices[0].minor()),
        (LinuxDeviceType::C, 4, 64)
    );
    assert_eq!(devices[0].file_mode(), Some(0o660));
    assert_eq!(devices[1].path(), Path::new("/dev/disk0"));
    assert_eq!(devices[1].typ(), LinuxDeviceType::B);
    let rules = resources(&spec).devices().clone().unwrap_or_default();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[2].access().as_deref(), Some("r"));
    assert_eq!((rules[2].major(), rules[2].minor()), (Some(253), Some(0)));

    let missing = Service {
        devices: parsed(&["/dev/nope"]),
        ..svc()
    };
    assert!(matches!(
        generate("web", &missing, &ImageInfo::default(), &c),
        Err(SpecError::Device { .. })
    ));
    assert_eq!(
        device_paths(&service),
        [PathBuf::from("/dev/ttyS0"), PathBuf::from("/dev/vda")]
    );
}

#[test]
fn environment_layers_image_then_berth_then_service() {
    let image = ImageInfo {
        config: RunConfig {
            env: Some(vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()]),
            cmd: Some(vec!["/bin/sh".into()]),
            ..RunConfig::default()
        },
        ..ImageInfo::default()
    };
    let mut c = ctx();
    c.environment.insert("B".into(), "berth".into());
    c.environment.insert("C".into(), "berth".into());
    let service = Service {
        environment: KeyValues(
            [
                ("C".to_string(), Some("service".to_string())),
                ("D".to_string(), Some("x=y".to_string())),
                ("E".to_string(), None),
            ]
            .into_iter()
            .collect(),
        ),
        ..svc()
    };
    let spec = generate("web", &service, &image, &c).expect("spec");
    assert_eq!(
        env(&spec),
        [
            "PATH=/bin",
            "A=image",
            "B=berth",
            "C=service",
            "D=x=y",
            "HOSTNAME=web"
        ]
    );
    let bare = gen(&svc());
    assert!(
        env(&bare).iter().any(|e| e == DEFAULT_PATH),
        "PATH is always set"
    );
}

#[test]
fn entrypoint_and_command_merge_like_docker() {
    let image = RunConfig {
        entrypoint: Some(vec!["/entry".into()]),
        cmd: Some(vec!["--default".into()]),
        ..RunConfig::default()
    };
    let run = |entrypoint: Option<Command>, command: Option<Command>| {
        process_args(
            "web",
            &Service {
                entrypoint,
                command,
                ..Service::default()
            },
            &image,
        )
    };
    assert_eq!(run(None, None).expect("args"), ["/entry", "--default"]);
    assert_eq!(
        run(None, Some(Command::Exec(vec!["-v".into()]))).expect("args"),
        ["/entry", "-v"]
    );
    assert_eq!(
        run(Some(Command::Exec(vec!["/other".into()])), None).expect("args"),
        ["/other"],
        "a new entrypoint drops the image's Cmd"
    );
    assert_eq!(
        run(
            Some(Command::Exec(vec!["/other".into()])),
            Some(Command::Shell("echo hi".into()))
        )
        .expect("args"),
        ["/other", "/bin/sh", "-c", "echo hi"]
    );
    assert_eq!(
        run(
            Some(Command::Shell(String::new())),
            Some(Command::Exec(vec!["ls".into()]))
        )
        .expect("args"),
        ["ls"],
        "an empty entrypoint clears the image's"
    );
    assert!(matches!(
        process_args("web", &Service::default(), &RunConfig::default()),
        Err(SpecError::NoCommand { .. })
    ));
    let spec = gen(&svc());
    assert_eq!(args(&spec), ["echo", "hi"]);
}

#[test]
fn users_numeric_and_by_name() {
    let image = ImageInfo {
        passwd: Some(
            "root:x:0:0:root:/root:/bin/sh\nntp:x:101:102::/nonexistent:/usr/sbin/nologin\n".into(),
        ),
        group: Some("root:x:0:\nntp:x:102:\nclock:x:200:ntp,other\naudio:x:29:\n".into()),
        ..ImageInfo::default()
    };
    let u = resolve_user("web", "ntp", &image).expect("ntp");
    assert_eq!((u.uid(), u.gid()), (101, 102));
    assert_eq!(u.additional_gids().clone(), Some(vec![200]));
    let u = resolve_user("web", "1000", &image).expect("1000");
    assert_eq!((u.uid(), u.gid()), (1000, 0));
    let u = resolve_user("web", "1000:1001", &image).expect("1000:1001");
    assert_eq!((u.uid(), u.gid()), (1000, 1001));
    let u = resolve_user("web", "101:audio", &image).expect("101:audio");
    assert_eq!((u.uid(), u.gid()), (101, 29));
    assert!(matches!(
        resolve_user("web", "nobody", &image),
        Err(SpecError::User { .. })
    ));
    assert!(resolve_user("web", "nobody", &ImageInfo::default())
        .expect_err("no passwd")
        .to_string()
        .contains("numeric"));

    let spec = generate(
        "web",
        &Service {
            user: Some("ntp".into()),
            working_dir: Some("/srv".into()),
            ..svc()
        },
        &image,
        &ctx(),
    )
    .expect("spec");
    let p = spec.process().as_ref().expect("process");
    assert_eq!((p.user().uid(), p.user().gid()), (101, 102));
    assert_eq!(p.cwd(), Path::new("/srv"));

    // The image's User and WorkingDir apply when the service says nothing.
    let image = ImageInfo {
        config: RunConfig {
            user: Some("7:8".into()),
            working_dir: Some("/work".into()),
            ..RunConfig::default()
        },
        ..ImageInfo::default()
    };
    let spec = generate("web", &svc(), &image, &ctx()).expect("spec");
    let p = spec.process().as_ref().expect("process");
    assert_eq!((p.user().uid(), p.user().gid()), (7, 8));
    assert_eq!(p.cwd(), Path::new("/work"));
}

#[test]
fn limits_and_oom_score() {
    let spec = gen(&Service {
        mem_limit: Some(ByteSize(512 << 20)),
        cpus: Some(1.5),
        cpu_shares: Some(256),
        pids_limit: Some(100),
        oom_score_adj: Some(-500),
        ..svc()
    });
    let r = resources(&spec);
    assert_eq!(r.memory().as_ref().and_then(|m| m.limit()), Some(512 << 20));
    let cpu = r.cpu().as_ref().expect("cpu");
    assert_eq!((cpu.quota(), cpu.period()), (Some(150_000), Some(100_000)));
    assert_eq!(cpu.shares(), Some(256));
    let shares_only = gen(&Service {
        cpu_shares: Some(128),
        ..svc()
    });
    let cpu = resources(&shares_only).cpu().clone().expect("cpu");
    assert_eq!((cpu.shares(), cpu.quota()), (Some(128), None));
    assert!(resources(&gen(&svc())).cpu().is_none(), "no CPU settings");
    assert_eq!(r.pids().as_ref().map(|p| p.limit()), Some(100));
    assert_eq!(
        spec.process().as_ref().and_then(|p| p.oom_score_adj()),
        Some(-500)
    );
    // Not berthd's protective score, which it would otherwise inherit.
    assert_eq!(
        gen(&svc())
            .process()
            .as_ref()
            .and_then(|p| p.oom_score_adj()),
        Some(0)
    );
    let unlimited = gen(&Service {
        pids_limit: Some(0),
        ..svc()
    });
    assert_eq!(
        resources(&unlimited).pids().as_ref().map(|p| p.limit()),
        Some(-1)
    );
    assert!(matches!(
        generate(
            "web",
            &Service {
                mem_limit: Some(ByteSize(0)),
                ..svc()
            },
            &ImageInfo::default(),
            &ctx()
        ),
        Err(SpecError::MemLimit { .. })
    ));
    assert!(matches!(
        generate(
            "web",
            &Service {
                cpus: Some(-1.0),
                ..svc()
            },
            &ImageInfo::default(),
            &ctx()
        ),
        Err(SpecError::Cpus { .. })
    ));
    assert!(matches!(
        generate(
            "web",
            &Service {
                cpu_shares: Some(1),
                ..svc()
            },
            &ImageInfo::default(),
            &ctx()
        ),
        Err(SpecError::CpuShares { .. })
    ));
}

#[test]
fn berth_binary_is_bound_read_only() {
    let c = SpecContext {
        berth_binary: Some(PathBuf::from("/usr/bin/berth")),
        ..ctx()
    };
    let spec = generate("web", &svc(), &ImageInfo::default(), &c).expect("spec");
    let m = mount_at(&spec, BERTH_IN_CONTAINER).expect("berth");
    assert_eq!(m.source().as_deref(), Some(Path::new("/usr/bin/berth")));
    assert!(m
        .options()
        .as_ref()
        .is_some_and(|o| o.contains(&"ro".to_string())));
}

#[test]
fn the_spec_round_trips_through_json() {
    let spec = gen(&svc());
    let text = serde_json::to_string(&spec).expect("serialize");
    let back: Spec = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, spec);
}
