//! Block devices in the console as people expect them — Berth has no udev.
//! The console's `/dev` is its own, filled when the container was made, so
//! console-init adds the node of every block device that appears later (a
//! disk attached, the partitions `berth install` wrote, a USB stick) and
//! makes `/dev/disk/by-label`, `by-partlabel` and `by-uuid` from sysfs and
//! the filesystems' own labels, again whenever the set of devices changes.
//! It also writes what udev's database would hold for each (`/run/udev/data`),
//! which is where `lsblk` and other libudev users read labels from.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use berth_sys::probe::{self, BlockDev};

/// The kinds of links, each a directory under `/dev/disk`.
const KINDS: [&str; 3] = ["by-label", "by-partlabel", "by-uuid"];

/// What the links were made from: a new set of devices remakes them.
#[derive(Debug, Default)]
pub struct DiskLinks {
    seen: Vec<(String, u64, Option<String>)>,
}

impl DiskLinks {
    /// Remakes the links under `root/dev/disk` when the devices changed, or
    /// when `announced` (the kernel sent a uevent naming a device: a
    /// filesystem made on a partition changes no device, and `echo change >
    /// /sys/class/block/NAME/uevent`, what `udevadm trigger` does, is how one
    /// says so). Whether they were remade.
    pub fn refresh(&mut self, root: &Path, announced: bool) -> io::Result<bool> {
        let devices = probe::block_devices(&root.join("sys/class/block"), &root.join("dev"));
        let now: Vec<_> = devices
            .iter()
            .map(|d| (d.name.clone(), d.size, d.partname.clone()))
            .collect();
        if now == self.seen && !announced {
            return Ok(false);
        }
        for d in &devices {
            add_node(root, d)?;
        }
        let found = probe_all(&devices);
        write_links(&root.join("dev/disk"), &links(&found))?;
        write_udev_db(root, &found)?;
        self.seen = now;
        Ok(true)
    }
}

