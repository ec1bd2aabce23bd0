//! The OCI runtime spec of a system container, generated from its compose-syntax
//! service definition and its image's config (ARCHITECTURE.md §4–§5).
//!
//! [`generate`] is a pure function: everything it would otherwise look up on the
//! host (device numbers, the image's `/etc/passwd`, another service's network
//! namespace) comes in through [`SpecContext`] and [`ImageInfo`], so each compose
//! field's effect on the spec is unit-tested here without root.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use berth_configs::forms::Command;
use berth_configs::model::Service;
use berth_images::oci::RunConfig;
use oci_spec::runtime::{
    get_default_maskedpaths, get_default_readonly_paths, Capabilities, Capability, Linux,
    LinuxCapabilities, LinuxCpu, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory,
    LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources, Mount, Process, Root, Spec,
    User,
};

/// Where the `berth` binary appears inside every system container.
pub const BERTH_IN_CONTAINER: &str = "/usr/bin/berth";

/// The cgroup every service's cgroup sits under (`/sys/fs/cgroup/berth/<service>` on v2).
pub const CGROUP_PARENT: &str = "/berth";

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set for unprivileged containers.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux has (what `privileged` and `cap_add: [ALL]` grant):
/// the list the config validates `cap_add`/`cap_drop` against.
pub use berth_configs::validate::CAPABILITIES as ALL_CAPABILITIES;

/// Why a service cannot be turned into a runtime spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("service `{service}`: neither the service nor its image says what to run (no entrypoint or command)")]
    NoCommand { service: String },
    #[error("service `{service}`: user `{user}`: {reason}")]
    User {
        service: String,
        user: String,
        reason: String,
    },
    #[error("service `{service}`: `{name}` is not a Linux capability")]
    Capability { service: String, name: String },
    #[error("service `{service}`: volume `{volume}`: {reason}")]
    Volume {
        service: String,
        volume: String,
        reason: String,
    },
    #[error("service `{service}`: tmpfs `{tmpfs}`: {reason}")]
    Tmpfs {
        service: String,
        tmpfs: String,
        reason: String,
    },
    #[error("service `{service}`: device `{device}`: {reason}")]
    Device {
        service: String,
        device: String,
        reason: String,
    },
    #[error("service `{service}`: `{value}` is not a memory size (write it like 512m or 1g)")]
    MemLimit { service: String, value: String },
    #[error("service `{service}`: cpus `{value}` must be a positive number")]
    Cpus { service: String, value: f64 },
    #[error("service `{service}`: network_mode `{mode}`: {reason}")]
    NetworkMode {
        service: String,
        mode: String,
        reason: String,
    },
    #[error("service `{service}`: {field} `{value}` is not supported (only `host`)")]
    Namespace {
        service: String,
        field: &'static str,
        value: String,
    },
}

/// A host device as `stat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostDevice {
    /// `true` for a block device, `false` for a character device.
    pub block: bool,
    pub major: i64,
    pub minor: i64,
    /// Permission bits of the device node.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What the spec needs to know about the image.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// The image config's runtime part (Entrypoint, Cmd, Env, WorkingDir, User).
    pub config: RunConfig,
    /// The image's `/etc/passwd`, to resolve user names.
    pub passwd: Option<String>,
    /// The image's `/etc/group`, to resolve group names and supplementary groups.
    pub group: Option<String>,
}

/// Everything host-specific [`generate`] reads.
#[derive(Debug, Clone, Default)]
pub struct SpecContext {
    /// The `berth` binary on the host, bind-mounted read-only at [`BERTH_IN_CONTAINER`].
    pub berth_binary: Option<PathBuf>,
    /// Where named volumes live (`<state>/volumes`).
    pub volumes_dir: PathBuf,
    /// The root path written into the spec, relative to the bundle (`rootfs`).
    pub rootfs: PathBuf,
    /// Give the container its own cgroup namespace (right on cgroup v2).
    pub cgroup_namespace: bool,
    /// Host devices named by the service's `devices`, keyed by host path.
    pub host_devices: BTreeMap<PathBuf, HostDevice>,
    /// The network namespace (`/proc/PID/ns/net`) for `network_mode: service:NAME`.
    pub service_network: Option<PathBuf>,
    /// Environment for every system service (`berth.environment`), below the service's own.
    pub environment: BTreeMap<String, String>,
}

/// How a `network_mode` is met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// A new network namespace (compose's default, and `none`: only `lo`).
    Private,
    Host,
    /// Join another service's network namespace.
    Service(String),
}

impl NetworkMode {
    pub fn of(service_name: &str, service: &Service) -> Result<Self, SpecError> {
        match service.network_mode.as_deref() {
            None | Some("none") | Some("bridge") | Some("default") => Ok(NetworkMode::Private),
            Some("host") => Ok(NetworkMode::Host),
            Some(other) => match other
                .strip_prefix("service:")
                .or(other.strip_prefix("container:"))
            {
                Some(name) if !name.is_empty() => Ok(NetworkMode::Service(name.to_string())),
                _ => Err(SpecError::NetworkMode {
                    service: service_name.into(),
                    mode: other.into(),
                    reason: "use host, none, or service:NAME".into(),
                }),
            },
        }
    }
}

