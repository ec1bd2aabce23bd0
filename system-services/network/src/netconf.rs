//! The netconf loop: plan, apply what changed, run DHCP clients, write
//! resolv.conf, the hostname, readiness and the state `berth network status`
//! reads; again on every tick (hotplug), on SIGHUP and when a config file changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime};

use berth_configs::model::CloudConfig;
use berth_configs::sources::Layout;
use ipnet::IpNet;

use crate::dhcp::{Client, ClientConfig, Event, Lease};
use crate::dns;
use crate::netlink::{Address, Link, Netlink, Owner, Route, RouteSpec};
use crate::plan::{plan, CurrentLink, LinkPlan, Plan, VirtualKind};
use crate::status::{State, STATE_FILE};
use crate::Error;

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// Every source of a Berth system under this root (`/` on a machine):
    /// defaults, OEM, user-data, local changes, kernel command line.
    Layout(PathBuf),
    /// One cloud-config file on its own, without the built-in defaults (tests,
    /// or a config rendered by berthd).
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub config: ConfigSource,
    /// Holds `ready` and `state.json` (`/run/berth/network`).
    pub run_dir: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname_file: PathBuf,
    pub hosts_file: PathBuf,
    /// Set the kernel hostname (off in tests that share the host's UTS namespace).
    pub set_kernel_hostname: bool,
    /// How often links are re-read for hotplug and config files checked.
    pub tick: Duration,
}

impl Options {
    /// Production paths, with `/etc` files under `etc`.
    pub fn new(config: ConfigSource, etc: &Path) -> Options {
        Options {
            config,
            run_dir: PathBuf::from("/run/berth/network"),
            resolv_conf: etc.join("resolv.conf"),
            hostname_file: etc.join("hostname"),
            hosts_file: etc.join("hosts"),
            set_kernel_hostname: true,
            tick: Duration::from_secs(1),
        }
    }

    pub fn ready_file(&self) -> PathBuf {
        self.run_dir.join("ready")
    }

    /// What netconf waits for while it is not ready, one line; the `file:`
    /// healthcheck of `ready` shows it (see `berth ps`).
    pub fn waiting_file(&self) -> PathBuf {
        self.run_dir.join("ready.waiting")
    }
}

/// Stop and reload requests, set from signal handlers or by a caller.
#[derive(Debug, Default)]
pub struct Signals {
    pub stop: AtomicBool,
    pub reload: AtomicBool,
}

static SIGNALS: Signals = Signals {
    stop: AtomicBool::new(false),
    reload: AtomicBool::new(false),
};

extern "C" fn on_signal(signal: libc::c_int) {
    // Only atomic stores: async-signal-safe.
    if signal == libc::SIGHUP {
        SIGNALS.reload.store(true, Ordering::SeqCst);
    } else {
        SIGNALS.stop.store(true, Ordering::SeqCst);
    }
}

impl Signals {
    /// SIGTERM/SIGINT stop netconf (releasing leases), SIGHUP reloads the config;
    /// all three are unblocked too. Call it before any thread is started.
    pub fn install() -> Result<&'static Signals, Error> {
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is valid; the handler only does atomic stores.
            let rc = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigaction(signal, &action, std::ptr::null_mut())
            };
            if rc != 0 {
                return Err(Error::Signals(std::io::Error::last_os_error()));
            }
        }
        // A handler is not enough: a signal blocked in the mask netconf was
        // started with (a mask survives exec) would stay pending for good,
        // and as PID 1 of its container only SIGKILL would end it.
        // SAFETY: sigemptyset/sigaddset fill a local set that
        // pthread_sigmask only reads.
        let rc = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(Error::Signals(std::io::Error::from_raw_os_error(rc)));
        }
        Ok(&SIGNALS)
    }
}

struct Loaded {
    config: CloudConfig,
    stamps: Vec<Option<SystemTime>>,
}

