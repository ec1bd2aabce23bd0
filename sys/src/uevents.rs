//! Kernel uevents: a datagram each time a device is added, removed or
//! changed. Berth has no udev, so the two that need them read them
//! themselves: berthd (the `/dev` of privileged services) and console-init
//! (the console's device nodes and `/dev/disk` links).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::check;

/// A socket on the kernel's own uevents.
#[derive(Debug)]
pub struct Uevents {
    socket: OwnedFd,
}

impl Uevents {
    /// Group 1: the kernel's own messages (there is no udev to relay them).
    pub fn open() -> io::Result<Uevents> {
        // SAFETY: socket(2) takes constants only; the descriptor it returns is
        // owned by the Uevents from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_KOBJECT_UEVENT,
            )
        };
        check(fd)?;
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid start.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = 1;
        // SAFETY: bind(2) reads `addr`, whose size is passed with it.
        check(unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        Ok(Uevents { socket })
    }

    /// Makes [`Uevents::wait`] give up after `timeout`.
    pub fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX as _),
            tv_usec: timeout.subsec_micros().into(),
        };
        // SAFETY: setsockopt(2) reads `tv`, whose size is passed with it.
        check(unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })
    }

    /// Has each uevent raise SIGIO in this process (`O_ASYNC`), for a loop
    /// that waits for signals. SIGIO's default action ends the process: the
    /// caller must block or ignore it first.
    pub fn signal_arrivals(&self) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        // SAFETY: fcntl on a descriptor this socket owns; F_SETOWN takes a
        // pid and F_GETFL/F_SETFL a flag word, no memory is passed.
        unsafe {
            check(libc::fcntl(fd, libc::F_SETOWN, libc::getpid()))?;
            let flags = libc::fcntl(fd, libc::F_GETFL);
            check(flags)?;
            check(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC))
        }
    }

    /// Waits up to the timeout ([`Uevents::set_timeout`]; for ever without
    /// one) for uevents; whether one of those that came names a device node.
    /// Reads whatever else is queued too, so a burst of events (a disk and
    /// its partitions) is one wake-up.
    pub fn wait(&self) -> bool {
        self.read(0)
    }

    /// Reads the uevents that have come, without waiting; whether one of
    /// them names a device node.
    pub fn drain(&self) -> bool {
        self.read(libc::MSG_DONTWAIT)
    }

    fn read(&self, first_flags: libc::c_int) -> bool {
        let mut buf = vec![0u8; 8192];
        let mut names_a_node = false;
        let mut flags = first_flags;
        loop {
            // SAFETY: recv(2) into a buffer of the length given.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    flags,
                )
            };
            if let Ok(n) = usize::try_from(n) {
                names_a_node |= buf[..n]
                    .split(|b| *b == 0)
                    .any(|field| field.starts_with(b"DEVNAME="));
                flags = libc::MSG_DONTWAIT;
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                // The kernel dropped messages; a rescan sees what they said.
                Some(libc::ENOBUFS) => names_a_node = true,
                // The timeout, or nothing more queued.
                Some(libc::EAGAIN) => return names_a_node,
                // Not expected of a netlink socket; the caller rescans, and
                // the pause keeps a socket that fails at once from spinning.
                _ => {
                    std::thread::sleep(Duration::from_secs(1));
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic "change" uevent of /dev/zero (root may ask the kernel for
    /// one through sysfs) names a node, whether waited for or drained.
    #[test]
    fn a_device_change_names_a_node() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            berth_testkit::skip!("needs root (a synthetic uevent through sysfs)");
            return;
        }
        let uevents = Uevents::open().expect("uevent socket");
        uevents
            .set_timeout(Duration::from_secs(10))
            .expect("timeout");
        let trigger = || std::fs::write("/sys/class/mem/zero/uevent", "change").expect("trigger");
        trigger();
        assert!(uevents.wait(), "the change of /dev/zero names its node");
        trigger();
        std::thread::sleep(Duration::from_millis(200));
        assert!(uevents.drain(), "queued, read without waiting");
    }
}
