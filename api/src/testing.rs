//! For tests of the API's clients (this crate's and PID 1's): a berthd that
//! answers one connection with fixed bytes.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread::JoinHandle;

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