fn source_paths(source: &ConfigSource) -> Vec<PathBuf> {
    match source {
        ConfigSource::File(p) => vec![p.clone()],
        ConfigSource::Layout(root) => {
            let l = Layout::new(root);
            vec![l.oem(), l.user_data(), l.local()]
        }
    }
}

fn stamps(source: &ConfigSource) -> Vec<Option<SystemTime>> {
    source_paths(source)
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn load(source: &ConfigSource) -> Result<Loaded, Error> {
    let stamps = stamps(source);
    let loaded = match source {
        ConfigSource::Layout(root) => Layout::new(root).load()?,
        ConfigSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let doc =
                berth_configs::parse_document(&berth_configs::sources::source_name(path), &text);
            if !doc.is_valid() {
                let detail = doc
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(Error::InvalidConfig {
                    path: path.clone(),
                    detail,
                });
            }
            berth_configs::load(vec![doc])
        }
    };
    for d in &loaded.diagnostics {
        log::warn!("{d}");
    }
    Ok(Loaded {
        config: loaded.config,
        stamps,
    })
}

/// What netconf has done to one link, so a change is applied as a difference.
#[derive(Debug, Clone)]
struct Applied {
    index: u32,
    plan: LinkPlan,
    routes: Vec<RouteSpec>,
}

struct Netconf<'a> {
    options: &'a Options,
    nl: Netlink,
    config: CloudConfig,
    applied: BTreeMap<String, Applied>,
    /// Links netconf created, and as what.
    managed: BTreeMap<String, VirtualKind>,
    clients: BTreeMap<String, (u32, Client)>,
    leases: BTreeMap<String, Lease>,
    events: std::sync::mpsc::Sender<Event>,
    ready: bool,
    /// What readiness waited for at the last tick.
    gaps: Vec<String>,
    last_plan: Plan,
    /// The last failure per link, so a failure retried every tick is logged once.
    failures: BTreeMap<String, String>,
}

/// Runs netconf until `signals.stop` is set; leases are released on the way out.
pub fn run(options: &Options, signals: &Signals) -> Result<(), Error> {
    let loaded = load(&options.config)?;
    let mut stamps = loaded.stamps;
    let (tx, rx) = channel();
    let mut nc = Netconf {
        options,
        nl: Netlink::new()?,
        config: loaded.config,
        applied: BTreeMap::new(),
        managed: previous_managed(options),
        clients: BTreeMap::new(),
        leases: BTreeMap::new(),
        events: tx,
        ready: false,
        gaps: Vec::new(),
        last_plan: Plan::default(),
        failures: BTreeMap::new(),
    };
    // A ready file left by an earlier run must not make the service look healthy.
    let _ = std::fs::remove_file(options.ready_file());
    let _ = std::fs::remove_file(options.waiting_file());
    log::info!("netconf started");
    while !signals.stop.load(Ordering::SeqCst) {
        let now = stamps_now(&options.config);
        if signals.reload.swap(false, Ordering::SeqCst) || now != stamps {
            stamps = now;
            match load(&options.config) {
                Ok(l) => {
                    log::info!("config changed; applying");
                    nc.config = l.config;
                }
                // Keep running on the last good config.
                Err(e) => log::error!("{e}; keeping the current network config"),
            }
        }
        if let Err(e) = nc.tick() {
            log::warn!("{e}");
        }
        nc.wait_events(&rx, options.tick);
    }
    log::info!("netconf stopping");
    nc.shutdown();
    Ok(())
}

fn stamps_now(source: &ConfigSource) -> Vec<Option<SystemTime>> {
    stamps(source)
}

fn previous_managed(options: &Options) -> BTreeMap<String, VirtualKind> {
    match State::read(&options.run_dir.join(STATE_FILE)) {
        Ok(state) => state.managed,
        Err(_) => BTreeMap::new(),
    }
}

fn current_links(links: &[Link]) -> Vec<CurrentLink> {
    links
        .iter()
        .map(|l| CurrentLink {
            name: l.name.clone(),
            mac: l.mac,
            loopback: l.loopback,
        })
        .collect()
}

