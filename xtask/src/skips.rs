//! Skipped tests are counted, listed at the end of `cargo xtask test`, and
//! fail the run under `CI=true` unless the test declared that this kind of
//! machine cannot run it (berth-testkit's `unsupported_here!`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_testkit::{Kind, Record};

/// Where the test processes append their skips (`BERTH_SKIP_LOG`).
pub fn log_path() -> PathBuf {
    crate::target_dir().join("berth/skips.log")
}

/// Starts a run with an empty log.
pub fn reset(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Whether this is a CI run (`CI=true`, as CI services set it).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Prints what the log holds; fails when `ci` and a test was skipped.
pub fn report(path: &Path, ci: bool) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let records = berth_testkit::parse_log(&text);
    let (summary, failing) = summarize(&records);
    print!("{summary}");
    if ci && failing > 0 {
        bail!(
            "{failing} test{} skipped under CI=true (listed above); a test that cannot run on this kind of machine must say so with berth_testkit::unsupported_here!",
            if failing == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// One line per test and kind: a test that recorded several reasons (three
/// artifacts missing) counts once, its reasons joined.
fn merge(records: &[Record]) -> Vec<Record> {
    let mut merged: Vec<Record> = Vec::new();
    for r in records {
        match merged
            .iter_mut()
            .find(|m| m.kind == r.kind && m.test == r.test)
        {
            Some(m) if !m.reason.split("; ").any(|x| x == r.reason) => {
                m.reason = format!("{}; {}", m.reason, r.reason);
            }
            Some(_) => {}
            None => merged.push(r.clone()),
        }
    }
    merged
}

/// The end-of-run listing, and how many skipped tests count against CI.
fn summarize(records: &[Record]) -> (String, usize) {
    let records = merge(records);
    let skipped: Vec<&Record> = records.iter().filter(|r| r.kind == Kind::Skip).collect();
    let unsupported: Vec<&Record> = records
        .iter()
        .filter(|r| r.kind == Kind::Unsupported)
        .collect();
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("==> no test was skipped\n");
        return (out, 0);
    }
    if !skipped.is_empty() {
        out.push_str(&format!("==> {} skipped test(s):\n", skipped.len()));
        for r in &skipped {
            out.push_str(&format!("    {}: {}\n", r.test, r.reason));
        }
    }
    if !unsupported.is_empty() {
        out.push_str(&format!(
            "==> {} test(s) this kind of machine cannot run (allowed under CI):\n",
            unsupported.len()
        ));
        for r in &unsupported {
            out.push_str(&format!("    {}: {}\n", r.test, r.reason));
        }
    }
    (out, skipped.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_count_and_unsupported_tests_do_not() {
        let log = "running 3 tests\n\
            BERTH-SKIP netns::dhcp_lease: needs root (network namespaces)\n\
            test dhcp_lease ... ok\n\
            BERTH-UNSUPPORTED netns::bond_of_two_veths: the host kernel has no bonding driver\n\
            BERTH-SKIP boot::iso_boots: BERTH_ISO is not set\n\
            BERTH-SKIP boot::iso_boots: BERTH_VMLINUZ is not set\n\
            BERTH-SKIP boot::iso_boots: BERTH_ISO is not set\n";
        let records = berth_testkit::parse_log(log);
        let (text, failing) = summarize(&records);
        assert_eq!(failing, 2);
        assert!(text.contains("==> 2 skipped test(s):\n    netns::dhcp_lease: needs root (network namespaces)\n    boot::iso_boots: BERTH_ISO is not set; BERTH_VMLINUZ is not set\n"), "{text}");
        assert!(text.contains("1 test(s) this kind of machine cannot run (allowed under CI):\n    netns::bond_of_two_veths: the host kernel has no bonding driver\n"), "{text}");
        let (text, failing) = summarize(&[]);
        assert_eq!((text.as_str(), failing), ("==> no test was skipped\n", 0));
    }

    #[test]
    fn ci_fails_on_a_skip_only() {
        let dir = tempfile_dir();
        let path = dir.join("skips.log");
        reset(&path).expect("reset");
        assert!(report(&path, true).is_ok(), "no log: nothing skipped");
        std::fs::write(
            &path,
            "BERTH-UNSUPPORTED a::b: no 8021q in the host kernel\n",
        )
        .expect("write");
        assert!(report(&path, true).is_ok());
        std::fs::write(&path, "BERTH-SKIP a::c: not root\n").expect("write");
        assert!(
            report(&path, false).is_ok(),
            "outside CI a skip is listed only"
        );
        let err = report(&path, true).expect_err("CI fails");
        assert!(
            err.to_string().starts_with("1 test skipped under CI=true"),
            "{err}"
        );
        reset(&path).expect("reset");
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-skips-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
