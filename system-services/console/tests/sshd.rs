//! console-init's setup against the real OpenSSH: a config with keys and users
//! is applied to a temporary root, Debian's sshd runs on the rendered settings
//! (in a private mount namespace where that root's passwd, group, shadow and
//! /home are bound over the host's, so the host's accounts are never touched),
//! and the real `ssh` client logs in with the config's keys, checks the host
//! key is the one kept on the "state partition", and finds password login refused.
//!
//! Root only, and needs sshd, ssh, ssh-keygen and unshare; skips (and says so) otherwise.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_console::supervise::Report;
use berth_console::{sshd, Options};

const TOOLS: &[&str] = &[
    "/usr/sbin/sshd",
    "/usr/bin/ssh",
    "/usr/bin/ssh-keygen",
    "/usr/bin/unshare",
];

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    TOOLS
        .iter()
        .find(|t| !Path::new(t).exists())
        .map(|t| format!("{t} is missing (apt-get install openssh-server openssh-client)"))
}

#[derive(Default)]
struct Lines(Vec<String>);

impl Report for Lines {
    fn line(&mut self, text: String) {
        eprintln!("console-init: {text}");
        self.0.push(text);
    }
}

/// A client key pair; returns (private key path, public key line).
fn client_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("public key");
    (path, public.trim().to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// sshd on `config`, in a mount namespace where `root`'s accounts and homes are the system's.
fn start_sshd(root: &Path, config: &Path) -> Sshd {
    let r = root.display();
    let script = format!(
        "set -e\n\
         for f in passwd group shadow; do mount --bind {r}/etc/$f /etc/$f; done\n\
         mount --bind {r}/home /home\n\
         mount -t tmpfs tmpfs /run && mkdir -m 0755 /run/sshd\n\
         exec /usr/sbin/sshd -D -e -f {}\n",
        config.display()
    );
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare sshd");
    Sshd(child)
}

fn ssh(port: u16, key: &Path, user: &str, known_hosts: &Path, extra: &[&str]) -> Output {
    Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(extra)
        .arg("-i")
        .arg(key)
        .args(["-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .arg("id -un; pwd")
        .stdin(Stdio::null())
        .output()
        .expect("ssh")
}

#[test]
fn ssh_logs_in_with_the_configs_keys_and_password_login_is_refused() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let etc = root.join("etc");
    std::fs::create_dir_all(etc.join("skel")).expect("etc");
    std::fs::create_dir_all(root.join("home")).expect("home");
    for file in ["passwd", "group", "shadow", "gshadow"] {
        let _ = std::fs::copy(Path::new("/etc").join(file), etc.join(file));
    }
    std::fs::write(etc.join("skel/.profile"), "# skel\n").expect("skel");
    let (berth_key, berth_pub) = client_key(dir.path(), "berth_key");
    let (alice_key, alice_pub) = client_key(dir.path(), "alice_key");
    let port = free_port();
    let user_data = format!(
        "#cloud-config\n\
         ssh_authorized_keys:\n  - {berth_pub}\n  - ssh-rsa not-a-key\n\
         users:\n  - default\n  - name: alice\n    groups: [sudo]\n    sudo: ALL=(ALL) NOPASSWD:ALL\n\
         \x20   ssh_authorized_keys: [\"{alice_pub}\"]\n\
         berth:\n  ssh:\n    port: {port}\n"
    );
    let config_dir = root.join("var/lib/berth/config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::write(config_dir.join("user-data.yml"), user_data).expect("user-data");

    let mut report = Lines::default();
    let config = berth_console::load_config(&root, &mut report).expect("config");
    assert!(report.0.is_empty(), "{:?}", report.0);
    let options = Options::new(&root);
    let setup = berth_console::setup(&config, &options).expect("setup");
    assert_eq!(setup.sshd.port, port);
    // The temp root has no /dev, so no gettys either.
    let warnings: Vec<&String> = setup
        .warnings
        .0
        .iter()
        .filter(|w| !w.starts_with("no login prompt on"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("user berth: ssh_authorized_keys[1] is skipped"),
        "{warnings:?}"
    );
    assert_eq!(
        berth_console::ready_line(&setup),
        format!("ready (sshd on port {port}, users: berth, alice)")
    );
    // Running it again changes nothing, host keys included.
    let host_key = root.join("var/lib/berth/ssh/ssh_host_ed25519_key.pub");
    let host_key_before = std::fs::read_to_string(&host_key).expect("host key");
    berth_console::setup(&config, &options).expect("setup again");
    assert_eq!(
        std::fs::read_to_string(&host_key).ok(),
        Some(host_key_before.clone())
    );

    // The rendered settings, with the host keys where the test keeps them.
    let mut settings = setup.sshd.clone();
    settings.host_key_dir = root.join("var/lib/berth/ssh");
    let sshd_config = dir.path().join("sshd_config");
    std::fs::write(
        &sshd_config,
        format!(
            "{}ListenAddress 127.0.0.1\nPidFile none\n",
            sshd::render(&settings)
        ),
    )
    .expect("sshd_config");
    let known_hosts = dir.path().join("known_hosts");
    let host_public = host_key_before
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_public}\n"))
        .expect("known_hosts");

    let _sshd = start_sshd(&root, &sshd_config);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !berth_console::listening(port) {
        assert!(Instant::now() < deadline, "sshd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ed25519 = ["-o", "HostKeyAlgorithms=ssh-ed25519"];

    let out = ssh(port, &berth_key, "berth", &known_hosts, &ed25519);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "berth's login failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "berth\n/home/berth\n");

    let out = ssh(port, &alice_key, "alice", &known_hosts, &ed25519);
    assert!(
        out.status.success(),
        "alice's login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alice\n/home/alice\n");

    // alice's key is not berth's.
    let out = ssh(port, &alice_key, "berth", &known_hosts, &ed25519);
    assert!(!out.status.success());

    // Password login is not even offered.
    let password_only = [
        "-o",
        "HostKeyAlgorithms=ssh-ed25519",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
        "-o",
        "PubkeyAuthentication=no",
    ];
    let out = ssh(port, &berth_key, "berth", &known_hosts, &password_only);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
}
