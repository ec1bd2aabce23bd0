//! Compose fields with a syntax of their own (`volumes`, `devices`, `cap_add`,
//! `stop_signal`, `mem_limit`), parsed once when the config is read.
//!
//! The model holds these types, not strings: a value that does not parse is a
//! type error at its file, line and column, and the runtime consumes the parsed
//! value, so what the config accepted and what a container gets cannot differ.
//! (Durations are [`crate::forms::Duration`].)

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::de::{self, Deserialize, Deserializer};

use crate::forms::Scalar;

/// Why a compose field's text is not a value of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("volume `{value}`: {reason}")]
    Volume { value: String, reason: String },
    #[error("device `{value}` is not `/dev/HOST[:/dev/CONTAINER[:rwm]]`: {reason}")]
    Device { value: String, reason: String },
    #[error("`{value}` is not a Linux capability{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    Capability {
        value: String,
        suggestion: Option<String>,
    },
    #[error("`{value}` is not a signal (write it like SIGTERM, TERM or 15){}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    Signal {
        value: String,
        suggestion: Option<String>,
    },
    #[error("`{value}` is not a size (write it like 512m or 1g)")]
    Size { value: String },
}

/// Deserializes a scalar through `parse`, turning its error into a located one.
fn from_scalar<'de, D, T>(d: D, parse: fn(&str) -> Result<T, ComposeError>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = Scalar::deserialize(d)?;
    parse(&text.0).map_err(de::Error::custom)
}

/// `FromStr` and `Deserialize` through the type's own `parse`, so a config
/// value and a string in code are read by the same rules.
macro_rules! parsed_from_text {
    ($ty:ident) => {
        impl std::str::FromStr for $ty {
            type Err = ComposeError;

            fn from_str(text: &str) -> Result<Self, ComposeError> {
                $ty::parse(text)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                from_scalar(d, $ty::parse)
            }
        }
    };
}

/// A schema of one string, for types written as one compose string.
macro_rules! string_schema {
    ($ty:ident, $description:expr) => {
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": $description })
            }
        }
    };
}

/// A volume: a bind from the host (or a named volume directory) into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `None` for a bare `TARGET`: an anonymous volume, named after the
    /// service and the target (see [`Volume::host_path`]).
    pub source: Option<VolumeSource>,
    pub target: String,
    pub read_only: bool,
    /// Other mount options (`nosuid`, `rslave`, …), in the order given.
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host path.
    Path(PathBuf),
    /// A named volume, kept under `<state>/volumes/<name>`.
    Named(String),
}

impl Volume {
    /// Parses compose's short syntax: `SOURCE:TARGET[:OPTS]`, or a bare `TARGET`.
    pub fn parse(text: &str) -> Result<Self, ComposeError> {
        let err = |reason: &str| ComposeError::Volume {
            value: text.into(),
            reason: reason.into(),
        };
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, opts) = match parts.as_slice() {
            [t] => (None, *t, None),
            [s, t] => (Some(*s), *t, None),
            [s, t, o] => (Some(*s), *t, Some(*o)),
            _ => return Err(err("write it as SOURCE:TARGET[:OPTIONS]")),
        };
        if !target.starts_with('/') {
            return Err(err("the target must be an absolute path"));
        }
        let source = match source {
            None => None,
            Some(s) if s.starts_with('/') => Some(VolumeSource::Path(PathBuf::from(s))),
            Some(s) if s.contains('/') || s.starts_with('.') || s.starts_with('~') => {
                return Err(err(
                    "a host path must be absolute (Berth has no project directory)",
                ))
            }
            Some(s)
                if !s.is_empty()
                    && s.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c)) =>
            {
                Some(VolumeSource::Named(s.to_string()))
            }
            Some(_) => return Err(err("the source must be an absolute path or a volume name")),
        };
        let mut read_only = false;
        let mut options = Vec::new();
        for o in opts.into_iter().flat_map(|o| o.split(',')) {
            match o {
                "ro" => read_only = true,
                "rw" => read_only = false,
                // SELinux relabelling and copy-up are not things Berth does.
                "z" | "Z" | "nocopy" | "bind" | "rbind" | "" => {}
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" | "noexec"
                | "nosuid" | "nodev" => options.push(o.to_string()),
                other => return Err(err(&format!("`{other}` is not a volume option"))),
            }
        }
        Ok(Volume {
            source,
            target: target.to_string(),
            read_only,
            options,
        })
    }

    /// The host directory or file this volume of service `service` binds.
    pub fn host_path(&self, service: &str, volumes_dir: &Path) -> PathBuf {
        match &self.source {
            Some(VolumeSource::Path(p)) => p.clone(),
            Some(VolumeSource::Named(n)) => volumes_dir.join(n),
            None => volumes_dir.join(self.anonymous_name(service)),
        }
    }

    /// The name an anonymous volume is kept under: the service and the target.
    fn anonymous_name(&self, service: &str) -> String {
        let slug: String = self
            .target
            .trim_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{service}_{slug}")
    }

    /// Whether the mount propagates both ways (`shared`/`rshared`).
    pub fn shares_mounts(&self) -> bool {
        self.options.iter().any(|o| o == "shared" || o == "rshared")
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(VolumeSource::Path(p)) => write!(f, "{}:", p.display())?,
            Some(VolumeSource::Named(n)) => write!(f, "{n}:")?,
            None => {}
        }
        f.write_str(&self.target)?;
        let mut opts = self.options.clone();
        if self.read_only {
            opts.insert(0, "ro".into());
        }
        if !opts.is_empty() {
            if self.source.is_none() {
                // `TARGET:OPTS` would read as SOURCE:TARGET.
                return Ok(());
            }
            write!(f, ":{}", opts.join(","))?;
        }
        Ok(())
    }
}

