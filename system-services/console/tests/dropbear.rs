//! console-init's setup for the busybox console against the real Dropbear: a
//! config with keys and users is applied to a temporary root that already has
//! the OpenSSH host keys the Debian console made on the "state partition";
//! Dropbear runs on the command line console-init builds (in a private mount
//! namespace where that root's accounts, /etc/shells and /home are bound over
//! the host's); the real OpenSSH client logs in with the config's keys; every
//! host key Dropbear offers is the one OpenSSH would offer from the same
//! directory (one machine identity across a console switch); and password
//! login is refused.
//!
//! Root only, and needs dropbear, dropbearkey, dropbearconvert, ssh,
//! ssh-keygen, ssh-keyscan and unshare; skips (and says so) otherwise.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_console::dropbear::SshServer;
use berth_console::{sshd, Options};
use common::{client_key, console_root, free_port, ssh, start_server, wait_listening, Lines};

const TOOLS: &[&str] = &[
    "/usr/sbin/dropbear",
    "/usr/bin/dropbearkey",
    "/usr/bin/dropbearconvert",
    "/usr/bin/ssh",
    "/usr/bin/ssh-keygen",
    "/usr/bin/ssh-keyscan",
    "/usr/bin/unshare",
];

/// `ssh-keygen -lf` of `keys` (lines of public keys): "BITS SHA256:… (TYPE)" each.
fn fingerprints(keys: &str) -> BTreeSet<String> {
    let mut child = Command::new("ssh-keygen")
        .args(["-l", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ssh-keygen -l");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(keys.as_bytes()).expect("write keys");
    }
    let out = child.wait_with_output().expect("ssh-keygen -l");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // "256 SHA256:… comment (ED25519)": the comment differs, the rest must not.
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[0], f[1], f[f.len() - 1])
        })
        .collect()
}

#[test]
fn dropbear_serves_the_machines_host_keys_and_the_configs_users() {
    if let Some(why) = common::skip_reason(TOOLS, "dropbear-bin openssh-client") {
        berth_testkit::skip!("{why}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (berth_key, berth_pub) = client_key(dir.path(), "berth_key");
    let (alice_key, alice_pub) = client_key(dir.path(), "alice_key");
    let port = free_port();
    // alice asks for a shell the busybox console does not have.
    let user_data = format!(
        "#cloud-config\n\
         ssh_authorized_keys:\n  - {berth_pub}\n\
         users:\n  - default\n  - name: alice\n    shell: /usr/bin/zsh-not-here\n\
         \x20   ssh_authorized_keys: [\"{alice_pub}\"]\n\
         berth:\n  ssh:\n    port: {port}\n"
    );
    let root = console_root(dir.path(), &user_data);
    // The busybox console's root has /bin/sh and no bash.
    std::fs::create_dir_all(root.join("bin")).expect("bin");
    std::os::unix::fs::symlink("/bin/sh", root.join("bin/sh")).expect("sh");

    // The Debian console ran before: its OpenSSH host keys are on the state partition.
    let keys = root.join("var/lib/berth/ssh");
    // Made with every type, RSA too: a key the machine has is offered even
    // though the default `ssh_genkeytypes` would not make it.
    sshd::ensure_host_keys(
        &keys,
        Path::new("/usr/bin/ssh-keygen"),
        sshd::HOST_KEY_TYPES,
    )
    .expect("openssh keys");
    let mut openssh_public = String::new();
    for kind in sshd::HOST_KEY_TYPES {
        openssh_public += &std::fs::read_to_string(keys.join(format!("ssh_host_{kind}_key.pub")))
            .expect("public key");
    }

    let mut report = Lines::default();
    let config = berth_console::load_config(&root, &mut report).expect("config");
    assert!(report.0.is_empty(), "{:?}", report.0);
    let mut options = Options::new(&root);
    // The temp root has neither server: say which, as the image would.
    assert_eq!(options.ssh_server, SshServer::OpenSsh);
    options.ssh_server = SshServer::Dropbear;
    let setup = berth_console::setup(&config, &options).expect("setup");
    let warnings: Vec<&String> = setup
        .warnings
        .0
        .iter()
        .filter(|w| !w.starts_with("no login prompt on"))
        .collect();
    assert_eq!(
        warnings,
        ["user alice: /usr/bin/zsh-not-here is not in this console; the login shell is /bin/sh"]
    );
    assert_eq!(
        berth_console::ready_line(&setup),
        format!("ready (dropbear on port {port}, users: berth, alice)")
    );
    // berth's default bash is missing too; both get /bin/sh, which /etc/shells lists.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert!(passwd.contains(":/home/berth:/bin/sh\n"), "{passwd}");
    assert!(passwd.contains(":/home/alice:/bin/sh\n"), "{passwd}");
    let shells = std::fs::read_to_string(root.join("etc/shells")).expect("shells");
    assert!(shells.lines().any(|l| l == "/bin/sh"), "{shells}");
    // Again: the converted keys are not rewritten.
    let converted = keys.join("dropbear/dropbear_ed25519_host_key");
    let modified = || {
        std::fs::metadata(&converted)
            .and_then(|m| m.modified())
            .ok()
    };
    let before = modified();
    berth_console::setup(&config, &options).expect("setup again");
    assert_eq!(modified(), before);

    // Dropbear on console-init's command line, with the paths under the temp
    // root and listening on loopback only.
    let programs = berth_console::programs(&setup, &options);
    assert_eq!(programs[0].name, "dropbear");
    let argv: Vec<String> = programs[0]
        .argv
        .iter()
        .map(|arg| {
            if arg == &port.to_string() {
                format!("127.0.0.1:{port}")
            } else if arg.starts_with(sshd::HOST_KEY_DIR) {
                root.join(arg.trim_start_matches('/')).display().to_string()
            } else {
                arg.clone()
            }
        })
        .collect();
    assert_eq!(argv.iter().filter(|a| *a == "-r").count(), 3, "{argv:?}");
    assert!(argv.contains(&"-s".to_string()), "{argv:?}");
    let _dropbear = start_server(&root, &argv);
    wait_listening(port);

    // Every host key offered is the machine's OpenSSH key.
    let scan = Command::new("ssh-keyscan")
        .args([
            "-T",
            "10",
            "-t",
            "ed25519,ecdsa,rsa",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ])
        .output()
        .expect("ssh-keyscan");
    let offered: String = String::from_utf8_lossy(&scan.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').map(|(_, key)| format!("{key}\n")))
        .collect();
    let offered = fingerprints(&offered);
    assert_eq!(offered.len(), 3, "{offered:?}");
    assert_eq!(offered, fingerprints(&openssh_public));

    // Log in with each of the machine's keys in known_hosts, strictly.
    let known_hosts = dir.path().join("known_hosts");
    for kind in sshd::HOST_KEY_TYPES {
        let public: PathBuf = keys.join(format!("ssh_host_{kind}_key.pub"));
        std::fs::write(&known_hosts, common::known_host(port, &public)).expect("known_hosts");
        let out = ssh(port, &berth_key, "berth", &known_hosts, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "berth's login ({kind}) failed: {stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "berth\n/home/berth\n");
    }

    let out = ssh(port, &alice_key, "alice", &known_hosts, &[]);
    assert!(
        out.status.success(),
        "alice's login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alice\n/home/alice\n");

    // alice's key is not berth's.
    let out = ssh(port, &alice_key, "berth", &known_hosts, &[]);
    assert!(!out.status.success());

    // Password login is not even offered.
    let password_only = [
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
