//! berthd's API: HTTP/1.1 and JSON on a unix socket (`/run/berth/berth.sock`,
//! mode 0600), for root only (checked with SO_PEERCRED, refused with a 403 that
//! says why). Endpoints are versioned under `/v1`; `docs/api.md` lists them.
//!
//! A small server on `httparse` rather than an HTTP stack: the requests are
//! tiny, one per connection (`Connection: close`), and the static binary
//! stays small. The types it answers with are `berth-api`'s. Each connection gets a thread with a small stack; log
//! following streams with chunked transfer encoding until the client leaves.
//!
//! A request that would tie a connection up is refused ([`Limits`]): a head
//! over 16 KiB gets 431, an announced body over 64 KiB gets 413 (unread), and
//! a request not complete within 10 s gets 408, however slowly its bytes
//! trickle in. Bytes past the announced body are never read. Each connection
//! has its own thread, so none of this delays other clients.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_api::{ErrorBody, ShuttingDown, Version};
use serde::Serialize;

use crate::logs::{self, LogDir, Query, Timestamp};
use crate::supervisor::{ReconcileReport, Supervisor, SupervisorError};

/// Connections served at once; more are answered 503 (a stuck client cannot
/// make berthd spawn threads without bound).
const MAX_CONNECTIONS: usize = 64;
/// What one request may take before it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The request line and headers, in bytes (431 past it).
    pub head: u64,
    /// The body its Content-Length announces (413 past it). No endpoint uses
    /// a body; one within the limit is read and dropped.
    pub body: u64,
    /// From the connection's start to the request's last byte (408 past it).
    pub request_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head: 16 << 10,
            body: 64 << 10,
            request_time: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {}: {source}", path.display())]
    Listen { path: PathBuf, source: io::Error },
    #[error("cannot start the API thread: {0}")]
    Spawn(#[source] io::Error),
}

/// Why a config reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config has errors (400, with each finding).
    #[error("the config is invalid; nothing was changed (fix it and reload again)")]
    Invalid { findings: Vec<String> },
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
}

/// What the API asks of the daemon around it.
pub trait Control: Send + Sync {
    /// Loads the config again and applies it (`POST /v1/config/reload`).
    fn reload(&self) -> Result<ReconcileReport, ReloadError>;
    /// Begins an orderly shutdown (`POST /v1/shutdown`); returns at once.
    fn shutdown(&self);
}

/// The state the API serves.
#[derive(Clone)]
pub struct Api {
    pub supervisor: Arc<Supervisor>,
    pub logs: Arc<LogDir>,
    pub control: Arc<dyn Control>,
    /// The only peer uid let in (0; tests may use their own).
    pub allowed_uid: u32,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("allowed_uid", &self.allowed_uid)
            .finish_non_exhaustive()
    }
}

/// A listening API; [`Server::close`] (or drop) stops it and removes the socket.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn close(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the accept() up.
            let _ = UnixStream::connect(&self.path);
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Listens on `path` (replacing a stale socket) with mode 0600.
pub fn serve(path: &Path, api: Api) -> Result<Server, ApiError> {
    serve_with(path, api, Limits::default())
}

/// [`serve`] with other [`Limits`] (tests use short times).
pub fn serve_with(path: &Path, api: Api, limits: Limits) -> Result<Server, ApiError> {
    let listen_err = |source| ApiError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || accept_loop(listener, api, limits, flag))
        .map_err(ApiError::Spawn)?;
    Ok(Server {
        path: path.to_path_buf(),
        stop,
        thread: Some(thread),
    })
}

fn accept_loop(listener: UnixListener, api: Api, limits: Limits, stop: Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("api: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = respond_json(
                &mut stream,
                503,
                &error_body("too many connections; try again"),
            );
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (api, open2) = (api.clone(), Arc::clone(&open));
        let spawned = std::thread::Builder::new()
            .name("api conn".into())
            .stack_size(256 << 10)
            .spawn(move || {
                if let Err(e) = handle_connection(&api, &limits, stream) {
                    log::debug!("api: connection: {e}");
                }
                open2.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            open.fetch_sub(1, Ordering::SeqCst);
            log::warn!("api: cannot start a connection thread: {e}");
        }
    }
}

