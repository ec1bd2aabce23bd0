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
                self.error(&["hostname"], e);
            }
        }
    }

    fn users(&mut self, config: &CloudConfig) {
        for (i, key) in config.ssh_authorized_keys.iter().enumerate() {
            if let Err(e) = check_ssh_key(key) {
                self.warn(&["ssh_authorized_keys", &i.to_string()], e);
            }
        }
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
                    self.warn(&["users", &index, "ssh_authorized_keys", &k.to_string()], e);
                }
            }
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
                Err(e) => self.error(&["write_files", &index, "content"], e),
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

    fn services(&mut self, config: &CloudConfig) {
        let services = &config.berth.services;
        for (name, service) in services {
            self.service(name, service, services);
        }
        self.cycles(services);
        for name in config.berth.services_include.keys() {
            // RancherOS also enables services by URL or file path.
            let located = name.starts_with("http://")
                || name.starts_with("https://")
                || name.starts_with('/');
            if !located && !valid_service_name(name) {
                self.error(
                    &["berth", "services_include", name],
                    format!("`{name}` is not a valid service name"),
                );
            }
        }
    }

    fn service(&mut self, name: &str, s: &Service, all: &BTreeMap<String, Service>) {
        let service_path = ["berth", "services", name];
        let p = |k: &'static str| ["berth", "services", name, k];
        if !valid_service_name(name) {
            self.error(
                &["berth", "services", name],
                format!("`{name}` is not a valid service name (letters, digits, `_`, `-`, `.`; starting with a letter or digit)"),
            );
        }
        match &s.image {
            None => self.error(
                &["berth", "services", name],
                format!("service `{name}` has no `image`"),
            ),
            Some(image) if image.trim().is_empty() || image.contains(char::is_whitespace) => {
                self.error(&p("image"), format!("`{image}` is not an image reference"))
            }
            Some(_) => {}
        }
        for dep in s.depends_on.keys() {
            if !all.contains_key(dep) && s.depends_on[dep].required != Some(false) {
                if self.full() {
                    self.untold += 1;
                    continue;
                }
                let mut msg = format!("service `{name}` depends on `{dep}`, which is not defined");
                if let Some(near) = crate::diag::did_you_mean(dep, all.keys().map(String::as_str)) {
                    msg.push_str(&format!("; did you mean `{near}`?"));
                }
                self.error(&[&service_path[..], &["depends_on", dep]].concat(), msg);
            }
        }
        for label in [AFTER_LABEL, BEFORE_LABEL] {
            for other in ordering_label(s, label) {
                if !all.contains_key(other) {
                    self.warn(
                        &[&service_path[..], &["labels", label]].concat(),
                        format!("`{other}` is not a defined service; the ordering is ignored"),
                    );
                }
            }
        }
        for (key, value) in [
            ("network_mode", &s.network_mode),
            ("pid", &s.pid),
            ("ipc", &s.ipc),
            ("uts", &s.uts),
        ] {
            let Some(value) = value else { continue };
            let ok = match key {
                "network_mode" => {
                    matches!(value.as_str(), "host" | "none" | "bridge")
                        || value
                            .strip_prefix("service:")
                            .is_some_and(|svc| all.contains_key(svc))
                        || value
                            .strip_prefix("container:")
                            .is_some_and(|svc| all.contains_key(svc))
                }
                "ipc" => matches!(value.as_str(), "host" | "private" | "shareable"),
                _ => value == "host",
            };
            if !ok {
                let allowed = match key {
                    "network_mode" => "host, none, bridge or service:NAME of a defined service",
                    "ipc" => "host, private or shareable",
                    _ => "host",
                };
                self.error(
                    &[&service_path[..], &[key]].concat(),
                    format!("`{value}` is not valid here; use {allowed}"),
                );
            }
        }
        for (key, caps) in [("cap_add", &s.cap_add), ("cap_drop", &s.cap_drop)] {
            for (i, cap) in caps.iter().enumerate() {
                let bare = cap.strip_prefix("CAP_").unwrap_or(cap).to_ascii_uppercase();
                if bare != "ALL" && !CAPABILITIES.contains(&bare.as_str()) {
                    let mut msg = format!("`{cap}` is not a Linux capability");
                    if let Some(near) =
                        crate::diag::did_you_mean(&bare, CAPABILITIES.iter().copied())
                    {
                        msg.push_str(&format!("; did you mean `{near}`?"));
                    }
                    self.error(&[&service_path[..], &[key, &i.to_string()]].concat(), msg);
                }
            }
        }
        for (i, option) in s.security_opt.iter().enumerate() {
            if !crate::model::is_seccomp_unconfined(option) {
                self.error(
                    &[&service_path[..], &["security_opt", &i.to_string()]].concat(),
                    format!("`{option}` is not supported; Berth knows `seccomp=unconfined`"),
                );
            }
        }
        for (i, volume) in s.volumes.iter().enumerate() {
            if let Err(e) = check_volume(volume) {
                self.error(
                    &[&service_path[..], &["volumes", &i.to_string()]].concat(),
                    e,
                );
            }
        }
        for (i, device) in s.devices.iter().enumerate() {
            let mut parts = device.split(':');
            let host = parts.next().unwrap_or_default();
            let container = parts.next();
            let perms = parts.next();
            let ok = host.starts_with("/dev/")
                && container
                    .is_none_or(|c| c.starts_with('/') || c.chars().all(|ch| "rwm".contains(ch)))
                && perms.is_none_or(|p| !p.is_empty() && p.chars().all(|ch| "rwm".contains(ch)))
                && parts.next().is_none();
            if !ok {
                self.error(
                    &[&service_path[..], &["devices", &i.to_string()]].concat(),
                    format!("`{device}` is not `/dev/HOST[:/dev/CONTAINER[:rwm]]`"),
                );
            }
        }
        for (i, path) in s.tmpfs.0.iter().enumerate() {
            if !path.starts_with('/') {
                self.error(
                    &[&service_path[..], &["tmpfs", &i.to_string()]].concat(),
                    format!("tmpfs mount point `{path}` must be an absolute path"),
                );
            }
        }
        if let Some(dir) = &s.working_dir {
            if !dir.starts_with('/') {
                self.error(
                    &p("working_dir"),
                    format!("`{dir}` must be an absolute path"),
                );
            }
        }
        if let Some(hc) = &s.healthcheck {
            if let Some(test) = &hc.test {
                if let Err(e) = check_healthcheck(test) {
                    self.error(&[&service_path[..], &["healthcheck", "test"]].concat(), e);
                }
            } else if !hc.disable {
                self.error(
                    &[&service_path[..], &["healthcheck"]].concat(),
                    "a healthcheck needs a `test`".into(),
                );
            }
        }
        if let Some(mem) = &s.mem_limit {
            if parse_bytes(&mem.0).is_none() {
                self.error(
                    &p("mem_limit"),
                    format!("`{mem}` is not a size (write it like 512m or 1g)"),
                );
            }
        }
        if let Some(cpus) = s.cpus {
            if !(cpus > 0.0 && cpus.is_finite()) {
                self.error(
                    &p("cpus"),
                    format!("`{cpus}` must be a positive number of CPUs"),
                );
            }
        }
        if let Some(adj) = s.oom_score_adj {
            if !(-1000..=1000).contains(&adj) {
                self.error(
                    &p("oom_score_adj"),
                    format!("`{adj}` is outside -1000..1000"),
                );
            }
        }
    }

    /// Every dependency cycle, named in full (`a -> b -> a`), once each.
    fn cycles(&mut self, services: &BTreeMap<String, Service>) {
        let edges = |name: &str| -> Vec<String> {
            let Some(s) = services.get(name) else {
                return Vec::new();
            };
            let mut out: Vec<String> = s
                .depends_on
                .keys()
                .filter(|d| services.contains_key(*d))
                .cloned()
                .collect();
            out.extend(
                ordering_label(s, AFTER_LABEL)
                    .filter(|d| services.contains_key(*d))
                    .map(String::from),
            );
            out
        };
        // `before` edges point the other way: a before b means b depends on a.
        let mut reverse: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, s) in services {
            for other in ordering_label(s, BEFORE_LABEL).filter(|d| services.contains_key(*d)) {
                reverse
                    .entry(other.to_string())
                    .or_default()
                    .push(name.clone());
            }
        }
        let next = |name: &str| -> Vec<String> {
            let mut out = edges(name);
            out.extend(reverse.get(name).cloned().unwrap_or_default());
            out.sort();
            out.dedup();
            out
        };
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut marks: BTreeMap<&str, Mark> =
            services.keys().map(|k| (k.as_str(), Mark::New)).collect();
        let mut reported = BTreeSet::new();
        for start in services.keys() {
            if marks[start.as_str()] != Mark::New {
                continue;
            }
            // Iterative DFS: (node, its successors, next successor index).
            let mut stack: Vec<(String, Vec<String>, usize)> =
                vec![(start.clone(), next(start), 0)];
            marks.insert(start.as_str(), Mark::Active);
            while let Some((node, succ, idx)) = stack.last_mut() {
                if *idx >= succ.len() {
                    let done = node.clone();
                    stack.pop();
                    if let Some((k, _)) = services.get_key_value(&done) {
                        marks.insert(k.as_str(), Mark::Done);
                    }
                    continue;
                }
                let target = succ[*idx].clone();
                *idx += 1;
                let Some((key, _)) = services.get_key_value(&target) else {
                    continue;
                };
                match marks[key.as_str()] {
                    Mark::New => {
                        marks.insert(key.as_str(), Mark::Active);
                        let s = next(&target);
                        stack.push((target, s, 0));
                    }
                    Mark::Active if reported.len() >= MAX_CYCLES => self.untold += 1,
                    Mark::Active => {
                        let pos = stack.iter().position(|(n, _, _)| *n == target).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[pos..].iter().map(|(n, _, _)| n.clone()).collect();
                        let mut canonical = cycle.clone();
                        canonical.sort();
                        if reported.insert(canonical) {
                            cycle.push(target.clone());
                            let first = cycle[0].clone();
                            let second = cycle.get(1).cloned().unwrap_or_default();
                            let path: Vec<&str> =
                                if services[&first].depends_on.contains_key(&second) {
                                    vec!["berth", "services", &first, "depends_on", &second]
                                } else {
                                    vec!["berth", "services", &first]
                                };
                            let msg = format!("dependency cycle: {}", cycle.join(" -> "));
                            self.error(&path, msg);
                        }
                    }
                    Mark::Done => {}
                }
            }
        }
    }

    fn network(&mut self, config: &CloudConfig) {
        let net = &config.berth.network;
        for (i, ns) in net.dns.nameservers.iter().enumerate() {
            if ns.parse::<IpAddr>().is_err() {
                self.error(
                    &["berth", "network", "dns", "nameservers", &i.to_string()],
                    format!("`{ns}` is not an IP address"),
                );
            }
        }
        let mut bond_of: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (name, iface) in &net.interfaces {
            self.interface(name, iface);
            let iface_path = ["berth", "network", "interfaces", name.as_str()];
            let mut claim = |member: &str, bond: &str, via: &str, v: &mut Self| {
                if let Some((other, _)) = bond_of.get(member) {
                    if other != bond {
                        v.error(
                            &[&iface_path[..], &[via]].concat(),
                            format!("`{member}` is a member of two bonds: `{other}` and `{bond}`"),
                        );
                    }
                } else {
                    bond_of.insert(member.to_string(), (bond.to_string(), name.clone()));
                }
            };
            if let Some(bond) = &iface.bond {
                claim(name, bond, "bond", self);
            }
            if !iface.bond_opts.is_empty() || name.starts_with("bond") {
                for member in &iface.members {
                    claim(member, name, "members", self);
                }
            }
        }
    }

    fn interface(&mut self, name: &str, iface: &Interface) {
        let iface_path = ["berth", "network", "interfaces", name];
        let p = |k: &'static str| ["berth", "network", "interfaces", name, k];
        if let Some(mac) = name
            .strip_prefix("mac:")
            .or_else(|| name.strip_prefix("mac="))
        {
            let ok = mac.split(':').count() == 6
                && mac
                    .split(':')
                    .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                self.error(
                    &["berth", "network", "interfaces", name],
                    format!("`{mac}` is not a MAC address"),
                );
            }
        } else if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            self.error(
                &["berth", "network", "interfaces", name],
                format!("`{name}` is not an interface name, glob or `mac:` match"),
            );
        }
        if let Some(a) = &iface.address {
            if let Err(e) = check_cidr(a) {
                self.error(&p("address"), e);
            }
        }
        for (i, a) in iface.addresses.iter().enumerate() {
            if let Err(e) = check_cidr(a) {
                self.error(
                    &[&iface_path[..], &["addresses", &i.to_string()]].concat(),
                    e,
                );
            }
        }
        let has_static = iface.address.is_some() || !iface.addresses.is_empty();
        if iface.dhcp == Some(true) && has_static {
            self.warn(
                &p("dhcp"),
                format!("`{name}` has both DHCP and static addresses; both will be applied"),
            );
        }
        if let Some(gw) = &iface.gateway {
            if gw.parse::<Ipv4Addr>().is_err() {
                self.error(&p("gateway"), format!("`{gw}` is not an IPv4 address"));
            }
        }
        if let Some(gw) = &iface.gateway_ipv6 {
            if gw.parse::<Ipv6Addr>().is_err() {
                self.error(&p("gateway_ipv6"), format!("`{gw}` is not an IPv6 address"));
            }
        }
        if let Some(mtu) = iface.mtu {
            if !(68..=65535).contains(&mtu) {
                self.error(&p("mtu"), format!("MTU {mtu} is outside 68..65535"));
            }
        }
        for (i, route) in iface.routes.iter().enumerate() {
            let index = i.to_string();
            if route.to != "default" {
                if let Err(e) = route.to.parse::<IpNet>() {
                    self.error(
                        &[&iface_path[..], &["routes", &index, "to"]].concat(),
                        format!("`{}` is not `default` or a CIDR network: {e}", route.to),
                    );
                }
            }
            if let Some(via) = &route.via {
                if via.parse::<IpAddr>().is_err() {
                    self.error(
                        &[&iface_path[..], &["routes", &index, "via"]].concat(),
                        format!("`{via}` is not an IP address"),
                    );
                }
            }
        }
        if let Some(mode) = iface.bond_opts.get("mode") {
            if !BOND_MODES.contains(&mode.0.as_str()) {
                self.error(
                    &[&iface_path[..], &["bond_opts", "mode"]].concat(),
                    format!(
                        "`{mode}` is not a bond mode; use one of {}",
                        BOND_MODES[..7].join(", ")
                    ),
                );
            }
        }
        for (key, value) in &iface.bond_opts {
            let numeric = [
                "miimon",
                "updelay",
                "downdelay",
                "arp_interval",
                "min_links",
            ];
            if numeric.contains(&key.as_str()) && value.0.parse::<u32>().is_err() {
                self.error(
                    &[&iface_path[..], &["bond_opts", key]].concat(),
                    format!("`{value}` must be a whole number"),
                );
            }
        }
        let mut vlan_ids = BTreeSet::new();
        for (i, vlan) in iface.vlans.iter().enumerate() {
            if !(1..=4094).contains(&vlan.id) {
                self.error(
                    &[&iface_path[..], &["vlans", &i.to_string()]].concat(),
                    format!("VLAN id {} is outside 1..4094", vlan.id),
                );
            } else if !vlan_ids.insert(vlan.id) {
                self.error(
                    &[&iface_path[..], &["vlans", &i.to_string()]].concat(),
                    format!("VLAN id {} is listed twice", vlan.id),
                );
            }
        }
        if let (Some(Bridge::MemberOf(_)), Some(_)) = (&iface.bridge, &iface.bond) {
            self.error(
                &p("bridge"),
                format!("`{name}` cannot be in a bond and a bridge at once"),
            );
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
fn check_host_port(value: &str) -> Result<(), String> {
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
            _ => return Err(format!("`{port}` is not a port (1-65535)")),
        }
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    check_hostname(host).map_err(|e| format!("not an IP address or host name: {e}"))
}

