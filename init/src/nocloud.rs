//! The NoCloud datasource: a volume labelled `cidata` (or `CIDATA`) carrying
//! `user-data` and `meta-data`, as `cloud-localds` makes it (ISO9660 or FAT).
//!
//! Stage 1 reads it before it looks for the state partition, because the
//! user-data may say how to find or make that partition
//! (`berth.state.autoformat`, as RancherOS's cloud-configs did). What it read
//! is cached on the state partition, where every later reader
//! ([`berth_configs::Layout`]) finds it; with no seed on this boot, the cache
//! from the last one stays in force.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use berth_configs::{sources, Layout};

use crate::probe::{self, BlockDev};
use crate::sys::Sys;

/// Where the seed is mounted while stage 1 reads it.
pub const MOUNT: &str = "run/berth/nocloud";

/// Left in `/run` when a seed was read this boot (see the constant's own note).
pub const MARKER: &str = berth_configs::datasource::NOCLOUD_MARKER;

/// Beyond this a file is not a cloud-config (the config parser's own limit).
const MAX_FILE: u64 = 4 << 20;

/// What a seed volume held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub device: PathBuf,
    pub user_data: Option<String>,
    pub meta_data: Option<String>,
}

fn is_seed_label(label: &str) -> bool {
    label.eq_ignore_ascii_case("cidata")
}

/// The first device labelled `cidata`, with the filesystem type to mount it as.
pub fn find(devices: &[BlockDev]) -> Option<(BlockDev, &'static str)> {
    devices.iter().find_map(|d| {
        let mut f = std::fs::File::open(&d.node).ok()?;
        if probe::iso9660_label(&mut f)
            .ok()
            .flatten()
            .is_some_and(|l| is_seed_label(&l))
        {
            return Some((d.clone(), "iso9660"));
        }
        if probe::vfat_label(&mut f)
            .ok()
            .flatten()
            .is_some_and(|l| is_seed_label(&l))
        {
            return Some((d.clone(), "vfat"));
        }
        None
    })
}

fn read_limited(path: &Path) -> io::Result<Option<String>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_FILE >> 20),
        ));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Mounts the seed read-only, reads it and unmounts it. Every failure is a
/// warning: a boot never depends on a datasource.
pub fn read(sys: &mut dyn Sys, root: &Path, devices: &[BlockDev]) -> Option<Seed> {
    let (dev, fstype) = find(devices)?;
    let mnt = root.join(MOUNT);
    if let Err(e) = std::fs::create_dir_all(&mnt) {
        log::warn!(
            "NoCloud seed on {}: {}: {e}",
            dev.node.display(),
            mnt.display()
        );
        return None;
    }
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if let Err(e) = sys.mount(&dev.node.to_string_lossy(), &mnt, fstype, flags, "") {
        log::warn!("cannot mount the NoCloud seed {}: {e}", dev.node.display());
        return None;
    }
    let file = |name: &str| match read_limited(&mnt.join(name)) {
        Ok(text) => text,
        Err(e) => {
            log::warn!("NoCloud seed {}: {name}: {e}", dev.node.display());
            None
        }
    };
    let seed = Seed {
        device: dev.node.clone(),
        user_data: file("user-data"),
        meta_data: file("meta-data"),
    };
    if let Err(e) = sys.umount(&mnt, 0) {
        log::warn!("cannot unmount the NoCloud seed: {e}");
    }
    log::info!(
        "NoCloud seed on {}: {}",
        dev.node.display(),
        match (&seed.user_data, &seed.meta_data) {
            (Some(_), Some(_)) => "user-data and meta-data",
            (Some(_), None) => "user-data",
            (None, Some(_)) => "meta-data only",
            (None, None) => "empty",
        }
    );
    Some(seed)
}

