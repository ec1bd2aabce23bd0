//! `berth.engine.swarm`: once the docker engine is ready, this machine
//! initialises a Docker Swarm or joins one — unless the engine is in a swarm
//! already, which is the normal case after a reboot: membership is the
//! engine's own state (`/var/lib/docker/swarm`, on the state partition) and
//! dockerd rejoins by itself. While no manager answers, joining is retried
//! with backoff (2 s doubling to a minute, forever: a fleet's machines boot
//! in any order). What happens goes into the engine's log (`berth logs
//! docker`) and berthd's; the join token never does.
//!
//! It runs the engine's own CLI inside the engine's container (as preloading
//! does), not the HTTP API over the socket: the CLI negotiates the API
//! version with whatever dockerd the image carries, and prints the same
//! errors users see when they type the command.

use std::sync::Arc;
use std::time::Duration;

use berth_configs::model::Swarm;

use crate::logs::{LogDir, LogWriter, Stream};
use crate::runtime::{Runtime, RuntimeError};
use crate::supervisor::Supervisor;

/// How long one docker command may take (`swarm join` waits up to 20 s for
/// a manager itself before it says so).
const TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for the engine to be ready.
const WAIT: Duration = Duration::from_secs(1800);
/// The first and the longest pause between attempts.
const FIRST_DELAY: Duration = Duration::from_secs(2);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A join this boot started that is still `pending` after this many checks
/// is abandoned (`swarm leave --force`) and tried again with the next
/// manager: dockerd keeps trying the manager it was given for ever, which
/// may be the one that is gone. A node found `pending` without a join of
/// ours is a member reconnecting after a reboot: it is left alone.
const PENDING_CHECKS: u32 = 5;

/// What one docker command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub success: bool,
    /// Its stdout and stderr.
    pub output: String,
}

/// Why a docker command could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// `command` is docker's subcommand only: the rest may hold the token.
    #[error("`docker {command}` was killed after {} s", after.as_secs())]
    Killed { command: String, after: Duration },
}

/// Why the engine's swarm state is unknown.
#[derive(Debug, thiserror::Error)]
enum StateError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("the engine does not answer: {0}")]
    NoAnswer(String),
}

/// Runs `docker ARGS…` against the engine.
pub trait Docker {
    /// `Err`: the command could not run at all (no container, killed).
    fn docker(&mut self, args: &[String]) -> Result<Ran, DockerError>;
}

/// The docker CLI inside the engine's container.
pub struct EngineCli<'a> {
    pub runtime: &'a dyn Runtime,
    /// The engine's service (container) name.
    pub service: &'a str,
}

impl std::fmt::Debug for EngineCli<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCli")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Docker for EngineCli<'_> {
    fn docker(&mut self, args: &[String]) -> Result<Ran, DockerError> {
        // The engine's socket is not at docker's default path (as in preload).
        let mut argv: Vec<String> = ["docker", "--host", "unix:///run/docker/docker.sock"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.extend(args.iter().cloned());
        let out = self.runtime.exec(self.service, &argv, TIMEOUT)?;
        match out.exit {
            None => Err(DockerError::Killed {
                command: args.first().cloned().unwrap_or_default(),
                after: TIMEOUT,
            }),
            Some(exit) => Ok(Ran {
                success: exit.success(),
                output: out.output.trim().to_string(),
            }),
        }
    }
}

/// What a step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing more to do; says what was done (or found).
    Done(String),
    /// Try again after a pause; says why.
    Retry(String),
}

/// What is remembered between the steps of one boot.
#[derive(Debug, Default)]
pub struct Progress {
    /// Which manager of `join` is tried next.
    next_manager: usize,
    /// Checks in a row that found the node `pending`.
    pending: u32,
    /// Whether a `swarm join` of ours was answered by docker this boot.
    joined: bool,
}

