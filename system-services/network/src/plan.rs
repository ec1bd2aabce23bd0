//! The pure part of netconf: from `berth.network` and the links that exist now,
//! what every link should look like. Applying it (netlink) and DHCP are elsewhere,
//! so this can be tested without privileges.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use berth_configs::model::{Bridge, Interface, Network};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::matching::{best_match, Matcher};

/// A link as netconf sees it when planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLink {
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub loopback: bool,
}

/// A link netconf creates and owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum VirtualKind {
    /// Options as written in `bond_opts` (`mode`, `miimon`, …).
    Bond {
        opts: BTreeMap<String, String>,
    },
    Bridge,
    Vlan {
        parent: String,
        id: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePlan {
    pub to: IpNet,
    pub via: Option<IpAddr>,
    pub metric: Option<u32>,
}

/// What one link should look like.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPlan {
    /// The config key that configures it (empty for a link only brought up).
    pub key: String,
    pub addresses: Vec<IpNet>,
    pub gateway: Option<Ipv4Addr>,
    pub gateway_ipv6: Option<Ipv6Addr>,
    pub routes: Vec<RoutePlan>,
    pub mtu: Option<u32>,
    pub dhcp: bool,
    /// The bond or bridge this link is enslaved to.
    pub master: Option<String>,
    /// IPv6 router advertisements (SLAAC) unless IPv6 is configured statically.
    pub accept_ra: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Links to create (or keep), by name.
    pub virtuals: BTreeMap<String, VirtualKind>,
    /// Every link to configure, by name, including the virtual ones.
    pub links: BTreeMap<String, LinkPlan>,
    /// Links that must have their address before netconf is ready.
    pub required: BTreeSet<String>,
    /// Required config keys that match no link yet (hotplug): not ready until they do.
    pub required_unmatched: Vec<String>,
    /// Exact-name keys with no link yet; waited for, not an error.
    pub waiting: Vec<String>,
}

/// Parses `address`/`addresses`; validation has already rejected bad ones, so a
/// bad one here is skipped with a warning rather than stopping the others.
fn addresses(key: &str, iface: &Interface) -> Vec<IpNet> {
    iface
        .address
        .iter()
        .chain(iface.addresses.iter())
        .filter_map(|a| match a.parse::<IpNet>() {
            Ok(net) => Some(net),
            Err(e) => {
                log::warn!("{key}: ignoring address `{a}`: {e}");
                None
            }
        })
        .collect()
}

fn routes(key: &str, iface: &Interface) -> Vec<RoutePlan> {
    iface
        .routes
        .iter()
        .filter_map(|r| {
            let to = if r.to == "default" {
                // `default` follows the gateway's family; IPv4 when there is none.
                match r.via.as_deref().map(str::parse::<IpAddr>) {
                    Some(Ok(IpAddr::V6(_))) => "::/0".parse().ok(),
                    _ => "0.0.0.0/0".parse().ok(),
                }
            } else {
                r.to.parse::<IpNet>().ok().map(|n| n.trunc())
            };
            let via = match r.via.as_deref().map(str::parse::<IpAddr>) {
                Some(Ok(ip)) => Some(ip),
                Some(Err(_)) => None,
                None => None,
            };
            match to {
                Some(to) => Some(RoutePlan {
                    to,
                    via,
                    metric: r.metric,
                }),
                None => {
                    log::warn!("{key}: ignoring route to `{}`", r.to);
                    None
                }
            }
        })
        .collect()
}

fn link_plan(key: &str, iface: &Interface) -> LinkPlan {
    let addresses = addresses(key, iface);
    let accept_ra = !addresses.iter().any(|a| a.addr().is_ipv6()) && iface.gateway_ipv6.is_none();
    LinkPlan {
        key: key.to_string(),
        gateway: iface.gateway.as_deref().and_then(|g| g.parse().ok()),
        gateway_ipv6: iface.gateway_ipv6.as_deref().and_then(|g| g.parse().ok()),
        routes: routes(key, iface),
        mtu: iface.mtu,
        dhcp: iface.dhcp == Some(true),
        addresses,
        master: None,
        accept_ra,
    }
}

fn is_bond(name: &str, iface: &Interface) -> bool {
    !iface.bond_opts.is_empty() || (name.starts_with("bond") && !iface.members.is_empty())
}

