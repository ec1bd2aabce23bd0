//! The network-namespace lab shared by the privileged tests and the benchmark.
//!
//! Each lab makes two namespaces of its own — `srv` (DHCP servers, the far
//! ends of veth pairs) and `cli` (where netconf runs) — and deletes them on
//! drop. Every address used lives only inside them. netconf runs as this same
//! executable re-run under `ip netns exec` with `BERTH_NETCONF_CHILD` set, so
//! it gets a fresh single-threaded process inside the client namespace.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const CHILD_ENV: &str = "BERTH_NETCONF_CHILD";
/// The child netconf's tick in milliseconds, when not the lab's 250.
pub const TICK_ENV: &str = "BERTH_NETCONF_TICK_MS";

/// In the child: run netconf with the lab's paths, then exit. Elsewhere: nothing.
pub fn maybe_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &log::Record<'_>) {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            eprintln!(
                "{}.{:03} {}: {}",
                t.as_secs() % 1000,
                t.subsec_millis(),
                r.level(),
                r.args()
            );
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Debug);
    let dir = PathBuf::from(dir);
    let mut options = berth_network::Options::new(
        berth_network::ConfigSource::File(dir.join("config.yml")),
        &dir.join("etc"),
    );
    options.run_dir = dir.join("run");
    options.set_kernel_hostname = false;
    options.tick = Duration::from_millis(250);
    // Once settled, the lab's netconf sees changes only when the kernel or
    // the config's directory tells it: a test that waits for one proves it.
    options.idle_tick = Duration::from_secs(600);
    if let Ok(ms) = std::env::var(TICK_ENV) {
        options.tick = Duration::from_millis(ms.parse().unwrap());
    }
    let signals = berth_network::Signals::install().unwrap();
    let code = match berth_network::run(&options, signals) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("netconf: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Whether privileged tests can run here; says why not when they cannot.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        berth_testkit::skip!("needs root (network namespaces)");
        return false;
    }
    for tool in ["ip", "dnsmasq"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            berth_testkit::skip!("`{tool}` is not installed (cargo xtask installs dnsmasq-base)");
            return false;
        }
    }
    true
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    pub srv: String,
    pub cli: String,
    pub dir: tempfile::TempDir,
    servers: Vec<Child>,
    netconf: Option<Child>,
}

