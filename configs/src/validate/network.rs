//! `network`: interfaces, addresses, bonds and bridges.

use super::*;

impl Validator<'_> {
    pub(super) fn network(&mut self, config: &CloudConfig) {
        let net = &config.berth.network;
        for (i, ns) in net.dns.nameservers.iter().enumerate() {
            if ns.parse::<IpAddr>().is_err() {
                self.error(
                    &["berth", "network", "dns", "nameservers", &i.to_string()],
                    format!("`{ns}` is not an IP address"),
                );
            }
        }
        let mut bond_of: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (name, iface) in &net.interfaces {
            self.interface(name, iface);
            let iface_path = ["berth", "network", "interfaces", name.as_str()];
            let mut claim = |member: &str, bond: &str, via: &str, v: &mut Self| {
                if let Some((other, _)) = bond_of.get(member) {
                    if other != bond {
                        v.error(
                            &[&iface_path[..], &[via]].concat(),
                            format!("`{member}` is a member of two bonds: `{other}` and `{bond}`"),
                        );
                    }
                } else {
                    bond_of.insert(member.to_string(), (bond.to_string(), name.clone()));
                }
            };
            if let Some(bond) = &iface.bond {
                claim(name, bond, "bond", self);
            }
            if !iface.bond_opts.is_empty() || name.starts_with("bond") {
                for member in &iface.members {
                    claim(member, name, "members", self);
                }
            }
        }
    }

    fn interface(&mut self, name: &str, iface: &Interface) {
        let iface_path = ["berth", "network", "interfaces", name];
        let p = |k: &'static str| ["berth", "network", "interfaces", name, k];
        if let Some(mac) = name
            .strip_prefix("mac:")
            .or_else(|| name.strip_prefix("mac="))
        {
            let ok = mac.split(':').count() == 6
                && mac
                    .split(':')
                    .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                self.error(
                    &["berth", "network", "interfaces", name],
                    format!("`{mac}` is not a MAC address"),
                );
            }
        } else if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            self.error(
                &["berth", "network", "interfaces", name],
                format!("`{name}` is not an interface name, glob or `mac:` match"),
            );
        }
        if let Some(a) = &iface.address {
            if let Err(e) = check_cidr(a) {
                self.error(&p("address"), e.to_string());
            }
        }
        for (i, a) in iface.addresses.iter().enumerate() {
            if let Err(e) = check_cidr(a) {
                self.error(
                    &[&iface_path[..], &["addresses", &i.to_string()]].concat(),
                    e.to_string(),
                );
            }
        }
        let has_static = iface.address.is_some() || !iface.addresses.is_empty();
        if iface.dhcp == Some(true) && has_static {
            self.warn(
                &p("dhcp"),
                format!("`{name}` has both DHCP and static addresses; both will be applied"),
            );
        }
        if let Some(gw) = &iface.gateway {
            if gw.parse::<Ipv4Addr>().is_err() {
                self.error(&p("gateway"), format!("`{gw}` is not an IPv4 address"));
            }
        }
        if let Some(gw) = &iface.gateway_ipv6 {
            if gw.parse::<Ipv6Addr>().is_err() {
                self.error(&p("gateway_ipv6"), format!("`{gw}` is not an IPv6 address"));
            }
        }
        if let Some(mtu) = iface.mtu {
            if !(68..=65535).contains(&mtu) {
                self.error(&p("mtu"), format!("MTU {mtu} is outside 68..65535"));
            }
        }
        for (i, route) in iface.routes.iter().enumerate() {
            let index = i.to_string();
            if route.to != "default" {
                if let Err(e) = route.to.parse::<IpNet>() {
                    self.error(
                        &[&iface_path[..], &["routes", &index, "to"]].concat(),
                        format!("`{}` is not `default` or a CIDR network: {e}", route.to),
                    );
                }
            }
            if let Some(via) = &route.via {
                if via.parse::<IpAddr>().is_err() {
                    self.error(
                        &[&iface_path[..], &["routes", &index, "via"]].concat(),
                        format!("`{via}` is not an IP address"),
                    );
                }
            }
        }
        if let Some(mode) = iface.bond_opts.get("mode") {
            if !BOND_MODES.contains(&mode.0.as_str()) {
                self.error(
                    &[&iface_path[..], &["bond_opts", "mode"]].concat(),
                    format!(
                        "`{mode}` is not a bond mode; use one of {}",
                        BOND_MODES[..7].join(", ")
                    ),
                );
            }
        }
        for (key, value) in &iface.bond_opts {
            let numeric = [
                "miimon",
                "updelay",
                "downdelay",
                "arp_interval",
                "min_links",
            ];
            if numeric.contains(&key.as_str()) && value.0.parse::<u32>().is_err() {
                self.error(
                    &[&iface_path[..], &["bond_opts", key]].concat(),
                    format!("`{value}` must be a whole number"),
                );
            }
        }
        let mut vlan_ids = BTreeSet::new();
        for (i, vlan) in iface.vlans.iter().enumerate() {
            if !(1..=4094).contains(&vlan.id) {
                self.error(
                    &[&iface_path[..], &["vlans", &i.to_string()]].concat(),
                    format!("VLAN id {} is outside 1..4094", vlan.id),
                );
            } else if !vlan_ids.insert(vlan.id) {
                self.error(
                    &[&iface_path[..], &["vlans", &i.to_string()]].concat(),
                    format!("VLAN id {} is listed twice", vlan.id),
                );
            }
        }
        if let (Some(Bridge::MemberOf(_)), Some(_)) = (&iface.bridge, &iface.bond) {
            self.error(
                &p("bridge"),
                format!("`{name}` cannot be in a bond and a bridge at once"),
            );
        }
    }
}
