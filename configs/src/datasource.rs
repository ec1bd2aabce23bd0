//! Datasources: where a machine's user-data and meta-data come from, which
//! ones a boot tries, and the cache on state that keeps a machine configured
//! when its metadata service does not answer.
//!
//! The protocols (HTTP metadata services, the ConfigDrive volume) are
//! berthd's (`system-services/src/datasource`); NoCloud is read by PID 1 in
//! stage 1. This module is what they share: the names, the choice (local
//! sources first; network sources only when `berth.datasources` names them
//! or DMI says which cloud this is, as cloud-init's `ds-identify` decides),
//! and the cache keyed by instance id.

use std::io;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::sources::{self, write_atomic, Error, Layout};
use crate::userdata::{self, Decoded};

/// The datasources Berth implements. `nocloud` is read in stage 1 and
/// `cmdline` is the kernel command line, read with every config load; the
/// rest are probed by berthd.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "target")]
pub enum Kind {
    NoCloud,
    ConfigDrive,
    Ec2,
    Gce,
    DigitalOcean,
    OpenStack,
    Azure,
    Url(String),
    File(String),
}

impl Kind {
    /// Parses one `berth.datasources` entry; `None` for `cmdline` (always
    /// read) and names Berth does not know (the validator reports those).
    pub fn parse(name: &str) -> Option<Kind> {
        if let Some(url) = name.strip_prefix("url:") {
            return Some(Kind::Url(url.to_string()));
        }
        if let Some(path) = name.strip_prefix("file:") {
            return Some(Kind::File(path.to_string()));
        }
        // RancherOS wrote `configdrive:/media/config-2`: the mount point is ours to choose.
        let base = name.split(':').next().unwrap_or(name);
        Some(match base {
            "nocloud" => Kind::NoCloud,
            "configdrive" => Kind::ConfigDrive,
            "ec2" | "aws" => Kind::Ec2,
            "gce" => Kind::Gce,
            "digitalocean" => Kind::DigitalOcean,
            "openstack" => Kind::OpenStack,
            "azure" => Kind::Azure,
            _ => return None,
        })
    }

    pub fn name(&self) -> String {
        match self {
            Kind::NoCloud => "nocloud".into(),
            Kind::ConfigDrive => "configdrive".into(),
            Kind::Ec2 => "ec2".into(),
            Kind::Gce => "gce".into(),
            Kind::DigitalOcean => "digitalocean".into(),
            Kind::OpenStack => "openstack".into(),
            Kind::Azure => "azure".into(),
            Kind::Url(u) => format!("url:{u}"),
            Kind::File(p) => format!("file:{p}"),
        }
    }

    /// Needs the network: probed only when named or DMI points at it, with a
    /// temporary lease when no interface has an address yet.
    pub fn is_network(&self) -> bool {
        !matches!(self, Kind::NoCloud | Kind::ConfigDrive | Kind::File(_))
    }
}

/// The DMI strings cloud-init's `ds-identify` looks at
/// (`/sys/class/dmi/id/*`), empty when absent.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dmi {
    pub sys_vendor: String,
    pub product_name: String,
    pub product_version: String,
    pub chassis_asset_tag: String,
    pub bios_vendor: String,
    pub board_vendor: String,
}

/// Azure's fixed chassis asset tag.
/// Left in `/run` (relative to the root) by PID 1 when a NoCloud seed was
/// read this boot, so berthd's datasource probe knows NoCloud answered (it is
/// local and first in priority).
pub const NOCLOUD_MARKER: &str = "run/berth/nocloud.seed";

pub const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";

impl Dmi {
    /// Reads `sys/class/dmi/id` under `root`; a machine without DMI (most
    /// ARM boards) reads as all empty.
    pub fn read(root: &Path) -> Dmi {
        let dir = root.join("sys/class/dmi/id");
        let field = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Dmi {
            sys_vendor: field("sys_vendor"),
            product_name: field("product_name"),
            product_version: field("product_version"),
            chassis_asset_tag: field("chassis_asset_tag"),
            bios_vendor: field("bios_vendor"),
            board_vendor: field("board_vendor"),
        }
    }

