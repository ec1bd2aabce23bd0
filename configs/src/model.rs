//! The typed cloud-config: the cloud-init keys Berth implements and the `berth:` section.
//!
//! Every field is optional so that each source (defaults, OEM, user-data, local
//! changes, kernel command line) can say only what it means to change; what must
//! be present in the *merged* result is checked by [`crate::validate`].

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::compose::{ByteSize, CapName, Device, StopSignal, Volume};
use crate::forms::{Command, Duration, FileMode, KeyValues, Scalar, StringList};

/// A whole `#cloud-config` document.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(title = "Berth cloud-config")]
pub struct CloudConfig {
    /// The machine's hostname.
    pub hostname: Option<String>,
    /// SSH public keys for the default user `berth`.
    pub ssh_authorized_keys: Vec<String>,
    /// The SSH host key types the console makes when the machine has none of
    /// that type yet (cloud-init's key): `ed25519`, `ecdsa`, `rsa`. Default
    /// `[ed25519, ecdsa]`; keys the machine already has are always offered.
    pub ssh_genkeytypes: Option<Vec<String>>,
    /// Users to create in the console. A plain string names a user with defaults.
    #[schemars(schema_with = "users_schema")]
    pub users: Vec<User>,
    /// Files to write at boot, before services start.
    pub write_files: Vec<WriteFile>,
    /// Commands run once per boot in the console container after it is up.
    pub runcmd: Vec<Command>,
    /// Commands run on the host early in boot, before services start.
    pub bootcmd: Vec<Command>,
    /// Filesystems to mount, in cloud-init's form: `[device, mountpoint, type, options, dump, pass]`.
    pub mounts: Vec<Vec<Scalar>>,
    /// Certificate authorities to trust, in cloud-init's form (`ca-certs` too).
    #[serde(alias = "ca-certs")]
    pub ca_certs: CaCerts,
    /// Berth's own settings.
    pub berth: Berth,
    /// RancherOS / BurmillaOS settings; translated into `berth:` when loaded.
    #[schemars(schema_with = "rancher_schema")]
    pub rancher: Option<serde_json::Value>,
}

// Shorthands rewritten by `normalize` before the model reads them still need to
// be valid in the schema editors use.
fn users_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let user = g.subschema_for::<User>();
    schemars::json_schema!({"type": "array", "items": {"anyOf": [{"type": "string"}, user]}})
}

fn depends_on_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let dep = g.subschema_for::<Dependency>();
    schemars::json_schema!({"anyOf": [
        {"type": "array", "items": {"type": "string"}},
        {"type": "object", "additionalProperties": dep}
    ]})
}

fn console_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let console = g.subschema_for::<Console>();
    schemars::json_schema!({"anyOf": [{"type": "string"}, console]})
}

fn engine_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let engine = g.subschema_for::<Engine>();
    schemars::json_schema!({"anyOf": [{"type": "string"}, engine]})
}

fn vlans_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let vlan = g.subschema_for::<Vlan>();
    schemars::json_schema!({"anyOf": [
        {"type": "string", "description": "Comma-separated ids, each optionally `:name`: \"100,200:storage\"."},
        {"type": "array", "items": vlan}
    ]})
}

fn rancher_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "RancherOS / BurmillaOS section, accepted as an alias of `berth` and translated when loaded.",
        "type": "object"
    })
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct User {
    /// Login name. `default` means Berth's default user, `berth`.
    pub name: String,
    pub gecos: Option<String>,
    /// Supplementary groups, as a list or a comma-separated string.
    pub groups: StringList,
    pub primary_group: Option<String>,
    pub shell: Option<String>,
    pub homedir: Option<String>,
    pub uid: Option<u32>,
    pub system: bool,
    pub no_create_home: bool,
    pub ssh_authorized_keys: Vec<String>,
    /// sudoers rules, e.g. `ALL=(ALL) NOPASSWD:ALL`; `false` for none.
    pub sudo: Sudo,
    /// Lock the password (the default): log in with keys only.
    pub lock_passwd: Option<bool>,
    /// A crypt(3) password hash.
    pub passwd: Option<String>,
    /// cloud-init's other spelling of `passwd`.
    pub hashed_passwd: Option<String>,
}

