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

/// What a signal sent to a process comes to, as its `/proc/PID/status` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalFate {
    /// The process has a handler for it.
    Caught,
    /// The process blocks it, to take it with sigwait or a signalfd: the
    /// kernel queues it, even for the init of a PID namespace.
    Blocked,
    /// It waits in the process's queue (blocked for now): it will get it.
    Pending,
    /// The process ignores it.
    Ignored,
    /// No handler, and the process is the init of its PID namespace: the
    /// kernel discards such a signal (only SIGKILL and SIGSTOP reach an init
    /// that has not asked for them), so one sent before the program has
    /// installed its handler is lost.
    Dropped,
    /// No handler, and not an init: the default action (for SIGTERM, death).
    Default,
    /// The process has exited (or is a zombie).
    Gone,
}

/// [`SignalFate`] of `signal` for the process `pid`.
pub fn signal_fate(pid: i32, signal: i32) -> SignalFate {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => signal_fate_in(&status, signal),
        Err(_) => SignalFate::Gone,
    }
}

/// [`SignalFate`] of `signal` from the text of a `/proc/PID/status`.
pub fn signal_fate_in(status: &str, signal: i32) -> SignalFate {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let has = |name: &str| {
        field(name)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .is_some_and(|mask| (1..=64).contains(&signal) && mask & (1u64 << (signal - 1)) != 0)
    };
    if field("State").is_none_or(|s| s.starts_with('Z') || s.starts_with('X')) {
        return SignalFate::Gone;
    }
    if has("SigPnd") || has("ShdPnd") {
        SignalFate::Pending
    } else if has("SigCgt") {
        SignalFate::Caught
    } else if has("SigBlk") {
        SignalFate::Blocked
    } else if has("SigIgn") {
        SignalFate::Ignored
    } else if field("NSpid").and_then(|ids| ids.split_whitespace().last()) == Some("1") {
        SignalFate::Dropped
    } else {
        SignalFate::Default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tchronyd\nState:\tS (sleeping)\nNSpid:\t166\t1\n\
        SigQ:\t0/3803\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
        SigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000000000\n";

    fn with(field: &str, value: &str) -> String {
        STATUS
            .lines()
            .map(|l| match l.split_once(':') {
                Some((name, _)) if name == field => format!("{field}:\t{value}"),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// chronyd a moment after its exec: the init of its namespace, no
    /// handler yet, so a SIGTERM now is lost; once its handler is in, caught.
    #[test]
    fn a_namespace_init_drops_a_signal_it_has_no_handler_for() {
        let term = libc::SIGTERM;
        assert_eq!(signal_fate_in(STATUS, term), SignalFate::Dropped);
        // SIGTERM is bit 15: 0x4000.
        assert_eq!(
            signal_fate_in(&with("SigCgt", "0000000000004000"), term),
            SignalFate::Caught
        );
        assert_eq!(
            signal_fate_in(&with("SigIgn", "0000000000004000"), term),
            SignalFate::Ignored
        );
        assert_eq!(
            signal_fate_in(&with("ShdPnd", "0000000000004000"), term),
            SignalFate::Pending
        );
        assert_eq!(
            signal_fate_in(&with("SigPnd", "0000000000004000"), term),
            SignalFate::Pending
        );
        // A namespace's init that takes SIGTERM with sigwait or a signalfd.
        assert_eq!(
            signal_fate_in(&with("SigBlk", "0000000000004000"), term),
            SignalFate::Blocked
        );
        // SIGPIPE (13, 0x1000) is ignored in STATUS.
        assert_eq!(signal_fate_in(STATUS, libc::SIGPIPE), SignalFate::Ignored);
        // Not an init (pid: host, or a process below the init).
        assert_eq!(
            signal_fate_in(&with("NSpid", "166\t12"), term),
            SignalFate::Default
        );
        assert_eq!(
            signal_fate_in(&with("NSpid", "166"), term),
            SignalFate::Default
        );
        assert_eq!(
            signal_fate_in(&with("State", "Z (zombie)"), term),
            SignalFate::Gone
        );
        assert_eq!(signal_fate_in("", term), SignalFate::Gone);
    }

    #[test]
    fn this_process_and_a_missing_one() {
        assert_eq!(signal_fate(i32::MAX, libc::SIGTERM), SignalFate::Gone);
        let own = signal_fate(std::process::id() as i32, libc::SIGKILL);
        assert!(
            matches!(own, SignalFate::Default | SignalFate::Dropped),
            "{own:?}"
        );
    }
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
