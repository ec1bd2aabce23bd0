//! Host settings from the cloud-config, applied by berthd before it starts any
//! service and again when the config changes (ARCHITECTURE.md §3, step 3).
//!
//! ```text
//!  boot:    bootcmd → berth.modules → berth.sysctl → mounts → write_files → hostname
//!           (berth.kernel_args, for the next boot: beside the services; see there)
//!           (then services start; runcmd runs in the console container once it is up)
//!  reload:  only what changed: write_files entries, sysctl values, hostname,
//!           new modules and mounts — never bootcmd
//! ```
//!
//! Every setting is a small module computing what to do; the side effects go
//! through [`HostOps`] so tests run everything against [`Recording`] and a
//! temporary root. [`Linux`] is the real thing. Nothing here is fatal: each
//! problem becomes one [`Problem`] naming the config field
//! (`write_files[2].path: …`), the other entries still apply, and berthd
//! goes on.
//!
//! What was applied is saved in `<run_dir>/host/applied.json` (a tmpfs, so per
//! boot): a berthd restarted by PID 1 in the same boot, and a reload, apply only
//! the entries that are new or changed — an `append: true` file is not
//! appended to twice, bootcmd does not run twice. Entries are remembered by a
//! hash ([`fingerprint`]), never their contents (write_files can carry
//! secrets), in a file only root can read (0600 in a 0700 directory).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_configs::forms::{Command, Scalar};
use berth_configs::model::CloudConfig;
use serde::{Deserialize, Serialize};

use crate::runtime::Exit;

pub mod commands;
pub mod devices;
pub mod hostname;
pub mod kernel_args;
pub mod linux;
pub mod machine_id;
pub mod modules;
pub mod mounts;
pub mod preload;
pub mod recording;
pub mod runcmd;
pub mod swarm;
pub mod sysctl;
pub mod write_files;

pub use linux::Linux;
pub use recording::Recording;

/// One file to write, as [`HostOps::write_file`] gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Keep the current content and add `data` after it.
    pub append: bool,
}

/// A mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCall {
    pub source: String,
    /// The host path to mount on (created when missing).
    pub target: PathBuf,
    pub fstype: String,
    /// `MS_*` flags.
    pub flags: libc::c_ulong,
    /// The filesystem's own options.
    pub data: String,
}

/// What a command run on the host did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// `None`: it ran past its timeout and was killed.
    pub exit: Option<Exit>,
    /// Its stdout and stderr, interleaved.
    pub output: String,
}

/// The side effects host settings have. Reading files (`/etc/passwd`,
/// `modules.dep`, sysfs) is not behind the trait: tests point those at
/// temporary directories instead.
pub trait HostOps: Send + Sync {
    /// Writes `file` at `rel` below `root`, atomically (a temporary file in
    /// the same directory, fsync, rename), creating missing parent
    /// directories (0755). No component of `rel`'s parent may be a symlink:
    /// implementations open them without following links.
    fn write_file(&self, root: &Path, rel: &Path, file: &FileWrite) -> io::Result<()>;
    /// Writes `value` to the sysctl file `path` (`/proc/sys/net/ipv4/ip_forward`).
    fn write_sysctl(&self, path: &Path, value: &str) -> io::Result<()>;
    fn mount(&self, call: &MountCall) -> io::Result<()>;
    /// swapon(2); `flags` carries the priority (`SWAP_FLAG_PREFER`).
    fn swapon(&self, device: &Path, flags: i32) -> io::Result<()>;
    /// Loads a module file with `params` (`berth_sys::modules::load_module_file`);
    /// `compressed` asks the kernel to decompress.
    fn load_module(&self, path: &Path, params: &str, compressed: bool) -> io::Result<()>;
    /// Runs `argv` on the host, waits at most `timeout` (then kills it).
    fn run_command(&self, argv: &[String], timeout: Duration) -> io::Result<CommandOutput>;
    fn set_hostname(&self, name: &str) -> io::Result<()>;
}

/// Where the host's files are: all below `root` (`/`), which tests replace
/// with a temporary directory.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub root: PathBuf,
    /// `/proc/sys`.
    pub proc_sys: PathBuf,
    /// `/lib/modules/<release>`; `None` when the release is unknown.
    pub modules: Option<PathBuf>,
    /// `/dev`, where `LABEL=`/`UUID=` devices are looked for.
    pub dev: PathBuf,
    /// `/sys/class/block`.
    pub sys_block: PathBuf,
    /// Per-boot state: what was applied, bootcmd and runcmd markers (`/run/berth/host`).
    pub state: PathBuf,
}

