//! A small synchronous rtnetlink client: one request at a time, each answered
//! by its ACK or dump. netconf runs a handful of requests per change, so a
//! blocking socket per thread is simpler than an async runtime and keeps the
//! static binary small.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope, CacheInfo};
use netlink_packet_route::link::{
    BondMode, InfoBond, InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkLayerType, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("netlink: {op}: {source}")]
    Request {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink: {op}: cannot decode the kernel's answer: {detail}")]
    Decode { op: String, detail: String },
}

impl NetlinkError {
    /// The errno the kernel answered with, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    /// `bond`, `bridge`, `vlan`, `veth`, … (none for plain hardware).
    pub kind: Option<String>,
    pub master: Option<u32>,
    /// The lower link of a VLAN.
    pub parent: Option<u32>,
    pub vlan_id: Option<u16>,
    pub mtu: u32,
    pub up: bool,
    pub carrier: bool,
    pub loopback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub index: u32,
    pub net: IpNet,
    /// Seconds left, `None` for forever.
    pub valid_lft: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub to: IpNet,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
    pub metric: u32,
    /// `kernel`, `static`, `dhcp`, `boot`, `ra`, …
    pub protocol: String,
    pub src: Option<IpAddr>,
}

/// Routes netconf adds are tagged with a protocol, so it can find its own again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Static,
    Dhcp,
}

impl Owner {
    fn protocol(self) -> RouteProtocol {
        match self {
            Owner::Static => RouteProtocol::Static,
            Owner::Dhcp => RouteProtocol::Dhcp,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub to: IpNet,
    pub via: Option<IpAddr>,
    pub oif: u32,
    pub metric: Option<u32>,
    pub src: Option<IpAddr>,
    pub owner: Owner,
}

#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    /// The socket's port id, which the kernel puts in the notifications of
    /// the changes this socket asks for.
    port: u32,
    /// Requests that change something, sent so far (answered or refused).
    changes: u64,
}

fn protocol_name(p: RouteProtocol) -> String {
    match p {
        RouteProtocol::Kernel => "kernel".into(),
        RouteProtocol::Static => "static".into(),
        RouteProtocol::Dhcp => "dhcp".into(),
        RouteProtocol::Boot => "boot".into(),
        RouteProtocol::Ra => "ra".into(),
        other => format!("{}", u8::from(other)),
    }
}

impl Netlink {
    pub fn new() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        let port = socket
            .bind_auto()
            .map_err(NetlinkError::Socket)?
            .port_number();
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        // Extended acks carry the kernel's reason text; best effort, old kernels lack it.
        let _ = socket.set_ext_ack(true);
        Ok(Netlink {
            socket,
            seq: 0,
            port,
            changes: 0,
        })
    }

