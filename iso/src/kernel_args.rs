//! Kernel arguments an installed machine keeps (`berth.kernel_args`), tried
//! once before they are kept, the way a new OS image is (ARCHITECTURE.md §7).
//!
//! They live in grubenv, not in grub.cfg: grub.cfg is written once, at
//! install, and grubenv is the block userspace already rewrites in place.
//!
//! ```text
//!  berth_args       the arguments every boot gets (committed)
//!  berth_args_next  arguments waiting for their trial
//!  berth_args_try   1: the next boot tries berth_args_next, once
//! ```
//!
//! berthd arms a trial when the config asks for arguments other than the
//! committed ones ([`plan`]). GRUB clears `berth_args_try` and saves it
//! before it loads the kernel, then boots with `berth_args_next` and
//! [`TRIAL_ARG`]; PID 1 commits them ([`commit`]) when that boot is healthy
//! by the same measure as an upgrade's trial, or records why not and
//! reboots ([`fail`]). A boot that panicked, hung or lost power never
//! reports; the next boot, on the committed arguments, finds the used-up
//! trial ([`unreported_trial`]). Arguments that failed are not armed again
//! until the config asks for something else in between, so a bad argument
//! costs one boot and never a boot loop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// grubenv: the committed arguments.
pub const COMMITTED: &str = "berth_args";
/// grubenv: the arguments on trial.
pub const NEXT: &str = "berth_args_next";
/// grubenv: `1` while a trial is armed.
pub const TRY: &str = "berth_args_try";
/// What GRUB adds to the command line of a boot that tries new arguments.
pub const TRIAL_ARG: &str = "berth.args_trial=1";
pub use berth_configs::kernel_args::{check_arg, check_os_args, join, MAX_BYTES};

/// The arguments that failed their trial last, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub args: String,
    pub reason: String,
    /// Seconds since the epoch.
    pub at: u64,
}

/// The kernel arguments as grubenv has them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Env {
    pub committed: String,
    /// Waiting for a trial (armed), or on trial now (no longer armed).
    pub next: Option<String>,
    pub armed: bool,
}

impl Env {
    pub fn read(env: &BTreeMap<String, String>) -> Env {
        Env {
            committed: env.get(COMMITTED).cloned().unwrap_or_default(),
            next: env.get(NEXT).cloned(),
            armed: env.get(TRY).is_some_and(|v| v == "1"),
        }
    }
}

/// What to do to grubenv for the config's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// grubenv already says what the config says.
    Nothing,
    /// Try these on the next boot, once.
    Arm(String),
    /// No arguments: dropped at once (Berth's own arguments need no trial),
    /// with any armed trial.
    Clear,
    /// The config went back to the committed arguments before the armed
    /// trial ran: disarm it.
    Disarm,
    /// These arguments failed their trial; they are not armed again.
    Refuse(Failed),
}

/// What grubenv should become for `wanted` (from [`join`]), given the last
/// arguments that failed.
pub fn plan(env: &Env, wanted: &str, failed: Option<&Failed>) -> Plan {
    if wanted.is_empty() {
        return if env.committed.is_empty() && env.next.is_none() && !env.armed {
            Plan::Nothing
        } else {
            Plan::Clear
        };
    }
    if wanted == env.committed {
        return if env.next.is_some() || env.armed {
            Plan::Disarm
        } else {
            Plan::Nothing
        };
    }
    if let Some(f) = failed.filter(|f| f.args == wanted) {
        return Plan::Refuse(f.clone());
    }
    if env.armed && env.next.as_deref() == Some(wanted) {
        return Plan::Nothing;
    }
    Plan::Arm(wanted.to_string())
}

/// Applies `plan` to the variables of grubenv; whether they changed.
pub fn apply(vars: &mut BTreeMap<String, String>, plan: &Plan) -> bool {
    let before = vars.clone();
    match plan {
        Plan::Nothing | Plan::Refuse(_) => {}
        Plan::Arm(args) => {
            vars.insert(NEXT.into(), args.clone());
            vars.insert(TRY.into(), "1".into());
        }
        Plan::Clear => {
            for key in [COMMITTED, NEXT, TRY] {
                vars.remove(key);
            }
        }
        Plan::Disarm => {
            vars.remove(NEXT);
            vars.remove(TRY);
        }
    }
    *vars != before
}

/// Whether this boot tries new arguments (GRUB added [`TRIAL_ARG`]).
pub fn on_trial(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == TRIAL_ARG)
}

/// On a boot that is not a trial: arguments whose trial GRUB used up and
/// that never committed — that boot panicked, hung or lost power. They are
/// taken out of grubenv; the caller records them as failed.
pub fn unreported_trial(vars: &mut BTreeMap<String, String>, cmdline: &str) -> Option<String> {
    let env = Env::read(vars);
    if on_trial(cmdline) || env.armed {
        return None;
    }
    let args = env.next?;
    vars.remove(NEXT);
    vars.remove(TRY);
    Some(args)
}

