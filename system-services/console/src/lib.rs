//! `berth console-init`: the entrypoint of the `console` system service.
//!
//! It makes the console container match the cloud-config — users, SSH keys,
//! sudo rules, the SSH server's settings and host keys — then stays as the
//! container's init, keeping the SSH server and the login prompts running. The
//! same code serves both consoles: the Debian one (OpenSSH, agetty, bash) and
//! the busybox one (Dropbear, busybox getty and sh), told apart by what the
//! image has. Everything is rooted at a directory (`/` in the container) so
//! the tests run on a temp dir.
//!
//! - [`accounts`]: passwd/group/shadow/gshadow, edited atomically and idempotently.
//! - [`users`]: the default user `berth` and `users:` entries → accounts.
//! - [`home`]: home directories and `authorized_keys`.
//! - [`keys`]: checking `ssh_authorized_keys` lines.
//! - [`sudoers`]: the sudo rules file in `/etc/sudoers.d`.
//! - [`shells`]: login shells the console has, and `/etc/shells`.
//! - [`sshd`]: the sshd drop-in, host keys on the state partition.
//! - [`dropbear`]: OpenSSH or Dropbear: host key conversion, command lines.
//! - [`getty`]: which consoles get a getty (agetty or busybox's), with autologin or not.
//! - [`supervise`]: start, restart, reap, stop.
//! - [`notify`]: the SSH server's readiness message, which wakes the supervisor.

pub mod accounts;
pub mod disk_links;
pub mod dropbear;
pub mod files;
pub mod getty;
pub mod home;
pub mod host_files;
pub mod keys;
pub mod notify;
pub mod shells;
pub mod sshd;
pub mod sudoers;
pub mod supervise;
pub mod users;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_configs::CloudConfig;

