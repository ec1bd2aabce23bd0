//! The datasource probe berthd runs before it applies the config: the
//! protocols of ConfigDrive, EC2 (IMDSv2), GCE, DigitalOcean, OpenStack,
//! Azure, a plain URL and a file, run in parallel with short timeouts and a
//! total budget; the highest-priority answer is cached on state
//! ([`berth_configs::datasource::cache`]) and, when nothing answers, the cache
//! of an earlier boot stays in force.
//!
//! Which sources run is [`datasource::plan`]'s choice: local ones always,
//! network ones only when `berth.datasources` names them or DMI says which
//! cloud this is, so a machine on no cloud never waits. Metadata services are
//! reached at their link-local address, never a DNS name, so probing works
//! before DNS does; when no interface has an address yet, a temporary DHCP
//! lease (netconf's client) carries the probe and is released after it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_configs::datasource::{self, Attempt, Dmi, Instance, Kind, Reason, Report};
use berth_configs::Layout;
use berth_images::http::{HttpError, Request, Response};

/// Where every cloud's metadata service answers (Azure's IMDS too).
pub const LINK_LOCAL: &str = "http://169.254.169.254";
/// Azure's wire server, where the ready report goes.
pub const AZURE_WIRESERVER: &str = "http://168.63.129.16";
/// Largest user-data taken (the config parser's limit).
const MAX_USER_DATA: usize = 4 << 20;
/// Largest meta-data answer: keys, ids and names are small.
const MAX_META: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum DsError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{0}")]
    Absent(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no answer within the probe's budget of {0:?}")]
    Budget(Duration),
}

/// Timeouts and addresses; tests point the services at 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Options {
    /// The metadata services' base URL.
    pub metadata: String,
    pub azure_wireserver: String,
    /// Connecting to a service: a dead address fails in this.
    pub connect_timeout: Duration,
    /// One request, start to end.
    pub request_timeout: Duration,
    /// All sources together.
    pub budget: Duration,
    /// How long a temporary DHCP lease may take.
    pub lease_wait: Duration,
    /// Report ready to Azure's wire server after reading its IMDS.
    pub azure_ready: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            metadata: LINK_LOCAL.into(),
            azure_wireserver: AZURE_WIRESERVER.into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            budget: Duration::from_secs(20),
            lease_wait: Duration::from_secs(10),
            azure_ready: true,
        }
    }
}

impl Options {
    fn request(&self, req: Request) -> Request {
        req.connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .limit(MAX_META)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.metadata.trim_end_matches('/'))
    }
}

fn text(url: &str, bytes: &[u8]) -> Result<String, DsError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DsError::Malformed {
        url: url.into(),
        reason: "not UTF-8 text".into(),
    })
}

/// A one-line value (an id, a hostname): trimmed, no control characters.
fn line(url: &str, bytes: &[u8]) -> Result<String, DsError> {
    let t = text(url, bytes)?;
    let t = t.trim();
    if t.is_empty() || t.len() > 255 || t.chars().any(char::is_control) {
        return Err(DsError::Malformed {
            url: url.into(),
            reason: format!(
                "`{}` is not a single short value",
                t.chars().take(40).collect::<String>()
            ),
        });
    }
    Ok(t.to_string())
}

/// The short hostname from what a cloud gives (GCE gives the FQDN).
fn short_host(name: &str) -> String {
    name.split('.').next().unwrap_or(name).to_string()
}

fn json(url: &str, bytes: &[u8]) -> Result<serde_json::Value, DsError> {
    serde_json::from_slice(bytes).map_err(|e| DsError::Malformed {
        url: url.into(),
        reason: format!("not JSON: {e}"),
    })
}

/// EC2's IMDSv2: a session token from `PUT /latest/api/token`, sent with
/// every GET; a 401 (the token expired) gets a new token once. IMDSv1
/// (no token) only when the token call is refused with 404 or 405, as
/// services predating IMDSv2 answer.
pub mod ec2;

/// GCE: `Metadata-Flavor: Google` on every request, and on every answer (an
/// answer without it is not from GCE's metadata server).
pub mod gce;

/// DigitalOcean: one JSON document, `/metadata/v1.json`.
pub mod digitalocean;

/// OpenStack's `openstack/latest/` tree, from the metadata service or a
/// ConfigDrive: `meta_data.json`, `user_data`, `network_data.json`.
pub mod openstack;

/// A ConfigDrive: a volume labelled `config-2` (ISO9660 or vfat) holding
/// OpenStack's `openstack/latest/` tree; mounted read-only, read, unmounted.
pub mod configdrive;

/// Azure: the instance document from IMDS (`Metadata: true`; IMDS refuses
/// requests without it), user data base64 in it, and the ready report the
/// platform waits for before it calls the VM provisioned.
pub mod azure;

