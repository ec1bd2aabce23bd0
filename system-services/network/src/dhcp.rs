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

/// What a client tells the netconf loop.
#[derive(Debug, Clone)]
pub enum Event {
    /// A lease was obtained or renewed (`Some`) or lost (`None`).
    Lease { link: String, lease: Option<Lease> },
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
            let _ = thread.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Machine {
    config: ClientConfig,
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
    lease: Option<(Lease, Instant)>,
    netlink: Option<Netlink>,
    applied_routes: Vec<RouteSpec>,
}

enum Answer {
    Ack(Lease),
    Nak,
    Timeout,
}

impl Machine {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps up to `d`, waking early when asked to stop.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(TICK));
        }
    }

    fn netlink(&mut self) -> Result<&mut Netlink, DhcpError> {
        if self.netlink.is_none() {
            self.netlink = Some(Netlink::new().map_err(|source| DhcpError::Apply {
                link: self.config.link.clone(),
                source,
            })?);
        }
        // Just set above when it was missing.
        self.netlink.as_mut().ok_or_else(|| DhcpError::Apply {
            link: self.config.link.clone(),
            source: NetlinkError::Socket(io::Error::other("no netlink socket")),
        })
    }

    fn message(&self, kind: MessageType, xid: u32, ciaddr: Ipv4Addr, broadcast: bool) -> Message {
        let mut msg = Message::default();
        msg.set_opcode(Opcode::BootRequest)
            .set_xid(xid)
            .set_chaddr(&self.config.mac)
            .set_ciaddr(ciaddr);
        if broadcast {
            // Ask for broadcast answers: without an address we cannot take unicast.
            msg.set_flags(Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.config.mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        if let Some(h) = &self.config.hostname {
            opts.insert(DhcpOption::Hostname(h.clone()));
        }
        if kind != MessageType::Release {
            opts.insert(DhcpOption::ParameterRequestList(vec![
                OptionCode::SubnetMask,
                OptionCode::ClasslessStaticRoute,
                OptionCode::Router,
                OptionCode::DomainNameServer,
                OptionCode::DomainName,
                OptionCode::DomainSearch,
                OptionCode::Hostname,
                OptionCode::InterfaceMtu,
                OptionCode::AddressLeaseTime,
                OptionCode::Renewal,
                OptionCode::Rebinding,
            ]));
            opts.insert(DhcpOption::MaxMessageSize(1500));
        }
        msg
    }

    fn encode(&self, msg: &Message) -> Result<Vec<u8>, DhcpError> {
        let mut buf = Vec::with_capacity(576);
        msg.encode(&mut Encoder::new(&mut buf))
            .map_err(|e| DhcpError::Encode {
                link: self.config.link.clone(),
                detail: e.to_string(),
            })?;
        Ok(buf)
    }

    /// The whole life of the client: get a lease, keep it, start over when lost.
    fn run(&mut self) -> Result<(), DhcpError> {
        let link = self.config.link.clone();
        let socket = PacketSocket::open(self.config.index).map_err(|source| DhcpError::Socket {
            link: link.clone(),
            source,
        })?;
        let mut backoff = FIRST_BACKOFF;
        while !self.stopped() {
            if self.lease.is_none() {
                match self.acquire(&socket)? {
                    Some(lease) => {
                        backoff = FIRST_BACKOFF;
                        self.bind(lease)?;
                    }
                    None => {
                        if self.stopped() {
                            break;
                        }
                        log::info!("{link}: no DHCP server answered; retrying in {backoff:?}");
                        self.sleep(jitter(backoff));
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            }
            self.maintain(&socket)?;
        }
        Ok(())
    }

    /// DISCOVER → OFFER → REQUEST → ACK, with one round of retransmissions.
    fn acquire(&mut self, socket: &PacketSocket) -> Result<Option<Lease>, DhcpError> {
        self.await_carrier();
        let xid = random_u32();
        let discover =
            self.encode(&self.message(MessageType::Discover, xid, Ipv4Addr::UNSPECIFIED, true))?;
        let mut wait = FIRST_BACKOFF;
        let mut offer = None;
        for _ in 0..3 {
            self.send_broadcast(socket, &discover, "DISCOVER")?;
            offer = self.await_reply(socket, xid, wait, |m| {
                m.opts().msg_type() == Some(MessageType::Offer)
            });
            if offer.is_some() || self.stopped() {
                break;
            }
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        let Some(offer) = offer else {
            return Ok(None);
        };
        let server = match offer.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => return Ok(None),
        };
        let offered = offer.yiaddr();
        log::info!("{}: offered {offered} by {server}", self.config.link);
        let mut request = self.message(MessageType::Request, xid, Ipv4Addr::UNSPECIFIED, true);
        request
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offered));
        request
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(server));
        let request = self.encode(&request)?;
        let mut wait = FIRST_BACKOFF;
        for _ in 0..3 {
            self.send_broadcast(socket, &request, "REQUEST")?;
            match self.await_answer(socket, xid, wait, Some(server)) {
                Answer::Ack(lease) => return Ok(Some(lease)),
                Answer::Nak => return Ok(None),
                Answer::Timeout if self.stopped() => return Ok(None),
                Answer::Timeout => wait = (wait * 2).min(MAX_BACKOFF),
            }
        }
        Ok(None)
    }

    /// A DISCOVER sent before the link has carrier is lost, and the first
    /// retry comes a second later: wait (briefly) for carrier first.
    fn await_carrier(&mut self) {
        let index = self.config.index;
        let end = Instant::now() + CARRIER_WAIT;
        while !self.stopped() && Instant::now() < end {
            let carrier = match self.netlink() {
                Ok(nl) => nl
                    .links()
                    .map(|links| links.iter().any(|l| l.index == index && l.carrier))
                    .unwrap_or(true),
                Err(_) => true,
            };
            if carrier {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Bound, renewing and rebinding: keeps the lease until it is lost or we stop.
    fn maintain(&mut self, socket: &PacketSocket) -> Result<(), DhcpError> {
        let Some((lease, since)) = self.lease.clone() else {
            return Ok(());
        };
        let t1 = since + Duration::from_secs(u64::from(lease.renew_secs));
        let t2 = since + Duration::from_secs(u64::from(lease.rebind_secs));
        let expiry = since + Duration::from_secs(u64::from(lease.lease_secs));
        let now = Instant::now();
        if now < t1 {
            self.sleep(t1 - now);
            return Ok(());
        }
        if now >= expiry {
            log::warn!("{}: lease on {} expired", self.config.link, lease.address);
            self.unbind();
            return Ok(());
        }
        let renewing = now < t2;
        let xid = random_u32();
        let msg =
            self.encode(&self.message(MessageType::Request, xid, lease.address.addr(), !renewing))?;
        // RFC 2131 4.4.5: wait half the time left to T2 (or expiry), at least 60 s;
        // shortened here so short test leases still get a few tries.
        let deadline = if renewing { t2 } else { expiry };
        let wait =
            ((deadline - now) / 2).clamp(Duration::from_millis(500), Duration::from_secs(60));
        if renewing {
            log::debug!(
                "{}: renewing {} with {}",
                self.config.link,
                lease.address,
                lease.server
            );
            if let Err(e) = self.send_unicast(&msg, lease.address.addr(), lease.server) {
                log::warn!("{e}");
            }
        } else {
            log::info!("{}: rebinding {}", self.config.link, lease.address);
            self.send_broadcast_from(socket, &msg, lease.address.addr(), "REQUEST")?;
        }
        match self.await_answer(socket, xid, wait.min(deadline - now), None) {
            Answer::Ack(new) => self.bind(new)?,
            Answer::Nak => {
                log::warn!(
                    "{}: server refused to extend {}",
                    self.config.link,
                    lease.address
                );
                self.unbind();
            }
            Answer::Timeout => {}
        }
        Ok(())
    }

    fn send_broadcast(
        &self,
        socket: &PacketSocket,
        payload: &[u8],
        what: &'static str,
    ) -> Result<(), DhcpError> {
        self.send_broadcast_from(socket, payload, Ipv4Addr::UNSPECIFIED, what)
    }

    fn send_broadcast_from(
        &self,
        socket: &PacketSocket,
        payload: &[u8],
        src: Ipv4Addr,
        what: &'static str,
    ) -> Result<(), DhcpError> {
        socket
            .send_broadcast(src, payload)
            .map_err(|source| DhcpError::Send {
                link: self.config.link.clone(),
                what,
                source,
            })
    }

    fn send_unicast(
        &self,
        payload: &[u8],
        src: Ipv4Addr,
        server: Ipv4Addr,
    ) -> Result<(), DhcpError> {
        let err = |source| DhcpError::Send {
            link: self.config.link.clone(),
            what: "unicast",
            source,
        };
        let socket = udp_socket(&self.config.link, src).map_err(err)?;
        socket
            .send_to(payload, SocketAddrV4::new(server, SERVER_PORT))
            .map_err(err)?;
        Ok(())
    }

    /// Waits for a reply to `xid` that `accept` likes.
    fn await_reply(
        &self,
        socket: &PacketSocket,
        xid: u32,
        wait: Duration,
        accept: impl Fn(&Message) -> bool,
    ) -> Option<Message> {
        let end = Instant::now() + wait;
        while !self.stopped() {
            let now = Instant::now();
            if now >= end {
                return None;
            }
            let Some(payload) = socket.recv((end - now).min(TICK)) else {
                continue;
            };
            let Some(msg) = decode(&payload) else {
                continue;
            };
            if msg.opcode() != Opcode::BootReply
                || msg.xid() != xid
                || msg.chaddr().get(..6) != Some(&self.config.mac[..])
            {
                continue;
            }
            if accept(&msg) {
                return Some(msg);
            }
        }
        None
    }

    fn await_answer(
        &self,
        socket: &PacketSocket,
        xid: u32,
        wait: Duration,
        server: Option<Ipv4Addr>,
    ) -> Answer {
        let reply = self.await_reply(socket, xid, wait, |m| {
            matches!(
                m.opts().msg_type(),
                Some(MessageType::Ack | MessageType::Nak)
            )
        });
        match reply {
            Some(m) if m.opts().msg_type() == Some(MessageType::Nak) => Answer::Nak,
            Some(m) => match Lease::from_ack(&m, server) {
                Some(lease) => Answer::Ack(lease),
                None => Answer::Timeout,
            },
            None => Answer::Timeout,
        }
    }

    /// Applies a new or renewed lease and tells the netconf loop.
    fn bind(&mut self, lease: Lease) -> Result<(), DhcpError> {
        let link = self.config.link.clone();
        let index = self.config.index;
        let old = self.lease.take().map(|(l, _)| l);
        if let Some(old) = &old {
            if old.address != lease.address {
                self.remove_lease(old);
            }
        }
        log::info!(
            "{link}: leased {} from {} for {} s",
            lease.address,
            lease.server,
            lease.lease_secs
        );
        let apply_mtu = self.config.apply_mtu;
        let metric = self.config.route_metric;
        let nl = self.netlink()?;
        let apply = |source| DhcpError::Apply {
            link: link.clone(),
            source,
        };
        if apply_mtu {
            if let Some(mtu) = lease.mtu {
                nl.set_link(index, None, Some(u32::from(mtu)), None)
                    .map_err(apply)?;
            }
        }
        // The lifetime makes the kernel drop the address at expiry even if
        // netconf is gone by then.
        nl.replace_address(index, IpNet::V4(lease.address), Some(lease.lease_secs))
            .map_err(apply)?;
        let mut routes = Vec::new();
        for (to, via) in lease.routes() {
            routes.push(RouteSpec {
                to: IpNet::V4(to),
                via: via.map(IpAddr::V4),
                oif: index,
                metric: Some(metric),
                src: Some(IpAddr::V4(lease.address.addr())),
                owner: Owner::Dhcp,
            });
        }
        // Routes without a gateway first: a gateway must be reachable before
        // a route through it is accepted.
        routes.sort_by_key(|r| r.via.is_some());
        for stale in self.applied_routes.clone() {
            if !routes.contains(&stale) {
                let _ = self.netlink()?.del_route(&stale);
            }
        }
        for route in &routes {
            if let Err(e) = self.netlink()?.replace_route(route) {
                log::warn!("{link}: {e}");
            }
        }
        self.applied_routes = routes;
        self.lease = Some((lease.clone(), Instant::now()));
        let _ = self.events.send(Event::Lease {
            link,
            lease: Some(lease),
        });
        Ok(())
    }

    fn remove_lease(&mut self, lease: &Lease) {
        let index = self.config.index;
        for route in std::mem::take(&mut self.applied_routes) {
            if let Ok(nl) = self.netlink() {
                let _ = nl.del_route(&route);
            }
        }
        if let Ok(nl) = self.netlink() {
            if let Err(e) = nl.del_address(index, IpNet::V4(lease.address)) {
                log::warn!("{}: {e}", self.config.link);
            }
        }
    }

    /// The lease is gone (expired or refused): remove it and start over.
    fn unbind(&mut self) {
        if let Some((lease, _)) = self.lease.take() {
            self.remove_lease(&lease);
            let _ = self.events.send(Event::Lease {
                link: self.config.link.clone(),
                lease: None,
            });
        }
    }

    /// Stopping: release the lease so the server can reuse the address at once.
    fn shutdown(&mut self) {
        if let Some((lease, _)) = self.lease.clone() {
            let mut release = self.message(
                MessageType::Release,
                random_u32(),
                lease.address.addr(),
                false,
            );
            release
                .opts_mut()
                .insert(DhcpOption::ServerIdentifier(lease.server));
            match self.encode(&release) {
                Ok(bytes) => {
                    if let Err(e) = self.send_unicast(&bytes, lease.address.addr(), lease.server) {
                        log::warn!("{e}");
                    } else {
                        log::info!("{}: released {}", self.config.link, lease.address);
                    }
                }
                Err(e) => log::warn!("{e}"),
            }
        }
        self.unbind();
    }
}

fn jitter(d: Duration) -> Duration {
    // Up to 10 % more, so interfaces and machines do not retry in lockstep.
    let extra = u64::from(random_u32() % 100) * d.as_millis() as u64 / 1000;
    d + Duration::from_millis(extra)
}

fn random_u32() -> u32 {
    // Only xids and jitter depend on this: unique is enough.
    u32::from_ne_bytes(berth_sys::random::unique())
}

fn udp_socket(link: &str, src: Ipv4Addr) -> io::Result<UdpSocket> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: the option value points at a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // Bound to the device, so the unicast leaves through the leased interface
    // even when another one has a route to the server.
    // SAFETY: the option value points at the name's bytes, of the given length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            link.as_ptr().cast(),
            link.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = CLIENT_PORT.to_be();
    addr.sin_addr = libc::in_addr {
        s_addr: u32::from(src).to_be(),
    };
    // SAFETY: `addr` is a valid sockaddr_in of the size passed.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UdpSocket::from(owned))
}

/// An `AF_PACKET`/`SOCK_DGRAM` socket bound to one interface: IPv4 packets in
/// and out, link-layer headers done by the kernel.
struct PacketSocket {
    fd: OwnedFd,
    index: u32,
}

const ETH_P_IP: u16 = 0x0800;

impl PacketSocket {
    fn open(index: u32) -> io::Result<PacketSocket> {
        // Protocol 0: the socket receives nothing until it is bound, so no
        // packet reaches it before the filter is attached.
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Only `cargo xtask bench network` turns the filter off, to measure
        // what it saves.
        if std::env::var_os(NO_FILTER_ENV).is_none() {
            attach_client_filter(&fd)?;
        }
        let addr = Self::address(index, [0; 8]);
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, index })
    }

    fn address(index: u32, hw: [u8; 8]) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_IP.to_be();
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr = hw;
        addr
    }

    fn send_broadcast(&self, src: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let packet = ip_udp_packet(src, Ipv4Addr::BROADCAST, payload);
        let addr = Self::address(self.index, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        // SAFETY: the buffer and address are live for the call and their sizes are passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One DHCP payload addressed to the client port, or `None` after `wait`.
    fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 4096];
        // SAFETY: the buffer is live and its length passed.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return None;
        }
        buf.truncate(n as usize);
        udp_payload(&buf, CLIENT_PORT).map(<[u8]>::to_vec)
    }
}

