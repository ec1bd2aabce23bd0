//! berthd's entrypoint (ARCHITECTURE.md §3): fork the forker while the process
//! is still single-threaded, block the signals berthd handles (so every thread
//! started later inherits the mask and only the main thread takes them), load
//! the config — a bad one never stops berthd, it runs on what is valid or on
//! the defaults —, start the supervisor and the API, and stop every service in
//! order on SIGTERM/SIGINT. SIGHUP reloads the config.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_configs::model::{LogLevel, Service};
use berth_configs::{Layout, Loaded};
use nix::sys::signal::{SigSet, Signal};

use crate::api::{self, Api, Control, ReloadError};
use crate::host::{self, HostOps, HostPaths, Stage};
use crate::logs::{self, LogConfig, LogDir, Logger};
use crate::runtime::{ImageLayers, Runtime, Youki, YoukiConfig};
use crate::supervisor::{self, ImageError, Images, ReconcileReport, StoreImages, Supervisor};

mod config;
mod notify;
use config::load_config;

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A Berth system's sources under this root (`/`): defaults, OEM,
    /// user-data, local changes, kernel command line.
    Layout(PathBuf),
    /// Exactly these files, merged in order, without the built-in defaults (tests).
    Files(Vec<PathBuf>),
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The API socket (`/run/berth/berth.sock`).
    pub socket: PathBuf,
    /// Container bundles, runtime state, re-adoption state (`/run/berth`).
    pub run_dir: PathBuf,
    /// Service logs and berthd's own (`/var/log/berth`).
    pub log_dir: PathBuf,
    /// The image store's root (`/var/lib/berth`: `images/` and `layers/` below).
    pub images: PathBuf,
    /// The OS's read-only store of pre-unpacked system images
    /// (`/usr/share/berth`), looked at first; skipped when absent.
    pub system_images: Option<PathBuf>,
    /// Named volumes (`/var/lib/berth/volumes`).
    pub volumes: PathBuf,
    pub config: ConfigSource,
    /// The `berth` binary to bind into every container.
    pub berth_binary: Option<PathBuf>,
    /// Also print berthd's log on stderr (the console).
    pub echo_log: bool,
    /// Where host settings (hostname, sysctl, modules, mounts, write_files,
    /// bootcmd, runcmd) are applied.
    pub host: HostSettings,
}