impl HostPaths {
    /// The usual places below `root`; state in `run_dir/host`.
    pub fn new(root: impl Into<PathBuf>, run_dir: &Path) -> HostPaths {
        let root = root.into();
        HostPaths {
            proc_sys: root.join("proc/sys"),
            modules: berth_sys::modules::kernel_release().map(|r| root.join("lib/modules").join(r)),
            dev: root.join("dev"),
            sys_block: root.join("sys/class/block"),
            state: run_dir.join("host"),
            root,
        }
    }

    fn applied_file(&self) -> PathBuf {
        self.state.join("applied.json")
    }
}

/// The host settings of a cloud-config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub hostname: Option<String>,
    /// `write_files`, routed between the host and the services' filesystems.
    pub write_files: write_files::Routed,
    pub bootcmd: Vec<Command>,
    pub runcmd: Vec<Command>,
    pub mounts: Vec<Vec<Scalar>>,
    pub sysctl: BTreeMap<String, Scalar>,
    pub modules: Vec<String>,
    /// Not applied by [`apply`]: [`kernel_args`] runs beside the services.
    pub kernel_args: Vec<String>,
}

impl Settings {
    pub fn from_config(config: &CloudConfig) -> Settings {
        Settings {
            hostname: config.hostname.clone(),
            write_files: {
                let mut routed = write_files::route(&config.write_files, &config.berth.services);
                write_files::trust(
                    &mut routed,
                    &config.ca_certs.trusted,
                    &config.berth.services,
                );
                routed
            },
            bootcmd: config.bootcmd.clone(),
            runcmd: config.runcmd.clone(),
            mounts: config.mounts.clone(),
            sysctl: config.berth.sysctl.clone(),
            modules: config.berth.modules.clone(),
            kernel_args: config.berth.kernel_args.clone(),
        }
    }
}

/// One thing that did not work, naming the config field it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `write_files[2].path`, `berth.sysctl.net.ipv4.ip_forward`, `mounts[0]`.
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What applying came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One line per thing done (`write_files[0]: wrote /etc/motd`).
    pub done: Vec<String>,
    pub problems: Vec<Problem>,
}

impl Report {
    /// Logs every problem as one error line (what was done is logged as it happens).
    pub fn log(&self) {
        for p in &self.problems {
            log::error!("{p}");
        }
    }

    fn done(&mut self, line: String) {
        log::info!("{line}");
        self.done.push(line);
    }
}

/// What has been applied this boot (only what succeeded, so failures are
/// retried on the next reload). write_files, modules and mounts entries are
/// kept as [`fingerprint`]s: equal config, equal hash, within one build of
/// berthd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Applied {
    pub hostname: Option<String>,
    /// The id written to `/etc/machine-id` this boot.
    pub machine_id: Option<String>,
    pub write_files: Vec<String>,
    pub sysctl: BTreeMap<String, String>,
    pub modules: Vec<String>,
    pub mounts: Vec<String>,
}

impl Applied {
    pub fn load(paths: &HostPaths) -> Option<Applied> {
        let text = std::fs::read_to_string(paths.applied_file()).ok()?;
        match serde_json::from_str(&text) {
            Ok(a) => Some(a),
            Err(e) => {
                log::warn!(
                    "{}: {e}; applying every host setting again",
                    paths.applied_file().display()
                );
                None
            }
        }
    }

    /// Atomically, 0600 in a 0700 directory (configs' writer for secrets).
    fn save(&self, paths: &HostPaths) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        berth_configs::sources::write_atomic(&paths.applied_file(), &text).map_err(io::Error::other)
    }
}

/// What [`Applied`] remembers of an entry: the sha256 of its `Debug` form
/// (`sha256:<hex>`), so the file says whether an entry changed without
/// holding what it wrote (a write_files content, a mount's password).
pub(crate) fn fingerprint(entry: &impl fmt::Debug) -> String {
    berth_images::Digest::of(format!("{entry:?}").as_bytes()).to_string()
}

/// When [`apply`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// berthd starting, before services: bootcmd runs (once per boot).
    Boot,
    /// A config reload: changed settings only, no bootcmd.
    Reload,
}

