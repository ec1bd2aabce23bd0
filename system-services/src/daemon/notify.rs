//! Tells PID 1 when a service's phase, readiness or error changes, so the
//! ready line follows the last service's readiness at once rather than at
//! PID 1's next poll of the API.
//!
//! PID 1 starts berthd with the write end of a pipe, its number in
//! [`NOTIFY_FD_ENV`] (like systemd's `NOTIFY_SOCKET`, but a byte says only
//! "ask again": what changed is in the API). PID 1 still polls, slowly, so a
//! byte that is never written only delays its line.

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use berth_api::{Phase, NOTIFY_FD_ENV};

use crate::supervisor::{Snapshot, Supervisor};

/// The write end PID 1 gave berthd.
#[derive(Debug)]
pub struct Notifier {
    fd: OwnedFd,
}

impl Notifier {
    /// Takes the pipe named by [`NOTIFY_FD_ENV`], if PID 1 gave one. The
    /// variable is checked before the descriptor is trusted: it must name an
    /// open pipe (a variable left over in a shell that runs `berth daemon`
    /// must not make berthd write into whatever that number is).
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var(NOTIFY_FD_ENV).ok()?;
        let Some(fd) = value.parse::<RawFd>().ok().filter(|fd| *fd > 2) else {
            log::warn!("{NOTIFY_FD_ENV}={value}: not a descriptor number; PID 1 will not be told of changes");
            return None;
        };
        if !is_pipe(fd) {
            log::warn!("{NOTIFY_FD_ENV}={fd}: not an open pipe; PID 1 will not be told of changes");
            return None;
        }
        // SAFETY: `fd` is open (fstat succeeded on it) and is a pipe PID 1
        // handed over to this process alone; nothing else in berthd owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // PID 1 cleared close-on-exec so the descriptor survived into
        // berthd; nothing berthd starts should hold it.
        if let Err(e) = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC) {
            log::warn!("{NOTIFY_FD_ENV}: cannot set close-on-exec: {e}");
        }
        Some(Notifier { fd })
    }

    /// One byte. The pipe is non-blocking: when it is full, PID 1 has bytes
    /// it has not read yet and will ask anyway, so a full pipe is no loss.
    pub fn poke(&self) {
        match rustix::io::write(self.fd.as_fd(), b"!") {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => log::debug!("telling PID 1 of a change: {e}"),
        }
    }

    /// Pokes once now (the API answers from here on), then after every
    /// change PID 1's readiness check looks at, until the manager finishes.
    pub fn spawn(self, supervisor: Arc<Supervisor>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("notify-pid1".into())
            .spawn(move || {
                self.poke();
                loop {
                    let seen = phases(&supervisor.snapshot());
                    let changed = supervisor.wait_for(Duration::from_secs(3600), |s| {
                        s.finished || phases(s) != seen
                    });
                    if supervisor.snapshot().finished {
                        return;
                    }
                    if changed {
                        self.poke();
                    }
                }
            })
            .map(|_| ())
    }
}

/// What PID 1's readiness check reads of each service (see `settled` in
/// init's supervisor): a change in anything else (uptime, a pid) is no news.
fn phases(snapshot: &Snapshot) -> Vec<(String, Phase, bool, bool)> {
    snapshot
        .services
        .iter()
        .map(|s| (s.name.clone(), s.state, s.ready, s.error.is_some()))
        .collect()
}

fn is_pipe(fd: RawFd) -> bool {
    // SAFETY: `fd` is only borrowed for the fstat; the caller checked it is
    // not a standard stream, and fstat on a closed number fails harmlessly.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::fs::fstat(borrowed)
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::ServiceStatus;

    fn status(name: &str, state: Phase, ready: bool) -> ServiceStatus {
        let mut s = berth_api::testing::service_status(name, state, ready, None);
        s.pid = Some(10);
        s.uptime = Some(1.0);
        s
    }

    fn snapshot(services: Vec<ServiceStatus>) -> Snapshot {
        Snapshot {
            services,
            ..Snapshot::default()
        }
    }

    #[test]
    fn only_what_the_readiness_check_reads_is_news() {
        let before = snapshot(vec![status("console", Phase::Running, false)]);
        let mut later = before.clone();
        later.services[0].uptime = Some(2.0);
        later.services[0].pid = Some(11);
        assert_eq!(phases(&before), phases(&later));
        let mut ready = before.clone();
        ready.services[0].ready = true;
        assert_ne!(phases(&before), phases(&ready));
        let mut blocked = before.clone();
        blocked.services[0].state = Phase::Waiting;
        blocked.services[0].error = Some("needs network".into());
        assert_ne!(phases(&before), phases(&blocked));
    }

    #[test]
    fn a_poke_is_one_byte_and_a_full_pipe_is_no_error() {
        let (read, write) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).expect("pipe");
        assert!(is_pipe(std::os::fd::AsRawFd::as_raw_fd(&write)));
        let notifier = Notifier { fd: write };
        notifier.poke();
        let mut buf = [0u8; 8];
        assert_eq!(rustix::io::read(&read, &mut buf).expect("read"), 1);
        // Fill the pipe: the pokes that do not fit are dropped, not errors.
        for _ in 0..70_000 {
            notifier.poke();
        }
    }
}