/// Host paths a service's `devices` names, so the caller can `stat` them for
/// [`SpecContext::host_devices`].
/// For a privileged service, every device node of the host (see
/// [`host_device_nodes`]).
pub fn device_paths(service: &Service) -> Vec<PathBuf> {
    if service.privileged {
        return host_device_nodes(Path::new("/dev"));
    }
    service
        .devices
        .iter()
        .filter_map(|d| d.split(':').next())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Every device node under `dev`, the way Docker equips a privileged
/// container: the nodes are created in the container's own `/dev` rather than
/// binding the host's, because the runtime rewrites `/dev` (ptmx, the fd
/// symlinks) and must never do that to the host's. `pts`, `shm` and `mqueue`
/// are the container's own filesystems and `console` its own terminal.
pub fn host_device_nodes(dev: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut dirs = vec![dev.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let skip = ["pts", "shm", "mqueue"].map(|d| dev.join(d));
                if !skip.contains(&path) {
                    dirs.push(path);
                }
            } else if (kind.is_char_device() || kind.is_block_device())
                && path != dev.join("console")
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A volume: a bind from the host (or a named volume directory) into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: VolumeSource,
    pub target: String,
    pub read_only: bool,
    /// Other mount options (`nosuid`, `rslave`, …).
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host path.
    Path(PathBuf),
    /// A named volume, kept under `<state>/volumes/<name>`.
    Named(String),
}

impl Volume {
    /// Parses compose's short syntax: `SOURCE:TARGET[:OPTS]`, or a bare `TARGET`
    /// (an anonymous volume, named after the service and the target).
    pub fn parse(service_name: &str, text: &str) -> Result<Self, SpecError> {
        let err = |reason: &str| SpecError::Volume {
            service: service_name.into(),
            volume: text.into(),
            reason: reason.into(),
        };
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, opts) = match parts.as_slice() {
            [t] => (None, *t, None),
            [s, t] => (Some(*s), *t, None),
            [s, t, o] => (Some(*s), *t, Some(*o)),
            _ => return Err(err("write it as SOURCE:TARGET[:ro|rw]")),
        };
        if !target.starts_with('/') {
            return Err(err("the target must be an absolute path"));
        }
        let source = match source {
            None => {
                let slug: String = target
                    .trim_matches('/')
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                VolumeSource::Named(format!("{service_name}_{slug}"))
            }
            Some(s) if s.starts_with('/') => VolumeSource::Path(PathBuf::from(s)),
            Some(s) if s.contains('/') || s.starts_with('.') || s.starts_with('~') => {
                return Err(err(
                    "a host path must be absolute (Berth has no project directory)",
                ))
            }
            Some(s)
                if !s.is_empty()
                    && s.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c)) =>
            {
                VolumeSource::Named(s.to_string())
            }
            Some(_) => return Err(err("the source must be an absolute path or a volume name")),
        };
        let mut read_only = false;
        let mut options = Vec::new();
        for o in opts.into_iter().flat_map(|o| o.split(',')) {
            match o {
                "ro" => read_only = true,
                "rw" => read_only = false,
                // SELinux relabelling and copy-up are not things Berth does.
                "z" | "Z" | "nocopy" | "bind" | "rbind" | "" => {}
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" | "noexec"
                | "nosuid" | "nodev" => options.push(o.to_string()),
                other => return Err(err(&format!("`{other}` is not a volume option"))),
            }
        }
        Ok(Volume {
            source,
            target: target.to_string(),
            read_only,
            options,
        })
    }

    /// The host directory or file this volume binds.
    pub fn host_path(&self, volumes_dir: &Path) -> PathBuf {
        match &self.source {
            VolumeSource::Path(p) => p.clone(),
            VolumeSource::Named(n) => volumes_dir.join(n),
        }
    }
}

/// Docker's rule for what a container runs: the service's entrypoint replaces the
/// image's and then the image's Cmd is dropped too; the service's command replaces
/// the image's Cmd. `entrypoint: ""` (or `[]`) clears the image's entrypoint.
pub fn process_args(
    service_name: &str,
    service: &Service,
    image: &RunConfig,
) -> Result<Vec<String>, SpecError> {
    let argv = |c: &Command| match c {
        Command::Shell(s) if s.trim().is_empty() => Vec::new(),
        c => c.argv(),
    };
    let (entrypoint, cmd) = match &service.entrypoint {
        Some(e) => (
            argv(e),
            service.command.as_ref().map(argv).unwrap_or_default(),
        ),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            match &service.command {
                Some(c) => argv(c),
                None => image.cmd.clone().unwrap_or_default(),
            },
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            service: service_name.into(),
        });
    }
    Ok(args)
}

