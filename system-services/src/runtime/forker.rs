//! The forker: a single-threaded child of berthd, forked before any thread
//! exists, and the only process that calls libcontainer (which forks and clones,
//! unsafe in a multi-threaded process).
//!
//! berthd and the forker talk over a `SOCK_SEQPACKET` socketpair: one JSON
//! [`Request`] per message, one JSON [`Response`] back. A `create` carries the
//! container's stdout and stderr (write ends of berthd's pipes) as `SCM_RIGHTS`.
//! Containers are created `as_sibling`, so their inits are children of berthd —
//! the forker's parent — which reaps them and sees their real exit statuses.
//! The forker exits when berthd closes its end of the socket.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

/// Messages are small JSON documents; anything longer is a protocol error.
const MAX_MESSAGE: usize = 64 * 1024;
/// A request carries at most stdout and stderr.
const MAX_FDS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ForkerError {
    #[error(
        "the forker must be started before any thread exists; this process has {threads} threads"
    )]
    Threaded { threads: usize },
    #[error("cannot create the forker's socket: {0}")]
    Socket(#[source] nix::Error),
    #[error("cannot fork the forker: {0}")]
    Fork(#[source] nix::Error),
    #[error("cannot send to the forker: {0}")]
    Send(#[source] nix::Error),
    #[error("cannot receive from the forker: {0}")]
    Receive(#[source] nix::Error),
    #[error("the forker has exited")]
    Gone,
    #[error("bad message from the forker: {0}")]
    Protocol(String),
}

/// What berthd asks of the forker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create from `bundle/config.json`; the message carries stdout and stderr fds.
    Create {
        id: String,
        bundle: PathBuf,
    },
    Start {
        id: String,
    },
    Kill {
        id: String,
        signal: i32,
        all: bool,
    },
    Delete {
        id: String,
        force: bool,
    },
    State {
        id: String,
    },
    /// Runs `args` inside the running container `id` (a tenant process, created
    /// as berthd's child like the inits); the message carries stdout and stderr.
    Exec {
        id: String,
        args: Vec<String>,
    },
}

/// The forker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok {
        #[serde(default)]
        pid: Option<i32>,
        /// libcontainer's status word (`created`, `running`, `stopped`, …).
        #[serde(default)]
        status: Option<String>,
    },
    Error {
        message: String,
    },
}

/// berthd's end of the forker.
#[derive(Debug)]
pub struct Forker {
    socket: Mutex<Option<OwnedFd>>,
    pid: Pid,
}

/// Threads in this process, from `/proc/self/task`.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

