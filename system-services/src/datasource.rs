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
pub mod ec2 {
    use super::*;

    pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
    pub const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";

    struct Session<'a> {
        options: &'a Options,
        token: Option<String>,
    }

    impl Session<'_> {
        fn new_token(&mut self) -> Result<(), DsError> {
            let url = self.options.url("/latest/api/token");
            let response = self
                .options
                .request(Request::put(&url).header(TTL_HEADER, "21600"))
                .send()?;
            match response.status {
                200 => {
                    let token = line(&url, &response.body)?;
                    self.token = Some(token);
                    Ok(())
                }
                404 | 405 => {
                    log::warn!(
                        "{url}: no IMDSv2 (answered {}); using IMDSv1",
                        response.status
                    );
                    self.token = None;
                    Ok(())
                }
                status => Err(DsError::Status { url, status }),
            }
        }

        /// GETs `path`; `None` on 404.
        fn get(&mut self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, DsError> {
            let url = self.options.url(path);
            let send = |token: &Option<String>| -> Result<Response, DsError> {
                let mut req = self.options.request(Request::get(&url)).limit(limit);
                if let Some(t) = token {
                    req = req.header(TOKEN_HEADER, t);
                }
                Ok(req.send()?)
            };
            let mut response = send(&self.token)?;
            if response.status == 401 {
                log::info!("{url}: the IMDSv2 token was refused; taking a new one");
                self.new_token()?;
                response = send(&self.token)?;
            }
            match response.status {
                200 => Ok(Some(response.body)),
                404 => Ok(None),
                status => Err(DsError::Status { url, status }),
            }
        }
    }

    pub fn fetch(options: &Options) -> Result<Instance, DsError> {
        let mut s = Session {
            options,
            token: None,
        };
        s.new_token()?;
        let id_path = "/latest/meta-data/instance-id";
        let Some(id) = s.get(id_path, MAX_META)? else {
            return Err(DsError::Absent(format!(
                "{}: no instance-id",
                options.url(id_path)
            )));
        };
        let instance_id = Some(line(&options.url(id_path), &id)?);
        let mut hostname = None;
        for path in [
            "/latest/meta-data/local-hostname",
            "/latest/meta-data/hostname",
        ] {
            if let Some(h) = s.get(path, MAX_META)? {
                hostname = Some(short_host(&line(&options.url(path), &h)?));
                break;
            }
        }
        let mut public_keys = Vec::new();
        let keys_path = "/latest/meta-data/public-keys/";
        if let Some(list) = s.get(keys_path, MAX_META)? {
            for entry in text(&options.url(keys_path), &list)?.lines() {
                // `0=my-key`: the key is at `0/openssh-key`.
                let index = entry.split('=').next().unwrap_or_default().trim();
                if index.is_empty() || !index.chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                let path = format!("{keys_path}{index}/openssh-key");
                if let Some(key) = s.get(&path, MAX_META)? {
                    public_keys.extend(
                        text(&options.url(&path), &key)?
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_string),
                    );
                }
            }
        }
        let user_data = s.get("/latest/user-data", MAX_USER_DATA)?;
        Ok(Instance {
            instance_id,
            hostname,
            public_keys,
            user_data,
            network: None,
        })
    }
}

/// GCE: `Metadata-Flavor: Google` on every request, and on every answer (an
/// answer without it is not from GCE's metadata server).
pub mod gce {
    use super::*;

    fn get(options: &Options, path: &str, limit: usize) -> Result<Option<Vec<u8>>, DsError> {
        let url = options.url(&format!("/computeMetadata/v1/{path}"));
        let response = options
            .request(Request::get(&url).header("Metadata-Flavor", "Google"))
            .limit(limit)
            .send()?;
        if response.header("metadata-flavor") != Some("Google") {
            return Err(DsError::Malformed {
                url,
                reason: "the answer lacks `Metadata-Flavor: Google`: not GCE's metadata server"
                    .into(),
            });
        }
        match response.status {
            200 => Ok(Some(response.body)),
            404 => Ok(None),
            status => Err(DsError::Status { url, status }),
        }
    }

