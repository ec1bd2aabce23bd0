use super::*;
use std::os::unix::net::UnixListener;

/// A berthd that answers one connection with `reply` and hands back the request.
fn serve(reply: &'static [u8]) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("berth.sock");
    let t = crate::testing::answer_once(&sock, reply).expect("listen");
    (dir, sock, t)
}

#[test]
fn reads_a_json_answer() {
    let (_d, sock, t) = serve(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 31\r\n\r\n{\"version\": \"1.0\", \"api\": \"v1\"}",
    );
    let v = Client::new(&sock).version().expect("version");
    assert_eq!(v.api, "v1");
    let req = t.join().expect("server");
    assert!(req.starts_with("GET /v1/version HTTP/1.1\r\n"), "{req}");
}

#[test]
fn error_answers_carry_berthds_message_and_findings() {
    let (_d, sock, t) = serve(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 62\r\n\r\n{\"error\": \"the config is invalid\", \"findings\": [\"a.yml:3: x\"]}",
    );
    let e = Client::new(&sock).reload().expect_err("400");
    assert_eq!(e.status(), Some(400));
    assert_eq!(e.to_string(), "the config is invalid\n  a.yml:3: x");
    assert!(t
        .join()
        .expect("server")
        .starts_with("POST /v1/config/reload "));
}

#[test]
fn chunked_bodies_are_read_piece_by_piece() {
    let (_d, sock, _t) = serve(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello\n\r\n6\r\nworld\n\r\n0\r\n\r\n",
    );
    let mut pieces = Vec::new();
    Client::new(&sock)
        .logs(
            "ntp",
            &LogQuery {
                follow: true,
                ..Default::default()
            },
        )
        .expect("logs")
        .chunks(|c| {
            pieces.push(String::from_utf8_lossy(c).into_owned());
            Ok(())
        })
        .expect("chunks");
    assert_eq!(pieces, ["hello\n", "world\n"]);
}

#[test]
fn a_missing_berthd_is_named_with_a_hint() {
    let e = Client::new("/nonexistent/berth.sock")
        .services()
        .expect_err("nothing there");
    assert_eq!(
        e.to_string(),
        "cannot reach berthd at /nonexistent/berth.sock: is berthd running?"
    );
}

#[test]
fn a_silent_berthd_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("berth.sock");
    let _listener = UnixListener::bind(&sock).expect("bind");
    let started = std::time::Instant::now();
    let e = Client::new(&sock)
        .with_timeouts(Timeouts {
            connect: Duration::from_millis(200),
            read: Some(Duration::from_millis(200)),
            write: Some(Duration::from_millis(200)),
        })
        .services()
        .expect_err("no answer");
    assert!(matches!(e, ClientError::Io { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn not_http_is_an_error_that_shows_what_came() {
    let (_d, sock, _t) = serve(b"SSH-2.0-dropbear\r\n\r\n");
    let e = Client::new(&sock).services().expect_err("not http");
    assert!(matches!(e, ClientError::Malformed(_)), "{e}");
    assert!(e.to_string().contains("SSH-2.0"), "{e}");
}

#[test]
fn escapes_what_matters_in_a_path() {
    assert_eq!(escape("2026-11-23 08:40"), "2026-11-23%2008:40");
    assert_eq!(escape("a/b"), "a%2Fb");
}