fn matches_kind(link: &Link, kind: &VirtualKind, links: &[Link]) -> bool {
    match kind {
        VirtualKind::Bond { .. } => link.kind.as_deref() == Some("bond"),
        VirtualKind::Bridge => link.kind.as_deref() == Some("bridge"),
        VirtualKind::Vlan { parent, id } => {
            link.kind.as_deref() == Some("vlan")
                && link.vlan_id == Some(*id)
                && links
                    .iter()
                    .any(|p| Some(p.index) == link.parent && &p.name == parent)
        }
    }
}

impl Netconf<'_> {
    /// Logs a failure unless it is the same as the last one for `link`.
    fn warn_once(&mut self, link: &str, message: String) {
        if self.failures.get(link) != Some(&message) {
            log::warn!("{link}: {message}");
            self.failures.insert(link.to_string(), message);
        }
    }

    fn wait_events(&mut self, rx: &Receiver<Event>, tick: Duration) {
        let mut first = true;
        loop {
            let event = if first {
                first = false;
                match rx.recv_timeout(tick) {
                    Ok(e) => e,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(e) => e,
                    Err(_) => return,
                }
            };
            match event {
                Event::Lease { link, lease } => {
                    match lease {
                        Some(l) => self.leases.insert(link, l),
                        None => self.leases.remove(&link),
                    };
                }
            }
        }
    }

    fn tick(&mut self) -> Result<(), Error> {
        let links = self.nl.links()?;
        let plan = plan(&self.config.berth.network, &current_links(&links));
        if plan.waiting != self.last_plan.waiting && !plan.waiting.is_empty() {
            log::info!("waiting for {}", plan.waiting.join(", "));
        }
        self.virtuals(&plan, &links);
        let links = self.nl.links()?;
        self.layer2(&plan, &links);
        let links = self.nl.links()?;
        self.layer3(&plan, &links);
        self.forget(&plan, &links);
        self.last_plan = plan;
        self.dns_and_hostname();
        self.readiness()?;
        self.write_state();
        Ok(())
    }

    /// Creates, recreates and deletes bonds, bridges and VLANs.
    fn virtuals(&mut self, plan: &Plan, links: &[Link]) {
        // Links netconf made that the config no longer wants, VLANs first (they sit on the others).
        let stale: Vec<(String, VirtualKind)> = self
            .managed
            .iter()
            .filter(|(name, kind)| plan.virtuals.get(*name) != Some(*kind))
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect();
        let mut stale_sorted = stale.clone();
        stale_sorted.sort_by_key(|(_, k)| !matches!(k, VirtualKind::Vlan { .. }));
        for (name, _) in stale_sorted {
            if let Some(link) = links.iter().find(|l| l.name == name) {
                log::info!("{name}: deleting (no longer configured as it was)");
                if let Err(e) = self.nl.del_link(link.index) {
                    log::warn!("{name}: {e}");
                    continue;
                }
            }
            self.managed.remove(&name);
            self.applied.remove(&name);
            self.stop_client(&name);
        }
        let mut links = links.to_vec();
        let mut order: Vec<(&String, &VirtualKind)> = plan.virtuals.iter().collect();
        order.sort_by_key(|(_, k)| matches!(k, VirtualKind::Vlan { .. }));
        for (name, kind) in order {
            if let Some(link) = links.iter().find(|l| &l.name == name) {
                if matches_kind(link, kind, &links) {
                    self.managed
                        .entry(name.clone())
                        .or_insert_with(|| kind.clone());
                    continue;
                }
                log::warn!(
                    "{name}: exists but is not the {kind:?} the config asks for; leaving it alone"
                );
                continue;
            }
            let created = match kind {
                VirtualKind::Bond { opts } => self.nl.add_bond(name, opts).map(|()| {
                    bond_sysfs_opts(name, opts);
                }),
                VirtualKind::Bridge => self.nl.add_bridge(name),
                VirtualKind::Vlan { parent, id } => {
                    let Some(p) = links.iter().find(|l| &l.name == parent) else {
                        // The parent is not there yet (hotplug); try again next tick.
                        continue;
                    };
                    let index = p.index;
                    self.nl.add_vlan(name, index, *id)
                }
            };
            match created {
                Ok(()) => {
                    log::info!("{name}: created");
                    self.managed.insert(name.clone(), kind.clone());
                    if let Ok(Some(l)) = self.nl.link_by_name(name) {
                        links.push(l);
                    }
                }
                Err(e) => self.warn_once(name, e.to_string()),
            }
        }
    }

    /// Enslavement, MTU and up, for links whose plan changed.
    fn layer2(&mut self, plan: &Plan, links: &[Link]) {
        for (name, lp) in &plan.links {
            let Some(link) = links.iter().find(|l| &l.name == name) else {
                continue;
            };
            if self.unchanged(name, link.index, lp) {
                continue;
            }
            let want_master = match &lp.master {
                Some(m) => match links.iter().find(|l| &l.name == m) {
                    Some(ml) => Some(ml.index),
                    // The master is not there yet; enslave next tick.
                    None => continue,
                },
                None => None,
            };
            let result = (|| {
                if link.master != want_master
                    && (want_master.is_some()
                        || self
                            .applied
                            .get(name)
                            .is_some_and(|a| a.plan.master.is_some()))
                {
                    // A bond takes only links that are down.
                    self.nl.set_link(link.index, Some(false), None, None)?;
                    self.nl
                        .set_link(link.index, None, None, Some(want_master))?;
                }
                if let Some(mtu) = lp.mtu {
                    if mtu != link.mtu {
                        self.nl.set_link(link.index, None, Some(mtu), None)?;
                    }
                }
                self.nl.set_link(link.index, Some(true), None, None)
            })();
            if let Err(e) = result {
                log::warn!("{name}: {e}");
            }
            if !link.loopback && !lp.key.is_empty() {
                let path = format!("/proc/sys/net/ipv6/conf/{name}/accept_ra");
                // Best effort: IPv6 may be disabled.
                let _ = std::fs::write(path, if lp.accept_ra { "1" } else { "0" });
            }
        }
    }

    fn unchanged(&self, name: &str, index: u32, lp: &LinkPlan) -> bool {
        self.applied
            .get(name)
            .is_some_and(|a| a.index == index && &a.plan == lp)
    }

    /// Addresses, routes and DHCP, for links whose plan changed.
    fn layer3(&mut self, plan: &Plan, links: &[Link]) {
        for (name, lp) in &plan.links {
            let Some(link) = links.iter().find(|l| &l.name == name) else {
                continue;
            };
            if self.unchanged(name, link.index, lp) {
                continue;
            }
            if lp.master.is_some() && link.master.is_none() {
                // Not enslaved yet: leave it for the next tick.
                continue;
            }
            let previous = self
                .applied
                .get(name)
                .filter(|a| a.index == link.index)
                .cloned();
            // A link that no longer uses DHCP gives its lease back first:
            // removing the leased (primary) address takes the kernel's
            // secondary addresses of the same subnet with it, so a static
            // address added before would vanish.
            let running = self.clients.get(name).map(|(i, _)| *i);
            if !lp.dhcp && running.is_some() {
                self.stop_client(name);
            }
            let old_addrs = previous
                .as_ref()
                .map(|a| a.plan.addresses.clone())
                .unwrap_or_default();
            for gone in old_addrs.iter().filter(|a| !lp.addresses.contains(a)) {
                if let Err(e) = self.nl.del_address(link.index, *gone) {
                    log::warn!("{name}: {e}");
                }
            }
            let mut ok = true;
            for addr in &lp.addresses {
                if let Err(e) = self.nl.replace_address(link.index, *addr, None) {
                    log::warn!("{name}: {e}");
                    ok = false;
                }
            }
            let routes = static_routes(lp, link.index);
            let old_routes = previous
                .as_ref()
                .map(|a| a.routes.clone())
                .unwrap_or_default();
            for gone in old_routes.iter().filter(|r| !routes.contains(r)) {
                if let Err(e) = self.nl.del_route(gone) {
                    log::warn!("{name}: {e}");
                }
            }
            for route in &routes {
                if let Err(e) = self.nl.replace_route(route) {
                    log::warn!("{name}: {e}");
                    ok = false;
                }
            }
            // DHCP: (re)start when wanted and not running on this link (stopped
            // above when not wanted).
            let dhcp_changed = previous.as_ref().is_some_and(|a| a.plan.mtu != lp.mtu);
            if lp.dhcp && (running != Some(link.index) || dhcp_changed) {
                self.stop_client(name);
                match link.mac {
                    Some(mac) => {
                        let client = ClientConfig {
                            link: name.clone(),
                            index: link.index,
                            mac,
                            hostname: self.config.hostname.clone().or_else(dns::kernel_hostname),
                            apply_mtu: lp.mtu.is_none(),
                            // One default route per interface: distinct metrics
                            // keep two DHCP interfaces from replacing each other's.
                            route_metric: 1024 + link.index,
                        };
                        match Client::spawn(client, self.events.clone()) {
                            Ok(c) => {
                                log::info!("{name}: DHCP started");
                                self.clients.insert(name.clone(), (link.index, c));
                            }
                            Err(e) => {
                                log::warn!("{name}: cannot start DHCP: {e}");
                                ok = false;
                            }
                        }
                    }
                    None => {
                        log::warn!("{name}: no MAC address; DHCP needs one");
                    }
                }
            }
            if ok {
                self.applied.insert(
                    name.clone(),
                    Applied {
                        index: link.index,
                        plan: lp.clone(),
                        routes,
                    },
                );
            }
        }
    }

    /// Undoes what netconf did to links the config no longer covers, and
    /// forgets links that went away.
    fn forget(&mut self, plan: &Plan, links: &[Link]) {
        let names: Vec<String> = self.applied.keys().cloned().collect();
        for name in names {
            let link = links.iter().find(|l| l.name == name);
            let Some(a) = self.applied.get(&name).cloned() else {
                continue;
            };
            match link {
                Some(link) if link.index == a.index => {
                    if plan.links.contains_key(&name) {
                        continue;
                    }
                    log::info!("{name}: no longer configured; removing what netconf set");
                    for r in &a.routes {
                        let _ = self.nl.del_route(r);
                    }
                    for addr in &a.plan.addresses {
                        let _ = self.nl.del_address(link.index, *addr);
                    }
                    if a.plan.master.is_some() {
                        let _ = self.nl.set_link(link.index, None, None, Some(None));
                    }
                    self.stop_client(&name);
                    self.applied.remove(&name);
                }
                _ => {
                    // Gone or replaced (hotplug): its client and state go with it.
                    self.stop_client(&name);
                    self.leases.remove(&name);
                    self.applied.remove(&name);
                }
            }
        }
        let stale: Vec<String> = self
            .clients
            .keys()
            .filter(|n| !plan.links.get(*n).is_some_and(|p| p.dhcp))
            .cloned()
            .collect();
        for name in stale {
            self.stop_client(&name);
        }
    }

    fn stop_client(&mut self, name: &str) {
        if let Some((_, client)) = self.clients.remove(name) {
            log::info!("{name}: stopping DHCP");
            client.stop();
            self.leases.remove(name);
        }
    }

    fn dns_and_hostname(&mut self) {
        let net = &self.config.berth.network;
        let (servers, search) = dns::resolvers(&net.dns, &self.leases);
        let text = dns::render_resolv_conf(&servers, &search);
        match dns::write_if_changed(&self.options.resolv_conf, &text) {
            Ok(true) => log::info!("{}: updated", self.options.resolv_conf.display()),
            Ok(false) => {}
            Err(e) => log::warn!("{e}"),
        }
        let hostname = self
            .config
            .hostname
            .clone()
            .or_else(|| self.leases.values().find_map(|l| l.hostname.clone()));
        if let Some(name) = hostname {
            if self.options.set_kernel_hostname && dns::kernel_hostname().as_deref() != Some(&name)
            {
                match dns::set_kernel_hostname(&name) {
                    Ok(()) => log::info!("hostname set to {name}"),
                    Err(e) => log::warn!("cannot set the hostname to {name}: {e}"),
                }
            }
            if let Err(e) = dns::write_if_changed(&self.options.hostname_file, &format!("{name}\n"))
            {
                log::warn!("{e}");
            }
            let existing = std::fs::read_to_string(&self.options.hosts_file).unwrap_or_default();
            if let Err(e) = dns::write_if_changed(
                &self.options.hosts_file,
                &dns::render_hosts(&existing, &name),
            ) {
                log::warn!("{e}");
            }
        }
    }

    fn readiness(&mut self) -> Result<(), Error> {
        let plan = &self.last_plan;
        let mut gaps: Vec<String> = plan
            .required_unmatched
            .iter()
            .map(|key| format!("{key}: no interface matches it yet"))
            .collect();
        if !plan.required.is_empty() {
            let links = self.nl.links()?;
            let addrs = self.nl.addresses()?;
            let routes = self.nl.routes()?;
            for name in &plan.required {
                let Some(lp) = plan.links.get(name) else {
                    continue;
                };
                let link = links.iter().find(|l| &l.name == name);
                gaps.extend(readiness_gaps(
                    name,
                    lp,
                    link,
                    self.leases.get(name),
                    &addrs,
                    &routes,
                ));
            }
        }
        let ready = gaps.is_empty();
        let file = self.options.ready_file();
        // Why it is not ready, for the healthcheck's message (`berth ps`);
        // never there together with `ready`: removed before `ready` is
        // written, written after `ready` is removed.
        let why = self.options.waiting_file();
        if ready {
            let _ = std::fs::remove_file(&why);
        }
        if ready && !self.ready {
            log::info!("network ready");
            dns::write_if_changed(&file, "ready\n")?;
        } else if !ready && self.ready {
            log::warn!("network no longer ready");
            let _ = std::fs::remove_file(&file);
        }
        if !ready {
            if gaps != self.gaps {
                log::info!("not ready: waiting for {}", gaps.join("; "));
            }
            if let Err(e) = dns::write_if_changed(&why, &format!("{}\n", gaps.join("; "))) {
                log::warn!("{e}");
            }
        }
        self.gaps = gaps;
        self.ready = ready;
        Ok(())
    }

    fn write_state(&mut self) {
        let state = State {
            pid: std::process::id(),
            ready: self.ready,
            leases: self.leases.clone(),
            nameservers: dns::resolvers(&self.config.berth.network.dns, &self.leases).0,
            search: dns::resolvers(&self.config.berth.network.dns, &self.leases).1,
            managed: self.managed.clone(),
            configured: self
                .last_plan
                .links
                .iter()
                .map(|(n, p)| (n.clone(), p.key.clone()))
                .collect(),
            waiting: self.last_plan.waiting.clone(),
            required: self
                .last_plan
                .required
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            not_ready: self.gaps.clone(),
        };
        let path = self.options.run_dir.join(STATE_FILE);
        match serde_json::to_string_pretty(&state) {
            Ok(text) => {
                if let Err(e) = dns::write_if_changed(&path, &text) {
                    log::warn!("{e}");
                }
            }
            Err(e) => log::warn!("cannot render the state: {e}"),
        }
    }

    fn shutdown(&mut self) {
        let _ = std::fs::remove_file(self.options.ready_file());
        let _ = std::fs::remove_file(self.options.waiting_file());
        let names: Vec<String> = self.clients.keys().cloned().collect();
        for name in names {
            self.stop_client(&name);
        }
        self.ready = false;
        self.write_state();
    }
}

