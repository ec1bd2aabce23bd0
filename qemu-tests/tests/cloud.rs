//! Berth on clouds, with each cloud's metadata service emulated on the host
//! and put at 169.254.169.254 inside the VM (QEMU user networking on
//! 169.254.0.0/16, `restrict=on`, a `guestfwd` to a server on 127.0.0.1) and
//! DMI faked with `-smbios`, so the guest picks its datasource as it would
//! on the real cloud. No test can reach a real metadata service: the
//! networks are restricted and 169.254.169.254:80 is the emulator.
//!
//! - EC2: IMDSv2 only (a GET without a valid token is refused), gzip'd
//!   MIME multipart user-data (a cloud-config and a `#!` script), the SSH key
//!   from meta-data; then a boot with the service gone uses the cache.
//! - GCE: `Metadata-Flavor: Google` both ways.
//! - OpenStack ConfigDrive: an ISO made with xorriso; on no cloud by DMI, so
//!   no network source is tried and the probe does not wait.

use std::io::Write;
use std::time::{Duration, Instant};

use qemu_tests::metadata::{self, Answer, Server};
use qemu_tests::ssh::Ssh;
use qemu_tests::steps::{boot_ready, ok, poweroff, GIB};
// Each cloud's user-data ends with `no_engine!()`: these tests are about
// where the config comes from, not the engine.
use qemu_tests::{berth_lines, no_engine, Artifacts, Boot, Config, Vm};

const METADATA: &str = "169.254.169.254:80";

/// A VM on a cloud-like network: 169.254.0.0/16, isolated, SSH forwarded,
/// the metadata address relayed to `metadata_port` on the host.
fn cloud_config(
    name: &str,
    disk: &std::path::Path,
    ssh_port: u16,
    metadata_port: u16,
    dir: &std::path::Path,
) -> Config {
    Config::new(name, Boot::Disk)
        .drive(disk, false)
        .forward(ssh_port, 22)
        .restricted_network()
        .user_net("169.254.0.0/16")
        .guestfwd(
            METADATA,
            &qemu_tests::relay_command(dir, metadata_port).expect("relay"),
        )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // python3's gzip (python3 is one of the host packages xtask installs):
    // the test crate carries no compression library.
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import gzip,sys; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read()))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let out = child.wait_with_output().expect("gzip");
    assert!(out.status.success(), "gzip: {out:?}");
    assert_eq!(&out.stdout[..2], &[0x1f, 0x8b]);
    out.stdout
}

/// User-data as `cloud-init devel make-mime` writes it: a cloud-config and
/// a shell script.
fn multipart(cloud_config: &str, script: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(script);
    format!(
        "Content-Type: multipart/mixed; boundary=\"===============0123456789==\"\nMIME-Version: 1.0\n\n--===============0123456789==\nContent-Type: text/cloud-config; charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\nContent-Disposition: attachment; filename=\"config.yaml\"\n\n{cloud_config}\n--===============0123456789==\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"hello.sh\"\n\n{b64}\n--===============0123456789==--\n"
    )
}

fn sources(vm: &Vm, ssh: &Ssh) -> String {
    let out = ok(vm, ssh, "sudo berth config sources");
    eprintln!("{}: berth config sources:\n{out}", vm.name());
    out
}

