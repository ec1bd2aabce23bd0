//! When a link is ready, the routes its static config asks for, and bond
//! options set through sysfs.

use super::*;

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
pub(super) fn static_routes(lp: &LinkPlan, index: u32) -> Vec<RouteSpec> {
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
pub(super) fn bond_sysfs_opts(bond: &str, opts: &BTreeMap<String, String>) {
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
