//! Login prompts: util-linux agetty on the serial console and the first VGA
//! console, each with `--autologin` only where `berth.console.autologin` names it.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::supervise::Program;

/// The consoles console-init offers a login on, with their terminal types.
pub const CONSOLES: &[(&str, &str)] = &[("ttyS0", "vt220"), ("tty1", "linux")];
pub const AGETTY: &str = "/sbin/agetty";

/// One agetty to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Getty {
    pub tty: String,
    pub term: String,
    /// Log this user in without a password.
    pub autologin: Option<String>,
}

impl Getty {
    pub fn program(&self, agetty: &str) -> Program {
        let mut argv = vec![agetty.to_string()];
        if self.tty.starts_with("ttyS") {
            // Keep whatever speed the port was left at by the kernel's console=.
            argv.extend(["--keep-baud".into(), "115200,57600,38400,9600".into()]);
        } else {
            argv.push("--noclear".into());
        }
        if let Some(user) = &self.autologin {
            argv.extend(["--autologin".into(), user.clone()]);
        }
        argv.extend([self.tty.clone(), self.term.clone()]);
        Program {
            name: format!("getty {}", self.tty),
            argv,
        }
    }
}

/// A config console name as agetty wants it (`/dev/ttyS0` → `ttyS0`).
fn tty_name(name: &str) -> &str {
    name.trim().trim_start_matches("/dev/")
}

/// The gettys to run under `root`: each console whose device exists and works
/// (a PC has `/dev/ttyS0` even without a UART behind it, and agetty would fail
/// on it every second), autologin for `user` where `autologin` says so. The
/// second list says which consoles were skipped and why.
pub fn gettys(root: &Path, autologin: &[String], user: &str) -> (Vec<Getty>, Vec<String>) {
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for (tty, term) in CONSOLES {
        let device = root.join("dev").join(tty);
        if let Err(why) = usable(&device) {
            skipped.push(format!("{tty}: {why}"));
            continue;
        }
        let auto = autologin.iter().any(|name| tty_name(name) == *tty);
        run.push(Getty {
            tty: tty.to_string(),
            term: term.to_string(),
            autologin: auto.then(|| user.to_string()),
        });
    }
    (run, skipped)
}

/// Whether `device` is a terminal that answers: it opens (without becoming our
/// controlling terminal) and has terminal attributes.
fn usable(device: &Path) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(device)
        .map_err(|e| format!("cannot open {}: {e}", device.display()))?;
    // SAFETY: the fd is open for the duration of the call (`file` owns it) and
    // `termios` is a plain C struct that tcgetattr fills in.
    let ok = unsafe {
        let mut termios: libc::termios = std::mem::zeroed();
        libc::tcgetattr(file.as_raw_fd(), &mut termios) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a working terminal: {}",
            device.display(),
            std::io::Error::last_os_error()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let serial = Getty {
            tty: "ttyS0".into(),
            term: "vt220".into(),
            autologin: Some("berth".into()),
        };
        assert_eq!(
            serial.program(AGETTY).argv,
            [
                AGETTY,
                "--keep-baud",
                "115200,57600,38400,9600",
                "--autologin",
                "berth",
                "ttyS0",
                "vt220"
            ]
        );
        let vga = Getty {
            tty: "tty1".into(),
            term: "linux".into(),
            autologin: None,
        };
        assert_eq!(
            vga.program(AGETTY).argv,
            [AGETTY, "--noclear", "tty1", "linux"]
        );
        assert_eq!(vga.program(AGETTY).name, "getty tty1");
    }

    #[test]
    fn only_working_terminals_and_autologin_where_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(&dev).expect("dev");
        // A regular file is no terminal; a pty is one.
        std::fs::write(dev.join("tty1"), "").expect("tty1");
        let (run, skipped) = gettys(dir.path(), &["/dev/ttyS0".into()], "berth");
        assert!(run.is_empty());
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[1].contains("not a working terminal"), "{skipped:?}");

        let Ok(ptmx) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/ptmx")
        else {
            eprintln!("skipped the pty half: no /dev/ptmx");
            return;
        };
        // SAFETY: ptmx is an open master; grantpt/unlockpt/ptsname only read its fd.
        let pts = unsafe {
            let fd = ptmx.as_raw_fd();
            if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
                return;
            }
            let name = libc::ptsname(fd);
            if name.is_null() {
                return;
            }
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        };
        std::fs::remove_file(dev.join("tty1")).expect("rm");
        std::os::unix::fs::symlink(&pts, dev.join("tty1")).expect("link");
        std::os::unix::fs::symlink(&pts, dev.join("ttyS0")).expect("link");
        let (run, skipped) = gettys(dir.path(), &["/dev/ttyS0".into()], "berth");
        assert!(skipped.is_empty(), "{skipped:?}");
        let autologin: Vec<(&str, Option<&str>)> = run
            .iter()
            .map(|g| (g.tty.as_str(), g.autologin.as_deref()))
            .collect();
        assert_eq!(autologin, [("ttyS0", Some("berth")), ("tty1", None)]);
    }
}
