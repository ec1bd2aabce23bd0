//! The real OpenSSH client against a VM's forwarded SSH port, with a key made
//! for the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{io_err, Error, Result};

/// The options of every `ssh` and `scp` to a test's machine. A session whose
/// server went away (a console being replaced) ends within seconds instead of
/// waiting on TCP.
const CLIENT_OPTIONS: &[&str] = &[
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
];

/// A key pair made with `ssh-keygen` and the options every test call needs.
#[derive(Debug, Clone)]
pub struct Ssh {
    pub port: u16,
    pub user: String,
    key: PathBuf,
    public: String,
}

impl Ssh {
    /// Makes an ed25519 key in `dir` for `user@127.0.0.1:port`.
    pub fn new(dir: &Path, port: u16, user: &str) -> Result<Ssh> {
        let key = dir.join("id_ed25519");
        crate::run_checked(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "berth-qemu-test",
                "-f",
                &key.to_string_lossy(),
            ],
        )?;
        let pub_path = key.with_extension("pub");
        let public = std::fs::read_to_string(&pub_path)
            .map_err(io_err(&pub_path))?
            .trim()
            .to_string();
        Ok(Ssh {
            port,
            user: user.into(),
            key,
            public,
        })
    }

    /// The same key for another user of the machine.
    pub fn as_user(&self, user: &str) -> Ssh {
        Ssh {
            user: user.into(),
            ..self.clone()
        }
    }

    /// The `authorized_keys` line.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// `ssh` to the machine; `extra` comes first because ssh keeps the first
    /// value it is given for an option.
    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(extra)
            .args(CLIENT_OPTIONS)
            .args(["-o", "BatchMode=yes"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", self.user));
        cmd
    }

    /// Runs `remote` (a shell command line) with the key; `stdin` is fed to it.
    pub fn run_with_input(&self, remote: &str, stdin: Option<&Path>) -> Result<Output> {
        let mut cmd = self.command(&[
            "-i",
            &self.key.to_string_lossy(),
            "-o",
            "IdentitiesOnly=yes",
        ]);
        cmd.arg(remote);
        match stdin {
            Some(path) => {
                let file = std::fs::File::open(path).map_err(io_err(path))?;
                cmd.stdin(Stdio::from(file));
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        cmd.output().map_err(|source| Error::Spawn {
            program: "ssh".into(),
            source,
        })
    }

    pub fn run(&self, remote: &str) -> Result<Output> {
        self.run_with_input(remote, None)
    }

    /// Runs `remote` and returns its stdout, or fails with its stderr.
    pub fn check(&self, remote: &str) -> Result<String> {
        let out = self.run(remote)?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("ssh {remote}"),
                stderr: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The host keys the server offers (`ssh-keyscan`), as sorted `TYPE BASE64`
    /// lines: the machine's SSH identity.
    pub fn host_keys(&self) -> Result<Vec<String>> {
        let out = Command::new("ssh-keyscan")
            .args(["-T", "10", "-p", &self.port.to_string(), "127.0.0.1"])
            .output()
            .map_err(|source| Error::Spawn {
                program: "ssh-keyscan".into(),
                source,
            })?;
        let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut fields = l.split_whitespace().skip(1);
                Some(format!("{} {}", fields.next()?, fields.next()?))
            })
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Runs `remote` until it succeeds, for what takes a while to come true.
    pub fn wait_for(&self, remote: &str, timeout: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            match self.check(remote) {
                Ok(out) => return Ok(out),
                Err(e) if start.elapsed() >= timeout => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_secs(2)),
            }
        }
    }

    /// A password login attempt, no key offered: what the server says.
    pub fn try_password(&self) -> Result<Output> {
        let mut cmd = self.command(&[
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ]);
        cmd.arg("true").stdin(Stdio::null());
        cmd.output().map_err(|source| Error::Spawn {
            program: "ssh".into(),
            source,
        })
    }

    /// Logs in with `password` (no key offered) and runs `remote`: the
    /// password comes from an `SSH_ASKPASS` program, as a terminal would give it.
    pub fn run_with_password(&self, password: &str, remote: &str) -> Result<Output> {
        use std::os::unix::fs::PermissionsExt;
        if password.contains('\'') {
            return Err(Error::Command {
                command: "ssh with a password".into(),
                stderr: "the test's password must not contain a single quote".into(),
            });
        }
        let askpass = self.key.with_file_name("askpass");
        std::fs::write(
            &askpass,
            format!("#!/bin/sh\nprintf '%s\\n' '{password}'\n"),
        )
        .map_err(io_err(&askpass))?;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(&askpass))?;
        let mut cmd = self.command(&[
            "-o",
            "BatchMode=no",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "NumberOfPasswordPrompts=1",
        ]);
        cmd.arg(remote)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .stdin(Stdio::null());
        cmd.output().map_err(|source| Error::Spawn {
            program: "ssh".into(),
            source,
        })
    }

    /// Copies `local` to `remote` on the machine with `scp` (the SFTP protocol
    /// since OpenSSH 9.0, so the server's sftp-server).
    pub fn copy_to(&self, local: &Path, remote: &str) -> Result<()> {
        let out = Command::new("scp")
            .arg("-q")
            .args(CLIENT_OPTIONS)
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(&self.key)
            .arg("-P")
            .arg(self.port.to_string())
            .arg(local)
            .arg(format!("{}@127.0.0.1:{remote}", self.user))
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: "scp".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("scp {} {remote}", local.display()),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// Logs in until it works: sshd starting is the readiness being waited
    /// for, so each try is a real login, not a sleep.
    pub fn wait(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        self.wait_for("true", timeout)?;
        Ok(start.elapsed())
    }
}
