//! The one client of berthd's API: HTTP/1.1 over its unix socket, one request
//! per connection (`Connection: close`), with a timeout on each step so that
//! no caller (PID 1 least of all) can hang on a wedged berthd.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::types::{ErrorBody, ReconcileReport, ServiceStatus, ShuttingDown, Timeline, Version};

/// How long each step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To be let in: a berthd whose listen queue is full is retried until then.
    pub connect: Duration,
    /// For each read of the answer; `None` waits for ever (following a log).
    pub read: Option<Duration>,
    /// For each write of the request.
    pub write: Option<Duration>,
}

impl Default for Timeouts {
    /// Generous enough for `start`, which berthd answers once the service is
    /// up (it waits at most 30 s).
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Some(Duration::from_secs(60)),
            write: Some(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach berthd at {}: {}", socket.display(), connect_hint(source))]
    Connect { socket: PathBuf, source: io::Error },
    #[error("{what} ({}): {source}", socket.display())]
    Io {
        what: &'static str,
        socket: PathBuf,
        source: io::Error,
    },
    #[error("berthd answered something that is not HTTP: {0}")]
    Malformed(#[from] Malformed),
    /// berthd answered with an error status; `message` is what it said.
    #[error("{message}{}", findings.iter().map(|f| format!("\n  {f}")).collect::<String>())]
    Api {
        status: u16,
        message: String,
        findings: Vec<String>,
    },
    #[error("berthd's answer to {path} is not what this client knows: {source}")]
    Decode {
        path: String,
        source: serde_json::Error,
    },
}

/// What is wrong with berthd's answer. Heads are shown as received (lossily
/// decoded, quoted), so a stranger on the socket shows who it is.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("no answer (berthd closed the connection)")]
    NoAnswer,
    #[error("the head is cut short: {0:?}")]
    HeadEnds(String),
    #[error("the head is over 16 KiB")]
    HeadTooLong,
    #[error("{0:?} is cut short")]
    HeadPartial(String),
    #[error("{source}: {head:?}")]
    Head {
        head: String,
        #[source]
        source: httparse::Error,
    },
    #[error("{0:?}")]
    NoStatus(String),
    #[error("Content-Length {0:?} is not a number")]
    ContentLength(String),
    #[error("an answer of {0} bytes is over 64 MiB")]
    BodyTooLarge(u64),
    #[error("the answer to {path} is cut short ({got} of {want} bytes)")]
    BodyCutShort { path: String, got: usize, want: u64 },
    #[error("bad chunk size {0:?}")]
    ChunkSize(String),
}

fn connect_hint(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "permission denied: the berthd API is for root only; try sudo".into()
        }
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => "is berthd running?".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            "berthd is not accepting connections (timed out)".into()
        }
        _ => e.to_string(),
    }
}

impl ClientError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of the berthd at `socket`. Cheap: it holds no connection.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeouts: Timeouts,
}

