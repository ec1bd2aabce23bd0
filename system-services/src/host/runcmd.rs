//! `runcmd`, then `/etc/rc.local` when it is there and executable (RancherOS
//! runs it at the end of boot): run once per boot inside the console
//! service's container, once it is up (ready), through [`Runtime::exec`] as
//! healthchecks are. What each command prints goes into the console service's
//! log (`berth logs console`); failures are reported there and in berthd's
//! log, and the next command still runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_configs::forms::Command;

use super::commands::shown;
use super::Problem;
use crate::logs::{LogDir, LogWriter, Stream};
use crate::runtime::Runtime;
use crate::supervisor::Supervisor;

/// The service whose container runs `runcmd`.
pub const SERVICE: &str = "console";
/// How long one command may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(3600);
/// How long to wait for the console to be ready.
pub const WAIT: Duration = Duration::from_secs(1800);

const MARKER: &str = "runcmd.done";

/// Runs `/etc/rc.local` when it is executable (and does nothing otherwise).
const RC_LOCAL: &str = "if [ -x /etc/rc.local ]; then exec /etc/rc.local; fi";

/// `commands`, each with its config field, then rc.local.
fn steps(commands: &[Command]) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("runcmd[{i}]"), c.argv()))
        .collect();
    steps.push((
        "rc.local".into(),
        vec!["/bin/sh".into(), "-c".into(), RC_LOCAL.into()],
    ));
    steps
}

/// Runs `commands` in container `id`, unless they already ran this boot
/// (the marker in `state_dir`), writing what happens to `log`.
pub fn run_once(
    runtime: &dyn Runtime,
    id: &str,
    commands: &[Command],
    log: &LogWriter,
    state_dir: &Path,
) -> Vec<Problem> {
    let marker = state_dir.join(MARKER);
    if marker.exists() {
        return Vec::new();
    }
    // Marked first: a command that takes berthd down must not run again on
    // every restart.
    if let Err(e) = std::fs::create_dir_all(state_dir).and_then(|()| std::fs::write(&marker, "")) {
        log::warn!("runcmd: {}: {e}", marker.display());
    }
    let mut problems = Vec::new();
    for (field, argv) in steps(commands) {
        if argv.first().is_none_or(String::is_empty) {
            problems.push(Problem::new(field, "empty command"));
            continue;
        }
        log.write_text(
            Stream::Stdout,
            format!("{field}: $ {}", shown(&argv)).as_bytes(),
        );
        let problem = match runtime.exec(id, &argv, TIMEOUT) {
            Err(e) => Some(e.to_string()),
            Ok(out) => {
                if !out.output.is_empty() {
                    log.write_text(Stream::Stdout, out.output.as_bytes());
                }
                match out.exit {
                    Some(exit) if exit.success() => None,
                    Some(exit) => Some(format!("{}: {exit}", shown(&argv))),
                    None => Some(format!(
                        "{}: killed after {}s",
                        shown(&argv),
                        TIMEOUT.as_secs()
                    )),
                }
            }
        };
        match problem {
            Some(why) => {
                log.write_text(Stream::Stderr, format!("{field}: {why}").as_bytes());
                problems.push(Problem::new(field, why));
            }
            None => log::info!("{field}: done in {SERVICE}"),
        }
    }
    problems
}

/// Once the console service is ready, runs `runcmd` in it (in a thread of
/// its own). Nothing to do without commands or when they already ran.
pub fn spawn(
    supervisor: Arc<Supervisor>,
    runtime: Arc<dyn Runtime>,
    logs: Arc<LogDir>,
    commands: Vec<Command>,
    state_dir: std::path::PathBuf,
) {
    if state_dir.join(MARKER).exists() {
        return;
    }
    super::when_ready(
        supervisor,
        logs,
        SERVICE.into(),
        "runcmd",
        WAIT,
        move |log| {
            for p in run_once(&*runtime, SERVICE, &commands, log, &state_dir) {
                log::error!("{p}");
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{LogConfig, Query};
    use crate::runtime::{ContainerConfig, Exit, Recording};

    #[test]
    fn runs_in_the_console_once_with_output_in_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = Recording::new();
        let config = ContainerConfig {
            id: SERVICE.into(),
            service_name: SERVICE.into(),
            service: Default::default(),
            image: Default::default(),
            environment: Default::default(),
            service_network: None,
            files: Vec::new(),
        };
        runtime.create(&config).expect("create");
        runtime.start(SERVICE).expect("start");
        runtime.set_exec(SERVICE, Exit::Code(3));
        let logs = LogDir::new(LogConfig::new(dir.path().join("log")));
        let log = logs.writer(SERVICE).expect("writer");
        let commands = vec![
            Command::Shell("touch /tmp/x".into()),
            Command::Exec(vec!["ls".into(), "/".into()]),
        ];
        let state = dir.path().join("state");
        let problems = run_once(&runtime, SERVICE, &commands, &log, &state);
        assert_eq!(
            problems.len(),
            3,
            "the exec fails with 3 each time: {problems:?}"
        );
        assert_eq!(problems[0].field, "runcmd[0]");
        assert_eq!(problems[2].field, "rc.local");
        assert!(problems[2].message.contains("/etc/rc.local"));
        assert!(problems[0].message.contains("exit code 3"));
        let lines: Vec<String> = logs
            .reader(SERVICE)
            .expect("reader")
            .lines(&Query::default())
            .expect("lines")
            .map(|l| l.expect("line").message().to_string())
            .collect();
        assert!(
            lines.iter().any(|l| l == "runcmd[0]: $ touch /tmp/x"),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("runcmd[1]: ls") || l.contains("runcmd[1]: [")),
            "{lines:?}"
        );
        // Once per boot.
        assert!(run_once(&runtime, SERVICE, &commands, &log, &state).is_empty());
    }
}