/// One parsed request.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
}

fn error_body(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(message)
}

fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.uid())
        .map_err(io::Error::from)
}

fn handle_connection(api: &Api, limits: &Limits, mut stream: UnixStream) -> io::Result<()> {
    let deadline = Instant::now() + limits.request_time;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let uid = peer_uid(&stream)?;
    let request = read_request(&stream, limits, deadline);
    // After the request, reads only notice a client that left (log following).
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = match request {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        Err(refusal) => {
            log::debug!("api: refused a request: {}", refusal.message());
            return respond_json(
                &mut stream,
                refusal.status(),
                &error_body(refusal.message()),
            );
        }
    };
    if uid != api.allowed_uid {
        return respond_json(
            &mut stream,
            403,
            &error_body(format!(
                "permission denied: the berthd API is for root only (you are uid {uid}); try sudo"
            )),
        );
    }
    route(api, &request, &mut stream)
}

/// Why a request is refused, and with which status.
#[derive(Debug)]
enum Refusal {
    /// 400: not HTTP/1.x as this server reads it.
    Malformed(String),
    /// 408: the whole request did not arrive within [`Limits::request_time`].
    TooSlow,
    /// 413: the announced body is over [`Limits::body`].
    BodyTooLarge(u64),
    /// 431: the request line and headers are over [`Limits::head`].
    HeadTooLarge,
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) => 400,
            Refusal::TooSlow => 408,
            Refusal::BodyTooLarge(_) => 413,
            Refusal::HeadTooLarge => 431,
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::Malformed(why) => format!("bad request: {why}"),
            Refusal::TooSlow => "the request did not arrive in time".into(),
            Refusal::BodyTooLarge(n) => format!("a body of {n} bytes is too large"),
            Refusal::HeadTooLarge => "the request head is too large".into(),
        }
    }

    fn from_io(e: io::Error) -> Refusal {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Refusal::TooSlow,
            _ => Refusal::Malformed(e.to_string()),
        }
    }
}

/// Reads from a stream until a deadline, however the bytes are spread out:
/// each read waits at most for what is left of the time.
struct Deadline<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

fn read_request(
    stream: &UnixStream,
    limits: &Limits,
    deadline: Instant,
) -> Result<Option<Request>, Refusal> {
    parse_request(
        Deadline {
            stream,
            until: deadline,
        },
        limits,
    )
}

/// For `cargo xtask fuzz`: one request parsed from `data` with the default
/// limits, as a connection delivering those bytes would be. Must not panic.
#[cfg(fuzzing)]
pub fn fuzz_request(data: &[u8]) {
    let _ = parse_request(data, &Limits::default());
}

/// Headers a request may have (past it: 431, like a head too long).
const MAX_HEADERS: usize = 64;

