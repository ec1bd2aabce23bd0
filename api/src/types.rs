//! What berthd's endpoints answer, as JSON (`docs/api.md`).

use serde::{Deserialize, Serialize};

/// Where a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for its dependencies (or blocked by them: see `error`).
    Waiting,
    Starting,
    Running,
    Stopping,
    /// Exited; restarts after the backoff delay.
    Restarting,
    /// Exited and stays so (restart policy, or a oneshot that completed).
    Exited,
    /// Stopped on request.
    Stopped,
    /// Gave up: could not start, or `on-failure:N` used up.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Restarting => "restarting",
            Phase::Exited => "exited",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service's health, as `berth ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// No verdict yet.
    Starting,
    Healthy,
    Unhealthy,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// One service as `GET /v1/services` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
    pub state: Phase,
    /// `None` when the service has no healthcheck.
    #[serde(default)]
    pub health: Option<Health>,
    /// Ready: healthy, or running when it has no healthcheck (a oneshot: completed).
    pub ready: bool,
    #[serde(default)]
    pub pid: Option<i32>,
    pub restarts: u32,
    /// Seconds since its current container started.
    #[serde(default)]
    pub uptime: Option<f64>,
    /// The last exit: the code, or 128 + signal; -1 when unknown (adopted).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why it failed, is blocked, or what its last healthcheck said.
    #[serde(default)]
    pub error: Option<String>,
    pub oneshot: bool,
    pub restart: String,
    /// Adopted from a previous berthd (its output is captured again; its exit
    /// status will go to PID 1, so `exit_code` shows -1).
    #[serde(default)]
    pub adopted: bool,
    /// Started only once the boot is ready (`after_ready: true`, its own or
    /// a dependency's): the ready line does not wait for it.
    #[serde(default)]
    pub after_ready: bool,
}

impl ServiceStatus {
    /// Whether the service has come to rest: ready, or in a state it will
    /// not leave by itself soon (exited, stopped, failed, restarting after a
    /// failure, waiting on dependencies that can never be met). PID 1's
    /// ready line and berthd's start of the `after_ready` services both wait
    /// for this, so they agree on when the boot is ready.
    pub fn at_rest(&self) -> bool {
        self.ready
            || matches!(
                self.state,
                Phase::Exited | Phase::Stopped | Phase::Failed | Phase::Restarting
            )
            || (self.state == Phase::Waiting && self.error.is_some())
    }
}

/// What a config reload did (`POST /v1/config/reload`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Changed, or recreated with a changed dependency (`restart: true`).
    pub recreated: Vec<String>,
    pub unchanged: Vec<String>,
}

/// One service's most recent run. Times are seconds since boot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited: Option<f64>,
    #[serde(default)]
    pub restarts: u32,
}

/// `GET /v1/timeline`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// When berthd itself started, seconds since boot.
    pub berthd_started: f64,
    /// Services that have started at least once, in the order they were created.
    pub services: Vec<Entry>,
}

/// `GET /v1/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
    pub api: String,
}

/// `POST /v1/shutdown` (202).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShuttingDown {
    pub shutting_down: bool,
}

/// The body of every answer with an error status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// What is wrong, one finding each (an invalid config on reload: 400),
    /// as `berth config validate` prints them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

impl ErrorBody {
    pub fn new(message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: message.into(),
            findings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_leave_out_what_did_not_happen() {
        let e = Entry {
            service: "ntp".into(),
            created: Some(1.5),
            ..Default::default()
        };
        let json = serde_json::to_string(&e).expect("json");
        assert_eq!(json, r#"{"service":"ntp","created":1.5,"restarts":0}"#);
        let back: Entry = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, e);
    }

    #[test]
    fn phases_read_as_their_json_names() {
        for p in [
            Phase::Waiting,
            Phase::Starting,
            Phase::Running,
            Phase::Stopping,
            Phase::Restarting,
            Phase::Exited,
            Phase::Stopped,
            Phase::Failed,
        ] {
            assert_eq!(
                serde_json::to_value(p).expect("json"),
                serde_json::Value::String(p.to_string())
            );
        }
    }

    #[test]
    fn error_bodies_carry_findings_only_when_there_are_some() {
        let plain = serde_json::to_string(&ErrorBody::new("no")).expect("json");
        assert_eq!(plain, r#"{"error":"no"}"#);
        let back: ErrorBody = serde_json::from_str(plain.as_str()).expect("parse");
        assert!(back.findings.is_empty());
    }
}