/// Applies `settings`: everything not yet applied this boot (all of it on a
/// fresh boot; only new or changed entries after a reload or a berthd
/// restart). Never fails; see the report.
pub fn apply(ops: &dyn HostOps, paths: &HostPaths, settings: &Settings, stage: Stage) -> Report {
    let mut report = Report::default();
    let previous = Applied::load(paths);
    let mut applied = previous.clone().unwrap_or_default();
    let before = previous.unwrap_or_default();

    if stage == Stage::Boot {
        machine_id::apply(ops, paths, &mut applied, &mut report);
        commands::bootcmd(ops, paths, &settings.bootcmd, &mut report);
    }
    modules::apply(
        ops,
        paths,
        &settings.modules,
        &before,
        &mut applied,
        &mut report,
    );
    sysctl::apply(
        ops,
        paths,
        &settings.sysctl,
        &before,
        &mut applied,
        &mut report,
    );
    mounts::apply(
        ops,
        paths,
        &settings.mounts,
        &before,
        &mut applied,
        &mut report,
    );
    report
        .problems
        .extend(settings.write_files.problems.iter().cloned());
    write_files::apply(
        ops,
        paths,
        &settings.write_files.host,
        &before,
        &mut applied,
        &mut report,
    );
    hostname::apply(
        ops,
        paths,
        settings.hostname.as_deref(),
        &mut applied,
        &mut report,
    );

    if let Err(e) = applied.save(paths) {
        log::warn!(
            "{}: {e}; a restarted berthd will apply host settings again",
            paths.applied_file().display()
        );
    }
    report
}

