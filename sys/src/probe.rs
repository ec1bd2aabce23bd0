//! Finding devices by what is written on them: ISO9660 volume labels, ext4
//! labels and UUIDs, GPT partition names — read straight from the devices,
//! without blkid or udev.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A block device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name (`vda1`, `sr0`).
    pub name: String,
    /// Its node under the `/dev` given to [`block_devices`].
    pub node: PathBuf,
    pub partition: bool,
    /// GPT partition name (`PARTNAME=` in uevent), if any.
    pub partname: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

impl BlockDev {
    /// A SCSI optical drive (`sr0`: CD, DVD, an IDE or SATA one too). Opening
    /// one without a disc costs the kernel 0.1–0.2 s under emulation (the
    /// drive is asked, and refuses with ENOMEDIUM); its size does not tell, as
    /// the kernel reports a guessed capacity for an empty drive.
    pub fn is_optical(&self) -> bool {
        is_optical_name(&self.name)
    }
}

/// The optical drives' driver (CD, DVD; IDE, SATA, USB and SCSI ones alike,
/// all of them SCSI devices of type 5 to the kernel). PID 1 holds it back
/// until a search needs it, and berthd loads it for a mount that names a drive.
pub const OPTICAL_DRIVERS: &[&str] = &["sr_mod"];

/// The legacy IDE controllers' drivers (PIIX, and the generic one that claims
/// an IDE controller no other driver knows), held back the same way; a state
/// partition or a mounted disk can be behind them, never behind a drive.
pub const IDE_DRIVERS: &[&str] = &["ata_piix", "ata_generic"];

/// Whether `name` (a kernel name, `sr0`) is an optical drive's.
pub fn is_optical_name(name: &str) -> bool {
    name.strip_prefix("sr")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every block device with a size, from `sys_block` (`/sys/class/block`).
/// Sorted by name so the search order is stable, optical drives last: a
/// search that finds its device on a disk then never opens an empty drive.
pub fn block_devices(sys_block: &Path, dev: &Path) -> Vec<BlockDev> {
    let Ok(dir) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let base = sys_block.join(&name);
        let uevent = std::fs::read_to_string(base.join("uevent")).unwrap_or_default();
        let field = |key: &str| {
            uevent
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        let sectors: u64 = std::fs::read_to_string(base.join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        // Unattached loop devices and empty card readers have size 0: nothing to
        // read (an empty optical drive reports a guess instead; see is_optical).
        if sectors == 0 {
            continue;
        }
        let devname = field("DEVNAME").unwrap_or_else(|| name.clone());
        out.push(BlockDev {
            node: dev.join(&devname),
            partition: field("DEVTYPE").as_deref() == Some("partition"),
            partname: field("PARTNAME"),
            size: sectors * 512,
            name,
        });
    }
    out.sort_by(|a, b| (a.is_optical(), &a.name).cmp(&(b.is_optical(), &b.name)));
    out
}

fn read_at(r: &mut (impl Read + Seek), offset: u64, buf: &mut [u8]) -> io::Result<bool> {
    r.seek(SeekFrom::Start(offset))?;
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        // Shorter than the structure: not this kind of filesystem.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The ISO9660 volume identifier, from the primary volume descriptor (sector 16).
pub fn iso9660_label(r: &mut (impl Read + Seek)) -> io::Result<Option<String>> {
    // Volume descriptors start at sector 16 and end with a terminator (type 255);
    // the primary one (type 1) is normally first, but El Torito boot records may precede it.
    let mut d = [0u8; 2048];
    for sector in 16..32u64 {
        if !read_at(r, sector * 2048, &mut d)? || &d[1..6] != b"CD001" {
            return Ok(None);
        }
        match d[0] {
            1 => {
                let id = String::from_utf8_lossy(&d[40..72]);
                return Ok(Some(id.trim_end_matches([' ', '\0']).to_string()));
            }
            255 => return Ok(None),
            _ => continue,
        }
    }
    Ok(None)
}

/// The volume label of a FAT12/16/32 filesystem, from its boot sector
/// (`mkfs.vfat -n`, which `cloud-localds -f vfat` uses).
pub fn vfat_label(r: &mut (impl Read + Seek)) -> io::Result<Option<String>> {
    let mut bs = [0u8; 512];
    if !read_at(r, 0, &mut bs)? || bs[510..512] != [0x55, 0xAA] {
        return Ok(None);
    }
    // The extended BPB sits at 36 on FAT12/16 and at 64 on FAT32; its file
    // system type field names which.
    let label_at = if &bs[82..87] == b"FAT32" {
        71
    } else if &bs[54..57] == b"FAT" {
        43
    } else {
        return Ok(None);
    };
    let label = String::from_utf8_lossy(&bs[label_at..label_at + 11]);
    Ok(Some(label.trim_end_matches([' ', '\0']).to_string()))
}

/// Label and UUID of an ext2/3/4 filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtInfo {
    pub label: String,
    pub uuid: String,
}

pub fn ext_info(r: &mut (impl Read + Seek)) -> io::Result<Option<ExtInfo>> {
    let mut sb = [0u8; 1024];
    if !read_at(r, 1024, &mut sb)? {
        return Ok(None);
    }
    // s_magic at 0x38.
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Ok(None);
    }
    // s_uuid at 0x68 (16 bytes), s_volume_name at 0x78 (16 bytes, NUL padded).
    let u = &sb[0x68..0x78];
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        hex(&u[0..4]),
        hex(&u[4..6]),
        hex(&u[6..8]),
        hex(&u[8..10]),
        hex(&u[10..16])
    );
    let label = String::from_utf8_lossy(&sb[0x78..0x88])
        .trim_end_matches('\0')
        .to_string();
    Ok(Some(ExtInfo { label, uuid }))
}

