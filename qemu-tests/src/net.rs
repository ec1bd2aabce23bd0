//! The host side of a VM's network: free ports, the guestfwd relay to a
//! test's server, and a network namespace with its own DNS.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::vm::find;
use crate::{io_err, run_checked, Error, Result};

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
pub fn free_port() -> Result<u16> {
    berth_testkit::free_port().map_err(io_err(Path::new("127.0.0.1:0")))
}

/// The command a `guestfwd` runs to carry one guest connection to
/// 127.0.0.1:`port` (a test's server): a small python3 relay, written to
/// `dir`. When nothing listens there the guest's connection just closes,
/// as a metadata service that has gone away.
pub fn relay_command(dir: &Path, port: u16) -> Result<String> {
    let script = dir.join("relay.py");
    std::fs::write(&script, RELAY).map_err(io_err(&script))?;
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    Ok(format!("{python} {} {port}", script.display()))
}

const RELAY: &str = r#"import socket, sys, threading
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
except OSError:
    sys.exit(1)
s.settimeout(None)
def up():
    while True:
        d = sys.stdin.buffer.read1(65536)
        if not d:
            break
        s.sendall(d)
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d:
        break
    sys.stdout.buffer.write(d)
    sys.stdout.buffer.flush()
"#;

/// A network namespace whose loopback runs a DNS server (dnsmasq, answering
/// only the names given, forwarding nothing) and whose `/etc/resolv.conf`
/// points at it. QEMU started in it ([`Config::netns`]) forwards the guest's
/// queries to its leased DNS server (10.0.2.3) to that dnsmasq, so a guest
/// can resolve names without any traffic leaving the machine. Needs root.
#[derive(Debug)]
pub struct DnsNetns {
    name: String,
    dnsmasq: Child,
}

impl DnsNetns {
    /// `records`: (name, IPv4 address) pairs.
    pub fn start(name: &str, records: &[(&str, &str)]) -> Result<DnsNetns> {
        let _ = run_checked("ip", &["netns", "del", name]);
        run_checked("ip", &["netns", "add", name])?;
        let etc = PathBuf::from("/etc/netns").join(name);
        let setup = (|| {
            run_checked("ip", &["-n", name, "link", "set", "lo", "up"])?;
            std::fs::create_dir_all(&etc).map_err(io_err(&etc))?;
            let resolv = etc.join("resolv.conf");
            std::fs::write(&resolv, "nameserver 127.0.0.1\n").map_err(io_err(&resolv))?;
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", name, "dnsmasq", "--keep-in-foreground"])
                .args(["--no-resolv", "--no-hosts", "--no-dhcp-interface=lo"])
                .args([
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--port=53",
                ])
                .arg("--pid-file=")
                .arg("--log-queries")
                .arg("--log-facility=-");
            for (host, addr) in records {
                cmd.arg(format!("--address=/{host}/{addr}"));
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut dnsmasq = cmd.spawn().map_err(|source| Error::Spawn {
                program: "dnsmasq".into(),
                source,
            })?;
            // dnsmasq logs "started" once it has bound its socket.
            let mut stderr = dnsmasq.stderr.take().expect("piped stderr");
            let mut seen = Vec::new();
            let mut buf = [0u8; 512];
            while find(&seen, b"started").is_none() {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = dnsmasq.kill();
                        return Err(Error::Command {
                            command: "dnsmasq".into(),
                            stderr: String::from_utf8_lossy(&seen).into_owned(),
                        });
                    }
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            // Keep draining so dnsmasq never blocks on a full pipe.
            std::thread::spawn(move || while matches!(stderr.read(&mut buf), Ok(n) if n > 0) {});
            Ok(dnsmasq)
        })();
        match setup {
            Ok(dnsmasq) => Ok(DnsNetns {
                name: name.into(),
                dnsmasq,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&etc);
                let _ = run_checked("ip", &["netns", "del", name]);
                Err(e)
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for DnsNetns {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
        let _ = run_checked("ip", &["netns", "del", &self.name]);
    }
}