/// Where [`Options::host`] applies host settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HostSettings {
    /// On the machine (`/`) when the config is the system's own
    /// (`ConfigSource::Layout("/")`); not at all otherwise, so a berthd run
    /// on explicit config files (tests) never changes the host it runs on.
    #[default]
    Auto,
    Off,
    /// Files below this root; sysctl, modules, mounts, hostname and bootcmd
    /// on the machine itself.
    Root(PathBuf),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            socket: PathBuf::from("/run/berth/berth.sock"),
            run_dir: PathBuf::from("/run/berth"),
            log_dir: PathBuf::from(logs::DEFAULT_DIR),
            images: PathBuf::from("/var/lib/berth"),
            system_images: Some(PathBuf::from("/usr/share/berth")),
            volumes: PathBuf::from("/var/lib/berth/volumes"),
            config: ConfigSource::Layout(PathBuf::from("/")),
            berth_binary: std::fs::canonicalize("/proc/self/exe").ok(),
            echo_log: true,
            host: HostSettings::Auto,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start the container runtime: {0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("cannot block signals: {0}")]
    Signals(#[source] nix::Error),
    #[error("cannot start the service manager: {0}")]
    Supervisor(#[from] supervisor::SupervisorError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
}

/// A user-data `#!` script as a command for the console container: its
/// bytes travel base64-encoded (any interpreter, any content), are written to
/// a private temporary file and run from there.
fn script_command(name: &str, body: &[u8]) -> berth_configs::forms::Command {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    let shell = format!(
        "d=$(mktemp -d) && printf '%s' '{b64}' | base64 -d > \"$d/script\" && chmod 700 \"$d/script\" && echo 'user-data script {name}:' && \"$d/script\"; rc=$?; rm -rf \"$d\"; exit $rc"
    );
    berth_configs::forms::Command::Exec(vec!["/bin/sh".into(), "-c".into(), shell])
}

/// `berth.install`: on the live system only (never on an installed one,
/// whose user-data may well still say it), in a thread of its own — after
/// the network is up when the config comes by URL — then powers off or
/// reboots as asked. A refusal or failure is logged and the system stays up.
fn unattended_install(
    paths: &HostPaths,
    disk: &str,
    install: &berth_configs::model::Install,
    supervisor: &Arc<Supervisor>,
) {
    use berth_configs::model::InstallThen;
    let medium = paths
        .root
        .join(berth_iso::install::LIVE_MEDIUM.trim_start_matches('/'));
    if !medium.join("boot/vmlinuz").exists() {
        log::info!("berth.install: not a live system; nothing to install");
        return;
    }
    let disk = std::path::PathBuf::from(disk);
    let install = install.clone();
    let root = paths.root.clone();
    let supervisor = Arc::clone(supervisor);
    let spawned = std::thread::Builder::new()
        .name("install".into())
        .spawn(move || {
            let by_url = install
                .config
                .as_deref()
                .is_some_and(|c| c.starts_with("http://") || c.starts_with("https://"));
            if by_url
                && !supervisor.wait_for(std::time::Duration::from_secs(300), |s| {
                    s.service("network").is_some_and(|n| n.ready)
                })
            {
                log::warn!("berth.install: the network is not ready; trying anyway");
            }
            log::info!("berth.install: installing onto {}", disk.display());
            let result = berth_iso::install::payload_from(
                &medium,
                berth_iso::bootloader::Images::in_dir(
                    &root.join(berth_iso::bootloader::SHIPPED_DIR.trim_start_matches('/')),
                ),
                berth_iso::slots::os_version(&root).unwrap_or_else(|| "unknown".into()),
            )
            .and_then(|mut payload| {
                payload.config = berth_iso::install::config_files(
                    install.config.as_deref(),
                    &root.join("var/lib/berth/config"),
                )?;
                berth_iso::install::install(
                    &berth_iso::install::Host::default(),
                    &disk,
                    install.force,
                    &payload,
                    &LoggedProgress(std::sync::Mutex::new(0)),
                )
            });
            match result {
                Ok(written) => log::info!(
                    "berth.install: installed onto {} (slot A {} MiB, sha256 {} read back)",
                    disk.display(),
                    written.rootfs_bytes >> 20,
                    &written.rootfs_sha256[..16]
                ),
                Err(e) => {
                    log::error!("berth.install: {e}");
                    return;
                }
            }
            let action = match install.then.unwrap_or(InstallThen::Poweroff) {
                InstallThen::Stay => return,
                InstallThen::Reboot => berth_sys::power::Action::Reboot,
                InstallThen::Poweroff => berth_sys::power::Action::PowerOff,
            };
            if let Err(e) = berth_sys::power::request(action) {
                log::error!("berth.install: cannot {}: {e}", action.name());
            }
        });
    if let Err(e) = spawned {
        log::error!("berth.install: cannot start its thread: {e}");
    }
}

/// Install progress as log lines, a step each and a line per tenth.
struct LoggedProgress(std::sync::Mutex<u64>);

impl berth_iso::disk::Progress for LoggedProgress {
    fn step(&self, what: &str) {
        log::info!("berth.install: {what}");
    }

    fn bytes(&self, what: &str, done: u64, total: u64) {
        let tenth = done * 10 / total.max(1);
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tenth > *last {
            *last = tenth;
            log::info!(
                "berth.install: {what}: {} of {} MiB",
                done >> 20,
                total >> 20
            );
        }
    }
}

/// Where dockerd reads its settings, below the host root (the docker service
/// binds the host's `/etc/docker`).
const DAEMON_JSON: &str = "etc/docker/daemon.json";

/// Merges the engine's settings (`berth.engine.*`) into the host's
/// `/etc/docker/daemon.json`: lists are joined, and a key the file already
/// sets otherwise keeps the file's value. One file, so dockerd never sees a
/// setting both as a flag and in the file (which it refuses), and what the
/// engine runs with is there to read in the console.
fn merge_daemon_json(
    root: &std::path::Path,
    settings: &serde_json::Map<String, serde_json::Value>,
) {
    use serde_json::Value;
    if settings.is_empty() {
        return;
    }
    let path = root.join(DAEMON_JSON);
    let mut merged = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => map,
            Ok(_) | Err(_) => {
                log::error!(
                    "{}: not a JSON object; berth.engine settings not added to it",
                    path.display()
                );
                return;
            }
        },
        Err(_) => serde_json::Map::new(),
    };
    let before = merged.clone();
    for (key, value) in settings {
        match (merged.get_mut(key), value) {
            (None, _) => {
                merged.insert(key.clone(), value.clone());
            }
            (Some(Value::Array(have)), Value::Array(add)) => {
                for item in add {
                    if !have.contains(item) {
                        have.push(item.clone());
                    }
                }
            }
            (Some(have), _) if have != value => log::warn!(
                "berth.engine: {} sets `{key}` to {have}; it stays",
                path.display()
            ),
            (Some(_), _) => {}
        }
    }
    if merged == before {
        return;
    }
    let mut data = serde_json::to_vec_pretty(&Value::Object(merged)).unwrap_or_default();
    data.push(b'\n');
    let file = host::FileWrite {
        data,
        mode: 0o644,
        uid: 0,
        gid: 0,
        append: false,
    };
    match host::HostOps::write_file(&host::Linux, root, std::path::Path::new(DAEMON_JSON), &file) {
        Ok(()) => log::info!("berth.engine: settings written to /{DAEMON_JSON}"),
        Err(e) => log::error!("berth.engine: writing {}: {e}", path.display()),
    }
}