/// Whether an ext2/3/4 filesystem was unmounted cleanly: the kernel clears
/// "valid" and sets "needs recovery" while it is mounted read-write, and undoes
/// both on a clean unmount. `None` when it is not ext.
pub fn ext_clean(r: &mut (impl Read + Seek)) -> io::Result<Option<bool>> {
    let mut sb = [0u8; 1024];
    if !read_at(r, 1024, &mut sb)? || u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Ok(None);
    }
    const VALID_FS: u16 = 0x1;
    const INCOMPAT_RECOVER: u32 = 0x4;
    let state = u16::from_le_bytes([sb[0x3A], sb[0x3B]]);
    let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
    Ok(Some(
        state & VALID_FS != 0 && incompat & INCOMPAT_RECOVER == 0,
    ))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Opens a device read-only; a drive without media or a vanished device is
/// simply "not this one".
fn open(node: &Path) -> Option<File> {
    File::open(node).ok()
}

/// The first device whose ISO9660 volume label is `label`.
pub fn find_iso(devices: &[BlockDev], label: &str) -> Option<BlockDev> {
    devices
        .iter()
        .find(|d| {
            open(&d.node)
                .and_then(|mut f| iso9660_label(&mut f).ok().flatten())
                .is_some_and(|l| l == label)
        })
        .cloned()
}

/// The first device with an ext filesystem matching `label` or `uuid`.
pub fn find_ext(devices: &[BlockDev], label: Option<&str>, uuid: Option<&str>) -> Option<BlockDev> {
    devices
        .iter()
        .find(|d| {
            let Some(info) = open(&d.node).and_then(|mut f| ext_info(&mut f).ok().flatten()) else {
                return false;
            };
            label.is_some_and(|l| info.label == l) || uuid.is_some_and(|u| info.uuid == u)
        })
        .cloned()
}

/// The partition whose GPT name is `name`.
pub fn find_partname(devices: &[BlockDev], name: &str) -> Option<BlockDev> {
    devices
        .iter()
        .find(|d| d.partname.as_deref() == Some(name))
        .cloned()
}