parsed_from_text!(Volume);

string_schema!(
    Volume,
    "SOURCE:TARGET[:OPTIONS]; SOURCE is an absolute host path or a volume name"
);

/// A host device made available in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub host: PathBuf,
    pub container: PathBuf,
    /// Letters from `rwm`: read, write, mknod.
    pub permissions: String,
}

impl Device {
    /// `/dev/HOST[:/dev/CONTAINER[:rwm]]` or `/dev/HOST:rwm`.
    pub fn parse(text: &str) -> Result<Self, ComposeError> {
        let err = |reason: &str| ComposeError::Device {
            value: text.into(),
            reason: reason.into(),
        };
        let mut parts = text.split(':');
        let host = parts.next().unwrap_or_default();
        let (container, perms) = match (parts.next(), parts.next()) {
            (None, _) => (host, "rwm"),
            (Some(c), None) if !c.starts_with('/') => (host, c),
            (Some(c), None) => (c, "rwm"),
            (Some(c), Some(p)) => (c, p),
        };
        if parts.next().is_some() {
            return Err(err("too many `:`"));
        }
        if !host.starts_with("/dev/") {
            return Err(err("the host device must be under /dev"));
        }
        if !container.starts_with('/') {
            return Err(err("the container path must be absolute"));
        }
        if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
            return Err(err("permissions are letters from `rwm`"));
        }
        Ok(Device {
            host: host.into(),
            container: container.into(),
            permissions: perms.into(),
        })
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.host.display(),
            self.container.display(),
            self.permissions
        )
    }
}

parsed_from_text!(Device);

string_schema!(Device, "/dev/HOST[:/dev/CONTAINER[:rwm]]");

/// Every capability Linux has, without the `CAP_` prefix: what `cap_add` and
/// `cap_drop` accept, and what `privileged` grants.
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A `cap_add`/`cap_drop` entry: `ALL` or one capability, in any case, with or
/// without `CAP_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapName {
    All,
    /// One of [`CAPABILITIES`], as spelled there.
    One(&'static str),
}

impl CapName {
    pub fn parse(text: &str) -> Result<Self, ComposeError> {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if bare == "ALL" {
            return Ok(CapName::All);
        }
        match CAPABILITIES.iter().find(|c| **c == bare) {
            Some(c) => Ok(CapName::One(c)),
            None => Err(ComposeError::Capability {
                value: text.into(),
                suggestion: crate::diag::did_you_mean(bare, CAPABILITIES.iter().copied())
                    .map(String::from),
            }),
        }
    }
}

impl fmt::Display for CapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapName::All => f.write_str("ALL"),
            CapName::One(c) => f.write_str(c),
        }
    }
}

parsed_from_text!(CapName);

string_schema!(
    CapName,
    "a Linux capability (NET_ADMIN or CAP_NET_ADMIN), or ALL"
);

/// Linux's standard signals by number (the generic numbering that x86-64 and
/// arm64 share), with the aliases compose files use.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// A `stop_signal`: one of Linux's standard signals, by name (`SIGTERM`,
/// `TERM`, any case) or number (`15`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal(i32);

impl StopSignal {
    pub const TERM: StopSignal = StopSignal(15);

    pub fn parse(text: &str) -> Result<Self, ComposeError> {
        let trimmed = text.trim();
        if let Ok(n) = trimmed.parse::<i32>() {
            if SIGNALS.iter().any(|(_, s)| *s == n) {
                return Ok(StopSignal(n));
            }
        }
        let upper = trimmed.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        match SIGNALS.iter().find(|(name, _)| *name == bare) {
            Some((_, n)) => Ok(StopSignal(*n)),
            None => Err(ComposeError::Signal {
                value: text.into(),
                suggestion: crate::diag::did_you_mean(bare, SIGNALS.iter().map(|(n, _)| *n))
                    .map(|s| format!("SIG{s}")),
            }),
        }
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match SIGNALS.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => write!(f, "SIG{name}"),
            None => write!(f, "{}", self.0),
        }
    }
}

parsed_from_text!(StopSignal);

string_schema!(StopSignal, "a signal name (SIGTERM, TERM) or number");

/// A size in bytes: `512`, `512k`, `64m`, `1g`, `1.5g` (powers of 1024, as
/// docker reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, ComposeError> {
        parse_bytes(text)
            .map(ByteSize)
            .ok_or_else(|| ComposeError::Size { value: text.into() })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

parsed_from_text!(ByteSize);

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "integer"],
            "description": "bytes, or with a unit: 512k, 64m, 1g"
        })
    }
}

/// Bytes in `512`, `512k`, `64m`, `1g`, `1.5g` (powers of 1024, as docker reads them).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, scale) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let value: f64 = num.parse().ok()?;
    (value >= 0.0 && value.is_finite()).then_some((value * scale as f64) as u64)
}
