//! Every key family parses into the model; every kind of validation error is
//! reported with its file, line and column; merge precedence keeps origins.

use std::sync::Arc;

use berth_configs::forms::{Command, FileMode};
use berth_configs::model::{Bridge, Condition, Encoding, LogLevel, RestartPolicy};
use berth_configs::{
    defaults, keypath, load, parse_document, Diagnostic, Document, Layout, Severity,
};

fn doc(name: &str, text: &str) -> Document {
    parse_document(&Arc::from(name), text)
}

/// Loads `text` over the defaults and fails the test on any error.
fn load_ok(text: &str) -> berth_configs::Loaded {
    let loaded = load(vec![defaults(), doc("user-data", text)]);
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
    assert!(loaded.rejected.is_empty());
    loaded
}

/// The diagnostics (errors and warnings) `text` gets, checked as `config validate` does.
fn findings(text: &str) -> Vec<Diagnostic> {
    berth_configs::check(vec![defaults(), doc("user-data", text)])
        .into_iter()
        .filter(|d| d.severity != Severity::Note)
        .filter(|d| d.origin.as_ref().is_some_and(|o| &*o.source == "user-data"))
        .collect()
}

/// Asserts exactly one error, at `line:column`, whose message contains `needle`.
#[track_caller]
fn assert_error(text: &str, line: usize, column: usize, needle: &str) {
    let found: Vec<_> = findings(text)
        .into_iter()
        .filter(Diagnostic::is_error)
        .collect();
    assert_eq!(found.len(), 1, "expected one error, got {found:#?}");
    let d = &found[0];
    let origin = d.origin.as_ref().expect("origin");
    assert_eq!((origin.line, origin.column), (line, column), "{d}");
    assert!(d.to_string().contains(needle), "`{d}` lacks `{needle}`");
    assert!(
        d.to_string()
            .starts_with(&format!("user-data:{line}:{column}: error: ")),
        "{d}"
    );
}

const FULL: &str = r#"#cloud-config
hostname: node-1
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests0000000000 ops@example
users:
  - default
  - name: alice
    gecos: Alice Example
    groups: [docker, wheel]
    shell: /bin/bash
    sudo: ALL=(ALL) NOPASSWD:ALL
    lock_passwd: false
    passwd: $6$rounds=4096$salt$hash
    ssh_authorized_keys: [ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0000 alice@laptop]
  - name: bob
    groups: "adm, docker"
    sudo: false
write_files:
  - path: /etc/motd
    content: hello
    permissions: "0644"
    owner: root:root
  - path: /opt/app/b64
    encoding: b64
    content: aGVsbG8K
    permissions: 0600
    append: true
  - path: /opt/app/gz
    encoding: gz+b64
    content: H4sIAAAAAAAAA8tIzcnJ5wIAIDA6NgYAAAA=
runcmd:
  - echo hi
  - [sh, -c, "echo there"]
bootcmd:
  - [modprobe, br_netfilter]
mounts:
  - [/dev/vdb1, /mnt/data, ext4, "defaults,nofail", "0", "2"]
  - [swap, none, swap, sw]
