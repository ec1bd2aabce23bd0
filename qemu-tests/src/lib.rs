//! A harness for booting Berth in QEMU: the QEMU process (killed when the
//! [`Vm`] is dropped, and by the kernel if the test process dies), the serial
//! console as a pipe with [`Vm::expect`], host-forwarded ports, NoCloud seeds,
//! blank disks, BIOS and UEFI (OVMF) firmware. TCG unless `BERTH_QEMU_KVM=1`.
//!
//! Tests that need built artifacts read their paths from the environment
//! (`cargo xtask test` sets them; see [`Artifacts`]) and skip with a recorded
//! reason when they are absent (berth-testkit; `cargo xtask test` lists skips
//! and fails on them under `CI=true`).

pub mod metadata;
pub mod registry;
pub mod ssh;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the kernel-only baseline's `/init` prints before powering off.
pub const BASELINE_MARKER: &str = "BERTH-BASELINE-INIT-RAN";
/// The kernel's line when it hands over to the initramfs' `/init`.
pub const KERNEL_HANDOVER: &str = "Run /init as init process";
/// PID 1's first line in the initramfs (init/src/stage1.rs; console.rs
/// prefixes every line with `berth: `).
pub const INIT_MARKER: &str = "berth: stage 1";
/// PID 1 after switch_root into the OS image.
pub const STAGE2_MARKER: &str = "berth: stage 2";
/// The line berthd prints when every default service is up.
pub const READY_MARKER: &str = "berth: system ready";