    /// The cloud this machine says it is on, if any.
    pub fn cloud(&self) -> Option<Kind> {
        let has = |field: &str, needle: &str| field.to_ascii_lowercase().contains(needle);
        if has(&self.sys_vendor, "amazon ec2")
            || has(&self.bios_vendor, "amazon ec2")
            || self.product_version.to_ascii_lowercase().contains("amazon")
        {
            return Some(Kind::Ec2);
        }
        if has(&self.product_name, "google compute engine") || self.sys_vendor == "Google" {
            return Some(Kind::Gce);
        }
        if self.sys_vendor == "DigitalOcean" {
            return Some(Kind::DigitalOcean);
        }
        if self.chassis_asset_tag == AZURE_ASSET_TAG {
            return Some(Kind::Azure);
        }
        if has(&self.product_name, "openstack")
            || has(&self.sys_vendor, "openstack")
            || has(&self.chassis_asset_tag, "openstack")
            || self.chassis_asset_tag == "OpenTelekomCloud"
        {
            return Some(Kind::OpenStack);
        }
        None
    }
}

/// Why a source is on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Local and cheap: always looked at.
    Local,
    /// Named in `berth.datasources`.
    Named,
    /// DMI says this is its cloud.
    Dmi,
}

/// The sources to probe, highest priority first: local sources, then those
/// `berth.datasources` names (in its order), then the one DMI points at.
/// Network sources come only from the last two, so a machine on no cloud
/// never waits on a metadata timeout.
pub fn plan(named: &[String], dmi: &Dmi) -> Vec<(Kind, Reason)> {
    let named: Vec<Kind> = named.iter().filter_map(|n| Kind::parse(n)).collect();
    let mut out: Vec<(Kind, Reason)> = Vec::new();
    let push = |kind: Kind, reason: Reason, out: &mut Vec<(Kind, Reason)>| {
        if !out.iter().any(|(k, _)| *k == kind) {
            out.push((kind, reason));
        }
    };
    // NoCloud is stage 1's; ConfigDrive is a volume: no wait to look for it.
    push(Kind::ConfigDrive, Reason::Local, &mut out);
    for kind in named.iter().filter(|k| !k.is_network()) {
        push(kind.clone(), Reason::Named, &mut out);
    }
    for kind in named.iter().filter(|k| k.is_network()) {
        push(kind.clone(), Reason::Named, &mut out);
    }
    if let Some(kind) = dmi.cloud() {
        push(kind, Reason::Dmi, &mut out);
    }
    out.retain(|(k, _)| *k != Kind::NoCloud);
    out
}

/// What one source delivered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: Option<String>,
    pub hostname: Option<String>,
    /// The default user's SSH keys from meta-data.
    pub public_keys: Vec<String>,
    pub user_data: Option<Vec<u8>>,
    /// Static network config the cloud gives instead of DHCP, in
    /// `berth.network`'s shape (`interfaces` keyed `mac:…`, `dns`).
    pub network: Option<serde_json::Value>,
}

impl Instance {
    /// What it sets, for logs and `berth config sources`.
    pub fn summary(&self, decoded: &Decoded) -> Vec<String> {
        let mut set = Vec::new();
        if let Some(id) = &self.instance_id {
            set.push(format!("instance-id {id}"));
        }
        if let Some(h) = &self.hostname {
            set.push(format!("hostname {h}"));
        }
        if !self.public_keys.is_empty() {
            set.push(format!("{} SSH key(s)", self.public_keys.len()));
        }
        if let Some(n) = &self.network {
            let count = n["interfaces"].as_object().map_or(0, |m| m.len());
            set.push(format!("network config for {count} interface(s)"));
        }
        match &self.user_data {
            Some(_) => set.push(format!("user-data: {}", decoded.summary())),
            None => set.push("no user-data".into()),
        }
        set
    }
}

/// What caching an instance changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub decoded: Decoded,
    /// The instance id differs from the one cached before (a cloned disk, or
    /// the first boot on this cloud): host keys and scripts are made anew.
    pub new_instance: bool,
}