/// An advertise, listen or data-path address as docker takes it: an IP
/// address or an interface name, with `:port` where `port_ok`.
fn check_swarm_addr(value: &str, port_ok: bool) -> Result<(), String> {
    let (addr, port) = match value.parse::<std::net::SocketAddr>() {
        Ok(_) if port_ok => return Ok(()),
        Ok(_) => return Err("takes no port (overlay traffic uses UDP 4789)".into()),
        Err(_) => match value.rsplit_once(':') {
            Some((a, p)) if !a.contains(':') => (a, Some(p)),
            _ => (value, None),
        },
    };
    if let Some(port) = port {
        if !port_ok {
            return Err("takes no port (overlay traffic uses UDP 4789)".into());
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("`{port}` is not a port (1-65535)")),
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
        Err("not an IP address or an interface name".into())
    }
}

/// Datasources RancherOS had that Berth does not implement (warnings, not errors).
const RANCHER_DATASOURCES: &[&str] = &[
    "*",
    "aliyun",
    "cloudstack",
    "exoscale",
    "packet",
    "proxmox",
    "tftp",
    "vmware",
];

const DATASOURCES: &[&str] = &[
    "nocloud",
    "configdrive",
    "ec2",
    "gce",
    "digitalocean",
    "openstack",
    "azure",
    "cmdline",
    "url",
    "file",
];