/// Builds the plan. `current` is every link that exists now, in any order.
pub fn plan(net: &Network, current: &[CurrentLink]) -> Plan {
    let mut out = Plan::default();
    let keys: Vec<&str> = net.interfaces.keys().map(String::as_str).collect();

    // Bonds and bridges: declared on themselves or named by a member.
    for (key, iface) in &net.interfaces {
        if !Matcher::parse(key).is_exact() {
            continue;
        }
        if is_bond(key, iface) {
            let opts = iface
                .bond_opts
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            out.virtuals.insert(key.clone(), VirtualKind::Bond { opts });
        } else if iface.bridge == Some(Bridge::IsBridge(true)) {
            out.virtuals.insert(key.clone(), VirtualKind::Bridge);
        }
    }
    for iface in net.interfaces.values() {
        if let Some(bond) = &iface.bond {
            out.virtuals
                .entry(bond.clone())
                .or_insert_with(|| VirtualKind::Bond {
                    opts: BTreeMap::new(),
                });
        }
        if let Some(Bridge::MemberOf(bridge)) = &iface.bridge {
            out.virtuals
                .entry(bridge.clone())
                .or_insert(VirtualKind::Bridge);
        }
    }

    // Real links (anything netconf does not create) take the most specific key.
    let mut matched: BTreeMap<String, String> = BTreeMap::new();
    for link in current {
        if link.loopback {
            // Loopback is always up and configured by the kernel (127.0.0.1/8, ::1).
            out.links.insert(link.name.clone(), LinkPlan::default());
            continue;
        }
        if out.virtuals.contains_key(&link.name) {
            continue;
        }
        if let Some(key) = best_match(keys.iter().copied(), &link.name, link.mac) {
            matched.insert(link.name.clone(), key.to_string());
        }
    }
    // Virtual links are configured only by their exact key.
    for name in out.virtuals.keys() {
        if net.interfaces.contains_key(name) {
            matched.insert(name.clone(), name.clone());
        } else {
            out.links.insert(name.clone(), LinkPlan::default());
        }
    }

    // VLANs on every link a key with `vlans` configures.
    let mut vlans = BTreeMap::new();
    for (link, key) in &matched {
        for vlan in &net.interfaces[key].vlans {
            let Ok(id) = u16::try_from(vlan.id) else {
                continue;
            };
            let name = vlan.name.clone().unwrap_or_else(|| format!("{link}.{id}"));
            vlans.insert(
                name,
                VirtualKind::Vlan {
                    parent: link.clone(),
                    id,
                },
            );
        }
    }
    for (name, kind) in vlans {
        if net.interfaces.contains_key(&name) {
            matched.insert(name.clone(), name.clone());
        } else {
            out.links.insert(name.clone(), LinkPlan::default());
        }
        out.virtuals.entry(name).or_insert(kind);
    }

    for (link, key) in &matched {
        out.links
            .insert(link.clone(), link_plan(key, &net.interfaces[key]));
    }

    // Enslavement: `bond:`/`bridge:` on a member's key, or `members:` on the master.
    let mut masters: BTreeMap<String, String> = BTreeMap::new();
    for (link, key) in &matched {
        let iface = &net.interfaces[key];
        if let Some(bond) = &iface.bond {
            masters.insert(link.clone(), bond.clone());
        } else if let Some(Bridge::MemberOf(bridge)) = &iface.bridge {
            masters.insert(link.clone(), bridge.clone());
        }
    }
    for (master, iface) in &net.interfaces {
        if !out.virtuals.contains_key(master) {
            continue;
        }
        for member in &iface.members {
            let m = Matcher::parse(member);
            for link in current {
                if !link.loopback && link.name != *master && m.matches(&link.name, link.mac) {
                    masters
                        .entry(link.name.clone())
                        .or_insert_with(|| master.clone());
                }
            }
        }
    }
    for (link, master) in masters {
        let entry = out.links.entry(link).or_default();
        // A member carries no layer-3 configuration of its own.
        *entry = LinkPlan {
            key: entry.key.clone(),
            mtu: entry.mtu,
            master: Some(master),
            ..LinkPlan::default()
        };
    }

    // Exact keys with no link yet are waited for (hotplug).
    let present: BTreeSet<&str> = current.iter().map(|l| l.name.as_str()).collect();
    for key in &keys {
        if Matcher::parse(key).is_exact()
            && !present.contains(key)
            && !out.virtuals.contains_key(*key)
        {
            out.waiting.push(key.to_string());
        }
    }

    // Readiness: the interfaces marked `required`. Else one link, chosen among
    // the links (not keys: a glob that sorts first may configure no link once
    // exact keys have claimed them all) the config gives an address or DHCP:
    // the first, in name order, that brings a default route (DHCP or a
    // gateway), else the first with an address.
    let addressed = |iface: &Interface| {
        iface.dhcp == Some(true) || iface.address.is_some() || !iface.addresses.is_empty()
    };
    let required_keys: Vec<&str> = net
        .interfaces
        .iter()
        .filter(|(_, i)| i.required == Some(true))
        .map(|(k, _)| k.as_str())
        .collect();
    if required_keys.is_empty() {
        let candidates: Vec<(&String, &LinkPlan)> = out
            .links
            .iter()
            .filter(|(_, p)| p.master.is_none() && (p.dhcp || !p.addresses.is_empty()))
            .filter(|(_, p)| {
                net.interfaces
                    .get(&p.key)
                    .is_some_and(|i| i.required != Some(false))
            })
            .collect();
        let chosen = candidates
            .iter()
            .find(|(_, p)| p.dhcp || p.gateway.is_some())
            .or_else(|| candidates.first())
            .map(|(name, _)| (*name).clone());
        match chosen {
            Some(link) => {
                out.required.insert(link);
            }
            // Nothing configured is there yet (hotplug, or a machine with no
            // NIC): wait for the first key that would be.
            None => out.required_unmatched.extend(
                net.interfaces
                    .iter()
                    .find(|(_, i)| i.required != Some(false) && addressed(i))
                    .map(|(k, _)| k.clone()),
            ),
        }
    }
    for key in required_keys {
        // A glob or MAC key is satisfied by the first link it configures.
        let link = out
            .links
            .iter()
            .find(|(_, p)| p.key == key && p.master.is_none())
            .map(|(name, _)| name.clone());
        match link {
            Some(link) => {
                out.required.insert(link);
            }
            None => out.required_unmatched.push(key.to_string()),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use berth_configs::model::CloudConfig;

    fn config(yaml: &str) -> Network {
        let doc = berth_configs::parse_document(&"test".into(), yaml);
        let loaded = berth_configs::load(vec![doc]);
        assert!(
            !loaded.diagnostics.iter().any(|d| d.is_error()),
            "{:#?}",
            loaded.diagnostics
        );
        let config: CloudConfig = loaded.config;
        config.berth.network
    }

    fn link(name: &str, mac: u8) -> CurrentLink {
        CurrentLink {
            name: name.into(),
            mac: Some([0x52, 0x54, 0, 0, 0, mac]),
            loopback: false,
        }
    }

    fn lo() -> CurrentLink {
        CurrentLink {
            name: "lo".into(),
            mac: None,
            loopback: true,
        }
    }

    #[test]
    fn glob_exact_and_mac() {
        let net = config(
            "#cloud-config\nberth:\n  network:\n    interfaces:\n      eth*: {dhcp: true}\n      eth1: {address: 10.0.0.5/24, gateway: 10.0.0.1, mtu: 9000}\n      mac:52:54:00:00:00:03: {address: 'fd00::3/64'}\n",
        );
        let p = plan(
            &net,
            &[
                lo(),
                link("eth0", 1),
                link("eth1", 2),
                link("eth2", 3),
                link("ens9", 4),
            ],
        );
        assert!(p.links["lo"].key.is_empty());
        assert!(p.links["eth0"].dhcp);
        assert_eq!(p.links["eth1"].key, "eth1");
        assert!(!p.links["eth1"].dhcp);
        assert_eq!(
            p.links["eth1"].addresses,
            vec!["10.0.0.5/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(p.links["eth1"].gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(p.links["eth1"].mtu, Some(9000));
        assert_eq!(p.links["eth2"].key, "mac:52:54:00:00:00:03");
        assert!(!p.links["eth2"].accept_ra);
        assert!(!p.links.contains_key("ens9"));
        // `eth*` sorts first: its first link is required.
        assert_eq!(p.required, BTreeSet::from(["eth0".to_string()]));
    }

    #[test]
    fn required_and_waiting() {
        let net = config(
            "#cloud-config\nberth:\n  network:\n    interfaces:\n      eth0: {dhcp: true}\n      eth5: {dhcp: true, required: true}\n",
        );
        let p = plan(&net, &[lo(), link("eth0", 1)]);
        assert!(p.required.is_empty());
        assert_eq!(p.required_unmatched, vec!["eth5".to_string()]);
        assert_eq!(p.waiting, vec!["eth5".to_string()]);
    }

    /// The RancherOS-style two-NIC config next to the built-in `eth*` glob,
    /// which sorts first but configures no link once `eth0` and `eth1` claim
    /// them: readiness must still wait on a link, never on the empty glob.
    #[test]
    fn exact_keys_that_claim_every_link_next_to_a_glob() {
        let defaults = "      eth*: {dhcp: true}\n";
        let links = [lo(), link("eth0", 1), link("eth1", 2)];
        let cases = [
            // DHCP eth0, static eth1: the DHCP link (it brings the default route).
            (
                "      eth0: {dhcp: true}\n      eth1: {address: 10.0.3.15/24, mtu: 1400}\n",
                "eth0",
            ),
            // Reversed.
            (
                "      eth0: {address: 10.0.3.15/24, mtu: 1400}\n      eth1: {dhcp: true}\n",
                "eth1",
            ),
            // `required: true` on either wins.
            (
                "      eth0: {dhcp: true}\n      eth1: {address: 10.0.3.15/24, required: true}\n",
                "eth1",
            ),
            (
                "      eth0: {address: 10.0.3.15/24}\n      eth1: {dhcp: true, required: true}\n",
                "eth1",
            ),
            // Static only, no gateway: the first link with an address.
            (
                "      eth0: {address: 10.0.3.15/24}\n      eth1: {address: 10.0.4.15/24}\n",
                "eth0",
            ),
            // A static gateway brings the default route too.
            (
                "      eth0: {address: 10.0.3.15/24}\n      eth1: {address: 10.0.4.15/24, gateway: 10.0.4.1}\n",
                "eth1",
            ),
        ];
        for (keys, want) in cases {
            let net = config(&format!(
                "#cloud-config\nberth:\n  network:\n    interfaces:\n{defaults}{keys}"
            ));
            let p = plan(&net, &links);
            assert_eq!(p.required, BTreeSet::from([want.to_string()]), "{keys}");
            assert!(p.required_unmatched.is_empty(), "{keys}: {p:?}");
        }
        // No NIC at all: the glob is waited for, as before.
        let net = config(
            "#cloud-config\nberth:\n  network:\n    interfaces:\n      eth*: {dhcp: true}\n",
        );
        let p = plan(&net, &[lo()]);
        assert!(p.required.is_empty());
        assert_eq!(p.required_unmatched, vec!["eth*".to_string()]);
    }

    #[test]
    fn bond_members_vlans_bridge() {
        let net = config(
            "#cloud-config\nberth:\n  network:\n    interfaces:\n      bond0:\n        bond_opts: {mode: active-backup, miimon: 100}\n        address: 10.1.0.2/24\n        vlans: \"100,200:mgmt\"\n      eth1: {bond: bond0}\n      eth2: {bond: bond0}\n      br0:\n        bridge: true\n        members: [eth3]\n        dhcp: true\n      mgmt: {address: 10.2.0.2/24}\n",
        );
        let p = plan(
            &net,
            &[lo(), link("eth1", 1), link("eth2", 2), link("eth3", 3)],
        );
        let opts = BTreeMap::from([
            ("miimon".to_string(), "100".to_string()),
            ("mode".to_string(), "active-backup".to_string()),
        ]);
        assert_eq!(p.virtuals["bond0"], VirtualKind::Bond { opts });
        assert_eq!(p.virtuals["br0"], VirtualKind::Bridge);
        assert_eq!(
            p.virtuals["bond0.100"],
            VirtualKind::Vlan {
                parent: "bond0".into(),
                id: 100
            }
        );
        assert_eq!(
            p.virtuals["mgmt"],
            VirtualKind::Vlan {
                parent: "bond0".into(),
                id: 200
            }
        );
        assert_eq!(p.links["eth1"].master.as_deref(), Some("bond0"));
        assert_eq!(p.links["eth2"].master.as_deref(), Some("bond0"));
        assert_eq!(p.links["eth3"].master.as_deref(), Some("br0"));
        assert!(p.links["br0"].dhcp);
        assert_eq!(p.links["mgmt"].addresses.len(), 1);
        assert!(p.links["bond0.100"].addresses.is_empty());
        assert!(p.waiting.is_empty(), "{:?}", p.waiting);
    }

    #[test]
    fn member_loses_layer3() {
        let net = config(
            "#cloud-config\nberth:\n  network:\n    interfaces:\n      eth*: {dhcp: true}\n      br0: {bridge: true, members: ['eth*'], address: 192.168.5.1/24}\n",
        );
        let p = plan(&net, &[lo(), link("eth0", 1), link("eth1", 2)]);
        assert!(!p.links["eth0"].dhcp);
        assert_eq!(p.links["eth0"].master.as_deref(), Some("br0"));
        assert_eq!(p.links["br0"].addresses.len(), 1);
        // `br0` sorts before `eth*`.
        assert_eq!(p.required, BTreeSet::from(["br0".to_string()]));
    }

    #[test]
    fn routes_and_defaults() {
        let net = config(
            "#cloud-config\nberth:\n  network:\n    interfaces:\n      eth0:\n        address: 10.0.0.5/24\n        routes:\n          - {to: 10.9.0.0/16, via: 10.0.0.254, metric: 50}\n          - {to: default, via: 'fd00::1'}\n",
        );
        let p = plan(&net, &[link("eth0", 1)]);
        let r = &p.links["eth0"].routes;
        assert_eq!(r[0].to, "10.9.0.0/16".parse::<IpNet>().unwrap());
        assert_eq!(r[0].metric, Some(50));
        assert_eq!(r[1].to, "::/0".parse::<IpNet>().unwrap());
    }
}
