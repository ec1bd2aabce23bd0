//! Starting a real `berth daemon` from a test or a bench.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The API socket of a daemon started with [`daemon_command`] under `dir`.
pub fn daemon_socket(dir: &Path) -> PathBuf {
    dir.join("berth.sock")
}

/// `BERTH daemon` with its socket ([`daemon_socket`]), run, log and volume
/// dirs under `dir`, images from `store`, and its log kept off stderr. The
/// caller adds where the config comes from (`--config FILE` or `--root DIR`)
/// and spawns it.
pub fn daemon_command(berth: &Path, dir: &Path, store: &Path) -> Command {
    let mut c = Command::new(berth);
    c.arg("daemon")
        .arg("--socket")
        .arg(daemon_socket(dir))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--log-dir")
        .arg(dir.join("log"))
        .arg("--images")
        .arg(store)
        .arg("--volumes")
        .arg(dir.join("volumes"))
        .arg("--quiet");
    c
}
