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
    let _ = rustls::crypto::ring::default_provider().install_default();
    let request = |reason: String| HttpError::Request {
        url: url.to_string(),
        reason,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HttpError::Runtime)?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| request(e.to_string()))?;
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| request(e.to_string()))?;
        if !response.status().is_success() {
            return Err(HttpError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| request(e.to_string()))? {
            if body.len() + chunk.len() > limit {
                return Err(HttpError::TooLarge {
                    url: url.to_string(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    })
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
}
