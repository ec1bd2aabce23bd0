//! The real [`Runtime`]: youki's libcontainer, driven through the [`Forker`].
//!
//! Layout under the runtime root (`/run/berth` on a system):
//!
//! ```text
//! containers/<id>/config.json   the generated OCI spec
//! containers/<id>/stdout, stderr named pipes: the container's output (see `output_fifo`)
//! containers/<id>/rootfs/       overlay: image layers + upper/ and work/ beside it
//! removing/<pid>.<n>.<id>/      deleted containers' bundles, being removed (see `removal`)
//! youki/<id>/                   libcontainer's state (state.json, notify socket)
//! ```

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use berth_images::rootfs::RootfsPlan;
use nix::sys::wait::{waitpid, WaitPidFlag};
use rustix::process::{WaitId, WaitIdOptions};

use super::forker::{Forker, Request, Response};
use super::spec::{self, ImageInfo, SpecContext, VolumeSource};
use super::{
    ContainerConfig, ContainerState, Created, Exit, Runtime, RuntimeError, Signal, SignalFate,
    Status,
};

/// Where the runtime keeps things.
mod bundle;
use bundle::{
    children, exists_in_root, fifo_reader, host_device, mount_points, output_fifo, read_in_root,
    unmount, STDERR_FIFO, STDOUT_FIFO,
};
mod removal;
use removal::Removals;

#[derive(Debug, Clone)]
pub struct YoukiConfig {
    /// Bundles and libcontainer state (`/run/berth`).
    pub root: PathBuf,
    /// Named volumes (`/var/lib/berth/volumes`).
    pub volumes_dir: PathBuf,
    /// The `berth` binary to bind into every container (e.g. `/proc/self/exe` resolved).
    pub berth_binary: Option<PathBuf>,
}

#[derive(Debug)]
struct Tracked {
    pid: i32,
    pidfd: OwnedFd,
    exit: Option<Exit>,
}

/// libcontainer behind the forker.
#[derive(Debug)]
pub struct Youki {
    forker: Forker,
    config: YoukiConfig,
    containers: Mutex<HashMap<String, Tracked>>,
    removals: Removals,
}

fn io<'a>(id: &'a str, step: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        id: id.to_string(),
        step,
        source,
    }
}

/// The same rule libcontainer applies, checked before the id becomes a path.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
}

impl Youki {
    /// Forks the forker — call this before the process starts any thread — and
    /// prepares the runtime root.
    pub fn new(config: YoukiConfig) -> Result<Self, RuntimeError> {
        let state_root = config.root.join("youki");
        for dir in [config.root.join("containers"), state_root.clone()] {
            std::fs::create_dir_all(&dir).map_err(io("-", "create the runtime root"))?;
        }
        let forker = Forker::spawn(&state_root).map_err(|source| RuntimeError::Forker {
            id: "-".into(),
            step: "start the forker",
            source,
        })?;
        let removals = Removals::new(config.root.join("removing"))
            .map_err(io("-", "prepare the removals' directory"))?;
        Ok(Youki {
            forker,
            config,
            containers: Mutex::new(HashMap::new()),
            removals,
        })
    }

    /// Waits at most `timeout` for the bundles of deleted containers to be
    /// unmounted and removed (`delete` leaves that to threads); false when
    /// some are not yet. A process that is about to end calls it, so no
    /// container's root stays mounted after it.
    pub fn finish_removals(&self, timeout: Duration) -> bool {
        self.removals.finish(timeout)
    }

    pub fn config(&self) -> &YoukiConfig {
        &self.config
    }

    /// The forker's pid (a child of this process, like the containers' inits).
    pub fn forker_pid(&self) -> i32 {
        self.forker.pid()
    }

