//! resolv.conf and the hostname files, rendered from config and leases.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use berth_configs::model::Dns;

use crate::dhcp::Lease;

pub use berth_sys::atomic::WriteError;

/// resolv.conf caps nameservers at three (MAXNS); more are ignored by libc.
const MAX_NAMESERVERS: usize = 3;

/// The nameservers and search domains in effect: the config's, then the
/// leases' (by interface name), or only the config's when `dns.override` is set
/// and it names any.
pub fn resolvers(dns: &Dns, leases: &BTreeMap<String, Lease>) -> (Vec<IpAddr>, Vec<String>) {
    let mut servers: Vec<IpAddr> = dns
        .nameservers
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let mut search = dns.search.clone();
    let static_wins = dns.override_leases;
    if !static_wins || servers.is_empty() {
        for lease in leases.values() {
            servers.extend(lease.dns.iter().map(|a| IpAddr::V4(*a)));
        }
    }
    if !static_wins || search.is_empty() {
        for lease in leases.values() {
            search.extend(lease.search.iter().cloned());
        }
    }
    dedup(&mut servers);
    dedup(&mut search);
    (servers, search)
}

fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
    let mut seen = Vec::new();
    v.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(x.clone());
            true
        }
    });
}

pub fn render_resolv_conf(servers: &[IpAddr], search: &[String]) -> String {
    let mut out =
        String::from("# Written by berth netconf from berth.network.dns and DHCP leases.\n");
    for s in servers.iter().take(MAX_NAMESERVERS) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    out
}

/// Writes `path` atomically (temp file + rename) when its content changes, so
/// readers in containers never see half a file. Returns whether it changed.
pub fn write_if_changed(path: &Path, content: &str) -> Result<bool, WriteError> {
    let err = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let options = berth_sys::atomic::Options::mode(0o644);
    match berth_sys::atomic::write_if_changed(path, content.as_bytes(), &options) {
        Ok(outcome) => Ok(outcome == berth_sys::atomic::Outcome::Written),
        // resolv.conf is often a bind mount (in containers), where rename
        // fails with EBUSY: write it in place instead.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            std::fs::write(path, content).map_err(err)?;
            Ok(true)
        }
        Err(e) => Err(err(e)),
    }
}

/// `/etc/hosts` with the hostname on 127.0.1.1, keeping every other line.
pub fn render_hosts(existing: &str, hostname: &str) -> String {
    const MARK: &str = "# berth hostname";
    let mut out = String::new();
    let mut has_localhost = false;
    for line in existing.lines() {
        if line.ends_with(MARK) {
            continue;
        }
        if line.split_whitespace().skip(1).any(|n| n == "localhost") {
            has_localhost = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !has_localhost {
        out.insert_str(
            0,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
    }
    let short = hostname.split('.').next().unwrap_or(hostname);
    if short == hostname {
        out.push_str(&format!("127.0.1.1\t{hostname} {MARK}\n"));
    } else {
        out.push_str(&format!("127.0.1.1\t{hostname} {short} {MARK}\n"));
    }
    out
}

pub fn kernel_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is live and its length passed; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty() && name != "(none)").then_some(name)
}

pub fn set_kernel_hostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe the name's bytes.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn lease(dns: [u8; 4], search: &str) -> Lease {
        Lease {
            address: "10.0.0.9/24".parse().unwrap(),
            server: Ipv4Addr::new(10, 0, 0, 1),
            routers: vec![],
            classless_routes: vec![],
            dns: vec![Ipv4Addr::from(dns)],
            search: vec![search.into()],
            mtu: None,
            hostname: None,
            lease_secs: 60,
            renew_secs: 30,
            rebind_secs: 50,
            acquired_at: 0,
            expires_at: 60,
        }
    }

    #[test]
    fn merge_and_override() {
        let leases = BTreeMap::from([
            ("eth0".to_string(), lease([10, 0, 0, 53], "a.test")),
            ("eth1".to_string(), lease([10, 1, 0, 53], "b.test")),
        ]);
        let mut dns = Dns {
            nameservers: vec!["1.1.1.1".into()],
            search: vec![],
            override_leases: false,
        };
        let (s, d) = resolvers(&dns, &leases);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].to_string(), "1.1.1.1");
        assert_eq!(d, vec!["a.test".to_string(), "b.test".to_string()]);
        dns.override_leases = true;
        let (s, d) = resolvers(&dns, &leases);
        assert_eq!(s.len(), 1);
        // Override only replaces what the config sets: no static search, so leases' stay.
        assert_eq!(d.len(), 2);
        let text = render_resolv_conf(&s, &d);
        assert!(text.contains("nameserver 1.1.1.1\n"));
        assert!(text.contains("search a.test b.test\n"));
    }

    #[test]
    fn hosts_keeps_other_lines() {
        let first = render_hosts("", "node1.example.test");
        assert!(first.contains("127.0.0.1\tlocalhost"));
        assert!(first.contains("127.0.1.1\tnode1.example.test node1 # berth hostname"));
        let second = render_hosts(&format!("{first}10.0.0.7 other\n"), "node2");
        assert!(!second.contains("node1"));
        assert!(second.contains("10.0.0.7 other"));
        assert_eq!(second.matches("localhost\n").count(), 1);
    }

    #[test]
    fn atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/resolv.conf");
        assert!(write_if_changed(&path, "a\n").unwrap());
        assert!(!write_if_changed(&path, "a\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\n");
    }
}
