//! Privileged host tests: netconf in a network namespace against real DHCP
//! servers (Debian's dnsmasq) across veth pairs. Root only; each test makes and
//! deletes its own namespaces, so they run in parallel.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{privileged, read, Lab};

/// What makes this executable reach `common::maybe_child` when re-run.
const CHILD: &[&str] = &[
    "child_process",
    "--exact",
    "--nocapture",
    "--test-threads=1",
];

/// Not a test: the entry point of netconf and fake-server child processes.
#[test]
fn child_process() {
    common::maybe_child();
    common::maybe_fake_server();
}

const T: Duration = Duration::from_secs(20);

fn ready(lab: &Lab) -> bool {
    lab.ready_file().exists()
}

#[test]
fn dhcp_lease_obtained_and_released() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    let log = lab.dnsmasq(
        "s0",
        "10.77.0.50,10.77.0.99,255.255.255.0,10m",
        &[
            "--dhcp-option=3,10.77.0.1",
            "--dhcp-option=6,10.77.0.53",
            "--domain=lab.test",
            "--dhcp-option=26,1400",
        ],
    );
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    let addrs = lab.addrs("c0");
    assert!(
        addrs
            .iter()
            .any(|a| a.starts_with("10.77.0.") && a.ends_with("/24")),
        "{addrs:?}"
    );
    assert!(
        lab.routes().contains("default via 10.77.0.1 dev c0"),
        "{}",
        lab.routes()
    );
    assert_eq!(
        lab.link_json("c0")["mtu"],
        1400,
        "option 26 applies the MTU"
    );
    let resolv = lab.etc("resolv.conf");
    assert!(resolv.contains("nameserver 10.77.0.53"), "{resolv}");
    assert!(resolv.contains("search lab.test"), "{resolv}");
    // The state status reads: a lease with its expiry.
    let state = lab.state();
    let lease = &state["leases"]["c0"];
    assert!(lease["expires_at"].as_u64().unwrap() > lease["acquired_at"].as_u64().unwrap());
    assert_eq!(state["ready"], true);
    // dnsmasq saw our hostname-less client id (htype 1 + MAC).
    assert!(read(&log).contains("client provides name") || read(&log).contains("DHCPACK"));
    // Stop: the lease is released and the address removed.
    assert!(lab.stop_netconf());
    assert!(lab.addrs("c0").is_empty(), "{:?}", lab.addrs("c0"));
    lab.wait("DHCPRELEASE at the server", T, || {
        read(&log).contains("DHCPRELEASE")
    });
    assert!(!ready(&lab));
}

#[test]
fn dhcp_lease_renewed() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    // dnsmasq leases last at least 2 minutes; T1/T2 make renewal come quickly.
    let log = lab.dnsmasq(
        "s0",
        "10.77.0.50,10.77.0.99,255.255.255.0,2m",
        &[
            "--dhcp-option=3,10.77.0.1",
            "--dhcp-option=option:T1,3",
            "--dhcp-option=option:T2,100",
        ],
    );
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    let first = lab.addrs("c0");
    lab.wait("two renewals (DHCPACKs after the first)", T, || {
        read(&log).matches("DHCPACK").count() >= 3
    });
    assert_eq!(lab.addrs("c0"), first, "renewal keeps the address");
    // Renewal is unicast to the server, not a new DISCOVER.
    assert_eq!(
        read(&log).matches("DHCPDISCOVER").count(),
        1,
        "{}",
        read(&log)
    );
    assert!(ready(&lab));
}

#[test]
fn dhcp_lease_expires_when_the_server_is_gone() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.78.0.1/24"));
    lab.fake_dhcp("s0", "10.78.0.1", "10.78.0.50", 6, CHILD);
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    assert_eq!(lab.addrs("c0"), vec!["10.78.0.50/24".to_string()]);
    lab.stop_servers();
    // T1 2 s, T2 4 s, expiry 6 s: renewal and rebinding fail, then the address goes.
    let gone = lab.wait("the address to be removed", T, || {
        lab.addrs("c0").is_empty()
    });
    assert!(
        gone >= Duration::from_secs(2),
        "removed too early: {gone:?}"
    );
    assert!(!lab.routes().contains("default"), "{}", lab.routes());
    lab.wait("readiness withdrawn", T, || !ready(&lab));
    // The state file is written after the address and readiness go: on a
    // loaded machine it can lag them.
    lab.wait("the lease to be dropped from the state", T, || {
        lab.state()["leases"]["c0"].is_null()
    });
}