/// What a required link still lacks, one phrase each (empty when it is ready):
/// its static addresses, its DHCP lease and the lease's address, and every
/// route its config and its lease ask for. A lease without a router and a
/// static address without a gateway ask for no default route.
pub(crate) fn readiness_gaps(
    name: &str,
    lp: &LinkPlan,
    link: Option<&Link>,
    lease: Option<&Lease>,
    addrs: &[Address],
    routes: &[Route],
) -> Vec<String> {
    let Some(link) = link else {
        return vec![format!("{name}: the interface is gone")];
    };
    let mut gaps = Vec::new();
    let on_link = |net: &IpNet| addrs.iter().any(|x| x.index == link.index && x.net == *net);
    for a in lp.addresses.iter().filter(|a| !on_link(a)) {
        gaps.push(format!("{name}: address {a}"));
    }
    let mut wanted: Vec<(IpNet, Option<IpAddr>)> = static_routes(lp, link.index)
        .into_iter()
        .map(|r| (r.to, r.via))
        .collect();
    if lp.dhcp {
        match lease {
            None => gaps.push(format!("{name}: a DHCP lease")),
            Some(l) => {
                let net = IpNet::V4(l.address);
                if !on_link(&net) {
                    gaps.push(format!("{name}: leased address {net}"));
                }
                wanted.extend(
                    l.routes()
                        .into_iter()
                        .map(|(to, via)| (IpNet::V4(to), via.map(IpAddr::V4))),
                );
            }
        }
    }
    for (to, via) in wanted {
        let present = routes
            .iter()
            .any(|r| r.to == to && r.via == via && r.oif == Some(link.index));
        if !present {
            let to_text = if to.prefix_len() == 0 {
                "default".to_string()
            } else {
                to.to_string()
            };
            gaps.push(match via {
                Some(via) => format!("{name}: route {to_text} via {via}"),
                None => format!("{name}: route {to_text}"),
            });
        }
    }
    // With nothing asked for, any address that is not link-local.
    if lp.addresses.is_empty() && !lp.dhcp {
        let has_any = addrs.iter().any(|x| {
            x.index == link.index
                && match x.net.addr() {
                    IpAddr::V4(_) => true,
                    IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
                }
        });
        if !has_any {
            gaps.push(format!("{name}: an address"));
        }
    }
    gaps
}