berth:
  services:
    web:
      image: nginx:1.25
      command: nginx -g 'daemon off;'
      entrypoint: [/docker-entrypoint.sh]
      environment:
        PORT: 8080
        DEBUG: true
      volumes: [/srv/www:/usr/share/nginx/html:ro, webdata:/var/cache/nginx]
      privileged: false
      network_mode: host
      pid: host
      ipc: host
      uts: host
      cap_add: [NET_ADMIN, CAP_SYS_TIME]
      cap_drop: [ALL]
      devices: [/dev/fuse]
      read_only: true
      tmpfs: [/run, /tmp]
      user: "101:101"
      working_dir: /srv
      restart: on-failure:5
      depends_on:
        setup:
          condition: service_completed_successfully
        network:
          condition: service_healthy
      healthcheck:
        test: ["CMD", "curl", "-f", "http://127.0.0.1:8080/"]
        interval: 10s
        timeout: 2s
        retries: 3
        start_period: 1m30s
      labels: [io.berth.after=ntp, tier=frontend]
      stop_grace_period: 20s
      mem_limit: 256m
      cpus: 0.5
      cpu_shares: 512
      pids_limit: 100
      oom_score_adj: -500
    setup:
      image: busybox
      oneshot: true
      command: ["true"]
      restart: "no"
  services_include:
    zfs: true
  network:
    dns:
      nameservers: [1.1.1.1, "2606:4700:4700::1111"]
      search: [example.com]
      override: true
    interfaces:
      eth0:
        dhcp: true
        required: true
      eth1:
        address: 10.0.0.5/24
        addresses: [fd00::5/64]
        gateway: 10.0.0.1
        gateway_ipv6: fd00::1
        mtu: 9000
        routes:
          - {to: 192.168.0.0/16, via: 10.0.0.254, metric: 100}
        vlans: "100,200:storage"
      "mac:52:54:00:12:34:56":
        bond: bond0
      eth3:
        bond: bond0
      bond0:
        bond_opts: {mode: active-backup, miimon: 100}
        dhcp: true
      br0:
        bridge: true
        dhcp: false
      eth4:
        bridge: br0
      eth*:
        dhcp: true
    http_proxy: http://127.0.0.1:3128
  state:
    dev: LABEL=BERTH_STATE
    fstype: ext4
    autoformat: [/dev/vda, /dev/sda]
    wait: true
    required: false
  console: busybox
  engine:
    name: docker
    args: [--log-level=warn]
  modules: [bonding mode=1, 8021q]
  sysctl:
    net.ipv4.ip_forward: 1
    vm.max_map_count: 262144
  environment: {HTTP_PROXY: "http://127.0.0.1:3128"}
  ntp: {servers: [time.example.com]}
  ssh: {port: 2222, password_authentication: false}
  datasources: [nocloud, ec2, "url:http://127.0.0.1:8000/user-data", "file:/oem/user-data"]
  upgrade: {image: registry.example.com/berth/os, channel: stable}
  log: {level: debug}
  registries:
    insecure: ["127.0.0.1:5000"]
    auth:
      registry.example.com: {username: u, password: p}
"#;