#[test]
fn dhcp_option_121_classless_routes_win_over_router() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    lab.dnsmasq(
        "s0",
        "10.77.0.50,10.77.0.99,255.255.255.0,10m",
        &[
            "--dhcp-option=3,10.77.0.1",
            "--dhcp-option=121,10.99.0.0/16,10.77.0.254,0.0.0.0/0,10.77.0.2",
        ],
    );
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    let routes = lab.routes();
    assert!(
        routes.contains("10.99.0.0/16 via 10.77.0.254 dev c0"),
        "{routes}"
    );
    assert!(routes.contains("default via 10.77.0.2 dev c0"), "{routes}");
    assert!(
        !routes.contains("via 10.77.0.1 "),
        "option 3 is ignored: {routes}"
    );
}

#[test]
fn two_nics_with_dhcp() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    lab.veth("s1", "c1", Some("10.78.0.1/24"));
    lab.dnsmasq(
        "s0",
        "10.77.0.50,10.77.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.77.0.1"],
    );
    lab.dnsmasq(
        "s1",
        "10.78.0.50,10.78.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.78.0.1"],
    );
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c*: {dhcp: true}\n      c1: {dhcp: true, required: true}\n",
        CHILD,
    );
    lab.wait("both leases", T, || {
        lab.addrs("c0").iter().any(|a| a.starts_with("10.77.0."))
            && lab.addrs("c1").iter().any(|a| a.starts_with("10.78.0."))
    });
    lab.wait("ready", T, || ready(&lab));
    // Two default routes, one per interface, with different metrics.
    lab.wait("both default routes", T, || {
        let r = lab.routes();
        r.contains("default via 10.77.0.1 dev c0") && r.contains("default via 10.78.0.1 dev c1")
    });
}

#[test]
fn static_and_dhcp_on_different_nics() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    lab.veth("s1", "c1", Some("10.88.0.1/24"));
    lab.dnsmasq(
        "s0",
        "10.77.0.50,10.77.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.77.0.1"],
    );
    lab.start_netconf(
        "berth:\n  network:\n    dns: {nameservers: [10.88.0.53], search: [static.test], override: true}\n    interfaces:\n      c0: {dhcp: true}\n      c1:\n        addresses: [10.88.0.5/24, 'fd00:88::5/64']\n        mtu: 1400\n        routes:\n          - {to: 10.66.0.0/16, via: 10.88.0.1, metric: 50}\n          - {to: 'fd00:66::/48', via: 'fd00:88::1'}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    lab.wait("static addresses", T, || {
        let a = lab.addrs("c1");
        a.contains(&"10.88.0.5/24".to_string()) && a.contains(&"fd00:88::5/64".to_string())
    });
    assert!(lab.addrs("c0").iter().any(|a| a.starts_with("10.77.0.")));
    assert!(
        !lab.addrs("c0").iter().any(|a| a.starts_with("10.88.")),
        "no mixing"
    );
    let routes = lab.routes();
    assert!(
        routes.contains("10.66.0.0/16 via 10.88.0.1 dev c1 proto static metric 50"),
        "{routes}"
    );
    assert!(
        routes.contains("fd00:66::/48 via fd00:88::1 dev c1 proto static"),
        "{routes}"
    );
    assert!(routes.contains("default via 10.77.0.1 dev c0"), "{routes}");
    assert_eq!(lab.link_json("c1")["mtu"], 1400);
    // dns.override: the static nameserver only.
    let resolv = lab.etc("resolv.conf");
    assert!(resolv.contains("nameserver 10.88.0.53\n"), "{resolv}");
    assert_eq!(resolv.matches("nameserver").count(), 1, "{resolv}");
    assert!(resolv.contains("search static.test"), "{resolv}");
}

