//! `cargo xtask bench network`: time from starting netconf to its readiness
//! (DHCP lease applied, default route installed, `ready` written) in the
//! network-namespace lab, against Debian's `dhcpcd -1` (run until it has
//! configured the interface and exits) with the same dnsmasq in the same run.
//! Rounds alternate so both see the same machine load; medians are reported.
//! Root only (network namespaces).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{privileged, Lab};

const ROUNDS: usize = 7;
const RANGE: &str = "10.77.0.50,10.77.0.99,255.255.255.0,10m";

fn lab() -> Lab {
    let mut lab = Lab::new();
    lab.veth("s0", "c0", Some("10.77.0.1/24"));
    lab.dnsmasq(
        "s0",
        RANGE,
        &["--dhcp-option=3,10.77.0.1", "--dhcp-option=6,10.77.0.53"],
    );
    lab
}

fn netconf_round() -> Duration {
    let mut lab = lab();
    lab.start_netconf(
        "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true}\n",
        &[],
    );
    let took = lab.wait("netconf ready", Duration::from_secs(60), || {
        lab.ready_file().exists()
    });
    assert!(lab.routes().contains("default via 10.77.0.1 dev c0"));
    took
}

/// dhcpcd with an empty config and no hook script, so it touches nothing
/// outside the namespace (no /etc/resolv.conf); `-1` exits once configured.
fn dhcpcd_round(extra: &[&str]) -> Duration {
    let lab = lab();
    // dhcpcd keeps leases by interface name; a stale one would let it skip DISCOVER.
    for dir in ["/var/lib/dhcpcd", "/var/lib/dhcpcd5"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("c0") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    let start = Instant::now();
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.cli,
            "dhcpcd",
            "-1",
            "-4",
            "-B",
            "-f",
            "/dev/null",
            "-c",
            "/bin/true",
        ])
        .args(extra)
        .arg("c0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let took = start.elapsed();
    assert!(status.success(), "dhcpcd failed: {status}");
    assert!(
        lab.addrs("c0").iter().any(|a| a.starts_with("10.77.0.")),
        "dhcpcd exited without an address"
    );
    assert!(
        lab.routes().contains("default via 10.77.0.1"),
        "{}",
        lab.routes()
    );
    took
}

/// Set in the flooder child: `ADDRESS:PORT COUNT`.
const FLOOD_ENV: &str = "BERTH_BENCH_FLOOD";
const FLOOD_PACKETS: usize = 200_000;

/// In the flooder child (run in the server namespace): send the datagrams, exit.
fn maybe_flooder() {
    let Ok(spec) = std::env::var(FLOOD_ENV) else {
        return;
    };
    let (to, count) = spec.split_once(' ').unwrap();
    let count: usize = count.parse().unwrap();
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let payload = [0x5au8; 1200];
    for _ in 0..count {
        // Nobody listens: the client answers with ICMP, more traffic on the NIC.
        let _ = socket.send_to(&payload, to);
    }
    std::process::exit(0);
}

/// CPU time of every thread of `pid` (the DHCP client is a thread of its own).
fn cpu_time(pid: u32) -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(ns)
}

/// Bytes queued on the packet sockets of the client namespace
/// (`/proc/net/packet`'s `Rmem`): netconf's DHCP socket is the only one.
fn packet_queued(lab: &Lab) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.cli, "cat", "/proc/net/packet"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6)?.parse::<u64>().ok())
        .sum()
}

