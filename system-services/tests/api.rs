//! The API over a real unix socket, with the supervisor on the recording
//! runtime: every endpoint, errors, log tail and follow, and the root-only rule.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_configs::forms::Command;
use berth_configs::model::{RestartPolicy, Service};
use berthd::api::{serve_with, Api, Control, Limits, ReloadError};
use berthd::logs::{LogConfig, LogDir};
use berthd::runtime::{ImageLayers, Recording, Runtime};
use berthd::supervisor::{FixedImages, Options, Phase, ReconcileReport, ServiceStatus, Supervisor};

#[derive(Default)]
struct FakeControl {
    reloads: AtomicUsize,
    shutdowns: AtomicUsize,
    next: Mutex<Option<BTreeMap<String, Service>>>,
    supervisor: Mutex<Option<Arc<Supervisor>>>,
}

impl Control for FakeControl {
    fn reload(&self) -> Result<ReconcileReport, ReloadError> {
        self.reloads.fetch_add(1, Ordering::SeqCst);
        let next = self.next.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(services) = next else {
            return Err(ReloadError::Invalid {
                findings: vec!["local.yml:3: the config has an error at line 3".into()],
            });
        };
        let sup = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .expect("a supervisor");
        Ok(sup.reconcile(services)?)
    }

    fn shutdown(&self) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

fn service() -> Service {
    Service {
        image: Some("berth/ntp:latest".into()),
        command: Some(Command::Shell("sleep 1000".into())),
        restart: Some(RestartPolicy::Always),
        ..Default::default()
    }
}

struct Env {
    rt: Arc<Recording>,
    sup: Arc<Supervisor>,
    control: Arc<FakeControl>,
    socket: std::path::PathBuf,
    logs: Arc<LogDir>,
    _server: berthd::api::Server,
    _dir: tempfile::TempDir,
}

fn env(allowed_uid: u32) -> Env {
    env_with(allowed_uid, Limits::default())
}

fn env_with(allowed_uid: u32, limits: Limits) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(Recording::new());
    let logs = Arc::new(LogDir::new(LogConfig::new(dir.path().join("log"))));
    let mut options = Options::new(dir.path().join("run"));
    options.stop_grace = Duration::from_millis(200);
    let services: BTreeMap<String, Service> = [("ntp", service()), ("web", service())]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    let sup = Arc::new(
        Supervisor::start(
            Arc::clone(&rt) as Arc<dyn Runtime>,
            Arc::new(FixedImages(ImageLayers::default())),
            Arc::clone(&logs),
            options,
            services,
        )
        .expect("supervisor"),
    );
    let control = Arc::new(FakeControl::default());
    *control.supervisor.lock().expect("lock") = Some(Arc::clone(&sup));
    let socket = dir.path().join("run/berth.sock");
    let server = serve_with(
        &socket,
        Api {
            supervisor: Arc::clone(&sup),
            logs: Arc::clone(&logs),
            control: Arc::clone(&control) as Arc<dyn Control>,
            allowed_uid,
        },
        limits,
    )
    .expect("serve");
    assert!(sup.wait_for(Duration::from_secs(5), |s| {
        s.services.len() == 2 && s.services.iter().all(|x| x.state == Phase::Running)
    }));
    Env {
        rt,
        sup,
        control,
        socket,
        logs,
        _server: server,
        _dir: dir,
    }
}

/// (status, body) of one request through berth-api's client; chunked bodies
/// are decoded.
fn request(socket: &Path, method: &str, path: &str) -> (u16, String) {
    let answer = berth_api::Client::new(socket)
        .request(method, path)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = answer.status();
    let body = answer.bytes().expect("the body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn services_are_listed_and_inspected() {
    let env = env(rustix::process::geteuid().as_raw());
    let mode = std::fs::metadata(&env.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (status, body) = request(&env.socket, "GET", "/v1/services");
    assert_eq!(status, 200, "{body}");
    let list: Vec<ServiceStatus> = serde_json::from_str(&body).expect("list");
    assert_eq!(
        list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["ntp", "web"]
    );
    assert!(list
        .iter()
        .all(|s| s.state == Phase::Running && s.pid.is_some()));
    assert_eq!(list[0].image.as_deref(), Some("berth/ntp:latest"));

    let (status, body) = request(&env.socket, "GET", "/v1/services/ntp");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["restart"], "always");
    let (status, body) = request(&env.socket, "GET", "/v1/services/nope");
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"], "no service named `nope`");
    let (status, body) = request(&env.socket, "DELETE", "/v1/services");
    assert_eq!(status, 405, "{body}");
    let (status, _) = request(&env.socket, "GET", "/v2/everything");
    assert_eq!(status, 404);
    let (status, body) = request(&env.socket, "GET", "/v1/timeline");
    assert_eq!(status, 200);
    let t = json(&body);
    assert_eq!(t["services"].as_array().map(Vec::len), Some(2), "{t}");
    assert!(t["services"][0]["started"].as_f64().is_some());
}

#[test]
fn start_stop_restart() {
    let env = env(rustix::process::geteuid().as_raw());
    let (status, body) = request(&env.socket, "POST", "/v1/services/web/stop");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["state"], "stopped");
    let (status, body) = request(&env.socket, "POST", "/v1/services/web/start");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["state"], "running");
    let pid = json(&body)["pid"].as_i64();
    let (status, body) = request(&env.socket, "POST", "/v1/services/web/restart");
    assert_eq!(status, 200, "{body}");
    assert_ne!(json(&body)["pid"].as_i64(), pid);
    let (status, _) = request(&env.socket, "GET", "/v1/services/web/restart");
    assert_eq!(status, 405);
    let (status, _) = request(&env.socket, "POST", "/v1/services/nope/start");
    assert_eq!(status, 404);
}

