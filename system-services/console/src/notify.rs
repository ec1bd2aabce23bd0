//! The readiness message of systemd's notify protocol, which Debian's sshd
//! sends: once it listens, it writes `READY=1` to the datagram socket named by
//! `$NOTIFY_SOCKET`. console-init binds that socket with `O_ASYNC`, so the
//! message raises SIGIO and wakes the supervisor's loop at once, instead of
//! at its next tick. Whether the server listens is still read from the socket
//! table ([`crate::listening`]): the message only says when to look, and a
//! server that never sends one (Dropbear) is found by the tick.

use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// The socket, relative to the console's root: in the container's own /run.
pub const NOTIFY_SOCKET: &str = "run/berth-console.notify";

/// The environment variable that names the socket to a server.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// SIGIO's default action would end the process: ignored, a SIGIO that is
/// not blocked is dropped, and one that is blocked (as the supervisor blocks
/// it) is kept for `sigtimedwait`. Call before any descriptor raises it.
pub fn ignore_sigio() -> io::Result<()> {
    // SAFETY: SIG_IGN for SIGIO installs no handler code; the previous
    // disposition is not needed.
    if unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A bound notify socket; the file is removed on drop.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds `path` (replacing a socket a previous run left) and has every
    /// datagram raise SIGIO in this process ([`ignore_sigio`] first).
    pub fn bind(path: &Path) -> io::Result<Self> {
        ignore_sigio()?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let socket = UnixDatagram::bind(path)?;
        socket.set_nonblocking(true)?;
        let fd = socket.as_raw_fd();
        // SAFETY: fcntl on a descriptor this function owns; F_SETOWN takes a
        // pid and F_GETFL/F_SETFL a flag word, no memory is passed.
        unsafe {
            if libc::fcntl(fd, libc::F_SETOWN, libc::getpid()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(NotifySocket {
            socket,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every datagram waiting; whether one of them said `READY=1`.
    pub fn drain(&self) -> bool {
        let mut ready = false;
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            ready |= says_ready(&buf[..n]);
        }
        ready
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a notify message (newline-separated `KEY=VALUE` lines) holds
/// `READY=1`.
pub fn says_ready(message: &[u8]) -> bool {
    message
        .split(|&b| b == b'\n')
        .any(|line| line == b"READY=1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_one_line_of_the_message() {
        assert!(says_ready(b"READY=1"));
        assert!(says_ready(b"STATUS=listening\nREADY=1\n"));
        assert!(!says_ready(b"READY=0"));
        assert!(!says_ready(b"STATUS=READY=1"));
        assert!(!says_ready(b""));
    }

    #[test]
    fn a_datagram_is_read_once_and_the_socket_file_goes_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/notify");
        // A socket file a previous run left is replaced.
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        drop(UnixDatagram::bind(&path).expect("stale socket"));
        let socket = NotifySocket::bind(&path).expect("bind");
        assert!(!socket.drain());
        let sender = UnixDatagram::unbound().expect("sender");
        sender.send_to(b"STATUS=x", &path).expect("send");
        sender.send_to(b"READY=1\n", &path).expect("send");
        assert!(socket.drain());
        assert!(!socket.drain(), "read twice");
        drop(socket);
        assert!(!path.exists());
    }
}
