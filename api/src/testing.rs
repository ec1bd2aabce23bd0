//! For tests of the API's clients (this crate's and PID 1's): a berthd that
//! answers one connection with fixed bytes, and a service as berthd lists it.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread::JoinHandle;

use crate::types::{Phase, ServiceStatus};

/// Listens on `socket`, answers the first connection with `reply`, and hands
/// back (from the thread) what the client sent, as text.
pub fn answer_once(socket: &Path, reply: &'static [u8]) -> std::io::Result<JoinHandle<String>> {
    let listener = UnixListener::bind(socket)?;
    Ok(std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return String::new();
        };
        let mut req = [0u8; 512];
        let n = s.read(&mut req).unwrap_or(0);
        let _ = s.write_all(reply);
        String::from_utf8_lossy(&req[..n]).into_owned()
    }))
}

/// A service as berthd lists it: `name`, `state`, ready or not, why not
/// (the rest as for a service that has no pid, no healthcheck and never
/// restarted).
pub fn service_status(name: &str, state: Phase, ready: bool, error: Option<&str>) -> ServiceStatus {
    ServiceStatus {
        name: name.into(),
        image: None,
        state,
        health: None,
        ready,
        pid: None,
        restarts: 0,
        uptime: None,
        exit_code: None,
        error: error.map(String::from),
        oneshot: false,
        restart: "no".into(),
        adopted: false,
        after_ready: false,
    }
}