impl Lab {
    pub fn new() -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", std::process::id());
        let lab = Lab {
            srv: format!("bnsrv-{id}"),
            cli: format!("bncli-{id}"),
            dir: tempfile::tempdir().unwrap(),
            servers: Vec::new(),
            netconf: None,
        };
        sh(&["ip", "netns", "add", &lab.srv]);
        sh(&["ip", "netns", "add", &lab.cli]);
        lab.ip_srv(&["link", "set", "lo", "up"]);
        lab
    }

    /// Whether the kernel can make links of `kind` (bonding and 8021q may be
    /// modules the host lacks); says so when it cannot.
    pub fn kernel_has(&self, kind: &str) -> bool {
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(["-n", &self.srv])
                .args(args)
                .output()
                .unwrap()
        };
        let probe = if kind == "vlan" {
            ip(&[
                "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
            ]);
            ip(&[
                "link", "add", "link", "probe0", "name", "probe0.5", "type", "vlan", "id", "5",
            ])
        } else {
            ip(&["link", "add", "probe0", "type", kind])
        };
        let _ = ip(&["link", "del", "probe0"]);
        if !probe.status.success() {
            // Not a missing package: the host kernel itself lacks the driver
            // (no bonding/8021q module to load), so no run here can do better.
            // Berth's own kernel has both: the QEMU test
            // nocloud_then_cmdline_config_with_state_across_power_cycles
            // brings up a bond with a VLAN on it in a VM.
            berth_testkit::unsupported_here!(
                "the host kernel cannot create {kind} links ({}); it has no such driver to load (qemu-tests config.rs covers bond and VLAN in a VM)",
                String::from_utf8_lossy(&probe.stderr).trim()
            );
            return false;
        }
        true
    }

    pub fn ip_srv(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.srv];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn ip_cli(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.cli];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// A veth pair: `srv_if` in the server namespace (up, with `srv_addr`),
    /// `cli_if` in the client namespace, left for netconf.
    pub fn veth(&self, srv_if: &str, cli_if: &str, srv_addr: Option<&str>) {
        sh(&[
            "ip", "link", "add", srv_if, "netns", &self.srv, "type", "veth", "peer", "name",
            cli_if, "netns", &self.cli,
        ]);
        if let Some(addr) = srv_addr {
            self.ip_srv(&["addr", "add", addr, "dev", srv_if]);
        }
        self.ip_srv(&["link", "set", srv_if, "up"]);
    }

    /// dnsmasq as a DHCP server only (no DNS) on `iface` in the server namespace.
    pub fn dnsmasq(&mut self, iface: &str, range: &str, extra: &[&str]) -> PathBuf {
        let n = self.servers.len();
        let log = self.dir.path().join(format!("dnsmasq-{n}.log"));
        let leases = self.dir.path().join(format!("dnsmasq-{n}.leases"));
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.srv,
            "dnsmasq",
            "--no-daemon",
            "--port=0",
        ])
        .arg(format!("--interface={iface}"))
        .arg("--bind-interfaces")
        .arg(format!("--dhcp-range={range}"))
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .args([
            "--log-dhcp",
            "--no-ping",
            "--dhcp-authoritative",
            "--user=root",
            "--conf-file=/dev/null",
        ])
        .args(extra)
        .stdin(Stdio::null());
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        self.servers.push(cmd.spawn().unwrap());
        // dnsmasq is listening once it has logged its DHCP range.
        wait_for("dnsmasq to start", Duration::from_secs(10), || {
            read(&log).contains("DHCP, ")
        });
        log
    }

    pub fn stop_servers(&mut self) {
        for mut s in self.servers.drain(..) {
            let _ = s.kill();
            let _ = s.wait();
        }
    }

    pub fn write_config(&self, yaml: &str) {
        let path = self.dir.path().join("config.yml");
        let tmp = self.dir.path().join("config.yml.tmp");
        std::fs::write(&tmp, format!("#cloud-config\n{yaml}")).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// Starts netconf in the client namespace; `child_args` make the
    /// executable reach [`maybe_child`] (the test's name for a test binary).
    pub fn start_netconf(&mut self, yaml: &str, child_args: &[&str]) {
        self.start_netconf_with_env(yaml, child_args, &[]);
    }

    /// [`Lab::start_netconf`] with more environment variables for netconf.
    pub fn start_netconf_with_env(
        &mut self,
        yaml: &str,
        child_args: &[&str],
        env: &[(&str, &str)],
    ) {
        self.write_config(yaml);
        let exe = std::env::current_exe().unwrap();
        let log = std::fs::File::create(self.netconf_log()).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.cli])
            .arg(exe)
            .args(child_args)
            .env(CHILD_ENV, self.dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.netconf = Some(child);
    }

    /// The pid of netconf started by [`Lab::start_netconf`] (`ip netns exec`
    /// execs it, so the child is netconf itself).
    pub fn netconf_pid(&self) -> Option<u32> {
        self.netconf.as_ref().map(Child::id)
    }

    /// Starts netconf as a service runs it: PID 1 of a PID namespace of its
    /// own (`unshare --pid --fork`), from a parent whose blocked signals it
    /// inherits (SIGTERM, SIGINT and SIGHUP blocked, as PID 1 blocks them for
    /// its signalfd). Stop it with [`Lab::stop_netconf_pid1`].
    pub fn start_netconf_pid1(&mut self, yaml: &str, child_args: &[&str]) {
        use std::os::unix::process::CommandExt;
        self.write_config(yaml);
        let exe = std::env::current_exe().unwrap();
        let log = std::fs::File::create(self.netconf_log()).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.cli,
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
        ])
        .arg(exe)
        .args(child_args)
        .env(CHILD_ENV, self.dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        // SAFETY: sigemptyset/sigaddset/sigprocmask are async-signal-safe and
        // only touch a local set.
        unsafe {
            cmd.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                    libc::sigaddset(&mut set, s);
                }
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        self.netconf = Some(cmd.spawn().unwrap());
    }

    /// The pid (in this namespace) of netconf started by [`Lab::start_netconf_pid1`]:
    /// the one child of `unshare`.
    pub fn netconf_pid1(&self) -> Option<i32> {
        let unshare = self.netconf.as_ref()?.id();
        let children =
            std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// SIGTERM to netconf running as PID 1 of its PID namespace (as berthd
    /// stops the network service); true when it exited 0 within 10 s.
    pub fn stop_netconf_pid1(&mut self) -> bool {
        let pid = self.netconf_pid1().expect("netconf under unshare");
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let Some(mut child) = self.netconf.take() else {
            return false;
        };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // unshare --kill-child takes netconf with it.
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn netconf_log(&self) -> PathBuf {
        self.dir.path().join("netconf.log")
    }

    /// SIGTERM, as berthd stops a service; netconf releases its leases.
    pub fn stop_netconf(&mut self) -> bool {
        let Some(mut child) = self.netconf.take() else {
            return true;
        };
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn ready_file(&self) -> PathBuf {
        self.dir.path().join("run/ready")
    }

    pub fn etc(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("etc").join(name)).unwrap_or_default()
    }

    pub fn state(&self) -> serde_json::Value {
        let text =
            std::fs::read_to_string(self.dir.path().join("run/state.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// IPv4/IPv6 addresses (CIDR) on a client link, link-local left out.
    pub fn addrs(&self, link: &str) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.cli, "-j", "addr", "show", "dev", link])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut addrs = Vec::new();
        for l in v.as_array().into_iter().flatten() {
            for a in l["addr_info"].as_array().into_iter().flatten() {
                if a["scope"] == "link" {
                    continue;
                }
                addrs.push(format!(
                    "{}/{}",
                    a["local"].as_str().unwrap_or(""),
                    a["prefixlen"]
                ));
            }
        }
        addrs
    }

    pub fn routes(&self) -> String {
        self.ip_cli(&["-4", "route", "show"]) + &self.ip_cli(&["-6", "route", "show"])
    }

    pub fn link_json(&self, link: &str) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["-n", &self.cli, "-d", "-j", "link", "show", "dev", link])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.get(0).cloned().unwrap_or(serde_json::Value::Null)
    }

    pub fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond() {
                return start.elapsed();
            }
            // Fine-grained: the benchmark measures with this.
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\n--- netconf log ---\n{}\n--- routes ---\n{}",
            std::fs::read_to_string(self.netconf_log()).unwrap_or_default(),
            self.routes()
        );
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_netconf();
        self.stop_servers();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cli])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.srv])
            .status();
        if std::thread::panicking() {
            // Keep what explains the failure.
            let path = self.dir.path().to_path_buf();
            eprintln!("lab files kept in {}", path.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().unwrap(),
            ));
        }
    }
}

