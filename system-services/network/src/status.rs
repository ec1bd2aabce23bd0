//! `berth network status`: links, addresses and routes read live over netlink,
//! with the leases, DNS and readiness netconf records in its state file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dhcp::{unix_now, Lease};
use crate::matching::format_mac;
use crate::netlink::{Netlink, Route};
use crate::plan::VirtualKind;
use crate::Error;

/// The file under the run dir netconf keeps up to date.
pub const STATE_FILE: &str = "state.json";

/// What netconf records for status (and for itself after a restart).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub pid: u32,
    pub ready: bool,
    pub leases: BTreeMap<String, Lease>,
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    /// Links netconf created (bonds, bridges, VLANs).
    pub managed: BTreeMap<String, VirtualKind>,
    /// Link → the config key that configures it.
    pub configured: BTreeMap<String, String>,
    /// Configured names with no link yet.
    pub waiting: Vec<String>,
    pub required: BTreeSet<String>,
    /// What readiness still waits for (empty when ready).
    pub not_ready: Vec<String>,
}

impl State {
    pub fn read(path: &Path) -> Result<State, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| Error::State {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    pub name: String,
    pub index: u32,
    pub kind: Option<String>,
    pub mac: Option<String>,
    pub mtu: u32,
    pub up: bool,
    pub carrier: bool,
    pub master: Option<String>,
    pub addresses: Vec<String>,
    /// The config key configuring it, if any.
    pub config: Option<String>,
    pub lease: Option<LeaseStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    pub address: String,
    pub server: String,
    pub expires_at: u64,
    pub expires_in_secs: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Whether netconf is running (its state file names a live process).
    pub running: bool,
    pub ready: bool,
    pub links: Vec<LinkStatus>,
    pub routes: Vec<Route>,
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub waiting: Vec<String>,
    /// What readiness still waits for, e.g. `eth0: a DHCP lease`.
    pub not_ready: Vec<String>,
}

/// Collects the status; without a state file (netconf never ran) the live
/// part is still shown.
pub fn status(run_dir: &Path) -> Result<Status, Error> {
    let state = match State::read(&run_dir.join(STATE_FILE)) {
        Ok(s) => Some(s),
        Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let running = state
        .as_ref()
        .is_some_and(|s| s.pid != 0 && unsafe { libc::kill(s.pid as libc::pid_t, 0) } == 0);
    let state = state.unwrap_or_default();
    let mut nl = Netlink::new()?;
    let links = nl.links()?;
    let addrs = nl.addresses()?;
    let routes = nl.routes()?;
    let now = unix_now() as i64;
    let by_index: BTreeMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut out = Vec::new();
    for l in &links {
        out.push(LinkStatus {
            name: l.name.clone(),
            index: l.index,
            kind: l.kind.clone(),
            mac: l.mac.map(|m| format_mac(&m)),
            mtu: l.mtu,
            up: l.up,
            carrier: l.carrier,
            master: l.master.and_then(|m| by_index.get(&m).cloned()),
            addresses: addrs
                .iter()
                .filter(|a| a.index == l.index)
                .map(|a| a.net.to_string())
                .collect(),
            config: state
                .configured
                .get(&l.name)
                .filter(|k| !k.is_empty())
                .cloned(),
            lease: state.leases.get(&l.name).map(|lease| LeaseStatus {
                address: lease.address.to_string(),
                server: lease.server.to_string(),
                expires_at: lease.expires_at,
                expires_in_secs: lease.expires_at as i64 - now,
            }),
        });
    }
    Ok(Status {
        running,
        ready: running && state.ready,
        links: out,
        routes,
        nameservers: state.nameservers,
        search: state.search,
        waiting: state.waiting,
        not_ready: if running { state.not_ready } else { Vec::new() },
    })
}

/// The human form.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "netconf: {}",
        match (status.running, status.ready) {
            (false, _) => "not running",
            (true, true) => "running, ready",
            (true, false) => "running, not ready",
        }
    );
    let _ = writeln!(out, "\nLINK\tSTATE\tMTU\tMAC\tADDRESSES\tCONFIG");
    for l in &status.links {
        let state = match (l.up, l.carrier) {
            (true, true) => "up",
            (true, false) => "no-carrier",
            _ => "down",
        };
        let mut name = l.name.clone();
        if let Some(kind) = &l.kind {
            name.push_str(&format!(" ({kind})"));
        }
        if let Some(m) = &l.master {
            name.push_str(&format!(" → {m}"));
        }
        let _ = writeln!(
            out,
            "{name}\t{state}\t{}\t{}\t{}\t{}",
            l.mtu,
            l.mac.as_deref().unwrap_or("-"),
            if l.addresses.is_empty() {
                "-".into()
            } else {
                l.addresses.join(",")
            },
            l.config.as_deref().unwrap_or("-"),
        );
    }
    let leases: Vec<_> = status
        .links
        .iter()
        .filter_map(|l| l.lease.as_ref().map(|x| (&l.name, x)))
        .collect();
    if !leases.is_empty() {
        let _ = writeln!(out, "\nLEASE\tADDRESS\tSERVER\tEXPIRES IN");
        for (name, l) in leases {
            let _ = writeln!(
                out,
                "{name}\t{}\t{}\t{}s",
                l.address, l.server, l.expires_in_secs
            );
        }
    }
    let _ = writeln!(out, "\nROUTE\tVIA\tDEV\tMETRIC\tPROTO");
    for r in &status.routes {
        let dev = r
            .oif
            .and_then(|i| status.links.iter().find(|l| l.index == i))
            .map(|l| l.name.as_str())
            .unwrap_or("-");
        let to = if r.to.prefix_len() == 0 {
            "default".to_string()
        } else {
            r.to.to_string()
        };
        let via = r.via.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "{to}\t{via}\t{dev}\t{}\t{}", r.metric, r.protocol);
    }
    let _ = writeln!(
        out,
        "\nDNS: {}",
        if status.nameservers.is_empty() {
            "-".to_string()
        } else {
            status
                .nameservers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    if !status.search.is_empty() {
        let _ = writeln!(out, "search: {}", status.search.join(" "));
    }
    if !status.waiting.is_empty() {
        let _ = writeln!(out, "waiting for: {}", status.waiting.join(", "));
    }
    if !status.not_ready.is_empty() {
        let _ = writeln!(out, "not ready: {}", status.not_ready.join("; "));
    }
    out
}
