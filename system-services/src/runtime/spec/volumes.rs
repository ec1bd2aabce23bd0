//! `tmpfs`: compose's tmpfs syntax. (Volumes are parsed in configs: [`berth_configs::compose::Volume`].)

use oci_spec::runtime::Mount;

use super::{mount, SpecError};

/// `PATH[:OPTIONS]` → a tmpfs mount (`nosuid,nodev` plus the options given).
pub(super) fn tmpfs_mount(service_name: &str, entry: &str) -> Result<Mount, SpecError> {
    let (path, opts) = match entry.split_once(':') {
        Some((p, o)) => (p, Some(o)),
        None => (entry, None),
    };
    if !path.starts_with('/') {
        return Err(SpecError::Tmpfs {
            service: service_name.into(),
            tmpfs: entry.into(),
            reason: "the mount point must be an absolute path".into(),
        });
    }
    let mut options: Vec<&str> = vec!["nosuid", "nodev"];
    options.extend(
        opts.into_iter()
            .flat_map(|o| o.split(','))
            .filter(|o| !o.is_empty()),
    );
    Ok(mount(path, "tmpfs", "tmpfs", &options))
}