pub const FAKE_SERVER_ENV: &str = "BERTH_FAKE_DHCP";

/// In the child: a minimal DHCP server handing out short leases that dnsmasq
/// will not (its minimum is two minutes), for the expiry test. Env:
/// `BERTH_FAKE_DHCP=<iface>,<server ip>,<client ip>,<lease secs>`.
pub fn maybe_fake_server() {
    use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
    use dhcproto::{Decodable, Decoder, Encodable, Encoder};
    use std::net::{Ipv4Addr, UdpSocket};
    use std::os::fd::AsRawFd;
    let Ok(spec) = std::env::var(FAKE_SERVER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let (iface, server, client, secs) = (
        parts[0],
        parts[1].parse::<Ipv4Addr>().unwrap(),
        parts[2].parse::<Ipv4Addr>().unwrap(),
        parts[3].parse::<u32>().unwrap(),
    );
    let sock = UdpSocket::bind("0.0.0.0:67").unwrap();
    sock.set_broadcast(true).unwrap();
    // SAFETY: the option value points at the interface name's bytes.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            iface.as_ptr().cast(),
            iface.len() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    eprintln!("fake DHCP server on {iface}");
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(req) = Message::decode(&mut Decoder::new(&buf[..n])) else {
            continue;
        };
        let kind = match req.opts().msg_type() {
            Some(MessageType::Discover) => MessageType::Offer,
            Some(MessageType::Request) => MessageType::Ack,
            _ => continue,
        };
        eprintln!("{:?} -> {kind:?}", req.opts().msg_type());
        let mut reply = Message::default();
        reply
            .set_opcode(Opcode::BootReply)
            .set_xid(req.xid())
            .set_flags(req.flags())
            .set_chaddr(&req.chaddr()[..6])
            .set_yiaddr(client)
            .set_siaddr(server);
        let o = reply.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(server));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::AddressLeaseTime(secs));
        o.insert(DhcpOption::Renewal(secs / 3));
        o.insert(DhcpOption::Rebinding(secs * 2 / 3));
        o.insert(DhcpOption::Router(vec![server]));
        let mut out = Vec::new();
        reply.encode(&mut Encoder::new(&mut out)).unwrap();
        let _ = sock.send_to(&out, "255.255.255.255:68");
    }
}

impl Lab {
    pub fn fake_dhcp(
        &mut self,
        iface: &str,
        server: &str,
        client: &str,
        secs: u32,
        child_args: &[&str],
    ) {
        let log = self.dir.path().join("fake-dhcp.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.srv])
            .arg(std::env::current_exe().unwrap())
            .args(child_args)
            .env(FAKE_SERVER_ENV, format!("{iface},{server},{client},{secs}"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        self.servers.push(child);
        wait_for("the fake DHCP server", Duration::from_secs(10), || {
            read(&log).contains("fake DHCP server")
        });
    }
}