const BOND_MODES: &[&str] = &[
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "802.3ad",
    "balance-tlb",
    "balance-alb",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
];

/// Every capability Linux has, without the `CAP_` prefix: what `cap_add` and
/// `cap_drop` accept, and what `privileged` grants.
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

pub fn check_hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid hostname (letters, digits and `-`, dot-separated labels of at most 63)"
        ))
    }
}

fn valid_user_name(name: &str) -> bool {
    name.len() <= 32
        && name
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// A service name: it also names files (`/var/log/berth/<name>.log`), so it can
/// never be a path: no `/`, and no leading `.`.
pub fn valid_service_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c))
}

/// An authorized_keys line: optional options, then a key type and base64 blob.
pub fn check_ssh_key(line: &str) -> Result<(), String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let words: Vec<&str> = line.split_whitespace().collect();
    let found = words.windows(2).any(|w| {
        TYPES.contains(&w[0])
            && w[1].len() >= 16
            && w[1]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
    });
    if found {
        Ok(())
    } else {
        let shown: String = line.chars().take(40).collect();
        Err(format!(
            "`{shown}` is not an SSH public key (`TYPE BASE64 [comment]`); it will be skipped"
        ))
    }
}

fn check_cidr(addr: &str) -> Result<(), String> {
    if !addr.contains('/') {
        return Err(format!("`{addr}` needs a prefix length, like `{addr}/24`"));
    }
    addr.parse::<IpNet>().map(|_| ()).map_err(|_| {
        format!("`{addr}` is not an address in CIDR form (like 10.0.0.5/24 or fd00::5/64)")
    })
}