#[test]
fn every_key_family_parses() {
    let c = load_ok(FULL).config;
    assert_eq!(c.hostname.as_deref(), Some("node-1"));
    assert_eq!(c.ssh_authorized_keys.len(), 1);
    assert_eq!(c.users.len(), 3);
    assert_eq!(c.users[0].name, "default");
    assert_eq!(c.users[1].groups.comma_separated(), ["docker", "wheel"]);
    assert_eq!(c.users[1].sudo.0, ["ALL=(ALL) NOPASSWD:ALL"]);
    assert_eq!(c.users[1].lock_passwd, Some(false));
    assert_eq!(c.users[2].groups.comma_separated(), ["adm", "docker"]);
    assert!(c.users[2].sudo.0.is_empty());

    assert_eq!(c.write_files[0].permissions, Some(FileMode(0o644)));
    assert_eq!(c.write_files[1].permissions, Some(FileMode(0o600)));
    assert_eq!(c.write_files[1].encoding, Some(Encoding::Base64));
    assert!(c.write_files[1].append);
    let gz = &c.write_files[2];
    assert_eq!(
        berth_configs::validate::decode(gz.encoding, &gz.content).expect("decodes"),
        b"hello\n"
    );
    assert_eq!(c.runcmd[0], Command::Shell("echo hi".into()));
    assert_eq!(
        c.runcmd[1],
        Command::Exec(vec!["sh".into(), "-c".into(), "echo there".into()])
    );
    assert_eq!(c.bootcmd.len(), 1);
    assert_eq!(c.mounts[0].len(), 6);

    let b = &c.berth;
    let web = &b.services["web"];
    assert_eq!(web.image.as_deref(), Some("nginx:1.25"));
    assert_eq!(web.environment.get("PORT"), Some("8080"));
    assert_eq!(web.environment.get("DEBUG"), Some("true"));
    assert_eq!(web.restart, Some(RestartPolicy::OnFailure(Some(5))));
    assert_eq!(
        web.depends_on["setup"].condition,
        Condition::ServiceCompletedSuccessfully
    );
    assert_eq!(web.labels.get("io.berth.after"), Some("ntp"));
    assert_eq!(web.tmpfs.0, ["/run", "/tmp"]);
    assert_eq!(web.cpus, Some(0.5));
    assert_eq!(web.cpu_shares, Some(512));
    assert_eq!(web.oom_score_adj, Some(-500));
    let hc = web.healthcheck.as_ref().expect("healthcheck");
    assert_eq!(hc.start_period.map(|d| d.0.as_secs()), Some(90));
    assert_eq!(hc.retries, Some(3));
    assert!(b.services["setup"].oneshot);
    assert_eq!(b.services["setup"].restart, Some(RestartPolicy::No));
    // Defaults are still there under the user's services.
    assert!(b.services.contains_key("console"));

    let net = &b.network;
    assert!(net.dns.override_leases);
    let eth1 = &net.interfaces["eth1"];
    assert_eq!(eth1.mtu, Some(9000));
    assert_eq!(eth1.vlans.len(), 2);
    assert_eq!(eth1.vlans[1].id, 200);
    assert_eq!(eth1.vlans[1].name.as_deref(), Some("storage"));
    assert_eq!(eth1.routes[0].metric, Some(100));
    assert_eq!(
        net.interfaces["mac:52:54:00:12:34:56"].bond.as_deref(),
        Some("bond0")
    );
    assert_eq!(net.interfaces["bond0"].bond_opts["miimon"].0, "100");
    assert_eq!(net.interfaces["br0"].bridge, Some(Bridge::IsBridge(true)));
    assert_eq!(
        net.interfaces["eth4"].bridge,
        Some(Bridge::MemberOf("br0".into()))
    );

    assert_eq!(b.state.autoformat.0, ["/dev/vda", "/dev/sda"]);
    assert_eq!(b.console.name.as_deref(), Some("busybox"));
    assert_eq!(b.engine.args, ["--log-level=warn"]);
    assert_eq!(b.modules[0], "bonding mode=1");
    assert_eq!(b.sysctl["net.ipv4.ip_forward"].0, "1");
    assert_eq!(b.ntp.servers, ["time.example.com"]);
    assert_eq!(b.ssh.port, Some(2222));
    assert_eq!(b.datasources.len(), 4);
    assert_eq!(b.upgrade.channel.as_deref(), Some("stable"));
    assert_eq!(b.log.level, Some(LogLevel::Debug));
    assert_eq!(
        b.registries.auth["registry.example.com"]
            .username
            .as_deref(),
        Some("u")
    );
    assert_eq!(b.services_include.get("zfs"), Some(&true));
}

#[test]
fn unknown_keys_get_suggestions_and_positions() {
    assert_error(
        "#cloud-config\nhostnme: x\n",
        2,
        1,
        "unknown key `hostnme`; did you mean `hostname`?",
    );
    assert_error(
        "#cloud-config\nberth:\n  network:\n    interfaces:\n      eth0:\n        dchp: true\n",
        6,
        9,
        "berth.network.interfaces.eth0.dchp: unknown key `dchp`; did you mean `dhcp`?",
    );
    assert_error(
        "#cloud-config\nberth:\n  services:\n    a:\n      image: x\n      restrat: always\n",
        6,
        7,
        "did you mean `restart`?",
    );
}

#[test]
fn unsupported_cloud_init_keys_warn() {
    let found = findings("#cloud-config\npackages: [vim]\napt:\n  primary: []\ntimezone: UTC\n");
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found.iter().all(|d| d.severity == Severity::Warning));
    assert_eq!(found[0].to_string(), "user-data:2:1: warning: packages: `packages` is a cloud-init key Berth does not support; it is ignored");
}

