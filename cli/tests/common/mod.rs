//! Shared by the tests that run a real `berth daemon` (root: real containers):
//! the busybox test image, the daemon process, the CLI, and readers of the real
//! processes and cgroups behind the services.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use berth_images::recipe::{build, LoadedRecipe};
use berth_images::Store;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The busybox image (built once and cached, like berthd's own tests do):
/// (store directory, reference).
pub fn busybox() -> (PathBuf, String) {
    let recipe_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/recipes/busybox.yml");
    let recipe = LoadedRecipe::load(&recipe_path).expect("recipe");
    let store_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("berthd-runtime-images");
    let store = Store::open(&store_dir).expect("store");
    let built = build(&store, &recipe, 1_700_000_000).expect("busybox image");
    (store_dir, built.reference)
}

/// What a test that runs real containers starts from: a temp dir named
/// `PREFIX…`, and the busybox image's (store, reference). `None`, recorded as
/// a skip, when not root; the test then returns.
pub fn root_test(prefix: &str) -> Option<(tempfile::TempDir, PathBuf, String)> {
    if !is_root() {
        berth_testkit::skip!("berthd runs real containers, which needs root");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    let (store, image) = busybox();
    Some((dir, store, image))
}

/// Writes `text` as `DIR/config.yml` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let config = dir.join("config.yml");
    std::fs::write(&config, text).expect("config");
    config
}

/// A `berth daemon` with everything under one directory.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub store: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    /// Starts berthd on `config` with run, log and volume dirs under `dir`, and
    /// waits until its API answers.
    pub fn start(dir: &Path, store: &Path, config: &Path) -> Daemon {
        Daemon::start_with(dir, store, "--config", config)
    }

    /// Like [`Daemon::start`], but reading the system's config sources (built-in
    /// defaults, local changes, the service catalogue…) under `root`.
    #[allow(dead_code)]
    pub fn start_on_root(dir: &Path, store: &Path, root: &Path) -> Daemon {
        Daemon::start_with(dir, store, "--root", root)
    }

    /// Like [`Daemon::start`], with `prepare` applied to the command first
    /// (an environment variable, a descriptor to pass).
    pub fn start_prepared(
        dir: &Path,
        store: &Path,
        config: &Path,
        prepare: impl FnOnce(&mut Command),
    ) -> Daemon {
        Daemon::start_with_prepared(dir, store, "--config", config, prepare)
    }

    fn start_with(dir: &Path, store: &Path, flag: &str, config: &Path) -> Daemon {
        Daemon::start_with_prepared(dir, store, flag, config, |_| {})
    }

    fn start_with_prepared(
        dir: &Path,
        store: &Path,
        flag: &str,
        config: &Path,
        prepare: impl FnOnce(&mut Command),
    ) -> Daemon {
        let socket = berth_testkit::daemon_socket(dir);
        let mut command = berth_testkit::daemon_command(Path::new(BERTH), dir, store);
        command.arg(flag).arg(config);
        prepare(&mut command);
        let child = command.spawn().expect("start berth daemon");
        let daemon = Daemon {
            child,
            dir: dir.to_path_buf(),
            socket,
            store: store.to_path_buf(),
            config: config.to_path_buf(),
        };
        wait_until("the API", Duration::from_secs(30), || {
            berth(&daemon.socket, &["ps"]).status.success()
        });
        daemon
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn berth(&self, args: &[&str]) -> Output {
        berth(&self.socket, args)
    }

    /// `berth ps -o json`.
    pub fn ps(&self) -> Vec<serde_json::Value> {
        let o = self.berth(&["ps", "-o", "json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).expect("ps json")
    }

    pub fn service(&self, name: &str) -> serde_json::Value {
        self.ps()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// `GET path` on the API (the CLI has no command for the raw timeline).
    pub fn get(&self, path: &str) -> serde_json::Value {
        berth_api::Client::new(&self.socket)
            .get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The service's log as `berth logs` prints it.
    pub fn logs(&self, name: &str) -> String {
        stdout(&self.berth(&["logs", name]))
    }

    /// SIGTERM, then waits for the exit (orderly stop of every service).
    pub fn stop(&mut self, within: Duration) -> ExitStatus {
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "berthd did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: berthd dies without stopping anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// berthd's own log file.
    pub fn own_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/berthd.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers; a stale pid only makes it fail.
    unsafe {
        libc::kill(pid, sig);
    }
}

pub fn berth(socket: &Path, args: &[&str]) -> Output {
    Command::new(BERTH)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("run berth")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A v1 controller's (or the v2 unified) directory of a service's cgroup.
pub fn cgroup_dir(controller: &str, service: &str) -> PathBuf {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        PathBuf::from(format!("/sys/fs/cgroup/berth/{service}"))
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/{controller}/berth/{service}"))
    }
}

/// Pids in a service's cgroup (the pids controller's view on v1).
pub fn cgroup_pids(service: &str) -> Vec<i32> {
    std::fs::read_to_string(cgroup_dir("pids", service).join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// `comm` of a process (`None` once it is gone).
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// The parent of a process (`None` once it is gone).
pub fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// The processes of `pids` whose parent is not among them. A shell's child
/// between its fork and its exec (a loop's `sleep`) still has the shell's
/// name and command line, and is not a second copy of the shell.
pub fn outermost(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|p| parent(*p).is_none_or(|pp| !pids.contains(&pp)))
        .collect()
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let i = s.rfind(')')?;
            s[i + 1..].trim_start().chars().next()
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// `/proc/<pid>/ns/<kind>` (the namespace's identity, e.g. `net:[4026531992]`).
pub fn namespace(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{kind}: {e}"))
}

/// A small file from a cgroup, trimmed.
pub fn read_trim(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}