/// Caches the seed on the new root's state, replacing what an earlier boot
/// cached: the seed present now is the whole truth (a missing file clears
/// its cache). User-data that loads without errors is also kept as the last
/// good copy, which stands in for a later seed's user-data with errors
/// ([`Layout::load`]).
pub fn cache(seed: &Seed, newroot: &Path) -> Result<(), sources::Error> {
    let layout = Layout::new(newroot);
    for (path, text) in [
        (layout.user_data(), &seed.user_data),
        (layout.meta_data(), &seed.meta_data),
    ] {
        match text {
            Some(text) => sources::write_atomic(&path, text.as_bytes())?,
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(sources::Error::Write { path, source: e })
                }
                _ => {}
            },
        }
    }
    if seed.user_data.is_some() && !layout.keep_good_user_data()? {
        let good = layout.user_data_good();
        if good.exists() {
            log::error!(
                "the NoCloud user-data has errors (berthd names them); the last good one ({}) stays in force",
                good.display()
            );
        } else {
            log::error!("the NoCloud user-data has errors (berthd names them) and there is no earlier good one");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recording;

    fn fat16_with_label(label: &str) -> Vec<u8> {
        let mut bs = vec![0u8; 1024];
        bs[54..59].copy_from_slice(b"FAT16");
        let mut l = format!("{label:<11}").into_bytes();
        l.truncate(11);
        bs[43..54].copy_from_slice(&l);
        bs[510] = 0x55;
        bs[511] = 0xAA;
        bs
    }

    fn iso_with_label(label: &str) -> Vec<u8> {
        let mut img = vec![0u8; 18 * 2048];
        let pvd = &mut img[16 * 2048..17 * 2048];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        let l = format!("{label:<32}");
        pvd[40..72].copy_from_slice(l.as_bytes());
        img[17 * 2048] = 255;
        img[17 * 2048 + 1..17 * 2048 + 6].copy_from_slice(b"CD001");
        img
    }

    fn dev(dir: &Path, name: &str, bytes: &[u8]) -> BlockDev {
        let node = dir.join(name);
        std::fs::write(&node, bytes).expect("write image");
        BlockDev {
            name: name.into(),
            node,
            partition: false,
            partname: None,
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn finds_iso_and_fat_seeds_by_label_in_either_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = dev(dir.path(), "vda", &iso_with_label("BERTH_ISO"));
        let iso = dev(dir.path(), "vdb", &iso_with_label("cidata"));
        let fat = dev(dir.path(), "vdc", &fat16_with_label("CIDATA"));
        assert_eq!(find(std::slice::from_ref(&other)), None);
        assert_eq!(find(&[other.clone(), iso.clone()]), Some((iso, "iso9660")));
        assert_eq!(find(&[other, fat.clone()]), Some((fat, "vfat")));
    }

    #[test]
    fn fat32_label_is_read_from_its_own_offset() {
        let mut bs = vec![0u8; 512];
        bs[82..87].copy_from_slice(b"FAT32");
        bs[71..82].copy_from_slice(b"CIDATA     ");
        bs[510] = 0x55;
        bs[511] = 0xAA;
        let label = probe::vfat_label(&mut io::Cursor::new(bs)).expect("read");
        assert_eq!(label.as_deref(), Some("CIDATA"));
        let none = probe::vfat_label(&mut io::Cursor::new(vec![0u8; 512])).expect("read");
        assert_eq!(none, None);
    }

    #[test]
    fn reads_the_seed_mounted_read_only_and_unmounts_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let seed_dev = dev(root.path(), "vdb", &iso_with_label("cidata"));
        // The recording mount does nothing: the files are where the mount would put them.
        let mnt = root.path().join(MOUNT);
        std::fs::create_dir_all(&mnt).expect("mkdir");
        std::fs::write(mnt.join("user-data"), "#cloud-config\nhostname: seeded\n").expect("write");
        let mut sys = Recording::default();
        let seed = read(&mut sys, root.path(), &[seed_dev]).expect("a seed");
        assert_eq!(
            seed.user_data.as_deref(),
            Some("#cloud-config\nhostname: seeded\n")
        );
        assert_eq!(seed.meta_data, None);
        let r = root.path().to_string_lossy().to_string();
        let calls: Vec<String> = sys.calls.iter().map(|c| c.replace(&r, "")).collect();
        assert_eq!(
            calls,
            [
                "mount /vdb /run/berth/nocloud iso9660 [ro,nosuid,nodev,noexec] ",
                "umount /run/berth/nocloud",
            ]
        );
    }

    #[test]
    fn an_oversized_file_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("user-data");
        std::fs::write(&big, vec![b'#'; (MAX_FILE + 1) as usize]).expect("write");
        assert!(read_limited(&big).is_err());
        assert_eq!(read_limited(&dir.path().join("absent")).expect("ok"), None);
    }

    #[test]
    fn cache_replaces_what_an_earlier_seed_left() {
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(root.path());
        let first = Seed {
            device: "/dev/vdb".into(),
            user_data: Some("#cloud-config\nhostname: one\n".into()),
            meta_data: Some("local-hostname: meta\n".into()),
        };
        cache(&first, root.path()).expect("cache");
        let loaded = layout.load().expect("load");
        assert_eq!(loaded.config.hostname.as_deref(), Some("one"));
        // User-data can hold secrets: the cache is root's alone.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&layout.user_data()), 0o600);
        assert_eq!(mode(&layout.meta_data()), 0o600);
        assert_eq!(mode(layout.user_data().parent().expect("dir")), 0o700);
        let second = Seed {
            device: "/dev/vdb".into(),
            user_data: None,
            meta_data: Some("instance-id: i-1\nlocal-hostname: meta\n".into()),
        };
        cache(&second, root.path()).expect("cache");
        assert!(!layout.user_data().exists());
        // Without user-data, meta-data's local-hostname names the machine.
        let loaded = layout.load().expect("load");
        assert_eq!(loaded.config.hostname.as_deref(), Some("meta"));
    }

    /// A boot with the seed the last one cached writes nothing: no file is
    /// replaced (each replacement is an fsync and a journal commit on the
    /// state partition, in stage 1 of every boot of a machine with a seed).
    #[test]
    fn the_same_seed_again_is_not_written_again() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(root.path());
        let seed = Seed {
            device: "/dev/vdb".into(),
            user_data: Some("#cloud-config\nhostname: a\n".into()),
            meta_data: Some("instance-id: i-1\n".into()),
        };
        cache(&seed, root.path()).expect("cache");
        let files = [
            layout.user_data(),
            layout.meta_data(),
            layout.user_data_good(),
        ];
        let inodes = |files: &[PathBuf]| -> Vec<u64> {
            files
                .iter()
                .map(|f| std::fs::metadata(f).expect("cached").ino())
                .collect()
        };
        let before = inodes(&files);
        cache(&seed, root.path()).expect("cache again");
        assert_eq!(inodes(&files), before);
        // A changed user-data is written, and kept as the good one.
        let changed = Seed {
            user_data: Some("#cloud-config\nhostname: b\n".into()),
            ..seed
        };
        cache(&changed, root.path()).expect("cache a change");
        let after = inodes(&files);
        assert_ne!(after[0], before[0]);
        assert_eq!(after[1], before[1], "meta-data did not change");
        assert_eq!(
            std::fs::read_to_string(layout.user_data_good()).expect("good"),
            "#cloud-config\nhostname: b\n"
        );
    }

    /// Valid YAML with invalid values (a bad CIDR, an unknown service key, a
    /// `depends_on` cycle): the last good user-data stays in force, and the
    /// errors still name the new document's lines and keys.
    #[test]
    fn user_data_with_errors_falls_back_to_the_last_good_copy() {
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(root.path());
        let good = Seed {
            device: "/dev/vdb".into(),
            user_data: Some("#cloud-config\nhostname: good\n".into()),
            meta_data: None,
        };
        cache(&good, root.path()).expect("cache");
        assert!(layout.user_data_good().exists());
        for bad in [
            "#cloud-config\nhostname: bad\nberth:\n  network:\n    interfaces:\n      eth1:\n        address: 10.0.0.300/24\n",
            "#cloud-config\nhostname: bad\nberth:\n  services:\n    web:\n      image: x\n      no_such_key: 1\n",
            "#cloud-config\nhostname: bad\nberth:\n  services:\n    a:\n      image: x\n      depends_on: [b]\n    b:\n      image: x\n      depends_on: [a]\n",
        ] {
            let seed = Seed {
                device: "/dev/vdb".into(),
                user_data: Some(bad.into()),
                meta_data: None,
            };
            cache(&seed, root.path()).expect("cache");
            let loaded = layout.load().expect("load");
            assert_eq!(loaded.config.hostname.as_deref(), Some("good"), "{bad}");
            let errors = loaded.error_messages();
            assert!(
                errors.iter().any(|e| e.contains("user-data.yml:")),
                "{errors:?}"
            );
            assert_eq!(
                std::fs::read_to_string(layout.user_data_good()).expect("good"),
                "#cloud-config\nhostname: good\n"
            );
        }
        // The faults QEMU test's document: both errors named, each with its line.
        let both = "#cloud-config\nhostname: bad\nberth:\n  network:\n    interfaces:\n      eth1:\n        address: 10.0.0.300/24\n  services:\n    web:\n      image: x\n      depends_on: [api]\n    api:\n      image: x\n      depends_on: [web]\n";
        let seed = Seed {
            device: "/dev/vdb".into(),
            user_data: Some(both.into()),
            meta_data: None,
        };
        cache(&seed, root.path()).expect("cache");
        let loaded = layout.load().expect("load");
        let text: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        let text = text.join("\n");
        assert!(
            text.contains("user-data.yml:7:")
                && text.contains("berth.network.interfaces.eth1.address"),
            "{text}"
        );
        assert!(
            text.contains("user-data.yml:14:") && text.contains("dependency cycle"),
            "{text}"
        );
    }
}
