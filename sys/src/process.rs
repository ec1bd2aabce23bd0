//! Process set-up shared by PID 1 and berthd.

use std::io;

use crate::check;

/// Unblocks every signal; for a child between fork and exec
/// (`CommandExt::pre_exec`). A blocked mask survives exec, and std's
/// `Command` does not reset it: a program started from a thread that blocks
/// SIGTERM (PID 1 for its signalfd, berthd for sigwait) would start with
/// SIGTERM blocked, and a service that handles SIGTERM (netconf, chronyd)
/// would never see it and be killed after its grace period.
pub fn reset_signal_mask() -> io::Result<()> {
    // SAFETY: sigemptyset and sigprocmask are async-signal-safe and only touch
    // `none`, a local.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &none,
            std::ptr::null_mut(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    /// A child started from a thread that blocks SIGTERM inherits the block
    /// through std's `Command` (so every service did, from PID 1); with
    /// `reset_signal_mask` it starts with nothing blocked.
    #[test]
    fn a_child_starts_with_no_signal_blocked() {
        let blocked = |reset: bool| -> u64 {
            // Its own thread: the mask is per thread and fork copies the caller's.
            std::thread::spawn(move || {
                // SAFETY: blocks SIGTERM in this thread only, on a local set.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGTERM);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                }
                let mut cmd = Command::new("grep");
                cmd.args(["SigBlk:", "/proc/self/status"]);
                if reset {
                    // SAFETY: async-signal-safe (see reset_signal_mask).
                    unsafe {
                        cmd.pre_exec(reset_signal_mask);
                    }
                }
                let out = cmd.output().expect("grep");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let hex = text.trim().trim_start_matches("SigBlk:").trim().to_string();
                u64::from_str_radix(&hex, 16).expect("SigBlk")
            })
            .join()
            .expect("thread")
        };
        let sigterm = 1u64 << (libc::SIGTERM - 1);
        assert_ne!(blocked(false) & sigterm, 0, "std's Command keeps the mask");
        assert_eq!(blocked(true), 0);
    }
}
