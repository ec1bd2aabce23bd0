//! The client's state machine: discover, request, bound, renew, rebind;
//! the lease applied through netlink.

use super::*;

pub(super) struct Machine {
    pub(super) config: ClientConfig,
    pub(super) events: Sender<Event>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) lease: Option<(Lease, Instant)>,
    pub(super) netlink: Option<Netlink>,
    pub(super) applied_routes: Vec<RouteSpec>,
}

pub(super) enum Answer {
    Ack(Lease),
    Nak,
    Timeout,
}

impl Machine {
    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps up to `d`, waking at once when asked to stop (the client's
    /// `halt` unparks this thread after it sets the flag).
    pub(super) fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::park_timeout(end - now);
        }
    }

    pub(super) fn netlink(&mut self) -> Result<&mut Netlink, DhcpError> {
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

    pub(super) fn message(
        &self,
        kind: MessageType,
        xid: u32,
        ciaddr: Ipv4Addr,
        broadcast: bool,
    ) -> Message {
        let mut msg = blank_message(xid);
        msg.set_chaddr(&self.config.mac).set_ciaddr(ciaddr);
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

    pub(super) fn encode(&self, msg: &Message) -> Result<Vec<u8>, DhcpError> {
        let mut buf = Vec::with_capacity(576);
        msg.encode(&mut Encoder::new(&mut buf))
            .map_err(|e| DhcpError::Encode {
                link: self.config.link.clone(),
                detail: e.to_string(),
            })?;
        Ok(buf)
    }

    /// The whole life of the client: get a lease, keep it, start over when lost.
    pub(super) fn run(&mut self) -> Result<(), DhcpError> {
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
    pub(super) fn acquire(&mut self, socket: &PacketSocket) -> Result<Option<Lease>, DhcpError> {
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
    pub(super) fn await_carrier(&mut self) {
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
    pub(super) fn maintain(&mut self, socket: &PacketSocket) -> Result<(), DhcpError> {
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

    pub(super) fn send_broadcast(
        &self,
        socket: &PacketSocket,
        payload: &[u8],
        what: &'static str,
    ) -> Result<(), DhcpError> {
        self.send_broadcast_from(socket, payload, Ipv4Addr::UNSPECIFIED, what)
    }

    pub(super) fn send_broadcast_from(
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

    pub(super) fn send_unicast(
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
    pub(super) fn await_reply(
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

    pub(super) fn await_answer(
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
    pub(super) fn bind(&mut self, lease: Lease) -> Result<(), DhcpError> {
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

    pub(super) fn remove_lease(&mut self, lease: &Lease) {
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
    pub(super) fn unbind(&mut self) {
        if let Some((lease, _)) = self.lease.take() {
            self.remove_lease(&lease);
            let _ = self.events.send(Event::Lease {
                link: self.config.link.clone(),
                lease: None,
            });
        }
    }

    /// Stopping: release the lease so the server can reuse the address at once.
    pub(super) fn shutdown(&mut self) {
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

pub(super) fn jitter(d: Duration) -> Duration {
    // Up to 10 % more, so interfaces and machines do not retry in lockstep.
    let extra = u64::from(random_u32() % 100) * d.as_millis() as u64 / 1000;
    d + Duration::from_millis(extra)
}

/// An empty BOOTREQUEST with `xid`, decoded from its wire form. dhcproto's
/// own constructors draw an xid from `rand`, whose getrandom(2) waits for the
/// kernel's pool: at boot under QEMU (no RDRAND, no virtio-rng) that held
/// the first DISCOVER back by about a second.
pub(super) fn blank_message(xid: u32) -> Message {
    // op, htype (Ethernet), hlen, hops, xid, then zeros up to the magic cookie.
    let mut wire = [0u8; 241];
    wire[..4].copy_from_slice(&[1, 1, 6, 0]);
    wire[4..8].copy_from_slice(&xid.to_be_bytes());
    wire[236..240].copy_from_slice(&[99, 130, 83, 99]);
    wire[240] = 255; // the end option
    Message::decode(&mut Decoder::new(&wire)).expect("a fixed, valid BOOTREQUEST")
}

pub(super) fn random_u32() -> u32 {
    // Only xids and jitter depend on this: unique is enough.
    u32::from_ne_bytes(berth_sys::random::unique())
}