/// A prefix length from a netmask (`255.255.255.0`, `ffff:ffff::`) or a
/// length already (`24`).
fn prefix_len(mask: &str) -> Option<u32> {
    if let Ok(n) = mask.parse::<u32>() {
        return Some(n);
    }
    let bits: u128 = match mask.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    // A netmask is ones then zeros.
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones)
}

fn with_prefix(address: &str, mask: Option<&str>) -> Option<String> {
    if address.contains('/') {
        return Some(address.to_string());
    }
    Some(format!("{address}/{}", prefix_len(mask?)?))
}

/// OpenStack's `network_data.json` as `berth.network`: each physical link
/// by its MAC (`mac:…`), with static addresses, gateway, routes and MTU,
/// or DHCP where the network says so; DNS servers from `services`. Links
/// without a MAC (bonds, VLANs) are left to DHCP on the default config.
pub fn network_from_openstack(doc: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::{json, Map, Value};
    let mut interfaces = Map::new();
    let mut key_of = std::collections::HashMap::new();
    for link in doc["links"].as_array().into_iter().flatten() {
        let (Some(id), Some(mac)) = (link["id"].as_str(), link["ethernet_mac_address"].as_str())
        else {
            continue;
        };
        let key = format!("mac:{}", mac.to_ascii_lowercase());
        let mut iface = Map::new();
        if let Some(mtu) = link["mtu"].as_u64() {
            iface.insert("mtu".into(), json!(mtu));
        }
        interfaces.insert(key.clone(), Value::Object(iface));
        key_of.insert(id.to_string(), key);
    }
    for net in doc["networks"].as_array().into_iter().flatten() {
        let Some(key) = net["link"].as_str().and_then(|l| key_of.get(l)) else {
            continue;
        };
        let Some(Value::Object(iface)) = interfaces.get_mut(key) else {
            continue;
        };
        let kind = net["type"].as_str().unwrap_or_default();
        match kind {
            "ipv4_dhcp" | "dhcp4" => {
                iface.insert("dhcp".into(), json!(true));
            }
            "ipv4" | "ipv6" => {
                let Some(address) = net["ip_address"]
                    .as_str()
                    .and_then(|a| with_prefix(a, net["netmask"].as_str()))
                else {
                    continue;
                };
                let list = iface.entry("addresses").or_insert_with(|| json!([]));
                if let Value::Array(a) = list {
                    a.push(json!(address));
                }
                iface.entry("dhcp").or_insert(json!(false));
                for route in net["routes"].as_array().into_iter().flatten() {
                    let (Some(to), Some(via)) =
                        (route["network"].as_str(), route["gateway"].as_str())
                    else {
                        continue;
                    };
                    let prefix = route["netmask"].as_str().and_then(prefix_len);
                    if prefix == Some(0) {
                        let field = if kind == "ipv6" {
                            "gateway_ipv6"
                        } else {
                            "gateway"
                        };
                        iface.insert(field.into(), json!(via));
                    } else if let Some(p) = prefix {
                        let routes = iface.entry("routes").or_insert_with(|| json!([]));
                        if let Value::Array(r) = routes {
                            r.push(json!({"to": format!("{to}/{p}"), "via": via}));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if interfaces.is_empty() {
        return None;
    }
    let mut out = Map::new();
    out.insert("interfaces".into(), Value::Object(interfaces));
    let dns: Vec<Value> = doc["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["type"] == "dns")
        .filter_map(|s| s["address"].as_str().map(|a| json!(a)))
        .collect();
    if !dns.is_empty() {
        out.insert("dns".into(), json!({ "nameservers": dns }));
    }
    Some(Value::Object(out))
}

/// DigitalOcean's `interfaces` (`public`/`private`, each with `mac`,
/// `ipv4` and `ipv6`) and `dns.nameservers` as `berth.network`.
pub fn network_from_digitalocean(
    interfaces: &serde_json::Value,
    dns: &serde_json::Value,
) -> Option<serde_json::Value> {
    use serde_json::{json, Map, Value};
    let mut out_ifaces = Map::new();
    for group in ["public", "private"] {
        for iface in interfaces[group].as_array().into_iter().flatten() {
            let Some(mac) = iface["mac"].as_str() else {
                continue;
            };
            let mut cfg = Map::new();
            let mut addresses = Vec::new();
            if let Some(a) = iface["ipv4"]["ip_address"]
                .as_str()
                .and_then(|a| with_prefix(a, iface["ipv4"]["netmask"].as_str()))
            {
                addresses.push(json!(a));
                if let Some(gw) = iface["ipv4"]["gateway"].as_str() {
                    cfg.insert("gateway".into(), json!(gw));
                }
            }
            if let Some(a) = iface["ipv6"]["ip_address"].as_str().and_then(|a| {
                with_prefix(
                    a,
                    iface["ipv6"]["cidr"]
                        .as_u64()
                        .map(|c| c.to_string())
                        .as_deref(),
                )
            }) {
                addresses.push(json!(a));
                if let Some(gw) = iface["ipv6"]["gateway"].as_str() {
                    cfg.insert("gateway_ipv6".into(), json!(gw));
                }
            }
            if addresses.is_empty() {
                continue;
            }
            cfg.insert("dhcp".into(), json!(false));
            cfg.insert("addresses".into(), Value::Array(addresses));
            out_ifaces.insert(
                format!("mac:{}", mac.to_ascii_lowercase()),
                Value::Object(cfg),
            );
        }
    }
    if out_ifaces.is_empty() {
        return None;
    }
    let mut out = Map::new();
    out.insert("interfaces".into(), Value::Object(out_ifaces));
    if let Some(ns) = dns["nameservers"].as_array().filter(|n| !n.is_empty()) {
        out.insert("dns".into(), json!({ "nameservers": ns }));
    }
    Some(Value::Object(out))
}

/// `url:URL`: the answer is the user-data.
pub fn fetch_url(options: &Options, url: &str) -> Result<Instance, DsError> {
    let response = Request::get(url)
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .limit(MAX_USER_DATA)
        .send()?;
    match response.status {
        200 => Ok(Instance {
            user_data: Some(response.body),
            ..Instance::default()
        }),
        status => Err(DsError::Status {
            url: url.into(),
            status,
        }),
    }
}

/// `file:/PATH` (below `root`): the file is the user-data.
pub fn fetch_file(root: &Path, path: &str) -> Result<Instance, DsError> {
    let full = root.join(path.trim_start_matches('/'));
    match std::fs::read(&full) {
        Ok(bytes) if bytes.len() > MAX_USER_DATA => Err(DsError::Malformed {
            url: full.display().to_string(),
            reason: format!("larger than {} MiB", MAX_USER_DATA >> 20),
        }),
        Ok(bytes) => Ok(Instance {
            user_data: Some(bytes),
            ..Instance::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(DsError::Absent(format!("{}: not found", full.display())))
        }
        Err(source) => Err(DsError::Io { path: full, source }),
    }
}

/// Asks one source.
pub fn fetch(root: &Path, options: &Options, kind: &Kind) -> Result<Instance, DsError> {
    match kind {
        Kind::NoCloud => Err(DsError::Absent("NoCloud is read by stage 1".into())),
        Kind::ConfigDrive => configdrive::fetch(root),
        Kind::Ec2 => ec2::fetch(options),
        Kind::Gce => gce::fetch(options),
        Kind::DigitalOcean => digitalocean::fetch(options),
        Kind::OpenStack => openstack::fetch(options),
        Kind::Azure => azure::fetch(options),
        Kind::Url(url) => fetch_url(options, url),
        Kind::File(path) => fetch_file(root, path),
    }
}

/// Asks every planned source at once and takes the highest-priority answer
/// that came within the budget.
pub fn probe_all(
    root: &Path,
    options: &Options,
    plan: &[(Kind, Reason)],
) -> (Vec<Attempt>, Option<(Kind, Instance)>) {
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    for (i, (kind, _)) in plan.iter().enumerate() {
        let tx = tx.clone();
        let (kind, root, options) = (kind.clone(), root.to_path_buf(), options.clone());
        // Threads are detached: one stuck past the budget is reported and left.
        let spawned = std::thread::Builder::new()
            .name(format!("ds-{}", kind.name()))
            .spawn(move || {
                let begun = Instant::now();
                let result = fetch(&root, &options, &kind);
                let _ = tx.send((i, result, begun.elapsed()));
            });
        if let Err(e) = spawned {
            log::warn!(
                "datasource {}: cannot start a thread: {e}",
                plan[i].0.name()
            );
        }
    }
    drop(tx);
    let mut results: Vec<Option<(Result<Instance, DsError>, Duration)>> =
        plan.iter().map(|_| None).collect();
    while let Some(left) = options.budget.checked_sub(start.elapsed()) {
        match rx.recv_timeout(left) {
            Ok((i, result, took)) => {
                results[i] = Some((result, took));
                // Done early when every higher-priority source has spoken and one answered.
                let settled = results.iter().position(|r| match r {
                    None => true,
                    Some((Ok(_), _)) => true,
                    Some((Err(_), _)) => false,
                });
                if let Some(first) = settled {
                    if results[first].as_ref().is_some_and(|(r, _)| r.is_ok()) {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    let mut attempts = Vec::new();
    let mut winner = None;
    for ((kind, reason), result) in plan.iter().zip(results) {
        let (outcome, millis, detail) = match result {
            None => (
                "pending".to_string(),
                start.elapsed().as_millis() as u64,
                vec![if winner.is_some() {
                    "not waited for: a source before it answered".to_string()
                } else {
                    DsError::Budget(options.budget).to_string()
                }],
            ),
            Some((Ok(instance), took)) => {
                let decoded = instance
                    .user_data
                    .as_deref()
                    .map(berth_configs::userdata::decode)
                    .unwrap_or_default();
                let detail = instance.summary(&decoded);
                if winner.is_none() {
                    winner = Some((kind.clone(), instance));
                    ("answered".into(), took.as_millis() as u64, detail)
                } else {
                    let mut d = detail;
                    d.push("not used: a source before it answered".into());
                    ("answered".into(), took.as_millis() as u64, d)
                }
            }
            Some((Err(DsError::Absent(why)), took)) => {
                ("absent".into(), took.as_millis() as u64, vec![why])
            }
            Some((Err(e), took)) => (
                "failed".into(),
                took.as_millis() as u64,
                vec![e.to_string()],
            ),
        };
        attempts.push(Attempt {
            source: kind.name(),
            reason: *reason,
            outcome,
            millis,
            detail,
        });
    }
    (attempts, winner)
}

/// Where berthd runs the probe and what it found.
#[derive(Debug)]
pub struct Probe {
    pub root: PathBuf,
    pub options: Options,
}

/// The marker stage 1 leaves when it read a NoCloud seed this boot.
pub fn nocloud_marker(root: &Path) -> PathBuf {
    root.join(berth_configs::datasource::NOCLOUD_MARKER)
}

impl Probe {
    /// Runs the probe for the system at `root`, caches the winner and writes
    /// the report; returns the report and whether the cache changed (the
    /// config must be loaded again).
    pub fn run(&self, named: &[String]) -> (Report, bool) {
        let start = Instant::now();
        let layout = Layout::new(&self.root);
        let dmi = Dmi::read(&self.root);
        let mut report = Report {
            dmi_cloud: dmi.cloud().map(|k| k.name()),
            ..Report::default()
        };
        let mut changed = false;
        if let Ok(device) = std::fs::read_to_string(nocloud_marker(&self.root)) {
            // Stage 1 read and cached it; it is local and first in priority.
            report.attempts.push(Attempt {
                source: "nocloud".into(),
                reason: Reason::Local,
                outcome: "answered".into(),
                millis: 0,
                detail: vec![format!("read by stage 1 from {}", device.trim())],
            });
            report.winner = Some("nocloud".into());
        } else {
            let plan = datasource::plan(named, &dmi);
            let needs_network = plan.iter().any(|(k, _)| k.is_network());
            let lease = if needs_network {
                match network::temporary_lease(&self.options.lease_wait) {
                    Ok(l) => {
                        if let Some(note) = l.note() {
                            report.notes.push(note);
                        }
                        Some(l)
                    }
                    Err(e) => {
                        report
                            .notes
                            .push(format!("no temporary network for the probe: {e}"));
                        None
                    }
                }
            } else {
                None
            };
            let (attempts, winner) = probe_all(&self.root, &self.options, &plan);
            drop(lease);
            report.attempts = attempts;
            match winner {
                Some((kind, instance)) => match datasource::cache(&layout, &kind.name(), &instance)
                {
                    Ok(cached) => {
                        for ignored in &cached.decoded.ignored {
                            report.notes.push(format!(
                                "user-data from {}: {ignored} (ignored)",
                                kind.name()
                            ));
                        }
                        if cached.new_instance {
                            report.notes.push(format!(
                                "a new instance ({}): SSH host keys are made anew and user-data scripts run",
                                instance.instance_id.as_deref().unwrap_or("no id")
                            ));
                        }
                        report.winner = Some(kind.name());
                        changed = true;
                    }
                    Err(e) => report
                        .notes
                        .push(format!("cannot cache what {} gave: {e}", kind.name())),
                },
                None => {
                    // Whatever an earlier boot cached (any source's) stays in force.
                    report.used_cache = layout.user_data().exists() || layout.meta_data().exists();
                    if report.used_cache {
                        report.notes.push(
                            "no datasource answered; the user-data cached by an earlier boot is in force".into(),
                        );
                    }
                }
            }
        }
        report.millis = start.elapsed().as_millis() as u64;
        for a in &report.attempts {
            log::info!(
                "datasource {}: {} in {} ms ({})",
                a.source,
                a.outcome,
                a.millis,
                a.detail.join("; ")
            );
        }
        for n in &report.notes {
            log::info!("datasource: {n}");
        }
        if let Err(e) = report.write(&layout) {
            log::warn!("{e}");
        }
        (report, changed)
    }
}

/// The temporary network a probe needs before netconf runs.
pub mod network;

#[cfg(test)]
mod tests;