/// sudo rules: a rule, a list of rules, or `false`/absent for none.
#[derive(Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[schemars(transparent)]
pub struct Sudo(#[schemars(with = "Option<StringList>")] pub Vec<String>);

impl<'de> Deserialize<'de> for Sudo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Sudo;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sudoers rule, a list of rules, or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Sudo, E> {
                if v {
                    Err(E::custom(
                        "`sudo: true` is ambiguous; write a rule such as \"ALL=(ALL) NOPASSWD:ALL\"",
                    ))
                } else {
                    Ok(Sudo(Vec::new()))
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Sudo, E> {
                Ok(Sudo(Vec::new()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Sudo, E> {
                Ok(Sudo(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Sudo, A::Error> {
                let mut rules = Vec::new();
                while let Some(rule) = seq.next_element::<String>()? {
                    rules.push(rule);
                }
                Ok(Sudo(rules))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WriteFile {
    /// Absolute path of the file to write.
    pub path: String,
    pub content: String,
    pub encoding: Option<Encoding>,
    /// Octal mode, e.g. "0644" (the default).
    pub permissions: Option<FileMode>,
    /// `user:group` (default `root:root`).
    pub owner: Option<String>,
    /// Append to the file instead of replacing it.
    pub append: bool,
    /// Accepted for cloud-init compatibility; Berth writes every file before services start.
    pub defer: bool,
    /// RancherOS: the system service whose container the file belongs to.
    pub container: Option<String>,
}

/// cloud-init's `ca_certs`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CaCerts {
    /// PEM certificates trusted by Berth's pulls, the console and the engine,
    /// besides the usual public CAs.
    pub trusted: Vec<String>,
    /// Not supported: the public CAs stay trusted (a warning says so).
    pub remove_defaults: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Encoding {
    #[serde(rename = "text/plain")]
    Plain,
    #[serde(rename = "b64", alias = "base64")]
    Base64,
    #[serde(rename = "gzip", alias = "gz")]
    Gzip,
    #[serde(
        rename = "gz+b64",
        alias = "gz+base64",
        alias = "gzip+b64",
        alias = "gzip+base64"
    )]
    GzipBase64,
}

/// The `berth:` section (also accepted as `rancher:`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Berth {
    /// System services, in compose syntax, keyed by name.
    pub services: BTreeMap<String, Service>,
    /// Optional services from the catalogue, switched on (`true`) or off.
    pub services_include: BTreeMap<String, bool>,
    pub network: Network,
    pub state: State,
    #[schemars(schema_with = "console_schema")]
    pub console: Console,
    #[schemars(schema_with = "engine_schema")]
    pub engine: Engine,
    /// Kernel modules to load, each optionally followed by parameters: `"bonding mode=1"`.
    pub modules: Vec<String>,
    /// Kernel parameters, e.g. `net.ipv4.ip_forward: 1`.
    pub sysctl: BTreeMap<String, Scalar>,
    /// Kernel command-line arguments an installed machine boots with from the
    /// next boot on, one per entry (`cryptomgr.notests=0`); tried once before
    /// they are kept.
    pub kernel_args: Vec<String>,
    /// Environment passed to every system service.
    pub environment: KeyValues,
    pub ntp: Ntp,
    pub ssh: Ssh,
    /// Where to look for user-data, in order: `nocloud`, `configdrive`, `ec2`, `gce`,
    /// `digitalocean`, `cmdline`, `url:URL`, `file:PATH`.
    pub datasources: Vec<String>,
    pub upgrade: Upgrade,
    pub log: Log,
    pub registries: Registries,
    /// Installing the live system onto a disk at boot (fleet and PXE installs).
    pub install: Install,
}

/// `berth.install`: the live system installs itself at boot, with the same
/// refusals as `berth install`, then powers off or reboots.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Install {
    /// The whole disk to install to, e.g. `/dev/vda`.
    pub disk: Option<String>,
    /// The installed system's cloud-config: a path or an http(s) URL
    /// (without it, the live system's config sources carry over).
    pub config: Option<String>,
    /// Install over a disk that holds a partition table or filesystem.
    pub force: bool,
    /// What then: `poweroff` (the default), `reboot` or `stay`.
    pub then: Option<InstallThen>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstallThen {
    Poweroff,
    Reboot,
    Stay,
}

/// A system service, in compose syntax.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Service {
    pub image: Option<String>,
    pub command: Option<Command>,
    pub entrypoint: Option<Command>,
    pub environment: KeyValues,
    /// `SOURCE:TARGET[:OPTIONS]`; SOURCE is a host path or a named volume.
    pub volumes: Vec<Volume>,
    pub privileged: bool,
    /// `host`, `none`, or `service:NAME` to share another service's network.
    pub network_mode: Option<String>,
    /// `host` to share the host's PID namespace.
    pub pid: Option<String>,
    pub ipc: Option<String>,
    pub uts: Option<String>,
    pub cap_add: Vec<CapName>,
    pub cap_drop: Vec<CapName>,
    /// `seccomp=unconfined` (or `seccomp:unconfined`): no default seccomp
    /// profile for this non-privileged service.
    pub security_opt: Vec<String>,
    /// `HOST[:CONTAINER[:PERMISSIONS]]`, e.g. `/dev/ttyS0`.
    pub devices: Vec<Device>,
    pub read_only: bool,
    pub tmpfs: StringList,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub restart: Option<RestartPolicy>,
    /// Services this one needs: a list of names, or names with a `condition`.
    #[schemars(schema_with = "depends_on_schema")]
    pub depends_on: BTreeMap<String, Dependency>,
    pub healthcheck: Option<Healthcheck>,
    pub labels: KeyValues,
    /// Berth: run to completion before dependents start.
    pub oneshot: bool,
    /// Berth: start only once the boot is ready (every service without it
    /// has come to rest, or a minute has passed), so the ready line does not
    /// wait for it; services that depend on it start after it.
    pub after_ready: bool,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<StopSignal>,
    /// Memory limit: bytes, or with a unit (`512m`, `1g`).
    pub mem_limit: Option<ByteSize>,
    pub cpus: Option<f64>,
    /// The service's share of the CPU when services compete for it (compose's
    /// `cpu_shares`: 1024 is the usual weight, 2–262144). A cgroup weight,
    /// not a limit: an idle CPU is still all the service's.
    pub cpu_shares: Option<u64>,
    pub pids_limit: Option<i64>,
    pub oom_score_adj: Option<i32>,
}

/// The range of compose's `cpu_shares` (cgroup v1's `cpu.shares`).
pub const CPU_SHARES_MIN: u64 = 2;
pub const CPU_SHARES_MAX: u64 = 262_144;

impl Service {
    /// Whether `security_opt` turns the default seccomp profile off.
    pub fn seccomp_unconfined(&self) -> bool {
        self.security_opt.iter().any(|o| is_seccomp_unconfined(o))
    }
}

/// `seccomp=unconfined` in Docker's or Compose's spelling.
pub fn is_seccomp_unconfined(option: &str) -> bool {
    matches!(option, "seccomp=unconfined" | "seccomp:unconfined")
}

/// When a service is restarted after its main process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    /// Restart on a non-zero exit, at most this many times (`None`: no limit).
    OnFailure(Option<u32>),
}

/// Why a `restart:` value is not a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartPolicyError {
    #[error("`{count}` in `{policy}` is not a retry count")]
    RetryCount {
        count: String,
        policy: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error(
        "`{0}` is not a restart policy; use no, always, unless-stopped, on-failure or on-failure:N"
    )]
    Unknown(String),
}

impl RestartPolicy {
    pub fn parse(text: &str) -> Result<Self, RestartPolicyError> {
        match text {
            "no" | "false" | "never" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure(None)),
            other => match other.strip_prefix("on-failure:") {
                Some(n) => n
                    .parse()
                    .map(|n| RestartPolicy::OnFailure(Some(n)))
                    .map_err(|source| RestartPolicyError::RetryCount {
                        count: n.to_string(),
                        policy: other.to_string(),
                        source,
                    }),
                None => Err(RestartPolicyError::Unknown(other.to_string())),
            },
        }
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?;
        RestartPolicy::parse(&text.0).map_err(de::Error::custom)
    }
}

impl JsonSchema for RestartPolicy {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RestartPolicy".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "boolean"],
            "pattern": "^(no|always|unless-stopped|on-failure(:[0-9]+)?)$"
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Dependency {
    pub condition: Condition,
    /// Compose: when false, a missing dependency is not an error.
    pub required: Option<bool>,
    /// Compose: restart this service when the dependency restarts.
    pub restart: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    #[default]
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Healthcheck {
    /// `["CMD", args…]`, `["CMD-SHELL", "cmd"]`, a shell string, `tcp:PORT`,
    /// `file:PATH` or `http:SOCKET PATH`.
    pub test: Option<Command>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
    pub disable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    pub dns: Dns,
    /// Interfaces keyed by name (`eth0`), glob (`eth*`) or MAC (`mac:52:54:00:12:34:56`).
    pub interfaces: BTreeMap<String, Interface>,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    /// Static nameservers and search domains win over those from DHCP leases.
    #[serde(rename = "override")]
    pub override_leases: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Interface {
    pub dhcp: Option<bool>,
    /// An address in CIDR form, `10.0.0.5/24` or `fd00::5/64`.
    pub address: Option<String>,
    pub addresses: Vec<String>,
    pub gateway: Option<String>,
    pub gateway_ipv6: Option<String>,
    pub mtu: Option<u32>,
    pub routes: Vec<Route>,
    /// Make this interface a member of the named bond.
    pub bond: Option<String>,
    /// Bond settings (on the bond interface): `mode`, `miimon`, …
    pub bond_opts: BTreeMap<String, Scalar>,
    /// Members of this bond or bridge, as an alternative to `bond:`/`bridge:` on each member.
    pub members: Vec<String>,
    /// VLANs on this interface: `"100,200:name"` or a list of `{id, name}`.
    #[schemars(schema_with = "vlans_schema")]
    pub vlans: Vec<Vlan>,
    /// `true` makes this interface a bridge; a name makes it a member of that bridge.
    pub bridge: Option<Bridge>,
    /// Readiness waits for this interface's address (default: the first configured one).
    pub required: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Route {
    /// Destination in CIDR form, or `default`.
    pub to: String,
    pub via: Option<String>,
    pub metric: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Vlan {
    pub id: u32,
    /// Defaults to `<interface>.<id>`.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(untagged)]
pub enum Bridge {
    IsBridge(bool),
    MemberOf(String),
}

impl<'de> Deserialize<'de> for Bridge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Bridge;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true (this is a bridge) or the name of a bridge to join")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bridge, E> {
                Ok(Bridge::IsBridge(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bridge, E> {
                Ok(Bridge::MemberOf(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct State {
    /// The state device: a path, `LABEL=…` or `UUID=…` (default `LABEL=BERTH_STATE`).
    pub dev: Option<String>,
    pub fstype: Option<String>,
    /// Disks that may be formatted as state — only ever when their first MiB is all zero.
    pub autoformat: StringList,
    /// Wait for the state device to appear.
    pub wait: Option<bool>,
    /// Refuse to boot (emergency shell) without the state device instead of running from RAM.
    pub required: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Console {
    /// Which console runs: `default` (Debian, OpenSSH) or one from
    /// `/usr/share/berth/consoles` (`busybox`: busybox and dropbear).
    pub name: Option<String>,
    /// Log in automatically on these consoles (e.g. `ttyS0`, `tty1`).
    pub autologin: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Engine {
    /// The user container engine: `docker` (default) or one from
    /// `/usr/share/berth/engines` (`podman`).
    pub name: Option<String>,
    /// Extra arguments for the engine daemon.
    pub args: Vec<String>,
    pub environment: KeyValues,
    /// Image archives (`docker save` / `podman save` output) to load into the
    /// engine at boot, once each, besides those in `/var/lib/berth/preload/ENGINE/`:
    /// absolute paths on the host, e.g. written by `write_files` or on a mounted disk.
    pub preload: Vec<String>,
    /// Registry mirrors for Docker Hub (`--registry-mirror`); one or a list.
    pub registry_mirror: StringList,
    /// The engine's storage driver (`--storage-driver`, e.g. `overlay2`).
    pub storage_driver: Option<String>,
    /// The default log driver of containers (`--log-driver`, e.g. `json-file`).
    pub log_driver: Option<String>,
    /// Options of that log driver (`--log-opt KEY=VALUE`).
    pub log_opts: KeyValues,
    /// Serve the engine's API over TLS on the network, with `tls_args` (by
    /// default RancherOS's: port 2376, certificates in `/etc/docker/tls/`).
    pub tls: bool,
    pub tls_args: Vec<String>,
    /// Make this machine a Docker Swarm node (docker only; see docs/cluster.md).
    pub swarm: Swarm,
}

/// `berth.engine.swarm`: this machine initialises a swarm, or joins one given
/// its managers and a join token. berthd applies it once the engine is ready,
/// and only when the engine is in no swarm yet: membership is the engine's
/// state (`/var/lib/docker/swarm` on the state partition) and survives reboots.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Swarm {
    /// Initialise a new swarm with this machine as its first manager.
    pub init: bool,
    /// Join the swarm these managers run: `host[:port]` each (port 2377 when
    /// left out), tried in turn.
    pub join: StringList,
    /// The join token (`docker swarm join-token -q worker` or `manager` on a
    /// manager): which one it is decides whether this machine joins as a
    /// worker or a manager.
    pub token: Option<String>,
    /// The address other nodes reach this one at: an IP address (optionally
    /// `:port`) or an interface name (`eth1`).
    pub advertise_addr: Option<String>,
    /// Where the swarm's control port listens (`docker swarm --listen-addr`,
    /// default `0.0.0.0:2377`): an IP address or interface, optionally `:port`.
    pub listen_addr: Option<String>,
    /// The address or interface for overlay (VXLAN) traffic, when it should
    /// not be the advertise address.
    pub data_path_addr: Option<String>,
    /// Labels of this machine: engine labels (daemon.json `labels`, placement
    /// constraint `engine.labels.KEY`) on every node, and node labels
    /// (`node.labels.KEY`) set by a node that is a manager itself.
    pub labels: KeyValues,
}

impl Swarm {
    /// Whether the config asks for anything at all.
    pub fn is_set(&self) -> bool {
        self.init
            || !self.join.0.is_empty()
            || self.token.is_some()
            || self.advertise_addr.is_some()
            || self.listen_addr.is_some()
            || self.data_path_addr.is_some()
            || !self.labels.0.is_empty()
    }

    /// The labels as `KEY=VALUE` (a key without a value: `KEY=`).
    pub fn label_pairs(&self) -> Vec<String> {
        self.labels
            .0
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or_default()))
            .collect()
    }
}

/// RancherOS's TLS arguments, used when `tls` is on and `tls_args` is empty.
pub const DEFAULT_TLS_ARGS: &[&str] = &[
    "--tlsverify",
    "--tlscacert=/etc/docker/tls/ca.pem",
    "--tlscert=/etc/docker/tls/server-cert.pem",
    "--tlskey=/etc/docker/tls/server-key.pem",
    "-H=0.0.0.0:2376",
];

impl Engine {
    /// The docker daemon's flags: `args`, then the TLS arguments when `tls` is on.
    pub fn dockerd_flags(&self) -> Vec<String> {
        let mut flags = self.args.clone();
        if self.tls {
            if self.tls_args.is_empty() {
                flags.extend(DEFAULT_TLS_ARGS.iter().map(|a| a.to_string()));
            } else {
                flags.extend(self.tls_args.iter().cloned());
            }
        }
        flags
    }

    /// The settings that go into dockerd's `daemon.json`, with `registries`'
    /// insecure ones (Berth's pulls and the engine's alike).
    pub fn daemon_json(
        &self,
        registries: &Registries,
    ) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut out = serde_json::Map::new();
        let list =
            |items: &[String]| Value::Array(items.iter().cloned().map(Value::String).collect());
        if !registries.insecure.is_empty() {
            out.insert("insecure-registries".into(), list(&registries.insecure));
        }
        if !self.registry_mirror.0.is_empty() {
            out.insert("registry-mirrors".into(), list(&self.registry_mirror.0));
        }
        if let Some(driver) = &self.storage_driver {
            out.insert("storage-driver".into(), Value::String(driver.clone()));
        }
        if let Some(driver) = &self.log_driver {
            out.insert("log-driver".into(), Value::String(driver.clone()));
        }
        if !self.log_opts.0.is_empty() {
            let opts = self
                .log_opts
                .0
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone().unwrap_or_default())))
                .collect();
            out.insert("log-opts".into(), Value::Object(opts));
        }
        if !self.swarm.labels.0.is_empty() {
            out.insert("labels".into(), list(&self.swarm.label_pairs()));
        }
        out
    }

    /// Whether anything beyond `args` is set (flags only dockerd understands).
    pub fn has_docker_settings(&self) -> bool {
        !self.registry_mirror.0.is_empty()
            || self.storage_driver.is_some()
            || self.log_driver.is_some()
            || !self.log_opts.0.is_empty()
            || self.tls
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Ntp {
    pub servers: Vec<String>,
}

/// The SSH host key types the console's servers offer, in the order offered.
pub const SSH_HOST_KEY_TYPES: &[&str] = &["ed25519", "ecdsa", "rsa"];
/// The types made on a new machine when `ssh_genkeytypes` is not set. Every
/// SSH client of the last decade speaks ECDSA or Ed25519; a 3072-bit RSA key
/// costs seconds of a first boot (10 s on one emulated CPU), so it is made
/// only when asked for.
pub const DEFAULT_SSH_GENKEYTYPES: &[&str] = &["ed25519", "ecdsa"];
/// Types cloud-init knows that OpenSSH 9 no longer offers: accepted, not made.
pub const RETIRED_SSH_KEY_TYPES: &[&str] = &["dsa"];

impl CloudConfig {
    /// The host key types to make when missing: `ssh_genkeytypes`'s known
    /// types in offer order, else the default. Never empty, so the SSH server
    /// always has a key: an empty or all-unknown list still makes Ed25519.
    pub fn ssh_key_types_to_make(&self) -> Vec<&'static str> {
        let Some(asked) = &self.ssh_genkeytypes else {
            return DEFAULT_SSH_GENKEYTYPES.to_vec();
        };
        let types: Vec<&'static str> = SSH_HOST_KEY_TYPES
            .iter()
            .copied()
            .filter(|t| asked.iter().any(|a| a == t))
            .collect();
        if types.is_empty() {
            vec![SSH_HOST_KEY_TYPES[0]]
        } else {
            types
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Ssh {
    pub port: Option<u16>,
    pub password_authentication: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Upgrade {
    /// The OS image reference upgrades come from.
    pub image: Option<String>,
    pub channel: Option<String>,
    /// A command (run with `sh -c` on the host) that must exit 0 before a
    /// trial boot of a new OS image commits it.
    pub health_check: Option<String>,
    /// How long a trial boot has to become healthy (default 5m).
    pub health_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    pub level: Option<LogLevel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Registries {
    /// Registries reached over plain HTTP (`host:port`).
    pub insecure: Vec<String>,
    /// Credentials keyed by registry host.
    pub auth: BTreeMap<String, RegistryAuth>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// base64 of `username:password`, as in Docker's config.json.
    pub auth: Option<String>,
    pub identitytoken: Option<String>,
}