/// `GET /v1/services/NAME/logs`'s query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// A time (2026-11-23T08:40:00Z) or a duration back (10m).
    pub since: Option<String>,
    /// Keep the connection open and stream new lines.
    pub follow: bool,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            timeouts: Timeouts::default(),
        }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Client {
        self.timeouts = timeouts;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn io(&self, what: &'static str) -> impl FnOnce(io::Error) -> ClientError + '_ {
        move |source| ClientError::Io {
            what,
            socket: self.socket.clone(),
            source,
        }
    }

    /// Sends `METHOD path` (no body) and reads the answer's head; the body is
    /// read from the [`Response`].
    pub fn request(&self, method: &str, path: &str) -> Result<Response, ClientError> {
        self.request_with(method, path, self.timeouts.read)
    }

    fn request_with(
        &self,
        method: &str,
        path: &str,
        read: Option<Duration>,
    ) -> Result<Response, ClientError> {
        let mut stream = connect(&self.socket, self.timeouts.connect).map_err(|source| {
            ClientError::Connect {
                socket: self.socket.clone(),
                source,
            }
        })?;
        stream
            .set_write_timeout(self.timeouts.write)
            .and_then(|()| stream.set_read_timeout(read))
            .map_err(self.io("setting the socket's timeouts"))?;
        stream
            .write_all(
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: berthd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .map_err(self.io("sending the request to berthd"))?;
        let mut reader = BufReader::new(stream);
        let head = read_head(&mut reader).map_err(|e| match e {
            HeadError::Io(source) => self.io("reading berthd's answer")(source),
            HeadError::Malformed(m) => m.into(),
        })?;
        Ok(Response {
            path: path.to_string(),
            status: head.status,
            body: if head.chunked {
                BodyKind::Chunked
            } else {
                match head.length {
                    Some(n) => BodyKind::Length(n),
                    None => BodyKind::ToEnd,
                }
            },
            reader,
            socket: self.socket.clone(),
        })
    }

    /// `GET path`, decoded; an error status is [`ClientError::Api`].
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("GET", path)?.json()
    }

    /// `POST path`, decoded; an error status is [`ClientError::Api`].
    pub fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("POST", path)?.json()
    }

    pub fn version(&self) -> Result<Version, ClientError> {
        self.get("/v1/version")
    }

    pub fn services(&self) -> Result<Vec<ServiceStatus>, ClientError> {
        self.get("/v1/services")
    }

    pub fn service(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.get(&format!("/v1/services/{}", escape(name)))
    }

    /// `start`, `stop` or `restart`; answers the service's status after it.
    pub fn act(&self, name: &str, action: Action) -> Result<ServiceStatus, ClientError> {
        self.post(&format!(
            "/v1/services/{}/{}",
            escape(name),
            action.as_str()
        ))
    }

    pub fn timeline(&self) -> Result<Timeline, ClientError> {
        self.get("/v1/timeline")
    }

    /// Loads and applies the config again. An invalid config is refused (400)
    /// with its findings in [`ClientError::Api`].
    pub fn reload(&self) -> Result<ReconcileReport, ClientError> {
        self.post("/v1/config/reload")
    }

    pub fn shutdown(&self) -> Result<ShuttingDown, ClientError> {
        self.post("/v1/shutdown")
    }

    /// A service's log; read it with [`Response::text`] or, following,
    /// [`Response::chunks`] (no read timeout then: new lines may be far apart).
    pub fn logs(&self, name: &str, query: &LogQuery) -> Result<Response, ClientError> {
        let mut path = format!("/v1/services/{}/logs?", escape(name));
        if let Some(n) = query.tail {
            let _ = write!(path, "tail={n}&");
        }
        if let Some(s) = &query.since {
            let _ = write!(path, "since={}&", escape(s));
        }
        if query.follow {
            path.push_str("follow=1");
        }
        let path = path.trim_end_matches(['&', '?']);
        let read = if query.follow {
            None
        } else {
            self.timeouts.read
        };
        self.request_with("GET", path, read)?.ok()
    }
}

/// What `POST /v1/services/NAME/ACTION` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }
}

/// Percent-escaping for a path segment or query value: everything but the
/// unreserved characters (and `:`, common in times).
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A unix-socket connect that gives up after `timeout`. A listener whose
/// queue is full makes a blocking connect(2) wait for ever, and a
/// non-blocking one fail with EAGAIN at once (unix sockets, unlike TCP, do not
/// finish connecting in the background), so it is retried until the time is up.
fn connect(socket: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    let path = socket.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if path.len() >= addr.sun_path.len() || path.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path is too long or has a NUL byte",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + path.len() + 1) as libc::socklen_t;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `addr` is a valid sockaddr_un of which `len` bytes are used.
        let r = unsafe {
            libc::connect(
                fd,
                (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
                len,
            )
        };
        if r == 0 {
            let stream = UnixStream::from(owned);
            stream.set_nonblocking(false)?;
            return Ok(stream);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A response head is at most this long.
const MAX_HEAD: usize = 16 << 10;
/// A body read whole (not streamed) is at most this long.
const MAX_BODY: u64 = 64 << 20;

struct Head {
    status: u16,
    length: Option<u64>,
    chunked: bool,
}

enum HeadError {
    Io(io::Error),
    Malformed(Malformed),
}

fn read_head(reader: &mut BufReader<UnixStream>) -> Result<Head, HeadError> {
    // The head ends at the first empty line; read it line by line so that no
    // byte of the body is consumed here.
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - raw.len()) as u64)
            .read_until(b'\n', &mut raw)
            .map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Malformed(if raw.is_empty() {
                Malformed::NoAnswer
            } else {
                Malformed::HeadEnds(String::from_utf8_lossy(&raw).into_owned())
            }));
        }
        if raw[before..] == *b"\r\n" || raw[before..] == *b"\n" {
            break;
        }
        if raw.len() >= MAX_HEAD {
            return Err(HeadError::Malformed(Malformed::HeadTooLong));
        }
    }
    parse_head(&raw).map_err(HeadError::Malformed)
}

