//! Checks on the merged config that types alone cannot express: addresses,
//! names, references between services, dependency cycles. Each finding points
//! at the source, line and column that set the offending value.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::diag::Diagnostic;
use crate::keypath;
use crate::model::{Bridge, CloudConfig, Encoding, Interface, Service};
use crate::node::Node;

mod checks;
mod network;
mod services;

pub use crate::compose::{parse_bytes, CAPABILITIES};
use checks::{
    check_cidr, check_healthcheck, valid_user_name, BOND_MODES, DATASOURCES, RANCHER_DATASOURCES,
};
pub use checks::{
    check_hostname, check_ssh_key, decode, decode_with_limit, valid_service_name, ContentError,
    ValueError,
};

/// Label naming services this one starts after: `io.berth.after: a,b`.
pub const AFTER_LABEL: &str = "io.berth.after";
/// Label naming services that start after this one: `io.berth.before: x`.
pub const BEFORE_LABEL: &str = "io.berth.before";

/// The service names listed in an ordering label ([`AFTER_LABEL`] or
/// [`BEFORE_LABEL`]), comma-separated, blanks dropped; defined or not.
pub fn ordering_label<'a>(service: &'a Service, label: &str) -> impl Iterator<Item = &'a str> {
    service
        .labels
        .get(label)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
}

/// Validates `config`, locating findings in `tree` (the merged tree it was read from).
pub fn validate(config: &CloudConfig, tree: &Node) -> Vec<Diagnostic> {
    let mut v = Validator {
        tree,
        out: Vec::new(),
        untold: 0,
    };
    v.hostname(config);
    v.users(config);
    v.write_files(config);
    v.ca_certs(config);
    v.mounts(config);
    v.services(config);
    v.network(config);
    v.berth_misc(config);
    if v.untold > 0 {
        v.out.push(Diagnostic::note(
            Some(tree.origin.clone()),
            "",
            format!("{} more findings not shown", v.untold),
        ));
    }
    v.out
}

/// Past this many findings the rest are counted, not built: a hostile config must
/// not make validation quadratic, and nobody reads the 101st error.
const MAX_FINDINGS: usize = 100;

/// Cycles named before the rest are summarised; each costs a copy of the path.
const MAX_CYCLES: usize = 10;

/// Everything all `write_files` may decode to, together: a few small gzip bombs
/// (or aliases of one) must not cost gigabytes, at validation or at boot.
pub const MAX_DECODED_FILES: usize = 64 << 20;

struct Validator<'a> {
    tree: &'a Node,
    out: Vec<Diagnostic>,
    untold: usize,
}