    /// `user:ssh-ed25519 AAAA… comment` lines: the keys, for the default user.
    pub fn ssh_keys(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                let (_, key) = l.trim().split_once(':')?;
                let key = key.trim();
                (key.starts_with("ssh-") || key.starts_with("ecdsa-") || key.starts_with("sk-"))
                    .then(|| key.to_string())
            })
            .collect()
    }

    pub fn fetch(options: &Options) -> Result<Instance, DsError> {
        let url = |p: &str| options.url(&format!("/computeMetadata/v1/{p}"));
        let Some(id) = get(options, "instance/id", MAX_META)? else {
            return Err(DsError::Absent(format!(
                "{}: no instance id",
                url("instance/id")
            )));
        };
        let instance_id = Some(line(&url("instance/id"), &id)?);
        let hostname = match get(options, "instance/hostname", MAX_META)? {
            Some(h) => Some(short_host(&line(&url("instance/hostname"), &h)?)),
            None => None,
        };
        let mut public_keys = Vec::new();
        let block_project = get(
            options,
            "instance/attributes/block-project-ssh-keys",
            MAX_META,
        )?
        .is_some_and(|b| {
            String::from_utf8_lossy(&b)
                .trim()
                .eq_ignore_ascii_case("true")
        });
        let mut key_paths = vec!["instance/attributes/ssh-keys"];
        if !block_project {
            key_paths.push("project/attributes/ssh-keys");
        }
        for path in key_paths {
            if let Some(keys) = get(options, path, MAX_META)? {
                public_keys.extend(ssh_keys(&text(&url(path), &keys)?));
            }
        }
        let user_data = get(options, "instance/attributes/user-data", MAX_USER_DATA)?;
        Ok(Instance {
            instance_id,
            hostname,
            public_keys,
            user_data,
            network: None,
        })
    }
}

/// DigitalOcean: one JSON document, `/metadata/v1.json`.
pub mod digitalocean {
    use super::*;

    pub fn parse(url: &str, body: &[u8]) -> Result<Instance, DsError> {
        let doc = json(url, body)?;
        let id = match &doc["droplet_id"] {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            _ => {
                return Err(DsError::Malformed {
                    url: url.into(),
                    reason: "no droplet_id".into(),
                })
            }
        };
        Ok(Instance {
            instance_id: Some(id),
            hostname: doc["hostname"].as_str().map(short_host),
            public_keys: doc["public_keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
            user_data: doc["user_data"].as_str().map(|s| s.as_bytes().to_vec()),
            network: network_from_digitalocean(&doc["interfaces"], &doc["dns"]),
        })
    }

    pub fn fetch(options: &Options) -> Result<Instance, DsError> {
        let url = options.url("/metadata/v1.json");
        let response = options
            .request(Request::get(&url))
            .limit(MAX_USER_DATA + MAX_META)
            .send()?;
        match response.status {
            200 => parse(&url, &response.body),
            404 => Err(DsError::Absent(format!("{url}: not found"))),
            status => Err(DsError::Status { url, status }),
        }
    }
}

/// OpenStack's `openstack/latest/` tree, from the metadata service or a
/// ConfigDrive: `meta_data.json`, `user_data`, `network_data.json`.
pub mod openstack {
    use super::*;

    pub fn parse_meta(
        url: &str,
        body: &[u8],
        user_data: Option<Vec<u8>>,
    ) -> Result<Instance, DsError> {
        let doc = json(url, body)?;
        let Some(uuid) = doc["uuid"].as_str() else {
            return Err(DsError::Malformed {
                url: url.into(),
                reason: "no `uuid`".into(),
            });
        };
        let public_keys = match &doc["public_keys"] {
            serde_json::Value::Object(keys) => keys
                .values()
                .filter_map(|k| k.as_str().map(|s| s.trim().to_string()))
                .collect(),
            serde_json::Value::Array(keys) => keys
                .iter()
                .filter_map(|k| k.as_str().map(|s| s.trim().to_string()))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Instance {
            instance_id: Some(uuid.to_string()),
            hostname: doc["hostname"]
                .as_str()
                .or(doc["name"].as_str())
                .map(short_host),
            public_keys,
            user_data,
            network: None,
        })
    }

    pub fn fetch(options: &Options) -> Result<Instance, DsError> {
        let get = |path: &str, limit: usize| -> Result<Option<Vec<u8>>, DsError> {
            let url = options.url(path);
            let response = options.request(Request::get(&url)).limit(limit).send()?;
            match response.status {
                200 => Ok(Some(response.body)),
                404 => Ok(None),
                status => Err(DsError::Status { url, status }),
            }
        };
        let meta_path = "/openstack/latest/meta_data.json";
        let Some(meta) = get(meta_path, MAX_META)? else {
            return Err(DsError::Absent(format!(
                "{}: not found",
                options.url(meta_path)
            )));
        };
        let user_data = get("/openstack/latest/user_data", MAX_USER_DATA)?;
        let mut instance = parse_meta(&options.url(meta_path), &meta, user_data)?;
        let net_path = "/openstack/latest/network_data.json";
        if let Some(net) = get(net_path, MAX_META)? {
            instance.network = network_from_openstack(&json(&options.url(net_path), &net)?);
        }
        Ok(instance)
    }
}

/// A ConfigDrive: a volume labelled `config-2` (ISO9660 or vfat) holding
/// OpenStack's `openstack/latest/` tree; mounted read-only, read, unmounted.
pub mod configdrive {
    use super::*;
    use berth_sys::probe;