fn parse_head(raw: &[u8]) -> Result<Head, Malformed> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let shown = || String::from_utf8_lossy(raw).into_owned();
    match response.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Malformed::HeadPartial(shown())),
        Err(source) => {
            return Err(Malformed::Head {
                head: shown(),
                source,
            })
        }
    }
    let status = response.code.ok_or_else(|| Malformed::NoStatus(shown()))?;
    let mut head = Head {
        status,
        length: None,
        chunked: false,
    };
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            head.length = Some(
                value
                    .parse()
                    .map_err(|_| Malformed::ContentLength(value.to_string()))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    Ok(head)
}

#[derive(Debug, Clone, Copy)]
enum BodyKind {
    Length(u64),
    Chunked,
    ToEnd,
}

/// An answer whose head has been read.
#[derive(Debug)]
pub struct Response {
    path: String,
    status: u16,
    body: BodyKind,
    reader: BufReader<UnixStream>,
    socket: PathBuf,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The answer itself when its status is not an error; otherwise its
    /// body read as berthd's [`ErrorBody`] and returned as [`ClientError::Api`].
    pub fn ok(self) -> Result<Response, ClientError> {
        if self.status < 400 {
            return Ok(self);
        }
        let status = self.status;
        let body = self.bytes()?;
        let text = String::from_utf8_lossy(&body);
        let (message, findings) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => (e.error, e.findings),
            Err(_) if text.trim().is_empty() => (format!("berthd answered {status}"), Vec::new()),
            Err(_) => (text.trim().to_string(), Vec::new()),
        };
        Err(ClientError::Api {
            status,
            message,
            findings,
        })
    }

    /// The whole body, whatever the status.
    pub fn bytes(mut self) -> Result<Vec<u8>, ClientError> {
        let mut body = Vec::new();
        match self.body {
            BodyKind::Chunked => {
                self.read_chunks(|c| {
                    body.extend_from_slice(c);
                    if body.len() as u64 > MAX_BODY {
                        return Err(io::Error::other("the answer is over 64 MiB"));
                    }
                    Ok(())
                })?;
            }
            BodyKind::Length(n) => {
                if n > MAX_BODY {
                    return Err(Malformed::BodyTooLarge(n).into());
                }
                (&mut self.reader)
                    .take(n)
                    .read_to_end(&mut body)
                    .map_err(|e| self.err("reading berthd's answer", e))?;
                if (body.len() as u64) < n {
                    return Err(Malformed::BodyCutShort {
                        path: self.path.clone(),
                        got: body.len(),
                        want: n,
                    }
                    .into());
                }
            }
            BodyKind::ToEnd => {
                (&mut self.reader)
                    .take(MAX_BODY)
                    .read_to_end(&mut body)
                    .map_err(|e| self.err("reading berthd's answer", e))?;
            }
        }
        Ok(body)
    }

    /// The body as text, when the status is not an error.
    pub fn text(self) -> Result<String, ClientError> {
        let body = self.ok()?.bytes()?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The body decoded, when the status is not an error.
    pub fn json<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let path = self.path.clone();
        let body = self.ok()?.bytes()?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode { path, source })
    }

    /// Hands the body to `f` piece by piece as it arrives (each chunk of a
    /// chunked body; a plain body whole) until berthd ends it or `f` fails.
    pub fn chunks(mut self, f: impl FnMut(&[u8]) -> io::Result<()>) -> Result<(), ClientError> {
        let BodyKind::Chunked = self.body else {
            let mut f = f;
            let socket = self.socket.clone();
            let body = self.bytes()?;
            return f(&body).map_err(|source| ClientError::Io {
                what: "handling berthd's answer",
                socket,
                source,
            });
        };
        self.read_chunks(f)
    }

    fn read_chunks(
        &mut self,
        mut f: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), ClientError> {
        loop {
            let mut size = String::new();
            let n = (&mut self.reader)
                .take(64)
                .read_line(&mut size)
                .map_err(|e| self.err("reading berthd's answer", e))?;
            if n == 0 {
                return Ok(());
            }
            let len = size.trim().split(';').next().unwrap_or("");
            let len =
                usize::from_str_radix(len, 16).map_err(|_| Malformed::ChunkSize(size.clone()))?;
            if len == 0 {
                return Ok(());
            }
            let mut data = vec![0u8; len + 2];
            self.reader
                .read_exact(&mut data)
                .map_err(|e| self.err("reading berthd's answer", e))?;
            data.truncate(len);
            f(&data).map_err(|e| self.err("handling berthd's answer", e))?;
        }
    }

    fn err(&self, what: &'static str, source: io::Error) -> ClientError {
        ClientError::Io {
            what,
            socket: self.socket.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