    /// `containers/<id>`: config.json, rootfs/, upper/, work/.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("containers").join(id)
    }

    /// libcontainer's state directory for `id`.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("youki").join(id)
    }

    fn tracked(&self) -> MutexGuard<'_, HashMap<String, Tracked>> {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn call(
        &self,
        id: &str,
        step: &'static str,
        request: &Request,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(Option<i32>, Option<String>), RuntimeError> {
        match self.forker.call(request, fds) {
            Ok(Response::Ok { pid, status }) => Ok((pid, status)),
            Ok(Response::Error { message }) => Err(RuntimeError::Container {
                id: id.into(),
                step,
                message,
            }),
            Err(source) => Err(RuntimeError::Forker {
                id: id.into(),
                step,
                source,
            }),
        }
    }

    /// Reaps exited children that libcontainer left behind: its intermediate
    /// processes are created as siblings too, so they are this process's children.
    /// Only zombies named `youki:…` that are not a tracked container's init are
    /// touched, so other children's statuses are never stolen. Returns how many.
    pub fn reap_strays(&self) -> usize {
        let inits: Vec<i32> = self.tracked().values().map(|t| t.pid).collect();
        let mut reaped = 0;
        for pid in children() {
            if pid == self.forker.pid() || inits.contains(&pid) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            let state = stat[close + 1..].trim_start().chars().next();
            if comm.starts_with("youki:") && state == Some('Z') {
                let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WALL;
                if waitpid(nix::unistd::Pid::from_raw(pid), Some(flags)).is_ok() {
                    reaped += 1;
                }
            }
        }
        reaped
    }

    /// Host paths of volumes: named volumes and missing bind sources are
    /// created as directories, as Docker does.
    fn prepare_volumes(&self, config: &ContainerConfig) -> Result<(), RuntimeError> {
        let id = config.id.as_str();
        for volume in &config.service.volumes {
            let path = volume.host_path(&config.service_name, &self.config.volumes_dir);
            if !matches!(volume.source, Some(VolumeSource::Path(_))) || !path.exists() {
                std::fs::create_dir_all(&path).map_err(io(id, "create a volume directory"))?;
            }
        }
        Ok(())
    }

    fn mount_root(
        &self,
        config: &ContainerConfig,
        bundle: &Path,
        rootfs: &Path,
        berth_mount: bool,
    ) -> Result<(), RuntimeError> {
        let id = config.id.as_str();
        let rootfs_err = |source| RuntimeError::Rootfs {
            id: id.into(),
            source,
        };
        if config.service.read_only && config.files.is_empty() {
            // A read-only root without an upper layer cannot take mount points the
            // image lacks, nor the service's `write_files` (a `ca_certs` bundle);
            // use it when it needs neither, else a writable overlay that the
            // runtime remounts read-only.
            let plan = RootfsPlan::new(&config.image.layers, bundle, true).map_err(rootfs_err)?;
            match plan.mount(rootfs) {
                Ok(()) => {
                    let missing = mount_points(config, berth_mount)
                        .iter()
                        .any(|p| !exists_in_root(rootfs, p));
                    if !missing {
                        return Ok(());
                    }
                    unmount(rootfs).map_err(io(id, "unmount the read-only root"))?;
                }
                Err(e) => log::debug!(
                    "container `{id}`: read-only root without an upper layer failed ({e}); using a writable overlay remounted read-only"
                ),
            }
        }
        let plan = RootfsPlan::new(&config.image.layers, bundle, false).map_err(rootfs_err)?;
        plan.mount(rootfs).map_err(rootfs_err)
    }

    fn create_inner(
        &self,
        config: &ContainerConfig,
        bundle: &Path,
    ) -> Result<(i32, OwnedFd, OwnedFd), RuntimeError> {
        let id = config.id.as_str();
        let rootfs = bundle.join("rootfs");
        self.prepare_volumes(config)?;
        let berth_mount = self.config.berth_binary.is_some();
        self.mount_root(config, bundle, &rootfs, berth_mount)?;
        if !config.files.is_empty() {
            let report =
                crate::host::write_files::write_into(&crate::host::Linux, &rootfs, &config.files);
            report.log();
        }

        let mut host_devices = std::collections::BTreeMap::new();
        for path in spec::device_paths(&config.service) {
            if let Some(dev) = host_device(&path) {
                host_devices.insert(path, dev);
            }
        }
        let image = ImageInfo {
            config: config.image.config.clone(),
            passwd: read_in_root(&rootfs, "etc/passwd"),
            group: read_in_root(&rootfs, "etc/group"),
        };
        let ctx = SpecContext {
            berth_binary: self.config.berth_binary.clone(),
            volumes_dir: self.config.volumes_dir.clone(),
            rootfs: PathBuf::from("rootfs"),
            cgroup_namespace: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            host_devices,
            service_network: config.service_network.clone(),
            environment: config.environment.clone(),
        };
        let spec = spec::generate(&config.service_name, &config.service, &image, &ctx)?;
        let text = serde_json::to_vec_pretty(&spec)
            .map_err(|e| io(id, "write config.json")(std::io::Error::other(e)))?;
        std::fs::write(bundle.join("config.json"), text).map_err(io(id, "write config.json"))?;

        let (out_r, out_w) =
            output_fifo(&bundle.join(STDOUT_FIFO)).map_err(io(id, "create the stdout FIFO"))?;
        let (err_r, err_w) =
            output_fifo(&bundle.join(STDERR_FIFO)).map_err(io(id, "create the stderr FIFO"))?;
        let request = Request::Create {
            id: id.into(),
            bundle: bundle.to_path_buf(),
        };
        let (pid, _) = self.call(id, "create", &request, &[out_w.as_fd(), err_w.as_fd()])?;
        drop((out_w, err_w));
        let pid = pid.ok_or_else(|| RuntimeError::Container {
            id: id.into(),
            step: "create",
            message: "libcontainer reported no init pid".into(),
        })?;
        if config.service.privileged {
            let made = crate::host::devices::fill(pid);
            if let Some((rel, e)) = made.failed.first() {
                log::warn!(
                    "{id}: {} of the host's device nodes not made in its /dev, {}: {e}",
                    made.failed.len(),
                    rel.display()
                );
            }
        }
        Ok((pid, out_r, err_r))
    }

    /// The container's cgroup, as its bundle's spec names it.
    fn cgroup_path(&self, id: &str) -> Option<PathBuf> {
        let text = std::fs::read(self.bundle_dir(id).join("config.json")).ok()?;
        let spec: serde_json::Value = serde_json::from_slice(&text).ok()?;
        spec["linux"]["cgroupsPath"].as_str().map(PathBuf::from)
    }

    /// Deletes a container whose init this process has reaped, without a
    /// round trip to the forker: nothing of it runs but what outlived its
    /// init (with the host's pid namespace), and its cgroup, libcontainer's
    /// state directory and the bundle are all that is left. libcontainer's
    /// own delete would load the state and build a cgroup manager for it
    /// (on cgroup v1 a dozen reads of `/proc/self/mountinfo`), about 2 ms of
    /// a container's life that ends in the same removals. Berth's specs have
    /// no hooks for it to run.
    fn remove_stopped(&self, id: &str) -> Result<(), RuntimeError> {
        let cgroup = self
            .cgroup_path(id)
            .ok_or_else(|| RuntimeError::Container {
                id: id.into(),
                step: "delete",
                message: "its spec names no cgroup".into(),
            })?;
        super::cgroups::remove(&cgroup).map_err(io(id, "remove its cgroup"))?;
        match std::fs::remove_dir_all(self.state_dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(id, "remove libcontainer's state")(e))
            }
            _ => Ok(()),
        }
    }

    /// Removes what `create` set up on the host: the root mount and the
    /// bundle. The id is free when this returns; the unmount and removal may
    /// still be under way.
    fn remove_bundle(&self, id: &str) -> Result<(), RuntimeError> {
        let bundle = self.bundle_dir(id);
        if !bundle.exists() {
            return Ok(());
        }
        self.removals
            .remove(&bundle)
            .map_err(io(id, "remove the bundle"))
    }

    fn reap(&self, id: &str, block: Option<Duration>) -> Result<Option<Exit>, RuntimeError> {
        let mut tracked = self.tracked();
        let Some(t) = tracked.get_mut(id) else {
            return Err(RuntimeError::Unknown { id: id.into() });
        };
        if let Some(exit) = t.exit {
            return Ok(Some(exit));
        }
        let deadline = block.map(|d| Instant::now() + d);
        loop {
            let status = match rustix::process::waitid(
                WaitId::PidFd(t.pidfd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(s) => s,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io(id, "reap the init")(e.into())),
            };
            let exit = status.and_then(|s| {
                s.exit_status()
                    .map(Exit::Code)
                    .or(s.terminating_signal().map(Exit::Signal))
            });
            if let Some(exit) = exit {
                t.exit = Some(exit);
                return Ok(Some(exit));
            }
            match deadline {
                Some(d) if Instant::now() < d => std::thread::sleep(Duration::from_millis(5)),
                _ => return Ok(None),
            }
        }
    }
}

