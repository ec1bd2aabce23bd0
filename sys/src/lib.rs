//! What PID 1, berthd, the CLI and the installer share with the kernel, in
//! one place so that berthd does not depend on PID 1's crate:
//!
//! - [`modules`] — `modules.dep`, aliases and finit_module (berth acts as modprobe),
//! - [`probe`] — block devices by `LABEL=`/`UUID=`,
//! - [`gpt`] — partition tables,
//! - [`atomic`] — the one atomic file writer,
//! - [`random`] — getrandom,
//! - [`time`] — the one RFC 3339 date and time,
//! - [`power`] — asking PID 1 to reboot or power off,
//! - [`process`] — what a child needs between fork and exec,
//! - [`watch`] — directories watched with inotify, to wait for a file without polling,
//! - [`uevents`] — the kernel's device events (there is no udev).

pub mod alloc;
pub mod atomic;
pub mod gpt;
pub mod modules;
pub mod power;
pub mod probe;
pub mod process;
pub mod random;
pub mod time;
pub mod uevents;
pub mod watch;

/// A libc return value as a `Result`: negative is the thread's errno.
pub(crate) fn check(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