impl Forker {
    /// Forks the forker. Must run while this process has a single thread; the
    /// forker keeps libcontainer state under `state_root`.
    pub fn spawn(state_root: &Path) -> Result<Self, ForkerError> {
        let threads = thread_count();
        if threads != 1 {
            return Err(ForkerError::Threaded { threads });
        }
        let (parent, child) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(ForkerError::Socket)?;
        // SAFETY: the process is single-threaded (checked just above), so the
        // child cannot inherit a lock held by another thread; it runs only
        // `serve`, which never returns, and leaves through `_exit`.
        match unsafe { nix::unistd::fork() }.map_err(ForkerError::Fork)? {
            ForkResult::Child => {
                drop(parent);
                // Every container process descends from the forker and starts
                // with its signal mask: a SIGTERM blocked here (inherited from
                // whoever started berthd) would never reach a service's handler.
                let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
                let code = serve(child, state_root);
                // SAFETY: `_exit` ends the forker without running the parent's
                // atexit handlers or destructors twice; always sound to call.
                unsafe { nix::libc::_exit(code) }
            }
            ForkResult::Parent { child: pid } => {
                drop(child);
                Ok(Forker {
                    socket: Mutex::new(Some(parent)),
                    pid,
                })
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Sends `request` with `fds` attached and waits for the answer.
    pub fn call(&self, request: &Request, fds: &[BorrowedFd<'_>]) -> Result<Response, ForkerError> {
        let socket = self
            .socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let socket = socket.as_ref().ok_or(ForkerError::Gone)?;
        let body = serde_json::to_vec(request).map_err(|e| ForkerError::Protocol(e.to_string()))?;
        send(socket.as_fd(), &body, fds).map_err(ForkerError::Send)?;
        let (bytes, extra) = receive(socket.as_fd()).map_err(ForkerError::Receive)?;
        drop(extra);
        if bytes.is_empty() {
            return Err(ForkerError::Gone);
        }
        serde_json::from_slice(&bytes).map_err(|e| ForkerError::Protocol(e.to_string()))
    }
}

impl Drop for Forker {
    fn drop(&mut self) {
        // Closing the socket tells the forker to exit; reap it so it is no zombie.
        let socket = self
            .socket
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(socket);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

fn send(socket: BorrowedFd<'_>, body: &[u8], fds: &[BorrowedFd<'_>]) -> nix::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let iov = [IoSlice::new(body)];
    loop {
        match sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::Error::EINTR) => continue,
            other => return other.map(|_| ()),
        }
    }
}

/// One message and the descriptors it carried (empty message: the peer is gone).
fn receive(socket: BorrowedFd<'_>) -> nix::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::Error::EINTR) => continue,
            other => other?,
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                for fd in received {
                    // SAFETY: the kernel just installed this descriptor for us
                    // with SCM_RIGHTS; nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let truncated =
            msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.flags.contains(MsgFlags::MSG_CTRUNC);
        let len = msg.bytes;
        if truncated {
            return Err(nix::Error::EMSGSIZE);
        }
        buf.truncate(len);
        return Ok((buf, fds));
    }
}

/// The forker's loop: answer requests until berthd hangs up. Returns the exit code.
fn serve(socket: OwnedFd, state_root: &Path) -> i32 {
    // The containers' stdin, and the forker's own, is /dev/null.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
    }
    loop {
        let (bytes, fds) = match receive(socket.as_fd()) {
            Ok(m) => m,
            Err(_) => return 1,
        };
        if bytes.is_empty() {
            return 0;
        }
        let response = match serde_json::from_slice::<Request>(&bytes) {
            Ok(request) => {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handle(state_root, request, fds)
                })) {
                    Ok(r) => r,
                    Err(_) => Response::Error {
                        message: "the forker panicked handling the request".into(),
                    },
                }
            }
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
            },
        };
        let body = match serde_json::to_vec(&response) {
            Ok(b) => b,
            Err(_) => br#"{"result":"error","message":"cannot encode the response"}"#.to_vec(),
        };
        if send(socket.as_fd(), &body, &[]).is_err() {
            return 1;
        }
    }
}

/// An error and its causes, one after another.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn status_word(status: libcontainer::container::ContainerStatus) -> String {
    use libcontainer::container::ContainerStatus as S;
    match status {
        S::Creating => "creating",
        S::Created => "created",
        S::Running => "running",
        S::Stopped => "stopped",
        S::Paused => "paused",
    }
    .into()
}

fn fail(e: &dyn std::error::Error) -> Response {
    Response::Error {
        message: error_chain(e),
    }
}

/// A builder for a process of container `id` (its first, or one exec'd in
/// it, as a healthcheck): stdout and stderr are the client's (the first two
/// of `fds`), stdin is /dev/null, and it runs under the container's seccomp
/// filter.
fn process_builder(
    state_root: &Path,
    id: String,
    fds: Vec<OwnedFd>,
    request: &str,
) -> Result<libcontainer::container::builder::ContainerBuilder, Response> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    let mut fds = fds.into_iter();
    let (Some(stdout), Some(stderr)) = (fds.next(), fds.next()) else {
        return Err(Response::Error {
            message: format!("{request} needs the stdout and stderr descriptors"),
        });
    };
    let stdin = std::fs::File::open("/dev/null").map_err(|e| fail(&e))?;
    let builder = ContainerBuilder::new(id, SyscallType::Linux)
        .validate_id()
        .and_then(|b| b.with_root_path(state_root))
        .map_err(|e| fail(&e))?;
    Ok(builder
        .with_stdin(OwnedFd::from(stdin))
        .with_stdout(stdout)
        .with_stderr(stderr)
        .with_executor(super::seccomp::SeccompExecutor))
}