/// Makes `d`'s node from its `major:minor` in sysfs when it is missing.
fn add_node(root: &Path, d: &BlockDev) -> io::Result<()> {
    let Some((major, minor)) =
        std::fs::read_to_string(root.join("sys/class/block").join(&d.name).join("dev"))
            .ok()
            .and_then(|t| {
                let (a, b) = t.trim().split_once(':')?;
                Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))
            })
    else {
        return Ok(());
    };
    if let Some(parent) = d.node.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let path = std::ffi::CString::new(d.node.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a NUL-terminated string alive for the call.
    let r = unsafe {
        libc::mknod(
            path.as_ptr(),
            libc::S_IFBLK | 0o660,
            libc::makedev(major, minor),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        // berthd adds the same node to the console's /dev as the kernel
        // announces the disk; whoever comes second finds it made. Failing
        // here would leave the links unmade until the next scan, minutes on.
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(e);
    }
    // The `disk` group, as udev would have it.
    // SAFETY: as above.
    let _ = unsafe { libc::chown(path.as_ptr(), 0, 6) };
    Ok(())
}

/// What a device holds, as udev's blkid builtin would report it.
#[derive(Debug, Default)]
struct Found {
    name: String,
    partname: Option<String>,
    fstype: Option<&'static str>,
    label: Option<String>,
    uuid: Option<String>,
}

fn probe_all(devices: &[BlockDev]) -> Vec<Found> {
    devices
        .iter()
        .map(|d| {
            let mut found = Found {
                name: d.name.clone(),
                partname: d.partname.clone(),
                ..Found::default()
            };
            if let Ok(mut f) = std::fs::File::open(&d.node) {
                if let Ok(Some(ext)) = probe::ext_info(&mut f) {
                    found.fstype = Some("ext4");
                    found.label = Some(ext.label);
                    found.uuid = Some(ext.uuid);
                } else if let Ok(Some(label)) = probe::vfat_label(&mut f) {
                    found.fstype = Some("vfat");
                    found.label = Some(label);
                } else if let Ok(Some(label)) = probe::iso9660_label(&mut f) {
                    found.fstype = Some("iso9660");
                    found.label = Some(label);
                }
            }
            found.label = found.label.filter(|l| !l.is_empty());
            found
        })
        .collect()
}

/// (kind, name) → the device's kernel name.
fn links(found: &[Found]) -> BTreeMap<(&'static str, String), String> {
    let mut out = BTreeMap::new();
    for f in found {
        let safe = |s: &String| !s.contains('/');
        if let Some(part) = f.partname.as_ref().filter(|s| safe(s)) {
            out.insert(("by-partlabel", part.clone()), f.name.clone());
        }
        if let Some(label) = f.label.as_ref().filter(|s| safe(s)) {
            out.insert(("by-label", label.clone()), f.name.clone());
        }
        if let Some(uuid) = f.uuid.as_ref().filter(|s| safe(s)) {
            out.insert(("by-uuid", uuid.clone()), f.name.clone());
        }
    }
    out
}

/// udev's `_ENC` form: anything but plain characters as `\xNN`.
fn udev_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"#+-.:=@_".contains(&b) {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// `/run/udev/data/b<major>:<minor>`: the properties libudev reads.
fn write_udev_db(root: &Path, found: &[Found]) -> io::Result<()> {
    let dir = root.join("run/udev/data");
    std::fs::create_dir_all(&dir)?;
    for f in found {
        let Ok(devno) =
            std::fs::read_to_string(root.join("sys/class/block").join(&f.name).join("dev"))
        else {
            continue;
        };
        let mut text = String::new();
        if let Some(t) = f.fstype {
            text.push_str(&format!("E:ID_FS_TYPE={t}\nE:ID_FS_USAGE=filesystem\n"));
        }
        if let Some(l) = &f.label {
            text.push_str(&format!(
                "E:ID_FS_LABEL={l}\nE:ID_FS_LABEL_ENC={}\n",
                udev_encode(l)
            ));
        }
        if let Some(u) = &f.uuid {
            text.push_str(&format!(
                "E:ID_FS_UUID={u}\nE:ID_FS_UUID_ENC={}\n",
                udev_encode(u)
            ));
        }
        if let Some(p) = &f.partname {
            text.push_str(&format!(
                "E:ID_PART_TABLE_TYPE=gpt\nE:ID_PART_ENTRY_NAME={}\n",
                udev_encode(p)
            ));
        }
        std::fs::write(dir.join(format!("b{}", devno.trim())), text)?;
    }
    Ok(())
}

fn write_links(dir: &Path, links: &BTreeMap<(&'static str, String), String>) -> io::Result<()> {
    for kind in KINDS {
        let sub = dir.join(kind);
        if sub.exists() {
            std::fs::remove_dir_all(&sub)?;
        }
        std::fs::create_dir_all(&sub)?;
    }
    for ((kind, name), device) in links {
        let link: PathBuf = dir.join(kind).join(name);
        std::os::unix::fs::symlink(Path::new("../..").join(device), link)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_by_partition_name_and_filesystem_label() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let sys = root.join("sys/class/block");
        for (name, uevent) in [
            ("vda", "DEVNAME=vda\nDEVTYPE=disk\n"),
            (
                "vda2",
                "DEVNAME=vda2\nDEVTYPE=partition\nPARTNAME=BERTH_EFI\n",
            ),
        ] {
            std::fs::create_dir_all(sys.join(name)).expect("mkdir");
            std::fs::write(sys.join(name).join("uevent"), uevent).expect("uevent");
            std::fs::write(sys.join(name).join("size"), "8192\n").expect("size");
            std::fs::write(
                sys.join(name).join("dev"),
                if name == "vda" { "254:0\n" } else { "254:2\n" },
            )
            .expect("dev");
        }
        std::fs::create_dir_all(root.join("dev")).expect("dev");
        // vda2: a FAT boot sector labelled BERTH_EFI (FAT32 layout).
        let mut fat = vec![0u8; 4 << 20];
        fat[0x52..0x5a].copy_from_slice(b"FAT32   ");
        fat[0x47..0x52].copy_from_slice(b"BERTH_EFI  ");
        fat[0x42] = 0x29;
        fat[510] = 0x55;
        fat[511] = 0xAA;
        std::fs::write(root.join("dev/vda2"), &fat).expect("vda2");
        std::fs::write(root.join("dev/vda"), vec![0u8; 4 << 20]).expect("vda");
        // The nodes are there already, as when berthd made them first: no error.
        let mut links = DiskLinks::default();
        assert!(links.refresh(root, false).expect("refresh"));
        assert_eq!(
            std::fs::read_link(root.join("dev/disk/by-partlabel/BERTH_EFI")).expect("link"),
            Path::new("../../vda2")
        );
        assert_eq!(
            std::fs::read_link(root.join("dev/disk/by-label/BERTH_EFI")).expect("link"),
            Path::new("../../vda2")
        );
        let db = std::fs::read_to_string(root.join("run/udev/data/b254:2")).expect("udev db");
        assert!(db.contains("E:ID_FS_LABEL_ENC=BERTH_EFI\n"), "{db}");
        assert!(db.contains("E:ID_PART_ENTRY_NAME=BERTH_EFI\n"), "{db}");
        assert!(
            !links.refresh(root, false).expect("refresh"),
            "nothing changed"
        );
        // A label changed on the same devices: seen when announced.
        fat[0x47..0x52].copy_from_slice(b"NEW_LABEL  ");
        std::fs::write(root.join("dev/vda2"), &fat).expect("vda2");
        assert!(links.refresh(root, true).expect("refresh"));
        assert_eq!(
            std::fs::read_link(root.join("dev/disk/by-label/NEW_LABEL")).expect("link"),
            Path::new("../../vda2")
        );
        assert!(!root.join("dev/disk/by-label/BERTH_EFI").exists());
    }
}