#[test]
fn ssh_genkeytypes_chooses_the_host_keys_made() {
    let default = load_ok("#cloud-config\n").config;
    assert_eq!(default.ssh_key_types_to_make(), ["ed25519", "ecdsa"]);
    let asked = load_ok("#cloud-config\nssh_genkeytypes: [rsa, dsa, ed25519]\n");
    assert_eq!(asked.config.ssh_key_types_to_make(), ["ed25519", "rsa"]);

    let found = findings("#cloud-config\nssh_genkeytypes: [rsa, dsa, ed2559]\n");
    assert!(
        found.iter().all(|d| d.severity == Severity::Warning),
        "{found:#?}"
    );
    let texts: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        [
            "user-data:2:24: warning: ssh_genkeytypes[1]: `dsa` host keys are not made: OpenSSH 9 no longer offers them",
            "user-data:2:29: warning: ssh_genkeytypes[2]: `ed2559` is not a host key type and is ignored; use ed25519, ecdsa, rsa (did you mean `ed25519`?)",
        ]
    );

    let none = findings("#cloud-config\nssh_genkeytypes: []\n");
    assert_eq!(none.len(), 1, "{none:#?}");
    assert!(none[0]
        .to_string()
        .contains("ed25519 is made so that SSH works"));
    let empty = load_ok("#cloud-config\nssh_genkeytypes: []\n").config;
    assert_eq!(empty.ssh_key_types_to_make(), ["ed25519"]);
}

#[test]
fn wrong_types_are_errors_and_all_are_reported() {
    assert_error(
        "#cloud-config\nberth:\n  ssh:\n    port: twenty\n",
        4,
        11,
        "expected u16",
    );
    assert_error(
        "#cloud-config\nberth:\n  ssh:\n    port: 70000\n",
        4,
        11,
        "70000",
    );
    assert_error(
        "#cloud-config\nhostname: [a, b]\n",
        2,
        11,
        "invalid type: sequence",
    );
    let found =
        findings("#cloud-config\nberth:\n  ssh: {port: x}\n  log: {level: loud}\nruncmd: {a: b}\n");
    assert_eq!(
        found.len(),
        3,
        "every type error is reported, not just the first: {found:#?}"
    );
}

#[test]
fn bad_cidrs_addresses_and_network_values() {
    let net = |iface: &str| {
        format!("#cloud-config\nberth:\n  network:\n    interfaces:\n      eth0:\n{iface}")
    };
    assert_error(&net("        address: 10.0.0.300/24\n"), 6, 18, "CIDR");
    assert_error(
        &net("        address: 10.0.0.3\n"),
        6,
        18,
        "needs a prefix length",
    );
    assert_error(
        &net("        gateway: fd00::1\n"),
        6,
        18,
        "not an IPv4 address",
    );
    assert_error(&net("        routes: [{to: 10.0.0.0/33}]\n"), 6, 23, "CIDR");
    assert_error(&net("        mtu: 20\n"), 6, 14, "outside 68..65535");
    assert_error(
        &net("        vlans: \"4095\"\n"),
        6,
        16,
        "VLAN id 4095 is outside 1..4094",
    );
    assert_error(
        &net("        bond_opts: {mode: fastest}\n"),
        6,
        27,
        "not a bond mode",
    );
    assert_error(
        "#cloud-config\nberth:\n  network:\n    dns:\n      nameservers: [1.1.1]\n",
        5,
        21,
        "not an IP address",
    );
    assert_error(
        "#cloud-config\nberth:\n  network:\n    interfaces:\n      bond0:\n        members: [eth0]\n      bond1:\n        members: [eth0]\n",
        8,
        18,
        "`eth0` is a member of two bonds: `bond0` and `bond1`",
    );
}

#[test]
fn bad_file_modes_and_files() {
    assert_error(
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    permissions: \"0899\"\n",
        4,
        18,
        "not an octal file mode",
    );
    assert_error(
        "#cloud-config\nwrite_files:\n  - path: etc/x\n",
        3,
        11,
        "must be an absolute path",
    );
    assert_error(
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    encoding: b64\n    content: \"!!!\"\n",
        5,
        14,
        "not valid base64",
    );
    assert_error(
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    encoding: rot13\n",
        4,
        15,
        "`rot13` is not one of",
    );
}