/// The request head and the body it announces, within `limits`.
fn parse_request<R: Read>(mut input: R, limits: &Limits) -> Result<Option<Request>, Refusal> {
    let head_limit = usize::try_from(limits.head).unwrap_or(usize::MAX);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    const CHUNK: usize = 2048;
    let mut chunk = [0u8; CHUNK];
    loop {
        let room = head_limit.saturating_sub(buf.len());
        if room == 0 {
            return Err(Refusal::HeadTooLarge);
        }
        let n = input
            .read(&mut chunk[..room.min(CHUNK)])
            .map_err(Refusal::from_io)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(Refusal::Malformed("the request head is cut short".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => continue,
            Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
            Err(httparse::Error::Version) => {
                return Err(Refusal::Malformed("unsupported HTTP version".into()))
            }
            Err(e) => return Err(Refusal::Malformed(format!("malformed request: {e}"))),
        };
        let (Some(method), Some(target)) = (req.method, req.path) else {
            return Err(Refusal::Malformed("malformed request line".into()));
        };
        let mut content_length: u64 = 0;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                content_length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| Refusal::Malformed("bad Content-Length".into()))?;
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // No endpoint takes a body, and a length this server did not
                // check is how requests get smuggled.
                return Err(Refusal::Malformed(
                    "Transfer-Encoding is not taken (no endpoint has a body)".into(),
                ));
            }
        }
        if content_length > limits.body {
            return Err(Refusal::BodyTooLarge(content_length));
        }
        // Bodies mean nothing to any endpoint; read the announced bytes (no
        // more) so the client is not cut off. Some may have come with the head.
        let have = ((buf.len() - head_len) as u64).min(content_length);
        let read = io::copy(
            &mut (&mut input).take(content_length - have),
            &mut io::sink(),
        )
        .map_err(Refusal::from_io)?;
        if have + read < content_length {
            return Err(Refusal::Malformed("the body is cut short".into()));
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, parse_query(q)),
            None => (target, BTreeMap::new()),
        };
        return Ok(Some(Request {
            method: method.to_string(),
            path: percent_decode(path),
            query,
        }));
    }
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn respond(
    stream: &mut UnixStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn respond_json<T: Serialize>(stream: &mut UnixStream, status: u16, value: &T) -> io::Result<()> {
    let mut body = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    body.push(b'\n');
    respond(stream, status, "application/json", &body)
}

fn supervisor_error(stream: &mut UnixStream, e: &SupervisorError) -> io::Result<()> {
    let status = match e {
        SupervisorError::UnknownService { .. } => 404,
        // A dependency cycle or an unknown dependency: the config is wrong.
        SupervisorError::Graph(_) => 400,
        SupervisorError::ShuttingDown | SupervisorError::Busy => 409,
        SupervisorError::Gone => 503,
        _ => 500,
    };
    respond_json(stream, status, &error_body(e.to_string()))
}

/// How long start/restart wait for the service to come up before answering.
const START_WAIT: Duration = Duration::from_secs(30);

fn route(api: &Api, req: &Request, stream: &mut UnixStream) -> io::Result<()> {
    let segments: Vec<&str> = req
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = req.method.as_str();
    let not_allowed = |stream: &mut UnixStream, allowed: &str| {
        respond_json(
            stream,
            405,
            &error_body(format!("{} {} takes {allowed}", req.method, req.path)),
        )
    };
    match segments.as_slice() {
        ["v1", "version"] => respond_json(
            stream,
            200,
            &Version {
                version: env!("CARGO_PKG_VERSION").into(),
                api: "v1".into(),
            },
        ),
        ["v1", "services"] => match method {
            "GET" => respond_json(stream, 200, &api.supervisor.services()),
            _ => not_allowed(stream, "GET"),
        },
        ["v1", "services", name] => match method {
            "GET" => match api.supervisor.service(name) {
                Some(s) => respond_json(stream, 200, &s),
                None => respond_json(
                    stream,
                    404,
                    &error_body(format!("no service named `{name}`")),
                ),
            },
            _ => not_allowed(stream, "GET"),
        },
        ["v1", "services", name, "logs"] => match method {
            "GET" => logs(api, name, &req.query, stream),
            _ => not_allowed(stream, "GET"),
        },
        ["v1", "services", name, action @ ("start" | "stop" | "restart")] => {
            if method != "POST" {
                return not_allowed(stream, "POST");
            }
            let result = match *action {
                "start" => api.supervisor.start_service(name, START_WAIT),
                "stop" => api.supervisor.stop_service(name),
                _ => api.supervisor.restart_service(name, START_WAIT),
            };
            match result {
                Ok(status) => respond_json(stream, 200, &status),
                Err(e) => supervisor_error(stream, &e),
            }
        }
        ["v1", "timeline"] => match method {
            "GET" => respond_json(stream, 200, &api.supervisor.timeline()),
            _ => not_allowed(stream, "GET"),
        },
        ["v1", "config", "reload"] => match method {
            "POST" => match api.control.reload() {
                Ok(report) => respond_json(stream, 200, &report),
                Err(ReloadError::Invalid { findings }) => respond_json(
                    stream,
                    400,
                    &ErrorBody {
                        error: ReloadError::Invalid {
                            findings: Vec::new(),
                        }
                        .to_string(),
                        findings,
                    },
                ),
                Err(ReloadError::Supervisor(e)) => supervisor_error(stream, &e),
            },
            _ => not_allowed(stream, "POST"),
        },
        ["v1", "shutdown"] => match method {
            "POST" => {
                respond_json(
                    stream,
                    202,
                    &ShuttingDown {
                        shutting_down: true,
                    },
                )?;
                api.control.shutdown();
                Ok(())
            }
            _ => not_allowed(stream, "POST"),
        },
        _ => respond_json(
            stream,
            404,
            &error_body(format!(
                "no endpoint {} {}; see docs/api.md",
                req.method, req.path
            )),
        ),
    }
}

fn logs(
    api: &Api,
    name: &str,
    query: &BTreeMap<String, String>,
    stream: &mut UnixStream,
) -> io::Result<()> {
    let known = name == logs::BERTHD
        || api.supervisor.service(name).is_some()
        || api.logs.reader(name).is_ok_and(|r| !r.files().is_empty());
    if !known {
        return respond_json(
            stream,
            404,
            &error_body(format!("no service named `{name}`")),
        );
    }
    let mut q = Query::default();
    if let Some(tail) = query.get("tail").filter(|t| !t.is_empty() && *t != "all") {
        match tail.parse() {
            Ok(n) => q.tail = Some(n),
            Err(_) => {
                return respond_json(
                    stream,
                    400,
                    &error_body(format!("tail=`{tail}` is not a number of lines")),
                )
            }
        }
    }
    if let Some(since) = query.get("since").filter(|s| !s.is_empty()) {
        match logs::parse_since(since, Timestamp::now()) {
            Ok(t) => q.since = Some(t),
            Err(e) => return respond_json(stream, 400, &error_body(e.to_string())),
        }
    }
    let follow = query
        .get("follow")
        .is_some_and(|f| matches!(f.as_str(), "1" | "true" | "yes" | ""));
    let reader = match api.logs.reader(name) {
        Ok(r) => r,
        Err(e) => return respond_json(stream, 400, &error_body(e.to_string())),
    };
    if !follow {
        let mut body = Vec::new();
        match reader.lines(&q) {
            Ok(lines) => {
                for line in lines {
                    match line {
                        Ok(l) => {
                            body.extend_from_slice(l.line.as_bytes());
                            body.push(b'\n');
                        }
                        Err(e) => return respond_json(stream, 500, &error_body(e.to_string())),
                    }
                }
            }
            Err(e) => return respond_json(stream, 500, &error_body(e.to_string())),
        }
        return respond(stream, 200, "text/plain; charset=utf-8", &body);
    }
    let mut follower = match reader.follow(&q) {
        Ok(f) => f,
        Err(e) => return respond_json(stream, 500, &error_body(e.to_string())),
    };
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    stream.flush()?;
    loop {
        match follower.next_line(Some(Duration::from_millis(500))) {
            Ok(Some(l)) => {
                let data = format!("{}\n", l.line);
                write!(stream, "{:x}\r\n{data}\r\n", data.len())?;
                stream.flush()?;
            }
            Ok(None) => {
                if peer_closed(stream) {
                    return Ok(());
                }
            }
            Err(e) => {
                log::warn!("api: following the log of {name}: {e}");
                break;
            }
        }
    }
    stream.write_all(b"0\r\n\r\n")?;
    stream.flush()
}

/// The client has hung up (a follow has no other way to notice between lines).
fn peer_closed(stream: &UnixStream) -> bool {
    let mut buf = [0u8; 1];
    // SAFETY: `buf` is a valid 1-byte buffer; the fd stays open for the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
        || (n < 0 && {
            let e = io::Error::last_os_error();
            e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted
        })
}

#[cfg(test)]
mod tests;