/// netconf's CPU time, and what waits in its DHCP socket, after the NIC it
/// holds a lease on carried [`FLOOD_PACKETS`] datagrams that are not for it,
/// with or without the DHCP socket's filter. Unfiltered, the kernel copies
/// each one into the socket until its buffer is full, and netconf reads
/// through the stale backlog when it next renews.
fn netconf_under_traffic(filter: bool) -> (Duration, u64) {
    let mut lab = lab();
    let env: &[(&str, &str)] = if filter {
        &[]
    } else {
        &[(berth_network::dhcp::NO_FILTER_ENV, "1")]
    };
    lab.start_netconf_with_env(
        "berth:\n  network:\n    interfaces:\n      c0: {dhcp: true}\n",
        &[],
        env,
    );
    lab.wait("netconf ready", Duration::from_secs(60), || {
        lab.ready_file().exists()
    });
    let address = lab
        .addrs("c0")
        .into_iter()
        .find(|a| a.starts_with("10.77.0."))
        .unwrap();
    let address = address.split('/').next().unwrap().to_string();
    let pid = lab.netconf_pid().unwrap();
    let before = cpu_time(pid);
    let status = Command::new("ip")
        .args(["netns", "exec", &lab.srv])
        .arg(std::env::current_exe().unwrap())
        .env(FLOOD_ENV, format!("{address}:9 {FLOOD_PACKETS}"))
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the flooder failed: {status}");
    let used = cpu_time(pid) - before;
    let queued = packet_queued(&lab);
    assert!(lab.stop_netconf(), "netconf did not stop cleanly");
    (used, queued)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    common::maybe_child();
    maybe_flooder();
    if !privileged() {
        return;
    }
    // The DHCP socket's filter: netconf's CPU time and its socket's backlog
    // while its NIC is busy.
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..3 {
        with.push(netconf_under_traffic(true));
        without.push(netconf_under_traffic(false));
        eprintln!(
            "round {round}: during {FLOOD_PACKETS} datagrams, with the DHCP filter: netconf CPU {:.1} ms, {} bytes queued; without: {:.1} ms, {} bytes",
            ms(with[round].0),
            with[round].1,
            ms(without[round].0),
            without[round].1
        );
    }
    let cpu = |v: &[(Duration, u64)]| median(v.iter().map(|r| r.0).collect());
    let queued = |v: &[(Duration, u64)]| {
        let mut q: Vec<u64> = v.iter().map(|r| r.1).collect();
        q.sort();
        q[q.len() / 2]
    };
    println!(
        "netconf while its NIC carries {FLOOD_PACKETS} datagrams not for it (median of 3): with the DHCP socket's filter {:.1} ms CPU and {} bytes queued in the socket; without {:.1} ms and {} bytes",
        ms(cpu(&with)),
        queued(&with),
        ms(cpu(&without)),
        queued(&without)
    );
    println!("RESULT netconf_cpu_under_traffic {:.1} ms", ms(cpu(&with)));
    println!("RESULT netconf_dhcp_socket_queued {} bytes", queued(&with));
    println!(
        "RESULT netconf_dhcp_socket_queued_unfiltered {} bytes",
        queued(&without)
    );
    let dhcpcd_found = Command::new("sh")
        .args(["-c", "command -v dhcpcd"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !dhcpcd_found {
        eprintln!("skipped: dhcpcd is not installed (cargo xtask installs dhcpcd-base)");
        return;
    }
    let (mut ours, mut theirs, mut theirs_noarp) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        ours.push(netconf_round());
        theirs.push(dhcpcd_round(&[]));
        theirs_noarp.push(dhcpcd_round(&["--noarp"]));
        eprintln!(
            "round {round}: netconf {:.0} ms, dhcpcd -1 {:.0} ms, dhcpcd -1 --noarp {:.0} ms",
            ms(ours[round]),
            ms(theirs[round]),
            ms(theirs_noarp[round])
        );
    }
    let (ours, theirs, theirs_noarp) = (median(ours), median(theirs), median(theirs_noarp));
    println!(
        "start to ready with DHCP (median of {ROUNDS}): netconf {:.0} ms, dhcpcd -1 {:.0} ms, dhcpcd -1 --noarp {:.0} ms",
        ms(ours),
        ms(theirs),
        ms(theirs_noarp)
    );
    println!(
        "RESULT netconf_ready_vs_dhcpcd {:.2} ratio",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    println!(
        "RESULT netconf_ready_vs_dhcpcd_noarp {:.2} ratio",
        theirs_noarp.as_secs_f64() / ours.as_secs_f64()
    );
    println!("RESULT netconf_ready {:.0} ms", ms(ours));
}
