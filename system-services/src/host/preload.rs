//! Preloading: image archives dropped in `/var/lib/berth/preload/<engine>/`
//! (by `write_files`, an OEM image or a person) are loaded into the user
//! engine once it is ready, each one once: `.loaded` in that directory lists
//! what was loaded (name, size, mtime), so a replaced file loads again and
//! nothing loads twice across reboots. Loading runs `docker load` inside the
//! engine's own container, which sees the directory read-only at the same path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Problem;
use crate::logs::{LogDir, LogWriter, Stream};
use crate::runtime::Runtime;
use crate::supervisor::Supervisor;

/// Where archives for engine `NAME` are looked for: `DIR/NAME/`.
pub const DIR: &str = "/var/lib/berth/preload";
/// The record of what was loaded, in each engine's directory.
const LOADED: &str = ".loaded";
/// How long one `docker load` may take.
const TIMEOUT: Duration = Duration::from_secs(1800);
/// How long to wait for the engine to be ready.
const WAIT: Duration = Duration::from_secs(1800);

/// Archive names `docker load` reads.
fn is_archive(name: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// One line of `.loaded`: what identifies an archive's content well enough.
fn identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let name = path.file_name()?.to_string_lossy();
    Some(format!("{name} {} {}", meta.len(), meta.mtime()))
}

/// The archives in `dir` not loaded yet, by name.
pub fn pending(dir: &Path) -> Vec<PathBuf> {
    let loaded = std::fs::read_to_string(dir.join(LOADED)).unwrap_or_default();
    let loaded: Vec<&str> = loaded.lines().collect();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| is_archive(&n.to_string_lossy()))
        })
        .filter(|p| identity(p).is_some_and(|id| !loaded.contains(&id.as_str())))
        .collect();
    out.sort();
    out
}

fn record(dir: &Path, archive: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let Some(id) = identity(archive) else {
        return Ok(());
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOADED))?;
    writeln!(f, "{id}")?;
    f.sync_all()
}

/// Loads every pending archive of `dir` (a host path; the same path inside
/// the engine's container) into the engine running as service `engine`.
pub fn load_pending(
    runtime: &dyn Runtime,
    engine: &str,
    dir: &Path,
    log: &LogWriter,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for archive in pending(dir) {
        let field = format!("preload {}", archive.display());
        let argv: Vec<String> = [
            "docker",
            "--host",
            "unix:///run/docker/docker.sock",
            "load",
            "--input",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([archive.to_string_lossy().into_owned()])
        .collect();
        let problem = match runtime.exec(engine, &argv, TIMEOUT) {
            Err(e) => Some(e.to_string()),
            Ok(out) => {
                log.write_text(
                    Stream::Stdout,
                    format!("{field}: {}", out.output.trim()).as_bytes(),
                );
                match out.exit {
                    Some(exit) if exit.success() => None,
                    Some(exit) => Some(format!("docker load: {exit}")),
                    None => Some(format!("docker load: killed after {}s", TIMEOUT.as_secs())),
                }
            }
        };
        match problem {
            // A bad archive is not retried at every boot: it is recorded too,
            // and a new file (another size or mtime) is tried afresh.
            Some(why) => {
                log.write_text(Stream::Stderr, format!("{field}: {why}").as_bytes());
                problems.push(Problem::new(field, why));
            }
            None => log::info!("{field}: loaded into {engine}"),
        }
        if let Err(e) = record(dir, &archive) {
            log::warn!("preload: {}: {e}", dir.join(LOADED).display());
        }
    }
    problems
}

/// Once the engine service is ready, loads what is pending for it (in a
/// thread of its own). Nothing to do when nothing is pending.
pub fn spawn(
    supervisor: Arc<Supervisor>,
    runtime: Arc<dyn Runtime>,
    logs: Arc<LogDir>,
    engine: String,
    root: &Path,
) {
    let dir = root.join(DIR.trim_start_matches('/')).join(&engine);
    if pending(&dir).is_empty() {
        return;
    }
    let service = engine.clone();
    super::when_ready(supervisor, logs, service, "preload", WAIT, move |log| {
        for p in load_pending(&*runtime, &engine, &dir, log) {
            log::error!("{p}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_load_once_and_again_when_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("app.tar"), b"one").expect("write");
        std::fs::write(d.join("tools.tar.gz"), b"two").expect("write");
        std::fs::write(d.join("README"), b"not an archive").expect("write");
        assert_eq!(pending(d), [d.join("app.tar"), d.join("tools.tar.gz")]);
        record(d, &d.join("app.tar")).expect("record");
        assert_eq!(pending(d), [d.join("tools.tar.gz")]);
        // A different file under the same name is new.
        std::fs::write(d.join("app.tar"), b"one, rebuilt").expect("write");
        assert_eq!(pending(d), [d.join("app.tar"), d.join("tools.tar.gz")]);
        assert!(pending(&d.join("absent")).is_empty());
    }
}