#[test]
fn ec2_imdsv2_configures_the_machine_and_the_cache_outlives_the_service() {
    const TEST: &str = "ec2_imdsv2_configures_the_machine_and_the_cache_outlives_the_service";
    let Some(qcow2) = Artifacts::get(Artifacts::QCOW2, TEST) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = qemu_tests::free_port().expect("port");
    let ssh = Ssh::new(dir.path(), port, "berth").expect("ssh key");
    let disk = dir.path().join("ec2.qcow2");
    qemu_tests::overlay(&qcow2, &disk, 5 * GIB).expect("overlay");
    let user_data = gzip(
        multipart(
            concat!(
                "#cloud-config\nwrite_files:\n  - path: /etc/berth-cloud/ec2.txt\n    content: from ec2 user-data\n",
                no_engine!()
            ),
            "#!/bin/sh\necho \"script ran as $(id -un)\" > /home/berth/script.txt\n",
        )
        .as_bytes(),
    );
    let server =
        metadata::imds_v2(ssh.public_key().to_string(), user_data).expect("metadata server");
    let config = cloud_config("ec2", &disk, port, server.port, dir.path())
        .smbios("type=1,manufacturer=Amazon EC2,product=t3.micro");
    let vm = boot_ready(&config, &ssh);

    assert_eq!(ok(&vm, &ssh, "hostname").trim(), "ip-10-0-0-7");
    assert_eq!(
        ok(&vm, &ssh, "sudo cat /host/etc/berth-cloud/ec2.txt").trim(),
        "from ec2 user-data"
    );
    let script = ssh
        .wait_for("cat /home/berth/script.txt", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())));
    assert_eq!(script.trim(), "script ran as root");
    let report = sources(&vm, &ssh);
    assert!(report.contains("DMI: ec2"), "{report}");
    assert!(
        report.lines().any(|l| l.starts_with("ec2 ")
            && l.contains("answered")
            && l.contains("instance-id i-0berth0000000001")),
        "{report}"
    );
    assert!(report.contains("in force: ec2"), "{report}");
    // IMDSv2: a token first, and every GET carried one.
    let seen = server.seen();
    assert_eq!(
        seen.first().map(|s| s.method.as_str()),
        Some("PUT"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|s| s.method == "GET")
            .all(|s| s.headers.contains_key("x-aws-ec2-metadata-token")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.path == "/latest/user-data"),
        "{seen:?}"
    );
    let ms = metadata::config_loaded_ms(&ssh)
        .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())));
    eprintln!("ec2: config loaded {ms} ms after berthd started");
    poweroff(vm, &ssh);

    // The service has gone: the relay finds nothing listening. The cached
    // user-data and meta-data still configure the machine, and the boot goes on.
    let dead = qemu_tests::free_port().expect("port");
    let config = cloud_config("ec2-gone", &disk, port, dead, dir.path())
        .smbios("type=1,manufacturer=Amazon EC2,product=t3.micro");
    let started = Instant::now();
    let vm = boot_ready(&config, &ssh);
    eprintln!(
        "ec2-gone: ready and logged in after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(ok(&vm, &ssh, "hostname").trim(), "ip-10-0-0-7");
    let report = sources(&vm, &ssh);
    assert!(
        report.contains("in force: the cache from an earlier boot"),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("ec2 ") && l.contains("failed")),
        "{report}"
    );
    // Scripts ran once for this instance: not again.
    assert_eq!(
        ok(&vm, &ssh, "sudo rm /home/berth/script.txt && echo gone").trim(),
        "gone"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(!ok(&vm, &ssh, "ls /home/berth").contains("script.txt"));
    poweroff(vm, &ssh);
}

#[test]
fn gce_metadata_with_the_flavor_header_both_ways() {
    const TEST: &str = "gce_metadata_with_the_flavor_header_both_ways";
    let Some(qcow2) = Artifacts::get(Artifacts::QCOW2, TEST) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = qemu_tests::free_port().expect("port");
    let ssh = Ssh::new(dir.path(), port, "berth").expect("ssh key");
    let disk = dir.path().join("gce.qcow2");
    qemu_tests::overlay(&qcow2, &disk, 5 * GIB).expect("overlay");
    let key = ssh.public_key().to_string();
    let server = Server::start(move |req| -> Answer {
        let flavor = vec![("Metadata-Flavor".to_string(), "Google".to_string())];
        if req.headers.get("metadata-flavor").map(String::as_str) != Some("Google") {
            return (403, flavor, b"Missing Metadata-Flavor:Google header.".to_vec());
        }
        let g = |body: String| (200, flavor.clone(), body.into_bytes());
        match req.path.as_str() {
            "/computeMetadata/v1/instance/id" => g("4520031799277581759".into()),
            "/computeMetadata/v1/instance/hostname" => g("gce-berth.c.project.internal".into()),
            "/computeMetadata/v1/instance/attributes/ssh-keys" => g(format!("berth:{key}\n")),
            "/computeMetadata/v1/instance/attributes/user-data" => g(
                concat!(
                    "#cloud-config\nwrite_files:\n  - path: /etc/berth-cloud/gce.txt\n    content: from gce user-data\n",
                    no_engine!()
                )
                .into(),
            ),
            _ => (404, flavor, Vec::new()),
        }
    })
    .expect("metadata server");
    let config = cloud_config("gce", &disk, port, server.port, dir.path())
        .smbios("type=1,manufacturer=Google,product=Google Compute Engine");
    let vm = boot_ready(&config, &ssh);
    assert_eq!(ok(&vm, &ssh, "hostname").trim(), "gce-berth");
    assert_eq!(
        ok(&vm, &ssh, "sudo cat /host/etc/berth-cloud/gce.txt").trim(),
        "from gce user-data"
    );
    let report = sources(&vm, &ssh);
    assert!(report.contains("in force: gce"), "{report}");
    let seen = server.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|s| s.headers.get("metadata-flavor").map(String::as_str) == Some("Google")),
        "{seen:?}"
    );
    poweroff(vm, &ssh);
}

