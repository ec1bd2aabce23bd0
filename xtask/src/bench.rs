//! `cargo xtask bench`: benchmarks, each built in release mode and ending with
//! `RESULT <name> <value> <unit>` lines. They report ratios against a baseline
//! measured in the same run, never pass/fail on wall-clock time.

use anyhow::{bail, Result};

use crate::{cargo, step};

pub mod debian;
pub(crate) mod vm;

const BENCHES: &[(&str, &str, &str)] = &[
    ("config", "berth-configs", "parse"),
    ("images", "berth-images", "images"),
    ("runtime", "berthd", "runtime"),
    ("network", "berth-network", "network"),
];

pub fn run(name: Option<&str>) -> Result<()> {
    // The boot benchmark drives QEMU rather than a cargo bench target.
    if name == Some("boot") {
        return vm::bench_boot();
    }
    if name == Some("debian") {
        return debian::bench_alone();
    }
    if name == Some("install") {
        return vm::bench_install();
    }
    if name == Some("upgrade") {
        return vm::bench_upgrade();
    }
    let selected: Vec<_> = BENCHES
        .iter()
        .filter(|(n, _, _)| name.is_none_or(|want| want == *n))
        .collect();
    if selected.is_empty() {
        let known: Vec<_> = BENCHES.iter().map(|(n, _, _)| *n).collect();
        bail!(
            "no benchmark named `{}`; known: {}, boot, debian, install, upgrade",
            name.unwrap_or_default(),
            known.join(", ")
        );
    }
    // `cargo xtask bench` with no name runs the cargo benches; boot is slow
    // (TCG boots) and runs only when named.
    for (bench, package, target) in selected {
        cargo_bench(bench, package, target)?;
    }
    Ok(())
}

/// Runs the cargo bench `name` of [`BENCHES`] (`cargo xtask bench boot` runs
/// `runtime` too, so that every goal's figure comes out of one run).
pub(crate) fn run_cargo_bench(name: &str) -> Result<()> {
    let Some((bench, package, target)) = BENCHES.iter().find(|(n, _, _)| *n == name) else {
        bail!("no cargo bench named `{name}`");
    };
    cargo_bench(bench, package, target)
}

fn cargo_bench(bench: &str, package: &str, target: &str) -> Result<()> {
    let mut command = cargo();
    command.args(["bench", "-p", package, "--bench", target]);
    if bench == "images" {
        // Measured on the real docker system image, built (or cached) first.
        crate::images(Some("docker"))?;
        command.env("BERTH_IMAGE_STORE", crate::image_store_dir());
    }
    if bench == "runtime" {
        // Its RSS figure is the shipped binary's (static musl `berth daemon`).
        command.env("BERTH_BINARY", crate::build_berth()?);
    }
    step(&format!("bench {bench}"), &mut command)
}
