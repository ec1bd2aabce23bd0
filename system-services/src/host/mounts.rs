//! `mounts`, in cloud-init's form: `[device, mountpoint, fstype, options,
//! dump, pass]` with cloud-init's defaults for missing fields (`auto`,
//! `defaults,nofail`). Devices: a path, a bare kernel name (`sdb` →
//! `/dev/sdb`), `LABEL=`/`UUID=` (found through `/dev/disk/by-*` when
//! something made those links, else by reading the ext superblocks, as PID 1
//! finds the state partition), `host:/export` for NFS, anything for virtual
//! filesystems (tmpfs). A swap entry (fstype `swap`, or mountpoint `none` or
//! `swap`) is switched on with swapon(2). `noauto` entries are skipped.
//!
//! A mount that fails is reported with its index and boot goes on; `dump`
//! and `pass` mean nothing without fsck at boot and are ignored.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use berth_configs::forms::Scalar;

use super::{fingerprint, Applied, HostOps, HostPaths, MountCall, Problem, Report};

/// What an entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Mount {
        device: String,
        /// Absolute, as written (`/mnt/data`).
        mountpoint: String,
        fstype: String,
        flags: libc::c_ulong,
        data: String,
    },
    Swap {
        device: String,
        flags: i32,
    },
    /// Nothing to do, and why.
    Skip(String),
}

const SWAP_FLAG_PREFER: i32 = 0x8000;
const SWAP_FLAG_PRIO_MASK: i32 = 0x7fff;
const SWAP_FLAG_DISCARD: i32 = 0x10000;

/// Filesystems whose "device" is not a device.
const VIRTUAL: &[&str] = &[
    "tmpfs", "ramfs", "proc", "sysfs", "devpts", "overlay", "cgroup2", "nfs", "nfs4", "cifs", "9p",
    "virtiofs", "none",
];

/// Filesystems `auto` tries, in order.
const AUTO: &[&str] = &["ext4", "xfs", "btrfs", "vfat"];

/// Why a `mounts` entry is not one; the text is the entry's problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("a mount has 1 to 6 fields (device, mountpoint, type, options, dump, pass), not {0}")]
    FieldCount(usize),
    #[error("the device is empty")]
    EmptyDevice,
    #[error("swap priority `{0}` is not a number")]
    SwapPriority(String),
    #[error("mount point `{0}` is not an absolute path")]
    RelativeMountPoint(String),
}

/// Why an entry was not mounted or swapped on.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error("swapon {}: {source}", device.display())]
    Swapon {
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Each filesystem type tried, with what mount(2) said to it.
    #[error("mounting {device} on {mountpoint}: {}", attempts(.tried))]
    Mount {
        device: String,
        mountpoint: String,
        tried: Vec<(String, std::io::Error)>,
    },
    #[error("no device with {kind} `{value}` ({looked_at} devices looked at; labels and UUIDs are read from ext filesystems)")]
    NoDevice {
        kind: &'static str,
        value: String,
        looked_at: usize,
    },
    #[error("`{0}` is not host:/export")]
    NotNfsExport(String),
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} has no address")]
    NoAddress(String),
}

