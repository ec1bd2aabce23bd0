//! A [`Runtime`] without containers, for testing the supervisor: it records every
//! call, hands out real pipes for stdout/stderr (the test writes into them), and
//! lets the test decide when and how each container exits or which call fails.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{
    ContainerConfig, ContainerState, Created, Exit, Runtime, RuntimeError, Signal, SignalFate,
    Status,
};

/// One call the supervisor made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Create { id: String, service: String },
    Start { id: String },
    Kill { id: String, signal: Signal },
    Delete { id: String },
}

/// The operations [`Recording::fail_next`] can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Start,
    Kill,
    Delete,
}

#[derive(Debug)]
struct Fake {
    pid: i32,
    status: Status,
    exit: Option<Exit>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    /// Signals other than SIGKILL leave it running (a PID 1 without handlers,
    /// until [`Recording::install_handlers`]).
    ignores_signals: bool,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    containers: HashMap<String, Fake>,
    failures: HashMap<(Op, String), String>,
    ignoring: Vec<String>,
    next_pid: i32,
    /// Scripted results of `exec` by container id; absent: exit 0.
    execs: HashMap<String, Exit>,
}

#[derive(Debug, Default)]
pub struct Recording {
    state: Mutex<State>,
}

impl Recording {
    pub fn new() -> Self {
        Recording::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Ids of the containers that exist (created and not deleted).
    pub fn containers(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().containers.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The next `op` on `id` fails with `message`.
    pub fn fail_next(&self, op: Op, id: &str, message: &str) {
        self.lock()
            .failures
            .insert((op, id.to_string()), message.to_string());
    }

    /// Containers created with this id ignore every signal but SIGKILL.
    pub fn ignore_signals(&self, id: &str) {
        self.lock().ignoring.push(id.to_string());
    }

    /// The running container `id` installs its signal handlers now: signals
    /// it dropped before (see [`Recording::ignore_signals`]) reach it from now on.
    pub fn install_handlers(&self, id: &str) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.ignores_signals = false;
        }
    }

    /// Every later `exec` in `id` (healthchecks) ends with `exit`.
    pub fn set_exec(&self, id: &str, exit: Exit) {
        self.lock().execs.insert(id.to_string(), exit);
    }

    /// The container's process exits: its output pipes close, `try_wait` reports `exit`.
    pub fn exit(&self, id: &str, exit: Exit) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.exit.get_or_insert(exit);
            c.status = Status::Stopped;
            c.stdout = None;
            c.stderr = None;
        }
    }

    /// Writes to the container's stdout (`false` when it has none any more).
    pub fn write_stdout(&self, id: &str, bytes: &[u8]) -> bool {
        self.write(id, bytes, false)
    }

    pub fn write_stderr(&self, id: &str, bytes: &[u8]) -> bool {
        self.write(id, bytes, true)
    }

    fn write(&self, id: &str, bytes: &[u8], stderr: bool) -> bool {
        let state = self.lock();
        let Some(c) = state.containers.get(id) else {
            return false;
        };
        let fd = if stderr { &c.stderr } else { &c.stdout };
        match fd {
            Some(fd) => nix::unistd::write(fd, bytes).is_ok(),
            None => false,
        }
    }

    fn check(
        &self,
        state: &mut State,
        op: Op,
        id: &str,
        step: &'static str,
    ) -> Result<(), RuntimeError> {
        match state.failures.remove(&(op, id.to_string())) {
            Some(message) => Err(RuntimeError::Container {
                id: id.into(),
                step,
                message,
            }),
            None => Ok(()),
        }
    }
}

fn pipe(id: &str) -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RuntimeError::Io {
        id: id.into(),
        step: "create a pipe",
        source: e.into(),
    })
}