#[test]
fn logs_tail_since_and_follow() {
    let env = env(rustix::process::geteuid().as_raw());
    for i in 0..5 {
        assert!(env.rt.write_stdout("ntp", format!("line {i}\n").as_bytes()));
    }
    let reader = env.logs.reader("ntp").expect("reader");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reader
        .lines(&Default::default())
        .map(|l| l.count())
        .unwrap_or(0)
        < 5
    {
        assert!(std::time::Instant::now() < deadline, "lines not captured");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = request(&env.socket, "GET", "/v1/services/ntp/logs?tail=2");
    assert_eq!(status, 200);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 2, "{body}");
    assert!(
        lines[0].ends_with(" stdout line 3") && lines[1].ends_with(" stdout line 4"),
        "{body}"
    );
    let (_, body) = request(&env.socket, "GET", "/v1/services/ntp/logs?since=2000-01-01");
    assert_eq!(body.lines().count(), 5);
    let (_, body) = request(&env.socket, "GET", "/v1/services/ntp/logs?since=2999-01-01");
    assert_eq!(body, "");
    let (status, body) = request(&env.socket, "GET", "/v1/services/ntp/logs?since=yesterday");
    assert_eq!(status, 400, "{body}");
    let (status, _) = request(&env.socket, "GET", "/v1/services/nope/logs");
    assert_eq!(status, 404);

    // Follow: the tail, then lines as they are written, chunk by chunk.
    let mut s = UnixStream::connect(&env.socket).expect("connect");
    write!(
        s,
        "GET /v1/services/ntp/logs?tail=1&follow=1 HTTP/1.1\r\n\r\n"
    )
    .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s);
    let mut head = String::new();
    while {
        let mut line = String::new();
        r.read_line(&mut line).expect("head");
        head.push_str(&line);
        line != "\r\n"
    } {}
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    let mut chunk = || {
        let mut size = String::new();
        r.read_line(&mut size).expect("size");
        let mut data = String::new();
        r.read_line(&mut data).expect("data");
        let mut crlf = String::new();
        r.read_line(&mut crlf).expect("crlf");
        data
    };
    assert!(chunk().ends_with("line 4\n"));
    assert!(env.rt.write_stderr("ntp", b"later\n"));
    assert!(chunk().ends_with(" stderr later\n"));
}

#[test]
fn reload_and_shutdown_go_to_the_daemon() {
    let env = env(rustix::process::geteuid().as_raw());
    // An invalid config is the client's to fix: 400, with what is wrong.
    let (status, body) = request(&env.socket, "POST", "/v1/config/reload");
    assert_eq!(status, 400, "{body}");
    let answer = json(&body);
    assert!(answer["error"]
        .as_str()
        .unwrap_or_default()
        .contains("the config is invalid"));
    assert_eq!(
        answer["findings"],
        serde_json::json!(["local.yml:3: the config has an error at line 3"])
    );
    // A dependency cycle is a config error too.
    let mut a = service();
    a.depends_on = [("b".to_string(), Default::default())]
        .into_iter()
        .collect();
    let mut b = service();
    b.depends_on = [("a".to_string(), Default::default())]
        .into_iter()
        .collect();
    *env.control.next.lock().expect("lock") = Some(
        [("a".to_string(), a), ("b".to_string(), b)]
            .into_iter()
            .collect(),
    );
    let (status, body) = request(&env.socket, "POST", "/v1/config/reload");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cycle") || body.contains("depend"), "{body}");
    let mut changed = service();
    changed.command = Some(Command::Shell("sleep 2000".into()));
    *env.control.next.lock().expect("lock") = Some(
        [("ntp".to_string(), changed), ("new".to_string(), service())]
            .into_iter()
            .collect(),
    );
    let (status, body) = request(&env.socket, "POST", "/v1/config/reload");
    assert_eq!(status, 200, "{body}");
    let report = json(&body);
    assert_eq!(report["recreated"], serde_json::json!(["ntp"]));
    assert_eq!(report["removed"], serde_json::json!(["web"]));
    assert_eq!(report["added"], serde_json::json!(["new"]));
    assert_eq!(env.control.reloads.load(Ordering::SeqCst), 3);
    let (status, _) = request(&env.socket, "POST", "/v1/shutdown");
    assert_eq!(status, 202);
    // 202 comes first; the shutdown is begun right after it.
    let asked = Instant::now();
    while env.control.shutdowns.load(Ordering::SeqCst) == 0
        && asked.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(env.control.shutdowns.load(Ordering::SeqCst), 1);
    env.sup.shutdown().expect("shutdown");
    let (status, body) = request(&env.socket, "POST", "/v1/services/ntp/start");
    assert_eq!(status, 503, "{body}");
}

