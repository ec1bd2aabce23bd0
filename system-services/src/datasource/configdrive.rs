use super::*;
use berth_sys::probe;

pub const LABEL: &str = "config-2";

/// The first device labelled `config-2`, with its filesystem type.
pub fn find(root: &Path) -> Option<(PathBuf, &'static str)> {
    let devices = probe::block_devices(&root.join("sys/class/block"), &root.join("dev"));
    devices.iter().find_map(|d| {
        let mut f = std::fs::File::open(&d.node).ok()?;
        if probe::iso9660_label(&mut f)
            .ok()
            .flatten()
            .is_some_and(|l| l.eq_ignore_ascii_case(LABEL))
        {
            return Some((d.node.clone(), "iso9660"));
        }
        if probe::vfat_label(&mut f)
            .ok()
            .flatten()
            .is_some_and(|l| l.eq_ignore_ascii_case(LABEL))
        {
            return Some((d.node.clone(), "vfat"));
        }
        None
    })
}

fn read(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, DsError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DsError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| DsError::Io {
            path: path.into(),
            source,
        })?;
    if bytes.len() > limit {
        return Err(DsError::Malformed {
            url: path.display().to_string(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    Ok(Some(bytes))
}

/// Reads the tree from a mounted (or unpacked) drive.
pub fn read_tree(dir: &Path) -> Result<Instance, DsError> {
    let latest = dir.join("openstack/latest");
    let meta_path = latest.join("meta_data.json");
    let Some(meta) = read(&meta_path, MAX_META)? else {
        return Err(DsError::Absent(format!(
            "{}: not found",
            meta_path.display()
        )));
    };
    let user_data = read(&latest.join("user_data"), MAX_USER_DATA)?;
    let mut instance = openstack::parse_meta(&meta_path.display().to_string(), &meta, user_data)?;
    let net_path = latest.join("network_data.json");
    if let Some(net) = read(&net_path, MAX_META)? {
        instance.network = network_from_openstack(&json(&net_path.display().to_string(), &net)?);
    }
    Ok(instance)
}

pub fn fetch(root: &Path) -> Result<Instance, DsError> {
    let Some((device, fstype)) = find(root) else {
        return Err(DsError::Absent(format!("no volume labelled {LABEL}")));
    };
    let mnt = root.join("run/berth/configdrive");
    std::fs::create_dir_all(&mnt).map_err(|source| DsError::Io {
        path: mnt.clone(),
        source,
    })?;
    let flags = rustix::mount::MountFlags::RDONLY
        | rustix::mount::MountFlags::NOSUID
        | rustix::mount::MountFlags::NODEV
        | rustix::mount::MountFlags::NOEXEC;
    rustix::mount::mount(&device, &mnt, fstype, flags, None::<&std::ffi::CStr>).map_err(|e| {
        DsError::Io {
            path: device.clone(),
            source: e.into(),
        }
    })?;
    let result = read_tree(&mnt);
    if let Err(e) = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::empty()) {
        log::warn!("cannot unmount the ConfigDrive at {}: {e}", mnt.display());
    }
    result
}
