//! The hardware watchdog (`/dev/watchdog`: i6300esb in QEMU, iTCO on PCs):
//! once opened it resets the machine unless it is fed, so a system that
//! hangs — PID 1 included — comes back by itself, and a trial boot that
//! hangs falls back to the committed slot (see `berth_iso::slots`).
//!
//! A trial boot opens it in stage 1, before anything of the new OS image
//! runs, and hands it to stage 2's loop (the same process, after the switch
//! to the new root); other boots open it in
//! stage 2, so a slow stage 1 (a disk that takes long to appear) never resets
//! a machine that is only slow. PID 1's loop feeds it while PID 1 lives.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What stage 1 hands to stage 2.
static HANDED_OVER: Mutex<Option<Watchdog>> = Mutex::new(None);
/// How long the machine may go unfed before it resets.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// How often PID 1 feeds it.
pub const INTERVAL: Duration = Duration::from_secs(10);

// <linux/watchdog.h>: _IOWR('W', 6, int) and _IOR('W', 7, int).
// (`as`: glibc's ioctl takes an unsigned long, musl's an int.)
const WDIOC_SETTIMEOUT: libc::Ioctl = 0xC004_5706_u32 as libc::Ioctl;
const WDIOC_GETTIMEOUT: libc::Ioctl = 0x8004_5707_u32 as libc::Ioctl;

#[derive(Debug)]
pub struct Watchdog {
    fd: OwnedFd,
    next_feed: Instant,
}

impl Watchdog {
    /// Opens `node` (if the device is there) and sets its timeout. No child
    /// inherits the descriptor: a device held open elsewhere would outlive
    /// PID 1's feeding.
    pub fn open(node: &Path) -> io::Result<Watchdog> {
        let path = std::ffi::CString::new(node.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `path` is a valid NUL-terminated string; the result is checked.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut secs = TIMEOUT.as_secs() as libc::c_int;
        // SAFETY: the ioctl reads and writes one int at a valid pointer.
        if unsafe { libc::ioctl(fd.as_raw_fd(), WDIOC_SETTIMEOUT, &mut secs) } < 0 {
            log::warn!(
                "watchdog {}: cannot set a {}s timeout: {}",
                node.display(),
                TIMEOUT.as_secs(),
                io::Error::last_os_error()
            );
        }
        let mut dog = Watchdog {
            fd,
            next_feed: Instant::now(),
        };
        dog.feed(Instant::now());
        Ok(dog)
    }

    /// Takes over what stage 1 handed over, fed at once.
    pub fn take_handed_over() -> Option<Watchdog> {
        let mut dog = HANDED_OVER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        let now = Instant::now();
        dog.next_feed = now;
        dog.feed(now);
        Some(dog)
    }

    /// Keeps it open for stage 2's loop, which takes it over with
    /// [`Watchdog::take_handed_over`].
    pub fn hand_over(self) {
        *HANDED_OVER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(self);
    }

    /// The timeout the device runs with, for the log.
    pub fn timeout(&self) -> Option<Duration> {
        let mut secs: libc::c_int = 0;
        // SAFETY: the ioctl writes one int at a valid pointer.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), WDIOC_GETTIMEOUT, &mut secs) };
        (r >= 0 && secs > 0).then(|| Duration::from_secs(secs as u64))
    }

    /// Feeds it when it is due.
    pub fn feed(&mut self, now: Instant) {
        if now < self.next_feed {
            return;
        }
        // Any byte but 'V' is a keepalive.
        let keepalive = [0u8; 1];
        // SAFETY: writes one byte from a valid buffer.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), keepalive.as_ptr().cast(), 1) };
        if n < 0 {
            log::warn!("watchdog: {}", io::Error::last_os_error());
        }
        self.next_feed = now + INTERVAL;
    }

    /// When it is due next.
    pub fn due(&self) -> Instant {
        self.next_feed
    }

    /// Stops it (the "magic close"), for a person at an emergency shell.
    pub fn disarm(self) {
        // SAFETY: writes one byte from a valid buffer.
        unsafe { libc::write(self.fd.as_raw_fd(), b"V".as_ptr().cast(), 1) };
    }
}

/// Opens the machine's watchdog if it has one, saying so.
pub fn open_present(root: &Path) -> Option<Watchdog> {
    let node = root.join("dev/watchdog");
    if !node.exists() {
        log::debug!("no hardware watchdog");
        return None;
    }
    match Watchdog::open(&node) {
        Ok(dog) => {
            let secs = dog.timeout().unwrap_or(TIMEOUT).as_secs();
            log::info!("hardware watchdog armed: the machine resets if PID 1 stops for {secs}s");
            Some(dog)
        }
        Err(e) => {
            log::warn!("watchdog {}: {e}", node.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file stands in for the device: each feed is one byte written to it.
    #[test]
    fn stage_2_takes_over_what_stage_1_handed_over_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("watchdog");
        std::fs::write(&node, b"").expect("write");
        let dog = Watchdog::open(&node).expect("open");
        assert_eq!(std::fs::read(&node).expect("read"), [0]);
        // SAFETY: F_GETFD on a descriptor this test owns.
        let flags = unsafe { libc::fcntl(dog.fd.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        dog.hand_over();
        let taken = Watchdog::take_handed_over().expect("handed over");
        assert_eq!(
            std::fs::read(&node).expect("read"),
            [0, 0],
            "fed when taken"
        );
        assert!(Watchdog::take_handed_over().is_none());
        drop(taken);
    }
}