impl Validator<'_> {
    fn full(&self) -> bool {
        self.out.len() >= MAX_FINDINGS
    }

    fn report(&mut self, error: bool, path: &[&str], message: String) {
        if self.full() {
            self.untold += 1;
            return;
        }
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        let origin = keypath::nearest_origin(self.tree, &path);
        let written_as_rancher = self
            .tree
            .as_map()
            .and_then(|m| m.iter().find(|e| e.key == "berth"))
            .is_some_and(|e| e.written_as.as_deref() == Some("rancher"));
        let shown = path
            .iter()
            .enumerate()
            .fold(String::new(), |mut shown, (i, key)| {
                let key = if i == 0 && key == "berth" && written_as_rancher {
                    "rancher"
                } else {
                    key.as_str()
                };
                if key.parse::<usize>().is_ok() {
                    shown.push_str(&format!("[{key}]"));
                } else {
                    if !shown.is_empty() {
                        shown.push('.');
                    }
                    shown.push_str(key);
                }
                shown
            });
        self.out.push(if error {
            Diagnostic::error(Some(origin), shown, message)
        } else {
            Diagnostic::warning(Some(origin), shown, message)
        });
    }

    fn error(&mut self, path: &[&str], message: String) {
        self.report(true, path, message);
    }

    fn warn(&mut self, path: &[&str], message: String) {
        self.report(false, path, message);
    }

    fn hostname(&mut self, config: &CloudConfig) {
        if let Some(name) = &config.hostname {
            if let Err(e) = check_hostname(name) {
                self.error(&["hostname"], e.to_string());
            }
        }
    }

    fn users(&mut self, config: &CloudConfig) {
        for (i, key) in config.ssh_authorized_keys.iter().enumerate() {
            if let Err(e) = check_ssh_key(key) {
                self.warn(&["ssh_authorized_keys", &i.to_string()], e.to_string());
            }
        }
        self.ssh_genkeytypes(config);
        let mut seen = BTreeSet::new();
        for (i, user) in config.users.iter().enumerate() {
            let index = i.to_string();
            if user.name.is_empty() {
                self.error(&["users", &index], "a user needs a `name`".into());
                continue;
            }
            if !valid_user_name(&user.name) {
                self.error(
                    &["users", &index, "name"],
                    format!("`{}` is not a valid user name (lowercase letters, digits, `_`, `-`; at most 32)", user.name),
                );
            }
            if !seen.insert(user.name.as_str()) {
                self.error(
                    &["users", &index, "name"],
                    format!("user `{}` is defined twice", user.name),
                );
            }
            for (k, key) in user.ssh_authorized_keys.iter().enumerate() {
                if let Err(e) = check_ssh_key(key) {
                    self.warn(
                        &["users", &index, "ssh_authorized_keys", &k.to_string()],
                        e.to_string(),
                    );
                }
            }
        }
    }

    fn ssh_genkeytypes(&mut self, config: &CloudConfig) {
        use crate::model::{RETIRED_SSH_KEY_TYPES, SSH_HOST_KEY_TYPES};
        let Some(types) = &config.ssh_genkeytypes else {
            return;
        };
        for (i, kind) in types.iter().enumerate() {
            let path = ["ssh_genkeytypes", &i.to_string()];
            if SSH_HOST_KEY_TYPES.contains(&kind.as_str()) {
                continue;
            }
            if RETIRED_SSH_KEY_TYPES.contains(&kind.as_str()) {
                self.warn(
                    &path,
                    format!("`{kind}` host keys are not made: OpenSSH 9 no longer offers them"),
                );
                continue;
            }
            let mut msg = format!(
                "`{kind}` is not a host key type and is ignored; use {}",
                SSH_HOST_KEY_TYPES.join(", ")
            );
            if let Some(near) = crate::diag::did_you_mean(kind, SSH_HOST_KEY_TYPES.iter().copied())
            {
                msg.push_str(&format!(" (did you mean `{near}`?)"));
            }
            self.warn(&path, msg);
        }
        if !types
            .iter()
            .any(|t| SSH_HOST_KEY_TYPES.contains(&t.as_str()))
        {
            self.warn(
                &["ssh_genkeytypes"],
                format!(
                    "names no host key type Berth makes; {} is made so that SSH works",
                    SSH_HOST_KEY_TYPES[0]
                ),
            );
        }
    }

    fn write_files(&mut self, config: &CloudConfig) {
        let mut budget = MAX_DECODED_FILES;
        for (i, file) in config.write_files.iter().enumerate() {
            let index = i.to_string();
            if !file.path.starts_with('/') {
                self.error(
                    &["write_files", &index, "path"],
                    format!("`{}` must be an absolute path", file.path),
                );
            } else if file.path.split('/').any(|c| c == "..") {
                self.error(
                    &["write_files", &index, "path"],
                    format!("`{}` must not contain `..`", file.path),
                );
            }
            match decode_with_limit(file.encoding, &file.content, budget) {
                Ok(bytes) => budget -= bytes.len(),
                Err(e) => self.error(&["write_files", &index, "content"], e.to_string()),
            }
            if let Some(container) = &file.container {
                if !config.berth.services.contains_key(container) {
                    self.warn(
                        &["write_files", &index, "container"],
                        format!(
                            "there is no system service `{container}`; {} will not be written",
                            file.path
                        ),
                    );
                }
            }
            if let Some(owner) = &file.owner {
                let ok = owner.split(':').all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                }) && owner.matches(':').count() <= 1;
                if !ok {
                    self.error(
                        &["write_files", &index, "owner"],
                        format!("`{owner}` is not `user` or `user:group`"),
                    );
                }
            }
        }
    }

    fn ca_certs(&mut self, config: &CloudConfig) {
        for (i, pem) in config.ca_certs.trusted.iter().enumerate() {
            let begins = pem.matches("-----BEGIN CERTIFICATE-----").count();
            if begins == 0 || begins != pem.matches("-----END CERTIFICATE-----").count() {
                self.error(
                    &["ca_certs", "trusted", &i.to_string()],
                    "is not a PEM certificate (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)".into(),
                );
            }
        }
        if config.ca_certs.remove_defaults {
            self.warn(
                &["ca_certs", "remove_defaults"],
                "is not supported: the public CAs stay trusted".into(),
            );
        }
    }

    fn mounts(&mut self, config: &CloudConfig) {
        for (i, mount) in config.mounts.iter().enumerate() {
            if mount.is_empty() || mount.len() > 6 {
                self.error(
                    &["mounts", &i.to_string()],
                    format!("a mount has 1 to 6 fields (device, mountpoint, type, options, dump, pass), not {}", mount.len()),
                );
            } else if let Some(target) = mount.get(1) {
                let swap = mount.get(2).is_some_and(|t| t.0 == "swap");
                if !target.0.starts_with('/') && target.0 != "none" && target.0 != "swap" && !swap {
                    self.error(
                        &["mounts", &i.to_string(), "1"],
                        format!("mount point `{target}` must be an absolute path"),
                    );
                }
            }
        }
    }

    fn berth_misc(&mut self, config: &CloudConfig) {
        let b = &config.berth;
        for (i, ds) in b.datasources.iter().enumerate() {
            let index = i.to_string();
            let (kind, arg) = ds.split_once(':').unwrap_or((ds.as_str(), ""));
            match kind {
                "url" | "file" if arg.is_empty() => self.error(
                    &["berth", "datasources", &index],
                    format!("`{ds}` needs a location: `{kind}:…`"),
                ),
                "file" if !arg.starts_with('/') => self.error(
                    &["berth", "datasources", &index],
                    format!("`{ds}` needs an absolute path"),
                ),
                _ if DATASOURCES.contains(&kind) => {}
                _ if RANCHER_DATASOURCES.contains(&kind) => self.warn(
                    &["berth", "datasources", &index],
                    format!("the `{kind}` datasource is not supported by Berth; it is skipped"),
                ),
                _ => {
                    let mut msg = format!(
                        "`{ds}` is not a datasource; use one of {}",
                        DATASOURCES.join(", ")
                    );
                    if let Some(near) = crate::diag::did_you_mean(kind, DATASOURCES.iter().copied())
                    {
                        msg.push_str(&format!(" (did you mean `{near}`?)"));
                    }
                    self.error(&["berth", "datasources", &index], msg);
                }
            }
        }
        for key in b.sysctl.keys() {
            let ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"._-/*".contains(&c))
                && !key.split(['.', '/']).any(|p| p.is_empty() || p == "..");
            if !ok {
                self.error(
                    &["berth", "sysctl", key],
                    format!("`{key}` is not a sysctl name"),
                );
            }
        }
        for (i, module) in b.modules.iter().enumerate() {
            let name = module.split_whitespace().next().unwrap_or_default();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            {
                self.error(
                    &["berth", "modules", &i.to_string()],
                    format!("`{module}` does not start with a module name"),
                );
            }
        }
        for (i, arg) in b.kernel_args.iter().enumerate() {
            if let Err(e) = crate::kernel_args::check_arg(arg) {
                self.error(&["berth", "kernel_args", &i.to_string()], e);
            }
        }
        if let Err(e) = crate::kernel_args::join(&b.kernel_args) {
            if !b.kernel_args.is_empty()
                && b.kernel_args
                    .iter()
                    .all(|a| crate::kernel_args::check_arg(a).is_ok())
            {
                self.error(&["berth", "kernel_args"], e);
            }
        }
        if b.ssh.port == Some(0) {
            self.error(&["berth", "ssh", "port"], "port 0 is not a port".into());
        }
        if let Some(fstype) = &b.state.fstype {
            if !["ext4", "xfs", "btrfs", "auto"].contains(&fstype.as_str()) {
                self.error(
                    &["berth", "state", "fstype"],
                    format!("`{fstype}` is not supported for state; use ext4, xfs, btrfs or auto"),
                );
            }
        }
        for (i, dev) in b.state.autoformat.0.iter().enumerate() {
            if !dev.starts_with("/dev/") {
                self.error(
                    &["berth", "state", "autoformat", &i.to_string()],
                    format!("`{dev}` is not a device path under /dev"),
                );
            }
        }
        for (i, reg) in b.registries.insecure.iter().enumerate() {
            if reg.contains("://") || reg.contains('/') || reg.is_empty() {
                self.error(
                    &["berth", "registries", "insecure", &i.to_string()],
                    format!("`{reg}` should be a registry host[:port], without a scheme or path"),
                );
            }
        }
        // Which engines exist is the OS's catalogue's to say (`crate::choice`).
        for (i, path) in b.engine.preload.iter().enumerate() {
            if !path.starts_with('/') || path.split('/').any(|part| part == "..") {
                self.error(
                    &["berth", "engine", "preload", &i.to_string()],
                    format!("`{path}` should be an absolute path on the host, without `..`"),
                );
            }
        }
        self.swarm(config);
    }

    /// `berth.engine.swarm`: init or join (with managers and a token), with
    /// addresses docker will take, on the docker engine only.
    fn swarm(&mut self, config: &CloudConfig) {
        let engine = &config.berth.engine;
        let swarm = &engine.swarm;
        if !swarm.is_set() {
            return;
        }
        let key = |k: &'static str| ["berth", "engine", "swarm", k];
        let name = engine
            .name
            .as_deref()
            .map(|n| crate::choice::canonical(crate::choice::Slot::Engine, n))
            .unwrap_or_else(|| crate::choice::Slot::Engine.built_in().into());
        if name != "docker" {
            self.error(
                &["berth", "engine", "swarm"],
                format!(
                    "Docker Swarm is part of the docker engine; berth.engine.name is `{name}`, \
                     which has no swarm mode (choose `docker`, or remove berth.engine.swarm)"
                ),
            );
            return;
        }
        let joining = !swarm.join.0.is_empty();
        if swarm.init && joining {
            self.error(
                &key("join"),
                "`init: true` makes a new swarm and `join` joins one; set one of them".into(),
            );
        }
        if !swarm.init && !joining {
            self.error(
                &key("join"),
                "neither `init: true` nor `join` (the managers' addresses) is set: \
                 say whether this machine makes a swarm or joins one"
                    .into(),
            );
        }
        match &swarm.token {
            None if joining => self.error(
                &key("token"),
                "joining a swarm needs its join token (`docker swarm join-token -q worker` \
                 or `manager` on a manager)"
                    .into(),
            ),
            Some(_) if swarm.init => self.error(
                &key("token"),
                "a token is for joining; `init: true` makes a new swarm with tokens of its own"
                    .into(),
            ),
            // The token is a secret: the message never repeats it.
            Some(token) if !is_swarm_token(token) => self.error(
                &key("token"),
                "not a swarm join token (they look like `SWMTKN-1-<50 characters>-<25 characters>`)"
                    .into(),
            ),
            _ => {}
        }
        for (i, manager) in swarm.join.0.iter().enumerate() {
            if let Err(e) = check_host_port(manager) {
                self.error(
                    &["berth", "engine", "swarm", "join", &i.to_string()],
                    format!("`{manager}`: {e}"),
                );
            }
        }
        for (k, value) in [
            ("advertise_addr", &swarm.advertise_addr),
            ("listen_addr", &swarm.listen_addr),
            ("data_path_addr", &swarm.data_path_addr),
        ] {
            if let Some(value) = value {
                // The data path takes no port (it is VXLAN's, 4789).
                if let Err(e) = check_swarm_addr(value, k != "data_path_addr") {
                    self.error(&key(k), format!("`{value}`: {e}"));
                }
            }
        }
        for label in swarm.labels.0.keys() {
            if label.is_empty() || label.contains(['=', ' ', '\t', '\n']) {
                self.error(
                    &["berth", "engine", "swarm", "labels", label],
                    format!("`{label}` is not a label name (no `=`, no blanks)"),
                );
            }
        }
    }
}

