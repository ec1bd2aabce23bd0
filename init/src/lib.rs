//! Berth's PID 1.
//!
//! Stage 1 runs from the initramfs: it mounts the API filesystems, loads the
//! modules needed to reach the root, finds the OS image (the ISO labelled
//! `BERTH_ISO` or an installed slot) and the state partition, assembles the
//! real root and switches to it. Stage 2 follows in the same process on the
//! real root (or is the root's `berth` run as init without an initramfs): a
//! single-threaded loop that reaps orphans, keeps berthd running and
//! shuts the machine down in order.
//!
//! PID 1 must never exit (the kernel panics) and the release build aborts on
//! panic, so every stage returns its errors, and any error ends in
//! [`supervisor::emergency`]: the reason on the console and a shell.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

pub mod console;
// Shared with berthd and the CLI; re-exported so PID 1's stages keep their paths.
pub use berth_sys::{gpt, probe};
pub mod input;
pub mod installed;
pub mod modules;
pub mod nocloud;
pub mod plan;
pub mod shutdown;
pub mod stage1;
pub mod stage2;
pub mod supervisor;
pub mod sys;
pub mod timeline;
pub mod trial;
pub mod watchdog;

pub use berth_sys::power::{request, Action, RequestError};

/// Whether this start of the `berth` binary is PID 1's: called `init` (the
/// kernel runs `/init` from the initramfs, stage 1 execs `init`, a disk boot
/// may run `/sbin/init`), or PID 1 with no arguments (`init=/usr/bin/berth`).
/// PID 1 *with* arguments is a system container's entrypoint
/// (`berth netconf` in its own PID namespace), not the machine's init.
pub fn is_init(argv0: &OsStr, args: usize, pid: u32) -> bool {
    let name = Path::new(argv0).file_name().unwrap_or(argv0);
    name == "init" || (pid == 1 && args == 0)
}

/// Stage 1 runs from the initramfs: it has the `/berth-stage1` marker, or no
/// `/usr/share/berth` (which every OS image has).
pub fn is_stage1(root: &Path) -> bool {
    root.join("berth-stage1").exists() || !root.join("usr/share/berth").exists()
}

/// A panic would abort PID 1 and panic the kernel; instead say what happened
/// and become a shell. (The release profile aborts after the hook runs, so
/// exec is the only way out.)
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(
            std::io::stderr(),
            "berth: error: bug in PID 1: {info}; replacing it with an emergency shell"
        );
        if let Some(shell) = supervisor::find_shell() {
            use std::os::unix::process::CommandExt;
            let e = std::process::Command::new(shell).arg0("sh").exec();
            let _ = writeln!(std::io::stderr(), "berth: error: exec shell: {e}");
        }
    }));
}

/// The `init` entry point of the berth binary and of the initramfs's.
/// `berthd_available` says whether stage 2 has berthd to run: whether this
/// build has the `daemon` subcommand, or for the initramfs's, the root's
/// `berth` does.
pub fn main(berthd_available: bool) -> ! {
    console::init();
    // SAFETY: ignoring SIGPIPE before any thread exists: a write to a closed
    // pipe must be an error for PID 1, never a signal.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if std::process::id() != 1 {
        std::process::exit(not_pid1());
    }
    install_panic_hook();
    if is_stage1(Path::new("/")) {
        if let Err(e) = stage1::run(&mut sys::Linux, Path::new("/")) {
            supervisor::emergency(&format!("stage 1 failed: {e}"))
        }
        // Stage 2 goes on in this process, on the new root. An exec of the
        // root's `berth` would make the boot decode and page in that 9.7 MB
        // binary's start-up before berthd needs it, and run its start again:
        // 0.13 s of one emulated CPU (docs/benchmarks.md, "Stage 2 without
        // an exec"). assemble checked that the root has the `berth` berthd
        // runs from.
    }
    stage2::run(berthd_available)
}

/// `init` run by hand: `init 0` and `init 6` as sysvinit users expect.
fn not_pid1() -> i32 {
    let arg = std::env::args().nth(1);
    let action = match arg.as_deref() {
        Some("0") => Action::PowerOff,
        Some("6") => Action::Reboot,
        _ => {
            eprintln!(
                "berth init: this is PID 1's program; use `berth reboot`, `berth poweroff` or `berth halt`"
            );
            return 2;
        }
    };
    match request(action) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth init: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_by_name_or_as_bare_pid_1() {
        assert!(is_init(OsStr::new("/init"), 0, 1234));
        assert!(is_init(OsStr::new("/sbin/init"), 0, 1));
        assert!(is_init(OsStr::new("init"), 1, 1));
        assert!(is_init(OsStr::new("/usr/bin/berth"), 0, 1));
        assert!(
            !is_init(OsStr::new("/usr/bin/berth"), 1, 1),
            "a container's entrypoint"
        );
        assert!(!is_init(OsStr::new("berth"), 0, 4321));
    }

    #[test]
    fn stage_from_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        assert!(is_stage1(root.path()));
        std::fs::create_dir_all(root.path().join("usr/share/berth")).expect("mkdir");
        assert!(!is_stage1(root.path()));
        std::fs::write(root.path().join("berth-stage1"), b"").expect("marker");
        assert!(is_stage1(root.path()));
    }
}
