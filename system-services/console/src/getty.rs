//! Login prompts on the serial console and the first VGA console, each with
//! autologin only where `berth.console.autologin` names it: util-linux agetty
//! in the Debian console, busybox getty in the busybox console.
//!
//! agetty logs a user in without a password itself (`--autologin`). busybox
//! getty cannot; it can only skip the name prompt (`-n`) and run another
//! program instead of `/bin/login` (`-l`), with no arguments of ours. So for
//! each autologin user console-init writes a two-line script that runs
//! busybox `login -f USER` (log in, already authenticated), and getty runs it.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::files::{self, Attributes, Outcome, WriteError};
use crate::supervise::Program;

/// The consoles console-init offers a login on, with their terminal types.
pub const CONSOLES: &[(&str, &str)] = &[("ttyS0", "vt220"), ("tty1", "linux")];
pub const AGETTY: &str = "/sbin/agetty";
pub const BUSYBOX_GETTY: &str = "/sbin/getty";
/// busybox's login, which `-f` lets root use without a password.
pub const BUSYBOX_LOGIN: &str = "/bin/login";
/// Where the autologin scripts for busybox getty live in the console (its
/// own `/etc`, which is new with each console container).
pub const AUTOLOGIN_DIR: &str = "/etc/berth/autologin";

/// Which getty the console image has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GettyProgram {
    /// util-linux agetty at this path.
    Agetty(PathBuf),
    /// busybox getty at this path.
    Busybox(PathBuf),
}

impl GettyProgram {
    /// agetty if the console under `root` has it, else busybox getty if it
    /// has that, else agetty (what the console always ran; the supervisor
    /// reports it when it cannot start).
    pub fn detect(root: &Path) -> Self {
        let has = |path: &str| root.join(path.trim_start_matches('/')).exists();
        if !has(AGETTY) && has(BUSYBOX_GETTY) {
            GettyProgram::Busybox(PathBuf::from(BUSYBOX_GETTY))
        } else {
            GettyProgram::Agetty(PathBuf::from(AGETTY))
        }
    }
}

/// One getty to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Getty {
    pub tty: String,
    pub term: String,
    /// Log this user in without a password.
    pub autologin: Option<String>,
}

impl Getty {
    pub fn program(&self, getty: &GettyProgram) -> Program {
        let serial = self.tty.starts_with("ttyS");
        let argv = match getty {
            GettyProgram::Agetty(path) => {
                let mut argv = vec![path.display().to_string()];
                if serial {
                    // Keep whatever speed the port was left at by the kernel's console=.
                    argv.extend(["--keep-baud".into(), "115200,57600,38400,9600".into()]);
                } else {
                    argv.push("--noclear".into());
                }
                if let Some(user) = &self.autologin {
                    argv.extend(["--autologin".into(), user.clone()]);
                }
                argv.extend([self.tty.clone(), self.term.clone()]);
                argv
            }
            GettyProgram::Busybox(path) => {
                let mut argv = vec![path.display().to_string()];
                if serial {
                    // No carrier detect on a VM's (or most servers') serial line:
                    // without -L the open would wait for one.
                    argv.push("-L".into());
                }
                if let Some(user) = &self.autologin {
                    argv.extend([
                        "-n".into(),
                        "-l".into(),
                        autologin_script(user).display().to_string(),
                    ]);
                }
                // Speed 0: keep the one the kernel's console= set.
                argv.extend(["0".into(), self.tty.clone(), self.term.clone()]);
                argv
            }
        };
        Program {
            name: format!("getty {}", self.tty),
            argv,
            after_ready: true,
            env: Vec::new(),
        }
    }
}

/// The script busybox getty runs to log `user` in, as the console sees it.
pub fn autologin_script(user: &str) -> PathBuf {
    Path::new(AUTOLOGIN_DIR).join(user)
}

/// The script's text. getty passes it `--` (and no name, with `-n`), which it
/// ignores: it only ever logs in `user`.
pub fn render_autologin(user: &str) -> String {
    // User names are checked (letters, digits, `_-.$`), so the quotes are
    // only belt and braces.
    format!(
        "#!/bin/sh\n\
         # Written by berth console-init: busybox getty runs this on the consoles\n\
         # berth.console.autologin names, to log {user} in without a password.\n\
         exec {BUSYBOX_LOGIN} -f '{user}'\n"
    )
}