/// The environment: the image's, then `berth.environment`, then the service's
/// own, later winning per name; `PATH` is always set.
pub fn environment(service: &Service, image: &RunConfig, ctx: &SpecContext) -> Vec<String> {
    // Names in first-seen order, each with its last value.
    let mut env: Vec<(String, String)> = Vec::new();
    fn set(env: &mut Vec<(String, String)>, k: &str, v: &str) {
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(entry) => entry.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
    }
    for entry in image.env.iter().flatten() {
        match entry.split_once('=') {
            Some((k, v)) => set(&mut env, k, v),
            None => set(&mut env, entry, ""),
        }
    }
    for (k, v) in &ctx.environment {
        set(&mut env, k, v);
    }
    // A name without a value (`- FOO` in list form) would take the value from
    // the compose caller's environment; berthd has none to give, so it is left out.
    for (k, v) in &service.environment.0 {
        if let Some(v) = v {
            set(&mut env, k, v);
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        if let Some((k, v)) = DEFAULT_PATH.split_once('=') {
            set(&mut env, k, v);
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn passwd_entries(text: Option<&str>) -> Vec<PasswdEntry> {
    text.unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// (name, gid, members) from an `/etc/group`.
fn group_entries(text: Option<&str>) -> Vec<(String, u32, Vec<String>)> {
    text.unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

/// `user[:group]`, each numeric or a name from the image's `/etc/passwd` and
/// `/etc/group`. A user found in passwd gets its primary group (unless one is
/// given) and the supplementary groups that list it; an unknown numeric uid runs
/// with gid 0, as Docker does.
pub fn resolve_user(service_name: &str, spec: &str, image: &ImageInfo) -> Result<User, SpecError> {
    let err = |reason: String| SpecError::User {
        service: service_name.into(),
        user: spec.into(),
        reason,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = passwd_entries(image.passwd.as_deref());
    let groups = group_entries(image.group.as_deref());
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|e| e.uid == uid),
        Err(_) if user.is_empty() => None,
        Err(_) => Some(passwd.iter().find(|e| e.name == user).ok_or_else(|| {
            err(if image.passwd.is_some() {
                format!("no user `{user}` in the image's /etc/passwd")
            } else {
                format!("the image has no /etc/passwd to look `{user}` up in; use a numeric uid")
            })
        })?),
    };
    let uid = match (user.parse::<u32>(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some(e)) => e.uid,
        (Err(_), None) => 0,
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|(name, _, _)| name == g)
                .map(|(_, gid, _)| *gid)
                .ok_or_else(|| err(format!("no group `{g}` in the image's /etc/group")))?,
        },
        None => entry.map(|e| e.gid).unwrap_or(0),
    };
    let mut u = User::default();
    u.set_uid(uid);
    u.set_gid(gid);
    if let Some(e) = entry {
        let extra: Vec<u32> = groups
            .iter()
            .filter(|(_, g, members)| *g != gid && members.contains(&e.name))
            .map(|(_, g, _)| *g)
            .collect();
        if !extra.is_empty() {
            u.set_additional_gids(Some(extra));
        }
    }
    Ok(u)
}

fn parse_capability(service_name: &str, name: &str) -> Result<Option<Capability>, SpecError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(None);
    }
    Capability::from_str(bare)
        .map(Some)
        .map_err(|_| SpecError::Capability {
            service: service_name.into(),
            name: name.into(),
        })
}

fn is_all(names: &[String]) -> bool {
    names.iter().any(|n| {
        let u = n.to_ascii_uppercase();
        u == "ALL" || u == "CAP_ALL"
    })
}

/// The capability set, by Docker's rules: `privileged` or `cap_add: [ALL]` starts
/// from every capability, `cap_drop: [ALL]` from none, anything else from
/// [`DEFAULT_CAPABILITIES`]; then `cap_add` is added and `cap_drop` removed
/// (except that what `cap_add` names survives a `cap_drop: [ALL]`).
pub fn capabilities(service_name: &str, service: &Service) -> Result<Capabilities, SpecError> {
    let parse_all = |names: &[&str]| -> Capabilities {
        names
            .iter()
            .filter_map(|n| Capability::from_str(n).ok())
            .collect()
    };
    let all = || -> Capabilities {
        let bounding = bounding_set();
        parse_all(ALL_CAPABILITIES)
            .into_iter()
            .filter(|c| bounding.as_ref().is_none_or(|b| b.contains(c)))
            .collect()
    };
    if service.privileged {
        return Ok(all());
    }
    let mut adds = HashSet::new();
    for n in &service.cap_add {
        adds.extend(parse_capability(service_name, n)?);
    }
    let mut drops = HashSet::new();
    for n in &service.cap_drop {
        drops.extend(parse_capability(service_name, n)?);
    }
    let mut caps = if is_all(&service.cap_add) {
        all()
    } else if is_all(&service.cap_drop) {
        HashSet::new()
    } else {
        parse_all(DEFAULT_CAPABILITIES)
    };
    if is_all(&service.cap_drop) && !is_all(&service.cap_add) {
        caps.extend(adds);
        return Ok(caps);
    }
    caps.extend(adds);
    for d in drops {
        caps.remove(&d);
    }
    Ok(caps)
}

/// The capabilities this process may hand on (its bounding set), as Docker
/// limits "all" to: asking the kernel for more than that fails the container's
/// capset(2). `None` when it cannot be read (then nothing is filtered).
fn bounding_set() -> Option<Capabilities> {
    let set = caps::read(None, caps::CapSet::Bounding).ok()?;
    Some(
        set.iter()
            .filter_map(|c| {
                let name = c.to_string();
                Capability::from_str(name.trim_start_matches("CAP_")).ok()
            })
            .collect(),
    )
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(source: &Path, destination: &str, options: Vec<String>) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some("bind".into()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options));
    m
}

/// `PATH[:OPTIONS]` → a tmpfs mount (`nosuid,nodev` plus the options given).
fn tmpfs_mount(service_name: &str, entry: &str) -> Result<Mount, SpecError> {
    let (path, opts) = match entry.split_once(':') {
        Some((p, o)) => (p, Some(o)),
        None => (entry, None),
    };
    if !path.starts_with('/') {
        return Err(SpecError::Tmpfs {
            service: service_name.into(),
            tmpfs: entry.into(),
            reason: "the mount point must be an absolute path".into(),
        });
    }
    let mut options: Vec<&str> = vec!["nosuid", "nodev"];
    options.extend(
        opts.into_iter()
            .flat_map(|o| o.split(','))
            .filter(|o| !o.is_empty()),
    );
    Ok(mount(path, "tmpfs", "tmpfs", &options))
}

fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// `HOST[:CONTAINER[:PERMISSIONS]]` → the device node to create and its cgroup rule.
fn device(
    service_name: &str,
    entry: &str,
    ctx: &SpecContext,
) -> Result<(LinuxDevice, LinuxDeviceCgroup), SpecError> {
    let err = |reason: &str| SpecError::Device {
        service: service_name.into(),
        device: entry.into(),
        reason: reason.into(),
    };
    let mut parts = entry.split(':');
    let host = parts.next().unwrap_or_default();
    let (container, perms) = match (parts.next(), parts.next()) {
        (None, _) => (host, "rwm"),
        (Some(c), None) if !c.starts_with('/') => (host, c),
        (Some(c), None) => (c, "rwm"),
        (Some(c), Some(p)) => (c, p),
    };
    if parts.next().is_some() || !host.starts_with('/') || !container.starts_with('/') {
        return Err(err("write it as /dev/HOST[:/dev/CONTAINER[:rwm]]"));
    }
    if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
        return Err(err("permissions are letters from `rwm`"));
    }
    let info = ctx
        .host_devices
        .get(Path::new(host))
        .ok_or_else(|| err("not a device node on this host"))?;
    let d = linux_device(Path::new(container), info);
    let typ = d.typ();
    Ok((
        d,
        device_rule(true, typ, Some(info.major), Some(info.minor), perms),
    ))
}

/// The node `path` in the container for a host device.
fn linux_device(path: &Path, info: &HostDevice) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(path.to_path_buf());
    d.set_typ(if info.block {
        LinuxDeviceType::B
    } else {
        LinuxDeviceType::C
    });
    d.set_major(info.major);
    d.set_minor(info.minor);
    d.set_file_mode(Some(info.mode & 0o7777));
    d.set_uid(Some(info.uid));
    d.set_gid(Some(info.gid));
    d
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path);
    ns
}

