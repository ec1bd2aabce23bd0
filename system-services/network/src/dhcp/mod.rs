//! An in-process DHCPv4 client (RFC 2131), one thread per interface.
//!
//! Broadcasts (DISCOVER, REQUEST while selecting and rebinding) go out and all
//! answers come in through a packet socket bound to the interface, because
//! before it has an address the kernel's UDP stack can neither send from nor
//! reliably deliver to it. Unicasts to the server (renewing, releasing) go
//! through an ordinary UDP socket bound to the leased address, so the kernel
//! does ARP and routing.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::netlink::{Netlink, NetlinkError, Owner, RouteSpec};

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
/// First retransmission timeout; doubled on each retry up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(16);
/// How often a waiting client looks at its stop flag.
const TICK: Duration = Duration::from_millis(200);
/// How long a client waits for carrier before sending anyway.
const CARRIER_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("{link}: cannot open the DHCP socket: {source}")]
    Socket {
        link: String,
        #[source]
        source: io::Error,
    },
    #[error("{link}: cannot send a DHCP {what}: {source}")]
    Send {
        link: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{link}: cannot encode a DHCP message: {detail}")]
    Encode { link: String, detail: String },
    #[error("{link}: cannot apply the lease: {source}")]
    Apply {
        link: String,
        #[source]
        source: NetlinkError,
    },
}

/// What a server granted, with everything netconf applies from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Net,
    pub server: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    /// Option 121; when present, option 3 (routers) is ignored (RFC 3442).
    pub classless_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub mtu: Option<u16>,
    pub hostname: Option<String>,
    pub lease_secs: u32,
    pub renew_secs: u32,
    pub rebind_secs: u32,
    /// Unix time the lease was (re)acquired and expires.
    pub acquired_at: u64,
    pub expires_at: u64,
}

impl Lease {
    fn from_ack(msg: &Message, fallback_server: Option<Ipv4Addr>) -> Option<Lease> {
        let opts = msg.opts();
        let server = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => fallback_server?,
        };
        let mask = match opts.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(m)) => u32::from(*m).leading_ones() as u8,
            // No mask: the classful default for the address is what old clients assume.
            _ => 24,
        };
        let address = Ipv4Net::new(msg.yiaddr(), mask).ok()?;
        let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(t)) => *t,
            _ => 3600,
        };
        let renew_secs = match opts.get(OptionCode::Renewal) {
            Some(DhcpOption::Renewal(t)) => *t,
            _ => lease_secs / 2,
        };
        let rebind_secs = match opts.get(OptionCode::Rebinding) {
            Some(DhcpOption::Rebinding(t)) => *t,
            _ => lease_secs / 8 * 7,
        };
        let routers = match opts.get(OptionCode::Router) {
            Some(DhcpOption::Router(r)) => r.clone(),
            _ => Vec::new(),
        };
        let classless_routes = match opts.get(OptionCode::ClasslessStaticRoute) {
            Some(DhcpOption::ClasslessStaticRoute(r)) => r.clone(),
            _ => Vec::new(),
        };
        let dns = match opts.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(d)) => d.clone(),
            _ => Vec::new(),
        };
        let mut search = Vec::new();
        if let Some(DhcpOption::DomainSearch(names)) = opts.get(OptionCode::DomainSearch) {
            search.extend(
                names
                    .iter()
                    .map(|n| n.to_utf8().trim_end_matches('.').to_string()),
            );
        }
        if let Some(DhcpOption::DomainName(d)) = opts.get(OptionCode::DomainName) {
            if search.is_empty() && !d.is_empty() {
                search.push(d.clone());
            }
        }
        let mtu = match opts.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) if *m >= 68 => Some(*m),
            _ => None,
        };
        let hostname = match opts.get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) if !h.is_empty() => Some(h.clone()),
            _ => None,
        };
        let now = unix_now();
        Some(Lease {
            address,
            server,
            routers,
            classless_routes,
            dns,
            search,
            mtu,
            hostname,
            lease_secs,
            renew_secs: renew_secs.min(lease_secs),
            rebind_secs: rebind_secs.clamp(renew_secs.min(lease_secs), lease_secs),
            acquired_at: now,
            expires_at: now + u64::from(lease_secs),
        })
    }

    /// The routes this lease asks for: option 121 if given, else a default
    /// route through the first router (RFC 3442 §DHCP Client Behavior).
    pub fn routes(&self) -> Vec<(Ipv4Net, Option<Ipv4Addr>)> {
        if !self.classless_routes.is_empty() {
            return self
                .classless_routes
                .iter()
                .map(|(net, gw)| (*net, (!gw.is_unspecified()).then_some(*gw)))
                .collect();
        }
        self.routers
            .first()
            .map(|gw| {
                let default = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).ok();
                default.map(|d| (d, Some(*gw)))
            })
            .into_iter()
            .flatten()
            .collect()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What wakes the netconf loop: a client's news, a request to stop or
/// reload (`Signals`), or a change around it.
#[derive(Debug, Clone)]
pub enum Event {
    /// A lease was obtained or renewed (`Some`) or lost (`None`).
    Lease { link: String, lease: Option<Lease> },
    /// Look at the stop and reload requests now.
    Wake,
    /// The kernel announced a change of a link, an address or a route that
    /// netconf did not ask for, or a config file's directory changed.
    Changed,
}

/// Everything one interface's client needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub link: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// Sent as option 12, so the server can register it in DNS.
    pub hostname: Option<String>,
    /// Applied from option 26 only when the config sets no MTU.
    pub apply_mtu: bool,
    pub route_metric: u32,
}

/// A running client; dropping it stops the thread (releasing the lease).
#[derive(Debug)]
pub struct Client {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    pub fn spawn(config: ClientConfig, events: Sender<Event>) -> io::Result<Client> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dhcp-{}", config.link))
            .spawn(move || {
                let link = config.link.clone();
                let mut machine = Machine {
                    config,
                    events,
                    stop: flag,
                    lease: None,
                    netlink: None,
                    applied_routes: Vec::new(),
                };
                // A failure here is reported and retried: the interface must
                // keep trying to get an address, whatever went wrong once.
                while !machine.stopped() {
                    match machine.run() {
                        Ok(()) => break,
                        Err(e) => {
                            log::warn!("{e}; retrying");
                            machine.sleep(Duration::from_secs(2));
                        }
                    }
                }
                machine.shutdown();
                log::debug!("{link}: DHCP client stopped");
            })?;
        Ok(Client {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the client, releasing its lease, and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // Out of a sleep at once (`Machine::sleep`), not at its next look.
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.halt();
    }
}

mod machine;
mod packet;
mod socket;

use machine::*;
#[cfg(fuzzing)]
pub use packet::fuzz_packet;
use packet::*;
pub use socket::NO_FILTER_ENV;
use socket::*;

#[cfg(test)]
mod tests;
