//! `cargo xtask test`'s QEMU stage: each test file of `qemu-tests` runs as
//! its own process, all side by side, and the VM slots (a `flock` on one of
//! [`qemu_tests::MAX_VMS`] files in a directory they share) keep the machine
//! at that many VMs. Run one after another, the files that boot one VM at a
//! time left a core idle for most of their run. The cluster file runs
//! first, alone: it needs both slots at once, and a node that waited for its
//! peer's slot would idle while holding its own.
//!
//! Each file's output is printed whole when it ends, then a table of the
//! files and their times.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::os::{out_dir, test_os_images, Artifacts};

/// Files that run before the others, each alone.
const ALONE: &[&str] = &["cluster"];

/// The files that boot the longest chains of VMs one after another, first
/// when VMs wait for a slot (`qemu_tests::PRIORITY_ENV`). Left to compete,
/// `upgrade` (power cuts, each a boot) waited half an hour for slots and
/// then ran alone at the end. Longest first; files not named come after.
const FIRST: &[&str] = &["upgrade", "install", "faults", "dockerhost", "console"];

/// One test binary of qemu-tests: its name (`lib` for the harness's own
/// unit tests) and its executable.
#[derive(Debug)]
struct TestBinary {
    name: String,
    executable: PathBuf,
}

/// Runs the test files named in `only` (`lib` is the harness's own unit
/// tests), or every one when it is empty.
pub fn run_tests(artifacts: &Artifacts, only: &[String]) -> Result<()> {
    println!("==> cargo test -p qemu-tests (boots Berth in QEMU)");
    let start = Instant::now();
    let mut binaries = build()?;
    if !only.is_empty() {
        if let Some(unknown) = only
            .iter()
            .find(|o| !binaries.iter().any(|b| &b.name == *o))
        {
            bail!(
                "no QEMU test file {unknown}; there are {}",
                binaries
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        binaries.retain(|b| only.contains(&b.name));
    }
    let logs = out_dir().join("qemu-logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let times = logs.join("vm-times.tsv");
    let mut env = environment(artifacts)?;
    env.push((qemu_tests::TIMES_ENV, times.clone()));

    let (alone, together): (Vec<_>, Vec<_>) = binaries
        .into_iter()
        .partition(|b| ALONE.contains(&b.name.as_str()));
    let mut results = BTreeMap::new();
    for binary in alone {
        results.extend(run_side_by_side(vec![binary], &env, &logs)?);
    }
    results.extend(run_side_by_side(together, &env, &logs)?);

    println!("==> QEMU test files:");
    let mut failed = Vec::new();
    for (name, (ok, secs)) in &results {
        println!(
            "    {name:<12} {:<6} {secs:>7.1}s",
            if *ok { "ok" } else { "FAILED" }
        );
        if !ok {
            failed.push(name.as_str());
        }
    }
    print_vm_times(&times);
    if !failed.is_empty() {
        bail!(
            "QEMU tests failed: {} (their output is above and in {})",
            failed.join(", "),
            logs.display()
        );
    }
    println!(
        "==> cargo test -p qemu-tests: ok in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where the VM time went, per test file: each VM's seconds in a slot (what
/// the stage costs, at [`qemu_tests::MAX_VMS`] at once) and waiting for one.
fn print_vm_times(times: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(times) else {
        return;
    };
    // file -> (VMs, seconds waited, seconds run)
    let mut per_file: BTreeMap<&str, (usize, f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [file, _vm, waited, ran] = fields[..] else {
            continue;
        };
        let (Ok(waited), Ok(ran)) = (waited.parse::<f64>(), ran.parse::<f64>()) else {
            continue;
        };
        let entry = per_file.entry(file).or_default();
        entry.0 += 1;
        entry.1 += waited;
        entry.2 += ran;
    }
    let mut rows: Vec<_> = per_file.into_iter().collect();
    rows.sort_by(|a, b| b.1 .2.total_cmp(&a.1 .2));
    println!("==> VM time per file (boots, seconds in a slot, seconds waiting for one):");
    let mut total = 0.0;
    for (file, (vms, waited, ran)) in rows {
        println!("    {file:<12} {vms:>3} VMs {ran:>7.0}s run {waited:>7.0}s waited");
        total += ran;
    }
    println!(
        "    all files: {total:.0} VM-seconds, {:.0}s of slot time at {} at once ({})",
        total / qemu_tests::MAX_VMS as f64,
        qemu_tests::MAX_VMS,
        times.display()
    );
}

/// Builds the test binaries and finds them in cargo's JSON messages.
fn build() -> Result<Vec<TestBinary>> {
    let output = crate::cargo()
        .args([
            "test",
            "-p",
            "qemu-tests",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("building the QEMU tests failed ({})", output.status);
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(executable), true) = (
            message["executable"].as_str(),
            message["profile"]["test"].as_bool() == Some(true),
        ) else {
            continue;
        };
        let name = if message["target"]["kind"][0] == "lib" {
            "lib".to_string()
        } else {
            message["target"]["name"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        };
        binaries.push(TestBinary {
            name,
            executable: executable.into(),
        });
    }
    if binaries.is_empty() {
        bail!("cargo built no qemu-tests test binary");
    }
    Ok(binaries)
}

/// What every test process is told: the artifacts, the skip log, the image
/// store with the busybox test image, the shared VM slots.
fn environment(artifacts: &Artifacts) -> Result<Vec<(&'static str, PathBuf)>> {
    Ok(vec![
        ("BERTH_VMLINUZ", artifacts.vmlinuz.clone()),
        ("BERTH_INITRD", artifacts.initrd.clone()),
        ("BERTH_ISO", artifacts.iso.clone()),
        ("BERTH_DISK", artifacts.disk.clone()),
        ("BERTH_QCOW2", artifacts.qcow2.clone()),
        ("BERTH_ROOTFS", artifacts.rootfs.clone()),
        ("BERTH_BINARY", artifacts.berth.clone()),
        ("BERTH_TEST_OS", test_os_images(artifacts)?),
        (berth_testkit::LOG_ENV, crate::skips::log_path()),
        ("BERTH_IMAGE_STORE", crate::image_store_dir()),
        (qemu_tests::SLOTS_ENV, out_dir().join("qemu-slots")),
    ])
}

/// Runs `binaries` at once; returns each one's (passed, seconds).
fn run_side_by_side(
    binaries: Vec<TestBinary>,
    env: &[(&'static str, PathBuf)],
    logs: &std::path::Path,
) -> Result<BTreeMap<String, (bool, f64)>> {
    let mut running: Vec<(TestBinary, Child, PathBuf, Instant)> = Vec::new();
    for binary in binaries {
        let log = logs.join(format!("{}.log", binary.name));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(&binary.executable);
        cmd.arg("--nocapture")
            .current_dir(crate::workspace_root().join("qemu-tests"))
            // Two tests of a file at once at most; the slots decide who boots.
            .env("RUST_TEST_THREADS", "2")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(place) = FIRST.iter().position(|f| *f == binary.name) {
            cmd.env(qemu_tests::PRIORITY_ENV, place.to_string());
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.executable.display()))?;
        println!("==> qemu-tests {}: started", binary.name);
        running.push((binary, child, log, Instant::now()));
    }
    let mut results = BTreeMap::new();
    while !running.is_empty() {
        let mut i = 0;
        while i < running.len() {
            let status = running[i].1.try_wait()?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let (binary, _, log, started) = running.remove(i);
            let secs = started.elapsed().as_secs_f64();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            println!(
                "==> qemu-tests {} ({}):\n{text}",
                binary.name,
                log.display()
            );
            println!(
                "==> qemu-tests {}: {} in {secs:.1}s",
                binary.name,
                if status.success() { "ok" } else { "FAILED" }
            );
            results.insert(binary.name, (status.success(), secs));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(results)
}