/// Set (to anything), the DHCP client's packet socket gets no filter: for the
/// network benchmark's comparison only.
pub const NO_FILTER_ENV: &str = "BERTH_NETCONF_BENCH_NO_DHCP_FILTER";

/// The classic BPF program the kernel runs on every IPv4 packet of the
/// interface before it is queued on the DHCP client's packet socket: only
/// unfragmented UDP to [`CLIENT_PORT`] passes. Without it every packet the
/// NIC carries (container traffic included) would be copied into netconf for
/// the life of the lease. The socket is `SOCK_DGRAM`, so offset 0 is the IP
/// header. [`udp_payload`] still checks what passes.
fn client_filter() -> [libc::sock_filter; 9] {
    const fn op(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
    const IPPROTO_UDP: u32 = 17;
    [
        // A = the IP protocol; not UDP: drop.
        op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 9),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            6,
            IPPROTO_UDP,
        ),
        // A = flags and fragment offset; a fragment after the first: drop.
        op(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 0, 0, 6),
        op(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, 4, 0, 0x1fff),
        // X = the IP header's length; A = the UDP destination port.
        op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, 0, 0, 0),
        op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, 0, 0, 2),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            CLIENT_PORT as u32,
        ),
        // Accept the whole packet.
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
        // Drop: every jump above that fails lands here.
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    ]
}