#[test]
fn bond_of_two_veths() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    if !lab.kernel_has("bond") {
        return;
    }
    lab.veth("s1", "c1", None);
    lab.veth("s2", "c2", None);
    // The far ends in a bridge with the DHCP server: a lease proves the bond carries traffic.
    lab.ip_srv(&["link", "add", "sbr", "type", "bridge"]);
    lab.ip_srv(&["link", "set", "s1", "master", "sbr"]);
    lab.ip_srv(&["link", "set", "s2", "master", "sbr"]);
    lab.ip_srv(&["addr", "add", "10.55.0.1/24", "dev", "sbr"]);
    lab.ip_srv(&["link", "set", "sbr", "up"]);
    lab.dnsmasq(
        "sbr",
        "10.55.0.50,10.55.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.55.0.1"],
    );
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      bond0:\n        bond_opts: {mode: active-backup, miimon: 100}\n        members: [c1]\n        dhcp: true\n      c2: {bond: bond0}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    let bond = lab.link_json("bond0");
    assert_eq!(bond["linkinfo"]["info_kind"], "bond", "{bond}");
    assert_eq!(
        bond["linkinfo"]["info_data"]["mode"], "active-backup",
        "{bond}"
    );
    assert_eq!(bond["linkinfo"]["info_data"]["miimon"], 100, "{bond}");
    for member in ["c1", "c2"] {
        assert_eq!(lab.link_json(member)["master"], "bond0", "{member}");
        assert!(lab.addrs(member).is_empty());
    }
    assert!(lab.addrs("bond0").iter().any(|a| a.starts_with("10.55.0.")));
}

#[test]
fn vlan_on_a_veth() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    if !lab.kernel_has("vlan") {
        return;
    }
    lab.veth("s0", "c0", None);
    lab.ip_srv(&[
        "link", "add", "link", "s0", "name", "s0.100", "type", "vlan", "id", "100",
    ]);
    lab.ip_srv(&["addr", "add", "10.100.0.1/24", "dev", "s0.100"]);
    lab.ip_srv(&["link", "set", "s0.100", "up"]);
    lab.dnsmasq(
        "s0.100",
        "10.100.0.50,10.100.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.100.0.1"],
    );
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c0:\n        vlans: '100,200:mgmt'\n      c0.100: {dhcp: true}\n      mgmt: {address: 10.200.0.2/24}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    let v = lab.link_json("c0.100");
    assert_eq!(v["linkinfo"]["info_kind"], "vlan", "{v}");
    assert_eq!(v["linkinfo"]["info_data"]["id"], 100, "{v}");
    assert!(lab
        .addrs("c0.100")
        .iter()
        .any(|a| a.starts_with("10.100.0.")));
    let m = lab.link_json("mgmt");
    assert_eq!(m["linkinfo"]["info_data"]["id"], 200, "{m}");
    assert_eq!(lab.addrs("mgmt"), vec!["10.200.0.2/24".to_string()]);
}

#[test]
fn bridge_with_a_member() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s1", "c1", Some("10.56.0.1/24"));
    lab.dnsmasq(
        "s1",
        "10.56.0.50,10.56.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.56.0.1"],
    );
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      br0: {bridge: true, dhcp: true}\n      c1: {bridge: br0}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    assert_eq!(lab.link_json("br0")["linkinfo"]["info_kind"], "bridge");
    assert_eq!(lab.link_json("c1")["master"], "br0");
    assert!(lab.addrs("br0").iter().any(|a| a.starts_with("10.56.0.")));
}

#[test]
fn live_reconfiguration_touches_only_changed_interfaces() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    lab.veth("s1", "c1", None);
    let log = lab.dnsmasq(
        "s0",
        "10.77.0.50,10.77.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.77.0.1"],
    );
    let before = "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true, required: true}\n      c1: {address: 10.40.0.2/24}\n      br9: {bridge: true}\n";
    lab.start_netconf(before, CHILD);
    lab.wait("ready", T, || ready(&lab));
    lab.wait("the bridge", T, || {
        lab.link_json("br9")["linkinfo"]["info_kind"] == "bridge"
    });
    let lease = lab.addrs("c0");
    let acks = read(&log).matches("DHCPACK").count();
    // Change c1 only: new address, an MTU, no bridge; the config file changes under netconf.
    lab.write_config("berth:\n  network:\n    interfaces:\n      c0: {dhcp: true, required: true}\n      c1: {address: 10.40.0.3/24, mtu: 1300}\n");
    lab.wait("c1's new address", T, || {
        lab.addrs("c1") == vec!["10.40.0.3/24".to_string()]
    });
    lab.wait("the bridge deleted", T, || lab.link_json("br9").is_null());
    assert_eq!(lab.link_json("c1")["mtu"], 1300);
    // c0 was not touched: same lease, no new DHCP exchange.
    assert_eq!(lab.addrs("c0"), lease);
    assert_eq!(
        read(&log).matches("DHCPACK").count(),
        acks,
        "{}",
        read(&log)
    );
    assert!(ready(&lab));
    // Removing c1 from the config removes what netconf set on it.
    lab.write_config(
        "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true, required: true}\n",
    );
    lab.wait("c1's address removed", T, || lab.addrs("c1").is_empty());
}

