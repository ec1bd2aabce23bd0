//! The real [`HostOps`]: system calls.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path};
use std::process::Stdio;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags, CWD};

use super::{CommandOutput, FileWrite, HostOps, MountCall};
use crate::runtime::Exit;

/// The `PATH` bootcmd runs with: the OS image's tools, then busybox's applets.
pub const PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/share/berth/busybox";

/// How much of a command's output is kept.
const MAX_OUTPUT: usize = 64 << 10;

#[derive(Debug, Default)]
pub struct Linux;

fn cstr(s: impl AsRef<std::ffi::OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path or argument"))
}

/// Opens directory `name` in `dir` without following a symlink, creating it
/// (0755) when missing.
fn open_dir(dir: &OwnedFd, name: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Err(rustix::io::Errno::NOENT) => {
            match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
        }
        other => Ok(other?),
    }
}

impl HostOps for Linux {
    fn write_file(&self, root: &Path, rel: &Path, file: &FileWrite) -> io::Result<()> {
        let mut names = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n.to_os_string()),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{}: not a plain relative path", rel.display()),
                    ))
                }
            }
        }
        let Some(name) = names.pop() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
        };
        let mut dir: OwnedFd = rustix::fs::openat(
            CWD,
            root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        for n in &names {
            dir = open_dir(&dir, n)?;
        }
        let mut content = Vec::new();
        if file.append {
            match rustix::fs::openat(
                &dir,
                &name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    File::from(fd).read_to_end(&mut content)?;
                }
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        content.extend_from_slice(&file.data);
        let options = berth_sys::atomic::Options::mode(file.mode).owner(file.uid, file.gid);
        use std::os::fd::AsFd;
        berth_sys::atomic::write_at(dir.as_fd(), &name, &content, &options)
    }

    fn write_sysctl(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    }

    fn mount(&self, call: &MountCall) -> io::Result<()> {
        std::fs::create_dir_all(&call.target)?;
        let source = cstr(&call.source)?;
        let target = cstr(&call.target)?;
        let fstype = cstr(&call.fstype)?;
        let data = cstr(&call.data)?;
        // SAFETY: every pointer is a NUL-terminated string alive for the call.
        let r = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                call.flags,
                if call.data.is_empty() {
                    std::ptr::null()
                } else {
                    data.as_ptr().cast()
                },
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn swapon(&self, device: &Path, flags: i32) -> io::Result<()> {
        let dev = cstr(device)?;
        // SAFETY: `dev` is a NUL-terminated path alive for the call.
        if unsafe { libc::swapon(dev.as_ptr(), flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn load_module(&self, path: &Path, params: &str, compressed: bool) -> io::Result<()> {
        berth_sys::modules::load_module_file(path, params, compressed)
    }

    fn run_command(&self, argv: &[String], timeout: Duration) -> io::Result<CommandOutput> {
        let Some((program, args)) = argv.split_first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        };
        let (read, write) = crate::logs::pipe()?;
        let write2 = write.try_clone()?;
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write2))
            // Its own process group, so a timeout kills what it started too.
            .process_group(0);
        // berthd's main thread blocks SIGTERM for sigwait; a command (and
        // what it leaves running) must not inherit that.
        // SAFETY: `reset_signal_mask` only calls async-signal-safe functions
        // on a local set.
        unsafe {
            command.pre_exec(berth_sys::process::reset_signal_mask);
        }
        let mut child = command.spawn()?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let sink = Arc::clone(&output);
        // A command may leave something running that holds the pipe open:
        // the reader is not waited for past a short grace after the exit.
        std::thread::Builder::new()
            .name("bootcmd output".into())
            .spawn(move || {
                let mut f = File::from(read);
                let mut buf = [0u8; 4096];
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
                    let room = MAX_OUTPUT.saturating_sub(out.len());
                    out.extend_from_slice(&buf[..n.min(room)]);
                }
                let _ = done_tx.send(());
            })?;
        let deadline = Instant::now() + timeout;
        let exit = loop {
            if let Some(status) = child.try_wait()? {
                break Some(match status.signal() {
                    Some(sig) => Exit::Signal(sig),
                    None => Exit::Code(status.code().unwrap_or(-1)),
                });
            }
            if Instant::now() >= deadline {
                // SAFETY: kill has no memory arguments; the group is the child's own.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = done_rx.recv_timeout(Duration::from_millis(200));
        let bytes = output.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(CommandOutput {
            exit,
            output: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        berth_network::dns::set_kernel_hostname(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn file(data: &[u8], mode: u32, append: bool) -> FileWrite {
        // SAFETY: geteuid/getegid have no arguments and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        FileWrite {
            data: data.to_vec(),
            mode,
            uid,
            gid,
            append,
        }
    }

    #[test]
    fn writes_atomically_appends_and_refuses_symlinked_parents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let ops = Linux;
        ops.write_file(
            root,
            Path::new("etc/a/b/c.conf"),
            &file(b"one\n", 0o640, false),
        )
        .expect("write");
        let p = root.join("etc/a/b/c.conf");
        assert_eq!(std::fs::read(&p).expect("read"), b"one\n");
        assert_eq!(std::fs::metadata(&p).expect("meta").mode() & 0o7777, 0o640);
        ops.write_file(
            root,
            Path::new("etc/a/b/c.conf"),
            &file(b"two\n", 0o600, true),
        )
        .expect("append");
        assert_eq!(std::fs::read(&p).expect("read"), b"one\ntwo\n");
        assert_eq!(std::fs::metadata(&p).expect("meta").mode() & 0o7777, 0o600);
        ops.write_file(
            root,
            Path::new("etc/a/b/c.conf"),
            &file(b"three\n", 0o644, false),
        )
        .expect("replace");
        assert_eq!(std::fs::read(&p).expect("read"), b"three\n");
        let leftovers: Vec<_> = std::fs::read_dir(root.join("etc/a/b"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");

        // A symlink swapped in for a parent: refused, nothing written outside.
        let outside = tempfile::tempdir().expect("outside");
        std::os::unix::fs::symlink(outside.path(), root.join("etc/link")).expect("symlink");
        let err = ops
            .write_file(root, Path::new("etc/link/x"), &file(b"no", 0o644, false))
            .expect_err("through a symlink");
        assert!(
            matches!(err.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)),
            "{err}"
        );
        assert!(!outside.path().join("x").exists());
        // Appending through a symlinked file is refused too.
        std::os::unix::fs::symlink(outside.path().join("y"), root.join("etc/y")).expect("symlink");
        assert!(ops
            .write_file(root, Path::new("etc/y"), &file(b"no", 0o644, true))
            .is_err());
    }

    #[test]
    fn commands_output_exit_and_timeout() {
        let ops = Linux;
        let argv = |s: &str| vec!["/bin/sh".to_string(), "-c".into(), s.into()];
        let out = ops
            .run_command(
                &argv("echo out; echo err >&2; exit 3"),
                Duration::from_secs(10),
            )
            .expect("run");
        assert_eq!(out.exit, Some(Exit::Code(3)));
        assert!(out.output.contains("out\n") && out.output.contains("err\n"));
        let out = ops
            .run_command(&argv("sleep 30"), Duration::from_millis(200))
            .expect("run");
        assert_eq!(out.exit, None);
        // Something left running in the background, holding the output pipe
        // open, does not hold it up: it returns (exited, with the output)
        // while the background process still runs.
        let out = ops
            .run_command(
                &argv("sleep 1000 & echo background=$!; echo started"),
                Duration::from_secs(600),
            )
            .expect("run");
        assert_eq!(out.exit, Some(Exit::Code(0)), "{}", out.output);
        assert!(out.output.contains("started\n"), "{}", out.output);
        let pid: libc::pid_t = out
            .output
            .lines()
            .find_map(|l| l.strip_prefix("background="))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {:?}", out.output));
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        // SAFETY: the background sleep this test started; nothing else has its pid yet.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(alive, "returned only after the background process ended");
        assert!(ops
            .run_command(&["/nonexistent/cmd".to_string()], Duration::from_secs(1))
            .is_err());
    }
}