fn attach_client_filter(fd: &OwnedFd) -> io::Result<()> {
    let mut program = client_filter();
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points into `program`, which outlives the call; the
    // kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The DHCP message in a UDP payload, or `None` when it is not one.
fn decode(payload: &[u8]) -> Option<Message> {
    let kept = options_the_client_reads(payload)?;
    Message::decode(&mut Decoder::new(&kept)).ok()
}

/// The payload with only the options the client reads, each of a length its
/// definition allows; `None` when one of those has an impossible length or
/// the options are cut short. dhcproto 0.14 reads many options by their type
/// rather than their length byte: an option of the wrong length makes it
/// misread everything after it, and for some (rapid commit, client FQDN,
/// bulk leasequery) it asserts, a panic where debug assertions are on
/// (found by `cargo xtask fuzz` dhcp_packet). So it only ever sees options
/// already checked here.
fn options_the_client_reads(payload: &[u8]) -> Option<Vec<u8>> {
    // The fixed BOOTP fields (236 bytes) and the magic cookie.
    let mut kept = payload.get(..240)?.to_vec();
    let mut i = 240;
    loop {
        let code = *payload.get(i)?;
        match code {
            0 => i += 1,
            255 => break,
            _ => {
                let len = usize::from(*payload.get(i + 1)?);
                let data = payload.get(i + 2..i + 2 + len)?;
                let allowed = match code {
                    // Subnet mask, server identifier, lease time, T1, T2.
                    1 | 54 | 51 | 58 | 59 => Some(len == 4),
                    // Router, DNS servers: addresses.
                    3 | 6 => Some(len >= 4 && len % 4 == 0),
                    // Host name, domain name, domain search, classless routes.
                    12 | 15 | 119 | 121 => Some(len >= 1),
                    26 => Some(len == 2),
                    53 => Some(len == 1),
                    _ => None,
                };
                match allowed {
                    Some(true) => {
                        kept.extend_from_slice(&payload[i..i + 2]);
                        kept.extend_from_slice(data);
                    }
                    Some(false) => return None,
                    None => {}
                }
                i += 2 + len;
            }
        }
    }
    kept.push(255);
    Some(kept)
}

/// For `cargo xtask fuzz`: what the client does with a packet off the wire
/// — the UDP payload to port 68, the DHCP message in it, and the lease an
/// ACK would give (its routes and lifetimes). None of it may panic.
#[cfg(fuzzing)]
pub fn fuzz_packet(packet: &[u8]) {
    let Some(payload) = udp_payload(packet, CLIENT_PORT) else {
        return;
    };
    let Some(msg) = decode(payload) else {
        return;
    };
    let _ = msg.opts().msg_type();
    if let Some(lease) = Lease::from_ack(&msg, Some(Ipv4Addr::new(10, 0, 0, 1))) {
        let _ = lease.routes();
    }
}

/// The UDP payload of an IPv4 packet if it is UDP to `port`.
fn udp_payload(packet: &[u8], port: u16) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || *packet.get(9)? != 17 {
        return None;
    }
    // Fragments are not reassembled; DHCP answers fit in one packet.
    let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
    if frag & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    let udp = packet.get(ihl..total)?;
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    if dport != port {
        return None;
    }
    let ulen = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    udp.get(8..ulen.min(udp.len()))
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        let mut it = chunk.chunks(2);
        for pair in &mut it {
            let word = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], 0])
            };
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ip_udp_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]); // IPv4, 20-byte header; TOS low delay like other clients
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]); // id, flags, fragment offset
    p.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (below)
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ip_sum = checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    udp.extend_from_slice(&SERVER_PORT.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let mut udp_sum = checksum(&[&pseudo, &udp]);
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
    p.extend_from_slice(&udp);
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn packet_round_trip() {
        let p = ip_udp_packet(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, b"hello");
        assert_eq!(checksum(&[&p[..20]]), 0, "IP header checksum verifies");
        // Swap ports so it looks like an answer to the client port.
        let mut answer = p.clone();
        answer[20..22].copy_from_slice(&SERVER_PORT.to_be_bytes());
        answer[22..24].copy_from_slice(&CLIENT_PORT.to_be_bytes());
        assert_eq!(udp_payload(&answer, CLIENT_PORT), Some(&b"hello"[..]));
        assert_eq!(udp_payload(&p, CLIENT_PORT), None);
        assert_eq!(udp_payload(&p[..10], CLIENT_PORT), None);
    }

    /// Whether anything is queued on the packet socket within `wait`.
    fn queued(socket: &PacketSocket, wait: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: socket.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) } <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 65536];
        // SAFETY: the buffer is live and its length passed.
        let n = unsafe {
            libc::recv(
                socket.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        buf.truncate(n.max(0) as usize);
        Some(buf)
    }

    /// The kernel runs the client's filter: on loopback, a flood of UDP to
    /// another port and a TCP stream never reach the packet socket; a UDP
    /// datagram to port 68 does.
    #[test]
    fn the_packet_socket_gets_only_udp_to_the_client_port() {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            berth_testkit::skip!("packet sockets need CAP_NET_RAW (run as root)");
            return;
        }
        let socket = PacketSocket::open(1).expect("packet socket on lo");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("sink");
        for _ in 0..200 {
            udp.send_to(&[0u8; 1200], sink.local_addr().expect("addr"))
                .expect("send");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
        let mut conn =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        std::io::Write::write_all(&mut conn, &[1u8; 100_000]).expect("tcp write");
        assert_eq!(
            queued(&socket, Duration::from_millis(300)),
            None,
            "the packet socket received traffic not for the DHCP client"
        );
        udp.send_to(b"dhcp-answer", ("127.0.0.1", CLIENT_PORT))
            .expect("send to 68");
        let got = queued(&socket, Duration::from_secs(5)).expect("the datagram to port 68");
        assert_eq!(udp_payload(&got, CLIENT_PORT), Some(&b"dhcp-answer"[..]));
    }

    /// The inputs `cargo xtask fuzz` found made dhcproto panic (debug
    /// builds): a bulk-leasequery option 152 of length 0, an option 27 of
    /// length 27 that it reads as one byte and so misreads the rest. Options
    /// the client does not read never reach dhcproto; one it reads with an
    /// impossible length drops the packet.
    #[test]
    fn only_checked_options_reach_the_decoder() {
        let mut header = vec![0u8; 236];
        header[0] = 2; // BOOTREPLY
        header.extend_from_slice(&[99, 130, 83, 99]);
        let mut confusing = vec![27u8, 27];
        confusing.extend_from_slice(&[153; 27]);
        for junk in [
            &[152u8, 0][..],
            &[80, 1, 0],
            &[94, 1, 0],
            &[81, 0],
            &confusing,
        ] {
            let payload = [&header[..], junk, &[53, 1, 5, 54, 4, 10, 0, 0, 1, 255]].concat();
            let msg = decode(&payload).unwrap_or_else(|| panic!("{junk:?}"));
            assert_eq!(msg.opts().msg_type(), Some(MessageType::Ack));
        }
        for bad in [
            &[53u8, 2, 5, 5, 255][..],
            &[1, 3, 255, 255, 0, 255],
            &[3, 5, 1, 2, 3, 4, 5, 255],
        ] {
            let payload = [&header[..], bad].concat();
            assert!(decode(&payload).is_none(), "{bad:?}");
        }
        // Cut short.
        assert!(decode(&[&header[..], &[54, 4, 10]].concat()).is_none());
    }

    fn ack(opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_yiaddr(Ipv4Addr::new(10, 0, 0, 9));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    #[test]
    fn lease_from_ack() {
        let m = ack(vec![
            DhcpOption::MessageType(MessageType::Ack),
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)),
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
            DhcpOption::AddressLeaseTime(120),
            DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 1)]),
            DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 0, 53)]),
            DhcpOption::DomainName("example.test".into()),
            DhcpOption::InterfaceMtu(1400),
            DhcpOption::Hostname("node1".into()),
        ]);
        let lease = Lease::from_ack(&m, None).expect("lease");
        assert_eq!(lease.address, "10.0.0.9/24".parse::<Ipv4Net>().unwrap());
        assert_eq!((lease.renew_secs, lease.rebind_secs), (60, 105));
        assert_eq!(lease.search, vec!["example.test".to_string()]);
        assert_eq!(lease.mtu, Some(1400));
        assert_eq!(lease.hostname.as_deref(), Some("node1"));
        assert_eq!(
            lease.routes(),
            vec![(
                "0.0.0.0/0".parse().unwrap(),
                Some(Ipv4Addr::new(10, 0, 0, 1))
            )]
        );
    }

    #[test]
    fn classless_routes_win_over_router() {
        let m = ack(vec![
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)),
            DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 1)]),
            DhcpOption::ClasslessStaticRoute(vec![
                (
                    "10.99.0.0/16".parse().unwrap(),
                    Ipv4Addr::new(10, 0, 0, 254),
                ),
                ("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 2)),
            ]),
        ]);
        let lease = Lease::from_ack(&m, None).expect("lease");
        assert_eq!(
            lease.routes(),
            vec![
                (
                    "10.99.0.0/16".parse().unwrap(),
                    Some(Ipv4Addr::new(10, 0, 0, 254))
                ),
                (
                    "0.0.0.0/0".parse().unwrap(),
                    Some(Ipv4Addr::new(10, 0, 0, 2))
                ),
            ]
        );
        // No server id and no fallback: not a usable ACK.
        let m = ack(vec![DhcpOption::MessageType(MessageType::Ack)]);
        assert!(Lease::from_ack(&m, None).is_none());
    }
}
