//! Watching directories for entries that appear, are written, change or go
//! (inotify): how a waiter learns at once that a file it waits for is there,
//! instead of looking again and again. The events themselves are dropped:
//! the waiter looks at what it waits for, and a watch only says when.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use crate::check;

/// An inotify descriptor watching some directories; non-blocking.
#[derive(Debug)]
pub struct DirWatch(OwnedFd);

impl DirWatch {
    /// A watch of no directory yet ([`DirWatch::add`]).
    pub fn new() -> io::Result<DirWatch> {
        // SAFETY: inotify_init1 takes flags only; the descriptor it returns is
        // owned by the DirWatch from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        check(fd)?;
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(DirWatch(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `dir` for entries made, moved in or out, written, changed in
    /// their attributes or removed.
    pub fn add(&self, dir: &Path) -> io::Result<()> {
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
        let events = libc::IN_CREATE
            | libc::IN_MOVED_TO
            | libc::IN_CLOSE_WRITE
            | libc::IN_ATTRIB
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM;
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        check(unsafe { libc::inotify_add_watch(self.0.as_raw_fd(), path.as_ptr(), events) })
    }

    /// Drops the events that have come; whether there were any.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: read(2) into a local buffer of the length given.
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return any;
            }
            any = true;
        }
    }

    /// Waits up to `timeout` (for ever with `None`) for a change; whether one
    /// came (its events dropped). An interrupted wait counts as none.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        let mut fd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd that lives for the call.
        let n = unsafe { libc::poll(&mut fd, 1, ms) };
        n > 0 && self.drain()
    }
}

impl AsFd for DirWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_made_or_removed_wakes_the_watch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watch = DirWatch::new().expect("inotify");
        watch.add(dir.path()).expect("watch");
        assert!(!watch.wait(Some(Duration::from_millis(10))), "nothing yet");
        std::fs::write(dir.path().join("ready"), "").expect("write");
        assert!(watch.wait(Some(Duration::from_secs(5))));
        assert!(!watch.drain(), "the events were dropped");
        std::fs::remove_file(dir.path().join("ready")).expect("remove");
        assert!(watch.wait(Some(Duration::from_secs(5))));
        assert!(
            watch.add(&dir.path().join("missing")).is_err(),
            "a missing directory is an error"
        );
    }
}