#[test]
fn openstack_configdrive_and_no_network_source_on_no_cloud() {
    const TEST: &str = "openstack_configdrive_and_no_network_source_on_no_cloud";
    let Some(qcow2) = Artifacts::get(Artifacts::QCOW2, TEST) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = qemu_tests::free_port().expect("port");
    let ssh = Ssh::new(dir.path(), port, "berth").expect("ssh key");
    let disk = dir.path().join("openstack.qcow2");
    qemu_tests::overlay(&qcow2, &disk, 5 * GIB).expect("overlay");
    let drive = dir.path().join("config-2.iso");
    let meta = format!(
        r#"{{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "name": "os-berth", "hostname": "os-berth.novalocal", "public_keys": {{"berth-test": "{}"}}, "launch_index": 0, "availability_zone": "nova"}}"#,
        ssh.public_key()
    );
    qemu_tests::configdrive(
        &drive,
        &meta,
        Some(concat!(
            "#cloud-config\nwrite_files:\n  - path: /etc/berth-cloud/openstack.txt\n    content: from the config drive\n",
            no_engine!()
        )),
        // Static addressing for the NIC (QEMU's default MAC), as a cloud
        // without DHCP gives it: the address SSH is forwarded to.
        Some(r#"{"links": [{"id": "tap0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56", "mtu": 1500}],
                 "networks": [{"id": "n0", "link": "tap0", "type": "ipv4", "ip_address": "10.0.2.15", "netmask": "255.255.255.0",
                               "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2"}]}],
                 "services": [{"type": "dns", "address": "10.0.2.3"}]}"#),
    )
    .expect("config drive");
    // No metadata emulation and QEMU's own DMI (no cloud): an isolated
    // network on which nothing answers at 169.254.169.254.
    let config = Config::new("configdrive", Boot::Disk)
        .drive(&disk, false)
        .drive(&drive, true)
        .forward(port, 22)
        .restricted_network();
    let vm = boot_ready(&config, &ssh);
    assert_eq!(ok(&vm, &ssh, "hostname").trim(), "os-berth");
    assert_eq!(
        ok(&vm, &ssh, "sudo cat /host/etc/berth-cloud/openstack.txt").trim(),
        "from the config drive"
    );
    // netconf applied network_data.json: a static address (no lease
    // lifetime), the gateway, the cloud's resolver.
    let addr = ok(&vm, &ssh, "ip -4 -o addr show dev eth0");
    assert!(
        addr.contains("10.0.2.15/24") && addr.contains("valid_lft forever"),
        "{addr}"
    );
    let route = ok(&vm, &ssh, "ip -4 route show default");
    assert!(route.contains("via 10.0.2.2"), "{route}");
    assert!(ok(&vm, &ssh, "cat /etc/resolv.conf").contains("10.0.2.3"));
    let report = sources(&vm, &ssh);
    assert!(
        report.contains("network config for 1 interface(s)"),
        "{report}"
    );
    assert!(report.contains("DMI: no cloud"), "{report}");
    assert!(report.contains("in force: configdrive"), "{report}");
    // Only the local source was looked at: no metadata timeout to wait on.
    let tried: Vec<&str> = report
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with("in force"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(tried, ["configdrive"], "{report}");
    let ms: u64 = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("probe took ")?
                .strip_suffix(" ms")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no probe time in {report}"));
    assert!(ms < 5000, "the probe on no cloud took {ms} ms");
    poweroff(vm, &ssh);
}