#[derive(Serialize)]
struct MetaData<'a> {
    #[serde(rename = "instance-id", skip_serializing_if = "Option::is_none")]
    instance_id: Option<&'a str>,
    #[serde(rename = "local-hostname", skip_serializing_if = "Option::is_none")]
    local_hostname: Option<&'a str>,
    #[serde(rename = "public-keys", skip_serializing_if = "<[String]>::is_empty")]
    public_keys: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<&'a serde_json::Value>,
    datasource: &'a str,
}

/// Caches what `source` delivered on state, replacing what an earlier boot
/// cached: the user-data's cloud-config (several parts merged in order), the
/// meta-data (as NoCloud's `meta-data` keys, so [`Layout::load`] reads both
/// the same way), the scripts, and the instance id. A new instance id clears
/// the SSH host keys (a cloned disk must not share them) and the record of
/// which scripts ran.
pub fn cache(layout: &Layout, source: &str, instance: &Instance) -> Result<Cached, Error> {
    let decoded = instance
        .user_data
        .as_deref()
        .map(userdata::decode)
        .unwrap_or_default();
    let user_data = match decoded.cloud_configs.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(merged(many)?),
    };
    replace(&layout.user_data(), user_data.as_deref())?;
    let meta = MetaData {
        instance_id: instance.instance_id.as_deref(),
        local_hostname: instance.hostname.as_deref(),
        public_keys: &instance.public_keys,
        network: instance.network.as_ref(),
        datasource: source,
    };
    write_atomic(
        &layout.meta_data(),
        crate::emit::json_to_yaml(&serde_json::to_value(&meta).map_err(|source| {
            Error::Render {
                what: "the meta-data",
                source,
            }
        })?)
        .as_bytes(),
    )?;
    let dir = layout.scripts();
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(Error::Write {
                path: dir,
                source: e,
            })
        }
        _ => {}
    }
    for (i, script) in decoded.scripts.iter().enumerate() {
        let safe: String = script
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        write_atomic(&dir.join(format!("{i:02}-{safe}")), &script.body)?;
    }
    let previous = std::fs::read_to_string(layout.instance_id())
        .ok()
        .map(|s| s.trim().to_string());
    let id = instance.instance_id.clone().unwrap_or_default();
    let new_instance = previous.as_deref() != Some(id.as_str());
    if new_instance {
        if previous.is_some() {
            clear_host_keys(layout)?;
        }
        write_atomic(&layout.instance_id(), format!("{id}\n").as_bytes())?;
    }
    Ok(Cached {
        decoded,
        new_instance,
    })
}

fn merged(parts: &[String]) -> Result<String, Error> {
    let mut tree: Option<crate::Node> = None;
    for (i, text) in parts.iter().enumerate() {
        let source: Arc<str> = Arc::from(format!("user-data part {}", i + 1));
        // A part that does not parse is left out of the merge (the others
        // still apply); the merged file cannot show it, so it is logged here.
        match crate::node::parse(&source, text, &Default::default()) {
            Ok(node) => match &mut tree {
                None => tree = Some(node),
                Some(base) => crate::merge::merge(base, node),
            },
            Err(d) => log::warn!("{d}; this part is left out"),
        }
    }
    match tree {
        Some(t) => Ok(sources::render(&t)),
        None => Ok("#cloud-config\n".into()),
    }
}

fn replace(path: &Path, text: Option<&str>) -> Result<(), Error> {
    match text {
        Some(text) => write_atomic(path, text.as_bytes()),
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Write {
                path: path.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        },
    }
}

fn clear_host_keys(layout: &Layout) -> Result<(), Error> {
    let dir = layout.ssh_host_keys();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(entry.path()).map_err(|source| Error::Write {
                path: entry.path(),
                source,
            })?;
        }
    }
    Ok(())
}

/// The cached scripts that have not run for the cached instance yet, and
/// marks them run (before they run: a script that takes the machine down
/// must not run again on every boot).
pub fn take_pending_scripts(layout: &Layout) -> Vec<(String, Vec<u8>)> {
    let id = std::fs::read_to_string(layout.instance_id()).unwrap_or_default();
    let done = std::fs::read_to_string(layout.scripts_done()).unwrap_or_default();
    if done == id && !id.is_empty() {
        return Vec::new();
    }
    let mut scripts: Vec<(String, Vec<u8>)> = std::fs::read_dir(layout.scripts())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let body = std::fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), body))
        })
        .collect();
    scripts.sort();
    if let Err(e) = write_atomic(&layout.scripts_done(), id.as_bytes()) {
        log::warn!("{e}");
    }
    scripts
}

