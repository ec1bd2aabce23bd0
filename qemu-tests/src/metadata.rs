//! A cloud metadata service emulated on the host for a VM: an HTTP/1.1
//! server on 127.0.0.1 (one request per connection, as QEMU's `guestfwd`
//! relay carries one connection at a time) answering with a test's handler,
//! and keeping every request it saw so a test can check the protocol
//! (IMDSv2 tokens, GCE's flavor header) the guest spoke.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::{io_err, Result};

/// One request as the server saw it (header names lowercased).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

/// Status, extra headers, body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

type Handler = dyn Fn(&Seen) -> Answer + Send + Sync;

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
    /// Starts serving on 127.0.0.1 (a free port) for the rest of the test.
    pub fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Result<Server> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(io_err(Path::new("127.0.0.1:0")))?;
        let port = listener
            .local_addr()
            .map_err(io_err(Path::new("127.0.0.1:0")))?
            .port();
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

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn answer(conn: std::net::TcpStream, handler: &Handler, log: &Mutex<Vec<Seen>>) {
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
    let mut body = vec![0u8; len.min(1 << 20)];
    let _ = reader.read_exact(&mut body);
    let seen = Seen {
        method,
        path,
        headers,
    };
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

pub fn not_found() -> Answer {
    (404, Vec::new(), b"not found".to_vec())
}

/// EC2's instance metadata service, IMDSv2 only: tokens from
/// `PUT /latest/api/token` (which must carry a TTL header), and every GET
/// without a token it handed out refused with 401. The instance is
/// `i-0berth0000000001`, `ip-10-0-0-7.ec2.internal`, with `key` as its one
/// SSH key and `user_data` as its user-data.
pub fn imds_v2(key: String, user_data: Vec<u8>) -> Result<Server> {
    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    Server::start(move |req| -> Answer {
        let mut tokens = tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if req.method == "PUT" && req.path == "/latest/api/token" {
            if !req
                .headers
                .contains_key("x-aws-ec2-metadata-token-ttl-seconds")
            {
                return (400, Vec::new(), b"missing ttl".to_vec());
            }
            let t = format!("AQAEAtoken{}", tokens.len());
            tokens.push(t.clone());
            return ok(t);
        }
        let valid = req
            .headers
            .get("x-aws-ec2-metadata-token")
            .is_some_and(|t| tokens.contains(t));
        if !valid {
            return (401, Vec::new(), Vec::new());
        }
        match req.path.as_str() {
            "/latest/meta-data/instance-id" => ok("i-0berth0000000001"),
            "/latest/meta-data/local-hostname" => ok("ip-10-0-0-7.ec2.internal"),
            "/latest/meta-data/public-keys/" => ok("0=berth-test"),
            "/latest/meta-data/public-keys/0/openssh-key" => ok(format!("{key}\n")),
            "/latest/user-data" => ok(user_data.clone()),
            _ => not_found(),
        }
    })
}

/// The time from berthd's start to its config being loaded (datasource
/// probe included), from the line berthd logs:
/// `datasources: config loaded N ms after berthd started`.
pub fn config_loaded_ms(ssh: &crate::ssh::Ssh) -> Result<u64> {
    let text = ssh.check("sudo berth logs berthd | grep 'datasources: config loaded'")?;
    text.lines()
        .last()
        .and_then(|l| {
            l.split("config loaded ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| crate::Error::Io {
            path: "berth logs berthd".into(),
            source: std::io::Error::other(format!("no `config loaded N ms` line in: {text}")),
        })
}
