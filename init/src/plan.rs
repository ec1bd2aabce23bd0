//! What the kernel command line (and the config it carries) asks of PID 1.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_configs::{cmdline, defaults, load, Document, Severity};

/// How long stage 1 waits for the boot medium without `berth.wait=`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The filesystem label of the state partition: its partition name too.
pub const STATE_LABEL: &str = berth_sys::gpt::STATE_NAME;

/// The volume label of the live ISO.
pub const ISO_LABEL: &str = "BERTH_ISO";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevSpec {
    Label(String),
    Uuid(String),
    Path(PathBuf),
}

impl DevSpec {
    pub fn parse(s: &str) -> DevSpec {
        if let Some(l) = s.strip_prefix("LABEL=") {
            DevSpec::Label(l.to_string())
        } else if let Some(u) = s.strip_prefix("UUID=") {
            DevSpec::Uuid(u.to_ascii_lowercase())
        } else {
            DevSpec::Path(PathBuf::from(s))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePlan {
    pub dev: DevSpec,
    pub fstype: String,
    /// Disks that may be formatted when blank.
    pub autoformat: Vec<PathBuf>,
    /// Wait (up to the boot wait) for the state device to appear.
    pub wait: bool,
    /// No state device is fatal instead of running from RAM.
    pub required: bool,
}

/// Where the OS image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Live: the ISO labelled `BERTH_ISO`, then `/berth/rootfs.squashfs` on it.
    Iso,
    /// Installed: the partition named `BERTH_<slot>` holds the squashfs itself.
    Slot(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub debug: bool,
    pub rescue: bool,
    pub source: Source,
    pub wait: Duration,
    pub state: StatePlan,
    /// Problems with the command line, one line each, for the console.
    pub problems: Vec<String>,
}

/// The switches stage 2 acts on (`berth.debug`, `berth.rescue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    pub debug: bool,
    pub rescue: bool,
}

/// The boot switches alone, from the command line. Stage 2 needs nothing
/// else; loading the whole config as [`plan`] does (the defaults parsed and
/// validated) is stage 1's business and berthd's, and in stage 2 it only
/// delayed berthd's start (by about 20 ms of an emulated boot's work).
pub fn switches(cmdline_text: &str) -> Switches {
    let boot = cmdline::parse(cmdline_text).boot;
    Switches {
        debug: boot.debug,
        rescue: boot.rescue,
    }
}

/// Reads the boot plan from the kernel command line. Never fails: a bad key is
/// a problem to print, and the rest of the line still counts.
pub fn plan(cmdline_text: &str) -> BootPlan {
    plan_with(cmdline_text, Vec::new())
}

/// The boot plan from datasource documents (NoCloud user-data) and the kernel
/// command line, which wins over them as it does everywhere.
pub fn plan_with(cmdline_text: &str, datasource: Vec<Document>) -> BootPlan {
    let parsed = cmdline::parse(cmdline_text);
    // Notes (like "rancher: was translated") are not problems.
    let mut problems: Vec<String> = parsed
        .diagnostics
        .iter()
        .filter(|d| d.severity != Severity::Note)
        .map(|d| d.to_string())
        .collect();
    let mut docs = vec![defaults()];
    docs.extend(datasource);
    docs.extend(parsed.embedded);
    docs.push(Document {
        source: Arc::from(cmdline::SOURCE),
        tree: Some(parsed.tree),
        diagnostics: parsed.diagnostics,
    });
    let loaded = load(docs);
    // berthd shows every config finding; stage 1 mentions only what made it drop a source.
    for rejected in &loaded.rejected {
        problems.push(format!(
            "{rejected} has errors and is ignored while booting; berthd will say why"
        ));
    }
    let state = &loaded.config.berth.state;
    let boot = parsed.boot;
    let source = match boot.slot {
        Some(slot) if !slot.is_empty() => Source::Slot(slot.to_ascii_uppercase()),
        _ => Source::Iso,
    };
    BootPlan {
        debug: boot.debug,
        rescue: boot.rescue,
        source,
        wait: boot.wait.map(Duration::from_secs).unwrap_or(DEFAULT_WAIT),
        state: StatePlan {
            dev: state
                .dev
                .as_deref()
                .map_or_else(|| DevSpec::Label(STATE_LABEL.into()), DevSpec::parse),
            fstype: state.fstype.clone().unwrap_or_else(|| "ext4".into()),
            autoformat: state
                .autoformat
                .comma_separated()
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            wait: state.wait.unwrap_or(true),
            required: state.required.unwrap_or(false),
        },
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_agree_with_the_plan() {
        for line in [
            "console=ttyS0 quiet",
            "berth.debug",
            "berth.rescue console=ttyS0",
            "berth.debug berth.rescue berth.slot=B",
        ] {
            let p = plan(line);
            let s = switches(line);
            assert_eq!((s.debug, s.rescue), (p.debug, p.rescue), "{line}");
        }
        assert!(switches("berth.debug").debug);
        assert!(switches("berth.rescue").rescue);
    }

    #[test]
    fn defaults_without_berth_keys() {
        let p = plan("BOOT_IMAGE=/boot/vmlinuz console=ttyS0 quiet");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert!(!p.debug && !p.rescue);
        assert_eq!(p.source, Source::Iso);
        assert_eq!(p.wait, DEFAULT_WAIT);
        assert_eq!(p.state.dev, DevSpec::Label("BERTH_STATE".into()));
        assert!(p.state.autoformat.is_empty());
        assert!(p.state.wait);
        assert!(!p.state.required);
    }

    #[test]
    fn switches_slot_wait_and_autoformat() {
        let p = plan(
            "console=ttyS0 berth.debug berth.rescue berth.slot=b berth.wait=90 \
             berth.state.autoformat=/dev/vda berth.state.required=true",
        );
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert!(p.debug && p.rescue);
        assert_eq!(p.source, Source::Slot("B".into()));
        assert_eq!(p.wait, Duration::from_secs(90));
        assert_eq!(p.state.autoformat, vec![PathBuf::from("/dev/vda")]);
        assert!(p.state.required);
    }

    #[test]
    fn rancher_spelling_and_lists() {
        let p = plan("rancher.state.autoformat=[/dev/sda,/dev/vda] rancher.state.dev=UUID=ABC");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(
            p.state.autoformat,
            vec![PathBuf::from("/dev/sda"), PathBuf::from("/dev/vda")]
        );
        assert_eq!(p.state.dev, DevSpec::Uuid("abc".into()));
    }

    #[test]
    fn user_data_can_ask_for_autoformat_and_the_command_line_still_wins() {
        let user_data = berth_configs::parse_document(
            &Arc::from("user-data"),
            "#cloud-config\nberth:\n  state:\n    autoformat: [/dev/vda]\n    wait: false\n",
        );
        let p = plan_with("console=ttyS0", vec![user_data.clone()]);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.state.autoformat, vec![PathBuf::from("/dev/vda")]);
        assert!(!p.state.wait);
        let p = plan_with("berth.state.autoformat=/dev/sdb", vec![user_data]);
        assert_eq!(p.state.autoformat, vec![PathBuf::from("/dev/sdb")]);
    }

    #[test]
    fn bad_user_data_is_a_problem_and_the_defaults_hold() {
        let user_data = berth_configs::parse_document(
            &Arc::from("user-data"),
            "#cloud-config\nberth: [unclosed\n",
        );
        let p = plan_with("", vec![user_data]);
        assert!(
            p.problems.iter().any(|m| m.contains("user-data")),
            "{:?}",
            p.problems
        );
        assert_eq!(p.state.dev, DevSpec::Label("BERTH_STATE".into()));
    }

    #[test]
    fn bad_keys_are_problems_not_failures() {
        let p = plan("berth.wait=soon berth.rescue berth.state.required=maybe");
        assert!(!p.problems.is_empty());
        assert!(p.rescue);
        assert_eq!(p.wait, DEFAULT_WAIT);
        assert!(!p.state.required);
    }
}
