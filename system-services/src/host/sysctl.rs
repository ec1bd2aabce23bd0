//! `berth.sysctl`: each `key: value` written to `/proc/sys/<key with . as />`,
//! as sysctl(8) does. A key with a `/` is taken as a path already (so a dot
//! can be part of a name: `net/ipv4/conf/eth0.100/forwarding`); a `*`
//! component applies to every entry there (`net.ipv4.conf.*.rp_filter`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_configs::forms::Scalar;

use super::{Applied, HostOps, HostPaths, Problem, Report};

pub(crate) fn apply(
    ops: &dyn HostOps,
    paths: &HostPaths,
    sysctl: &BTreeMap<String, Scalar>,
    before: &Applied,
    applied: &mut Applied,
    report: &mut Report,
) {
    for (key, value) in sysctl {
        let value = value.0.as_str();
        if before.sysctl.get(key).map(String::as_str) == Some(value) {
            continue;
        }
        let field = format!("berth.sysctl.{key}");
        let files = match files(&paths.proc_sys, key) {
            Ok(f) => f,
            Err(e) => {
                report.problems.push(Problem::new(field, e.to_string()));
                continue;
            }
        };
        let mut ok = true;
        for file in &files {
            if let Err(e) = ops.write_sysctl(file, value) {
                ok = false;
                let why = match e.raw_os_error() {
                    Some(libc::ENOENT) => format!(
                        "{e} (no such kernel parameter, or its module is not loaded: see berth.modules)"
                    ),
                    _ => e.to_string(),
                };
                report
                    .problems
                    .push(Problem::new(&field, format!("{}: {why}", file.display())));
            }
        }
        if ok {
            report.done(format!("berth.sysctl: {key} = {value}"));
            applied.sysctl.insert(key.clone(), value.to_string());
        } else {
            applied.sysctl.remove(key);
        }
    }
}

/// Why a sysctl key names no file below `/proc/sys`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("`{0}` is not a sysctl name")]
    NotAName(String),
    #[error("`{0}` matches no kernel parameter")]
    NoMatch(String),
}

/// The relative path of `key` below `/proc/sys`.
pub fn key_path(key: &str) -> Result<PathBuf, KeyError> {
    let parts: Vec<&str> = if key.contains('/') {
        key.split('/').collect()
    } else {
        key.split('.').collect()
    };
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == ".." || *p == ".")
    {
        return Err(KeyError::NotAName(key.to_string()));
    }
    Ok(parts.iter().collect())
}

/// The files `key` names below `proc_sys`; `*` components expanded against
/// what is there.
pub fn files(proc_sys: &Path, key: &str) -> Result<Vec<PathBuf>, KeyError> {
    let rel = key_path(key)?;
    let mut found = vec![proc_sys.to_path_buf()];
    for part in rel.iter() {
        if part == "*" {
            let mut next = Vec::new();
            for dir in &found {
                let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map(|rd| rd.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                names.sort();
                next.extend(names);
            }
            found = next;
        } else {
            for p in &mut found {
                p.push(part);
            }
        }
    }
    if found.is_empty() {
        return Err(KeyError::NoMatch(key.to_string()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::super::recording::Call;
    use super::super::testing::root;
    use super::super::Recording;
    use super::*;

    #[test]
    fn keys_map_to_proc_sys_paths() {
        assert_eq!(
            key_path("net.ipv4.ip_forward").expect("key"),
            Path::new("net/ipv4/ip_forward")
        );
        assert_eq!(
            key_path("net/ipv4/conf/eth0.100/forwarding").expect("key"),
            Path::new("net/ipv4/conf/eth0.100/forwarding")
        );
        assert!(key_path("net..x").is_err());
        assert!(key_path("net/../../etc/passwd").is_err());
    }

    #[test]
    fn globs_expand_and_failures_are_per_key() {
        let r = root();
        for i in ["all", "eth0"] {
            std::fs::create_dir_all(r.paths.proc_sys.join("net/ipv4/conf").join(i)).expect("mkdir");
        }
        let sysctl: BTreeMap<String, Scalar> = [
            ("net.ipv4.conf.*.rp_filter", "2"),
            ("vm.swappiness", "10"),
            ("kernel.nope", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Scalar(v.into())))
        .collect();
        let ops = Recording::default();
        ops.fail("sysctl", "kernel/nope", libc::ENOENT);
        let mut report = Report::default();
        let mut applied = Applied::default();
        apply(
            &ops,
            &r.paths,
            &sysctl,
            &Applied::default(),
            &mut applied,
            &mut report,
        );
        let calls: Vec<(PathBuf, String)> = ops
            .calls()
            .into_iter()
            .map(|c| match c {
                Call::Sysctl { path, value } => (
                    path.strip_prefix(&r.paths.proc_sys)
                        .expect("below")
                        .to_path_buf(),
                    value,
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            calls,
            [
                (PathBuf::from("kernel/nope"), "1".to_string()),
                (PathBuf::from("net/ipv4/conf/all/rp_filter"), "2".into()),
                (PathBuf::from("net/ipv4/conf/eth0/rp_filter"), "2".into()),
                (PathBuf::from("vm/swappiness"), "10".into()),
            ]
        );
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].field, "berth.sysctl.kernel.nope");
        assert!(report.problems[0].message.contains("berth.modules"));
        assert_eq!(applied.sysctl.len(), 2);
    }
}