fn check_volume(volume: &str) -> Result<(), String> {
    let parts: Vec<&str> = volume.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [t] => (None, *t, None),
        [s, t] => (Some(*s), *t, None),
        [s, t, o] => (Some(*s), *t, Some(*o)),
        _ => return Err(format!("`{volume}` is not `SOURCE:TARGET[:OPTIONS]`")),
    };
    if !target.starts_with('/') {
        return Err(format!("the target of `{volume}` must be an absolute path"));
    }
    if let Some(source) = source {
        let named = source
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c));
        if source.is_empty() || !(source.starts_with('/') || named) {
            return Err(format!(
                "the source of `{volume}` must be an absolute path or a volume name"
            ));
        }
    }
    const OPTIONS: &[&str] = &[
        "ro", "rw", "z", "Z", "shared", "rshared", "slave", "rslave", "private", "rprivate",
        "nocopy", "bind", "rbind", "noexec", "nosuid", "nodev",
    ];
    if let Some(opts) = opts {
        for o in opts.split(',') {
            if !OPTIONS.contains(&o) {
                return Err(format!("`{o}` in `{volume}` is not a volume option"));
            }
        }
    }
    Ok(())
}

fn check_healthcheck(test: &crate::forms::Command) -> Result<(), String> {
    use crate::forms::Command;
    match test {
        Command::Shell(s) => {
            if let Some(port) = s.strip_prefix("tcp:") {
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .map(|_| ())
                    .ok_or_else(|| format!("`{s}` needs a port, like tcp:8080"))
            } else if let Some(path) = s.strip_prefix("file:") {
                if path.starts_with('/') {
                    Ok(())
                } else {
                    Err(format!(
                        "`{s}` needs an absolute path, like file:/run/ready"
                    ))
                }
            } else if s.trim().is_empty() {
                Err("the healthcheck test is empty".into())
            } else {
                Ok(())
            }
        }
        Command::Exec(args) => match args.first().map(String::as_str) {
            Some("NONE") => Ok(()),
            Some("CMD") | Some("CMD-SHELL") if args.len() >= 2 => Ok(()),
            Some("CMD") | Some("CMD-SHELL") => {
                Err(format!("`{}` needs a command after it", args[0]))
            }
            _ => Err("a healthcheck list starts with CMD, CMD-SHELL or NONE".into()),
        },
    }
}