impl Drop for Youki {
    fn drop(&mut self) {
        if !self.removals.finish(Duration::from_secs(10)) {
            log::warn!("deleted containers' bundles are still being removed");
        }
    }
}

impl Runtime for Youki {
    fn create(&self, config: &ContainerConfig) -> Result<Created, RuntimeError> {
        let id = config.id.as_str();
        if !valid_id(id) {
            return Err(RuntimeError::Container {
                id: id.into(),
                step: "create",
                message: "a container id is letters, digits and `_+-.`".into(),
            });
        }
        self.reap_strays();
        let bundle = self.bundle_dir(id);
        // A container whose init has exited (or that was never ours) is not
        // running: what is left of it is in the way, never in use.
        let live = self.tracked().get(id).is_some_and(|t| t.exit.is_none());
        if (bundle.exists() || self.state_dir(id).exists()) && !live {
            // Left by a delete that failed (a cgroup that was busy then): try
            // again rather than refuse this service for good.
            if let Err(e) = self.delete(id) {
                log::warn!("{id}: removing what an earlier run left: {e}");
            }
        }
        if bundle.exists() || self.state_dir(id).exists() {
            return Err(RuntimeError::Container {
                id: id.into(),
                step: "create",
                message: "a container with this id exists; delete it first".into(),
            });
        }
        std::fs::create_dir_all(&bundle).map_err(io(id, "create the bundle"))?;
        let (pid, stdout, stderr) = match self.create_inner(config, &bundle) {
            Ok(v) => v,
            Err(e) => {
                // Leave nothing behind: libcontainer's state and cgroup, our mount.
                let _ = self.call(
                    id,
                    "clean up",
                    &Request::Delete {
                        id: id.into(),
                        force: true,
                    },
                    &[],
                );
                let _ = std::fs::remove_dir_all(self.state_dir(id));
                let _ = self.remove_bundle(id);
                self.reap_strays();
                return Err(e);
            }
        };
        // The init is our unreaped child, so its pid cannot be reused before we
        // reap it: the pidfd names exactly this process.
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid).ok_or_else(|| RuntimeError::Container {
                id: id.into(),
                step: "create",
                message: format!("libcontainer reported init pid {pid}"),
            })?,
            rustix::process::PidfdFlags::empty(),
        )
        .map_err(|e| io(id, "open a pidfd for the init")(e.into()))?;
        let shared = pidfd
            .try_clone()
            .map_err(io(id, "duplicate the init's pidfd"))?;
        self.tracked().insert(
            id.to_string(),
            Tracked {
                pid,
                pidfd,
                exit: None,
            },
        );
        self.reap_strays();
        Ok(Created {
            id: id.to_string(),
            pid,
            pidfd: Some(shared),
            stdout,
            stderr,
        })
    }

    fn root_of(&self, id: &str) -> Option<PathBuf> {
        let root = self.bundle_dir(id).join("rootfs");
        (valid_id(id) && self.tracked().contains_key(id) && root.is_dir()).then_some(root)
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.call(id, "start", &Request::Start { id: id.into() }, &[])
            .map(|_| ())
    }

    fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        if self.tracked().get(id).is_some_and(|t| t.exit.is_some()) {
            // Already reaped: there is nothing left to signal.
            return Ok(());
        }
        let request = Request::Kill {
            id: id.into(),
            signal: signal as i32,
            all: false,
        };
        self.call(id, "kill", &request, &[]).map(|_| ())
    }

    fn signal_fate(&self, id: &str, signal: Signal) -> Option<SignalFate> {
        let pid = match self.tracked().get(id) {
            Some(t) if t.exit.is_some() => return Some(SignalFate::Gone),
            Some(t) => t.pid,
            None => return None,
        };
        Some(berth_sys::process::signal_fate(pid, signal as i32))
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        if self.tracked().get(id).is_some_and(|t| t.exit.is_some()) {
            match self.remove_stopped(id) {
                Ok(()) => {
                    self.tracked().remove(id);
                    self.remove_bundle(id)?;
                    self.reap_strays();
                    return Ok(());
                }
                Err(e) => log::debug!("{id}: {e}; deleting through libcontainer"),
            }
        }
        if let Some(cgroup) = self.cgroup_path(id) {
            match super::cgroups::clear_descendants(&cgroup) {
                Ok(0) => {}
                Ok(n) => log::info!("{id}: removed {n} cgroup(s) it had made below its own"),
                Err(e) => log::warn!("{id}: {e}"),
            }
        }
        let request = Request::Delete {
            id: id.into(),
            force: true,
        };
        if let Err(e) = self.call(id, "delete", &request, &[]) {
            // libcontainer gives a busy cgroup little time; on a loaded
            // machine killed processes (an engine's orphans, with `pid:
            // host`) take longer to go. Kill and wait, then once more.
            let Some(cgroup) = self.cgroup_path(id) else {
                return Err(e);
            };
            log::warn!("{id}: {e}; emptying its cgroup and deleting again");
            if let Err(busy) = super::cgroups::empty(&cgroup, Duration::from_secs(10)) {
                log::warn!("{id}: {busy}");
            }
            self.call(id, "delete", &request, &[])?;
        }
        if self.tracked().contains_key(id) {
            // delete killed everything in the container; collect the init.
            self.reap(id, Some(Duration::from_secs(10)))?;
            self.tracked().remove(id);
        }
        self.remove_bundle(id)?;
        self.reap_strays();
        Ok(())
    }

    fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let exit = match self.tracked().get(id) {
            Some(t) => t.exit,
            None => None,
        };
        let (pid, status) = self.call(id, "state", &Request::State { id: id.into() }, &[])?;
        let status = match status.as_deref() {
            Some("creating") => Status::Creating,
            Some("created") => Status::Created,
            Some("running") => Status::Running,
            Some("paused") => Status::Paused,
            _ => Status::Stopped,
        };
        Ok(ContainerState {
            id: id.into(),
            status: if exit.is_some() {
                Status::Stopped
            } else {
                status
            },
            pid,
            exit,
        })
    }

    fn try_wait(&self, id: &str) -> Result<Option<Exit>, RuntimeError> {
        self.reap(id, None)
    }

    /// Sleeps on the init's pidfd rather than polling, so the exit is seen
    /// the moment it happens (the default polls every 10 ms).
    fn wait_timeout(&self, id: &str, timeout: Duration) -> Result<Option<Exit>, RuntimeError> {
        let pidfd = match self.tracked().get(id) {
            Some(t) if t.exit.is_some() => return Ok(t.exit),
            Some(t) => t
                .pidfd
                .try_clone()
                .map_err(io(id, "duplicate the init's pidfd"))?,
            None => return Err(RuntimeError::Unknown { id: id.into() }),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.reap(id, None)? {
                return Ok(Some(exit));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut fds = [libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one initialised pollfd that outlives the call; the pidfd
            // is owned by this function and open.
            let _ = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        }
    }

    fn reattach(&self, id: &str) -> Result<Option<super::Output>, RuntimeError> {
        if !valid_id(id) {
            return Err(RuntimeError::Unknown { id: id.into() });
        }
        let bundle = self.bundle_dir(id);
        let (out, err) = (bundle.join(STDOUT_FIFO), bundle.join(STDERR_FIFO));
        if !out.exists() || !err.exists() {
            // Created by a berthd that used anonymous pipes: nothing to open.
            return Ok(None);
        }
        Ok(Some(super::Output {
            stdout: fifo_reader(&out).map_err(io(id, "open the stdout FIFO"))?,
            stderr: fifo_reader(&err).map_err(io(id, "open the stderr FIFO"))?,
        }))
    }

    fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<super::ExecOutput, RuntimeError> {
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io(id, "create the exec pipe")(e.into()))?;
        let request = Request::Exec {
            id: id.into(),
            args: argv.to_vec(),
        };
        // One pipe for both streams: a healthcheck's output is only shown, never parsed.
        let result = self.call(id, "exec", &request, &[out_w.as_fd(), out_w.as_fd()]);
        drop(out_w);
        self.reap_strays();
        let pid = result?.0.ok_or_else(|| RuntimeError::Container {
            id: id.into(),
            step: "exec",
            message: "libcontainer reported no pid".into(),
        })?;
        // Created as a sibling, the process is our unreaped child: the pidfd is exact.
        let pidfd = rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| RuntimeError::Container {
                id: id.into(),
                step: "exec",
                message: format!("libcontainer reported pid {pid}"),
            })
            .and_then(|p| {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                    .map_err(|e| io(id, "open a pidfd for the exec")(e.into()))
            })?;
        let deadline = Instant::now() + timeout;
        let mut output = Vec::new();
        let mut pipe_open = true;
        let exit = loop {
            let status = match rustix::process::waitid(
                WaitId::PidFd(pidfd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(s) => s,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io(id, "reap the exec")(e.into())),
            };
            if let Some(exit) = status.and_then(|s| {
                s.exit_status()
                    .map(Exit::Code)
                    .or(s.terminating_signal().map(Exit::Signal))
            }) {
                break Some(exit);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                let _ =
                    rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED);
                break None;
            }
            let mut fds = [
                libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if pipe_open { out_r.as_raw_fd() } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: `fds` is an initialised array of two pollfds that outlives
            // the call; both descriptors are owned by this function and open.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if n > 0 && fds[1].revents != 0 {
                let mut buf = [0u8; 4096];
                match nix::unistd::read(out_r.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(_) => pipe_open = false,
                    Ok(n) => {
                        let room = 4096usize.saturating_sub(output.len());
                        output.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
        };
        Ok(super::ExecOutput {
            exit,
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