/// `docker swarm init` or `join`'s optional address flags.
fn address_flags(swarm: &Swarm) -> Vec<String> {
    let mut flags = Vec::new();
    for (flag, value) in [
        ("--advertise-addr", &swarm.advertise_addr),
        ("--listen-addr", &swarm.listen_addr),
        ("--data-path-addr", &swarm.data_path_addr),
    ] {
        if let Some(value) = value {
            flags.push(flag.to_string());
            flags.push(value.clone());
        }
    }
    flags
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The engine's swarm state: `inactive`, `pending`, `active`, `locked` or
/// `error`, with its node ID and whether it is a manager.
fn swarm_state(docker: &mut dyn Docker) -> Result<(String, String, bool), StateError> {
    let ran = docker.docker(&args(&[
        "info",
        "--format",
        "{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}} {{.Swarm.ControlAvailable}}",
    ]))?;
    if !ran.success {
        return Err(StateError::NoAnswer(ran.output));
    }
    // `docker info` may print warnings on stderr after the line asked for.
    let line = ran.output.lines().next().unwrap_or_default();
    let mut words = line.split_whitespace();
    let state = words.next().unwrap_or_default().to_string();
    let (node, manager) = match (words.next(), words.next()) {
        (Some(node), Some(manager)) => (node.to_string(), manager == "true"),
        (Some(manager), None) => (String::new(), manager == "true"),
        _ => (String::new(), false),
    };
    Ok((state, node, manager))
}

/// Node labels, set by a manager on itself (a worker cannot; its labels are
/// the engine labels daemon.json carries).
fn label_self(docker: &mut dyn Docker, swarm: &Swarm, node: &str) -> Option<String> {
    if swarm.labels.0.is_empty() || node.is_empty() {
        return None;
    }
    let mut argv = args(&["node", "update"]);
    for pair in swarm.label_pairs() {
        argv.push("--label-add".into());
        argv.push(pair);
    }
    argv.push(node.to_string());
    Some(match docker.docker(&argv) {
        Ok(ran) if ran.success => format!("node labels {}", swarm.label_pairs().join(", ")),
        Ok(ran) => format!("node labels not set: {}", ran.output),
        Err(e) => format!("node labels not set: {e}"),
    })
}

/// One attempt: look at the engine's swarm state and do what is missing.
pub fn step(docker: &mut dyn Docker, swarm: &Swarm, progress: &mut Progress) -> Outcome {
    let (state, node, manager) = match swarm_state(docker) {
        Ok(s) => s,
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    match state.as_str() {
        "active" => {
            let role = if manager { "a manager" } else { "a worker" };
            let mut done = format!("this node ({node}) is {role} of a swarm already");
            if manager {
                if let Some(labels) = label_self(docker, swarm, &node) {
                    done.push_str(&format!("; {labels}"));
                }
            }
            return Outcome::Done(done);
        }
        "locked" => {
            return Outcome::Done(
                "the swarm is locked (autolock): `docker swarm unlock` with its key".into(),
            )
        }
        "pending" if !progress.joined => {
            // Membership from an earlier boot, reconnecting: dockerd does it.
            return Outcome::Done(format!(
                "this node ({node}) is in a swarm already and reconnecting to its managers"
            ));
        }
        "pending" => {
            progress.pending += 1;
            if progress.pending < PENDING_CHECKS {
                return Outcome::Retry("joining is under way (pending)".into());
            }
            progress.joined = false;
            // Stuck on a manager that does not answer: start again.
            progress.pending = 0;
            if let Err(e) = docker.docker(&args(&["swarm", "leave", "--force"])) {
                return Outcome::Retry(format!("a stuck join could not be abandoned: {e}"));
            }
            return Outcome::Retry("no manager answered; trying again".into());
        }
        "inactive" | "error" => progress.pending = 0,
        other => return Outcome::Retry(format!("unknown swarm state `{other}`")),
    }
    if swarm.init {
        let mut argv = args(&["swarm", "init"]);
        argv.extend(address_flags(swarm));
        return match docker.docker(&argv) {
            // The output includes the worker join command, token and all: it
            // is not logged.
            Ok(ran) if ran.success => {
                let (_, node, _) = swarm_state(docker).unwrap_or_default();
                let mut done =
                    format!("initialised a new swarm; this node ({node}) is its manager");
                if let Some(labels) = label_self(docker, swarm, &node) {
                    done.push_str(&format!("; {labels}"));
                }
                Outcome::Done(done)
            }
            Ok(ran) => Outcome::Retry(format!("docker swarm init: {}", ran.output)),
            Err(e) => Outcome::Retry(format!("docker swarm init: {e}")),
        };
    }
    let managers = &swarm.join.0;
    let Some(token) = swarm.token.as_deref().filter(|_| !managers.is_empty()) else {
        // Validation refuses this; a config that slipped through does nothing.
        return Outcome::Done("neither `init` nor `join` with a token: nothing to do".into());
    };
    let manager = &managers[progress.next_manager % managers.len()];
    progress.next_manager += 1;
    let mut argv = args(&["swarm", "join", "--token", token]);
    argv.extend(address_flags(swarm));
    argv.push(manager.clone());
    let ran = docker.docker(&argv);
    // A join that timed out goes on in the background (`pending`).
    progress.joined = ran.is_ok();
    match ran {
        Ok(ran) if ran.success => Outcome::Done(format!(
            "joined the swarm through {manager}: {}",
            ran.output
        )),
        Ok(ran) => Outcome::Retry(format!(
            "docker swarm join {manager}: {}",
            ran.output.replace(token, "<token>")
        )),
        Err(e) => Outcome::Retry(format!(
            "docker swarm join {manager}: {}",
            e.to_string().replace(token, "<token>")
        )),
    }
}

/// The pause after `attempt` failed attempts (from 1): doubling, capped.
pub fn delay(attempt: u32) -> Duration {
    FIRST_DELAY
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_DELAY)
}

/// Steps until done, sleeping between attempts, reporting to `log`.
pub fn run(docker: &mut dyn Docker, swarm: &Swarm, log: &LogWriter) {
    let mut progress = Progress::default();
    let mut failed = 0;
    loop {
        match step(docker, swarm, &mut progress) {
            Outcome::Done(what) => {
                log::info!("swarm: {what}");
                log.write_text(Stream::Stdout, format!("berth swarm: {what}").as_bytes());
                return;
            }
            Outcome::Retry(why) => {
                failed += 1;
                let pause = delay(failed);
                let line = format!("{why}; trying again in {} s", pause.as_secs());
                log::warn!("swarm: {line}");
                log.write_text(Stream::Stderr, format!("berth swarm: {line}").as_bytes());
                std::thread::sleep(pause);
            }
        }
    }
}

/// Once the engine service `engine` is ready, applies `swarm` in a thread of
/// its own. Nothing when the config asks for no swarm.
pub fn spawn(
    supervisor: Arc<Supervisor>,
    runtime: Arc<dyn Runtime>,
    logs: Arc<LogDir>,
    engine: String,
    swarm: &Swarm,
) {
    if !swarm.is_set() {
        return;
    }
    if engine != "docker" {
        // Validation refuses this; say it again where the engine's log is.
        log::error!("berth.engine.swarm: Docker Swarm needs the docker engine, not `{engine}`");
        return;
    }
    let swarm = swarm.clone();
    let service = engine.clone();
    super::when_ready(supervisor, logs, service, "swarm", WAIT, move |log| {
        let mut cli = EngineCli {
            runtime: &*runtime,
            service: &engine,
        };
        run(&mut cli, &swarm, log);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Answers scripted in order, and what was asked.
    #[derive(Default)]
    struct Script {
        answers: VecDeque<Result<Ran, DockerError>>,
        asked: Vec<String>,
    }

    impl Script {
        fn then(mut self, success: bool, output: &str) -> Self {
            self.answers.push_back(Ok(Ran {
                success,
                output: output.into(),
            }));
            self
        }
    }

    impl Docker for Script {
        fn docker(&mut self, args: &[String]) -> Result<Ran, DockerError> {
            self.asked.push(args.join(" "));
            self.answers.pop_front().unwrap_or_else(|| {
                Err(DockerError::Runtime(RuntimeError::Unknown {
                    id: "nothing scripted".into(),
                }))
            })
        }
    }

    const TOKEN: &str = "SWMTKN-1-abc-def";

    fn joining() -> Swarm {
        Swarm {
            join: berth_configs::forms::StringList(vec!["10.9.9.1".into(), "10.9.9.3:2377".into()]),
            token: Some(TOKEN.into()),
            advertise_addr: Some("eth1".into()),
            ..Swarm::default()
        }
    }

    #[test]
    fn a_node_in_a_swarm_already_does_nothing() {
        let mut docker = Script::default().then(true, "active n1 false\n");
        let out = step(&mut docker, &joining(), &mut Progress::default());
        assert_eq!(
            out,
            Outcome::Done("this node (n1) is a worker of a swarm already".into())
        );
        assert_eq!(docker.asked.len(), 1, "{:?}", docker.asked);
    }

    #[test]
    fn init_with_addresses_and_labels_on_itself() {
        let mut swarm = Swarm {
            init: true,
            advertise_addr: Some("eth1".into()),
            listen_addr: Some("0.0.0.0:2377".into()),
            ..Swarm::default()
        };
        swarm.labels.0.insert("zone".into(), Some("a".into()));
        let mut docker = Script::default()
            .then(true, "inactive  false")
            .then(true, "Swarm initialized: … --token SWMTKN-1-x-y …")
            .then(true, "active m1 true")
            .then(true, "m1");
        let out = step(&mut docker, &swarm, &mut Progress::default());
        assert_eq!(
            out,
            Outcome::Done(
                "initialised a new swarm; this node (m1) is its manager; node labels zone=a".into()
            )
        );
        assert_eq!(
            docker.asked[1],
            "swarm init --advertise-addr eth1 --listen-addr 0.0.0.0:2377"
        );
        assert_eq!(docker.asked[3], "node update --label-add zone=a m1");
    }

    #[test]
    fn joining_tries_the_managers_in_turn_and_never_shows_the_token() {
        let swarm = joining();
        let mut progress = Progress::default();
        let mut docker = Script::default().then(true, "inactive  false").then(
            false,
            &format!("Error response from daemon: rpc error: connection refused ({TOKEN})"),
        );
        let Outcome::Retry(why) = step(&mut docker, &swarm, &mut progress) else {
            panic!("a refused join is retried");
        };
        assert!(why.starts_with("docker swarm join 10.9.9.1: "), "{why}");
        assert!(!why.contains(TOKEN), "{why}");
        assert_eq!(
            docker.asked[1],
            format!("swarm join --token {TOKEN} --advertise-addr eth1 10.9.9.1")
        );
        let mut docker = Script::default()
            .then(true, "inactive  false")
            .then(true, "This node joined a swarm as a worker.");
        let out = step(&mut docker, &swarm, &mut progress);
        assert_eq!(
            out,
            Outcome::Done(
                "joined the swarm through 10.9.9.3:2377: This node joined a swarm as a worker."
                    .into()
            )
        );
    }

    #[test]
    fn a_member_reconnecting_after_a_reboot_is_left_alone() {
        let mut docker = Script::default().then(true, "pending n2 false");
        assert_eq!(
            step(&mut docker, &joining(), &mut Progress::default()),
            Outcome::Done(
                "this node (n2) is in a swarm already and reconnecting to its managers".into()
            )
        );
        assert_eq!(
            docker.asked.len(),
            1,
            "no leave, no join: {:?}",
            docker.asked
        );
    }

    #[test]
    fn an_engine_not_answering_and_a_stuck_join_are_retried() {
        let swarm = joining();
        let mut progress = Progress::default();
        let mut docker = Script::default().then(false, "Cannot connect to the Docker daemon");
        assert!(matches!(
            step(&mut docker, &swarm, &mut progress),
            Outcome::Retry(why) if why.contains("does not answer")
        ));
        let mut docker = Script::default().then(true, "inactive  false").then(
            false,
            "Timeout was reached before node joined. The attempt to join the swarm will continue in the background.",
        );
        assert!(matches!(
            step(&mut docker, &swarm, &mut progress),
            Outcome::Retry(why) if why.contains("Timeout was reached")
        ));
        for _ in 1..PENDING_CHECKS {
            let mut docker = Script::default().then(true, "pending  false");
            assert_eq!(
                step(&mut docker, &swarm, &mut progress),
                Outcome::Retry("joining is under way (pending)".into())
            );
        }
        let mut docker = Script::default()
            .then(true, "pending  false")
            .then(true, "Node left the swarm.");
        assert_eq!(
            step(&mut docker, &swarm, &mut progress),
            Outcome::Retry("no manager answered; trying again".into())
        );
        assert_eq!(docker.asked[1], "swarm leave --force");
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        let secs: Vec<u64> = (1..=8).map(|a| delay(a).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