impl Runtime for Recording {
    fn create(&self, config: &ContainerConfig) -> Result<Created, RuntimeError> {
        let id = config.id.as_str();
        let mut state = self.lock();
        state.calls.push(Call::Create {
            id: id.into(),
            service: config.service_name.clone(),
        });
        self.check(&mut state, Op::Create, id, "create")?;
        if state.containers.contains_key(id) {
            return Err(RuntimeError::Container {
                id: id.into(),
                step: "create",
                message: "a container with this id exists; delete it first".into(),
            });
        }
        let (out_r, out_w) = pipe(id)?;
        let (err_r, err_w) = pipe(id)?;
        state.next_pid += 1;
        let pid = 10_000 + state.next_pid;
        let ignores_signals = state.ignoring.iter().any(|i| i == id);
        state.containers.insert(
            id.into(),
            Fake {
                pid,
                status: Status::Created,
                exit: None,
                stdout: Some(out_w),
                stderr: Some(err_w),
                ignores_signals,
            },
        );
        Ok(Created {
            id: id.into(),
            pid,
            pidfd: None,
            stdout: out_r,
            stderr: err_r,
        })
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        state.calls.push(Call::Start { id: id.into() });
        self.check(&mut state, Op::Start, id, "start")?;
        let c = state
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::Unknown { id: id.into() })?;
        if c.status != Status::Created {
            return Err(RuntimeError::Container {
                id: id.into(),
                step: "start",
                message: format!("cannot start a container that is {:?}", c.status),
            });
        }
        c.status = Status::Running;
        Ok(())
    }

    fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        state.calls.push(Call::Kill {
            id: id.into(),
            signal,
        });
        self.check(&mut state, Op::Kill, id, "kill")?;
        let c = state
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::Unknown { id: id.into() })?;
        if c.exit.is_none() && (signal == Signal::SIGKILL || !c.ignores_signals) {
            c.exit = Some(Exit::Signal(signal as i32));
            c.status = Status::Stopped;
            c.stdout = None;
            c.stderr = None;
        }
        Ok(())
    }

    fn signal_fate(&self, id: &str, _signal: Signal) -> Option<SignalFate> {
        let state = self.lock();
        let c = state.containers.get(id)?;
        Some(if c.exit.is_some() {
            SignalFate::Gone
        } else if c.ignores_signals {
            SignalFate::Dropped
        } else {
            SignalFate::Caught
        })
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        state.calls.push(Call::Delete { id: id.into() });
        self.check(&mut state, Op::Delete, id, "delete")?;
        state.containers.remove(id);
        Ok(())
    }

    fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let state = self.lock();
        let c = state
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::Unknown { id: id.into() })?;
        Ok(ContainerState {
            id: id.into(),
            status: c.status,
            pid: Some(c.pid),
            exit: c.exit,
        })
    }

    fn try_wait(&self, id: &str) -> Result<Option<Exit>, RuntimeError> {
        let state = self.lock();
        let c = state
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::Unknown { id: id.into() })?;
        Ok(c.exit)
    }

    /// A fresh pipe: later writes from the test go to the new read end, as a
    /// restarted berthd's reopened FIFO would get them.
    fn reattach(&self, id: &str) -> Result<Option<super::Output>, RuntimeError> {
        let mut state = self.lock();
        let c = state
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::Unknown { id: id.into() })?;
        if c.exit.is_some() {
            return Ok(None);
        }
        let (out_r, out_w) = pipe(id)?;
        let (err_r, err_w) = pipe(id)?;
        c.stdout = Some(out_w);
        c.stderr = Some(err_w);
        Ok(Some(super::Output {
            stdout: out_r,
            stderr: err_r,
        }))
    }

    fn exec(
        &self,
        id: &str,
        _argv: &[String],
        _timeout: std::time::Duration,
    ) -> Result<super::ExecOutput, RuntimeError> {
        let state = self.lock();
        match state.containers.get(id) {
            Some(c) if c.status == Status::Running && c.exit.is_none() => {}
            _ => {
                return Err(RuntimeError::Container {
                    id: id.into(),
                    step: "exec",
                    message: "the container is not running".into(),
                })
            }
        }
        let exit = state.execs.get(id).copied().unwrap_or(Exit::Code(0));
        Ok(super::ExecOutput {
            exit: Some(exit),
            output: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn config(id: &str) -> ContainerConfig {
        ContainerConfig {
            id: id.into(),
            service_name: id.into(),
            service: Default::default(),
            image: Default::default(),
            environment: Default::default(),
            service_network: None,
            files: Vec::new(),
        }
    }

    #[test]
    fn records_calls_and_plays_exits() {
        let rt = Recording::new();
        let created = rt.create(&config("ntp")).expect("create");
        rt.start("ntp").expect("start");
        assert!(rt.write_stdout("ntp", b"synced\n"));
        assert_eq!(rt.try_wait("ntp").expect("wait"), None);
        rt.exit("ntp", Exit::Code(2));
        let mut out = String::new();
        std::fs::File::from(created.stdout)
            .read_to_string(&mut out)
            .expect("read");
        assert_eq!(
            out, "synced\n",
            "the pipe reaches EOF once the container exits"
        );
        assert_eq!(rt.try_wait("ntp").expect("wait"), Some(Exit::Code(2)));
        assert_eq!(rt.state("ntp").expect("state").status, Status::Stopped);
        rt.delete("ntp").expect("delete");
        assert_eq!(
            rt.calls(),
            [
                Call::Create {
                    id: "ntp".into(),
                    service: "ntp".into()
                },
                Call::Start { id: "ntp".into() },
                Call::Delete { id: "ntp".into() },
            ]
        );
        assert!(rt.containers().is_empty());
    }

    #[test]
    fn signals_failures_and_stubborn_inits() {
        let rt = Recording::new();
        rt.ignore_signals("console");
        rt.create(&config("console")).expect("create");
        rt.start("console").expect("start");
        rt.kill("console", Signal::SIGTERM).expect("term");
        assert_eq!(rt.try_wait("console").expect("wait"), None);
        rt.kill("console", Signal::SIGKILL).expect("kill");
        assert_eq!(rt.try_wait("console").expect("wait"), Some(Exit::Signal(9)));

        rt.fail_next(Op::Start, "docker", "no cgroup for you");
        rt.create(&config("docker")).expect("create");
        let err = rt.start("docker").expect_err("fails once");
        assert!(err.to_string().contains("docker") && err.to_string().contains("no cgroup"));
        rt.start("docker").expect("then works");
        assert!(matches!(
            rt.create(&config("docker")),
            Err(RuntimeError::Container { .. })
        ));
    }
}