/// Whether `token` has the shape of a swarm join token: `SWMTKN-1-` and
/// two dash-separated base-36 parts (docker checks the rest when joining).
fn is_swarm_token(token: &str) -> bool {
    let Some(rest) = token.strip_prefix("SWMTKN-1-") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric()))
}

/// A manager's address: an IP address or a host name, optionally `:port`
/// (`[v6]:port` for IPv6 with a port).
fn check_host_port(value: &str) -> Result<(), ValueError> {
    if value.parse::<IpAddr>().is_ok() || value.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (value, None),
    };
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(ValueError::Port(port.to_string())),
        }
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    check_hostname(host).map_err(|e| ValueError::Host(Box::new(e)))
}

/// An advertise, listen or data-path address as docker takes it: an IP
/// address or an interface name, with `:port` where `port_ok`.
fn check_swarm_addr(value: &str, port_ok: bool) -> Result<(), ValueError> {
    let (addr, port) = match value.parse::<std::net::SocketAddr>() {
        Ok(_) if port_ok => return Ok(()),
        Ok(_) => return Err(ValueError::PortNotTaken),
        Err(_) => match value.rsplit_once(':') {
            Some((a, p)) if !a.contains(':') => (a, Some(p)),
            _ => (value, None),
        },
    };
    if let Some(port) = port {
        if !port_ok {
            return Err(ValueError::PortNotTaken);
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(ValueError::Port(port.to_string())),
        }
    }
    if addr.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    // Linux interface names: at most 15 bytes, no `/`, blanks or `:`.
    let is_ifname = !addr.is_empty()
        && addr.len() <= 15
        && addr
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'@'));
    if is_ifname {
        Ok(())
    } else {
        Err(ValueError::AddressOrInterface)
    }
}

/// Datasources RancherOS had that Berth does not implement (warnings, not errors).
#[cfg(test)]
mod tests;
