//! console-init's setup against the real OpenSSH: a config with keys and users
//! is applied to a temporary root, Debian's sshd runs on the rendered settings
//! (in a private mount namespace where that root's passwd, group, shadow and
//! /home are bound over the host's, so the host's accounts are never touched),
//! and the real `ssh` client logs in with the config's keys, checks the host
//! key is the one kept on the "state partition", and finds password login refused.
//!
//! Root only, and needs sshd, ssh, ssh-keygen and unshare; skips (and says so) otherwise.

mod common;

use berth_console::{sshd, Options};
use common::{client_key, console_root, free_port, ssh, start_server, wait_listening, Lines};

const TOOLS: &[&str] = &[
    "/usr/sbin/sshd",
    "/usr/bin/ssh",
    "/usr/bin/ssh-keygen",
    "/usr/bin/unshare",
];

#[test]
fn ssh_logs_in_with_the_configs_keys_and_password_login_is_refused() {
    if let Some(why) = common::skip_reason(TOOLS, "openssh-server openssh-client") {
        berth_testkit::skip!("{why}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
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
    let root = console_root(dir.path(), &user_data);

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
    // What the consoles' healthcheck looks for.
    berth_console::mark_ready(&root, &berth_console::ready_line(&setup)).expect("ready file");
    assert_eq!(
        std::fs::read_to_string(root.join(berth_console::READY_FILE)).ok(),
        Some(format!(
            "ready (sshd on port {port}, users: berth, alice)\n"
        ))
    );
    // A new machine gets Ed25519 and ECDSA host keys, not the slow RSA one.
    assert_eq!(
        sshd::present_key_types(&root.join("var/lib/berth/ssh")),
        ["ed25519", "ecdsa"]
    );
    assert_eq!(setup.host_keys.len(), 2, "{:?}", setup.host_keys);
    // Running it again changes nothing, host keys included.
    let host_key = root.join("var/lib/berth/ssh/ssh_host_ed25519_key.pub");
    let host_key_before = std::fs::read_to_string(&host_key).expect("host key");
    berth_console::setup(&config, &options).expect("setup again");
    assert_eq!(
        std::fs::read_to_string(&host_key).ok(),
        Some(host_key_before)
    );

    // The rendered settings, with the host keys where the test keeps them.
    let mut settings = setup.sshd.clone();
    settings.host_key_dir = root.join("var/lib/berth/ssh");
    let sshd_config = dir.path().join("sshd_config");
    std::fs::write(
        &sshd_config,
        format!(
            "{}ListenAddress 127.0.0.1\nPidFile none\n",
            sshd::render(&settings, &sshd::present_key_types(&settings.host_key_dir))
        ),
    )
    .expect("sshd_config");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, common::known_host(port, &host_key)).expect("known_hosts");

    // Started as console-init starts it: told where to say it is ready.
    let notify = berth_console::notify::NotifySocket::bind(&dir.path().join("notify"))
        .expect("notify socket");
    let notify_env = format!(
        "{}={}",
        berth_console::notify::NOTIFY_SOCKET_ENV,
        notify.path().display()
    );
    let argv = ["env", &notify_env, "/usr/sbin/sshd", "-D", "-e", "-f"].map(String::from);
    let mut argv = argv.to_vec();
    argv.push(sshd_config.display().to_string());
    let _sshd = start_server(&root, &argv);
    // Debian's sshd sends READY=1, and only once it listens.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !notify.drain() {
        assert!(
            std::time::Instant::now() < deadline,
            "sshd sent no READY=1 in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        berth_console::listening(port),
        "sshd said it was ready before it listened"
    );
    wait_listening(port);
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
