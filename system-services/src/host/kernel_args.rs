//! `berth.kernel_args`: arms a trial of the config's kernel arguments in the
//! installed disk's grubenv, for the next boot ([`berth_iso::kernel_args`]).
//! Nothing reboots for it: the arguments take effect when the machine next
//! boots, are kept if that boot comes up healthy, and are dropped (and
//! recorded, for `berth os list`) if it does not.
//!
//! Each boot also finds a trial that never reported — the boot that tried
//! the arguments panicked, hung or lost power — and records it as failed.
//!
//! It also tells GRUB that this boot got as far as berthd
//! ([`berth_iso::bootloader::BOOT_VAR`]), so that the next boot goes straight
//! to the default entry instead of showing the menu: the grubenv write that
//! every boot of an installed disk makes, here because this is where berthd
//! writes grubenv, one reconcile at a time.
//!
//! Nothing here changes the boot it runs in, so at boot it runs beside the
//! services ([`spawn`]), not before them; a reload runs it at once, so that
//! `berth config set` returns with the next boot armed. It is idempotent:
//! grubenv is written only when it should say something else.

use berth_iso::kernel_args::{self as args, Failed, Plan};
use berth_iso::slots::{Installed, Records, GRUB_CFG};

use super::{HostPaths, Problem, Report};

const FIELD: &str = "berth.kernel_args";

/// One reconcile at a time: the boot's and a reload's both rewrite grubenv.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Brings grubenv in line with the config's `wanted` arguments.
pub fn apply(paths: &HostPaths, wanted: &[String]) -> Report {
    let mut report = Report::default();
    // Validation refused a document with bad arguments before it got here.
    let Ok(wanted) = args::join(wanted) else {
        return report;
    };
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cmdline = std::fs::read_to_string(paths.root.join("proc/cmdline")).unwrap_or_default();
    match reconcile(paths, &wanted, &cmdline) {
        Ok(lines) => {
            for line in lines {
                report.done(line);
            }
        }
        Err(message) => report.problems.push(Problem::new(FIELD, message)),
    }
    report
}

/// [`apply`] in a thread of its own, its report logged.
pub fn spawn(paths: HostPaths, wanted: Vec<String>) {
    let started = std::thread::Builder::new()
        .name("kernel-args".into())
        .spawn(move || apply(&paths, &wanted).log());
    if let Err(e) = started {
        log::error!("{FIELD}: cannot start its thread: {e}");
    }
}

