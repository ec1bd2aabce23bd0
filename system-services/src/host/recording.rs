//! A [`HostOps`] that writes down what would have happened (for tests), and
//! lets a test make chosen calls fail or scripts what commands print.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{CommandOutput, FileWrite, HostOps, MountCall};
use crate::runtime::Exit;

/// One call, with what it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Write {
        rel: PathBuf,
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
        append: bool,
    },
    Sysctl {
        path: PathBuf,
        value: String,
    },
    Mount(MountCall),
    Swapon {
        device: PathBuf,
        flags: i32,
    },
    Module {
        path: PathBuf,
        params: String,
        compressed: bool,
    },
    Run {
        argv: Vec<String>,
    },
    Hostname(String),
}

impl Call {
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Write { .. } => "write",
            Call::Sysctl { .. } => "sysctl",
            Call::Mount(_) => "mount",
            Call::Swapon { .. } => "swapon",
            Call::Module { .. } => "module",
            Call::Run { .. } => "run",
            Call::Hostname(_) => "hostname",
        }
    }

    /// What [`Recording::fail`] matches against.
    fn subject(&self) -> String {
        match self {
            Call::Write { rel, .. } => rel.display().to_string(),
            Call::Sysctl { path, .. } => path.display().to_string(),
            Call::Mount(m) => m.target.display().to_string(),
            Call::Swapon { device, .. } => device.display().to_string(),
            Call::Module { path, .. } => path.display().to_string(),
            Call::Run { argv } => argv.join(" "),
            Call::Hostname(name) => name.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    /// (kind, substring of the subject, errno)
    failures: Vec<(String, String, i32)>,
    /// (substring of the command line, what it does)
    scripts: Vec<(String, CommandOutput)>,
}

#[derive(Debug, Default)]
pub struct Recording {
    state: Mutex<State>,
}

impl Recording {
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls of `kind` whose subject (path, target, command line) contains
    /// `subject` fail with `errno` (still recorded).
    pub fn fail(&self, kind: &str, subject: &str, errno: i32) {
        self.lock()
            .failures
            .push((kind.into(), subject.into(), errno));
    }

    /// Commands whose line contains `matching` end with `exit` and print `output`
    /// (others: exit 0, no output).
    pub fn script(&self, matching: &str, exit: Option<Exit>, output: &str) {
        self.lock().scripts.push((
            matching.into(),
            CommandOutput {
                exit,
                output: output.into(),
            },
        ));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, call: Call) -> io::Result<()> {
        let mut state = self.lock();
        let (kind, subject) = (call.kind(), call.subject());
        state.calls.push(call);
        match state
            .failures
            .iter()
            .find(|(k, s, _)| k == kind && subject.contains(s.as_str()))
        {
            Some((_, _, errno)) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }
}

impl HostOps for Recording {
    fn write_file(&self, _root: &Path, rel: &Path, file: &FileWrite) -> io::Result<()> {
        self.record(Call::Write {
            rel: rel.to_path_buf(),
            data: file.data.clone(),
            mode: file.mode,
            uid: file.uid,
            gid: file.gid,
            append: file.append,
        })
    }

    fn write_sysctl(&self, path: &Path, value: &str) -> io::Result<()> {
        self.record(Call::Sysctl {
            path: path.to_path_buf(),
            value: value.into(),
        })
    }

    fn mount(&self, call: &MountCall) -> io::Result<()> {
        self.record(Call::Mount(call.clone()))
    }

    fn swapon(&self, device: &Path, flags: i32) -> io::Result<()> {
        self.record(Call::Swapon {
            device: device.to_path_buf(),
            flags,
        })
    }

    fn load_module(&self, path: &Path, params: &str, compressed: bool) -> io::Result<()> {
        self.record(Call::Module {
            path: path.to_path_buf(),
            params: params.into(),
            compressed,
        })
    }

    fn run_command(&self, argv: &[String], _timeout: Duration) -> io::Result<CommandOutput> {
        let line = argv.join(" ");
        self.record(Call::Run {
            argv: argv.to_vec(),
        })?;
        let state = self.lock();
        Ok(state
            .scripts
            .iter()
            .find(|(m, _)| line.contains(m.as_str()))
            .map(|(_, out)| out.clone())
            .unwrap_or(CommandOutput {
                exit: Some(Exit::Code(0)),
                output: String::new(),
            }))
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        self.record(Call::Hostname(name.into()))
    }
}
