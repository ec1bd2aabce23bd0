//! Every protocol against small HTTP servers on 127.0.0.1.

use super::*;
use berth_testkit::http::{not_found, ok, Answer, Seen, Server};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// The tests' HTTP server answering with `handler`: its base URL, and the
/// server for the requests it saw.
fn serve(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> (String, Server) {
    let server = Server::start(handler).expect("serve");
    (server.url(), server)
}

fn options(base: &str) -> Options {
    Options {
        metadata: base.into(),
        azure_wireserver: base.into(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        budget: Duration::from_secs(10),
        lease_wait: Duration::from_secs(1),
        azure_ready: false,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// An IMDSv2-only service: every GET needs a token it handed out, and a
/// token is good for `uses` requests (then it has "expired").
fn imds(uses: usize, user_data: Option<Vec<u8>>) -> (String, Server) {
    let tokens: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    serve(move |req| {
        let mut tokens = tokens.lock().expect("lock");
        if req.method == "PUT" && req.path == "/latest/api/token" {
            if !req
                .headers
                .contains_key("x-aws-ec2-metadata-token-ttl-seconds")
            {
                return (400, vec![], b"missing ttl".to_vec());
            }
            let t = format!("tok{}", tokens.len());
            tokens.insert(t.clone(), uses);
            return ok(t);
        }
        match req
            .headers
            .get("x-aws-ec2-metadata-token")
            .and_then(|t| tokens.get_mut(t))
        {
            Some(left) if *left > 0 => *left -= 1,
            _ => return (401, vec![], b"".to_vec()),
        }
        match req.path.as_str() {
            "/latest/meta-data/instance-id" => ok("i-0123456789abcdef0"),
            "/latest/meta-data/local-hostname" => ok("ip-10-0-0-5.ec2.internal"),
            "/latest/meta-data/public-keys/" => ok("0=my-key"),
            "/latest/meta-data/public-keys/0/openssh-key" => ok("ssh-ed25519 AAAAC3Nz ec2-key\n"),
            "/latest/user-data" => match &user_data {
                Some(u) => (200, vec![], u.clone()),
                None => not_found(),
            },
            _ => not_found(),
        }
    })
}

#[test]
fn ec2_imdsv2_reads_meta_data_and_gzipped_user_data() {
    let (base, seen) = imds(100, Some(gzip(b"#cloud-config\nhostname: from-ud\n")));
    let inst = ec2::fetch(&options(&base)).expect("fetch");
    assert_eq!(inst.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert_eq!(inst.hostname.as_deref(), Some("ip-10-0-0-5"));
    assert_eq!(inst.public_keys, ["ssh-ed25519 AAAAC3Nz ec2-key"]);
    let decoded = berth_configs::userdata::decode(inst.user_data.as_deref().expect("user-data"));
    assert_eq!(
        decoded.cloud_configs,
        ["#cloud-config\nhostname: from-ud\n"]
    );
    let seen = seen.seen();
    assert_eq!(seen[0].method, "PUT");
    assert!(seen[1..]
        .iter()
        .all(|r| r.headers.get("x-aws-ec2-metadata-token") == Some(&"tok0".to_string())));
}

#[test]
fn ec2_takes_a_new_token_when_one_expires_and_404_is_no_user_data() {
    // Each token is good for two requests: the fetch needs five.
    let (base, seen) = imds(2, None);
    let inst = ec2::fetch(&options(&base)).expect("fetch");
    assert_eq!(inst.user_data, None);
    assert_eq!(inst.public_keys.len(), 1);
    let puts = seen.seen().iter().filter(|r| r.method == "PUT").count();
    assert!(puts >= 3, "{puts} token requests");
}

#[test]
fn ec2_falls_back_to_imdsv1_only_when_the_token_call_is_refused() {
    let v1 = |status: u16| {
        serve(move |req| match (req.method.as_str(), req.path.as_str()) {
            ("PUT", _) => (status, vec![], vec![]),
            (_, "/latest/meta-data/instance-id") => ok("i-v1"),
            _ => not_found(),
        })
        .0
    };
    let inst = ec2::fetch(&options(&v1(405))).expect("IMDSv1");
    assert_eq!(inst.instance_id.as_deref(), Some("i-v1"));
    // 403 is IMDS switched off, not "no IMDSv2": an error, no v1 request.
    let err = ec2::fetch(&options(&v1(403))).expect_err("403");
    assert!(matches!(err, DsError::Status { status: 403, .. }), "{err}");
}

#[test]
fn gce_needs_the_flavor_header_both_ways() {
    let (base, _) = serve(|req| {
        if req.headers.get("metadata-flavor").map(String::as_str) != Some("Google") {
            return (
                403,
                vec![("Metadata-Flavor".into(), "Google".into())],
                b"missing flavor".to_vec(),
            );
        }
        let g = |body: &str| {
            (
                200,
                vec![("Metadata-Flavor".into(), "Google".to_string())],
                body.as_bytes().to_vec(),
            )
        };
        match req.path.as_str() {
            "/computeMetadata/v1/instance/id" => g("4567"),
            "/computeMetadata/v1/instance/hostname" => g("vm-1.c.project.internal"),
            "/computeMetadata/v1/instance/attributes/ssh-keys" => {
                g("alice:ssh-ed25519 AAAAgce alice\nbad line\n")
            }
            "/computeMetadata/v1/project/attributes/ssh-keys" => g("bob:ssh-rsa AAAAproj bob"),
            "/computeMetadata/v1/instance/attributes/user-data" => {
                g("#cloud-config\nruncmd: [true]\n")
            }
            _ => (
                404,
                vec![("Metadata-Flavor".into(), "Google".into())],
                vec![],
            ),
        }
    });
    let inst = gce::fetch(&options(&base)).expect("fetch");
    assert_eq!(inst.instance_id.as_deref(), Some("4567"));
    assert_eq!(inst.hostname.as_deref(), Some("vm-1"));
    assert_eq!(
        inst.public_keys,
        ["ssh-ed25519 AAAAgce alice", "ssh-rsa AAAAproj bob"]
    );
    assert!(inst.user_data.is_some());
    // A server that is not GCE's (no flavor on the answer) is refused.
    let (impostor, _) = serve(|_| ok("4567"));
    let err = gce::fetch(&options(&impostor)).expect_err("impostor");
    assert!(err.to_string().contains("Metadata-Flavor: Google"), "{err}");
}

#[test]
fn digitalocean_openstack_and_azure_documents() {
    let (base, _) = serve(|req| match req.path.as_str() {
        "/metadata/v1.json" => ok(
            r##"{"droplet_id": 2756294, "hostname": "droplet-1", "public_keys": ["ssh-rsa AAAAdo"], "user_data": "#cloud-config\nhostname: x\n"}"##,
        ),
        "/openstack/latest/meta_data.json" => ok(
            r#"{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "os-1.novalocal", "public_keys": {"k": "ssh-ed25519 AAAAos"}}"#,
        ),
        "/openstack/latest/user_data" => not_found(),
        p if p.starts_with("/metadata/instance/compute") => {
            if req.headers.get("metadata").map(String::as_str) != Some("true") {
                return (
                    400,
                    vec![],
                    b"Required metadata header not specified".to_vec(),
                );
            }
            ok(
                r#"{"vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6", "name": "az-vm", "osProfile": {"computerName": "az-1"}, "publicKeys": [{"keyData": "ssh-rsa AAAAaz", "path": "/home/u/.ssh/authorized_keys"}], "userData": "I2Nsb3VkLWNvbmZpZwpob3N0bmFtZTogYXoK"}"#,
            )
        }
        _ => not_found(),
    });
    let o = options(&base);
    let d = digitalocean::fetch(&o).expect("do");
    assert_eq!(d.instance_id.as_deref(), Some("2756294"));
    assert_eq!(d.public_keys, ["ssh-rsa AAAAdo"]);
    let s = openstack::fetch(&o).expect("openstack");
    assert_eq!(s.hostname.as_deref(), Some("os-1"));
    assert_eq!(s.public_keys, ["ssh-ed25519 AAAAos"]);
    assert_eq!(s.user_data, None);
    let a = azure::fetch(&o).expect("azure");
    assert_eq!(a.hostname.as_deref(), Some("az-1"));
    assert_eq!(
        a.user_data.as_deref(),
        Some(&b"#cloud-config\nhostname: az\n"[..])
    );
}

#[test]
fn azure_reports_ready_for_the_goal_state() {
    let (base, seen) = serve(|req| {
        match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/machine/?comp=goalstate") => ok("<GoalState><Incarnation>3</Incarnation><Container><ContainerId>c-1</ContainerId><RoleInstanceList><RoleInstance><InstanceId>r-1</InstanceId></RoleInstance></RoleInstanceList></Container></GoalState>"),
        ("POST", "/machine?comp=health") => ok(""),
        _ => not_found(),
    }
    });
    azure::report_ready(&options(&base)).expect("ready");
    let seen = seen.seen();
    let post = seen.iter().find(|r| r.method == "POST").expect("a report");
    let body = String::from_utf8_lossy(&post.body);
    assert!(
        body.contains("<GoalStateIncarnation>3</GoalStateIncarnation>"),
        "{body}"
    );
    assert!(
        body.contains("<ContainerId>c-1</ContainerId>")
            && body.contains("<InstanceId>r-1</InstanceId>"),
        "{body}"
    );
    assert!(body.contains("<State>Ready</State>"), "{body}");
    assert_eq!(
        post.headers.get("x-ms-version").map(String::as_str),
        Some("2012-11-30")
    );
}

#[test]
fn huge_and_malformed_answers_are_refused_with_the_url() {
    let big = "x".repeat(MAX_META + 10);
    let (base, _) = serve(move |req| match req.path.as_str() {
        "/metadata/v1.json" => ok("{not json"),
        "/openstack/latest/meta_data.json" => ok(big.as_str()),
        _ => not_found(),
    });
    let err = digitalocean::fetch(&options(&base)).expect_err("malformed");
    assert!(
        err.to_string().contains("/metadata/v1.json: not JSON"),
        "{err}"
    );
    let err = openstack::fetch(&options(&base)).expect_err("huge");
    assert!(
        matches!(err, DsError::Http(HttpError::TooLarge { .. })),
        "{err}"
    );
    // An instance id that is not one short line.
    let (bad, _) = serve(|req| match req.method.as_str() {
        "PUT" => ok("t"),
        _ => ok("line one\nline two"),
    });
    let err = ec2::fetch(&options(&bad)).expect_err("bad id");
    assert!(err.to_string().contains("instance-id"), "{err}");
}

#[test]
fn slow_and_dead_servers_fail_within_their_timeouts() {
    let (slow, _) = serve(|_| {
        std::thread::sleep(Duration::from_secs(3));
        ok("late")
    });
    let mut o = options(&slow);
    o.request_timeout = Duration::from_millis(500);
    let start = Instant::now();
    assert!(ec2::fetch(&o).is_err());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Nothing listens on a port just freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let start = Instant::now();
    let err = gce::fetch(&options(&format!("http://127.0.0.1:{port}"))).expect_err("dead");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
}

#[test]
fn the_probe_takes_the_first_answer_by_priority_within_the_budget() {
    let (base, _) = imds(100, Some(b"#cloud-config\nhostname: ec2-host\n".to_vec()));
    let (slow, _) = serve(|_| {
        std::thread::sleep(Duration::from_secs(5));
        ok("#cloud-config\n")
    });
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        root.path().join("ud"),
        "#cloud-config\nhostname: file-host\n",
    )
    .expect("write");
    let mut o = options(&base);
    o.budget = Duration::from_secs(2);
    o.request_timeout = Duration::from_secs(10);
    let plan = vec![
        (Kind::File("/absent".into()), Reason::Named),
        (Kind::Url(format!("{slow}/ud")), Reason::Named),
        (Kind::Ec2, Reason::Dmi),
        (Kind::File("/ud".into()), Reason::Named),
    ];
    let start = Instant::now();
    let (attempts, winner) = probe_all(root.path(), &o, &plan);
    // The slow URL outranks EC2: the probe waits for it, but no longer than the budget.
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    let (kind, inst) = winner.expect("a winner");
    assert_eq!(kind, Kind::Ec2);
    assert_eq!(inst.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["absent", "pending", "answered", "answered"]);
    assert!(
        attempts[3].detail.iter().any(|d| d.contains("not used")),
        "{:?}",
        attempts[3]
    );
}

#[test]
fn configdrive_tree_is_read_from_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let latest = dir.path().join("openstack/latest");
    std::fs::create_dir_all(&latest).expect("mkdir");
    std::fs::write(
        latest.join("meta_data.json"),
        r#"{"uuid": "u-1", "name": "cd-host", "public_keys": {"a": "ssh-ed25519 AAAAcd"}}"#,
    )
    .expect("write");
    std::fs::write(latest.join("user_data"), "#!/bin/sh\necho hi\n").expect("write");
    let inst = configdrive::read_tree(dir.path()).expect("read");
    assert_eq!(inst.instance_id.as_deref(), Some("u-1"));
    assert_eq!(inst.hostname.as_deref(), Some("cd-host"));
    assert_eq!(inst.public_keys, ["ssh-ed25519 AAAAcd"]);
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        configdrive::read_tree(empty.path()),
        Err(DsError::Absent(_))
    ));
}

