//! The podman user engine (`configs/engines/podman.yml`, image
//! `berth/podman:latest`) run by a real `berth daemon` (root): its
//! docker-compatible API answers on the socket with the console's group, an
//! image archive loads (as `docker load` and as berthd's preloading do it), a
//! container runs and logs, and the engine restarts
//! cleanly with a `--restart=always` container coming back.
//!
//! The podman image is not built here (mmdebstrap, about two minutes): the
//! test uses the store `cargo xtask images podman` writes
//! (`$CARGO_TARGET_DIR/berth/image-store`, or `BERTH_IMAGE_STORE`) and is
//! skipped, saying why, when the image or skopeo is missing.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_images::Store;
use common::*;
use serde_json::{json, Value};

const IMAGE: &str = "berth/podman:latest";
/// The console's `docker` group, which the catalogue gives the socket.
const DOCKER_GID: u32 = 999;

/// The store holding the podman image, if it has been built.
fn podman_store() -> Option<PathBuf> {
    let store = std::env::var_os("BERTH_IMAGE_STORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // CARGO_TARGET_TMPDIR is `<target dir>/tmp`.
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("berth/image-store")
        });
    let opened = Store::open(&store).ok()?;
    opened.resolve(IMAGE).ok().map(|_| store)
}

/// The catalogue's podman service as a cloud-config for this test: host
/// paths of its volumes moved under `dir`, and no dependency on the network
/// service, which this daemon does not run.
fn config_from_catalogue(dir: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/engines/podman.yml");
    let text = std::fs::read_to_string(&path).expect("configs/engines/podman.yml");
    let source = std::sync::Arc::from("configs/engines/podman.yml");
    let doc = berth_configs::node::parse(&source, &text, &Default::default())
        .expect("catalogue yaml")
        .to_json();
    let mut service = doc["services"]["podman"].clone();
    let map = service.as_object_mut().expect("podman service");
    map.remove("depends_on");
    let moved = |host: &str| -> Option<PathBuf> {
        match host {
            "/var/lib/containers" => Some(dir.join("containers")),
            "/run/docker" => Some(dir.join("run-docker")),
            "/var/lib/berth/preload/podman" => Some(dir.join("preload")),
            _ => None,
        }
    };
    let volumes: Vec<serde_json::Value> = map["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            let v = v.as_str().expect("volume string");
            let (host, rest) = v.split_once(':').expect("HOST:CONTAINER");
            match moved(host) {
                Some(p) => {
                    std::fs::create_dir_all(&p).expect("volume dir");
                    format!("{}:{rest}", p.display()).into()
                }
                None => v.into(),
            }
        })
        .collect();
    map.insert("volumes".into(), volumes.into());
    let config = json!({ "berth": { "services": { "podman": service } } });
    format!(
        "#cloud-config\n{}",
        berth_configs::emit::json_to_yaml(&config)
    )
}

/// A docker-archive (`docker save` format) of the busybox test image, made
/// the way the QEMU tests make theirs.
fn busybox_archive(dir: &Path) -> PathBuf {
    let (store, image) = busybox();
    berth_testkit::skopeo::busybox_archive(
        &store,
        &image,
        dir,
        berth_testkit::skopeo::Archive::Docker {
            tag: "busybox:latest",
        },
    )
}

/// One HTTP/1.0 request on the engine's socket (1.0: the answer is not
/// chunked and ends when the connection closes): (status, body).
fn request(socket: &Path, method: &str, path: &str, body: Option<(&str, &[u8])>) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: d\r\n");
    if let Some((kind, data)) = body {
        head.push_str(&format!(
            "Content-Type: {kind}\r\nContent-Length: {}\r\n",
            data.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("request");
    if let Some((_, data)) = body {
        s.write_all(data).expect("request body");
    }
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("answer");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {}", String::from_utf8_lossy(&answer)));
    let status_line = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line: {status_line}"));
    (status, answer[split + 4..].to_vec())
}

fn api_json(socket: &Path, method: &str, path: &str, body: Option<Value>) -> Value {
    let data = body.map(|b| b.to_string());
    let (status, out) = request(
        socket,
        method,
        path,
        data.as_deref().map(|d| ("application/json", d.as_bytes())),
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status}: {text}"
    );
    if out.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }
}

/// The text of a container's log as the API sends it: frames of an 8-byte
/// header (stream, 0, 0, 0, big-endian length) and the bytes.
fn demux(mut raw: &[u8]) -> String {
    let mut out = Vec::new();
    while raw.len() >= 8 {
        let len = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) as usize;
        let end = (8 + len).min(raw.len());
        out.extend_from_slice(&raw[8..end]);
        raw = &raw[end..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// podman gives every container RLIMIT_NOFILE and RLIMIT_NPROC above the
/// engine's hard limits, which needs CAP_SYS_RESOURCE. berthd on Berth has
/// it; a test host's sandbox may not, and then each container asks for
/// limits it can have.
fn host_config() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_RESOURCE: u32 = 24;
    if effective & (1 << CAP_SYS_RESOURCE) != 0 {
        json!({})
    } else {
        let limit = |name: &str| json!({"Name": name, "Soft": 1024, "Hard": 1024});
        json!({ "Ulimits": [limit("nofile"), limit("nproc")] })
    }
}

fn container_state(socket: &Path, name: &str) -> Option<String> {
    api_json(socket, "GET", "/v1.41/containers/json?all=1", None)
        .as_array()?
        .iter()
        .find(|c| {
            c["Names"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n.as_str().map(|n| n.trim_start_matches('/')) == Some(name))
            })
        })
        .and_then(|c| c["State"].as_str().map(String::from))
}