/// Brings grubenv and the records in line with `wanted`; what was done.
fn reconcile(paths: &HostPaths, wanted: &str, cmdline: &str) -> Result<Vec<String>, String> {
    let installed = match Installed::find(&paths.sys_block, &paths.dev) {
        Ok(Some(installed)) => installed,
        Ok(None) if wanted.is_empty() => return Ok(Vec::new()),
        Ok(None) => {
            return Err(
                "this machine did not boot from an installed disk (the live ISO, or a \
                 network or direct kernel boot), so nothing here keeps kernel arguments: \
                 give them to what loads the kernel"
                    .into(),
            )
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut vars = installed.read_env().map_err(|e| e.to_string())?;
    let mut records = Records::load(&paths.root).map_err(|e| e.to_string())?;
    let mut done = Vec::new();
    // A trial is PID 1's to mark when it commits; a trial that fails leaves
    // the mark, and the boot after it shows the menu.
    let slot_trial = berth_iso::slots::from_cmdline(cmdline).is_some_and(|(_, t)| t);
    let mut vars_changed =
        !slot_trial && !args::on_trial(cmdline) && berth_iso::bootloader::boot_got_far(&mut vars);
    let mut records_changed = false;
    let mut refused = None;

    if let Some(lost) = args::unreported_trial(&mut vars, cmdline) {
        let reason = "the boot that tried them never came up (the kernel panicked, hung until \
                      the watchdog reset it, or lost power)";
        log::error!("kernel arguments `{lost}` failed: {reason}; kept the ones before");
        records.kernel_args_failed = Some(Failed {
            args: lost,
            reason: reason.into(),
            at: berth_iso::slots::now(),
        });
        vars_changed = true;
        records_changed = true;
    }
    // A trial boot is PID 1's to commit or fail.
    if !args::on_trial(cmdline) {
        // The failed arguments stay refused only while the config keeps
        // asking for them: asking for anything else forgets them.
        if records
            .kernel_args_failed
            .as_ref()
            .is_some_and(|f| f.args != wanted)
        {
            records.kernel_args_failed = None;
            records_changed = true;
        }
        let plan = args::plan(
            &args::Env::read(&vars),
            wanted,
            records.kernel_args_failed.as_ref(),
        );
        if let Plan::Arm(_) = plan {
            check_grub_cfg(&installed)?;
        }
        vars_changed |= args::apply(&mut vars, &plan);
        match plan {
            Plan::Nothing => {}
            Plan::Arm(a) => done.push(format!(
                "{FIELD}: the next boot tries `{a}` once, and keeps them if it comes up healthy"
            )),
            Plan::Clear => done.push(format!(
                "{FIELD}: none; from the next boot on, only Berth's own arguments"
            )),
            Plan::Disarm => done.push(format!(
                "{FIELD}: the trial of other arguments is called off; the config asks for the ones in use"
            )),
            Plan::Refuse(f) => refused = Some(format!(
                "`{}` failed their trial boot at {} ({}); they are not tried again until \
                 the config has asked for other arguments",
                f.args,
                berth_images::recipe::rfc3339(f.at),
                f.reason
            )),
        }
    }
    // Records first: a cut before grubenv's write finds the lost trial
    // again on the next boot.
    if records_changed {
        records.save(&paths.root).map_err(|e| e.to_string())?;
    }
    if vars_changed {
        installed.write_env(&vars).map_err(|e| e.to_string())?;
    }
    refused.map_or(Ok(done), Err)
}

/// grub.cfg is written once, by the installer: a disk installed before
/// Berth kept kernel arguments would never boot with them.
fn check_grub_cfg(installed: &Installed) -> Result<(), String> {
    if installed
        .grub_cfg_reads(args::TRY)
        .map_err(|e| e.to_string())?
    {
        Ok(())
    } else {
        Err(format!(
            "this disk's {GRUB_CFG} was written by an installer from before kept kernel \
             arguments and does not read them; reinstall, or type them at the GRUB menu \
             (Esc) for one boot"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testing::root;
    use std::collections::BTreeMap;

    /// An installed disk image below the test root, found the way berthd
    /// finds the real one (sysfs and `/dev`).
    fn install(paths: &HostPaths) -> Installed {
        let r = &paths.root;
        std::fs::create_dir_all(&paths.dev).expect("dev");
        berth_iso::testing::installed_disk(&paths.dev.join("vdz"), &r.join("boot-files"))
            .expect("disk");
        let part = r.join("sys/devices/virtual/block/vdz/vdz1");
        std::fs::create_dir_all(&part).expect("sysfs");
        std::fs::write(part.join("uevent"), "PARTNAME=BERTH_EFI\n").expect("uevent");
        std::fs::create_dir_all(&paths.sys_block).expect("class");
        std::os::unix::fs::symlink(&part, paths.sys_block.join("vdz1")).expect("link");
        Installed::find(&paths.sys_block, &paths.dev)
            .expect("find")
            .expect("installed")
    }

    fn run(paths: &HostPaths, wanted: &[&str], cmdline: &str) -> Report {
        std::fs::create_dir_all(paths.root.join("proc")).expect("proc");
        std::fs::write(paths.root.join("proc/cmdline"), cmdline).expect("cmdline");
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        apply(paths, &wanted)
    }

    fn env(installed: &Installed) -> BTreeMap<String, String> {
        let mut vars = installed.read_env().expect("env");
        vars.remove("berth_default");
        vars
    }

    fn pairs(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn arguments_are_armed_committed_by_pid1_and_cleared() {
        let r = root();
        let installed = install(&r.paths);
        let report = run(&r.paths, &["quiet", "a=1"], "berth.slot=A");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.done[0].contains("tries `quiet a=1` once"));
        assert_eq!(
            env(&installed),
            pairs(&[("berth_args_next", "quiet a=1"), ("berth_args_try", "1")])
        );
        // Again in the same state: nothing to do.
        assert!(run(&r.paths, &["quiet", "a=1"], "berth.slot=A")
            .done
            .is_empty());
        // GRUB used the try; this is the trial, which is PID 1's to commit.
        let mut vars = installed.read_env().expect("env");
        vars.insert("berth_args_try".into(), String::new());
        installed.write_env(&vars).expect("grub");
        let trial = run(
            &r.paths,
            &["quiet", "a=1"],
            "berth.slot=A berth.args_trial=1",
        );
        assert!(trial.done.is_empty() && trial.problems.is_empty());
        args::commit(&mut vars);
        installed.write_env(&vars).expect("commit");
        assert_eq!(env(&installed), pairs(&[("berth_args", "quiet a=1")]));
        assert!(run(&r.paths, &["quiet", "a=1"], "berth.slot=A quiet a=1")
            .done
            .is_empty());
        // No arguments: dropped at once.
        let cleared = run(&r.paths, &[], "berth.slot=A quiet a=1");
        assert!(cleared.done[0].contains("only Berth's own"));
        assert_eq!(env(&installed), BTreeMap::new());
    }

    #[test]
    fn a_trial_that_never_came_up_is_recorded_and_not_armed_again() {
        let r = root();
        let installed = install(&r.paths);
        run(&r.paths, &["rdinit=/nope"], "berth.slot=A");
        // GRUB used the try, and that boot panicked; this boot is the next.
        let mut vars = installed.read_env().expect("env");
        vars.insert("berth_args_try".into(), String::new());
        installed.write_env(&vars).expect("grub");
        let after = run(&r.paths, &["rdinit=/nope"], "berth.slot=A");
        assert_eq!(after.problems.len(), 1, "{after:?}");
        let msg = after.problems[0].to_string();
        assert!(
            msg.starts_with("berth.kernel_args: `rdinit=/nope` failed"),
            "{msg}"
        );
        assert!(msg.contains("never came up"), "{msg}");
        assert_eq!(env(&installed), BTreeMap::new());
        let records = Records::load(&r.paths.root).expect("records");
        assert_eq!(
            records.kernel_args_failed.map(|f| f.args).as_deref(),
            Some("rdinit=/nope")
        );
        // Still asked for: still refused, nothing armed.
        let again = run(&r.paths, &["rdinit=/nope"], "berth.slot=A");
        assert_eq!(again.problems.len(), 1);
        assert_eq!(env(&installed), BTreeMap::new());
        // Something else in between, then the same again: tried again.
        run(&r.paths, &[], "berth.slot=A");
        let retry = run(&r.paths, &["rdinit=/nope"], "berth.slot=A");
        assert!(retry.problems.is_empty(), "{retry:?}");
        assert_eq!(
            env(&installed),
            pairs(&[("berth_args_next", "rdinit=/nope"), ("berth_args_try", "1")])
        );
    }

    #[test]
    fn a_boot_that_got_as_far_as_berthd_clears_grubs_mark_unless_it_is_a_trial() {
        let r = root();
        let installed = install(&r.paths);
        let mark = |installed: &Installed| {
            let mut vars = installed.read_env().expect("env");
            vars.insert("berth_boot".into(), "1".into());
            installed.write_env(&vars).expect("grub");
        };
        // A trial (of a slot or of arguments) is PID 1's to mark.
        mark(&installed);
        run(&r.paths, &[], "berth.slot=B berth.trial=1");
        run(&r.paths, &[], "berth.slot=A berth.args_trial=1");
        assert_eq!(env(&installed), pairs(&[("berth_boot", "1")]));
        // Any other boot: cleared, so the next boot shows no menu; nothing
        // reported, as nothing the config asked for changed.
        let report = run(&r.paths, &[], "berth.slot=A");
        assert_eq!(report, Report::default());
        assert_eq!(env(&installed), BTreeMap::new());
        // With arguments armed in the same write.
        mark(&installed);
        run(&r.paths, &["quiet"], "berth.slot=A");
        assert_eq!(
            env(&installed),
            pairs(&[("berth_args_next", "quiet"), ("berth_args_try", "1")])
        );
    }

    #[test]
    fn without_an_installed_disk_arguments_are_a_problem_and_none_are_not() {
        let r = root();
        assert_eq!(run(&r.paths, &[], "console=ttyS0"), Report::default());
        let report = run(&r.paths, &["quiet"], "console=ttyS0");
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0]
            .message
            .contains("did not boot from an installed disk"));
    }

    #[test]
    fn a_disk_whose_grub_cfg_predates_kept_arguments_is_told_so() {
        let r = root();
        let installed = install(&r.paths);
        // What an older installer wrote: the same config without the variables.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&installed.disk)
            .expect("disk");
        {
            let fs = fatfs::FileSystem::new(
                berth_iso::disk::Region::new(&file, &installed.esp),
                fatfs::FsOptions::new(),
            )
            .expect("fat");
            let mut f = fs.root_dir().create_file(GRUB_CFG).expect("cfg");
            f.truncate().expect("truncate");
            std::io::Write::write_all(&mut f, b"load_env berth_default berth_try\n").expect("w");
        }
        let report = run(&r.paths, &["quiet"], "berth.slot=A");
        assert!(
            report.problems[0].message.contains("reinstall"),
            "{report:?}"
        );
        assert_eq!(env(&installed), BTreeMap::new(), "nothing armed");
    }
}
