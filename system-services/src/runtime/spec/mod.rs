//! The OCI runtime spec of a system container, generated from its compose-syntax
//! service definition and its image's config (ARCHITECTURE.md §4–§5).
//!
//! [`generate`] is a pure function: everything it would otherwise look up on the
//! host (device numbers, the image's `/etc/passwd`, another service's network
//! namespace) comes in through [`SpecContext`] and [`ImageInfo`], so each compose
//! field's effect on the spec is unit-tested here without root.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use berth_configs::model::Service;
use berth_images::oci::RunConfig;
use oci_spec::runtime::{
    get_default_maskedpaths, get_default_readonly_paths, Linux, LinuxCapabilities, LinuxCpu,
    LinuxDeviceType, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources,
    Mount, Process, Root, Spec,
};

mod caps;
mod devices;
mod process;
mod volumes;

pub use berth_configs::compose::{Volume, VolumeSource};
pub use caps::capabilities;
pub use devices::device_paths;
use devices::{device, device_rule};
pub use process::{environment, process_args, resolve_user};
use volumes::tmpfs_mount;

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
    /// Linux has it but the OCI library does not know it yet.
    #[error("service `{service}`: capability `{name}` cannot be granted by this runtime")]
    Capability { service: String, name: String },
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
    #[error("service `{service}`: mem_limit `{value}` must be above zero and below 8 EiB")]
    MemLimit { service: String, value: u64 },
    #[error("service `{service}`: cpus `{value}` must be a positive number")]
    Cpus { service: String, value: f64 },
    #[error("service `{service}`: cpu_shares `{value}` is not from 2 to 262144")]
    CpuShares { service: String, value: u64 },
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
        // A tmpfs or a volume the service names there already makes the
        // directory writable (the engines bind the host's /tmp).
        let explicit: Vec<&str> = service
            .tmpfs
            .0
            .iter()
            .map(|t| t.split(':').next().unwrap_or_default())
            .chain(service.volumes.iter().map(|v| v.target.as_str()))
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
        let mut options = vec!["rbind".to_string(), ro_if(v.read_only).to_string()];
        options.extend(v.options.iter().cloned());
        shares_mounts |= v.shares_mounts();
        mounts.push(bind(
            &v.host_path(name, &ctx.volumes_dir),
            &v.target,
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
        // Every device, and the host's nodes in its own `/dev`; the runtime
        // makes those between create and start (`host::devices::fill`) rather
        // than listing them here: libcontainer makes each listed node through
        // its safe path walk, 3,000 system calls for a console's hundred nodes.
        rules.push(device_rule(true, LinuxDeviceType::A, None, None, "rwm"));
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
        let bytes = i64::try_from(mem.0)
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| SpecError::MemLimit {
                service: name.into(),
                value: mem.0,
            })?;
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(bytes));
        resources.set_memory(Some(memory));
    }
    let mut cpu = LinuxCpu::default();
    if let Some(cpus) = service.cpus {
        if !(cpus > 0.0 && cpus.is_finite() && cpus < 1e6) {
            return Err(SpecError::Cpus {
                service: name.into(),
                value: cpus,
            });
        }
        const PERIOD: u64 = 100_000;
        cpu.set_period(Some(PERIOD));
        cpu.set_quota(Some(((cpus * PERIOD as f64).round() as i64).max(1000)));
    }
    if let Some(shares) = service.cpu_shares {
        if !(berth_configs::model::CPU_SHARES_MIN..=berth_configs::model::CPU_SHARES_MAX)
            .contains(&shares)
        {
            return Err(SpecError::CpuShares {
                service: name.into(),
                value: shares,
            });
        }
        // cgroup v2 has a weight instead; libcontainer converts as runc does,
        // so a share means what it means to `docker run --cpu-shares`.
        cpu.set_shares(Some(shares));
    }
    if service.cpus.is_some() || service.cpu_shares.is_some() {
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
mod tests;