#[test]
fn podman_serves_the_docker_api_runs_containers_and_restarts_cleanly() {
    if !is_root() {
        berth_testkit::skip!("berthd runs real containers, which needs root");
        return;
    }
    let Some(store) = podman_store() else {
        berth_testkit::skip!("no {IMAGE} in the image store (build it: cargo xtask images podman)");
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("berth-podman-")
        .tempdir()
        .expect("tempdir");
    let archive = busybox_archive(dir.path());
    let config = dir.path().join("config.yml");
    std::fs::write(&config, config_from_catalogue(dir.path())).expect("config");
    std::fs::copy(&archive, dir.path().join("preload/busybox.tar")).expect("preload");

    // A socket left by a previous engine (dockerd, or a killed podman) must
    // not pass the healthcheck: it is replaced, not trusted.
    let socket = dir.path().join("run-docker/docker.sock");
    drop(UnixListener::bind(&socket).expect("stale socket"));

    let mut daemon = Daemon::start(dir.path(), &store, &config);
    wait_until("podman to be healthy", Duration::from_secs(120), || {
        daemon.service("podman")["health"] == "healthy"
    });
    let meta = std::fs::metadata(&socket).expect("socket");
    assert_eq!(meta.gid(), DOCKER_GID, "the socket's group");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "the socket's mode"
    );
    let (status, ping) = request(&socket, "GET", "/_ping", None);
    assert_eq!((status, ping.as_slice()), (200, &b"OK"[..]));
    let version = api_json(&socket, "GET", "/version", None);
    assert_eq!(version["Version"], "4.3.1", "{version:#}");
    assert!(
        version["Components"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["Name"] == "Podman Engine")),
        "{version:#}"
    );

    // Exactly what berthd's preloading runs in the engine's container.
    let pid = daemon.service("podman")["pid"].to_string();
    let argv = berthd::host::preload::load_argv(
        "podman",
        std::path::Path::new("/var/lib/berth/preload/podman/busybox.tar"),
    );
    let preload = Command::new("nsenter")
        .args(["--target", &pid, "--mount", "--pid", "--"])
        .args(&argv)
        .output()
        .expect("nsenter");
    assert!(preload.status.success(), "{}", text(&preload));
    assert!(
        String::from_utf8_lossy(&preload.stdout).contains("Loaded image"),
        "{}",
        text(&preload)
    );

    // `docker load`'s request.
    let tar = std::fs::read(&archive).expect("archive");
    let (status, loaded) = request(
        &socket,
        "POST",
        "/v1.41/images/load?quiet=1",
        Some(("application/x-tar", &tar)),
    );
    let loaded = String::from_utf8_lossy(&loaded);
    assert_eq!(status, 200, "{loaded}");
    assert!(loaded.contains("busybox:latest"), "{loaded}");

    // `docker run busybox echo hi`, request by request.
    let created = api_json(
        &socket,
        "POST",
        "/v1.41/containers/create?name=hello",
        Some(json!({
            "Image": "busybox:latest",
            "Cmd": ["echo", "hi"],
            "HostConfig": host_config(),
        })),
    );
    let id = created["Id"].as_str().expect("container id").to_string();
    api_json(
        &socket,
        "POST",
        &format!("/v1.41/containers/{id}/start"),
        None,
    );
    let waited = api_json(
        &socket,
        "POST",
        &format!("/v1.41/containers/{id}/wait"),
        None,
    );
    assert_eq!(waited["StatusCode"], 0, "{waited}");
    let (status, raw) = request(
        &socket,
        "GET",
        &format!("/v1.41/containers/{id}/logs?stdout=1&stderr=1"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(demux(&raw).trim(), "hi");

    // A `--restart=always` container, then the engine restarted by berthd:
    // the engine stops it on SIGTERM (so berthd can remove the service's
    // cgroup and start it again) and starts it again once it is back.
    let mut keeper = host_config();
    keeper["RestartPolicy"] = json!({"Name": "always"});
    let created = api_json(
        &socket,
        "POST",
        "/v1.41/containers/create?name=keeper",
        Some(json!({
            "Image": "busybox:latest",
            "Cmd": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"],
            "HostConfig": keeper,
        })),
    );
    let keeper_id = created["Id"].as_str().expect("container id").to_string();
    api_json(
        &socket,
        "POST",
        &format!("/v1.41/containers/{keeper_id}/start"),
        None,
    );
    assert_eq!(
        container_state(&socket, "keeper").as_deref(),
        Some("running")
    );
    let before = daemon.service("podman")["pid"].clone();
    let restarted = daemon.berth(&["service", "restart", "podman"]);
    assert!(restarted.status.success(), "{}", text(&restarted));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = daemon.service("podman");
        if s["health"] == "healthy" && s["pid"] != before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "podman did not come back: {s}\nberthd:\n{}\npodman:\n{}",
            daemon.own_log(),
            daemon.logs("podman")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until("keeper to run again", Duration::from_secs(60), || {
        container_state(&socket, "keeper").as_deref() == Some("running")
    });
    let log = daemon.logs("podman");
    assert!(!log.contains("failed"), "{log}");

    // An orderly stop of everything, the engine's containers included.
    let status = daemon.stop(Duration::from_secs(60));
    assert!(status.success(), "berthd: {status:?}\n{}", daemon.own_log());
    assert!(!daemon.own_log().contains("ERROR"), "{}", daemon.own_log());
    // podman-service turns podman's 143 into 0 when the stop was asked for.
    assert!(
        daemon.own_log().contains("podman: stopped (exit code 0)"),
        "{}",
        daemon.own_log()
    );
    assert!(
        !socket.exists(),
        "the engine removes its socket when it stops"
    );
}
