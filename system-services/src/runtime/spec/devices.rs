//! `devices`: which host nodes a service names, and the node and cgroup rule for each.

use std::path::{Path, PathBuf};

use berth_configs::compose::Device;
use berth_configs::model::Service;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::{HostDevice, SpecContext, SpecError};

/// Host paths a service's `devices` names, so the caller can `stat` them for
/// [`SpecContext::host_devices`]. None for a privileged service: it gets
/// every node of the host from the runtime instead
/// ([`crate::host::devices::fill`]).
pub fn device_paths(service: &Service) -> Vec<PathBuf> {
    if service.privileged {
        return Vec::new();
    }
    service.devices.iter().map(|d| d.host.clone()).collect()
}

pub(super) fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// A `devices` entry → the device node to create and its cgroup rule.
pub(super) fn device(
    service_name: &str,
    entry: &Device,
    ctx: &SpecContext,
) -> Result<(LinuxDevice, LinuxDeviceCgroup), SpecError> {
    let info = ctx
        .host_devices
        .get(&entry.host)
        .ok_or_else(|| SpecError::Device {
            service: service_name.into(),
            device: entry.to_string(),
            reason: "not a device node on this host".into(),
        })?;
    let d = linux_device(&entry.container, info);
    let typ = d.typ();
    Ok((
        d,
        device_rule(
            true,
            typ,
            Some(info.major),
            Some(info.minor),
            &entry.permissions,
        ),
    ))
}

/// The node `path` in the container for a host device.
pub(super) fn linux_device(path: &Path, info: &HostDevice) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(path.to_path_buf());
    d.set_typ(if info.block {
        LinuxDeviceType::B
    } else {
        LinuxDeviceType::C
    });
    d.set_major(info.major);
    d.set_minor(info.minor);
    d.set_file_mode(Some(info.mode & 0o7777));
    d.set_uid(Some(info.uid));
    d.set_gid(Some(info.gid));
    d
}
