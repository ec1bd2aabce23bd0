//! What QEMU is asked to run: firmware, boot medium, drives, NICs, links
//! between VMs, and the command line that says so.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{io_err, Error, Result};

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
    /// On the legacy IDE controller (`/dev/sdX` to the guest) instead of virtio.
    pub ide: bool,
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
            ide: false,
        });
        self
    }

    /// A writable disk on the IDE controller's primary master, as old PCs
    /// in IDE mode and some hypervisors' defaults attach disks.
    pub fn ide_disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.drives.push(Drive {
            path: path.into(),
            read_only: false,
            ide: true,
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
                "file={},if={},format={format},cache=unsafe{}",
                drive.path.display(),
                if drive.ide { "ide,index=0" } else { "virtio" },
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
        // An entropy source, as clouds give one (RDRAND, virtio-rng): QEMU's
        // default CPU has no RDRAND, and without it the guest's random pool is
        // ready only 7–9 s into a boot under TCG.
        cmd.args(["-device", "virtio-rng-pci"]);
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