/// `berth.environment` folded into each service's own environment, below it
/// (the service's value wins; the spec layers them the same way), so that a
/// reload that changes `berth.environment` recreates the services it changes.
fn with_environment(
    mut services: BTreeMap<String, Service>,
    environment: &BTreeMap<String, String>,
) -> BTreeMap<String, Service> {
    for service in services.values_mut() {
        for (k, v) in environment {
            if service.environment.get(k).is_none() {
                service.environment.0.insert(k.clone(), Some(v.clone()));
            }
        }
    }
    services
}

/// The root host settings apply to, if any.
fn host_root(options: &Options) -> Option<PathBuf> {
    match (&options.host, &options.config) {
        (HostSettings::Off, _) => None,
        (HostSettings::Root(root), _) => Some(root.clone()),
        (HostSettings::Auto, ConfigSource::Layout(root)) if root == std::path::Path::new("/") => {
            Some(root.clone())
        }
        (HostSettings::Auto, _) => None,
    }
}

/// Applies host settings and logs what happened; never fails.
fn apply_host(ops: &dyn HostOps, paths: &HostPaths, settings: &host::Settings, stage: Stage) {
    let report = host::apply(ops, paths, settings, stage);
    report.log();
    if !report.problems.is_empty() {
        log::warn!(
            "host settings: {} done, {} problem(s) (each logged above)",
            report.done.len(),
            report.problems.len()
        );
    }
}

/// Used when the image store cannot be opened: every start says why.
struct NoImages(Arc<berth_images::StoreError>);

impl Images for NoImages {
    fn layers(&self, reference: &str) -> Result<ImageLayers, ImageError> {
        Err(ImageError::NoStore {
            reference: reference.to_string(),
            source: Arc::clone(&self.0),
        })
    }
}

/// The system store (shipped in the OS, read-only) and the user store, in
/// that order: the OS's own services always run the images it was built with.
struct LayeredImages {
    stores: Vec<(PathBuf, Box<dyn Images>)>,
}

