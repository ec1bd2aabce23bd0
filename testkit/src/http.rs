//! A small HTTP/1.1 server on 127.0.0.1 for tests that play a cloud's
//! metadata service: one request per connection (what QEMU's `guestfwd`
//! relay carries, and what the datasource clients send), answered by the
//! test's handler, every request kept so the test can check the protocol
//! the client spoke (IMDSv2 tokens, GCE's flavor header, Azure's report).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

/// A request body larger than this is cut here: the tests' requests are
/// small, and a client gone wrong should not fill the test's memory.
pub const MAX_BODY: usize = 1 << 20;

/// One request as the server saw it (header names lowercased).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Status, extra headers, body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

type Handler = dyn Fn(&Seen) -> Answer + Send + Sync;

/// A running server; it serves until the test process ends.
#[derive(Clone)]
pub struct Server {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("port", &self.port).finish()
    }
}

impl Server {
    /// Starts serving on a free port of 127.0.0.1, each connection on a
    /// thread of its own (a client may hold one open while it asks again).
    pub fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                std::thread::spawn(move || answer(conn, &*handler, &log));
            }
        });
        Ok(Server { port, seen })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far, in the order they were read.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn answer(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Seen>>) {
    let Ok(clone) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() || first.is_empty() {
        return;
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).is_err() || l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(MAX_BODY)];
    let _ = reader.read_exact(&mut body);
    let seen = Seen {
        method,
        path,
        headers,
        body,
    };
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(seen.clone());
    let (status, extra, body) = handler(&seen);
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = conn;
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
}

/// 200 with `body`.
pub fn ok(body: impl Into<Vec<u8>>) -> Answer {
    (200, Vec::new(), body.into())
}

/// 404 with a short body.
pub fn not_found() -> Answer {
    (404, Vec::new(), b"not found".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request with a body and headers, as the clients send them: the
    /// handler sees it whole, and the client reads the status, the extra
    /// header and the body back.
    #[test]
    fn answers_and_remembers_a_request() {
        let server = Server::start(|req| {
            if req.method == "POST" && req.path == "/report" {
                let mut body = b"got ".to_vec();
                body.extend_from_slice(&req.body);
                (201, vec![("x-echo".into(), "yes".into())], body)
            } else {
                not_found()
            }
        })
        .expect("start");
        let mut conn = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        conn.write_all(
            b"POST /report HTTP/1.1\r\nHost: x\r\nX-Flavor: Test\r\nContent-Length: 5\r\n\r\nhello",
        )
        .expect("send");
        let mut reply = String::new();
        conn.read_to_string(&mut reply).expect("read");
        assert!(reply.starts_with("HTTP/1.1 201 "), "{reply}");
        assert!(reply.contains("x-echo: yes\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\ngot hello"), "{reply}");
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].headers.get("x-flavor").map(String::as_str),
            Some("Test")
        );
        assert_eq!(seen[0].body, b"hello");
        assert_eq!(server.url(), format!("http://127.0.0.1:{}", server.port));
    }
}
