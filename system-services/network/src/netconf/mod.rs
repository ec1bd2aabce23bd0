//! The netconf loop: plan, apply what changed, run DHCP clients, write
//! resolv.conf, the hostname, readiness and the state `berth network status`
//! reads; again when the kernel announces a link, address or route someone
//! else changed (hotplug), when a config file's directory changes, on a lease
//! and on SIGHUP, and on its own every `tick` while it works towards its plan
//! or every `idle_tick` once settled.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::FromRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
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
    /// How soon netconf looks again while it works towards its plan: a
    /// pass that asked the kernel for a change, or that is still not ready
    /// (a lease, a link not there yet), is followed by another after this.
    pub tick: Duration,
    /// How long netconf sleeps once it has nothing to do, unless something
    /// wakes it: the kernel's news of a link, address or route someone else
    /// changed (a NIC plugged in, a carrier lost), a config file's directory
    /// changing, a lease, a signal. A safety net only: an idle machine is not
    /// woken every `tick` to find that nothing changed.
    pub idle_tick: Duration,
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
            idle_tick: Duration::from_secs(30),
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

/// Stop and reload requests, set by netconf's signal handler or by a caller
/// ([`Signals::stop`], [`Signals::reload`]); each one wakes netconf's loop.
#[derive(Debug, Default)]
pub struct Signals {
    stop: AtomicBool,
    reload: AtomicBool,
    /// The running loop's channel, to wake it.
    wake: Mutex<Option<Sender<Event>>>,
}

static SIGNALS: Signals = Signals {
    stop: AtomicBool::new(false),
    reload: AtomicBool::new(false),
    wake: Mutex::new(None),
};

/// The write end of the pipe the signal handler wakes [`Signals::install`]'s
/// thread through (-1 until it exists).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only atomics and write(2): async-signal-safe.
    if signal == libc::SIGHUP {
        SIGNALS.reload.store(true, Ordering::SeqCst);
    } else {
        SIGNALS.stop.store(true, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) of one byte from a local to a pipe this process
        // owns; errno is saved and restored around it, as a handler must.
        unsafe {
            let errno = *libc::__errno_location();
            let byte = 1u8;
            let _ = libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

impl Signals {
    /// SIGTERM/SIGINT stop netconf (releasing leases), SIGHUP reloads the
    /// config; all three are unblocked too. Call it before any thread is
    /// started.
    ///
    /// The handler also wakes the loop at once, through a pipe and a thread
    /// that reads it: setting a flag alone left the loop to see it at its
    /// next tick, up to a second later, and every stop of the network (each
    /// shutdown and reboot) and every reload waited for that.
    pub fn install() -> Result<&'static Signals, Error> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`, which it owns from here on.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(Error::Signals(std::io::Error::last_os_error()));
        }
        let [read_fd, write_fd] = fds;
        // SAFETY: `read_fd` was just made by pipe2 and nothing else owns it.
        let mut wakes = unsafe { std::fs::File::from_raw_fd(read_fd) };
        // The handler must never block: with the pipe full, a wake is
        // pending anyway, and the byte can be dropped.
        // SAFETY: fcntl on a descriptor this function just made.
        if unsafe { libc::fcntl(write_fd, libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            return Err(Error::Signals(std::io::Error::last_os_error()));
        }
        WAKE_FD.store(write_fd, Ordering::SeqCst);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut bytes = [0u8; 64];
                loop {
                    match wakes.read(&mut bytes) {
                        Ok(0) => break,
                        Ok(_) => SIGNALS.wake(),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            })
            .map_err(Error::Signals)?;
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is valid; the handler only does
            // atomic operations and write(2).
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

    /// Asks the loop to stop, at once.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Asks the loop to load its config again, at once.
    pub fn reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        if let Some(tx) = self.wake.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(Event::Wake);
        }
    }

    fn wake_with(&self, tx: Sender<Event>) {
        *self.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
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
                let detail = doc.error_messages().join("; ");
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
    signals.wake_with(tx.clone());
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
    let changes = nc.events.clone();
    if let Err(e) = crate::netlink::follow_changes(nc.nl.port(), move || {
        let _ = changes.send(Event::Changed);
    }) {
        log::warn!(
            "cannot follow the kernel's network changes ({e}); they are seen at the next look"
        );
    }
    follow_config(&options.config, nc.events.clone());
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
        let asked = nc.nl.changes();
        let passed = nc.tick();
        if let Err(e) = &passed {
            log::warn!("{e}");
        }
        let settled = passed.is_ok()
            && nc.nl.changes() == asked
            && nc.ready
            && nc.last_plan.waiting.is_empty();
        if settled {
            nc.wait_events(&rx, options.idle_tick, true);
        } else {
            nc.wait_events(&rx, options.tick, false);
        }
    }
    log::info!("netconf stopping");
    nc.shutdown();
    Ok(())
}

/// Wakes the loop when a directory of the config sources changes (their
/// times are still what says a file changed). A source whose directory is
/// not there yet is watched through its nearest ancestor, and the watches are
/// renewed after each change, so a directory made later is followed too.
fn follow_config(source: &ConfigSource, tx: Sender<Event>) {
    let watch = match berth_sys::watch::DirWatch::new() {
        Ok(w) => w,
        Err(e) => {
            log::warn!("cannot watch the config files ({e}); changes are seen at the next look");
            return;
        }
    };
    let paths = source_paths(source);
    let watch_all = move |watch: &berth_sys::watch::DirWatch| {
        for path in &paths {
            // The nearest directory above the file that can be watched.
            let _ = path.ancestors().skip(1).find(|dir| watch.add(dir).is_ok());
        }
    };
    watch_all(&watch);
    let spawned = std::thread::Builder::new()
        .name("config-changes".into())
        .stack_size(64 << 10)
        .spawn(move || loop {
            if watch.wait(None) {
                watch_all(&watch);
                if tx.send(Event::Changed).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot watch the config files ({e}); changes are seen at the next look");
    }
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

mod apply;
mod readiness;

use readiness::*;

#[cfg(test)]
mod tests;