fn host_or_private(
    service_name: &str,
    field: &'static str,
    value: Option<&str>,
) -> Result<bool, SpecError> {
    match value {
        None | Some("") | Some("private") => Ok(false),
        Some("host") => Ok(true),
        Some(other) => Err(SpecError::Namespace {
            service: service_name.into(),
            field,
            value: other.into(),
        }),
    }
}

/// The runtime spec for service `name`.
pub fn generate(
    name: &str,
    service: &Service,
    image: &ImageInfo,
    ctx: &SpecContext,
) -> Result<Spec, SpecError> {
    let mut spec = Spec::default();
    spec.set_version("1.0.2".into());

    // Root: read_only is enforced both by the rootfs assembly and by the runtime.
    let mut root = Root::default();
    root.set_path(ctx.rootfs.clone());
    root.set_readonly(Some(service.read_only));
    spec.set_root(Some(root));

    // Namespaces.
    let network = NetworkMode::of(name, service)?;
    let host_pid = host_or_private(name, "pid", service.pid.as_deref())?;
    let host_ipc = host_or_private(name, "ipc", service.ipc.as_deref())?;
    let host_uts = host_or_private(name, "uts", service.uts.as_deref())?;
    let mut namespaces = vec![namespace(LinuxNamespaceType::Mount, None)];
    if !host_pid {
        namespaces.push(namespace(LinuxNamespaceType::Pid, None));
    }
    match &network {
        NetworkMode::Host => {}
        NetworkMode::Private => namespaces.push(namespace(LinuxNamespaceType::Network, None)),
        NetworkMode::Service(other) => {
            let path = ctx
                .service_network
                .clone()
                .ok_or_else(|| SpecError::NetworkMode {
                    service: name.into(),
                    mode: format!("service:{other}"),
                    reason: format!("service `{other}` has no running container to share"),
                })?;
            namespaces.push(namespace(LinuxNamespaceType::Network, Some(path)));
        }
    }
    if !host_ipc {
        namespaces.push(namespace(LinuxNamespaceType::Ipc, None));
    }
    if !host_uts {
        namespaces.push(namespace(LinuxNamespaceType::Uts, None));
    }
    if ctx.cgroup_namespace && !service.privileged {
        namespaces.push(namespace(LinuxNamespaceType::Cgroup, None));
    }
    spec.set_hostname((!host_uts).then(|| name.to_string()));

    // Process.
    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_args(Some(process_args(name, service, &image.config)?));
    let mut env = environment(service, &image.config, ctx);
    if !host_uts && !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={name}"));
    }
    process.set_env(Some(env));
    let cwd = service
        .working_dir
        .clone()
        .or_else(|| image.config.working_dir.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".into());
    process.set_cwd(PathBuf::from(cwd));
    let user_spec = service
        .user
        .clone()
        .or_else(|| image.config.user.clone())
        .filter(|u| !u.is_empty());
    if let Some(u) = user_spec {
        process.set_user(resolve_user(name, &u, image)?);
    }
    let caps = capabilities(name, service)?;
    // Docker's default seccomp profile for what the service may do, unless
    // it is privileged or opts out (see runtime::seccomp).
    let seccomp = (!service.privileged && !service.seccomp_unconfined())
        .then(|| super::seccomp::default_profile(&caps));
    let mut pcaps = LinuxCapabilities::default();
    pcaps.set_bounding(Some(caps.clone()));
    pcaps.set_effective(Some(caps.clone()));
    pcaps.set_permitted(Some(caps));
    pcaps.set_inheritable(None);
    pcaps.set_ambient(None);
    process.set_capabilities(Some(pcaps));
    // Off is Docker's default, said explicitly, since libcontainer treats
    // "unset" as a request it cannot meet without libseccomp. A confined
    // container needs it on: berthd installs the filter after libcontainer
    // has dropped CAP_SYS_ADMIN (runtime::seccomp).
    process.set_no_new_privileges(Some(seccomp.is_some()));
    // Resource limits are inherited from berthd (raising a hard limit needs
    // CAP_SYS_RESOURCE, which a sandboxed berthd may not have).
    process.set_rlimits(None);
    // PID 1 runs berthd at BERTHD_OOM_SCORE_ADJ so the OOM killer spares it;
    // without a value of its own a container would inherit that shield, and
    // a runaway service would make the kernel kill everything else first.
    process.set_oom_score_adj(Some(service.oom_score_adj.unwrap_or(0)));
    spec.set_process(Some(process));

    // Mounts, in the order they are made.
    let ro_if = |ro: bool| if ro { "ro" } else { "rw" };
    let mut mounts = vec![mount(
        "/proc",
        "proc",
        "proc",
        &["nosuid", "noexec", "nodev"],
    )];
    // Privileged or not, `/dev` is the container's own; a privileged one gets
    // every host device node in it (below).
    mounts.push(mount(
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ));
    mounts.push(mount(
        "/dev/pts",
        "devpts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ],
    ));
    mounts.push(mount(
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    ));
    mounts.push(mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    ));
    mounts.push(mount(
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", ro_if(!service.privileged)],
    ));
    mounts.push(mount(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &[
            "nosuid",
            "noexec",
            "nodev",
            "relatime",
            ro_if(!service.privileged),
        ],
    ));
    if service.read_only {
        let explicit: Vec<&str> = service
            .tmpfs
            .0
            .iter()
            .map(|t| t.split(':').next().unwrap_or_default())
            .collect();
        for dir in ["/run", "/tmp"] {
            if !explicit.contains(&dir) {
                mounts.push(mount(
                    dir,
                    "tmpfs",
                    "tmpfs",
                    &["nosuid", "nodev", "mode=1777"],
                ));
            }
        }
    }
    for t in &service.tmpfs.0 {
        mounts.push(tmpfs_mount(name, t)?);
    }
    let mut shares_mounts = false;
    for v in &service.volumes {
        let volume = Volume::parse(name, v)?;
        let mut options = vec!["rbind".to_string(), ro_if(volume.read_only).to_string()];
        options.extend(volume.options.iter().cloned());
        shares_mounts |= volume
            .options
            .iter()
            .any(|o| o == "shared" || o == "rshared");
        mounts.push(bind(
            &volume.host_path(&ctx.volumes_dir),
            &volume.target,
            options,
        ));
    }
    if let Some(berth) = &ctx.berth_binary {
        mounts.push(bind(
            berth,
            BERTH_IN_CONTAINER,
            vec!["bind".into(), "ro".into(), "nosuid".into()],
        ));
    }
    spec.set_mounts(Some(mounts));

    // Linux: cgroup, resources, devices, masked paths.
    let mut linux = Linux::default();
    // A volume that shares mounts both ways (what the console mounts shows on
    // the host) must stay a peer of the host's mount: the container's mount
    // namespace is then shared rather than a slave of the host's, as Docker
    // does for `rshared` volumes.
    if shares_mounts {
        linux.set_rootfs_propagation(Some("shared".into()));
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_seccomp(seccomp);
    linux.set_cgroups_path(Some(PathBuf::from(format!("{CGROUP_PARENT}/{name}"))));
    let mut resources = LinuxResources::default();
    let mut rules = Vec::new();
    let mut devices = Vec::new();
    if service.privileged {
        rules.push(device_rule(true, LinuxDeviceType::A, None, None, "rwm"));
        for (path, info) in &ctx.host_devices {
            devices.push(linux_device(path, info));
        }
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else {
        // Deny everything, then allow what is asked for; the runtime adds the
        // standard nodes (null, zero, full, tty, random, urandom, ptys) itself.
        rules.push(device_rule(false, LinuxDeviceType::A, None, None, "rwm"));
        for d in &service.devices {
            let (node, rule) = device(name, d, ctx)?;
            devices.push(node);
            rules.push(rule);
        }
        linux.set_masked_paths(Some(get_default_maskedpaths()));
        linux.set_readonly_paths(Some(get_default_readonly_paths()));
    }
    resources.set_devices(Some(rules));
    linux.set_devices((!devices.is_empty()).then_some(devices));
    if let Some(mem) = &service.mem_limit {
        let bytes = berth_configs::validate::parse_bytes(&mem.0)
            .and_then(|b| i64::try_from(b).ok())
            .filter(|b| *b > 0)
            .ok_or_else(|| SpecError::MemLimit {
                service: name.into(),
                value: mem.0.clone(),
            })?;
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(bytes));
        resources.set_memory(Some(memory));
    }
    if let Some(cpus) = service.cpus {
        if !(cpus > 0.0 && cpus.is_finite() && cpus < 1e6) {
            return Err(SpecError::Cpus {
                service: name.into(),
                value: cpus,
            });
        }
        const PERIOD: u64 = 100_000;
        let mut cpu = LinuxCpu::default();
        cpu.set_period(Some(PERIOD));
        cpu.set_quota(Some(((cpus * PERIOD as f64).round() as i64).max(1000)));
        resources.set_cpu(Some(cpu));
    }
    if let Some(limit) = service.pids_limit {
        // Compose: 0 or -1 mean no limit.
        let mut pids = LinuxPids::default();
        pids.set_limit(if limit > 0 { limit } else { -1 });
        resources.set_pids(Some(pids));
    }
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));

    let mut annotations: HashMap<String, String> = service
        .labels
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect();
    annotations.insert("io.berth.service".into(), name.into());
    spec.set_annotations(Some(annotations));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_configs::forms::{KeyValues, Scalar, StringList};

    fn svc() -> Service {
        Service {
            image: Some("berth/busybox".into()),
            command: Some(Command::Exec(vec!["echo".into(), "hi".into()])),
            ..Service::default()
        }
    }

    fn ctx() -> SpecContext {
        SpecContext {
            volumes_dir: PathBuf::from("/var/lib/berth/volumes"),
            rootfs: PathBuf::from("rootfs"),
            ..SpecContext::default()
        }
    }

    fn gen(service: &Service) -> Spec {
        generate("web", service, &ImageInfo::default(), &ctx()).expect("spec")
    }

    fn ns_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
        spec.linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
            .iter()
            .map(|n| n.typ())
            .collect()
    }

    fn mount_at<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
        spec.mounts()
            .as_ref()
            .and_then(|m| m.iter().find(|m| m.destination() == Path::new(dest)))
    }

    fn caps(spec: &Spec) -> Capabilities {
        spec.process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .and_then(|c| c.effective().clone())
            .unwrap_or_default()
    }

    fn args(spec: &Spec) -> Vec<String> {
        spec.process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default()
    }

    fn env(spec: &Spec) -> Vec<String> {
        spec.process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default()
    }

    fn resources(spec: &Spec) -> LinuxResources {
        spec.linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_are_isolated_with_docker_capabilities_and_a_cgroup_under_berth() {
        let spec = gen(&svc());
        let types = ns_types(&spec);
        for t in [
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
        ] {
            assert!(types.contains(&t), "{t:?} missing from {types:?}");
        }
        assert!(!types.contains(&LinuxNamespaceType::Cgroup));
        assert_eq!(spec.hostname().as_deref(), Some("web"));
        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/berth/web"))
        );
        assert_eq!(caps(&spec).len(), DEFAULT_CAPABILITIES.len());
        assert!(caps(&spec).contains(&Capability::NetBindService));
        assert!(!caps(&spec).contains(&Capability::SysAdmin));
        assert!(linux.masked_paths().as_ref().is_some_and(|m| !m.is_empty()));
        let root = spec.root().as_ref().expect("root");
        assert_eq!(root.path(), Path::new("rootfs"));
        assert_eq!(root.readonly(), Some(false));
        for dest in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
        ] {
            assert!(mount_at(&spec, dest).is_some(), "no mount at {dest}");
        }
        assert_eq!(
            mount_at(&spec, "/sys").and_then(|m| m.options().clone()),
            Some(vec![
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                "ro".into()
            ])
        );
        assert!(mount_at(&spec, "/usr/bin/berth").is_none());
        // Devices: deny all first, so a v1 devices cgroup does not inherit "allow all".
        let rules = resources(&spec).devices().clone().unwrap_or_default();
        assert!(!rules[0].allow() && rules[0].typ() == Some(LinuxDeviceType::A));
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(json["annotations"]["io.berth.service"], "web");
    }

    #[test]
    fn host_namespaces() {
        let spec = gen(&Service {
            network_mode: Some("host".into()),
            pid: Some("host".into()),
            ipc: Some("host".into()),
            uts: Some("host".into()),
            ..svc()
        });
        assert_eq!(ns_types(&spec), vec![LinuxNamespaceType::Mount]);
        assert_eq!(spec.hostname(), &None, "uts host keeps the host's name");
        assert!(!env(&spec).iter().any(|e| e.starts_with("HOSTNAME=")));

        let none = gen(&Service {
            network_mode: Some("none".into()),
            ..svc()
        });
        assert!(ns_types(&none).contains(&LinuxNamespaceType::Network));

        let err = generate(
            "web",
            &Service {
                pid: Some("container:x".into()),
                ..svc()
            },
            &ImageInfo::default(),
            &ctx(),
        )
        .expect_err("pid container:");
        assert!(err.to_string().contains("pid"), "{err}");
    }

    #[test]
    fn network_of_another_service() {
        let service = Service {
            network_mode: Some("service:network".into()),
            ..svc()
        };
        let err = generate("web", &service, &ImageInfo::default(), &ctx()).expect_err("no netns");
        assert!(err.to_string().contains("`network`"), "{err}");
        let c = SpecContext {
            service_network: Some(PathBuf::from("/proc/42/ns/net")),
            ..ctx()
        };
        let spec = generate("web", &service, &ImageInfo::default(), &c).expect("spec");
        let ns = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .expect("net");
        assert_eq!(net.path().as_deref(), Some(Path::new("/proc/42/ns/net")));
    }

    #[test]
    fn cgroup_namespace_when_asked() {
        let c = SpecContext {
            cgroup_namespace: true,
            ..ctx()
        };
        let spec = generate("web", &svc(), &ImageInfo::default(), &c).expect("spec");
        assert!(ns_types(&spec).contains(&LinuxNamespaceType::Cgroup));
    }

    #[test]
    fn capabilities_follow_docker_rules() {
        let with = |add: &[&str], drop: &[&str]| {
            capabilities(
                "web",
                &Service {
                    cap_add: add.iter().map(|s| s.to_string()).collect(),
                    cap_drop: drop.iter().map(|s| s.to_string()).collect(),
                    ..svc()
                },
            )
        };
        let c = with(&["NET_ADMIN", "cap_sys_time"], &["CAP_MKNOD", "net_raw"]).expect("caps");
        assert!(c.contains(&Capability::NetAdmin) && c.contains(&Capability::SysTime));
        assert!(!c.contains(&Capability::Mknod) && !c.contains(&Capability::NetRaw));
        assert!(c.contains(&Capability::Chown));

        let all = with(&["ALL"], &["SYS_MODULE"]).expect("caps");
        assert!(all.contains(&Capability::SysAdmin) && !all.contains(&Capability::SysModule));
        // "All" is what this process may hand on.
        let grantable = bounding_set().map_or(ALL_CAPABILITIES.len(), |b| b.len());
        let module = usize::from(bounding_set().is_none_or(|b| b.contains(&Capability::SysModule)));
        assert_eq!(all.len(), grantable - module);

        let none = with(&["NET_BIND_SERVICE"], &["ALL"]).expect("caps");
        assert_eq!(none, [Capability::NetBindService].into_iter().collect());

        assert!(matches!(
            with(&["SYS_BOGUS"], &[]),
            Err(SpecError::Capability { .. })
        ));
    }

    #[test]
    fn privileged_gets_everything_and_host_devices() {
        let spec = gen(&Service {
            privileged: true,
            cap_drop: vec!["ALL".into()],
            ..svc()
        });
        assert_eq!(
            caps(&spec).len(),
            bounding_set().map_or(ALL_CAPABILITIES.len(), |b| b.len())
        );
        // Its own /dev, never the host's (the runtime rewrites ptmx and the fd
        // links there), filled with the host's device nodes.
        let dev = mount_at(&spec, "/dev").expect("/dev");
        assert_eq!(dev.typ().as_deref(), Some("tmpfs"));
        assert!(mount_at(&spec, "/dev/pts").is_some());
        let nodes = host_device_nodes(Path::new("/dev"));
        assert!(nodes.contains(&PathBuf::from("/dev/null")), "{nodes:?}");
        assert!(!nodes.contains(&PathBuf::from("/dev/console")));
        assert!(!nodes.iter().any(|n| n.starts_with("/dev/pts")));
        let privileged = Service {
            privileged: true,
            ..svc()
        };
        assert_eq!(device_paths(&privileged), nodes);
        let mut ctx = ctx();
        ctx.host_devices.insert(
            PathBuf::from("/dev/ttyS0"),
            HostDevice {
                block: false,
                major: 4,
                minor: 64,
                mode: 0o660,
                uid: 0,
                gid: 5,
            },
        );
        let spec = generate("console", &privileged, &ImageInfo::default(), &ctx).expect("spec");
        let devices = spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().clone())
            .unwrap_or_default();
        assert!(devices
            .iter()
            .any(|d| d.path() == Path::new("/dev/ttyS0") && d.major() == 4 && d.minor() == 64));
        let rules = resources(&spec).devices().clone().unwrap_or_default();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow() && rules[0].typ() == Some(LinuxDeviceType::A));
        let linux = spec.linux().as_ref().expect("linux");
        assert!(linux.masked_paths().is_none());
        assert!(mount_at(&spec, "/sys")
            .and_then(|m| m.options().clone())
            .is_some_and(|o| o.contains(&"rw".to_string())));
    }

    #[test]
    fn volumes_bind_paths_and_named_volumes() {
        let spec = gen(&Service {
            volumes: vec![
                "/var/lib/data:/data".into(),
                "/etc/ssl:/etc/ssl:ro".into(),
                "logs:/var/log:rw,nosuid".into(),
                "/cache".into(),
            ],
            ..svc()
        });
        let data = mount_at(&spec, "/data").expect("/data");
        assert_eq!(data.typ().as_deref(), Some("bind"));
        assert_eq!(data.source().as_deref(), Some(Path::new("/var/lib/data")));
        assert_eq!(
            data.options().clone(),
            Some(vec!["rbind".into(), "rw".into()])
        );
        let ssl = mount_at(&spec, "/etc/ssl").expect("/etc/ssl");
        assert_eq!(
            ssl.options().clone(),
            Some(vec!["rbind".into(), "ro".into()])
        );
        let logs = mount_at(&spec, "/var/log").expect("/var/log");
        assert_eq!(
            logs.source().as_deref(),
            Some(Path::new("/var/lib/berth/volumes/logs"))
        );
        assert_eq!(
            logs.options().clone(),
            Some(vec!["rbind".into(), "rw".into(), "nosuid".into()])
        );
        let cache = mount_at(&spec, "/cache").expect("/cache");
        assert_eq!(
            cache.source().as_deref(),
            Some(Path::new("/var/lib/berth/volumes/web_cache"))
        );
        assert!(spec
            .linux()
            .as_ref()
            .and_then(|l| l.rootfs_propagation().clone())
            .is_none());
        for bad in ["./rel:/x", "/a:rel", "/a:/b:bogus", "a:b:c:d"] {
            assert!(
                matches!(Volume::parse("web", bad), Err(SpecError::Volume { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_shared_volume_makes_the_mount_namespace_shared() {
        let slave = gen(&Service {
            volumes: vec!["/home:/home:rslave".into()],
            ..svc()
        });
        assert_eq!(
            mount_at(&slave, "/home").and_then(|m| m.options().clone()),
            Some(vec!["rbind".into(), "rw".into(), "rslave".into()])
        );
        assert!(slave
            .linux()
            .as_ref()
            .and_then(|l| l.rootfs_propagation().clone())
            .is_none());
        let shared = gen(&Service {
            volumes: vec!["/mnt:/mnt:rshared".into()],
            ..svc()
        });
        assert_eq!(
            shared
                .linux()
                .as_ref()
                .and_then(|l| l.rootfs_propagation().clone())
                .as_deref(),
            Some("shared")
        );
    }

    #[test]
    fn tmpfs_and_read_only() {
        let spec = gen(&Service {
            tmpfs: StringList(vec!["/cache:size=64m,mode=700".into(), "/run".into()]),
            read_only: true,
            ..svc()
        });
        assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
        let cache = mount_at(&spec, "/cache").expect("/cache");
        assert_eq!(cache.typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            cache.options().clone(),
            Some(vec![
                "nosuid".into(),
                "nodev".into(),
                "size=64m".into(),
                "mode=700".into()
            ])
        );
        assert!(mount_at(&spec, "/tmp").is_some(), "read_only adds /tmp");
        let runs = spec.mounts().as_ref().map(|m| {
            m.iter()
                .filter(|m| m.destination() == Path::new("/run"))
                .count()
        });
        assert_eq!(runs, Some(1), "an explicit /run tmpfs is not doubled");

        let rw = gen(&svc());
        assert!(mount_at(&rw, "/tmp").is_none() && mount_at(&rw, "/run").is_none());
    }

    #[test]
    fn devices_from_host_numbers() {
        let mut c = ctx();
        c.host_devices.insert(
            PathBuf::from("/dev/ttyS0"),
            HostDevice {
                block: false,
                major: 4,
                minor: 64,
                mode: 0o20660,
                uid: 0,
                gid: 5,
            },
        );
        c.host_devices.insert(
            PathBuf::from("/dev/vda"),
            HostDevice {
                block: true,
                major: 253,
                minor: 0,
                mode: 0o60660,
                uid: 0,
                gid: 6,
            },
        );
        let service = Service {
            devices: vec!["/dev/ttyS0".into(), "/dev/vda:/dev/disk0:r".into()],
            ..svc()
        };
        let spec = generate("web", &service, &ImageInfo::default(), &c).expect("spec");
        let linux = spec.linux().as_ref().expect("linux");
        let devices = linux.devices().clone().unwrap_or_default();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].path(), Path::new("/dev/ttyS0"));
        assert_eq!(
            (devices[0].typ(), devices[0].major(), devices[0].minor()),
            (LinuxDeviceType::C, 4, 64)
        );
        assert_eq!(devices[0].file_mode(), Some(0o660));
        assert_eq!(devices[1].path(), Path::new("/dev/disk0"));
        assert_eq!(devices[1].typ(), LinuxDeviceType::B);
        let rules = resources(&spec).devices().clone().unwrap_or_default();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[2].access().as_deref(), Some("r"));
        assert_eq!((rules[2].major(), rules[2].minor()), (Some(253), Some(0)));

        let missing = Service {
            devices: vec!["/dev/nope".into()],
            ..svc()
        };
        assert!(matches!(
            generate("web", &missing, &ImageInfo::default(), &c),
            Err(SpecError::Device { .. })
        ));
        assert_eq!(
            device_paths(&service),
            [PathBuf::from("/dev/ttyS0"), PathBuf::from("/dev/vda")]
        );
    }

    #[test]
    fn environment_layers_image_then_berth_then_service() {
        let image = ImageInfo {
            config: RunConfig {
                env: Some(vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()]),
                cmd: Some(vec!["/bin/sh".into()]),
                ..RunConfig::default()
            },
            ..ImageInfo::default()
        };
        let mut c = ctx();
        c.environment.insert("B".into(), "berth".into());
        c.environment.insert("C".into(), "berth".into());
        let service = Service {
            environment: KeyValues(
                [
                    ("C".to_string(), Some("service".to_string())),
                    ("D".to_string(), Some("x=y".to_string())),
                    ("E".to_string(), None),
                ]
                .into_iter()
                .collect(),
            ),
            ..svc()
        };
        let spec = generate("web", &service, &image, &c).expect("spec");
        assert_eq!(
            env(&spec),
            [
                "PATH=/bin",
                "A=image",
                "B=berth",
                "C=service",
                "D=x=y",
                "HOSTNAME=web"
            ]
        );
        let bare = gen(&svc());
        assert!(
            env(&bare).iter().any(|e| e == DEFAULT_PATH),
            "PATH is always set"
        );
    }

    #[test]
    fn entrypoint_and_command_merge_like_docker() {
        let image = RunConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["--default".into()]),
            ..RunConfig::default()
        };
        let run = |entrypoint: Option<Command>, command: Option<Command>| {
            process_args(
                "web",
                &Service {
                    entrypoint,
                    command,
                    ..Service::default()
                },
                &image,
            )
        };
        assert_eq!(run(None, None).expect("args"), ["/entry", "--default"]);
        assert_eq!(
            run(None, Some(Command::Exec(vec!["-v".into()]))).expect("args"),
            ["/entry", "-v"]
        );
        assert_eq!(
            run(Some(Command::Exec(vec!["/other".into()])), None).expect("args"),
            ["/other"],
            "a new entrypoint drops the image's Cmd"
        );
        assert_eq!(
            run(
                Some(Command::Exec(vec!["/other".into()])),
                Some(Command::Shell("echo hi".into()))
            )
            .expect("args"),
            ["/other", "/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            run(
                Some(Command::Shell(String::new())),
                Some(Command::Exec(vec!["ls".into()]))
            )
            .expect("args"),
            ["ls"],
            "an empty entrypoint clears the image's"
        );
        assert!(matches!(
            process_args("web", &Service::default(), &RunConfig::default()),
            Err(SpecError::NoCommand { .. })
        ));
        let spec = gen(&svc());
        assert_eq!(args(&spec), ["echo", "hi"]);
    }

    #[test]
    fn users_numeric_and_by_name() {
        let image = ImageInfo {
            passwd: Some(
                "root:x:0:0:root:/root:/bin/sh\nntp:x:101:102::/nonexistent:/usr/sbin/nologin\n"
                    .into(),
            ),
            group: Some("root:x:0:\nntp:x:102:\nclock:x:200:ntp,other\naudio:x:29:\n".into()),
            ..ImageInfo::default()
        };
        let u = resolve_user("web", "ntp", &image).expect("ntp");
        assert_eq!((u.uid(), u.gid()), (101, 102));
        assert_eq!(u.additional_gids().clone(), Some(vec![200]));
        let u = resolve_user("web", "1000", &image).expect("1000");
        assert_eq!((u.uid(), u.gid()), (1000, 0));
        let u = resolve_user("web", "1000:1001", &image).expect("1000:1001");
        assert_eq!((u.uid(), u.gid()), (1000, 1001));
        let u = resolve_user("web", "101:audio", &image).expect("101:audio");
        assert_eq!((u.uid(), u.gid()), (101, 29));
        assert!(matches!(
            resolve_user("web", "nobody", &image),
            Err(SpecError::User { .. })
        ));
        assert!(resolve_user("web", "nobody", &ImageInfo::default())
            .expect_err("no passwd")
            .to_string()
            .contains("numeric"));

        let spec = generate(
            "web",
            &Service {
                user: Some("ntp".into()),
                working_dir: Some("/srv".into()),
                ..svc()
            },
            &image,
            &ctx(),
        )
        .expect("spec");
        let p = spec.process().as_ref().expect("process");
        assert_eq!((p.user().uid(), p.user().gid()), (101, 102));
        assert_eq!(p.cwd(), Path::new("/srv"));

        // The image's User and WorkingDir apply when the service says nothing.
        let image = ImageInfo {
            config: RunConfig {
                user: Some("7:8".into()),
                working_dir: Some("/work".into()),
                ..RunConfig::default()
            },
            ..ImageInfo::default()
        };
        let spec = generate("web", &svc(), &image, &ctx()).expect("spec");
        let p = spec.process().as_ref().expect("process");
        assert_eq!((p.user().uid(), p.user().gid()), (7, 8));
        assert_eq!(p.cwd(), Path::new("/work"));
    }

    #[test]
    fn limits_and_oom_score() {
        let spec = gen(&Service {
            mem_limit: Some(Scalar("512m".into())),
            cpus: Some(1.5),
            pids_limit: Some(100),
            oom_score_adj: Some(-500),
            ..svc()
        });
        let r = resources(&spec);
        assert_eq!(r.memory().as_ref().and_then(|m| m.limit()), Some(512 << 20));
        let cpu = r.cpu().as_ref().expect("cpu");
        assert_eq!((cpu.quota(), cpu.period()), (Some(150_000), Some(100_000)));
        assert_eq!(r.pids().as_ref().map(|p| p.limit()), Some(100));
        assert_eq!(
            spec.process().as_ref().and_then(|p| p.oom_score_adj()),
            Some(-500)
        );
        // Not berthd's protective score, which it would otherwise inherit.
        assert_eq!(
            gen(&svc())
                .process()
                .as_ref()
                .and_then(|p| p.oom_score_adj()),
            Some(0)
        );
        let unlimited = gen(&Service {
            pids_limit: Some(0),
            ..svc()
        });
        assert_eq!(
            resources(&unlimited).pids().as_ref().map(|p| p.limit()),
            Some(-1)
        );
        assert!(matches!(
            generate(
                "web",
                &Service {
                    mem_limit: Some(Scalar("lots".into())),
                    ..svc()
                },
                &ImageInfo::default(),
                &ctx()
            ),
            Err(SpecError::MemLimit { .. })
        ));
        assert!(matches!(
            generate(
                "web",
                &Service {
                    cpus: Some(-1.0),
                    ..svc()
                },
                &ImageInfo::default(),
                &ctx()
            ),
            Err(SpecError::Cpus { .. })
        ));
    }

    #[test]
    fn berth_binary_is_bound_read_only() {
        let c = SpecContext {
            berth_binary: Some(PathBuf::from("/usr/bin/berth")),
            ..ctx()
        };
        let spec = generate("web", &svc(), &ImageInfo::default(), &c).expect("spec");
        let m = mount_at(&spec, BERTH_IN_CONTAINER).expect("berth");
        assert_eq!(m.source().as_deref(), Some(Path::new("/usr/bin/berth")));
        assert!(m
            .options()
            .as_ref()
            .is_some_and(|o| o.contains(&"ro".to_string())));
    }

    #[test]
    fn the_spec_round_trips_through_json() {
        let spec = gen(&svc());
        let text = serde_json::to_string(&spec).expect("serialize");
        let back: Spec = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, spec);
    }
}