use crate::dropbear::SshServer;
use crate::getty::{Getty, GettyProgram};
use crate::supervise::{Program, Report};
use crate::users::Created;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load the config: {0}")]
    Config(#[from] berth_configs::Error),
    #[error(transparent)]
    Accounts(#[from] accounts::AccountsError),
    #[error(transparent)]
    Write(#[from] files::WriteError),
    #[error(transparent)]
    Sshd(#[from] sshd::SshdError),
    #[error(transparent)]
    Supervise(#[from] supervise::SuperviseError),
}

/// Things worth telling the operator that do not stop the console: a skipped
/// key, user or console. The console must come up whatever the config says,
/// so that a bad config can be fixed through it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Warnings(pub Vec<String>);

impl Warnings {
    pub fn push(&mut self, warning: String) {
        self.0.push(warning);
    }
}

/// Where things are; the defaults are the console image's.
#[derive(Debug, Clone)]
pub struct Options {
    /// The console's root: accounts, homes, sshd config, devices, and the config sources.
    pub root: PathBuf,
    /// Which SSH server to set up and run.
    pub ssh_server: SshServer,
    /// Which getty runs the login prompts.
    pub getty: GettyProgram,
    pub ssh_keygen: PathBuf,
    pub sshd: PathBuf,
    pub dropbear: PathBuf,
    pub dropbearkey: PathBuf,
    pub dropbearconvert: PathBuf,
}

impl Options {
    /// The programs at their paths in the console images, the SSH server and
    /// getty chosen by which of them the image under `root` has.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Options {
            ssh_server: SshServer::detect(&root),
            getty: GettyProgram::detect(&root),
            root,
            ssh_keygen: PathBuf::from("/usr/bin/ssh-keygen"),
            sshd: PathBuf::from(dropbear::SSHD),
            dropbear: PathBuf::from(dropbear::DROPBEAR),
            dropbearkey: PathBuf::from(dropbear::DROPBEARKEY),
            dropbearconvert: PathBuf::from(dropbear::DROPBEARCONVERT),
        }
    }
}

/// What [`setup`] made, for the supervisor and the ready line.
#[derive(Debug, Clone)]
pub struct Setup {
    pub users: Vec<Created>,
    pub server: SshServer,
    pub sshd: sshd::Settings,
    /// The host keys the server offers, as it sees them.
    pub host_keys: Vec<PathBuf>,
    pub gettys: Vec<Getty>,
    pub warnings: Warnings,
}

/// Applies `config` to the console under `options.root`: accounts, homes, keys,
/// sudoers, sshd config, host keys. Running it again with the same config
/// changes nothing.
pub fn setup(config: &CloudConfig, options: &Options) -> Result<Setup, Error> {
    let root = &options.root;
    let mut warnings = Warnings::default();
    let specs = users::specs(config, &mut warnings);
    let docker_gid = users::docker_gid(root);
    let mut accounts = accounts::Accounts::load(root)?;
    let mut created = Vec::new();
    for spec in &specs {
        created.push(users::apply(
            &mut accounts,
            spec,
            root,
            docker_gid,
            &mut warnings,
        )?);
    }
    for user in &created {
        users::join_groups(&mut accounts, user, docker_gid)?;
    }
    accounts.save()?;
    for user in &created {
        let home = if user.spec.create_home {
            home::ensure_home(root, user).map(|_| ())
        } else {
            Ok(())
        };
        let keys = home::valid_keys(user, &mut warnings);
        let installed = home.and_then(|()| home::install_keys(root, user, &keys));
        if let Err(e) = installed {
            // One user's broken home must not keep the others (or sshd) out.
            warnings.push(format!("user {}: {e}", user.spec.name));
        }
    }
    let shells: Vec<&str> = created.iter().map(|u| u.shell.as_str()).collect();
    shells::write(root, &shells)?;
    sudoers::write(root, &created, &mut warnings)?;
    if let Err(e) = host_files::link(root) {
        warnings.push(format!("cannot use the host's hosts and resolv.conf: {e}"));
    }
    if let Err(e) = host_files::link_engine_socket(root) {
        warnings.push(format!("cannot link the docker CLI to the engine: {e}"));
    }

    let settings = sshd::Settings::from_config(config);
    let host_keys = options
        .ssh_server
        .prepare(&settings, options, &mut warnings)?;

    let (gettys, skipped) =
        getty::gettys(root, &config.berth.console.autologin, users::DEFAULT_USER);
    for why in skipped {
        warnings.push(format!("no login prompt on {why}"));
    }
    if matches!(options.getty, GettyProgram::Busybox(_)) {
        getty::write_autologin(root, &gettys)?;
    }
    Ok(Setup {
        users: created,
        server: options.ssh_server,
        sshd: settings,
        host_keys,
        gettys,
        warnings,
    })
}

/// The programs the console keeps running: the SSH server first, then the
/// login prompts.
pub fn programs(setup: &Setup, options: &Options) -> Vec<Program> {
    let mut programs = vec![setup.server.program(&setup.sshd, &setup.host_keys, options)];
    programs.extend(setup.gettys.iter().map(|g| g.program(&options.getty)));
    programs
}

/// The line printed once the SSH server accepts connections.
pub fn ready_line(setup: &Setup) -> String {
    format!(
        "ready ({} on port {}, users: {})",
        setup.server.name(),
        setup.sshd.port,
        users::names(&setup.users).join(", ")
    )
}

/// Where console-init says the console is ready (its SSH server accepts
/// connections), relative to the console's root: the default consoles'
/// healthcheck is `file:/run/berth-console.ready`, so the machine's ready line
/// waits for a login to be possible. In the container's own /run, so a
/// restarted console starts without it.
pub const READY_FILE: &str = "run/berth-console.ready";

/// Writes [`READY_FILE`] under `root` holding the ready line.
pub fn mark_ready(root: &Path, line: &str) -> Result<(), berth_sys::atomic::WriteError> {
    let path = root.join(READY_FILE);
    // On tmpfs, and only for this run of the container: no fsync needed.
    let options = berth_sys::atomic::Options::mode(0o644).not_durable();
    let write = || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        berth_sys::atomic::write(&path, format!("{line}\n").as_bytes(), &options)
    };
    write().map_err(|source| berth_sys::atomic::WriteError {
        path: path.clone(),
        source,
    })
}

/// Whether a TCP socket listens on `port` in this network namespace: what
/// makes a connection to it succeed. Read from `/proc/net/tcp{,6}` rather
/// than by connecting, since each connection makes sshd start a session
/// process (a re-exec loading its libraries again) that would compete with
/// the boot for the CPU; a connection is the answer only without procfs.
pub fn listening(port: u16) -> bool {
    let tables: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect();
    if tables.is_empty() {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        return TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok();
    }
    tables.iter().any(|table| table_listens(table, port))
}

/// Whether a `/proc/net/tcp` or `tcp6` table has a socket listening on
/// `port`: a line whose local address ends in `:<port in hex>` and whose
/// state is `0A` (`TCP_LISTEN`).
pub fn table_listens(table: &str, port: u16) -> bool {
    let wanted = format!("{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        local.and_then(|l| l.rsplit_once(':')).map(|(_, p)| p) == Some(wanted.as_str())
            && state == Some("0A")
    })
}