fn attempts(tried: &[(String, std::io::Error)]) -> String {
    tried
        .iter()
        .map(|(fstype, e)| format!("{fstype}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn parse(fields: &[Scalar]) -> Result<Plan, EntryError> {
    if fields.is_empty() || fields.len() > 6 {
        return Err(EntryError::FieldCount(fields.len()));
    }
    let field = |i: usize| fields.get(i).map(|s| s.0.trim()).filter(|s| !s.is_empty());
    let device = field(0).ok_or(EntryError::EmptyDevice)?;
    let mountpoint = field(1);
    let fstype = field(2).unwrap_or("auto");
    let options = field(3).unwrap_or("defaults,nofail");
    let swap = fstype == "swap" || matches!(mountpoint, Some("swap"));
    let device = device_path(device, fstype);
    if swap {
        let mut flags = 0;
        for opt in options.split(',').map(str::trim) {
            if let Some(p) = opt.strip_prefix("pri=") {
                let p: i32 = p
                    .parse()
                    .map_err(|_| EntryError::SwapPriority(p.to_string()))?;
                flags |= SWAP_FLAG_PREFER | (p & SWAP_FLAG_PRIO_MASK);
            } else if opt == "discard" || opt.starts_with("discard=") {
                flags |= SWAP_FLAG_DISCARD;
            }
        }
        if has(options, "noauto") {
            return Ok(Plan::Skip(format!("swap on {device} is `noauto`")));
        }
        return Ok(Plan::Swap { device, flags });
    }
    let Some(mountpoint) = mountpoint.filter(|m| *m != "none") else {
        return Ok(Plan::Skip(format!("{device} has no mount point")));
    };
    if !mountpoint.starts_with('/') {
        return Err(EntryError::RelativeMountPoint(mountpoint.to_string()));
    }
    if has(options, "noauto") {
        return Ok(Plan::Skip(format!("{mountpoint} is `noauto`")));
    }
    let (flags, data) = options_to_flags(options);
    Ok(Plan::Mount {
        device,
        mountpoint: mountpoint.to_string(),
        fstype: fstype.to_string(),
        flags,
        data,
    })
}

fn has(options: &str, opt: &str) -> bool {
    options.split(',').any(|o| o.trim() == opt)
}

fn device_path(device: &str, fstype: &str) -> String {
    if device.starts_with('/')
        || device.contains('=')
        || device.contains(':')
        || VIRTUAL.contains(&fstype)
    {
        device.to_string()
    } else {
        format!("/dev/{device}")
    }
}

/// mount(8)'s options split into `MS_*` flags and the filesystem's own data;
/// fstab-only options (`defaults`, `nofail`, `_netdev`, `x-…`) dropped.
pub fn options_to_flags(options: &str) -> (libc::c_ulong, String) {
    let mut flags: libc::c_ulong = 0;
    let mut data = Vec::new();
    for opt in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let set = |f: libc::c_ulong| Some((f, true));
        let clear = |f: libc::c_ulong| Some((f, false));
        let change = match opt {
            "ro" => set(libc::MS_RDONLY),
            "rw" => clear(libc::MS_RDONLY),
            "nosuid" => set(libc::MS_NOSUID),
            "suid" => clear(libc::MS_NOSUID),
            "nodev" => set(libc::MS_NODEV),
            "dev" => clear(libc::MS_NODEV),
            "noexec" => set(libc::MS_NOEXEC),
            "exec" => clear(libc::MS_NOEXEC),
            "sync" => set(libc::MS_SYNCHRONOUS),
            "async" => clear(libc::MS_SYNCHRONOUS),
            "dirsync" => set(libc::MS_DIRSYNC),
            "noatime" => set(libc::MS_NOATIME),
            "atime" => clear(libc::MS_NOATIME),
            "nodiratime" => set(libc::MS_NODIRATIME),
            "relatime" => set(libc::MS_RELATIME),
            "norelatime" => clear(libc::MS_RELATIME),
            "strictatime" => set(libc::MS_STRICTATIME),
            "bind" => set(libc::MS_BIND),
            "rbind" => set(libc::MS_BIND | libc::MS_REC),
            "defaults" | "auto" | "nofail" | "_netdev" | "user" | "nouser" | "users" | "owner"
            | "group" => None,
            o if o.starts_with("x-") || o.starts_with("comment=") => None,
            o => {
                data.push(o.to_string());
                None
            }
        };
        if let Some((f, on)) = change {
            if on {
                flags |= f;
            } else {
                flags &= !f;
            }
        }
    }
    (flags, data.join(","))
}

pub(crate) fn apply(
    ops: &dyn HostOps,
    paths: &HostPaths,
    mounts: &[Vec<Scalar>],
    before: &Applied,
    applied: &mut Applied,
    report: &mut Report,
) {
    let mut now = Vec::new();
    for (i, fields) in mounts.iter().enumerate() {
        let print = fingerprint(fields);
        if before.mounts.contains(&print) {
            now.push(print);
            continue;
        }
        let field = format!("mounts[{i}]");
        let result = parse(fields)
            .map_err(MountError::from)
            .and_then(|plan| run(ops, paths, &plan));
        match result {
            Ok(line) => {
                report.done(format!("{field}: {line}"));
                now.push(print);
            }
            Err(e) => report.problems.push(Problem::new(field, e.to_string())),
        }
    }
    applied.mounts = now;
}

fn run(ops: &dyn HostOps, paths: &HostPaths, plan: &Plan) -> Result<String, MountError> {
    match plan {
        Plan::Skip(why) => Ok(format!("skipped: {why}")),
        Plan::Swap { device, flags } => {
            let dev = resolve_device(paths, device)?;
            match ops.swapon(&dev, *flags) {
                Ok(()) => Ok(format!("swap on {}", dev.display())),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    Ok(format!("swap on {} already on", dev.display()))
                }
                Err(source) => Err(MountError::Swapon {
                    device: dev,
                    source,
                }),
            }
        }
        Plan::Mount {
            device,
            mountpoint,
            fstype,
            flags,
            data,
        } => {
            let target = paths.root.join(mountpoint.trim_start_matches('/'));
            let source = if VIRTUAL.contains(&fstype.as_str()) {
                device.clone()
            } else {
                load_held_drivers(ops, paths, device);
                resolve_device(paths, device)?.display().to_string()
            };
            let mut data = data.clone();
            if fstype == "nfs" || fstype == "nfs4" {
                nfs_address(&source, &mut data)?;
            }
            if mounted(&target, &source) {
                return Ok(format!("{source} already mounted on {mountpoint}"));
            }
            let types: Vec<&str> = if fstype == "auto" {
                AUTO.to_vec()
            } else {
                vec![fstype.as_str()]
            };
            let mut tried = Vec::new();
            for t in types {
                let call = MountCall {
                    source: source.clone(),
                    target: target.clone(),
                    fstype: t.to_string(),
                    flags: *flags,
                    data: data.clone(),
                };
                match ops.mount(&call) {
                    Ok(()) => return Ok(format!("mounted {source} ({t}) on {mountpoint}")),
                    Err(e) => tried.push((t.to_string(), e)),
                }
            }
            Err(MountError::Mount {
                device: source,
                mountpoint: mountpoint.clone(),
                tried,
            })
        }
    }
}