#[test]
fn service_references_and_cycles() {
    assert_error(
        "#cloud-config\nberth:\n  services:\n    web:\n      image: x\n      depends_on: [dbb]\n    db:\n      image: y\n",
        6,
        20,
        "service `web` depends on `dbb`, which is not defined; did you mean `db`?",
    );
    let cycle = "#cloud-config\nberth:\n  services:\n    a:\n      image: x\n      depends_on: [b]\n    b:\n      image: x\n      depends_on: [c]\n    c:\n      image: x\n      depends_on: [a]\n";
    assert_error(cycle, 6, 20, "dependency cycle: a -> b -> c -> a");
    assert_error(
        "#cloud-config\nberth:\n  services:\n    a:\n      image: x\n      depends_on: [a]\n",
        6,
        20,
        "dependency cycle: a -> a",
    );
    // Ordering labels take part in cycles too.
    assert_error(
        "#cloud-config\nberth:\n  services:\n    a:\n      image: x\n      labels: {io.berth.after: b}\n    b:\n      image: x\n      depends_on: [a]\n",
        4,
        5,
        "dependency cycle",
    );
    assert_error(
        "#cloud-config\nberth:\n  services:\n    nameless: {command: x}\n",
        4,
        5,
        "has no `image`",
    );
    assert_error(
        "#cloud-config\nberth:\n  services:\n    a:\n      image: x\n      cap_add: [SYS_ADMN]\n",
        6,
        17,
        "did you mean `SYS_ADMIN`?",
    );
    assert_error(
        "#cloud-config\nberth:\n  services:\n    a:\n      image: x\n      restart: sometimes\n",
        6,
        16,
        "not a restart policy",
    );
    assert_error(
        "#cloud-config\nberth:\n  services:\n    a:\n      image: x\n      depends_on: {b: {condition: service_ready}}\n    b: {image: y}\n",
        6,
        35,
        "`service_ready` is not one of",
    );
}

/// Compose fields with a syntax of their own are parsed where they are read:
/// a bad one is an error at its line and column, naming the field, and never
/// reaches the runtime (a bad `stop_signal` used to become SIGTERM silently).
#[test]
fn compose_fields_are_parsed_where_written() {
    let service = |field: &str| {
        format!("#cloud-config\nberth:\n  services:\n    a:\n      image: x\n      {field}\n")
    };
    for (field, column, needle, key) in [
        ("stop_signal: SIGTREM", 20, "`SIGTREM` is not a signal (write it like SIGTERM, TERM or 15); did you mean `SIGTERM`?", "stop_signal"),
        ("stop_signal: 99", 20, "`99` is not a signal", "stop_signal"),
        ("volumes: [\"data:/srv:rw,bogus\"]", 17, "`bogus` is not a volume option", "volumes"),
        ("volumes: [./here:/srv]", 17, "a host path must be absolute", "volumes"),
        ("devices: [/dev/kvm:/dev/kvm:rwx]", 17, "permissions are letters from `rwm`", "devices"),
        ("devices: [kvm]", 17, "the host device must be under /dev", "devices"),
        ("mem_limit: lots", 18, "`lots` is not a size", "mem_limit"),
        ("cpu_shares: 1", 19, "`1` is not a CPU share: it is from 2 to 262144", "cpu_shares"),
        ("cap_drop: [NET_RAWW]", 18, "did you mean `NET_RAW`?", "cap_drop"),
    ] {
        let text = service(field);
        assert_error(&text, 6, column, needle);
        let found = findings(&text);
        let d = found.iter().find(|d| d.is_error()).expect("an error");
        assert!(d.path.contains(&format!("berth.services.a.{key}")), "{d:?}");
    }
    let loaded = berth_configs::load(vec![berth_configs::parse_document(
        &std::sync::Arc::from("user-data"),
        &service("stop_signal: sigint"),
    )]);
    let a = &loaded.config.berth.services["a"];
    assert_eq!(a.stop_signal.map(|s| s.number()), Some(2));
    assert_eq!(
        a.stop_signal.map(|s| s.to_string()).as_deref(),
        Some("SIGINT")
    );
}

#[test]
fn syntax_errors_have_positions() {
    let found = findings("#cloud-config\nhostname: a\n  bad: indent\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].to_string().starts_with("user-data:3:"),
        "{}",
        found[0]
    );
}

