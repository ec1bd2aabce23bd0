//! `/etc/machine-id`: one id per machine, made at its first boot and kept on
//! the state partition ([`KEPT`]), so that what names a host by it (metrics
//! and log agents that bind `/etc/machine-id`, D-Bus) sees one id across
//! reboots and upgrades. The console and the engines link theirs to the
//! host's (`/host/etc/machine-id`). Without a state partition the id lasts
//! one boot, as everything else does.

use std::path::Path;

use super::{Applied, FileWrite, HostOps, HostPaths, Problem, Report};

/// Where the id is kept, below the root.
pub const KEPT: &str = "var/lib/berth/machine-id";

pub(crate) fn apply(
    ops: &dyn HostOps,
    paths: &HostPaths,
    applied: &mut Applied,
    report: &mut Report,
) {
    // A restarted berthd finds this boot's /etc/machine-id written.
    if applied.machine_id.is_some() {
        return;
    }
    let kept = std::fs::read_to_string(paths.root.join(KEPT)).ok();
    let (id, new) = match kept.as_deref().map(str::trim).filter(|k| is_valid(k)) {
        Some(id) => (id.to_string(), false),
        None => (random_id(), true),
    };
    let file = FileWrite {
        data: format!("{id}\n").into_bytes(),
        mode: 0o444,
        uid: 0,
        gid: 0,
        append: false,
    };
    let rels: &[&str] = if new {
        &[KEPT, "etc/machine-id"]
    } else {
        &["etc/machine-id"]
    };
    for rel in rels {
        if let Err(e) = ops.write_file(&paths.root, Path::new(rel), &file) {
            report
                .problems
                .push(Problem::new("machine-id", format!("/{rel}: {e}")));
            return;
        }
    }
    if new {
        report.done(format!("machine-id: {id} (new)"));
    }
    applied.machine_id = Some(id);
}

/// 32 lowercase hex digits, as systemd writes it.
fn is_valid(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// 128 random bits, marked as a version 4 UUID as systemd marks its ids.
/// Unique is enough (the id names the machine, it guards nothing), so it
/// never waits for the kernel's random pool this early in the boot.
fn random_id() -> String {
    let mut bytes: [u8; 16] = berth_sys::random::unique();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::super::recording::Call;
    use super::super::testing::root;
    use super::super::Recording;
    use super::*;

    fn writes(calls: &[Call]) -> Vec<(String, String)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Write { rel, data, .. } => Some((
                    rel.display().to_string(),
                    String::from_utf8_lossy(data).into_owned(),
                )),
                _ => None,
            })
            .collect()
    }

    /// One boot's apply: the files written, and whether a problem was reported.
    fn boot(paths: &HostPaths) -> (Vec<(String, String)>, bool) {
        let ops = Recording::default();
        let mut report = Report::default();
        apply(&ops, paths, &mut Applied::default(), &mut report);
        (writes(&ops.calls()), !report.problems.is_empty())
    }

    #[test]
    fn a_first_boot_makes_an_id_and_keeps_it() {
        let r = root();
        let (written, problems) = boot(&r.paths);
        assert!(!problems);
        assert_eq!(written.len(), 2, "{written:?}");
        assert_eq!(written[0].0, KEPT);
        assert_eq!(written[1].0, "etc/machine-id");
        assert_eq!(written[0].1, written[1].1);
        assert!(is_valid(written[0].1.trim()), "{written:?}");
    }

    #[test]
    fn a_kept_id_is_used_and_a_broken_one_replaced() {
        let r = root();
        let kept = r.paths.root.join(KEPT);
        std::fs::create_dir_all(kept.parent().expect("parent")).expect("mkdir");
        std::fs::write(&kept, "0123456789abcdef0123456789abcdef\n").expect("write");
        assert_eq!(
            boot(&r.paths).0,
            [(
                "etc/machine-id".to_string(),
                "0123456789abcdef0123456789abcdef\n".to_string()
            )]
        );

        std::fs::write(&kept, "not an id\n").expect("write");
        let written = boot(&r.paths).0;
        assert_eq!(written[0].0, KEPT);
        assert_ne!(written[0].1, "not an id\n");
    }

    #[test]
    fn ids_are_32_hex_digits_marked_version_4() {
        let (a, b) = (random_id(), random_id());
        assert!(is_valid(&a) && is_valid(&b) && a != b);
        assert_eq!(&a[12..13], "4");
        assert!(matches!(&a[16..17], "8" | "9" | "a" | "b"));
        assert!(!is_valid("0123456789ABCDEF0123456789ABCDEF"));
    }
}