fn open_images(options: &Options) -> LayeredImages {
    let system = options
        .system_images
        .iter()
        .filter(|root| root.join("images/index.json").is_file());
    let mut stores: Vec<(PathBuf, Box<dyn Images>)> = Vec::new();
    for root in system.chain([&options.images]) {
        let images: Box<dyn Images> = match berth_images::Store::open(root) {
            Ok(store) => Box::new(StoreImages::new(store)),
            Err(e) => {
                log::error!("image store {}: {e}", root.display());
                Box::new(NoImages(Arc::new(e)))
            }
        };
        stores.push((root.clone(), images));
    }
    LayeredImages { stores }
}

impl Images for LayeredImages {
    fn layers(&self, reference: &str) -> Result<ImageLayers, ImageError> {
        let mut errors = Vec::new();
        for (root, images) in &self.stores {
            match images.layers(reference) {
                Ok(layers) => return Ok(layers),
                Err(e) => errors.push((root.clone(), e)),
            }
        }
        Err(ImageError::Nowhere(errors))
    }
}

struct DaemonControl {
    source: ConfigSource,
    supervisor: Arc<Supervisor>,
    /// Where host settings apply (`None`: they do not).
    host: Option<HostPaths>,
    runtime: Arc<dyn Runtime>,
    logs: Arc<LogDir>,
    /// The user engine running now: a reload that switches engines preloads
    /// what is waiting for the new one.
    engine: std::sync::Mutex<String>,
    /// The swarm settings applied last: a reload that changes them applies
    /// them again (a node already in a swarm stays as it is).
    swarm: std::sync::Mutex<berth_configs::model::Swarm>,
    /// The supervisor's `write_files` entries for services' own filesystems.
    service_files: Arc<std::sync::Mutex<supervisor::ServiceFiles>>,
}

impl DaemonControl {
    /// Replaces the entries for services' filesystems, writing the new ones
    /// into the containers running now (a service made later gets them all).
    fn update_service_files(&self, new: supervisor::ServiceFiles) {
        let mut current = self
            .service_files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (service, entries) in &new {
            let old = current.get(service);
            let added: Vec<_> = entries
                .iter()
                .filter(|e| !old.is_some_and(|o| o.contains(e)))
                .cloned()
                .collect();
            if added.is_empty() {
                continue;
            }
            if let Some(root) = self.runtime.root_of(service) {
                log::info!("write_files: {} new file(s) into {service}", added.len());
                host::write_files::write_into(&host::Linux, &root, &added).log();
            }
        }
        *current = new;
    }
}

impl Control for DaemonControl {
    fn reload(&self) -> Result<ReconcileReport, ReloadError> {
        let (config, messages) = load_config(&self.source);
        for (level, m) in &messages {
            log::log!(*level, "config: {m}");
        }
        // At boot a bad source is left out so that the machine comes up; on
        // a reload the running config is better than a part of the new one.
        let findings: Vec<String> = messages
            .iter()
            .filter(|(level, _)| *level == log::Level::Error)
            .map(|(_, m)| m.clone())
            .collect();
        if !findings.is_empty() {
            return Err(ReloadError::Invalid { findings });
        }
        if let Some(paths) = &self.host {
            apply_host(&host::Linux, paths, &config.host, Stage::Reload);
            host::kernel_args::apply(paths, &config.host.kernel_args).log();
            self.update_service_files(config.host.write_files.services.clone());
        }
        if let Some(paths) = &self.host {
            merge_daemon_json(&paths.root, &config.engine_settings);
        }
        let report = self.supervisor.reconcile(config.services)?;
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if *engine != config.engine {
            log::info!("user engine: {} → {}", *engine, config.engine);
            if let Some(paths) = &self.host {
                host::preload::spawn(
                    Arc::clone(&self.supervisor),
                    Arc::clone(&self.runtime),
                    Arc::clone(&self.logs),
                    config.engine.clone(),
                    &config.preload,
                    &paths.root,
                );
            }
            *engine = config.engine.clone();
        }
        drop(engine);
        let mut swarm = self.swarm.lock().unwrap_or_else(|e| e.into_inner());
        if *swarm != config.swarm {
            if self.host.is_some() {
                host::swarm::spawn(
                    Arc::clone(&self.supervisor),
                    Arc::clone(&self.runtime),
                    Arc::clone(&self.logs),
                    config.engine,
                    &config.swarm,
                );
            }
            *swarm = config.swarm;
        }
        Ok(report)
    }

