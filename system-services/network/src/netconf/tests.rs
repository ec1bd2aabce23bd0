#![allow(clippy::unwrap_used)]

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