/// Runs `work` in a thread of its own once the service `service` is ready
/// (waiting up to `wait`), handing it that service's log: how runcmd and
/// preloading reach the console and the engine after they are up.
pub fn when_ready(
    supervisor: std::sync::Arc<crate::supervisor::Supervisor>,
    logs: std::sync::Arc<crate::logs::LogDir>,
    service: String,
    what: &'static str,
    wait: std::time::Duration,
    work: impl FnOnce(&crate::logs::LogWriter) + Send + 'static,
) {
    if supervisor.service(&service).is_none() {
        log::warn!("{what}: there is no `{service}` service; not run");
        return;
    }
    let started = std::thread::Builder::new()
        .name(what.into())
        .spawn(move || {
            if !supervisor.wait_for(wait, |s| s.service(&service).is_some_and(|c| c.ready)) {
                log::error!(
                    "{what}: the {service} service was not ready within {} min; not run",
                    wait.as_secs() / 60
                );
                return;
            }
            match logs.writer(&service) {
                Ok(log) => work(&log),
                Err(e) => log::error!("{what}: the {service} log: {e}; not run"),
            }
        });
    if let Err(e) = started {
        log::error!("{what}: cannot start its thread: {e}");
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A temporary root with the files host settings read.
    use super::*;

    pub struct Root {
        pub dir: tempfile::TempDir,
        pub paths: HostPaths,
    }

    pub fn root() -> Root {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        for d in [
            "etc", "var", "home", "opt", "usr/bin", "proc/sys", "dev", "run",
        ] {
            std::fs::create_dir_all(r.join(d)).expect("mkdir");
        }
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nberth:x:1100:1100::/home/berth:/bin/sh\nweb:x:33:34::/var/www:/bin/false\n",
        )
        .expect("passwd");
        std::fs::write(
            r.join("etc/group"),
            "root:x:0:\nberth:x:1100:\nwww-data:x:34:\ndocker:x:999:berth\n",
        )
        .expect("group");
        let paths = HostPaths {
            root: r.to_path_buf(),
            proc_sys: r.join("proc/sys"),
            modules: Some(r.join("lib/modules/6.1.0")),
            dev: r.join("dev"),
            sys_block: r.join("sys/class/block"),
            state: r.join("run/berth/host"),
        };
        Root { dir, paths }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::root;
    use super::*;
    use recording::Call;

    fn settings(yaml: &str) -> Settings {
        let doc = berth_configs::parse_document(&"test.yml".into(), yaml);
        let loaded = berth_configs::load(vec![doc]);
        let errors = loaded.error_messages();
        assert!(errors.is_empty(), "{errors:?}");
        Settings::from_config(&loaded.config)
    }

    const CONFIG: &str = "#cloud-config
hostname: node1
bootcmd:
  - echo early
write_files:
  - path: /etc/motd
    content: hello
  - path: /var/log/app.log
    content: \"line\\n\"
    append: true
berth:
  sysctl:
    vm.swappiness: 10
";

    #[test]
    fn boot_applies_everything_in_order_then_only_changes() {
        let r = root();
        let ops = Recording::default();
        let report = apply(&ops, &r.paths, &settings(CONFIG), Stage::Boot);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let calls = ops.calls();
        let kinds: Vec<&str> = calls.iter().map(Call::kind).collect();
        assert_eq!(
            kinds,
            ["write", "write", "run", "sysctl", "write", "write", "hostname", "write", "write"],
            "{calls:?}"
        );

        // The same config again (a berthd restart): nothing, and bootcmd not again.
        let ops = Recording::default();
        let report = apply(&ops, &r.paths, &settings(CONFIG), Stage::Boot);
        assert!(report.problems.is_empty());
        assert_eq!(ops.calls(), [], "the appended file is not appended twice");

        // A reload that changes one file and the sysctl.
        let changed = CONFIG
            .replace("content: hello", "content: bye")
            .replace("swappiness: 10", "swappiness: 20")
            .replace("echo early", "echo changed");
        let ops = Recording::default();
        let report = apply(&ops, &r.paths, &settings(&changed), Stage::Reload);
        assert!(report.problems.is_empty());
        let calls = ops.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(matches!(&calls[0], Call::Sysctl { value, .. } if value == "20"));
        assert!(matches!(&calls[1], Call::Write { rel, data, .. }
            if rel == Path::new("etc/motd") && data == b"bye"));
    }

    #[test]
    fn applied_state_is_private_and_holds_hashes_not_contents() {
        use std::os::unix::fs::PermissionsExt;
        let r = root();
        let secret = "#cloud-config\nwrite_files:\n  - path: /etc/app/token\n    content: s3cr3t-token-value\n";
        let report = apply(
            &Recording::default(),
            &r.paths,
            &settings(secret),
            Stage::Boot,
        );
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let file = r.paths.applied_file();
        let text = std::fs::read_to_string(&file).expect("applied.json");
        assert!(!text.contains("s3cr3t"), "{text}");
        let applied: Applied = serde_json::from_str(&text).expect("json");
        assert_eq!(applied.write_files.len(), 1, "{text}");
        let print = &applied.write_files[0];
        let hex = print.strip_prefix("sha256:").expect("a sha256 fingerprint");
        assert!(
            hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "{print}"
        );
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&r.paths.state), 0o700);
        // Still one hash per entry: the same config again applies nothing.
        let ops = Recording::default();
        apply(&ops, &r.paths, &settings(secret), Stage::Reload);
        assert_eq!(ops.calls(), []);
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../../docs/configuration.md");
        let section = doc.split("## Host settings").nth(1).expect("section");
        let yaml = section
            .split("```yaml\n")
            .nth(1)
            .and_then(|s| s.split("```").next())
            .expect("example");
        let mut s = settings(yaml);
        assert_eq!(s.mounts.len(), 4);
        assert_eq!(s.write_files.host.len(), 3);
        // Not the NFS entry: resolving its server needs DNS.
        s.mounts.retain(|m| m.get(2).is_none_or(|t| t.0 != "nfs"));
        let r = root();
        let ops = Recording::default();
        let report = apply(&ops, &r.paths, &s, Stage::Boot);
        let fields: Vec<&str> = report.problems.iter().map(|p| p.field.as_str()).collect();
        // The test root has no modules.dep, no /proc/sys/net, no ext
        // filesystem labelled `data`.
        assert_eq!(
            fields,
            [
                "berth.modules[0]",
                "berth.modules[1]",
                "berth.sysctl.net.ipv4.conf.*.rp_filter",
                "mounts[0]"
            ],
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn a_failed_entry_is_retried_on_reload() {
        let r = root();
        let ops = Recording::default();
        ops.fail("sysctl", "vm/swappiness", libc::EACCES);
        let report = apply(&ops, &r.paths, &settings(CONFIG), Stage::Boot);
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].field, "berth.sysctl.vm.swappiness");
        let ops = Recording::default();
        apply(&ops, &r.paths, &settings(CONFIG), Stage::Reload);
        assert_eq!(ops.calls().len(), 1, "{:?}", ops.calls());
    }
}