/// Calls `find` on fresh device lists until it finds something or `timeout`
/// passes; slow controllers (USB, some SCSI) show up seconds after the kernel
/// starts init. `waiting` is called once, when the first look came up empty.
pub fn wait_for<T>(
    timeout: Duration,
    mut find: impl FnMut() -> Option<T>,
    waiting: impl FnOnce(),
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut waiting = Some(waiting);
    loop {
        if let Some(found) = find() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        if let Some(w) = waiting.take() {
            w();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn have(tool: &str) -> bool {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success() || !o.stderr.is_empty())
    }

    #[test]
    fn iso_label_from_a_real_iso() {
        if !have("xorriso") {
            berth_testkit::skip!(
                "xorriso is not installed (the crafted descriptor test covers the parser)"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let content = dir.path().join("content/berth");
        std::fs::create_dir_all(&content).expect("mkdir");
        std::fs::write(content.join("rootfs.squashfs"), b"x").expect("write");
        let iso = dir.path().join("t.iso");
        let out = Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-V", "BERTH_ISO", "-o"])
            .arg(&iso)
            .arg(dir.path().join("content"))
            .output()
            .expect("xorriso");
        assert!(out.status.success(), "{out:?}");
        let mut f = File::open(&iso).expect("open");
        assert_eq!(
            iso9660_label(&mut f).expect("read"),
            Some("BERTH_ISO".into())
        );
        assert_eq!(ext_info(&mut f).expect("read"), None);
    }

    #[test]
    fn iso_label_from_crafted_descriptors() {
        let mut img = vec![0u8; 20 * 2048];
        // A boot record first, then the primary descriptor, then the terminator.
        img[16 * 2048] = 0;
        img[16 * 2048 + 1..16 * 2048 + 6].copy_from_slice(b"CD001");
        let p = 17 * 2048;
        img[p] = 1;
        img[p + 1..p + 6].copy_from_slice(b"CD001");
        img[p + 40..p + 72].copy_from_slice(format!("{:<32}", "BERTH_ISO").as_bytes());
        img[18 * 2048] = 255;
        img[18 * 2048 + 1..18 * 2048 + 6].copy_from_slice(b"CD001");
        let mut c = io::Cursor::new(img);
        assert_eq!(
            iso9660_label(&mut c).expect("read"),
            Some("BERTH_ISO".into())
        );
        // Too short and not an ISO.
        assert_eq!(
            iso9660_label(&mut io::Cursor::new(vec![0u8; 4096])).expect("read"),
            None
        );
        assert_eq!(
            iso9660_label(&mut io::Cursor::new(vec![0u8; 64 * 2048])).expect("read"),
            None
        );
    }

    #[test]
    fn ext4_label_from_a_real_image() {
        if !have("mkfs.ext4") && !Path::new("/usr/sbin/mkfs.ext4").exists() {
            berth_testkit::skip!("mkfs.ext4 is not installed (e2fsprogs)");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("state.img");
        File::create(&img)
            .and_then(|f| f.set_len(8 << 20))
            .expect("image");
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "BERTH_STATE", "-U"])
            .arg("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
            .arg(&img)
            .output()
            .expect("mkfs.ext4");
        assert!(out.status.success(), "{out:?}");
        let info = ext_info(&mut File::open(&img).expect("open"))
            .expect("read")
            .expect("ext4");
        assert_eq!(info.label, "BERTH_STATE");
        assert_eq!(info.uuid, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        // Fresh from mkfs it is clean; "needs recovery" (what a mounted or
        // crashed journal leaves) makes it not.
        let bytes = std::fs::read(&img).expect("read");
        assert_eq!(
            ext_clean(&mut io::Cursor::new(&bytes)).expect("read"),
            Some(true)
        );
        let mut dirty = bytes.clone();
        dirty[1024 + 0x60] |= 0x4;
        assert_eq!(
            ext_clean(&mut io::Cursor::new(&dirty)).expect("read"),
            Some(false)
        );
        let mut invalid = bytes;
        invalid[1024 + 0x3A] &= !0x1;
        assert_eq!(
            ext_clean(&mut io::Cursor::new(&invalid)).expect("read"),
            Some(false)
        );
        assert_eq!(
            iso9660_label(&mut File::open(&img).expect("open")).expect("read"),
            None
        );

        // Found among devices by label and by UUID, from a fake sysfs.
        let sys = dir.path().join("sys");
        for (name, uevent, size) in [
            ("vda", "DEVTYPE=disk\nDEVNAME=vda\n", "16384"),
            (
                "vda1",
                "DEVTYPE=partition\nDEVNAME=vda1\nPARTNAME=BERTH_A\n",
                "100",
            ),
            ("loop0", "DEVTYPE=disk\nDEVNAME=loop0\n", "0"),
            // An empty optical drive reports a guessed capacity.
            ("sr0", "DEVTYPE=disk\nDEVNAME=sr0\n", "2097151"),
            ("sda", "DEVTYPE=disk\nDEVNAME=sda\n", "16384"),
        ] {
            std::fs::create_dir_all(sys.join(name)).expect("mkdir");
            std::fs::write(sys.join(name).join("uevent"), uevent).expect("write");
            std::fs::write(sys.join(name).join("size"), size).expect("write");
        }
        let dev = dir.path().join("dev");
        std::fs::create_dir(&dev).expect("mkdir");
        std::fs::copy(&img, dev.join("vda")).expect("copy");
        let devices = block_devices(&sys, &dev);
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["sda", "vda", "vda1", "sr0"],
            "by name, optical drives last; the empty loop device is skipped"
        );
        assert!(devices[3].is_optical() && !devices[0].is_optical());
        assert_eq!(
            find_ext(&devices, Some("BERTH_STATE"), None).map(|d| d.name),
            Some("vda".into())
        );
        assert_eq!(
            find_ext(&devices, None, Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")).map(|d| d.name),
            Some("vda".into())
        );
        assert_eq!(find_ext(&devices, Some("OTHER"), None), None);
        let slot = find_partname(&devices, "BERTH_A").expect("slot");
        assert!(slot.partition);
        assert_eq!(slot.node, dev.join("vda1"));
        assert_eq!(find_iso(&devices, "BERTH_ISO"), None);
    }

    #[test]
    fn waiting_gives_up_at_the_deadline() {
        let mut tries = 0;
        let mut said = false;
        let found: Option<()> = wait_for(
            Duration::from_millis(300),
            || {
                tries += 1;
                None
            },
            || said = true,
        );
        assert!(found.is_none());
        assert!(said);
        assert!(tries >= 2);
        assert_eq!(wait_for(Duration::ZERO, || Some(1), || ()), Some(1));
    }
}