#[test]
fn other_users_are_refused_with_a_clear_error() {
    // Let uid 0 in only when the test does not run as root, so that the test
    // process itself is always the "other user".
    let me = rustix::process::geteuid().as_raw();
    let env = env(if me == 0 { 4242 } else { 0 });
    let (status, body) = request(&env.socket, "GET", "/v1/services");
    assert_eq!(status, 403);
    let error = json(&body)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("root only") && error.contains(&format!("uid {me}")),
        "{error}"
    );
}

/// Sends `bytes` (from a thread of its own, so a server that stops reading
/// cannot block the test) and reads the whole answer: (status, body).
fn raw(socket: &Path, bytes: Vec<u8>) -> (u16, String) {
    let s = UnixStream::connect(socket).expect("connect");
    let mut writer = s.try_clone().expect("clone");
    // The server may answer and close before it read everything: a write
    // error here is expected, the answer is what counts.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let text = read_answer(s);
    let _ = sender.join();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// Everything the server sent until it closed. A server that closes with
/// bytes of ours unread resets the connection (ECONNRESET) once its answer
/// has been read: that is the end too.
fn read_answer(mut s: UnixStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Hostile requests are refused, each on its own connection, while a client
/// that behaves is served; a client that never finishes its request is
/// answered 408 when its time is up, not waited for.
#[test]
fn hostile_requests_are_refused_without_hurting_other_clients() {
    let limits = Limits {
        request_time: Duration::from_secs(2),
        ..Limits::default()
    };
    let env = env_with(rustix::process::geteuid().as_raw(), limits);

    // A slow client: half a request, then nothing.
    let mut slow = UnixStream::connect(&env.socket).expect("connect");
    slow.write_all(b"GET /v1/services HTTP/1.1\r\nHost: ber")
        .expect("write");

    // A head past the limit.
    let mut huge = b"GET /v1/services HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 << 10));
    huge.extend_from_slice(b"\r\n\r\n");
    let (status, body) = raw(&env.socket, huge);
    assert_eq!(status, 431, "{body}");
    // So many headers that together they pass it.
    let mut many = b"GET /v1/services HTTP/1.1\r\n".to_vec();
    for i in 0..2000 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let (status, body) = raw(&env.socket, many);
    assert_eq!(status, 431, "{body}");

    // A body announced larger than the limit: refused before it is read.
    let (status, body) = raw(
        &env.socket,
        b"POST /v1/config/reload HTTP/1.1\r\nContent-Length: 1073741824\r\n\r\n".to_vec(),
    );
    assert_eq!(status, 413, "{body}");
    assert_eq!(env.control.reloads.load(Ordering::SeqCst), 0);

    // A body larger than announced: the request is what was announced, the
    // rest is not read as another request.
    let mut more = b"GET /v1/services HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd".to_vec();
    more.extend_from_slice(b"POST /v1/shutdown HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    more.extend(std::iter::repeat_n(b'z', 32 << 10));
    let (status, body) = raw(&env.socket, more);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body).as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(env.control.shutdowns.load(Ordering::SeqCst), 0);

    // A body shorter than announced is a slow client too.
    let mut short = UnixStream::connect(&env.socket).expect("connect");
    short
        .write_all(b"GET /v1/services HTTP/1.1\r\nContent-Length: 100\r\n\r\nab")
        .expect("write");

    // Meanwhile a client that behaves is served at once, the slow ones
    // still connected.
    let (status, body) = request(&env.socket, "GET", "/v1/services");
    assert_eq!(status, 200, "{body}");

    // The slow clients are answered 408 when their time is up (the test
    // waits for the answer; the server's deadline ends it).
    for (what, client) in [("slow head", slow), ("short body", short)] {
        let text = read_answer(client);
        assert!(text.starts_with("HTTP/1.1 408 "), "{what}: {text}");
    }
    let (status, _) = request(&env.socket, "GET", "/v1/services");
    assert_eq!(status, 200);
}