/// Bytes in `512`, `512k`, `64m`, `1g`, `1.5g` (powers of 1024, as docker reads them).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, scale) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let value: f64 = num.parse().ok()?;
    (value >= 0.0 && value.is_finite()).then_some((value * scale as f64) as u64)
}

/// The bytes a `write_files` entry writes.
pub fn decode(encoding: Option<Encoding>, content: &str) -> Result<Vec<u8>, String> {
    decode_with_limit(encoding, content, MAX_DECODED_FILES)
}

/// [`decode`], refusing content that decodes to more than `limit` bytes.
pub fn decode_with_limit(
    encoding: Option<Encoding>,
    content: &str,
    limit: usize,
) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    use std::io::Read;
    let b64 = |s: &str| {
        let cleaned: String = s.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(cleaned)
            .map_err(|e| format!("content is not valid base64: {e}"))
    };
    let gunzip = |bytes: Vec<u8>| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("content is not valid gzip: {e}"))?;
        Ok::<_, String>(out)
    };
    let bytes = match encoding {
        None | Some(Encoding::Plain) => content.as_bytes().to_vec(),
        Some(Encoding::Base64) => b64(content)?,
        Some(Encoding::GzipBase64) => gunzip(b64(content)?)?,
        // Raw gzip in YAML only survives as a `!!binary` scalar, which arrives base64-encoded.
        Some(Encoding::Gzip) => gunzip(b64(content)?)?,
    };
    if bytes.len() > limit {
        return Err(format!(
            "write_files decode to more than {} MiB in all; the limit keeps boot memory bounded",
            MAX_DECODED_FILES >> 20
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(check_hostname("node-1.example.com").is_ok());
        assert!(check_hostname("-bad").is_err());
        assert!(check_hostname("under_score").is_err());
        assert!(check_hostname(&"a".repeat(64)).is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn volumes() {
        assert!(check_volume("/var/lib/docker:/var/lib/docker").is_ok());
        assert!(check_volume("data:/data:ro").is_ok());
        assert!(check_volume("/tmp").is_ok());
        assert!(check_volume("relative:dir").is_err());
        assert!(check_volume("/a:/b:bogus").is_err());
    }

    #[test]
    fn ssh_keys() {
        assert!(check_ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq7 me@host").is_ok());
        assert!(check_ssh_key("no-pty ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB x").is_ok());
        assert!(check_ssh_key("hello world").is_err());
    }
}