    fn shutdown(&self) {
        // The main thread waits for SIGTERM; this makes the API's request one.
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGTERM);
    }
}

/// Runs berthd until SIGTERM/SIGINT (or `POST /v1/shutdown`), then stops every
/// service in reverse dependency order. Call it before this process starts any thread.
pub fn run(options: Options) -> Result<(), DaemonError> {
    limit_malloc_arenas();
    // PID 1's pipe, taken (and its variable dropped) while nothing else runs.
    let notifier = notify::Notifier::from_env();
    std::env::remove_var(berth_api::NOTIFY_FD_ENV);
    // 1. The forker, while there is one thread.
    let runtime = Arc::new(Youki::new(YoukiConfig {
        root: options.run_dir.clone(),
        volumes_dir: options.volumes.clone(),
        berth_binary: options.berth_binary.clone(),
    })?);
    // 2. Signals are taken with sigwait in this thread; threads started from
    // here on inherit the blocked mask.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().map_err(DaemonError::Signals)?;

    // 3. Config and berthd's own log.
    let (config, messages) = load_config(&options.config);
    let log_dir = Arc::new(LogDir::new(LogConfig::new(&options.log_dir)));
    match log_dir.writer(logs::BERTHD) {
        Ok(writer) => {
            if Logger::new(writer, config.level)
                .with_stderr(options.echo_log)
                .install()
                .is_err()
            {
                // Another logger (a test harness) is in place; keep it.
            }
        }
        Err(e) => eprintln!("berthd: no log file ({e}); logging to stderr only"),
    }
    log::info!(
        "berthd {} starting (pid {}, runtime forker {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        runtime.forker_pid()
    );
    for (level, m) in &messages {
        log::log!(*level, "config: {m}");
    }

    // 3b. Datasources: only for the system's own config. The probe runs
    // here, after the forker exists (it starts threads) and before host
    // settings, so what a cloud says (hostname, keys, write_files) is
    // applied on this boot; when it changed the cache, the config is loaded again.
    let host_paths = host_root(&options).map(|root| HostPaths::new(root, &options.run_dir));
    let mut config = config;
    if let (Some(paths), ConfigSource::Layout(root)) = (&host_paths, &options.config) {
        let begun = std::time::Instant::now();
        let probe = crate::datasource::Probe {
            root: root.clone(),
            options: crate::datasource::Options::default(),
        };
        let (report, changed) = probe.run(&config.datasources);
        if changed {
            let (reloaded, messages) = load_config(&options.config);
            for (level, m) in &messages {
                log::log!(*level, "config: {m}");
            }
            config = reloaded;
        }
        // User-data scripts: once per instance, after runcmd, in the same place.
        let layout = berth_configs::Layout::new(&paths.root);
        for (name, body) in berth_configs::datasource::take_pending_scripts(&layout) {
            config.host.runcmd.push(script_command(&name, &body));
        }
        log::info!(
            "datasources: config loaded {} ms after berthd started (probe {} ms, in force: {})",
            begun.elapsed().as_millis(),
            report.millis,
            report
                .winner
                .clone()
                .unwrap_or_else(|| if report.used_cache {
                    "cache".into()
                } else {
                    "none".into()
                })
        );
    }

    // 4. Host settings, before any service starts.
    match &host_paths {
        Some(paths) => apply_host(&host::Linux, paths, &config.host, Stage::Boot),
        None => log::info!("host settings: not applied (the config is not the system's own)"),
    }
    if let Some(paths) = &host_paths {
        merge_daemon_json(&paths.root, &config.engine_settings);
    }

    // 5. The supervisor.
    let images: Arc<dyn Images> = Arc::new(open_images(&options));
    let mut sup_options = supervisor::Options::new(&options.run_dir);
    sup_options.environment = config.environment;
    if host_paths.is_some() {
        *sup_options
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            config.host.write_files.services.clone();
    }
    let service_files = Arc::clone(&sup_options.files);
    let exec_runtime: Arc<dyn Runtime> = Arc::clone(&runtime) as Arc<dyn Runtime>;
    let removals = Arc::clone(&runtime);
    let supervisor = Arc::new(Supervisor::start(
        runtime,
        images,
        Arc::clone(&log_dir),
        sup_options,
        config.services,
    )?);
    // runcmd: in the console service, once it is up, once per boot.
    // Preloaded images: into the user engine, once it is up, once each.
    if let Some(paths) = &host_paths {
        host::runcmd::spawn(
            Arc::clone(&supervisor),
            Arc::clone(&exec_runtime),
            Arc::clone(&log_dir),
            config.host.runcmd.clone(),
            paths.state.clone(),
        );
        host::preload::spawn(
            Arc::clone(&supervisor),
            Arc::clone(&exec_runtime),
            Arc::clone(&log_dir),
            config.engine.clone(),
            &config.preload,
            &paths.root,
        );
        // The swarm: initialised or joined once the engine is up.
        host::swarm::spawn(
            Arc::clone(&supervisor),
            Arc::clone(&exec_runtime),
            Arc::clone(&log_dir),
            config.engine.clone(),
            &config.swarm,
        );
        // Disks attached later (and other new device nodes): into the
        // privileged services' own /dev.
        host::devices::spawn(Arc::clone(&supervisor));
        // For the next boot; nothing in this one waits for it.
        host::kernel_args::spawn(paths.clone(), config.host.kernel_args.clone());
    }

    if let (Some(paths), Some(disk)) = (&host_paths, &config.install.disk) {
        unattended_install(paths, disk, &config.install, &Arc::clone(&supervisor));
    }

    // 6. The API.
    let control = Arc::new(DaemonControl {
        source: options.config.clone(),
        supervisor: Arc::clone(&supervisor),
        host: host_paths,
        runtime: exec_runtime,
        logs: Arc::clone(&log_dir),
        engine: std::sync::Mutex::new(config.engine.clone()),
        swarm: std::sync::Mutex::new(config.swarm.clone()),
        service_files,
    });
    let server = api::serve(
        &options.socket,
        Api {
            supervisor: Arc::clone(&supervisor),
            logs: log_dir,
            control: Arc::clone(&control) as Arc<dyn Control>,
            allowed_uid: 0,
        },
    )?;
    log::info!("API listening on {}", options.socket.display());
    if let Some(notifier) = notifier {
        if let Err(e) = notifier.spawn(Arc::clone(&supervisor)) {
            log::warn!("cannot start telling PID 1 of changes: {e}");
        }
    }

    loop {
        match signals.wait() {
            Ok(Signal::SIGHUP) => match control.reload() {
                Ok(r) => log::info!("config reloaded: {r:?}"),
                Err(e) => log::error!("config reload: {e}"),
            },
            Ok(sig) => {
                log::info!("{sig}: stopping");
                break;
            }
            Err(e) => {
                log::error!("waiting for signals: {e}");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
    if let Err(e) = supervisor.shutdown() {
        log::error!("stopping services: {e}");
    }
    // No container's root may stay mounted once berthd has gone: PID 1
    // unmounts the state partition next.
    if !removals.finish_removals(std::time::Duration::from_secs(10)) {
        log::warn!("deleted containers' bundles were still being removed at exit");
    }
    server.close();
    log::info!("berthd stopped");
    Ok(())
}

/// glibc gives threads their own malloc arenas (up to 8 per core), each with
/// memory of its own; berthd's threads mostly wait, and with ~3 per service
/// the arenas cost more resident memory than the contention they avoid. (A
/// static musl build has a single allocator and nothing to set.)
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before any
    // thread exists, so no allocation races with it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests;
