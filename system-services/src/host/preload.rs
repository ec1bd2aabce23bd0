//! Preloading: image archives dropped in `/var/lib/berth/preload/<engine>/`
//! (by `write_files`, an OEM image or a person) are loaded into the user
//! engine once it is ready, each one once: `.loaded` in that directory lists
//! what was loaded (name, size, mtime), so a replaced file loads again and
//! nothing loads twice across reboots. Archives listed in `berth.engine.preload`
//! are linked (or copied, keeping their mtime) into that directory first, so
//! both ways share one record. Loading runs the engine's own CLI (`docker load`,
//! `podman load`) inside the engine's container, which sees the directory
//! read-only at the same path.

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
/// Loads tried per boot when the engine dies under them.
const ATTEMPTS: u32 = 3;
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

/// The command that loads `archive` into `engine`, run in the engine's container.
pub fn load_argv(engine: &str, archive: &Path) -> Vec<String> {
    let mut argv: Vec<String> = match engine {
        // The engine's socket is not at docker's default path (the console links it).
        "docker" => vec![
            "docker".into(),
            "--host".into(),
            "unix:///run/docker/docker.sock".into(),
        ],
        other => vec![other.to_string()],
    };
    argv.extend([
        "load".into(),
        "--input".into(),
        archive.to_string_lossy().into_owned(),
    ]);
    argv
}

/// Puts the archives `listed` (host paths under `root`) into `dir`: a hard
/// link, or a copy with the original's mtime when they are on different file
/// systems, so that an unchanged archive is recognised as loaded at the next boot.
pub fn link_listed(root: &Path, listed: &[String], dir: &Path) -> Vec<Problem> {
    use std::os::unix::fs::MetadataExt;
    let mut problems = Vec::new();
    for path in listed {
        let field = format!("berth.engine.preload {path}");
        let source = root.join(path.trim_start_matches('/'));
        let Some(name) = source.file_name() else {
            problems.push(Problem::new(field, "names no file"));
            continue;
        };
        let dest = dir.join(name);
        let result = (|| -> std::io::Result<()> {
            let meta = std::fs::metadata(&source)?;
            if let Ok(existing) = std::fs::metadata(&dest) {
                if existing.ino() == meta.ino() && existing.dev() == meta.dev()
                    || (existing.len(), existing.mtime()) == (meta.len(), meta.mtime())
                {
                    return Ok(());
                }
                std::fs::remove_file(&dest)?;
            }
            std::fs::create_dir_all(dir)?;
            if std::fs::hard_link(&source, &dest).is_ok() {
                return Ok(());
            }
            let options = berth_sys::atomic::Options::mode(meta.mode() & 0o7777);
            berth_sys::atomic::write_with(&dest, &options, |f| {
                std::io::copy(&mut std::fs::File::open(&source)?, f)?;
                // The copy's time is the source's: the next pass sees it unchanged.
                f.set_modified(meta.modified()?)
            })
        })();
        if let Err(e) = result {
            problems.push(Problem::new(field, e.to_string()));
        }
    }
    problems
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
        let argv = load_argv(engine, &archive);
        let problem = match runtime.exec(engine, &argv, TIMEOUT) {
            // The engine's container is not running (it stopped under the
            // load): nothing is known of the archive; it stays pending.
            Err(e) => {
                log::warn!("{field}: {e}; tried again when {engine} is up");
                continue;
            }
            Ok(out) if out.exit == Some(crate::runtime::Exit::Signal(libc::SIGKILL)) => {
                log::warn!("{field}: the load was killed with {engine}'s container; tried again when {engine} is up");
                continue;
            }
            Ok(out) => {
                log.write_text(
                    Stream::Stdout,
                    format!("{field}: {}", out.output.trim()).as_bytes(),
                );
                match out.exit {
                    Some(exit) if exit.success() => None,
                    Some(exit) => Some(format!("{} load: {exit}", argv[0])),
                    None => Some(format!(
                        "{} load: killed after {}s",
                        argv[0],
                        TIMEOUT.as_secs()
                    )),
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
    listed: &[String],
    root: &Path,
) {
    let dir = root.join(DIR.trim_start_matches('/')).join(&engine);
    for p in link_listed(root, listed, &dir) {
        log::error!("{p}");
    }
    if pending(&dir).is_empty() {
        return;
    }
    let service = engine.clone();
    let waiter = Arc::clone(&supervisor);
    super::when_ready(supervisor, logs, service, "preload", WAIT, move |log| {
        // An engine that dies under the first load (and is restarted by its
        // policy) leaves archives pending: try again once it is up, a few times.
        for attempt in 1..=ATTEMPTS {
            // The engine process the loads go to; up again means ready as another.
            let before = waiter.service(&engine).and_then(|s| s.pid);
            for p in load_pending(&*runtime, &engine, &dir, log) {
                log::error!("{p}");
            }
            if pending(&dir).is_empty() || attempt == ATTEMPTS {
                break;
            }
            let again = |s: &crate::supervisor::Snapshot| {
                s.service(&engine)
                    .is_some_and(|c| c.ready && c.pid != before)
            };
            if !waiter.wait_for(WAIT, again) {
                log::error!(
                    "preload: {engine} was not up again within {} min",
                    WAIT.as_secs() / 60
                );
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_stays_pending_when_the_engine_is_not_there_to_load_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("docker");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("app.tar"), b"one").expect("write");
        let logs = crate::logs::LogDir::new(crate::logs::LogConfig::new(dir.path().join("logs")));
        let log = logs.writer("docker").expect("log");
        // No `docker` container runs in the recording runtime: exec fails.
        let runtime = crate::runtime::recording::Recording::new();
        let problems = load_pending(&runtime, "docker", &d, &log);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(pending(&d), [d.join("app.tar")], "recorded as if loaded");
    }

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

    #[test]
    fn listed_archives_join_the_directory_once_and_keep_their_identity() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::fs::create_dir_all(r.join("opt/images")).expect("mkdir");
        std::fs::write(r.join("opt/images/app.tar"), b"archive").expect("write");
        let dir = r.join("var/lib/berth/preload/podman");
        let listed = vec![
            "/opt/images/app.tar".to_string(),
            "/opt/missing.tar".to_string(),
        ];
        let problems = link_listed(r, &listed, &dir);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].to_string().contains("/opt/missing.tar"),
            "{problems:?}"
        );
        assert_eq!(pending(&dir), [dir.join("app.tar")]);
        record(&dir, &dir.join("app.tar")).expect("record");
        // Listed again at the next boot: already there, nothing new to load.
        assert!(link_listed(r, &listed[..1], &dir).is_empty());
        assert!(pending(&dir).is_empty());
    }

    #[test]
    fn each_engine_loads_with_its_own_cli() {
        let a = Path::new("/var/lib/berth/preload/x/a.tar");
        assert_eq!(
            load_argv("docker", a).join(" "),
            "docker --host unix:///run/docker/docker.sock load --input /var/lib/berth/preload/x/a.tar"
        );
        assert_eq!(
            load_argv("podman", a).join(" "),
            "podman load --input /var/lib/berth/preload/x/a.tar"
        );
    }
}