#[test]
fn a_bad_document_is_rejected_whole_and_the_rest_loads() {
    let good = doc("oem", "#cloud-config\nhostname: from-oem\n");
    let bad = doc(
        "user-data",
        "#cloud-config\nhostname: from-user\nberth: {ssh: {port: x}}\n",
    );
    let loaded = load(vec![defaults(), good, bad]);
    assert_eq!(loaded.config.hostname.as_deref(), Some("from-oem"));
    assert_eq!(loaded.rejected.len(), 1);
    assert_eq!(&*loaded.rejected[0], "user-data");
    // A reference that only fails once merged also rejects the source that made it.
    let dangling = doc(
        "local",
        "#cloud-config\nhostname: from-local\nberth:\n  services:\n    x: {image: y, depends_on: [missing]}\n",
    );
    let loaded = load(vec![
        defaults(),
        doc("oem", "#cloud-config\nhostname: from-oem\n"),
        dangling,
    ]);
    assert_eq!(loaded.config.hostname.as_deref(), Some("from-oem"));
    assert_eq!(
        loaded.rejected.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["local"]
    );
}

#[test]
fn scripts_and_non_mappings_are_rejected() {
    let script = doc("user-data", "#!/bin/sh\necho hi\n");
    assert!(!script.is_valid());
    assert!(script.diagnostics[0].message.contains("script"));
    let list = doc("user-data", "#cloud-config\n- a\n- b\n");
    assert!(!list.is_valid());
    let missing_header = doc("user-data", "hostname: x\n");
    assert!(missing_header.is_valid());
    assert_eq!(missing_header.diagnostics[0].severity, Severity::Warning);
}

#[test]
fn merge_precedence_across_system_sources_with_origins() {
    let root = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(root.path());
    let write = |path: std::path::PathBuf, text: &str| {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write(
        layout.oem(),
        "#cloud-config\nhostname: oem\nssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOemKey000000000 oem]\nberth:\n  ntp: {servers: [oem.ntp]}\n  sysctl: {a.b: 1}\n",
    );
    write(
        layout.user_data(),
        "#cloud-config\nhostname: user\nssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUserKey000000000 user]\nberth:\n  sysctl: {c.d: 2}\n",
    );
    write(
        layout.local(),
        "#cloud-config\nberth:\n  sysctl: {a.b: 3}\n",
    );
    write(
        layout.cmdline(),
        "BOOT_IMAGE=/vmlinuz quiet berth.hostname=cmdline berth.ntp.servers=[cmd.ntp]\n",
    );
    let loaded = layout.load().expect("load");
    assert!(loaded.rejected.is_empty(), "{:#?}", loaded.diagnostics);
    let c = &loaded.config;
    assert_eq!(c.hostname.as_deref(), Some("cmdline"));
    assert_eq!(c.ssh_authorized_keys.len(), 2, "keys append across sources");
    assert_eq!(c.berth.ntp.servers, ["cmd.ntp"], "lists replace");
    assert_eq!(c.berth.sysctl["a.b"].0, "3");
    assert_eq!(c.berth.sysctl["c.d"].0, "2");
    assert!(
        c.berth.services.contains_key("docker"),
        "defaults stay underneath"
    );

    let origin = |key: &str| {
        let path = keypath::split(key).expect("key");
        keypath::lookup(&loaded.tree, &path).map(|n| n.origin.to_string())
    };
    assert_eq!(origin("hostname").as_deref(), Some("kernel cmdline:1:42"));
    let local = layout.local().display().to_string();
    assert_eq!(origin("berth.sysctl.a.b"), Some(format!("{local}:3:17")));
    let user = layout.user_data().display().to_string();
    assert_eq!(origin("berth.sysctl.c.d"), Some(format!("{user}:5:17")));
    assert!(origin("berth.services.docker.image")
        .is_some_and(|o| o.starts_with("default.yml (built in):")));
    assert!(origin("ssh_authorized_keys.1").is_some_and(|o| o.starts_with(&user)));
}

#[test]
fn rancher_section_is_translated() {
    let loaded = load_ok(
        "#cloud-config\nrancher:\n  docker:\n    engine: docker-24.0.7\n    args: [dockerd, --debug]\n    extra_args: [--log-level=warn]\n    tls: true\n  console: debian\n  network:\n    interfaces:\n      eth0: {dhcp: true}\n  services:\n    helper:\n      image: busybox\n      net: host\n      labels:\n        io.rancher.os.after: network\n  services_include:\n    kernel-headers: true\n  state:\n    autoformat: [/dev/sda]\n    mdadm_scan: true\n  cloud_init:\n    datasources: [ec2]\n  system_docker:\n    storage_driver: overlay\n",
    );
    let b = &loaded.config.berth;
    assert_eq!(b.engine.name.as_deref(), Some("docker-24.0.7"));
    assert_eq!(b.engine.args, ["dockerd", "--debug", "--log-level=warn"]);
    assert_eq!(b.console.name.as_deref(), Some("debian"));
    assert_eq!(b.services["helper"].network_mode.as_deref(), Some("host"));
    assert_eq!(
        b.services["helper"].labels.get("io.berth.after"),
        Some("network")
    );
    assert_eq!(b.services_include.get("kernel-headers"), Some(&true));
    assert_eq!(b.state.autoformat.0, ["/dev/sda"]);
    assert_eq!(b.datasources, ["ec2"]);
    let d = &loaded.diagnostics;
    assert!(d
        .iter()
        .any(|d| d.severity == Severity::Note && d.message.contains("translated")));
    let warned: Vec<_> = d
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.path.as_str())
        .collect();
    assert_eq!(
        warned,
        ["rancher.state.mdadm_scan", "rancher.system_docker"]
    );
}