/// The routes a link's static config asks for: gateways first as default routes.
fn static_routes(lp: &LinkPlan, index: u32) -> Vec<RouteSpec> {
    let mut out = Vec::new();
    let spec = |to: IpNet, via: Option<IpAddr>, metric: Option<u32>| RouteSpec {
        to,
        via,
        oif: index,
        metric,
        src: None,
        owner: Owner::Static,
    };
    if let Some(gw) = lp.gateway {
        out.push(spec(
            IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap_or_default(),
            Some(IpAddr::V4(gw)),
            None,
        ));
    }
    if let Some(gw) = lp.gateway_ipv6 {
        if let Ok(to) = IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0) {
            out.push(spec(to, Some(IpAddr::V6(gw)), None));
        }
    }
    for r in &lp.routes {
        out.push(spec(r.to, r.via, r.metric));
    }
    out.sort_by_key(|r| r.via.is_some());
    out
}

/// Bond options that netlink's bond attributes above do not carry, set by name
/// through sysfs (`/sys/class/net/<bond>/bonding/<option>`).
fn bond_sysfs_opts(bond: &str, opts: &BTreeMap<String, String>) {
    const NETLINK: &[&str] = &[
        "mode",
        "miimon",
        "updelay",
        "downdelay",
        "min_links",
        "arp_interval",
    ];
    for (key, value) in opts {
        if NETLINK.contains(&key.as_str()) {
            continue;
        }
        let path = format!("/sys/class/net/{bond}/bonding/{key}");
        if let Err(e) = std::fs::write(&path, value) {
            log::warn!("{bond}: cannot set bond option {key}={value} ({path}): {e}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn eth0() -> Link {
        Link {
            index: 2,
            name: "eth0".into(),
            mac: Some([0x52, 0x54, 0, 0, 0, 1]),
            kind: None,
            master: None,
            parent: None,
            vlan_id: None,
            mtu: 1500,
            up: true,
            carrier: true,
            loopback: false,
        }
    }

    fn addr(net: &str) -> Address {
        Address {
            index: 2,
            net: net.parse().unwrap(),
            valid_lft: None,
        }
    }

    fn route(to: &str, via: Option<&str>) -> Route {
        Route {
            to: to.parse().unwrap(),
            via: via.map(|v| v.parse().unwrap()),
            oif: Some(2),
            metric: 1026,
            protocol: "dhcp".into(),
            src: None,
        }
    }

    fn lease(routers: Vec<Ipv4Addr>) -> Lease {
        Lease {
            address: "10.0.2.15/24".parse().unwrap(),
            server: Ipv4Addr::new(10, 0, 2, 2),
            routers,
            classless_routes: Vec::new(),
            dns: Vec::new(),
            search: Vec::new(),
            mtu: None,
            hostname: None,
            lease_secs: 3600,
            renew_secs: 1800,
            rebind_secs: 3000,
            acquired_at: 0,
            expires_at: 3600,
        }
    }

    #[test]
    fn a_lease_without_a_router_is_complete() {
        let lp = LinkPlan {
            key: "eth0".into(),
            dhcp: true,
            ..LinkPlan::default()
        };
        let link = eth0();
        assert_eq!(
            readiness_gaps("eth0", &lp, Some(&link), None, &[], &[]),
            vec!["eth0: a DHCP lease".to_string()]
        );
        let no_router = lease(Vec::new());
        let addrs = [addr("10.0.2.15/24")];
        assert!(readiness_gaps("eth0", &lp, Some(&link), Some(&no_router), &addrs, &[]).is_empty());
        // With a router, its default route is part of the lease.
        let with_router = lease(vec![Ipv4Addr::new(10, 0, 2, 2)]);
        assert_eq!(
            readiness_gaps("eth0", &lp, Some(&link), Some(&with_router), &addrs, &[]),
            vec!["eth0: route default via 10.0.2.2".to_string()]
        );
        let routes = [route("0.0.0.0/0", Some("10.0.2.2"))];
        assert!(readiness_gaps(
            "eth0",
            &lp,
            Some(&link),
            Some(&with_router),
            &addrs,
            &routes
        )
        .is_empty());
        // A default route through another link is not this lease's.
        let mut elsewhere = route("0.0.0.0/0", Some("10.0.2.2"));
        elsewhere.oif = Some(3);
        assert!(!readiness_gaps(
            "eth0",
            &lp,
            Some(&link),
            Some(&with_router),
            &addrs,
            &[elsewhere]
        )
        .is_empty());
        assert_eq!(
            readiness_gaps("eth0", &lp, Some(&link), Some(&no_router), &[], &[]),
            vec!["eth0: leased address 10.0.2.15/24".to_string()]
        );
    }

    #[test]
    fn a_static_address_without_a_gateway_is_complete() {
        let mut lp = LinkPlan {
            key: "eth1".into(),
            addresses: vec!["10.0.3.15/24".parse().unwrap()],
            mtu: Some(1400),
            ..LinkPlan::default()
        };
        let link = eth0();
        let addrs = [addr("10.0.3.15/24")];
        assert!(readiness_gaps("eth1", &lp, Some(&link), None, &addrs, &[]).is_empty());
        assert_eq!(
            readiness_gaps("eth1", &lp, Some(&link), None, &[], &[]),
            vec!["eth1: address 10.0.3.15/24".to_string()]
        );
        lp.gateway = Some(Ipv4Addr::new(10, 0, 3, 1));
        assert_eq!(
            readiness_gaps("eth1", &lp, Some(&link), None, &addrs, &[]),
            vec!["eth1: route default via 10.0.3.1".to_string()]
        );
        assert_eq!(
            readiness_gaps("eth1", &lp, None, None, &addrs, &[]),
            vec!["eth1: the interface is gone".to_string()]
        );
    }
}
