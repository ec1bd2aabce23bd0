//! `berth console-init`: the entrypoint of the `console` system service.
//!
//! It makes the console container match the cloud-config — users, SSH keys,
//! sudo rules, the sshd settings and host keys — then stays as the container's
//! init, keeping sshd and the login prompts running. Everything is rooted at a
//! directory (`/` in the container) so the tests run on a temp dir.
//!
//! - [`accounts`]: passwd/group/shadow/gshadow, edited atomically and idempotently.
//! - [`users`]: the default user `berth` and `users:` entries → accounts.
//! - [`home`]: home directories and `authorized_keys`.
//! - [`keys`]: checking `ssh_authorized_keys` lines.
//! - [`sudoers`]: the sudo rules file in `/etc/sudoers.d`.
//! - [`sshd`]: the sshd drop-in, host keys on the state partition.
//! - [`getty`]: which consoles get an agetty, and with autologin or not.
//! - [`supervise`]: start, restart, reap, stop.

pub mod accounts;
pub mod files;
pub mod getty;
pub mod home;
pub mod host_files;
pub mod keys;
pub mod sshd;
pub mod sudoers;
pub mod supervise;
pub mod users;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_configs::CloudConfig;

use crate::getty::Getty;
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
    pub ssh_keygen: PathBuf,
    pub sshd: PathBuf,
    pub agetty: PathBuf,
}

impl Options {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Options {
            root: root.into(),
            ssh_keygen: PathBuf::from("/usr/bin/ssh-keygen"),
            sshd: PathBuf::from("/usr/sbin/sshd"),
            agetty: PathBuf::from(getty::AGETTY),
        }
    }
}

/// What [`setup`] made, for the supervisor and the ready line.
#[derive(Debug, Clone)]
pub struct Setup {
    pub users: Vec<Created>,
    pub sshd: sshd::Settings,
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
    sudoers::write(root, &created, &mut warnings)?;
    if let Err(e) = host_files::link(root) {
        warnings.push(format!("cannot use the host's hosts and resolv.conf: {e}"));
    }
    if let Err(e) = host_files::link_engine_socket(root) {
        warnings.push(format!("cannot link the docker CLI to the engine: {e}"));
    }

    let settings = sshd::Settings::from_config(config);
    sshd::write_config(root, &settings)?;
    let key_dir = root.join(
        settings
            .host_key_dir
            .strip_prefix("/")
            .unwrap_or(&settings.host_key_dir),
    );
    sshd::ensure_host_keys(&key_dir, &options.ssh_keygen)?;
    sshd::ensure_privsep_dir(root)?;

    let (gettys, skipped) =
        getty::gettys(root, &config.berth.console.autologin, users::DEFAULT_USER);
    for why in skipped {
        warnings.push(format!("no login prompt on {why}"));
    }
    Ok(Setup {
        users: created,
        sshd: settings,
        gettys,
        warnings,
    })
}

/// The programs the console keeps running.
pub fn programs(setup: &Setup, options: &Options) -> Vec<Program> {
    let mut programs = vec![Program {
        name: "sshd".into(),
        // -D: stay in the foreground as our child; -e: log to stderr, which berthd keeps.
        argv: vec![options.sshd.display().to_string(), "-D".into(), "-e".into()],
    }];
    let agetty = options.agetty.display().to_string();
    programs.extend(setup.gettys.iter().map(|g| g.program(&agetty)));
    programs
}

/// The line printed once sshd accepts connections.
pub fn ready_line(setup: &Setup) -> String {
    format!(
        "ready (sshd on port {}, users: {})",
        setup.sshd.port,
        users::names(&setup.users).join(", ")
    )
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
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

/// console-init: load the config, set the console up, then supervise until SIGTERM.
pub fn run(options: &Options, report: &mut dyn Report) -> Result<(), Error> {
    let config = load_config(&options.root, report)?;
    let setup = setup(&config, options)?;
    for warning in &setup.warnings.0 {
        report.line(format!("warning: {warning}"));
    }
    let programs = programs(&setup, options);
    let port = setup.sshd.port;
    let ready = ready_line(&setup);
    supervise::run(
        programs,
        report,
        || listening(port),
        |report| report.line(ready),
    )?;
    Ok(())
}
