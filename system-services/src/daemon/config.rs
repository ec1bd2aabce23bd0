//! The config as berthd takes it: loaded from its sources, never failing
//! (what is wrong is reported and left out).

use super::*;

/// What berthd takes from the config.
pub(super) struct Config {
    pub(super) services: BTreeMap<String, Service>,
    pub(super) environment: BTreeMap<String, String>,
    pub(super) level: log::LevelFilter,
    pub(super) host: host::Settings,
    /// The user engine's service name (`berth.engine.name`).
    pub(super) engine: String,
    /// `berth.engine.preload`: archives to load into it.
    pub(super) preload: Vec<String>,
    /// `berth.engine.swarm`: the swarm it initialises or joins.
    pub(super) swarm: berth_configs::model::Swarm,
    /// `berth.install`: the live system installs itself at boot.
    pub(super) install: berth_configs::model::Install,
    /// `berth.datasources`, as the config said before this boot's probe.
    pub(super) datasources: Vec<String>,
    /// dockerd's `daemon.json` settings from `berth.engine`, merged into the
    /// host's file once `write_files` has written it ([`merge_daemon_json`]).
    pub(super) engine_settings: serde_json::Map<String, serde_json::Value>,
}

pub(super) fn level(l: Option<LogLevel>) -> log::LevelFilter {
    match l {
        Some(LogLevel::Error) => log::LevelFilter::Error,
        Some(LogLevel::Warn) => log::LevelFilter::Warn,
        Some(LogLevel::Debug) => log::LevelFilter::Debug,
        Some(LogLevel::Trace) => log::LevelFilter::Trace,
        Some(LogLevel::Info) | None => log::LevelFilter::Info,
    }
}

/// Loads the config; never fails: unreadable or invalid sources are reported
/// (in berthd's log) and left out, and with nothing usable the defaults apply.
pub(super) fn load_config(source: &ConfigSource) -> (Config, Vec<(log::Level, String)>) {
    let mut messages = Vec::new();
    let loaded: Loaded = match source {
        ConfigSource::Layout(root) => match Layout::new(root).load() {
            Ok(l) => l,
            Err(e) => {
                messages.push((
                    log::Level::Error,
                    format!("{e}; running on the built-in defaults"),
                ));
                berth_configs::load(vec![berth_configs::defaults()])
            }
        },
        ConfigSource::Files(paths) => {
            let mut docs = Vec::new();
            for path in paths {
                match std::fs::read_to_string(path) {
                    Ok(text) => docs.push(berth_configs::parse_document(
                        &berth_configs::sources::source_name(path),
                        &text,
                    )),
                    Err(e) => messages.push((
                        log::Level::Error,
                        format!("cannot read {}: {e}", path.display()),
                    )),
                }
            }
            berth_configs::load(docs)
        }
    };
    messages.extend(
        loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error() || d.severity == berth_configs::Severity::Warning)
            .map(|d| {
                let level = if d.is_error() {
                    log::Level::Error
                } else {
                    log::Level::Warn
                };
                (level, d.to_string())
            }),
    );
    let host = host::Settings::from_config(&loaded.config);
    let berth = loaded.config.berth;
    let environment: BTreeMap<String, String> = berth
        .environment
        .0
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let engine = berth
        .engine
        .name
        .as_deref()
        .map(|n| berth_configs::choice::canonical(berth_configs::choice::Slot::Engine, n))
        .unwrap_or_else(|| berth_configs::choice::Slot::Engine.built_in().into());
    let mut services = berth.services;
    let mut engine_settings = serde_json::Map::new();
    // `berth.engine.args`, its daemon settings and `.environment` go to the
    // engine's daemon; the settings are dockerd's flags, so only docker's.
    if let Some(service) = services.get_mut(&engine) {
        let flags = if engine == "docker" {
            engine_settings = berth.engine.daemon_json(&berth.registries);
            berth.engine.dockerd_flags()
        } else {
            if berth.engine.has_docker_settings() {
                messages.push((
                    log::Level::Warn,
                    format!("berth.engine: registry_mirror, storage_driver, log_driver, log_opts and tls are docker's settings; the engine `{engine}` does not take them"),
                ));
            }
            berth.engine.args.clone()
        };
        if !flags.is_empty() {
            let mut argv = service
                .command
                .as_ref()
                .map(|c| c.argv())
                .unwrap_or_default();
            argv.extend(flags);
            service.command = Some(berth_configs::forms::Command::Exec(argv));
        }
        for (k, v) in berth.engine.environment.0.iter() {
            if let Some(v) = v {
                service
                    .environment
                    .0
                    .entry(k.clone())
                    .or_insert(Some(v.clone()));
            }
        }
    }
    let config = Config {
        services: with_environment(services, &environment),
        environment,
        level: level(berth.log.level),
        host,
        engine,
        engine_settings,
        preload: berth.engine.preload,
        swarm: berth.engine.swarm,
        install: berth.install,
        datasources: berth.datasources,
    };
    (config, messages)
}
