//! `berth ps|logs|service|boot-time` against a real `berth daemon` started by
//! the test (root: it runs real containers) with temp dirs for the socket,
//! logs, run dir, and an image store holding the busybox test image.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use berth_images::recipe::{build, LoadedRecipe};
use berth_images::Store;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
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

fn berth(socket: &Path, args: &[&str]) -> Output {
    Command::new(BERTH)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("run berth")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ps_logs_service_and_boot_time_against_a_real_daemon() {
    if !rustix::process::geteuid().is_root() {
        berth_testkit::skip!("berthd runs real containers, which needs root");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-cli-service-")
        .tempdir()
        .expect("tempdir");
    // The busybox image, built once and cached like berthd's own tests do.
    let recipe_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/recipes/busybox.yml");
    let recipe = LoadedRecipe::load(&recipe_path).expect("recipe");
    let store_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("berthd-runtime-images");
    let store = Store::open(&store_dir).expect("store");
    let built = build(&store, &recipe, 1_700_000_000).expect("busybox image");
    let image = built.reference.clone();

    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            r#"#cloud-config
berth:
  services:
    cli-setup:
      image: {image}
      command: ["/bin/sh", "-c", "echo setting up; sleep 0.3"]
      oneshot: true
    cli-web:
      image: {image}
      command: ["/bin/sh", "-c", "echo web says hello; touch /tmp/ready; exec sleep 1000"]
      restart: always
      depends_on:
        cli-setup:
          condition: service_completed_successfully
      healthcheck:
        test: file:/tmp/ready
        interval: 200ms
    cli-crash:
      image: {image}
      command: ["/bin/sh", "-c", "echo crashing; exit 3"]
      restart: on-failure:2
"#
        ),
    )
    .expect("config");
    let socket = dir.path().join("berth.sock");
    let child = Command::new(BERTH)
        .arg("daemon")
        .arg("--socket")
        .arg(&socket)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .arg("--log-dir")
        .arg(dir.path().join("log"))
        .arg("--images")
        .arg(&store_dir)
        .arg("--volumes")
        .arg(dir.path().join("volumes"))
        .arg("--config")
        .arg(&config)
        .arg("--quiet")
        .spawn()
        .expect("start berth daemon");
    let daemon = Daemon { child, socket };
    let socket = daemon.socket.clone();

    wait_until("cli-web healthy", || {
        let o = berth(&socket, &["ps", "-o", "json"]);
        o.status.success()
            && serde_json::from_slice::<serde_json::Value>(&o.stdout)
                .ok()
                .and_then(|v| {
                    v.as_array()?
                        .iter()
                        .find(|s| s["name"] == "cli-web")
                        .map(|s| s["health"] == "healthy")
                })
                .unwrap_or(false)
    });
    wait_until("cli-crash to give up", || {
        stdout(&berth(&socket, &["ps"])).contains("gave up after 2")
    });
    let ps = stdout(&berth(&socket, &["ps"]));
    let line = |name: &str| {
        ps.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{ps}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(ps.starts_with("NAME"), "{ps}");
    let web = line("cli-web");
    assert_eq!(
        (web[2].as_str(), web[3].as_str(), web[4].as_str()),
        ("running", "healthy", "0"),
        "{ps}"
    );
    assert_eq!(
        line("cli-setup")[2..4],
        ["exited".to_string(), "(0)".to_string()],
        "{ps}"
    );
    let crash = line("cli-crash");
    assert_eq!(
        (crash[2].as_str(), crash[4].as_str()),
        ("failed", "2"),
        "{ps}"
    );

    let logs = stdout(&berth(&socket, &["logs", "cli-web"]));
    assert!(logs.trim_end().ends_with("stdout web says hello"), "{logs}");
    let crash_logs = stdout(&berth(&socket, &["logs", "-n", "2", "cli-crash"]));
    assert_eq!(crash_logs.matches("crashing").count(), 2, "{crash_logs}");
    let own = stdout(&berth(&socket, &["logs", "berthd"]));
    assert!(own.contains("API listening on"), "{own}");
    let since = stdout(&berth(&socket, &["logs", "--since", "1h", "cli-setup"]));
    assert!(since.contains("setting up"), "{since}");
    let unknown = berth(&socket, &["logs", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no service named `nope`"),
        "{}",
        text(&unknown)
    );

    let stopped = stdout(&berth(&socket, &["service", "stop", "cli-web"]));
    assert_eq!(stopped.trim(), "cli-web: stopped");
    let started = stdout(&berth(&socket, &["service", "start", "cli-web"]));
    assert!(started.starts_with("cli-web: running (pid "), "{started}");
    let listed = stdout(&berth(&socket, &["service", "ls"]));
    assert!(listed.contains("cli-web"), "{listed}");
    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&berth(&socket, &["service", "inspect", "cli-web"])))
            .expect("json");
    assert_eq!(inspect["state"], "running");

    let svg = dir.path().join("boot.svg");
    let boot = stdout(&berth(
        &socket,
        &["boot-time", "--svg", svg.to_str().expect("utf-8")],
    ));
    assert!(
        boot.contains("berthd started at")
            && boot.contains("cli-setup")
            && boot.contains("cli-web"),
        "{boot}"
    );
    let chart = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        chart.starts_with("<svg") && chart.contains("cli-web"),
        "{chart}"
    );

    let gone = Command::new(BERTH)
        .args(["ps", "--socket"])
        .arg(dir.path().join("missing.sock"))
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("is berthd running?"),
        "{}",
        text(&gone)
    );

    let mut daemon = daemon;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = daemon.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "berthd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "berthd exited with {status:?}");
    assert!(!socket.exists(), "the socket is removed on exit");
}
