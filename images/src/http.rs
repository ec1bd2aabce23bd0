//! Fetching one document over HTTP(S) — a cloud-config by URL — with the
//! same client stack as pulls (reqwest on rustls), bounded in time and size.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("cannot start the HTTP client: {0}")]
    Runtime(std::io::Error),
}

/// GETs `url` (http or https), refusing answers over `limit` bytes.
pub fn get(url: &str, limit: usize, timeout: Duration) -> Result<Vec<u8>, HttpError> {
    let response = Request::get(url).limit(limit).timeout(timeout).send()?;
    if !(200..300).contains(&response.status) {
        return Err(HttpError::Status {
            url: url.to_string(),
            status: response.status,
        });
    }
    Ok(response.body)
}

/// The methods metadata services need: IMDSv2 takes its session token with
/// a PUT, Azure's ready report is a POST; everything else is a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    /// Azure's ready report to its wire server.
    Post,
}

/// One request: method, headers, and bounds on time and size.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    limit: usize,
    timeout: Duration,
    connect_timeout: Option<Duration>,
}

/// What the server answered, whatever the status: a metadata client tells
/// 404 (nothing there) from 401 (token expired) from 405 (no IMDSv2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Request {
    pub fn new(method: Method, url: &str) -> Request {
        Request {
            method,
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            limit: 4 << 20,
            timeout: Duration::from_secs(30),
            connect_timeout: None,
        }
    }

    pub fn get(url: &str) -> Request {
        Request::new(Method::Get, url)
    }

    pub fn put(url: &str) -> Request {
        Request::new(Method::Put, url)
    }

    pub fn post(url: &str) -> Request {
        Request::new(Method::Post, url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Answers longer than this are refused ([`HttpError::TooLarge`]).
    pub fn limit(mut self, limit: usize) -> Request {
        self.limit = limit;
        self
    }

    /// The whole exchange, connect to last byte.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// Connecting alone: a dead address fails fast while a slow answer may
    /// still take the whole [`Request::timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Request {
        self.connect_timeout = Some(timeout);
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the request; any HTTP status is an answer, only transport
    /// failures, timeouts and oversized bodies are errors.
    pub fn send(&self) -> Result<Response, HttpError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = self.url.as_str();
        let request = |reason: String| HttpError::Request {
            url: url.to_string(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HttpError::Runtime)?;
        runtime.block_on(async {
            // No proxy from the environment: a metadata service is link-local
            // and a proxy would see (and could answer for) it.
            let mut builder = reqwest::Client::builder().timeout(self.timeout).no_proxy();
            if let Some(t) = self.connect_timeout {
                builder = builder.connect_timeout(t);
            }
            if url.starts_with("http://") {
                // Plain HTTP needs no trust store; the host's own (berthd
                // probing a metadata service) may have none at all, and
                // the platform verifier refuses to build without one.
                builder = builder.tls_certs_only(Vec::new());
            }
            let client = builder.build().map_err(|e| request(chain(&e)))?;
            let mut req = match self.method {
                Method::Get => client.get(url),
                Method::Put => client.put(url),
                Method::Post => client.post(url),
            };
            if !self.body.is_empty() || self.method != Method::Get {
                req = req.body(self.body.clone());
            }
            for (name, value) in &self.headers {
                req = req.header(name, value);
            }
            let mut response = req.send().await.map_err(|e| request(chain(&e)))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let limit = self.limit;
            if response.content_length().is_some_and(|n| n > limit as u64) {
                return Err(HttpError::TooLarge {
                    url: url.to_string(),
                    limit,
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| request(chain(&e)))? {
                if body.len() + chunk.len() > limit {
                    return Err(HttpError::TooLarge {
                        url: url.to_string(),
                        limit,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                headers,
                body,
            })
        })
    }
}

/// reqwest's error with its causes: "error sending request" alone does not
/// say whether the connection was refused or timed out.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn serve_once(body: &'static str, status: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://{addr}/user-data")
    }

    #[test]
    fn gets_a_document_and_refuses_errors_and_huge_ones() {
        let url = serve_once("#cloud-config\nhostname: a\n", "200 OK");
        assert_eq!(
            get(&url, 1 << 20, Duration::from_secs(10)).expect("get"),
            b"#cloud-config\nhostname: a\n"
        );
        let url = serve_once("nope", "404 Not Found");
        assert!(matches!(
            get(&url, 1 << 20, Duration::from_secs(10)),
            Err(HttpError::Status { status: 404, .. })
        ));
        let url = serve_once("0123456789", "200 OK");
        assert!(matches!(
            get(&url, 5, Duration::from_secs(10)),
            Err(HttpError::TooLarge { .. })
        ));
    }

    #[test]
    fn put_with_headers_and_any_status_is_an_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).expect("read");
            let _ = write!(
                conn,
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase()
        });
        let response = Request::put(&format!("http://{addr}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
            .timeout(Duration::from_secs(10))
            .send()
            .expect("an answer");
        assert_eq!(response.status, 401);
        assert!(!response.is_success());
        let seen = server.join().expect("join");
        assert!(seen.starts_with("put /latest/api/token "), "{seen}");
        assert!(
            seen.contains("x-aws-ec2-metadata-token-ttl-seconds: 60"),
            "{seen}"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accepts and never answers.
        let _held = std::thread::spawn(move || {
            let conn = listener.accept();
            std::thread::sleep(Duration::from_secs(5));
            drop(conn);
        });
        let start = std::time::Instant::now();
        let err = Request::get(&format!("http://{addr}/"))
            .timeout(Duration::from_millis(300))
            .send()
            .expect_err("a timeout");
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(
            err.to_string().contains("timed out") || err.to_string().contains("timeout"),
            "{err}"
        );
    }
}