/// Writes the autologin script for each user that `gettys` log in (root-owned,
/// 0755, so only root can change what it runs).
pub fn write_autologin(root: &Path, gettys: &[Getty]) -> Result<Vec<Outcome>, WriteError> {
    let mut users: Vec<&str> = gettys
        .iter()
        .filter_map(|g| g.autologin.as_deref())
        .collect();
    users.sort();
    users.dedup();
    users
        .into_iter()
        .map(|user| {
            let path = root.join(AUTOLOGIN_DIR.trim_start_matches('/')).join(user);
            files::write_if_changed(
                &path,
                render_autologin(user).as_bytes(),
                Attributes::root(0o755),
            )
        })
        .collect()
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

/// Why a console gets no getty; the text follows the console's name.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error("cannot open {}: {source}", device.display())]
    Open {
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a working terminal: {source}", device.display())]
    NotATerminal {
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `device` is a terminal that answers: it opens (without becoming our
/// controlling terminal) and has terminal attributes.
fn usable(device: &Path) -> Result<(), Unusable> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(device)
        .map_err(|source| Unusable::Open {
            device: device.to_path_buf(),
            source,
        })?;
    // SAFETY: the fd is open for the duration of the call (`file` owns it) and
    // `termios` is a plain C struct that tcgetattr fills in.
    let ok = unsafe {
        let mut termios: libc::termios = std::mem::zeroed();
        libc::tcgetattr(file.as_raw_fd(), &mut termios) == 0
    };
    if ok {
        Ok(())
    } else {
        // errno before anything else can change it.
        let source = std::io::Error::last_os_error();
        Err(Unusable::NotATerminal {
            device: device.to_path_buf(),
            source,
        })
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
        let agetty = GettyProgram::Agetty(PathBuf::from(AGETTY));
        assert_eq!(
            serial.program(&agetty).argv,
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
            vga.program(&agetty).argv,
            [AGETTY, "--noclear", "tty1", "linux"]
        );
        assert_eq!(vga.program(&agetty).name, "getty tty1");

        let busybox = GettyProgram::Busybox(PathBuf::from(BUSYBOX_GETTY));
        assert_eq!(
            serial.program(&busybox).argv,
            [
                BUSYBOX_GETTY,
                "-L",
                "-n",
                "-l",
                "/etc/berth/autologin/berth",
                "0",
                "ttyS0",
                "vt220"
            ]
        );
        assert_eq!(
            vga.program(&busybox).argv,
            [BUSYBOX_GETTY, "0", "tty1", "linux"]
        );
    }

    #[test]
    fn agetty_unless_only_busybox_getty_is_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let agetty = GettyProgram::Agetty(PathBuf::from(AGETTY));
        assert_eq!(GettyProgram::detect(dir.path()), agetty);
        std::fs::create_dir_all(dir.path().join("sbin")).expect("sbin");
        std::fs::write(dir.path().join("sbin/getty"), "").expect("getty");
        assert_eq!(
            GettyProgram::detect(dir.path()),
            GettyProgram::Busybox(PathBuf::from(BUSYBOX_GETTY))
        );
        std::fs::write(dir.path().join("sbin/agetty"), "").expect("agetty");
        assert_eq!(GettyProgram::detect(dir.path()), agetty);
    }

    #[test]
    fn an_autologin_script_per_user_that_logs_only_that_user_in() {
        assert_eq!(
            render_autologin("berth").lines().last(),
            Some("exec /bin/login -f 'berth'")
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let getty = |tty: &str, user: Option<&str>| Getty {
            tty: tty.into(),
            term: "linux".into(),
            autologin: user.map(str::to_string),
        };
        let gettys = [getty("ttyS0", Some("berth")), getty("tty1", Some("berth"))];
        match write_autologin(dir.path(), &gettys) {
            Ok(written) => assert_eq!(written, [Outcome::Written]),
            Err(e) => {
                berth_testkit::skip!("{e} (not root)");
                return;
            }
        }
        use std::os::unix::fs::PermissionsExt;
        let script = dir.path().join("etc/berth/autologin/berth");
        let mode = std::fs::metadata(&script).map(|m| m.permissions().mode() & 0o7777);
        assert_eq!(mode.ok(), Some(0o755));
        assert_eq!(
            write_autologin(dir.path(), &gettys).ok(),
            Some(vec![Outcome::Unchanged])
        );
        assert!(write_autologin(dir.path(), &[getty("tty1", None)])
            .expect("none")
            .is_empty());
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
            berth_testkit::skip!("the pty half: no /dev/ptmx");
            return;
        };
        // SAFETY: ptmx is an open master; grantpt/unlockpt/ptsname only read its fd.
        let pts = unsafe {
            let fd = ptmx.as_raw_fd();
            assert!(
                libc::grantpt(fd) == 0 && libc::unlockpt(fd) == 0,
                "grantpt/unlockpt: {}",
                std::io::Error::last_os_error()
            );
            let name = libc::ptsname(fd);
            assert!(
                !name.is_null(),
                "ptsname: {}",
                std::io::Error::last_os_error()
            );
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