    /// The port id the kernel gave this socket.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// How many requests to change something this socket has sent.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Sends one request and collects its answers until the ACK or the end of the dump.
    fn request(
        &mut self,
        op: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        let err = |source| NetlinkError::Request {
            op: op.to_string(),
            source,
        };
        self.socket.send(&buf, 0).map_err(err)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        if !dump {
            self.changes += 1;
        }
        let mut out = Vec::new();
        let mut rx: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            rx.clear();
            self.socket.recv(&mut rx, 0).map_err(err)?;
            let mut offset = 0;
            while offset < rx.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[offset..])
                    .map_err(|e| NetlinkError::Decode {
                        op: op.to_string(),
                        detail: e.to_string(),
                    })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    // A late answer to an earlier request: not ours.
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        None => {
                            if !dump {
                                return Ok(out);
                            }
                        }
                        Some(code) => return Err(err(io::Error::from_raw_os_error(-code.get()))),
                    },
                    _ => {}
                }
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let answers = self.request(
            "list links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from(l)),
                _ => None,
            })
            .collect())
    }

    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    pub fn addresses(&mut self) -> Result<Vec<Address>> {
        let answers = self.request(
            "list addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            let mut addr = None;
            let mut local = None;
            let mut valid = None;
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Address(ip) => addr = Some(*ip),
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::CacheInfo(c) => {
                        valid = (c.ifa_valid != u32::MAX).then_some(c.ifa_valid)
                    }
                    _ => {}
                }
            }
            // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
            if let Some(ip) = local.or(addr) {
                if let Ok(net) = IpNet::new(ip, a.header.prefix_len) {
                    out.push(Address {
                        index: a.header.index,
                        net,
                        valid_lft: valid,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Routes of the main table, both families.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let answers = self.request(
                "list routes",
                RouteNetlinkMessage::GetRoute(query),
                NLM_F_DUMP,
            )?;
            for m in answers {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                if r.header.kind != RouteType::Unicast {
                    continue;
                }
                let mut table = u32::from(r.header.table);
                let mut dst = None;
                let mut via = None;
                let mut oif = None;
                let mut metric = 0;
                let mut src = None;
                for attr in &r.attributes {
                    match attr {
                        RouteAttribute::Table(t) => table = *t,
                        RouteAttribute::Destination(a) => dst = route_ip(a),
                        RouteAttribute::Gateway(a) => via = route_ip(a),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        RouteAttribute::Priority(p) => metric = *p,
                        RouteAttribute::PrefSource(a) => src = route_ip(a),
                        _ => {}
                    }
                }
                if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                    continue;
                }
                let dst = dst.unwrap_or(match family {
                    AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
                    _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                });
                let Ok(to) = IpNet::new(dst, r.header.destination_prefix_length) else {
                    continue;
                };
                out.push(Route {
                    to,
                    via,
                    oif,
                    metric,
                    protocol: protocol_name(r.header.protocol),
                    src,
                });
            }
        }
        Ok(out)
    }

    /// Brings a link up or down, changes its MTU, or (un)enslaves it.
    pub fn set_link(
        &mut self,
        index: u32,
        up: Option<bool>,
        mtu: Option<u32>,
        master: Option<Option<u32>>,
    ) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(up) = up {
            msg.header.change_mask = LinkFlags::Up;
            if up {
                msg.header.flags = LinkFlags::Up;
            }
        }
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = master {
            // Index 0 releases the link from its master.
            msg.attributes
                .push(LinkAttribute::Controller(master.unwrap_or(0)));
        }
        self.request(
            &format!("change link {index}"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )?;
        Ok(())
    }

    fn new_link(
        &mut self,
        op: &str,
        name: &str,
        mut info: Vec<LinkInfo>,
        parent: Option<u32>,
    ) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(parent) = parent {
            msg.attributes.push(LinkAttribute::Link(parent));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(std::mem::take(&mut info)));
        self.request(
            op,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Creates a bond with the options netlink carries; the rest go through sysfs.
    pub fn add_bond(&mut self, name: &str, opts: &BTreeMap<String, String>) -> Result<()> {
        let mut data = Vec::new();
        for (key, value) in opts {
            let number = value.parse::<u32>().ok();
            match (key.as_str(), number) {
                ("mode", _) => {
                    if let Some(mode) = bond_mode(value) {
                        data.push(InfoBond::Mode(mode));
                    }
                }
                ("miimon", Some(n)) => data.push(InfoBond::MiiMon(n)),
                ("updelay", Some(n)) => data.push(InfoBond::UpDelay(n)),
                ("downdelay", Some(n)) => data.push(InfoBond::DownDelay(n)),
                ("min_links", Some(n)) => data.push(InfoBond::MinLinks(n)),
                ("arp_interval", Some(n)) => data.push(InfoBond::ArpInterval(n)),
                _ => {}
            }
        }
        let mut info = vec![LinkInfo::Kind(InfoKind::Bond)];
        if !data.is_empty() {
            info.push(LinkInfo::Data(InfoData::Bond(data)));
        }
        self.new_link(&format!("create bond {name}"), name, info, None)
    }

    pub fn add_bridge(&mut self, name: &str) -> Result<()> {
        self.new_link(
            &format!("create bridge {name}"),
            name,
            vec![LinkInfo::Kind(InfoKind::Bridge)],
            None,
        )
    }

    pub fn add_vlan(&mut self, name: &str, parent: u32, id: u16) -> Result<()> {
        self.new_link(
            &format!("create VLAN {name}"),
            name,
            vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)])),
            ],
            Some(parent),
        )
    }

    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(
            &format!("delete link {index}"),
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_ACK,
        )?;
        Ok(())
    }

    fn address_message(index: u32, net: IpNet) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = net.prefix_len();
        msg.header.scope = AddressScope::Universe;
        msg.header.family = match net {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        if let IpNet::V4(v4) = net {
            if v4.prefix_len() < 31 {
                msg.attributes
                    .push(AddressAttribute::Broadcast(v4.broadcast()));
            }
        }
        msg
    }

    /// Adds or refreshes an address; `lifetime` in seconds (`None`: forever).
    /// With a lifetime the kernel itself removes the address when it runs out,
    /// so a lease cannot outlive netconf.
    pub fn replace_address(&mut self, index: u32, net: IpNet, lifetime: Option<u32>) -> Result<()> {
        let mut msg = Self::address_message(index, net);
        if let Some(secs) = lifetime {
            let mut info = CacheInfo::default();
            info.ifa_preferred = secs;
            info.ifa_valid = secs;
            msg.attributes.push(AddressAttribute::CacheInfo(info));
        }
        self.request(
            &format!("add address {net} to link {index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    pub fn del_address(&mut self, index: u32, net: IpNet) -> Result<()> {
        let msg = Self::address_message(index, net);
        match self.request(
            &format!("remove address {net} from link {index}"),
            RouteNetlinkMessage::DelAddress(msg),
            NLM_F_ACK,
        ) {
            // Already gone (expired, or removed with its link): the goal is met.
            Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }

    fn route_message(spec: &RouteSpec) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match spec.to {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = spec.to.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = spec.owner.protocol();
        msg.header.kind = RouteType::Unicast;
        // A route without a gateway is on-link.
        msg.header.scope = if spec.via.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if spec.to.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    spec.to.network(),
                )));
        }
        if let Some(via) = spec.via {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(via)));
        }
        if let Some(src) = spec.src {
            msg.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
        }
        msg.attributes.push(RouteAttribute::Oif(spec.oif));
        if let Some(metric) = spec.metric {
            msg.attributes.push(RouteAttribute::Priority(metric));
        }
        msg
    }

    pub fn replace_route(&mut self, spec: &RouteSpec) -> Result<()> {
        let msg = Self::route_message(spec);
        self.request(
            &format!(
                "add route to {} via {:?} on link {}",
                spec.to, spec.via, spec.oif
            ),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    pub fn del_route(&mut self, spec: &RouteSpec) -> Result<()> {
        let msg = Self::route_message(spec);
        match self.request(
            &format!("remove route to {} on link {}", spec.to, spec.oif),
            RouteNetlinkMessage::DelRoute(msg),
            NLM_F_ACK,
        ) {
            Err(e) if e.errno() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The notification groups that say a link, an address or a route changed.
const CHANGE_GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV6_ROUTE) as u32;

/// Calls `changed` on a thread of its own whenever the kernel announces a
/// change of a link, an address or a route that the socket with port id
/// `own` did not ask for: a link plugged in or losing its carrier, an
/// address or route someone else changed. A change `own` asked for carries
/// its port id and wakes nobody, so netconf's own work cannot wake it in a
/// loop. Missed notifications (the socket's buffer overran) count as a
/// change. The thread ends on any other error, and says so.
pub fn follow_changes(own: u32, changed: impl Fn() + Send + 'static) -> Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
    socket
        .bind(&SocketAddr::new(0, CHANGE_GROUPS))
        .map_err(NetlinkError::Socket)?;
    std::thread::Builder::new()
        .name("netlink-changes".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
            loop {
                buf.clear();
                match socket.recv(&mut buf, 0) {
                    Ok(_) if announces_other_than(&buf, own) => changed(),
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed(),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!(
                            "following the kernel's network changes: {e}; they are seen at the next look"
                        );
                        return;
                    }
                }
            }
        })
        .map_err(NetlinkError::Socket)?;
    Ok(())
}

/// Whether a datagram of notifications holds one not sent for port `own`.
fn announces_other_than(datagram: &[u8], own: u32) -> bool {
    // struct nlmsghdr: length, type, flags, sequence, port id.
    let mut rest = datagram;
    while rest.len() >= 16 {
        let word =
            |at: usize| u32::from_ne_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let len = word(0) as usize;
        if word(12) != own {
            return true;
        }
        let step = (len + 3) & !3;
        if len < 16 || step > rest.len() {
            break;
        }
        rest = &rest[step..];
    }
    false
}

pub fn bond_mode(text: &str) -> Option<BondMode> {
    Some(match text {
        "balance-rr" | "0" => BondMode::BalanceRr,
        "active-backup" | "1" => BondMode::ActiveBackup,
        "balance-xor" | "2" => BondMode::BalanceXor,
        "broadcast" | "3" => BondMode::Broadcast,
        "802.3ad" | "4" => BondMode::Ieee8023Ad,
        "balance-tlb" | "5" => BondMode::BalanceTlb,
        "balance-alb" | "6" => BondMode::BalanceAlb,
        _ => return None,
    })
}

fn link_from(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        kind: None,
        master: None,
        parent: None,
        vlan_id: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        loopback: msg.header.link_layer_type == LinkLayerType::Loopback,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(a) => {
                if let Ok(mac) = <[u8; 6]>::try_from(a.as_slice()) {
                    link.mac = Some(mac);
                }
            }
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Controller(m) => link.master = Some(m),
            LinkAttribute::Link(p) => link.parent = Some(p),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::Data(InfoData::Vlan(vlan)) => {
                            for v in vlan {
                                if let InfoVlan::Id(id) = v {
                                    link.vlan_id = Some(id);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification header: length, type, flags, sequence, port id.
    fn header(len: u32, port: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&len.to_ne_bytes());
        h.extend_from_slice(&(libc::RTM_NEWADDR).to_ne_bytes());
        h.extend_from_slice(&0u16.to_ne_bytes());
        h.extend_from_slice(&0u32.to_ne_bytes());
        h.extend_from_slice(&port.to_ne_bytes());
        h.resize(len as usize, 0);
        h
    }

    #[test]
    fn only_news_of_other_senders_counts() {
        let own = 4242;
        assert!(!announces_other_than(&header(20, own), own));
        assert!(
            announces_other_than(&header(20, 0), own),
            "the kernel's own"
        );
        let mut both = header(20, own);
        both.extend(header(24, 7));
        assert!(announces_other_than(&both, own), "the second of two");
        assert!(!announces_other_than(&[0u8; 8], own), "too short to be one");
    }
}