/// The trial came up healthy: its arguments become every boot's.
pub fn commit(vars: &mut BTreeMap<String, String>) -> Option<String> {
    let args = vars.remove(NEXT)?;
    vars.remove(TRY);
    vars.insert(COMMITTED.into(), args.clone());
    Some(args)
}

/// The trial did not come up healthy: its arguments are dropped.
pub fn fail(vars: &mut BTreeMap<String, String>) -> Option<String> {
    vars.remove(TRY);
    vars.remove(NEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn joined_arguments_fit_the_environment_block() {
        let args = ["a=1".to_string(), "b".to_string()];
        assert_eq!(join(&args).as_deref(), Ok("a=1 b"));
        let long = vec!["x".repeat(60); 4];
        let err = join(&long).expect_err("too long");
        assert!(err.contains("at most 200"), "{err}");
        // The largest that passes still fits one sector with everything else.
        let most = vec!["y".repeat(MAX_BYTES)];
        let joined = join(&most).expect("fits");
        let block = vars(&[
            ("berth_default", "A"),
            ("berth_try", "B"),
            (COMMITTED, &joined),
            (NEXT, &joined),
            (TRY, "1"),
            // GRUB's mark of a boot under way, which berthd may find there
            // when it arms arguments on a slot's trial boot.
            (crate::bootloader::BOOT_VAR, crate::bootloader::BOOT_PENDING),
        ]);
        crate::slots::render_env(&block).expect("one sector");
    }

    #[test]
    fn plans_follow_the_config() {
        let none = Env::default();
        assert_eq!(plan(&none, "", None), Plan::Nothing);
        assert_eq!(plan(&none, "a=1", None), Plan::Arm("a=1".into()));
        let armed = Env {
            committed: String::new(),
            next: Some("a=1".into()),
            armed: true,
        };
        assert_eq!(plan(&armed, "a=1", None), Plan::Nothing);
        assert_eq!(plan(&armed, "a=2", None), Plan::Arm("a=2".into()));
        assert_eq!(plan(&armed, "", None), Plan::Clear);
        let committed = Env {
            committed: "a=1".into(),
            next: None,
            armed: false,
        };
        assert_eq!(plan(&committed, "a=1", None), Plan::Nothing);
        assert_eq!(plan(&committed, "", None), Plan::Clear);
        let reverted = Env {
            committed: "a=1".into(),
            next: Some("a=2".into()),
            armed: true,
        };
        assert_eq!(plan(&reverted, "a=1", None), Plan::Disarm);
        let failed = Failed {
            args: "rdinit=/nope".into(),
            reason: "panicked".into(),
            at: 0,
        };
        assert_eq!(
            plan(&committed, "rdinit=/nope", Some(&failed)),
            Plan::Refuse(failed.clone())
        );
        assert_eq!(
            plan(&committed, "other", Some(&failed)),
            Plan::Arm("other".into())
        );
    }

    #[test]
    fn a_trial_is_armed_used_and_committed_or_failed() {
        let mut env = vars(&[("berth_default", "A")]);
        assert!(apply(&mut env, &Plan::Arm("a=1".into())));
        assert_eq!(env.get(TRY).map(String::as_str), Some("1"));
        assert!(!apply(&mut env, &Plan::Nothing));
        // GRUB used the try; this boot is the trial.
        env.insert(TRY.into(), String::new());
        assert_eq!(
            unreported_trial(&mut env, "berth.slot=A berth.args_trial=1"),
            None
        );
        let mut ok = env.clone();
        assert_eq!(commit(&mut ok).as_deref(), Some("a=1"));
        assert_eq!(ok, vars(&[("berth_default", "A"), (COMMITTED, "a=1")]));
        let mut bad = env.clone();
        assert_eq!(fail(&mut bad).as_deref(), Some("a=1"));
        assert_eq!(bad, vars(&[("berth_default", "A")]));
        // Or the trial never reported, and this is the boot after it.
        let mut lost = env.clone();
        assert_eq!(
            unreported_trial(&mut lost, "berth.slot=A").as_deref(),
            Some("a=1")
        );
        assert_eq!(lost, vars(&[("berth_default", "A")]));
        // Still armed: GRUB has not booted it yet.
        let mut waiting = vars(&[(NEXT, "a=1"), (TRY, "1")]);
        assert_eq!(unreported_trial(&mut waiting, "berth.slot=A"), None);
    }

    #[test]
    fn clearing_drops_everything() {
        let mut env = vars(&[
            ("berth_default", "B"),
            (COMMITTED, "a"),
            (NEXT, "b"),
            (TRY, "1"),
        ]);
        assert!(apply(&mut env, &Plan::Clear));
        assert_eq!(env, vars(&[("berth_default", "B")]));
    }
}