/// One source's line in the probe report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub source: String,
    pub reason: Reason,
    /// `answered`, `absent` (nothing there: no volume, no service), `failed`.
    pub outcome: String,
    pub millis: u64,
    /// What it set (or why it failed).
    pub detail: Vec<String>,
}

/// What this boot's probe did, kept in `/run/berth/datasources.json`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub dmi_cloud: Option<String>,
    pub attempts: Vec<Attempt>,
    /// The source whose answer is in force (cached on state).
    pub winner: Option<String>,
    /// No source answered and the cache from an earlier boot is in force.
    pub used_cache: bool,
    /// How long the probe took, temporary lease included.
    pub millis: u64,
    pub notes: Vec<String>,
}

impl Report {
    pub fn write(&self, layout: &Layout) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Write {
            path: layout.datasource_report(),
            source: io::Error::other(e),
        })?;
        write_atomic(&layout.datasource_report(), text.as_bytes())
    }

    pub fn read(layout: &Layout) -> Option<Report> {
        serde_json::from_str(&std::fs::read_to_string(layout.datasource_report()).ok()?).ok()
    }

    /// The table `berth config sources` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match &self.dmi_cloud {
            Some(c) => out.push_str(&format!("DMI: {c}\n")),
            None => out.push_str("DMI: no cloud\n"),
        }
        out.push_str(&format!(
            "{:<28} {:<7} {:<9} {:>7}  SET\n",
            "SOURCE", "WHY", "RESULT", "MS"
        ));
        for a in &self.attempts {
            let why = match a.reason {
                Reason::Local => "local",
                Reason::Named => "named",
                Reason::Dmi => "dmi",
            };
            out.push_str(&format!(
                "{:<28} {:<7} {:<9} {:>7}  {}\n",
                a.source,
                why,
                a.outcome,
                a.millis,
                a.detail.join("; ")
            ));
        }
        match (&self.winner, self.used_cache) {
            (Some(w), _) => out.push_str(&format!("in force: {w}\n")),
            (None, true) => {
                out.push_str("in force: the cache from an earlier boot (no source answered)\n")
            }
            (None, false) => out.push_str("in force: no datasource\n"),
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out.push_str(&format!("probe took {} ms\n", self.millis));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dmi_names_the_cloud() {
        let dmi = |vendor: &str, product: &str, tag: &str| Dmi {
            sys_vendor: vendor.into(),
            product_name: product.into(),
            chassis_asset_tag: tag.into(),
            ..Dmi::default()
        };
        assert_eq!(dmi("Amazon EC2", "m5.large", "").cloud(), Some(Kind::Ec2));
        assert_eq!(
            dmi("Google", "Google Compute Engine", "").cloud(),
            Some(Kind::Gce)
        );
        assert_eq!(
            dmi("DigitalOcean", "Droplet", "").cloud(),
            Some(Kind::DigitalOcean)
        );
        assert_eq!(
            dmi("OpenStack Foundation", "OpenStack Nova", "").cloud(),
            Some(Kind::OpenStack)
        );
        assert_eq!(
            dmi("Microsoft Corporation", "Virtual Machine", AZURE_ASSET_TAG).cloud(),
            Some(Kind::Azure)
        );
        assert_eq!(
            dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)", "").cloud(),
            None
        );
        assert_eq!(Dmi::default().cloud(), None);
    }

    #[test]
    fn no_network_source_unless_named_or_dmi() {
        let none = plan(&[], &Dmi::default());
        assert_eq!(none, [(Kind::ConfigDrive, Reason::Local)]);
        assert!(none.iter().all(|(k, _)| !k.is_network()));
        let named = plan(
            &[
                "gce".into(),
                "url:http://x/y".into(),
                "nocloud".into(),
                "bogus".into(),
            ],
            &Dmi {
                sys_vendor: "Amazon EC2".into(),
                ..Dmi::default()
            },
        );
        assert_eq!(
            named,
            [
                (Kind::ConfigDrive, Reason::Local),
                (Kind::Gce, Reason::Named),
                (Kind::Url("http://x/y".into()), Reason::Named),
                (Kind::Ec2, Reason::Dmi),
            ]
        );
    }

    #[test]
    fn cache_is_keyed_by_instance_id() {
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(root.path());
        let keys = layout.ssh_host_keys();
        std::fs::create_dir_all(&keys).expect("mkdir");
        std::fs::write(keys.join("ssh_host_ed25519_key"), "old").expect("write");
        let first = Instance {
            instance_id: Some("i-1".into()),
            hostname: Some("meta-host".into()),
            public_keys: vec!["ssh-ed25519 AAAA one".into()],
            user_data: Some(b"#!/bin/sh\necho hi\n".to_vec()),
            network: None,
        };
        let cached = cache(&layout, "ec2", &first).expect("cache");
        assert!(cached.new_instance);
        // The first instance on this disk: keys made before any datasource stay.
        assert!(keys.join("ssh_host_ed25519_key").exists());
        let loaded = layout.load().expect("load");
        assert_eq!(loaded.config.hostname.as_deref(), Some("meta-host"));
        assert_eq!(loaded.config.ssh_authorized_keys, ["ssh-ed25519 AAAA one"]);
        let scripts = take_pending_scripts(&layout);
        assert_eq!(scripts.len(), 1);
        assert_eq!(scripts[0].1, b"#!/bin/sh\necho hi\n");
        assert!(
            take_pending_scripts(&layout).is_empty(),
            "once per instance"
        );
        // The same instance again: nothing new.
        assert!(!cache(&layout, "ec2", &first).expect("cache").new_instance);
        assert!(take_pending_scripts(&layout).is_empty());
        // A clone: new host keys, the scripts run again.
        let clone = Instance {
            instance_id: Some("i-2".into()),
            ..first.clone()
        };
        assert!(cache(&layout, "ec2", &clone).expect("cache").new_instance);
        assert!(!keys.join("ssh_host_ed25519_key").exists());
        assert_eq!(take_pending_scripts(&layout).len(), 1);
    }

    #[test]
    fn several_cloud_config_parts_merge_and_user_data_wins_the_hostname() {
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(root.path());
        let mime = "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: part1\nssh_authorized_keys: [k-user]\n--B\nContent-Type: text/cloud-config\n\n#cloud-config\nwrite_files: [{path: /etc/x, content: y}]\n--B--\n";
        let inst = Instance {
            instance_id: Some("i-9".into()),
            hostname: Some("meta".into()),
            public_keys: vec!["k-meta".into()],
            user_data: Some(mime.as_bytes().to_vec()),
            network: None,
        };
        cache(&layout, "gce", &inst).expect("cache");
        let loaded = layout.load().expect("load");
        assert_eq!(loaded.config.hostname.as_deref(), Some("part1"));
        assert_eq!(loaded.config.ssh_authorized_keys, ["k-meta", "k-user"]);
        assert_eq!(loaded.config.write_files.len(), 1);
    }

    #[test]
    fn the_report_says_what_was_tried_and_what_is_in_force() {
        let report = Report {
            dmi_cloud: Some("ec2".into()),
            attempts: vec![Attempt {
                source: "ec2".into(),
                reason: Reason::Dmi,
                outcome: "failed".into(),
                millis: 320,
                detail: vec!["http://169.254.169.254/latest/api/token: connection refused".into()],
            }],
            winner: None,
            used_cache: true,
            millis: 1800,
            notes: vec!["a temporary DHCP lease on eth0 carried the probe".into()],
        };
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(root.path());
        report.write(&layout).expect("write");
        let back = Report::read(&layout).expect("read");
        assert_eq!(back, report);
        let text = back.render();
        assert!(text.starts_with("DMI: ec2\n"), "{text}");
        assert!(text.contains("ec2                          dmi     failed        320  http://169.254.169.254/latest/api/token: connection refused"), "{text}");
        assert!(
            text.contains("in force: the cache from an earlier boot"),
            "{text}"
        );
        assert!(text.ends_with("probe took 1800 ms\n"), "{text}");
    }
}