#[test]
fn no_dhcp_server_retries_without_blocking_others() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    lab.veth("s1", "c1", Some("10.78.0.1/24"));
    // No server behind c0 (yet).
    lab.dnsmasq(
        "s1",
        "10.78.0.50,10.78.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.78.0.1"],
    );
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true}\n      c1: {dhcp: true, required: true}\n",
        CHILD,
    );
    lab.wait("ready through c1", T, || ready(&lab));
    // Ready came while c0 was still in its first round of DISCOVERs: c1 did
    // not wait for c0 to give up.
    let log = read(&lab.netconf_log());
    assert!(
        !log.contains("c0: no DHCP server answered"),
        "c1 waited for c0:\n{log}"
    );
    assert!(lab.addrs("c0").is_empty());
    lab.wait("c0 to give up a round and back off", T, || {
        read(&lab.netconf_log()).contains("c0: no DHCP server answered; retrying")
    });
    assert!(ready(&lab));
    // A server appears: the retrying client finds it.
    lab.dnsmasq(
        "s0",
        "10.77.0.50,10.77.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.77.0.1"],
    );
    lab.wait("c0's lease after retrying", Duration::from_secs(45), || {
        lab.addrs("c0").iter().any(|a| a.starts_with("10.77.0."))
    });
}

/// issue 14, fault 1: exact keys that configure every link, next to a glob
/// that sorts before them (`c*` here, `eth*` in the built-in defaults) and so
/// configures nothing. Readiness waits on a link, not on the empty glob: the
/// DHCP one (it brings the default route), whichever order the keys come in.
#[test]
fn exact_keys_that_claim_every_link_next_to_a_glob() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    lab.veth("s1", "c1", Some("10.88.0.1/24"));
    lab.dnsmasq(
        "s0",
        "10.77.0.50,10.77.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.77.0.1"],
    );
    lab.dnsmasq(
        "s1",
        "10.88.0.50,10.88.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.88.0.1"],
    );
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c*: {dhcp: true}\n      c0: {dhcp: true}\n      c1: {address: 10.88.0.5/24, mtu: 1400}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    // The state file is written just after `ready`.
    lab.wait("the state to say ready", T, || lab.state()["ready"] == true);
    let state = lab.state();
    assert_eq!(state["required"], serde_json::json!(["c0"]), "{state}");
    assert_eq!(lab.addrs("c1"), vec!["10.88.0.5/24".to_string()]);
    assert_eq!(lab.link_json("c1")["mtu"], 1400);
    assert!(lab.routes().contains("default via 10.77.0.1 dev c0"));

    // The order reversed: static c0, DHCP c1.
    lab.write_config(
        "berth:\n  network:\n    interfaces:\n      c*: {dhcp: true}\n      c0: {address: 10.77.0.5/24, mtu: 1400}\n      c1: {dhcp: true}\n",
    );
    lab.wait("ready on c1's lease", T, || {
        let s = lab.state();
        s["required"] == serde_json::json!(["c1"]) && s["ready"] == true && ready(&lab)
    });
    assert!(lab.addrs("c1").iter().any(|a| a.starts_with("10.88.0.")));
    assert_eq!(lab.addrs("c0"), vec!["10.77.0.5/24".to_string()]);
}

/// issue 14, fault 2: a lease without a router option is a complete
/// configuration, and so is a static address without a gateway. While it is
/// not ready, netconf says what it waits for (the state `berth network
/// status` shows and `ready.waiting`, which berthd's healthcheck reports).
#[test]
fn a_network_without_a_router_is_ready() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    lab.veth("s1", "c1", None);
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true, required: true}\n      c1: {address: 10.88.0.5/24, required: true}\n",
        CHILD,
    );
    // No DHCP server yet: not ready, and it says why.
    let waiting = lab.dir.path().join("run/ready.waiting");
    lab.wait("the reason it is not ready", T, || {
        read(&waiting).trim() == "c0: a DHCP lease"
    });
    // The state file is written apart from ready.waiting: wait for it too.
    lab.wait("the state to say why", T, || {
        lab.state()["not_ready"] == serde_json::json!(["c0: a DHCP lease"])
    });
    assert!(!ready(&lab));
    // An empty option 3: no router, as on an isolated network.
    lab.dnsmasq(
        "s0",
        "10.77.0.50,10.77.0.99,255.255.255.0,10m",
        &["--dhcp-option=3"],
    );
    lab.wait("ready", T, || ready(&lab));
    assert!(lab.addrs("c0").iter().any(|a| a.starts_with("10.77.0.")));
    assert_eq!(lab.addrs("c1"), vec!["10.88.0.5/24".to_string()]);
    let routes = lab.routes();
    assert!(!routes.contains("default"), "{routes}");
    assert!(!waiting.exists(), "ready.waiting stays after ready");
    lab.wait("the state to say it is ready", T, || {
        let s = lab.state();
        s["ready"] == true && s["not_ready"] == serde_json::json!([])
    });
}