/// An optical drive (`/dev/sr0`) has a node once its driver is loaded, and so
/// has a disk behind a legacy IDE controller; a boot from other disks loads
/// those drivers only after the ready line (their probes are slow under
/// emulation, and nothing else needs them sooner). A mount of a device that
/// is not there yet loads them first.
fn load_held_drivers(ops: &dyn HostOps, paths: &HostPaths, device: &str) {
    let Some(dir) = &paths.modules else {
        return;
    };
    let name = device.strip_prefix("/dev/");
    let missing = match name {
        Some(name) => !paths.dev.join(name).exists(),
        None => resolve_device(paths, device).is_err(),
    };
    if !missing {
        return;
    }
    let drivers = if name.is_some_and(berth_sys::probe::is_optical_name) {
        berth_sys::probe::OPTICAL_DRIVERS
    } else if ide_controller_present(&paths.root) {
        berth_sys::probe::IDE_DRIVERS
    } else {
        return;
    };
    let wanted: Vec<String> = drivers
        .iter()
        .filter(|d| !paths.root.join("sys/module").join(d).exists())
        .map(|d| d.to_string())
        .collect();
    if wanted.is_empty() {
        return;
    }
    // One call, so that a shared dependency (libata) is read once.
    // The kernel command line's module parameters and blacklist apply, as
    // they did to the drivers stage 1 loaded.
    let options = berth_sys::modules::Options::kernel(&paths.root);
    let loaded = berth_sys::modules::load_with(dir, Some(&wanted), &options, |path, c, args| {
        ops.load_module(path, args, c)
    });
    match loaded {
        Ok(report) => {
            for (name, why) in &report.failed {
                log::warn!("{device}: cannot load {name}: {why}");
            }
            for name in &report.blacklisted {
                log::warn!("{device}: not loading {name}: the kernel command line's modprobe.blacklist names it");
            }
        }
        Err(e) => log::warn!("{device}: cannot load {}: {e}", wanted.join(", ")),
    }
}

