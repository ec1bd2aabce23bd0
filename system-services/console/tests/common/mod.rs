//! What the SSH server tests share: a temp console root holding copies of the
//! host's account files, client keys, a free port, a server run in a private
//! mount namespace where that root's accounts and homes are bound over the
//! host's (so the host's are never touched), and the real `ssh` client.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_console::supervise::Report;

/// Why the test cannot run here, if it cannot: not root, or a tool missing.
pub fn skip_reason(tools: &[&str], install: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    tools
        .iter()
        .find(|t| !Path::new(t).exists())
        .map(|t| format!("{t} is missing (apt-get install {install})"))
}

#[derive(Default)]
pub struct Lines(pub Vec<String>);

impl Report for Lines {
    fn line(&mut self, text: String) {
        eprintln!("console-init: {text}");
        self.0.push(text);
    }
}

/// A console root under `dir` with the host's accounts (copies), a skeleton
/// and an empty /home, and `user_data` as the config's user-data.
pub fn console_root(dir: &Path, user_data: &str) -> PathBuf {
    let root = dir.join("root");
    let etc = root.join("etc");
    std::fs::create_dir_all(etc.join("skel")).expect("etc");
    std::fs::create_dir_all(root.join("home")).expect("home");
    for file in ["passwd", "group", "shadow", "gshadow"] {
        let _ = std::fs::copy(Path::new("/etc").join(file), etc.join(file));
    }
    std::fs::write(etc.join("skel/.profile"), "# skel\n").expect("skel");
    let config_dir = root.join("var/lib/berth/config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::write(config_dir.join("user-data.yml"), user_data).expect("user-data");
    root
}

/// A client key pair; returns (private key path, public key line).
pub fn client_key(dir: &Path, name: &str) -> (PathBuf, String) {
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A server process, killed when dropped.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `argv` in a mount namespace where `root`'s passwd, group, shadow,
/// shells (if it has one) and /home are the system's, with an empty /run.
pub fn start_server(root: &Path, argv: &[String]) -> Server {
    let r = root.display();
    let script = format!(
        "set -e\n\
         for f in passwd group shadow shells; do\n\
         \x20 if [ -e {r}/etc/$f ]; then mount --bind {r}/etc/$f /etc/$f; fi\n\
         done\n\
         mount --bind {r}/home /home\n\
         mount -t tmpfs tmpfs /run && mkdir -m 0755 /run/sshd\n\
         exec \"$@\"\n"
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
            "sh",
        ])
        .args(argv)
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare");
    Server(child)
}

/// Waits up to 10 s for something to accept connections on `port`.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !berth_console::listening(port) {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ssh` as `user` with `key`, running `id -un; pwd`.
pub fn ssh(port: u16, key: &Path, user: &str, known_hosts: &Path, extra: &[&str]) -> Output {
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

/// `[127.0.0.1]:port TYPE BASE64` for a known_hosts file, from a `.pub` file.
pub fn known_host(port: u16, public_key_file: &Path) -> String {
    let public = std::fs::read_to_string(public_key_file).expect("host key");
    let key: Vec<&str> = public.split_whitespace().take(2).collect();
    format!("[127.0.0.1]:{port} {}\n", key.join(" "))
}