/// At most this many VMs run at once in one test process: the machines have
/// two cores and TCG is CPU-bound.
pub const MAX_VMS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot run `{program}`: {source} (install it, or run `cargo xtask test`, which does)"
    )]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error(
        "{vm}: no `{pattern}` on the console after {waited:?}\n{}",
        fence(transcript)
    )]
    Timeout {
        vm: String,
        pattern: String,
        waited: Duration,
        transcript: String,
    },
    #[error(
        "{vm}: QEMU exited ({status}) before `{pattern}` appeared\n{}",
        fence(transcript)
    )]
    Exited {
        vm: String,
        pattern: String,
        status: String,
        transcript: String,
    },
    #[error("no OVMF firmware found (looked for {0}); install the `ovmf` package")]
    NoOvmf(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn fence(transcript: &str) -> String {
    format!("----- console transcript -----\n{transcript}\n----- end of transcript -----")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Paths of the built artifacts, from the environment `cargo xtask test` sets.
#[derive(Debug, Clone)]
pub struct Artifacts;

impl Artifacts {
    pub const VMLINUZ: &'static str = "BERTH_VMLINUZ";
    pub const INITRD: &'static str = "BERTH_INITRD";
    pub const ISO: &'static str = "BERTH_ISO";
    /// The disk images: raw and qcow2.
    pub const DISK: &'static str = "BERTH_DISK";
    pub const QCOW2: &'static str = "BERTH_QCOW2";

    /// The path in `var`, or `None` after recording why the caller skips
    /// (berth-testkit: `cargo xtask test` counts it).
    /// (`_test` is kept for the callers; berth-testkit names the test.)
    pub fn get(var: &str, _test: &str) -> Option<PathBuf> {
        match std::env::var_os(var).map(PathBuf::from) {
            Some(p) if p.exists() => Some(p),
            Some(p) => {
                berth_testkit::skip!("{var}={} does not exist", p.display());
                None
            }
            None => {
                berth_testkit::skip!(
                    "{var} is not set (`cargo xtask test` builds the artifacts and sets it)"
                );
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default).
    Bios,
    /// OVMF through pflash, with a private copy of the variable store.
    Uefi,
}

#[derive(Debug, Clone)]
pub enum Boot {
    /// QEMU loads the kernel and initramfs itself (no firmware boot loader).
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
    /// Boot the ISO from a CD-ROM drive.
    Cdrom(PathBuf),
    /// Boot from the first virtio disk, as the firmware finds it (an
    /// installed disk or a disk image).
    Disk,
}

#[derive(Debug, Clone)]
pub struct Drive {
    pub path: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub firmware: Firmware,
    pub boot: Boot,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Virtio disks, in order (vda, vdb, …).
    pub drives: Vec<Drive>,
    /// (host port on 127.0.0.1, guest port).
    pub hostfwd: Vec<(u16, u16)>,
    /// More NICs after the first: each a QEMU user network of its own.
    pub nics: Vec<Nic>,
    /// NICs on private L2 links to other QEMU processes, after `nics`.
    pub links: Vec<Link>,
    /// Run QEMU inside this network namespace (`ip netns exec`), so its user
    /// network's DNS proxy and host-side addresses are the namespace's.
    pub netns: Option<String>,
    /// With [`Boot::Cdrom`]: leave the firmware's own boot order (SeaBIOS
    /// tries the disks before the CD) rather than `-boot order=d`.
    pub firmware_boot_order: bool,
    /// The first NIC's user network too is `restrict=on`: an isolated network
    /// whose DHCP server offers an address but no router.
    pub restricted: bool,
    /// The first NIC's user network subnet (`net=`), e.g. `169.254.0.0/16`
    /// so a metadata service at 169.254.169.254 is on-link.
    pub user_net: Option<String>,
    /// `guestfwd` rules on the first NIC: (`ADDR:PORT` in the guest, the
    /// command QEMU runs for each connection, talking on its stdin/stdout).
    pub guestfwd: Vec<(String, String)>,
    /// `-smbios` arguments: DMI strings the guest reads (which cloud it is on).
    pub smbios: Vec<String>,
    pub kvm: bool,
    /// An i6300esb watchdog, which resets the machine when it is not fed.
    pub watchdog: bool,
    /// The guest's reboots (and watchdog resets) restart it in the same QEMU
    /// instead of ending the VM.
    pub reboots: bool,
}

/// A NIC on a private Ethernet link between two QEMU processes: each sends
/// its frames as UDP datagrams to the other on 127.0.0.1 (`-netdev dgram`),
/// so nothing leaves the host and no bridge or tap is needed. The peer VM
/// has the same link with the ports swapped ([`Link::peer`]).
#[derive(Debug, Clone)]
pub struct Link {
    pub mac: String,
    /// The UDP port on 127.0.0.1 this VM's frames come from and arrive at.
    pub local_port: u16,
    /// The peer's port.
    pub remote_port: u16,
    /// Every frame on the link, as QEMU saw it, written to this pcap file
    /// (`-object filter-dump`).
    pub dump: Option<PathBuf>,
}

impl Link {
    /// A link between two fresh UDP ports (free a moment ago).
    pub fn new(mac: &str) -> Result<Link> {
        let (local_port, remote_port) = (free_udp_port()?, free_udp_port()?);
        Ok(Link {
            mac: mac.into(),
            local_port,
            remote_port,
            dump: None,
        })
    }

    /// The other end: the ports swapped, its own MAC, no dump.
    pub fn peer(&self, mac: &str) -> Link {
        Link {
            mac: mac.into(),
            local_port: self.remote_port,
            remote_port: self.local_port,
            dump: None,
        }
    }

    pub fn dump(mut self, pcap: &Path) -> Link {
        self.dump = Some(pcap.to_path_buf());
        self
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> Result<u16> {
    let socket =
        std::net::UdpSocket::bind("127.0.0.1:0").map_err(io_err(Path::new("udp 127.0.0.1:0")))?;
    let port = socket
        .local_addr()
        .map_err(io_err(Path::new("udp 127.0.0.1:0")))?
        .port();
    Ok(port)
}

/// A NIC on an isolated QEMU user network (`restrict=on`: no way out).
#[derive(Debug, Clone)]
pub struct Nic {
    pub mac: String,
    /// The user network's subnet, e.g. `10.9.0.0/24`.
    pub net: String,
}

impl Config {
    pub fn new(name: &str, boot: Boot) -> Self {
        Config {
            name: name.to_string(),
            firmware: Firmware::Bios,
            boot,
            memory_mib: 1024,
            // One vCPU: TCG runs a thread per vCPU and the hosts have two cores
            // shared with a second VM and the build.
            cpus: 1,
            drives: Vec::new(),
            hostfwd: Vec::new(),
            nics: Vec::new(),
            links: Vec::new(),
            netns: None,
            firmware_boot_order: false,
            restricted: false,
            user_net: None,
            guestfwd: Vec::new(),
            smbios: Vec::new(),
            kvm: std::env::var("BERTH_QEMU_KVM").is_ok_and(|v| v == "1"),
            watchdog: false,
            reboots: false,
        }
    }

    /// Adds an i6300esb watchdog (its action: reset the machine).
    pub fn watchdog(mut self) -> Self {
        self.watchdog = true;
        self
    }

    /// Lets the guest reboot itself inside this QEMU.
    pub fn reboots(mut self) -> Self {
        self.reboots = true;
        self
    }

    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    pub fn drive(mut self, path: impl Into<PathBuf>, read_only: bool) -> Self {
        self.drives.push(Drive {
            path: path.into(),
            read_only,
        });
        self
    }

    pub fn forward(mut self, host: u16, guest: u16) -> Self {
        self.hostfwd.push((host, guest));
        self
    }

    pub fn nic(mut self, mac: &str, net: &str) -> Self {
        self.nics.push(Nic {
            mac: mac.into(),
            net: net.into(),
        });
        self
    }

    /// A NIC on a private L2 link to another VM (see [`Link`]).
    pub fn link(mut self, link: Link) -> Self {
        self.links.push(link);
        self
    }

    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// Boot with the firmware's default order (disks first), as a PC whose
    /// boot order nobody changed: a data disk Berth wrote must hand over to
    /// the CD rather than hang the BIOS.
    pub fn firmware_boot_order(mut self) -> Self {
        self.firmware_boot_order = true;
        self
    }

    /// Make the first NIC's network isolated (`restrict=on`): DHCP leases
    /// come without a router, as on a private LAN or an isolated cloud network.
    pub fn restricted_network(mut self) -> Self {
        self.restricted = true;
        self
    }

    /// The first NIC's user network subnet (`net=`).
    pub fn user_net(mut self, net: &str) -> Self {
        self.user_net = Some(net.into());
        self
    }

    /// Connections from the guest to `addr` (`IP:PORT`) run `cmd` on the
    /// host, which talks to the guest on its stdin and stdout.
    pub fn guestfwd(mut self, addr: &str, cmd: &str) -> Self {
        self.guestfwd.push((addr.into(), cmd.into()));
        self
    }

    /// One `-smbios` argument, e.g. `type=1,manufacturer=Amazon EC2`.
    pub fn smbios(mut self, arg: &str) -> Self {
        self.smbios.push(arg.into());
        self
    }

    pub fn memory(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// The QEMU command line, without how the serial console is wired.
    /// `scratch` receives per-VM files (the UEFI variable store).
    pub fn command(&self, scratch: &Path) -> Result<Command> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                // `ip netns exec` execs QEMU, so the child is still QEMU itself.
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        cmd.args(["-name", &self.name]);
        cmd.args(["-m", &self.memory_mib.to_string()]);
        cmd.args(["-smp", &self.cpus.to_string()]);
        if self.kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            // A larger translation cache: fewer re-translations of the kernel.
            cmd.args(["-accel", "tcg,tb-size=256"]);
        }
        match self.firmware {
            Firmware::Bios => {
                cmd.args(["-machine", "pc"]);
            }
            Firmware::Uefi => {
                let (code, vars) = ovmf()?;
                let vars_copy = scratch.join("OVMF_VARS.fd");
                std::fs::copy(&vars, &vars_copy).map_err(io_err(&vars))?;
                cmd.args(["-machine", "q35"]);
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    code.display()
                ));
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars_copy.display()
                ));
            }
        }
        match &self.boot {
            Boot::Kernel {
                kernel,
                initrd,
                append,
            } => {
                cmd.arg("-kernel").arg(kernel);
                cmd.arg("-initrd").arg(initrd);
                cmd.arg("-append").arg(append);
            }
            Boot::Cdrom(iso) => {
                cmd.arg("-drive").arg(format!(
                    "file={},media=cdrom,readonly=on,if=ide,index=2",
                    iso.display()
                ));
                if !self.firmware_boot_order {
                    cmd.args(["-boot", "order=d"]);
                }
            }
            Boot::Disk => {}
        }
        for drive in &self.drives {
            let format = if drive.path.extension().is_some_and(|e| e == "qcow2") {
                "qcow2"
            } else {
                "raw"
            };
            cmd.arg("-drive").arg(format!(
                "file={},if=virtio,format={format},cache=unsafe{}",
                drive.path.display(),
                if drive.read_only { ",readonly=on" } else { "" }
            ));
        }
        let mut netdev = String::from("user,id=net0");
        if self.restricted {
            netdev.push_str(",restrict=on");
        }
        if let Some(net) = &self.user_net {
            netdev.push_str(&format!(",net={net}"));
        }
        for (addr, command) in &self.guestfwd {
            // A comma inside an option value is written twice.
            netdev.push_str(&format!(
                ",guestfwd=tcp:{addr}-cmd:{}",
                command.replace(',', ",,")
            ));
        }
        for (host, guest) in &self.hostfwd {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        cmd.arg("-netdev").arg(netdev);
        // romfile= : no iPXE option ROM (the ipxe-qemu package is not needed
        // and network boot is never wanted).
        cmd.args(["-device", "virtio-net-pci,netdev=net0,romfile="]);
        for (i, nic) in self.nics.iter().enumerate() {
            let id = format!("net{}", i + 1);
            cmd.arg("-netdev")
                .arg(format!("user,id={id},net={},restrict=on", nic.net));
            cmd.arg("-device").arg(format!(
                "virtio-net-pci,netdev={id},mac={},romfile=",
                nic.mac
            ));
        }
        for arg in &self.smbios {
            cmd.arg("-smbios").arg(arg);
        }
        for (i, link) in self.links.iter().enumerate() {
            let id = format!("link{i}");
            cmd.arg("-netdev").arg(format!(
                "dgram,id={id},local.type=inet,local.host=127.0.0.1,local.port={},\
                 remote.type=inet,remote.host=127.0.0.1,remote.port={}",
                link.local_port, link.remote_port
            ));
            cmd.arg("-device").arg(format!(
                "virtio-net-pci,netdev={id},mac={},romfile=",
                link.mac
            ));
            if let Some(pcap) = &link.dump {
                cmd.arg("-object").arg(format!(
                    "filter-dump,id=dump{i},netdev={id},file={}",
                    pcap.display()
                ));
            }
        }
        if self.watchdog {
            cmd.args(["-device", "i6300esb", "-action", "watchdog=reset"]);
        }
        // Unless asked, a reboot ends the VM: tests see a panic or reboot as
        // QEMU exiting.
        if !self.reboots {
            cmd.arg("-no-reboot");
        }
        Ok(cmd)
    }
}

/// OVMF code and variable-store templates from the `ovmf` package.
pub fn ovmf() -> Result<(PathBuf, PathBuf)> {
    let candidates = [
        (
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
        ),
        (
            "/usr/share/OVMF/OVMF_CODE.fd",
            "/usr/share/OVMF/OVMF_VARS.fd",
        ),
    ];
    candidates
        .iter()
        .find(|(c, v)| Path::new(c).exists() && Path::new(v).exists())
        .map(|(c, v)| (PathBuf::from(c), PathBuf::from(v)))
        .ok_or_else(|| {
            Error::NoOvmf(
                candidates
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
pub fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err(Path::new("127.0.0.1:0")))?;
    let port = listener
        .local_addr()
        .map_err(io_err(Path::new("127.0.0.1:0")))?
        .port();
    Ok(port)
}

/// A sparse blank raw disk of `size` bytes.
pub fn blank_disk(path: &Path, size: u64) -> Result<()> {
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    file.set_len(size).map_err(io_err(path))
}

/// A copy-on-write qcow2 disk over `base` (the build output stays pristine),
/// of `size` bytes (larger than the base: a bigger cloud volume).
pub fn overlay(base: &Path, path: &Path, size: u64) -> Result<()> {
    run_checked(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &base.to_string_lossy(),
            "-F",
            "qcow2",
            &path.to_string_lossy(),
            &size.to_string(),
        ],
    )
    .map(|_| ())
}

/// A NoCloud seed (`cidata` volume with `user-data` and `meta-data`), made
/// with `cloud-localds` from cloud-image-utils.
pub fn nocloud_seed(path: &Path, user_data: &str, meta_data: &str) -> Result<()> {
    let dir = tempfile::tempdir().map_err(io_err(Path::new("<tempdir>")))?;
    let ud = dir.path().join("user-data");
    let md = dir.path().join("meta-data");
    std::fs::write(&ud, user_data).map_err(io_err(&ud))?;
    std::fs::write(&md, meta_data).map_err(io_err(&md))?;
    run_checked(
        "cloud-localds",
        &[
            &path.to_string_lossy(),
            &ud.to_string_lossy(),
            &md.to_string_lossy(),
        ],
    )?;
    Ok(())
}

/// An OpenStack ConfigDrive: an ISO9660 volume labelled `config-2` holding
/// `openstack/latest/{meta_data.json,user_data,network_data.json}`, made
/// with `xorriso` as Nova makes it (with genisoimage's options).
pub fn configdrive(
    path: &Path,
    meta_data_json: &str,
    user_data: Option<&str>,
    network_data_json: Option<&str>,
) -> Result<()> {
    let dir = tempfile::tempdir().map_err(io_err(Path::new("<tempdir>")))?;
    let latest = dir.path().join("openstack/latest");
    std::fs::create_dir_all(&latest).map_err(io_err(&latest))?;
    let md = latest.join("meta_data.json");
    std::fs::write(&md, meta_data_json).map_err(io_err(&md))?;
    if let Some(ud) = user_data {
        let p = latest.join("user_data");
        std::fs::write(&p, ud).map_err(io_err(&p))?;
    }
    if let Some(net) = network_data_json {
        let p = latest.join("network_data.json");
        std::fs::write(&p, net).map_err(io_err(&p))?;
    }
    run_checked(
        "xorriso",
        &[
            "-as",
            "genisoimage",
            "-quiet",
            "-J",
            "-r",
            "-V",
            "config-2",
            "-o",
            &path.to_string_lossy(),
            &dir.path().to_string_lossy(),
        ],
    )?;
    Ok(())
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

/// The kernel-only baseline's command line: serial console, and a panic ends
/// the VM at once (with `-no-reboot`) instead of hanging a test.
pub fn baseline_append() -> String {
    "console=ttyS0,115200n8 panic=-1".to_string()
}

// ---- VM slots --------------------------------------------------------------

static SLOTS: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

#[derive(Debug)]
struct Slot;

impl Slot {
    fn take() -> Slot {
        let mut used = lock(&SLOTS);
        while *used >= MAX_VMS {
            used = SLOT_FREED
                .wait(used)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *lock(&SLOTS) -= 1;
        SLOT_FREED.notify_one();
    }
}

/// A poisoned lock only means another test panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---- the console -----------------------------------------------------------

#[derive(Debug, Default)]
struct Transcript {
    bytes: Vec<u8>,
    /// Where the next `expect` starts searching.
    cursor: usize,
    eof: bool,
}

#[derive(Debug, Default)]
struct Console {
    state: Mutex<Transcript>,
    grew: Condvar,
}

/// PID 1's, berthd's and the services' own lines of a transcript, for
/// failure messages (the kernel's are left out).
pub fn berth_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains("berth") || l.contains("ERROR") || l.contains("WARN"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running QEMU. Dropping it kills QEMU (and prints the console transcript
/// if the thread is panicking, i.e. a test failed).
#[derive(Debug)]
pub struct Vm {
    name: String,
    /// QEMU's human monitor, for what a person would do to the machine.
    monitor: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<Console>,
    started: Instant,
    _scratch: tempfile::TempDir,
    _slot: Slot,
}

impl Vm {
    /// Starts QEMU with the serial console on a pipe. Waits for a free slot
    /// first (at most [`MAX_VMS`] at once).
    pub fn start(config: &Config) -> Result<Vm> {
        let slot = Slot::take();
        let scratch = tempfile::Builder::new()
            .prefix("berth-qemu-")
            .tempdir()
            .map_err(io_err(Path::new("<tempdir>")))?;
        let mut cmd = config.command(scratch.path())?;
        let monitor = scratch.path().join("monitor.sock");
        cmd.args(["-display", "none", "-serial", "stdio", "-monitor"])
            .arg(format!("unix:{},server=on,wait=off", monitor.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe; it touches no memory of
        // the parent. PR_SET_PDEATHSIG makes the kernel kill QEMU if the test
        // process dies without running Drop (SIGKILL, abort).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: "qemu-system-x86_64".into(),
            source,
        })?;
        let console = Arc::new(Console::default());
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let console = Arc::clone(&console);
            std::thread::spawn(move || pump(stream, &console));
        }
        Ok(Vm {
            name: config.name.clone(),
            monitor,
            stdin: child.stdin.take(),
            child,
            console,
            started,
            _scratch: scratch,
            _slot: slot,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits until `pattern` appears on the console after the previous match,
    /// returning the time since QEMU started. Fails with the whole transcript
    /// on timeout or if QEMU exits first.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        let needle = pattern.as_bytes();
        let mut state = lock(&self.console.state);
        loop {
            let from = state.cursor.min(state.bytes.len());
            if let Some(pos) = find(&state.bytes[from..], needle) {
                state.cursor = from + pos + needle.len();
                return Ok(self.started.elapsed());
            }
            if state.eof {
                drop(state);
                let status = self
                    .child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                return Err(Error::Exited {
                    vm: self.name.clone(),
                    pattern: pattern.to_string(),
                    status,
                    transcript: self.transcript(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(state);
                return Err(Error::Timeout {
                    vm: self.name.clone(),
                    pattern: pattern.to_string(),
                    waited: timeout,
                    transcript: self.transcript(),
                });
            }
            state = self
                .console
                .grew
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until `pattern` has appeared anywhere on the console, before or
    /// after the previous match (for lines whose order against others is not
    /// fixed, like two services' output); the cursor does not move.
    pub fn expect_anywhere(&mut self, pattern: &str, timeout: Duration) -> Result<Duration> {
        let cursor = lock(&self.console.state).cursor;
        lock(&self.console.state).cursor = 0;
        let found = self.expect(pattern, timeout);
        lock(&self.console.state).cursor = cursor;
        found
    }

    /// Types `text` on the serial console.
    pub fn send(&mut self, text: &str) -> Result<()> {
        if let Some(stdin) = self.stdin.as_mut() {
            stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush())
                .map_err(io_err(Path::new("<qemu serial>")))?;
        }
        Ok(())
    }

    /// A command on QEMU's monitor, e.g. `system_powerdown` (the ACPI power
    /// button). Returns once QEMU has read it.
    pub fn monitor(&mut self, command: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match std::os::unix::net::UnixStream::connect(&self.monitor) {
                Ok(s) => break s,
                // QEMU creates the socket while it starts.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(io_err(&self.monitor)(e)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io_err(&self.monitor))?;
        stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io_err(&self.monitor))?;
        // The monitor echoes the command back once it has taken it.
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while find(&seen, command.as_bytes()).is_none() {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        Ok(())
    }

    /// Waits for QEMU to exit on its own (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(io_err(Path::new("<qemu>")))? {
                return Ok(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    vm: self.name.clone(),
                    pattern: "<QEMU exit>".into(),
                    waited: timeout,
                    transcript: self.transcript(),
                });
            }
            // Wake on console output (the guest's last words) or every 100 ms:
            // Child has no blocking wait with a timeout.
            let state = lock(&self.console.state);
            let _ = self
                .console
                .grew
                .wait_timeout(state, (deadline - now).min(Duration::from_millis(100)));
        }
    }

    /// Everything the console printed so far (lossy UTF-8, ANSI left in).
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&lock(&self.console.state).bytes).into_owned()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Kill first: a failed expect must not leave QEMU burning a core.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "{}: console transcript\n{}",
                self.name,
                fence(&self.transcript())
            );
        }
    }
}

fn pump(mut stream: Box<dyn Read + Send>, console: &Console) {
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        let mut state = lock(&console.state);
        if n == 0 {
            state.eof = true;
            console.grew.notify_all();
            return;
        }
        state.bytes.extend_from_slice(&buf[..n]);
        console.grew.notify_all();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Builds the kernel-only baseline initramfs into `dir` from the host's
/// static busybox (the `busybox-static` package).
pub fn baseline_initrd(dir: &Path) -> Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    let bytes =
        berth_iso::initramfs::baseline(busybox, BASELINE_MARKER).map_err(|e| Error::Command {
            command: "building the baseline initramfs".into(),
            stderr: e.to_string(),
        })?;
    let path = dir.join("baseline-initrd");
    std::fs::write(&path, bytes).map_err(io_err(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uefi_command_uses_pflash_and_a_private_vars_copy() {
        if ovmf().is_err() {
            berth_testkit::skip!("no OVMF installed (cargo xtask installs ovmf)");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let cmd = Config::new("t", Boot::Cdrom("/x.iso".into()))
            .firmware(Firmware::Uefi)
            .forward(2222, 22)
            .command(dir.path())
            .expect("command");
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("if=pflash,format=raw,unit=0,readonly=on"));
        assert!(joined.contains(&dir.path().join("OVMF_VARS.fd").display().to_string()));
        assert!(joined.contains("hostfwd=tcp:127.0.0.1:2222-:22"));
        assert!(joined.contains("media=cdrom"));
        assert!(dir.path().join("OVMF_VARS.fd").exists());
    }

    #[test]
    fn links_are_dgram_pairs_with_swapped_ports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Link::new("52:54:00:09:09:01")
            .expect("ports")
            .dump(&dir.path().join("a.pcap"));
        let b = a.peer("52:54:00:09:09:02");
        assert_eq!((b.local_port, b.remote_port), (a.remote_port, a.local_port));
        let args = |link: Link| {
            Config::new("t", Boot::Disk)
                .link(link)
                .command(dir.path())
                .expect("command")
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let joined = args(a.clone());
        assert!(joined.contains(&format!(
            "dgram,id=link0,local.type=inet,local.host=127.0.0.1,local.port={},remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            a.local_port, a.remote_port
        )), "{joined}");
        assert!(joined.contains("virtio-net-pci,netdev=link0,mac=52:54:00:09:09:01,romfile="));
        assert!(joined.contains("filter-dump,id=dump0,netdev=link0,file="));
        assert!(!args(b).contains("filter-dump"));
    }

    #[test]
    fn free_ports_are_nonzero() {
        assert_ne!(free_port().expect("port"), 0);
    }

    #[test]
    fn blank_disk_is_sparse_and_sized() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("d.img");
        blank_disk(&p, 1 << 30).expect("disk");
        let meta = std::fs::metadata(&p).expect("meta");
        assert_eq!(meta.len(), 1 << 30);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() < 64, "not sparse: {} blocks", meta.blocks());
    }

    #[test]
    fn find_locates_needles() {
        assert_eq!(find(b"abcdef", b"cd"), Some(2));
        assert_eq!(find(b"abc", b"x"), None);
    }
}

/// Runs `program` to completion: its stdout, or an error with its stderr.
pub fn run_checked(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            program: program.into(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

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

/// The ext4 state partition of a disk image that Berth autoformatted (the
/// first GPT partition), as `dumpe2fs -h` describes it.
pub fn state_superblock(disk: &Path) -> Result<String> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).map_err(io_err(disk))?;
    let mut header = [0u8; 92];
    f.seek(SeekFrom::Start(512))
        .and_then(|_| f.read_exact(&mut header))
        .map_err(io_err(disk))?;
    if &header[..8] != b"EFI PART" {
        return Err(Error::Command {
            command: format!("read the GPT of {}", disk.display()),
            stderr: "no GPT header".into(),
        });
    }
    let u64_at = |b: &[u8], at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(x)
    };
    let entries_lba = u64_at(&header, 72);
    let mut entry = [0u8; 128];
    f.seek(SeekFrom::Start(entries_lba * 512))
        .and_then(|_| f.read_exact(&mut entry))
        .map_err(io_err(disk))?;
    let offset = u64_at(&entry, 32) * 512;
    // e2fsprogs reads a filesystem inside an image at `path?offset=N`.
    run_checked(
        "dumpe2fs",
        &["-h", &format!("{}?offset={offset}", disk.display())],
    )
}

/// Whether a `dumpe2fs -h` text says the filesystem needs no fsck or
/// journal replay: state `clean` and no `needs_recovery` feature.
pub fn superblock_is_clean(dumpe2fs: &str) -> bool {
    let state_clean = dumpe2fs.lines().any(|l| {
        l.starts_with("Filesystem state:") && l.split_whitespace().last() == Some("clean")
    });
    state_clean && !dumpe2fs.contains("needs_recovery")
}