/// Whether a PCI IDE controller (class 0x0101) is in the machine.
fn ide_controller_present(root: &Path) -> bool {
    std::fs::read_dir(root.join("sys/bus/pci/devices")).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            std::fs::read_to_string(e.path().join("class"))
                .is_ok_and(|c| c.trim().starts_with("0x0101"))
        })
    })
}

/// `LABEL=`/`UUID=` → a device node; other devices as they are.
pub fn resolve_device(paths: &HostPaths, device: &str) -> Result<PathBuf, MountError> {
    let (kind, dir, value) = if let Some(l) = device.strip_prefix("LABEL=") {
        ("label", "by-label", l)
    } else if let Some(u) = device.strip_prefix("UUID=") {
        ("uuid", "by-uuid", u)
    } else {
        return Ok(PathBuf::from(device));
    };
    let value = value.trim_matches('"');
    let link = paths.dev.join("disk").join(dir).join(value);
    if link.exists() {
        return Ok(link);
    }
    let devices = berth_sys::probe::block_devices(&paths.sys_block, &paths.dev);
    let found = if kind == "label" {
        berth_sys::probe::find_ext(&devices, Some(value), None)
    } else {
        berth_sys::probe::find_ext(&devices, None, Some(&value.to_ascii_lowercase()))
    };
    found.map(|d| d.node).ok_or_else(|| MountError::NoDevice {
        kind,
        value: value.to_string(),
        looked_at: devices.len(),
    })
}