    pub const LABEL: &str = "config-2";

    /// The first device labelled `config-2`, with its filesystem type.
    pub fn find(root: &Path) -> Option<(PathBuf, &'static str)> {
        let devices = probe::block_devices(&root.join("sys/class/block"), &root.join("dev"));
        devices.iter().find_map(|d| {
            let mut f = std::fs::File::open(&d.node).ok()?;
            if probe::iso9660_label(&mut f)
                .ok()
                .flatten()
                .is_some_and(|l| l.eq_ignore_ascii_case(LABEL))
            {
                return Some((d.node.clone(), "iso9660"));
            }
            if probe::vfat_label(&mut f)
                .ok()
                .flatten()
                .is_some_and(|l| l.eq_ignore_ascii_case(LABEL))
            {
                return Some((d.node.clone(), "vfat"));
            }
            None
        })
    }

    fn read(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, DsError> {
        use std::io::Read;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(DsError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        let mut bytes = Vec::new();
        file.take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| DsError::Io {
                path: path.into(),
                source,
            })?;
        if bytes.len() > limit {
            return Err(DsError::Malformed {
                url: path.display().to_string(),
                reason: format!("larger than {limit} bytes"),
            });
        }
        Ok(Some(bytes))
    }

    /// Reads the tree from a mounted (or unpacked) drive.
    pub fn read_tree(dir: &Path) -> Result<Instance, DsError> {
        let latest = dir.join("openstack/latest");
        let meta_path = latest.join("meta_data.json");
        let Some(meta) = read(&meta_path, MAX_META)? else {
            return Err(DsError::Absent(format!(
                "{}: not found",
                meta_path.display()
            )));
        };
        let user_data = read(&latest.join("user_data"), MAX_USER_DATA)?;
        let mut instance =
            openstack::parse_meta(&meta_path.display().to_string(), &meta, user_data)?;
        let net_path = latest.join("network_data.json");
        if let Some(net) = read(&net_path, MAX_META)? {
            instance.network =
                network_from_openstack(&json(&net_path.display().to_string(), &net)?);
        }
        Ok(instance)
    }

    pub fn fetch(root: &Path) -> Result<Instance, DsError> {
        let Some((device, fstype)) = find(root) else {
            return Err(DsError::Absent(format!("no volume labelled {LABEL}")));
        };
        let mnt = root.join("run/berth/configdrive");
        std::fs::create_dir_all(&mnt).map_err(|source| DsError::Io {
            path: mnt.clone(),
            source,
        })?;
        let flags = rustix::mount::MountFlags::RDONLY
            | rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOEXEC;
        rustix::mount::mount(&device, &mnt, fstype, flags, None::<&std::ffi::CStr>).map_err(
            |e| DsError::Io {
                path: device.clone(),
                source: e.into(),
            },
        )?;
        let result = read_tree(&mnt);
        if let Err(e) = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::empty()) {
            log::warn!("cannot unmount the ConfigDrive at {}: {e}", mnt.display());
        }
        result
    }
}

/// Azure: the instance document from IMDS (`Metadata: true`; IMDS refuses
/// requests without it), user data base64 in it, and the ready report the
/// platform waits for before it calls the VM provisioned.
pub mod azure {
    use super::*;
    use base64::Engine;

    pub const API: &str = "api-version=2021-02-01";

    pub fn parse(url: &str, body: &[u8]) -> Result<Instance, DsError> {
        let doc = json(url, body)?;
        let Some(id) = doc["vmId"].as_str() else {
            return Err(DsError::Malformed {
                url: url.into(),
                reason: "no `vmId`".into(),
            });
        };
        let user_data = match doc["userData"].as_str().filter(|s| !s.is_empty()) {
            Some(b64) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| DsError::Malformed {
                        url: url.into(),
                        reason: format!("userData is not base64: {e}"),
                    })?,
            ),
            None => None,
        };
        Ok(Instance {
            instance_id: Some(id.to_string()),
            hostname: doc["osProfile"]["computerName"]
                .as_str()
                .or(doc["name"].as_str())
                .map(short_host),
            public_keys: doc["publicKeys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k["keyData"].as_str().map(|s| s.trim().to_string()))
                .collect(),
            user_data,
            network: None,
        })
    }

    pub fn fetch(options: &Options) -> Result<Instance, DsError> {
        let url = options.url(&format!("/metadata/instance/compute?{API}"));
        let response = options
            .request(Request::get(&url).header("Metadata", "true"))
            .limit(MAX_USER_DATA + MAX_META)
            .send()?;
        let instance = match response.status {
            200 => parse(&url, &response.body)?,
            404 => return Err(DsError::Absent(format!("{url}: not found"))),
            status => return Err(DsError::Status { url, status }),
        };
        if options.azure_ready {
            // The platform waits for this, but the config is good without it.
            if let Err(e) = report_ready(options) {
                log::warn!("Azure ready report: {e}");
            }
        }
        Ok(instance)
    }

    fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
        let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
        let end = start + xml[start..].find(&format!("</{name}>"))?;
        Some(xml[start..end].trim())
    }

    /// Reads the goal state from the wire server and posts `Ready` for it.
    pub fn report_ready(options: &Options) -> Result<(), DsError> {
        let base = options.azure_wireserver.trim_end_matches('/');
        let url = format!("{base}/machine/?comp=goalstate");
        let response = options
            .request(Request::get(&url).header("x-ms-version", "2012-11-30"))
            .send()?;
        if response.status != 200 {
            return Err(DsError::Status {
                url,
                status: response.status,
            });
        }
        let xml = text(&url, &response.body)?;
        let field = |name: &str| {
            tag(&xml, name)
                .map(str::to_string)
                .ok_or_else(|| DsError::Malformed {
                    url: url.clone(),
                    reason: format!("the goal state has no <{name}>"),
                })
        };
        let (incarnation, container, instance) = (
            field("Incarnation")?,
            field("ContainerId")?,
            field("InstanceId")?,
        );
        let report = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Health xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><GoalStateIncarnation>{incarnation}</GoalStateIncarnation><Container><ContainerId>{container}</ContainerId><RoleInstanceList><Role><InstanceId>{instance}</InstanceId><Health><State>Ready</State></Health></Role></RoleInstanceList></Container></Health>\n"
        );
        let url = format!("{base}/machine?comp=health");
        let response = options
            .request(
                Request::post(&url)
                    .header("x-ms-version", "2012-11-30")
                    .header("Content-Type", "text/xml;charset=utf-8")
                    .body(report),
            )
            .send()?;
        if !response.is_success() {
            return Err(DsError::Status {
                url,
                status: response.status,
            });
        }
        log::info!("Azure: reported ready");
        Ok(())
    }
}

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
pub mod network {
    use super::*;
    use berth_network::dhcp::{Client, ClientConfig, Event};
    use berth_network::netlink::Netlink;

    /// A lease held for the probe; released when dropped.
    #[derive(Debug)]
    pub struct Temporary {
        client: Option<Client>,
        link: String,
        already: bool,
    }

    impl Temporary {
        pub fn note(&self) -> Option<String> {
            if self.already {
                None
            } else {
                Some(format!(
                    "a temporary DHCP lease on {} carried the probe",
                    self.link
                ))
            }
        }
    }

    impl Drop for Temporary {
        fn drop(&mut self) {
            if let Some(client) = self.client.take() {
                client.stop();
            }
        }
    }

    /// Uses the network as it is when an interface has an IPv4 address;
    /// otherwise brings up the first Ethernet interface and takes a lease on it.
    pub fn temporary_lease(wait: &Duration) -> Result<Temporary, String> {
        let mut nl = Netlink::new().map_err(|e| e.to_string())?;
        let links = nl.links().map_err(|e| e.to_string())?;
        let addresses = nl.addresses().map_err(|e| e.to_string())?;
        let has_v4 = |index: u32| {
            addresses
                .iter()
                .any(|a| a.index == index && matches!(a.net, ipnet::IpNet::V4(_)))
        };
        if let Some(l) = links
            .iter()
            .find(|l| !l.loopback && l.up && has_v4(l.index))
        {
            return Ok(Temporary {
                client: None,
                link: l.name.clone(),
                already: true,
            });
        }
        let link = links
            .iter()
            .find(|l| !l.loopback && l.mac.is_some() && l.kind.is_none())
            .ok_or("no Ethernet interface")?;
        nl.set_link(link.index, Some(true), None, None)
            .map_err(|e| format!("{}: cannot bring it up: {e}", link.name))?;
        let (tx, rx) = mpsc::channel();
        let client = Client::spawn(
            ClientConfig {
                link: link.name.clone(),
                index: link.index,
                mac: link.mac.unwrap_or_default(),
                hostname: None,
                apply_mtu: false,
                route_metric: 1024,
            },
            tx,
        )
        .map_err(|e| format!("{}: cannot start DHCP: {e}", link.name))?;
        let deadline = Instant::now() + *wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(Event::Lease { lease: Some(l), .. }) => {
                    log::info!(
                        "datasource probe: temporary lease {} on {}",
                        l.address,
                        link.name
                    );
                    return Ok(Temporary {
                        client: Some(client),
                        link: link.name.clone(),
                        already: false,
                    });
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        client.stop();
        Err(format!("{}: no DHCP lease within {wait:?}", link.name))
    }
}

#[cfg(test)]
mod tests;
