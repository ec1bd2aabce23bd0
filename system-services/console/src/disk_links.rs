//! Block devices in the console as people expect them — Berth has no udev.
//! The console's `/dev` is its own, filled when the container was made, so
//! console-init adds the node of every block device that appears later (a
//! disk attached, the partitions `berth install` wrote, a USB stick) and
//! makes `/dev/disk/by-label`, `by-partlabel` and `by-uuid` from sysfs and
//! the filesystems' own labels, again whenever the set of devices changes.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use berth_init::probe::{self, BlockDev};

/// The kinds of links, each a directory under `/dev/disk`.
const KINDS: [&str; 3] = ["by-label", "by-partlabel", "by-uuid"];

/// What the links were made from: a new set of devices remakes them.
#[derive(Debug, Default)]
pub struct DiskLinks {
    seen: Vec<(String, u64, Option<String>)>,
}

impl DiskLinks {
    /// Remakes the links under `root/dev/disk` when the devices changed.
    pub fn refresh(&mut self, root: &Path) -> io::Result<bool> {
        let devices = probe::block_devices(&root.join("sys/class/block"), &root.join("dev"));
        let now: Vec<_> = devices
            .iter()
            .map(|d| (d.name.clone(), d.size, d.partname.clone()))
            .collect();
        if now == self.seen {
            return Ok(false);
        }
        for d in &devices {
            add_node(root, d)?;
        }
        write_links(&root.join("dev/disk"), &links(&devices))?;
        self.seen = now;
        Ok(true)
    }
}

/// Makes `d`'s node from its `major:minor` in sysfs when it is missing.
fn add_node(root: &Path, d: &BlockDev) -> io::Result<()> {
    if d.node.exists() {
        return Ok(());
    }
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
        return Err(io::Error::last_os_error());
    }
    // The `disk` group, as udev would have it.
    // SAFETY: as above.
    let _ = unsafe { libc::chown(path.as_ptr(), 0, 6) };
    Ok(())
}

/// (kind, name) → the device's kernel name.
fn links(devices: &[BlockDev]) -> BTreeMap<(&'static str, String), String> {
    let mut out = BTreeMap::new();
    for d in devices {
        if let Some(part) = &d.partname {
            out.insert(("by-partlabel", part.clone()), d.name.clone());
        }
        let Ok(mut f) = std::fs::File::open(&d.node) else {
            continue;
        };
        let label = match probe::ext_info(&mut f) {
            Ok(Some(ext)) => {
                out.insert(("by-uuid", ext.uuid), d.name.clone());
                Some(ext.label)
            }
            _ => probe::vfat_label(&mut f)
                .ok()
                .flatten()
                .or_else(|| probe::iso9660_label(&mut f).ok().flatten()),
        };
        if let Some(label) = label.filter(|l| !l.is_empty() && !l.contains('/')) {
            out.insert(("by-label", label), d.name.clone());
        }
    }
    out
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
        let mut links = DiskLinks::default();
        assert!(links.refresh(root).expect("refresh"));
        assert_eq!(
            std::fs::read_link(root.join("dev/disk/by-partlabel/BERTH_EFI")).expect("link"),
            Path::new("../../vda2")
        );
        assert_eq!(
            std::fs::read_link(root.join("dev/disk/by-label/BERTH_EFI")).expect("link"),
            Path::new("../../vda2")
        );
        assert!(!links.refresh(root).expect("refresh"), "nothing changed");
    }
}