fn handle(state_root: &Path, request: Request, fds: Vec<OwnedFd>) -> Response {
    use libcontainer::container::Container;

    let load = |id: &str| Container::load(state_root.join(id));
    match request {
        Request::Create { id, bundle } => {
            let builder = match process_builder(state_root, id, fds, "create") {
                Ok(b) => b,
                Err(response) => return response,
            };
            let built = builder
                .as_init(bundle)
                .with_systemd(false)
                .with_detach(true)
                .as_sibling(true)
                .build();
            match built {
                Ok(container) => Response::Ok {
                    pid: container.pid().map(|p| p.as_raw()),
                    status: Some(status_word(container.status())),
                },
                Err(e) => fail(&e),
            }
        }
        Request::Start { id } => match load(&id).and_then(|mut c| c.start()) {
            Ok(()) => Response::Ok {
                pid: None,
                status: None,
            },
            Err(e) => fail(&e),
        },
        Request::Kill { id, signal, all } => {
            let signal = match libcontainer::signal::Signal::try_from(signal) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            match load(&id).and_then(|mut c| c.kill(signal, all)) {
                Ok(()) => Response::Ok {
                    pid: None,
                    status: None,
                },
                Err(e) => fail(&e),
            }
        }
        Request::Delete { id, force } => {
            if !state_root.join(&id).exists() {
                return Response::Ok {
                    pid: None,
                    status: None,
                };
            }
            match load(&id).and_then(|mut c| c.delete(force)) {
                Ok(()) => Response::Ok {
                    pid: None,
                    status: None,
                },
                Err(e) => fail(&e),
            }
        }
        Request::Exec { id, args } => {
            let builder = match process_builder(state_root, id, fds, "exec") {
                Ok(b) => b,
                Err(response) => return response,
            };
            let built = builder
                .as_tenant()
                .with_container_args(args)
                .with_detach(true)
                .as_sibling(true)
                .build();
            match built {
                Ok(pid) => Response::Ok {
                    pid: Some(pid.as_raw()),
                    status: None,
                },
                Err(e) => fail(&e),
            }
        }
        Request::State { id } => match load(&id) {
            Ok(c) => Response::Ok {
                pid: c.pid().map(|p| p.as_raw()),
                status: Some(status_word(c.status())),
            },
            Err(e) => fail(&e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_tagged_json() {
        let r = Request::Kill {
            id: "ntp".into(),
            signal: 15,
            all: false,
        };
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(text, r#"{"op":"kill","id":"ntp","signal":15,"all":false}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).expect("parse"), r);
        let ok: Response = serde_json::from_str(r#"{"result":"ok","pid":42}"#).expect("parse");
        assert_eq!(
            ok,
            Response::Ok {
                pid: Some(42),
                status: None
            }
        );
    }

    #[test]
    fn messages_carry_descriptors() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let (r, w) = nix::unistd::pipe().expect("pipe");
        send(a.as_fd(), b"hello", &[w.as_fd(), r.as_fd()]).expect("send");
        drop(w);
        let (bytes, fds) = receive(b.as_fd()).expect("receive");
        assert_eq!(bytes, b"hello");
        assert_eq!(fds.len(), 2);
        nix::unistd::write(&fds[0], b"through the copy").expect("write");
        let mut buf = [0u8; 32];
        let n = nix::unistd::read(r.as_raw_fd(), &mut buf).expect("read");
        assert_eq!(&buf[..n], b"through the copy");
        drop(a);
        let (bytes, _) = receive(b.as_fd()).expect("eof");
        assert!(bytes.is_empty(), "a closed peer reads as an empty message");
    }
}
