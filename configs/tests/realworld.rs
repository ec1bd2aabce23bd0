//! A corpus of real-world-style cloud-configs, written after the examples in
//! cloud-init's and RancherOS/BurmillaOS's documentation, must load on top of
//! the built-in defaults with warnings at most: keys Berth does not implement
//! are reported where they were written, never rejected.
//!
//! Files live in `tests/realworld/cloud-init/` and `tests/realworld/rancheros/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_configs::forms::Scalar;
use berth_configs::model::{Bridge, Encoding, Vlan};
use berth_configs::node::Node;
use berth_configs::{Diagnostic, Loaded, Severity};

const CORPORA: [&str; 2] = ["cloud-init", "rancheros"];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.yml`/`.yaml` files in `tests/realworld/<dir>`, sorted.
fn files_in(dir: &str) -> Vec<PathBuf> {
    let dir = manifest_dir().join("tests/realworld").join(dir);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

/// One corpus file, parsed and loaded over `defaults()`.
struct Case {
    /// The source name diagnostics carry: the path relative to the crate.
    source: Arc<str>,
    text: String,
    /// Findings about the document on its own (`parse_document`).
    parsed: Vec<Diagnostic>,
    loaded: Loaded,
}

impl Case {
    fn load(path: &Path) -> Case {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let relative = path.strip_prefix(manifest_dir()).unwrap_or(path);
        let source: Arc<str> = Arc::from(relative.to_string_lossy().as_ref());
        let doc = berth_configs::parse_document(&source, &text);
        let parsed = doc.diagnostics.clone();
        let loaded = berth_configs::load(vec![berth_configs::defaults(), doc]);
        Case {
            source,
            text,
            parsed,
            loaded,
        }
    }

    fn named(dir: &str, file: &str) -> Case {
        Case::load(&manifest_dir().join("tests/realworld").join(dir).join(file))
    }

    fn report(&self) -> String {
        render(&self.loaded.diagnostics)
    }

    /// The one diagnostic of `severity` at `path`.
    fn diagnostic(&self, severity: Severity, path: &str) -> &Diagnostic {
        let found: Vec<&Diagnostic> = self
            .loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == severity && d.path == path)
            .collect();
        assert!(
            found.len() == 1,
            "{}: expected one {severity} at `{path}`, found {}:\n{}",
            self.source,
            found.len(),
            self.report()
        );
        found[0]
    }

    /// 1-based line and column of the first line that starts (after
    /// indentation) with `prefix`, as the parser reports a key's position.
    fn position_of(&self, prefix: &str) -> (usize, usize) {
        self.text
            .lines()
            .enumerate()
            .find_map(|(i, line)| {
                let trimmed = line.trim_start();
                trimmed
                    .starts_with(prefix)
                    .then(|| (i + 1, line.len() - trimmed.len() + 1))
            })
            .unwrap_or_else(|| panic!("{}: no line starts with `{prefix}`", self.source))
    }

    /// Asserts `d` points into this file at a line where `prefix` (a key, as
    /// `key:`) is written, at the column where it starts, and that it shows
    /// as `file:line:column: severity: …`.
    fn assert_at(&self, d: &Diagnostic, prefix: &str) {
        let origin = d
            .origin
            .as_ref()
            .unwrap_or_else(|| panic!("{d} has no origin"));
        assert_eq!(&*origin.source, &*self.source, "{d}");
        let line = self
            .text
            .lines()
            .nth(origin.line.saturating_sub(1))
            .unwrap_or_else(|| panic!("{d}: line {} is past the end", origin.line));
        let indent = line.len() - line.trim_start().len();
        assert!(
            line.trim_start().starts_with(prefix) && origin.column == indent + 1,
            "{d}: expected `{prefix}` at column {}, line {} is `{line}`",
            origin.column,
            origin.line
        );
        let shown = d.to_string();
        let expected = format!(
            "{}:{}:{}: {}: ",
            self.source, origin.line, origin.column, d.severity
        );
        assert!(
            shown.starts_with(&expected),
            "`{shown}` should start with `{expected}`"
        );
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}\n"))
        .collect::<String>()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn corpus_loads_with_warnings_only() {
    let mut failures = String::new();
    for dir in CORPORA {
        let files = files_in(dir);
        assert!(
            files.len() >= 8,
            "tests/realworld/{dir} should hold at least 8 configs, has {}",
            files.len()
        );
        for path in files {
            let case = Case::load(&path);
            let mut lines = case.text.lines();
            assert_eq!(lines.next(), Some("#cloud-config"), "{}", case.source);
            assert!(
                lines.next().is_some_and(|l| l.starts_with("# ")),
                "{}: the second line should say which documented feature it mirrors",
                case.source
            );
            let errors = case.loaded.diagnostics.iter().any(Diagnostic::is_error);
            if errors || !case.loaded.rejected.is_empty() {
                failures.push_str(&format!(
                    "{} (rejected: {:?}):\n{}",
                    case.source,
                    case.loaded.rejected,
                    case.report()
                ));
            }
            // What `berth config validate` shows must agree with what boot loads.
            let doc = berth_configs::parse_document(&case.source, &case.text);
            let checked = berth_configs::check(vec![berth_configs::defaults(), doc]);
            if checked.iter().any(Diagnostic::is_error) {
                failures.push_str(&format!(
                    "{} (config validate):\n{}",
                    case.source,
                    render(&checked)
                ));
            }
            // Every finding is located in the file it is about.
            for d in &case.loaded.diagnostics {
                match &d.origin {
                    Some(o) if o.source == case.source && o.line > 1 && o.column >= 1 => {}
                    _ => failures
                        .push_str(&format!("{}: not located in the file: {d}\n", case.source)),
                }
            }
        }
    }
    assert!(failures.is_empty(), "configs with errors:\n{failures}");
}

#[test]
fn unsupported_cloud_init_keys_warn_where_written() {
    let case = Case::named("cloud-init", "packages-apt.yml");
    for key in [
        "package_update",
        "package_upgrade",
        "package_reboot_if_required",
        "packages",
        "apt",
        "apt_pipelining",
        "snap",
        "yum_repos",
    ] {
        let d = case.diagnostic(Severity::Warning, key);
        assert_eq!(
            d.message,
            format!("`{key}` is a cloud-init key Berth does not support; it is ignored")
        );
        case.assert_at(d, &format!("{key}:"));
        assert_eq!(d.origin.as_ref().map(|o| o.column), Some(1), "{d}");
    }
    // Spelled out for `packages:`, the key everyone writes first.
    let line = 1 + case
        .text
        .lines()
        .position(|l| l.starts_with("packages:"))
        .expect("packages: is in the file");
    assert_eq!(
        case.diagnostic(Severity::Warning, "packages").to_string(),
        format!(
            "tests/realworld/cloud-init/packages-apt.yml:{line}:1: warning: packages: \
             `packages` is a cloud-init key Berth does not support; it is ignored"
        )
    );
    // Nothing in this file is implemented, so it changes nothing.
    assert_eq!(
        case.loaded.config,
        berth_configs::load(vec![berth_configs::defaults()]).config
    );

    // Unsupported keys inside a supported section: per-user keys.
    let case = Case::named("cloud-init", "users-groups.yml");
    case.assert_at(case.diagnostic(Severity::Warning, "groups"), "groups:");
    case.assert_at(
        case.diagnostic(Severity::Warning, "users[1].expiredate"),
        "expiredate:",
    );
    case.assert_at(case.diagnostic(Severity::Warning, "users[2].doas"), "doas:");
    case.assert_at(
        case.diagnostic(Severity::Warning, "users[4].ssh_redirect_user"),
        "ssh_redirect_user:",
    );
}

#[test]
fn every_unsupported_top_level_key_gets_its_own_warning() {
    for path in files_in("cloud-init") {
        let case = Case::load(&path);
        let doc = berth_configs::parse_document(&case.source, &case.text);
        let tree = doc.tree.expect("the corpus parses");
        for entry in tree.as_map().unwrap_or_default() {
            if !berth_configs::compat::CLOUD_INIT_UNSUPPORTED.contains(&entry.key.as_str()) {
                continue;
            }
            let d = case.diagnostic(Severity::Warning, &entry.key);
            let origin = d.origin.as_ref().expect("warnings have an origin");
            assert_eq!(
                (origin.line, origin.column),
                (entry.key_origin.line, entry.key_origin.column),
                "{d}"
            );
        }
    }
}

#[test]
fn cloud_init_users_are_read() {
    let case = Case::named("cloud-init", "users-groups.yml");
    let users = &case.loaded.config.users;
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "default",
            "alice",
            "bob",
            "cloudy",
            "nosshlogins",
            "auditor"
        ]
    );
    let alice = &users[1];
    assert_eq!(
        alice.groups.comma_separated(),
        strings(&["users", "admin", "docker"])
    );
    assert_eq!(alice.uid, Some(1500));
    assert_eq!(alice.lock_passwd, Some(false));
    assert_eq!(alice.sudo.0, strings(&["ALL=(ALL) NOPASSWD:ALL"]));
    assert_eq!(alice.ssh_authorized_keys.len(), 2);
    let bob = &users[2];
    assert_eq!(bob.sudo.0.len(), 2);
    assert!(bob
        .hashed_passwd
        .as_deref()
        .is_some_and(|h| h.starts_with("$6$")));
    assert!(users[3].system && users[3].no_create_home && users[3].sudo.0.is_empty());
    assert!(users[5].sudo.0.is_empty());
}

#[test]
fn write_files_payloads_decode() {
    let case = Case::named("cloud-init", "write-files.yml");
    let files = &case.loaded.config.write_files;
    let decoded = |path: &str| {
        let file = files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no write_files entry for {path}"));
        let bytes = berth_configs::validate::decode(file.encoding, &file.content)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    assert!(decoded("/etc/sysconfig/selinux").contains("SELINUX=permissive\n"));
    assert!(decoded("/usr/local/bin/node-health").starts_with("#!/bin/sh\n"));
    assert!(decoded("/usr/bin/hello").contains("hello from a gzip-compressed"));
    assert!(decoded("/etc/docker/daemon.json").contains("\"live-restore\": true"));
    assert_eq!(decoded("/var/lib/cloud/CLOUD_INIT_WAS_HERE"), "");

    let encodings: Vec<Option<Encoding>> = files.iter().map(|f| f.encoding).collect();
    assert!(encodings.contains(&Some(Encoding::Base64)));
    assert!(encodings.contains(&Some(Encoding::GzipBase64)));
    assert!(encodings.contains(&Some(Encoding::Gzip)));
    let crontab = files
        .iter()
        .find(|f| f.path == "/etc/crontab")
        .expect("crontab");
    assert!(crontab.append);
    let nginx = files
        .iter()
        .find(|f| f.path.ends_with("example.com.conf"))
        .expect("nginx conf");
    assert!(nginx.defer);
    assert_eq!(nginx.owner.as_deref(), Some("nginx:nginx"));
    assert_eq!(nginx.permissions.map(|m| m.0), Some(0o640));
}

#[test]
fn cloud_init_commands_and_mounts_are_read() {
    let case = Case::named("cloud-init", "runcmd-bootcmd.yml");
    let config = &case.loaded.config;
    assert_eq!(config.bootcmd.len(), 3);
    assert_eq!(
        config.bootcmd[1].argv(),
        strings(&[
            "cloud-init-per",
            "once",
            "mymkfs",
            "mkfs.ext4",
            "-L",
            "data",
            "/dev/vdb"
        ])
    );
    assert_eq!(
        config.runcmd[1].argv(),
        strings(&["sh", "-xc", "echo $(date) ': hello world!'"])
    );
    assert_eq!(
        config.runcmd[3].argv(),
        strings(&["/bin/sh", "-c", "ls -l /root"])
    );

    let case = Case::named("cloud-init", "mounts-swap.yml");
    let mounts = &case.loaded.config.mounts;
    assert_eq!(mounts.len(), 7);
    assert_eq!(
        mounts[1],
        vec![Scalar("sdc".into()), Scalar("/opt/data".into())]
    );
    assert_eq!(mounts[3][1].0, "/mnt/Cdrom Drive");
    assert_eq!(mounts[4][4].0, "0");
    for key in [
        "mount_default_fields",
        "swap",
        "disk_setup",
        "fs_setup",
        "growpart",
    ] {
        case.assert_at(case.diagnostic(Severity::Warning, key), &format!("{key}:"));
    }
}

#[test]
fn ssh_keys_and_hostname_are_read() {
    let case = Case::named("cloud-init", "ssh.yml");
    let keys = &case.loaded.config.ssh_authorized_keys;
    assert_eq!(keys.len(), 3);
    assert!(keys[0].starts_with("ssh-rsa AAAAB3NzaC1yc2E"));
    assert!(keys[2].starts_with("from=\"10.0.0.0/8\""));
    // Every key is well-formed, so none of them is reported as skipped.
    assert!(
        !case.report().contains("not an SSH public key"),
        "{}",
        case.report()
    );

    let case = Case::named("cloud-init", "hostname-locale.yml");
    assert_eq!(case.loaded.config.hostname.as_deref(), Some("web-01"));
    case.assert_at(case.diagnostic(Severity::Warning, "fqdn"), "fqdn:");
    case.assert_at(case.diagnostic(Severity::Warning, "timezone"), "timezone:");
}

#[test]
fn rancher_section_is_translated_with_a_note() {
    for path in files_in("rancheros") {
        let case = Case::load(&path);
        if !case.text.lines().any(|l| l.starts_with("rancher:")) {
            continue;
        }
        let note = case.diagnostic(Severity::Note, "rancher");
        assert_eq!(
            note.message,
            "the RancherOS `rancher:` section was translated to `berth:`"
        );
        case.assert_at(note, "rancher:");
        // The note is about the document on its own, before merging.
        assert!(case.parsed.contains(note), "{}", case.source);
    }
}

#[test]
fn rancher_docker_becomes_the_engine() {
    let case = Case::named("rancheros", "docker-engine.yml");
    let engine = &case.loaded.config.berth.engine;
    assert_eq!(engine.name.as_deref(), Some("docker-19.03.13"));
    // `args` first, then `extra_args`, in the order written.
    assert_eq!(
        engine.args,
        strings(&[
            "daemon",
            "--log-opt",
            "max-size=25m",
            "--log-opt",
            "max-file=2",
            "-s",
            "overlay2",
            "--mtu",
            "1460",
            "--default-ulimit",
            "nofile=1048576:1048576",
        ])
    );
    assert_eq!(
        engine.environment.get("HTTP_PROXY"),
        Some("http://proxy.internal.example:3128")
    );
    assert_eq!(
        case.loaded.config.berth.registries.insecure,
        ["registry.internal.example:5000"]
    );
    assert_eq!(engine.storage_driver.as_deref(), Some("overlay2"));
    assert_eq!(engine.registry_mirror.0, ["http://10.10.10.23:5555"]);
    assert!(engine.tls);
    assert_eq!(engine.tls_args.len(), 5);
    assert_eq!(engine.log_opts.get("max-size"), Some("25m"));
    let flags = engine.dockerd_flags();
    for flag in ["--tlsverify", "-H=0.0.0.0:2376", "--mtu"] {
        assert!(flags.iter().any(|f| f == flag), "{flag} in {flags:?}");
    }
    let json = serde_json::Value::Object(engine.daemon_json(&case.loaded.config.berth.registries));
    assert_eq!(
        json,
        serde_json::json!({
            "insecure-registries": ["registry.internal.example:5000"],
            "registry-mirrors": ["http://10.10.10.23:5555"],
            "storage-driver": "overlay2",
            "log-opts": {"max-size": "25m"},
        })
    );
    let d = case.diagnostic(Severity::Warning, "rancher.docker.bip");
    assert!(
        d.message.contains("RancherOS key Berth does not support"),
        "{d}"
    );
    case.assert_at(d, "bip:");
    for key in ["system_docker", "bootstrap_docker", "defaults"] {
        let d = case.diagnostic(Severity::Warning, &format!("rancher.{key}"));
        case.assert_at(d, &format!("{key}:"));
    }
    // The engine's origin is the RancherOS file, not the defaults.
    let name = node_at(&case.loaded.tree, &["berth", "engine", "name"]);
    assert_eq!(name.origin.source, case.source);
    assert_eq!(name.origin.line, case.position_of("engine:").0);

    let case = Case::named("rancheros", "mixed-berth-and-rancher.yml");
    let berth = &case.loaded.config.berth;
    assert_eq!(berth.engine.name.as_deref(), Some("docker-20.10.24"));
    assert_eq!(berth.engine.args, strings(&["--mtu", "1450"]));
    // Both sections in one document: `berth:` wins over `rancher:`.
    assert_eq!(berth.console.name.as_deref(), Some("default"));
    assert_eq!(
        berth.network.dns.nameservers,
        strings(&["8.8.8.8", "8.8.4.4"])
    );
    assert_eq!(
        berth.ntp.servers,
        strings(&["time.cloudflare.com", "time.google.com"])
    );
}

#[test]
fn rancher_network_becomes_berth_network() {
    let case = Case::named("rancheros", "network-static.yml");
    let network = &case.loaded.config.berth.network;
    assert_eq!(
        network.dns.nameservers,
        strings(&["10.10.0.2", "1.1.1.1", "2606:4700:4700::1111"])
    );
    assert_eq!(
        network.dns.search,
        strings(&["prod.example.com", "example.com"])
    );
    let eth1 = &network.interfaces["eth1"];
    assert_eq!(eth1.address.as_deref(), Some("172.68.1.100/24"));
    assert_eq!(eth1.gateway.as_deref(), Some("172.68.1.1"));
    assert_eq!(eth1.mtu, Some(1500));
    assert_eq!(eth1.dhcp, Some(false));
    assert_eq!(network.interfaces["mac=52:54:00:12:34:59"].mtu, Some(9000));
    assert_eq!(
        network.interfaces["eth2"].gateway_ipv6.as_deref(),
        Some("fd00:3::1")
    );
    assert_eq!(network.interfaces["eth*"].dhcp, Some(true));
    let eth1_origin = node_at(
        &case.loaded.tree,
        &["berth", "network", "interfaces", "eth1", "address"],
    );
    assert_eq!(eth1_origin.origin.source, case.source);

    let case = Case::named("rancheros", "network-bond.yml");
    let interfaces = &case.loaded.config.berth.network.interfaces;
    let bond0 = &interfaces["bond0"];
    assert_eq!(
        bond0.addresses,
        strings(&["192.168.101.33/31", "10.88.23.129/31"])
    );
    assert_eq!(bond0.bond_opts["mode"].0, "active-backup");
    assert_eq!(bond0.bond_opts["miimon"].0, "100");
    assert_eq!(interfaces["bond1"].bond_opts["mode"].0, "4");
    for member in ["mac=0c:c4:7a:b2:14:d2", "mac=0c:c4:7a:b2:14:d3"] {
        assert_eq!(
            interfaces[member].bond.as_deref(),
            Some("bond0"),
            "{member}"
        );
    }
    assert_eq!(interfaces["eth3"].bond.as_deref(), Some("bond1"));
    let d = case.diagnostic(
        Severity::Warning,
        "rancher.network.interfaces.bond0.post_up",
    );
    assert!(d.message.contains("RancherOS network key"), "{d}");
    case.assert_at(d, "post_up:");

    let case = Case::named("rancheros", "network-vlan-bridge.yml");
    let interfaces = &case.loaded.config.berth.network.interfaces;
    assert_eq!(
        interfaces["eth1"].vlans,
        vec![
            Vlan {
                id: 100,
                name: None
            },
            Vlan {
                id: 200,
                name: Some("foobar".into())
            },
        ]
    );
    assert_eq!(
        interfaces["eth4"].vlans,
        vec![
            Vlan {
                id: 300,
                name: Some("storage".into())
            },
            Vlan {
                id: 301,
                name: Some("backup".into())
            },
            Vlan {
                id: 302,
                name: None
            },
        ]
    );
    assert_eq!(interfaces["br0"].bridge, Some(Bridge::IsBridge(true)));
    assert_eq!(
        interfaces["eth2"].bridge,
        Some(Bridge::MemberOf("br0".into()))
    );
    for (iface, key) in [
        ("eth0", "dhcp_args"),
        ("eth2", "pre_up"),
        ("eth3", "ipv4ll"),
    ] {
        let path = format!("rancher.network.interfaces.{iface}.{key}");
        case.assert_at(
            case.diagnostic(Severity::Warning, &path),
            &format!("{key}:"),
        );
    }

    let case = Case::named("rancheros", "datasources-ssh-proxy.yml");
    let network = &case.loaded.config.berth.network;
    assert_eq!(
        network.http_proxy.as_deref(),
        Some("http://proxy.internal.example:3128")
    );
    assert_eq!(
        network.no_proxy.as_deref(),
        Some("localhost,127.0.0.1,.internal.example")
    );
}

#[test]
fn rancher_services_and_system_settings_are_translated() {
    let case = Case::named("rancheros", "services.yml");
    let berth = &case.loaded.config.berth;
    let etcd = &berth.services["etcd"];
    // compose v1's `net:` is compose's `network_mode:`.
    assert_eq!(etcd.network_mode.as_deref(), Some("host"));
    assert_eq!(etcd.labels.get("io.berth.after"), Some("network"));
    assert_eq!(etcd.labels.get("io.berth.before"), Some("docker"));
    assert_eq!(etcd.labels.get("io.rancher.os.scope"), Some("system"));
    assert!(etcd.environment.0.contains_key("ETCD_*"));
    assert_eq!(
        berth.environment.get("ETCD_DISCOVERY"),
        Some("https://discovery.etcd.io/d1cd18f5ee1c1e2223aed6a1734719f7")
    );
    assert!(berth.services.contains_key("nginxapp"));
    assert!(berth.services.contains_key("console"), "defaults are kept");
    case.assert_at(
        case.diagnostic(Severity::Warning, "rancher.services.etcd.log_driver"),
        "log_driver:",
    );
    case.assert_at(
        case.diagnostic(
            Severity::Warning,
            "rancher.services.my-service.volumes_from",
        ),
        "volumes_from:",
    );

    let case = Case::named("rancheros", "console-services-include.yml");
    let berth = &case.loaded.config.berth;
    assert_eq!(berth.console.name.as_deref(), Some("debian"));
    assert_eq!(berth.services_include.get("kernel-headers"), Some(&true));
    assert_eq!(berth.services_include.get("amazon-ecs-agent"), Some(&false));
    assert_eq!(berth.console.autologin, ["tty1"]);
    for key in ["disable", "debug", "restart_services", "recovery"] {
        let d = case.diagnostic(Severity::Warning, &format!("rancher.{key}"));
        case.assert_at(d, &format!("{key}:"));
    }

    let case = Case::named("rancheros", "sysctl-modules.yml");
    let berth = &case.loaded.config.berth;
    assert_eq!(berth.sysctl["net.ipv4.ip_forward"].0, "1");
    assert_eq!(berth.sysctl["fs.file-max"].0, "1000000000");
    assert_eq!(berth.sysctl["net.core.default_qdisc"].0, "fq");
    assert_eq!(
        berth.modules,
        strings(&[
            "nbd nbds_max=1024",
            "nfs",
            "bonding mode=1 miimon=100",
            "br_netfilter"
        ])
    );

    let case = Case::named("rancheros", "state-autoformat.yml");
    let state = &case.loaded.config.berth.state;
    assert_eq!(state.dev.as_deref(), Some("LABEL=RANCHER_STATE"));
    assert_eq!(state.autoformat.0, strings(&["/dev/sda", "/dev/vda"]));
    assert_eq!(state.required, Some(false));
    for key in [
        "mdadm_scan",
        "lvm_scan",
        "cryptsetup",
        "rngd",
        "oem_dev",
        "boot_dev",
    ] {
        let d = case.diagnostic(Severity::Warning, &format!("rancher.state.{key}"));
        case.assert_at(d, &format!("{key}:"));
    }
    case.assert_at(
        case.diagnostic(Severity::Warning, "rancher.resize_device"),
        "resize_device:",
    );
}

#[test]
fn rancher_access_settings_are_translated() {
    let case = Case::named("rancheros", "datasources-ssh-proxy.yml");
    let berth = &case.loaded.config.berth;
    assert_eq!(
        berth.datasources,
        strings(&[
            "configdrive:/media/config-2",
            "url:https://config.internal.example/user-data/rancher-7",
            "file:/var/lib/rancher/conf/user_config.yml",
            "ec2",
            "gce",
            "digitalocean",
            "cmdline",
        ])
    );
    assert_eq!(berth.ssh.port, Some(2222));
    for key in ["listen_address", "daemon"] {
        let d = case.diagnostic(Severity::Warning, &format!("rancher.ssh.{key}"));
        case.assert_at(d, &format!("{key}:"));
    }

    let case = Case::named("rancheros", "registries-upgrade.yml");
    let berth = &case.loaded.config.berth;
    let hub = &berth.registries.auth["https://index.docker.io/v1/"];
    assert_eq!(
        hub.auth.as_deref(),
        Some("ZGVwbG95LWJvdDpzM2NyM3QtdDBrZW4=")
    );
    let private = &berth.registries.auth["registry.internal.example:5000"];
    assert_eq!(private.username.as_deref(), Some("ci-reader"));
    assert_eq!(
        berth.upgrade.image.as_deref(),
        Some("registry.internal.example:5000/burmilla/os")
    );
    assert_eq!(
        berth.environment.get("REGISTRY_DOMAIN"),
        Some("registry.internal.example:5000")
    );
    for path in [
        "rancher.upgrade.url",
        "rancher.upgrade.policy",
        "rancher.repositories",
    ] {
        assert_eq!(
            case.diagnostic(Severity::Warning, path).severity,
            Severity::Warning
        );
    }

    let case = Case::named("rancheros", "write-files-container.yml");
    let containers: Vec<Option<&str>> = case
        .loaded
        .config
        .write_files
        .iter()
        .map(|f| f.container.as_deref())
        .collect();
    assert_eq!(
        containers,
        [Some("ntp"), Some("network"), None, Some("console"), None]
    );
}

/// The node at `keys` in a merged tree.
fn node_at<'a>(tree: &'a Node, keys: &[&str]) -> &'a Node {
    keys.iter().fold(tree, |node, key| {
        node.get(key)
            .unwrap_or_else(|| panic!("no `{key}` on the way to {}", keys.join(".")))
    })
}