#[test]
fn a_url_and_a_file_are_user_data() {
    let (base, _) = serve(|req| match req.path.as_str() {
        "/ud" => ok("#cloud-config\nhostname: u\n"),
        _ => not_found(),
    });
    let inst = fetch_url(&options(&base), &format!("{base}/ud")).expect("url");
    assert_eq!(
        inst.user_data.as_deref(),
        Some(&b"#cloud-config\nhostname: u\n"[..])
    );
    assert!(matches!(
        fetch_url(&options(&base), &format!("{base}/x")),
        Err(DsError::Status { status: 404, .. })
    ));
    let root = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        fetch_file(root.path(), "/nope"),
        Err(DsError::Absent(_))
    ));
}

#[test]
fn openstack_network_data_becomes_static_interfaces_by_mac() {
    let doc: serde_json::Value = serde_json::from_str(
        r#"{"links": [{"id": "tap1", "type": "phy", "ethernet_mac_address": "FA:16:3E:00:00:01", "mtu": 1450},
                      {"id": "tap2", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:02"},
                      {"id": "bond0", "type": "bond", "bond_links": ["tap1"]}],
            "networks": [{"id": "n0", "link": "tap1", "type": "ipv4", "ip_address": "10.0.0.5", "netmask": "255.255.255.0",
                          "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"},
                                     {"network": "192.168.0.0", "netmask": "255.255.0.0", "gateway": "10.0.0.254"}]},
                         {"id": "n1", "link": "tap1", "type": "ipv6", "ip_address": "fd00::5/64",
                          "routes": [{"network": "::", "netmask": "::", "gateway": "fd00::1"}]},
                         {"id": "n2", "link": "tap2", "type": "ipv4_dhcp"}],
            "services": [{"type": "dns", "address": "10.0.0.2"}]}"#,
    )
    .expect("json");
    let net = network_from_openstack(&doc).expect("network");
    assert_eq!(
        net,
        serde_json::json!({
            "interfaces": {
                "mac:fa:16:3e:00:00:01": {
                    "mtu": 1450, "dhcp": false,
                    "addresses": ["10.0.0.5/24", "fd00::5/64"],
                    "gateway": "10.0.0.1", "gateway_ipv6": "fd00::1",
                    "routes": [{"to": "192.168.0.0/16", "via": "10.0.0.254"}]
                },
                "mac:fa:16:3e:00:00:02": {"dhcp": true}
            },
            "dns": {"nameservers": ["10.0.0.2"]}
        })
    );
    // Cached with the meta-data, it is berth.network, valid for netconf.
    let root = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(root.path());
    let inst = Instance {
        instance_id: Some("u".into()),
        network: Some(net),
        ..Instance::default()
    };
    datasource::cache(&layout, "openstack", &inst).expect("cache");
    let loaded = layout.load().expect("load");
    assert!(
        !berth_configs::diag::has_errors(&loaded.diagnostics),
        "{:?}",
        loaded.diagnostics
    );
    let iface = &loaded.config.berth.network.interfaces["mac:fa:16:3e:00:00:01"];
    assert_eq!(iface.gateway.as_deref(), Some("10.0.0.1"));
    assert_eq!(iface.addresses, ["10.0.0.5/24", "fd00::5/64"]);
    assert_eq!(loaded.config.berth.network.dns.nameservers, ["10.0.0.2"]);
    // The default eth* DHCP stays for interfaces the cloud does not name.
    assert!(loaded.config.berth.network.interfaces.contains_key("eth*"));
}

#[test]
fn digitalocean_interfaces_become_static_config() {
    let doc: serde_json::Value = serde_json::from_str(
        r#"{"droplet_id": 1, "interfaces": {"public": [{"mac": "c2:1e:5b:00:00:01", "type": "public",
              "ipv4": {"ip_address": "203.0.113.5", "netmask": "255.255.240.0", "gateway": "203.0.113.1"},
              "ipv6": {"ip_address": "2001:db8::5", "cidr": 64, "gateway": "2001:db8::1"}}]},
            "dns": {"nameservers": ["67.207.67.2"]}}"#,
    )
    .expect("json");
    let inst =
        digitalocean::parse("u", serde_json::to_vec(&doc).expect("ser").as_slice()).expect("parse");
    assert_eq!(
        inst.network,
        Some(serde_json::json!({
            "interfaces": {"mac:c2:1e:5b:00:00:01": {
                "gateway": "203.0.113.1", "gateway_ipv6": "2001:db8::1",
                "dhcp": false, "addresses": ["203.0.113.5/20", "2001:db8::5/64"]}},
            "dns": {"nameservers": ["67.207.67.2"]}
        }))
    );
}