/// Loads the config from the sources under `root`; rejected sources are warnings.
pub fn load_config(root: &Path, report: &mut dyn Report) -> Result<CloudConfig, Error> {
    let loaded = berth_configs::Layout::new(root).load()?;
    for source in &loaded.rejected {
        report.line(format!(
            "warning: {source} has errors and is left out (see `berth config validate`)"
        ));
    }
    Ok(loaded.config)
}

/// How often console-init looks for new block devices for `/dev/disk/by-*`
/// when the kernel's uevents cannot tell it.
const DISK_SCAN: std::time::Duration = std::time::Duration::from_secs(2);
/// How often it looks anyway when they can: a safety net only.
const DISK_SCAN_WITH_UEVENTS: std::time::Duration = std::time::Duration::from_secs(300);

/// The kernel's device events, raising SIGIO so that they wake the
/// supervisor's loop; `None` (with a warning) when they cannot be had.
fn device_events(report: &mut dyn Report) -> Option<berth_sys::uevents::Uevents> {
    let uevents = notify::ignore_sigio()
        .and_then(|()| berth_sys::uevents::Uevents::open())
        .and_then(|u| {
            u.signal_arrivals()?;
            Ok(u)
        });
    match uevents {
        Ok(u) => Some(u),
        Err(e) => {
            report.line(format!(
                "warning: device events: {e}; new disks reach /dev/disk within {}s",
                DISK_SCAN.as_secs()
            ));
            None
        }
    }
}

/// console-init: load the config, set the console up, then supervise until SIGTERM.
pub fn run(options: &Options, report: &mut dyn Report) -> Result<(), Error> {
    let started = Instant::now();
    let config = load_config(&options.root, report)?;
    let setup = setup(&config, options)?;
    let set_up = started.elapsed();
    for warning in &setup.warnings.0 {
        report.line(format!("warning: {warning}"));
    }
    let mut programs = programs(&setup, options);
    // Debian's sshd says when it listens; without the socket, the tick finds it.
    let notify = match notify::NotifySocket::bind(&options.root.join(notify::NOTIFY_SOCKET)) {
        Ok(socket) => {
            if let Some(server) = programs.first_mut() {
                server.env.push((
                    notify::NOTIFY_SOCKET_ENV.into(),
                    socket.path().display().to_string(),
                ));
            }
            Some(socket)
        }
        Err(e) => {
            report.line(format!("warning: readiness socket: {e}"));
            None
        }
    };
    let port = setup.sshd.port;
    let ready = ready_line(&setup);
    // A disk attached, or the partitions `berth install` wrote, reach
    // /dev/disk as the kernel announces them.
    let uevents = device_events(report);
    let scan_every = if uevents.is_some() {
        DISK_SCAN_WITH_UEVENTS
    } else {
        DISK_SCAN
    };
    let mut disk_links = disk_links::DiskLinks::default();
    let mut last_scan: Option<std::time::Instant> = None;
    supervise::run(
        programs,
        report,
        || {
            if let Some(socket) = &notify {
                socket.drain();
            }
            listening(port)
        },
        |report| {
            if let Err(e) = mark_ready(&options.root, &ready) {
                report.line(format!("warning: {e}"));
            }
            report.line(ready);
            // Where the console's start went, for `berth logs console`.
            let total = started.elapsed();
            report.line(format!(
                "ready {:.2}s after console-init started: setup {:.2}s, then the SSH server {:.2}s",
                total.as_secs_f64(),
                set_up.as_secs_f64(),
                (total - set_up).as_secs_f64()
            ));
            berth_sys::alloc::trim();
        },
        |report| {
            // A restarted server says it is ready again; unread, ten such
            // messages would fill the socket and block the next sender.
            if let Some(socket) = &notify {
                socket.drain();
            }
            let announced = uevents.as_ref().is_some_and(|u| u.drain());
            if announced || last_scan.is_none_or(|t| t.elapsed() >= scan_every) {
                last_scan = Some(std::time::Instant::now());
                if let Err(e) = disk_links.refresh(&options.root, announced) {
                    report.line(format!("warning: /dev/disk links: {e}"));
                }
            }
            last_scan.map_or(scan_every, |t| scan_every.saturating_sub(t.elapsed()))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_listens_only_for_a_listening_socket_on_the_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            \x20  0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1600 1\n\
            \x20  1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 1700 1\n";
        assert!(table_listens(table, 22));
        // Connected (state 01), not listening.
        assert!(!table_listens(table, 8080));
        // The remote side's port is not the local one.
        assert!(!table_listens(table, 0xD2F0));
        assert!(!table_listens("", 22));
    }

    #[test]
    fn a_bound_listener_is_seen_and_a_closed_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(listening(port));
        drop(listener);
        assert!(!listening(port));
    }
}