/// The kernel's NFS client wants the server's address (`addr=`), which
/// mount.nfs normally looks up; do that here.
fn nfs_address(source: &str, data: &mut String) -> Result<(), MountError> {
    if data.split(',').any(|o| o.starts_with("addr=")) {
        return Ok(());
    }
    let host = match source.rsplit_once(":/") {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => return Err(MountError::NotNfsExport(source.to_string())),
    };
    let addr = (host, 2049)
        .to_socket_addrs()
        .map_err(|source| MountError::Resolve {
            host: host.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| MountError::NoAddress(host.to_string()))?;
    if !data.is_empty() {
        data.push(',');
    }
    data.push_str(&format!("addr={}", addr.ip()));
    Ok(())
}

/// Whether `source` is already mounted on `target` (a restarted berthd).
fn mounted(target: &Path, source: &str) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|line| {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        let point = left.split(' ').nth(4).map(unescape);
        let src = right.split(' ').nth(1).map(unescape);
        point.as_deref() == Some(&*target.to_string_lossy()) && src.as_deref() == Some(source)
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::super::recording::Call;
    use super::super::testing::root;
    use super::super::Recording;
    use super::*;

    fn entry(fields: &[&str]) -> Vec<Scalar> {
        fields.iter().map(|f| Scalar(f.to_string())).collect()
    }

    #[test]
    fn six_fields_with_cloud_init_defaults() {
        assert_eq!(
            parse(&entry(&["sdb", "/mnt/data"])),
            Ok(Plan::Mount {
                device: "/dev/sdb".into(),
                mountpoint: "/mnt/data".into(),
                fstype: "auto".into(),
                flags: 0,
                data: String::new(),
            })
        );
        assert_eq!(
            parse(&entry(&[
                "LABEL=data",
                "/var/data",
                "ext4",
                "defaults,noatime,ro,x-systemd.automount,errors=remount-ro",
                "0",
                "2"
            ])),
            Ok(Plan::Mount {
                device: "LABEL=data".into(),
                mountpoint: "/var/data".into(),
                fstype: "ext4".into(),
                flags: libc::MS_NOATIME | libc::MS_RDONLY,
                data: "errors=remount-ro".into(),
            })
        );
        assert_eq!(
            parse(&entry(&[
                "tmpfs",
                "/var/cache",
                "tmpfs",
                "size=64m,mode=755"
            ])),
            Ok(Plan::Mount {
                device: "tmpfs".into(),
                mountpoint: "/var/cache".into(),
                fstype: "tmpfs".into(),
                flags: 0,
                data: "size=64m,mode=755".into(),
            })
        );
        assert!(matches!(
            parse(&entry(&["nas:/export", "/mnt/nas", "nfs", "vers=4.2,_netdev"])),
            Ok(Plan::Mount { ref device, ref data, .. }) if device == "nas:/export" && data == "vers=4.2"
        ));
    }

    #[test]
    fn swap_entries() {
        assert_eq!(
            parse(&entry(&["/dev/vdb2", "none", "swap", "sw,pri=5", "0", "0"])),
            Ok(Plan::Swap {
                device: "/dev/vdb2".into(),
                flags: SWAP_FLAG_PREFER | 5,
            })
        );
        assert_eq!(
            parse(&entry(&["UUID=abc", "swap"])),
            Ok(Plan::Swap {
                device: "UUID=abc".into(),
                flags: 0,
            })
        );
    }

    #[test]
    fn bad_and_skipped_entries() {
        assert!(parse(&[]).is_err());
        assert!(parse(&entry(&["a", "b", "c", "d", "e", "f", "g"])).is_err());
        assert!(parse(&entry(&["/dev/sdb", "relative"])).is_err());
        assert!(parse(&entry(&["/dev/sdb", "/x", "ext4", "defaults", "0", "0"])).is_ok());
        assert!(parse(&entry(&["/dev/vdb", "/x", "swap", "pri=high"])).is_err());
        assert!(matches!(
            parse(&entry(&["/dev/sdb", "none"])),
            Ok(Plan::Skip(_))
        ));
        assert!(matches!(
            parse(&entry(&["/dev/sdb", "/x", "ext4", "noauto"])),
            Ok(Plan::Skip(_))
        ));
    }

    #[test]
    fn apply_reports_failures_by_index_and_goes_on() {
        let r = root();
        let ops = Recording::default();
        ops.fail("mount", "mnt/broken", libc::EINVAL);
        let mounts = vec![
            entry(&["tmpfs", "/mnt/broken", "tmpfs"]),
            entry(&["LABEL=nowhere", "/mnt/data", "ext4"]),
            entry(&["/dev/vdb2", "none", "swap"]),
            entry(&["tmpfs", "/var/cache", "tmpfs", "size=1m"]),
            entry(&["/dev/vdc", "/mnt/auto"]),
        ];
        let mut report = Report::default();
        let mut applied = Applied::default();
        apply(
            &ops,
            &r.paths,
            &mounts,
            &Applied::default(),
            &mut applied,
            &mut report,
        );
        let fields: Vec<&str> = report.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["mounts[0]", "mounts[1]"], "{:?}", report.problems);
        assert!(report.problems[1].message.contains("label `nowhere`"));
        let calls = ops.calls();
        let kinds: Vec<&str> = calls.iter().map(Call::kind).collect();
        assert_eq!(kinds, ["mount", "swapon", "mount", "mount"]);
        match &calls[2] {
            Call::Mount(m) => {
                assert_eq!(m.target, r.dir.path().join("var/cache"));
                assert_eq!(m.data, "size=1m");
            }
            other => panic!("{other:?}"),
        }
        match &calls[3] {
            Call::Mount(m) => assert_eq!(m.fstype, "ext4", "auto tries ext4 first"),
            other => panic!("{other:?}"),
        }
        assert_eq!(applied.mounts.len(), 3);
    }

    #[test]
    fn a_mount_of_a_disk_that_is_not_there_loads_the_ide_drivers_first() {
        let r = root();
        let dir = r.paths.modules.clone().expect("modules dir");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/drivers/ata/libata.ko:\n\
             kernel/drivers/ata/ata_piix.ko: kernel/drivers/ata/libata.ko\n\
             kernel/drivers/ata/ata_generic.ko: kernel/drivers/ata/libata.ko\n",
        )
        .expect("dep");
        let mounts = vec![entry(&["/dev/sda1", "/mnt/old", "ext4"])];
        let run = || {
            let ops = Recording::default();
            apply(
                &ops,
                &r.paths,
                &mounts,
                &Applied::default(),
                &mut Applied::default(),
                &mut Report::default(),
            );
            ops.calls()
                .iter()
                .filter(|c| c.kind() == "module")
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
        };
        assert!(run().is_empty(), "no IDE controller, nothing to load");
        let ide = r.dir.path().join("sys/devices/pci0000:00/0000:00:01.1");
        std::fs::create_dir_all(&ide).expect("pci");
        std::fs::write(ide.join("class"), "0x010180\n").expect("class");
        let bus = r.dir.path().join("sys/bus/pci/devices");
        std::fs::create_dir_all(&bus).expect("bus");
        std::os::unix::fs::symlink(&ide, bus.join("0000:00:01.1")).expect("link");
        let loaded = run();
        assert_eq!(loaded.len(), 3, "{loaded:?}");
        assert!(loaded[1].contains("ata_piix") && loaded[2].contains("ata_generic"));
        // Loaded already (or the disk is there): nothing again.
        std::fs::create_dir_all(r.dir.path().join("sys/module/ata_piix")).expect("m");
        std::fs::create_dir_all(r.dir.path().join("sys/module/ata_generic")).expect("m");
        assert!(run().is_empty());
    }

    #[test]
    fn a_mount_of_an_optical_drive_loads_its_driver_first() {
        let r = root();
        let dir = r.paths.modules.clone().expect("modules dir");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/drivers/scsi/sr_mod.ko: kernel/drivers/cdrom/cdrom.ko\n\
             kernel/drivers/cdrom/cdrom.ko:\n",
        )
        .expect("dep");
        let ops = Recording::default();
        let mounts = vec![
            entry(&["/dev/sr0", "/media/cdrom", "iso9660", "ro"]),
            entry(&["/dev/vdb", "/mnt/data", "ext4"]),
        ];
        let mut report = Report::default();
        let mut applied = Applied::default();
        apply(
            &ops,
            &r.paths,
            &mounts,
            &Applied::default(),
            &mut applied,
            &mut report,
        );
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let subjects: Vec<String> = ops
            .calls()
            .iter()
            .map(|c| format!("{} {c:?}", c.kind()))
            .collect();
        assert_eq!(subjects.len(), 4, "{subjects:?}");
        assert!(subjects[0].starts_with("module ") && subjects[0].contains("cdrom"));
        assert!(subjects[1].starts_with("module ") && subjects[1].contains("sr_mod"));
        assert!(subjects[2].starts_with("mount "), "{subjects:?}");
        assert!(subjects[3].starts_with("mount "), "no driver for a disk");

        // Once the node is there (the driver is loaded), nothing is loaded again.
        std::fs::write(r.paths.dev.join("sr0"), "").expect("node");
        let ops = Recording::default();
        let mut report = Report::default();
        apply(
            &ops,
            &r.paths,
            &mounts[..1],
            &Applied::default(),
            &mut applied,
            &mut report,
        );
        let kinds: Vec<&str> = ops.calls().iter().map(Call::kind).collect();
        assert_eq!(kinds, ["mount"]);
    }

    #[test]
    fn labels_through_dev_disk_links() {
        let r = root();
        let by = r.paths.dev.join("disk/by-label");
        std::fs::create_dir_all(&by).expect("mkdir");
        std::fs::write(r.paths.dev.join("vdb1"), "").expect("node");
        std::os::unix::fs::symlink("../../vdb1", by.join("data")).expect("link");
        assert_eq!(
            resolve_device(&r.paths, "LABEL=data").expect("found"),
            by.join("data")
        );
        assert_eq!(
            resolve_device(&r.paths, "/dev/sdb").expect("plain"),
            Path::new("/dev/sdb")
        );
    }

    #[test]
    fn mountinfo_unescapes() {
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
    }
}