/// issue 14, fault 4: as the network service runs it — PID 1 of its own PID
/// namespace, started with SIGTERM blocked by its parent's mask — netconf
/// still stops on SIGTERM and releases its lease, rather than being killed
/// after its grace period.
/// A reload (SIGHUP) and a stop (SIGTERM) are acted on at once, not at
/// netconf's next tick: with a minute's tick, the new address comes and
/// netconf exits well inside the lab's waits. Before, each waited for the
/// tick (a second in the OS), and so did every shutdown and reboot.
#[test]
fn a_reload_and_a_stop_do_not_wait_for_the_tick() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", None);
    lab.start_netconf_with_env(
        "berth:\n  network:\n    interfaces:\n      c0: {address: 10.41.0.2/24}\n",
        CHILD,
        &[(common::TICK_ENV, "60000")],
    );
    lab.wait("the first address", T, || {
        lab.addrs("c0") == vec!["10.41.0.2/24".to_string()]
    });
    lab.write_config("berth:\n  network:\n    interfaces:\n      c0: {address: 10.41.0.3/24}\n");
    let pid = lab.netconf_pid().expect("netconf's pid") as libc::pid_t;
    // SAFETY: signalling the netconf this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    lab.wait("the reloaded address", T, || {
        lab.addrs("c0") == vec!["10.41.0.3/24".to_string()]
    });
    assert!(
        lab.stop_netconf(),
        "netconf did not exit within 10 s of SIGTERM:\n{}",
        read(&lab.netconf_log())
    );
}

/// A link plugged in once netconf has settled is configured as it appears:
/// the kernel's announcement wakes netconf (the lab's netconf would not look
/// again on its own for ten minutes), while a settled netconf does not wake
/// at all.
#[test]
fn a_link_plugged_in_later_is_configured_at_once() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", None);
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c0: {address: 10.43.0.2/24}\n      c*: {mtu: 1280}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    let pid = lab.netconf_pid().expect("netconf's pid");
    let switches = || berth_testkit::context_switches(pid, None).expect("netconf's threads");
    // The kernel's own IPv6 work on a link just up (duplicate address
    // detection of its link-local address) is announced for a second or two.
    std::thread::sleep(Duration::from_secs(3));
    let before = switches();
    std::thread::sleep(Duration::from_secs(2));
    let woke = switches() - before;
    lab.veth("s1", "c1", None);
    lab.wait(
        "the new link up, with its MTU",
        Duration::from_secs(10),
        || {
            let link = lab.link_json("c1");
            link["mtu"] == 1280
                && link["flags"]
                    .as_array()
                    .is_some_and(|flags| flags.iter().any(|f| f == "UP"))
        },
    );
    // With a look every tick (the lab's 250 ms) it is more than eight.
    assert!(woke <= 3, "a settled netconf woke {woke} times in 2 s");
}

#[test]
fn sigterm_stops_netconf_as_pid_1_with_a_blocked_mask() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    let log = lab.dnsmasq(
        "s0",
        "10.77.0.50,10.77.0.99,255.255.255.0,10m",
        &["--dhcp-option=3,10.77.0.1"],
    );
    lab.start_netconf_pid1(
        "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true}\n",
        CHILD,
    );
    lab.wait("ready", T, || ready(&lab));
    let pid = lab.netconf_pid1().expect("netconf's pid");
    let nspid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:").map(str::to_string))
        .unwrap_or_default();
    assert!(
        nspid.split_whitespace().last() == Some("1"),
        "netconf is not PID 1 of its namespace: NSpid {nspid}"
    );
    assert!(
        lab.stop_netconf_pid1(),
        "netconf did not exit on SIGTERM:\n{}",
        read(&lab.netconf_log())
    );
    lab.wait("DHCPRELEASE at the server", T, || {
        read(&log).contains("DHCPRELEASE")
    });
    assert!(lab.addrs("c0").is_empty(), "{:?}", lab.addrs("c0"));
}