#[test]
fn unknown_rancher_keys_are_named_as_written() {
    assert_error(
        "#cloud-config\nrancher:\n  netwrk: {}\n",
        3,
        3,
        "rancher.netwrk: unknown key `netwrk`; did you mean `network`?",
    );
}

#[test]
fn yaml_11_spellings_cloud_init_users_write() {
    let c = load_ok(
        "#cloud-config\nusers:\n  - name: x\n    lock_passwd: no\nberth:\n  ssh:\n    password_authentication: yes\n  services:\n    s: {image: i, restart: no}\n",
    )
    .config;
    assert_eq!(c.users[0].lock_passwd, Some(false));
    assert_eq!(c.berth.ssh.password_authentication, Some(true));
    assert_eq!(c.berth.services["s"].restart, Some(RestartPolicy::No));
}

#[test]
fn null_in_a_later_source_removes_a_default_service() {
    let c = load_ok("#cloud-config\nberth:\n  services:\n    ntp: null\n").config;
    assert!(!c.berth.services.contains_key("ntp"));
    assert!(c.berth.services.contains_key("console"));
}

#[test]
fn a_bad_embedded_cmdline_document_leaves_the_single_keys_in_force() {
    use base64::Engine as _;
    let root = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(root.path());
    let bad = base64::engine::general_purpose::STANDARD
        .encode("#cloud-config\nberth: {ssh: {port: nope}}\n");
    std::fs::create_dir_all(root.path().join("proc")).expect("mkdir");
    std::fs::write(
        layout.cmdline(),
        format!("berth.cloud_config={bad} berth.hostname=kept\n"),
    )
    .expect("write");
    let loaded = layout.load().expect("load");
    assert_eq!(loaded.config.hostname.as_deref(), Some("kept"));
    assert_eq!(
        loaded.rejected.iter().map(|s| &**s).collect::<Vec<_>>(),
        [berth_configs::cmdline::EMBEDDED_SOURCE]
    );
    let error = loaded
        .diagnostics
        .iter()
        .find(|d| d.is_error())
        .expect("error");
    assert_eq!(
        error.to_string(),
        "kernel cmdline (berth.cloud_config):2:21: error: berth.ssh.port: invalid type: string \"nope\", expected u16"
    );
}

#[test]
fn binary_content_without_encoding_is_base64() {
    let c = load_ok(
        "#cloud-config\nwrite_files:\n  - path: /opt/hello\n    content: !!binary aGVsbG8K\n",
    )
    .config;
    let file = &c.write_files[0];
    assert_eq!(file.encoding, Some(Encoding::Base64));
    assert_eq!(
        berth_configs::validate::decode(file.encoding, &file.content).expect("decodes"),
        b"hello\n"
    );
}

#[test]
fn unquoted_octal_modes_keep_their_digits() {
    let c = load_ok("#cloud-config\nwrite_files:\n  - {path: /a, permissions: 0o600}\n  - {path: /b, permissions: 0644}\n").config;
    assert_eq!(c.write_files[0].permissions, Some(FileMode(0o600)));
    assert_eq!(c.write_files[1].permissions, Some(FileMode(0o644)));
}
